/* SPDX-License-Identifier: MIT */
/*
 * The compressed K/V cache: creation, the block pool, append, decode
 * attention, readback. Layout and block rules: cache.h and docs/abi.md.
 *
 * Every public call checks all of its arguments before it touches the cache,
 * and a token count only advances after the plugin has written both K and V,
 * so a failed call leaves the cache as it was (a block copied for
 * copy-on-write may stay private to the sequence: same rows, one reference).
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "cache.h"
#include "error.h"
#include "policy.h"
#include "tensor.h"

#define MAX_KV_HEADS 1024u
#define MAX_SEQS 65536u

/* Growth: a pool grows to at least a quarter more than it holds, so n
 * appends cost O(log n) copies while the pool stays within 25% of its
 * blocks (hosts that want no growth reserve pool_blocks up front). */
#define GROWTH_DIVISOR 4u
#define GROWTH_MIN_BLOCKS 1u

static void free_store(tkv_cache *c, struct tkv_pool_store *s) { tkv_dev_free(&c->ctx->device, &s->buf); }

void tkv_cache_free(tkv_cache *c)
{
    if (!c)
        return;
    for (uint32_t l = 0; c->layers && l < c->n_layers; l++) {
        free_store(c, &c->layers[l].k);
        free_store(c, &c->layers[l].v);
        free(c->layers[l].len);
    }
    for (uint32_t s = 0; c->seqs && s < c->n_seqs; s++)
        free(c->seqs[s].blocks);
    free(c->layers);
    free(c->seqs);
    free(c->refs);
    free(c->free_ids);
    free(c->attn_seqs);
    free(c->attn_blocks);
    free(c->conv);
    free(c);
}

void tkv_cache_destroy(tkv_cache *c)
{
    if (!c)
        return;
    struct tkv_guard g = { 0 };
    /* a destroy racing another call on the context is the host's bug; the
     * cache is freed either way (the host gave it up) */
    int entered = tkv_enter(c->ctx, "tkv_cache_destroy", &g) == TKV_OK;
    tkv_cache_free(c);
    if (entered)
        tkv_leave(&g);
}

static void init_store(tkv_cache *c, struct tkv_pool_store *s, uint32_t type)
{
    memset(s, 0, sizeof *s);
    s->pool.fmt = (struct tkv_row_format){
        .type = type, .head_dim = c->head_dim, .rotation = c->rotation, .scale_mode = c->scale_mode,
    };
    s->pool.row_bytes = tkv_row_bytes(type, c->head_dim);
    s->pool.block_tokens = c->block_tokens;
    s->pool.head_stride = (uint64_t)c->block_tokens * s->pool.row_bytes;
    s->pool.block_stride = (uint64_t)c->n_kv_heads * s->pool.head_stride;
}

/* Grows one store to n blocks, keeping its rows. */
static int grow_store(tkv_cache *c, struct tkv_pool_store *s, uint32_t n)
{
    struct tkv_dbuf nb;
    int rc = tkv_dev_alloc(&c->ctx->device, (uint64_t)n * s->pool.block_stride, &nb);
    if (rc != TKV_OK)
        return rc;
    if (s->cap_blocks && (rc = tkv_dev_copy(&c->ctx->device, &nb, 0, &s->buf, 0,
                                            (uint64_t)s->cap_blocks * s->pool.block_stride)) != TKV_OK) {
        tkv_dev_free(&c->ctx->device, &nb);
        return rc;
    }
    tkv_dev_free(&c->ctx->device, &s->buf);
    s->buf = nb;
    s->cap_blocks = n;
    return TKV_OK;
}

/* Grows the pool to hold at least need blocks (within the limit). A failure
 * part way leaves some stores larger than pool_blocks: they lose nothing and
 * the next growth skips them. */
static int grow_pool(tkv_cache *c, uint32_t need)
{
    if (need > c->pool_max_blocks)
        return tkv_error(TKV_ENOMEM, "block pool full: %u blocks needed, the limit is %u (%u in use)", need,
                         c->pool_max_blocks, c->blocks_used);
    uint64_t want = (uint64_t)c->pool_blocks + c->pool_blocks / GROWTH_DIVISOR;
    if (want < (uint64_t)c->pool_blocks + GROWTH_MIN_BLOCKS)
        want = (uint64_t)c->pool_blocks + GROWTH_MIN_BLOCKS;
    if (want < need)
        want = need;
    if (want > c->pool_max_blocks)
        want = c->pool_max_blocks;
    uint32_t n = (uint32_t)want;
    uint32_t *refs = realloc(c->refs, n * sizeof *refs);
    if (refs)
        c->refs = refs;
    uint32_t *ids = refs ? realloc(c->free_ids, n * sizeof *ids) : NULL;
    if (!refs || !ids)
        return tkv_error(TKV_ENOMEM, "out of memory growing the block pool to %u blocks", n);
    c->free_ids = ids;
    for (uint32_t l = 0; l < c->n_layers; l++) {
        struct tkv_layer *L = &c->layers[l];
        int rc;
        if ((L->k.cap_blocks < n && (rc = grow_store(c, &L->k, n)) != TKV_OK) ||
            (L->v.cap_blocks < n && (rc = grow_store(c, &L->v, n)) != TKV_OK)) {
            tkv_error_prefix("growing the block pool to %u blocks (layer %u)", n, l);
            return rc;
        }
    }
    /* new ids go on the stack so that the lowest is taken first */
    for (uint32_t b = n; b-- > c->pool_blocks;) {
        c->refs[b] = 0;
        c->free_ids[c->n_free++] = b;
    }
    c->pool_blocks = n;
    return TKV_OK;
}

int tkv_blocks_take(tkv_cache *c, uint32_t n, uint32_t *ids)
{
    if (n > c->n_free) {
        int rc = grow_pool(c, c->blocks_used + n);
        if (rc != TKV_OK)
            return rc;
    }
    for (uint32_t i = 0; i < n; i++) {
        ids[i] = c->free_ids[--c->n_free];
        c->refs[ids[i]] = 1;
    }
    c->blocks_used += n;
    return TKV_OK;
}

void tkv_blocks_release(tkv_cache *c, const uint32_t *ids, uint32_t n)
{
    for (uint32_t i = 0; i < n; i++)
        if (--c->refs[ids[i]] == 0) {
            c->free_ids[c->n_free++] = ids[i];
            c->blocks_used--;
        }
}

int tkv_table_reserve(struct tkv_seq_table *t, uint32_t n)
{
    if (n <= t->cap)
        return TKV_OK;
    uint32_t cap = t->cap ? t->cap : 4;
    while (cap < n)
        cap = cap > UINT32_MAX / 2 ? n : cap * 2;
    uint32_t *b = realloc(t->blocks, (size_t)cap * sizeof *b);
    if (!b)
        return tkv_error(TKV_ENOMEM, "out of memory growing a block table to %u entries", cap);
    t->blocks = b;
    t->cap = cap;
    return TKV_OK;
}

int tkv_block_copy(tkv_cache *c, uint32_t dst, uint32_t src, uint32_t rows)
{
    if (rows == 0)
        return TKV_OK;
    for (uint32_t l = 0; l < c->n_layers; l++) {
        struct tkv_pool_store *st[2] = { &c->layers[l].k, &c->layers[l].v };
        for (int i = 0; i < 2; i++) {
            /* one range from head 0's first row to the last head's row rows - 1 */
            const struct tkv_pool *p = &st[i]->pool;
            uint64_t bs = p->block_stride, n = (uint64_t)(c->n_kv_heads - 1) * p->head_stride + (uint64_t)rows * p->row_bytes;
            int rc = tkv_dev_copy(&c->ctx->device, &st[i]->buf, dst * bs, &st[i]->buf, src * bs, n);
            if (rc != TKV_OK)
                return rc;
        }
    }
    return TKV_OK;
}

uint32_t tkv_seq_max_len(const tkv_cache *c, uint32_t seq)
{
    uint32_t m = 0;
    for (uint32_t l = 0; l < c->n_layers; l++)
        if (c->layers[l].len[seq] > m)
            m = c->layers[l].len[seq];
    return m;
}

int tkv_cache_new(tkv_context *ctx, const struct tkv_cache_geometry *g, const uint32_t *k_types,
                  const uint32_t *v_types, tkv_cache **out)
{
    uint32_t bt = g->block_tokens ? g->block_tokens : TKV_BLOCK_TOKENS_DEFAULT;
    if (bt > g->capacity)
        bt = g->capacity;
    int rc = tkv_caps_check_cache(ctx->device.caps, g->n_layers, k_types, v_types, g->head_dim, g->rotation,
                                  g->scale_mode, bt, ctx->device_name);
    if (rc != TKV_OK)
        return rc;
    uint64_t per_seq = ((uint64_t)g->capacity + bt - 1) / bt;
    uint64_t max_blocks = g->pool_max_blocks ? g->pool_max_blocks : per_seq * g->n_seqs;
    /* the largest block of any store bounds the pool by the device's buffer limit */
    uint64_t largest_block = 0;
    for (uint32_t l = 0; l < g->n_layers; l++) {
        uint64_t kb = (uint64_t)tkv_row_bytes(k_types[l], g->head_dim) * bt * g->n_kv_heads;
        uint64_t vb = (uint64_t)tkv_row_bytes(v_types[l], g->head_dim) * bt * g->n_kv_heads;
        largest_block = kb > largest_block ? kb : largest_block;
        largest_block = vb > largest_block ? vb : largest_block;
    }
    if (g->pool_max_bytes) {
        uint64_t per_block = 0; /* one block in every layer, K and V */
        for (uint32_t l = 0; l < g->n_layers; l++)
            per_block += ((uint64_t)tkv_row_bytes(k_types[l], g->head_dim) + tkv_row_bytes(v_types[l], g->head_dim)) *
                         bt * g->n_kv_heads;
        if (g->pool_max_bytes / per_block < max_blocks)
            max_blocks = g->pool_max_bytes / per_block;
        if (max_blocks == 0)
            return tkv_error(TKV_EINVAL, "pool_max_bytes %llu holds no block (one takes %llu bytes)",
                             (unsigned long long)g->pool_max_bytes, (unsigned long long)per_block);
    }
    uint64_t dev_max = ctx->device.caps->max_buffer_bytes;
    if (dev_max && max_blocks > dev_max / largest_block) {
        if (g->explicit_max || g->pool_blocks > dev_max / largest_block)
            return tkv_error(TKV_EUNSUPPORTED,
                             "a pool of %llu blocks needs %llu-byte buffers, device %s allows %llu bytes per buffer",
                             (unsigned long long)(g->explicit_max ? max_blocks : g->pool_blocks),
                             (unsigned long long)((g->explicit_max ? max_blocks : g->pool_blocks) * largest_block),
                             ctx->device_name, (unsigned long long)dev_max);
        max_blocks = dev_max / largest_block;
    }
    if (max_blocks > UINT32_MAX - 1)
        max_blocks = UINT32_MAX - 1;
    if (g->pool_blocks > max_blocks)
        return tkv_error(TKV_EINVAL, "pool_blocks %u exceeds the pool limit of %llu blocks", g->pool_blocks,
                         (unsigned long long)max_blocks);

    tkv_cache *c = calloc(1, sizeof *c);
    if (!c)
        return tkv_error(TKV_ENOMEM, "out of memory creating the cache");
    *c = (struct tkv_cache){
        .ctx = ctx, .n_layers = g->n_layers, .n_kv_heads = g->n_kv_heads, .head_dim = g->head_dim,
        .capacity = g->capacity, .n_seqs = g->n_seqs, .rotation = g->rotation, .scale_mode = g->scale_mode,
        .block_tokens = bt, .pool_max_blocks = (uint32_t)max_blocks,
    };
    c->layers = calloc(g->n_layers, sizeof *c->layers);
    c->seqs = calloc(g->n_seqs, sizeof *c->seqs);
    if (!c->layers || !c->seqs) {
        tkv_cache_free(c);
        return tkv_error(TKV_ENOMEM, "out of memory creating the cache");
    }
    for (uint32_t l = 0; l < g->n_layers; l++) {
        struct tkv_layer *L = &c->layers[l];
        init_store(c, &L->k, k_types[l]);
        init_store(c, &L->v, v_types[l]);
        if (!(L->len = calloc(g->n_seqs, sizeof *L->len))) {
            tkv_cache_free(c);
            return tkv_error(TKV_ENOMEM, "out of memory creating the cache");
        }
    }
    if (g->pool_blocks && (rc = grow_pool(c, g->pool_blocks)) != TKV_OK) {
        tkv_cache_free(c);
        return rc;
    }
    *out = c;
    return TKV_OK;
}

void tkv_cache_swap(tkv_cache *a, tkv_cache *b)
{
    tkv_cache t = *a;
    *a = *b;
    *b = t;
}

static int cache_create(tkv_context *ctx, const struct tkv_cache_params *p, tkv_cache **out)
{
    if (p->struct_size < offsetof(struct tkv_cache_params, layer_k_types))
        return tkv_error(TKV_EINVAL, "tkv_cache_create: params->struct_size %u too small", p->struct_size);
    struct tkv_cache_params full = { 0 };
    memcpy(&full, p, p->struct_size < sizeof full ? p->struct_size : sizeof full);
    if (full.n_layers == 0 || full.n_layers > TKV_MAX_LAYERS)
        return tkv_error(TKV_EINVAL, "tkv_cache_create: n_layers %u must be 1..%u", full.n_layers, TKV_MAX_LAYERS);
    if (full.n_kv_heads == 0 || full.n_kv_heads > MAX_KV_HEADS)
        return tkv_error(TKV_EINVAL, "tkv_cache_create: n_kv_heads %u must be 1..%u", full.n_kv_heads, MAX_KV_HEADS);
    if (!tkv_head_dim_supported(full.head_dim))
        return tkv_error(TKV_EUNSUPPORTED, "tkv_cache_create: head_dim %u unsupported (multiples of %u up to %u)",
                         full.head_dim, TKV_GROUP_MIN, TKV_HEAD_DIM_MAX);
    if (full.capacity == 0)
        return tkv_error(TKV_EINVAL, "tkv_cache_create: capacity is 0");
    uint32_t n_seqs = full.n_seqs ? full.n_seqs : 1;
    if (n_seqs > MAX_SEQS)
        return tkv_error(TKV_EINVAL, "tkv_cache_create: n_seqs %u exceeds %u", n_seqs, MAX_SEQS);
    if (full.rotation >= TKV_ROTATION_COUNT || full.scale_mode >= TKV_SCALE_COUNT)
        return tkv_error(TKV_EINVAL, "tkv_cache_create: rotation %u / scale_mode %u unknown", full.rotation,
                         full.scale_mode);
    if (full.n_q_heads && full.n_q_heads % full.n_kv_heads)
        return tkv_error(TKV_EINVAL, "tkv_cache_create: n_q_heads %u is not a multiple of n_kv_heads %u",
                         full.n_q_heads, full.n_kv_heads);
    if (full.pool_flags & ~TKV_POOL_FIXED)
        return tkv_error(TKV_EINVAL, "tkv_cache_create: unknown pool_flags 0x%x", full.pool_flags);
    if ((full.pool_flags & TKV_POOL_FIXED) && full.pool_blocks == 0)
        return tkv_error(TKV_EINVAL, "tkv_cache_create: TKV_POOL_FIXED needs pool_blocks > 0");
    if (full.pool_max_blocks && full.pool_blocks > full.pool_max_blocks)
        return tkv_error(TKV_EINVAL, "tkv_cache_create: pool_blocks %u exceeds pool_max_blocks %u", full.pool_blocks,
                         full.pool_max_blocks);

    uint32_t *types = malloc(2 * sizeof *types * full.n_layers);
    if (!types)
        return tkv_error(TKV_ENOMEM, "out of memory");
    int rc = tkv_policy_resolve(&ctx->cfg, &full, ctx->device.caps, types, types + full.n_layers);
    struct tkv_cache_geometry g = {
        .n_layers = full.n_layers, .n_kv_heads = full.n_kv_heads, .head_dim = full.head_dim,
        .capacity = full.capacity, .n_seqs = n_seqs,
        .rotation = full.rotation ? full.rotation : ctx->cfg.rotation,
        .scale_mode = full.scale_mode        ? full.scale_mode
                      : ctx->cfg.norm_correction ? TKV_SCALE_NORM_CORRECTED
                                                 : TKV_SCALE_NORM,
        .block_tokens = full.block_tokens, .pool_blocks = full.pool_blocks,
        .pool_max_blocks = (full.pool_flags & TKV_POOL_FIXED) ? full.pool_blocks : full.pool_max_blocks,
        .explicit_max = full.pool_max_blocks || (full.pool_flags & TKV_POOL_FIXED),
        .pool_max_bytes = full.pool_max_bytes,
    };
    if (rc == TKV_OK)
        rc = tkv_cache_new(ctx, &g, types, types + full.n_layers, out);
    if (rc != TKV_OK)
        tkv_error_prefix("tkv_cache_create");
    free(types);
    return rc;
}

int tkv_cache_create(tkv_context *ctx, const struct tkv_cache_params *p, tkv_cache **out)
{
    if (!ctx || !p || !out)
        return tkv_error(TKV_EINVAL, "tkv_cache_create: NULL argument");
    *out = NULL;
    TKV_GUARDED(ctx, "tkv_cache_create", cache_create(ctx, p, out));
}

static int check_seq_layer(const tkv_cache *c, const char *fn, uint32_t seq, uint32_t layer)
{
    if (layer >= c->n_layers)
        return tkv_error(TKV_ERANGE, "%s: layer %u out of range (cache has %u layers)", fn, layer, c->n_layers);
    if (seq >= c->n_seqs)
        return tkv_error(TKV_ERANGE, "%s: sequence %u out of range (ids 0..%u)", fn, seq, c->n_seqs - 1);
    return TKV_OK;
}

/* Makes every block holding positions [first, first + n) of seq exist and
 * be private to seq. On failure the table is as it was, apart from shared
 * blocks already replaced by private copies (same rows). *added: blocks
 * appended to the table. */
static int prepare_blocks(tkv_cache *c, uint32_t seq, uint32_t first, uint32_t n, uint32_t *added)
{
    struct tkv_seq_table *t = &c->seqs[seq];
    uint32_t need = tkv_blocks_for(c, first + n), longest = tkv_seq_max_len(c, seq);
    int rc;
    *added = 0;
    /* copy-on-write: existing blocks this write touches that another
     * sequence shares; only the rows some layer of seq holds are copied */
    for (uint32_t b = first / c->block_tokens; b < t->n_blocks && b < need; b++) {
        if (c->refs[t->blocks[b]] <= 1)
            continue;
        uint64_t start = (uint64_t)b * c->block_tokens;
        uint32_t rows = longest <= start ? 0 : longest - start < c->block_tokens ? (uint32_t)(longest - start) : c->block_tokens;
        uint32_t fresh;
        if ((rc = tkv_blocks_take(c, 1, &fresh)) != TKV_OK)
            return rc;
        if ((rc = tkv_block_copy(c, fresh, t->blocks[b], rows)) != TKV_OK) {
            tkv_blocks_release(c, &fresh, 1);
            return rc;
        }
        tkv_blocks_release(c, &t->blocks[b], 1);
        t->blocks[b] = fresh;
    }
    if (need > t->n_blocks) {
        uint32_t k = need - t->n_blocks;
        if ((rc = tkv_table_reserve(t, need)) != TKV_OK || (rc = tkv_blocks_take(c, k, t->blocks + t->n_blocks)) != TKV_OK)
            return rc;
        t->n_blocks = need;
        *added = k;
    }
    return TKV_OK;
}

static void drop_added(tkv_cache *c, uint32_t seq, uint32_t added)
{
    struct tkv_seq_table *t = &c->seqs[seq];
    t->n_blocks -= added;
    tkv_blocks_release(c, t->blocks + t->n_blocks, added);
}

/* Rows whose stored scale cannot hold them: fp16 tops out at 65504, so a
 * turbo group whose norm exceeds it, a q8_0 block whose max|x| / 127 does, or
 * an f16 value (or an outlier of an outlier-split type) beyond it is clamped
 * (stored with a large error). Counted per
 * row, from the host's floats, before the plugin stores them. */
/* 1 when every turbo group's norm of the finite values is within fp16's
 * range (summed as saturated_rows sums them); then so is every finite |x_i|. */
static int finite_row_fits(const float *x, const uint32_t *groups, uint32_t n_groups)
{
    for (uint32_t gi = 0, at = 0; gi < n_groups; at += groups[gi++]) {
        double norm = 0;
        for (uint32_t i = 0; i < groups[gi]; i++)
            norm += isfinite(x[at + i]) ? (double)x[at + i] * x[at + i] : 0.0;
        if (sqrt(norm) > TKV_FP16_MAX)
            return 0;
    }
    return 1;
}

static uint64_t saturated_rows(uint32_t type, uint32_t head_dim, const float *x, uint64_t n_rows)
{
    uint64_t count = 0;
    uint32_t groups[TKV_MAX_GROUPS], n_groups = tkv_type_bits(type) ? tkv_group_split(head_dim, groups) : 0;
    for (uint64_t r = 0; r < n_rows; r++, x += head_dim) {
        int sat = 0;
        if (type == TKV_TYPE_F16 || type == TKV_TYPE_Q8_0) {
            float limit = type == TKV_TYPE_F16 ? TKV_FP16_MAX : TKV_FP16_MAX * 127.0f;
            for (uint32_t i = 0; i < head_dim && !sat; i++)
                sat = isfinite(x[i]) && fabsf(x[i]) > limit;
        } else {
            /* outlier-split types: the outliers are fp16 values, the rest the
             * turbo groups. The outliers are the largest |x|, and the
             * rest is x with some values set to 0, so a row whose largest
             * finite |x| and every group's norm of finite values fit cannot
             * saturate: the selection (the costly part) only for the others */
            float rest[TKV_HEAD_DIM_MAX];
            const float *g_x = x;
            if (tkv_type_is_outlier(type) && !finite_row_fits(x, groups, n_groups)) {
                uint32_t idx[TKV_OUTLIER_MAX];
                for (uint32_t i = 0; i < head_dim; i++)
                    rest[i] = isfinite(x[i]) ? x[i] : 0.0f; /* as stored: non-finite values are 0 */
                tkv_outlier_select(rest, head_dim, idx);
                for (uint32_t o = 0; o < tkv_outlier_count(head_dim); o++) {
                    sat |= fabsf(rest[idx[o]]) > TKV_FP16_MAX;
                    rest[idx[o]] = 0.0f;
                }
                g_x = rest;
            } else if (tkv_type_is_outlier(type)) {
                continue; /* fits */
            }
            for (uint32_t gi = 0, at = 0; gi < n_groups && !sat; at += groups[gi++]) {
                double norm = 0;
                for (uint32_t i = 0; i < groups[gi]; i++)
                    norm += isfinite(g_x[at + i]) ? (double)g_x[at + i] * g_x[at + i] : 0.0;
                sat = sqrt(norm) > TKV_FP16_MAX;
            }
        }
        count += sat;
    }
    return count;
}

/* The append of rows from host floats (src), or from the host's device
 * buffer (dev, src NULL: queued, not counted). */
static struct tkv_append_args append_args(tkv_cache *c, const struct tkv_pool_store *s, uint32_t seq, uint32_t pos,
                                          uint32_t n, const float *src, const struct tkv_device_tensor *dev,
                                          uint64_t *nonfinite)
{
    return (struct tkv_append_args){
        .n_tokens = n, .n_heads = c->n_kv_heads, .first_pos = pos, .pool = s->pool,
        .blocks = c->seqs[seq].blocks, .n_blocks = c->seqs[seq].n_blocks, .src = dev ? NULL : src,
        .n_nonfinite = dev ? NULL : nonfinite, .src_dev = dev,
    };
}

/* What an append that succeeded adds to the cache's counts. */
static void appended(tkv_cache *c, uint32_t seq, uint32_t layer, uint64_t rows, const float *k, const float *v,
                     const struct tkv_device_tensor *kd, const struct tkv_device_tensor *vd, uint64_t bad)
{
    struct tkv_layer *L = &c->layers[layer];
    c->stats.nonfinite_values += bad;
    /* rows in the host's device memory are never on the host: not counted */
    c->stats.saturated_rows += (kd ? 0 : saturated_rows(L->k.pool.fmt.type, c->head_dim, k, rows)) +
                               (vd ? 0 : saturated_rows(L->v.pool.fmt.type, c->head_dim, v, rows));
    if (bad)
        tkv_log(TKV_LOG_INFO, "tkv_cache_append(layer %u, sequence %u): %llu NaN/Inf values stored as 0", layer, seq,
                (unsigned long long)bad);
}

/* The checks of an append of n_tokens to seq in layer before anything
 * changes (fn names the call). */
static int append_check(tkv_cache *c, const char *fn, uint32_t seq, uint32_t layer, uint32_t n_tokens, const void *k,
                        const void *v)
{
    int rc = check_seq_layer(c, fn, seq, layer);
    if (rc != TKV_OK)
        return rc;
    if (!k || !v)
        return tkv_error(TKV_EINVAL, "%s: %s rows are NULL", fn, !k ? "key" : "value");
    if (n_tokens == 0)
        return tkv_error(TKV_EINVAL, "%s: n_tokens is 0", fn);
    uint32_t len = c->layers[layer].len[seq];
    if (n_tokens > c->capacity - len)
        return tkv_error(TKV_ERANGE, "%s: capacity exceeded: layer %u sequence %u holds %u of %u tokens, %u more "
                         "requested", fn, layer, seq, len, c->capacity, n_tokens);
    return TKV_OK;
}

/* k, v: host floats, or NULL with kd, vd the host's device buffers. */
static int cache_append(tkv_cache *c, uint32_t seq, uint32_t layer, uint32_t n_tokens, const float *k,
                        const float *v, const struct tkv_device_tensor *kd, const struct tkv_device_tensor *vd)
{
    int rc = append_check(c, "tkv_cache_append", seq, layer, n_tokens, k ? (const void *)k : kd,
                          v ? (const void *)v : vd);
    if (rc != TKV_OK)
        return rc;
    struct tkv_layer *L = &c->layers[layer];
    uint32_t len = L->len[seq], added;
    if ((rc = prepare_blocks(c, seq, len, n_tokens, &added)) != TKV_OK) {
        tkv_error_prefix("tkv_cache_append(layer %u, sequence %u)", layer, seq);
        return rc;
    }
    /* Rows past len are invisible, so a failure after K was written loses nothing. */
    uint64_t bad_k = 0, bad_v = 0, rows = (uint64_t)n_tokens * c->n_kv_heads;
    struct tkv_append_args ka = append_args(c, &L->k, seq, len, n_tokens, k, kd, &bad_k),
                           va = append_args(c, &L->v, seq, len, n_tokens, v, vd, &bad_v);
    if ((rc = tkv_dev_append_pair(&c->ctx->device, &L->k.buf, &ka, &L->v.buf, &va)) != TKV_OK) {
        drop_added(c, seq, added);
        tkv_error_prefix("tkv_cache_append(layer %u)", layer);
        return rc;
    }
    L->len[seq] = len + n_tokens;
    appended(c, seq, layer, rows, k, v, kd, vd, bad_k + bad_v);
    return TKV_OK;
}

int tkv_cache_append(tkv_cache *c, uint32_t seq, uint32_t layer, uint32_t n_tokens, const float *k,
                     const float *v)
{
    if (!c)
        return tkv_error(TKV_EINVAL, "tkv_cache_append: cache is NULL");
    TKV_GUARDED(c->ctx, "tkv_cache_append", cache_append(c, seq, layer, n_tokens, k, v, NULL, NULL));
}

static int grow_scratch(tkv_cache *c, uint32_t n_seqs, uint64_t n_blocks)
{
    if (n_seqs > c->attn_seqs_cap) {
        struct tkv_attn_seq *s = realloc(c->attn_seqs, n_seqs * sizeof *s);
        if (!s)
            return tkv_error(TKV_ENOMEM, "out of memory");
        c->attn_seqs = s;
        c->attn_seqs_cap = n_seqs;
    }
    if (n_blocks > c->attn_blocks_cap) {
        uint32_t *b = realloc(c->attn_blocks, (size_t)n_blocks * sizeof *b);
        if (!b)
            return tkv_error(TKV_ENOMEM, "out of memory");
        c->attn_blocks = b;
        c->attn_blocks_cap = n_blocks;
    }
    return TKV_OK;
}

/* What an attention call reports back: the device's counts, then the
 * host's options (attention_done). */
struct attn_out {
    struct tkv_attention_options o;
    uint64_t total, skipped, device_ns;
};

/* The options of an attention call of fn checked into *o (zero where
 * opts_in is NULL) and its scale; with n_q_heads and where out goes (od:
 * device memory). Nothing of the cache is read but its shape and device. */
static int attention_options(const tkv_cache *c, const char *fn, const struct tkv_attention_options *opts_in,
                             uint32_t n_q_heads, const struct tkv_device_tensor *od,
                             struct tkv_attention_options *o, float *scale)
{
    *o = (struct tkv_attention_options){ 0 };
    if (opts_in) {
        if (opts_in->struct_size < offsetof(struct tkv_attention_options, stats) + sizeof o->stats)
            return tkv_error(TKV_EINVAL, "%s: opts->struct_size %u too small", fn, opts_in->struct_size);
        memcpy(o, opts_in, opts_in->struct_size < sizeof *o ? opts_in->struct_size : sizeof *o);
    }
    if (od && (o->lse || o->device_ns))
        return tkv_error(TKV_EUNSUPPORTED, "%s: opts->%s with out in device memory: the call is queued, not waited "
                         "for (pass NULL)", fn, o->lse ? "lse" : "device_ns");
    if (n_q_heads == 0 || n_q_heads % c->n_kv_heads)
        return tkv_error(TKV_EINVAL, "%s: n_q_heads %u must be a positive multiple of n_kv_heads %u", fn,
                         n_q_heads, c->n_kv_heads);
    *scale = o->scale != 0.0f ? o->scale : 1.0f / sqrtf((float)c->head_dim);
    if (!isfinite(*scale))
        return tkv_error(TKV_EINVAL, "%s: scale %g is not finite", fn, (double)o->scale);
    if (!(o->softcap >= 0.0f) || !isfinite(o->softcap))
        return tkv_error(TKV_EINVAL, "%s: softcap %g must be finite and >= 0", fn, (double)o->softcap);
    const struct tkv_device_caps *caps = c->ctx->device.caps;
    if (o->window && !(caps->features & TKV_CAP_WINDOW))
        return tkv_error(TKV_EUNSUPPORTED, "%s: backend %s has no sliding-window attention", fn,
                         c->ctx->device.mod->ops.name);
    if (o->softcap > 0.0f && !(caps->features & TKV_CAP_SOFTCAP))
        return tkv_error(TKV_EUNSUPPORTED, "%s: backend %s has no logit soft-capping", fn, c->ctx->device.mod->ops.name);
    if (o->lse && !(caps->features & TKV_CAP_LSE))
        return tkv_error(TKV_EUNSUPPORTED, "%s: backend %s cannot return log-sum-exp", fn, c->ctx->device.mod->ops.name);
    return TKV_OK;
}

/* The checked arguments of an attention call of fn (*a, its outputs in *r),
 * the sequences' lengths as the layer holds them now. q, out: host floats,
 * or NULL with qd, od the host's device buffers (od: the call is queued and
 * not waited for). */
static int attention_args(tkv_cache *c, const char *fn, uint32_t layer, uint32_t n_seqs, const uint32_t *seq_ids,
                          const uint32_t *n_q, uint32_t n_q_uniform, uint32_t n_q_heads, const float *q, float *out,
                          const struct tkv_attention_options *opts_in, const struct tkv_device_tensor *qd,
                          const struct tkv_device_tensor *od, struct tkv_attention_args *a, struct attn_out *r)
{
    struct tkv_attention_options o;
    float scale;
    int rc;
    if (layer >= c->n_layers)
        return tkv_error(TKV_ERANGE, "%s: layer %u out of range (cache has %u layers)", fn, layer, c->n_layers);
    if (!seq_ids || (!q && !qd) || (!out && !od))
        return tkv_error(TKV_EINVAL, "%s: %s is NULL", fn, !seq_ids ? "seq_ids" : !q && !qd ? "q" : "out");
    if (n_seqs == 0 || n_seqs > c->n_seqs)
        return tkv_error(TKV_EINVAL, "%s: n_seqs %u must be 1..%u", fn, n_seqs, c->n_seqs);
    if ((rc = attention_options(c, fn, opts_in, n_q_heads, od, &o, &scale)) != TKV_OK)
        return rc;
    const struct tkv_device_caps *caps = c->ctx->device.caps;

    struct tkv_layer *L = &c->layers[layer];
    uint64_t n_blocks = 0, n_q_total = 0;
    uint32_t max_ctx = 0, max_q = 0;
    for (uint32_t s = 0; s < n_seqs; s++) {
        uint32_t id = seq_ids[s], nq = n_q ? n_q[s] : n_q_uniform;
        if (id >= c->n_seqs)
            return tkv_error(TKV_ERANGE, "%s: seq_ids[%u] = %u out of range (ids 0..%u)", fn, s, id, c->n_seqs - 1);
        if (nq == 0)
            return tkv_error(TKV_EINVAL, "%s: n_q of sequence %u is 0", fn, id);
        if (L->len[id] < nq)
            return tkv_error(TKV_ERANGE, "%s: sequence %u holds %u tokens in layer %u, fewer than n_q = %u", fn, id,
                             L->len[id], layer, nq);
        if (caps->max_q_per_seq && nq > caps->max_q_per_seq)
            return tkv_error(TKV_EUNSUPPORTED, "%s: sequence %u has %u query tokens, backend %s takes at most %u", fn,
                             id, nq, c->ctx->device.mod->ops.name, caps->max_q_per_seq);
        if (n_q && nq != n_q[0] && !(caps->features & TKV_CAP_MIXED_NQ))
            return tkv_error(TKV_EUNSUPPORTED, "%s: backend %s cannot mix query counts in one call", fn,
                             c->ctx->device.mod->ops.name);
        n_blocks += tkv_blocks_for(c, L->len[id]);
        n_q_total += nq;
        max_ctx = L->len[id] > max_ctx ? L->len[id] : max_ctx;
        max_q = nq > max_q ? nq : max_q;
    }
    if (n_q_total > UINT32_MAX / n_q_heads || n_blocks > UINT32_MAX)
        return tkv_error(TKV_ERANGE, "%s: %llu query rows / %llu blocks in one call are too many", fn,
                         (unsigned long long)n_q_total, (unsigned long long)n_blocks);
    if ((rc = grow_scratch(c, n_seqs, n_blocks)) != TKV_OK)
        return rc;
    uint32_t bf = 0, qf = 0;
    for (uint32_t s = 0; s < n_seqs; s++) {
        uint32_t id = seq_ids[s], nq = n_q ? n_q[s] : n_q_uniform, nb = tkv_blocks_for(c, L->len[id]);
        memcpy(c->attn_blocks + bf, c->seqs[id].blocks, (size_t)nb * sizeof *c->attn_blocks);
        c->attn_seqs[s] = (struct tkv_attn_seq){ .n_ctx = L->len[id], .n_q = nq, .q_first = qf, .block_first = bf };
        bf += nb;
        qf += nq;
    }
    *r = (struct attn_out){ .o = o };
    *a = (struct tkv_attention_args){
        .n_seqs = n_seqs, .seq_size = sizeof(struct tkv_attn_seq), .n_q_total = qf, .n_q_heads = n_q_heads,
        .n_kv_heads = c->n_kv_heads, .max_n_ctx = max_ctx, .max_n_q = max_q, .k = L->k.pool, .v = L->v.pool,
        .blocks = c->attn_blocks, .n_blocks = bf, .window = o.window, .seqs = c->attn_seqs, .q = qd ? NULL : q,
        .out = od ? NULL : out, .lse = o.lse, .scale = scale, .softcap = o.softcap,
        .sparse_v_threshold = c->ctx->cfg.sparse_v ? c->ctx->cfg.sparse_v_threshold : 0.0f,
        .rows_total = &r->total, .rows_skipped = od ? NULL : &r->skipped, .device_ns = od ? NULL : &r->device_ns,
        .q_dev = qd, .out_dev = od,
    };
    return TKV_OK;
}

/* A call's counts into the host's options. */
static void attention_done(const struct attn_out *r)
{
    if (r->o.stats) {
        r->o.stats->rows_total = r->total;
        r->o.stats->rows_skipped = r->skipped;
    }
    if (r->o.device_ns)
        *r->o.device_ns = r->device_ns;
}

static int attention(tkv_cache *c, uint32_t layer, uint32_t n_seqs, const uint32_t *seq_ids, const uint32_t *n_q,
                     uint32_t n_q_uniform, uint32_t n_q_heads, const float *q, float *out,
                     const struct tkv_attention_options *opts, const struct tkv_device_tensor *qd,
                     const struct tkv_device_tensor *od)
{
    struct tkv_attention_args a;
    struct attn_out r;
    struct tkv_layer *L = &c->layers[layer < c->n_layers ? layer : 0];
    int rc = attention_args(c, "tkv_attention", layer, n_seqs, seq_ids, n_q, n_q_uniform, n_q_heads, q, out, opts, qd,
                            od, &a, &r);
    if (rc != TKV_OK || (rc = tkv_dev_attention(&c->ctx->device, &L->k.buf, &L->v.buf, &a)) != TKV_OK)
        return rc;
    attention_done(&r);
    return TKV_OK;
}

int tkv_attention(tkv_cache *c, uint32_t layer, uint32_t n_seqs, const uint32_t *seq_ids, uint32_t n_q,
                  uint32_t n_q_heads, const float *q, float *out, struct tkv_attention_stats *stats)
{
    if (!c)
        return tkv_error(TKV_EINVAL, "tkv_attention: cache is NULL");
    if (n_q == 0)
        return tkv_error(TKV_EINVAL, "tkv_attention: n_q is 0");
    struct tkv_attention_options o = { .struct_size = sizeof o, .stats = stats };
    TKV_GUARDED(c->ctx, "tkv_attention", attention(c, layer, n_seqs, seq_ids, NULL, n_q, n_q_heads, q, out, &o, NULL, NULL));
}

int tkv_attention_ex(tkv_cache *c, uint32_t layer, uint32_t n_seqs, const uint32_t *seq_ids, const uint32_t *n_q,
                     uint32_t n_q_heads, const float *q, float *out, const struct tkv_attention_options *opts)
{
    if (!c)
        return tkv_error(TKV_EINVAL, "tkv_attention_ex: cache is NULL");
    if (!n_q)
        return tkv_error(TKV_EINVAL, "tkv_attention_ex: n_q is NULL");
    TKV_GUARDED(c->ctx, "tkv_attention_ex", attention(c, layer, n_seqs, seq_ids, n_q, 0, n_q_heads, q, out, opts, NULL, NULL));
}

/* ---- typed tensors: widened to f32 in the cache's conversion buffer ---- */

static int append_tensors(tkv_cache *c, uint32_t seq, uint32_t layer, uint32_t n_tokens, const struct tkv_tensor *k,
                          const struct tkv_tensor *v)
{
    static const char fn[] = "tkv_cache_append_tensors";
    int rc;
    if ((rc = tkv_tensor_check(c, k, fn, "k")) != TKV_OK || (rc = tkv_tensor_check(c, v, fn, "v")) != TKV_OK)
        return rc;
    if ((rc = check_seq_layer(c, fn, seq, layer)) != TKV_OK)
        return rc;
    if (n_tokens == 0)
        return tkv_error(TKV_EINVAL, "%s: n_tokens is 0", fn);
    struct tkv_layer *L = &c->layers[layer];
    if (n_tokens > c->capacity - L->len[seq]) /* before sizing a copy by n_tokens */
        return tkv_error(TKV_ERANGE, "%s: capacity exceeded: layer %u sequence %u holds %u of %u tokens, %u more "
                         "requested", fn, layer, seq, L->len[seq], c->capacity, n_tokens);
    size_t n = (size_t)n_tokens * c->n_kv_heads * c->head_dim;
    /* device tensors go to the plugin as they are, in their element type */
    struct tkv_device_tensor kd, vd;
    const int k_dev = tkv_tensor_on_device(k), v_dev = tkv_tensor_on_device(v);
    if ((k_dev && (rc = tkv_tensor_device(k, n, fn, "k", &kd)) != TKV_OK) ||
        (v_dev && (rc = tkv_tensor_device(v, n, fn, "v", &vd)) != TKV_OK))
        return rc;
    const float *kf = k_dev ? NULL : k->data, *vf = v_dev ? NULL : v->data;
    const int k_widen = !k_dev && k->elem != TKV_ELEM_F32, v_widen = !v_dev && v->elem != TKV_ELEM_F32;
    size_t need = (k_widen ? n : 0) + (v_widen ? n : 0);
    if (need) {
        float *buf = tkv_tensor_scratch(c, need, fn);
        if (!buf)
            return TKV_ENOMEM;
        if (k_widen) {
            tkv_tensor_widen(buf, k->data, k->elem, n);
            kf = buf;
            buf += n;
        }
        if (v_widen) {
            tkv_tensor_widen(buf, v->data, v->elem, n);
            vf = buf;
        }
    }
    return cache_append(c, seq, layer, n_tokens, kf, vf, k_dev ? &kd : NULL, v_dev ? &vd : NULL);
}

int tkv_cache_append_tensors(tkv_cache *c, uint32_t seq, uint32_t layer, uint32_t n_tokens, const struct tkv_tensor *k,
                             const struct tkv_tensor *v)
{
    if (!c)
        return tkv_error(TKV_EINVAL, "tkv_cache_append_tensors: cache is NULL");
    TKV_GUARDED(c->ctx, "tkv_cache_append_tensors", append_tensors(c, seq, layer, n_tokens, k, v));
}

static int attention_tensors(tkv_cache *c, uint32_t layer, uint32_t n_seqs, const uint32_t *seq_ids,
                             const uint32_t *n_q, uint32_t n_q_heads, const struct tkv_tensor *q,
                             const struct tkv_tensor *out, const struct tkv_attention_options *opts)
{
    static const char fn[] = "tkv_attention_tensors";
    int rc;
    if ((rc = tkv_tensor_check(c, q, fn, "q")) != TKV_OK || (rc = tkv_tensor_check(c, out, fn, "out")) != TKV_OK)
        return rc;
    const int q_dev = tkv_tensor_on_device(q), out_dev = tkv_tensor_on_device(out);
    if (!q_dev && !out_dev && q->elem == TKV_ELEM_F32 && out->elem == TKV_ELEM_F32)
        return attention(c, layer, n_seqs, seq_ids, n_q, 0, n_q_heads, q->data, out->data, opts, NULL, NULL);
    /* the sizes of the copies and the device ranges; attention() checks the rest */
    if (!seq_ids)
        return tkv_error(TKV_EINVAL, "%s: seq_ids is NULL", fn);
    if (n_seqs == 0 || n_seqs > c->n_seqs)
        return tkv_error(TKV_EINVAL, "%s: n_seqs %u must be 1..%u", fn, n_seqs, c->n_seqs);
    if (n_q_heads == 0 || n_q_heads % c->n_kv_heads)
        return tkv_error(TKV_EINVAL, "%s: n_q_heads %u must be a positive multiple of n_kv_heads %u", fn, n_q_heads,
                         c->n_kv_heads);
    if (layer >= c->n_layers)
        return tkv_error(TKV_ERANGE, "%s: layer %u out of range (cache has %u layers)", fn, layer, c->n_layers);
    /* q is read only for a call whose rows exist: its size follows from them */
    uint64_t rows = 0;
    for (uint32_t s = 0; s < n_seqs; s++) {
        uint32_t id = seq_ids[s];
        if (id >= c->n_seqs)
            return tkv_error(TKV_ERANGE, "%s: seq_ids[%u] = %u out of range (ids 0..%u)", fn, s, id, c->n_seqs - 1);
        if (n_q[s] == 0 || c->layers[layer].len[id] < n_q[s])
            return tkv_error(n_q[s] ? TKV_ERANGE : TKV_EINVAL,
                             "%s: sequence %u holds %u tokens in layer %u, fewer than n_q = %u", fn, id,
                             c->layers[layer].len[id], layer, n_q[s]);
        rows += n_q[s];
    }
    size_t n = (size_t)rows * n_q_heads * c->head_dim;
    struct tkv_device_tensor qd, od;
    if ((q_dev && (rc = tkv_tensor_device(q, n, fn, "q", &qd)) != TKV_OK) ||
        (out_dev && (rc = tkv_tensor_device(out, n, fn, "out", &od)) != TKV_OK))
        return rc;
    const int q_widen = !q_dev && q->elem != TKV_ELEM_F32, out_narrow = !out_dev && out->elem != TKV_ELEM_F32;
    size_t need = (q_widen ? n : 0) + (out_narrow ? n : 0);
    float *buf = need ? tkv_tensor_scratch(c, need, fn) : NULL;
    if (need && !buf)
        return TKV_ENOMEM;
    const float *qf = q_dev ? NULL : q->data;
    float *of = out_dev ? NULL : out->data;
    if (q_widen) {
        tkv_tensor_widen(buf, q->data, q->elem, n);
        qf = buf;
        buf += n;
    }
    if (out_narrow)
        of = buf;
    if ((rc = attention(c, layer, n_seqs, seq_ids, n_q, 0, n_q_heads, qf, of, opts, q_dev ? &qd : NULL,
                        out_dev ? &od : NULL)) != TKV_OK)
        return rc;
    if (out_narrow)
        tkv_tensor_narrow(out->data, of, out->elem, n);
    return TKV_OK;
}

int tkv_attention_tensors(tkv_cache *c, uint32_t layer, uint32_t n_seqs, const uint32_t *seq_ids, const uint32_t *n_q,
                          uint32_t n_q_heads, const struct tkv_tensor *q, const struct tkv_tensor *out,
                          const struct tkv_attention_options *opts)
{
    if (!c)
        return tkv_error(TKV_EINVAL, "tkv_attention_tensors: cache is NULL");
    if (!n_q)
        return tkv_error(TKV_EINVAL, "tkv_attention_tensors: n_q is NULL");
    TKV_GUARDED(c->ctx, "tkv_attention_tensors",
                attention_tensors(c, layer, n_seqs, seq_ids, n_q, n_q_heads, q, out, opts));
}

/* ---- a decode step: the append and the attention of its tokens ---- */

/* k, v, q, out as cache_append and attention take them. Nothing changes on
 * a failure: the length moves only when both parts are done (rows written
 * past it are invisible), and the blocks taken for the new tokens go back. */
static int append_attention(tkv_cache *c, uint32_t seq, uint32_t layer, uint32_t n_tokens, const float *k,
                            const float *v, const struct tkv_device_tensor *kd, const struct tkv_device_tensor *vd,
                            uint32_t n_q_heads, const float *q, float *out, const struct tkv_attention_options *opts,
                            const struct tkv_device_tensor *qd, const struct tkv_device_tensor *od)
{
    static const char fn[] = "tkv_cache_append_attention";
    int rc = append_check(c, fn, seq, layer, n_tokens, k ? (const void *)k : kd, v ? (const void *)v : vd);
    if (rc != TKV_OK)
        return rc;
    struct tkv_layer *L = &c->layers[layer];
    const uint32_t len = L->len[seq];
    uint32_t added;
    /* everything the attention's checks can refuse, before a block is
     * taken or copied (attention_args checks it again with the new length) */
    struct tkv_attention_options o;
    float scale;
    const uint32_t max_q = c->ctx->device.caps->max_q_per_seq;
    if ((rc = attention_options(c, fn, opts, n_q_heads, od, &o, &scale)) != TKV_OK)
        return rc;
    if ((!q && !qd) || (!out && !od))
        return tkv_error(TKV_EINVAL, "%s: %s is NULL", fn, !q && !qd ? "q" : "out");
    if (max_q && n_tokens > max_q)
        return tkv_error(TKV_EUNSUPPORTED, "%s: %u tokens, backend %s takes at most %u query tokens a sequence", fn,
                         n_tokens, c->ctx->device.mod->ops.name, max_q);
    if ((rc = grow_scratch(c, 1, tkv_blocks_for(c, len + n_tokens))) != TKV_OK)
        return rc;
    if ((rc = prepare_blocks(c, seq, len, n_tokens, &added)) != TKV_OK) {
        tkv_error_prefix("%s(layer %u, sequence %u)", fn, layer, seq);
        return rc;
    }
    L->len[seq] = len + n_tokens; /* the attention's view: the new tokens are its last */
    struct tkv_attention_args a;
    struct attn_out r;
    uint64_t bad_k = 0, bad_v = 0;
    rc = attention_args(c, fn, layer, 1, &seq, NULL, n_tokens, n_q_heads, q, out, opts, qd, od, &a, &r);
    if (rc == TKV_OK) {
        struct tkv_append_args ka = append_args(c, &L->k, seq, len, n_tokens, k, kd, &bad_k),
                               va = append_args(c, &L->v, seq, len, n_tokens, v, vd, &bad_v);
        rc = tkv_dev_append_attention(&c->ctx->device, &L->k.buf, &ka, &L->v.buf, &va, &a);
    }
    if (rc != TKV_OK) {
        L->len[seq] = len;
        drop_added(c, seq, added);
        tkv_error_prefix("%s(layer %u, sequence %u)", fn, layer, seq);
        return rc;
    }
    attention_done(&r);
    appended(c, seq, layer, (uint64_t)n_tokens * c->n_kv_heads, k, v, kd, vd, bad_k + bad_v);
    return TKV_OK;
}

/* Whether tensor o (no bytes) and tensor t (nt bytes) share bytes: the same
 * host bytes, or the same device buffer at overlapping offsets (a buffer
 * reached through two handles, such as an OpenCL sub-buffer, is not seen). */
static int tensors_overlap(const struct tkv_tensor *o, uint64_t no, const struct tkv_tensor *t, uint64_t nt)
{
    if (o->memory != t->memory)
        return 0;
    uint64_t a, b;
    if (tkv_tensor_on_device(o)) {
        if (o->handle != t->handle)
            return 0;
        a = o->offset;
        b = t->offset;
    } else {
        a = (uint64_t)(uintptr_t)o->data;
        b = (uint64_t)(uintptr_t)t->data;
    }
    return a < b + nt && b < a + no;
}

static int append_attention_tensors(tkv_cache *c, uint32_t seq, uint32_t layer, uint32_t n_tokens,
                                    const struct tkv_tensor *k, const struct tkv_tensor *v, uint32_t n_q_heads,
                                    const struct tkv_tensor *q, const struct tkv_tensor *out,
                                    const struct tkv_attention_options *opts)
{
    static const char fn[] = "tkv_cache_append_attention";
    int rc;
    if ((rc = tkv_tensor_check(c, k, fn, "k")) != TKV_OK || (rc = tkv_tensor_check(c, v, fn, "v")) != TKV_OK ||
        (rc = tkv_tensor_check(c, q, fn, "q")) != TKV_OK || (rc = tkv_tensor_check(c, out, fn, "out")) != TKV_OK)
        return rc;
    /* before sizing anything by n_tokens and n_q_heads */
    if ((rc = append_check(c, fn, seq, layer, n_tokens, k, v)) != TKV_OK)
        return rc;
    if (n_q_heads == 0 || n_q_heads % c->n_kv_heads)
        return tkv_error(TKV_EINVAL, "%s: n_q_heads %u must be a positive multiple of n_kv_heads %u", fn, n_q_heads,
                         c->n_kv_heads);
    if ((uint64_t)n_tokens * n_q_heads > UINT32_MAX)
        return tkv_error(TKV_ERANGE, "%s: %u tokens x %u query heads are too many rows", fn, n_tokens, n_q_heads);
    const size_t n_kv = (size_t)n_tokens * c->n_kv_heads * c->head_dim, n_q = (size_t)n_tokens * n_q_heads * c->head_dim;
    const struct tkv_tensor *t[4] = { k, v, q, out };
    static const char *const name[4] = { "k", "v", "q", "out" };
    struct tkv_device_tensor dev[4];
    const void *host[4];
    size_t need = 0;
    for (int i = 0; i < 4; i++) {
        const size_t n = i < 2 ? n_kv : n_q;
        if (tkv_tensor_on_device(t[i])) {
            if ((rc = tkv_tensor_device(t[i], n, fn, name[i], &dev[i])) != TKV_OK)
                return rc;
        } else if (t[i]->elem != TKV_ELEM_F32) {
            need += n;
        }
        host[i] = tkv_tensor_on_device(t[i]) ? NULL : t[i]->data;
    }
    /* out must not share bytes with k, v or q: a fused step (ABI 2.7) reads
     * the new rows and queries while other work-groups write outputs */
    for (int i = 0; i < 3; i++)
        if (tensors_overlap(out, (uint64_t)n_q * tkv_elem_size(out->elem), t[i],
                            (uint64_t)(i < 2 ? n_kv : n_q) * tkv_elem_size(t[i]->elem)))
            return tkv_error(TKV_EINVAL, "%s: out overlaps %s (it must not share bytes with k, v or q)", fn, name[i]);
    /* host tensors of other element types: widened (k, v, q) into, or
     * narrowed (out) from, the cache's conversion buffer */
    float *buf = need ? tkv_tensor_scratch(c, need, fn) : NULL;
    if (need && !buf)
        return TKV_ENOMEM;
    for (int i = 0; i < 4; i++) {
        if (!host[i] || t[i]->elem == TKV_ELEM_F32)
            continue;
        const size_t n = i < 2 ? n_kv : n_q;
        if (i < 3)
            tkv_tensor_widen(buf, t[i]->data, t[i]->elem, n);
        host[i] = buf;
        buf += n;
    }
    if ((rc = append_attention(c, seq, layer, n_tokens, host[0], host[1], host[0] ? NULL : &dev[0],
                               host[1] ? NULL : &dev[1], n_q_heads, host[2], (float *)host[3],
                               opts, host[2] ? NULL : &dev[2], host[3] ? NULL : &dev[3])) != TKV_OK)
        return rc;
    if (host[3] && out->elem != TKV_ELEM_F32)
        tkv_tensor_narrow(out->data, host[3], out->elem, n_q);
    return TKV_OK;
}

int tkv_cache_append_attention(tkv_cache *c, uint32_t seq, uint32_t layer, uint32_t n_tokens,
                               const struct tkv_tensor *k, const struct tkv_tensor *v, uint32_t n_q_heads,
                               const struct tkv_tensor *q, const struct tkv_tensor *out,
                               const struct tkv_attention_options *opts)
{
    if (!c)
        return tkv_error(TKV_EINVAL, "tkv_cache_append_attention: cache is NULL");
    TKV_GUARDED(c->ctx, "tkv_cache_append_attention",
                append_attention_tensors(c, seq, layer, n_tokens, k, v, n_q_heads, q, out, opts));
}

static int cache_length(const tkv_cache *c, uint32_t seq, uint32_t layer, uint32_t *n_tokens)
{
    int rc = check_seq_layer(c, "tkv_cache_length", seq, layer);
    if (rc != TKV_OK)
        return rc;
    if (!n_tokens)
        return tkv_error(TKV_EINVAL, "tkv_cache_length: n_tokens is NULL");
    *n_tokens = c->layers[layer].len[seq];
    return TKV_OK;
}

int tkv_cache_length(const tkv_cache *c, uint32_t seq, uint32_t layer, uint32_t *n_tokens)
{
    if (!c)
        return tkv_error(TKV_EINVAL, "tkv_cache_length: cache is NULL");
    TKV_GUARDED(c->ctx, "tkv_cache_length", cache_length(c, seq, layer, n_tokens));
}

static int cache_bytes(const tkv_cache *c, struct tkv_cache_bytes *b)
{
    memset(b, 0, sizeof *b);
    for (uint32_t l = 0; l < c->n_layers; l++) {
        const struct tkv_layer *L = &c->layers[l];
        uint64_t tokens = 0;
        for (uint32_t s = 0; s < c->n_seqs; s++)
            tokens += L->len[s];
        uint64_t rows = tokens * c->n_kv_heads;
        b->used += rows * (L->k.pool.row_bytes + L->v.pool.row_bytes);
        b->capacity += (uint64_t)L->k.cap_blocks * L->k.pool.block_stride +
                       (uint64_t)L->v.cap_blocks * L->v.pool.block_stride;
        b->blocks_bytes += (uint64_t)c->blocks_used * (L->k.pool.block_stride + L->v.pool.block_stride);
        b->limit += (uint64_t)c->pool_max_blocks * (L->k.pool.block_stride + L->v.pool.block_stride);
        b->used_f16 += rows * 2 * tkv_row_bytes(TKV_TYPE_F16, c->head_dim);
        b->used_f32 += rows * 2 * tkv_row_bytes(TKV_TYPE_F32, c->head_dim);
    }
    b->blocks_used = c->blocks_used;
    b->blocks_allocated = c->pool_blocks;
    b->blocks_max = c->pool_max_blocks;
    b->block_tokens = c->block_tokens;
    return TKV_OK;
}

int tkv_cache_bytes(const tkv_cache *c, struct tkv_cache_bytes *b)
{
    if (!c || !b)
        return tkv_error(TKV_EINVAL, "tkv_cache_bytes: NULL argument");
    TKV_GUARDED(c->ctx, "tkv_cache_bytes", cache_bytes(c, b));
}

int tkv_cache_stats(const tkv_cache *c, struct tkv_cache_stats *st)
{
    if (!c || !st)
        return tkv_error(TKV_EINVAL, "tkv_cache_stats: NULL argument");
    if (st->struct_size < sizeof *st)
        return tkv_error(TKV_EINVAL, "tkv_cache_stats: struct_size %u < %zu", st->struct_size, sizeof *st);
    /* counters only: read without the guard, as tkv_cache_get_shape */
    *st = c->stats;
    st->struct_size = sizeof *st;
    return TKV_OK;
}

int tkv_cache_get_shape(const tkv_cache *c, struct tkv_cache_shape *s)
{
    if (!c || !s)
        return tkv_error(TKV_EINVAL, "tkv_cache_get_shape: NULL argument");
    /* immutable after creation: no guard needed */
    *s = (struct tkv_cache_shape){
        .n_layers = c->n_layers, .n_kv_heads = c->n_kv_heads, .head_dim = c->head_dim,
        .capacity = c->capacity, .n_seqs = c->n_seqs, .rotation = c->rotation, .scale_mode = c->scale_mode,
        .block_tokens = c->block_tokens,
    };
    return TKV_OK;
}

int tkv_cache_layer_types(const tkv_cache *c, uint32_t layer, uint32_t *k_type, uint32_t *v_type)
{
    if (!c)
        return tkv_error(TKV_EINVAL, "tkv_cache_layer_types: cache is NULL");
    int rc = check_seq_layer(c, "tkv_cache_layer_types", 0, layer);
    if (rc != TKV_OK)
        return rc;
    if (k_type)
        *k_type = c->layers[layer].k.pool.fmt.type;
    if (v_type)
        *v_type = c->layers[layer].v.pool.fmt.type;
    return TKV_OK;
}

static int cache_dequantize(const tkv_cache *c, uint32_t seq, uint32_t layer, int which, uint32_t first,
                            uint32_t n_tokens, float *dst)
{
    int rc = check_seq_layer(c, "tkv_cache_dequantize", seq, layer);
    if (rc != TKV_OK)
        return rc;
    if (which != 0 && which != 1)
        return tkv_error(TKV_EINVAL, "tkv_cache_dequantize: which = %d, expected 0 (keys) or 1 (values)", which);
    if (!dst || n_tokens == 0)
        return tkv_error(TKV_EINVAL, "tkv_cache_dequantize: %s", !dst ? "dst is NULL" : "n_tokens is 0");
    const struct tkv_layer *L = &c->layers[layer];
    if (first > L->len[seq] || n_tokens > L->len[seq] - first)
        return tkv_error(TKV_ERANGE, "tkv_cache_dequantize: tokens %u..%u requested, sequence %u holds %u", first,
                         first + n_tokens - 1, seq, L->len[seq]);
    const struct tkv_pool_store *s = which ? &L->v : &L->k;
    struct tkv_dequant_args a = {
        .n_tokens = n_tokens, .n_heads = c->n_kv_heads, .first_pos = first, .pool = s->pool,
        .blocks = c->seqs[seq].blocks, .n_blocks = c->seqs[seq].n_blocks, .dst = dst,
    };
    return tkv_dev_dequantize(&c->ctx->device, &s->buf, &a);
}

int tkv_cache_dequantize(const tkv_cache *c, uint32_t seq, uint32_t layer, int which, uint32_t first,
                         uint32_t n_tokens, float *dst)
{
    if (!c)
        return tkv_error(TKV_EINVAL, "tkv_cache_dequantize: cache is NULL");
    TKV_GUARDED(c->ctx, "tkv_cache_dequantize", cache_dequantize(c, seq, layer, which, first, n_tokens, dst));
}

/* Rows about to be written from outside (a cache file, a sequence image):
 * the outlier indices of outlier-split types are what every backend's
 * kernels index queries and accumulators with, so they must be what a
 * quantizer writes - ascending and below head_dim - or the rows are
 * refused before they reach the pool. Other stored fields only give wrong
 * numbers, never an access out of bounds (turbo indices are masked to
 * their bits). */
static int check_rows(const struct tkv_pool *p, const uint8_t *rows, uint32_t n)
{
    if (!tkv_type_is_outlier(p->fmt.type))
        return TKV_OK;
    const uint32_t hd = p->fmt.head_dim, n_o = tkv_outlier_count(hd), ib = tkv_outlier_index_bytes(hd);
    const uint32_t at = p->row_bytes - n_o * (ib + 2u);
    for (uint32_t r = 0; r < n; r++) {
        const uint8_t *idx = rows + (size_t)r * p->row_bytes + at;
        int64_t prev = -1;
        for (uint32_t o = 0; o < n_o; o++) {
            const uint32_t i = ib == 1 ? idx[o] : (uint32_t)idx[2u * o] | (uint32_t)idx[2u * o + 1u] << 8;
            if (i >= hd || (int64_t)i <= prev)
                return tkv_error(TKV_EFORMAT,
                                 "a %s row holds outlier index %u after %lld (head_dim %u: %u indices, ascending, "
                                 "below it): not a row turbokv wrote",
                                 tkv_type_name(p->fmt.type), i, (long long)prev, hd, n_o);
            prev = i;
        }
    }
    return TKV_OK;
}

int tkv_store_rows(tkv_cache *c, struct tkv_pool_store *s, const uint32_t *blocks, uint32_t len, int write,
                   tkv_rows_fn fn, void *user, uint8_t *staging, size_t staging_bytes)
{
    const uint32_t B = c->block_tokens, rb = s->pool.row_bytes;
    const uint32_t per_chunk = (uint32_t)(staging_bytes / rb);
    for (uint32_t h = 0; h < c->n_kv_heads; h++)
        for (uint32_t t = 0; t < len;) {
            /* rows t .. t + n - 1 lie contiguous in one block */
            uint32_t in_block = B - t % B, n = len - t;
            n = n < in_block ? n : in_block;
            n = n < per_chunk ? n : per_chunk;
            uint64_t off = (uint64_t)blocks[t / B] * s->pool.block_stride + h * s->pool.head_stride +
                           (uint64_t)(t % B) * rb;
            size_t bytes = (size_t)n * rb;
            int rc;
            if (write) {
                if ((rc = fn(user, staging, bytes)) != TKV_OK || (rc = check_rows(&s->pool, staging, n)) != TKV_OK ||
                    (rc = tkv_dev_write(&c->ctx->device, &s->buf, off, staging, bytes)) != TKV_OK)
                    return rc;
            } else if ((rc = tkv_dev_read(&c->ctx->device, &s->buf, off, staging, bytes)) != TKV_OK ||
                       (rc = fn(user, staging, bytes)) != TKV_OK)
                return rc;
            t += n;
        }
    return TKV_OK;
}
