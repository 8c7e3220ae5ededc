"""How the deploy report scores a runtime's outputs: accuracy or MSE (and MAE), confusion matrices, and the
drift of the integer hidden state from the float one."""

from __future__ import annotations

import numpy as np

from grukit.core.float_gru import predicted_labels
from grukit.core.model import GRUModel


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
