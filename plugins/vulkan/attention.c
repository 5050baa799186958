/* SPDX-License-Identifier: MIT */
/*
 * Decode attention (struct tkv_attention_args) in one dispatch
 * (shaders/attention.comp): one workgroup per (unit, kv head, chunk of
 * rows) rotates its own queries, scores its chunk, keeps an online softmax,
 * accumulates V, and the last workgroup of each (unit, kv head) to finish
 * merges the chunks, rotates back and writes the outputs straight into the
 * host-visible staging memory. A unit is up to QT query rows (tokens x the
 * GQA group's heads) of one sequence, so sequences with different n_q share
 * a call without idle workgroups; chunks are numbered from the first one a
 * unit sees, so a sliding window costs only the chunks inside it.
 *
 * Per call the host writes the call record, the queries, the units and the
 * block table into the persistently mapped staging buffer, submits the
 * command buffer (recorded once and submitted again while the sizes and
 * buffers stay the same: every per-call value is in the call record), waits
 * once and reads the outputs from the same mapping. The chunk size spreads
 * every call over dev->target_workgroups (compute units x resident
 * workgroups per unit), whatever the context length and sequence count.
 *
 * The core has validated the call (shapes, formats against device_caps,
 * every block of every sequence inside both pools, scale, softcap,
 * threshold).
 */
#include <string.h>

#include "vk.h"

static uint64_t align_up(uint64_t x) { return (x + TKV_VK_ALIGN - 1) / TKV_VK_ALIGN * TKV_VK_ALIGN; }
static uint64_t round_up(uint64_t x, uint64_t to) { return (x + to - 1) / to * to; }

/* A sequence of the call; seqs are seq_size bytes apart. */
static const struct tkv_attn_seq *seq_at(const struct tkv_attention_args *a, uint32_t s)
{
    return (const struct tkv_attn_seq *)((const char *)a->seqs + (size_t)s * a->seq_size);
}

/* Rows [lo, hi) are visible to the query at position p. */
static uint32_t visible_lo(uint32_t p, uint32_t window) { return window && p + 1 > window ? p + 1 - window : 0; }

/* The unit of a sequence's query rows qr0 .. qr0 + qt - 1 (fewer at the end):
 * the rows [lo(p of qr0), p of its last query row] and its chunks. */
static struct vk_unit unit_of(const struct tkv_attn_seq *seq, uint32_t qr0, uint32_t qt, uint32_t ratio,
                              uint32_t window, uint64_t chunk, uint64_t *span)
{
    const uint32_t p0 = seq->n_ctx - seq->n_q, rows = seq->n_q * ratio;
    const uint32_t qr_last = (qr0 + qt < rows ? qr0 + qt : rows) - 1;
    const uint64_t lo = visible_lo(p0 + qr0 / ratio, window), hi = (uint64_t)p0 + qr_last / ratio + 1;
    *span = hi - lo;
    return (struct vk_unit){
        .n_ctx = seq->n_ctx,
        .n_q = seq->n_q,
        .q_first = seq->q_first,
        .block_first = seq->block_first,
        .qr0 = qr0,
        .c_first = (uint32_t)(lo / chunk),
        .n_chunks = (uint32_t)((hi - 1) / chunk - lo / chunk + 1),
    };
}

/* Rows per batch: a power of two up to TKV_VK_WG whose staged rows fit the
 * stage ((row_bytes + 6) / 4 + 1 words a row, shaders/attention.comp). */
static uint32_t batch_rows(uint32_t row_bytes)
{
    uint32_t br = TKV_VK_WG, words = (row_bytes + 6) / 4 + 1;
    while (br > 1 && br * words * 4 > TKV_VK_STAGE_BYTES)
        br /= 2;
    return br;
}

/* Writes the call's counters' zeros once they are (re)allocated. */
static int counters_for(struct vk_device *dev, uint64_t n, const char *op)
{
    int rc;
    uint64_t bytes = n * sizeof(uint32_t);
    if (dev->counters && dev->counters->size >= bytes)
        return TKV_OK;
    if ((rc = vk_scratch(dev, &dev->counters, bytes, 0, op)) != TKV_OK || (rc = vk_begin(dev, op)) != TKV_OK)
        return rc;
    vkCmdFillBuffer(dev->cmd, dev->counters->buffer, 0, VK_WHOLE_SIZE, 0);
    return vk_submit(dev, op);
}

static void barrier(VkCommandBuffer cmd, VkPipelineStageFlags src, VkAccessFlags src_access,
                    VkPipelineStageFlags dst, VkAccessFlags dst_access)
{
    VkMemoryBarrier b = {
        .sType = VK_STRUCTURE_TYPE_MEMORY_BARRIER, .srcAccessMask = src_access, .dstAccessMask = dst_access,
    };
    vkCmdPipelineBarrier(cmd, src, dst, 0, 1, &b, 0, NULL, 0, NULL);
}

/* Records the call's commands into dev->attention_cmd: timestamps around
 * (the inputs' copy,) the dispatch and the barrier that hands the outputs
 * to the host. */
static int record(struct vk_device *dev, const struct vk_attention_key *key, const char *op)
{
    VkCommandBuffer cmd = dev->attention_cmd;
    VkResult r;
    dev->attention_recorded = 0;
    if ((r = vkResetCommandBuffer(cmd, 0)) != VK_SUCCESS)
        return vk_fail(op, "vkResetCommandBuffer", r);
    VkCommandBufferBeginInfo begin = { .sType = VK_STRUCTURE_TYPE_COMMAND_BUFFER_BEGIN_INFO };
    if ((r = vkBeginCommandBuffer(cmd, &begin)) != VK_SUCCESS)
        return vk_fail(op, "vkBeginCommandBuffer", r);
    if (dev->timestamps) {
        vkCmdResetQueryPool(cmd, dev->timestamps, 0, 2);
        vkCmdWriteTimestamp(cmd, VK_PIPELINE_STAGE_TOP_OF_PIPE_BIT, dev->timestamps, 0);
    }
    /* earlier submissions' writes (appends, copies) before this call's reads */
    const VkPipelineStageFlags work = VK_PIPELINE_STAGE_COMPUTE_SHADER_BIT | VK_PIPELINE_STAGE_TRANSFER_BIT;
    const VkAccessFlags writes = VK_ACCESS_SHADER_WRITE_BIT | VK_ACCESS_TRANSFER_WRITE_BIT;
    barrier(cmd, work, writes, work, VK_ACCESS_SHADER_READ_BIT | writes | VK_ACCESS_TRANSFER_READ_BIT);
    if (!key->direct) {
        VkBufferCopy region = { .srcOffset = 0, .dstOffset = 0, .size = key->up_bytes };
        vkCmdCopyBuffer(cmd, key->staging, key->work, 1, &region);
        barrier(cmd, VK_PIPELINE_STAGE_TRANSFER_BIT, VK_ACCESS_TRANSFER_WRITE_BIT, VK_PIPELINE_STAGE_COMPUTE_SHADER_BIT,
                VK_ACCESS_SHADER_READ_BIT);
    }
    const uint32_t *max = dev->props.limits.maxComputeWorkGroupCount;
    uint64_t x = key->n_groups < max[0] ? key->n_groups : max[0], y = (key->n_groups + x - 1) / x, z = 1;
    if (y > max[1]) {
        z = (y + max[1] - 1) / max[1];
        y = max[1];
    }
    if (z > max[2] || key->n_groups > UINT32_MAX) {
        vkEndCommandBuffer(cmd);
        return VK_ERROR_STATUS(TKV_ERANGE, "%s: %llu workgroups exceed what the device can dispatch", op,
                               (unsigned long long)key->n_groups);
    }
    vkCmdBindPipeline(cmd, VK_PIPELINE_BIND_POINT_COMPUTE, key->pipeline);
    vkCmdPushConstants(cmd, dev->layout, VK_SHADER_STAGE_COMPUTE_BIT, 0, sizeof key->push, &key->push);
    vkCmdDispatch(cmd, (uint32_t)x, (uint32_t)y, (uint32_t)z);
    barrier(cmd, VK_PIPELINE_STAGE_COMPUTE_SHADER_BIT, VK_ACCESS_SHADER_WRITE_BIT, VK_PIPELINE_STAGE_HOST_BIT,
            VK_ACCESS_HOST_READ_BIT);
    if (dev->timestamps)
        vkCmdWriteTimestamp(cmd, VK_PIPELINE_STAGE_BOTTOM_OF_PIPE_BIT, dev->timestamps, 1);
    if ((r = vkEndCommandBuffer(cmd)) != VK_SUCCESS)
        return vk_fail(op, "vkEndCommandBuffer", r);
    dev->attention_key = *key;
    dev->attention_recorded = 1;
    return TKV_OK;
}

int vk_attention(void *dev_, const struct tkv_attention_args *a)
{
    static const char op[] = "attention";
    struct vk_device *dev = dev_;
    const struct vk_buffer *k_buf = vk_buffer_of(a->k.buf), *v_buf = vk_buffer_of(a->v.buf);
    struct vk_layout kl, vl;
    int rc;
    if ((rc = vk_usable(dev, op)) != TKV_OK)
        return rc;
    vk_layout_init(&a->k.fmt, &kl);
    vk_layout_init(&a->v.fmt, &vl);

    const uint32_t hd = kl.head_dim, ratio = a->n_q_heads / a->n_kv_heads, window = a->window;
    const uint32_t qs = kl.qjl ? 2u : 1u, va = vl.qjl ? 2u : 1u, wide = qs > va ? qs : va;
    const uint64_t n_out = (uint64_t)a->n_q_total * a->n_q_heads;

    /* Query tiles: as many query rows per workgroup as its shared memory
     * holds (queries, and the merged outputs), at most 8 (64 accumulators
     * per invocation, twice for QJL values), spread evenly over the tiles of
     * the sequence with most query rows. */
    uint32_t qt_max = TKV_VK_QUERY_TILE_FLOATS / (hd * wide);
    qt_max = qt_max > 8u / va ? 8u / va : qt_max < 1u ? 1u : qt_max;
    const uint64_t max_rows = (uint64_t)a->max_n_q * ratio, max_tiles = (max_rows + qt_max - 1) / qt_max;
    const uint32_t qt = (uint32_t)((max_rows + max_tiles - 1) / max_tiles);

    /* Units, the most rows one needs, and the rows visible in all. */
    uint64_t n_units = 0, span_max = 0, total = 0, span;
    for (uint32_t s = 0; s < a->n_seqs; s++) {
        const struct tkv_attn_seq *seq = seq_at(a, s);
        const uint32_t p0 = seq->n_ctx - seq->n_q;
        for (uint32_t qr0 = 0; qr0 < seq->n_q * ratio; qr0 += qt, n_units++) {
            unit_of(seq, qr0, qt, ratio, window, 1, &span);
            span_max = span > span_max ? span : span_max;
        }
        for (uint32_t i = 0; i < seq->n_q; i++)
            total += (uint64_t)(p0 + i + 1 - visible_lo(p0 + i, window)) * a->n_q_heads;
    }

    /* Chunks: enough workgroups to fill the device, a multiple of 16 rows
     * and at least min_chunk each, at most TKV_VK_MERGE_WEIGHTS / qt per
     * unit (its rows may start inside a chunk: one more than span / chunk). */
    uint64_t per_unit = dev->target_workgroups / (n_units * a->n_kv_heads);
    per_unit = per_unit < 1 ? 1 : per_unit;
    uint64_t chunk = round_up((span_max + per_unit - 1) / per_unit, 16);
    const uint64_t most = TKV_VK_MERGE_WEIGHTS / qt, fewest = (span_max + most - 2) / (most - 1);
    /* sparse V decides against the running max of a chunk: short chunks
     * start afresh too often and keep rows the cpu reference skips (README.md,
     * Sparse V), so with sparse V on chunks are at least sparse_chunk rows */
    const uint64_t min_chunk = a->sparse_v_threshold > 0 && dev->sparse_chunk > dev->min_chunk ? dev->sparse_chunk
                                                                                              : dev->min_chunk;
    chunk = chunk < min_chunk ? min_chunk : chunk;
    chunk = chunk < fewest ? fewest : chunk;
    uint64_t max_chunks = 0;
    for (uint32_t s = 0; s < a->n_seqs; s++)
        for (uint32_t qr0 = 0; qr0 < seq_at(a, s)->n_q * ratio; qr0 += qt) {
            uint64_t n_chunks = unit_of(seq_at(a, s), qr0, qt, ratio, window, chunk, &span).n_chunks;
            max_chunks = n_chunks > max_chunks ? n_chunks : max_chunks;
        }

    /* Score lanes per K row: up to 8, a power of two dividing the runs of 8
     * elements, within a subgroup (the lanes add up with shuffles). */
    uint32_t lanes = 8;
    while (lanes > 1 && ((hd / 8) % lanes || lanes > dev->subgroup_size))
        lanes /= 2;

    /* inputs (staging, copied to work unless read in place): the call
     * record, queries, units, block table; work: partials; staging after
     * the inputs: outputs, skip counts, lse. */
    const uint64_t q_bytes = n_out * hd * sizeof(float);
    const uint64_t q_at = TKV_VK_CALL_WORDS * sizeof(uint32_t), units_at = align_up(q_at + q_bytes);
    const uint64_t blocks_at = align_up(units_at + n_units * sizeof(struct vk_unit));
    const uint64_t up_bytes = blocks_at + (uint64_t)a->n_blocks * sizeof(uint32_t);
    const uint64_t n_partials = n_units * a->n_kv_heads * qt * max_chunks;
    const int direct = dev->direct_inputs;
    const uint64_t acc_at = direct ? 0 : align_up(up_bytes);
    const uint64_t ml_at = align_up(acc_at + n_partials * va * hd * sizeof(float));
    const uint64_t work_bytes = ml_at + n_partials * TKV_VK_ML_FLOATS * sizeof(float);
    const uint64_t out_at = align_up(up_bytes), counts_at = align_up(out_at + q_bytes);
    const uint64_t lse_at = align_up(counts_at + n_out * sizeof(uint32_t)), io_bytes = lse_at + n_out * sizeof(float);
    if (n_partials * va * hd > UINT32_MAX || n_partials * TKV_VK_ML_FLOATS > UINT32_MAX ||
        chunk * max_chunks > UINT32_MAX || n_units * a->n_kv_heads * max_chunks > UINT32_MAX ||
        n_out * hd > UINT32_MAX || io_bytes / TKV_VK_ALIGN > UINT32_MAX || ml_at / TKV_VK_ALIGN > UINT32_MAX)
        return VK_ERROR_STATUS(TKV_ERANGE,
                               "%s: %llu query rows x %u kv heads over up to %u rows is too much work for one call",
                               op, (unsigned long long)(n_out / a->n_kv_heads), a->n_kv_heads, a->max_n_ctx);
    if ((rc = vk_flush(dev, op)) != TKV_OK || /* queued copies first: the host writes staging below */
        (rc = vk_scratch(dev, &dev->work, work_bytes, 0, op)) != TKV_OK ||
        (rc = vk_scratch(dev, &dev->staging, io_bytes, 1, op)) != TKV_OK ||
        (rc = counters_for(dev, n_units * a->n_kv_heads, op)) != TKV_OK)
        return rc;

    unsigned char *staging = dev->staging->map;
    uint32_t *call = (uint32_t *)staging;
    memset(call, 0, q_at);
    call[TKV_VK_CALL_N_UNITS] = (uint32_t)n_units;
    call[TKV_VK_CALL_N_KV] = a->n_kv_heads;
    call[TKV_VK_CALL_RATIO] = ratio;
    call[TKV_VK_CALL_CHUNK] = (uint32_t)chunk;
    call[TKV_VK_CALL_MAX_CHUNKS] = (uint32_t)max_chunks;
    call[TKV_VK_CALL_BLOCK_TOKENS] = a->k.block_tokens;
    call[TKV_VK_CALL_WINDOW] = window;
    memcpy(&call[TKV_VK_CALL_SCALE], &a->scale, sizeof(float));
    memcpy(&call[TKV_VK_CALL_SOFTCAP], &a->softcap, sizeof(float));
    memcpy(&call[TKV_VK_CALL_THRESHOLD], &a->sparse_v_threshold, sizeof(float));
    call[TKV_VK_CALL_Q_AT] = (uint32_t)q_at;
    call[TKV_VK_CALL_UNITS_AT] = (uint32_t)units_at;
    call[TKV_VK_CALL_BLOCKS_AT] = (uint32_t)blocks_at;
    memcpy(staging + q_at, a->q, (size_t)q_bytes);
    struct vk_unit *units = (struct vk_unit *)(staging + units_at);
    uint32_t u = 0;
    for (uint32_t s = 0; s < a->n_seqs; s++) {
        const struct tkv_attn_seq *seq = seq_at(a, s);
        for (uint32_t qr0 = 0; qr0 < seq->n_q * ratio; qr0 += qt, u++)
            units[u] = unit_of(seq, qr0, qt, ratio, window, chunk, &span);
    }
    memcpy(staging + blocks_at, a->blocks, (size_t)a->n_blocks * sizeof(uint32_t));

    uint32_t spec[TKV_VK_SPEC_COUNT] = {
        [TKV_VK_SPEC_WG] = TKV_VK_WG,
        [TKV_VK_SPEC_HEAD_DIM] = hd,
        [TKV_VK_SPEC_K_ENC] = kl.encoding,
        [TKV_VK_SPEC_K_BITS] = kl.bits,
        [TKV_VK_SPEC_K_QJL] = kl.qjl,
        [TKV_VK_SPEC_K_ROW_BYTES] = kl.row_bytes,
        [TKV_VK_SPEC_V_ENC] = vl.encoding,
        [TKV_VK_SPEC_V_BITS] = vl.bits,
        [TKV_VK_SPEC_V_QJL] = vl.qjl,
        [TKV_VK_SPEC_V_ROW_BYTES] = vl.row_bytes,
        [TKV_VK_SPEC_QT] = qt,
        [TKV_VK_SPEC_Q8_BLOCK] = TKV_Q8_0_BLOCK,
        [TKV_VK_SPEC_BATCH_ROWS] = batch_rows(kl.row_bytes > vl.row_bytes ? kl.row_bytes : vl.row_bytes),
        [TKV_VK_SPEC_K_ROT] = kl.rotation,
        [TKV_VK_SPEC_V_ROT] = vl.rotation,
        [TKV_VK_SPEC_LANES] = lanes,
    };
    memcpy(spec + TKV_VK_SPEC_GROUPS, kl.groups, sizeof kl.groups);

    struct vk_attention_key key;
    memset(&key, 0, sizeof key); /* compared with memcmp, padding included */
    if ((rc = vk_attention_pipeline(dev, spec, &key.pipeline)) != TKV_OK)
        return rc;
    const uint64_t io = dev->staging->address, work = dev->work->address;
    key.push = (struct vk_attention_push){
        .k = k_buf->address,
        .v = v_buf->address,
        .k_head_stride = a->k.head_stride,
        .v_head_stride = a->v.head_stride,
        .k_block_stride = a->k.block_stride,
        .v_block_stride = a->v.block_stride,
        .inputs = direct ? io : work,
        .work = work,
        .io = io,
        .math = dev->math_buf->address,
        .counters = dev->counters->address,
        .acc_at = (uint32_t)(acc_at / TKV_VK_ALIGN),
        .ml_at = (uint32_t)(ml_at / TKV_VK_ALIGN),
        .out_at = (uint32_t)(out_at / TKV_VK_ALIGN),
        .counts_at = (uint32_t)(counts_at / TKV_VK_ALIGN),
        .lse_at = (uint32_t)(lse_at / TKV_VK_ALIGN),
    };
    key.n_groups = n_units * a->n_kv_heads * max_chunks;
    key.up_bytes = up_bytes;
    key.work = dev->work->buffer;
    key.staging = dev->staging->buffer;
    key.counters = dev->counters->buffer;
    key.direct = direct;
    if ((!dev->attention_recorded || memcmp(&key, &dev->attention_key, sizeof key) != 0) &&
        (rc = record(dev, &key, op)) != TKV_OK)
        return rc;
    if ((rc = vk_submit_wait(dev, dev->attention_cmd, op)) != TKV_OK)
        return rc;

    uint64_t stamps[2] = { 0, 0 };
    if (dev->timestamps &&
        vkGetQueryPoolResults(dev->device, dev->timestamps, 0, 2, sizeof stamps, stamps, sizeof stamps[0],
                              VK_QUERY_RESULT_64_BIT) != VK_SUCCESS)
        stamps[0] = stamps[1] = 0;
    memcpy(a->out, staging + out_at, (size_t)q_bytes);
    const uint32_t *counts = (const uint32_t *)(staging + counts_at);
    uint64_t skipped = 0;
    for (uint64_t r = 0; r < n_out; r++)
        skipped += counts[r];
    if (a->lse)
        memcpy(a->lse, staging + lse_at, (size_t)n_out * sizeof(float));
    dev->stats.attention_calls++;
    dev->stats.rows_skipped += skipped;
    if (a->rows_total)
        *a->rows_total = total;
    if (a->rows_skipped)
        *a->rows_skipped = skipped;
    if (TKV_ARGS_HAS(a, device_ns) && a->device_ns)
        *a->device_ns = (uint64_t)((double)((stamps[1] - stamps[0]) & dev->timestamp_mask) *
                                   dev->props.limits.timestampPeriod);
    return TKV_OK;
}
