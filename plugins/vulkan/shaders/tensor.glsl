/* SPDX-License-Identifier: MIT */
// decode.comp's loop on NVIDIA's tensor cores (the decode_tc variant,
// -DTKV_TC=1): turbo3 keys and values of one group of 128 values a row, at
// most 4 query rows a unit, subgroups of 32. The prologue (the queries,
// rotated into xs) and the end (chunk_partial, merge_unit) are decode.comp's;
// this file replaces its loop over the rows. attention.c takes it only where
// the plugin's probe (tc_probe.comp, tensor.c) found the fragment layouts
// below on the device.
//
// The design is the OpenCL plugin's tensor kernel (plugins/opencl/kernels/
// tensor.cl, whose head comment and plugins/opencl/README.md "Tensor
// cores" explain it), written with GL_NV_cooperative_matrix's 16x8x16
// products (fp16 in, fp32 sums) instead of PTX. Per tile of 16 rows of a
// subgroup:
//   scores   S^T (16 rows x 8 columns) = K Q^T in 8 steps of 16 dimensions.
//            Columns 0..3 hold the query rows' fp16 hi halves, 4..7 their lo
//            halves (x_lo = fp16(x - x_hi)); K's centroids are split alike
//            and multiplied in two products, k_hi (q_hi | q_lo) + k_lo
//            (q_hi | q_lo): about float's precision (fp16's smallest step,
//            2^-24, bounds a split value's absolute error by 2^-25: below
//            1/4 the relative error grows as 2^-25 / x; for P' below, the
//            weights times V's scales, that costs accuracy where V rows
//            have norms below about 1e-3). Lanes t and t ^ 2 add
//            their columns c and c + 4 by one shuffle.
//            The dimensions are permuted (K's and Q's alike) so that lane t
//            (row g = t / 4 and g + 8, c = t % 4) holds, over the 8 steps,
//            dimensions 32 c .. 32 c + 31 of its rows: one 96-bit run of
//            each row's indices, two indices at a time looked up in a table
//            of centroid pairs (fp16 hi, fp16 lo).
//   softmax  per query row (each lane two of them, for its rows g and
//            g + 8), visibility, softcap, the running max and sparse V as
//            decode.comp (the subgroup's max through the tile).
//   values   O^T (128 x 8) += V^T (128 x 16 rows) P'^T, P' = p x the row's
//            scale, hi in columns 0..3, lo in 4..7; a second permutation
//            gives lane group g output dimensions 16 g .. 16 g + 15 (m-tile
//            m's rows g and g + 8 are dimensions 16 g + 2 m and + 1), so a
//            lane reads 48 bits of each of its four V rows. P' goes from
//            the accumulators' layout to the operand's through shared
//            memory (tc_pb).
// At the end the O fragments' columns c and c + 4 are added and put into
// decode.comp's accumulators (lane l: dimensions 4 l .. 4 l + 3 of each
// query row) through tc_o.
//
// The fragment layouts (per lane, in the order of the element index) that
// this file assumes and tc_probe.comp checks on the device:
//   A (16 x 16, fp16): (g, 2c) (g, 2c+1) (g, 2c+8) (g, 2c+9) (g+8, 2c)
//                      (g+8, 2c+1) (g+8, 2c+8) (g+8, 2c+9)
//   C (16 x 8, fp32):  (g, 2c) (g, 2c+1) (g+8, 2c) (g+8, 2c+1)
// B operands are loaded from shared memory (coopMatLoadNV): no layout.

// (its extensions are enabled at the head of decode.comp)

#define TC_A fcoopmatNV<16, gl_ScopeSubgroup, 16, 16>
#define TC_B fcoopmatNV<16, gl_ScopeSubgroup, 16, 8>
#define TC_C fcoopmatNV<32, gl_ScopeSubgroup, 16, 8>
const uint64_t TC_RB = 50ul; // the bytes of a turbo3 row of 128 values

// centroid pairs: [hi, lo][key = i0 | i1 << 3][copy], fp16(c[i0]) |
// fp16(c[i1]) << 16; lane l reads copy l % 8 (fewer bank conflicts)
shared uint tc_tab[2u * 64u * 8u];
// the scores' B operands: [step s][k 16][n 8] fp16, a row of 4 uints
shared uint tc_qb[8u * 16u * 4u];
// each subgroup's values' B operand: [row 16][n 8] fp16
shared uint tc_pb[NSG * 16u * 4u];
// each subgroup's sums at the end: [query row][dimension]
shared float tc_o[NSG * QT * HEAD_DIM];

// fp16 bits of x (finite, |x| <= 65504) and back, subnormals exact: on
// NVIDIA packHalf2x16 alone lost the lo halves of the centroids (about
// 2^-12 of them, below fp16's normal range): 7e-4 relative error in the
// conformance test at 1500 rows (docs/measurements/gpu-2026-12-07-s29/)
uint tc_to_h(float x)
{
    const float a = abs(x);
    const uint sign = (floatBitsToUint(x) >> 16u) & 0x8000u;
    return a < 6.103515625e-05 ? sign | uint(roundEven(a * 16777216.0)) : packHalf2x16(vec2(x, 0.0)) & 0xffffu;
}
float tc_from_h(uint h)
{
    const float sub = float(h & 0x3ffu) * 5.9604644775390625e-08;
    return (h & 0x7c00u) == 0u ? ((h & 0x8000u) != 0u ? -sub : sub) : unpackHalf2x16(h).x;
}

// 2^k for k in -126 .. 127, from its bits: the sums' and the weights'
// powers of two below are multiplications by it (ldexp compiled to a
// general routine on NVIDIA: session 30's 2^pe cost 18% at 128K)
float tc_pow2(int k) { return uintBitsToFloat(uint(k + 127) << 23u); }

// fp16 hi and lo halves of (a, b), packed as a pair each: x_hi = fp16(x),
// x_lo = fp16(x - x_hi) (x - x_hi exact in float)
void tc_split2(float a, float b, out uint hi, out uint lo)
{
    const uint ha = tc_to_h(a), hb = tc_to_h(b);
    hi = ha | hb << 16u;
    lo = tc_to_h(a - tc_from_h(ha)) | tc_to_h(b - tc_from_h(hb)) << 16u;
}

// The tables and the scores' B operands (every invocation; xs holds R q,
// query row t at t * HEAD_DIM). Logical column kk of step s is dimension
// 32 ((kk & 7) >> 1) + 4 s + ((kk & 1) | (kk >> 3) << 1).
void tc_prepare(uint gi)
{
    const uint lid = gl_LocalInvocationIndex;
    // the 8 centroids split once (hi in the low half, lo in the high), in
    // tc_pb until the pairs are made
    if (lid < 4u) {
        Floats m = Floats(MATH);
        const uint cb = codebook_at(gi, 3u);
        uint hi, lo;
        tc_split2(m.f[cb + 2u * lid], m.f[cb + 2u * lid + 1u], hi, lo);
        tc_pb[2u * lid] = (hi & 0xffffu) | lo << 16u;
        tc_pb[2u * lid + 1u] = (hi >> 16u) | (lo & 0xffff0000u);
    }
    barrier();
    for (uint i = lid; i < 64u * 8u; i += WG) {
        const uint key = i >> 3u, a = tc_pb[key & 7u], b = tc_pb[key >> 3u];
        tc_tab[i] = (a & 0xffffu) | b << 16u;
        tc_tab[512u + i] = (a >> 16u) | (b & 0xffff0000u);
    }
    for (uint i = lid; i < 8u * 16u * 4u; i += WG) {
        const uint s = i >> 6u, kk = (i >> 2u) & 15u, j = i & 3u;
        const uint dim = 32u * ((kk & 7u) >> 1u) + 4u * s + ((kk & 1u) | (kk >> 3u) << 1u);
        // columns 2j, 2j + 1: the hi halves of query rows 2j, 2j + 1 (j < 2),
        // else the lo halves of rows 2 (j - 2), + 1
        const uint t = 2u * (j & 1u);
        const float a = t < QT ? xs[t * HEAD_DIM + dim] : 0.0;
        const float b = t + 1u < QT ? xs[(t + 1u) * HEAD_DIM + dim] : 0.0;
        uint hi, lo;
        tc_split2(a, b, hi, lo);
        tc_qb[i] = j < 2u ? hi : lo;
    }
}

// n bits at the constant position b of the words w (b + n <= 32 * length)
#define TC_BITS(w, b, n)                                                                            \
    ((((b) & 31u) + (n) <= 32u) ? bitfieldExtract((w)[(b) >> 5u], int((b) & 31u), int(n))           \
                                : (((w)[(b) >> 5u] >> ((b) & 31u)) | ((w)[((b) >> 5u) + 1u] << (32u - ((b) & 31u)))) & \
                                      ((1u << (n)) - 1u))

// The bytes a lane reads of a tile (16 rows from row in0 of a pool block,
// its bytes from kb and vb; rows r and r + 2 are 100 bytes apart, so a
// row's byte offset mod 4 is 2 (r mod 2)): whole words, loaded as the tile
// starts and shifted into place then. (A K run's fourth word,
// needed where the run starts 2 bytes into a word, is read by every lane:
// for row 15 it is the 4 bytes after the tile, past a pool's last row its
// buffer's slack, VK_BUFFER_SLACK.)
//   k[0..3], k[4..7]: K rows g, g + 8 from byte 2 + 12 c (96 bits)
//   v[2 i], v[2 i + 1]: V row 2c + (i & 1) + 8 (i >> 1) from byte 2 + 6 g
//   sc[0..3]: the words holding the scales of K rows g, g + 8, V rows g, g + 8
struct TcRaw {
    uint k[8], v[8], sc[4];
};

TcRaw tc_fetch(uint64_t kb, uint64_t vb, uint g, uint c, uint tb)
{
    TcRaw r;
    // (TURBO_VK_SHADER_SKIP=kloads / vloads, measurement only: made-up words)
    const bool kl = (DBG & TKV_VK_DBG_NO_K_LOADS) == 0u, vl = (DBG & TKV_VK_DBG_NO_V_LOADS) == 0u;
    [[unroll]] for (uint h = 0u; h < 2u; h++) {
        Words p = Words((kb + uint64_t(g + 8u * h) * TC_RB + 2ul + 12ul * c) & ~uint64_t(3));
        [[unroll]] for (uint i = 0u; i < 4u; i++)
            r.k[4u * h + i] = kl ? p.w[i] : ((tb + g) * 2654435761u) ^ ((4u * h + i) * 40503u) ^ c;
        r.sc[h] = kl ? Words((kb + uint64_t(g + 8u * h) * TC_RB) & ~uint64_t(3)).w[0] : 0x3c003c00u;
        r.sc[2u + h] = vl ? Words((vb + uint64_t(g + 8u * h) * TC_RB) & ~uint64_t(3)).w[0] : 0x3c003c00u;
    }
    [[unroll]] for (uint i = 0u; i < 4u; i++) {
        Words p = Words((vb + uint64_t(2u * c + (i & 1u) + 8u * (i >> 1u)) * TC_RB + 2ul + 6ul * g) & ~uint64_t(3));
        r.v[2u * i] = vl ? p.w[0] : ((tb + c) * 2246822519u) ^ (i * 40503u) ^ g;
        r.v[2u * i + 1u] = vl ? p.w[1] : ((tb + c) * 2246822519u) ^ (i * 12345u) ^ g;
    }
    return r;
}

// tc_fetch of the tile at row tb (a multiple of 16) of kv head h
TcRaw tc_fetch_tile(uint h, uint64_t blocks, uint tb, uint g, uint c)
{
    const uint64_t block = (DBG & TKV_VK_DBG_NO_BLOCKS) == 0u ? uint64_t(Uints(blocks).u[tb / pc.block_tokens])
                                                           : uint64_t(tb / pc.block_tokens);
    const uint64_t in0 = uint64_t(tb % pc.block_tokens);
    return tc_fetch(pc.k + block * pc.k_block_stride + uint64_t(h) * pc.k_head_stride + in0 * TC_RB,
                    pc.v + block * pc.v_block_stride + uint64_t(h) * pc.v_head_stride + in0 * TC_RB, g, c, tb);
}

// word i of the run that starts `sh` bits into w[i] (sh 0 or 16)
#define TC_SHIFT(w, i, sh) ((sh) == 0u ? (w)[i] : ((w)[i] >> 16u) | ((w)[(i) + 1u] << 16u))

// The subgroup's rows [begin, end) of unit `unit` and kv head h: decode.comp's
// loop's results (m_run the subgroup's for every query row; l_own and skipped
// this lane's shares; acc lane l's dimensions 4 l .. 4 l + 3).
void tc_loop(uint h, uint begin, uint end, uint64_t blocks, uint lo_q[QT], uint hi_q[QT], inout float m_run[QT],
             inout float l_own[QT], inout uint skipped[QT], inout float acc[ACC])
{
    const uint sgid = gl_SubgroupID, lane = gl_SubgroupInvocationID;
    const uint g = lane >> 2u, c = lane & 3u, l8 = lane & 7u, qa = 2u * (c & 1u);
    const bool counts = c < 2u; // lanes c and c ^ 2 hold the same weights: one counts them
    TC_C oacc[8];
    [[unroll]] for (uint m = 0u; m < 8u; m++)
        oacc[m] = TC_C(0.0);
    // this lane's two query rows' visible ranges and running maxima
    uint lo2[2], hi2[2];
    float mr[2], lr[2];
    // P' is stored times 2^pe, pe from the largest V scale seen so far, so
    // that the weights of the rows that count lie in fp16's normal range
    // whatever the V rows' norms (the hi / lo split loses relative accuracy
    // below 1/4); the sums are rescaled exactly where pe moves, and times
    // 2^-pe at the end (pe_set false: no V scale seen yet)
    int pe = 0;
    bool pe_set = false;
    uint sk[2];
    [[unroll]] for (uint j = 0u; j < 2u; j++) {
        lo2[j] = 0u;
        hi2[j] = 0u;
        [[unroll]] for (uint t = 0u; t < QT; t++)
            if (t == qa + j) {
                lo2[j] = lo_q[t];
                hi2[j] = hi_q[t];
            }
        mr[j] = NEG_INF;
        lr[j] = 0.0;
        sk[j] = 0u;
    }
    // where the runs start in their first word: row r lies at 50 r bytes,
    // 2 (r mod 2) past a word; K's run of rows g, g + 8 2 + 12 c bytes into
    // them, V's of rows 2c (+ 8) and 2c + 1 (+ 8) 2 + 6 g bytes in
    const uint sh_k = (g & 1u) == 0u ? 16u : 0u, sh_v = sh_k, sh_w = 16u - sh_k;
    const uint sh_sa = (g & 1u) != 0u ? 16u : 0u; // the scales of rows g, g + 8
    uint tb = begin < end ? begin & ~15u : end; // (an empty range takes no tile)
    // (each tile's words loaded as it starts: loaded one tile ahead they
    // took 2 registers more and measured no faster, session 32)
    for (; tb < end; tb += 16u) {
        const TcRaw cur = tc_fetch_tile(h, blocks, tb, g, c);
        uint ka[3], kc[3], v0[2], v1[2], v2[2], v3[2];
        [[unroll]] for (uint i = 0u; i < 3u; i++) {
            ka[i] = TC_SHIFT(cur.k, i, sh_k);
            kc[i] = TC_SHIFT(cur.k, 4u + i, sh_k);
        }
        // (V: 6 bytes from a 2-byte aligned offset lie in two words)
        v0[0] = TC_SHIFT(cur.v, 0u, sh_v), v0[1] = sh_v == 0u ? cur.v[1] : cur.v[1] >> 16u;
        v1[0] = TC_SHIFT(cur.v, 2u, sh_w), v1[1] = sh_w == 0u ? cur.v[3] : cur.v[3] >> 16u;
        v2[0] = TC_SHIFT(cur.v, 4u, sh_v), v2[1] = sh_v == 0u ? cur.v[5] : cur.v[5] >> 16u;
        v3[0] = TC_SHIFT(cur.v, 6u, sh_w), v3[1] = sh_w == 0u ? cur.v[7] : cur.v[7] >> 16u;
        // (the scales as decode.comp reads them: subnormal ones exact)
        const float ksa = tc_from_h((cur.sc[0] >> sh_sa) & 0xffffu), ksb = tc_from_h((cur.sc[1] >> sh_sa) & 0xffffu);
        const float vsa = tc_from_h((cur.sc[2] >> sh_sa) & 0xffffu), vsb = tc_from_h((cur.sc[3] >> sh_sa) & 0xffffu);

        // scores: two chains (even and odd steps); TURBO_VK_SHADER_SKIP=scores:
        // made-up scores from the words
        TC_C s0 = TC_C(0.0), s1 = TC_C(0.0);
        if ((DBG & TKV_VK_DBG_NO_SCORES) != 0u)
            [[unroll]] for (uint i = 0u; i < 4u; i++)
                s0[i] = float((ka[i % 3u] ^ kc[i % 3u]) & 1023u) * 0.001;
        else
        [[unroll]] for (uint s = 0u; s < 8u; s++) {
            const uint k0 = TC_BITS(ka, 12u * s, 6u), k1 = TC_BITS(ka, 12u * s + 6u, 6u);
            const uint k2 = TC_BITS(kc, 12u * s, 6u), k3 = TC_BITS(kc, 12u * s + 6u, 6u);
            const uint e0 = (k0 << 3u) | l8, e1 = (k1 << 3u) | l8, e2 = (k2 << 3u) | l8, e3 = (k3 << 3u) | l8;
            TC_A ah, al;
            f16vec2 x;
            x = unpackFloat2x16(tc_tab[e0]), ah[0] = x.x, ah[1] = x.y;
            x = unpackFloat2x16(tc_tab[e1]), ah[2] = x.x, ah[3] = x.y;
            x = unpackFloat2x16(tc_tab[e2]), ah[4] = x.x, ah[5] = x.y;
            x = unpackFloat2x16(tc_tab[e3]), ah[6] = x.x, ah[7] = x.y;
            x = unpackFloat2x16(tc_tab[512u + e0]), al[0] = x.x, al[1] = x.y;
            x = unpackFloat2x16(tc_tab[512u + e1]), al[2] = x.x, al[3] = x.y;
            x = unpackFloat2x16(tc_tab[512u + e2]), al[4] = x.x, al[5] = x.y;
            x = unpackFloat2x16(tc_tab[512u + e3]), al[6] = x.x, al[7] = x.y;
            TC_B bq; // (from shared memory each tile: 16 registers fewer)
            coopMatLoadNV(bq, tc_qb, s * 64u, 4u, false);
            if ((s & 1u) == 0u) {
                s0 = coopMatMulAddNV(ah, bq, s0);
                s0 = coopMatMulAddNV(al, bq, s0);
            } else {
                s1 = coopMatMulAddNV(ah, bq, s1);
                s1 = coopMatMulAddNV(al, bq, s1);
            }
        }
        // this lane's four scores: rows g (i 0, 1) and g + 8 (i 2, 3), query
        // rows qa + (i & 1)
        float x4[4], p4[4];
        const uint ra = tb + g, rb = tb + g + 8u;
        float tmax[2];
        [[unroll]] for (uint i = 0u; i < 4u; i++) {
            float d = s0[i] + s1[i];
            d += subgroupShuffleXor(d, 2u);
            const uint j = i & 1u, row = i < 2u ? ra : rb;
            float y = pc.scale * ((i < 2u ? ksa : ksb) * d);
            if (pc.softcap > 0.0)
                y = pc.softcap * tanh_stable(y / pc.softcap);
            x4[i] = row >= begin && row < end && row >= lo2[j] && row < hi2[j] ? y : NEG_INF;
        }
        [[unroll]] for (uint j = 0u; j < 2u; j++) {
            float t = max(x4[j], x4[j + 2u]);
            t = max(t, subgroupShuffleXor(t, 4u));
            t = max(t, subgroupShuffleXor(t, 8u));
            t = max(t, subgroupShuffleXor(t, 16u));
            tmax[j] = t;
        }
        // the tile's largest V scale over the subgroup's rows (others may
        // hold any bytes), and pe for it: P' <= scale < 2^(14 - pe)
        float pf = 1.0; // what the sums take for a pe that moves
        {
            // (lanes of one g hold the same rows: the max over g)
            float vmax = max(ra >= begin && ra < end ? abs(vsa) : 0.0, rb >= begin && rb < end ? abs(vsb) : 0.0);
            vmax = max(vmax, subgroupShuffleXor(vmax, 4u));
            vmax = max(vmax, subgroupShuffleXor(vmax, 8u));
            vmax = max(vmax, subgroupShuffleXor(vmax, 16u));
            if (vmax > 0.0) {
                // vmax = f 2^e, f in [1/2, 1) (an fp16 scale: a normal float)
                const int e = int((floatBitsToUint(vmax) >> 23u) & 0xffu) - 126;
                const int pt = 14 - e;
                if (!pe_set) {
                    pe = pt;
                    pe_set = true;
                } else if (pt < pe) {
                    pf = tc_pow2(pt - pe);
                    pe = pt;
                }
            }
        }
        const float p2 = tc_pow2(pe); // (pe in -2 .. 37: fp16 scales lie in 2^-24 .. 65504)
        float corr[2];
        bool rescale = pf != 1.0, any_w = false;
        [[unroll]] for (uint j = 0u; j < 2u; j++) {
            const float m_new = max(mr[j], tmax[j]);
            corr[j] = m_new == NEG_INF ? 1.0 : exp(mr[j] - m_new);
            rescale = rescale || (mr[j] != NEG_INF && m_new != mr[j]);
            float lsum = 0.0;
            [[unroll]] for (uint r = 0u; r < 2u; r++) {
                const uint i = 2u * r + j;
                float p = 0.0, w = 0.0;
                if (x4[i] != NEG_INF) {
                    p = exp(x4[i] - m_new);
                    if (p < pc.threshold) {
                        if (counts)
                            sk[j]++;
                    } else {
                        w = p;
                    }
                }
                lsum += p;
                // (a row outside the subgroup's range may hold any bytes: its
                // scale is not read into a product)
                p4[i] = w == 0.0 ? 0.0 : w * (r == 0u ? vsa : vsb) * p2;
                any_w = any_w || w != 0.0;
            }
            if (counts)
                lr[j] = lr[j] * corr[j] + lsum;
            mr[j] = m_new;
        }
        // what was accumulated, to the new maxima: element i of an O
        // fragment is column 2c + (i & 1), query row qa + (i & 1)
        if (subgroupAny(rescale))
            [[unroll]] for (uint m = 0u; m < 8u; m++)
                [[unroll]] for (uint i = 0u; i < 4u; i++)
                    oacc[m][i] *= corr[i & 1u] * pf;
        if (!subgroupAny(any_w) || (DBG & TKV_VK_DBG_NO_VALUES) != 0u)
            continue; // no weight in the tile: the values add nothing
        // P' into B: row g (and g + 8), columns 2c, 2c + 1 (hi where c < 2)
        {
            uint hi, lo;
            tc_split2(p4[0], p4[1], hi, lo);
            tc_pb[sgid * 64u + g * 4u + c] = counts ? hi : lo;
            tc_split2(p4[2], p4[3], hi, lo);
            tc_pb[sgid * 64u + (g + 8u) * 4u + c] = counts ? hi : lo;
        }
        subgroupMemoryBarrierShared();
        subgroupBarrier();
        TC_B bp;
        coopMatLoadNV(bp, tc_pb, sgid * 64u, 4u, false);
        [[unroll]] for (uint m = 0u; m < 8u; m++) {
            // V rows (2c, 2c + 1) and (2c + 8, 2c + 9) side by side at
            // dimensions 16 g + 2 m (A row g) and + 1 (A row g + 8)
            const uint b0 = 6u * m, b1 = 6u * m + 3u;
            const uint e0 = ((TC_BITS(v0, b0, 3u) | TC_BITS(v1, b0, 3u) << 3u) << 3u) | l8;
            const uint e1 = ((TC_BITS(v2, b0, 3u) | TC_BITS(v3, b0, 3u) << 3u) << 3u) | l8;
            const uint e2 = ((TC_BITS(v0, b1, 3u) | TC_BITS(v1, b1, 3u) << 3u) << 3u) | l8;
            const uint e3 = ((TC_BITS(v2, b1, 3u) | TC_BITS(v3, b1, 3u) << 3u) << 3u) | l8;
            TC_A ah, al;
            f16vec2 x;
            x = unpackFloat2x16(tc_tab[e0]), ah[0] = x.x, ah[1] = x.y;
            x = unpackFloat2x16(tc_tab[e1]), ah[2] = x.x, ah[3] = x.y;
            x = unpackFloat2x16(tc_tab[e2]), ah[4] = x.x, ah[5] = x.y;
            x = unpackFloat2x16(tc_tab[e3]), ah[6] = x.x, ah[7] = x.y;
            x = unpackFloat2x16(tc_tab[512u + e0]), al[0] = x.x, al[1] = x.y;
            x = unpackFloat2x16(tc_tab[512u + e1]), al[2] = x.x, al[3] = x.y;
            x = unpackFloat2x16(tc_tab[512u + e2]), al[4] = x.x, al[5] = x.y;
            x = unpackFloat2x16(tc_tab[512u + e3]), al[6] = x.x, al[7] = x.y;
            oacc[m] = coopMatMulAddNV(ah, bp, oacc[m]);
            oacc[m] = coopMatMulAddNV(al, bp, oacc[m]);
        }
        subgroupBarrier(); // tc_pb is rewritten by the next tile
    }
    // the sums of columns c and c + 4 (lanes t and t ^ 2) into tc_o, then
    // decode.comp's accumulators
    const float p2_end = tc_pow2(-pe);
    [[unroll]] for (uint m = 0u; m < 8u; m++)
        [[unroll]] for (uint i = 0u; i < 4u; i++) {
            float o = oacc[m][i];
            o += subgroupShuffleXor(o, 2u);
            o *= p2_end; // (exact, but for results below float's normal range)
            const uint t = qa + (i & 1u), dim = 16u * g + 2u * m + (i >> 1u);
            if (counts && t < QT)
                tc_o[(sgid * QT + t) * HEAD_DIM + dim] = o;
        }
    subgroupMemoryBarrierShared();
    subgroupBarrier();
    [[unroll]] for (uint t = 0u; t < QT; t++) {
        [[unroll]] for (uint e = 0u; e < DPL; e++)
            acc[t * DPL + e] = tc_o[(sgid * QT + t) * HEAD_DIM + lane * DPL + e];
        // query row t is lane t / 2's (c = t / 2), its j = t % 2
        m_run[t] = subgroupShuffle(mr[t & 1u], t >> 1u);
        l_own[t] = 0.0;
        skipped[t] = 0u;
        [[unroll]] for (uint j = 0u; j < 2u; j++)
            if (counts && qa + j == t) {
                l_own[t] = lr[j];
                skipped[t] = sk[j];
            }
    }
}
