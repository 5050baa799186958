/* SPDX-License-Identifier: MIT */
/*
 * Outlier-split types (turbokv_format.h, "Outlier-split types"; after
 * TurboQuant, arXiv 2504.19874, whose 2.5- and 3.5-bit settings give
 * outlier channels more bits): the n_o = ceil(head_dim / 32) values of
 * largest magnitude are stored as fp16 beside a turbo row of the others.
 * Keys after RoPE and values carry a few channels much larger than the
 * rest; a rotation spreads such a channel over its whole group, where the
 * codebook's error scales with the group's norm. Taken out, they cost one
 * index and one fp16 each, and the turbo row holds the rest's energy only.
 *
 * The turbo kernels (rows.c) write and read the turbo part; this file adds
 * the outliers, which live in the unrotated domain: a score adds
 * sum_o q[i_o] x_o (prepare_query puts q beside R q), and an accumulation
 * adds w x_o into a second, unrotated half of acc (2 head_dim floats: the
 * rotated turbo part, then the outliers), which the callers add after
 * rotating the first half back (cpu_outlier_finish).
 */
#include <string.h>

#include "cpu.h"

void cpu_outlier_layout(struct cpu_layout *l)
{
    const struct cpu_group *last = &l->groups[l->n_groups - 1];
    l->outlier_offset = last->byte_offset + tkv_turbo_group_bytes(last->size, l->bits);
    l->n_outliers = tkv_outlier_count(l->head_dim);
    l->outlier_index_bytes = tkv_outlier_index_bytes(l->head_dim);
}

static inline uint32_t outlier_index(const struct cpu_layout *l, const uint8_t *row, uint32_t o)
{
    const uint8_t *p = row + l->outlier_offset + o * l->outlier_index_bytes;
    return l->outlier_index_bytes == 1 ? p[0] : load_u16(p);
}

static inline float outlier_value(const struct cpu_layout *l, const uint8_t *row, uint32_t o)
{
    const uint8_t *p = row + l->outlier_offset + l->n_outliers * l->outlier_index_bytes + 2u * o;
    return tkv_fp16_to_float(load_u16(p));
}

void cpu_outlier_split(const struct cpu_layout *l, const float *x, uint8_t *row, float *rest)
{
    uint32_t idx[TKV_OUTLIER_MAX];
    const uint32_t n = l->n_outliers, ib = l->outlier_index_bytes;
    tkv_outlier_select(x, l->head_dim, idx);
    memcpy(rest, x, sizeof *x * l->head_dim);
    uint8_t *index = row + l->outlier_offset, *value = index + n * ib;
    for (uint32_t o = 0; o < n; o++) {
        if (ib == 1)
            index[o] = (uint8_t)idx[o];
        else
            store_u16(index + 2u * o, (uint16_t)idx[o]);
        store_u16(value + 2u * o, tkv_fp16_saturated(x[idx[o]]));
        rest[idx[o]] = 0.0f;
    }
}

void cpu_outlier_encode(const struct cpu_layout *l, const float *x, uint8_t *row)
{
    float rest[TKV_HEAD_DIM_MAX];
    cpu_outlier_split(l, x, row, rest);
    cpu_turbo_encode(l, rest, row);
}

/* work = [R q | q]. */
void cpu_outlier_prepare_query(const struct cpu_layout *l, const float *q, float *work)
{
    cpu_turbo_prepare_query(l, q, work);
    memcpy(work + l->head_dim, q, sizeof *q * l->head_dim);
}

float cpu_outlier_dot(const struct cpu_layout *l, const uint8_t *row, const float *q)
{
    float sum = cpu_turbo_dot(l, row, q);
    const float *plain = q + l->head_dim;
    for (uint32_t o = 0; o < l->n_outliers; o++)
        sum += plain[outlier_index(l, row, o)] * outlier_value(l, row, o);
    return sum;
}

/* acc[0, head_dim): the turbo part, rotated; acc[head_dim, 2 head_dim): the outliers. */
void cpu_outlier_axpy(const struct cpu_layout *l, const uint8_t *row, float w, float *acc)
{
    cpu_turbo_axpy(l, row, w, acc);
    float *plain = acc + l->head_dim;
    for (uint32_t o = 0; o < l->n_outliers; o++)
        plain[outlier_index(l, row, o)] += w * outlier_value(l, row, o);
}

/* out[head_dim] = R^T acc[0, head_dim) * factor + acc[head_dim, 2 head_dim) * factor,
 * rotating acc's first half in place. */
void cpu_outlier_finish(const struct cpu_layout *l, float *acc, float factor, float *out)
{
    cpu_rotate_row(l, CPU_UNROTATE, acc);
    for (uint32_t d = 0; d < l->head_dim; d++)
        out[d] = acc[d] * factor + acc[l->head_dim + d] * factor;
}
