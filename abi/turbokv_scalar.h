/* SPDX-License-Identifier: MIT */
/*
 * turbokv scalar format rules: the arithmetic every backend must do bit for
 * bit the same way for the stored bytes to be the same (turbokv_format.h
 * describes the formats; this file is how their scalar steps are computed).
 * One text, compiled as C99 (and later), as GLSL 4.60 (glslang, with
 * GL_EXT_shader_explicit_arithmetic_types) and as OpenCL C 1.2:
 *
 *   - IEEE binary16 from / to float, round to nearest even by integer
 *     operations, subnormals exact (tkv_fp16_from_float, tkv_fp16_to_float),
 *     and the saturating form every stored scale and f16 value goes
 *     through (tkv_fp16_saturated); bfloat16 likewise (tkv_bf16_*);
 *   - the packed index streams: index i of a b-bit group at bits
 *     [i*b, i*b + b), least significant bit first, bytes little endian
 *     (tkv_index_bit, tkv_bits_at); QJL sign bits are the same stream with
 *     b = 1;
 *   - the nearest centroid: the count of the ascending boundaries (the
 *     midpoints of adjacent centroids) at or below y, so that a value on a
 *     boundary goes to the upper centroid, except that a zero y on a
 *     boundary of 0 goes by its sign bit (tkv_centroid_step);
 *   - q8_0 blocks: d = amax / 127 in float (correctly rounded), 1/d only
 *     where d >= FLT_MIN (else q = 0: tkv_q8_0_invertible), q = roundf(x *
 *     (1/d)) with subnormal x exact (tkv_q8_0_product), half away from
 *     zero (tkv_round_half_away), d stored through
 *     tkv_fp16_saturated; the block length (tkv_q8_0_block_len);
 *   - the outliers of the outlier-split types: how many (tkv_outlier_count),
 *     the bytes of an index (tkv_outlier_index_bytes) and their order, |x|
 *     descending with ties to the lower index, |x| compared as bits
 *     (tkv_abs_bits, tkv_outlier_before);
 *   - the summation order of the sums whose last bit reaches a stored
 *     scale: a turbo group's sum of squares and sum of squared centroids are
 *     TKV_NORM_LANES (8) running sums, element i in lane i % 8, each lane in
 *     element order, added as TKV_SUM8 adds them, in double (float only on a
 *     device without fp64), the square root taken in double and rounded to
 *     float once; a QJL group's norm and residual norm are one running sum in
 *     element order (double), and each sign's projection is TKV_QJL_LANES
 *     (4) running sums (element j in lane j % 4, double) added as TKV_SUM4
 *     adds them.
 *
 * What is not here, because the languages cannot share it: loops over
 * memory (C pointers, OpenCL address spaces and GLSL buffer references
 * differ), divisions and square roots (correctly rounded in C; an OpenCL
 * device may need -cl-fp32-correctly-rounded-divide-sqrt or a detour
 * through double, a Vulkan device exact residuals: each backend keeps its
 * own, which must give the correctly rounded result) and the vectorized
 * forms of the CPU plugin's ISA levels (they follow these rules lane by
 * lane; tests/test_cpu_ops.c and the conformance tests hold them to it).
 *
 * How each language includes it:
 *   C:        #include "turbokv_scalar.h" (turbokv_format.h does; installed
 *             beside it). Functions are static inline.
 *   GLSL:     #extension GL_GOOGLE_include_directive, then #include
 *             "turbokv_scalar.h" with glslang's -I pointing at abi/
 *             (plugins/vulkan/shaders/common.glsl; plugins/vulkan/meson.build).
 *   OpenCL C: the kernels say #include "turbokv_scalar.h"; the build step
 *             that embeds them into the plugin (plugins/opencl/embed.py)
 *             splices this file in at that line, so the program compiled at
 *             run time carries it (plugins/opencl/kernels/common.cl).
 * The language is detected from the compiler's predefined macros; a block
 * of macros below (the 32-bit unsigned type, float <-> bits, conversions,
 * the function qualifier, GLSL's precise) is the only per-language part.
 *
 * The rule for a new backend (CUDA, Metal, ...): include this file and call
 * these functions and macros; do not copy them. A language not detected
 * below gets its own block of the same macros here (or defines them all
 * itself and TKV_SCALAR_CUSTOM before including), and its plugin's
 * conformance tests (tests/test_backends.c, test_sum_order.c,
 * test_scalar.c) must pass. tests/test_scalar.c checks every rule here
 * against an independent implementation (all 65536 halves both ways, the
 * rounding boundaries, ties, subnormals, NaN and Inf).
 *
 * Everything here is a pure function of its arguments. Names starting with
 * tkv_ or TKV_ are this file's; it defines no name with two underscores
 * (reserved in GLSL).
 */
#ifndef TURBOKV_SCALAR_H
#define TURBOKV_SCALAR_H

/* ---- the language -------------------------------------------------------- */

#ifndef TKV_SCALAR_CUSTOM
#if defined(__OPENCL_C_VERSION__) || defined(__OPENCL_VERSION__)
#define TKV_SCALAR_OPENCL 1
#elif defined(GL_core_profile) || defined(GL_compatibility_profile) || defined(GL_ES) || defined(VULKAN)
#define TKV_SCALAR_GLSL 1
#else
#define TKV_SCALAR_C 1
#endif
#endif

#ifdef TKV_SCALAR_C
#include <stdint.h>
#define TKV_FN static inline
#define TKV_U32 uint32_t
#define TKV_I32 int32_t
#define TKV_U16 uint16_t /* an fp16 or bf16 bit pattern */
#define TKV_BOOL int
#define TKV_AS_U16(x) ((uint16_t)(x))
#define TKV_TO_F32(x) ((float)(x))
#define TKV_TO_I32(x) ((int32_t)(x))
#define TKV_TO_U32(x) ((uint32_t)(x))
#define TKV_PRECISE
#define TKV_F32_BITS(f) tkv_float_bits(f)
#define TKV_F32_FROM_BITS(u) tkv_float_from_bits(u)
/* fminf(fmaxf(v, lo), hi) without <math.h>, NaN included (gives lo) */
#define TKV_FCLAMP(v, lo, hi) ((v) > (hi) ? (hi) : (v) >= (lo) ? (v) : (lo))
#define TKV_BITFIELD(w, shift, n) (((w) >> (shift)) & ((1u << (n)) - 1u))
#endif

#ifdef TKV_SCALAR_OPENCL
#define TKV_FN inline
#define TKV_U32 uint
#define TKV_I32 int
#define TKV_U16 uint
#define TKV_BOOL int
#define TKV_AS_U16(x) (x)
#define TKV_TO_F32(x) ((float)(x))
#define TKV_TO_I32(x) ((int)(x))
#define TKV_TO_U32(x) ((uint)(x))
#define TKV_PRECISE
#define TKV_F32_BITS(f) as_uint(f)
#define TKV_F32_FROM_BITS(u) as_float(u)
#define TKV_FCLAMP(v, lo, hi) fmin(fmax(v, lo), hi)
#define TKV_BITFIELD(w, shift, n) (((w) >> (shift)) & ((1u << (n)) - 1u))
#endif

#ifdef TKV_SCALAR_GLSL
#define TKV_FN
#define TKV_U32 uint
#define TKV_I32 int
#define TKV_U16 uint
#define TKV_BOOL bool
#define TKV_AS_U16(x) (x)
#define TKV_TO_F32(x) float(x)
#define TKV_TO_I32(x) int(x)
#define TKV_TO_U32(x) uint(x)
#define TKV_PRECISE precise
#define TKV_F32_BITS(f) floatBitsToUint(f)
#define TKV_F32_FROM_BITS(u) uintBitsToFloat(u)
#define TKV_FCLAMP(v, lo, hi) clamp(v, lo, hi)
#define TKV_BITFIELD(w, shift, n) bitfieldExtract(w, int(shift), int(n))
#endif

/* ---- constants of the rules (turbokv_format.h documents them) ------------- */

#ifndef TKV_FP16_MAX
#define TKV_FP16_MAX 65504.0f /* the largest finite half */
#endif
#ifndef TKV_Q8_0_BLOCK
#define TKV_Q8_0_BLOCK 32u /* q8_0 values per block */
#endif
#ifndef TKV_OUTLIER_EVERY
#define TKV_OUTLIER_EVERY 32u /* outlier-split types: one outlier per this many values */
#endif
#define TKV_Q8_0_DIVISOR 127.0f /* q8_0: d = amax / 127 */
#define TKV_NORM_LANES 8u      /* running sums of a turbo group's squares */
#define TKV_QJL_LANES 4u       /* running sums of a QJL projection */

/* The two fixed trees that add running sums (any type: double, or float on
 * a device without fp64). In GLSL, assign the result to a precise variable
 * so that it is not reassociated. */
#define TKV_SUM8(s0, s1, s2, s3, s4, s5, s6, s7) \
    ((((s0) + (s4)) + ((s2) + (s6))) + (((s1) + (s5)) + ((s3) + (s7))))
#define TKV_SUM4(s0, s1, s2, s3) (((s0) + (s1)) + ((s2) + (s3)))

/* Binding generators that read declarations only (cffi) define TKV_CDEF
 * and see none of the functions. */
#ifndef TKV_CDEF

#ifdef TKV_SCALAR_C
static inline uint32_t tkv_float_bits(float f)
{
    union { float f; uint32_t u; } v = { f };
    return v.u;
}

static inline float tkv_float_from_bits(uint32_t u)
{
    union { uint32_t u; float f; } v = { u };
    return v.f;
}
#endif

/* ---- IEEE binary16 ---------------------------------------------------------- */

/* float -> binary16 bits, round to nearest even; NaN gives a quiet NaN of
 * the same sign (0x7e00 | sign), overflow Inf. */
TKV_FN TKV_U16 tkv_fp16_from_float(float f)
{
    TKV_U32 u = TKV_F32_BITS(f);
    TKV_U32 sign = (u >> 16) & 0x8000u, x = u & 0x7fffffffu;
    if (x >= 0x7f800000u) /* Inf or NaN */
        return TKV_AS_U16(sign | 0x7c00u | (x > 0x7f800000u ? 0x200u : 0u));
    if (x >= 0x477ff000u) /* rounds to >= 65520: overflow to Inf */
        return TKV_AS_U16(sign | 0x7c00u);
    if (x < 0x38800000u) { /* subnormal half or zero */
        if (x < 0x33000000u)
            return TKV_AS_U16(sign);
        /* |f| = m * 2^(e-150); in units of the half subnormal step 2^-24
         * that is m >> (126 - e), rounded to nearest even */
        TKV_U32 e = x >> 23, m = (x & 0x7fffffu) | 0x800000u, sh = 126u - e;
        TKV_U32 q = m >> sh, rem = m & ((1u << sh) - 1u), halfway = 1u << (sh - 1u);
        if (rem > halfway || (rem == halfway && (q & 1u) != 0u))
            q++;
        return TKV_AS_U16(sign | q);
    }
    TKV_U32 q = (x - 0x38000000u) >> 13, rem = x & 0x1fffu;
    if (rem > 0x1000u || (rem == 0x1000u && (q & 1u) != 0u))
        q++;
    return TKV_AS_U16(sign | q);
}

/* binary16 bits (the low 16 bits of h) -> float, exact: subnormal halves
 * computed as m * 2^-24 (a device that flushes float subnormals would not
 * flush these: they are normal floats). */
TKV_FN float tkv_fp16_to_float(TKV_U16 h)
{
    TKV_U32 sign = (h & 0x8000u) << 16, e = (h >> 10) & 0x1fu, m = h & 0x3ffu;
    if (e == 0u) /* zero or subnormal: m * 2^-24 */
        return TKV_F32_FROM_BITS(TKV_F32_BITS(TKV_TO_F32(m) * (1.0f / 16777216.0f)) | sign);
    if (e == 31u)
        return TKV_F32_FROM_BITS(sign | 0x7f800000u | (m << 13));
    return TKV_F32_FROM_BITS(sign | ((e + 112u) << 23) | (m << 13));
}

/* Stored scales and f16 values saturate at +-65504 instead of overflowing
 * to Inf (their inputs are finite: non-finite values are stored as 0). */
TKV_FN TKV_U16 tkv_fp16_saturated(float v)
{
    return tkv_fp16_from_float(TKV_FCLAMP(v, -TKV_FP16_MAX, TKV_FP16_MAX));
}

/* ---- bfloat16 (the host's f16/bf16 tensors, not a storage type) ------------- */

/* float -> bfloat16 bits, round to nearest even on bit 16; NaN stays a
 * quiet NaN, overflow carries into Inf. */
TKV_FN TKV_U16 tkv_bf16_from_float(float f)
{
    TKV_U32 u = TKV_F32_BITS(f);
    if ((u & 0x7fffffffu) > 0x7f800000u)
        return TKV_AS_U16((u >> 16) | 0x40u);
    return TKV_AS_U16((u + 0x7fffu + ((u >> 16) & 1u)) >> 16);
}

TKV_FN float tkv_bf16_to_float(TKV_U16 h) { return TKV_F32_FROM_BITS(TKV_TO_U32(h) << 16); }

/* ---- packed index streams --------------------------------------------------- */

/* The first bit of index i in its group's stream of `bits`-bit indices (the
 * stream's byte k holds bits 8k .. 8k + 7, least significant first). */
TKV_FN TKV_U32 tkv_index_bit(TKV_U32 i, TKV_U32 bits) { return i * bits; }

/* The n bits (1 <= n < 32) at bit `shift` of a little-endian window w of
 * the stream: an index is tkv_bits_at(window, tkv_index_bit(i, b) - 8 *
 * (window's first byte), b); packing ORs idx << that shift. */
TKV_FN TKV_U32 tkv_bits_at(TKV_U32 w, TKV_U32 shift, TKV_U32 n) { return TKV_BITFIELD(w, shift, n); }

/* ---- nearest centroid --------------------------------------------------------- */

/* A boundary's vote for y: 1 when y >= boundary. The index of y's nearest
 * centroid is the sum of the votes of the 2^b - 1 ascending boundaries of
 * the b-bit codebook: a value equal to a boundary goes to the centroid
 * above it. */
TKV_FN TKV_U32 tkv_centroid_step(float y, float boundary)
{
    /* At a boundary of 0 (every symmetric codebook of an even number of
     * levels has one) a zero y goes by its sign bit: -0 below, +0 above, as
     * the negative and positive subnormals that a device flushing them to
     * signed zero (NVIDIA's Vulkan driver, which reports no DenormPreserve)
     * turns into them. NaN votes 0 at every boundary. */
    if (y == boundary && boundary == 0.0f)
        return (TKV_F32_BITS(y) >> 31) ^ 1u;
    return y >= boundary ? 1u : 0u;
}

/* ---- q8_0 ------------------------------------------------------------------- */

/* Values of the q8_0 block that starts at value `first` of a row. */
TKV_FN TKV_U32 tkv_q8_0_block_len(TKV_U32 head_dim, TKV_U32 first)
{
    return head_dim - first < TKV_Q8_0_BLOCK ? head_dim - first : TKV_Q8_0_BLOCK;
}

/* Whether a block of d = amax / 127 stores q = roundf(x * (1/d)): only
 * where d >= FLT_MIN (1/d would overflow below it); else its q are 0 (its
 * fp16 d is 0 anyway). */
TKV_FN TKV_BOOL tkv_q8_0_invertible(float d) { return d >= TKV_F32_FROM_BITS(0x00800000u); }

/* x * id, the product q8_0 rounds, as a device that keeps subnormals
 * computes it, also on one that flushes subnormal operands to zero: there
 * a subnormal x (m 2^-149, m its significand's bits) becomes
 * (m 2^-23) (id 2^-126), the same exact product of two normal floats, so
 * the same correctly rounded result. Only ids of at least 2^125 need it
 * (below, |x id| < 1/2 and q is 0 either way); ids are at most 2^126
 * (d >= FLT_MIN), so both factors stay normal. */
TKV_FN float tkv_q8_0_product(float x, float id)
{
    TKV_U32 b = TKV_F32_BITS(x);
    TKV_PRECISE float p;
    if ((b & 0x7f800000u) != 0u || !(id >= TKV_F32_FROM_BITS(0x7e000000u))) { /* 2^125 */
        p = x * id;
        return p;
    }
    TKV_PRECISE float m = TKV_TO_F32(b & 0x007fffffu) * TKV_F32_FROM_BITS(0x34000000u); /* 2^-23 */
    TKV_PRECISE float s = id * TKV_F32_FROM_BITS(0x00800000u); /* 2^-126 */
    p = m * s;
    return (b >> 31) != 0u ? -p : p;
}

/* roundf(v): the nearest integer, halfway cases away from zero, for
 * |v| < 2^22 (q8_0 rounds |v| <= 127.5). Compares only, so no compiler
 * can fuse the product that made v into it. */
TKV_FN TKV_I32 tkv_round_half_away(float v)
{
    TKV_I32 t = TKV_TO_I32(v); /* towards zero */
    float ft = TKV_TO_F32(t);
    return t + (v >= ft + 0.5f ? 1 : 0) - (v <= ft - 0.5f ? 1 : 0);
}

/* ---- outlier-split rows ----------------------------------------------------- */

/* Outliers of a row: one per TKV_OUTLIER_EVERY values, rounded up. */
TKV_FN TKV_U32 tkv_outlier_count(TKV_U32 head_dim)
{
    return (head_dim + TKV_OUTLIER_EVERY - 1u) / TKV_OUTLIER_EVERY;
}

/* Bytes of one stored outlier index: 1 up to head_dim 256, else 2. */
TKV_FN TKV_U32 tkv_outlier_index_bytes(TKV_U32 head_dim) { return head_dim <= 256u ? 1u : 2u; }

/* |x| as bits: the order of these integers is the order of |x| for every
 * finite x, subnormals included, whatever a device does with them. */
TKV_FN TKV_U32 tkv_abs_bits(float x) { return TKV_F32_BITS(x) & 0x7fffffffu; }

/* Whether value j (|x_j| as tkv_abs_bits: aj) comes before value i (ai) in
 * the outliers' order: larger |x| first, ties to the lower index. The
 * outliers are the tkv_outlier_count(head_dim) first values of a row. */
TKV_FN TKV_BOOL tkv_outlier_before(TKV_U32 aj, TKV_U32 j, TKV_U32 ai, TKV_U32 i)
{
    return aj > ai || (aj == ai && j < i);
}

#endif /* TKV_CDEF */

#endif
