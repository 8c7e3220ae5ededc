"""``grukit deploy``: one run from a trained model to a pass/fail report for a board.

    load -> float check -> calibrate -> quantize -> export -> evaluate -> check targets -> write report

Each stage is timed and shown with a rich progress display. Every stage calls the real part of grukit; the
only things a run may go without are environmental (a framework that is not importable, no host C compiler,
no ARM toolchain or QEMU) or follow from the model (a bidirectional GRU has no streaming form: no integer
model, TFLite or C). Each such gap is written into the report with its reason; nothing is ever made up.

Runtimes evaluated on the validation data (the report's ``scores`` keys):

    framework      the source model in its own framework: onnxruntime (.onnx; ONNX's reference evaluator for
                   a batch-major GRU, which onnxruntime lacks), torch (.pt2, nn.Module), Keras (.keras)
    onnxruntime    the float ONNX sequence model grukit exported
    numpy-float    grukit's float reference (the baseline every drop is measured from)
    numpy-<scheme> the NumPy integer runtime
    litert         the integer TFLite sequence model in LiteRT (its own kernels: compared in LSB)
    onnxruntime-qdq  the QDQ ONNX step model in onnxruntime, default session options (compared in LSB)
    tflite-micro   the integer TFLite sequence model in TFLite-Micro
    c-kernel       firmware_ref's C kernel built for the host, on the generated model constants

NumPy float, NumPy integer and the C kernel see every validation sequence. The TFLite interpreters run one
sequence per call in Python and are slow, so they see the first ``interpreter_sequences(N, T)`` sequences
(at most INTERPRETER_MAX_STEPS time steps in all); their drop is measured against NumPy float on the same
sequences, and the report says how many sequences each runtime saw.

Task and metric come from the validation labels: integer y [N] or [N, T] is classification (accuracy,
argmax of the output; a single output is thresholded), float y [N, O] or [N, T, O] is regression (MSE,
and MAE). ``task=`` overrides.
"""

from __future__ import annotations

import dataclasses
import time
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from grukit.errors import BadInputError, GrukitError
from grukit.export.source_runtime import FrameworkUnavailable, run_source
from grukit.model import GRUModel
from grukit.report import Report, write_report
from grukit.runtime.float_gru import layers_forward, output_from_states

SCHEMES = ("int8", "16x8")
TASKS = ("classification", "regression")
# Allowed accuracy drop when the caller gives none: 2 points, a common acceptance bar for int8 PTQ.
DEFAULT_MAX_ACCURACY_DROP = 0.02
# Time steps (sequences x T) given to the TFLite interpreters: TFLite-Micro's Python interpreter runs about
# 7,000 steps a second of the demo model on one core, so this keeps it to a few seconds.
INTERPRETER_MAX_STEPS = 20_000
BASELINE = "numpy-float"
BIDIRECTIONAL_REASON = ("the model has a bidirectional GRU layer: a streaming device sees each sample once, so "
                        "there is no integer model, step model, TFLite or C for it")


def interpreter_sequences(n: int, T: int) -> int:
    """How many of n validation sequences of length T the TFLite interpreters run (the first ones)."""
    return max(1, min(n, INTERPRETER_MAX_STEPS // T))


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


# --- the source model in its own framework -------------------------------------------------------------
def run_framework(source, model: GRUModel, x: np.ndarray) -> tuple[np.ndarray, str]:
    """(the source model's float output on x [N, T, I] in its own framework, which framework ran it), in the
    model's output shape. Raises FrameworkUnavailable with the reason when it cannot run here."""
    out, who = run_source(source, model, x)
    want = model.predict(x[:1]).shape[1:]
    if out.ndim == 3 and len(want) == 1 and out.shape[2] == want[0]:
        out = out[:, -1]  # a forward returning every step of a head-less GRU: the model's output is the last
    if out.shape[1:] != want:
        raise FrameworkUnavailable(f"{who} returned shape {list(out.shape)}, the model's output is "
                                   f"{[x.shape[0], *want]}")
    return out.astype(np.float32), who


# --- stage bookkeeping ---------------------------------------------------------------------------------
class _Stages:
    """Times each stage, records its status and shows it as a progress bar on stderr (rich)."""

    def __init__(self, show: bool):
        self.records: list[dict] = []
        self._progress = None
        if show:
            from rich.console import Console
            from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

            self._progress = Progress(SpinnerColumn(), TextColumn("{task.description}"), BarColumn(),
                                      TimeElapsedColumn(), console=Console(stderr=True))

    def __enter__(self):
        if self._progress is not None:
            self._progress.start()
        return self

    def __exit__(self, *exc):
        if self._progress is not None:
            self._progress.stop()

    @contextmanager
    def run(self, name: str, total: int = 1):
        """Time the block; it gets a record dict (set "detail", "status") and may call record["advance"]()
        once per unit of ``total``."""
        record = {"name": name, "seconds": 0.0, "status": "ok", "detail": ""}
        task = None if self._progress is None else self._progress.add_task(name, total=total)
        record["advance"] = (lambda what="": None) if task is None else (
            lambda what="": self._progress.update(task, advance=1, description=f"{name}: {what}" if what else name))
        start = time.perf_counter()
        try:
            yield record
        except BaseException:
            record["status"] = "failed"
            raise
        finally:
            record.pop("advance")
            record["seconds"] = time.perf_counter() - start
            self.records.append(record)
            if task is not None:
                mark = {"ok": "[green]ok[/]", "failed": "[red]failed[/]"}.get(record["status"], f"[yellow]{record['status']}[/]")
                detail = f"  [dim]{record['detail']}[/]" if record["detail"] else ""
                self._progress.update(task, completed=total, description=f"{name}: {mark}{detail}")


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
        "bidirectional": model.bidirectional,
    }


def _relative(path: Path, out: Path) -> str:
    return str(path.relative_to(out)) if path.is_relative_to(out) else str(path)


# --- the pipeline --------------------------------------------------------------------------------------
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
    import grukit

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
        N, T = val_x.shape[:2]
        report = Report(source=source, scheme=scheme, model=_model_summary(model), task=task, metric=metric,
                        higher_is_better=(task == "classification"), max_drop=max_drop, class_names=class_names,
                        baseline=BASELINE)
        int_runtime = f"numpy-{scheme}"
        float_out = None

        def record(runtime: str, output: np.ndarray, what: str, n: int = N, note: str = "") -> None:
            value, extras = score(task, val_y[:n], output, model)
            report.scores[runtime] = value
            for name, v in extras.items():
                report.extra_scores.setdefault(name, {})[runtime] = v
            entry = {"what": what, "sequences": n, "of": N, "note": note}
            if n < N:  # its drop is measured against the float reference on the same sequences
                entry["baseline"] = score(task, val_y[:n], float_out[:n], model)[0]
            report.runtimes[runtime] = entry

        with stages.run("float check") as rec:
            float_states = layers_forward(model, val_x)  # kept for the drift against the integer states
            float_out = output_from_states(model, float_states)
            record(BASELINE, float_out, "grukit's float NumPy reference (grukit.runtime.float_gru)")
            detail = f"numpy-float {metric} {report.scores[BASELINE]:.4f}"
            try:
                framework_out, who = run_framework(model_source, model, val_x)
            except FrameworkUnavailable as e:
                report.not_available["framework"] = str(e)
                detail += f"; framework not run: {e}"
            else:
                diff = float(np.max(np.abs(framework_out - float_out)))
                record("framework", framework_out, f"the source model in {who}",
                       note=f"max |framework - numpy-float| = {diff:.2e}")
                detail += f"; {who} max |diff| {diff:.2e}"
            rec["detail"] = detail

        qmodel = None
        if model.bidirectional:
            for name in ("calibrate", "quantize"):
                with stages.run(name) as rec:
                    rec["status"], rec["detail"] = "skipped", BIDIRECTIONAL_REASON
            report.not_available["integer model, TFLite and C"] = BIDIRECTIONAL_REASON
        else:
            from grukit.quantize.calibrate import calibrate as calibrate_ranges

            with stages.run("calibrate") as rec:
                observers = calibrate_ranges(model, calib_x)
                rec["detail"] = f"{calib_x.shape[0]} sequences x {calib_x.shape[1]} steps, {len(observers)} tensors"
            with stages.run("quantize") as rec:
                qmodel = grukit.quantize(model, calib_x, scheme=scheme, observers=observers)
                rec["detail"] = scheme

        files = _export(model, qmodel, out, T, stages)
        for path in files.values():
            report.artifacts[_relative(path, out)] = path.stat().st_size

        with stages.run("evaluate", total=8) as rec:
            record("onnxruntime", _run_onnx(files["onnx_sequence"], val_x),
                   f"the exported float ONNX sequence model ({_relative(files['onnx_sequence'], out)}) in onnxruntime")
            rec["advance"]("onnxruntime")
            if task == "classification":
                classes = max(model.output_size, 2)
                report.confusion[BASELINE] = confusion_matrix(val_y, predicted_labels(float_out, model), classes)
            bit_exact_checks = []
            if qmodel is not None:
                bit_exact_checks = _evaluate_integer(model, qmodel, files, val_x, val_y, float_out, float_states,
                                                     out, report, record, rec)
            rec["detail"] = ", ".join(f"{k} {_short(v)}" for k, v in report.scores.items())

        with stages.run("check targets", total=len(boards)) as rec:
            _check_targets(model, qmodel, files, boards, T, max_latency_ms, report, rec)
            report.targets.extend(bit_exact_checks)
            if max_drop is not None:
                drop = report.drop().get(int_runtime)
                report.targets.append({
                    "name": f"{metric} drop ({int_runtime} vs {BASELINE})", "limit": max_drop, "value": drop,
                    "unit": "", "pass": None if drop is None else bool(drop <= max_drop), "estimate": False,
                    "note": f"over all {N} validation sequences" if drop is not None else BIDIRECTIONAL_REASON,
                })
            checks = report.checks()
            failed = sum(t["pass"] is not True for t in checks)
            rec["detail"] = "all pass" if failed == 0 else f"{failed} of {len(checks)} checks not passing"

        report.stages = stages.records
        with stages.run("write report") as rec:
            paths = write_report(report, out)
            rec["detail"] = str(paths["html"])
        report.stages = stages.records
        write_report(report, out)  # again, so the report lists its own stage's time
    return report


def _export(model: GRUModel, qmodel, out: Path, T: int, stages: _Stages) -> dict[str, Path]:
    """Every export that applies: float ONNX (sequence, step), QDQ ONNX, TFLite float and integer (step,
    sequence over T), C sources. Returns role -> path."""
    from grukit.export.c_export import export_c
    from grukit.export.onnx_export import export_onnx_sequence, export_onnx_step
    from grukit.export.onnx_qdq_export import export_onnx_qdq
    from grukit.export.tflite_export import export_tflite_all

    files: dict[str, Path] = {}
    with stages.run("export", total=5) as rec:
        out.mkdir(parents=True, exist_ok=True)
        files["onnx_sequence"] = Path(export_onnx_sequence(model, out / "model.onnx"))
        rec["advance"]("ONNX sequence")
        if not model.bidirectional:
            files["onnx_step"] = Path(export_onnx_step(model, out / "model_step.onnx"))
            rec["advance"]("ONNX step")
        if qmodel is not None:
            files["onnx_qdq"] = Path(export_onnx_qdq(qmodel, out / f"model_{qmodel.scheme}_qdq.onnx"))
            rec["advance"]("QDQ ONNX")
            for role, path in export_tflite_all(model, qmodel, out, T).items():
                files[f"tflite_{role}"] = Path(path)
            rec["advance"]("TFLite")
            for path in export_c(qmodel, out / "c"):
                files[f"c_{Path(path).name}"] = Path(path)
            rec["advance"]("C")
        rec["detail"] = f"{len(files)} files" + ("" if qmodel is not None else f"; no TFLite/C: {BIDIRECTIONAL_REASON}")
    return files


def _bit_exact_check(runtime: str, mismatches: list, compared: str, why_not: str | None = None) -> dict:
    """The report's check line for one runtime's bit-exactness against the NumPy integer runtime: limit 0
    mismatching elements; value how many differ (1 when a tensor has the wrong shape: its elements could
    not be compared), None with the reason when nothing could be compared."""
    from grukit.report import MISMATCH_UNIT
    from grukit.runtime.tflm_check import mismatching_elements

    line = {"name": f"{runtime} bit-exact", "limit": 0, "unit": MISMATCH_UNIT, "estimate": False}
    if why_not is not None:
        return {**line, "value": None, "pass": None, "note": why_not}
    if not mismatches:
        return {**line, "value": 0, "pass": True, "note": compared}
    count = mismatching_elements(mismatches)
    per_tensor = "; ".join(str(m) for m in mismatches)
    return {**line, "value": 1 if count is None else count, "pass": False,
            "note": f"first mismatch per differing tensor: {per_tensor}"
                    + (" (the number is unknown: a tensor has the wrong shape)" if count is None else "")}


def _evaluate_integer(model, qmodel, files, val_x, val_y, float_out, float_states, out, report: Report, record,
                      rec) -> list[dict]:
    """NumPy integer, LiteRT, TFLite-Micro and the C kernel on the validation data; drift, saturation and
    bit-exactness against the NumPy integer runtime. Returns the bit-exactness checks (report targets lines)."""
    from grukit.runtime import emulate
    import onnxruntime

    from grukit.runtime.tflm_check import (compare_tflite_micro, first_mismatch, max_lsb_difference,
                                           run_litert_sequence, run_onnx_qdq_steps, run_tflm_sequence)

    scheme, task = qmodel.scheme, report.task
    N, T = val_x.shape[:2]
    x_q = qmodel.quantize_input(val_x)
    y_q, int_states = qmodel.run_int(x_q)
    int_out = qmodel.dequantize_output(y_q)
    record(f"numpy-{scheme}", int_out, "grukit's NumPy integer runtime (grukit.runtime.int_gru)")
    rec["advance"](f"numpy-{scheme}")
    if task == "classification":
        classes = max(model.output_size, 2)
        report.confusion[f"numpy-{scheme}"] = confusion_matrix(
            val_y, predicted_labels(int_out, model), classes)
    report.drift = hidden_drift(float_states,
                                [layer.qparams["h"].dequantize(s) for layer, s in zip(qmodel.layers, int_states)])
    q_report = qmodel.report
    report.saturation = [
        {"tensor": f"layer{layer}/{name}" if layer < len(qmodel.layers) else name, "saturated": int(s), "total": int(n),
         "observed": [float(v) for v in q_report.observed.get((layer, name), (np.nan, np.nan))],
         "quantized": [float(v) for v in q_report.quantized[(layer, name)]]}
        for (layer, name), (s, n) in sorted(q_report.saturated.items(), key=lambda kv: (kv[0][0], kv[0][1]))]
    report.quantization_notes = list(q_report.notes)
    rec["advance"]("drift")

    k = interpreter_sequences(N, T)
    seq_file = files[f"tflite_{scheme}_seq"]
    subset = (f"the first {k} of {N} sequences (at most {INTERPRETER_MAX_STEPS:,} steps: a Python-driven "
              "interpreter)") if k < N else ""
    y_litert = run_litert_sequence(seq_file, x_q[:k])
    record("litert", qmodel.dequantize_output(y_litert), f"{_relative(seq_file, out)} in LiteRT", n=k,
           note=f"max |litert - numpy-{scheme}| = {max_lsb_difference(y_litert, y_q[:k])} LSB (LiteRT's own "
                f"kernels); {subset}".rstrip("; "))
    rec["advance"]("LiteRT")

    qdq_file = files["onnx_qdq"]
    y_steps, qdq_states = run_onnx_qdq_steps(qdq_file, x_q, [layer.hidden_size for layer in qmodel.layers])
    y_qdq = y_steps if qmodel.per_step else y_steps[:, -1]
    state_lsb = max(max_lsb_difference(got, expected) for got, expected in zip(qdq_states, int_states))
    record("onnxruntime-qdq", qmodel.dequantize_output(y_qdq),
           f"{_relative(qdq_file, out)} in onnxruntime {onnxruntime.__version__}, default session options, "
           "states fed back step by step",
           note=f"max |onnxruntime-qdq - numpy-{scheme}| = {max_lsb_difference(y_qdq, y_q)} LSB in y, {state_lsb} "
                "LSB in the states (float ops between QuantizeLinear / DequantizeLinear: close, not bit-exact)")
    rec["advance"]("QDQ ONNX")

    y_tflm = run_tflm_sequence(seq_file, x_q[:k])
    record("tflite-micro", qmodel.dequantize_output(y_tflm), f"{_relative(seq_file, out)} in TFLite-Micro", n=k,
           note=subset)
    step_file = files[f"tflite_{scheme}_step"]
    seq_mismatch = first_mismatch(y_tflm, y_q[:k], "y")
    step_check = compare_tflite_micro(qmodel, step_file, x_q[:k])
    # Each mismatch named with its file: the sequence model's y, then the step model's y and states.
    in_file = lambda path, m: dataclasses.replace(m, tensor=f"{_relative(path, out)} {m.tensor}")
    tflm_mismatches = [*([in_file(seq_file, seq_mismatch)] if seq_mismatch else []),
                       *(in_file(step_file, m) for m in step_check.mismatches)]
    compared = (f"{_relative(seq_file, out)} (y) and {_relative(step_file, out)} (y and every layer's state at "
                f"every step) on {k} sequences: identical")
    report.bit_exact["tflite-micro"] = not tflm_mismatches
    report.bit_exact_detail["tflite-micro"] = compared if not tflm_mismatches else str(tflm_mismatches[0])
    checks = [_bit_exact_check("tflite-micro", tflm_mismatches, compared)]
    rec["advance"]("TFLite-Micro")

    why_not = None
    if not emulate.toolchain_status()["host_ok"]:
        why_not = "no host C compiler to build the kernel (install Debian package gcc)"
    else:
        try:
            emulate.firmware_dir()
        except BadInputError as e:  # an install without firmware_ref's C sources
            why_not = str(e)
    if why_not:
        report.not_available["c-kernel"] = why_not
        report.bit_exact["c-kernel"] = None
        checks.append(_bit_exact_check("c-kernel", [], "", why_not))
    else:
        y_c, states_c = emulate.run_c_host(qmodel, x_q)
        record("c-kernel", qmodel.dequantize_output(y_c), "firmware_ref's C kernel, host build, on the generated "
               f"model constants ({_relative(files['c_grukit_model.c'], out)})")
        c_mismatches = [m for m in (first_mismatch(y_c, y_q, "y"),
                                    *(first_mismatch(got, expected, f"h{layer}")
                                      for layer, (got, expected) in enumerate(zip(states_c, int_states))))
                        if m is not None]
        compared = f"y and every layer's state at every step on all {N} sequences: identical"
        report.bit_exact["c-kernel"] = not c_mismatches
        report.bit_exact_detail["c-kernel"] = compared if not c_mismatches else str(c_mismatches[0])
        checks.append(_bit_exact_check("c-kernel", c_mismatches, compared))
    rec["advance"]("C kernel")
    return checks


def _check_targets(model, qmodel, files, boards, T, max_latency_ms, report: Report, rec) -> None:
    """Flash, RAM and latency per board: measured where the build and the emulator allow, else the cost model."""
    from grukit.runtime import targets as TG

    built = None
    if qmodel is not None:
        from grukit.export.c_export import buffer_sizes, constant_bytes, output_size

        built = TG.built_flash_bytes(files["c_grukit_model.c"], qmodel.scheme)
        act = TG.ACTIVATION_BYTES[qmodel.scheme]
        state, scratch = buffer_sizes(qmodel)
        io = act * (model.input_size + output_size(qmodel))
        ram = TG.Figure(state + scratch + io, False,
                        f"from the generated C: state {state:,} + scratch {scratch:,} + one input step and the "
                        f"output {io:,} bytes (the caller's stack not counted)")
    else:
        memory = TG.memory_estimate(model, report.scheme)
        ram = TG.Figure(memory.ram_bytes, True, "cost model (no integer model: " + BIDIRECTIONAL_REASON + ")")
    counts: dict[str | None, object] = {}
    for board in boards:
        if qmodel is not None and built is not None:
            on_core = board.core.startswith(TG.MEASURED_CORE)
            flash = TG.Figure(built.model_bytes + built.kernel_bytes, not on_core,
                              built.note() + ("" if on_core else f"; an estimate for {board.core}"))
        elif qmodel is not None:
            c_bytes, code = constant_bytes(qmodel), TG.KERNEL_CODE_BYTES[qmodel.scheme]
            flash = TG.Figure(c_bytes + code, True,
                              f"model constants {c_bytes:,} counted in the generated C + {qmodel.scheme} kernel "
                              f"code {code:,} estimated (grukit.runtime.targets.KERNEL_CODE_BYTES; no ARM "
                              "toolchain to build it)")
        else:
            flash = TG.Figure(memory.flash_bytes, True, f"cost model ({report.scheme} weights and biases, "
                              "requantization parameters, kernel code)")
        machine = board.qemu_machine
        if machine not in counts:
            counts[machine] = (TG.emulated_instructions(qmodel, machine) if qmodel is not None
                               else "no integer model to run")
        count = counts[machine]
        if isinstance(count, str):
            fallback = TG.cost_model_instructions(model)
            count = TG.InstructionCount(fallback.per_step, fallback.per_sequence,
                                        f"{TG.COST_MODEL_SOURCE}, not measured: {count}")
        report.latency[board.name] = {"measured": count.measured, "instructions_per_step": count.per_step,
                                      "source": count.source}
        for check in TG.check_budget(board, flash, ram, count.per_step, T, count.per_sequence, max_latency_ms,
                                     count.source):
            report.targets.append({"name": check.name, "limit": check.limit, "value": check.value,
                                   "unit": check.unit, "pass": check.passed, "estimate": check.estimate,
                                   "note": check.note})
        rec["advance"](board.name)


def _short(v) -> str:
    return "n/a" if v is None else f"{v:.4f}"
