"""The model shapes people write deploy through every stage (issue 19): an MLP head and the h_n idiom from
torch, an MLP head from a Keras functional model; TFLite-Micro and the C kernel bit-exact with the NumPy
integer runtime, the head counted in the report's model summary."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from torch import nn

import keras  # a test dependency (tests/conftest.py chooses its backend)
from keras import layers

import grukit
from grukit.pipeline import deploy
from torch_modules import HiddenStateHead, SequentialHead, randomize_batch_norms

I, H, O, T = 3, 12, 4, 10


def _data(seed: int):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((40, T, I)).astype(np.float32)
    return x[:24], (x[24:], rng.integers(0, O, 16))


def _torch_models():
    torch.manual_seed(90)
    mlp = SequentialHead(I, H, nn.Sequential(nn.Dropout(0.2), nn.Linear(H, 8), nn.BatchNorm1d(8), nn.ReLU(),
                                             nn.Linear(8, O), nn.Softmax(dim=-1)))
    randomize_batch_norms(mlp)
    return {"torch MLP head": mlp.eval(), "torch h_n[-1], 2 layers": HiddenStateHead(I, H, O, num_layers=2).eval()}


@pytest.mark.parametrize("name", list(_torch_models()))
def test_torch_heads_deploy_bit_exact(name, tmp_path):
    module = _torch_models()[name]
    calib, val = _data(91)
    report = deploy(module, calib, val, "stm32l476", out_dir=tmp_path, progress=False, observer="minmax")
    assert report.bit_exact == {"tflite-micro": True, "c-kernel": True}, report.bit_exact_detail
    model = grukit.load(module)
    summary = json.loads((tmp_path / "report.json").read_text())["model"]
    assert summary["params"] == model.param_count() and summary["macs_per_step"] == model.macs_per_step()
    if "h_n" in name:
        assert model.head.reads == "final_state"
    else:
        assert [d.activation for d in model.head.layers] == ["relu", "softmax"]


def test_keras_functional_mlp_head_deploys_bit_exact(tmp_path):
    keras.utils.set_random_seed(92)
    inputs = keras.Input((T, I))
    x = layers.GRU(H)(inputs)
    x = layers.Dropout(0.3)(x)
    x = layers.Dense(8, activation="relu")(x)
    outputs = layers.Dense(O, activation="softmax")(x)
    path = tmp_path / "mlp.keras"
    keras.Model(inputs, outputs).save(path)
    calib, val = _data(93)
    report = deploy(path, calib, val, "stm32l476", out_dir=tmp_path / "out", progress=False, observer="minmax")
    assert report.bit_exact == {"tflite-micro": True, "c-kernel": True}, report.bit_exact_detail
    assert report.scores["framework"] == report.scores["numpy-float"]
