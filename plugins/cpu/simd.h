/* SPDX-License-Identifier: MIT */
/*
 * The contract between the ISA-independent parts of turbokv-cpu (the ops,
 * the thread pool, the split-K attention driver) and one ISA level's kernels
 * (isa_avx512.c, isa_avx2.c, isa_neon.c, isa_scalar.c, all generated from
 * simd_kernels.h).
 *
 * A level works on blocks of `lanes` rows and on chunks of `lanes` values:
 * it serves a layout whose head_dim is a multiple of its lanes (then every
 * turbo group and q8_0 block is one too), and hands narrower head dims to
 * its `narrower` level. Types it has no kernels for (QJL keys) run the
 * reference kernels of rows.c. Outlier-split rows run the turbo kernels on
 * their turbo part; attend_span adds their few fp16 outliers.
 */
#ifndef TKV_CPU_SIMD_H
#define TKV_CPU_SIMD_H

#include "cpu.h"

/* Queries one register-tiled kernel call scores or accumulates at once:
 * their accumulators stay in registers (8 x 512 bits with the row chunk,
 * the table and the decode constants: under the 32 AVX-512 registers). */
#define CPU_SUBBATCH 8u
/* Queries of one work unit (its n_q tokens x GQA ratio heads, up to this):
 * they share one pass over the K and V rows. */
#define CPU_UNIT_QUERIES 32u
#define CPU_LANES_MAX 16u
/* Floats of n queries' head_dim values tiled by sub-batch (struct
 * cpu_span's plain and acc_tiled): n rounded up to CPU_SUBBATCH. */
#define CPU_TILED_FLOATS(n, head_dim)                                                            \
    ((size_t)(((n) + CPU_SUBBATCH - 1) / CPU_SUBBATCH * CPU_SUBBATCH) * (head_dim))
/* A thread's stage: the K and then the V rows of one block of lanes, and
 * the slack the kernels read past a row (CPU_BUFFER_SLACK). */
#define CPU_STAGE_BYTES(k_row_bytes, v_row_bytes)                                              \
    ((size_t)CPU_LANES_MAX * ((k_row_bytes) + (v_row_bytes)) + CPU_BUFFER_SLACK)

/* scores[q][r] = <query q, K row r> for r < n_rows, 0 for the lanes
 * beyond, Q the kernel's index + 1; row r at rows + r * row_bytes. The
 * queries are as the type's dot takes them (rotated for turbo) and tiled
 * chunk-major, so that one pointer walks them: values [c * lanes, (c + 1) *
 * lanes) of query q at queries + (c * Q + q) * lanes. */
typedef void (*cpu_score_fn)(const struct cpu_layout *l, const uint8_t *rows, uint32_t n_rows,
                             const float *queries, float *scores);
/* acc[q][:] = acc[q][:] * factor[q] + sum over the rows r in mask of
 * weights[q][r] * V row r (rotated domain for turbo); then factor[q] = 1.
 * weights is [Q][lanes]. */
typedef void (*cpu_accum_fn)(const struct cpu_layout *l, const uint8_t *rows, uint32_t mask,
                             const float *weights, float *factor, float *acc);

/* One type's kernels at one level. */
struct cpu_simd_type {
    /* Same contract as struct cpu_row_kernels' encode; bytes identical to it. */
    void (*encode)(const struct cpu_layout *l, const float *x, uint8_t *row);
    cpu_score_fn score[CPU_SUBBATCH];
    cpu_accum_fn accum[CPU_SUBBATCH];
};

/* The rows of one (sequence, kv head) that one work item attends to, for
 * up to CPU_UNIT_QUERIES queries, with its own online softmax: the driver
 * merges the items of a head exactly (split-K). */
struct cpu_span {
    const struct cpu_layout *k, *v;
    struct cpu_rows k_rows, v_rows; /* the head's rows through the block table */
    /* where rows of a block of lanes that crosses pool blocks are gathered
     * (CPU_STAGE_BYTES); NULL when block_tokens is a multiple of lanes */
    uint8_t *stage;
    uint32_t first, end;            /* rows [first, end); first a multiple of lanes */
    uint32_t n_query;
    /* in sub-batches of CPU_SUBBATCH (the last may be smaller), each tiled
     * as cpu_score_fn takes it, sub-batch b at queries + b * CPU_SUBBATCH *
     * head_dim */
    const float *queries;
    /* outlier-split keys: the queries unrotated (the outliers are stored
     * unrotated), tiled so that one load takes coordinate i of a whole
     * sub-batch: query q's i at plain[(q - q % CPU_SUBBATCH) * head_dim + i
     * * CPU_SUBBATCH + q % CPU_SUBBATCH], 0 past the last query; NULL for
     * other keys */
    const float *plain;
    const uint32_t *lo, *hi;        /* [n_query]: query q sees the rows [lo[q], hi[q]) */
    float scale;                    /* softmax scale */
    float softcap, inv_softcap;     /* x = softcap tanh(x / softcap); 0 = off */
    float threshold;                /* sparse-V threshold, 0 = off */
    /* out: per query, the running max m, the sum of exp(x - m) and the sum
     * of exp(x - m) v (rotated for turbo V), over the span's visible rows;
     * m = -inf and zeros where the query sees none of them */
    float *acc, *max, *sum;
    /* outlier-split values: [n_query][head_dim] the sum of exp(x - m) times
     * the row's outliers, unrotated; NULL for other values */
    float *acc_plain;
    /* with acc_plain: where attend_span sums it, tiled as plain (a row's
     * outlier adds to every query of a sub-batch at once), n_query rounded
     * up to CPU_SUBBATCH times head_dim floats */
    float *acc_tiled;
    uint64_t skipped;               /* out: (query, row) pairs sparse V skipped */
};

struct cpu_isa {
    const char *name;      /* as TURBO_CPU_ISA names it */
    uint32_t lanes;        /* values per vector, rows per block */
    const struct cpu_isa *narrower;
    const struct cpu_simd_type *types[TKV_TYPE_COUNT]; /* NULL: reference kernels */
    /* cpu_rotate_group, vectorized (WHT: the same floats as rotate.c). */
    void (*rotate_group)(uint32_t rotation, const struct cpu_group *grp, enum cpu_direction dir,
                         float *v);
    void (*attend_span)(struct cpu_span *span);
};

extern const struct cpu_isa cpu_isa_avx512, cpu_isa_avx2, cpu_isa_neon, cpu_isa_scalar;

#endif
