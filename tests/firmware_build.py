"""Build and run grukit's C code from tests: host compiler, arm-none-eabi-gcc, and QEMU's Cortex-M4.

One mechanism for every C test (the primitives today, the fused GRU step next):

- ``GoldenStream`` collects int32 words (op codes, parameters, inputs) written from NumPy values. The host
  driver reads them from a text file (``write_text``); a bare-metal image gets them compiled in from a
  generated C file (``write_c``), since it has no file system worth relying on.
- ``build_host`` compiles strictly (``-std=c99 -Wall -Wextra -Wconversion -Werror -O2``), optionally with
  ``-fsanitize=undefined,address``; ``build_arm`` links an image for QEMU's mps2-an386 (Cortex-M4F) with
  firmware_ref/arm's startup code and newlib's semihosting library.
- ``run_host`` / ``run_qemu`` return the driver's stdout; ``parse_results`` turns its result lines
  ``"<case> <n> <values...>"`` into arrays; ``assert_same`` compares exactly and names the first mismatch.

Anything missing (a host cc, the ARM toolchain, QEMU) makes the calling test skip with the Debian package
to install.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
FIRMWARE = ROOT / "firmware_ref"
INCLUDE_DIRS = (FIRMWARE / "include", FIRMWARE / "src", FIRMWARE / "test", FIRMWARE / "arm")
LIBRARY_SOURCES = (FIRMWARE / "src" / "grukit_ops.c", FIRMWARE / "src" / "grukit_tables.c")
GOLDEN_STREAM_SOURCE = FIRMWARE / "test" / "golden_stream.c"
ARM_BOARD_SOURCES = (FIRMWARE / "arm" / "startup.c", FIRMWARE / "arm" / "board.c")
ARM_LINKER_SCRIPT = FIRMWARE / "arm" / "mps2_an386.ld"

STRICT_CFLAGS = ("-std=c99", "-Wall", "-Wextra", "-Wconversion", "-Werror", "-O2")
SANITIZE_CFLAGS = ("-fsanitize=undefined,address", "-fno-sanitize-recover=all", "-g")
ARM_CFLAGS = (
    "-mcpu=cortex-m4",
    "-mthumb",
    "-mfloat-abi=hard",
    "-mfpu=fpv4-sp-d16",
    "--specs=rdimon.specs",  # newlib + semihosting: printf goes to QEMU's stdout
    "-nostartfiles",  # firmware_ref/arm/startup.c is the reset handler
    "-ffunction-sections",
    "-Wl,--gc-sections",
)
ICOUNT_SHIFT = 6  # must match BOARD_ICOUNT_SHIFT in firmware_ref/arm/board.h
QEMU_COMMAND = (
    "qemu-system-arm",
    "-M",
    "mps2-an386",
    "-nographic",
    "-semihosting-config",
    "enable=on,target=native",
    "-icount",
    f"shift={ICOUNT_SHIFT}",
    "-kernel",
)
CC_TIMEOUT_S = 120
RUN_TIMEOUT_S = 60


# ---------------------------------------------------------------- tool discovery


def host_cc() -> str | None:
    """The host C compiler ($CC is not consulted: the flags above are GCC/Clang flags)."""
    return shutil.which("cc") or shutil.which("gcc") or shutil.which("clang")


def require_host_cc() -> str:
    """The host compiler, or skip the test naming the package that provides one."""
    cc = host_cc()
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
    """Debian packages still needed for the emulated Cortex-M4 tests (empty when all are there)."""
    missing = []
    gcc = shutil.which("arm-none-eabi-gcc")
    if gcc is None:
        missing.append("gcc-arm-none-eabi")
    else:
        specs = subprocess.run([gcc, "-print-file-name=rdimon.specs"], capture_output=True, text=True)
        if not Path(specs.stdout.strip()).is_file():
            missing.append("libnewlib-arm-none-eabi")
    if shutil.which("qemu-system-arm") is None:
        missing.append("qemu-system-arm")
    return missing


def require_arm_tools() -> None:
    """Skip the test, naming the Debian packages to install, unless the ARM toolchain and QEMU exist."""
    missing = missing_arm_tools()
    if missing:
        pytest.skip(f"emulated Cortex-M4 test needs Debian packages: {', '.join(missing)} (see `make firmware-tools`)")


# ---------------------------------------------------------------- building


def _compile(cmd: list[str], what: str) -> None:
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=CC_TIMEOUT_S)
    if done.returncode != 0:
        raise AssertionError(f"{what} failed:\n{' '.join(cmd)}\n{done.stdout}{done.stderr}")


def _defines(defines: dict[str, object] | None) -> list[str]:
    return [f"-D{k}" if v is None else f"-D{k}={v}" for k, v in (defines or {}).items()]


def build_host(
    sources: list[Path], out: Path, *, sanitize: bool = False, defines: dict[str, object] | None = None
) -> Path:
    """Compile `sources` plus the grukit library with the host cc, strictly; returns the executable."""
    cc = require_host_cc()
    cmd = [cc, *STRICT_CFLAGS, *(SANITIZE_CFLAGS if sanitize else ())]
    cmd += [f"-I{d}" for d in INCLUDE_DIRS] + _defines(defines)
    cmd += [str(s) for s in (*LIBRARY_SOURCES, GOLDEN_STREAM_SOURCE, *sources)] + ["-o", str(out)]
    _compile(cmd, "host build")
    return out


def build_arm(
    sources: list[Path], out: Path, *, dsp: bool = True, defines: dict[str, object] | None = None
) -> Path:
    """Link a bare-metal mps2-an386 image of `sources`, the grukit library and the board support.

    dsp=False defines GRUKIT_PORTABLE_ONLY so the portable C loops run even though the core has the DSP
    extension (for measuring what the ACLE paths gain)."""
    require_arm_tools()
    defs = {"GOLDEN_EMBEDDED": None, **(defines or {})}
    if not dsp:
        defs["GRUKIT_PORTABLE_ONLY"] = None
    cmd = ["arm-none-eabi-gcc", *STRICT_CFLAGS, *ARM_CFLAGS, "-T", str(ARM_LINKER_SCRIPT)]
    cmd += [f"-I{d}" for d in INCLUDE_DIRS] + _defines(defs)
    cmd += [str(s) for s in (*ARM_BOARD_SOURCES, *LIBRARY_SOURCES, GOLDEN_STREAM_SOURCE, *sources)]
    cmd += ["-o", str(out)]
    _compile(cmd, "arm-none-eabi-gcc build")
    return out


# ---------------------------------------------------------------- running


def _run(cmd: list[str], what: str, timeout_s: float) -> str:
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s)
    except subprocess.TimeoutExpired as exc:
        raise AssertionError(f"{what} timed out after {timeout_s} s: {' '.join(cmd)}") from exc
    if done.returncode != 0:
        tail = (done.stdout[-2000:] + done.stderr[-4000:]).strip()
        raise AssertionError(f"{what} exited with status {done.returncode}: {' '.join(cmd)}\n{tail}")
    return done.stdout


def run_host(exe: Path, *args: object, timeout_s: float = RUN_TIMEOUT_S) -> str:
    """Run a host executable; its stdout, or an AssertionError with its output on failure."""
    return _run([str(exe), *map(str, args)], exe.name, timeout_s)


def run_qemu(elf: Path, timeout_s: float = RUN_TIMEOUT_S) -> str:
    """Run an image on QEMU's mps2-an386 with semihosting; its stdout (the exit status is checked)."""
    require_arm_tools()
    return _run([*QEMU_COMMAND, str(elf)], f"qemu {elf.name}", timeout_s)


def instructions_from_ticks(ticks: int) -> float:
    """SysTick ticks (25 MHz) to instructions under -icount shift=ICOUNT_SHIFT: 40 ns per tick."""
    return ticks * 40 / 2**ICOUNT_SHIFT


# ---------------------------------------------------------------- golden vectors


class GoldenStream:
    """int32 words for a C driver, appended from Python ints and NumPy integer arrays."""

    def __init__(self) -> None:
        self.words: list[int] = []
        self.cases = 0

    def case(self, op_code: int) -> int:
        """Start a case: writes its op code and returns its index (the driver's result line number)."""
        self.word(op_code)
        self.cases += 1
        return self.cases - 1

    def word(self, value: int) -> None:
        """One int32 word."""
        value = int(value)
        if not -(2**31) <= value < 2**31:
            raise ValueError(f"{value} does not fit an int32 word")
        self.words.append(value)

    def words_of(self, values) -> None:
        """Every element of an integer array (any width up to int32), in C order."""
        arr = np.asarray(values)
        if arr.dtype.kind not in "iu":
            raise TypeError(f"golden arrays must be integer, got {arr.dtype}")
        for v in arr.astype(np.int64).ravel():
            self.word(int(v))

    def i64(self, value: int) -> None:
        """One int64 as two words, high then low (the low word's bits reinterpreted as int32)."""
        value = int(value)
        if not -(2**63) <= value < 2**63:
            raise ValueError(f"{value} does not fit an int64")
        bits = value & (2**64 - 1)
        hi, lo = bits >> 32, bits & 0xFFFFFFFF
        self.word(hi - 2**32 if hi >= 2**31 else hi)
        self.word(lo - 2**32 if lo >= 2**31 else lo)

    def end(self) -> None:
        """The end marker (op code 0)."""
        self.word(0)

    def write_text(self, path: Path) -> Path:
        """The host driver's input: decimal words, whitespace separated."""
        path.write_text("\n".join(" ".join(map(str, self.words[i : i + 32])) for i in range(0, len(self.words), 32)))
        return path

    def write_c(self, path: Path, origin: str) -> Path:
        """A generated C file defining grukit_golden_words / grukit_golden_word_count for GOLDEN_EMBEDDED."""
        lines = [", ".join(map(str, self.words[i : i + 16])) for i in range(0, len(self.words), 16)]
        path.write_text(
            f"/* GENERATED by tests/firmware_build.py from {origin}. Do not edit. */\n"
            "#include <stdint.h>\n\n"
            "/* INT32_MIN cannot be written as a literal; the words are emitted as they are otherwise. */\n"
            "const int32_t grukit_golden_words[] = {\n    "
            + ",\n    ".join(lines).replace("-2147483648", "INT32_MIN")
            + "};\n"
            "const uint32_t grukit_golden_word_count =\n"
            "    (uint32_t)(sizeof grukit_golden_words / sizeof grukit_golden_words[0]);\n"
        )
        return path


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
