"""The ONNX loader against onnxruntime: torch.onnx.export (both exporters) and hand-built GRU graphs."""

import warnings

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper
from onnx.reference import ReferenceEvaluator
from torch import nn

from torch_modules import EveryStep, LastStep

import grukit
from grukit.core.errors import UnsupportedModelError

# float32 GRU vs float32 GRU (onnxruntime's kernel) with a different summation order.
FLOAT_ATOL = 1e-5


def _ort(path, x):
    """onnxruntime's output; ONNX's reference evaluator for a batch-major GRU, which onnxruntime lacks."""
    model = onnx.load(str(path))
    if any(a.name == "layout" and a.i == 1 for n in model.graph.node for a in n.attribute):
        return ReferenceEvaluator(model).run(None, {model.graph.input[0].name: x})[0]
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return sess.run(None, {sess.get_inputs()[0].name: x})[0]


def _export(module, path, dynamo, batch_first, N=4, T=9, I=5):
    x = torch.randn(N, T, I) if batch_first else torch.randn(T, N, I)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(module.eval(), (x,), str(path), dynamo=dynamo, input_names=["x"], output_names=["y"])


@pytest.mark.parametrize(
    "dynamo, cls, num_layers, batch_first, bias, bidirectional",
    [
        (False, LastStep, 1, True, True, False),    # TorchScript exporter, the common case
        (False, LastStep, 3, False, True, False),   # three layers, time-major
        (False, LastStep, 2, True, False, True),    # no bias, bidirectional
        (False, EveryStep, 2, True, True, False),   # every-step head (MatMul + Add)
        (False, EveryStep, 1, False, True, True),   # every-step, time-major, bidirectional
        (True, LastStep, 1, True, True, False),     # dynamo exporter: weights in model.onnx.data
        (True, LastStep, 3, False, False, False),   # dynamo, three layers, time-major, no bias
        (True, LastStep, 2, True, True, True),      # dynamo, bidirectional
        (True, EveryStep, 2, True, True, False),    # dynamo, every-step head
    ],
)
def test_torch_export_matches_onnxruntime(tmp_path, dynamo, cls, num_layers, batch_first, bias, bidirectional):
    torch.manual_seed(0)
    module = cls(5, 12, 3, num_layers, batch_first, bias, bidirectional)
    path = tmp_path / "model.onnx"
    _export(module, path, dynamo, batch_first)
    if dynamo:
        assert (tmp_path / "model.onnx.data").exists()
    model = grukit.load(path)
    assert len(model.layers) == num_layers
    assert model.bidirectional == bidirectional
    assert model.per_step == (cls is EveryStep)
    assert model.meta["input_layout"] == ("batch_first" if batch_first else "time_major")
    x = np.random.default_rng(1).standard_normal((4, 9, 5)).astype(np.float32)
    feed = x if batch_first else x.transpose(1, 0, 2).copy()
    np.testing.assert_allclose(model.predict(x), _ort(path, feed), atol=FLOAT_ATOL, rtol=0)


# --- hand-built graphs -----------------------------------------------------------------------------------------
I, H, O, N, T = 3, 6, 2, 2, 8


def _gru_graph(lbr=0, layout=0, h0="absent", head="gemm", gru_attrs=None, seq_lens=False, extra_op=None):
    """X -> GRU -> last step -> head, built node by node with onnx.helper."""
    rng = np.random.default_rng(lbr * 10 + layout)
    inits = [
        numpy_helper.from_array(rng.standard_normal((1, 3 * H, I)).astype(np.float32) * 0.5, "W"),
        numpy_helper.from_array(rng.standard_normal((1, 3 * H, H)).astype(np.float32) * 0.5, "R"),
        numpy_helper.from_array(rng.standard_normal((1, 6 * H)).astype(np.float32) * 0.5, "B"),
        numpy_helper.from_array(rng.standard_normal((O, H)).astype(np.float32), "fc_w"),
        numpy_helper.from_array(rng.standard_normal(O).astype(np.float32), "fc_b"),
        numpy_helper.from_array(np.array([2], np.int64), "axis_dir"),
        numpy_helper.from_array(np.array(-1, np.int64), "last"),
    ]
    gru_inputs = ["X", "W", "R", "B", "", ""]
    if seq_lens:
        inits.append(numpy_helper.from_array(np.full(N, T, np.int32), "seq_lens"))
        gru_inputs[4] = "seq_lens"
    if h0 != "absent":
        value = np.zeros((1, N, H), np.float32) if h0 == "zero" else np.full((1, N, H), 0.5, np.float32)
        inits.append(numpy_helper.from_array(value, "h0"))
        gru_inputs[5] = "h0"
    while gru_inputs[-1] == "":
        gru_inputs.pop()
    nodes = [helper.make_node("GRU", gru_inputs, ["Y", "Y_h"], hidden_size=H, linear_before_reset=lbr,
                              layout=layout, **(gru_attrs or {}))]
    if layout == 1:  # Y [N, T, 1, H]
        nodes += [helper.make_node("Squeeze", ["Y", "axis_dir"], ["Ys"]),
                  helper.make_node("Gather", ["Ys", "last"], ["h_last"], axis=1)]
        x_shape = [N, T, I]
    else:  # Y_h [1, N, H]: the last step of a forward GRU
        inits.append(numpy_helper.from_array(np.array([0], np.int64), "axis0"))
        nodes += [helper.make_node("Squeeze", ["Y_h", "axis0"], ["h_last"])]
        x_shape = [T, N, I]
    if head == "gemm":
        nodes.append(helper.make_node("Gemm", ["h_last", "fc_w", "fc_b"], ["y0"], transB=1))
    else:
        inits.append(numpy_helper.from_array(numpy_helper.to_array(inits[3]).T.copy(), "fc_wt"))
        nodes += [helper.make_node("MatMul", ["h_last", "fc_wt"], ["mm"]),
                  helper.make_node("Add", ["mm", "fc_b"], ["y0"])]
    if extra_op:
        nodes.append(helper.make_node(extra_op, ["y0"], ["y"]))
    else:
        nodes.append(helper.make_node("Identity", ["y0"], ["y"]))
    graph = helper.make_graph(nodes, "gru", [helper.make_tensor_value_info("X", TensorProto.FLOAT, x_shape)],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [N, O])], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 14)], ir_version=8)


@pytest.mark.parametrize(
    "lbr, layout, h0, head, extra_op",
    [
        (0, 0, "absent", "gemm", None),      # ONNX default formulation, time-major
        (1, 0, "zero", "matmul", None),      # PyTorch formulation, explicit zero initial_h
        (0, 1, "zero", "gemm", "Sigmoid"),   # batch-major layout, sigmoid head
        (1, 1, "absent", "matmul", "Softmax"),  # batch-major layout, softmax head
        (1, 0, "absent", "gemm", "Relu"),    # a ReLU on the output
    ],
)
def test_hand_built_graph_matches_onnxruntime(tmp_path, lbr, layout, h0, head, extra_op):
    path = tmp_path / "gru.onnx"
    onnx.save(_gru_graph(lbr, layout, h0, head, extra_op=extra_op), str(path))
    model = grukit.load(path)
    assert model.layers[0].linear_before_reset == lbr
    activations = {None: "linear", "Sigmoid": "sigmoid", "Softmax": "softmax", "Relu": "relu"}
    assert model.head.activation == activations[extra_op]
    x = np.random.default_rng(2).standard_normal((N, T, I)).astype(np.float32)
    feed = x if layout == 1 else x.transpose(1, 0, 2).copy()
    np.testing.assert_allclose(model.predict(x), _ort(path, feed), atol=FLOAT_ATOL, rtol=0)


@pytest.mark.parametrize(
    "kwargs, named",
    [
        (dict(gru_attrs=dict(activations=["Relu", "Tanh"])), "activations"),
        (dict(gru_attrs=dict(clip=1.0)), "clip"),
        (dict(gru_attrs=dict(direction="reverse")), "reverse"),
        (dict(seq_lens=True), "sequence_lens"),
        (dict(h0="nonzero"), "initial_h"),
        (dict(extra_op="Elu"), "Elu"),
    ],
)
def test_unsupported_graph_is_refused_by_name(tmp_path, kwargs, named):
    path = tmp_path / "gru.onnx"
    onnx.save(_gru_graph(**kwargs), str(path))
    with pytest.raises(UnsupportedModelError, match=named):
        grukit.load(path)


def test_head_on_a_middle_step_is_refused(tmp_path):
    model = _gru_graph(layout=1)
    for init in model.graph.initializer:
        if init.name == "last":
            init.CopyFrom(numpy_helper.from_array(np.array(0, np.int64), "last"))
    path = tmp_path / "gru.onnx"
    onnx.save(model, str(path))
    with pytest.raises(UnsupportedModelError, match="time step 0"):
        grukit.load(path)


def _with_output(model, nodes, name, shape, inits=()):
    """The hand-built graph with extra nodes and ``name`` as its only output."""
    model.graph.node.extend(nodes)
    model.graph.initializer.extend(inits)
    del model.graph.output[:]
    model.graph.output.append(helper.make_tensor_value_info(name, TensorProto.FLOAT, shape))
    return model


@pytest.mark.parametrize(
    "nodes, name, shape, inits, named",
    [
        # Y [T, 1, N, H] squeezed to [T, N, H]: every step's state, no head to read it
        ([helper.make_node("Squeeze", ["Y", "axis1"], ["Ys"])], "Ys", [T, N, H],
         [numpy_helper.from_array(np.array([1], np.int64), "axis1")], "every step's hidden state without a dense head"),
        ([helper.make_node("Identity", ["fc_b"], ["c"])], "c", [O], [], "does not depend on the input sequence"),
        ([helper.make_node("Identity", ["X"], ["xo"])], "xo", [T, N, I], [], "not computed from the last GRU layer"),
        ([helper.make_node("Transpose", ["h_last"], ["ht"], perm=[1, 0])], "ht", [H, N], [], "cannot lay out"),
    ],
    ids=["every-step-state", "constant", "input-passed-through", "transposed"],
)
def test_an_output_grukit_cannot_produce_is_refused(tmp_path, nodes, name, shape, inits, named):
    path = tmp_path / "gru.onnx"
    onnx.save(_with_output(_gru_graph(), nodes, name, shape, inits), str(path))
    with pytest.raises(UnsupportedModelError, match=named):
        grukit.load(path)


def _h_n_graph(index):
    """Two GRU nodes, torch's h_n as Concat(Y_h of each), Gather ``index`` on it, then Gemm: torch's fc(h[index])."""
    rng = np.random.default_rng(5)
    inits = [numpy_helper.from_array(rng.standard_normal(shape).astype(np.float32) * 0.5, name) for name, shape in
             (("W0", (1, 3 * H, I)), ("R0", (1, 3 * H, H)), ("W1", (1, 3 * H, H)), ("R1", (1, 3 * H, H)),
              ("fc_w", (O, H)), ("fc_b", (O,)))]
    inits += [numpy_helper.from_array(np.array([1], np.int64), "axis_dir"),
              numpy_helper.from_array(np.array(index, np.int64), "index")]
    nodes = [helper.make_node("GRU", ["X", "W0", "R0"], ["Y0", "Y_h0"], hidden_size=H, linear_before_reset=1),
             helper.make_node("Squeeze", ["Y0", "axis_dir"], ["out0"]),
             helper.make_node("GRU", ["out0", "W1", "R1"], ["", "Y_h1"], hidden_size=H, linear_before_reset=1),
             helper.make_node("Concat", ["Y_h0", "Y_h1"], ["h_n"], axis=0),
             helper.make_node("Gather", ["h_n", "index"], ["h"], axis=0),
             helper.make_node("Gemm", ["h", "fc_w", "fc_b"], ["y"], transB=1)]
    graph = helper.make_graph(nodes, "h_n", [helper.make_tensor_value_info("X", TensorProto.FLOAT, [T, N, I])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [N, O])], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 14)], ir_version=8)


def test_head_on_h_n_of_the_last_layer_matches_onnxruntime(tmp_path):
    path = tmp_path / "h_n.onnx"
    onnx.save(_h_n_graph(-1), str(path))
    model = grukit.load(path)
    assert len(model.layers) == 2 and model.head.reads == "final_state"
    x = np.random.default_rng(6).standard_normal((N, T, I)).astype(np.float32)
    np.testing.assert_allclose(model.predict(x), _ort(path, x.transpose(1, 0, 2).copy()), atol=FLOAT_ATOL, rtol=0)


def test_head_on_h_n_of_an_earlier_layer_is_refused(tmp_path):
    path = tmp_path / "h_n.onnx"
    onnx.save(_h_n_graph(0), str(path))
    with pytest.raises(UnsupportedModelError, match="reads GRU layer 0's output, not the last GRU layer's"):
        grukit.load(path)
