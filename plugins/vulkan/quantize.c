/*
 * The quantize_append and dequantize ops: argument checks, then the rows go
 * up to the device, through the quantize or rows shader, and (dequantize)
 * back. Large calls are cut into pieces of at most VK_OP_CHUNK bytes of
 * floats, each one submit, so that scratch memory stays bounded.
 */
#include <string.h>

#include "vk.h"

#define VK_OP_CHUNK (64ull << 20)
/* Where the non-finite counter sits in the work buffer, before the rows. */
#define VK_COUNTER_BYTES 64u

int vk_quantize_append(void *dev_, const struct tkv_append_args *a)
{
    static const char op[] = "quantize_append";
    struct vk_device *dev = dev_;
    struct vk_layout l;
    int rc;
    if ((rc = vk_check_args(dev, a, sizeof *a, op)) != TKV_OK || (rc = vk_layout_init(dev, &a->fmt, op, &l)) != TKV_OK)
        return rc;
    if (a->n_nonfinite)
        *a->n_nonfinite = 0;
    if (a->n_tokens == 0)
        return TKV_OK;
    if (a->n_heads == 0 || !a->src)
        return VK_ERROR_STATUS(TKV_EINVAL, "%s: %s", op, a->src ? "n_heads is 0" : "NULL src");
    struct vk_buffer *buf = vk_buffer_check(a->buf, op, "buf");
    if (!buf)
        return TKV_EINVAL;
    uint64_t span = (uint64_t)a->n_tokens * l.row_bytes;
    if (a->n_heads > 1 && a->head_stride < span)
        return VK_ERROR_STATUS(TKV_EINVAL,
                               "%s: head_stride %llu is less than the %llu bytes of %u new rows of a head: heads "
                               "would overlap",
                               op, (unsigned long long)a->head_stride, (unsigned long long)span, a->n_tokens);
    if (!tkv_span_fits(buf->size, a->offset, a->n_heads, a->head_stride, span))
        return VK_ERROR_STATUS(TKV_ERANGE,
                               "%s: %u tokens x %u heads of %u-byte rows at offset %llu, head_stride %llu, exceed "
                               "the %llu-byte buffer",
                               op, a->n_tokens, a->n_heads, l.row_bytes, (unsigned long long)a->offset,
                               (unsigned long long)a->head_stride, (unsigned long long)buf->size);

    uint64_t token_bytes = (uint64_t)a->n_heads * l.head_dim * sizeof(float), nonfinite = 0;
    uint32_t per_submit = token_bytes >= VK_OP_CHUNK ? 1u : (uint32_t)(VK_OP_CHUNK / token_bytes);
    for (uint32_t t0 = 0; t0 < a->n_tokens; t0 += per_submit) {
        uint32_t n = a->n_tokens - t0 < per_submit ? a->n_tokens - t0 : per_submit;
        uint64_t bytes = n * token_bytes;
        if ((rc = vk_scratch(dev, &dev->staging, VK_COUNTER_BYTES + bytes, 1, op)) != TKV_OK ||
            (rc = vk_scratch(dev, &dev->work, VK_COUNTER_BYTES + bytes, 0, op)) != TKV_OK)
            return rc;
        memcpy((unsigned char *)dev->staging->map + VK_COUNTER_BYTES,
               a->src + (size_t)t0 * a->n_heads * l.head_dim, (size_t)bytes);
        uint32_t per_wg = TKV_VK_ROWS_ELEMS / l.head_dim, rows = n * a->n_heads;
        struct vk_quantize_push push = {
            .src = dev->work->address + VK_COUNTER_BYTES,
            .dst = buf->address + a->offset + (uint64_t)t0 * l.row_bytes,
            .head_stride = a->head_stride,
            .math = dev->math_buf->address,
            .counter = dev->work->address,
            .n_tokens = n,
            .n_heads = a->n_heads,
            .head_dim = l.head_dim,
            .row_bytes = l.row_bytes,
            .encoding = l.encoding,
            .bits = l.bits,
            .rotation = l.rotation,
            .flags = (l.qjl ? TKV_VK_FLAG_QJL : 0u) | (l.corrected ? TKV_VK_FLAG_CORRECTED : 0u),
            .rows_per_wg = per_wg,
            .q8_block = TKV_Q8_0_BLOCK,
        };
        memcpy(push.groups, l.groups, sizeof push.groups);
        if ((rc = vk_begin(dev, op)) != TKV_OK)
            return rc;
        vk_copy(dev, dev->staging, VK_COUNTER_BYTES, dev->work, VK_COUNTER_BYTES, bytes);
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
        memcpy(&counted, dev->staging->map, sizeof counted);
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
    struct vk_layout l;
    int rc;
    if ((rc = vk_check_args(dev, a, sizeof *a, op)) != TKV_OK || (rc = vk_layout_init(dev, &a->fmt, op, &l)) != TKV_OK)
        return rc;
    if (a->n_rows == 0)
        return TKV_OK;
    if (!a->dst)
        return VK_ERROR_STATUS(TKV_EINVAL, "%s: NULL dst", op);
    const struct vk_buffer *buf = vk_buffer_check(a->buf, op, "buf");
    if (!buf)
        return TKV_EINVAL;
    if (!tkv_span_fits(buf->size, a->offset, 1, 0, (uint64_t)a->n_rows * l.row_bytes))
        return VK_ERROR_STATUS(TKV_ERANGE, "%s: %u rows of %u bytes at offset %llu exceed the %llu-byte buffer", op,
                               a->n_rows, l.row_bytes, (unsigned long long)a->offset,
                               (unsigned long long)buf->size);

    uint64_t row_floats = (uint64_t)l.head_dim * sizeof(float);
    uint32_t per_submit = (uint32_t)(VK_OP_CHUNK / row_floats);
    for (uint32_t r0 = 0; r0 < a->n_rows; r0 += per_submit) {
        uint32_t n = a->n_rows - r0 < per_submit ? a->n_rows - r0 : per_submit;
        uint64_t bytes = n * row_floats;
        if ((rc = vk_scratch(dev, &dev->staging, bytes, 1, op)) != TKV_OK ||
            (rc = vk_scratch(dev, &dev->work, bytes, 0, op)) != TKV_OK || (rc = vk_begin(dev, op)) != TKV_OK ||
            (rc = vk_record_rows(dev, &l, buf->address + a->offset + (uint64_t)r0 * l.row_bytes, l.row_bytes,
                                 dev->work->address, l.head_dim, n, 0, 1, op)) != TKV_OK)
            return rc;
        vk_barrier(dev);
        vk_copy(dev, dev->work, 0, dev->staging, 0, bytes);
        if ((rc = vk_submit(dev, op)) != TKV_OK)
            return rc;
        memcpy(a->dst + (size_t)r0 * l.head_dim, dev->staging->map, (size_t)bytes);
    }
    return TKV_OK;
}
