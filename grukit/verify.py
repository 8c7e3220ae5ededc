"""Cross-runtime verification in one place: grukit's files run in TFLite-Micro, LiteRT and onnxruntime,
compared with the NumPy integer runtime; and the exact comparison every check uses (``first_mismatch``).

The ``.tflite`` files are batch 1 (``grukit.export.tflite_export``): a batch of N sequences runs as N
independent invocations, the interpreter reset between them. The C kernel's host runner is
``grukit.firmware_ref.host.run_c_host``; its comparison goes through ``first_mismatch`` too.

- ``run_tflm_sequence(path, x_q)``: a sequence model on x_q [N, T, I] -> y_q [N, O] or [N, T, O].
- ``run_tflm_step_iterated(path, x_q, n_layers)``: a step model over T steps, every layer's state fed back
  -> (y_q [N, T, O] every step's y_t, [states of layer l [N, T, H_l]]).
- ``run_litert_sequence`` / ``run_litert_step_iterated``: the same in LiteRT (``ai_edge_litert``), whose
  kernels differ from TFLM's (lookup-table activations), so it is compared in LSB, not for equality.
- ``run_onnx_qdq_steps``: the QDQ ONNX step model in onnxruntime (float ops between QuantizeLinear and
  DequantizeLinear: close to the integers, compared in LSB).
- ``compare_tflite_micro(qmodel, path, x)``: every tensor that differs between TFLM and ``qmodel``, each
  with its first mismatch (position, got, expected) and how many elements differ, or its wrong shape;
  ``bit_exact_tflite_micro`` its boolean.
- ``first_mismatch`` / ``assert_identical``: exact integer comparison naming the first difference.
"""

from __future__ import annotations

import os
import sys
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnxruntime
from ai_edge_litert.interpreter import Interpreter as LiteRTInterpreter
from tflite_micro.python.tflite_micro import runtime as tflm_runtime

from grukit.core.errors import BadInputError
from grukit.export.tflite_read import read_tflite_metadata
from grukit.runtime.int_gru_reference import head_forward_int

# TFLM's Python interpreter sizes its arena at 10x the file by default; tiny files need a floor for the
# per-op persistent data (per-channel multipliers, node structs).
ARENA_MIN_BYTES = 256 * 1024
ARENA_FILE_FACTOR = 10


@contextmanager
def _native_stderr_silenced():
    """File descriptor 2 pointed at /dev/null for the block: a native library's log lines (which Python's
    logging and warnings never see) stay off the terminal. Exceptions still propagate as usual."""
    sys.stderr.flush()
    saved = os.dup(2)
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


class _TFLM:
    """One TFLite-Micro interpreter: run(inputs) -> outputs, reset()."""

    def __init__(self, path):
        data = Path(path).read_bytes()
        arena_bytes = max(ARENA_MIN_BYTES, ARENA_FILE_FACTOR * len(data))
        self._interp = tflm_runtime.Interpreter.from_bytes(data, arena_size=arena_bytes)

    def run(self, inputs: list[np.ndarray], n_outputs: int) -> list[np.ndarray]:
        for i, x in enumerate(inputs):
            self._interp.set_input(np.ascontiguousarray(x), i)
        self._interp.invoke()
        return [np.array(self._interp.get_output(i)) for i in range(n_outputs)]

    def reset(self) -> None:
        self._interp.reset()


class _LiteRT:
    """One LiteRT interpreter with the same interface (its input/output details are in subgraph order)."""

    def __init__(self, path):
        with _native_stderr_silenced():  # LiteRT logs "Created TensorFlow Lite XNNPACK delegate" from C++
            self._interp = LiteRTInterpreter(model_path=str(path))
            self._interp.allocate_tensors()
        self._in = [d["index"] for d in self._interp.get_input_details()]
        self._out = [d["index"] for d in self._interp.get_output_details()]

    def run(self, inputs: list[np.ndarray], n_outputs: int) -> list[np.ndarray]:
        for index, x in zip(self._in, inputs):
            self._interp.set_tensor(index, np.ascontiguousarray(x))
        self._interp.invoke()
        return [np.array(self._interp.get_tensor(index)) for index in self._out[:n_outputs]]

    def reset(self) -> None:
        self._interp.reset_all_variables()


def _as_sequences(x_q: np.ndarray) -> np.ndarray:
    x_q = np.asarray(x_q)
    if x_q.ndim == 2:
        x_q = x_q[None]
    if x_q.ndim != 3:
        raise BadInputError(f"expected sequences [N, T, I], got shape {x_q.shape}")
    return x_q


def _run_sequence(interp, x_q: np.ndarray) -> np.ndarray:
    x_q = _as_sequences(x_q)
    ys = []
    for n in range(x_q.shape[0]):
        interp.reset()  # independent sequences
        ys.append(interp.run([x_q[n:n + 1]], 1)[0][0])
    return np.stack(ys)


def _state_shapes(path) -> list[tuple[int, int]]:
    meta = read_tflite_metadata(path)
    if meta.get("kind") != "step":
        raise BadInputError(f"{path} is a {meta.get('kind')!r} model, not a step model")
    return [(1, layer["hidden_size"]) for layer in meta["layers"]]


def _run_step_iterated(interp, path, x_q: np.ndarray, n_layers: int, state_dtype) -> tuple[np.ndarray, list]:
    x_q = _as_sequences(x_q)
    shapes = _state_shapes(path)
    if len(shapes) != n_layers:
        raise BadInputError(f"{path} has {len(shapes)} layer states, caller expects {n_layers}")
    N, T, _ = x_q.shape
    ys, states = [], [[] for _ in shapes]
    for n in range(N):
        interp.reset()
        h = [np.zeros(s, state_dtype) for s in shapes]  # a new sequence starts from zero states
        y_seq, h_seq = [], [[] for _ in shapes]
        for t in range(T):
            y_t, *h = interp.run([x_q[n, t][None], *h], 1 + n_layers)
            y_seq.append(y_t[0])
            for li, h_l in enumerate(h):
                h_seq[li].append(h_l[0])
        ys.append(np.stack(y_seq))
        for li in range(n_layers):
            states[li].append(np.stack(h_seq[li]))
    return np.stack(ys), [np.stack(s) for s in states]


def _state_dtype(x_q: np.ndarray):
    # States share the activation dtype of the integer graph (and float32 for float files).
    return np.asarray(x_q).dtype


def run_tflm_sequence(path, x_q: np.ndarray) -> np.ndarray:
    """TFLite-Micro on a sequence model: x_q [N, T, I] (the file's input dtype) -> y_q [N, O] or [N, T, O]."""
    return _run_sequence(_TFLM(path), x_q)


def run_tflm_step_iterated(path, x_q: np.ndarray, n_layers: int) -> tuple[np.ndarray, list[np.ndarray]]:
    """TFLite-Micro on a step model over x_q [N, T, I], states fed back, zero at each sequence's start.

    Returns (y_q [N, T, O]: every step's y_t, [layer l's states [N, T, H_l]])."""
    return _run_step_iterated(_TFLM(path), path, x_q, n_layers, _state_dtype(x_q))


def run_litert_sequence(path, x_q: np.ndarray) -> np.ndarray:
    """LiteRT on a sequence model; as ``run_tflm_sequence``."""
    return _run_sequence(_LiteRT(path), x_q)


def run_litert_step_iterated(path, x_q: np.ndarray, n_layers: int) -> tuple[np.ndarray, list[np.ndarray]]:
    """LiteRT on a step model; as ``run_tflm_step_iterated``."""
    return _run_step_iterated(_LiteRT(path), path, x_q, n_layers, _state_dtype(x_q))


def run_onnx_qdq_steps(path, x_q: np.ndarray, hidden_sizes: list[int]) -> tuple[np.ndarray, list[np.ndarray]]:
    """onnxruntime, default session options, on a QDQ step model (``grukit.export.onnx_qdq_export``) over
    x_q [N, T, I], all N sequences per call, every layer's state fed back from zero.

    Returns (y_q [N, T, O]: every step's y_t, [layer l's states [N, T, H_l]]), as ``run_tflm_step_iterated``."""
    x_q = _as_sequences(x_q)
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    N, T, _ = x_q.shape
    h = [np.zeros((N, H), x_q.dtype) for H in hidden_sizes]
    ys, states = [], [[] for _ in h]
    for t in range(T):
        y_t, *h = session.run(None, {"x_t": x_q[:, t], **{f"h{i}": s for i, s in enumerate(h)}})
        ys.append(y_t)
        for i, s in enumerate(h):
            states[i].append(s)
    return np.stack(ys, axis=1), [np.stack(s, axis=1) for s in states]


# ---------------------------------------------------------------------------------------------------------
# Comparison against the NumPy runtime
# ---------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Mismatch:
    """The first differing element of one compared tensor, or (``shape`` set) a tensor of the wrong shape,
    whose elements were not compared."""

    tensor: str  # "y" or "h{l}"
    position: tuple[int, ...] | None  # None for a shape mismatch
    got: int | None  # the interpreter's value; None for a shape mismatch
    expected: int | None  # the NumPy runtime's value; None for a shape mismatch
    count: int | None  # how many elements of this tensor differ; None for a shape mismatch
    total: int  # elements the NumPy runtime gave for this tensor
    shape: tuple[tuple[int, ...], tuple[int, ...]] | None = None  # (got, expected) when the shapes differ

    def __str__(self) -> str:
        if self.shape is not None:
            return f"{self.tensor}: shape {self.shape[0]}, expected {self.shape[1]} (elements not compared)"
        return (f"{self.tensor}: {self.count} of {self.total} differ; first at {self.position}: "
                f"got {self.got}, expected {self.expected}")


def first_mismatch(got: np.ndarray, expected: np.ndarray, tensor: str) -> Mismatch | None:
    """None if ``got`` equals ``expected`` (same shape, same integers), else the first differing element, or
    a shape mismatch (``Mismatch.shape``) when the shapes differ."""
    got, expected = np.asarray(got), np.asarray(expected)
    if got.shape != expected.shape:
        return Mismatch(tensor, None, None, None, None, expected.size, (tuple(got.shape), tuple(expected.shape)))
    bad = np.argwhere(got.astype(np.int64) != expected.astype(np.int64))
    if not len(bad):
        return None
    pos = tuple(int(i) for i in bad[0])
    return Mismatch(tensor, pos, int(got[pos]), int(expected[pos]), len(bad), expected.size)


def assert_identical(got, expected, what: str, same_dtype: bool = False) -> None:
    """Raise AssertionError naming the first mismatch (position, got, expected, how many differ) unless
    ``got`` and ``expected`` hold the same integers in the same shape (and, with ``same_dtype``, the same
    dtype). The one exact comparison of the test suite and the benchmarks."""
    if same_dtype and np.asarray(got).dtype != np.asarray(expected).dtype:
        raise AssertionError(f"{what}: dtype {np.asarray(got).dtype}, expected {np.asarray(expected).dtype}")
    mismatch = first_mismatch(got, expected, what)
    if mismatch is not None:
        raise AssertionError(str(mismatch))


def mismatching_elements(mismatches) -> int | None:
    """How many elements differ over ``mismatches``; None when one of them is a shape mismatch (its
    elements were not compared, so the number is not known)."""
    counts = [m.count for m in mismatches]
    return None if None in counts else sum(counts)


@dataclass(frozen=True)
class TFLiteCheck:
    """Outcome of running a ``.tflite`` file in TFLM against the NumPy runtime on the same integers."""

    kind: str  # "step" or "sequence"
    compared: int  # integers compared
    mismatches: tuple[Mismatch, ...]  # one per differing tensor, in comparison order (y, then h0, h1, ...)

    @property
    def mismatch(self) -> Mismatch | None:
        """The first differing tensor's first mismatch, or None."""
        return self.mismatches[0] if self.mismatches else None

    @property
    def bit_exact(self) -> bool:
        return not self.mismatches


def expected_step_outputs(qmodel, x_q: np.ndarray) -> tuple[np.ndarray, list[np.ndarray]]:
    """What a step model must give at every step: (y_t for all t [N, T, O], states [N, T, H] per layer),
    from the NumPy runtime (``run_int`` states, the head applied to every step's top state)."""
    

    _, states = qmodel.run_int(x_q)
    top = states[-1]
    y = top if qmodel.head is None else head_forward_int(qmodel.head, top)
    return y, states


def _integer_input(qmodel, x: np.ndarray) -> np.ndarray:
    x = np.asarray(x)
    if x.dtype == qmodel.input_q.np_dtype:
        return _as_sequences(x)
    if not np.issubdtype(x.dtype, np.floating):
        raise BadInputError(f"x must be float or {qmodel.input_q.dtype}, got {x.dtype}")
    return qmodel.quantize_input(x)


def compare_tflite_micro(qmodel, tflite_path, x: np.ndarray) -> TFLiteCheck:
    """Run ``tflite_path`` (a grukit step or sequence file) in TFLite-Micro on x and compare every integer
    output with ``qmodel``'s NumPy runtime: a step model's y_t and every layer's state at every step, a
    sequence model's y. x: float [N, T, I] (quantized with the model's input qparams) or already integer."""
    meta = read_tflite_metadata(tflite_path)
    x_q = _integer_input(qmodel, x)
    if meta.get("kind") == "step":
        y_exp, states_exp = expected_step_outputs(qmodel, x_q)
        y_got, states_got = run_tflm_step_iterated(tflite_path, x_q, len(qmodel.layers))
        pairs = [("y", y_got, y_exp)] + [(f"h{l}", g, e) for l, (g, e) in enumerate(zip(states_got, states_exp))]
    elif meta.get("kind") == "sequence":
        if meta.get("T") != x_q.shape[1]:
            raise BadInputError(f"{tflite_path} is unrolled for T={meta.get('T')}, x has T={x_q.shape[1]}")
        pairs = [("y", run_tflm_sequence(tflite_path, x_q), qmodel.predict_int(x_q))]
    else:
        raise BadInputError(f"{tflite_path}: unknown grukit model kind {meta.get('kind')!r}")
    compared = 0
    mismatches = []
    for name, got, expected in pairs:
        compared += np.asarray(expected).size
        mismatch = first_mismatch(got, expected, name)
        if mismatch is not None:
            mismatches.append(mismatch)
    return TFLiteCheck(meta["kind"], compared, tuple(mismatches))


def bit_exact_tflite_micro(qmodel, tflite_path, x: np.ndarray) -> bool:
    """True if TFLite-Micro running ``tflite_path`` gives exactly the NumPy runtime's integers on x."""
    return compare_tflite_micro(qmodel, tflite_path, x).bit_exact


def max_lsb_difference(got: np.ndarray, expected: np.ndarray) -> int:
    """Largest |got - expected| over all elements, in integer steps (LSB)."""
    got, expected = np.asarray(got, np.int64), np.asarray(expected, np.int64)
    return int(np.abs(got - expected).max()) if expected.size else 0
