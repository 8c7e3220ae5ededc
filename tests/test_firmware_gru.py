"""The fused C GRU step (firmware_ref/src/grukit_gru.c + a model from export_c) against the NumPy runtime.

(The same arithmetic in Python, firmware_ref/kernel.py, is checked in tests/test_firmware_kernel.py.)

For each model the generated constants are compiled with firmware_ref/test/gru_driver.c, which streams
golden input sequences through grukit_model_*_step and prints every layer's state and the output after every
step. The expectation comes from the NumPy integer runtime (QuantizedGRUModel.run_int for the states, its
stream() for the per-step head outputs); every integer must match, and a failure names the first
mismatch (sequence, step, layer, index, got, expected). Builds: host cc strict, host cc with UBSan + ASan,
and arm-none-eabi-gcc for QEMU's Cortex-M4 (DSP and portable paths), Cortex-M7, Cortex-M33 and Cortex-M55;
run_c_host (the package API) against run_int on validation-sized batches.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest

import firmware_build as fb
import grukit
from gru_factory import random_inputs, random_model
from grukit.core.qparams import QParams, Requant
from grukit.firmware_ref import build, c_export, host
from grukit.firmware_ref import kernel as KN
from grukit.firmware_ref.golden import GoldenStream
from grukit.verify import assert_identical

GRU_DRIVER = fb.FIRMWARE / "test" / "gru_driver.c"
GRU_SOURCE = fb.FIRMWARE / "src" / "grukit_gru.c"
DATA = Path(grukit.__file__).resolve().parent / "data"
CALIB_N, CALIB_T = 16, 20
GOLDEN_N, GOLDEN_T = 3, 12


# (name, seed, scheme, linear_before_reset, layers, I, H, O, per_step, head): one line per case's purpose.
RANDOM_MODELS = [
    ("s8_lbr1_small", 0, "int8", 1, 1, 4, 16, 3, False, True),  # the common case
    ("s8_lbr0_odd", 1, "int8", 0, 1, 5, 13, 3, True, True),  # sizes not multiples of 4, per-step head
    ("s8_lbr1_2layers", 2, "int8", 1, 2, 3, 32, 5, False, True),  # stacked layers
    ("s8_lbr0_3layers", 3, "int8", 0, 3, 7, 9, 2, True, True),  # three layers, lbr 0 everywhere
    ("s8_mixed_nohead", 4, "int8", [1, 0], 2, 6, 20, 0, True, False),  # mixed variants, no head
    ("s8_h128", 5, "int8", 1, 1, 16, 128, 4, False, True),  # the largest size
    ("s16_lbr1_small", 6, "16x8", 1, 1, 4, 16, 3, False, True),
    ("s16_lbr0_odd", 7, "16x8", 0, 2, 5, 13, 3, True, True),  # stacked, odd, per-step
    ("s16_mixed_3layers", 8, "16x8", [0, 1, 0], 3, 3, 10, 2, False, True),
    ("s16_h128_nohead", 9, "16x8", 0, 1, 16, 128, 0, True, False),  # the largest size, no head
]
SANITIZED = {"s8_lbr0_odd", "s8_mixed_nohead", "s16_lbr0_odd", "s16_mixed_3layers"}


class Case:
    """A quantized model, its golden integer inputs and the NumPy runtime's expected outputs."""

    def __init__(self, name: str, qmodel, x_q: np.ndarray):
        self.name, self.qmodel, self.x_q = name, qmodel, x_q
        self.states = [np.asarray(s, np.int64) for s in qmodel.run_int(x_q)[1]]  # each [N, T, H]
        self.ys = self._stream_outputs()

    def _stream_outputs(self) -> np.ndarray:
        """The output after every step [N, T, O], by the NumPy runtime's streaming runner."""
        n, t, _ = self.x_q.shape
        stream = self.qmodel.stream(n)
        ys = np.stack([np.asarray(stream.step(self.x_q[:, k]), np.int64) for k in range(t)], axis=1)
        last = np.asarray(self.qmodel.predict_int(self.x_q), np.int64)
        assert_identical(ys if self.qmodel.per_step else ys[:, -1], last, f"{self.name}: stream vs run_int output")
        return ys


def make_case(name, seed, scheme, lbr, layers, I, H, O, per_step, head) -> Case:
    model = random_model(seed, I=I, H=H, O=max(O, 1), layers=layers, lbr=lbr, per_step=per_step, head=head)
    qmodel = grukit.quantize(model, random_inputs(seed, N=CALIB_N, T=CALIB_T, I=I), scheme=scheme)
    # Golden inputs 1.5x wider than calibration: some saturate the input quantization and the gates.
    x = random_inputs(seed + 500, N=GOLDEN_N, T=GOLDEN_T, I=I, scale=1.5)
    return Case(name, qmodel, qmodel.quantize_input(x))


def demo_case(scheme: str) -> Case:
    model = grukit.load(str(DATA / "demo_model.onnx"))
    qmodel = grukit.quantize(model, np.load(DATA / "demo_calib.npz")["x"], scheme=scheme)
    x_val = np.load(DATA / "demo_val.npz")["x"][:4]
    return Case(f"demo_{scheme}", qmodel, qmodel.quantize_input(x_val))


def golden_stream(case: Case) -> GoldenStream:
    n, t, _ = case.x_q.shape
    stream = GoldenStream()
    stream.word(n)
    stream.word(t)
    stream.words_of(case.x_q)
    stream.cases = n * (t + 1)  # the driver's result lines: one per step plus one replay per sequence
    return stream


def check(case: Case, stdout: str) -> None:
    """Every state and output line of the driver equals the NumPy runtime's; names the first mismatch."""
    n, t, _ = case.x_q.shape
    results = fb.parse_results(stdout, n * (t + 1))
    sizes = [s.shape[-1] for s in case.states]
    index = 0
    for seq in range(n):
        for step in range(t):
            line = results[index]
            offset = 0
            for layer, size in enumerate(sizes):
                assert_identical(line[offset:offset + size], case.states[layer][seq, step],
                                 f"{case.name}: sequence {seq} step {step} layer {layer} state")
                offset += size
            assert_identical(line[offset:], case.ys[seq, step], f"{case.name}: sequence {seq} step {step} output y")
            index += 1
        assert_identical(results[index], case.ys[seq, t - 1],
                         f"{case.name}: sequence {seq} output after save/restore and replay")
        index += 1


def export(case: Case, build_dir: Path, optimize: str = "speed") -> tuple[Path, dict]:
    """The model's generated .c and the driver's defines (the constants in the ``optimize`` form)."""
    out = build_dir / case.name
    c_export.export_c(case.qmodel, out, optimize=optimize)
    return out / "grukit_model.c", {"GRUKIT_MODEL_HEADER": f'"{out / "grukit_model.h"}"'}


def run_on_host(case: Case, build_dir: Path, sanitize: bool, extra_defines: dict | None = None,
                optimize: str = "speed") -> None:
    model_c, defines = export(case, build_dir, optimize)
    exe = fb.build_host([GRU_SOURCE, model_c, GRU_DRIVER], build_dir / f"{case.name}_{sanitize}", sanitize=sanitize,
                        defines={**defines, **(extra_defines or {})})
    golden = golden_stream(case).write_text(build_dir / f"{case.name}.golden.txt")
    check(case, fb.run_host(exe, golden))


def check_on_machine(case: Case, build_dir: Path, machine: str, optimize: str = "speed", dsp: bool = True,
                     extra_defines: dict | None = None) -> None:
    """The driver on ``machine`` ("host": the host compiler, sanitized where the sanitizers work; else QEMU's
    machine, skipped without its tools), the constants in the ``optimize`` form, checked line by line."""
    if machine == "host":
        run_on_host(case, build_dir, fb.sanitizers_work(fb.require_host_cc(), build_dir), extra_defines, optimize)
        return
    fb.require_arm_tools(machine)
    model_c, defines = export(case, build_dir, optimize)
    defines.update(extra_defines or {})
    golden_c = golden_stream(case).write_c(build_dir / "golden.c", "tests/test_firmware_gru.py (NumPy runtime)")
    elf = fb.build_arm([GRU_SOURCE, model_c, GRU_DRIVER, golden_c], build_dir / "gru.elf", dsp=dsp, defines=defines,
                       machine=machine)
    check(case, fb.run_qemu(elf, machine=machine))


# ---------------------------------------------------------------- host


@pytest.mark.parametrize("spec", RANDOM_MODELS, ids=[m[0] for m in RANDOM_MODELS])
def test_random_model_host_matches_numpy(spec, tmp_path):
    run_on_host(make_case(*spec), tmp_path, sanitize=False)


@pytest.mark.parametrize("spec", [m for m in RANDOM_MODELS if m[0] in SANITIZED],
                         ids=[m[0] for m in RANDOM_MODELS if m[0] in SANITIZED])
def test_random_model_sanitized_matches_numpy(spec, tmp_path):
    if not fb.sanitizers_work(fb.require_host_cc(), tmp_path):
        pytest.skip("the host cc cannot link -fsanitize=undefined,address (install libasan / libubsan)")
    run_on_host(make_case(*spec), tmp_path, sanitize=True)


@pytest.mark.parametrize("scheme", ["int8", "16x8"])
def test_demo_model_host_matches_numpy(scheme, tmp_path):
    run_on_host(demo_case(scheme), tmp_path, sanitize=False)


def test_example_main_streams_like_numpy(tmp_path):
    """The generated main.c compiles strictly and prints the NumPy runtime's outputs for its samples."""
    case = make_case(*RANDOM_MODELS[1])  # per-step head: one y line per step
    paths = c_export.export_c(case.qmodel, tmp_path / "gen")
    exe = fb.build_host([GRU_SOURCE, paths[1], paths[2]], tmp_path / "example")
    lines = [line.split() for line in fb.run_host(exe).splitlines() if line.startswith("y ")]
    got = np.array([[int(v) for v in line[2:]] for line in lines])
    x_q = case.qmodel.quantize_input(c_export.example_input(case.qmodel))
    assert_identical(np.ravel(got), np.ravel(case.qmodel.predict_int(x_q)[0]), "example main.c outputs")


QUANTIZE_DRIVER = r"""
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include MODEL_HEADER

/* Reads float32 bit patterns (hex, one per line), prints grukit_model_quantize_input of each. */
int main(void)
{
    unsigned long bits;
    while (scanf("%lx", &bits) == 1) {
        const uint32_t word = (uint32_t)bits;
        float x;
        memcpy(&x, &word, sizeof x);
        printf("%ld\n", (long)grukit_model_quantize_input(x));
    }
    return 0;
}
"""


def _half_step_inputs(q) -> np.ndarray:
    """float32 values at, and one and two ulps around, (k + 1/2) * scale for k across the range and beyond it
    (where rounding decides), exact multiples of the scale, the range's ends and infinities."""
    k = np.arange(q.qmin - q.zero_point - 3, q.qmax - q.zero_point + 3, max(1, (q.qmax - q.qmin) // 300))
    halves = ((k + 0.5) * q.scale).astype(np.float32)
    near = [np.nextafter(halves, np.float32(np.inf)), np.nextafter(halves, np.float32(-np.inf)),
            np.nextafter(np.nextafter(halves, np.float32(np.inf)), np.float32(np.inf)),
            np.nextafter(np.nextafter(halves, np.float32(-np.inf)), np.float32(-np.inf))]
    whole = (k * q.scale).astype(np.float32)
    ends = np.array([0.0, -0.0, np.inf, -np.inf, 3.0e38, -3.0e38], np.float32)
    values = np.concatenate([halves, -halves, *near, *(-n for n in near), whole, ends])
    return values.astype(np.float32)


# (scheme, input scale, zero point): one row per rounding situation.
QUANTIZE_CASES = [
    ("int8", 0.1, 0),  # 0.049999997f / 0.1f is just below 0.5: float32 + 0.5f rounded it up to 1
    ("int8", 0.0235, -17),  # an asymmetric input
    ("16x8", 0.1, 0),
    ("16x8", 3.0517578125e-05, 0),  # 2^-15: every half-step is exact in float32
]


@pytest.mark.parametrize("scheme, scale, zero_point", QUANTIZE_CASES)
def test_generated_quantize_input_equals_qparams(scheme, scale, zero_point, tmp_path):
    """The header's <name>_quantize_input, compiled strictly, gives QParams.quantize's integers."""
    fb.require_host_cc()
    case = make_case(*next(m for m in RANDOM_MODELS if m[2] == scheme))
    dtype = case.qmodel.input_q.dtype
    input_q = QParams(scale, zero_point, dtype)
    # Only the header's input quantization is exercised: the first layer's input QParams set to the row's.
    first = case.qmodel.layers[0]
    first = dataclasses.replace(first, qparams={**first.qparams, "x": input_q})
    qmodel = dataclasses.replace(case.qmodel, layers=(first, *case.qmodel.layers[1:]))
    header = c_export.export_c(qmodel, tmp_path / "gen")[0]
    driver = tmp_path / "quantize_driver.c"
    driver.write_text(QUANTIZE_DRIVER)
    exe = build.build_host([driver], tmp_path / "quantize", defines={"MODEL_HEADER": f'"{header}"'})
    x = _half_step_inputs(input_q)
    if (scale, zero_point) == (0.1, 0):
        # x / scale is just below 0.5, so 0; float32 arithmetic adding 0.5f before truncating (the old
        # generated main.c) rounded the sum up to 1.0f and gave 1.
        assert np.float32(0.049999997) / np.float32(0.1) + np.float32(0.5) == np.float32(1.0)
        x = np.concatenate([x, np.float32([0.049999997, -0.049999997])])
    stdin = "\n".join(f"{int(v):08x}" for v in x.view(np.uint32)).encode()
    got = [int(v) for v in build.run_program([str(exe)], "quantize driver", stdin=stdin).split()]
    with np.errstate(invalid="ignore"):  # +-inf: NumPy's rounding subtracts inf from inf before clipping
        expected = input_q.quantize(x)
    assert_identical(np.ravel(got), np.ravel(expected),
                     f"{scheme} scale {scale} zp {zero_point}: C quantize_input vs QParams.quantize")


def test_generated_files_are_reproducible_and_labelled(tmp_path):
    case = make_case(*RANDOM_MODELS[0])
    first = [p.read_bytes() for p in c_export.export_c(case.qmodel, tmp_path / "a")]
    second = [p.read_bytes() for p in c_export.export_c(case.qmodel, tmp_path / "b")]
    assert first == second
    banner = first[1].decode().splitlines()[0]
    assert f"grukit {grukit.__version__}" in banner and "random0" in banner and "int8" in banner


# ---------------------------------------------------------------- run_c_host (the package API)

# (spec from RANDOM_MODELS, N, T): validation-sized batches through grukit.runtime.host.run_c_host.
HOST_RUN_MODELS = [
    (RANDOM_MODELS[2], 40, 30),  # int8, two layers, last-step head
    (RANDOM_MODELS[4], 20, 25),  # int8, mixed variants, per-step, no head
    (RANDOM_MODELS[7], 40, 30),  # 16x8, two layers, per-step head
]


@pytest.mark.parametrize("spec,n,t", HOST_RUN_MODELS, ids=[m[0][0] for m in HOST_RUN_MODELS])
def test_run_c_host_equals_run_int(spec, n, t):
    fb.require_host_cc()
    case = make_case(*spec)
    x = random_inputs(spec[1] + 900, N=n, T=t, I=spec[5], scale=1.5)
    x_q = case.qmodel.quantize_input(x)
    y_q, states = host.run_c_host(case.qmodel, x_q)
    y_ref, states_ref = case.qmodel.run_int(x_q)
    assert y_q.dtype == y_ref.dtype and y_q.shape == y_ref.shape, (y_q.dtype, y_q.shape, y_ref.dtype, y_ref.shape)
    assert_identical(y_q, y_ref, f"{case.name}: run_c_host y")
    assert len(states) == len(states_ref)
    for layer, (got, expected) in enumerate(zip(states, states_ref)):
        assert got.shape == expected.shape and got.dtype == expected.dtype, (layer, got.shape, expected.shape)
        assert_identical(got, expected, f"{case.name}: run_c_host layer {layer} states")


def general_requant_case() -> Case:
    """Rows with a left shift and with right shift 0 take the C kernel's general requantization path, which
    calibrated models rarely need: the head's first rows get such scales (the NumPy runtime uses them too),
    and one-hot weights so that their outputs do not all saturate; a head of 5 rows, so that they fall in a
    whole block of 4 (which the M55's Helium loop requantizes as one vector)."""
    case = make_case("general_requant", 1, "int8", 0, 1, 5, 13, 5, True, True)  # s8_lbr0_odd with 5 outputs
    H = case.qmodel.layers[-1].hidden_size
    one_hot = lambda k, v: np.eye(H, dtype=np.int8)[k] * np.int8(v)
    qmodel = _with_head_rows(case.qmodel, {
        0: (one_hot(0, 1), 3, Requant(1_500_000_000, 1)),  # x 1.4: a left shift
        1: (one_hot(1, -1), -5, Requant(1_234_567_890, 0)),  # x 0.57: no rounding after SRDHM
        2: (one_hot(2, 1), 0, Requant(1 << 30, 0)),  # x 0.5 exactly: every odd input is a tie of SRDHM
    })
    x_q = qmodel.quantize_input(random_inputs(77, N=20, T=8, I=5, scale=1.5))
    y_ref = qmodel.run_int(x_q)[0]
    assert all(len(np.unique(y_ref[..., o])) > 20 for o in range(3)), "the test rows should not saturate"
    return Case("general_requant", qmodel, x_q)


def test_general_requantization_rows_match_numpy():
    fb.require_host_cc()
    case = general_requant_case()
    y_q, _ = host.run_c_host(case.qmodel, case.x_q)
    assert_identical(y_q, case.qmodel.run_int(case.x_q)[0], "general requantization rows")


@pytest.mark.parametrize("machine,optimize", [("host", "size"), ("mps2-an386", "speed"), ("mps3-an547", "size")],
                         ids=["host-size", "m4-speed", "m55-size"])
def test_general_requantization_rows_match_numpy_in_every_path(machine, optimize, tmp_path):
    """The same rows through the size form (the compact requantization; on the M55 the Helium block loop's
    general variant, the other products taking its fast one) and the M4's speed form (the C block loop beside
    the assembly one of the other products)."""
    case = general_requant_case()
    model = KN.prepare_model(case.qmodel, optimize=optimize)
    assert (model.layers[0].x_fc.general_requant, model.head[0].fc.general_requant) == (0, 1)
    check_on_machine(case, tmp_path, machine, optimize)


def test_run_c_host_refuses_wrong_input():
    fb.require_host_cc()
    case = make_case(*RANDOM_MODELS[0])
    with pytest.raises(grukit.BadInputError, match="int8"):
        host.run_c_host(case.qmodel, case.x_q.astype(np.int16))
    with pytest.raises(grukit.BadInputError, match="\\[N, T, 4\\]"):
        host.run_c_host(case.qmodel, case.x_q[:, :, :3])


def test_firmware_dir_override_must_hold_the_sources(tmp_path, monkeypatch):
    assert (build.firmware_dir() / "src" / "grukit_gru.c").is_file()
    monkeypatch.setenv(build.FIRMWARE_ENV, str(tmp_path))
    with pytest.raises(grukit.BadInputError, match="GRUKIT_FIRMWARE_DIR"):
        build.firmware_dir()


# ---------------------------------------------------------------- emulated Cortex-M4, M7, M33, M55, M0+ and RV32

ARM_MODELS = [RANDOM_MODELS[1], RANDOM_MODELS[2], RANDOM_MODELS[7]]


# (model, DSP path, machine): one line per row's purpose. A machine that cannot run here is skipped, the
# reason (missing package, no machine in the installed QEMU) in the skip message.
ARM_RUNS = [
    (ARM_MODELS[0], True, "mps2-an386"),  # Cortex-M4, SXTB16/SMLAD path
    (ARM_MODELS[0], False, "mps2-an386"),  # Cortex-M4, portable C loops
    (ARM_MODELS[1], True, "mps2-an386"),
    (ARM_MODELS[2], True, "mps2-an386"),  # 16x8
    (ARM_MODELS[1], True, "mps2-an500"),  # Cortex-M7
    (ARM_MODELS[1], True, "mps2-an505"),  # Cortex-M33 (Armv8-M Mainline + DSP), Secure memory map
    (ARM_MODELS[2], True, "mps2-an505"),  # Cortex-M33, 16x8
    (ARM_MODELS[1], True, "mps3-an547"),  # Cortex-M55 (Armv8.1-M, MVE), TCM memory map
    (ARM_MODELS[2], True, "mps3-an547"),  # Cortex-M55, 16x8
    (ARM_MODELS[0], False, "mps3-an547"),  # Cortex-M55, portable loops (GCC 12 -O2 emits scalar code, no MVE)
    (ARM_MODELS[0], False, "microbit"),  # Cortex-M0+ code (Armv6-M: portable loops, soft float), 16 KB RAM
    (ARM_MODELS[1], False, "microbit"),
    (ARM_MODELS[2], False, "microbit"),  # Cortex-M0+, 16x8
    (ARM_MODELS[0], False, "virt"),  # RISC-V RV32 (picolibc, semihosting), portable loops
    (ARM_MODELS[1], False, "virt"),
    (ARM_MODELS[2], False, "virt"),  # RV32, 16x8
]
CORE_IDS = {"mps2-an386": "m4", "mps2-an500": "m7", "mps2-an505": "m33", "mps3-an547": "m55", "microbit": "m0plus",
            "virt": "rv32"}


@pytest.mark.parametrize("spec,dsp,machine", ARM_RUNS,
                         ids=[f"{s[0]}-{'dsp' if d else 'portable'}-{CORE_IDS[m]}" for s, d, m in ARM_RUNS])
def test_emulated_core_matches_numpy(spec, dsp, machine, tmp_path):
    check_on_machine(make_case(*spec), tmp_path, machine, dsp=dsp)


@pytest.mark.parametrize("which", ["s8_lbr0_odd", "saturating_int8"])
def test_dsp_passes_without_their_assembly_match_numpy(which, tmp_path):
    """The int8 speed form's DSP passes run four units per iteration in assembly, its dense products' block loop
    is assembly too; a build without optimization (GRUKIT_PASSES_ASM 0, GRUKIT_BLOCKS_ASM 0, forced here in an -O2
    build) runs their C loops instead: an odd H (the C tail as well), lbr 0, and h as the unit input of h - n."""
    case = make_case(*ARM_MODELS[0]) if which == "s8_lbr0_odd" else saturating_case("int8")
    check_on_machine(case, tmp_path, "mps2-an386", extra_defines={"GRUKIT_PASSES_ASM": 0, "GRUKIT_BLOCKS_ASM": 0})


# ---------------------------------------------------------------- 16x8 fused kernel

# (spec as RANDOM_MODELS): 16x8 cases beyond RANDOM_MODELS', one line per purpose.
S16_MODELS = [
    ("s16_h128_lbr1_2layers", 10, "16x8", 1, 2, 16, 128, 4, True, True),  # the largest size, lbr 1, stacked
    ("s16_lbr1_3layers_odd", 11, "16x8", 1, 3, 6, 23, 3, False, True),  # three layers, lbr 1, odd sizes
    ("s16_mixed_i40", 12, "16x8", [1, 0], 2, 40, 64, 0, True, False),  # wide input, mixed variants, no head
]


@pytest.mark.parametrize("spec", S16_MODELS, ids=[m[0] for m in S16_MODELS])
def test_16x8_model_host_matches_numpy(spec, tmp_path):
    run_on_host(make_case(*spec), tmp_path, sanitize=False)


def test_16x8_lbr1_sanitized_matches_numpy(tmp_path):
    if not fb.sanitizers_work(fb.require_host_cc(), tmp_path):
        pytest.skip("the host cc cannot link -fsanitize=undefined,address (install libasan / libubsan)")
    run_on_host(make_case(*S16_MODELS[1]), tmp_path, sanitize=True)


def _with_head_rows(qmodel, rows: dict):
    """qmodel with rows of its head's (first) dense layer replaced: {row: (weights, bias, Requant)}."""
    dense = qmodel.head.layers[0]
    w_q, bias_q = np.array(dense.fc.w_q), np.array(dense.fc.bias_q)
    requants = list(dense.prepared.output_requants)
    for row, (w, b, requant) in rows.items():
        w_q[row], bias_q[row], requants[row] = w, b, requant
    fc = dataclasses.replace(dense.fc, w_q=w_q, bias_q=bias_q)
    prepared = dataclasses.replace(dense.prepared, output_requants=tuple(requants))
    dense = dataclasses.replace(dense, fc=fc, prepared=prepared)
    return dataclasses.replace(qmodel, head=dataclasses.replace(qmodel.head, layers=(dense, *qmodel.head.layers[1:])))


def test_16x8_extreme_rows_match_numpy():
    """Head rows at the ends of the row form's range, one-hot weights: a left-shifted dot (shift 7, the
    largest), a bias far beyond int32 with the smallest shift (the high word shifted right by 14), and
    shift 0 with the multiplier that rounds to 2^15 (kept at 0x7FFF), whose outputs vary."""
    fb.require_host_cc()
    case = make_case(*RANDOM_MODELS[7])  # 16x8, per-step head on H = 13
    H = case.qmodel.layers[-1].hidden_size
    one_hot = lambda k, v: np.eye(H, dtype=np.int8)[k] * np.int8(v)
    qmodel = _with_head_rows(case.qmodel, {
        0: (one_hot(0, 1), -7, Requant(1_100_000_000, 7)),
        1: (one_hot(1, 100), 3 * (1 << 44) + 12345, Requant(1_300_000_000, -31)),
        2: (one_hot(2, -1), 5, Requant((1 << 31) - 1, 0)),
    })
    x_q = qmodel.quantize_input(random_inputs(78, N=20, T=8, I=5, scale=1.5))
    y_q, _ = host.run_c_host(qmodel, x_q)
    y_ref = qmodel.run_int(x_q)[0]
    assert len(np.unique(y_ref[..., 2])) > 20, "the shift-0 row should not saturate"
    assert_identical(y_q, y_ref, "16x8 extreme head rows")


@pytest.mark.parametrize("spec,dsp", [
    (RANDOM_MODELS[6], True),  # lbr 1, SXTB16/SMLAD/SMLAL/SMMLAR
    (RANDOM_MODELS[6], False),  # lbr 1, the portable loops on the same core
    (RANDOM_MODELS[7], False),  # lbr 0, stacked, portable
], ids=["s16_lbr1_small-dsp", "s16_lbr1_small-portable", "s16_lbr0_odd-portable"])
def test_cortex_m4_16x8_matches_numpy(spec, dsp, tmp_path):
    check_on_machine(make_case(*spec), tmp_path, "mps2-an386", dsp=dsp)


# ---------------------------------------------------------------- Armv6-M's high multiply


@pytest.mark.parametrize("spec", [RANDOM_MODELS[1], RANDOM_MODELS[7]], ids=[RANDOM_MODELS[1][0], RANDOM_MODELS[7][0]])
def test_split_high_multiply_of_armv6m_matches_numpy_on_the_host(spec, tmp_path):
    """The Cortex-M0+'s high multiply from 16-bit halves (no 64-bit product on Armv6-M), forced on the host
    with GRUKIT_MUL_HIGH_SPLIT and built with UBSan + ASan: every requantization of both schemes goes
    through it, and every state and output must still be the NumPy runtime's."""
    if not fb.sanitizers_work(fb.require_host_cc(), tmp_path):
        pytest.skip("the host cc cannot link -fsanitize=undefined,address (install libasan / libubsan)")
    run_on_host(make_case(*spec), tmp_path, sanitize=True, extra_defines={"GRUKIT_MUL_HIGH_SPLIT": None})


SPLIT_PROBE = r"""
#ifdef PROBE_SPLIT
#define GRUKIT_MUL_HIGH_SPLIT 1
#else
#define GRUKIT_MUL_HIGH_LOW 1
#endif
#include "grukit_gru.c"
#include <stdio.h>

static int check(int32_t x, int32_t m, int32_t acc)
{
    const int32_t want = acc + (int32_t)(((int64_t)x * m + (INT64_C(1) << 31)) >> 32);
    const int32_t got = mul_high_rounded_acc_s32(x, m, acc);
    if (got != want) {
        printf("MISMATCH x=%ld m=%ld acc=%ld got=%ld want=%ld\n", (long)x, (long)m, (long)acc, (long)got, (long)want);
        return 1;
    }
    return 0;
}

int main(void)
{
    static const int32_t edges[] = {INT32_MIN, INT32_MIN + 1, -65537, -65536, -65535, -32769, -32768, -1, 0, 1,
                                    32767, 32768, 65535, 65536, 65537, INT32_MAX - 1, INT32_MAX};
    static const int32_t multipliers[] = {0, 1, 32767, 32768, 65535, 65536, 1 << 30, (1 << 30) + 1, INT32_MAX};
    uint32_t state = 12345u;
    for (size_t i = 0; i < sizeof edges / sizeof *edges; ++i) {
        for (size_t j = 0; j < sizeof multipliers / sizeof *multipliers; ++j) {
            if (check(edges[i], multipliers[j], 7)) return 1;
        }
    }
    for (long n = 0; n < 20000000L; ++n) { /* the rounding boundary: x m within 2^16 of a multiple of 2^32 */
        state = state * 1664525u + 1013904223u;
        const int32_t x = (int32_t)state;
        state = state * 1664525u + 1013904223u;
        const int32_t m = (int32_t)(state >> 1);
        if (check(x, m, 0)) return 1;
        if ((n & 1023) == 0) { /* x with low bits chosen so that x m + 2^31 lands next to a multiple of 2^32 */
            for (int32_t d = -2; d <= 2; ++d) {
                const int64_t boundary = (((int64_t)x * m) >> 32) * (INT64_C(1) << 32) - (INT64_C(1) << 31);
                if (m != 0 && check((int32_t)(boundary / m + d), m, 0)) return 1;
            }
        }
    }
    printf("OK\n");
    return 0;
}
"""


@pytest.mark.parametrize("split", [True, False], ids=["armv6m-split", "rv32-high-low"])
def test_split_high_multiply_equals_the_64_bit_product(split, tmp_path):
    """mul_high_rounded_acc_s32's Armv6-M form (GRUKIT_MUL_HIGH_SPLIT) and its RV32 form (GRUKIT_MUL_HIGH_LOW: the
    high word plus the low word's top bit, for MULH) against the 64-bit product with + 2^31 they replace: edge
    values and 20 million pseudo-random pairs, with extra points next to the rounding boundaries, where a wrong
    carry or rounding term shows (a whole-model run almost never reaches them)."""
    probe = tmp_path / "split_probe.c"
    probe.write_text(SPLIT_PROBE)
    exe = fb.build_host([probe], tmp_path / "split_probe", sanitize=fb.sanitizers_work(fb.require_host_cc(), tmp_path),
                        defines={"PROBE_SPLIT": None} if split else {})
    assert fb.run_host(exe, timeout_s=600).strip() == "OK"


# (spec as RANDOM_MODELS): products of depth up to 64 in k = 1 .. 4 chunks of 16, the last whole or partial, which
# Helium runs with the input in vector registers (blocks_xq_s8), in every role: input, state (lbr 0: hn too), a
# stacked layer's input, the head.
XQ_MODELS = [
    ("s8_depths_16_48", 20, "int8", 0, 1, 16, 48, 4, True, True),  # k = 1 (x), 3 (h, hn, head), whole
    ("s8_depths_64_16", 21, "int8", 1, 2, 64, 16, 6, False, True),  # k = 4 (x), 1 (h, layer 1, head), whole
    ("s8_depths_32", 22, "int8", 1, 1, 32, 32, 4, False, True),  # k = 2 (all), whole
    ("s8_depths_20_50", 23, "int8", 0, 1, 20, 50, 4, True, True),  # k = 2 (x, 4 of 16), 4 (h, hn, head, 2 of 16)
    ("s8_depths_40_63", 24, "int8", 1, 2, 40, 63, 3, False, True),  # k = 3 (x, 8), 4 (h, layer 1, head, 15)
    ("s8_depths_1_36", 25, "int8", 1, 1, 1, 36, 4, False, True),  # k = 1 (x, 1 of 16), 3 (h, head, 4)
]


@pytest.mark.parametrize("spec", XQ_MODELS, ids=[m[0] for m in XQ_MODELS])
def test_helium_products_with_the_input_in_registers_match_numpy(spec, tmp_path):
    fb.require_arm_tools("mps3-an547")
    case = make_case(*spec)
    model = KN.prepare_model(case.qmodel, optimize="size")
    depths = {fc.depth for layer in model.layers for fc in (layer.x_fc, layer.h_fc, layer.hn_fc) if fc.rows}
    assert max(depths | {d.fc.depth for d in model.head}) <= 64
    assert not any(fc.general_requant for layer in model.layers for fc in (layer.x_fc, layer.h_fc))
    check_on_machine(case, tmp_path, "mps3-an547", "size")


# ---------------------------------------------------------------- the element-wise passes: activations, unit inputs

def test_helium_activations_equal_tflite_s_on_every_table_input():
    """The Helium LOGISTIC / TANH (grukit_gru.c, activate_s16_mve) clamp |v| to 255 * 2^f - 1 where TFLite
    saturates, round once by 2^10 / 2^8 and reflect negative inputs with an XOR: this replays that arithmetic in
    numpy against the spec's (ops_int) for every table input |v| < 2^18 (the index runs past 255 at both 9 and
    8 fraction bits) and for the extremes up to the kernel's bound 2^30."""
    from grukit.core.ops_int import SIGMOID_TABLE_U16 as table, _interpolate

    v = np.concatenate([np.arange(-(1 << 18), 1 << 18), [-(1 << 30) + 1, (1 << 30) - 1, -(1 << 24), 1 << 24]])
    v = v.astype(np.int64)
    m = v >> 63  # the sign mask: -1 below 0
    for tanh, bits, saturated in ((False, 9, 0x7FFF << 10), (True, 8, 0xFFFF << 8)):
        interp, is_saturated = _interpolate(np.abs(v), bits)
        s = np.where(is_saturated, saturated, interp)
        if tanh:
            expected = np.where(v >= 0, s - (1 << 23) + (1 << 7), -s + (1 << 23) + (1 << 7) - 1) >> 8
        else:
            expected = np.where(v >= 0, s + (1 << 9), (1 << 25) - s + (1 << 9) - 1) >> 10
        a = np.minimum(np.abs(v), (255 << bits) - 1)
        index = a >> bits
        lo, hi = table[index], table[index + 1]
        clamped = (lo << bits) + (a & ((1 << bits) - 1)) * (hi - lo)
        if tanh:
            r = (clamped + (1 << 7)) >> 8
            got = ((r - (1 << 15)) ^ m) - m
        else:
            r = (clamped + (1 << 9)) >> 10
            got = (r ^ m) - m * ((1 << 15) + 1)
        assert_identical(got, expected, f"{'TANH' if tanh else 'LOGISTIC'} of the table input v")


def saturating_case(scheme: str) -> Case:
    """A model whose gates saturate and whose state reaches +-1: its h scale exceeds n's, so h is the unit input
    of h - n (in most golden models n is)."""
    model = random_model(10, I=4, H=14, O=3, scale=4.0)
    qmodel = grukit.quantize(model, random_inputs(10, N=CALIB_N, T=40, I=4, scale=3.0), scheme=scheme)
    x = random_inputs(510, N=GOLDEN_N, T=GOLDEN_T, I=4, scale=3.0)
    return Case(f"saturating_{scheme}", qmodel, qmodel.quantize_input(x))


@pytest.mark.parametrize("scheme", ["int8", "16x8"])
@pytest.mark.parametrize("optimize", ["speed", "size"])
@pytest.mark.parametrize("machine,dsp", [("host", False), ("mps2-an386", True), ("microbit", False),
                                         ("mps3-an547", True)], ids=["host", "m4", "m0plus", "m55"])
def test_the_state_as_unit_input_matches_numpy(machine, dsp, optimize, scheme, tmp_path):
    """Every path takes each ADD/SUB's unit input (multiplier 1/2) as a shift of x; h - n with h the unit input
    puts the SUB's minus on the other term, a case only a saturating model reaches: on the host, the M4's DSP
    passes, the M0+ and the M55 (Helium in the size form), both forms, both schemes."""
    case = saturating_case(scheme)
    sub = case.qmodel.layers[0].prepared["h_minus_n"]
    assert sub.input1 == Requant(1 << 30, 0) != sub.input2
    check_on_machine(case, tmp_path, machine, optimize, dsp)


# A host program: init on the generated model (of one layer: the copy holds layer 0 only), then on a copy that BREAK
# has rewritten (its layer 0 or its model struct; with no BREAK, the model as generated); prints both statuses.
INIT_PROBE = """#include <stdio.h>
#include <string.h>
#include GRUKIT_MODEL_HEADER
static grukit_model_value_t state[GRUKIT_MODEL_STATE_BYTES];
int main(void)
{{
    grukit_gru_layer_{s} layer = grukit_model.layers[0];
    grukit_model_{s} model = grukit_model;
{brk}
    model.layers = &layer;
    printf("%d %d\\n", grukit_model_{s}_init(&grukit_model, state, sizeof state, GRUKIT_MODEL_SCRATCH_BYTES),
           grukit_model_{s}_init(&model, state, sizeof state, GRUKIT_MODEL_SCRATCH_BYTES));
    return 0;
}}
"""
UNIT_INPUT_BREAKS = {"16x8": """
    if (layer.h_minus_n.input1.multiplier == 1 << 30) {
        layer.h_minus_n.input1 = layer.h_minus_n.input2; /* both the rescaled input's */
    }
    layer.h_minus_n.input2 = layer.h_minus_n.input1;""", "int8": """
    grukit_add_fast_s8 adds[5];
    memcpy(adds, layer.adds, sizeof adds);
    if (adds[3].input1_multiplier == 1 << 30 && adds[3].input1_shift == 0) {
        adds[3].input1_multiplier = adds[3].input2_multiplier; /* both the rescaled input's */
        adds[3].input1_shift = adds[3].input2_shift;
    }
    adds[3].input2_multiplier = adds[3].input1_multiplier;
    adds[3].input2_shift = adds[3].input1_shift;
    layer.adds = adds;""", "int8-speed": """
    const int32_t *table = layer.h_minus_n.input1_term2 != NULL ? layer.h_minus_n.input1_term2
                                                                  : layer.h_minus_n.input2_term2;
    layer.h_minus_n.input1_term2 = layer.h_minus_n.input2_term2 = table; /* two tables, no unit input */"""}


@pytest.mark.parametrize("scheme", ["int8", "int8-speed", "16x8"])
def test_init_refuses_an_add_without_a_unit_input(scheme, tmp_path):
    """GRUKIT_ERROR_BAD_CONSTANTS (4): constants the generator cannot write (an ADD/SUB whose inputs are both
    rescaled: int8's computed ADD/SUB of the size form, its tables of the speed form, 16x8's) rather than wrong
    numbers from a kernel that takes one input as a shift; the generator refuses such an ADD/SUB itself."""
    case = make_case(*RANDOM_MODELS[0 if scheme.startswith("int8") else 6])
    model_c, defines = export(case, tmp_path, "size" if scheme == "int8" else "speed")
    probe = tmp_path / "probe.c"
    probe.write_text(INIT_PROBE.format(s="s16" if scheme == "16x8" else "s8", brk=UNIT_INPUT_BREAKS[scheme]))
    exe = fb.build_host([GRU_SOURCE, model_c, probe], tmp_path / "probe", defines=defines)
    assert fb.run_host(exe).split() == ["0", "4"]
    add = case.qmodel.layers[0].prepared["h_minus_n"]
    both_rescaled = dataclasses.replace(add, input1=add.input2 if add.input1 == Requant(1 << 30, 0) else add.input1)
    both_rescaled = dataclasses.replace(both_rescaled, input2=both_rescaled.input1)
    prepare = {"int8": KN.prepare_add_fast_s8, "int8-speed": KN.prepare_add_s8, "16x8": KN.prepare_add_s16}[scheme]
    with pytest.raises(grukit.UnsupportedModelError, match="no input of multiplier 1/2"):
        prepare("l0_h_minus_n", both_rescaled)


@pytest.mark.parametrize("optimize", ["speed", "size"])
def test_init_refuses_general_rows_in_a_product_flagged_fast(optimize, tmp_path):
    """GRUKIT_ERROR_BAD_CONSTANTS for a product whose general_requant is 0 while some row has a left shift or
    right shift 0: the fast requantization (the M4's assembly block loop, the M55's Helium one) would get those
    rows wrong."""
    case = general_requant_case()
    model_c, defines = export(case, tmp_path, optimize)
    probe = tmp_path / "probe.c"
    probe.write_text(INIT_PROBE.format(s="s8", brk="""
    grukit_dense_s8 head = grukit_model.head[0];
    head.fc.general_requant = 0; /* its rows 0-2 need the general requantization */
    model.head = &head;"""))
    exe = fb.build_host([GRU_SOURCE, model_c, probe], tmp_path / "probe", defines=defines)
    assert fb.run_host(exe).split() == ["0", "4"]
