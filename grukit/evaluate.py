"""The deploy report's evaluation: the validation data scored in every runtime that applies, and the
integer runtimes checked against the NumPy integer runtime.

Runtimes (the report's ``scores`` keys):

    framework        the source model in its own framework: onnxruntime (.onnx; ONNX's reference evaluator
                     for a batch-major GRU, which onnxruntime lacks), torch (.pt2, nn.Module), Keras (.keras)
    onnxruntime      the float ONNX sequence model grukit exported
    numpy-float      grukit's float reference (the baseline every drop is measured from)
    numpy-<scheme>   the NumPy integer runtime
    litert           the integer TFLite sequence model in LiteRT (its own kernels: compared in LSB)
    onnxruntime-qdq  the QDQ ONNX step model in onnxruntime, default session options (compared in LSB)
    tflite-micro     the integer TFLite sequence model in TFLite-Micro
    c-kernel         firmware_ref's C kernel built for the host, on the generated model constants

NumPy float, NumPy integer, the QDQ model and the C kernel see every validation sequence. The TFLite
interpreters run one sequence per call in Python and are slow, so they see the first
``interpreter_sequences(N, T)`` sequences (at most INTERPRETER_MAX_STEPS time steps in all); their drop is
measured against NumPy float on the same sequences, and the report says how many sequences each runtime saw.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import onnxruntime

from grukit.core.errors import BadInputError
from grukit.core.float_gru import layers_forward, output_from_states, predicted_labels
from grukit.core.model import GRUModel
from grukit.export.source_runtime import FrameworkUnavailable, run_source
from grukit.firmware_ref.build import firmware_dir, toolchain_status
from grukit.firmware_ref.host import run_c_host
from grukit.diagnose import diagnose_sequences, sensitivity, tensor_errors
from grukit.metrics import confusion_matrix, hidden_drift, score
from grukit.quantize.calibrate import range_excursions
from grukit.report import MISMATCH_UNIT, Report
from grukit.verify import (compare_tflite_micro, first_mismatch, max_lsb_difference, mismatching_elements,
                           run_litert_sequence, run_onnx_qdq_steps, run_tflm_sequence)

BASELINE = "numpy-float"
# A tensor the validation data drives out of its range is a warning when at least this share of its values
# clip, or when one goes this far beyond the range (in widths of the range): a stray value is not.
WARN_SHARE, WARN_BEYOND = 1e-3, 0.1
UNPRUNED = "numpy-float-unpruned"  # with pruning: the original float model, the baseline every drop is measured from
# Time steps (sequences x T) given to the TFLite interpreters: TFLite-Micro's Python interpreter runs about
# 7,000 steps a second of the demo model on one core, so this keeps it to a few seconds.
INTERPRETER_MAX_STEPS = 20_000


def interpreter_sequences(n: int, T: int) -> int:
    """How many of n validation sequences of length T the TFLite interpreters run (the first ones)."""
    return max(1, min(n, INTERPRETER_MAX_STEPS // T))


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


def bit_exact_check(runtime: str, mismatches: list, compared: str, why_not: str | None = None) -> dict:
    """The report's check line for one runtime's bit-exactness against the NumPy integer runtime: limit 0
    mismatching elements; value how many differ (1 when a tensor has the wrong shape: its elements could
    not be compared), None with the reason when nothing could be compared."""
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


def _range_warning(tensor: str, is_input: bool, e, lo: float, hi: float, calib_lo: float, calib_hi: float) -> str:
    """One warning line: what left the range, by how much, and the likely fix."""
    share = f"{e.harmful:,} of {e.total:,} values ({100.0 * e.harmful / e.total:.2g}%)"
    seen = f"reach [{e.minimum:.4g}, {e.maximum:.4g}]"
    if is_input:
        return (f"{tensor}: the validation inputs {seen}, the calibration inputs [{calib_lo:.4g}, {calib_hi:.4g}]: "
                f"{share} clip at the quantized input range [{lo:.4g}, {hi:.4g}]. Calibrate on data that covers "
                "the inputs the device will see, or declare the sensor's range with --input-range LO:HI")
    return (f"{tensor}: on the validation data its values {seen}, beyond what calibration saw "
            f"[{calib_lo:.4g}, {calib_hi:.4g}]: {share} clip at its quantized range [{lo:.4g}, {hi:.4g}]. "
            "The calibration data does not exercise the model as the validation data does: calibrate on more "
            "representative sequences")


class Evaluation:
    """Scores runtimes on the validation data (x [N, T, I], y) into ``report``; file names in the notes are
    relative to ``out``."""

    def __init__(self, report: Report, model: GRUModel, val_x: np.ndarray, val_y: np.ndarray, out: Path):
        self.report, self.model, self.x, self.y, self.out = report, model, val_x, val_y, out
        self.N, self.T = val_x.shape[:2]
        self.float_out = None
        self.float_states = None
        self.baseline_out = None  # the output drops are measured from: float_out, or the unpruned model's
        self.bit_exact_checks: list[dict] = []

    def record(self, runtime: str, output: np.ndarray, what: str, n: int | None = None, note: str = "") -> None:
        """Score ``output`` (of the first n sequences, default all) as ``runtime``."""
        n = self.N if n is None else n
        value, extras = score(self.report.task, self.y[:n], output, self.model)
        self.report.scores[runtime] = value
        for name, v in extras.items():
            self.report.extra_scores.setdefault(name, {})[runtime] = v
        entry = {"what": what, "sequences": n, "of": self.N, "note": note}
        if n < self.N:  # its drop is measured against the float reference on the same sequences
            entry["baseline"] = score(self.report.task, self.y[:n], self.baseline_out[:n], self.model)[0]
        self.report.runtimes[runtime] = entry

    def _confusion(self, runtime: str, output: np.ndarray) -> None:
        if self.report.task == "classification":
            classes = max(self.model.output_size, 2)
            self.report.confusion[runtime] = confusion_matrix(self.y, predicted_labels(output, self.model), classes)

    def relative(self, path: Path) -> str:
        """path as the report names it: relative to the output directory when inside it."""
        return str(path.relative_to(self.out)) if path.is_relative_to(self.out) else str(path)

    # --- float ---------------------------------------------------------------------------------------------
    def float_reference(self) -> str:
        """NumPy float (the baseline); returns a one-line detail."""
        self.float_states = layers_forward(self.model, self.x)  # kept for the drift of the integer states
        self.float_out = self.baseline_out = output_from_states(self.model, self.float_states)
        self.record(BASELINE, self.float_out, "grukit's float NumPy reference (grukit.core.float_gru)")
        return f"numpy-float {self.report.metric} {self.report.scores[BASELINE]:.4f}"

    def pruned(self, model: GRUModel) -> str:
        """After ``float_reference`` (and ``framework``) on the original model: from here on the model is the
        pruned one, scored as numpy-float; the original's score becomes numpy-float-unpruned, the baseline
        every drop is measured from. Returns a one-line detail."""
        r = self.report
        r.scores[UNPRUNED] = r.scores.pop(BASELINE)
        r.runtimes[UNPRUNED] = {**r.runtimes.pop(BASELINE),
                                "what": "grukit's float NumPy reference on the model before pruning"}
        for by_runtime in r.extra_scores.values():
            by_runtime[UNPRUNED] = by_runtime.pop(BASELINE)
        r.baseline = UNPRUNED
        self.model = model
        self.float_states = layers_forward(model, self.x)
        self.float_out = output_from_states(model, self.float_states)
        self.record(BASELINE, self.float_out, "grukit's float NumPy reference on the pruned model")
        return f"{r.metric} {r.scores[UNPRUNED]:.4f} -> {r.scores[BASELINE]:.4f} (float)"

    def framework(self, source) -> str:
        """The source model in its own framework, when it can run here; returns a one-line detail."""
        try:
            framework_out, who = run_framework(source, self.model, self.x)
        except FrameworkUnavailable as e:
            self.report.not_available["framework"] = str(e)
            return f"framework not run: {e}"
        diff = float(np.max(np.abs(framework_out - self.baseline_out)))
        self.record("framework", framework_out, f"the source model in {who}",
                    note=f"max |framework - numpy-float| = {diff:.2e}")
        return f"{who} max |diff| {diff:.2e}"

    def onnx_sequence(self, path: Path) -> None:
        """The exported float ONNX sequence model in onnxruntime."""
        session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        out = session.run(None, {session.get_inputs()[0].name: self.x})[0]
        self.record("onnxruntime", out, f"the exported float ONNX sequence model ({self.relative(path)}) in "
                    "onnxruntime")
        self._confusion(BASELINE, self.float_out)

    # --- integer -------------------------------------------------------------------------------------------
    def integer(self, qmodel, files: dict[str, Path], advance) -> None:
        """NumPy integer, LiteRT, the QDQ ONNX model, TFLite-Micro and the C kernel; drift, saturation and
        bit-exactness against the NumPy integer runtime (``self.bit_exact_checks``)."""
        x_q = qmodel.quantize_input(self.x)
        y_q, int_states = self._numpy_integer(qmodel, x_q)
        advance(f"numpy-{qmodel.scheme}")
        k = interpreter_sequences(self.N, self.T)
        subset = (f"the first {k} of {self.N} sequences (at most {INTERPRETER_MAX_STEPS:,} steps: a Python-driven "
                  "interpreter)") if k < self.N else ""
        seq_file = files[f"tflite_{qmodel.scheme}_seq"]
        y_litert = run_litert_sequence(seq_file, x_q[:k])
        self.record("litert", qmodel.dequantize_output(y_litert), f"{self.relative(seq_file)} in LiteRT", n=k,
                    note=f"max |litert - numpy-{qmodel.scheme}| = {max_lsb_difference(y_litert, y_q[:k])} LSB "
                         f"(LiteRT's own kernels); {subset}".rstrip("; "))
        advance("LiteRT")
        self._onnx_qdq(qmodel, files["onnx_qdq"], x_q, y_q, int_states)
        advance("QDQ ONNX")
        self._tflite_micro(qmodel, seq_file, files[f"tflite_{qmodel.scheme}_step"], x_q[:k], y_q[:k], subset)
        advance("TFLite-Micro")
        self._c_kernel(qmodel, files["c_model_c"], x_q, y_q, int_states)
        advance("C kernel")

    def _numpy_integer(self, qmodel, x_q: np.ndarray):
        y_q, int_states = qmodel.run_int(x_q)
        int_out = qmodel.dequantize_output(y_q)
        self.record(f"numpy-{qmodel.scheme}", int_out, "grukit's NumPy integer runtime (grukit.runtime.int_gru)")
        self._confusion(f"numpy-{qmodel.scheme}", int_out)
        self.report.drift = hidden_drift(self.float_states, [layer.qparams["h"].dequantize(s)
                                                             for layer, s in zip(qmodel.layers, int_states)])
        q_report = qmodel.report
        self.report.saturation = [
            {"tensor": f"layer{layer}/{name}" if layer < len(qmodel.layers) else name, "saturated": int(s),
             "total": int(n),
             "observed": [float(v) for v in q_report.observed.get((layer, name), (np.nan, np.nan))],
             "quantized": [float(v) for v in q_report.quantized[(layer, name)]]}
            for (layer, name), (s, n) in sorted(q_report.saturated.items(), key=lambda kv: (kv[0][0], kv[0][1]))]
        self.report.quantization_notes = list(q_report.notes)
        self.validation_ranges(qmodel)
        self.diagnose(qmodel, int_out)
        return y_q, int_states

    def diagnose(self, qmodel, int_out: np.ndarray) -> None:
        """Per-tensor quantization error and, when the integer model loses to float, what each tensor group
        costs (``grukit.diagnose``), on the first ``diagnose_sequences`` validation sequences."""
        k = diagnose_sequences(self.N, self.T)
        self.report.tensor_error = {"sequences": k, "tensors": tensor_errors(qmodel, self.x[:k])}
        task = self.report.task
        float_value = score(task, self.y[:k], self.float_out[:k], self.model)[0]
        int_value = score(task, self.y[:k], int_out[:k], self.model)[0]
        lost = (float_value - int_value) if self.report.higher_is_better else (int_value - float_value)
        if lost <= 0:
            self.report.sensitivity = {"sequences": k, "float": float_value, "integer": int_value, "simulated": None,
                                       "groups": [], "note": "the integer model loses nothing to float here: "
                                                             "nothing to attribute"}
            return
        simulated, groups = sensitivity(qmodel, self.x[:k], self.y[:k], task, self.report.val_saturation)
        self.report.sensitivity = {"sequences": k, "float": float_value, "integer": int_value,
                                   "simulated": simulated, "groups": groups, "note": ""}

    def validation_ranges(self, qmodel) -> None:
        """Every tensor of the integer graph (the input first) on the validation data against its quantized
        range: ``report.val_saturation``, and a warning for each tensor the validation data drives out of its
        range where the calibration data stayed in (most severe first, with the likely fix)."""
        q = qmodel.report
        excursions = range_excursions(self.model, self.x, q.quantized, q.caps)
        top = len(qmodel.layers)
        name = lambda key: f"layer{key[0]}/{key[1]}" if key[0] < top else key[1]  # noqa: E731
        order = sorted(excursions, key=lambda key: (key != (0, "x"), key))
        warnings = []
        for key in order:
            e, (lo, hi) = excursions[key], q.quantized[key]
            self.report.val_saturation[name(key)] = {
                "saturated": e.saturated, "harmful": e.harmful, "of": e.total, "observed": [e.minimum, e.maximum],
                "range": [lo, hi]}
            calib_lo, calib_hi = q.observed.get(key, (lo, hi))
            beyond = max(lo - e.minimum, e.maximum - hi, 0.0) / max(hi - lo, 1e-12)
            notable = e.harmful >= WARN_SHARE * e.total or beyond >= WARN_BEYOND
            if e.harmful and notable and (e.minimum < calib_lo or e.maximum > calib_hi):
                warnings.append((beyond, e.harmful, _range_warning(name(key), key == (0, "x"), e, lo, hi,
                                                                   calib_lo, calib_hi)))
        self.report.warnings.extend(text for *_, text in sorted(warnings, key=lambda w: (-w[0], -w[1])))

    def _onnx_qdq(self, qmodel, path: Path, x_q, y_q, int_states) -> None:
        y_steps, qdq_states = run_onnx_qdq_steps(path, x_q, [layer.hidden_size for layer in qmodel.layers])
        y_qdq = y_steps if qmodel.per_step else y_steps[:, -1]
        state_lsb = max(max_lsb_difference(got, expected) for got, expected in zip(qdq_states, int_states))
        self.record("onnxruntime-qdq", qmodel.dequantize_output(y_qdq),
                    f"{self.relative(path)} in onnxruntime {onnxruntime.__version__}, default session options, "
                    "states fed back step by step",
                    note=f"max |onnxruntime-qdq - numpy-{qmodel.scheme}| = {max_lsb_difference(y_qdq, y_q)} LSB in "
                         f"y, {state_lsb} LSB in the states (float ops between QuantizeLinear / DequantizeLinear: "
                         "close, not bit-exact)")

    def _tflite_micro(self, qmodel, seq_file: Path, step_file: Path, x_q, y_q, subset: str) -> None:
        k = x_q.shape[0]
        y_tflm = run_tflm_sequence(seq_file, x_q)
        self.record("tflite-micro", qmodel.dequantize_output(y_tflm), f"{self.relative(seq_file)} in TFLite-Micro",
                    n=k, note=subset)
        seq_mismatch = first_mismatch(y_tflm, y_q, "y")
        step_check = compare_tflite_micro(qmodel, step_file, x_q)
        # Each mismatch named with its file: the sequence model's y, then the step model's y and states.
        in_file = lambda path, m: dataclasses.replace(m, tensor=f"{self.relative(path)} {m.tensor}")  # noqa: E731
        mismatches = [*([in_file(seq_file, seq_mismatch)] if seq_mismatch else []),
                      *(in_file(step_file, m) for m in step_check.mismatches)]
        compared = (f"{self.relative(seq_file)} (y) and {self.relative(step_file)} (y and every layer's state at "
                    f"every step) on {k} sequences: identical")
        self.report.bit_exact["tflite-micro"] = not mismatches
        self.report.bit_exact_detail["tflite-micro"] = compared if not mismatches else str(mismatches[0])
        self.bit_exact_checks.append(bit_exact_check("tflite-micro", mismatches, compared))

    def _c_kernel(self, qmodel, c_file: Path, x_q, y_q, int_states) -> None:
        why_not = None
        if not toolchain_status()["host_ok"]:
            why_not = "no host C compiler to build the kernel (install Debian package gcc)"
        else:
            try:
                firmware_dir()
            except BadInputError as e:  # an install without firmware_ref's C sources
                why_not = str(e)
        if why_not:
            self.report.not_available["c-kernel"] = why_not
            self.report.bit_exact["c-kernel"] = None
            self.bit_exact_checks.append(bit_exact_check("c-kernel", [], "", why_not))
            return
        y_c, states_c = run_c_host(qmodel, x_q, optimize=self.report.optimize)
        self.record("c-kernel", qmodel.dequantize_output(y_c), "firmware_ref's C kernel, host build, on the "
                    f"generated model constants ({self.relative(c_file)}, {self.report.optimize} form)")
        mismatches = [m for m in (first_mismatch(y_c, y_q, "y"),
                                  *(first_mismatch(got, expected, f"h{layer}")
                                    for layer, (got, expected) in enumerate(zip(states_c, int_states))))
                      if m is not None]
        compared = f"y and every layer's state at every step on all {self.N} sequences: identical"
        self.report.bit_exact["c-kernel"] = not mismatches
        self.report.bit_exact_detail["c-kernel"] = compared if not mismatches else str(mismatches[0])
        self.bit_exact_checks.append(bit_exact_check("c-kernel", mismatches, compared))
