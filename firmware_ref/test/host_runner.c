/*
 * host_runner.c - runs a generated model (grukit.firmware_ref.c_export) with the fused kernel over many integer
 * sequences on the HOST, for grukit.firmware_ref.host.run_c_host (validation data through the real C code).
 *
 * Build with -DGRUKIT_MODEL_HEADER='"path/to/grukit_model.h"' (model object named grukit_model).
 * Binary I/O in the host's byte order, because text is slow for N x T x (I + H) values:
 *   stdin:  int32 N, int32 T, then N x T x input_size values (int8 for _s8 models, int16 for _s16);
 *   stdout: per sequence, T x state (every layer's state after each step, layer 0 first), then the outputs:
 *           T x output_size for a per-step model, one output_size vector for a last-step model.
 * The state is reset before every sequence. A last-step model passes y = NULL before the last step, as a
 * device would. Test support code: uses stdio and malloc, never linked into the library.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include GRUKIT_MODEL_HEADER

#if defined(GRUKIT_MODEL_SCHEME_S8)
#define MODEL_FN(fn) grukit_model_s8_##fn
#else
#define MODEL_FN(fn) grukit_model_s16_##fn
#endif

typedef grukit_model_value_t value_t;

#define STATE_LEN (GRUKIT_MODEL_STATE_BYTES / (int32_t)sizeof(value_t))
#define MAX_SEQUENCES (1L << 24)
#define MAX_STEPS (1L << 20)

static value_t g_state[STATE_LEN];
static int32_t g_scratch[GRUKIT_MODEL_SCRATCH_WORDS];

static void fail(const char *what)
{
    fprintf(stderr, "host_runner: %s\n", what);
    exit(3);
}

static void read_all(void *buf, size_t size, size_t count)
{
    if (fread(buf, size, count, stdin) != count) {
        fail("input ended early");
    }
}

static void write_all(const void *buf, size_t size, size_t count)
{
    if (fwrite(buf, size, count, stdout) != count) {
        fail("cannot write the results");
    }
}

int main(void)
{
    int32_t header[2];
    read_all(header, sizeof header[0], 2);
    const int32_t sequences = header[0], steps = header[1];
    if (sequences < 0 || sequences > MAX_SEQUENCES || steps < 1 || steps > MAX_STEPS) {
        fail("bad sequence or step count");
    }
    const int32_t out_len = GRUKIT_MODEL_OUTPUT_SIZE;
    const size_t y_rows = GRUKIT_MODEL_PER_STEP ? (size_t)steps : 1u;
    value_t *x = malloc((size_t)steps * GRUKIT_MODEL_INPUT_SIZE * sizeof *x);
    value_t *states = malloc((size_t)steps * STATE_LEN * sizeof *states);
    value_t *ys = malloc(y_rows * (size_t)out_len * sizeof *ys);
    if (x == NULL || states == NULL || ys == NULL) {
        fail("out of memory");
    }
    if (MODEL_FN(init)(&grukit_model, g_state, (int32_t)sizeof g_state, (int32_t)sizeof g_scratch) != GRUKIT_OK) {
        fail("init refused the buffers");
    }
    for (int32_t s = 0; s < sequences; ++s) {
        read_all(x, sizeof *x, (size_t)steps * GRUKIT_MODEL_INPUT_SIZE);
        MODEL_FN(reset)(&grukit_model, g_state);
        for (int32_t t = 0; t < steps; ++t) {
            value_t *y = NULL;
            if (GRUKIT_MODEL_PER_STEP) {
                y = ys + (size_t)t * (size_t)out_len;
            } else if (t == steps - 1) {
                y = ys;
            }
            MODEL_FN(step)(&grukit_model, g_state, g_scratch, x + (size_t)t * GRUKIT_MODEL_INPUT_SIZE, y);
            memcpy(states + (size_t)t * STATE_LEN, g_state, sizeof g_state);
        }
        write_all(states, sizeof *states, (size_t)steps * STATE_LEN);
        write_all(ys, sizeof *ys, y_rows * (size_t)out_len);
    }
    free(x);
    free(states);
    free(ys);
    return fflush(stdout) == 0 ? 0 : 4;
}
