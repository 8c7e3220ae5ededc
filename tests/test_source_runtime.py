"""The source-framework runner (export/source_runtime.py) on the layouts users' forwards produce.

Each case is compared with torch run directly on the same input, laid out by hand.
"""

import numpy as np
import torch
from torch import nn

import grukit
from grukit.export.source_runtime import run_source

from torch_modules import LastStep

# float32 framework vs float32 framework on the same input: only the runner's reshaping can differ.
ATOL = 1e-6


class TimeMajorReturningBatchFirst(nn.Module):
    """A time-major GRU whose forward returns every step batch-first."""

    def __init__(self):
        super().__init__()
        self.gru = nn.GRU(3, 8)  # batch_first=False
        self.fc = nn.Linear(8, 2)

    def forward(self, x):  # x [T, N, I]
        return self.fc(self.gru(x)[0]).transpose(0, 1)  # [N, T, O]


class TimeMajorReturningTimeMajor(TimeMajorReturningBatchFirst):
    def forward(self, x):
        return self.fc(self.gru(x)[0])  # [T, N, O]


def _direct(module, x_ntf, time_major_in, time_major_out):
    with torch.no_grad():
        feed = torch.from_numpy(x_ntf.transpose(1, 0, 2).copy() if time_major_in else x_ntf)
        out = module.eval()(feed).numpy()
    return out.transpose(1, 0, 2) if time_major_out else out


def test_time_major_module_with_batch_first_output_and_n_equal_t():
    # N == T: the layout cannot be guessed from the shape, it must come from what the loader recorded.
    torch.manual_seed(0)
    module = TimeMajorReturningBatchFirst()
    model = grukit.load(module)
    x = np.random.default_rng(0).standard_normal((6, 6, 3)).astype(np.float32)
    got, _ = run_source(module, model, x)
    np.testing.assert_allclose(got, _direct(module, x, True, False), atol=ATOL, rtol=0)


def test_time_major_module_with_time_major_output_and_n_equal_t():
    torch.manual_seed(1)
    module = TimeMajorReturningTimeMajor()
    model = grukit.load(module)
    x = np.random.default_rng(1).standard_normal((5, 5, 3)).astype(np.float32)
    got, _ = run_source(module, model, x)
    np.testing.assert_allclose(got, _direct(module, x, True, True), atol=ATOL, rtol=0)


def test_fixed_batch_program_runs_in_padded_chunks(tmp_path):
    # Exported with batch 4 and no dynamic shapes: 10 sequences run as 4 + 4 + 2 (padded to 4).
    torch.manual_seed(2)
    module = LastStep(3, 8, 2).eval()
    path = tmp_path / "model.pt2"
    torch.export.save(torch.export.export(module, (torch.randn(4, 7, 3),)), str(path))
    model = grukit.load(path)
    x = np.random.default_rng(2).standard_normal((10, 7, 3)).astype(np.float32)
    got, who = run_source(path, model, x)
    assert got.shape == (10, 2) and "torch" in who
    np.testing.assert_allclose(got, _direct(module, x, False, False), atol=ATOL, rtol=0)


def test_module_training_mode_is_restored():
    module = LastStep(3, 8, 2).train()
    model = grukit.load(module)
    run_source(module, model, np.zeros((2, 4, 3), np.float32))
    assert module.training
