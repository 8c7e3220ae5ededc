"""The .keras loader against Keras's own predict, and proof that loading needs neither Keras nor TensorFlow."""

import os
import subprocess
import sys


import numpy as np
import pytest
import keras

from keras import layers  # noqa: E402

import grukit  # noqa: E402
from grukit.core.errors import UnsupportedModelError  # noqa: E402

# float32 GRU vs float32 GRU (Keras on torch) with a different summation order.
FLOAT_ATOL = 1e-5
T, I = 10, 1


def _seed_example():
    # The model users bring: Sequential([GRU(50, activation='tanh', input_shape=(10, 1)), Dense(1)]).
    return [keras.Input((T, I)), layers.GRU(50, activation="tanh"), layers.Dense(1)]


def _reset_after_false():
    return [keras.Input((T, I)), layers.GRU(16, reset_after=False), layers.Dense(1)]


def _two_stacked():
    return [keras.Input((T, I)), layers.GRU(12, return_sequences=True), layers.Dropout(0.2), layers.GRU(8),
            layers.Dense(2)]


def _every_step():
    return [keras.Input((T, I)), layers.GRU(12, return_sequences=True), layers.Dense(3)]


def _softmax_head():
    return [keras.Input((T, I)), layers.GRU(12, use_bias=False), layers.Dense(4, activation="softmax")]


def _sigmoid_no_input_layer():
    return [layers.GRU(6, input_shape=(T, I), reset_after=False), layers.Dense(1, activation="sigmoid")]


def _save(build, path):
    keras.utils.set_random_seed(0)
    model = keras.Sequential(build())
    model.compile(optimizer="adam", loss="mse")
    # Nudge the weights off their initial values (zero biases) so every bias path is exercised.
    for w in model.weights:
        w.assign(w.numpy() + 0.1 * np.random.default_rng(0).standard_normal(w.shape).astype(np.float32))
    model.save(str(path))
    return model


@pytest.mark.parametrize(
    "build",
    [_seed_example, _reset_after_false, _two_stacked, _every_step, _softmax_head, _sigmoid_no_input_layer],
)
def test_keras_matches_predict(tmp_path, build):
    path = tmp_path / "model.keras"
    kmodel = _save(build, path)
    model = grukit.load(path)
    assert model.meta["self_check"] == "keras"
    x = np.random.default_rng(1).standard_normal((5, T, I)).astype(np.float32)
    np.testing.assert_allclose(model.predict(x), kmodel.predict(x, verbose=0), atol=FLOAT_ATOL, rtol=0)


def test_reset_after_sets_linear_before_reset(tmp_path):
    _save(_two_stacked, tmp_path / "a.keras")
    _save(_reset_after_false, tmp_path / "b.keras")
    assert grukit.load(tmp_path / "a.keras").layers[0].linear_before_reset == 1
    assert grukit.load(tmp_path / "b.keras").layers[0].linear_before_reset == 0


@pytest.mark.parametrize(
    "build, named",
    [
        (lambda: [keras.Input((T, I)), layers.GRU(4, activation="relu"), layers.Dense(1)], "activation"),
        (lambda: [keras.Input((T, I)), layers.GRU(4, recurrent_activation="hard_sigmoid"), layers.Dense(1)],
         "recurrent_activation"),
        (lambda: [keras.Input((T, I)), layers.GRU(4, go_backwards=True), layers.Dense(1)], "go_backwards"),
        (lambda: [keras.Input((T, I)), layers.GRU(4), layers.Dense(1, activation="relu")], "relu"),
        (lambda: [keras.Input((T, I)), layers.LSTM(4), layers.Dense(1)], "LSTM"),
    ],
)
def test_unsupported_keras_model_is_refused_by_name(tmp_path, build, named):
    _save(build, tmp_path / "model.keras")
    with pytest.raises(UnsupportedModelError, match=named):
        grukit.load(tmp_path / "model.keras")


def test_loads_without_keras_or_tensorflow(tmp_path):
    path = tmp_path / "model.keras"
    kmodel = _save(_seed_example, path)
    x = np.random.default_rng(2).standard_normal((3, T, I)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    script = (
        "import sys; sys.modules['keras'] = None; sys.modules['tensorflow'] = None\n"
        "import warnings, numpy as np, grukit\n"
        "from grukit.export.load_keras import load_keras\n"
        "with warnings.catch_warnings(record=True) as caught:\n"
        "    warnings.simplefilter('always')\n"
        f"    m = grukit.load({str(path)!r})\n"
        "assert m.meta['self_check'].startswith('skipped'), m.meta\n"
        "assert any('Keras did not confirm' in str(w.message) for w in caught), caught\n"  # said, not silent
        "assert 'load-time check: skipped' in m.describe()\n"
        "try:\n"
        f"    load_keras({str(path)!r}, self_check=True)\n"
        "except grukit.core.errors.MissingDependencyError:\n"
        "    pass\n"
        "else:\n"
        "    raise SystemExit('a required check without Keras was not refused')\n"
        "assert 'keras' not in sys.modules or sys.modules['keras'] is None\n"
        f"np.save({str(tmp_path / 'y.npy')!r}, m.predict(np.load({str(tmp_path / 'x.npy')!r})))\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    np.testing.assert_allclose(np.load(tmp_path / "y.npy"), kmodel.predict(x, verbose=0), atol=FLOAT_ATOL, rtol=0)
