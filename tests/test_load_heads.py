"""Issue 19: GRU models the way tutorials write them, through every torch route grukit reads: the nn.Module,
a .pt2 (torch.export.save), and ONNX from both torch exporters (TorchScript, dynamo). Each loaded model is
compared with torch running the module and with the format's own framework; the head it reads (its dense
layers' activations, where it reads) is checked too. Then the forms grukit still refuses, by name, in every
format; and grukit's own ONNX export of a chain head read back."""

import warnings

import numpy as np
import pytest
import torch
from torch import nn

from gru_factory import random_inputs, random_model
from torch_modules import (Attention, BidirectionalFinalState, ConvFrontEnd, GeluHead, HiddenStateHead,
                           NonAffineInput, PerStepChain, ScaledInput, SequentialHead, TutorialClassifier, TwoInputs,
                           randomize_batch_norms)

import grukit
from grukit.core.errors import UnsupportedModelError
from grukit.export.onnx_export import export_onnx_sequence
from grukit.export.source_runtime import run_source

# float32 torch / onnxruntime vs grukit's float reference (BatchNorm and input scaling folded into weights).
FLOAT_ATOL = 1e-5
FORMATS = ("module", "pt2", "onnx-torchscript", "onnx-dynamo")
N, T, I, H = 3, 7, 4, 12  # the export's shape; .pt2 and the TorchScript ONNX file fix it


# name: (module factory, time-major input, head reads, the head's activations); one line per form.
FORMS = {
    "mlp": (lambda: SequentialHead(I, H, nn.Sequential(nn.Dropout(0.2), nn.Linear(H, 16), nn.ReLU(), nn.Linear(16, 3))),
            False, "last_step", ["relu", "linear"]),  # the common MLP head
    "relu6-sigmoid-softmax": (lambda: SequentialHead(I, H, nn.Sequential(
        nn.Linear(H, 10), nn.ReLU6(), nn.Flatten(), nn.Identity(), nn.Linear(10, 8), nn.Sigmoid(), nn.Linear(8, 3),
        nn.Softmax(dim=-1)), num_layers=2), False, "last_step", ["relu6", "sigmoid", "softmax"]),  # 2 GRU layers
    "hardtanh-tanh-sigmoid": (lambda: SequentialHead(I, H, nn.Sequential(
        nn.Linear(H, 10), nn.Hardtanh(0, 6), nn.Linear(10, 8), nn.Tanh(), nn.Linear(8, 2), nn.Sigmoid()),
        batch_first=False), True, "last_step", ["relu6", "tanh", "sigmoid"]),  # time-major, output sigmoid
    "batchnorm": (lambda: randomize_batch_norms(SequentialHead(I, H, nn.Sequential(
        nn.BatchNorm1d(H), nn.Linear(H, 10), nn.BatchNorm1d(10), nn.ReLU(), nn.BatchNorm1d(10), nn.Linear(10, 3))),
        seed=1), False, "last_step", ["relu", "linear"]),  # before, after and between the Linear layers
    "tutorial-softmax": (lambda: TutorialClassifier(I, H, 3), False, "last_step", ["relu", "softmax"]),
    "h_n-1-layer": (lambda: HiddenStateHead(I, H, 3), False, "final_state", ["linear"]),  # fc(h[-1])
    "h_n-2-layers-mlp": (lambda: HiddenStateHead(I, H, 3, num_layers=2, hidden=8), False, "final_state",
                         ["tanh", "linear"]),
    "h_n-squeeze": (lambda: HiddenStateHead(I, H, 3, squeeze=True), False, "final_state", ["linear"]),
    "scaled-buffers": (lambda: ScaledInput(I, H, 3), False, "last_step", ["relu", "linear"]),  # (x - mean) / std
    "scaled-scalars": (lambda: ScaledInput(I, H, 3, per_feature=False), False, "last_step", ["relu", "linear"]),
    "every-step-chain": (lambda: PerStepChain(I, H, 3), True, "every_step", ["relu", "sigmoid"]),
}

# name: (module factory, {format: what the message must contain}); one line per form.
REFUSED = {
    "attention": (Attention, {"module": "MultiheadAttention", "pt2": "MultiheadAttention",
                              "onnx-torchscript": "across axes", "onnx-dynamo": "across axes"}),
    "conv1d-front-end": (ConvFrontEnd, {"module": "Conv1d", "pt2": "conv1d.*before the first GRU",
                                        "onnx-torchscript": "'Conv'.*before the first GRU",
                                        "onnx-dynamo": "'Conv'.*before the first GRU"}),
    "two-inputs": (TwoInputs, {"module": "takes 2 inputs", "pt2": "takes 2 inputs", "onnx-torchscript": "2 inputs",
                               "onnx-dynamo": "2 inputs"}),
    "h_n-bidirectional": (BidirectionalFinalState, dict.fromkeys(FORMATS, "h_n.* of a bidirectional GRU")),
    "gelu-in-head": (GeluHead, dict.fromkeys(FORMATS, "(?i)gelu.*after the GRU")),
    "non-affine-input": (NonAffineInput, dict.fromkeys(FORMATS, "(?i)abs.*before the first GRU")),
}


def _example(module, time_major: bool):
    x = torch.from_numpy(np.random.default_rng(0).standard_normal((T, N, I) if time_major else (N, T, I))
                         .astype(np.float32))
    return (x, torch.zeros(3)) if isinstance(module, TwoInputs) else (x,)


def _source(module, fmt: str, time_major: bool, tmp_path):
    """The module itself, or the file ``fmt`` writes of it (in eval mode)."""
    module.eval()
    if fmt == "module":
        return module
    args = _example(module, time_major)
    if fmt == "pt2":
        path = tmp_path / "model.pt2"
        torch.export.save(torch.export.export(module, args), str(path))
        return path
    path = tmp_path / "model.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(module, args, str(path), dynamo=fmt == "onnx-dynamo", verbose=False,
                          input_names=["x", "b"][:len(args)], output_names=["y"])
    return path


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("form", FORMS)
def test_form_loads_and_matches_torch(form, fmt, tmp_path):
    factory, time_major, reads, activations = FORMS[form]
    torch.manual_seed(0)
    module = factory()
    source = _source(module, fmt, time_major, tmp_path)
    model = grukit.load(source)
    assert [d.activation for d in model.head.layers] == activations
    assert model.head.reads == reads
    assert model.meta["input_layout"] == ("time_major" if time_major else "batch_first")
    x = random_inputs(19, N=N, T=T, I=I)
    with torch.no_grad():
        feed = torch.from_numpy(x.transpose(1, 0, 2).copy() if time_major else x)
        expected = module.eval()(feed).numpy()
    ours = model.predict(x)
    np.testing.assert_allclose(ours, expected, atol=FLOAT_ATOL, rtol=0, err_msg=f"{form} {fmt}: vs torch")
    framework, who = run_source(source, model, x)
    np.testing.assert_allclose(ours, framework, atol=FLOAT_ATOL, rtol=0, err_msg=f"{form} {fmt}: vs {who}")


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("form", REFUSED)
def test_form_is_refused_by_name(form, fmt, tmp_path):
    factory, named = REFUSED[form]
    torch.manual_seed(0)
    source = _source(factory(), fmt, False, tmp_path)
    with pytest.raises(UnsupportedModelError, match=named[fmt]):
        grukit.load(source)


# (keyword arguments of random_model): one line per purpose.
GRUKIT_CHAINS = {
    "relu-softmax": dict(seed=30, I=4, H=10, O=3, hidden=[(8, "relu")], activation="softmax"),
    "relu6-tanh-2-layers": dict(seed=31, I=3, H=8, O=2, layers=2, hidden=[(8, "relu6"), (6, "tanh")]),
    "sigmoid-every-step-lbr0": dict(seed=32, I=5, H=9, O=4, lbr=0, hidden=[(7, "sigmoid")], activation="sigmoid",
                                    per_step=True),
}


@pytest.mark.parametrize("case", GRUKIT_CHAINS)
def test_grukit_onnx_with_a_chain_head_loads_back(case, tmp_path):
    original = random_model(**GRUKIT_CHAINS[case])
    model = grukit.load(export_onnx_sequence(original, tmp_path / "seq.onnx"))
    assert [d.activation for d in model.head.layers] == [d.activation for d in original.head.layers]
    assert model.head.reads == original.head.reads
    for got, expected in zip(model.head.layers, original.head.layers):
        np.testing.assert_array_equal(got.W, expected.W)
        np.testing.assert_array_equal(got.b, expected.b)
    x = random_inputs(3, N=4, T=12, I=original.input_size)
    np.testing.assert_allclose(model.predict(x), original.predict(x), atol=FLOAT_ATOL, rtol=0)
