"""Pruning with training data: gradual structured pruning with recovery epochs, in PyTorch.

    result = grukit.prune_and_fine_tune(module, x, y, ratio=0.75)   # the wiring layer's entry point
    result.model     # the pruned grukit GRUModel: quantize, export, deploy it
    result.module    # the same network as a trainable torch module (TrainableGRU), to keep training

The units go in ``stages`` steps on the schedule of Zhu & Gupta ("To prune, or not to prune", 2017): the
fraction removed after stage s of S is ``ratio * (1 - (1 - s / S) ** 3)``, large steps first, small ones
as the network has less to give. Each stage prunes with ``grukit.quantize.prune`` (the same criteria and
least-squares refit as one-shot pruning, on the training inputs) and then trains ``epochs`` epochs on (x, y)
so the smaller network recovers; ``final_epochs`` more at the end. Each training run decays the learning rate
on a cosine to zero and keeps the weights of its epoch with the lowest loss over all of (x, y): small data and
Adam make single epochs noisy, and the last epoch is not always the best one (measured on the demo at 25%:
the last epochs' weights scored 90.7% on fresh windows, the best epochs' 97.7%, the original 97.8%).

Training runs on a torch twin of the grukit model (``TrainableGRU``): ``nn.GRU`` layers for
linear_before_reset 1, a step loop for 0, and the head's dense chain; it converts to and from the model
representation exactly (same float32 weights). The twin, not the module the user passed, is what trains:
it is the pruned network itself, with input scaling and BatchNorm already folded by the loader.

Torch is the optional dependency ``grukit[torch]``; this module imports it on first use.
"""

from __future__ import annotations

import copy
import importlib
from dataclasses import dataclass, field, replace
from typing import Callable

import numpy as np

from grukit.core.errors import BadInputError, MissingDependencyError
from grukit.core.float_gru import as_batch
from grukit.core.model import GATE_N, GATE_R, GATE_Z, Dense, GRUDirection, GRUModel
from grukit.quantize.prune import CRITERIA, prune

# torch's GRU gate order is r, z, n; the representation's is z, r, n.
TORCH_GATES = (GATE_R, GATE_Z, GATE_N)


def _torch():
    try:
        return importlib.import_module("torch")
    except ImportError:
        raise MissingDependencyError("fine-tuning needs PyTorch: pip install 'grukit[torch]'") from None


def schedule(ratio: float, stages: int) -> list[float]:
    """The fraction of units removed after each stage (Zhu & Gupta's cubic schedule), ending at ratio."""
    return [ratio * (1 - (1 - s / stages) ** 3) for s in range(1, stages + 1)]


def trainable(model: GRUModel):
    """A torch module computing ``model`` (float32, same weights): ``TrainableGRU``."""
    torch = _torch()
    nn = torch.nn

    class TrainableGRU(nn.Module):
        """The GRU stack and dense head of a grukit model. forward(x [N, T, I]) returns the head's output
        before its last activation (logits) when ``logits=True``, else after it."""

        def __init__(self, model: GRUModel):
            super().__init__()
            if model.bidirectional:
                raise BadInputError("fine-tuning a bidirectional GRU is not supported")
            self.lbr = [layer.linear_before_reset for layer in model.layers]
            self.grus = nn.ModuleList()
            for layer in model.layers:
                d = layer.forward
                gru = nn.GRU(d.input_size, d.hidden_size, batch_first=True)
                with torch.no_grad():
                    gru.weight_ih_l0.copy_(torch.from_numpy(np.concatenate([d.W[g] for g in TORCH_GATES])))
                    gru.weight_hh_l0.copy_(torch.from_numpy(np.concatenate([d.R[g] for g in TORCH_GATES])))
                    gru.bias_ih_l0.copy_(torch.from_numpy(np.concatenate([d.Wb[g] for g in TORCH_GATES])))
                    gru.bias_hh_l0.copy_(torch.from_numpy(np.concatenate([d.Rb[g] for g in TORCH_GATES])))
                self.grus.append(gru)  # lbr 0 layers keep their weights here and run in _gru_lbr0
            self.reads_every_step = model.per_step
            self.dense = nn.ModuleList()
            self.activations = []
            for layer in (model.head.layers if model.head is not None else ()):
                linear = nn.Linear(layer.in_features, layer.out_features)
                with torch.no_grad():
                    linear.weight.copy_(torch.from_numpy(layer.W))
                    linear.bias.copy_(torch.from_numpy(layer.b))
                self.dense.append(linear)
                self.activations.append(layer.activation)
            self.template = model

        @staticmethod
        def _activation(y, name: str):
            if name == "relu":
                return torch.relu(y)
            if name == "relu6":
                return torch.clamp(y, 0.0, 6.0)
            if name == "tanh":
                return torch.tanh(y)
            if name == "sigmoid":
                return torch.sigmoid(y)
            if name == "softmax":
                return torch.softmax(y, dim=-1)
            return y

        @staticmethod
        def _gru_lbr0(gru, x):
            """linear_before_reset 0 (n = tanh(W_n x + R_n (r * h) + b)), which nn.GRU does not compute."""
            H = gru.hidden_size
            gx = x @ gru.weight_ih_l0.T + gru.bias_ih_l0
            w_r, w_z, w_n = gru.weight_hh_l0.split(H)
            b_r, b_z, b_n = gru.bias_hh_l0.split(H)
            h = x.new_zeros(x.shape[0], H)
            out = []
            for t in range(x.shape[1]):
                x_r, x_z, x_n = gx[:, t].split(H, dim=-1)
                r = torch.sigmoid(x_r + h @ w_r.T + b_r)
                z = torch.sigmoid(x_z + h @ w_z.T + b_z)
                n = torch.tanh(x_n + (r * h) @ w_n.T + b_n)
                h = (1 - z) * n + z * h
                out.append(h)
            return torch.stack(out, dim=1)

        def forward(self, x, logits: bool = False):
            for gru, lbr in zip(self.grus, self.lbr):
                x = gru(x)[0] if lbr else self._gru_lbr0(gru, x)
            if not self.reads_every_step:
                x = x[:, -1]
            for k, (linear, name) in enumerate(zip(self.dense, self.activations)):
                x = linear(x)
                if not (logits and k == len(self.dense) - 1):
                    x = self._activation(x, name)
            return x

        def to_model(self) -> GRUModel:
            """The grukit model with this module's current weights."""
            f = lambda t: t.detach().cpu().numpy().astype(np.float32)  # noqa: E731
            layers = []
            for layer, gru in zip(self.template.layers, self.grus):
                H = gru.hidden_size
                parts = {name: f(getattr(gru, f"{name}_l0")).reshape(3, H, -1) for name in ("weight_ih", "weight_hh")}
                biases = {name: f(getattr(gru, f"{name}_l0")).reshape(3, H) for name in ("bias_ih", "bias_hh")}
                order = np.argsort(TORCH_GATES)  # torch's r, z, n rows back to z, r, n
                d = GRUDirection(W=parts["weight_ih"][order], R=parts["weight_hh"][order],
                                 Wb=biases["bias_ih"][order], Rb=biases["bias_hh"][order])
                layers.append(replace(layer, forward=d))
            head = self.template.head
            if head is not None:
                head = replace(head, layers=tuple(Dense(f(lin.weight), f(lin.bias), old.activation)
                                                  for lin, old in zip(self.dense, head.layers)))
            return replace(self.template, layers=tuple(layers), head=head)

    return TrainableGRU(model)


@dataclass
class FineTuneResult:
    """The pruned model, its trainable torch twin, and per stage: the fraction removed, hidden sizes, the
    loss over all of (x, y) after each epoch (eval mode)."""

    model: GRUModel
    module: object
    history: list[dict] = field(default_factory=list)


def _loss_function(model: GRUModel, y: np.ndarray):
    """(loss(module, x, y), y as a tensor): cross-entropy on the logits for integer labels (binary
    cross-entropy for one sigmoid output), MSE on the output for float targets."""
    torch = _torch()
    F = torch.nn.functional
    if np.issubdtype(y.dtype, np.integer):
        if model.output_size == 1:
            target = torch.from_numpy(y.astype(np.float32))
            return (lambda m, xb, yb: F.binary_cross_entropy_with_logits(m(xb, logits=True)[..., 0], yb)), target
        target = torch.from_numpy(y.astype(np.int64))
        return (lambda m, xb, yb: F.cross_entropy(m(xb, logits=True).reshape(-1, model.output_size),
                                                  yb.reshape(-1))), target
    target = torch.from_numpy(y.astype(np.float32))
    return (lambda m, xb, yb: F.mse_loss(m(xb), yb)), target


def fine_tune_prune(model: GRUModel, x: np.ndarray, y: np.ndarray, ratio: float, stages: int = 4,
                    epochs: int = 20, final_epochs: int = 40, lr: float = 3e-3, batch_size: int = 64,
                    criterion: str = "activation", seed: int = 0,
                    progress: Callable[[str], None] | None = None) -> FineTuneResult:
    """Prune ``model`` to ``ratio`` of its hidden units removed, in ``stages`` steps each followed by
    ``epochs`` epochs of training on (x [N, T, I], y), then ``final_epochs`` more (module docstring).
    y: integer class labels [N] (or [N, T] for a per-step head) or float targets of the output's shape."""
    torch = _torch()
    if not 0 <= ratio < 1:
        raise BadInputError(f"the pruning ratio must be in [0, 1), got {ratio}")
    if criterion not in CRITERIA:
        raise BadInputError(f"unknown importance criterion {criterion!r}; use one of {', '.join(CRITERIA)}")
    x = as_batch(x, model.input_size)
    y = np.asarray(y)
    if y.shape[0] != x.shape[0]:
        raise BadInputError(f"y has {y.shape[0]} rows but x has {x.shape[0]}")
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    loss_fn, target = _loss_function(model, y)
    inputs = torch.from_numpy(x)
    original_sizes = [layer.hidden_size for layer in model.layers]
    history = []
    module = None

    def train(module, epochs: int, what: str) -> list[float]:
        """``epochs`` epochs of Adam with the learning rate on a cosine from lr to 0; the module ends with the
        weights of the epoch whose loss over all of (x, y) was lowest. Returns that loss after each epoch."""
        batches = max(1, len(x) // batch_size)
        optimizer = torch.optim.Adam(module.parameters(), lr=lr)
        decay = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(1, epochs * batches))
        losses: list[float] = []
        best = (full_loss(module), copy.deepcopy(module.state_dict()))
        for epoch in range(epochs):
            module.train()
            for batch in np.array_split(rng.permutation(len(x)), batches):
                optimizer.zero_grad()
                loss_fn(module, inputs[batch], target[batch]).backward()
                optimizer.step()
                decay.step()
            losses.append(full_loss(module))
            if losses[-1] < best[0]:
                best = (losses[-1], copy.deepcopy(module.state_dict()))
            if progress is not None:
                progress(f"{what}: epoch {epoch + 1}/{epochs}, loss {losses[-1]:.4f}")
        module.load_state_dict(best[1])
        module.eval()
        return losses

    def full_loss(module) -> float:
        module.eval()
        with torch.no_grad():
            return float(loss_fn(module, inputs, target))

    current = model
    for stage, fraction in enumerate(schedule(ratio, stages), start=1):
        keep = [max(1, round(H * (1 - fraction))) for H in original_sizes]
        if model.head is None:
            keep[-1] = original_sizes[-1]  # the top layer's state is the output: it stays whole
        if keep != [layer.hidden_size for layer in current.layers]:
            current = prune(current, x, units=keep, criterion=criterion).model
        module = trainable(current)
        losses = train(module, epochs, f"stage {stage}/{stages}, hidden {keep}")
        current = module.to_model()
        history.append({"stage": stage, "removed": fraction, "hidden": keep, "loss": losses})
    losses = train(module, final_epochs, "recovery") if final_epochs else []
    history.append({"stage": "recovery", "removed": ratio, "hidden": keep, "loss": losses})
    return FineTuneResult(module.to_model(), module, history)
