/*
 * The quantize_append and dequantize ops: argument checks, then rows in and
 * out of a device buffer through the row kernels (rows.c).
 */
#include <math.h>
#include <string.h>

#include "cpu.h"

/* Copies a row, storing non-finite values as 0 (turbokv_format.h); returns
 * how many there were. Only this row is affected. */
static uint64_t sanitize_row(const float *src, uint32_t n, float *dst)
{
    uint64_t bad = 0;
    for (uint32_t i = 0; i < n; i++) {
        int finite = isfinite(src[i]);
        dst[i] = finite ? src[i] : 0.0f;
        bad += !finite;
    }
    return bad;
}

int cpu_quantize_append(void *dev_, const struct tkv_append_args *a)
{
    struct cpu_device *dev = dev_;
    struct cpu_layout l;
    int rc;
    if ((rc = cpu_check_args(dev, a, sizeof *a, "quantize_append")) != TKV_OK ||
        (rc = cpu_layout_init(dev, &a->fmt, "quantize_append", &l)) != TKV_OK)
        return rc;
    if (a->n_nonfinite)
        *a->n_nonfinite = 0;
    if (a->n_tokens == 0)
        return TKV_OK;
    if (a->n_heads == 0 || !a->src)
        return CPU_ERROR(TKV_EINVAL, "quantize_append: %s",
                         a->src ? "n_heads is 0" : "NULL src");
    struct cpu_buffer *buf = cpu_buffer_check(a->buf, "quantize_append", "buf");
    if (!buf)
        return TKV_EINVAL;
    uint64_t span = (uint64_t)a->n_tokens * l.row_bytes;
    if (a->n_heads > 1 && a->head_stride < span)
        return CPU_ERROR(TKV_EINVAL,
                         "quantize_append: head_stride %llu is less than the %llu bytes of "
                         "%u new rows of a head: heads would overlap",
                         (unsigned long long)a->head_stride, (unsigned long long)span,
                         a->n_tokens);
    if (!cpu_span_fits(buf->size, a->offset, a->n_heads, a->head_stride, span))
        return CPU_ERROR(TKV_ERANGE,
                         "quantize_append: %u tokens x %u heads of %u-byte rows at offset "
                         "%llu, head_stride %llu, exceed the %llu-byte buffer",
                         a->n_tokens, a->n_heads, l.row_bytes, (unsigned long long)a->offset,
                         (unsigned long long)a->head_stride, (unsigned long long)buf->size);

    uint64_t nonfinite = 0;
    float *row = dev->scratch;
    for (uint32_t t = 0; t < a->n_tokens; t++)
        for (uint32_t h = 0; h < a->n_heads; h++) {
            const float *src = a->src + ((size_t)t * a->n_heads + h) * l.head_dim;
            uint8_t *dst = buf->data + a->offset + h * a->head_stride + (uint64_t)t * l.row_bytes;
            nonfinite += sanitize_row(src, l.head_dim, row);
            l.kernels->encode(&l, row, dst);
        }
    dev->stats.rows_quantized += (uint64_t)a->n_tokens * a->n_heads;
    if (a->n_nonfinite)
        *a->n_nonfinite = nonfinite;
    return TKV_OK;
}

/* Dequantized value = the row accumulated once with weight 1 into zeros
 * (exact for every type: 1 * v + 0 = v), then rotated back for turbo. */
int cpu_dequantize(void *dev_, const struct tkv_dequant_args *a)
{
    struct cpu_device *dev = dev_;
    struct cpu_layout l;
    int rc;
    if ((rc = cpu_check_args(dev, a, sizeof *a, "dequantize")) != TKV_OK ||
        (rc = cpu_layout_init(dev, &a->fmt, "dequantize", &l)) != TKV_OK)
        return rc;
    if (a->n_rows == 0)
        return TKV_OK;
    if (!a->dst)
        return CPU_ERROR(TKV_EINVAL, "dequantize: NULL dst");
    const struct cpu_buffer *buf = cpu_buffer_check(a->buf, "dequantize", "buf");
    if (!buf)
        return TKV_EINVAL;
    if (!cpu_span_fits(buf->size, a->offset, 1, 0, (uint64_t)a->n_rows * l.row_bytes))
        return CPU_ERROR(TKV_ERANGE,
                         "dequantize: %u rows of %u bytes at offset %llu exceed the "
                         "%llu-byte buffer",
                         a->n_rows, l.row_bytes, (unsigned long long)a->offset,
                         (unsigned long long)buf->size);

    for (uint32_t r = 0; r < a->n_rows; r++) {
        const uint8_t *src = buf->data + a->offset + (uint64_t)r * l.row_bytes;
        float *dst = a->dst + (size_t)r * l.head_dim;
        memset(dst, 0, sizeof *dst * l.head_dim);
        l.kernels->axpy(&l, src, 1.0f, dst);
        if (l.bits)
            cpu_rotate_row(&l, CPU_UNROTATE, dst);
    }
    return TKV_OK;
}
