/* SPDX-License-Identifier: MIT */
/*
 * Decode attention on the paged cache (struct tkv_attention_args) in one
 * dispatch, attn_decode_QC ("flash decoding"): work-group (kv head, chunk,
 * unit).
 *
 * A work unit is up to QC query rows of one sequence and one kv head (its
 * query tokens times the GQA group, in order: row uu is token uu / ratio,
 * head kvh * ratio + uu % ratio), so that every K and V row is decoded once
 * for all of them; the units table holds (sequence, first row u0) pairs. QC
 * is a compile-time constant of each kernel variant (2, 4, 8, 16), so that
 * the accumulators stay in registers.
 *
 * A chunk is a run of tiles_per_chunk tiles of the sequence's rows (a tile:
 * up to tile_rows rows, one per work-item when K is scored); attention.c
 * picks tiles_per_chunk per call from the device's compute units, so that a
 * call fills the device several times over at any context length and batch.
 *
 * Each work-group:
 *  1. prepares its query rows (turbo K: rotated, <R q, y_hat> = <q, k_hat>;
 *     QJL K: also projected, S R q per group) in local memory;
 *  2. for each tile of its chunk: copies the packed K rows into local memory
 *     with coalesced loads, scores each row once for all QC query rows (in
 *     base 2, s = log2(e) x, so that weights are exp2), takes the tile's max
 *     into the running max m of the chunk, rescales what it accumulated,
 *     weighs each row 2^(s - m), and accumulates the V rows of the tile that
 *     some query row did not skip, in the rotated domain; the V rows every
 *     query row skipped are not read at all;
 *  3. writes (m, l, acc, skipped) of its chunk to scratch; the work-group of
 *     the (unit, kv head) that arrives last (atomic counter after a fence)
 *     merges the chunks, applies R^T once per output row, writes the output,
 *     the skip count and the log-sum-exp, and resets the counter for the next
 *     call. A unit of one chunk writes its output directly.
 *
 * Sparse V (the same rule as the Vulkan plugin): row j's V is skipped for a
 * query row when 2^(s_j - m) < threshold, m the running max of j's chunk
 * through the end of j's tile (a tile is scored before any of its V rows is
 * read). Skipped rows still count in l and the lse. The reference takes the
 * running max over every row before j instead, which is never below the
 * chunk's and never above it once the chunk's first tile holds the
 * sequence's largest scores: the chunk-local rule skips at most what the
 * reference skips in the first tiles of a chunk, the same elsewhere.
 *
 * The meta buffer (the call's one upload) holds at seq_at four words per
 * sequence (n_ctx, n_q, q_first, block_first), at blocks_at the block table,
 * at units_at the units and, unless the queries are read where the host
 * keeps them (qbuf, its own f32 buffer), at q_at the queries: qbuf is then
 * the meta buffer and q_at their word there, else q_at their float in qbuf.
 *
 * Rows are visible to the query token at position pos = n_ctx - n_q + t
 * when lo(pos) <= j <= pos, lo(pos) = pos + 1 - window when a window is set
 * (and positive), else 0; x_j = scale q.k_j, or softcap tanh(scale q.k_j /
 * softcap): attention.c folds the constants into pre and post.
 */

#define TKV_QC_MAX 16u
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
    /* element by element with constant indices: a vstore into out would
     * put the caller's array on the stack (NVIDIA: a 192-byte frame, a
     * store and loads per decoded value) */
    if (QC == 16u) {
        float16 x = ((__local const float16 *)a)[i];
        out[0] = x.s0, out[1] = x.s1, out[2] = x.s2, out[3] = x.s3;
        out[4] = x.s4, out[5] = x.s5, out[6] = x.s6, out[7] = x.s7;
        out[8] = x.s8, out[9] = x.s9, out[10] = x.sa, out[11] = x.sb;
        out[12] = x.sc, out[13] = x.sd, out[14] = x.se, out[15] = x.sf;
    } else if (QC == 8u) {
        float8 x = ((__local const float8 *)a)[i];
        out[0] = x.s0, out[1] = x.s1, out[2] = x.s2, out[3] = x.s3;
        out[4] = x.s4, out[5] = x.s5, out[6] = x.s6, out[7] = x.s7;
    } else if (QC == 4u) {
        float4 x = ((__local const float4 *)a)[i];
        out[0] = x.s0, out[1] = x.s1, out[2] = x.s2, out[3] = x.s3;
    } else if (QC == 2u) {
        float2 x = ((__local const float2 *)a)[i];
        out[0] = x.s0, out[1] = x.s1;
    } else {
        out[0] = a[i];
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

/* The row in q (and out) of row uu of a unit of kv head kvh. */
inline uint row_p(pass_seq ps, uint n_q_heads, uint ratio, uint kvh, uint uu)
{
    return (ps.q_first + uu / ratio) * n_q_heads + kvh * ratio + uu % ratio;
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

/* Rows j0 .. j0 + nt - 1 (one tile) of kv head kvh of a sequence into local
 * memory with coalesced 32-bit loads, by the whole work-group (the caller
 * puts the barrier). Rows of a whole number of words at word-aligned places
 * (padded) get a spare word each, so that work-items walking rows side by
 * side do not hit the same bank; then a tile of several pool blocks is
 * copied as one stream of words, each word finding its block. Otherwise one
 * segment (the rows in one pool block, contiguous in the cache buffer) at a
 * time, segment k to words k * slot_words on. rowbit[r] gets the bit
 * position of tile row r. The tile takes segs * slot_words + 2 words
 * (attention.c: slot_words). With masked, the words of rows r whose need[r]
 * is 0 are not read (sparse V: the rows every query row skipped). */
inline void load_tile(__global const uint *buf, __global const uint *blocks, tile_geom g, uint j0,
                      uint nt, ulong block_stride, ulong head_off, uint row_bytes, int padded,
                      uint slot_words, __local uint *tile, __local uint *rowbit, int masked,
                      __local const uint *need)
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
                x[i] = ww < n_words && (!masked || need[r])
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
    const float inv_bytes = 1.0f / (float)row_bytes;
    for (uint k = 0, first = 0; first < nt; k++, first += g.seg_rows) {
        const uint n = min(g.seg_rows, nt - first);
        const ulong start =
            (ulong)blocks[pb0 + k] * block_stride + head_off + (ulong)r0 * row_bytes;
        const uint misalign = (uint)start & 3u, n_words = (misalign + n * row_bytes + 3u) >> 2;
        __global const uint *src = buf + (start >> 2);
        __local uint *dst = tile + k * slot_words;
        __local const uint *seg_need = need + first;
        /* eight loads in flight per work-item before their stores, the
         * last eight cut at the segment's end */
        for (uint w = lid; w < n_words; w += 8u * wg) {
            uint x[8];
            for (uint i = 0; i < 8u; i++) {
                uint ww = w + i * wg;
                int want = ww < n_words;
                if (want && masked) {
                    /* the rows of the word's first and last byte */
                    uint b0 = 4u * ww > misalign ? 4u * ww - misalign : 0u;
                    uint b1 = min(4u * ww + 3u - misalign, n * row_bytes - 1u);
                    want = seg_need[quot(b0, row_bytes, inv_bytes)] ||
                           seg_need[quot(b1, row_bytes, inv_bytes)];
                }
                x[i] = want ? src[ww] : 0u;
            }
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

/* rotate_local (common.cl) of n_rows rows at once, row r at v + r head_dim,
 * so that the rows share the barriers: R v, or R^T v when inverse; nothing
 * for TKV_ROTATION_NONE (or any other value). tmp: n_rows head_dim floats.
 * Every barrier is passed whatever the rotation, so that compilers that
 * turn work-groups into loops (PoCL) need not replicate what follows. */
void rotate_rows_local(__local float *v, __local float *tmp, uint n_rows, uint head_dim,
                       uint rotation, int inverse, __global const float *tab)
{
    const uint lid = get_local_id(0), n = get_local_size(0);
    const uint total = rotation == TKV_ROTATION_WHT || rotation == TKV_ROTATION_DENSE
                           ? n_rows * head_dim
                           : 0u;
    const uint wht = rotation == TKV_ROTATION_WHT ? total : 0u;
    const uint dense = rotation == TKV_ROTATION_DENSE ? total : 0u;
    const float inv_hd = 1.0f / (float)head_dim;
    /* WHT: D2 H D1 / sqrt(g); dense: Q (tmp holds v) */
    for (uint k = lid; k < total; k += n) {
        uint e = k - quot(k, head_dim, inv_hd) * head_dim;
        group_info g = group_of_value(head_dim, e);
        if (wht)
            v[k] *= tab[tab_offset(tab, g.size, inverse ? TKV_TAB_SIGN2 : TKV_TAB_SIGN1) + e -
                        g.first];
        else
            tmp[k] = v[k];
    }
    barrier(CLK_LOCAL_MEM_FENCE);
    wht_butterflies(v, wht, head_dim, lid, n);
    for (uint k = lid; k < wht; k += n) {
        uint e = k - quot(k, head_dim, inv_hd) * head_dim;
        group_info g = group_of_value(head_dim, e);
        float inv_sqrt = tab[tab_offset(tab, g.size, TKV_TAB_INV_SQRT)];
        float post =
            tab[tab_offset(tab, g.size, inverse ? TKV_TAB_SIGN1 : TKV_TAB_SIGN2) + e - g.first];
        v[k] = v[k] * inv_sqrt * post;
    }
    for (uint k = lid; k < dense; k += n) {
        uint r = quot(k, head_dim, inv_hd), e = k - r * head_dim;
        group_info g = group_of_value(head_dim, e);
        __global const float *q = tab + tab_offset(tab, g.size, TKV_TAB_DENSE);
        __local const float *in = tmp + r * head_dim + g.first;
        uint i = e - g.first;
        float sum = 0.0f;
        if (inverse)
            for (uint j = 0; j < g.size; j++)
                sum += q[j * g.size + i] * in[j];
        else
            for (uint j = 0; j < g.size; j++)
                sum += q[i * g.size + j] * in[j];
        v[k] = sum;
    }
    barrier(CLK_LOCAL_MEM_FENCE);
}

/* acc[u] += v * q_u[i] for the QC query rows (qloc is [i][u]) */
#define ACC_QUERIES(acc, v, i)                                                                 \
    do {                                                                                       \
        float q_[TKV_QC_MAX], v_ = (v);                                                        \
        load_qc(q_, qloc, (i), QC);                                                            \
        for (uint u_ = 0; u_ < QC; u_++)                                                       \
            acc[u_] = mad(v_, q_[u_], acc[u_]);                                                \
    } while (0)

/* <q_u, k> for the QC query rows of one packed K row at bit row_bit of the
 * tile, into tot[u]. */
inline void score_row(__local const uint *tile, uint row_bit, uint head_dim, uint type, uint bits,
                      __local const float *cent, __local const float *qloc, float *tot,
                      const uint QC)
{
    for (uint u = 0; u < QC; u++)
        tot[u] = 0.0f;
    if (type == TKV_TYPE_F32 && !(row_bit & 31u)) {
        /* word-aligned rows (every row of a cache at a word-aligned offset):
         * the floats as they lie */
        __local const uint *w = tile + (row_bit >> 5);
        for (uint i = 0; i < head_dim; i++)
            ACC_QUERIES(tot, as_float(w[i]), i);
        return;
    }
    if (type == TKV_TYPE_F16 && !(row_bit & 15u)) {
        /* halves through vload_half: exact, and one instruction on GPUs */
        __local const half *h = (__local const half *)tile + (row_bit >> 4);
        for (uint i = 0; i < head_dim; i++)
            ACC_QUERIES(tot, vload_half(i, h), i);
        return;
    }
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
            ACC_QUERIES(tot, tkv_fp16_to_float(w & 0xffffu), i);
            ACC_QUERIES(tot, tkv_fp16_to_float(w >> 16), i + 1u);
        }
    } else if (type == TKV_TYPE_Q8_0) {
        for (uint first = 0; first < head_dim; first += TKV_Q8_0_BLOCK) {
            uint len = min(TKV_Q8_0_BLOCK, head_dim - first);
            float d = tkv_fp16_to_float(reader_take(&rd, tile, 16u)), part[TKV_QC_MAX];
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
            float sc = tkv_fp16_to_float(reader_take(&rd, tile, 16u)), part[TKV_QC_MAX];
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
                float gamma = qjl_scale(cent, g) * tkv_fp16_to_float(reader_take(&rd, tile, 16u));
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
        /* outlier-split: + sum_o q[i_o] x_o, against the unrotated queries
         * (qloc rows head_dim + i); rd is at the indices, rv at the values */
        if (type_is_outlier(type)) {
            const uint n_o = tkv_outlier_count(head_dim), ib8 = 8u * tkv_outlier_index_bytes(head_dim);
            bit_reader rv;
            reader_start(&rv, tile, row_bit + 8u * turbo_row_bytes(head_dim, bits) + n_o * ib8);
            for (uint o = 0; o < n_o; o++) {
                const uint i = reader_take(&rd, tile, ib8);
                const float x = tkv_fp16_to_float(reader_take(&rv, tile, 16u));
                ACC_QUERIES(tot, x, head_dim + i);
            }
        }
    }
}

#if TKV_VCPT % 4 || TKV_VCPT > 8
#error "attn_decode decodes 4 to 8 value coordinates per work-item, 4 at a time"
#endif

/* Outlier-split values: their outliers accumulate unrotated beside the
 * rotated turbo part (acc_o), and each chunk rotates its sums back before
 * adding them. Left out of the programs specialized for other V types. */
#if !defined(TKV_SPEC_V_TYPE) || TKV_SPEC_V_TYPE == TKV_TYPE_TURBO3_OUT ||                      \
    TKV_SPEC_V_TYPE == TKV_TYPE_TURBO4_OUT
#define TKV_SPLIT_V 1
#else
#define TKV_SPLIT_V 0
#endif

/* How a work-item's V coordinates are stored. */
enum value_kind { VALUE_F32, VALUE_F16, VALUE_Q8_0, VALUE_TURBO };

/* Floats of the partials of one chunk: acc[QC][head_dim], then m, l, the
 * skip count and a spare float of each query row. */
#define PART_FLOATS(QC, hd) ((QC) * ((hd) + 4u))

#define DECODE_PARAMS(QT)                                                                      \
    __global const uint *kbuf, __global const uint *vbuf, __global const uint *meta,           \
        __global const float *qbuf, uint seq_at, uint blocks_at, uint units_at, uint q_at,     \
        uint n_q_heads, uint ratio,                                                            \
        uint window, uint bt, uint seg_rows, uint segs, uint tpb, ulong k_block_stride,        \
        ulong k_head_stride, uint k_row_bytes, int k_padded, uint k_slot, uint k_type,         \
        uint k_rotation, ulong v_block_stride, ulong v_head_stride, uint v_row_bytes,          \
        int v_padded, uint v_slot, uint v_type, uint v_rotation, uint head_dim,                \
        __global const float *tab, float pre, float post, float threshold,                     \
        uint tiles_per_chunk, __global float *part, uint chunk_pitch,                          \
        __global uint *counters, __global float *out, __global float *orows, ulong o_at,       \
        uint skip_at, uint lse_at,                                                             \
        __local QT *qloc, __local uint *tile, __local QT *wt, __local float *red,              \
        __local uint *needed, __local uint *rowbit, __local uint *omask
#define DECODE_ARGS                                                                            \
    kbuf, vbuf, meta, qbuf, seq_at, blocks_at, units_at, q_at, n_q_heads, ratio, window, bt,   \
        seg_rows, segs, tpb, k_block_stride, k_head_stride, k_row_bytes, k_padded, k_slot,     \
        k_type, k_rotation, v_block_stride, v_head_stride, v_row_bytes, v_padded, v_slot,      \
        v_type, v_rotation, head_dim, tab, pre, post, threshold, tiles_per_chunk, part,        \
        chunk_pitch, counters, out, orows, o_at, skip_at, lse_at, (__local float *)qloc, tile, \
        (__local float *)wt, red, needed, rowbit, omask

/* The output rows of a unit from vloc ([QC][head_dim], normalized): R^T
 * (rotation: turbo V's, ~0u for none), then the rows into orows from float
 * o_at (the host's f32 buffer, or out from 0), the skip counts and the
 * log-sum-exps into out, ln(sum_j e^x_j) = ln 2 (m + log2 l) with m the
 * row's max in base 2. */
inline void write_rows(__local float *vloc, __local float *tmp, pass_seq ps, uint n_q_heads,
                       uint ratio, uint kvh, uint u0, uint nu,
                       uint head_dim, uint rotation, __global const float *tab,
                       __global float *out, __global float *orows, ulong o_at, uint skip_at,
                       uint lse_at, const float *m, const float *l, const uint *skipped, const uint QC)
{
    const uint lid = get_local_id(0), wg = get_local_size(0);
    rotate_rows_local(vloc, tmp, nu, head_dim, rotation, 1, tab);
    for (uint u = 0; u < nu; u++)
        for (uint e = lid; e < head_dim; e += wg)
            orows[o_at + (ulong)row_p(ps, n_q_heads, ratio, kvh, u0 + u) * head_dim + e] =
                vloc[u * head_dim + e];
    if (lid < nu) {
        for (uint u = 0; u < QC; u++) /* private arrays indexed by a constant */
            if (u == lid) {
                const uint p = row_p(ps, n_q_heads, ratio, kvh, u0 + u);
                ((__global uint *)out)[skip_at + p] = skipped[u];
                if (lse_at)
                    out[lse_at + p] = M_LN2_F * (m[u] + log2(l[u]));
            }
    }
}

inline void decode_body(DECODE_PARAMS(float), __local float *cent, __local int *any_needed,
                        __local uint *is_last, __local float *mloc, const uint QC)
{
#ifdef TKV_SPEC_HEAD_DIM
    /* a program built for one configuration (device.c, ocl_decode_kernels):
     * the call's types and head_dim as constants, so that the compiler
     * unrolls the row loops and leaves the other types' code out */
    head_dim = TKV_SPEC_HEAD_DIM;
    k_type = TKV_SPEC_K_TYPE;
    v_type = TKV_SPEC_V_TYPE;
#endif
    const uint lid = get_local_id(0), wg = get_local_size(0);
    const uint kvh = get_group_id(0), chunk = get_group_id(1);
    const uint unit_id = get_group_id(2);
    __global const uint *unit = meta + units_at + 2u * unit_id;
    const uint s = unit[0], u0 = unit[1];
    const tile_geom g = { bt, seg_rows, segs, tpb };
    const pass_seq ps = pass_seq_of(meta, seq_at, s, 0u, 0xffffffffu, window, g);
    const uint n_chunks = (ps.n_tiles + tiles_per_chunk - 1u) / tiles_per_chunk;
    if (chunk >= n_chunks)
        return;
    const uint b_first = chunk * tiles_per_chunk;
    const uint b_end = min(ps.n_tiles, b_first + tiles_per_chunk);
    const uint nu = min(QC, ps.n_q * ratio - u0);
    const uint k_bits = type_bits(k_type), v_bits = type_bits(v_type);

    query_row rows[TKV_QC_MAX];
    for (uint u = 0; u < QC; u++)
        rows[u] = query_row_of(ps, 0u, n_q_heads, ratio, window, kvh, u0 + min(u, nu - 1u));

    /* 1. the queries as K's scores take them, qloc[i][u] */
    {
        __local float *qv = (__local float *)tile, *tmp = qv + QC * head_dim;
        for (uint k = lid; k < QC * head_dim; k += wg) {
            uint u = k / head_dim, e = k - u * head_dim;
            qv[k] = qbuf[q_at + row_p(ps, n_q_heads, ratio, kvh, u0 + min(u, nu - 1u)) * head_dim + e];
        }
        barrier(CLK_LOCAL_MEM_FENCE);
        if (type_is_outlier(k_type)) /* the outliers score against q itself */
            for (uint k = lid; k < QC * head_dim; k += wg) {
                uint u = k / head_dim, e = k - u * head_dim;
                qloc[(head_dim + e) * QC + u] = qv[k];
            }
        rotate_rows_local(qv, tmp, QC, head_dim, k_bits ? k_rotation : ~0u, 0, tab);
        for (uint k = lid; k < QC * head_dim; k += wg) {
            uint u = k / head_dim, e = k - u * head_dim;
            qloc[e * QC + u] = qv[k];
        }
        if (type_is_qjl(k_type))
            for (uint k = lid; k < QC * head_dim; k += wg) {
                uint u = k / head_dim, e = k - u * head_dim;
                group_info gi = group_of_value(head_dim, e);
                __global const float *sm =
                    tab + tab_offset(tab, gi.size, TKV_TAB_QJL) + (e - gi.first) * gi.size;
                __local const float *in = qv + u * head_dim + gi.first;
                float sum = 0.0f;
                for (uint j = 0; j < gi.size; j++)
                    sum += sm[j] * in[j];
                qloc[(head_dim + e) * QC + u] = sum;
            }
        load_codebooks(cent, k_bits ? k_bits : v_bits, tab);
        /* (load_codebooks ends with a barrier: qloc is complete, tile free) */
    }
    /* V of another index width than K: its codebooks after K's */
    const int v_own = v_bits && k_bits && v_bits != k_bits;
    {
        for (uint k = lid; k < (v_own ? TKV_N_GROUP_SIZES * TKV_TAB_MAX_LEVELS : 0u); k += wg) {
            uint gi = k / TKV_TAB_MAX_LEVELS, c = k % TKV_TAB_MAX_LEVELS;
            cent[TKV_CENT_FLOATS + k] =
                c < (1u << v_bits)
                    ? tab[tab_offset_at(tab, gi,
                                        TKV_TAB_CENTROIDS + 3u * (v_bits - TKV_TURBO_BITS_MIN)) +
                          c]
                    : 0.0f;
        }
        barrier(CLK_LOCAL_MEM_FENCE);
    }
    __local const float *kcent = cent;
    __local const float *vcent = v_own ? cent + TKV_CENT_FLOATS : cent;

    /* this work-item's V coordinates c0 .. c0 + TKV_VCPT - 1: per_row
     * work-items cover a row (attention.c checks per_row * TKV_VCPT >=
     * head_dim), lanes of them take rows side by side */
    uint per_row = 1u;
    while (per_row * TKV_VCPT < head_dim && per_row < wg)
        per_row <<= 1;
    const uint lanes = wg / per_row, lane = lid / per_row;
    const uint c0 = lid % per_row * TKV_VCPT;
    const int active = c0 < head_dim;
    enum value_kind kind;
    uint scale_bit = 0u, value_bit;
    __local const float *ctab = vcent;
    if (v_type == TKV_TYPE_F32 || !active) {
        kind = VALUE_F32;
        value_bit = 32u * c0;
    } else if (v_type == TKV_TYPE_F16) {
        kind = VALUE_F16;
        value_bit = 16u * c0;
    } else if (v_type == TKV_TYPE_Q8_0) {
        uint blk = c0 / TKV_Q8_0_BLOCK;
        kind = VALUE_Q8_0;
        scale_bit = 8u * blk * (2u + TKV_Q8_0_BLOCK);
        value_bit = scale_bit + 16u + 8u * (c0 % TKV_Q8_0_BLOCK);
    } else {
        group_info gi = group_of_value(head_dim, c0);
        kind = VALUE_TURBO;
        scale_bit = 8u * (2u * gi.index + gi.first * v_bits / 8u);
        value_bit = scale_bit + 16u + (c0 - gi.first) * v_bits;
        ctab = vcent + group_table(gi.size) * TKV_TAB_MAX_LEVELS;
    }

    float m[TKV_QC_MAX], l[TKV_QC_MAX], acc[TKV_QC_MAX][TKV_VCPT];
    uint skipped[TKV_QC_MAX];
    for (uint u = 0; u < QC; u++) {
        m[u] = -INFINITY;
        l[u] = 0.0f;
        skipped[u] = 0u;
        for (uint k = 0; k < TKV_VCPT; k++)
            acc[u][k] = 0.0f;
    }
#if TKV_SPLIT_V
    /* outlier-split V: the outliers of the work-item's coordinates,
     * unrotated; v_out_bit: where a row's outlier indices begin. A tile's
     * rows with an outlier among coordinates c0 .. c0 + TKV_VCPT - 1 are
     * marked in omask[c0 / TKV_VCPT][o_words] (bit r of the tile), so that
     * only the work-items owning an outlier's coordinate add it: each
     * walks the marked rows of its lane (r = lane mod lanes: the rows its
     * turbo part takes) in row order, the sums of every work-item comparing
     * every row's outliers with its coordinates. o_pat: the bits of those
     * rows in a mask word (lanes is a power of two of at most 16). */
    const int v_split = type_is_outlier(v_type);
    const uint v_n_o = tkv_outlier_count(head_dim), v_ib8 = 8u * tkv_outlier_index_bytes(head_dim);
    const uint v_out_bit = 8u * turbo_row_bytes(head_dim, v_bits);
    const uint o_words = (segs * seg_rows + 31u) / 32u, o_n = v_split ? per_row * o_words : 0u;
    uint o_pat = 0u;
    for (uint b = lane; b < 32u; b += lanes)
        o_pat |= 1u << b;
    float acc_o[TKV_QC_MAX][TKV_VCPT];
    for (uint u = 0; u < QC; u++)
        for (uint k = 0; k < TKV_VCPT; k++)
            acc_o[u][k] = 0.0f;
#else
    const int v_split = 0;
#endif
    __global const uint *blocks = meta + blocks_at + ps.block_first;
    uint n_read = 0u;

    /* 2. the chunk's tiles that some row of the unit sees: those from the
     * one holding its first row's first visible row to the one holding
     * its last row's position */
    const query_row first_row = query_row_of(ps, 0u, n_q_heads, ratio, window, kvh, u0);
    const query_row last_row = query_row_of(ps, 0u, n_q_heads, ratio, window, kvh, u0 + nu - 1u);
    const uint b_start = max(b_first, geom_tile(g, first_row.lo) - ps.tile_base);
    const uint b_stop = min(b_end, geom_tile(g, last_row.limit) + 1u - ps.tile_base);
    for (uint b_rel = b_start; b_rel < b_stop; b_rel++) {
        const uint b = ps.tile_base + b_rel, j0 = geom_row0(g, b);
        const uint nt = min(geom_len(g, b), ps.hi - j0);
        load_tile(kbuf, blocks, g, j0, nt, k_block_stride, (ulong)kvh * k_head_stride,
                  k_row_bytes, k_padded, k_slot, tile, rowbit, 0, needed);
        __local int *flag = any_needed + (n_read++ & 1u);
        if (lid == 0u)
            *flag = 0;
        barrier(CLK_LOCAL_MEM_FENCE);

        float sv[TKV_QC_MAX];
        const uint j = j0 + lid;
        if (lid < nt)
            score_row(tile, rowbit[lid], head_dim, k_type, k_bits, kcent, (__local float *)qloc,
                      sv, QC);
        for (uint u = 0; u < QC; u++) {
            float x = -INFINITY;
            if (lid < nt && j >= rows[u].lo && j <= rows[u].limit)
                x = post > 0.0f ? post * tanh(pre * sv[u]) : pre * sv[u];
            sv[u] = x;
            red[u * wg + lid] = x;
        }
        /* the tile's max of each query row */
        for (uint span = wg >> 1; span > 0u; span >>= 1) {
            barrier(CLK_LOCAL_MEM_FENCE);
            if (lid < span)
                for (uint u = 0; u < QC; u++)
                    red[u * wg + lid] = fmax(red[u * wg + lid], red[u * wg + lid + span]);
        }
        barrier(CLK_LOCAL_MEM_FENCE);
        uint need = 0u;
        for (uint u = 0; u < QC; u++) {
            const float m_new = fmax(m[u], red[u * wg]);
            /* nothing seen yet (m_new -INFINITY): nothing to rescale */
            const float corr = m_new == -INFINITY ? 1.0f : exp2(m[u] - m_new);
            m[u] = m_new;
            l[u] *= corr;
            for (uint k = 0; k < TKV_VCPT; k++)
                acc[u][k] *= corr;
#if TKV_SPLIT_V
            for (uint k = 0; k < TKV_VCPT; k++)
                acc_o[u][k] *= corr;
#endif
            float w = 0.0f;
            if (u < nu && sv[u] != -INFINITY) {
                w = exp2(sv[u] - m_new);
                l[u] += w;
                if (w < threshold) {
                    skipped[u]++;
                    w = 0.0f;
                } else {
                    need = 1u;
                }
            }
            if (lid < nt)
                ((__local float *)wt)[lid * QC + u] = w;
        }
        if (lid < nt)
            needed[lid] = need;
        if (need)
            atomic_or(flag, 1);
#if TKV_SPLIT_V
        for (uint k = lid; k < o_n; k += wg) /* the previous tile's walk is done */
            omask[k] = 0u;
#endif
        barrier(CLK_LOCAL_MEM_FENCE);
        /* uniform: without a row some query row keeps, the tile's V is not
         * read at all (the barriers are passed all the same) */
        const int any = *flag;
        if (any)
            load_tile(vbuf, blocks, g, j0, nt, v_block_stride, (ulong)kvh * v_head_stride,
                      v_row_bytes, v_padded, v_slot, tile, rowbit, threshold > 0.0f, needed);
        barrier(CLK_LOCAL_MEM_FENCE);
#if TKV_SPLIT_V
        /* outlier-split V: each kept row's outliers marked for the
         * work-items owning their coordinates (omask, above); indices below
         * head_dim (the core checks the rows a file brings) */
        for (uint t = lid; t < (v_split && any ? nt * v_n_o : 0u); t += wg) {
            const uint r = t / v_n_o, o = t - r * v_n_o;
            if (needed[r]) {
                const uint i = tile_bits(tile, rowbit[r] + v_out_bit + o * v_ib8, v_ib8);
                if (i < head_dim)
                    atomic_or(omask + i / TKV_VCPT * o_words + (r >> 5), 1u << (r & 31u));
            }
        }
#endif
        for (uint r = lane; r < nt && active && any; r += lanes) {
            if (!needed[r])
                continue;
            const uint at = rowbit[r] + value_bit, sat = rowbit[r] + scale_bit;
            float val[TKV_VCPT], w[TKV_QC_MAX], sc = 1.0f;
            load_qc(w, (__local float *)wt, r, QC);
            if (kind != VALUE_F32 && kind != VALUE_F16) {
                /* the block's scale, folded into the weights */
                sc = !(sat & 15u) ? vload_half(sat >> 4, (__local const half *)tile)
                                  : tkv_fp16_to_float(tile_bits(tile, sat, 16u));
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
                        val[k] = tkv_fp16_to_float(x & 0xffffu);
                        val[k + 1u] = tkv_fp16_to_float(x >> 16);
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
                uint x = tile_bits(tile, at, TKV_VCPT * v_bits), mask = (1u << v_bits) - 1u;
                for (uint k = 0; k < TKV_VCPT; k++)
                    val[k] = ctab[(x >> (k * v_bits)) & mask];
                break;
            }
            }
            for (uint u = 0; u < QC; u++)
                for (uint k = 0; k < TKV_VCPT; k++)
                    acc[u][k] = mad(w[u], val[k], acc[u][k]);
        }
#if TKV_SPLIT_V
        if (v_split) { /* uniform */
            barrier(CLK_LOCAL_MEM_FENCE); /* the tile's marks are complete */
            /* this work-item's marked rows in row order, each outlier in
             * its coordinates weighed before the turbo scale is folded in
             * (a coordinate gets one outlier of a row at most) */
            __local const uint *mine = omask + lid % per_row * o_words;
            for (uint wd = 0; wd < (active && any ? o_words : 0u); wd++) {
                uint bits = mine[wd] & o_pat;
                while (bits) {
                    const uint r = 32u * wd + 31u - clz(bits & (0u - bits));
                    bits &= bits - 1u;
                    float w[TKV_QC_MAX];
                    load_qc(w, (__local float *)wt, r, QC);
                    const uint ob = rowbit[r] + v_out_bit;
                    /* every coordinate of the chunk takes a product (0
                     * where no outlier lies), all indices constant: acc_o
                     * stays in registers (a store at [u][i] put the whole
                     * array in local memory on NVIDIA) */
                    float xo[TKV_VCPT];
#pragma unroll
                    for (uint k = 0; k < TKV_VCPT; k++)
                        xo[k] = 0.0f;
                    for (uint o = 0; o < v_n_o; o++) {
                        const uint i = tile_bits(tile, ob + o * v_ib8, v_ib8) - c0;
                        const float x =
                            i < TKV_VCPT ? tkv_fp16_to_float(tile_bits(tile, ob + v_n_o * v_ib8 + 16u * o, 16u))
                                         : 0.0f;
#pragma unroll
                        for (uint k = 0; k < TKV_VCPT; k++)
                            xo[k] = k == i ? x : xo[k];
                    }
#pragma unroll
                    for (uint u = 0; u < QC; u++)
#pragma unroll
                        for (uint k = 0; k < TKV_VCPT; k++)
                            acc_o[u][k] = mad(w[u], xo[k], acc_o[u][k]);
                }
            }
        }
#endif
        barrier(CLK_LOCAL_MEM_FENCE);
    }

    /* A row of accumulators summed over the lanes that took rows side by
     * side, into dst[c0 .. c0 + TKV_VCPT) by lane 0 (the work-group passes
     * both barriers; a macro, so that the private arrays stay in registers) */
#define SUM_OVER_LANES(src, dst)                                                                \
    do {                                                                                       \
        for (uint k_ = 0; k_ < TKV_VCPT; k_++)                                                 \
            red[lid * TKV_VCPT + k_] = (src)[k_];                                              \
        barrier(CLK_LOCAL_MEM_FENCE);                                                          \
        if (lane == 0u && active)                                                              \
            for (uint k_ = 0; k_ < TKV_VCPT; k_++) {                                           \
                float sum_ = red[lid * TKV_VCPT + k_];                                         \
                for (uint r_ = 1u; r_ < lanes; r_++)                                           \
                    sum_ += red[(r_ * per_row + lid) * TKV_VCPT + k_];                         \
                (dst)[c0 + k_] = sum_;                                                         \
            }                                                                                  \
        barrier(CLK_LOCAL_MEM_FENCE);                                                          \
    } while (0)
    /* 3. the chunk's sums: acc over the lanes into vloc[u][c], l and the
     * skip counts over the work-group */
    __local float *vloc = (__local float *)tile, *tmp = vloc + QC * head_dim;
    barrier(CLK_LOCAL_MEM_FENCE);
    for (uint u = 0; u < QC; u++)
        SUM_OVER_LANES(acc[u], vloc + u * head_dim);
#if TKV_SPLIT_V
    /* outlier-split V: the outliers' sums into vo (after the rotation's
     * scratch), the turbo part rotated back, the two added; the chunk's
     * sums are then unrotated, and so are the merge's. Every barrier is
     * passed whatever the type (the generic program: PoCL). */
    {
        const uint n_split = v_split ? QC : 0u;
        __local float *vo = tmp + QC * head_dim;
        for (uint u = 0; u < n_split; u++)
            SUM_OVER_LANES(acc_o[u], vo + u * head_dim);
        rotate_rows_local(vloc, tmp, n_split, head_dim, v_split ? v_rotation : ~0u, 1, tab);
        for (uint k = lid; k < n_split * head_dim; k += wg)
            vloc[k] += vo[k];
        barrier(CLK_LOCAL_MEM_FENCE);
    }
#endif
    __local uint *redu = (__local uint *)red; /* the skip counts after l */
    for (uint u = 0; u < QC; u++)
        red[u * wg + lid] = l[u];
    for (uint span = wg >> 1; span > 0u; span >>= 1) {
        barrier(CLK_LOCAL_MEM_FENCE);
        if (lid < span)
            for (uint u = 0; u < QC; u++)
                red[u * wg + lid] += red[u * wg + lid + span];
    }
    barrier(CLK_LOCAL_MEM_FENCE);
    for (uint u = 0; u < QC; u++)
        l[u] = red[u * wg];
    barrier(CLK_LOCAL_MEM_FENCE);
    for (uint u = 0; u < QC; u++)
        redu[u * wg + lid] = skipped[u];
    for (uint span = wg >> 1; span > 0u; span >>= 1) {
        barrier(CLK_LOCAL_MEM_FENCE);
        if (lid < span)
            for (uint u = 0; u < QC; u++)
                redu[u * wg + lid] += redu[u * wg + lid + span];
    }
    barrier(CLK_LOCAL_MEM_FENCE);
    for (uint u = 0; u < QC; u++)
        skipped[u] = redu[u * wg];

    /* one chunk: its sums are the rows'; else the chunk's partials, then
     * the counter of its (unit, kv head). Below, every work-group passes
     * every barrier, and what it does not have to do is skipped by bounds:
     * compilers that turn work-groups into loops (PoCL) then need not
     * replicate the kernel's tail per branch. */
    const uint pair = unit_id * get_num_groups(0) + kvh;
    const uint part_floats = PART_FLOATS(QC, head_dim);
    const int single = n_chunks == 1u;
    if (single) {
        for (uint k = lid; k < nu * head_dim; k += wg) {
            const uint u = k / head_dim;
            float lu = 0.0f;
            for (uint i = 0; i < QC; i++) /* private arrays indexed by a constant */
                lu = i == u ? l[i] : lu;
            vloc[k] /= lu;
        }
    } else {
        __global float *mine = part + ((ulong)pair * chunk_pitch + chunk) * part_floats;
        for (uint k = lid; k < nu * head_dim; k += wg)
            mine[k] = vloc[k];
        if (lid < QC) {
            __global float *stat = mine + QC * head_dim + 4u * lid;
            for (uint u = 0; u < QC; u++)
                if (u == lid) {
                    stat[0] = m[u];
                    stat[1] = l[u];
                    stat[2] = as_float(skipped[u]);
                }
        }
        mem_fence(CLK_GLOBAL_MEM_FENCE);
    }
    barrier(CLK_GLOBAL_MEM_FENCE | CLK_LOCAL_MEM_FENCE);
    if (lid == 0u)
        *is_last = !single && atomic_inc(counters + pair) == n_chunks - 1u;
    barrier(CLK_LOCAL_MEM_FENCE);
    const int merging = *is_last;
    mem_fence(CLK_GLOBAL_MEM_FENCE);

    /* 4. the last to arrive merges: M = max m_c, L = sum l_c 2^(m_c - M),
     * out = sum acc_c 2^(m_c - M) / L; the chunks of a row side by side,
     * cp of them (a power of two) per row in red, redu and scale */
    __global const float *all = part + (ulong)pair * chunk_pitch * part_floats;
    uint cp = 1u;
    while (cp < n_chunks)
        cp <<= 1;
    const uint log_cp = 31u - clz(cp), n_pairs = merging ? QC * cp : 0u;
    __local float *scale = tmp; /* [QC][cp]: attention.c sizes the tile for it */
    __local float *lsum = tmp + QC * cp;
    for (uint k = lid; k < n_pairs; k += wg) {
        const uint u = k >> log_cp, c = k & (cp - 1u);
        red[k] = c < n_chunks && u < nu
                     ? all[(ulong)c * part_floats + QC * head_dim + 4u * u]
                     : -INFINITY;
    }
    for (uint span = cp >> 1; span > 0u; span >>= 1) {
        barrier(CLK_LOCAL_MEM_FENCE);
        for (uint k = lid; k < (merging ? QC * span : 0u); k += wg) {
            const uint u = k / span, c = k - u * span;
            red[u * cp + c] = fmax(red[u * cp + c], red[u * cp + c + span]);
        }
    }
    barrier(CLK_LOCAL_MEM_FENCE);
    if (merging) {
        for (uint u = 0; u < QC; u++)
            m[u] = red[u * cp];
        if (lid < QC)
            mloc[lid] = red[lid * cp];
    }
    barrier(CLK_LOCAL_MEM_FENCE);
    for (uint k = lid; k < n_pairs; k += wg) {
        const uint u = k >> log_cp, c = k & (cp - 1u);
        float f = 0.0f, lc = 0.0f;
        uint sc = 0u;
        if (c < n_chunks && u < nu) {
            __global const float *st = all + (ulong)c * part_floats + QC * head_dim + 4u * u;
            float mc = st[0];
            f = mc == -INFINITY ? 0.0f : exp2(mc - mloc[u]);
            lc = st[1] * f;
            sc = as_uint(st[2]);
        }
        scale[k] = f;
        redu[k] = sc;
        lsum[k] = lc;
    }
    for (uint span = cp >> 1; span > 0u; span >>= 1) {
        barrier(CLK_LOCAL_MEM_FENCE);
        for (uint k = lid; k < (merging ? QC * span : 0u); k += wg) {
            const uint u = k / span, c = k - u * span;
            lsum[u * cp + c] += lsum[u * cp + c + span];
            redu[u * cp + c] += redu[u * cp + c + span];
        }
    }
    barrier(CLK_LOCAL_MEM_FENCE);
    if (merging)
        for (uint u = 0; u < QC; u++) {
            l[u] = lsum[u * cp];
            skipped[u] = redu[u * cp];
        }
    /* four coordinates per work-item, eight chunks' loads in flight */
    for (uint k4 = lid; k4 < (merging ? nu * head_dim / 4u : 0u); k4 += wg) {
        const uint u = 4u * k4 / head_dim;
        __local const float *f = scale + u * cp;
        __global const float *col = all + 4u * k4;
        float4 a0 = (float4)(0.0f), a1 = (float4)(0.0f);
        uint c = 0;
        for (; c + 8u <= n_chunks; c += 8u) {
            float4 x[8];
            for (uint i = 0; i < 8u; i++)
                x[i] = vload4(0, col + (ulong)(c + i) * part_floats);
            for (uint i = 0; i < 8u; i += 2u) {
                a0 = mad(x[i], (float4)(f[c + i]), a0);
                a1 = mad(x[i + 1u], (float4)(f[c + i + 1u]), a1);
            }
        }
        for (; c < n_chunks; c++)
            a0 = mad(vload4(0, col + (ulong)c * part_floats), (float4)(f[c]), a0);
        vstore4((a0 + a1) / lsum[u * cp], 0, vloc + 4u * k4);
    }
    if (merging && lid == 0u)
        counters[pair] = 0u; /* for the next call */
    barrier(CLK_LOCAL_MEM_FENCE);
    write_rows(vloc, tmp, ps, n_q_heads, ratio, kvh, u0, single || merging ? nu : 0u, head_dim,
               v_bits && !v_split ? v_rotation : ~0u, tab, out, orows, o_at, skip_at, lse_at, m, l,
               skipped, QC);
}

#define DECODE_KERNEL(QC, QT)                                                                  \
    __kernel void attn_decode_##QC(DECODE_PARAMS(QT))                                          \
    {                                                                                          \
        __local float cent[2u * TKV_CENT_FLOATS];                                              \
        __local int any_needed[2];                                                             \
        __local uint is_last;                                                                  \
        __local float mloc[QC];                                                                \
        decode_body(DECODE_ARGS, cent, any_needed, &is_last, mloc, QC);                        \
    }
DECODE_KERNEL(2, float2)
DECODE_KERNEL(4, float4)
DECODE_KERNEL(8, float8)
DECODE_KERNEL(16, float16)
