"""Calibration: run representative sequences through the float model and observe every quantized tensor.

Whole sequences go through the float reference and every tensor of the integer graph
(``grukit.core.graph``) is observed at every step: a GRU's hidden state drifts over long sequences, and
ranges taken from the first steps only would saturate later. Tensors are keyed ``(layer, name)``; each layer's
input is ``(layer, "x")``, its previous state ``(layer, "h_prev")``, the head's input and output
``(len(layers), "head_in" / "head_out")``. For the inputs of fully connected ops (GRAM_TENSORS) the observer
also accumulates the Gram matrix X^T X, which the output-aware weight rounding uses.
"""

from __future__ import annotations

from typing import Callable

import numpy as np

from grukit.core.errors import BadInputError
from grukit.core.float_gru import as_batch, model_forward
from grukit.core.model import GRUModel
from grukit.core.quantized import TensorKey
from grukit.quantize.observers import RangeObserver

CALIB_BATCH = 256  # sequences per float forward pass
GRAM_TENSORS = ("x", "h_prev", "r_h", "head_in")  # inputs of fully connected ops

Progress = Callable[[int, int], None]  # progress(done, total) in sequences


def calibrate(
    model: GRUModel, calib_x: np.ndarray, progress: Progress | None = None
) -> dict[TensorKey, RangeObserver]:
    """Observe every tensor of the integer graph over every step of every calibration sequence."""
    x = as_batch(calib_x, model.input_size)
    if x.shape[0] == 0:
        raise BadInputError("calibration data holds no sequences")
    observers: dict[TensorKey, RangeObserver] = {}

    def observe(layer: int, name: str, value: np.ndarray) -> None:
        key = (layer, name)
        if key not in observers:
            observers[key] = RangeObserver(seed=len(observers), track_gram=name in GRAM_TENSORS)
        observers[key].update(value)

    for start in range(0, x.shape[0], CALIB_BATCH):
        batch = x[start : start + CALIB_BATCH]
        model_forward(model, batch, observe)
        if progress is not None:
            progress(min(start + CALIB_BATCH, x.shape[0]), x.shape[0])
    return observers


def count_saturation(
    model: GRUModel, calib_x: np.ndarray, ranges: dict[TensorKey, tuple[float, float]]
) -> dict[TensorKey, tuple[int, int]]:
    """(values outside the quantized range, values seen) per tensor, on the float calibration run."""
    x = as_batch(calib_x, model.input_size)
    counts = {key: [0, 0] for key in ranges}

    def observe(layer: int, name: str, value: np.ndarray) -> None:
        key = (layer, name)
        if key in counts:
            lo, hi = ranges[key]
            counts[key][0] += int(np.count_nonzero((value < lo) | (value > hi)))
            counts[key][1] += value.size

    for start in range(0, x.shape[0], CALIB_BATCH):
        model_forward(model, x[start : start + CALIB_BATCH], observe)
    return {key: (c[0], c[1]) for key, c in counts.items()}
