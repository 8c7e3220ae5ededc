/*
 * counted_loop.c - checks the instruction counter (board.h: SysTick on Cortex-M, minstret on RISC-V) against
 * instructions counted by construction: a loop of exactly 5 instructions per iteration (3 adds, a subtract
 * and a branch) in inline assembly, so the compiler cannot change it. Two runs of different lengths are timed and their difference printed, which
 * cancels the fixed cost of the calls and of reading the counter:
 *   "LOOP <instructions> <ticks> <board_ticks_to_instructions(ticks)>"
 * tests/test_firmware_build.py compares both conversions (Python's and board.c's) with <instructions>.
 */
#include <stdint.h>
#include <stdio.h>

#include "board.h"

#define LOOP_INSTRUCTIONS_PER_ITERATION 5u
#define SHORT_ITERATIONS 1000u
#define LONG_ITERATIONS 201000u /* 200,000 more: 1,000,000 instructions, well inside one 24-bit SysTick period */

static uint64_t ticks_of_loop(uint32_t iterations)
{
    uint32_t counter = 0u;
    const uint64_t start = board_ticks();
#if defined(__riscv)
    __asm__ volatile("1:\n\t"
                     "addi %1, %1, 1\n\t"
                     "addi %1, %1, 1\n\t"
                     "addi %1, %1, 1\n\t"
                     "addi %0, %0, -1\n\t"
                     "bnez %0, 1b"
                     : "+r"(iterations), "+r"(counter));
#elif defined(__ARM_ARCH_6M__)
    /* Armv6-M: GCC writes Thumb-1 in divided syntax, where "add rd, #imm" is the flag-setting ADDS. */
    __asm__ volatile("1:\n\t"
                     "add %1, #1\n\t"
                     "add %1, #1\n\t"
                     "add %1, #1\n\t"
                     "sub %0, #1\n\t"
                     "bne 1b"
                     : "+l"(iterations), "+l"(counter)
                     :
                     : "cc");
#else
    __asm__ volatile("1:\n\t"
                     "adds %1, %1, #1\n\t"
                     "adds %1, %1, #1\n\t"
                     "adds %1, %1, #1\n\t"
                     "subs %0, %0, #1\n\t"
                     "bne 1b"
                     : "+r"(iterations), "+r"(counter)
                     :
                     : "cc");
#endif
    return board_ticks() - start;
}

int main(void)
{
    board_ticks_start();
    const uint64_t short_ticks = ticks_of_loop(SHORT_ITERATIONS);
    const uint64_t long_ticks = ticks_of_loop(LONG_ITERATIONS);
    const uint64_t ticks = long_ticks - short_ticks;
    const uint32_t instructions = (LONG_ITERATIONS - SHORT_ITERATIONS) * LOOP_INSTRUCTIONS_PER_ITERATION;
    printf("LOOP %lu %lu %lu\n", (unsigned long)instructions, (unsigned long)ticks,
           (unsigned long)board_ticks_to_instructions(ticks));
    return 0;
}
