"""The budget checks: a model's flash, RAM and latency against a board (``grukit.runtime.targets``).

Latency is always an **estimate**: latency_s = instructions x cycles_per_instruction / clock_hz. The
instruction count comes either from a run in emulation (QEMU ``-icount`` counts instructions exactly, see
``grukit.firmware_ref.measure``) or from the cost model (``grukit.runtime.cost_model``); every latency check
says which.
"""

from __future__ import annotations

from dataclasses import dataclass

from grukit.core.errors import BadInputError
from grukit.runtime.cost_model import COST_MODEL_SOURCE
from grukit.runtime.targets import Target

@dataclass(frozen=True)
class Figure:
    """A byte count for the budget and where it comes from: measured (a built object, a generated header)
    or estimated (the cost model above)."""

    value: int
    estimate: bool
    note: str


# --- checks --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Check:
    """One budget line: ``value`` against ``limit`` (None: reported, not checked)."""

    name: str
    value: float
    limit: float | None
    unit: str
    passed: bool | None  # None when there is no limit
    estimate: bool
    note: str = ""

    @property
    def margin(self) -> float | None:
        """How far under (positive) or over (negative) the limit the value is, in ``unit``."""
        return None if self.limit is None else self.limit - self.value


def latency_ms(target: Target, instructions: float) -> float:
    """Estimated milliseconds for ``instructions`` on ``target``."""
    return instructions * target.cycles_per_instruction / target.clock_hz * 1e3


def check_budget(
    target: Target,
    flash: Figure | int,
    ram: Figure | int,
    instructions_per_step: float,
    steps: int,
    instructions_per_sequence: float = 0,
    max_latency_ms: float | None = None,
    instructions_source: str = COST_MODEL_SOURCE,
) -> list[Check]:
    """Flash, RAM, latency of one step and of one sequence of ``steps`` steps against ``target``.

    Latency = (instructions_per_step x steps + instructions_per_sequence) x cycles_per_instruction / clock,
    checked against max_latency_ms when given (else reported: limit and passed None; the latency of one step
    is always reported only); it is always an estimate (cycles per instruction is), even
    when the instruction count was measured in emulation. ``instructions_source`` says where the count comes
    from and is copied into the latency notes. flash / ram: a Figure, or a plain int taken as an estimate.
    """
    if steps < 1:
        raise BadInputError(f"steps must be at least 1, got {steps}")
    if not isinstance(flash, Figure):
        flash = Figure(int(flash), True, "weights, biases, requantization parameters and kernel code")
    if not isinstance(ram, Figure):
        ram = Figure(int(ram), True, "hidden state and one step's intermediate tensors")
    instructions = instructions_per_step * steps + instructions_per_sequence
    per_step_ms = latency_ms(target, instructions_per_step)
    lat = latency_ms(target, instructions)
    cpi = f"{target.cycles_per_instruction} cycles/instruction (estimate), {target.clock_hz / 1e6:g} MHz"
    return [
        Check(f"{target.name} flash", flash.value, target.flash_bytes, "bytes", flash.value <= target.flash_bytes,
              flash.estimate, flash.note),
        Check(f"{target.name} RAM", ram.value, target.ram_bytes, "bytes", ram.value <= target.ram_bytes,
              ram.estimate, ram.note),
        Check(f"{target.name} latency per step", per_step_ms, None, "ms", None, True,
              f"{instructions_per_step:,.0f} instructions per step from {instructions_source}; {cpi}"),
        Check(f"{target.name} latency per sequence", lat, max_latency_ms, "ms",
              None if max_latency_ms is None else lat <= max_latency_ms, True,
              f"{instructions:,.0f} instructions for {steps} steps from {instructions_source}; {cpi}"),
    ]
