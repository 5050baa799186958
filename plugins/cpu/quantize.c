/* SPDX-License-Identifier: MIT */
/*
 * The quantize_append and dequantize ops: rows of one sequence in and out of
 * a pool through its block table and the row kernels: the ISA level's
 * encoder where it has one (the same bytes), else the reference's (rows.c).
 * Rows are independent, so many rows are spread over the threads. The core
 * has checked the arguments (turbokv_plugin.h).
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
#define ROW_BATCH 32u

/* n_tokens x n_heads rows of one sequence, [token][head] on the host side,
 * handed to the threads ROW_BATCH at a time. */
struct row_job {
    struct cpu_device *dev;
    const struct cpu_layout *l;
    const struct tkv_pool *pool;
    const uint32_t *blocks;
    uint32_t first_pos, n_heads;
    uint64_t n_rows, batch; /* rows, rows per item */
    const float *src;       /* append */
    float *dst;             /* dequantize */
};

static uint32_t job_items(struct row_job *job)
{
    while ((job->n_rows + job->batch - 1) / job->batch > UINT32_MAX) /* item numbers are 32-bit */
        job->batch *= 2;
    return (uint32_t)((job->n_rows + job->batch - 1) / job->batch);
}

/* Host row r = token * n_heads + head: its bytes in the pool. */
static uint8_t *job_row(const struct row_job *job, uint64_t r)
{
    const struct cpu_buffer *b = cpu_buffer_of(job->pool->buf);
    uint32_t t = (uint32_t)(r / job->n_heads), h = (uint32_t)(r % job->n_heads);
    return (uint8_t *)b->data + tkv_pool_row_offset(job->pool, job->blocks, h, job->first_pos + t);
}

static void encode_rows(void *arg, uint32_t item, uint32_t thread)
{
    const struct row_job *job = arg;
    const struct cpu_layout *l = job->l;
    struct cpu_thread *th = &job->dev->threads[thread];
    void (*encode)(const struct cpu_layout *, const float *, uint8_t *) =
        l->simd ? l->simd->encode : l->kernels->encode;
    uint64_t r = item * job->batch;
    uint64_t end = job->n_rows - r < job->batch ? job->n_rows : r + job->batch;
    for (; r < end; r++) {
        th->nonfinite += sanitize_row(job->src + r * l->head_dim, l->head_dim, th->row);
        encode(l, th->row, job_row(job, r));
    }
}

int cpu_quantize_append(void *dev_, const struct tkv_append_args *a)
{
    struct cpu_device *dev = dev_;
    struct cpu_layout l;
    cpu_layout_init(dev, &a->pool.fmt, &l);
    struct row_job job = {
        .dev = dev, .l = &l, .pool = &a->pool, .blocks = a->blocks, .first_pos = a->first_pos,
        .n_heads = a->n_heads, .n_rows = (uint64_t)a->n_tokens * a->n_heads, .batch = ROW_BATCH,
        .src = a->src,
    };
    uint32_t n_items = job_items(&job);
    uint64_t nonfinite = 0;
    for (uint32_t t = 0; t < dev->n_threads; t++)
        dev->threads[t].nonfinite = 0;
    cpu_pool_run(dev->pool, n_items, encode_rows, &job);
    for (uint32_t t = 0; t < dev->n_threads; t++)
        nonfinite += dev->threads[t].nonfinite;
    dev->stats.rows_quantized += job.n_rows;
    if (a->n_nonfinite)
        *a->n_nonfinite = nonfinite;
    return TKV_OK;
}

/* Dequantized value = the row accumulated once with weight 1 into zeros
 * (exact for every type: 1 * v + 0 = v), then rotated back for turbo. */
static void decode_rows(void *arg, uint32_t item, uint32_t thread)
{
    const struct row_job *job = arg;
    const struct cpu_layout *l = job->l;
    (void)thread;
    uint64_t r = item * job->batch;
    uint64_t end = job->n_rows - r < job->batch ? job->n_rows : r + job->batch;
    for (; r < end; r++) {
        float *dst = job->dst + r * l->head_dim;
        if (tkv_type_is_outlier(l->type)) { /* turbo part and outliers apart (outlier.c) */
            float acc[2 * TKV_HEAD_DIM_MAX];
            memset(acc, 0, sizeof *acc * 2 * l->head_dim);
            l->kernels->axpy(l, job_row(job, r), 1.0f, acc);
            cpu_outlier_finish(l, acc, 1.0f, dst);
            continue;
        }
        memset(dst, 0, sizeof *dst * l->head_dim);
        l->kernels->axpy(l, job_row(job, r), 1.0f, dst);
        if (l->bits)
            cpu_rotate_row(l, CPU_UNROTATE, dst);
    }
}

int cpu_dequantize(void *dev_, const struct tkv_dequant_args *a)
{
    struct cpu_device *dev = dev_;
    struct cpu_layout l;
    cpu_layout_init(dev, &a->pool.fmt, &l);
    struct row_job job = {
        .dev = dev, .l = &l, .pool = &a->pool, .blocks = a->blocks, .first_pos = a->first_pos,
        .n_heads = a->n_heads, .n_rows = (uint64_t)a->n_tokens * a->n_heads, .batch = ROW_BATCH,
        .dst = a->dst,
    };
    cpu_pool_run(dev->pool, job_items(&job), decode_rows, &job);
    return TKV_OK;
}
