/*
 * board.c - board.h for QEMU's RISC-V virt machine (RV32, bare metal with picolibc's semihosting crt0 and
 * I/O): the instruction counter and the exit.
 *
 * Counting instructions: minstret. QEMU 7.2 under -icount reads it as the virtual clock in ns, which
 * advances 2^BOARD_ICOUNT_SHIFT ns per instruction, so the ticks here are ns and BOARD_SYSTICK_HZ is 1 GHz
 * (grukit.firmware_ref.build.MACHINES["virt"], checked there on a counted loop); without -icount QEMU
 * would return host time. minstreth extends it to 64 bits (read high, low, high again to catch a carry).
 */
#include <stdlib.h>

#include "board.h"

/* The assembler of Debian's GCC 12 wants Zicsr named for CSR reads; -march stays picolibc's multilib's. */
#define READ_CSR(name, value) \
    __asm__ volatile(".option push\n\t.option arch, +zicsr\n\tcsrr %0, " name "\n\t.option pop" : "=r"(value))

static uint64_t g_start;

static uint64_t instret(void)
{
    uint32_t high, low, again;
    do {
        READ_CSR("minstreth", high);
        READ_CSR("minstret", low);
        READ_CSR("minstreth", again);
    } while (high != again);
    return ((uint64_t)high << 32) | low;
}

void board_ticks_start(void) { g_start = instret(); }

uint64_t board_ticks(void) { return instret() - g_start; }

uint64_t board_ticks_to_instructions(uint64_t ticks)
{
    return ticks * 1000000000u / ((uint64_t)BOARD_SYSTICK_HZ << BOARD_ICOUNT_SHIFT);
}

void board_exit(int status)
{
    exit(status); /* picolibc's semihosting exit: QEMU leaves with this status */
}
