"""Compiled loops for the 16x8 plan: ADD, SUB and MUL, and the FULLY_CONNECTED output stage, one call each.

In NumPy an int16 ADD costs about a dozen whole-array passes (a table gather, the int64 product, two roundings,
the clamp, the cast), each a call writing a temporary; at a batch of 128 x 64 those passes were most of a
16x8 step. Numba compiles each op into a few loops over the elements: the table gathers, then the arithmetic
with every intermediate in a register (a loop LLVM vectorizes; a gather inside it measured 3x slower), then
the folded unary op's table. The arithmetic is ``int_gru_plan.requantize_bounded``'s, one element at a time:
int64 throughout, arithmetic right shifts, no float; its precondition is proved when the plan is built. The
FULLY_CONNECTED stage runs ``int_gru_plan._Float64Requant``'s float64 operations, in its order.
``tests/test_int_gru.py`` compares each loop with the specification kernels and the plan with the op-by-op
specification, element for element. ``benchmarks/step_profile.py`` on 128 x 64 (one process's share of the
speed benchmark): a 16x8 step 383 -> 160 us (427-450 -> 206-213 in a slower phase of the machine).

Each input of an ADD / SUB is given as values plus how to make its rescaled term:
- a table (int32 [65,536], indexed by the int16 value's bit pattern), or
- a shift (the term is ``v << shift``: the input of the larger scale), or
- neither: the values are the terms already (int32, computed ahead for a block of steps).
Numba compiles one specialization per combination (None-typed arguments make their branches constant), and
caches it on disk (``cache=True``): a new process loads it instead of compiling.
"""

from __future__ import annotations

import numba
import numpy as np


@numba.njit(inline="always")
def _gather(table, values):
    # table[values viewed as uint16], as its own loop (vectorized gathers).
    out = np.empty(values.size, np.int32)
    for i in range(values.size):
        out[i] = table[np.uint16(values[i])]
    return out


@numba.njit(inline="always")
def _term(values, gathered, table, shift, i):
    # Element i's rescaled term: gathered from its table, or shifted, or the value itself (held).
    if table is not None:
        return np.int64(gathered[i])
    if shift is not None:
        return np.int64(values[i]) << shift
    return np.int64(values[i])


@numba.njit(inline="always")
def _requantize_clamp(p, multiplier, right, lo, hi):
    # requantize_bounded(p, multiplier, -right) for |p| < 2^31, right >= 0, then the clamp to [lo, hi]:
    # SaturatingRoundingDoublingHighMul as floor((p m + 2^30) / 2^31), then RoundingDivideByPOT's
    # half-away rounding, [t < 0] written as -(t >> 63). For right = 0 the second step is the identity.
    t = (p * multiplier + (np.int64(1) << 30)) >> 31
    t = (t + ((np.int64(1) << right) >> 1) + (t >> 63) * (right > 0)) >> right
    return min(max(t, lo), hi)


@numba.njit(nogil=True, cache=True)
def add_sub_s16(a, a_table, a_shift, b, b_table, b_shift, b_sign, multiplier, right, lo, hi, zero_point, lut, out):
    """out = clamp(requantize(term_a + b_sign term_b), lo, hi) + zero_point, or ``lut`` of that (a folded
    LOGISTIC / TANH, indexed like a table), element for element.

    a, b: int16 values, or int32 terms (table and shift None), of out's shape (C-contiguous is fastest: others
    are copied); b_sign 1 (ADD) or -1 (SUB); multiplier < 2^31 and right >= 0 the output rescale; lut: int16
    [65,536] or None; out: C-contiguous int16."""
    a, b, o = a.ravel(), b.ravel(), out.ravel()
    a_terms = _gather(a_table, a) if a_table is not None else np.empty(0, np.int32)
    b_terms = _gather(b_table, b) if b_table is not None else np.empty(0, np.int32)
    y = np.empty(o.size, np.int16) if lut is not None else o
    for i in range(o.size):
        s = _term(a, a_terms, a_table, a_shift, i) + b_sign * _term(b, b_terms, b_table, b_shift, i)
        y[i] = _requantize_clamp(s, multiplier, right, lo, hi) + zero_point
    if lut is not None:
        for i in range(o.size):
            o[i] = lut[np.uint16(y[i])]
    return out


@numba.njit(nogil=True, cache=True)
def mul_s16(a, b, multiplier, right, lo, hi, zero_point, out):
    """out = clamp(requantize(a b), lo, hi) + zero_point: int16 MUL with zero input points (|a b| <= 2^30).

    a, b: int16 of out's shape (C-contiguous is fastest: others are copied); out: C-contiguous int16."""
    a, b, o = a.ravel(), b.ravel(), out.ravel()
    for i in range(o.size):
        o[i] = _requantize_clamp(np.int64(a[i]) * np.int64(b[i]), multiplier, right, lo, hi) + zero_point
    return out


@numba.njit(nogil=True, cache=True)
def requantize_fc_s16(acc, scale, offset, zero_point, qmin, qmax, out):
    """int_gru_plan._Float64Requant for stacked FULLY_CONNECTED outputs, written op by op.

    acc: float64 [rows, blocks x width] integer products; scale, offset, zero_point: float64 [blocks x width];
    out: int16 [blocks, rows, width], block k the output of the k-th stacked op (C-contiguous each, as the
    loops above read them). The float64 operations are those of _Float64Requant, in its order (exact, by the
    bound checked when the plan is built)."""
    blocks, rows, width = out.shape
    for k in range(blocks):
        for i in range(rows):
            for j in range(width):
                c = k * width + j
                v = np.floor(acc[i, c] * scale[c] + offset[c]) + zero_point[c]
                out[k, i, j] = min(max(v, qmin), qmax)
    return out
