/* SPDX-License-Identifier: MIT */
/*
 * Fused decode attention on the paged cache (struct tkv_attention_args),
 * split over tiles of rows ("flash decoding") so that long contexts fill
 * the device:
 *
 *   attn_prepare_q  turbo K: each query rotated once (<R q, y_hat> = <q, k_hat>);
 *                   QJL K: also projected, S R q per group (plugins/cpu/qjl.c)
 *   attn_scores     per (tile, kv head, work unit): the scores of every query
 *                   row of the unit against the tile, each K row decoded once
 *                   for all of them; the tile max
 *   attn_scan       per query row: the running max before every tile
 *   attn_values     per (run of tiles, kv head, work unit): softmax weights
 *                   and the V rows accumulated in the rotated domain
 *   attn_merge      per query row: the runs summed, normalized, R^T applied
 *                   once (turbo V); the log-sum-exp
 *
 * A call is taken in passes (attention.c): a pass is a range qr0 .. qr1 - 1
 * of query tokens (rows of q), whole sequences or part of one. Its pass rows
 * are p = (query token - qr0) * n_q_heads + h. A work unit is up to QC
 * query rows of one sequence and one kv head (the GQA group times the query
 * tokens, in chunks): the units table holds (sequence, first row u0) pairs,
 * row uu of a sequence's kv head being token tb + uu / ratio, head kvh *
 * ratio + uu % ratio. QC is a compile-time constant of each kernel variant,
 * so that the accumulators stay in registers.
 *
 * The meta buffer (the call's one upload) holds at seq_at four words per
 * sequence (n_ctx, n_q, q_first, block_first), at blocks_at the block table
 * and at units_at the pass's units; the queries follow at q_at.
 *
 * Rows are visible to the query token at position pos = n_ctx - n_q + t
 * when lo(pos) <= j <= pos, lo(pos) = pos + 1 - window when a window is set
 * (and positive), else 0. Scores are kept in base 2, s_j = log2(e) x_j, so
 * that the weights are exp2, a single instruction on GPUs where exp is a
 * long sequence; x_j = scale q.k_j, or softcap tanh(scale q.k_j / softcap):
 * attention.c folds the constants into pre and post.
 * Sparse V follows the reference: row j is skipped when its weight against
 * the running max over the visible rows up to j in order, 2^(s_j - m_j), is
 * below the threshold; m_j is the max of the tiles before j's tile
 * (attn_scan) and of j's tile up to j (a prefix max in attn_values). The
 * weights themselves are taken against the final max, 2^(s_j - M), so the
 * runs need no rescaling when merged. The scores go through a scratch buffer
 * between the two passes: 4 bytes per (row, query head), against the 68
 * (turbo2) to 512 (f16) bytes of a K row and a V row at head_dim 128.
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

/* ---- tiles: how the rows of a sequence are cut into the rows of one
 * work-group. A tile never straddles a pool block unless it holds whole
 * ones: with block_tokens >= the tile size, each block is cut into tpb
 * tiles of seg_rows rows (the last one may be shorter; segs = 1); with
 * smaller blocks, a tile holds segs whole blocks (seg_rows = block_tokens,
 * tpb = 1). attention.c (struct tile_geom) computes the same. */
typedef struct {
    uint bt, seg_rows, segs, tpb;
} tile_geom;

/* First row of tile b. */
inline uint geom_row0(tile_geom g, uint b)
{
    const uint gb = b / g.tpb;
    return gb * g.segs * g.bt + (b - gb * g.tpb) * g.seg_rows;
}

/* Rows of tile b, before the end of the sequence cuts it. */
inline uint geom_len(tile_geom g, uint b)
{
    return min(g.segs * g.seg_rows, g.segs * g.bt - b % g.tpb * g.seg_rows);
}

/* The tile holding row j. */
inline uint geom_tile(tile_geom g, uint j)
{
    const uint span = g.segs * g.bt, gb = j / span;
    return gb * g.tpb + (j - gb * span) / (g.segs * g.seg_rows);
}

/* What a pass needs of sequence s (attention.c: pass_seq_of). */
typedef struct {
    uint n_ctx, n_q, q_first, block_first;
    uint tb, te;      /* its query tokens in the pass */
    uint lo, hi;      /* rows lo .. hi - 1: those some query token of the pass sees */
    uint tile_base;   /* the tile holding row lo, */
    uint n_tiles;     /* and the tiles from it to the one holding row hi - 1 */
    uint jbase;       /* first row of tile tile_base */
} pass_seq;

inline pass_seq pass_seq_of(__global const uint *meta, uint seq_at, uint s, uint qr0, uint qr1,
                            uint window, tile_geom g)
{
    pass_seq q;
    __global const uint *e = meta + seq_at + 4u * s;
    q.n_ctx = e[0];
    q.n_q = e[1];
    q.q_first = e[2];
    q.block_first = e[3];
    q.tb = max(qr0, q.q_first) - q.q_first;
    q.te = min(qr1, q.q_first + q.n_q) - q.q_first;
    const uint seen = q.n_ctx - q.n_q + q.tb + 1u; /* rows up to token tb's position */
    q.lo = window && seen > window ? seen - window : 0u;
    q.hi = q.n_ctx - q.n_q + q.te;
    q.tile_base = geom_tile(g, q.lo);
    q.n_tiles = geom_tile(g, q.hi - 1u) + 1u - q.tile_base;
    q.jbase = geom_row0(g, q.tile_base);
    return q;
}

/* Row uu of a unit's sequence and kv head: its pass row, and the rows it
 * sees, lo .. limit. */
typedef struct {
    uint p, lo, limit;
} query_row;

inline query_row query_row_of(pass_seq ps, uint qr0, uint n_q_heads, uint ratio, uint window,
                              uint kvh, uint uu)
{
    query_row r;
    const uint t = ps.tb + uu / ratio, pos = ps.n_ctx - ps.n_q + t;
    r.p = (ps.q_first + t - qr0) * n_q_heads + kvh * ratio + uu % ratio;
    r.limit = pos;
    r.lo = window && pos + 1u > window ? pos + 1u - window : 0u;
    return r;
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

/* x / d for x < 2^24 (and a quotient far below it): from a float estimate
 * corrected by one, since an integer division costs tens of instructions. */
inline uint quot(uint x, uint d, float inv_d)
{
    uint r = (uint)((float)x * inv_d);
    r -= r * d > x;
    r += (r + 1u) * d <= x;
    return r;
}

/* Rows j0 .. j0 + nt - 1 (one tile) of kv head kvh of a sequence into local
 * memory with coalesced 32-bit loads, by the whole work-group (the caller
 * puts the barrier). Rows of a whole number of words at word-aligned places
 * (padded) get a spare word each, so that work-items walking rows side by
 * side do not hit the same bank; then a tile of several pool blocks is
 * copied as one stream of words, each word finding its block. Otherwise one
 * segment (the rows in one pool block, contiguous in the cache buffer) at a
 * time, segment k to words k * slot_words on. rowbit[r] gets the bit
 * position of tile row r. The tile takes segs * slot_words + 2 words
 * (attention.c: slot_words). */
inline void load_tile(__global const uint *buf, __global const uint *blocks, tile_geom g, uint j0,
                      uint nt, ulong block_stride, ulong head_off, uint row_bytes, int padded,
                      uint slot_words, __local uint *tile, __local uint *rowbit)
{
    const uint lid = get_local_id(0), wg = get_local_size(0);
    const uint pb0 = j0 / g.bt, r0 = j0 - pb0 * g.bt; /* r0 is 0 unless segs is 1 */
    const uint row_words = row_bytes >> 2;
    const float inv_row = padded ? 1.0f / (float)row_words : 0.0f;
    if (padded && g.segs > 1u) {
        /* word w of the tile's rows is word w - r row_words of tile row r,
         * row r - k bt of block k of the tile; it goes to w + r */
        const ulong block_words = block_stride >> 2, head_words = head_off >> 2;
        const uint n_words = nt * row_words, seg_words = g.bt * row_words;
        const float inv_bt = 1.0f / (float)g.bt;
        /* eight loads in flight per work-item before their stores, the
         * last eight cut at the tile's end */
        for (uint w = lid; w < n_words; w += 8u * wg) {
            uint x[8], at[8];
            for (uint i = 0; i < 8u; i++) {
                uint ww = w + i * wg, r = quot(ww, row_words, inv_row), k = quot(r, g.bt, inv_bt);
                at[i] = ww + r;
                x[i] = ww < n_words
                           ? buf[blocks[pb0 + k] * block_words + head_words + (ww - k * seg_words)]
                           : 0u;
            }
            for (uint i = 0; i < 8u; i++)
                if (w + i * wg < n_words)
                    tile[at[i]] = x[i];
        }
        for (uint r = lid; r < nt; r += wg)
            rowbit[r] = r * (row_words + 1u) * 32u;
        return;
    }
    for (uint k = 0, first = 0; first < nt; k++, first += g.seg_rows) {
        const uint n = min(g.seg_rows, nt - first);
        const ulong start =
            (ulong)blocks[pb0 + k] * block_stride + head_off + (ulong)r0 * row_bytes;
        const uint misalign = (uint)start & 3u, n_words = (misalign + n * row_bytes + 3u) >> 2;
        __global const uint *src = buf + (start >> 2);
        __local uint *dst = tile + k * slot_words;
        /* eight loads in flight per work-item before their stores, the
         * last eight cut at the segment's end */
        for (uint w = lid; w < n_words; w += 8u * wg) {
            uint x[8];
            for (uint i = 0; i < 8u; i++)
                x[i] = w + i * wg < n_words ? src[w + i * wg] : 0u;
            for (uint i = 0; i < 8u; i++)
                if (w + i * wg < n_words)
                    dst[tile_index(w + i * wg, padded, row_words, inv_row)] = x[i];
        }
        for (uint r = lid; r < n; r += wg)
            rowbit[first + r] = padded ? (first + r) * (row_words + 1u) * 32u
                                       : k * slot_words * 32u + misalign * 8u + r * row_bytes * 8u;
    }
}

/* n <= 32 bits at bit position pos of a tile. */
inline uint tile_bits(__local const uint *tile, uint pos, uint n)
{
    return bits_of_pair(tile[pos >> 5], tile[(pos >> 5) + 1u], pos & 31u, n);
}

/* ---- attn_scores ------------------------------------------------------------
 * Work-group (kv head, tile, unit); one work-item per K row of the tile. The
 * tile's packed rows are copied into local memory (load_tile), then every
 * work-item walks its row's bit stream once, applying each decoded value to
 * all QC query rows. A tile no row of the unit sees is not read.
 *
 * scores[p * score_pitch + j - jbase]: -INFINITY where row j is not visible
 * to pass row p; bmax[p * bmax_pitch + b - tile_base]: max over the tile's
 * visible rows (-INFINITY without any).
 */
#define SCORES_PARAMS(QT)                                                                      \
    __global const uint *kbuf, __global const uint *meta, uint seq_at, uint blocks_at,         \
        uint units_at, uint qr0, uint qr1, uint n_q_heads, uint ratio, uint window, uint bt,   \
        uint seg_rows, uint segs, uint tpb, ulong block_stride, ulong head_stride,             \
        uint row_bytes, int padded, uint slot_words, uint head_dim, uint type,                 \
        __global const float *q, uint q_at, uint q_stride, __global const float *tab,          \
        float pre, float post, __global float *scores, uint score_pitch, __global float *bmax, \
        uint bmax_pitch, __local QT *qloc, __local uint *tile, __local float *red,             \
        __local uint *rowbit
#define SCORES_ARGS                                                                            \
    kbuf, meta, seq_at, blocks_at, units_at, qr0, qr1, n_q_heads, ratio, window, bt, seg_rows, \
        segs, tpb, block_stride, head_stride, row_bytes, padded, slot_words, head_dim, type, q, \
        q_at, q_stride, tab, pre, post, scores, score_pitch, bmax, bmax_pitch,                 \
        (__local float *)qloc, tile, red, rowbit

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
    const uint b_rel = get_group_id(1), kvh = get_group_id(0);
    __global const uint *unit = meta + units_at + 2u * get_group_id(2);
    const uint s = unit[0], u0 = unit[1];
    const tile_geom g = { bt, seg_rows, segs, tpb };
    const pass_seq ps = pass_seq_of(meta, seq_at, s, qr0, qr1, window, g);
    if (b_rel >= ps.n_tiles)
        return;
    const uint b = ps.tile_base + b_rel, j0 = geom_row0(g, b);
    const uint nt = min(geom_len(g, b), ps.hi - j0);
    const uint nu = min(QC, (ps.te - ps.tb) * ratio - u0);
    const uint bits = type_bits(type);

    query_row rows[TKV_QC_MAX];
    for (uint u = 0; u < QC; u++)
        rows[u] = query_row_of(ps, qr0, n_q_heads, ratio, window, kvh, u0 + min(u, nu - 1u));
    /* the unit's rows see lo of its first .. limit of its last */
    if (j0 + nt <= rows[0].lo || j0 > rows[nu - 1u].limit) {
        if (lid < nu)
            bmax[(ulong)rows[lid].p * bmax_pitch + b_rel] = -INFINITY;
        return;
    }

    for (uint k = lid; k < QC * q_stride; k += wg) {
        uint u = k / q_stride, i = k % q_stride;
        float v = 0.0f;
        if (u < nu) {
            uint uu = u0 + u, t = ps.tb + uu / ratio, h = kvh * ratio + uu % ratio;
            v = q[q_at + ((ulong)(ps.q_first + t) * n_q_heads + h) * q_stride + i];
        }
        qloc[i * QC + u] = v;
    }
    load_codebooks(cent, bits, tab);
    load_tile(kbuf, meta + blocks_at + ps.block_first, g, j0, nt, block_stride,
              (ulong)kvh * head_stride, row_bytes, padded, slot_words, tile, rowbit);
    barrier(CLK_LOCAL_MEM_FENCE);

    float tot[TKV_QC_MAX];
    for (uint u = 0; u < QC; u++)
        tot[u] = 0.0f;
    const uint row_bit = lid < nt ? rowbit[lid] : 0u;
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
            if (j >= rows[u].lo && j <= rows[u].limit)
                sv = post > 0.0f ? post * tanh(pre * tot[u]) : pre * tot[u];
            scores[(ulong)rows[u].p * score_pitch + j - ps.jbase] = sv;
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
        for (uint u = 0; u < nu; u++)
            bmax[(ulong)rows[u].p * bmax_pitch + b_rel] = red[u * wg];
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
 * bmax[b] becomes the max of the tiles before b; tmax the max over all. */
__kernel void attn_scan(__global const uint *meta, uint seq_at, uint qseq_at, uint qr0, uint qr1,
                        uint n_q_heads, uint window, uint bt, uint seg_rows, uint segs, uint tpb,
                        __global float *bmax, uint bmax_pitch, __global float *tmax,
                        __local float *seg)
{
    const uint p = get_group_id(0), lid = get_local_id(0), wg = get_local_size(0);
    const uint qrow = qr0 + p / n_q_heads;
    const tile_geom g = { bt, seg_rows, segs, tpb };
    const pass_seq ps = pass_seq_of(meta, seq_at, meta[qseq_at + qrow], qr0, qr1, window, g);
    const uint nb = ps.n_tiles, per = (nb + wg - 1u) / wg;
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
 * Work-group (kv head, run of tiles_per_run tiles x coordinate slice, unit).
 * Each work-item owns TKV_VCPT consecutive coordinates of the accumulator
 * (within one group or q8_0 block, so one scale) for all QC query rows;
 * per_row work-items cover a row (a slice of it for wide rows), and the
 * work-group's lanes of per_row work-items take rows side by side, their
 * sums added at the end.
 * Per tile: the weights of every (row, query row) in local memory; unless
 * every query row skipped (or does not see) every row of the tile, the
 * tile's V rows are copied into local memory (load_tile: many loads in
 * flight at once, where row-by-row reads would wait on memory for each
 * row), and the rows some query row did not skip are each decoded once for
 * all of them.
 * Partials per (pass row, run): acc, and from slice 0 l = sum of weights and
 * the rows skipped.
 */
#if TKV_VCPT % 4 || TKV_VCPT > 8
#error "attn_values decodes 4 to 8 coordinates per work-item, 4 at a time"
#endif

#define VALUES_PARAMS(WT)                                                                      \
    __global const uint *vbuf, __global const uint *meta, uint seq_at, uint blocks_at,         \
        uint units_at, uint qr0, uint qr1, uint n_q_heads, uint ratio, uint window, uint bt,   \
        uint seg_rows, uint segs, uint tpb, ulong block_stride, ulong head_stride,             \
        uint row_bytes, int padded, uint slot_words, uint head_dim, uint type,                 \
        __global const float *tab, __global const float *scores, uint score_pitch,             \
        __global const float *bmax, uint bmax_pitch, __global const float *tmax,               \
        uint tile_rows, uint tiles_per_run, float threshold, __global float *part_acc,         \
        __global float *part_l, __global uint *part_skip, uint part_pitch, __local WT *wt,     \
        __local float *m1, __local float *m2, __local uint *needed, __local float *red,        \
        __local uint *redu, __local uint *tile, __local uint *rowbit
#define VALUES_ARGS                                                                            \
    vbuf, meta, seq_at, blocks_at, units_at, qr0, qr1, n_q_heads, ratio, window, bt, seg_rows, \
        segs, tpb, block_stride, head_stride, row_bytes, padded, slot_words, head_dim, type,   \
        tab, scores, score_pitch, bmax, bmax_pitch, tmax, tile_rows, tiles_per_run, threshold, \
        part_acc, part_l, part_skip, part_pitch, (__local float *)wt, m1, m2, needed, red,     \
        redu, tile, rowbit

/* How a work-item's coordinates are stored. */
enum value_kind { VALUE_F32, VALUE_F16, VALUE_Q8_0, VALUE_TURBO };

inline void values_body(VALUES_PARAMS(float), __local float *cent, __local int *any_needed,
                        const uint QC)
{
    const uint lid = get_local_id(0), wg = get_local_size(0);
    const uint bits = type_bits(type);
    uint per_row = 1u; /* the host computes the same to size the grid */
    while (per_row * TKV_VCPT < head_dim && per_row < wg)
        per_row <<= 1;
    const uint lanes = wg / per_row, lane = lid / per_row, slice_coords = per_row * TKV_VCPT;
    const uint n_slices = (head_dim + slice_coords - 1u) / slice_coords;
    const uint run = get_group_id(1) / n_slices, slice = get_group_id(1) % n_slices;
    const uint kvh = get_group_id(0);
    __global const uint *unit = meta + units_at + 2u * get_group_id(2);
    const uint s = unit[0], u0 = unit[1];
    const tile_geom g = { bt, seg_rows, segs, tpb };
    const pass_seq ps = pass_seq_of(meta, seq_at, s, qr0, qr1, window, g);
    const uint b_first = run * tiles_per_run;
    if (b_first >= ps.n_tiles)
        return;
    const uint b_end = min(ps.n_tiles, b_first + tiles_per_run);
    const uint nu = min(QC, (ps.te - ps.tb) * ratio - u0);
    const uint c0 = slice * slice_coords + lid % per_row * TKV_VCPT;
    const int active = c0 < head_dim; /* rows narrower than a slice leave some idle */

    query_row rows[TKV_QC_MAX];
    uint skipped[TKV_QC_MAX];
    float total_max[TKV_QC_MAX], l[TKV_QC_MAX], acc[TKV_QC_MAX][TKV_VCPT];
    for (uint u = 0; u < QC; u++) {
        rows[u] = query_row_of(ps, qr0, n_q_heads, ratio, window, kvh, u0 + min(u, nu - 1u));
        total_max[u] = tmax[rows[u].p];
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
    } else {
        group_info gi = group_of_value(head_dim, c0);
        kind = VALUE_TURBO;
        scale_bit = 8u * (2u * gi.index + gi.first * bits / 8u);
        value_bit = scale_bit + 16u + (c0 - gi.first) * bits;
        ctab = cent + group_table(gi.size) * TKV_TAB_MAX_LEVELS;
    }
    __global const uint *blocks = meta + blocks_at + ps.block_first;
    const ulong head_off = (ulong)kvh * head_stride;
    /* skip when 2^d < threshold: decided by d alone outside a band around
     * log2(threshold) (exp2 is monotone), by exp2 within it; -INFINITY for
     * a threshold of 0 keeps every row */
    const float cut = log2(threshold), band = 1.0f / 64.0f;
    /* any_needed alternates between two flags: the one a tile resets was
     * last read two tiles before, which every work-item has left behind at
     * the tile in between's first barrier */
    uint n_read = 0u;

    for (uint b_rel = b_first; b_rel < b_end; b_rel++) {
        const uint b = ps.tile_base + b_rel, j0 = geom_row0(g, b);
        const uint nt = min(geom_len(g, b), ps.hi - j0);
        /* uniform: a tile no row of the unit sees adds nothing */
        if (j0 + nt <= rows[0].lo || j0 > rows[nu - 1u].limit)
            continue;
        float before[TKV_QC_MAX];
        for (uint u = 0; u < QC; u++)
            before[u] = bmax[(ulong)rows[u].p * bmax_pitch + b_rel];
        for (uint j = lid; j < nt; j += wg)
            for (uint u = 0; u < QC; u++) {
                float sv = j0 + j >= rows[u].lo && j0 + j <= rows[u].limit
                               ? scores[(ulong)rows[u].p * score_pitch + j0 + j - ps.jbase]
                               : -INFINITY;
                wt[j * QC + u] = sv;
                m1[u * tile_rows + j] = sv;
            }
        __local int *flag = any_needed + (n_read++ & 1u);
        if (lid == 0u)
            *flag = 0;
        barrier(CLK_LOCAL_MEM_FENCE);
        /* running max within the tile (Hillis-Steele prefix max) */
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
                if (u < nu && j0 + j >= rows[u].lo && j0 + j <= rows[u].limit) {
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
                atomic_or(flag, 1);
        }
        barrier(CLK_LOCAL_MEM_FENCE);
        if (!*flag)
            continue; /* uniform: the tile's V is not read at all */
        load_tile(vbuf, blocks, g, j0, nt, block_stride, head_off, row_bytes, padded, slot_words,
                  tile, rowbit);
        barrier(CLK_LOCAL_MEM_FENCE);
        for (uint j = lane; j < nt && active; j += lanes) {
            if (!needed[j])
                continue;
            const uint at = rowbit[j] + value_bit, sat = rowbit[j] + scale_bit;
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
            default: { /* VALUE_TURBO */
                uint x = tile_bits(tile, at, TKV_VCPT * bits), mask = (1u << bits) - 1u;
                for (uint k = 0; k < TKV_VCPT; k++)
                    val[k] = ctab[(x >> (k * bits)) & mask];
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
                part_acc[((ulong)rows[u].p * part_pitch + run) * head_dim + c0 + k] = sum;
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
            part_l[(ulong)rows[u].p * part_pitch + run] = red[0];
            part_skip[(ulong)rows[u].p * part_pitch + run] = redu[0];
        }
    }
}

#define VALUES_KERNEL(QC, WT)                                                                  \
    __kernel void attn_values_##QC(VALUES_PARAMS(WT))                                          \
    {                                                                                          \
        __local float cent[TKV_CENT_FLOATS];                                                   \
        __local int any_needed[2];                                                             \
        values_body(VALUES_ARGS, cent, any_needed, QC);                                        \
    }
VALUES_KERNEL(1, float)
VALUES_KERNEL(2, float2)
VALUES_KERNEL(4, float4)
VALUES_KERNEL(8, float8)

/* ---- attn_merge: one work-group per pass row --------------------------------
 * out = sum of the runs' acc / sum of their l, then R^T (turbo V); the row's
 * skipped count at skip_at + row of the same buffer, and with lse_at
 * non-zero its log-sum-exp at lse_at + row, ln(sum_j e^x_j) = ln 2 (M +
 * log2 l) with M the row's max in base 2, so that one read brings them all
 * back. */
__kernel void attn_merge(__global const uint *meta, uint seq_at, uint qseq_at, uint qr0,
                         uint qr1, uint n_q_heads, uint window, uint bt, uint seg_rows, uint segs,
                         uint tpb, uint head_dim, uint type, uint rotation, uint tiles_per_run,
                         __global const float *tmax, __global const float *part_acc,
                         __global const float *part_l, __global const uint *part_skip,
                         uint part_pitch, __global const float *tab, __global float *out,
                         uint skip_at, uint lse_at, __local float *v, __local float *tmp,
                         __local float *lsum, __local uint *lskip)
{
    const uint p = get_group_id(0), lid = get_local_id(0), wg = get_local_size(0);
    const uint qrow = qr0 + p / n_q_heads;
    const tile_geom g = { bt, seg_rows, segs, tpb };
    const pass_seq ps = pass_seq_of(meta, seq_at, meta[qseq_at + qrow], qr0, qr1, window, g);
    const uint runs = (ps.n_tiles + tiles_per_run - 1u) / tiles_per_run;
    __global const float *part = part_acc + (ulong)p * part_pitch * head_dim;

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
    for (uint c = lid; c < head_dim; c += wg) {
        /* four independent sums keep four loads in flight */
        float a[4] = { 0.0f, 0.0f, 0.0f, 0.0f };
        uint r = 0;
        for (; r + 3u < runs; r += 4u)
            for (uint k = 0; k < 4u; k++)
                a[k] += part[(ulong)(r + k) * head_dim + c];
        for (; r < runs; r++)
            a[0] += part[(ulong)r * head_dim + c];
        v[c] = ((a[0] + a[1]) + (a[2] + a[3])) / lsum[0];
    }
    barrier(CLK_LOCAL_MEM_FENCE);
    if (type_bits(type))
        rotate_local(v, tmp, head_dim, rotation, 1, tab);
    const ulong row = (ulong)qr0 * n_q_heads + p;
    for (uint e = lid; e < head_dim; e += wg)
        out[row * head_dim + e] = v[e];
    if (lid == 0u) { /* the skip counts and lse follow the outputs in the same buffer */
        ((__global uint *)out)[skip_at + row] = lskip[0];
        if (lse_at)
            out[lse_at + row] = M_LN2_F * (tmax[p] + log2(lsum[0]));
    }
}
