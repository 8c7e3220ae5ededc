"""PyTorch modules the way users write them: nn.GRU followed by nn.Linear, on the last step or every step."""

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
