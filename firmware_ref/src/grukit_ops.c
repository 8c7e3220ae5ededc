/*
 * grukit_ops.c - integer primitives, written from the semantics of TFLite-Micro's reference kernels
 * (double-rounding requantization, gemmlowp fixed-point logistic/tanh, the int16 sigmoid-table kernels).
 * Contracts are in grukit_ops.h.
 *
 * Overflow policy: where TFLite-Micro's C++ relies on two's-complement wrap-around (plain int32 add and
 * multiply inside gemmlowp, x * 2^left_shift in the requantization), this file wraps explicitly through
 * uint32_t, so the results are the same and no signed overflow (undefined behaviour) occurs. Right shifts
 * of negative values are arithmetic on every compiler grukit targets (GCC, Clang: implementation-defined
 * behaviour documented as sign-extending), as TFLite-Micro also assumes.
 */
#include "grukit_ops.h"

#include <stddef.h>

/* GRUKIT_PORTABLE_ONLY keeps the portable loops on a DSP-capable core (to measure what the DSP path gains). */
#if defined(__ARM_FEATURE_DSP) && !defined(GRUKIT_PORTABLE_ONLY)
#define GRUKIT_USE_DSP 1
#include <arm_acle.h>
#include <string.h>
#else
#define GRUKIT_USE_DSP 0
#endif

#include "grukit_tables.h"

/* ---------------------------------------------------------------- wrapping int32 helpers */

static inline int32_t wrap_add_s32(int32_t a, int32_t b) { return (int32_t)((uint32_t)a + (uint32_t)b); }

static inline int32_t wrap_sub_s32(int32_t a, int32_t b) { return (int32_t)((uint32_t)a - (uint32_t)b); }

/* x * 2^shift modulo 2^32, as TFLite-Micro's `x * (1 << shift)` on a two's-complement machine. */
static inline int32_t wrap_shl_s32(int32_t x, int shift) { return (int32_t)((uint32_t)x << shift); }

static inline int32_t clamp_s32(int32_t x, int32_t lo, int32_t hi) { return x < lo ? lo : (x > hi ? hi : x); }

/* ---------------------------------------------------------------- fixed-point building blocks */

/* The same function inline, for the kernels' inner paths. */
static inline int32_t srdhm_s32(int32_t a, int32_t b)
{
    if (a == INT32_MIN && b == INT32_MIN) {
        return INT32_MAX; /* the only product whose doubled high half does not fit */
    }
    /* gemmlowp nudges by 2^30 (1 - 2^30 for a negative product) and divides truncating toward zero; for a
     * negative n, trunc(n / 2^31) = floor((n + 2^31 - 1) / 2^31), so both cases are one floor shift of
     * a * b + 2^30: nearest, ties toward +infinity, without a 64-bit division. */
    return (int32_t)(((int64_t)a * (int64_t)b + (INT64_C(1) << 30)) >> 31);
}

int32_t grukit_saturating_rounding_doubling_high_mul_s32(int32_t a, int32_t b) { return srdhm_s32(a, b); }

static inline int32_t rdbpot_s32(int32_t x, int exponent)
{
    const int32_t mask = (int32_t)((1u << exponent) - 1u); /* exponent <= 31: a 32-bit shift suffices */
    const int32_t remainder = x & mask;
    /* Ties go away from zero: a negative x needs a remainder strictly above half + 1 to round up. */
    const int32_t threshold = (mask >> 1) + (x < 0 ? 1 : 0);
    return (x >> exponent) + (remainder > threshold ? 1 : 0);
}

int32_t grukit_rounding_divide_by_pot_s32(int32_t x, int exponent) { return rdbpot_s32(x, exponent); }

static inline int32_t mqm_s32(int32_t x, int32_t multiplier, int shift)
{
    const int left_shift = shift > 0 ? shift : 0;
    const int right_shift = shift > 0 ? 0 : -shift;
    return rdbpot_s32(srdhm_s32(wrap_shl_s32(x, left_shift), multiplier), right_shift);
}

int32_t grukit_multiply_by_quantized_multiplier(int32_t x, int32_t multiplier, int shift)
{
    return mqm_s32(x, multiplier, shift);
}

int32_t grukit_multiply_by_quantized_multiplier_s64(int64_t x, int32_t multiplier, int shift)
{
    /* Keep 15 fractional bits of the multiplier so that |x| < 2^47 times it stays below 2^62. */
    const int32_t reduced_multiplier = multiplier < 0x7FFF0000 ? (multiplier + (1 << 15)) >> 16 : 0x7FFF;
    const int total_shift = 15 - shift;
    /* Adding half then flooring rounds half toward +infinity (not away from zero), as TFLite-Micro does. */
    const int64_t acc_i64 = x * (int64_t)reduced_multiplier + (INT64_C(1) << (total_shift - 1));
    return (int32_t)(acc_i64 >> total_shift);
}

/* ---------------------------------------------------------------- fully connected */

/* Takes the params by value: read through a pointer, they would be reloaded after every int8 store (a char
 * store may alias anything). */
static inline int8_t requantize_s8(int32_t acc_i32, int32_t multiplier, int32_t shift, grukit_fc_params p)
{
    int32_t out = mqm_s32(acc_i32, multiplier, (int)shift) + p.output_offset;
    return (int8_t)clamp_s32(out, p.activation_min, p.activation_max);
}

#if !GRUKIT_USE_DSP
/* One dot product sum_d w[d] * (x[d] + input_offset) in int32: the reference every path must equal. */
static int32_t dot_s8_portable(const int8_t *x, const int8_t *w, int32_t depth, int32_t input_offset)
{
    int32_t acc_i32 = 0;
    for (int32_t d = 0; d < depth; ++d) {
        acc_i32 += (int32_t)w[d] * ((int32_t)x[d] + input_offset);
    }
    return acc_i32;
}
#endif

#if GRUKIT_USE_DSP
/*
 * DSP path: three output rows at a time, four depth elements per iteration. The input word is widened once
 * with the offset folded in (SXTAB16: x + offset in [-255, 255] fits a halfword exactly) and shared by the
 * three rows; each row then costs one weight load, two SXTB16 and two SMLAD per four MACs.
 *
 * Why it is bit-identical to dot_s8_portable: it forms the same products w[d] * (x[d] + offset), each exact
 * in 16x16 -> 32 bits, and adds them in a different order. Integer addition is associative and commutative,
 * and SMLAD adds modulo 2^32 (it sets the Q flag but never saturates), so the final int32 is the same sum;
 * with input_depth <= 65536 no partial sum even leaves the int32 range.
 */
static inline uint32_t load_u32(const int8_t *p)
{
    uint32_t v;
    memcpy(&v, p, sizeof v); /* an unaligned LDR on Cortex-M4 */
    return v;
}

/* The odd bytes (1, 3) of a word sign-extended to halfwords. ACLE has no rotate operand for SXTB16 and GCC
 * does not fold a separate ROR into it, so the rotated forms are written as instructions (as CMSIS does). */
static inline int16x2_t sxtb16_ror8(uint32_t v)
{
    int16x2_t r;
    __asm__("sxtb16 %0, %1, ror #8" : "=r"(r) : "r"(v));
    return r;
}

static inline int16x2_t sxtab16_ror8(int16x2_t a, uint32_t v)
{
    int16x2_t r;
    __asm__("sxtab16 %0, %1, %2, ror #8" : "=r"(r) : "r"(a), "r"(v));
    return r;
}

/* Both halfwords hold the offset; SXTAB16 adds bytes 0 and 2 (or 1 and 3) of the input to them. */
static inline int16x2_t offset_pair(int32_t input_offset)
{
    return (int16x2_t)(((uint32_t)input_offset & 0xFFFFu) * 0x00010001u);
}

/* acc[r] = sum_d w[r * depth + d] * (x[d] + input_offset) for rows r = 0..2. Three rows, one pointer each
 * advanced as it is read, is what fits the core's registers: a fourth row makes GCC spill to the stack
 * inside the loop, which costs more than sharing the input widening saves. */
static void dot3_s8_dsp(const int8_t *x, const int8_t *w, int32_t depth, int32_t input_offset, int32_t acc[3])
{
    const int16x2_t offset_x2 = offset_pair(input_offset);
    const int8_t *w0 = w, *w1 = w + depth, *w2 = w + 2 * depth;
    const int8_t *const x_end = x + (depth & ~3);
    int32_t acc0 = 0, acc1 = 0, acc2 = 0;
    while (x < x_end) {
        const uint32_t xw = load_u32(x);
        const int16x2_t x02 = __sxtab16(offset_x2, (int8x4_t)xw);
        const int16x2_t x13 = sxtab16_ror8(offset_x2, xw);
        uint32_t ww = load_u32(w0);
        acc0 = __smlad(__sxtb16((int8x4_t)ww), x02, acc0);
        acc0 = __smlad(sxtb16_ror8(ww), x13, acc0);
        ww = load_u32(w1);
        acc1 = __smlad(__sxtb16((int8x4_t)ww), x02, acc1);
        acc1 = __smlad(sxtb16_ror8(ww), x13, acc1);
        ww = load_u32(w2);
        acc2 = __smlad(__sxtb16((int8x4_t)ww), x02, acc2);
        acc2 = __smlad(sxtb16_ror8(ww), x13, acc2);
        x += 4;
        w0 += 4;
        w1 += 4;
        w2 += 4;
    }
    for (int32_t d = 0; d < (depth & 3); ++d) {
        const int32_t xv = (int32_t)x[d] + input_offset;
        acc0 += (int32_t)w0[d] * xv;
        acc1 += (int32_t)w1[d] * xv;
        acc2 += (int32_t)w2[d] * xv;
    }
    acc[0] = acc0;
    acc[1] = acc1;
    acc[2] = acc2;
}

/* One row (the tail when output_depth is not a multiple of three). */
static int32_t dot1_s8_dsp(const int8_t *x, const int8_t *w, int32_t depth, int32_t input_offset)
{
    const int16x2_t offset_x2 = offset_pair(input_offset);
    int32_t acc = 0;
    int32_t d = 0;
    for (; d + 4 <= depth; d += 4) {
        const uint32_t xw = load_u32(x + d);
        const uint32_t ww = load_u32(w + d);
        acc = __smlad(__sxtb16((int8x4_t)ww), __sxtab16(offset_x2, (int8x4_t)xw), acc);
        acc = __smlad(sxtb16_ror8(ww), sxtab16_ror8(offset_x2, xw), acc);
    }
    for (; d < depth; ++d) {
        acc += (int32_t)w[d] * ((int32_t)x[d] + input_offset);
    }
    return acc;
}
#endif

void grukit_fully_connected_s8(const grukit_fc_params *params, int32_t batches, int32_t input_depth,
                               int32_t output_depth, const int8_t *input, const int8_t *weights,
                               const int32_t *bias, const int32_t *multiplier, const int32_t *shift,
                               int8_t *output)
{
    const grukit_fc_params p = *params;
    for (int32_t b = 0; b < batches; ++b) {
        const int8_t *x = input + (size_t)b * (size_t)input_depth;
        int8_t *y = output + (size_t)b * (size_t)output_depth;
        int32_t o = 0;
#if GRUKIT_USE_DSP
        for (; o + 3 <= output_depth; o += 3) {
            int32_t acc[3];
            dot3_s8_dsp(x, weights + (size_t)o * (size_t)input_depth, input_depth, p.input_offset, acc);
            for (int32_t r = 0; r < 3; ++r) {
                const int32_t acc_i32 = bias != NULL ? acc[r] + bias[o + r] : acc[r];
                y[o + r] = requantize_s8(acc_i32, multiplier[o + r], shift[o + r], p);
            }
        }
#endif
        for (; o < output_depth; ++o) {
            const int8_t *w = weights + (size_t)o * (size_t)input_depth;
#if GRUKIT_USE_DSP
            int32_t acc_i32 = dot1_s8_dsp(x, w, input_depth, p.input_offset);
#else
            int32_t acc_i32 = dot_s8_portable(x, w, input_depth, p.input_offset);
#endif
            if (bias != NULL) {
                acc_i32 += bias[o];
            }
            y[o] = requantize_s8(acc_i32, multiplier[o], shift[o], p);
        }
    }
}

void grukit_fully_connected_s16(const grukit_fc_params *params, int32_t batches, int32_t input_depth,
                                int32_t output_depth, const int16_t *input, const int8_t *weights,
                                const int64_t *bias, const int32_t *multiplier, const int32_t *shift,
                                int16_t *output)
{
    for (int32_t b = 0; b < batches; ++b) {
        const int16_t *x = input + (size_t)b * (size_t)input_depth;
        for (int32_t o = 0; o < output_depth; ++o) {
            const int8_t *w = weights + (size_t)o * (size_t)input_depth;
            int64_t acc_i64 = 0;
            for (int32_t d = 0; d < input_depth; ++d) {
                /* Each product is at most 128 * 32768 = 2^22 and fits int32; the sum needs int64. */
                acc_i64 += (int32_t)w[d] * ((int32_t)x[d] + params->input_offset);
            }
            if (bias != NULL) {
                acc_i64 += bias[o];
            }
            int32_t out = grukit_multiply_by_quantized_multiplier_s64(acc_i64, multiplier[o], (int)shift[o]) +
                          params->output_offset;
            output[(size_t)b * (size_t)output_depth + (size_t)o] =
                (int16_t)clamp_s32(out, params->activation_min, params->activation_max);
        }
    }
}

/* ---------------------------------------------------------------- element-wise ADD / SUB / MUL */

/* TFLite-Micro applies these requantizations with MultiplyByQuantizedMultiplierSmallerThanOneExp, which is
 * the general function restricted to shift <= 0. */
static inline int32_t add_sub_raw(const grukit_add_params *p, int32_t a, int32_t b, int subtract)
{
    const int32_t a_shifted = wrap_shl_s32(a + p->input1_offset, (int)p->left_shift);
    const int32_t b_shifted = wrap_shl_s32(b + p->input2_offset, (int)p->left_shift);
    const int32_t a_scaled =
        mqm_s32(a_shifted, p->input1_multiplier, (int)p->input1_shift);
    const int32_t b_scaled =
        mqm_s32(b_shifted, p->input2_multiplier, (int)p->input2_shift);
    const int32_t raw = subtract ? wrap_sub_s32(a_scaled, b_scaled) : wrap_add_s32(a_scaled, b_scaled);
    const int32_t out =
        mqm_s32(raw, p->output_multiplier, (int)p->output_shift) + p->output_offset;
    return clamp_s32(out, p->activation_min, p->activation_max);
}

void grukit_add_s8(const grukit_add_params *params, int32_t size, const int8_t *input1, const int8_t *input2,
                   int8_t *output)
{
    for (int32_t i = 0; i < size; ++i) {
        output[i] = (int8_t)add_sub_raw(params, input1[i], input2[i], 0);
    }
}

void grukit_add_s16(const grukit_add_params *params, int32_t size, const int16_t *input1, const int16_t *input2,
                    int16_t *output)
{
    for (int32_t i = 0; i < size; ++i) {
        output[i] = (int16_t)add_sub_raw(params, input1[i], input2[i], 0);
    }
}

void grukit_sub_s8(const grukit_add_params *params, int32_t size, const int8_t *input1, const int8_t *input2,
                   int8_t *output)
{
    for (int32_t i = 0; i < size; ++i) {
        output[i] = (int8_t)add_sub_raw(params, input1[i], input2[i], 1);
    }
}

void grukit_sub_s16(const grukit_add_params *params, int32_t size, const int16_t *input1, const int16_t *input2,
                    int16_t *output)
{
    for (int32_t i = 0; i < size; ++i) {
        output[i] = (int16_t)add_sub_raw(params, input1[i], input2[i], 1);
    }
}

static inline int32_t mul_raw(const grukit_mul_params *p, int32_t a, int32_t b)
{
    /* (int8 + offset)^2 <= 256^2 and int16^2 <= 2^30: the product always fits int32. */
    const int32_t prod_i32 = (a + p->input1_offset) * (b + p->input2_offset);
    const int32_t out =
        mqm_s32(prod_i32, p->output_multiplier, (int)p->output_shift) +
        p->output_offset;
    return clamp_s32(out, p->activation_min, p->activation_max);
}

void grukit_mul_s8(const grukit_mul_params *params, int32_t size, const int8_t *input1, const int8_t *input2,
                   int8_t *output)
{
    for (int32_t i = 0; i < size; ++i) {
        output[i] = (int8_t)mul_raw(params, input1[i], input2[i]);
    }
}

void grukit_mul_s16(const grukit_mul_params *params, int32_t size, const int16_t *input1, const int16_t *input2,
                    int16_t *output)
{
    for (int32_t i = 0; i < size; ++i) {
        output[i] = (int16_t)mul_raw(params, input1[i], input2[i]);
    }
}

/* ---------------------------------------------------------------- gemmlowp fixed-point logistic / tanh */
/*
 * Values are int32 raw fixed-point numbers; "_q<n>" names the number of integer bits (q0: [-1, 1),
 * q2: [-4, 4), q4: [-16, 16)). A product of a q<a> and a q<b> is a q<a+b> (SRDHM of the raws).
 */

#define Q0_ONE INT32_MAX   /* 1.0 is not representable in q0; gemmlowp uses the largest raw value */
#define Q2_ONE (1 << 29)   /* 1.0 in q2 */
#define SRDHM srdhm_s32

/* Multiply a raw value by 2^exponent (exponent > 0), saturating: gemmlowp SaturatingRoundingMultiplyByPOT. */
static int32_t saturating_shl_s32(int32_t x, int exponent)
{
    const int32_t threshold = (int32_t)((1u << (31 - exponent)) - 1u);
    if (x > threshold) {
        return INT32_MAX;
    }
    if (x < -threshold) {
        return INT32_MIN;
    }
    return wrap_shl_s32(x, exponent);
}

/* (a + b) / 2 rounded half away from zero, computed wide so it cannot overflow. */
static int32_t rounding_half_sum_s32(int32_t a, int32_t b)
{
    const int64_t sum = (int64_t)a + (int64_t)b;
    return (int32_t)((sum + (sum >= 0 ? 1 : -1)) / 2);
}

/* exp(a) for a in [-1/4, 0), a and result in q0: a 4th-order Taylor expansion around -1/8. */
static int32_t exp_on_interval_between_negative_one_quarter_and_0_excl(int32_t a_q0)
{
    const int32_t exp_neg_one_eighth_q0 = 1895147668; /* exp(-1/8) */
    const int32_t one_third_q0 = 715827883;           /* 1/3 */
    const int32_t x = wrap_add_s32(a_q0, 1 << 28);    /* x = a + 1/8 */
    const int32_t x2 = SRDHM(x, x);
    const int32_t x3 = SRDHM(x2, x);
    const int32_t x4 = SRDHM(x2, x2);
    const int32_t x4_over_4 = rdbpot_s32(x4, 2);
    const int32_t poly = rdbpot_s32(
        wrap_add_s32(SRDHM(wrap_add_s32(x4_over_4, x3), one_third_q0), x2), 1);
    return wrap_add_s32(exp_neg_one_eighth_q0, SRDHM(exp_neg_one_eighth_q0, wrap_add_s32(x, poly)));
}

/* exp(a) for a <= 0 given with `integer_bits` integer bits, result in q0. The input is split into a part in
 * [-1/4, 0) and a multiple of 1/4 whose bits select factors exp(-2^k) (a barrel shifter). */
static int32_t exp_on_negative_values(int32_t a, int integer_bits)
{
    /* Q0 raws of exp(-2^k) for k = -2 .. 4. */
    static const int32_t exp_neg_pot_q0[7] = {1672461947, 1302514674, 790015084, 290630308,
                                              39332535,   720401,     242};
    const int fractional_bits = 31 - integer_bits;
    const int32_t one_quarter = 1 << (fractional_bits - 2);
    const int32_t a_mod_quarter_minus_quarter = wrap_sub_s32(a & (one_quarter - 1), one_quarter);
    int32_t result_q0 = exp_on_interval_between_negative_one_quarter_and_0_excl(
        saturating_shl_s32(a_mod_quarter_minus_quarter, integer_bits));
    const int32_t remainder = wrap_sub_s32(a_mod_quarter_minus_quarter, a);
    for (int k = -2; k <= 4; ++k) {
        if (integer_bits > k && (remainder & (1 << (fractional_bits + k))) != 0) {
            result_q0 = SRDHM(result_q0, exp_neg_pot_q0[k + 2]);
        }
    }
    if (integer_bits > 5 && a < -(1 << (36 - integer_bits))) {
        result_q0 = 0; /* below -32 the product of factors above has already underflowed; make it exact */
    }
    return a == 0 ? Q0_ONE : result_q0;
}

/* Three Newton-Raphson steps for 1 / (1 + a), a in [0, 1), in q2; returns x ~ 1 / half_denominator. */
static int32_t newton_reciprocal_q2(int32_t half_denominator_q0)
{
    const int32_t c48_over_17_q2 = 1515870810;
    const int32_t neg_c32_over_17_q2 = -1010580540;
    int32_t x_q2 = wrap_add_s32(c48_over_17_q2, SRDHM(half_denominator_q0, neg_c32_over_17_q2));
    for (int i = 0; i < 3; ++i) {
        const int32_t half_denominator_times_x_q2 = SRDHM(half_denominator_q0, x_q2);
        const int32_t one_minus_q2 = wrap_sub_s32(Q2_ONE, half_denominator_times_x_q2);
        /* x * one_minus is a q4; rescale to q2. */
        x_q2 = wrap_add_s32(x_q2, saturating_shl_s32(SRDHM(x_q2, one_minus_q2), 2));
    }
    return x_q2;
}

/* 1 / (1 + a) for a in [0, 1), q0. */
static int32_t one_over_one_plus_x_for_x_in_0_1(int32_t a_q0)
{
    const int32_t x_q2 = newton_reciprocal_q2(rounding_half_sum_s32(a_q0, Q0_ONE));
    /* x / 2 is exact by relabelling q2 as q1; then q1 -> q0. */
    return saturating_shl_s32(x_q2, 1);
}

/* (1 - a) / (1 + a) for a in [0, 1), q0. */
static int32_t one_minus_x_over_one_plus_x_for_x_in_0_1(int32_t a_q0)
{
    const int32_t x_q2 = newton_reciprocal_q2(rounding_half_sum_s32(a_q0, Q0_ONE));
    return saturating_shl_s32(wrap_sub_s32(x_q2, Q2_ONE), 2);
}

/* gemmlowp::logistic on a q4 input, result q0. */
static int32_t logistic_q4_to_q0(int32_t a_q4)
{
    if (a_q4 == 0) {
        return 1 << 30; /* exactly 1/2 */
    }
    const int32_t abs_q4 = a_q4 > 0 ? a_q4 : -a_q4;
    const int32_t positive_q0 = one_over_one_plus_x_for_x_in_0_1(exp_on_negative_values(-abs_q4, 4));
    return a_q4 > 0 ? positive_q0 : wrap_sub_s32(Q0_ONE, positive_q0);
}

/* gemmlowp::tanh on a q4 input, result q0. */
static int32_t tanh_q4_to_q0(int32_t a_q4)
{
    if (a_q4 == 0) {
        return 0;
    }
    const int32_t neg_abs_q4 = a_q4 < 0 ? a_q4 : -a_q4;
    /* exp(2 * n): doubling is exact by reading the same raw value with one more integer bit (q5). */
    const int32_t t_q0 = one_minus_x_over_one_plus_x_for_x_in_0_1(exp_on_negative_values(neg_abs_q4, 5));
    return a_q4 < 0 ? -t_q0 : t_q0;
}

#undef SRDHM

void grukit_logistic_s8(const grukit_activation_s8_params *params, int32_t size, const int8_t *input,
                        int8_t *output)
{
    for (int32_t i = 0; i < size; ++i) {
        const int32_t x = (int32_t)input[i] - params->input_zero_point;
        if (x <= -params->input_range_radius) {
            output[i] = INT8_MIN;
        } else if (x >= params->input_range_radius) {
            output[i] = INT8_MAX;
        } else {
            const int32_t x_q4 =
                mqm_s32(x, params->input_multiplier, (int)params->input_left_shift);
            /* q0 -> scale 1/256 (24 fractional bits dropped), then the fixed zero point -128. */
            const int32_t y = rdbpot_s32(logistic_q4_to_q0(x_q4), 31 - 8) - 128;
            output[i] = (int8_t)clamp_s32(y, INT8_MIN, INT8_MAX);
        }
    }
}

void grukit_tanh_s8(const grukit_activation_s8_params *params, int32_t size, const int8_t *input, int8_t *output)
{
    for (int32_t i = 0; i < size; ++i) {
        const int32_t x = (int32_t)input[i] - params->input_zero_point;
        if (x <= -params->input_range_radius) {
            output[i] = INT8_MIN;
        } else if (x >= params->input_range_radius) {
            output[i] = INT8_MAX;
        } else {
            const int32_t x_q4 =
                mqm_s32(x, params->input_multiplier, (int)params->input_left_shift);
            /* q0 -> scale 1/128, zero point 0. */
            const int32_t y = rdbpot_s32(tanh_q4_to_q0(x_q4), 31 - 7);
            output[i] = (int8_t)clamp_s32(y, INT8_MIN, INT8_MAX);
        }
    }
}

/* ---------------------------------------------------------------- int16 table kernels */
/*
 * The input is rescaled so that 2^12 / 3 units are 1.0 (|x| < 2^17 spans [-10.7, 10.7]); the table holds
 * sigmoid(i / 24) in unsigned Q0.16 for i = 0..255, interpolated linearly. tanh(x) = 2 sigmoid(2x) - 1 reads
 * the same table with one bit less of fraction (doubling the argument).
 */

/* Rescale an int16 input to the table's scale; a multiplier of 0 marks a power-of-two input scale. */
static inline int32_t table_input_s32(int16_t x, int32_t multiplier, int32_t left_shift)
{
    const int32_t round = left_shift > 0 ? (1 << (left_shift - 1)) : 0;
    /* |x| * multiplier <= 2^15 * 32767 fits int32 (and 3 << left_shift for the power-of-two case). */
    return ((int32_t)x * multiplier + round) >> left_shift;
}

static inline void resolve_pot(const grukit_activation_s16_params *params, int32_t *multiplier, int32_t *left_shift)
{
    *multiplier = params->input_multiplier;
    *left_shift = params->input_left_shift;
    if (*multiplier == 0) {
        *multiplier = 3 << *left_shift;
        *left_shift = 0;
    }
}

void grukit_logistic_s16(const grukit_activation_s16_params *params, int32_t size, const int16_t *input,
                         int16_t *output)
{
    int32_t multiplier, left_shift;
    resolve_pot(params, &multiplier, &left_shift);
    for (int32_t i = 0; i < size; ++i) {
        const int32_t x = table_input_s32(input[i], multiplier, left_shift);
        const uint32_t abs_x = x >= 0 ? (uint32_t)x : 0u - (uint32_t)x;
        const uint32_t index = abs_x >> 9; /* 2^9 input units per table step */
        uint32_t sigmoid_q25;              /* sigmoid(|x|) in unsigned Q0.25 */
        if (index >= 255u) {
            sigmoid_q25 = 0x7FFFu << 10;
        } else {
            const uint32_t lo = grukit_sigmoid_table_uint16[index];
            const uint32_t hi = grukit_sigmoid_table_uint16[index + 1u];
            sigmoid_q25 = (lo << 9) + (abs_x & 0x1FFu) * (hi - lo);
        }
        /* sigmoid(-x) = 1 - sigmoid(x); both branches round to nearest on the way back to Q0.15. */
        const uint32_t y = x >= 0 ? sigmoid_q25 + (1u << 9) : (1u << 25) - sigmoid_q25 + (1u << 9) - 1u;
        output[i] = (int16_t)(y >> 10);
    }
}

void grukit_tanh_s16(const grukit_activation_s16_params *params, int32_t size, const int16_t *input,
                     int16_t *output)
{
    int32_t multiplier, left_shift;
    resolve_pot(params, &multiplier, &left_shift);
    for (int32_t i = 0; i < size; ++i) {
        const int32_t x = table_input_s32(input[i], multiplier, left_shift);
        const uint32_t abs_x = x >= 0 ? (uint32_t)x : 0u - (uint32_t)x;
        const uint32_t index = abs_x >> 8; /* 2^8 units per step: the argument is doubled */
        int32_t sigmoid_q24;               /* sigmoid(2|x|) in Q0.24; < 2^24 fits int32 */
        if (index >= 255u) {
            sigmoid_q24 = 0xFFFF << 8;
        } else {
            const uint32_t lo = grukit_sigmoid_table_uint16[index];
            const uint32_t hi = grukit_sigmoid_table_uint16[index + 1u];
            sigmoid_q24 = (int32_t)((lo << 8) + (abs_x & 0xFFu) * (hi - lo));
        }
        /* tanh = 2 sigmoid - 1: subtract one half (2^23 in Q0.24), round, and keep Q0.15 (>> 8 below). */
        const int32_t y = x >= 0 ? sigmoid_q24 - (1 << 23) + (1 << 7) : -sigmoid_q24 + (1 << 23) + (1 << 7) - 1;
        output[i] = (int16_t)(y >> 8);
    }
}
