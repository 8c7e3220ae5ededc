/*
 * counted_loop.c - checks the SysTick instruction counter (board.h) against instructions counted by
 * construction: a loop of exactly 5 instructions per iteration (3 ADDS, SUBS, BNE) in inline assembly, so
 * the compiler cannot change it. Two runs of different lengths are timed and their difference printed, which
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
    __asm__ volatile("1:\n\t"
                     "adds %1, %1, #1\n\t"
                     "adds %1, %1, #1\n\t"
                     "adds %1, %1, #1\n\t"
                     "subs %0, %0, #1\n\t"
                     "bne 1b"
                     : "+r"(iterations), "+r"(counter)
                     :
                     : "cc");
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
