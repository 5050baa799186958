/* SPDX-License-Identifier: MIT */
#version 460
// The second half of split-K attention: one workgroup per output row
// combines the partials of the chunks its query row sees,
//   out = sum_c e^(m_c - M) acc_c / sum_c e^(m_c - M) l_c,   M = max_c m_c,
// adds S^T of the QJL sign sums for QJL values, applies R^T once (turbo
// values are accumulated in the rotated domain: R is linear), adds the
// outliers of outlier-split values (accumulated unrotated), counts the V
// rows sparse V skipped and writes the row's log-sum-exp M + log(sum_c
// e^(m_c - M) l_c).
#extension GL_GOOGLE_include_directive : require
#extension GL_KHR_shader_subgroup_basic : require
#extension GL_KHR_shader_subgroup_arithmetic : require
#extension GL_EXT_control_flow_attributes : require

#include "common.glsl"

layout(push_constant, std430) uniform Push { TKV_VK_MERGE_PUSH } pc;

struct Unit { TKV_VK_UNIT_MEMBERS };
layout(buffer_reference, std430, buffer_reference_align = 4) readonly buffer Units { Unit u[]; };

#define MERGE_ILP 32u

shared float xs[TKV_VK_ROWS_ELEMS];
shared float zs[TKV_VK_ROWS_ELEMS];
shared float weights[TKV_VK_MAX_CHUNKS];
shared float red[TKV_VK_WG];
shared uint red_count[TKV_VK_WG];

#include "rotate.glsl"

void main()
{
    const uint lid = gl_LocalInvocationIndex, wg = gl_WorkGroupSize.x, hd = pc.head_dim;
    const uvec4 groups = uvec4(pc.groups[0], pc.groups[1], pc.groups[2], pc.groups[3]);
    const bool qjl = (pc.flags & TKV_VK_FLAG_QJL) != 0u, split = (pc.flags & TKV_VK_FLAG_OUTLIER) != 0u;
    const uint va = qjl || split ? 2u : 1u;
    uint row = flat_workgroup();
    if (row >= pc.n_rows)
        return;
    // row = token * n_q_heads + head (token among every sequence's); its
    // query row qr = token * ratio + head % ratio belongs to a unit, whose
    // chunks c_first .. hold the rows the query sees, [lo, p]
    uint n_q_heads = pc.n_kv * pc.ratio, head = row % n_q_heads, token = row / n_q_heads;
    uint qr = token * pc.ratio + head % pc.ratio, h = head / pc.ratio;
    // (member by member: glslang 12 takes forever over a whole-struct load
    // from a buffer reference in this shader)
    Units units = Units(pc.units);
    uint u = Uints(pc.row_units).u[qr], c_first = units.u[u].c_first;
    uint p = units.u[u].n_ctx - units.u[u].n_q + (token - units.u[u].q_first);
    uint lo = pc.window != 0u && p + 1u > pc.window ? p + 1u - pc.window : 0u;
    uint c_lo = lo / pc.chunk - c_first, n_chunks = p / pc.chunk - lo / pc.chunk + 1u;
    // the partials of row qr, kv head h are consecutive, one per chunk
    uint64_t first_partial = (uint64_t(qr) * pc.n_kv + h) * pc.max_chunks + c_lo;
    Floats ml = Floats(pc.part_ml + 4ul * (first_partial * TKV_VK_ML_FLOATS));
    Floats part = Floats(pc.part_acc + 4ul * (first_partial * va * hd));

    float mx = uintBitsToFloat(0xff800000u);
    for (uint c = lid; c < n_chunks; c += wg)
        mx = max(mx, ml.f[c * TKV_VK_ML_FLOATS]);
    mx = subgroupMax(mx);
    if (subgroupElect())
        red[gl_SubgroupID] = mx;
    barrier();
    float big = red[0];
    for (uint g = 1u; g < gl_NumSubgroups; g++)
        big = max(big, red[g]);
    barrier();

    float sum = 0.0;
    uint skipped = 0u;
    for (uint c = lid; c < n_chunks; c += wg) {
        uint at = c * TKV_VK_ML_FLOATS;
        float m_c = ml.f[at], w = m_c == uintBitsToFloat(0xff800000u) ? 0.0 : exp(m_c - big);
        weights[c] = w;
        sum += w * ml.f[at + 1u];
        skipped += floatBitsToUint(ml.f[at + 2u]);
    }
    sum = subgroupAdd(sum);
    skipped = subgroupAdd(skipped);
    if (subgroupElect()) {
        red[gl_SubgroupID] = sum;
        red_count[gl_SubgroupID] = skipped;
    }
    barrier();
    float total = 0.0;
    uint total_skipped = 0u;
    for (uint g = 0u; g < gl_NumSubgroups; g++) {
        total += red[g];
        total_skipped += red_count[g];
    }
    float inv = 1.0 / total;

    // MERGE_ILP independent sums per element keep that many partial loads in
    // flight: the chunks' partials come from memory, one round trip each.
    // Past the last chunk the loads repeat the last one with weight 0, so
    // that no branch stands between a load and the next (H200, turbo3, 1
    // token: 4.7 / 4.4 us less at 4K / 16K than with the loads behind
    // `if (c < n_chunks)`; docs/measurements/h200-2026-12-05-decode-bound).
    for (uint i = lid; i < hd; i += wg) {
        float a[MERGE_ILP], z[MERGE_ILP];
        [[unroll]] for (uint k = 0u; k < MERGE_ILP; k++)
            a[k] = z[k] = 0.0;
        for (uint c0 = 0u; c0 < n_chunks; c0 += MERGE_ILP)
            [[unroll]] for (uint k = 0u; k < MERGE_ILP; k++) {
                const uint c = min(c0 + k, n_chunks - 1u), at = c * va * hd + i;
                const float w = c0 + k < n_chunks ? weights[c] : 0.0;
                a[k] += w * part.f[at];
                if (va > 1u)
                    z[k] += w * part.f[at + hd];
            }
        [[unroll]] for (uint k = 1u; k < MERGE_ILP; k++) {
            a[0] += a[k];
            z[0] += z[k];
        }
        xs[i] = a[0] * inv;
        zs[i] = z[0] * inv;
    }
    barrier();
    if (qjl) {
        // y += S^T zs per group: what every cached row's scale gamma
        // S^T z would have added, applied once (S^T is linear)
        Floats m = Floats(pc.math);
        for (uint i = lid; i < hd; i += wg) {
            uint size, first;
            group_of(groups, i, size, first);
            uint s0 = qjl_at(group_index(size)) + i - first;
            float v = xs[i];
            for (uint j = 0u; j < size; j++)
                v += m.f[s0 + j * size] * zs[first + j];
            xs[i] = v;
        }
        barrier();
    }
    rotate_rows(1u, hd, groups, pc.rotation, true, pc.math);
    // outlier-split values: the outliers' sums, unrotated, after R^T
    Floats out_row = Floats(pc.out_rows + 4ul * (uint64_t(row) * hd));
    for (uint i = lid; i < hd; i += wg)
        out_row.f[i] = split ? xs[i] + zs[i] : xs[i];
    if (lid == 0u) {
        Uints(pc.counts).u[row] = total_skipped;
        Floats(pc.lse).f[row] = big + log(total);
    }
}
