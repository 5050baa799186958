/* SPDX-License-Identifier: MIT */
/*
 * Decode attention on NVIDIA's tensor cores (compute capability 8.0 and
 * later), for turbo3 K and V at head_dim 128: tc_partial_8 / tc_partial_16
 * (8 or 16 query rows a unit) and tc_merge. Compiled only into the program
 * device.c builds with -DTKV_TC (ocl_tensor_kernels); attention.c decides
 * which calls take it (tc_eligible) and describes the split. The design
 * and its measurements: docs/measurements/h100-2026-12-06-s18-tc/ (a CUDA
 * prototype, the fragment layouts) and h100-2026-12-06-s19-tc/ (these
 * kernels).
 *
 * The instructions are PTX in asm() (NVIDIA's OpenCL C compiler takes
 * inline PTX): mma.sync.m16n8k16 (fp16 in, fp32 sums), cp.async,
 * shfl.sync. No other device compiles this file: the tests check it on an
 * NVIDIA GPU (plugins/opencl/README.md, "Tensor cores").
 *
 * Work-group (kv head, chunk, unit), four warps of 32. A unit is up to QC
 * query rows of one sequence and kv head, as attn_decode's (row uu: token
 * uu / ratio, head kvh * ratio + uu % ratio). Its rows r0 .. hi - 1 (r0 the
 * first row its first token sees, rounded down to 16; hi one past the last
 * token's position) are cut into chunks of 4 x tiles_per_warp tiles of 16
 * rows; warp w of a chunk walks its tiles_per_warp consecutive tiles. A
 * tile lies in one pool block (attention.c: block_tokens is a multiple of
 * 16), 16 rows of 50 bytes, contiguous.
 *
 * Per tile of a warp:
 * - scores: S^T (16 rows x 8 query rows) = K Q^T on mma.m16n8k16, 8 steps
 *   of 16 dimensions; each product is three fp16 products, q_hi k_hi +
 *   q_lo k_hi + q_hi k_lo (x_lo = fp16(x - x_hi)): as exact as float FMAs.
 *   The dimensions are permuted, K's and Q's alike, so that lane t's share
 *   of a step is dimensions 32 t + 4 s .. + 3 of its rows: one 96-bit run
 *   of each row's indices. Two indices at a time are looked up in a table
 *   of centroid pairs (64 entries, fp16x2 hi and lo, one column per lane:
 *   no bank conflicts).
 * - visibility and online softmax per query row, in base 2 (s = log2(e) x
 *   as attn_decode's scores), the tile's max by shuffles.
 * - values: O^T (128 x 8) += V^T (128 x 16 rows) P'^T, P' = p x the row's
 *   scale, split hi / lo likewise; a second permutation gives lane g the
 *   output dimensions 16 g .. 16 g + 15; P' goes from the accumulator's
 *   layout to the operand's through local memory.
 * - loads: three tiles in flight by cp.async into a ring in local memory.
 * - sparse V: a visible row whose weight 2^(s - m) is below the threshold
 *   (m: the warp's running max through the tile) adds nothing to O but
 *   counts in l and in the skip count, attn_decode's rule with a warp's
 *   rows as the chunk.
 * Each warp writes (o, m, l, skipped) of every query row of its unit to
 * part; tc_merge combines a unit's, rotates back (V's rotation), writes
 * the outputs, the skip counts and the log-sum-exps.
 */
#ifdef TKV_TC

#include "tensor.h"

#define TC_NS 3      /* tiles in flight a warp */
#define TC_SLOT 102u /* uint4 of a ring slot: the K tile (50 + 1), the V tile (50 + 1) */
#define TC_V_AT 51u

/* ---- the instructions, as PTX (sm_80 and later) ---------------------- */
/* the private arrays (accumulators, fragments) stay in registers only with
 * their loops unrolled */
#define TC_UNROLL _Pragma("unroll")

inline void mma16816(float *d, uint a0, uint a1, uint a2, uint a3, uint b0, uint b1)
{
    float d0 = d[0], d1 = d[1], d2 = d[2], d3 = d[3];
    asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0,%1,%2,%3}, "
                     "{%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};"
                     : "+f"(d0), "+f"(d1), "+f"(d2), "+f"(d3)
                     : "r"(a0), "r"(a1), "r"(a2), "r"(a3), "r"(b0), "r"(b1));
    d[0] = d0, d[1] = d1, d[2] = d2, d[3] = d3;
}

inline float shfl_xor(float x, uint mask)
{
    float y;
    asm volatile("shfl.sync.bfly.b32 %0, %1, %2, 0x1f, 0xffffffff;"
                     : "=f"(y)
                     : "f"(x), "r"(mask));
    return y;
}

inline void warp_sync(void) { asm volatile("bar.warp.sync 0xffffffff;"); }

/* 16 bytes from global into local memory, asynchronously */
inline void cp_async16(__local uint4 *dst, __global const uint4 *src)
{
    const uint d = (uint)(size_t)dst;
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16;" ::"r"(d), "l"(src));
}
inline void cp_commit(void) { asm volatile("cp.async.commit_group;"); }
/* all but the TC_NS - 1 latest groups complete */
inline void cp_wait_older(void) { asm volatile("cp.async.wait_group 2;"); }
inline void cp_wait_all(void) { asm volatile("cp.async.wait_all;"); }

inline uint tc_lds(uint addr)
{
    uint v;
    asm volatile("ld.shared.u32 %0, [%1];" : "=r"(v) : "r"(addr));
    return v;
}

inline uint tc_lds_lo(uint addr)
{
    uint v;
    asm volatile("ld.shared.u32 %0, [%1+8192];" : "=r"(v) : "r"(addr));
    return v;
}

/* the tables by their address in the shared window: a key's address is
 * then one shift and one AND and one ADD of the index bits */
#define TC_TAB_BASE(tables) ((uint)(size_t)(tables))
#define TC_LD_HI(tables, addr) tc_lds(addr)
#define TC_LD_LO(tables, addr) tc_lds_lo(addr)

#if TKV_GROUP_MAX != 128
#error "tc_rotate takes a row of 128 values as one group"
#endif
#if TC_NS != 3
#error "cp_wait_older waits for all but the two latest groups"
#endif

/* fp16 bits of x (round to nearest even), and of x minus that value */
inline void tc_split(float x, ushort *hi, ushort *lo)
{
    ushort h[2];
    vstore_half_rte(x, 0, (__private half *)h);
    const float back = vload_half(0, (__private const half *)h);
    vstore_half_rte(x - back, 1, (__private half *)h);
    *hi = h[0];
    *lo = h[1];
}

inline uint tc_pack(ushort lo, ushort hi) { return (uint)lo | (uint)hi << 16; }

inline uint tc_funnel(uint lo, uint hi, uint sh) { return sh ? (lo >> sh) | (hi << (32u - sh)) : lo; }

/* The table address of a key: bits [b, b + 6) of the words x (two 3-bit
 * indices) as a column offset of 128 bytes each, plus the lane's base. */
inline uint tc_key(const uint *x, int b, uint lanebase)
{
    uint v;
    if (b >= 7) {
        const int bb = b - 7, w = bb >> 5, o = bb & 31;
        v = o + 13 <= 32 ? x[w] >> o : tc_funnel(x[w], x[w + 1], (uint)o);
    } else {
        v = x[0] << (7 - b);
    }
    return (v & (63u << 7)) + lanebase;
}

inline uint tc_key64(ulong e, int b, uint lanebase)
{
    const uint v = b >= 7 ? (uint)(e >> (b - 7)) : (uint)e << (7 - b);
    return (v & (63u << 7)) + lanebase;
}

inline float tc_half_at(__local const uchar *p, uint byte)
{
    return vload_half(0, (__local const half *)(p + byte));
}

/* n words of the bytes at `byte` of a staged tile (2-byte aligned) */
inline void tc_words(__local const uint *w, uint byte, uint *x, int n)
{
    const uint sh = (byte & 3u) * 8u;
    __local const uint *p = w + (byte >> 2);
    uint raw[4];
    for (int i = 0; i < 4; i++)
        if (i <= n)
            raw[i] = p[i];
    for (int i = 0; i < 3; i++)
        if (i < n)
            x[i] = tc_funnel(raw[i], raw[i + 1], sh);
}

/* R v (inverse: R^T v) of rows x 128 values in local memory, by the 128
 * work-items of the work-group; ends with a barrier. The WHT (one group of
 * 128: D2 H D1 / sqrt(128)) as rotate_rows_local computes it, the same
 * operations in the same order, but work-item e owns value e of every row,
 * so that it loads its signs and the scale once instead of at every row
 * and step; other rotations through rotate_rows_local. */
inline void tc_rotate(__local float *v, __local float *tmp, uint rows, uint rotation, int inverse,
                      __global const float *tab)
{
    if (rotation != TKV_ROTATION_WHT) {
        rotate_rows_local(v, tmp, rows, TC_HD, rotation, inverse, tab);
        return;
    }
    const uint e = get_local_id(0);
    const float pre = tab[tab_offset(tab, TC_HD, inverse ? TKV_TAB_SIGN2 : TKV_TAB_SIGN1) + e];
    const float post = tab[tab_offset(tab, TC_HD, inverse ? TKV_TAB_SIGN1 : TKV_TAB_SIGN2) + e];
    const float inv_sqrt = tab[tab_offset(tab, TC_HD, TKV_TAB_INV_SQRT)];
    for (uint r = 0; r < rows; r++)
        v[r * TC_HD + e] *= pre;
    barrier(CLK_LOCAL_MEM_FENCE);
    for (uint h = 1u; h < TC_HD; h <<= 1) {
        if (!(e & h))
            for (uint r = 0; r < rows; r++) {
                const float a = v[r * TC_HD + e], b = v[r * TC_HD + e + h];
                v[r * TC_HD + e] = a + b;
                v[r * TC_HD + e + h] = a - b;
            }
        barrier(CLK_LOCAL_MEM_FENCE);
    }
    for (uint r = 0; r < rows; r++)
        v[r * TC_HD + e] = v[r * TC_HD + e] * inv_sqrt * post;
    barrier(CLK_LOCAL_MEM_FENCE);
}

/* A unit's rows: r0 .. hi - 1, its first and last token's views. */
typedef struct {
    uint s, u0, nu, lo, hi, r0, n_chunks;
    uint n_ctx, n_q, q_first, block_first;
} tc_unit;

inline tc_unit tc_unit_of(__global const uint *meta, uint seq_at, uint units_at, uint unit_id,
                          uint ratio, uint window, uint qc, uint tiles_per_warp)
{
    tc_unit u;
    __global const uint *e = meta + units_at + 2u * unit_id;
    u.s = e[0];
    u.u0 = e[1];
    __global const uint *sq = meta + seq_at + 4u * u.s;
    u.n_ctx = sq[0];
    u.n_q = sq[1];
    u.q_first = sq[2];
    u.block_first = sq[3];
    u.nu = min(qc, u.n_q * ratio - u.u0);
    const uint first = u.n_ctx - u.n_q + u.u0 / ratio;           /* position of its first token */
    const uint last = u.n_ctx - u.n_q + (u.u0 + u.nu - 1u) / ratio; /* and of its last */
    u.lo = window && first + 1u > window ? first + 1u - window : 0u;
    u.hi = last + 1u;
    u.r0 = u.lo & ~15u;
    const uint chunk_rows = 64u * tiles_per_warp;
    u.n_chunks = (u.hi - u.r0 + chunk_rows - 1u) / chunk_rows;
    return u;
}

/* The row (of q and out) of unit row uu. */
inline uint tc_row(tc_unit u, uint n_q_heads, uint ratio, uint kvh, uint uu)
{
    return (u.q_first + uu / ratio) * n_q_heads + kvh * ratio + uu % ratio;
}

/* Queue the K and V tiles at row `row` of the unit's sequence into a ring
 * slot (lane's share: 16 bytes, and 16 more for lanes below 18). */
inline void tc_fetch(__global const uchar *kbuf, __global const uchar *vbuf,
                     __global const uint *bt_of, uint row, uint bt, ulong k_block_stride,
                     ulong k_head_off, ulong v_block_stride, ulong v_head_off, __local uint4 *dst,
                     uint lane)
{
    const uint b = row / bt, in = row - b * bt;
    const ulong blk = bt_of[b];
    __global const uint4 *tk =
        (__global const uint4 *)(kbuf + blk * k_block_stride + k_head_off + (ulong)in * TC_RB);
    __global const uint4 *tv =
        (__global const uint4 *)(vbuf + blk * v_block_stride + v_head_off + (ulong)in * TC_RB);
    cp_async16(dst + lane, tk + lane);
    cp_async16(dst + TC_V_AT + lane, tv + lane);
    if (lane < 18u) {
        cp_async16(dst + 32u + lane, tk + 32u + lane);
        cp_async16(dst + TC_V_AT + 32u + lane, tv + 32u + lane);
    }
}

#define TC_PARAMS                                                                               \
    __global const uchar *kbuf, __global const uchar *vbuf, __global const uint *meta,          \
        __global const float *qbuf, uint seq_at, uint blocks_at, uint units_at, uint q_at,      \
        uint n_q_heads, uint ratio, uint window, uint bt, ulong k_block_stride,                 \
        ulong k_head_stride, ulong v_block_stride, ulong v_head_stride, uint k_rotation,        \
        __global const float *tab, float pre, float post, float threshold,                      \
        uint tiles_per_warp, __global float *part, uint chunk_pitch
#define TC_ARGS                                                                                 \
    kbuf, vbuf, meta, qbuf, seq_at, blocks_at, units_at, q_at, n_q_heads, ratio, window, bt,    \
        k_block_stride, k_head_stride, v_block_stride, v_head_stride, k_rotation, tab, pre,     \
        post, threshold, tiles_per_warp, part, chunk_pitch

/* NT n-tiles of 8 query rows (QC = 8 NT). The local arrays: tables 4096
 * words (hi pairs, then lo pairs, [key][lane]), qfrag NT x 8 x 32, ring
 * TC_W x TC_NS x TC_SLOT, ps TC_W x 16 x 8 NT floats. */
inline void tc_partial_body(TC_PARAMS, __local uint *tables, __local uint4 *qfrag,
                            __local uint4 *ring, __local float *ps,
                            const uint NT)
{
    const uint QC = 8u * NT;
    const uint lid = get_local_id(0), warp = lid / 32u, lane = lid % 32u;
    const uint g = lane >> 2, t = lane & 3u;
    const uint kvh = get_group_id(0), chunk = get_group_id(1), unit_id = get_group_id(2);
    const tc_unit un = tc_unit_of(meta, seq_at, units_at, unit_id, ratio, window, QC, tiles_per_warp);
    if (chunk >= un.n_chunks)
        return;

    /* 1. the tables of centroid pairs; the unit's queries rotated, scaled
     * (pre), split and permuted into B fragments */
    {
        __global const float *cent =
            tab + tab_offset(tab, TC_HD, TKV_TAB_CENTROIDS + 3u * (3u - TKV_TURBO_BITS_MIN));
        for (uint i = lid; i < 64u * 32u; i += 128u) {
            const uint p = i / 32u;
            ushort ah, al, bh, bl;
            tc_split(cent[p & 7u], &ah, &al);
            tc_split(cent[p >> 3], &bh, &bl);
            tables[i] = tc_pack(ah, bh);
            tables[2048u + i] = tc_pack(al, bl);
        }
        __local float *qv = (__local float *)ring, *tmp = qv + QC * TC_HD;
        for (uint k = lid; k < QC * TC_HD; k += 128u) {
            const uint u = k / TC_HD, e = k % TC_HD;
            qv[k] = u < un.nu ? qbuf[q_at + tc_row(un, n_q_heads, ratio, kvh, un.u0 + u) * TC_HD + e]
                              : 0.0f;
        }
        barrier(CLK_LOCAL_MEM_FENCE);
        tc_rotate(qv, tmp, QC, k_rotation, 0, tab);
        for (uint k = lid; k < NT * 8u * 32u; k += 128u) {
            const uint nt = k / 256u, s = k / 32u % 8u, ln = k % 32u;
            const uint col = nt * 8u + (ln >> 2), d0 = 32u * (ln & 3u) + 4u * s;
            ushort hi[4], lo[4];
TC_UNROLL
            for (uint i = 0; i < 4u; i++)
                tc_split(pre * qv[col * TC_HD + d0 + i], &hi[i], &lo[i]);
            qfrag[k] = (uint4)(tc_pack(hi[0], hi[1]), tc_pack(hi[2], hi[3]), tc_pack(lo[0], lo[1]),
                               tc_pack(lo[2], lo[3]));
        }
        barrier(CLK_LOCAL_MEM_FENCE);
    }

    /* the query rows of this lane's accumulator columns: lo .. lim visible */
    uint clo[2][2], clim[2][2];
TC_UNROLL
    for (uint nt = 0; nt < NT; nt++)
TC_UNROLL
        for (uint j = 0; j < 2u; j++) {
            const uint col = nt * 8u + 2u * t + j;
            if (col < un.nu) {
                const uint pos = un.n_ctx - un.n_q + (un.u0 + col) / ratio;
                clo[nt][j] = window && pos + 1u > window ? pos + 1u - window : 0u;
                clim[nt][j] = pos;
            } else {
                clo[nt][j] = 1u;
                clim[nt][j] = 0u;
            }
        }

    const uint per_warp = 16u * tiles_per_warp;
    const uint begin = un.r0 + (chunk * TC_W + warp) * per_warp;
    const uint end = min(begin + per_warp, un.hi);
    float m[2][2], l[2][2], o[2][8][4];
    uint skipped[2][2]; /* sparse V: visible rows of this lane's elements whose V is left out */
TC_UNROLL
    for (uint nt = 0; nt < NT; nt++) {
        m[nt][0] = m[nt][1] = -INFINITY;
        l[nt][0] = l[nt][1] = 0.0f;
        skipped[nt][0] = skipped[nt][1] = 0u;
TC_UNROLL
        for (uint i = 0; i < 8u; i++)
            o[nt][i][0] = o[nt][i][1] = o[nt][i][2] = o[nt][i][3] = 0.0f;
    }
    __local float *pw = ps + warp * 16u * 8u * NT;
    const uint lb = TC_TAB_BASE(tables) + 4u * lane;
    __global const uint *bt_of = meta + blocks_at + un.block_first;
    const ulong k_head_off = (ulong)kvh * k_head_stride, v_head_off = (ulong)kvh * v_head_stride;
    __local uint4 *wring = ring + warp * TC_NS * TC_SLOT;
    int slot = 0;
    for (int i = 0; i < TC_NS - 1; i++) {
        const uint row = begin + 16u * (uint)i;
        if (row < end)
            tc_fetch(kbuf, vbuf, bt_of, row, bt, k_block_stride, k_head_off, v_block_stride,
                     v_head_off, wring + i * TC_SLOT, lane);
        cp_commit();
    }
    for (uint base = begin; base < begin + per_warp; base += 16u) {
        if (base >= end)
            break;
        warp_sync(); /* the slot refilled now was read in the last iteration */
        {
            const uint nb = base + 16u * (TC_NS - 1);
            if (nb < end)
                tc_fetch(kbuf, vbuf, bt_of, nb, bt, k_block_stride, k_head_off, v_block_stride,
                         v_head_off, wring + ((slot + TC_NS - 1) % TC_NS) * TC_SLOT, lane);
            cp_commit();
            cp_wait_older();
        }
        warp_sync();
        __local const uint *sk = (__local const uint *)(wring + slot * TC_SLOT);
        __local const uint *sv = sk + TC_V_AT * 4u;
        __local const uchar *skb = (__local const uchar *)sk, *svb = (__local const uchar *)sv;
        slot = (slot + 1) % TC_NS;
        /* rows of this tile before end */
        const uint n_in = base < end ? min(end - base, 16u) : 0u;
        uint xa[3], xb[3], f[4][2];
        tc_words(sk, g * TC_RB + 2u + 12u * t, xa, 3);
        tc_words(sk, (g + 8u) * TC_RB + 2u + 12u * t, xb, 3);
        const float ska = tc_half_at(skb, g * TC_RB), skb_ = tc_half_at(skb, (g + 8u) * TC_RB);
        const uint vr[4] = { 2u * t, 2u * t + 1u, 2u * t + 8u, 2u * t + 9u };
TC_UNROLL
        for (int r = 0; r < 4; r++)
            tc_words(sv, vr[r] * TC_RB + 2u + 6u * g, f[r], 2);
        /* (rows past end may hold anything: their weights are 0, and so
         * must be their scales) */
        const float sva = g < n_in ? tc_half_at(svb, g * TC_RB) : 0.0f;
        const float svb_ = g + 8u < n_in ? tc_half_at(svb, (g + 8u) * TC_RB) : 0.0f;
        float c[2][3][4];
TC_UNROLL
        for (uint nt = 0; nt < NT; nt++)
TC_UNROLL
            for (int j = 0; j < 3; j++)
                c[nt][j][0] = c[nt][j][1] = c[nt][j][2] = c[nt][j][3] = 0.0f;
TC_UNROLL
        for (int s = 0; s < 8; s++) {
            const uint A0 = tc_key(xa, 12 * s, lb), A1 = tc_key(xa, 12 * s + 6, lb);
            const uint B0 = tc_key(xb, 12 * s, lb), B1 = tc_key(xb, 12 * s + 6, lb);
            const uint h0 = TC_LD_HI(tables, A0), h1 = TC_LD_HI(tables, B0);
            const uint h2 = TC_LD_HI(tables, A1), h3 = TC_LD_HI(tables, B1);
            const uint l0 = TC_LD_LO(tables, A0), l1 = TC_LD_LO(tables, B0);
            const uint l2 = TC_LD_LO(tables, A1), l3 = TC_LD_LO(tables, B1);
TC_UNROLL
            for (uint nt = 0; nt < NT; nt++) {
                const uint4 qf = qfrag[(nt * 8u + (uint)s) * 32u + lane];
                mma16816(c[nt][0], h0, h1, h2, h3, qf.x, qf.y);
                mma16816(c[nt][1], h0, h1, h2, h3, qf.z, qf.w);
                mma16816(c[nt][2], l0, l1, l2, l3, qf.x, qf.y);
            }
        }
        const uint ja = base + g, jb = base + g + 8u;
        const int ia = g < n_in, ib = g + 8u < n_in;
        float corr[2][2];
TC_UNROLL
        for (uint nt = 0; nt < NT; nt++) {
            float sc[4];
TC_UNROLL
            for (int i = 0; i < 4; i++) {
                const float x = (c[nt][0][i] + (c[nt][1][i] + c[nt][2][i])) * (i < 2 ? ska : skb_);
                sc[i] = post > 0.0f ? post * tanh(x) : x;
            }
            /* element i: row ja (i < 2) or jb, query column 2 t + (i & 1) */
            const float s00 = ia && ja >= clo[nt][0] && ja <= clim[nt][0] ? sc[0] : -INFINITY;
            const float s01 = ia && ja >= clo[nt][1] && ja <= clim[nt][1] ? sc[1] : -INFINITY;
            const float s10 = ib && jb >= clo[nt][0] && jb <= clim[nt][0] ? sc[2] : -INFINITY;
            const float s11 = ib && jb >= clo[nt][1] && jb <= clim[nt][1] ? sc[3] : -INFINITY;
            float x0 = fmax(s00, s10), x1 = fmax(s01, s11);
TC_UNROLL
            for (uint sh = 4u; sh < 32u; sh <<= 1) {
                x0 = fmax(x0, shfl_xor(x0, sh));
                x1 = fmax(x1, shfl_xor(x1, sh));
            }
            const float n0 = fmax(m[nt][0], x0), n1 = fmax(m[nt][1], x1);
            corr[nt][0] = n0 == -INFINITY ? 1.0f : exp2(m[nt][0] - n0);
            corr[nt][1] = n1 == -INFINITY ? 1.0f : exp2(m[nt][1] - n1);
            const float p00 = s00 == -INFINITY ? 0.0f : exp2(s00 - n0);
            const float p10 = s10 == -INFINITY ? 0.0f : exp2(s10 - n0);
            const float p01 = s01 == -INFINITY ? 0.0f : exp2(s01 - n1);
            const float p11 = s11 == -INFINITY ? 0.0f : exp2(s11 - n1);
            l[nt][0] = l[nt][0] * corr[nt][0] + p00 + p10;
            l[nt][1] = l[nt][1] * corr[nt][1] + p01 + p11;
            m[nt][0] = n0;
            m[nt][1] = n1;
            /* sparse V (attention.cl's rule, the warp's rows as the chunk):
             * a visible row's V is left out where its weight is below
             * the threshold; it still counts in l */
            const int k00 = p00 >= threshold, k01 = p01 >= threshold;
            const int k10 = p10 >= threshold, k11 = p11 >= threshold;
            skipped[nt][0] += (uint)(s00 != -INFINITY && !k00) + (uint)(s10 != -INFINITY && !k10);
            skipped[nt][1] += (uint)(s01 != -INFINITY && !k01) + (uint)(s11 != -INFINITY && !k11);
            __local float *pn = pw + nt * 8u;
            pn[g * 8u * NT + 2u * t] = k00 ? p00 * sva : 0.0f;
            pn[g * 8u * NT + 2u * t + 1u] = k01 ? p01 * sva : 0.0f;
            pn[(g + 8u) * 8u * NT + 2u * t] = k10 ? p10 * svb_ : 0.0f;
            pn[(g + 8u) * 8u * NT + 2u * t + 1u] = k11 ? p11 * svb_ : 0.0f;
        }
        warp_sync();
        uint bh[2][2], bl[2][2];
TC_UNROLL
        for (uint nt = 0; nt < NT; nt++) {
            __local const float *pn = pw + nt * 8u;
            const float pv[4] = { pn[(2u * t) * 8u * NT + g], pn[(2u * t + 1u) * 8u * NT + g],
                                  pn[(2u * t + 8u) * 8u * NT + g], pn[(2u * t + 9u) * 8u * NT + g] };
            ushort ph[4], pl[4];
TC_UNROLL
            for (int i = 0; i < 4; i++)
                tc_split(pv[i], &ph[i], &pl[i]);
            bh[nt][0] = tc_pack(ph[0], ph[1]), bh[nt][1] = tc_pack(ph[2], ph[3]);
            bl[nt][0] = tc_pack(pl[0], pl[1]), bl[nt][1] = tc_pack(pl[2], pl[3]);
        }
        warp_sync();
        /* V: the indices of dimension 16 g + 2 mm (+1) of rows 2t, 2t + 1
         * (ev) and of 2t + 8, 2t + 9 (od) side by side */
        ulong ev[2], od[2];
        {
            const ulong ME = 0x1c71c71c71c7ul, MO = ME << 3;
TC_UNROLL
            for (int pr = 0; pr < 2; pr++) {
                const ulong F0 = f[2 * pr][0] | (ulong)f[2 * pr][1] << 32;
                const ulong F1 = f[2 * pr + 1][0] | (ulong)f[2 * pr + 1][1] << 32;
                ev[pr] = (F0 & ME) | (F1 & ME) << 3;
                od[pr] = (F0 & MO) >> 3 | (F1 & MO);
            }
        }
TC_UNROLL
        for (int mm = 0; mm < 8; mm++) {
            const uint A0 = tc_key64(ev[0], 6 * mm, lb), A1 = tc_key64(od[0], 6 * mm, lb);
            const uint A2 = tc_key64(ev[1], 6 * mm, lb), A3 = tc_key64(od[1], 6 * mm, lb);
            const uint h0 = TC_LD_HI(tables, A0), h1 = TC_LD_HI(tables, A1);
            const uint h2 = TC_LD_HI(tables, A2), h3 = TC_LD_HI(tables, A3);
            const uint l0 = TC_LD_LO(tables, A0), l1 = TC_LD_LO(tables, A1);
            const uint l2 = TC_LD_LO(tables, A2), l3 = TC_LD_LO(tables, A3);
TC_UNROLL
            for (uint nt = 0; nt < NT; nt++) {
                o[nt][mm][0] *= corr[nt][0];
                o[nt][mm][1] *= corr[nt][1];
                o[nt][mm][2] *= corr[nt][0];
                o[nt][mm][3] *= corr[nt][1];
                mma16816(o[nt][mm], h0, h1, h2, h3, bh[nt][0], bh[nt][1]);
                mma16816(o[nt][mm], h0, h1, h2, h3, bl[nt][0], bl[nt][1]);
                mma16816(o[nt][mm], l0, l1, l2, l3, bh[nt][0], bh[nt][1]);
            }
        }
    }
    cp_wait_all();
    /* this warp's partial of each query row: o, then m, l, skipped */
    const ulong pair = (ulong)unit_id * get_num_groups(0) + kvh;
    __global float *rec = part + ((pair * chunk_pitch + chunk) * TC_W + warp) * TC_REC(QC);
TC_UNROLL
    for (uint nt = 0; nt < NT; nt++)
TC_UNROLL
        for (uint j = 0; j < 2u; j++) {
            float lj = l[nt][j], kj = (float)skipped[nt][j]; /* (counts below 2^24: exact) */
TC_UNROLL
            for (uint sh = 4u; sh < 32u; sh <<= 1) {
                lj += shfl_xor(lj, sh);
                kj += shfl_xor(kj, sh);
            }
            const uint col = nt * 8u + 2u * t + j;
            if (g == 0u) {
                rec[QC * TC_HD + 3u * col] = m[nt][j];
                rec[QC * TC_HD + 3u * col + 1u] = lj;
                rec[QC * TC_HD + 3u * col + 2u] = kj;
            }
TC_UNROLL
            for (uint mm = 0; mm < 8u; mm++) {
                rec[col * TC_HD + 16u * g + 2u * mm] = o[nt][mm][j];
                rec[col * TC_HD + 16u * g + 2u * mm + 1u] = o[nt][mm][2 + j];
            }
        }
}

#define TC_PARTIAL_KERNEL(QC, NT)                                                               \
    __kernel __attribute__((reqd_work_group_size(128, 1, 1))) void tc_partial_##QC(TC_PARAMS)    \
    {                                                                                           \
        __local uint tables[4096];                                                              \
        __local uint4 qfrag[NT * 8 * 32];                                                       \
        __local uint4 ring[TC_W * TC_NS * TC_SLOT];                                             \
        __local float ps[TC_W * 16 * 8 * NT];                                                   \
        tc_partial_body(TC_ARGS, tables, qfrag, ring, ps, NT);                              \
    }
TC_PARTIAL_KERNEL(8, 1u)
TC_PARTIAL_KERNEL(16, 2u)

/* One work-group of 128 work-items per (kv head, unit, unit row): the
 * row's partials merged, R^T, the output row written where attn_decode
 * writes it (orows from o_at, its skip count and lse in out). Work-item
 * (pg, d) sums every fourth partial from pg on, in dimensions 4 d .. 4 d +
 * 3, so that each has a few independent loads in flight rather than one
 * long chain (partials: 4 x chunks of the unit). */
__kernel __attribute__((reqd_work_group_size(128, 1, 1))) void tc_merge(
    __global const uint *meta, uint seq_at, uint units_at, uint n_q_heads, uint ratio,
    uint window, uint qc, uint tiles_per_warp, __global const float *part, uint chunk_pitch,
    uint v_rotation, __global const float *tab, __global float *out, __global float *orows,
    ulong o_at, uint skip_at, uint lse_at)
{
    __local float w[TC_PARTS_MAX], red[128], sums[4u * TC_HD], vloc[TC_HD], tmp[TC_HD];
    const uint lid = get_local_id(0), kvh = get_group_id(0), unit_id = get_group_id(1);
    const uint u = get_group_id(2);
    const tc_unit un = tc_unit_of(meta, seq_at, units_at, unit_id, ratio, window, qc, tiles_per_warp);
    if (u >= un.nu)
        return;
    const uint parts = un.n_chunks * TC_W, rec = TC_REC(qc);
    const ulong pair = (ulong)unit_id * get_num_groups(0) + kvh;
    __global const float *recs = part + pair * chunk_pitch * TC_W * rec;
    /* the largest m */
    float big = -INFINITY;
    for (uint p = lid; p < parts; p += 128u) {
        w[p] = recs[(ulong)p * rec + qc * TC_HD + 3u * u];
        big = fmax(big, w[p]);
    }
    red[lid] = big;
    for (uint span = 64u; span > 0u; span >>= 1) {
        barrier(CLK_LOCAL_MEM_FENCE);
        if (lid < span)
            red[lid] = fmax(red[lid], red[lid + span]);
    }
    barrier(CLK_LOCAL_MEM_FENCE);
    big = red[0];
    barrier(CLK_LOCAL_MEM_FENCE);
    /* each partial's weight 2^(m - big), the sum of l weighed so, and of
     * the rows skipped */
    float sum = 0.0f;
    uint skipped = 0u;
    for (uint p = lid; p < parts; p += 128u) {
        const float f = w[p] == -INFINITY ? 0.0f : exp2(w[p] - big);
        w[p] = f;
        sum = mad(f, recs[(ulong)p * rec + qc * TC_HD + 3u * u + 1u], sum);
        skipped += (uint)recs[(ulong)p * rec + qc * TC_HD + 3u * u + 2u];
    }
    red[lid] = sum;
    local_sum_float(red, 128u);
    sum = red[0];
    barrier(CLK_LOCAL_MEM_FENCE);
    ((__local uint *)red)[lid] = skipped;
    local_sum_uint((__local uint *)red, 128u);
    skipped = ((__local uint *)red)[0];
    /* (local_sum_float ends with a barrier: w is complete) */
    const uint pg = lid / 32u, d = lid % 32u;
    float4 acc = (float4)(0.0f);
    __global const float *o = recs + u * TC_HD;
    uint p = pg;
    for (; p + 12u < parts; p += 16u) { /* four loads before the first sum */
        const float4 x0 = vload4(d, o + (ulong)p * rec), x1 = vload4(d, o + (ulong)(p + 4u) * rec);
        const float4 x2 = vload4(d, o + (ulong)(p + 8u) * rec);
        const float4 x3 = vload4(d, o + (ulong)(p + 12u) * rec);
        acc += w[p] * x0 + w[p + 4u] * x1 + (w[p + 8u] * x2 + w[p + 12u] * x3);
    }
    for (; p < parts; p += 4u)
        acc += w[p] * vload4(d, o + (ulong)p * rec);
    vstore4(acc, d, sums + pg * TC_HD);
    barrier(CLK_LOCAL_MEM_FENCE);
    const float x = sums[lid] + sums[TC_HD + lid] + (sums[2u * TC_HD + lid] + sums[3u * TC_HD + lid]);
    vloc[lid] = sum > 0.0f ? x / sum : 0.0f;
    barrier(CLK_LOCAL_MEM_FENCE);
    tc_rotate(vloc, tmp, 1u, v_rotation, 1, tab);
    const uint row = tc_row(un, n_q_heads, ratio, kvh, un.u0 + u);
    orows[o_at + (ulong)row * TC_HD + lid] = vloc[lid];
    if (lid == 0u) {
        ((__global uint *)out)[skip_at + row] = skipped;
        if (lse_at)
            out[lse_at + row] = M_LN2_F * (big + log2(sum));
    }
}

#endif
