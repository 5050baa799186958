/* SPDX-License-Identifier: MIT */
/*
 * QJL key types (turbokv_format.h, "QJL key types"; TurboQuant, arXiv
 * 2504.19874, Algorithm 2 "TurboQuant_prod"): a (b-1)-bit turbo row followed
 * by a 1-bit Quantized Johnson-Lindenstrauss sketch of its residual, which
 * makes <q, k_hat> an unbiased estimate of <q, k>. The turbo kernels (rows.c)
 * write and read the turbo part; this file adds the residual blocks.
 *
 * Per group, in the rotated domain: r = n y - s_hat c[idx], gamma = ||r||,
 * z = sign(S r); the residual reads back as scale gamma S^T z, whose
 * expectation over S (Haar orthogonal, scale = 1/(g E|t|)) is r (paper,
 * Definition 1, Theorem 2; the tables come from core/tables.c).
 * Scoring never forms S^T z: <R q, S^T z> = <S R q, z>, so the query is
 * projected once per output row (prepare_query) and each cached row costs g
 * sign-selected additions on top of its turbo dot.
 */
#include <string.h>

#include "cpu.h"

/* z_i of a residual block: +1 when its bit is set, else -1. */
static inline int qjl_sign_set(const uint8_t *res, uint32_t i)
{
    return (res[2 + i / 8u] >> (i % 8u)) & 1u;
}

/* <z, p> over one group, one byte of signs at a time into eight partial
 * sums: independent lanes the compiler can keep in vector registers. */
static float signed_sum(const uint8_t *res, const float *p, uint32_t g)
{
    float lane[8] = { 0.0f };
    for (uint32_t b = 0; b < g / 8u; b++, p += 8)
        for (uint32_t k = 0; k < 8; k++)
            lane[k] += (res[2 + b] >> k & 1u) ? p[k] : -p[k];
    return ((lane[0] + lane[1]) + (lane[2] + lane[3])) + ((lane[4] + lane[5]) + (lane[6] + lane[7]));
}

void cpu_qjl_layout(const struct cpu_device *dev, struct cpu_layout *l)
{
    const struct cpu_group *last = &l->groups[l->n_groups - 1];
    uint32_t offset = last->byte_offset + tkv_turbo_group_bytes(last->size, l->bits);
    for (uint32_t g = 0; g < l->n_groups; g++) {
        struct cpu_group *grp = &l->groups[g];
        grp->qjl = &dev->math->qjl[tkv_group_index(grp->size)]; /* present: open checked */
        grp->residual_offset = offset;
        offset += tkv_qjl_residual_bytes(grp->size);
    }
}

/* The residual block of one group whose turbo block is already stored. The
 * residual is taken against the stored (fp16) scale, so the estimate is
 * unbiased for what the row actually holds; the projection is summed in
 * double (four partial sums) so that backends agree on its sign except at
 * near-exact zeros. */
static void encode_residual(const struct cpu_layout *l, const struct cpu_group *grp, const float *x,
                            uint8_t *row)
{
    const uint8_t *blk = row + grp->byte_offset;
    const float *c = grp->codebook->centroids;
    uint8_t *res = row + grp->residual_offset;
    float r[TKV_GROUP_MAX];
    double sq = 0.0, gamma_sq = 0.0;

    memset(res, 0, tkv_qjl_residual_bytes(grp->size));
    for (uint32_t i = 0; i < grp->size; i++)
        sq += (double)x[i] * x[i];
    float norm = (float)sqrt(sq), s_hat = tkv_fp16_to_float(load_u16(blk));
    if (norm == 0.0f)
        return;
    /* R x as the turbo stage computed it: n R(x / n) */
    for (uint32_t i = 0; i < grp->size; i++)
        r[i] = x[i] / norm;
    cpu_rotate_group(l->rotation, grp, CPU_ROTATE, r);
    for (uint32_t i = 0; i < grp->size; i++) {
        r[i] = norm * r[i] - s_hat * c[tkv_unpack_index(blk + 2, i, l->bits)];
        gamma_sq += (double)r[i] * r[i];
    }
    if (gamma_sq == 0.0)
        return;
    store_u16(res, tkv_fp16_saturated((float)sqrt(gamma_sq)));
    for (uint32_t i = 0; i < grp->size; i++) {
        const float *s = grp->qjl->rows + (size_t)i * grp->size;
        double lane[TKV_QJL_LANES] = { 0.0 };
        for (uint32_t j = 0; j < grp->size; j += TKV_QJL_LANES)
            for (uint32_t k = 0; k < TKV_QJL_LANES; k++)
                lane[k] += (double)s[j + k] * r[j + k];
        if (TKV_SUM4(lane[0], lane[1], lane[2], lane[3]) > 0.0)
            res[2 + i / 8u] |= (uint8_t)(1u << (i % 8u));
    }
}

void cpu_qjl_encode(const struct cpu_layout *l, const float *x, uint8_t *row)
{
    cpu_turbo_encode(l, x, row);
    for (uint32_t g = 0; g < l->n_groups; g++)
        encode_residual(l, &l->groups[g], x + l->groups[g].first, row);
}

/* work = [R q | S R q], each head_dim floats, S applied group by group. */
void cpu_qjl_prepare_query(const struct cpu_layout *l, const float *q, float *work)
{
    cpu_turbo_prepare_query(l, q, work);
    for (uint32_t g = 0; g < l->n_groups; g++) {
        const struct cpu_group *grp = &l->groups[g];
        const float *rq = work + grp->first;
        float *projected = work + l->head_dim + grp->first;
        for (uint32_t i = 0; i < grp->size; i++) {
            const float *s = grp->qjl->rows + (size_t)i * grp->size;
            float sum = 0.0f;
            for (uint32_t j = 0; j < grp->size; j++)
                sum += s[j] * rq[j];
            projected[i] = sum;
        }
    }
}

/* <R q, y_hat> = turbo dot + sum_g scale_g gamma_g <S R q, z_g>. */
float cpu_qjl_dot(const struct cpu_layout *l, const uint8_t *row, const float *q)
{
    float sum = cpu_turbo_dot(l, row, q);
    for (uint32_t g = 0; g < l->n_groups; g++) {
        const struct cpu_group *grp = &l->groups[g];
        const uint8_t *res = row + grp->residual_offset;
        float z_dot = signed_sum(res, q + l->head_dim + grp->first, grp->size);
        sum += grp->qjl->scale * tkv_fp16_to_float(load_u16(res)) * z_dot;
    }
    return sum;
}

/* acc += w y_hat: the turbo part, then w scale gamma S^T z row by row of S. That costs g^2 per group, which only dequantize pays: the core
 * stores keys, never values, in QJL types. */
void cpu_qjl_axpy(const struct cpu_layout *l, const uint8_t *row, float w, float *acc)
{
    cpu_turbo_axpy(l, row, w, acc);
    for (uint32_t g = 0; g < l->n_groups; g++) {
        const struct cpu_group *grp = &l->groups[g];
        const uint8_t *res = row + grp->residual_offset;
        float weight = w * grp->qjl->scale * tkv_fp16_to_float(load_u16(res));
        float *ag = acc + grp->first;
        if (weight == 0.0f)
            continue;
        for (uint32_t i = 0; i < grp->size; i++) {
            const float *s = grp->qjl->rows + (size_t)i * grp->size;
            float wz = qjl_sign_set(res, i) ? weight : -weight;
            for (uint32_t j = 0; j < grp->size; j++)
                ag[j] += wz * s[j];
        }
    }
}
