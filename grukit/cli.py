"""The ``grukit`` command line.

    grukit inspect MODEL                      layers, parameters, MACs per step (MODEL may be a grukit .tflite)
    grukit export MODEL --out DIR [--calib X.npz [--scheme int8|16x8] [--c]] [--steps T]
    grukit prune MODEL --calib X.npz (--ratio R | --units N[,N...] | --ratio auto --max-drop D | --sparsity S)
                 --out M.onnx
    grukit deploy MODEL --calib X.npz --val V.npz --target BOARD [--prune R|auto] [...]
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
import importlib.util
import json
import sys
import warnings
from pathlib import Path

import grukit
from grukit.core.errors import BadInputError, GrukitError

DATA_DIR = Path(__file__).resolve().parent / "data"
DEMO_TARGET = "stm32l476"
STAGES = ("export", "quantize", "runtime", "firmware_ref")
CLI_WARNINGS = 5  # the terminal shows the most severe warnings; the report has them all


class _Parser(argparse.ArgumentParser):
    """argparse, with a usage error as one line like every other bad input (its usage is in --help)."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


OPTIMIZE_HELP = ("the C constants' form: speed (default; packed weights, int8 ADD / SUB tables) or size (a byte per "
                 "weight, no padding, int8 ADD / SUB computed: int8 22-74%% less model flash, 16x8 3-21%%; 1.4-2.4x "
                 "the instructions, but faster on a Cortex-M55, whose Helium path runs it); both give the same "
                 "integers")


def _parser() -> argparse.ArgumentParser:
    p = _Parser(prog="grukit", description="Take a trained GRU to a microcontroller.")
    p.add_argument("--version", action="version", version=f"grukit {grukit.__version__}")
    p.add_argument("--debug", action="store_true", help="show the traceback of an error")
    sub = p.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
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
    s.add_argument("--optimize", choices=("speed", "size"), default="speed", help="with --c: " + OPTIMIZE_HELP)
    s.add_argument("--input-range", metavar="LO:HI|FILE",
                   help="with --calib: the sensor's input range instead of the calibration data's (as for deploy)")
    s.add_argument("--observer", choices=("auto", "minmax", "percentile", "mse"), default="auto",
                   help="with --calib: how activation ranges are chosen (as for deploy; default auto)")
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
    s.add_argument("--optimize", choices=("speed", "size"), default="speed",
                   help=OPTIMIZE_HELP + "; the report shows both forms' flash and instructions per step")
    s.add_argument("--max-drop", default=None, metavar="D|P%",
                   help="allowed metric drop from float: accuracy 0.01 or 1%% = one point (default 2%%); MSE an "
                        "absolute rise, or P%% of float's MSE (default 25%%)")
    s.add_argument("--max-latency-ms", type=float, default=None, help="latency limit for one validation sequence")
    s.add_argument("--out", default="grukit-out", help="output directory (default grukit-out)")
    s.add_argument("--task", choices=("classification", "regression"), help="override the task inferred from y")
    s.add_argument("--observer", choices=("auto", "minmax", "percentile", "mse"), default="auto",
                   help="how activation ranges are chosen (default auto: per tensor, whichever keeps the integer "
                        "model closest to float on held-out calibration sequences)")
    s.add_argument("--input-range", metavar="LO:HI|FILE",
                   help="the sensor's input range instead of the calibration data's: LO:HI (write --input-range=-4:4 "
                        "for a negative LO) or a .json / .toml file with lo and hi, each a number or one per channel")
    s.add_argument("--prune", type=_ratio_or_auto, metavar="RATIO|auto",
                   help="remove this fraction of hidden units first (refitted on the calibration data); auto: the "
                        "largest fraction whose quantized model stays within --max-drop of the original float model "
                        "on the calibration data")
    s.add_argument("--prune-criterion", choices=("activation", "weight"), default="activation",
                   help="which units go (default activation: decided on the calibration data)")

    s = sub.add_parser("prune", parents=[debug], help="remove whole hidden units; write the smaller float model")
    s.add_argument("model")
    s.add_argument("--calib", required=True, help=".npz with x [N, T, I]: the refit and the activation criterion read it")
    amount = s.add_mutually_exclusive_group(required=True)
    amount.add_argument("--ratio", type=_ratio_or_auto, metavar="RATIO|auto",
                        help="fraction of hidden units to remove, in [0, 1); auto needs --max-drop")
    amount.add_argument("--units", type=_unit_counts, metavar="N[,N...]",
                        help="hidden units to keep: one number for every layer, or one per layer")
    amount.add_argument("--sparsity", type=float, metavar="S",
                        help="magnitude pruning instead: set this fraction of weight blocks to zero (the C kernel "
                             "stores sparse matrices compactly and skips their zero blocks)")
    s.add_argument("--block", type=_block, default=(4, 8), metavar="RxC",
                   help="with --sparsity: the block of weights set to zero together (default 4x8, the C kernel's "
                        "group; 1x1 for single weights)")
    s.add_argument("--out", required=True, help="the pruned model, a float .onnx file")
    s.add_argument("--criterion", choices=("activation", "weight"), default="activation")
    s.add_argument("--scope", choices=("layer", "global", "matrix"), default=None,
                   help="units: the same fraction in every layer (layer, the default) or over the whole model "
                        "(global); --sparsity: blocks ranked over the whole model (global, the default) or in "
                        "each matrix (matrix)")
    s.add_argument("--no-refit", action="store_true", help="only remove the units; leave the other weights as they are")
    s.add_argument("--max-drop", type=float, default=None,
                   help="with --ratio auto: the allowed disagreement with the original float model on the "
                        "calibration data (classification: 0.01 = one point) or MSE (regression)")
    s.add_argument("--task", choices=("classification", "regression"), default="classification",
                   help="with --ratio auto: how outputs are compared (default classification)")
    s.add_argument("--scheme", choices=("int8", "16x8"), default="int8",
                   help="with --ratio auto: the quantization the search scores (default int8)")

    s = sub.add_parser("demo", parents=[debug], help="deploy the embedded gesture-recognition demo")
    s.add_argument("--out", default="grukit-demo", help="output directory (default grukit-demo)")
    s.add_argument("--target", action="append", help=f"board (default {DEMO_TARGET}); repeat for several")
    s.add_argument("--scheme", choices=("int8", "16x8"), default="int8")

    sub.add_parser("targets", parents=[debug], help="list the boards grukit knows")
    return p


def _ratio_or_auto(text: str) -> float | str:
    if text == "auto":
        return text
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a ratio in [0, 1) or 'auto', got {text!r}") from None


def _unit_counts(text: str) -> list[int] | int:
    try:
        counts = [int(v) for v in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a unit count or one per layer (48 or 48,32), got {text!r}") from None
    return counts[0] if len(counts) == 1 else counts


def _block(text: str) -> tuple[int, int]:
    try:
        rows, cols = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a block as ROWSxCOLUMNS (4x8, 1x1), got {text!r}") from None
    return rows, cols


def _inspect(args) -> int:
    from grukit.export.tflite_read import describe_tflite  # per command (see the top of this module)

    path = Path(args.model)
    if path.suffix.lower() == ".tflite":
        print(describe_tflite(path))
    else:
        print(grukit.load(args.model).describe())
    return 0


def _export(args) -> int:
    from grukit.artifacts import check_output_dir, staged_output, write_artifacts  # per command (see the top)
    from grukit.firmware_ref.kernel import check_optimize  # per command (see the top of this module)
    from grukit.inputs import load_input_range, load_x  # per command (see the top of this module)

    if args.c and not args.calib:
        raise BadInputError("--c writes integer C code and needs --calib to quantize")
    if args.input_range and not args.calib:
        raise BadInputError("--input-range sets the integer model's input quantization and needs --calib")
    if args.optimize != "speed" and not args.c:
        raise BadInputError("--optimize chooses the form of the C constants and needs --c")
    check_optimize(args.optimize)
    check_output_dir(Path(args.out))  # before any work
    model = grukit.load(args.model)
    input_range = load_input_range(args.input_range, model.input_size)
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
    qmodel = (grukit.quantize(model, calib_x, scheme=args.scheme, input_range=input_range, observer=args.observer)
              if quantize else None)
    out = Path(args.out)
    with staged_output(out) as work:  # out gets every file or, on any error, stays as it was
        files = write_artifacts(model, qmodel, work, T, c=args.c, optimize=args.optimize)
        rows = [(str(path.relative_to(work)), path.stat().st_size) for path in files.values()]
    width = max(len(name) for name, _ in rows)
    print(f"{'file':{width}s}  {'bytes':>10s}")
    for name, size in rows:
        print(f"{name:{width}s}  {size:>10,}")
    print(f"{len(rows)} files in {out}")
    return 0


def _prune(args) -> int:
    from grukit.artifacts import check_output_file, write_file_atomically  # per command (see the top)
    from grukit.export.onnx_export import export_onnx_sequence  # per command (see the top of this module)
    from grukit.inputs import load_x  # per command (see the top of this module)
    from grukit.quantize import prune  # per command (see the top of this module)

    out = Path(args.out)
    if out.suffix.lower() != ".onnx":
        raise BadInputError(f"--out {out}: the pruned model is written as float ONNX; give a .onnx file name")
    check_output_file(out)  # before any work
    if (args.ratio == "auto") != (args.max_drop is not None):
        raise BadInputError("--ratio auto and --max-drop go together: auto searches the largest ratio within the drop")
    scopes = ("global", "matrix") if args.sparsity is not None else ("layer", "global")
    if args.scope is not None and args.scope not in scopes:
        raise BadInputError(f"--scope {args.scope} does not apply here; use {' or '.join(scopes)}")
    model = grukit.load(args.model)
    calib_x = load_x(args.calib, "calibration data", model.input_size)
    if args.sparsity is not None:
        result = prune.sparsify(model, args.sparsity, block=args.block, scope=args.scope or "global",
                                calib_x=None if args.no_refit else calib_x)
        print(result.describe())
        for t in result.tensors:
            print(f"  {t['name']:14s} {'x'.join(map(str, t['shape'])):>9s}  {100 * t['zeros'] / t['elements']:5.1f}% "
                  f"zero, {t['zero_blocks']} of {t['blocks']} blocks")
    else:
        if model.bidirectional:
            raise grukit.UnsupportedModelError("pruning a bidirectional GRU is not supported (its two directions "
                                               "share the output features a unit would leave)")
        if args.ratio == "auto":
            result, found = prune.search(model, calib_x, args.max_drop, task=args.task, scheme=args.scheme,
                                         criterion=args.criterion, scope=args.scope or "layer",
                                         progress=lambda line: print(f"  {line}", file=sys.stderr))
        else:
            result, found = prune.prune(model, calib_x, ratio=args.ratio, units=args.units, criterion=args.criterion,
                                        scope=args.scope or "layer", refit_weights=not args.no_refit), None
        summary = result.summary(model)
        print(summary["method"] + (f"; {found.describe()}" if found else ""))
        for i, layer in enumerate(summary["layers"]):
            print(f"  layer {i}: hidden {layer['hidden_before']} -> {layer['hidden_after']}")
        print(f"  parameters {summary['params_before']:,} -> {summary['params_after']:,}; "
              f"MACs per step {summary['macs_before']:,} -> {summary['macs_after']:,}")
    reference, pruned = model.predict(calib_x), result.model.predict(calib_x)
    loss = prune.calibration_loss(reference, pruned, model, args.task)
    print(f"  float predictions differing from the original's on the calibration data: {100 * loss:.2f}%"
          if args.task == "classification" else f"  float MSE against the original on the calibration data: {loss:.4g}")
    write_file_atomically(out, lambda path: export_onnx_sequence(result.model, path))
    print(f"wrote {out} ({out.stat().st_size:,} bytes)")
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
    for line in report.warnings[:CLI_WARNINGS]:
        print(f"  WARNING {line}")
    if len(report.warnings) > CLI_WARNINGS:
        print(f"  ... {len(report.warnings) - CLI_WARNINGS} more warnings in the report")
    print(f"report: {Path(out) / 'report.html'}  {Path(out) / 'report.md'}  {Path(out) / 'report.json'}")
    return report.exit_code


def _deploy(args) -> int:
    from grukit.pipeline import deploy  # per command (see the top of this module)

    report = deploy(args.model, args.calib, args.val, args.target, scheme=args.scheme, max_drop=args.max_drop,
                    max_latency_ms=args.max_latency_ms, out_dir=args.out, task=args.task,
                    progress=sys.stderr.isatty(), prune=args.prune, prune_criterion=args.prune_criterion,
                    input_range=args.input_range, observer=args.observer, optimize=args.optimize)
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


COMMANDS = {"inspect": _inspect, "export": _export, "prune": _prune, "deploy": _deploy, "demo": _demo, "targets": _targets}


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``grukit`` console script; returns the exit code."""
    parser = _parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    try:
        with warnings.catch_warnings():
            if not args.debug:
                warnings.showwarning = _one_line_warning(args.command)
            return COMMANDS[args.command](args)
    except GrukitError as e:
        if args.debug:
            raise
        print(f"grukit {args.command}: error: {e}", file=sys.stderr)
        return 2


def _one_line_warning(command: str):
    """grukit's own warnings as one line each on stderr; other libraries' warnings (deprecations, their
    internals) are not the user's to act on and stay hidden unless --debug."""
    # The stages live beside grukit/ in a clone (pyproject maps them in) and inside it in a wheel.
    ours = [Path(grukit.__file__).resolve().parent]
    for stage in STAGES:
        spec = importlib.util.find_spec(f"grukit.{stage}")
        ours += [Path(p).resolve() for p in (spec.submodule_search_locations or [])] if spec else []

    def show(message, category, filename, lineno, file=None, line=None):
        if any(Path(filename).resolve().is_relative_to(folder) for folder in ours):
            print(f"grukit {command}: warning: {message}", file=sys.stderr)

    return show


if __name__ == "__main__":
    sys.exit(main())
