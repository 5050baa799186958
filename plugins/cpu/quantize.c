/*
 * The quantize_append and dequantize ops: argument checks, then rows in and
 * out of a device buffer through the row kernels: the ISA level's encoder
 * where it has one (the same bytes), else the reference's (rows.c). Rows
 * are independent, so appends of many rows are spread over the threads.
 */
#include <math.h>
#include <string.h>

#include "simd.h"

/* Copies a row, storing non-finite values as 0 (turbokv_format.h); returns
 * how many there were. Only this row is affected. The test is on the bits
 * (exponent all ones: Inf or NaN), which compilers vectorize, unlike
 * isfinite. */
static uint64_t sanitize_row(const float *src, uint32_t n, float *dst)
{
    uint32_t bad = 0;
    for (uint32_t i = 0; i < n; i++) {
        uint32_t u;
        memcpy(&u, &src[i], sizeof u);
        uint32_t finite = (u & 0x7f800000u) != 0x7f800000u;
        u &= 0u - finite;
        memcpy(&dst[i], &u, sizeof u);
        bad += !finite;
    }
    return bad;
}

/* Rows per work item: enough to dwarf the cost of handing one out. */
#define ENCODE_BATCH 32u

struct encode_job {
    struct cpu_device *dev;
    const struct tkv_append_args *a;
    const struct cpu_layout *l;
    uint8_t *data;
    uint64_t n_rows, batch; /* rows, rows per item */
};

static void encode_rows(void *arg, uint32_t item, uint32_t thread)
{
    const struct encode_job *job = arg;
    const struct tkv_append_args *a = job->a;
    const struct cpu_layout *l = job->l;
    struct cpu_thread *th = &job->dev->threads[thread];
    void (*encode)(const struct cpu_layout *, const float *, uint8_t *) =
        l->simd ? l->simd->encode : l->kernels->encode;
    uint64_t r = item * job->batch;
    uint64_t end = job->n_rows - r < job->batch ? job->n_rows : r + job->batch;
    for (; r < end; r++) { /* src is [token][head], row r = token * n_heads + head */
        uint64_t t = r / a->n_heads, h = r % a->n_heads;
        th->nonfinite += sanitize_row(a->src + r * l->head_dim, l->head_dim, th->row);
        encode(l, th->row, job->data + a->offset + h * a->head_stride + t * l->row_bytes);
    }
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
    if (!tkv_span_fits(buf->size, a->offset, a->n_heads, a->head_stride, span))
        return CPU_ERROR(TKV_ERANGE,
                         "quantize_append: %u tokens x %u heads of %u-byte rows at offset "
                         "%llu, head_stride %llu, exceed the %llu-byte buffer",
                         a->n_tokens, a->n_heads, l.row_bytes, (unsigned long long)a->offset,
                         (unsigned long long)a->head_stride, (unsigned long long)buf->size);

    struct encode_job job = { dev, a, &l, buf->data, (uint64_t)a->n_tokens * a->n_heads,
                              ENCODE_BATCH };
    while ((job.n_rows + job.batch - 1) / job.batch > UINT32_MAX) /* item numbers are 32-bit */
        job.batch *= 2;
    uint64_t nonfinite = 0;
    for (uint32_t t = 0; t < dev->n_threads; t++)
        dev->threads[t].nonfinite = 0;
    cpu_pool_run(dev->pool, (uint32_t)((job.n_rows + job.batch - 1) / job.batch), encode_rows,
                 &job);
    for (uint32_t t = 0; t < dev->n_threads; t++)
        nonfinite += dev->threads[t].nonfinite;
    dev->stats.rows_quantized += job.n_rows;
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
    if (!tkv_span_fits(buf->size, a->offset, 1, 0, (uint64_t)a->n_rows * l.row_bytes))
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
