/*
 * grukit_ops.h - integer primitives of the grukit C runtime.
 *
 * Each function is the C twin of the NumPy primitive of the same name in grukit/runtime/ops_int.py and
 * follows TFLite-Micro's reference kernel arithmetic (default double rounding), so that C, NumPy and
 * TFLite-Micro produce the same integers. C99, <stdint.h> only, no allocation, no floating point.
 *
 * Conventions shared by every kernel:
 *   - "offset" fields are what TFLite-Micro adds: input offsets are the NEGATED input zero points,
 *     output offsets are the output zero point itself.
 *   - A (multiplier, shift) pair is a real number multiplier * 2^(shift - 31): multiplier has its fixed
 *     point at bit 31 and is 0 or in [2^30, 2^31 - 1]; a positive shift is a left shift.
 *   - activation_min / activation_max clamp the output, in the output type's range, min <= max.
 *   - Arrays are contiguous, row-major, and must not alias unless a function says so.
 */
#ifndef GRUKIT_OPS_H
#define GRUKIT_OPS_H

#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* ---------------------------------------------------------------- fixed-point building blocks */

/**
 * @brief a * b / 2^31 rounded to nearest with ties toward +infinity (a nudge of 2^30, or 1 - 2^30 for a
 *        negative product, then a division truncating toward zero), saturating the single overflow case
 *        a == b == INT32_MIN to INT32_MAX (ARM VQRDMULH; gemmlowp SaturatingRoundingDoublingHighMul).
 * @param[in] a int32, any value.
 * @param[in] b int32, any value.
 * @return int32.
 */
int32_t grukit_saturating_rounding_doubling_high_mul_s32(int32_t a, int32_t b);

/**
 * @brief x / 2^exponent rounded to nearest, ties away from zero (gemmlowp RoundingDivideByPOT).
 * @param[in] x        int32, any value.
 * @param[in] exponent int, range [0, 31].
 * @return int32.
 */
int32_t grukit_rounding_divide_by_pot_s32(int32_t x, int exponent);

/**
 * @brief x * multiplier * 2^(shift - 31) with TFLite's default double rounding: the left part of the
 *        shift is applied first (x * 2^max(shift, 0), wrapping), then a saturating rounding doubling
 *        high multiply, then a rounding divide by 2^max(-shift, 0).
 * @param[in] x          int32. x * 2^max(shift, 0) must fit int32 (as in TFLite-Micro; it wraps otherwise).
 * @param[in] multiplier int32, 0 or [2^30, 2^31 - 1].
 * @param[in] shift      int, range [-31, 30].
 * @return int32.
 */
int32_t grukit_multiply_by_quantized_multiplier(int32_t x, int32_t multiplier, int shift);

/**
 * @brief The int64-accumulator variant used by the 16x8 fully connected kernel (TFLite-Micro's
 *        MultiplyByQuantizedMultiplier(int64_t, ...)): the multiplier is reduced to 15 fractional bits,
 *        round((multiplier + 2^15) >> 16) saturated at 0x7FFF, then x * reduced is shifted right by
 *        15 - shift rounding half up (toward +infinity).
 * @param[in] x          int64, range [-2^47, 2^47).
 * @param[in] multiplier int32, 0 or [2^30, 2^31 - 1].
 * @param[in] shift      int, range [-31, 7].
 * @return int32; the result must fit int32 (it is truncated otherwise).
 */
int32_t grukit_multiply_by_quantized_multiplier_s64(int64_t x, int32_t multiplier, int shift);

/* ---------------------------------------------------------------- fully connected */

/** Per-tensor part of a fully connected layer's parameters (the per-channel part is passed as arrays). */
typedef struct {
    int32_t input_offset;   /**< -input zero point: [-127, 128] for s8, 0 for s16 (symmetric). */
    int32_t output_offset;  /**< output zero point: [-128, 127] for s8, 0 for s16. */
    int32_t activation_min; /**< lower output clamp, in the output type's range. */
    int32_t activation_max; /**< upper output clamp, >= activation_min. */
} grukit_fc_params;

/**
 * @brief int8 fully connected with per-channel requantization (TFLite-Micro FullyConnectedPerChannel,
 *        int8 x int8 -> int32 accumulator -> int8):
 *        out[b][o] = clamp(MQM(sum_d w[o][d] * (in[b][d] + input_offset) + bias[o],
 *                              multiplier[o], shift[o]) + output_offset).
 *        On a core with the DSP extension (__ARM_FEATURE_DSP) the dot products use SXTB16/SMLAD;
 *        the result is bit-identical to the portable loop.
 * @param[in]  params       per-tensor offsets and clamp, see grukit_fc_params.
 * @param[in]  batches      int32, >= 1: rows of input and output.
 * @param[in]  input_depth  int32, [1, 65536]: the bound keeps the int32 accumulator from overflowing
 *                          (|w * (x + offset)| <= 128 * 255).
 * @param[in]  output_depth int32, >= 1.
 * @param[in]  input        int8 [batches, input_depth].
 * @param[in]  weights      int8 [output_depth, input_depth], symmetric (zero point 0).
 * @param[in]  bias         int32 [output_depth] or NULL for no bias.
 * @param[in]  multiplier   int32 [output_depth], each 0 or [2^30, 2^31 - 1].
 * @param[in]  shift        int32 [output_depth], each in [-31, 30].
 * @param[out] output       int8 [batches, output_depth].
 */
void grukit_fully_connected_s8(const grukit_fc_params *params, int32_t batches, int32_t input_depth,
                               int32_t output_depth, const int8_t *input, const int8_t *weights,
                               const int32_t *bias, const int32_t *multiplier, const int32_t *shift,
                               int8_t *output);

/**
 * @brief 16x8 fully connected with per-channel requantization (TFLite-Micro FullyConnectedPerChannel
 *        with int16 input, int8 weights, int64 bias and accumulator, int16 output); the requantization
 *        is grukit_multiply_by_quantized_multiplier_s64.
 * @param[in]  params       per-tensor offsets (0 for symmetric int16) and clamp.
 * @param[in]  batches      int32, >= 1.
 * @param[in]  input_depth  int32, >= 1; the accumulator must stay in [-2^47, 2^47).
 * @param[in]  output_depth int32, >= 1.
 * @param[in]  input        int16 [batches, input_depth].
 * @param[in]  weights      int8 [output_depth, input_depth], symmetric (zero point 0).
 * @param[in]  bias         int64 [output_depth] or NULL for no bias.
 * @param[in]  multiplier   int32 [output_depth], each 0 or [2^30, 2^31 - 1].
 * @param[in]  shift        int32 [output_depth], each in [-31, 7].
 * @param[out] output       int16 [batches, output_depth].
 */
void grukit_fully_connected_s16(const grukit_fc_params *params, int32_t batches, int32_t input_depth,
                                int32_t output_depth, const int16_t *input, const int8_t *weights,
                                const int64_t *bias, const int32_t *multiplier, const int32_t *shift,
                                int16_t *output);

/* ---------------------------------------------------------------- element-wise ADD / SUB */

/** Parameters of ADD and SUB (TFLite-Micro OpDataAdd / OpDataSub): both inputs are brought to a common
 *  scale with 2^left_shift headroom, combined, and requantized to the output. */
typedef struct {
    int32_t input1_offset;     /**< -input1 zero point; 0 for s16. */
    int32_t input2_offset;     /**< -input2 zero point; 0 for s16. */
    int32_t output_offset;     /**< output zero point; 0 for s16. */
    int32_t left_shift;        /**< 20 for s8, 15 for s16. */
    int32_t input1_multiplier; /**< 0 or [2^30, 2^31 - 1]. */
    int32_t input1_shift;      /**< [-31, 0] (a multiplier smaller than one). */
    int32_t input2_multiplier; /**< 0 or [2^30, 2^31 - 1]. */
    int32_t input2_shift;      /**< [-31, 0]. */
    int32_t output_multiplier; /**< 0 or [2^30, 2^31 - 1]. */
    int32_t output_shift;      /**< [-31, 0]. */
    int32_t activation_min;    /**< lower output clamp. */
    int32_t activation_max;    /**< upper output clamp. */
} grukit_add_params;

/**
 * @brief out[i] = clamp(requant(requant(in1[i]) + requant(in2[i]))), int8, same-shape inputs.
 * @param[in]  params see grukit_add_params (left_shift 20).
 * @param[in]  size   int32, >= 0: number of elements.
 * @param[in]  input1 int8 [size].
 * @param[in]  input2 int8 [size].
 * @param[out] output int8 [size]; may alias input1 or input2 (element i is read before it is written).
 */
void grukit_add_s8(const grukit_add_params *params, int32_t size, const int8_t *input1,
                   const int8_t *input2, int8_t *output);

/** @brief As grukit_add_s8 for int16 tensors (zero points 0, left_shift 15). */
void grukit_add_s16(const grukit_add_params *params, int32_t size, const int16_t *input1,
                    const int16_t *input2, int16_t *output);

/** @brief out[i] = input1[i] - input2[i], requantized as in grukit_add_s8 (left_shift 20). */
void grukit_sub_s8(const grukit_add_params *params, int32_t size, const int8_t *input1,
                   const int8_t *input2, int8_t *output);

/** @brief As grukit_sub_s8 for int16 tensors (zero points 0, left_shift 15). */
void grukit_sub_s16(const grukit_add_params *params, int32_t size, const int16_t *input1,
                    const int16_t *input2, int16_t *output);

/* ---------------------------------------------------------------- element-wise MUL */

/** Parameters of MUL (TFLite-Micro OpDataMul): one requantization of the int32 product. */
typedef struct {
    int32_t input1_offset;     /**< -input1 zero point; 0 for s16. */
    int32_t input2_offset;     /**< -input2 zero point; 0 for s16. */
    int32_t output_offset;     /**< output zero point; 0 for s16. */
    int32_t output_multiplier; /**< 0 or [2^30, 2^31 - 1]. */
    int32_t output_shift;      /**< [-31, 30]. */
    int32_t activation_min;    /**< lower output clamp. */
    int32_t activation_max;    /**< upper output clamp. */
} grukit_mul_params;

/**
 * @brief out[i] = clamp(MQM((in1[i] + input1_offset) * (in2[i] + input2_offset)) + output_offset), int8.
 * @param[in]  params see grukit_mul_params.
 * @param[in]  size   int32, >= 0.
 * @param[in]  input1 int8 [size].
 * @param[in]  input2 int8 [size].
 * @param[out] output int8 [size]; may alias an input.
 */
void grukit_mul_s8(const grukit_mul_params *params, int32_t size, const int8_t *input1,
                   const int8_t *input2, int8_t *output);

/** @brief As grukit_mul_s8 for int16 tensors (offsets 0; the int16 x int16 product fits int32). */
void grukit_mul_s16(const grukit_mul_params *params, int32_t size, const int16_t *input1,
                    const int16_t *input2, int16_t *output);

/* ---------------------------------------------------------------- LOGISTIC / TANH */

/** Parameters of int8 LOGISTIC and TANH (TFLite-Micro OpDataLogistic / tanh OpData, int8 part): the
 *  input is rescaled to Q4.27 by (input_multiplier, input_left_shift), then gemmlowp's fixed-point
 *  logistic / tanh is evaluated. Outputs have fixed quantization: logistic scale 1/256 zero point -128,
 *  tanh scale 1/128 zero point 0. */
typedef struct {
    int32_t input_zero_point;   /**< the input zero point itself (not negated), [-128, 127]. */
    int32_t input_range_radius; /**< |x - zp| >= radius saturates the output; > 0. */
    int32_t input_multiplier;   /**< [2^30, 2^31 - 1] (from frexp of input_scale * 2^27). */
    int32_t input_left_shift;   /**< the frexp exponent, so that radius * 2^shift fits int32. */
} grukit_activation_s8_params;

/** Parameters of int16 LOGISTIC and TANH (the table-interpolation kernels): input zero point 0, output
 *  scale 2^-15 zero point 0. input_multiplier 0 marks a power-of-two input scale (then the kernel uses
 *  3 << input_left_shift and no shift). */
typedef struct {
    int32_t input_multiplier; /**< [0, 32767]. */
    int32_t input_left_shift; /**< [0, 31]; 0 (logistic) or 0/1 (tanh) when input_multiplier is 0. */
} grukit_activation_s16_params;

/**
 * @brief int8 logistic, output scale 1/256, zero point -128.
 * @param[in]  params see grukit_activation_s8_params.
 * @param[in]  size   int32, >= 0.
 * @param[in]  input  int8 [size].
 * @param[out] output int8 [size]; may alias input.
 */
void grukit_logistic_s8(const grukit_activation_s8_params *params, int32_t size, const int8_t *input,
                        int8_t *output);

/** @brief int8 tanh, output scale 1/128, zero point 0. Arguments as grukit_logistic_s8. */
void grukit_tanh_s8(const grukit_activation_s8_params *params, int32_t size, const int8_t *input,
                    int8_t *output);

/**
 * @brief int16 logistic by linear interpolation in a 256-entry sigmoid table, output Q0.15.
 * @param[in]  params see grukit_activation_s16_params.
 * @param[in]  size   int32, >= 0.
 * @param[in]  input  int16 [size], zero point 0.
 * @param[out] output int16 [size], scale 2^-15, zero point 0; may alias input.
 */
void grukit_logistic_s16(const grukit_activation_s16_params *params, int32_t size, const int16_t *input,
                         int16_t *output);

/** @brief int16 tanh (from the same table, tanh(x) = 2 sigmoid(2x) - 1), output Q0.15. Arguments as
 *  grukit_logistic_s16. */
void grukit_tanh_s16(const grukit_activation_s16_params *params, int32_t size, const int16_t *input,
                     int16_t *output);

#ifdef __cplusplus
}
#endif

#endif /* GRUKIT_OPS_H */
