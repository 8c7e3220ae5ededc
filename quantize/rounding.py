"""Weight rounding that minimises a fully connected layer's output error on calibration inputs.

Round-to-nearest makes each int8 weight as close as possible to its float value, but what matters is the
product: the error of y = W x over the inputs the layer really sees. With the per-channel scales fixed
(symmetric, from max |w| of each row), ``round_weights_to_inputs`` chooses the integers to reduce
|| (W - s * W_q) X^T ||^2 for calibration inputs X, by the optimal-brain-quantization update (as in GPTQ,
Frantar et al. 2022): quantize one input column at a time and move its rounding error onto the columns not
yet quantized, weighted by the inverse of the inputs' Gram matrix G = X^T X. Rows are independent given G,
so all rows go together. A GRU's matrices are small (K <= a few hundred), so this costs milliseconds.

Only the integers change: scales, biases and every later integer computation are exactly as before, and the
runtimes (NumPy, TFLite, C) see ordinary per-channel int8 weights. A weight that is exactly 0 in float (a
pruned one) stays 0: its column's share of the error moves on like any other, but it never receives any, so
the zero blocks the C generator leaves out of flash survive quantization (as in SparseGPT's masked update).
"""

from __future__ import annotations

import numpy as np

from grukit.core.fixedpoint import round_half_away
from grukit.quantize.prepare import WEIGHT_QMAX

# Relative damping added to G's diagonal: keeps the Cholesky factorisation stable when some inputs are
# constant or collinear (a hidden unit that never moves, a padded input channel).
DAMPING = 0.01


def round_weights_to_inputs(w: np.ndarray, scales: np.ndarray, gram: np.ndarray) -> np.ndarray:
    """Integers for w [O, K] at the given per-channel scales [O] minimising the output error for inputs
    whose Gram matrix (sum of x x^T over calibration samples) is gram [K, K]. Returns int8 [O, K]."""
    w = np.array(w, np.float64)
    pruned = w == 0
    O, K = w.shape
    g = np.array(gram, np.float64)
    if g.shape != (K, K):
        raise ValueError(f"gram must be [{K}, {K}], got {g.shape}")
    dead = np.diag(g) <= 0
    g[dead, dead] = 1.0  # an input that is always zero: its weights do not matter, keep them as they are
    g += DAMPING * np.mean(np.diag(g)) * np.eye(K)
    # Upper Cholesky factor of G^-1: row k holds how the remaining columns absorb column k's error.
    u = np.linalg.cholesky(np.linalg.inv(g)).T
    s = np.asarray(scales, np.float64)[:, None]
    q = np.empty((O, K), np.int8)
    for k in range(K):
        col = w[:, k : k + 1]
        qk = np.where(pruned[:, k : k + 1], 0.0, np.clip(round_half_away(col / s), -WEIGHT_QMAX, WEIGHT_QMAX))
        q[:, k] = qk[:, 0]
        err = (col - qk * s) / u[k, k]
        w[:, k + 1 :] -= err * u[k, k + 1 :]
    return q
