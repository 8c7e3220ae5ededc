"""Integer kernels of grukit.core.ops_int against hand-worked tables and independent exact references.

The references here restate TFLite's rounding rules in rational arithmetic (fractions.Fraction, Python
ints): SaturatingRoundingDoublingHighMul = a * b / 2^31 rounded to nearest with ties toward +infinity,
RoundingDivideByPOT = x / 2^e rounded with ties away from zero. They share no code with the kernels.
Bit-exactness against TFLite-Micro itself is checked op by op through its interpreter (the writer's tests).
"""

import math
from fractions import Fraction

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from grukit.core.errors import UnsupportedModelError
from grukit.quantize import prepare as P
from grukit.core.qparams import QParams, Requant
from grukit.core import ops_int as K
from grukit.verify import assert_identical
from grukit.core import fixedpoint as F

INT32_MIN, INT32_MAX = -(2**31), 2**31 - 1
HALF = Fraction(1, 2)


# ---- independent exact references ---------------------------------------------------------------------

def ref_srdhm(a: int, b: int) -> int:
    if a == b == INT32_MIN:
        return INT32_MAX
    return math.floor(Fraction(a * b, 2**31) + HALF)  # ties toward +infinity


def ref_rdbpot(x: int, e: int) -> int:
    magnitude = math.floor(abs(Fraction(x, 2**e)) + HALF)  # ties away from zero
    return magnitude if x >= 0 else -magnitude


def ref_mbqm(x: int, m: int, s: int) -> int:
    return ref_rdbpot(ref_srdhm(x * 2 ** max(s, 0), m), max(-s, 0))


def ref_mbqm_i64(x: int, m: int, s: int) -> int:
    reduced = min((m + 2**15) // 2**16, 0x7FFF)  # the multiplier rounded to 15 fractional bits, capped
    return math.floor(Fraction(x * reduced, 2 ** (15 - s)) + HALF)


# ---- round_half_away ------------------------------------------------------------------------------------

@pytest.mark.parametrize("x, expected", [
    (0.5, 1.0),    # half: away from zero (np.rint would give 0)
    (-0.5, -1.0),  # negative half: away from zero
    (2.5, 3.0),    # half-even would give 2
    (-2.5, -3.0),
    (0.49999999999999994, 0.0),  # largest double below 1/2: floor(x + 0.5) would wrongly give 1
    (1.4999999, 1.0),
    (-7.0, -7.0),  # integers unchanged
    (2.0**53 + 2, 2.0**53 + 2),  # beyond 2^52 every double is an integer
])
def test_round_half_away(x, expected):
    assert F.round_half_away(x) == expected


# ---- SaturatingRoundingDoublingHighMul, RoundingDivideByPOT -------------------------------------------

@pytest.mark.parametrize("a, b, expected", [
    (INT32_MIN, INT32_MIN, INT32_MAX),  # (-1) * (-1) = +1 is not representable: saturates
    (INT32_MIN, INT32_MAX, -(2**31 - 1)),  # -1 * (1 - 2^-31) = -(2^31 - 1) / 2^31 exactly
    (2**30, 2**30, 2**29),  # 0.5 * 0.5 = 0.25
    (1, 2**30, 1),  # 2^30 / 2^31 = 0.5: tie rounds up to 1
    (-1, 2**30, 0),  # -0.5: tie rounds toward +infinity, to 0
    (3, 2**30, 2),  # 1.5 -> 2
    (-3, 2**30, -1),  # -1.5 -> -1 (toward +infinity)
    (5, -(2**30), -2),  # -2.5 -> -2
    (0, INT32_MIN, 0),
])
def test_saturating_rounding_doubling_high_mul(a, b, expected):
    assert F.saturating_rounding_doubling_high_mul(a, b) == expected


@pytest.mark.parametrize("x, e, expected", [
    (5, 1, 3),  # 2.5 -> 3: tie away from zero
    (-5, 1, -3),  # -2.5 -> -3: tie away from zero
    (3, 1, 2),  # 1.5 -> 2
    (-3, 1, -2),  # -1.5 -> -2
    (7, 2, 2),  # 1.75 -> 2
    (-6, 2, -2),  # -1.5 -> -2
    (-5, 2, -1),  # -1.25 -> -1
    (123, 0, 123),  # exponent 0 is the identity
    (INT32_MIN, 31, -1),  # -2^31 / 2^31 = -1 exactly
    (INT32_MAX, 31, 1),  # (2^31 - 1) / 2^31 -> 1
    (-(2**30), 31, -1),  # -0.5 -> -1 (away from zero)
])
def test_rounding_divide_by_pot(x, e, expected):
    assert F.rounding_divide_by_pot(x, e) == expected


# ---- MultiplyByQuantizedMultiplier (int32, double rounding) --------------------------------------------

@pytest.mark.parametrize("x, m, s, expected", [
    (100, 2**30, 0, 50),  # x * 0.5
    (3, 2**30, 0, 2),  # 1.5 -> 2 in the high mul
    (-3, 2**30, 0, -1),  # -1.5 -> -1: the high mul rounds ties toward +infinity
    (3, 2**30, 1, 3),  # x * 1.0: left shift 1, then * 0.5
    (-7, 2**30, -1, -2),  # -7 * 0.25: high mul -3.5 -> -3, then -3 / 2 = -1.5 -> -2 (away from zero)
    (1, 2**31 - 1, -1, 1),  # double rounding: 1 * 0.4999999998 -> high mul 1, then 1/2 -> 1 (exact: 0)
    (-1, 2**31 - 1, -1, -1),  # and symmetric: -1 / 2 -> -1
    (INT32_MIN, INT32_MIN, 0, INT32_MAX),  # the high mul saturates -1 * -1
    (2**30, 2**30, 1, -(2**30)),  # 2^30 << 1 overflows int32 and wraps to -2^31, as the C code does
    (12345, 0, -5, 0),  # multiplier 0 (QuantizeMultiplier's flush to zero)
])
def test_multiply_by_quantized_multiplier_table(x, m, s, expected):
    assert F.multiply_by_quantized_multiplier(x, m, s) == expected


def test_multiply_by_quantized_multiplier_broadcasts_per_channel():
    x = np.array([[10, 10, 10], [-10, -10, -10]], np.int32)
    m = np.array([2**30, 2**30, 3 * 2**29])  # 0.5, 0.5, 0.75 (times 2^shift)
    s = np.array([0, -1, 1])  # 0.5, 0.25, 1.5
    assert_identical(F.multiply_by_quantized_multiplier(x, m, s), [[5, 3, 15], [-5, -3, -15]], "mbqm broadcast")
    # 10 * 0.25 = 2.5 -> 3 and -2.5 -> -3: ties away from zero in the final shift


@st.composite
def mbqm_args(draw):
    shift = draw(st.integers(-31, 30))
    multiplier = draw(st.integers(2**30, 2**31 - 1))
    bound = 2 ** (31 - max(shift, 0))  # keep x << shift inside int32 (no wrap)
    x = draw(st.integers(-bound, bound - 1))
    return x, multiplier, shift


@settings(max_examples=400, deadline=None)
@given(mbqm_args())
def test_multiply_by_quantized_multiplier_matches_rational_reference(args):
    x, m, s = args
    got = int(F.multiply_by_quantized_multiplier(x, m, s))
    assert got == ref_mbqm(x, m, s)
    # Two roundings, each at most half a unit of its own scale: the total error is below 1.
    assert abs(Fraction(got) - Fraction(x * m) * Fraction(2) ** (s - 31)) < 1


@pytest.mark.parametrize("x, m, s, expected", [
    (2**20, 2**30, 0, 2**19),  # reduced multiplier (2^30 + 2^15) >> 16 = 2^14: x * 0.5 exact
    (1, 2**30, 0, 1),  # 0.5: single rounding, tie toward +infinity
    (-1, 2**30, 0, 0),  # -0.5 -> 0
    (-502, 2**30, -1, -125),  # -502 / 4 = -125.5 -> -125 (RoundingDivideByPOT would give -126)
    (2**15, 2**31 - 1, 0, 32767),  # multiplier >= 0x7FFF0000 is capped to 0x7FFF: 2^15 * 32767 / 2^15
    (2**15, 0x7FFEFFFF, 0, 32767),  # just below the cap: (0x7FFEFFFF + 2^15) >> 16 = 0x7FFF
    (2**32 + 2, 2**30, 1, 2),  # x * 1.0 = 2^32 + 2: the C int64 -> int32 conversion keeps the low 32 bits
])
def test_multiply_by_quantized_multiplier_s64_table(x, m, s, expected):
    assert F.multiply_by_quantized_multiplier_s64(x, m, s) == expected


def test_multiply_by_quantized_multiplier_s64_rejects_out_of_contract():
    with pytest.raises(ValueError, match="2\\^47"):
        F.multiply_by_quantized_multiplier_s64(2**47, 2**30, 0)
    with pytest.raises(ValueError, match="shift"):
        F.multiply_by_quantized_multiplier_s64(1, 2**30, 8)


@st.composite
def mbqm_i64_args(draw):
    shift = draw(st.integers(-31, 7))
    multiplier = draw(st.integers(2**30, 2**31 - 1))
    bound = min(2**46, 2 ** (30 - shift))  # inside TFLM's contract: |x| < 2^47 and the result fits int32
    return draw(st.integers(-bound, bound)), multiplier, shift


@settings(max_examples=300, deadline=None)
@given(mbqm_i64_args())
def test_multiply_by_quantized_multiplier_s64_matches_rational_reference(args):
    x, m, s = args
    assert int(F.multiply_by_quantized_multiplier_s64(x, m, s)) == ref_mbqm_i64(x, m, s)


# ---- FULLY_CONNECTED -----------------------------------------------------------------------------------

def fc_params(dtype, requants, in_zp=0, out_zp=0):
    return P.FullyConnectedParams(dtype, in_zp, out_zp, tuple(Requant(m, s) for m, s in requants))


@pytest.mark.parametrize("K_depth", [1, 4096])
@pytest.mark.parametrize("dtype, x_offset, w", [
    ("int8", -255, -128),  # x = -128 with zp 127, weight -128: the largest product, 32640
    ("int8", 255, -128),  # x = 127 with zp -128: the largest negative product
    ("int16", -32768, -128),  # 2^22 per product
    ("int16", -32768, 127),
])
def test_dot_exact_at_worst_case_magnitudes(dtype, x_offset, w, K_depth):
    """The float64 matmul equals the int64 dot product when every term is at its largest magnitude."""
    x_off = np.full((2, K_depth), x_offset, np.int64)
    w_q = np.full((3, K_depth), w, np.int8)
    expected = np.full((2, 3), x_offset * w * K_depth, np.int64)  # exact Python-int arithmetic
    assert_identical(K.dot_exact_s64(x_off, w_q, dtype), expected, "worst-case dot")


def test_dot_exact_random_signs_against_int64_matmul(rng):
    x_off = rng.choice([-32768, 32767, -1, 0], size=(5, 3000)).astype(np.int64)
    w_q = rng.choice([-128, 127, 1], size=(7, 3000)).astype(np.int8)
    expected = np.einsum("nk,ok->no", x_off, w_q.astype(np.int64))  # integer einsum: no float
    assert_identical(K.dot_exact_s64(x_off, w_q, "int16"), expected, "int16 dot")


def test_dot_exact_bounds_are_the_documented_ones():
    # 2^53 / (255 * 128) and 2^53 / (2^15 * 128), floored
    assert K.MAX_K == {"int8": 275_955_859_520, "int16": 2_147_483_648}


def test_fully_connected_s8_hand_table():
    x = np.array([[1, 2], [-3, 0]], np.int8)  # zp 0
    w = np.array([[1, 1], [2, -1]], np.int8)
    bias = np.array([0, 1], np.int32)
    params = fc_params("int8", [(2**30, 0), (2**30, 0)])  # both channels * 0.5
    # acc row 0: [3, 0 + 1] -> [1.5, 0.5] -> [2, 1]; row 1: [-3, -6 + 1] -> [-1.5, -2.5] -> [-1, -2]
    # (ties toward +infinity in the high mul: -1.5 -> -1, -2.5 -> -2)
    assert_identical(K.fully_connected_s8(x, w, bias, params), [[2, 1], [-1, -2]], "fc s8")


def test_fully_connected_s8_zero_points_and_saturation():
    x = np.array([[10, -128]], np.int8)
    w = np.array([[127, 0], [-127, 0]], np.int8)
    params = fc_params("int8", [(2**30, 1), (2**30, 1)], in_zp=-128, out_zp=5)  # * 1.0
    # x - zp = [138, 0]; acc = [17526, -17526]; + 5 -> saturates to [127, -128]
    assert_identical(K.fully_connected_s8(x, w, None, params), [[127, -128]], "fc s8 saturation")


def ref_fully_connected(x, w, bias, params, acc_requant):
    """Python-int loops: TFLM's FullyConnectedPerChannel written out with the rational references."""
    out = np.zeros((x.shape[0], w.shape[0]), np.int64)
    for n in range(x.shape[0]):
        for o in range(w.shape[0]):
            acc = sum(int(w[o, k]) * (int(x[n, k]) - params.input_zero_point) for k in range(x.shape[1]))
            acc += 0 if bias is None else int(bias[o])
            r = params.output_requants[o]
            y = acc_requant(acc, r.multiplier, r.shift) + params.output_zero_point
            out[n, o] = min(max(y, params.qmin), params.qmax)
    return out


def test_fully_connected_s8_against_loop_reference(rng):
    for trial in range(10):
        N, K_depth, O = rng.integers(1, 5), rng.integers(1, 40), rng.integers(1, 9)
        x = rng.integers(-128, 128, (N, K_depth)).astype(np.int8)
        w = rng.integers(-127, 128, (O, K_depth)).astype(np.int8)
        bias = rng.integers(-5000, 5000, O).astype(np.int32) if trial % 2 else None
        requants = [(int(m), int(s)) for m, s in zip(rng.integers(2**30, 2**31, O), rng.integers(-14, -4, O))]
        params = fc_params("int8", requants, in_zp=int(rng.integers(-128, 128)), out_zp=int(rng.integers(-128, 128)))
        assert_identical(K.fully_connected_s8(x, w, bias, params), ref_fully_connected(x, w, bias, params, ref_mbqm),
                     f"fc s8 trial {trial}")


def test_fully_connected_s16_against_loop_reference(rng):
    for trial in range(10):
        N, K_depth, O = rng.integers(1, 5), rng.integers(1, 40), rng.integers(1, 9)
        x = rng.integers(-32768, 32768, (N, K_depth)).astype(np.int16)
        w = rng.integers(-127, 128, (O, K_depth)).astype(np.int8)
        bias = rng.integers(-(2**33), 2**33, O).astype(np.int64) if trial % 2 else None
        requants = [(int(m), int(s)) for m, s in zip(rng.integers(2**30, 2**31, O), rng.integers(-24, -12, O))]
        params = fc_params("int16", requants)
        assert_identical(K.fully_connected_s16(x, w, bias, params), ref_fully_connected(x, w, bias, params, ref_mbqm_i64),
                     f"fc s16 trial {trial}")


def test_fully_connected_s16_hand_row():
    x = np.array([[1000, -1000]], np.int16)
    w = np.array([[1, 2]], np.int8)
    bias = np.array([498], np.int64)
    # acc = 1000 - 2000 + 498 = -502; * 0.25 = -125.5 -> -125 (64-bit path: single rounding toward +inf)
    assert_identical(K.fully_connected_s16(x, w, bias, fc_params("int16", [(2**30, -1)])), [[-125]], "fc s16")


def test_fully_connected_rejects_wrong_dtypes():
    params = fc_params("int8", [(2**30, 0)])
    with pytest.raises(ValueError, match="x_q must be int8"):
        K.fully_connected_s8(np.zeros((1, 2), np.int16), np.zeros((1, 2), np.int8), None, params)
    with pytest.raises(ValueError, match="bias must be int32"):
        K.fully_connected_s8(np.zeros((1, 2), np.int8), np.zeros((1, 2), np.int8), np.zeros(1, np.int64), params)
    with pytest.raises(ValueError, match="FullyConnectedParams"):
        K.fully_connected_s16(np.zeros((1, 2), np.int16), np.zeros((1, 2), np.int8), None, params)


# ---- ADD, SUB, MUL -------------------------------------------------------------------------------------

Q8 = lambda scale, zp=0: QParams(scale, zp, "int8")  # noqa: E731
Q16 = lambda scale: QParams(scale, 0, "int16")  # noqa: E731


@pytest.mark.parametrize("a, b, expected", [
    (3, 2, 3),  # 1.5 + 1.0 = 2.5 -> 3 (final RoundingDivideByPOT: ties away from zero)
    (-3, -2, -3),  # -2.5 -> -3
    (3, -2, 1),  # 0.5 -> 1
    (-3, 2, -1),  # -0.5 -> -1
    (127, 127, 127),  # 127 exactly
    (-128, -128, -128),
])
def test_add_s8_hand_table(a, b, expected):
    # scales 0.5, 0.5 -> out 1.0: input multipliers 0.5 (2^30, 0), output 2^-20 (2^30, -19), left shift 20.
    params = P.prepare_add(Q8(0.5), Q8(0.5), Q8(1.0))
    assert K.add_s8(np.array([a], np.int8), np.array([b], np.int8), params)[0] == expected


def test_add_s8_zero_points_and_saturation():
    params = P.prepare_add(Q8(0.5, 10), Q8(0.5, -10), Q8(0.5, 3))
    a = np.array([20, 127, -128], np.int8)
    b = np.array([-20, 127, -128], np.int8)
    # real a = 0.5 * (a - 10), real b = 0.5 * (b + 10); out q = a_real / 0.5 + b_real / 0.5 + 3
    # [10 + -10 + 3, 117 + 137 + 3 -> 127, -138 + -118 + 3 -> -128]
    assert_identical(K.add_s8(a, b, params), [3, 127, -128], "add s8")


@pytest.mark.parametrize("a, b, expected", [
    (3, -2, 3),  # 1.5 - (-1.0) = 2.5 -> 3
    (-3, 2, -3),  # -2.5 -> -3
    (5, 5, 0),
    (127, -128, 127),  # 127.5 -> saturates
])
def test_sub_s8_hand_table(a, b, expected):
    params = P.prepare_sub(Q8(0.5), Q8(0.5), Q8(1.0))
    assert K.sub_s8(np.array([a], np.int8), np.array([b], np.int8), params)[0] == expected


@pytest.mark.parametrize("a, b, expected", [
    (3, 2, 3),  # 2^-15 scales into 2^-14: (3 + 2) / 2 = 2.5 -> 3
    (-3, -2, -3),
    (32767, 32767, 32767),  # exact
    (-32768, -32768, -32768),
])
def test_add_s16_hand_table(a, b, expected):
    params = P.prepare_add(Q16(2**-15), Q16(2**-15), Q16(2**-14))
    assert K.add_s16(np.array([a], np.int16), np.array([b], np.int16), params)[0] == expected


def test_sub_s16_saturates():
    params = P.prepare_sub(Q16(2**-15), Q16(2**-15), Q16(2**-15))
    got = K.sub_s16(np.array([32767, -32768, 100], np.int16), np.array([-32768, 32767, 40], np.int16), params)
    assert_identical(got, [32767, -32768, 60], "sub s16")


@pytest.mark.parametrize("a, b, expected", [
    (3, -5, -15),  # 0.5 * 0.5 / 0.25 = 1.0: (2^30, shift 1), exact
    (127, 127, 127),  # 16129 saturates
    (-128, 127, -128),
])
def test_mul_s8_hand_table(a, b, expected):
    params = P.prepare_mul(Q8(0.5), Q8(0.5), Q8(0.25))
    assert K.mul_s8(np.array([a], np.int8), np.array([b], np.int8), params)[0] == expected


@pytest.mark.parametrize("a, b, expected", [
    (3, 1, 2),  # multiplier 0.5: 1.5 -> 2
    (-3, 1, -1),  # -1.5 -> -1: the high mul rounds ties toward +infinity (shift 0, no second rounding)
    (5, 3, 8),  # 7.5 -> 8
    (-5, 3, -7),  # -7.5 -> -7
])
def test_mul_s8_rounding(a, b, expected):
    params = P.prepare_mul(Q8(0.5), Q8(0.5), Q8(0.5))  # real multiplier 0.5 -> (2^30, 0)
    assert K.mul_s8(np.array([a], np.int8), np.array([b], np.int8), params)[0] == expected


def test_mul_s8_zero_points():
    params = P.prepare_mul(Q8(0.5, 1), Q8(0.5, -2), Q8(0.25, 4))
    # (4 - 1) * (-7 + 2) = -15, * 1.0, + 4 = -11
    assert K.mul_s8(np.array([4], np.int8), np.array([-7], np.int8), params)[0] == -11


def test_mul_s16_hand_rows():
    params = P.prepare_mul(Q16(2**-15), Q16(2**-15), Q16(2**-15))  # real 2^-15: (2^30, -14)
    a = np.array([-32768, 16384, -16384, 3], np.int16)
    b = np.array([-32768, 16384, 3, 1], np.int16)
    # 2^30 / 2^15 = 32768 -> saturates to 32767; 2^28 / 2^15 = 8192; -49152 / 2^15 = -1.5 -> -2 (the high
    # mul is exact here, the final shift rounds away from zero); 3 / 2^15 -> 0
    assert_identical(K.mul_s16(a, b, params), [32767, 8192, -2, 0], "mul s16")


@settings(max_examples=200, deadline=None)
@given(st.integers(-128, 127), st.integers(-128, 127), st.floats(1e-3, 1.0), st.floats(1e-3, 1.0),
       st.floats(1e-3, 1.0), st.integers(-128, 127), st.integers(-128, 127), st.integers(-128, 127))
def test_add_s8_matches_rational_reference(a, b, s1, s2, s_out, z1, z2, z_out):
    q1, q2, qo = Q8(s1, z1), Q8(s2, z2), Q8(s_out, z_out)
    try:
        params = P.prepare_add(q1, q2, qo)
    except UnsupportedModelError:
        return  # output scale too fine for TFLM's ADD (multiplier >= 1): rejected in Prepare
    scaled = [ref_rdbpot(ref_srdhm((v - z) * 2**20, r.multiplier), -r.shift)
              for v, z, r in ((a, z1, params.input1), (b, z2, params.input2))]
    y = ref_rdbpot(ref_srdhm(scaled[0] + scaled[1], params.output.multiplier), -params.output.shift) + z_out
    got = int(K.add_s8(np.array([a], np.int8), np.array([b], np.int8), params)[0])
    assert got == min(max(y, -128), 127)
    # and it is the sum to within one output step (2^-20 headroom makes the inner roundings negligible)
    exact = (Fraction(qo.zero_point) + (Fraction(q1.scale) * (a - z1) + Fraction(q2.scale) * (b - z2))
             / Fraction(qo.scale))
    assert -128 <= got <= 127 and (got in (-128, 127) or abs(got - exact) <= 1)


# ---- LOGISTIC, TANH ------------------------------------------------------------------------------------

# int8: gemmlowp's fixed-point exp and reciprocal err by < 2^-20, so the result is the correctly rounded
# float value except when that error flips a rounding at a half: 1 step.
ACT_S8_TOL_STEPS = 1
# int16: the sigmoid table (step 1/24, 16-bit entries) and its linear interpolation err by under 1 step of
# 2^-15 for the logistic; tanh = 2 sigmoid(2x) - 1 doubles that and the 15-bit input rescale adds one.
LOGISTIC_S16_TOL_STEPS = 1
TANH_S16_TOL_STEPS = 3

ALL_S8 = np.arange(-128, 128).astype(np.int8)
ALL_S16 = np.arange(-32768, 32768).astype(np.int16)


def sigmoid(x):
    return 0.5 * (1.0 + np.tanh(0.5 * x))


def act_s8(op, scale, zp):
    q = Q8(scale, zp)
    if op == "LOGISTIC":
        return lambda x: K.logistic_s8(x, P.prepare_logistic(q, P.logistic_output_qparams("int8")))
    return lambda x: K.tanh_s8(x, P.prepare_tanh(q, P.tanh_output_qparams("int8")))


def act_s16(op, scale):
    q = Q16(scale)
    if op == "LOGISTIC":
        return lambda x: K.logistic_s16(x, P.prepare_logistic(q, P.logistic_output_qparams("int16")))
    return lambda x: K.tanh_s16(x, P.prepare_tanh(q, P.tanh_output_qparams("int16")))


def test_logistic_s8_hand_rows():
    f = act_s8("LOGISTIC", 1 / 16, 0)  # radius 120 (see test_prepare)
    got = f(np.array([0, 119, 120, -120, -128, 127], np.int8))
    # 0 -> sigmoid 0.5 = 128/256 -> 0 after the -128 offset; |x| >= 120 saturates to -128 / 127;
    # x = 119 is 7.4375: 256 * sigmoid = 255.85 -> 256 -> clamped to 127
    assert_identical(got, [0, 127, 127, -128, -128, 127], "logistic s8")


def test_tanh_s8_hand_rows():
    f = act_s8("TANH", 1 / 16, 5)
    got = f(np.array([5, 125, -115, 21, -11], np.int8))
    # zp 5: 0 -> 0; 120 steps = 7.5 saturates (>= radius) to 127; -120 -> -128;
    # 16 steps = 1.0: 128 * tanh(1) = 97.48 -> 97; -16 steps -> -97
    assert_identical(got, [0, 127, -128, 97, -97], "tanh s8")


@pytest.mark.parametrize("op", ["LOGISTIC", "TANH"])
@pytest.mark.parametrize("scale, zp", [(1 / 16, 0), (0.0371, -7), (0.004, 30), (0.25, 100)])
def test_activation_s8_close_to_float_and_monotone(op, scale, zp):
    got = act_s8(op, scale, zp)(ALL_S8).astype(np.int64)
    x = (ALL_S8.astype(np.float64) - zp) * np.float32(scale)
    if op == "LOGISTIC":
        want = np.clip(np.round(sigmoid(x) * 256), 0, 255) - 128
    else:
        want = np.clip(np.round(np.tanh(x) * 128), -128, 127)
    assert np.abs(got - want).max() <= ACT_S8_TOL_STEPS
    assert np.all(np.diff(got) >= 0), "not monotone"


@pytest.mark.parametrize("scale", [1 / 16, 0.0371, 0.004])
def test_activation_s8_symmetries(scale):
    x = np.arange(-127, 128).astype(np.int8)
    tanh = act_s8("TANH", scale, 0)
    assert np.abs(tanh(x).astype(np.int64) + tanh(-x)).max() <= 1  # odd, up to rounding
    logistic = act_s8("LOGISTIC", scale, 0)
    # sigmoid(x) + sigmoid(-x) = 1, i.e. (q(x) + 128) + (q(-x) + 128) = 256, up to rounding
    assert np.abs(logistic(x).astype(np.int64) + logistic(-x)).max() <= 1


def test_gemmlowp_constants_are_their_formulas():
    assert K._EXP_MINUS_ONE_EIGHTH_Q0 == round(math.exp(-1 / 8) * 2**31)
    assert K._ONE_THIRD_Q0 == round(2**31 / 3)
    assert K._FORTY_EIGHT_SEVENTEENTHS_Q2 == round(48 / 17 * 2**29)
    assert K._MINUS_THIRTY_TWO_SEVENTEENTHS_Q2 == round(-32 / 17 * 2**29)
    for k, value in K._EXP_MINUS_POW2_Q0:
        assert value == round(math.exp(-(2.0**k)) * 2**31), k


def test_gemmlowp_logistic_and_tanh_accuracy_in_q0():
    a = np.linspace(-15.9, 15.9, 2001)
    raw = np.round(a * 2**27).astype(np.int64)  # Q4.27
    x = raw / 2**27
    assert np.abs(K.gemmlowp_logistic_q0(raw, 4) / 2**31 - sigmoid(x)).max() < 2**-20
    assert np.abs(K.gemmlowp_tanh_q0(raw, 4) / 2**31 - np.tanh(x)).max() < 2**-20


def test_sigmoid_table_is_sigmoid_of_i_over_24():
    i = np.arange(256)
    assert np.abs(K.SIGMOID_TABLE_U16 - np.round(65536 * sigmoid(i / 24))).max() <= 1
    assert K.SIGMOID_TABLE_U16[0] == 32768 and np.all(np.diff(K.SIGMOID_TABLE_U16) >= 0)


def test_logistic_s16_hand_rows():
    f = act_s16("LOGISTIC", 2**-12)  # power-of-two scale: multiplier 3, no shift
    got = f(np.array([0, 7 * 4096], np.int16))
    # 0 -> table[0] << 9 = 2^24, + 2^9, >> 10 = 16384 = 0.5. x = 7.0 -> v = 86016 = 168 * 512:
    # (table[168] << 9) + 512, >> 10 = (table[168] + 1) // 2 (table[168] = sigmoid(7) in Q16)
    assert_identical(got, [16384, (int(K.SIGMOID_TABLE_U16[168]) + 1) // 2], "logistic s16")


def test_tanh_s16_hand_rows():
    f = act_s16("TANH", 2**-12)
    got = f(np.array([0, 1, -1, 32767], np.int16))
    # 0: table[0] << 8 = 2^23; - 2^23 + 2^7, >> 8 = 0.
    # 1 -> v = 3 = 0 * 256 + 3: 2^23 + 3 * (33451 - 32768) = 2^23 + 2049; + 128 >> 8 = 8; -1 -> -8
    # (tanh(2^-12) * 2^15 = 8.0). 32767 -> v = 98301, 383 = index >= 255: saturates to 65535 << 8 -> 32767
    assert_identical(got, [0, 8, -8, 32767], "tanh s16")


def test_logistic_s16_saturated_negative_is_1():
    # TFLM's negative branch returns (2^25 - (0x7FFF << 10) + 511) >> 10 = 1 once |v| >= 255 * 512
    f = act_s16("LOGISTIC", 2**-8)
    assert f(np.array([-32768], np.int16))[0] == 1


@pytest.mark.parametrize("op", ["LOGISTIC", "TANH"])
@pytest.mark.parametrize("scale", [2**-12, 2**-11, 2**-10, 1e-4, 3.1e-4, 1 / 3000])
def test_activation_s16_close_to_float_and_monotone(op, scale):
    got = act_s16(op, scale)(ALL_S16).astype(np.int64)
    x = ALL_S16.astype(np.float64) * np.float32(scale)
    if op == "LOGISTIC":
        want, tol = np.clip(np.round(sigmoid(x) * 32768), 0, 32767), LOGISTIC_S16_TOL_STEPS
    else:
        want, tol = np.clip(np.round(np.tanh(x) * 32768), -32768, 32767), TANH_S16_TOL_STEPS
    err = np.abs(got - want)
    assert err.max() <= tol, f"max error {err.max()} at x = {ALL_S16[err.argmax()]}"
    assert np.all(np.diff(got) >= 0), "not monotone"


@pytest.mark.parametrize("scale", [2**-12, 2**-11])
def test_tanh_s16_is_exactly_odd_for_power_of_two_scales(scale):
    # With a power-of-two scale the input rescale is x * 3 (or 6), exact, and the two output branches
    # floor((d + 128) / 256) and floor((-d + 127) / 256) are exact negatives of each other.
    x = np.arange(-32767, 32768).astype(np.int16)
    tanh = act_s16("TANH", scale)
    assert_identical(tanh(-x), -tanh(x).astype(np.int64), "tanh(-x) = -tanh(x)")


@pytest.mark.parametrize("op", ["LOGISTIC", "TANH"])
def test_activation_s8_lookup_equals_direct_computation(op, rng):
    q = Q8(0.0371, -7)
    params = (P.prepare_logistic(q, P.logistic_output_qparams("int8")) if op == "LOGISTIC"
              else P.prepare_tanh(q, P.tanh_output_qparams("int8")))
    x = rng.integers(-128, 128, (7, 33)).astype(np.int8)
    kernel, direct = (K.logistic_s8, K.logistic_s8_direct) if op == "LOGISTIC" else (K.tanh_s8, K.tanh_s8_direct)
    got = kernel(x, params)
    assert got.dtype == np.int8 and got.shape == x.shape
    assert_identical(got, direct(x, params), f"{op} lookup vs direct")


def test_activation_kernels_reject_mismatched_params():
    p = P.prepare_tanh(Q8(0.05), P.tanh_output_qparams("int8"))
    with pytest.raises(ValueError, match="LOGISTIC"):
        K.logistic_s8(ALL_S8, p)
    with pytest.raises(ValueError, match="x must be int8"):
        K.tanh_s8(ALL_S16, p)
