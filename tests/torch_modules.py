"""PyTorch modules the way users write them: nn.GRU followed by nn.Linear, on the last step or every step, and
the forms tutorials write (an MLP head, the h_n idiom, input scaling in forward, BatchNorm), plus modules grukit
refuses."""

import torch
from torch import nn


class LastStep(nn.Module):
    """GRU -> Linear on the last step (output [N, O]), any num_layers / batch_first / bias / bidirectional."""

    def __init__(self, I, H, O, num_layers=1, batch_first=True, bias=True, bidirectional=False):
        super().__init__()
        self.batch_first = batch_first
        self.gru = nn.GRU(I, H, num_layers=num_layers, batch_first=batch_first, bias=bias,
                          bidirectional=bidirectional)
        self.fc = nn.Linear(H * (2 if bidirectional else 1), O)

    def forward(self, x):
        out, _ = self.gru(x)
        return self.fc(out[:, -1] if self.batch_first else out[-1])


class EveryStep(LastStep):
    """GRU -> Linear on every step; returns [N, T, O] whatever the GRU's layout."""

    def forward(self, x):
        out, _ = self.gru(x)
        y = self.fc(out)
        return y if self.batch_first else y.transpose(0, 1)


class FinalState(LastStep):
    """The head on the GRU's returned final state h_n, with a sigmoid."""

    def forward(self, x):
        _, h = self.gru(x)
        return torch.sigmoid(self.fc(h[-1]))


# --- the forms of issue 19 -------------------------------------------------------------------------------------
def randomize_batch_norms(module, seed=0):
    """Give every BatchNorm1d running statistics and an affine map a trained one could have (the defaults are
    the identity, which would fold to nothing)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in module.modules():
            if isinstance(m, nn.BatchNorm1d):
                n = m.num_features
                m.running_mean.copy_(torch.randn(n, generator=g) * 0.5)
                m.running_var.copy_(torch.rand(n, generator=g) + 0.5)
                m.weight.copy_(torch.rand(n, generator=g) + 0.5)
                m.bias.copy_(torch.randn(n, generator=g) * 0.2)
    return module


class SequentialHead(nn.Module):
    """GRU, then an ``nn.Sequential`` head (Dropout, Linear, activations, BatchNorm1d, ...) on the last step."""

    def __init__(self, I, H, head: nn.Sequential, num_layers=1, batch_first=True):
        super().__init__()
        self.batch_first = batch_first
        self.gru = nn.GRU(I, H, num_layers=num_layers, batch_first=batch_first)
        self.head = head

    def forward(self, x):
        out, _ = self.gru(x)
        return self.head(out[:, -1, :] if self.batch_first else out[-1])


class TutorialClassifier(nn.Module):
    """The classifier tutorials write out in forward: fc1 -> relu -> dropout -> fc2 -> softmax."""

    def __init__(self, I, H, O, hidden=16):
        super().__init__()
        self.gru = nn.GRU(I, H, batch_first=True)
        self.fc1 = nn.Linear(H, hidden)
        self.drop = nn.Dropout(0.3)
        self.fc2 = nn.Linear(hidden, O)

    def forward(self, x):
        out, _ = self.gru(x)
        z = torch.relu(self.fc1(out[:, -1, :]))
        return torch.softmax(self.fc2(self.drop(z)), dim=1)


class HiddenStateHead(nn.Module):
    """The h_n idiom: ``_, h = self.gru(x); return self.fc(h[-1])`` (or ``h.squeeze(0)`` for one layer),
    with an optional MLP between."""

    def __init__(self, I, H, O, num_layers=1, squeeze=False, hidden=None, bidirectional=False):
        super().__init__()
        self.squeeze = squeeze
        self.gru = nn.GRU(I, H, num_layers=num_layers, batch_first=True, bidirectional=bidirectional)
        if hidden is None:
            self.fc = nn.Linear(H, O)
        else:
            self.fc = nn.Sequential(nn.Linear(H, hidden), nn.Tanh(), nn.Linear(hidden, O))

    def forward(self, x):
        _, h = self.gru(x)
        return self.fc(h.squeeze(0) if self.squeeze else h[-1])


class ScaledInput(nn.Module):
    """``(x - mean) / std`` at the top of forward: per-feature buffers, or scalar constants."""

    def __init__(self, I, H, O, per_feature=True, seed=0):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.per_feature = per_feature
        if per_feature:
            self.register_buffer("mean", torch.randn(I, generator=g))
            self.register_buffer("std", torch.rand(I, generator=g) + 0.5)
        self.gru = nn.GRU(I, H, batch_first=True)
        self.fc1 = nn.Linear(H, 8)
        self.fc2 = nn.Linear(8, O)

    def forward(self, x):
        x = (x - self.mean) / self.std if self.per_feature else (x - 0.25) * 2.0
        out, _ = self.gru(x)
        return self.fc2(torch.relu(self.fc1(out[:, -1])))


class PerStepChain(nn.Module):
    """A time-major GRU with an MLP on every step; returns [N, T, O]."""

    def __init__(self, I, H, O, num_layers=2):
        super().__init__()
        self.gru = nn.GRU(I, H, num_layers=num_layers)
        self.fc1 = nn.Linear(H, 10)
        self.fc2 = nn.Linear(10, O)

    def forward(self, x):  # x [T, N, I]
        out, _ = self.gru(x)
        return torch.sigmoid(self.fc2(torch.relu(self.fc1(out)))).transpose(0, 1)


# --- forms grukit refuses --------------------------------------------------------------------------------------
class Attention(nn.Module):
    """Self-attention over the GRU's outputs, then a Linear on the last step."""

    def __init__(self, I=4, H=8, O=3):
        super().__init__()
        self.gru = nn.GRU(I, H, batch_first=True)
        self.att = nn.MultiheadAttention(H, 2, batch_first=True)
        self.fc = nn.Linear(H, O)

    def forward(self, x):
        out, _ = self.gru(x)
        a, _ = self.att(out, out, out)
        return self.fc(a[:, -1])


class ConvFrontEnd(nn.Module):
    """A Conv1d over time before the GRU."""

    def __init__(self, I=4, H=8, O=3):
        super().__init__()
        self.conv = nn.Conv1d(I, I, 3, padding=1)
        self.gru = nn.GRU(I, H, batch_first=True)
        self.fc = nn.Linear(H, O)

    def forward(self, x):
        x = self.conv(x.transpose(1, 2)).transpose(1, 2)
        out, _ = self.gru(x)
        return self.fc(out[:, -1])


class TwoInputs(nn.Module):
    """A forward taking the sequence and a second tensor."""

    def __init__(self, I=4, H=8, O=3):
        super().__init__()
        self.gru = nn.GRU(I, H, batch_first=True)
        self.fc = nn.Linear(H, O)

    def forward(self, x, bias):
        out, _ = self.gru(x)
        return self.fc(out[:, -1]) + bias


class BidirectionalFinalState(nn.Module):
    """A head on h_n[-1] of a bidirectional GRU: the reverse direction's state after the first step."""

    def __init__(self, I=4, H=8, O=3):
        super().__init__()
        self.gru = nn.GRU(I, H, batch_first=True, bidirectional=True)
        self.fc = nn.Linear(H, O)

    def forward(self, x):
        _, h = self.gru(x)
        return self.fc(h[-1])


class GeluHead(nn.Module):
    """A GELU between the head's Linear layers: not one of grukit's activations."""

    def __init__(self, I=4, H=8, O=3):
        super().__init__()
        self.gru = nn.GRU(I, H, batch_first=True)
        self.fc1 = nn.Linear(H, 6)
        self.fc2 = nn.Linear(6, O)

    def forward(self, x):
        out, _ = self.gru(x)
        return self.fc2(nn.functional.gelu(self.fc1(out[:, -1])))


class NonAffineInput(nn.Module):
    """A non-affine input transform at the top of forward (a log compression)."""

    def __init__(self, I=4, H=8, O=3):
        super().__init__()
        self.gru = nn.GRU(I, H, batch_first=True)
        self.fc = nn.Linear(H, O)

    def forward(self, x):
        out, _ = self.gru(torch.log1p(x.abs()))
        return self.fc(out[:, -1])
