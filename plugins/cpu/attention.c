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

#include "simd.h" /* CPU_UNIT_QUERIES: the size of a thread's query scratch */

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
 * head kv. q_work and acc (2 head_dim floats each) are scratch; q_work
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

/* Floats a stored row reads back into for the shared path below: the
 * outlier-split types keep their outliers apart (outlier.c). */
static inline uint32_t decoded_len(const struct cpu_layout *l)
{
    return tkv_type_is_outlier(l->type) ? 2u * l->head_dim : l->head_dim;
}

/* The query heads h0 .. h0 + n - 1 of kv head kv (one query token, rows
 * [lo, hi)) in one pass: each K and V row is read back once (the type's axpy
 * into zeros) and shared by the n queries, which take it as their dot
 * would (prepare_query), each with its own online softmax. Same result as n
 * calls of attend_row up to float summation order. work holds
 * n (2 dl_k + dl_v) + dl_k + dl_v + 2 n floats. Returns the V rows skipped. */
static uint64_t attend_heads(const struct attention_plan *p, const struct tkv_attention_args *a,
                             const uint32_t *blocks, uint32_t kv, uint32_t lo, uint32_t hi, size_t row0,
                             uint32_t n, float *work)
{
    const struct cpu_layout *kl = &p->k, *vl = &p->v;
    const struct cpu_rows kr = cpu_rows_of(&a->k, blocks, kv), vr = cpu_rows_of(&a->v, blocks, kv);
    const uint32_t hd = kl->head_dim, dk = decoded_len(kl), dv = decoded_len(vl), bt = kr.block_tokens;
    float *qs = work, *acc = qs + (size_t)n * 2 * dk, *kbuf = acc + (size_t)n * dv, *vbuf = kbuf + dk;
    float *m = vbuf + dv, *l = m + n;
    uint64_t skipped = 0;
    for (uint32_t r = 0; r < n; r++) {
        const float *q = a->q + (row0 + r) * hd;
        float *qr = qs + (size_t)r * 2 * dk;
        memset(qr, 0, sizeof *qr * dk);
        if (kl->kernels->prepare_query)
            kl->kernels->prepare_query(kl, q, qr); /* turbo: R q; outlier-split: [R q | q] */
        else
            memcpy(qr, q, sizeof *q * hd);
        m[r] = -INFINITY;
        l[r] = 0.0f;
    }
    memset(acc, 0, sizeof *acc * n * dv);
    for (uint32_t j = lo; j < hi;) {
        uint32_t off = j % bt, cnt = bt - off < hi - j ? bt - off : hi - j;
        const uint8_t *k_row = cpu_row_at(&kr, j), *v_row = cpu_row_at(&vr, j);
        for (uint32_t t = 0; t < cnt; t++, k_row += kr.row_bytes, v_row += vr.row_bytes) {
            int v_ready = 0;
            memset(kbuf, 0, sizeof *kbuf * dk);
            kl->kernels->axpy(kl, k_row, 1.0f, kbuf);
            for (uint32_t r = 0; r < n; r++) {
                const float *qr = qs + (size_t)r * 2 * dk;
                float *ar = acc + (size_t)r * dv, lane[8] = { 0.0f };
                for (uint32_t d = 0; d < dk; d += 8) /* eight running sums: lanes a compiler vectorizes */
                    for (uint32_t k = 0; k < 8; k++)
                        lane[k] += qr[d + k] * kbuf[d + k];
                float s = logit(p, ((lane[0] + lane[4]) + (lane[2] + lane[6])) + ((lane[1] + lane[5]) + (lane[3] + lane[7])));
                if (s > m[r]) {
                    float correction = expf(m[r] - s);
                    l[r] *= correction;
                    for (uint32_t d = 0; d < dv; d++)
                        ar[d] *= correction;
                    m[r] = s;
                }
                float w = expf(s - m[r]);
                l[r] += w;
                if (w < p->threshold) {
                    skipped++;
                    continue;
                }
                if (!v_ready) {
                    memset(vbuf, 0, sizeof *vbuf * dv);
                    vl->kernels->axpy(vl, v_row, 1.0f, vbuf);
                    v_ready = 1;
                }
                for (uint32_t d = 0; d < dv; d++)
                    ar[d] += w * vbuf[d];
            }
        }
        j += cnt;
    }
    for (uint32_t r = 0; r < n; r++) {
        float *ar = acc + (size_t)r * dv, *out = a->out + (row0 + r) * hd, inv_l = 1.0f / l[r];
        if (tkv_type_is_outlier(vl->type))
            cpu_outlier_finish(vl, ar, inv_l, out);
        else {
            for (uint32_t d = 0; d < hd; d++)
                out[d] = ar[d] * inv_l;
            if (vl->bits)
                cpu_rotate_row(vl, CPU_UNROTATE, out);
        }
        if (a->lse)
            a->lse[row0 + r] = m[r] + logf(l[r]);
    }
    return skipped;
}

/* The reference kernels over the device's threads: one (sequence, query
 * token, kv head) per item, in the order of the sequences, its query heads
 * in one pass (attend_heads) where the thread's scratch holds them and the
 * rows read back cheaply (not QJL keys, whose axpy costs g^2 per row), else
 * one attend_row each. Items are independent, so the result does not depend
 * on the threads. */
struct reference_job {
    struct cpu_device *dev;
    const struct attention_plan *p;
    const struct tkv_attention_args *a;
};

#define THREAD_SCRATCH_FLOATS ((size_t)CPU_UNIT_QUERIES * TKV_HEAD_DIM_MAX)

static void reference_rows(void *arg, uint32_t item, uint32_t thread)
{
    const struct reference_job *job = arg;
    const struct attention_plan *p = job->p;
    const struct tkv_attention_args *a = job->a;
    struct cpu_thread *th = &job->dev->threads[thread];
    const uint32_t n_kv = a->n_q_heads / p->group_ratio, hd = p->k.head_dim;
    uint32_t s = 0, in_seq = item;
    while (in_seq >= cpu_seq(a, s)->n_q * n_kv) {
        in_seq -= cpu_seq(a, s)->n_q * n_kv;
        s++;
    }
    const struct tkv_attn_seq *seq = cpu_seq(a, s);
    const uint32_t *blocks = a->blocks + seq->block_first;
    uint32_t i = in_seq / n_kv, kv = in_seq % n_kv, lo, hi, n = p->group_ratio;
    cpu_visible(seq->n_ctx, seq->n_q, i, a->window, &lo, &hi);
    size_t row0 = ((size_t)seq->q_first + i) * a->n_q_heads + (size_t)kv * n;
    size_t dk = decoded_len(&p->k), dv = decoded_len(&p->v);
    if (!tkv_type_is_qjl(p->k.type) && n * (2 * dk + dv) + dk + dv + 2 * n <= THREAD_SCRATCH_FLOATS) {
        th->skipped += attend_heads(p, a, blocks, kv, lo, hi, row0, n, th->queries);
        return;
    }
    /* 2 head_dim floats of query, 2 of accumulator */
    float *q_work = th->queries, *acc = th->queries + 2 * TKV_HEAD_DIM_MAX;
    for (uint32_t r = 0; r < n; r++) {
        size_t row = row0 + r;
        th->skipped += attend_row(p, a, blocks, kv, lo, hi, a->q + row * hd, q_work, acc, a->out + row * hd,
                                  a->lse ? a->lse + row : NULL);
    }
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
        struct reference_job job = { .dev = dev, .p = &p, .a = a };
        uint64_t rows = 0;
        for (uint32_t s = 0; s < a->n_seqs; s++)
            rows += (uint64_t)cpu_seq(a, s)->n_q * (a->n_q_heads / p.group_ratio);
        for (uint32_t t = 0; t < dev->n_threads; t++)
            dev->threads[t].skipped = 0;
        cpu_pool_run(dev->pool, (uint32_t)rows, reference_rows, &job);
        for (uint32_t t = 0; t < dev->n_threads; t++)
            skipped += dev->threads[t].skipped;
    }
    dev->stats.attention_calls++;
    dev->stats.rows_skipped += skipped;
    if (a->rows_total)
        *a->rows_total = total;
    if (a->rows_skipped)
        *a->rows_skipped = skipped;
    return TKV_OK;
}
