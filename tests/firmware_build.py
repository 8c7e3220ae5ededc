"""Build and run grukit's C code from tests: host compiler, arm-none-eabi-gcc, and QEMU's Cortex-M machines.

The mechanism lives in the package (grukit.runtime.emulate: build_host, build_arm, run_qemu, GoldenStream,
toolchain_status); this module adds what only tests need:

- ``require_host_cc`` / ``require_arm_tools`` skip the calling test, naming the Debian package to install;
- ``build_host`` adds the grukit library and the golden stream reader to a driver's sources; ``build_arm``
  the same for a bare-metal image of one of emulate.MACHINES (mps2-an386 Cortex-M4F by default, mps2-an500
  M7, mps2-an505 M33, mps3-an547 M55);
- ``parse_results`` turns a driver's result lines ``"<case> <n> <values...>"`` into arrays, ``assert_same``
  compares exactly and names the first mismatch, and the ``encode_*`` functions write ops_driver.c cases.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import numpy as np
import pytest

from grukit.runtime import emulate
from grukit.runtime.emulate import GoldenStream, instructions_from_ticks  # noqa: F401 (re-exported for tests)

FIRMWARE = emulate.firmware_dir()
LIBRARY_SOURCES = (FIRMWARE / "src" / "grukit_ops.c", FIRMWARE / "src" / "grukit_tables.c")
GOLDEN_STREAM_SOURCE = FIRMWARE / emulate.GOLDEN_STREAM_SOURCE
SANITIZE_CFLAGS = emulate.SANITIZE_CFLAGS
CC_TIMEOUT_S = emulate.CC_TIMEOUT_S
RUN_TIMEOUT_S = 60


# ---------------------------------------------------------------- tool discovery


def require_host_cc() -> str:
    """The host compiler, or skip the test naming the package that provides one."""
    cc = emulate.host_cc()
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
    return emulate.missing_tools()


def require_arm_tools(machine: str = "mps2-an386") -> None:
    """Skip the test, naming what to install, unless the ARM toolchain, QEMU and `machine` are there."""
    reason = emulate.emulation_unavailable_reason(machine)
    if reason is not None:
        pytest.skip(f"emulated Cortex-M test: {reason} (see `make firmware-tools`)")


# ---------------------------------------------------------------- building


def build_host(
    sources: list[Path], out: Path, *, sanitize: bool = False, defines: dict[str, object] | None = None
) -> Path:
    """Compile `sources` plus the grukit library with the host cc, strictly; returns the executable."""
    require_host_cc()
    return emulate.build_host([*LIBRARY_SOURCES, GOLDEN_STREAM_SOURCE, *sources], out, sanitize=sanitize,
                              defines=defines)


def build_arm(
    sources: list[Path], out: Path, *, dsp: bool = True, defines: dict[str, object] | None = None,
    machine: str = "mps2-an386",
) -> Path:
    """Link a bare-metal image for `machine` of `sources`, the grukit library and the board support.

    dsp=False defines GRUKIT_PORTABLE_ONLY so the portable C loops run even though the core has the DSP
    extension (for measuring what the ACLE paths gain)."""
    require_arm_tools(machine)
    return emulate.build_arm([*LIBRARY_SOURCES, GOLDEN_STREAM_SOURCE, *sources], out, machine=machine, dsp=dsp,
                             defines=defines)


# ---------------------------------------------------------------- running


def run_host(exe: Path, *args: object, timeout_s: float = RUN_TIMEOUT_S) -> str:
    """Run a host executable; its stdout, or FirmwareBuildError with its output on failure."""
    return emulate.run_program([str(exe), *map(str, args)], exe.name, timeout_s)


def run_qemu(elf: Path, timeout_s: float = RUN_TIMEOUT_S, machine: str = "mps2-an386") -> str:
    """Run an image on QEMU's `machine` with semihosting; its stdout (the exit status is checked)."""
    require_arm_tools(machine)
    return emulate.run_qemu(elf, machine, timeout_s)


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


def assert_same(what: str, got, expected) -> None:
    """Exact integer comparison; the failure names the first mismatch (index, got, expected)."""
    got = np.asarray(got, dtype=np.int64).ravel()
    expected = np.asarray(expected, dtype=np.int64).ravel()
    if got.shape != expected.shape:
        raise AssertionError(f"{what}: C produced {got.size} values, NumPy {expected.size}")
    bad = np.flatnonzero(got != expected)
    if bad.size:
        i = int(bad[0])
        raise AssertionError(
            f"{what}: {bad.size} of {got.size} values differ; first at index {i}: got {got[i]}, expected {expected[i]}"
        )


# ---------------------------------------------------------------- firmware_ref/test/ops_driver.c streams

OPS_DRIVER_SOURCE = FIRMWARE / "test" / "ops_driver.c"

# Op codes of ops_driver.c's enum (the driver rejects an unknown one with GOLDEN-ERROR).
OP_MQM, OP_MQM_S64, OP_FC_S8, OP_FC_S16 = 1, 2, 3, 4
OP_ADD_S8, OP_ADD_S16, OP_SUB_S8, OP_SUB_S16, OP_MUL_S8, OP_MUL_S16 = 5, 6, 7, 8, 9, 10
OP_LOGISTIC_S8, OP_TANH_S8, OP_LOGISTIC_S16, OP_TANH_S16, OP_SIGMOID_TABLE = 11, 12, 13, 14, 15
_ELEMENTWISE_CODES = {
    ("ADD", "int8"): OP_ADD_S8, ("ADD", "int16"): OP_ADD_S16,
    ("SUB", "int8"): OP_SUB_S8, ("SUB", "int16"): OP_SUB_S16,
    ("MUL", "int8"): OP_MUL_S8, ("MUL", "int16"): OP_MUL_S16,
    ("LOGISTIC", "int8"): OP_LOGISTIC_S8, ("TANH", "int8"): OP_TANH_S8,
    ("LOGISTIC", "int16"): OP_LOGISTIC_S16, ("TANH", "int16"): OP_TANH_S16,
}  # fmt: skip


def encode_mqm(stream: GoldenStream, x, multiplier, shift) -> int:
    """grukit_multiply_by_quantized_multiplier on each (x, multiplier, shift) triple."""
    x, multiplier, shift = np.broadcast_arrays(*(np.asarray(v, np.int64) for v in (x, multiplier, shift)))
    index = stream.case(OP_MQM)
    stream.word(x.size)
    for xi, mi, si in zip(x.ravel(), multiplier.ravel(), shift.ravel()):
        stream.word(xi), stream.word(mi), stream.word(si)
    return index


def encode_mqm_s64(stream: GoldenStream, x, multiplier, shift) -> int:
    """grukit_multiply_by_quantized_multiplier_s64 on each (int64 x, multiplier, shift) triple."""
    x, multiplier, shift = np.broadcast_arrays(*(np.asarray(v, np.int64) for v in (x, multiplier, shift)))
    index = stream.case(OP_MQM_S64)
    stream.word(x.size)
    for xi, mi, si in zip(x.ravel(), multiplier.ravel(), shift.ravel()):
        stream.i64(xi), stream.word(mi), stream.word(si)
    return index


def encode_fully_connected(stream: GoldenStream, x_q, w_q, bias, params) -> int:
    """grukit_fully_connected_s8 / _s16 on x_q [N, K], w_q [O, K], bias [O] or None, prepared params."""
    x_q, w_q = np.asarray(x_q), np.asarray(w_q)
    s16 = params.dtype == "int16"
    index = stream.case(OP_FC_S16 if s16 else OP_FC_S8)
    (n, k), o = x_q.shape, w_q.shape[0]
    for v in (n, k, o, -params.input_zero_point, params.output_zero_point, params.qmin, params.qmax):
        stream.word(v)
    stream.word(0 if bias is None else 1)
    stream.words_of(x_q)
    stream.words_of(w_q)
    if bias is not None:
        for b in np.asarray(bias, np.int64):
            stream.i64(b) if s16 else stream.word(b)
    stream.words_of(np.asarray(params.output_multiplier, np.int64).reshape(o))
    stream.words_of(np.asarray(params.output_shift, np.int64).reshape(o))
    return index


def encode_elementwise(stream: GoldenStream, kind: str, inputs: tuple, params) -> int:
    """One ADD / SUB / MUL (two same-shape inputs) or LOGISTIC / TANH (one input) case."""
    index = stream.case(_ELEMENTWISE_CODES[(kind, params.dtype)])
    stream.word(np.asarray(inputs[0]).size)
    if kind in ("ADD", "SUB"):
        for v in (-params.input1_zero_point, -params.input2_zero_point, params.output_zero_point,
                  params.left_shift, params.input1.multiplier, params.input1.shift, params.input2.multiplier,
                  params.input2.shift, params.output.multiplier, params.output.shift, params.qmin, params.qmax):
            stream.word(v)  # fmt: skip
    elif kind == "MUL":
        for v in (-params.input1_zero_point, -params.input2_zero_point, params.output_zero_point,
                  params.output.multiplier, params.output.shift, params.qmin, params.qmax):
            stream.word(v)  # fmt: skip
    elif params.dtype == "int8":
        for v in (params.input_zero_point, params.input_range_radius, params.input_multiplier,
                  params.input_left_shift):
            stream.word(v)  # fmt: skip
    else:
        stream.word(params.input_multiplier)
        stream.word(params.input_left_shift)
    for arr in inputs:
        stream.words_of(arr)
    return index
