"""Pruning with training data (grukit.quantize.finetune): the torch twin computes the grukit model exactly,
and gradual pruning returns a smaller model and its module, equal to each other, trained on (x, y)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import grukit
from gru_factory import random_inputs, random_model
from grukit.quantize import finetune

CASES = {
    "lbr1_mlp": dict(seed=60, I=4, H=12, O=3, hidden=[(6, "relu6")], activation="softmax"),
    "lbr0_stacked_per_step": dict(seed=61, I=3, H=10, O=2, layers=2, lbr=[0, 1], per_step=True),
}


@pytest.mark.parametrize("case", CASES)
def test_the_twin_computes_the_model(case):
    kw = CASES[case]
    model = random_model(**kw)
    x = random_inputs(kw["seed"], N=6, T=9, I=kw["I"])
    module = finetune.trainable(model)
    with torch.no_grad():
        out = module(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(out, model.predict(x), rtol=0, atol=1e-5)
    back = module.to_model()
    for a, b in zip(back.layers, model.layers):  # the weights go there and back unchanged
        for name in ("W", "R", "Wb", "Rb"):
            np.testing.assert_array_equal(getattr(a.forward, name), getattr(b.forward, name))


def test_gradual_pruning_trains_a_smaller_model():
    model = random_model(**CASES["lbr1_mlp"])
    x = random_inputs(62, N=96, T=8, I=4)
    y = model.predict(x).argmax(-1)  # labels the original model gets right, so there is something to keep
    result = grukit.prune_and_fine_tune(model, x, y, ratio=0.5, stages=2, epochs=3, final_epochs=3)
    assert result.model.layers[0].hidden_size == 6
    assert [h["hidden"] for h in result.history] == [[7], [6], [6]]  # 0.5 * (1 - (1 - s/2)^3): 0.4375, 0.5
    assert all(len(h["loss"]) == 3 for h in result.history)
    with torch.no_grad():
        out = result.module(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(out, result.model.predict(x), rtol=0, atol=1e-5)
    assert np.mean(result.model.predict(x).argmax(-1) == y) > 0.8


def test_bad_fine_tune_requests():
    model = random_model(**CASES["lbr1_mlp"])
    x = random_inputs(63, N=8, T=5, I=4)
    with pytest.raises(grukit.BadInputError, match="ratio"):
        grukit.prune_and_fine_tune(model, x, np.zeros(8, np.int64), ratio=1.0)
    with pytest.raises(grukit.BadInputError, match="rows"):
        grukit.prune_and_fine_tune(model, x, np.zeros(5, np.int64), ratio=0.5)
