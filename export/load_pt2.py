"""Load a ``.pt2`` file (``torch.export.save`` of a module holding ``nn.GRU`` -> ``nn.Linear``).

The exported graph is walked in node order. ``aten.gru.input`` carries the weights as a flat list
(per layer, per direction: ``w_ih, w_hh[, b_ih, b_hh]``) and the flags ``has_biases, num_layers, dropout,
train, bidirectional, batch_first``; its output sequence is tracked by what each axis means (batch ``N``,
time ``T``, feature ``F``) through ``permute``/``transpose``, and ``select``/``slice`` on ``T`` must pick the
last step. ``aten.linear`` (or ``addmm`` / ``matmul`` + ``add`` with constant weights) is the head, optionally
followed by ``sigmoid`` or ``softmax``. Anything else is refused by name. At the end the ExportedProgram's
own module and the float reference run on the same random input; a mismatch is refused.
"""

from __future__ import annotations

import operator
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from grukit.core.errors import BadInputError, UnsupportedModelError
from grukit.export.load_torch import TORCH_TO_GRUKIT
from grukit.export.graph_walk import LayoutGuessWrong, walk_either_layout, walked_model
from grukit.export.self_check import require_agreement
from grukit.export.source_runtime import require_output_layout, run_source
from grukit.core.model import GRUDirection, GRULayer, GRUModel


# Ops that only re-view a tensor; on the sequence they change nothing grukit tracks.
PASS_THROUGH = ("aten.contiguous.default", "aten.clone.default", "aten.alias.default", "aten.detach.default",
                "aten.dropout.default", "aten.lift_fresh_copy.default")


@dataclass(frozen=True)
class _Seq:
    axes: tuple[str, ...]  # "N", "T", "F", "T1" (last step kept as size 1), "L" (h_n's layer axis)
    sizes: tuple[int, ...]
    stage: str = "gru"  # "gru", "matmul" (bias still to add), "head", "activation"
    last_state: bool = False  # h_n rather than the output sequence


def load_pt2(path, name: str | None = None, self_check: bool = True) -> GRUModel:
    """Read a ``torch.export`` program holding ``aten.gru.input`` and an optional head, checked against the
    program's own module. ``meta`` records the input layout ("batch_first"/"time_major") and the labels of
    the program's output axes (``output_axes``), which running the program needs."""
    import torch  # optional (grukit[torch]): only a .pt2 needs it

    path = Path(path)
    try:
        ep = torch.export.load(str(path))
    except Exception as e:  # torch raises assorted errors for a file that is not an exported program
        raise BadInputError(f"{path}: cannot read a torch.export program ({e})") from e
    walk = walk_either_layout(_Walk, ep)
    model = walked_model(walk, path, name)
    if self_check:
        _self_check(ep, walk, model, path)
    return model


class _Walk:
    def __init__(self, ep, batch_first: bool):
        self.batch_first = batch_first
        self.layers: list[GRULayer] = []
        self.head_W = self.head_b = None
        self.head_per_step = False
        self.activation = "linear"
        self.values: dict[str, object] = {}
        sig = ep.graph_signature
        consts = {}
        consts.update({k: sig.inputs_to_parameters[k] for k in sig.inputs_to_parameters})
        consts.update({k: sig.inputs_to_buffers[k] for k in sig.inputs_to_buffers})
        consts.update({k: sig.inputs_to_lifted_tensor_constants[k] for k in sig.inputs_to_lifted_tensor_constants})
        tensors = dict(ep.state_dict)
        tensors.update(ep.constants)
        user_inputs = list(sig.user_inputs)
        if len(user_inputs) != 1:
            raise UnsupportedModelError(f"the program takes {len(user_inputs)} inputs; grukit reads one sequence")
        output = None
        for node in ep.graph.nodes:
            if node.op == "placeholder":
                if node.name in consts:
                    self.values[node.name] = tensors[consts[node.name]].detach().cpu().numpy()
                else:
                    shape = tuple(int(s) for s in node.meta["val"].shape)
                    if len(shape) != 3:
                        raise UnsupportedModelError(f"input {node.name!r} has shape {shape}; expected [N, T, I]")
                    labels = ("N", "T", "F") if batch_first else ("T", "N", "F")
                    self.input_shape = shape
                    self.values[node.name] = _Seq(labels, shape)
            elif node.op == "call_function":
                self.values[node.name] = self._call(node)
            elif node.op == "output":
                outs = node.args[0]
                if len(outs) != 1:
                    raise UnsupportedModelError(f"the program returns {len(outs)} values; grukit reads one")
                output = self.values[outs[0].name]
            else:
                raise UnsupportedModelError(f"graph node {node.name!r} of kind {node.op!r} is not supported")
        self._finish(output)

    def _arg(self, a):
        if hasattr(a, "name") and hasattr(a, "op"):
            return self.values[a.name]
        if isinstance(a, (list, tuple)):
            return [self._arg(x) for x in a]
        return a

    def _call(self, node):
        target = str(node.target) if node.target is not operator.getitem else "getitem"
        args = [self._arg(a) for a in node.args]
        kwargs = {k: self._arg(v) for k, v in node.kwargs.items()}
        where = f"{target} ({node.name})"
        seq = next((a for a in args if isinstance(a, _Seq)), None)
        if target == "getitem":
            return args[0][args[1]]
        if target == "aten.gru.input":
            return self._gru(args, where)
        if target in PASS_THROUGH:
            if target == "aten.dropout.default" and args[2]:
                raise UnsupportedModelError(f"{where}: dropout in training mode")
            return args[0]
        if seq is None:
            return self._const(target, args, kwargs, where)
        handler = getattr(self, "_seq_" + target.replace("aten.", "").replace(".", "_"), None)
        if handler is None:
            raise UnsupportedModelError(f"{where}: op {target} on the GRU's data path is not supported")
        return handler(args, where)

    def _const(self, target, args, kwargs, where):
        if target == "aten.zeros.default":
            return np.zeros(args[0], np.float32)
        if target in ("aten.t.default", "aten.numpy_T.default"):
            return args[0].T
        if target == "aten.permute.default":
            return args[0].transpose(args[1])
        raise UnsupportedModelError(f"{where}: op {target} is not supported")

    def _gru(self, args, where):
        X, hx, params, has_biases, num_layers, dropout, train, bidirectional, batch_first = args
        if not isinstance(X, _Seq):
            raise UnsupportedModelError(f"{where}: its input is not the program's input sequence")
        if train:
            raise UnsupportedModelError(f"{where}: exported in training mode (call module.eval() before export)")
        if not isinstance(hx, np.ndarray) or np.any(hx != 0):
            raise UnsupportedModelError(f"{where}: a non-zero initial hidden state is not supported")
        if X.stage != "gru" or X.last_state or (self.layers and "T" not in X.axes):
            raise UnsupportedModelError(f"{where}: its input is not the previous GRU's output sequence")
        want = ("N", "T", "F") if batch_first else ("T", "N", "F")
        if X.axes != want:
            if not self.layers and sorted(X.axes) == sorted(want):
                raise LayoutGuessWrong()
            raise UnsupportedModelError(f"{where}: input axes {X.axes}, expected {want}")
        per_dir = 4 if has_biases else 2
        D = 2 if bidirectional else 1
        if len(params) != per_dir * D * num_layers:
            raise UnsupportedModelError(f"{where}: {len(params)} weight tensors for {num_layers} layers")
        for k in range(num_layers):
            dirs = []
            for d in range(D):
                p = params[(k * D + d) * per_dir:(k * D + d + 1) * per_dir]
                H = p[1].shape[1]
                W = p[0].reshape(3, H, -1)[TORCH_TO_GRUKIT]
                R = p[1].reshape(3, H, H)[TORCH_TO_GRUKIT]
                Wb = p[2].reshape(3, H)[TORCH_TO_GRUKIT] if has_biases else np.zeros((3, H), np.float32)
                Rb = p[3].reshape(3, H)[TORCH_TO_GRUKIT] if has_biases else np.zeros((3, H), np.float32)
                dirs.append(GRUDirection(W=W, R=R, Wb=Wb, Rb=Rb))
            self.layers.append(GRULayer(forward=dirs[0], linear_before_reset=1, reverse=dirs[1] if D == 2 else None))
        F = self.layers[-1].output_size
        sizes = tuple(F if a == "F" else s for a, s in zip(X.axes, X.sizes))
        N = X.sizes[X.axes.index("N")]
        h_n = _Seq(("L", "N", "F"), (num_layers * D, N, self.layers[-1].hidden_size), last_state=True)
        return (_Seq(X.axes, sizes), h_n)

    # --- layout ops ------------------------------------------------------------------------------------------
    def _seq_permute_default(self, args, where):
        X, perm = args[0], [p % len(args[0].axes) for p in args[1]]
        return replace(X, axes=tuple(X.axes[p] for p in perm), sizes=tuple(X.sizes[p] for p in perm))

    def _seq_transpose_int(self, args, where):
        X = args[0]
        perm = list(range(len(X.axes)))
        a, b = args[1] % len(perm), args[2] % len(perm)
        perm[a], perm[b] = perm[b], perm[a]
        return self._seq_permute_default([X, perm], where)

    def _seq_select_int(self, args, where):
        X, dim, index = args[0], args[1] % len(args[0].axes), args[2]
        label = X.axes[dim]
        if label == "L" and self.layers[-1].bidirectional:
            raise UnsupportedModelError(f"{where}: h_n of a bidirectional GRU (the reverse direction's final "
                                        "state is its first step); use the output sequence's last step")
        if label == "L" and index in (-1, X.sizes[dim] - 1):
            pass  # the last layer's final state: the last step of a unidirectional GRU
        elif label != "T" or index not in (-1, X.sizes[dim] - 1):
            raise UnsupportedModelError(f"{where}: selects index {index} of the {label} axis; "
                                        "grukit's head reads the last time step")
        return replace(X, axes=X.axes[:dim] + X.axes[dim + 1:], sizes=X.sizes[:dim] + X.sizes[dim + 1:],
                       last_state=False)

    def _seq_slice_Tensor(self, args, where):
        X, dim = args[0], args[1] % len(args[0].axes)
        start = args[2] if len(args) > 2 else None
        end = args[3] if len(args) > 3 else None
        step = args[4] if len(args) > 4 else 1
        n = X.sizes[dim]
        kept = range(n)[slice(start, end, step)]
        if len(kept) == n:
            return X
        if X.axes[dim] != "T" or list(kept) != [n - 1]:
            raise UnsupportedModelError(f"{where}: slices the {X.axes[dim]} axis; grukit reads the last step")
        return replace(X, axes=X.axes[:dim] + ("T1",) + X.axes[dim + 1:], sizes=X.sizes[:dim] + (1,) + X.sizes[dim + 1:])

    def _squeeze(self, X, dims, where):
        dims = [d % len(X.axes) for d in dims]
        for d in dims:
            if X.sizes[d] != 1 or X.axes[d] not in ("T1",):
                raise UnsupportedModelError(f"{where}: squeezes the {X.axes[d]} axis of the sequence")
        return replace(X, axes=tuple(a for i, a in enumerate(X.axes) if i not in dims),
                       sizes=tuple(s for i, s in enumerate(X.sizes) if i not in dims))

    def _seq_squeeze_dim(self, args, where):
        return self._squeeze(args[0], [args[1]], where)

    def _seq_squeeze_dims(self, args, where):
        return self._squeeze(args[0], list(args[1]), where)

    # --- the head --------------------------------------------------------------------------------------------
    def _start_head(self, X, W, where):
        if X.stage != "gru" or X.last_state:
            raise UnsupportedModelError(f"{where}: a second dense layer is not supported (grukit has one head)")
        if X.axes[-1] != "F":
            raise UnsupportedModelError(f"{where}: the head is applied along {X.axes[-1]} instead of the features")
        if not isinstance(W, np.ndarray) or W.ndim != 2:
            raise UnsupportedModelError(f"{where}: the head's weight is not a constant matrix")
        self.head_per_step = "T" in X.axes

    def _seq_linear_default(self, args, where):
        X, W = args[0], args[1]
        b = args[2] if len(args) > 2 else None
        self._start_head(X, W, where)
        self.head_W = W
        self.head_b = b if b is not None else np.zeros(W.shape[0], np.float32)
        return replace(X, sizes=X.sizes[:-1] + (W.shape[0],), stage="head")

    def _seq_addmm_default(self, args, where):
        b, X, Wt = args[0], args[1], args[2]
        if not isinstance(b, np.ndarray) or args[3:] not in ([], [1], [1, 1]):
            raise UnsupportedModelError(f"{where}: addmm with a non-constant bias or beta/alpha is not supported")
        return self._seq_linear_default([X, Wt.T, b.reshape(-1)], where)

    def _seq_matmul_default(self, args, where):
        X, Wt = args[0], args[1]
        self._start_head(X, Wt.T if isinstance(Wt, np.ndarray) else None, where)
        self.head_W = Wt.T
        self.head_b = np.zeros(Wt.shape[1], np.float32)
        return replace(X, sizes=X.sizes[:-1] + (Wt.shape[1],), stage="matmul")

    _seq_mm_default = _seq_matmul_default

    def _seq_add_Tensor(self, args, where):
        X = args[0] if isinstance(args[0], _Seq) else args[1]
        b = args[1] if X is args[0] else args[0]
        if X.stage != "matmul" or not isinstance(b, np.ndarray) or b.size != X.sizes[-1]:
            raise UnsupportedModelError(f"{where}: add on the data path is supported only as the head's bias")
        self.head_b = b.reshape(-1)
        return replace(X, stage="head")

    def _activation(self, X, name, where):
        if X.stage not in ("head", "matmul") or self.activation != "linear":
            raise UnsupportedModelError(f"{where}: {name} is supported only right after the dense head")
        self.activation = name
        return replace(X, stage="activation")

    def _seq_sigmoid_default(self, args, where):
        return self._activation(args[0], "sigmoid", where)

    def _seq__softmax_default(self, args, where):
        if args[1] % len(args[0].axes) != len(args[0].axes) - 1:
            raise UnsupportedModelError(f"{where}: softmax over dim {args[1]} instead of the outputs")
        return self._activation(args[0], "softmax", where)

    _seq_softmax_int = _seq__softmax_default

    def _finish(self, out):
        if not isinstance(out, _Seq):
            raise UnsupportedModelError("the program's output does not come from the GRU's output sequence")
        if not self.layers:
            raise UnsupportedModelError("the program holds no aten.gru.input")
        # h_n itself keeps its layer axis "L", which no output layout has.
        require_output_layout(out.axes, out.sizes, out.stage == "gru", "the program's output")
        self.output_axes = out.axes


def _self_check(ep, walk: _Walk, model: GRUModel, path: Path) -> None:
    rng = np.random.default_rng(0)
    x = rng.standard_normal(walk.input_shape).astype(np.float32)  # the shape the program was exported with
    x_ntf = x if walk.batch_first else x.transpose(1, 0, 2)
    got, _ = run_source(ep, model, x_ntf)
    require_agreement(got, model.predict(x_ntf), f"{path}: the exported program", "what it computes")
    model.meta["self_check"] = "torch.export"
