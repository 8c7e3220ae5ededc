"""ONNX ``GRU`` operator tensors -> grukit layers, and the operator attributes grukit can represent.

ONNX stacks gates z, r, h (grukit's z, r, n) in ``W [D, 3H, I]`` and ``R [D, 3H, H]``, and holds the biases as
``B [D, 6H] = [Wb_z, Wb_r, Wb_h, Rb_z, Rb_r, Rb_h]``, so no gate reordering is needed, only reshapes.
"""

from __future__ import annotations

import numpy as np

from grukit.core.errors import UnsupportedModelError
from grukit.core.model import GRUDirection, GRULayer

# The only activations grukit's GRU computes (per direction: the gate activation f, the candidate's g).
DEFAULT_ACTIVATIONS = ("Sigmoid", "Tanh")
SUPPORTED_DIRECTIONS = ("forward", "bidirectional")
# Attributes read by gru_attributes; any other attribute on a GRU node is refused by name.
KNOWN_ATTRIBUTES = ("hidden_size", "direction", "linear_before_reset", "layout", "activations", "clip",
                    "activation_alpha", "activation_beta")


def gru_attributes(attrs: dict, where: str = "GRU") -> dict:
    """Check a GRU node's attributes ({name: value}, strings as str) and return direction, hidden_size,
    linear_before_reset and layout; raise UnsupportedModelError naming any attribute grukit cannot honour."""
    for name in attrs:
        if name not in KNOWN_ATTRIBUTES:
            raise UnsupportedModelError(f"{where}: attribute {name!r} is not supported")
    direction = attrs.get("direction", "forward")
    if direction not in SUPPORTED_DIRECTIONS:
        raise UnsupportedModelError(
            f"{where}: direction={direction!r} is not supported (grukit runs 'forward' or 'bidirectional')"
        )
    num_directions = 2 if direction == "bidirectional" else 1
    if "activations" in attrs:
        acts = tuple(attrs["activations"])
        if acts != DEFAULT_ACTIVATIONS * num_directions:
            raise UnsupportedModelError(
                f"{where}: activations={list(acts)} are not supported (grukit computes Sigmoid and Tanh only)"
            )
    for name in ("activation_alpha", "activation_beta"):
        if name in attrs:
            # Sigmoid and Tanh take no alpha/beta; a file carrying them means a different activation was meant.
            raise UnsupportedModelError(f"{where}: attribute {name!r} is not supported")
    if "clip" in attrs:
        raise UnsupportedModelError(f"{where}: clip={attrs['clip']} is not supported (grukit does not clip gates)")
    if "hidden_size" not in attrs:
        raise UnsupportedModelError(f"{where}: the hidden_size attribute is missing")
    lbr = int(attrs.get("linear_before_reset", 0))
    layout = int(attrs.get("layout", 0))
    if lbr not in (0, 1):
        raise UnsupportedModelError(f"{where}: linear_before_reset={lbr} is not 0 or 1")
    if layout not in (0, 1):
        raise UnsupportedModelError(f"{where}: layout={layout} is not 0 or 1")
    return {"direction": direction, "num_directions": num_directions, "hidden_size": int(attrs["hidden_size"]),
            "linear_before_reset": lbr, "layout": layout}


def gru_direction_from_onnx(W: np.ndarray, R: np.ndarray, B: np.ndarray | None) -> GRUDirection:
    """One direction from ONNX-layout W [3H, I], R [3H, H] and B [6H] (None: no bias)."""
    H = R.shape[1]
    W = np.asarray(W, np.float32)
    if W.shape[0] != 3 * H or R.shape[0] != 3 * H:
        raise UnsupportedModelError(f"GRU weights W {W.shape} / R {R.shape} do not hold 3 gates of {H}")
    if B is None:
        B = np.zeros(6 * H, np.float32)
    B = np.asarray(B, np.float32).reshape(-1)
    if B.shape != (6 * H,):
        raise UnsupportedModelError(f"GRU bias B holds {B.size} values per direction, expected 6*{H}")
    return GRUDirection(W=W.reshape(3, H, -1), R=np.asarray(R, np.float32).reshape(3, H, H),
                        Wb=B[: 3 * H].reshape(3, H), Rb=B[3 * H:].reshape(3, H))


def gru_layer_from_onnx(W, R, B, linear_before_reset: int, direction: str = "forward") -> GRULayer:
    """A grukit layer from ONNX GRU inputs W [D, 3H, I], R [D, 3H, H], B [D, 6H] or None."""
    D = 2 if direction == "bidirectional" else 1
    if direction not in SUPPORTED_DIRECTIONS:
        raise UnsupportedModelError(f"GRU direction={direction!r} is not supported")
    W, R = np.asarray(W, np.float32), np.asarray(R, np.float32)
    if W.ndim != 3 or R.ndim != 3 or W.shape[0] != D or R.shape[0] != D:
        raise UnsupportedModelError(f"GRU W {W.shape} / R {R.shape} do not match direction={direction!r}")
    if B is not None:
        B = np.asarray(B, np.float32)
        if B.ndim != 2 or B.shape[0] != D:
            raise UnsupportedModelError(f"GRU B {B.shape} does not match direction={direction!r}")
    dirs = [gru_direction_from_onnx(W[d], R[d], None if B is None else B[d]) for d in range(D)]
    return GRULayer(forward=dirs[0], linear_before_reset=int(linear_before_reset),
                    reverse=dirs[1] if D == 2 else None)
