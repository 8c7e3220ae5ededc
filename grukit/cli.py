"""The ``grukit`` command line.

    grukit inspect MODEL                      layers, parameters, MACs per step
    grukit export MODEL --out DIR [--calib X.npz [--scheme int8|16x8]] [--c]
    grukit deploy MODEL --calib X.npz --val V.npz --target BOARD [...]
    grukit demo [--out DIR] [--target BOARD]  deploy the embedded gesture demo
    grukit targets                            the boards grukit knows

Exit codes: 0 success (deploy: every check passed), 1 deploy ran but a check failed or could not be
evaluated (the report says which and by how much), 2 bad input: one line on stderr, no traceback unless
--debug.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from grukit.errors import BadInputError, GrukitError

DATA_DIR = Path(__file__).resolve().parent / "data"
DEMO_TARGET = "stm32l476"


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="grukit", description="Take a trained GRU to a microcontroller.")
    p.add_argument("--debug", action="store_true", help="show the traceback of an error")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")
    # --debug is accepted before or after the command; SUPPRESS keeps a subcommand from resetting it.
    debug = argparse.ArgumentParser(add_help=False)
    debug.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                       help="show the traceback of an error")

    s = sub.add_parser("inspect", parents=[debug], help="show a model's layers, parameters and MACs per step")
    s.add_argument("model", help="model file (.onnx, .pt2, .keras)")

    s = sub.add_parser("export", parents=[debug], help="write the model as ONNX (sequence and step), and TFLite / C when quantized")
    s.add_argument("model")
    s.add_argument("--out", required=True, help="output directory")
    s.add_argument("--calib", help=".npz with x [N, T, I]: quantize and write the integer exports")
    s.add_argument("--scheme", choices=("int8", "16x8"), default="int8")
    s.add_argument("--c", action="store_true", help="also write C sources (needs --calib)")

    s = sub.add_parser("deploy", parents=[debug], help="quantize, export, evaluate and check a board budget; write a report")
    s.add_argument("model")
    s.add_argument("--calib", required=True, help=".npz with x [N, T, I], representative inputs")
    s.add_argument("--val", required=True, help=".npz with x [N, T, I] and y (labels or targets)")
    s.add_argument("--target", required=True, action="append",
                   help="board name (see `grukit targets`) or a .toml file; repeat for several")
    s.add_argument("--scheme", choices=("int8", "16x8"), default="int8")
    s.add_argument("--max-drop", type=float, default=None,
                   help="allowed metric drop from float (accuracy: 0.01 = one point; default 0.02; MSE: absolute)")
    s.add_argument("--max-latency-ms", type=float, default=None, help="latency limit for one validation sequence")
    s.add_argument("--out", default="grukit-out", help="output directory (default grukit-out)")
    s.add_argument("--task", choices=("classification", "regression"), help="override the task inferred from y")

    s = sub.add_parser("demo", parents=[debug], help="deploy the embedded gesture-recognition demo")
    s.add_argument("--out", default="grukit-demo", help="output directory (default grukit-demo)")
    s.add_argument("--target", action="append", help=f"board (default {DEMO_TARGET}); repeat for several")
    s.add_argument("--scheme", choices=("int8", "16x8"), default="int8")

    sub.add_parser("targets", parents=[debug], help="list the boards grukit knows")
    return p


def _inspect(args) -> int:
    import grukit

    print(grukit.load(args.model).describe())
    return 0


def _export(args) -> int:
    import grukit
    from grukit.pipeline import load_x, resolve

    model = grukit.load(args.model)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if args.c and not args.calib:
        raise BadInputError("--c writes integer C code and needs --calib to quantize")
    jobs = [("export_onnx_sequence", model, out / "model.onnx"), ("export_onnx_step", model, out / "model_step.onnx")]
    if args.calib:
        quantize, why = resolve("quantize")
        if quantize is None:
            raise BadInputError(f"--calib: quantization is not available in this build ({why})")
        qmodel = quantize(model, load_x(args.calib, "calibration data", model.input_size), scheme=args.scheme)
        jobs.append(("export_tflite", qmodel, out / f"model_{args.scheme}.tflite"))
        if args.c:
            jobs.append(("export_c", qmodel, out / "c"))
    resolved = []
    for cap, what, path in jobs:
        fn, why = resolve(cap)
        if fn is None:
            # The user asked for this export explicitly, so a missing part is an error, not a silent skip;
            # checked before anything is written so a failed command leaves no partial output.
            raise BadInputError(f"{cap} is not available in this build ({why})")
        resolved.append((fn, what, path))
    for fn, what, path in resolved:
        written = fn(what, path)
        for p in written if isinstance(written, (list, tuple)) else [written]:
            print(f"wrote {p} ({Path(p).stat().st_size:,} bytes)")
    return 0


def _finish_deploy(report, out) -> int:
    print(f"grukit deploy: {'PASS' if report.passed else 'FAIL'}")
    for line in report.failures():
        print(f"  {line}")
    print(f"report: {Path(out) / 'report.html'}  {Path(out) / 'report.md'}  {Path(out) / 'report.json'}")
    return report.exit_code


def _deploy(args) -> int:
    from grukit.pipeline import deploy

    report = deploy(args.model, args.calib, args.val, args.target, scheme=args.scheme, max_drop=args.max_drop,
                    max_latency_ms=args.max_latency_ms, out_dir=args.out, task=args.task,
                    progress=sys.stderr.isatty())
    return _finish_deploy(report, args.out)


def _demo(args) -> int:
    from grukit.pipeline import deploy

    info = json.loads((DATA_DIR / "demo.json").read_text())
    report = deploy(DATA_DIR / "demo_model.onnx", DATA_DIR / "demo_calib.npz", DATA_DIR / "demo_val.npz",
                    args.target or [DEMO_TARGET], scheme=args.scheme, out_dir=args.out,
                    progress=sys.stderr.isatty(), class_names=info["data"]["classes"])
    return _finish_deploy(report, args.out)


def _targets(args) -> int:
    from grukit.runtime.targets import list_targets, load_target

    for name in list_targets():
        t = load_target(name)
        qemu = f"qemu {t.qemu_machine}" if t.qemu_machine else "no emulation"
        print(f"{t.name:14s} {t.core:12s} {t.clock_hz / 1e6:6.0f} MHz  flash {t.flash_bytes // 1024:6,} KB  "
              f"RAM {t.ram_bytes // 1024:5,} KB  {qemu}")
    return 0


COMMANDS = {"inspect": _inspect, "export": _export, "deploy": _deploy, "demo": _demo, "targets": _targets}


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``grukit`` console script; returns the exit code."""
    parser = _parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    try:
        return COMMANDS[args.command](args)
    except GrukitError as e:
        if args.debug:
            raise
        print(f"grukit {args.command}: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
