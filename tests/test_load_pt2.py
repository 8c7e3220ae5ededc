"""The .pt2 (torch.export) loader against the exported program's own module."""

import numpy as np
import pytest
import torch
from torch import nn

import grukit
from grukit.errors import UnsupportedModelError

# float32 GRU vs float32 GRU with a different summation order.
FLOAT_ATOL = 1e-5
N, T, I = 3, 11, 4


class LastStep(nn.Module):
    def __init__(self, num_layers=1, batch_first=True, bias=True, bidirectional=False, H=10, O=2):
        super().__init__()
        self.batch_first = batch_first
        self.gru = nn.GRU(I, H, num_layers=num_layers, batch_first=batch_first, bias=bias,
                          bidirectional=bidirectional)
        self.fc = nn.Linear(H * (2 if bidirectional else 1), O)

    def forward(self, x):
        out, _ = self.gru(x)
        return self.fc(out[:, -1] if self.batch_first else out[-1])


class EveryStep(LastStep):
    def forward(self, x):
        return self.fc(self.gru(x)[0])


class FinalState(LastStep):
    def forward(self, x):
        _, h = self.gru(x)
        return torch.sigmoid(self.fc(h[-1]))


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
    module = cls(num_layers, batch_first, bias, bidirectional)
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
    path = _save(FirstStep(), tmp_path / "model.pt2")
    with pytest.raises(UnsupportedModelError, match="index 0 of the T axis"):
        grukit.load(path)


def test_unknown_op_is_refused_by_name(tmp_path):
    class Relu(LastStep):
        def forward(self, x):
            return torch.relu(super().forward(x))

    torch.manual_seed(0)
    path = _save(Relu(), tmp_path / "model.pt2")
    with pytest.raises(UnsupportedModelError, match="relu"):
        grukit.load(path)
