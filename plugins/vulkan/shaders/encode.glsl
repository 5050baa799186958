/* SPDX-License-Identifier: MIT */
// The encoder: float rows in, stored rows out, byte for byte what
// plugins/cpu writes (rows.c, qjl.c, outlier.c), by one workgroup on rows
// it holds in shared memory. quantize.comp runs it for an append's rows;
// decode.comp's append variant (TKV_APPEND) for the new tokens' K and V
// rows in the workgroups whose chunks hold them (ABI 2.7's
// append_attention). The sums the reference takes in one sequential loop
// stay in its order: where it keeps 8 running sums (a group's norm, the sum
// of squared centroids) each is one invocation's, then the same fixed tree
// adds them; the element-wise steps and the rotation run across the
// workgroup. Rows are byte-addressed and packed back to back, so every byte
// is written with an 8-bit store.
//
// The including shader defines ENC_ELEMS (the most values of the rows of
// one call: rows x head_dim), ENC_ROWS (the most rows of one call), ENC_QJL (1: the QJL residual stage is
// compiled in) and `shared float xs[]` of at least ENC_ELEMS (rotate.glsl's
// rows), includes exact.glsl and rotate.glsl first, fills enc_base with
// each row's address in the pool and calls encode_rows from uniform control
// flow (it contains barriers; it begins with one after its first writes to
// shared memory, and ends without one).

layout(buffer_reference, std430, buffer_reference_align = 1) writeonly buffer Bytes { uint8_t b[]; };
layout(buffer_reference, std430, buffer_reference_align = 4) readonly buffer RFloats { float f[]; };
layout(buffer_reference, std430, buffer_reference_align = 1) readonly buffer RBytes { uint8_t b[]; };

// Its scratch: its own arrays, or (ENC_ALIASED) arrays of the includer
// that are free while it runs, named by the includer's defines of
// enc_xin, enc_ids, enc_norms, enc_aux, enc_omask, ENC_CSQ(i),
// ENC_PART_GET(i) and ENC_PART_SET(i, v) (decode.comp: its scratch adds
// nothing but enc_nonfinite and enc_base to the shader's shared memory).
#ifndef ENC_ALIASED
shared float enc_xin[ENC_ELEMS];            // the sanitized input (QJL: its residual stage starts over)
shared uint enc_ids[ENC_ELEMS];             // codebook indices, then QJL sign bits; outlier flags
shared float enc_csq[ENC_ELEMS];            // the squared centroid of each index
shared float enc_norms[ENC_ELEMS / 8u];     // per (row, group) or (row, q8_0 block)
shared float enc_aux[ENC_ELEMS / 8u];       // 1/d of a q8_0 block; s_hat, then "has a residual"
shared uint enc_omask[ENC_ELEMS / 8u];      // outlier-split: a bit per element, ceil(head_dim / 32) words a row
// 8 running sums per (row, group) (SUM_T: exact.glsl)
shared SUM_T enc_part[ENC_ELEMS];
#define ENC_CSQ(i) enc_csq[i]
#define ENC_PART_GET(i) enc_part[i]
#define ENC_PART_SET(i, v) enc_part[i] = (v)
#endif
shared uint enc_nonfinite;
shared uint64_t enc_base[ENC_ROWS];         // pool address of each row (the caller's)

// One call: nr rows of hd elements (src_elem: 0 f32, 1 f16, 2 bf16, the
// 16-bit ones read as bytes and widened as the core and convert.comp widen
// them), the first at src and the others back to back at src1
// (quantize.comp: f32 rows, src + hd floats; decode.comp: a K row and a V
// row of one format side by side), stored with the format (encoding,
// bits, rotation, flags: TKV_VK_FLAG_QJL, _CORRECTED, _OUTLIER, and the
// measurement stop in bits 24..27) at enc_base[r].
struct EncArgs {
    uint64_t src;
    uint64_t src1;
    uint64_t math;
    uint64_t counter;   // uint32: non-finite inputs stored as 0 (0: not counted)
    uvec4 groups;
    uint nr, hd, encoding, bits, rotation, flags, q8_block, src_elem;
};

void store_byte(uint64_t addr, uint v) { Bytes(addr).b[0] = uint8_t(v & 0xffu); }

void store_u16(uint64_t addr, uint v)
{
    store_byte(addr, v);
    store_byte(addr + 1ul, v >> 8);
}

// Byte address of row r of the call.
uint64_t enc_row(uint r) { return enc_base[r]; }

// The reference's sums (turbokv_scalar.h): in double (SUM_T), either in
// order or as TKV_NORM_LANES (8) running sums, one per element index mod 8,
// added as TKV_SUM8 adds them; always the same operations in the same order.
// The TKV_SUM8 of the running sums 8 it .. 8 it + 7:
SUM_T sum8_of_part(uint it)
{
    const uint p = TKV_NORM_LANES * it;
    precise SUM_T total = TKV_SUM8(ENC_PART_GET(p), ENC_PART_GET(p + 1u), ENC_PART_GET(p + 2u), ENC_PART_GET(p + 3u),
                                   ENC_PART_GET(p + 4u), ENC_PART_GET(p + 5u), ENC_PART_GET(p + 6u), ENC_PART_GET(p + 7u));
    return total;
}

// ||x||^2 of a group's elements [at, at + size) of xin, in order (QJL's
// residual stage).
SUM_T square_sum_in_order(uint at, uint size)
{
    precise SUM_T sum = TO_SUM(0.0);
    for (uint i = 0u; i < size; i++) {
        float x = enc_xin[at + i];
        sum += TO_SUM(x) * TO_SUM(x);
    }
    return sum;
}

// First element and size of group k.
uint group_first(uvec4 groups, uint k, out uint size)
{
    uint first = 0u;
    for (uint j = 0u; j < k; j++)
        first += group_size(groups, j);
    size = group_size(groups, k);
    return first;
}

// Work item it of the running sums: (row, group) rk = it / 8 and the lane
// l = it % 8, which sums the elements l, l + 8, .. of the group in order
// (the reference's sq[i % 8] +=, one lane per invocation).
uint lane_item(uvec4 groups, uint it, uint ng, out uint r, out uint first, out uint size)
{
    uint rk = it >> 3; // it / TKV_NORM_LANES
    r = rk / ng;
    first = group_first(groups, rk % ng, size);
    return rk;
}

// Stages h and 2 h (those below 64; stage 64 is the last pass's) of the
// WHT's butterflies (rotate.glsl's: the same operations on the same
// elements, stage after stage), the 4 elements j, j + h, j + 2 h, j + 3 h
// of a row an invocation (j a multiple of 4 h plus o < h). A pair (a, a + s)
// is one where s is below the size of a's group: groups are aligned to
// their size, so a + s is in it; elements past head_dim belong to no group.
void wht_radix4(uint nr, uint hd, uvec4 groups, uint h)
{
    const uint lid = gl_LocalInvocationIndex, wg = gl_WorkGroupSize.x;
    const uint per_row = (hd + 4u * h - 1u) / (4u * h) * h;
    for (uint p = lid; p < nr * per_row; p += wg) {
        uint row = p / per_row, q = p - row * per_row, j0 = (q / h) * 4u * h + q % h, at = row * hd + j0;
        uint s0, s2, first;
        group_of(groups, j0, s0, first);
        group_of(groups, j0 + 2u * h, s2, first);
        bool low = h < s0, high = h < s2, wide = 2u * h < s0 && 2u * h < 64u;
        if (!low && !high)
            continue;
        // low: j0 + h is in j0's group; high: j0 + 3 h in j0 + 2 h's; wide:
        // all four in j0's group
        precise float x0 = xs[at], x1 = low ? xs[at + h] : 0.0;
        precise float x2 = high ? xs[at + 2u * h] : 0.0, x3 = high ? xs[at + 3u * h] : 0.0;
        if (low) {
            precise float sum = x0 + x1, difference = x0 - x1;
            x0 = sum;
            x1 = difference;
        }
        if (high) {
            precise float sum = x2 + x3, difference = x2 - x3;
            x2 = sum;
            x3 = difference;
        }
        if (wide) {
            precise float s02 = x0 + x2, d02 = x0 - x2, s13 = x1 + x3, d13 = x1 - x3;
            x0 = s02;
            x2 = d02;
            x1 = s13;
            x3 = d13;
        }
        if (low) {
            xs[at] = x0;
            xs[at + h] = x1;
        }
        if (high) {
            xs[at + 2u * h] = x2;
            xs[at + 3u * h] = x3;
        }
    }
    barrier();
}

// Stores the bit streams of each row, `bits` bits per element from ids:
// group k's bytes follow its fp16 word at region + 2k + first*bits/8, so
// stream byte m lands at region + 2(k + 1) + m. Group boundaries fall on
// byte boundaries: a byte never straddles two groups.
void store_streams(EncArgs ea, uint nr, uint bits, uint64_t region)
{
    uint hd = ea.hd, n_bytes = hd * bits / 8u;
    for (uint b = gl_LocalInvocationIndex; b < nr * n_bytes; b += gl_WorkGroupSize.x) {
        uint r = b / n_bytes, m = b % n_bytes, i0 = 8u * m / bits, size, first;
        uint k = group_of(ea.groups, i0, size, first);
        uint acc = 0u;
        for (uint i = i0; tkv_index_bit(i, bits) < 8u * m + 8u; i++)
            acc |= enc_ids[r * hd + i] << (tkv_index_bit(i, bits) - tkv_index_bit(i0, bits));
        acc >>= 8u * m - tkv_index_bit(i0, bits);
        store_byte(enc_row(r) + region + uint64_t(2u * (k + 1u) + m), acc);
    }
}

// Measurement only (TURBO_VK_QUANTIZE_STOP, quantize.c): the turbo path
// leaves after phase n of flags bits 24..27, its output incomplete.
#define TKV_VK_QUANTIZE_STOP_SHIFT 24u
bool stop_after(EncArgs ea, uint phase) { return ((ea.flags >> TKV_VK_QUANTIZE_STOP_SHIFT) & 15u) == phase; }

// Element e of the call's rows, as a float.
float enc_input(EncArgs ea, uint e)
{
    const uint es = ea.src_elem == 0u ? 4u : 2u;
    const uint64_t at = e < ea.hd ? ea.src + uint64_t(e * es) : ea.src1 + uint64_t((e - ea.hd) * es);
    if (ea.src_elem == 0u)
        return RFloats(at).f[0];
    RBytes p = RBytes(at);
    const uint h = uint(p.b[0]) | (uint(p.b[1]) << 8);
    return ea.src_elem == 2u ? tkv_bf16_to_float(h) : tkv_fp16_to_float(h);
}

void encode_rows(EncArgs ea)
{
    const uint lid = gl_LocalInvocationIndex, wg = gl_WorkGroupSize.x, hd = ea.hd, nr = ea.nr, n = nr * hd;
    const uvec4 groups = ea.groups;
    RFloats m = RFloats(ea.math);

    // Non-finite values are stored as 0 and counted (turbokv_format.h);
    // the count goes to the counter where the host asks for it.
    if (lid == 0u)
        enc_nonfinite = 0u;
    const uint words = (hd + 31u) / 32u;
    for (uint w = lid; w < nr * words; w += wg)
        enc_omask[w] = 0u;
    barrier();
    uint bad = 0u;
    for (uint e = lid; e < n; e += wg) {
        float x = enc_input(ea, e);
        bool finite = (floatBitsToUint(x) & 0x7f800000u) != 0x7f800000u;
        xs[e] = enc_xin[e] = finite ? x : 0.0;
        bad += finite ? 0u : 1u;
    }
    if (bad != 0u)
        atomicAdd(enc_nonfinite, bad);
    barrier();
    if (lid == 0u && enc_nonfinite != 0u && ea.counter != 0ul)
        atomicAdd(Uints(ea.counter).u[0], enc_nonfinite);

    if (ea.encoding == TKV_VK_ENC_F32) {
        for (uint e = lid; e < n; e += wg) {
            uint64_t a = enc_row(e / hd) + uint64_t(4u * (e % hd));
            uint u = floatBitsToUint(xs[e]);
            store_u16(a, u);
            store_u16(a + 2ul, u >> 16);
        }
        return;
    }
    if (ea.encoding == TKV_VK_ENC_F16) {
        for (uint e = lid; e < n; e += wg)
            store_u16(enc_row(e / hd) + uint64_t(2u * (e % hd)), tkv_fp16_saturated(xs[e]));
        return;
    }
    if (ea.encoding == TKV_VK_ENC_Q8_0) {
        // llama.cpp's convention (rows.c q8_0_encode): d = amax / 127, then
        // q = roundf(x * (1/d)) with the float d, not its fp16 rounding
        uint qb = ea.q8_block, nb = (hd + qb - 1u) / qb;
        for (uint it = lid; it < nr * nb; it += wg) {
            uint r = it / nb, first = (it % nb) * qb, len = min(qb, hd - first);
            float amax = 0.0;
            for (uint i = 0u; i < len; i++)
                amax = max(amax, abs(xs[r * hd + first + i]));
            float d = div_rn(amax, TKV_Q8_0_DIVISOR);
            enc_aux[it] = tkv_q8_0_invertible(d) ? div_rn(1.0, d) : 0.0;
            store_u16(enc_row(r) + uint64_t((it % nb) * (qb + 2u)), tkv_fp16_saturated(d));
        }
        barrier();
        for (uint e = lid; e < n; e += wg) {
            uint r = e / hd, i = e % hd, blk = i / qb;
            int q = tkv_round_half_away(tkv_q8_0_product(xs[e], enc_aux[r * nb + blk]));
            store_byte(enc_row(r) + uint64_t(blk * (qb + 2u) + 2u + i % qb), uint(q));
        }
        return;
    }

    // Outlier-split (outlier.c cpu_outlier_split): the n_o values of
    // largest |x|, ties to the lower index (tkv_outlier_select), stored as
    // fp16 after the turbo row in ascending index order and zeroed for the
    // turbo part. Element i of a row is one of them when fewer than n_o
    // elements come before it in the order (|x| descending, index
    // ascending; tkv_outlier_before): |x| compared as the bits of the
    // sanitized (finite) values, exact whatever the device does with
    // subnormals; most elements stop counting after a few (checked every 8).
    // Its place: the outliers below its index, counted in the row's bit mask.
    const uint bits = ea.bits, ng = count_groups(groups);
    if ((ea.flags & TKV_VK_FLAG_OUTLIER) != 0u) {
        const uint n_o = tkv_outlier_count(hd), ib = tkv_outlier_index_bytes(hd);
        const uint64_t at0 = uint64_t(outlier_offset(groups, hd, bits));
        for (uint e = lid; e < n; e += wg) {
            uint row = e - e % hd, i = e % hd, a = tkv_abs_bits(enc_xin[e]), before = 0u;
            for (uint j0 = 0u; j0 < hd && before < n_o; j0 += 8u)
                [[unroll]] for (uint jj = 0u; jj < 8u; jj++) {
                    uint j = j0 + jj;
                    before += tkv_outlier_before(tkv_abs_bits(enc_xin[row + j]), j, a, i) ? 1u : 0u;
                }
            enc_ids[e] = before < n_o ? 1u : 0u;
            if (before < n_o)
                atomicOr(enc_omask[(e / hd) * words + i / 32u], 1u << (i % 32u));
        }
        barrier();
        for (uint e = lid; e < n; e += wg) {
            if (enc_ids[e] == 0u)
                continue;
            uint r = e / hd, i = e % hd, at = bitCount(enc_omask[r * words + i / 32u] & ((1u << (i % 32u)) - 1u));
            for (uint w = 0u; w < i / 32u; w++)
                at += bitCount(enc_omask[r * words + w]);
            uint64_t o = enc_row(r) + at0;
            if (ib == 1u)
                store_byte(o + uint64_t(at), i);
            else
                store_u16(o + uint64_t(2u * at), i);
            store_u16(o + uint64_t(n_o * ib + 2u * at), tkv_fp16_saturated(enc_xin[e]));
            xs[e] = enc_xin[e] = 0.0; // only this invocation reads element e in this pass
        }
        barrier();
    }
    if (stop_after(ea, 1u))
        return;

    // Turbo (rows.c turbo_encode_group): per group n = ||x|| (8 lanes),
    // u = x / n, y = R u, idx = count of boundaries <= y_i, scale n or
    // n / ||c[idx]|| (8 lanes).
    for (uint it = lid; it < nr * ng * TKV_NORM_LANES; it += wg) {
        uint r, first, size;
        lane_item(groups, it, ng, r, first, size);
        precise SUM_T lane = TO_SUM(0.0);
        for (uint i = it & (TKV_NORM_LANES - 1u); i < size; i += TKV_NORM_LANES) {
            float x = enc_xin[r * hd + first + i];
            lane += TO_SUM(x) * TO_SUM(x);
        }
        ENC_PART_SET(it, lane);
    }
    barrier();
    if (stop_after(ea, 2u))
        return;
    // u = x / n, times WHT's first signs (the rotation's first pass); every
    // invocation takes its group's n from the running sums itself
    const bool wht = ea.rotation == TKV_VK_ROT_WHT;
    for (uint e = lid; e < n; e += wg) {
        uint i = e % hd, size, first, k = group_of(groups, i, size, first), rk = (e / hd) * ng + k;
        float norm = sqrt_to_float(sum8_of_part(rk));
        if (i == first)
            enc_norms[rk] = norm;
        float u = norm > 0.0 ? div_rn(xs[e], norm) : 0.0;
        if (wht)
            u = u * m.f[sign_at(group_index(size), false) + i - first];
        xs[e] = u;
    }
    barrier();
    if (stop_after(ea, 3u))
        return;
    if (wht) {
        // stages 1-2, 4-8 and 16-32 here, 64 in the pass below
        wht_radix4(nr, hd, groups, 1u);
        wht_radix4(nr, hd, groups, 4u);
        wht_radix4(nr, hd, groups, 16u);
    } else {
        rotate_rows(nr, hd, groups, ea.rotation, false, ea.math);
    }
    if (stop_after(ea, 4u))
        return;
    // WHT's stage 64 (each element of a pair computed by its own invocation
    // from both, so xs is only read here) and last pass (1/sqrt(g), the
    // second signs), then the boundaries, and the index's squared centroid
    for (uint e = lid; e < n; e += wg) {
        uint i = e % hd, size, first, k = group_of(groups, i, size, first), gi = group_index(size);
        float y = xs[e];
        if (wht) {
            if (64u < size) {
                uint lo = e - i + (i & ~64u);
                precise float a = xs[lo], b = xs[lo + 64u];
                precise float sum = a + b, difference = a - b;
                y = (i & 64u) != 0u ? difference : sum;
            }
            precise float scaled = y * m.f[TKV_VK_MATH_INV_SQRT + gi];
            y = scaled * m.f[sign_at(gi, true) + i - first];
        }
        uint idx = 0u;
        if (enc_norms[(e / hd) * ng + k] > 0.0) {
            uint cb = codebook_at(gi, bits);
            for (uint l = 0u; l + 1u < (1u << bits); l++)
                idx += tkv_centroid_step(y, m.f[cb + 16u + l]); // the boundaries
            ENC_CSQ(e) = m.f[cb + 32u + idx];
        }
        enc_ids[e] = idx;
    }
    barrier();
    if (stop_after(ea, 5u))
        return;
    for (uint it = lid; it < nr * ng * TKV_NORM_LANES; it += wg) {
        uint r, first, size, rk = lane_item(groups, it, ng, r, first, size);
        precise SUM_T lane = TO_SUM(0.0);
        if (enc_norms[rk] > 0.0)
            for (uint i = it & (TKV_NORM_LANES - 1u); i < size; i += TKV_NORM_LANES)
                lane += TO_SUM(ENC_CSQ(r * hd + first + i));
        ENC_PART_SET(it, lane);
    }
    barrier();
    if (stop_after(ea, 6u))
        return;
    // the scales on the last invocations, the streams on the first
    for (uint it = wg - 1u - lid; it < nr * ng; it += wg) {
        uint r = it / ng, k = it % ng, size, first = group_first(groups, k, size);
        float norm = enc_norms[it], scale = 0.0;
        if (norm > 0.0) {
            SUM_T csq = sum8_of_part(it);
            scale = norm;
            if ((ea.flags & TKV_VK_FLAG_CORRECTED) != 0u && csq > TO_SUM(0.0))
                scale = div_sqrt_to_float(norm, csq);
        }
        uint h16 = tkv_fp16_saturated(scale);
        enc_aux[it] = tkv_fp16_to_float(h16); // s_hat: the residual is taken against the stored scale
        store_u16(enc_row(r) + uint64_t(2u * k + first * bits / 8u), h16);
    }
    store_streams(ea, nr, bits, 0ul);
#if ENC_QJL
    if ((ea.flags & TKV_VK_FLAG_QJL) == 0u)
        return;

    // QJL residual (qjl.c encode_residual), which recomputes R x with its own
    // norm, summed in order: r = n y - s_hat c[idx], gamma = ||r|| (in
    // order), z_i = [sum_j S_ij r_j > 0] (4 lanes).
    barrier();
    for (uint it = lid; it < nr * ng; it += wg) {
        uint r = it / ng, k = it % ng, size, first = group_first(groups, k, size);
        enc_norms[it] = sqrt_to_float(square_sum_in_order(r * hd + first, size));
    }
    barrier();
    for (uint e = lid; e < n; e += wg) {
        uint size, first, k = group_of(groups, e % hd, size, first);
        float norm = enc_norms[(e / hd) * ng + k];
        xs[e] = norm > 0.0 ? div_rn(enc_xin[e], norm) : 0.0;
    }
    barrier();
    rotate_rows(nr, hd, groups, ea.rotation, false, ea.math);
    for (uint e = lid; e < n; e += wg) {
        uint size, first, k = group_of(groups, e % hd, size, first), it = (e / hd) * ng + k;
        float c = m.f[codebook_at(group_index(size), bits) + enc_ids[e]];
        precise float rn = enc_norms[it] * xs[e], rs = enc_aux[it] * c, res = rn - rs;
        xs[e] = res;
    }
    barrier();
    const uint64_t residual_blocks = uint64_t(2u * ng + hd * bits / 8u);
    for (uint it = lid; it < nr * ng; it += wg) {
        uint r = it / ng, k = it % ng, size, first = group_first(groups, k, size);
        precise SUM_T gamma_sq = TO_SUM(0.0);
        for (uint i = 0u; i < size; i++) {
            float x = xs[r * hd + first + i];
            gamma_sq += TO_SUM(x) * TO_SUM(x);
        }
        bool has = enc_norms[it] != 0.0 && gamma_sq != TO_SUM(0.0);
        enc_aux[it] = has ? 1.0 : 0.0;
        store_u16(enc_row(r) + residual_blocks + uint64_t(2u * k + first / 8u),
                  has ? tkv_fp16_saturated(sqrt_to_float(gamma_sq)) : 0u);
    }
    barrier();
    for (uint e = lid; e < n; e += wg) {
        uint size, first, k = group_of(groups, e % hd, size, first), r = e / hd;
        uint z = 0u;
        if (enc_aux[r * ng + k] != 0.0) {
            uint s = qjl_at(group_index(size)) + (e % hd - first) * size, in0 = r * hd + first;
            precise SUM_T lane[TKV_QJL_LANES];
            [[unroll]] for (uint l = 0u; l < TKV_QJL_LANES; l++)
                lane[l] = TO_SUM(0.0);
            for (uint j = 0u; j < size; j += TKV_QJL_LANES)
                [[unroll]] for (uint l = 0u; l < TKV_QJL_LANES; l++)
                    lane[l] += TO_SUM(m.f[s + j + l]) * TO_SUM(xs[in0 + j + l]);
            precise SUM_T projection = TKV_SUM4(lane[0], lane[1], lane[2], lane[3]);
            z = projection > TO_SUM(0.0) ? 1u : 0u;
        }
        enc_ids[e] = z;
    }
    barrier();
    store_streams(ea, nr, 1u, residual_blocks);
#endif
}
