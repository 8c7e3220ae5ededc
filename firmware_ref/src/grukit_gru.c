/*
 * grukit_gru.c - the fused integer GRU step (contracts in grukit_gru.h).
 *
 * The _s8 kernel evaluates the op sequence of grukit/quantize/graph.py for a whole hidden vector at a time:
 *   1. the layer input is widened once to int16 (offset added) in the order the DSP multiply wants;
 *   2. the three input-side and two or three state-side gate products run as 4-row tiles over it;
 *   3. one loop over the hidden units does every element-wise op, each requantized exactly.
 * Every intermediate int8 tensor is the one TFLite-Micro would produce; only the order of additions inside
 * a dot product differs, and integer addition in int32 is exact (the generator bounds every accumulator).
 *
 * Overflow policy as in grukit_ops.c: no signed overflow occurs within the documented contracts; shifts of
 * possibly negative values go through uint32_t; right shifts of negative values are arithmetic (GCC, Clang).
 */
#include "grukit_gru.h"

#include <stddef.h>
#include <string.h>

#if defined(__ARM_FEATURE_DSP) && !defined(GRUKIT_PORTABLE_ONLY)
#define GRUKIT_GRU_DSP 1
#include <arm_acle.h>
#else
#define GRUKIT_GRU_DSP 0
#endif

/* ---------------------------------------------------------------- small helpers */

static inline int32_t round_up4(int32_t n) { return (n + 3) & ~3; }

static inline int32_t round_up8(int32_t n) { return (n + 7) & ~7; }

static inline int32_t max_s32(int32_t a, int32_t b) { return a > b ? a : b; }

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

/* x * multiplier / 2^32 rounded half up: SMMULR. */
static inline int32_t mul_high_rounded_s32(int32_t x, int32_t multiplier)
{
#if GRUKIT_GRU_DSP
    int32_t r;
    __asm__("smmulr %0, %1, %2" : "=r"(r) : "r"(x), "r"(multiplier));
    return r;
#else
    return (int32_t)(((int64_t)x * multiplier + (INT64_C(1) << 31)) >> 32);
#endif
}

/*
 * TFLite's double-rounding requantization plus zero point, on a doubled input (see grukit_requant_s32):
 * SaturatingRoundingDoublingHighMul(x, m) is SMMULR(2x, m) because 2x still fits (|x| < 2^29) and m >= 0
 * rules out the one saturating case; RoundingDivideByPOT(y, e) rounds half away from zero, which is
 * floor((2y + 2^e - [y < 0]) / 2^(e + 1)) for every e >= 0; zp * 2^(e + 1) inside the floor adds zp.
 */
static inline int32_t requant_doubled_s32(int32_t x2, grukit_requant_s32 q)
{
    const int32_t y = mul_high_rounded_s32(x2, q.multiplier);
    return (y * 2 + (y >> 31) + q.rounding) >> q.right_shift; /* bounded by the generator: no overflow */
}

static inline int32_t requant_doubled_shifted_s32(int32_t x2, grukit_requant_s32 q)
{
    return requant_doubled_s32(shl_s32(x2, q.left_shift), q);
}

/* ---------------------------------------------------------------- int8 products */

static inline int32_t pack_s16x2(int32_t lo, int32_t hi)
{
    return (int32_t)((uint32_t)(uint16_t)lo | ((uint32_t)hi << 16));
}

/*
 * xw[2c], xw[2c + 1] = the 16-bit pairs (x0, x2), (x1, x3) of columns 4c .. 4c + 3, each 2 * (x + offset)
 * (the doubling feeds requant_doubled_s32; |2 (x + offset)| <= 510 fits 16 bits). The pairs are the
 * halfwords SXTB16 makes of a weight word (bytes 0 and 2, bytes 1 and 3), so one SMLAD consumes each.
 * Padding columns, up to a multiple of 8, are 0.
 */
static void widen_s8(const int8_t *x, int32_t n, int32_t offset, int32_t *xw)
{
    int32_t k = 0;
    for (; k + 4 <= n; k += 4, xw += 2) {
        xw[0] = pack_s16x2(2 * (x[k] + offset), 2 * (x[k + 2] + offset));
        xw[1] = pack_s16x2(2 * (x[k + 1] + offset), 2 * (x[k + 3] + offset));
    }
    if (k < n) {
        int32_t tail[4] = {0, 0, 0, 0};
        for (int32_t i = 0; k + i < n; ++i) {
            tail[i] = 2 * (x[k + i] + offset);
        }
        xw[0] = pack_s16x2(tail[0], tail[2]);
        xw[1] = pack_s16x2(tail[1], tail[3]);
        xw += 2;
        k += 4;
    }
    if ((k & 4) != 0) {
        xw[0] = 0; /* the products read whole 8-column groups */
        xw[1] = 0;
    }
}

#if GRUKIT_GRU_DSP
/* Bytes 1 and 3 sign-extended to halfwords (ACLE has no rotate operand for SXTB16). */
static inline int16x2_t sxtb16_ror8(int32_t v)
{
    int16x2_t r;
    __asm__("sxtb16 %0, %1, ror #8" : "=r"(r) : "r"(v));
    return r;
}

#define TILE_ROW_MAC(acc, w_word, x02, x13)                                                                 \
    do {                                                                                                    \
        acc = __smlad(__sxtb16(w_word), (x02), acc);                                                        \
        acc = __smlad(sxtb16_ror8(w_word), (x13), acc);                                                     \
    } while (0)
#else
static inline int32_t byte_s32(int32_t word, int index)
{
    return (int32_t)((uint32_t)word << (24 - 8 * index)) >> 24;
}

static inline int32_t low_s16(int32_t word) { return (int32_t)((uint32_t)word << 16) >> 16; }

/* The portable twin of two SMLADs: w0 x0 + w2 x2 + w1 x1 + w3 x3. */
static inline int32_t dot4_portable(int32_t w, int32_t x02, int32_t x13)
{
    return byte_s32(w, 0) * low_s16(x02) + byte_s32(w, 2) * (x02 >> 16) + byte_s32(w, 1) * low_s16(x13) +
           byte_s32(w, 3) * (x13 >> 16);
}
#endif

/* acc[r] = bias2[r] + sum_k w[r][k] * xw-column k, for the 4 rows of one tile row. */
static inline void dot_tile_rows(const int32_t *w, const int32_t *xw, int32_t tiles, const int32_t *bias2,
                                 int32_t acc[4])
{
    int32_t a0 = bias2[0], a1 = bias2[1], a2 = bias2[2], a3 = bias2[3];
    const int32_t *const xw_end = xw + 2 * tiles;
#if GRUKIT_GRU_DSP
    /* Per 32 MACs (two tile columns; tiles is even, the generator pads the depth to 8): 6 LDRD, 16 SXTB16,
     * 16 SMLAD, CMP, BNE. Written in assembly because GCC hoists all weight loads and spills accumulators.
     * SMLAD adds modulo 2^32 like the portable sum, and the generator bounded the true sum below 2^30, so
     * both give the same int32. */
    if (xw < xw_end) {
        int32_t x02, x13, wa, wb, t;
        __asm__ volatile(
            "1:\n\t"
            "ldrd %[x02], %[x13], [%[xw]], #8\n\t"
            "ldrd %[wa], %[wb], [%[w]], #8\n\t"
            "sxtb16 %[t], %[wa]\n\t"
            "smlad %[a0], %[t], %[x02], %[a0]\n\t"
            "sxtb16 %[wa], %[wa], ror #8\n\t"
            "smlad %[a0], %[wa], %[x13], %[a0]\n\t"
            "sxtb16 %[t], %[wb]\n\t"
            "smlad %[a1], %[t], %[x02], %[a1]\n\t"
            "sxtb16 %[wb], %[wb], ror #8\n\t"
            "smlad %[a1], %[wb], %[x13], %[a1]\n\t"
            "ldrd %[wa], %[wb], [%[w]], #8\n\t"
            "sxtb16 %[t], %[wa]\n\t"
            "smlad %[a2], %[t], %[x02], %[a2]\n\t"
            "sxtb16 %[wa], %[wa], ror #8\n\t"
            "smlad %[a2], %[wa], %[x13], %[a2]\n\t"
            "sxtb16 %[t], %[wb]\n\t"
            "smlad %[a3], %[t], %[x02], %[a3]\n\t"
            "sxtb16 %[wb], %[wb], ror #8\n\t"
            "smlad %[a3], %[wb], %[x13], %[a3]\n\t"
            "ldrd %[x02], %[x13], [%[xw]], #8\n\t"
            "ldrd %[wa], %[wb], [%[w]], #8\n\t"
            "sxtb16 %[t], %[wa]\n\t"
            "smlad %[a0], %[t], %[x02], %[a0]\n\t"
            "sxtb16 %[wa], %[wa], ror #8\n\t"
            "smlad %[a0], %[wa], %[x13], %[a0]\n\t"
            "sxtb16 %[t], %[wb]\n\t"
            "smlad %[a1], %[t], %[x02], %[a1]\n\t"
            "sxtb16 %[wb], %[wb], ror #8\n\t"
            "smlad %[a1], %[wb], %[x13], %[a1]\n\t"
            "ldrd %[wa], %[wb], [%[w]], #8\n\t"
            "sxtb16 %[t], %[wa]\n\t"
            "smlad %[a2], %[t], %[x02], %[a2]\n\t"
            "sxtb16 %[wa], %[wa], ror #8\n\t"
            "smlad %[a2], %[wa], %[x13], %[a2]\n\t"
            "sxtb16 %[t], %[wb]\n\t"
            "smlad %[a3], %[t], %[x02], %[a3]\n\t"
            "sxtb16 %[wb], %[wb], ror #8\n\t"
            "smlad %[a3], %[wb], %[x13], %[a3]\n\t"
            "cmp %[xw], %[end]\n\t"
            "bne 1b\n\t"
            : [a0] "+r"(a0), [a1] "+r"(a1), [a2] "+r"(a2), [a3] "+r"(a3), [xw] "+r"(xw), [w] "+r"(w),
              [x02] "=&r"(x02), [x13] "=&r"(x13), [wa] "=&r"(wa), [wb] "=&r"(wb), [t] "=&r"(t)
            : [end] "r"(xw_end)
            : "cc", "memory");
    }
#else
    while (xw < xw_end) {
        a0 += dot4_portable(w[0], xw[0], xw[1]);
        a1 += dot4_portable(w[1], xw[0], xw[1]);
        a2 += dot4_portable(w[2], xw[0], xw[1]);
        a3 += dot4_portable(w[3], xw[0], xw[1]);
        xw += 2;
        w += 4;
    }
#endif
    acc[0] = a0;
    acc[1] = a1;
    acc[2] = a2;
    acc[3] = a3;
}

/* out[o] for every o < 4 * ceil(rows / 4) (padding rows included: the buffers are padded too). */
static void fc_s8(const grukit_fc_s8 *fc, const int32_t *xw, int8_t *out)
{
    const int32_t tiles = round_up8(fc->depth) >> 2; /* even: see dot_tile_rows */
    const int32_t rows = round_up4(fc->rows);
    const int32_t *w = fc->weights;
    const grukit_requant_s32 *q = fc->requant;
    if (fc->any_left_shift) {
        for (int32_t o = 0; o < rows; o += 4, w += 4 * tiles) {
            int32_t acc[4];
            dot_tile_rows(w, xw, tiles, fc->bias2 + o, acc);
            for (int32_t r = 0; r < 4; ++r) {
                out[o + r] = (int8_t)sat_s8(requant_doubled_shifted_s32(acc[r], q[o + r]));
            }
        }
        return;
    }
    for (int32_t o = 0; o < rows; o += 4, w += 4 * tiles) {
        int32_t acc[4];
        dot_tile_rows(w, xw, tiles, fc->bias2 + o, acc);
        out[o] = (int8_t)sat_s8(requant_doubled_s32(acc[0], q[o]));
        out[o + 1] = (int8_t)sat_s8(requant_doubled_s32(acc[1], q[o + 1]));
        out[o + 2] = (int8_t)sat_s8(requant_doubled_s32(acc[2], q[o + 2]));
        out[o + 3] = (int8_t)sat_s8(requant_doubled_s32(acc[3], q[o + 3]));
    }
}

/* ---------------------------------------------------------------- int8 element-wise ops */

/* ADD / SUB outputs have shift <= 0 (TFLite requires it): no left shift. */
static inline int32_t add_tab_s8(const grukit_add_table_s8 *p, int32_t a, int32_t b)
{
    return sat_s8(requant_doubled_s32(p->input1_term2[a] + p->input2_term2[b], p->output));
}

static inline int32_t sub_tab_s8(const grukit_add_table_s8 *p, int32_t a, int32_t b)
{
    return sat_s8(requant_doubled_s32(p->input1_term2[a] - p->input2_term2[b], p->output));
}

static inline int32_t mul_fast_s8(const grukit_mul_fast_s8 *p, int32_t a, int32_t b)
{
    /* |product| <= 255 * 255: doubling and the bounded left shift stay far inside int32. */
    const int32_t product2 = 2 * (a + p->input1_offset) * (b + p->input2_offset);
    return sat_s8(requant_doubled_shifted_s32(product2, p->output));
}

/* ---------------------------------------------------------------- int8 layer step */

/* Scratch: xw int32 [max(I8, H8) / 2], then int8 gx[3][H4], gh[3][H4], z[H4], r_h[H4] (I8, H4: rounded up to 8, 4). */
int32_t grukit_gru_s8_get_buffer_size(const grukit_gru_layer_s8 *layer)
{
    const int32_t h4 = round_up4(layer->hidden_size);
    return 2 * max_s32(round_up8(layer->input_size), round_up8(layer->hidden_size)) + 8 * h4;
}

void grukit_gru_step_s8(const grukit_gru_layer_s8 *layer, const int8_t *x, int8_t *h, int32_t *scratch)
{
    const int32_t H = layer->hidden_size;
    const int32_t h4 = round_up4(H);
    int32_t *xw = scratch; /* the widened layer input, state, or r * h: see widen_s8 */
    int8_t *gx = (int8_t *)(xw + max_s32(round_up8(layer->input_size), round_up8(H)) / 2);
    int8_t *gh = gx + 3 * h4;
    int8_t *z_buf = gh + 3 * h4;
    int8_t *r_h = z_buf + h4;
    const int8_t *gx_z = gx, *gx_r = gx + h4, *gx_n = gx + 2 * h4;
    const int8_t *gh_z = gh, *gh_r = gh + h4, *gh_n = gh + 2 * h4;
    /* Local copies: read through the layer pointer they would be reloaded after every int8 store. */
    const grukit_add_table_s8 z_pre = layer->z_pre, r_pre = layer->r_pre, n_pre = layer->n_pre;
    const grukit_add_table_s8 h_minus_n = layer->h_minus_n, h_new = layer->h_new;
    const grukit_mul_fast_s8 r_mul = layer->r_mul, z_mul = layer->z_mul;
    const int8_t *const z_table = layer->z_table, *const r_table = layer->r_table, *const n_table = layer->n_table;

    widen_s8(x, layer->input_size, layer->x_fc[0].input_offset, xw);
    fc_s8(&layer->x_fc[0], xw, (int8_t *)gx_z);
    fc_s8(&layer->x_fc[1], xw, (int8_t *)gx_r);
    fc_s8(&layer->x_fc[2], xw, (int8_t *)gx_n);
    widen_s8(h, H, layer->h_fc[0].input_offset, xw);
    fc_s8(&layer->h_fc[0], xw, (int8_t *)gh_z);
    fc_s8(&layer->h_fc[1], xw, (int8_t *)gh_r);

    if (layer->linear_before_reset) {
        fc_s8(&layer->h_fc[2], xw, (int8_t *)gh_n);
        for (int32_t j = 0; j < H; ++j) {
            const int32_t z = z_table[add_tab_s8(&z_pre, gx_z[j], gh_z[j])];
            const int32_t r = r_table[add_tab_s8(&r_pre, gx_r[j], gh_r[j])];
            const int32_t r_gh = mul_fast_s8(&r_mul, r, gh_n[j]);
            const int32_t n = n_table[add_tab_s8(&n_pre, gx_n[j], r_gh)];
            const int32_t h_j = h[j];
            const int32_t diff = sub_tab_s8(&h_minus_n, h_j, n);
            h[j] = (int8_t)add_tab_s8(&h_new, n, mul_fast_s8(&z_mul, z, diff));
        }
        return;
    }
    /* linear_before_reset 0: gh_n = R_n (r * h) needs every r first. */
    for (int32_t j = 0; j < H; ++j) {
        z_buf[j] = z_table[add_tab_s8(&z_pre, gx_z[j], gh_z[j])];
        const int32_t r = r_table[add_tab_s8(&r_pre, gx_r[j], gh_r[j])];
        r_h[j] = (int8_t)mul_fast_s8(&r_mul, r, h[j]);
    }
    widen_s8(r_h, H, layer->h_fc[2].input_offset, xw);
    fc_s8(&layer->h_fc[2], xw, (int8_t *)gh_n);
    for (int32_t j = 0; j < H; ++j) {
        const int32_t n = n_table[add_tab_s8(&n_pre, gx_n[j], gh_n[j])];
        const int32_t diff = sub_tab_s8(&h_minus_n, h[j], n);
        h[j] = (int8_t)add_tab_s8(&h_new, n, mul_fast_s8(&z_mul, z_buf[j], diff));
    }
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
    return model->head != NULL ? model->head->rows : model->layers[model->num_layers - 1].hidden_size;
}

/* The head needs xw int32 [H8 / 2] and its padded output [O4]. */
static int32_t head_s8_buffer_size(const grukit_fc_s8 *head)
{
    return 2 * round_up8(head->depth) + round_up4(head->rows);
}

int32_t grukit_model_s8_get_buffer_size(const grukit_model_s8 *model)
{
    int32_t bytes = model->head != NULL ? head_s8_buffer_size(model->head) : 0;
    for (int32_t l = 0; l < model->num_layers; ++l) {
        bytes = max_s32(bytes, grukit_gru_s8_get_buffer_size(&model->layers[l]));
    }
    return bytes;
}

void grukit_model_s8_reset(const grukit_model_s8 *model, int8_t *state)
{
    memset(state, 0, (size_t)grukit_model_s8_get_state_size(model));
}

int grukit_model_s8_init(const grukit_model_s8 *model, int8_t *state, int32_t state_bytes, int32_t scratch_bytes)
{
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
    const int8_t *top = top_state_s8(model, state);
    const grukit_fc_s8 *head = model->head;
    if (head == NULL) {
        memcpy(y, top, (size_t)model->layers[model->num_layers - 1].hidden_size);
        return;
    }
    int32_t *xw = scratch;
    int8_t *out = (int8_t *)(xw + round_up8(head->depth) / 2);
    widen_s8(top, head->depth, head->input_offset, xw);
    fc_s8(head, xw, out);
    memcpy(y, out, (size_t)head->rows);
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

/* ---------------------------------------------------------------- 16x8 layer step (grukit_ops primitives) */

static void fc_s16(const grukit_fc_s16 *fc, const int16_t *x, int16_t *out)
{
    grukit_fully_connected_s16(&fc->params, 1, fc->depth, fc->rows, x, fc->weights, fc->bias, fc->multiplier,
                               fc->shift, out);
}

/* Scratch: int16 gx[3][H], gh[3][H], a[H], b[H] (rounded up to whole words). */
int32_t grukit_gru_s16_get_buffer_size(const grukit_gru_layer_s16 *layer)
{
    return 2 * 8 * round_up4(layer->hidden_size);
}

void grukit_gru_step_s16(const grukit_gru_layer_s16 *layer, const int16_t *x, int16_t *h, int32_t *scratch)
{
    const int32_t H = layer->hidden_size;
    const int32_t h4 = round_up4(H);
    int16_t *gx_z = (int16_t *)scratch, *gx_r = gx_z + h4, *gx_n = gx_r + h4;
    int16_t *gh_z = gx_n + h4, *gh_r = gh_z + h4, *gh_n = gh_r + h4;
    int16_t *a = gh_n + h4, *b = a + h4;

    fc_s16(&layer->x_fc[0], x, gx_z);
    fc_s16(&layer->x_fc[1], x, gx_r);
    fc_s16(&layer->x_fc[2], x, gx_n);
    fc_s16(&layer->h_fc[0], h, gh_z);
    fc_s16(&layer->h_fc[1], h, gh_r);
    /* Outputs overwrite an input in place where the op allows it (element i read before written). */
    grukit_add_s16(&layer->z_pre, H, gx_z, gh_z, gx_z);
    grukit_logistic_s16(&layer->z_act, H, gx_z, gx_z); /* z */
    grukit_add_s16(&layer->r_pre, H, gx_r, gh_r, gx_r);
    grukit_logistic_s16(&layer->r_act, H, gx_r, gx_r); /* r */
    if (layer->linear_before_reset) {
        fc_s16(&layer->h_fc[2], h, gh_n);
        grukit_mul_s16(&layer->r_mul, H, gx_r, gh_n, gh_n); /* r_gh */
    } else {
        grukit_mul_s16(&layer->r_mul, H, gx_r, h, a); /* r_h */
        fc_s16(&layer->h_fc[2], a, gh_n);
    }
    grukit_add_s16(&layer->n_pre, H, gx_n, gh_n, gx_n);
    grukit_tanh_s16(&layer->n_act, H, gx_n, gx_n);        /* n */
    grukit_sub_s16(&layer->h_minus_n, H, h, gx_n, b);     /* h - n */
    grukit_mul_s16(&layer->z_mul, H, gx_z, b, b);         /* z * (h - n) */
    grukit_add_s16(&layer->h_new, H, gx_n, b, h);         /* n + z * (h - n) */
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
    return model->head != NULL ? model->head->rows : model->layers[model->num_layers - 1].hidden_size;
}

int32_t grukit_model_s16_get_buffer_size(const grukit_model_s16 *model)
{
    int32_t bytes = model->head != NULL ? 2 * round_up4(model->head->rows) : 0;
    for (int32_t l = 0; l < model->num_layers; ++l) {
        bytes = max_s32(bytes, grukit_gru_s16_get_buffer_size(&model->layers[l]));
    }
    return bytes;
}

void grukit_model_s16_reset(const grukit_model_s16 *model, int16_t *state)
{
    memset(state, 0, (size_t)grukit_model_s16_get_state_size(model));
}

int grukit_model_s16_init(const grukit_model_s16 *model, int16_t *state, int32_t state_bytes,
                          int32_t scratch_bytes)
{
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
    const int16_t *top = state + grukit_model_s16_get_state_size(model) / 2 - top_size;
    if (model->head == NULL) {
        memcpy(y, top, 2 * (size_t)top_size);
        return;
    }
    int16_t *out = (int16_t *)scratch;
    fc_s16(model->head, top, out);
    memcpy(y, out, 2 * (size_t)model->head->rows);
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
