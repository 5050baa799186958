/* SPDX-License-Identifier: MIT */
/*
 * Fused decode attention on the stored cache (struct tkv_attention_args):
 * one pass over the visible rows per (sequence, query token, query head)
 * with an online softmax (running max m, running sum l; Milakov & Gimelshein
 * 2018, as in FlashAttention), reading K and V straight from their packed
 * bytes, a pool block at a time.
 *
 * Turbo K: x_j = scale * <R q, y_hat_j>; R is orthogonal, so this equals
 * <q, R^T y_hat_j> without rotating any cached row.
 * QJL K adds gamma_j sqrt(pi/2)/g <S R q, z_j>, S R q also computed once.
 * Turbo V: sum_j p_j y_hat_j is accumulated in the rotated domain and R^T
 * applied once to the output row (R is linear).
 * Soft-capping (softcap > 0) maps each scaled score to softcap tanh(x /
 * softcap) before the softmax; the log-sum-exp of a row is m + log l.
 * Sparse V: a row whose weight exp(x_j - m) against the running max is below
 * the threshold still counts in l but its V row is neither read nor
 * accumulated; its share of the final output is then below the threshold.
 *
 * The core has checked the arguments (turbokv_plugin.h); this file is the
 * reference the ISA levels (attention_split.c) are measured against.
 */
#include <math.h>
#include <string.h>

#include "cpu.h"

struct attention_plan {
    struct cpu_layout k, v;
    uint32_t group_ratio; /* query heads per kv head (GQA) */
    float scale, softcap, threshold;
};

/* x = scale <q, k>, soft-capped when softcap > 0. */
static inline float logit(const struct attention_plan *p, float dot)
{
    float x = p->scale * dot;
    return p->softcap > 0.0f ? p->softcap * tanhf(x / p->softcap) : x;
}

/* The output row of one query: softmax(x) V over the rows [lo, hi) of kv
 * head kv. q_work (2 head_dim floats) and acc (head_dim) are scratch; q_work
 * receives the query as K's dot takes it (prepare_query: rotated for turbo
 * K, rotated and projected for QJL K). Writes the log-sum-exp into *lse
 * when lse is not NULL; returns the number of V rows skipped. */
static uint64_t attend_row(const struct attention_plan *p, const struct tkv_attention_args *a,
                           const uint32_t *blocks, uint32_t kv, uint32_t lo, uint32_t hi,
                           const float *q, float *q_work, float *acc, float *out, float *lse)
{
    const struct cpu_layout *kl = &p->k, *vl = &p->v;
    const struct cpu_rows kr = cpu_rows_of(&a->k, blocks, kv), vr = cpu_rows_of(&a->v, blocks, kv);
    const uint32_t hd = kl->head_dim, bt = kr.block_tokens;
    if (kl->kernels->prepare_query) {
        kl->kernels->prepare_query(kl, q, q_work);
        q = q_work;
    }
    const int split = tkv_type_is_outlier(vl->type); /* acc holds 2 head_dim floats */
    memset(acc, 0, sizeof *acc * hd * (split ? 2u : 1u));
    float m = -INFINITY, l = 0.0f;
    uint64_t skipped = 0;
    for (uint32_t j = lo; j < hi;) {
        /* rows j .. j + n - 1 lie in one pool block, one after the other */
        uint32_t r = j % bt, n = bt - r < hi - j ? bt - r : hi - j;
        const uint8_t *k_row = cpu_row_at(&kr, j), *v_row = cpu_row_at(&vr, j);
        for (uint32_t i = 0; i < n; i++, k_row += kr.row_bytes, v_row += vr.row_bytes) {
            float s = logit(p, kl->kernels->dot(kl, k_row, q));
            if (s > m) {
                /* Rescale what was accumulated against the old max. */
                float correction = expf(m - s);
                l *= correction;
                for (uint32_t d = 0; d < hd * (split ? 2u : 1u); d++)
                    acc[d] *= correction;
                m = s;
            }
            float w = expf(s - m);
            l += w;
            if (w < p->threshold) {
                skipped++;
                continue;
            }
            vl->kernels->axpy(vl, v_row, w, acc);
        }
        j += n;
    }
    float inv_l = 1.0f / l;
    if (split)
        cpu_outlier_finish(vl, acc, inv_l, out);
    else {
        for (uint32_t d = 0; d < hd; d++)
            out[d] = acc[d] * inv_l;
        if (vl->bits)
            cpu_rotate_row(vl, CPU_UNROTATE, out);
    }
    if (lse)
        *lse = m + logf(l);
    return skipped;
}

int cpu_attention(void *dev_, const struct tkv_attention_args *a)
{
    struct cpu_device *dev = dev_;
    struct attention_plan p = {
        .group_ratio = a->n_q_heads / a->n_kv_heads,
        .scale = a->scale,
        .softcap = a->softcap,
        .threshold = a->sparse_v_threshold,
    };
    uint64_t total = 0, skipped = 0;
    int rc;
    cpu_layout_init(dev, &a->k.fmt, &p.k);
    cpu_layout_init(dev, &a->v.fmt, &p.v);
    for (uint32_t s = 0; s < a->n_seqs; s++) {
        const struct tkv_attn_seq *seq = cpu_seq(a, s);
        for (uint32_t i = 0; i < seq->n_q; i++) {
            uint32_t lo, hi;
            cpu_visible(seq->n_ctx, seq->n_q, i, a->window, &lo, &hi);
            total += (uint64_t)a->n_q_heads * (hi - lo);
        }
    }

    if (p.k.simd && p.v.simd) { /* the ISA level's kernels, over the device's threads */
        if ((rc = cpu_attention_split(dev, a, &p.k, &p.v, &skipped)) != TKV_OK)
            return rc;
    } else {
        const uint32_t hd = p.k.head_dim;
        float *q_work = dev->scratch, *acc = dev->scratch + 2 * TKV_HEAD_DIM_MAX; /* 2 head_dim floats each */
        for (uint32_t s = 0; s < a->n_seqs; s++) {
            const struct tkv_attn_seq *seq = cpu_seq(a, s);
            const uint32_t *blocks = a->blocks + seq->block_first;
            for (uint32_t i = 0; i < seq->n_q; i++) {
                uint32_t lo, hi;
                cpu_visible(seq->n_ctx, seq->n_q, i, a->window, &lo, &hi);
                for (uint32_t h = 0; h < a->n_q_heads; h++) {
                    size_t row = ((size_t)seq->q_first + i) * a->n_q_heads + h;
                    skipped += attend_row(&p, a, blocks, h / p.group_ratio, lo, hi,
                                          a->q + row * hd, q_work, acc, a->out + row * hd,
                                          a->lse ? a->lse + row : NULL);
                }
            }
        }
    }
    dev->stats.attention_calls++;
    dev->stats.rows_skipped += skipped;
    if (a->rows_total)
        *a->rows_total = total;
    if (a->rows_skipped)
        *a->rows_skipped = skipped;
    return TKV_OK;
}
