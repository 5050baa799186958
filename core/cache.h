/* SPDX-License-Identifier: MIT */
/*
 * The cache's bookkeeping, shared by cache.c, seq.c and persist.c.
 *
 * Device layout (docs/abi.md): per layer, one K pool buffer and one V pool
 * buffer of cap_blocks blocks; block b holds block_tokens rows of every kv
 * head: row r of head h at b * block_stride + h * head_stride + r * row_bytes.
 * Each sequence has a block table shared by all layers (block ids are the
 * same in every layer's pools); token t of a sequence is row t % B of block
 * table[t / B]. Blocks carry a reference count: a block referenced by two
 * sequences (a shared prefix) is copied before either writes into it.
 * A contiguous cache is one block per sequence (block_tokens = capacity).
 */
#ifndef TKV_CORE_CACHE_H
#define TKV_CORE_CACHE_H

#include "core.h"

struct tkv_pool_store {
    struct tkv_pool pool;      /* format, row_bytes, block_tokens, strides; pool.buf unused */
    struct tkv_dbuf buf;       /* the pool buffer (NULL handle while cap_blocks is 0) */
    uint32_t cap_blocks;       /* blocks the buffer holds */
};

struct tkv_layer {
    struct tkv_pool_store k, v;
    uint32_t *len; /* tokens stored, [n_seqs] */
};

struct tkv_seq_table {
    uint32_t *blocks;
    uint32_t n_blocks, cap;
};

struct tkv_cache {
    tkv_context *ctx;
    uint32_t n_layers, n_kv_heads, head_dim, capacity, n_seqs;
    uint32_t rotation, scale_mode;
    uint32_t block_tokens;
    uint32_t pool_blocks;      /* blocks every store holds (the smallest cap_blocks) */
    uint32_t pool_max_blocks;  /* the limit */
    uint32_t blocks_used;      /* blocks with a reference */
    uint32_t *refs;            /* [pool_blocks] references per block, 0 = free */
    uint32_t *free_ids;        /* stack of free block ids */
    uint32_t n_free;
    struct tkv_layer *layers;
    struct tkv_seq_table *seqs; /* [n_seqs] */
    /* scratch of attention calls, grown on demand */
    struct tkv_attn_seq *attn_seqs;
    uint32_t attn_seqs_cap;
    uint32_t *attn_blocks;
    uint64_t attn_blocks_cap;
    float *conv;           /* f16/bf16 <-> f32 of the typed-tensor calls */
    size_t conv_cap;       /* floats */
    struct tkv_cache_stats stats; /* values the format could not hold, since creation */
};

struct tkv_cache_geometry {
    uint32_t n_layers, n_kv_heads, head_dim, capacity, n_seqs;
    uint32_t rotation, scale_mode;
    uint32_t block_tokens;     /* 0: default */
    uint32_t pool_blocks;      /* reserved at creation */
    uint32_t pool_max_blocks;  /* 0: n_seqs full sequences (within the device's buffer limit) */
    uint32_t explicit_max;     /* 1 when the host set pool_max_blocks */
    uint64_t pool_max_bytes;   /* 0: no byte limit */
};

/* Creates an empty cache with resolved per-layer types, after checking them
 * against the device's capabilities. */
int tkv_cache_new(tkv_context *ctx, const struct tkv_cache_geometry *g, const uint32_t *k_types,
                  const uint32_t *v_types, tkv_cache **out);

/* Frees a cache (no context guard: for callers already inside one). */
void tkv_cache_free(tkv_cache *c);

/* Swaps the contents of two caches of one context. */
void tkv_cache_swap(tkv_cache *a, tkv_cache *b);

/* Blocks a sequence needs for n tokens. */
static inline uint32_t tkv_blocks_for(const tkv_cache *c, uint32_t n_tokens)
{
    return (uint32_t)(((uint64_t)n_tokens + c->block_tokens - 1) / c->block_tokens);
}

/* Most tokens a sequence holds in any layer. */
uint32_t tkv_seq_max_len(const tkv_cache *c, uint32_t seq);

/* Block bookkeeping (cache.c). take: n new blocks with one reference each,
 * growing the pool if needed (all or nothing). release: drops a reference. */
int tkv_blocks_take(tkv_cache *c, uint32_t n, uint32_t *ids);
void tkv_blocks_release(tkv_cache *c, const uint32_t *ids, uint32_t n);
/* Makes sure table t can hold n entries. */
int tkv_table_reserve(struct tkv_seq_table *t, uint32_t n);
/* Copies rows 0 .. rows - 1 of every head, in every layer's K and V, of
 * block src into block dst. */
int tkv_block_copy(tkv_cache *c, uint32_t dst, uint32_t src, uint32_t rows);

/* Reads (write = 0) or writes (write = 1) the packed rows of tokens
 * [0, len) of one sequence in one store, head after head, through a callback
 * on host staging memory: the logical order of cache files. Rows written
 * are checked first (outlier-split types: their outlier indices), EFORMAT
 * before any of a bad chunk reaches the pool. */
typedef int (*tkv_rows_fn)(void *user, uint8_t *data, size_t n);
int tkv_store_rows(tkv_cache *c, struct tkv_pool_store *s, const uint32_t *blocks, uint32_t len, int write,
                   tkv_rows_fn fn, void *user, uint8_t *staging, size_t staging_bytes);

#endif
