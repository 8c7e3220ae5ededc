"""The one in-memory form of a GRU network that every grukit stage reads and writes.

A network is a stack of GRU layers followed by an optional head, a chain of dense layers:

    x [N, T, I] -> GRULayer 0 -> ... -> GRULayer L-1 -> Head (Dense -> ... -> Dense) -> y

The head reads the last layer's output on the last step (or, the same values, its final state ``h_n[-1]``),
or on every step.

Gate order, written down once for the whole code base: **z, r, n** (update, reset, new), the ONNX order
(ONNX calls the third gate ``h``). Loaders reorder PyTorch's ``r, z, n`` into it; exporters reorder out of it.

One direction of one layer (ONNX GRU semantics, activations sigmoid and tanh)::

    z_t = sigmoid(W_z x_t + Wb_z + R_z h_{t-1} + Rb_z)
    r_t = sigmoid(W_r x_t + Wb_r + R_r h_{t-1} + Rb_r)
    linear_before_reset = 0:  n_t = tanh(W_n x_t + Wb_n + R_n (r_t * h_{t-1}) + Rb_n)
    linear_before_reset = 1:  n_t = tanh(W_n x_t + Wb_n + r_t * (R_n h_{t-1} + Rb_n))
    h_t = (1 - z_t) * n_t + z_t * h_{t-1}

PyTorch ``nn.GRU`` and Keras ``GRU(reset_after=True)`` are ``linear_before_reset = 1``; ONNX's default and
Keras ``reset_after=False`` are ``0``.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np

from grukit.core.errors import BadInputError

GATES = ("z", "r", "n")
GATE_Z, GATE_R, GATE_N = 0, 1, 2

# A dense layer's activation. softmax only on the head's last layer (over its outputs).
HEAD_ACTIVATIONS = ("linear", "relu", "relu6", "tanh", "sigmoid", "softmax")
# Where the head reads: the last step of the top layer's output, its final state h_n[-1] (the same values for a
# unidirectional GRU; recorded for describe()), or every step.
HEAD_READS = ("last_step", "final_state", "every_step")


def _f32(a, name: str, shape: tuple[int, ...]) -> np.ndarray:
    arr = np.ascontiguousarray(np.asarray(a, dtype=np.float32))
    if arr.shape != shape:
        raise ValueError(f"{name}: expected shape {shape}, got {arr.shape}")
    if not np.all(np.isfinite(arr)):
        bad = int(np.size(arr) - np.count_nonzero(np.isfinite(arr)))
        raise BadInputError(f"{name}: {bad} of {arr.size} values are not finite (NaN or infinity)")
    return arr


@dataclass(frozen=True)
class GRUDirection:
    """Parameters of one direction of one GRU layer, gates stacked in the order z, r, n.

    W:  [3, H, I] input weights.      Wb: [3, H] input bias.
    R:  [3, H, H] recurrent weights.  Rb: [3, H] recurrent bias.
    A layer without bias holds zeros in Wb and Rb.
    """

    W: np.ndarray
    R: np.ndarray
    Wb: np.ndarray
    Rb: np.ndarray

    def __post_init__(self):
        W = np.asarray(self.W)
        if W.ndim != 3 or W.shape[0] != 3:
            raise ValueError(f"W: expected shape [3, H, I], got {W.shape}")
        H, I = W.shape[1], W.shape[2]
        object.__setattr__(self, "W", _f32(W, "W", (3, H, I)))
        object.__setattr__(self, "R", _f32(self.R, "R", (3, H, H)))
        object.__setattr__(self, "Wb", _f32(self.Wb, "Wb", (3, H)))
        object.__setattr__(self, "Rb", _f32(self.Rb, "Rb", (3, H)))

    @property
    def hidden_size(self) -> int:
        return self.W.shape[1]

    @property
    def input_size(self) -> int:
        return self.W.shape[2]


@dataclass(frozen=True)
class GRULayer:
    """One GRU layer: a forward direction and, for a bidirectional layer, a reverse one.

    A bidirectional layer outputs [forward h_t, reverse h_t] concatenated on the feature axis (2H wide).
    """

    forward: GRUDirection
    linear_before_reset: int = 1
    reverse: GRUDirection | None = None

    def __post_init__(self):
        if self.linear_before_reset not in (0, 1):
            raise ValueError(f"linear_before_reset must be 0 or 1, got {self.linear_before_reset}")
        if self.reverse is not None and (
            self.reverse.hidden_size != self.forward.hidden_size
            or self.reverse.input_size != self.forward.input_size
        ):
            raise ValueError("the reverse direction must have the forward direction's sizes")

    @property
    def hidden_size(self) -> int:
        return self.forward.hidden_size

    @property
    def input_size(self) -> int:
        return self.forward.input_size

    @property
    def bidirectional(self) -> bool:
        return self.reverse is not None

    @property
    def output_size(self) -> int:
        return self.hidden_size * (2 if self.bidirectional else 1)

    @property
    def directions(self) -> tuple[GRUDirection, ...]:
        return (self.forward,) if self.reverse is None else (self.forward, self.reverse)


@dataclass(frozen=True)
class Dense:
    """One dense layer: y = activation(W x + b), W [O, F], b [O]; ``activation`` one of HEAD_ACTIVATIONS."""

    W: np.ndarray
    b: np.ndarray
    activation: str = "linear"

    def __post_init__(self):
        W = np.asarray(self.W)
        if W.ndim != 2:
            raise ValueError(f"dense W: expected shape [O, F], got {W.shape}")
        object.__setattr__(self, "W", _f32(W, "dense W", W.shape))
        object.__setattr__(self, "b", _f32(self.b, "dense b", (W.shape[0],)))
        if self.activation not in HEAD_ACTIVATIONS:
            raise ValueError(f"activation {self.activation!r} is not supported; use one of {HEAD_ACTIVATIONS}")

    @property
    def in_features(self) -> int:
        return self.W.shape[1]

    @property
    def out_features(self) -> int:
        return self.W.shape[0]


@dataclass(frozen=True)
class Head:
    """The dense layers after the GRU, applied in order to what ``reads`` names (HEAD_READS).

    On the last step (or the final state) the output is y [N, O]; on every step y [N, T, O]. The last layer's
    activation is the model's output activation: runtimes apply it in float, after the integer output.
    """

    layers: tuple[Dense, ...]
    reads: str = "last_step"

    def __post_init__(self):
        layers = tuple(self.layers)
        object.__setattr__(self, "layers", layers)
        if not layers:
            raise ValueError("a head needs at least one dense layer")
        if self.reads not in HEAD_READS:
            raise ValueError(f"head reads {self.reads!r}; use one of {HEAD_READS}")
        for k in range(1, len(layers)):
            if layers[k].in_features != layers[k - 1].out_features:
                raise ValueError(f"head layer {k} takes {layers[k].in_features} inputs but layer {k - 1} gives "
                                 f"{layers[k - 1].out_features}")
        if any(d.activation == "softmax" for d in layers[:-1]):
            raise ValueError("softmax is supported on the head's last layer only")

    @classmethod
    def dense(cls, W, b, per_step: bool = False, activation: str = "linear") -> "Head":
        """A head of one dense layer, on the last step or (per_step) every step."""
        return cls((Dense(W, b, activation),), "every_step" if per_step else "last_step")

    @property
    def per_step(self) -> bool:
        return self.reads == "every_step"

    @property
    def activation(self) -> str:
        """The output activation: the last layer's."""
        return self.layers[-1].activation

    @property
    def in_features(self) -> int:
        return self.layers[0].in_features

    @property
    def out_features(self) -> int:
        return self.layers[-1].out_features

    def param_count(self) -> int:
        return int(sum(d.W.size + d.b.size for d in self.layers))

    def macs(self) -> int:
        return int(sum(d.W.size for d in self.layers))


@dataclass(frozen=True)
class GRUModel:
    """Stacked GRU layers and an optional dense head. ``predict`` runs the float NumPy reference."""

    layers: tuple[GRULayer, ...]
    head: Head | None = None
    name: str = "gru"
    source: str = ""  # where it was loaded from, for reports and generated-file banners
    meta: dict = field(default_factory=dict, compare=False)

    def __post_init__(self):
        layers = tuple(self.layers)
        object.__setattr__(self, "layers", layers)
        if not layers:
            raise ValueError("a GRU model needs at least one GRU layer")
        for i in range(1, len(layers)):
            if layers[i].input_size != layers[i - 1].output_size:
                raise ValueError(
                    f"layer {i} takes {layers[i].input_size} inputs but layer {i - 1} gives {layers[i - 1].output_size}"
                )
        if self.head is not None and self.head.reads == "final_state" and layers[-1].bidirectional:
            raise ValueError("a head on h_n[-1] of a bidirectional layer reads the reverse direction's state at "
                             "the first step: not supported (read the output sequence's last step)")
        if self.head is not None and self.head.in_features != layers[-1].output_size:
            raise ValueError(
                f"head takes {self.head.in_features} inputs but the last GRU layer gives {layers[-1].output_size}"
            )

    # --- shape facts -------------------------------------------------------------------------------------
    @property
    def input_size(self) -> int:
        return self.layers[0].input_size

    @property
    def output_size(self) -> int:
        return self.head.out_features if self.head is not None else self.layers[-1].output_size

    @property
    def per_step(self) -> bool:
        return self.head.per_step if self.head is not None else False

    @property
    def bidirectional(self) -> bool:
        return any(layer.bidirectional for layer in self.layers)

    def param_count(self) -> int:
        n = 0
        for layer in self.layers:
            for d in layer.directions:
                n += d.W.size + d.R.size + d.Wb.size + d.Rb.size
        if self.head is not None:
            n += self.head.param_count()
        return int(n)

    def macs_per_step(self) -> int:
        """Multiply-accumulates of one time step: 3H(I+H) per layer direction, plus the head's (O*F per layer)."""
        n = 0
        for layer in self.layers:
            for d in layer.directions:
                n += 3 * d.hidden_size * (d.input_size + d.hidden_size)
        if self.head is not None:
            n += self.head.macs()
        return int(n)

    def describe(self) -> str:
        lines = [f"{self.name}" + (f"  (from {self.source})" if self.source else "")]
        for i, layer in enumerate(self.layers):
            kind = "bidirectional GRU" if layer.bidirectional else "GRU"
            lines.append(
                f"  layer {i}: {kind} input {layer.input_size} -> hidden {layer.hidden_size}, "
                f"linear_before_reset={layer.linear_before_reset}"
            )
        if self.head is not None:
            where = {"last_step": "the last step", "final_state": "h_n[-1], the last layer's final state",
                     "every_step": "every step"}[self.head.reads]
            lines.append(f"  head on {where}:")
            for k, d in enumerate(self.head.layers):
                act = "" if d.activation == "linear" else f", {d.activation}"
                lines.append(f"    dense {k}: {d.in_features} -> {d.out_features}{act}")
        lines.append(f"  parameters: {self.param_count():,}")
        lines.append(f"  MACs per step: {self.macs_per_step():,}")
        if "self_check" in self.meta:
            lines.append(f"  load-time check: {self.meta['self_check']}")
        return "\n".join(lines)

    # --- execution ---------------------------------------------------------------------------------------
    def predict(self, x: np.ndarray) -> np.ndarray:
        """Float reference output for x [N, T, I] (or [T, I]): [N, O], or [N, T, O] for a per-step head."""
        from grukit.core.float_gru import model_forward  # float_gru imports this module for its types

        return model_forward(self, x)

    def with_layers(self, layers, head=None) -> "GRUModel":
        return replace(self, layers=tuple(layers), head=head if head is not None else self.head)
