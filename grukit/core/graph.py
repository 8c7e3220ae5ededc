"""The integer GRU step as a graph of TFLite-Micro ops: defined once, walked by every backend.

The NumPy fixed-point runtime (``grukit.runtime.int_gru``), the TFLite writer and the C generator all
iterate over ``step_ops(linear_before_reset)``; none of them re-derives the decomposition. Every op is one
TFLite-Micro runs for int8 and for int16 activations: FULLY_CONNECTED, ADD, SUB, MUL, LOGISTIC, TANH.

Why this decomposition:
- One FULLY_CONNECTED per gate and per side (x and h) gives each gate pre-activation its own output scale;
  the z/r gates, the candidate n and the hidden-side products have very different ranges, and a single
  [3H]-wide output with one scale would spend the int8 range on the widest of them.
- The z and r biases (Wb + Rb) are folded into the x-side products; only ``linear_before_reset = 1`` keeps
  Rb_n on the hidden side, where the reset gate multiplies it.
- The new state is written h_new = n + z * (h - n): one SUB, one MUL, one ADD (the textbook
  (1 - z) * n + z * h costs an extra SUB and MUL). Its output quantization is the state's own, so the
  state feeds back without a requantization op.

Tensor names are the float reference's ``observe`` names (``grukit.core.float_gru``), so calibration
observes exactly the tensors quantized here. ``x`` is the layer input (the model input or the previous
layer's state), ``h`` the previous state, ``h_new`` the new one (observed as ``"h"``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from grukit.core.model import GATE_N, GATE_R, GATE_Z, GRUDirection

FULLY_CONNECTED = "FULLY_CONNECTED"
ADD = "ADD"
SUB = "SUB"
MUL = "MUL"
LOGISTIC = "LOGISTIC"
TANH = "TANH"


@dataclass(frozen=True)
class Op:
    """One op of the step. For FULLY_CONNECTED, ``weight`` names the weight matrix (``"W"`` input-side or
    ``"R"`` hidden-side) and ``gate`` its gate row block; ``bias`` is ``"bx"``, ``"bh"`` or None."""

    kind: str
    inputs: tuple[str, ...]
    output: str
    weight: str | None = None
    gate: int | None = None
    bias: str | None = None


def step_ops(linear_before_reset: int) -> tuple[Op, ...]:
    """The ops of one layer step, in execution order."""
    fc = lambda out, src, weight, gate, bias=None: Op(FULLY_CONNECTED, (src,), out, weight, gate, bias)
    ops = [
        fc("gx_z", "x", "W", GATE_Z, "bx"),
        fc("gx_r", "x", "W", GATE_R, "bx"),
        fc("gx_n", "x", "W", GATE_N, "bx"),
        fc("gh_z", "h", "R", GATE_Z),
        fc("gh_r", "h", "R", GATE_R),
    ]
    if linear_before_reset:
        ops.append(fc("gh_n", "h", "R", GATE_N, "bh"))
    ops += [
        Op(ADD, ("gx_z", "gh_z"), "z_pre"),
        Op(ADD, ("gx_r", "gh_r"), "r_pre"),
        Op(LOGISTIC, ("z_pre",), "z"),
        Op(LOGISTIC, ("r_pre",), "r"),
    ]
    if linear_before_reset:
        ops += [
            Op(MUL, ("r", "gh_n"), "r_gh"),
            Op(ADD, ("gx_n", "r_gh"), "n_pre"),
        ]
    else:
        ops += [
            Op(MUL, ("r", "h"), "r_h"),
            fc("gh_n", "r_h", "R", GATE_N),
            Op(ADD, ("gx_n", "gh_n"), "n_pre"),
        ]
    ops += [
        Op(TANH, ("n_pre",), "n"),
        Op(SUB, ("h", "n"), "h_minus_n"),
        Op(MUL, ("z", "h_minus_n"), "z_diff"),
        Op(ADD, ("n", "z_diff"), "h_new"),
    ]
    return tuple(ops)


def input_side_ops(linear_before_reset: int) -> tuple[Op, ...]:
    """The ops that read only x: a runtime may run them for all time steps at once."""
    return tuple(op for op in step_ops(linear_before_reset) if op.inputs == ("x",))


def recurrent_ops(linear_before_reset: int) -> tuple[Op, ...]:
    """The ops that depend on the previous state, in execution order."""
    return tuple(op for op in step_ops(linear_before_reset) if op.inputs != ("x",))


def split_biases(d: GRUDirection, linear_before_reset: int) -> tuple[np.ndarray, np.ndarray]:
    """(bx [3, H], bh [3, H]): the biases regrouped onto the input-side and hidden-side products."""
    bx = d.Wb.copy()
    bh = np.zeros_like(d.Rb)
    bx[GATE_Z] += d.Rb[GATE_Z]
    bx[GATE_R] += d.Rb[GATE_R]
    if linear_before_reset:
        bh[GATE_N] = d.Rb[GATE_N]
    else:
        bx[GATE_N] += d.Rb[GATE_N]
    return bx, bh
