"""The firmware build itself: the C sigmoid table is the runtime's, the SysTick instruction counter of each
emulated machine (SysTick on Cortex-M, minstret on RISC-V) counts an assembly loop of known length, and the kernel
compiles at every optimization level a firmware uses."""

from __future__ import annotations

import pytest

import firmware_build as fb
import grukit
from gru_factory import random_inputs, random_model
from grukit.core.ops_int import SIGMOID_TABLE_U16
from grukit.firmware_ref import build, measure
from grukit.firmware_ref.build import instructions_from_ticks
from grukit.verify import assert_identical

PRINT_TABLE_C = """#include <stdio.h>
#include "grukit_tables.h"
int main(void)
{
    for (int i = 0; i < 256; ++i) {
        printf("%u\\n", (unsigned)grukit_sigmoid_table_uint16[i]);
    }
    return 0;
}
"""


def test_sigmoid_table_is_the_runtime_table(tmp_path):
    """The generated C table (firmware_ref/tools/gen_tables.py) holds the NumPy runtime's values."""
    source = tmp_path / "print_table.c"
    source.write_text(PRINT_TABLE_C)
    exe = fb.build_host([source], tmp_path / "print_table")
    got = [int(v) for v in fb.run_host(exe).split()]
    assert_identical(got, SIGMOID_TABLE_U16, "grukit_sigmoid_table_uint16")


COUNTED_LOOP_SOURCE = fb.FIRMWARE / "arm" / "counted_loop.c"
# Each of the four SysTick reads behind the printed difference is quantized to one tick.
TICK_READ_ERROR_TICKS = 4


@pytest.mark.parametrize("machine", ["mps2-an386", "mps2-an505", "mps3-an547", "microbit", "virt"],
                         ids=["m4", "m33", "m55", "m0plus", "rv32"])
def test_systick_counts_a_counted_loop(machine, tmp_path):
    """instructions_from_ticks (per machine's SysTick clock) and board.c's conversion give the number of
    instructions of an assembly loop whose length is known by construction."""
    fb.require_arm_tools(machine)
    elf = fb.build_arm([COUNTED_LOOP_SOURCE], tmp_path / "counted_loop.elf", machine=machine)
    line = next(ln for ln in fb.run_qemu(elf, machine=machine).splitlines() if ln.startswith("LOOP "))
    instructions, ticks, board_instructions = map(int, line.split()[1:])
    tolerance = instructions_from_ticks(TICK_READ_ERROR_TICKS, machine)
    got = instructions_from_ticks(ticks, machine)
    assert abs(got - instructions) <= tolerance, (
        f"{machine}: {ticks} ticks = {got} instructions, expected {instructions}")
    assert abs(board_instructions - instructions) <= tolerance, (
        f"{machine}: board_ticks_to_instructions gave {board_instructions}, expected {instructions}")


def test_phase_marks_split_a_step_and_cost_nothing_unprofiled(tmp_path):
    """The kernel's phase marks (GRUKIT_PROFILE_MARK): a profile build reports each step's element-wise
    instructions, a positive part of the step that grows with H; an ordinary build has no marks, so its step
    takes exactly the instructions of a build without them (here: the same image, built twice)."""
    fb.require_arm_tools("mps2-an386")
    per_unit = {}
    for H in (16, 32):
        q = grukit.quantize(random_model(0, I=4, H=H, O=2, layers=1, lbr=1), random_inputs(0, N=8, T=6, I=4))
        profiled = measure.build_measure_image(q, tmp_path / f"p{H}", 4, profile=True)
        units = measure.run_measure_image(profiled, "mps2-an386", "UNITS")
        steps = measure.run_measure_image(measure.build_measure_image(q, tmp_path / f"s{H}", 4), "mps2-an386")
        assert len(units) == len(steps) == 4
        assert all(0 < u < s for u, s in zip(units, steps))
        per_unit[H] = sum(units) / len(units) / H
        elf = tmp_path / f"s{H}" / "measure.elf"
        disassembly = build.run_program(["arm-none-eabi-objdump", "-d", str(elf)], "objdump")
        assert "grukit_profile_mark" not in disassembly
    assert abs(per_unit[16] - per_unit[32]) < 0.2 * per_unit[16], per_unit  # a per-unit cost, not a per-step one


@pytest.mark.parametrize("machine", ["mps2-an386", "mps3-an547", "microbit"])
@pytest.mark.parametrize("options", [["-O0"], ["-Og"], ["-Os"], ["-O3"], ["-O2", "-ffixed-r9"]],
                         ids=["O0", "Og", "Os", "O3", "fixed-r9"])
def test_kernel_compiles_at_every_optimization_level(machine, options, tmp_path):
    """A firmware's debug build (-O0 keeps a frame pointer in r7), its size or speed build and an RWPI build (r9
    reserved) compile the kernel, strictly: the Helium assembly loops fix most registers, so r7 and r9 must stay
    free."""
    fb.require_arm_tools(machine)
    flags = [o for f in build.arm_flags(machine) for o in (options if f == "-O2" else [f])]
    build.run_program([build.MACHINES[machine].compiler, *flags, *build.include_flags(), "-c",
                       str(fb.FIRMWARE / "src" / "grukit_gru.c"), "-o", str(tmp_path / "grukit_gru.o")],
                      "cross compile", 120)
