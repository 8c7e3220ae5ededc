"""Quantization parameters: small frozen records whose constructors check their ranges.

``QParams`` (a tensor's scale and zero point) and ``Requant`` (a real multiplier as TFLite's
QuantizeMultiplier gives it), and the integer parameters of each op as TFLite-Micro's Prepare leaves them in
its OpData (``FullyConnectedParams``, ``AddParams``, ``MulParams``, ``ActivationParams``): computed by
``grukit.quantize.prepare`` (the only place floats become these integers), read by the integer kernels of
``grukit.core.ops_int`` and by every exporter.

Scales are kept as float32 values because that is what a ``.tflite`` file stores and what TFLite-Micro's
Prepare reads back; every derived multiplier is computed from the float32 scale in double precision, as
TFLite-Micro computes it, so the integer parameters here and on the device are the same numbers.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from grukit.core.fixedpoint import round_half_away

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


# ---------------------------------------------------------------------------------------------------------
# Integer parameters of each op (TFLite-Micro's OpData)
# ---------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class FullyConnectedParams(IntegerType):
    """Integer parameters of a per-channel FULLY_CONNECTED (OpDataFullyConnected).

    output_requants[o] requantizes channel o; ``output_multiplier`` / ``output_shift`` are the same as
    int64 arrays [O] for the kernels. int16: zero points 0 and shifts <= 7 (64-bit requantization).
    ``activation_min`` / ``activation_max``: a fused ReLU / ReLU6's output clamp (TFLite's
    CalculateActivationRangeQuantized), None for the type's full range; ``qmin`` / ``qmax`` are the clamp the
    kernel applies.
    """

    dtype: str
    input_zero_point: int
    output_zero_point: int
    output_requants: tuple[Requant, ...]
    activation_min: int | None = None
    activation_max: int | None = None
    output_multiplier: np.ndarray = field(init=False, repr=False, compare=False)
    output_shift: np.ndarray = field(init=False, repr=False, compare=False)

    @property
    def qmin(self) -> int:
        return INT_RANGE[self.dtype][0] if self.activation_min is None else self.activation_min

    @property
    def qmax(self) -> int:
        return INT_RANGE[self.dtype][1] if self.activation_max is None else self.activation_max

    def __post_init__(self):
        lo, hi = INT_RANGE[self.dtype]
        if not lo <= self.qmin <= self.qmax <= hi:
            raise ValueError(f"activation clamp [{self.qmin}, {self.qmax}] outside the {self.dtype} range")
        multiplier = np.array([r.multiplier for r in self.output_requants], np.int64)
        shift = np.array([r.shift for r in self.output_requants], np.int64)
        multiplier.setflags(write=False)
        shift.setflags(write=False)
        object.__setattr__(self, "output_multiplier", multiplier)
        object.__setattr__(self, "output_shift", shift)


@dataclass(frozen=True)
class AddParams(IntegerType):
    """Integer parameters of ADD or SUB (OpDataAdd / OpDataSub): ``op`` is "ADD" or "SUB".

    Each input, minus its zero point, is shifted left by ``left_shift`` (20 for int8, 15 for int16) and
    rescaled by its Requant (shift <= 0); the sum or difference is rescaled by ``output``.
    """

    op: str
    dtype: str
    input1_zero_point: int
    input2_zero_point: int
    output_zero_point: int
    left_shift: int
    input1: Requant
    input2: Requant
    output: Requant

    def __post_init__(self):
        if self.op not in ("ADD", "SUB"):
            raise ValueError(f"op must be 'ADD' or 'SUB', got {self.op!r}")
        for r in (self.input1, self.input2, self.output):
            if r.shift > 0:
                raise ValueError(f"ADD/SUB rescales need shift <= 0, got {r}")


@dataclass(frozen=True)
class MulParams(IntegerType):
    """Integer parameters of MUL (OpDataMul): (a - zp1) * (b - zp2) requantized by ``output``."""

    dtype: str
    input1_zero_point: int
    input2_zero_point: int
    output_zero_point: int
    output: Requant


@dataclass(frozen=True)
class ActivationParams(IntegerType):
    """Integer parameters of LOGISTIC or TANH (OpDataLogistic / tanh's OpData); ``op`` names which.

    int8: input_multiplier in [2^30, 2^31) and input_left_shift in [0, 30] rescale x - zp to Q4.27;
    |x - zp| >= input_range_radius saturates. int16: input_multiplier 0 (power-of-two input scale,
    the kernel uses 3 << input_left_shift) or in (0, 32767], input_left_shift in [0, 31]; zp 0, radius 0.
    """

    op: str
    dtype: str
    input_zero_point: int
    input_range_radius: int
    input_multiplier: int
    input_left_shift: int

    def __post_init__(self):
        if self.op not in ("LOGISTIC", "TANH"):
            raise ValueError(f"op must be 'LOGISTIC' or 'TANH', got {self.op!r}")
        if self.dtype == "int8":
            ok = (1 << 30) <= self.input_multiplier < (1 << 31) and 0 <= self.input_left_shift <= 30
        else:
            ok = 0 <= self.input_multiplier <= 32767 and 0 <= self.input_left_shift <= 31
        if not ok:
            raise ValueError(f"input multiplier/shift out of range for {self.dtype}: {self!r}")
