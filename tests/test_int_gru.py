"""The integer GRU runtime: structure, streaming, state handling and closeness to float.

Bit-exactness against an independent integer implementation is tested against TFLite-Micro
(test_tflite_gru.py) and the C kernel (test_firmware_gru.py); here the runtime's own contracts.
"""

import numpy as np
import pytest

import grukit
from grukit.core import fixedpoint as F
from grukit.core import ops_int as K
from grukit.core.errors import BadInputError, UnsupportedModelError
from grukit.core.graph import FULLY_CONNECTED, recurrent_ops, step_ops
from grukit.quantize.prepare import quantize_bias
from grukit.runtime import int_gru, int_gru_plan
from grukit.runtime.int16_loops import _requantize_clamp
from grukit.runtime.int_gru import _plans, layer_forward_int
from grukit.runtime.int_gru_plan import (_UNARY_KERNELS, BINARY, HIGH, LOW, AddSub16, FloatRequant, Mul16,
                                         _Float64Requant, decode_s8, encode_s8, int8_encodings, requantize_bounded)
from grukit.runtime.int_gru_reference import layer_forward_int_reference, run_op
from grukit.verify import assert_identical
from grukit.core.model import GRULayer

from gru_factory import random_direction, random_inputs, random_model

# Integer vs float on random unit-gain models, relative to the output's spread: int8 rounding of a
# dozen chained ops stays within a few percent; 16x8 within a fraction of one.
CLOSE = {"int8": 0.08, "16x8": 0.01}

CASES = [
    dict(layers=1, lbr=1, per_step=False),  # PyTorch-style, last-step head
    dict(layers=1, lbr=0, per_step=False),  # ONNX default variant
    dict(layers=2, lbr=[1, 0], per_step=True),  # stacked, mixed variants, every-step head
    dict(layers=3, lbr=1, per_step=True),  # three layers
]


@pytest.mark.parametrize("scheme", ["int8", "16x8"])
@pytest.mark.parametrize("case", CASES)
def test_integer_output_close_to_float(scheme, case):
    model = random_model(seed=7, **case)
    x = random_inputs(7, N=32, T=25)
    q = grukit.quantize(model, x, scheme=scheme)
    y_f, y_q = model.predict(x), q.predict(x)
    spread = float(y_f.max() - y_f.min())
    assert np.max(np.abs(y_q - y_f)) <= CLOSE[scheme] * spread


@pytest.mark.parametrize("scheme, width", [("int8", np.int8), ("16x8", np.int16)])
def test_every_tensor_is_integer_of_the_scheme_width(scheme, width):

    model = random_model(seed=1, layers=1, lbr=0)
    x = random_inputs(1)
    q = grukit.quantize(model, x, scheme=scheme)
    layer = q.layers[0]
    env = {"x": q.quantize_input(x)[:, 0], "h": np.zeros((x.shape[0], layer.hidden_size), width)}
    for op in layer.ops:
        env[op.output] = run_op(op, layer, env)
        assert env[op.output].dtype == width, op.output
    assert q.quantize_input(x).dtype == width


@pytest.mark.parametrize("scheme", ["int8", "16x8"])
def test_streaming_reproduces_the_sequence_exactly(scheme):
    model = random_model(seed=4, layers=2, lbr=[0, 1], per_step=True)
    x = random_inputs(4, N=3, T=15)
    q = grukit.quantize(model, x, scheme=scheme)
    x_q = q.quantize_input(x)
    y_seq, states = q.run_int(x_q)
    s = q.stream(batch=3)
    for t in range(x.shape[1]):
        y_t = s.step(x_q[:, t])
        assert_identical(y_t, y_seq[:, t], f"y at step {t}")
        for k, st in enumerate(s.state):
            assert_identical(st, states[k][:, t], f"layer {k} state at step {t}")


def test_stream_state_save_restore_and_reset():
    model = random_model(seed=5, layers=2, per_step=True)
    x = random_inputs(5, N=1, T=12)
    q = grukit.quantize(model, x)
    x_q = q.quantize_input(x)
    s = q.stream()
    for t in range(6):
        s.step(x_q[:, t])
    saved = s.state
    after = [s.step(x_q[:, t]) for t in range(6, 12)]
    s.restore(saved)
    again = [s.step(x_q[:, t]) for t in range(6, 12)]
    for t, (a, b) in enumerate(zip(after, again)):
        assert_identical(b, a, f"after restore, step {t + 6}")
    s.reset()
    assert all(not st.any() for st in s.state)
    assert_identical(s.step(x_q[:, 0]), q.run_int(x_q[:, :1])[0][:, 0], "first step after reset")
    with pytest.raises(ValueError):
        s.restore(saved[:1])


def test_last_step_head_is_the_per_step_head_at_the_end():
    x = random_inputs(6, N=4, T=10)
    last = grukit.quantize(random_model(seed=6, per_step=False), x)
    every = grukit.quantize(random_model(seed=6, per_step=True), x)
    # Same weights and calibration ranges except the head output range (last step vs all steps), so
    # compare the states, which are identical.
    _, s_last = last.run_int(last.quantize_input(x))
    _, s_every = every.run_int(every.quantize_input(x))
    assert_identical(s_last[0], s_every[0], "states")


def test_bidirectional_is_refused_with_a_reason():
    rng = np.random.default_rng(0)
    model = random_model(seed=0, I=4, H=8, head=False)
    bi = model.with_layers([GRULayer(random_direction(rng, 4, 8), 1, reverse=random_direction(rng, 4, 8))])
    with pytest.raises(UnsupportedModelError, match="bidirectional"):
        grukit.quantize(bi, random_inputs(0))


def test_unknown_scheme_and_observer_are_refused():
    model = random_model(seed=0)
    with pytest.raises(BadInputError, match="scheme"):
        grukit.quantize(model, random_inputs(0), scheme="int4")
    with pytest.raises(BadInputError, match="observer"):
        grukit.quantize(model, random_inputs(0), observer="kl")


def test_integer_input_of_the_wrong_width_is_refused():
    q = grukit.quantize(random_model(seed=0), random_inputs(0))
    with pytest.raises(TypeError, match="int8"):
        q.predict_int(np.zeros((1, 3, 4), np.int16))


@pytest.mark.parametrize("observer", ["minmax", "percentile", "mse"])
def test_every_observer_quantizes(observer):
    model = random_model(seed=8)
    x = random_inputs(8, N=16)
    q = grukit.quantize(model, x, observer=observer)
    assert q.report.observer == observer
    assert np.isfinite(q.predict(x)).all()
    # The report's ranges are the ones the integer graph uses, and its saturation counts follow the observer:
    # min/max clips nothing but the gate pre-activations it caps on purpose; percentile and MSE clip some.
    layer_ranges = {(li, name): layer.qparams[name].range for li, layer in enumerate(q.layers)
                    for name in layer.qparams if (li, name) in q.report.quantized}
    assert layer_ranges and all(q.report.quantized[key] == rng for key, rng in layer_ranges.items())
    clipped = {key for key, (saturated, seen) in q.report.saturated.items() if saturated}
    assert all(seen > 0 for _, seen in q.report.saturated.values())
    if observer == "minmax":
        assert clipped <= {(li, name) for li in range(len(q.layers)) for name in ("z_pre", "r_pre", "n_pre")}, clipped
        return
    # The others only ever narrow min/max's ranges (by at most a step of float32 scale rounding); on these
    # uniform-ish values the percentile observer drops its 0.01% tails, MSE keeps everything.
    minmax = grukit.quantize(model, x, observer="minmax").report.quantized
    for key, (lo, hi) in q.report.quantized.items():
        step = (minmax[key][1] - minmax[key][0]) / 255
        assert minmax[key][0] - step <= lo and hi <= minmax[key][1] + step, (key, (lo, hi), minmax[key])
    if observer == "percentile":
        assert clipped, "the percentile observer clipped no calibration value"


@pytest.mark.parametrize("scheme", ["int8", "16x8"])
@pytest.mark.parametrize("seed, layers, lbr, per_step", [
    (10, 1, 1, False),       # PyTorch variant
    (11, 1, 0, False),       # ONNX-default variant: MUL before the hidden FC
    (12, 3, [0, 1, 0], True),  # stacked, mixed, every step
])
@pytest.mark.parametrize("block_rows, input_ahead", [
    (16 * 12, True),   # one input-side block
    (16 * 5, True),    # blocks computed ahead in the worker thread
    (16 * 5, False),   # blocks computed in line (a batch split across processes)
])
def test_compiled_plan_equals_the_op_by_op_specification(scheme, seed, layers, lbr, per_step, block_rows,
                                                         input_ahead, monkeypatch):

    monkeypatch.setattr(int_gru, "INPUT_BLOCK_ROWS", block_rows)  # 16 sequences x 12 or 5 steps
    model = random_model(seed=seed, layers=layers, lbr=lbr, per_step=per_step, scale=3.0)
    x = random_inputs(seed, N=16, T=12, scale=2.0)
    q = grukit.quantize(model, x[:4], scheme=scheme)  # calibrate on a subset: the rest saturates some tensors
    seq = q.quantize_input(x)
    for k, layer in enumerate(q.layers):
        fast = layer_forward_int(layer, seq, input_ahead=input_ahead)
        spec = layer_forward_int_reference(layer, seq)
        assert_identical(fast, spec, f"layer {k} states")
        seq = spec


@pytest.mark.parametrize("lbr", [0, 1])
def test_int8_codes_give_every_binary_op_one_high_and_one_low_operand(lbr):

    shifts = int8_encodings(step_ops(lbr))
    for op in step_ops(lbr):
        if op.kind in BINARY:
            assert sorted(shifts[name] for name in op.inputs) == [LOW, HIGH], op
    assert shifts["h_new"] == shifts["h"]  # the state is fed back as it was written
    # Per-step FC outputs are never shifted (an extra pass every step): here a coding exists with none.
    assert all(shifts[op.output] == LOW for op in recurrent_ops(lbr) if op.kind == FULLY_CONNECTED)


@pytest.mark.parametrize("shift", [0, 8])
def test_int8_codes_round_trip_every_value(shift):

    v = np.arange(-128, 128, dtype=np.int64).astype(np.int8)
    code = encode_s8(v, shift)
    assert code.dtype == np.uint16
    assert_identical(code.astype(np.int64), (v.astype(np.int64) + 128) << shift, "codes")
    assert_identical(decode_s8(code, shift), v, "decoded")


from hypothesis import given, settings, strategies as st  # noqa: E402


@settings(max_examples=300, deadline=None)
@given(
    acc=st.lists(st.integers(-(1 << 31) + 1, (1 << 31) - 1), min_size=1, max_size=32),
    multiplier=st.integers(1 << 30, (1 << 31) - 1),
    shift=st.integers(-31, 7),
)
def test_bounded_requantization_equals_multiply_by_quantized_multiplier(acc, multiplier, shift):

    acc = np.array(acc, np.int64)
    acc = acc >> max(shift, 0)  # the precondition: no wrap in the left shift
    # Ties of the final rounding, both signs: accumulators that land exactly halfway.
    acc = np.concatenate([acc, -acc, acc | 1])
    acc = np.clip(acc, -((1 << 31) - 1) >> max(shift, 0), ((1 << 31) - 1) >> max(shift, 0))
    got = requantize_bounded(acc, np.int64(multiplier), np.int64(shift))
    expected = F.multiply_by_quantized_multiplier(acc, multiplier, shift)
    assert_identical(got, expected, f"multiplier {multiplier}, shift {shift}")


@settings(max_examples=300, deadline=None)
@given(
    p=st.lists(st.integers(-(1 << 31) + 1, (1 << 31) - 1), min_size=1, max_size=32),
    multiplier=st.integers(1 << 30, (1 << 31) - 1),
    right=st.integers(0, 31),
    bound=st.integers(1, 1 << 15),
)
def test_compiled_requantization_equals_the_bounded_one(p, multiplier, right, bound):
    # int16_loops' per-element requantization (ADD, SUB, MUL of the 16x8 plan) against the vectorized one.

    p = np.array(p, np.int64)
    p = np.concatenate([p, -p, p | 1, [0, 1, -1]])
    expected = np.clip(requantize_bounded(p, np.int64(multiplier), np.int64(-right)), -bound, bound - 1)
    got = np.array([_requantize_clamp(v, multiplier, right, -bound, bound - 1) for v in p])
    assert_identical(got, expected, f"multiplier {multiplier}, right shift {right}")


@pytest.mark.parametrize("lbr", [0, 1])
def test_int16_loops_equal_the_kernels_on_every_input(lbr):
    # Every 16x8 ADD / SUB (its inputs by table, by shift or held as terms; a LOGISTIC / TANH folded in) and
    # MUL of the plan, on random int16 operands and the extremes, against the specification kernels.

    model = random_model(seed=41, lbr=lbr, scale=3.0)
    q = grukit.quantize(model, random_inputs(41, N=8, T=10, scale=2.0), scheme="16x8")
    layer = q.layers[0]
    rng = np.random.default_rng(41)
    a, b = rng.integers(-32768, 32768, (2, 64, 48)).astype(np.int16)
    a[0, :4], b[0, :4] = [-32768, 32767, 0, -1], [32767, -32768, -1, 0]
    recurrent = _plans(layer)[1]
    ops = {op.output: op for op in layer.ops}
    checked = {AddSub16: 0, Mul16: 0}
    for fn, inputs, outputs in recurrent.steps:
        if not isinstance(fn, (AddSub16, Mul16)):
            continue
        (output,) = outputs
        op = ops[output] if ops[output].inputs == inputs else next(o for o in layer.ops if o.inputs == inputs)
        kind = op.kind.lower()
        expected = getattr(K, f"{kind}_s16")(a, b, layer.prepared[op.output])
        if op.output != output:  # a unary op folded in
            unary = ops[output]
            expected = _UNARY_KERNELS[(unary.kind, "int16")](expected, layer.prepared[output])
        held = [fn.term(i, x) if isinstance(fn, AddSub16) and fn.held[i] else x for i, x in enumerate((a, b))]
        assert_identical(fn(*held), expected, f"{output} ({op.kind} of {inputs})")
        checked[type(fn)] += 1
    assert checked == {AddSub16: 5, Mul16: 2}


@pytest.mark.parametrize("lbr", [0, 1])
def test_int16_add_sub_terms_equal_the_kernel_for_every_input(lbr):
    # Each ADD / SUB input's term, by table or by shift, is the kernel's own rescale of that input; the input
    # of the larger scale takes the shift (its rescale is exactly 1/2), so every op here uses one.

    model = random_model(seed=40, lbr=lbr, scale=3.0)
    q = grukit.quantize(model, random_inputs(40, N=8, T=10, scale=2.0), scheme="16x8")
    layer = q.layers[0]
    v = np.arange(-32768, 32768, dtype=np.int64)
    add_subs = [fn for plan in _plans(layer) for fn, _, _ in plan.steps if isinstance(fn, AddSub16)]
    assert len(add_subs) == 5
    for fn in add_subs:
        p = fn.params
        assert fn.shifts.count(None) < 2, "neither input took the shift"
        for i, (zp, requant) in enumerate(((p.input1_zero_point, p.input1), (p.input2_zero_point, p.input2))):
            expected = F.rescale_smaller_than_one((v - zp) << p.left_shift, requant)
            assert_identical(fn.term(i, v.astype(np.int16)).astype(np.int64), expected, f"term {i}")
    # The input-side operands arrive as terms, computed ahead of the recurrence.
    recurrent = _plans(layer)[1]
    assert set(recurrent.holders) == {"gx_z", "gx_r", "gx_n"}


@settings(max_examples=300, deadline=None)
@given(
    acc=st.lists(st.integers(-(1 << 20), 1 << 20), min_size=1, max_size=32),
    bias=st.integers(-(1 << 20), 1 << 20),
    zero_point=st.integers(-128, 127),
    multiplier=st.integers(1 << 30, (1 << 31) - 1),
    shift=st.integers(-31, 7),
)
def test_float_requantization_equals_multiply_by_quantized_multiplier(acc, bias, zero_point, multiplier, shift):

    acc = np.array(acc, np.int64) >> max(shift, 0)
    acc = np.concatenate([acc, -acc, acc | 1, [0, 1, -1, -bias, -bias - 1]])  # incl. a zero total
    m, sh = np.array([multiplier], np.int64), np.array([shift], np.int64)
    b, zp = np.array([bias >> max(shift, 0)], np.int64), np.array([zero_point], np.int64)
    max_abs = np.abs(acc).max(keepdims=True) + np.abs(b)
    if not FloatRequant.exact_for(max_abs, m, sh):
        return  # outside the proven-exact domain the plan does not use it
    column = acc.astype(np.float64)[:, None]  # [rows, 1 channel]
    wide = 1 << 40  # no clamping: compare the requantization itself
    got = FloatRequant(m, sh, b, zp, max_abs, -wide, wide)(column)[:, 0].astype(np.int64)
    expected = F.multiply_by_quantized_multiplier(acc + b, multiplier, shift) + zero_point
    assert_identical(got, expected, "float requant")
    # The plan's form: uint16 codes y + 128, clamped to [0, 255] before the truncating cast.
    codes = FloatRequant(m, sh, b, zp + 128, max_abs, 0, 255).to_uint16(column)[:, 0]
    assert_identical(codes.astype(np.int64), np.clip(expected + 128, 0, 255), "float requant codes")


@settings(max_examples=200, deadline=None)
@given(
    acc=st.lists(st.integers(-(1 << 35), 1 << 35), min_size=1, max_size=32),
    bias=st.integers(-(1 << 30), 1 << 30),
    multiplier=st.integers(1 << 30, (1 << 31) - 1),
    shift=st.integers(-31, 7),
)
def test_float_requantization_64bit_equals_the_kernel(acc, bias, multiplier, shift):

    m = np.array([multiplier], np.int64)
    reduced = np.where(m < 0x7FFF0000, (m + (1 << 15)) >> 16, 0x7FFF)
    # Accumulators whose results land inside int16 (near every rounding step) as well as saturating ones.
    inside = ((np.arange(-40, 40, 3, dtype=np.int64) << (15 - shift)) // reduced) - bias
    acc = np.concatenate([np.array(acc, np.int64), [0, -1, 1, -bias], inside, inside + 1, inside - 1])
    total = acc + bias
    if int(np.abs(acc).max() + abs(bias)) * int(reduced[0]) >= 1 << 52:
        return
    unwrapped = (total * reduced + (1 << (14 - shift))) >> (15 - shift)
    if np.abs(unwrapped).max() >= 1 << 31:
        return  # would wrap in the int32 cast: the plan keeps the integer path there
    expected = np.clip(F.multiply_by_quantized_multiplier_s64(total, m, np.int64(shift)), -32768, 32767)
    requant = _Float64Requant(reduced, 15 - np.int64(shift), np.array([bias]), np.array([0]), -32768, 32767)
    got = requant(acc.astype(np.float64)[:, None], np.empty((1, acc.size, 1), np.int16))[0, :, 0]
    assert_identical(got.astype(np.int64), expected, "64-bit float requant")


@pytest.mark.parametrize("scheme", ["int8", "16x8"])
def test_a_large_bias_on_tiny_weights_is_kept_not_saturated(scheme):
    # A candidate-gate unit whose input weights are ~0 but whose bias is 2: at the weights' own scale the
    # bias would need ~10^9 accumulator steps. The weight scale is widened instead, and the report says so.
    model = random_model(seed=21, I=3, H=8, layers=1)
    d = model.layers[0].forward
    W, Wb = d.W.copy(), d.Wb.copy()
    W[2, 5] = 1e-7
    Wb[2, 5] = 2.0
    model = model.with_layers([GRULayer(type(d)(W=W, R=d.R, Wb=Wb, Rb=d.Rb), 1)])
    x = random_inputs(21, N=16, T=12, I=3)
    q = grukit.quantize(model, x, scheme=scheme)
    fc, params = q.layers[0].fcs["gx_n"], q.layers[0].qparams["x"]
    bias_real = fc.bias_q[5] * params.scale * float(fc.w_scales[5])
    assert bias_real == pytest.approx(2.0, rel=1e-3)  # Wb_n: the x-side bias of the candidate gate
    # int8's int32 accumulator cannot hold it at the weights' scale; 16x8's int64 one can.
    assert any("layer 0 gx_n channel 5" in note for note in q.report.notes) == (scheme == "int8")
    y_f, y_q = model.predict(x), q.predict(x)
    assert np.max(np.abs(y_q - y_f)) <= CLOSE[scheme] * float(y_f.max() - y_f.min())


def test_quantize_bias_refuses_rather_than_saturates():

    with pytest.raises(UnsupportedModelError, match="channel 1"):
        quantize_bias(np.array([0.1, 2.0]), 1 / 128, np.array([0.01, 1e-9], np.float32), np.int32)


def test_stream_step_refuses_the_wrong_width_or_size():
    q = grukit.quantize(random_model(seed=0), random_inputs(0))
    s = q.stream()
    with pytest.raises(TypeError, match="int8"):
        s.step(np.full((1, 4), 1000, np.int32))  # would wrap silently if cast
    with pytest.raises(ValueError, match="4 features"):
        s.step(np.zeros((1, 3), np.int8))


@pytest.mark.parametrize("scheme", ["int8", "16x8"])
def test_plan_fallback_paths_equal_the_specification(scheme, monkeypatch):
    # The plan's exact integer fallbacks (int64 requantization, the generic int16 MUL kernel) run where a
    # fast path's bound does not hold; force them here so they are checked against the spec too.

    monkeypatch.setattr(int_gru_plan.FloatRequant, "exact_for", staticmethod(lambda *a: False))
    monkeypatch.setattr(int_gru_plan.Mul16, "applies", staticmethod(lambda *a: False))
    model = random_model(seed=31, layers=2, lbr=[1, 0], per_step=True, scale=3.0)
    x = random_inputs(31, N=8, T=10, scale=2.0)
    q = grukit.quantize(model, x[:3], scheme=scheme)
    seq = q.quantize_input(x)
    for k, layer in enumerate(q.layers):
        plan_fc = int_gru_plan.LayerPlan(layer, layer.ops).steps[0][0]
        assert isinstance(plan_fc, int_gru_plan.FCGroup)
        if scheme == "int8":
            assert plan_fc.float_requant is None  # the int64 path is the one under test
        spec = layer_forward_int_reference(layer, seq)
        assert_identical(layer_forward_int(layer, seq), spec, f"layer {k} states (fallback paths)")
        seq = spec
