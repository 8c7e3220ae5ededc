"""The .keras loader against Keras's own predict, and proof that loading needs neither Keras nor TensorFlow."""

import subprocess
import sys

import numpy as np
import pytest
import keras

import grukit
import keras_models as km
from grukit.core.errors import UnsupportedModelError
from grukit.export import load_keras as load_keras_module

# float32 GRU vs float32 GRU (Keras on torch) with a different summation order (and folded scaling).
FLOAT_ATOL = 1e-5

# (builder, the head's activations layer by layer, where the head reads: None for no head); one row per form.
FORMS = [
    (km.seed_example, ("linear",), "last_step"),  # the model users bring
    (km.reset_after_false, ("linear",), "last_step"),  # linear_before_reset = 0
    (km.two_stacked, ("linear",), "last_step"),  # a Dropout between two GRUs
    (km.every_step, ("linear",), "every_step"),  # a Dense on return_sequences=True
    (km.softmax_head, ("softmax",), "last_step"),  # a GRU without bias
    (km.sigmoid_no_input_layer, ("sigmoid",), "last_step"),  # T from the GRU's build_config
    (km.dropout_relu_softmax, ("relu", "softmax"), "last_step"),  # the common classifier
    (km.dropout_relu_softmax_functional, ("relu", "softmax"), "last_step"),  # the same, keras.Model(in, out)
    (km.tanh_between_dense, ("tanh", "linear"), "last_step"),
    (km.relu6_layer, ("relu6", "linear"), "last_step"),  # ReLU(max_value=6) layer
    (km.activation_layers, ("sigmoid", "softmax"), "last_step"),  # Activation layers after linear Dense
    (km.time_distributed, ("relu", "linear"), "every_step"),  # TimeDistributed(Dense) twice
    (km.dense_chain_every_step, ("relu", "linear"), "every_step"),  # plain Dense layers on every step
    (km.batch_norm_after_dense, ("relu", "linear"), "last_step"),  # folded into the Dense before it
    (km.batch_norm_after_gru, ("linear",), "last_step"),  # folded into the Dense after it
    (km.batch_norm_after_relu, ("relu", "linear"), "last_step"),  # center=False, after a ReLU: into the next
    (km.batch_norm_between_grus, ("linear",), "last_step"),  # scale=False, into the next GRU's input side
    (km.batch_norm_every_step, ("relu", "linear"), "every_step"),  # per step, then a ReLU layer
    (km.normalization_adapted, ("linear",), "last_step"),  # mean / variance weights, into the GRU
    (km.normalization_in_config, ("linear",), "last_step"),  # mean / variance in the config
    (km.rescaling, ("linear",), "last_step"),  # scale and offset
    (km.rescaling_per_feature_after_normalization, ("linear",), "last_step"),  # two folds composed
    (km.identities, ("linear",), "last_step"),  # GaussianNoise, SpatialDropout1D, GaussianDropout, Flatten
    (km.bidirectional_every_step, ("linear",), "last_step"),  # Bidirectional(GRU) into a GRU
    (km.bidirectional_time_distributed, ("sigmoid",), "every_step"),  # Bidirectional(GRU) per step
    (km.everything_functional, ("relu6", "softmax"), "every_step"),  # one of each
    (km.state_head, ("relu6", "softmax"), "final_state"),  # return_state=True, the head on h_n
    (km.state_output, (), None),  # return_state=True, h_n is the output
    (km.output_beside_state, ("tanh",), "every_step"),  # return_state=True, the head on the sequence
    (km.nested_sequentials, ("relu", "linear"), "last_step"),  # Sequential GRUs and head inside keras.Model
    (km.functional_in_sequential, ("tanh", "sigmoid"), "last_step"),  # a keras.Model head inside a Sequential
]


def _save(build, path):
    keras.utils.set_random_seed(0)
    model = build()
    model.compile(optimizer="adam", loss="mse")
    # Nudge the weights off their initial values (zero biases, unit batch statistics) so every bias and every
    # fold is exercised; variances stay positive.
    rng = np.random.default_rng(0)
    for w in model.weights:
        if "float" in str(w.dtype):
            nudge = 0.1 * rng.standard_normal(w.shape).astype(np.float32)
            w.assign(np.abs(w.numpy() + nudge) if "variance" in w.path else w.numpy() + nudge)
    model.save(str(path))
    return model


def _inputs(kmodel, seed=1, N=5):
    return np.random.default_rng(seed).standard_normal((N, km.T, kmodel.input_shape[-1])).astype(np.float32)


@pytest.mark.parametrize("build, activations, reads", FORMS, ids=[f[0].__name__ for f in FORMS])
def test_keras_matches_predict(tmp_path, build, activations, reads):
    path = tmp_path / "model.keras"
    kmodel = _save(build, path)
    model = grukit.load(path)
    assert model.meta["self_check"] == "keras"
    x = _inputs(kmodel)
    np.testing.assert_allclose(model.predict(x), kmodel.predict(x, verbose=0), atol=FLOAT_ATOL, rtol=0)
    head = model.head
    assert (tuple(d.activation for d in head.layers) if head else ()) == activations
    assert (head.reads if head else None) == reads


def test_reset_after_sets_linear_before_reset(tmp_path):
    _save(km.two_stacked, tmp_path / "a.keras")
    _save(km.reset_after_false, tmp_path / "b.keras")
    assert grukit.load(tmp_path / "a.keras").layers[0].linear_before_reset == 1
    assert grukit.load(tmp_path / "b.keras").layers[0].linear_before_reset == 0


def test_functional_and_sequential_load_the_same_model(tmp_path):
    _save(km.dropout_relu_softmax, tmp_path / "seq.keras")
    _save(km.dropout_relu_softmax_functional, tmp_path / "func.keras")
    seq, func = grukit.load(tmp_path / "seq.keras"), grukit.load(tmp_path / "func.keras")
    for a, b in zip(seq.layers, func.layers, strict=True):
        for name in ("W", "R", "Wb", "Rb"):
            np.testing.assert_array_equal(getattr(a.forward, name), getattr(b.forward, name))
    for a, b in zip(seq.head.layers, func.head.layers, strict=True):
        np.testing.assert_array_equal(a.W, b.W)
        np.testing.assert_array_equal(a.b, b.b)
        assert a.activation == b.activation
    assert seq.describe().splitlines()[1:] == func.describe().splitlines()[1:]


def test_folded_layers_leave_only_grus_and_dense(tmp_path):
    _save(km.everything_functional, tmp_path / "model.keras")
    model = grukit.load(tmp_path / "model.keras")
    # Normalization and Rescaling went into GRU 0, BatchNormalization into the TimeDistributed Dense.
    assert [layer.input_size for layer in model.layers] == [km.F, 8]
    assert [(d.in_features, d.out_features) for d in model.head.layers] == [(6, 5), (5, 3)]


def test_describe_names_the_head(tmp_path):
    _save(km.dropout_relu_softmax, tmp_path / "model.keras")
    text = grukit.load(tmp_path / "model.keras").describe()
    assert "head on the last step:" in text
    assert "dense 0: 12 -> 8, relu" in text
    assert "dense 1: 8 -> 4, softmax" in text
    assert "load-time check: keras" in text
    _save(km.bidirectional_time_distributed, tmp_path / "bi.keras")
    text = grukit.load(tmp_path / "bi.keras").describe()
    assert "layer 0: bidirectional GRU input 1 -> hidden 6, linear_before_reset=0" in text
    assert "head on every step:" in text
    assert "dense 0: 12 -> 3, sigmoid" in text


def test_self_check_refuses_what_the_loader_got_wrong(tmp_path, monkeypatch):
    # A loader that forgot the batch normalization after a Dense: Keras disagrees, and the model is refused.
    _save(km.batch_norm_after_dense, tmp_path / "model.keras")
    monkeypatch.setattr(load_keras_module, "_fold_into_output", lambda d, affine: d)
    with pytest.raises(UnsupportedModelError, match="Keras and grukit disagree"):
        grukit.load(tmp_path / "model.keras")


def _layers(*stack):
    return lambda: keras.Sequential([keras.Input((km.T, km.I)), *stack])


L = keras.layers
# (builder, what the refusal must name); one row per refused form.
REFUSED = [
    (_layers(L.GRU(4, activation="relu"), L.Dense(1)), "activation"),
    (_layers(L.GRU(4, recurrent_activation="hard_sigmoid"), L.Dense(1)), "recurrent_activation"),
    (_layers(L.GRU(4, go_backwards=True), L.Dense(1)), "go_backwards"),
    (_layers(L.GRU(4), L.Dense(1, activation="gelu", name="out")), "'out'.*gelu"),
    (_layers(L.LSTM(4, name="lstm_layer"), L.Dense(1)), "'lstm_layer'.*LSTM"),
    (_layers(L.GRU(4), L.Dense(3), L.LeakyReLU(name="leaky")), "'leaky'.*'LeakyReLU' is not supported"),
    (_layers(L.GRU(4), L.Dense(3), L.ReLU(negative_slope=0.1, name="leaky")), "'leaky'.*negative_slope"),
    (_layers(L.GRU(4), L.Dense(3), L.ReLU(threshold=0.5, name="shifted")), "'shifted'.*threshold"),
    (_layers(L.GRU(4), L.Dense(3), L.ReLU(max_value=4.0, name="clip4")), "'clip4'.*max_value"),
    (_layers(L.GRU(4), L.Activation("relu", name="act")), "'act'.*right after a Dense"),
    (_layers(L.GRU(4), L.Dense(3, activation="relu"), L.Activation("tanh", name="act")), "'act'.*tanh"),
    (_layers(L.Dense(3, name="front"), L.GRU(4), L.Dense(1)), "'front'.*before any GRU"),
    (_layers(L.GRU(4, return_sequences=True), L.Flatten(name="flat"), L.Dense(1)), "'flat'.*time axis"),
    (_layers(L.GRU(4), L.Dense(3, activation="relu"), L.BatchNormalization(name="bn")), "'bn'.*no Dense or GRU"),
    (_layers(L.GRU(4), L.Dense(3, activation="softmax"), L.Dense(2, name="after")), "'after'.*softmax"),
    (_layers(L.GRU(4, return_sequences=True), L.BatchNormalization(axis=1, name="bn_t"), L.Dense(1)),
     "'bn_t'.*axis"),
    (_layers(L.GRU(4, return_sequences=True), L.Dense(1), L.GRU(2, name="late")), "'late'.*after a Dense"),
    (km.add_of_two_paths, "'merge' \\(Add\\).*merges"),
    (km.two_inputs, "2 inputs.*first, second"),
    (km.two_outputs, "2 outputs.*out_a, out_b"),
    (km.shared_dense, "'twice'.*called 2 times"),
    (km.learned_initial_state, "'seeded'.*takes 2 input tensors"),  # initial_state from another path
    (km.conv1d_front_end, "'front' \\(Conv1D\\).*convolutional"),
    (km.self_attention, "'attend' \\(MultiHeadAttention\\).*attention"),
    (km.bidirectional_final_state, "'bi' \\(Bidirectional\\).*final states"),
    (km.normalization_inverted, "'denormalize' \\(Normalization\\).*invert=True"),
    (km.bidirectional_state, "'head'.*final state of Keras layer 'bi' \\(Bidirectional\\)"),
    (_layers(L.GRU(4, return_state=True, name="both")), "'both'.*return_state=True.*\\[output, final state"),
    (_layers(L.Masking(0.0, name="pad"), L.GRU(4), L.Dense(1)), "'pad'.*Masking.*skip the steps"),
    (_layers(L.GRU(4, return_sequences=True), L.GlobalAveragePooling1D(name="pool"), L.Dense(1)),
     "'pool'.*'GlobalAveragePooling1D' is not supported; grukit reads GRU"),
]


@pytest.mark.parametrize("build, named", REFUSED, ids=[named.split(".*")[0].strip("'\\") for _, named in REFUSED])
def test_unsupported_keras_model_is_refused_by_name(tmp_path, build, named):
    _save(build, tmp_path / "model.keras")
    with pytest.raises(UnsupportedModelError, match=named):
        grukit.load(tmp_path / "model.keras", self_check=False)


@pytest.mark.parametrize("build", [km.seed_example, km.everything_functional])
def test_loads_without_keras_or_tensorflow(tmp_path, build):
    path = tmp_path / "model.keras"
    kmodel = _save(build, path)
    x = _inputs(kmodel, seed=2, N=3)
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
