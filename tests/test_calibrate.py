"""Calibration and observers: ranges from every step of every sequence, saturation counts."""

import numpy as np
import pytest

from grukit.quantize.calibrate import calibrate, count_saturation
from grukit.quantize.observers import RangeObserver
from grukit.core.float_gru import layers_forward

from gru_factory import random_inputs, random_model


def test_state_range_covers_late_steps():
    # Inputs that are small at first and large late: a range taken from early steps would miss the peak.
    model = random_model(seed=3, I=2, H=8, layers=2)
    x = random_inputs(3, N=4, T=120, I=2)
    x[:, :60] *= 0.01
    obs = calibrate(model, x)
    states = layers_forward(model, x)
    for layer in range(2):
        h = states[layer]
        assert obs[(layer, "h")].max == pytest.approx(float(h.max()), abs=0)
        assert obs[(layer, "h")].min == pytest.approx(float(h.min()), abs=0)
        assert float(np.abs(h[:, :60]).max()) < float(np.abs(h).max())


def test_every_graph_tensor_is_observed():
    from grukit.core.graph import step_ops

    for lbr in (0, 1):
        model = random_model(seed=1, lbr=lbr)
        obs = calibrate(model, random_inputs(1))
        names = {op.output for op in step_ops(lbr)} - {"h_new"} | {"h"}
        assert names <= {name for (layer, name) in obs if layer == 0}
        assert (1, "head0_out") in obs and (1, "head0_in") in obs and (0, "x") in obs


def test_saturation_counts_match_a_direct_count():
    model = random_model(seed=2, layers=1)
    x = random_inputs(2, N=5, T=30)
    obs = calibrate(model, x)
    h = layers_forward(model, x)[0]
    lo, hi = -0.1, 0.2
    counts = count_saturation(model, x, {(0, "h"): (lo, hi), (0, "x"): (-0.5, 0.5)})
    assert counts[(0, "h")] == (int(np.count_nonzero((h < lo) | (h > hi))), h.size)
    assert counts[(0, "x")] == (int(np.count_nonzero((x < -0.5) | (x > 0.5))), x.size)


def test_minmax_observer_is_exact_and_contains_zero():
    o = RangeObserver()
    o.update(np.array([0.5, 2.0]))
    o.update(np.array([1.0, 3.5]))
    assert o.range("minmax", 255, symmetric=False) == (0.0, 3.5)  # 0 is always representable
    assert o.range("minmax", 255, symmetric=True) == (-3.5, 3.5)


def test_percentile_observer_ignores_a_single_outlier():
    rng = np.random.default_rng(0)
    o = RangeObserver()
    o.update(np.concatenate([rng.standard_normal(100_000), [40.0]]))
    lo, hi = o.range("percentile", 255, symmetric=False)
    assert hi < 10.0
    assert o.range("minmax", 255, symmetric=False)[1] == 40.0


def _quantization_mse(x, lo, hi, levels=255):
    step = (hi - lo) / levels
    q = np.clip(np.floor((x - lo) / step + 0.5), 0, levels) * step + lo
    return float(np.mean((q - x) ** 2))


@pytest.mark.parametrize("symmetric", [False, True])
def test_mse_observer_beats_minmax_on_heavy_tails(symmetric):
    x = np.random.default_rng(1).laplace(size=60_000)  # long exponential tails: min/max wastes the range
    o = RangeObserver()
    o.update(x)
    mse_range = o.range("mse", 255, symmetric)
    minmax_range = o.range("minmax", 255, symmetric)
    assert mse_range[1] - mse_range[0] < minmax_range[1] - minmax_range[0]
    assert _quantization_mse(x, *mse_range) < _quantization_mse(x, *minmax_range)


def test_observer_sample_stays_bounded():
    from grukit.quantize.observers import SAMPLE_SIZE

    o = RangeObserver()
    for k in range(20):
        o.update(np.full(50_000, float(k)))
    assert o.sample.size <= SAMPLE_SIZE and o.count == 1_000_000
    # Uniform over the stream: late values are not crowded out by early ones.
    assert np.mean(o.sample >= 10) == pytest.approx(0.5, abs=0.05)


@pytest.mark.parametrize("scheme", ["int8", "16x8"])
def test_minmax_calibration_saturates_nothing_it_was_not_told_to(scheme):
    import grukit

    model = random_model(seed=9, layers=2, lbr=[1, 0], per_step=True)
    x = random_inputs(9, N=16, T=30)
    q = grukit.quantize(model, x, scheme=scheme, observer="minmax")
    capped = {"z_pre", "r_pre", "n_pre"}  # limited on purpose to where the activation still changes
    over = {k: v for k, v in q.report.saturated.items() if v[0] and k[1] not in capped}
    assert not over, f"min/max ranges clipped calibration values: {over}"
