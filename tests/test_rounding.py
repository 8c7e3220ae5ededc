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


def test_constant_zero_input_keeps_its_weights_finite():
    rng = np.random.default_rng(4)
    w = rng.standard_normal((6, 5))
    x = rng.standard_normal((500, 5))
    x[:, 2] = 0.0  # an input channel that never moves
    _, scales = quantize_weights_per_channel(w)
    q = round_weights_to_inputs(w, scales, x.T @ x)
    assert np.abs(q.astype(int)).max() <= 127
