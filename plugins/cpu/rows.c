/* SPDX-License-Identifier: MIT */
/*
 * Stored rows: the layout of a struct tkv_row_format and the reference
 * kernels that write (encode) and read (dot, axpy) one row of each type,
 * straight from its packed bytes. Byte layouts follow turbokv_format.h; all
 * multi-byte values are little endian whatever the host.
 */
#include <math.h>
#include <string.h>

#include "cpu.h"

/* ---- little-endian scalars (load_u16 and friends: cpu.h) ----------------- */

static inline float load_f32(const uint8_t *row, uint32_t i)
{
    const uint8_t *p = row + 4u * i;
    uint32_t u = (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
    float f;
    memcpy(&f, &u, sizeof f);
    return f;
}

static inline float load_f16(const uint8_t *row, uint32_t i)
{
    return tkv_fp16_to_float(load_u16(row + 2u * i));
}

/* ---- f32 and f16: one value per element --------------------------------- */

static void f32_encode(const struct cpu_layout *l, const float *x, uint8_t *row)
{
    for (uint32_t i = 0; i < l->head_dim; i++) {
        uint32_t u;
        memcpy(&u, &x[i], sizeof u);
        for (int b = 0; b < 4; b++)
            row[4u * i + b] = (uint8_t)(u >> (8 * b));
    }
}

static void f16_encode(const struct cpu_layout *l, const float *x, uint8_t *row)
{
    for (uint32_t i = 0; i < l->head_dim; i++)
        store_u16(row + 2u * i, tkv_fp16_saturated(x[i]));
}

/* dot and axpy of the element-wise types differ only in the load. */
#define CPU_PLAIN_KERNELS(T)                                                                 \
    static float T##_dot(const struct cpu_layout *l, const uint8_t *row, const float *q)     \
    {                                                                                        \
        float sum = 0.0f;                                                                    \
        for (uint32_t i = 0; i < l->head_dim; i++)                                           \
            sum += load_##T(row, i) * q[i];                                                  \
        return sum;                                                                          \
    }                                                                                        \
    static void T##_axpy(const struct cpu_layout *l, const uint8_t *row, float w, float *acc) \
    {                                                                                        \
        for (uint32_t i = 0; i < l->head_dim; i++)                                           \
            acc[i] += w * load_##T(row, i);                                                  \
    }

CPU_PLAIN_KERNELS(f32)
CPU_PLAIN_KERNELS(f16)

/* ---- q8_0: blocks of 32 values, [fp16 d][int8 q[n]] --------------------- */

#define Q8_BLOCK_BYTES (2u + TKV_Q8_0_BLOCK)

/* llama.cpp's quantize_row_q8_0_ref convention: d = amax / 127 in float,
 * q = roundf(x * (1/d)) (round half away from zero) with the reciprocal of
 * the float d, not of its fp16 rounding; d is then stored as fp16. The one
 * addition: when 1/d would overflow (d below FLT_MIN, far under the
 * smallest half) the block stores q = 0, as its fp16 d is 0 anyway. The
 * rules: turbokv_scalar.h. */
static void q8_0_encode(const struct cpu_layout *l, const float *x, uint8_t *row)
{
    for (uint32_t first = 0; first < l->head_dim; first += TKV_Q8_0_BLOCK) {
        uint32_t n = tkv_q8_0_block_len(l->head_dim, first);
        uint8_t *blk = row + first / TKV_Q8_0_BLOCK * Q8_BLOCK_BYTES;
        float amax = 0.0f;
        for (uint32_t i = 0; i < n; i++)
            amax = fmaxf(amax, fabsf(x[first + i]));
        float d = amax / TKV_Q8_0_DIVISOR, id = tkv_q8_0_invertible(d) ? 1.0f / d : 0.0f;
        store_u16(blk, tkv_fp16_saturated(d));
        for (uint32_t i = 0; i < n; i++)
            blk[2 + i] = (uint8_t)(int8_t)tkv_round_half_away(tkv_q8_0_product(x[first + i], id));
    }
}

static float q8_0_dot(const struct cpu_layout *l, const uint8_t *row, const float *q)
{
    float sum = 0.0f;
    for (uint32_t first = 0; first < l->head_dim; first += TKV_Q8_0_BLOCK) {
        const uint8_t *blk = row + first / TKV_Q8_0_BLOCK * Q8_BLOCK_BYTES;
        uint32_t n = tkv_q8_0_block_len(l->head_dim, first);
        float block_sum = 0.0f;
        for (uint32_t i = 0; i < n; i++)
            block_sum += (float)(int8_t)blk[2 + i] * q[first + i];
        sum += tkv_fp16_to_float(load_u16(blk)) * block_sum;
    }
    return sum;
}

static void q8_0_axpy(const struct cpu_layout *l, const uint8_t *row, float w, float *acc)
{
    for (uint32_t first = 0; first < l->head_dim; first += TKV_Q8_0_BLOCK) {
        const uint8_t *blk = row + first / TKV_Q8_0_BLOCK * Q8_BLOCK_BYTES;
        uint32_t n = tkv_q8_0_block_len(l->head_dim, first);
        float wd = w * tkv_fp16_to_float(load_u16(blk));
        for (uint32_t i = 0; i < n; i++)
            acc[first + i] += wd * (float)(int8_t)blk[2 + i];
    }
}

/* ---- turbo: per group [fp16 scale][packed indices] ----------------------- */

/* Nearest centroid by the midpoint boundaries; a value equal to a boundary
 * goes to the centroid above it, a zero y on a boundary of 0 by its sign
 * (turbokv_scalar.h, tkv_centroid_step). */
static inline uint8_t nearest_centroid(const struct tkv_codebook *cb, float y)
{
    uint32_t idx = 0;
    for (uint32_t k = 0; k + 1 < cb->n_levels; k++)
        idx += tkv_centroid_step(y, cb->boundaries[k]);
    return (uint8_t)idx;
}

/* TurboQuant_mse (paper, Algorithm 1) applied to one group, plus the norm
 * the paper factors out for non-unit vectors (section 1.2): the scale is
 * ||x|| or ||x|| / ||c[idx]||. The sums of squares are accumulated in
 * double as 8 running sums added in cpu_sum8's order, the norm rounded to
 * float once, so every backend and every SIMD width can reproduce them. */
static void turbo_encode_group(const struct cpu_layout *l, const struct cpu_group *grp,
                               const float *x, uint8_t *blk)
{
    const struct tkv_codebook *cb = grp->codebook;
    uint8_t idx[TKV_GROUP_MAX] = { 0 };
    float y[TKV_GROUP_MAX], scale = 0.0f;
    double sq[TKV_NORM_LANES] = { 0 };
    for (uint32_t i = 0; i < grp->size; i++)
        sq[i % TKV_NORM_LANES] += (double)x[i] * x[i];
    float norm = (float)sqrt(cpu_sum8(sq));
    if (norm > 0.0f) {
        for (uint32_t i = 0; i < grp->size; i++)
            y[i] = x[i] / norm;
        cpu_rotate_group(l->rotation, grp, CPU_ROTATE, y);
        double csq[TKV_NORM_LANES] = { 0 };
        for (uint32_t i = 0; i < grp->size; i++) {
            idx[i] = nearest_centroid(cb, y[i]);
            csq[i % TKV_NORM_LANES] += cb->centroid_sq[idx[i]];
        }
        double csq_sum = cpu_sum8(csq);
        scale = norm;
        if (l->scale_mode == TKV_SCALE_NORM_CORRECTED && csq_sum > 0.0)
            scale = (float)(norm / sqrt(csq_sum));
    }
    store_u16(blk, tkv_fp16_saturated(scale));
    tkv_pack_indices(blk + 2, idx, grp->size, l->bits);
}

void cpu_turbo_encode(const struct cpu_layout *l, const float *x, uint8_t *row)
{
    for (uint32_t g = 0; g < l->n_groups; g++) {
        const struct cpu_group *grp = &l->groups[g];
        turbo_encode_group(l, grp, x + grp->first, row + grp->byte_offset);
    }
}

/* Indices i .. i + 7 of a group (i a multiple of 8): they fill exactly
 * `bits` bytes of the LSB-first stream (turbokv_scalar.h), read at once. */
static inline void unpack8(const uint8_t *indices, uint32_t i, uint32_t bits, uint32_t idx[8])
{
    const uint8_t *p = indices + i / 8u * bits;
    uint32_t w = p[0] | (uint32_t)p[1] << 8;
    if (bits > 2)
        w |= (uint32_t)p[2] << 16;
    if (bits > 3)
        w |= (uint32_t)p[3] << 24;
    for (uint32_t k = 0; k < 8; k++)
        idx[k] = tkv_bits_at(w, tkv_index_bit(k, bits), bits);
}

/* sum_g s_g * sum_i c[idx_i] q_i: q must already be rotated (<R q, y_hat>). */
float cpu_turbo_dot(const struct cpu_layout *l, const uint8_t *row, const float *q)
{
    float sum = 0.0f;
    for (uint32_t g = 0; g < l->n_groups; g++) {
        const struct cpu_group *grp = &l->groups[g];
        const uint8_t *blk = row + grp->byte_offset;
        const float *c = grp->codebook->centroids, *qg = q + grp->first;
        float group_sum = 0.0f;
        for (uint32_t i = 0; i < grp->size; i += 8) {
            uint32_t idx[8];
            unpack8(blk + 2, i, l->bits, idx);
            for (uint32_t k = 0; k < 8; k++)
                group_sum += c[idx[k]] * qg[i + k];
        }
        sum += tkv_fp16_to_float(load_u16(blk)) * group_sum;
    }
    return sum;
}

/* acc += w * s_g * c[idx], in the rotated domain. */
void cpu_turbo_axpy(const struct cpu_layout *l, const uint8_t *row, float w, float *acc)
{
    for (uint32_t g = 0; g < l->n_groups; g++) {
        const struct cpu_group *grp = &l->groups[g];
        const uint8_t *blk = row + grp->byte_offset;
        const float *c = grp->codebook->centroids;
        float ws = w * tkv_fp16_to_float(load_u16(blk));
        float *ag = acc + grp->first;
        for (uint32_t i = 0; i < grp->size; i += 8) {
            uint32_t idx[8];
            unpack8(blk + 2, i, l->bits, idx);
            for (uint32_t k = 0; k < 8; k++)
                ag[i + k] += ws * c[idx[k]];
        }
    }
}

/* The query of a turbo dot is rotated once per output row (<R q, y_hat>). */
void cpu_turbo_prepare_query(const struct cpu_layout *l, const float *q, float *work)
{
    memcpy(work, q, sizeof *q * l->head_dim);
    cpu_rotate_row(l, CPU_ROTATE, work);
}

/* ---- dispatch ------------------------------------------------------------ */

#define CPU_KERNELS(T) { .encode = T##_encode, .dot = T##_dot, .axpy = T##_axpy }
#define CPU_QUERY_KERNELS(T)                                                          \
    { .encode = T##_encode, .dot = T##_dot, .axpy = T##_axpy,                       \
      .prepare_query = T##_prepare_query }

static const struct cpu_row_kernels reference_kernels[TKV_TYPE_COUNT] = {
    [TKV_TYPE_F32] = CPU_KERNELS(f32),
    [TKV_TYPE_F16] = CPU_KERNELS(f16),
    [TKV_TYPE_Q8_0] = CPU_KERNELS(q8_0),
    [TKV_TYPE_TURBO2] = CPU_QUERY_KERNELS(cpu_turbo),
    [TKV_TYPE_TURBO3] = CPU_QUERY_KERNELS(cpu_turbo),
    [TKV_TYPE_TURBO4] = CPU_QUERY_KERNELS(cpu_turbo),
    [TKV_TYPE_TURBO3_QJL] = CPU_QUERY_KERNELS(cpu_qjl),
    [TKV_TYPE_TURBO4_QJL] = CPU_QUERY_KERNELS(cpu_qjl),
    [TKV_TYPE_TURBO3_OUT] = CPU_QUERY_KERNELS(cpu_outlier),
    [TKV_TYPE_TURBO4_OUT] = CPU_QUERY_KERNELS(cpu_outlier),
};

void cpu_layout_init(const struct cpu_device *dev, const struct tkv_row_format *fmt,
                     struct cpu_layout *l)
{
    *l = (struct cpu_layout){
        .type = fmt->type,
        .head_dim = fmt->head_dim,
        .rotation = fmt->rotation,
        .scale_mode = fmt->scale_mode,
        .bits = tkv_type_bits(fmt->type),
        .row_bytes = tkv_row_bytes(fmt->type, fmt->head_dim),
        .kernels = &reference_kernels[fmt->type],
    };
    cpu_simd_select(dev, l);
    if (!l->bits)
        return;
    uint32_t sizes[TKV_MAX_GROUPS], first = 0, byte_offset = 0;
    l->n_groups = tkv_group_split(fmt->head_dim, sizes);
    for (uint32_t g = 0; g < l->n_groups; g++) {
        const struct tkv_group_tables *t = &dev->math->groups[tkv_group_index(sizes[g])];
        l->groups[g] = (struct cpu_group){
            .size = sizes[g],
            .first = first,
            .byte_offset = byte_offset,
            .inv_sqrt = (float)(1.0 / sqrt((double)sizes[g])),
            .tables = t,
            .codebook = &t->codebook[l->bits - TKV_TURBO_BITS_MIN],
            .lut = &dev->luts[tkv_group_index(sizes[g])][l->bits - TKV_TURBO_BITS_MIN],
            .rotor = dev->math->rotor[tkv_group_index(sizes[g])],
        };
        first += sizes[g];
        byte_offset += tkv_turbo_group_bytes(sizes[g], l->bits);
    }
    if (tkv_type_is_qjl(fmt->type))
        cpu_qjl_layout(dev, l);
    if (tkv_type_is_outlier(fmt->type))
        cpu_outlier_layout(l);
}
