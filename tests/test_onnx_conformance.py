"""ONNX's own GRU conformance cases (onnx.backend.test.case.node.gru) through grukit.

Every case is either run through the float reference (Y and Y_h compared with the case's expected outputs)
or refused by the ONNX loader with a message naming the reason; REFUSED lists which and why, and a test checks
that the two sets cover every case, so a new case in a future onnx release fails here until it is sorted.
"""

import numpy as np
import onnx
import pytest
from onnx import helper, numpy_helper
from onnx.backend.test.case.node import gru as onnx_gru_cases

import grukit
from grukit.core.errors import UnsupportedModelError
from grukit.export.onnx_gru import gru_attributes, gru_layer_from_onnx
from grukit.core.model import GRUModel
from grukit.core.float_gru import layers_forward

# float32 GRU vs ONNX's float32 NumPy reference, different summation order.
FLOAT_ATOL = 1e-5

# Cases grukit refuses, with the word the loader's message must contain.
REFUSED = {
    "test_gru_reverse": "reverse",  # a reverse-only layer: grukit's first direction always runs forward
}


def _collect():
    """{name: (node, inputs, outputs)} from the export_* functions of onnx's GRU test-case module."""
    cases = {}

    def expect(node, inputs, outputs, name, **kwargs):
        cases[name] = (node, inputs, outputs)

    saved = onnx_gru_cases.expect
    onnx_gru_cases.expect = expect
    try:
        np.random.seed(0)  # some cases draw random weights with the global generator
        for attr in dir(onnx_gru_cases.GRU):
            if attr.startswith("export"):
                getattr(onnx_gru_cases.GRU, attr)()
    finally:
        onnx_gru_cases.expect = saved
    return cases


CASES = _collect()
SUPPORTED = sorted(set(CASES) - set(REFUSED))


def _attrs(node):
    out = {}
    for a in node.attribute:
        v = helper.get_attribute_value(a)
        out[a.name] = v.decode() if isinstance(v, bytes) else v
    return out


def _named_inputs(node, inputs):
    """The case's tensors by their ONNX GRU input name (X, W, R, B, sequence_lens, initial_h)."""
    slots = ("X", "W", "R", "B", "sequence_lens", "initial_h")
    return {slot: value for slot, name, value in zip(slots, [n for n in node.input if n], inputs)}


def test_every_case_is_run_or_refused():
    assert CASES, "no GRU conformance cases found in the installed onnx package"
    assert set(REFUSED) <= set(CASES), f"REFUSED names cases onnx no longer has: {set(REFUSED) - set(CASES)}"


@pytest.mark.parametrize("name", SUPPORTED)
def test_conformance_case_matches(name):
    node, inputs, outputs = CASES[name]
    tensors = _named_inputs(node, inputs)
    # Inputs grukit has no place for must be absent here; a case that gives them belongs in REFUSED.
    assert "sequence_lens" not in tensors and "initial_h" not in tensors, f"{name} gives {sorted(tensors)}"
    attrs = gru_attributes(_attrs(node), name)
    layer = gru_layer_from_onnx(tensors["W"], tensors["R"], tensors.get("B"), attrs["linear_before_reset"],
                                attrs["direction"])
    X = tensors["X"]
    x_ntf = X if attrs["layout"] == 1 else X.transpose(1, 0, 2)
    seq = layers_forward(GRUModel(layers=(layer,)), x_ntf)[0]  # [N, T, D*H]
    N, T = x_ntf.shape[:2]
    H, D = layer.hidden_size, attrs["num_directions"]
    Y_ntdh = seq.reshape(N, T, D, H)
    # Final states: forward after the last step, reverse after its last step, which is input step 0.
    Y_h_dnh = np.stack([Y_ntdh[:, T - 1, 0]] + ([Y_ntdh[:, 0, 1]] if D == 2 else []))
    ours = {
        "Y": Y_ntdh if attrs["layout"] == 1 else Y_ntdh.transpose(1, 2, 0, 3),
        "Y_h": Y_h_dnh.transpose(1, 0, 2) if attrs["layout"] == 1 else Y_h_dnh,
    }
    names = [n for n in node.output if n]
    assert len(names) == len(outputs)
    for out_name, expected in zip(names, outputs):
        np.testing.assert_allclose(ours[out_name], expected, atol=FLOAT_ATOL, rtol=0, err_msg=f"{name}: {out_name}")


@pytest.mark.parametrize("name", sorted(REFUSED))
def test_conformance_case_refused_by_loader(tmp_path, name):
    node, inputs, _ = CASES[name]
    path = tmp_path / f"{name}.onnx"
    onnx.save(_case_model(node, inputs), str(path))
    with pytest.raises(UnsupportedModelError, match=REFUSED[name]):
        grukit.load(path)


@pytest.mark.parametrize("name", [n for n in SUPPORTED if _attrs(CASES[n][0]).get("direction") != "bidirectional"])
def test_conformance_case_through_loader(tmp_path, name):
    # The same case as a file whose output is Y_h (the last step): the loader must read it and agree.
    node, inputs, outputs = CASES[name]
    path = tmp_path / f"{name}.onnx"
    onnx.save(_case_model(node, inputs, output="Y_h"), str(path))
    model = grukit.load(path)
    layout = _attrs(node).get("layout", 0)
    X = inputs[0]
    x_ntf = X if layout == 1 else X.transpose(1, 0, 2)
    expected_h = outputs[[n for n in node.output if n].index("Y_h")]
    expected_nh = expected_h[:, 0] if layout == 1 else expected_h[0]
    np.testing.assert_allclose(model.predict(x_ntf), expected_nh, atol=FLOAT_ATOL, rtol=0)


def _case_model(node, inputs, output=None):
    """A one-node model: X is the graph input, the other tensors initializers."""
    names = [n for n in node.input if n]
    inits = [numpy_helper.from_array(v, n) for n, v in zip(names[1:], inputs[1:])]
    outs = [n for n in node.output if n] if output is None else [output]
    node = helper.make_node("GRU", list(node.input), [o if o in outs else "" for o in node.output] if output
                            else list(node.output), **_attrs(node))
    graph = helper.make_graph(
        [node], "case", [helper.make_tensor_value_info(names[0], onnx.TensorProto.FLOAT, list(inputs[0].shape))],
        [helper.make_tensor_value_info(o, onnx.TensorProto.FLOAT, None) for o in outs], inits,
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 14)], ir_version=8)
