"""The fast integer runtime: the specification's integers for whole validation sets.

``layer_forward_int`` runs a layer through its compiled plan (``grukit.runtime.int_gru_plan``), the next
block's input-side products computed meanwhile in a worker thread; ``run_here`` runs a whole model in this
process; ``IntStream`` steps it one sample at a time. Every result equals the op-by-op specification
(``grukit.runtime.int_gru_reference``) integer for integer; ``tests/test_int_gru.py`` checks it.
``grukit.runtime.executor`` adds the split across worker processes.

Shapes: integer sequences are [N, T, I]; states [N, H]; outputs [N, O] (last-step head) or [N, T, O].
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import numpy as np
from threadpoolctl import ThreadpoolController

from grukit.core.graph import input_side_ops, recurrent_ops
from grukit.runtime.int_gru_plan import LayerPlan
from grukit.runtime.int_gru_reference import head_forward_int

INPUT_BLOCK_ROWS = 2048  # sequences x steps of input-side products computed together (measured)

# While the recurrence runs one block of steps, one worker thread computes the next block's input-side
# products: large NumPy calls that release the GIL, on the second core. BLAS is held to one thread meanwhile:
# OpenBLAS's own second thread would otherwise spin on that core after every small recurrent matmul.
_prefetch: ThreadPoolExecutor | None = None  # created on first use, not at import
_blas = ThreadpoolController()


def _prefetch_pool() -> ThreadPoolExecutor:
    global _prefetch
    if _prefetch is None:
        _prefetch = ThreadPoolExecutor(max_workers=1, thread_name_prefix="grukit-input-side")
    return _prefetch


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

    Computes exactly what ``int_gru_reference.layer_forward_int_reference`` computes, through the compiled plan of
    ``int_gru_plan``. With more than one block of steps and ``input_ahead``, the next block's
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
            ahead = _prefetch_pool().submit(input_side, 0, block) if input_ahead else None
            for t0 in range(0, T, block):
                t1 = min(T, t0 + block)
                pre = ahead.result() if input_ahead else input_side(t0, t1)
                if input_ahead and t1 < T:
                    ahead = _prefetch_pool().submit(input_side, t1, min(T, t1 + block))
                h = recurrence(t0, t1, pre, h)
    return np.ascontiguousarray(recurrent_plan.decode("h", held).transpose(1, 0, 2))


def run_here(qmodel, x_q: np.ndarray, input_ahead: bool = True) -> tuple[np.ndarray, list[np.ndarray]]:
    """(integer output, [states of each layer]) of ``qmodel`` on checked integer input x_q [N, T, I], in this
    process (``layer_forward_int``'s ``input_ahead``)."""
    states = []
    seq = x_q
    for layer in qmodel.layers:
        seq = layer_forward_int(layer, seq, input_ahead=input_ahead)
        states.append(seq)
    top = seq if qmodel.per_step else seq[:, -1]
    y = top if qmodel.head is None else head_forward_int(qmodel.head, top)
    return y, states


class IntStream:
    """Streaming integer inference, one time step per call, with explicit integer state."""

    def __init__(self, model, batch: int = 1):
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
