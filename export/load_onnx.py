"""Load an ``.onnx`` file holding ``GRU`` nodes and an optional dense head into a GRUModel.

The graph is walked once from its input, in node order. Every tensor is either a constant (initializers,
``Constant`` nodes and shape plumbing, folded with ONNX's reference evaluator on concrete sizes) or the data
sequence, of which the walk tracks only what each axis means: batch ``N``, time ``T`` (``T1`` once the last
step is sliced out and kept as a size-1 axis), feature ``F``, GRU direction ``D``, or a size-1 ``1``.
Layout ops (Transpose, Squeeze, Unsqueeze, Reshape) move these labels; ``Gather``/``Slice`` on ``T`` must pick
the last step; ``GRU`` must read the previous GRU's output; ``Gemm`` or ``MatMul`` (+ ``Add``) with constant
weights is the head, optionally followed by ``Softmax`` or ``Sigmoid``. Any other op touching the sequence,
and any op grukit does not know at all, is refused by name.

This covers what ``torch.onnx.export`` writes with both exporters (TorchScript: Shape/Gather/Expand plumbing
for the zero initial state; dynamo: a zero ``initial_h`` initializer and weights in ``model.onnx.data``).
Finally the file runs in its framework (``source_runtime``: onnxruntime, or ONNX's reference
evaluator for layout=1, which onnxruntime lacks) and the float reference on the same random input; a
mismatch is refused.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import onnx
from onnx import helper, numpy_helper
from onnx.reference import ReferenceEvaluator

from grukit.core.errors import BadInputError, UnsupportedModelError
from grukit.export.onnx_gru import gru_attributes, gru_layer_from_onnx
from grukit.export.graph_walk import LayoutGuessWrong, walk_either_layout, walked_model
from grukit.export.self_check import require_agreement
from grukit.export.source_runtime import FrameworkUnavailable, output_core, require_output_layout, run_source
from grukit.core.model import GRUModel

# Sizes used for dynamic (named) input dims during the walk and the self check; distinct from each other
# and from typical hidden sizes so a Reshape that mixes axes cannot match by coincidence.
FREE_BATCH, FREE_TIME = 3, 7

# Ops allowed on constants (shape plumbing), folded with onnx.reference.
FOLDABLE_OPS = ("Constant", "Identity", "Cast", "Shape", "Gather", "Unsqueeze", "Squeeze", "Concat", "Reshape",
                "Expand", "ConstantOfShape", "Slice", "Range", "Add", "Sub", "Mul", "Div", "Equal", "Where")


@dataclass(frozen=True)
class _Seq:
    """The data tensor: one label per axis, its concrete size, and how far along the network it is."""

    axes: tuple[str, ...]
    sizes: tuple[int, ...]
    source: int  # index of the GRU layer that produced it; -1 for the graph input
    stage: str = "gru"  # "gru", "matmul" (head bias still to add), "head", "activation"


def load_onnx(path, name: str | None = None, self_check: bool = True) -> GRUModel:
    """Read an ONNX GRU network (see the module docstring for what is understood) and check it with
    onnxruntime. Returns a GRUModel whose ``meta`` records the input layout ("batch_first"/"time_major")."""
    path = Path(path)
    try:
        proto = onnx.load(str(path))  # loads external data (model.onnx.data) from beside the file
    except Exception as e:  # onnx raises assorted errors for a broken or incomplete file
        raise BadInputError(f"{path}: cannot read ONNX model ({e})") from e
    graph = proto.graph
    walk = walk_either_layout(_Walk, graph)
    model = walked_model(walk, path, name)
    if self_check:
        _self_check(path, walk, model)
    return model


class _Walk:
    """One pass over the graph under a guess of the input layout; raises LayoutGuessWrong if the guess is wrong."""

    def __init__(self, graph, batch_first: bool):
        self.batch_first = batch_first
        self.layers = []
        self.head_W = self.head_b = None
        self.head_per_step = False
        self.activation = "linear"
        self.values: dict[str, object] = {"": None}
        for init in graph.initializer:
            self.values[init.name] = numpy_helper.to_array(init)
        inputs = [i for i in graph.input if i.name not in self.values]
        if len(inputs) != 1:
            raise UnsupportedModelError(f"the graph has {len(inputs)} inputs; grukit reads a single input sequence")
        if inputs[0].type.tensor_type.elem_type != onnx.TensorProto.FLOAT:
            raise UnsupportedModelError(f"input {inputs[0].name!r} is not float32")
        dims = inputs[0].type.tensor_type.shape.dim
        if len(dims) != 3:
            raise UnsupportedModelError(f"input {inputs[0].name!r} has rank {len(dims)}; grukit expects [N, T, I]")
        labels = ("N", "T", "F") if batch_first else ("T", "N", "F")
        free = {"N": FREE_BATCH, "T": FREE_TIME, "F": 0}
        sizes = tuple(d.dim_value if d.HasField("dim_value") else free[lab] for d, lab in zip(dims, labels))
        if sizes[2] <= 0:
            raise UnsupportedModelError(f"input {inputs[0].name!r} has no fixed feature size")
        self.time_static = dims[labels.index("T")].HasField("dim_value")
        self.input_name = inputs[0].name
        self.input_shape = sizes
        self.values[self.input_name] = _Seq(labels, sizes, -1)
        for node in graph.node:
            self._node(node)
        if len(graph.output) != 1:
            raise UnsupportedModelError(f"the graph has {len(graph.output)} outputs; grukit reads one")
        self._finish(self.values.get(graph.output[0].name))

    # --- the walk ----------------------------------------------------------------------------------------
    def _node(self, node):
        ins = [self.values[i] if i in self.values else _missing(node, i) for i in node.input]
        where = f"{node.op_type} node {node.name or node.output[0]!r}"
        for v in ins:
            if isinstance(v, _Refused):
                raise UnsupportedModelError(f"{where} reads {v.reason}")
        seqs = [v for v in ins if isinstance(v, _Seq)]
        if node.op_type == "GRU":
            outs = self._gru(node, ins, where)
        elif not seqs:
            if node.op_type not in FOLDABLE_OPS:
                raise UnsupportedModelError(f"{where}: op type {node.op_type!r} is not supported")
            outs = _fold(node, ins)
        else:
            handler = getattr(self, f"_seq_{node.op_type}", None)
            if handler is None:
                raise UnsupportedModelError(
                    f"{where}: op type {node.op_type!r} on the GRU's data path is not supported"
                )
            if ins[0] is not seqs[0] and node.op_type not in ("Add",):
                raise UnsupportedModelError(f"{where}: the sequence is not its first input")
            outs = [handler(node, ins, where, _attrs(node))]
        for name, value in zip(node.output, outs):
            if name:
                self.values[name] = value

    def _gru(self, node, ins, where):
        attrs = gru_attributes(_attrs(node), where)
        X, W, R = ins[0], ins[1], ins[2]
        B = ins[3] if len(ins) > 3 else None
        seq_lens = ins[4] if len(ins) > 4 else None
        H0 = ins[5] if len(ins) > 5 else None
        if not isinstance(X, _Seq):
            raise UnsupportedModelError(f"{where}: its input X is a constant, not the graph's input sequence")
        for label, t in (("W", W), ("R", R), ("B", B)):
            if t is not None and not isinstance(t, np.ndarray):
                raise UnsupportedModelError(f"{where}: {label} is not a constant initializer")
        if seq_lens is not None:
            raise UnsupportedModelError(f"{where}: a sequence_lens input is not supported (every sequence runs to T)")
        if H0 is not None:
            if not isinstance(H0, np.ndarray):
                raise UnsupportedModelError(f"{where}: initial_h must be a constant zero tensor, not a graph input")
            if np.any(H0 != 0):
                raise UnsupportedModelError(f"{where}: a non-zero initial_h is not supported (grukit starts from zero)")
        if X.source != len(self.layers) - 1 or X.stage != "gru":
            raise UnsupportedModelError(f"{where}: X is not the previous GRU layer's output")
        want = ("N", "T", "F") if attrs["layout"] else ("T", "N", "F")
        axes = X.axes
        if sorted(axes) != sorted(want):
            raise UnsupportedModelError(f"{where}: X has axes {X.axes}, expected {want}")
        if axes != want:
            if len(self.layers) == 0:
                raise LayoutGuessWrong()
            raise UnsupportedModelError(f"{where}: X has axes {X.axes}, expected {want} (layout={attrs['layout']})")
        layer = gru_layer_from_onnx(W, R, B, attrs["linear_before_reset"], attrs["direction"])
        if layer.hidden_size != attrs["hidden_size"] or layer.input_size != X.sizes[2]:
            raise UnsupportedModelError(
                f"{where}: weights W {W.shape} / R {R.shape} disagree with hidden_size={attrs['hidden_size']} "
                f"and the input's {X.sizes[2]} features"
            )
        if H0 is not None and H0.size not in (layer.hidden_size * attrs["num_directions"],
                                              layer.hidden_size * attrs["num_directions"] * X.sizes[axes.index("N")]):
            raise UnsupportedModelError(f"{where}: initial_h has shape {H0.shape}")
        self.layers.append(layer)
        k = len(self.layers) - 1
        T, N = X.sizes[axes.index("T")], X.sizes[axes.index("N")]
        D, H = attrs["num_directions"], layer.hidden_size
        if attrs["layout"]:
            Y = _Seq(("N", "T", "D", "F"), (N, T, D, H), k)
            Y_h_axes, Y_h_sizes = ("N", "D", "F"), (N, D, H)
        else:
            Y = _Seq(("T", "D", "N", "F"), (T, D, N, H), k)
            Y_h_axes, Y_h_sizes = ("D", "N", "F"), (D, N, H)
        if D == 2:
            # The reverse direction's final state belongs to the first step, not to the last step grukit outputs.
            Y_h = _Refused(f"Y_h of the bidirectional GRU layer {k}; grukit outputs the last step of Y instead")
        else:
            Y_h = _Seq(Y_h_axes, Y_h_sizes, k)
        return [Y, Y_h]

    # --- layout ops on the sequence ------------------------------------------------------------------------
    def _seq_Identity(self, node, ins, where, attrs):
        return ins[0]

    def _seq_Shape(self, node, ins, where, attrs):
        # Concrete sizes: the plumbing that builds the zero initial state folds to constants from here.
        return np.array(ins[0].sizes, np.int64)[attrs.get("start", 0): attrs.get("end")]

    def _seq_Transpose(self, node, ins, where, attrs):
        X = ins[0]
        perm = attrs.get("perm", list(range(len(X.axes)))[::-1])
        return replace(X, axes=tuple(X.axes[p] for p in perm), sizes=tuple(X.sizes[p] for p in perm))

    def _seq_Squeeze(self, node, ins, where, attrs):
        X = ins[0]
        axes = _const_input(ins, 1, where, "axes") if len(ins) > 1 and ins[1] is not None else attrs.get("axes")
        if axes is None:
            axes = [i for i, s in enumerate(X.sizes) if s == 1]
        axes = sorted(int(a) % len(X.axes) for a in np.atleast_1d(axes))
        for a in axes:
            if X.sizes[a] != 1 or X.axes[a] not in ("D", "1", "T1"):
                raise UnsupportedModelError(f"{where} removes the {X.axes[a]} axis of the sequence")
        return replace(X, axes=tuple(l for i, l in enumerate(X.axes) if i not in axes),
                       sizes=tuple(s for i, s in enumerate(X.sizes) if i not in axes))

    def _seq_Unsqueeze(self, node, ins, where, attrs):
        X = ins[0]
        axes = _const_input(ins, 1, where, "axes") if len(ins) > 1 else attrs.get("axes")
        rank = len(X.axes) + len(np.atleast_1d(axes))
        axes_list, sizes = list(X.axes), list(X.sizes)
        for a in sorted(int(a) % rank for a in np.atleast_1d(axes)):
            axes_list.insert(a, "1")
            sizes.insert(a, 1)
        return replace(X, axes=tuple(axes_list), sizes=tuple(sizes))

    def _seq_Reshape(self, node, ins, where, attrs):
        X = ins[0]
        shape = [int(s) for s in _const_input(ins, 1, where, "shape")]
        if attrs.get("allowzero", 0) == 0:
            shape = [X.sizes[i] if s == 0 else s for i, s in enumerate(shape)]
        if shape.count(-1) == 1:
            known = int(np.prod([s for s in shape if s != -1]))
            shape[shape.index(-1)] = int(np.prod(X.sizes)) // max(known, 1)
        if int(np.prod(shape)) != int(np.prod(X.sizes)):
            raise UnsupportedModelError(f"{where}: cannot reshape {X.sizes} to {shape}")
        # Group consecutive input axes onto each output dim; a group may merge only direction and feature.
        axes_out, i, n = [], 0, len(X.axes)
        for size in shape:
            if size == 1:
                if i < n and X.sizes[i] == 1:
                    axes_out.append(X.axes[i])
                    i += 1
                else:
                    axes_out.append("1")
                continue
            group, prod = [], 1
            while i < n and prod < size:
                group.append(i)
                prod *= X.sizes[i]
                i += 1
            labels = [X.axes[j] for j in group if X.sizes[j] != 1]
            if prod != size:
                raise UnsupportedModelError(f"{where} reshapes the sequence {X.axes}{X.sizes} to {shape} across axes")
            if labels == ["D", "F"]:
                labels = ["F"]  # [forward h, reverse h] side by side: grukit's bidirectional output
            if len(labels) != 1:
                raise UnsupportedModelError(f"{where} merges the {'/'.join(labels)} axes of the sequence")
            axes_out.append(labels[0])
        # Input axes left over are size 1 (the products matched), so dropping them loses nothing.
        return replace(X, axes=tuple(axes_out), sizes=tuple(shape))

    def _seq_Gather(self, node, ins, where, attrs):
        X = ins[0]
        axis = int(attrs.get("axis", 0)) % len(X.axes)
        idx = _const_input(ins, 1, where, "indices")
        if X.axes[axis] != "T":
            raise UnsupportedModelError(f"{where} gathers along the {X.axes[axis]} axis of the sequence")
        self._check_last(idx.reshape(-1), X.sizes[axis], where)
        if idx.ndim == 0:
            return replace(X, axes=X.axes[:axis] + X.axes[axis + 1:], sizes=X.sizes[:axis] + X.sizes[axis + 1:])
        if idx.size != 1:
            raise UnsupportedModelError(f"{where} gathers {idx.size} steps; grukit's head reads the last step")
        return replace(X, axes=X.axes[:axis] + ("T1",) * idx.ndim + X.axes[axis + 1:],
                       sizes=X.sizes[:axis] + (1,) * idx.ndim + X.sizes[axis + 1:])

    def _seq_Slice(self, node, ins, where, attrs):
        X = ins[0]
        starts = _const_input(ins, 1, where, "starts").reshape(-1)
        ends = _const_input(ins, 2, where, "ends").reshape(-1)
        axes = _const_input(ins, 3, where, "axes").reshape(-1) if len(ins) > 3 and ins[3] is not None \
            else np.arange(len(starts))
        steps = _const_input(ins, 4, where, "steps").reshape(-1) if len(ins) > 4 and ins[4] is not None \
            else np.ones(len(starts), np.int64)
        axes_out, sizes_out = list(X.axes), list(X.sizes)
        for start, end, axis, step in zip(starts, ends, axes, steps):
            axis = int(axis) % len(X.axes)
            n = X.sizes[axis]
            kept = range(n)[slice(int(start), int(end), int(step))]
            if len(kept) == n and int(step) == 1:
                continue  # a full slice changes nothing
            if X.axes[axis] != "T" or len(kept) != 1:
                raise UnsupportedModelError(f"{where} slices the {X.axes[axis]} axis of the sequence")
            self._check_last(np.array([start]), n, where)
            axes_out[axis], sizes_out[axis] = "T1", 1
        return replace(X, axes=tuple(axes_out), sizes=tuple(sizes_out))

    def _check_last(self, idx, T, where):
        k = int(idx[0])
        if k == -1 or (k == T - 1 and self.time_static):
            return
        raise UnsupportedModelError(
            f"{where} picks time step {k}; grukit's head reads the last step (index -1)"
            + ("" if self.time_static else " and the input's time axis has no fixed length")
        )

    # --- the head ------------------------------------------------------------------------------------------
    def _start_head(self, X, where):
        if X.stage != "gru" or X.source != len(self.layers) - 1:
            raise UnsupportedModelError(f"{where}: a second dense layer is not supported (grukit has one head)")
        if not X.axes or X.axes[-1] != "F":
            raise UnsupportedModelError(f"{where}: the head is applied along {X.axes[-1:]} instead of the features")
        self.head_per_step = "T" in X.axes

    def _seq_Gemm(self, node, ins, where, attrs):
        X = ins[0]
        if attrs.get("transA", 0):
            raise UnsupportedModelError(f"{where}: transA=1 is not supported")
        if len(X.axes) != 2 or X.axes != ("N", "F"):
            raise UnsupportedModelError(f"{where}: Gemm reads axes {X.axes}, expected (N, F)")
        self._start_head(X, where)
        B = _const_input(ins, 1, where, "B")
        W = B if attrs.get("transB", 0) else B.T
        self.head_W = float(attrs.get("alpha", 1.0)) * W
        C = ins[2] if len(ins) > 2 else None
        if C is not None and not isinstance(C, np.ndarray):
            raise UnsupportedModelError(f"{where}: C is not a constant")
        O = self.head_W.shape[0]
        self.head_b = (float(attrs.get("beta", 1.0)) * np.broadcast_to(C, (1, O)).reshape(O)
                       if C is not None else np.zeros(O, np.float32))
        return replace(X, sizes=(X.sizes[0], O), stage="head")

    def _seq_MatMul(self, node, ins, where, attrs):
        X = ins[0]
        self._start_head(X, where)
        B = _const_input(ins, 1, where, "B")
        if B.ndim != 2:
            raise UnsupportedModelError(f"{where}: MatMul weight has shape {B.shape}, expected [F, O]")
        self.head_W = B.T
        self.head_b = np.zeros(B.shape[1], np.float32)
        return replace(X, sizes=X.sizes[:-1] + (B.shape[1],), stage="matmul")

    def _seq_Add(self, node, ins, where, attrs):
        X = ins[0] if isinstance(ins[0], _Seq) else ins[1]
        C = ins[1] if X is ins[0] else ins[0]
        if X.stage != "matmul" or not isinstance(C, np.ndarray):
            raise UnsupportedModelError(f"{where}: Add on the data path is supported only as the head's bias")
        O = X.sizes[-1]
        if C.size != O or (C.ndim and C.shape[-1] != O):
            raise UnsupportedModelError(f"{where}: bias of shape {C.shape} for a head of {O} outputs")
        self.head_b = C.reshape(O)
        return replace(X, stage="head")

    def _activation(self, X, name, where):
        if X.stage not in ("head", "matmul") or self.activation != "linear":
            raise UnsupportedModelError(f"{where}: {name} is supported only right after the dense head")
        self.activation = name
        return replace(X, stage="activation")

    def _seq_Sigmoid(self, node, ins, where, attrs):
        return self._activation(ins[0], "sigmoid", where)

    def _seq_Softmax(self, node, ins, where, attrs):
        X = ins[0]
        if int(attrs.get("axis", -1)) % len(X.axes) != len(X.axes) - 1:
            raise UnsupportedModelError(f"{where}: Softmax over axis {attrs.get('axis')} instead of the outputs")
        return self._activation(X, "softmax", where)

    # --- the output ------------------------------------------------------------------------------------------
    def _finish(self, out):
        if isinstance(out, _Refused):
            raise UnsupportedModelError(f"the graph output is {out.reason}")
        if not isinstance(out, _Seq):
            raise UnsupportedModelError("the graph output does not depend on the input sequence")
        if not self.layers:
            raise UnsupportedModelError("the graph holds no GRU node")
        if out.stage == "gru" and out.source != len(self.layers) - 1:
            raise UnsupportedModelError("the graph output is not computed from the last GRU layer")
        # Size-1 axes (a unidirectional D, a kept last step) are layout only; the self check squeezes them.
        if out.stage == "gru" and "D" in output_core(out.axes, out.sizes):
            raise UnsupportedModelError("the graph outputs the GRU's directions on a separate axis")
        require_output_layout(out.axes, out.sizes, out.stage == "gru", "the graph output")
        self.output_axes = out.axes


@dataclass(frozen=True)
class _Refused:
    reason: str


def _missing(node, name):
    raise UnsupportedModelError(f"{node.op_type} node reads {name!r}, which nothing in the graph produces")


def _attrs(node) -> dict:
    out = {}
    for a in node.attribute:
        v = helper.get_attribute_value(a)
        if isinstance(v, bytes):
            v = v.decode()
        elif isinstance(v, list):
            v = [x.decode() if isinstance(x, bytes) else x for x in v]
        out[a.name] = v
    return out


def _const_input(ins, i, where, what) -> np.ndarray:
    if i >= len(ins) or not isinstance(ins[i], np.ndarray):
        raise UnsupportedModelError(f"{where}: its {what} input is not a constant")
    return ins[i]


def _fold(node, ins) -> list:
    """Evaluate a plumbing node on constant inputs with ONNX's reference implementation."""
    feeds = {name: value for name, value in zip(node.input, ins) if name}
    return ReferenceEvaluator(node).run(None, feeds)


def _self_check(path: Path, walk: _Walk, model: GRUModel) -> None:
    rng = np.random.default_rng(0)
    axes = walk.values[walk.input_name].axes
    x_ntf = rng.standard_normal(
        (walk.input_shape[axes.index("N")], walk.input_shape[axes.index("T")], walk.input_shape[2])
    ).astype(np.float32)
    try:
        got, who = run_source(path, model, x_ntf)
    except FrameworkUnavailable as e:  # onnxruntime refused the file; its own error is the cause
        raise BadInputError(f"{path}: onnxruntime cannot run it for the load-time check ({e.__cause__})") from e
    require_agreement(got, model.predict(x_ntf), f"{path}: {who}", "what this graph computes")
    model.meta["self_check"] = who
