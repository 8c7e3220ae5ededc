"""The C primitives (firmware_ref/src/grukit_ops.c) against the NumPy integer runtime, bit for bit.

The NumPy kernels (grukit.runtime.ops_int) write the golden vectors; the C driver
(firmware_ref/test/ops_driver.c) runs the same cases, built three ways: the host compiler with strict
warnings, the same with UBSan + ASan, and arm-none-eabi-gcc for QEMU's Cortex-M4 (which also exercises the
SXTB16/SMLAD path of the int8 fully connected), Cortex-M33 and Cortex-M55; the SysTick instruction counter
is checked on each machine against an assembly loop of known length. Parameters come from
grukit.quantize.prepare on random scales and zero points, several seeds per op. The requantization edge
cases are checked first against values worked out by hand from TFLite-Micro's definitions.
"""

from __future__ import annotations

import numpy as np
import pytest

import firmware_build as fb
from grukit.quantize import prepare as P
from grukit.quantize.qparams import QParams
from grukit.runtime import ops_int as K

SEEDS = (0, 1, 2)
INT32_MIN, INT32_MAX = -(2**31), 2**31 - 1


# ---------------------------------------------------------------- builds (one per session and kind)


@pytest.fixture(scope="session")
def host_driver(tmp_path_factory):
    """ops_driver built with the host cc and strict warnings."""
    out = tmp_path_factory.mktemp("host") / "ops_driver"
    return fb.build_host([fb.OPS_DRIVER_SOURCE], out)


@pytest.fixture(scope="session")
def sanitized_driver(tmp_path_factory):
    """ops_driver built with -fsanitize=undefined,address (skips if the sanitizer runtimes are missing)."""
    build_dir = tmp_path_factory.mktemp("sanitize")
    cc = fb.require_host_cc()
    if not fb.sanitizers_work(cc, build_dir):
        pytest.skip(f"{cc} cannot link -fsanitize=undefined,address (install libasan / libubsan)")
    return fb.build_host([fb.OPS_DRIVER_SOURCE], build_dir / "ops_driver", sanitize=True)


@pytest.fixture(params=["strict", "sanitized"])
def driver(request):
    """Each host build of the driver in turn."""
    return request.getfixturevalue("host_driver" if request.param == "strict" else "sanitized_driver")


def run_host_cases(driver, stream: fb.GoldenStream, tmp_path) -> dict[int, np.ndarray]:
    """Run the stream's cases through a host driver; results by case index."""
    stream.end()
    golden = stream.write_text(tmp_path / "golden.txt")
    return fb.parse_results(fb.run_host(driver, golden), stream.cases)


# ---------------------------------------------------------------- hand-worked requantization cases

# (x, multiplier, shift, expected): each expected value worked out by hand from TFLite's double rounding,
# SRDHM (ties toward +inf) then RoundingDivideByPOT (ties away from zero).
MQM_CASES = [
    (100, 2**30, 0, 50),  # x * 0.5, exact
    (1, 2**30, 0, 1),  # 0.5: SRDHM tie rounds up
    (-1, 2**30, 0, 0),  # -0.5: SRDHM tie rounds toward +inf, to 0
    (-3, 2**30, 0, -1),  # -1.5 -> -1, same rule
    (5, 2**30, -1, 2),  # 5/4 = 1.25, but SRDHM gives 3 (2.5 up), then 3/2 = 1.5 -> 2: double rounding
    (-5, 2**30, -1, -1),  # SRDHM -2.5 -> -2, then -2/2 = -1
    (-6, 2**30, -1, -2),  # SRDHM -3, then -1.5 -> -2: RoundingDivideByPOT ties away from zero
    (3, 2**30, 2, 6),  # left shift first: 12 * 0.5
    (INT32_MIN, INT32_MIN, 0, INT32_MAX),  # the one saturating SRDHM case
    (INT32_MAX, INT32_MAX, 0, 2**31 - 2),  # (2^31-1)^2 / 2^31 = 2^31 - 2 + (1 + 2^30)/2^31 -> 2^31 - 2
    (INT32_MAX, INT32_MAX, -31, 1),  # (2^31 - 2) / 2^31 -> 1
    (2**30, 2**30, -31, 0),  # 2^29 / 2^31 = 0.25 -> 0
    (12345, 0, 5, 0),  # a zero multiplier
]

# (x, multiplier, shift, expected) for the int64 path: multiplier reduced to round(m / 2^16) (0x7FFF at
# most), one rounding by 2^(15 - shift), ties toward +inf.
MQM_S64_CASES = [
    (3, 2**30, 0, 2),  # reduced 2^14: 3 * 2^14 / 2^15 = 1.5 -> 2
    (-3, 2**30, 0, -1),  # -1.5 -> -1: ties toward +inf
    (2**46, 2**31 - 1, -16, 32767 * 2**15),  # reduced saturates at 0x7FFF; 2^46 * 32767 / 2^31
    (-(2**47), 2**30, -20, -(2**26)),  # the lower bound of x: -2^47 * 2^14 / 2^35, exact
    (1000, 0x7FFF0000 - 1, 7, 127996),  # reduced rounds up to 0x7FFF; 32767000 / 2^8 = 127996.09 -> 127996
]


def test_multiply_by_quantized_multiplier_hand_cases(driver, tmp_path):
    stream = fb.GoldenStream()
    x, m, s, expected = zip(*MQM_CASES)
    fb.encode_mqm(stream, x, m, s)
    x64, m64, s64, expected64 = zip(*MQM_S64_CASES)
    fb.encode_mqm_s64(stream, x64, m64, s64)
    results = run_host_cases(driver, stream, tmp_path)
    fb.assert_same("multiply_by_quantized_multiplier", results[0], expected)
    fb.assert_same("multiply_by_quantized_multiplier_s64", results[1], expected64)


def test_sigmoid_table_is_the_runtime_table(host_driver, tmp_path):
    """The generated C table (firmware_ref/tools/gen_tables.py) is the NumPy runtime's."""
    stream = fb.GoldenStream()
    stream.case(fb.OP_SIGMOID_TABLE)
    results = run_host_cases(host_driver, stream, tmp_path)
    fb.assert_same("sigmoid_table_uint16", results[0], K.SIGMOID_TABLE_U16)


# ---------------------------------------------------------------- random cases from the NumPy Prepare


def _log_uniform(rng, lo_log2: float, hi_log2: float) -> float:
    return float(2.0 ** rng.uniform(lo_log2, hi_log2))


def _random_qparams(rng, dtype: str, lo_log2: float, hi_log2: float) -> QParams:
    zero_point = int(rng.integers(-128, 128)) if dtype == "int8" else 0
    return QParams(_log_uniform(rng, lo_log2, hi_log2), zero_point, dtype)


def _random_ints(rng, dtype: str, shape) -> np.ndarray:
    info = np.iinfo(dtype)
    return rng.integers(info.min, info.max + 1, size=shape).astype(dtype)


# (batches, input depth, output depth): odd sizes exercise the DSP loop's depth and row-pair tails.
FC_SHAPES = [(3, 37, 13), (2, 80, 64), (1, 1, 1), (4, 5, 3)]


def fc_cases(rng, dtype: str):
    """FULLY_CONNECTED cases [(x_q, w_q, bias or None, params)] with realistic, partly saturating scales."""
    cases = []
    for i, (n, k, o) in enumerate(FC_SHAPES):
        input_q = _random_qparams(rng, dtype, -8, -3)
        w_q, w_scales = P.quantize_weights_per_channel(rng.normal(0.0, 0.3, size=(o, k)))
        # Output scale near the accumulator's spread, times a factor that lets some outputs saturate.
        spread = float(input_q.scale) * float(np.mean(w_scales)) * 127 * 60 * np.sqrt(k)
        out_scale = spread * rng.uniform(0.3, 3.0) / (127 if dtype == "int8" else 32767)
        output_q = QParams(out_scale, int(rng.integers(-128, 128)) if dtype == "int8" else 0, dtype)
        params = P.prepare_fully_connected(input_q, w_scales, output_q)
        bias_dtype = np.int32 if dtype == "int8" else np.int64
        bias_real = rng.normal(0.0, spread / 4, size=o)
        bias = None if i == 3 else P.quantize_bias(bias_real, input_q.scale, w_scales, bias_dtype)
        cases.append((_random_ints(rng, dtype, (n, k)), w_q, bias, params))
    return cases


def binary_cases(rng, kind: str, dtype: str, size: int = 600):
    """ADD / SUB / MUL cases [((a, b), params)]: random scales and zero points, random and extreme inputs."""
    cases = []
    lo, hi = (-10, -2) if dtype == "int8" else (-16, -8)
    for _ in range(3):
        q1, q2 = _random_qparams(rng, dtype, lo, hi), _random_qparams(rng, dtype, lo, hi)
        if kind == "MUL":
            product_range = 2.0 ** rng.uniform(5, 9) if dtype == "int8" else 2.0 ** rng.uniform(13, 17)
            out_scale = float(q1.scale) * float(q2.scale) * product_range
            params_of = P.prepare_mul
        else:
            out_scale = max(q1.scale, q2.scale) * rng.uniform(0.5, 4.0)
            params_of = P.prepare_add if kind == "ADD" else P.prepare_sub
        out_q = QParams(out_scale, int(rng.integers(-128, 128)) if dtype == "int8" else 0, dtype)
        a, b = _random_ints(rng, dtype, size), _random_ints(rng, dtype, size)
        info = np.iinfo(dtype)
        a[:4], b[:4] = [info.min, info.max, info.min, info.max], [info.min, info.max, info.max, info.min]
        cases.append(((a, b), params_of(q1, q2, out_q)))
    return cases


def activation_cases(rng, kind: str, dtype: str, inputs: np.ndarray | None = None):
    """LOGISTIC / TANH cases [((x,), params)] over every input value (or `inputs`) for several scales."""
    out_q = (P.logistic_output_qparams if kind == "LOGISTIC" else P.tanh_output_qparams)(dtype)
    prepare = P.prepare_logistic if kind == "LOGISTIC" else P.prepare_tanh
    info = np.iinfo(dtype)
    x = np.arange(info.min, info.max + 1).astype(dtype) if inputs is None else inputs
    if dtype == "int8":
        in_qs = [_random_qparams(rng, dtype, -7, -1) for _ in range(8)]  # 256 inputs each: cheap
    else:
        # 2^-12 (and 2^-11 for TANH) take TFLM's power-of-two shortcut; the others the 15-bit multiplier.
        in_qs = [QParams(2.0**-12, 0, dtype), QParams(2.0**-11, 0, dtype)]
        in_qs += [_random_qparams(rng, dtype, -15, -9) for _ in range(2)]
    return [((x,), prepare(q, out_q)) for q in in_qs]


NUMPY_BINARY = {("ADD", "int8"): K.add_s8, ("ADD", "int16"): K.add_s16, ("SUB", "int8"): K.sub_s8,
                ("SUB", "int16"): K.sub_s16, ("MUL", "int8"): K.mul_s8, ("MUL", "int16"): K.mul_s16}  # fmt: skip
NUMPY_UNARY = {("LOGISTIC", "int8"): K.logistic_s8, ("TANH", "int8"): K.tanh_s8,
               ("LOGISTIC", "int16"): K.logistic_s16, ("TANH", "int16"): K.tanh_s16}  # fmt: skip


def add_op_cases(stream: fb.GoldenStream, kind: str, dtype: str, rng, expected: list, inputs=None) -> None:
    """Encode one op's random cases into `stream`; append (case index, label, NumPy output) to `expected`."""
    if kind == "FULLY_CONNECTED":
        numpy_fc = K.fully_connected_s8 if dtype == "int8" else K.fully_connected_s16
        for x_q, w_q, bias, params in fc_cases(rng, dtype):
            index = fb.encode_fully_connected(stream, x_q, w_q, bias, params)
            label = f"fully_connected {dtype} {x_q.shape}x{w_q.shape}"
            expected.append((index, label, numpy_fc(x_q, w_q, bias, params)))
        return
    if kind in ("LOGISTIC", "TANH"):
        cases, numpy_op = activation_cases(rng, kind, dtype, inputs), NUMPY_UNARY[(kind, dtype)]
    else:
        cases, numpy_op = binary_cases(rng, kind, dtype), NUMPY_BINARY[(kind, dtype)]
    for inputs_, params in cases:
        index = fb.encode_elementwise(stream, kind, inputs_, params)
        expected.append((index, f"{kind.lower()} {dtype} {params}", numpy_op(*inputs_, params)))


def check_results(results: dict[int, np.ndarray], expected: list) -> None:
    """Every case's C output equals NumPy's; the message names the op, parameters and first mismatch."""
    for index, label, numpy_out in expected:
        fb.assert_same(f"case {index} ({label})", results[index], numpy_out)


OPS = [(kind, dtype) for kind in ("FULLY_CONNECTED", "ADD", "SUB", "MUL", "LOGISTIC", "TANH")
       for dtype in ("int8", "int16")]  # fmt: skip


@pytest.mark.parametrize("kind,dtype", OPS, ids=[f"{k.lower()}_{d}" for k, d in OPS])
def test_host_matches_numpy(kind, dtype, driver, tmp_path):
    stream, expected = fb.GoldenStream(), []
    for seed in SEEDS:
        add_op_cases(stream, kind, dtype, np.random.default_rng(seed), expected)
    check_results(run_host_cases(driver, stream, tmp_path), expected)


# ---------------------------------------------------------------- the same on emulated Cortex-M cores

ARM_DRIVER_LIMITS = {"DRIVER_MAX_ELEMS": 8192, "DRIVER_MAX_WEIGHTS": 16384, "DRIVER_MAX_CHANNELS": 256}
ARM_ACTIVATION_INPUTS = 2048  # random int16 inputs per case (all 65536 run on the host)


# (DSP path, machine): the M4 both ways; the Armv8-M cores on their DSP path (the GRU tests run their
# portable loops). A machine that cannot run here is skipped with the reason.
ARM_RUNS = [(True, "mps2-an386"), (False, "mps2-an386"), (True, "mps2-an505"), (True, "mps3-an547")]


@pytest.mark.parametrize("dsp,machine", ARM_RUNS, ids=["m4-dsp", "m4-portable", "m33-dsp", "m55-dsp"])
def test_cortex_m_matches_numpy(dsp, machine, tmp_path):
    """Every op on QEMU's Cortex-M machines (mps2-an386 M4F, mps2-an505 M33, mps3-an547 M55), with and
    without the SXTB16/SMLAD fully connected."""
    fb.require_arm_tools(machine)
    rng = np.random.default_rng(0)
    stream, expected = fb.GoldenStream(), []
    for kind, dtype in OPS:
        inputs = None
        if kind in ("LOGISTIC", "TANH") and dtype == "int16":
            inputs = _random_ints(rng, dtype, ARM_ACTIVATION_INPUTS)
        add_op_cases(stream, kind, dtype, rng, expected, inputs)
    stream.end()
    golden_c = stream.write_c(tmp_path / "golden_ops.c", "tests/test_firmware_ops.py (grukit.runtime.ops_int)")
    elf = fb.build_arm([fb.OPS_DRIVER_SOURCE, golden_c], tmp_path / "ops_driver.elf", dsp=dsp,
                       defines=ARM_DRIVER_LIMITS, machine=machine)
    check_results(fb.parse_results(fb.run_qemu(elf, machine=machine), stream.cases), expected)


# ---------------------------------------------------------------- the instruction counter itself

COUNTED_LOOP_SOURCE = fb.FIRMWARE / "arm" / "counted_loop.c"
# Each of the four SysTick reads behind the printed difference is quantized to one tick.
TICK_READ_ERROR_TICKS = 4


@pytest.mark.parametrize("machine", ["mps2-an386", "mps2-an505", "mps3-an547"], ids=["m4", "m33", "m55"])
def test_systick_counts_a_counted_loop(machine, tmp_path):
    """instructions_from_ticks (per machine's SysTick clock) and board.c's conversion give the number of
    instructions of an assembly loop whose length is known by construction."""
    fb.require_arm_tools(machine)
    elf = fb.build_arm([COUNTED_LOOP_SOURCE], tmp_path / "counted_loop.elf", machine=machine)
    line = next(ln for ln in fb.run_qemu(elf, machine=machine).splitlines() if ln.startswith("LOOP "))
    instructions, ticks, board_instructions = map(int, line.split()[1:])
    tolerance = fb.instructions_from_ticks(TICK_READ_ERROR_TICKS, machine)
    got = fb.instructions_from_ticks(ticks, machine)
    assert abs(got - instructions) <= tolerance, (
        f"{machine}: {ticks} ticks = {got} instructions, expected {instructions}")
    assert abs(board_instructions - instructions) <= tolerance, (
        f"{machine}: board_ticks_to_instructions gave {board_instructions}, expected {instructions}")
