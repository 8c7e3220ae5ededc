"""The float NumPy reference: what the trained network computes, in float32.

It is the meaning of the model representation, so it sits in the core: calibration observes it
(``grukit.quantize``), every loader checks a model against its framework with it (``grukit.export``), and the
integer runtimes are scored against it.

The step is written as the same graph of small tensors the integer runtime quantizes (see
``grukit.core.graph``), so calibration can observe every tensor the integer GRU will hold. The biases
are grouped the way that graph groups them:

    gx_g = W_g x_t + bx_g            bx_z = Wb_z + Rb_z,  bx_r = Wb_r + Rb_r,
                                     bx_n = Wb_n (+ Rb_n when linear_before_reset = 0)
    gh_g = R_g h_{t-1} (+ Rb_n for g = n when linear_before_reset = 1)

which is the same function as the ONNX GRU definition in ``grukit.core.model``.
"""

from __future__ import annotations

from typing import Callable

import numpy as np

from grukit.core.graph import split_biases
from grukit.core.model import GATE_N, GATE_R, GATE_Z, GRUDirection, GRUModel, Head

# observe(layer_index, tensor_name, value[N, ...]) is called once per tensor per step when given.
Observer = Callable[[int, str, np.ndarray], None]


def sigmoid(x: np.ndarray) -> np.ndarray:
    # Split by sign so exp never overflows.
    out = np.empty_like(x)
    pos = x >= 0
    out[pos] = 1.0 / (1.0 + np.exp(-x[pos]))
    e = np.exp(x[~pos])
    out[~pos] = e / (1.0 + e)
    return out


def gru_step(
    d: GRUDirection,
    linear_before_reset: int,
    gx: np.ndarray,
    h: np.ndarray,
    bh: np.ndarray,
    observe: Callable[[str, np.ndarray], None] | None = None,
    fake: Callable[[str, np.ndarray], np.ndarray] | None = None,
) -> np.ndarray:
    """One step. gx [N, 3, H]: the input-side products with bx added; h [N, H]; returns the new h [N, H].
    fake(name, value) -> value, when given, replaces every tensor of the integer graph as it is computed
    (a fake-quantized run: the value rounded to its quantization grid; ``grukit.diagnose``)."""
    seen = observe or (lambda name, value: None)
    q = fake or (lambda name, value: value)
    gx_z, gx_r, gx_n = q("gx_z", gx[:, GATE_Z]), q("gx_r", gx[:, GATE_R]), q("gx_n", gx[:, GATE_N])
    gh_z = q("gh_z", h @ d.R[GATE_Z].T)
    gh_r = q("gh_r", h @ d.R[GATE_R].T)
    z_pre = q("z_pre", gx_z + gh_z)
    r_pre = q("r_pre", gx_r + gh_r)
    z = q("z", sigmoid(z_pre))
    r = q("r", sigmoid(r_pre))
    if linear_before_reset:
        gh_n = q("gh_n", h @ d.R[GATE_N].T + bh[GATE_N])
        r_gh = q("r_gh", r * gh_n)
        n_pre = q("n_pre", gx_n + r_gh)
    else:
        r_h = q("r_h", r * h)
        gh_n = q("gh_n", r_h @ d.R[GATE_N].T)
        n_pre = q("n_pre", gx_n + gh_n)
    n = q("n", np.tanh(n_pre))
    h_minus_n = q("h_minus_n", h - n)
    z_diff = q("z_diff", z * h_minus_n)
    h_new = q("h", n + z_diff)
    if observe is not None:
        for name, value in (
            ("h_prev", h),
            ("gx_z", gx_z), ("gx_r", gx_r), ("gx_n", gx_n),
            ("gh_z", gh_z), ("gh_r", gh_r), ("gh_n", gh_n),
            ("z_pre", z_pre), ("r_pre", r_pre), ("z", z), ("r", r),
            ("n_pre", n_pre), ("n", n), ("h_minus_n", h_minus_n), ("z_diff", z_diff), ("h", h_new),
        ):
            seen(name, value)
        seen("r_gh" if linear_before_reset else "r_h", r_gh if linear_before_reset else r_h)
    return h_new.astype(np.float32, copy=False)


def direction_forward(
    d: GRUDirection,
    linear_before_reset: int,
    x: np.ndarray,
    h0: np.ndarray | None = None,
    reverse: bool = False,
    observe: Callable[[str, np.ndarray], None] | None = None,
    fake: Callable[[str, np.ndarray], np.ndarray] | None = None,
) -> np.ndarray:
    """Run one direction over x [N, T, I]; returns every step's hidden state [N, T, H] in input time order.
    observe and fake: as ``gru_step``'s."""
    N, T, _ = x.shape
    H = d.hidden_size
    bx, bh = split_biases(d, linear_before_reset)
    # All input-side products at once: [N, T, 3, H].
    gx_all = np.einsum("nti,ghi->ntgh", x, d.W, optimize=True) + bx
    h = np.zeros((N, H), np.float32) if h0 is None else np.asarray(h0, np.float32)
    ys = np.empty((N, T, H), np.float32)
    steps = range(T - 1, -1, -1) if reverse else range(T)
    for t in steps:
        h = gru_step(d, linear_before_reset, gx_all[:, t], h, bh, observe, fake)
        ys[:, t] = h
    return ys


def head_activation(y: np.ndarray, activation: str) -> np.ndarray:
    """A dense layer's float activation (HEAD_ACTIVATIONS) on y [..., O]; softmax over the last axis."""
    if activation == "softmax":
        e = np.exp(y - y.max(axis=-1, keepdims=True))
        return e / e.sum(axis=-1, keepdims=True)
    if activation == "sigmoid":
        return sigmoid(y)
    if activation == "tanh":
        return np.tanh(y)
    if activation == "relu":
        return np.maximum(y, 0)
    if activation == "relu6":
        return np.clip(y, 0, 6)
    return y


# Activations the integer graph fuses into a dense layer's output quantization (TFLite's fused activation).
FUSED_ACTIVATIONS = ("relu", "relu6")


def head_forward(head: Head, h: np.ndarray, observe: Callable[[str, np.ndarray], None] | None = None,
                 fake: Callable[[str, np.ndarray], np.ndarray] | None = None) -> np.ndarray:
    """The head's layers on h [..., F]. observe(name, value) sees, per layer k, its input ``head{k}_in`` and
    its output as the integer graph holds it, ``head{k}_out``: after a fused ReLU / ReLU6 on the layers before
    the last, before the activation otherwise (the last layer's activation is applied in float after the
    integer output; a tanh / sigmoid between layers is an op of its own with a fixed output quantization).
    fake(name, value) -> value replaces those two tensors, when given (``gru_step``)."""
    y = h
    last = len(head.layers) - 1
    for k, d in enumerate(head.layers):
        if fake is not None:
            y = fake(f"head{k}_in", y)
        if observe is not None:
            observe(f"head{k}_in", y)
        pre = y @ d.W.T + d.b
        fused = k < last and d.activation in FUSED_ACTIVATIONS
        held = head_activation(pre, d.activation) if fused else pre  # what the integer graph holds
        if fake is not None:
            held = fake(f"head{k}_out", held)
        if observe is not None:
            observe(f"head{k}_out", held)
        y = held if fused else head_activation(held, d.activation)
    return y.astype(np.float32, copy=False)


def as_batch(x: np.ndarray, input_size: int) -> np.ndarray:
    """Check and shape an input to [N, T, I] float32 (a single [T, I] sequence becomes N = 1)."""
    x = np.asarray(x, dtype=np.float32)
    if x.ndim == 2:
        x = x[None]
    if x.ndim != 3 or x.shape[2] != input_size:
        raise ValueError(f"input must have shape [N, T, {input_size}] (or [T, {input_size}]), got {x.shape}")
    if x.shape[1] == 0:
        raise ValueError("input has no time steps")
    return x


def layers_forward(model: GRUModel, x: np.ndarray, observe: Observer | None = None,
                   fake: Callable[[int, str, np.ndarray], np.ndarray] | None = None) -> list[np.ndarray]:
    """Every layer's output sequence [N, T, H or 2H] for x [N, T, I]. fake(layer, name, value) -> value: as
    ``gru_step``'s, with the layer index."""
    outs = []
    seq = as_batch(x, model.input_size)
    for i, layer in enumerate(model.layers):
        layer_observe = None if observe is None else (lambda name, v, i=i: observe(i, name, v))
        layer_fake = None if fake is None else (lambda name, v, i=i: fake(i, name, v))
        if fake is not None and i == 0:
            seq = fake(0, "x", seq)  # a later layer's input is the previous layer's (already faked) state
        if observe is not None:
            observe(i, "x", seq)
        ys = [direction_forward(layer.forward, layer.linear_before_reset, seq, observe=layer_observe,
                                fake=layer_fake)]
        if layer.reverse is not None:
            ys.append(direction_forward(layer.reverse, layer.linear_before_reset, seq, reverse=True))
        seq = ys[0] if len(ys) == 1 else np.concatenate(ys, axis=-1)
        outs.append(seq)
    return outs


def model_forward(model: GRUModel, x: np.ndarray, observe: Observer | None = None) -> np.ndarray:
    """Float output of the whole model: [N, O] for a last-step head, [N, T, O] for a per-step head."""
    return output_from_states(model, layers_forward(model, x, observe), observe)


def output_from_states(model: GRUModel, states: list[np.ndarray], observe: Observer | None = None,
                       fake: Callable[[int, str, np.ndarray], np.ndarray] | None = None) -> np.ndarray:
    """The model's output from its layers' output sequences (``layers_forward``): the head on the last step
    or on every step."""
    seq = states[-1]
    if model.head is None:
        return seq if model.per_step else seq[:, -1]
    head_in = seq if model.head.per_step else seq[:, -1]
    top = len(model.layers)
    return head_forward(model.head, head_in, None if observe is None else (lambda name, v: observe(top, name, v)),
                        None if fake is None else (lambda name, v: fake(top, name, v)))


def predicted_labels(out: np.ndarray, model: GRUModel) -> np.ndarray:
    """Class per sample (or step) of a classifier's output: argmax, or for one output a threshold (0.5 after a
    sigmoid head, else 0)."""
    if out.shape[-1] == 1:
        threshold = 0.5 if model.head is not None and model.head.activation == "sigmoid" else 0.0
        return (out[..., 0] > threshold).astype(np.int64)
    return np.argmax(out, axis=-1).astype(np.int64)
