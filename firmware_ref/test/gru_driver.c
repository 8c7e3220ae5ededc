/*
 * gru_driver.c - runs a generated model (grukit.firmware_ref.c_export) on golden input sequences and prints every
 * layer's state and the output after every step, for tests/test_firmware_gru.py to compare with the NumPy
 * runtime.
 *
 * Build with -DGRUKIT_MODEL_HEADER='"path/to/grukit_model.h"' (the generated header; its model object must be
 * named grukit_model). Stream (int32 words): sequences N, steps T, then N x T x input_size inputs.
 * Output, one case line per (sequence, step): the states of layer 0, 1, ... then y; after each sequence one
 * more case: y after restoring the state saved at step T/2 and replaying steps T/2 .. T-1 (must equal the
 * last step's y). With DRIVER_MEASURE (bare metal), "TICKS <case> <ticks>" times each step call; with
 * DRIVER_PROFILE as well (and the kernel built with GRUKIT_PROFILE_MARK=grukit_profile_mark), "UNITS <case>
 * <ticks>" gives the part of that step spent in the gates' element-wise ops (the marks' own ticks removed).
 */
#include <stdio.h>
#include <string.h>

#include "golden_stream.h"
#include GRUKIT_MODEL_HEADER

#if defined(GRUKIT_MODEL_SCHEME_S8)
#define MODEL_FN(fn) grukit_model_s8_##fn
#define EMIT golden_emit_i8
#define VALUE_MIN INT8_MIN
#define VALUE_MAX INT8_MAX
#else
#define MODEL_FN(fn) grukit_model_s16_##fn
#define EMIT golden_emit_i16
#define VALUE_MIN INT16_MIN
#define VALUE_MAX INT16_MAX
#endif

typedef grukit_model_value_t value_t;

#ifdef DRIVER_MEASURE
#include "board.h"
static uint64_t g_ticks_overhead;
#endif

#ifdef DRIVER_PROFILE
/* The kernel's phase marks (GRUKIT_PROFILE_MARK=grukit_profile_mark): ticks spent in the element-wise phase
 * of each step, less each mark pair's own ticks (measured once, on an empty pair). */
static uint64_t g_units_ticks, g_mark_ticks, g_mark_overhead;
static int32_t g_phase;

void grukit_profile_mark(int32_t phase);
void grukit_profile_mark(int32_t phase)
{
    const uint64_t now = board_ticks();
    if (g_phase == 1 && phase == 0) {
        g_units_ticks += now - g_mark_ticks - g_mark_overhead;
    }
    g_phase = phase;
    g_mark_ticks = board_ticks();
}
#endif

#define STATE_LEN (GRUKIT_MODEL_STATE_BYTES / (int32_t)sizeof(value_t))
#define MAX_STEPS 256

static value_t g_state[STATE_LEN], g_saved[STATE_LEN];
static int32_t g_scratch[GRUKIT_MODEL_SCRATCH_WORDS];
static value_t g_inputs[MAX_STEPS][GRUKIT_MODEL_INPUT_SIZE];
static value_t g_line[STATE_LEN + GRUKIT_MODEL_OUTPUT_SIZE];

static void step(value_t *x, value_t *y, int32_t case_index)
{
#ifdef DRIVER_MEASURE
    const uint64_t start = board_ticks();
    MODEL_FN(step)(&grukit_model, g_state, g_scratch, x, y);
    printf("TICKS %ld %lu\n", (long)case_index, (unsigned long)(board_ticks() - start - g_ticks_overhead));
#ifdef DRIVER_PROFILE
    printf("UNITS %ld %lu\n", (long)case_index, (unsigned long)g_units_ticks);
    g_units_ticks = 0;
#endif
#else
    (void)case_index;
    MODEL_FN(step)(&grukit_model, g_state, g_scratch, x, y);
#endif
}

int main(int argc, char **argv)
{
    if (golden_open(argc, argv) != 0) {
        golden_fail("cannot open the golden stream");
    }
    /* The generated sizes must be the kernel's own. */
    if (MODEL_FN(get_state_size)(&grukit_model) != GRUKIT_MODEL_STATE_BYTES ||
        MODEL_FN(get_buffer_size)(&grukit_model) != GRUKIT_MODEL_SCRATCH_BYTES ||
        MODEL_FN(get_output_size)(&grukit_model) != GRUKIT_MODEL_OUTPUT_SIZE) {
        golden_fail("generated sizes differ from the kernel's get_*_size functions");
    }
    if (MODEL_FN(init)(&grukit_model, g_state, (int32_t)sizeof g_state, (int32_t)sizeof g_scratch - 4) !=
        GRUKIT_ERROR_SCRATCH_TOO_SMALL) {
        golden_fail("init accepted a scratch buffer that is too small");
    }
#ifdef DRIVER_MEASURE
    board_ticks_start();
    {
        const uint64_t a = board_ticks();
        g_ticks_overhead = board_ticks() - a;
    }
#ifdef DRIVER_PROFILE
    grukit_profile_mark(1); /* an empty element-wise phase: what a mark pair adds to one */
    grukit_profile_mark(0);
    g_mark_overhead = g_units_ticks;
    g_units_ticks = 0;
#endif
#endif
    const int32_t sequences = golden_next_in(1, 1 << 20, "sequence count");
    const int32_t steps = golden_next_in(1, MAX_STEPS, "step count");
    int32_t case_index = 0;
    for (int32_t s = 0; s < sequences; ++s) {
        for (int32_t t = 0; t < steps; ++t) {
            for (int32_t i = 0; i < GRUKIT_MODEL_INPUT_SIZE; ++i) {
                g_inputs[t][i] = (value_t)golden_next_in(VALUE_MIN, VALUE_MAX, "input value out of range");
            }
        }
        if (MODEL_FN(init)(&grukit_model, g_state, (int32_t)sizeof g_state, (int32_t)sizeof g_scratch) != GRUKIT_OK) {
            golden_fail("init refused the buffers");
        }
        for (int32_t t = 0; t < steps; ++t) {
            if (t == steps / 2) {
                MODEL_FN(save_state)(&grukit_model, g_state, g_saved);
            }
            step(g_inputs[t], g_line + STATE_LEN, case_index);
            memcpy(g_line, g_state, sizeof g_state);
            EMIT(case_index++, g_line, STATE_LEN + GRUKIT_MODEL_OUTPUT_SIZE);
        }
        /* Replay the second half from the saved state; the head is only asked for at the end. */
        MODEL_FN(reset)(&grukit_model, g_state);
        MODEL_FN(restore_state)(&grukit_model, g_state, g_saved);
        for (int32_t t = steps / 2; t < steps; ++t) {
            MODEL_FN(step)(&grukit_model, g_state, g_scratch, g_inputs[t], NULL);
        }
        MODEL_FN(output)(&grukit_model, g_state, g_scratch, g_line);
        EMIT(case_index++, g_line, GRUKIT_MODEL_OUTPUT_SIZE);
    }
    printf("END %ld\n", (long)case_index);
    golden_close();
    return 0;
}
