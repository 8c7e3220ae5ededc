"""``grukit deploy``: one run from a trained model to a pass/fail report for a board.

    load -> float check -> calibrate -> quantize -> export -> evaluate -> check targets -> write report

Each stage is timed and shown with a rich progress display. The stages that call parts of grukit written
separately (quantization, exporters, runtime checkers) reach them through ``CAPABILITIES``, one small
registry: a part that is not in this build makes its stage "not available in this build" in the report,
with the reason, and never produces a number.

Task and metric come from the validation labels: integer y [N] or [N, T] is classification (accuracy,
argmax of the output; a single output is thresholded), float y [N, O] or [N, T, O] is regression (MSE,
and MAE). ``task=`` overrides.
"""

from __future__ import annotations

import importlib
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from grukit.errors import BadInputError, GrukitError
from grukit.model import GRUModel
from grukit.report import NOT_AVAILABLE, Report, write_report

STAGES = ("load", "float check", "calibrate", "quantize", "export", "evaluate", "check targets", "write report")
SCHEMES = ("int8", "16x8")
TASKS = ("classification", "regression")
# Allowed accuracy drop when the caller gives none: 2 points, a common acceptance bar for int8 PTQ.
DEFAULT_MAX_ACCURACY_DROP = 0.02
# Sequences given to a bit-exactness checker: enough to exercise every class, small enough to stay fast.
BIT_EXACT_SEQUENCES = 32


# --- the registry of parts other modules provide --------------------------------------------------------
@dataclass(frozen=True)
class Capability:
    """Where a part lives (``module.attr``) and the call contract the pipeline relies on."""

    module: str
    attr: str
    contract: str


CAPABILITIES = {
    "calibrate": Capability("grukit.quantize.calibrate", "calibrate",
                            "calibrate(model, calib_x) -> {(layer, tensor): observer}"),
    "quantize": Capability("grukit.quantize.quantize", "quantize",
                           "quantize(model, calib_x, scheme=, observers=) -> object with .predict(x); optional "
                           ".run_int/.quantize_input/.layers[l].qparams['h'] (drift), .report.saturated"),
    "export_onnx_sequence": Capability("grukit.export.onnx_export", "export_onnx_sequence",
                                       "export_onnx_sequence(model, path) -> path"),
    "export_onnx_step": Capability("grukit.export.onnx_export", "export_onnx_step",
                                   "export_onnx_step(model, path) -> path"),
    "export_tflite": Capability("grukit.export.tflite_export", "export_tflite",
                                "export_tflite(qmodel, path) -> path (integer .tflite)"),
    "export_c": Capability("grukit.export.c_export", "export_c",
                           "export_c(qmodel, out_dir) -> [paths] (C sources)"),
    "bit_exact_tflite_micro": Capability("grukit.runtime.tflm_check", "bit_exact_tflite_micro",
                                         "bit_exact_tflite_micro(qmodel, tflite_path, x) -> bool"),
}
_overrides: dict[str, Callable | None] = {}


def register(name: str, fn: Callable | None) -> None:
    """Replace a capability's implementation (None: make it unavailable); for plug-ins and tests."""
    if name not in CAPABILITIES:
        raise KeyError(f"unknown capability {name!r}; known: {', '.join(CAPABILITIES)}")
    _overrides[name] = fn


def unregister(name: str) -> None:
    """Go back to the implementation the registry names."""
    _overrides.pop(name, None)


def resolve(name: str) -> tuple[Callable | None, str]:
    """(implementation, "") or (None, why it is not available in this build)."""
    if name in _overrides:
        fn = _overrides[name]
        return fn, ("" if fn is not None else "disabled")
    cap = CAPABILITIES[name]
    try:
        module = importlib.import_module(cap.module)
    except ImportError as e:
        # The part, or a module it imports, is not in this build; the reason goes into the report verbatim.
        return None, f"{cap.module}.{cap.attr} cannot be imported ({e})"
    fn = getattr(module, cap.attr, None)
    if fn is None:
        return None, f"{cap.module} has no {cap.attr}"
    return fn, ""


# --- inputs --------------------------------------------------------------------------------------------
def _read_npz(path: Path, keys: tuple[str, ...], what: str) -> list[np.ndarray]:
    if not path.is_file():
        raise BadInputError(f"{what} {path}: no such file")
    try:
        with np.load(path, allow_pickle=False) as npz:
            missing = [k for k in keys if k not in npz.files]
            if missing:
                raise BadInputError(f"{what} {path}: no array {missing[0]!r} (it holds {', '.join(npz.files) or 'nothing'})")
            return [npz[k] for k in keys]
    except GrukitError:
        raise
    except Exception as e:  # zipfile / pickle / format errors all mean the same thing to the user
        raise BadInputError(f"{what} {path}: not a readable .npz file ({type(e).__name__}: {e})") from None


def load_x(source, what: str, input_size: int) -> np.ndarray:
    """Sequences x float32 [N, T, I] from a .npz path (array 'x') or an array."""
    if isinstance(source, (str, Path)):
        (x,) = _read_npz(Path(source), ("x",), what)
    else:
        x = np.asarray(source)
    if x.ndim != 3 or x.shape[2] != input_size or x.shape[0] == 0 or x.shape[1] == 0:
        raise BadInputError(f"{what}: x must have shape [N, T, {input_size}] with N, T > 0, got {list(x.shape)}")
    if not np.issubdtype(x.dtype, np.number) or not np.all(np.isfinite(x)):
        raise BadInputError(f"{what}: x must be finite numbers")
    return x.astype(np.float32)


def load_xy(source, what: str, input_size: int) -> tuple[np.ndarray, np.ndarray]:
    """(x [N, T, I], y) from a .npz path (arrays 'x' and 'y') or an (x, y) pair."""
    if isinstance(source, (str, Path)):
        x, y = _read_npz(Path(source), ("x", "y"), what)
    else:
        x, y = source
    x = load_x(x, what, input_size)
    y = np.asarray(y)
    if y.shape[:1] != x.shape[:1]:
        raise BadInputError(f"{what}: y has {y.shape[0] if y.ndim else 0} rows but x has {x.shape[0]}")
    return x, y


def infer_task(y: np.ndarray, task: str | None = None) -> str:
    """"classification" for integer labels [N] / [N, T], "regression" for float targets [N, O] / [N, T, O]."""
    if task is not None:
        if task not in TASKS:
            raise BadInputError(f"unknown task {task!r}; use one of {', '.join(TASKS)}")
        return task
    if np.issubdtype(y.dtype, np.integer) and y.ndim in (1, 2):
        return "classification"
    if np.issubdtype(y.dtype, np.floating) and y.ndim in (2, 3):
        return "regression"
    raise BadInputError(
        f"cannot tell the task from y of dtype {y.dtype} and shape {list(y.shape)}: give integer labels [N] or "
        "[N, T] (classification) or float targets [N, O] or [N, T, O] (regression), or pass --task"
    )


def _check_targets_shape(task: str, y: np.ndarray, model: GRUModel, T: int) -> np.ndarray:
    """y in the form the scorer expects, or a BadInputError saying what does not match the model."""
    O = model.output_size
    if task == "classification":
        if not np.issubdtype(y.dtype, np.integer):
            if not np.all(np.isfinite(y)) or not np.all(y == np.round(y)):
                raise BadInputError("task classification needs integer class labels in y")
        y = y.astype(np.int64)
        want = (y.shape[0], T) if model.per_step else (y.shape[0],)
        classes = max(O, 2)
        if y.shape != want:
            raise BadInputError(f"labels y must have shape {list(want)} for this model, got {list(y.shape)}")
        if y.min() < 0 or y.max() >= classes:
            raise BadInputError(f"labels must be in [0, {classes - 1}] for a model with {O} output(s); "
                                f"y holds {y.min()}..{y.max()}")
        return y
    y = y.astype(np.float32)
    if y.ndim == 1:
        y = y[:, None]
    want = (y.shape[0], T, O) if model.per_step else (y.shape[0], O)
    if y.shape != want:
        raise BadInputError(f"regression targets y must have shape {list(want)} for this model, got {list(y.shape)}")
    return y


# --- scoring -------------------------------------------------------------------------------------------
def predicted_labels(out: np.ndarray, model: GRUModel) -> np.ndarray:
    """Class per sample (or step): argmax, or for one output a threshold (0.5 after a sigmoid head, else 0)."""
    if out.shape[-1] == 1:
        threshold = 0.5 if model.head is not None and model.head.activation == "sigmoid" else 0.0
        return (out[..., 0] > threshold).astype(np.int64)
    return np.argmax(out, axis=-1).astype(np.int64)


def score(task: str, y: np.ndarray, out: np.ndarray, model: GRUModel) -> tuple[float, dict[str, float]]:
    """(primary metric, {other metrics}): accuracy for classification, MSE (and MAE) for regression."""
    if task == "classification":
        return float(np.mean(predicted_labels(out, model) == y)), {}
    err = out.astype(np.float64) - y
    return float(np.mean(err**2)), {"mae": float(np.mean(np.abs(err)))}


def confusion_matrix(y: np.ndarray, pred: np.ndarray, classes: int) -> list[list[int]]:
    """Counts, rows the true class, columns the predicted one."""
    cm = np.zeros((classes, classes), np.int64)
    np.add.at(cm, (y.ravel(), pred.ravel()), 1)
    return cm.tolist()


def hidden_drift(float_states: list[np.ndarray], int_states: list[np.ndarray]) -> list[dict]:
    """Per layer and step, mean and max |h_int - h_float| over samples and units (states [N, T, H])."""
    out = []
    for layer, (hf, hi) in enumerate(zip(float_states, int_states)):
        diff = np.abs(hi.astype(np.float64) - hf.astype(np.float64))
        out.append({"layer": layer, "mean": diff.mean(axis=(0, 2)).tolist(), "max": diff.max(axis=(0, 2)).tolist()})
    return out


# --- stage bookkeeping ---------------------------------------------------------------------------------
class _Stages:
    """Times each stage, records its status and shows it on a rich progress display (stderr)."""

    def __init__(self, show: bool):
        self.records: list[dict] = []
        self._progress = None
        if show:
            from rich.console import Console
            from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

            self._progress = Progress(SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn(),
                                      console=Console(stderr=True))

    def __enter__(self):
        if self._progress is not None:
            self._progress.start()
        return self

    def __exit__(self, *exc):
        if self._progress is not None:
            self._progress.stop()

    @contextmanager
    def run(self, name: str):
        record = {"name": name, "seconds": 0.0, "status": "ok", "detail": ""}
        task = None if self._progress is None else self._progress.add_task(name, total=1)
        start = time.perf_counter()
        try:
            yield record
        except BaseException:
            record["status"] = "failed"
            raise
        finally:
            record["seconds"] = time.perf_counter() - start
            self.records.append(record)
            if task is not None:
                mark = {"ok": "[green]ok[/]", "failed": "[red]failed[/]"}.get(record["status"], f"[yellow]{record['status']}[/]")
                detail = f"  [dim]{record['detail']}[/]" if record["detail"] else ""
                self._progress.update(task, completed=1, description=f"{name}: {mark}{detail}")


def _unavailable(record: dict, report: Report, key: str, reason: str) -> None:
    record["status"] = NOT_AVAILABLE
    record["detail"] = reason
    report.not_available[key] = reason


def _run_onnx(path: Path, x: np.ndarray) -> np.ndarray:
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(None, {session.get_inputs()[0].name: x})[0]


def _targets_list(target) -> list:
    from grukit.runtime.targets import Target, load_target

    items = target if isinstance(target, (list, tuple)) else [target]
    if not items:
        raise BadInputError("give at least one target board")
    return [t if isinstance(t, Target) else load_target(t) for t in items]


def _model_summary(model: GRUModel) -> dict:
    return {
        "layers": len(model.layers), "input_size": model.input_size,
        "hidden_size": [layer.hidden_size for layer in model.layers], "params": model.param_count(),
        "macs_per_step": model.macs_per_step(), "output_size": model.output_size, "per_step": model.per_step,
    }


# --- the pipeline --------------------------------------------------------------------------------------
def deploy(model_source, calib, val, target, scheme: str = "int8", max_drop: float | None = None,
           max_latency_ms: float | None = None, out_dir="grukit-out", task: str | None = None,
           progress: bool = True, class_names: list[str] | None = None) -> Report:
    """Run every stage and write the report into out_dir; returns the Report (``report.exit_code``: 0 / 1).

    model_source: anything ``grukit.load`` takes. calib: .npz path with 'x' or an array [N, T, I]. val: .npz
    path with 'x' and 'y' or an (x, y) pair. target: a board name, a TOML path, a Target, or a list of them.
    max_drop: allowed drop of the metric from float to integer (accuracy fraction: 0.01 = one point; MSE:
    absolute increase); None means DEFAULT_MAX_ACCURACY_DROP for classification and no check for
    regression. max_latency_ms: per whole validation-length sequence on each board. Bad input raises
    BadInputError / UnsupportedModelError before any report is written.
    """
    import grukit
    from grukit.runtime.float_gru import layers_forward
    from grukit.runtime.targets import check_budget, cost_model_instructions, memory_estimate

    if scheme not in SCHEMES:
        raise BadInputError(f"unknown scheme {scheme!r}; use one of {', '.join(SCHEMES)}")
    if max_latency_ms is not None and not max_latency_ms > 0:
        raise BadInputError(f"--max-latency-ms must be positive, got {max_latency_ms}")
    if max_drop is not None and not max_drop >= 0:
        raise BadInputError(f"--max-drop must be zero or positive, got {max_drop}")
    if task is not None and task not in TASKS:
        raise BadInputError(f"unknown task {task!r}; use one of {', '.join(TASKS)}")
    boards = _targets_list(target)
    out = Path(out_dir)

    with _Stages(progress) as stages:
        with stages.run("load") as rec:
            model = grukit.load(model_source)
            calib_x = load_x(calib, "calibration data", model.input_size)
            val_x, val_y = load_xy(val, "validation data", model.input_size)
            task = infer_task(val_y, task)
            val_y = _check_targets_shape(task, val_y, model, val_x.shape[1])
            source = str(model_source) if isinstance(model_source, (str, Path)) else (model.source or type(model_source).__name__)
            rec["detail"] = f"{model.param_count():,} parameters; {task}; {val_x.shape[0]} validation sequences"
        metric = "accuracy" if task == "classification" else "mse"
        if max_drop is None and task == "classification":
            max_drop = DEFAULT_MAX_ACCURACY_DROP
        report = Report(source=source, scheme=scheme, model=_model_summary(model), task=task, metric=metric,
                        higher_is_better=(task == "classification"), max_drop=max_drop, class_names=class_names)

        def record_scores(runtime: str, output: np.ndarray | None) -> None:
            if output is None:
                report.scores[runtime] = None
                for by_runtime in report.extra_scores.values():
                    by_runtime[runtime] = None
                return
            value, extras = score(task, val_y, output, model)
            report.scores[runtime] = value
            for name, v in extras.items():
                report.extra_scores.setdefault(name, {})[runtime] = v

        with stages.run("float check") as rec:
            float_out = model.predict(val_x)
            record_scores("float", float_out)
            detail = f"float {metric} {report.scores['float']:.4f}"
            if isinstance(model_source, (str, Path)) and Path(model_source).suffix.lower() == ".onnx":
                try:
                    source_out = _run_onnx(Path(model_source), val_x)
                except Exception as e:  # the source may use a layout onnxruntime cannot take as [N, T, I]
                    source_out = None
                    report.not_available["source"] = f"onnxruntime could not run the source on [N, T, I] input ({e})"
                if source_out is not None and source_out.shape == float_out.shape:
                    record_scores("source", source_out)
                    detail += f"; source in onnxruntime max |diff| {np.max(np.abs(source_out - float_out)):.2e}"
            rec["detail"] = detail

        with stages.run("calibrate") as rec:
            calibrate, why = resolve("calibrate")
            observers = None
            if calibrate is None:
                _unavailable(rec, report, "calibrate", why)
            else:
                observers = calibrate(model, calib_x)
                rec["detail"] = f"{calib_x.shape[0]} sequences x {calib_x.shape[1]} steps, {len(observers)} tensors"

        with stages.run("quantize") as rec:
            quantize, why = resolve("quantize")
            qmodel = None
            if quantize is None:
                _unavailable(rec, report, "quantize", why)
            else:
                kwargs = {} if observers is None else {"observers": observers}
                qmodel = quantize(model, calib_x, scheme=scheme, **kwargs)
                rec["detail"] = scheme

        with stages.run("export") as rec:
            out.mkdir(parents=True, exist_ok=True)
            written: list[Path] = []
            missing = []
            for cap, path in (("export_onnx_sequence", out / "model.onnx"), ("export_onnx_step", out / "model_step.onnx")):
                fn, why = resolve(cap)
                if fn is None:
                    report.not_available[cap] = why
                    missing.append(cap)
                else:
                    written.append(Path(fn(model, path)))
            tflite_path = None
            for cap in ("export_tflite", "export_c"):
                fn, why = resolve(cap)
                if qmodel is None:
                    why = "needs the quantized model: quantize is " + NOT_AVAILABLE
                    fn = None
                if fn is None:
                    report.not_available[cap] = why
                    missing.append(cap)
                elif cap == "export_tflite":
                    tflite_path = Path(fn(qmodel, out / f"model_{scheme}.tflite"))
                    written.append(tflite_path)
                else:
                    written.extend(Path(p) for p in fn(qmodel, out / "c"))
            for path in written:
                report.artifacts[str(path.relative_to(out)) if path.is_relative_to(out) else str(path)] = path.stat().st_size
            rec["detail"] = f"{len(written)} file(s)" + (f"; {NOT_AVAILABLE}: {', '.join(missing)}" if missing else "")

        with stages.run("evaluate") as rec:
            if (out / "model.onnx").is_file() and "model.onnx" in report.artifacts:
                record_scores("onnx", _run_onnx(out / "model.onnx", val_x))
            else:
                record_scores("onnx", None)
            int_out = None if qmodel is None else qmodel.predict(val_x)
            record_scores(scheme, int_out)
            if int_out is None:
                report.not_available[scheme] = "integer runtime: quantize is " + NOT_AVAILABLE
            if task == "classification":
                classes = max(model.output_size, 2)
                report.confusion["float"] = confusion_matrix(val_y, predicted_labels(float_out, model), classes)
                if int_out is not None:
                    report.confusion[scheme] = confusion_matrix(val_y, predicted_labels(int_out, model), classes)
            if qmodel is not None and all(hasattr(qmodel, a) for a in ("run_int", "quantize_input", "layers")):
                _, int_states = qmodel.run_int(qmodel.quantize_input(val_x))
                int_states = [layer.qparams["h"].dequantize(s) for layer, s in zip(qmodel.layers, int_states)]
                report.drift = hidden_drift(layers_forward(model, val_x), int_states)
            else:
                report.not_available["drift"] = "needs the integer runtime's states: " + (
                    "quantize is " + NOT_AVAILABLE if qmodel is None else "the quantized model has no run_int")
            saturated = getattr(getattr(qmodel, "report", None), "saturated", None)
            if saturated:
                report.saturation = [{"tensor": f"layer{layer}/{name}", "saturated": int(s), "total": int(n)}
                                     for (layer, name), (s, n) in sorted(saturated.items())]
            else:
                report.not_available["saturation"] = "calibration saturation counts: " + (
                    "quantize is " + NOT_AVAILABLE if qmodel is None else "the quantized model reports none")
            checker, why = resolve("bit_exact_tflite_micro")
            if checker is None or tflite_path is None:
                report.bit_exact["tflite-micro"] = None
                report.not_available["bit_exact tflite-micro"] = why or "needs the .tflite export, which is " + NOT_AVAILABLE
            else:
                report.bit_exact["tflite-micro"] = bool(checker(qmodel, tflite_path, val_x[:BIT_EXACT_SEQUENCES]))
            rec["detail"] = ", ".join(f"{k} {_short(v)}" for k, v in report.scores.items())

        with stages.run("check targets") as rec:
            memory = memory_estimate(model, scheme)
            count = cost_model_instructions(model)
            for board in boards:
                for check in check_budget(board, memory.flash_bytes, memory.ram_bytes, count.per_step, val_x.shape[1],
                                          count.per_sequence, max_latency_ms, count.source):
                    report.targets.append({"name": check.name, "limit": check.limit, "value": check.value,
                                           "unit": check.unit, "pass": check.passed, "estimate": check.estimate,
                                           "note": check.note})
            if max_drop is not None:
                drop = report.drop().get(scheme)
                report.targets.append({
                    "name": f"{metric} drop ({scheme} vs float)", "limit": max_drop, "value": drop, "unit": "",
                    "pass": None if drop is None else bool(drop <= max_drop), "estimate": False,
                    "note": "" if drop is not None else "quantize is " + NOT_AVAILABLE,
                })
            failed = sum(t["pass"] is not True for t in report.targets)
            rec["detail"] = "all pass" if failed == 0 else f"{failed} of {len(report.targets)} not passing"

        report.stages = stages.records
        with stages.run("write report") as rec:
            paths = write_report(report, out)
            rec["detail"] = str(paths["html"])
    return report


def _short(v) -> str:
    return "n/a" if v is None else f"{v:.4f}"
