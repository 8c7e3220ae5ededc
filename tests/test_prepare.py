"""The Prepare side (grukit.quantize.prepare) against hand-worked values and exact rational references.

Each expected value in the tables is worked out from TFLite-Micro's formulas by hand (comment per row);
the property tests check QuantizeMultiplier's result against the real value with fractions.Fraction.
"""

import math
from fractions import Fraction

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from grukit.core.errors import BadInputError, UnsupportedModelError
from grukit.core.quantized import bias_scales
from grukit.quantize import prepare as P
from grukit.core.qparams import QParams, Requant


def Q8(scale, zp=0):
    return QParams(scale, zp, "int8")


def Q16(scale):
    return QParams(scale, 0, "int16")


# ---- QuantizeMultiplier --------------------------------------------------------------------------------

@pytest.mark.parametrize("real, expected", [
    (0.0, (0, 0)),  # zero: multiplier 0, shift 0
    (0.5, (2**30, 0)),  # frexp(0.5) = (0.5, 0)
    (1.0, (2**30, 1)),  # frexp(1) = (0.5, 1)
    (0.75, (3 * 2**29, 0)),
    (2.0**-31, (2**30, -30)),  # frexp = (0.5, -30)
    (2.0**-32, (2**30, -31)),  # the smallest shift kept
    (2.0**-33, (0, 0)),  # shift -32 < -31: flushed to zero
    (0.5 + 2.0**-32, (2**30 + 1, 0)),  # q * 2^31 = 2^30 + 0.5: rounds half away from zero, up
    (0.5 + 2.0**-33, (2**30, 0)),  # 2^30 + 0.25 rounds down
    (1 - 2.0**-40, (2**30, 1)),  # q * 2^31 rounds up to 2^31: halved, shift + 1
    (2.0**29, (2**30, 30)),  # the largest shift kept
])
def test_quantize_multiplier_table(real, expected):
    assert P.quantize_multiplier(real) == Requant(*expected)


@pytest.mark.parametrize("real", [2.0**30, -0.5, math.inf, math.nan])
def test_quantize_multiplier_rejects(real):
    with pytest.raises(UnsupportedModelError):
        P.quantize_multiplier(real)


@settings(max_examples=500, deadline=None)
@given(st.floats(min_value=2.0**-31, max_value=2.0**29, allow_nan=False, allow_infinity=False))
def test_quantize_multiplier_is_the_nearest_31_bit_fraction(real):
    r = P.quantize_multiplier(real)
    assert 2**30 <= r.multiplier <= 2**31 - 1
    represented = Fraction(r.multiplier) * Fraction(2) ** (r.shift - 31)
    # Rounded to nearest at bit 31 of the fraction: error at most half a unit, 2^(shift - 32).
    assert abs(represented - Fraction(real)) <= Fraction(2) ** (r.shift - 32)


@pytest.mark.parametrize("real", [0.0, 1.0, 1.5, 1 - 2.0**-40])
def test_quantize_multiplier_smaller_than_one_exp_rejects(real):
    # TFLM CHECKs 0 < real < 1 and shift <= 0; 1 - 2^-40 rounds up to 1 (shift 1).
    with pytest.raises(UnsupportedModelError):
        P.quantize_multiplier_smaller_than_one_exp(real)


# ---- FULLY_CONNECTED -----------------------------------------------------------------------------------

def test_prepare_fully_connected_hand():
    params = P.prepare_fully_connected(Q8(0.5, 3), np.array([0.25, 0.125], np.float32), Q8(1.0, -7))
    # 0.5 * 0.25 / 1 = 2^-3 -> (2^30, -2); 0.5 * 0.125 = 2^-4 -> (2^30, -3)
    assert params.output_requants == (Requant(2**30, -2), Requant(2**30, -3))
    assert list(params.output_multiplier) == [2**30, 2**30] and list(params.output_shift) == [-2, -3]
    assert (params.input_zero_point, params.output_zero_point, params.qmin, params.qmax) == (3, -7, -128, 127)


def test_prepare_fully_connected_uses_float32_scales_in_double():
    # 0.1 is stored as float32 0.100000001490116...; the product is formed from those float32 values.
    params = P.prepare_fully_connected(Q8(0.1), np.array([0.1], np.float32), Q8(0.1))
    expected = Fraction(float(np.float32(0.1)))  # s_in * s_w / s_out = s_w when s_in = s_out
    r = params.output_requants[0]
    assert abs(Fraction(r.multiplier) * Fraction(2) ** (r.shift - 31) - expected) <= Fraction(2) ** (r.shift - 32)


def test_prepare_fully_connected_16x8_rejects_large_shift():
    # 1 * 1 / 2^-10 = 2^10: shift 11 > 7, outside the 64-bit requantization's contract
    with pytest.raises(UnsupportedModelError, match="shift 11"):
        P.prepare_fully_connected(Q16(1.0), np.array([1.0], np.float32), Q16(2**-10))


def test_prepare_fully_connected_rejects_mixed_types():
    with pytest.raises(UnsupportedModelError, match="one type"):
        P.prepare_fully_connected(Q8(0.5), np.array([0.5], np.float32), Q16(0.5))


# ---- ADD, SUB, MUL -------------------------------------------------------------------------------------

def test_prepare_add_hand():
    params = P.prepare_add(Q8(0.5, 1), Q8(0.25, 2), Q8(1.0, 3))
    # twice_max = 1.0: input1 0.5 -> (2^30, 0); input2 0.25 -> (2^30, -1); output 1 / (2^20 * 1) = 2^-20
    # -> frexp (0.5, -19) -> (2^30, -19)
    assert (params.input1, params.input2, params.output) == (Requant(2**30, 0), Requant(2**30, -1),
                                                              Requant(2**30, -19))
    assert (params.left_shift, params.input1_zero_point, params.input2_zero_point, params.output_zero_point) == (
        20, 1, 2, 3)


def test_prepare_add_int16_left_shift_is_15():
    params = P.prepare_add(Q16(2**-15), Q16(2**-15), Q16(2**-15))
    # output 2 * 2^-15 / (2^15 * 2^-15) = 2^-14 -> (2^30, -13)
    assert params.left_shift == 15 and params.output == Requant(2**30, -13)


def test_prepare_add_rejects_too_fine_output():
    # output multiplier 2 * 0.5 / (2^20 * 2^-21) = 2 >= 1: TFLM's QuantizeMultiplierSmallerThanOneExp aborts
    with pytest.raises(UnsupportedModelError):
        P.prepare_add(Q8(0.5), Q8(0.5), Q8(2.0**-21))


def _represented(r: Requant) -> Fraction:
    return Fraction(r.multiplier) * Fraction(2) ** (r.shift - 31)


def test_prepare_sub_matches_add_in_double():
    # TFLM source trees up to mid 2026 computed SUB's ratios in float32; the tflite-micro wheel we verify
    # against computes them in double, like ADD (checked through its interpreter: the float32 multipliers
    # give different outputs on these scales).
    s1, s2, s_out = 0.1, 0.3, 0.7
    add = P.prepare_add(Q8(s1), Q8(s2), Q8(s_out))
    sub = P.prepare_sub(Q8(s1), Q8(s2), Q8(s_out))
    assert (sub.op, sub.input1, sub.input2, sub.output) == ("SUB", add.input1, add.input2, add.output)
    f1, f2 = Fraction(float(np.float32(s1))), Fraction(float(np.float32(s2)))
    # the double quotient s1 / (2 s2) rounded to 31 bits: 1431655730, not the float32 value's 1431655680
    assert abs(_represented(sub.input1) - f1 / (2 * f2)) <= Fraction(2) ** (sub.input1.shift - 32)
    assert sub.input1 == Requant(1431655730, -2)


def test_prepare_mul_hand():
    # 0.5 * 0.5 / 0.25 = 1.0 -> (2^30, 1); 0.5 * 0.5 / 0.5 = 0.5 -> (2^30, 0)
    assert P.prepare_mul(Q8(0.5, 1), Q8(0.5, -2), Q8(0.25, 4)).output == Requant(2**30, 1)
    assert P.prepare_mul(Q16(0.5), Q16(0.5), Q16(0.5)).output == Requant(2**30, 0)


# ---- LOGISTIC, TANH ------------------------------------------------------------------------------------

def test_output_qparams_fixed_by_tflm():
    assert P.logistic_output_qparams("int8") == QParams(1 / 256, -128, "int8")
    assert P.tanh_output_qparams("int8") == QParams(1 / 128, 0, "int8")
    assert P.logistic_output_qparams("int16") == QParams(1 / 32768, 0, "int16")
    assert P.tanh_output_qparams("int16") == QParams(1 / 32768, 0, "int16")


@pytest.mark.parametrize("scale, multiplier, left_shift, radius", [
    (1 / 16, 2**30, 24, 120),  # 2^-4 * 2^27 = 2^23 = 0.5 * 2^24; radius floor(15 * 2^27 / 2^24) = 120
    (1 / 8, 2**30, 25, 60),  # 2^24 = 0.5 * 2^25; radius 15 * 2^27 / 2^25 = 60
    (0.75, 3 * 2**29, 27, 15),  # 0.75 * 2^27 = 0.75 * 2^27; radius 15 * 2^27 / 2^27 = 15
    (0.1, 1717986944, 24, 120),  # float32(0.1) * 2^27 = 0.8000000119 * 2^24; q * 2^31 = 1717986944 exactly
])
def test_prepare_activation_s8_hand(scale, multiplier, left_shift, radius):
    for prepare, out in ((P.prepare_logistic, P.logistic_output_qparams), (P.prepare_tanh, P.tanh_output_qparams)):
        p = prepare(Q8(scale, 9), out("int8"))
        assert (p.input_multiplier, p.input_left_shift, p.input_range_radius, p.input_zero_point) == (
            multiplier, left_shift, radius, 9)


@pytest.mark.parametrize("op, scale, multiplier, left_shift", [
    ("LOGISTIC", 2**-12, 0, 0),  # power of two with left shift 12 - 12 = 0: the kernel's x * 3 shortcut
    ("LOGISTIC", 2**-11, 24576, 12),  # shift 1 is not a shortcut for LOGISTIC: 2^-11 * 12288 = 6, * 2^12
    ("TANH", 2**-11, 0, 1),  # TANH takes the shortcut for left shift 1 too (x * 6)
    ("TANH", 2**-10, 24576, 11),  # 2^-10 * 12288 = 12, doubled while <= 16383.5: 12 * 2^11 = 24576
    ("TANH", 1e-4, 20132, 14),  # float32(1e-4) * 12288 = 1.22879997; * 2^14 = 20132.66 -> truncated
    ("LOGISTIC", 2**-12 * 1.0005, 0, 0),  # log2 is within 1e-3 of -12: treated as exactly 2^-12 (as TFLM)
])
def test_prepare_activation_s16_hand(op, scale, multiplier, left_shift):
    prepare = P.prepare_logistic if op == "LOGISTIC" else P.prepare_tanh
    out = P.logistic_output_qparams if op == "LOGISTIC" else P.tanh_output_qparams
    p = prepare(Q16(scale), out("int16"))
    assert (p.op, p.input_multiplier, p.input_left_shift) == (op, multiplier, left_shift)


@pytest.mark.parametrize("x, expected", [
    (2.0**-12, (True, -12)),
    (2.0**-15, (True, -15)),
    (2.0**-12 * 1.0005, (True, -12)),  # log2 1.0005 = 0.00072 < 1e-3
    (2.0**-12 * 1.002, (False, -12)),  # log2 1.002 = 0.0029
    (3.0, (False, 2)),  # log2 3 = 1.585 rounds to 2
    (1e-4, (False, -13)),  # log2 1e-4 = -13.29
])
def test_checked_log2(x, expected):
    assert P.checked_log2(x) == expected


def test_prepare_activation_rejects_other_output_quantization():
    with pytest.raises(UnsupportedModelError, match="LOGISTIC"):
        P.prepare_logistic(Q8(0.1), Q8(1 / 256, 0))  # TFLM requires zp -128
    with pytest.raises(UnsupportedModelError, match="TANH"):
        P.prepare_tanh(Q16(2**-12), Q16(2**-14))  # TFLM requires 2^-15
    with pytest.raises(UnsupportedModelError, match="one type"):
        P.prepare_tanh(Q8(0.1), P.tanh_output_qparams("int16"))


def test_prepare_activation_s8_rejects_extreme_input_scale():
    with pytest.raises(UnsupportedModelError):
        P.prepare_logistic(Q8(16.0), P.logistic_output_qparams("int8"))  # left shift 32


# ---- weights and biases --------------------------------------------------------------------------------

def test_quantize_weights_per_channel_hand():
    w = np.array([[127.0, -0.5, 2.5, -1.5, 0.49],  # max 127: scale 1.0
                  [0.0, 0.0, 0.0, 0.0, 0.0],  # all zero: scale 1.0, all zero
                  [-2.0, 1.0, 0.0, 0.0, 0.0]], np.float32)  # max 2: scale float32(2 / 127)
    w_q, scales = P.quantize_weights_per_channel(w)
    assert scales.dtype == np.float32 and w_q.dtype == np.int8
    assert list(scales[:2]) == [1.0, 1.0] and scales[2] == np.float32(2 / 127)
    # -0.5 -> -1 and 2.5 -> 3 (half away from zero, not half even); -1.5 -> -2; 0.49 -> 0;
    # row 2: 1 / (2/127) would be the tie 63.5, but the float32 scale decides: float32(2/127) =
    # 0.0157480314373970 is below 2/127 = 0.0157480314960630, so 1 / scale = 63.5000002 -> 64
    assert w_q.tolist() == [[127, -1, 3, -2, 0], [0, 0, 0, 0, 0], [-127, 64, 0, 0, 0]]


def test_quantize_weights_range_is_symmetric(rng):
    w_q, _ = P.quantize_weights_per_channel(rng.normal(size=(16, 32)))
    assert w_q.min() >= -127 and w_q.max() <= 127
    assert np.all(np.abs(w_q).max(axis=1) == 127)  # each row's largest weight maps to +-127


def test_quantize_weights_rejects_bad_input():
    with pytest.raises(BadInputError):
        P.quantize_weights_per_channel(np.array([1.0, 2.0]))
    with pytest.raises(BadInputError):
        P.quantize_weights_per_channel(np.array([[1.0, np.nan]]))


def test_quantize_bias_hand():
    # accumulator scale 0.5 * 0.25 = 0.125: 0.0625 -> 0.5 -> 1, -0.1875 -> -1.5 -> -2 (half away from zero)
    b = P.quantize_bias(np.array([0.0625, -0.1875]), 0.5, np.array([0.25] * 2, np.float32), np.int32)
    assert b.dtype == np.int32 and b.tolist() == [1, -2]
    b64 = P.quantize_bias(np.array([1e12]), 0.5, np.array([0.25], np.float32), np.int64)
    assert b64.dtype == np.int64 and b64.tolist() == [8 * 10**12]  # 1e12 / 0.125 = 8e12, fits int64's 2^47
    # Beyond the range: refused, never saturated (1e12 / 0.125 > 2^31 - 1; -1e30 / 0.125 < -(2^47 - 1)).
    with pytest.raises(UnsupportedModelError, match="channel 0"):
        P.quantize_bias(np.array([1e12]), 0.5, np.array([0.25], np.float32), np.int32)
    with pytest.raises(UnsupportedModelError, match="channel 0"):
        P.quantize_bias(np.array([-1e30]), 0.5, np.array([0.25], np.float32), np.int64)


def test_bias_scales_are_float32_products():
    s = bias_scales(0.1, np.array([0.3], np.float32))
    assert s.dtype == np.float32 and s[0] == np.float32(float(np.float32(0.1)) * float(np.float32(0.3)))


def test_quantize_bias_rejects_other_dtypes():
    with pytest.raises(UnsupportedModelError, match="int16"):
        P.quantize_bias(np.zeros(1), 0.5, np.ones(1, np.float32), np.int16)
