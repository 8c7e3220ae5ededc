"""What the ONNX and torch.export loaders share around their graph walks.

Each loader walks its graph once, in node order, under the guess that the input is batch-first; a walk that
finds the input's axes the other way round raises ``LayoutGuessWrong`` and the loader walks again time-major.

During a walk every tensor is either a constant (NumPy) or a ``Seq``, the data tensor, of which only the
meaning of each axis is tracked, and how far along the network it is:

    x -> [input scaling] -> GRU -> ... -> GRU -> [head: dense -> activation -> dense -> ...] -> y

- Before the first GRU the input may be scaled by constants, ``(x - mean) / std`` per feature or by scalars:
  ``scaled_input`` composes the affine map x' = a * x + c, ``fold_input_scaling`` folds it into the first
  layer's input weights (W' = W * a, Wb' = Wb + W @ c per gate). Anything else there is refused by name.
- After the last GRU, ``HeadChain`` collects the head: dense layers, each with at most one activation, and
  BatchNorms (inference: a per-feature affine map) folded into the dense layer before them, or, after an
  activation or on the GRU's output, into the one after them.

A finished walk has ``layers``, ``head`` (a Head or None), ``batch_first`` and ``output_axes``.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from grukit.core.errors import UnsupportedModelError
from grukit.core.model import Dense, GRUDirection, GRULayer, GRUModel, Head
from grukit.export.source_runtime import source_meta

# What each supported place of the graph accepts, for the messages that refuse something else.
BEFORE_GRU = ("before the first GRU grukit folds only an affine scaling of the input by constants "
              "((x - mean) / std, per feature or scalar)")
AFTER_GRU = ("after the GRU grukit reads a head of dense layers (Linear / Gemm / MatMul + Add), each with at most "
             "one of relu, relu6, tanh, sigmoid (softmax on the last), BatchNorm folded into them, and layout ops")


class LayoutGuessWrong(Exception):
    """The graph input's axes are the other way round from the guess (batch-first vs time-major)."""


@dataclass(frozen=True, eq=False)
class Seq:
    """The data tensor during a walk.

    axes: one label per axis: batch ``N``, time ``T``, the last step kept as a size-1 axis ``T1``, feature
    ``F``, GRU direction ``D``, final states stacked by layer ``L`` (h_n), a unit axis ``1``.
    sizes: the concrete size of each axis.
    source: the GRU layer that produced it; -1 for the graph input.
    link: ``HeadChain.link`` when it was produced: 0 before the head, and a tensor the head reads must carry
    the chain's current link (the head is one chain, not a branch off an earlier point).
    state: it is a GRU's final state (h_n), not a step of the output sequence (the head then reads
    "final_state").
    states: for a tensor whose ``L`` or ``D`` axis stacks final states, the GRU layer each entry belongs to
    (None for the directions of a bidirectional layer); None otherwise.
    scaling: the graph input's affine map so far, (a [F], c [F]) with x' = a * x + c; None for none.
    """

    axes: tuple[str, ...]
    sizes: tuple[int, ...]
    source: int
    link: int = 0
    state: bool = False
    states: tuple[int | None, ...] | None = None
    scaling: tuple[np.ndarray, np.ndarray] | None = None

    def axis(self, label: str) -> int:
        return self.axes.index(label)


def unsupported_here(X: Seq, what: str, where: str) -> UnsupportedModelError:
    """The error for ``what`` (an op) on the data path at ``X``, saying what that place accepts."""
    context = BEFORE_GRU if X.source < 0 else AFTER_GRU
    return UnsupportedModelError(f"{where}: {what} on the GRU's data path is not supported; {context}")


def walk_either_layout(walk_cls, graph):
    """``walk_cls(graph, batch_first=...)``, batch-first first, time-major if that guess was wrong."""
    try:
        return walk_cls(graph, batch_first=True)
    except LayoutGuessWrong:
        return walk_cls(graph, batch_first=False)


def walked_model(walk, source: str, name: str) -> GRUModel:
    """The GRUModel a finished walk describes; ``source`` says where it was read from."""
    return GRUModel(layers=tuple(walk.layers), head=walk.head, name=name, source=source,
                    meta=source_meta(walk.batch_first, walk.output_axes))


# --- layout ops ------------------------------------------------------------------------------------------------
def without_axis(X: Seq, axis: int, **changes) -> Seq:
    return replace(X, axes=X.axes[:axis] + X.axes[axis + 1:], sizes=X.sizes[:axis] + X.sizes[axis + 1:], **changes)


def permuted(X: Seq, perm) -> Seq:
    perm = [int(p) % len(X.axes) for p in perm]
    return replace(X, axes=tuple(X.axes[p] for p in perm), sizes=tuple(X.sizes[p] for p in perm))


def picked(X: Seq, axis: int, index: int, last_step_ok, where: str) -> Seq:
    """X with one entry of ``axis`` picked and the axis dropped (Gather with a scalar index, select).

    On ``T`` it must be the last step (``last_step_ok(index, T)`` decides); on an axis stacking final states,
    the state of the last GRU layer (the walk checks the layer when the head starts); a size-1 ``D``, ``1`` or
    ``T1`` axis only loses its axis."""
    label, n = X.axes[axis], X.sizes[axis]
    if index < -n or index >= n:
        raise UnsupportedModelError(f"{where}: index {index} is out of range for the {label} axis of size {n}")
    if label == "T":
        if X.link:
            raise UnsupportedModelError(f"{where}: picks a time step after the head's dense layers; grukit's head "
                                        "reads the last step before its first dense layer (apply it to out[:, -1])")
        if not last_step_ok(index, n):
            raise UnsupportedModelError(f"{where}: picks time step {index}; grukit's head reads the last step "
                                        "(index -1)")
        return without_axis(X, axis)
    if X.states is not None and label in ("L", "D"):
        layer = X.states[index]
        if layer is None:
            raise UnsupportedModelError(
                f"{where}: reads h_n of a bidirectional GRU, which is not supported: the reverse direction's final "
                "state belongs to the first step, which no head on grukit's last step can read; use the output "
                "sequence's last step (out[:, -1]) instead")
        return without_axis(X, axis, source=layer, state=True, states=None)
    if n == 1 and label in ("D", "1", "T1"):
        return without_axis(X, axis)
    raise UnsupportedModelError(f"{where}: picks one entry of the {label} axis of the sequence"
                                + (" (one direction of a bidirectional GRU)" if label == "D" else ""))


def squeezed(X: Seq, axes, where: str) -> Seq:
    """X without the size-1 axes ``axes`` (layout only: D, 1, T1, or a single stacked final state)."""
    axes = sorted({int(a) % len(X.axes) for a in axes}, reverse=True)
    for a in axes:
        if X.sizes[a] != 1 or X.axes[a] not in ("D", "1", "T1", "L"):
            raise UnsupportedModelError(f"{where}: removes the {X.axes[a]} axis of the sequence")
    for a in axes:
        X = picked(X, a, 0, None, where)
    return X


def reshaped(X: Seq, shape, where: str) -> Seq:
    """X reshaped to the concrete ``shape``: consecutive input axes grouped onto each output dim, where a group
    may merge only size-1 axes, or direction and feature (a bidirectional layer's [forward, reverse] output)."""
    shape = [int(s) for s in shape]
    if int(np.prod(shape)) != int(np.prod(X.sizes)):
        raise UnsupportedModelError(f"{where}: cannot reshape {X.sizes} to {shape}")
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
            raise unsupported_here(X, f"a reshape of {X.axes}{X.sizes} to {shape} (across axes)", where)
        if labels == ["D", "F"]:
            labels = ["F"]  # [forward h, reverse h] side by side: grukit's bidirectional output
        if len(labels) != 1:
            raise unsupported_here(X, f"a reshape merging the {'/'.join(labels)} axes", where)
        axes_out.append(labels[0])
    # Input axes left over are size 1 (the products matched), so dropping them loses nothing.
    if X.states is not None and X.axes != tuple(axes_out):
        raise UnsupportedModelError(f"{where}: reshapes the stacked final states {X.axes}{X.sizes}")
    return replace(X, axes=tuple(axes_out), sizes=tuple(shape))


def flattened(X: Seq, start: int, end: int, where: str) -> Seq:
    """X with axes start..end (inclusive) merged into one (torch.flatten; ONNX Flatten is start=axis, end=-1)."""
    start, end = start % len(X.axes), end % len(X.axes)
    merged = int(np.prod(X.sizes[start:end + 1]))
    return reshaped(X, list(X.sizes[:start]) + [merged] + list(X.sizes[end + 1:]), where)


# --- input scaling ---------------------------------------------------------------------------------------------
def per_feature(c, X: Seq, where: str) -> np.ndarray:
    """A constant operand of an elementwise op on X as one value per feature [F]; refused if it varies along any
    other axis of X or would broadcast X to a larger shape."""
    c = np.asarray(c, np.float64)
    if c.ndim > len(X.axes):
        raise UnsupportedModelError(f"{where}: a constant of shape {c.shape} broadcasts the sequence {X.sizes}")
    F = X.sizes[X.axis("F")]
    for k, size in enumerate(c.shape[::-1]):
        label = X.axes[len(X.axes) - 1 - k]
        if size != 1 and not (label == "F" and size == F):
            raise UnsupportedModelError(f"{where}: a constant of shape {c.shape} varies along the {label} axis of "
                                        f"the sequence; grukit folds only per-feature or scalar input scaling")
    aligned = c.reshape((1,) * (len(X.axes) - c.ndim) + c.shape)
    return np.broadcast_to(aligned.reshape(-1) if aligned.size > 1 else aligned.reshape(1), (F,)).astype(np.float64)


def scaled_input(X: Seq, op: str, c, where: str) -> Seq:
    """X (the graph input, possibly scaled already) after the elementwise ``op`` with the constant c:
    "add" (x + c), "sub" (x - c), "rsub" (c - x), "mul" (x * c), "div" (x / c), "neg" (-x)."""
    if X.source >= 0:
        raise unsupported_here(X, op, where)
    F = X.sizes[X.axis("F")]
    a, b = X.scaling if X.scaling is not None else (np.ones(F), np.zeros(F))
    v = per_feature(c, X, where) if op != "neg" else None
    if op == "add":
        a, b = a, b + v
    elif op == "sub":
        a, b = a, b - v
    elif op == "rsub":
        a, b = -a, v - b
    elif op == "mul":
        a, b = a * v, b * v
    elif op == "div":
        if np.any(v == 0):
            raise UnsupportedModelError(f"{where}: divides the input by zero")
        a, b = a / v, b / v
    elif op == "neg":
        a, b = -a, -b
    else:
        raise unsupported_here(X, op, where)
    return replace(X, scaling=(a, b))


def fold_input_scaling(layer: GRULayer, scaling) -> GRULayer:
    """The layer reading x' = a * x + c as a layer reading x: W' = W * a, Wb' = Wb + W @ c (per gate)."""
    if scaling is None:
        return layer
    a, c = scaling

    def fold(d: GRUDirection) -> GRUDirection:
        W = d.W.astype(np.float64)
        return GRUDirection(W=W * a, R=d.R, Wb=d.Wb + W @ c, Rb=d.Rb)

    reverse = fold(layer.reverse) if layer.reverse is not None else None
    return GRULayer(forward=fold(layer.forward), linear_before_reset=layer.linear_before_reset, reverse=reverse)


def batch_norm_affine(mean, var, eps: float, weight=None, bias=None) -> tuple[np.ndarray, np.ndarray]:
    """Inference BatchNorm (x - mean) / sqrt(var + eps) * weight + bias as (scale, shift) per feature."""
    scale = np.asarray(weight if weight is not None else 1.0, np.float64) / np.sqrt(np.asarray(var, np.float64) + eps)
    shift = np.asarray(bias if bias is not None else 0.0, np.float64) - np.asarray(mean, np.float64) * scale
    return scale.reshape(-1), shift.reshape(-1)


def batch_normed(X: Seq, chain: "HeadChain", scale, shift, top: int, where: str) -> Seq:
    """BatchNorm over axis 1 (its channel axis), which must be the features: on the input it joins the input
    scaling, after the GRU the head."""
    if len(X.axes) < 2 or X.axes[1] != "F":
        raise UnsupportedModelError(f"{where}: BatchNorm normalizes axis 1, which is the sequence's "
                                    f"{X.axes[1] if len(X.axes) > 1 else 'only'} axis, not its features")
    if X.source < 0:
        F = X.sizes[1]
        X = scaled_input(X, "mul", np.broadcast_to(scale, (F,)).reshape((F,) + (1,) * (len(X.axes) - 2)), where)
        return scaled_input(X, "add", np.broadcast_to(shift, (F,)).reshape((F,) + (1,) * (len(X.axes) - 2)), where)
    return chain.batch_norm(X, scale, shift, top, where)


# --- the head --------------------------------------------------------------------------------------------------
class HeadChain:
    """The head a walk reads after the last GRU: dense layers in order, each closed by at most one activation.

    Every method takes the op's input X, the walk's last GRU layer ``top`` and ``where`` (the op, for
    messages), and returns the op's output."""

    def __init__(self):
        self.layers: list[list] = []  # [W [O, F] float64, b [O] float64, activation]
        self.reads: str | None = None
        self.source: int | None = None  # the GRU layer the first dense layer reads
        self.link = 0
        self.open = False  # the last dense layer has no activation yet: a bias or a BatchNorm folds into it
        self.pending = None  # (scale, shift) of a BatchNorm waiting for the next dense layer

    def _follow(self, X: Seq, top: int, what: str, where: str) -> Seq:
        """X as the next link of the chain, after checking ``what`` may read it."""
        if X.source < 0:
            raise unsupported_here(X, what, where)
        if X.link != self.link:
            raise UnsupportedModelError(f"{where}: {what} reads a tensor from before the head's last op; grukit's "
                                        "head is one chain of dense layers")
        if X.source != top:
            raise UnsupportedModelError(f"{where}: {what} reads GRU layer {X.source}'s output, not the last GRU "
                                        "layer's")
        if not X.axes or X.axes[-1] != "F":
            raise UnsupportedModelError(f"{where}: {what} works along the {X.axes[-1:]} axis instead of the "
                                        "features")
        self.link += 1
        return replace(X, link=self.link)

    def dense(self, X: Seq, W, b, top: int, where: str) -> Seq:
        """A dense layer y = W x + b on X's last axis (W [O, F]); b None: zero, until an add brings it."""
        Y = self._follow(X, top, "a dense layer", where)
        W = np.asarray(W, np.float64)
        if W.ndim != 2 or W.shape[1] != X.sizes[-1]:
            raise UnsupportedModelError(f"{where}: a weight of shape {W.shape} for {X.sizes[-1]} features")
        if self.layers and self.layers[-1][2] == "softmax":
            raise UnsupportedModelError(f"{where}: a dense layer after softmax; softmax is supported as the head's "
                                        "output only")
        b = np.zeros(W.shape[0]) if b is None else np.asarray(b, np.float64).reshape(-1)
        if self.pending is not None:  # a BatchNorm before this layer: W (s x + t) + b
            s, t = self.pending
            W, b = W * s, b + W @ t
            self.pending = None
        if not self.layers:
            self.reads = "final_state" if X.state else "every_step" if "T" in X.axes else "last_step"
            self.source = X.source
        self.layers.append([W, b, "linear"])
        self.open = True
        return replace(Y, sizes=Y.sizes[:-1] + (W.shape[0],))

    def bias(self, X: Seq, b, top: int, where: str) -> Seq:
        """A constant added to the last dense layer's output before its activation: part of its bias."""
        if not self.open:
            raise unsupported_here(X, "an add (other than a dense layer's bias)", where)
        Y = self._follow(X, top, "an add", where)
        O = X.sizes[-1]
        b = np.asarray(b, np.float64)
        if b.size not in (1, O) or b.ndim > len(X.axes) or (b.ndim and b.shape[-1] != b.size):
            raise UnsupportedModelError(f"{where}: an add of shape {b.shape} to a dense layer of {O} outputs")
        self.layers[-1][1] = self.layers[-1][1] + np.broadcast_to(b.reshape(-1), (O,))
        return Y

    def batch_norm(self, X: Seq, scale, shift, top: int, where: str) -> Seq:
        """A per-feature affine map s * x + t: folded into the dense layer before it (no activation between),
        else kept for the next dense layer."""
        Y = self._follow(X, top, "BatchNorm", where)
        F = X.sizes[-1]
        s, t = np.broadcast_to(scale, (F,)).astype(np.float64), np.broadcast_to(shift, (F,)).astype(np.float64)
        if self.open:
            layer = self.layers[-1]
            layer[0], layer[1] = s[:, None] * layer[0], s * layer[1] + t
        elif self.layers and self.layers[-1][2] == "softmax":
            raise UnsupportedModelError(f"{where}: BatchNorm after softmax; softmax is supported as the head's "
                                        "output only")
        else:
            s0, t0 = self.pending if self.pending is not None else (np.ones(F), np.zeros(F))
            self.pending = (s * s0, s * t0 + t)
        return Y

    def activation(self, X: Seq, name: str, top: int, where: str) -> Seq:
        """The last dense layer's activation (one of HEAD_ACTIVATIONS)."""
        Y = self._follow(X, top, name, where)
        if not self.layers:
            raise UnsupportedModelError(f"{where}: {name} on the GRU's output; grukit's head applies activations "
                                        "after dense layers only")
        if not self.open:
            raise UnsupportedModelError(f"{where}: {name} after {self.layers[-1][2]}; grukit applies one "
                                        "activation per dense layer")
        self.layers[-1][2] = name
        self.open = False
        return Y

    def head(self, out: Seq, top: int) -> Head | None:
        """The Head read, given the walk's output ``out`` and the last GRU layer ``top``; None without one.

        An output that never passed through the chain (link 0) has no head: dense ops elsewhere in the graph do
        not reach it."""
        if out.link == 0:
            return None
        if self.pending is not None:
            raise UnsupportedModelError("a BatchNorm " + ("on the GRU's output" if not self.layers else
                                                          "after the head's last activation")
                                        + " has no dense layer after it to fold into")
        if out.link != self.link:
            raise UnsupportedModelError("the output is not the end of the head's chain of dense layers")
        if self.source != top:
            raise UnsupportedModelError(f"the head reads GRU layer {self.source}, not the last GRU layer")
        return Head(tuple(Dense(W, b, act) for W, b, act in self.layers), self.reads)
