/*
 * The cache's bookkeeping, shared by cache.c and persist.c.
 *
 * Device layout: per layer, one K and one V buffer, each
 *   [n_seqs][n_kv_heads][capacity] rows of tkv_row_bytes(type, head_dim);
 * the rows of one head of one sequence are contiguous, so decode attention
 * streams them in order. Paged layouts arrive with a later ABI minor.
 */
#ifndef TKV_CORE_CACHE_H
#define TKV_CORE_CACHE_H

#include "core.h"

struct tkv_layer_store {
    struct tkv_row_format fmt;
    uint32_t row_bytes;
    uint64_t head_stride; /* capacity * row_bytes */
    uint64_t seq_stride;  /* n_kv_heads * head_stride */
    void *buf;
};

struct tkv_layer {
    struct tkv_layer_store k, v;
    uint32_t *len; /* tokens stored, [n_seqs] */
};

struct tkv_cache {
    tkv_context *ctx;
    uint32_t n_layers, n_kv_heads, head_dim, capacity, n_seqs;
    uint32_t rotation, scale_mode;
    struct tkv_layer *layers;
    struct tkv_attn_seq *seq_scratch; /* [n_seqs], reused by every attention call */
};

/* Creates an empty cache with resolved per-layer types. */
int tkv_cache_new(tkv_context *ctx, uint32_t n_layers, uint32_t n_kv_heads, uint32_t head_dim,
                  uint32_t capacity, uint32_t n_seqs, const uint32_t *k_types, const uint32_t *v_types,
                  uint32_t rotation, uint32_t scale_mode, tkv_cache **out);

/* Swaps the contents (buffers, lengths) of two caches of equal shape. */
void tkv_cache_swap(tkv_cache *a, tkv_cache *b);

#endif
