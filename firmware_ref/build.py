"""Build and run grukit's C kernel from Python: compilers, flags, QEMU's Cortex-M machines.

- ``firmware_dir()``: where the C sources are: this package's own directory (firmware_ref/ in the
  repository, grukit/firmware_ref in an installed wheel), or $GRUKIT_FIRMWARE_DIR.
- ``toolchain_status()``: which of the host cc, arm-none-eabi-gcc (+ newlib) and qemu-system-arm are there,
  and the Debian packages that provide what is missing; ``emulation_unavailable_reason`` says why a machine
  cannot be used.
- ``build_host`` / ``build_arm``: compile sources strictly (-std=c99 -Wall -Wextra -Wconversion -Werror) for
  the host or as a bare-metal image for one of ``MACHINES`` (M4, M7, M33, M55); ``run_program`` /
  ``run_qemu`` run them; ``instructions_from_ticks`` converts SysTick ticks under ``-icount`` to instructions.

One mechanism for every C build: the host runner (``host``), the step counter (``measure``) and the tests.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from grukit.core.errors import BadInputError

FIRMWARE_ENV = "GRUKIT_FIRMWARE_DIR"
INCLUDE_DIRS = ("include", "src", "test", "arm")
KERNEL_SOURCES = ("src/grukit_gru.c", "src/grukit_tables.c")
KERNEL_HEADERS = ("include/grukit_gru.h", "src/grukit_tables.h")
GOLDEN_STREAM_SOURCE = "test/golden_stream.c"
ARM_BOARD_SOURCES = ("arm/startup.c", "arm/board.c")
HOST_RUNNER_SOURCE = "test/host_runner.c"
MEASURE_DRIVER_SOURCE = "test/gru_driver.c"

STRICT_CFLAGS = ("-std=c99", "-Wall", "-Wextra", "-Wconversion", "-Werror", "-O2")
SANITIZE_CFLAGS = ("-fsanitize=undefined,address", "-fno-sanitize-recover=all", "-g")
# libm: a generated header's <name>_quantize_input calls C99 round() (the example main.c uses it).
HOST_LIBS = ("-lm",)
ARM_COMMON_FLAGS = (
    "-mthumb",
    "-mfloat-abi=hard",
    "--specs=rdimon.specs",  # newlib + semihosting: printf goes to QEMU's stdout
    "-nostartfiles",  # firmware_ref/arm/startup.c is the reset handler
    "-ffunction-sections",
    "-Wl,--gc-sections",
)
ICOUNT_SHIFT = 6  # must match BOARD_ICOUNT_SHIFT in firmware_ref/arm/board.h
CC_TIMEOUT_S = 120
RUN_TIMEOUT_S = 120


@dataclass(frozen=True)
class Machine:
    """A QEMU machine grukit can build images for: its core, FPU (-mfpu), linker script (in firmware_ref/arm,
    the machine's memory map) and the processor clock SysTick counts, which sets ticks per instruction under
    -icount."""

    cpu: str
    fpu: str
    linker_script: str
    systick_hz: int


# Each machine's SysTick rate was checked on qemu-system-arm 7.2 with a counted loop (200,000 iterations of
# 3 ADDS + SUBS + BNE = 1,000,000 instructions, with -icount shift=6 = 64 ns per instruction): AN386 1,600,000
# ticks (40 ns per tick, 25 MHz), AN505 1,280,001 (50 ns, 20 MHz), AN547 2,048,000 (31.25 ns, 32 MHz); the
# rates are QEMU's sysclk for these FPGA images (hw/arm/mps2.c, hw/arm/mps2-tz.c).
MACHINES = {
    "mps2-an386": Machine("cortex-m4", "fpv4-sp-d16", "mps2_an386.ld", 25_000_000),
    # AN500 (Cortex-M7) has AN386's memory map and 25 MHz SysTick clock: the same image layout and counter.
    "mps2-an500": Machine("cortex-m7", "fpv5-d16", "mps2_an386.ld", 25_000_000),
    # AN505 (Cortex-M33, single-precision FPU, DSP): Secure SSRAM aliases, vector table at 0x10000000.
    "mps2-an505": Machine("cortex-m33", "fpv5-sp-d16", "mps2_an505.ld", 20_000_000),
    # AN547 (Cortex-M55, FPU and MVE, DSP): ITCM/DTCM; -mfpu=auto takes the FPU and MVE that -mcpu implies.
    "mps3-an547": Machine("cortex-m55", "auto", "mps3_an547.ld", 32_000_000),
}


class FirmwareBuildError(RuntimeError):
    """A compiler or a C program grukit runs failed; the message holds the command and its output."""


# ---------------------------------------------------------------- where things are


def firmware_dir() -> Path:
    """The directory holding the C kernel's sources: $GRUKIT_FIRMWARE_DIR when set, else this package's own
    directory. Raises BadInputError when it has no include/grukit_gru.h (an explicit setting is never
    second-guessed)."""
    override = os.environ.get(FIRMWARE_ENV)
    path = Path(override) if override else Path(__file__).resolve().parent
    if not (path / "include" / "grukit_gru.h").is_file():
        where = f"${FIRMWARE_ENV}={override}" if override else str(path)
        raise BadInputError(
            f"cannot find grukit's C sources (include/grukit_gru.h) in {where}: reinstall grukit, or set "
            f"{FIRMWARE_ENV} to a firmware_ref/ directory")
    return path


def _sources(*relative: str) -> list[Path]:
    root = firmware_dir()
    return [root / r for r in relative]


def include_flags() -> list[str]:
    """-I flags for firmware_ref's include, src, test and arm directories."""
    return [f"-I{d}" for d in _sources(*INCLUDE_DIRS)]


# ---------------------------------------------------------------- tools


def host_cc() -> str | None:
    """The host C compiler ($CC is not consulted: the flags here are GCC/Clang flags)."""
    return shutil.which("cc") or shutil.which("gcc") or shutil.which("clang")


def toolchain_status() -> dict:
    """What is installed for building and running the C kernel.

    Keys: ``host_cc`` (path or None), ``arm_none_eabi_gcc`` (path or None), ``newlib`` (bool: rdimon.specs
    found), ``qemu_system_arm`` (path or None), ``host_ok`` (run_c_host can work), ``arm_ok``
    (measure_step_instructions can work), ``missing`` (Debian packages to install, [] when complete)."""
    cc = host_cc()
    gcc = shutil.which("arm-none-eabi-gcc")
    newlib = False
    if gcc is not None:
        specs = subprocess.run([gcc, "-print-file-name=rdimon.specs"], capture_output=True, text=True)
        newlib = Path(specs.stdout.strip()).is_file()
    qemu = shutil.which("qemu-system-arm")
    missing = [package for package, present in (("gcc", cc), ("gcc-arm-none-eabi", gcc),
                                                ("libnewlib-arm-none-eabi", gcc is None or newlib),
                                                ("qemu-system-arm", qemu)) if not present]
    return {"host_cc": cc, "arm_none_eabi_gcc": gcc, "newlib": newlib, "qemu_system_arm": qemu,
            "host_ok": cc is not None, "arm_ok": gcc is not None and newlib and qemu is not None,
            "missing": missing}


def missing_tools() -> list[str]:
    """Debian packages still needed to build for and emulate Cortex-M (empty when everything is there)."""
    return [p for p in toolchain_status()["missing"] if p != "gcc"]


@lru_cache(maxsize=None)
def _qemu_machines() -> frozenset[str]:
    qemu = shutil.which("qemu-system-arm")
    if qemu is None:
        return frozenset()
    done = subprocess.run([qemu, "-machine", "help"], capture_output=True, text=True, timeout=RUN_TIMEOUT_S)
    return frozenset(line.split()[0] for line in done.stdout.splitlines()[1:] if line.strip())


def qemu_machine_supported(machine: str) -> bool:
    """Whether grukit can build for `machine` (see MACHINES) and the installed qemu-system-arm has it."""
    return machine in MACHINES and machine in _qemu_machines()


def emulation_unavailable_reason(machine: str = "mps2-an386") -> str | None:
    """Why ``machine`` cannot be built for and emulated here, or None if it can. Raises BadInputError for a
    machine name that is none of MACHINES."""
    _machine(machine)
    missing = missing_tools()
    if missing:
        return f"cannot measure on {machine}: install Debian packages {', '.join(missing)}"
    if not qemu_machine_supported(machine):
        return f"the installed qemu-system-arm has no machine {machine!r}"
    return None


def _machine(machine: str) -> Machine:
    if machine not in MACHINES:
        raise BadInputError(f"machine {machine!r} is not supported; use one of {tuple(MACHINES)}")
    return MACHINES[machine]


def arm_flags(machine: str = "mps2-an386", dsp: bool = True) -> list[str]:
    """Compiler flags (strict warnings included) for the machine's core; dsp=False defines
    GRUKIT_PORTABLE_ONLY so the portable C loops run even on a core with the DSP extension."""
    m = _machine(machine)
    return [*STRICT_CFLAGS, f"-mcpu={m.cpu}", f"-mfpu={m.fpu}", *ARM_COMMON_FLAGS,
            *([] if dsp else ["-DGRUKIT_PORTABLE_ONLY"])]


# ---------------------------------------------------------------- building and running


def run_program(cmd: list[str], what: str, timeout_s: float = RUN_TIMEOUT_S, stdin: bytes | None = None,
                binary: bool = False) -> str | bytes:
    """Run a command; its stdout (bytes if binary), or FirmwareBuildError with its output on failure."""
    try:
        done = subprocess.run([str(c) for c in cmd], input=stdin, capture_output=True, timeout=timeout_s)
    except subprocess.TimeoutExpired as exc:
        raise FirmwareBuildError(f"{what} timed out after {timeout_s} s: {' '.join(map(str, cmd))}") from exc
    if done.returncode != 0:
        out = done.stdout[-2000:].decode(errors="replace") if not binary else ""
        tail = (out + done.stderr[-4000:].decode(errors="replace")).strip()
        raise FirmwareBuildError(f"{what} exited with status {done.returncode}: {' '.join(map(str, cmd))}\n{tail}")
    return done.stdout if binary else done.stdout.decode()


def _defines(defines: dict[str, object] | None) -> list[str]:
    return [f"-D{k}" if v is None else f"-D{k}={v}" for k, v in (defines or {}).items()]


def build_host(sources: list[Path], out: Path, *, sanitize: bool = False,
               defines: dict[str, object] | None = None) -> Path:
    """Compile exactly `sources` with the host cc, strictly (-std=c99 -Wall -Wextra -Wconversion -Werror
    -O2, optionally UBSan + ASan) and firmware_ref's include directories, linked with libm; returns the
    executable."""
    cc = host_cc()
    if cc is None:
        raise FirmwareBuildError("no host C compiler (cc/gcc/clang): install Debian package 'gcc'")
    cmd = [cc, *STRICT_CFLAGS, *(SANITIZE_CFLAGS if sanitize else ()), *include_flags(), *_defines(defines)]
    run_program([*cmd, *map(str, sources), "-o", str(out), *HOST_LIBS], "host cc", CC_TIMEOUT_S)
    return out


def build_arm(sources: list[Path], out: Path, *, machine: str = "mps2-an386", dsp: bool = True,
              defines: dict[str, object] | None = None) -> Path:
    """Link a bare-metal image of `sources` plus firmware_ref/arm's board support for `machine`; returns
    the ELF. Golden vectors are compiled in (GOLDEN_EMBEDDED)."""
    m = _machine(machine)
    arm_dir = firmware_dir() / "arm"
    # -L: each machine's script INCLUDEs the shared cortex_m_sections.ld from the same directory.
    cmd = ["arm-none-eabi-gcc", *arm_flags(machine, dsp), f"-L{arm_dir}", "-T", str(arm_dir / m.linker_script),
           *include_flags()]
    cmd += _defines({"GOLDEN_EMBEDDED": None, "BOARD_SYSTICK_HZ": f"{m.systick_hz}u", **(defines or {})})
    cmd += [str(s) for s in (*_sources(*ARM_BOARD_SOURCES), *sources)]
    run_program([*cmd, "-o", str(out)], "arm-none-eabi-gcc", CC_TIMEOUT_S)
    return out


def run_qemu(elf: Path, machine: str = "mps2-an386", timeout_s: float = RUN_TIMEOUT_S) -> str:
    """Run an image on QEMU's `machine` with semihosting and -icount; its stdout (exit status checked)."""
    _machine(machine)
    cmd = ["qemu-system-arm", "-M", machine, "-nographic", "-semihosting-config", "enable=on,target=native",
           "-icount", f"shift={ICOUNT_SHIFT}", "-kernel", str(elf)]
    return run_program(cmd, f"qemu {machine} {Path(elf).name}", timeout_s)


def instructions_from_ticks(ticks: int, machine: str = "mps2-an386") -> float:
    """SysTick ticks on `machine` to instructions under -icount shift=ICOUNT_SHIFT: each instruction advances
    the virtual clock 2^ICOUNT_SHIFT ns, each tick is 1e9 / systick_hz ns (40 ns on AN386)."""
    return ticks * 1e9 / (_machine(machine).systick_hz * 2**ICOUNT_SHIFT)


