/*
 * board.h - what a grukit test image needs from the emulated board (QEMU mps2-an386 M4, mps2-an500 M7,
 * mps2-an505 M33, mps3-an547 M55): a semihosting exit and an instruction counter.
 *
 * Counting instructions: the DWT cycle counter reads 0 under QEMU, but with `-icount shift=N` the virtual
 * clock advances 2^N ns per instruction and SysTick, clocked from the processor clock, follows it, so
 * instructions = ticks * (1e9 / BOARD_SYSTICK_HZ) / 2^N. The processor clock is the machine's: 25 MHz on
 * AN386/AN500, 20 MHz on AN505, 32 MHz on AN547 (grukit.firmware_ref.build.MACHINES, measured there on a
 * counted loop). SysTick is 24 bits wide; its wraps are counted in the interrupt handler so a measured
 * region may be any length.
 */
#ifndef GRUKIT_BOARD_H
#define GRUKIT_BOARD_H

#include <stdint.h>

/* The icount shift the image is run with (qemu-system-arm -icount shift=BOARD_ICOUNT_SHIFT). */
#ifndef BOARD_ICOUNT_SHIFT
#define BOARD_ICOUNT_SHIFT 6
#endif

/* The machine's processor clock, which SysTick counts (emulate.build_arm passes each machine's). */
#ifndef BOARD_SYSTICK_HZ
#define BOARD_SYSTICK_HZ 25000000u
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
