"""Build and run grukit's C code from tests: host compiler, arm-none-eabi-gcc, and QEMU's Cortex-M machines.

The mechanism lives in the package (grukit.firmware_ref.build: build_host, build_arm, run_qemu,
toolchain_status; grukit.firmware_ref.golden: GoldenStream); this module adds what only tests need:

- ``require_host_cc`` / ``require_arm_tools`` skip the calling test, naming the Debian package to install;
- ``build_host`` adds the sigmoid table and the golden stream reader to a driver's sources; ``build_arm``
  the same for a bare-metal image of one of build.MACHINES (mps2-an386 Cortex-M4F by default, mps2-an500
  M7, mps2-an505 M33, mps3-an547 M55);
- ``parse_results`` turns a driver's result lines ``"<case> <n> <values...>"`` into arrays; compare them
  with ``grukit.verify.assert_identical``.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import numpy as np
import pytest

from grukit.firmware_ref import build

FIRMWARE = build.firmware_dir()
LIBRARY_SOURCES = (FIRMWARE / "src" / "grukit_tables.c",)
GOLDEN_STREAM_SOURCE = FIRMWARE / build.GOLDEN_STREAM_SOURCE
SANITIZE_CFLAGS = build.SANITIZE_CFLAGS
CC_TIMEOUT_S = build.CC_TIMEOUT_S
RUN_TIMEOUT_S = 60


# ---------------------------------------------------------------- tool discovery


def require_host_cc() -> str:
    """The host compiler, or skip the test naming the package that provides one."""
    cc = build.host_cc()
    if cc is None:
        pytest.skip("no host C compiler (cc/gcc/clang): install Debian package 'gcc'")
    return cc


def sanitizers_work(cc: str, build_dir: Path) -> bool:
    """Whether `cc` links a -fsanitize=undefined,address program (libasan/libubsan may be absent)."""
    probe = build_dir / "sanitize_probe.c"
    probe.write_text("int main(void) { return 0; }\n")
    done = subprocess.run(
        [cc, *SANITIZE_CFLAGS, str(probe), "-o", str(build_dir / "sanitize_probe")],
        capture_output=True,
        timeout=CC_TIMEOUT_S,
    )
    return done.returncode == 0


def missing_arm_tools() -> list[str]:
    """Debian packages still needed for the emulated Cortex-M tests (empty when all are there)."""
    return build.missing_tools()


def require_arm_tools(machine: str = "mps2-an386") -> None:
    """Skip the test, naming what to install, unless `machine`'s cross toolchain, QEMU and machine are there."""
    reason = build.emulation_unavailable_reason(machine)
    if reason is not None:
        pytest.skip(f"emulated-core test: {reason} (see `make firmware-tools`)")


# ---------------------------------------------------------------- building


def build_host(
    sources: list[Path], out: Path, *, sanitize: bool = False, defines: dict[str, object] | None = None
) -> Path:
    """Compile `sources` plus the grukit library with the host cc, strictly; returns the executable."""
    require_host_cc()
    return build.build_host([*LIBRARY_SOURCES, GOLDEN_STREAM_SOURCE, *sources], out, sanitize=sanitize,
                              defines=defines)


def build_arm(
    sources: list[Path], out: Path, *, dsp: bool = True, defines: dict[str, object] | None = None,
    machine: str = "mps2-an386",
) -> Path:
    """Link a bare-metal image for `machine` of `sources`, the grukit library and the board support.

    dsp=False defines GRUKIT_PORTABLE_ONLY so the portable C loops run even though the core has the DSP
    extension (for measuring what the ACLE paths gain)."""
    require_arm_tools(machine)
    return build.build_arm([*LIBRARY_SOURCES, GOLDEN_STREAM_SOURCE, *sources], out, machine=machine, dsp=dsp,
                             defines=defines)


# ---------------------------------------------------------------- running


def run_host(exe: Path, *args: object, timeout_s: float = RUN_TIMEOUT_S) -> str:
    """Run a host executable; its stdout, or FirmwareBuildError with its output on failure."""
    return build.run_program([str(exe), *map(str, args)], exe.name, timeout_s)


def run_qemu(elf: Path, timeout_s: float = RUN_TIMEOUT_S, machine: str = "mps2-an386") -> str:
    """Run an image on QEMU's `machine` with semihosting; its stdout (the exit status is checked)."""
    require_arm_tools(machine)
    return build.run_qemu(elf, machine, timeout_s)


# ---------------------------------------------------------------- results


def parse_results(stdout: str, expected_cases: int) -> dict[int, np.ndarray]:
    """The driver's result lines as {case index: int64 array}; checks it reached the end of the stream."""
    results: dict[int, np.ndarray] = {}
    ended = False
    for line in stdout.splitlines():
        if line.startswith("GOLDEN-ERROR"):
            raise AssertionError(f"driver error: {line}")
        if line.startswith("END "):
            ended = int(line.split()[1]) == expected_cases
            continue
        fields = line.split()
        if not fields or not fields[0].lstrip("-").isdigit():
            continue  # anything else a driver prints (benchmark lines) is not a result
        index, n = int(fields[0]), int(fields[1])
        values = np.array([int(v) for v in fields[2:]], dtype=np.int64)
        if values.size != n:
            raise AssertionError(f"case {index}: driver announced {n} values and printed {values.size}")
        results[index] = values
    if not ended:
        raise AssertionError(f"driver did not finish all {expected_cases} cases:\n{stdout[-2000:]}")
    return results


def parse_ticks(stdout: str) -> dict[int, int]:
    """The "TICKS <case> <ticks>" lines of a DRIVER_MEASURE build, as {case index: SysTick ticks}."""
    ticks = {}
    for line in stdout.splitlines():
        if line.startswith("TICKS "):
            _, index, value = line.split()
            ticks[int(index)] = int(value)
    return ticks
