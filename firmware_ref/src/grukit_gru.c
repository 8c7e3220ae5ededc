/*
 * grukit_gru.c - the fused integer GRU step (contracts in grukit_gru.h).
 *
 * The _s8 kernel evaluates the op sequence of grukit/core/graph.py for a whole hidden vector at a time:
 *   1. the layer input is widened once to int16 pairs (offset added, doubled);
 *   2. the stacked input-side and state-side gate products run as 4-row blocks over it, two weight rows
 *      packed per halfword (grukit_fc_s8), over every 8-column group or, in the block-sparse form, over the
 *      groups holding a non-zero weight only;
 *   3. one loop over the hidden units does every element-wise op, each requantized exactly.
 * Every intermediate int8 tensor is the one TFLite-Micro would produce; only the order of additions inside
 * a dot product differs, and integer addition in int32 is exact (the generator bounds every accumulator).
 *
 * Overflow policy: no signed overflow occurs within the documented contracts (the generator proves each
 * bound from the model's weights, biases and zero points); shifts of possibly negative values go through
 * uint32_t; right shifts of negative values are arithmetic (GCC, Clang). firmware_ref/kernel.py is this
 * file's Python twin, function for function.
 */
#include "grukit_gru.h"
#include "grukit_tables.h"

#include <stddef.h>
#include <string.h>

#if defined(__ARM_FEATURE_DSP) && !defined(GRUKIT_PORTABLE_ONLY)
#define GRUKIT_GRU_DSP 1
#include <arm_acle.h>
#else
#define GRUKIT_GRU_DSP 0
#endif

/* Helium (MVE, e.g. Cortex-M55): the size form's products and element-wise ops run on 128-bit vectors. */
#if defined(__ARM_FEATURE_MVE) && (__ARM_FEATURE_MVE & 1) && !defined(GRUKIT_PORTABLE_ONLY)
#define GRUKIT_GRU_MVE 1
#include <arm_mve.h>
#else
#define GRUKIT_GRU_MVE 0
#endif

/* Phase marks: where a step's instructions go. A measuring build (firmware_ref/test/gru_driver.c with
 * DRIVER_PROFILE) defines GRUKIT_PROFILE_MARK as a function it provides, called with GRUKIT_PHASE_UNITS when the
 * gates' element-wise ops begin and GRUKIT_PHASE_PRODUCTS when they end; otherwise the marks are nothing. */
#define GRUKIT_PHASE_PRODUCTS 0
#define GRUKIT_PHASE_UNITS 1
#ifdef GRUKIT_PROFILE_MARK
void GRUKIT_PROFILE_MARK(int32_t phase);
#define GRUKIT_PHASE(phase) GRUKIT_PROFILE_MARK(phase)
#else
#define GRUKIT_PHASE(phase) ((void)0)
#endif

/* Which forms of the _s8 constants this build runs (grukit_gru.h): both by default; -DGRUKIT_FORM_SPEED_ONLY or
 * -DGRUKIT_FORM_SIZE_ONLY leaves the other's code out (grukit_model_s8_init refuses a model of that form). */
#if defined(GRUKIT_FORM_SPEED_ONLY) && defined(GRUKIT_FORM_SIZE_ONLY)
#error "define at most one of GRUKIT_FORM_SPEED_ONLY and GRUKIT_FORM_SIZE_ONLY"
#endif
#ifdef GRUKIT_FORM_SIZE_ONLY
#define GRUKIT_FORM_SPEED 0
#else
#define GRUKIT_FORM_SPEED 1
#endif
#ifdef GRUKIT_FORM_SPEED_ONLY
#define GRUKIT_FORM_SIZE 0
#else
#define GRUKIT_FORM_SIZE 1
#endif

/* The block-sparse product loops stay functions of their own: inlined into the dense ones' function, they
 * cost the dense 16x8 loop a few register spills per block (measured on a Cortex-M4, GCC 12 -O2). */
#if defined(__GNUC__)
#define GRUKIT_NOINLINE __attribute__((noinline))
#define GRUKIT_INLINE inline __attribute__((always_inline))
#else
#define GRUKIT_NOINLINE
#define GRUKIT_INLINE inline
#endif

/* ---------------------------------------------------------------- small helpers */

static inline int32_t round_up4(int32_t n) { return (n + 3) & ~3; }

static inline int32_t round_up8(int32_t n) { return (n + 7) & ~7; }

static inline int32_t max_s32(int32_t a, int32_t b) { return a > b ? a : b; }

static inline int32_t clamp_s32(int32_t x, int32_t lo, int32_t hi) { return x < lo ? lo : (x > hi ? hi : x); }

static inline int32_t shl_s32(int32_t x, int32_t shift) { return (int32_t)((uint32_t)x << shift); }

static inline int32_t sat_s8(int32_t x)
{
#if GRUKIT_GRU_DSP
    int32_t r; /* SSAT; GCC's ACLE __ssat macro trips -Wsign-conversion */
    __asm__("ssat %0, #8, %1" : "=r"(r) : "r"(x));
    return r;
#else
    return x < INT8_MIN ? INT8_MIN : (x > INT8_MAX ? INT8_MAX : x);
#endif
}

#if !GRUKIT_GRU_DSP && (defined(__ARM_ARCH_6M__) || defined(__ARM_ARCH_8M_BASE__) || defined(GRUKIT_MUL_HIGH_SPLIT))
#define GRUKIT_MUL_HIGH_SPLIT_USED 1
/* (x * multiplier + 2^31) >> 32 without a 64-bit product, out of line: one copy for every requantization. */
static GRUKIT_NOINLINE int32_t mul_high_rounded_split(int32_t x, int32_t multiplier)
{
    /*
     * Armv6-M / Armv8-M Baseline (Cortex-M0, M0+, M23) multiply 32 x 32 -> 32 only: a 64-bit product is a
     * library call. Here from 16-bit halves, exactly, for multiplier in [0, 2^31) (every multiplier the
     * generator writes): x = xh 2^16 + xl (xh = x >> 16 signed, xl unsigned), m = mh 2^16 + ml, so
     *     x m + 2^31 = (D + (B >> 16) + (C >> 16)) 2^32 + s 2^16 + (A & 0xFFFF),
     *     A = xl ml (< 2^32), B = xh ml, C = xl mh, D = xh mh (each within int32),
     *     s = (A >> 16) + (B & 0xFFFF) + (C & 0xFFFF) + 2^15 (< 2^18),
     * and the floor of that over 2^32 is D + (B >> 16) + (C >> 16) + (s >> 16): the last term below 2^16
     * cannot carry. (GRUKIT_MUL_HIGH_SPLIT selects this on any core: the host tests run it with sanitizers.)
     */
    const int32_t xh = x >> 16, mh = multiplier >> 16;
    const uint32_t xl = (uint32_t)x & 0xFFFFu, ml = (uint32_t)multiplier & 0xFFFFu;
    const uint32_t a = xl * ml;
    const int32_t b = xh * (int32_t)ml, c = (int32_t)xl * mh;
    const uint32_t s = (a >> 16) + ((uint32_t)b & 0xFFFFu) + ((uint32_t)c & 0xFFFFu) + 0x8000u;
    return xh * mh + (b >> 16) + (c >> 16) + (int32_t)(s >> 16);
}
#endif

/* acc + x * multiplier / 2^32 rounded half up: SMMLAR (the accumulator enters the high word exactly). */
static inline int32_t mul_high_rounded_acc_s32(int32_t x, int32_t multiplier, int32_t acc)
{
#if GRUKIT_GRU_DSP
    int32_t r;
    __asm__("smmlar %0, %1, %2, %3" : "=r"(r) : "r"(x), "r"(multiplier), "r"(acc));
    return r;
#elif defined(GRUKIT_MUL_HIGH_SPLIT_USED)
    return acc + mul_high_rounded_split(x, multiplier);
#elif defined(__riscv) || defined(GRUKIT_MUL_HIGH_LOW)
    /* With x m = H 2^32 + L (L the unsigned low word), (x m + 2^31) >> 32 = H + (L >> 31): MULH, MUL and a shift
     * on RV32, rather than a 64-bit add with its carry (SLTU and two ADDs). GRUKIT_MUL_HIGH_LOW selects it
     * anywhere (the host probe checks it). */
    const int32_t high = (int32_t)(((int64_t)x * multiplier) >> 32);
    return acc + high + (int32_t)(((uint32_t)x * (uint32_t)multiplier) >> 31);
#else
    return acc + (int32_t)(((int64_t)x * multiplier + (INT64_C(1) << 31)) >> 32);
#endif
}

/*
 * TFLite's double-rounding requantization plus zero point, on a doubled input x2 (see grukit_requant_s32),
 * for right_shift >= 1: SaturatingRoundingDoublingHighMul(x, m) is SMMULR(2x, m) because 2x still fits
 * (|x| < 2^29) and m >= 0 rules out the one saturating case; RoundingDivideByPOT(y, e) + zp is
 * floor((y + 2^(e-1) + zp 2^e - [y < 0]) / 2^e), and [x2 < 0] may stand for [y < 0] (see the header).
 * Three instructions: SMMLAR, ADD with ASR #31, ASR.
 */
static inline int32_t requant_fast_s32(int32_t x2, int32_t multiplier, int32_t rounding, int32_t right_shift)
{
    const int32_t y = mul_high_rounded_acc_s32(x2, multiplier, rounding); /* bounded: no overflow */
    return (y + (x2 >> 31)) >> right_shift;
}

/* Any row: a left shift first, and right_shift 0 (no rounding, so no sign term). */
static inline int32_t requant_general_s32(int32_t x2, const grukit_requant_s32 *q)
{
    const int32_t shifted = shl_s32(x2, q->left_shift);
    const int32_t y = mul_high_rounded_acc_s32(shifted, q->multiplier, q->rounding);
    return (y + (q->right_shift > 0 ? (shifted >> 31) : 0)) >> q->right_shift;
}

/* ---------------------------------------------------------------- int8 products */

static inline int32_t pack_s16x2(int32_t lo, int32_t hi)
{
    return (int32_t)((uint32_t)(uint16_t)lo | ((uint32_t)hi << 16));
}

/*
 * xw[j] = the 16-bit pair (x[2j], x[2j + 1]), each 2 * (x + offset) (the doubling feeds requant_fast_s32;
 * |2 (x + offset)| <= 510 fits 16 bits): the two columns one packed weight word holds. Padding columns,
 * up to a multiple of 8, are 0.
 */
static void widen_s8(const int8_t *x, int32_t n, int32_t offset, int32_t *xw)
{
    int32_t k = 0;
#if GRUKIT_GRU_DSP
    /* 4 columns a word: SXTAB16 adds the offset to bytes 0, 2 and (rotated) 1, 3, PKHBT / PKHTB pair them as
     * (x0, x1) and (x2, x3), SADD16 doubles (|2 (x + offset)| <= 510: no halfword carries into the other). */
    const int32_t offsets = pack_s16x2(offset, offset);
    for (; k + 4 <= n; k += 4, xw += 2) {
        int32_t v, even, odd;
        memcpy(&v, x + k, sizeof v); /* an unaligned LDR: the Armv7-M and Armv8-M mainline cores allow it */
        __asm__("sxtab16 %[even], %[off], %[v]\n\t"
                "sxtab16 %[odd], %[off], %[v], ror #8\n\t"
                "pkhbt %[v], %[even], %[odd], lsl #16\n\t"
                "pkhtb %[odd], %[odd], %[even], asr #16\n\t"
                "sadd16 %[v], %[v], %[v]\n\t"
                "sadd16 %[odd], %[odd], %[odd]"
                : [v] "+&r"(v), [even] "=&r"(even), [odd] "=&r"(odd)
                : [off] "r"(offsets));
        xw[0] = v;
        xw[1] = odd;
    }
#endif
    for (; k + 2 <= n; k += 2) {
        *xw++ = pack_s16x2(2 * (x[k] + offset), 2 * (x[k + 1] + offset));
    }
    if (k < n) {
        *xw++ = pack_s16x2(2 * (x[k] + offset), 0);
        k += 2;
    }
    for (; (k & 7) != 0; k += 2) {
        *xw++ = 0; /* the products read whole 8-column groups */
    }
}

#if !GRUKIT_GRU_DSP
static inline int32_t low_s16(int32_t word) { return (int32_t)((uint32_t)word << 16) >> 16; }

static inline int32_t high_s16(int32_t word) { return word >> 16; }

static inline int32_t byte_s32(int32_t word, int index)
{
    return (int32_t)((uint32_t)word << (24 - 8 * index)) >> 24;
}

/* The portable twin of SMLAD(w, x) and SMLAD(SXTB16(w), x) for one weight word and one input pair. */
static inline void pair_mac_portable(int32_t w, int32_t x, int32_t *acc_packed, int32_t *acc_b)
{
    *acc_packed += low_s16(w) * low_s16(x) + high_s16(w) * high_s16(x);
    *acc_b += byte_s32(w, 0) * low_s16(x) + byte_s32(w, 2) * high_s16(x);
}
#endif

#if GRUKIT_GRU_DSP
/*
 * One 8-column group of one block: 32 MACs in 6 LDRD, 8 SXTB16, 16 SMLAD (xw and w post-incremented past
 * the group). The dense loop repeats it over every group, the sparse one over the stored groups.
 */
/* Half a group: 4 columns (2 input words) of the block's 4 rows. */
#define GRUKIT_HALF_GROUP_S8_ASM                     \
    "ldrd %[x0], %[x1], [%[xw]], #8\n\t"             \
    "ldrd %[wa], %[wb], [%[w]], #8\n\t"              \
    "smlad %[p0], %[wa], %[x0], %[p0]\n\t"           \
    "sxtb16 %[wa], %[wa]\n\t"                        \
    "smlad %[b0], %[wa], %[x0], %[b0]\n\t"           \
    "smlad %[p0], %[wb], %[x1], %[p0]\n\t"           \
    "sxtb16 %[wb], %[wb]\n\t"                        \
    "smlad %[b0], %[wb], %[x1], %[b0]\n\t"           \
    "ldrd %[wa], %[wb], [%[w]], #8\n\t"              \
    "smlad %[p1], %[wa], %[x0], %[p1]\n\t"           \
    "sxtb16 %[wa], %[wa]\n\t"                        \
    "smlad %[b1], %[wa], %[x0], %[b1]\n\t"           \
    "smlad %[p1], %[wb], %[x1], %[p1]\n\t"           \
    "sxtb16 %[wb], %[wb]\n\t"                        \
    "smlad %[b1], %[wb], %[x1], %[b1]\n\t"
#define GRUKIT_GROUP_S8_ASM GRUKIT_HALF_GROUP_S8_ASM GRUKIT_HALF_GROUP_S8_ASM
#endif

#if !GRUKIT_GRU_DSP
/* The portable loops' step: 2 input words (4 columns) against a block's 4 weight words (2 per row pair). */
static inline void quad_portable_s8(const int32_t *w, const int32_t *xw, int32_t *p0, int32_t *b0, int32_t *p1,
                                    int32_t *b1)
{
    pair_mac_portable(w[0], xw[0], p0, b0);
    pair_mac_portable(w[1], xw[1], p0, b0);
    pair_mac_portable(w[2], xw[0], p1, b1);
    pair_mac_portable(w[3], xw[1], p1, b1);
}
#endif

/* The 4 accumulators of a block from its packed pair sums: rows B0, A0, B1, A1. */
static inline void unpack_block_s8(int32_t p0, int32_t b0, int32_t p1, int32_t b1, int32_t acc[4])
{
    acc[0] = b0;
    acc[1] = (p0 >> 8) - (b0 >> 8); /* = 2 (biasA + dotA): the floors of dotB / 256 cancel */
    acc[2] = b1;
    acc[3] = (p1 >> 8) - (b1 >> 8);
}

/*
 * acc[0..3] = 2 x (bias + dot product) of the 4 rows of one block (rows B0, A0, B1, A1), from packed
 * weights (see grukit_fc_s8) and widened inputs; groups = the depth in 8-column groups.
 */
static inline void dot_block_s8(const int32_t *w, const int32_t *xw, int32_t groups, const int32_t *start,
                                int32_t acc[4])
{
    int32_t p0 = start[0], b0 = start[1], p1 = start[2], b1 = start[3];
    const int32_t *const xw_end = xw + 4 * groups;
#if GRUKIT_GRU_DSP
    /* Per 32 MACs: 6 LDRD, 8 SXTB16, 16 SMLAD, CMP, BNE. The generator bounds |start| + sum |w x| of each
     * accumulator below 2^31, which bounds every partial sum too: no accumulation leaves int32, so SMLAD
     * (which would wrap) and the portable C (where overflow would be undefined) give the same exact sum. */
    if (xw < xw_end) {
        int32_t x0, x1, wa, wb;
        __asm__ volatile(
            "1:\n\t" GRUKIT_GROUP_S8_ASM
            "cmp %[xw], %[end]\n\t"
            "bne 1b\n\t"
            : [p0] "+r"(p0), [b0] "+r"(b0), [p1] "+r"(p1), [b1] "+r"(b1), [xw] "+r"(xw), [w] "+r"(w),
              [x0] "=&r"(x0), [x1] "=&r"(x1), [wa] "=&r"(wa), [wb] "=&r"(wb)
            : [end] "r"(xw_end)
            : "cc", "memory");
    }
#else
    for (; xw < xw_end; xw += 2, w += 4) {
        quad_portable_s8(w, xw, &p0, &b0, &p1, &b1);
    }
#endif
    unpack_block_s8(p0, b0, p1, b1, acc);
}

/*
 * dot_block_s8 over the stored groups of a block-sparse product only: group_index[0 .. count) name the
 * 8-column groups (ascending), w holds their 8 words each, in order. The input pointer jumps to each group's
 * 4 input words. Exact for the same reason as the dense loop: a skipped group's terms are all 0, so the sum
 * is the dense loop's and every partial sum here is a partial sum of the same terms in the same order, within
 * the generator's bound |start| + sum |w x| < 2^31 of each accumulator (packed ones included: no wrap, no
 * undefined overflow). Returns w past the block's groups.
 */
static inline const int32_t *dot_block_sparse_s8(const int32_t *w, const int32_t *xw, const uint8_t *group_index,
                                                 int32_t count, const int32_t *start, int32_t acc[4])
{
    int32_t p0 = start[0], b0 = start[1], p1 = start[2], b1 = start[3];
    for (const uint8_t *const gi_end = group_index + count; group_index < gi_end; ++group_index) {
        const int32_t *xg = xw + 4 * (int32_t)*group_index; /* LDRB + ADD (shifted): 2 instructions a group */
#if GRUKIT_GRU_DSP
        int32_t x0, x1, wa, wb;
        __asm__ volatile(GRUKIT_GROUP_S8_ASM
                         : [p0] "+r"(p0), [b0] "+r"(b0), [p1] "+r"(p1), [b1] "+r"(b1), [xw] "+r"(xg), [w] "+r"(w),
                           [x0] "=&r"(x0), [x1] "=&r"(x1), [wa] "=&r"(wa), [wb] "=&r"(wb)
                         :
                         : "cc", "memory");
#else
        for (const int32_t *const xg_end = xg + 4; xg < xg_end; xg += 2, w += 4) {
            quad_portable_s8(w, xg, &p0, &b0, &p1, &b1);
        }
#endif
    }
    unpack_block_s8(p0, b0, p1, b1, acc);
    return w;
}

/* One block's 4 outputs from its accumulators. */
static inline void requant_block_s8(const int32_t acc[4], const grukit_requant_s32 *q, int32_t general, int8_t *out)
{
    if (general) {
        for (int32_t r = 0; r < 4; ++r) {
            out[r] = (int8_t)sat_s8(requant_general_s32(acc[r], &q[r]));
        }
        return;
    }
    out[0] = (int8_t)sat_s8(requant_fast_s32(acc[0], q[0].multiplier, q[0].rounding, q[0].right_shift));
    out[1] = (int8_t)sat_s8(requant_fast_s32(acc[1], q[1].multiplier, q[1].rounding, q[1].right_shift));
    out[2] = (int8_t)sat_s8(requant_fast_s32(acc[2], q[2].multiplier, q[2].rounding, q[2].right_shift));
    out[3] = (int8_t)sat_s8(requant_fast_s32(acc[3], q[3].multiplier, q[3].rounding, q[3].right_shift));
}

#if GRUKIT_FORM_SPEED && GRUKIT_GRU_DSP
/* 1: the dense product's whole block loop in assembly (blocks_dense_s8); 0: the C loop around dot_block_s8 (an
 * unoptimized build, where r7 is the frame pointer; a test forces it in an optimized one). */
#ifndef GRUKIT_BLOCKS_ASM
#if defined(__OPTIMIZE__)
#define GRUKIT_BLOCKS_ASM 1
#else
#define GRUKIT_BLOCKS_ASM 0
#endif
#endif
#endif

#if GRUKIT_FORM_SPEED && GRUKIT_GRU_DSP && GRUKIT_BLOCKS_ASM
/* Half a group as GRUKIT_HALF_GROUP_S8_ASM, the block's 4 weight words in one LDM to r4-r7: 14 instructions. */
#define GRUKIT_HALF_GROUP_LDM_S8_ASM                 \
    "ldrd %[x0], %[x1], [%[xw]], #8\n\t"             \
    "ldmia %[w]!, {r4-r7}\n\t"                       \
    "smlad r0, r4, %[x0], r0\n\t"                    \
    "sxtb16 r4, r4\n\t"                              \
    "smlad r1, r4, %[x0], r1\n\t"                    \
    "smlad r0, r5, %[x1], r0\n\t"                    \
    "sxtb16 r5, r5\n\t"                              \
    "smlad r1, r5, %[x1], r1\n\t"                    \
    "smlad r2, r6, %[x0], r2\n\t"                    \
    "sxtb16 r6, r6\n\t"                              \
    "smlad r3, r6, %[x0], r3\n\t"                    \
    "smlad r2, r7, %[x1], r2\n\t"                    \
    "sxtb16 r7, r7\n\t"                              \
    "smlad r3, r7, %[x1], r3\n\t"
#define GRUKIT_GROUP_LDM_S8_ASM GRUKIT_HALF_GROUP_LDM_S8_ASM GRUKIT_HALF_GROUP_LDM_S8_ASM
/* One row's output: its grukit_requant_s32 in r4-r7 (LDM), requant_fast_s32 and sat_s8 on ACC, a byte out. */
#define GRUKIT_ROW_S8_ASM(ACC)                       \
    "ldmia %[xw]!, {r4-r7}\n\t"                      \
    "smmlar %[x0], " ACC ", r4, r5\n\t"              \
    "add %[x0], %[x0], " ACC ", asr #31\n\t"         \
    "asr %[x0], %[x0], r6\n\t"                       \
    "ssat %[x0], #8, %[x0]\n\t"                      \
    "strb %[x0], [%[x1]], #1\n\t"

/*
 * fc_s8's dense loop with the fast requantization (no general_requant), every block in one assembly loop: per
 * block the 4 accumulator starts in one LDM, the 8-column groups (32 MACs in 2 LDRD, 2 LDM, 8 SXTB16, 16 SMLAD;
 * a CMP and BNE per group, per two groups for an even count, per four for a multiple of 4), unpack_block_s8, and
 * per row its record in one LDM and requant_fast_s32 + sat_s8 in 5 instructions: 36 instructions a block besides
 * the groups (about 52 in the C loop). The weights run on from block to block; the block's start, record and
 * output pointers wait in memory in pairs (one LDRD each), since the group loop takes all 13 registers other than
 * r9 (the RWPI platform register), r7 included: a build that keeps a frame pointer in r7 above -O0
 * (-fno-omit-frame-pointer) defines GRUKIT_BLOCKS_ASM=0. The same integers as the C loop: the same sums in the
 * same order (the bound of dot_block_s8 holds) and the same requantization.
 */
/* The loop of blocks_dense_s8 with INNER, the group loop's body: one group (an odd count), two or four. */
#define GRUKIT_BLOCKS_DENSE_S8_ASM(INNER)                                                              \
    __asm__ volatile("1:\n\t"                                                                          \
                     "ldrd %[x0], %[xw], %[starts]\n\t" /* the block's starts, the input's */            \
                     "ldmia %[x0]!, {r0-r3}\n\t"                                                       \
                     "str %[x0], %[starts]\n\t"                                                        \
                     "2:\n\t" INNER "cmp %[xw], %[xw_end]\n\t"                                         \
                     "bne 2b\n\t"                                                                      \
                     "asr %[x0], r1, #8\n\t" /* unpack_block_s8: rows B0 (r1), A0 (r0), B1 (r3), A1 (r2) */ \
                     "rsb r0, %[x0], r0, asr #8\n\t"                                                   \
                     "asr %[x0], r3, #8\n\t"                                                           \
                     "rsb r2, %[x0], r2, asr #8\n\t"                                                   \
                     "ldrd %[xw], %[x1], %[outs]\n\t" /* the block's records, its outputs */            \
                         GRUKIT_ROW_S8_ASM("r1") GRUKIT_ROW_S8_ASM("r0") GRUKIT_ROW_S8_ASM("r3")          \
                             GRUKIT_ROW_S8_ASM("r2")                                                      \
                     "strd %[xw], %[x1], %[outs]\n\t"                                                  \
                     "ldr %[x0], %[out_end]\n\t"                                                       \
                     "cmp %[x1], %[x0]\n\t"                                                            \
                     "bne 1b\n\t"                                                                      \
                     : "=&r"(p0), "=&r"(b0), "=&r"(p1), "=&r"(b1), "=&r"(r4), "=&r"(r5), "=&r"(r6), "=&r"(r7), \
                       [x0] "=&r"(x0), [x1] "=&r"(x1), [xw] "=&r"(x), [w] "+&r"(w),              \
                       [starts] "+m"(starts), [outs] "+m"(outs)                                          \
                     : [xw_end] "r"(xw_end), [out_end] "m"(out_end)                                    \
                     : "cc", "memory")

static GRUKIT_NOINLINE void blocks_dense_s8(const int32_t *w, const int32_t *xw, int32_t groups, const int32_t *start,
                                            const grukit_requant_s32 *q, int8_t *out, int32_t blocks)
{
    const int32_t *const xw_end = xw + 4 * groups;
    const int8_t *const out_end = out + 4 * blocks;
    /* pairs in memory, each one LDRD: the next block's accumulator starts and the input; records and outputs */
    struct {
        const int32_t *start, *xw;
    } starts = {start, xw};
    struct {
        const grukit_requant_s32 *q;
        int8_t *out;
    } outs = {q, out};
    const int32_t *x;
    register int32_t p0 __asm__("r0"), b0 __asm__("r1"), p1 __asm__("r2"), b1 __asm__("r3");
    /* a row pair's weight words in the group loop, a row's record (multiplier, rounding, right_shift, left_shift)
     * at its requantization */
    register int32_t r4 __asm__("r4"), r5 __asm__("r5"), r6 __asm__("r6"), r7 __asm__("r7");
    int32_t x0, x1;
    if (groups & 1) {
        GRUKIT_BLOCKS_DENSE_S8_ASM(GRUKIT_GROUP_LDM_S8_ASM);
    } else if (groups & 2) { /* two groups an iteration: one CMP and BNE per 64 MACs */
        GRUKIT_BLOCKS_DENSE_S8_ASM(GRUKIT_GROUP_LDM_S8_ASM GRUKIT_GROUP_LDM_S8_ASM);
    } else { /* four: one per 128 MACs */
        GRUKIT_BLOCKS_DENSE_S8_ASM(GRUKIT_GROUP_LDM_S8_ASM GRUKIT_GROUP_LDM_S8_ASM GRUKIT_GROUP_LDM_S8_ASM
                                       GRUKIT_GROUP_LDM_S8_ASM);
    }
    /* GCC reports "r7 cannot be used in 'asm' here" on the next line when the build keeps a frame pointer in r7
     * (-fno-omit-frame-pointer above -O0): build with -DGRUKIT_BLOCKS_ASM=0 (the C loop, the same integers). */
}
#endif

#if GRUKIT_FORM_SPEED
/* fc_s8 of a block-sparse product: the same bias starts, requantizations and outputs as the dense form. */
static GRUKIT_NOINLINE void fc_sparse_s8(const grukit_fc_s8 *fc, const int32_t *xw, int8_t *out)
{
    const int8_t *const out_end = out + round_up4(fc->rows);
    const int32_t *w = fc->weights;
    const int32_t *start = fc->bias_start;
    const grukit_requant_s32 *q = fc->requant;
    const uint8_t *count = fc->block_groups;
    const uint8_t *group_index = fc->group_index;
    const int32_t general = fc->general_requant;
    for (; out < out_end; out += 4, start += 4, q += 4, group_index += *count++) {
        int32_t acc[4];
        w = dot_block_sparse_s8(w, xw, group_index, *count, start, acc);
        requant_block_s8(acc, q, general, out);
    }
}
#endif

/* ---------------------------------------------------------------- int8 compact products (size mode) */
#if GRUKIT_FORM_SIZE

/* grukit_fc_compact_s8's requantization of a doubled accumulator: the shift byte says which of
 * grukit_requant_s32's two forms the row has (a left shift and no rounding, or a right shift). */
static inline int32_t requant_compact_s32(int32_t x2, int32_t multiplier, int32_t shift, int32_t zero_point)
{
    if (shift >= 0) {
        return mul_high_rounded_acc_s32(shl_s32(x2, shift), multiplier, zero_point);
    }
    const int32_t e = -shift;
    return requant_fast_s32(x2, multiplier, (1 << (e - 1)) + shl_s32(zero_point, e), e);
}

/* Column k of the widened input: the int16 half of word k / 2 (see widen_s8). */
static inline int32_t widened_column(const int32_t *xw, int32_t k)
{
    const int32_t word = xw[k >> 1];
    return (k & 1) ? word >> 16 : (int32_t)((uint32_t)word << 16) >> 16;
}

#if GRUKIT_GRU_DSP
static inline int32_t load_unaligned_s32(const int8_t *p)
{
    int32_t word;
    memcpy(&word, p, sizeof word); /* one LDR: Armv7-M / Armv8-M mainline load words at any address */
    return word;
}

/* acc + SMLAD(SXTB16(w), x0) + SMLAD(SXTB16(w ROR 8), x1): one stored column quad (0, 2, 1, 3). */
static inline int32_t quad_mac_s8(int32_t w, int32_t x0, int32_t x1, int32_t acc)
{
    int32_t lo, hi;
    __asm__("sxtb16 %0, %1" : "=r"(lo) : "r"(w));
    __asm__("sxtb16 %0, %1, ror #8" : "=r"(hi) : "r"(w));
    __asm__("smlad %0, %1, %2, %0" : "+r"(acc) : "r"(lo), "r"(x0));
    __asm__("smlad %0, %1, %2, %0" : "+r"(acc) : "r"(hi), "r"(x1));
    return acc;
}
#endif

#if !GRUKIT_GRU_DSP
/* acc + the row's dot product: w its depth bytes, xw the widened input. */
static inline int32_t dot_compact_s8(const int8_t *w, const int32_t *xw, int32_t depth, int32_t acc)
{
    const int32_t quad_end = depth & ~3;
    const int32_t *xq = xw;
    for (const int8_t *const w_end = w + quad_end; w < w_end; w += 4, xq += 2) {
#if GRUKIT_GRU_DSP
        acc = quad_mac_s8(load_unaligned_s32(w), xq[0], xq[1], acc);
#else
        acc += w[0] * widened_column(xq, 0) + w[2] * widened_column(xq, 1) + w[1] * widened_column(xq, 2) +
               w[3] * widened_column(xq, 3);
#endif
    }
    for (int32_t k = quad_end; k < depth; ++k, ++w) {
        acc += *w * widened_column(xw, k);
    }
    return acc;
}
#else
/* Two rows (w and w1) at once: each input word pair loaded once for both (w1 = w for a lone last row). */
static inline void dot2_compact_s8(const int8_t *w, const int8_t *w1, const int32_t *xw, int32_t depth,
                                   int32_t acc[2])
{
    const int32_t quad_end = depth & ~3;
    const int32_t *xq = xw;
    int32_t a0 = acc[0], a1 = acc[1];
    for (const int8_t *const w_end = w + quad_end; w < w_end; w += 4, w1 += 4, xq += 2) {
        const int32_t x0 = xq[0], x1 = xq[1];
        a0 = quad_mac_s8(load_unaligned_s32(w), x0, x1, a0);
        a1 = quad_mac_s8(load_unaligned_s32(w1), x0, x1, a1);
    }
    for (int32_t k = quad_end; k < depth; ++k, ++w, ++w1) {
        const int32_t x = widened_column(xw, k);
        a0 += *w * x;
        a1 += *w1 * x;
    }
    acc[0] = a0;
    acc[1] = a1;
}
#endif

/*
 * The compact product: rows one after another, each a dot product over its own bytes (two rows at a time on
 * the DSP path). Exact as the packed form: every partial sum of a row is a partial sum of the terms the
 * generator bounded, so SMLAD never wraps and the portable sum never overflows.
 */
static GRUKIT_NOINLINE void fc_compact_s8(const grukit_fc_s8 *fc, const int32_t *xw, int8_t *out)
{
    const grukit_fc_compact_s8 *c = fc->compact;
    const int32_t depth = fc->depth, rows = fc->rows;
    for (int32_t part = 0, first = 0; first < rows; ++part, first += c->part_rows) {
        const int32_t end = first + c->part_rows, zero_point = c->zero_point[part];
        for (int32_t o = first; o < end;) {
            const int8_t *const w = c->weights + o * depth;
            int32_t acc[2] = {c->requant[o >> 2].bias2[o & 3], 0};
#if GRUKIT_GRU_DSP
            int32_t n = o + 1 < end ? 2 : 1;
            if (n == 2) {
                acc[1] = c->requant[(o + 1) >> 2].bias2[(o + 1) & 3];
            }
            dot2_compact_s8(w, n == 2 ? w + depth : w, xw, depth, acc);
#else
            int32_t n = 1;
            acc[0] = dot_compact_s8(w, xw, depth, acc[0]);
#endif
            for (const int32_t *a = acc; n > 0; --n, ++a, ++o) {
                const grukit_requant4_s8 *const q = &c->requant[o >> 2]; /* row o's fields at lane o % 4 */
                out[o] = (int8_t)sat_s8(requant_compact_s32(*a, q->multiplier[o & 3], q->shift[o & 3], zero_point));
            }
        }
    }
}

#endif /* GRUKIT_FORM_SIZE */

/* out[o] for every o < 4 * ceil(rows / 4) (padding rows included: the buffers are padded too); the compact
 * form writes rows outputs only. */
static void fc_s8(const grukit_fc_s8 *fc, const int32_t *xw, int8_t *out)
{
#if GRUKIT_FORM_SIZE
    if (fc->compact != NULL) {
        fc_compact_s8(fc, xw, out);
        return;
    }
#endif
#if GRUKIT_FORM_SPEED
    if (fc->block_groups != NULL) {
        fc_sparse_s8(fc, xw, out);
        return;
    }
    const int32_t groups = round_up8(fc->depth) >> 3;
    const int8_t *const out_end = out + round_up4(fc->rows);
    const int32_t *w = fc->weights;
    const int32_t *start = fc->bias_start;
    const grukit_requant_s32 *q = fc->requant;
    if (fc->general_requant) {
        for (; out < out_end; out += 4, w += 8 * groups, start += 4, q += 4) {
            int32_t acc[4];
            dot_block_s8(w, xw, groups, start, acc);
            requant_block_s8(acc, q, 1, out);
        }
        return;
    }
#if GRUKIT_GRU_DSP && GRUKIT_BLOCKS_ASM
    blocks_dense_s8(w, xw, groups, start, q, out, (int32_t)(out_end - out) >> 2);
#else
    for (; out < out_end; out += 4, w += 8 * groups, start += 4, q += 4) {
        int32_t acc[4];
        dot_block_s8(w, xw, groups, start, acc);
        requant_block_s8(acc, q, 0, out);
    }
#endif
#endif
}

#if GRUKIT_FORM_SIZE && GRUKIT_GRU_MVE
/* ---------------------------------------------------------------- int8 compact products on Helium */

/* x in the compact weights' column order: each whole quad as columns (0, 2, 1, 3), the tail as it is. */
static void permute_quads_s8(const int8_t *x, int32_t n, int8_t *xp)
{
    static const uint8_t quad_order[16] = {0, 2, 1, 3, 4, 6, 5, 7, 8, 10, 9, 11, 12, 14, 13, 15};
    const uint8x16_t offsets = vld1q_u8(quad_order);
    int32_t k = 0;
    for (; k + 16 <= n; k += 16) { /* 16 columns in one byte gather */
        vst1q_s8(xp + k, vldrbq_gather_offset_s8(x + k, offsets));
    }
    for (; k + 4 <= n; k += 4) {
        xp[k] = x[k];
        xp[k + 1] = x[k + 2];
        xp[k + 2] = x[k + 1];
        xp[k + 3] = x[k + 3];
    }
    for (; k < n; ++k) {
        xp[k] = x[k];
    }
}

/*
 * The parts the Helium block loops of both schemes share (blocks_mve_s8, blocks_mve_s16). Registers: a0..a3 the
 * four rows' accumulators (VMLADAVA takes even ones), w0..w3 their weight pointers, q the block's requantization
 * record and out its outputs (r0-r7: the widening and narrowing accesses take low bases), x the input; r7 (a
 * frame pointer at -O0) and r9 (the platform register of RWPI builds) stay free. The loop keeps depth, pad (how
 * far a row pointer runs past depth bytes), x_start and out_end in memory.
 */
#define GRUKIT_BLOCK_REGISTERS_MVE(XTYPE, QTYPE, OUTTYPE)                                              \
    const XTYPE *const x_start = x;                                                                    \
    OUTTYPE *const out_end = out + 4 * blocks;                                                         \
    const int32_t zeros[2] = {0, 0}; /* the accumulators' start, two by one LDRD */                    \
    register int32_t a0 __asm__("r0");                                                                 \
    register const int8_t *w0 __asm__("r1") = w;                                                       \
    register const int8_t *w1 __asm__("r2");                                                          \
    register const int8_t *w2 __asm__("r3");                                                          \
    register const int8_t *w3 __asm__("r4");                                                          \
    register const QTYPE *rq __asm__("r5") = q;                                                        \
    register OUTTYPE *ro __asm__("r6") = out;                                                          \
    register const XTYPE *rx __asm__("r11") = x;                                                       \
    register int32_t a1 __asm__("r8");                                                                 \
    register int32_t a2 __asm__("r10");                                                                \
    register int32_t a3 __asm__("r12")

/* A block's rows, zeroed accumulators, then its tail-predicated dot-product loop (DLSTP.<LANES> / LETP): XLOAD of
 * the input and WLOAD of each row's weights (post-incremented by 16 and WSTEP bytes), four VMLADAVA.<DT>; the four
 * sums end in q0, lane r holding row r's. */
#define GRUKIT_BLOCK_DOTS_MVE(LANES, XLOAD, WLOAD, WSTEP, DT)                                          \
    "1:\n\t"                                                                                          \
    "ldr lr, %[n]\n\t"                                                                                \
    "add %[w1], %[w0], lr\n\t"                                                                        \
    "add %[w2], %[w1], lr\n\t"                                                                        \
    "add %[w3], %[w2], lr\n\t"                                                                        \
    "ldrd %[a0], %[a1], %[zeros]\n\t"                                                                 \
    "ldrd %[a2], %[a3], %[zeros]\n\t"                                                                 \
    "dlstp." LANES " lr, lr\n\t"                                                                      \
    "2:\n\t"                                                                                          \
    XLOAD " q0, [%[x]], #16\n\t"                                                                      \
    WLOAD " q1, [%[w0]], #" WSTEP "\n\t"                                                              \
    "vmlava." DT " %[a0], q1, q0\n\t"                                                                 \
    WLOAD " q2, [%[w1]], #" WSTEP "\n\t"                                                              \
    "vmlava." DT " %[a1], q2, q0\n\t"                                                                 \
    WLOAD " q3, [%[w2]], #" WSTEP "\n\t"                                                              \
    "vmlava." DT " %[a2], q3, q0\n\t"                                                                 \
    WLOAD " q1, [%[w3]], #" WSTEP "\n\t"                                                              \
    "vmlava." DT " %[a3], q1, q0\n\t"                                                                 \
    "letp lr, 2b\n\t"                                                                                 \
    "vmov q0[2], q0[0], %[a0], %[a2]\n\t" /* a0 to lane 0, a2 to lane 2 */                             \
    "vmov q0[3], q0[1], %[a1], %[a3]\n\t"

/* To the next block (its first row starts depth bytes past w3's start) until out reaches out_end. */
#define GRUKIT_BLOCK_NEXT_MVE                                                                          \
    "ldr lr, %[pad]\n\t"                                                                              \
    "sub %[w0], %[w3], lr\n\t"                                                                        \
    "ldr %[x], %[x_start]\n\t"                                                                        \
    "ldr lr, %[out_end]\n\t"                                                                          \
    "cmp %[out], lr\n\t"                                                                              \
    "bne 1b\n\t"

#define GRUKIT_BLOCK_OUTPUTS_MVE                                                                       \
    [a0] "=&r"(a0), [a1] "=&r"(a1), [a2] "=&r"(a2), [a3] "=&r"(a3), [w0] "+r"(w0), [w1] "=&r"(w1),         \
        [w2] "=&r"(w2), [w3] "=&r"(w3), [q] "+r"(rq), [out] "+r"(ro), [x] "+r"(rx)
#define GRUKIT_BLOCK_INPUTS_MVE                                                                        \
    [n] "m"(depth), [pad] "m"(pad), [x_start] "m"(x_start), [out_end] "m"(out_end), [zeros] "m"(zeros)
#define GRUKIT_BLOCK_CLOBBERS_MVE "lr", "q0", "q1", "q2", "q3", "q4", "cc", "memory"

/*
 * The whole blocks of 4 rows of a compact int8 product on Helium (rows of one part: one output zero point), in
 * one loop: per block the dot products of its rows (w, w + depth, w + 2 depth, w + 3 depth) with x (the raw int8
 * input in the weights' column order) in a tail-predicated loop (DLSTP.8 / LETP: 16 columns per iteration, the
 * input loaded once for four VMLADAVA.S8: 10 instructions per 64 MACs), then the 4 rows requantized as one
 * vector from their grukit_requant4_s8 and stored as 4 int8. requant_compact_s32 lane by lane: x2 = 2 dot +
 * bias2; a lane's shift s >= 0 is a left shift before the multiply, s < 0 a right shift e = -s after it; VRMULH is
 * SMMULR, VRSHL by -e adds 2^(e - 1) and shifts right (by 0: nothing), and RoundingDivideByPOT's -1 for a
 * negative y (e >= 1 only: the lanes whose s >> 31 is -1) goes in first; the zero point is added after the
 * shift, which is what rounding = 2^(e - 1) + zp 2^e does in the scalar form; two saturating narrows (VQMOVNB)
 * to int8. Without general (no row of a left shift or shift 0: grukit_fc_s8's general_requant, which
 * grukit_model_s8_init checks) every lane's s is -e with e >= 1: x2 goes to the multiply as it is, the -1 for a
 * negative y to every lane, VRSHL by s itself (5 instructions fewer a block).
 */
/* The requantization of a block's 4 sums in q0 (both int8 Helium loops): its record's s, multiplier and bias2
 * (q3, q2, q1; q to the next block's record) and x2 = 2 dot + bias2 in q0; then, after the shifts (REQUANT4_FAST or
 * blocks_mve_s8's general one), the zero point ZP added, two saturating narrows and the 4 bytes stored. */
#define GRUKIT_REQUANT4_X2_S8_MVE                                                                      \
    "vldrb.s32 q3, [%[q], #32]\n\t" /* s */                                                            \
    "vldrw.32 q2, [%[q], #16]\n\t"  /* multiplier */                                                   \
    "vldrw.32 q1, [%[q]], #36\n\t"  /* bias2 */                                                        \
    "vshl.i32 q0, q0, #1\n\t"                                                                          \
    "vadd.i32 q0, q0, q1\n\t" /* x2 */
#define GRUKIT_REQUANT4_FAST_S8_MVE                                                                    \
    "vrmulh.s32 q0, q0, q2\n\t" /* y */                                                                \
    "vshr.s32 q2, q0, #31\n\t"                                                                         \
    "vadd.i32 q0, q0, q2\n\t" /* -1 where y < 0 */                                                     \
    "vrshl.s32 q0, q0, q3\n\t"
#define GRUKIT_REQUANT4_STORE_S8_MVE(ZP)                                                               \
    "vadd.i32 q0, q0, " ZP "\n\t"                                                                      \
    "vqmovnb.s32 q0, q0\n\t"                                                                           \
    "vqmovnb.s16 q0, q0\n\t"                                                                           \
    "vstrb.32 q0, [%[out]], #4\n\t"

#define GRUKIT_BLOCKS_MVE_S8_ASM(REQUANT)                                                              \
    __asm__ volatile("ldr lr, %[zp]\n\t"                                                               \
                     "vdup.32 q5, lr\n\t" /* the zero point in every lane */                            \
                     "vmov.i32 q4, #0\n\t" GRUKIT_BLOCK_DOTS_MVE("8", "vldrb.8", "vldrb.8", "16", "s8")     \
                         GRUKIT_REQUANT4_X2_S8_MVE REQUANT GRUKIT_REQUANT4_STORE_S8_MVE("q5")              \
                             GRUKIT_BLOCK_NEXT_MVE                                                        \
                     : GRUKIT_BLOCK_OUTPUTS_MVE                                                       \
                     : GRUKIT_BLOCK_INPUTS_MVE, [zp] "m"(zero_point)                                  \
                     : GRUKIT_BLOCK_CLOBBERS_MVE, "q5")

static GRUKIT_NOINLINE void blocks_mve_s8(const int8_t *w, const int8_t *x, int32_t depth, const grukit_requant4_s8 *q,
                                          int8_t *out, int32_t blocks, int32_t zero_point, int32_t general)
{
    const int32_t pad = ((depth + 15) & ~15) - depth; /* a row pointer ends 16 ceil(depth / 16) past its start */
    GRUKIT_BLOCK_REGISTERS_MVE(int8_t, grukit_requant4_s8, int8_t);
    if (general) {
        GRUKIT_BLOCKS_MVE_S8_ASM("vmax.s32 q1, q3, q4\n\t" /* q4: 0 */
                                 "vshl.s32 q0, q0, q1\n\t" /* x2 << max(s, 0) */
                                 "vmin.s32 q1, q3, q4\n\t" /* -e */
                                 "vrmulh.s32 q0, q0, q2\n\t" /* y */
                                 "vshr.s32 q2, q0, #31\n\t"
                                 "vshr.s32 q3, q3, #31\n\t"
                                 "vand q2, q2, q3\n\t" /* -1 where y < 0 and e >= 1 */
                                 "vadd.i32 q0, q0, q2\n\t"
                                 "vrshl.s32 q0, q0, q1\n\t");
    } else {
        GRUKIT_BLOCKS_MVE_S8_ASM(GRUKIT_REQUANT4_FAST_S8_MVE);
    }
}

/* blocks_mve_s8 for depth <= 64 without general_requant: the input stays in q4 .. q(3 + k), k = ceil(depth / 16),
 * for the whole call (its last chunk's lanes past depth zero), and one pointer walks the rows, which lie one after
 * the other: per row k - 1 whole chunks (VLDRB post-incremented by 16, VMLADAV(A)) and the last, whole or of
 * rem = depth - 16 (k - 1) bytes (a predicated VLDRB then the pointer on by rem: no byte past the row is read);
 * no loop around them, then the fast requantization: 8 k + 17 instructions a block (8 k + 25 with a partial
 * chunk) against 10 k + 28 in blocks_mve_s8. The same sums (integer addition in another grouping) and the same
 * lane-by-lane requantization. */
#define GRUKIT_XQ_WHOLE(QW, QX, OP, A) "vldrb.8 " QW ", [%[w]], #16\n\t" OP " %[" A "], " QW ", " QX "\n\t"
#define GRUKIT_XQ_PART(QW, QX, OP, A)                                                                  \
    "vpst\n\t"                                                                                          \
    "vldrbt.8 " QW ", [%[w]]\n\t"                                                                       \
    "add %[w], %[w], %[rem]\n\t" OP " %[" A "], " QW ", " QX "\n\t"
#define GRUKIT_XQ_ROW_1(A) GRUKIT_XQ_WHOLE("q0", "q4", "vmladav.s8", A)
#define GRUKIT_XQ_ROW_2(A) GRUKIT_XQ_ROW_1(A) GRUKIT_XQ_WHOLE("q1", "q5", "vmladava.s8", A)
#define GRUKIT_XQ_ROW_3(A) GRUKIT_XQ_ROW_2(A) GRUKIT_XQ_WHOLE("q2", "q6", "vmladava.s8", A)
#define GRUKIT_XQ_ROW_4(A) GRUKIT_XQ_ROW_3(A) GRUKIT_XQ_WHOLE("q3", "q7", "vmladava.s8", A)
#define GRUKIT_XQ_PART_ROW_1(A) GRUKIT_XQ_PART("q0", "q4", "vmladav.s8", A)
#define GRUKIT_XQ_PART_ROW_2(A) GRUKIT_XQ_ROW_1(A) GRUKIT_XQ_PART("q1", "q5", "vmladava.s8", A)
#define GRUKIT_XQ_PART_ROW_3(A) GRUKIT_XQ_ROW_2(A) GRUKIT_XQ_PART("q2", "q6", "vmladava.s8", A)
#define GRUKIT_XQ_PART_ROW_4(A) GRUKIT_XQ_ROW_3(A) GRUKIT_XQ_PART("q3", "q7", "vmladava.s8", A)
#define GRUKIT_XQ_LOAD_1 "vldrb.8 q4, [%[x]]\n\t"
#define GRUKIT_XQ_LOAD_2 GRUKIT_XQ_LOAD_1 "vldrb.8 q5, [%[x], #16]\n\t"
#define GRUKIT_XQ_LOAD_3 GRUKIT_XQ_LOAD_2 "vldrb.8 q6, [%[x], #32]\n\t"
#define GRUKIT_XQ_LOAD_4 GRUKIT_XQ_LOAD_3 "vldrb.8 q7, [%[x], #48]\n\t"
#define GRUKIT_XQ_PART_LOAD(Q, OFFSET) "vctp.8 %[rem]\n\tvpst\n\tvldrbt.8 " Q ", [%[x], #" OFFSET "]\n\t"
/* VCTP leaves P0 the last chunk's predicate for the rows' VPST (GCC 12 takes no VPR clobber: nothing else in
 * blocks_xq_s8, which is not inlined, holds a predicate) */
#define GRUKIT_XQ_PART_LOAD_1 GRUKIT_XQ_PART_LOAD("q4", "0")
#define GRUKIT_XQ_PART_LOAD_2 GRUKIT_XQ_LOAD_1 GRUKIT_XQ_PART_LOAD("q5", "16")
#define GRUKIT_XQ_PART_LOAD_3 GRUKIT_XQ_LOAD_2 GRUKIT_XQ_PART_LOAD("q6", "32")
#define GRUKIT_XQ_PART_LOAD_4 GRUKIT_XQ_LOAD_3 GRUKIT_XQ_PART_LOAD("q7", "48")
#define GRUKIT_BLOCKS_XQ_S8_ASM(LOAD, ROW)                                                             \
    __asm__ volatile(LOAD "1:\n\t" ROW("a0") ROW("a1") ROW("a2") ROW("a3")                               \
                     "vmov q0[2], q0[0], %[a0], %[a2]\n\t"                                              \
                     "vmov q0[3], q0[1], %[a1], %[a3]\n\t" GRUKIT_REQUANT4_X2_S8_MVE                     \
                         GRUKIT_REQUANT4_FAST_S8_MVE GRUKIT_REQUANT4_STORE_S8_MVE("%[zp]")                 \
                     "cmp %[out], %[out_end]\n\t"                                                      \
                     "bne 1b\n\t"                                                                      \
                     : [a0] "=&r"(a0), [a1] "=&r"(a1), [a2] "=&r"(a2), [a3] "=&r"(a3), [w] "+&r"(w),         \
                       [q] "+&r"(q), [out] "+&r"(out)                                                    \
                     : [x] "r"(x), [zp] "r"(zero_point), [out_end] "r"(out_end), [rem] "r"(rem)        \
                     : "q0", "q1", "q2", "q3", "q4", "q5", "q6", "q7", "cc", "memory")
/* k chunks, the last whole or partial */
#define GRUKIT_XQ_CASE(K)                                                                              \
    case K:                                                                                            \
        if (rem == 16) {                                                                               \
            GRUKIT_BLOCKS_XQ_S8_ASM(GRUKIT_XQ_LOAD_##K, GRUKIT_XQ_ROW_##K);                            \
        } else {                                                                                       \
            GRUKIT_BLOCKS_XQ_S8_ASM(GRUKIT_XQ_PART_LOAD_##K, GRUKIT_XQ_PART_ROW_##K);                  \
        }                                                                                              \
        break

static GRUKIT_NOINLINE void blocks_xq_s8(const int8_t *w, const int8_t *x, int32_t depth, const grukit_requant4_s8 *q,
                                         int8_t *out, int32_t blocks, int32_t zero_point)
{
    const int8_t *const out_end = out + 4 * blocks;
    const int32_t chunks = (depth + 15) >> 4, rem = depth - 16 * (chunks - 1); /* depth in [1, 64] */
    register int32_t a0 __asm__("r0"), a1 __asm__("r8"), a2 __asm__("r10"), a3 __asm__("r12"); /* even (VMLADAV) */
    switch (chunks) { /* 1 .. 4 */
        GRUKIT_XQ_CASE(1);
        GRUKIT_XQ_CASE(2);
        GRUKIT_XQ_CASE(3);
    default:
        GRUKIT_XQ_CASE(4);
    }
}

/* One row o of a compact int8 product on Helium (a part's rows outside its whole blocks of 4). */
static int32_t row_mve_s8(const grukit_fc_compact_s8 *c, const int8_t *xp, int32_t depth, int32_t o,
                          int32_t zero_point)
{
    const int8_t *const w = c->weights + o * depth;
    int32_t dot = 0;
    for (int32_t k = 0; k < depth; k += 16) {
        const mve_pred16_t p = vctp8q((uint32_t)(depth - k));
        dot = vmladavaq_p_s8(dot, vldrbq_z_s8(xp + k, p), vldrbq_z_s8(w + k, p), p);
    }
    const grukit_requant4_s8 *const q = &c->requant[o >> 2];
    return sat_s8(requant_compact_s32(2 * dot + q->bias2[o & 3], q->multiplier[o & 3], q->shift[o & 3], zero_point));
}

/* The compact product on Helium: each part's whole blocks of 4 rows (blocks_mve_s8), its other rows one at a time.
 * Exact as the scalar loop: the same integer sums and the same requantization, lane by lane. */
static GRUKIT_NOINLINE void fc_compact_mve_s8(const grukit_fc_s8 *fc, const int8_t *x, int8_t *xp, int8_t *out)
{
    const grukit_fc_compact_s8 *c = fc->compact;
    const int32_t depth = fc->depth;
    permute_quads_s8(x, depth, xp);
    for (int32_t part = 0, first = 0; first < fc->rows; ++part, first += c->part_rows) {
        const int32_t end = first + c->part_rows, zero_point = c->zero_point[part];
        const int32_t b0 = (first + 3) >> 2, b1 = end >> 2; /* the whole blocks in the part: [b0, b1) */
        int32_t lo = end, hi = end;                         /* their rows: [lo, hi) */
        if (b1 > b0) {
            lo = 4 * b0, hi = 4 * b1;
            if (!fc->general_requant && depth <= 64) {
                blocks_xq_s8(c->weights + lo * depth, xp, depth, &c->requant[b0], out + lo, b1 - b0, zero_point);
            } else {
                blocks_mve_s8(c->weights + lo * depth, xp, depth, &c->requant[b0], out + lo, b1 - b0, zero_point,
                              fc->general_requant);
            }
        }
        for (int32_t o = first; o < end; ++o) {
            if (o == lo) {
                o = hi - 1; /* past the blocks' rows */
                continue;
            }
            out[o] = (int8_t)row_mve_s8(c, xp, depth, o, zero_point);
        }
    }
}
#endif

/* One product of the int8 input x (int8 [fc->depth]) into out: widened into xw for the packed and the scalar
 * compact loops; the Helium compact loop reads the raw bytes, reordered into xw's space. */
static GRUKIT_NOINLINE void product_s8(const grukit_fc_s8 *fc, const int8_t *x, int32_t *xw, int8_t *out)
{
#if GRUKIT_FORM_SIZE && GRUKIT_GRU_MVE
    if (fc->compact != NULL) {
        fc_compact_mve_s8(fc, x, (int8_t *)(void *)xw, out);
        return;
    }
#endif
    widen_s8(x, fc->depth, fc->input_offset, xw);
    fc_s8(fc, xw, out);
}

/* ---------------------------------------------------------------- int8 element-wise ops */

#if GRUKIT_FORM_SPEED && !GRUKIT_GRU_DSP
/* The speed form's ADD / SUB (grukit_add_table_s8) in the fused loop: the other input's doubled term from its
 * table, the unit input's as x << 20, whichever input that is. ADD / SUB outputs have shift <= 0 (TFLite requires
 * it) and right_shift >= 1 (the generator checks). */
static inline int32_t table_add_s8(const grukit_add_table_s8 *p, int32_t a, int32_t b, int subtract)
{
    const int32_t t1 = p->input1_term2 != NULL ? p->input1_term2[a] : shl_s32(a, 20);
    const int32_t t2 = p->input1_term2 != NULL ? shl_s32(b, 20) : p->input2_term2[b];
    return sat_s8(requant_fast_s32(subtract ? t1 - t2 : t1 + t2, p->output.multiplier, p->output.rounding,
                                   p->output.right_shift));
}

static inline int32_t add_tab_s8(const grukit_add_table_s8 *p, int32_t a, int32_t b)
{
    return table_add_s8(p, a, b, 0);
}

static inline int32_t sub_tab_s8(const grukit_add_table_s8 *p, int32_t a, int32_t b)
{
    return table_add_s8(p, a, b, 1);
}
#endif

#if GRUKIT_GRU_DSP
/*
 * The element-wise passes of an int8 form on a DSP core (FORM table: the speed form's grukit_add_table_s8, calc:
 * the size form's grukit_add_fast_s8), from FORM##_pass_s8(p, act, lookup, subtract, a, b, out, n): out = act(add(a,
 * b)) for a gate, add(a, b), sub(a, b), over every hidden unit.
 */
#define GRUKIT_ADD_PASSES_S8(FORM, PARAMS)                                                             \
    static GRUKIT_NOINLINE void gate_pass_##FORM##_s8(const PARAMS *p, const int8_t *act, const int8_t *a,  \
                                                      const int8_t *b, int8_t *out, int32_t n)         \
    {                                                                                                  \
        FORM##_pass_s8(p, act, 1, 0, a, b, out, n);                                                    \
    }                                                                                                  \
    static GRUKIT_NOINLINE void add_pass_##FORM##_s8(const PARAMS *p, const int8_t *a, const int8_t *b,      \
                                                     int8_t *out, int32_t n)                           \
    {                                                                                                  \
        FORM##_pass_s8(p, NULL, 0, 0, a, b, out, n);                                                   \
    }                                                                                                  \
    static GRUKIT_NOINLINE void sub_pass_##FORM##_s8(const PARAMS *p, const int8_t *a, const int8_t *b,      \
                                                     int8_t *out, int32_t n)                           \
    {                                                                                                  \
        FORM##_pass_s8(p, NULL, 0, 1, a, b, out, n);                                                   \
    }

/*
 * The passes of one step, in a step function's scope (GRUKIT_STEP_BUFFERS_S8), PRE the five ADD / SUB parameters
 * z_pre, r_pre, n_pre, h_minus_n, h_new. Each result goes where an input it no longer needs was: z over gx_z,
 * r over gx_r, r * gh_n over gh_n (lbr 1), n over gx_n, h - n over gh_z, z (h - n) over gh_r. linear_before_reset
 * 0 needs every r before gh_n = R_n (r * h): r * h goes to r_h and hn_fc runs between the passes.
 */
#define GRUKIT_PASSES_S8(FORM, Z_PRE, R_PRE, N_PRE, H_MINUS_N, H_NEW)                                   \
    GRUKIT_PHASE(GRUKIT_PHASE_UNITS);                                                                  \
    gate_pass_##FORM##_s8(Z_PRE, z_table, gx_z, gh_z, gx_z, H);                                        \
    gate_pass_##FORM##_s8(R_PRE, r_table, gx_r, gh_r, gx_r, H);                                        \
    if (layer->linear_before_reset) {                                                                  \
        mul_pass_s8(&layer->r_mul, gx_r, gh_n, gh_n, H);                                               \
    } else {                                                                                           \
        mul_pass_s8(&layer->r_mul, gx_r, h, r_h, H);                                                   \
        GRUKIT_PHASE(GRUKIT_PHASE_PRODUCTS);                                                           \
        product_s8(&layer->hn_fc, r_h, xw, gh_n);                                                      \
        GRUKIT_PHASE(GRUKIT_PHASE_UNITS);                                                              \
    }                                                                                                  \
    gate_pass_##FORM##_s8(N_PRE, n_table, gx_n, gh_n, gx_n, H);                                        \
    sub_pass_##FORM##_s8(H_MINUS_N, h, gx_n, gh_z, H);                                                 \
    mul_pass_s8(&layer->z_mul, gx_z, gh_z, gh_r, H);                                                   \
    add_pass_##FORM##_s8(H_NEW, gx_n, gh_r, h, H);                                                     \
    GRUKIT_PHASE(GRUKIT_PHASE_PRODUCTS)
#endif

#if GRUKIT_FORM_SPEED && GRUKIT_GRU_DSP
/*
 * The speed form's element-wise ops on a DSP core as passes over the hidden units, each with its op's few
 * parameters in registers. An ADD / SUB (grukit_add_table_s8) takes the other input's doubled term from its table
 * and the unit input's as x << 20 (one ADD, SUB or RSB with a shifted operand); ADD / SUB outputs have shift <= 0
 * (TFLite requires it) and right_shift >= 1 (the generator checks). Four units per iteration in assembly, the
 * second to fourth addressed back from the first's post-increments (GCC 12 gives an unrolled C loop a separate add
 * per pointer: no gain), then the last 1-3 units in C; an unoptimized build runs the C loop throughout (the same
 * integers: tests/test_firmware_gru.py runs it, GRUKIT_PASSES_ASM=0).
 */
/* 0: the C loops only (-O0 leaves an asm statement of this size too few registers; a test forces it). */
#ifndef GRUKIT_PASSES_ASM
#if defined(__OPTIMIZE__)
#define GRUKIT_PASSES_ASM 1
#else
#define GRUKIT_PASSES_ASM 0
#endif
#endif
#define GRUKIT_POST_1 "], #4"  /* the quad's first unit: post-increment by 4 */
#define GRUKIT_POST_2 ", #-3]" /* its second, addressed back from there */
#define GRUKIT_POST_3 ", #-2]"
#define GRUKIT_POST_4 ", #-1]"

/* One unit of an ADD / SUB: s = OP(table[other], unit << 20), requantized, saturated, then LOOKUP. */
#define GRUKIT_TABLE_UNIT_S8(POST, OP, LOOKUP)                                                         \
    "ldrsb %[t], [%[other]" POST "\n\t"                                                               \
    "ldrsb %[u], [%[unit]" POST "\n\t"                                                                \
    "ldr %[t], [%[table], %[t], lsl #2]\n\t"                                                          \
    OP " %[t], %[t], %[u], lsl #20\n\t"                                                               \
    "smmlar %[u], %[t], %[m], %[rnd]\n\t"                                                             \
    "add %[u], %[u], %[t], asr #31\n\t"                                                               \
    "asr %[u], %[u], %[e]\n\t"                                                                        \
    "ssat %[u], #8, %[u]\n\t"                                                                         \
    LOOKUP                                                                                             \
    "strb %[u], [%[out]" POST "\n\t"

#define GRUKIT_TABLE_QUADS_S8(OP, LOOKUP)                                                              \
    __asm__ volatile("1:\n\t" GRUKIT_TABLE_UNIT_S8(GRUKIT_POST_1, OP, LOOKUP)                         \
                     GRUKIT_TABLE_UNIT_S8(GRUKIT_POST_2, OP, LOOKUP)                                   \
                     GRUKIT_TABLE_UNIT_S8(GRUKIT_POST_3, OP, LOOKUP)                                   \
                     GRUKIT_TABLE_UNIT_S8(GRUKIT_POST_4, OP, LOOKUP)                                   \
                     "subs %[k], %[k], #1\n\t"                                                         \
                     "bne 1b\n\t"                                                                      \
                     : [other] "+r"(other), [unit] "+r"(unit), [out] "+r"(out), [k] "+r"(quads),       \
                       [t] "=&r"(term), [u] "=&r"(unit_term)                                           \
                     : [table] "r"(table), [m] "r"(q.multiplier), [rnd] "r"(q.rounding),               \
                       [e] "r"(q.right_shift), [act] "r"(act)                                          \
                     : "cc", "memory")

/* LOOKUP and SUBTRACT are constants where inlined. */
static GRUKIT_INLINE void table_pass_s8(const grukit_add_table_s8 *p, const int8_t *act, int lookup, int subtract,
                                        const int8_t *a, const int8_t *b, int8_t *out, int32_t n)
{
    const int32_t unit_first = p->input1_term2 == NULL;
    const int32_t *table = unit_first ? p->input2_term2 : p->input1_term2;
    const int8_t *unit = unit_first ? a : b, *other = unit_first ? b : a;
    const grukit_requant_s32 q = p->output;
#if GRUKIT_PASSES_ASM
    int32_t quads = n >> 2, term, unit_term; /* the assembly's scratch registers */
    if (quads > 0) {
        if (subtract && !unit_first) {
            GRUKIT_TABLE_QUADS_S8("sub", ""); /* other - unit */
        } else if (subtract) {
            GRUKIT_TABLE_QUADS_S8("rsb", ""); /* unit - other */
        } else if (lookup) {
            GRUKIT_TABLE_QUADS_S8("add", "ldrsb %[u], [%[act], %[u]]\n\t");
        } else {
            GRUKIT_TABLE_QUADS_S8("add", "");
        }
    }
    n &= 3;
#endif
    for (; n > 0; --n) {
        const int32_t t = table[*other++], u = shl_s32(*unit++, 20);
        const int32_t v = sat_s8(requant_fast_s32(subtract ? (unit_first ? u - t : t - u) : u + t, q.multiplier,
                                                  q.rounding, q.right_shift));
        *out++ = lookup ? act[v] : (int8_t)v;
    }
}

GRUKIT_ADD_PASSES_S8(table, grukit_add_table_s8)
#endif

/* The unit input of an int8 ADD/SUB (grukit_add_fast_s8): multiplier 1/2 and shift 0, TFLite's larger input scale. */
static inline int is_unit_input_s8(int32_t multiplier, int32_t shift)
{
    return multiplier == 1 << 30 && shift == 0;
}

#if GRUKIT_FORM_SIZE
/* A computed ADD/SUB's two inputs as the passes take them (Helium's and the DSP cores'): whether input1 is the
 * unit input, the other input's multiplier, offset and shift, and the unit input's offset. */
typedef struct {
    int32_t unit_first, multiplier, offset, shift, unit_offset;
} add_inputs_s8;

static inline add_inputs_s8 add_inputs_of_s8(const grukit_add_fast_s8 *p)
{
    const int32_t unit_first = is_unit_input_s8(p->input1_multiplier, p->input1_shift);
    const add_inputs_s8 a = {unit_first, unit_first ? p->input2_multiplier : p->input1_multiplier,
                             unit_first ? p->input2_offset : p->input1_offset,
                             unit_first ? p->input2_shift : p->input1_shift,
                             unit_first ? p->input1_offset : p->input2_offset};
    return a;
}
#endif

#if GRUKIT_FORM_SIZE && !GRUKIT_GRU_MVE /* Helium has vector twins (add_calc_mve) */
/* A computed ADD / SUB input term, doubled (grukit_add_fast_s8): e = 0 (the larger input scale's multiplier
 * 1/2) has no rounding and no sign term. */
static inline int32_t add_term_s8(int32_t x, int32_t multiplier, int32_t offset, int32_t e)
{
    const int32_t x2 = shl_s32(x, 21) + offset; /* |x2| <= 255 * 2^21 < 2^29 */
    if (e == 0) {
        return 2 * mul_high_rounded_acc_s32(x2, multiplier, 0);
    }
    return 2 * requant_fast_s32(x2, multiplier, 1 << (e - 1), e);
}

#if GRUKIT_GRU_DSP
/*
 * The size form's ADD / SUB on a DSP core as passes (the speed form's, table_pass_s8): the unit input's doubled
 * term as x << 20 plus half its offset, the other's computed with its parameters in registers (the sign mask and
 * rounding for any e, no branch). LOOKUP and SUBTRACT are constants where inlined.
 */
static GRUKIT_INLINE void calc_pass_s8(const grukit_add_fast_s8 *p, const int8_t *act, int lookup, int subtract,
                                       const int8_t *a, const int8_t *b, int8_t *out, int32_t n)
{
    const add_inputs_s8 in = add_inputs_of_s8(p);
    const int32_t unit_first = in.unit_first, m = in.multiplier, offset = in.offset, e = in.shift;
    const int32_t rounding = e > 0 ? 1 << (e - 1) : 0, sign_mask = e > 0 ? -1 : 0;
    const int32_t unit_offset = in.unit_offset / 2;
    const int8_t *unit = unit_first ? a : b, *other = unit_first ? b : a;
    const grukit_requant_s32 q = p->output;
    for (int32_t j = 0; j < n; ++j) {
        const int32_t x2 = shl_s32(other[j], 21) + offset;
        const int32_t t = 2 * ((mul_high_rounded_acc_s32(x2, m, rounding) + ((x2 >> 31) & sign_mask)) >> e);
        const int32_t u = shl_s32(unit[j], 20) + unit_offset;
        const int32_t v = sat_s8(requant_fast_s32(subtract ? (unit_first ? u - t : t - u) : u + t, q.multiplier,
                                                  q.rounding, q.right_shift));
        out[j] = lookup ? act[v] : (int8_t)v;
    }
}

GRUKIT_ADD_PASSES_S8(calc, grukit_add_fast_s8)
#else
static GRUKIT_NOINLINE int32_t add_calc_s8(const grukit_add_fast_s8 *p, int32_t a, int32_t b)
{
    return sat_s8(requant_fast_s32(add_term_s8(a, p->input1_multiplier, p->input1_offset, p->input1_shift) +
                                       add_term_s8(b, p->input2_multiplier, p->input2_offset, p->input2_shift),
                                   p->output.multiplier, p->output.rounding, p->output.right_shift));
}

static GRUKIT_NOINLINE int32_t sub_calc_s8(const grukit_add_fast_s8 *p, int32_t a, int32_t b)
{
    return sat_s8(requant_fast_s32(add_term_s8(a, p->input1_multiplier, p->input1_offset, p->input1_shift) -
                                       add_term_s8(b, p->input2_multiplier, p->input2_offset, p->input2_shift),
                                   p->output.multiplier, p->output.rounding, p->output.right_shift));
}
#endif
#endif

static inline int32_t mul_fast_s8(const grukit_mul_fast_s8 *p, int32_t a, int32_t b)
{
    /* 2^(1 + left_shift) (a - zp1) (b - zp2): bounded by the generator far inside int32. */
    const int32_t product2 = (a * p->input1_scale + p->input1_offset_scaled) * (b + p->input2_offset);
    return sat_s8(requant_fast_s32(product2, p->output.multiplier, p->output.rounding, p->output.right_shift));
}

#if GRUKIT_GRU_DSP && (GRUKIT_FORM_SPEED || !GRUKIT_GRU_MVE)
/* One unit of mul_fast_s8, as GRUKIT_TABLE_UNIT_S8. */
#define GRUKIT_MUL_UNIT_S8(POST)                                                                       \
    "ldrsb %[x], [%[a]" POST "\n\t"                                                                   \
    "ldrsb %[y], [%[b]" POST "\n\t"                                                                   \
    "mla %[x], %[x], %[scale], %[offset1]\n\t"                                                        \
    "add %[y], %[y], %[offset2]\n\t"                                                                  \
    "mul %[x], %[x], %[y]\n\t"                                                                        \
    "smmlar %[y], %[x], %[m], %[rnd]\n\t"                                                             \
    "add %[y], %[y], %[x], asr #31\n\t"                                                               \
    "asr %[y], %[y], %[e]\n\t"                                                                        \
    "ssat %[y], #8, %[y]\n\t"                                                                         \
    "strb %[y], [%[out]" POST "\n\t"

/* out = mul(a, b) for every hidden unit, four per iteration (as table_pass_s8). */
static GRUKIT_NOINLINE void mul_pass_s8(const grukit_mul_fast_s8 *mul, const int8_t *a, const int8_t *b, int8_t *out,
                                        int32_t n)
{
    const grukit_mul_fast_s8 q = *mul;
#if GRUKIT_PASSES_ASM
    int32_t quads = n >> 2, x, y;
    if (quads > 0) {
        __asm__ volatile("1:\n\t" GRUKIT_MUL_UNIT_S8(GRUKIT_POST_1) GRUKIT_MUL_UNIT_S8(GRUKIT_POST_2)
                             GRUKIT_MUL_UNIT_S8(GRUKIT_POST_3) GRUKIT_MUL_UNIT_S8(GRUKIT_POST_4)
                         "subs %[k], %[k], #1\n\t"
                         "bne 1b\n\t"
                         : [a] "+r"(a), [b] "+r"(b), [out] "+r"(out), [k] "+r"(quads), [x] "=&r"(x), [y] "=&r"(y)
                         : [scale] "r"(q.input1_scale), [offset1] "r"(q.input1_offset_scaled),
                           [offset2] "r"(q.input2_offset), [m] "r"(q.output.multiplier),
                           [rnd] "r"(q.output.rounding), [e] "r"(q.output.right_shift)
                         : "cc", "memory");
    }
    n &= 3;
#endif
    for (; n > 0; --n) {
        *out++ = (int8_t)mul_fast_s8(&q, *a++, *b++);
    }
}
#endif

/* ---------------------------------------------------------------- int8 layer step */

/* Scratch: xw int32 [max(I8, H8) / 2], then int8 gx[3][H4], gh[3][H4], z[H4], r_h[H4] (I8, H4: rounded up to 8, 4). */
int32_t grukit_gru_s8_get_buffer_size(const grukit_gru_layer_s8 *layer)
{
    const int32_t h4 = round_up4(layer->hidden_size);
    return 2 * max_s32(round_up8(layer->input_size), round_up8(layer->hidden_size)) + 8 * h4;
}

/*
 * The element-wise ops of every hidden unit, on the gate products gx, gh (gate g at g * stride); ADD and SUB
 * name the form's functions, Z_PRE .. H_NEW its five parameter records. linear_before_reset 0 needs every r
 * before gh_n = R_n (r * h): z waits in z_buf, r * h in r_h, and hn_fc runs between the two loops.
 */
#define GRUKIT_UNITS_S8(ADD, SUB, Z_PRE, R_PRE, N_PRE, H_MINUS_N, H_NEW)                               \
    GRUKIT_PHASE(GRUKIT_PHASE_UNITS);                                                                  \
    if (layer->linear_before_reset) {                                                                  \
        for (int32_t j = 0; j < H; ++j) {                                                              \
            const int32_t z = z_table[ADD(Z_PRE, gx_z[j], gh_z[j])];                                   \
            const int32_t r = r_table[ADD(R_PRE, gx_r[j], gh_r[j])];                                   \
            const int32_t r_gh = mul_fast_s8(&r_mul, r, gh_n[j]);                                      \
            const int32_t n = n_table[ADD(N_PRE, gx_n[j], r_gh)];                                      \
            const int32_t h_j = h[j];                                                                  \
            const int32_t diff = SUB(H_MINUS_N, h_j, n);                                               \
            h[j] = (int8_t)ADD(H_NEW, n, mul_fast_s8(&z_mul, z, diff));                                \
        }                                                                                              \
        GRUKIT_PHASE(GRUKIT_PHASE_PRODUCTS);                                                           \
        return;                                                                                        \
    }                                                                                                  \
    for (int32_t j = 0; j < H; ++j) {                                                                  \
        z_buf[j] = z_table[ADD(Z_PRE, gx_z[j], gh_z[j])];                                              \
        const int32_t r = r_table[ADD(R_PRE, gx_r[j], gh_r[j])];                                       \
        r_h[j] = (int8_t)mul_fast_s8(&r_mul, r, h[j]);                                                 \
    }                                                                                                  \
    GRUKIT_PHASE(GRUKIT_PHASE_PRODUCTS);                                                               \
    product_s8(&layer->hn_fc, r_h, xw, gh_n);                                                          \
    GRUKIT_PHASE(GRUKIT_PHASE_UNITS);                                                                  \
    for (int32_t j = 0; j < H; ++j) {                                                                  \
        const int32_t n = n_table[ADD(N_PRE, gx_n[j], gh_n[j])];                                       \
        const int32_t diff = SUB(H_MINUS_N, h[j], n);                                                  \
        h[j] = (int8_t)ADD(H_NEW, n, mul_fast_s8(&z_mul, z_buf[j], diff));                             \
    }                                                                                                  \
    GRUKIT_PHASE(GRUKIT_PHASE_PRODUCTS);

/* The buffers of one step (see grukit_gru_s8_get_buffer_size). */
#define GRUKIT_BUFFERS_S8()                                                                            \
    const int32_t H = layer->hidden_size;                                                              \
    const int32_t h4 = round_up4(H);                                                                   \
    int8_t *gx = (int8_t *)(xw + max_s32(round_up8(layer->input_size), round_up8(H)) / 2);            \
    int8_t *gh = gx + 3 * h4;                                                                          \
    int8_t *z_buf = gh + 3 * h4;                                                                       \
    int8_t *r_h = z_buf + h4

/* ... and the pointers and parameters the element-wise loops read. */
#define GRUKIT_STEP_BUFFERS_S8(STRIDE)                                                                 \
    GRUKIT_BUFFERS_S8();                                                                               \
    int8_t *gx_z = gx, *gx_r = gx + (STRIDE), *gx_n = gx + 2 * (STRIDE);                               \
    int8_t *gh_z = gh, *gh_r = gh + (STRIDE), *gh_n = gh + 2 * (STRIDE);                               \
    const grukit_mul_fast_s8 r_mul = layer->r_mul, z_mul = layer->z_mul;                               \
    const int8_t *const z_table = layer->z_table, *const r_table = layer->r_table;                     \
    const int8_t *const n_table = layer->n_table;                                                      \
    (void)z_buf;                                                                                       \
    (void)r_h;                                                                                         \
    (void)r_mul;                                                                                       \
    (void)z_mul

/* The gate products over x and h (the layer input, then the state): the speed form's (widened into xw),
 * and either form's (product_s8). */
#define GRUKIT_PRODUCTS_S8()                                                                           \
    widen_s8(x, layer->input_size, layer->x_fc.input_offset, xw);                                      \
    fc_s8(&layer->x_fc, xw, gx);                                                                       \
    widen_s8(h, H, layer->h_fc.input_offset, xw);                                                      \
    fc_s8(&layer->h_fc, xw, gh)
#define GRUKIT_COMPACT_PRODUCTS_S8()                                                                   \
    product_s8(&layer->x_fc, x, xw, gx);                                                               \
    product_s8(&layer->h_fc, h, xw, gh)

#if GRUKIT_FORM_SIZE && GRUKIT_GRU_MVE

/*
 * The size form's element-wise ops on 4 lanes: the vector twins of add_calc_s8 / sub_calc_s8 / mul_fast_s8, lane
 * by lane the same integers. Every doubled value here is even: SMMULR(2 y, m) is VQRDMULH(y, m) (2 y m + 2^31
 * >> 32; no saturation: m >= 0), with its scalar operand in a core register; an input term's rounding is
 * exactly 2^(e - 1) (0 for e = 0), so its add-and-shift is one VRSHL by -e; an output's rounding is 2^(e - 1) +
 * zp 2^e, so VRSHL then + zp. VQSHL by 24 and back saturates to int8.
 */
static inline int32x4_t add_term_s8_mve(int32x4_t x, int32_t multiplier, int32_t half_offset, int32x4_t sign_mask,
                                        int32_t e)
{
    const int32x4_t y = vaddq_n_s32(vshlq_n_s32(x, 20), half_offset); /* x2 / 2 */
    return vrshlq_n_s32(vaddq_s32(vqrdmulhq_n_s32(y, multiplier), vandq_s32(vshrq_n_s32(y, 31), sign_mask)), -e);
}

/* sat8(requant_fast_s32(2 raw, q)): q's rounding 2^(e - 1) + zp 2^e taken as VRSHL by -e and + zp. */
static inline int32x4_t requant_sat_s8_mve(int32x4_t raw, int32_t multiplier, int32_t right_shift, int32_t zero_point)
{
    const int32x4_t y = vaddq_s32(vqrdmulhq_n_s32(raw, multiplier), vshrq_n_s32(raw, 31));
    return vshrq_n_s32(vqshlq_n_s32(vaddq_n_s32(vrshlq_n_s32(y, -right_shift), zero_point), 24), 24);
}

/* The output zero point in a requantization's rounding constant 2^(e - 1) + zp 2^e (e >= 1). */
static inline int32_t zero_point_of(const grukit_requant_s32 *q)
{
    return (q->rounding - (1 << (q->right_shift - 1))) >> q->right_shift;
}

/* An ADD or SUB (grukit_add_fast_s8) with its parameters unpacked once for a pass. Its unit input (multiplier 1/2,
 * shift 0: the larger input scale; grukit_model_s8_init checks there is one) has the half term (x - zp) << 19
 * exactly: raw = term(other) * other_sign + unit * unit_scale + unit_offset, a SUB's minus on whichever input
 * is second (unit_scale +-2^19). unit_first: input1 is the unit input (the pass loads it from the first pointer). */
typedef struct {
    int32_t unit_first;
    int32_t m, half_offset, e; /* the other input's term */
    int32_t unit_scale, unit_offset, other_sign;
    int32_t out_m, out_e, zp;
    int32x4_t sign; /* -1 lanes where the other input's e >= 1 */
} add_mve_s8;

static inline add_mve_s8 add_params_mve(const grukit_add_fast_s8 *p, int subtract)
{
    const add_inputs_s8 in = add_inputs_of_s8(p);
    const int32_t unit_sign = subtract && !in.unit_first ? -1 : 1;
    const add_mve_s8 a = {in.unit_first,
                          in.multiplier,
                          in.offset / 2,
                          in.shift,
                          unit_sign * (1 << 19),
                          unit_sign * (in.unit_offset / 4),
                          subtract && in.unit_first ? -1 : 1,
                          p->output.multiplier,
                          p->output.right_shift,
                          zero_point_of(&p->output),
                          vdupq_n_s32(in.shift > 0 ? -1 : 0)};
    return a;
}

/* add(a, b) or sub(a, b) with a, b as the unit and the other input (add_mve_s8). */
static inline int32x4_t add_s8_mve(const add_mve_s8 *p, int32x4_t unit, int32x4_t other, int subtract)
{
    int32x4_t t = add_term_s8_mve(other, p->m, p->half_offset, p->sign, p->e);
    if (subtract) {
        t = vmulq_n_s32(t, p->other_sign);
    }
    const int32x4_t raw = vmlaq_n_s32(vaddq_n_s32(t, p->unit_offset), unit, p->unit_scale);
    return requant_sat_s8_mve(raw, p->out_m, p->out_e, p->zp);
}

/* mul_fast_s8: (a input1_scale + input1_offset_scaled) (b + input2_offset) is even (input1_scale >= 2). */
static inline int32x4_t mul_s8_mve(const grukit_mul_fast_s8 *p, int32x4_t a, int32x4_t b)
{
    const int32x4_t half = vmulq_s32(vaddq_n_s32(vmulq_n_s32(a, p->input1_scale / 2), p->input1_offset_scaled / 2),
                                     vaddq_n_s32(b, p->input2_offset));
    return requant_sat_s8_mve(half, p->output.multiplier, p->output.right_shift, zero_point_of(&p->output));
}

/* table[v] on 4 lanes: a byte gather (table points at entry 0 of [-128, 127]). */
static inline int32x4_t lookup_mve(const int8_t *table, int32x4_t v)
{
    return vldrbq_gather_offset_s32(table - 128, vreinterpretq_u32_s32(vaddq_n_s32(v, 128)));
}

/* The passes below run every hidden unit, 4 per iteration, with unpredicated vectors, then the last 1-3 units
 * predicated (their lanes past H loaded as 0 and not stored; a gather of such a lane reads the table's entry
 * for the ADD's output of 0s, inside the table). */

/* out = table(add(a, b)) for every hidden unit, or add(a, b) without LOOKUP (a constant where inlined). */
static GRUKIT_INLINE void add_pass_s8_mve(const grukit_add_fast_s8 *pre, const int8_t *table, int lookup,
                                          const int8_t *a, const int8_t *b, int8_t *out, int32_t n)
{
    const add_mve_s8 add = add_params_mve(pre, 0);
    const int8_t *unit = add.unit_first ? a : b, *other = add.unit_first ? b : a;
    int32_t j = 0;
    for (; j + 4 <= n; j += 4) {
        const int32x4_t v = add_s8_mve(&add, vldrbq_s32(unit + j), vldrbq_s32(other + j), 0);
        vstrbq_s32(out + j, lookup ? lookup_mve(table, v) : v);
    }
    if (j < n) {
        const mve_pred16_t p = vctp32q((uint32_t)(n - j));
        const int32x4_t v = add_s8_mve(&add, vldrbq_z_s32(unit + j, p), vldrbq_z_s32(other + j, p), 0);
        vstrbq_p_s32(out + j, lookup ? lookup_mve(table, v) : v, p);
    }
}

static GRUKIT_NOINLINE void gate_pass_s8_mve(const grukit_add_fast_s8 *pre, const int8_t *table, const int8_t *a,
                                             const int8_t *b, int8_t *out, int32_t n)
{
    add_pass_s8_mve(pre, table, 1, a, b, out, n);
}

static GRUKIT_NOINLINE void add_only_pass_s8_mve(const grukit_add_fast_s8 *add, const int8_t *a, const int8_t *b,
                                                 int8_t *out, int32_t n)
{
    add_pass_s8_mve(add, NULL, 0, a, b, out, n);
}

/* out = mul(r, b) for every hidden unit. */
static GRUKIT_NOINLINE void mul_pass_s8_mve(const grukit_mul_fast_s8 *mul, const int8_t *r, const int8_t *b,
                                            int8_t *out, int32_t n)
{
    const grukit_mul_fast_s8 q = *mul;
    int32_t j = 0;
    for (; j + 4 <= n; j += 4) {
        vstrbq_s32(out + j, mul_s8_mve(&q, vldrbq_s32(r + j), vldrbq_s32(b + j)));
    }
    if (j < n) {
        const mve_pred16_t p = vctp32q((uint32_t)(n - j));
        vstrbq_p_s32(out + j, mul_s8_mve(&q, vldrbq_z_s32(r + j, p), vldrbq_z_s32(b + j, p)), p);
    }
}

/* z = mul(z, sub(h, n)) for every hidden unit, in place: the first half of the state update. */
static GRUKIT_NOINLINE void z_diff_pass_s8_mve(const grukit_gru_layer_s8 *layer, int8_t *z, const int8_t *n_gate,
                                               const int8_t *h)
{
    const add_mve_s8 sub = add_params_mve(&layer->adds[3], 1);
    const grukit_mul_fast_s8 z_mul = layer->z_mul;
    const int8_t *unit = sub.unit_first ? h : n_gate, *other = sub.unit_first ? n_gate : h;
    const int32_t H = layer->hidden_size;
    int32_t j = 0;
    for (; j + 4 <= H; j += 4) {
        const int32x4_t diff = add_s8_mve(&sub, vldrbq_s32(unit + j), vldrbq_s32(other + j), 1);
        vstrbq_s32(z + j, mul_s8_mve(&z_mul, vldrbq_s32(z + j), diff));
    }
    if (j < H) {
        const mve_pred16_t p = vctp32q((uint32_t)(H - j));
        const int32x4_t diff = add_s8_mve(&sub, vldrbq_z_s32(unit + j, p), vldrbq_z_s32(other + j, p), 1);
        vstrbq_p_s32(z + j, mul_s8_mve(&z_mul, vldrbq_z_s32(z + j, p), diff), p);
    }
}

/* The size form's element-wise ops on Helium: one pass over the hidden units per op, each with its
 * parameters in registers; z, r and n in place of gx_z, gx_r and gx_n. */
static GRUKIT_NOINLINE void units_compact_mve_s8(const grukit_gru_layer_s8 *layer, int8_t *h, int32_t *xw)
{
    GRUKIT_STEP_BUFFERS_S8(H);
    GRUKIT_PHASE(GRUKIT_PHASE_UNITS);
    gate_pass_s8_mve(&layer->adds[0], z_table, gx_z, gh_z, gx_z, H);
    gate_pass_s8_mve(&layer->adds[1], r_table, gx_r, gh_r, gx_r, H);
    if (layer->linear_before_reset) {
        mul_pass_s8_mve(&r_mul, gx_r, gh_n, gh_n, H); /* r_gh */
    } else {
        mul_pass_s8_mve(&r_mul, gx_r, h, r_h, H); /* r_h, then gh_n = R_n (r * h) */
        GRUKIT_PHASE(GRUKIT_PHASE_PRODUCTS);
        product_s8(&layer->hn_fc, r_h, xw, gh_n);
        GRUKIT_PHASE(GRUKIT_PHASE_UNITS);
    }
    gate_pass_s8_mve(&layer->adds[2], n_table, gx_n, gh_n, gx_n, H);
    z_diff_pass_s8_mve(layer, gx_z, gx_n, h);               /* z (h - n) */
    add_only_pass_s8_mve(&layer->adds[4], gx_n, gx_z, h, H); /* h = n + z (h - n) */
    GRUKIT_PHASE(GRUKIT_PHASE_PRODUCTS);
}
#endif

#if GRUKIT_FORM_SIZE
/* The size form's step: compact products, gates at stride H, ADD / SUB terms computed. */
static GRUKIT_NOINLINE void step_compact_s8(const grukit_gru_layer_s8 *layer, const int8_t *x, int8_t *h,
                                            int32_t *xw)
{
#if GRUKIT_GRU_MVE
    GRUKIT_BUFFERS_S8();
    (void)z_buf, (void)r_h;
    GRUKIT_COMPACT_PRODUCTS_S8();
    units_compact_mve_s8(layer, h, xw);
#else
    GRUKIT_STEP_BUFFERS_S8(H);
    GRUKIT_COMPACT_PRODUCTS_S8();
#if GRUKIT_GRU_DSP
    const grukit_add_fast_s8 *adds = layer->adds;
    GRUKIT_PASSES_S8(calc, &adds[0], &adds[1], &adds[2], &adds[3], &adds[4]);
#else
    const grukit_add_fast_s8 z_pre = layer->adds[0], r_pre = layer->adds[1], n_pre = layer->adds[2];
    const grukit_add_fast_s8 h_minus_n = layer->adds[3], h_new = layer->adds[4];
    GRUKIT_UNITS_S8(add_calc_s8, sub_calc_s8, &z_pre, &r_pre, &n_pre, &h_minus_n, &h_new)
#endif
#endif
}
#endif

void grukit_gru_step_s8(const grukit_gru_layer_s8 *layer, const int8_t *x, int8_t *h, int32_t *scratch)
{
    int32_t *xw = scratch; /* the widened layer input, state, or r * h: see widen_s8 */
#if GRUKIT_FORM_SIZE
    if (layer->adds != NULL) {
        step_compact_s8(layer, x, h, xw);
        return;
    }
#endif
#if GRUKIT_FORM_SPEED
    GRUKIT_STEP_BUFFERS_S8(h4);
    GRUKIT_PRODUCTS_S8();
#if GRUKIT_GRU_DSP
    /* The element-wise ops one at a time over the hidden vector, each pass with its op's few parameters in
     * registers (a fused loop over the units reloads most of its ~40 per unit: on the Cortex-M4 104 -> 89
     * instructions per unit, before the passes' assembly; benchmarks/bench_firmware_gru.py). */
    GRUKIT_PASSES_S8(table, &layer->z_pre, &layer->r_pre, &layer->n_pre, &layer->h_minus_n, &layer->h_new);
#else
    /* Without the DSP extension (M0+, RV32) one fused loop over the units measures better (fewer registers
     * make the passes' parameters spill as well); local copies: read through the layer pointer they would be
     * reloaded after every int8 store. */
    const grukit_add_table_s8 z_pre = layer->z_pre, r_pre = layer->r_pre, n_pre = layer->n_pre;
    const grukit_add_table_s8 h_minus_n = layer->h_minus_n, h_new = layer->h_new;
    GRUKIT_UNITS_S8(add_tab_s8, sub_tab_s8, &z_pre, &r_pre, &n_pre, &h_minus_n, &h_new)
#endif
#else
    (void)x, (void)h; /* a speed-form model is refused by grukit_model_s8_init in this build */
#endif
}

/* ---------------------------------------------------------------- int8 model */

int32_t grukit_model_s8_get_state_size(const grukit_model_s8 *model)
{
    int32_t bytes = 0;
    for (int32_t l = 0; l < model->num_layers; ++l) {
        bytes += model->layers[l].hidden_size;
    }
    return bytes;
}

int32_t grukit_model_s8_get_output_size(const grukit_model_s8 *model)
{
    return model->head_layers > 0 ? model->head[model->head_layers - 1].fc.rows
                                  : model->layers[model->num_layers - 1].hidden_size;
}

/* The head needs xw int32 [F8 / 2] for the widest layer input and one padded output [O4] for the widest
 * layer output: each layer widens its input before writing its output over the previous one. */
static int32_t head_s8_buffer_size(const grukit_model_s8 *model)
{
    int32_t depth = 0, rows = 0;
    for (int32_t k = 0; k < model->head_layers; ++k) {
        depth = max_s32(depth, round_up8(model->head[k].fc.depth));
        rows = max_s32(rows, round_up4(model->head[k].fc.rows));
    }
    return model->head_layers > 0 ? 2 * depth + rows : 0;
}

int32_t grukit_model_s8_get_buffer_size(const grukit_model_s8 *model)
{
    int32_t bytes = head_s8_buffer_size(model);
    for (int32_t l = 0; l < model->num_layers; ++l) {
        bytes = max_s32(bytes, grukit_gru_s8_get_buffer_size(&model->layers[l]));
    }
    return bytes;
}

void grukit_model_s8_reset(const grukit_model_s8 *model, int8_t *state)
{
    memset(state, 0, (size_t)grukit_model_s8_get_state_size(model));
}

/* 1 if every layer and head product of the model is of a form this build runs. */
static int forms_built_s8(const grukit_model_s8 *model)
{
    for (int32_t l = 0; l < model->num_layers; ++l) {
        const int size_form = model->layers[l].adds != NULL;
        if ((size_form && !GRUKIT_FORM_SIZE) || (!size_form && !GRUKIT_FORM_SPEED)) {
            return 0;
        }
    }
    for (int32_t k = 0; k < model->head_layers; ++k) {
        const int size_form = model->head[k].fc.compact != NULL;
        if ((size_form && !GRUKIT_FORM_SIZE) || (!size_form && !GRUKIT_FORM_SPEED)) {
            return 0;
        }
    }
    return 1;
}

/* A product without general_requant has no row of a left shift or right shift 0 (the fast requantization of
 * both forms relies on it): its records' right_shift >= 1 and left_shift 0, or its compact shifts < 0. */
static GRUKIT_NOINLINE int fast_requant_holds_s8(const grukit_fc_s8 *fc)
{
    for (int32_t o = 0; o < fc->rows && !fc->general_requant; ++o) {
        if (fc->compact != NULL ? fc->compact->requant[o >> 2].shift[o & 3] >= 0
                                : fc->requant[o].right_shift < 1 || fc->requant[o].left_shift != 0) {
            return 0;
        }
    }
    return 1;
}

/* What the kernel relies on and the generator guarantees (GRUKIT_ERROR_BAD_CONSTANTS otherwise): every ADD/SUB
 * has a unit input, the size form's (computed) one whose multiplier and shift say so (is_unit_input_s8), the
 * speed form's one without a table (exactly one); every product's general_requant tells the truth. */
static int constants_hold_s8(const grukit_model_s8 *model)
{
    for (int32_t l = 0; l < model->num_layers; ++l) {
        const grukit_gru_layer_s8 *layer = &model->layers[l];
        const grukit_add_fast_s8 *adds = layer->adds;
        const grukit_add_table_s8 *tables[5] = {&layer->z_pre, &layer->r_pre, &layer->n_pre, &layer->h_minus_n,
                                                &layer->h_new};
        for (int i = 0; i < 5; ++i) {
            if (adds != NULL ? !is_unit_input_s8(adds[i].input1_multiplier, adds[i].input1_shift) &&
                                   !is_unit_input_s8(adds[i].input2_multiplier, adds[i].input2_shift)
                             : (tables[i]->input1_term2 == NULL) == (tables[i]->input2_term2 == NULL)) {
                return 0;
            }
        }
        if (!fast_requant_holds_s8(&layer->x_fc) || !fast_requant_holds_s8(&layer->h_fc) ||
            !fast_requant_holds_s8(&layer->hn_fc)) {
            return 0;
        }
    }
    for (int32_t k = 0; k < model->head_layers; ++k) {
        if (!fast_requant_holds_s8(&model->head[k].fc)) {
            return 0;
        }
    }
    return 1;
}

int grukit_model_s8_init(const grukit_model_s8 *model, int8_t *state, int32_t state_bytes, int32_t scratch_bytes)
{
    if (!forms_built_s8(model)) {
        return GRUKIT_ERROR_FORM_NOT_BUILT;
    }
    if (!constants_hold_s8(model)) {
        return GRUKIT_ERROR_BAD_CONSTANTS;
    }
    if (state_bytes < grukit_model_s8_get_state_size(model)) {
        return GRUKIT_ERROR_STATE_TOO_SMALL;
    }
    if (scratch_bytes < grukit_model_s8_get_buffer_size(model)) {
        return GRUKIT_ERROR_SCRATCH_TOO_SMALL;
    }
    grukit_model_s8_reset(model, state);
    return GRUKIT_OK;
}

static const int8_t *top_state_s8(const grukit_model_s8 *model, const int8_t *state)
{
    return state + grukit_model_s8_get_state_size(model) - model->layers[model->num_layers - 1].hidden_size;
}

void grukit_model_s8_output(const grukit_model_s8 *model, const int8_t *state, int32_t *scratch, int8_t *y)
{
    const int8_t *x = top_state_s8(model, state);
    if (model->head_layers == 0) {
        memcpy(y, x, (size_t)model->layers[model->num_layers - 1].hidden_size);
        return;
    }
    int32_t depth = 0;
    for (int32_t k = 0; k < model->head_layers; ++k) {
        depth = max_s32(depth, round_up8(model->head[k].fc.depth));
    }
    int32_t *xw = scratch;
    int8_t *out = (int8_t *)(xw + depth / 2);
    for (int32_t k = 0; k < model->head_layers; ++k) {
        const grukit_dense_s8 *dense = &model->head[k];
        product_s8(&dense->fc, x, xw, out); /* x may be out: read into xw before it is written */
        if (dense->table != NULL || dense->act_min > INT8_MIN || dense->act_max < INT8_MAX) { /* else: identity */
            for (int32_t o = 0; o < dense->fc.rows; ++o) {
                const int32_t v = clamp_s32(out[o], dense->act_min, dense->act_max); /* a fused ReLU / ReLU6 */
                out[o] = (int8_t)(dense->table != NULL ? dense->table[v] : v);
            }
        }
        x = out;
    }
    memcpy(y, out, (size_t)model->head[model->head_layers - 1].fc.rows);
}

void grukit_model_s8_step(const grukit_model_s8 *model, int8_t *state, int32_t *scratch, const int8_t *x,
                          int8_t *y)
{
    int8_t *h = state;
    for (int32_t l = 0; l < model->num_layers; ++l) {
        const grukit_gru_layer_s8 *layer = &model->layers[l];
        grukit_gru_step_s8(layer, x, h, scratch);
        x = h;
        h += layer->hidden_size;
    }
    if (y != NULL) {
        grukit_model_s8_output(model, state, scratch, y);
    }
}

void grukit_model_s8_save_state(const grukit_model_s8 *model, const int8_t *state, int8_t *saved)
{
    memcpy(saved, state, (size_t)grukit_model_s8_get_state_size(model));
}

void grukit_model_s8_restore_state(const grukit_model_s8 *model, int8_t *state, const int8_t *saved)
{
    memcpy(state, saved, (size_t)grukit_model_s8_get_state_size(model));
}

/* ---------------------------------------------------------------- 16x8 products */

static inline int32_t sat_s16(int32_t x)
{
#if GRUKIT_GRU_DSP
    int32_t r;
    __asm__("ssat %0, #16, %1" : "=r"(r) : "r"(x));
    return r;
#else
    return x < INT16_MIN ? INT16_MIN : (x > INT16_MAX ? INT16_MAX : x);
#endif
}

/* TFLite's 64-bit requantization of one row (grukit_requant_s64): one SMLAL, a shift, SSAT. */
static inline int32_t requant_row_s16(int32_t dot, const grukit_requant_s64 *q)
{
    const int64_t v = q->start + (int64_t)shl_s32(dot, q->left_shift) * q->multiplier; /* |v| < 2^63 */
    return sat_s16((int32_t)(v >> 32) >> q->right_shift);
}

/* xp = x (int16 [n]) zero padded to a multiple of 8: the products read whole 8-column groups as words. */
static void pad_s16(const int16_t *x, int32_t n, int16_t *xp)
{
    memcpy(xp, x, 2 * (size_t)n);
    memset(xp + n, 0, 2 * (size_t)(round_up8(n) - n));
}

#if GRUKIT_FORM_SPEED
#if GRUKIT_GRU_DSP
/*
 * One 8-column group of one block: 32 MACs in 6 LDRD (2 of inputs, 4 of weights), 16 SXTB16, 16 SMLAD (xw
 * and w post-incremented past the group). The dense loop repeats it over every group, the sparse one over
 * the stored groups.
 */
/* Half a group: 4 columns (2 input words) of the block's 4 rows. */
#define GRUKIT_HALF_GROUP_S16_ASM                    \
    "ldrd %[x0], %[x1], [%[xw]], #8\n\t"             \
    "ldrd %[wa], %[wb], [%[w]], #8\n\t"              \
    "sxtb16 %[t], %[wa]\n\t"                         \
    "smlad %[a0], %[t], %[x0], %[a0]\n\t"            \
    "sxtb16 %[wa], %[wa], ror #8\n\t"                \
    "smlad %[a0], %[wa], %[x1], %[a0]\n\t"           \
    "sxtb16 %[t], %[wb]\n\t"                         \
    "smlad %[a1], %[t], %[x0], %[a1]\n\t"            \
    "sxtb16 %[wb], %[wb], ror #8\n\t"                \
    "smlad %[a1], %[wb], %[x1], %[a1]\n\t"           \
    "ldrd %[wa], %[wb], [%[w]], #8\n\t"              \
    "sxtb16 %[t], %[wa]\n\t"                         \
    "smlad %[a2], %[t], %[x0], %[a2]\n\t"            \
    "sxtb16 %[wa], %[wa], ror #8\n\t"                \
    "smlad %[a2], %[wa], %[x1], %[a2]\n\t"           \
    "sxtb16 %[t], %[wb]\n\t"                         \
    "smlad %[a3], %[t], %[x0], %[a3]\n\t"            \
    "sxtb16 %[wb], %[wb], ror #8\n\t"                \
    "smlad %[a3], %[wb], %[x1], %[a3]\n\t"
#define GRUKIT_GROUP_S16_ASM GRUKIT_HALF_GROUP_S16_ASM GRUKIT_HALF_GROUP_S16_ASM
#else
/* The portable loops' step: 4 columns (4 int16 inputs, one weight word per row) of a block's 4 rows. */
static inline void quad_portable_s16(const int32_t *w, const int16_t *xp, int32_t *a0, int32_t *a1, int32_t *a2,
                                     int32_t *a3)
{
    const int32_t x0 = xp[0], x1 = xp[1], x2 = xp[2], x3 = xp[3];
    /* Bytes 0..3 of a word hold columns 0, 2, 1, 3 (see the header). */
    *a0 += byte_s32(w[0], 0) * x0 + byte_s32(w[0], 2) * x1 + byte_s32(w[0], 1) * x2 + byte_s32(w[0], 3) * x3;
    *a1 += byte_s32(w[1], 0) * x0 + byte_s32(w[1], 2) * x1 + byte_s32(w[1], 1) * x2 + byte_s32(w[1], 3) * x3;
    *a2 += byte_s32(w[2], 0) * x0 + byte_s32(w[2], 2) * x1 + byte_s32(w[2], 1) * x2 + byte_s32(w[2], 3) * x3;
    *a3 += byte_s32(w[3], 0) * x0 + byte_s32(w[3], 2) * x1 + byte_s32(w[3], 1) * x2 + byte_s32(w[3], 3) * x3;
}
#endif

/*
 * acc[0..3] = the dot products of the 4 rows of one block with xp (int16 [8 * groups], 4-byte aligned), from
 * weights in grukit_fc_s16's layout. The generator bounded every |dot| below 2^31; partial sums are sums of
 * a subset of the same terms, so they are bounded too, and SMLAD's modulo-2^32 sum equals the portable one.
 */
static inline void dot_block_s16(const int32_t *w, const int16_t *xp, int32_t groups, int32_t acc[4])
{
    int32_t a0 = 0, a1 = 0, a2 = 0, a3 = 0;
#if GRUKIT_GRU_DSP
    /* Per 32 MACs: 6 LDRD (2 of inputs, 4 of weights), 16 SXTB16, 16 SMLAD, CMP, BNE. */
    const int32_t *xw = (const int32_t *)(const void *)xp;
    const int32_t *const xw_end = xw + 4 * groups;
    if (xw < xw_end) {
        int32_t x0, x1, wa, wb, t;
        __asm__ volatile(
            "1:\n\t" GRUKIT_GROUP_S16_ASM
            "cmp %[xw], %[end]\n\t"
            "bne 1b\n\t"
            : [a0] "+r"(a0), [a1] "+r"(a1), [a2] "+r"(a2), [a3] "+r"(a3), [xw] "+r"(xw), [w] "+r"(w),
              [x0] "=&r"(x0), [x1] "=&r"(x1), [wa] "=&r"(wa), [wb] "=&r"(wb), [t] "=&r"(t)
            : [end] "r"(xw_end)
            : "cc", "memory");
    }
#else
    for (const int16_t *const xp_end = xp + 8 * groups; xp < xp_end; xp += 4, w += 4) {
        quad_portable_s16(w, xp, &a0, &a1, &a2, &a3);
    }
#endif
    acc[0] = a0;
    acc[1] = a1;
    acc[2] = a2;
    acc[3] = a3;
}

/*
 * dot_block_s16 over the stored groups of a block-sparse product only (see dot_block_sparse_s8): the
 * input pointer jumps to each stored group's 8 inputs. A skipped group's terms are all 0: the sum is the
 * dense loop's, and every partial sum is a sum of some of its terms, so within the generator's bound
 * |x| sum |w| < 2^31 of the row (SMLAD never wraps). Returns w past the block's groups.
 */
static inline const int32_t *dot_block_sparse_s16(const int32_t *w, const int16_t *xp, const uint8_t *group_index,
                                                  int32_t count, int32_t acc[4])
{
    int32_t a0 = 0, a1 = 0, a2 = 0, a3 = 0;
#if GRUKIT_GRU_DSP
    const int32_t *const xw = (const int32_t *)(const void *)xp;
    for (const uint8_t *const gi_end = group_index + count; group_index < gi_end; ++group_index) {
        const int32_t *xg = xw + 4 * (int32_t)*group_index; /* LDRB + ADD (shifted): 2 instructions a group */
        int32_t x0, x1, wa, wb, t;
        __asm__ volatile(GRUKIT_GROUP_S16_ASM
                         : [a0] "+r"(a0), [a1] "+r"(a1), [a2] "+r"(a2), [a3] "+r"(a3), [xw] "+r"(xg), [w] "+r"(w),
                           [x0] "=&r"(x0), [x1] "=&r"(x1), [wa] "=&r"(wa), [wb] "=&r"(wb), [t] "=&r"(t)
                         :
                         : "cc", "memory");
    }
#else
    for (const uint8_t *const gi_end = group_index + count; group_index < gi_end; ++group_index, w += 8) {
        const int16_t *xg = xp + 8 * (int32_t)*group_index;
        quad_portable_s16(w, xg, &a0, &a1, &a2, &a3);
        quad_portable_s16(w + 4, xg + 4, &a0, &a1, &a2, &a3);
    }
#endif
    acc[0] = a0;
    acc[1] = a1;
    acc[2] = a2;
    acc[3] = a3;
    return w;
}

static inline void requant_block_s16(const int32_t acc[4], const grukit_requant_s64 *q, int16_t *out)
{
    out[0] = (int16_t)requant_row_s16(acc[0], &q[0]);
    out[1] = (int16_t)requant_row_s16(acc[1], &q[1]);
    out[2] = (int16_t)requant_row_s16(acc[2], &q[2]);
    out[3] = (int16_t)requant_row_s16(acc[3], &q[3]);
}

/* fc_s16 of a block-sparse product: the same requantizations and outputs as the dense form. */
static GRUKIT_NOINLINE void fc_sparse_s16(const grukit_fc_s16 *fc, const int16_t *xp, int16_t *out)
{
    const int16_t *const out_end = out + round_up4(fc->rows);
    const int32_t *w = fc->weights;
    const grukit_requant_s64 *q = fc->requant;
    const uint8_t *count = fc->block_groups;
    const uint8_t *group_index = fc->group_index;
    for (; out < out_end; out += 4, q += 4, group_index += *count++) {
        int32_t acc[4];
        w = dot_block_sparse_s16(w, xp, group_index, *count, acc);
        requant_block_s16(acc, q, out);
    }
}

#endif /* GRUKIT_FORM_SPEED */

#if GRUKIT_FORM_SIZE
#if GRUKIT_GRU_MVE
/* x's whole column quads reordered in place to the compact weights' order (0, 2, 1, 3); the tail as it is. */
static void swap_quad_middles_s16(int16_t *x, int32_t n)
{
    for (const int16_t *const end = x + (n & ~3); x < end; x += 4) {
        const int16_t t = x[1];
        x[1] = x[2];
        x[2] = t;
    }
}
#endif

/* Row o's requantization in the compact records (grukit_requant4_s16): requant_row_s16's integer. */
static inline int32_t requant_compact_s16(int32_t dot, const grukit_requant4_s16 *q, int32_t o)
{
    const grukit_requant4_s16 *const b = &q[o >> 2];
    const int32_t r = o & 3, s = b->shift[r];
    const int64_t start = (int64_t)(((uint64_t)(uint32_t)b->start_hi[r] << 32) | b->start_lo[r]);
    const int64_t v = start + (int64_t)shl_s32(dot, s > 0 ? s : 0) * b->multiplier[r]; /* |v| < 2^63 */
    return sat_s16((int32_t)(v >> 32) >> (s < 0 ? -s : 0));
}

#if GRUKIT_GRU_MVE
/*
 * The whole blocks of 4 rows of a compact 16x8 product on Helium, in one loop: per block the dot products of
 * its rows (w, w + depth, w + 2 depth, w + 3 depth) with x (int16, in the weights' column order) in a
 * tail-predicated loop (DLSTP.16 / LETP: 8 columns per iteration, the input loaded once for four VMLADAVA.S16,
 * each row's weights widened by VLDRB.S16: 10 instructions per 32 MACs), then the 4 rows requantized as one
 * vector from their grukit_requant4_s16 and stored as 4 int16: d = dot << max(s, 0); VMULH(d, m) + start_hi +
 * the carry out of VMUL(d, m) + start_lo (an unsigned compare); shifted right by max(-s, 0); VQMOVNB to int16.
 * 33 instructions a block besides the dot products.
 */
static GRUKIT_NOINLINE void blocks_mve_s16(const int8_t *w, const int16_t *x, int32_t depth,
                                           const grukit_requant4_s16 *q, int16_t *out, int32_t blocks)
{
    const int32_t pad = round_up8(depth) - depth; /* a row pointer ends 8 ceil(depth / 8) past its start */
    GRUKIT_BLOCK_REGISTERS_MVE(int16_t, grukit_requant4_s16, int16_t);
    __asm__ volatile(
        "vmov.i32 q4, #0\n\t"
        "vmov.i8 q5, #0xff\n\t"
        GRUKIT_BLOCK_DOTS_MVE("16", "vldrh.16", "vldrb.s16", "8", "s16")
        "vldrb.s32 q3, [%[q], #48]\n\t" /* s */
        "vmax.s32 q2, q3, q4\n\t"       /* q4: 0 */
        "vmin.s32 q3, q3, q4\n\t"
        "vshl.s32 q0, q0, q2\n\t"       /* d = dot << max(s, 0) */
        "vldrw.32 q2, [%[q], #32]\n\t"  /* m */
        "vmul.i32 q1, q0, q2\n\t"       /* the low word of d m */
        "vmulh.s32 q0, q0, q2\n\t"      /* its high word */
        "vldrw.32 q2, [%[q], #16]\n\t"  /* start_hi */
        "vadd.i32 q0, q0, q2\n\t"
        "vldrw.32 q2, [%[q]], #52\n\t"  /* start_lo; q to the next block's record */
        "vadd.i32 q1, q1, q2\n\t"
        "vpt.u32 hi, q2, q1\n\t"        /* the carry: start_lo > the low words' sum */
        "vsubt.i32 q0, q0, q5\n\t"      /* q5: -1 */
        "vshl.s32 q0, q0, q3\n\t"       /* >> max(-s, 0) */
        "vqmovnb.s32 q0, q0\n\t"
        "vstrh.32 q0, [%[out]], #8\n\t"
        GRUKIT_BLOCK_NEXT_MVE
        : GRUKIT_BLOCK_OUTPUTS_MVE
        : GRUKIT_BLOCK_INPUTS_MVE
        : GRUKIT_BLOCK_CLOBBERS_MVE, "q5");
}
#endif

/*
 * The 16x8 compact product (size mode): rows one after another, each over its own bytes. xp (int16, 4-byte
 * aligned) is read as the int8 compact loops read their widened input (both hold int16 columns in order, two
 * per word): the same dot loops, two rows at a time on the DSP path; on Helium the whole blocks of four rows in
 * blocks_mve_s16 (xp's quads reordered in place first) and the last 1-3 rows one at a time. Exact as the packed
 * form: every partial sum of a row is a sum of some of the terms requant_s64 bounded, so neither SMLAD nor
 * VMLADAVA wraps.
 */
static GRUKIT_NOINLINE void fc_compact_s16(const grukit_fc_s16 *fc, int16_t *xp, int16_t *out)
{
    const int32_t depth = fc->depth, rows = fc->rows;
    const grukit_fc_compact_s16 *const c = fc->compact;
#if GRUKIT_GRU_MVE
    swap_quad_middles_s16(xp, depth);
    const int32_t whole = rows >> 2;
    if (whole > 0) {
        blocks_mve_s16(c->weights, xp, depth, c->requant, out, whole);
    }
    for (int32_t o = 4 * whole; o < rows; ++o) { /* the last 1-3 rows, one at a time */
        const int8_t *const w = c->weights + o * depth;
        int32_t dot = 0;
        for (int32_t k = 0; k < depth; k += 8) {
            const mve_pred16_t p = vctp16q((uint32_t)(depth - k));
            dot = vmladavaq_p_s16(dot, vldrhq_z_s16(xp + k, p), vldrbq_z_s16(w + k, p), p);
        }
        out[o] = (int16_t)requant_compact_s16(dot, c->requant, o);
    }
#else
    const int32_t *const xw = (const int32_t *)(const void *)xp;
    for (int32_t o = 0; o < rows;) {
        const int8_t *const w = c->weights + o * depth;
        int32_t acc[2] = {0, 0};
#if GRUKIT_GRU_DSP
        int32_t n = o + 1 < rows ? 2 : 1;
        dot2_compact_s8(w, n == 2 ? w + depth : w, xw, depth, acc);
#else
        int32_t n = 1;
        acc[0] = dot_compact_s8(w, xw, depth, 0);
#endif
        for (const int32_t *a = acc; n > 0; --n, ++a, ++o) {
            out[o] = (int16_t)requant_compact_s16(*a, c->requant, o);
        }
    }
#endif
}
#endif /* GRUKIT_FORM_SIZE */

/* out[o] for every o < 4 * ceil(rows / 4) (padding rows give 0); xp padded as pad_s16 leaves it. The compact
 * form writes rows outputs only, and on Helium reorders xp in place (the callers do not read it again). */
static void fc_s16(const grukit_fc_s16 *fc, int16_t *xp, int16_t *out)
{
#if GRUKIT_FORM_SIZE
    if (fc->compact != NULL) {
        fc_compact_s16(fc, xp, out);
        return;
    }
#endif
#if GRUKIT_FORM_SPEED
    if (fc->block_groups != NULL) {
        fc_sparse_s16(fc, xp, out);
        return;
    }
    const int16_t *const out_end = out + round_up4(fc->rows);
    const int32_t *w = fc->weights;
    const grukit_requant_s64 *q = fc->requant;
    const int32_t groups = round_up8(fc->depth) >> 3;
    for (; out < out_end; out += 4, w += 8 * groups, q += 4) {
        int32_t acc[4];
        dot_block_s16(w, xp, groups, acc);
        requant_block_s16(acc, q, out);
    }
#endif
}

/* ---------------------------------------------------------------- 16x8 element-wise ops */

/* The unit input of an ADD/SUB: multiplier 1/2, no shift (TFLite's larger input scale): its term is x << 14. */
static inline int is_unit_term_s16(const grukit_requant_s32 *q)
{
    return q->multiplier == 1 << 30 && q->rounding == 0 && q->right_shift == 0 && q->left_shift == 0;
}

/* An ADD/SUB input term, doubled input x << 16; the sign mask drops the sign term where right_shift is 0. */
static inline int32_t add_term_s16(const grukit_requant_s32 *q, int32_t sign_mask, int32_t x)
{
    const int32_t x2 = shl_s32(x, 16);
    return (mul_high_rounded_acc_s32(x2, q->multiplier, q->rounding) + ((x2 >> 31) & sign_mask)) >> q->right_shift;
}

/* a in [0, 32767] (a LOGISTIC output), b int16: |2 a b| < 2^31. */
static inline int32_t mul_fast_s16(const grukit_requant_s32 *q, int32_t a, int32_t b)
{
    return sat_s16(requant_fast_s32(2 * a * b, q->multiplier, q->rounding, q->right_shift));
}

/* The sigmoid table input: |x * multiplier| <= 2^15 * 32767 and rounding <= 2^30 fit int32. */
static inline int32_t table_input_s16(const grukit_table_input_s16 *p, int32_t x)
{
    return (x * p->multiplier + p->rounding) >> p->right_shift;
}

/* sigmoid(|v| / 2^fraction_bits / 24) interpolated in the table, unsigned Q0.(16 + fraction_bits). */
static inline uint32_t sigmoid_abs(uint32_t abs_v, uint32_t fraction_bits, uint32_t saturated)
{
    const uint32_t index = abs_v >> fraction_bits;
    if (index >= 255u) {
        return saturated;
    }
    const uint32_t lo = grukit_sigmoid_table_uint16[index];
    const uint32_t hi = grukit_sigmoid_table_uint16[index + 1u];
    return (lo << fraction_bits) + (abs_v & ((1u << fraction_bits) - 1u)) * (hi - lo);
}

/* TFLite's int16 LOGISTIC: 9 interpolation bits, sigmoid(-v) = 1 - sigmoid(v), rounded to Q0.15. */
static inline int32_t logistic_fast_s16(const grukit_table_input_s16 *p, int32_t x)
{
    const int32_t v = table_input_s16(p, x);
    const uint32_t abs_v = v >= 0 ? (uint32_t)v : 0u - (uint32_t)v;
    const uint32_t s_q25 = sigmoid_abs(abs_v, 9u, 0x7FFFu << 10);
    const uint32_t y = v >= 0 ? s_q25 + (1u << 9) : (1u << 25) - s_q25 + (1u << 9) - 1u;
    return (int32_t)(y >> 10);
}

/* TFLite's int16 TANH = 2 sigmoid(2v) - 1: 8 interpolation bits, rounded to Q0.15 (floor of an int32). */
static inline int32_t tanh_fast_s16(const grukit_table_input_s16 *p, int32_t x)
{
    const int32_t v = table_input_s16(p, x);
    const uint32_t abs_v = v >= 0 ? (uint32_t)v : 0u - (uint32_t)v;
    const int32_t s_q24 = (int32_t)sigmoid_abs(abs_v, 8u, 0xFFFFu << 8); /* < 2^24 */
    const int32_t y = v >= 0 ? s_q24 - (1 << 23) + (1 << 7) : -s_q24 + (1 << 23) + (1 << 7) - 1;
    return y >> 8;
}

/* An ADD/SUB as the element-wise passes take it (Helium's and the scalar ones): raw = unit * unit_scale +
 * term(other) * other_sign (unit_scale 2^14 or -2^14, other_sign 1 or -1: a SUB's minus goes to whichever input
 * is the second), then the output's requantization. unit_first: input1 is the unit input (the pass loads it from
 * the first pointer). */
typedef struct {
    int32_t unit_first, other_sign_mask, unit_scale, other_sign;
    grukit_requant_s32 other, output;
} add_unit_params_s16;

static inline add_unit_params_s16 add_pass_params_s16(const grukit_add_fast_s16 *p, int subtract)
{
    const int32_t unit_first = is_unit_term_s16(&p->input1);
    const add_unit_params_s16 a = {unit_first, unit_first ? p->input2_sign_mask : p->input1_sign_mask,
                                   subtract && !unit_first ? -(1 << 14) : 1 << 14, subtract && unit_first ? -1 : 1,
                                   unit_first ? p->input2 : p->input1, p->output};
    return a;
}

#if GRUKIT_GRU_MVE
/*
 * The 16x8 element-wise ops on 4 lanes, lane by lane the integers of the functions above (both forms: their
 * element-wise ops are the same). Every rounding constant of a 16x8 requantization is 2^(e - 1) (0 for e = 0;
 * the zero points are 0), so each add-and-shift is one VRSHL by -e, and SMMULR(x2, m) with x2 = 2 y is
 * VQRDMULH(y, m) (no saturation: m >= 0): scalar operands throughout, the parameters stay in core registers.
 * Every ADD/SUB has a unit input (multiplier 1/2, right shift 0; grukit_model_s16_init checks): its term is
 * x << 14 exactly, one shift. A requantized value feeding a table stays as x << 16, VQSHL's saturation.
 */

/* The other input's term: VQRDMULH(x << 15, m) plus the sign where e >= 1 (RoundingDivideByPOT's half away from
 * zero), rounded by 2^e. */
static inline int32x4_t other_term_s16_mve(const add_unit_params_s16 *p, int32x4_t sign_mask, int32x4_t x)
{
    const int32x4_t y = vqrdmulhq_n_s32(vshlq_n_s32(x, 15), p->other.multiplier);
    return vrshlq_n_s32(vaddq_s32(y, vandq_s32(vshrq_n_s32(x, 31), sign_mask)), -p->other.right_shift);
}

/* requant_fast_s32 of the doubled 2 raw, saturated to int16 and kept as x << 16: VQSHL by 16 saturates exactly
 * the values outside int16 (to INT32_MIN / INT32_MAX, whose top halves are -32768 / 32767). */
static inline int32x4_t requant_high_s16_mve(int32x4_t raw, int32_t multiplier, int32_t neg_shift)
{
    const int32x4_t y = vaddq_s32(vqrdmulhq_n_s32(raw, multiplier), vshrq_n_s32(raw, 31));
    return vqshlq_n_s32(vrshlq_n_s32(y, neg_shift), 16);
}

/* The table input of x << 16: VQDMULH by multiplier << 15 is x * multiplier exactly (multiplier <= 32767, no
 * saturation), then the rounding shift. */
typedef struct {
    int32_t multiplier15, neg_shift;
} table_mve_s16;

static inline table_mve_s16 table_params_s16_mve(const grukit_table_input_s16 *p)
{
    const table_mve_s16 t = {p->multiplier << 15, -p->right_shift};
    return t;
}

/*
 * sigmoid_abs with |v| clamped to 255 * 2^f - 1 (LIMIT) in place of the saturation: the index stays <= 254 and
 * the interpolated value, 65534 * 2^f + 2^f - 1 at the limit, rounds to the saturated value's outputs in both
 * activations below (LOGISTIC: 32767 and 1, TANH: 32767 and -32767; tests/test_firmware_gru.py checks every
 * |v|): no compare and select.
 */
static inline int32x4_t sigmoid_clamped_mve(int32x4_t v, uint32_t fraction_bits, uint32x4_t limit,
                                            uint32x4_t fraction_mask)
{
    /* fraction_bits is 8 or 9 (a constant where this is inlined): immediate shifts */
    const uint32x4_t a = vminq_u32(vreinterpretq_u32_s32(vabsq_s32(v)), limit);
    const uint32x4_t index = fraction_bits == 9u ? vshrq_n_u32(a, 9) : vshrq_n_u32(a, 8);
    const uint32x4_t lo = vldrhq_gather_shifted_offset_u32(grukit_sigmoid_table_uint16, index);
    const uint32x4_t hi = vldrhq_gather_shifted_offset_u32(grukit_sigmoid_table_uint16 + 1, index);
    const uint32x4_t lo_scaled = fraction_bits == 9u ? vshlq_n_u32(lo, 9) : vshlq_n_u32(lo, 8);
    return vreinterpretq_s32_u32(vaddq_u32(lo_scaled, vmulq_u32(vandq_u32(a, fraction_mask), vsubq_u32(hi, lo))));
}

/* The activations of x << 16. With r = s rounded by 2^10 (LOGISTIC) or 2^8 (TANH), the scalar forms' results
 * are r (r - 2^15) for v >= 0 and 2^15 - r (2^15 - r) below: the reflection as (t XOR m) with the sign mask
 * m = v >> 31 (t XOR -1 = -t - 1) and one multiply-add of m. */
static inline int32x4_t activate_s16_mve(const table_mve_s16 *t, int tanh_gate, uint32x4_t limit,
                                         uint32x4_t fraction_mask, int32x4_t high)
{
    const int32x4_t v = vrshlq_n_s32(vqdmulhq_n_s32(high, t->multiplier15), t->neg_shift);
    const int32x4_t m = vshrq_n_s32(v, 31);
    if (tanh_gate) {
        const int32x4_t r = vrshrq_n_s32(sigmoid_clamped_mve(v, 8u, limit, fraction_mask), 8);
        return vmlaq_n_s32(veorq_s32(vsubq_n_s32(r, 1 << 15), m), m, -1); /* -(t) = (t XOR -1) + 1 */
    }
    const int32x4_t r = vrshrq_n_s32(sigmoid_clamped_mve(v, 9u, limit, fraction_mask), 10);
    return vmlaq_n_s32(veorq_s32(r, m), m, -((1 << 15) + 1)); /* 2^15 - r = (r XOR -1) + 2^15 + 1 */
}

/* The passes below run every hidden unit, 4 per iteration, with unpredicated vectors, then the last 1-3 units
 * predicated (their lanes past H loaded as 0 and not stored). */

/* ACT(add(a, b)) of 4 lanes: ACT 0 the sum itself, 1 LOGISTIC, 2 TANH. */
static inline int32x4_t add_act_s16_mve(const add_unit_params_s16 *p, int32x4_t sign_mask, const table_mve_s16 *t,
                                        int act, uint32x4_t limit, uint32x4_t fraction_mask, int32x4_t unit,
                                        int32x4_t other)
{
    const int32x4_t raw = vaddq_s32(vshlq_n_s32(unit, 14), other_term_s16_mve(p, sign_mask, other));
    const int32x4_t high = requant_high_s16_mve(raw, p->output.multiplier, -p->output.right_shift);
    return act == 0 ? vshrq_n_s32(high, 16) : activate_s16_mve(t, act == 2, limit, fraction_mask, high);
}

/* out = ACT(add(a, b)) for every hidden unit (inlined into one function per activation). */
static GRUKIT_INLINE void add_pass_s16(const grukit_add_fast_s16 *add, const grukit_table_input_s16 *act_input,
                                       int act, const int16_t *a, const int16_t *b, int16_t *out, int32_t n)
{
    const add_unit_params_s16 p = add_pass_params_s16(add, 0);
    const table_mve_s16 t = act != 0 ? table_params_s16_mve(act_input) : (table_mve_s16){0, 0};
    const int32x4_t sign_mask = vdupq_n_s32(p.other_sign_mask);
    const uint32_t fraction_bits = act == 2 ? 8u : 9u;
    const uint32x4_t limit = vdupq_n_u32((255u << fraction_bits) - 1u);
    const uint32x4_t fraction_mask = vdupq_n_u32((1u << fraction_bits) - 1u);
    const int16_t *unit = p.unit_first ? a : b, *other = p.unit_first ? b : a;
    int32_t j = 0;
    for (; j + 4 <= n; j += 4) {
        vstrhq_s32(out + j, add_act_s16_mve(&p, sign_mask, &t, act, limit, fraction_mask, vldrhq_s32(unit + j),
                                            vldrhq_s32(other + j)));
    }
    if (j < n) {
        const mve_pred16_t q = vctp32q((uint32_t)(n - j));
        vstrhq_p_s32(out + j, add_act_s16_mve(&p, sign_mask, &t, act, limit, fraction_mask,
                                              vldrhq_z_s32(unit + j, q), vldrhq_z_s32(other + j, q)), q);
    }
}

/* out = mul(r, b) for every hidden unit (r a LOGISTIC output in [0, 32767]). */
static GRUKIT_NOINLINE void mul_pass_s16(const grukit_requant_s32 *mul, const int16_t *r, const int16_t *b,
                                         int16_t *out, int32_t n)
{
    const int32_t multiplier = mul->multiplier, neg_shift = -mul->right_shift;
    int32_t j = 0;
    for (; j + 4 <= n; j += 4) {
        const int32x4_t high = requant_high_s16_mve(vmulq_s32(vldrhq_s32(r + j), vldrhq_s32(b + j)), multiplier,
                                                    neg_shift);
        vstrhq_s32(out + j, vshrq_n_s32(high, 16));
    }
    if (j < n) {
        const mve_pred16_t q = vctp32q((uint32_t)(n - j));
        const int32x4_t high = requant_high_s16_mve(vmulq_s32(vldrhq_z_s32(r + j, q), vldrhq_z_s32(b + j, q)),
                                                    multiplier, neg_shift);
        vstrhq_p_s32(out + j, vshrq_n_s32(high, 16), q);
    }
}

/* mul(z, sub(h, n)) of 4 lanes, the sub's unit and other inputs given (h and n in the SUB's order). */
static inline int32x4_t z_diff_s16_mve(const add_unit_params_s16 *p, int32x4_t sign_mask, int32_t mul_multiplier,
                                       int32_t mul_neg_shift, int32x4_t z, int32x4_t unit, int32x4_t other)
{
    const int32x4_t raw =
        vmlaq_n_s32(vmulq_n_s32(unit, p->unit_scale), other_term_s16_mve(p, sign_mask, other), p->other_sign);
    const int32x4_t diff = vshrq_n_s32(requant_high_s16_mve(raw, p->output.multiplier, -p->output.right_shift), 16);
    return vshrq_n_s32(requant_high_s16_mve(vmulq_s32(z, diff), mul_multiplier, mul_neg_shift), 16);
}

/* z = mul(z, sub(h, n)) for every hidden unit, in place: the first half of the state update. */
static GRUKIT_NOINLINE void z_diff_pass_s16(const grukit_gru_layer_s16 *layer, int16_t *z, const int16_t *n_gate,
                                            const int16_t *h)
{
    const add_unit_params_s16 p = add_pass_params_s16(&layer->h_minus_n, 1);
    const int32x4_t sign_mask = vdupq_n_s32(p.other_sign_mask);
    const int32_t mul_multiplier = layer->z_mul.multiplier, mul_neg_shift = -layer->z_mul.right_shift;
    const int16_t *unit = p.unit_first ? h : n_gate, *other = p.unit_first ? n_gate : h;
    const int32_t H = layer->hidden_size;
    int32_t j = 0;
    for (; j + 4 <= H; j += 4) {
        vstrhq_s32(z + j, z_diff_s16_mve(&p, sign_mask, mul_multiplier, mul_neg_shift, vldrhq_s32(z + j),
                                         vldrhq_s32(unit + j), vldrhq_s32(other + j)));
    }
    if (j < H) {
        const mve_pred16_t q = vctp32q((uint32_t)(H - j));
        vstrhq_p_s32(z + j, z_diff_s16_mve(&p, sign_mask, mul_multiplier, mul_neg_shift, vldrhq_z_s32(z + j, q),
                                           vldrhq_z_s32(unit + j, q), vldrhq_z_s32(other + j, q)), q);
    }
}
#else
/*
 * The 16x8 element-wise ops without Helium, as the Helium passes run them (one op over every hidden unit at a
 * time, each pass with its few parameters in registers, each ADD/SUB's unit input as x << 14) on scalars: the
 * functions above. Against one fused loop over the units, which reloads most of its ~30 parameters per unit:
 * 226 -> 183 element-wise instructions per unit on the Cortex-M4, 348 -> 259 on RV32, 890 -> 729 on the M0+
 * (I=16, H=64).
 */

static inline int32_t add_unit_s16(const add_unit_params_s16 *p, int32_t unit, int32_t other, int subtract)
{
    const int32_t term = add_term_s16(&p->other, p->other_sign_mask, other);
    const int32_t raw = subtract ? unit * p->unit_scale + term * p->other_sign : unit * (1 << 14) + term;
    return sat_s16(requant_fast_s32(2 * raw, p->output.multiplier, p->output.rounding, p->output.right_shift));
}

/* out = ACT(add(a, b)) for every hidden unit: ACT 0 the sum itself, 1 LOGISTIC, 2 TANH (a constant where
 * inlined). */
static GRUKIT_INLINE void add_pass_s16(const grukit_add_fast_s16 *add, const grukit_table_input_s16 *act_input,
                                       int act, const int16_t *a, const int16_t *b, int16_t *out, int32_t n)
{
    const add_unit_params_s16 p = add_pass_params_s16(add, 0);
    const grukit_table_input_s16 in = act != 0 ? *act_input : (grukit_table_input_s16){0, 0, 0};
    const int16_t *unit = p.unit_first ? a : b, *other = p.unit_first ? b : a;
    for (int32_t j = 0; j < n; ++j) {
        const int32_t v = add_unit_s16(&p, unit[j], other[j], 0);
        out[j] = (int16_t)(act == 0 ? v : act == 1 ? logistic_fast_s16(&in, v) : tanh_fast_s16(&in, v));
    }
}

static GRUKIT_NOINLINE void mul_pass_s16(const grukit_requant_s32 *mul, const int16_t *r, const int16_t *b,
                                         int16_t *out, int32_t n)
{
    const grukit_requant_s32 q = *mul;
    for (int32_t j = 0; j < n; ++j) {
        out[j] = (int16_t)mul_fast_s16(&q, r[j], b[j]);
    }
}

static GRUKIT_NOINLINE void z_diff_pass_s16(const grukit_gru_layer_s16 *layer, int16_t *z, const int16_t *n_gate,
                                            const int16_t *h)
{
    const add_unit_params_s16 p = add_pass_params_s16(&layer->h_minus_n, 1);
    const grukit_requant_s32 z_mul = layer->z_mul;
    const int16_t *unit = p.unit_first ? h : n_gate, *other = p.unit_first ? n_gate : h;
    const int32_t H = layer->hidden_size;
    for (int32_t j = 0; j < H; ++j) {
        z[j] = (int16_t)mul_fast_s16(&z_mul, z[j], add_unit_s16(&p, unit[j], other[j], 1));
    }
}
#endif

/* The gate passes and the last ADD of a step, from add_pass_s16 (Helium's or the scalar one). */
static GRUKIT_NOINLINE void logistic_pass_s16(const grukit_add_fast_s16 *pre, const grukit_table_input_s16 *act,
                                              const int16_t *a, const int16_t *b, int16_t *out, int32_t n)
{
    add_pass_s16(pre, act, 1, a, b, out, n);
}

static GRUKIT_NOINLINE void tanh_pass_s16(const grukit_add_fast_s16 *pre, const grukit_table_input_s16 *act,
                                          const int16_t *a, const int16_t *b, int16_t *out, int32_t n)
{
    add_pass_s16(pre, act, 2, a, b, out, n);
}

/* out = add(a, b) for every hidden unit (the new state). */
static GRUKIT_NOINLINE void add_only_pass_s16(const grukit_add_fast_s16 *add, const int16_t *a, const int16_t *b,
                                              int16_t *out, int32_t n)
{
    add_pass_s16(add, NULL, 0, a, b, out, n);
}

/* ---------------------------------------------------------------- 16x8 layer step */

/* Scratch: int16 xp[max(I8, H8)] (x, h or r * h, zero padded), gx[3][H4], gh[3][H4]. */
int32_t grukit_gru_s16_get_buffer_size(const grukit_gru_layer_s16 *layer)
{
    return 2 * max_s32(round_up8(layer->input_size), round_up8(layer->hidden_size)) +
           12 * round_up4(layer->hidden_size);
}

void grukit_gru_step_s16(const grukit_gru_layer_s16 *layer, const int16_t *x, int16_t *h, int32_t *scratch)
{
    const int32_t H = layer->hidden_size;
    const int32_t h4 = round_up4(H);
    const int32_t stride = layer->x_fc.compact != NULL ? H : h4; /* gate g's rows start at g * stride */
    int16_t *xp = (int16_t *)(void *)scratch;
    int16_t *gx = xp + max_s32(round_up8(layer->input_size), round_up8(H));
    int16_t *gh = gx + 3 * h4;
    int16_t *gx_z = gx;
    const int16_t *gx_r = gx + stride, *gx_n = gx + 2 * stride;
    const int16_t *gh_z = gh, *gh_r = gh + stride;
    int16_t *gh_n = gh + 2 * stride;

    pad_s16(x, layer->input_size, xp);
    fc_s16(&layer->x_fc, xp, gx);
    pad_s16(h, H, xp);
    fc_s16(&layer->h_fc, xp, gh);

    GRUKIT_PHASE(GRUKIT_PHASE_UNITS);
    /* One pass over the hidden units per op, each with its parameters in registers (on Helium, 4 units at a
     * time); z, r and n in place of gx_z, gx_r and gx_n. */
    logistic_pass_s16(&layer->z_pre, &layer->z_act, gx_z, gh_z, gx_z, H);
    logistic_pass_s16(&layer->r_pre, &layer->r_act, gx_r, gh_r, (int16_t *)gx_r, H);
    if (layer->linear_before_reset) {
        mul_pass_s16(&layer->r_mul, gx_r, gh_n, gh_n, H); /* r_gh */
    } else {
        mul_pass_s16(&layer->r_mul, gx_r, h, xp, H); /* r_h, then gh_n = R_n (r * h) */
        GRUKIT_PHASE(GRUKIT_PHASE_PRODUCTS);
        fc_s16(&layer->hn_fc, xp, gh_n);
        GRUKIT_PHASE(GRUKIT_PHASE_UNITS);
    }
    tanh_pass_s16(&layer->n_pre, &layer->n_act, gx_n, gh_n, (int16_t *)gx_n, H);
    z_diff_pass_s16(layer, gx_z, gx_n, h);              /* z (h - n) */
    add_only_pass_s16(&layer->h_new, gx_n, gx_z, h, H); /* h = n + z (h - n) */
    GRUKIT_PHASE(GRUKIT_PHASE_PRODUCTS);
}

/* ---------------------------------------------------------------- 16x8 model */

int32_t grukit_model_s16_get_state_size(const grukit_model_s16 *model)
{
    int32_t elems = 0;
    for (int32_t l = 0; l < model->num_layers; ++l) {
        elems += model->layers[l].hidden_size;
    }
    return 2 * elems;
}

int32_t grukit_model_s16_get_output_size(const grukit_model_s16 *model)
{
    return model->head_layers > 0 ? model->head[model->head_layers - 1].fc.rows
                                  : model->layers[model->num_layers - 1].hidden_size;
}

/* The head needs xp int16 [F8] for the widest layer input and one padded output [O4] for the widest output. */
static int32_t head_s16_depth(const grukit_model_s16 *model)
{
    int32_t depth = 0;
    for (int32_t k = 0; k < model->head_layers; ++k) {
        depth = max_s32(depth, round_up8(model->head[k].fc.depth));
    }
    return depth;
}

int32_t grukit_model_s16_get_buffer_size(const grukit_model_s16 *model)
{
    int32_t rows = 0;
    for (int32_t k = 0; k < model->head_layers; ++k) {
        rows = max_s32(rows, round_up4(model->head[k].fc.rows));
    }
    int32_t bytes = model->head_layers > 0 ? 2 * head_s16_depth(model) + 2 * rows : 0;
    for (int32_t l = 0; l < model->num_layers; ++l) {
        bytes = max_s32(bytes, grukit_gru_s16_get_buffer_size(&model->layers[l]));
    }
    return bytes;
}

void grukit_model_s16_reset(const grukit_model_s16 *model, int16_t *state)
{
    memset(state, 0, (size_t)grukit_model_s16_get_state_size(model));
}

/* 1 if the product is of a form this build runs. */
static int form_built_s16(const grukit_fc_s16 *fc)
{
    return fc->compact != NULL ? GRUKIT_FORM_SIZE : GRUKIT_FORM_SPEED;
}

/* 1 if every layer and head product of the model is of a form this build runs. */
static int forms_built_s16(const grukit_model_s16 *model)
{
    for (int32_t l = 0; l < model->num_layers; ++l) {
        if (!form_built_s16(&model->layers[l].x_fc)) {
            return 0;
        }
    }
    for (int32_t k = 0; k < model->head_layers; ++k) {
        if (!form_built_s16(&model->head[k].fc)) {
            return 0;
        }
    }
    return 1;
}

/* Every layer's ADD/SUB has a unit input (is_unit_term_s16), the contract the Helium passes rely on. */
static int unit_inputs_s16(const grukit_model_s16 *model)
{
    for (int32_t l = 0; l < model->num_layers; ++l) {
        const grukit_gru_layer_s16 *layer = &model->layers[l];
        const grukit_add_fast_s16 *adds[5] = {&layer->z_pre, &layer->r_pre, &layer->n_pre, &layer->h_minus_n,
                                              &layer->h_new};
        for (int i = 0; i < 5; ++i) {
            if (!is_unit_term_s16(&adds[i]->input1) && !is_unit_term_s16(&adds[i]->input2)) {
                return 0;
            }
        }
    }
    return 1;
}

int grukit_model_s16_init(const grukit_model_s16 *model, int16_t *state, int32_t state_bytes,
                          int32_t scratch_bytes)
{
    if (!forms_built_s16(model)) {
        return GRUKIT_ERROR_FORM_NOT_BUILT;
    }
    if (!unit_inputs_s16(model)) {
        return GRUKIT_ERROR_BAD_CONSTANTS;
    }
    if (state_bytes < grukit_model_s16_get_state_size(model)) {
        return GRUKIT_ERROR_STATE_TOO_SMALL;
    }
    if (scratch_bytes < grukit_model_s16_get_buffer_size(model)) {
        return GRUKIT_ERROR_SCRATCH_TOO_SMALL;
    }
    grukit_model_s16_reset(model, state);
    return GRUKIT_OK;
}

void grukit_model_s16_output(const grukit_model_s16 *model, const int16_t *state, int32_t *scratch, int16_t *y)
{
    const int32_t top_size = model->layers[model->num_layers - 1].hidden_size;
    const int16_t *x = state + grukit_model_s16_get_state_size(model) / 2 - top_size;
    if (model->head_layers == 0) {
        memcpy(y, x, 2 * (size_t)top_size);
        return;
    }
    int16_t *xp = (int16_t *)(void *)scratch;
    int16_t *out = xp + head_s16_depth(model);
    for (int32_t k = 0; k < model->head_layers; ++k) {
        const grukit_dense_s16 *dense = &model->head[k];
        pad_s16(x, dense->fc.depth, xp); /* x may be out: copied before it is written */
        fc_s16(&dense->fc, xp, out);
        for (int32_t o = 0; o < dense->fc.rows; ++o) {
            const int32_t v = clamp_s32(out[o], dense->act_min, dense->act_max); /* a fused ReLU / ReLU6 */
            out[o] = (int16_t)(dense->act_op == GRUKIT_ACT_LOGISTIC ? logistic_fast_s16(&dense->act_input, v)
                               : dense->act_op == GRUKIT_ACT_TANH ? tanh_fast_s16(&dense->act_input, v) : v);
        }
        x = out;
    }
    memcpy(y, out, 2 * (size_t)model->head[model->head_layers - 1].fc.rows);
}

void grukit_model_s16_step(const grukit_model_s16 *model, int16_t *state, int32_t *scratch, const int16_t *x,
                           int16_t *y)
{
    int16_t *h = state;
    for (int32_t l = 0; l < model->num_layers; ++l) {
        const grukit_gru_layer_s16 *layer = &model->layers[l];
        grukit_gru_step_s16(layer, x, h, scratch);
        x = h;
        h += layer->hidden_size;
    }
    if (y != NULL) {
        grukit_model_s16_output(model, state, scratch, y);
    }
}

void grukit_model_s16_save_state(const grukit_model_s16 *model, const int16_t *state, int16_t *saved)
{
    memcpy(saved, state, (size_t)grukit_model_s16_get_state_size(model));
}

void grukit_model_s16_restore_state(const grukit_model_s16 *model, int16_t *state, const int16_t *saved)
{
    memcpy(state, saved, (size_t)grukit_model_s16_get_state_size(model));
}
