/* SPDX-License-Identifier: MIT */
/*
 * The one place where plugin op arguments are checked (ABI 2): every
 * precondition written next to an op in turbokv_plugin.h is checked here,
 * against the device's capabilities and the sizes of the buffers the core
 * allocated, before the plugin sees the call (loader.c's wrappers call these).
 * Plugins carry no copies of these checks.
 *
 * The cache builds its arguments from its own bookkeeping, so a failure here
 * is a core bug or a capability the host asked for and the device lacks; the
 * messages name the argument either way.
 */
#include <math.h>
#include <stddef.h>
#include <stdio.h>

#include "core.h"
#include "error.h"

/* which: "K", "V", or "rows" (append and dequantize, either side). */
static int fmt_supported(const struct tkv_device_caps *caps, const struct tkv_row_format *f, const char *which,
                         const char *op)
{
    if (f->type >= TKV_TYPE_COUNT)
        return tkv_error(TKV_EINVAL, "%s: %s type %u unknown", op, which, f->type);
    uint32_t types = which[0] == 'K' ? caps->k_types : which[0] == 'V' ? caps->v_types : caps->k_types | caps->v_types;
    if (!(types & (1u << f->type)))
        return tkv_error(TKV_EUNSUPPORTED, "%s: %s type %s not supported by the device", op, which,
                         tkv_type_name(f->type));
    if (!tkv_head_dim_supported(f->head_dim) || f->head_dim > caps->head_dim_max)
        return tkv_error(TKV_EUNSUPPORTED, "%s: %s head_dim %u not supported (device: multiples of %u up to %u)",
                         op, which, f->head_dim, TKV_GROUP_MIN, caps->head_dim_max);
    if (tkv_type_bits(f->type)) {
        if (f->rotation == 0 || f->rotation >= TKV_ROTATION_COUNT || !(caps->rotations & (1u << f->rotation)))
            return tkv_error(TKV_EUNSUPPORTED, "%s: %s rotation %u not supported by the device", op, which,
                             f->rotation);
        if (f->scale_mode == 0 || f->scale_mode >= TKV_SCALE_COUNT || !(caps->scale_modes & (1u << f->scale_mode)))
            return tkv_error(TKV_EUNSUPPORTED, "%s: %s scale mode %u not supported by the device", op, which,
                             f->scale_mode);
    }
    return TKV_OK;
}

int tkv_validate_pool(const struct tkv_device_caps *caps, const struct tkv_pool *p, uint32_t n_heads,
                      const struct tkv_dbuf *buf, const char *op, const char *which)
{
    int rc = fmt_supported(caps, &p->fmt, which, op);
    if (rc != TKV_OK)
        return rc;
    if (p->row_bytes != tkv_row_bytes(p->fmt.type, p->fmt.head_dim))
        return tkv_error(TKV_EINVAL, "%s: %s row_bytes %u, the format has %u", op, which, p->row_bytes,
                         tkv_row_bytes(p->fmt.type, p->fmt.head_dim));
    if (p->block_tokens == 0 || (caps->max_block_tokens && p->block_tokens > caps->max_block_tokens))
        return tkv_error(TKV_EUNSUPPORTED, "%s: %s block_tokens %u (device: 1..%u)", op, which, p->block_tokens,
                         caps->max_block_tokens ? caps->max_block_tokens : UINT32_MAX);
    if (n_heads == 0)
        return tkv_error(TKV_EINVAL, "%s: n_heads is 0", op);
    /* head_stride >= block_tokens * row_bytes, block_stride >= n_heads * head_stride, without overflow */
    uint64_t span = (uint64_t)p->block_tokens * p->row_bytes;
    if (p->head_stride < span || p->head_stride > UINT64_MAX / n_heads ||
        p->block_stride < n_heads * p->head_stride)
        return tkv_error(TKV_EINVAL, "%s: %s strides (head %llu, block %llu) do not hold %u heads of %u rows of %u bytes",
                         op, which, (unsigned long long)p->head_stride, (unsigned long long)p->block_stride, n_heads,
                         p->block_tokens, p->row_bytes);
    if (!buf || !buf->h)
        return tkv_error(TKV_EINVAL, "%s: %s buffer is NULL", op, which);
    return TKV_OK;
}

/* Every block holding tokens [first, first + n) exists and lies inside buf. */
int tkv_validate_blocks(const struct tkv_pool *p, const struct tkv_dbuf *buf, const uint32_t *blocks,
                        uint32_t n_blocks, uint64_t first, uint64_t n, const char *op, const char *which)
{
    if (n == 0)
        return TKV_OK;
    if (!blocks)
        return tkv_error(TKV_EINVAL, "%s: %s block table is NULL", op, which);
    uint64_t b0 = first / p->block_tokens, b1 = (first + n - 1) / p->block_tokens;
    if (b1 >= n_blocks)
        return tkv_error(TKV_ERANGE, "%s: %s tokens %llu..%llu need %llu blocks, the table has %u", op, which,
                         (unsigned long long)first, (unsigned long long)(first + n - 1), (unsigned long long)(b1 + 1),
                         n_blocks);
    uint64_t max_blocks = buf->size / p->block_stride;
    for (uint64_t b = b0; b <= b1; b++)
        if (blocks[b] >= max_blocks)
            return tkv_error(TKV_ERANGE, "%s: %s block %u (table entry %llu) outside the %llu-block buffer", op, which,
                             blocks[b], (unsigned long long)b, (unsigned long long)max_blocks);
    return TKV_OK;
}

/* A device tensor of n elements (2.2): a device memory kind, on a device
 * that takes them, inside its buffer. */
static int device_tensor(const struct tkv_device_caps *caps, uint32_t struct_size, size_t member_end,
                         const struct tkv_device_tensor *t, uint64_t n, const char *op, const char *which)
{
    if (struct_size < member_end)
        return tkv_error(TKV_EINVAL, "%s: %s in device memory for a plugin of ABI 2.%s", op, which,
                         "0/2.1 (device tensors are 2.2)");
    if (!(caps->features & TKV_CAP_DEVICE_TENSORS))
        return tkv_error(TKV_EUNSUPPORTED, "%s: %s in device memory, the device takes none (TKV_CAP_DEVICE_TENSORS)",
                         op, which);
    if ((t->memory != TKV_MEMORY_OPENCL && t->memory != TKV_MEMORY_VULKAN) || !t->handle)
        return tkv_error(TKV_EINVAL, "%s: %s: memory %u / handle %s is no device buffer", op, which, t->memory,
                         t->handle ? "set" : "0");
    if (t->elem != TKV_ELEM_F32 && t->elem != TKV_ELEM_F16 && t->elem != TKV_ELEM_BF16)
        return tkv_error(TKV_EINVAL, "%s: %s element type %u unknown", op, which, t->elem);
    uint64_t esize = t->elem == TKV_ELEM_F32 ? 4u : 2u;
    if (t->offset % esize || t->offset > t->size || n > (t->size - t->offset) / esize)
        return tkv_error(TKV_ERANGE, "%s: %s: %llu elements at offset %llu outside the %llu-byte buffer", op, which,
                         (unsigned long long)n, (unsigned long long)t->offset, (unsigned long long)t->size);
    return TKV_OK;
}

int tkv_validate_append(const struct tkv_device_caps *caps, const struct tkv_dbuf *buf,
                        const struct tkv_append_args *a)
{
    static const char op[] = "quantize_append";
    int rc = tkv_validate_pool(caps, &a->pool, a->n_heads, buf, op, "rows");
    if (rc != TKV_OK)
        return rc;
    if (a->n_tokens == 0 || (!a->src && !a->src_dev) || (a->src && a->src_dev))
        return tkv_error(TKV_EINVAL, "%s: %s", op,
                         a->n_tokens == 0 ? "n_tokens is 0" : a->src ? "src and src_dev both set" : "src is NULL");
    if (a->src_dev) {
        if (a->n_nonfinite)
            return tkv_error(TKV_EINVAL, "%s: n_nonfinite with rows in device memory", op);
        if ((rc = device_tensor(caps, a->struct_size, offsetof(struct tkv_append_args, src_dev) + sizeof a->src_dev,
                                a->src_dev, (uint64_t)a->n_tokens * a->n_heads * a->pool.fmt.head_dim, op,
                                "src_dev")) != TKV_OK)
            return rc;
    }
    return tkv_validate_blocks(&a->pool, buf, a->blocks, a->n_blocks, a->first_pos, a->n_tokens, op, "rows");
}

int tkv_validate_dequant(const struct tkv_device_caps *caps, const struct tkv_dbuf *buf,
                         const struct tkv_dequant_args *a)
{
    static const char op[] = "dequantize";
    int rc = tkv_validate_pool(caps, &a->pool, a->n_heads, buf, op, "rows");
    if (rc != TKV_OK)
        return rc;
    if (a->n_tokens == 0 || !a->dst)
        return tkv_error(TKV_EINVAL, "%s: %s", op, a->n_tokens == 0 ? "n_tokens is 0" : "dst is NULL");
    return tkv_validate_blocks(&a->pool, buf, a->blocks, a->n_blocks, a->first_pos, a->n_tokens, op, "rows");
}

int tkv_validate_attention(const struct tkv_device_caps *caps, const struct tkv_dbuf *kb, const struct tkv_dbuf *vb,
                           const struct tkv_attention_args *a)
{
    static const char op[] = "attention";
    int rc;
    if (a->n_kv_heads == 0 || a->n_q_heads == 0 || a->n_q_heads % a->n_kv_heads)
        return tkv_error(TKV_EINVAL, "%s: n_q_heads %u must be a non-zero multiple of n_kv_heads %u", op,
                         a->n_q_heads, a->n_kv_heads);
    if ((rc = tkv_validate_pool(caps, &a->k, a->n_kv_heads, kb, op, "K")) != TKV_OK ||
        (rc = tkv_validate_pool(caps, &a->v, a->n_kv_heads, vb, op, "V")) != TKV_OK)
        return rc;
    if (tkv_type_is_qjl(a->v.fmt.type))
        return tkv_error(TKV_EUNSUPPORTED, "%s: V type %s stores keys only", op, tkv_type_name(a->v.fmt.type));
    if (a->k.fmt.head_dim != a->v.fmt.head_dim || a->k.block_tokens != a->v.block_tokens)
        return tkv_error(TKV_EINVAL, "%s: K and V differ in head_dim (%u, %u) or block_tokens (%u, %u)", op,
                         a->k.fmt.head_dim, a->v.fmt.head_dim, a->k.block_tokens, a->v.block_tokens);
    if (!isfinite(a->scale) || a->scale == 0.0f)
        return tkv_error(TKV_EINVAL, "%s: scale %g must be finite and non-zero", op, (double)a->scale);
    if (!(a->softcap >= 0.0f) || !isfinite(a->softcap))
        return tkv_error(TKV_EINVAL, "%s: softcap %g must be finite and >= 0", op, (double)a->softcap);
    if (!(a->sparse_v_threshold >= 0.0f && a->sparse_v_threshold < 1.0f))
        return tkv_error(TKV_EINVAL, "%s: sparse_v_threshold %g is outside [0, 1)", op, (double)a->sparse_v_threshold);
    if (a->window && !(caps->features & TKV_CAP_WINDOW))
        return tkv_error(TKV_EUNSUPPORTED, "%s: the device has no sliding-window attention (TKV_CAP_WINDOW)", op);
    if (a->softcap > 0.0f && !(caps->features & TKV_CAP_SOFTCAP))
        return tkv_error(TKV_EUNSUPPORTED, "%s: the device has no logit soft-capping (TKV_CAP_SOFTCAP)", op);
    if (a->lse && !(caps->features & TKV_CAP_LSE))
        return tkv_error(TKV_EUNSUPPORTED, "%s: the device cannot return log-sum-exp (TKV_CAP_LSE)", op);
    if (a->n_seqs == 0 || !a->seqs || (!a->q && !a->q_dev) || (!a->out && !a->out_dev))
        return tkv_error(TKV_EINVAL, "%s: %s", op,
                         a->n_seqs == 0 ? "n_seqs is 0" : !a->seqs ? "seqs is NULL" : !a->q && !a->q_dev ? "q is NULL"
                                                                                         : "out is NULL");
    if ((a->q && a->q_dev) || (a->out && a->out_dev))
        return tkv_error(TKV_EINVAL, "%s: %s both in host and device memory", op, a->q && a->q_dev ? "q" : "out");
    if (a->out_dev && (a->lse || a->device_ns || a->rows_skipped))
        return tkv_error(TKV_EINVAL, "%s: out in device memory (queued) with %s", op,
                         a->lse ? "lse" : a->device_ns ? "device_ns" : "rows_skipped");
    if (a->seq_size < sizeof(struct tkv_attn_seq))
        return tkv_error(TKV_EINVAL, "%s: seq_size %u < %zu", op, a->seq_size, sizeof(struct tkv_attn_seq));
    uint32_t next_q = 0, max_ctx = 0, max_q = 0, first_nq = 0;
    for (uint32_t s = 0; s < a->n_seqs; s++) {
        const struct tkv_attn_seq *q = (const struct tkv_attn_seq *)((const char *)a->seqs + (size_t)s * a->seq_size);
        if (q->n_q == 0 || q->n_q > q->n_ctx)
            return tkv_error(TKV_EINVAL, "%s: sequence %u has n_q %u and n_ctx %u (need 1 <= n_q <= n_ctx)", op, s,
                             q->n_q, q->n_ctx);
        if (caps->max_q_per_seq && q->n_q > caps->max_q_per_seq)
            return tkv_error(TKV_EUNSUPPORTED, "%s: sequence %u has %u query tokens, the device takes at most %u", op,
                             s, q->n_q, caps->max_q_per_seq);
        if (s == 0)
            first_nq = q->n_q;
        else if (q->n_q != first_nq && !(caps->features & TKV_CAP_MIXED_NQ))
            return tkv_error(TKV_EUNSUPPORTED, "%s: sequences with different n_q in one call (TKV_CAP_MIXED_NQ)", op);
        if (q->q_first != next_q)
            return tkv_error(TKV_EINVAL, "%s: sequence %u q_first %u, expected %u", op, s, q->q_first, next_q);
        next_q += q->n_q;
        if (q->block_first > a->n_blocks)
            return tkv_error(TKV_ERANGE, "%s: sequence %u block_first %u beyond the %u-entry table", op, s,
                             q->block_first, a->n_blocks);
        int r;
        if ((r = tkv_validate_blocks(&a->k, kb, a->blocks + q->block_first, a->n_blocks - q->block_first, 0,
                                     q->n_ctx, op, "K")) != TKV_OK ||
            (r = tkv_validate_blocks(&a->v, vb, a->blocks + q->block_first, a->n_blocks - q->block_first, 0,
                                     q->n_ctx, op, "V")) != TKV_OK) {
            tkv_error_prefix("sequence %u", s);
            return r;
        }
        max_ctx = q->n_ctx > max_ctx ? q->n_ctx : max_ctx;
        max_q = q->n_q > max_q ? q->n_q : max_q;
    }
    if (next_q != a->n_q_total || max_ctx != a->max_n_ctx || max_q != a->max_n_q)
        return tkv_error(TKV_EINVAL, "%s: n_q_total %u / max_n_ctx %u / max_n_q %u disagree with the sequences (%u, %u, %u)",
                         op, a->n_q_total, a->max_n_ctx, a->max_n_q, next_q, max_ctx, max_q);
    const uint64_t n = (uint64_t)a->n_q_total * a->n_q_heads * a->k.fmt.head_dim;
    const size_t end = offsetof(struct tkv_attention_args, out_dev) + sizeof a->out_dev;
    if ((a->q_dev && (rc = device_tensor(caps, a->struct_size, end, a->q_dev, n, op, "q_dev")) != TKV_OK) ||
        (a->out_dev && (rc = device_tensor(caps, a->struct_size, end, a->out_dev, n, op, "out_dev")) != TKV_OK))
        return rc;
    return TKV_OK;
}

int tkv_validate_append_attention(const struct tkv_append_args *k, const struct tkv_append_args *v,
                                  const struct tkv_attention_args *a)
{
    static const char op[] = "append_attention";
    if (a->n_seqs != 1)
        return tkv_error(TKV_EINVAL, "%s: %u sequences (one sequence a call)", op, a->n_seqs);
    const struct tkv_attn_seq *q = a->seqs;
    if (k->n_tokens != v->n_tokens || k->first_pos != v->first_pos || k->n_heads != v->n_heads ||
        k->n_heads != a->n_kv_heads)
        return tkv_error(TKV_EINVAL, "%s: the keys' and values' appends differ (%u / %u tokens at %u / %u, %u / %u "
                         "heads; attention %u kv heads)", op, k->n_tokens, v->n_tokens, k->first_pos, v->first_pos,
                         k->n_heads, v->n_heads, a->n_kv_heads);
    if (q->n_q != k->n_tokens || (uint64_t)k->first_pos + k->n_tokens != q->n_ctx)
        return tkv_error(TKV_EINVAL, "%s: the attention's n_q %u / n_ctx %u are not the %u appended tokens at %u and "
                         "their sequence", op, q->n_q, q->n_ctx, k->n_tokens, k->first_pos);
    /* the rows appended are the rows the attention reads last: the same
     * block-table entries */
    const uint32_t bt = a->k.block_tokens, b0 = k->first_pos / bt, b1 = (q->n_ctx - 1u) / bt;
    for (uint32_t b = b0; b <= b1; b++)
        if (k->blocks[b] != a->blocks[q->block_first + b] || v->blocks[b] != a->blocks[q->block_first + b])
            return tkv_error(TKV_EINVAL, "%s: block %u of the appends is not the attention's", op, b);
    return TKV_OK;
}

int tkv_caps_check_cache(const struct tkv_device_caps *caps, uint32_t n_layers, const uint32_t *k_types,
                         const uint32_t *v_types, uint32_t head_dim, uint32_t rotation, uint32_t scale_mode,
                         uint32_t block_tokens, const char *device)
{
    if (!(caps->features & TKV_CAP_PAGED))
        return tkv_error(TKV_EUNSUPPORTED, "device %s: no paged rows (TKV_CAP_PAGED)", device);
    if (head_dim > caps->head_dim_max)
        return tkv_error(TKV_EUNSUPPORTED, "device %s: head_dim %u unsupported (at most %u)", device, head_dim,
                         caps->head_dim_max);
    if (caps->max_block_tokens && block_tokens > caps->max_block_tokens)
        return tkv_error(TKV_EUNSUPPORTED, "device %s: block_tokens %u unsupported (at most %u)", device, block_tokens,
                         caps->max_block_tokens);
    /* the additions of format revision 1 have their own feature bits
     * (turbokv_caps.h): where one is missing, the message names it */
    const char *no_split = caps->features & TKV_CAP_OUTLIER_TYPES ? "" : ": the device lacks TKV_CAP_OUTLIER_TYPES";
    const char *no_rotor = caps->features & TKV_CAP_ROTOR ? "" : ": the device lacks TKV_CAP_ROTOR";
    int turbo = 0;
    for (uint32_t l = 0; l < n_layers; l++) {
        if (!(caps->k_types & (1u << k_types[l])))
            return tkv_error(TKV_EUNSUPPORTED, "device %s: key type %s unsupported (layer %u)%s", device,
                             tkv_type_name(k_types[l]), l, tkv_type_is_outlier(k_types[l]) ? no_split : "");
        if (!(caps->v_types & (1u << v_types[l])))
            return tkv_error(TKV_EUNSUPPORTED, "device %s: value type %s unsupported (layer %u)%s", device,
                             tkv_type_name(v_types[l]), l, tkv_type_is_outlier(v_types[l]) ? no_split : "");
        turbo |= tkv_type_bits(k_types[l]) || tkv_type_bits(v_types[l]);
    }
    static const char *const rot_names[] = { "?", "wht", "dense", "none", "rotor" };
    if (turbo && !(caps->rotations & (1u << rotation)))
        return tkv_error(TKV_EUNSUPPORTED, "device %s: rotation %s unsupported%s", device,
                         rotation < TKV_ROTATION_COUNT ? rot_names[rotation] : "?",
                         rotation == TKV_ROTATION_ROTOR ? no_rotor : "");
    if (turbo && !(caps->scale_modes & (1u << scale_mode)))
        return tkv_error(TKV_EUNSUPPORTED, "device %s: scale mode %s unsupported", device,
                         scale_mode == TKV_SCALE_NORM ? "norm" : "norm-corrected");
    return TKV_OK;
}
