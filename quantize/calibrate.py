"""Calibration: run representative sequences through the float model and observe every quantized tensor.

Whole sequences go through the float reference and every tensor of the integer graph
(``grukit.core.graph``) is observed at every step: a GRU's hidden state drifts over long sequences, and
ranges taken from the first steps only would saturate later. Tensors are keyed ``(layer, name)``; each layer's
input is ``(layer, "x")``, its previous state ``(layer, "h_prev")``, the head's dense layer k's input and output
``(len(layers), "head{k}_in" / "head{k}_out")``. For the inputs of fully connected ops (GRAM_TENSORS) the observer
also accumulates the Gram matrix X^T X, which the output-aware weight rounding uses.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

from grukit.core.errors import BadInputError
from grukit.core.float_gru import as_batch, model_forward
from grukit.core.model import GRUModel
from grukit.core.quantized import TensorKey
from grukit.quantize.observers import RangeObserver

CALIB_BATCH = 256  # sequences per float forward pass
GRAM_TENSORS = ("x", "h_prev", "r_h")  # inputs of the GRU's fully connected ops; the head's are "head{k}_in"


def tracks_gram(name: str) -> bool:
    """Whether the tensor is the input of a fully connected op (its observer accumulates X^T X)."""
    return name in GRAM_TENSORS or (name.startswith("head") and name.endswith("_in"))

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
            observers[key] = RangeObserver(seed=len(observers), track_gram=tracks_gram(name))
        observers[key].update(value)

    for start in range(0, x.shape[0], CALIB_BATCH):
        batch = x[start : start + CALIB_BATCH]
        model_forward(model, batch, observe)
        if progress is not None:
            progress(min(start + CALIB_BATCH, x.shape[0]), x.shape[0])
    return observers


@dataclass(frozen=True)
class Excursion:
    """What one tensor did against its quantized range [lo, hi] on some data: values outside it
    (``saturated``), those of them that change the result (``harmful``: not beyond a bound set where the
    activation the tensor feeds is already constant), values seen, and the observed [minimum, maximum]."""

    saturated: int
    harmful: int
    total: int
    minimum: float
    maximum: float


def range_excursions(model: GRUModel, x: np.ndarray, ranges: dict[TensorKey, tuple[float, float]],
                     caps: dict[TensorKey, float] | None = None) -> dict[TensorKey, Excursion]:
    """Per tensor of ``ranges``, its Excursion on the float run over x. caps: tensors whose range was capped
    at +-cap where the activation they feed saturates (``QuantizationReport.caps``); beyond such a bound the
    value is clipped to no effect."""
    x = as_batch(x, model.input_size)
    caps = caps or {}
    stats = {key: [0, 0, 0, np.inf, -np.inf] for key in ranges}

    def observe(layer: int, name: str, value: np.ndarray) -> None:
        key = (layer, name)
        if key in stats:
            lo, hi = ranges[key]
            cap = caps.get(key)
            outside = (value < lo) | (value > hi)
            s = stats[key]
            s[0] += int(np.count_nonzero(outside))
            if cap is None:
                s[1] += int(np.count_nonzero(outside))
            else:  # a bound at the cap: beyond it the activation is constant at its output resolution
                s[1] += int(np.count_nonzero(((value < lo) & (lo > -cap * CAP_TOLERANCE))
                                             | ((value > hi) & (hi < cap * CAP_TOLERANCE))))
            s[2] += value.size
            s[3], s[4] = min(s[3], float(value.min())), max(s[4], float(value.max()))

    for start in range(0, x.shape[0], CALIB_BATCH):
        model_forward(model, x[start : start + CALIB_BATCH], observe)
    return {key: Excursion(*s) for key, s in stats.items()}


# A range bound within this factor of the cap counts as set at the cap (the quantization grid rounds it).
CAP_TOLERANCE = 0.999


def count_saturation(
    model: GRUModel, calib_x: np.ndarray, ranges: dict[TensorKey, tuple[float, float]]
) -> dict[TensorKey, tuple[int, int]]:
    """(values outside the quantized range, values seen) per tensor, on the float calibration run."""
    return {key: (e.saturated, e.total) for key, e in range_excursions(model, calib_x, ranges).items()}
