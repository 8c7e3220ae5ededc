"""The integer op kernels ("Eval"): what each op of the step graph computes, bit-exact with TFLite-Micro.

This is the integer semantics every stage shares: the runtime executes these kernels (its op-by-op
specification, ``grukit.runtime.int_gru_reference``) and tabulates them into its fast plan; the C generator
tabulates them into flash; the TFLite files run them in TFLite-Micro. Each kernel takes integer tensors and a
frozen parameter record (``grukit.core.quantized``, computed by ``grukit.quantize.prepare``) and returns what
TFLite-Micro (double-rounding build, i.e. ``TFLITE_SINGLE_ROUNDING`` unset, its default) computes. Paths refer
to the tflite-micro tree; "reference/" is tensorflow/lite/kernels/internal/reference.

- ``fully_connected_s8`` / ``_s16``: FullyConnectedPerChannel, reference/integer_ops/fully_connected.h
  (int32 accumulator for int8, int64 accumulator and int64 bias for int16).
- ``add_s8/_s16``, ``sub_s8/_s16``: AddFunc / AddElementwise (reference/integer_ops/add.h,
  reference/add.h: int16 takes the general-scale path, AddGeneralParamScale) and SubElementwise
  (reference/sub.h); same arithmetic for both widths, left shift 20 (int8) or 15 (int16).
- ``mul_s8/_s16``: MulElementwise, reference/integer_ops/mul.h.
- ``logistic_s8`` / ``tanh_s8``: reference/integer_ops/logistic.h and tanh.h int8 paths: input rescaled
  to Q4.27, then gemmlowp's fixed-point ``logistic`` / ``tanh`` (polynomial exp + Newton-Raphson divide);
  ``*_s8_direct`` compute that per element, the public kernels look it up from its 256 values.
- ``logistic_s16`` / ``tanh_s16``: the int16 paths of the same files: a 256-entry sigmoid table with
  linear interpolation (``sigmoid_table_uint16``, tensorflow/lite/kernels/internal/common.h).

The requantization primitives are ``grukit.core.fixedpoint``'s. Outputs are int8 / int16 in [qmin, qmax].
The only float arithmetic is the exact float64 matrix product of ``dot_exact_s64``.
"""

from __future__ import annotations

import functools

import numpy as np

from grukit.core.fixedpoint import (INT32_MAX, INT32_MIN, as_int64, multiply_by_quantized_multiplier,
                                    multiply_by_quantized_multiplier_s64, rescale_smaller_than_one,
                                    rounding_divide_by_pot, saturating_rounding_doubling_high_mul, wrap_int32)


def _saturate(y_i64: np.ndarray, params) -> np.ndarray:
    return np.clip(y_i64, params.qmin, params.qmax).astype(params.np_dtype)


def _require(params, cls_name: str, dtype: str, op: str | None = None) -> None:
    if type(params).__name__ != cls_name or params.dtype != dtype or (op and params.op != op):
        want = f"{cls_name}(dtype={dtype!r}{', op=' + repr(op) if op else ''})"
        raise ValueError(f"kernel needs {want}, got {params!r}")


def _require_dtype(x: np.ndarray, np_dtype, name: str) -> None:
    if x.dtype != np_dtype:
        raise ValueError(f"{name} must be {np.dtype(np_dtype).name}, got {x.dtype}")


# ---------------------------------------------------------------------------------------------------------
# FULLY_CONNECTED
# ---------------------------------------------------------------------------------------------------------

# The dot products run as float64 BLAS matmuls. That is exact: every operand is an integer, every product
# |x - zp| * |w| and every partial sum (in whatever order BLAS adds, with or without FMA) is an integer of
# magnitude <= K * max|x - zp| * max|w|, and integers up to 2^53 are exact doubles.
#   int8:  |x - zp| <= 255 (x and zp in [-128, 127]), |w| <= 128: K * 32640 <= 2^53 -> K <= 275,955,859,520
#   int16: |x| <= 32768 (zp = 0),                      |w| <= 128: K * 2^22  <= 2^53 -> K <= 2^31
MAX_ABS_X_OFFSET = {"int8": 255, "int16": 1 << 15}
MAX_ABS_W = 128
MAX_K = {dt: (1 << 53) // (bound * MAX_ABS_W) for dt, bound in MAX_ABS_X_OFFSET.items()}


def dot_exact_s64(x_offset_i64: np.ndarray, w_q: np.ndarray, dtype: str) -> np.ndarray:
    """sum_k x_offset[n, k] * w_q[o, k] -> int64 [N, O], exactly, via a float64 matmul.

    x_offset_i64: [N, K] input minus its zero point, |values| <= MAX_ABS_X_OFFSET[dtype];
    w_q: int8 [O, K]. K must be <= MAX_K[dtype] (see the bound above).
    """
    K = w_q.shape[1]
    if K > MAX_K[dtype]:
        raise ValueError(f"K = {K} exceeds the exact-float64 bound {MAX_K[dtype]} for {dtype}")
    if x_offset_i64.size and int(np.abs(x_offset_i64).max()) > MAX_ABS_X_OFFSET[dtype]:
        raise ValueError(f"|x - zp| exceeds {MAX_ABS_X_OFFSET[dtype]}, the bound the exact product relies on")
    acc = x_offset_i64.astype(np.float64) @ w_q.astype(np.float64).T
    return acc.astype(np.int64)


def _fc_checks(x_q, w_q, bias, x_dtype, bias_dtype, params, dtype):
    _require(params, "FullyConnectedParams", dtype)
    x_q, w_q = np.asarray(x_q), np.asarray(w_q)
    _require_dtype(x_q, x_dtype, "x_q")
    _require_dtype(w_q, np.int8, "w_q")
    if x_q.ndim != 2 or w_q.ndim != 2 or x_q.shape[1] != w_q.shape[1]:
        raise ValueError(f"need x_q [N, K] and w_q [O, K], got {x_q.shape} and {w_q.shape}")
    if w_q.shape[0] != len(params.output_multiplier):
        raise ValueError(f"w_q has {w_q.shape[0]} rows, params have {len(params.output_multiplier)} channels")
    if bias is not None:
        bias = np.asarray(bias)
        _require_dtype(bias, bias_dtype, "bias")
        if bias.shape != (w_q.shape[0],):
            raise ValueError(f"bias must have shape ({w_q.shape[0]},), got {bias.shape}")
    return x_q, w_q, bias


def fully_connected_s8(x_q: np.ndarray, w_q: np.ndarray, bias_i32: np.ndarray | None, params) -> np.ndarray:
    """int8 FULLY_CONNECTED: TFLM reference_integer_ops::FullyConnectedPerChannel<int8, int8, int8, int32>.

    x_q: int8 [N, K], zero point params.input_zero_point; w_q: int8 [O, K], symmetric per output channel;
    bias_i32: int32 [O] or None. acc = sum (x - zp) * w + bias in an int32 accumulator (wraps like the
    device if it ever overflowed), requantized per channel, + output zero point, saturated: int8 [N, O].
    """
    x_q, w_q, bias_i32 = _fc_checks(x_q, w_q, bias_i32, np.int8, np.int32, params, "int8")
    acc = dot_exact_s64(x_q.astype(np.int64) - params.input_zero_point, w_q, "int8")
    if bias_i32 is not None:
        acc = acc + bias_i32.astype(np.int64)
    acc_i32 = wrap_int32(acc)
    y = multiply_by_quantized_multiplier(acc_i32, params.output_multiplier, params.output_shift)
    return _saturate(y + params.output_zero_point, params)


def fully_connected_s16(x_q: np.ndarray, w_q: np.ndarray, bias_i64: np.ndarray | None, params) -> np.ndarray:
    """16x8 FULLY_CONNECTED: TFLM FullyConnectedPerChannel<int16, int8, int16, int64> (int64 bias path).

    x_q: int16 [N, K] (zero point 0); w_q: int8 [O, K]; bias_i64: int64 [O] or None (TFLM then also takes
    the int64 path, its default quantized_bias_type). acc = sum x * w + bias in int64, requantized with
    the 64-bit MultiplyByQuantizedMultiplier (|acc| < 2^47), saturated: int16 [N, O].
    """
    x_q, w_q, bias_i64 = _fc_checks(x_q, w_q, bias_i64, np.int16, np.int64, params, "int16")
    acc = dot_exact_s64(x_q.astype(np.int64) - params.input_zero_point, w_q, "int16")
    if bias_i64 is not None:
        acc = acc + bias_i64.astype(np.int64)
    y = multiply_by_quantized_multiplier_s64(acc, params.output_multiplier, params.output_shift)
    return _saturate(y + params.output_zero_point, params)


# ---------------------------------------------------------------------------------------------------------
# ADD, SUB, MUL
# ---------------------------------------------------------------------------------------------------------


def _add_or_sub(a, b, params, dtype: str, op: str) -> np.ndarray:
    _require(params, "AddParams", dtype, op)
    a, b = np.asarray(a), np.asarray(b)
    _require_dtype(a, params.np_dtype, "input1")
    _require_dtype(b, params.np_dtype, "input2")
    # |x - zp| <= 255 << 20 < 2^28 (int8), |x| <= 2^15 << 15 = 2^30 (int16): the shifts fit in int32.
    shifted1 = (a.astype(np.int64) - params.input1_zero_point) << params.left_shift
    shifted2 = (b.astype(np.int64) - params.input2_zero_point) << params.left_shift
    scaled1 = rescale_smaller_than_one(shifted1, params.input1)
    scaled2 = rescale_smaller_than_one(shifted2, params.input2)
    raw = scaled1 + scaled2 if op == "ADD" else scaled1 - scaled2
    y = rescale_smaller_than_one(raw, params.output) + params.output_zero_point
    return _saturate(y, params)


def add_s8(a: np.ndarray, b: np.ndarray, params) -> np.ndarray:
    """int8 ADD (reference_integer_ops::AddFunc): int8 a, b (broadcast) -> int8 a + b in the output scale."""
    return _add_or_sub(a, b, params, "int8", "ADD")


def add_s16(a: np.ndarray, b: np.ndarray, params) -> np.ndarray:
    """int16 ADD (reference_ops::AddGeneralParamScale, the path TFLM takes, pot_scale=false)."""
    return _add_or_sub(a, b, params, "int16", "ADD")


def sub_s8(a: np.ndarray, b: np.ndarray, params) -> np.ndarray:
    """int8 SUB (reference_ops::SubElementwise): int8 a, b (broadcast) -> int8 a - b in the output scale."""
    return _add_or_sub(a, b, params, "int8", "SUB")


def sub_s16(a: np.ndarray, b: np.ndarray, params) -> np.ndarray:
    """int16 SUB (reference_ops::SubElementwise, left shift 15): int16 a - b."""
    return _add_or_sub(a, b, params, "int16", "SUB")


def _mul(a, b, params, dtype: str) -> np.ndarray:
    _require(params, "MulParams", dtype)
    a, b = np.asarray(a), np.asarray(b)
    _require_dtype(a, params.np_dtype, "input1")
    _require_dtype(b, params.np_dtype, "input2")
    # |product| <= 255 * 255 (int8) or 2^15 * 2^15 = 2^30 (int16): fits the C code's int32.
    product = (a.astype(np.int64) - params.input1_zero_point) * (b.astype(np.int64) - params.input2_zero_point)
    y = multiply_by_quantized_multiplier(product, params.output.multiplier, params.output.shift)
    return _saturate(y + params.output_zero_point, params)


def mul_s8(a: np.ndarray, b: np.ndarray, params) -> np.ndarray:
    """int8 MUL (reference_integer_ops::MulElementwise): int8 a, b (broadcast) -> int8 a * b."""
    return _mul(a, b, params, "int8")


def mul_s16(a: np.ndarray, b: np.ndarray, params) -> np.ndarray:
    """int16 MUL (reference_integer_ops::MulElementwise<int16>, all zero points 0) -> int16 a * b."""
    return _mul(a, b, params, "int16")


# ---------------------------------------------------------------------------------------------------------
# gemmlowp fixed-point logistic and tanh (int32 raw values; Qm.n = m integer bits, 31 - m fractional)
# ---------------------------------------------------------------------------------------------------------

_srdhm = saturating_rounding_doubling_high_mul

# Constants, each round(value * 2^(31 - integer bits)) (tests check them against their formulas).
_EXP_MINUS_ONE_EIGHTH_Q0 = 1895147668  # exp(-1/8)
_ONE_THIRD_Q0 = 715827883  # 1/3
_FORTY_EIGHT_SEVENTEENTHS_Q2 = 1515870810  # 48/17
_MINUS_THIRTY_TWO_SEVENTEENTHS_Q2 = -1010580540  # -32/17
# (k, exp(-2^k) in Q0.31) for the barrel shifter of exp_on_negative_values.
_EXP_MINUS_POW2_Q0 = ((-2, 1672461947), (-1, 1302514674), (0, 790015084), (1, 290630308),
                      (2, 39332535), (3, 720401), (4, 242))


def _saturating_shift_left(x: np.ndarray, exponent: int) -> np.ndarray:
    # SaturatingRoundingMultiplyByPOT with a positive exponent.
    threshold = (1 << (31 - exponent)) - 1
    return np.where(x > threshold, INT32_MAX, np.where(x < -threshold, INT32_MIN, x << exponent))


def _rescale(x: np.ndarray, src_integer_bits: int, dst_integer_bits: int) -> np.ndarray:
    exponent = src_integer_bits - dst_integer_bits
    if exponent > 0:
        return _saturating_shift_left(x, exponent)
    if exponent < 0:
        return rounding_divide_by_pot(x, -exponent)
    return x


def _rounding_half_sum(a: np.ndarray, b) -> np.ndarray:
    total = a + b
    nudged = total + np.where(total >= 0, 1, -1)
    return np.where(nudged >= 0, nudged >> 1, -((-nudged) >> 1))  # C division truncates toward 0


def _exp_on_interval_between_negative_one_quarter_and_0_excl(a_q0: np.ndarray) -> np.ndarray:
    # Taylor expansion of exp around -1/8 to the 4th order, Q0.31 in and out.
    x = a_q0 + (1 << 28)
    x2 = _srdhm(x, x)
    x3 = _srdhm(x2, x)
    x4 = _srdhm(x2, x2)
    x4_over_4 = rounding_divide_by_pot(x4, 2)
    poly = rounding_divide_by_pot(_srdhm(x4_over_4 + x3, _ONE_THIRD_Q0) + x2, 1)
    return _EXP_MINUS_ONE_EIGHTH_Q0 + _srdhm(_EXP_MINUS_ONE_EIGHTH_Q0, x + poly)


def _exp_on_negative_values(a: np.ndarray, integer_bits: int) -> np.ndarray:
    # exp(a) for a <= 0 in Q(integer_bits) -> Q0.31: exp of a mod 1/4, times exp(-2^k) for each set bit.
    assert integer_bits <= 5, "the clamp at -32 of gemmlowp applies only beyond 5 integer bits"
    fractional_bits = 31 - integer_bits
    one_quarter = 1 << (fractional_bits - 2)
    a_mod_quarter_minus_one_quarter = (a & (one_quarter - 1)) - one_quarter
    result = _exp_on_interval_between_negative_one_quarter_and_0_excl(
        _rescale(a_mod_quarter_minus_one_quarter, integer_bits, 0))
    remainder = a_mod_quarter_minus_one_quarter - a
    for k, exp_minus_pow2 in _EXP_MINUS_POW2_Q0:
        if integer_bits > k:
            bit_set = (remainder & (1 << (fractional_bits + k))) != 0
            result = np.where(bit_set, _srdhm(result, exp_minus_pow2), result)
    return np.where(a == 0, INT32_MAX, result)


def _newton_reciprocal_q2(a_q0: np.ndarray) -> np.ndarray:
    # 1 / ((1 + a) / 2) in Q2.29 for a in (0, 1]: 3 Newton-Raphson steps from 48/17 - 32/17 * d.
    half_denominator = _rounding_half_sum(a_q0, INT32_MAX)
    x = _FORTY_EIGHT_SEVENTEENTHS_Q2 + _srdhm(half_denominator, _MINUS_THIRTY_TWO_SEVENTEENTHS_Q2)
    one_q2 = 1 << 29
    for _ in range(3):
        one_minus_half_denominator_times_x = one_q2 - _srdhm(half_denominator, x)
        x = x + _rescale(_srdhm(x, one_minus_half_denominator_times_x), 4, 2)
    return x


def gemmlowp_logistic_q0(a: np.ndarray, integer_bits: int) -> np.ndarray:
    """gemmlowp::logistic: input raw int32 values in Q(integer_bits), output 1 / (1 + exp(-a)) in Q0.31."""
    a = as_int64(a)
    positive = a > 0
    abs_a = np.where(positive, a, -a)
    # one_over_one_plus_x_for_x_in_0_1: 1 / (1 + e) = (1 / ((1 + e) / 2)) / 2, Q2 -> Q1 -> Q0.
    result_if_positive = _rescale(_newton_reciprocal_q2(_exp_on_negative_values(-abs_a, integer_bits)), 1, 0)
    result_if_negative = INT32_MAX - result_if_positive
    return np.where(a == 0, 1 << 30, np.where(positive, result_if_positive, result_if_negative))


def gemmlowp_tanh_q0(a: np.ndarray, integer_bits: int) -> np.ndarray:
    """gemmlowp::tanh: input raw int32 values in Q(integer_bits), output tanh(a) in Q0.31."""
    a = as_int64(a)
    negative = a < 0
    minus_abs_a = np.where(negative, a, -a)
    # -tanh(n) = (1 - exp(2n)) / (1 + exp(2n)) for n < 0; 2n is the same raw value with one more
    # integer bit. (1 - e) / (1 + e) = 1 / ((1 + e) / 2) - 1, Q2 -> Q0.
    e = _exp_on_negative_values(minus_abs_a, integer_bits + 1)
    t = _rescale(_newton_reciprocal_q2(e) - (1 << 29), 2, 0)
    return np.where(a == 0, 0, np.where(negative, -t, t))


def _activation_input_q4(x, params):
    # Shared int8 front end: input - zp, saturation outside the radius, rescale to Q4.27.
    x_off = np.asarray(x).astype(np.int64) - params.input_zero_point
    low = x_off <= -params.input_range_radius
    high = x_off >= params.input_range_radius
    # Inside the radius |x_off| * 2^left_shift < 15 * 2^27: the left shift cannot overflow int32.
    inside = np.where(low | high, 0, x_off)
    input_q4 = multiply_by_quantized_multiplier(inside, params.input_multiplier, params.input_left_shift)
    return input_q4, low, high


def logistic_s8_direct(x: np.ndarray, params) -> np.ndarray:
    """int8 LOGISTIC computed element by element as reference_integer_ops::Logistic (int8) does.

    |x - zp| beyond the input range radius saturates to -128 / 127; inside, the input is rescaled to
    Q4.27, gemmlowp's logistic gives Q0.31, rounded to 2^-8 and offset by -128.
    """
    input_q4, low, high = _activation_input_q4(x, params)
    output_q0 = gemmlowp_logistic_q0(input_q4, 4)
    y = np.clip(rounding_divide_by_pot(output_q0, 31 - 8) - 128, -128, 127)
    return np.where(low, -128, np.where(high, 127, y)).astype(np.int8)


def tanh_s8_direct(x: np.ndarray, params) -> np.ndarray:
    """int8 TANH computed element by element as reference_integer_ops::Tanh (int8) does: like
    ``logistic_s8_direct`` with gemmlowp's tanh, rounded to 2^-7, no output offset."""
    input_q4, low, high = _activation_input_q4(x, params)
    output_q0 = gemmlowp_tanh_q0(input_q4, 4)
    y = np.clip(rounding_divide_by_pot(output_q0, 31 - 7), -128, 127)
    return np.where(low, -128, np.where(high, 127, y)).astype(np.int8)


@functools.lru_cache(maxsize=256)
def _table_s8(params) -> np.ndarray:
    # The direct computation on all 256 inputs: indexing it is the same function, ~50x faster.
    direct = logistic_s8_direct if params.op == "LOGISTIC" else tanh_s8_direct
    table = direct(np.arange(-128, 128).astype(np.int8), params)
    table.setflags(write=False)
    return table


def logistic_s8(x: np.ndarray, params) -> np.ndarray:
    """int8 LOGISTIC (reference_integer_ops::Logistic, int8): output scale 1/256, zero point -128.

    x: int8 any shape -> int8 same shape. Looks up ``logistic_s8_direct`` evaluated once on all 256 inputs.
    """
    _require(params, "ActivationParams", "int8", "LOGISTIC")
    x = np.asarray(x)
    _require_dtype(x, np.int8, "x")
    return _table_s8(params)[x.astype(np.intp) + 128]


def tanh_s8(x: np.ndarray, params) -> np.ndarray:
    """int8 TANH (reference_integer_ops::Tanh, int8): output scale 1/128, zero point 0.

    x: int8 any shape -> int8 same shape. Looks up ``tanh_s8_direct`` evaluated once on all 256 inputs.
    """
    _require(params, "ActivationParams", "int8", "TANH")
    x = np.asarray(x)
    _require_dtype(x, np.int8, "x")
    return _table_s8(params)[x.astype(np.intp) + 128]


# ---------------------------------------------------------------------------------------------------------
# int16 LOGISTIC / TANH: table of sigmoid with linear interpolation
# ---------------------------------------------------------------------------------------------------------

# sigmoid(i / 24) in unsigned Q0.16, i = 0..255: TFLite's ``sigmoid_table_uint16``
# (tensorflow/lite/kernels/internal/common.h). Data, not code: its entries are within 1 of
# round(65536 * sigmoid(i / 24)) but not a closed formula, and bit-exactness needs the very same values.
SIGMOID_TABLE_U16 = np.array([
    32768, 33451, 34133, 34813, 35493, 36169, 36843, 37513, 38180, 38841, 39498, 40149, 40794, 41432, 42064,
    42688, 43304, 43912, 44511, 45102, 45683, 46255, 46817, 47369, 47911, 48443, 48964, 49475, 49975, 50464,
    50942, 51409, 51865, 52311, 52745, 53169, 53581, 53983, 54374, 54755, 55125, 55485, 55834, 56174, 56503,
    56823, 57133, 57433, 57724, 58007, 58280, 58544, 58800, 59048, 59288, 59519, 59743, 59959, 60168, 60370,
    60565, 60753, 60935, 61110, 61279, 61441, 61599, 61750, 61896, 62036, 62172, 62302, 62428, 62549, 62666,
    62778, 62886, 62990, 63090, 63186, 63279, 63368, 63454, 63536, 63615, 63691, 63765, 63835, 63903, 63968,
    64030, 64090, 64148, 64204, 64257, 64308, 64357, 64405, 64450, 64494, 64536, 64576, 64614, 64652, 64687,
    64721, 64754, 64786, 64816, 64845, 64873, 64900, 64926, 64950, 64974, 64997, 65019, 65039, 65060, 65079,
    65097, 65115, 65132, 65149, 65164, 65179, 65194, 65208, 65221, 65234, 65246, 65258, 65269, 65280, 65291,
    65301, 65310, 65319, 65328, 65337, 65345, 65352, 65360, 65367, 65374, 65381, 65387, 65393, 65399, 65404,
    65410, 65415, 65420, 65425, 65429, 65433, 65438, 65442, 65445, 65449, 65453, 65456, 65459, 65462, 65465,
    65468, 65471, 65474, 65476, 65479, 65481, 65483, 65485, 65488, 65489, 65491, 65493, 65495, 65497, 65498,
    65500, 65501, 65503, 65504, 65505, 65507, 65508, 65509, 65510, 65511, 65512, 65513, 65514, 65515, 65516,
    65517, 65517, 65518, 65519, 65520, 65520, 65521, 65522, 65522, 65523, 65523, 65524, 65524, 65525, 65525,
    65526, 65526, 65526, 65527, 65527, 65528, 65528, 65528, 65529, 65529, 65529, 65529, 65530, 65530, 65530,
    65530, 65531, 65531, 65531, 65531, 65531, 65532, 65532, 65532, 65532, 65532, 65532, 65533, 65533, 65533,
    65533, 65533, 65533, 65533, 65533, 65534, 65534, 65534, 65534, 65534, 65534, 65534, 65534, 65534, 65534,
    65535], dtype=np.int64)
SIGMOID_TABLE_U16.setflags(write=False)


def _table_input(x, params) -> np.ndarray:
    # Rescale int16 input to the table's 1/(3 * 4096) input scale (x 4 for logistic's 1/(24 * 512) step).
    multiplier, left_shift = params.input_multiplier, params.input_left_shift
    if multiplier == 0:  # power-of-two input scale: the factor 3 exactly
        multiplier, left_shift = 3 << left_shift, 0
    rounding = (1 << (left_shift - 1)) if left_shift > 0 else 0
    # |x * multiplier| <= 2^15 * 32767 and rounding <= 2^30: the sum fits int32 as in the C code.
    return (np.asarray(x).astype(np.int64) * multiplier + rounding) >> left_shift


def _interpolate(abs_input: np.ndarray, fraction_bits: int):
    # Table index and linear interpolation between neighbours; index >= 255 saturates (returns None there).
    index = abs_input >> fraction_bits
    saturated = index >= 255
    index = np.minimum(index, 254)
    lo, hi = SIGMOID_TABLE_U16[index], SIGMOID_TABLE_U16[index + 1]
    frac = abs_input & ((1 << fraction_bits) - 1)
    return (lo << fraction_bits) + frac * (hi - lo), saturated  # hi >= lo: the table is non-decreasing


def logistic_s16(x: np.ndarray, params) -> np.ndarray:
    """int16 LOGISTIC (reference_integer_ops::Logistic, int16): output scale 2^-15, zero point 0.

    x: int16 any shape, zero point 0. The table step is 1/24 and the interpolation has 9 bits; the result
    is sigmoid in [0, 32767] (a saturated negative input gives 1, as in TFLM).
    """
    _require(params, "ActivationParams", "int16", "LOGISTIC")
    _require_dtype(np.asarray(x), np.int16, "x")
    v = _table_input(x, params)
    interp, saturated = _interpolate(np.abs(v), 9)
    result = np.where(saturated, 0x7FFF << 10, interp)  # unsigned Q0.25
    result = np.where(v >= 0, result + (1 << 9), (1 << 25) - result + (1 << 9) - 1)
    return (result >> 10).astype(np.int16)


def tanh_s16(x: np.ndarray, params) -> np.ndarray:
    """int16 TANH (reference_integer_ops::Tanh, int16): tanh(x) = 2 sigmoid(2x) - 1; output scale 2^-15.

    x: int16 any shape, zero point 0. 8 interpolation bits; the result is in [-32767, 32767].
    """
    _require(params, "ActivationParams", "int16", "TANH")
    _require_dtype(np.asarray(x), np.int16, "x")
    v = _table_input(x, params)
    interp, saturated = _interpolate(np.abs(v), 8)
    result = np.where(saturated, 0xFFFF << 8, interp)  # unsigned Q0.24
    result = np.where(v >= 0, result - (1 << 23) + (1 << 7), -result + (1 << 23) + (1 << 7) - 1)
    return (result >> 8).astype(np.int16)  # arithmetic shift: floor, as the C int32 >>
