"""The size form of the C constants (grukit export --c --optimize size): compact products (both schemes) and
computed ADD / SUB terms (int8), against the NumPy runtime's integers.

The speed form's tests (tests/test_firmware_gru.py, test_firmware_kernel.py) run the same models through the
same drivers; here the constants are generated with optimize="size". Every integer is compared and a failure
names the first mismatch: the Python twin (kernel.run_model) against the op-by-op specification, the C on the
host (strict, and with UBSan + ASan), and the C on emulated cores (Cortex-M4 DSP and portable, M0+, RV32, and
the Cortex-M55's Helium path on every golden model of both schemes and the demo). Then what the form is for:
fewer flash bytes, the build that leaves the other form out, the CLI and the deploy report.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

import firmware_build as fb
import grukit
from gru_factory import random_inputs, random_model
from grukit.cli import main
from grukit.core.graph import ADD, SUB, step_ops
from grukit.firmware_ref import c_export, host
from grukit.firmware_ref import kernel as KN
from grukit.firmware_ref.measure import built_flash_bytes
from grukit.runtime.int_gru_reference import run_int_reference
from grukit.verify import assert_identical
from test_firmware_gru import (CORE_IDS, DATA, GRU_SOURCE, INIT_PROBE, RANDOM_MODELS, SANITIZED, check_on_machine,
                               demo_case, make_case)

S8_MODELS = [m for m in RANDOM_MODELS if m[2] == "int8"]
S16_MODELS = [m for m in RANDOM_MODELS if m[2] == "16x8"]


def _twin_matches(qmodel, x_q, what: str) -> None:
    y, states = KN.run_model(KN.prepare_model(qmodel, optimize="size"), x_q)
    y_ref, states_ref = run_int_reference(qmodel, x_q)
    assert_identical(y, y_ref, f"{what}: y")
    for layer, (got, expected) in enumerate(zip(states, states_ref)):
        assert_identical(got, expected, f"{what}: layer {layer} states")


@pytest.mark.parametrize("spec", RANDOM_MODELS, ids=[m[0] for m in RANDOM_MODELS])
def test_size_twin_equals_the_specification(spec):
    """Inputs 3x wider than calibration: the input quantization, the gates and the state saturate."""
    case = make_case(*spec)
    I = case.qmodel.layers[0].input_size
    _twin_matches(case.qmodel, case.qmodel.quantize_input(random_inputs(900, N=24, T=16, I=I, scale=3.0)), case.name)


@pytest.mark.parametrize("scheme", ["int8", "16x8"])
def test_size_twin_equals_the_runtime_on_the_demo(scheme):
    case = demo_case(scheme)
    _twin_matches(case.qmodel, case.x_q, case.name)


def test_computed_add_terms_equal_the_tables_on_every_input_pair():
    """Each ADD / SUB of a model, computed (size form) and tabulated (speed form), on all 65,536 input pairs."""
    qmodel = make_case(*S8_MODELS[1]).qmodel  # lbr 0, odd sizes
    a, b = (v.ravel() for v in np.meshgrid(np.arange(-128, 128), np.arange(-128, 128)))
    layer = qmodel.layers[0]
    kinds = {op.output: op.kind for op in step_ops(layer.linear_before_reset)}
    for name in ("z_pre", "r_pre", "n_pre", "h_minus_n", "h_new"):
        fast, table = KN.prepare_add_fast_s8(name, layer.prepared[name]), KN.prepare_add_s8(name, layer.prepared[name])
        computed, tabulated = ((KN.add_calc_s8, KN.add_tab_s8) if kinds[name] == ADD else
                               (KN.sub_calc_s8, KN.sub_tab_s8))
        assert kinds[name] in (ADD, SUB)
        assert_identical(computed(fast, a, b), tabulated(table, a, b), f"{name}: computed vs table")


def test_compact_weights_round_trip_with_a_tail():
    """Whole column quads stored (0, 2, 1, 3), the depth % 4 tail in order; unpacking gives the weights back."""
    w = np.arange(-60, 61, dtype=np.int64)[:7 * 11].reshape(7, 11)
    packed = KN.pack_compact_s8(w)
    assert list(packed[:4]) == [w[0, 0], w[0, 2], w[0, 1], w[0, 3]] and list(packed[8:11]) == list(w[0, 8:])
    assert_identical(KN.unpack_compact_s8(packed, 7, 11), w, "round trip")


def _high_word_from_lanes(d, multiplier, start_lo, start_hi):
    """requant_compact_s16_mve's 32-bit lane arithmetic, modelled here: VMULH (the product's high word, a floor)
    + start_hi + the carry of VMUL's low word + start_lo (an unsigned compare), wrapped to int32 as lanes wrap."""
    product = d * multiplier
    low_word = product & 0xFFFFFFFF
    carry = ((low_word + start_lo) & 0xFFFFFFFF) < start_lo
    return ((product >> 32) + start_hi + carry + (1 << 31)) % (1 << 32) - (1 << 31)


def test_the_vector_high_word_equals_the_64_bit_requantization():
    """Helium's 16x8 compact requantization takes the high word of start + d * multiplier from 32-bit lanes: the
    same integer as the int64 sum (the scalar kernel's SMLAL), on 4 million random values within the generator's
    bounds (|value| < 2^63) and on the carry's edges (low words 0 and 2^32 - 1, sums at 2^32 - 1 and 2^32)."""
    rng = np.random.default_rng(17)
    n = 4_000_000
    multiplier = rng.integers(0, (1 << 31) - (1 << 16), n, dtype=np.int64)
    d = rng.integers(-(1 << 31), 1 << 31, n, dtype=np.int64)
    start = rng.integers(-(1 << 62), 1 << 62, n, dtype=np.int64)
    # The carry's edges: a start whose low word completes the product's to 2^32 - 1 or to 2^32 exactly.
    low = (d * multiplier) & 0xFFFFFFFF
    edge = rng.integers(0, 4, n)
    start_lo = np.select([edge == 0, edge == 1, edge == 2], [(1 << 32) - 1 - low, ((1 << 32) - low) & 0xFFFFFFFF, 0],
                         start & 0xFFFFFFFF)
    start = ((start >> 32) << 32) | start_lo
    expected = (start + d * multiplier) >> 32
    got = _high_word_from_lanes(d, multiplier, start & 0xFFFFFFFF, start >> 32)
    assert_identical(got, expected, "high word from 32-bit lanes vs int64")


@pytest.mark.parametrize("spec", RANDOM_MODELS, ids=[m[0] for m in RANDOM_MODELS])
def test_size_form_host_matches_numpy(spec, tmp_path):
    case = make_case(*spec)
    sanitize = spec[0] in SANITIZED
    if sanitize and not fb.sanitizers_work(fb.require_host_cc(), tmp_path):
        pytest.skip("the host cc cannot link -fsanitize=undefined,address (install libasan / libubsan)")
    y, states = host.run_c_host(case.qmodel, case.x_q, optimize="size", sanitize=sanitize)
    y_ref, states_ref = case.qmodel.run_int(case.x_q)
    assert_identical(y, y_ref, f"{case.name}: y")
    for layer, (got, expected) in enumerate(zip(states, states_ref)):
        assert_identical(got, expected, f"{case.name}: layer {layer} states")


# (model, DSP path, machine): the size form on every kind of core the speed form runs on; on the Cortex-M55
# (Helium: the products on MVE vectors, int8's element-wise ops too) every golden model of both schemes.
SIZE_RUNS = [
    *((spec, dsp, "mps2-an386") for spec in (S8_MODELS[1], S16_MODELS[1]) for dsp in (True, False)),  # Cortex-M4:
    # unaligned LDR + SXTB16 / SMLAD quads and odd depth tails, and the portable loops
    *((spec, True, "mps3-an547") for spec in RANDOM_MODELS),  # Cortex-M55, Helium
    (S8_MODELS[1], False, "mps3-an547"),  # Cortex-M55, portable loops (GRUKIT_PORTABLE_ONLY: no MVE either)
    (S8_MODELS[1], False, "microbit"),  # Cortex-M0+ (no unaligned loads: the portable path reads bytes)
    (S16_MODELS[2], False, "microbit"),
    (S8_MODELS[2], False, "virt"),  # RISC-V RV32
    (S16_MODELS[1], False, "virt"),
]


def _path_id(dsp: bool, machine: str) -> str:
    return ("helium" if machine == "mps3-an547" else "dsp") if dsp else "portable"


@pytest.mark.parametrize("spec,dsp,machine", SIZE_RUNS,
                         ids=[f"{s[0]}-{_path_id(d, m)}-{CORE_IDS[m]}" for s, d, m in SIZE_RUNS])
def test_size_form_on_emulated_cores_matches_numpy(spec, dsp, machine, tmp_path):
    fb.require_arm_tools(machine)
    _run_size_form(make_case(*spec), dsp, machine, tmp_path)


@pytest.mark.parametrize("scheme", ["int8", "16x8"])
def test_size_form_of_the_demo_on_helium_matches_numpy(scheme, tmp_path):
    fb.require_arm_tools("mps3-an547")
    _run_size_form(demo_case(scheme), True, "mps3-an547", tmp_path)


def _run_size_form(case, dsp: bool, machine: str, tmp_path) -> None:
    check_on_machine(case, tmp_path, machine, "size", dsp, extra_defines={"GRUKIT_FORM_SIZE_ONLY": None})


def test_size_form_takes_the_issue_s_flash_budget(tmp_path):
    """The seed forecaster's shape (I=1, H=50, a dense head): model constants at most 1.3 x the weight bytes
    + 2 KB per GRU layer, measured as deploy measures flash (the Cortex-M4 build's text + data)."""
    fb.require_arm_tools("mps2-an386")
    model = random_model(0, I=1, H=50, O=1, layers=1, lbr=1)
    qmodel = grukit.quantize(model, random_inputs(0, N=16, T=20, I=1), scheme="int8")
    weights = sum(np.asarray(fc.w_q).size for layer in qmodel.layers for fc in layer.fcs.values())
    weights += sum(np.asarray(d.fc.w_q).size for d in qmodel.head.layers)
    sizes = {}
    for optimize in ("speed", "size"):
        c_file = c_export.export_c(qmodel, tmp_path / optimize, optimize=optimize)[1]
        sizes[optimize] = built_flash_bytes(c_file, "int8", optimize=optimize).model_bytes
    assert sizes["size"] <= 1.3 * weights + 2048, (sizes, weights)
    assert sizes["size"] < 0.6 * sizes["speed"], sizes  # the speed form's five term tables (5 KB) are gone


@pytest.mark.parametrize("spec", [S8_MODELS[0], S16_MODELS[0]], ids=["int8", "16x8"])
@pytest.mark.parametrize("optimize,define,status", [
    ("size", "GRUKIT_FORM_SPEED_ONLY", 3), ("speed", "GRUKIT_FORM_SIZE_ONLY", 3),
    ("size", "GRUKIT_FORM_SIZE_ONLY", 0), ("speed", "GRUKIT_FORM_SPEED_ONLY", 0)])
def test_a_build_without_the_model_s_form_refuses_it_at_init(spec, optimize, define, status, tmp_path):
    """GRUKIT_ERROR_FORM_NOT_BUILT (3) rather than running constants the build has no code for."""
    case = make_case(*spec)
    out = tmp_path / "model"
    c_export.export_c(case.qmodel, out, optimize=optimize)
    probe = tmp_path / "probe.c"
    probe.write_text(INIT_PROBE.format(s="s8" if spec[2] == "int8" else "s16", brk=""))  # the model as generated, twice
    exe = fb.build_host([GRU_SOURCE, out / "grukit_model.c", probe], tmp_path / "probe",
                        defines={"GRUKIT_MODEL_HEADER": f'"{out / "grukit_model.h"}"', define: None})
    assert fb.run_host(exe).split() == [str(status)] * 2


@pytest.mark.parametrize("scheme", ["int8", "16x8"])
def test_export_writes_the_size_form(scheme, tmp_path):
    model, calib = str(DATA / "demo_model.onnx"), str(DATA / "demo_calib.npz")
    out = tmp_path / "size"
    assert main(["export", model, "--calib", calib, "--c", "--scheme", scheme, "--optimize", "size", "--out",
                 str(out)]) == 0
    header = (out / "grukit_model" / "src" / "grukit_model.h").read_text()
    assert "#define GRUKIT_MODEL_FORM_SIZE 1" in header
    assert "GRUKIT_FORM_SIZE_ONLY" in (out / "grukit_model" / "CMakeLists.txt").read_text()


def test_export_refuses_optimize_without_c(tmp_path, capsys):
    model, calib = str(DATA / "demo_model.onnx"), str(DATA / "demo_calib.npz")
    code = main(["export", model, "--calib", calib, "--optimize", "size", "--out", str(tmp_path / "no_c")])
    assert code == 2 and "needs --c" in capsys.readouterr().err


@pytest.mark.parametrize("scheme", ["int8", "16x8"])
def test_deploy_size_form_reports_both_forms(scheme, tmp_path, capsys):
    """deploy --optimize size: the library holds the size form, the C kernel run is bit-exact on it, and the
    report shows both forms' flash and instructions on the board (measured when QEMU is there)."""
    out = tmp_path / "out"
    code = main(["deploy", str(DATA / "demo_model.onnx"), "--calib", str(DATA / "demo_calib.npz"), "--val",
                 str(DATA / "demo_val.npz"), "--target", "stm32l476", "--scheme", scheme, "--optimize", "size",
                 "--out", str(out)])
    assert code == 0, capsys.readouterr().err
    report = json.loads((out / "report.json").read_text())
    assert report["optimize"] == "size" and report["forms"]["deployed"] == "size"
    assert report["bit_exact"]["c-kernel"] is True
    forms = report["forms"]["boards"]["stm32l476"]
    assert forms["size"]["flash_bytes"] < forms["speed"]["flash_bytes"]
    if forms["size"]["measured"] and forms["speed"]["measured"]:
        assert forms["size"]["instructions_per_step"] > forms["speed"]["instructions_per_step"]
    flash = next(t for t in report["targets"] if t["name"] == "stm32l476 flash")
    assert flash["value"] == forms["size"]["flash_bytes"]
    assert "size (deployed)" in (out / "report.md").read_text()
    assert "GRUKIT_MODEL_FORM_SIZE" in (out / "grukit_model" / "src" / "grukit_model.h").read_text()
