"""Output-aware weight rounding against round-to-nearest on the quantity it optimises."""

import numpy as np
import pytest

from grukit.quantize.prepare import quantize_weights_per_channel
from grukit.quantize.rounding import round_weights_to_inputs


def _output_error(w, q, scales, x):
    return float(np.sum(((w - q * scales[:, None]) @ x.T) ** 2))


def _correlated_inputs(rng, n, k):
    # Inputs like a GRU's: correlated channels of different spread.
    mix = rng.standard_normal((k, k)) * np.linspace(0.2, 2.0, k)
    return rng.standard_normal((n, k)) @ mix


@pytest.mark.parametrize("seed, O, K", [(0, 48, 16), (1, 96, 64), (2, 8, 3)])
def test_output_error_is_lower_than_round_to_nearest(seed, O, K):
    rng = np.random.default_rng(seed)
    w = rng.standard_normal((O, K)) / np.sqrt(K)
    x_all = _correlated_inputs(rng, 8000, K)
    x, x_test = x_all[:4000], x_all[4000:]  # calibration and held-out inputs of one distribution
    q_nearest, scales = quantize_weights_per_channel(w)
    q_out = round_weights_to_inputs(w, scales, x.T @ x)
    assert q_out.dtype == np.int8 and np.abs(q_out.astype(int)).max() <= 127
    # Measured on the held-out half: the improvement is not an overfit to the calibration inputs.
    assert _output_error(w, q_out, scales, x_test) < 0.8 * _output_error(w, q_nearest, scales, x_test)


def test_an_update_past_the_int8_range_saturates_instead_of_wrapping():
    """Column 0 rounds down (126.49 -> 126); inputs 0 and 1 are anti-correlated, so the update moves that
    error onto column 1, whose weight is already the row's maximum: 127 plus the update, beyond int8. It
    must saturate at 127 (a cast without the clip would wrap it to a negative integer)."""
    w = np.array([[0.996, 1.0]])
    scales = np.array([1.0 / 127], np.float32)
    rng = np.random.default_rng(5)
    x0 = rng.standard_normal(1000)
    x = np.stack([x0, -x0 + 0.05 * rng.standard_normal(1000)], axis=1)
    assert round(0.996 * 127) == 126  # column 0 rounds down: its error is positive
    q = round_weights_to_inputs(w, scales, x.T @ x)
    assert q.tolist() == [[126, 127]]


def test_constant_zero_input_keeps_its_weights_finite():
    rng = np.random.default_rng(4)
    w = rng.standard_normal((6, 5))
    x = rng.standard_normal((500, 5))
    x[:, 2] = 0.0  # an input channel that never moves
    _, scales = quantize_weights_per_channel(w)
    q = round_weights_to_inputs(w, scales, x.T @ x)
    assert np.abs(q.astype(int)).max() <= 127
