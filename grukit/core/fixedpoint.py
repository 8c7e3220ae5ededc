"""The named rounding and requantization primitives: gemmlowp's fixedpoint.h and TFLite's
MultiplyByQuantizedMultiplier, in NumPy, on int64 arrays holding the int32 values the C code holds.

Shared by every stage: quantization rounds with ``round_half_away`` (floats to integers, as TFLite's Prepare
does), the integer op kernels (``grukit.core.ops_int``) and the C kernel's generator requantize with the
rest. Paths refer to the tflite-micro tree.

- ``round_half_away``: C's round() / TfLiteRound, halves away from zero (never NumPy's half-to-even).
- ``saturating_rounding_doubling_high_mul``, ``rounding_divide_by_pot``: gemmlowp fixedpoint.h.
- ``multiply_by_quantized_multiplier``: MultiplyByQuantizedMultiplier(int32_t x, ...),
  tensorflow/lite/kernels/internal/common.cc (double-rounding build); ``multiply_by_quantized_multiplier_s64``:
  its int64_t overload (16-bit rounded multiplier, one rounding), used by the 16x8 FULLY_CONNECTED;
  ``rescale_smaller_than_one``: MultiplyByQuantizedMultiplierSmallerThanOneExp.

Where the C code would overflow an int32 (possible only outside the ranges Prepare guarantees) the value is
wrapped explicitly with ``wrap_int32``, as the two's-complement targets we compare against do.
"""

from __future__ import annotations

import numpy as np

INT32_MIN = -(1 << 31)
INT32_MAX = (1 << 31) - 1


# ---------------------------------------------------------------------------------------------------------
# Rounding and fixed-point primitives
# ---------------------------------------------------------------------------------------------------------


def round_half_away(x) -> np.ndarray:
    """Round float values to integers, halves away from zero (C's std::round, TfLiteRound).

    Returns float64 holding integral values (NaN and +-inf pass through), so callers clip before casting.
    """
    x = np.asarray(x, np.float64)
    whole = np.trunc(x)
    frac = x - whole  # exact: a double minus its integer part loses no bits
    return whole + np.where(np.abs(frac) >= 0.5, np.sign(x), 0.0)


def as_int64(x) -> np.ndarray:
    return np.asarray(x).astype(np.int64)


def wrap_int32(x_i64) -> np.ndarray:
    """Reduce int64 values modulo 2^32 into [INT32_MIN, INT32_MAX] (two's-complement int32 overflow)."""
    x_i64 = as_int64(x_i64)
    return ((x_i64 + (1 << 31)) & ((1 << 32) - 1)) - (1 << 31)


def _check_int32(x_i64: np.ndarray, what: str) -> None:
    if x_i64.size and (x_i64.min() < INT32_MIN or x_i64.max() > INT32_MAX):
        raise ValueError(f"{what} must hold int32 values, got range [{x_i64.min()}, {x_i64.max()}]")


def saturating_rounding_doubling_high_mul(a, b) -> np.ndarray:
    """gemmlowp SaturatingRoundingDoublingHighMul on int32 values (ARM VQRDMULH): round(a * b / 2^31).

    Ties go toward +infinity (nudge 2^30, or 1 - 2^30 for a negative product, then a division truncating
    toward zero); INT32_MIN * INT32_MIN, whose result 2^31 is not an int32, saturates to INT32_MAX.
    a, b: int32 values (any integer dtype), broadcast. Returns int64 holding int32 values.
    """
    ab = as_int64(a) * as_int64(b)  # |ab| <= 2^62: exact in int64
    # The C code's nudge-then-truncate equals floor((ab + 2^30) / 2^31) for both signs: for ab < 0,
    # trunc((ab + 1 - 2^30) / 2^31) = floor((ab + 1 - 2^30 + 2^31 - 1) / 2^31) since the numerator is < 0.
    # Only INT32_MIN * INT32_MIN gives 2^31; every other product stays <= INT32_MAX, so the saturation
    # is a minimum.
    return np.minimum((ab + (1 << 30)) >> 31, INT32_MAX)


def rounding_divide_by_pot(x, exponent) -> np.ndarray:
    """gemmlowp RoundingDivideByPOT: x / 2^exponent rounded to nearest, ties away from zero.

    x: int32 values; exponent: in [0, 31], scalar or broadcast with x. Returns int64 holding int32 values.
    """
    x, exponent = as_int64(x), as_int64(exponent)
    if exponent.size and (exponent.min() < 0 or exponent.max() > 31):
        raise ValueError(f"exponent must be in [0, 31], got range [{exponent.min()}, {exponent.max()}]")
    mask = np.left_shift(np.int64(1), exponent) - 1
    remainder = x & mask  # low bits of the two's-complement value, as in int32
    threshold = (mask >> 1) + (x < 0).astype(np.int64)
    return (x >> exponent) + (remainder > threshold).astype(np.int64)


def multiply_by_quantized_multiplier(x, multiplier, shift) -> np.ndarray:
    """TFLite MultiplyByQuantizedMultiplier(int32_t x, int32_t multiplier, int shift), double rounding.

    x * multiplier * 2^(shift - 31): a left shift by max(shift, 0) (int32, wrapping like the C code if it
    overflows), then SaturatingRoundingDoublingHighMul, then RoundingDivideByPOT by max(-shift, 0).
    x: int32 values; multiplier: fixed point at bit 31; shift in [-31, 30]; per-channel arrays broadcast.
    Returns int64 holding int32 values.
    """
    x, multiplier, shift = as_int64(x), as_int64(multiplier), as_int64(shift)
    _check_int32(x, "x")
    left_shift = np.maximum(shift, 0)
    right_shift = np.maximum(-shift, 0)
    shifted = wrap_int32(x << left_shift)
    return rounding_divide_by_pot(saturating_rounding_doubling_high_mul(shifted, multiplier), right_shift)


ACC64_BOUND = 1 << 47  # TFLite's int64 MultiplyByQuantizedMultiplier asserts -2^47 <= x < 2^47


def multiply_by_quantized_multiplier_s64(acc_i64, multiplier, shift) -> np.ndarray:
    """TFLite MultiplyByQuantizedMultiplier(int64_t x, int32_t multiplier, int shift), double-rounding build.

    The multiplier is first rounded to 15 fractional bits (``(multiplier + 2^15) >> 16``, or 0x7FFF if
    that would reach 2^15), then x * reduced + 2^(14 - shift) is shifted right by 15 - shift: one rounding,
    ties toward +infinity. The int64 -> int32 cast of the C code wraps. acc_i64 in [-2^47, 2^47);
    multiplier >= 0; shift in [-31, 7]. Returns int64 holding int32 values.
    """
    acc, multiplier, shift = as_int64(acc_i64), as_int64(multiplier), as_int64(shift)
    if acc.size and (acc.min() < -ACC64_BOUND or acc.max() >= ACC64_BOUND):
        raise ValueError(f"64-bit accumulator outside [-2^47, 2^47): range [{acc.min()}, {acc.max()}]")
    if multiplier.size and multiplier.min() < 0:
        raise ValueError("the 64-bit requantization takes a non-negative multiplier")
    if shift.size and (shift.min() < -31 or shift.max() > 7):
        raise ValueError(f"the 64-bit requantization takes a shift in [-31, 7], got [{shift.min()}, {shift.max()}]")
    reduced = np.where(multiplier < 0x7FFF0000, (multiplier + (1 << 15)) >> 16, 0x7FFF)
    total_shift = 15 - shift
    # |acc| < 2^47 and reduced <= 2^15: the product stays below 2^62.
    return wrap_int32((acc * reduced + np.left_shift(np.int64(1), total_shift - 1)) >> total_shift)


def rescale_smaller_than_one(x_i64, requant) -> np.ndarray:
    """MultiplyByQuantizedMultiplierSmallerThanOneExp: requant.shift <= 0, so no left shift; int32 values."""
    return rounding_divide_by_pot(saturating_rounding_doubling_high_mul(x_i64, requant.multiplier), -requant.shift)
