"""``grukit deploy``: one run from a trained model to a pass/fail report for a board.

    load -> float check -> calibrate -> quantize -> export -> evaluate -> check targets -> write report

Each stage is timed and shown with a rich progress display (``grukit.progress``). Every stage calls the real
part of grukit; the only things a run may go without are environmental (a framework that is not importable,
no host C compiler, no ARM toolchain or QEMU) or follow from the model (a bidirectional GRU has no streaming
form: no integer model, TFLite or C). Each such gap is written into the report with its reason; nothing is
ever made up. Which runtimes are scored, and on how many sequences: ``grukit.evaluate``.

Task and metric come from the validation labels: integer y [N] or [N, T] is classification (accuracy,
argmax of the output; a single output is thresholded), float y [N, O] or [N, T, O] is regression (MSE,
and MAE). ``task=`` overrides.
"""

from __future__ import annotations

from pathlib import Path

from grukit.artifacts import write_artifacts
from grukit.board_checks import BIDIRECTIONAL_REASON, check_boards
from grukit.core.errors import BadInputError
from grukit.core.model import GRUModel
from grukit.core.scheme import scheme_named
from grukit.evaluate import BASELINE, Evaluation
from grukit.export.load import load
from grukit.inputs import TASKS, check_targets, infer_task, load_x, load_xy
from grukit.progress import Stages
from grukit.quantize.calibrate import calibrate
from grukit.quantize.quantize import quantize_model
from grukit.report import Report, write_report
from grukit.runtime.targets import Target, load_target

# Allowed accuracy drop when the caller gives none: 2 points, a common acceptance bar for int8 PTQ.
DEFAULT_MAX_ACCURACY_DROP = 0.02


def deploy(model_source, calib, val, target, scheme: str = "int8", max_drop: float | None = None,
           max_latency_ms: float | None = None, out_dir="grukit-out", task: str | None = None,
           progress: bool = True, class_names: list[str] | None = None) -> Report:
    """Run every stage and write the report into out_dir; returns the Report (``report.exit_code``: 0 / 1).

    model_source: anything ``grukit.load`` takes. calib: .npz path with 'x' or an array [N, T, I]. val: .npz
    path with 'x' and 'y' or an (x, y) pair. target: a board name, a TOML path, a Target, or a list of them.
    max_drop: allowed drop of the metric from float to the NumPy integer runtime (accuracy fraction: 0.01 =
    one point; MSE: absolute increase); None means DEFAULT_MAX_ACCURACY_DROP for classification and no check
    for regression. max_latency_ms: per whole validation-length sequence on each board. Bad input raises
    BadInputError / UnsupportedModelError before any report is written.
    """
    scheme = scheme_named(scheme)
    _check_limits(max_drop, max_latency_ms, task)
    boards, out = _boards(target), Path(out_dir)
    with Stages(progress) as stages:
        with stages.run("load") as rec:
            model = load(model_source)
            calib_x = load_x(calib, "calibration data", model.input_size)
            val_x, val_y = load_xy(val, "validation data", model.input_size)
            task = infer_task(val_y, task)
            val_y = check_targets(task, val_y, model, val_x.shape[1])
            rec["detail"] = f"{model.param_count():,} parameters; {task}; {val_x.shape[0]} validation sequences"
        if max_drop is None and task == "classification":
            max_drop = DEFAULT_MAX_ACCURACY_DROP
        report = Report(source=_source_name(model_source, model), scheme=scheme.name, model=_model_summary(model),
                        task=task, metric="accuracy" if task == "classification" else "mse",
                        higher_is_better=(task == "classification"), max_drop=max_drop, class_names=class_names,
                        baseline=BASELINE)
        ev = Evaluation(report, model, val_x, val_y, out)
        with stages.run("float check") as rec:
            rec["detail"] = ev.float_reference() + "; " + ev.framework(model_source)
        qmodel = _quantize(stages, model, calib_x, scheme, report)
        with stages.run("export", total=5) as rec:
            files = write_artifacts(model, qmodel, out, val_x.shape[1], advance=rec["advance"])
            report.artifacts.update({ev.relative(path): path.stat().st_size for path in files.values()})
            rec["detail"] = f"{len(files)} files" + ("" if qmodel else f"; no TFLite/C: {BIDIRECTIONAL_REASON}")
        with stages.run("evaluate", total=6) as rec:
            ev.onnx_sequence(files["onnx_sequence"])
            rec["advance"]("onnxruntime")
            if qmodel is not None:
                ev.integer(qmodel, files, rec["advance"])
            rec["detail"] = ", ".join(f"{k} {_short(v)}" for k, v in report.scores.items())
        with stages.run("check targets", total=len(boards)) as rec:
            check_boards(model, qmodel, files.get("c_model_c"), boards, val_x.shape[1], max_latency_ms,
                         report, rec["advance"])
            report.targets.extend(ev.bit_exact_checks)
            _check_drop(report, max_drop, val_x.shape[0])
            failed = sum(t["pass"] is not True for t in report.checks())
            rec["detail"] = "all pass" if failed == 0 else f"{failed} of {len(report.checks())} checks not passing"
        report.stages = stages.records
        with stages.run("write report") as rec:
            rec["detail"] = str(write_report(report, out)["html"])
        report.stages = stages.records
        write_report(report, out)  # again, so the report lists its own stage's time
    return report


def _check_limits(max_drop: float | None, max_latency_ms: float | None, task: str | None) -> None:
    if max_latency_ms is not None and not max_latency_ms > 0:
        raise BadInputError(f"--max-latency-ms must be positive, got {max_latency_ms}")
    if max_drop is not None and not max_drop >= 0:
        raise BadInputError(f"--max-drop must be zero or positive, got {max_drop}")
    if task is not None and task not in TASKS:
        raise BadInputError(f"unknown task {task!r}; use one of {', '.join(TASKS)}")


def _boards(target) -> list[Target]:
    items = target if isinstance(target, (list, tuple)) else [target]
    if not items:
        raise BadInputError("give at least one target board")
    return [t if isinstance(t, Target) else load_target(t) for t in items]


def _source_name(model_source, model: GRUModel) -> str:
    if isinstance(model_source, (str, Path)):
        return str(model_source)
    return model.source or type(model_source).__name__


def _model_summary(model: GRUModel) -> dict:
    return {
        "layers": len(model.layers), "input_size": model.input_size,
        "hidden_size": [layer.hidden_size for layer in model.layers], "params": model.param_count(),
        "macs_per_step": model.macs_per_step(), "output_size": model.output_size, "per_step": model.per_step,
        "bidirectional": model.bidirectional,
    }


def _quantize(stages: Stages, model: GRUModel, calib_x, scheme, report: Report):
    """The calibrate and quantize stages; None (both skipped, the reason reported) for a bidirectional model."""
    if model.bidirectional:
        for name in ("calibrate", "quantize"):
            with stages.run(name) as rec:
                rec["status"], rec["detail"] = "skipped", BIDIRECTIONAL_REASON
        report.not_available["integer model, TFLite and C"] = BIDIRECTIONAL_REASON
        return None
    with stages.run("calibrate") as rec:
        observers = calibrate(model, calib_x)
        rec["detail"] = f"{calib_x.shape[0]} sequences x {calib_x.shape[1]} steps, {len(observers)} tensors"
    with stages.run("quantize") as rec:
        qmodel = quantize_model(model, calib_x, scheme=scheme, observers=observers)
        rec["detail"] = scheme.name
    return qmodel


def _check_drop(report: Report, max_drop: float | None, n: int) -> None:
    """The metric drop check of the NumPy integer runtime against float, when there is a limit."""
    if max_drop is None:
        return
    int_runtime = f"numpy-{report.scheme}"
    drop = report.drop().get(int_runtime)
    report.targets.append({
        "name": f"{report.metric} drop ({int_runtime} vs {BASELINE})", "limit": max_drop, "value": drop,
        "unit": "", "pass": None if drop is None else bool(drop <= max_drop), "estimate": False,
        "note": f"over all {n} validation sequences" if drop is not None else BIDIRECTIONAL_REASON,
    })


def _short(v) -> str:
    return "n/a" if v is None else f"{v:.4f}"
