"""The ``grukit`` command line.

    grukit inspect MODEL                      layers, parameters, MACs per step (MODEL may be a grukit .tflite)
    grukit export MODEL --out DIR [--calib X.npz [--scheme int8|16x8] [--c]] [--steps T]
    grukit deploy MODEL --calib X.npz --val V.npz --target BOARD [...]
    grukit demo [--out DIR] [--target BOARD]  deploy the embedded gesture demo
    grukit targets                            the boards grukit knows

Exit codes: 0 success (deploy: every check passed), 1 deploy ran but a check failed or could not be
evaluated (the report says which and by how much), 2 bad input: one line on stderr, no traceback unless
--debug.

Each command imports what it needs when it runs: ``grukit targets`` and ``grukit --help`` answer in a
fraction of a second instead of first loading ONNX, TFLite and the runtimes a deploy uses.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import grukit
from grukit.core.errors import BadInputError, GrukitError

DATA_DIR = Path(__file__).resolve().parent / "data"
DEMO_TARGET = "stm32l476"


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="grukit", description="Take a trained GRU to a microcontroller.")
    p.add_argument("--version", action="version", version=f"grukit {grukit.__version__}")
    p.add_argument("--debug", action="store_true", help="show the traceback of an error")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")
    # --debug is accepted before or after the command; SUPPRESS keeps a subcommand from resetting it.
    debug = argparse.ArgumentParser(add_help=False)
    debug.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                       help="show the traceback of an error")

    s = sub.add_parser("inspect", parents=[debug], help="show a model's layers, parameters and MACs per step")
    s.add_argument("model", help="model file (.onnx, .pt2, .keras, or a .tflite written by grukit)")

    s = sub.add_parser("export", parents=[debug], help="write float ONNX (sequence, step) and TFLite; with --calib the QDQ ONNX and integer TFLite; --c the C sources")
    s.add_argument("model")
    s.add_argument("--out", required=True, help="output directory")
    s.add_argument("--calib", help=".npz with x [N, T, I]: quantize and write the integer exports")
    s.add_argument("--scheme", choices=("int8", "16x8"), default="int8")
    s.add_argument("--c", action="store_true", help="also write C sources (needs --calib)")
    s.add_argument("--steps", type=int, default=None,
                   help="T of the TFLite sequence models (default: the calibration data's T; without --calib "
                        "no float sequence .tflite unless given)")

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
    from grukit.export.tflite_read import describe_tflite  # per command (see the top of this module)

    path = Path(args.model)
    if path.suffix.lower() == ".tflite":
        if not path.is_file():
            raise BadInputError(f"{path}: no such file")
        print(describe_tflite(path))
    else:
        print(grukit.load(args.model).describe())
    return 0


def _export(args) -> int:
    from grukit.artifacts import write_artifacts  # per command (see the top of this module)
    from grukit.inputs import load_x  # per command (see the top of this module)

    if args.c and not args.calib:
        raise BadInputError("--c writes integer C code and needs --calib to quantize")
    model = grukit.load(args.model)
    calib_x = load_x(args.calib, "calibration data", model.input_size) if args.calib else None
    T = args.steps if args.steps is not None else (calib_x.shape[1] if calib_x is not None else None)
    if T is not None and T < 1:
        raise BadInputError(f"--steps must be at least 1, got {T}")
    if model.bidirectional:
        # No streaming integer form: not quantized; its float exports are written.
        unused = [flag for flag, given in (("--calib", calib_x is not None), ("--c", args.c)) if given]
        print("bidirectional GRU: no step model (ONNX, TFLite) and no integer exports"
              + (f" ({' and '.join(unused)} not used)" if unused else ""), file=sys.stderr)
    quantize = calib_x is not None and not model.bidirectional
    qmodel = grukit.quantize(model, calib_x, scheme=args.scheme) if quantize else None
    out = Path(args.out)
    files = write_artifacts(model, qmodel, out, T, c=args.c)
    rows = [(str(path.relative_to(out)), path.stat().st_size) for path in files.values()]
    width = max(len(name) for name, _ in rows)
    print(f"{'file':{width}s}  {'bytes':>10s}")
    for name, size in rows:
        print(f"{name:{width}s}  {size:>10,}")
    print(f"{len(rows)} files in {out}")
    return 0


def _finish_deploy(report, out) -> int:
    """The terminal summary: what a CI log needs without opening the report."""
    from grukit.report import format_value, verdict  # per command (see the top of this module)

    print(f"grukit deploy: {'PASS' if report.passed else 'FAIL'}  ({report.task}, {report.metric}, {report.scheme})")
    width = max((len(r) for r in report.scores), default=8)
    for runtime, value in report.scores.items():
        exact = report.bit_exact.get(runtime)
        mark = "" if exact is None else ("  bit-exact" if exact else "  NOT bit-exact")
        print(f"  {runtime:{width}s}  {format_value(value)}{mark}")
    for t in report.targets:
        limit = "" if t["limit"] is None else f" (limit {format_value(t['limit'], t['unit'])})"
        est = ", estimate" if t.get("estimate") else ""
        result = "reported" if t["limit"] is None else verdict(t["pass"])
        print(f"  {t['name']}: {format_value(t['value'], t['unit'])}{limit}{est}  {result}")
    for line in report.failures():
        print(f"  FAILED {line}")
    print(f"report: {Path(out) / 'report.html'}  {Path(out) / 'report.md'}  {Path(out) / 'report.json'}")
    return report.exit_code


def _deploy(args) -> int:
    from grukit.pipeline import deploy  # per command (see the top of this module)

    report = deploy(args.model, args.calib, args.val, args.target, scheme=args.scheme, max_drop=args.max_drop,
                    max_latency_ms=args.max_latency_ms, out_dir=args.out, task=args.task,
                    progress=sys.stderr.isatty())
    return _finish_deploy(report, args.out)


def _demo(args) -> int:
    from grukit.pipeline import deploy  # per command (see the top of this module)

    info = json.loads((DATA_DIR / "demo.json").read_text())
    report = deploy(DATA_DIR / "demo_model.onnx", DATA_DIR / "demo_calib.npz", DATA_DIR / "demo_val.npz",
                    args.target or [DEMO_TARGET], scheme=args.scheme, out_dir=args.out,
                    progress=sys.stderr.isatty(), class_names=info["data"]["classes"])
    return _finish_deploy(report, args.out)


def _targets(args) -> int:
    from grukit.runtime.targets import list_targets, load_target  # per command (see the top of this module)

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
