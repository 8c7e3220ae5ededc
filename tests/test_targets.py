"""Board targets: loading, validation, the budget arithmetic and the cost model against hand-computed values;
flash measured from an ARM build."""

import subprocess
from pathlib import Path

import numpy as np
import pytest

import grukit
from grukit.board_checks import emulated_instructions
from grukit.core.errors import BadInputError
from grukit.core.model import GRUDirection, GRULayer, GRUModel
from grukit.core.scheme import scheme_named
from grukit.firmware_ref import build, measure
from grukit.firmware_ref.c_export import constant_bytes, export_c
from grukit.runtime import cost_model, targets
from grukit.runtime.budget import Figure, check_budget
from grukit.runtime.cost_model import cost_model_instructions
from grukit.runtime.targets import list_targets, load_target

# Latency is a float product; compare to the hand value at float64 rounding.
LATENCY_RTOL = 1e-12

SHIPPED = ["corstone-300", "esp32c3", "esp32s3", "nrf52840", "rp2040", "stm32f746", "stm32h743", "stm32l476", "stm32u575"]

USER_TOML = """
name = "my-board"
core = "cortex-m4f"
clock_hz = 100_000_000
flash_bytes = 65536
ram_bytes = 16384
cycles_per_instruction = 1.5
cycles_per_instruction_source = "made up for the test"
notes = ""
"""


def _tiny_model(I=1, H=2, lbr=1) -> GRUModel:
    rng = np.random.default_rng(0)
    d = GRUDirection(W=rng.standard_normal((3, H, I)), R=rng.standard_normal((3, H, H)),
                     Wb=np.zeros((3, H)), Rb=np.zeros((3, H)))
    return GRUModel(layers=(GRULayer(d, linear_before_reset=lbr),))


def test_every_shipped_target_loads():
    assert list_targets() == SHIPPED
    for name in SHIPPED:
        t = load_target(name)
        assert t.name == name and t.clock_hz > 0 and t.cycles_per_instruction > 0


def test_stm32l476_figures():
    t = load_target("STM32L476")  # names are case-insensitive
    assert (t.clock_hz, t.flash_bytes, t.ram_bytes, t.qemu_machine) == (80_000_000, 1 << 20, 128 * 1024, "mps2-an386")
    assert load_target("rp2040").qemu_machine == "microbit"  # a Cortex-M0: the M0+'s Armv6-M instructions
    assert load_target("esp32c3").qemu_machine == "virt"  # 32-bit RISC-V
    assert load_target("esp32s3").qemu_machine is None  # Xtensa: no emulated machine


def test_unknown_target_lists_known_names():
    with pytest.raises(BadInputError, match="unknown target 'stm32x'.*stm32l476"):
        load_target("stm32x")


def test_user_toml_by_path(tmp_path):
    path = tmp_path / "mine.toml"
    path.write_text(USER_TOML)
    t = load_target(path)
    assert t.name == "my-board" and t.ram_bytes == 16384 and t.qemu_machine is None


@pytest.mark.parametrize(
    "edit, message",
    [
        (lambda s: s.replace("ram_bytes = 16384", "ram_bytes = -1"), "ram_bytes = -1 is not a plausible RAM size"),
        (lambda s: s.replace("clock_hz = ", "clock_hz = 80 #"), "clock_hz = 80 is not a plausible clock in Hz"),
        (lambda s: s.replace("flash_bytes", "flash_byte"), r"flash_byte \(did you mean flash_bytes\?\)"),
        (lambda s: s.replace("ram_bytes = 16384", 'ram_bytes = "16K"'), "ram_bytes must be a int"),
        (lambda s: s.replace('notes = ""', ""), "missing target field.*notes"),
        (lambda s: s + 'flash_wait_states = 4\n', "unknown target field.*flash_wait_states"),
        (lambda s: s + 'qemu_machine = "raspi2b"\n', "qemu_machine 'raspi2b'"),
        (lambda s: s + "name = [\n", "not valid TOML"),
    ],
)
def test_bad_user_toml_is_refused(tmp_path, edit, message):
    path = tmp_path / "bad.toml"
    path.write_text(edit(USER_TOML))
    with pytest.raises(BadInputError, match=message):
        load_target(path)


def test_missing_toml_path():
    with pytest.raises(BadInputError, match="no such target file"):
        load_target("/nonexistent/board.toml")


def test_budget_arithmetic_by_hand(tmp_path):
    path = tmp_path / "mine.toml"
    path.write_text(USER_TOML)
    t = load_target(path)
    checks = check_budget(t, flash=70000, ram=1000, instructions_per_step=1000, steps=50,
                          instructions_per_sequence=500, max_latency_ms=0.75)
    flash, ram, per_step, latency = checks
    # 50 * 1000 + 500 = 50,500 instructions * 1.5 cycles / 100 MHz = 0.7575 ms
    assert latency.value == pytest.approx(0.7575, rel=LATENCY_RTOL)
    assert not latency.passed and latency.margin == pytest.approx(-0.0075, rel=1e-9)
    assert "50,500 instructions" in latency.note and latency.estimate
    # one step: 1,000 * 1.5 / 100 MHz = 0.015 ms, reported without a limit: not checked, so no verdict
    assert per_step.value == pytest.approx(0.015, rel=LATENCY_RTOL) and per_step.limit is None and per_step.estimate
    assert per_step.passed is None
    assert not flash.passed and flash.margin == 65536 - 70000 and flash.estimate  # a plain int is an estimate
    assert ram.passed and ram.margin == 16384 - 1000
    assert check_budget(t, 1, 1, 1000, 50, 500, max_latency_ms=0.76)[3].passed
    unchecked = check_budget(t, 1, 1, 1000, 50, 500)[3]  # no max_latency_ms: reported only
    assert unchecked.limit is None and unchecked.passed is None


def test_measured_figures_keep_their_label(tmp_path):
    path = tmp_path / "mine.toml"
    path.write_text(USER_TOML)
    flash = Figure(1234, False, "measured: size of the objects")
    checks = check_budget(load_target(path), flash, Figure(99, False, "from the header"), 10, 2,
                          instructions_source="QEMU")
    assert (checks[0].value, checks[0].estimate, checks[0].note) == (1234, False, "measured: size of the objects")
    assert (checks[1].value, checks[1].estimate) == (99, False)
    assert checks[3].estimate and "from QEMU" in checks[3].note  # cycles stay an estimate


def test_board_profiles_name_the_machines_firmware_ref_builds_for():
    assert set(targets.QEMU_MACHINES) == set(build.MACHINES)


def test_emulation_reasons_name_what_is_missing(monkeypatch):
    assert emulated_instructions(None, None) == "no QEMU machine emulates this core"
    # firmware_ref supports every machine QEMU offers today; take one away to see the reason a user gets when
    # grukit has no bare-metal support (linker script, startup) for a machine. With tools missing the reason
    # names the packages instead. Either way nothing is measured.
    machine = "mps3-an547"
    monkeypatch.setattr(build, "MACHINES", {k: v for k, v in build.MACHINES.items() if k != machine})
    reason = emulated_instructions(None, machine)
    assert isinstance(reason, str) and machine in reason and "no board support" in reason
    monkeypatch.setattr(build, "missing_tools", lambda arch="arm": ["qemu-system-arm"])
    assert "install Debian packages qemu-system-arm" in emulated_instructions(None, "mps2-an386")


def _object_bytes(source, tmp_path) -> int:
    """text + data of one firmware_ref source compiled alone for the Cortex-M4 (every function it holds)."""
    flags = [f for f in build.arm_flags(measure.MEASURED_MACHINE)
             if not f.startswith(("-Wl,", "--specs", "-nostartfiles"))]
    obj = tmp_path / f"{source.stem}.o"
    subprocess.run(["arm-none-eabi-gcc", *flags, *build.include_flags(), "-c", str(source), "-o", str(obj)],
                   check=True, capture_output=True)
    size = subprocess.run(["arm-none-eabi-size", str(obj)], check=True, capture_output=True, text=True).stdout
    return sum(int(v) for v in size.splitlines()[1].split()[:2])


# The KERNEL_CODE_BYTES estimates (used without an ARM toolchain) must stay near what the build measures.
KERNEL_ESTIMATE_RTOL = 0.10


@pytest.mark.parametrize("scheme,optimize", [("int8", "speed"), ("int8", "size"), ("16x8", "speed"), ("16x8", "size")])
def test_built_flash_bytes_counts_what_the_scheme_links(scheme, optimize, tmp_path):
    if build.missing_tools():
        pytest.skip(f"ARM toolchain missing: {build.missing_tools()}")
    model = _tiny_model(I=3, H=8)
    qmodel = grukit.quantize(model, np.random.default_rng(1).standard_normal((4, 5, 3)).astype(np.float32),
                             scheme=scheme)
    built = measure.built_flash_bytes(export_c(qmodel, tmp_path / "c", optimize=optimize)[1], scheme,
                                      optimize=optimize)
    # The object holds the constant arrays grukit counts plus the model's structs (pointers, sizes): more,
    # but not by more than a few hundred bytes for one layer.
    counted = constant_bytes(qmodel, optimize=optimize)
    assert counted <= built.model_bytes <= counted + 1024
    # Against each kernel source compiled on its own (all of its functions, both schemes): the int8 kernel
    # is part of grukit_gru.c alone; the 16x8 kernel also reads grukit_tables.c's sigmoid table.
    whole = {Path(s).stem: _object_bytes(build.firmware_dir() / s, tmp_path) for s in build.KERNEL_SOURCES}
    if scheme == "int8":
        assert 1024 < built.kernel_bytes < whole["grukit_gru"]
    else:
        assert whole["grukit_tables"] < built.kernel_bytes < sum(whole.values())
    suffix = "s8" if scheme == "int8" else "s16"
    assert f"grukit_model_{suffix}_step" in built.note() and f"{built.kernel_bytes:,}" in built.note()
    assert set(built.undefined) <= {"memcpy", "memset", "memmove"}, built.undefined  # only the C library
    estimate = (cost_model.SIZE_FORM_KERNEL_CODE_BYTES if optimize == "size"
                else cost_model.KERNEL_CODE_BYTES)[scheme_named(scheme)]
    assert abs(estimate - built.kernel_bytes) <= KERNEL_ESTIMATE_RTOL * built.kernel_bytes, (estimate, built)


def test_memory_estimate_per_scheme_by_hand():
    # I=1, H=2, linear_before_reset=1, no head: weights 3H(I + H) = 18 int8 bytes; biases Wb + Rb = 12 values
    # (int32 for int8, int64 for 16x8); 16 ops in the step graph, each with its requantization parameters.
    model = _tiny_model()
    ops = 16
    int8, int16 = cost_model.memory_estimate(model, "int8"), cost_model.memory_estimate(model, "16x8")
    code = {name: cost_model.KERNEL_CODE_BYTES[scheme_named(name)] for name in ("int8", "16x8")}
    assert int8.flash_bytes == code["int8"] + 18 + 4 * 12 + ops * cost_model.REQUANT_BYTES_PER_OP
    assert int16.flash_bytes == code["16x8"] + 18 + 8 * 12 + ops * cost_model.REQUANT_BYTES_PER_OP
    assert int16.ram_bytes == 2 * int8.ram_bytes  # every activation and the state twice as wide
    with pytest.raises(BadInputError, match="unknown scheme"):
        cost_model.memory_estimate(model, "int4")


def test_cost_model_by_hand():
    # I=1, H=2, linear_before_reset=1, no head: 3H(I+H) = 18 MACs; 6 FC ops x H = 12 outputs;
    # 7 ADD/SUB/MUL x H = 14 elements; 3 LOGISTIC/TANH x H = 6 elements.
    expected = 18 * cost_model.INSTRUCTIONS_PER_MAC + 12 * cost_model.INSTRUCTIONS_PER_FC_OUTPUT \
        + 14 * cost_model.INSTRUCTIONS_PER_ELEMENTWISE + 6 * cost_model.INSTRUCTIONS_PER_ACTIVATION
    model = _tiny_model()
    assert model.macs_per_step() == 18
    count = cost_model_instructions(model)
    assert count.per_step == int(np.ceil(expected)) and count.per_sequence == 0


def test_cost_model_grows_with_macs():
    small, big = cost_model_instructions(_tiny_model(H=4)), cost_model_instructions(_tiny_model(H=8))
    assert big.per_step > small.per_step


def test_a_model_larger_than_the_emulated_machine_falls_back_to_the_estimate_saying_why():
    """The micro:bit standing in for the RP2040 has 256 KB of flash: a model whose image is larger cannot be
    measured there, and the board check says so instead of failing."""
    import grukit
    from gru_factory import random_inputs, random_model
    from grukit.board_checks import emulated_instructions

    if build.emulation_unavailable_reason("microbit") is not None:
        pytest.skip(build.emulation_unavailable_reason("microbit"))
    qmodel = grukit.quantize(random_model(0, I=16, H=300, O=4), random_inputs(0, N=4, T=5, I=16))
    reason = emulated_instructions(qmodel, "microbit")
    assert isinstance(reason, str) and "does not fit the memory of QEMU's microbit" in reason, reason
    assert "region `CODE' overflowed by" in reason
