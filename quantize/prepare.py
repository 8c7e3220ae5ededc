"""The float "Prepare" side: quantization parameters -> the integer parameters TFLite-Micro computes.

Every function here mirrors a Prepare of tflite-micro (paths relative to its tree) with the same float32 ->
double conversions and the same formulas, so the integers match the device's bit for bit:

- ``quantize_multiplier``: QuantizeMultiplier, tensorflow/lite/kernels/internal/quantization_util.cc
  (double-rounding build: multiplier 0 or in [2^30, 2^31 - 1], shift < -31 flushed to 0).
- ``prepare_fully_connected``: CalculateOpDataFullyConnected, micro/kernels/fully_connected_common.cc
  (per channel: double(input_scale) * double(w_scale) / double(output_scale)).
- ``prepare_add``: CalculateOpDataAdd, micro/kernels/add_common.cc (in double).
- ``prepare_sub``: CalculateOpDataSub, micro/kernels/sub_common.cc: as ADD, in double (the tflite-micro
  wheel we test against; TFLite-Micro source trees up to about August 2026 compute it in float32).
- ``prepare_mul``: CalculateOpDataMul, micro/kernels/mul_common.cc.
- ``prepare_logistic`` / ``prepare_tanh``: CalculateArithmeticOpDataLogistic (micro/kernels/
  logistic_common.cc) and CalculateArithmeticOpData (micro/kernels/tanh.cc), int8 and int16.
- ``quantize_weights_per_channel`` / ``quantize_bias``: grukit's own weight and bias quantization
  (symmetric int8 weights in [-127, 127], biases in the accumulator's scale), round half away from zero.

Combinations TFLite-Micro rejects (or would run on undefined behaviour) raise UnsupportedModelError.
The records returned (``grukit.core.qparams``) are consumed by the kernels of ``grukit.core.ops_int``.
"""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np

from grukit.core.errors import BadInputError, UnsupportedModelError
from grukit.core.graph import ADD, FULLY_CONNECTED, LOGISTIC, MUL, SUB, TANH, Op
from grukit.core.fixedpoint import round_half_away
from grukit.core.qparams import (ActivationParams, AddParams, FullyConnectedParams, MulParams, QParams,
                                 Requant)
from grukit.core.quantized import QuantizedFC


# ---------------------------------------------------------------------------------------------------------
# QuantizeMultiplier
# ---------------------------------------------------------------------------------------------------------


def quantize_multiplier(real_multiplier: float) -> Requant:
    """TFLite QuantizeMultiplier: real = multiplier * 2^(shift - 31), multiplier with 31 fractional bits.

    frexp gives real = q * 2^shift, q in [0.5, 1); multiplier = round_half_away(q * 2^31). If that rounds
    up to 2^31 it becomes 2^30 with shift + 1; a shift below -31 (real < ~2^-32) flushes to (0, 0); 0 gives
    (0, 0). Negative multipliers and shifts above 30 (real >= 2^30) are not supported.
    """
    real = float(real_multiplier)
    if not math.isfinite(real) or real < 0:
        raise UnsupportedModelError(f"real multiplier {real!r} is not a finite non-negative number")
    if real == 0.0:
        return Requant(0, 0)
    q, shift = math.frexp(real)
    q_fixed = int(round_half_away(q * (1 << 31)))  # q * 2^31 is exact: a power-of-two scaling
    if q_fixed == 1 << 31:
        q_fixed //= 2
        shift += 1
    if shift < -31:
        return Requant(0, 0)
    if shift > 30:
        raise UnsupportedModelError(f"real multiplier {real!r} needs a left shift of {shift} > 30")
    return Requant(q_fixed, shift)


def quantize_multiplier_smaller_than_one_exp(real_multiplier: float) -> Requant:
    """TFLite QuantizeMultiplierSmallerThanOneExp: 0 < real < 1 and the resulting shift <= 0."""
    real = float(real_multiplier)
    if not 0.0 < real < 1.0:
        raise UnsupportedModelError(f"multiplier {real!r} must be in (0, 1) (TFLM checks this in Prepare)")
    requant = quantize_multiplier(real)
    if requant.shift > 0:
        raise UnsupportedModelError(f"multiplier {real!r} rounds up to 1 (shift {requant.shift} > 0)")
    return requant


def _same_dtype(op: str, *qparams: QParams) -> str:
    dtypes = {q.dtype for q in qparams}
    if len(dtypes) != 1:
        raise UnsupportedModelError(f"{op}: inputs and output must share one type, got {sorted(dtypes)}")
    return dtypes.pop()


# ---------------------------------------------------------------------------------------------------------
# FULLY_CONNECTED
# ---------------------------------------------------------------------------------------------------------


def activation_range(activation: str, output_q: QParams) -> tuple[int | None, int | None]:
    """A fused activation's output clamp, TFLite's CalculateActivationRangeQuantized (kernel_util.cc): ReLU
    clamps below at quantize(0), ReLU6 also above at quantize(6), quantize(f) = zp + round(float(f / scale))
    (a float32 division, rounded half away); (None, None) for no fused activation."""
    if activation not in ("relu", "relu6"):
        return None, None

    def quantize(f: float) -> int:
        return output_q.zero_point + int(round_half_away(np.float32(f) / np.float32(output_q.scale)))

    low = max(output_q.qmin, quantize(0.0))
    return (low, output_q.qmax) if activation == "relu" else (low, min(output_q.qmax, quantize(6.0)))


def prepare_fully_connected(input_q: QParams, weight_scales: np.ndarray, output_q: QParams,
                            activation: str = "linear") -> FullyConnectedParams:
    """Per output channel o: QuantizeMultiplier(double(input_scale) * double(w_scale[o]) / double(output_scale)).

    weight_scales: float32 [O] (symmetric int8 weights). int8: int8 in/out; int16: int16 in/out (16x8).
    TFLM's per-tensor path (a single weight scale) computes the same number with the same formula.
    activation: "relu" or "relu6" fuses that activation as the output clamp (``activation_range``).
    """
    dtype = _same_dtype("FULLY_CONNECTED", input_q, output_q)
    scales = np.asarray(weight_scales, np.float32).reshape(-1)
    if scales.size == 0 or not np.all(np.isfinite(scales) & (scales > 0)):
        raise BadInputError(f"weight scales must be positive finite float32 values, got {scales!r}")
    requants = []
    for o, w_scale in enumerate(scales):
        effective = float(input_q.scale) * float(w_scale) / float(output_q.scale)
        requant = quantize_multiplier(effective)
        if dtype == "int16" and requant.shift > 7:
            raise UnsupportedModelError(
                f"FULLY_CONNECTED 16x8 channel {o}: multiplier {effective!r} needs shift {requant.shift} > 7")
        requants.append(requant)
    return FullyConnectedParams(dtype, input_q.zero_point, output_q.zero_point, tuple(requants),
                                *activation_range(activation, output_q))


# ---------------------------------------------------------------------------------------------------------
# ADD, SUB
# ---------------------------------------------------------------------------------------------------------


def _add_sub_left_shift(dtype: str) -> int:
    # 255 << 20 and 65535 << 15 both stay below 2^31 (the C accumulator is int32).
    return 15 if dtype == "int16" else 20


def prepare_add(input1_q: QParams, input2_q: QParams, output_q: QParams) -> AddParams:
    """CalculateOpDataAdd, all in double: input i rescaled by s_i / (2 max(s1, s2)), the sum by
    2 max(s1, s2) / (2^left_shift * s_out), each with QuantizeMultiplierSmallerThanOneExp."""
    dtype = _same_dtype("ADD", input1_q, input2_q, output_q)
    left_shift = _add_sub_left_shift(dtype)
    twice_max_input_scale = 2 * float(max(input1_q.scale, input2_q.scale))
    real_input1 = float(input1_q.scale) / twice_max_input_scale
    real_input2 = float(input2_q.scale) / twice_max_input_scale
    real_output = twice_max_input_scale / ((1 << left_shift) * float(output_q.scale))
    return AddParams("ADD", dtype, input1_q.zero_point, input2_q.zero_point, output_q.zero_point, left_shift,
                     quantize_multiplier_smaller_than_one_exp(real_input1),
                     quantize_multiplier_smaller_than_one_exp(real_input2),
                     quantize_multiplier_smaller_than_one_exp(real_output))


def prepare_sub(input1_q: QParams, input2_q: QParams, output_q: QParams) -> AddParams:
    """CalculateOpDataSub: the same multipliers as ADD, computed in double.

    TFLite-Micro source trees up to about August 2026 compute these ratios in float32; the interpreter
    grukit is tested against (the ``tflite-micro`` wheel, October 2026) computes them in double, as ADD
    does. The two differ by one LSB on some scales; we follow the interpreter the tests run.
    """
    add = prepare_add(input1_q, input2_q, output_q)
    return replace(add, op="SUB")


# ---------------------------------------------------------------------------------------------------------
# MUL
# ---------------------------------------------------------------------------------------------------------


def prepare_mul(input1_q: QParams, input2_q: QParams, output_q: QParams) -> MulParams:
    """CalculateOpDataMul: QuantizeMultiplier(double(s1) * double(s2) / double(s_out))."""
    dtype = _same_dtype("MUL", input1_q, input2_q, output_q)
    real = float(input1_q.scale) * float(input2_q.scale) / float(output_q.scale)
    return MulParams(dtype, input1_q.zero_point, input2_q.zero_point, output_q.zero_point,
                     quantize_multiplier(real))


# ---------------------------------------------------------------------------------------------------------
# LOGISTIC, TANH
# ---------------------------------------------------------------------------------------------------------


def logistic_output_qparams(dtype: str) -> QParams:
    """The output quantization LOGISTIC has in TFLM: int8 1/256 zp -128 (the kernel adds -128 to a
    Q0.8 result; Prepare checks zp -128), int16 2^-15 zp 0 (Prepare checks log2(scale) == -15)."""
    return {"int8": QParams(1 / 256, -128, "int8"), "int16": QParams(1 / 32768, 0, "int16")}[dtype]


def tanh_output_qparams(dtype: str) -> QParams:
    """The output quantization TANH has in TFLM: int8 1/128 zp 0 (the kernel writes a Q0.7 result with
    no offset), int16 2^-15 zp 0 (Prepare checks log2(scale) == -15)."""
    return {"int8": QParams(1 / 128, 0, "int8"), "int16": QParams(1 / 32768, 0, "int16")}[dtype]


def checked_log2(x: float) -> tuple[bool, int]:
    """TFLite CheckedLog2 in float32: (|log2(x) - round(log2(x))| < 1e-3, round(log2(x)))."""
    x_log2 = np.float32(np.log(np.float32(x))) * np.float32(np.float32(1.0) / np.log(np.float32(2.0)))
    rounded = float(round_half_away(x_log2))
    return bool(abs(np.float32(x_log2 - np.float32(rounded))) < np.float32(1e-3)), int(rounded)


def _prepare_activation_s8(op: str, input_q: QParams) -> ActivationParams:
    input_integer_bits = 4
    real = float(input_q.scale) * float(1 << (31 - input_integer_bits))
    q, left_shift = math.frexp(real)
    # A float32 scale has 24 significant bits, so q * 2^31 never rounds up to 2^31 here.
    multiplier = int(round_half_away(q * (1 << 31)))
    if not 0 <= left_shift <= 30:
        raise UnsupportedModelError(f"{op} int8: input scale {input_q.scale!r} is outside [2^-28, 8)")
    # CalculateInputRadius: floor(15 * 2^27 / 2^left_shift), computed in double (exact here).
    radius = math.floor(1.0 * ((1 << input_integer_bits) - 1) * (1 << (31 - input_integer_bits))
                        / (1 << left_shift))
    return ActivationParams(op, "int8", input_q.zero_point, radius, multiplier, left_shift)


def _prepare_activation_s16(op: str, input_q: QParams, output_q: QParams) -> ActivationParams:
    input_integer_bits = 3
    is_pot, scale_log2 = checked_log2(input_q.scale)
    left_shift = (15 - input_integer_bits) + scale_log2
    # LOGISTIC takes the power-of-two shortcut only for scale 2^-12, TANH also for 2^-11.
    is_pot = is_pot and (left_shift == 0 or (op == "TANH" and left_shift == 1))
    if is_pot:
        multiplier = 0
    else:
        # Rescale to the table's input scale 1/(3 * 4096): a 15-bit multiplier and a right shift,
        # the multiplier truncated (static_cast<int32_t>), as TFLM does.
        real = float(input_q.scale) * 4096.0 * 3.0
        left_shift = 0
        while real <= 32767.0 / 2.0 and left_shift <= 30:
            left_shift += 1
            real *= 2.0
        multiplier = int(real)
        if multiplier > 32767:
            raise UnsupportedModelError(f"{op} int16: input scale {input_q.scale!r} is too large (> 4/3)")
    return ActivationParams(op, "int16", 0, 0, multiplier, left_shift)


def _prepare_activation(op: str, input_q: QParams, output_q: QParams, expected_output: QParams):
    _same_dtype(op, input_q, output_q)
    if output_q != expected_output:
        raise UnsupportedModelError(
            f"{op} {output_q.dtype}: output must be quantized as {expected_output} (fixed by TFLM), got {output_q}")
    if input_q.dtype == "int8":
        return _prepare_activation_s8(op, input_q)
    return _prepare_activation_s16(op, input_q, output_q)


def prepare_logistic(input_q: QParams, output_q: QParams) -> ActivationParams:
    """CalculateArithmeticOpDataLogistic: int8 (Q4.27 input rescale, radius) or int16 (table input scale).

    output_q must equal ``logistic_output_qparams(dtype)``.
    """
    return _prepare_activation("LOGISTIC", input_q, output_q, logistic_output_qparams(output_q.dtype))


def prepare_tanh(input_q: QParams, output_q: QParams) -> ActivationParams:
    """tanh.cc CalculateArithmeticOpData: as LOGISTIC. output_q must equal ``tanh_output_qparams(dtype)``."""
    return _prepare_activation("TANH", input_q, output_q, tanh_output_qparams(output_q.dtype))


# ---------------------------------------------------------------------------------------------------------
# Weights and biases
# ---------------------------------------------------------------------------------------------------------

WEIGHT_QMAX = 127  # symmetric int8 weights: [-127, 127], -128 unused (TFLite's quantization spec)


def quantize_weights_per_channel(w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """w float [O, K] -> (w_q int8 [O, K] in [-127, 127], scales float32 [O]).

    scale[o] = float32(max|w[o]| / 127) (1.0 for an all-zero row: any scale represents it);
    w_q = round_half_away(w / scale), computed in double from the float32 scale, clipped to +-127.
    """
    w = np.asarray(w, np.float64)
    if w.ndim != 2:
        raise BadInputError(f"weights must be a matrix [O, K], got shape {w.shape}")
    if not np.all(np.isfinite(w)):
        raise BadInputError("weights contain NaN or infinity")
    max_abs = np.abs(w).max(axis=1) if w.shape[1] else np.zeros(w.shape[0])
    scales = np.where(max_abs > 0, max_abs / WEIGHT_QMAX, 1.0).astype(np.float32)
    return quantize_weights_with_scales(w, scales), scales


def quantize_weights_with_scales(w: np.ndarray, scales: np.ndarray) -> np.ndarray:
    """w float [O, K] at given per-channel float32 scales [O] -> int8 [O, K]: round half away, clip to +-127."""
    s = np.asarray(scales, np.float32).astype(np.float64)[:, None]
    return np.clip(round_half_away(np.asarray(w, np.float64) / s), -WEIGHT_QMAX, WEIGHT_QMAX).astype(np.int8)


BIAS_BOUND = {np.dtype(np.int32): (1 << 31) - 1, np.dtype(np.int64): (1 << 47) - 1}


def quantize_bias(b: np.ndarray, input_scale: float, weight_scales: np.ndarray, dtype) -> np.ndarray:
    """b float [O] -> int32 or int64 [O] in the accumulator's scale double(input_scale) * double(w_scale[o]).

    That product of two float32 values is exact in double, so the bias adds to the accumulator with no
    scale error. Rounded half away from zero. A bias beyond +-(2^31 - 1) (int32) or +-(2^47 - 1) (int64, the
    bound of TFLM's 64-bit requantization) is refused, never saturated: choose wider weight scales for it.
    """
    dtype = np.dtype(dtype)
    if dtype not in BIAS_BOUND:
        raise UnsupportedModelError(f"bias dtype must be int32 or int64, got {dtype}")
    b = np.asarray(b, np.float64).reshape(-1)
    if not np.all(np.isfinite(b)):
        raise BadInputError("bias contains NaN or infinity")
    w_scales = np.asarray(weight_scales, np.float32).astype(np.float64).reshape(-1)
    if w_scales.shape != b.shape:
        raise BadInputError(f"bias has {b.size} entries but there are {w_scales.size} weight scales")
    accumulator_scale = float(np.float32(input_scale)) * w_scales
    bound = BIAS_BOUND[dtype]
    b_q = round_half_away(b / accumulator_scale)
    over = np.nonzero(np.abs(b_q) > bound)[0]
    if over.size:
        o = int(over[0])
        raise UnsupportedModelError(
            f"bias {b[o]!r} of channel {o} needs {b_q[o]:.3g} steps of its accumulator scale "
            f"{accumulator_scale[o]:.3g}, beyond the {dtype} bias range: widen that channel's weight scale")
    return b_q.astype(dtype)


def prepare_op(op: Op, qp: dict[str, QParams], fc: QuantizedFC | None):
    """The prepared integer parameters of one step-graph op, from the QParams of its tensors (and, for a
    FULLY_CONNECTED, its weight scales)."""
    ins = [qp[name] for name in op.inputs]
    out = qp[op.output]
    if op.kind == FULLY_CONNECTED:
        return prepare_fully_connected(ins[0], fc.w_scales, out)
    if op.kind == ADD:
        return prepare_add(ins[0], ins[1], out)
    if op.kind == SUB:
        return prepare_sub(ins[0], ins[1], out)
    if op.kind == MUL:
        return prepare_mul(ins[0], ins[1], out)
    if op.kind == LOGISTIC:
        return prepare_logistic(ins[0], out)
    if op.kind == TANH:
        return prepare_tanh(ins[0], out)
    raise AssertionError(f"unknown op kind {op.kind}")
