/* SPDX-License-Identifier: MIT */
/*
 * The quantize_append and dequantize ops: rows of one sequence through
 * quantize_rows and dequantize_rows (kernels/rows.cl), one work-group per
 * row, in chunks that bound the staging. The core has checked the
 * arguments (turbokv_plugin.h); the part of the sequence's block table the
 * tokens use goes up with them.
 */
#include <string.h>

#include "ocl.h"

/* Host rows staged per launch at most. */
#define CHUNK_BYTES ((size_t)64 << 20)
/* Rows of an append staged per launch at most (pinned, two slots). */
#define APPEND_CHUNK_BYTES ((size_t)8 << 20)
/* Block-table entries ahead of an append's rows: a multiple of 16 words
 * keeps the rows aligned for the device's loads. */
#define ENTRY_ALIGN 16u
#define APPEND_DIRECT_BYTES ((size_t)64 << 10)

/* Work-items per row: enough for the butterflies of a 1024-value row. */
#define ROW_WORK_GROUP 128u

/* The work-group of kernel k's rows: ROW_WORK_GROUP, or TURBO_OCL_ROW_WG,
 * as a power of two the kernel allows */
static size_t row_wg(const struct ocl_device *d, enum ocl_kernel k)
{
    return ocl_wg_pow2(d, k, d->tune_row_wg ? d->tune_row_wg : ROW_WORK_GROUP);
}

/* The block-table entries b0 (returned) .. *b1 that tokens first .. first
 * + n - 1 use (n >= 1). */
static uint32_t block_span(uint32_t block_tokens, uint32_t first, uint32_t n, uint32_t *b1)
{
    *b1 = (uint32_t)(((uint64_t)first + n - 1u) / block_tokens);
    return first / block_tokens;
}

/* Copies n floats and counts the non-finite ones (exponent all ones), which
 * the kernel stores as 0. */
static uint64_t copy_counting(uint32_t *dst, const uint32_t *src, size_t n)
{
    uint64_t bad = 0;
    for (size_t i = 0; i < n; i++) {
        uint32_t x = src[i];
        dst[i] = x;
        bad += (x & 0x7f800000u) == 0x7f800000u;
    }
    return bad;
}

/* An append does not wait for the device: its rows and block-table entries
 * are copied into a pinned slot (the non-finite values counted on the way),
 * written to the slot's device buffer and quantized, all queued on the
 * in-order queue, so that the next op sees the rows. A slot is reused once
 * the write that read it has completed. */
static int append_chunks(struct ocl_device *d, const struct tkv_append_args *a, uint64_t *nonfinite)
{
    static const char op[] = "quantize_append";
    const struct tkv_pool *pool = &a->pool;
    const size_t row_floats = (size_t)a->n_heads * pool->fmt.head_dim;
    const size_t token_bytes = row_floats * sizeof(float);
    const uint32_t chunk =
        token_bytes >= APPEND_CHUNK_BYTES ? 1u : (uint32_t)(APPEND_CHUNK_BYTES / token_bytes);
    const size_t wg = row_wg(d, OCL_K_QUANTIZE);
    cl_uint n_heads = a->n_heads, head_dim = pool->fmt.head_dim, rb = pool->row_bytes;
    cl_uint type = pool->fmt.type, rotation = pool->fmt.rotation;
    cl_uint scale_mode = pool->fmt.scale_mode, bt = pool->block_tokens;
    cl_ulong block_stride = pool->block_stride, head_stride = pool->head_stride;
    cl_mem dst = ocl_buffer_of(pool->buf)->mem;
    int rc;
    for (uint32_t t0 = 0; t0 < a->n_tokens; t0 += chunk) {
        const uint32_t n = a->n_tokens - t0 < chunk ? a->n_tokens - t0 : chunk;
        const uint32_t first = a->first_pos + t0;
        uint32_t b1;
        const uint32_t b0 = block_span(bt, first, n, &b1);
        const uint32_t entries = (b1 - b0 + 1u + ENTRY_ALIGN - 1u) / ENTRY_ALIGN * ENTRY_ALIGN;
        const size_t bytes = (size_t)entries * sizeof(cl_uint) + n * token_bytes;
        struct ocl_append_slot *slot = &d->append[d->append_next];
        d->append_next = (d->append_next + 1u) % OCL_APPEND_SLOTS;
        cl_int err;
        if (slot->written) {
            err = clWaitForEvents(1, &slot->written);
            clReleaseEvent(slot->written);
            slot->written = NULL;
            if (err != CL_SUCCESS)
                return ocl_fail(err, op, "clWaitForEvents");
        }
        if ((rc = ocl_pinned_reserve(d, &slot->host, bytes, op)) != TKV_OK ||
            (rc = ocl_scratch_reserve(d, &slot->dev, bytes, op, "row")) != TKV_OK)
            return rc;
        cl_uint *w = slot->host.host;
        memcpy(w, a->blocks + b0, (size_t)(b1 - b0 + 1u) * sizeof(cl_uint));
        *nonfinite += copy_counting(w + entries, (const uint32_t *)a->src + t0 * row_floats,
                                    n * row_floats);
        /* measurements: small appends read the pinned slot directly
         * (TURBO_OCL_APPEND_DIRECT, one command instead of two) */
        const int direct = d->tune_append_direct && bytes <= APPEND_DIRECT_BYTES;
        cl_mem from = direct ? slot->host.mem : slot->dev.mem;
        if (!direct && (err = clEnqueueWriteBuffer(d->queue, slot->dev.mem, CL_FALSE, 0, bytes, w,
                                                   0, NULL, &slot->written)) != CL_SUCCESS) {
            slot->written = NULL;
            return ocl_fail(err, op, "clEnqueueWriteBuffer");
        }
        cl_uint src_at = entries, block0 = b0, first_pos = first;
        const struct ocl_karg args[] = {
            OCL_ARG(from),          OCL_ARG(src_at),       OCL_ARG(n_heads),
            OCL_ARG(head_dim),      OCL_ARG(dst),          OCL_ARG(from),
            OCL_ARG(block0),        OCL_ARG(first_pos),    OCL_ARG(bt),
            OCL_ARG(block_stride),  OCL_ARG(head_stride),  OCL_ARG(rb),
            OCL_ARG(type),          OCL_ARG(rotation),     OCL_ARG(scale_mode),
            OCL_ARG(d->tables),
        };
        size_t groups[3] = { (size_t)n * a->n_heads, 1, 1 };
        if ((rc = ocl_args(d, OCL_K_QUANTIZE, op, sizeof args / sizeof args[0], args)) != TKV_OK ||
            (rc = ocl_launch(d, OCL_K_QUANTIZE, op, 1, groups, wg,
                             direct ? &slot->written : NULL)) != TKV_OK)
            return rc;
    }
    /* queued: the device starts on it now, not at the next op's wait (a
     * pair's keys with its values, the next op) */
    if (TKV_ARGS_HAS(a, flags) && (a->flags & TKV_APPEND_PAIR_FIRST))
        return TKV_OK;
    cl_int err = clFlush(d->queue);
    return err == CL_SUCCESS ? TKV_OK : ocl_fail(err, op, "clFlush");
}

/* Block-table entries b0 .. b1 of blocks into scratch.table (where the
 * kernels of appends and dequantize read them) from a staging slot, unless
 * it holds them already (the previous write's: K and V of one token, and
 * every layer of a decode step, write the same entries; a write costs ~10
 * us of host time on NVIDIA's driver). */
static int table_upload(struct ocl_device *d, const uint32_t *blocks, uint32_t b0, uint32_t b1,
                        const char *op)
{
    const uint32_t n_entries = b1 - b0 + 1u;
    const size_t bytes = (size_t)n_entries * sizeof(cl_uint);
    if (d->table_valid && d->table_b0 == b0 && d->table_n == n_entries &&
        !memcmp(d->table_entries, blocks + b0, bytes))
        return TKV_OK;
    d->table_valid = 0;
    void *host;
    uint32_t slot;
    int rc;
    if ((rc = ocl_scratch_reserve(d, &d->scratch.table, bytes, op, "block table")) != TKV_OK ||
        (rc = ocl_stage_take(d, bytes, op, &host, &slot)) != TKV_OK)
        return rc;
    memcpy(host, blocks + b0, bytes);
    if ((rc = ocl_stage_write(d, slot, d->scratch.table.mem, bytes, op)) != TKV_OK)
        return rc;
    if (n_entries <= OCL_TABLE_ENTRIES) {
        memcpy(d->table_entries, blocks + b0, bytes);
        d->table_b0 = b0;
        d->table_n = n_entries;
        d->table_valid = 1;
    }
    return TKV_OK;
}

/* Rows in the host's device memory (ABI 2.2): quantize_rows reads them
 * where they are (f32) or widened on the device (f16, bf16, host.c); the
 * block-table entries by table_upload. Queued on the host's queue, not
 * waited for; the caller flushes. */
static int append_device(struct ocl_device *d, const struct tkv_append_args *a)
{
    static const char op[] = "quantize_append";
    const struct tkv_pool *pool = &a->pool;
    const uint64_t n = (uint64_t)a->n_tokens * a->n_heads * pool->fmt.head_dim;
    uint32_t b1;
    const uint32_t b0 = block_span(pool->block_tokens, a->first_pos, a->n_tokens, &b1);
    cl_mem from, table;
    cl_uint src_at;
    int rc;
    if ((rc = ocl_tensor_f32(d, a->src_dev, n, op, &from, &src_at)) != TKV_OK ||
        (rc = table_upload(d, a->blocks, b0, b1, op)) != TKV_OK)
        return rc;
    table = d->scratch.table.mem;
    const size_t wg = row_wg(d, OCL_K_QUANTIZE);
    cl_uint n_heads = a->n_heads, head_dim = pool->fmt.head_dim, rb = pool->row_bytes;
    cl_uint type = pool->fmt.type, rotation = pool->fmt.rotation;
    cl_uint scale_mode = pool->fmt.scale_mode, bt = pool->block_tokens;
    cl_uint block0 = b0, first_pos = a->first_pos;
    cl_ulong block_stride = pool->block_stride, head_stride = pool->head_stride;
    cl_mem dst = ocl_buffer_of(pool->buf)->mem;
    const struct ocl_karg args[] = {
        OCL_ARG(from),          OCL_ARG(src_at),       OCL_ARG(n_heads),
        OCL_ARG(head_dim),      OCL_ARG(dst),          OCL_ARG(table),
        OCL_ARG(block0),        OCL_ARG(first_pos),    OCL_ARG(bt),
        OCL_ARG(block_stride),  OCL_ARG(head_stride),  OCL_ARG(rb),
        OCL_ARG(type),          OCL_ARG(rotation),     OCL_ARG(scale_mode),
        OCL_ARG(d->tables),
    };
    /* the host's buffer may be a new object at a released one's address */
    d->args[OCL_K_QUANTIZE][0].set = 0;
    size_t groups[3] = { (size_t)a->n_tokens * a->n_heads, 1, 1 };
    if ((rc = ocl_args(d, OCL_K_QUANTIZE, op, sizeof args / sizeof args[0], args)) != TKV_OK ||
        (rc = ocl_launch(d, OCL_K_QUANTIZE, op, 1, groups, wg, NULL)) != TKV_OK)
        return rc;
    return TKV_OK;
}

int ocl_quantize_append(void *dev, const struct tkv_append_args *a)
{
    struct ocl_device *d = dev;
    uint64_t nonfinite = 0;
    int rc;
    if (TKV_ARGS_HAS(a, src_dev) && a->src_dev) {
        rc = append_device(d, a);
        /* queued: the device starts on it now, not at the host's wait; a
         * pair's keys are flushed with its values (the next op) */
        const int first = TKV_ARGS_HAS(a, flags) && (a->flags & TKV_APPEND_PAIR_FIRST);
        if (!(first && rc == TKV_OK)) {
            cl_int err = clFlush(d->queue);
            if (rc == TKV_OK && err != CL_SUCCESS)
                rc = ocl_fail(err, "quantize_append", "clFlush");
        }
        if (rc != TKV_OK)
            return rc; /* nothing staged in host memory the queue may still read */
        d->stats.rows_quantized += (uint64_t)a->n_tokens * a->n_heads;
        return TKV_OK;
    }
    if ((rc = append_chunks(d, a, &nonfinite)) != TKV_OK) {
        clFinish(d->queue); /* nothing queued may still read the staging */
        return rc;
    }
    d->stats.rows_quantized += (uint64_t)a->n_tokens * a->n_heads;
    if (a->n_nonfinite)
        *a->n_nonfinite = nonfinite;
    return TKV_OK;
}

static int dequantize_chunks(struct ocl_device *d, const struct tkv_dequant_args *a)
{
    static const char op[] = "dequantize";
    const struct tkv_pool *pool = &a->pool;
    const size_t token_bytes = (size_t)a->n_heads * pool->fmt.head_dim * sizeof(float);
    const uint32_t chunk = token_bytes >= CHUNK_BYTES ? 1u : (uint32_t)(CHUNK_BYTES / token_bytes);
    const size_t wg = row_wg(d, OCL_K_DEQUANTIZE);
    uint32_t b1;
    cl_uint block0 = block_span(pool->block_tokens, a->first_pos, a->n_tokens, &b1);
    int rc;
    if ((rc = ocl_scratch_reserve(d, &d->scratch.rows,
                                  (a->n_tokens < chunk ? a->n_tokens : chunk) * token_bytes, op,
                                  "row")) != TKV_OK ||
        (rc = table_upload(d, a->blocks, block0, b1, op)) != TKV_OK)
        return rc;
    cl_uint n_heads = a->n_heads, bt = pool->block_tokens, rb = pool->row_bytes;
    cl_uint head_dim = pool->fmt.head_dim, type = pool->fmt.type, rotation = pool->fmt.rotation;
    cl_uint first_pos = 0;
    cl_ulong block_stride = pool->block_stride, head_stride = pool->head_stride;
    cl_mem buf = ocl_buffer_of(pool->buf)->mem;
    const struct ocl_karg args[] = {
        OCL_ARG(buf),          OCL_ARG(d->scratch.table.mem), OCL_ARG(block0),
        OCL_ARG(first_pos),    OCL_ARG(n_heads),              OCL_ARG(bt),
        OCL_ARG(block_stride), OCL_ARG(head_stride),          OCL_ARG(rb),
        OCL_ARG(head_dim),     OCL_ARG(type),                 OCL_ARG(rotation),
        OCL_ARG(d->tables),    OCL_ARG(d->scratch.rows.mem),
    };
    for (uint32_t t0 = 0; t0 < a->n_tokens; t0 += chunk) {
        uint32_t n = a->n_tokens - t0 < chunk ? a->n_tokens - t0 : chunk;
        size_t groups[3] = { (size_t)n * a->n_heads, 1, 1 };
        first_pos = a->first_pos + t0;
        if ((rc = ocl_args(d, OCL_K_DEQUANTIZE, op, sizeof args / sizeof args[0], args)) !=
                TKV_OK ||
            (rc = ocl_launch(d, OCL_K_DEQUANTIZE, op, 1, groups, wg, NULL)) != TKV_OK)
            return rc;
        cl_int err = clEnqueueReadBuffer(d->queue, d->scratch.rows.mem, CL_TRUE, 0,
                                         n * token_bytes, (char *)a->dst + t0 * token_bytes, 0,
                                         NULL, NULL);
        if (err != CL_SUCCESS)
            return ocl_fail(err, op, "clEnqueueReadBuffer");
    }
    return TKV_OK;
}

int ocl_dequantize(void *dev, const struct tkv_dequant_args *a)
{
    struct ocl_device *d = dev;
    int rc = dequantize_chunks(d, a);
    if (rc != TKV_OK)
        clFinish(d->queue); /* nothing queued may still read the staging */
    return rc;
}

/* Both rows f32 in the host's buffers at word offsets the kernel's uint
 * reaches, and the same tokens, heads and block-table entries. */
int ocl_pair_in_one_launch(const struct tkv_append_args *k, const struct tkv_append_args *v)
{
    const struct tkv_device_tensor *ks = TKV_ARGS_HAS(k, src_dev) ? k->src_dev : NULL;
    const struct tkv_device_tensor *vs = TKV_ARGS_HAS(v, src_dev) ? v->src_dev : NULL;
    if (!ks || !vs || ks->elem != TKV_ELEM_F32 || vs->elem != TKV_ELEM_F32 ||
        ks->offset / 4u > UINT32_MAX || vs->offset / 4u > UINT32_MAX)
        return 0;
    if (k->n_tokens != v->n_tokens || k->first_pos != v->first_pos || k->n_heads != v->n_heads ||
        k->pool.fmt.head_dim != v->pool.fmt.head_dim ||
        k->pool.block_tokens != v->pool.block_tokens ||
        (uint64_t)k->n_tokens * k->n_heads > UINT32_MAX / 2u)
        return 0;
    uint32_t b1;
    const uint32_t b0 = block_span(k->pool.block_tokens, k->first_pos, k->n_tokens, &b1);
    return k->blocks == v->blocks ||
           !memcmp(k->blocks + b0, v->blocks + b0, ((size_t)b1 - b0 + 1u) * sizeof(uint32_t));
}

/* The keys' and values' appends of one cache append (ABI 2.6): f32 rows in
 * the host's buffers go up as one launch of quantize_pair_rows (a decode
 * step's layer: one launch less, ~7.6 us of host time on NVIDIA's driver
 * and a kernel's latency on the device); anything else as the two
 * appends, in order. */
int ocl_quantize_append_pair(void *dev, const struct tkv_append_args *k,
                             const struct tkv_append_args *v)
{
    static const char op[] = "quantize_append";
    struct ocl_device *d = dev;
    if (!ocl_pair_in_one_launch(k, v)) {
        int rc = ocl_quantize_append(dev, k);
        return rc != TKV_OK ? rc : ocl_quantize_append(dev, v);
    }
    const struct tkv_pool *kp = &k->pool, *vp = &v->pool;
    const uint64_t n = (uint64_t)k->n_tokens * k->n_heads * kp->fmt.head_dim;
    uint32_t b1;
    const uint32_t b0 = block_span(kp->block_tokens, k->first_pos, k->n_tokens, &b1);
    cl_mem ks, vs;
    cl_uint k_at, v_at;
    int rc;
    if ((rc = ocl_tensor_f32(d, k->src_dev, n, op, &ks, &k_at)) != TKV_OK ||
        (rc = ocl_tensor_f32(d, v->src_dev, n, op, &vs, &v_at)) != TKV_OK ||
        (rc = table_upload(d, k->blocks, b0, b1, op)) != TKV_OK)
        return rc;
    cl_uint n_rows = k->n_tokens * k->n_heads, n_heads = k->n_heads, head_dim = kp->fmt.head_dim;
    cl_uint block0 = b0, first_pos = k->first_pos, bt = kp->block_tokens;
    cl_uint k_rb = kp->row_bytes, v_rb = vp->row_bytes;
    cl_ulong k_bs = kp->block_stride, k_hs = kp->head_stride;
    cl_ulong v_bs = vp->block_stride, v_hs = vp->head_stride;
    cl_uint4 k_fmt = { { kp->fmt.type, kp->fmt.rotation, kp->fmt.scale_mode, 0 } };
    cl_uint4 v_fmt = { { vp->fmt.type, vp->fmt.rotation, vp->fmt.scale_mode, 0 } };
    cl_mem k_dst = ocl_buffer_of(kp->buf)->mem, v_dst = ocl_buffer_of(vp->buf)->mem;
    cl_mem table = d->scratch.table.mem;
    const struct ocl_karg args[] = {
        OCL_ARG(ks),     OCL_ARG(k_at),   OCL_ARG(vs),    OCL_ARG(v_at),      OCL_ARG(n_rows),
        OCL_ARG(n_heads), OCL_ARG(head_dim), OCL_ARG(k_dst), OCL_ARG(v_dst),  OCL_ARG(table),
        OCL_ARG(block0), OCL_ARG(first_pos), OCL_ARG(bt), OCL_ARG(k_bs),      OCL_ARG(k_hs),
        OCL_ARG(k_rb),   OCL_ARG(k_fmt),  OCL_ARG(v_bs),  OCL_ARG(v_hs),      OCL_ARG(v_rb),
        OCL_ARG(v_fmt),  OCL_ARG(d->tables),
    };
    /* the host's buffers may be new objects at released ones' addresses */
    d->args[OCL_K_QUANTIZE_PAIR][0].set = 0;
    d->args[OCL_K_QUANTIZE_PAIR][2].set = 0;
    const size_t wg = row_wg(d, OCL_K_QUANTIZE_PAIR);
    size_t groups[3] = { 2u * (size_t)n_rows, 1, 1 };
    cl_int err;
    if ((rc = ocl_args(d, OCL_K_QUANTIZE_PAIR, op, sizeof args / sizeof args[0], args)) != TKV_OK ||
        (rc = ocl_launch(d, OCL_K_QUANTIZE_PAIR, op, 1, groups, wg, NULL)) != TKV_OK)
        return rc;
    if ((err = clFlush(d->queue)) != CL_SUCCESS)
        return ocl_fail(err, op, "clFlush");
    d->stats.rows_quantized += 2u * (uint64_t)n_rows;
    return TKV_OK;
}
