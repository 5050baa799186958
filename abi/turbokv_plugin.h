/*
 * turbokv plugin ABI — what a device plugin (cpu, vulkan, opencl, ...) exports
 * and what the core hands it. For plugin authors; hosts use turbokv.h.
 *
 * Self-contained: includes only abi/ headers, <stdint.h> and <stddef.h>.
 * A plugin links nothing of the core; everything it needs from the core comes
 * through struct tkv_services (log, error detail) and struct tkv_math (the
 * format's numeric tables).
 *
 * Versioning (after SQLite's sqlite3_vfs and the Vulkan loader-driver
 * interface):
 *   - A module exports exactly one symbol, TKV_PLUGIN_ENTRY_NAME, of type
 *     tkv_plugin_entry_fn. The core calls it with its own ABI version; it
 *     returns a pointer to a static const struct tkv_plugin, or NULL to
 *     refuse the core.
 *   - struct tkv_plugin begins with abi_major, abi_minor, struct_size. The
 *     core reads those three first and refuses a different major before
 *     calling anything else. It copies at most struct_size bytes into a
 *     zeroed local copy, so members an older plugin lacks read as NULL.
 *   - Members are only ever appended, under a comment naming the minor
 *     version that added them; required members are checked once, at load.
 *   - Argument structs passed to ops also begin with struct_size, so they may
 *     grow in later minor versions (paged caches will add block tables to
 *     struct tkv_attention_args) without breaking v1 plugins: a plugin reads
 *     only the members its own version knows.
 *
 * Conventions for every op:
 *   - returns TKV_OK or a negative enum tkv_status; on failure it calls
 *     svc->error() with the detail and leaves its outputs unspecified but its
 *     device state (buffers, other rows) untouched;
 *   - never aborts, never exits, never writes to stdout;
 *   - may be called from any host thread, but the core never calls two ops
 *     on the same device concurrently.
 */
#ifndef TURBOKV_PLUGIN_H
#define TURBOKV_PLUGIN_H

#include <stddef.h>
#include <stdint.h>

#include "turbokv_format.h"
#include "turbokv_status.h"

#define TKV_ABI_MAJOR 1u
#define TKV_ABI_MINOR 1u
#define TKV_PLUGIN_ENTRY_NAME "tkv_plugin_entry"

#ifdef __cplusplus
extern "C" {
#endif

enum tkv_log_level { TKV_LOG_ERROR = 0, TKV_LOG_WARN = 1, TKV_LOG_INFO = 2, TKV_LOG_DEBUG = 3 };

/* Handed by the core to the plugin's init(); valid until shutdown(). */
struct tkv_services {
    uint32_t struct_size;
    uint32_t core_abi_major, core_abi_minor;
    /* Logs a printf-style message through the host's log (stderr by
     * default), filtered by TURBO_LOG. */
    void (*log)(int level, const char *fmt, ...);
    /* Records the detail of a failure for the calling thread and returns
     * status, so that ops can write: return svc->error(TKV_EINVAL, "..."). */
    int (*error)(int status, const char *fmt, ...);
};

/* --- the format's numeric tables (computed by the core, see turbokv_format.h) */

struct tkv_codebook {
    uint32_t bits;            /* 2, 3 or 4 */
    uint32_t n_levels;        /* 1 << bits */
    const float *centroids;   /* n_levels, ascending, c[i] = -c[n-1-i] */
    const float *boundaries;  /* n_levels - 1 midpoints between centroids */
    const float *centroid_sq; /* n_levels squares c[i]^2 (norm correction) */
    double mse;               /* expected per-vector MSE of a unit vector */
};

struct tkv_group_tables {
    uint32_t group;           /* 8, 16, 32, 64 or 128 */
    const float *sign1;       /* D1: group values of +1.0f / -1.0f */
    const float *sign2;       /* D2 */
    const float *dense;       /* group x group row-major orthogonal matrix Q
                                 (TKV_ROTATION_DENSE: y = Q u) */
    struct tkv_codebook codebook[TKV_N_CODEBOOK_BITS]; /* [bits - 2] */
};

/* The sketch of the QJL key types (turbokv_format.h, "QJL key types"). */
struct tkv_qjl_tables {
    const float *rows; /* g x g row-major orthogonal S */
    float scale;       /* 1 / (g E|t|_g): residual = scale * gamma * S^T z */
};

struct tkv_math {
    uint32_t struct_size;
    uint64_t rotation_seed;
    uint64_t tables_id; /* FNV-1a hash over every table below: the codebook identity */
    struct tkv_group_tables groups[TKV_N_GROUP_SIZES]; /* [tkv_group_index(g)] */

    /* --- ABI 1.1 --- (read only when struct_size covers them) */
    struct tkv_qjl_tables qjl[TKV_N_GROUP_SIZES]; /* [tkv_group_index(g)] */
};

/* --- devices */

enum tkv_device_kind {
    TKV_DEVICE_CPU = 0,
    TKV_DEVICE_GPU_DISCRETE = 1,
    TKV_DEVICE_GPU_INTEGRATED = 2,
    TKV_DEVICE_SOFTWARE = 3, /* a CPU emulating a GPU API (lavapipe, PoCL) */
};

/* Frozen for ABI 1.x: probe() fills an array of these, so its size may never
 * change; the reserved words are zero. */
struct tkv_device_info {
    uint32_t struct_size;
    uint32_t kind;      /* enum tkv_device_kind */
    int32_t score;      /* higher is better: backend auto picks the highest;
                           the cpu plugin scores 100, software GPUs below it,
                           real GPUs well above */
    uint32_t reserved;
    uint64_t memory_bytes;
    char name[128];
    char driver[128];
    uint64_t reserved2[4];
};

struct tkv_open_params {
    uint32_t struct_size;
    uint32_t device_index;       /* index among the devices probe() reported */
    uint32_t threads;            /* host threads the plugin may use, 0 = its choice */
    uint32_t reserved;
    const struct tkv_math *math; /* valid until close() */
};

/* How a row is stored; see turbokv_format.h. */
struct tkv_row_format {
    uint32_t type;       /* enum tkv_type */
    uint32_t head_dim;
    uint32_t rotation;   /* enum tkv_rotation (turbo types) */
    uint32_t scale_mode; /* enum tkv_scale_mode (turbo types) */
};

/* Cache geometry inside one device buffer: the rows of one head of one
 * sequence are contiguous; row t of head h lies at
 *   offset + h * head_stride + t * tkv_row_bytes(fmt.type, fmt.head_dim). */

/* Quantize host rows and write them into a device buffer. */
struct tkv_append_args {
    uint32_t struct_size;
    uint32_t n_tokens;
    uint32_t n_heads;
    uint32_t reserved;
    struct tkv_row_format fmt;
    const float *src;     /* host memory [n_tokens][n_heads][head_dim] */
    void *buf;            /* device buffer */
    uint64_t offset;      /* byte offset of head 0, first new token */
    uint64_t head_stride; /* bytes between consecutive heads */
    uint64_t *n_nonfinite; /* out, may be NULL: NaN/Inf values stored as 0 */
};

/* Read rows back as floats in the original (unrotated) domain. */
struct tkv_dequant_args {
    uint32_t struct_size;
    uint32_t n_rows;      /* consecutive rows of one head */
    struct tkv_row_format fmt;
    const void *buf;
    uint64_t offset;      /* byte offset of the first row */
    float *dst;           /* host memory [n_rows][head_dim] */
};

/* One sequence of a batched decode-attention call. */
struct tkv_attn_seq {
    uint64_t k_offset;  /* byte offset of head 0, token 0 of this sequence's K */
    uint64_t v_offset;  /* same for V */
    uint32_t n_ctx;     /* tokens cached for this sequence, the n_q new ones included */
    uint32_t reserved;
};

/* Fused decode attention on the stored cache:
 *   for each sequence s, query token i < n_q and query head h:
 *     kv head      = h / (n_q_heads / n_kv_heads)          (GQA)
 *     visible rows = 0 .. n_ctx - n_q + i                  (causal)
 *     out = softmax(scale * q . K^T) V
 * Turbo keys: scores against the rotated query (<R q, y_hat> s, R orthogonal).
 * Turbo values: accumulated in the rotated domain, R^-1 applied once per
 * output row. Sparse V: row j's V is skipped when
 * exp(score_j - running_max) < sparse_v_threshold (0 disables). */
struct tkv_attention_args {
    uint32_t struct_size;
    uint32_t n_seqs;
    uint32_t n_q;          /* query tokens per sequence (>= 1) */
    uint32_t n_q_heads;
    uint32_t n_kv_heads;   /* n_q_heads % n_kv_heads == 0 */
    uint32_t reserved;
    struct tkv_row_format k_fmt, v_fmt; /* same head_dim */
    const void *k_buf, *v_buf;
    uint64_t k_head_stride, v_head_stride;
    const struct tkv_attn_seq *seqs; /* host memory [n_seqs] */
    const float *q;        /* host [n_seqs][n_q][n_q_heads][head_dim] */
    float *out;            /* host, same shape as q */
    float scale;           /* softmax scale, usually 1/sqrt(head_dim) */
    float sparse_v_threshold;
    uint64_t *rows_total;   /* out, may be NULL: V rows visible, summed over heads */
    uint64_t *rows_skipped; /* out, may be NULL: V rows skipped by sparse V */
};

struct tkv_device_stats {
    uint32_t struct_size;
    uint32_t n_buffers;
    uint64_t bytes_allocated;
    uint64_t rows_quantized;
    uint64_t attention_calls;
    uint64_t rows_skipped;
};

/* --- the plugin descriptor */

struct tkv_plugin {
    /* Header, read first; never changes shape. */
    uint32_t abi_major;
    uint32_t abi_minor;
    uint32_t struct_size; /* sizeof(struct tkv_plugin) as the plugin saw it */
    uint32_t reserved;

    /* --- ABI 1.0 --- */
    const char *name;        /* backend name: "cpu", "vulkan", "opencl" */
    const char *version;     /* the plugin's own version string */
    const char *description;

    /* Required. Called once after the version check, before any other op. */
    int (*init)(const struct tkv_services *svc);
    /* Optional. Called once before the module is unloaded. */
    void (*shutdown)(void);
    /* Required. Lists up to max devices into devs; *n_found gets the number
     * of devices present (may exceed max). Finding none is TKV_OK with 0. */
    int (*probe)(struct tkv_device_info *devs, uint32_t max, uint32_t *n_found);
    /* Required. */
    int (*open)(const struct tkv_open_params *params, void **dev);
    void (*close)(void *dev);
    /* Required. Device memory; contents of a new buffer are zero. */
    int (*buffer_alloc)(void *dev, uint64_t bytes, void **buf);
    void (*buffer_free)(void *dev, void *buf);
    int (*buffer_write)(void *dev, void *buf, uint64_t offset, const void *src, uint64_t bytes);
    int (*buffer_read)(void *dev, const void *buf, uint64_t offset, void *dst, uint64_t bytes);
    /* Required. The math. */
    int (*quantize_append)(void *dev, const struct tkv_append_args *args);
    int (*attention)(void *dev, const struct tkv_attention_args *args);
    int (*dequantize)(void *dev, const struct tkv_dequant_args *args);
    /* Optional. */
    int (*stats)(void *dev, struct tkv_device_stats *stats);
};

/* Bounds check shared by every plugin: do n_heads spans of span bytes,
 * stride bytes apart starting at offset, fit in a buffer of size bytes?
 * Computed without overflow. */
static inline int tkv_span_fits(uint64_t size, uint64_t offset, uint64_t n_heads, uint64_t stride,
                                uint64_t span)
{
    if (offset > size || span > size - offset)
        return 0;
    uint64_t room = size - offset - span; /* what the later heads may add */
    return n_heads <= 1 || stride <= room / (n_heads - 1);
}

/* The one exported symbol. core_abi_major/minor: the core's version. */
typedef const struct tkv_plugin *(*tkv_plugin_entry_fn)(uint32_t core_abi_major,
                                                        uint32_t core_abi_minor);

/* Plugins define their entry with this macro so the symbol is exported even
 * when the module is built with -fvisibility=hidden. */
#if defined(__GNUC__)
#define TKV_PLUGIN_EXPORT __attribute__((visibility("default")))
#else
#define TKV_PLUGIN_EXPORT
#endif

#ifdef __cplusplus
}
#endif

#endif
