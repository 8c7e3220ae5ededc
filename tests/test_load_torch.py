"""The PyTorch module loader and the float reference against torch itself."""

import numpy as np
import pytest
import torch
from torch import nn

from torch_modules import EveryStep, LastStep

import grukit
from grukit.core.errors import UnsupportedModelError

# float32 GRU vs float32 GRU with a different summation order.
FLOAT_ATOL = 1e-5


def _torch_out(module, x, batch_first=True):
    with torch.no_grad():
        xt = torch.from_numpy(x if batch_first else x.transpose(1, 0, 2).copy())
        return module(xt).numpy()


@pytest.mark.parametrize(
    "num_layers, batch_first, bias, bidirectional",
    [
        (1, True, True, False),   # the common case
        (2, True, True, False),   # stacked
        (3, False, True, False),  # time-major, three layers
        (1, True, False, False),  # no bias
        (2, False, False, True),  # bidirectional, stacked, no bias
    ],
)
def test_last_step_head_matches_torch(num_layers, batch_first, bias, bidirectional):
    torch.manual_seed(0)
    module = LastStep(5, 12, 3, num_layers, batch_first, bias, bidirectional)
    model = grukit.load(module)
    assert len(model.layers) == num_layers and not model.per_step
    x = np.random.default_rng(1).standard_normal((4, 20, 5)).astype(np.float32)
    np.testing.assert_allclose(model.predict(x), _torch_out(module, x, batch_first), atol=FLOAT_ATOL, rtol=0)


@pytest.mark.parametrize("batch_first", [True, False])
def test_every_step_head_matches_torch(batch_first):
    torch.manual_seed(1)
    module = EveryStep(3, 16, 2, num_layers=2, batch_first=batch_first)
    model = grukit.load(module)
    assert model.per_step
    x = np.random.default_rng(2).standard_normal((3, 30, 3)).astype(np.float32)
    np.testing.assert_allclose(model.predict(x), _torch_out(module, x, batch_first), atol=FLOAT_ATOL, rtol=0)


def test_long_sequence_with_large_inputs():
    # Saturating gates over many steps: the reference must stay within tolerance throughout.
    torch.manual_seed(2)
    module = LastStep(4, 32, 1)
    model = grukit.load(module)
    x = 4 * np.random.default_rng(3).standard_normal((2, 200, 4)).astype(np.float32)
    np.testing.assert_allclose(model.predict(x), _torch_out(module, x), atol=FLOAT_ATOL, rtol=0)


def test_forward_doing_more_is_refused():
    class Doubled(LastStep):
        def forward(self, x):
            return 2 * super().forward(x)

    with pytest.raises(UnsupportedModelError, match="mul on the GRU's data path"):
        grukit.load(Doubled(3, 8, 1))


def test_a_fixed_step_is_caught_by_the_check_at_another_length():
    # Exported at T=7, out[:, 6] is the last step; the self check runs at another T, where it is not.
    class FixedStep(LastStep):
        def forward(self, x):
            return self.fc(self.gru(x)[0][:, 6])

    with pytest.raises(UnsupportedModelError, match="disagree"):
        grukit.load(FixedStep(3, 8, 1))


def test_unknown_submodule_is_refused():
    class WithConv(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv1d(3, 3, 1)
            self.gru = nn.GRU(3, 8, batch_first=True)
            self.fc = nn.Linear(8, 1)

    with pytest.raises(UnsupportedModelError, match="Conv1d"):
        grukit.load(WithConv())


def test_loading_leaves_the_module_and_torch_as_they_were():
    module = LastStep(3, 8, 2).train()
    torch.manual_seed(5)
    expected = torch.rand(3)
    torch.manual_seed(5)
    grukit.load(module)
    assert module.training
    assert torch.equal(torch.rand(3), expected)  # the export's example input does not draw from torch's RNG
