"""Load a ``.pt2`` file (``torch.export.save``) holding ``nn.GRU`` and a head; ``ProgramWalk`` also reads the
program ``torch.export`` makes of an in-memory module (load_torch).

The program's graph (torch.export's default IR, not decomposed) is walked in node order, as graph_walk
describes. ``aten.gru.input`` carries the weights as a flat list (per layer, per direction:
``w_ih, w_hh[, b_ih, b_hh]``) and the flags ``has_biases, num_layers, dropout, train, bidirectional,
batch_first``. Its output sequence is tracked by what each axis means through ``permute``/``transpose``/
``view``/``flatten``; ``select``/``slice`` on ``T`` must pick the last step; its final state h_n
([layers * directions, N, H]) may be read at the last layer (``h[-1]``, ``h.squeeze(0)``) when unidirectional.

- Before the first GRU: ``add``/``sub``/``rsub``/``mul``/``div``/``neg`` by constants and an eval
  ``batch_norm`` over the features: the input scaling, folded into the first layer.
- After the last GRU: ``linear`` (or ``addmm`` / ``matmul`` + ``add``) with constant weights, ``relu``,
  ``relu6`` / ``hardtanh(0, 6)`` / ``clamp(0, 6)``, ``tanh``, ``sigmoid``, ``softmax`` on the last, eval
  ``batch_norm``, eval ``dropout``.

Ops whose inputs are all constants are evaluated with torch. Anything else on the data path is refused by
name, with the module it was called in. At the end the program's own module and the float reference run on
the same random input; a mismatch is refused.
"""

from __future__ import annotations

import operator
from dataclasses import replace
from pathlib import Path

import numpy as np

from grukit.core.errors import UnsupportedModelError
from grukit.core.model import GRUDirection, GRULayer, GRUModel
from grukit.export.graph_walk import (HeadChain, LayoutGuessWrong, Seq, batch_norm_affine, batch_normed,
                                      flattened, fold_input_scaling, permuted, picked, reshaped, scaled_input,
                                      squeezed, unsupported_here, walk_either_layout, walked_model)
from grukit.export.self_check import require_agreement
from grukit.export.source_runtime import read_exported_program, require_output_layout, run_source

# PyTorch stacks gates r, z, n; grukit's order is z, r, n.
TORCH_TO_GRUKIT = [1, 0, 2]

# Ops that only re-view a tensor (or are identities at inference); on the sequence they change nothing tracked.
PASS_THROUGH = ("aten.contiguous.default", "aten.clone.default", "aten.alias.default", "aten.detach.default",
                "aten.detach_.default", "aten.dropout.default", "aten.lift_fresh_copy.default")
# Ops whose handler finds the sequence among its arguments; every other handler takes it first.
SEQ_NOT_FIRST = ("aten.add.Tensor", "aten.sub.Tensor", "aten.mul.Tensor", "aten.div.Tensor", "aten.addmm.default",
                 "aten.add.Scalar", "aten.sub.Scalar", "aten.mul.Scalar", "aten.div.Scalar")
# Activations by op: the name grukit gives them (HEAD_ACTIVATIONS); clamps and hardtanh are decided by bounds.
ACTIVATIONS = {"aten.relu.default": "relu", "aten.relu_.default": "relu", "aten.relu6.default": "relu6",
               "aten.tanh.default": "tanh", "aten.tanh_.default": "tanh", "aten.sigmoid.default": "sigmoid",
               "aten.sigmoid_.default": "sigmoid"}


def load_pt2(path, name: str | None = None, self_check: bool = True) -> GRUModel:
    """Read a ``torch.export`` program holding ``aten.gru.input`` and an optional head, checked against the
    program's own module. ``meta`` records the input layout ("batch_first"/"time_major") and the labels of
    the program's output axes (``output_axes``), which running the program needs."""
    path = Path(path)
    ep = read_exported_program(path)
    walk = walk_either_layout(ProgramWalk, ep)
    model = walked_model(walk, str(path), name or path.stem)
    if self_check:
        _self_check(ep, walk, model, path)
    return model


class ProgramWalk:
    """One pass over an ExportedProgram's graph under a guess of the input layout (see graph_walk)."""

    def __init__(self, ep, batch_first: bool):
        self.batch_first = batch_first
        self.layers: list[GRULayer] = []
        self.chain = HeadChain()
        self.head = None
        self.values: dict[str, object] = {}
        sig = ep.graph_signature
        consts = {}
        consts.update(sig.inputs_to_parameters)
        consts.update(sig.inputs_to_buffers)
        consts.update(sig.inputs_to_lifted_tensor_constants)
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
                    self.values[node.name] = Seq(labels, shape, source=-1)
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

    @property
    def top(self) -> int:
        """The last GRU layer read so far."""
        return len(self.layers) - 1

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
        where = f"{target} ({node.name}{_module_of(node)})"
        seq = _first_seq([args, list(kwargs.values())])
        if target == "getitem":
            if isinstance(args[0], Seq):
                raise unsupported_here(args[0], "indexing", where)
            return args[0][args[1]]
        if target == "aten.gru.input":
            return self._gru(args, where)
        if target in PASS_THROUGH:
            if target == "aten.dropout.default" and args[2]:
                raise UnsupportedModelError(f"{where}: dropout in training mode")
            return args[0]
        if seq is None:
            return _evaluate(node.target, args, kwargs, where)
        if target in ACTIVATIONS:
            return self._activation(args[0], ACTIVATIONS[target], where)
        handler = getattr(self, "_seq_" + target.replace("aten.", "").replace(".", "_"), None)
        if handler is None or (not isinstance(args[0], Seq) and target not in SEQ_NOT_FIRST):
            raise unsupported_here(seq, f"op {target}", where)
        return handler(args, kwargs, where)

    def _gru(self, args, where):
        X, hx, params, has_biases, num_layers, dropout, train, bidirectional, batch_first = args
        if not isinstance(X, Seq):
            raise UnsupportedModelError(f"{where}: its input is not the program's input sequence")
        if train:
            raise UnsupportedModelError(f"{where}: exported in training mode (call module.eval() before export)")
        if not isinstance(hx, np.ndarray) or np.any(hx != 0):
            raise UnsupportedModelError(f"{where}: a non-zero initial hidden state is not supported")
        if X.link or X.states is not None or X.state or X.source != self.top:
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
            layer = GRULayer(forward=dirs[0], linear_before_reset=1, reverse=dirs[1] if D == 2 else None)
            self.layers.append(fold_input_scaling(layer, X.scaling) if k == 0 else layer)
        first = len(self.layers) - num_layers
        F = self.layers[-1].output_size
        sizes = tuple(F if a == "F" else s for a, s in zip(X.axes, X.sizes))
        N = X.sizes[X.axis("N")]
        Y = Seq(X.axes, sizes, source=self.top)
        # h_n [num_layers * D, N, H]: entry k * D + d is layer k's direction d (None: not readable as a head input).
        states = tuple(first + k if D == 1 else None for k in range(num_layers) for _ in range(D))
        h_n = Seq(("L", "N", "F"), (num_layers * D, N, self.layers[-1].hidden_size), source=self.top, state=True,
                  states=states)
        return (Y, h_n)

    # --- layout ops ------------------------------------------------------------------------------------------
    def _seq_permute_default(self, args, kwargs, where):
        return permuted(args[0], args[1])

    def _seq_transpose_int(self, args, kwargs, where):
        X = args[0]
        perm = list(range(len(X.axes)))
        a, b = args[1] % len(perm), args[2] % len(perm)
        perm[a], perm[b] = perm[b], perm[a]
        return permuted(X, perm)

    def _seq_select_int(self, args, kwargs, where):
        X, dim, index = args[0], args[1] % len(args[0].axes), args[2]
        # Static sizes: the last step is -1 or T - 1.
        return picked(X, dim, index, lambda i, n: i in (-1, n - 1), where)

    def _seq_slice_Tensor(self, args, kwargs, where):
        X, dim = args[0], (args[1] if len(args) > 1 else 0) % len(args[0].axes)
        start = args[2] if len(args) > 2 else None
        end = args[3] if len(args) > 3 else None
        step = args[4] if len(args) > 4 else 1
        n = X.sizes[dim]
        kept = range(n)[slice(start, end, step)]
        if len(kept) == n:
            return X
        if X.axes[dim] != "T" or list(kept) != [n - 1] or X.link:
            raise UnsupportedModelError(f"{where}: slices the {X.axes[dim]} axis; grukit's head reads the last step")
        return replace(X, axes=X.axes[:dim] + ("T1",) + X.axes[dim + 1:],
                       sizes=X.sizes[:dim] + (1,) + X.sizes[dim + 1:])

    def _seq_squeeze_dim(self, args, kwargs, where):
        return squeezed(args[0], [args[1]], where)

    def _seq_squeeze_dims(self, args, kwargs, where):
        return squeezed(args[0], list(args[1]), where)

    def _seq_squeeze_default(self, args, kwargs, where):
        return squeezed(args[0], [i for i, s in enumerate(args[0].sizes) if s == 1], where)

    def _seq_flatten_using_ints(self, args, kwargs, where):
        X = args[0]
        return flattened(X, args[1] if len(args) > 1 else 0, args[2] if len(args) > 2 else -1, where)

    def _seq_view_default(self, args, kwargs, where):
        X, shape = args[0], [int(s) for s in args[1]]
        if shape.count(-1) == 1:
            known = int(np.prod([s for s in shape if s != -1]))
            shape[shape.index(-1)] = int(np.prod(X.sizes)) // max(known, 1)
        return reshaped(X, shape, where)

    _seq_reshape_default = _seq_view_default
    _seq__unsafe_view_default = _seq_view_default

    # --- elementwise: input scaling before the GRU, a dense layer's bias after it ------------------------------
    def _seq_add_Tensor(self, args, kwargs, where):
        X, c, alpha = _operands(args, kwargs, "add", where)  # add(a, b, alpha) = a + alpha * b
        if X is args[1]:  # c + alpha * X
            shift = np.asarray(c, np.float64)
            X = scaled_input(X, "mul", alpha, where) if alpha != 1 else X
        else:
            shift = alpha * np.asarray(c, np.float64)
        return scaled_input(X, "add", shift, where) if X.source < 0 else self.chain.bias(X, shift, self.top, where)

    def _seq_sub_Tensor(self, args, kwargs, where):
        X, c, alpha = _operands(args, kwargs, "sub", where)  # sub(a, b, alpha) = a - alpha * b
        if X is args[1]:  # c - alpha * X
            return self._seq_rsub_Scalar([X, c], {"alpha": alpha}, where)
        shift = -alpha * np.asarray(c, np.float64)
        return scaled_input(X, "add", shift, where) if X.source < 0 else self.chain.bias(X, shift, self.top, where)

    def _seq_rsub_Scalar(self, args, kwargs, where):
        X, c, alpha = args[0], args[1], kwargs.get("alpha", 1)  # rsub(a, b, alpha) = b - alpha * a
        if isinstance(c, Seq):
            raise unsupported_here(X, "rsub of two tensors computed from the input", where)
        X = scaled_input(X, "mul", alpha, where) if alpha != 1 else X
        return scaled_input(X, "rsub", c, where)

    _seq_rsub_Tensor = _seq_rsub_Scalar

    def _seq_mul_Tensor(self, args, kwargs, where):
        X, c, _ = _operands(args, kwargs, "mul", where)
        return scaled_input(X, "mul", c, where)

    def _seq_div_Tensor(self, args, kwargs, where):
        if kwargs.get("rounding_mode") is not None:
            raise unsupported_here(args[0], f"division with rounding_mode={kwargs['rounding_mode']!r}", where)
        X, c, _ = _operands(args, kwargs, "div", where)
        if X is not args[0]:
            raise unsupported_here(X, "a constant divided by the sequence (not affine)", where)
        return scaled_input(X, "div", c, where)

    def _seq_neg_default(self, args, kwargs, where):
        return scaled_input(args[0], "neg", None, where)

    _seq_add_Scalar, _seq_sub_Scalar = _seq_add_Tensor, _seq_sub_Tensor
    _seq_mul_Scalar, _seq_div_Scalar = _seq_mul_Tensor, _seq_div_Tensor

    # --- BatchNorm (eval): per-feature affine ------------------------------------------------------------------
    def _seq_batch_norm_default(self, args, kwargs, where):
        X, weight, bias, mean, var, training, momentum, eps = args[:8]
        if training:
            raise UnsupportedModelError(f"{where}: BatchNorm in training mode (call module.eval() before export)")
        return self._batch_norm(X, weight, bias, mean, var, eps, where)

    def _seq__native_batch_norm_legit_no_training_default(self, args, kwargs, where):
        X, weight, bias, mean, var, momentum, eps = args[:7]
        return (self._batch_norm(X, weight, bias, mean, var, eps, where), None, None)

    def _batch_norm(self, X, weight, bias, mean, var, eps, where):
        if mean is None or var is None:
            raise UnsupportedModelError(f"{where}: BatchNorm without running statistics normalizes with each "
                                        "batch's own statistics, which a fixed model cannot")
        for t in (weight, bias, mean, var):
            if t is not None and not isinstance(t, np.ndarray):
                raise UnsupportedModelError(f"{where}: BatchNorm parameters that are not constants")
        scale, shift = batch_norm_affine(mean, var, float(eps), weight, bias)
        return batch_normed(X, self.chain, scale, shift, self.top, where)

    # --- the head --------------------------------------------------------------------------------------------
    def _seq_linear_default(self, args, kwargs, where):
        X, W = args[0], args[1]
        b = args[2] if len(args) > 2 else kwargs.get("bias")
        if not isinstance(W, np.ndarray) or (b is not None and not isinstance(b, np.ndarray)):
            raise unsupported_here(X, "a linear layer whose weights are not constants", where)
        return self.chain.dense(X, W, b, self.top, where)

    def _seq_addmm_default(self, args, kwargs, where):
        b, X, Wt = args[0], args[1], args[2]
        beta, alpha = kwargs.get("beta", 1), kwargs.get("alpha", 1)
        if not isinstance(X, Seq) or not isinstance(b, np.ndarray) or not isinstance(Wt, np.ndarray):
            raise unsupported_here(_first_seq(args), "addmm other than a dense layer with constant weights", where)
        return self.chain.dense(X, alpha * Wt.T, beta * b.reshape(-1), self.top, where)

    def _seq_matmul_default(self, args, kwargs, where):
        X, Wt = args[0], args[1]
        if not isinstance(Wt, np.ndarray) or Wt.ndim != 2:
            raise unsupported_here(X, "a matmul whose right operand is not a constant matrix", where)
        return self.chain.dense(X, Wt.T, None, self.top, where)

    _seq_mm_default = _seq_matmul_default

    def _activation(self, X, name, where):
        return self.chain.activation(X, name, self.top, where)

    def _seq_hardtanh_default(self, args, kwargs, where):
        low = args[1] if len(args) > 1 else kwargs.get("min_val", -1.0)
        high = args[2] if len(args) > 2 else kwargs.get("max_val", 1.0)
        return self._clamp(args[0], low, high, "hardtanh", where)

    _seq_hardtanh__default = _seq_hardtanh_default

    def _seq_clamp_default(self, args, kwargs, where):
        low = args[1] if len(args) > 1 else kwargs.get("min")
        high = args[2] if len(args) > 2 else kwargs.get("max")
        return self._clamp(args[0], low, high, "clamp", where)

    def _seq_clamp_min_default(self, args, kwargs, where):
        return self._clamp(args[0], args[1], None, "clamp_min", where)

    def _clamp(self, X, low, high, op, where):
        """A clamp to [0, inf) is relu, to [0, 6] relu6; other bounds are not a head activation."""
        if low == 0 and high is None:
            return self._activation(X, "relu", where)
        if low == 0 and high == 6:
            return self._activation(X, "relu6", where)
        raise unsupported_here(X, f"{op} to [{low}, {high}] (only [0, inf) as relu and [0, 6] as relu6)", where)

    def _seq__softmax_default(self, args, kwargs, where):
        X = args[0]
        if args[1] % len(X.axes) != len(X.axes) - 1:
            raise UnsupportedModelError(f"{where}: softmax over dim {args[1]} instead of the outputs")
        return self._activation(X, "softmax", where)

    _seq_softmax_int = _seq__softmax_default

    def _finish(self, out):
        if not isinstance(out, Seq):
            raise UnsupportedModelError("the program's output does not come from the GRU's output sequence")
        if not self.layers:
            raise UnsupportedModelError("the program holds no aten.gru.input")
        self.head = self.chain.head(out, self.top)
        if self.head is None and out.source != self.top:
            raise UnsupportedModelError("the program's output is not computed from the last GRU layer")
        # h_n itself keeps its layer axis "L", which no output layout has.
        require_output_layout(out.axes, out.sizes, self.head is None, "the program's output")
        self.output_axes = out.axes


def _first_seq(values):
    """The first Seq in a nest of lists, or None."""
    for v in values:
        found = v if isinstance(v, Seq) else _first_seq(v) if isinstance(v, (list, tuple)) else None
        if found is not None:
            return found
    return None


def _operands(args, kwargs, op, where):
    """(the sequence, the constant, alpha) of a binary elementwise op; refused if both are computed from x."""
    a, b = args[0], args[1]
    X, c = (a, b) if isinstance(a, Seq) else (b, a)
    if isinstance(c, Seq):
        raise unsupported_here(X, f"{op} of two tensors computed from the input", where)
    return X, c, kwargs.get("alpha", 1)


def _module_of(node) -> str:
    """", in module <path> (<class>)" for a node called inside a submodule, for messages; "" otherwise."""
    stack = node.meta.get("nn_module_stack") or {}
    for path, kind in reversed(list(stack.values())):
        if path:
            name = kind if isinstance(kind, str) else getattr(kind, "__qualname__", str(kind))
            return f", in module {path} ({name.rsplit('.', 1)[-1]})"
    return ""


def _evaluate(target, args, kwargs, where):
    """An op on constants only (shape plumbing, zero states, a buffer's arithmetic), evaluated with torch."""
    import torch  # optional (grukit[torch]): only .pt2 and nn.Module sources come here

    def to_torch(v):
        if isinstance(v, np.ndarray):
            return torch.from_numpy(np.array(v))  # a copy: an in-place op must not change the stored constant
        if isinstance(v, list):
            return [to_torch(x) for x in v]
        return v

    def to_numpy(v):
        if isinstance(v, torch.Tensor):
            return v.detach().cpu().numpy()
        if isinstance(v, (list, tuple)):
            return type(v)(to_numpy(x) for x in v)
        return v

    try:
        with torch.no_grad():
            out = target(*[to_torch(a) for a in args], **{k: to_torch(v) for k, v in kwargs.items()})
    except Exception as e:  # torch's own error for an op it cannot run on these values
        raise UnsupportedModelError(f"{where}: cannot evaluate it on the program's constants ({e})") from e
    return to_numpy(out)


def _self_check(ep, walk: ProgramWalk, model: GRUModel, path: Path) -> None:
    rng = np.random.default_rng(0)
    x = rng.standard_normal(walk.input_shape).astype(np.float32)  # the shape the program was exported with
    x_ntf = x if walk.batch_first else x.transpose(1, 0, 2)
    got, _ = run_source(ep, model, x_ntf)
    require_agreement(got, model.predict(x_ntf), f"{path}: the exported program", "what it computes")
    model.meta["self_check"] = "torch.export"
