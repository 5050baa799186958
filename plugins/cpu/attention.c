/*
 * Fused decode attention on the stored cache (struct tkv_attention_args):
 * one pass over the visible rows per (sequence, query token, query head)
 * with an online softmax (running max m, running sum l; Milakov & Gimelshein
 * 2018, as in FlashAttention), reading K and V straight from their packed
 * bytes.
 *
 * Turbo K: s_j = scale * <R q, y_hat_j>; R is orthogonal, so this equals
 * <q, R^T y_hat_j> without rotating any cached row (DESIGN.md section 2).
 * QJL K adds gamma_j sqrt(pi/2)/g <S R q, z_j>, S R q also computed once.
 * Turbo V: sum_j p_j y_hat_j is accumulated in the rotated domain and R^T
 * applied once to the output row (R is linear).
 * Sparse V: a row whose weight exp(s_j - m) against the running max is below
 * the threshold still counts in l but its V row is neither read nor
 * accumulated; its share of the final output is then below the threshold.
 */
#include <math.h>
#include <string.h>

#include "cpu.h"

struct attention_plan {
    struct cpu_layout k, v;
    const struct cpu_buffer *k_buf, *v_buf;
    uint32_t group_ratio; /* query heads per kv head (GQA) */
};

/* Checks everything before computing anything. */
static int plan_attention(const struct cpu_device *dev, const struct tkv_attention_args *a,
                          struct attention_plan *p)
{
    int rc;
    if ((rc = cpu_check_args(dev, a, sizeof *a, "attention")) != TKV_OK ||
        (rc = cpu_layout_init(dev, &a->k_fmt, "attention K", &p->k)) != TKV_OK ||
        (rc = cpu_layout_init(dev, &a->v_fmt, "attention V", &p->v)) != TKV_OK)
        return rc;
    if (p->k.head_dim != p->v.head_dim)
        return CPU_ERROR(TKV_EINVAL, "attention: K head_dim %u differs from V head_dim %u",
                         p->k.head_dim, p->v.head_dim);
    if (a->n_q == 0)
        return CPU_ERROR(TKV_EINVAL, "attention: n_q is 0 (at least one query token)");
    if (a->n_q_heads == 0 || a->n_kv_heads == 0 || a->n_q_heads % a->n_kv_heads)
        return CPU_ERROR(TKV_EINVAL,
                         "attention: n_q_heads %u must be a non-zero multiple of "
                         "n_kv_heads %u",
                         a->n_q_heads, a->n_kv_heads);
    if (!isfinite(a->scale))
        return CPU_ERROR(TKV_EINVAL, "attention: scale %g is not finite", (double)a->scale);
    if (!(a->sparse_v_threshold >= 0.0f && a->sparse_v_threshold < 1.0f))
        return CPU_ERROR(TKV_EINVAL, "attention: sparse_v_threshold %g is outside [0, 1)",
                         (double)a->sparse_v_threshold);
    if (!a->seqs || !a->q || !a->out)
        return CPU_ERROR(TKV_EINVAL, "attention: NULL %s",
                         !a->seqs ? "seqs" : !a->q ? "q" : "out");
    if (!(p->k_buf = cpu_buffer_check(a->k_buf, "attention", "k_buf")) ||
        !(p->v_buf = cpu_buffer_check(a->v_buf, "attention", "v_buf")))
        return TKV_EINVAL;
    p->group_ratio = a->n_q_heads / a->n_kv_heads;

    for (uint32_t s = 0; s < a->n_seqs; s++) {
        const struct tkv_attn_seq *seq = &a->seqs[s];
        if (seq->n_ctx < a->n_q)
            return CPU_ERROR(TKV_EINVAL,
                             "attention: sequence %u has n_ctx %u, fewer than its n_q %u "
                             "query tokens",
                             s, seq->n_ctx, a->n_q);
        struct {
            const char *name;
            const struct cpu_buffer *buf;
            uint64_t offset, stride;
            uint32_t row_bytes;
        } side[2] = {
            { "K", p->k_buf, seq->k_offset, a->k_head_stride, p->k.row_bytes },
            { "V", p->v_buf, seq->v_offset, a->v_head_stride, p->v.row_bytes },
        };
        for (int i = 0; i < 2; i++) {
            uint64_t span = (uint64_t)seq->n_ctx * side[i].row_bytes;
            if (!tkv_span_fits(side[i].buf->size, side[i].offset, a->n_kv_heads, side[i].stride,
                               span))
                return CPU_ERROR(TKV_ERANGE,
                                 "attention: sequence %u: %s rows (%u tokens x %u heads of "
                                 "%u bytes at offset %llu, head_stride %llu) exceed the "
                                 "%llu-byte buffer",
                                 s, side[i].name, seq->n_ctx, a->n_kv_heads,
                                 side[i].row_bytes, (unsigned long long)side[i].offset,
                                 (unsigned long long)side[i].stride,
                                 (unsigned long long)side[i].buf->size);
        }
    }
    return TKV_OK;
}

/* One output row: softmax(scale * q K[0..n_rows)^T) V[0..n_rows). q_work
 * (2 head_dim floats) and acc (head_dim) are scratch; q_work receives the
 * query as K's dot takes it (prepare_query: rotated for turbo K, rotated and
 * projected for QJL K). Returns the number of V rows skipped. */
static uint64_t attend_row(const struct attention_plan *p, const struct tkv_attention_args *a,
                           const uint8_t *k_rows, const uint8_t *v_rows, uint32_t n_rows,
                           const float *q, float *q_work, float *acc, float *out)
{
    const struct cpu_layout *kl = &p->k, *vl = &p->v;
    const uint32_t hd = kl->head_dim;
    if (kl->kernels->prepare_query) {
        kl->kernels->prepare_query(kl, q, q_work);
        q = q_work;
    }
    memset(acc, 0, sizeof *acc * hd);
    float m = -INFINITY, l = 0.0f;
    uint64_t skipped = 0;
    for (uint32_t j = 0; j < n_rows; j++) {
        float s = a->scale * kl->kernels->dot(kl, k_rows + (uint64_t)j * kl->row_bytes, q);
        if (s > m) {
            /* Rescale what was accumulated against the old max. */
            float correction = expf(m - s);
            l *= correction;
            for (uint32_t i = 0; i < hd; i++)
                acc[i] *= correction;
            m = s;
        }
        float w = expf(s - m);
        l += w;
        if (w < a->sparse_v_threshold) {
            skipped++;
            continue;
        }
        vl->kernels->axpy(vl, v_rows + (uint64_t)j * vl->row_bytes, w, acc);
    }
    float inv_l = 1.0f / l;
    for (uint32_t i = 0; i < hd; i++)
        out[i] = acc[i] * inv_l;
    if (vl->bits)
        cpu_rotate_row(vl, CPU_UNROTATE, out);
    return skipped;
}

static int attention_done(struct cpu_device *dev, const struct tkv_attention_args *a,
                          uint64_t total, uint64_t skipped)
{
    dev->stats.attention_calls++;
    dev->stats.rows_skipped += skipped;
    if (a->rows_total)
        *a->rows_total = total;
    if (a->rows_skipped)
        *a->rows_skipped = skipped;
    return TKV_OK;
}

int cpu_attention(void *dev_, const struct tkv_attention_args *a)
{
    struct cpu_device *dev = dev_;
    struct attention_plan p;
    int rc;
    if ((rc = plan_attention(dev, a, &p)) != TKV_OK)
        return rc;
    if (p.k.simd && p.v.simd) { /* the ISA level's kernels, over the device's threads */
        uint64_t total, skipped;
        rc = cpu_attention_split(dev, a, &p.k, &p.v, p.k_buf->data, p.v_buf->data, &total,
                                 &skipped);
        return rc == TKV_OK ? attention_done(dev, a, total, skipped) : rc;
    }

    const uint32_t hd = p.k.head_dim;
    float *q_work = dev->scratch, *acc = dev->scratch + 2 * TKV_HEAD_DIM_MAX;
    uint64_t total = 0, skipped = 0;
    for (uint32_t s = 0; s < a->n_seqs; s++) {
        const struct tkv_attn_seq *seq = &a->seqs[s];
        for (uint32_t t = 0; t < a->n_q; t++) {
            /* Causal within the new tokens: query t sees rows 0 .. n_ctx - n_q + t. */
            uint32_t n_rows = seq->n_ctx - a->n_q + t + 1;
            for (uint32_t h = 0; h < a->n_q_heads; h++) {
                uint32_t kv = h / p.group_ratio;
                size_t at = (((size_t)s * a->n_q + t) * a->n_q_heads + h) * hd;
                const uint8_t *k_rows = p.k_buf->data + seq->k_offset + kv * a->k_head_stride;
                const uint8_t *v_rows = p.v_buf->data + seq->v_offset + kv * a->v_head_stride;
                skipped += attend_row(&p, a, k_rows, v_rows, n_rows, a->q + at, q_work, acc,
                                      a->out + at);
                total += n_rows;
            }
        }
    }
    return attention_done(dev, a, total, skipped);
}
