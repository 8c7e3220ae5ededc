"""Load an in-memory PyTorch ``nn.Module`` holding ``nn.GRU`` and a head, through ``torch.export``.

What the user trained is the module's ``forward``, not its list of submodules: the loader exports the module
(in eval mode) with ``torch.export`` and reads the program with the same walk as a ``.pt2`` file
(load_pt2.ProgramWalk), so a forward that scales its input, reads ``h_n``, or runs an MLP head is read as
written. Before exporting, submodules holding weights grukit cannot represent (Conv1d, attention, LSTM, ...)
are refused by name. Afterwards the module itself and the float reference run on the same random input, at
a sequence length other than the export's, and a disagreement is refused.
"""

from __future__ import annotations

import inspect
import warnings

import numpy as np
import torch
from torch import nn

from grukit.core.errors import UnsupportedModelError
from grukit.core.model import GRUModel
from grukit.export.graph_walk import walk_either_layout, walked_model
from grukit.export.load_pt2 import ProgramWalk
from grukit.export.self_check import require_agreement
from grukit.export.source_runtime import run_source

# Submodules whose weights grukit reads; any other submodule holding parameters is refused by name.
WEIGHTED_MODULES = (nn.GRU, nn.Linear, nn.BatchNorm1d)
# Sizes of the example input torch.export traces with, and of the self check's (a different T: a forward that
# picks a fixed step instead of the last one cannot pass). All distinct, so no axis is taken for another.
EXPORT_N, EXPORT_T, CHECK_T = 3, 7, 9


def load_torch_module(module, name: str | None = None) -> GRUModel:
    """Read a module whose forward runs ``nn.GRU`` modules and an optional head (see graph_walk for what is
    understood), checked against the module itself. ``meta`` records the input layout and the labels of the
    forward's output axes, which running the module needs."""
    who = type(module).__name__
    grus = [m for m in module.modules() if isinstance(m, nn.GRU)]
    if not grus:
        raise UnsupportedModelError(f"{who} holds no nn.GRU")
    for path, sub in module.named_modules():
        if sub is module or isinstance(sub, WEIGHTED_MODULES):
            continue
        if any(True for _ in sub.parameters(recurse=False)):
            raise UnsupportedModelError(
                f"{who}.{path} is a {type(sub).__name__}, whose weights grukit cannot represent (grukit reads nn.GRU, "
                "then dense layers: nn.Linear, nn.BatchNorm1d and activations)")
    _require_one_input(module, who)
    first = grus[0]
    shape = (EXPORT_N, EXPORT_T, first.input_size) if first.batch_first else (EXPORT_T, EXPORT_N, first.input_size)
    was_training = module.training
    module.eval()
    try:
        example = np.random.default_rng(0).standard_normal(shape).astype(np.float32)  # leaves torch's RNG alone
        with warnings.catch_warnings():
            # torch.export warns that nn.GRU reassigns its own _flat_weights while traced: torch's internals.
            warnings.filterwarnings("ignore", message="The tensor attributes .*_flat_weights", category=UserWarning)
            ep = torch.export.export(module, (torch.from_numpy(example),))
    except Exception as e:  # torch.export raises many kinds of errors for a forward it cannot trace
        message = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise UnsupportedModelError(f"{who}.forward: torch.export cannot trace it with one input of shape "
                                    f"{list(shape)} ({message})") from e
    finally:
        module.train(was_training)
    walk = walk_either_layout(ProgramWalk, ep)
    model = walked_model(walk, "torch.nn.Module", name or who)
    _self_check(module, model, who)
    return model


def _require_one_input(module, who: str) -> None:
    """Refuse a forward that needs more than one argument: grukit's model reads one sequence."""
    params = [p for p in inspect.signature(module.forward).parameters.values()
              if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD) and p.default is p.empty]
    if len(params) != 1:
        raise UnsupportedModelError(f"{who}.forward takes {len(params)} inputs "
                                    f"({', '.join(p.name for p in params)}); grukit reads one sequence")


def _self_check(module, model: GRUModel, who: str) -> None:
    x = np.random.default_rng(0).standard_normal((EXPORT_N, CHECK_T, model.input_size)).astype(np.float32)
    got, _ = run_source(module, model, x)
    require_agreement(got, model.predict(x), f"{who}.forward", "what this forward computes")
    model.meta["self_check"] = f"torch {torch.__version__} (nn.Module)"
