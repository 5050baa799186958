/*
 * The attention op: the cpu reference's checks, then the kernels of
 * kernels/attention.cl (the split over blocks of rows is described there).
 *
 * One call: the sequence table and the queries go up in one transfer, the
 * queries are prepared once (turbo K), then the sequences are taken in
 * passes whose score scratch stays under SCORES_BYTES_MAX (one pass unless
 * the batch is very large); every pass runs attn_scores, attn_scan,
 * attn_values and attn_merge on the in-order queue, and one read brings the
 * outputs and the skip counts back.
 */
#include <math.h>
#include <string.h>

#include "ocl.h"

#define SCORES_BYTES_MAX ((size_t)256 << 20)
/* Local memory a work-group asks for at most: what NVIDIA's OpenCL grants
 * a work-group, and small enough to keep several per multiprocessor. */
#define LOCAL_BYTES_MAX (48u << 10)
#define TILE_BYTES_MAX (32u << 10)
/* A tile of n rows of b bytes takes at most n (b + 4) bytes (a spare word per
 * row, or the misaligned start) plus this. */
#define TILE_SLACK_BYTES 16u
#define QUERY_BYTES_MAX (16u << 10)
/* Work-items of attn_scores (one per K row of a block), of attn_values
 * (OCL_VALUE_COORDS accumulator coordinates each) and of the per-row
 * kernels. */
#define BLOCK_ROWS_MAX 128u
#define VALUE_WORK_GROUP 64u
#define ROW_WORK_GROUP 128u
/* Work-groups of attn_values wanted per compute unit. */
#define VALUE_GROUPS_PER_UNIT 8u
#define TILES_PER_RUN_MAX 64u

struct attn_call {
    const struct tkv_attention_args *a;
    const struct ocl_buffer *k_buf, *v_buf;
    uint32_t k_row_bytes, v_row_bytes;
    uint32_t head_dim, ratio, q_stride, d_acc;
    cl_mem q;      /* the queries as attn_scores takes them, */
    cl_uint q_at;  /* from this float on */
};

/* Checks everything before anything is enqueued (plan_attention of the cpu
 * reference). */
static int check(const struct ocl_device *d, const struct tkv_attention_args *a,
                 struct attn_call *c)
{
    int rc;
    if ((rc = ocl_check_args(d, a, sizeof *a, "attention")) != TKV_OK ||
        (rc = ocl_check_format(d, &a->k_fmt, "attention K", &c->k_row_bytes)) != TKV_OK ||
        (rc = ocl_check_format(d, &a->v_fmt, "attention V", &c->v_row_bytes)) != TKV_OK)
        return rc;
    if (a->k_fmt.head_dim != a->v_fmt.head_dim)
        return OCL_ERROR(TKV_EINVAL, "attention: K head_dim %u differs from V head_dim %u",
                         a->k_fmt.head_dim, a->v_fmt.head_dim);
    if (a->n_q == 0)
        return OCL_ERROR(TKV_EINVAL, "attention: n_q is 0 (at least one query token)");
    if (a->n_q_heads == 0 || a->n_kv_heads == 0 || a->n_q_heads % a->n_kv_heads)
        return OCL_ERROR(TKV_EINVAL,
                         "attention: n_q_heads %u must be a non-zero multiple of n_kv_heads %u",
                         a->n_q_heads, a->n_kv_heads);
    if (!isfinite(a->scale))
        return OCL_ERROR(TKV_EINVAL, "attention: scale %g is not finite", (double)a->scale);
    if (!(a->sparse_v_threshold >= 0.0f && a->sparse_v_threshold < 1.0f))
        return OCL_ERROR(TKV_EINVAL, "attention: sparse_v_threshold %g is outside [0, 1)",
                         (double)a->sparse_v_threshold);
    if (!a->seqs || !a->q || !a->out)
        return OCL_ERROR(TKV_EINVAL, "attention: NULL %s", !a->seqs ? "seqs" : !a->q ? "q" : "out");
    if (!(c->k_buf = ocl_buffer_check(a->k_buf, "attention", "k_buf")) ||
        !(c->v_buf = ocl_buffer_check(a->v_buf, "attention", "v_buf")))
        return TKV_EINVAL;
    for (uint32_t s = 0; s < a->n_seqs; s++) {
        const struct tkv_attn_seq *seq = &a->seqs[s];
        if (seq->n_ctx < a->n_q)
            return OCL_ERROR(TKV_EINVAL,
                             "attention: sequence %u has n_ctx %u, fewer than its n_q %u query "
                             "tokens",
                             s, seq->n_ctx, a->n_q);
        struct {
            const char *name;
            const struct ocl_buffer *buf;
            uint64_t offset, stride;
            uint32_t row_bytes;
        } side[2] = {
            { "K", c->k_buf, seq->k_offset, a->k_head_stride, c->k_row_bytes },
            { "V", c->v_buf, seq->v_offset, a->v_head_stride, c->v_row_bytes },
        };
        for (int i = 0; i < 2; i++) {
            uint64_t span = (uint64_t)seq->n_ctx * side[i].row_bytes;
            if (!tkv_span_fits(side[i].buf->size, side[i].offset, a->n_kv_heads, side[i].stride,
                               span))
                return OCL_ERROR(TKV_ERANGE,
                                 "attention: sequence %u: %s rows (%u tokens x %u heads of %u "
                                 "bytes at offset %llu, head_stride %llu) exceed the %llu-byte "
                                 "buffer",
                                 s, side[i].name, seq->n_ctx, a->n_kv_heads, side[i].row_bytes,
                                 (unsigned long long)side[i].offset,
                                 (unsigned long long)side[i].stride,
                                 (unsigned long long)side[i].buf->size);
        }
    }
    c->a = a;
    c->head_dim = a->k_fmt.head_dim;
    c->ratio = a->n_q_heads / a->n_kv_heads;
    c->q_stride = tkv_type_is_qjl(a->k_fmt.type) ? 2u * c->head_dim : c->head_dim;
    c->d_acc = tkv_type_is_qjl(a->v_fmt.type) ? 2u * c->head_dim : c->head_dim;
    return TKV_OK;
}

static uint32_t div_up(uint32_t x, uint32_t y) { return (x + y - 1u) / y; }

/* Local memory of load_tile for n rows of b bytes (kernels/attention.cl),
 * two words of look-ahead for the bit readers included. */
static size_t tile_bytes(size_t n, uint32_t b)
{
    size_t padded = n * (b / 4u + 1u), unpadded = (3u + n * b + 3u) / 4u;
    return ((padded > unpadded ? padded : unpadded) + 2u) * sizeof(cl_uint);
}

static size_t local_left(const struct ocl_device *d, enum ocl_kernel k)
{
    size_t total = d->local_mem < LOCAL_BYTES_MAX ? (size_t)d->local_mem : LOCAL_BYTES_MAX;
    return total > d->kernel_local[k] ? total - (size_t)d->kernel_local[k] : 0;
}

/* One pass: sequences s0 .. s0 + n_s - 1, their query tokens t0 .. t0 + n_t - 1. */
static int run_pass(struct ocl_device *d, const struct attn_call *c, uint32_t s0, uint32_t n_s,
                    uint32_t t0, uint32_t n_t)
{
    static const char op[] = "attention";
    const struct tkv_attention_args *a = c->a;
    uint32_t ctx_max = 0;
    for (uint32_t s = s0; s < s0 + n_s; s++)
        ctx_max = a->seqs[s].n_ctx > ctx_max ? a->seqs[s].n_ctx : ctx_max;
    const size_t n_rows = (size_t)n_s * n_t * a->n_q_heads;

    /* query rows per work-group: the smallest variant holding the rows of a
     * kv head, within the local memory for them */
    const uint32_t rows = n_t * c->ratio;
    uint32_t qc = 1, variant = 0;
    while (qc < rows && qc < OCL_QUERY_ROWS_MAX) {
        qc <<= 1;
        variant++;
    }
    while (qc > 1 && (size_t)qc * c->q_stride * sizeof(float) > QUERY_BYTES_MAX) {
        qc >>= 1;
        variant--;
    }
    const enum ocl_kernel k_scores = OCL_K_SCORES + variant, k_values = OCL_K_VALUES + variant;
    const uint32_t n_chunks = div_up(rows, qc);
    const size_t wg = ocl_wg_pow2(d, k_scores, BLOCK_ROWS_MAX);
    const size_t vwg = ocl_wg_pow2(d, k_values, VALUE_WORK_GROUP);
    uint32_t per_row = 1; /* attn_values computes the same */
    while (per_row * OCL_VALUE_COORDS < c->d_acc && per_row < vwg)
        per_row <<= 1;
    const uint32_t n_slices = div_up(c->d_acc, per_row * OCL_VALUE_COORDS);

    /* block rows: a tile of packed K rows in attn_scores' local memory; the
     * weights of (query row, row) and a tile of V rows in attn_values' */
    const size_t q_bytes = (size_t)qc * c->q_stride * sizeof(float),
                 red_bytes = qc * wg * sizeof(float);
    size_t k_room = local_left(d, k_scores), v_room = local_left(d, k_values);
    k_room = k_room > q_bytes + red_bytes + TILE_SLACK_BYTES
                 ? k_room - q_bytes - red_bytes - TILE_SLACK_BYTES
                 : 0;
    k_room = k_room < TILE_BYTES_MAX ? k_room : TILE_BYTES_MAX;
    size_t v_fixed = vwg * (OCL_VALUE_COORDS + 1u) * sizeof(float) + TILE_SLACK_BYTES;
    v_room = v_room > v_fixed ? v_room - v_fixed : 0;
    size_t tile_rows = k_room / (c->k_row_bytes + 4u), values_rows =
        v_room / ((3u * qc + 1u) * sizeof(float) + c->v_row_bytes + 4u);
    tile_rows = tile_rows < wg ? tile_rows : wg;
    tile_rows = tile_rows < values_rows ? tile_rows : values_rows;
    if (tile_rows == 0)
        return OCL_ERROR(TKV_EUNSUPPORTED,
                         "attention: rows of %u (K) and %u (V) bytes do not fit the device's %llu "
                         "bytes of local memory",
                         c->k_row_bytes, c->v_row_bytes, (unsigned long long)d->local_mem);
    const uint32_t n_blocks_max = div_up(ctx_max, (uint32_t)tile_rows);
    uint64_t blocks = 0;
    for (uint32_t s = s0; s < s0 + n_s; s++)
        blocks += div_up(a->seqs[s].n_ctx, (uint32_t)tile_rows);
    blocks *= (uint64_t)a->n_kv_heads * n_chunks;
    uint64_t target = (uint64_t)VALUE_GROUPS_PER_UNIT * (d->compute_units ? d->compute_units : 1u);
    uint32_t tiles_per_run = (uint32_t)((blocks + target - 1u) / target); /* >= 1 block */
    if (tiles_per_run > TILES_PER_RUN_MAX)
        tiles_per_run = TILES_PER_RUN_MAX;
    const uint32_t runs_max = div_up(n_blocks_max, tiles_per_run);

    int rc;
    if ((rc = ocl_scratch_reserve(d, &d->scratch.scores, n_rows * ctx_max * sizeof(float), op,
                                  "score")) != TKV_OK ||
        (rc = ocl_scratch_reserve(d, &d->scratch.bmax, n_rows * n_blocks_max * sizeof(float), op,
                                  "block max")) != TKV_OK ||
        (rc = ocl_scratch_reserve(d, &d->scratch.tmax, n_rows * sizeof(float), op, "max")) !=
            TKV_OK ||
        (rc = ocl_scratch_reserve(d, &d->scratch.part_acc,
                                  n_rows * runs_max * c->d_acc * sizeof(float), op, "partial")) !=
            TKV_OK ||
        (rc = ocl_scratch_reserve(d, &d->scratch.part_l, n_rows * runs_max * sizeof(float), op,
                                  "partial sum")) != TKV_OK ||
        (rc = ocl_scratch_reserve(d, &d->scratch.part_skip, n_rows * runs_max * sizeof(cl_uint), op,
                                  "partial count")) != TKV_OK)
        return rc;

    cl_uint u_s0 = s0, u_t0 = t0, u_nt = n_t, u_nq = a->n_q, u_nqh = a->n_q_heads,
            u_ratio = c->ratio;
    cl_uint head_dim = c->head_dim, k_rb = c->k_row_bytes, v_rb = c->v_row_bytes;
    cl_uint k_type = a->k_fmt.type, v_type = a->v_fmt.type, v_rotation = a->v_fmt.rotation;
    cl_uint q_stride = c->q_stride, u_chunks = n_chunks, score_pitch = ctx_max;
    cl_uint bmax_pitch = n_blocks_max, u_tile_rows = (cl_uint)tile_rows, u_tpr = tiles_per_run;
    cl_uint part_pitch = runs_max;
    cl_ulong k_stride = a->k_head_stride, v_stride = a->v_head_stride;
    /* scores in base 2 for exp2 (kernels/attention.cl) */
    cl_float scale = (cl_float)(a->scale * M_LOG2E), threshold = a->sparse_v_threshold;

    const struct ocl_karg scores_args[] = {
        OCL_ARG(c->k_buf->mem), OCL_ARG(d->scratch.upload.mem), OCL_ARG(u_s0), OCL_ARG(u_t0),
        OCL_ARG(u_nt), OCL_ARG(u_nq), OCL_ARG(u_nqh), OCL_ARG(u_ratio), OCL_ARG(k_stride),
        OCL_ARG(k_rb), OCL_ARG(head_dim), OCL_ARG(k_type), OCL_ARG(c->q), OCL_ARG(c->q_at),
        OCL_ARG(q_stride),
        OCL_ARG(u_chunks), OCL_ARG(d->tables), OCL_ARG(scale), OCL_ARG(d->scratch.scores.mem),
        OCL_ARG(score_pitch), OCL_ARG(d->scratch.bmax.mem), OCL_ARG(bmax_pitch),
        OCL_ARG(u_tile_rows), OCL_LOCAL(q_bytes), OCL_LOCAL(tile_bytes(tile_rows, c->k_row_bytes)),
        OCL_LOCAL(red_bytes),
    };
    const size_t scores_groups[3] = { n_blocks_max, (size_t)a->n_kv_heads * n_chunks, n_s };
    if ((rc = ocl_args(d, k_scores, op, sizeof scores_args / sizeof scores_args[0], scores_args)) !=
            TKV_OK ||
        (rc = ocl_launch(d, k_scores, op, 3, scores_groups, wg)) != TKV_OK)
        return rc;

    const size_t scan_wg = ocl_wg_pow2(d, OCL_K_SCAN, ROW_WORK_GROUP);
    const struct ocl_karg scan_args[] = {
        OCL_ARG(d->scratch.upload.mem), OCL_ARG(u_s0), OCL_ARG(u_nt), OCL_ARG(u_nqh),
        OCL_ARG(u_tile_rows), OCL_ARG(d->scratch.bmax.mem), OCL_ARG(bmax_pitch),
        OCL_ARG(d->scratch.tmax.mem), OCL_LOCAL(scan_wg * sizeof(float)),
    };
    const size_t row_groups[3] = { n_rows, 1, 1 };
    if ((rc = ocl_args(d, OCL_K_SCAN, op, sizeof scan_args / sizeof scan_args[0], scan_args)) !=
            TKV_OK ||
        (rc = ocl_launch(d, OCL_K_SCAN, op, 1, row_groups, scan_wg)) != TKV_OK)
        return rc;

    const size_t weights_bytes = (size_t)qc * tile_rows * sizeof(float);
    const struct ocl_karg values_args[] = {
        OCL_ARG(c->v_buf->mem), OCL_ARG(d->scratch.upload.mem), OCL_ARG(u_s0), OCL_ARG(u_t0),
        OCL_ARG(u_nt), OCL_ARG(u_nq), OCL_ARG(u_nqh), OCL_ARG(u_ratio), OCL_ARG(v_stride),
        OCL_ARG(v_rb), OCL_ARG(head_dim), OCL_ARG(v_type), OCL_ARG(u_chunks), OCL_ARG(d->tables),
        OCL_ARG(d->scratch.scores.mem), OCL_ARG(score_pitch), OCL_ARG(d->scratch.bmax.mem),
        OCL_ARG(bmax_pitch), OCL_ARG(d->scratch.tmax.mem), OCL_ARG(u_tile_rows), OCL_ARG(u_tpr),
        OCL_ARG(threshold), OCL_ARG(d->scratch.part_acc.mem), OCL_ARG(d->scratch.part_l.mem),
        OCL_ARG(d->scratch.part_skip.mem), OCL_ARG(part_pitch), OCL_LOCAL(weights_bytes),
        OCL_LOCAL(weights_bytes), OCL_LOCAL(weights_bytes), OCL_LOCAL(tile_rows * sizeof(cl_uint)),
        OCL_LOCAL(vwg * OCL_VALUE_COORDS * sizeof(float)), OCL_LOCAL(vwg * sizeof(cl_uint)),
        OCL_LOCAL(tile_bytes(tile_rows, c->v_row_bytes)),
    };
    const size_t values_groups[3] = { (size_t)runs_max * n_slices, (size_t)a->n_kv_heads * n_chunks,
                                      n_s };
    if ((rc = ocl_args(d, k_values, op, sizeof values_args / sizeof values_args[0], values_args)) !=
            TKV_OK ||
        (rc = ocl_launch(d, k_values, op, 3, values_groups, vwg)) != TKV_OK)
        return rc;

    const size_t merge_wg = ocl_wg_pow2(d, OCL_K_MERGE, ROW_WORK_GROUP);
    cl_uint skip_at = (cl_uint)((size_t)a->n_seqs * a->n_q * a->n_q_heads * c->head_dim);
    const struct ocl_karg merge_args[] = {
        OCL_ARG(d->scratch.upload.mem), OCL_ARG(u_s0), OCL_ARG(u_t0), OCL_ARG(u_nt), OCL_ARG(u_nq),
        OCL_ARG(u_nqh), OCL_ARG(head_dim), OCL_ARG(v_type), OCL_ARG(v_rotation),
        OCL_ARG(u_tile_rows), OCL_ARG(u_tpr), OCL_ARG(d->scratch.part_acc.mem),
        OCL_ARG(d->scratch.part_l.mem), OCL_ARG(d->scratch.part_skip.mem), OCL_ARG(part_pitch),
        OCL_ARG(d->tables), OCL_ARG(d->scratch.download.mem), OCL_ARG(skip_at),
        OCL_LOCAL(c->d_acc * sizeof(float)), OCL_LOCAL(c->head_dim * sizeof(float)),
        OCL_LOCAL(merge_wg * sizeof(float)), OCL_LOCAL(merge_wg * sizeof(cl_uint)),
    };
    if ((rc = ocl_args(d, OCL_K_MERGE, op, sizeof merge_args / sizeof merge_args[0], merge_args)) !=
            TKV_OK ||
        (rc = ocl_launch(d, OCL_K_MERGE, op, 1, row_groups, merge_wg)) != TKV_OK)
        return rc;
    return TKV_OK;
}

/* Sequences and queries up in one transfer, the passes, outputs and skip
 * counts down in one. */
static int run(struct ocl_device *d, struct attn_call *c, uint64_t *skipped)
{
    static const char op[] = "attention";
    const struct tkv_attention_args *a = c->a;
    const size_t n_rows = (size_t)a->n_seqs * a->n_q * a->n_q_heads;
    const size_t seq_bytes = a->n_seqs * 3u * sizeof(cl_ulong);
    const size_t q_bytes = n_rows * c->head_dim * sizeof(float);
    const size_t up_bytes = seq_bytes + q_bytes, down_bytes = q_bytes + n_rows * sizeof(cl_uint);
    cl_int err;
    int rc;
    if ((rc = ocl_scratch_reserve(d, &d->scratch.upload, up_bytes, op, "upload")) != TKV_OK ||
        (rc = ocl_scratch_reserve(d, &d->scratch.download, down_bytes, op, "download")) != TKV_OK ||
        (rc = ocl_host_reserve(&d->up_host, &d->up_host_cap, up_bytes, op)) != TKV_OK ||
        (rc = ocl_host_reserve(&d->down_host, &d->down_host_cap, down_bytes, op)) != TKV_OK)
        return rc;
    cl_ulong *seqs = d->up_host;
    for (uint32_t s = 0; s < a->n_seqs; s++) {
        seqs[3u * s] = a->seqs[s].k_offset;
        seqs[3u * s + 1u] = a->seqs[s].v_offset;
        seqs[3u * s + 2u] = a->seqs[s].n_ctx;
    }
    memcpy((char *)d->up_host + seq_bytes, a->q, q_bytes);
    if ((err = clEnqueueWriteBuffer(d->queue, d->scratch.upload.mem, CL_FALSE, 0, up_bytes,
                                    d->up_host, 0, NULL, NULL)) != CL_SUCCESS)
        return ocl_fail(err, op, "clEnqueueWriteBuffer");

    c->q = d->scratch.upload.mem;
    c->q_at = (cl_uint)(seq_bytes / sizeof(float));
    if (tkv_type_is_turbo(a->k_fmt.type)) {
        if ((rc = ocl_scratch_reserve(d, &d->scratch.q_prepared,
                                      n_rows * c->q_stride * sizeof(float), op, "query")) != TKV_OK)
            return rc;
        cl_uint head_dim = c->head_dim, type = a->k_fmt.type, rotation = a->k_fmt.rotation;
        const struct ocl_karg args[] = {
            OCL_ARG(d->scratch.upload.mem), OCL_ARG(c->q_at), OCL_ARG(d->scratch.q_prepared.mem),
            OCL_ARG(head_dim), OCL_ARG(type), OCL_ARG(rotation), OCL_ARG(d->tables),
            OCL_LOCAL(c->head_dim * sizeof(float)), OCL_LOCAL(c->head_dim * sizeof(float)),
        };
        const size_t groups[3] = { n_rows, 1, 1 };
        if ((rc = ocl_args(d, OCL_K_PREPARE_Q, op, sizeof args / sizeof args[0], args)) != TKV_OK ||
            (rc = ocl_launch(d, OCL_K_PREPARE_Q, op, 1, groups,
                             ocl_wg_pow2(d, OCL_K_PREPARE_Q, ROW_WORK_GROUP))) != TKV_OK)
            return rc;
        c->q = d->scratch.q_prepared.mem;
        c->q_at = 0;
    }

    /* passes: as many sequences as the score scratch allows; a sequence
     * too long for it alone is split by query tokens */
    const size_t cap = d->max_alloc < SCORES_BYTES_MAX ? (size_t)d->max_alloc : SCORES_BYTES_MAX;
    const size_t token_bytes = (size_t)a->n_q_heads * sizeof(float); /* per row of context */
    for (uint32_t s0 = 0; s0 < a->n_seqs;) {
        uint32_t ctx = a->seqs[s0].n_ctx, s1 = s0 + 1;
        if ((size_t)a->n_q * ctx * token_bytes > cap) {
            size_t fit = cap / ((size_t)ctx * token_bytes);
            uint32_t n_t = fit < 1 ? 1u : (uint32_t)fit;
            for (uint32_t t0 = 0; t0 < a->n_q && rc == TKV_OK; t0 += n_t)
                rc = run_pass(d, c, s0, 1, t0, a->n_q - t0 < n_t ? a->n_q - t0 : n_t);
            if (rc != TKV_OK)
                return rc;
            s0 = s1;
            continue;
        }
        while (s1 < a->n_seqs) {
            uint32_t wider = a->seqs[s1].n_ctx > ctx ? a->seqs[s1].n_ctx : ctx;
            if ((size_t)(s1 + 1 - s0) * a->n_q * wider * token_bytes > cap)
                break;
            ctx = wider;
            s1++;
        }
        if ((rc = run_pass(d, c, s0, s1 - s0, 0, a->n_q)) != TKV_OK)
            return rc;
        s0 = s1;
    }

    if ((err = clEnqueueReadBuffer(d->queue, d->scratch.download.mem, CL_TRUE, 0, down_bytes,
                                   d->down_host, 0, NULL, NULL)) != CL_SUCCESS)
        return ocl_fail(err, op, "clEnqueueReadBuffer");
    memcpy(a->out, d->down_host, q_bytes);
    const cl_uint *counts = (const cl_uint *)((const char *)d->down_host + q_bytes);
    *skipped = 0;
    for (size_t r = 0; r < n_rows; r++)
        *skipped += counts[r];
    return TKV_OK;
}

int ocl_attention(void *dev, const struct tkv_attention_args *a)
{
    struct ocl_device *d = dev;
    struct attn_call c;
    uint64_t skipped = 0, total = 0;
    int rc;
    if ((rc = check(d, a, &c)) != TKV_OK)
        return rc;
    if (a->n_seqs > 0 && (rc = run(d, &c, &skipped)) != TKV_OK) {
        clFinish(d->queue); /* nothing queued may still read the staging buffers */
        return rc;
    }
    for (uint32_t s = 0; s < a->n_seqs; s++)
        for (uint32_t t = 0; t < a->n_q; t++) /* causal: token t sees n_ctx - n_q + t + 1 rows */
            total += (uint64_t)a->n_q_heads * (a->seqs[s].n_ctx - a->n_q + t + 1u);
    d->stats.attention_calls++;
    d->stats.rows_skipped += skipped;
    if (a->rows_total)
        *a->rows_total = total;
    if (a->rows_skipped)
        *a->rows_skipped = skipped;
    return TKV_OK;
}
