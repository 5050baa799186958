/*
 * The compressed K/V cache: creation, append, decode attention, readback.
 * Every public call checks all of its arguments before it touches the cache,
 * and a token count only advances after the plugin has written both K and V,
 * so a failed call leaves the cache exactly as it was.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "cache.h"
#include "error.h"
#include "policy.h"

#define MAX_KV_HEADS 1024u
#define MAX_SEQS 65536u

static void free_store(tkv_cache *c, struct tkv_layer_store *s)
{
    tkv_dev_free(&c->ctx->device, s->buf);
    s->buf = NULL;
}

void tkv_cache_destroy(tkv_cache *c)
{
    if (!c)
        return;
    for (uint32_t l = 0; c->layers && l < c->n_layers; l++) {
        free_store(c, &c->layers[l].k);
        free_store(c, &c->layers[l].v);
        free(c->layers[l].len);
    }
    free(c->layers);
    free(c->seq_scratch);
    free(c);
}

static int init_store(tkv_cache *c, struct tkv_layer_store *s, uint32_t type)
{
    s->fmt = (struct tkv_row_format){
        .type = type, .head_dim = c->head_dim, .rotation = c->rotation, .scale_mode = c->scale_mode,
    };
    s->row_bytes = tkv_row_bytes(type, c->head_dim);
    s->head_stride = (uint64_t)c->capacity * s->row_bytes;
    s->seq_stride = (uint64_t)c->n_kv_heads * s->head_stride;
    uint64_t bytes = (uint64_t)c->n_seqs * s->seq_stride;
    if (bytes / c->n_seqs != s->seq_stride)
        return tkv_error(TKV_ERANGE, "cache of %u sequences x %llu bytes overflows", c->n_seqs,
                         (unsigned long long)s->seq_stride);
    return tkv_dev_alloc(&c->ctx->device, bytes, &s->buf);
}

int tkv_cache_new(tkv_context *ctx, uint32_t n_layers, uint32_t n_kv_heads, uint32_t head_dim,
                  uint32_t capacity, uint32_t n_seqs, const uint32_t *k_types, const uint32_t *v_types,
                  uint32_t rotation, uint32_t scale_mode, tkv_cache **out)
{
    tkv_cache *c = calloc(1, sizeof *c);
    if (!c)
        return tkv_error(TKV_ENOMEM, "out of memory creating the cache");
    *c = (struct tkv_cache){
        .ctx = ctx, .n_layers = n_layers, .n_kv_heads = n_kv_heads, .head_dim = head_dim,
        .capacity = capacity, .n_seqs = n_seqs, .rotation = rotation, .scale_mode = scale_mode,
    };
    c->layers = calloc(n_layers, sizeof *c->layers);
    c->seq_scratch = calloc(n_seqs, sizeof *c->seq_scratch);
    if (!c->layers || !c->seq_scratch) {
        tkv_cache_destroy(c);
        return tkv_error(TKV_ENOMEM, "out of memory creating the cache");
    }
    for (uint32_t l = 0; l < n_layers; l++) {
        struct tkv_layer *L = &c->layers[l];
        int rc;
        if (!(L->len = calloc(n_seqs, sizeof *L->len))) {
            tkv_cache_destroy(c);
            return tkv_error(TKV_ENOMEM, "out of memory creating the cache");
        }
        if ((rc = init_store(c, &L->k, k_types[l])) != TKV_OK ||
            (rc = init_store(c, &L->v, v_types[l])) != TKV_OK) {
            tkv_error_prefix("allocating layer %u", l);
            tkv_cache_destroy(c);
            return rc;
        }
    }
    *out = c;
    return TKV_OK;
}

void tkv_cache_swap(tkv_cache *a, tkv_cache *b)
{
    struct tkv_layer *t = a->layers;
    a->layers = b->layers;
    b->layers = t;
}

int tkv_cache_create(tkv_context *ctx, const struct tkv_cache_params *p, tkv_cache **out)
{
    if (!ctx || !p || !out)
        return tkv_error(TKV_EINVAL, "tkv_cache_create: NULL argument");
    *out = NULL;
    if (p->struct_size < offsetof(struct tkv_cache_params, layer_k_types))
        return tkv_error(TKV_EINVAL, "tkv_cache_create: params->struct_size %u too small", p->struct_size);
    if (p->n_layers == 0 || p->n_layers > TKV_MAX_LAYERS)
        return tkv_error(TKV_EINVAL, "tkv_cache_create: n_layers %u must be 1..%u", p->n_layers, TKV_MAX_LAYERS);
    if (p->n_kv_heads == 0 || p->n_kv_heads > MAX_KV_HEADS)
        return tkv_error(TKV_EINVAL, "tkv_cache_create: n_kv_heads %u must be 1..%u", p->n_kv_heads, MAX_KV_HEADS);
    if (!tkv_head_dim_supported(p->head_dim))
        return tkv_error(TKV_EUNSUPPORTED, "tkv_cache_create: head_dim %u unsupported (multiples of %u up to %u)",
                         p->head_dim, TKV_GROUP_MIN, TKV_HEAD_DIM_MAX);
    if (p->capacity == 0)
        return tkv_error(TKV_EINVAL, "tkv_cache_create: capacity is 0");
    uint32_t n_seqs = p->n_seqs ? p->n_seqs : 1;
    if (n_seqs > MAX_SEQS)
        return tkv_error(TKV_EINVAL, "tkv_cache_create: n_seqs %u exceeds %u", n_seqs, MAX_SEQS);
    if (p->struct_size >= offsetof(struct tkv_cache_params, scale_mode) + sizeof p->scale_mode &&
        (p->rotation >= TKV_ROTATION_COUNT || p->scale_mode >= TKV_SCALE_COUNT))
        return tkv_error(TKV_EINVAL, "tkv_cache_create: rotation %u / scale_mode %u unknown", p->rotation,
                         p->scale_mode);
    if (p->n_q_heads && p->n_q_heads % p->n_kv_heads)
        return tkv_error(TKV_EINVAL, "tkv_cache_create: n_q_heads %u is not a multiple of n_kv_heads %u",
                         p->n_q_heads, p->n_kv_heads);

    struct tkv_cache_params full = { 0 };
    memcpy(&full, p, p->struct_size < sizeof full ? p->struct_size : sizeof full);
    uint32_t *types = malloc(2 * sizeof *types * p->n_layers);
    if (!types)
        return tkv_error(TKV_ENOMEM, "out of memory");
    int rc = tkv_policy_resolve(&ctx->cfg, &full, types, types + p->n_layers);
    if (rc == TKV_OK)
        rc = tkv_cache_new(ctx, p->n_layers, p->n_kv_heads, p->head_dim, p->capacity, n_seqs, types,
                           types + p->n_layers, full.rotation ? full.rotation : ctx->cfg.rotation,
                           full.scale_mode     ? full.scale_mode
                           : ctx->cfg.norm_correction ? TKV_SCALE_NORM_CORRECTED
                                                      : TKV_SCALE_NORM,
                           out);
    free(types);
    return rc;
}

static int check_seq_layer(const tkv_cache *c, const char *fn, uint32_t seq, uint32_t layer)
{
    if (!c)
        return tkv_error(TKV_EINVAL, "%s: cache is NULL", fn);
    if (layer >= c->n_layers)
        return tkv_error(TKV_ERANGE, "%s: layer %u out of range (cache has %u layers)", fn, layer, c->n_layers);
    if (seq >= c->n_seqs)
        return tkv_error(TKV_ERANGE, "%s: sequence %u out of range (cache has %u)", fn, seq, c->n_seqs);
    return TKV_OK;
}

static int append_store(tkv_cache *c, struct tkv_layer_store *s, uint32_t seq, uint32_t pos, uint32_t n,
                        const float *src)
{
    struct tkv_append_args a = {
        .struct_size = sizeof a, .n_tokens = n, .n_heads = c->n_kv_heads, .fmt = s->fmt, .src = src,
        .buf = s->buf, .offset = seq * s->seq_stride + (uint64_t)pos * s->row_bytes,
        .head_stride = s->head_stride,
    };
    return tkv_dev_append(&c->ctx->device, &a);
}

int tkv_cache_append(tkv_cache *c, uint32_t seq, uint32_t layer, uint32_t n_tokens, const float *k,
                     const float *v)
{
    int rc = check_seq_layer(c, "tkv_cache_append", seq, layer);
    if (rc != TKV_OK)
        return rc;
    if (!k || !v)
        return tkv_error(TKV_EINVAL, "tkv_cache_append: %s rows are NULL", !k ? "key" : "value");
    if (n_tokens == 0)
        return tkv_error(TKV_EINVAL, "tkv_cache_append: n_tokens is 0");
    struct tkv_layer *L = &c->layers[layer];
    uint32_t len = L->len[seq];
    if (n_tokens > c->capacity - len)
        return tkv_error(TKV_ERANGE,
                         "tkv_cache_append: capacity exceeded: layer %u sequence %u holds %u of %u tokens, %u more "
                         "requested",
                         layer, seq, len, c->capacity, n_tokens);
    /* Rows past len are invisible, so a failure after K was written loses nothing. */
    if ((rc = append_store(c, &L->k, seq, len, n_tokens, k)) != TKV_OK ||
        (rc = append_store(c, &L->v, seq, len, n_tokens, v)) != TKV_OK) {
        tkv_error_prefix("tkv_cache_append(layer %u)", layer);
        return rc;
    }
    L->len[seq] = len + n_tokens;
    return TKV_OK;
}

int tkv_attention(tkv_cache *c, uint32_t layer, uint32_t n_seqs, const uint32_t *seq_ids, uint32_t n_q,
                  uint32_t n_q_heads, const float *q, float *out, struct tkv_attention_stats *stats)
{
    static const char fn[] = "tkv_attention";
    if (!c)
        return tkv_error(TKV_EINVAL, "%s: cache is NULL", fn);
    if (layer >= c->n_layers)
        return tkv_error(TKV_ERANGE, "%s: layer %u out of range (cache has %u layers)", fn, layer, c->n_layers);
    if (!seq_ids || !q || !out)
        return tkv_error(TKV_EINVAL, "%s: %s is NULL", fn, !seq_ids ? "seq_ids" : !q ? "q" : "out");
    if (n_seqs == 0 || n_seqs > c->n_seqs)
        return tkv_error(TKV_EINVAL, "%s: n_seqs %u must be 1..%u", fn, n_seqs, c->n_seqs);
    if (n_q == 0)
        return tkv_error(TKV_EINVAL, "%s: n_q is 0", fn);
    if (n_q_heads == 0 || n_q_heads % c->n_kv_heads)
        return tkv_error(TKV_EINVAL, "%s: n_q_heads %u must be a positive multiple of n_kv_heads %u", fn,
                         n_q_heads, c->n_kv_heads);
    struct tkv_layer *L = &c->layers[layer];
    for (uint32_t s = 0; s < n_seqs; s++) {
        uint32_t id = seq_ids[s];
        if (id >= c->n_seqs)
            return tkv_error(TKV_ERANGE, "%s: seq_ids[%u] = %u out of range (cache has %u)", fn, s, id, c->n_seqs);
        if (L->len[id] < n_q)
            return tkv_error(TKV_ERANGE, "%s: sequence %u holds %u tokens in layer %u, fewer than n_q = %u", fn, id,
                             L->len[id], layer, n_q);
        c->seq_scratch[s] = (struct tkv_attn_seq){
            .k_offset = id * L->k.seq_stride, .v_offset = id * L->v.seq_stride, .n_ctx = L->len[id],
        };
    }
    uint64_t total = 0, skipped = 0;
    struct tkv_attention_args a = {
        .struct_size = sizeof a, .n_seqs = n_seqs, .n_q = n_q, .n_q_heads = n_q_heads,
        .n_kv_heads = c->n_kv_heads, .k_fmt = L->k.fmt, .v_fmt = L->v.fmt, .k_buf = L->k.buf,
        .v_buf = L->v.buf, .k_head_stride = L->k.head_stride, .v_head_stride = L->v.head_stride,
        .seqs = c->seq_scratch, .q = q, .out = out, .scale = 1.0f / sqrtf((float)c->head_dim),
        .sparse_v_threshold = c->ctx->cfg.sparse_v ? c->ctx->cfg.sparse_v_threshold : 0.0f,
        .rows_total = &total, .rows_skipped = &skipped,
    };
    int rc = tkv_dev_attention(&c->ctx->device, &a);
    if (rc != TKV_OK)
        return rc;
    if (stats) {
        stats->rows_total = total;
        stats->rows_skipped = skipped;
    }
    return TKV_OK;
}

int tkv_cache_length(const tkv_cache *c, uint32_t seq, uint32_t layer, uint32_t *n_tokens)
{
    int rc = check_seq_layer(c, "tkv_cache_length", seq, layer);
    if (rc != TKV_OK)
        return rc;
    if (!n_tokens)
        return tkv_error(TKV_EINVAL, "tkv_cache_length: n_tokens is NULL");
    *n_tokens = c->layers[layer].len[seq];
    return TKV_OK;
}

int tkv_cache_clear(tkv_cache *c, uint32_t seq)
{
    int rc = check_seq_layer(c, "tkv_cache_clear", seq, 0);
    if (rc != TKV_OK)
        return rc;
    for (uint32_t l = 0; l < c->n_layers; l++)
        c->layers[l].len[seq] = 0;
    return TKV_OK;
}

int tkv_cache_bytes(const tkv_cache *c, struct tkv_cache_bytes *b)
{
    if (!c || !b)
        return tkv_error(TKV_EINVAL, "tkv_cache_bytes: NULL argument");
    memset(b, 0, sizeof *b);
    for (uint32_t l = 0; l < c->n_layers; l++) {
        const struct tkv_layer *L = &c->layers[l];
        uint64_t tokens = 0;
        for (uint32_t s = 0; s < c->n_seqs; s++)
            tokens += L->len[s];
        uint64_t rows = tokens * c->n_kv_heads;
        b->used += rows * (L->k.row_bytes + L->v.row_bytes);
        b->capacity += (uint64_t)c->n_seqs * (L->k.seq_stride + L->v.seq_stride);
        b->used_f16 += rows * 2 * tkv_row_bytes(TKV_TYPE_F16, c->head_dim);
        b->used_f32 += rows * 2 * tkv_row_bytes(TKV_TYPE_F32, c->head_dim);
    }
    return TKV_OK;
}

int tkv_cache_get_shape(const tkv_cache *c, struct tkv_cache_shape *s)
{
    if (!c || !s)
        return tkv_error(TKV_EINVAL, "tkv_cache_get_shape: NULL argument");
    *s = (struct tkv_cache_shape){
        .n_layers = c->n_layers, .n_kv_heads = c->n_kv_heads, .head_dim = c->head_dim,
        .capacity = c->capacity, .n_seqs = c->n_seqs, .rotation = c->rotation, .scale_mode = c->scale_mode,
    };
    return TKV_OK;
}

int tkv_cache_layer_types(const tkv_cache *c, uint32_t layer, uint32_t *k_type, uint32_t *v_type)
{
    int rc = check_seq_layer(c, "tkv_cache_layer_types", 0, layer);
    if (rc != TKV_OK)
        return rc;
    if (k_type)
        *k_type = c->layers[layer].k.fmt.type;
    if (v_type)
        *v_type = c->layers[layer].v.fmt.type;
    return TKV_OK;
}

int tkv_cache_dequantize(const tkv_cache *c, uint32_t seq, uint32_t layer, int which, uint32_t first,
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
    const struct tkv_layer_store *s = which ? &L->v : &L->k;
    float *rows = malloc((size_t)n_tokens * c->head_dim * sizeof *rows);
    if (!rows)
        return tkv_error(TKV_ENOMEM, "out of memory");
    for (uint32_t h = 0; h < c->n_kv_heads && rc == TKV_OK; h++) {
        struct tkv_dequant_args a = {
            .struct_size = sizeof a, .n_rows = n_tokens, .fmt = s->fmt, .buf = s->buf,
            .offset = seq * s->seq_stride + h * s->head_stride + (uint64_t)first * s->row_bytes, .dst = rows,
        };
        rc = tkv_dev_dequantize(&c->ctx->device, &a);
        for (uint32_t t = 0; rc == TKV_OK && t < n_tokens; t++)
            memcpy(dst + ((size_t)t * c->n_kv_heads + h) * c->head_dim, rows + (size_t)t * c->head_dim,
                   c->head_dim * sizeof *dst);
    }
    free(rows);
    return rc;
}
