/* SPDX-License-Identifier: MIT */
/*
 * turbokv-cpu internals: the device, its buffers, the layout of a stored row
 * and the per-type row kernels the ops are built from.
 *
 * The row kernels of rows.c (and qjl.c, outlier.c) are the reference
 * implementation of every op: plain C. An ISA level (simd.h: avx512, avx2,
 * scalar; chosen at open by isa.c) adds vectorized kernels for the types it
 * knows; a layout without them (QJL keys, the outlier-split types) uses the
 * reference kernels, attention rows spread over the device's threads (the
 * reference level itself runs one thread).
 */
#ifndef TKV_CPU_H
#define TKV_CPU_H

#include <assert.h>
#include <math.h>
#include <stddef.h>
#include <stdint.h>

#include "turbokv_plugin.h"

/* Set by init(); every error detail goes through cpu_svc->error. */
extern const struct tkv_services *cpu_svc;

/* Records the detail of a failure and yields status whatever the services
 * return, so an op can write: return CPU_ERROR(TKV_EINVAL, "...", ...). */
#define CPU_ERROR(status, ...) (cpu_svc->error((status), __VA_ARGS__), (status))

/* A device buffer: host memory behind a small header with a magic (debug
 * builds assert that a handle the core passes is one of ours; the core
 * checks every range against the size it allocated) and the size (stats). */
#define CPU_BUFFER_MAGIC 0x746b7663u /* "tkvc" */
/* Zeroed bytes past the end of every buffer: the ISA levels load a row's
 * packed indices 8 bytes at a time, past the last row's last index. */
#define CPU_BUFFER_SLACK 64u

/* Little-endian scalars of the stored rows. */
static inline uint16_t load_u16(const uint8_t *p) { return (uint16_t)(p[0] | p[1] << 8); }

static inline void store_u16(uint8_t *p, uint16_t v)
{
    p[0] = (uint8_t)v;
    p[1] = (uint8_t)(v >> 8);
}

struct cpu_buffer {
    uint32_t magic;
    uint32_t reserved;
    uint64_t size;
    unsigned char data[];
};

static inline struct cpu_buffer *cpu_buffer_of(const void *handle)
{
    struct cpu_buffer *b = (struct cpu_buffer *)handle;
    assert(b && b->magic == CPU_BUFFER_MAGIC);
    return b;
}

/* A b-bit codebook in the shape the ISA levels' 16-entry table lookups take
 * (isa.c): centroids and their squares repeated every 2^b entries, the
 * midpoints padded with +inf. */
struct cpu_lut {
    float centroid[16], centroid_sq[16], boundary[16];
};

/* What one thread of the device works with. */
struct cpu_thread {
    float *queries;   /* CPU_UNIT_QUERIES prepared queries of TKV_HEAD_DIM_MAX, then as
                         many plain (unrotated) ones for outlier-split keys, tiled
                         as struct cpu_span's plain */
    float *outlier_acc; /* CPU_UNIT_QUERIES x TKV_HEAD_DIM_MAX: struct cpu_span's
                           acc_tiled */
    float *row;       /* a sanitized input row of TKV_HEAD_DIM_MAX */
    uint8_t *stage;   /* attention rows gathered across pool blocks (attention_split.c) */
    size_t stage_bytes;
    uint64_t skipped; /* sparse-V skips of the current call */
    uint64_t nonfinite;
} __attribute__((aligned(64))); /* threads update their counters apart */

#define CPU_THREADS_MAX 1024u

struct cpu_pool;
struct cpu_isa;
struct cpu_split;

struct cpu_device {
    const struct tkv_math *math;
    struct tkv_device_stats stats;
    const struct cpu_isa *isa; /* NULL: the reference kernels */
    struct cpu_pool *pool;     /* NULL when one thread */
    uint32_t n_threads;
    struct cpu_thread *threads; /* [n_threads] */
    struct cpu_split *split;   /* attention work lists (attention_split.c) */
    struct cpu_lut luts[TKV_N_GROUP_SIZES][TKV_N_CODEBOOK_BITS];
};

/* One group of a turbo row. */
struct cpu_group {
    uint32_t size;        /* g */
    uint32_t first;       /* index of its first value in the row */
    uint32_t byte_offset; /* of its block in the stored row */
    float inv_sqrt;       /* 1/sqrt(g) computed in double, rounded to float */
    const struct tkv_group_tables *tables;
    const struct tkv_codebook *codebook;
    const struct cpu_lut *lut;
    const float *rotor; /* the rotor rotation's matrices of this group size */
    /* QJL types only (qjl.c): the group's residual block and sketch. */
    uint32_t residual_offset;
    const struct tkv_qjl_tables *qjl;
};

struct cpu_layout;

/* Kernels on one stored row. Turbo values are in the rotated domain, so a
 * turbo dot takes a rotated query and a turbo axpy accumulates rotated. */
struct cpu_row_kernels {
    /* Quantizes the finite values x[head_dim] into the stored row. */
    void (*encode)(const struct cpu_layout *l, const float *x, uint8_t *row);
    /* Returns sum_i q[i] * value_i. */
    float (*dot)(const struct cpu_layout *l, const uint8_t *row, const float *q);
    /* acc[i] += w * value_i. */
    void (*axpy)(const struct cpu_layout *l, const uint8_t *row, float w, float *acc);
    /* Optional: writes into work what dot takes for the query q[head_dim]
     * (turbo: R q; QJL: R q, then S R q per group: 2 head_dim floats).
     * NULL: dot takes the query as it is. */
    void (*prepare_query)(const struct cpu_layout *l, const float *q, float *work);
};

/* Everything needed to read or write rows of one struct tkv_row_format. */
struct cpu_layout {
    uint32_t type, head_dim, rotation, scale_mode;
    uint32_t bits;      /* turbo index bits (QJL: of the turbo stage), 0 for the other types */
    uint32_t row_bytes;
    uint32_t n_groups;  /* turbo only */
    struct cpu_group groups[TKV_MAX_GROUPS];
    const struct cpu_row_kernels *kernels;
    /* The ISA level serving this head_dim and its kernels for this type;
     * NULL: the reference kernels. */
    const struct cpu_isa *isa;
    const struct cpu_simd_type *simd;
    /* Outlier-split types only (outlier.c): where the outliers begin, how
     * many, and the bytes of one index. */
    uint32_t outlier_offset, n_outliers, outlier_index_bytes;
};

/* Fills the layout of a format the core has validated (type, head_dim,
 * rotation and scale mode within the device's capabilities), kernels
 * included. */
void cpu_layout_init(const struct cpu_device *dev, const struct tkv_row_format *fmt,
                     struct cpu_layout *l);

/* The turbo kernels (rows.c); the QJL kernels (qjl.c) run them on the
 * turbo part of their rows. */
void cpu_turbo_encode(const struct cpu_layout *l, const float *x, uint8_t *row);
float cpu_turbo_dot(const struct cpu_layout *l, const uint8_t *row, const float *q);
void cpu_turbo_axpy(const struct cpu_layout *l, const uint8_t *row, float w, float *acc);
void cpu_turbo_prepare_query(const struct cpu_layout *l, const float *q, float *work);

/* QJL key types (qjl.c). cpu_qjl_layout completes a layout that
 * cpu_layout_init filled as the type's turbo stage. */
void cpu_qjl_layout(const struct cpu_device *dev, struct cpu_layout *l);
void cpu_qjl_encode(const struct cpu_layout *l, const float *x, uint8_t *row);
float cpu_qjl_dot(const struct cpu_layout *l, const uint8_t *row, const float *q);
void cpu_qjl_axpy(const struct cpu_layout *l, const uint8_t *row, float w, float *acc);
void cpu_qjl_prepare_query(const struct cpu_layout *l, const float *q, float *work);

/* Outlier-split types (outlier.c). cpu_outlier_layout completes a layout
 * that cpu_layout_init filled as the type's turbo stage. Their axpy takes
 * an accumulator of 2 head_dim floats (rotated turbo part, then the
 * unrotated outliers) that cpu_outlier_finish turns into the output row. */
void cpu_outlier_layout(struct cpu_layout *l);
void cpu_outlier_encode(const struct cpu_layout *l, const float *x, uint8_t *row);
/* The outliers of x into row; rest = x with them zeroed (the turbo part's input). */
void cpu_outlier_split(const struct cpu_layout *l, const float *x, uint8_t *row, float *rest);
float cpu_outlier_dot(const struct cpu_layout *l, const uint8_t *row, const float *q);
void cpu_outlier_axpy(const struct cpu_layout *l, const uint8_t *row, float w, float *acc);
void cpu_outlier_prepare_query(const struct cpu_layout *l, const float *q, float *work);
void cpu_outlier_finish(const struct cpu_layout *l, float *acc, float factor, float *out);

/* Group rotations of a turbo layout (rotate.c), in place: CPU_ROTATE is
 * y = R u (quantization, queries), CPU_UNROTATE is u = R^T y (dequantized
 * rows, attention outputs). cpu_rotate_group takes the group's g values,
 * cpu_rotate_row all head_dim values of a row. */
enum cpu_direction { CPU_ROTATE, CPU_UNROTATE };

void cpu_rotate_group(uint32_t rotation, const struct cpu_group *grp, enum cpu_direction dir,
                      float *v);
void cpu_rotate_row(const struct cpu_layout *l, enum cpu_direction dir, float *v);

/* The sum of 8 running sums (value i of a row goes to s[i % 8]) in the
 * order every ISA level reproduces (turbokv_scalar.h, TKV_SUM8). */
static inline double cpu_sum8(const double s[TKV_NORM_LANES])
{
    return TKV_SUM8(s[0], s[1], s[2], s[3], s[4], s[5], s[6], s[7]);
}

/* ISA levels (isa.c): the one TURBO_CPU_ISA asks for (auto: the best this
 * CPU runs; an error names the variable), a description for probe, the
 * kernels of a layout (cpu_layout_init calls it) and the 16-entry tables. */
int cpu_isa_choose(const char *configured, const struct cpu_isa **isa);
void cpu_isa_describe(const char *configured, char *out, size_t size);
void cpu_simd_select(const struct cpu_device *dev, struct cpu_layout *l);
void cpu_isa_tables(struct cpu_device *dev);

/* The device's threads (pool.c): n_threads counts the caller, which works
 * as thread 0; a NULL pool (one thread) runs the items in order on the
 * caller. fn(arg, item, thread) runs once for each item < n_items. */
typedef void (*cpu_pool_fn)(void *arg, uint32_t item, uint32_t thread);
int cpu_pool_create(uint32_t n_threads, struct cpu_pool **pool);
void cpu_pool_destroy(struct cpu_pool *pool);
void cpu_pool_run(struct cpu_pool *pool, uint32_t n_items, cpu_pool_fn fn, void *arg);

/* Where the rows of one kv head of one sequence lie: the head's slice of a
 * pool and the sequence's block table. */
struct cpu_rows {
    const uint8_t *head;   /* buffer data + h * head_stride */
    const uint32_t *blocks; /* the sequence's block table */
    uint64_t block_stride;
    uint32_t block_tokens, row_bytes;
};

static inline struct cpu_rows cpu_rows_of(const struct tkv_pool *p, const uint32_t *blocks,
                                          uint32_t head)
{
    const struct cpu_buffer *b = cpu_buffer_of(p->buf);
    return (struct cpu_rows){ b->data + head * p->head_stride, blocks, p->block_stride,
                              p->block_tokens, p->row_bytes };
}

/* Token t's row; one division, for callers that touch a row at a time (the
 * attention loops walk blocks instead). */
static inline const uint8_t *cpu_row_at(const struct cpu_rows *r, uint32_t t)
{
    return r->head + r->blocks[t / r->block_tokens] * r->block_stride +
           (size_t)(t % r->block_tokens) * r->row_bytes;
}

/* The rows query token i of a sequence sees: [*lo, *hi) (causal, and the
 * last window positions when window > 0). */
static inline void cpu_visible(uint32_t n_ctx, uint32_t n_q, uint32_t i, uint32_t window,
                               uint32_t *lo, uint32_t *hi)
{
    uint32_t p = n_ctx - n_q + i;
    *hi = p + 1;
    *lo = window && p + 1 > window ? p + 1 - window : 0;
}

/* Sequence s of an attention call. */
static inline const struct tkv_attn_seq *cpu_seq(const struct tkv_attention_args *a, uint32_t s)
{
    return (const struct tkv_attn_seq *)((const char *)a->seqs + (size_t)s * a->seq_size);
}

/* Attention on the layouts' ISA level, split over the threads
 * (attention_split.c). */
int cpu_attention_split(struct cpu_device *dev, const struct tkv_attention_args *a,
                        const struct cpu_layout *k, const struct cpu_layout *v,
                        uint64_t *rows_skipped);
void cpu_split_free(struct cpu_split *split);

/* The ops (quantize.c, attention.c). The core has checked their arguments
 * (turbokv_plugin.h); they run on anything that passed. */
int cpu_quantize_append(void *dev, const struct tkv_append_args *args);
int cpu_dequantize(void *dev, const struct tkv_dequant_args *args);
int cpu_attention(void *dev, const struct tkv_attention_args *args);

#endif
