/* SPDX-License-Identifier: MIT */
/*
 * Decode attention on an ISA level, split over the device's threads.
 *
 * A work unit is one (sequence, kv head) with up to CPU_UNIT_QUERIES of its
 * queries (its n_q tokens x the GQA ratio heads, token-major): they share
 * every K and V row they read. Its rows, from the first one its first query
 * sees (a sliding window starts past 0) to the sequence's end, are cut into
 * spans (split-K); a work item is one span of one unit, run by the level's
 * attend_span with its own online softmax: running max m_i, sum l_i,
 * accumulator acc_i. The thread that finishes the last span of a unit
 * merges them exactly,
 *     M = max_i m_i,   L = sum_i e^(m_i - M) l_i,
 *     out = sum_i e^(m_i - M) acc_i / L,   lse = M + log L,
 * and applies R^-1 once per output row for turbo values.
 *
 * Spans depend only on the sequence (its n_ctx, n_q and the window), so a
 * sequence gets the same floats whatever the thread count, whichever
 * sequences share the call and however its cache is paged. The work lists
 * live in the device and only grow: a warm decode loop allocates nothing.
 */
#include <math.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "simd.h"

/* A span of fewer rows costs more in query rotation and merging than a
 * thread gains from it. */
#define SPAN_ROWS_MIN 1024u
/* Enough items per head to balance a few threads over a few heads. */
#define SPANS_PER_HEAD 8u
/* Rows x queries under which waking the threads costs more than they save. */
#define POOL_MIN_WORK 65536u

struct unit {
    uint32_t seq, kv_head;
    uint32_t query0, n_query; /* its queries among the sequence's n_q x ratio */
    uint32_t first_row;       /* of its first span, a multiple of 64 */
    uint32_t span_rows, n_spans, first_item;
    atomic_uint pending;      /* spans not finished yet */
};

struct item {
    uint32_t unit, span;
};

struct cpu_split {
    struct unit *units;
    struct item *items;
    float *partials;
    size_t unit_cap, item_cap, partial_cap;
};

/* One call, shared by every thread. */
struct call {
    struct cpu_device *dev;
    const struct tkv_attention_args *a;
    const struct cpu_layout *k, *v;
    uint32_t ratio;
    size_t partial_stride; /* floats per item: acc, then max and sum */
    int staged;            /* blocks of lanes rows may cross pool blocks */
};

static uint32_t span_rows(uint32_t n_rows)
{
    uint32_t rows = ((n_rows + SPANS_PER_HEAD - 1) / SPANS_PER_HEAD + 63u) & ~63u;
    return rows < SPAN_ROWS_MIN ? SPAN_ROWS_MIN : rows;
}

/* Grows *p to hold n elements of size bytes; keeps it on failure. */
static int grow(void **p, size_t *cap, size_t n, size_t size)
{
    if (n <= *cap)
        return 1;
    size_t want = n + n / 2;
    void *q = realloc(*p, want * size);
    if (!q)
        return 0;
    *p = q;
    *cap = want;
    return 1;
}

void cpu_split_free(struct cpu_split *s)
{
    if (!s)
        return;
    free(s->units);
    free(s->items);
    free(s->partials);
    free(s);
}

/* Query g of a unit: token g / ratio of its sequence, head kv_head * ratio +
 * g % ratio; returns its row in q, out and lse. */
static size_t query_row(const struct call *c, const struct unit *u, uint32_t g)
{
    const struct tkv_attention_args *a = c->a;
    uint32_t t = g / c->ratio, h = u->kv_head * c->ratio + g % c->ratio;
    return ((size_t)cpu_seq(a, u->seq)->q_first + t) * a->n_q_heads + h;
}

/* Where a span's partial results lie in its stride of floats: acc
 * [n_query][hd], max and sum [CPU_UNIT_QUERIES] each, then for
 * outlier-split values acc_plain [n_query][hd]. */
static size_t plain_offset(uint32_t n_query, uint32_t hd)
{
    return (size_t)n_query * hd + 2u * CPU_UNIT_QUERIES;
}

static void merge_unit(const struct call *c, const struct unit *u)
{
    const uint32_t hd = c->v->head_dim, outliers = c->v->n_outliers != 0;
    const float *base = c->dev->split->partials + (size_t)u->first_item * c->partial_stride;
    float plain[TKV_HEAD_DIM_MAX];
    for (uint32_t q = 0; q < u->n_query; q++) {
        size_t row = query_row(c, u, u->query0 + q);
        float *out = c->a->out + row * hd;
        float m = -INFINITY, l = 0.0f;
        for (uint32_t s = 0; s < u->n_spans; s++)
            m = fmaxf(m, base[s * c->partial_stride + (size_t)u->n_query * hd + q]);
        memset(out, 0, sizeof *out * hd);
        memset(plain, 0, sizeof *plain * hd);
        for (uint32_t s = 0; s < u->n_spans; s++) {
            const float *part = base + s * c->partial_stride;
            float span_max = part[(size_t)u->n_query * hd + q];
            if (span_max == -INFINITY) /* the query sees none of the span's rows */
                continue;
            float w = expf(span_max - m);
            l += w * part[(size_t)u->n_query * hd + CPU_UNIT_QUERIES + q];
            for (uint32_t i = 0; i < hd; i++)
                out[i] += w * part[(size_t)q * hd + i];
            if (outliers)
                for (uint32_t i = 0; i < hd; i++)
                    plain[i] += w * part[plain_offset(u->n_query, hd) + (size_t)q * hd + i];
        }
        float inv_l = 1.0f / l;
        for (uint32_t i = 0; i < hd; i++)
            out[i] *= inv_l;
        if (c->a->lse)
            c->a->lse[row] = m + logf(l);
        if (c->v->bits)
            for (uint32_t g = 0; g < c->v->n_groups; g++)
                c->v->isa->rotate_group(c->v->rotation, &c->v->groups[g], CPU_UNROTATE,
                                        out + c->v->groups[g].first);
        if (outliers) /* stored unrotated: added after the rotation back */
            for (uint32_t i = 0; i < hd; i++)
                out[i] += plain[i] * inv_l;
    }
}

static void run_item(void *arg, uint32_t index, uint32_t thread)
{
    const struct call *c = arg;
    const struct tkv_attention_args *a = c->a;
    const struct item *it = &c->dev->split->items[index];
    struct unit *u = &c->dev->split->units[it->unit];
    const struct tkv_attn_seq *seq = cpu_seq(a, u->seq);
    const uint32_t *blocks = a->blocks + seq->block_first;
    struct cpu_thread *th = &c->dev->threads[thread];
    const struct cpu_layout *kl = c->k;
    const uint32_t hd = kl->head_dim;
    const uint32_t lanes = kl->isa->lanes;
    uint32_t lo[CPU_UNIT_QUERIES], hi[CPU_UNIT_QUERIES];
    float row[TKV_HEAD_DIM_MAX];

    float *plain = kl->n_outliers ? th->queries + (size_t)CPU_UNIT_QUERIES * TKV_HEAD_DIM_MAX : NULL;
    if (plain)
        memset(plain, 0, sizeof *plain * CPU_TILED_FLOATS(u->n_query, hd));
    for (uint32_t q = 0; q < u->n_query; q++) {
        uint32_t g = u->query0 + q, j = q % CPU_SUBBATCH, b0 = q - j;
        uint32_t nb = u->n_query - b0 < CPU_SUBBATCH ? u->n_query - b0 : CPU_SUBBATCH;
        memcpy(row, a->q + query_row(c, u, g) * hd, sizeof *row * hd);
        if (plain) /* the outliers score against q itself (struct cpu_span) */
            for (uint32_t i = 0; i < hd; i++)
                plain[(size_t)b0 * hd + (size_t)i * CPU_SUBBATCH + j] = row[i];
        if (kl->bits) /* turbo K scores against R q */
            for (uint32_t i = 0; i < kl->n_groups; i++)
                kl->isa->rotate_group(kl->rotation, &kl->groups[i], CPU_ROTATE,
                                      row + kl->groups[i].first);
        float *tile = th->queries + (size_t)b0 * hd; /* see struct cpu_span */
        for (uint32_t o = 0; o < hd; o += lanes)
            memcpy(tile + ((size_t)o * nb + (size_t)j * lanes), row + o, sizeof *row * lanes);
        cpu_visible(seq->n_ctx, seq->n_q, g / c->ratio, a->window, &lo[q], &hi[q]);
    }
    float *part = c->dev->split->partials + (size_t)index * c->partial_stride;
    uint32_t first = u->first_row + it->span * u->span_rows;
    struct cpu_span span = {
        .k = kl,
        .v = c->v,
        .k_rows = cpu_rows_of(&a->k, blocks, u->kv_head),
        .v_rows = cpu_rows_of(&a->v, blocks, u->kv_head),
        .stage = c->staged ? th->stage : NULL,
        .first = first,
        .end = seq->n_ctx - first < u->span_rows ? seq->n_ctx : first + u->span_rows,
        .n_query = u->n_query,
        .queries = th->queries,
        .plain = plain,
        .lo = lo,
        .hi = hi,
        .scale = a->scale,
        .softcap = a->softcap,
        .inv_softcap = a->softcap > 0.0f ? 1.0f / a->softcap : 0.0f,
        .threshold = a->sparse_v_threshold,
        .acc = part,
        .max = part + (size_t)u->n_query * hd,
        .sum = part + (size_t)u->n_query * hd + CPU_UNIT_QUERIES,
        .acc_plain = c->v->n_outliers ? part + plain_offset(u->n_query, hd) : NULL,
        .acc_tiled = th->outlier_acc,
    };
    kl->isa->attend_span(&span);
    th->skipped += span.skipped;
    if (atomic_fetch_sub_explicit(&u->pending, 1, memory_order_acq_rel) == 1)
        merge_unit(c, u);
}

/* The units of sequence s: chunks of its n_q x ratio queries, each with
 * the rows from the first one its first query sees. */
static uint32_t seq_chunks(const struct tkv_attention_args *a, uint32_t s, uint32_t ratio)
{
    return (cpu_seq(a, s)->n_q * ratio + CPU_UNIT_QUERIES - 1) / CPU_UNIT_QUERIES;
}

static uint32_t chunk_first_row(const struct tkv_attention_args *a, const struct tkv_attn_seq *seq,
                                uint32_t query0, uint32_t ratio)
{
    uint32_t lo, hi;
    cpu_visible(seq->n_ctx, seq->n_q, query0 / ratio, a->window, &lo, &hi);
    return lo & ~63u;
}

/* Lists the units and items of a call; TKV_ENOMEM leaves nothing changed
 * but the lists' capacity. */
static int plan_work(struct cpu_device *dev, const struct tkv_attention_args *a, uint32_t ratio,
                     size_t partial_stride, uint32_t *n_items, uint64_t *work)
{
    struct cpu_split *sp = dev->split;
    size_t n_units = 0, items = 0;
    for (uint32_t s = 0; s < a->n_seqs; s++) {
        const struct tkv_attn_seq *seq = cpu_seq(a, s);
        uint32_t chunks = seq_chunks(a, s, ratio);
        n_units += (size_t)a->n_kv_heads * chunks;
        for (uint32_t ch = 0; ch < chunks; ch++) {
            uint32_t rows = seq->n_ctx - chunk_first_row(a, seq, ch * CPU_UNIT_QUERIES, ratio);
            items += (size_t)a->n_kv_heads * ((rows + span_rows(rows) - 1) / span_rows(rows));
        }
    }
    if (items > UINT32_MAX || !grow((void **)&sp->units, &sp->unit_cap, n_units, sizeof *sp->units) ||
        !grow((void **)&sp->items, &sp->item_cap, items, sizeof *sp->items) ||
        !grow((void **)&sp->partials, &sp->partial_cap, items * partial_stride, sizeof(float)))
        return CPU_ERROR(TKV_ENOMEM, "attention: no memory for %zu work items", items);

    uint32_t u = 0, i = 0;
    *work = 0;
    for (uint32_t s = 0; s < a->n_seqs; s++) {
        const struct tkv_attn_seq *seq = cpu_seq(a, s);
        const uint32_t n_query = seq->n_q * ratio, chunks = seq_chunks(a, s, ratio);
        for (uint32_t ch = 0; ch < chunks; ch++) {
            uint32_t query0 = ch * CPU_UNIT_QUERIES;
            uint32_t first_row = chunk_first_row(a, seq, query0, ratio);
            uint32_t rows = span_rows(seq->n_ctx - first_row);
            uint32_t spans = (seq->n_ctx - first_row + rows - 1) / rows;
            for (uint32_t kv = 0; kv < a->n_kv_heads; kv++, u++) {
                struct unit *unit = &sp->units[u];
                unit->seq = s;
                unit->kv_head = kv;
                unit->query0 = query0;
                unit->n_query = n_query - query0 < CPU_UNIT_QUERIES ? n_query - query0
                                                                    : CPU_UNIT_QUERIES;
                unit->first_row = first_row;
                unit->span_rows = rows;
                unit->n_spans = spans;
                unit->first_item = i;
                atomic_init(&unit->pending, spans);
                for (uint32_t k = 0; k < spans; k++, i++)
                    sp->items[i] = (struct item){ u, k };
                *work += (uint64_t)(seq->n_ctx - first_row) * unit->n_query;
            }
        }
    }
    *n_items = i;
    return TKV_OK;
}

/* Every thread's stage holds at least bytes; TKV_ENOMEM leaves the stages
 * usable (grown or as they were). */
static int grow_stages(struct cpu_device *dev, size_t bytes)
{
    for (uint32_t t = 0; t < dev->n_threads; t++) {
        struct cpu_thread *th = &dev->threads[t];
        if (th->stage_bytes >= bytes)
            continue;
        uint8_t *stage = aligned_alloc(64, (bytes + 63) & ~(size_t)63);
        if (!stage)
            return CPU_ERROR(TKV_ENOMEM, "attention: no memory for %zu bytes of rows per thread",
                             bytes);
        memset(stage, 0, bytes); /* the slack the kernels read past a row */
        free(th->stage);
        th->stage = stage;
        th->stage_bytes = bytes;
    }
    return TKV_OK;
}

int cpu_attention_split(struct cpu_device *dev, const struct tkv_attention_args *a,
                        const struct cpu_layout *k, const struct cpu_layout *v,
                        uint64_t *rows_skipped)
{
    const uint32_t ratio = a->n_q_heads / a->n_kv_heads;
    uint32_t unit_queries = 0;
    for (uint32_t s = 0; s < a->n_seqs; s++) {
        uint32_t n = cpu_seq(a, s)->n_q * ratio;
        unit_queries = n > unit_queries ? n : unit_queries;
    }
    if (unit_queries > CPU_UNIT_QUERIES)
        unit_queries = CPU_UNIT_QUERIES;
    /* 16 floats: items written by different threads do not share a cache line */
    const size_t stride =
        ((size_t)unit_queries * k->head_dim * (v->n_outliers ? 2u : 1u) + 2u * CPU_UNIT_QUERIES + 15u) &
        ~(size_t)15u;
    uint32_t n_items;
    uint64_t work;
    int rc;
    if (!dev->split && !(dev->split = calloc(1, sizeof *dev->split)))
        return CPU_ERROR(TKV_ENOMEM, "attention: no memory for the work lists");
    if ((rc = plan_work(dev, a, ratio, stride, &n_items, &work)) != TKV_OK)
        return rc;
    /* Blocks of lanes rows start at multiples of lanes, so they cross pool
     * blocks only when block_tokens is not a multiple of lanes; their rows
     * are then gathered in each thread's stage. */
    int staged = a->k.block_tokens % k->isa->lanes != 0;
    if (staged && (rc = grow_stages(dev, CPU_STAGE_BYTES(k->row_bytes, v->row_bytes))) != TKV_OK)
        return rc;
    struct call c = { dev, a, k, v, ratio, stride, staged };
    uint32_t n_threads = work < POOL_MIN_WORK ? 1 : dev->n_threads;
    for (uint32_t t = 0; t < n_threads; t++)
        dev->threads[t].skipped = 0;
    cpu_pool_run(n_threads > 1 ? dev->pool : NULL, n_items, run_item, &c);
    *rows_skipped = 0;
    for (uint32_t t = 0; t < n_threads; t++)
        *rows_skipped += dev->threads[t].skipped;
    return TKV_OK;
}
