/* SPDX-License-Identifier: MIT */
// The end of decode.comp (decode_wide.comp, whose partials are laid out
// alike, kept its own: with this one it took 128 registers instead of 96
// and ran slower on the H200, plugins/vulkan/README.md):
// the workgroup's partial of its chunk (chunk_partial), and with FUSED the
// merge of a (unit, kv head)'s chunks by the workgroup that finishes it
// last (merge_unit: merge.comp's work for the unit's rows, no merge
// dispatch).
//
// Both shaders hold their accumulators the same way: lane l of subgroup s
// holds the coordinates d0 = l DPL .. d0 + DPL - 1 of the QT query rows
// (acc[t * DPL + e]) over subgroup s's rows of the chunk, with its running
// max m_run (the subgroup's), its share of the sum of weights l_own and of
// the skipped rows. So the partials are laid out alike: partial p of query
// row qr, kv head h, chunk cg at ((qr * n_kv + h) * max_chunks + cg), VA *
// HEAD_DIM floats from pc.work (outlier-split values: their outliers' sums,
// unrotated, in the second half), and its record (max, sum, skipped rows)
// of TKV_VK_ML_FLOATS floats from pc.ml_at; merge.comp reads the same.
//
// The including shader declares before it: the constants HEAD_DIM, QT, SG,
// NSG, WG, DPL, GROUPS0..3, V_SPLIT (1: outlier-split values, acco holds
// their sums), VA and V_ROT (the values' rotation, undone by the merge),
// MERGE_ILP_SET (chunks the merge loads together, 0: its default),
// NEG_INF, the push constants pc (TKV_VK_ATTENTION_PUSH), struct Unit,
// `shared float xs[QT * HEAD_DIM]` and `shared float xo[V_SPLIT != 0u ?
// QT * HEAD_DIM : 1u]`; and includes rotate.glsl (which rotates xs). It
// declares its accumulators as acc[ACC] and acco[ACCO] (glslang matches an
// array argument to a parameter sized by a specialization constant only
// through the same constant), calls chunk_partial, then merge_unit where
// its FUSED specialization constant says so: the host sets it only where
// QT * HEAD_DIM fits the rotation (TKV_VK_ROWS_ELEMS).

struct Fused { TKV_VK_FUSED_MEMBERS };
layout(buffer_reference, std430, buffer_reference_align = 8) readonly buffer FusedArgs { Fused a; };
// The partials and the arrival counters, as the workgroup that merges reads
// them: written by other workgroups of the same dispatch, so past any
// incoherent cache (memoryBarrierBuffer orders coherent accesses).
layout(buffer_reference, std430, buffer_reference_align = 4) coherent buffer CFloats { float f[]; };
layout(buffer_reference, std430, buffer_reference_align = 4) coherent buffer CUints { uint32_t u[]; };
layout(buffer_reference, std430, buffer_reference_align = 16) coherent buffer CVec4s { vec4 v[]; };

const uint ACC = QT * DPL;                        // accumulators of a lane
const uint ACCO = V_SPLIT != 0u ? QT * DPL : 1u; // and of its outliers' sums

shared float red_m[NSG * QT], red_l[NSG * QT];
shared uint red_skip[NSG * QT];
shared uint last_one;                  // FUSED: this workgroup is the last of its (unit, kv head)
shared float mrg_m[QT], mrg_l[QT];     // FUSED: per query row the largest partial max, the weights' sum

// The workgroup's partial of chunk cg of (unit, kv head h), from every
// invocation (it holds barriers): the subgroups' maxima, sums and skip
// counts through shared memory, their accumulators added into xs (xo) one
// subgroup after another, each scaled to the common max; then written to
// pc.work.
void chunk_partial(Unit unit, uint h, uint cg, float m_run[QT], float l_own[QT], uint skipped[QT], float acc[ACC],
                   float acco[ACCO])
{
    const uint lid = gl_LocalInvocationIndex, sgid = gl_SubgroupID, lane = gl_SubgroupInvocationID;
    const uint n_q_rows = unit.n_q * pc.ratio, qr0 = unit.qr0, d0 = lane * DPL;
    [[unroll]] for (uint t = 0u; t < QT; t++) {
        const float l_sum = subgroupAdd(l_own[t]);
        const uint n_skipped = subgroupAdd(skipped[t]);
        if (lane == 0u) {
            red_m[sgid * QT + t] = m_run[t];
            red_l[sgid * QT + t] = l_sum;
            red_skip[sgid * QT + t] = n_skipped;
        }
    }
    barrier();
    float m_all[QT], l_all[QT], f[QT];
    uint skip_all[QT];
    [[unroll]] for (uint t = 0u; t < QT; t++) {
        m_all[t] = NEG_INF;
        l_all[t] = 0.0;
        skip_all[t] = 0u;
        for (uint g = 0u; g < NSG; g++)
            m_all[t] = max(m_all[t], red_m[g * QT + t]);
        for (uint g = 0u; g < NSG; g++) {
            const float mg = red_m[g * QT + t];
            l_all[t] += mg == NEG_INF ? 0.0 : exp(mg - m_all[t]) * red_l[g * QT + t];
            skip_all[t] += red_skip[g * QT + t];
        }
        f[t] = m_run[t] == NEG_INF ? 0.0 : exp(m_run[t] - m_all[t]);
    }
    for (uint g = 0u; g < NSG; g++) {
        if (g == sgid)
            [[unroll]] for (uint t = 0u; t < QT; t++)
                [[unroll]] for (uint e = 0u; e < DPL; e++) {
                    const uint at = t * HEAD_DIM + d0 + e;
                    xs[at] = (g == 0u ? 0.0 : xs[at]) + f[t] * acc[t * DPL + e];
                    if (V_SPLIT != 0u)
                        xo[at] = (g == 0u ? 0.0 : xo[at]) + f[t] * acco[t * DPL + e];
                }
        barrier();
    }
    for (uint e = lid; e < QT * HEAD_DIM; e += WG) {
        const uint t = e / HEAD_DIM;
        if (qr0 + t < n_q_rows) {
            uint64_t p = (uint64_t(unit.q_first * pc.ratio + qr0 + t) * pc.n_kv + h) * pc.max_chunks + cg;
            // (outlier-split values: the outliers' half after the values')
            CFloats part = CFloats(pc.work + 4ul * (p * VA * HEAD_DIM));
            part.f[e % HEAD_DIM] = xs[e];
            if (V_SPLIT != 0u)
                part.f[HEAD_DIM + e % HEAD_DIM] = xo[e];
        }
    }
    if (lid < QT && qr0 + lid < n_q_rows) {
        [[unroll]] for (uint t = 0u; t < QT; t++)
            if (t == lid) {
                uint64_t p = (uint64_t(unit.q_first * pc.ratio + qr0 + t) * pc.n_kv + h) * pc.max_chunks + cg;
                CFloats ml = CFloats(pc.work + uint64_t(pc.ml_at) * TKV_VK_ALIGN + 4ul * (p * TKV_VK_ML_FLOATS));
                ml.f[0] = m_all[t];
                ml.f[1] = l_all[t];
                ml.f[2] = uintBitsToFloat(skip_all[t]);
            }
    }
}

// The merge (merge.comp's, for unit unit_index's query rows and kv head
// h), by the workgroup that finishes last, from every invocation after
// chunk_partial: each workgroup counts itself in; the one that brings the
// count to the unit's chunks reads them all back, resets the counter for
// the next call and writes the output rows, skip counts and log-sum-exps.
// Its loads: the counter, then the chunks' records with their partials
// (MERGE_ILP chunks at a time); R^T's factors are read during the first.
void merge_unit(Unit unit, uint unit_index, uint h)
{
    const uint lid = gl_LocalInvocationIndex, sgid = gl_SubgroupID, lane = gl_SubgroupInvocationID;
    const uint n_q_rows = unit.n_q * pc.ratio, qr0 = unit.qr0, p0 = unit.n_ctx - unit.n_q;
    const uvec4 groups = uvec4(GROUPS0, GROUPS1, GROUPS2, GROUPS3);
    WhtFactors vf;
    if (V_ROT == TKV_VK_ROT_WHT)
        vf = wht_factors(QT, HEAD_DIM, groups, true, MATH);
    memoryBarrierBuffer();
    barrier();
    const Fused fa = FusedArgs(pc.inputs + uint64_t(unit.fused_at) * TKV_VK_ALIGN).a;
    const uint counter = unit_index * pc.n_kv + h;
    if (lid == 0u) {
        const uint before = atomicAdd(CUints(fa.arrivals).u[counter], 1u);
        last_one = before + 1u == unit.n_chunks ? 1u : 0u;
    }
    barrier();
    if (last_one == 0u)
        return; // (uniform: the whole workgroup)
    memoryBarrierBuffer();
    if (lid == 0u)
        CUints(fa.arrivals).u[counter] = 0u;
    // out = sum_c e^(m_c - M) acc_c / sum_c e^(m_c - M) l_c over the chunks
    // that the row's position sees (as merge.comp counts them), M their
    // largest max, in one pass over the chunks' records and partials: four
    // elements an invocation, MERGE_ILP chunks' loads in flight (past the
    // last, the last again with weight 0: no branch between the loads),
    // what was summed rescaled when a group of chunks raises the max. The
    // invocations of a query row compute its M and sum alike; the one with
    // its first elements keeps them, and the skipped rows, for the end.
    const uint64_t ml_base = pc.work + uint64_t(pc.ml_at) * TKV_VK_ALIGN;
    const uint MERGE_ILP = MERGE_ILP_SET != 0u ? MERGE_ILP_SET : V_SPLIT != 0u ? 8u : 16u, HD4 = HEAD_DIM / 4u;
    for (uint e4 = lid; e4 < QT * HD4; e4 += WG) {
        const uint t = e4 / HD4, i4 = e4 % HD4;
        vec4 a = vec4(0.0), z = vec4(0.0);
        float big = NEG_INF, total = 0.0, inv = 0.0;
        uint n_skip = 0u;
        if (qr0 + t < n_q_rows) {
            const uint p = p0 + (qr0 + t) / pc.ratio, lo = pc.window != 0u && p + 1u > pc.window ? p + 1u - pc.window : 0u;
            const uint c_lo = (lo + pc.grid_off) / pc.chunk - unit.c_first;
            const uint nc = (p + pc.grid_off) / pc.chunk - (lo + pc.grid_off) / pc.chunk + 1u;
            const uint64_t first = (uint64_t(unit.q_first * pc.ratio + qr0 + t) * pc.n_kv + h) * pc.max_chunks + c_lo;
            CVec4s ml = CVec4s(ml_base + 16ul * first);
            CVec4s part = CVec4s(pc.work + 4ul * (first * VA * HEAD_DIM));
            for (uint c0 = 0u; c0 < nc; c0 += MERGE_ILP) {
                vec4 pa[MERGE_ILP], pz[MERGE_ILP], rec[MERGE_ILP];
                [[unroll]] for (uint k = 0u; k < MERGE_ILP; k++) {
                    const uint c = min(c0 + k, nc - 1u);
                    rec[k] = ml.v[c];
                    pa[k] = part.v[c * VA * HD4 + i4];
                    pz[k] = V_SPLIT != 0u ? part.v[c * VA * HD4 + HD4 + i4] : vec4(0.0);
                }
                float m_new = big;
                [[unroll]] for (uint k = 0u; k < MERGE_ILP; k++)
                    if (c0 + k < nc)
                        m_new = max(m_new, rec[k].x);
                const float f = big == NEG_INF ? 0.0 : exp(big - m_new);
                a *= f;
                total *= f;
                if (V_SPLIT != 0u)
                    z *= f;
                [[unroll]] for (uint k = 0u; k < MERGE_ILP; k++) {
                    const bool seen = c0 + k < nc;
                    const float w = seen && rec[k].x != NEG_INF ? exp(rec[k].x - m_new) : 0.0;
                    a += w * pa[k];
                    total += w * rec[k].y;
                    n_skip += seen ? floatBitsToUint(rec[k].z) : 0u;
                    if (V_SPLIT != 0u)
                        z += w * pz[k];
                }
                big = m_new;
            }
            inv = 1.0 / total;
        }
        if (i4 == 0u) {
            mrg_m[t] = big;
            mrg_l[t] = total;
            red_skip[t] = n_skip;
        }
        [[unroll]] for (uint u = 0u; u < 4u; u++) {
            xs[t * HEAD_DIM + 4u * i4 + u] = a[u] * inv;
            if (V_SPLIT != 0u)
                xo[t * HEAD_DIM + 4u * i4 + u] = z[u] * inv;
        }
    }
    barrier();
    // R^T once for the unit's rows (turbo values sum in the rotated domain)
    if (V_ROT == TKV_VK_ROT_WHT)
        wht_rows(QT, HEAD_DIM, groups, vf);
    else
        rotate_rows(QT, HEAD_DIM, groups, V_ROT, true, MATH);
    // output row of query row qr (token qr / ratio of all the call's, head
    // h * ratio + qr % ratio); outlier-split values add their outliers'
    // sums, unrotated, after R^T
    for (uint e = lid; e < QT * HEAD_DIM; e += WG) {
        const uint t = e / HEAD_DIM;
        if (qr0 + t < n_q_rows) {
            const uint qr = unit.q_first * pc.ratio + qr0 + t;
            const uint64_t row = uint64_t(qr / pc.ratio) * (pc.n_kv * pc.ratio) + h * pc.ratio + qr % pc.ratio;
            Floats(fa.out_rows + 4ul * (row * HEAD_DIM)).f[e % HEAD_DIM] = V_SPLIT != 0u ? xs[e] + xo[e] : xs[e];
        }
    }
    if (lid < QT && qr0 + lid < n_q_rows) {
        const uint qr = unit.q_first * pc.ratio + qr0 + lid;
        const uint row = (qr / pc.ratio) * (pc.n_kv * pc.ratio) + h * pc.ratio + qr % pc.ratio;
        Uints(fa.counts).u[row] = red_skip[lid];
        Floats(fa.lse).f[row] = mrg_m[lid] + log(mrg_l[lid]);
    }
}
