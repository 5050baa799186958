/* SPDX-License-Identifier: MIT */
/*
 * turbokv plugin ABI 2 — what a device plugin (cpu, vulkan, opencl, ...)
 * exports and what the core hands it. For plugin authors; hosts use
 * turbokv.h. The design notes are docs/abi.md.
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
 *     calling anything else (a 1.x plugin is refused with both versions
 *     named: ABI 2 moved row addressing to blocks, which no adapter can give
 *     a plugin that only knows contiguous rows). It copies at most
 *     struct_size bytes into a zeroed local copy, so members an older plugin
 *     lacks read as NULL.
 *   - Negotiation: the negotiated minor is min(core minor, plugin minor).
 *     Every argument struct the core passes begins with struct_size, set to
 *     the size of that struct AS OF THE NEGOTIATED MINOR: the core never
 *     passes a member the plugin's minor does not know, and a host request
 *     that needs one (a feature added in a later minor) is refused by the
 *     core with TKV_EUNSUPPORTED naming the minor, never silently dropped.
 *   - Members are only ever appended, under a comment naming the minor
 *     version that added them; required members are checked once, at load.
 *   - Arrays of structs that may grow carry their element size
 *     (struct tkv_attention_args.seq_size).
 *
 * Conventions for every op:
 *   - returns TKV_OK or a negative enum tkv_status; on failure it calls
 *     svc->error() with the detail and leaves its outputs unspecified but its
 *     device state (buffers, other rows) untouched;
 *   - never aborts, never exits, never writes to stdout;
 *   - may be called from any host thread, but the core never calls two ops
 *     on the same device concurrently.
 *
 * Validation belongs to the core (core/validate.c). Before any op is
 * called, the core has checked every argument against the preconditions
 * written next to each op below and against the device's capabilities
 * (struct tkv_device_caps); buffers are the ones the plugin allocated, and
 * every row address an op can form from its arguments lies inside its
 * buffer. Plugins do not check these again; they may assert them in debug
 * builds. What a plugin must still check is what only it can know: device
 * errors, its own allocation failures.
 */
#ifndef TURBOKV_PLUGIN_H
#define TURBOKV_PLUGIN_H

#include <stddef.h>
#include <stdint.h>

#include "turbokv_device.h"
#include "turbokv_format.h"
#include "turbokv_status.h"

#define TKV_ABI_MAJOR 2u
#define TKV_ABI_MINOR 7u
#define TKV_PLUGIN_ENTRY_NAME "tkv_plugin_entry"

#ifdef __cplusplus
extern "C" {
#endif


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

    struct tkv_qjl_tables qjl[TKV_N_GROUP_SIZES]; /* [tkv_group_index(g)] */

    /* format revision 1 (present when struct_size covers it): the rotor
     * rotation's tkv_rotor_chunks(g) 3 x 3 row-major matrices per group size */
    const float *rotor[TKV_N_GROUP_SIZES]; /* [tkv_group_index(g)] */
};

/* --- devices */

enum tkv_device_kind {
    TKV_DEVICE_CPU = 0,
    TKV_DEVICE_GPU_DISCRETE = 1,
    TKV_DEVICE_GPU_INTEGRATED = 2,
    TKV_DEVICE_SOFTWARE = 3, /* a CPU emulating a GPU API (lavapipe, PoCL) */
};

/* Frozen for ABI 2.x: probe() fills an array of these, so its size may never
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

/* What a device can do (device_caps()). The core checks a cache against it
 * when the cache is created, before anything is allocated, and names the
 * first missing capability; backend auto skips devices that lack one. The
 * struct is shared with the host API (tkv_context_caps), see
 * turbokv_caps.h. */
#include "turbokv_caps.h"

struct tkv_open_params {
    uint32_t struct_size;
    uint32_t device_index;       /* index among the devices probe() reported */
    uint32_t threads;            /* host threads the plugin may use, 0 = its choice */
    uint32_t reserved;
    const struct tkv_math *math; /* valid until close() */
    /* --- 2.1 --- */
    /* The configuration's cpu_isa (TURBO_CPU_ISA): "auto" or the name of a
     * CPU kernel level, for plugins that run kernels on the host CPU. The
     * core reads the environment; a plugin never calls getenv for it, so
     * tkv_context_options.ignore_env holds. Valid during open(). */
    const char *cpu_isa;
    /* --- 2.2 --- */
    /* Non-NULL: open on the host's own device (turbokv_device.h) instead of
     * device device_index; the core has called host_device() on it and
     * checked its capabilities. The plugin retains what it keeps of it and
     * creates no second context or device. Valid during open(). */
    const struct tkv_host_device *host;
};

/* A tensor in the host's device memory (2.2), as the core checked it: the
 * memory kind is the backend's, the context was opened on the host's
 * device, offset is a multiple of the element's size and the tensor's bytes
 * lie inside size. The plugin may check the handle further (its context,
 * its real size) and must not keep it after the op returns (the commands it
 * queued on it may run later). */
struct tkv_device_tensor {
    uint32_t memory; /* enum tkv_memory: TKV_MEMORY_OPENCL or TKV_MEMORY_VULKAN */
    uint32_t elem;   /* enum tkv_elem */
    uint64_t handle; /* cl_mem or VkBuffer (struct tkv_tensor.handle) */
    uint64_t offset; /* bytes */
    uint64_t size;   /* bytes of the buffer */
};

/* How a row is stored; see turbokv_format.h. */
struct tkv_row_format {
    uint32_t type;       /* enum tkv_type */
    uint32_t head_dim;
    uint32_t rotation;   /* enum tkv_rotation (turbo types) */
    uint32_t scale_mode; /* enum tkv_scale_mode (turbo types) */
};

/*
 * Where rows live: paged pools.
 *
 * The core owns the cache geometry. For each layer and for K and for V it
 * allocates one pool buffer of blocks; a block holds block_tokens rows of
 * every kv head:
 *
 *   block b, kv head h, row r (r < block_tokens) lies at byte
 *       b * block_stride + h * head_stride + r * row_bytes
 *   with row_bytes = tkv_row_bytes(fmt.type, fmt.head_dim),
 *        head_stride >= block_tokens * row_bytes,
 *        block_stride >= n_heads * head_stride.
 *
 * A sequence is a list of block indices (its block table): token t of the
 * sequence is row t % block_tokens of block blocks[t / block_tokens].
 * block_tokens is any value >= 1 (not only powers of two); a contiguous
 * cache is the case of one block per sequence of block_tokens = capacity.
 */
struct tkv_pool {
    struct tkv_row_format fmt;
    uint32_t row_bytes;     /* tkv_row_bytes(fmt.type, fmt.head_dim) */
    uint32_t block_tokens;  /* rows of one head in a block */
    void *buf;              /* the pool buffer (buffer_alloc) */
    uint64_t head_stride;   /* bytes between the heads of a block */
    uint64_t block_stride;  /* bytes between consecutive blocks */
};

/* tkv_append_args.flags (ABI 2.5). The keys' append of one
 * tkv_cache_append, whose values' append (the same tokens, another pool
 * buffer) is the next op the core calls on this device, with nothing of the
 * host's between them: the core validates both before it makes the first. */
#define TKV_APPEND_PAIR_FIRST 1u
/* The values' append that follows a TKV_APPEND_PAIR_FIRST one at once. A
 * plugin that queues both may leave out the ordering between the two (they
 * read different rows and write different buffers): the first's exit
 * barrier and the second's entry barrier; if the second fails, the plugin
 * still owes what the first left out. */
#define TKV_APPEND_PAIR_SECOND 2u

/* Quantize host rows and store them as tokens first_pos .. first_pos +
 * n_tokens - 1 of one sequence.
 * Preconditions (checked by the core): n_tokens >= 1; n_heads >= 1;
 * src holds [n_tokens][n_heads][head_dim] floats; blocks[(first_pos + t) /
 * pool.block_tokens] exists for every t < n_tokens and addresses a block
 * inside pool.buf; those blocks are not shared with another sequence (the
 * core copies a shared block before writing to it). Rows of other tokens
 * are not touched. */
struct tkv_append_args {
    uint32_t struct_size;
    uint32_t n_tokens;
    uint32_t n_heads;
    uint32_t first_pos;
    struct tkv_pool pool;
    const uint32_t *blocks; /* host memory: the sequence's block table */
    uint32_t n_blocks;      /* entries in blocks */
    /* 2.5: TKV_APPEND_* bits (0 from a core before 2.5, where this was a
     * reserved word). A plugin may ignore them. */
    uint32_t flags;
    const float *src;       /* host memory [n_tokens][n_heads][head_dim] */
    uint64_t *n_nonfinite;  /* out, may be NULL: NaN/Inf values stored as 0 */
    /* --- 2.2 --- */
    /* Non-NULL (only on a device opened on the host's, TKV_CAP_DEVICE_TENSORS):
     * the rows are in the host's device memory, src and n_nonfinite are
     * NULL; the op is queued behind the host's earlier work and returns
     * without waiting (TKV_CAP_ASYNC). Read only when TKV_ARGS_HAS. */
    const struct tkv_device_tensor *src_dev;
};

/* Read the rows of tokens first_pos .. first_pos + n_tokens - 1 of one
 * sequence back as floats in the original (unrotated) domain.
 * Preconditions: n_tokens >= 1, n_heads >= 1, the blocks exist as for
 * append, dst holds [n_tokens][n_heads][head_dim] floats. */
struct tkv_dequant_args {
    uint32_t struct_size;
    uint32_t n_tokens;
    uint32_t n_heads;
    uint32_t first_pos;
    struct tkv_pool pool;
    const uint32_t *blocks; /* host memory */
    uint32_t n_blocks;
    uint32_t reserved;
    float *dst;             /* host memory [n_tokens][n_heads][head_dim] */
};

/* One sequence of a batched attention call (an element of
 * tkv_attention_args.seqs, seq_size bytes apart). */
struct tkv_attn_seq {
    uint32_t n_ctx;       /* tokens stored, its n_q new ones included */
    uint32_t n_q;         /* its query tokens, 1 <= n_q <= n_ctx */
    uint32_t q_first;     /* row of its first query token in q, out, lse */
    uint32_t block_first; /* index in blocks of its first block */
};

/* Fused decode attention on the stored cache:
 *   for each sequence s, query token i < n_q(s) and query head h:
 *     kv head  = h / (n_q_heads / n_kv_heads)                      (GQA)
 *     p        = n_ctx - n_q + i, the query's position
 *     visible  = rows j with j <= p (causal) and, when window > 0,
 *                p - j < window (the last window positions, p included)
 *     x_j      = scale * <q, k_j>;  with softcap > 0:
 *                x_j = softcap * tanh(x_j / softcap)
 *     out      = sum_j softmax(x)_j v_j over the visible rows
 *     lse      = log(sum_j exp(x_j)) (natural log, every visible row,
 *                sparse-V-skipped ones included), when lse != NULL
 * Turbo keys: scores against the rotated query (<R q, y_hat> s, R
 * orthogonal). Turbo values: accumulated in the rotated domain, R^-1
 * applied once per output row. Sparse V: row j's V is skipped when
 * exp(x_j - running_max) < sparse_v_threshold (0 disables).
 * q, out: [n_q_total][n_q_heads][head_dim]; the rows of sequence s are
 * q_first(s) .. q_first(s) + n_q(s) - 1. lse: [n_q_total][n_q_heads].
 * Preconditions (checked by the core): n_seqs >= 1; every n_q >= 1 and
 * <= n_ctx; the q_first ranges partition 0 .. n_q_total - 1 in order;
 * n_q_heads a non-zero multiple of n_kv_heads; k.fmt.head_dim ==
 * v.fmt.head_dim; k and v have the same block_tokens; every block a
 * sequence's n_ctx needs exists and lies inside both pools; scale finite and
 * non-zero; softcap >= 0 and finite; sparse_v_threshold in [0, 1);
 * window == 0 unless the device reports TKV_CAP_WINDOW, softcap == 0 unless
 * TKV_CAP_SOFTCAP, lse == NULL unless TKV_CAP_LSE. */
struct tkv_attention_args {
    uint32_t struct_size;
    uint32_t n_seqs;
    uint32_t seq_size;     /* bytes between elements of seqs */
    uint32_t n_q_total;    /* sum of n_q over the sequences */
    uint32_t n_q_heads;
    uint32_t n_kv_heads;
    uint32_t max_n_ctx;    /* largest n_ctx of the call */
    uint32_t max_n_q;      /* largest n_q of the call */
    struct tkv_pool k, v;
    const uint32_t *blocks; /* host memory: the sequences' block tables */
    uint32_t n_blocks;
    uint32_t window;        /* 0: none */
    const struct tkv_attn_seq *seqs; /* host memory */
    const float *q;        /* host memory */
    float *out;            /* host memory */
    float *lse;            /* host memory or NULL */
    float scale;           /* softmax scale (the host's, default 1/sqrt(head_dim)) */
    float softcap;         /* 0: none */
    float sparse_v_threshold;
    uint32_t reserved;
    uint64_t *rows_total;   /* out, may be NULL: V rows visible, summed over heads */
    uint64_t *rows_skipped; /* out, may be NULL: V rows skipped by sparse V */
    /* --- 2.1 --- */
    /* out, may be NULL: the device time of the call in nanoseconds, from the
     * device's own clock (Vulkan timestamp queries, OpenCL profiling events)
     * from the first command of the call to the end of its last one; 0 where
     * the device has no timer (cpu). Read only when TKV_ARGS_HAS(a, device_ns). */
    uint64_t *device_ns;
    /* --- 2.2 --- */
    /* Non-NULL (TKV_CAP_DEVICE_TENSORS): q or out is in the host's device
     * memory and the host pointer q or out is NULL. With out_dev the op is
     * queued and returns without waiting (TKV_CAP_ASYNC): lse, device_ns
     * and rows_skipped are NULL. Read only when TKV_ARGS_HAS. */
    const struct tkv_device_tensor *q_dev;
    const struct tkv_device_tensor *out_dev;
};

/* Whether an args struct the core passed has member m: a core of an older
 * minor passes the shorter struct of its minor (struct_size). */
#define TKV_ARGS_HAS(a, m) ((a)->struct_size >= offsetof(__typeof__(*(a)), m) + sizeof((a)->m))

struct tkv_device_stats {
    uint32_t struct_size;
    uint32_t n_buffers;
    uint64_t bytes_allocated;
    uint64_t rows_quantized;
    uint64_t attention_calls;
    uint64_t rows_skipped;
};

/* Row address helper every plugin may use (the same rule in GLSL and OpenCL
 * C lives next to their kernels): byte offset of token t of kv head h. */
static inline uint64_t tkv_pool_row_offset(const struct tkv_pool *p, const uint32_t *blocks, uint32_t h,
                                           uint32_t t)
{
    return (uint64_t)blocks[t / p->block_tokens] * p->block_stride + (uint64_t)h * p->head_stride +
           (uint64_t)(t % p->block_tokens) * p->row_bytes;
}

/* --- the plugin descriptor */

struct tkv_plugin {
    /* Header, read first; never changes shape. */
    uint32_t abi_major;
    uint32_t abi_minor;
    uint32_t struct_size; /* sizeof(struct tkv_plugin) as the plugin saw it */
    uint32_t reserved;

    /* --- ABI 2.0 --- */
    const char *name;        /* backend name: "cpu", "vulkan", "opencl"; the
                                module file is turbokv-<name>.so */
    const char *version;     /* the plugin's own version string */
    const char *description;

    /* Required. Called once after the version check, before any other op. */
    int (*init)(const struct tkv_services *svc);
    /* Optional. Called once before the module is unloaded. */
    void (*shutdown)(void);
    /* Required. Lists up to max devices into devs; *n_found gets the number
     * of devices present (may exceed max). Finding none is TKV_OK with 0. */
    int (*probe)(struct tkv_device_info *devs, uint32_t max, uint32_t *n_found);
    /* Required. What device device_index (as probe() listed it) supports;
     * caps->struct_size is set by the core; the plugin fills the rest. */
    int (*device_caps)(uint32_t device_index, struct tkv_device_caps *caps);
    /* Required. */
    int (*open)(const struct tkv_open_params *params, void **dev);
    void (*close)(void *dev);
    /* Required. Device memory; the contents of a new buffer are undefined
     * (the core never reads a row it has not written). bytes >= 1. */
    int (*buffer_alloc)(void *dev, uint64_t bytes, void **buf);
    void (*buffer_free)(void *dev, void *buf);
    /* Required. Ranges lie inside the buffer; bytes >= 1. */
    int (*buffer_write)(void *dev, void *buf, uint64_t offset, const void *src, uint64_t bytes);
    int (*buffer_read)(void *dev, const void *buf, uint64_t offset, void *dst, uint64_t bytes);
    /* Optional (the core falls back to read + write through host memory):
     * device-side copy between two buffers, or within one when the ranges
     * do not overlap. Used when a pool grows and for copy-on-write. */
    int (*buffer_copy)(void *dev, void *dst, uint64_t dst_offset, const void *src, uint64_t src_offset,
                       uint64_t bytes);
    /* Required. The math. */
    int (*quantize_append)(void *dev, const struct tkv_append_args *args);
    int (*attention)(void *dev, const struct tkv_attention_args *args);
    int (*dequantize)(void *dev, const struct tkv_dequant_args *args);
    /* Optional. */
    int (*stats)(void *dev, struct tkv_device_stats *stats);

    /* --- ABI 2.2 --- */
    /* Optional; required to report TKV_CAP_HOST_DEVICE. Describes the
     * host's own device (turbokv_device.h) before open() adopts it: info as
     * probe() fills it, caps as device_caps() does (caps->struct_size set by
     * the core). TKV_EUNSUPPORTED, naming why, when the plugin cannot run on
     * it (another backend's tag, a device without what the kernels need, an
     * out-of-order queue). */
    int (*host_device)(const struct tkv_host_device *host, struct tkv_device_info *info,
                       struct tkv_device_caps *caps);

    /* --- ABI 2.3 --- */
    /* Optional; required to report TKV_CAP_COMMAND_BUFFER. Only on a device
     * opened on the host's (the core checks). command_buffer non-NULL: the
     * backend's command buffer (Vulkan: a VkCommandBuffer in the recording
     * state, of the host's queue family); every later op on device tensors
     * (an append with src_dev, an attention with out_dev) records its
     * commands into it, with the barriers it needs, and returns; the host
     * submits it. Ops that would wait for the device (host outputs,
     * buffer_read / buffer_write, dequantize, append from host memory)
     * return TKV_EBUSY while one is set, naming the call that unsets it.
     * NULL: back to submitting on the host's queue without a wait. Never
     * fails for NULL. */
    int (*set_command_buffer)(void *dev, void *command_buffer);

    /* --- ABI 2.4: no new member; TKV_CAP_FORMAT_R1 now means the rotor
     * rotation alone (TKV_CAP_ROTOR) and TKV_CAP_OUTLIER_TYPES the
     * outlier-split types (turbokv_caps.h) --- */
    /* --- ABI 2.5: no new member; tkv_append_args.flags (the reserved word
     * before) marks the keys' and values' appends of one cache append --- */

    /* --- ABI 2.6 --- */
    /* Optional. The keys' and values' appends of one cache append in one
     * call (k->flags TKV_APPEND_PAIR_FIRST, v->flags TKV_APPEND_PAIR_SECOND,
     * both validated as for quantize_append), so that a plugin may make
     * them one launch; without it the core makes the two quantize_append
     * calls. Same tokens, heads and block-table entries; each its own
     * pool. On failure neither append may be half done in a way the
     * single calls would not leave it. */
    int (*quantize_append_pair)(void *dev, const struct tkv_append_args *k,
                                const struct tkv_append_args *v);

    /* --- ABI 2.7 --- */
    /* Optional. A decode step of one sequence as one call: the keys' and
     * values' appends k and v (a pair, as for quantize_append_pair), then
     * the attention a of the appended tokens' queries over the sequence,
     * themselves included. The core has validated k and v as a pair and a
     * as for attention, and checked that a has one sequence (n_seqs 1)
     * whose n_q is k->n_tokens and whose n_ctx is k->first_pos +
     * k->n_tokens, with a->blocks the same block-table entries as k's and
     * v's. The result is what quantize_append_pair(k, v) and then
     * attention(a) give: the same stored bytes, the same outputs; a plugin
     * may quantize the new rows inside the attention's launch (the
     * OpenCL plugin's tensor-core kernels) or make the two calls. On
     * failure the rows of the new tokens may have been written (they lie
     * past the sequence's length, which the core does not move) and
     * nothing else. Without it the core makes the two calls. */
    int (*append_attention)(void *dev, const struct tkv_append_args *k,
                            const struct tkv_append_args *v, const struct tkv_attention_args *a);
};

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
