"""firmware_ref/kernel.py, the fused C kernel's arithmetic in Python, against the NumPy runtime's integers.

The kernel does not run the step graph op by op: it packs weights, tabulates, and requantizes in the SMMLAR
form, each exact only inside bounds the Prepare proves. Here those identities are checked in Python, on many
more inputs than the C tests can afford: each requantization form against TFLite's MultiplyByQuantizedMultiplier
(``grukit.core.fixedpoint``), and whole models (``run_model``) against the op-by-op specification. The C
itself is checked against the same specification in tests/test_firmware_gru.py.
"""

from __future__ import annotations

import numpy as np
import pytest

import grukit
from gru_factory import random_inputs, random_model
from grukit.core import fixedpoint as F
from grukit.core.qparams import Requant
from grukit.firmware_ref import kernel as KN
from grukit.firmware_ref.c_export import export_c
from grukit.runtime.int_gru_reference import run_int_reference
from grukit.verify import assert_identical
from test_firmware_gru import DATA, RANDOM_MODELS, S16_MODELS, _with_head_rows, make_case


@pytest.mark.parametrize("spec", RANDOM_MODELS + S16_MODELS, ids=[m[0] for m in RANDOM_MODELS + S16_MODELS])
def test_kernel_twin_equals_the_specification(spec):
    """Every state at every step and the output, on inputs 3x wider than calibration (saturating the input
    quantization, the gates and the state)."""
    case = make_case(*spec)
    I = case.qmodel.layers[0].input_size
    x_q = case.qmodel.quantize_input(random_inputs(900, N=24, T=16, I=I, scale=3.0))
    y, states = KN.run_model(KN.prepare_model(case.qmodel), x_q)
    y_ref, states_ref = run_int_reference(case.qmodel, x_q)
    assert_identical(y, y_ref, f"{case.name}: y")
    for layer, (got, expected) in enumerate(zip(states, states_ref)):
        assert_identical(got, expected, f"{case.name}: layer {layer} states")


@pytest.mark.parametrize("scheme", ["int8", "16x8"])
def test_kernel_twin_equals_the_runtime_on_the_demo(scheme):
    model = grukit.load(str(DATA / "demo_model.onnx"))
    qmodel = grukit.quantize(model, np.load(DATA / "demo_calib.npz")["x"], scheme=scheme)
    x_q = qmodel.quantize_input(np.load(DATA / "demo_val.npz")["x"][:64])
    y, states = KN.run_model(KN.prepare_model(qmodel), x_q)
    y_ref, states_ref = qmodel.run_int(x_q)
    assert_identical(y, y_ref, f"demo {scheme}: y")
    assert_identical(states[0], states_ref[0], f"demo {scheme}: states")


def test_requant_fast_s32_equals_tflite_requantization():
    """The kernel's one-SMMLAR requantization equals MultiplyByQuantizedMultiplier inside its bound."""
    rng = np.random.default_rng(0)
    for _ in range(300):
        multiplier = int(rng.integers(1 << 30, 1 << 31)) if rng.random() > 0.05 else 0
        shift = max(int(rng.integers(-33, 8)), -31)
        bound = (KN.REQUANT_BOUND >> max(shift, 0)) - 1
        x = np.concatenate([rng.integers(-bound, bound + 1, 2000), [-bound, bound, 0, 1, -1]])
        zero_point = int(rng.integers(-128, 128)) if -20 <= shift < -1 else 0  # zp needs room below 2^31
        q = KN.requant_s32(multiplier, shift, zero_point, bound, "test")
        expected = F.multiply_by_quantized_multiplier(x, multiplier, shift) + zero_point
        assert_identical(KN.requant_general_s32(2 * x, q), expected, f"general m={multiplier} shift={shift}")
        if q.left_shift == 0 and q.right_shift > 0:
            assert_identical(KN.requant_fast_s32(2 * x, q.multiplier, q.rounding, q.right_shift), expected,
                             f"fast m={multiplier} shift={shift} zp={zero_point}")


def test_unbounded_requantization_is_refused():
    with pytest.raises(grukit.UnsupportedModelError, match="2\\^29"):
        KN.requant_s32(1 << 30, 3, 0, 1 << 27, "fc row 0")
    with pytest.raises(grukit.UnsupportedModelError, match="2\\^29"):
        KN.requant_s32(1 << 30, 29, 0, 1, "fc row 0")  # one input of 1 shifted by 29 reaches 2^29


@pytest.mark.parametrize("shift", [29, 30])
def test_all_zero_row_keeps_left_shift_in_the_header_range(shift):
    """A row whose inputs are all 0 (bound 0) may carry any shift; the header's left_shift stays in [0, 28]
    and the row gives its zero point, as MultiplyByQuantizedMultiplier(0) + zp does."""
    q = KN.requant_s32(1 << 30, shift, 7, 0, "fc row 0")
    assert 0 <= q.left_shift <= 28
    zero = np.zeros(1, np.int64)
    assert_identical(KN.requant_general_s32(zero, q), F.multiply_by_quantized_multiplier(zero, 1 << 30, shift) + 7,
                     "all-zero row")


def test_requant_row_s16_equals_tflite_64bit():
    """The kernel's row form (int32 dot, one int64 multiply-add, a shift) equals TFLite's 64-bit
    MultiplyByQuantizedMultiplier of dot + bias for every shift it takes, biases beyond int32 included."""
    rng = np.random.default_rng(0)
    for shift in range(-31, 8):
        for _ in range(20):
            multiplier = int(rng.integers(1 << 30, 1 << 31)) if rng.random() > 0.1 else 0x7FFF8000
            ts = 15 - shift  # TFLite's total right shift
            dot_bound = int(rng.integers(1, 1 << 31)) >> max(16 - ts, 0)  # within the row's left shift
            # |bias| up to 2^46 (TFLite takes |acc| < 2^47) where the result stays an int32 (the row form's
            # contract: beyond it TFLite's own result wraps), else small.
            bias_limit = min(1 << 46, (1 << (ts + 30)) // ((multiplier + (1 << 15)) >> 16)) - dot_bound
            bias = int(rng.integers(-bias_limit, bias_limit)) if rng.random() > 0.3 else int(rng.integers(-999, 999))
            q = KN.requant_s64(multiplier, shift, bias, dot_bound, "test row")
            dot = np.concatenate([rng.integers(-dot_bound, dot_bound + 1, 200), [-dot_bound, dot_bound, 0, -1, 1]])
            expected = np.clip(F.multiply_by_quantized_multiplier_s64(dot + bias, multiplier, shift), -32768, 32767)
            assert_identical(KN.requant_row_s16(dot, q), expected,
                             f"16x8 row requant m={multiplier} shift={shift} bias={bias}")


def test_packing_round_trips():
    """The packed layouts decode to the weights they were packed from (the C reads them the same way)."""
    rng = np.random.default_rng(3)
    w = rng.integers(-127, 128, (12, 13)).astype(np.int8)
    fc8 = KN.FcS8("t", 12, 13, KN.pack_pairs_s8(w), np.zeros(12, np.int64), (), 0, 0)
    halves, low = KN._unpack_pairs(fc8)
    assert_identical(low[:, :13], w[0::2], "low bytes = rows B")
    assert_identical((halves[:, :13] - low[:, :13]) // 256, w[1::2], "halves = 256 rows A + rows B")
    fc16 = KN.FcS16("t", 12, 13, KN.pack_quads_s16(w), ())
    assert_identical(KN._unpack_quads(fc16)[:, :13], w, "16x8 quads")


def test_16x8_unbounded_dot_is_refused(tmp_path):
    """A row whose int32 dot product cannot be proven (weights 127 everywhere, shifted left by 8 for shift 7)
    is refused, naming the row."""
    case = make_case(*RANDOM_MODELS[7])
    H = case.qmodel.layers[-1].hidden_size
    qmodel = _with_head_rows(case.qmodel, {1: (np.full(H, 127, np.int8), 0, Requant(1 << 30, 7))})
    with pytest.raises(grukit.UnsupportedModelError, match="head row 1"):
        export_c(qmodel, tmp_path)


def test_twin_refuses_what_the_c_would_overflow():
    """The twin checks the int32 accumulators the C relies on: a packed product past 2^31 is an error."""
    w = np.full((4, 8), 127, np.int8)
    fc = KN.FcS8("big", 4, 8, KN.pack_pairs_s8(w), np.array([(1 << 31) - 1000, 0, 0, 0], np.int64),
                 (KN.RequantS32(1 << 30, 1, 1, 0),) * 4, 0, 0)
    with pytest.raises(OverflowError, match="big packed accumulator"):
        KN.fc_s8(fc, np.full((1, 8), 127, np.int8))
