"""What runs a ``grukit.core.quantized.QuantizedGRUModel``: its ``run_int``, ``predict_int`` and ``stream``
forward here (the wiring in grukit/__init__.py plugs this module in; see ``use_executor``).

A large batch is split by sequences across worker processes (``grukit.runtime.workers``), the caller running
the first chunk; smaller ones run in this process (``grukit.runtime.int_gru.run_here``). The integers are the
same either way.
"""

from __future__ import annotations

import numpy as np

from grukit.runtime import workers as W
from grukit.runtime.int_gru import IntStream, run_here


def _run(qmodel, x_q: np.ndarray, workers: int | None, want_states: bool):
    x_q = np.asarray(x_q)
    if x_q.ndim == 2:
        x_q = x_q[None]
    qmodel.check_int_input(x_q, "integer input [N, T, I]")
    chunks = W.chunks_for(x_q.shape[0], x_q.shape[1], W.worker_count(workers))
    if chunks > 1:
        return W.run_split(qmodel, x_q, chunks, want_states)
    return run_here(qmodel, x_q, input_ahead=True)


def run_int(qmodel, x_q: np.ndarray, workers: int | None = None) -> tuple[np.ndarray, list[np.ndarray]]:
    """(integer output, [states of each layer [N, T, H]]) for integer input x_q [N, T, I] (or [T, I])."""
    return _run(qmodel, x_q, workers, want_states=True)


def predict_int(qmodel, x_q: np.ndarray, workers: int | None = None) -> np.ndarray:
    """The integer output for integer input x_q [N, T, I] (or [T, I])."""
    return _run(qmodel, x_q, workers, want_states=False)[0]


def stream(qmodel, batch: int = 1) -> IntStream:
    """A streaming runner over ``batch`` independent sequences, one step per call."""
    return IntStream(qmodel, batch)
