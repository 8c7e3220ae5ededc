"""Load an ``.onnx`` file holding ``GRU`` nodes and an optional head into a GRUModel.

The graph is walked once from its input, in node order, as graph_walk describes. Every tensor is either a
constant (initializers, ``Constant`` nodes, and any node on constants only, such as the shape plumbing, folded
with ONNX's reference evaluator on concrete sizes) or the data sequence, of which the walk tracks only what
each axis means.

- Layout ops (Transpose, Squeeze, Unsqueeze, Reshape, Flatten, Identity, inference Dropout) move the labels;
  ``Gather``/``Slice`` on ``T`` must pick the last step; ``GRU`` must read the previous GRU's output.
- A GRU's ``Y_h`` (its final state), alone or ``Concat``-enated over layers as torch's ``h_n``, may be read at
  the last layer (``h[-1]``, ``h.squeeze(0)``) when unidirectional.
- Before the first GRU: Add / Sub / Mul / Div / Neg by constants and BatchNormalization over the features, the
  input scaling, folded into the first layer.
- After the last GRU, the head: ``Gemm``, or ``MatMul`` (+ ``Add``), with constant weights, each followed by at
  most one of ``Relu``, ``Clip`` [0, 6] (relu6), ``Tanh``, ``Sigmoid``, ``Softmax`` (last only);
  BatchNormalization folded into the neighbouring dense layer.

Any other op touching the sequence is refused by name, saying what that place of the graph accepts. This covers
what ``torch.onnx.export`` writes with both exporters (TorchScript: Shape/Gather/Expand plumbing for the zero
initial state; dynamo: a zero ``initial_h`` initializer and weights in ``model.onnx.data``) and grukit's own
``export_onnx_sequence``. Finally the file runs in its framework (``source_runtime``: onnxruntime, or ONNX's
reference evaluator for layout=1, which onnxruntime lacks) and the float reference on the same random input;
a mismatch is refused.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from functools import partial
from pathlib import Path

import numpy as np
import onnx
from onnx import helper, numpy_helper
from onnx.reference import ReferenceEvaluator

from grukit.core.errors import BadInputError, UnsupportedModelError
from grukit.core.model import GRUModel
from grukit.export.graph_walk import (HeadChain, LayoutGuessWrong, Seq, batch_norm_affine, batch_normed,
                                      fold_input_scaling, permuted, picked, reshaped, scaled_input,
                                      squeezed, unsupported_here, walk_either_layout, walked_model)
from grukit.export.onnx_gru import gru_attributes, gru_layer_from_onnx
from grukit.export.self_check import require_agreement
from grukit.export.source_runtime import FrameworkUnavailable, output_core, require_output_layout, run_source

# Sizes used for dynamic (named) input dims during the walk and the self check; distinct from each other
# and from typical hidden sizes so a Reshape that mixes axes cannot match by coincidence.
FREE_BATCH, FREE_TIME = 3, 7

# Ops whose handler finds the sequence among its inputs; every other handler takes it as its first input.
SEQ_NOT_FIRST = ("Add", "Sub", "Mul", "Div", "Concat")
# Activations by op type (HEAD_ACTIVATIONS); Clip is decided by its bounds.
ACTIVATIONS = {"Relu": "relu", "Tanh": "tanh", "Sigmoid": "sigmoid"}


def load_onnx(path, name: str | None = None, self_check: bool = True) -> GRUModel:
    """Read an ONNX GRU network (see the module docstring for what is understood) and check it with
    onnxruntime. Returns a GRUModel whose ``meta`` records the input layout ("batch_first"/"time_major")."""
    path = Path(path)
    try:
        proto = onnx.load(str(path))  # loads external data (model.onnx.data) from beside the file
    except Exception as e:  # onnx raises assorted errors for a broken or incomplete file
        raise BadInputError(f"{path}: cannot read ONNX model ({e})") from e
    opset = next((o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")), None)
    walk = walk_either_layout(partial(_Walk, opset=opset), proto.graph)
    model = walked_model(walk, str(path), name or path.stem)
    if self_check:
        _self_check(path, walk, model)
    return model


class _Walk:
    """One pass over the graph under a guess of the input layout; raises LayoutGuessWrong if the guess is wrong."""

    def __init__(self, graph, batch_first: bool, opset: int | None = None):
        self.batch_first = batch_first
        self.opset = opset
        self.layers = []
        self.chain = HeadChain()
        self.head = None
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
        self.values[self.input_name] = Seq(labels, sizes, source=-1)
        for node in graph.node:
            self._node(node)
        if len(graph.output) != 1:
            raise UnsupportedModelError(f"the graph has {len(graph.output)} outputs; grukit reads one")
        self._finish(self.values.get(graph.output[0].name))

    @property
    def top(self) -> int:
        """The last GRU layer read so far."""
        return len(self.layers) - 1

    # --- the walk ----------------------------------------------------------------------------------------
    def _node(self, node):
        ins = [self.values[i] if i in self.values else _missing(node, i) for i in node.input]
        where = f"{node.op_type} node {node.name or node.output[0]!r}"
        for v in ins:
            if isinstance(v, _Refused):
                raise UnsupportedModelError(f"{where} reads {v.reason}")
        seqs = [v for v in ins if isinstance(v, Seq)]
        if node.op_type == "GRU":
            outs = self._gru(node, ins, where)
        elif not seqs:
            outs = _fold(node, ins, where)
        else:
            attrs = _attrs(node)
            if node.op_type in ACTIVATIONS:
                out = self.chain.activation(ins[0], ACTIVATIONS[node.op_type], self.top, where)
            else:
                handler = getattr(self, f"_seq_{node.op_type}", None)
                if handler is None:
                    raise unsupported_here(seqs[0], f"op type {node.op_type!r}", where)
                if ins[0] is not seqs[0] and node.op_type not in SEQ_NOT_FIRST:
                    raise unsupported_here(seqs[0], f"{node.op_type} with the sequence as a later input", where)
                out = handler(node, ins, where, attrs)
            outs = out if isinstance(out, list) else [out]
        for name, value in zip(node.output, outs):
            if name:
                self.values[name] = value

    def _gru(self, node, ins, where):
        attrs = gru_attributes(_attrs(node), where)
        X, W, R = ins[0], ins[1], ins[2]
        B = ins[3] if len(ins) > 3 else None
        seq_lens = ins[4] if len(ins) > 4 else None
        H0 = ins[5] if len(ins) > 5 else None
        if not isinstance(X, Seq):
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
        if X.source != self.top or X.link or X.state or X.states is not None:
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
        self.layers.append(fold_input_scaling(layer, X.scaling))
        k = self.top
        T, N = X.sizes[axes.index("T")], X.sizes[axes.index("N")]
        D, H = attrs["num_directions"], layer.hidden_size
        if attrs["layout"]:
            Y = Seq(("N", "T", "D", "F"), (N, T, D, H), source=k)
            Y_h_axes, Y_h_sizes = ("N", "D", "F"), (N, D, H)
        else:
            Y = Seq(("T", "D", "N", "F"), (T, D, N, H), source=k)
            Y_h_axes, Y_h_sizes = ("D", "N", "F"), (D, N, H)
        if D == 2:
            # The reverse direction's final state belongs to the first step, not to the last step grukit outputs.
            Y_h = _Refused(f"h_n (Y_h) of a bidirectional GRU (layer {k}): its reverse direction's final state "
                           "belongs to the first step, which no head on grukit's last step can read; read the last "
                           "step of Y instead")
        else:
            Y_h = Seq(Y_h_axes, Y_h_sizes, source=k, state=True, states=(k,))
        return [Y, Y_h]

    # --- layout ops on the sequence ------------------------------------------------------------------------
    def _last_ok(self, index: int, T: int) -> bool:
        return index == -1 or (index == T - 1 and self.time_static)

    def _seq_Identity(self, node, ins, where, attrs):
        return ins[0]

    def _seq_Dropout(self, node, ins, where, attrs):
        training = ins[2] if len(ins) > 2 else None
        if training is not None and (not isinstance(training, np.ndarray) or bool(training)):
            raise UnsupportedModelError(f"{where}: Dropout in training mode")
        return [ins[0], _Refused(f"the mask of {where}")]

    def _seq_Shape(self, node, ins, where, attrs):
        # Concrete sizes: the plumbing that builds the zero initial state folds to constants from here.
        return np.array(ins[0].sizes, np.int64)[attrs.get("start", 0): attrs.get("end")]

    def _seq_Transpose(self, node, ins, where, attrs):
        X = ins[0]
        return permuted(X, attrs.get("perm", list(range(len(X.axes)))[::-1]))

    def _seq_Squeeze(self, node, ins, where, attrs):
        X = ins[0]
        axes = _const_input(ins, 1, where, "axes") if len(ins) > 1 and ins[1] is not None else attrs.get("axes")
        if axes is None:
            axes = [i for i, s in enumerate(X.sizes) if s == 1]
        return squeezed(X, np.atleast_1d(axes), where)

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
        return reshaped(X, shape, where)

    def _seq_Flatten(self, node, ins, where, attrs):
        X = ins[0]
        axis = int(attrs.get("axis", 1)) % (len(X.axes) + 1)
        return reshaped(X, [int(np.prod(X.sizes[:axis])), int(np.prod(X.sizes[axis:]))], where)

    def _seq_Gather(self, node, ins, where, attrs):
        X = ins[0]
        axis = int(attrs.get("axis", 0)) % len(X.axes)
        idx = _const_input(ins, 1, where, "indices")
        if idx.ndim == 0:
            return picked(X, axis, int(idx), self._last_ok, where)
        if idx.size != 1 or X.axes[axis] != "T":
            raise UnsupportedModelError(f"{where} gathers {idx.size} entries of the {X.axes[axis]} axis of the "
                                        "sequence")
        X1 = picked(X, axis, int(idx.reshape(-1)[0]), self._last_ok, where)  # checks the step; the axis is kept
        return replace(X1, axes=X.axes[:axis] + ("T1",) * idx.ndim + X.axes[axis + 1:],
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
            picked(X, axis, int(start), self._last_ok, where)  # checks the step; the axis is kept as T1
            axes_out[axis], sizes_out[axis] = "T1", 1
        return replace(X, axes=tuple(axes_out), sizes=tuple(sizes_out))

    def _seq_Concat(self, node, ins, where, attrs):
        """torch's h_n: the layers' Y_h stacked on their direction axis."""
        first = ins[0]
        axis = int(attrs["axis"]) % len(first.axes) if isinstance(first, Seq) else 0
        if not all(isinstance(v, Seq) and v.states is not None and v.axes == first.axes for v in ins) \
                or first.axes[axis] not in ("D", "L"):
            raise unsupported_here(next(v for v in ins if isinstance(v, Seq)), "Concat other than of GRU final "
                                   "states (h_n)", where)
        states = tuple(s for v in ins for s in v.states)
        return replace(first, axes=first.axes[:axis] + ("L",) + first.axes[axis + 1:],
                       sizes=first.sizes[:axis] + (len(states),) + first.sizes[axis + 1:],
                       source=max(v.source for v in ins), states=states)

    # --- elementwise: input scaling before the GRU, a dense layer's bias after it ------------------------------
    def _binary(self, ins, op, where):
        """(the sequence, the constant) of a binary elementwise node; refused if both come from the input."""
        X, c = (ins[0], ins[1]) if isinstance(ins[0], Seq) else (ins[1], ins[0])
        if not isinstance(c, np.ndarray):
            raise unsupported_here(X, f"{op} of two tensors computed from the input", where)
        return X, c

    def _seq_Add(self, node, ins, where, attrs):
        X, c = self._binary(ins, "Add", where)
        return scaled_input(X, "add", c, where) if X.source < 0 else self.chain.bias(X, c, self.top, where)

    def _seq_Sub(self, node, ins, where, attrs):
        X, c = self._binary(ins, "Sub", where)
        if X is ins[1]:
            return scaled_input(X, "rsub", c, where)
        return scaled_input(X, "sub", c, where) if X.source < 0 else self.chain.bias(X, -c, self.top, where)

    def _seq_Mul(self, node, ins, where, attrs):
        X, c = self._binary(ins, "Mul", where)
        return scaled_input(X, "mul", c, where)

    def _seq_Div(self, node, ins, where, attrs):
        X, c = self._binary(ins, "Div", where)
        if X is not ins[0]:
            raise unsupported_here(X, "a constant divided by the sequence (not affine)", where)
        return scaled_input(X, "div", c, where)

    def _seq_Neg(self, node, ins, where, attrs):
        return scaled_input(ins[0], "neg", None, where)

    def _seq_BatchNormalization(self, node, ins, where, attrs):
        X = ins[0]
        if attrs.get("training_mode", 0) or any(node.output[1:]):
            raise UnsupportedModelError(f"{where}: BatchNormalization in training mode")
        scale, bias, mean, var = (_const_input(ins, i, where, name)
                                  for i, name in enumerate(("scale", "B", "input_mean", "input_var"), start=1))
        s, t = batch_norm_affine(mean, var, float(attrs.get("epsilon", 1e-5)), scale, bias)
        return batch_normed(X, self.chain, s, t, self.top, where)

    # --- the head ------------------------------------------------------------------------------------------
    def _seq_Gemm(self, node, ins, where, attrs):
        X = ins[0]
        if attrs.get("transA", 0):
            raise UnsupportedModelError(f"{where}: transA=1 is not supported")
        B = _const_input(ins, 1, where, "B")
        W = float(attrs.get("alpha", 1.0)) * (B if attrs.get("transB", 0) else B.T)
        C = ins[2] if len(ins) > 2 else None
        if C is not None and not isinstance(C, np.ndarray):
            raise UnsupportedModelError(f"{where}: C is not a constant")
        O = W.shape[0]
        if C is not None and C.shape not in ((), (1,), (O,), (1, 1), (1, O)):
            raise UnsupportedModelError(f"{where}: C of shape {C.shape} for a dense layer of {O} outputs")
        b = float(attrs.get("beta", 1.0)) * np.broadcast_to(C.reshape(-1), (O,)) if C is not None else None
        return self.chain.dense(X, W, b, self.top, where)

    def _seq_MatMul(self, node, ins, where, attrs):
        X = ins[0]
        B = _const_input(ins, 1, where, "B")
        if B.ndim != 2:
            raise UnsupportedModelError(f"{where}: MatMul weight has shape {B.shape}, expected [F, O]")
        return self.chain.dense(X, B.T, None, self.top, where)

    def _seq_Clip(self, node, ins, where, attrs):
        """Clip to [0, inf) is relu, to [0, 6] relu6; other bounds are not a head activation."""
        X = ins[0]
        low = _const_input(ins, 1, where, "min") if len(ins) > 1 and ins[1] is not None else attrs.get("min")
        high = _const_input(ins, 2, where, "max") if len(ins) > 2 and ins[2] is not None else attrs.get("max")
        low = None if low is None else float(low)
        high = None if high is None or np.isposinf(high) else float(high)
        if low == 0 and high in (None, 6.0):
            return self.chain.activation(X, "relu" if high is None else "relu6", self.top, where)
        raise unsupported_here(X, f"Clip to [{low}, {high}] (only [0, inf) as relu and [0, 6] as relu6)", where)

    def _seq_Softmax(self, node, ins, where, attrs):
        X = ins[0]
        # Softmax-13 defaults to the last axis; before 13 to axis 1 (over the axes from it on, flattened).
        axis = int(attrs.get("axis", -1 if (self.opset or 13) >= 13 else 1)) % len(X.axes)
        if axis != len(X.axes) - 1:
            raise UnsupportedModelError(f"{where}: Softmax over axis {axis} instead of the outputs")
        return self.chain.activation(X, "softmax", self.top, where)

    # --- the output ------------------------------------------------------------------------------------------
    def _finish(self, out):
        if isinstance(out, _Refused):
            raise UnsupportedModelError(f"the graph output is {out.reason}")
        if not isinstance(out, Seq):
            raise UnsupportedModelError("the graph output does not depend on the input sequence")
        if not self.layers:
            raise UnsupportedModelError("the graph holds no GRU node")
        self.head = self.chain.head(out, self.top)
        if self.head is None and out.source != self.top:
            raise UnsupportedModelError("the graph output is not computed from the last GRU layer")
        # Size-1 axes (a unidirectional D, a kept last step) are layout only; the self check squeezes them.
        if self.head is None and "D" in output_core(out.axes, out.sizes):
            raise UnsupportedModelError("the graph outputs the GRU's directions on a separate axis")
        require_output_layout(out.axes, out.sizes, self.head is None, "the graph output")
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


def _fold(node, ins, where) -> list:
    """Evaluate a node on constant inputs (shape plumbing, a buffer's arithmetic) with ONNX's reference
    implementation; the self check runs the file itself, so a constant folded here cannot go unnoticed."""
    if node.domain not in ("", "ai.onnx"):
        raise UnsupportedModelError(f"{where}: op {node.domain}.{node.op_type} is not supported")
    feeds = {name: value for name, value in zip(node.input, ins) if name}
    try:
        return ReferenceEvaluator(node).run(None, feeds)
    except Exception as e:  # the reference evaluator's own errors for an op or attribute it cannot run
        raise UnsupportedModelError(f"{where}: cannot evaluate it on the graph's constants ({e})") from e


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
