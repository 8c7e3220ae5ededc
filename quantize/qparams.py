"""Quantization parameters: small frozen records whose constructors check their ranges.

Scales are kept as float32 values because that is what a ``.tflite`` file stores and what TFLite-Micro's
Prepare reads back; every derived multiplier is computed from the float32 scale in double precision, as
TFLite-Micro computes it, so the integer parameters here and on the device are the same numbers.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

DTYPES = {"int8": np.int8, "int16": np.int16}
INT_RANGE = {"int8": (-128, 127), "int16": (-32768, 32767)}


class IntegerType:
    """qmin / qmax / np_dtype from a ``dtype`` field ("int8" or "int16")."""

    dtype: str

    @property
    def qmin(self) -> int:
        return INT_RANGE[self.dtype][0]

    @property
    def qmax(self) -> int:
        return INT_RANGE[self.dtype][1]

    @property
    def np_dtype(self):
        return DTYPES[self.dtype]


@dataclass(frozen=True)
class QParams(IntegerType):
    """Affine quantization of one tensor: real = scale * (q - zero_point), q of ``dtype``.

    int16 tensors are symmetric (zero_point 0), as TFLite-Micro requires for its int16 kernels.
    """

    scale: float
    zero_point: int
    dtype: str

    def __post_init__(self):
        if self.dtype not in DTYPES:
            raise ValueError(f"dtype must be one of {tuple(DTYPES)}, got {self.dtype!r}")
        scale = float(np.float32(self.scale))
        if not (np.isfinite(scale) and scale > 0):
            raise ValueError(f"scale must be a positive finite float32, got {self.scale!r}")
        object.__setattr__(self, "scale", scale)
        lo, hi = INT_RANGE[self.dtype]
        zp = int(self.zero_point)
        if not lo <= zp <= hi:
            raise ValueError(f"zero_point {zp} outside the {self.dtype} range [{lo}, {hi}]")
        if self.dtype == "int16" and zp != 0:
            raise ValueError(f"int16 tensors are symmetric: zero_point must be 0, got {zp}")
        object.__setattr__(self, "zero_point", zp)

    def quantize(self, x: np.ndarray) -> np.ndarray:
        """Float -> integer at the edge of the model: round half away from zero, then saturate."""
        from grukit.runtime.ops_int import round_half_away

        q = round_half_away(np.asarray(x, np.float64) / self.scale) + self.zero_point
        return np.clip(q, self.qmin, self.qmax).astype(self.np_dtype)

    def dequantize(self, q: np.ndarray) -> np.ndarray:
        """Integer -> float at the edge of the model."""
        return ((np.asarray(q, np.int64) - self.zero_point) * np.float64(self.scale)).astype(np.float32)

    @property
    def range(self) -> tuple[float, float]:
        """The real interval this quantization represents."""
        return (self.scale * (self.qmin - self.zero_point), self.scale * (self.qmax - self.zero_point))


@dataclass(frozen=True)
class Requant:
    """A real multiplier as TFLite's QuantizeMultiplier gives it: real = multiplier * 2^(shift - 31).

    multiplier: fixed point at bit 31, 0 or in [2^30, 2^31 - 1]. shift: positive is a left shift,
    in [-31, 30] (TFLite-Micro's kernels apply it as MultiplyByQuantizedMultiplier(x, multiplier, shift)).
    """

    multiplier: int
    shift: int

    def __post_init__(self):
        m, s = int(self.multiplier), int(self.shift)
        if not (m == 0 or (1 << 30) <= m <= (1 << 31) - 1):
            raise ValueError(f"multiplier {m} is not 0 or in [2^30, 2^31 - 1]")
        if not -31 <= s <= 30:
            raise ValueError(f"shift {s} outside [-31, 30]")
        object.__setattr__(self, "multiplier", m)
        object.__setattr__(self, "shift", s)
