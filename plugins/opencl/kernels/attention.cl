/*
 * Fused decode attention on the packed cache (struct tkv_attention_args),
 * split over blocks of rows ("flash decoding") so that long contexts fill
 * the device:
 *
 *   attn_prepare_q  turbo K: each query rotated once (<R q, y_hat> = <q, k_hat>);
 *                   QJL K: also projected, S R q per group (plugins/cpu/qjl.c)
 *   attn_scores     per (block of rows, kv head, sequence): the scores of
 *                   every query row of the GQA group against the block,
 *                   each K row decoded once for all of them; the block max
 *   attn_scan       per query row: the running max before every block
 *   attn_values     per (run of blocks, kv head, sequence): softmax weights
 *                   and the V rows accumulated in the rotated domain
 *   attn_merge      per query row: the runs summed, normalized, and R^T
 *                   applied once (turbo V)
 *
 * The scores are kept in base 2, s_j = scale log2(e) q.k_j (the host folds
 * log2(e) into the scale), so that the weights are exp2, a single
 * instruction on GPUs where exp is a long sequence.
 * Sparse V follows the reference: row j is skipped when its weight against
 * the running max over rows 0..j in order, 2^(s_j - m_j), is below the
 * threshold; m_j is the max of the blocks before j's block (attn_scan) and of
 * j's block up to j (a prefix max in attn_values). The weights themselves
 * are taken against the final max, 2^(s_j - M), so the runs need no
 * rescaling when merged. The scores go through a scratch buffer between the
 * two passes: 4 bytes per (row, query head), against the 68 (turbo2) to 512
 * (f16) bytes of a K row and a V row at head_dim 128.
 *
 * Query rows of one work-group: QC of them (the GQA group, times the query
 * tokens, in chunks), a compile-time constant of each kernel variant so that
 * their accumulators stay in registers.
 */

#define TKV_QC_MAX 8u
/* Local copy of the codebooks of one index width, TKV_TAB_MAX_LEVELS floats
 * per group size, then the QJL sketch scale of each group size. */
#define TKV_CENT_FLOATS (TKV_N_GROUP_SIZES * (TKV_TAB_MAX_LEVELS + 1u))

inline uint tab_offset_at(__global const float *tab, uint gi, uint field)
{
    return ((__global const uint *)tab)[gi * TKV_TAB_FIELDS + field];
}

/* Centroids of index width `bits` for every group size, and QJL scales; by
 * the whole work-group, ready for all of it on return. */
void load_codebooks(__local float *cent, uint bits, __global const float *tab)
{
    const uint lid = get_local_id(0), n = get_local_size(0);
    for (uint k = lid; k < TKV_CENT_FLOATS; k += n) {
        float v = 0.0f;
        if (k < TKV_N_GROUP_SIZES * TKV_TAB_MAX_LEVELS) {
            uint gi = k / TKV_TAB_MAX_LEVELS, c = k % TKV_TAB_MAX_LEVELS;
            if (bits && c < (1u << bits))
                v = tab[tab_offset_at(tab, gi,
                                      TKV_TAB_CENTROIDS + 3u * (bits - TKV_TURBO_BITS_MIN)) +
                        c];
        } else {
            v = tab[tab_offset_at(tab, k - TKV_N_GROUP_SIZES * TKV_TAB_MAX_LEVELS,
                                  TKV_TAB_QJL_SCALE)];
        }
        cent[k] = v;
    }
    barrier(CLK_LOCAL_MEM_FENCE);
}

inline float qjl_scale(__local const float *cent, uint size)
{
    return cent[TKV_N_GROUP_SIZES * TKV_TAB_MAX_LEVELS + group_table(size)];
}

/* The QC floats at [i][0..QC) of a [n][QC] local array, read as one vector:
 * the kernels declare such arrays as QC-wide vectors, which aligns them. */
inline void load_qc(float *out, __local const float *a, uint i, const uint QC)
{
    if (QC == 8u)
        vstore8(((__local const float8 *)a)[i], 0, out);
    else if (QC == 4u)
        vstore4(((__local const float4 *)a)[i], 0, out);
    else if (QC == 2u)
        vstore2(((__local const float2 *)a)[i], 0, out);
    else
        out[0] = a[i];
}

/* Where query row u of a chunk comes from: token t (absolute), head h. */
inline uint query_token(uint t0, uint ratio, uint uu) { return t0 + uu / ratio; }
inline uint query_head(uint kvh, uint ratio, uint uu) { return kvh * ratio + uu % ratio; }

/* ---- attn_prepare_q: one work-group per query row ------------------------ */

__kernel void attn_prepare_q(__global const float *q, uint q_at, __global float *prepared,
                             uint head_dim, uint type, uint rotation, __global const float *tab,
                             __local float *v, __local float *tmp)
{
    const uint row = get_group_id(0), lid = get_local_id(0), n = get_local_size(0);
    const uint stride = type_is_qjl(type) ? 2u * head_dim : head_dim;
    for (uint e = lid; e < head_dim; e += n)
        v[e] = q[q_at + (ulong)row * head_dim + e];
    barrier(CLK_LOCAL_MEM_FENCE);
    rotate_local(v, tmp, head_dim, rotation, 0, tab);
    __global float *out = prepared + (ulong)row * stride;
    for (uint e = lid; e < head_dim; e += n)
        out[e] = v[e];
    if (!type_is_qjl(type))
        return;
    for (uint e = lid; e < head_dim; e += n) {
        group_info g = group_of_value(head_dim, e);
        __global const float *s =
            tab + tab_offset(tab, g.size, TKV_TAB_QJL) + (e - g.first) * g.size;
        float sum = 0.0f;
        for (uint j = 0; j < g.size; j++)
            sum += s[j] * v[g.first + j];
        out[head_dim + e] = sum;
    }
}

/* Word w of a tile, after the spare words of the rows before it:
 * w + w / row_words, the quotient from a float estimate corrected by one
 * (w < 2^24), since an integer division costs tens of instructions. */
inline uint tile_index(uint w, int padded, uint row_words, float inv_row)
{
    if (!padded)
        return w;
    uint r = (uint)((float)w * inv_row);
    r -= r * row_words > w;
    r += (r + 1u) * row_words <= w;
    return w + r;
}

/* Rows j0 .. j0 + nt of one head (contiguous in the cache buffer, starting
 * at byte `start`) into local memory with coalesced 32-bit loads, by the
 * whole work-group (the caller puts the barrier). Rows of a whole number of
 * words get a spare word each, so that work-items walking rows side by side
 * do not hit the same bank. Returns the bit position of row 0 in the tile;
 * row r starts r * *stride_bits further. The tile takes tile_bytes(nt,
 * row_bytes) (attention.c). */
inline uint load_tile(__global const uint *buf, ulong start, uint nt, uint row_bytes,
                      __local uint *tile, uint *stride_bits)
{
    const uint lid = get_local_id(0), wg = get_local_size(0);
    const uint misalign = (uint)start & 3u, n_words = (misalign + nt * row_bytes + 3u) >> 2;
    const uint row_words = row_bytes >> 2;
    const int padded = (row_bytes & 3u) == 0u && misalign == 0u;
    const float inv_row = padded ? 1.0f / (float)row_words : 0.0f;
    __global const uint *src = buf + (start >> 2);
    uint w = lid;
    /* eight loads in flight per work-item before their stores */
    for (; w + 7u * wg < n_words; w += 8u * wg) {
        uint x[8];
        for (uint k = 0; k < 8u; k++)
            x[k] = src[w + k * wg];
        for (uint k = 0; k < 8u; k++)
            tile[tile_index(w + k * wg, padded, row_words, inv_row)] = x[k];
    }
    for (; w < n_words; w += wg)
        tile[tile_index(w, padded, row_words, inv_row)] = src[w];
    *stride_bits = padded ? (row_words + 1u) * 32u : row_bytes * 8u;
    return misalign * 8u;
}

/* n <= 32 bits at bit position pos of a tile. */
inline uint tile_bits(__local const uint *tile, uint pos, uint n)
{
    return bits_of_pair(tile[pos >> 5], tile[(pos >> 5) + 1u], pos & 31u, n);
}

/* ---- attn_scores ------------------------------------------------------------
 * Work-group (block b, kv head x chunk, sequence); one work-item per K row of
 * the block. The block's packed rows are copied into local memory
 * (load_tile), then every work-item walks its row's bit stream once,
 * applying each decoded value to all QC query rows.
 *
 * scores[p * score_pitch + j]: pass row p = ((s - s0) * n_t + t - t0) *
 * n_q_heads + h, -INFINITY where row j is not visible to it (causal);
 * bmax[p * bmax_pitch + b]: max over the block.
 */
#define SCORES_PARAMS(QT)                                                                      \
    __global const uint *kbuf, __global const ulong *seqs, uint s0, uint t0, uint n_t,         \
        uint n_q, uint n_q_heads, uint ratio, ulong head_stride, uint row_bytes,               \
        uint head_dim, uint type, __global const float *q, uint q_at, uint q_stride,           \
        uint n_chunks, __global const float *tab, float scale, __global float *scores,         \
        uint score_pitch, __global float *bmax, uint bmax_pitch, uint tile_rows,               \
        __local QT *qloc, __local uint *tile, __local float *red
#define SCORES_ARGS                                                                            \
    kbuf, seqs, s0, t0, n_t, n_q, n_q_heads, ratio, head_stride, row_bytes, head_dim, type, q, \
        q_at, q_stride, n_chunks, tab, scale, scores, score_pitch, bmax, bmax_pitch, tile_rows, \
        (__local float *)qloc, tile, red

/* acc[u] += v * q_u[i] for the QC query rows (qloc is [i][u]) */
#define ACC_QUERIES(acc, v, i)                                                                 \
    do {                                                                                       \
        float q_[TKV_QC_MAX], v_ = (v);                                                        \
        load_qc(q_, qloc, (i), QC);                                                            \
        for (uint u_ = 0; u_ < QC; u_++)                                                       \
            acc[u_] = mad(v_, q_[u_], acc[u_]);                                                \
    } while (0)

inline void scores_body(SCORES_PARAMS(float), __local float *cent, const uint QC)
{
    const uint lid = get_local_id(0), wg = get_local_size(0);
    const uint b = get_group_id(0), kvh = get_group_id(1) / n_chunks;
    const uint u0 = get_group_id(1) % n_chunks * QC, s = s0 + get_group_id(2);
    const uint n_ctx = (uint)seqs[3u * s + 2u], j0 = b * tile_rows;
    if (j0 >= n_ctx)
        return;
    const uint nt = min(tile_rows, n_ctx - j0), nu = min(QC, n_t * ratio - u0);
    const uint bits = type_bits(type);

    for (uint k = lid; k < QC * q_stride; k += wg) {
        uint u = k / q_stride, i = k % q_stride;
        float v = 0.0f;
        if (u < nu) {
            uint t = query_token(t0, ratio, u0 + u), h = query_head(kvh, ratio, u0 + u);
            v = q[q_at + ((ulong)(s * n_q + t) * n_q_heads + h) * q_stride + i];
        }
        qloc[i * QC + u] = v;
    }
    load_codebooks(cent, bits, tab);
    uint stride_bits;
    const uint bit0 = load_tile(kbuf, seqs[3u * s] + kvh * head_stride + (ulong)j0 * row_bytes, nt,
                                row_bytes, tile, &stride_bits);
    barrier(CLK_LOCAL_MEM_FENCE);

    float tot[TKV_QC_MAX];
    for (uint u = 0; u < QC; u++)
        tot[u] = 0.0f;
    const uint row_bit = bit0 + lid * stride_bits;
    if (lid < nt && type == TKV_TYPE_F32 && !(row_bit & 31u)) {
        /* word-aligned rows (every row of a cache at a word-aligned offset):
         * the floats as they lie */
        __local const uint *w = tile + (row_bit >> 5);
        for (uint i = 0; i < head_dim; i++)
            ACC_QUERIES(tot, as_float(w[i]), i);
    } else if (lid < nt && type == TKV_TYPE_F16 && !(row_bit & 15u)) {
        /* halves through vload_half: exact, and one instruction on GPUs */
        __local const half *h = (__local const half *)tile + (row_bit >> 4);
        for (uint i = 0; i < head_dim; i++)
            ACC_QUERIES(tot, vload_half(i, h), i);
    } else if (lid < nt) {
        bit_reader rd;
        reader_start(&rd, tile, row_bit);
        if (type == TKV_TYPE_F32) {
            for (uint i = 0; i < head_dim; i++) {
                float v = as_float(reader_take(&rd, tile, 32u));
                ACC_QUERIES(tot, v, i);
            }
        } else if (type == TKV_TYPE_F16) {
            for (uint i = 0; i < head_dim; i += 2u) {
                uint w = reader_take(&rd, tile, 32u);
                ACC_QUERIES(tot, fp16_to_float(w & 0xffffu), i);
                ACC_QUERIES(tot, fp16_to_float(w >> 16), i + 1u);
            }
        } else if (type == TKV_TYPE_Q8_0) {
            for (uint first = 0; first < head_dim; first += TKV_Q8_0_BLOCK) {
                uint len = min(TKV_Q8_0_BLOCK, head_dim - first);
                float d = fp16_to_float(reader_take(&rd, tile, 16u)), part[TKV_QC_MAX];
                for (uint u = 0; u < QC; u++)
                    part[u] = 0.0f;
                for (uint i = 0; i < len; i += 4u) {
                    uint w = reader_take(&rd, tile, 32u);
                    for (uint c = 0; c < 4u; c++)
                        ACC_QUERIES(part, (float)(char)(w >> (8u * c)), first + i + c);
                }
                for (uint u = 0; u < QC; u++)
                    tot[u] = mad(d, part[u], tot[u]);
            }
        } else {
            /* turbo: s_g * sum_i c[idx_i] (R q)_i per group; 8 indices are
             * 8 * bits whole bits, one read */
            const uint mask = (1u << bits) - 1u;
            for (uint first = 0; first < head_dim;) {
                uint g = group_size_at(head_dim, first);
                __local const float *c = cent + group_table(g) * TKV_TAB_MAX_LEVELS;
                float sc = fp16_to_float(reader_take(&rd, tile, 16u)), part[TKV_QC_MAX];
                for (uint u = 0; u < QC; u++)
                    part[u] = 0.0f;
                for (uint i = 0; i < g; i += 8u) {
                    uint w = reader_take(&rd, tile, 8u * bits);
                    for (uint k = 0; k < 8u; k++)
                        ACC_QUERIES(part, c[(w >> (k * bits)) & mask], first + i + k);
                }
                for (uint u = 0; u < QC; u++)
                    tot[u] = mad(sc, part[u], tot[u]);
                first += g;
            }
            /* QJL: + scale_g gamma_g <S R q, z_g> per group */
            if (type_is_qjl(type))
                for (uint first = 0; first < head_dim;) {
                    uint g = group_size_at(head_dim, first);
                    float gamma = qjl_scale(cent, g) * fp16_to_float(reader_take(&rd, tile, 16u));
                    float part[TKV_QC_MAX];
                    for (uint u = 0; u < QC; u++)
                        part[u] = 0.0f;
                    for (uint i = 0; i < g; i += 8u) {
                        uint z = reader_take(&rd, tile, 8u);
                        for (uint k = 0; k < 8u; k++) {
                            float pq[TKV_QC_MAX];
                            load_qc(pq, qloc, head_dim + first + i + k, QC);
                            for (uint u = 0; u < QC; u++)
                                part[u] += (z >> k) & 1u ? pq[u] : -pq[u];
                        }
                    }
                    for (uint u = 0; u < QC; u++)
                        tot[u] = mad(gamma, part[u], tot[u]);
                    first += g;
                }
        }
    }

    const uint j = j0 + lid;
    for (uint u = 0; u < QC; u++) {
        float sv = -INFINITY;
        if (u < nu && lid < nt) {
            uint t = query_token(t0, ratio, u0 + u), h = query_head(kvh, ratio, u0 + u);
            uint p = ((s - s0) * n_t + t - t0) * n_q_heads + h;
            if (j <= n_ctx - n_q + t)
                sv = scale * tot[u];
            scores[(ulong)p * score_pitch + j] = sv;
        }
        red[u * wg + lid] = sv;
    }
    for (uint span = wg >> 1; span > 0u; span >>= 1) {
        barrier(CLK_LOCAL_MEM_FENCE);
        if (lid < span)
            for (uint u = 0; u < QC; u++)
                red[u * wg + lid] = fmax(red[u * wg + lid], red[u * wg + lid + span]);
    }
    if (lid == 0u)
        for (uint u = 0; u < nu; u++) {
            uint t = query_token(t0, ratio, u0 + u), h = query_head(kvh, ratio, u0 + u);
            uint p = ((s - s0) * n_t + t - t0) * n_q_heads + h;
            bmax[(ulong)p * bmax_pitch + b] = red[u * wg];
        }
}

#define SCORES_KERNEL(QC, QT)                                                                  \
    __kernel void attn_scores_##QC(SCORES_PARAMS(QT))                                          \
    {                                                                                          \
        __local float cent[TKV_CENT_FLOATS];                                                   \
        scores_body(SCORES_ARGS, cent, QC);                                                    \
    }
SCORES_KERNEL(1, float)
SCORES_KERNEL(2, float2)
SCORES_KERNEL(4, float4)
SCORES_KERNEL(8, float8)

/* ---- attn_scan: one work-group per pass row --------------------------------
 * bmax[b] becomes the max of the blocks before b; tmax the max over all. */
__kernel void attn_scan(__global const ulong *seqs, uint s0, uint n_t, uint n_q_heads,
                        uint tile_rows, __global float *bmax, uint bmax_pitch,
                        __global float *tmax, __local float *seg)
{
    const uint p = get_group_id(0), lid = get_local_id(0), wg = get_local_size(0);
    const uint s = s0 + p / (n_t * n_q_heads), n_ctx = (uint)seqs[3u * s + 2u];
    const uint nb = (n_ctx + tile_rows - 1u) / tile_rows, per = (nb + wg - 1u) / wg;
    const uint first = min(nb, lid * per), last = min(nb, first + per);
    __global float *m = bmax + (ulong)p * bmax_pitch;
    float run = -INFINITY;
    for (uint b = first; b < last; b++)
        run = fmax(run, m[b]);
    seg[lid] = run;
    /* inclusive prefix max over the segments (Hillis-Steele) */
    for (uint off = 1u; off < wg; off <<= 1) {
        barrier(CLK_LOCAL_MEM_FENCE);
        float x = lid >= off ? seg[lid - off] : -INFINITY;
        barrier(CLK_LOCAL_MEM_FENCE);
        seg[lid] = fmax(seg[lid], x);
    }
    barrier(CLK_LOCAL_MEM_FENCE);
    if (lid == wg - 1u)
        tmax[p] = seg[lid];
    run = lid ? seg[lid - 1u] : -INFINITY;
    for (uint b = first; b < last; b++) {
        float x = m[b];
        m[b] = run;
        run = fmax(run, x);
    }
}

/* ---- attn_values ------------------------------------------------------------
 * Work-group (run of tiles_per_run blocks x coordinate slice, kv head x
 * chunk, sequence). Each work-item owns TKV_VCPT consecutive coordinates of
 * the accumulator (within one group or q8_0 block, so one scale) for all QC
 * query rows; per_row work-items cover a row (a slice of it for wide rows),
 * and the work-group's lanes of per_row work-items take rows side by side,
 * their sums added at the end. For QJL V the accumulator has 2 head_dim
 * coordinates: the turbo part, then the sketch sum_j w_j scale gamma_j z_j
 * that attn_merge turns into S^T of it once (S^T is linear), instead of S^T z
 * per row as the reference's axpy.
 * Per block: the weights of every (row, query row) in local memory; unless
 * every query row skipped every row of the block, the block's V rows are
 * copied into local memory (load_tile: many loads in flight at once, where
 * row-by-row reads would wait on memory for each row), and the rows some
 * query row did not skip are each decoded once for all of them.
 * Partials per (pass row, run): acc, and from slice 0 l = sum of weights and
 * the rows skipped.
 */
#if TKV_VCPT % 4 || TKV_VCPT > 8
#error "attn_values decodes 4 to 8 coordinates per work-item, 4 at a time"
#endif

#define VALUES_PARAMS(WT)                                                                      \
    __global const uint *vbuf, __global const ulong *seqs, uint s0, uint t0, uint n_t,         \
        uint n_q, uint n_q_heads, uint ratio, ulong head_stride, uint row_bytes,               \
        uint head_dim, uint type, uint n_chunks, __global const float *tab,                    \
        __global const float *scores, uint score_pitch, __global const float *bmax,            \
        uint bmax_pitch, __global const float *tmax, uint tile_rows, uint tiles_per_run,       \
        float threshold, __global float *part_acc, __global float *part_l,                     \
        __global uint *part_skip, uint part_pitch, __local WT *wt, __local float *m1,          \
        __local float *m2, __local uint *needed, __local float *red, __local uint *redu,       \
        __local uint *tile
#define VALUES_ARGS                                                                            \
    vbuf, seqs, s0, t0, n_t, n_q, n_q_heads, ratio, head_stride, row_bytes, head_dim, type,    \
        n_chunks, tab, scores, score_pitch, bmax, bmax_pitch, tmax, tile_rows, tiles_per_run,  \
        threshold, part_acc, part_l, part_skip, part_pitch, (__local float *)wt, m1, m2,       \
        needed, red, redu, tile

/* How a work-item's coordinates are stored. */
enum value_kind { VALUE_F32, VALUE_F16, VALUE_Q8_0, VALUE_TURBO, VALUE_SKETCH };

inline void values_body(VALUES_PARAMS(float), __local float *cent, __local int *any_needed,
                        const uint QC)
{
    const uint lid = get_local_id(0), wg = get_local_size(0);
    const uint bits = type_bits(type), qjl = type_is_qjl(type);
    const uint d_acc = qjl ? 2u * head_dim : head_dim;
    uint per_row = 1u; /* the host computes the same to size the grid */
    while (per_row * TKV_VCPT < d_acc && per_row < wg)
        per_row <<= 1;
    const uint lanes = wg / per_row, lane = lid / per_row, slice_coords = per_row * TKV_VCPT;
    const uint n_slices = (d_acc + slice_coords - 1u) / slice_coords;
    const uint run = get_group_id(0) / n_slices, slice = get_group_id(0) % n_slices;
    const uint kvh = get_group_id(1) / n_chunks, u0 = get_group_id(1) % n_chunks * QC;
    const uint s = s0 + get_group_id(2);
    const uint n_ctx = (uint)seqs[3u * s + 2u], nb = (n_ctx + tile_rows - 1u) / tile_rows;
    const uint b_first = run * tiles_per_run;
    if (b_first >= nb)
        return;
    const uint b_end = min(nb, b_first + tiles_per_run), nu = min(QC, n_t * ratio - u0);
    const uint c0 = slice * slice_coords + lid % per_row * TKV_VCPT;
    const int active = c0 < d_acc; /* rows narrower than a slice leave some idle */

    uint p[TKV_QC_MAX], limit[TKV_QC_MAX], skipped[TKV_QC_MAX];
    float total_max[TKV_QC_MAX], l[TKV_QC_MAX], acc[TKV_QC_MAX][TKV_VCPT];
    for (uint u = 0; u < QC; u++) {
        uint uu = u0 + min(u, nu - 1u), t = query_token(t0, ratio, uu);
        p[u] = ((s - s0) * n_t + t - t0) * n_q_heads + query_head(kvh, ratio, uu);
        limit[u] = n_ctx - n_q + t;
        total_max[u] = tmax[p[u]];
        l[u] = 0.0f;
        skipped[u] = 0u;
        for (uint k = 0; k < TKV_VCPT; k++)
            acc[u][k] = 0.0f;
    }
    load_codebooks(cent, bits, tab);

    /* this work-item's coordinates in a row: the bit positions of its scale
     * and of its first value */
    enum value_kind kind;
    uint scale_bit = 0u, value_bit;
    __local const float *ctab = cent;
    float factor = 1.0f;
    if (type == TKV_TYPE_F32 || !active) {
        kind = VALUE_F32;
        value_bit = 32u * c0;
    } else if (type == TKV_TYPE_F16) {
        kind = VALUE_F16;
        value_bit = 16u * c0;
    } else if (type == TKV_TYPE_Q8_0) {
        uint blk = c0 / TKV_Q8_0_BLOCK;
        kind = VALUE_Q8_0;
        scale_bit = 8u * blk * (2u + TKV_Q8_0_BLOCK);
        value_bit = scale_bit + 16u + 8u * (c0 % TKV_Q8_0_BLOCK);
    } else if (c0 < head_dim) {
        group_info g = group_of_value(head_dim, c0);
        kind = VALUE_TURBO;
        scale_bit = 8u * (2u * g.index + g.first * bits / 8u);
        value_bit = scale_bit + 16u + (c0 - g.first) * bits;
        ctab = cent + group_table(g.size) * TKV_TAB_MAX_LEVELS;
    } else {
        group_info g = group_of_value(head_dim, c0 - head_dim);
        kind = VALUE_SKETCH;
        scale_bit = 8u * (turbo_row_bytes(head_dim, bits) + 2u * g.index + g.first / 8u);
        value_bit = scale_bit + 16u + (c0 - head_dim - g.first);
        factor = qjl_scale(cent, g.size);
    }
    const ulong head = seqs[3u * s + 1u] + kvh * head_stride;
    /* skip when 2^d < threshold: decided by d alone outside a band around
     * log2(threshold) (exp2 is monotone), by exp2 within it; -INFINITY for
     * a threshold of 0 keeps every row */
    const float cut = log2(threshold), band = 1.0f / 64.0f;

    for (uint b = b_first; b < b_end; b++) {
        const uint j0 = b * tile_rows, nt = min(tile_rows, n_ctx - j0);
        float before[TKV_QC_MAX];
        for (uint u = 0; u < QC; u++)
            before[u] = bmax[(ulong)p[u] * bmax_pitch + b];
        for (uint j = lid; j < nt; j += wg)
            for (uint u = 0; u < QC; u++) {
                float sv = scores[(ulong)p[u] * score_pitch + j0 + j];
                wt[j * QC + u] = sv;
                m1[u * tile_rows + j] = sv;
            }
        if (lid == 0u)
            *any_needed = 0;
        barrier(CLK_LOCAL_MEM_FENCE);
        /* running max within the block (Hillis-Steele prefix max) */
        __local float *pm = m1, *pn = m2;
        for (uint off = 1u; off < nt; off <<= 1) {
            for (uint j = lid; j < nt; j += wg)
                for (uint u = 0; u < QC; u++) {
                    float x = pm[u * tile_rows + j];
                    pn[u * tile_rows + j] = j >= off ? fmax(x, pm[u * tile_rows + j - off]) : x;
                }
            barrier(CLK_LOCAL_MEM_FENCE);
            __local float *swap = pm;
            pm = pn;
            pn = swap;
        }
        for (uint j = lid; j < nt; j += wg) {
            uint need = 0u;
            for (uint u = 0; u < QC; u++) {
                float sv = wt[j * QC + u], weight = 0.0f;
                if (u < nu && j0 + j <= limit[u]) {
                    float pj = exp2(sv - total_max[u]);
                    float dj = sv - fmax(before[u], pm[u * tile_rows + j]);
                    l[u] += pj;
                    if (dj < cut - band || (dj < cut + band && exp2(dj) < threshold)) {
                        skipped[u]++;
                    } else {
                        weight = pj;
                        need = 1u;
                    }
                }
                wt[j * QC + u] = weight;
            }
            needed[j] = need;
            if (need)
                atomic_or(any_needed, 1);
        }
        barrier(CLK_LOCAL_MEM_FENCE);
        if (!*any_needed)
            continue; /* uniform: the block's V is not read at all */
        uint stride_bits;
        const uint bit0 =
            load_tile(vbuf, head + (ulong)j0 * row_bytes, nt, row_bytes, tile, &stride_bits);
        barrier(CLK_LOCAL_MEM_FENCE);
        for (uint j = lane; j < nt && active; j += lanes) {
            if (!needed[j])
                continue;
            const uint at = bit0 + j * stride_bits + value_bit,
                       sat = bit0 + j * stride_bits + scale_bit;
            float val[TKV_VCPT], w[TKV_QC_MAX], sc = 1.0f;
            load_qc(w, wt, j, QC);
            if (kind != VALUE_F32 && kind != VALUE_F16) {
                /* the block's scale, folded into the weights */
                sc = !(sat & 15u) ? vload_half(sat >> 4, (__local const half *)tile)
                                  : fp16_to_float(tile_bits(tile, sat, 16u));
                for (uint u = 0; u < QC; u++)
                    w[u] *= sc;
            }
            switch (kind) {
            case VALUE_F32:
                if (!(at & 31u)) /* word-aligned rows: the floats as they lie */
                    for (uint k = 0; k < TKV_VCPT; k++)
                        val[k] = as_float(tile[(at >> 5) + k]);
                else
                    for (uint k = 0; k < TKV_VCPT; k++)
                        val[k] = as_float(tile_bits(tile, at + 32u * k, 32u));
                break;
            case VALUE_F16:
                if (!(at & 15u)) /* vload_half: exact, one instruction on GPUs */
                    for (uint k = 0; k < TKV_VCPT; k++)
                        val[k] = vload_half(k, (__local const half *)tile + (at >> 4));
                else
                    for (uint k = 0; k < TKV_VCPT; k += 2u) {
                        uint x = tile_bits(tile, at + 16u * k, 32u);
                        val[k] = fp16_to_float(x & 0xffffu);
                        val[k + 1u] = fp16_to_float(x >> 16);
                    }
                break;
            case VALUE_Q8_0:
                for (uint k = 0; k < TKV_VCPT; k += 4u) {
                    uint x = tile_bits(tile, at + 8u * k, 32u);
                    for (uint i = 0; i < 4u; i++)
                        val[k + i] = (float)(char)(x >> (8u * i));
                }
                break;
            case VALUE_TURBO: {
                uint x = tile_bits(tile, at, TKV_VCPT * bits), mask = (1u << bits) - 1u;
                for (uint k = 0; k < TKV_VCPT; k++)
                    val[k] = ctab[(x >> (k * bits)) & mask];
                break;
            }
            default: {
                uint z = tile_bits(tile, at, TKV_VCPT);
                for (uint k = 0; k < TKV_VCPT; k++)
                    val[k] = (z >> k) & 1u ? factor : -factor;
                break;
            }
            }
            for (uint u = 0; u < QC; u++)
                for (uint k = 0; k < TKV_VCPT; k++)
                    acc[u][k] = mad(w[u], val[k], acc[u][k]);
        }
        barrier(CLK_LOCAL_MEM_FENCE);
    }

    /* the lanes' sums, one query row at a time */
    for (uint u = 0; u < QC; u++) {
        for (uint k = 0; k < TKV_VCPT; k++)
            red[lid * TKV_VCPT + k] = acc[u][k];
        barrier(CLK_LOCAL_MEM_FENCE);
        if (lane == 0u && active && u < nu)
            for (uint k = 0; k < TKV_VCPT; k++) {
                float sum = red[lid * TKV_VCPT + k];
                for (uint r = 1u; r < lanes; r++)
                    sum += red[(r * per_row + lid) * TKV_VCPT + k];
                part_acc[((ulong)p[u] * part_pitch + run) * d_acc + c0 + k] = sum;
            }
        barrier(CLK_LOCAL_MEM_FENCE);
    }
    if (slice)
        return;
    for (uint u = 0; u < QC; u++) {
        red[lid] = l[u];
        redu[lid] = skipped[u];
        local_sum_float(red, wg);
        local_sum_uint(redu, wg);
        if (lid == 0u && u < nu) {
            part_l[(ulong)p[u] * part_pitch + run] = red[0];
            part_skip[(ulong)p[u] * part_pitch + run] = redu[0];
        }
    }
}

#define VALUES_KERNEL(QC, WT)                                                                  \
    __kernel void attn_values_##QC(VALUES_PARAMS(WT))                                          \
    {                                                                                          \
        __local float cent[TKV_CENT_FLOATS];                                                   \
        __local int any_needed;                                                                \
        values_body(VALUES_ARGS, cent, &any_needed, QC);                                       \
    }
VALUES_KERNEL(1, float)
VALUES_KERNEL(2, float2)
VALUES_KERNEL(4, float4)
VALUES_KERNEL(8, float8)

/* ---- attn_merge: one work-group per pass row --------------------------------
 * out = sum of the runs' acc / sum of their l, then (QJL V) plus S^T of the
 * sketch, then R^T (turbo V); the row's skipped count at skip_at + row of
 * the same buffer, so that one read brings both back. */
__kernel void attn_merge(__global const ulong *seqs, uint s0, uint t0, uint n_t, uint n_q,
                         uint n_q_heads, uint head_dim, uint type, uint rotation, uint tile_rows,
                         uint tiles_per_run, __global const float *part_acc,
                         __global const float *part_l, __global const uint *part_skip,
                         uint part_pitch, __global const float *tab, __global float *out,
                         uint skip_at, __local float *v, __local float *tmp, __local float *lsum,
                         __local uint *lskip)
{
    const uint p = get_group_id(0), lid = get_local_id(0), wg = get_local_size(0);
    const uint per_seq = n_t * n_q_heads, s = s0 + p / per_seq;
    const uint t = t0 + p % per_seq / n_q_heads, h = p % n_q_heads;
    const uint n_ctx = (uint)seqs[3u * s + 2u], nb = (n_ctx + tile_rows - 1u) / tile_rows;
    const uint runs = (nb + tiles_per_run - 1u) / tiles_per_run;
    const uint qjl = type_is_qjl(type), d_acc = qjl ? 2u * head_dim : head_dim;
    __global const float *part = part_acc + (ulong)p * part_pitch * d_acc;

    float l = 0.0f;
    uint skipped = 0u;
    for (uint r = lid; r < runs; r += wg) {
        l += part_l[(ulong)p * part_pitch + r];
        skipped += part_skip[(ulong)p * part_pitch + r];
    }
    lsum[lid] = l;
    lskip[lid] = skipped;
    local_sum_float(lsum, wg);
    local_sum_uint(lskip, wg);
    for (uint c = lid; c < d_acc; c += wg) {
        /* four independent sums keep four loads in flight */
        float a[4] = { 0.0f, 0.0f, 0.0f, 0.0f };
        uint r = 0;
        for (; r + 3u < runs; r += 4u)
            for (uint k = 0; k < 4u; k++)
                a[k] += part[(ulong)(r + k) * d_acc + c];
        for (; r < runs; r++)
            a[0] += part[(ulong)r * d_acc + c];
        v[c] = (a[0] + a[1]) + (a[2] + a[3]);
    }
    barrier(CLK_LOCAL_MEM_FENCE);
    const float inv_l = 1.0f / lsum[0];
    __local float *res = v, *scratch = tmp;
    if (qjl) {
        for (uint e = lid; e < head_dim; e += wg) {
            group_info g = group_of_value(head_dim, e);
            __global const float *sm = tab + tab_offset(tab, g.size, TKV_TAB_QJL) + (e - g.first);
            __local const float *sketch = v + head_dim + g.first;
            float a = v[e];
            for (uint i = 0; i < g.size; i++)
                a = mad(sm[i * g.size], sketch[i], a);
            tmp[e] = a * inv_l;
        }
        res = tmp;
        scratch = v;
    } else {
        for (uint e = lid; e < head_dim; e += wg)
            v[e] *= inv_l;
    }
    barrier(CLK_LOCAL_MEM_FENCE);
    if (type_bits(type))
        rotate_local(res, scratch, head_dim, rotation, 1, tab);
    const ulong row = ((ulong)s * n_q + t) * n_q_heads + h;
    for (uint e = lid; e < head_dim; e += wg)
        out[row * head_dim + e] = res[e];
    if (lid == 0u) /* the skip counts follow the outputs in the same buffer */
        ((__global uint *)out)[skip_at + row] = lskip[0];
}
