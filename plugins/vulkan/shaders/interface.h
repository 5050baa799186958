/* SPDX-License-Identifier: MIT */
/*
 * The interface between turbokv-vulkan's host code and its shaders, read by
 * both: by C (vk.h) and by GLSL (common.glsl). It holds only what the two
 * sides must agree on: the layout of the math buffer, the push constant
 * blocks, the specialization constant ids and the small enums they carry.
 * Everything about the stored rows themselves comes from turbokv_format.h
 * on the host and reaches the shaders as values (row bytes, group sizes,
 * index bits), so the shaders carry no format constants of their own.
 *
 * The push constant member lists are macros so that one text declares the
 * C struct and the GLSL block: both use uint64_t, uint32_t and float with
 * the 64-bit members first, where C and std430 place them alike.
 */
#ifndef TKV_VK_INTERFACE_H
#define TKV_VK_INTERFACE_H

/* ---- the math buffer: floats, uploaded once per device ------------------- */

/* Per group size index gi (8 << gi values): D1 then D2, 128 floats apart. */
#define TKV_VK_MATH_SIGNS 0u
/* [gi]: 1/sqrt(g) as the reference rounds it (double, then float). */
#define TKV_VK_MATH_INV_SQRT 1280u
/* [gi]: the QJL sketch's scale (struct tkv_qjl_tables). */
#define TKV_VK_MATH_QJL_FACTOR 1288u
/* [gi][bits - 2]: 16 centroids, 16 boundaries, 16 squared centroids. */
#define TKV_VK_MATH_CODEBOOKS 1296u
#define TKV_VK_MATH_CODEBOOK_FLOATS 48u
/* g x g row-major matrices of every group size, smallest first: the matrix
 * of gi starts TKV_VK_MATH_SQUARE(gi) floats into its table. */
#define TKV_VK_MATH_DENSE 2016u
#define TKV_VK_MATH_QJL 23840u
#define TKV_VK_MATH_FLOATS 45664u
#define TKV_VK_MATH_SQUARE(gi) (64u * ((1u << (2u * (gi))) - 1u) / 3u)

/* ---- row encodings (the host maps enum tkv_type onto these) -------------- */

#define TKV_VK_ENC_F32 0u
#define TKV_VK_ENC_F16 1u
#define TKV_VK_ENC_Q8_0 2u
#define TKV_VK_ENC_TURBO 3u /* with bits; the QJL flag adds the residual blocks */

#define TKV_VK_ROT_NONE 0u
#define TKV_VK_ROT_WHT 1u
#define TKV_VK_ROT_DENSE 2u

/* flags of the rows, quantize and merge shaders */
#define TKV_VK_FLAG_QJL 1u        /* QJL key type: residual blocks after the turbo row */
#define TKV_VK_FLAG_CORRECTED 2u  /* scale = ||x|| / ||c[idx]|| */
#define TKV_VK_FLAG_INVERSE 4u    /* rows shader: apply R^T (dequantize) instead of R */
#define TKV_VK_FLAG_QUERY 8u      /* rows shader: float input rows (queries), not stored ones */
#define TKV_VK_FLAG_PAGED 16u     /* rows shader: source rows addressed through a block table */
/* outlier-split type (turbo3o, turbo4o): fp16 outliers after the turbo
 * row, n_o = ceil(head_dim / 32) indices (1 byte each up to head_dim 256,
 * else 2) then n_o values; quantize picks and stores them, rows adds them
 * after R^T (dequantize) or writes q beside R q (prepare), merge adds the
 * partials' second half (the outliers, unrotated) after R^T */
#define TKV_VK_FLAG_OUTLIER 32u
/* The outlier-split rule the shaders follow (layout.c checks both against
 * turbokv_format.h): one outlier per this many values, rounded up, and
 * one-byte indices up to this head_dim. */
#define TKV_VK_OUTLIER_EVERY 32u
#define TKV_VK_OUTLIER_BYTE_INDEX_MAX 256u

/* Group sizes of a row, in order, one per byte (the list tkv_group_split
 * gives), in four words. */
#define TKV_VK_GROUP_WORDS 4u

/* ---- specialization constants of the attention shader -------------------- */

#define TKV_VK_SPEC_WG 0u        /* local_size_x (every shader) */
#define TKV_VK_SPEC_HEAD_DIM 1u
#define TKV_VK_SPEC_K_ENC 2u
#define TKV_VK_SPEC_K_BITS 3u
#define TKV_VK_SPEC_K_QJL 4u
#define TKV_VK_SPEC_K_ROW_BYTES 5u
#define TKV_VK_SPEC_V_ENC 6u
#define TKV_VK_SPEC_V_BITS 7u
#define TKV_VK_SPEC_V_QJL 8u
#define TKV_VK_SPEC_V_ROW_BYTES 9u
#define TKV_VK_SPEC_QT 10u       /* query rows per workgroup */
#define TKV_VK_SPEC_Q8_BLOCK 11u
#define TKV_VK_SPEC_GROUPS 12u   /* 12..15: the group words */
#define TKV_VK_SPEC_BATCH_ROWS 16u /* rows per staged batch, a power of two up to TKV_VK_WG */
/* Measurement knob TURBO_VK_SHADER_SKIP (README "Measurement knobs"): parts
 * of the attention shader left out, TKV_VK_DBG_* bits; 0 in normal use. */
#define TKV_VK_SPEC_DEBUG 17u
/* The rotation the attention shader applies to the raw queries itself
 * (turbo keys without QJL: no prepare dispatch); TKV_VK_ROT_NONE when the
 * queries come prepared or need none. */
#define TKV_VK_SPEC_Q_ROT 18u
/* decode.comp: the device's subgroup size (fixed: min = max), lanes of a
 * subgroup that walks a chunk; the attention shader ignores it. */
#define TKV_VK_SPEC_SUBGROUP 19u
/* Outlier-split keys (scored against q as well: the queries carry q after
 * R q) and values (their outliers accumulated unrotated, a second half of
 * each partial): 1, else 0 (attention.comp; decode.comp takes neither). */
#define TKV_VK_SPEC_K_SPLIT 20u
#define TKV_VK_SPEC_V_SPLIT 21u
/* decode.comp merges the chunks of a (unit, kv head) itself, in the
 * workgroup that finishes last (1; partials.glsl), or leaves the partials
 * to merge.comp (0); and the values' rotation it then undoes
 * (TKV_VK_ROT_*). */
#define TKV_VK_SPEC_FUSED 22u
#define TKV_VK_SPEC_V_ROT 23u
/* decode_wide.comp: the alignment in bytes (1, 2, 4, 8 or 16) every K row
 * and every V row starts at (pool address, strides, row bytes), and the
 * words of one group of rows' loads per invocation (TURBO_VK_WIDE_WORDS);
 * 0 for the other attention shaders. */
#define TKV_VK_SPEC_K_ALIGN 24u
#define TKV_VK_SPEC_V_ALIGN 25u
#define TKV_VK_SPEC_WIDE_WORDS 26u
/* The address of the device's constant tables (struct tkv_math), low and
 * high words: fixed for the device's life, so the attention shaders take it
 * as a constant and their push constants have room for the queries'
 * address (which may be the host's own buffer). */
#define TKV_VK_SPEC_MATH_LO 27u
#define TKV_VK_SPEC_MATH_HI 28u
/* decode.comp built with TKV_CLOCK=1 (TURBO_VK_CLOCK=1): the address of its
 * per-workgroup clock records, low and high words */
#define TKV_VK_SPEC_CLOCK_LO 29u
#define TKV_VK_SPEC_CLOCK_HI 30u
/* decode.comp: V rows taken together in its value loop (1, 2 or 4), and
 * chunks whose partials the merge by the last workgroup loads together
 * (1..16); 0: the shader's defaults (4; 16, or 8 for outlier-split
 * values). Measurement knobs TURBO_VK_DECODE_VROWS, TURBO_VK_MERGE_ILP. */
#define TKV_VK_SPEC_V_ROWS 31u
#define TKV_VK_SPEC_MERGE_ILP 32u
#define TKV_VK_SPEC_COUNT 33u
/* One workgroup's clock record (TKV_CLOCK): uint64 words */
#define TKV_VK_CLOCK_WORDS 8u
#define TKV_VK_CLOCK_RT_START 0u  /* device clock (ns) at the start */
#define TKV_VK_CLOCK_START 1u     /* the SM's clock (cycles) at the start */
#define TKV_VK_CLOCK_PROLOGUE 2u  /* ... after the prologue (queries rotated, codebooks in place) */
#define TKV_VK_CLOCK_LOOP 3u      /* ... after subgroup 0's loop over its rows */
#define TKV_VK_CLOCK_PARTIAL 4u   /* ... after the workgroup's partial is written */
#define TKV_VK_CLOCK_END 5u       /* ... at the end (after the merge, where it merged) */
#define TKV_VK_CLOCK_RT_END 6u    /* device clock (ns) at the end */
#define TKV_VK_CLOCK_MERGED 7u    /* 1: this workgroup merged its (unit, kv head) */
/* decode.comp holds a K and a V row of at most this many words in
 * registers (72 bytes: turbo4 at head_dim 128, turbo3 at 160, q8_0 at 64). */
#define TKV_VK_DECODE_ROW_WORDS 18u
#define TKV_VK_DBG_NO_K_LOADS 1u  /* K rows not loaded into the stage */
#define TKV_VK_DBG_NO_SCORES 2u   /* no scoring (scores 0) */
#define TKV_VK_DBG_NO_V_LOADS 4u  /* V rows not loaded into the stage */
#define TKV_VK_DBG_NO_VALUES 8u   /* no value accumulation */
#define TKV_VK_DBG_NO_SYNC 16u    /* decode.comp: no subgroup barriers around a batch (wrong results) */
#define TKV_VK_DBG_NO_BLOCKS 32u  /* decode.comp: rows as if the block table were the identity (wrong results) */
#define TKV_VK_DBG_NO_K_OUTLIERS 64u  /* decode.comp: outlier-split keys scored without their outliers (wrong results) */
#define TKV_VK_DBG_NO_V_OUTLIERS 128u /* decode.comp: outlier-split values without their outliers (wrong results) */

/* Workgroup size of every shader (tc_probe.comp: one subgroup of 32). */
#define TKV_VK_WG 128u
/* tc_probe.comp's record per invocation: the counts of A's and C's
 * elements, A's 8, C's 4 (tensor.c). */
#define TKV_VK_TC_PROBE_FLOATS 14u
/* Shared memory of the attention shader (it must fit the 32 KB Vulkan
 * devices offer in practice; lavapipe has exactly that): a batch of K rows,
 * then of V rows, staged in TKV_VK_STAGE_BYTES, plus a query tile of up to
 * TKV_VK_QUERY_TILE_FLOATS floats. A batch's rows, a power of two of them,
 * may come from several pool blocks (segments); each segment is staged from
 * a 16-byte aligned address and costs at most TKV_VK_STAGE_SLACK bytes more
 * than its rows (its misalignment, the word read past its last row and the
 * rounding to whole 16-byte loads). The host sizes the batch so that rows
 * and slack of every segment fit. */
#define TKV_VK_STAGE_BYTES 12288u
#define TKV_VK_STAGE_SLACK 64u
#define TKV_VK_QUERY_TILE_FLOATS 2048u
/* Scratch regions of an attention call start at multiples of this many
 * bytes from the work buffer's address; the push constants give them in
 * these units. */
#define TKV_VK_ALIGN 256u
/* Elements one quantize or rows workgroup holds in shared memory. */
#define TKV_VK_ROWS_ELEMS 1024u

/* ---- push constants ------------------------------------------------------ */

/* Stored rows live in pool blocks (struct tkv_pool): token pos, head h at
 *   pool + blocks[pos / block_tokens - first_pos / block_tokens] * block_stride
 *        + h * head_stride + (pos % block_tokens) * row_bytes,
 * blocks being the slice of the sequence's block table from the entry of
 * first_pos on. Every shader computes a row's address once per row (per
 * segment of contiguous rows in the attention shader), in 64 bits. */

/* quantize.comp: n_tokens x n_heads float rows in, stored as tokens
 * first_pos .. of one sequence. */
#define TKV_VK_QUANTIZE_PUSH                                                        \
    uint64_t src;          /* device floats [n_tokens][n_heads][head_dim] */        \
    uint64_t pool;                                                                  \
    uint64_t head_stride;                                                           \
    uint64_t block_stride;                                                          \
    uint64_t blocks;       /* uint32 block table slice (see above) */               \
    uint64_t math;                                                                  \
    uint64_t counter;      /* uint32: non-finite inputs stored as 0 */              \
    uint32_t first_pos;                                                             \
    uint32_t block_tokens;                                                          \
    uint32_t n_tokens;                                                              \
    uint32_t n_heads;                                                               \
    uint32_t head_dim;                                                              \
    uint32_t row_bytes;                                                             \
    uint32_t encoding;                                                              \
    uint32_t bits;                                                                  \
    uint32_t rotation;                                                              \
    uint32_t flags;                                                                 \
    uint32_t rows_per_wg;                                                           \
    uint32_t q8_block;                                                              \
    uint32_t groups[TKV_VK_GROUP_WORDS];

/* rows.comp: stored rows to floats in the original domain (dequantize:
 * TKV_VK_FLAG_PAGED, n_rows = n_tokens x n_heads of one sequence, token
 * major), or query rows to what the attention shader scores against
 * (prepare: src is row 0, rows row_bytes apart). */
#define TKV_VK_ROWS_PUSH                                                            \
    uint64_t src;          /* paged: the pool; else row 0 */                        \
    uint64_t dst;          /* floats, dst_stride per row */                         \
    uint64_t math;                                                                  \
    uint64_t blocks;       /* paged: uint32 block table slice (see above) */        \
    uint64_t head_stride;  /* paged */                                              \
    uint64_t block_stride; /* paged */                                              \
    uint32_t first_pos;    /* paged */                                              \
    uint32_t block_tokens; /* paged */                                              \
    uint32_t n_heads;      /* paged */                                              \
    uint32_t n_rows;                                                                \
    uint32_t head_dim;                                                              \
    uint32_t row_bytes;    /* bytes of a stored row; not paged: between rows */     \
    uint32_t dst_stride;                                                            \
    uint32_t encoding;                                                              \
    uint32_t bits;                                                                  \
    uint32_t rotation;                                                              \
    uint32_t flags;                                                                 \
    uint32_t rows_per_wg;                                                           \
    uint32_t q8_block;                                                              \
    uint32_t groups[TKV_VK_GROUP_WORDS];

/* attention.comp: one chunk of one (unit, kv head); a unit is up to QT query
 * rows of one sequence. The *_at members are offsets from inputs or work in
 * units of TKV_VK_ALIGN bytes. */
#define TKV_VK_ATTENTION_PUSH                                                       \
    uint64_t k;            /* the pools */                                          \
    uint64_t v;                                                                     \
    uint64_t k_head_stride;                                                         \
    uint64_t v_head_stride;                                                         \
    uint64_t k_block_stride;                                                        \
    uint64_t v_block_stride;                                                        \
    uint64_t inputs;       /* the call's inputs: queries, units, block table */     \
    uint64_t work;         /* the call's scratch: partial outputs first */          \
    uint64_t q;            /* queries (raw or prepared), [n_q_total][n_q_heads] rows: \
                            * in inputs, or the host's f32 buffer itself */        \
    uint32_t units_at;     /* from inputs: struct tkv_vk_unit[n_units] */           \
    uint32_t blocks_at;    /* from inputs: the call's block table */                \
    uint32_t ml_at;        /* from work: partial max, sum, skipped rows */          \
    uint32_t n_units;                                                               \
    uint32_t n_kv;                                                                  \
    uint32_t ratio;        /* query heads per kv head */                            \
    uint32_t chunk;        /* rows per chunk, a multiple of TKV_VK_WG */            \
    uint32_t max_chunks;   /* chunks of the unit that has most */                   \
    uint32_t block_tokens;                                                          \
    uint32_t window;       /* 0: none */                                            \
    float scale;                                                                    \
    float softcap;         /* 0: none */                                            \
    float threshold;                                                                \
    uint32_t grid_off;     /* decode.comp: chunk c holds positions                  \
                            * [c chunk - grid_off, (c + 1) chunk - grid_off) */

/* merge.comp: one output row from the partials of its chunks. */
#define TKV_VK_MERGE_PUSH                                                           \
    uint64_t part_acc;                                                              \
    uint64_t part_ml;                                                               \
    uint64_t out_rows;     /* floats [n_q_total][n_q_heads][head_dim] */            \
    uint64_t counts;       /* uint32 per output row: V rows skipped */              \
    uint64_t lse;          /* float per output row: log sum exp of the scores */    \
    uint64_t units;                                                                 \
    uint64_t row_units;    /* uint32 per query row (token x GQA ratio): its unit */ \
    uint64_t math;                                                                  \
    uint32_t n_rows;                                                                \
    uint32_t ratio;                                                                 \
    uint32_t n_kv;                                                                  \
    uint32_t chunk;                                                                 \
    uint32_t max_chunks;                                                            \
    uint32_t head_dim;                                                              \
    uint32_t rotation;                                                              \
    uint32_t flags;                                                                 \
    uint32_t window;                                                                \
    uint32_t groups[TKV_VK_GROUP_WORDS];

/* One unit of an attention call, in device memory: query rows qr0 .. qr0 +
 * QT - 1 (row qr: token qr / ratio, head qr % ratio of the GQA group) of a
 * sequence, which see the chunks c_first .. c_first + n_chunks - 1. */
#define TKV_VK_UNIT_MEMBERS                                                         \
    uint32_t n_ctx;                                                                 \
    uint32_t n_q;                                                                   \
    uint32_t q_first;      /* the sequence's first query token in q */              \
    uint32_t block_first;  /* the sequence's first entry in the block table */      \
    uint32_t qr0;                                                                   \
    uint32_t c_first;                                                               \
    uint32_t n_chunks;                                                              \
    uint32_t fused_at;     /* from inputs: struct of TKV_VK_FUSED_MEMBERS (FUSED) */

/* decode.comp with FUSED: where the workgroup that finishes a (unit, kv
 * head) last writes the merged rows, and the arrival counters, one per
 * (unit, kv head), zero before the dispatch and left zero after it. */
#define TKV_VK_FUSED_MEMBERS                                                        \
    uint64_t out_rows;     /* floats [n_q_total][n_q_heads][head_dim] */            \
    uint64_t counts;       /* uint32 per output row: V rows skipped */              \
    uint64_t lse;          /* float per output row: log sum exp of the scores */    \
    uint64_t arrivals;     /* uint32 per (unit, kv head): its workgroups done */

/* decode.comp's append variant (-DTKV_APPEND=1: ABI 2.7's append_attention,
 * with FUSED): the new tokens first .. first + n - 1 of the unit's sequence
 * as f32, f16 or bf16 rows of the host's device buffers, which the workgroups whose
 * chunks hold them quantize (encode.glsl) before they read them; at
 * fused_at + TKV_VK_FUSED_BYTES in the inputs. The formats are the
 * pipeline's (K_ENC, K_BITS, .. and the groups); flags: TKV_VK_FLAG_*
 * of each pool's quantize (corrected, outlier). */
#define TKV_VK_FUSED_BYTES 32u
#define TKV_VK_APPEND_MEMBERS                                                       \
    uint64_t k_src;        /* rows [n][n_kv][head_dim] of k_elem */                \
    uint64_t v_src;                                                                 \
    uint32_t first;                                                                 \
    uint32_t n;                                                                     \
    uint32_t k_flags;                                                               \
    uint32_t v_flags;                                                               \
    uint32_t k_rotation;                                                            \
    uint32_t v_rotation;                                                            \
    uint32_t k_elem;       /* enum tkv_elem of the rows: 0 f32, 1 f16, 2 bf16 */    \
    uint32_t v_elem;

/* convert.comp (the host's device tensors): n elements at src to dst, each
 * in an element type (enum tkv_elem: 0 f32, 1 f16, 2 bf16). */
#define TKV_VK_CONVERT_PUSH                                                         \
    uint64_t src;                                                                   \
    uint64_t dst;                                                                   \
    uint32_t n;                                                                     \
    uint32_t src_elem;                                                              \
    uint32_t dst_elem;                                                              \
    uint32_t reserved;

/* A partial's record in part_ml: running max, sum of weights, skipped rows
 * (as uint bits), unused. */
#define TKV_VK_ML_FLOATS 4u
/* Most chunks one query row's rows are split into; bounds the merge's
 * shared memory. */
#define TKV_VK_MAX_CHUNKS 1024u

#endif
