/* SPDX-License-Identifier: MIT */
/*
 * turbokv block formats — the one source of truth for how a K or V row is
 * stored. The core, every plugin and the cache file all follow this header;
 * the numeric tables it refers to (codebooks, sign vectors, dense rotations,
 * QJL sketches) are computed by the core (core/tables.c) and handed to
 * plugins through struct tkv_math in turbokv_plugin.h. Plugins never carry
 * their own copies.
 *
 * Self-contained: only <stdint.h>, <stddef.h> and turbokv_scalar.h, the
 * scalar rules (fp16, packed indices, nearest centroid, q8_0 rounding, the
 * outliers' order, the summation order) that C, GLSL and OpenCL C all
 * compile from that one file.
 *
 * A "row" is one head's K (or V) vector for one token: head_dim values.
 *
 * Turbo types (TurboQuant, arXiv 2504.19874, Algorithm 1 "TurboQuant_mse"):
 *   The row is split into groups (tkv_group_split). For each group x (g values):
 *     n = ||x||_2, u = x / n                       (n = 0: u = 0, indices 0)
 *     y = D2 . H_g . D1 . u / sqrt(g)              (rotation TKV_ROTATION_WHT)
 *     idx_i = nearest centroid of y_i in the b-bit Lloyd-Max codebook for the
 *             coordinate density of a random unit vector in g dimensions,
 *             f(t) ~ (1 - t^2)^((g-3)/2) on [-1, 1] (paper, Lemma 1);
 *             ties go to the upper centroid (boundaries are midpoints, and a
 *             value equal to a boundary belongs to the centroid above it),
 *             except y_i = -0 on a boundary of 0, which goes below it.
 *     stored scale s = n                           (TKV_SCALE_NORM)
 *                  or n / ||c[idx]||_2             (TKV_SCALE_NORM_CORRECTED)
 *   Dequantized values stay in the rotated domain: y_hat_i = s * c[idx_i].
 *   Group block: [fp16 scale, little endian][g*b/8 bytes of indices]
 *   Indices are a little-endian bit stream: index i occupies bits
 *   [i*b, i*b + b) of the group's index bytes, least significant bit first.
 *
 * QJL key types (TurboQuant_prod, arXiv 2504.19874, Algorithm 2): a b-bit
 *   type spends b - 1 bits per value on TurboQuant_mse and 1 bit per value on
 *   a 1-bit Quantized Johnson-Lindenstrauss sketch of the residual, so that
 *   inner products <q, k_hat> are unbiased estimates of <q, k>:
 *     stage 1: the (b-1)-bit turbo row above, as is (any rotation and scale
 *              mode); s_hat = the stored fp16 scale read back;
 *     r = n y - s_hat c[idx]                       (residual, rotated domain)
 *     gamma = ||r||_2, stored as fp16
 *     z_i = +1 if (S r)_i > 0 else -1              (S: g x g orthogonal)
 *     dequantized: y_hat = s_hat c[idx] + gamma / (g m_g) * S^T z
 *   with m_g = E|t| = Gamma(g/2) / (sqrt(pi) Gamma((g+1)/2)), the mean
 *   absolute coordinate of a random unit vector in g dimensions: each row s
 *   of a Haar-random orthogonal S is uniform on the sphere, so
 *   E[s sign(<s, r>)] = m_g r / ||r|| and E_S[y_hat] = n y, as with the
 *   paper's i.i.d. N(0, 1) S and its constant sqrt(pi/2)/g, the large-g
 *   limit of 1/(g m_g) (Definition 1, Theorem 2). Orthogonal rows make
 *   ||S^T z||^2 = g: the sketch's error is (1/(g m_g^2) - 1) ||r||^2
 *   (about pi/2 - 1) instead of the Gaussian sketch's (pi/2 - 1/g) ||r||^2.
 *   Row: the (b-1)-bit turbo row (every group's block, in group order), then
 *   per group, in group order: [fp16 gamma][g/8 bytes of z, bit i set for
 *   z_i = +1, least significant bit first]. Bytes per group: 4 + g*b/8.
 *   A zero group stores gamma = 0 and every z bit 0.
 *   S for group size g: drawn exactly as the dense rotation (core/tables.c,
 *   haar_orthogonal) from splitmix64 seeded with seed ^ (g * TKV_QJL_SEED_MUL).
 *
 * Outlier-split types (turbo3o, turbo4o; after TurboQuant, arXiv 2504.19874,
 *   whose 2.5- and 3.5-bit settings give outlier channels more bits): the
 *   n_o = ceil(head_dim / 32) values of largest |x_i| are stored as they are
 *   (fp16) and the rest as the b-bit turbo row above:
 *     outliers: the n_o largest |x_i|, ties to the lower index
 *               (tkv_outlier_select), listed in ascending index order;
 *     stage 1:  the turbo row (any rotation and scale mode) of x with the
 *               outlier positions set to 0;
 *     dequantized: the turbo row's values, rotated back, plus each stored
 *               outlier at its position (the turbo row holds only a small
 *               error there, from the rest's rotation).
 *   Row: the turbo row (every group's block, in group order), then n_o
 *   indices (one byte each when head_dim <= 256, else two, little endian),
 *   then n_o fp16 values in the same order. Bytes: turbo row + n_o (ib + 2).
 *   Scores take <R q, y_hat> + sum_o q[i_o] x_o; values accumulate the turbo
 *   part rotated and the outliers unrotated.
 *
 * Rotor rotation (TKV_ROTATION_ROTOR; RotorQuant): the group's coordinates
 *   in chunks of 3, from the first, each the vector part of a Cl(3,0)
 *   multivector rotated by its own rotor, y = R x R~ (the rotation by the
 *   unit quaternion R = w + x e23 + y e31 + z e12); a last chunk of 2
 *   coordinates is rotated in its plane by a Cl(2,0) rotor, a last single
 *   coordinate is left as is. The rotors of group size g are drawn from
 *   splitmix64 seeded with seed ^ (g * TKV_ROTOR_SEED_MUL): per 3-chunk
 *   four normals (Box-Muller as the dense rotation's, core/tables.c)
 *   normalized to (w, x, y, z); for a 2-chunk one pair of outputs whose
 *   first gives the angle 2 pi ((z1 >> 11) 2^-53). Stored as 3 x 3
 *   row-major matrices (struct tkv_math.rotor). Not part of tables_id.
 *
 * q8_0: blocks of 32 values along the row (the last block is shorter when
 *   head_dim is not a multiple of 32): [fp16 d][int8 q[n]], d = max|x|/127,
 *   q = roundf(x * (1/d)) with d in fp32 before it is rounded to fp16 (the
 *   llama.cpp convention). Not rotated.
 * f16: IEEE binary16 per value, round to nearest even, clamped to +-65504.
 * f32: IEEE binary32 per value.
 *
 * Non-finite input values (NaN, +-Inf) are stored as 0 in every type; only
 * the affected values of the affected row change, never other rows.
 */
#ifndef TURBOKV_FORMAT_H
#define TURBOKV_FORMAT_H

#include <stddef.h>
#include <stdint.h>

#include "turbokv_scalar.h" /* TKV_FP16_MAX, TKV_Q8_0_BLOCK, TKV_OUTLIER_EVERY, the scalar rules */

/* Storage types. Values never change; new types are appended. */
enum tkv_type {
    TKV_TYPE_F32 = 0,
    TKV_TYPE_F16 = 1,
    TKV_TYPE_Q8_0 = 2,
    TKV_TYPE_TURBO2 = 3,
    TKV_TYPE_TURBO3 = 4,
    TKV_TYPE_TURBO4 = 5,
    TKV_TYPE_TURBO3_QJL = 6, /* 2-bit turbo + 1-bit QJL residual: keys only */
    TKV_TYPE_TURBO4_QJL = 7, /* 3-bit turbo + 1-bit QJL residual: keys only */
    /* format revision 1: devices declare them with TKV_CAP_FORMAT_R1 (turbokv_caps.h) */
    TKV_TYPE_TURBO3_OUT = 8, /* 3-bit turbo + one fp16 outlier per 32 values */
    TKV_TYPE_TURBO4_OUT = 9, /* 4-bit turbo + one fp16 outlier per 32 values */
    TKV_TYPE_COUNT
};

/* How a turbo group is rotated before quantization. 0 is never a rotation:
 * in struct tkv_cache_params it means "as configured". */
enum tkv_rotation {
    TKV_ROTATION_WHT = 1,   /* randomized Walsh-Hadamard: D2 H D1 / sqrt(g) */
    TKV_ROTATION_DENSE = 2, /* seeded dense orthogonal g x g matrix */
    TKV_ROTATION_NONE = 3,  /* identity (for comparison only) */
    TKV_ROTATION_ROTOR = 4, /* Cl(3,0) rotor per 3 coordinates (RotorQuant; format revision 1) */
    TKV_ROTATION_COUNT /* one past the last */
};
/* The first rotation of format revision 1 (turbokv_caps.h, TKV_CAP_FORMAT_R1). */
#define TKV_ROTATION_FIRST_R1 4u

/* What the fp16 scale of a turbo group holds. 0 means "as configured". */
enum tkv_scale_mode {
    TKV_SCALE_NORM = 1,           /* s = ||x|| */
    TKV_SCALE_NORM_CORRECTED = 2, /* s = ||x|| / ||c[idx]||, so ||x_hat|| = ||x|| */
    TKV_SCALE_COUNT /* one past the last */
};

/* Group rules. Head dims must be multiples of TKV_GROUP_MIN up to
 * TKV_HEAD_DIM_MAX. Group sizes are the powers of two 8..128. */
#define TKV_GROUP_MIN 8u
#define TKV_GROUP_MAX 128u
#define TKV_N_GROUP_SIZES 5u /* 8, 16, 32, 64, 128 */
#define TKV_HEAD_DIM_MAX 1024u
#define TKV_MAX_GROUPS 16u
#define TKV_TURBO_BITS_MIN 2u
#define TKV_TURBO_BITS_MAX 4u
#define TKV_N_CODEBOOK_BITS 3u /* b = 2, 3, 4 */

/* Documented default seed of the sign vectors and dense rotations. The sign
 * vectors for group size g are drawn from splitmix64 seeded with
 * seed ^ (g * 0x9E3779B97F4A7C15): the first g outputs give D1, the next g
 * give D2; an output with its top bit set means -1, else +1. */
#define TKV_ROTATION_SEED_DEFAULT 0x7475726b6f6b7631ull /* "turbokv1" */
/* Stream constant of the QJL sketches (see "QJL key types" above). */
#define TKV_QJL_SEED_MUL 0xA0761D6478BD642Full
/* Stream constant of the rotor rotation (see "Rotor rotation" above). */
#define TKV_ROTOR_SEED_MUL 0x8EBC6AF09C88C6E3ull

/* Outlier-split types: at most this many outliers a row (TKV_OUTLIER_EVERY:
 * turbokv_scalar.h). */
#define TKV_OUTLIER_MAX (TKV_HEAD_DIM_MAX / TKV_OUTLIER_EVERY)
/* The first type of format revision 1 (see turbokv_caps.h, TKV_CAP_FORMAT_R1). */
#define TKV_TYPE_FIRST_R1 TKV_TYPE_TURBO3_OUT

/* The format's rules as inline C. Binding generators that read declarations
 * only (cffi) define TKV_CDEF and see none of them. */
#ifndef TKV_CDEF

/* Index of a group size in struct tkv_math tables: 8 -> 0 ... 128 -> 4;
 * -1 if g is not a supported group size. */
static inline int tkv_group_index(uint32_t g)
{
    int i = 0;
    for (uint32_t s = TKV_GROUP_MIN; s <= TKV_GROUP_MAX; s <<= 1, i++)
        if (s == g)
            return i;
    return -1;
}

/* Chunks of a rotor group: ceil(g / 3). */
static inline uint32_t tkv_rotor_chunks(uint32_t g) { return (g + 2u) / 3u; }

/* 1 if head_dim is storable. */
static inline int tkv_head_dim_supported(uint32_t head_dim)
{
    return head_dim >= TKV_GROUP_MIN && head_dim <= TKV_HEAD_DIM_MAX &&
           head_dim % TKV_GROUP_MIN == 0;
}

/* Splits head_dim into power-of-two groups: as many 128-groups as fit, then
 * the binary digits of the rest, largest first (80 = 64 + 16, 96 = 64 + 32,
 * 192 = 128 + 64, 576 = 4 x 128 + 64). No padding: every stored value is a
 * real one. Returns the number of groups, 0 for an unsupported head_dim. */
static inline uint32_t tkv_group_split(uint32_t head_dim, uint32_t groups[TKV_MAX_GROUPS])
{
    if (!tkv_head_dim_supported(head_dim))
        return 0;
    uint32_t n = 0, rest = head_dim;
    while (rest >= TKV_GROUP_MAX) {
        groups[n++] = TKV_GROUP_MAX;
        rest -= TKV_GROUP_MAX;
    }
    for (uint32_t g = TKV_GROUP_MAX >> 1; g >= TKV_GROUP_MIN; g >>= 1)
        if (rest & g)
            groups[n++] = g;
    return n;
}

/* Bits per codebook index of a turbo type (for a QJL type: of its
 * TurboQuant_mse stage, one less than the type's bits), 0 for the others. */
static inline uint32_t tkv_type_bits(uint32_t type)
{
    switch (type) {
    case TKV_TYPE_TURBO2: return 2;
    case TKV_TYPE_TURBO3: return 3;
    case TKV_TYPE_TURBO4: return 4;
    case TKV_TYPE_TURBO3_QJL: return 2;
    case TKV_TYPE_TURBO4_QJL: return 3;
    case TKV_TYPE_TURBO3_OUT: return 3;
    case TKV_TYPE_TURBO4_OUT: return 4;
    default: return 0;
    }
}

/* Turbo types, QJL ones included: rotated rows quantized with a codebook. */
static inline int tkv_type_is_turbo(uint32_t type) { return tkv_type_bits(type) != 0; }

/* 1 for the QJL key types (a turbo row plus a 1-bit residual sketch). */
static inline int tkv_type_is_qjl(uint32_t type)
{
    return type == TKV_TYPE_TURBO3_QJL || type == TKV_TYPE_TURBO4_QJL;
}

/* 1 for the outlier-split types (a turbo row plus fp16 outliers). */
static inline int tkv_type_is_outlier(uint32_t type)
{
    return type == TKV_TYPE_TURBO3_OUT || type == TKV_TYPE_TURBO4_OUT;
}

/* The outliers of a row of finite values: the tkv_outlier_count(head_dim)
 * indices of largest |x_i| (ties to the lower index), ascending, into idx.
 * Every backend stores exactly these. */
static inline void tkv_outlier_select(const float *x, uint32_t head_dim, uint32_t *idx)
{
    uint32_t n = tkv_outlier_count(head_dim), have = 0;
    uint32_t mag[TKV_OUTLIER_MAX]; /* |x| of the listed values, as tkv_abs_bits */
    for (uint32_t i = 0; i < head_dim; i++) {
        const uint32_t a = tkv_abs_bits(x[i]);
        /* the list is full and i would go after its last: the common case */
        if (have == n && tkv_outlier_before(mag[n - 1], idx[n - 1], a, i))
            continue;
        /* insert i into the list kept in the outliers' order (turbokv_scalar.h) */
        uint32_t at = have;
        while (at > 0 && !tkv_outlier_before(mag[at - 1], idx[at - 1], a, i))
            at--;
        if (at >= n)
            continue;
        for (uint32_t j = (have < n ? have : n - 1); j > at; j--) {
            idx[j] = idx[j - 1];
            mag[j] = mag[j - 1];
        }
        idx[at] = i;
        mag[at] = a;
        if (have < n)
            have++;
    }
    for (uint32_t i = 1; i < n; i++) /* ascending index order */
        for (uint32_t j = i; j > 0 && idx[j - 1] > idx[j]; j--) {
            uint32_t t = idx[j];
            idx[j] = idx[j - 1];
            idx[j - 1] = t;
        }
}

/* Bytes of one turbo group block: fp16 scale + packed indices. */
static inline uint32_t tkv_turbo_group_bytes(uint32_t g, uint32_t bits) { return 2u + g * bits / 8u; }

/* Bytes of one QJL residual block: fp16 gamma + g sign bits. */
static inline uint32_t tkv_qjl_residual_bytes(uint32_t g) { return 2u + g / 8u; }

/* Bytes of one stored row; 0 for an unknown type or unsupported head_dim. */
static inline uint32_t tkv_row_bytes(uint32_t type, uint32_t head_dim)
{
    uint32_t groups[TKV_MAX_GROUPS] = { 0 }, n, bytes = 0;
    if (!tkv_head_dim_supported(head_dim))
        return 0;
    switch (type) {
    case TKV_TYPE_F32: return 4u * head_dim;
    case TKV_TYPE_F16: return 2u * head_dim;
    case TKV_TYPE_Q8_0:
        return head_dim + 2u * ((head_dim + TKV_Q8_0_BLOCK - 1) / TKV_Q8_0_BLOCK);
    case TKV_TYPE_TURBO2:
    case TKV_TYPE_TURBO3:
    case TKV_TYPE_TURBO4:
    case TKV_TYPE_TURBO3_QJL:
    case TKV_TYPE_TURBO4_QJL:
    case TKV_TYPE_TURBO3_OUT:
    case TKV_TYPE_TURBO4_OUT:
        n = tkv_group_split(head_dim, groups);
        for (uint32_t i = 0; i < n; i++)
            bytes += tkv_turbo_group_bytes(groups[i], tkv_type_bits(type)) +
                     (tkv_type_is_qjl(type) ? tkv_qjl_residual_bytes(groups[i]) : 0u);
        if (tkv_type_is_outlier(type))
            bytes += tkv_outlier_count(head_dim) * (tkv_outlier_index_bytes(head_dim) + 2u);
        return bytes;
    default: return 0;
    }
}

/* Bit stream access for packed indices (LSB first; the rule:
 * turbokv_scalar.h, tkv_index_bit). bits is 1 to 8. */
static inline uint32_t tkv_unpack_index(const uint8_t *p, uint32_t i, uint32_t bits)
{
    uint32_t bit = tkv_index_bit(i, bits), byte = bit >> 3, shift = bit & 7u;
    uint32_t w = p[byte];
    if (shift + bits > 8u)
        w |= (uint32_t)p[byte + 1] << 8;
    return tkv_bits_at(w, shift, bits);
}

/* Packs n indices into ceil(n*bits/8) bytes (overwrites them). */
static inline void tkv_pack_indices(uint8_t *p, const uint8_t *idx, uint32_t n, uint32_t bits)
{
    uint32_t acc = 0, o = 0; /* acc: the stream's bits from byte o on */
    for (uint32_t i = 0; i < n; i++) {
        acc |= (uint32_t)idx[i] << (tkv_index_bit(i, bits) - 8u * o);
        while (tkv_index_bit(i + 1, bits) >= 8u * (o + 1)) {
            p[o++] = (uint8_t)acc;
            acc >>= 8;
        }
    }
    if (tkv_index_bit(n, bits) > 8u * o)
        p[o] = (uint8_t)acc;
}

#endif /* TKV_CDEF */

#endif
