/*
 * ops_driver.c - runs the grukit_ops.h primitives on golden-vector cases and prints their outputs.
 *
 * Stream layout (int32 words; tests/test_firmware_ops.py writes it, in the same order):
 *   repeated: op code, op-specific fields, then inputs; op code 0 ends the stream.
 * Each case prints one line through golden_emit_*; the Python side compares it with the NumPy output.
 * Built with DRIVER_MEASURE (bare-metal images only), each kernel call is also timed with the board's
 * SysTick counter and reported as "TICKS <case> <ticks>" (the cost of reading the counter subtracted).
 */
#include <stdio.h>
#include <string.h>

#include "golden_stream.h"
#include "grukit_ops.h"
#include "grukit_tables.h"

enum {
    OP_END = 0,
    OP_MQM = 1,          /* n, then n x (x, multiplier, shift)           -> n int32 */
    OP_MQM_S64 = 2,      /* n, then n x (x hi, x lo, multiplier, shift)  -> n int32 */
    OP_FC_S8 = 3,        /* fc header, input, weights, bias, multipliers, shifts -> int8 */
    OP_FC_S16 = 4,       /* as OP_FC_S8 with int16 input and int64 bias  -> int16 */
    OP_ADD_S8 = 5,       /* n, add params (12 words), input1, input2     -> int8 */
    OP_ADD_S16 = 6,
    OP_SUB_S8 = 7,
    OP_SUB_S16 = 8,
    OP_MUL_S8 = 9,       /* n, mul params (7 words), input1, input2      -> int8 / int16 */
    OP_MUL_S16 = 10,
    OP_LOGISTIC_S8 = 11, /* n, s8 activation params (4 words), input     -> int8 */
    OP_TANH_S8 = 12,
    OP_LOGISTIC_S16 = 13, /* n, s16 activation params (2 words), input   -> int16 */
    OP_TANH_S16 = 14,
    OP_SIGMOID_TABLE = 15 /* no fields                                   -> the 256 table entries */
};

#ifdef DRIVER_MEASURE
#include "board.h"
static uint64_t g_ticks_start, g_ticks_overhead;
#define MEASURE_BEGIN() (g_ticks_start = board_ticks())
#define MEASURE_END(case_index)                                                                             \
    printf("TICKS %ld %lu\n", (long)(case_index), (unsigned long)(board_ticks() - g_ticks_start - g_ticks_overhead))
#else
#define MEASURE_BEGIN() ((void)0)
#define MEASURE_END(case_index) ((void)(case_index))
#endif

#ifndef DRIVER_MAX_ELEMS
#define DRIVER_MAX_ELEMS 70000 /* a whole int16 range, for exhaustive activation tests */
#endif
#ifndef DRIVER_MAX_WEIGHTS
#define DRIVER_MAX_WEIGHTS 70000
#endif
#ifndef DRIVER_MAX_CHANNELS
#define DRIVER_MAX_CHANNELS 1024
#endif

static int8_t g_a8[DRIVER_MAX_ELEMS], g_b8[DRIVER_MAX_ELEMS], g_out8[DRIVER_MAX_ELEMS];
static int16_t g_a16[DRIVER_MAX_ELEMS], g_b16[DRIVER_MAX_ELEMS], g_out16[DRIVER_MAX_ELEMS];
static int32_t g_out32[DRIVER_MAX_ELEMS];
static int8_t g_weights[DRIVER_MAX_WEIGHTS];
static int32_t g_bias32[DRIVER_MAX_CHANNELS], g_mult[DRIVER_MAX_CHANNELS], g_shift[DRIVER_MAX_CHANNELS];
static int64_t g_bias64[DRIVER_MAX_CHANNELS];

static int32_t read_count(int32_t max) { return golden_next_in(0, max, "element count out of range"); }

static void read_s8(int8_t *dst, int32_t n)
{
    for (int32_t i = 0; i < n; ++i) {
        dst[i] = (int8_t)golden_next_in(INT8_MIN, INT8_MAX, "int8 value out of range");
    }
}

static void read_s16(int16_t *dst, int32_t n)
{
    for (int32_t i = 0; i < n; ++i) {
        dst[i] = (int16_t)golden_next_in(INT16_MIN, INT16_MAX, "int16 value out of range");
    }
}

static void run_mqm(int32_t case_index, int wide)
{
    const int32_t n = read_count(DRIVER_MAX_ELEMS);
    for (int32_t i = 0; i < n; ++i) {
        if (wide) {
            const int64_t x = golden_next_i64();
            const int32_t multiplier = golden_next();
            const int shift = (int)golden_next_in(-31, 7, "s64 shift out of range");
            g_out32[i] = grukit_multiply_by_quantized_multiplier_s64(x, multiplier, shift);
        } else {
            const int32_t x = golden_next();
            const int32_t multiplier = golden_next();
            const int shift = (int)golden_next_in(-31, 30, "shift out of range");
            g_out32[i] = grukit_multiply_by_quantized_multiplier(x, multiplier, shift);
        }
    }
    golden_emit_i32(case_index, g_out32, n);
}

/* FC header: batches, input_depth, output_depth, input_offset, output_offset, act_min, act_max, has_bias. */
static void run_fc(int32_t case_index, int s16)
{
    grukit_fc_params p;
    const int32_t batches = golden_next_in(1, DRIVER_MAX_ELEMS, "batches out of range");
    const int32_t input_depth = golden_next_in(1, DRIVER_MAX_WEIGHTS, "input_depth out of range");
    const int32_t output_depth = golden_next_in(1, DRIVER_MAX_CHANNELS, "output_depth out of range");
    p.input_offset = golden_next();
    p.output_offset = golden_next();
    p.activation_min = golden_next();
    p.activation_max = golden_next();
    const int32_t has_bias = golden_next_in(0, 1, "has_bias must be 0 or 1");
    if ((int64_t)batches * input_depth > DRIVER_MAX_ELEMS || (int64_t)batches * output_depth > DRIVER_MAX_ELEMS ||
        (int64_t)input_depth * output_depth > DRIVER_MAX_WEIGHTS) {
        golden_fail("fully connected case too large for the driver's buffers");
    }
    if (s16) {
        read_s16(g_a16, batches * input_depth);
    } else {
        read_s8(g_a8, batches * input_depth);
    }
    read_s8(g_weights, input_depth * output_depth);
    for (int32_t o = 0; o < output_depth && has_bias; ++o) {
        if (s16) {
            g_bias64[o] = golden_next_i64();
        } else {
            g_bias32[o] = golden_next();
        }
    }
    for (int32_t o = 0; o < output_depth; ++o) {
        g_mult[o] = golden_next();
    }
    for (int32_t o = 0; o < output_depth; ++o) {
        g_shift[o] = golden_next_in(-31, 30, "fc shift out of range");
    }
    if (s16) {
        MEASURE_BEGIN();
        grukit_fully_connected_s16(&p, batches, input_depth, output_depth, g_a16, g_weights,
                                   has_bias ? g_bias64 : NULL, g_mult, g_shift, g_out16);
        MEASURE_END(case_index);
        golden_emit_i16(case_index, g_out16, batches * output_depth);
    } else {
        MEASURE_BEGIN();
        grukit_fully_connected_s8(&p, batches, input_depth, output_depth, g_a8, g_weights,
                                  has_bias ? g_bias32 : NULL, g_mult, g_shift, g_out8);
        MEASURE_END(case_index);
        golden_emit_i8(case_index, g_out8, batches * output_depth);
    }
}

static void run_add_sub(int32_t case_index, int op)
{
    grukit_add_params p;
    const int32_t n = read_count(DRIVER_MAX_ELEMS);
    p.input1_offset = golden_next();
    p.input2_offset = golden_next();
    p.output_offset = golden_next();
    p.left_shift = golden_next_in(0, 30, "left_shift out of range");
    p.input1_multiplier = golden_next();
    p.input1_shift = golden_next_in(-31, 0, "input1_shift out of range");
    p.input2_multiplier = golden_next();
    p.input2_shift = golden_next_in(-31, 0, "input2_shift out of range");
    p.output_multiplier = golden_next();
    p.output_shift = golden_next_in(-31, 0, "output_shift out of range");
    p.activation_min = golden_next();
    p.activation_max = golden_next();
    if (op == OP_ADD_S8 || op == OP_SUB_S8) {
        read_s8(g_a8, n);
        read_s8(g_b8, n);
        if (op == OP_ADD_S8) {
            MEASURE_BEGIN();
            grukit_add_s8(&p, n, g_a8, g_b8, g_out8);
            MEASURE_END(case_index);
        } else {
            MEASURE_BEGIN();
            grukit_sub_s8(&p, n, g_a8, g_b8, g_out8);
            MEASURE_END(case_index);
        }
        golden_emit_i8(case_index, g_out8, n);
    } else {
        read_s16(g_a16, n);
        read_s16(g_b16, n);
        if (op == OP_ADD_S16) {
            MEASURE_BEGIN();
            grukit_add_s16(&p, n, g_a16, g_b16, g_out16);
            MEASURE_END(case_index);
        } else {
            MEASURE_BEGIN();
            grukit_sub_s16(&p, n, g_a16, g_b16, g_out16);
            MEASURE_END(case_index);
        }
        golden_emit_i16(case_index, g_out16, n);
    }
}

static void run_mul(int32_t case_index, int s16)
{
    grukit_mul_params p;
    const int32_t n = read_count(DRIVER_MAX_ELEMS);
    p.input1_offset = golden_next();
    p.input2_offset = golden_next();
    p.output_offset = golden_next();
    p.output_multiplier = golden_next();
    p.output_shift = golden_next_in(-31, 30, "mul output_shift out of range");
    p.activation_min = golden_next();
    p.activation_max = golden_next();
    if (s16) {
        read_s16(g_a16, n);
        read_s16(g_b16, n);
        MEASURE_BEGIN();
        grukit_mul_s16(&p, n, g_a16, g_b16, g_out16);
        MEASURE_END(case_index);
        golden_emit_i16(case_index, g_out16, n);
    } else {
        read_s8(g_a8, n);
        read_s8(g_b8, n);
        MEASURE_BEGIN();
        grukit_mul_s8(&p, n, g_a8, g_b8, g_out8);
        MEASURE_END(case_index);
        golden_emit_i8(case_index, g_out8, n);
    }
}

static void run_activation_s8(int32_t case_index, int tanh)
{
    grukit_activation_s8_params p;
    const int32_t n = read_count(DRIVER_MAX_ELEMS);
    p.input_zero_point = golden_next_in(INT8_MIN, INT8_MAX, "input_zero_point out of range");
    p.input_range_radius = golden_next();
    p.input_multiplier = golden_next();
    p.input_left_shift = golden_next_in(-31, 30, "input_left_shift out of range");
    read_s8(g_a8, n);
    if (tanh) {
        MEASURE_BEGIN();
        grukit_tanh_s8(&p, n, g_a8, g_out8);
        MEASURE_END(case_index);
    } else {
        MEASURE_BEGIN();
        grukit_logistic_s8(&p, n, g_a8, g_out8);
        MEASURE_END(case_index);
    }
    golden_emit_i8(case_index, g_out8, n);
}

static void run_activation_s16(int32_t case_index, int tanh)
{
    grukit_activation_s16_params p;
    const int32_t n = read_count(DRIVER_MAX_ELEMS);
    p.input_multiplier = golden_next_in(0, 32767, "s16 input_multiplier out of range");
    p.input_left_shift = golden_next_in(0, 31, "s16 input_left_shift out of range");
    read_s16(g_a16, n);
    if (tanh) {
        MEASURE_BEGIN();
        grukit_tanh_s16(&p, n, g_a16, g_out16);
        MEASURE_END(case_index);
    } else {
        MEASURE_BEGIN();
        grukit_logistic_s16(&p, n, g_a16, g_out16);
        MEASURE_END(case_index);
    }
    golden_emit_i16(case_index, g_out16, n);
}

int main(int argc, char **argv)
{
    if (golden_open(argc, argv) != 0) {
        golden_fail("cannot open the golden stream");
    }
#ifdef DRIVER_MEASURE
    board_ticks_start();
    MEASURE_BEGIN();
    g_ticks_overhead = board_ticks() - g_ticks_start; /* the cost of the measurement itself */
#endif
    for (int32_t case_index = 0;; ++case_index) {
        const int32_t op = golden_next();
        switch (op) {
        case OP_END:
            golden_close();
            printf("END %ld\n", (long)case_index);
            return 0;
        case OP_MQM: run_mqm(case_index, 0); break;
        case OP_MQM_S64: run_mqm(case_index, 1); break;
        case OP_FC_S8: run_fc(case_index, 0); break;
        case OP_FC_S16: run_fc(case_index, 1); break;
        case OP_ADD_S8:
        case OP_ADD_S16:
        case OP_SUB_S8:
        case OP_SUB_S16: run_add_sub(case_index, (int)op); break;
        case OP_MUL_S8: run_mul(case_index, 0); break;
        case OP_MUL_S16: run_mul(case_index, 1); break;
        case OP_LOGISTIC_S8: run_activation_s8(case_index, 0); break;
        case OP_TANH_S8: run_activation_s8(case_index, 1); break;
        case OP_LOGISTIC_S16: run_activation_s16(case_index, 0); break;
        case OP_TANH_S16: run_activation_s16(case_index, 1); break;
        case OP_SIGMOID_TABLE: {
            for (int32_t i = 0; i < 256; ++i) {
                g_out32[i] = grukit_sigmoid_table_uint16[i];
            }
            golden_emit_i32(case_index, g_out32, 256);
            break;
        }
        default: golden_fail("unknown op code"); break;
        }
    }
}
