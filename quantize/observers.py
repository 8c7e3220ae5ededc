"""Range observers: what real interval each tensor's integer range should cover.

An observer sees every value a tensor takes on the calibration data (every step of every sequence) and
proposes a range. It keeps the exact minimum and maximum plus a bounded, seeded random sample of the values,
from which the percentile and MSE observers choose; the sample keeps calibration memory flat however long
the sequences are.

- ``minmax``: the exact observed range. Never clips a calibration value.
- ``percentile``: the [p, 100 - p] percentile interval (default p = 0.01): ignores rare outliers.
- ``mse``: searches shrinkings of each end of the min/max range for the one that minimises the mean squared
  quantization error (rounding plus clipping) over the sample, for the tensor's integer width.
"""

from __future__ import annotations

import numpy as np

OBSERVERS = ("minmax", "percentile", "mse")

SAMPLE_SIZE = 1 << 16  # values kept per tensor for the percentile and MSE observers
PERCENTILE = 0.01  # percent clipped at each end by the percentile observer
MSE_CANDIDATES = 48  # shrink factors tried per end by the MSE observer, geometric from 1 to MSE_MIN_SHRINK
MSE_MIN_SHRINK = 0.02
MSE_BINS = 4096


class RangeObserver:
    """Accumulates one tensor's values across calls; ``range(kind, levels)`` proposes an interval."""

    def __init__(self, seed: int = 0, track_gram: bool = False):
        self.gram = None if not track_gram else 0.0  # sum of x x^T over rows of the last axis
        self.min = np.inf
        self.max = -np.inf
        self.count = 0
        self._sample = np.empty(0, np.float32)
        self._rng = np.random.default_rng(seed)
        self._ranges: dict[tuple[str, int, bool], tuple[float, float]] = {}  # range() per arguments, until update()

    def update(self, values: np.ndarray) -> None:
        values = np.asarray(values, np.float32)
        if values.size == 0:
            return
        self._ranges.clear()
        if self.gram is not None:
            rows = values.reshape(-1, values.shape[-1]).astype(np.float64)
            self.gram = self.gram + rows.T @ rows
        v = values.ravel()
        self.min = min(self.min, float(v.min()))
        self.max = max(self.max, float(v.max()))
        self.count += v.size
        # Reservoir-style: keep each value with probability SAMPLE_SIZE / count so far (approximately
        # uniform over the whole stream, without storing it).
        keep = min(1.0, SAMPLE_SIZE / self.count)
        if keep < 1.0:
            v = v[self._rng.random(v.size) < keep]
        sample = np.concatenate([self._sample, v])
        if sample.size > SAMPLE_SIZE:
            sample = self._rng.choice(sample, SAMPLE_SIZE, replace=False)
        self._sample = sample

    @property
    def sample(self) -> np.ndarray:
        return self._sample

    def range(self, kind: str, levels: int, symmetric: bool) -> tuple[float, float]:
        """The proposed [lo, hi] (always containing 0) for an integer grid of ``levels`` steps."""
        if self.count == 0:
            raise ValueError("observer saw no values")
        if (kind, levels, symmetric) not in self._ranges:
            self._ranges[(kind, levels, symmetric)] = self._range(kind, levels, symmetric)
        return self._ranges[(kind, levels, symmetric)]

    def _range(self, kind: str, levels: int, symmetric: bool) -> tuple[float, float]:
        if kind == "minmax":
            lo, hi = self.min, self.max
        elif kind == "percentile":
            lo, hi = (float(q) for q in np.percentile(self._sample, [PERCENTILE, 100 - PERCENTILE]))
            lo, hi = max(lo, self.min), min(hi, self.max)
        elif kind == "mse":
            lo, hi = self._mse_range(levels, symmetric)
        else:
            raise ValueError(f"unknown observer {kind!r}; use one of {OBSERVERS}")
        lo, hi = min(lo, 0.0), max(hi, 0.0)
        if symmetric:
            a = max(-lo, hi)
            lo, hi = -a, a
        return lo, hi

    def _mse_range(self, levels: int, symmetric: bool) -> tuple[float, float]:
        lo0, hi0 = min(self.min, 0.0), max(self.max, 0.0)
        if symmetric:
            a = max(-lo0, hi0)
            lo0, hi0 = -a, a
        # The sample as a histogram: each candidate range then costs O(bins), not O(sample).
        counts, edges = np.histogram(self._sample.astype(np.float64), bins=MSE_BINS, range=(lo0, hi0 + 1e-12))
        centers = 0.5 * (edges[:-1] + edges[1:])
        shrinks = np.geomspace(1.0, MSE_MIN_SHRINK, MSE_CANDIDATES)
        best, best_err = (lo0, hi0), np.inf
        for s_lo in shrinks:
            for s_hi in ([s_lo] if symmetric else shrinks):
                lo, hi = lo0 * s_lo, hi0 * s_hi
                if hi - lo <= 0:
                    continue
                step = (hi - lo) / levels
                q = np.clip(np.floor((centers - lo) / step + 0.5), 0, levels) * step + lo
                err = float(np.dot(counts, (q - centers) ** 2))
                if err < best_err:
                    best, best_err = (lo, hi), err
        return best
