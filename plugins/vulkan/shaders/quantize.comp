/* SPDX-License-Identifier: MIT */
#version 460
// quantize_append: float rows in, stored rows out, byte for byte what
// plugins/cpu writes (rows.c, qjl.c, outlier.c). One workgroup holds rows_per_wg rows
// in shared memory; the steps the reference takes in one sequential loop
// (a norm, a sum of squared centroids, a projection) stay sequential, one
// invocation each, in the reference's order; the element-wise steps and the
// rotation run across the workgroup. Rows are byte-addressed and packed back
// to back, so every byte is written with an 8-bit store. Each row's address
// in the pool (its block looked up in the block table) is computed once, at
// the start, into row_base.
#extension GL_GOOGLE_include_directive : require
#extension GL_EXT_shader_8bit_storage : require
#extension GL_EXT_control_flow_attributes : require

#include "common.glsl"

layout(buffer_reference, std430, buffer_reference_align = 1) writeonly buffer Bytes { uint8_t b[]; };
layout(push_constant, std430) uniform Push { TKV_VK_QUANTIZE_PUSH } pc;

shared float xs[TKV_VK_ROWS_ELEMS];          // the rows: input, unit, rotated, residual
shared float xin[TKV_VK_ROWS_ELEMS];         // the sanitized input (QJL: its residual stage starts over)
shared uint ids[TKV_VK_ROWS_ELEMS];          // codebook indices, then QJL sign bits
shared float norms[TKV_VK_ROWS_ELEMS / 8u];  // per (row, group) or (row, q8_0 block)
shared float aux[TKV_VK_ROWS_ELEMS / 8u];    // 1/d of a q8_0 block; s_hat, then "has a residual"
shared uint nonfinite;
shared uint64_t row_base[TKV_VK_ROWS_ELEMS / 8u]; // pool address of each row of the workgroup

#include "exact.glsl"
#include "rotate.glsl"

void store_byte(uint64_t addr, uint v) { Bytes(addr).b[0] = uint8_t(v & 0xffu); }

void store_u16(uint64_t addr, uint v)
{
    store_byte(addr, v);
    store_byte(addr + 1ul, v >> 8);
}

// Byte address of row r of this workgroup.
uint64_t row_address(uint r) { return row_base[r]; }

// Fills row_base for the workgroup's rows, which run token-major,
// head-minor from global row row0: token t, head h is position first_pos +
// t of the sequence, in the block the table slice gives.
void locate_rows(uint row0, uint nr)
{
    Uints blocks = Uints(pc.blocks);
    const uint bt = pc.block_tokens, block0 = pc.first_pos / bt;
    for (uint r = gl_LocalInvocationIndex; r < nr; r += gl_WorkGroupSize.x) {
        uint t = (row0 + r) / pc.n_heads, h = (row0 + r) % pc.n_heads, pos = pc.first_pos + t;
        row_base[r] = pc.pool + uint64_t(blocks.u[pos / bt - block0]) * pc.block_stride +
                      uint64_t(h) * pc.head_stride + uint64_t(pos % bt) * uint64_t(pc.row_bytes);
    }
}

// The reference's sums (plugins/cpu): in double (SUM_T), either in order
// or as 8 running sums, one per element index mod 8, added as cpu_sum8 adds
// them; always the same operations in the same order.
SUM_T sum8(SUM_T s[8])
{
    precise SUM_T total = ((s[0] + s[4]) + (s[2] + s[6])) + ((s[1] + s[5]) + (s[3] + s[7]));
    return total;
}

// ||x||^2 of a group's elements [at, at + size) of xin: in order, or in 8
// lanes.
SUM_T square_sum(uint at, uint size, bool lanes)
{
    precise SUM_T lane[8];
    [[unroll]] for (uint k = 0u; k < 8u; k++)
        lane[k] = TO_SUM(0.0);
    for (uint i = 0u; i < size; i += 8u)
        [[unroll]] for (uint k = 0u; k < 8u; k++) {
            float x = xin[at + i + k];
            if (lanes)
                lane[k] += TO_SUM(x) * TO_SUM(x);
            else
                lane[0] += TO_SUM(x) * TO_SUM(x);
        }
    return lanes ? sum8(lane) : lane[0];
}

// roundf: half away from zero (v - trunc(v) is exact for |v| < 2^23).
float round_half_away(float v)
{
    precise float t = trunc(v), frac = v - t;
    return abs(frac) >= 0.5 ? t + sign(v) : t;
}

// Stores the bit streams of each row, `bits` bits per element from ids:
// group k's bytes follow its fp16 word at region + 2k + first*bits/8, so
// stream byte m lands at region + 2(k + 1) + m. Group boundaries fall on
// byte boundaries: a byte never straddles two groups.
void store_streams(uint nr, uint bits, uint64_t region)
{
    uint hd = pc.head_dim, n_bytes = hd * bits / 8u;
    for (uint b = gl_LocalInvocationIndex; b < nr * n_bytes; b += gl_WorkGroupSize.x) {
        uint r = b / n_bytes, m = b % n_bytes, i0 = 8u * m / bits, size, first;
        uint k = group_of(uvec4(pc.groups[0], pc.groups[1], pc.groups[2], pc.groups[3]), i0, size, first);
        uint acc = 0u;
        for (uint i = i0; i * bits < 8u * m + 8u; i++)
            acc |= ids[r * hd + i] << (i * bits - i0 * bits);
        acc >>= 8u * m - i0 * bits;
        store_byte(row_address(r) + region + uint64_t(2u * (k + 1u) + m), acc);
    }
}

void main()
{
    const uint lid = gl_LocalInvocationIndex, wg = gl_WorkGroupSize.x, hd = pc.head_dim;
    const uvec4 groups = uvec4(pc.groups[0], pc.groups[1], pc.groups[2], pc.groups[3]);
    uint total = pc.n_tokens * pc.n_heads, row0 = flat_workgroup() * pc.rows_per_wg;
    if (row0 >= total)
        return;
    uint nr = min(pc.rows_per_wg, total - row0), n = nr * hd;
    Floats src = Floats(pc.src), m = Floats(pc.math);

    // Non-finite values are stored as 0 and counted (turbokv_format.h).
    if (lid == 0u)
        nonfinite = 0u;
    locate_rows(row0, nr);
    barrier();
    uint bad = 0u;
    for (uint e = lid; e < n; e += wg) {
        float x = src.f[row0 * hd + e];
        bool finite = (floatBitsToUint(x) & 0x7f800000u) != 0x7f800000u;
        xs[e] = xin[e] = finite ? x : 0.0;
        bad += finite ? 0u : 1u;
    }
    if (bad != 0u)
        atomicAdd(nonfinite, bad);
    barrier();
    if (lid == 0u && nonfinite != 0u)
        atomicAdd(Uints(pc.counter).u[0], nonfinite);

    if (pc.encoding == TKV_VK_ENC_F32) {
        for (uint e = lid; e < n; e += wg) {
            uint64_t a = row_address(e / hd) + uint64_t(4u * (e % hd));
            uint u = floatBitsToUint(xs[e]);
            store_u16(a, u);
            store_u16(a + 2ul, u >> 16);
        }
        return;
    }
    if (pc.encoding == TKV_VK_ENC_F16) {
        for (uint e = lid; e < n; e += wg)
            store_u16(row_address(e / hd) + uint64_t(2u * (e % hd)), fp16_saturated(xs[e]));
        return;
    }
    if (pc.encoding == TKV_VK_ENC_Q8_0) {
        // llama.cpp's convention (rows.c q8_0_encode): d = amax / 127, then
        // q = roundf(x * (1/d)) with the float d, not its fp16 rounding
        uint qb = pc.q8_block, nb = (hd + qb - 1u) / qb;
        for (uint it = lid; it < nr * nb; it += wg) {
            uint r = it / nb, first = (it % nb) * qb, len = min(qb, hd - first);
            float amax = 0.0;
            for (uint i = 0u; i < len; i++)
                amax = max(amax, abs(xs[r * hd + first + i]));
            float d = div_rn(amax, 127.0);
            aux[it] = d >= uintBitsToFloat(0x00800000u) ? div_rn(1.0, d) : 0.0; // FLT_MIN
            store_u16(row_address(r) + uint64_t((it % nb) * (qb + 2u)), fp16_saturated(d));
        }
        barrier();
        for (uint e = lid; e < n; e += wg) {
            uint r = e / hd, i = e % hd, blk = i / qb;
            precise float v = xs[e] * aux[r * nb + blk];
            int q = int(round_half_away(v));
            store_byte(row_address(r) + uint64_t(blk * (qb + 2u) + 2u + i % qb), uint(q));
        }
        return;
    }

    // Outlier-split (outlier.c cpu_outlier_split): the n_o values of
    // largest |x|, ties to the lower index (tkv_outlier_select), stored as
    // fp16 after the turbo row in ascending index order and zeroed for the
    // turbo part. Element i of a row is one of them when fewer than n_o
    // elements come before it in the order (|x| descending, index
    // ascending): |x| compared as the bits of the sanitized (finite)
    // values, exact whatever the device does with subnormals; most elements
    // stop counting after a few. Its place: the outliers below its index.
    const uint bits = pc.bits, ng = count_groups(groups);
    if ((pc.flags & TKV_VK_FLAG_OUTLIER) != 0u) {
        const uint n_o = outlier_count(hd), ib = outlier_index_bytes(hd);
        const uint64_t at0 = uint64_t(outlier_offset(groups, hd, bits));
        for (uint e = lid; e < n; e += wg) {
            uint row = e - e % hd, i = e % hd, a = floatBitsToUint(xin[e]) & 0x7fffffffu, before = 0u;
            for (uint j = 0u; j < hd && before < n_o; j++) {
                uint b = floatBitsToUint(xin[row + j]) & 0x7fffffffu;
                before += b > a || (b == a && j < i) ? 1u : 0u;
            }
            ids[e] = before < n_o ? 1u : 0u;
        }
        barrier();
        for (uint e = lid; e < n; e += wg) {
            if (ids[e] == 0u)
                continue;
            uint r = e / hd, i = e % hd, at = 0u;
            for (uint j = 0u; j < i; j++)
                at += ids[r * hd + j];
            uint64_t o = row_address(r) + at0;
            if (ib == 1u)
                store_byte(o + uint64_t(at), i);
            else
                store_u16(o + uint64_t(2u * at), i);
            store_u16(o + uint64_t(n_o * ib + 2u * at), fp16_saturated(xin[e]));
        }
        barrier();
        for (uint e = lid; e < n; e += wg)
            if (ids[e] != 0u)
                xs[e] = xin[e] = 0.0;
        barrier();
    }

    // Turbo (rows.c turbo_encode_group): per group n = ||x|| (8 lanes),
    // u = x / n, y = R u, idx = count of boundaries <= y_i, scale n or
    // n / ||c[idx]|| (8 lanes).
    for (uint it = lid; it < nr * ng; it += wg) {
        uint r = it / ng, k = it % ng, size = group_size(groups, k), first = 0u;
        for (uint j = 0u; j < k; j++)
            first += group_size(groups, j);
        norms[it] = sqrt_to_float(square_sum(r * hd + first, size, true));
    }
    barrier();
    for (uint e = lid; e < n; e += wg) {
        uint size, first, k = group_of(groups, e % hd, size, first);
        float norm = norms[(e / hd) * ng + k];
        xs[e] = norm > 0.0 ? div_rn(xs[e], norm) : 0.0;
    }
    barrier();
    rotate_rows(nr, hd, groups, pc.rotation, false, pc.math);
    for (uint e = lid; e < n; e += wg) {
        uint size, first, k = group_of(groups, e % hd, size, first);
        uint idx = 0u;
        if (norms[(e / hd) * ng + k] > 0.0) {
            uint cb = codebook_at(group_index(size), bits) + 16u; // the boundaries
            for (uint l = 0u; l + 1u < (1u << bits); l++)
                idx += xs[e] >= m.f[cb + l] ? 1u : 0u;
        }
        ids[e] = idx;
    }
    barrier();
    for (uint it = lid; it < nr * ng; it += wg) {
        uint r = it / ng, k = it % ng, size = group_size(groups, k), first = 0u;
        for (uint j = 0u; j < k; j++)
            first += group_size(groups, j);
        float norm = norms[it], scale = 0.0;
        if (norm > 0.0) {
            uint csq_at = codebook_at(group_index(size), bits) + 32u;
            precise SUM_T lane[8];
            [[unroll]] for (uint l = 0u; l < 8u; l++)
                lane[l] = TO_SUM(0.0);
            for (uint i = 0u; i < size; i += 8u)
                [[unroll]] for (uint l = 0u; l < 8u; l++)
                    lane[l] += TO_SUM(m.f[csq_at + ids[r * hd + first + i + l]]);
            SUM_T csq = sum8(lane);
            scale = norm;
            if ((pc.flags & TKV_VK_FLAG_CORRECTED) != 0u && csq > TO_SUM(0.0))
                scale = div_sqrt_to_float(norm, csq);
        }
        uint h16 = fp16_saturated(scale);
        aux[it] = fp16_to_float(h16); // s_hat: the residual is taken against the stored scale
        store_u16(row_address(r) + uint64_t(2u * k + first * bits / 8u), h16);
    }
    store_streams(nr, bits, 0ul);
    if ((pc.flags & TKV_VK_FLAG_QJL) == 0u)
        return;

    // QJL residual (qjl.c encode_residual), which recomputes R x with its own
    // norm, summed in order: r = n y - s_hat c[idx], gamma = ||r|| (in
    // order), z_i = [sum_j S_ij r_j > 0] (4 lanes).
    barrier();
    for (uint it = lid; it < nr * ng; it += wg) {
        uint r = it / ng, k = it % ng, size = group_size(groups, k), first = 0u;
        for (uint j = 0u; j < k; j++)
            first += group_size(groups, j);
        norms[it] = sqrt_to_float(square_sum(r * hd + first, size, false));
    }
    barrier();
    for (uint e = lid; e < n; e += wg) {
        uint size, first, k = group_of(groups, e % hd, size, first);
        float norm = norms[(e / hd) * ng + k];
        xs[e] = norm > 0.0 ? div_rn(xin[e], norm) : 0.0;
    }
    barrier();
    rotate_rows(nr, hd, groups, pc.rotation, false, pc.math);
    for (uint e = lid; e < n; e += wg) {
        uint size, first, k = group_of(groups, e % hd, size, first), it = (e / hd) * ng + k;
        float c = m.f[codebook_at(group_index(size), bits) + ids[e]];
        precise float rn = norms[it] * xs[e], rs = aux[it] * c, res = rn - rs;
        xs[e] = res;
    }
    barrier();
    const uint64_t residual_blocks = uint64_t(2u * ng + hd * bits / 8u);
    for (uint it = lid; it < nr * ng; it += wg) {
        uint r = it / ng, k = it % ng, size = group_size(groups, k), first = 0u;
        for (uint j = 0u; j < k; j++)
            first += group_size(groups, j);
        precise SUM_T gamma_sq = TO_SUM(0.0);
        for (uint i = 0u; i < size; i++) {
            float x = xs[r * hd + first + i];
            gamma_sq += TO_SUM(x) * TO_SUM(x);
        }
        bool has = norms[it] != 0.0 && gamma_sq != TO_SUM(0.0);
        aux[it] = has ? 1.0 : 0.0;
        store_u16(row_address(r) + residual_blocks + uint64_t(2u * k + first / 8u),
                  has ? fp16_saturated(sqrt_to_float(gamma_sq)) : 0u);
    }
    barrier();
    for (uint e = lid; e < n; e += wg) {
        uint size, first, k = group_of(groups, e % hd, size, first), r = e / hd;
        uint z = 0u;
        if (aux[r * ng + k] != 0.0) {
            uint s = qjl_at(group_index(size)) + (e % hd - first) * size, in0 = r * hd + first;
            precise SUM_T lane[4];
            [[unroll]] for (uint l = 0u; l < 4u; l++)
                lane[l] = TO_SUM(0.0);
            for (uint j = 0u; j < size; j += 4u)
                [[unroll]] for (uint l = 0u; l < 4u; l++)
                    lane[l] += TO_SUM(m.f[s + j + l]) * TO_SUM(xs[in0 + j + l]);
            precise SUM_T projection = (lane[0] + lane[1]) + (lane[2] + lane[3]);
            z = projection > TO_SUM(0.0) ? 1u : 0u;
        }
        ids[e] = z;
    }
    barrier();
    store_streams(nr, 1u, residual_blocks);
}
