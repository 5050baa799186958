/* SPDX-License-Identifier: MIT */
#version 460
// Rows to floats, two uses:
//   dequantize (TKV_VK_FLAG_PAGED): stored rows of tokens first_pos .. of
//     one sequence, every head, found through the block table, to values in
//     the original domain, as plugins/cpu/quantize.c cpu_dequantize computes
//     them: the row accumulated with weight 1 into zeros (rows.c, qjl.c
//     axpy), then R^T for turbo rows, then the outliers of outlier-split
//     rows added. The same float operations in the same order, so the
//     result is the reference's bit for bit.
//   prepare (TKV_VK_FLAG_QUERY): query rows to what attention scores
//     against: R q for turbo keys, then S R q per group for QJL keys (rows.c
//     and qjl.c prepare_query), written [R q | S R q], or q itself for
//     outlier-split keys (outlier.c), written [R q | q].
#extension GL_GOOGLE_include_directive : require

#include "common.glsl"

layout(push_constant, std430) uniform Push { TKV_VK_ROWS_PUSH } pc;

shared float xs[TKV_VK_ROWS_ELEMS];
shared uint64_t row_base[TKV_VK_ROWS_ELEMS / 8u]; // address of each source row of the workgroup

#include "rotate.glsl"

// One stored value with weight 1, in the rotated domain for turbo rows.
float stored_value(uint64_t row, uint i, uvec4 groups, Floats m)
{
    if (pc.encoding == TKV_VK_ENC_F32)
        return uintBitsToFloat(load_u32(row + uint64_t(4u * i)));
    if (pc.encoding == TKV_VK_ENC_F16)
        return tkv_fp16_to_float(load_u16(row + uint64_t(2u * i)));
    if (pc.encoding == TKV_VK_ENC_Q8_0) {
        uint blk = i / pc.q8_block;
        uint64_t at = row + uint64_t(blk * (pc.q8_block + 2u));
        float d = tkv_fp16_to_float(load_u16(at));
        int q = int(load_u32(at + uint64_t(2u + i % pc.q8_block)) << 24) >> 24;
        precise float v = d * float(q);
        return v;
    }
    uint size, first, k = group_of(groups, i, size, first);
    uint64_t blk = row + uint64_t(2u * k + first * pc.bits / 8u);
    float s = tkv_fp16_to_float(load_u16(blk));
    uint idx = load_bits(blk + 2ul, (i - first) * pc.bits, pc.bits);
    precise float v = s * m.f[codebook_at(group_index(size), pc.bits) + idx];
    return v;
}

void main()
{
    const uint lid = gl_LocalInvocationIndex, wg = gl_WorkGroupSize.x, hd = pc.head_dim;
    const uvec4 groups = uvec4(pc.groups[0], pc.groups[1], pc.groups[2], pc.groups[3]);
    const bool query = (pc.flags & TKV_VK_FLAG_QUERY) != 0u, qjl = (pc.flags & TKV_VK_FLAG_QJL) != 0u;
    uint row0 = flat_workgroup() * pc.rows_per_wg;
    if (row0 >= pc.n_rows)
        return;
    uint nr = min(pc.rows_per_wg, pc.n_rows - row0), n = nr * hd;
    Floats m = Floats(pc.math);

    // Each source row's address, once: paged rows run token-major, head-minor
    // (token t, head h is position first_pos + t, in the block the table
    // slice gives).
    for (uint r = lid; r < nr; r += wg) {
        uint64_t at = pc.src + uint64_t(row0 + r) * uint64_t(pc.row_bytes);
        if ((pc.flags & TKV_VK_FLAG_PAGED) != 0u) {
            uint t = (row0 + r) / pc.n_heads, h = (row0 + r) % pc.n_heads, pos = pc.first_pos + t;
            uint block = Uints(pc.blocks).u[pos / pc.block_tokens - pc.first_pos / pc.block_tokens];
            at = pc.src + uint64_t(block) * pc.block_stride + uint64_t(h) * pc.head_stride +
                 uint64_t(pos % pc.block_tokens) * uint64_t(pc.row_bytes);
        }
        row_base[r] = at;
    }
    barrier();

    for (uint e = lid; e < n; e += wg) {
        uint r = e / hd, i = e % hd;
        uint64_t row = row_base[r];
        if (query) {
            xs[e] = uintBitsToFloat(load_u32(row + uint64_t(4u * i)));
            continue;
        }
        // 0 + v in the reference: a -0 product reads back as +0
        float v = stored_value(row, i, groups, m);
        v = v == 0.0 ? 0.0 : v;
        if (qjl) {
            // + scale gamma S^T z (struct tkv_qjl_tables), accumulated row by row of S as
            // qjl.c cpu_qjl_axpy does, skipped where the weight is 0
            uint size, first, k = group_of(groups, i, size, first), gi = group_index(size);
            uint ng = count_groups(groups);
            uint64_t res = row + uint64_t(2u * ng + hd * pc.bits / 8u + 2u * k + first / 8u);
            precise float weight = m.f[TKV_VK_MATH_QJL_FACTOR + gi] * tkv_fp16_to_float(load_u16(res));
            if (weight != 0.0) {
                uint s = qjl_at(gi) + i - first;
                precise float acc = v;
                for (uint j = 0u; j < size; j++) {
                    float wz = load_bits(res + 2ul, j, 1u) != 0u ? weight : -weight;
                    acc += wz * m.f[s + j * size];
                }
                v = acc;
            }
        }
        xs[e] = v;
    }
    barrier();
    rotate_rows(nr, hd, groups, pc.rotation, (pc.flags & TKV_VK_FLAG_INVERSE) != 0u, pc.math);
    const bool split = (pc.flags & TKV_VK_FLAG_OUTLIER) != 0u;
    if (split && !query) {
        // the outliers, stored unrotated, added after R^T (outlier.c
        // cpu_outlier_finish: R^T acc + plain, each times 1)
        const uint n_o = tkv_outlier_count(hd), ib = tkv_outlier_index_bytes(hd);
        const uint at0 = outlier_offset(groups, hd, pc.bits);
        for (uint it = lid; it < nr * n_o; it += wg) {
            uint r = it / n_o, o = it % n_o;
            uint64_t at = row_base[r] + uint64_t(at0);
            uint i = ib == 1u ? load_u32(at + uint64_t(o)) & 0xffu : load_u16(at + uint64_t(2u * o));
            precise float v = xs[r * hd + i] + tkv_fp16_to_float(load_u16(at + uint64_t(n_o * ib + 2u * o)));
            xs[r * hd + i] = v;
        }
        barrier();
    }
    for (uint e = lid; e < n; e += wg)
        Floats(pc.dst + 4ul * (uint64_t(row0 + e / hd) * pc.dst_stride)).f[e % hd] = xs[e];
    if (query && split) // [R q | q]: the outliers score against q itself
        for (uint e = lid; e < n; e += wg)
            Floats(pc.dst + 4ul * (uint64_t(row0 + e / hd) * pc.dst_stride)).f[hd + e % hd] =
                uintBitsToFloat(load_u32(row_base[e / hd] + uint64_t(4u * (e % hd))));
    if (!query || !qjl)
        return;
    for (uint e = lid; e < n; e += wg) {
        uint r = e / hd, i = e % hd, size, first;
        group_of(groups, i, size, first);
        uint s = qjl_at(group_index(size)) + (i - first) * size;
        float sum = 0.0;
        for (uint j = 0u; j < size; j++)
            sum += m.f[s + j] * xs[r * hd + first + j];
        Floats(pc.dst + 4ul * (uint64_t(row0 + r) * pc.dst_stride)).f[hd + i] = sum;
    }
}
