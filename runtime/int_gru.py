"""The fixed-point NumPy runtime: the executable specification of grukit's integer GRU.

It walks the step graph of ``grukit.quantize.graph`` with the integer kernels of
``grukit.runtime.ops_int``; the TFLite export and the C kernel run the same ops on the same parameters and
must produce the same integers. Inference computes integers only: the one float rounding is at the edges
(``predict`` quantizes the input and dequantizes the output, then applies an optional float head
activation). Inside, float32/float64 array arithmetic is used as a fast carrier of integers only where a
bound proves every value it holds is exact (BLAS dot products, ``int_gru_plan.FloatRequant``); each such
bound is checked when the plan is built and has its own test.

Shapes: integer sequences are [N, T, I]; states [N, H]; outputs [N, O] (last-step head) or [N, T, O].
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
from threadpoolctl import ThreadpoolController

from grukit.quantize.graph import ADD, FULLY_CONNECTED, LOGISTIC, MUL, SUB, TANH, Op, input_side_ops, recurrent_ops
from grukit.quantize.quantize import without_caches
from grukit.runtime import ops_int as K
from grukit.runtime import workers as W
from grukit.runtime.float_gru import as_batch
from grukit.runtime.int_gru_plan import LayerPlan

INPUT_BLOCK_ROWS = 2048  # sequences x steps of input-side products computed together (measured)

# While the recurrence runs one block of steps, one worker thread computes the next block's input-side
# products: large NumPy calls that release the GIL, on the second core. BLAS is held to one thread meanwhile:
# OpenBLAS's own second thread would otherwise spin on that core after every small recurrent matmul.
_prefetch = ThreadPoolExecutor(max_workers=1, thread_name_prefix="grukit-input-side")
_blas = ThreadpoolController()

_KERNELS = {
    (FULLY_CONNECTED, "int8"): K.fully_connected_s8,
    (FULLY_CONNECTED, "int16"): K.fully_connected_s16,
    (ADD, "int8"): K.add_s8,
    (ADD, "int16"): K.add_s16,
    (SUB, "int8"): K.sub_s8,
    (SUB, "int16"): K.sub_s16,
    (MUL, "int8"): K.mul_s8,
    (MUL, "int16"): K.mul_s16,
    (LOGISTIC, "int8"): K.logistic_s8,
    (LOGISTIC, "int16"): K.logistic_s16,
    (TANH, "int8"): K.tanh_s8,
    (TANH, "int16"): K.tanh_s16,
}


def run_op(op: Op, layer, env: dict[str, np.ndarray]) -> np.ndarray:
    """Execute one graph op of ``layer`` (a QuantizedLayer) on integer tensors in ``env``."""
    dtype = layer.qparams[op.output].dtype
    kernel = _KERNELS[(op.kind, dtype)]
    params = layer.prepared[op.output]
    if op.kind == FULLY_CONNECTED:
        fc = layer.fcs[op.output]
        return kernel(env[op.inputs[0]], fc.w_q, fc.bias_q, params)
    return kernel(*(env[name] for name in op.inputs), params)


def layer_forward_int_reference(layer, x_q: np.ndarray, h0_q: np.ndarray | None = None) -> np.ndarray:
    """The specification: one layer over x_q [N, T, I], op by op, step by step; every state [N, T, H]."""
    N, T, I = x_q.shape
    h = np.zeros((N, layer.hidden_size), layer.qparams["h"].np_dtype) if h0_q is None else h0_q
    states = np.empty((N, T, layer.hidden_size), layer.qparams["h"].np_dtype)
    for t in range(T):
        env = {"x": x_q[:, t], "h": h}
        for op in layer.ops:
            env[op.output] = run_op(op, layer, env)
        h = states[:, t] = env["h_new"]
    return states


def _plans(layer) -> tuple[LayerPlan, LayerPlan]:
    # Built once per layer (tables and stacked weights), cached on the frozen layer object.
    plans = layer.__dict__.get("_plans")
    if plans is None:
        plans = (LayerPlan(layer, input_side_ops(layer.linear_before_reset)),
                 LayerPlan(layer, recurrent_ops(layer.linear_before_reset)))
        object.__setattr__(layer, "_plans", plans)
    return plans


def layer_forward_int(layer, x_q: np.ndarray, h0_q: np.ndarray | None = None, input_ahead: bool = True) -> np.ndarray:
    """Run one quantized layer over x_q [N, T, I] (its input dtype); returns every state [N, T, H].

    Computes exactly what ``layer_forward_int_reference`` computes, through the compiled plan of
    ``grukit.runtime.int_gru_plan``. With more than one block of steps and ``input_ahead``, the next block's
    input-side products are computed in a worker thread, and BLAS is held to one thread for the call
    (process-wide: OpenBLAS has one setting). Without (the batch is split across processes, which hold the
    other cores), each block's input side is computed in line.
    """
    N, T, I = x_q.shape
    H = layer.hidden_size
    dtype = layer.qparams["h"].np_dtype
    input_plan, recurrent_plan = _plans(layer)
    h = np.zeros((N, H), dtype) if h0_q is None else np.asarray(h0_q).astype(dtype, copy=False)
    h = recurrent_plan.encode("h", h)
    held = np.empty((T, N, H), h.dtype)  # every state, as the plan holds it

    def input_side(t0: int, t1: int) -> dict[str, np.ndarray]:
        xs = np.ascontiguousarray(x_q[:, t0:t1].transpose(1, 0, 2))  # [steps, N, I]
        return recurrent_plan.hold({name: v for name, v in input_plan.run({"x": xs}).items() if name != "x"})

    def recurrence(t0: int, t1: int, pre: dict[str, np.ndarray], h: np.ndarray) -> np.ndarray:
        for t in range(t0, t1):
            env = {name: v[t - t0] for name, v in pre.items()}
            env["h"] = h
            h = held[t] = recurrent_plan.run(env)["h_new"]
        return h

    # The input-side products do not depend on the state: computed for a block of steps at once, the next
    # block (input_ahead) in the worker thread while this one's recurrence runs.
    block = max(1, INPUT_BLOCK_ROWS // max(N, 1))
    if T <= block:
        recurrence(0, T, input_side(0, T), h)
    else:
        with _blas.limit(limits=1, user_api="blas"):
            ahead = _prefetch.submit(input_side, 0, block) if input_ahead else None
            for t0 in range(0, T, block):
                t1 = min(T, t0 + block)
                pre = ahead.result() if input_ahead else input_side(t0, t1)
                if input_ahead and t1 < T:
                    ahead = _prefetch.submit(input_side, t1, min(T, t1 + block))
                h = recurrence(t0, t1, pre, h)
    return np.ascontiguousarray(recurrent_plan.decode("h", held).transpose(1, 0, 2))


def head_forward_int(head, h_q: np.ndarray) -> np.ndarray:
    """The quantized dense head on states [..., F] (any leading shape)."""
    kernel = _KERNELS[(FULLY_CONNECTED, head.input_q.dtype)]
    lead = h_q.shape[:-1]
    y = kernel(h_q.reshape(-1, h_q.shape[-1]), head.fc.w_q, head.fc.bias_q, head.prepared)
    return y.reshape(*lead, -1)


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

    scheme: str
    layers: tuple
    head: object
    float_model: object
    report: object

    @property
    def input_q(self):
        return self.layers[0].qparams["x"]

    @property
    def output_q(self):
        return self.head.output_q if self.head is not None else self.layers[-1].qparams["h"]

    @property
    def per_step(self) -> bool:
        return self.float_model.per_step

    def quantize_input(self, x: np.ndarray) -> np.ndarray:
        return self.input_q.quantize(as_batch(x, self.float_model.input_size))

    def __getstate__(self):
        return without_caches(self)

    def run_int(self, x_q: np.ndarray, workers: int | None = None) -> tuple[np.ndarray, list[np.ndarray]]:
        """(integer output, [states of each layer [N, T, H]]) for integer input x_q [N, T, I]."""
        return self._run_int(x_q, workers, want_states=True)

    def _run_int(self, x_q: np.ndarray, workers: int | None, want_states: bool):
        x_q = np.asarray(x_q)
        if x_q.ndim == 2:
            x_q = x_q[None]
        self.check_int_input(x_q, "integer input [N, T, I]")
        chunks = W.chunks_for(x_q.shape[0], x_q.shape[1], W.worker_count(workers))
        if chunks > 1:
            return W.run_split(self, x_q, chunks, want_states)
        return self.run_here(x_q, input_ahead=True)

    def run_here(self, x_q: np.ndarray, input_ahead: bool) -> tuple[np.ndarray, list[np.ndarray]]:
        """run_int in this process, on checked input (``layer_forward_int``'s ``input_ahead``)."""
        states = []
        seq = x_q
        for layer in self.layers:
            seq = layer_forward_int(layer, seq, input_ahead=input_ahead)
            states.append(seq)
        top = seq if self.per_step else seq[:, -1]
        y = top if self.head is None else head_forward_int(self.head, top)
        return y, states

    def check_int_input(self, x_q: np.ndarray, what: str) -> None:
        """Refuse integers of another width or a wrong feature size (they would wrap, not saturate)."""
        if x_q.dtype != self.input_q.np_dtype:
            raise TypeError(f"{what} must be {self.input_q.dtype}, got {x_q.dtype}")
        if x_q.shape[-1] != self.float_model.input_size:
            raise ValueError(f"{what} must have {self.float_model.input_size} features, got shape {x_q.shape}")

    def predict_int(self, x_q: np.ndarray, workers: int | None = None) -> np.ndarray:
        return self._run_int(x_q, workers, want_states=False)[0]

    def dequantize_output(self, y_q: np.ndarray) -> np.ndarray:
        from grukit.runtime.float_gru import sigmoid

        y = self.output_q.dequantize(y_q)
        act = self.head.activation if self.head is not None else "linear"
        if act == "softmax":
            e = np.exp(y - y.max(axis=-1, keepdims=True))
            y = e / e.sum(axis=-1, keepdims=True)
        elif act == "sigmoid":
            y = sigmoid(y)
        return y.astype(np.float32)

    def predict(self, x: np.ndarray, batch: int = 1024, workers: int | None = None) -> np.ndarray:
        """Float in, float out, integer arithmetic in between."""
        x = as_batch(x, self.float_model.input_size)
        outs = [self.dequantize_output(self.predict_int(self.quantize_input(x[i : i + batch]), workers))
                for i in range(0, x.shape[0], batch)]
        return np.concatenate(outs, axis=0)

    def stream(self, batch: int = 1) -> "IntStream":
        return IntStream(self, batch)


class IntStream:
    """Streaming integer inference, one time step per call, with explicit integer state."""

    def __init__(self, model: QuantizedGRUModel, batch: int = 1):
        self.model = model
        self.batch = batch
        self.reset()

    def reset(self) -> None:
        """Zero every layer's state (the start of a new independent sequence)."""
        self.states = [np.zeros((self.batch, l.hidden_size), l.qparams["h"].np_dtype) for l in self.model.layers]

    @property
    def state(self) -> list[np.ndarray]:
        """A copy of the integer state of every layer [N, H]."""
        return [s.copy() for s in self.states]

    def restore(self, state: list[np.ndarray]) -> None:
        if len(state) != len(self.states) or any(a.shape != b.shape or a.dtype != b.dtype for a, b in zip(state, self.states)):
            raise ValueError("state does not match this model's layers, batch and dtypes")
        self.states = [s.copy() for s in state]

    def step(self, x_t_q: np.ndarray) -> np.ndarray:
        """Advance one step with integer input x_t_q [N, I]; returns the integer output for this step."""
        x_t_q = np.asarray(x_t_q)
        self.model.check_int_input(x_t_q, f"step input [{self.batch}, I]")
        x = x_t_q.reshape(self.batch, 1, -1)
        for i, layer in enumerate(self.model.layers):
            x = layer_forward_int(layer, x, self.states[i])
            self.states[i] = x[:, 0].copy()
        h = x[:, 0]
        return h if self.model.head is None else head_forward_int(self.model.head, h)
