"""The quantized GRU: integer weights, biases and the prepared integer parameters of every op.

``grukit.quantize`` builds it (the only place floats are turned into these integers); the runtimes, the
TFLite and ONNX writers and the C generator read it. Its parts:

- ``QuantizedFC``: one fully connected product, int8 weights [O, K] symmetric per output channel, biases in
  the accumulator's scale (int32 for int8, int64 for 16x8).
- ``QuantizedLayer``: one GRU layer: the QParams of every tensor of the step graph (``grukit.core.graph``),
  its FCs keyed by output tensor, and every op's prepared parameters (``grukit.core.qparams``).
- ``QuantizedHead``: the dense head on the top state, a chain of ``QuantizedDense`` layers.
- ``QuantizedGRUModel``: the layers, the head, the scheme, the float model it came from and what calibration
  saw (``QuantizationReport``).

Running it is the runtime stage's job (``grukit.runtime.int_gru``): ``run_int``, ``predict_int``,
``predict`` and ``stream`` forward to the executor the wiring layer plugs in (``use_executor``, called by
``grukit/__init__.py``), so this module, like all of the core, imports no stage.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from grukit.core.float_gru import as_batch, head_activation
from grukit.core.graph import Op, step_ops
from grukit.core.qparams import QParams
from grukit.core.scheme import Scheme

TensorKey = tuple[int, str]  # (layer index, tensor name); the head's tensors have layer index = layer count


def without_caches(obj) -> dict:
    """A frozen dataclass's pickled state without what the runtime caches on it under _names (compiled
    plans, a worker message): those are rebuilt where they are needed, never shipped."""
    return {k: v for k, v in obj.__dict__.items() if not k.startswith("_")}


def bias_scales(input_scale: float, weight_scales: np.ndarray) -> np.ndarray:
    """The bias tensor's scales as a .tflite (or a QDQ DequantizeLinear) stores them:
    float32(input_scale * w_scale[o]). TFLM does not read them for requantization: the bias lives in the
    accumulator's scale double(input_scale) * double(w_scale[o])."""
    return (float(np.float32(input_scale)) * np.asarray(weight_scales, np.float32).astype(np.float64)).astype(
        np.float32)


@dataclass(frozen=True)
class QuantizedFC:
    """One fully connected product: w_q int8 [O, K] symmetric per output channel, bias_q int32/int64 [O]."""

    w_q: np.ndarray
    w_scales: np.ndarray  # float32 [O]
    bias_q: np.ndarray | None


@dataclass(frozen=True)
class QuantizedLayer:
    """One quantized GRU layer: QParams of every graph tensor, the FC weights, the prepared op params."""

    linear_before_reset: int
    input_size: int
    hidden_size: int
    qparams: dict[str, QParams]
    fcs: dict[str, QuantizedFC]  # keyed by the FC op's output tensor name
    prepared: dict[str, object]  # keyed by op output tensor name

    @property
    def ops(self) -> tuple[Op, ...]:
        return step_ops(self.linear_before_reset)

    def __getstate__(self):
        return without_caches(self)


@dataclass(frozen=True)
class QuantizedDense:
    """One dense layer of the head: its FULLY_CONNECTED (a fused ReLU / ReLU6 is its output clamp) and, for a
    tanh or sigmoid between layers, the TANH / LOGISTIC op after it (``act_op``, its output ``act_q`` and
    prepared ``act_prepared``; None otherwise). The last layer's activation is applied in float, after."""

    fc: QuantizedFC
    input_q: QParams
    output_q: QParams  # the FULLY_CONNECTED output
    prepared: object  # FullyConnectedParams
    activation: str  # the float layer's activation
    act_op: str | None = None  # "LOGISTIC" or "TANH"
    act_q: QParams | None = None
    act_prepared: object | None = None

    @property
    def result_q(self) -> QParams:
        """The quantization of what the next layer reads."""
        return self.act_q if self.act_op is not None else self.output_q


@dataclass(frozen=True)
class QuantizedHead:
    """The dense head: its layers in order, where it applies and the output activation (the last layer's,
    applied in float after dequantizing)."""

    layers: tuple[QuantizedDense, ...]
    per_step: bool
    activation: str

    @property
    def input_q(self) -> QParams:
        return self.layers[0].input_q

    @property
    def output_q(self) -> QParams:
        return self.layers[-1].output_q

    @property
    def out_features(self) -> int:
        return self.layers[-1].fc.w_q.shape[0]


@dataclass(frozen=True)
class QuantizationReport:
    """What calibration saw: per tensor the observed range, the quantized range and saturation counts."""

    observer: str
    observed: dict[TensorKey, tuple[float, float]]
    quantized: dict[TensorKey, tuple[float, float]]
    saturated: dict[TensorKey, tuple[int, int]] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)  # parameter adjustments made, in words
    # Tensors feeding a sigmoid or tanh, whose range was capped at +-cap where that activation's output stops
    # changing at its resolution: a value beyond a bound at the cap is clipped to no effect.
    caps: dict[TensorKey, float] = field(default_factory=dict)
    # The observer of each tensor that differs from ``observer`` (the auto observer's choices), and the
    # tensors whose range an observer chose at all (the others are fixed by their op, the state, or declared).
    observer_kinds: dict[TensorKey, str] = field(default_factory=dict)
    choosable: tuple[TensorKey, ...] = ()


# The runtime that executes quantized models, as a function returning it (see use_executor).
_executor: Callable[[], object] | None = None


def use_executor(get_executor: Callable[[], object]) -> None:
    """Plug in what runs a QuantizedGRUModel: ``get_executor()`` returns an object with ``run_int(qmodel,
    x_q, workers)``, ``predict_int(qmodel, x_q, workers)`` and ``stream(qmodel, batch)`` (the runtime stage,
    ``grukit.runtime.int_gru``). grukit/__init__.py does this once; the core names the contract only."""
    global _executor
    _executor = get_executor


def _runtime():
    if _executor is None:
        raise RuntimeError("no integer runtime plugged in: import grukit (grukit/__init__.py plugs it in)")
    return _executor()


@dataclass(frozen=True)
class QuantizedGRUModel:
    """A GRU network with integer parameters. Build it with ``grukit.quantize``.

    predict(x)       float [N, T, I] -> float output, through integer inference
    predict_int(x_q) integer [N, T, I] -> integer output (for bit-exact comparison)
    run_int(x_q)     integer output and every layer's integer states [N, T, H]
    stream(N)        a streaming runner: step(x_t_q) -> y_t_q, reset(), state / restore(state)

    predict, predict_int and run_int split large batches across worker processes (``workers=``, else
    $GRUKIT_WORKERS, else every usable CPU; see ``grukit.runtime.workers``): the same integers.
    """

    scheme: Scheme
    layers: tuple[QuantizedLayer, ...]
    head: QuantizedHead | None
    float_model: object  # the GRUModel it was quantized from
    report: QuantizationReport

    @property
    def input_q(self) -> QParams:
        return self.layers[0].qparams["x"]

    @property
    def output_q(self) -> QParams:
        return self.head.output_q if self.head is not None else self.layers[-1].qparams["h"]

    @property
    def per_step(self) -> bool:
        return self.float_model.per_step

    @property
    def output_size(self) -> int:
        return self.head.out_features if self.head is not None else self.layers[-1].hidden_size

    def quantize_input(self, x: np.ndarray) -> np.ndarray:
        """Float [N, T, I] (or [T, I]) -> the model's integer input."""
        return self.input_q.quantize(as_batch(x, self.float_model.input_size))

    def dequantize_output(self, y_q: np.ndarray) -> np.ndarray:
        """The integer output -> float, then the head's float activation (softmax, sigmoid or none)."""
        act = self.head.activation if self.head is not None else "linear"
        return head_activation(self.output_q.dequantize(y_q), act).astype(np.float32)

    def check_int_input(self, x_q: np.ndarray, what: str) -> None:
        """Refuse integers of another width or a wrong feature size (they would wrap, not saturate)."""
        if x_q.dtype != self.input_q.np_dtype:
            raise TypeError(f"{what} must be {self.input_q.dtype}, got {x_q.dtype}")
        if x_q.shape[-1] != self.float_model.input_size:
            raise ValueError(f"{what} must have {self.float_model.input_size} features, got shape {x_q.shape}")

    def __getstate__(self):
        return without_caches(self)

    # --- execution: the runtime stage's (see use_executor) ----------------------------------------------
    def run_int(self, x_q: np.ndarray, workers: int | None = None) -> tuple[np.ndarray, list[np.ndarray]]:
        """(integer output, [states of each layer [N, T, H]]) for integer input x_q [N, T, I]."""
        return _runtime().run_int(self, x_q, workers)

    def predict_int(self, x_q: np.ndarray, workers: int | None = None) -> np.ndarray:
        """The integer output for integer input x_q [N, T, I]."""
        return _runtime().predict_int(self, x_q, workers)

    def predict(self, x: np.ndarray, batch: int = 1024, workers: int | None = None) -> np.ndarray:
        """Float in, float out, integer arithmetic in between."""
        x = as_batch(x, self.float_model.input_size)
        outs = [self.dequantize_output(self.predict_int(self.quantize_input(x[i : i + batch]), workers))
                for i in range(0, x.shape[0], batch)]
        return np.concatenate(outs, axis=0)

    def stream(self, batch: int = 1):
        """A streaming runner over ``batch`` independent sequences (``grukit.runtime.int_gru.IntStream``)."""
        return _runtime().stream(self, batch)
