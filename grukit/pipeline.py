"""``grukit deploy``: one run from a trained model to a pass/fail report for a board.

    load -> float check -> [prune] -> calibrate -> quantize -> export -> evaluate -> check targets -> report

Each stage is timed and shown with a rich progress display (``grukit.progress``). Every stage calls the real
part of grukit; the only things a run may go without are environmental (a framework that is not importable,
no host C compiler, no ARM toolchain or QEMU) or follow from the model (a bidirectional GRU has no streaming
form: no integer model, TFLite or C). Each such gap is written into the report with its reason; nothing is
ever made up. Which runtimes are scored, and on how many sequences: ``grukit.evaluate``.

With ``prune`` (a ratio, or "auto": ``grukit.quantize.prune.search`` within max_drop, decided on the
calibration data) whole hidden units are removed and the consumers refitted (``grukit.quantize.prune``)
after the float check; every later stage works on the pruned model, and every drop is measured against the
original float model (``numpy-float-unpruned``). The report's pruning section compares flash, instructions
and latency with the unpruned model's, quantized and measured the same way.

Task and metric come from the validation labels: integer y [N] or [N, T] is classification (accuracy,
argmax of the output; a single output is thresholded), float y [N, O] or [N, T, O] is regression (MSE,
and MAE). ``task=`` overrides.
"""

from __future__ import annotations

from pathlib import Path

from grukit.artifacts import check_output_dir, staged_output, write_artifacts
from grukit.board_checks import (BIDIRECTIONAL_REASON, check_boards, compare_forms, require_c_kernel_limits,
                                 unpruned_device_figures)
from grukit.core.errors import BadInputError, UnsupportedModelError
from grukit.core.model import GRUModel
from grukit.core.scheme import scheme_named
from grukit.evaluate import BASELINE, Evaluation
from grukit.export.load import load
from grukit.firmware_ref.kernel import check_optimize
from grukit.inputs import TASKS, check_targets, data_name, infer_task, load_input_range, load_x, load_xy
from grukit.progress import Stages
from grukit.quantize import prune as pruning
from grukit.quantize.calibrate import calibrate
from grukit.quantize.quantize import OBSERVER_CHOICES, quantize_model
from grukit.report import Report, write_report
from grukit.runtime.budget import latency_ms
from grukit.runtime.targets import Target, load_target

# Allowed accuracy drop when the caller gives none: 2 points, a common acceptance bar for int8 PTQ.
DEFAULT_MAX_ACCURACY_DROP = 0.02
# Allowed rise of the MSE when the caller gives none, relative to the float model's: a forecaster that loses
# more than a quarter of its accuracy to quantization fails unless the user allows it.
DEFAULT_MAX_MSE_RISE = "25%"


def drop_limit(max_drop, task: str, baseline: float | None) -> tuple[float | None, float | None]:
    """(absolute limit, relative fraction or None) of an allowed drop: a number is absolute (accuracy: 0.01 =
    one point; MSE: an absolute rise); "X%" is X points of accuracy, or for MSE a rise of X% of the baseline's
    MSE. None: the task's default (DEFAULT_MAX_ACCURACY_DROP, DEFAULT_MAX_MSE_RISE)."""
    if max_drop is None:
        max_drop = DEFAULT_MAX_ACCURACY_DROP if task == "classification" else DEFAULT_MAX_MSE_RISE
    if isinstance(max_drop, str) and max_drop.strip().endswith("%"):
        fraction = _number(max_drop.strip()[:-1]) / 100.0
        if task == "classification":
            return fraction, None
        return (None if baseline is None else fraction * baseline), fraction
    return _number(max_drop), None


def _number(value) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise BadInputError(f"--max-drop takes a number or a percentage (0.01, 25%), got {value!r}") from None
    if not number >= 0:
        raise BadInputError(f"--max-drop must be zero or positive, got {value}")
    return number


def deploy(model_source, calib, val, target, scheme: str = "int8", max_drop: float | str | None = None,
           max_latency_ms: float | None = None, out_dir="grukit-out", task: str | None = None,
           progress: bool = True, class_names: list[str] | None = None, prune: float | str | None = None,
           prune_criterion: str = "activation", input_range=None, observer: str = "auto",
           optimize: str = "speed") -> Report:
    """Run every stage and write the report into out_dir; returns the Report (``report.exit_code``: 0 / 1).

    model_source: anything ``grukit.load`` takes. calib: .npz path with 'x' or an array [N, T, I]. val: .npz
    path with 'x' and 'y' or an (x, y) pair. target: a board name, a TOML path, a Target, or a list of them.
    max_drop: allowed drop of the metric from float to the NumPy integer runtime (``drop_limit``: accuracy
    fraction, 0.01 = one point, or "1%"; MSE: an absolute rise, or "25%" of float's MSE); None means
    DEFAULT_MAX_ACCURACY_DROP for classification and DEFAULT_MAX_MSE_RISE for regression. max_latency_ms:
    per whole validation-length sequence on each board. prune: None, a ratio in [0, 1) of hidden units to
    remove, or "auto" (module docstring); prune_criterion: "activation" or "weight". input_range: the
    sensor's input range ("LO:HI", a .json / .toml file, or a (lo, hi) pair; ``grukit.inputs.
    load_input_range``, ``quantize_model``) instead of the calibration data's. observer: how activation
    ranges are chosen (``quantize_model``; "auto" picks per tensor on held-out calibration sequences).
    optimize: the C constants' form, "speed" (default) or "size" (a byte per weight, no padding; int8 without its
    ADD / SUB tables; ``grukit.firmware_ref.c_export.export_c``); the board checks use it and the report compares
    both forms.

    Bad input raises BadInputError / UnsupportedModelError before any report is written. Everything is
    written into a fresh folder beside out_dir that replaces it only when the run completes
    (``grukit.artifacts.staged_output``): an error or Ctrl-C leaves out_dir as it was.
    """
    scheme = scheme_named(scheme)
    check_optimize(optimize)
    _check_limits(max_drop, max_latency_ms, task)
    boards, final_out = _boards(target), Path(out_dir)
    check_output_dir(final_out)
    with Stages(progress) as stages, staged_output(final_out) as out:
        with stages.run("load") as rec:
            model = load(model_source)
            calib_x = load_x(calib, "calibration data", model.input_size)
            val_x, val_y = load_xy(val, "validation data", model.input_size)
            task = infer_task(val_y, task, data_name("validation data", val))
            val_y = check_targets(task, val_y, model, val_x.shape[1], data_name("validation data", val))
            input_range = load_input_range(input_range, model.input_size)
            rec["detail"] = f"{model.param_count():,} parameters; {task}; {val_x.shape[0]} validation sequences"
        if prune is not None and model.bidirectional:
            raise UnsupportedModelError("--prune: pruning a bidirectional GRU is not supported (its two directions "
                                        "share the output features a unit would leave)")
        report = Report(source=_source_name(model_source, model), scheme=scheme.name, model=_model_summary(model),
                        task=task, metric="accuracy" if task == "classification" else "mse",
                        higher_is_better=(task == "classification"), class_names=class_names, baseline=BASELINE,
                        input_range=None if input_range is None else {"lo": input_range[0], "hi": input_range[1]},
                        optimize=optimize)
        ev = Evaluation(report, model, val_x, val_y, out)
        with stages.run("float check") as rec:
            rec["detail"] = ev.float_reference() + "; " + ev.framework(model_source)
        report.max_drop, report.max_drop_relative = drop_limit(max_drop, task, report.scores[BASELINE])
        original = model
        if prune is not None:
            widest = max(layer.hidden_size for layer in model.layers)
            with stages.run("prune", total=widest.bit_length() if prune == "auto" else 1) as rec:
                model, rec["detail"] = _prune(model, calib_x, prune, prune_criterion, report.max_drop, task, scheme,
                                              report, ev, rec["advance"])
        qmodel = _quantize(stages, model, calib_x, scheme, report, input_range, observer)
        with stages.run("export", total=5) as rec:
            files = write_artifacts(model, qmodel, out, val_x.shape[1], advance=rec["advance"], optimize=optimize)
            report.artifacts.update({ev.relative(path): path.stat().st_size for path in files.values()})
            rec["detail"] = f"{len(files)} files" + ("" if qmodel else f"; no TFLite/C: {BIDIRECTIONAL_REASON}")
        with stages.run("evaluate", total=6) as rec:
            ev.onnx_sequence(files["onnx_sequence"])
            rec["advance"]("onnxruntime")
            if qmodel is not None:
                ev.integer(qmodel, files, rec["advance"])
            rec["detail"] = ", ".join(f"{k} {_short(v)}" for k, v in report.scores.items())
        with stages.run("check targets", total=len(boards)) as rec:
            figures = check_boards(model, qmodel, files.get("c_model_c"), boards, val_x.shape[1], max_latency_ms,
                                   report, rec["advance"])
            compare_forms(model, qmodel, boards, figures, report)
            if prune is not None:
                _compare_unpruned(original, calib_x, scheme, boards, figures, val_x.shape[1], report, input_range)
            report.targets.extend(ev.bit_exact_checks)
            _check_drop(report, val_x.shape[0])
            failed = sum(t["pass"] is not True for t in report.checks())
            rec["detail"] = "all pass" if failed == 0 else f"{failed} of {len(report.checks())} checks not passing"
        report.stages = stages.records
        with stages.run("write report") as rec:
            write_report(report, out)
            rec["detail"] = str(final_out / "report.html")
        report.stages = stages.records
        write_report(report, out)  # again, so the report lists its own stage's time
    return report


def _check_limits(max_drop, max_latency_ms: float | None, task: str | None) -> None:
    if max_latency_ms is not None and not max_latency_ms > 0:
        raise BadInputError(f"--max-latency-ms must be positive, got {max_latency_ms}")
    drop_limit(max_drop, task or "classification", None)  # its form, before any work
    if task is not None and task not in TASKS:
        raise BadInputError(f"unknown task {task!r}; use one of {', '.join(TASKS)}")


def _check_prune(prune, criterion: str) -> None:
    if prune is None:
        return
    if prune != "auto" and (isinstance(prune, str) or not 0 <= prune < 1):
        raise BadInputError(f"--prune takes a ratio in [0, 1) or 'auto', got {prune!r}")
    if criterion not in pruning.CRITERIA:
        raise BadInputError(f"unknown pruning criterion {criterion!r}; use one of {', '.join(pruning.CRITERIA)}")


def _prune(model: GRUModel, calib_x, prune, criterion: str, max_drop, task: str, scheme, report: Report,
           ev: Evaluation, advance) -> tuple[GRUModel, str]:
    """The prune stage: (the pruned model, a one-line detail); fills report.prune and the scores."""
    found = None
    if prune == "auto":
        result, found = pruning.search(model, calib_x, max_drop, task=task, scheme=scheme, criterion=criterion,
                                       progress=advance)
    else:
        result = pruning.prune(model, calib_x, ratio=prune, criterion=criterion)
    report.prune = {**result.summary(model), "search": None, "boards": {}}
    if found is not None:
        report.prune["method"] += "; " + found.describe()
        report.prune["search"] = {"max_drop": found.max_drop, "task": found.task, "sequences": found.sequences,
                                  "trials": [list(t) for t in found.trials]}
    report.model = _model_summary(result.model)
    hidden = lambda m: "+".join(str(layer.hidden_size) for layer in m.layers)  # noqa: E731
    return result.model, f"hidden {hidden(model)} -> {hidden(result.model)}; {ev.pruned(result.model)}"


def _compare_unpruned(original: GRUModel, calib_x, scheme, boards: list[Target], figures: dict, T: int,
                      report: Report, input_range) -> None:
    """report.prune["boards"]: flash, instructions per step and latency of the unpruned model (quantized the
    same way) against the pruned one's."""
    before = unpruned_device_figures(original, quantize_model(original, calib_x, scheme=scheme,
                                                              input_range=input_range), boards,
                                     report.scheme, report.optimize)
    for board in boards:
        (flash_b, count_b), (flash_a, count_a) = before[board.name], figures[board.name]
        per_sequence = lambda c: latency_ms(board, c.per_step * T + c.per_sequence)  # noqa: E731
        report.prune["boards"][board.name] = {
            "flash_before": flash_b.value, "flash_after": flash_a.value,
            "instructions_before": count_b.per_step, "instructions_after": count_a.per_step,
            "latency_ms_before": per_sequence(count_b), "latency_ms_after": per_sequence(count_a),
            "measured": bool(count_b.measured and count_a.measured)}


def _boards(target) -> list[Target]:
    items = target if isinstance(target, (list, tuple)) else [target]
    if not items:
        raise BadInputError("give at least one target board")
    return [t if isinstance(t, Target) else load_target(t) for t in items]


def _source_name(model_source, model: GRUModel) -> str:
    """The loader's name for the model (``recorded_source``: a path as given, the demo relative to grukit)."""
    return model.source or type(model_source).__name__


def _model_summary(model: GRUModel) -> dict:
    return {
        "layers": len(model.layers), "input_size": model.input_size,
        "hidden_size": [layer.hidden_size for layer in model.layers], "params": model.param_count(),
        "macs_per_step": model.macs_per_step(), "output_size": model.output_size, "per_step": model.per_step,
        "bidirectional": model.bidirectional,
        "head": None if model.head is None else {
            "reads": model.head.reads,
            "layers": [{"in": d.in_features, "out": d.out_features, "activation": d.activation}
                       for d in model.head.layers]},
    }


def _quantize(stages: Stages, model: GRUModel, calib_x, scheme, report: Report, input_range, observer: str):
    """The calibrate and quantize stages; None (both skipped, the reason reported) for a bidirectional model."""
    if model.bidirectional:
        for name in ("calibrate", "quantize"):
            with stages.run(name) as rec:
                rec["status"], rec["detail"] = "skipped", BIDIRECTIONAL_REASON
        report.not_available["integer model, TFLite and C"] = BIDIRECTIONAL_REASON
        return None
    with stages.run("calibrate") as rec:
        observers = None if input_range is not None else calibrate(model, calib_x)
        rec["detail"] = (f"{calib_x.shape[0]} sequences x {calib_x.shape[1]} steps, {len(observers)} tensors"
                         if observers is not None else "with the declared input range (in the quantize stage)")
    with stages.run("quantize") as rec:
        if observer == "auto":  # the C kernel's limits first, on the quick min/max model, before the search
            require_c_kernel_limits(quantize_model(model, calib_x, scheme=scheme, observers=observers,
                                                   input_range=input_range, observer="minmax"), report.optimize)
        qmodel = quantize_model(model, calib_x, scheme=scheme, observers=observers, input_range=input_range,
                                observer=observer)
        require_c_kernel_limits(qmodel, report.optimize)
        chosen = qmodel.report.observer_kinds
        report.observer = {"name": observer, "chosen": {f"layer{l}/{n}" if l < len(model.layers) else n: kind
                                                        for (l, n), kind in chosen.items()}}
        rec["detail"] = f"{scheme.name}, observer {observer}" + (
            f" ({len(chosen)} tensor(s) not min/max)" if observer == "auto" else "")
    return qmodel


def _check_drop(report: Report, n: int) -> None:
    """The metric drop check of the NumPy integer runtime against the baseline."""
    int_runtime = f"numpy-{report.scheme}"
    drop = report.drop().get(int_runtime)
    note = f"over all {n} validation sequences" if drop is not None else BIDIRECTIONAL_REASON
    if report.max_drop_relative is not None:
        note += (f"; limit {100 * report.max_drop_relative:g}% of {report.baseline}'s {report.metric} "
                 f"{report.scores[report.baseline]:.4g}")
    report.targets.append({
        "name": f"{report.metric} drop ({int_runtime} vs {report.baseline})", "limit": report.max_drop,
        "value": drop, "unit": "", "pass": None if drop is None else bool(drop <= report.max_drop),
        "estimate": False, "note": note})


def _short(v) -> str:
    return "n/a" if v is None else f"{v:.4f}"
