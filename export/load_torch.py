"""Load an in-memory PyTorch ``nn.Module`` holding ``nn.GRU`` followed by ``nn.Linear``.

The module's own ``forward`` is what the user trained, so after reading the weights the loader runs the
module and the float reference on the same random input and refuses the module if they disagree: a
forward that does more than GRU -> Linear on the last (or every) step is reported, never ignored.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from grukit.core.errors import UnsupportedModelError
from grukit.core.float_gru import layers_forward
from grukit.export.self_check import require_agreement
from grukit.export.source_runtime import run_torch_module, source_meta, to_batch_first, to_input_layout
from grukit.core.model import Dense, GRUDirection, GRULayer, GRUModel

# PyTorch stacks gates r, z, n; grukit's order is z, r, n.
TORCH_TO_GRUKIT = [1, 0, 2]


def _direction(gru, layer: int, suffix: str) -> GRUDirection:
    H = gru.hidden_size
    get = lambda name: getattr(gru, f"{name}_l{layer}{suffix}").detach().cpu().numpy().astype(np.float32)
    W = get("weight_ih").reshape(3, H, -1)[TORCH_TO_GRUKIT]
    R = get("weight_hh").reshape(3, H, H)[TORCH_TO_GRUKIT]
    if gru.bias:
        Wb = get("bias_ih").reshape(3, H)[TORCH_TO_GRUKIT]
        Rb = get("bias_hh").reshape(3, H)[TORCH_TO_GRUKIT]
    else:
        Wb = np.zeros((3, H), np.float32)
        Rb = np.zeros((3, H), np.float32)
    return GRUDirection(W=W, R=R, Wb=Wb, Rb=Rb)


def gru_layers_from_torch(gru) -> list[GRULayer]:
    """The grukit layers of one ``torch.nn.GRU`` (any num_layers, bias on or off, bidirectional)."""
    if getattr(gru, "proj_size", 0):
        raise UnsupportedModelError("nn.GRU with proj_size is not supported")
    layers = []
    for k in range(gru.num_layers):
        reverse = _direction(gru, k, "_reverse") if gru.bidirectional else None
        layers.append(GRULayer(forward=_direction(gru, k, ""), linear_before_reset=1, reverse=reverse))
    return layers


def load_torch_module(module, per_step: bool | None = None, name: str | None = None) -> GRUModel:
    """Read a module made of ``nn.GRU`` modules and at most one trailing ``nn.Linear``.

    per_step: whether the module's forward applies the Linear to every step (output [N, T, O]) or the last
    one ([N, O]). None works it out from the module's own output shape. ``meta`` records the input layout
    and the labels of the forward's output axes, which running the module needs.
    """
    grus = [m for m in module.modules() if isinstance(m, nn.GRU)]
    linears = [m for m in module.modules() if isinstance(m, nn.Linear)]
    if isinstance(module, nn.GRU):
        grus = [module]
    if not grus:
        raise UnsupportedModelError(f"{type(module).__name__} holds no nn.GRU")
    if len(linears) > 1:
        raise UnsupportedModelError(
            f"{type(module).__name__} holds {len(linears)} nn.Linear modules; grukit supports one dense head"
        )
    known = (nn.GRU, nn.Linear, nn.Dropout, nn.Identity)
    for sub in module.modules():
        if sub is module or isinstance(sub, known) or isinstance(sub, (nn.Sequential, nn.ModuleList)):
            continue
        if any(True for _ in sub.children()) and not list(sub.parameters(recurse=False)):
            continue  # a container of known modules
        raise UnsupportedModelError(f"module {type(sub).__name__} is not supported (grukit reads nn.GRU and nn.Linear)")

    layers = []
    for g in grus:
        layers.extend(gru_layers_from_torch(g))
    batch_first = grus[0].batch_first
    if any(g.batch_first != batch_first for g in grus):
        raise UnsupportedModelError("the nn.GRU modules disagree on batch_first")

    # Run the module once to learn its output layout, and to check the model we read computes the same.
    rng = np.random.default_rng(0)
    T, N = 7, 3
    x = rng.standard_normal((N, T, layers[0].input_size)).astype(np.float32)
    raw = run_torch_module(module, to_input_layout(x, "batch_first" if batch_first else "time_major"))
    meta = source_meta(batch_first, _output_axes(raw, N, T))
    out = to_batch_first(raw, meta["output_axes"])

    head = None
    if linears:
        lin = linears[0]
        W = lin.weight.detach().cpu().numpy()
        b = lin.bias.detach().cpu().numpy() if lin.bias is not None else np.zeros(W.shape[0], np.float32)
        if per_step is None:
            per_step = out.ndim == 3
        head = Dense(W=W, b=b, per_step=bool(per_step))
    elif per_step is None:
        per_step = out.ndim == 3
    model = GRUModel(layers=tuple(layers), head=head, name=name or type(module).__name__, source="torch.nn.Module",
                     meta=meta)
    if head is None and per_step:
        ours = _all_steps(model, x)
    else:
        ours = model.predict(x)
    require_agreement(out, ours, f"{type(module).__name__}.forward",
                      "a forward that does more than GRU -> Linear")
    return model


def _output_axes(out: np.ndarray, N: int, T: int) -> tuple[str, ...] | None:
    """Labels of the forward's output axes, told apart by the check input's sizes (N != T)."""
    if out.ndim == 2:
        return ("N", "F")
    if out.ndim == 3:
        return ("T", "N", "F") if out.shape[:2] == (T, N) else ("N", "T", "F")
    return None  # not a layout grukit produces: the self check below reports the shape


def _all_steps(model: GRUModel, x: np.ndarray) -> np.ndarray:
    return layers_forward(model, x)[-1]
