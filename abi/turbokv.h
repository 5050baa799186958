/* SPDX-License-Identifier: MIT */
/*
 * turbokv — host API.
 *
 * A host runtime (inference engine) opens a context, creates a compressed K/V
 * cache, appends the K and V rows of new tokens layer by layer, and runs decode
 * attention directly on the compressed cache. The cache lives in the memory
 * of the device the backend plugin drives; the host passes host arrays in
 * and out, or (0.5) its own device buffers on a context opened on its
 * device.
 *
 * Every function returns TKV_OK (0) or a negative enum tkv_status; the detail
 * of the last failure on the calling thread is tkv_last_error(). A failed
 * call changes nothing: the cache holds exactly what it held before.
 *
 * 0.5: a context may be opened on the host's own GPU device
 * (tkv_context_options.host_device, turbokv_device.h); then q, k, v and out
 * may be the host's device buffers, and calls on them are queued on the
 * host's queue without waiting (docs/api.md, "The host's own device").
 *
 * 0.6: on the host's Vulkan device, those calls may be recorded into a
 * command buffer the host passes (tkv_context_set_command_buffer), which
 * the host submits with its own work.
 *
 * Threads: a context and its caches may be used from one thread at a time.
 * A call that finds the context busy in another thread returns TKV_EBUSY
 * at once (it neither waits nor corrupts anything); separate contexts may
 * be used from separate threads freely.
 *
 * The cache is paged: a pool of blocks of block_tokens rows per kv head per
 * layer, taken on demand and shared between sequences by reference (see
 * struct tkv_cache_params and the sequence operations below). The guide is
 * docs/api.md; a complete engine loop is examples/engine.c.
 */
#ifndef TURBOKV_H
#define TURBOKV_H

#include <stddef.h>
#include <stdint.h>

#include "turbokv_caps.h"
#include "turbokv_device.h"
#include "turbokv_format.h"
#include "turbokv_status.h"

#ifdef __cplusplus
extern "C" {
#endif

#define TKV_VERSION_STRING "0.7.0"

/* Marks the exported functions (the library is built with hidden visibility).
 * With TKV_CDEF (declarations for a binding generator such as cffi:
 * `cc -E -P -DTKV_CDEF` with empty <stdint.h> and <stddef.h>) it is empty,
 * and the inline helpers of turbokv_format.h are left out. */
#if defined(__GNUC__) && !defined(TKV_CDEF)
#define TKV_API __attribute__((visibility("default")))
#else
#define TKV_API
#endif

typedef struct tkv_context tkv_context;
typedef struct tkv_cache tkv_cache;

/* --- errors and names */

/* Detail of the last failure on this thread ("" if none). */
TKV_API const char *tkv_last_error(void);
/* "TKV_EINVAL", ... */
TKV_API const char *tkv_status_name(int status);
/* "f32", "f16", "q8_0", "turbo2", "turbo3", "turbo4"; NULL if unknown. */
TKV_API const char *tkv_type_name(uint32_t type);
/* Parses a type name; TKV_EINVAL (with a message listing the names) if unknown. */
TKV_API int tkv_type_from_name(const char *name, uint32_t *type);
/* Bits per stored value of a type at a head_dim, scales included. */
TKV_API double tkv_type_bits_per_value(uint32_t type, uint32_t head_dim);
/* The expected per-vector MSE E||u - u_hat||^2 of a random unit vector u of
 * head_dim values stored in a turbo type with the norm as scale: for turbo2..4
 * the Lloyd-Max optimum sum over groups (g/head_dim) D_g, D_g the optimum of
 * the group's codebook (turbokv_format.h); for a QJL type what its construction
 * reaches, sum (g/head_dim) D'_g (1/(g m_g^2) - 1), D'_g the optimum of its
 * (b-1)-bit stage and m_g = E|t| (core/quality.c). TKV_EINVAL for other
 * types (the outlier-split types too: their error depends on the data's
 * largest values) or an unsupported head_dim. */
TKV_API int tkv_optimal_mse(uint32_t type, uint32_t head_dim, double *mse);

/* --- context */

struct tkv_context_options {
    uint32_t struct_size;     /* sizeof(struct tkv_context_options) */
    uint32_t ignore_env;      /* 1: do not read TURBO_* variables */
    const char *config_path;  /* YAML file; NULL: TURBO_CONFIG, else defaults */
    const char *plugin_path;  /* colon-separated directories searched first */
    const char *backend;      /* overrides config and env when not NULL */
    /* Called for every log line instead of writing it to stderr. */
    void (*log_fn)(void *user, int level, const char *message);
    void *log_user;
    /* --- 0.2 --- */
    /* Optional: the cache the host will create. backend auto then picks only
     * a device whose capabilities hold it (types, head_dim, rotation). */
    const struct tkv_cache_params *require;
    /* 1: load and probe every plugin found even when a backend is named
     * (for listings such as "turbokv info"); 0: a named backend loads only
     * its own module, turbokv-<name>.so. */
    uint32_t probe_all;
    uint32_t reserved;
    /* --- 0.5 --- */
    /* Optional: open on the host's own device (turbokv_device.h) instead of
     * one the plugin finds: the backend is the one the tag names (a
     * different `backend` above is TKV_EINVAL), the plugin must report
     * TKV_CAP_HOST_DEVICE (else TKV_EUNSUPPORTED), and the cache, its
     * commands and device tensors then live on that device. Read during
     * the call only; the plugin retains the handles it keeps. */
    const struct tkv_host_device *host_device;
};

/* Reads the configuration (file, then TURBO_* environment), loads the
 * plugins, picks and opens the backend device. opts may be NULL. */
TKV_API int tkv_context_open(const struct tkv_context_options *opts, tkv_context **ctx);
TKV_API void tkv_context_close(tkv_context *ctx);

/* 0.6: the host's command buffer. On a context opened on the host's Vulkan
 * device (TKV_CAP_COMMAND_BUFFER): command_buffer is a VkCommandBuffer in
 * the recording state, allocated from a pool of host_device->vulkan's
 * queue_family. Every later call on device tensors (tkv_cache_append_tensors
 * with k and v in device memory, tkv_attention_tensors with out in device
 * memory) records its commands into it, between barriers of its own, and
 * returns; the host ends and submits it to that queue itself (docs/api.md,
 * "The host's own device": the ordering rules, and that the host's bound
 * compute pipeline and push constants are disturbed). Calls that would
 * wait for the device (host outputs, host k/v rows, dequantize, sequence
 * images, files) return TKV_EBUSY while a command buffer is set. Another
 * command buffer replaces it; NULL returns to submitting each call on the
 * host's queue without a wait. TKV_EUNSUPPORTED on any other context. */
TKV_API int tkv_context_set_command_buffer(tkv_context *ctx, void *command_buffer);

/* The backend and device in use. */
TKV_API const char *tkv_context_backend(const tkv_context *ctx);
TKV_API const char *tkv_context_device(const tkv_context *ctx);
/* What the open device supports (turbokv_caps.h); caps->struct_size must be
 * set by the caller. */
TKV_API int tkv_context_caps(const tkv_context *ctx, struct tkv_device_caps *caps);

/* --- effective configuration, for display ("turbokv info") */

enum tkv_config_source { TKV_SOURCE_DEFAULT = 0, TKV_SOURCE_FILE = 1, TKV_SOURCE_ENV = 2, TKV_SOURCE_API = 3 };

struct tkv_config_entry {
    const char *key;     /* YAML key, e.g. "sparse_v_threshold" */
    const char *env;     /* the TURBO_* variable that overrides it, or NULL */
    char value[256];     /* the effective value, as text */
    uint32_t source;     /* enum tkv_config_source */
    char origin[256];    /* "default", "FILE:LINE", "TURBO_X" */
};

/* Number of configuration keys. */
TKV_API uint32_t tkv_config_count(const tkv_context *ctx);
TKV_API int tkv_config_get(const tkv_context *ctx, uint32_t i, struct tkv_config_entry *entry);

/* --- plugins, for display */

struct tkv_plugin_report {
    char path[1024];
    char name[64];       /* backend name, "" if it could not be read */
    char version[64];
    uint32_t abi_major, abi_minor;
    int status;          /* TKV_OK if accepted, else why it was refused */
    char message[512];   /* why refused, or "" */
    uint32_t n_devices;
    char devices[4][256]; /* "name (driver, score N)" of the first devices */
    int in_use;          /* 1 for the plugin the context opened */
};

TKV_API uint32_t tkv_plugin_count(const tkv_context *ctx);
TKV_API int tkv_plugin_get(const tkv_context *ctx, uint32_t i, struct tkv_plugin_report *report);

/* --- the cache */

#define TKV_TYPE_FROM_CONFIG 0xffffffffu

struct tkv_cache_params {
    uint32_t struct_size;   /* sizeof(struct tkv_cache_params) */
    uint32_t n_layers;
    uint32_t n_kv_heads;
    uint32_t head_dim;
    uint32_t capacity;      /* most tokens one sequence may hold */
    uint32_t n_seqs;        /* sequence ids are 0 .. n_seqs - 1 (a bound on ids,
                               nothing is reserved per id); 0 means 1 */
    uint32_t k_type;        /* enum tkv_type, or TKV_TYPE_FROM_CONFIG */
    uint32_t v_type;
    uint32_t n_q_heads;     /* query heads (for GQA-aware type choice); 0: unknown */
    uint32_t reserved;
    /* Optional per-layer types ([n_layers] each); override k_type/v_type. */
    const uint32_t *layer_k_types;
    const uint32_t *layer_v_types;
    /* Optional: enum tkv_rotation and enum tkv_scale_mode; 0 = as configured
     * (config keys rotation, norm_correction). */
    uint32_t rotation;
    uint32_t scale_mode;
    /* --- 0.2: the block pool --- */
    /* Rows per kv head in one block; 0: TKV_BLOCK_TOKENS_DEFAULT. A value
     * >= capacity gives one block per sequence (a contiguous cache). */
    uint32_t block_tokens;
    uint32_t pool_flags;    /* TKV_POOL_FIXED */
    /* Blocks reserved when the cache is created (0: none, the pool starts
     * empty and grows on demand). */
    uint32_t pool_blocks;
    /* Most blocks the pool may hold (0: enough for n_seqs full sequences).
     * An append that needs a block beyond it fails with TKV_ENOMEM and
     * changes nothing. */
    uint32_t pool_max_blocks;
    uint32_t reserved2;
    /* The limit in bytes of device memory, all layers, K and V together
     * (0: none); the smaller of the two limits applies. */
    uint64_t pool_max_bytes;
};

/* Rows per kv head per block when params.block_tokens is 0; chosen by
 * measurement (README, "Paged cache"). */
#define TKV_BLOCK_TOKENS_DEFAULT 256u
/* pool_flags: never grow past pool_blocks (pool_blocks becomes the limit). */
#define TKV_POOL_FIXED 1u

TKV_API int tkv_cache_create(tkv_context *ctx, const struct tkv_cache_params *params, tkv_cache **cache);
TKV_API void tkv_cache_destroy(tkv_cache *cache);

/* Quantizes and stores the K and V rows of n_tokens new tokens of one layer
 * of one sequence: k and v are [n_tokens][n_kv_heads][head_dim] floats. The
 * tokens go after those already stored in that layer. */
TKV_API int tkv_cache_append(tkv_cache *cache, uint32_t seq, uint32_t layer, uint32_t n_tokens,
                     const float *k, const float *v);

struct tkv_attention_stats {
    uint64_t rows_total;   /* V rows visible to the queries, summed over heads */
    uint64_t rows_skipped; /* V rows sparse-V skipped */
};

/* Options of one attention call (tkv_attention_ex). Zeroed members mean
 * the defaults. */
struct tkv_attention_options {
    uint32_t struct_size;  /* sizeof(struct tkv_attention_options) */
    uint32_t window;       /* sliding window: only the last window positions
                              (the query's own included) are visible; 0: all */
    float scale;           /* softmax scale; 0: 1/sqrt(head_dim) */
    float softcap;         /* logit soft-capping (Gemma 2): x = c tanh(x / c); 0: off */
    float *lse;            /* out, may be NULL: [n_q_total][n_q_heads]
                              natural-log sum of exp of the (scaled, capped)
                              scores of every visible row */
    struct tkv_attention_stats *stats; /* out, may be NULL */
    /* --- 0.3 --- */
    uint64_t *device_ns;   /* out, may be NULL: the call's time on the device
                              in ns from the device's own timestamps (GPU
                              plugins); 0 where the backend has no timer */
};

/* Decode attention for one layer over several sequences at once.
 * q: [n_seqs][n_q][n_q_heads][head_dim]; out: same shape. The n_q queries of
 * sequence seq_ids[s] are its last n_q stored tokens, causal among
 * themselves. n_q_heads must be a multiple of n_kv_heads. stats may be NULL. */
TKV_API int tkv_attention(tkv_cache *cache, uint32_t layer, uint32_t n_seqs, const uint32_t *seq_ids,
                  uint32_t n_q, uint32_t n_q_heads, const float *q, float *out,
                  struct tkv_attention_stats *stats);

/* Attention over sequences with different numbers of new query tokens
 * (decode and chunked prefill in one batch). n_q[s] >= 1 query tokens of
 * sequence seq_ids[s] are its last n_q[s] stored tokens, causal among
 * themselves; q and out are [n_q_total][n_q_heads][head_dim], the rows of
 * sequence 0 first, n_q_total = sum n_q[s]. GQA: query head h reads kv
 * head h / (n_q_heads / n_kv_heads). opts may be NULL. */
TKV_API int tkv_attention_ex(tkv_cache *cache, uint32_t layer, uint32_t n_seqs, const uint32_t *seq_ids,
                             const uint32_t *n_q, uint32_t n_q_heads, const float *q, float *out,
                             const struct tkv_attention_options *opts);

/* --- 0.4: typed tensors ------------------------------------------------------
 * Engines keep q, k and v in half precision. These calls take the host's
 * arrays in their own element type: the core widens f16 and bf16 to f32
 * exactly (every f16 and bf16 value is a float) before the backend sees
 * them, and rounds the f32 attention output to the requested type (to
 * nearest even; f16 overflow gives +-Inf). Stored bytes and attention are
 * therefore those of the f32 calls on the widened values, on every backend. */

/* Element types (enum tkv_elem) and memory kinds (enum tkv_memory) of a
 * tensor are in turbokv_device.h. */

/* An array the host passes: shape and order are those of the f32 calls
 * (k, v: [n_tokens][n_kv_heads][head_dim]; q, out:
 * [n_q_total][n_q_heads][head_dim]), densely packed, of one element type. */
struct tkv_tensor {
    uint32_t struct_size; /* sizeof(struct tkv_tensor) */
    uint32_t elem;        /* enum tkv_elem */
    uint32_t memory;      /* enum tkv_memory */
    uint32_t reserved;    /* 0 */
    void *data;           /* TKV_MEMORY_HOST: the first element; only read
                             for inputs. Device memory: NULL */
    /* --- 0.5: device memory (TKV_MEMORY_OPENCL, TKV_MEMORY_VULKAN), on a
     * context opened on the host's device (TKV_CAP_DEVICE_TENSORS) --- */
    uint64_t handle;      /* the buffer: (uint64_t)(uintptr_t) of the cl_mem,
                             or the VkBuffer's 64-bit value */
    uint64_t offset;      /* bytes from the buffer's start to the first
                             element; a multiple of the element's size */
    uint64_t size;        /* the buffer's size in bytes (CL_MEM_SIZE,
                             VkBufferCreateInfo.size): the tensor must lie
                             within it */
};

/* tkv_cache_append with k and v of any element type. A failure (a bad
 * tensor, no memory for the widened copy) changes nothing.
 * 0.5: k and v may be device tensors (each on its own): the rows are
 * quantized from the host's buffer on the device, queued behind the host's
 * earlier work and not waited for (docs/api.md, "The host's own device");
 * such rows are not counted in tkv_cache_stats (they are never on the
 * host). */
TKV_API int tkv_cache_append_tensors(tkv_cache *cache, uint32_t seq, uint32_t layer, uint32_t n_tokens,
                                     const struct tkv_tensor *k, const struct tkv_tensor *v);

/* tkv_attention_ex with q and out of any element type (out f32, f16 or
 * bf16; opts->lse stays f32).
 * 0.5: q and out may be device tensors. With out in device memory the call
 * is queued and returns without waiting: opts->lse and opts->device_ns
 * must then be NULL (TKV_EUNSUPPORTED: they would need a wait), and
 * stats->rows_skipped reads 0 (rows_total is counted as usual). */
TKV_API int tkv_attention_tensors(tkv_cache *cache, uint32_t layer, uint32_t n_seqs, const uint32_t *seq_ids,
                                  const uint32_t *n_q, uint32_t n_q_heads, const struct tkv_tensor *q,
                                  const struct tkv_tensor *out, const struct tkv_attention_options *opts);

/* 0.7: a decode step of one sequence in one call: tkv_cache_append_tensors
 * (cache, seq, layer, n_tokens, k, v), then tkv_attention_tensors(cache,
 * layer, 1, &seq, &n_tokens, n_q_heads, q, out, opts): the n_tokens new
 * tokens' queries attend over the sequence, themselves included (token i
 * sees positions up to its own). Same stored rows and outputs as the two
 * calls; a backend with the fused op (ABI 2.7: the OpenCL plugin's
 * tensor-core kernels, f32 device tensors k and v) quantizes the new rows
 * inside the attention's launch, one launch a layer instead of two. The
 * tensors' rules are those of the two calls (with out in device memory the
 * call is queued, not waited for); out must not overlap k, v or q. A
 * failure changes nothing: the sequence keeps its length and rows, and a
 * refused call takes or copies no block. */
TKV_API int tkv_cache_append_attention(tkv_cache *cache, uint32_t seq, uint32_t layer, uint32_t n_tokens,
                                       const struct tkv_tensor *k, const struct tkv_tensor *v,
                                       uint32_t n_q_heads, const struct tkv_tensor *q,
                                       const struct tkv_tensor *out,
                                       const struct tkv_attention_options *opts);

/* Tokens stored for a sequence in a layer. */
TKV_API int tkv_cache_length(const tkv_cache *cache, uint32_t seq, uint32_t layer, uint32_t *n_tokens);
/* Forgets the tokens of a sequence (all layers); = tkv_seq_remove. */
TKV_API int tkv_cache_clear(tkv_cache *cache, uint32_t seq);

/* --- sequence operations: bookkeeping on block tables, no row is
 * requantized; each is O(blocks) and all-or-nothing. */

/* Keeps the first n_tokens tokens of seq in every layer (a layer holding
 * fewer keeps what it has); blocks no sequence uses any more return to the
 * pool. */
TKV_API int tkv_seq_truncate(tkv_cache *cache, uint32_t seq, uint32_t n_tokens);
/* Makes dst hold the first n_tokens tokens of src (in a layer where src
 * holds fewer, what src holds); dst's previous tokens are dropped. Full
 * blocks are shared by reference; a partly filled last block is copied
 * (and any shared block is copied before it is written: copy-on-write).
 * dst == src is TKV_EINVAL. */
TKV_API int tkv_seq_copy(tkv_cache *cache, uint32_t src, uint32_t dst, uint32_t n_tokens);
/* Drops every token of seq. */
TKV_API int tkv_seq_remove(tkv_cache *cache, uint32_t seq);
/* Drops every sequence but seq. */
TKV_API int tkv_seq_keep(tkv_cache *cache, uint32_t seq);

/* One sequence's rows as a self-contained, checksummed, versioned image
 * (the cache file rules of tkv_cache_save). tkv_seq_state_size gives the
 * bytes tkv_seq_state_get writes. A restore replaces seq's tokens and
 * checks that the image matches the cache (shape, types, rotation, scale
 * mode, codebooks); on any failure seq keeps what it held. */
TKV_API int tkv_seq_state_size(const tkv_cache *cache, uint32_t seq, size_t *bytes);
TKV_API int tkv_seq_state_get(const tkv_cache *cache, uint32_t seq, void *dst, size_t size, size_t *written);
TKV_API int tkv_seq_state_set(tkv_cache *cache, uint32_t seq, const void *src, size_t size);
TKV_API int tkv_seq_save(const tkv_cache *cache, uint32_t seq, const char *path);
TKV_API int tkv_seq_restore(tkv_cache *cache, uint32_t seq, const char *path);

struct tkv_cache_bytes {
    uint64_t used;          /* bytes of the rows stored now */
    uint64_t capacity;      /* bytes of the pool's device buffers (what is allocated) */
    uint64_t used_f16;      /* what the stored rows would take in f16 */
    uint64_t used_f32;      /* ... and in f32 */
    /* --- 0.2 --- */
    uint64_t blocks_bytes;  /* bytes of the blocks in use by some sequence */
    uint64_t limit;         /* bytes of the pool at its limit */
    uint32_t blocks_used, blocks_allocated, blocks_max, block_tokens;
};
TKV_API int tkv_cache_bytes(const tkv_cache *cache, struct tkv_cache_bytes *bytes);

/* What the format could not hold, counted since the cache was created
 * (appends that succeeded; the values are stored as documented in
 * turbokv_format.h, and non-finite ones are logged at level info):
 *   nonfinite_values: NaN/Inf input values, stored as 0;
 *   saturated_rows:   rows with a scale beyond fp16 (a turbo group norm, a
 *                     q8_0 block's max|x| / 127, or an f16 value above
 *                     65504), stored clamped, with a large error. */
struct tkv_cache_stats {
    uint32_t struct_size;   /* sizeof(struct tkv_cache_stats) */
    uint32_t reserved;
    uint64_t nonfinite_values;
    uint64_t saturated_rows;
};
TKV_API int tkv_cache_stats(const tkv_cache *cache, struct tkv_cache_stats *stats);

struct tkv_cache_shape {
    uint32_t n_layers, n_kv_heads, head_dim, capacity, n_seqs;
    uint32_t rotation, scale_mode; /* enum tkv_rotation, enum tkv_scale_mode */
    uint32_t block_tokens;
};
TKV_API int tkv_cache_get_shape(const tkv_cache *cache, struct tkv_cache_shape *shape);

/* Types of a layer. */
TKV_API int tkv_cache_layer_types(const tkv_cache *cache, uint32_t layer, uint32_t *k_type, uint32_t *v_type);

/* Reads stored rows back as floats in the original domain:
 * dst [n_tokens][n_kv_heads][head_dim]; which: 0 keys, 1 values. */
TKV_API int tkv_cache_dequantize(const tkv_cache *cache, uint32_t seq, uint32_t layer, int which,
                         uint32_t first_token, uint32_t n_tokens, float *dst);

/* --- persistence: a versioned file with a checksum; see core/persist.c */

/* Writes atomically (a temporary file renamed over path). */
TKV_API int tkv_cache_save(const tkv_cache *cache, const char *path);
/* Creates a cache from a file on ctx's backend. */
TKV_API int tkv_cache_load(tkv_context *ctx, const char *path, tkv_cache **cache);
/* Replaces the contents of an existing cache with a file's. The file must
 * match the cache (shape, per-layer types, rotation, codebooks); on any
 * failure the cache keeps exactly what it held. */
TKV_API int tkv_cache_restore(tkv_cache *cache, const char *path);

#ifdef __cplusplus
}
#endif

#endif
