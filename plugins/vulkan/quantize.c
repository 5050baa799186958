/* SPDX-License-Identifier: MIT */
/*
 * The quantize_append and dequantize ops: the rows go up to the device with
 * the slice of the sequence's block table they need, through the quantize or
 * rows shader (which find each row's block), and (dequantize) back. Large
 * calls are cut into pieces of at most VK_OP_CHUNK bytes of floats, each one
 * submit, so that scratch memory stays bounded. The core has validated the
 * arguments (shapes, formats, every block inside the pool).
 */
#include <stdlib.h>
#include <string.h>

#include "vk.h"

#define VK_OP_CHUNK (64ull << 20)
/* Calls of at most this many rows (kv heads x tokens) are spread one row a
 * workgroup (rows_per_workgroup). */
#define VK_SMALL_CALL_ROWS 1024u
/* Where the non-finite counter sits in the work buffer, before the rest. */
#define VK_COUNTER_BYTES 64u

static uint64_t align64(uint64_t x) { return (x + 63u) & ~(uint64_t)63u; }

/* Tokens per submit: VK_OP_CHUNK bytes of floats, at least one token. */
static uint32_t tokens_per_submit(uint32_t n_heads, uint32_t head_dim)
{
    uint64_t token_bytes = (uint64_t)n_heads * head_dim * sizeof(float);
    return token_bytes >= VK_OP_CHUNK ? 1u : (uint32_t)(VK_OP_CHUNK / token_bytes);
}

/* Measurement knobs of the appends (plugins/vulkan/README.md), read once:
 * TURBO_VK_APPEND_RECORD=legacy (a device append records the counter's
 * fill, the block table slice and a barrier before its dispatch, and the
 * full exit barrier, as before), full (the full exit barrier), nobarrier
 * (no entry or exit barrier: wrong ordering, measurement only);
 * TURBO_VK_QUANTIZE_ROWS=N (rows per workgroup); TURBO_VK_QUANTIZE_STOP=N
 * (the turbo path stops after phase N: wrong rows, measurement only). */
enum { RECORD_DEFAULT, RECORD_LEGACY, RECORD_FULL, RECORD_NOBARRIER };
static struct {
    int read, record;
    uint32_t rows, stop;
} knobs;

static void read_knobs(void)
{
    if (knobs.read)
        return;
    const char *r = getenv("TURBO_VK_APPEND_RECORD"), *n = getenv("TURBO_VK_QUANTIZE_ROWS");
    const char *stop = getenv("TURBO_VK_QUANTIZE_STOP");
    knobs.record = !r                            ? RECORD_DEFAULT
                   : strcmp(r, "legacy") == 0    ? RECORD_LEGACY
                   : strcmp(r, "full") == 0      ? RECORD_FULL
                   : strcmp(r, "nobarrier") == 0 ? RECORD_NOBARRIER
                                                 : RECORD_DEFAULT;
    knobs.rows = n ? (uint32_t)strtoul(n, NULL, 10) : 0;
    knobs.stop = stop ? (uint32_t)strtoul(stop, NULL, 10) & 15u : 0;
    knobs.read = 1;
}

/* Rows per workgroup: a call of few rows gets one row a workgroup (or as
 * many as fill its TKV_VK_WG invocations), so that a decode step's token
 * runs on as many workgroups as it has heads, each sum and each element of
 * a row on its own invocation; larger calls hold TKV_VK_ROWS_ELEMS values a
 * workgroup. */
static uint32_t rows_per_workgroup(uint64_t n_rows, uint32_t head_dim)
{
    const uint32_t most = TKV_VK_ROWS_ELEMS / head_dim;
    read_knobs();
    if (knobs.rows)
        return knobs.rows < most ? knobs.rows : most;
    if (n_rows > VK_SMALL_CALL_ROWS)
        return most;
    return head_dim >= TKV_VK_WG ? 1u : TKV_VK_WG / head_dim;
}

static uint32_t quantize_flags(const struct vk_layout *l)
{
    return vk_quantize_flags(l) | knobs.stop << 24; /* TKV_VK_QUANTIZE_STOP_SHIFT in quantize.comp */
}

/* Rows in the host's device memory (ABI 2.2): the quantize shader reads f32
 * rows where they are, f16 / bf16 rows widened into work first
 * (shaders/convert.comp). Recorded into the host's command buffer, or
 * submitted to its queue, not waited for. The non-finite count is not kept
 * (such rows are not in the core's stats). Where the call's tokens lie in
 * one block (a decode step's token always does) its address goes in the
 * push constants and f32 rows need nothing but the dispatch between the
 * call's entry and exit barriers; else the block table slice rides in the
 * commands (vkCmdUpdateBuffer) with a barrier before the dispatch. */
static int append_device(struct vk_device *dev, const struct tkv_append_args *a, const struct vk_layout *l,
                         int pair_open)
{
    static const char op[] = "quantize_append";
    const struct tkv_pool *pool = &a->pool;
    const struct vk_buffer *buf = vk_buffer_of(pool->buf);
    const struct tkv_device_tensor *t = a->src_dev;
    const uint32_t bt = pool->block_tokens, block0 = a->first_pos / bt;
    const uint32_t n_slice = (uint32_t)(((uint64_t)a->first_pos + a->n_tokens - 1u) / bt) - block0 + 1u;
    const uint64_t n = (uint64_t)a->n_tokens * a->n_heads * l->head_dim;
    read_knobs();
    const int legacy = knobs.record == RECORD_LEGACY, one_block = n_slice == 1 && !legacy;
    const uint64_t slice_bytes = one_block ? 0 : (uint64_t)n_slice * sizeof(uint32_t);
    const uint64_t src_at = align64(VK_COUNTER_BYTES + slice_bytes);
    const int widen = t->elem != TKV_ELEM_F32, scratch = widen || !one_block;
    VkDeviceAddress rows;
    int rc;
    if ((rc = vk_tensor_address(dev, t, n, op, "rows", &rows)) != TKV_OK ||
        (scratch && (rc = vk_scratch(dev, &dev->work, src_at + (widen ? n * sizeof(float) : 0), 0, op)) != TKV_OK))
        return rc;
    const uint32_t n_rows = a->n_tokens * a->n_heads, per_wg = rows_per_workgroup(n_rows, l->head_dim);
    const uint64_t work = scratch ? dev->work->address : 0;
    struct vk_quantize_push push = {
        .src = widen ? work + src_at : rows,
        .pool = buf->address + (one_block ? (uint64_t)a->blocks[block0] * pool->block_stride : 0),
        .head_stride = pool->head_stride,
        .block_stride = pool->block_stride,
        .blocks = one_block ? 0 : work + VK_COUNTER_BYTES,
        .math = dev->math_buf->address,
        .counter = legacy ? work : 0,
        .first_pos = a->first_pos,
        .block_tokens = bt,
        .n_tokens = a->n_tokens,
        .n_heads = a->n_heads,
        .head_dim = l->head_dim,
        .row_bytes = l->row_bytes,
        .encoding = l->encoding,
        .bits = l->bits,
        .rotation = l->rotation,
        .flags = quantize_flags(l),
        .rows_per_wg = per_wg,
        .q8_block = TKV_Q8_0_BLOCK,
    };
    memcpy(push.groups, l->groups, sizeof push.groups);
    /* a call that dispatches only (f32 rows in one block) needs its
     * entry barrier towards compute alone; a transfer (the slice) or the
     * widening needs the full one */
    /* the keys' and the values' appends of one cache append (ABI 2.5),
     * both only dispatching: the keys' call leaves out its exit barrier and
     * the values' call its entry barrier (plugins/vulkan/README.md, "The
     * host's own device") */
    const int record_default = knobs.record == RECORD_DEFAULT;
    const int pair_first = (a->flags & TKV_APPEND_PAIR_FIRST) && !scratch && record_default;
    const int pair_second = (a->flags & TKV_APPEND_PAIR_SECOND) && pair_open && !scratch && record_default;
    const enum vk_entry entry = knobs.record == RECORD_NOBARRIER || pair_second           ? VK_ENTRY_NONE
                                : legacy || knobs.record == RECORD_FULL || scratch ? VK_ENTRY_FULL
                                                                                     : VK_ENTRY_COMPUTE;
    if ((rc = vk_begin_queued(dev, entry, op)) != TKV_OK)
        return rc;
    if (legacy)
        vkCmdFillBuffer(dev->cmd, dev->work->buffer, 0, VK_COUNTER_BYTES, 0);
    if (!one_block)
        vk_update(dev, dev->work, VK_COUNTER_BYTES, a->blocks + block0, slice_bytes);
    if (widen && (rc = vk_record_convert(dev, rows, t->elem, work + src_at, TKV_ELEM_F32, n, op)) != TKV_OK)
        return rc;
    if (legacy || !one_block || widen)
        vk_barrier(dev);
    if ((rc = vk_dispatch(dev, dev->quantize, &push, sizeof push, ((uint64_t)n_rows + per_wg - 1) / per_wg, op)) !=
        TKV_OK)
        return rc;
    if ((rc = vk_end_queued(dev,
                            knobs.record == RECORD_NOBARRIER || pair_first ? VK_EXIT_NONE
                            : legacy || knobs.record == RECORD_FULL        ? VK_EXIT_FULL
                                                                           : VK_EXIT_READS,
                            op)) != TKV_OK)
        return rc;
    dev->pair_open = pair_first;
    return TKV_OK;
}

/* The exit barrier the keys' call of a pair left out (an execution
 * dependency, as an append's exit), where the values' call failed and so
 * recorded none after it. */
static void pair_barrier(struct vk_device *dev)
{
    static const char op[] = "quantize_append";
    if (vk_begin_queued(dev, VK_ENTRY_NONE, op) == TKV_OK)
        (void)vk_end_queued(dev, VK_EXIT_READS, op);
}

static int quantize_append(struct vk_device *dev, const struct tkv_append_args *a, int pair_open);

int vk_quantize_append(void *dev_, const struct tkv_append_args *a)
{
    struct vk_device *dev = dev_;
    /* set by a pair's keys' call that left out its exit barrier: this is
     * its values' call (ABI 2.5), whose barriers also order the keys' */
    const int pair_open = dev->pair_open;
    dev->pair_open = 0;
    int rc = quantize_append(dev, a, pair_open);
    if (rc != TKV_OK && pair_open)
        pair_barrier(dev);
    return rc;
}

static int quantize_append(struct vk_device *dev, const struct tkv_append_args *a, int pair_open)
{
    static const char op[] = "quantize_append";
    const struct tkv_pool *pool = &a->pool;
    const struct vk_buffer *buf = vk_buffer_of(pool->buf);
    struct vk_layout l;
    int rc;
    if ((rc = vk_usable(dev, op)) != TKV_OK)
        return rc;
    vk_layout_init(&pool->fmt, &l);
    if (TKV_ARGS_HAS(a, src_dev) && a->src_dev) {
        if ((rc = append_device(dev, a, &l, pair_open)) != TKV_OK)
            return rc;
        dev->stats.rows_quantized += (uint64_t)a->n_tokens * a->n_heads;
        return TKV_OK;
    }
    if ((rc = vk_may_wait(dev, op)) != TKV_OK)
        return rc;

    const uint32_t bt = pool->block_tokens, per_submit = tokens_per_submit(a->n_heads, l.head_dim);
    uint64_t nonfinite = 0;
    for (uint32_t t0 = 0; t0 < a->n_tokens; t0 += per_submit) {
        uint32_t n = a->n_tokens - t0 < per_submit ? a->n_tokens - t0 : per_submit;
        /* work and staging: counter, the block table slice of positions
         * pos0 .. pos0 + n - 1, the rows */
        uint32_t pos0 = a->first_pos + t0, block0 = pos0 / bt, n_slice = (pos0 + n - 1) / bt - block0 + 1;
        uint64_t slice_bytes = (uint64_t)n_slice * sizeof(uint32_t);
        uint64_t src_at = align64(VK_COUNTER_BYTES + slice_bytes);
        uint64_t bytes = (uint64_t)n * a->n_heads * l.head_dim * sizeof(float);
        if ((rc = vk_scratch(dev, &dev->staging, src_at + bytes, 1, op)) != TKV_OK ||
            (rc = vk_scratch(dev, &dev->work, src_at + bytes, 0, op)) != TKV_OK)
            return rc;
        unsigned char *staging = dev->staging->map;
        memcpy(staging + VK_COUNTER_BYTES, a->blocks + block0, (size_t)slice_bytes);
        memcpy(staging + src_at, a->src + (size_t)t0 * a->n_heads * l.head_dim, (size_t)bytes);
        uint32_t rows = n * a->n_heads, per_wg = rows_per_workgroup(rows, l.head_dim);
        const uint64_t work = dev->work->address;
        struct vk_quantize_push push = {
            .src = work + src_at,
            .pool = buf->address,
            .head_stride = pool->head_stride,
            .block_stride = pool->block_stride,
            .blocks = work + VK_COUNTER_BYTES,
            .math = dev->math_buf->address,
            .counter = work,
            .first_pos = pos0,
            .block_tokens = bt,
            .n_tokens = n,
            .n_heads = a->n_heads,
            .head_dim = l.head_dim,
            .row_bytes = l.row_bytes,
            .encoding = l.encoding,
            .bits = l.bits,
            .rotation = l.rotation,
            .flags = quantize_flags(&l),
            .rows_per_wg = per_wg,
            .q8_block = TKV_Q8_0_BLOCK,
        };
        memcpy(push.groups, l.groups, sizeof push.groups);
        if ((rc = vk_begin(dev, op)) != TKV_OK)
            return rc;
        vk_copy(dev, dev->staging, VK_COUNTER_BYTES, dev->work, VK_COUNTER_BYTES, src_at + bytes - VK_COUNTER_BYTES);
        vkCmdFillBuffer(dev->cmd, dev->work->buffer, 0, VK_COUNTER_BYTES, 0);
        vk_barrier(dev);
        if ((rc = vk_dispatch(dev, dev->quantize, &push, sizeof push, ((uint64_t)rows + per_wg - 1) / per_wg, op)) !=
            TKV_OK)
            return rc;
        vk_barrier(dev);
        vk_copy(dev, dev->work, 0, dev->staging, 0, sizeof(uint32_t));
        if ((rc = vk_submit(dev, op)) != TKV_OK)
            return rc;
        uint32_t counted;
        memcpy(&counted, staging, sizeof counted);
        nonfinite += counted;
    }
    dev->stats.rows_quantized += (uint64_t)a->n_tokens * a->n_heads;
    if (a->n_nonfinite)
        *a->n_nonfinite = nonfinite;
    return TKV_OK;
}

int vk_dequantize(void *dev_, const struct tkv_dequant_args *a)
{
    static const char op[] = "dequantize";
    struct vk_device *dev = dev_;
    const struct tkv_pool *pool = &a->pool;
    const struct vk_buffer *buf = vk_buffer_of(pool->buf);
    struct vk_layout l;
    int rc;
    if ((rc = vk_usable(dev, op)) != TKV_OK || (rc = vk_may_wait(dev, op)) != TKV_OK)
        return rc;
    vk_layout_init(&pool->fmt, &l);

    const uint32_t bt = pool->block_tokens, per_submit = tokens_per_submit(a->n_heads, l.head_dim);
    for (uint32_t t0 = 0; t0 < a->n_tokens; t0 += per_submit) {
        uint32_t n = a->n_tokens - t0 < per_submit ? a->n_tokens - t0 : per_submit;
        /* work and staging: the block table slice, then the floats */
        uint32_t pos0 = a->first_pos + t0, block0 = pos0 / bt, n_slice = (pos0 + n - 1) / bt - block0 + 1;
        uint64_t slice_bytes = (uint64_t)n_slice * sizeof(uint32_t), out_at = align64(slice_bytes);
        uint64_t bytes = (uint64_t)n * a->n_heads * l.head_dim * sizeof(float);
        if ((rc = vk_scratch(dev, &dev->staging, out_at + bytes, 1, op)) != TKV_OK ||
            (rc = vk_scratch(dev, &dev->work, out_at + bytes, 0, op)) != TKV_OK)
            return rc;
        unsigned char *staging = dev->staging->map;
        memcpy(staging, a->blocks + block0, (size_t)slice_bytes);
        const uint64_t work = dev->work->address;
        struct vk_rows_push push = {
            .src = buf->address,
            .dst = work + out_at,
            .blocks = work,
            .head_stride = pool->head_stride,
            .block_stride = pool->block_stride,
            .first_pos = pos0,
            .block_tokens = bt,
            .n_heads = a->n_heads,
            .n_rows = n * a->n_heads,
            .row_bytes = l.row_bytes,
            .dst_stride = l.head_dim,
        };
        if ((rc = vk_begin(dev, op)) != TKV_OK)
            return rc;
        vk_copy(dev, dev->staging, 0, dev->work, 0, slice_bytes);
        vk_barrier(dev);
        if ((rc = vk_record_rows(dev, &l, &push, TKV_VK_FLAG_PAGED | TKV_VK_FLAG_INVERSE, op)) != TKV_OK)
            return rc;
        vk_barrier(dev);
        vk_copy(dev, dev->work, out_at, dev->staging, out_at, bytes);
        if ((rc = vk_submit(dev, op)) != TKV_OK)
            return rc;
        memcpy(a->dst + (size_t)t0 * a->n_heads * l.head_dim, staging + out_at, (size_t)bytes);
    }
    return TKV_OK;
}
