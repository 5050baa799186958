/* SPDX-License-Identifier: MIT */
/*
 * Decode attention on NVIDIA's tensor cores (compute capability 8.0 and
 * later), for turbo3 K and V at head_dim 128: tc_decode_4 / tc_decode_8 /
 * tc_decode_16 (4, 8 or 16 query rows a unit), and for turbo3o K and V
 * (`auto`'s types there: the turbo3 row, then 4 fp16 outliers):
 * tc_decode_o4 (4 query rows a unit); one launch a call.
 * Compiled only into the program device.c builds with -DTKV_TC
 * (ocl_tensor_kernels); attention.c decides which calls take it
 * (tc_eligible) and describes the split. The design and its measurements:
 * docs/measurements/h100-2026-12-06-s18-tc/ (a CUDA prototype, the fragment
 * layouts), h100-2026-12-06-s19-tc/ (these kernels),
 * h100-2026-12-06-s20-fused/ (one launch) and h100-2026-12-06-s21-turbo3o/
 * (the turbo3o kernel) and h100-2026-12-06-s23-hl/ (units of 4 rows).
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
 * 16), 16 rows of 50 bytes (turbo3o: 62), contiguous.
 *
 * Per tile of a warp:
 * - scores: S^T (16 rows x 8 query rows) = K Q^T on mma.m16n8k16, 8 steps
 *   of 16 dimensions; each product is three fp16 products, q_hi k_hi +
 *   q_lo k_hi + q_hi k_lo (x_lo = fp16(x - x_hi)): as exact as float FMAs.
 *   The dimensions are permuted, K's and Q's alike, so that lane t's share
 *   of a step is dimensions 32 t + 4 s .. + 3 of its rows: one 96-bit run
 *   of each row's indices. Two indices at a time are looked up in a table
 *   of centroid pairs (64 entries, fp16x2 hi and lo, one column per lane:
 *   no bank conflicts; a key's offset one shift and one LOP3, the tables'
 *   address folded into the load).
 *   The even and the odd steps sum into separate accumulators (one
 *   n-tile): six chains of four products.
 *   Units of 4 query rows (HL: tc_decode_4, tc_decode_o4) put the rows'
 *   q_hi in columns 0 .. 3 and their q_lo in 4 .. 7, so that two products
 *   make the sum, k_hi (q_hi | q_lo) + k_lo (q_hi | q_lo) (q_lo k_lo too:
 *   more exact, not less), in eight chains of two; lanes t and t ^ 2 add
 *   their columns c and c + 4 by one shuffle, after which both hold the
 *   row's scores of query rows (2 t + j) % 4 and run the softmax alike.
 * - visibility and online softmax per query row, in base 2 (s = log2(e) x
 *   as attn_decode's scores), the tile's max by shuffles.
 * - values: O^T (128 x 8) += V^T (128 x 16 rows) P'^T, P' = p x the row's
 *   scale, split hi / lo likewise; a second permutation gives lane g the
 *   output dimensions 16 g .. 16 g + 15; P' goes from the accumulator's
 *   layout to the operand's through local memory. HL: column g < 4 of P'
 *   holds the hi halves, g >= 4 the lo halves of the same weights (two
 *   products, v_hi and v_lo, again); a chunk's record adds O's columns u
 *   and u + 4.
 * - loads: three tiles in flight by cp.async into a ring in local memory.
 * - sparse V: a visible row whose weight 2^(s - m) is below the threshold
 *   (m: the work-group's running max through the tile, the four warps'
 *   exchanged after each tile) adds nothing to O but counts in l and in
 *   the skip count, attn_decode's rule with the work-group's rows as the
 *   chunk.
 * - turbo3o (OUT): a score adds sum_o (pre q[i_o]) x_o from the unrotated
 *   queries (qu); V's outliers are summed unrotated per warp (ou: lane (q,
 *   o, h) adds outlier o of row r + 8 h where it has a weight, the two
 *   half-warps one after the other), the turbo part's weights scaled by
 *   V's scale in the B fragments; each chunk's
 *   record is R^T o plus the outlier sums (the merge rotates nothing).
 *   Two tiles in flight instead of three: the outlier sums take the third's
 *   local memory (48 KB at most).
 * Before the loop a work-group builds the tables and its unit's query
 * fragments (the rotation R q by shuffles, work-item e holding value e of
 * every query row); after it, the four warps' (o, m, l, skipped) are
 * combined into the chunk's record in part, and the work-group that
 * completes a (unit, kv head) last (a counter, as attn_decode's) merges
 * its chunks, rotates back (V's rotation) and writes the outputs, the skip
 * counts and the log-sum-exps: no other launch.
 */
#ifdef TKV_TC

#include "tensor.h"

/* tiles in flight a warp: 3 (turbo3), 2 (turbo3o, whose outlier sums take
 * the room of the third) */
#define TC_NSX(OUT) ((OUT) ? 2u : 3u)
/* The row bytes of the kernel's type (OUT 0: turbo3, 1: turbo3o), which are
 * also the uint4 of a 16-row tile; a ring slot: the K tile and one uint4,
 * then the V tile and one (TC_V_AT: where V's begins) */
#define TC_RBX(OUT) ((OUT) ? TC_RB_OUT : TC_RB)
#define TC_SLOT(OUT) (2u * (TC_RBX(OUT) + 1u))
#define TC_V_AT(OUT) (TC_RBX(OUT) + 1u)
/* floats a query row of a warp's V outlier sums (128 + 4: the rows of one
 * dimension 4 banks apart) */
#define TC_OUP 132u
/* QC at most: the loops over a unit's rows run to it (a constant trip
 * count, so that they unroll and their private arrays stay in registers
 * whatever the compiler knows of QC where it unrolls) */
#define TC_QMAX 16u

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

/* *counter + 1 (the value before), an acquire and a release at the GPU's
 * scope: the writes before it (this work-group's, ordered by a barrier)
 * are seen by whoever sees the count */
inline uint tc_arrive(__global uint *counter)
{
    uint old;
    asm volatile("atom.acq_rel.gpu.global.inc.u32 %0, [%1], 0xffffffff;"
                     : "=r"(old)
                     : "l"(counter)
                     : "memory");
    return old;
}

/* 16 bytes from global into local memory, asynchronously */
inline void cp_async16(__local uint4 *dst, __global const uint4 *src)
{
    const uint d = (uint)(size_t)dst;
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16;" ::"r"(d), "l"(src));
}
inline void cp_commit(void) { asm volatile("cp.async.commit_group;"); }
/* all but the ns - 1 latest groups complete (ns: 2 or 3) */
inline void cp_wait_older(const uint ns)
{
    if (ns == 3u)
        asm volatile("cp.async.wait_group 2;");
    else
        asm volatile("cp.async.wait_group 1;");
}
inline void cp_wait_all(void) { asm volatile("cp.async.wait_all;"); }

/* a table entry: its offset in the tables (tc_key's) plus the tables'
 * address in the shared window, a constant the assembler folds into the
 * load's immediate; hi pairs, and the lo pairs 8 KB after them */
inline uint tc_lds(uint base, uint key)
{
    uint v;
    asm volatile("ld.shared.u32 %0, [%1];" : "=r"(v) : "r"(base + key));
    return v;
}

inline uint tc_lds_lo(uint base, uint key)
{
    uint v;
    asm volatile("ld.shared.u32 %0, [%1+8192];" : "=r"(v) : "r"(base + key));
    return v;
}

/* 2^x of the tile loop's weights (x <= 0) and corrections: the hardware's
 * approximation (as exp2's) with results below 2^-126 flushed to 0, a
 * weight that adds nothing beside the row of weight 1 */
inline float tc_exp2(float x)
{
    float y;
    asm("ex2.approx.ftz.f32 %0, %1;" : "=f"(y) : "f"(x));
    return y;
}

/* the lanes whose x is not 0, as bits */
inline uint tc_ballot(int x)
{
    uint r;
    asm volatile("{ .reg .pred p; setp.ne.s32 p, %1, 0; vote.sync.ballot.b32 %0, p, 0xffffffff; }"
                     : "=r"(r)
                     : "r"(x));
    return r;
}


#if TKV_GROUP_MAX != 128
#error "tc_rotate takes a row of 128 values as one group"
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

/* 2^k (k in -126 .. 127) */
inline float tc_pow2(int k) { return as_float((uint)(k + 127) << 23); }

/* P' (a tile's weights times V's scales, split by tc_split into the B
 * fragments' fp16 hi and lo halves) is taken times 2^pe, pe from the
 * largest V scale a warp has seen, so that the products of the rows that
 * count lie high in fp16's range whatever V's norms: the split's absolute
 * error floor, 2^-25, would be a relative error of ~3e-4 at norms of 1e-4.
 * TC_PE0 is pe before any scale (that of fp16's smallest, 2^-24); a pe
 * that moves (only down) rescales the sums exactly, and they are taken
 * times 2^-pe at the end. pe for the warp's largest scale vmax (fp16, so
 * a normal float): P' <= vmax 2^pe < 2^14; at most TC_PE0, at least that
 * of fp16's largest finite (-2, where vmax is Inf). */
#define TC_PE0 37
inline int tc_pe_of(float vmax)
{
    const int e = (int)(as_uint(vmax) >> 23) - 126; /* vmax = f 2^e, f in [0.5, 1) */
    return clamp(14 - e, -2, TC_PE0);
}

/* the 32 bits of hi:lo from bit sh (0 .. 31) on: one funnel shift, no
 * select for sh = 0 */
inline uint tc_funnel(uint lo, uint hi, uint sh)
{
    uint d;
    asm("shf.r.wrap.b32 %0, %1, %2, %3;" : "=r"(d) : "r"(lo), "r"(hi), "r"(sh));
    return d;
}

/* The table offset of a key: bits [b, b + 6) of the words x (two 3-bit
 * indices) as a column of 128 bytes, OR the lane's 4 bytes in it (lane4:
 * bits 2 .. 6, the key bits 7 .. 12, so that a shift and one LOP3 make it;
 * the tables' own address is added as a constant in tc_lds). */
inline uint tc_key(const uint *x, int b, uint lane4)
{
    uint v;
    if (b >= 7) {
        const int bb = b - 7, w = bb >> 5, o = bb & 31;
        v = o + 13 <= 32 ? x[w] >> o : tc_funnel(x[w], x[w + 1], (uint)o);
    } else {
        v = x[0] << (7 - b);
    }
    return (v & (63u << 7)) | lane4;
}

inline uint tc_key64(ulong e, int b, uint lane4)
{
    const uint v = b >= 7 ? (uint)(e >> (b - 7)) : (uint)e << (7 - b);
    return (v & (63u << 7)) | lane4;
}

inline float tc_half_at(__local const uchar *p, uint byte)
{
    return vload_half(0, (__local const half *)(p + byte));
}

/* the fp16 value of the low 16 bits of b */
inline float tc_h2f(uint b)
{
    const ushort h = (ushort)b;
    return vload_half(0, (__private const half *)&h);
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

/* The butterflies of stride h (32 or 64) of QC rows held as in tc_rotate,
 * through buf (QC x 128 floats) */
inline void tc_butterfly_local(float *x, const uint QC, uint h, __local float *buf)
{
    const uint e = get_local_id(0);
TC_UNROLL
    for (uint r = 0; r < TC_QMAX; r++) if (r < QC)
        buf[r * TC_HD + e] = x[r];
    barrier(CLK_LOCAL_MEM_FENCE);
TC_UNROLL
    for (uint r = 0; r < TC_QMAX; r++) if (r < QC) {
        const float p = buf[r * TC_HD + (e ^ h)];
        x[r] = e & h ? p - x[r] : x[r] + p;
    }
}

/* R v (inverse: R^T v) of QC rows of 128 values, value e of each row in
 * x[] of work-item e (the work-group's 128). The WHT (one group of 128: D2
 * H D1 / sqrt(128)) with rotate_rows_local's operations on each value, in
 * its order: the butterflies of stride 1 .. 16 between the lanes of a warp
 * by shuffles, 32 and 64 through local memory (buf: 2 QC x 128 floats, free
 * until the function's second barrier; no barrier at its end). Other
 * rotations: the rows through buf and rotate_rows_local. */
inline void tc_rotate(float *x, const uint QC, uint rotation, int inverse,
                      __global const float *tab, __local float *buf)
{
    const uint e = get_local_id(0);
    if (rotation != TKV_ROTATION_WHT) {
TC_UNROLL
        for (uint r = 0; r < TC_QMAX; r++) if (r < QC)
            buf[r * TC_HD + e] = x[r];
        barrier(CLK_LOCAL_MEM_FENCE);
        rotate_rows_local(buf, buf + QC * TC_HD, QC, TC_HD, rotation, inverse, tab);
TC_UNROLL
        for (uint r = 0; r < TC_QMAX; r++) if (r < QC)
            x[r] = buf[r * TC_HD + e];
        return;
    }
    const float pre = tab[tab_offset(tab, TC_HD, inverse ? TKV_TAB_SIGN2 : TKV_TAB_SIGN1) + e];
    const float post = tab[tab_offset(tab, TC_HD, inverse ? TKV_TAB_SIGN1 : TKV_TAB_SIGN2) + e];
    const float inv_sqrt = tab[tab_offset(tab, TC_HD, TKV_TAB_INV_SQRT)];
TC_UNROLL
    for (uint r = 0; r < TC_QMAX; r++) if (r < QC)
        x[r] *= pre;
    /* value e's partner at stride h is e ^ h: the lower one of the pair
     * becomes a + b, the upper a - b */
TC_UNROLL
    for (uint i = 0; i < 5u; i++)
TC_UNROLL
        for (uint r = 0; r < TC_QMAX; r++) if (r < QC) {
            const float p = shfl_xor(x[r], 1u << i);
            x[r] = e & (1u << i) ? p - x[r] : x[r] + p;
        }
    tc_butterfly_local(x, QC, 32u, buf);
    tc_butterfly_local(x, QC, 64u, buf + QC * TC_HD);
TC_UNROLL
    for (uint r = 0; r < TC_QMAX; r++) if (r < QC)
        x[r] = x[r] * inv_sqrt * post;
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
 * slot (rb: the row bytes, a tile's uint4; lane's share: 16 bytes, and 16
 * more for lanes below rb - 32). */
inline void tc_fetch(__global const uchar *kbuf, __global const uchar *vbuf,
                     __global const uint *bt_of, uint b, uint in, ulong k_block_stride,
                     ulong k_head_off, ulong v_block_stride, ulong v_head_off, __local uint4 *dst,
                     uint lane, const uint rb)
{
    const ulong blk = bt_of[b];
    __global const uint4 *tk =
        (__global const uint4 *)(kbuf + blk * k_block_stride + k_head_off + (ulong)in * rb);
    __global const uint4 *tv =
        (__global const uint4 *)(vbuf + blk * v_block_stride + v_head_off + (ulong)in * rb);
    cp_async16(dst + lane, tk + lane);
    cp_async16(dst + rb + 1u + lane, tv + lane);
    if (lane < rb - 32u) {
        cp_async16(dst + 32u + lane, tk + 32u + lane);
        cp_async16(dst + rb + 1u + 32u + lane, tv + 32u + lane);
    }
}

#define TC_PARAMS                                                                               \
    __global const uchar *kbuf, __global const uchar *vbuf, __global const uint *meta,          \
        __global const float *qbuf, uint seq_at, uint blocks_at, uint units_at, uint q_at,      \
        uint n_q_heads, uint ratio, uint window, uint bt, ulong k_block_stride,                 \
        ulong k_head_stride, ulong v_block_stride, ulong v_head_stride, uint k_rotation,        \
        __global const float *tab, float pre, float post, float threshold,                      \
        uint tiles_per_warp, __global float *part, uint chunk_pitch, uint v_rotation,           \
        __global uint *counters, __global float *out, __global float *orows, ulong o_at,        \
        uint skip_at, uint lse_at, __global const float *ksrc, uint ks_at,                      \
        __global const float *vsrc, uint vs_at, uint new_first, uint new_n, uint4 kv_fmt
#define TC_ARGS                                                                                 \
    kbuf, vbuf, meta, qbuf, seq_at, blocks_at, units_at, q_at, n_q_heads, ratio, window, bt,    \
        k_block_stride, k_head_stride, v_block_stride, v_head_stride, k_rotation, tab, pre,     \
        post, threshold, tiles_per_warp, part, chunk_pitch, v_rotation, counters, out, orows,   \
        o_at, skip_at, lse_at, ksrc, ks_at, vsrc, vs_at, new_first, new_n, kv_fmt

/* tc_merge's runs of N records from c on while N remain: their loads
 * first, then a += w[c + i] o_(c + i) in order */
#define TC_MERGE_RUNS(N)                                                                        \
    for (; c + (N) <= nch; c += (N)) {                                                          \
        float4 x[N];                                                                            \
        TC_UNROLL for (uint i = 0; i < (N); i++) x[i] = vload4(0, o + (ulong)(c + i) * rec_floats); \
        TC_UNROLL for (uint i = 0; i < (N); i++) a = mad((float4)(w[c + i]), x[i], a);        \
    }

/* The merge of a unit's chunk records (chunk c's at recs + c TC_REC(QC))
 * by one work-group, each unit row as attn_decode merges its chunks: M =
 * max m_c, L = sum l_c 2^(m_c - M), o = sum o_c 2^(m_c - M) / L, skipped =
 * sum of the chunks'; then R^T (V's rotation; not for OUT, whose records
 * are rotated back already) and the row written where attn_decode writes
 * it (orows from o_at, its skip count and lse in out).
 * Warp w finds the weights of unit rows w, w + 4, ..; then each work-item
 * sums the chunks of four dimensions of a row. */
inline void tc_merge(tc_unit un, uint kvh, uint n_q_heads, uint ratio,
                     __global const float *recs, uint v_rotation, __global const float *tab,
                     __global float *out, __global float *orows, ulong o_at, uint skip_at,
                     uint lse_at, __local uint4 *lmem, const uint QC, const uint UR,
                     const uint OUT)
{
    const uint lid = get_local_id(0), warp = lid / 32u, lane = lid % 32u;
    const uint nch = un.n_chunks, rec_floats = TC_REC(QC);
    __local float *sums = (__local float *)lmem;      /* QC x 128, then tc_rotate's 2 QC x 128 */
    __local float *wt = sums + 2u * QC * TC_HD;       /* QC x TC_CHUNKS_MAX */
    __local float *stat = wt + QC * TC_CHUNKS_MAX;    /* QC x (M, L, skipped) */
    for (uint u = warp; u < un.nu; u += TC_W) {
        __global const float *st = recs + QC * TC_HD + 3u * u;
        float big = -INFINITY;
        for (uint c = lane; c < nch; c += 32u) {
            const float mc = st[(ulong)c * rec_floats];
            wt[u * TC_CHUNKS_MAX + c] = mc;
            big = fmax(big, mc);
        }
TC_UNROLL
        for (uint sh = 1u; sh < 32u; sh <<= 1)
            big = fmax(big, shfl_xor(big, sh));
        float sum = 0.0f, sk = 0.0f;
        for (uint c = lane; c < nch; c += 32u) {
            const float mc = wt[u * TC_CHUNKS_MAX + c];
            const float w = mc == -INFINITY ? 0.0f : exp2(mc - big);
            wt[u * TC_CHUNKS_MAX + c] = w;
            sum = mad(w, st[(ulong)c * rec_floats + 1u], sum);
            sk += st[(ulong)c * rec_floats + 2u]; /* (counts below 2^24: exact) */
        }
TC_UNROLL
        for (uint sh = 1u; sh < 32u; sh <<= 1) {
            sum += shfl_xor(sum, sh);
            sk += shfl_xor(sk, sh);
        }
        if (lane == 0u) {
            stat[3u * u] = big;
            stat[3u * u + 1u] = sum;
            stat[3u * u + 2u] = sk;
        }
    }
    barrier(CLK_LOCAL_MEM_FENCE);
    /* work-item k takes dimensions 4 (k % 32) .. + 3 of unit row k / 32,
     * its chunks in order, up to sixteen loads in flight */
    for (uint k = lid; k < un.nu * 32u; k += 128u) {
        const uint u = k / 32u;
        __global const float *o = recs + u * TC_HD + 4u * (k % 32u);
        __local const float *w = wt + u * TC_CHUNKS_MAX;
        float4 a = (float4)(0.0f);
        uint c = 0;
        TC_MERGE_RUNS(16u);
        TC_MERGE_RUNS(4u);
        for (; c < nch; c++)
            a = mad((float4)(w[c]), vload4(0, o + (ulong)c * rec_floats), a);
        vstore4(a, 0, sums + u * TC_HD + 4u * (k % 32u));
    }
    barrier(CLK_LOCAL_MEM_FENCE);
    float x[TC_QMAX];
TC_UNROLL
    for (uint u = 0; u < TC_QMAX; u++) if (u < UR) {
        const float l = stat[3u * u + 1u];
        x[u] = u < un.nu && l > 0.0f ? sums[u * TC_HD + lid] / l : 0.0f;
    }
    if (!OUT) {
        barrier(CLK_LOCAL_MEM_FENCE); /* sums read: tc_rotate's buffers */
        tc_rotate(x, UR, v_rotation, 1, tab, sums);
    }
TC_UNROLL
    for (uint u = 0; u < TC_QMAX; u++) if (u < UR)
        if (u < un.nu)
            orows[o_at + (ulong)tc_row(un, n_q_heads, ratio, kvh, un.u0 + u) * TC_HD + lid] = x[u];
    if (lid < un.nu) {
        const uint row = tc_row(un, n_q_heads, ratio, kvh, un.u0 + lid);
        ((__global uint *)out)[skip_at + row] = (uint)stat[3u * lid + 2u];
        if (lse_at)
            out[lse_at + row] = M_LN2_F * (stat[3u * lid] + log2(stat[3u * lid + 1u]));
    }
}

/* Unit row u of a chunk's record: the four warps' sums (ob: TC_W x QC x
 * 128 floats), with HL each warp's columns u (hi) and u + 4 (lo) */
inline float tc_warp_sum(__local const float *ob, uint u, const uint QC, const uint HL)
{
    const uint e = get_local_id(0);
    float x = ob[u * TC_HD + e] + ob[(QC + u) * TC_HD + e] +
              (ob[(2u * QC + u) * TC_HD + e] + ob[(3u * QC + u) * TC_HD + e]);
    if (HL)
        x += ob[(u + TC_HL_ROWS) * TC_HD + e] + ob[(QC + u + TC_HL_ROWS) * TC_HD + e] +
             (ob[(2u * QC + u + TC_HL_ROWS) * TC_HD + e] + ob[(3u * QC + u + TC_HL_ROWS) * TC_HD + e]);
    return x;
}

/* The local memory of a work-group, in uint4 (QC = 8 NT), at most 48 KB
 * (NVIDIA's OpenCL: static local arrays): during the loop the tables (4096
 * words: hi pairs, then lo pairs, [key][lane]), qfrag (NT x 8 x 32), the
 * ring (TC_W x TC_NSX x TC_SLOT), ps (TC_W x 16 x 8 NT floats) and gmax
 * (2 x TC_W x QC floats, in 32 uint4); before it and after it other arrays
 * over the same bytes. OUT (NT 1): qfrag holds qu in the loop (128 x QC
 * floats: the unrotated queries times pre, [dimension][row]; the fragments
 * are in registers then), the last 8 uint4 of gmax's the warps' tile
 * corrections (TC_W x QC floats), and ou follows (TC_W x TC_OUT_ROWS x
 * TC_OUP floats: each warp's sums of V's outliers, unrotated). */
#define TC_PS_AT(NT, OUT) (1024u + 256u * (NT) + TC_W * TC_NSX(OUT) * TC_SLOT(OUT))
#define TC_OU_AT(NT, OUT) (TC_PS_AT(NT, OUT) + 128u * (NT) + 32u)
#define TC_LMEM(NT, OUT) (TC_OU_AT(NT, OUT) + ((OUT) ? TC_W * TC_OUT_ROWS * TC_OUP / 4u : 0u))

inline void tc_decode_body(TC_PARAMS, __local uint4 *lmem, const uint NT, const uint OUT,
                           const uint HL)
{
    /* QC: the products' columns; UR: a unit's query rows (HL: the 4 rows'
     * hi halves in columns 0 .. 3, their lo halves in 4 .. 7; OUT: 4 rows
     * in any case, TC_OUT_ROWS) */
    const uint QC = 8u * NT, UR = HL || OUT ? TC_HL_ROWS : QC;
    const uint RB = TC_RBX(OUT), SLOT = TC_SLOT(OUT), NS = TC_NSX(OUT);
    const uint lid = get_local_id(0), warp = lid / 32u, lane = lid % 32u;
    const uint g = lane >> 2, t = lane & 3u;
    const uint kvh = get_group_id(0), chunk = get_group_id(1), unit_id = get_group_id(2);
    const tc_unit un = tc_unit_of(meta, seq_at, units_at, unit_id, ratio, window, UR,
                                  tiles_per_warp);
    if (chunk >= un.n_chunks)
        return;
    __local uint *tables = (__local uint *)lmem;
    __local uint4 *qfrag = lmem + 1024u;
    __local uint4 *ring = qfrag + 256u * NT;
    __local float *ps = (__local float *)(lmem + TC_PS_AT(NT, OUT));
    __local float *qu = (__local float *)qfrag;
    __local float *ou = (__local float *)(lmem + TC_OU_AT(NT, OUT));

    const uint per_warp = 16u * tiles_per_warp;
    const uint begin = un.r0 + (chunk * TC_W + warp) * per_warp;
    const uint end = min(begin + per_warp, un.hi);
    __global const uint *bt_of = meta + blocks_at + un.block_first;
    const ulong k_head_off = (ulong)kvh * k_head_stride, v_head_off = (ulong)kvh * v_head_stride;
    __local uint4 *wring = ring + warp * NS * SLOT;
    /* 0. a decode step's append (new_n > 0: ABI 2.7's append_attention):
     * the new tokens new_first .. of this kv head that lie in the chunk's
     * rows, quantized by the work-group before the chunk's first fetch
     * reads them: rows.cl's quantize_row, the append kernel's steps (the
     * same bytes), K by work-items 0 .. 63 and V by 64 .. 127 side by side
     * (ROW_LID, ROW_N; the host sends only K and V of one type, rotation
     * and scale mode, so both halves pass the same barriers), each in its
     * own scratch in local memory the ring does not use yet; stored with
     * a fence at the GPU's scope (cp.async reads through L2). Other units
     * whose chunks hold a new row store the same bytes; no unit reads a new
     * row it has not stored itself. */
    if (new_n) {
        const uint c_lo = un.r0 + chunk * TC_W * per_warp;
        const uint p0 = max(new_first, c_lo);
        const uint p1 = min(min(new_first + new_n, un.hi), c_lo + TC_W * per_warp);
        if (p0 < p1) {
            const uint v_half = lid / 64u, n_kv = get_num_groups(0);
            __local row_scratch *rs = (__local row_scratch *)ring + v_half;
            for (uint pos = p0; pos < p1; pos++)
                quantize_row(v_half ? vsrc : ksrc, v_half ? vs_at : ks_at,
                             (pos - new_first) * n_kv + kvh, n_kv, TC_HD,
                             (__global uchar *)(v_half ? vbuf : kbuf), bt_of, 0u, new_first, bt,
                             v_half ? v_block_stride : k_block_stride,
                             v_half ? v_head_stride : k_head_stride, RB,
                             v_half ? kv_fmt.z : kv_fmt.x, v_half ? v_rotation : k_rotation,
                             v_half ? kv_fmt.w : kv_fmt.y, tab, rs);
            asm volatile("membar.gl;" ::: "memory");
            barrier(CLK_GLOBAL_MEM_FENCE | CLK_LOCAL_MEM_FENCE);
        }
    }
    /* 1. the warp's first tiles on their way while the rest is prepared */
    for (int i = 0; i < (int)NS - 1; i++) {
        const uint row = begin + 16u * (uint)i;
        if (row < end)
            tc_fetch(kbuf, vbuf, bt_of, row / bt, row % bt, k_block_stride, k_head_off,
                     v_block_stride, v_head_off, wring + i * SLOT, lane, RB);
        cp_commit();
    }
    /* the block and the row in it of the loop's next fetch (16 rows on a
     * tile; bt is a multiple of 16): no division a tile */
    uint fb = (begin + 16u * (NS - 1u)) / bt, fin = (begin + 16u * (NS - 1u)) % bt;

    /* 2. the tables of centroid pairs (work-items 0 .. 63 make a pair each
     * in ps, then all copy them into one column a lane); the unit's queries
     * (work-item e: value e of each) rotated, scaled (pre), split and
     * permuted into B fragments, through the tables' bytes before the
     * tables */
    /* OUT: the unrotated queries times pre (work-item e: value e of each),
     * for qu once the fragments are in registers */
    float qo[TC_QMAX];
    {
        float qx[TC_QMAX];
TC_UNROLL
        for (uint u = 0; u < TC_QMAX; u++) if (u < UR)
            qx[u] = u < un.nu ? qbuf[q_at + tc_row(un, n_q_heads, ratio, kvh, un.u0 + u) * TC_HD + lid]
                              : 0.0f;
        __local uint *pairs = (__local uint *)ps;
        if (lid < 64u) {
            __global const float *cent =
                tab + tab_offset(tab, TC_HD, TKV_TAB_CENTROIDS + 3u * (3u - TKV_TURBO_BITS_MIN));
            ushort ah, al, bh, bl;
            tc_split(cent[lid & 7u], &ah, &al);
            tc_split(cent[lid >> 3], &bh, &bl);
            pairs[lid] = tc_pack(ah, bh);
            pairs[64u + lid] = tc_pack(al, bl);
        }
        __local float *qv = (__local float *)tables;
        if (OUT) {
TC_UNROLL
            for (uint u = 0; u < TC_QMAX; u++) if (u < UR)
                qo[u] = pre * qx[u];
            /* the warps' outlier sums start at 0 */
            for (uint i = lid; i < TC_W * TC_OUT_ROWS * TC_OUP; i += 128u)
                ou[i] = 0.0f;
        }
        tc_rotate(qx, UR, k_rotation, 0, tab, qv);
        /* (every work-item read its share of qv's first half before the
         * last barrier it passed in tc_rotate) */
TC_UNROLL
        for (uint u = 0; u < TC_QMAX; u++) if (u < UR)
            qv[u * TC_HD + lid] = qx[u];
        barrier(CLK_LOCAL_MEM_FENCE);
        /* HL: column c < 4 the hi halves of row c, c >= 4 the lo halves of
         * row c - 4 (in .x, .y) */
        for (uint k = lid; k < NT * 8u * 32u; k += 128u) {
            const uint nt = k / 256u, s = k / 32u % 8u, ln = k % 32u;
            const uint col = nt * 8u + (ln >> 2), d0 = 32u * (ln & 3u) + 4u * s;
            const uint row = HL ? col % TC_HL_ROWS : col;
            ushort hi[4], lo[4];
TC_UNROLL
            for (uint i = 0; i < 4u; i++)
                tc_split(pre * qv[row * TC_HD + d0 + i], &hi[i], &lo[i]);
            const uint4 both = (uint4)(tc_pack(hi[0], hi[1]), tc_pack(hi[2], hi[3]),
                                       tc_pack(lo[0], lo[1]), tc_pack(lo[2], lo[3]));
            qfrag[k] = HL && col >= TC_HL_ROWS ? both.zwzw : both;
        }
        barrier(CLK_LOCAL_MEM_FENCE);
        for (uint i = lid; i < 2048u; i += 128u) {
            tables[i] = pairs[i / 32u];
            tables[2048u + i] = pairs[64u + i / 32u];
        }
        barrier(CLK_LOCAL_MEM_FENCE);
    }

    /* the query rows of this lane's accumulator columns: lo .. lim visible */
    uint clo[2][2], clim[2][2];
TC_UNROLL
    for (uint nt = 0; nt < NT; nt++)
TC_UNROLL
        for (uint j = 0; j < 2u; j++) {
            const uint col = HL ? (2u * t + j) % TC_HL_ROWS : nt * 8u + 2u * t + j;
            if (col < un.nu) {
                const uint pos = un.n_ctx - un.n_q + (un.u0 + col) / ratio;
                clo[nt][j] = window && pos + 1u > window ? pos + 1u - window : 0u;
                clim[nt][j] = pos;
            } else {
                clo[nt][j] = 1u;
                clim[nt][j] = 0u;
            }
        }

    float m[2][2], l[2][2], o[2][8][4];
    int pe = TC_PE0; /* o is the sums times 2^pe (tc_pe_of) */
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
    /* a key's table offset is one shift and one LOP3 of the index bits
     * (tc_key), the tables' address in the shared window a constant of the
     * loads (tc_lds) */
    const uint lb = 4u * lane, tb = (uint)(size_t)tables;
    /* one n-tile's query fragments in registers (32 of them; two n-tiles'
     * would not fit beside the accumulators) */
    uint4 qreg[8];
TC_UNROLL
    for (uint s = 0; s < 8u; s++)
        qreg[s] = NT == 1u ? qfrag[s * 32u + lane] : (uint4)(0u);
    if (OUT) {
        /* qfrag read by every warp: qu over it ([dimension][row]) */
        barrier(CLK_LOCAL_MEM_FENCE);
TC_UNROLL
        for (uint u = 0; u < TC_QMAX; u++) if (u < UR)
            qu[lid * QC + u] = qo[u];
        barrier(CLK_LOCAL_MEM_FENCE);
    }
    int slot = 0;
    /* sparse V: the four warps' running maxes exchanged after every tile
     * (gmax, by tile parity), every warp through every tile of the chunk:
     * one barrier a tile */
    const int shared_max = threshold > 0.0f;
    /* 2^(s - m) >= threshold as s - m >= log2(threshold): no exp2 for
     * the exchanged max (the same rule up to exp2's rounding) */
    const float lthr = shared_max ? log2(threshold) : 0.0f;
    __local float *gmax = ps + TC_W * 16u * 8u * NT;
    uint parity = 0;
    for (uint base = begin; base < begin + per_warp; base += 16u, parity ^= 1u) {
        if (base >= end && !shared_max)
            break;
        warp_sync(); /* the slot refilled now was read in the last iteration */
        {
            const uint nb = base + 16u * (NS - 1u);
            if (nb < end)
                tc_fetch(kbuf, vbuf, bt_of, fb, fin, k_block_stride, k_head_off, v_block_stride,
                         v_head_off, wring + ((slot + (int)NS - 1) % (int)NS) * SLOT, lane, RB);
            cp_commit();
            fin += 16u;
            if (fin == bt) {
                fin = 0u;
                fb++;
            }
            cp_wait_older(NS);
        }
        warp_sync();
        __local const uint *sk = (__local const uint *)(wring + slot * SLOT);
        __local const uint *sv = sk + TC_V_AT(OUT) * 4u;
        __local const uchar *skb = (__local const uchar *)sk, *svb = (__local const uchar *)sv;
        slot = (slot + 1) % (int)NS;
        /* rows of this tile before end */
        const uint n_in = base < end ? min(end - base, 16u) : 0u;
        uint xa[3], xb[3], f[4][2];
        tc_words(sk, g * RB + 2u + 12u * t, xa, 3);
        tc_words(sk, (g + 8u) * RB + 2u + 12u * t, xb, 3);
        const float ska = tc_half_at(skb, g * RB), skb_ = tc_half_at(skb, (g + 8u) * RB);
        const uint vr[4] = { 2u * t, 2u * t + 1u, 2u * t + 8u, 2u * t + 9u };
TC_UNROLL
        for (int r = 0; r < 4; r++)
            tc_words(sv, vr[r] * RB + 2u + 6u * g, f[r], 2);
        /* (rows past end may hold anything: their weights are 0, and so
         * must be their scales) */
        const float sva = g < n_in ? tc_half_at(svb, g * RB) : 0.0f;
        const float svb_ = g + 8u < n_in ? tc_half_at(svb, (g + 8u) * RB) : 0.0f;
        /* pe for the largest V scale of the warp's tiles so far (the
         * tile's 16 rows: g and g + 8 of every lane), pf what the sums take
         * where it moves, p2 what P' takes */
        float pf = 1.0f;
        {
            float vmax = fmax(fabs(sva), fabs(svb_));
TC_UNROLL
            for (uint sh = 4u; sh < 32u; sh <<= 1)
                vmax = fmax(vmax, shfl_xor(vmax, sh));
            if (vmax > 0.0f) {
                const int pt = tc_pe_of(vmax);
                if (pt < pe) {
                    pf = tc_pow2(pt - pe);
                    pe = pt;
                }
            }
        }
        const float p2 = tc_pow2(pe);
        float c[4][3][4];
TC_UNROLL
        for (uint nt = 0; nt < 4u; nt++)
TC_UNROLL
            for (int j = 0; j < 3; j++)
                c[nt][j][0] = c[nt][j][1] = c[nt][j][2] = c[nt][j][3] = 0.0f;
TC_UNROLL
        for (int s = 0; s < 8; s++) {
            const uint A0 = tc_key(xa, 12 * s, lb), A1 = tc_key(xa, 12 * s + 6, lb);
            const uint B0 = tc_key(xb, 12 * s, lb), B1 = tc_key(xb, 12 * s + 6, lb);
            const uint h0 = tc_lds(tb, A0), h1 = tc_lds(tb, B0);
            const uint h2 = tc_lds(tb, A1), h3 = tc_lds(tb, B1);
            const uint l0 = tc_lds_lo(tb, A0), l1 = tc_lds_lo(tb, B0);
            const uint l2 = tc_lds_lo(tb, A1), l3 = tc_lds_lo(tb, B1);
            /* one n-tile: the even and the odd steps into c[0] and c[1],
             * six chains of four products (the products' latency, not
             * their issue, paced a tile's scores with three of eight) */
            /* HL: two products, k_hi (q_hi | q_lo) and k_lo (q_hi |
             * q_lo), in eight chains of two (the steps modulo 4) */
            if (HL) {
                mma16816(c[s & 3][0], h0, h1, h2, h3, qreg[s].x, qreg[s].y);
                mma16816(c[s & 3][1], l0, l1, l2, l3, qreg[s].x, qreg[s].y);
            } else
TC_UNROLL
            for (uint nt = 0; nt < NT; nt++) {
                const uint4 qf = NT == 1u ? qreg[s] : qfrag[(nt * 8u + (uint)s) * 32u + lane];
                const uint ct = NT == 1u ? (uint)s & 1u : nt;
                mma16816(c[ct][0], h0, h1, h2, h3, qf.x, qf.y);
                mma16816(c[ct][1], h0, h1, h2, h3, qf.z, qf.w);
                mma16816(c[ct][2], l0, l1, l2, l3, qf.x, qf.y);
            }
        }
        if (HL)
            /* column c's and c + 4's sums of a row (lanes t and t ^ 2)
             * added: both lanes hold a row's score of query row (2 t + j) %
             * 4, the same bits (a + b = b + a) */
TC_UNROLL
            for (int i = 0; i < 4; i++) {
                const float y = (c[0][0][i] + c[1][0][i]) + (c[2][0][i] + c[3][0][i]) +
                                ((c[0][1][i] + c[1][1][i]) + (c[2][1][i] + c[3][1][i]));
                c[0][0][i] = y + shfl_xor(y, 2u);
                c[0][1][i] = c[0][2][i] = 0.0f;
            }
        else if (NT == 1u)
TC_UNROLL
            for (int i = 0; i < 4; i++) {
                c[0][0][i] += c[1][0][i];
                c[0][1][i] += c[1][1][i];
                c[0][2][i] += c[1][2][i];
            }
        const uint ja = base + g, jb = base + g + 8u;
        const int ia = g < n_in, ib = g + 8u < n_in;
        /* OUT: the outliers' share of the scores, sum_o (pre q[i_o]) x_o,
         * of rows g and g + 8 (indices masked: rows past end may hold
         * anything, and their scores are left out below) */
        float osum[2][4];
        if (OUT) {
            uint wa[3], wb[3];
            tc_words(sk, g * RB + TC_RB, wa, 3);
            tc_words(sk, (g + 8u) * RB + TC_RB, wb, 3);
TC_UNROLL
            for (uint nt = 0; nt < NT; nt++)
                osum[nt][0] = osum[nt][1] = osum[nt][2] = osum[nt][3] = 0.0f;
TC_UNROLL
            for (uint o = 0; o < TC_OUT_N; o++) {
                const uint ea = (wa[0] >> (8u * o)) & (TC_HD - 1u), eb = (wb[0] >> (8u * o)) & (TC_HD - 1u);
                const float xa_ = tc_h2f(wa[1u + o / 2u] >> (16u * (o & 1u)));
                const float xb_ = tc_h2f(wb[1u + o / 2u] >> (16u * (o & 1u)));
TC_UNROLL
                for (uint nt = 0; nt < NT; nt++) {
                    const uint qcol = HL ? 2u * t % TC_HL_ROWS : nt * 8u + 2u * t;
                    const float2 qa = vload2(0, qu + ea * QC + qcol);
                    const float2 qb = vload2(0, qu + eb * QC + qcol);
                    osum[nt][0] = mad(qa.x, xa_, osum[nt][0]);
                    osum[nt][1] = mad(qa.y, xa_, osum[nt][1]);
                    osum[nt][2] = mad(qb.x, xb_, osum[nt][2]);
                    osum[nt][3] = mad(qb.y, xb_, osum[nt][3]);
                }
            }
        }
        float corr[2][2], sc[2][4], nm[2][2];
TC_UNROLL
        for (uint nt = 0; nt < NT; nt++) {
            float x[4];
TC_UNROLL
            for (int i = 0; i < 4; i++) {
                float y = (c[nt][0][i] + (c[nt][1][i] + c[nt][2][i])) * (i < 2 ? ska : skb_);
                if (OUT)
                    y += osum[nt][i];
                x[i] = post > 0.0f ? post * tanh(y) : y;
            }
            /* element i: row ja (i < 2) or jb, query column 2 t + (i & 1) */
            sc[nt][0] = ia && ja >= clo[nt][0] && ja <= clim[nt][0] ? x[0] : -INFINITY;
            sc[nt][1] = ia && ja >= clo[nt][1] && ja <= clim[nt][1] ? x[1] : -INFINITY;
            sc[nt][2] = ib && jb >= clo[nt][0] && jb <= clim[nt][0] ? x[2] : -INFINITY;
            sc[nt][3] = ib && jb >= clo[nt][1] && jb <= clim[nt][1] ? x[3] : -INFINITY;
            float x0 = fmax(sc[nt][0], sc[nt][2]), x1 = fmax(sc[nt][1], sc[nt][3]);
TC_UNROLL
            for (uint sh = 4u; sh < 32u; sh <<= 1) {
                x0 = fmax(x0, shfl_xor(x0, sh));
                x1 = fmax(x1, shfl_xor(x1, sh));
            }
            nm[nt][0] = fmax(m[nt][0], x0);
            nm[nt][1] = fmax(m[nt][1], x1);
        }
        /* the weights sparse V compares with the threshold: 2^(s - the
         * work-group's running max through this tile) */
        float dm[2][2];
TC_UNROLL
        for (uint nt = 0; nt < NT; nt++)
            dm[nt][0] = nm[nt][0], dm[nt][1] = nm[nt][1];
        if (shared_max) {
            __local float *gm = gmax + parity * TC_W * QC;
            if (g == 0u)
TC_UNROLL
                for (uint nt = 0; nt < NT; nt++) {
                    gm[warp * QC + nt * 8u + 2u * t] = nm[nt][0];
                    gm[warp * QC + nt * 8u + 2u * t + 1u] = nm[nt][1];
                }
            barrier(CLK_LOCAL_MEM_FENCE);
TC_UNROLL
            for (uint nt = 0; nt < NT; nt++)
TC_UNROLL
                for (uint w = 0; w < TC_W; w++) {
                    dm[nt][0] = fmax(dm[nt][0], gm[w * QC + nt * 8u + 2u * t]);
                    dm[nt][1] = fmax(dm[nt][1], gm[w * QC + nt * 8u + 2u * t + 1u]);
                }
        }
        /* OUT: whether row g / g + 8 has a weight in this lane's columns;
         * the weights in ps without V's scales (the outliers take them so,
         * the B fragments are scaled below); the tile's corrections */
        int wa_ = 0, wb_ = 0;
        const float ma = OUT ? 1.0f : sva * p2, mb = OUT ? 1.0f : svb_ * p2;
        __local float *cw = gmax + 2u * TC_W * QC + warp * QC;
TC_UNROLL
        for (uint nt = 0; nt < NT; nt++) {
            const float s00 = sc[nt][0], s01 = sc[nt][1], s10 = sc[nt][2], s11 = sc[nt][3];
            const float n0 = nm[nt][0], n1 = nm[nt][1];
            corr[nt][0] = m[nt][0] == n0 ? 1.0f : tc_exp2(m[nt][0] - n0);
            corr[nt][1] = m[nt][1] == n1 ? 1.0f : tc_exp2(m[nt][1] - n1);
            const float p00 = s00 == -INFINITY ? 0.0f : tc_exp2(s00 - n0);
            const float p10 = s10 == -INFINITY ? 0.0f : tc_exp2(s10 - n0);
            const float p01 = s01 == -INFINITY ? 0.0f : tc_exp2(s01 - n1);
            const float p11 = s11 == -INFINITY ? 0.0f : tc_exp2(s11 - n1);
            l[nt][0] = l[nt][0] * corr[nt][0] + p00 + p10;
            l[nt][1] = l[nt][1] * corr[nt][1] + p01 + p11;
            m[nt][0] = n0;
            m[nt][1] = n1;
            /* sparse V (attention.cl's rule, the work-group's rows as the
             * chunk): a visible row's V is left out where its weight
             * against the chunk's running max is below the threshold; it
             * still counts in l */
            const int k00 = shared_max ? s00 - dm[nt][0] >= lthr : p00 >= threshold;
            const int k01 = shared_max ? s01 - dm[nt][1] >= lthr : p01 >= threshold;
            const int k10 = shared_max ? s10 - dm[nt][0] >= lthr : p10 >= threshold;
            const int k11 = shared_max ? s11 - dm[nt][1] >= lthr : p11 >= threshold;
            skipped[nt][0] += (uint)(s00 != -INFINITY && !k00) + (uint)(s10 != -INFINITY && !k10);
            skipped[nt][1] += (uint)(s01 != -INFINITY && !k01) + (uint)(s11 != -INFINITY && !k11);
            __local float *pn = pw + nt * 8u;
            pn[g * 8u * NT + 2u * t] = k00 ? p00 * ma : 0.0f;
            pn[g * 8u * NT + 2u * t + 1u] = k01 ? p01 * ma : 0.0f;
            pn[(g + 8u) * 8u * NT + 2u * t] = k10 ? p10 * mb : 0.0f;
            pn[(g + 8u) * 8u * NT + 2u * t + 1u] = k11 ? p11 * mb : 0.0f;
            if (OUT) {
                if (g == 0u) {
                    cw[nt * 8u + 2u * t] = corr[nt][0];
                    cw[nt * 8u + 2u * t + 1u] = corr[nt][1];
                }
                wa_ |= (k00 && p00 != 0.0f) || (k01 && p01 != 0.0f);
                wb_ |= (k10 && p10 != 0.0f) || (k11 && p11 != 0.0f);
            }
        }
        /* OUT: V's scales of the rows of this lane's B fragments (0 past
         * end: those rows' weights are 0, and their bytes anything) */
        float vs[4] = { 1.0f, 1.0f, 1.0f, 1.0f };
        if (OUT) {
TC_UNROLL
            for (uint i = 0; i < 4u; i++) {
                const uint r = 2u * t + (i & 1u) + 8u * (i >> 1);
                vs[i] = r < n_in ? tc_half_at(svb, r * RB) : 0.0f;
            }
        }
        warp_sync();
        uint bh[2][2], bl[2][2];
TC_UNROLL
        for (uint nt = 0; nt < NT; nt++) {
            __local const float *pn = pw + nt * 8u;
            float pv[4] = { pn[(2u * t) * 8u * NT + g], pn[(2u * t + 1u) * 8u * NT + g],
                            pn[(2u * t + 8u) * 8u * NT + g], pn[(2u * t + 9u) * 8u * NT + g] };
            if (OUT)
TC_UNROLL
                for (int i = 0; i < 4; i++)
                    pv[i] *= vs[i] * p2;
            ushort ph[4], pl[4];
TC_UNROLL
            for (int i = 0; i < 4; i++)
                tc_split(pv[i], &ph[i], &pl[i]);
            bh[nt][0] = tc_pack(ph[0], ph[1]), bh[nt][1] = tc_pack(ph[2], ph[3]);
            bl[nt][0] = tc_pack(pl[0], pl[1]), bl[nt][1] = tc_pack(pl[2], pl[3]);
            /* HL: column g < 4 the hi halves of the weights, g >= 4 (the
             * same weights) their lo halves */
            if (HL && g >= TC_HL_ROWS)
                bh[nt][0] = bl[nt][0], bh[nt][1] = bl[nt][1];
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
        /* the sums times the tile's corrections, where a running max of
         * the warp moved (most tiles at long contexts move none) */
        int moved = 0;
TC_UNROLL
        for (uint nt = 0; nt < NT; nt++)
            moved |= corr[nt][0] != 1.0f || corr[nt][1] != 1.0f;
        const uint moves = tc_ballot(moved);
        if (moves || pf != 1.0f)
TC_UNROLL
            for (int mm = 0; mm < 8; mm++)
TC_UNROLL
                for (uint nt = 0; nt < NT; nt++) {
                    o[nt][mm][0] *= corr[nt][0] * pf;
                    o[nt][mm][1] *= corr[nt][1] * pf;
                    o[nt][mm][2] *= corr[nt][0] * pf;
                    o[nt][mm][3] *= corr[nt][1] * pf;
                }
TC_UNROLL
        for (int mm = 0; mm < 8; mm++) {
            const uint A0 = tc_key64(ev[0], 6 * mm, lb), A1 = tc_key64(od[0], 6 * mm, lb);
            const uint A2 = tc_key64(ev[1], 6 * mm, lb), A3 = tc_key64(od[1], 6 * mm, lb);
            const uint h0 = tc_lds(tb, A0), h1 = tc_lds(tb, A1);
            const uint h2 = tc_lds(tb, A2), h3 = tc_lds(tb, A3);
            const uint l0 = tc_lds_lo(tb, A0), l1 = tc_lds_lo(tb, A1);
            const uint l2 = tc_lds_lo(tb, A2), l3 = tc_lds_lo(tb, A3);
TC_UNROLL
            for (uint nt = 0; nt < NT; nt++) {
                mma16816(o[nt][mm], h0, h1, h2, h3, bh[nt][0], bh[nt][1]);
                if (!HL)
                    mma16816(o[nt][mm], h0, h1, h2, h3, bl[nt][0], bl[nt][1]);
                mma16816(o[nt][mm], l0, l1, l2, l3, bh[nt][0], bh[nt][1]);
            }
        }
        if (OUT) {
            /* V's outliers, unrotated, into the warp's sums (ou; NT 1, a
             * unit's TC_OUT_ROWS = 4 rows in columns 0 .. 3): lane (q, o,
             * h) = (lane % 4, lane / 4 % 4, lane / 16) adds outlier o of
             * row r + 8 h (r = 0 .. 7) times q's weight where the row has a
             * weight; the two halves one after the other (rows r and r + 8
             * may share an index; a row's indices differ, so its adds never
             * collide); first the sums times the tile's corrections where a
             * running max moved */
            __local float *ow = ou + warp * TC_OUT_ROWS * TC_OUP;
            if (moves)
                for (uint i = lane; i < TC_OUT_ROWS * TC_HD; i += 32u)
                    ow[i / TC_HD * TC_OUP + i % TC_HD] *= cw[i / TC_HD];
            warp_sync();
            /* the rows with a weight: bit 4 r of xa_ (row r), of xb_ (row
             * r + 8), of xh (this lane's row r + 8 h); the rows unrolled,
             * their bytes at constant offsets */
            const uint ba = tc_ballot(wa_), bb = tc_ballot(wb_);
            uint xa_ = ba | ba >> 1, xb_ = bb | bb >> 1;
            xa_ |= xa_ >> 2;
            xb_ |= xb_ >> 2;
            const uint q = lane % TC_OUT_ROWS, oo = lane / TC_OUT_ROWS % TC_OUT_N, h = lane / 16u;
            const uint xh = h ? xb_ : xa_;
            __local float *oq = ow + q * TC_OUP;
            __local const uchar *ve = svb + 8u * h * RB + TC_RB + oo;
            __local const uchar *vx = svb + 8u * h * RB + TC_RB + TC_OUT_N + 2u * oo;
            __local const float *pr = pw + 64u * h + q;
TC_UNROLL
            for (uint r = 0; r < 8u; r++)
                if (((xa_ | xb_) >> (4u * r)) & 1u) {
                    const int mine = (xh >> (4u * r)) & 1u;
                    const uint e = ve[r * RB] & (TC_HD - 1u);
                    const float x = mine ? tc_half_at(vx, r * RB) : 0.0f;
                    const float pv = pr[r * 8u];
                    if (mine && h == 0u)
                        oq[e] = mad(pv, x, oq[e]);
                    warp_sync();
                    if (mine && h == 1u)
                        oq[e] = mad(pv, x, oq[e]);
                    warp_sync();
                }
        }
    }
    cp_wait_all();

    /* 2. the four warps' sums into the work-group's: M = max of the warps'
     * m, each warp's o and l times 2^(m - M), added (ob: TC_W x QC x 128
     * floats, then the warps' (m, l, skipped), over the tables, qfrag and
     * the ring, free once every warp is past its loop) */
    __local float *ob = (__local float *)lmem, *wst = ob + TC_W * QC * TC_HD;
    __local uint *is_last = (__local uint *)(lmem + TC_LMEM(NT, OUT)) - 1;
    barrier(CLK_LOCAL_MEM_FENCE);
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
                wst[3u * (warp * QC + col)] = m[nt][j];
                wst[3u * (warp * QC + col) + 1u] = lj;
                wst[3u * (warp * QC + col) + 2u] = kj;
            }
        }
    barrier(CLK_LOCAL_MEM_FENCE);
TC_UNROLL
    for (uint nt = 0; nt < NT; nt++)
TC_UNROLL
        for (uint j = 0; j < 2u; j++) {
            const uint col = nt * 8u + 2u * t + j;
            float big = -INFINITY;
TC_UNROLL
            for (uint w = 0; w < TC_W; w++)
                big = fmax(big, wst[3u * (w * QC + col)]);
            /* (times 2^-pe: o holds the sums times 2^pe; a warp whose f
             * is below 2^-89 adds nothing that counts) */
            const float f = m[nt][j] == -INFINITY ? 0.0f : exp2(m[nt][j] - big) * tc_pow2(-pe);
            __local float *row = ob + (warp * QC + col) * TC_HD + 16u * g;
TC_UNROLL
            for (uint mm = 0; mm < 8u; mm++) {
                row[2u * mm] = f * o[nt][mm][j];
                row[2u * mm + 1u] = f * o[nt][mm][2 + j];
            }
        }
    barrier(CLK_LOCAL_MEM_FENCE);
    /* the record of this chunk: o of each unit row, then (m, l, skipped) */
    const uint pair = unit_id * get_num_groups(0) + kvh;
    const uint rec_floats = TC_REC(QC);
    __global float *rec = part + ((ulong)pair * chunk_pitch + chunk) * rec_floats;
    if (OUT) {
        /* the turbo part rotated back here (R^T: V's rotation) and the
         * outliers' sums, each warp's times 2^(m - M), added: the record
         * holds o itself, which the merge only weighs and adds */
        float x[TC_QMAX], y[TC_QMAX];
TC_UNROLL
        for (uint u = 0; u < TC_QMAX; u++) if (u < UR) {
            y[u] = 0.0f;
            x[u] = tc_warp_sum(ob, u, QC, HL);
            if (u >= TC_OUT_ROWS)
                continue;
            float big = -INFINITY;
TC_UNROLL
            for (uint w = 0; w < TC_W; w++)
                big = fmax(big, wst[3u * (w * QC + u)]);
TC_UNROLL
            for (uint w = 0; w < TC_W; w++) {
                const float mw = wst[3u * (w * QC + u)];
                const float f = mw == -INFINITY ? 0.0f : exp2(mw - big);
                y[u] = mad(f, ou[(w * TC_OUT_ROWS + u) * TC_OUP + lid], y[u]);
            }
        }
        barrier(CLK_LOCAL_MEM_FENCE); /* ob read: tc_rotate's buffers */
        tc_rotate(x, UR, v_rotation, 1, tab, ob);
TC_UNROLL
        for (uint u = 0; u < TC_QMAX; u++) if (u < UR)
            if (u < un.nu)
                rec[u * TC_HD + lid] = x[u] + y[u];
    } else {
TC_UNROLL
        for (uint u = 0; u < TC_QMAX; u++) if (u < UR)
            if (u < un.nu)
                rec[u * TC_HD + lid] = tc_warp_sum(ob, u, QC, HL);
    }
    if (lid < un.nu) {
        float big = -INFINITY, sum = 0.0f, sk = 0.0f;
TC_UNROLL
        for (uint w = 0; w < TC_W; w++)
            big = fmax(big, wst[3u * (w * QC + lid)]);
TC_UNROLL
        for (uint w = 0; w < TC_W; w++) {
            const float mw = wst[3u * (w * QC + lid)];
            sum += (mw == -INFINITY ? 0.0f : exp2(mw - big)) * wst[3u * (w * QC + lid) + 1u];
            sk += wst[3u * (w * QC + lid) + 2u];
        }
        rec[QC * TC_HD + 3u * lid] = big;
        rec[QC * TC_HD + 3u * lid + 1u] = sum;
        rec[QC * TC_HD + 3u * lid + 2u] = sk;
    }

    /* 3. the work-group that completes its (unit, kv head) last merges the
     * unit's chunks: the records, the barrier, then one work-item's count
     * (acquire and release at the GPU's scope, as CUDA's grid sync orders
     * a block's writes) */
    barrier(CLK_LOCAL_MEM_FENCE);
    if (lid == 0u)
        *is_last = tc_arrive(counters + pair) == un.n_chunks - 1u;
    barrier(CLK_LOCAL_MEM_FENCE);
    if (!*is_last)
        return;
    mem_fence(CLK_GLOBAL_MEM_FENCE);
    tc_merge(un, kvh, n_q_heads, ratio, part + (ulong)pair * chunk_pitch * rec_floats,
             v_rotation, tab, out, orows, o_at, skip_at, lse_at, lmem, QC, UR, OUT);
    if (lid == 0u)
        counters[pair] = 0u; /* for the next call */
}

/* tc_decode_8, tc_decode_16, tc_decode_4 (HL): turbo3 K and V;
 * tc_decode_o4: turbo3o K and V (4 query rows a unit only, HL: its V
 * outlier lanes are 4 rows x 4 outliers x 2 halves of a tile, and its
 * local memory is that of 3 work-groups a compute unit) */
#define TC_DECODE_KERNEL(NAME, NT, OUT, HL)                                                     \
    __kernel __attribute__((reqd_work_group_size(128, 1, 1))) void NAME(TC_PARAMS)             \
    {                                                                                           \
        __local uint4 lmem[TC_LMEM(NT, OUT)];                                                   \
        tc_decode_body(TC_ARGS, lmem, NT, OUT, HL);                                             \
    }
TC_DECODE_KERNEL(tc_decode_8, 1u, 0u, 0u)
TC_DECODE_KERNEL(tc_decode_16, 2u, 0u, 0u)
TC_DECODE_KERNEL(tc_decode_o4, 1u, 1u, 1u)
TC_DECODE_KERNEL(tc_decode_4, 1u, 0u, 1u)

#endif
