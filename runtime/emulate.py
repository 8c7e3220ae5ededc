"""Run grukit's C kernel (firmware_ref/) from Python: on the host over real data, and on emulated Cortex-M.

Public API:

- ``firmware_dir()``: where the C sources are (the repository's firmware_ref/ for an editable install, or
  $GRUKIT_FIRMWARE_DIR).
- ``toolchain_status()``: which of the host cc, arm-none-eabi-gcc (+ newlib) and qemu-system-arm are there,
  and the Debian packages that provide what is missing.
- ``run_c_host(qmodel, x_q)``: the generated model (``grukit.export.c_export``) + the fused kernel compiled
  with the host cc (once per model and process), run over integer sequences; returns what
  ``qmodel.run_int`` returns, computed by the C code.
- ``measure_step_instructions(qmodel, machine)``: instructions of one whole model step (every layer, every
  op, the head) on one of QEMU's Cortex-M machines (``MACHINES``: M4, M7, M33, M55), from SysTick under
  ``-icount shift=6`` (ticks x tick period / 2^6 ns, the period per machine: see ``MACHINES`` and
  firmware_ref/arm/board.h). An instruction count, not a cycle count: on a real M4 loads take 1-2 cycles,
  taken branches 2-4, plus flash wait states. None (and an EmulationUnavailable warning naming the reason)
  when the toolchain, QEMU or the machine is missing; ``emulation_unavailable_reason`` gives the reason
  without measuring, ``qemu_machine_supported`` says whether a machine can be used.

The build and run helpers below (``build_host``, ``build_arm``, ``run_program``, ``run_qemu``,
``GoldenStream``) are also what tests/firmware_build.py uses: one mechanism for every C test.
"""

from __future__ import annotations

import atexit
import hashlib
import os
import shutil
import subprocess
import tempfile
import warnings
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np

from grukit.errors import BadInputError
from grukit.runtime.targets import QEMU_MACHINES

FIRMWARE_ENV = "GRUKIT_FIRMWARE_DIR"
INCLUDE_DIRS = ("include", "src", "test", "arm")
KERNEL_SOURCES = ("src/grukit_gru.c", "src/grukit_ops.c", "src/grukit_tables.c")
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


class EmulationUnavailable(UserWarning):
    """The ARM toolchain, QEMU or the QEMU machine is missing: nothing was measured."""


class FirmwareBuildError(RuntimeError):
    """A compiler or a C program grukit runs failed; the message holds the command and its output."""


# ---------------------------------------------------------------- where things are


def firmware_dir() -> Path:
    """The firmware_ref/ directory holding the C kernel's sources.

    $GRUKIT_FIRMWARE_DIR when set, else the repository's firmware_ref/ beside the package (an editable
    install). Raises BadInputError when that directory has no include/grukit_gru.h (e.g. grukit was
    installed from a wheel, which does not ship the C sources; an explicit setting is never second-guessed)."""
    override = os.environ.get(FIRMWARE_ENV)
    path = Path(override) if override else Path(__file__).resolve().parents[1] / "firmware_ref"
    if not (path / "include" / "grukit_gru.h").is_file():
        where = f"${FIRMWARE_ENV}={override}" if override else str(path)
        raise BadInputError(
            f"cannot find grukit's C sources (include/grukit_gru.h) in {where}: install grukit from its "
            f"repository (pip install -e .) or set {FIRMWARE_ENV} to a firmware_ref/ directory")
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
    """Why measure_step_instructions(..., machine) would return None, or None if it can measure.
    Raises BadInputError for a machine name that is none of QEMU_MACHINES."""
    if machine not in QEMU_MACHINES:
        raise BadInputError(f"QEMU machine {machine!r} is not one of {', '.join(QEMU_MACHINES)}")
    missing = missing_tools()
    if missing:
        return f"cannot measure on {machine}: install Debian packages {', '.join(missing)}"
    if machine not in MACHINES:
        return f"grukit has no board support for QEMU machine {machine!r} (it has {', '.join(MACHINES)})"
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


class GoldenStream:
    """int32 words for a C driver (firmware_ref/test/golden_stream.h), appended from Python ints and NumPy
    integer arrays. A host driver reads them as text (write_text); a bare-metal image gets them compiled in
    (write_c), since it has no file system worth relying on."""

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
        wide = arr.astype(np.int64).ravel()
        if wide.size and (wide.min() < -(2**31) or wide.max() >= 2**31):
            raise ValueError("golden array values do not fit int32 words")
        self.words.extend(wide.tolist())

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
            f"/* GENERATED by grukit.runtime.emulate from {origin}. Do not edit. */\n"
            "#include <stdint.h>\n\n"
            "/* INT32_MIN cannot be written as a literal; the words are emitted as they are otherwise. */\n"
            "const int32_t grukit_golden_words[] = {\n    "
            + ",\n    ".join(lines).replace("-2147483648", "INT32_MIN")
            + "};\n"
            "const uint32_t grukit_golden_word_count =\n"
            "    (uint32_t)(sizeof grukit_golden_words / sizeof grukit_golden_words[0]);\n"
        )
        return path


# ---------------------------------------------------------------- the C model on the host


_HOST_BUILD_ROOT: Path | None = None


def _host_build_root() -> Path:
    """One temporary directory per process for compiled host models (removed at exit)."""
    global _HOST_BUILD_ROOT
    if _HOST_BUILD_ROOT is None:
        _HOST_BUILD_ROOT = Path(tempfile.mkdtemp(prefix="grukit-c-host-"))
        atexit.register(shutil.rmtree, _HOST_BUILD_ROOT, ignore_errors=True)
    return _HOST_BUILD_ROOT


def _host_runner(qmodel) -> Path:
    """The host_runner executable for qmodel, compiled on first use. Keyed by the generated C and the
    kernel sources, so the same model is compiled once per process and an edited kernel is rebuilt."""
    from grukit.export.c_export import export_c

    root = _host_build_root()
    with tempfile.TemporaryDirectory(dir=root) as gen:
        paths = export_c(qmodel, gen)
        digest = hashlib.sha256()
        for path in (*paths[:2], *_sources(*KERNEL_SOURCES, HOST_RUNNER_SOURCE), *_sources("include/grukit_gru.h",
                                                                                       "include/grukit_ops.h")):
            digest.update(Path(path).read_bytes())
        build = root / digest.hexdigest()[:20]
        exe = build / "host_runner"
        if exe.is_file():
            return exe
        build.mkdir(exist_ok=True)
        for path in paths[:2]:
            shutil.copy(path, build / Path(path).name)
    model_h = build / "grukit_model.h"
    built = build_host([*_sources(*KERNEL_SOURCES, HOST_RUNNER_SOURCE), build / "grukit_model.c"],
                       build / "host_runner.tmp", defines={"GRUKIT_MODEL_HEADER": f'"{model_h}"'})
    built.replace(exe)  # atomic: a concurrent caller sees either no runner or a complete one
    return exe


def run_c_host(qmodel, x_q: np.ndarray) -> tuple[np.ndarray, list[np.ndarray]]:
    """(y_q, states) of the C kernel on the host for integer inputs x_q [N, T, I] (or [T, I]).

    The model's generated C (``export_c``) and firmware_ref's fused kernel are compiled with the host cc
    (strict flags, -O2) once per model and process, then run over every sequence, the state reset before
    each. Returns what ``qmodel.run_int(x_q)`` returns: y_q [N, O] (last-step model) or [N, T, O] (per-step),
    and the states of each layer [N, T, H], in the model's integer dtypes. Raises BadInputError for an input
    of the wrong dtype or shape, FirmwareBuildError when there is no host cc or the build fails."""
    from grukit.export.c_export import output_size

    x_q = np.asarray(x_q)
    if x_q.ndim == 2:
        x_q = x_q[None]
    dtype = qmodel.input_q.np_dtype
    input_size = qmodel.layers[0].input_size
    if x_q.dtype != dtype:
        raise BadInputError(f"run_c_host: integer input must be {np.dtype(dtype).name}, got {x_q.dtype}")
    if x_q.ndim != 3 or x_q.shape[2] != input_size or x_q.shape[1] < 1:
        raise BadInputError(f"run_c_host: input must be [N, T, {input_size}] with T >= 1, got {list(x_q.shape)}")
    n, t, _ = x_q.shape
    exe = _host_runner(qmodel)
    header = np.array([n, t], np.int32).tobytes()
    raw = run_program([exe], "host_runner", RUN_TIMEOUT_S, stdin=header + x_q.astype(dtype).tobytes(),
                      binary=True)
    sizes = [layer.hidden_size for layer in qmodel.layers]
    outputs = output_size(qmodel)
    y_rows = t if qmodel.per_step else 1
    per_sequence = t * sum(sizes) + y_rows * outputs
    values = np.frombuffer(raw, dtype=dtype)  # state, x and y share the scheme's width
    if values.size != n * per_sequence:
        raise FirmwareBuildError(f"host_runner wrote {values.size} values, expected {n * per_sequence}")
    values = values.reshape(n, per_sequence)
    state_block = values[:, : t * sum(sizes)].reshape(n, t, sum(sizes))
    bounds = np.cumsum([0, *sizes])
    states = [state_block[:, :, a:b].astype(layer.qparams["h"].np_dtype)
              for a, b, layer in zip(bounds[:-1], bounds[1:], qmodel.layers)]
    y = values[:, t * sum(sizes):].reshape(n, y_rows, outputs).astype(qmodel.output_q.np_dtype)
    return (y if qmodel.per_step else y[:, 0]), states


# ---------------------------------------------------------------- instructions on an emulated Cortex-M


def build_measure_image(qmodel, build_dir: Path, steps: int = 8, machine: str = "mps2-an386",
                        dsp: bool = True, seed: int = 0) -> Path:
    """Link the timing image for qmodel (random integer inputs, `steps` steps); returns the ELF path."""
    from grukit.export.c_export import export_c

    gen = build_dir / "model"
    export_c(qmodel, gen)
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
    defines = {"DRIVER_MEASURE": None, "GRUKIT_MODEL_HEADER": f'"{gen / "grukit_model.h"}"'}
    return build_arm(sources, build_dir / "measure.elf", machine=machine, dsp=dsp, defines=defines)


def run_measure_image(elf: Path, machine: str = "mps2-an386") -> list[float]:
    """Instructions of each measured step (the driver's TICKS lines of its step calls)."""
    stdout = run_qemu(elf, machine)
    ticks = [int(line.split()[2]) for line in stdout.splitlines() if line.startswith("TICKS ")]
    return [instructions_from_ticks(t, machine) for t in ticks]


def measure_step_instructions(qmodel, machine: str = "mps2-an386", steps: int = 8, dsp: bool = True) -> float | None:
    """Mean instructions of one whole model step (all layers, all ops, the head) in QEMU, or None (with an
    EmulationUnavailable warning giving the reason, see emulation_unavailable_reason) when the toolchain,
    QEMU or the machine is absent."""
    reason = emulation_unavailable_reason(machine)
    if reason is not None:
        warnings.warn(reason, EmulationUnavailable, stacklevel=2)
        return None
    with tempfile.TemporaryDirectory() as tmp:
        per_step = run_measure_image(build_measure_image(qmodel, Path(tmp), steps, machine, dsp), machine)
    if len(per_step) != steps:
        raise FirmwareBuildError(f"expected {steps} timed steps from the emulator, got {len(per_step)}")
    return float(np.mean(per_step))
