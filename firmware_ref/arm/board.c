/* board.c - semihosting exit and SysTick instruction counter for QEMU's Cortex-M machines; see board.h. */
#include "board.h"

#define SYST_CSR (*(volatile uint32_t *)0xE000E010u)
#define SYST_RVR (*(volatile uint32_t *)0xE000E014u)
#define SYST_CVR (*(volatile uint32_t *)0xE000E018u)
#define SYST_CSR_ENABLE (1u << 0)
#define SYST_CSR_TICKINT (1u << 1)
#define SYST_CSR_CLKSOURCE_CPU (1u << 2)
#define SYST_RELOAD 0x00FFFFFFu

#define SEMIHOSTING_SYS_EXIT 0x18u
#define SEMIHOSTING_SYS_EXIT_EXTENDED 0x20u
#define ADP_STOPPED_APPLICATION_EXIT 0x20026u

static volatile uint32_t g_systick_wraps;

void SysTick_Handler(void);
void SysTick_Handler(void) { g_systick_wraps++; }

void board_ticks_start(void)
{
    SYST_CSR = 0u;
    SYST_RVR = SYST_RELOAD;
    SYST_CVR = 0u; /* any write clears the counter; it reloads on the next tick */
    g_systick_wraps = 0u;
    SYST_CSR = SYST_CSR_ENABLE | SYST_CSR_TICKINT | SYST_CSR_CLKSOURCE_CPU;
}

uint64_t board_ticks(void)
{
    uint32_t wraps, current;
    /* Re-read if a wrap interrupt landed between the two reads. */
    do {
        wraps = g_systick_wraps;
        current = SYST_CVR;
    } while (wraps != g_systick_wraps);
    return (uint64_t)wraps * (SYST_RELOAD + 1u) + (SYST_RELOAD - current);
}

uint64_t board_ticks_to_instructions(uint64_t ticks)
{
    /* ns = ticks * 1e9 / hz; each instruction advances the virtual clock 2^BOARD_ICOUNT_SHIFT ns. */
    return ticks * 1000000000u / ((uint64_t)BOARD_SYSTICK_HZ << BOARD_ICOUNT_SHIFT);
}

static inline uint32_t semihosting_call(uint32_t op, uint32_t arg)
{
    register uint32_t r0 __asm__("r0") = op;
    register uint32_t r1 __asm__("r1") = arg;
    __asm__ volatile("bkpt 0xAB" : "+r"(r0) : "r"(r1) : "memory");
    return r0;
}

void board_exit(int status)
{
    /* SYS_EXIT_EXTENDED carries the status; plain SYS_EXIT can only say "success" on 32-bit ARM. */
    static uint32_t block[2];
    block[0] = ADP_STOPPED_APPLICATION_EXIT;
    block[1] = (uint32_t)status;
    (void)semihosting_call(SEMIHOSTING_SYS_EXIT_EXTENDED, (uint32_t)block);
    (void)semihosting_call(SEMIHOSTING_SYS_EXIT, ADP_STOPPED_APPLICATION_EXIT); /* if EXTENDED is unsupported */
    for (;;) {
    }
}
