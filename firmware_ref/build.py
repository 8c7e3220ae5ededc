"""Build and run grukit's C kernel from Python: compilers, flags, QEMU's Cortex-M and RISC-V machines.

- ``firmware_dir()``: where the C sources are: this package's own directory (firmware_ref/ in the
  repository, grukit/firmware_ref in an installed wheel), or $GRUKIT_FIRMWARE_DIR.
- ``toolchain_status()``: which of the host cc, arm-none-eabi-gcc (+ newlib), qemu-system-arm,
  riscv64-unknown-elf-gcc (+ picolibc) and qemu-system-riscv32 are there, and the Debian packages that
  provide what is missing; ``emulation_unavailable_reason`` says why a machine cannot be used.
- ``build_host`` / ``build_arm``: compile sources strictly (-std=c99 -Wall -Wextra -Wconversion -Werror) for
  the host or as a bare-metal image for one of ``MACHINES`` (Cortex-M4, M7, M33, M55, M0+ and RV32);
  ``run_program`` / ``run_qemu`` run them; ``instructions_from_ticks`` converts counter ticks under
  ``-icount`` to instructions.

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
INCLUDE_DIRS = ("include", "src", "test", "arm")  # arm/board.h is every board's API
KERNEL_SOURCES = ("src/grukit_gru.c", "src/grukit_tables.c")
KERNEL_HEADERS = ("include/grukit_gru.h", "src/grukit_tables.h")
GOLDEN_STREAM_SOURCE = "test/golden_stream.c"
ARM_BOARD_SOURCES = ("arm/startup.c", "arm/board.c")
RISCV_BOARD_SOURCES = ("riscv/board.c",)
HOST_RUNNER_SOURCE = "test/host_runner.c"
MEASURE_DRIVER_SOURCE = "test/gru_driver.c"

STRICT_CFLAGS = ("-std=c99", "-Wall", "-Wextra", "-Wconversion", "-Werror", "-O2")
SANITIZE_CFLAGS = ("-fsanitize=undefined,address", "-fno-sanitize-recover=all", "-g")
# libm: a generated header's <name>_quantize_input calls C99 round() (the example main.c uses it).
HOST_LIBS = ("-lm",)
ARM_COMMON_FLAGS = (
    "-mthumb",
    "--specs=rdimon.specs",  # newlib + semihosting: printf goes to QEMU's stdout
    "-nostartfiles",  # firmware_ref/arm/startup.c is the reset handler
    "-ffunction-sections",
    "-Wl,--gc-sections",
)
# picolibc with its semihosting crt0 and I/O: printf reaches QEMU (on its stderr, see run_qemu), main's status
# is QEMU's. Its linker script places the image by these symbols: QEMU virt's RAM at 0x80000000 (8 MB used).
RISCV_COMMON_FLAGS = (
    "--specs=picolibc.specs",
    "--oslib=semihost",
    "--crt0=semihost",
    "-ffunction-sections",
    "-Wl,--gc-sections",
    "-Wl,--defsym=__flash=0x80000000", "-Wl,--defsym=__flash_size=0x400000",
    "-Wl,--defsym=__ram=0x80400000", "-Wl,--defsym=__ram_size=0x400000",
)
ICOUNT_SHIFT = 6  # must match BOARD_ICOUNT_SHIFT in firmware_ref/arm/board.h
CC_TIMEOUT_S = 120
RUN_TIMEOUT_S = 120
ARM, RISCV = "arm", "riscv"


@dataclass(frozen=True)
class Machine:
    """A QEMU machine grukit can build images for: its architecture, core (-mcpu; -march on RISC-V), FPU
    (-mfpu, None for a core without one, which then takes the soft-float ABI), linker script (in
    firmware_ref/arm, the machine's memory map) and the rate of the counter the image reads, which sets
    counts per instruction under -icount: SysTick's processor clock on Arm; on RISC-V, minstret, which QEMU
    under -icount reads as the virtual clock in ns (a 1 GHz counter)."""

    cpu: str
    fpu: str | None
    linker_script: str | None
    systick_hz: int
    arch: str = ARM

    @property
    def compiler(self) -> str:
        return "arm-none-eabi-gcc" if self.arch == ARM else "riscv64-unknown-elf-gcc"

    @property
    def qemu(self) -> str:
        return "qemu-system-arm" if self.arch == ARM else "qemu-system-riscv32"


# Each machine's counter rate was checked on QEMU 7.2 with a counted loop (200,000 iterations of 3 adds, a
# subtract and a branch = 1,000,000 instructions, with -icount shift=6 = 64 ns per instruction): AN386
# 1,600,000 ticks (40 ns per tick, 25 MHz), AN505 1,280,001 (50 ns, 20 MHz), AN547 2,048,000 (31.25 ns,
# 32 MHz), micro:bit 1,024,000 (62.5 ns, 16 MHz, the nRF51's clock), RISC-V virt minstret 64,000,256 (the
# virtual clock in ns, 64 per instruction; the 256 are the loop's four set-up instructions); the Arm rates are
# QEMU's sysclk for these machines (hw/arm/mps2.c, hw/arm/mps2-tz.c, hw/arm/nrf51_soc.c).
MACHINES = {
    "mps2-an386": Machine("cortex-m4", "fpv4-sp-d16", "mps2_an386.ld", 25_000_000),
    # AN500 (Cortex-M7) has AN386's memory map and 25 MHz SysTick clock: the same image layout and counter.
    "mps2-an500": Machine("cortex-m7", "fpv5-d16", "mps2_an386.ld", 25_000_000),
    # AN505 (Cortex-M33, single-precision FPU, DSP): Secure SSRAM aliases, vector table at 0x10000000.
    "mps2-an505": Machine("cortex-m33", "fpv5-sp-d16", "mps2_an505.ld", 20_000_000),
    # AN547 (Cortex-M55, FPU and MVE, DSP): ITCM/DTCM; -mfpu=auto takes the FPU and MVE that -mcpu implies.
    "mps3-an547": Machine("cortex-m55", "auto", "mps3_an547.ld", 32_000_000),
    # micro:bit (nRF51, Cortex-M0, ARMv6-M: the M0+'s instruction set; the image is built for the M0+): no
    # FPU, no DSP; 256 KB flash, 16 KB RAM.
    "microbit": Machine("cortex-m0plus", None, "microbit.ld", 16_000_000),
    # RISC-V virt, 32-bit: RV32IMAC code (picolibc's nearest multilib to the ESP32-C3's RV32IMC; grukit's C
    # uses no atomics, so its code is RV32IMC's).
    "virt": Machine("rv32imac", None, None, 1_000_000_000, RISCV),
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
    found), ``qemu_system_arm`` (path or None), ``riscv64_unknown_elf_gcc``, ``picolibc`` (bool),
    ``qemu_system_riscv32``, ``host_ok`` (run_c_host can work), ``arm_ok`` (measure_step_instructions can work
    on the Arm machines), ``riscv_ok`` (and on RISC-V), ``missing`` (Debian packages the Arm machines need),
    ``missing_riscv`` (those RISC-V needs), [] when complete."""
    cc = host_cc()
    gcc, rv_gcc = shutil.which("arm-none-eabi-gcc"), shutil.which("riscv64-unknown-elf-gcc")
    newlib, picolibc = _has_file(gcc, "rdimon.specs"), _has_file(rv_gcc, "picolibc.specs")
    qemu, rv_qemu = shutil.which("qemu-system-arm"), shutil.which("qemu-system-riscv32")
    missing = [package for package, present in (("gcc", cc), ("gcc-arm-none-eabi", gcc),
                                                ("libnewlib-arm-none-eabi", gcc is None or newlib),
                                                ("qemu-system-arm", qemu)) if not present]
    missing_riscv = [package for package, present in (("gcc-riscv64-unknown-elf", rv_gcc),
                                                      ("picolibc-riscv64-unknown-elf", rv_gcc is None or picolibc),
                                                      ("qemu-system-misc", rv_qemu)) if not present]
    return {"host_cc": cc, "arm_none_eabi_gcc": gcc, "newlib": newlib, "qemu_system_arm": qemu,
            "riscv64_unknown_elf_gcc": rv_gcc, "picolibc": picolibc, "qemu_system_riscv32": rv_qemu,
            "host_ok": cc is not None, "arm_ok": gcc is not None and newlib and qemu is not None,
            "riscv_ok": not missing_riscv, "missing": missing, "missing_riscv": missing_riscv}


def _has_file(gcc: str | None, name: str) -> bool:
    """Whether the cross compiler `gcc` finds `name` (a specs file of its C library)."""
    if gcc is None:
        return False
    found = subprocess.run([gcc, f"-print-file-name={name}"], capture_output=True, text=True)
    return Path(found.stdout.strip()).is_file()


def missing_tools(arch: str = ARM) -> list[str]:
    """Debian packages still needed to build for and emulate `arch`'s machines (empty when all are there)."""
    status = toolchain_status()
    return [p for p in status["missing"] if p != "gcc"] if arch == ARM else status["missing_riscv"]


@lru_cache(maxsize=None)
def _qemu_machines(qemu_binary: str) -> frozenset[str]:
    qemu = shutil.which(qemu_binary)
    if qemu is None:
        return frozenset()
    done = subprocess.run([qemu, "-machine", "help"], capture_output=True, text=True, timeout=RUN_TIMEOUT_S)
    return frozenset(line.split()[0] for line in done.stdout.splitlines()[1:] if line.strip())


def qemu_machine_supported(machine: str) -> bool:
    """Whether grukit can build for `machine` (see MACHINES) and the installed QEMU has it."""
    return machine in MACHINES and machine in _qemu_machines(MACHINES[machine].qemu)


def emulation_unavailable_reason(machine: str = "mps2-an386") -> str | None:
    """Why ``machine`` cannot be built for and emulated here, or None if it can. Raises BadInputError for a
    machine name that is none of MACHINES."""
    m = _machine(machine)
    missing = missing_tools(m.arch)
    if missing:
        return f"cannot measure on {machine}: install Debian packages {', '.join(missing)}"
    if not qemu_machine_supported(machine):
        return f"the installed {m.qemu} has no machine {machine!r}"
    return None


def _machine(machine: str) -> Machine:
    if machine not in MACHINES:
        raise BadInputError(f"machine {machine!r} is not supported; use one of {tuple(MACHINES)}")
    return MACHINES[machine]


def arm_flags(machine: str = "mps2-an386", dsp: bool = True) -> list[str]:
    """Compiler flags (strict warnings included) for the machine's core, Arm or RISC-V (the name is older than
    the RISC-V machine); dsp=False defines GRUKIT_PORTABLE_ONLY so the portable C loops run even on a core
    with the DSP extension."""
    m = _machine(machine)
    if m.arch == RISCV:
        return [*STRICT_CFLAGS, f"-march={m.cpu}", "-mabi=ilp32", *RISCV_COMMON_FLAGS]
    fpu = [f"-mfpu={m.fpu}", "-mfloat-abi=hard"] if m.fpu else ["-mfloat-abi=soft"]
    return [*STRICT_CFLAGS, f"-mcpu={m.cpu}", *fpu, *ARM_COMMON_FLAGS,
            *([] if dsp else ["-DGRUKIT_PORTABLE_ONLY"])]


# ---------------------------------------------------------------- building and running


def run_program(cmd: list[str], what: str, timeout_s: float = RUN_TIMEOUT_S, stdin: bytes | None = None,
                binary: bool = False, merge_stderr: bool = False) -> str | bytes:
    """Run a command; its stdout (bytes if binary; merge_stderr: with its stderr in it), or
    FirmwareBuildError with its output on failure."""
    try:
        done = subprocess.run([str(c) for c in cmd], input=stdin, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT if merge_stderr else subprocess.PIPE, timeout=timeout_s)
    except subprocess.TimeoutExpired as exc:
        raise FirmwareBuildError(f"{what} timed out after {timeout_s} s: {' '.join(map(str, cmd))}") from exc
    if done.returncode != 0:
        out = done.stdout[-2000:].decode(errors="replace") if not binary else ""
        tail = (out + (done.stderr or b"")[-4000:].decode(errors="replace")).strip()
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
    """Link a bare-metal image of `sources` plus the board support for `machine` (firmware_ref/arm, or
    firmware_ref/riscv for the RISC-V machine); returns the ELF. Golden vectors are compiled in
    (GOLDEN_EMBEDDED)."""
    m = _machine(machine)
    arm_dir = firmware_dir() / "arm"
    cmd = [m.compiler, *arm_flags(machine, dsp), *include_flags()]
    if m.arch == ARM:
        # -L: each machine's script INCLUDEs the shared cortex_m_sections.ld from the same directory.
        cmd += [f"-L{arm_dir}", "-T", str(arm_dir / m.linker_script)]
    cmd += _defines({"GOLDEN_EMBEDDED": None, "BOARD_SYSTICK_HZ": f"{m.systick_hz}u", **(defines or {})})
    board = ARM_BOARD_SOURCES if m.arch == ARM else RISCV_BOARD_SOURCES
    cmd += [str(s) for s in (*_sources(*board), *sources)]
    run_program([*cmd, "-o", str(out)], m.compiler, CC_TIMEOUT_S)
    return out


def run_qemu(elf: Path, machine: str = "mps2-an386", timeout_s: float = RUN_TIMEOUT_S) -> str:
    """Run an image on QEMU's `machine` with semihosting and -icount; its stdout (exit status checked)."""
    m = _machine(machine)
    firmware = ["-bios", "none"] if m.arch == RISCV else []  # the image is the machine's only program
    cmd = [m.qemu, "-M", machine, "-nographic", *firmware, "-semihosting-config", "enable=on,target=native",
           "-icount", f"shift={ICOUNT_SHIFT}", "-kernel", str(elf)]
    # picolibc's semihosting stdout reaches QEMU's stderr (measured on 7.2): read both on RISC-V.
    return run_program(cmd, f"qemu {machine} {Path(elf).name}", timeout_s, merge_stderr=m.arch == RISCV)


def instructions_from_ticks(ticks: int, machine: str = "mps2-an386") -> float:
    """SysTick ticks on `machine` to instructions under -icount shift=ICOUNT_SHIFT: each instruction advances
    the virtual clock 2^ICOUNT_SHIFT ns, each tick is 1e9 / systick_hz ns (40 ns on AN386)."""
    return ticks * 1e9 / (_machine(machine).systick_hz * 2**ICOUNT_SHIFT)


