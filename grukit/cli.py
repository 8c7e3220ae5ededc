"""The ``grukit`` command line.

    grukit inspect MODEL                      layers, parameters, MACs per step (MODEL may be a grukit .tflite)
    grukit export MODEL --out DIR [--calib X.npz [--scheme int8|16x8] [--c]] [--steps T]
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


def _describe_tflite(path: Path) -> str:
    """What a grukit-written .tflite holds, from its grukit metadata and its output tensor's shape."""
    from grukit.export.tflite_writer import _model_from, read_tflite_metadata

    meta = read_tflite_metadata(path)
    graph = _model_from(path).Subgraphs(0)
    out_shape = [int(v) for v in graph.Tensors(graph.Outputs(0)).ShapeAsNumpy()]
    kind = meta.get("kind")
    lines = [f"{path.name}: grukit {meta.get('grukit_version')} TFLite {kind} model"
             + (f" over T={meta['T']}" if meta.get("T") else "") + f", batch {meta.get('batch')}",
             f"  scheme: {meta.get('scheme')}, gate order {meta.get('gate_order')}"]
    params = macs = 0
    for i, layer in enumerate(meta["layers"]):
        I, H = layer["input_size"], layer["hidden_size"]
        state = layer.get("state") or {}
        lines.append(f"  layer {i}: GRU input {I} -> hidden {H}, {layer['gate_variant']}"
                     + (f", state {state['dtype']} scale {state['scale']:.6g} zero point {state['zero_point']}"
                        if state else ""))
        # The same count as GRUModel.param_count / macs_per_step: W, R and both bias vectors per gate.
        params += 3 * H * I + 3 * H * H + 6 * H
        macs += 3 * H * (I + H)
    head = meta.get("head")
    if head is not None:
        O, F = out_shape[-1], meta["layers"][-1]["hidden_size"]
        where = "every step" if head["per_step"] else "last step"
        lines.append(f"  head: Dense {F} -> {O} on {where}, activation {head['activation']} (applied after "
                     "dequantizing, not in the file)")
        params += O * F + O
        macs += O * F
    for side in ("input", "output"):
        q = meta.get(side)
        if q:
            lines.append(f"  {side}: {q['dtype']} scale {q['scale']:.6g} zero point {q['zero_point']}")
    lines += [f"  size: {path.stat().st_size:,} bytes", f"  parameters: {params:,}", f"  MACs per step: {macs:,}"]
    return "\n".join(lines)


def _inspect(args) -> int:
    import grukit

    path = Path(args.model)
    if path.suffix.lower() == ".tflite":
        if not path.is_file():
            raise BadInputError(f"{path}: no such file")
        print(_describe_tflite(path))
    else:
        print(grukit.load(args.model).describe())
    return 0


def _export(args) -> int:
    import grukit
    from grukit.export.onnx_export import export_onnx_sequence, export_onnx_step
    from grukit.export.tflite_export import export_tflite_sequence_float, export_tflite_step_float
    from grukit.pipeline import load_x

    if args.c and not args.calib:
        raise BadInputError("--c writes integer C code and needs --calib to quantize")
    model = grukit.load(args.model)
    calib_x = load_x(args.calib, "calibration data", model.input_size) if args.calib else None
    T = args.steps if args.steps is not None else (calib_x.shape[1] if calib_x is not None else None)
    if T is not None and T < 1:
        raise BadInputError(f"--steps must be at least 1, got {T}")
    # A bidirectional GRU has no streaming integer form: it is not quantized, its float exports are written.
    quantize = calib_x is not None and not model.bidirectional
    qmodel = grukit.quantize(model, calib_x, scheme=args.scheme) if quantize else None
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    written = [export_onnx_sequence(model, out / "model.onnx")]
    if model.bidirectional:
        unused = [flag for flag, given in (("--calib", calib_x is not None), ("--c", args.c)) if given]
        print("bidirectional GRU: no step model (ONNX, TFLite) and no integer exports"
              + (f" ({' and '.join(unused)} not used)" if unused else ""), file=sys.stderr)
    else:
        written.append(export_onnx_step(model, out / "model_step.onnx"))
        written.append(export_tflite_step_float(model, out / "model_float_step.tflite"))
        if T is not None:
            written.append(export_tflite_sequence_float(model, out / f"model_float_seq_T{T}.tflite", T))
    if qmodel is not None:
        from grukit.export.onnx_qdq_export import export_onnx_qdq
        from grukit.export.tflite_export import export_tflite_sequence, export_tflite_step

        written.append(export_onnx_qdq(qmodel, out / f"model_{args.scheme}_qdq.onnx"))
        written.append(export_tflite_step(qmodel, out / f"model_{args.scheme}_step.tflite"))
        written.append(export_tflite_sequence(qmodel, out / f"model_{args.scheme}_seq_T{T}.tflite", T))
        if args.c:
            from grukit.export.c_export import export_c

            written.extend(export_c(qmodel, out / "c"))
    rows = [(str(Path(p).relative_to(out)), Path(p).stat().st_size) for p in written]
    width = max(len(name) for name, _ in rows)
    print(f"{'file':{width}s}  {'bytes':>10s}")
    for name, size in rows:
        print(f"{name:{width}s}  {size:>10,}")
    print(f"{len(rows)} files in {out}")
    return 0


def _finish_deploy(report, out) -> int:
    """The terminal summary: what a CI log needs without opening the report."""
    from grukit.report import format_value, verdict

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
