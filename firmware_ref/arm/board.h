/*
 * board.h - what a grukit test image needs from the emulated board (QEMU mps2-an386, Cortex-M4):
 * a semihosting exit and an instruction counter.
 *
 * Counting instructions: the DWT cycle counter reads 0 under QEMU, but with `-icount shift=N` the virtual
 * clock advances 2^N ns per instruction and SysTick (clocked from the 25 MHz system clock, 40 ns per tick)
 * follows it, so instructions = ticks * 40 / 2^N. SysTick is 24 bits wide; its wraps are counted in the
 * interrupt handler so a measured region may be any length.
 */
#ifndef GRUKIT_BOARD_H
#define GRUKIT_BOARD_H

#include <stdint.h>

/* The icount shift the image is run with (qemu-system-arm -icount shift=BOARD_ICOUNT_SHIFT). */
#ifndef BOARD_ICOUNT_SHIFT
#define BOARD_ICOUNT_SHIFT 6
#endif

/* Starts SysTick free-running from the processor clock with its wrap interrupt enabled. */
void board_ticks_start(void);

/* SysTick ticks since board_ticks_start (wraps included). */
uint64_t board_ticks(void);

/* Converts a tick count to executed instructions under -icount shift=BOARD_ICOUNT_SHIFT. */
uint64_t board_ticks_to_instructions(uint64_t ticks);

/* Ends the emulation through semihosting with the given exit status (QEMU exits with it). */
void board_exit(int status) __attribute__((noreturn));

#endif /* GRUKIT_BOARD_H */
