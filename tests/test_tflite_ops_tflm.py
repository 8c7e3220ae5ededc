"""Each NumPy integer kernel (grukit.core.ops_int) against TFLite-Micro running the same single op.

For every op of the integer GRU step and both schemes (int8: asymmetric int8 activations, per-channel
int8 weights, int32 bias; 16x8: symmetric int16 activations, int8 weights, int64 bias) a one-op .tflite is
written with grukit's writer, from random but realistic quantization parameters (narrow and wide ranges,
zero points anywhere, saturating and coarse output scales), and run in the TFLite-Micro interpreter on
inputs covering the whole integer range (exhaustively where that is small). TFLM's integers must EQUAL the
NumPy kernel's. LiteRT runs the same file too; its kernels differ (lookup tables, other rounding paths),
so its largest difference in LSB is only printed (pytest -s shows it).
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from ai_edge_litert import interpreter as litert
from tflite_micro.python.tflite_micro import runtime as tflm_runtime

from grukit.core import ops_int as K
from grukit.core.qparams import INT_RANGE, QParams
from grukit.core.quantized import bias_scales
from grukit.export.tflite_writer import TFLiteBuilder, TensorQuant
from grukit.quantize import prepare as P
from grukit.verify import first_mismatch

# scheme -> (activation dtype, bias dtype)
SCHEMES = {"int8": ("int8", "int32"), "16x8": ("int16", "int64")}
SEEDS = range(6)
# Room for a [1, 65536] int16 input and output plus interpreter bookkeeping.
ARENA_BYTES = 1 << 20

KERNELS = {
    ("FULLY_CONNECTED", "int8"): K.fully_connected_s8, ("FULLY_CONNECTED", "int16"): K.fully_connected_s16,
    ("ADD", "int8"): K.add_s8, ("ADD", "int16"): K.add_s16,
    ("SUB", "int8"): K.sub_s8, ("SUB", "int16"): K.sub_s16,
    ("MUL", "int8"): K.mul_s8, ("MUL", "int16"): K.mul_s16,
    ("LOGISTIC", "int8"): K.logistic_s8, ("LOGISTIC", "int16"): K.logistic_s16,
    ("TANH", "int8"): K.tanh_s8, ("TANH", "int16"): K.tanh_s16,
}
PREPARE_BINARY = {"ADD": P.prepare_add, "SUB": P.prepare_sub, "MUL": P.prepare_mul}


# --- running a one-op model ----------------------------------------------------------------------------


def run_tflm(data: bytes, inputs: list[np.ndarray]) -> np.ndarray:
    interp = tflm_runtime.Interpreter.from_bytes(data, arena_size=ARENA_BYTES)
    for i, x in enumerate(inputs):
        interp.set_input(x, i)
    interp.invoke()
    return interp.get_output(0)


def run_litert(data: bytes, inputs: list[np.ndarray]) -> np.ndarray:
    interp = litert.Interpreter(model_content=data)
    interp.allocate_tensors()
    for detail, x in zip(interp.get_input_details(), inputs):
        interp.set_tensor(detail["index"], x)
    interp.invoke()
    return interp.get_tensor(interp.get_output_details()[0]["index"])


def assert_equal_to_tflm(got_tflm: np.ndarray, expected: np.ndarray, what: str, inputs: list[np.ndarray]) -> None:
    """Exact equality, dtype included; the message gives the first mismatch and the inputs there."""
    assert got_tflm.dtype == expected.dtype, f"{what}: TFLM gave {got_tflm.dtype}, NumPy {expected.dtype}"
    mismatch = first_mismatch(got_tflm, expected, f"{what} (TFLM vs NumPy)")
    if mismatch is not None and mismatch.position is not None:
        idx = mismatch.position
        at = [x[idx].item() if x.shape == expected.shape else x[idx[0]].tolist() for x in inputs]
        raise AssertionError(f"{mismatch}; input(s) there {at}")
    assert mismatch is None, str(mismatch)


def report_litert(data: bytes, inputs: list[np.ndarray], expected: np.ndarray, what: str) -> int:
    """Run LiteRT and print its largest difference to the NumPy kernel, in LSB (not asserted)."""
    got = run_litert(data, inputs)
    diff = int(np.abs(got.astype(np.int64) - expected.astype(np.int64)).max()) if expected.size else 0
    print(f"LiteRT vs NumPy {what}: max |diff| = {diff} LSB")
    return diff


def check_op(data: bytes, inputs: list[np.ndarray], expected: np.ndarray, what: str) -> None:
    assert_equal_to_tflm(run_tflm(data, inputs), expected, what, inputs)
    report_litert(data, inputs, expected, what)


# --- random quantization parameters and inputs -----------------------------------------------------------


def random_qparams(rng, dtype: str, amax: float) -> QParams:
    """An activation quantization covering about [-amax, amax]: int16 symmetric; int8 with its scale
    jittered and its zero point anywhere in [-128, 127] (one-sided ranges included)."""
    if dtype == "int16":
        return QParams(amax / 32767, 0, "int16")
    scale = amax / 127 * 10 ** rng.uniform(-0.3, 0.3)
    return QParams(scale, int(rng.integers(-128, 128)), "int8")


def random_amax(rng) -> float:
    """A real half-range from narrow (0.01) to wide (30), log-uniform."""
    return float(10 ** rng.uniform(-2.0, 1.5))


def full_range_values(rng, dtype: str, shape, extremes=()) -> np.ndarray:
    """Uniform over the whole integer range, with qmin, qmax and ``extremes`` placed first."""
    lo, hi = INT_RANGE[dtype]
    x = rng.integers(lo, hi + 1, size=shape).astype(np.dtype(dtype))
    flat = x.reshape(-1)
    special = [lo, hi, *extremes]
    flat[: len(special)] = special[: flat.size]
    return x


def describe(q: QParams) -> str:
    return f"{q.dtype}(scale={q.scale:.6g}, zp={q.zero_point})"


# --- FULLY_CONNECTED -------------------------------------------------------------------------------------


def fc_case(rng, act: str, bias_dtype: str, with_bias: bool):
    """Random W [O, K] with per-row magnitudes over three decades, bias, input/output quantization and an
    input batch holding the extreme accumulators (all qmin, all qmax, +-sign(W[0]) at the limits)."""
    K_in, O = int(rng.integers(1, 48)), int(rng.integers(1, 24))
    in_q = random_qparams(rng, act, random_amax(rng))
    W = rng.standard_normal((O, K_in)) * 10 ** rng.uniform(-2.0, 1.0, size=(O, 1))
    if O > 2:
        W[1] = 0.0  # an all-zero row: scale 1, output = requantized bias
    b = rng.standard_normal(O) * 10 ** rng.uniform(-2.0, 0.5) if with_bias else None
    w_q, w_scales = P.quantize_weights_per_channel(W)
    bias_q = P.quantize_bias(b, in_q.scale, w_scales, np.dtype(bias_dtype)) if with_bias else None

    lo, hi = INT_RANGE[act]
    sign0 = np.sign(w_q[0]).astype(np.int64)
    x_q = full_range_values(rng, act, (8, K_in))
    x_q[0], x_q[1], x_q[2] = lo, hi, in_q.zero_point
    x_q[3] = np.where(sign0 >= 0, hi, lo)  # the largest accumulator of channel 0
    x_q[4] = np.where(sign0 >= 0, lo, hi)  # and its smallest

    # Output range: the float outputs of these inputs, times 1/10 (saturating) .. 2 (coarse).
    y_float = in_q.dequantize(x_q).astype(np.float64) @ W.T + (0.0 if b is None else b)
    y_amax = max(float(np.abs(y_float).max()), 1e-3) * 10 ** rng.uniform(-1.0, 0.3)
    out_q = random_qparams(rng, act, y_amax)
    return x_q, w_q, w_scales, bias_q, in_q, out_q


def fc_model(x_q, w_q, w_scales, bias_q, in_q, out_q, act, bias_dtype) -> bytes:
    b = TFLiteBuilder(description="one FULLY_CONNECTED")
    N, K_in = x_q.shape
    O = w_q.shape[0]
    x = b.add_tensor("x", [N, K_in], act, quant=in_q)
    w = b.add_tensor("w", [O, K_in], "int8", data=w_q, quant=TensorQuant(w_scales, np.zeros(O, np.int64), 0))
    bias = -1
    if bias_q is not None:
        bias = b.add_tensor("b", [O], bias_dtype, data=bias_q,
                            quant=TensorQuant(bias_scales(in_q.scale, w_scales), np.zeros(O, np.int64), 0))
    y = b.add_tensor("y", [N, O], act, quant=out_q)
    b.add_op("FULLY_CONNECTED", [x, w, bias], [y])
    b.set_io([x], [y])
    return b.finish()


@pytest.mark.parametrize("with_bias", [True, False], ids=["bias", "no_bias"])
@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("scheme", SCHEMES)
def test_fully_connected_equals_tflm(scheme, seed, with_bias):
    act, bias_dtype = SCHEMES[scheme]
    rng = np.random.default_rng([seed, 1])
    x_q, w_q, w_scales, bias_q, in_q, out_q = fc_case(rng, act, bias_dtype, with_bias)
    params = P.prepare_fully_connected(in_q, w_scales, out_q)
    expected = KERNELS[("FULLY_CONNECTED", act)](x_q, w_q, bias_q, params)
    what = (f"FULLY_CONNECTED {scheme} seed={seed} {'bias' if with_bias else 'no bias'} K={x_q.shape[1]} "
            f"O={w_q.shape[0]} in={describe(in_q)} out={describe(out_q)}")
    check_op(fc_model(x_q, w_q, w_scales, bias_q, in_q, out_q, act, bias_dtype), [x_q], expected, what)


@pytest.mark.parametrize("scheme", SCHEMES)
def test_fully_connected_single_channel_per_tensor_path(scheme):
    """O = 1: one weight scale, which TFLM treats as per-tensor quantization (its other Prepare path)."""
    act, bias_dtype = SCHEMES[scheme]
    rng = np.random.default_rng(11)
    W, b = rng.standard_normal((1, 16)) * 0.3, np.array([0.7])
    in_q = random_qparams(rng, act, 2.0)
    out_q = random_qparams(rng, act, 3.0)
    w_q, w_scales = P.quantize_weights_per_channel(W)
    bias_q = P.quantize_bias(b, in_q.scale, w_scales, np.dtype(bias_dtype))
    x_q = full_range_values(rng, act, (64, 16))
    expected = KERNELS[("FULLY_CONNECTED", act)](x_q, w_q, bias_q, P.prepare_fully_connected(in_q, w_scales, out_q))
    data = fc_model(x_q, w_q, w_scales, bias_q, in_q, out_q, act, bias_dtype)
    check_op(data, [x_q], expected, f"FULLY_CONNECTED {scheme} O=1 in={describe(in_q)} out={describe(out_q)}")


# --- ADD, SUB, MUL ---------------------------------------------------------------------------------------


def binary_model(kind: str, shape, in1_q: QParams, in2_q: QParams, out_q: QParams) -> bytes:
    b = TFLiteBuilder(description=f"one {kind}")
    dtype = out_q.dtype
    a = b.add_tensor("a", shape, dtype, quant=in1_q)
    c = b.add_tensor("b", shape, dtype, quant=in2_q)
    y = b.add_tensor("y", shape, dtype, quant=out_q)
    b.add_op(kind, [a, c], [y])
    b.set_io([a, c], [y])
    return b.finish()


def binary_inputs(rng, dtype: str) -> tuple[np.ndarray, np.ndarray]:
    """int8: every (a, b) pair, 65,536 of them. int16: every pair of 17 edge values (extremes, +-1, 0,
    +-2^k boundaries) plus random pairs over the full range."""
    if dtype == "int8":
        v = np.arange(-128, 128, dtype=np.int8)
        a, c = np.repeat(v, 256), np.tile(v, 256)
    else:
        edges = np.array([-32768, -32767, -16385, -16384, -256, -255, -2, -1, 0, 1, 2, 255, 256, 16383,
                          16384, 32766, 32767], np.int16)
        a = np.concatenate([np.repeat(edges, edges.size), full_range_values(rng, "int16", 8192 - edges.size ** 2)])
        c = np.concatenate([np.tile(edges, edges.size), full_range_values(rng, "int16", 8192 - edges.size ** 2)])
    return a.reshape(1, -1), c.reshape(1, -1)


def binary_qparams(rng, kind: str, dtype: str, same_input_scale: bool):
    amax1 = random_amax(rng)
    amax2 = amax1 if same_input_scale else random_amax(rng)
    in1_q, in2_q = random_qparams(rng, dtype, amax1), random_qparams(rng, dtype, amax2)
    if same_input_scale:
        in2_q = QParams(in1_q.scale, in2_q.zero_point, dtype)
    # Output range: 1/10 (saturating) to 2x (coarse) of the largest exact result.
    out_amax = (amax1 * amax2 if kind == "MUL" else amax1 + amax2) * 10 ** rng.uniform(-1.0, 0.3)
    return in1_q, in2_q, random_qparams(rng, dtype, out_amax)


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("scheme", SCHEMES)
@pytest.mark.parametrize("kind", ["ADD", "SUB", "MUL"])
def test_binary_op_equals_tflm(kind, scheme, seed):
    act, _ = SCHEMES[scheme]
    rng = np.random.default_rng([seed, 2])
    # Seed 0 uses one scale for both inputs, as the GRU's h - n and n + z * (h - n) often do.
    in1_q, in2_q, out_q = binary_qparams(rng, kind, act, same_input_scale=(seed == 0))
    a, c = binary_inputs(rng, act)
    params = PREPARE_BINARY[kind](in1_q, in2_q, out_q)
    expected = KERNELS[(kind, act)](a, c, params)
    what = f"{kind} {scheme} seed={seed} in1={describe(in1_q)} in2={describe(in2_q)} out={describe(out_q)}"
    check_op(binary_model(kind, list(a.shape), in1_q, in2_q, out_q), [a, c], expected, what)


# --- LOGISTIC, TANH --------------------------------------------------------------------------------------

# int16 input scales that take TFLM's special paths: exact powers of two (2^-12 is LOGISTIC's and TANH's
# shortcut, 2^-11 TANH's only), one within CheckedLog2's 1e-3 tolerance of 2^-12 (treated as exactly
# 2^-12), one just outside it, and a coarse and a fine power of two that take the general path.
INT16_ACTIVATION_SCALES = {
    "pot_2^-12": 2.0 ** -12,
    "pot_2^-11": 2.0 ** -11,
    "near_pot_2^-12": 2.0 ** -12 * 2.0 ** 5e-4,
    "off_pot_2^-12": 2.0 ** -12 * 2.0 ** 2e-3,
    "pot_2^-8": 2.0 ** -8,
    "pot_2^-14": 2.0 ** -14,
}


def unary_model(kind: str, shape, in_q: QParams, out_q: QParams) -> bytes:
    b = TFLiteBuilder(description=f"one {kind}")
    x = b.add_tensor("x", shape, in_q.dtype, quant=in_q)
    y = b.add_tensor("y", shape, out_q.dtype, quant=out_q)
    b.add_op(kind, [x], [y])
    b.set_io([x], [y])
    return b.finish()


def all_values(dtype: str) -> np.ndarray:
    """Every value of the type, as a [1, 2^bits] tensor: the activations are tested exhaustively."""
    lo, hi = INT_RANGE[dtype]
    return np.arange(lo, hi + 1, dtype=np.dtype(dtype)).reshape(1, -1)


def output_qparams(kind: str, dtype: str) -> QParams:
    return P.logistic_output_qparams(dtype) if kind == "LOGISTIC" else P.tanh_output_qparams(dtype)


def check_activation(kind: str, in_q: QParams, what: str) -> None:
    out_q = output_qparams(kind, in_q.dtype)
    params = (P.prepare_logistic if kind == "LOGISTIC" else P.prepare_tanh)(in_q, out_q)
    x = all_values(in_q.dtype)
    expected = KERNELS[(kind, in_q.dtype)](x, params)
    check_op(unary_model(kind, list(x.shape), in_q, out_q), [x], expected, f"{what} in={describe(in_q)}")


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("scheme", SCHEMES)
@pytest.mark.parametrize("kind", ["LOGISTIC", "TANH"])
def test_activation_equals_tflm(kind, scheme, seed):
    """Random input ranges from +-0.05 (all inside the linear part) to +-40 (mostly saturated)."""
    act, _ = SCHEMES[scheme]
    rng = np.random.default_rng([seed, 3])
    in_q = random_qparams(rng, act, float(10 ** rng.uniform(math.log10(0.05), math.log10(40.0))))
    check_activation(kind, in_q, f"{kind} {scheme} seed={seed}")


@pytest.mark.parametrize("scale_name", INT16_ACTIVATION_SCALES)
@pytest.mark.parametrize("kind", ["LOGISTIC", "TANH"])
def test_activation_s16_power_of_two_scales_equal_tflm(kind, scale_name):
    in_q = QParams(INT16_ACTIVATION_SCALES[scale_name], 0, "int16")
    check_activation(kind, in_q, f"{kind} 16x8 {scale_name}")


@pytest.mark.parametrize("zero_point", [-128, 0, 127])
@pytest.mark.parametrize("scale", [1 / 256, 1 / 16, 0.5], ids=["fine", "mid", "coarse"])
@pytest.mark.parametrize("kind", ["LOGISTIC", "TANH"])
def test_activation_s8_edge_zero_points_equal_tflm(kind, scale, zero_point):
    """Zero points at both ends of the int8 range (one-sided inputs) and at 0, fine to coarse scales."""
    check_activation(kind, QParams(scale, zero_point, "int8"), f"{kind} int8")


def test_sub_s8_case_sensitive_to_prepare_precision():
    """A SUB whose multipliers differ when Prepare divides the scales in float32 rather than in double
    (outputs then differ by one LSB for some pairs): pins down which arithmetic TFLM's Prepare uses."""
    in1_q = QParams(0.00034068876993842423, 32, "int8")
    in2_q = QParams(0.0005404071416705847, 91, "int8")
    out_q = QParams(0.0008345584501512349, -121, "int8")
    a, c = binary_inputs(np.random.default_rng(0), "int8")
    expected = K.sub_s8(a, c, P.prepare_sub(in1_q, in2_q, out_q))
    data = binary_model("SUB", list(a.shape), in1_q, in2_q, out_q)
    check_op(data, [a, c], expected, f"SUB int8 in1={describe(in1_q)} in2={describe(in2_q)} out={describe(out_q)}")
