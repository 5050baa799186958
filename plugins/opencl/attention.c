/* SPDX-License-Identifier: MIT */
/*
 * The attention op: the kernels of kernels/attention.cl (the split over
 * tiles of rows is described there). The core has checked the arguments
 * (turbokv_plugin.h).
 *
 * One call: the call is planned on the host first (passes whose score
 * scratch stays under SCORES_BYTES_MAX, one pass unless the batch is very
 * large; each pass's tiles and work units), then the sequence table, the
 * block table, the work units and the queries go up in one transfer, the
 * queries are prepared once (turbo K), every pass runs attn_scores,
 * attn_scan, attn_values and attn_merge on the in-order queue, and one read
 * brings the outputs, the skip counts and the log-sum-exps back.
 */
#include <math.h>
#include <string.h>

#include "ocl.h"

#define SCORES_BYTES_MAX ((size_t)256 << 20)
/* Local memory a work-group asks for at most: what NVIDIA's OpenCL grants
 * a work-group, and small enough to keep several per multiprocessor. */
#define LOCAL_BYTES_MAX (48u << 10)
/* Packed K rows of a tile at most (128 f16 rows of head_dim 128). */
#define TILE_BYTES_MAX (32u << 10)
#define QUERY_BYTES_MAX (16u << 10)
/* Work-items of attn_scores (one per K row of a tile), of attn_values
 * (OCL_VALUE_COORDS accumulator coordinates each) and of the per-row
 * kernels. */
#define BLOCK_ROWS_MAX 128u
#define VALUE_WORK_GROUP 64u
#define ROW_WORK_GROUP 128u
/* Work-groups of attn_values wanted per compute unit. */
#define VALUE_GROUPS_PER_UNIT 8u
#define TILES_PER_RUN_MAX 64u
/* Words per sequence in the upload: n_ctx, n_q, q_first, block_first. */
#define SEQ_WORDS 4u

static uint32_t div_up(uint32_t x, uint32_t y) { return (x + y - 1u) / y; }

/* ---- tiles: the host's side of kernels/attention.cl's tile_geom ---------- */

struct tile_geom {
    uint32_t bt, seg_rows, segs, tpb;
};

static uint32_t geom_row0(const struct tile_geom *g, uint32_t b)
{
    uint32_t gb = b / g->tpb;
    return gb * g->segs * g->bt + (b - gb * g->tpb) * g->seg_rows;
}

static uint32_t geom_tile(const struct tile_geom *g, uint32_t j)
{
    uint32_t span = g->segs * g->bt, gb = j / span;
    return gb * g->tpb + (j - gb * span) / (g->segs * g->seg_rows);
}

/* Tiles of at most t rows for blocks of bt rows: a block of bt >= t rows in
 * tiles of equal length, else as many whole blocks as fit. */
static struct tile_geom geom_for(uint32_t bt, uint32_t t)
{
    struct tile_geom g = { .bt = bt, .segs = 1, .tpb = 1 };
    if (bt >= t) {
        g.tpb = div_up(bt, t);
        g.seg_rows = div_up(bt, g.tpb);
    } else {
        g.segs = t / bt;
        g.seg_rows = bt;
    }
    return g;
}

/* Words of local memory one segment of a tile takes (load_tile). */
static uint32_t slot_words(uint32_t seg_rows, uint32_t row_bytes, int padded)
{
    return padded ? seg_rows * (row_bytes / 4u + 1u) : (3u + seg_rows * row_bytes + 3u) / 4u;
}

/* Rows at word-aligned places only: then load_tile pads them. */
static int pool_padded(const struct tkv_pool *p)
{
    return p->row_bytes % 4u == 0 && p->head_stride % 4u == 0 && p->block_stride % 4u == 0;
}

struct pass_seq {
    uint32_t tb, te, lo, hi, tile_base, n_tiles, jbase;
};

/* kernels/attention.cl: pass_seq_of */
static struct pass_seq pass_seq_of(const struct tkv_attn_seq *seq, uint32_t qr0, uint32_t qr1,
                                   uint32_t window, const struct tile_geom *g)
{
    struct pass_seq q;
    q.tb = (qr0 > seq->q_first ? qr0 : seq->q_first) - seq->q_first;
    q.te = (qr1 < seq->q_first + seq->n_q ? qr1 : seq->q_first + seq->n_q) - seq->q_first;
    uint32_t seen = seq->n_ctx - seq->n_q + q.tb + 1u;
    q.lo = window && seen > window ? seen - window : 0u;
    q.hi = seq->n_ctx - seq->n_q + q.te;
    q.tile_base = geom_tile(g, q.lo);
    q.n_tiles = geom_tile(g, q.hi - 1u) + 1u - q.tile_base;
    q.jbase = geom_row0(g, q.tile_base);
    return q;
}

/* ---- the plan -------------------------------------------------------------- */

struct ocl_attn_pass {
    uint32_t qr0, qr1; /* query tokens */
    uint32_t s0, s1;   /* sequences */
    uint32_t unit0, n_units;
    uint32_t variant; /* query rows per unit: 1 << variant */
    struct tile_geom geom;
    uint32_t tile_rows; /* segs * seg_rows: the longest tile */
    uint32_t k_slot, v_slot;
    uint32_t score_pitch, bmax_pitch, runs_max, tiles_per_run;
};

struct attn_call {
    const struct tkv_attention_args *a;
    cl_mem k_mem, v_mem;
    uint32_t head_dim, ratio, q_stride;
    int k_padded, v_padded;
    uint32_t n_passes, n_units;
    /* word offsets in the upload */
    cl_uint seq_at, qseq_at, blocks_at, units_at;
    cl_mem q;     /* the queries as attn_scores takes them, */
    cl_uint q_at; /* from this float on */
    size_t max_scores, max_bmax, max_rows, max_part; /* scratch, in 4-byte elements */
};

static const struct tkv_attn_seq *seq_at(const struct tkv_attention_args *a, uint32_t s)
{
    return (const struct tkv_attn_seq *)((const char *)a->seqs + (size_t)s * a->seq_size);
}

static size_t local_left(const struct ocl_device *d, enum ocl_kernel k)
{
    size_t total = d->local_mem < LOCAL_BYTES_MAX ? (size_t)d->local_mem : LOCAL_BYTES_MAX;
    return total > d->kernel_local[k] ? total - (size_t)d->kernel_local[k] : 0;
}

/* The tiles of a pass: the longest that fit attn_scores' local memory (the
 * queries, a reduction row, the K tile) and attn_values' (three weights per
 * row and query row, the V tile). */
static int plan_tiles(const struct ocl_device *d, const struct attn_call *c,
                      struct ocl_attn_pass *ps)
{
    const struct tkv_attention_args *a = c->a;
    const uint32_t qc = 1u << ps->variant;
    const enum ocl_kernel k_scores = OCL_K_SCORES + ps->variant,
                          k_values = OCL_K_VALUES + ps->variant;
    const size_t wg = ocl_wg_pow2(d, k_scores, BLOCK_ROWS_MAX);
    const size_t vwg = ocl_wg_pow2(d, k_values, VALUE_WORK_GROUP);
    const size_t k_room = local_left(d, k_scores), v_room = local_left(d, k_values);
    const size_t k_fixed = (size_t)qc * c->q_stride * sizeof(float) + qc * wg * sizeof(float);
    const size_t v_fixed = vwg * (OCL_VALUE_COORDS + 1u) * sizeof(float);
    for (uint32_t t = (uint32_t)wg; t >= 1u; t--) {
        struct tile_geom g = geom_for(a->k.block_tokens, t);
        uint32_t rows = g.segs * g.seg_rows;
        uint32_t k_slot = slot_words(g.seg_rows, a->k.row_bytes, c->k_padded);
        uint32_t v_slot = slot_words(g.seg_rows, a->v.row_bytes, c->v_padded);
        size_t k_tile = ((size_t)g.segs * k_slot + 2u) * sizeof(cl_uint);
        size_t v_tile = ((size_t)g.segs * v_slot + 2u) * sizeof(cl_uint);
        size_t k_need = k_fixed + rows * sizeof(cl_uint) + k_tile;
        size_t v_need = v_fixed + (size_t)rows * (3u * qc + 2u) * sizeof(float) + v_tile;
        if (k_need <= k_room && v_need <= v_room &&
            (size_t)rows * a->k.row_bytes <= TILE_BYTES_MAX) {
            ps->geom = g;
            ps->tile_rows = rows;
            ps->k_slot = k_slot;
            ps->v_slot = v_slot;
            return TKV_OK;
        }
    }
    return OCL_ERROR(TKV_EUNSUPPORTED,
                     "attention: rows of %u (K) and %u (V) bytes do not fit the device's %llu "
                     "bytes of local memory",
                     a->k.row_bytes, a->v.row_bytes, (unsigned long long)d->local_mem);
}

/* A sequence's score rows at most: the rows its queries see, and up to a
 * tile before them. */
static uint64_t seen_bound(const struct tkv_attention_args *a, const struct tkv_attn_seq *seq)
{
    uint64_t seen = seq->n_ctx;
    if (a->window && (uint64_t)a->window + seq->n_q - 1u < seen)
        seen = (uint64_t)a->window + seq->n_q - 1u;
    seen += BLOCK_ROWS_MAX;
    return seen < seq->n_ctx ? seen : seq->n_ctx;
}

static int add_pass(struct ocl_device *d, struct attn_call *c, uint32_t qr0, uint32_t qr1,
                    uint32_t s0, uint32_t s1)
{
    int rc = ocl_host_reserve((void **)&d->passes, &d->passes_cap,
                              (c->n_passes + 1u) * sizeof *d->passes, "attention");
    if (rc != TKV_OK)
        return rc;
    d->passes[c->n_passes++] = (struct ocl_attn_pass){ .qr0 = qr0, .qr1 = qr1, .s0 = s0, .s1 = s1 };
    return TKV_OK;
}

/* Passes: as many whole sequences as the score scratch allows; a sequence
 * too long for it alone is split by query tokens. */
static int plan_passes(struct ocl_device *d, struct attn_call *c)
{
    const struct tkv_attention_args *a = c->a;
    const uint64_t cap = d->max_alloc < SCORES_BYTES_MAX ? d->max_alloc : SCORES_BYTES_MAX;
    const uint64_t token_bytes = (uint64_t)a->n_q_heads * sizeof(float); /* per row seen */
    int rc;
    c->n_passes = 0;
    for (uint32_t s0 = 0; s0 < a->n_seqs;) {
        const struct tkv_attn_seq *seq = seq_at(a, s0);
        uint64_t seen = seen_bound(a, seq), tokens = seq->n_q;
        uint32_t s1 = s0 + 1;
        if (tokens * seen * token_bytes > cap) {
            uint64_t fit = cap / (seen * token_bytes);
            uint32_t n_t = fit < 1 ? 1u : (uint32_t)fit;
            for (uint32_t t0 = 0; t0 < seq->n_q; t0 += n_t) {
                uint32_t t1 = seq->n_q - t0 < n_t ? seq->n_q : t0 + n_t;
                if ((rc = add_pass(d, c, seq->q_first + t0, seq->q_first + t1, s0, s1)) != TKV_OK)
                    return rc;
            }
            s0 = s1;
            continue;
        }
        for (; s1 < a->n_seqs; s1++) {
            const struct tkv_attn_seq *next = seq_at(a, s1);
            uint64_t wider = seen_bound(a, next) > seen ? seen_bound(a, next) : seen;
            if ((tokens + next->n_q) * wider * token_bytes > cap)
                break;
            seen = wider;
            tokens += next->n_q;
        }
        const struct tkv_attn_seq *last = seq_at(a, s1 - 1);
        if ((rc = add_pass(d, c, seq->q_first, last->q_first + last->n_q, s0, s1)) != TKV_OK)
            return rc;
        s0 = s1;
    }
    return TKV_OK;
}

/* A pass's query rows per unit, tiles, units, pitches and runs; its scratch
 * needs into c's maxima. */
static int plan_pass(const struct ocl_device *d, struct attn_call *c, struct ocl_attn_pass *ps)
{
    const struct tkv_attention_args *a = c->a;
    uint32_t rows = 0;
    for (uint32_t s = ps->s0; s < ps->s1; s++) {
        struct tile_geom any = { 1, 1, 1, 1 };
        struct pass_seq q = pass_seq_of(seq_at(a, s), ps->qr0, ps->qr1, 0, &any);
        rows = (q.te - q.tb) * c->ratio > rows ? (q.te - q.tb) * c->ratio : rows;
    }
    /* the smallest variant holding a sequence's rows of a kv head, within
     * the local memory for them */
    uint32_t qc = 1;
    ps->variant = 0;
    while (qc < rows && qc < OCL_QUERY_ROWS_MAX) {
        qc <<= 1;
        ps->variant++;
    }
    while (qc > 1 && (size_t)qc * c->q_stride * sizeof(float) > QUERY_BYTES_MAX) {
        qc >>= 1;
        ps->variant--;
    }
    int rc = plan_tiles(d, c, ps);
    if (rc != TKV_OK)
        return rc;

    uint64_t work = 0;
    ps->unit0 = c->n_units;
    ps->n_units = 0;
    ps->score_pitch = ps->bmax_pitch = 0;
    for (uint32_t s = ps->s0; s < ps->s1; s++) {
        struct pass_seq q = pass_seq_of(seq_at(a, s), ps->qr0, ps->qr1, a->window, &ps->geom);
        uint32_t units = div_up((q.te - q.tb) * c->ratio, qc);
        ps->n_units += units;
        work += (uint64_t)q.n_tiles * units;
        ps->score_pitch = q.hi - q.jbase > ps->score_pitch ? q.hi - q.jbase : ps->score_pitch;
        ps->bmax_pitch = q.n_tiles > ps->bmax_pitch ? q.n_tiles : ps->bmax_pitch;
    }
    c->n_units += ps->n_units;
    work *= a->n_kv_heads;
    uint64_t target = (uint64_t)VALUE_GROUPS_PER_UNIT * (d->compute_units ? d->compute_units : 1u);
    uint64_t per_run = (work + target - 1u) / target; /* >= 1 tile */
    ps->tiles_per_run = per_run > TILES_PER_RUN_MAX ? TILES_PER_RUN_MAX : (uint32_t)per_run;
    ps->runs_max = div_up(ps->bmax_pitch, ps->tiles_per_run);

    size_t n_rows = (size_t)(ps->qr1 - ps->qr0) * a->n_q_heads;
#define AT_LEAST(m, v) ((m) = (v) > (m) ? (v) : (m))
    AT_LEAST(c->max_scores, n_rows * ps->score_pitch);
    AT_LEAST(c->max_bmax, n_rows * ps->bmax_pitch);
    AT_LEAST(c->max_rows, n_rows);
    AT_LEAST(c->max_part, n_rows * ps->runs_max);
#undef AT_LEAST
    return TKV_OK;
}

/* ---- the launches of one pass ------------------------------------------------ */

static int run_pass(struct ocl_device *d, const struct attn_call *c, const struct ocl_attn_pass *ps)
{
    static const char op[] = "attention";
    const struct tkv_attention_args *a = c->a;
    const uint32_t qc = 1u << ps->variant;
    const enum ocl_kernel k_scores = OCL_K_SCORES + ps->variant,
                          k_values = OCL_K_VALUES + ps->variant;
    const size_t wg = ocl_wg_pow2(d, k_scores, BLOCK_ROWS_MAX);
    const size_t vwg = ocl_wg_pow2(d, k_values, VALUE_WORK_GROUP);
    uint32_t per_row = 1; /* attn_values computes the same */
    while (per_row * OCL_VALUE_COORDS < c->head_dim && per_row < vwg)
        per_row <<= 1;
    const uint32_t n_slices = div_up(c->head_dim, per_row * OCL_VALUE_COORDS);
    const size_t n_rows = (size_t)(ps->qr1 - ps->qr0) * a->n_q_heads;
    const size_t tile_rows = ps->tile_rows;
    int rc;

    cl_mem meta = d->scratch.upload.mem;
    cl_uint seq_at_ = c->seq_at, qseq_at = c->qseq_at, blocks_at = c->blocks_at;
    cl_uint units_at = c->units_at + 2u * ps->unit0, qr0 = ps->qr0, qr1 = ps->qr1;
    cl_uint n_q_heads = a->n_q_heads, ratio = c->ratio, window = a->window;
    cl_uint bt = ps->geom.bt, seg_rows = ps->geom.seg_rows, segs = ps->geom.segs,
            tpb = ps->geom.tpb;
    cl_ulong k_block_stride = a->k.block_stride, k_head_stride = a->k.head_stride;
    cl_ulong v_block_stride = a->v.block_stride, v_head_stride = a->v.head_stride;
    cl_uint k_rb = a->k.row_bytes, v_rb = a->v.row_bytes, k_slot = ps->k_slot,
            v_slot = ps->v_slot;
    cl_int k_padded = c->k_padded, v_padded = c->v_padded;
    cl_uint head_dim = c->head_dim, k_type = a->k.fmt.type, v_type = a->v.fmt.type;
    cl_uint v_rotation = a->v.fmt.rotation, q_stride = c->q_stride;
    cl_uint score_pitch = ps->score_pitch, bmax_pitch = ps->bmax_pitch;
    cl_uint u_tile_rows = ps->tile_rows, tpr = ps->tiles_per_run, part_pitch = ps->runs_max;
    /* scores in base 2 for exp2 (kernels/attention.cl): x log2(e), with a
     * softcap c: c log2(e) tanh(scale q.k / c) */
    cl_float pre = a->softcap > 0.0f ? (cl_float)((double)a->scale / a->softcap)
                                     : (cl_float)(a->scale * M_LOG2E);
    cl_float post = a->softcap > 0.0f ? (cl_float)(a->softcap * M_LOG2E) : 0.0f;
    cl_float threshold = a->sparse_v_threshold;

    const struct ocl_karg scores_args[] = {
        OCL_ARG(c->k_mem), OCL_ARG(meta), OCL_ARG(seq_at_), OCL_ARG(blocks_at), OCL_ARG(units_at),
        OCL_ARG(qr0), OCL_ARG(qr1), OCL_ARG(n_q_heads), OCL_ARG(ratio), OCL_ARG(window),
        OCL_ARG(bt), OCL_ARG(seg_rows), OCL_ARG(segs), OCL_ARG(tpb), OCL_ARG(k_block_stride),
        OCL_ARG(k_head_stride), OCL_ARG(k_rb), OCL_ARG(k_padded), OCL_ARG(k_slot),
        OCL_ARG(head_dim), OCL_ARG(k_type), OCL_ARG(c->q), OCL_ARG(c->q_at), OCL_ARG(q_stride),
        OCL_ARG(d->tables), OCL_ARG(pre), OCL_ARG(post), OCL_ARG(d->scratch.scores.mem),
        OCL_ARG(score_pitch), OCL_ARG(d->scratch.bmax.mem), OCL_ARG(bmax_pitch),
        OCL_LOCAL((size_t)qc * c->q_stride * sizeof(float)),
        OCL_LOCAL(((size_t)ps->geom.segs * ps->k_slot + 2u) * sizeof(cl_uint)),
        OCL_LOCAL(qc * wg * sizeof(float)), OCL_LOCAL(tile_rows * sizeof(cl_uint)),
    };
    /* kv heads first: the work-groups that run side by side read the heads
     * of the same pool blocks, whole blocks of memory when blocks are small */
    const size_t scores_groups[3] = { a->n_kv_heads, ps->bmax_pitch, ps->n_units };
    if ((rc = ocl_args(d, k_scores, op, sizeof scores_args / sizeof scores_args[0], scores_args)) !=
            TKV_OK ||
        (rc = ocl_launch(d, k_scores, op, 3, scores_groups, wg)) != TKV_OK)
        return rc;

    const size_t scan_wg = ocl_wg_pow2(d, OCL_K_SCAN, ROW_WORK_GROUP);
    const struct ocl_karg scan_args[] = {
        OCL_ARG(meta), OCL_ARG(seq_at_), OCL_ARG(qseq_at), OCL_ARG(qr0), OCL_ARG(qr1),
        OCL_ARG(n_q_heads), OCL_ARG(window), OCL_ARG(bt), OCL_ARG(seg_rows), OCL_ARG(segs),
        OCL_ARG(tpb), OCL_ARG(d->scratch.bmax.mem), OCL_ARG(bmax_pitch),
        OCL_ARG(d->scratch.tmax.mem), OCL_LOCAL(scan_wg * sizeof(float)),
    };
    const size_t row_groups[3] = { n_rows, 1, 1 };
    if ((rc = ocl_args(d, OCL_K_SCAN, op, sizeof scan_args / sizeof scan_args[0], scan_args)) !=
            TKV_OK ||
        (rc = ocl_launch(d, OCL_K_SCAN, op, 1, row_groups, scan_wg)) != TKV_OK)
        return rc;

    const size_t weights_bytes = (size_t)qc * tile_rows * sizeof(float);
    const struct ocl_karg values_args[] = {
        OCL_ARG(c->v_mem), OCL_ARG(meta), OCL_ARG(seq_at_), OCL_ARG(blocks_at), OCL_ARG(units_at),
        OCL_ARG(qr0), OCL_ARG(qr1), OCL_ARG(n_q_heads), OCL_ARG(ratio), OCL_ARG(window),
        OCL_ARG(bt), OCL_ARG(seg_rows), OCL_ARG(segs), OCL_ARG(tpb), OCL_ARG(v_block_stride),
        OCL_ARG(v_head_stride), OCL_ARG(v_rb), OCL_ARG(v_padded), OCL_ARG(v_slot),
        OCL_ARG(head_dim), OCL_ARG(v_type), OCL_ARG(d->tables), OCL_ARG(d->scratch.scores.mem),
        OCL_ARG(score_pitch), OCL_ARG(d->scratch.bmax.mem), OCL_ARG(bmax_pitch),
        OCL_ARG(d->scratch.tmax.mem), OCL_ARG(u_tile_rows), OCL_ARG(tpr), OCL_ARG(threshold),
        OCL_ARG(d->scratch.part_acc.mem), OCL_ARG(d->scratch.part_l.mem),
        OCL_ARG(d->scratch.part_skip.mem), OCL_ARG(part_pitch), OCL_LOCAL(weights_bytes),
        OCL_LOCAL(weights_bytes), OCL_LOCAL(weights_bytes), OCL_LOCAL(tile_rows * sizeof(cl_uint)),
        OCL_LOCAL(vwg * OCL_VALUE_COORDS * sizeof(float)), OCL_LOCAL(vwg * sizeof(cl_uint)),
        OCL_LOCAL(((size_t)ps->geom.segs * ps->v_slot + 2u) * sizeof(cl_uint)),
        OCL_LOCAL(tile_rows * sizeof(cl_uint)),
    };
    const size_t values_groups[3] = { a->n_kv_heads, (size_t)ps->runs_max * n_slices,
                                      ps->n_units };
    if ((rc = ocl_args(d, k_values, op, sizeof values_args / sizeof values_args[0], values_args)) !=
            TKV_OK ||
        (rc = ocl_launch(d, k_values, op, 3, values_groups, vwg)) != TKV_OK)
        return rc;

    const size_t merge_wg = ocl_wg_pow2(d, OCL_K_MERGE, ROW_WORK_GROUP);
    const size_t n_rows_total = (size_t)a->n_q_total * a->n_q_heads;
    cl_uint skip_at = (cl_uint)(n_rows_total * c->head_dim);
    cl_uint lse_at = a->lse ? (cl_uint)(n_rows_total * (c->head_dim + 1u)) : 0u;
    const struct ocl_karg merge_args[] = {
        OCL_ARG(meta), OCL_ARG(seq_at_), OCL_ARG(qseq_at), OCL_ARG(qr0), OCL_ARG(qr1),
        OCL_ARG(n_q_heads), OCL_ARG(window), OCL_ARG(bt), OCL_ARG(seg_rows), OCL_ARG(segs),
        OCL_ARG(tpb), OCL_ARG(head_dim), OCL_ARG(v_type), OCL_ARG(v_rotation), OCL_ARG(tpr),
        OCL_ARG(d->scratch.tmax.mem), OCL_ARG(d->scratch.part_acc.mem),
        OCL_ARG(d->scratch.part_l.mem), OCL_ARG(d->scratch.part_skip.mem), OCL_ARG(part_pitch),
        OCL_ARG(d->tables), OCL_ARG(d->scratch.download.mem), OCL_ARG(skip_at), OCL_ARG(lse_at),
        OCL_LOCAL(c->head_dim * sizeof(float)), OCL_LOCAL(c->head_dim * sizeof(float)),
        OCL_LOCAL(merge_wg * sizeof(float)), OCL_LOCAL(merge_wg * sizeof(cl_uint)),
    };
    if ((rc = ocl_args(d, OCL_K_MERGE, op, sizeof merge_args / sizeof merge_args[0], merge_args)) !=
            TKV_OK ||
        (rc = ocl_launch(d, OCL_K_MERGE, op, 1, row_groups, merge_wg)) != TKV_OK)
        return rc;
    return TKV_OK;
}

/* ---- the call ------------------------------------------------------------------ */

/* The upload (word offsets in c): sequences, the sequence of every query
 * token, the block table, the units of every pass, the queries. */
static void fill_upload(struct ocl_device *d, const struct attn_call *c, size_t q_bytes)
{
    const struct tkv_attention_args *a = c->a;
    cl_uint *w = d->up_host;
    for (uint32_t s = 0; s < a->n_seqs; s++) {
        const struct tkv_attn_seq *seq = seq_at(a, s);
        cl_uint *e = w + c->seq_at + SEQ_WORDS * s;
        e[0] = seq->n_ctx;
        e[1] = seq->n_q;
        e[2] = seq->q_first;
        e[3] = seq->block_first;
        for (uint32_t t = 0; t < seq->n_q; t++)
            w[c->qseq_at + seq->q_first + t] = s;
    }
    memcpy(w + c->blocks_at, a->blocks, (size_t)a->n_blocks * sizeof(cl_uint));
    cl_uint *unit = w + c->units_at;
    for (uint32_t i = 0; i < c->n_passes; i++) {
        const struct ocl_attn_pass *ps = &d->passes[i];
        const uint32_t qc = 1u << ps->variant;
        for (uint32_t s = ps->s0; s < ps->s1; s++) {
            struct pass_seq q = pass_seq_of(seq_at(a, s), ps->qr0, ps->qr1, 0, &ps->geom);
            for (uint32_t u0 = 0; u0 < (q.te - q.tb) * c->ratio; u0 += qc) {
                *unit++ = s;
                *unit++ = u0;
            }
        }
    }
    memcpy(w + c->q_at, a->q, q_bytes);
}

static int run(struct ocl_device *d, struct attn_call *c, uint64_t *skipped)
{
    static const char op[] = "attention";
    const struct tkv_attention_args *a = c->a;
    const size_t n_rows = (size_t)a->n_q_total * a->n_q_heads;
    const size_t q_bytes = n_rows * c->head_dim * sizeof(float);
    int rc;

    if ((rc = plan_passes(d, c)) != TKV_OK)
        return rc;
    c->n_units = 0;
    c->max_scores = c->max_bmax = c->max_rows = c->max_part = 0;
    for (uint32_t i = 0; i < c->n_passes; i++)
        if ((rc = plan_pass(d, c, &d->passes[i])) != TKV_OK)
            return rc;

    const size_t seq_words = (size_t)a->n_seqs * SEQ_WORDS;
    const size_t up_words = seq_words + a->n_q_total + a->n_blocks + 2u * (size_t)c->n_units +
                            q_bytes / sizeof(float);
    const size_t down_words = n_rows * (c->head_dim + 1u + (a->lse ? 1u : 0u));
    /* the kernels take word offsets as 32-bit numbers */
    if (up_words > UINT32_MAX || down_words > UINT32_MAX)
        return OCL_ERROR(TKV_EUNSUPPORTED,
                         "attention: %zu query rows of head_dim %u with %u blocks exceed the "
                         "plugin's 2^32-word transfers",
                         n_rows, c->head_dim, a->n_blocks);
    c->seq_at = 0;
    c->qseq_at = (cl_uint)seq_words;
    c->blocks_at = c->qseq_at + a->n_q_total;
    c->units_at = c->blocks_at + a->n_blocks;
    c->q_at = c->units_at + 2u * c->n_units;
    if ((rc = ocl_scratch_reserve(d, &d->scratch.upload, up_words * 4u, op, "upload")) != TKV_OK ||
        (rc = ocl_scratch_reserve(d, &d->scratch.download, down_words * 4u, op, "download")) !=
            TKV_OK ||
        (rc = ocl_host_reserve(&d->up_host, &d->up_host_cap, up_words * 4u, op)) != TKV_OK ||
        (rc = ocl_host_reserve(&d->down_host, &d->down_host_cap, down_words * 4u, op)) !=
            TKV_OK ||
        (rc = ocl_scratch_reserve(d, &d->scratch.scores, c->max_scores * sizeof(float), op,
                                  "score")) != TKV_OK ||
        (rc = ocl_scratch_reserve(d, &d->scratch.bmax, c->max_bmax * sizeof(float), op,
                                  "tile max")) != TKV_OK ||
        (rc = ocl_scratch_reserve(d, &d->scratch.tmax, c->max_rows * sizeof(float), op, "max")) !=
            TKV_OK ||
        (rc = ocl_scratch_reserve(d, &d->scratch.part_acc,
                                  c->max_part * c->head_dim * sizeof(float), op, "partial")) !=
            TKV_OK ||
        (rc = ocl_scratch_reserve(d, &d->scratch.part_l, c->max_part * sizeof(float), op,
                                  "partial sum")) != TKV_OK ||
        (rc = ocl_scratch_reserve(d, &d->scratch.part_skip, c->max_part * sizeof(cl_uint), op,
                                  "partial count")) != TKV_OK)
        return rc;
    if (tkv_type_is_turbo(a->k.fmt.type) &&
        (rc = ocl_scratch_reserve(d, &d->scratch.q_prepared, n_rows * c->q_stride * sizeof(float),
                                  op, "query")) != TKV_OK)
        return rc;

    fill_upload(d, c, q_bytes);
    cl_int err = clEnqueueWriteBuffer(d->queue, d->scratch.upload.mem, CL_FALSE, 0, up_words * 4u,
                                      d->up_host, 0, NULL, NULL);
    if (err != CL_SUCCESS)
        return ocl_fail(err, op, "clEnqueueWriteBuffer");

    c->q = d->scratch.upload.mem;
    if (tkv_type_is_turbo(a->k.fmt.type)) {
        cl_uint head_dim = c->head_dim, type = a->k.fmt.type, rotation = a->k.fmt.rotation;
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
    for (uint32_t i = 0; i < c->n_passes; i++)
        if ((rc = run_pass(d, c, &d->passes[i])) != TKV_OK)
            return rc;

    if ((err = clEnqueueReadBuffer(d->queue, d->scratch.download.mem, CL_TRUE, 0, down_words * 4u,
                                   d->down_host, 0, NULL, NULL)) != CL_SUCCESS)
        return ocl_fail(err, op, "clEnqueueReadBuffer");
    memcpy(a->out, d->down_host, q_bytes);
    const cl_uint *counts = (const cl_uint *)((const char *)d->down_host + q_bytes);
    if (a->lse)
        memcpy(a->lse, counts + n_rows, n_rows * sizeof(float));
    *skipped = 0;
    for (size_t r = 0; r < n_rows; r++)
        *skipped += counts[r];
    return TKV_OK;
}

int ocl_attention(void *dev, const struct tkv_attention_args *a)
{
    struct ocl_device *d = dev;
    struct attn_call c = {
        .a = a,
        .k_mem = ocl_buffer_of(a->k.buf)->mem,
        .v_mem = ocl_buffer_of(a->v.buf)->mem,
        .head_dim = a->k.fmt.head_dim,
        .ratio = a->n_q_heads / a->n_kv_heads,
        .q_stride = tkv_type_is_qjl(a->k.fmt.type) ? 2u * a->k.fmt.head_dim : a->k.fmt.head_dim,
        .k_padded = pool_padded(&a->k),
        .v_padded = pool_padded(&a->v),
    };
    uint64_t skipped = 0, total = 0;
    int rc = run(d, &c, &skipped);
    if (rc != TKV_OK) {
        clFinish(d->queue); /* nothing queued may still read the staging buffers */
        return rc;
    }
    /* visible rows: token t of a sequence sees its position + 1 rows, at
     * most window of them */
    for (uint32_t s = 0; s < a->n_seqs; s++) {
        const struct tkv_attn_seq *seq = seq_at(a, s);
        for (uint32_t t = 0; t < seq->n_q; t++) {
            uint64_t seen = (uint64_t)seq->n_ctx - seq->n_q + t + 1u;
            total += a->n_q_heads * (a->window && seen > a->window ? a->window : seen);
        }
    }
    d->stats.attention_calls++;
    d->stats.rows_skipped += skipped;
    if (a->rows_total)
        *a->rows_total = total;
    if (a->rows_skipped)
        *a->rows_skipped = skipped;
    return TKV_OK;
}
