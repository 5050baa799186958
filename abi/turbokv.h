/*
 * turbokv — host API.
 *
 * A host runtime (inference engine) opens a context, creates a compressed K/V
 * cache, appends the K and V rows of new tokens layer by layer, and runs decode
 * attention directly on the compressed cache. The cache lives in the memory
 * of the device the backend plugin drives; the host only ever passes host
 * arrays of floats in and out.
 *
 * Every function returns TKV_OK (0) or a negative enum tkv_status; the detail
 * of the last failure on the calling thread is tkv_last_error(). A failed
 * call changes nothing: the cache holds exactly what it held before.
 *
 * Threads: a context and its caches may be used from one thread at a time.
 */
#ifndef TURBOKV_H
#define TURBOKV_H

#include <stddef.h>
#include <stdint.h>

#include "turbokv_format.h"
#include "turbokv_status.h"

#ifdef __cplusplus
extern "C" {
#endif

#define TKV_VERSION_STRING "0.1.0"

/* Marks the exported functions (the library is built with hidden visibility). */
#if defined(__GNUC__)
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
 * the group's codebook (DESIGN.md 2.2); for a QJL type what its construction
 * reaches, sum (g/head_dim) D'_g (1/(g m_g^2) - 1), D'_g the optimum of its
 * (b-1)-bit stage and m_g = E|t| (core/quality.c). TKV_EINVAL for other
 * types or an unsupported head_dim. */
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
};

/* Reads the configuration (file, then TURBO_* environment), loads the
 * plugins, picks and opens the backend device. opts may be NULL. */
TKV_API int tkv_context_open(const struct tkv_context_options *opts, tkv_context **ctx);
TKV_API void tkv_context_close(tkv_context *ctx);

/* The backend and device in use. */
TKV_API const char *tkv_context_backend(const tkv_context *ctx);
TKV_API const char *tkv_context_device(const tkv_context *ctx);

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
    uint32_t capacity;      /* tokens per sequence */
    uint32_t n_seqs;        /* independent sequences (batched decode); 0 means 1 */
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
};

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

/* Decode attention for one layer over several sequences at once.
 * q: [n_seqs][n_q][n_q_heads][head_dim]; out: same shape. The n_q queries of
 * sequence seq_ids[s] are its last n_q stored tokens, causal among
 * themselves. n_q_heads must be a multiple of n_kv_heads. stats may be NULL. */
TKV_API int tkv_attention(tkv_cache *cache, uint32_t layer, uint32_t n_seqs, const uint32_t *seq_ids,
                  uint32_t n_q, uint32_t n_q_heads, const float *q, float *out,
                  struct tkv_attention_stats *stats);

/* Tokens stored for a sequence in a layer. */
TKV_API int tkv_cache_length(const tkv_cache *cache, uint32_t seq, uint32_t layer, uint32_t *n_tokens);
/* Forgets the tokens of a sequence (all layers). */
TKV_API int tkv_cache_clear(tkv_cache *cache, uint32_t seq);

struct tkv_cache_bytes {
    uint64_t used;          /* bytes of the rows stored now */
    uint64_t capacity;      /* bytes allocated for the full capacity */
    uint64_t used_f16;      /* what the stored rows would take in f16 */
    uint64_t used_f32;      /* ... and in f32 */
};
TKV_API int tkv_cache_bytes(const tkv_cache *cache, struct tkv_cache_bytes *bytes);

struct tkv_cache_shape {
    uint32_t n_layers, n_kv_heads, head_dim, capacity, n_seqs;
    uint32_t rotation, scale_mode; /* enum tkv_rotation, enum tkv_scale_mode */
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
