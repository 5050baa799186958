/*
 * The quantize_append and dequantize ops: the cpu reference's argument
 * checks, then rows through quantize_rows and dequantize_rows
 * (kernels/rows.cl), one work-group per row, in chunks that bound the
 * staging scratch.
 */
#include <string.h>

#include "ocl.h"

/* Host rows staged per launch at most. */
#define CHUNK_BYTES ((size_t)64 << 20)

/* Work-items per row: enough for the butterflies of a 1024-value row. */
#define ROW_WORK_GROUP 128u

static int append_chunks(struct ocl_device *d, const struct tkv_append_args *a,
                         const struct ocl_buffer *buf, uint32_t row_bytes, uint64_t *nonfinite)
{
    static const char op[] = "quantize_append";
    static const cl_uint zero = 0;
    const size_t token_bytes = (size_t)a->n_heads * a->fmt.head_dim * sizeof(float);
    const uint32_t chunk = token_bytes >= CHUNK_BYTES ? 1u : (uint32_t)(CHUNK_BYTES / token_bytes);
    const uint32_t first_chunk = chunk < a->n_tokens ? chunk : a->n_tokens;
    const size_t wg = ocl_wg_pow2(d, OCL_K_QUANTIZE, ROW_WORK_GROUP);
    int rc;
    if ((rc = ocl_scratch_reserve(d, &d->scratch.rows, first_chunk * token_bytes, op, "row")) !=
            TKV_OK ||
        (rc = ocl_scratch_reserve(d, &d->scratch.counter, sizeof(cl_uint), op, "counter")) !=
            TKV_OK)
        return rc;

    cl_uint n_heads = a->n_heads, head_dim = a->fmt.head_dim, rb = row_bytes, type = a->fmt.type;
    cl_uint rotation = a->fmt.rotation, scale_mode = a->fmt.scale_mode;
    cl_ulong head_stride = a->head_stride, dst_offset = 0;
    const struct ocl_karg args[] = {
        OCL_ARG(d->scratch.rows.mem), OCL_ARG(n_heads),    OCL_ARG(head_dim),
        OCL_ARG(buf->mem),            OCL_ARG(dst_offset), OCL_ARG(head_stride),
        OCL_ARG(rb),                  OCL_ARG(type),       OCL_ARG(rotation),
        OCL_ARG(scale_mode),          OCL_ARG(d->tables),  OCL_ARG(d->scratch.counter.mem),
    };
    for (uint32_t t0 = 0; t0 < a->n_tokens; t0 += chunk) {
        uint32_t n = a->n_tokens - t0 < chunk ? a->n_tokens - t0 : chunk;
        size_t groups[3] = { (size_t)n * a->n_heads, 1, 1 };
        cl_uint count = 0;
        cl_int err;
        dst_offset = a->offset + (uint64_t)t0 * row_bytes;
        if ((err = clEnqueueFillBuffer(d->queue, d->scratch.counter.mem, &zero, sizeof zero, 0,
                                       sizeof zero, 0, NULL, NULL)) != CL_SUCCESS)
            return ocl_fail(err, op, "clEnqueueFillBuffer");
        if ((err = clEnqueueWriteBuffer(d->queue, d->scratch.rows.mem, CL_FALSE, 0, n * token_bytes,
                                        (const char *)a->src + t0 * token_bytes, 0, NULL, NULL)) !=
            CL_SUCCESS)
            return ocl_fail(err, op, "clEnqueueWriteBuffer");
        if ((rc = ocl_args(d, OCL_K_QUANTIZE, op, sizeof args / sizeof args[0], args)) != TKV_OK ||
            (rc = ocl_launch(d, OCL_K_QUANTIZE, op, 1, groups, wg)) != TKV_OK)
            return rc;
        /* blocking: the rows are in, and the host's src may be released */
        if ((err = clEnqueueReadBuffer(d->queue, d->scratch.counter.mem, CL_TRUE, 0, sizeof count,
                                       &count, 0, NULL, NULL)) != CL_SUCCESS)
            return ocl_fail(err, op, "clEnqueueReadBuffer");
        *nonfinite += count;
    }
    return TKV_OK;
}

int ocl_quantize_append(void *dev, const struct tkv_append_args *a)
{
    struct ocl_device *d = dev;
    uint32_t row_bytes;
    int rc;
    if ((rc = ocl_check_args(d, a, sizeof *a, "quantize_append")) != TKV_OK ||
        (rc = ocl_check_format(d, &a->fmt, "quantize_append", &row_bytes)) != TKV_OK)
        return rc;
    if (a->n_nonfinite)
        *a->n_nonfinite = 0;
    if (a->n_tokens == 0)
        return TKV_OK;
    if (a->n_heads == 0 || !a->src)
        return OCL_ERROR(TKV_EINVAL, "quantize_append: %s", a->src ? "n_heads is 0" : "NULL src");
    struct ocl_buffer *buf = ocl_buffer_check(a->buf, "quantize_append", "buf");
    if (!buf)
        return TKV_EINVAL;
    uint64_t span = (uint64_t)a->n_tokens * row_bytes;
    if (a->n_heads > 1 && a->head_stride < span)
        return OCL_ERROR(TKV_EINVAL,
                         "quantize_append: head_stride %llu is less than the %llu bytes of "
                         "%u new rows of a head: heads would overlap",
                         (unsigned long long)a->head_stride, (unsigned long long)span, a->n_tokens);
    if (!tkv_span_fits(buf->size, a->offset, a->n_heads, a->head_stride, span))
        return OCL_ERROR(TKV_ERANGE,
                         "quantize_append: %u tokens x %u heads of %u-byte rows at offset %llu, "
                         "head_stride %llu, exceed the %llu-byte buffer",
                         a->n_tokens, a->n_heads, row_bytes, (unsigned long long)a->offset,
                         (unsigned long long)a->head_stride, (unsigned long long)buf->size);

    uint64_t nonfinite = 0;
    if ((rc = append_chunks(d, a, buf, row_bytes, &nonfinite)) != TKV_OK) {
        clFinish(d->queue); /* nothing queued may still read the host's rows */
        return rc;
    }
    d->stats.rows_quantized += (uint64_t)a->n_tokens * a->n_heads;
    if (a->n_nonfinite)
        *a->n_nonfinite = nonfinite;
    return TKV_OK;
}

int ocl_dequantize(void *dev, const struct tkv_dequant_args *a)
{
    static const char op[] = "dequantize";
    struct ocl_device *d = dev;
    uint32_t row_bytes;
    int rc;
    if ((rc = ocl_check_args(d, a, sizeof *a, op)) != TKV_OK ||
        (rc = ocl_check_format(d, &a->fmt, op, &row_bytes)) != TKV_OK)
        return rc;
    if (a->n_rows == 0)
        return TKV_OK;
    if (!a->dst)
        return OCL_ERROR(TKV_EINVAL, "dequantize: NULL dst");
    const struct ocl_buffer *buf = ocl_buffer_check(a->buf, op, "buf");
    if (!buf)
        return TKV_EINVAL;
    if (!tkv_span_fits(buf->size, a->offset, 1, 0, (uint64_t)a->n_rows * row_bytes))
        return OCL_ERROR(TKV_ERANGE,
                         "dequantize: %u rows of %u bytes at offset %llu exceed the %llu-byte "
                         "buffer",
                         a->n_rows, row_bytes, (unsigned long long)a->offset,
                         (unsigned long long)buf->size);

    const size_t row_floats_bytes = (size_t)a->fmt.head_dim * sizeof(float);
    const uint32_t chunk = (uint32_t)(CHUNK_BYTES / row_floats_bytes);
    const size_t wg = ocl_wg_pow2(d, OCL_K_DEQUANTIZE, ROW_WORK_GROUP);
    if ((rc = ocl_scratch_reserve(d, &d->scratch.rows,
                                  (a->n_rows < chunk ? a->n_rows : chunk) * row_floats_bytes, op,
                                  "row")) != TKV_OK)
        return rc;
    cl_uint rb = row_bytes, head_dim = a->fmt.head_dim, type = a->fmt.type;
    cl_uint rotation = a->fmt.rotation;
    cl_ulong offset = 0;
    const struct ocl_karg args[] = {
        OCL_ARG(buf->mem), OCL_ARG(offset),   OCL_ARG(rb),        OCL_ARG(head_dim),
        OCL_ARG(type),     OCL_ARG(rotation), OCL_ARG(d->tables), OCL_ARG(d->scratch.rows.mem),
    };
    for (uint32_t r0 = 0; r0 < a->n_rows; r0 += chunk) {
        uint32_t n = a->n_rows - r0 < chunk ? a->n_rows - r0 : chunk;
        size_t groups[3] = { n, 1, 1 };
        offset = a->offset + (uint64_t)r0 * row_bytes;
        if ((rc = ocl_args(d, OCL_K_DEQUANTIZE, op, sizeof args / sizeof args[0], args)) !=
                TKV_OK ||
            (rc = ocl_launch(d, OCL_K_DEQUANTIZE, op, 1, groups, wg)) != TKV_OK)
            return rc;
        cl_int err = clEnqueueReadBuffer(d->queue, d->scratch.rows.mem, CL_TRUE, 0,
                                         n * row_floats_bytes, a->dst + (size_t)r0 * head_dim, 0,
                                         NULL, NULL);
        if (err != CL_SUCCESS)
            return ocl_fail(err, op, "clEnqueueReadBuffer");
    }
    return TKV_OK;
}
