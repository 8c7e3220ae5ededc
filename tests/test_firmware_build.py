"""The firmware build itself: the C sigmoid table is the runtime's, and the SysTick instruction counter of
each emulated machine (SysTick on Cortex-M, minstret on RISC-V) counts an assembly loop of known length."""

from __future__ import annotations

import pytest

import firmware_build as fb
from grukit.core.ops_int import SIGMOID_TABLE_U16
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
