"""Board targets and the budget checks: does the quantized GRU fit in flash and RAM, and how fast is it?

A target is a TOML file (``runtime/targets/<part>.toml``, or a user's own path) with the fields of
:class:`Target`. Latency is always an **estimate**:

    latency_s = instructions x cycles_per_instruction / clock_hz

The instruction count comes either from a run in emulation (QEMU ``-icount`` counts instructions exactly,
see ``grukit.runtime.emulate``) or from the documented cost model below; every latency check says which.
Cycles per instruction is a per-board estimate whose origin the TOML states.
"""

from __future__ import annotations

import math
import tomllib
from dataclasses import dataclass
from pathlib import Path

from grukit.errors import BadInputError
from grukit.model import GRUModel
from grukit.quantize.graph import ADD, FULLY_CONNECTED, LOGISTIC, MUL, SUB, TANH, step_ops

TARGETS_DIR = Path(__file__).resolve().parent / "targets"

_REQUIRED = {
    "name": str, "core": str, "clock_hz": int, "flash_bytes": int, "ram_bytes": int,
    "cycles_per_instruction": float, "cycles_per_instruction_source": str, "notes": str,
}
_OPTIONAL = {"qemu_machine": str}
QEMU_MACHINES = ("mps2-an386", "mps2-an500", "mps2-an505", "mps3-an547")


@dataclass(frozen=True)
class Target:
    """One board: clock, memories and the cycles-per-instruction estimate used for latency."""

    name: str
    core: str
    clock_hz: int
    flash_bytes: int
    ram_bytes: int
    cycles_per_instruction: float
    cycles_per_instruction_source: str
    notes: str
    qemu_machine: str | None = None
    path: str = ""


def list_targets() -> list[str]:
    """Names of the targets shipped with grukit, sorted."""
    return sorted(p.stem for p in TARGETS_DIR.glob("*.toml"))


def _validate(raw: dict, where: str) -> Target:
    unknown = sorted(set(raw) - set(_REQUIRED) - set(_OPTIONAL))
    if unknown:
        raise BadInputError(f"{where}: unknown target field(s) {', '.join(unknown)}")
    missing = sorted(set(_REQUIRED) - set(raw))
    if missing:
        raise BadInputError(f"{where}: missing target field(s) {', '.join(missing)}")
    fields = {}
    for key, kind in {**_REQUIRED, **_OPTIONAL}.items():
        if key not in raw:
            continue
        value = raw[key]
        if kind is float and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)  # TOML writes 2 for 2.0
        if not isinstance(value, kind) or isinstance(value, bool):
            raise BadInputError(f"{where}: field {key} must be a {kind.__name__}, got {value!r}")
        fields[key] = value
    for key in ("clock_hz", "flash_bytes", "ram_bytes", "cycles_per_instruction"):
        if not (fields[key] > 0 and math.isfinite(fields[key])):
            raise BadInputError(f"{where}: field {key} must be positive, got {fields[key]!r}")
    machine = fields.get("qemu_machine")
    if machine is not None and machine not in QEMU_MACHINES:
        raise BadInputError(f"{where}: qemu_machine {machine!r} is not one of {', '.join(QEMU_MACHINES)}")
    return Target(**fields, path=where)


def load_target(name_or_path: str | Path) -> Target:
    """A shipped target by name (case-insensitive, e.g. ``"stm32l476"``) or a user's TOML file by path."""
    text = str(name_or_path)
    path = Path(text)
    if path.suffix.lower() == ".toml" or path.exists():
        if not path.is_file():
            raise BadInputError(f"{path}: no such target file")
    else:
        path = TARGETS_DIR / f"{text.lower()}.toml"
        if not path.is_file():
            raise BadInputError(f"unknown target {text!r}; known targets: {', '.join(list_targets())} (or give a .toml path)")
    try:
        raw = tomllib.loads(path.read_text())
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
        raise BadInputError(f"{path}: not valid TOML ({e})") from None
    return _validate(raw, str(path))


# --- cost model ----------------------------------------------------------------------------------------
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

COST_MODEL_SOURCE = "cost model (grukit.runtime.targets: instructions per MAC measured in QEMU, per-op overheads estimated)"


@dataclass(frozen=True)
class InstructionCount:
    """Instructions of one time step (all layers) and of the once-per-sequence part (a last-step head)."""

    per_step: float
    per_sequence: float
    source: str
    measured: bool = False


def cost_model_instructions(model: GRUModel) -> InstructionCount:
    """Instructions of the integer step graph (``grukit.quantize.graph``) priced by the constants above."""
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
        O, F = model.head.W.shape
        head = O * (F * INSTRUCTIONS_PER_MAC + INSTRUCTIONS_PER_FC_OUTPUT)
    if model.per_step:
        return InstructionCount(math.ceil(per_step + head), 0, COST_MODEL_SOURCE)
    return InstructionCount(math.ceil(per_step), math.ceil(head), COST_MODEL_SOURCE)


def emulated_instructions(qmodel, machine: str | None) -> InstructionCount | str:
    """Instructions of one whole step of the C kernel counted in QEMU on ``machine``
    (``grukit.runtime.emulate.measure_step_instructions``), or a string saying why it cannot be measured
    here (no emulated machine for the core, no bare-metal support for the machine, missing packages)."""
    from grukit.runtime import emulate

    if machine is None:
        return "no QEMU machine emulates this core"
    reason = emulate.emulation_unavailable_reason(machine)
    if reason is not None:
        return reason
    count = emulate.measure_step_instructions(qmodel, machine)
    if count is None:  # measure_step_instructions re-checks the tools; they went missing in between
        return "ARM toolchain or QEMU missing"
    source = (f"QEMU {machine} instruction count, measured (whole step, all layers and the head; a last-step "
              "head is counted at every step, an upper bound)")
    return InstructionCount(count, 0, source, measured=True)


# --- memory model --------------------------------------------------------------------------------------
ACTIVATION_BYTES = {"int8": 1, "16x8": 2}
# Bias width in the generated C: int32 for int8 activations, int64 for int16 (TFLite's 16x8 convention).
BIAS_BYTES = {"int8": 4, "16x8": 8}
# Kernel code per scheme, used when no ARM toolchain can build it: what built_flash_bytes measured for
# firmware_ref (arm-none-eabi-gcc 12.2 -O2, Cortex-M4, DSP path; text + data of the kernel objects linked
# with --gc-sections from KERNEL_ENTRY_POINTS): int8 2,464 B (code of grukit_gru.c only), 16x8 3,892 B
# (grukit_gru.c's _s16 step and grukit_tables.c's sigmoid table; grukit_ops.c is no longer linked).
# tests/test_targets.py re-measures them when the toolchain is there.
KERNEL_CODE_BYTES = {"int8": 2_464, "16x8": 3_892}
# Per quantized op: int32 multiplier + int32 shift + zero points (TFLite-Micro keeps the same in its op data).
REQUANT_BYTES_PER_OP = 16


@dataclass(frozen=True)
class MemoryEstimate:
    """Flash (weights, biases, requant parameters, kernel code) and RAM (state, scratch, one input step)."""

    flash_bytes: int
    ram_bytes: int


def memory_estimate(model: GRUModel, scheme: str) -> MemoryEstimate:
    """Bytes a streaming C build needs: int8 weights; biases int32 (int8) or int64 (16x8); activations 1 byte
    (int8) or 2 (16x8); the scheme's kernel code (KERNEL_CODE_BYTES)."""
    if scheme not in ACTIVATION_BYTES:
        raise BadInputError(f"unknown scheme {scheme!r}; use one of {', '.join(ACTIVATION_BYTES)}")
    act, bias = ACTIVATION_BYTES[scheme], BIAS_BYTES[scheme]
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
        flash += model.head.W.size + bias * model.head.b.size + REQUANT_BYTES_PER_OP
        ram += model.head.out_features * 4  # int32 logits
    return MemoryEstimate(int(flash), int(ram))


# --- measured sizes ------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Figure:
    """A byte count for the budget and where it comes from: measured (a built object, a generated header)
    or estimated (the cost model above)."""

    value: int
    estimate: bool
    note: str


# The build whose flash grukit measures: the Cortex-M4 one (code size differs little between the M-profile
# cores with the DSP extension; other cores' flash figures say so).
MEASURED_MACHINE = "mps2-an386"
MEASURED_CORE = "cortex-m4"
# The functions an application of each scheme calls (the generated main.c: init, reset, step; output for a
# last-step model); linking keeps what they reach of firmware_ref's kernel sources and drops the rest.
KERNEL_ENTRY_POINTS = {scheme: tuple(f"grukit_model_{suffix}_{f}" for f in ("init", "reset", "step", "output"))
                       for scheme, suffix in (("int8", "s8"), ("16x8", "s16"))}


@dataclass(frozen=True)
class BuiltFlash:
    """Flash bytes (text + data) of a Cortex-M4 build: the generated model constants and the kernel code
    the scheme links, and the external symbols the kernel still needs (the C library's memcpy, ...: not
    counted)."""

    model_file: str
    model_bytes: int
    kernel_bytes: int
    kernel_sources: tuple[str, ...]
    entry_points: tuple[str, ...]
    undefined: tuple[str, ...]

    def note(self) -> str:
        """What was counted, for the report."""
        libc = f"; not counted: {', '.join(self.undefined)} (C library)" if self.undefined else ""
        return (f"measured: arm-none-eabi-size (text + data) of the -O2 Cortex-M4 build: model constants "
                f"{self.model_bytes:,} (the generated {self.model_file}) + kernel code {self.kernel_bytes:,} "
                f"(firmware_ref's {', '.join(Path(s).name for s in self.kernel_sources)} linked with --gc-sections "
                f"from {', '.join(self.entry_points)}: only the code these reach){libc}")


def _arm_size(path: Path) -> int:
    """text + data bytes of an object (Berkeley format of arm-none-eabi-size)."""
    from grukit.runtime.emulate import run_program

    text, data = run_program(["arm-none-eabi-size", str(path)], "arm-none-eabi-size").splitlines()[1].split()[:2]
    return int(text) + int(data)


def built_flash_bytes(c_model_file: Path, scheme: str) -> BuiltFlash | None:
    """Flash bytes of the generated model constants and of the kernel code ``scheme`` links, compiled with
    arm-none-eabi-gcc -O2 for the Cortex-M4; None when the ARM toolchain is missing.

    The kernel objects (every firmware_ref kernel source, built with -ffunction-sections) are partially
    linked (``ld -r --gc-sections``) keeping only what KERNEL_ENTRY_POINTS[scheme] reach, as the
    application's own link would: the other scheme's code is not counted."""
    import shutil
    import tempfile

    from grukit.runtime import emulate

    if scheme not in KERNEL_ENTRY_POINTS:
        raise BadInputError(f"unknown scheme {scheme!r}; use one of {', '.join(KERNEL_ENTRY_POINTS)}")
    tools = ("arm-none-eabi-gcc", "arm-none-eabi-ld", "arm-none-eabi-size", "arm-none-eabi-nm")
    if any(shutil.which(t) is None for t in tools):
        return None
    c_model_file = Path(c_model_file)
    flags = [f for f in emulate.arm_flags(MEASURED_MACHINE) if not f.startswith(("-Wl,", "--specs", "-nostartfiles"))]
    includes = [*emulate.include_flags(), f"-I{c_model_file.parent}"]
    sources = [c_model_file, *(emulate.firmware_dir() / s for s in emulate.KERNEL_SOURCES)]
    entry = KERNEL_ENTRY_POINTS[scheme]
    with tempfile.TemporaryDirectory() as tmp:
        objects = []
        for i, src in enumerate(sources):
            obj = Path(tmp) / f"{i}_{src.stem}.o"
            emulate.run_program(["arm-none-eabi-gcc", *flags, *includes, "-c", str(src), "-o", str(obj)],
                                f"arm-none-eabi-gcc -c {src.name}", emulate.CC_TIMEOUT_S)
            objects.append(obj)
        kernel = Path(tmp) / "kernel.o"
        emulate.run_program(["arm-none-eabi-ld", "-r", "--gc-sections", *(f"-u{e}" for e in entry),
                             *map(str, objects[1:]), "-o", str(kernel)], "arm-none-eabi-ld -r", emulate.CC_TIMEOUT_S)
        undefined = emulate.run_program(["arm-none-eabi-nm", "-u", str(kernel)], "arm-none-eabi-nm")
        return BuiltFlash(c_model_file.name, _arm_size(objects[0]), _arm_size(kernel), emulate.KERNEL_SOURCES, entry,
                          tuple(line.split()[-1] for line in undefined.splitlines() if line.strip()))


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
