"""Numerics under stress (issue 16): extreme integer inputs through every executor of the integer GRU, which
must agree on every integer.

For each model below (both schemes, both gate variants, stacked and per-step heads, weights and inputs from
a thousandth to tens of thousands of the usual scale), hypothesis draws input sequences made to stress the
arithmetic: every value at the clamp limits, alternating rails, bursts of rail values among random ones. Each
sequence runs through

- the op-by-op specification (runtime/int_gru_reference.py),
- the fast runtime (``QuantizedGRUModel.run_int``),
- the C kernel on the host, built with UBSan and ASan (-fno-sanitize-recover: any undefined behaviour or
  bad access fails the run),
- TFLite-Micro on the step .tflite, states fed back,

and every state and output must be identical (the first mismatch is printed). One 10,000-step sequence per
scheme does the same over a long run. A model built to drive its state to the rails shows the state saturating
at the integer limit and staying there, never wrapping round.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import firmware_build as fb
import grukit
from gru_factory import random_inputs, random_model
from grukit.core.model import GRUDirection, GRULayer, GRUModel
from grukit.export.tflite_export import export_tflite_step
from grukit.firmware_ref.host import run_c_host
from grukit.runtime.int_gru_reference import run_int_reference
from grukit.verify import assert_identical, compare_tflite_micro

I, H, O = 3, 13, 4  # odd sizes: the kernel's 4-row blocks and 4-column groups have remainders
PATTERNS = ("lowest", "highest", "alternating rails", "rail bursts", "uniform")
EXAMPLES = 12  # per model; derandomized, so CI runs the same sequences every time
LONG_T = 10_000


@dataclass(frozen=True)
class Spec:
    scheme: str
    lbr: int
    layers: int = 1
    weight_scale: float = 2.0
    input_scale: float = 1.0
    per_step: bool = False


SPECS = {
    "int8-lbr1": Spec("int8", 1),
    "int8-lbr0-stacked-per-step": Spec("int8", 0, layers=2, per_step=True),
    "int8-tiny-scales": Spec("int8", 1, weight_scale=1e-3, input_scale=1e-4),
    "int8-huge-scales": Spec("int8", 0, weight_scale=40.0, input_scale=1e4),
    "16x8-lbr1": Spec("16x8", 1),
    "16x8-lbr0-stacked-per-step": Spec("16x8", 0, layers=2, per_step=True),
    "16x8-tiny-scales": Spec("16x8", 1, weight_scale=1e-3, input_scale=1e-4),
    "16x8-huge-weights": Spec("16x8", 0, weight_scale=40.0),
}


class Executors:
    """One quantized model and its step .tflite, run by all four executors."""

    def __init__(self, qmodel, folder):
        self.qmodel = qmodel
        self.folder = folder

    @cached_property
    def step_tflite(self):
        return export_tflite_step(self.qmodel, self.folder / "step.tflite")

    def check(self, x_q: np.ndarray, tflm: bool = True) -> tuple[np.ndarray, list[np.ndarray]]:
        """Every executor on x_q; asserts they agree and returns the specification's (y, states)."""
        y, states = run_int_reference(self.qmodel, x_q)
        for name, (y_got, states_got) in (("fast runtime", self.qmodel.run_int(x_q)),
                                          ("C kernel (UBSan + ASan)", run_c_host(self.qmodel, x_q, sanitize=True))):
            assert_identical(y_got, y, f"{name} y")
            for li, (got, want) in enumerate(zip(states_got, states)):
                assert_identical(got, want, f"{name} layer {li} state")
        if tflm:
            result = compare_tflite_micro(self.qmodel, self.step_tflite, x_q)
            assert result.bit_exact, f"TFLite-Micro: {result.mismatch()}"
        return y, states


@pytest.fixture(scope="module")
def sanitizers(tmp_path_factory):
    if not fb.sanitizers_work(fb.require_host_cc(), tmp_path_factory.mktemp("probe")):
        pytest.skip("the host cc cannot link -fsanitize=undefined,address (install libasan / libubsan)")


@pytest.fixture(scope="module", params=list(SPECS), ids=list(SPECS))
def executors(request, sanitizers, tmp_path_factory):
    spec = SPECS[request.param]
    model = random_model(seed=7, I=I, H=H, O=O, layers=spec.layers, lbr=spec.lbr, per_step=spec.per_step,
                         scale=spec.weight_scale)
    calib = random_inputs(7, N=16, T=20, I=I, scale=spec.input_scale)
    return Executors(grukit.quantize(model, calib, scheme=spec.scheme), tmp_path_factory.mktemp(request.param))


def stressed_inputs(qmodel, pattern: str, T: int, seed: int, N: int = 2) -> np.ndarray:
    info = np.iinfo(qmodel.input_q.np_dtype)
    lo, hi = info.min, info.max
    rng = np.random.default_rng(seed)
    shape = (N, T, qmodel.layers[0].input_size)
    if pattern == "lowest":
        x = np.full(shape, lo)
    elif pattern == "highest":
        x = np.full(shape, hi)
    elif pattern == "alternating rails":
        x = np.where((np.arange(T) // (1 + seed % 5)) % 2 == 0, hi, lo)[None, :, None] * np.ones(shape, np.int64)
    elif pattern == "rail bursts":
        x = rng.integers(lo, hi + 1, shape)
        burst = rng.random(shape) < 0.5
        x[burst] = rng.choice([lo, hi, qmodel.input_q.zero_point], size=int(burst.sum()))
    else:
        x = rng.integers(lo, hi + 1, shape)
    return x.astype(qmodel.input_q.np_dtype)


@settings(max_examples=EXAMPLES, deadline=None, derandomize=True, database=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(pattern=st.sampled_from(PATTERNS), T=st.integers(1, 40), seed=st.integers(0, 2**31 - 1))
def test_extreme_inputs_give_identical_integers_everywhere(executors, pattern, T, seed):
    executors.check(stressed_inputs(executors.qmodel, pattern, T, seed))


@pytest.mark.parametrize("scheme", ["int8", "16x8"])
def test_a_10000_step_sequence_is_identical_everywhere(scheme, sanitizers, tmp_path):
    model = random_model(seed=3, I=I, H=H, O=O, lbr=0, per_step=True)
    qmodel = grukit.quantize(model, random_inputs(3, N=16, T=20, I=I), scheme=scheme)
    x_q = stressed_inputs(qmodel, "rail bursts", LONG_T, seed=11, N=1)
    Executors(qmodel, tmp_path).check(x_q)


def railed_model(sign: float) -> GRUModel:
    """A GRU whose state is pushed to +1 (sign 1) or -1 (sign -1) as hard as its weights can: the candidate
    n = tanh(sign * 30 + 3 sum x + 3 sum h), fed inputs at the rail of the same sign, its own state feeding it
    back, every product as large as the input, the state and the weights make it. With n at the rail, h
    converges there geometrically (h_t = n (1 - z^t)) and, once there, stays: h = n + z (h - n)."""
    rng = np.random.default_rng(0)
    W = rng.uniform(-0.5, 0.5, (3, H, I))
    R = rng.uniform(-0.5, 0.5, (3, H, H))
    Wb = np.zeros((3, H))
    W[0], R[0] = W[0] / 10, R[0] / 10  # z near 1/2: the state moves to the rail in a few steps
    W[2], R[2], Wb[2] = 3.0, 3.0, 30.0 * sign
    return GRUModel(layers=(GRULayer(GRUDirection(W=W, R=R, Wb=Wb, Rb=np.zeros((3, H))),
                                     linear_before_reset=1),), head=None, name="railed")


@pytest.mark.parametrize("scheme", ["int8", "16x8"])
@pytest.mark.parametrize("sign", [1.0, -1.0], ids=["upper-rail", "lower-rail"])
def test_a_state_at_the_rail_saturates_and_never_wraps(scheme, sign, sanitizers, tmp_path):
    model = railed_model(sign)
    qmodel = grukit.quantize(model, np.abs(random_inputs(5, N=8, T=20, I=I)) * sign, scheme=scheme)
    x_q = stressed_inputs(qmodel, "highest" if sign > 0 else "lowest", 300, seed=0, N=1)
    _, (h,) = Executors(qmodel, tmp_path).check(x_q)
    # The state's integer for +-1.0 is the end of its range (its scale is max |h| / qmax, max |h| = 1). The
    # integer gate arithmetic settles a few LSB inside it (z h + (1 - z) n, each product rounded): from the
    # 40th step on every unit sits still there, and no step ever has the other sign (a wrap would).
    info = np.iinfo(h.dtype)
    assert qmodel.layers[0].qparams["h"].zero_point == 0
    settled = h[0, 40:].astype(np.int64) * int(sign)
    assert np.all(settled == settled[0]), "the state still moves at the rail"
    assert np.all(settled >= info.max - max(3, info.max // 1000)), np.unique(settled)
    assert np.all(np.sign(h[0].astype(np.int64)) == np.sign(sign)), np.unique(h[0])
