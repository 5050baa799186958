/*
 * Fused decode attention (struct tkv_attention_args), split-K: one submit
 * of
 *   upload    the queries and the sequence table to device memory;
 *   prepare   R q (turbo keys), then S R q per group (QJL keys): the rows
 *             shader, once per query row;
 *   attention one workgroup per (sequence, kv head, query tile, chunk of
 *             rows): partial softmax statistics and value sums
 *             (shaders/attention.comp);
 *   merge     one workgroup per output row: combine the chunks, R^T once
 *             (shaders/merge.comp);
 *   download  the outputs and the per-row skip counts.
 * The chunk size spreads the work over about dev->target_workgroups
 * workgroups, so a long context on few heads still fills the device.
 */
#include <math.h>
#include <string.h>

#include "vk.h"

/* Scratch regions start at multiples of this. */
#define VK_ALIGN 256u

static uint64_t align_up(uint64_t x) { return (x + VK_ALIGN - 1) / VK_ALIGN * VK_ALIGN; }

struct attention_plan {
    struct vk_layout k, v;
    const struct vk_buffer *k_buf, *v_buf;
    uint32_t ratio, max_ctx;
};

/* Checks everything before computing anything (as plugins/cpu does). */
static int plan_attention(const struct vk_device *dev, const struct tkv_attention_args *a, struct attention_plan *p)
{
    static const char op[] = "attention";
    int rc;
    if ((rc = vk_check_args(dev, a, sizeof *a, op)) != TKV_OK ||
        (rc = vk_layout_init(dev, &a->k_fmt, "attention K", &p->k)) != TKV_OK ||
        (rc = vk_layout_init(dev, &a->v_fmt, "attention V", &p->v)) != TKV_OK)
        return rc;
    if (p->k.head_dim != p->v.head_dim)
        return VK_ERROR_STATUS(TKV_EINVAL, "%s: K head_dim %u differs from V head_dim %u", op, p->k.head_dim,
                               p->v.head_dim);
    if (a->n_q == 0)
        return VK_ERROR_STATUS(TKV_EINVAL, "%s: n_q is 0 (at least one query token)", op);
    if (a->n_q_heads == 0 || a->n_kv_heads == 0 || a->n_q_heads % a->n_kv_heads)
        return VK_ERROR_STATUS(TKV_EINVAL, "%s: n_q_heads %u must be a non-zero multiple of n_kv_heads %u", op,
                               a->n_q_heads, a->n_kv_heads);
    if (!isfinite(a->scale))
        return VK_ERROR_STATUS(TKV_EINVAL, "%s: scale %g is not finite", op, (double)a->scale);
    if (!(a->sparse_v_threshold >= 0.0f && a->sparse_v_threshold < 1.0f))
        return VK_ERROR_STATUS(TKV_EINVAL, "%s: sparse_v_threshold %g is outside [0, 1)", op,
                               (double)a->sparse_v_threshold);
    if (!a->seqs || !a->q || !a->out)
        return VK_ERROR_STATUS(TKV_EINVAL, "%s: NULL %s", op, !a->seqs ? "seqs" : !a->q ? "q" : "out");
    if (!(p->k_buf = vk_buffer_check(a->k_buf, op, "k_buf")) || !(p->v_buf = vk_buffer_check(a->v_buf, op, "v_buf")))
        return TKV_EINVAL;
    p->ratio = a->n_q_heads / a->n_kv_heads;
    p->max_ctx = 0;
    for (uint32_t s = 0; s < a->n_seqs; s++) {
        const struct tkv_attn_seq *seq = &a->seqs[s];
        if (seq->n_ctx < a->n_q)
            return VK_ERROR_STATUS(TKV_EINVAL, "%s: sequence %u has n_ctx %u, fewer than its n_q %u query tokens", op,
                                   s, seq->n_ctx, a->n_q);
        const struct {
            const char *name;
            const struct vk_buffer *buf;
            uint64_t offset, stride;
            uint32_t row_bytes;
        } side[2] = {
            { "K", p->k_buf, seq->k_offset, a->k_head_stride, p->k.row_bytes },
            { "V", p->v_buf, seq->v_offset, a->v_head_stride, p->v.row_bytes },
        };
        for (int i = 0; i < 2; i++) {
            uint64_t span = (uint64_t)seq->n_ctx * side[i].row_bytes;
            if (!tkv_span_fits(side[i].buf->size, side[i].offset, a->n_kv_heads, side[i].stride, span))
                return VK_ERROR_STATUS(TKV_ERANGE,
                                       "%s: sequence %u: %s rows (%u tokens x %u heads of %u bytes at offset %llu, "
                                       "head_stride %llu) exceed the %llu-byte buffer",
                                       op, s, side[i].name, seq->n_ctx, a->n_kv_heads, side[i].row_bytes,
                                       (unsigned long long)side[i].offset, (unsigned long long)side[i].stride,
                                       (unsigned long long)side[i].buf->size);
        }
        if (seq->n_ctx > p->max_ctx)
            p->max_ctx = seq->n_ctx;
    }
    return TKV_OK;
}

int vk_attention(void *dev_, const struct tkv_attention_args *a)
{
    static const char op[] = "attention";
    struct vk_device *dev = dev_;
    struct attention_plan p;
    int rc;
    if ((rc = plan_attention(dev, a, &p)) != TKV_OK)
        return rc;
    if (a->rows_total)
        *a->rows_total = 0;
    if (a->rows_skipped)
        *a->rows_skipped = 0;
    if (a->n_seqs == 0) {
        dev->stats.attention_calls++;
        return TKV_OK;
    }

    const uint32_t hd = p.k.head_dim, wg = TKV_VK_WG;
    const uint32_t qs = p.k.qjl ? 2u : 1u, va = p.v.qjl ? 2u : 1u;
    const uint64_t n_q_rows = (uint64_t)a->n_q * p.ratio, n_sh = (uint64_t)a->n_seqs * a->n_kv_heads;
    const uint64_t n_out = (uint64_t)a->n_seqs * a->n_q * a->n_q_heads;

    /* Query tiles: as many query rows per workgroup as its shared memory
     * holds, and at most 64 accumulators per invocation (8 elements for
     * each query row, twice for QJL values), spread evenly over the tiles. */
    uint32_t qt_max = TKV_VK_QUERY_TILE_FLOATS / (hd * qs);
    qt_max = qt_max > 8u / va ? 8u / va : qt_max < 1u ? 1u : qt_max;
    uint64_t n_tiles = (n_q_rows + qt_max - 1) / qt_max;
    uint32_t qt = (uint32_t)((n_q_rows + n_tiles - 1) / n_tiles);

    /* Rows per block: as many as the staging memory holds, a power of two
     * up to one per invocation (more invocations share a row beyond). */
    uint32_t row_max = p.k.row_bytes > p.v.row_bytes ? p.k.row_bytes : p.v.row_bytes, block_rows = wg;
    while (block_rows > 1 && block_rows * row_max > TKV_VK_STAGE_BYTES - TKV_VK_STAGE_SLACK)
        block_rows /= 2;

    /* Chunks: enough workgroups to fill the device, a whole number of
     * blocks each, at most TKV_VK_MAX_CHUNKS per sequence. */
    uint64_t per_head = dev->target_workgroups / (n_sh * n_tiles);
    per_head = per_head < 1 ? 1 : per_head;
    uint64_t chunk = ((p.max_ctx + per_head - 1) / per_head + wg - 1) / wg * wg;
    uint64_t fewest = ((p.max_ctx + TKV_VK_MAX_CHUNKS - 1) / TKV_VK_MAX_CHUNKS + wg - 1) / wg * wg;
    chunk = chunk < fewest ? fewest : chunk;
    uint64_t max_chunks = (p.max_ctx + chunk - 1) / chunk;
    if (chunk > UINT32_MAX || n_sh * n_tiles * max_chunks > UINT32_MAX || n_out > UINT32_MAX)
        return VK_ERROR_STATUS(TKV_ERANGE, "%s: %llu sequences x heads over %u rows is too much work for one call", op,
                               (unsigned long long)n_sh, p.max_ctx);

    /* device scratch: queries and sequence table (one upload), prepared
     * queries, partials, outputs and counts (one download) */
    const uint64_t q_bytes = n_out * hd * sizeof(float), seq_bytes = a->n_seqs * sizeof(struct vk_seq);
    const uint64_t up_bytes = align_up(q_bytes) + seq_bytes;
    const uint64_t prep_at = align_up(up_bytes), prep_bytes = p.k.bits ? q_bytes * qs : 0;
    const uint64_t acc_at = align_up(prep_at + prep_bytes);
    const uint64_t n_partials = n_sh * max_chunks * n_q_rows;
    const uint64_t ml_at = align_up(acc_at + n_partials * va * hd * sizeof(float));
    const uint64_t out_at = align_up(ml_at + n_partials * TKV_VK_ML_FLOATS * sizeof(float));
    const uint64_t counts_at = align_up(out_at + q_bytes), down_bytes = counts_at - out_at + n_out * sizeof(uint32_t);
    if ((rc = vk_scratch(dev, &dev->work, out_at + down_bytes, 0, op)) != TKV_OK ||
        (rc = vk_scratch(dev, &dev->staging, up_bytes > down_bytes ? up_bytes : down_bytes, 1, op)) != TKV_OK)
        return rc;
    unsigned char *staging = dev->staging->map;
    memcpy(staging, a->q, (size_t)q_bytes);
    struct vk_seq *seqs = (struct vk_seq *)(staging + align_up(q_bytes));
    uint64_t total = 0;
    for (uint32_t s = 0; s < a->n_seqs; s++) {
        const struct tkv_attn_seq *seq = &a->seqs[s];
        seqs[s] = (struct vk_seq){ .k_offset = seq->k_offset, .v_offset = seq->v_offset, .n_ctx = seq->n_ctx };
        /* query t sees rows 0 .. n_ctx - n_q + t */
        total += ((uint64_t)a->n_q * (seq->n_ctx - a->n_q + 1) + (uint64_t)a->n_q * (a->n_q - 1) / 2) * a->n_q_heads;
    }

    uint32_t spec[TKV_VK_SPEC_COUNT] = {
        [TKV_VK_SPEC_WG] = wg,
        [TKV_VK_SPEC_HEAD_DIM] = hd,
        [TKV_VK_SPEC_K_ENC] = p.k.encoding,
        [TKV_VK_SPEC_K_BITS] = p.k.bits,
        [TKV_VK_SPEC_K_QJL] = p.k.qjl,
        [TKV_VK_SPEC_K_ROW_BYTES] = p.k.row_bytes,
        [TKV_VK_SPEC_V_ENC] = p.v.encoding,
        [TKV_VK_SPEC_V_BITS] = p.v.bits,
        [TKV_VK_SPEC_V_QJL] = p.v.qjl,
        [TKV_VK_SPEC_V_ROW_BYTES] = p.v.row_bytes,
        [TKV_VK_SPEC_QT] = qt,
        [TKV_VK_SPEC_Q8_BLOCK] = TKV_Q8_0_BLOCK,
        [TKV_VK_SPEC_BLOCK_ROWS] = block_rows,
    };
    memcpy(spec + TKV_VK_SPEC_GROUPS, p.k.groups, sizeof p.k.groups);
    VkPipeline pipeline;
    if ((rc = vk_attention_pipeline(dev, spec, &pipeline)) != TKV_OK)
        return rc;

    const uint64_t work = dev->work->address;
    struct vk_attention_push push = {
        .k = p.k_buf->address,
        .v = p.v_buf->address,
        .k_head_stride = a->k_head_stride,
        .v_head_stride = a->v_head_stride,
        .q = work + (p.k.bits ? prep_at : 0),
        .seqs = work + align_up(q_bytes),
        .part_acc = work + acc_at,
        .part_ml = work + ml_at,
        .math = dev->math_buf->address,
        .n_seqs = a->n_seqs,
        .n_q = a->n_q,
        .ratio = p.ratio,
        .n_kv = a->n_kv_heads,
        .chunk = (uint32_t)chunk,
        .max_chunks = (uint32_t)max_chunks,
        .n_tiles = (uint32_t)n_tiles,
        .q_stride = hd * (p.k.bits ? qs : 1u),
        .scale = a->scale,
        .threshold = a->sparse_v_threshold,
    };
    struct vk_merge_push merge = {
        .part_acc = push.part_acc,
        .part_ml = push.part_ml,
        .out_rows = work + out_at,
        .counts = work + counts_at,
        .seqs = push.seqs,
        .math = push.math,
        .n_rows = (uint32_t)n_out,
        .n_q = a->n_q,
        .ratio = p.ratio,
        .n_kv = a->n_kv_heads,
        .chunk = (uint32_t)chunk,
        .max_chunks = (uint32_t)max_chunks,
        .head_dim = hd,
        .rotation = p.v.rotation,
        .flags = p.v.qjl ? TKV_VK_FLAG_QJL : 0u,
    };
    memcpy(merge.groups, p.v.groups, sizeof merge.groups);

    if ((rc = vk_begin(dev, op)) != TKV_OK)
        return rc;
    vk_copy(dev, dev->staging, 0, dev->work, 0, up_bytes);
    vk_barrier(dev);
    if (p.k.bits) {
        if ((rc = vk_record_rows(dev, &p.k, work, hd * sizeof(float), work + prep_at, hd * qs, (uint32_t)n_out, 1, 0,
                                 op)) != TKV_OK)
            return rc;
        vk_barrier(dev);
    }
    if ((rc = vk_dispatch(dev, pipeline, &push, sizeof push, n_sh * n_tiles * max_chunks, op)) != TKV_OK)
        return rc;
    vk_barrier(dev);
    if ((rc = vk_dispatch(dev, dev->merge, &merge, sizeof merge, n_out, op)) != TKV_OK)
        return rc;
    vk_barrier(dev);
    vk_copy(dev, dev->work, out_at, dev->staging, 0, down_bytes);
    if ((rc = vk_submit(dev, op)) != TKV_OK)
        return rc;

    memcpy(a->out, staging, (size_t)q_bytes);
    const uint32_t *counts = (const uint32_t *)(staging + (counts_at - out_at));
    uint64_t skipped = 0;
    for (uint64_t r = 0; r < n_out; r++)
        skipped += counts[r];
    dev->stats.attention_calls++;
    dev->stats.rows_skipped += skipped;
    if (a->rows_total)
        *a->rows_total = total;
    if (a->rows_skipped)
        *a->rows_skipped = skipped;
    return TKV_OK;
}
