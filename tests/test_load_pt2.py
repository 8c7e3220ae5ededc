"""The .pt2 (torch.export) loader against the exported program's own module."""

import numpy as np
import pytest
import torch
from torch import nn

from torch_modules import EveryStep, FinalState, LastStep

import grukit
from grukit.core.errors import UnsupportedModelError

# float32 GRU vs float32 GRU with a different summation order.
FLOAT_ATOL = 1e-5
N, T, I = 3, 11, 4


class FirstStep(LastStep):
    def forward(self, x):
        return self.fc(self.gru(x)[0][:, 0])


def _save(module, path, batch_first=True):
    x = torch.randn(N, T, I) if batch_first else torch.randn(T, N, I)
    torch.export.save(torch.export.export(module.eval(), (x,)), str(path))
    return path


@pytest.mark.parametrize(
    "cls, num_layers, batch_first, bias, bidirectional",
    [
        (LastStep, 1, True, True, False),     # the common case
        (LastStep, 3, False, True, False),    # three layers, time-major
        (LastStep, 2, True, False, True),     # no bias, bidirectional
        (EveryStep, 2, True, True, False),    # every-step head
        (FinalState, 2, True, True, False),   # head on h_n[-1], sigmoid
    ],
)
def test_pt2_matches_exported_module(tmp_path, cls, num_layers, batch_first, bias, bidirectional):
    torch.manual_seed(0)
    module = cls(I, 10, 2, num_layers, batch_first, bias, bidirectional)
    path = _save(module, tmp_path / "model.pt2", batch_first)
    model = grukit.load(path)
    assert len(model.layers) == num_layers and model.bidirectional == bidirectional
    assert model.per_step == (cls is EveryStep)
    x = np.random.default_rng(1).standard_normal((N, T, I)).astype(np.float32)
    feed = x if batch_first else x.transpose(1, 0, 2).copy()
    with torch.no_grad():
        expected = torch.export.load(str(path)).module()(torch.from_numpy(feed)).numpy()
    np.testing.assert_allclose(model.predict(x), expected, atol=FLOAT_ATOL, rtol=0)


def test_head_on_first_step_is_refused(tmp_path):
    torch.manual_seed(0)
    path = _save(FirstStep(I, 10, 2), tmp_path / "model.pt2")
    with pytest.raises(UnsupportedModelError, match="picks time step 0"):
        grukit.load(path)


def test_unknown_op_is_refused_by_name(tmp_path):
    class Exp(LastStep):
        def forward(self, x):
            return torch.exp(super().forward(x))

    torch.manual_seed(0)
    path = _save(Exp(I, 10, 2), tmp_path / "model.pt2")
    with pytest.raises(UnsupportedModelError, match="aten.exp.default"):
        grukit.load(path)


class _StateSequence(LastStep):
    def forward(self, x):
        return self.gru(x)[0]


class _NoGRU(LastStep):
    def forward(self, x):
        return x[:, -1]


class _FinalStateRaw(LastStep):
    def forward(self, x):
        return self.gru(x)[1]  # h_n [layers, N, H]


class _FeaturesFirst(LastStep):
    def forward(self, x):
        return self.gru(x)[0].permute(2, 0, 1)


@pytest.mark.parametrize(
    "cls, named",
    [
        (_StateSequence, "every step's hidden state without a dense head"),
        (_NoGRU, "holds no aten.gru.input"),
        (_FeaturesFirst, "cannot lay out"),
        (_FinalStateRaw, "cannot lay out"),
    ],
)
def test_an_output_grukit_cannot_produce_is_refused(tmp_path, cls, named):
    torch.manual_seed(0)
    path = _save(cls(I, 10, 2), tmp_path / "model.pt2")
    with pytest.raises(UnsupportedModelError, match=named):
        grukit.load(path)


# --- heads and input scaling grukit cannot represent -----------------------------------------------------------
class _Mlp(nn.Module):
    """GRU (2 layers) with two Linear layers and a BatchNorm1d; ``forward`` is each case's own arrangement."""

    def __init__(self, arrange):
        super().__init__()
        self.gru = nn.GRU(I, 10, num_layers=2, batch_first=True)
        self.fc1, self.fc2 = nn.Linear(10, 6), nn.Linear(6, 2)
        self.bn_features, self.bn_time = nn.BatchNorm1d(6), nn.BatchNorm1d(T)
        self.arrange = arrange

    def forward(self, x):
        return self.arrange(self, x)


def _last(m, x):
    return m.gru(x)[0][:, -1]


@pytest.mark.parametrize(
    "arrange, named",
    [
        (lambda m, x: m.fc2(m.fc1(torch.relu(_last(m, x)))), "relu on the GRU's output"),
        (lambda m, x: m.fc2(torch.sigmoid(torch.relu(m.fc1(_last(m, x))))), "sigmoid after relu"),
        (lambda m, x: m.fc2(torch.softmax(m.fc1(_last(m, x)), -1)), "a dense layer after softmax"),
        (lambda m, x: m.bn_features(torch.relu(m.fc1(_last(m, x)))), "no dense layer after it to fold into"),
        (lambda m, x: m.fc1(m.bn_time(m.gru(x)[0])), "normalizes axis 1, which is the sequence's T axis"),
        (lambda m, x: m.fc1(m.gru(x)[1][0]), "reads GRU layer 0's output"),  # h_n of the first layer
        (lambda m, x: (lambda h: m.fc1(h) + m.fc1(h))(_last(m, x)), "one chain of dense layers"),  # two branches
        (lambda m, x: m.fc1(m.gru(x * torch.arange(T)[None, :, None])[0][:, -1]), "varies along the T axis"),
        (lambda m, x: m.fc1(m.gru(x * x)[0][:, -1]), "mul of two tensors computed from the input"),
    ],
    ids=["relu-before-dense", "two-activations", "dense-after-softmax", "batchnorm-last", "batchnorm-over-time",
         "h_n-first-layer", "two-branches", "scaling-over-time", "squared-input"],
)
def test_a_head_or_scaling_grukit_cannot_represent_is_refused(tmp_path, arrange, named):
    torch.manual_seed(0)
    path = _save(_Mlp(arrange), tmp_path / "model.pt2")
    with pytest.raises(UnsupportedModelError, match=named):
        grukit.load(path)
