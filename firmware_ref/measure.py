"""What the C kernel costs on a microcontroller, measured: instructions per step on QEMU's Cortex-M and RISC-V
machines, and flash bytes of a cross build for a machine's core.

- ``measure_step_instructions(qmodel, machine)``: instructions of one whole model step (every layer, every
  op, the head) on one of ``build.MACHINES`` (M4, M7, M33, M55, M0+, RV32), from SysTick (minstret on
  RISC-V) under ``-icount shift=6``
  (ticks x tick period / 2^6 ns, the period per machine: see ``build.MACHINES`` and firmware_ref/arm/board.h).
  An instruction count, not a cycle count: on a real M4 loads take 1-2 cycles, taken branches 2-4, plus
  flash wait states. None (and an EmulationUnavailable warning naming the reason) when the toolchain, QEMU
  or the machine is missing.
- ``built_flash_bytes(c_model_file, scheme, machine)``: text + data of the generated model constants and of
  the kernel code the scheme links, built for a machine's core (the Cortex-M4 by default).
"""

from __future__ import annotations

import shutil
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from grukit.core.scheme import SCHEMES, Scheme, scheme_named
from grukit.firmware_ref.build import (CC_TIMEOUT_S, GOLDEN_STREAM_SOURCE, KERNEL_SOURCES, MACHINES,
                                       MEASURE_DRIVER_SOURCE, RISCV, FirmwareBuildError, _sources, arm_flags, build_arm,
                                       emulation_unavailable_reason, firmware_dir, include_flags,
                                       instructions_from_ticks, run_program, run_qemu)
from grukit.firmware_ref.c_export import FORM_ONLY_DEFINE, export_c
from grukit.firmware_ref.golden import GoldenStream


class EmulationUnavailable(UserWarning):
    """The ARM toolchain, QEMU or the QEMU machine is missing: nothing was measured."""


def build_measure_image(qmodel, build_dir: Path, steps: int = 8, machine: str = "mps2-an386",
                        dsp: bool = True, seed: int = 0, sparse: bool = True, optimize: str = "speed",
                        profile: bool = False) -> Path:
    """Link the timing image for qmodel (random integer inputs, `steps` steps); returns the ELF path. The
    model's constants are in build_dir/model/grukit_model.c (sparse, optimize: as export_c's). profile: the
    kernel's phase marks on, the driver printing each step's element-wise ticks too (``run_measure_image``'s
    units); the marks cost instructions of their own, so a profiled step's total is not the kernel's."""
    gen = build_dir / "model"
    export_c(qmodel, gen, sparse=sparse, optimize=optimize)
    info = np.iinfo(qmodel.input_q.np_dtype)
    rng = np.random.default_rng(seed)
    x_q = rng.integers(info.min, info.max + 1, size=(steps, qmodel.layers[0].input_size))
    golden = GoldenStream()
    golden.word(1)
    golden.word(steps)
    golden.words_of(x_q)
    golden_c = golden.write_c(build_dir / "golden.c", "random inputs for one measured sequence")
    sources = [*_sources(*KERNEL_SOURCES, GOLDEN_STREAM_SOURCE, MEASURE_DRIVER_SOURCE), gen / "grukit_model.c",
               golden_c]
    defines = {"DRIVER_MEASURE": None, "GRUKIT_MODEL_HEADER": f'"{gen / "grukit_model.h"}"',
               FORM_ONLY_DEFINE[optimize]: None}
    if profile:
        defines.update({"DRIVER_PROFILE": None, "GRUKIT_PROFILE_MARK": "grukit_profile_mark"})
    return build_arm(sources, build_dir / "measure.elf", machine=machine, dsp=dsp, defines=defines)


def run_measure_image(elf: Path, machine: str = "mps2-an386", lines: str = "TICKS") -> list[float]:
    """Instructions of each measured step (the driver's TICKS lines of its step calls), or with lines="UNITS"
    (a profile image) those of each step's element-wise ops."""
    stdout = run_qemu(elf, machine)
    ticks = [int(line.split()[2]) for line in stdout.splitlines() if line.startswith(lines + " ")]
    return [instructions_from_ticks(t, machine) for t in ticks]


def measure_step_instructions(qmodel, machine: str = "mps2-an386", steps: int = 8, dsp: bool = True,
                              sparse: bool = True, optimize: str = "speed") -> float | None:
    """Mean instructions of one whole model step (all layers, all ops, the head) in QEMU, or None (with an
    EmulationUnavailable warning giving the reason, see emulation_unavailable_reason) when the toolchain,
    QEMU or the machine is absent. sparse, optimize: as export_c's (False: every product dense; "size": the
    kernel's size form)."""
    reason = emulation_unavailable_reason(machine)
    if reason is not None:
        warnings.warn(reason, EmulationUnavailable, stacklevel=2)
        return None
    with tempfile.TemporaryDirectory() as tmp:
        per_step = run_measure_image(build_measure_image(qmodel, Path(tmp), steps, machine, dsp, sparse=sparse,
                                                         optimize=optimize), machine)
    if len(per_step) != steps:
        raise FirmwareBuildError(f"expected {steps} timed steps from the emulator, got {len(per_step)}")
    return float(np.mean(per_step))


# --- flash of a build for a board's core ---------------------------------------------------------------------
# Flash is measured with each machine's compiler and flags (its core); the Cortex-M4 build is the default and
# stands in, labelled as an estimate, for a core no machine builds for.
MEASURED_MACHINE = "mps2-an386"
# The functions an application of each scheme calls (the generated main.c: init, reset, step; output for a
# last-step model); linking keeps what they reach of firmware_ref's kernel sources and drops the rest.
KERNEL_ENTRY_POINTS = {scheme: tuple(f"grukit_model_{scheme.c_suffix}_{f}" for f in ("init", "reset", "step", "output"))
                       for scheme in SCHEMES}
# Flags that only linking an image takes (the C library's start-up and I/O); compiling objects drops them.
LINK_ONLY_FLAGS = ("-Wl,", "--specs=rdimon.specs", "-nostartfiles", "--oslib", "--crt0")


@dataclass(frozen=True)
class BuiltFlash:
    """Flash bytes (text + data) of a build for one machine's core: the generated model constants and the
    kernel code the scheme links, and the external symbols the kernel still needs (the C library's memcpy,
    Armv6-M's 64-bit multiply helper, ...: not counted)."""

    model_file: str
    model_bytes: int
    kernel_bytes: int
    kernel_sources: tuple[str, ...]
    entry_points: tuple[str, ...]
    undefined: tuple[str, ...]
    machine: str = MEASURED_MACHINE

    @property
    def core(self) -> str:
        return MACHINES[self.machine].cpu

    def note(self) -> str:
        """What was counted, for the report."""
        libc = (f"; not counted: {', '.join(self.undefined)} (C library and compiler runtime)"
                if self.undefined else "")
        return (f"measured: {_tool(self.machine, 'size')} (text + data) of the -O2 {self.core} build: model "
                f"constants {self.model_bytes:,} (the generated {self.model_file}) + kernel code "
                f"{self.kernel_bytes:,} (firmware_ref's {', '.join(Path(s).name for s in self.kernel_sources)} "
                f"linked with --gc-sections from {', '.join(self.entry_points)}: only the code these reach){libc}")


def _tool(machine: str, name: str) -> str:
    """The binutils program `name` of `machine`'s cross toolchain (arm-none-eabi-size, riscv64-unknown-elf-ld)."""
    return MACHINES[machine].compiler.removesuffix("gcc") + name


def _size(path: Path, machine: str) -> int:
    """text + data bytes of an object (Berkeley format of the toolchain's size)."""
    text, data = run_program([_tool(machine, "size"), str(path)], "size").splitlines()[1].split()[:2]
    return int(text) + int(data)


def built_flash_bytes(c_model_file: Path, scheme: str | Scheme, machine: str = MEASURED_MACHINE,
                      optimize: str = "speed") -> BuiltFlash | None:
    """Flash bytes of the generated model constants and of the kernel code ``scheme`` links, compiled -O2 with
    ``machine``'s cross compiler and flags (the Cortex-M4 by default); None when that toolchain is missing.

    The kernel objects (every firmware_ref kernel source, built with -ffunction-sections) are partially
    linked (``ld -r --gc-sections``) keeping only what KERNEL_ENTRY_POINTS[scheme] reach, as the
    application's own link would: the other scheme's code is not counted, nor the other form's (optimize: the
    model's form; the kernel is compiled with FORM_ONLY_DEFINE[optimize], as the generated library builds it)."""
    scheme = scheme_named(scheme)
    gcc = MACHINES[machine].compiler
    if any(shutil.which(t) is None for t in (gcc, *(_tool(machine, n) for n in ("ld", "size", "nm")))):
        return None
    c_model_file = Path(c_model_file)
    flags = [f for f in arm_flags(machine) if not f.startswith(LINK_ONLY_FLAGS)]
    includes = [*include_flags(), f"-I{c_model_file.parent}"]
    sources = [c_model_file, *(firmware_dir() / s for s in KERNEL_SOURCES)]
    entry = KERNEL_ENTRY_POINTS[scheme]
    with tempfile.TemporaryDirectory() as tmp:
        objects = []
        for i, src in enumerate(sources):
            obj = Path(tmp) / f"{i}_{src.stem}.o"
            run_program([gcc, *flags, *includes, f"-D{FORM_ONLY_DEFINE[optimize]}", "-c", str(src), "-o", str(obj)],
                        f"{gcc} -c {src.name}", CC_TIMEOUT_S)
            objects.append(obj)
        kernel = Path(tmp) / "kernel.o"
        emulation = ["-melf32lriscv"] if MACHINES[machine].arch == RISCV else []  # its ld defaults to 64-bit
        run_program([_tool(machine, "ld"), *emulation, "-r", "--gc-sections", *(f"-u{e}" for e in entry),
                     *map(str, objects[1:]), "-o", str(kernel)], "ld -r", CC_TIMEOUT_S)
        undefined = run_program([_tool(machine, "nm"), "-u", str(kernel)], "nm")
        return BuiltFlash(c_model_file.name, _size(objects[0], machine), _size(kernel, machine), KERNEL_SOURCES,
                          entry, tuple(line.split()[-1] for line in undefined.splitlines() if line.strip()), machine)
