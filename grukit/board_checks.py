"""Flash, RAM and latency of a deployed model on each board: measured where the build and the emulator
allow (``grukit.firmware_ref.measure``), else the cost model (``grukit.runtime.cost_model``), checked against
the board (``grukit.runtime.budget``). Every figure says which it is."""

from __future__ import annotations

import tempfile
from pathlib import Path

from grukit.core.errors import UnsupportedModelError
from grukit.core.model import GRUModel
from grukit.firmware_ref.c_export import buffer_sizes, constant_bytes, export_c
from grukit.firmware_ref import build
from grukit.firmware_ref.kernel import prepare_model
from grukit.firmware_ref.measure import MEASURED_MACHINE, built_flash_bytes, measure_step_instructions
from grukit.report import Report
from grukit.runtime.budget import Figure, check_budget
from grukit.runtime.cost_model import (COST_MODEL_SOURCE, KERNEL_CODE_BYTES, SIZE_FORM_KERNEL_CODE_BYTES,
                                       InstructionCount, cost_model_instructions, memory_estimate)
from grukit.runtime.targets import Target

BIDIRECTIONAL_REASON = ("the model has a bidirectional GRU layer: a streaming device sees each sample once, so "
                        "there is no integer model, step model, TFLite or C for it")


def require_c_kernel_limits(qmodel, optimize: str = "speed") -> None:
    """Refuse, naming the limit, a quantized model the C kernel cannot run exactly: its Prepare
    (``grukit.firmware_ref.kernel.prepare_model``, milliseconds) checks every bound its integer arithmetic
    relies on (the int8 packed products' accumulators, requantization shifts, the ADD / SUB term tables).
    Called right after quantization, before the exports and the evaluation, so a model beyond these limits
    costs seconds, not the minutes a large model's checks take. optimize: the form of the constants deployed."""
    try:
        prepare_model(qmodel, optimize=optimize)
    except UnsupportedModelError as e:
        raise UnsupportedModelError(
            f"beyond the C kernel's limits: {e}. These bounds keep the device's integers exact "
            "(firmware_ref/README.md); for large products with large weights --scheme 16x8 has 64-bit "
            "accumulators, and pruning (--prune) makes the products smaller") from None


def emulated_instructions(qmodel, machine: str | None, optimize: str = "speed") -> InstructionCount | str:
    """Instructions of one whole step of the C kernel counted in QEMU on ``machine``
    (``grukit.firmware_ref.measure.measure_step_instructions``), or a string saying why it cannot be
    measured here (no emulated machine for the core, missing packages). optimize: the C constants' form."""
    if machine is None:
        return "no QEMU machine emulates this core"
    if machine not in build.MACHINES:
        return f"grukit has no board support for QEMU machine {machine!r} (it has {', '.join(build.MACHINES)})"
    reason = build.emulation_unavailable_reason(machine)
    if reason is not None:
        return reason
    try:
        count = measure_step_instructions(qmodel, machine, optimize=optimize)
    except build.FirmwareBuildError as e:
        if "overflowed" not in str(e):
            raise
        return f"the model's image does not fit the memory of QEMU's {machine} ({_overflow(str(e))})"
    if count is None:  # measure_step_instructions re-checks the tools; they went missing in between
        return "cross toolchain or QEMU missing"
    source = (f"QEMU {machine} instruction count, measured (whole step, all layers and the head; a last-step "
              "head is counted at every step, an upper bound)")
    return InstructionCount(count, 0, source, measured=True)


def _overflow(linker_output: str) -> str:
    """The linker's "region `CODE' overflowed by N bytes" lines, joined."""
    lines = [line.split("ld: ")[-1].strip() for line in linker_output.splitlines() if "overflowed" in line]
    return "; ".join(dict.fromkeys(lines))


def _ram(model: GRUModel, qmodel, scheme) -> Figure:
    if qmodel is None:
        memory = memory_estimate(model, scheme)
        return Figure(memory.ram_bytes, True, "cost model (no integer model: " + BIDIRECTIONAL_REASON + ")")
    state, scratch = buffer_sizes(qmodel)
    io = qmodel.scheme.activation_bytes * (model.input_size + qmodel.output_size)
    return Figure(state + scratch + io, False,
                  f"from the generated C: state {state:,} + scratch {scratch:,} + one input step and the "
                  f"output {io:,} bytes (the caller's stack not counted)")


def _flash(model: GRUModel, qmodel, scheme, built, board: Target, optimize: str = "speed") -> Figure:
    """Measured with the board's own core's build where there is one (its QEMU machine's compiler and flags),
    else the Cortex-M4 build's figure as an estimate, else the cost model."""
    if qmodel is not None and built is not None:
        on_core = built.machine == board.qemu_machine
        return Figure(built.model_bytes + built.kernel_bytes, not on_core,
                      built.note() + ("" if on_core else f"; an estimate for {board.core}"))
    if qmodel is not None:
        c_bytes = constant_bytes(qmodel, optimize=optimize)
        code = (SIZE_FORM_KERNEL_CODE_BYTES if optimize == "size" else KERNEL_CODE_BYTES)[qmodel.scheme]
        return Figure(c_bytes + code, True,
                      f"model constants {c_bytes:,} counted in the generated C ({optimize} form) + {qmodel.scheme} "
                      f"kernel code {code:,} estimated (grukit.runtime.cost_model.KERNEL_CODE_BYTES; no ARM "
                      "toolchain to build it)")
    return Figure(memory_estimate(model, scheme).flash_bytes, True,
                  f"cost model ({scheme} weights and biases, requantization parameters, kernel code)")


def check_boards(model: GRUModel, qmodel, c_model_file: Path | None, boards: list[Target], T: int,
                 max_latency_ms: float | None, report: Report, advance) -> dict[str, tuple[Figure, InstructionCount]]:
    """Append each board's flash, RAM and latency lines to ``report.targets`` and its instruction count to
    ``report.latency`` (the C constants in ``report.optimize``'s form); ``advance(board name)`` after each
    board. Returns {board: (flash, instructions)}."""
    ram = _ram(model, qmodel, report.scheme)
    figures = device_figures(model, qmodel, c_model_file, boards, report.scheme, report.optimize)
    for board in boards:
        flash, count = figures[board.name]
        report.latency[board.name] = {"measured": count.measured, "instructions_per_step": count.per_step,
                                      "source": count.source}
        for check in check_budget(board, flash, ram, count.per_step, T, count.per_sequence, max_latency_ms,
                                  count.source):
            report.targets.append({"name": check.name, "limit": check.limit, "value": check.value,
                                   "unit": check.unit, "pass": check.passed, "estimate": check.estimate,
                                   "note": check.note})
        advance(board.name)
    return figures


def device_figures(model: GRUModel, qmodel, c_model_file: Path | None, boards: list[Target], scheme: str,
                   optimize: str = "speed") -> dict[str, tuple[Figure, InstructionCount]]:
    """{board: (flash, instructions)} of a model on each board: measured where the cross toolchain and QEMU
    are there (one build and one emulated run per QEMU machine: the board's core), else the Cortex-M4 build's
    flash as an estimate, or the cost model. optimize: the form c_model_file holds."""
    builds: dict[str, object] = {}

    def built_for(machine: str):
        if machine not in builds:
            builds[machine] = (built_flash_bytes(c_model_file, qmodel.scheme, machine, optimize)
                               if qmodel is not None else None)
        return builds[machine]

    counts: dict[str | None, object] = {}
    out = {}
    for board in boards:
        machine = board.qemu_machine
        built = (machine in build.MACHINES and built_for(machine)) or built_for(MEASURED_MACHINE)
        if machine not in counts:
            counts[machine] = (emulated_instructions(qmodel, machine, optimize) if qmodel is not None
                               else "no integer model to run")
        count = counts[machine]
        if isinstance(count, str):
            fallback = cost_model_instructions(model)
            count = InstructionCount(fallback.per_step, fallback.per_sequence,
                                     f"{COST_MODEL_SOURCE}, not measured: {count}")
        out[board.name] = (_flash(model, qmodel, scheme, built, board, optimize), count)
    return out


def _figures_of_generated(model: GRUModel, qmodel, boards: list[Target], scheme: str, optimize: str
                          ) -> dict[str, tuple[Figure, InstructionCount]]:
    """``device_figures`` of qmodel's C in the ``optimize`` form, generated into a temporary folder."""
    with tempfile.TemporaryDirectory() as tmp:
        c_model_file = next(p for p in export_c(qmodel, tmp, optimize=optimize)
                            if p.suffix == ".c" and p.name != "main.c")
        return device_figures(model, qmodel, c_model_file, boards, scheme, optimize)


def compare_forms(model: GRUModel, qmodel, boards: list[Target], figures: dict, report: Report) -> None:
    """report.forms: flash and instructions per step of the C constants' two forms (--optimize speed / size)
    on each board, the deployed form's from ``figures``, the other's built and measured the same way."""
    chosen = report.optimize
    other = {"speed": "size", "size": "speed"}[chosen]
    if qmodel is None:
        report.forms = {"deployed": chosen, "boards": {}, "note": BIDIRECTIONAL_REASON}
        return
    try:
        other_figures = _figures_of_generated(model, qmodel, boards, report.scheme, other)
    except UnsupportedModelError as e:  # the deployed form passed its checks; the other may not
        report.forms = {"deployed": chosen, "boards": {}, "note": f"the {other} form is not available: {e}"}
        return
    report.forms = {"deployed": chosen, "note": "", "boards": {
        board.name: {form: {"flash_bytes": flash.value, "flash_estimate": flash.estimate,
                            "instructions_per_step": count.per_step, "measured": count.measured}
                     for form, (flash, count) in ((chosen, figures[board.name]), (other, other_figures[board.name]))}
        for board in boards}}


def unpruned_device_figures(original: GRUModel, original_q, boards: list[Target], scheme: str,
                            optimize: str = "speed") -> dict[str, tuple[Figure, InstructionCount]]:
    """``device_figures`` of the model before pruning (its C generated into a temporary folder)."""
    return _figures_of_generated(original, original_q, boards, scheme, optimize)
