/* SPDX-License-Identifier: MIT */
/*
 * The kernels of one ISA level, written once over a small vector vocabulary
 * and compiled by each isa_*.c after it defines that vocabulary (a template
 * by inclusion). What every level computes:
 *
 * Quantize (encode): the reference's bytes exactly (rows.c). The turbo
 * norms are summed in double in the canonical order of cpu_sum8; y = x / n
 * is one IEEE division; the WHT is the same butterflies in the same order
 * (a stage pairs lanes inside a vector, or two vectors); the nearest
 * centroid is a binary search over the sorted midpoints (y >= b moves up:
 * the reference's count of boundaries <= y); fp16 conversions round to
 * nearest even like tkv_fp16_from_float.
 *
 * Attention (attend_span): blocks of LANES rows. Scores: each K row is
 * decoded once per chunk of LANES values (turbo: the packed indices index a
 * 16-entry table of centroids times the group scale) and multiplied into
 * the accumulators of up to CPU_SUBBATCH queries at once (the GQA group and
 * the new tokens share the decode), SCORE_ROWS rows at a time so that each
 * chunk of the queries is loaded once for all of them; the LANES rows'
 * accumulators are then reduced together so that one vector holds the
 * block's scores. Online
 * softmax per block (running max, sum, and a pending rescale of the
 * accumulator). Values: only rows some query keeps (sparse V) are decoded,
 * chunk by chunk, into the queries' accumulators, weighted by p x scale;
 * turbo values stay in the rotated domain (the driver unrotates once per
 * output row).
 *
 * The including file defines:
 *   LANES, CPU_ROW_SLOT(r) (where vf_sum_rows wants row r), ISA_SYMBOL,
 *   ISA_NAME, ISA_NARROWER;
 *   types vf (LANES floats), vi (LANES int32), vtab (a 16-float table),
 *   vd8 (8 doubles);
 *   vf_load vf_store vf_set1 vf_add vf_sub vf_mul vf_div vf_min vf_max vf_abs
 *   vf_fma (a*b+c) vf_fnma (c-a*b) vf_round (to nearest even) vf_ldexp
 *   (p * 2^n) vf_hsum vf_hmax vf_ge_bits (bitmask of lanes a >= t)
 *   vf_keep_bits (zero the other lanes) vf_select (lanes in a bitmask from
 *   a, the others from b)
 *   vf_sum_rows (lane r := sum of the lanes of part[CPU_ROW_SLOT(r)])
 *   vf_butterfly (one WHT stage of stride h < LANES: lane j gets
 *   v[j] + v[j^h] if bit h of j is clear, else v[j^h] - v[j]);
 *   vf_load_f32_bytes vf_load_f16 vf_store_f16 vf_load_i8 vf_store_i8_round
 *   (roundf, then int8); vtab_load vtab_scale vtab_lookup vtab_decode (LANES
 *   indices of `bits` bits from p, LSB first; may read 8 bytes); vi_zero
 *   vi_add_const vi_add_if_ge vi_pack (LANES indices into LANES*bits/8
 *   bytes); vd8_zero vd8_add_sq (lane i%8 += x_i^2) vd8_add (lane i%8 +=
 *   x_i) vd8_tree (cpu_sum8's order); cpu_half (the fp16 at p as float);
 *   fp_flush_begin / fp_flush_end (denormals as zero in between, where the
 *   ISA can).
 */
#include <float.h>
#include <math.h>
#include <stdalign.h>
#include <string.h>

#define ALWAYS_INLINE static inline __attribute__((always_inline))
/* Loops over the queries of a kernel: unrolled, so their accumulators are
 * registers; size_t, so that offsets computed from q fold into constant
 * displacements (32-bit ones could wrap, which the compiler must honour). */
#define FOR_Q _Pragma("GCC unroll 8") for (size_t q = 0; q < Q; q++)

static inline uint32_t low_bits(uint32_t n) { return n >= 32u ? ~0u : (1u << n) - 1u; }

/* ---- e^x -------------------------------------------------------------------- */

/* e^x for x <= 0 (Cephes expf: x = n ln2 + r with ln2 in two parts, a
 * degree-6 polynomial for e^r, times 2^n): within 1 ulp of the correctly
 * rounded value for every float in [-87.3, 0] (checked exhaustively on
 * AVX-512). Below -87.3 it returns ~1e-38 rather than 0: the callers mask
 * the rows they drop. */
static inline vf vf_exp(vf x)
{
    x = vf_max(x, vf_set1(-87.3f));
    vf n = vf_round(vf_mul(x, vf_set1(1.44269504088896341f)));
    vf r = vf_fnma(n, vf_set1(0.693359375f), x);
    r = vf_fnma(n, vf_set1(-2.12194440e-4f), r);
    vf p = vf_set1(1.9875691500e-4f);
    p = vf_fma(p, r, vf_set1(1.3981999507e-3f));
    p = vf_fma(p, r, vf_set1(8.3334519073e-3f));
    p = vf_fma(p, r, vf_set1(4.1665795894e-2f));
    p = vf_fma(p, r, vf_set1(1.6666665459e-1f));
    p = vf_fma(p, r, vf_set1(5.0000001201e-1f));
    p = vf_fma(p, vf_mul(r, r), vf_add(r, vf_set1(1.0f)));
    return vf_ldexp(p, n);
}

/* tanh x (Cephes tanhf: x + x^3 P(x^2) below 0.625, (1 - e) / (1 + e) with
 * e = e^-2|x| above, the sign restored): within 1.3 ulp of the correctly
 * rounded value (checked over every float in [1e-7, 12]). */
static inline vf vf_tanh(vf x)
{
    vf a = vf_abs(x), z = vf_mul(x, x);
    vf p = vf_set1(-5.70498872745e-3f);
    p = vf_fma(p, z, vf_set1(2.06390887954e-2f));
    p = vf_fma(p, z, vf_set1(-5.37397155531e-2f));
    p = vf_fma(p, z, vf_set1(1.33314422036e-1f));
    p = vf_fma(p, z, vf_set1(-3.33332819422e-1f));
    vf small = vf_fma(vf_mul(p, z), x, x);
    vf e = vf_exp(vf_mul(a, vf_set1(-2.0f)));
    vf big = vf_div(vf_sub(vf_set1(1.0f), e), vf_add(vf_set1(1.0f), e));
    big = vf_select(vf_ge_bits(x, 0.0f), big, vf_sub(vf_set1(0.0f), big));
    return vf_select(vf_ge_bits(a, 0.625f), big, small);
}

/* ---- rotation ---------------------------------------------------------------- */

/* rotate.c's randomized_hadamard: the same roundings in the same order. */
static void wht(const float *pre, const float *post, float inv_sqrt, uint32_t g, float *v)
{
    for (uint32_t o = 0; o < g; o += LANES) {
        vf x = vf_mul(vf_load(v + o), vf_load(pre + o));
        for (uint32_t h = 1; h < LANES; h <<= 1)
            x = vf_butterfly(x, h);
        vf_store(v + o, x);
    }
    for (uint32_t h = LANES; h < g; h <<= 1)
        for (uint32_t i = 0; i < g; i += 2 * h)
            for (uint32_t j = i; j < i + h; j += LANES) {
                vf a = vf_load(v + j), b = vf_load(v + j + h);
                vf_store(v + j, vf_add(a, b));
                vf_store(v + j + h, vf_sub(a, b));
            }
    for (uint32_t o = 0; o < g; o += LANES)
        vf_store(v + o, vf_mul(vf_mul(vf_load(v + o), vf_set1(inv_sqrt)), vf_load(post + o)));
}

/* WHT vectorized; the dense rotation (for comparison only) and none as in
 * rotate.c. */
static void rotate_group(uint32_t rotation, const struct cpu_group *grp, enum cpu_direction dir,
                         float *v)
{
    const struct tkv_group_tables *t = grp->tables;
    if (rotation != TKV_ROTATION_WHT)
        cpu_rotate_group(rotation, grp, dir, v);
    else if (dir == CPU_ROTATE)
        wht(t->sign1, t->sign2, grp->inv_sqrt, grp->size, v);
    else
        wht(t->sign2, t->sign1, grp->inv_sqrt, grp->size, v);
}

/* ---- encode ------------------------------------------------------------------ */

/* Little-endian host: an f32 row is its floats. */
static void encode_f32(const struct cpu_layout *l, const float *x, uint8_t *row)
{
    memcpy(row, x, sizeof *x * l->head_dim);
}

/* rows.c's f16_encode: clamped to the finite half range, rounded to nearest even. */
static void encode_f16(const struct cpu_layout *l, const float *x, uint8_t *row)
{
    for (uint32_t o = 0; o < l->head_dim; o += LANES)
        vf_store_f16(row + 2u * o, vf_min(vf_max(vf_load(x + o), vf_set1(-TKV_FP16_MAX)),
                                          vf_set1(TKV_FP16_MAX)));
}

/* rows.c's q8_0_encode: d = amax / 127, q = roundf(x * (1 / d)). */
static void encode_q8_0(const struct cpu_layout *l, const float *x, uint8_t *row)
{
    for (uint32_t first = 0; first < l->head_dim; first += TKV_Q8_0_BLOCK) {
        uint32_t n = l->head_dim - first < TKV_Q8_0_BLOCK ? l->head_dim - first : TKV_Q8_0_BLOCK;
        uint8_t *blk = row + first / TKV_Q8_0_BLOCK * (2u + TKV_Q8_0_BLOCK);
        vf amax = vf_set1(0.0f);
        for (uint32_t o = 0; o < n; o += LANES)
            amax = vf_max(amax, vf_abs(vf_load(x + first + o)));
        float d = vf_hmax(amax) / 127.0f, id = d >= FLT_MIN ? 1.0f / d : 0.0f;
        store_u16(blk, tkv_fp16_saturated(d));
        for (uint32_t o = 0; o < n; o += LANES)
            vf_store_i8_round(blk + 2 + o, vf_mul(vf_load(x + first + o), vf_set1(id)));
    }
}

/* Index of the nearest centroid: binary search over the ascending
 * midpoints (boundary[k] for k < n - 1), y >= boundary moving up. */
ALWAYS_INLINE vi nearest_centroid(vtab boundary, vf y, const uint32_t bits)
{
    vi lo = vi_zero();
    for (uint32_t step = 1u << (bits - 1); step; step >>= 1)
        lo = vi_add_if_ge(lo, y, vtab_lookup(boundary, vi_add_const(lo, step - 1)), step);
    return lo;
}

/* rows.c's turbo_encode_group for every group of the row. */
ALWAYS_INLINE void encode_turbo(const struct cpu_layout *l, const float *x, uint8_t *row,
                                const uint32_t bits)
{
    for (uint32_t g = 0; g < l->n_groups; g++) {
        const struct cpu_group *grp = &l->groups[g];
        const float *xg = x + grp->first;
        uint8_t *blk = row + grp->byte_offset;
        vd8 sq = vd8_zero();
        for (uint32_t o = 0; o < grp->size; o += LANES)
            sq = vd8_add_sq(sq, vf_load(xg + o));
        float norm = (float)sqrt(vd8_tree(sq)), scale = 0.0f;
        if (norm > 0.0f) {
            alignas(64) float y[TKV_GROUP_MAX];
            for (uint32_t o = 0; o < grp->size; o += LANES)
                vf_store(y + o, vf_div(vf_load(xg + o), vf_set1(norm)));
            rotate_group(l->rotation, grp, CPU_ROTATE, y);
            /* tkv_centroid_step puts -0 below a boundary of 0: so does
             * -FLT_MIN (normal, so a caller's denormals-are-zero mode
             * cannot turn it back into 0), on the same side of every
             * other boundary */
            for (uint32_t i = 0; i < grp->size; i++)
                if (tkv_float_bits(y[i]) == 0x80000000u)
                    y[i] = -FLT_MIN;
            vtab boundary = vtab_load(grp->lut->boundary);
            vtab centroid_sq = vtab_load(grp->lut->centroid_sq);
            vd8 csq = vd8_zero();
            for (uint32_t o = 0; o < grp->size; o += LANES) {
                vi idx = nearest_centroid(boundary, vf_load(y + o), bits);
                csq = vd8_add(csq, vtab_lookup(centroid_sq, idx));
                vi_pack(idx, bits, blk + 2 + o * bits / 8u);
            }
            double csq_sum = vd8_tree(csq);
            scale = norm;
            if (l->scale_mode == TKV_SCALE_NORM_CORRECTED && csq_sum > 0.0)
                scale = (float)(norm / sqrt(csq_sum));
        } else {
            memset(blk + 2, 0, grp->size * bits / 8u);
        }
        store_u16(blk, tkv_fp16_saturated(scale));
    }
}

/* ---- rows as segments of one scale --------------------------------------------- */

/* Kinds of row the attention kernels are specialized for (constants after
 * inlining, so every switch below folds away). */
enum { KIND_F32, KIND_F16, KIND_Q8_0, KIND_TURBO2, KIND_TURBO3, KIND_TURBO4 };

#define KIND_BITS(kind) ((kind) - KIND_TURBO2 + 2u)
#define KIND_IS_TURBO(kind) ((kind) >= KIND_TURBO2)
#define KIND_HAS_SCALE(kind) ((kind) >= KIND_Q8_0)

/* The values of a row that share one scale: the whole row (f32, f16), a
 * q8_0 block, a turbo group. Its chunks of LANES values lie CHUNK_BYTES
 * apart from data_at on. */
struct segment {
    uint32_t first, len; /* values [first, first + len) of the row */
    uint32_t scale_at;   /* byte offset of its fp16 scale in the row (q8_0, turbo) */
    uint32_t data_at;    /* byte offset of its first value */
    const struct cpu_lut *lut;
};

#define CHUNK_BYTES(kind)                                                                      \
    ((kind) == KIND_F32    ? 4u * LANES                                                        \
     : (kind) == KIND_F16  ? 2u * LANES                                                        \
     : (kind) == KIND_Q8_0 ? LANES                                                             \
                           : LANES * KIND_BITS(kind) / 8u)

ALWAYS_INLINE uint32_t segment_count(const struct cpu_layout *l, const uint32_t kind)
{
    if (kind == KIND_Q8_0)
        return (l->head_dim + TKV_Q8_0_BLOCK - 1) / TKV_Q8_0_BLOCK;
    return KIND_IS_TURBO(kind) ? l->n_groups : 1u;
}

ALWAYS_INLINE struct segment segment_at(const struct cpu_layout *l, uint32_t i, const uint32_t kind)
{
    if (kind == KIND_Q8_0) {
        uint32_t first = i * TKV_Q8_0_BLOCK, rest = l->head_dim - first;
        uint32_t at = i * (2u + TKV_Q8_0_BLOCK);
        return (struct segment){ first, rest < TKV_Q8_0_BLOCK ? rest : TKV_Q8_0_BLOCK, at,
                                 at + 2, NULL };
    }
    if (KIND_IS_TURBO(kind)) {
        const struct cpu_group *grp = &l->groups[i];
        return (struct segment){ grp->first, grp->size, grp->byte_offset, grp->byte_offset + 2,
                                 grp->lut };
    }
    return (struct segment){ 0, l->head_dim, 0, 0, NULL };
}

/* The LANES values whose bytes start at p, without the segment's scale;
 * table holds the turbo centroids (scaled or not). */
ALWAYS_INLINE vf chunk_at(const uint8_t *p, const vtab *table, const uint32_t kind)
{
    switch (kind) {
    case KIND_F32: return vf_load_f32_bytes(p);
    case KIND_F16: return vf_load_f16(p);
    case KIND_Q8_0: return vf_load_i8(p);
    default: return vtab_decode(*table, p, KIND_BITS(kind));
    }
}

/* The scales of a segment of the block's rows as floats (0 past n_rows),
 * converted one by one: gathering the halves into a vector first made its
 * load wait on 16 two-byte stores (a failed store forward); one by one,
 * q8_0 ran 1.09x faster at 4K and 1.02x at 16K (scripts/cpu-ab.c, AVX-512,
 * 1 thread). */
ALWAYS_INLINE void block_scales(const uint8_t *rows, uint32_t row_bytes, uint32_t n_rows,
                                uint32_t offset, float *out)
{
    for (uint32_t r = 0; r < LANES; r++)
        out[r] = r < n_rows ? cpu_half(rows + (size_t)r * row_bytes + offset) : 0.0f;
}

/* The chunk count of a segment as a constant for the common sizes (groups
 * of 128 and 64, q8_0 blocks of 32): fully unrolled loops with constant
 * offsets measured ~20% faster than a loop over a runtime count. */
#define WITH_CHUNK_COUNT(len, call)                                                            \
    switch ((len) / LANES) {                                                                   \
    case TKV_GROUP_MAX / LANES: call(TKV_GROUP_MAX / LANES); break;                            \
    case TKV_GROUP_MAX / 2 / LANES: call(TKV_GROUP_MAX / 2 / LANES); break;                    \
    case TKV_Q8_0_BLOCK / LANES: call(TKV_Q8_0_BLOCK / LANES); break;                          \
    default: call((len) / LANES); break;                                                       \
    }

/* Rows a score pass takes at once: each chunk of the queries is loaded once
 * for all of them (their R x Q accumulators stay in registers). */
#ifndef ACC_VECTORS
#define ACC_VECTORS 8u
#endif
#define SCORE_ROWS(Q) ((Q) * 4u <= ACC_VECTORS ? 4u : (Q) * 2u <= ACC_VECTORS ? 2u : 1u)

/* acc[r * Q + q] += <segment of K row r at p[r], query q> for R rows at
 * once, each row's products added in chunk order (R = 1 for a single row). */
ALWAYS_INLINE void score_segment_rows(const uint8_t *const *p, const float *qs, const vtab *table,
                                      const float *scale, uint32_t n_chunks, vf *acc,
                                      const uint32_t Q, const uint32_t R, const uint32_t kind)
{
    _Pragma("GCC unroll 16") for (size_t c = 0; c < n_chunks; c++) {
        vf qv[CPU_SUBBATCH];
        FOR_Q qv[q] = vf_load(qs + (c * Q + q) * LANES);
        _Pragma("GCC unroll 4") for (size_t r = 0; r < R; r++) {
            vf k = chunk_at(p[r] + c * CHUNK_BYTES(kind), &table[r], kind);
            if (kind == KIND_Q8_0)
                k = vf_mul(k, vf_set1(scale[r]));
            FOR_Q acc[r * Q + q] = vf_fma(k, qv[q], acc[r * Q + q]);
        }
    }
}

ALWAYS_INLINE void score_rows(const struct cpu_layout *l, const uint8_t *rows, uint32_t n_rows,
                              const float *queries, float *scores, const uint32_t Q,
                              const uint32_t kind)
{
    const uint32_t n_seg = segment_count(l, kind), R = SCORE_ROWS(Q);
    alignas(64) float scale[TKV_HEAD_DIM_MAX / TKV_Q8_0_BLOCK][LANES];
    vf part[CPU_SUBBATCH][LANES];
    if (KIND_HAS_SCALE(kind))
        for (uint32_t i = 0; i < n_seg; i++)
            block_scales(rows, l->row_bytes, n_rows, segment_at(l, i, kind).scale_at, scale[i]);
    for (uint32_t r0 = 0; r0 < LANES; r0 += R) {
        if (R > 1 && r0 + R <= n_rows) { /* R rows that all exist */
            const uint8_t *row[4];
            vf acc[4u * CPU_SUBBATCH];
            _Pragma("GCC unroll 4") for (uint32_t r = 0; r < R; r++) {
                row[r] = rows + (size_t)(r0 + r) * l->row_bytes;
                FOR_Q acc[r * Q + q] = vf_set1(0.0f);
            }
            for (uint32_t i = 0; i < n_seg; i++) {
                struct segment s = segment_at(l, i, kind);
                const float *qs = queries + (size_t)s.first * Q; /* tiled: chunk-major */
                const uint8_t *at[4];
                vtab table[4];
                _Pragma("GCC unroll 4") for (uint32_t r = 0; r < R; r++) {
                    at[r] = row[r] + s.data_at;
                    if (KIND_IS_TURBO(kind))
                        table[r] = vtab_scale(vtab_load(s.lut->centroid), scale[i][r0 + r]);
                }
#define SCORE_SEGMENT(n) score_segment_rows(at, qs, table, &scale[i][r0], n, acc, Q, R, kind)
                WITH_CHUNK_COUNT(s.len, SCORE_SEGMENT)
#undef SCORE_SEGMENT
            }
            _Pragma("GCC unroll 4") for (uint32_t r = 0; r < R; r++)
                FOR_Q part[q][CPU_ROW_SLOT(r0 + r)] = acc[r * Q + q];
            continue;
        }
        for (uint32_t r = r0; r < r0 + R; r++) {
            const uint8_t *row = rows + (size_t)r * l->row_bytes;
            vf acc[CPU_SUBBATCH];
            FOR_Q acc[q] = vf_set1(0.0f);
            for (uint32_t i = 0; i < (r < n_rows ? n_seg : 0); i++) {
                struct segment s = segment_at(l, i, kind);
                const float *qs = queries + (size_t)s.first * Q; /* tiled: chunk-major */
                vtab table;
                if (KIND_IS_TURBO(kind))
                    table = vtab_scale(vtab_load(s.lut->centroid), scale[i][r]);
                const uint8_t *at = row + s.data_at;
#define SCORE_SEGMENT(n) score_segment_rows(&at, qs, &table, &scale[i][r], n, acc, Q, 1, kind)
                WITH_CHUNK_COUNT(s.len, SCORE_SEGMENT)
#undef SCORE_SEGMENT
            }
            FOR_Q part[q][CPU_ROW_SLOT(r)] = acc[q];
        }
    }
    FOR_Q vf_store(scores + q * LANES, vf_sum_rows(part[q]));
}

/* ---- values of a block of V rows into the accumulators ---------------------------- */

/* The chunks of a row one value pass takes: a power of two, ACC_VECTORS / Q
 * at most (ACC_VECTORS: accumulators in registers, above). */
#define ACC_CHUNKS(Q)                                                                          \
    ((Q) * 8u <= ACC_VECTORS ? 8u : (Q) * 4u <= ACC_VECTORS ? 4u : (Q) * 2u <= ACC_VECTORS ? 2u : 1u)

/* CH chunks of the selected rows (their bytes at sel[k] + at) into the Q
 * output rows at out (stride hd): the accumulators stay in registers over
 * the rows, and each row's Q weights are broadcast once for the CH chunks.
 * Every accumulator adds the rows in order, whatever CH. */
ALWAYS_INLINE void accumulate_chunks(const uint8_t *const *sel, uint32_t n, size_t at,
                                     const float *w, const vtab *table, const float *factor,
                                     float *out, size_t hd, const uint32_t Q, const uint32_t CH,
                                     const uint32_t kind)
{
    vf a[8u * CPU_SUBBATCH];
    _Pragma("GCC unroll 8") for (size_t c = 0; c < CH; c++)
        FOR_Q a[c * Q + q] = vf_mul(vf_load(out + c * LANES + q * hd), vf_set1(factor[q]));
    const float *wk = w;
    _Pragma("GCC unroll 1") for (uint32_t k = 0; k < n; k++, wk += Q) {
        vf wq[CPU_SUBBATCH];
        FOR_Q wq[q] = vf_set1(wk[q]);
        _Pragma("GCC unroll 8") for (size_t c = 0; c < CH; c++) {
            vf v = chunk_at(sel[k] + at + c * CHUNK_BYTES(kind), table, kind);
            FOR_Q a[c * Q + q] = vf_fma(wq[q], v, a[c * Q + q]);
        }
    }
    _Pragma("GCC unroll 8") for (size_t c = 0; c < CH; c++)
        FOR_Q vf_store(out + c * LANES + q * hd, a[c * Q + q]);
}

ALWAYS_INLINE void accumulate_rows(const struct cpu_layout *l, const uint8_t *rows, uint32_t mask,
                                   const float *weights, float *factor, float *acc,
                                   const uint32_t Q, const uint32_t kind)
{
    const uint32_t n_seg = segment_count(l, kind), CH = ACC_CHUNKS(Q);
    const size_t hd = l->head_dim;
    const uint8_t *sel[LANES];
    uint32_t sel_row[LANES], n = 0;
    for (; mask; mask &= mask - 1, n++) {
        sel_row[n] = (uint32_t)__builtin_ctz(mask);
        sel[n] = rows + (size_t)sel_row[n] * l->row_bytes;
    }
    /* per selected row its Q weights times its scale, walked by one pointer */
    float w[LANES * CPU_SUBBATCH];
    for (uint32_t i = 0; i < n_seg; i++) {
        struct segment s = segment_at(l, i, kind);
        for (uint32_t k = 0; k < n; k++) {
            float scale = KIND_HAS_SCALE(kind) ? cpu_half(sel[k] + s.scale_at) : 1.0f;
            FOR_Q w[k * Q + q] = weights[q * LANES + sel_row[k]] * scale;
        }
        vtab table;
        if (KIND_IS_TURBO(kind))
            table = vtab_load(s.lut->centroid);
        const uint32_t n_chunks = s.len / LANES;
        if (n_chunks % CH == 0)
            for (uint32_t c = 0; c < n_chunks; c += CH)
                accumulate_chunks(sel, n, s.data_at + (size_t)c * CHUNK_BYTES(kind), w, &table,
                                  factor, acc + s.first + c * LANES, hd, Q, CH, kind);
        else if (CH > 2 && n_chunks % 2 == 0) /* q8_0 blocks of two chunks on AVX-512 */
            for (uint32_t c = 0; c < n_chunks; c += 2)
                accumulate_chunks(sel, n, s.data_at + (size_t)c * CHUNK_BYTES(kind), w, &table,
                                  factor, acc + s.first + c * LANES, hd, Q, 2, kind);
        else
            for (uint32_t c = 0; c < n_chunks; c++)
                accumulate_chunks(sel, n, s.data_at + (size_t)c * CHUNK_BYTES(kind), w, &table,
                                  factor, acc + s.first + c * LANES, hd, Q, 1, kind);
    }
    FOR_Q factor[q] = 1.0f;
}

/* ---- one function per (kind, Q) ---------------------------------------------------- */

#define KERNELS_Q(name, kind, Q)                                                               \
    static void score_##name##_##Q(const struct cpu_layout *l, const uint8_t *rows,            \
                                   uint32_t n_rows, const float *queries, float *scores)      \
    {                                                                                          \
        score_rows(l, rows, n_rows, queries, scores, Q, kind);                                 \
    }                                                                                          \
    static void accum_##name##_##Q(const struct cpu_layout *l, const uint8_t *rows,            \
                                   uint32_t mask, const float *weights, float *factor,        \
                                   float *acc)                                                 \
    {                                                                                          \
        accumulate_rows(l, rows, mask, weights, factor, acc, Q, kind);                         \
    }

#define KERNELS(name, kind)                                                                    \
    KERNELS_Q(name, kind, 1) KERNELS_Q(name, kind, 2) KERNELS_Q(name, kind, 3)                \
    KERNELS_Q(name, kind, 4) KERNELS_Q(name, kind, 5) KERNELS_Q(name, kind, 6)                \
    KERNELS_Q(name, kind, 7) KERNELS_Q(name, kind, 8)                                         \
    static const struct cpu_simd_type type_##name = {                                          \
        .encode = encode_##name,                                                               \
        .score = { score_##name##_1, score_##name##_2, score_##name##_3, score_##name##_4,     \
                   score_##name##_5, score_##name##_6, score_##name##_7, score_##name##_8 },   \
        .accum = { accum_##name##_1, accum_##name##_2, accum_##name##_3, accum_##name##_4,     \
                   accum_##name##_5, accum_##name##_6, accum_##name##_7, accum_##name##_8 },   \
    };

#define TURBO_ENCODER(bits)                                                                    \
    static void encode_turbo##bits(const struct cpu_layout *l, const float *x, uint8_t *row)  \
    {                                                                                          \
        encode_turbo(l, x, row, bits);                                                         \
    }
TURBO_ENCODER(2)
TURBO_ENCODER(3)
TURBO_ENCODER(4)

KERNELS(f32, KIND_F32)
KERNELS(f16, KIND_F16)
KERNELS(q8_0, KIND_Q8_0)
KERNELS(turbo2, KIND_TURBO2)
KERNELS(turbo3, KIND_TURBO3)
KERNELS(turbo4, KIND_TURBO4)

/* Outlier-split types: the turbo part of a row is a turbo row (the same
 * groups, offsets and codebooks), so the turbo kernels encode, score and
 * accumulate it (encode_turbo stores the reference's bytes); the outliers
 * are picked by outlier.c and added by attend_span. */
#define OUTLIER_TYPE(name, base)                                                               \
    static void encode_##name(const struct cpu_layout *l, const float *x, uint8_t *row)       \
    {                                                                                          \
        float rest[TKV_HEAD_DIM_MAX];                                                          \
        cpu_outlier_split(l, x, row, rest);                                                    \
        encode_##base(l, rest, row);                                                           \
    }                                                                                          \
    static const struct cpu_simd_type type_##name = {                                          \
        .encode = encode_##name,                                                               \
        .score = { score_##base##_1, score_##base##_2, score_##base##_3, score_##base##_4,     \
                   score_##base##_5, score_##base##_6, score_##base##_7, score_##base##_8 },   \
        .accum = { accum_##base##_1, accum_##base##_2, accum_##base##_3, accum_##base##_4,     \
                   accum_##base##_5, accum_##base##_6, accum_##base##_7, accum_##base##_8 },   \
    };
OUTLIER_TYPE(turbo3o, turbo3)
OUTLIER_TYPE(turbo4o, turbo4)

/* Outlier o of a row: its coordinate and its value. */
ALWAYS_INLINE uint32_t outlier_at(const struct cpu_layout *l, const uint8_t *row, uint32_t o, float *value)
{
    const uint8_t *index = row + l->outlier_offset;
    *value = cpu_half(index + l->n_outliers * l->outlier_index_bytes + 2u * o);
    return l->outlier_index_bytes == 1 ? index[o] : load_u16(index + 2u * o);
}

#ifdef ISA_HAS_VQ
_Static_assert(CPU_SUBBATCH == 8u, "a vq holds one sub-batch");
#endif

/* scores[q][r] += sum over row r's outliers of plain[q][i_o] x_o (the
 * reference's cpu_outlier_dot, added after the turbo part as it is); plain
 * tiled (struct cpu_span). With 8-float vectors (ISA_HAS_VQ) a row's sums
 * for the whole sub-batch take one load and one multiply-add per outlier,
 * and a block's sums go back into each query's scores by one gather. */
static void score_outliers(const struct cpu_layout *l, const uint8_t *rows, uint32_t n_rows,
                           const float *plain, uint32_t nb, float *scores)
{
#ifdef ISA_HAS_VQ
    if (n_rows == LANES) {
        alignas(64) float sums[LANES][CPU_SUBBATCH];
        const uint32_t n = l->n_outliers, ib = l->outlier_index_bytes;
        for (uint32_t r = 0; r < LANES; r++) {
            const uint8_t *index = rows + (size_t)r * l->row_bytes + l->outlier_offset, *value = index + n * ib;
            vq s = vq_set1(0.0f);
            for (uint32_t o = 0; o < n; o++) {
                uint32_t i = ib == 1 ? index[o] : load_u16(index + 2u * o);
                s = vq_fma(vq_load(plain + (size_t)i * CPU_SUBBATCH), vq_half(value + 2u * o), s);
            }
            vq_store(sums[r], s);
        }
        const vi by_row = vi_lane_times(CPU_SUBBATCH);
        for (uint32_t q = 0; q < nb; q++)
            vf_store(scores + q * LANES, vf_add(vf_load(scores + q * LANES), vf_gather(&sums[0][q], by_row)));
        return;
    }
#endif
    for (uint32_t r = 0; r < n_rows; r++) {
        const uint8_t *row = rows + (size_t)r * l->row_bytes;
        float sum[CPU_SUBBATCH] = { 0 };
        for (uint32_t o = 0; o < l->n_outliers; o++) {
            float x;
            uint32_t i = outlier_at(l, row, o, &x);
            for (uint32_t q = 0; q < nb; q++)
                sum[q] += plain[(size_t)i * CPU_SUBBATCH + q] * x;
        }
        for (uint32_t q = 0; q < nb; q++)
            scores[q * LANES + r] += sum[q];
    }
}

/* acc[q][i_o] += w[q][r] x_o for the rows r in mask (w is 0 for the other
 * rows of a query), acc tiled as plain. With 8-float vectors (ISA_HAS_VQ):
 * per row its weights for the sub-batch gathered into one vector, then one
 * multiply-add per outlier. */
static void accum_outliers(const struct cpu_layout *l, const uint8_t *rows, uint32_t mask,
                           const float *w, uint32_t nb, float *acc)
{
#ifdef ISA_HAS_VQ
    const uint32_t n = l->n_outliers, ib = l->outlier_index_bytes;
    const vqi by_query = vqi_lane_times(LANES);
    for (; mask; mask &= mask - 1) {
        uint32_t r = (uint32_t)__builtin_ctz(mask);
        const uint8_t *index = rows + (size_t)r * l->row_bytes + l->outlier_offset, *value = index + n * ib;
        const vq wq = vq_gather_first(w + r, by_query, nb);
        for (uint32_t o = 0; o < n; o++) {
            float *to = acc + (size_t)(ib == 1 ? index[o] : load_u16(index + 2u * o)) * CPU_SUBBATCH;
            vq_store(to, vq_fma(wq, vq_half(value + 2u * o), vq_load(to)));
        }
    }
#else
    for (; mask; mask &= mask - 1) {
        uint32_t r = (uint32_t)__builtin_ctz(mask);
        const uint8_t *row = rows + (size_t)r * l->row_bytes;
        for (uint32_t o = 0; o < l->n_outliers; o++) {
            float x;
            uint32_t i = outlier_at(l, row, o, &x);
            for (uint32_t q = 0; q < nb; q++)
                acc[(size_t)i * CPU_SUBBATCH + q] += w[q * LANES + r] * x;
        }
    }
#endif
}

/* acc_tiled[q][:] *= f (query q of the span, tiled as plain). */
static void scale_tiled(float *acc_tiled, uint32_t hd, uint32_t q, float f)
{
    float *a = acc_tiled + (size_t)(q - q % CPU_SUBBATCH) * hd + q % CPU_SUBBATCH;
    for (uint32_t i = 0; i < hd; i++)
        a[(size_t)i * CPU_SUBBATCH] *= f;
}

/* ---- a span of rows: blocks, online softmax, sparse V ------------------------------ */

/* Softmax of query q over the block's scores (rows j .. j + n_rows - 1):
 * updates its running max, its running sums (one per lane, added up once
 * per span), its pending rescale, writes its weights (0 for rows it does not
 * see or skips) and returns the rows whose V it needs. */
static uint32_t block_weights(struct cpu_span *sp, uint32_t q, uint32_t j, uint32_t n_rows,
                              const float *scores, float *w, float *sums, float *factor)
{
    uint32_t from = sp->lo[q] > j ? sp->lo[q] - j : 0;
    uint32_t to = sp->hi[q] > j ? sp->hi[q] - j : 0;
    if (to > n_rows)
        to = n_rows;
    if (from >= to) {
        vf_store(w, vf_set1(0.0f));
        return 0;
    }
    uint32_t valid = low_bits(to) & ~low_bits(from), keep = valid;
    vf s = vf_mul(vf_load(scores), vf_set1(sp->scale));
    if (sp->softcap > 0.0f)
        s = vf_mul(vf_set1(sp->softcap), vf_tanh(vf_mul(s, vf_set1(sp->inv_softcap))));
    if (valid != low_bits(LANES)) /* most blocks are seen whole */
        s = vf_select(valid, s, vf_set1(-INFINITY));
    float block_max;
    /* past the first blocks the max rarely moves: test before reducing */
    if (vf_ge_bits(s, sp->max[q]) && (block_max = vf_hmax(s)) > sp->max[q]) {
        /* what was summed against the old max shrinks to the new one */
        float c = sp->max[q] == -INFINITY ? 0.0f : expf(sp->max[q] - block_max);
        vf_store(sums, vf_mul(vf_load(sums), vf_set1(c)));
        factor[q] *= c;
        sp->max[q] = block_max;
    }
    vf p = vf_keep_bits(vf_exp(vf_sub(s, vf_set1(sp->max[q]))), valid);
    vf_store(sums, vf_add(vf_load(sums), p));
    if (sp->threshold > 0.0f) {
        keep &= vf_ge_bits(p, sp->threshold);
        p = vf_keep_bits(p, keep);
        sp->skipped += (uint32_t)__builtin_popcount(valid & ~keep);
    }
    vf_store(w, p);
    return keep;
}

/* Where the next row of a span lies: a block of the table and a row in it.
 * Rows of a block are contiguous, so the table is read once per block of
 * LANES rows (and once more where that block crosses into the next). */
struct cursor {
    uint32_t block, row; /* index into the table; row < block_tokens */
};

/* The next n rows, one after the other: in place where they lie in one
 * pool block (always when block_tokens is a multiple of LANES, as blocks of
 * LANES rows start at multiples of LANES), else copied into stage. The
 * kernels then read the same bytes in the same order either way. */
ALWAYS_INLINE const uint8_t *rows_at(const struct cpu_rows *t, struct cursor c, uint32_t n,
                                     uint8_t *stage)
{
    const uint8_t *base = t->head + t->blocks[c.block] * t->block_stride +
                          (size_t)c.row * t->row_bytes;
    if (t->block_tokens - c.row >= n) /* c.row < block_tokens */
        return base;
    uint8_t *to = stage;
    for (uint32_t r = 0; r < n;) {
        uint32_t run = t->block_tokens - c.row < n - r ? t->block_tokens - c.row : n - r;
        memcpy(to, base, (size_t)run * t->row_bytes);
        to += (size_t)run * t->row_bytes;
        r += run;
        c.block++, c.row = 0;
        if (r < n)
            base = t->head + t->blocks[c.block] * t->block_stride;
    }
    return stage;
}

/* Pool blocks lie anywhere in the buffer, so where a head's rows of one
 * block are short the hardware's stream prefetch restarts every few KiB
 * and the loads wait for memory. Below PREFETCH_BELOW bytes of one head's
 * block, the rows PREFETCH_AHEAD blocks of LANES rows ahead are asked for
 * in software, every line of them (prefetching every other line measured
 * far slower than none). One thread, 16K tokens, 8 kv heads, turbo3, AMD
 * EPYC: blocks of 256 tokens +4..6% of the contiguous cache's time
 * without, +2..5% with; blocks of 16 +60..70% without, +12% with. A
 * contiguous cache's long runs need none (it would cost ~3%). */
#define PREFETCH_BELOW (128u << 10)
#define PREFETCH_AHEAD 4u

/* Asks for the cache lines of the next n rows. */
ALWAYS_INLINE void prefetch_rows(const struct cpu_rows *t, struct cursor c, uint32_t n)
{
    for (uint32_t r = 0; r < n;) {
        if (c.row == t->block_tokens)
            c.block++, c.row = 0;
        const uint8_t *base = t->head + t->blocks[c.block] * t->block_stride +
                              (size_t)c.row * t->row_bytes;
        uint32_t run = t->block_tokens - c.row < n - r ? t->block_tokens - c.row : n - r;
        size_t bytes = (size_t)run * t->row_bytes;
        for (size_t o = 0; o < bytes; o += 64)
            __builtin_prefetch(base + o);
        __builtin_prefetch(base + bytes - 1);
        r += run;
        c.row += run;
    }
}

ALWAYS_INLINE void cursor_advance(struct cursor *c, uint32_t block_tokens, uint32_t n)
{
    c->row += n;
    if (c->row >= block_tokens) {
        c->block += c->row / block_tokens;
        c->row %= block_tokens;
    }
}

static void attend_span(struct cpu_span *sp)
{
    const struct cpu_layout *kl = sp->k, *vl = sp->v;
    const uint32_t hd = kl->head_dim, nq = sp->n_query, csr = fp_flush_begin();
    const uint32_t bt = sp->k_rows.block_tokens; /* V has the same blocks */
    const int prefetch = (uint64_t)bt * kl->row_bytes < PREFETCH_BELOW ||
                         (uint64_t)bt * vl->row_bytes < PREFETCH_BELOW;
    alignas(64) float scores[CPU_UNIT_QUERIES * LANES], w[CPU_UNIT_QUERIES * LANES];
    alignas(64) float sums[CPU_UNIT_QUERIES * LANES];
    float factor[CPU_UNIT_QUERIES];
    uint32_t start = UINT32_MAX, end = 0;
    for (uint32_t q = 0; q < nq; q++) {
        sp->max[q] = -INFINITY;
        vf_store(sums + q * LANES, vf_set1(0.0f));
        factor[q] = 1.0f;
        start = sp->lo[q] < start ? sp->lo[q] : start;
        end = sp->hi[q] > end ? sp->hi[q] : end;
    }
    memset(sp->acc, 0, sizeof *sp->acc * nq * hd);
    if (sp->acc_plain)
        memset(sp->acc_tiled, 0, sizeof *sp->acc_tiled * CPU_TILED_FLOATS(nq, hd));
    if (end > sp->end)
        end = sp->end;
    /* blocks of LANES rows at multiples of LANES, whatever the pool's blocks:
     * the sums do not depend on how the cache is paged */
    start = start > sp->first ? start / LANES * LANES : sp->first;
    /* the rows each sub-batch of queries sees: [seen_lo, seen_hi) */
    uint32_t seen_lo[CPU_UNIT_QUERIES / CPU_SUBBATCH], seen_hi[CPU_UNIT_QUERIES / CPU_SUBBATCH];
    for (uint32_t q0 = 0; q0 < nq; q0 += CPU_SUBBATCH) {
        uint32_t b = q0 / CPU_SUBBATCH;
        seen_lo[b] = UINT32_MAX, seen_hi[b] = 0;
        for (uint32_t q = q0; q < nq && q < q0 + CPU_SUBBATCH; q++) {
            seen_lo[b] = sp->lo[q] < seen_lo[b] ? sp->lo[q] : seen_lo[b];
            seen_hi[b] = sp->hi[q] > seen_hi[b] ? sp->hi[q] : seen_hi[b];
        }
    }
    struct cursor at = { start / bt, start % bt };
    for (uint32_t j = start; j < end; j += LANES, cursor_advance(&at, bt, LANES)) {
        uint32_t n_rows = end - j < LANES ? end - j : LANES;
        const uint8_t *k_rows = rows_at(&sp->k_rows, at, n_rows, sp->stage), *v_rows = NULL;
        if (prefetch && end - j > PREFETCH_AHEAD * LANES) {
            struct cursor ahead = at;
            uint32_t n_ahead = end - j - PREFETCH_AHEAD * LANES;
            cursor_advance(&ahead, bt, PREFETCH_AHEAD * LANES);
            n_ahead = n_ahead < LANES ? n_ahead : LANES;
            prefetch_rows(&sp->k_rows, ahead, n_ahead);
            prefetch_rows(&sp->v_rows, ahead, n_ahead);
        }
        for (uint32_t q0 = 0; q0 < nq; q0 += CPU_SUBBATCH) {
            uint32_t nb = nq - q0 < CPU_SUBBATCH ? nq - q0 : CPU_SUBBATCH, need = 0;
            if (seen_hi[q0 / CPU_SUBBATCH] <= j || seen_lo[q0 / CPU_SUBBATCH] >= j + n_rows)
                continue;
            kl->simd->score[nb - 1](kl, k_rows, n_rows, sp->queries + (size_t)q0 * hd,
                                    scores + q0 * LANES);
            if (sp->plain)
                score_outliers(kl, k_rows, n_rows, sp->plain + (size_t)q0 * hd, nb, scores + q0 * LANES);
            for (uint32_t q = q0; q < q0 + nb; q++)
                need |= block_weights(sp, q, j, n_rows, scores + q * LANES, w + q * LANES,
                                      sums + q * LANES, factor);
            if (!need)
                continue;
            if (!v_rows) /* after K's: the stage holds K's rows first */
                v_rows = rows_at(&sp->v_rows, at, n_rows, sp->stage + (size_t)LANES * kl->row_bytes);
            if (sp->acc_plain) /* the rescale accum applies to acc, before it resets factor */
                for (uint32_t q = q0; q < q0 + nb; q++)
                    if (factor[q] != 1.0f)
                        scale_tiled(sp->acc_tiled, hd, q, factor[q]);
            vl->simd->accum[nb - 1](vl, v_rows, need, w + q0 * LANES, factor + q0,
                                    sp->acc + (size_t)q0 * hd);
            if (sp->acc_plain)
                accum_outliers(vl, v_rows, need, w + q0 * LANES, nb, sp->acc_tiled + (size_t)q0 * hd);
        }
    }
    for (uint32_t q = 0; q < nq; q++) {
        sp->sum[q] = vf_hsum(vf_load(sums + q * LANES));
        if (factor[q] != 1.0f)
            for (uint32_t i = 0; i < hd; i++)
                sp->acc[(size_t)q * hd + i] *= factor[q];
        if (sp->acc_plain) {
            const float *from = sp->acc_tiled + (size_t)(q - q % CPU_SUBBATCH) * hd + q % CPU_SUBBATCH;
            for (uint32_t i = 0; i < hd; i++)
                sp->acc_plain[(size_t)q * hd + i] = from[(size_t)i * CPU_SUBBATCH] * factor[q];
        }
    }
    fp_flush_end(csr);
}

/* ---- the level ------------------------------------------------------------------------ */

const struct cpu_isa ISA_SYMBOL = {
    .name = ISA_NAME,
    .lanes = LANES,
    .narrower = ISA_NARROWER,
    .types = {
        [TKV_TYPE_F32] = &type_f32,
        [TKV_TYPE_F16] = &type_f16,
        [TKV_TYPE_Q8_0] = &type_q8_0,
        [TKV_TYPE_TURBO2] = &type_turbo2,
        [TKV_TYPE_TURBO3] = &type_turbo3,
        [TKV_TYPE_TURBO4] = &type_turbo4,
        [TKV_TYPE_TURBO3_OUT] = &type_turbo3o,
        [TKV_TYPE_TURBO4_OUT] = &type_turbo4o,
    },
    .rotate_group = rotate_group,
    .attend_span = attend_span,
};
