/* SPDX-License-Identifier: MIT */
/*
 * The attention op: one launch of attn_decode_QC (kernels/attention.cl,
 * which describes the split into units, chunks and tiles) per call. The
 * core has checked the arguments (turbokv_plugin.h).
 *
 * One call: the plan (query rows per unit, tiles, units, tiles per chunk)
 * is made on the host from the call's shape and the device's compute
 * units; the sequence table, the block table, the units and the queries go
 * up in one write from pinned memory; one kernel runs; one read into pinned
 * memory brings the outputs, the skip counts and the log-sum-exps back, and
 * is the call's one wait. Nothing is allocated once the scratch buffers
 * have grown to the call's size, and kernel arguments that did not change
 * since the last call are not set again (device.c: ocl_args).
 */
#include <math.h>
#include <string.h>

#include "ocl.h"
#include "tensor.h"

/* Local memory a work-group asks for at most: what NVIDIA's OpenCL grants
 * a work-group. */
#define LOCAL_BYTES_MAX (48u << 10)
/* Packed rows of a tile at most (128 f16 rows of head_dim 128). */
#define TILE_BYTES_MAX (32u << 10)
#define QUERY_BYTES_MAX (16u << 10)
/* Work-items of attn_decode (one per K row of a tile) by default. */
#define WORK_GROUP 128u
#define LANES_MAX 16u
/* Work-groups wanted per compute unit: on the H200, 4 beat 8 and 16 at
 * 4K-128K for one sequence (longer chunks, fewer to merge; README.md). */
#define GROUPS_PER_CU 4u
/* Chunks of one (unit, kv head) at most, and the bytes of partial outputs
 * the last work-group merges at most (its merge is serial after the
 * others: more chunks fill the device better but merge longer). */
#define CHUNKS_MAX 128u
#define MERGE_BYTES (256u << 10)
/* Words per sequence in the upload: n_ctx, n_q, q_first, block_first. */
#define SEQ_WORDS 4u

static uint32_t div_up(uint32_t x, uint32_t y) { return (x + y - 1u) / y; }

static uint32_t pow2_at_least(uint32_t x)
{
    uint32_t p = 1;
    while (p < x)
        p <<= 1;
    return p;
}

/* ---- tiles: the host's side of kernels/attention.cl's tile_geom ---------- */

struct tile_geom {
    uint32_t bt, seg_rows, segs, tpb;
};

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

/* The tiles of a sequence its queries see (kernels/attention.cl:
 * pass_seq_of over all its query tokens). */
static uint32_t seq_tiles(const struct tkv_attn_seq *seq, uint32_t window,
                          const struct tile_geom *g)
{
    uint32_t seen = seq->n_ctx - seq->n_q + 1u;
    uint32_t lo = window && seen > window ? seen - window : 0u, hi = seq->n_ctx;
    return geom_tile(g, hi - 1u) + 1u - geom_tile(g, lo);
}

static const struct tkv_attn_seq *seq_at(const struct tkv_attention_args *a, uint32_t s)
{
    return (const struct tkv_attn_seq *)((const char *)a->seqs + (size_t)s * a->seq_size);
}

/* ---- the plan -------------------------------------------------------------- */

struct attn_plan {
    enum ocl_kernel decode; /* the first attention kernel: generic, specialized or OCL_K_TC
                               (the tensor-core kernel, tc_decode_QC) */
    uint32_t tiles_per_warp; /* theirs: 16-row tiles of one warp in a chunk */
    uint32_t variant, qc, wg, head_dim, ratio, q_stride;
    int k_padded, v_padded;
    struct tile_geom geom;
    uint32_t tile_rows, k_slot, v_slot;
    size_t tile_words, red_floats;
    size_t omask_words; /* outlier-split V: a mask of tile rows per coordinate chunk */
    uint32_t chunks_cap;
    uint32_t n_units, tiles_per_chunk, chunk_pitch;
    /* ABI 2.7's append_attention on the tensor-core kernels: the new rows
     * they quantize (NULL: none, the call's rows are all stored) */
    const struct fused_append *append;
};

/* The appended rows of one sequence as the tensor-core kernels take them:
 * f32 rows in the host's buffers (ks, vs from float ks_at, vs_at), tokens
 * first .. first + n - 1, and each pool's (type, scale mode). */
struct fused_append {
    cl_mem ks, vs;
    cl_uint ks_at, vs_at, first, n;
    cl_uint4 fmt; /* K type, K scale mode, V type, V scale mode */
};

static size_t zmax(size_t a, size_t b) { return a > b ? a : b; }

/* Query rows per unit (1 << variant), work-group and tiles for the local
 * memory of the device; TKV_EUNSUPPORTED when nothing fits. */
static int plan_shape(const struct ocl_device *d, const struct tkv_attention_args *a,
                      struct attn_plan *p)
{
    /* two query rows at least: PoCL 3.1 runs a one-row variant wrongly
     * (head_dim <= 64 with work-groups of 128), and one row is the rare
     * case of no GQA and one query token */
    /* outlier-split V keeps a second accumulator per query row (their
     * outliers, unrotated): at most 8 rows, so that both stay in registers */
    const int v_split = tkv_type_is_outlier(a->v.fmt.type);
    const uint32_t qc_max = v_split ? OCL_QUERY_ROWS_MAX / 2u : OCL_QUERY_ROWS_MAX;
    uint32_t rows = a->max_n_q * p->ratio, qc = OCL_QUERY_ROWS_MIN, variant = 0;
    while (qc < rows && qc < qc_max) {
        qc <<= 1;
        variant++;
    }
    while (qc > OCL_QUERY_ROWS_MIN && (size_t)qc * p->q_stride * sizeof(float) > QUERY_BYTES_MAX) {
        qc >>= 1;
        variant--;
    }
    const size_t merge_bytes = d->tune_merge_kib ? (size_t)d->tune_merge_kib << 10 : MERGE_BYTES;
    for (;; qc >>= 1, variant--) {
        const enum ocl_kernel k = p->decode + variant;
        const size_t limit = d->kernel_wg[k];
        size_t wg = 1;
        /* a power of two, of at least the device's preferred multiple (a
         * warp), and enough work-items for a row's V coordinates */
        size_t want = d->tune_wg ? d->tune_wg : WORK_GROUP;
        want = zmax(want, d->kernel_multiple[k]);
        want = zmax(want, div_up(p->head_dim, OCL_VALUE_COORDS));
        /* at most LANES_MAX V rows side by side: with 32 or more (head_dim
         * below 64 at 128 work-items) PoCL 3.1 gives wrong outputs, a
         * failure not understood yet (README.md) */
        const size_t lanes_cap = LANES_MAX * pow2_at_least(div_up(p->head_dim, OCL_VALUE_COORDS));
        want = want < lanes_cap ? want : lanes_cap;
        while (wg * 2 <= want && wg * 2 <= limit)
            wg *= 2;
        if (wg * OCL_VALUE_COORDS < p->head_dim)
            return OCL_ERROR(TKV_EUNSUPPORTED,
                             "attention: head_dim %u needs work-groups of %u work-items; the device "
                             "runs at most %zu",
                             p->head_dim, div_up(p->head_dim, OCL_VALUE_COORDS), limit);
        size_t chunks = merge_bytes / ((size_t)qc * p->head_dim * sizeof(float));
        chunks = chunks < 1 ? 1 : chunks > CHUNKS_MAX ? CHUNKS_MAX : chunks;
        const size_t cp = pow2_at_least((uint32_t)chunks);
        const size_t total = d->local_mem < LOCAL_BYTES_MAX ? (size_t)d->local_mem : LOCAL_BYTES_MAX;
        const size_t room = total > d->kernel_local[k] ? total - (size_t)d->kernel_local[k] : 0;
        const size_t red = zmax(zmax((size_t)qc * wg, wg * OCL_VALUE_COORDS), qc * cp);
        /* the chunk's sums, then the rotation's scratch (and outlier-split
         * V's outlier sums after it) or the merge's */
        const size_t vloc = (size_t)qc * p->head_dim +
                            zmax(zmax((size_t)qc * p->head_dim * (v_split ? 2u : 1u), wg), 2u * qc * cp);
        const size_t fixed = ((size_t)qc * p->q_stride + red) * sizeof(float);
        /* the work-items of a V row, as the kernel counts them */
        size_t per_row = 1;
        while (per_row * OCL_VALUE_COORDS < p->head_dim && per_row < wg)
            per_row <<= 1;
        for (uint32_t t = (uint32_t)wg; t >= 1u && fixed < room; t--) {
            struct tile_geom g = geom_for(a->k.block_tokens, t);
            uint32_t n = g.segs * g.seg_rows;
            uint32_t k_slot = slot_words(g.seg_rows, a->k.row_bytes, p->k_padded);
            uint32_t v_slot = slot_words(g.seg_rows, a->v.row_bytes, p->v_padded);
            size_t tile = zmax(zmax((size_t)g.segs * k_slot + 2u, (size_t)g.segs * v_slot + 2u), vloc);
            size_t omask = v_split ? per_row * div_up(n, 32) : 1u;
            size_t need = fixed + (tile + omask) * sizeof(cl_uint) +
                          (size_t)n * (qc + 2u) * sizeof(float);
            if (need <= room && (size_t)n * a->k.row_bytes <= TILE_BYTES_MAX &&
                (size_t)n * a->v.row_bytes <= TILE_BYTES_MAX) {
                p->variant = variant;
                p->qc = qc;
                p->wg = (uint32_t)wg;
                p->geom = g;
                p->tile_rows = n;
                p->k_slot = k_slot;
                p->v_slot = v_slot;
                p->tile_words = tile;
                p->red_floats = red;
                p->omask_words = omask;
                p->chunks_cap = (uint32_t)chunks;
                return TKV_OK;
            }
        }
        if (qc == OCL_QUERY_ROWS_MIN)
            break;
    }
    return OCL_ERROR(TKV_EUNSUPPORTED,
                     "attention: rows of %u (K) and %u (V) bytes at head_dim %u do not fit the "
                     "device's %llu bytes of local memory",
                     a->k.row_bytes, a->v.row_bytes, p->head_dim,
                     (unsigned long long)d->local_mem);
}

/* Units and chunks: tiles per chunk such that the call's work-groups fill
 * the device's compute units GROUPS_PER_CU times over, at most chunks_cap
 * chunks per (unit, kv head). */
static void plan_chunks(const struct ocl_device *d, const struct tkv_attention_args *a,
                        struct attn_plan *p)
{
    uint64_t work = 0;
    uint32_t max_tiles = 1;
    p->n_units = 0;
    for (uint32_t s = 0; s < a->n_seqs; s++) {
        const struct tkv_attn_seq *seq = seq_at(a, s);
        uint32_t units = div_up(seq->n_q * p->ratio, p->qc);
        uint32_t tiles = seq_tiles(seq, a->window, &p->geom);
        p->n_units += units;
        work += (uint64_t)units * tiles;
        max_tiles = tiles > max_tiles ? tiles : max_tiles;
    }
    work *= a->n_kv_heads;
    uint64_t target = (uint64_t)(d->tune_groups_per_cu ? d->tune_groups_per_cu : GROUPS_PER_CU) *
                      (d->compute_units ? d->compute_units : 1u);
    uint64_t tpc = (work + target - 1u) / target;
    uint32_t min_tiles = d->tune_min_tiles ? d->tune_min_tiles : 1u;
    if (tpc < min_tiles)
        tpc = min_tiles;
    if (tpc < div_up(max_tiles, p->chunks_cap))
        tpc = div_up(max_tiles, p->chunks_cap);
    if (tpc > max_tiles)
        tpc = max_tiles;
    p->tiles_per_chunk = (uint32_t)tpc;
    p->chunk_pitch = div_up(max_tiles, p->tiles_per_chunk);
}

/* ---- the tensor-core kernels (kernels/tensor.cl) -------------------------------- */

/* kernels/tensor.h has their shape: a tile is TC_TILE rows, a chunk TC_W
 * warps' tiles_per_warp tiles, TC_GROUPS_PER_CU work-groups a compute
 * unit. */

/* The calls they serve: turbo3 K and V at head_dim 128 (one group of 128,
 * 50-byte rows) or turbo3o K and V (62-byte rows: the turbo3 row, then 4
 * outliers), in pool blocks of a multiple of 16 rows at 16-byte-aligned
 * places (a tile is 16 rows, contiguous, copied by 16-byte cp.async). */
static int tc_eligible(const struct tkv_attention_args *a)
{
    const struct tkv_pool *k = &a->k, *v = &a->v;
    const int out = k->fmt.type == TKV_TYPE_TURBO3_OUT;
    const uint32_t rb = out ? TC_RB_OUT : TC_RB;
    return (k->fmt.type == TKV_TYPE_TURBO3 || out) && v->fmt.type == k->fmt.type &&
           k->fmt.head_dim == TC_HD && k->row_bytes == rb && v->row_bytes == rb &&
           k->block_tokens % TC_TILE == 0 && v->block_tokens == k->block_tokens &&
           k->head_stride % 16u == 0 && k->block_stride % 16u == 0 &&
           v->head_stride % 16u == 0 && v->block_stride % 16u == 0;
}

/* Rows r0 .. hi - 1 of the unit at row u0 of a sequence: from the first row
 * its first token sees (rounded down to a tile) to its last token's
 * position (tensor.cl: tc_unit_of). */
static uint32_t tc_span(const struct tkv_attn_seq *seq, uint32_t window, uint32_t ratio,
                        uint32_t u0, uint32_t nu)
{
    const uint32_t first = seq->n_ctx - seq->n_q + u0 / ratio;
    const uint32_t last = seq->n_ctx - seq->n_q + (u0 + nu - 1u) / ratio;
    const uint32_t lo = window && first + 1u > window ? first + 1u - window : 0u;
    return last + 1u - (lo & ~(TC_TILE - 1u));
}

/* The chunks of tpw warp tiles (TC_W x tpw tiles) the call's units take
 * (tpw 1: their quads of TC_W tiles); where units / max_q, how many units
 * and the most quads one takes. */
static uint64_t tc_chunks(const struct tkv_attention_args *a, const struct attn_plan *p,
                          uint64_t tpw, uint32_t *units, uint32_t *max_q)
{
    uint64_t chunks = 0;
    for (uint32_t s = 0; s < a->n_seqs; s++) {
        const struct tkv_attn_seq *seq = seq_at(a, s);
        for (uint32_t u0 = 0; u0 < seq->n_q * p->ratio; u0 += p->qc) {
            const uint32_t nu = seq->n_q * p->ratio - u0 < p->qc ? seq->n_q * p->ratio - u0 : p->qc;
            const uint32_t q = div_up(tc_span(seq, a->window, p->ratio, u0, nu), TC_W * TC_TILE);
            chunks += (q + tpw - 1u) / tpw;
            if (units)
                ++*units;
            if (max_q && q > *max_q)
                *max_q = q;
        }
    }
    return chunks;
}

/* 4, 8 or 16 query rows a unit (turbo3o: TC_OUT_ROWS; 4: tc_decode_4, the
 * rows' hi and lo halves side by side); tiles per warp such that the call's
 * work-groups fill the compute units TC_GROUPS_PER_CU times at most (one
 * wave: the kernel's registers are capped for that many, device.c), with
 * at most TC_CHUNKS_MAX chunks a unit. Units' chunk counts round up, so
 * the work-groups of quads / target tiles a warp may exceed the wave (8
 * sequences at 128K: 448 groups for 396 places, the last 52 a second
 * wave); the fewest tiles a warp that keeps within it are taken then. */
static void tc_plan(const struct ocl_device *d, const struct tkv_attention_args *a,
                    struct attn_plan *p)
{
    const int out = a->k.fmt.type == TKV_TYPE_TURBO3_OUT;
    const uint32_t rows = a->max_n_q * p->ratio;
    p->qc = out ? TC_OUT_ROWS : rows <= TC_HL_ROWS ? TC_HL_ROWS : rows <= 8u ? 8u : 16u;
    p->variant = out                     ? OCL_K_TC_OUT - OCL_K_TC
                 : p->qc == TC_HL_ROWS ? OCL_K_TC_4 - OCL_K_TC
                 : p->qc == 8u         ? 0u
                                       : 1u;
    uint32_t units = 0, max_quads = 1;
    const uint64_t quads = tc_chunks(a, p, 1u, &units, &max_quads) * a->n_kv_heads;
    p->n_units = units;
    const uint64_t target = (uint64_t)(d->tune_groups_per_cu ? d->tune_groups_per_cu
                                                             : TC_GROUPS_PER_CU) *
                            (d->compute_units ? d->compute_units : 1u);
    uint64_t tpw = (quads + target - 1u) / target;
    if (tpw < div_up(max_quads, TC_CHUNKS_MAX))
        tpw = div_up(max_quads, TC_CHUNKS_MAX);
    if (tpw > max_quads)
        tpw = max_quads;
    if ((uint64_t)units * a->n_kv_heads <= target) {
        /* the smallest tpw whose groups fit the wave (their count falls as
         * tpw grows, to units x heads at max_quads) */
        uint64_t lo = tpw, hi = max_quads;
        while (lo < hi) {
            const uint64_t mid = (lo + hi) / 2u;
            if (tc_chunks(a, p, mid, NULL, NULL) * a->n_kv_heads <= target)
                hi = mid;
            else
                lo = mid + 1u;
        }
        tpw = lo;
    }
    /* TURBO_OCL_MIN_TILES: tiles a warp at least (tests: several tiles a
     * warp at small contexts) */
    if (tpw < d->tune_min_tiles)
        tpw = d->tune_min_tiles < max_quads ? d->tune_min_tiles : max_quads;
    p->tiles_per_warp = (uint32_t)tpw;
    p->chunk_pitch = div_up(max_quads, p->tiles_per_warp);
}

/* ---- the call ------------------------------------------------------------------ */

struct attn_layout {
    cl_uint seq_at, blocks_at, units_at, q_at; /* words in the upload */
    size_t up_words, down_words, n_rows;
};

/* The upload: sequences, the block table, the units, the queries. */
static void fill_upload(const struct tkv_attention_args *a, const struct attn_plan *p,
                        const struct attn_layout *lay, cl_uint *w)
{
    cl_uint *unit = w + lay->units_at;
    for (uint32_t s = 0; s < a->n_seqs; s++) {
        const struct tkv_attn_seq *seq = seq_at(a, s);
        cl_uint *e = w + lay->seq_at + SEQ_WORDS * s;
        e[0] = seq->n_ctx;
        e[1] = seq->n_q;
        e[2] = seq->q_first;
        e[3] = seq->block_first;
        for (uint32_t u0 = 0; u0 < seq->n_q * p->ratio; u0 += p->qc) {
            *unit++ = s;
            *unit++ = u0;
        }
    }
    memcpy(w + lay->blocks_at, a->blocks, (size_t)a->n_blocks * sizeof(cl_uint));
    if (a->q) /* else q is in the host's device memory (host.c) */
        memcpy(w + lay->q_at, a->q, lay->n_rows * p->head_dim * sizeof(float));
}

/* ---- device tensors (ABI 2.2): q from and out into the host's buffers ---------- */

static const struct tkv_device_tensor *q_dev_of(const struct tkv_attention_args *a)
{
    return TKV_ARGS_HAS(a, q_dev) ? a->q_dev : NULL;
}

static const struct tkv_device_tensor *out_dev_of(const struct tkv_attention_args *a)
{
    return TKV_ARGS_HAS(a, out_dev) ? a->out_dev : NULL;
}

/* f32 queries in the host's buffer are read where they lie (the kernel's
 * qbuf; q_at their float there; the core checked that offsets are whole
 * elements): nothing copied into the upload. f16 / bf16 ones, and offsets
 * the kernel's 32-bit index cannot reach, are widened or copied into it. */
static int q_in_place(const struct tkv_device_tensor *q, uint64_t n)
{
    return q && q->elem == TKV_ELEM_F32 && q->offset / 4u + n <= UINT32_MAX;
}

/* Likewise f32 output rows in the host's buffer are written there by the
 * kernel (orows, o_at their float offset): no copy out of the download
 * scratch, which keeps the skip counts and lse. */
static int out_in_place(const struct tkv_device_tensor *out)
{
    return out && out->elem == TKV_ELEM_F32;
}

/* The upload (q left out when it is in device memory, then read in place,
 * or copied or widened into its place on the device). With out in device memory the
 * call is not waited for, so the upload goes through a staging slot that
 * outlives the call (host.c); otherwise through the pinned buffer. */
static int upload(struct ocl_device *d, const struct tkv_attention_args *a,
                  const struct attn_plan *p, const struct attn_layout *lay, cl_event *ev_up)
{
    static const char op[] = "attention";
    const struct tkv_device_tensor *q_dev = q_dev_of(a);
    const size_t bytes = (q_dev ? (size_t)lay->q_at : lay->up_words) * 4u;
    int rc = TKV_OK;
    if (out_dev_of(a) && q_dev) {
        /* the description alone (q is the host's buffer): built aside and
         * written only where it differs from the one scratch.upload holds
         * (in queue order) */
        if (bytes > d->up_cap) {
            uint32_t *x = realloc(d->up_last, bytes), *y = x ? realloc(d->up_next, bytes) : NULL;
            if (x)
                d->up_last = x;
            if (y)
                d->up_next = y;
            if (!x || !y) {
                d->up_last_valid = 0;
                return OCL_ERROR(TKV_ENOMEM, "%s: no host memory for a %zu-byte description", op,
                                 bytes);
            }
            d->up_cap = bytes;
        }
        fill_upload(a, p, lay, d->up_next);
        if (!d->up_last_valid || d->up_last_bytes != bytes ||
            memcmp(d->up_last, d->up_next, bytes)) {
            void *host;
            uint32_t slot;
            d->up_last_valid = 0;
            if ((rc = ocl_stage_take(d, bytes, op, &host, &slot)) != TKV_OK)
                return rc;
            memcpy(host, d->up_next, bytes);
            if ((rc = ocl_stage_write(d, slot, d->scratch.upload.mem, bytes, op)) != TKV_OK)
                return rc;
            uint32_t *t = d->up_last;
            d->up_last = d->up_next;
            d->up_next = t;
            d->up_last_bytes = bytes;
            d->up_last_valid = 1;
        }
    } else if (out_dev_of(a)) {
        void *host;
        uint32_t slot;
        d->up_last_valid = 0;
        if ((rc = ocl_stage_take(d, bytes, op, &host, &slot)) != TKV_OK)
            return rc;
        fill_upload(a, p, lay, host);
        rc = ocl_stage_write(d, slot, d->scratch.upload.mem, bytes, op);
    } else {
        d->up_last_valid = 0;
        fill_upload(a, p, lay, d->up_pinned.host);
        cl_int err = clEnqueueWriteBuffer(d->queue, d->scratch.upload.mem, CL_FALSE, 0, bytes,
                                          d->up_pinned.host, 0, NULL, ev_up);
        if (err != CL_SUCCESS)
            return ocl_fail(err, op, "clEnqueueWriteBuffer");
    }
    const uint64_t n_q = (uint64_t)lay->n_rows * p->head_dim;
    if (rc == TKV_OK && q_dev && !q_in_place(q_dev, n_q))
        rc = ocl_tensor_in(d, q_dev, n_q, d->scratch.upload.mem, lay->q_at, op);
    return rc;
}

/* Where the kernels read the queries (q_mem from float q_at) and write
 * the output rows (o_mem from float o_at). */
struct attn_io {
    cl_mem q_mem, o_mem;
    cl_uint q_at;
    cl_ulong o_at;
};

static int io_of(struct ocl_device *d, const struct tkv_attention_args *a,
                 const struct attn_plan *p, const struct attn_layout *lay, struct attn_io *io)
{
    static const char op[] = "attention";
    io->q_mem = d->scratch.upload.mem;
    io->o_mem = d->scratch.download.mem;
    io->q_at = lay->q_at;
    io->o_at = 0;
    const struct tkv_device_tensor *q_dev = q_dev_of(a);
    const uint64_t n_q = (uint64_t)lay->n_rows * p->head_dim;
    if (q_in_place(q_dev, n_q)) {
        int rc = ocl_tensor_mem(d, q_dev, n_q, op, "q", &io->q_mem);
        if (rc != TKV_OK)
            return rc;
        io->q_at = (cl_uint)(q_dev->offset / 4u);
    }
    const struct tkv_device_tensor *out_dev = out_dev_of(a);
    if (out_in_place(out_dev)) {
        int rc = ocl_tensor_mem(d, out_dev, n_q, op, "out", &io->o_mem);
        if (rc != TKV_OK)
            return rc;
        io->o_at = out_dev->offset / 4u;
    }
    return TKV_OK;
}

/* The host's buffers may be new objects at released ones' addresses:
 * never trust the remembered arguments that are theirs (host.c's widen()). */
static void forget_io(struct ocl_device *d, enum ocl_kernel k, const struct ocl_karg *args,
                      size_t n, const struct attn_io *io)
{
    for (size_t i = 0; i < n && i < OCL_ARGS_MAX; i++)
        if ((args[i].value == &io->q_mem && io->q_mem != d->scratch.upload.mem) ||
            (args[i].value == &io->o_mem && io->o_mem != d->scratch.download.mem))
            d->args[k][i].set = 0;
}

/* The scores' constants (kernels/attention.cl): base 2 for exp2, x log2(e),
 * with a softcap c: c log2(e) tanh(scale q.k / c) */
static cl_float score_pre(const struct tkv_attention_args *a)
{
    return a->softcap > 0.0f ? (cl_float)((double)a->scale / a->softcap)
                             : (cl_float)(a->scale * M_LOG2E);
}

static cl_float score_post(const struct tkv_attention_args *a)
{
    return a->softcap > 0.0f ? (cl_float)(a->softcap * M_LOG2E) : 0.0f;
}

/* tc_decode_QC or tc_decode_o4: one kernel (its event in ev[0] and ev[1]
 * where ev). */
static int tc_launch(struct ocl_device *d, const struct tkv_attention_args *a,
                     const struct attn_plan *p, const struct attn_layout *lay, cl_event *ev)
{
    static const char op[] = "attention";
    const enum ocl_kernel k = OCL_K_TC + p->variant;
    struct attn_io io;
    int rc = io_of(d, a, p, lay, &io);
    if (rc != TKV_OK)
        return rc;
    cl_mem k_mem = ocl_buffer_of(a->k.buf)->mem, v_mem = ocl_buffer_of(a->v.buf)->mem;
    cl_mem meta = d->scratch.upload.mem, part = d->scratch.part.mem;
    cl_mem down = d->scratch.download.mem, counters = d->scratch.counters.mem;
    cl_uint seq_at_ = lay->seq_at, blocks_at = lay->blocks_at, units_at = lay->units_at;
    cl_uint n_q_heads = a->n_q_heads, ratio = p->ratio, window = a->window;
    cl_uint bt = a->k.block_tokens, tpw = p->tiles_per_warp, pitch = p->chunk_pitch;
    cl_ulong k_block_stride = a->k.block_stride, k_head_stride = a->k.head_stride;
    cl_ulong v_block_stride = a->v.block_stride, v_head_stride = a->v.head_stride;
    cl_uint k_rotation = a->k.fmt.rotation, v_rotation = a->v.fmt.rotation;
    cl_float pre = score_pre(a), post = score_post(a), threshold = a->sparse_v_threshold;
    cl_uint skip_at = (cl_uint)(lay->n_rows * p->head_dim);
    cl_uint lse_at = a->lse ? (cl_uint)(lay->n_rows * (p->head_dim + 1u)) : 0u;
    /* no append: new_n 0 and any buffer for the sources (never read) */
    const struct fused_append none = { .ks = d->tables, .vs = d->tables };
    const struct fused_append *fa = p->append ? p->append : &none;
    const struct ocl_karg args[] = {
        OCL_ARG(k_mem), OCL_ARG(v_mem), OCL_ARG(meta), OCL_ARG(io.q_mem), OCL_ARG(seq_at_),
        OCL_ARG(blocks_at), OCL_ARG(units_at), OCL_ARG(io.q_at), OCL_ARG(n_q_heads),
        OCL_ARG(ratio), OCL_ARG(window), OCL_ARG(bt), OCL_ARG(k_block_stride),
        OCL_ARG(k_head_stride), OCL_ARG(v_block_stride), OCL_ARG(v_head_stride),
        OCL_ARG(k_rotation), OCL_ARG(d->tables), OCL_ARG(pre), OCL_ARG(post), OCL_ARG(threshold),
        OCL_ARG(tpw), OCL_ARG(part), OCL_ARG(pitch), OCL_ARG(v_rotation), OCL_ARG(counters),
        OCL_ARG(down), OCL_ARG(io.o_mem), OCL_ARG(io.o_at), OCL_ARG(skip_at), OCL_ARG(lse_at),
        OCL_ARG(fa->ks), OCL_ARG(fa->ks_at), OCL_ARG(fa->vs), OCL_ARG(fa->vs_at),
        OCL_ARG(fa->first), OCL_ARG(fa->n), OCL_ARG(fa->fmt),
    };
    const size_t n = sizeof args / sizeof args[0];
    forget_io(d, k, args, n, &io);
    /* the host's buffers may be new objects at released ones' addresses */
    for (size_t i = 0; i < n; i++)
        if (p->append && (args[i].value == &fa->ks || args[i].value == &fa->vs))
            d->args[k][i].set = 0;
    const size_t groups[3] = { a->n_kv_heads, p->chunk_pitch, p->n_units };
    if ((rc = ocl_args(d, k, op, n, args)) != TKV_OK ||
        (rc = ocl_launch(d, k, op, 3, groups, 128, ev ? &ev[0] : NULL)) != TKV_OK)
        return rc;
    if (ev) {
        clRetainEvent(ev[0]);
        ev[1] = ev[0];
    }
    return TKV_OK;
}

/* The call's kernels; ev (or NULL): the events of the first and the last. */
static int launch(struct ocl_device *d, const struct tkv_attention_args *a,
                  const struct attn_plan *p, const struct attn_layout *lay, cl_event *ev)
{
    static const char op[] = "attention";
    if (p->decode == OCL_K_TC)
        return tc_launch(d, a, p, lay, ev);
    const enum ocl_kernel k = p->decode + p->variant;
    cl_mem k_mem = ocl_buffer_of(a->k.buf)->mem, v_mem = ocl_buffer_of(a->v.buf)->mem;
    cl_mem meta = d->scratch.upload.mem;
    cl_uint seq_at_ = lay->seq_at, blocks_at = lay->blocks_at, units_at = lay->units_at;
    struct attn_io io;
    int rc = io_of(d, a, p, lay, &io);
    if (rc != TKV_OK)
        return rc;
    cl_uint n_q_heads = a->n_q_heads, ratio = p->ratio, window = a->window;
    cl_uint bt = p->geom.bt, seg_rows = p->geom.seg_rows, segs = p->geom.segs, tpb = p->geom.tpb;
    cl_ulong k_block_stride = a->k.block_stride, k_head_stride = a->k.head_stride;
    cl_ulong v_block_stride = a->v.block_stride, v_head_stride = a->v.head_stride;
    cl_uint k_rb = a->k.row_bytes, v_rb = a->v.row_bytes, k_slot = p->k_slot, v_slot = p->v_slot;
    cl_int k_padded = p->k_padded, v_padded = p->v_padded;
    cl_uint k_type = a->k.fmt.type, v_type = a->v.fmt.type;
    cl_uint k_rotation = a->k.fmt.rotation, v_rotation = a->v.fmt.rotation;
    cl_uint head_dim = p->head_dim, tpc = p->tiles_per_chunk, chunk_pitch = p->chunk_pitch;
    cl_float pre = score_pre(a), post = score_post(a);
    cl_float threshold = a->sparse_v_threshold;
    cl_uint skip_at = (cl_uint)(lay->n_rows * p->head_dim);
    cl_uint lse_at = a->lse ? (cl_uint)(lay->n_rows * (p->head_dim + 1u)) : 0u;
    const size_t rows = p->tile_rows;
    const struct ocl_karg args[] = {
        OCL_ARG(k_mem), OCL_ARG(v_mem), OCL_ARG(meta), OCL_ARG(io.q_mem), OCL_ARG(seq_at_), OCL_ARG(blocks_at),
        OCL_ARG(units_at), OCL_ARG(io.q_at), OCL_ARG(n_q_heads), OCL_ARG(ratio), OCL_ARG(window),
        OCL_ARG(bt), OCL_ARG(seg_rows), OCL_ARG(segs), OCL_ARG(tpb), OCL_ARG(k_block_stride),
        OCL_ARG(k_head_stride), OCL_ARG(k_rb), OCL_ARG(k_padded), OCL_ARG(k_slot),
        OCL_ARG(k_type), OCL_ARG(k_rotation), OCL_ARG(v_block_stride), OCL_ARG(v_head_stride),
        OCL_ARG(v_rb), OCL_ARG(v_padded), OCL_ARG(v_slot), OCL_ARG(v_type), OCL_ARG(v_rotation),
        OCL_ARG(head_dim), OCL_ARG(d->tables), OCL_ARG(pre), OCL_ARG(post), OCL_ARG(threshold),
        OCL_ARG(tpc), OCL_ARG(d->scratch.part.mem), OCL_ARG(chunk_pitch),
        OCL_ARG(d->scratch.counters.mem), OCL_ARG(d->scratch.download.mem), OCL_ARG(io.o_mem),
        OCL_ARG(io.o_at), OCL_ARG(skip_at), OCL_ARG(lse_at),
        OCL_LOCAL((size_t)p->qc * p->q_stride * sizeof(float)),
        OCL_LOCAL(p->tile_words * sizeof(cl_uint)),
        OCL_LOCAL(rows * p->qc * sizeof(float)),
        OCL_LOCAL(p->red_floats * sizeof(float)),
        OCL_LOCAL(rows * sizeof(cl_uint)),
        OCL_LOCAL(rows * sizeof(cl_uint)),
        OCL_LOCAL(p->omask_words * sizeof(cl_uint)),
    };
    /* kv heads first: the work-groups that run side by side read the heads
     * of the same pool blocks */
    const size_t groups[3] = { a->n_kv_heads, p->chunk_pitch, p->n_units };
    forget_io(d, k, args, sizeof args / sizeof args[0], &io);
    rc = ocl_args(d, k, op, sizeof args / sizeof args[0], args);
    if (rc != TKV_OK || (rc = ocl_launch(d, k, op, 3, groups, p->wg, ev ? &ev[0] : NULL)) != TKV_OK)
        return rc;
    if (ev) { /* one kernel: first and last */
        clRetainEvent(ev[0]);
        ev[1] = ev[0];
    }
    return TKV_OK;
}

/* The time between the start of first and the end of last, in ns. */
static uint64_t span_ns(cl_event first, cl_event last)
{
    cl_ulong t0 = 0, t1 = 0;
    if (clGetEventProfilingInfo(first, CL_PROFILING_COMMAND_START, sizeof t0, &t0, NULL) !=
            CL_SUCCESS ||
        clGetEventProfilingInfo(last, CL_PROFILING_COMMAND_END, sizeof t1, &t1, NULL) !=
            CL_SUCCESS)
        return 0;
    return t1 > t0 ? (uint64_t)(t1 - t0) : 0;
}

static uint64_t median_ns(uint64_t *v, uint32_t n)
{
    for (uint32_t i = 1; i < n; i++)
        for (uint32_t j = i; j > 0 && v[j - 1] > v[j]; j--) {
            uint64_t t = v[j];
            v[j] = v[j - 1];
            v[j - 1] = t;
        }
    return v[n / 2];
}

static int run(struct ocl_device *d, const struct tkv_attention_args *a, struct attn_plan *p,
               uint64_t *skipped, uint64_t *device_ns)
{
    static const char op[] = "attention";
    int rc = TKV_OK;
    const int tc = d->tensor && tc_eligible(a) && ocl_tensor_kernels(d) == OCL_K_TC;
    if (tc) {
        p->decode = OCL_K_TC;
        tc_plan(d, a, p);
    } else {
        p->decode = ocl_decode_kernels(d, a->k.fmt.type, a->v.fmt.type, p->head_dim);
        if ((rc = plan_shape(d, a, p)) != TKV_OK)
            return rc;
        plan_chunks(d, a, p);
    }

    struct attn_layout lay;
    lay.n_rows = (size_t)a->n_q_total * a->n_q_heads;
    const size_t seq_words = (size_t)a->n_seqs * SEQ_WORDS;
    lay.up_words = seq_words + a->n_blocks + 2u * (size_t)p->n_units + lay.n_rows * p->head_dim;
    lay.down_words = lay.n_rows * (p->head_dim + 1u + (a->lse ? 1u : 0u));
    /* the kernels take word offsets as 32-bit numbers */
    if (lay.up_words > UINT32_MAX || lay.down_words > UINT32_MAX)
        return OCL_ERROR(TKV_EUNSUPPORTED,
                         "attention: %zu query rows of head_dim %u with %u blocks exceed the "
                         "plugin's 2^32-word transfers",
                         lay.n_rows, p->head_dim, a->n_blocks);
    lay.seq_at = 0;
    lay.blocks_at = (cl_uint)seq_words;
    lay.units_at = lay.blocks_at + a->n_blocks;
    lay.q_at = lay.units_at + 2u * p->n_units;
    const size_t pairs = (size_t)p->n_units * a->n_kv_heads;
    const size_t part_bytes =
        /* (a record holds the kernel's 8 or 16 rows) */
        tc ? pairs * p->chunk_pitch * TC_REC(p->qc > 8u ? 16u : 8u) * sizeof(float)
        : p->chunk_pitch > 1u ? pairs * p->chunk_pitch * p->qc * (p->head_dim + 4u) * sizeof(float)
                              : sizeof(float);
    if (lay.up_words * 4u > d->scratch.upload.size)
        d->up_last_valid = 0; /* a new upload buffer holds no description */
    if ((rc = ocl_scratch_reserve(d, &d->scratch.upload, lay.up_words * 4u, op, "upload")) !=
            TKV_OK ||
        (rc = ocl_scratch_reserve(d, &d->scratch.download, lay.down_words * 4u, op,
                                  "download")) != TKV_OK ||
        /* (a call that is not waited for needs no pinned memory) */
        (!out_dev_of(a) &&
         ((rc = ocl_pinned_reserve(d, &d->up_pinned, lay.up_words * 4u, op)) != TKV_OK ||
          (rc = ocl_pinned_reserve(d, &d->down_pinned, lay.down_words * 4u, op)) != TKV_OK)) ||
        (rc = ocl_scratch_reserve(d, &d->scratch.part, part_bytes, op, "partial")) != TKV_OK ||
        (rc = ocl_scratch_reserve_zeroed(d, &d->scratch.counters, pairs * sizeof(cl_uint), op,
                                         "counter")) != TKV_OK)
        return rc;

    cl_event ev_up = NULL, ev_down = NULL, ev_kernel[2] = { NULL, NULL };
    const int timed = device_ns != NULL, spin = d->tune_spin != 0;
    cl_int err;
    if ((rc = upload(d, a, p, &lay, timed ? &ev_up : NULL)) != TKV_OK)
        goto out;
    if ((rc = launch(d, a, p, &lay, timed && d->tune_kernel_ns ? ev_kernel : NULL)) != TKV_OK)
        goto out;
    if (out_dev_of(a)) {
        /* out into the host's buffer, queued (f32 written there by the
         * kernel, f16 / bf16 narrowed from the download scratch); skip
         * counts and lse stay on the device (the core asks for neither) */
        if (!out_in_place(out_dev_of(a)))
            rc = ocl_tensor_out(d, d->scratch.download.mem, 0, out_dev_of(a),
                                (uint64_t)lay.n_rows * p->head_dim, op);
        if (rc == TKV_OK && (err = clFlush(d->queue)) != CL_SUCCESS)
            rc = ocl_fail(err, op, "clFlush");
        *skipped = 0;
        goto out;
    }
    /* measurement (TURBO_OCL_REPEAT=n with TURBO_OCL_KERNEL_NS): the kernel
     * n more times back to back and the median of their times reported, so
     * that the GPU stays busy and its clock up while it is timed (the H200
     * drops from 1980 to 345 MHz a few seconds into a light load) */
    uint64_t repeat_ns[OCL_REPEAT_MAX];
    cl_event repeat_ev[OCL_REPEAT_MAX][2];
    uint32_t repeat = 0;
    for (const uint32_t want = timed && ev_kernel[0] ? d->tune_repeat : 0u; repeat < want; repeat++)
        if ((rc = launch(d, a, p, &lay, repeat_ev[repeat])) != TKV_OK)
            break;
    if (repeat)
        clWaitForEvents(1, &repeat_ev[repeat - 1][1]);
    for (uint32_t i = 0; i < repeat; i++) {
        repeat_ns[i] = span_ns(repeat_ev[i][0], repeat_ev[i][1]);
        clReleaseEvent(repeat_ev[i][0]);
        clReleaseEvent(repeat_ev[i][1]);
    }
    if (repeat && tc) /* the plan and its time, in the debug log (measurements) */
        ocl_svc->log(TKV_LOG_DEBUG,
                     "opencl: tensor-core attention, %u query rows a unit, %u units, %u tiles a "
                     "warp, %u chunks: %.1f us (median of %u)",
                     p->qc, p->n_units, p->tiles_per_warp, p->chunk_pitch,
                     median_ns(repeat_ns, repeat) * 1e-3, repeat);
    if (rc != TKV_OK)
        goto out;
    err = clEnqueueReadBuffer(d->queue, d->scratch.download.mem, spin ? CL_FALSE : CL_TRUE, 0,
                              lay.down_words * 4u, d->down_pinned.host, 0, NULL,
                              timed || spin ? &ev_down : NULL);
    if (err != CL_SUCCESS) {
        rc = ocl_fail(err, op, "clEnqueueReadBuffer");
        goto out;
    }
    if (spin) {
        /* poll the read's status instead of sleeping in the driver */
        cl_int status = CL_QUEUED;
        clFlush(d->queue);
        do {
            err = clGetEventInfo(ev_down, CL_EVENT_COMMAND_EXECUTION_STATUS, sizeof status,
                                 &status, NULL);
        } while (err == CL_SUCCESS && status > CL_COMPLETE);
        if (err != CL_SUCCESS || status < 0) {
            rc = ocl_fail(err != CL_SUCCESS ? err : status, op, "clEnqueueReadBuffer (status)");
            goto out;
        }
    }
    const float *down = d->down_pinned.host;
    memcpy(a->out, down, lay.n_rows * p->head_dim * sizeof(float));
    const cl_uint *counts = (const cl_uint *)(down + lay.n_rows * p->head_dim);
    if (a->lse)
        memcpy(a->lse, counts + lay.n_rows, lay.n_rows * sizeof(float));
    *skipped = 0;
    for (size_t r = 0; r < lay.n_rows; r++)
        *skipped += counts[r];
    if (timed)
        *device_ns = repeat ? median_ns(repeat_ns, repeat)
                     : ev_kernel[0] ? span_ns(ev_kernel[0], ev_kernel[1])
                                 : span_ns(ev_up, ev_down);
out:
    if (ev_up)
        clReleaseEvent(ev_up);
    if (ev_down)
        clReleaseEvent(ev_down);
    for (int i = 0; i < 2; i++)
        if (ev_kernel[i])
            clReleaseEvent(ev_kernel[i]);
    return rc;
}

/* An attention call (with the rows of append on the tensor-core
 * kernels, or NULL). */
static int attention_call(struct ocl_device *d, const struct tkv_attention_args *a,
                          const struct fused_append *append)
{
    struct attn_plan p = {
        .append = append,
        .head_dim = a->k.fmt.head_dim,
        .ratio = a->n_q_heads / a->n_kv_heads,
        /* QJL keys: R q and S R q; outlier-split keys: R q and q */
        .q_stride = tkv_type_is_qjl(a->k.fmt.type) || tkv_type_is_outlier(a->k.fmt.type)
                        ? 2u * a->k.fmt.head_dim
                        : a->k.fmt.head_dim,
        .k_padded = pool_padded(&a->k),
        .v_padded = pool_padded(&a->v),
    };
    uint64_t skipped = 0, total = 0, ns = 0;
    uint64_t *device_ns = TKV_ARGS_HAS(a, device_ns) ? a->device_ns : NULL;
    int rc = run(d, a, &p, &skipped, device_ns ? &ns : NULL);
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
    if (device_ns)
        *device_ns = ns;
    return TKV_OK;
}

int ocl_attention(void *dev, const struct tkv_attention_args *a)
{
    return attention_call(dev, a, NULL);
}

/* ABI 2.7: a decode step's append and attention. On the tensor-core
 * kernels, with the new rows f32 in the host's buffers, one launch: the
 * work-groups whose chunks hold the new tokens quantize their rows before
 * they read them (tensor.cl, step 0). Anything else: the pair, then the
 * attention. */
int ocl_append_attention(void *dev, const struct tkv_append_args *k,
                         const struct tkv_append_args *v, const struct tkv_attention_args *a)
{
    static const char op[] = "append_attention";
    struct ocl_device *d = dev;
    /* (tensor.cl's step 0 quantizes K and V side by side: one format) */
    const int one_format = k->pool.fmt.rotation == v->pool.fmt.rotation &&
                           k->pool.fmt.scale_mode == v->pool.fmt.scale_mode;
    if (!(d->tensor && tc_eligible(a) && one_format && ocl_pair_in_one_launch(k, v) &&
          ocl_tensor_kernels(d) == OCL_K_TC)) {
        int rc = ocl_quantize_append_pair(dev, k, v);
        return rc != TKV_OK ? rc : attention_call(d, a, NULL);
    }
    const uint64_t n = (uint64_t)k->n_tokens * k->n_heads * k->pool.fmt.head_dim;
    struct fused_append fa = {
        .first = k->first_pos,
        .n = k->n_tokens,
        .fmt = { { k->pool.fmt.type, k->pool.fmt.scale_mode, v->pool.fmt.type,
                   v->pool.fmt.scale_mode } },
    };
    int rc;
    if ((rc = ocl_tensor_f32(d, k->src_dev, n, op, &fa.ks, &fa.ks_at)) != TKV_OK ||
        (rc = ocl_tensor_f32(d, v->src_dev, n, op, &fa.vs, &fa.vs_at)) != TKV_OK ||
        (rc = attention_call(d, a, &fa)) != TKV_OK)
        return rc;
    d->stats.rows_quantized += 2u * (uint64_t)k->n_tokens * k->n_heads;
    return TKV_OK;
}
