"""The cost model: a quantized GRU's instructions per step and its flash and RAM, estimated from its shape.

Used where nothing can be measured (a core QEMU does not emulate, no ARM toolchain, a bidirectional model
with no integer form); every figure it gives is labelled an estimate with ``COST_MODEL_SOURCE``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from grukit.core.graph import ADD, FULLY_CONNECTED, LOGISTIC, MUL, SUB, TANH, step_ops
from grukit.core.model import GRUModel
from grukit.core.scheme import INT8, S16X8, Scheme, scheme_named

# --- instructions ----------------------------------------------------------------------------------------
# Instructions, not cycles, in the Armv7-M instruction stream of plain C int8 kernels built with -O2.
# Measured: a naive -O2 int8 matrix-vector loop in C (64x80, arm-none-eabi-gcc 12.2, Cortex-M4) ran 26,380
# instructions for 5,120 MACs in QEMU mps2-an386 under -icount (SysTick ticks converted to instructions).
INSTRUCTIONS_PER_MAC = 5.15
# Estimate, not measured: per FULLY_CONNECTED output value, bias load + 64-bit requantizing multiply,
# rounding shift, zero point, saturate and store (~12) plus the row loop (~8).
INSTRUCTIONS_PER_FC_OUTPUT = 20
# Estimate, not measured: a quantized ADD/SUB/MUL per element rescales its inputs and output with up to three
# fixed-point multiplies (each multiply-high + rounding shift, ~8 instructions), plus loads, clamp, store.
INSTRUCTIONS_PER_ELEMENTWISE = 30
# Estimate, not measured: LOGISTIC/TANH per element through a lookup table with interpolation.
INSTRUCTIONS_PER_ACTIVATION = 20

COST_MODEL_SOURCE = "cost model (grukit.runtime.cost_model: instructions per MAC measured in QEMU, per-op overheads estimated)"


@dataclass(frozen=True)
class InstructionCount:
    """Instructions of one time step (all layers) and of the once-per-sequence part (a last-step head)."""

    per_step: float
    per_sequence: float
    source: str
    measured: bool = False


def cost_model_instructions(model: GRUModel) -> InstructionCount:
    """Instructions of the integer step graph (``grukit.core.graph``) priced by the constants above."""
    per_step = 0.0
    for layer in model.layers:
        for d in layer.directions:
            H, I = d.hidden_size, d.input_size
            for op in step_ops(layer.linear_before_reset):
                if op.kind == FULLY_CONNECTED:
                    cols = I if op.weight == "W" else H
                    per_step += H * (cols * INSTRUCTIONS_PER_MAC + INSTRUCTIONS_PER_FC_OUTPUT)
                elif op.kind in (ADD, SUB, MUL):
                    per_step += H * INSTRUCTIONS_PER_ELEMENTWISE
                elif op.kind in (LOGISTIC, TANH):
                    per_step += H * INSTRUCTIONS_PER_ACTIVATION
                else:  # a new op kind in the graph must be priced here, not skipped
                    raise ValueError(f"the cost model has no price for op {op.kind}")
    head = 0.0
    if model.head is not None:
        head = sum(d.out_features * (d.in_features * INSTRUCTIONS_PER_MAC + INSTRUCTIONS_PER_FC_OUTPUT)
                   for d in model.head.layers)
    if model.per_step:
        return InstructionCount(math.ceil(per_step + head), 0, COST_MODEL_SOURCE)
    return InstructionCount(math.ceil(per_step), math.ceil(head), COST_MODEL_SOURCE)


# --- memory model --------------------------------------------------------------------------------------
# Kernel code per scheme, used when no ARM toolchain can build it: what built_flash_bytes measured for
# firmware_ref (arm-none-eabi-gcc 12.2 -O2, Cortex-M4, DSP path; text + data of the kernel objects linked
# with --gc-sections from KERNEL_ENTRY_POINTS, the kernel built for the speed form only,
# -DGRUKIT_FORM_SPEED_ONLY): int8 4,972 B (code of grukit_gru.c only), 16x8 4,232 B (grukit_gru.c's _s16 step
# and head, whose LOGISTIC / TANH are inlined there too, and grukit_tables.c's sigmoid table); both include the
# block-sparse product loops (about 500 B), linked whether or not a model has sparse products. The size form's
# kernel (-DGRUKIT_FORM_SIZE_ONLY, grukit export --optimize size): int8 2,896 B, 16x8 3,704 B.
# tests/test_targets.py re-measures them when the toolchain is there.
KERNEL_CODE_BYTES = {INT8: 4_972, S16X8: 4_232}
SIZE_FORM_KERNEL_CODE_BYTES = {INT8: 2_896, S16X8: 3_704}
# Per quantized op: int32 multiplier + int32 shift + zero points (TFLite-Micro keeps the same in its op data).
REQUANT_BYTES_PER_OP = 16


@dataclass(frozen=True)
class MemoryEstimate:
    """Flash (weights, biases, requant parameters, kernel code) and RAM (state, scratch, one input step)."""

    flash_bytes: int
    ram_bytes: int


def memory_estimate(model: GRUModel, scheme: str | Scheme) -> MemoryEstimate:
    """Bytes a streaming C build needs: int8 weights; the scheme's biases (int32 or int64) and activations
    (1 or 2 bytes); the scheme's kernel code (KERNEL_CODE_BYTES)."""
    scheme = scheme_named(scheme)
    act, bias = scheme.activation_bytes, scheme.bias_bytes
    flash = KERNEL_CODE_BYTES[scheme]
    ram = model.input_size * act  # one input step; the sequence streams in
    for layer in model.layers:
        ops = step_ops(layer.linear_before_reset)
        for d in layer.directions:
            H = d.hidden_size
            flash += d.W.size + d.R.size + bias * (d.Wb.size + d.Rb.size) + REQUANT_BYTES_PER_OP * len(ops)
            # The state (h and h_new) plus every intermediate tensor of one step, H values each.
            ram += H * act * (2 + len({op.output for op in ops} - {"h_new"}))
    if model.head is not None:
        for d in model.head.layers:
            flash += d.W.size + bias * d.b.size + REQUANT_BYTES_PER_OP
        ram += max(d.out_features for d in model.head.layers) * 4  # int32 accumulators of the widest layer
    return MemoryEstimate(int(flash), int(ram))


