"""ONNX export of the float model, checked with onnx's full checker and run in onnxruntime.

References: ``model.predict`` (the float NumPy reference, itself checked against torch) and, for the step
model, the exported sequence model run by onnxruntime's own GRU kernel.
"""

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from torch_modules import EveryStep, LastStep

import grukit
from grukit.core.errors import BadInputError, UnsupportedModelError
from grukit.export.onnx_export import export_onnx_sequence, export_onnx_step
from grukit.core.model import Head, GRUDirection, GRULayer, GRUModel

# float32 GRU vs float32 GRU (onnxruntime's kernels vs NumPy): same math, different summation order.
ONNX_ATOL = 1e-5


def _direction(rng, I, H) -> GRUDirection:
    # torch's default init range, so gates neither all saturate nor all sit at 0.5.
    k = 1 / np.sqrt(H)
    u = lambda *shape: rng.uniform(-k, k, shape).astype(np.float32)
    return GRUDirection(W=u(3, H, I), R=u(3, H, H), Wb=u(3, H), Rb=u(3, H))


def random_model(rng, I, hidden, lbr, bidirectional=False, head="last", activation="linear", O=3) -> GRUModel:
    """Layers of sizes ``hidden`` with gate variants ``lbr`` (one per layer); head "last", "every" or None."""
    layers, width = [], I
    for H, linear_before_reset in zip(hidden, lbr, strict=True):
        reverse = _direction(rng, width, H) if bidirectional else None
        layers.append(GRULayer(_direction(rng, width, H), linear_before_reset, reverse))
        width = layers[-1].output_size
    dense = None
    if head is not None:
        W = rng.uniform(-1, 1, (O, width)).astype(np.float32)
        dense = Head.dense(W, rng.uniform(-1, 1, O).astype(np.float32), per_step=head == "every", activation=activation)
    return GRUModel(layers, dense, name="random")


def _session(path) -> ort.InferenceSession:
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


def _run_sequence(path, x) -> np.ndarray:
    return _session(path).run(["y"], {"x": x})[0]


def _run_steps(path, model: GRUModel, x) -> np.ndarray:
    """Feed x one step at a time from zero states; returns the final y_t, or every y_t for a per-step head."""
    sess = _session(path)
    N, T, _ = x.shape
    states = {f"h{i}": np.zeros((N, layer.hidden_size), np.float32) for i, layer in enumerate(model.layers)}
    new_names = [f"h{i}_new" for i in range(len(model.layers))]
    ys = []
    for t in range(T):
        y_t, *h_new = sess.run(["y_t", *new_names], {"x_t": x[:, t], **states})
        states = {f"h{i}": h for i, h in enumerate(h_new)}
        ys.append(y_t)
    return np.stack(ys, axis=1) if model.per_step else ys[-1]


def _inputs(seed, N, T, I) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((N, T, I)).astype(np.float32)


# --- the sequence model --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "cls, args, kwargs",
    [
        (LastStep, (5, 12, 3), {}),                                        # the common case
        (LastStep, (4, 8, 2), {"num_layers": 3, "bias": False}),           # three layers, no bias
        (EveryStep, (3, 16, 2), {"num_layers": 2}),                        # per-step head
        (LastStep, (5, 6, 3), {"num_layers": 2, "bidirectional": True}),   # stacked bidirectional, last step
        (EveryStep, (3, 5, 4), {"bidirectional": True}),                   # bidirectional, per-step head
    ],
    ids=["last-1", "last-3-nobias", "every-2", "bidir-last-2", "bidir-every-1"],
)
def test_sequence_from_torch_matches_predict(cls, args, kwargs, tmp_path):
    torch.manual_seed(0)
    model = grukit.load(cls(*args, **kwargs))
    path = export_onnx_sequence(model, tmp_path / "seq.onnx")
    onnx.checker.check_model(str(path), full_check=True)
    x = _inputs(1, 4, 20, model.input_size)
    np.testing.assert_allclose(_run_sequence(path, x), model.predict(x), atol=ONNX_ATOL, rtol=0)


@pytest.mark.parametrize(
    "hidden, lbr, bidirectional, head, activation",
    [
        ((8,), (0,), False, "last", "linear"),              # linear_before_reset = 0, which torch cannot make
        ((8, 6), (0, 1), False, "every", "softmax"),        # mixed gate variants, softmax per step
        ((5, 7, 4), (1, 0, 0), False, "last", "sigmoid"),   # three layers, sigmoid head
        ((6, 6), (0, 0), True, "last", "softmax"),          # bidirectional with linear_before_reset = 0
        ((6,), (0,), True, "every", "linear"),              # bidirectional, per-step
        ((7, 5), (1, 0), False, None, "linear"),            # no head: the last layer's last state
        ((4,), (1,), True, None, "linear"),                 # no head, bidirectional: [N, 2H]
    ],
)
def test_sequence_from_random_weights_matches_predict(hidden, lbr, bidirectional, head, activation, tmp_path):
    model = random_model(np.random.default_rng(0), 3, hidden, lbr, bidirectional, head, activation)
    path = export_onnx_sequence(model, tmp_path / "seq.onnx")
    onnx.checker.check_model(str(path), full_check=True)
    x = _inputs(2, 3, 17, 3)
    np.testing.assert_allclose(_run_sequence(path, x), model.predict(x), atol=ONNX_ATOL, rtol=0)


def test_sequence_batch_and_length_are_dynamic(tmp_path):
    model = random_model(np.random.default_rng(3), 4, (6, 5), (1, 0), head="every")
    path = export_onnx_sequence(model, tmp_path / "seq.onnx")
    for N, T in [(1, 1), (5, 3), (2, 40)]:
        x = _inputs(N + T, N, T, 4)
        y = _run_sequence(path, x)
        assert y.shape == (N, T, 3)
        np.testing.assert_allclose(y, model.predict(x), atol=ONNX_ATOL, rtol=0)


def test_sequence_uses_one_gru_node_per_layer(tmp_path):
    model = random_model(np.random.default_rng(4), 3, (4, 4, 4), (1, 0, 1), bidirectional=True)
    proto = onnx.load(export_onnx_sequence(model, tmp_path / "seq.onnx"))
    grus = [n for n in proto.graph.node if n.op_type == "GRU"]
    assert len(grus) == 3
    attrs = [{a.name: onnx.helper.get_attribute_value(a) for a in n.attribute} for n in grus]
    assert [a["linear_before_reset"] for a in attrs] == [1, 0, 1]
    assert all(a["direction"] == b"bidirectional" for a in attrs)


# --- the step model ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "hidden, lbr, head",
    [
        ((8,), (1,), "last"),          # one layer, torch's gate variant
        ((8,), (0,), "every"),         # one layer, ONNX's default gate variant
        ((6, 5), (0, 1), "last"),      # mixed variants
        ((6, 5), (1, 1), "every"),
        ((5, 4, 6), (0, 0, 0), "every"),  # three layers
        ((5, 4, 6), (1, 0, 1), "last"),
        ((7,), (1,), None),            # no head: y_t is the state itself
    ],
)
def test_step_loop_reproduces_sequence_model(hidden, lbr, head, tmp_path):
    model = random_model(np.random.default_rng(5), 3, hidden, lbr, head=head, activation="softmax")
    seq_path = export_onnx_sequence(model, tmp_path / "seq.onnx")
    step_path = export_onnx_step(model, tmp_path / "step.onnx")
    onnx.checker.check_model(str(step_path), full_check=True)
    x = _inputs(6, 3, 15, 3)
    y_steps = _run_steps(step_path, model, x)
    np.testing.assert_allclose(y_steps, _run_sequence(seq_path, x), atol=ONNX_ATOL, rtol=0)
    np.testing.assert_allclose(y_steps, model.predict(x), atol=ONNX_ATOL, rtol=0)


@pytest.mark.parametrize("cls", [LastStep, EveryStep])
def test_step_from_torch_matches_predict(cls, tmp_path):
    torch.manual_seed(1)
    model = grukit.load(cls(4, 10, 3, num_layers=2))
    path = export_onnx_step(model, tmp_path / "step.onnx")
    x = _inputs(7, 2, 25, model.input_size)
    np.testing.assert_allclose(_run_steps(path, model, x), model.predict(x), atol=ONNX_ATOL, rtol=0)


def test_step_model_interface(tmp_path):
    model = random_model(np.random.default_rng(8), 3, (6, 4), (1, 0))
    sess = _session(export_onnx_step(model, tmp_path / "step.onnx"))
    assert [(i.name, i.shape) for i in sess.get_inputs()] == [("x_t", ["N", 3]), ("h0", ["N", 6]), ("h1", ["N", 4])]
    assert [o.name for o in sess.get_outputs()] == ["y_t", "h0_new", "h1_new"]


def test_bidirectional_step_is_refused(tmp_path):
    model = random_model(np.random.default_rng(9), 3, (4,), (1,), bidirectional=True)
    with pytest.raises(UnsupportedModelError, match="a streaming step model cannot run a bidirectional layer"):
        export_onnx_step(model, tmp_path / "step.onnx")
    assert not (tmp_path / "step.onnx").exists()


# --- both files ----------------------------------------------------------------------------------------------


def test_files_are_self_contained_with_metadata(tmp_path):
    model = random_model(np.random.default_rng(10), 3, (5, 5), (0, 1))
    paths = [export_onnx_sequence(model, tmp_path / "seq.onnx"), export_onnx_step(model, tmp_path / "step.onnx")]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["seq.onnx", "step.onnx"]  # no external data files
    for path in paths:
        proto = onnx.load(str(path), load_external_data=False)
        assert not any(onnx.external_data_helper.uses_external_data(t) for t in proto.graph.initializer)
        props = {p.key: p.value for p in proto.metadata_props}
        assert proto.producer_name == "grukit" and props["producer"] == "grukit"
        assert props["grukit.layer0.gate_variant"] == "linear_before_reset=0"
        assert props["grukit.layer1.gate_variant"] == "linear_before_reset=1"


def test_step_model_has_no_gru_node(tmp_path):
    # The step model is primitive ops so that it runs where no GRU kernel exists.
    model = random_model(np.random.default_rng(11), 3, (4,), (0,))
    proto = onnx.load(str(export_onnx_step(model, tmp_path / "step.onnx")))
    assert {n.op_type for n in proto.graph.node} <= {"MatMul", "Add", "Sigmoid", "Tanh", "Mul", "Sub", "Softmax"}


@pytest.mark.parametrize("opset", [13, 10_000])
def test_unsupported_opset_is_refused(opset, tmp_path):
    model = random_model(np.random.default_rng(12), 3, (4,), (1,))
    with pytest.raises(BadInputError, match=f"opset {opset}"):
        export_onnx_sequence(model, tmp_path / "seq.onnx", opset=opset)


@pytest.mark.parametrize("opset", [14, 21])
def test_other_opsets_run(opset, tmp_path):
    model = random_model(np.random.default_rng(13), 3, (4, 4), (0, 1), head="every", activation="softmax")
    x = _inputs(14, 2, 9, 3)
    seq = export_onnx_sequence(model, tmp_path / "seq.onnx", opset=opset)
    step = export_onnx_step(model, tmp_path / "step.onnx", opset=opset)
    np.testing.assert_allclose(_run_sequence(seq, x), model.predict(x), atol=ONNX_ATOL, rtol=0)
    np.testing.assert_allclose(_run_steps(step, model, x), model.predict(x), atol=ONNX_ATOL, rtol=0)
