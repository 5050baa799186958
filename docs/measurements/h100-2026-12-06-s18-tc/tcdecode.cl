/* SPDX-License-Identifier: MIT */
/*
 * Session 18: tcdecode.cu's multi_kernel (and its merge) in OpenCL C for
 * NVIDIA devices, the tensor-core instructions as inline PTX: the first
 * step of the OpenCL plugin's port, run by tcdecode_ocl.c. (First run in
 * session 19: run10-probes/.) Written before it ran on a
 * GPU (session 18 had no device time left): probe_ocl.c first tells
 * whether NVIDIA's compiler takes this assembly at all.
 *
 * Built with -DTOK=n (query tokens, 4 query heads each: QC = 4 TOK query
 * columns, NT = ceil(QC / 8) n-tiles). One work-group of W = 4 warps (128
 * work-items) per (chunk, kv head); each warp walks its quarter of the
 * chunk in tiles of 16 rows, NS = 3 tiles in flight by cp.async, and writes
 * its own partial per query column; merge() combines them. Rows are turbo3
 * of one group at head_dim 128 (50 bytes), in pool blocks of a power of two
 * of at least 16 tokens. The layouts, permutations and tables are
 * tcdecode.cu's (its head comment).
 */
#define HD 128u
#define RB 50u
#define W 4u
#define RATIO 4u
#define NS 3 /* (tcdecode.cu: 4; NVIDIA's OpenCL allows 48 KB of local memory a work-group) */
#define QC (4 * TOK)
#define NT ((QC + 7) / 8)

inline void mma16816(float *d, uint a0, uint a1, uint a2, uint a3, uint b0, uint b1)
{
    float d0 = d[0], d1 = d[1], d2 = d[2], d3 = d[3];
    asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
                 "{%0,%1,%2,%3};"
                 : "+f"(d0), "+f"(d1), "+f"(d2), "+f"(d3)
                 : "r"(a0), "r"(a1), "r"(a2), "r"(a3), "r"(b0), "r"(b1));
    d[0] = d0, d[1] = d1, d[2] = d2, d[3] = d3;
}

inline float shfl_xor(float x, uint mask)
{
    float y;
    asm volatile("shfl.sync.bfly.b32 %0, %1, %2, 0x1f, 0xffffffff;" : "=f"(y) : "f"(x), "r"(mask));
    return y;
}

inline uint shfl_idx(uint x, uint lane)
{
    uint y;
    asm volatile("shfl.sync.idx.b32 %0, %1, %2, 0x1f, 0xffffffff;" : "=r"(y) : "r"(x), "r"(lane));
    return y;
}

inline void warp_sync(void) { asm volatile("bar.warp.sync 0xffffffff;"); }

/* 16 bytes from global memory into local memory, asynchronously */
inline void cp_async16(__local void *dst, __global const void *src)
{
    const uint d = (uint)(size_t)dst;
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16;" ::"r"(d), "l"(src));
}

inline uint lds_at(uint addr)
{
    uint v;
    asm volatile("ld.shared.u32 %0, [%1];" : "=r"(v) : "r"(addr));
    return v;
}

inline uint lds_lo(uint addr)
{
    uint v;
    asm volatile("ld.shared.u32 %0, [%1+8192];" : "=r"(v) : "r"(addr));
    return v;
}

/* fp16 bits of x (round to nearest even), and x - that value's, as fp16 */
inline void split(float x, ushort *hi, ushort *lo)
{
    ushort h[2]; /* (half variables need cl_khr_fp16; pointers to half do not) */
    vstore_half_rte(x, 0, (__private half *)h);
    const float back = vload_half(0, (__private const half *)h);
    vstore_half_rte(x - back, 1, (__private half *)h);
    *hi = h[0];
    *lo = h[1];
}

inline uint pack_h2(ushort lo, ushort hi) { return (uint)lo | (uint)hi << 16; }

inline uint funnel(uint lo, uint hi, uint sh) { return sh ? (lo >> sh) | (hi << (32u - sh)) : lo; }

/* the address of a key (bits [b, b + 6) of x) in the lane's column of the
 * tables: ((bits >> n) & mask) + the lane's base (tcdecode.cu ORs it into an
 * 8 KB-aligned base; the alignment's slack does not fit OpenCL's 48 KB) */
inline uint key_addr(const uint *x, int b, uint lanebase)
{
    uint v;
    if (b >= 7) {
        const int bb = b - 7, w = bb >> 5, o = bb & 31;
        v = o + 13 <= 32 ? x[w] >> o : funnel(x[w], x[w + 1], (uint)o);
    } else {
        v = x[0] << (7 - b);
    }
    return (v & (63u << 7)) + lanebase;
}

inline uint key_addr64(ulong e, int b, uint lanebase)
{
    const uint v = b >= 7 ? (uint)(e >> (b - 7)) : (uint)e << (7 - b);
    return (v & (63u << 7)) + lanebase;
}

inline float half_at_l(__local const uchar *p, uint byte)
{
    return vload_half(0, (__local const half *)(p + byte));
}

/* words of the bytes at `byte` of a staged tile (2-byte aligned) */
inline void words_at(__local const uint *w, uint byte, uint *x, int n)
{
    const uint sh = (byte & 3u) * 8u;
    __local const uint *p = w + (byte >> 2);
    uint raw[4];
#pragma unroll
    for (int i = 0; i < 4; i++)
        if (i < n)
            raw[i] = p[i];
#pragma unroll
    for (int i = 0; i < 3; i++)
        if (i + 1 < n)
            x[i] = funnel(raw[i], raw[i + 1], sh);
}

__kernel __attribute__((reqd_work_group_size(128, 1, 1))) void partial(
    __global const uchar *k, __global const uchar *v, __global const uint *blocks, uint block_shift,
    ulong block_stride, ulong head_stride, __global const float *q, __global const float *cent, uint n_ctx,
    uint n_kv, uint chunk_rows, uint parts, float scale_log2, __global float *part_o, __global float *part_ml)
{
    /* the two 8 KB tables: hi pairs, then lo pairs, [key][lane] */
    __local uint tables[4096];
    __local uint4 qfrag[NT * 8 * 32];
    __local uint4 ring[W * NS * 102];
    __local float ps[W * 16 * 8 * NT];
    const uint lid = get_local_id(0), warp = lid / 32u, lane = lid % 32u, g = lane >> 2, t = lane & 3u;
    const uint chunk = get_group_id(0), h = get_group_id(1);
    const uint tb_at = (uint)(size_t)tables;
    __local uint *thi = tables;
    for (uint i = lid; i < 64u * 32u; i += 128u) {
        const uint p = i / 32u;
        ushort ah, al, bh, bl;
        split(cent[p & 7u], &ah, &al);
        split(cent[p >> 3], &bh, &bl);
        thi[i] = pack_h2(ah, bh);
        thi[2048u + i] = pack_h2(al, bl);
    }
    if (warp == 0)
#pragma unroll
        for (int nt = 0; nt < NT; nt++) {
            const int col = nt * 8 + (int)g;
            __global const float *qr = q + ((ulong)(col / 4) * n_kv * RATIO + h * RATIO + col % 4) * HD;
#pragma unroll
            for (int s = 0; s < 8; s++) {
                ushort hi[4], lo[4];
#pragma unroll
                for (int i = 0; i < 4; i++)
                    split(col < QC ? qr[32u * t + 4u * s + i] : 0.0f, &hi[i], &lo[i]);
                qfrag[(nt * 8 + s) * 32 + lane] =
                    (uint4)(pack_h2(hi[0], hi[1]), pack_h2(hi[2], hi[3]), pack_h2(lo[0], lo[1]), pack_h2(lo[2], lo[3]));
            }
        }
    barrier(CLK_LOCAL_MEM_FENCE);

    const uint per_warp = chunk_rows / W;
    const uint begin = chunk * chunk_rows + warp * per_warp;
    const uint end = min(begin + per_warp, n_ctx);
    float m[NT][2], l[NT][2], o[NT][8][4];
#pragma unroll
    for (int nt = 0; nt < NT; nt++) {
        m[nt][0] = m[nt][1] = -INFINITY;
        l[nt][0] = l[nt][1] = 0.0f;
#pragma unroll
        for (int i = 0; i < 8; i++)
            o[nt][i][0] = o[nt][i][1] = o[nt][i][2] = o[nt][i][3] = 0.0f;
    }
    __local float *pw = ps + warp * 16u * 8u * NT;
    const uint lb = tb_at + 4u * lane;
    const uint block_tokens = 1u << block_shift, fb = begin >> block_shift;
    uint myblk = 0;
    if (begin < end && fb + lane <= ((end - 1u) >> block_shift))
        myblk = blocks[fb + lane];
    __local uint4 *wring = ring + warp * NS * 102u;
    int slot = 0;
#pragma unroll
    for (int i = 0; i < NS; i++) {
        const uint base = begin + 16u * (uint)i;
        if (i < NS - 1 && base < end) {
            const uint blk = shfl_idx(myblk, (base >> block_shift) - fb);
            const ulong at = (ulong)blk * block_stride + (ulong)h * head_stride + (ulong)(base & (block_tokens - 1u)) * RB;
            __global const uint4 *tk = (__global const uint4 *)(k + at), *tv = (__global const uint4 *)(v + at);
            __local uint4 *dst = wring + i * 102;
            cp_async16(dst + lane, tk + lane);
            cp_async16(dst + 51 + lane, tv + lane);
            if (lane < 18u) {
                cp_async16(dst + 32 + lane, tk + 32 + lane);
                cp_async16(dst + 83 + lane, tv + 32 + lane);
            }
        }
        if (i < NS - 1)
            asm volatile("cp.async.commit_group;");
    }
    for (uint base = begin; base < end; base += 16u) {
        warp_sync(); /* the slot refilled now was read in the last iteration */
        {
            const uint nb = base + 16u * (NS - 1);
            if (nb < end) {
                const uint blk = shfl_idx(myblk, (nb >> block_shift) - fb);
                const ulong at =
                    (ulong)blk * block_stride + (ulong)h * head_stride + (ulong)(nb & (block_tokens - 1u)) * RB;
                __global const uint4 *tk = (__global const uint4 *)(k + at), *tv = (__global const uint4 *)(v + at);
                __local uint4 *dst = wring + ((slot + NS - 1) % NS) * 102;
                cp_async16(dst + lane, tk + lane);
                cp_async16(dst + 51 + lane, tv + lane);
                if (lane < 18u) {
                    cp_async16(dst + 32 + lane, tk + 32 + lane);
                    cp_async16(dst + 83 + lane, tv + 32 + lane);
                }
            }
            asm volatile("cp.async.commit_group;");
            asm volatile("cp.async.wait_group 2;"); /* NS - 1 */
        }
        warp_sync();
        __local const uint *sk = (__local const uint *)(wring + slot * 102), *sv = sk + 51 * 4;
        __local const uchar *skb_ = (__local const uchar *)sk, *svb_ = (__local const uchar *)sv;
        slot = (slot + 1) % NS;
        const uint lastr = min(end - 1u - base, 15u);
        uint xa[3], xb[3], f[4][2];
        words_at(sk, g * RB + 2u + 12u * t, xa, 4);
        words_at(sk, (g + 8u) * RB + 2u + 12u * t, xb, 4);
        const float ska = half_at_l(skb_, g * RB), skb = half_at_l(skb_, (g + 8u) * RB);
        const uint rows[4] = { 2u * t, 2u * t + 1u, 2u * t + 8u, 2u * t + 9u };
#pragma unroll
        for (int r = 0; r < 4; r++)
            words_at(sv, rows[r] * RB + 2u + 6u * g, f[r], 3);
        const float sva = g <= lastr ? half_at_l(svb_, g * RB) : 0.0f;
        const float svb = g + 8u <= lastr ? half_at_l(svb_, (g + 8u) * RB) : 0.0f;
        float c[NT][3][4];
#pragma unroll
        for (int nt = 0; nt < NT; nt++)
#pragma unroll
            for (int j = 0; j < 3; j++)
                c[nt][j][0] = c[nt][j][1] = c[nt][j][2] = c[nt][j][3] = 0.0f;
#pragma unroll
        for (int s = 0; s < 8; s++) {
            const uint A0 = key_addr(xa, 12 * s, lb), A1 = key_addr(xa, 12 * s + 6, lb);
            const uint B0 = key_addr(xb, 12 * s, lb), B1 = key_addr(xb, 12 * s + 6, lb);
            const uint h0 = lds_at(A0), h1 = lds_at(B0), h2 = lds_at(A1), h3 = lds_at(B1);
            const uint l0 = lds_lo(A0), l1 = lds_lo(B0), l2 = lds_lo(A1), l3 = lds_lo(B1);
#pragma unroll
            for (int nt = 0; nt < NT; nt++) {
                const uint4 qf = qfrag[(nt * 8 + s) * 32 + lane];
                mma16816(c[nt][0], h0, h1, h2, h3, qf.x, qf.y);
                mma16816(c[nt][1], h0, h1, h2, h3, qf.z, qf.w);
                mma16816(c[nt][2], l0, l1, l2, l3, qf.x, qf.y);
            }
        }
        const int va = base + g < end, vb = base + g + 8u < end;
        float corr[NT][2];
#pragma unroll
        for (int nt = 0; nt < NT; nt++) {
            float sc[4];
#pragma unroll
            for (int i = 0; i < 4; i++)
                sc[i] = (c[nt][0][i] + (c[nt][1][i] + c[nt][2][i])) * (i < 2 ? ska : skb) * scale_log2;
            const float s00 = va ? sc[0] : -INFINITY, s01 = va ? sc[1] : -INFINITY;
            const float s10 = vb ? sc[2] : -INFINITY, s11 = vb ? sc[3] : -INFINITY;
            float x0 = fmax(s00, s10), x1 = fmax(s01, s11);
#pragma unroll
            for (uint sh = 4u; sh < 32u; sh <<= 1) {
                x0 = fmax(x0, shfl_xor(x0, sh));
                x1 = fmax(x1, shfl_xor(x1, sh));
            }
            const float n0 = fmax(m[nt][0], x0), n1 = fmax(m[nt][1], x1);
            corr[nt][0] = n0 == -INFINITY ? 1.0f : exp2(m[nt][0] - n0);
            corr[nt][1] = n1 == -INFINITY ? 1.0f : exp2(m[nt][1] - n1);
            const float p00 = exp2(s00 - n0), p10 = exp2(s10 - n0), p01 = exp2(s01 - n1), p11 = exp2(s11 - n1);
            l[nt][0] = l[nt][0] * corr[nt][0] + p00 + p10;
            l[nt][1] = l[nt][1] * corr[nt][1] + p01 + p11;
            m[nt][0] = n0;
            m[nt][1] = n1;
            __local float *pn = pw + nt * 8;
            pn[g * 8u * NT + 2u * t] = p00 * sva;
            pn[g * 8u * NT + 2u * t + 1u] = p01 * sva;
            pn[(g + 8u) * 8u * NT + 2u * t] = p10 * svb;
            pn[(g + 8u) * 8u * NT + 2u * t + 1u] = p11 * svb;
        }
        warp_sync();
        uint bh[NT][2], bl[NT][2];
#pragma unroll
        for (int nt = 0; nt < NT; nt++) {
            __local const float *pn = pw + nt * 8;
            const float pv[4] = { pn[(2u * t) * 8u * NT + g], pn[(2u * t + 1u) * 8u * NT + g],
                                  pn[(2u * t + 8u) * 8u * NT + g], pn[(2u * t + 9u) * 8u * NT + g] };
            ushort ph[4], pl[4];
#pragma unroll
            for (int i = 0; i < 4; i++)
                split(pv[i], &ph[i], &pl[i]);
            bh[nt][0] = pack_h2(ph[0], ph[1]), bh[nt][1] = pack_h2(ph[2], ph[3]);
            bl[nt][0] = pack_h2(pl[0], pl[1]), bl[nt][1] = pack_h2(pl[2], pl[3]);
        }
        warp_sync();
        ulong ev[2], od[2];
        {
            const ulong ME = 0x1c71c71c71c7ul, MO = ME << 3;
#pragma unroll
            for (int pr = 0; pr < 2; pr++) {
                const ulong F0 = f[2 * pr][0] | (ulong)f[2 * pr][1] << 32;
                const ulong F1 = f[2 * pr + 1][0] | (ulong)f[2 * pr + 1][1] << 32;
                ev[pr] = (F0 & ME) | (F1 & ME) << 3;
                od[pr] = (F0 & MO) >> 3 | (F1 & MO);
            }
        }
#pragma unroll
        for (int mm = 0; mm < 8; mm++) {
            const uint A0 = key_addr64(ev[0], 6 * mm, lb), A1 = key_addr64(od[0], 6 * mm, lb);
            const uint A2 = key_addr64(ev[1], 6 * mm, lb), A3 = key_addr64(od[1], 6 * mm, lb);
            const uint h0 = lds_at(A0), h1 = lds_at(A1), h2 = lds_at(A2), h3 = lds_at(A3);
            const uint l0 = lds_lo(A0), l1 = lds_lo(A1), l2 = lds_lo(A2), l3 = lds_lo(A3);
#pragma unroll
            for (int nt = 0; nt < NT; nt++) {
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
    asm volatile("cp.async.wait_all;");
    /* this warp's partial of each query column (max, sum, values) */
    const uint part = chunk * W + warp;
#pragma unroll
    for (int nt = 0; nt < NT; nt++)
#pragma unroll
        for (int j = 0; j < 2; j++) {
            float lj = l[nt][j];
#pragma unroll
            for (uint sh = 4u; sh < 32u; sh <<= 1)
                lj += shfl_xor(lj, sh);
            const int col = nt * 8 + 2 * (int)t + j;
            if (col < QC) {
                const ulong row = (ulong)(col / 4) * n_kv * RATIO + h * RATIO + col % 4;
                const ulong p = row * parts + part;
                if (g == 0u) {
                    part_ml[2 * p] = m[nt][j];
                    part_ml[2 * p + 1] = lj;
                }
#pragma unroll
                for (int mm = 0; mm < 8; mm++) {
                    part_o[p * HD + 16u * g + 2u * mm] = o[nt][mm][j];
                    part_o[p * HD + 16u * g + 2u * mm + 1u] = o[nt][mm][2 + j];
                }
            }
        }
}

/* one work-group of HD work-items per output row */
__kernel void merge(__global const float *part_o, __global const float *part_ml, uint parts, __global float *out)
{
    __local float sm[1024], sl[1024];
    const uint row = get_group_id(0), d = get_local_id(0);
    __global const float *ml = part_ml + (ulong)row * parts * 2;
    for (uint c = d; c < parts; c += get_local_size(0)) {
        sm[c] = ml[2 * c];
        sl[c] = ml[2 * c + 1];
    }
    barrier(CLK_LOCAL_MEM_FENCE);
    float big = -INFINITY;
    for (uint c = 0; c < parts; c++)
        big = fmax(big, sm[c]);
    float acc = 0.0f, sum = 0.0f;
    __global const float *po = part_o + (ulong)row * parts * HD + d;
    for (uint c = 0; c < parts; c++) {
        const float f = sm[c] == -INFINITY ? 0.0f : exp2(sm[c] - big);
        acc += f * po[(ulong)c * HD];
        sum += f * sl[c];
    }
    out[(ulong)row * HD + d] = acc / sum;
}
