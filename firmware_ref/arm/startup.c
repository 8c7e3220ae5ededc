/*
 * startup.c - vector table and reset handler for QEMU's Cortex-M machines (mps2-an386 M4F, mps2-an500 M7,
 * mps2-an505 M33, mps3-an547 M55, microbit M0), bare metal with newlib's rdimon (semihosting) library: enable
 * the FPU where there is one, copy .data, zero .bss, open the semihosting handles, run main and exit with its
 * status through semihosting.
 * The same code serves every machine: where the vector table goes is the linker script's business, and the
 * Armv8-M cores run the whole image in the Secure state they reset in (no SAU or TrustZone setup needed).
 */
#include <stdint.h>
#include <string.h>

#include "board.h"

extern uint32_t __stack_top;
extern uint32_t __data_load, __data_start, __data_end, __bss_start__, __bss_end__;

extern int main(int argc, char **argv);
extern void initialise_monitor_handles(void);
void Reset_Handler(void);
void Default_Handler(void);
void SysTick_Handler(void);

#define SCB_CPACR (*(volatile uint32_t *)0xE000ED88u)
#define CPACR_CP10_CP11_FULL (0xFu << 20)

void Reset_Handler(void)
{
    /* A core with an FPU runs -mfloat-abi=hard code: CP10/CP11 must be enabled before any FP instruction (on
     * the M55 they also gate MVE, should the compiler ever vectorize with it). */
#if defined(__ARM_FP) || defined(__ARM_FEATURE_MVE)
    SCB_CPACR |= CPACR_CP10_CP11_FULL; /* no CPACR on a core without an FPU (the M0+) */
    __asm__ volatile("dsb\n\tisb" ::: "memory");
#endif

    /* Word copies through volatile pointers so the compiler cannot turn them into memcpy/memset calls. */
    for (volatile uint32_t *src = &__data_load, *dst = &__data_start; dst < &__data_end;) {
        *dst++ = *src++;
    }
    for (volatile uint32_t *dst = &__bss_start__; dst < &__bss_end__;) {
        *dst++ = 0u;
    }

    initialise_monitor_handles();
    board_exit(main(0, (char **)0));
}

void Default_Handler(void)
{
    board_exit(127); /* an unexpected fault or interrupt: stop rather than hang until the timeout */
}

/* Cortex-M vector table: initial stack pointer, then exception handlers 1..15. */
__attribute__((section(".vectors"), used)) static void (*const g_vectors[16])(void) = {
    (void (*)(void))(&__stack_top), /* 0: initial SP */
    Reset_Handler,                   /* 1: reset */
    Default_Handler,                 /* 2: NMI */
    Default_Handler,                 /* 3: HardFault */
    Default_Handler,                 /* 4: MemManage */
    Default_Handler,                 /* 5: BusFault */
    Default_Handler,                 /* 6: UsageFault */
    Default_Handler,                 /* 7: SecureFault on Armv8-M Mainline, reserved before */
    0, 0, 0,                         /* 8-10: reserved */
    Default_Handler,                 /* 11: SVCall */
    Default_Handler,                 /* 12: DebugMonitor */
    0,                               /* 13: reserved */
    Default_Handler,                 /* 14: PendSV */
    SysTick_Handler,                 /* 15: SysTick */
};

/* newlib's exit path may call these; nothing registered by the toolchain needs running. */
void _init(void);
void _fini(void);
void _init(void) {}
void _fini(void) {}
