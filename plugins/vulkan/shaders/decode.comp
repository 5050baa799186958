/* SPDX-License-Identifier: MIT */
#version 460
// Decode attention by subgroups: the same partials as attention.comp (one
// per query row, kv head and chunk; merge.comp combines them), computed
// without a workgroup barrier in the loop over the rows.
//
// A workgroup holds NSG = WG / SG subgroups; they share one (unit, kv head)
// and its prepared queries in shared memory, and each takes a chunk of its
// own. A subgroup walks its chunk SG rows at a time:
//   scores    lane r scores row base + r for all QT query rows of the unit,
//             reading the packed K row straight from the pool (32 values
//             at a time into registers; the centroids from shared memory,
//             the queries as broadcast vec4 loads);
//   softmax   per query row: the batch's max (subgroupMax) and the running
//             max of every row in chunk order (subgroupInclusiveMax), as a
//             sequential pass over the chunk keeps it (Milakov & Gimelshein
//             2018; the same sparse-V rule as attention.comp);
//   values    lane l owns DPL = HEAD_DIM / SG consecutive coordinates and
//             walks the batch's rows that some query row keeps, reading its
//             own bits of each V row and accumulating p * V in the rotated
//             domain for turbo values.
// Each lane's accumulators hold whole coordinates, so the partials are
// written without any reduction across lanes.
//
// The host (attention.c, decode_fits) uses this shader only where its
// assumptions hold: the device's subgroups have exactly SG invocations
// (min = max subgroup size), HEAD_DIM is a multiple of 32 and of SG with DPL
// a power of two, every turbo group holds a multiple of 32 values, keys and
// values are turbo (no QJL part), q8_0 or f16, and the shared arrays fit.
#extension GL_GOOGLE_include_directive : require
#extension GL_KHR_shader_subgroup_basic : require
#extension GL_KHR_shader_subgroup_arithmetic : require
#extension GL_EXT_control_flow_attributes : require

#include "common.glsl"

layout(constant_id = TKV_VK_SPEC_HEAD_DIM) const uint HEAD_DIM = 128u;
layout(constant_id = TKV_VK_SPEC_K_ENC) const uint K_ENC = TKV_VK_ENC_TURBO;
layout(constant_id = TKV_VK_SPEC_K_BITS) const uint K_BITS = 3u;
layout(constant_id = TKV_VK_SPEC_K_ROW_BYTES) const uint K_ROW_BYTES = 50u;
layout(constant_id = TKV_VK_SPEC_V_ENC) const uint V_ENC = TKV_VK_ENC_TURBO;
layout(constant_id = TKV_VK_SPEC_V_BITS) const uint V_BITS = 3u;
layout(constant_id = TKV_VK_SPEC_V_ROW_BYTES) const uint V_ROW_BYTES = 50u;
layout(constant_id = TKV_VK_SPEC_QT) const uint QT = 4u;
layout(constant_id = TKV_VK_SPEC_Q8_BLOCK) const uint Q8_BLOCK = 32u;
layout(constant_id = TKV_VK_SPEC_GROUPS + 0u) const uint GROUPS0 = 128u;
layout(constant_id = TKV_VK_SPEC_GROUPS + 1u) const uint GROUPS1 = 0u;
layout(constant_id = TKV_VK_SPEC_GROUPS + 2u) const uint GROUPS2 = 0u;
layout(constant_id = TKV_VK_SPEC_GROUPS + 3u) const uint GROUPS3 = 0u;
layout(constant_id = TKV_VK_SPEC_DEBUG) const uint DBG = 0u;
layout(constant_id = TKV_VK_SPEC_Q_ROT) const uint Q_ROT = TKV_VK_ROT_NONE;
layout(constant_id = TKV_VK_SPEC_SUBGROUP) const uint SG = 32u;

layout(push_constant, std430) uniform Push { TKV_VK_ATTENTION_PUSH } pc;

struct Unit { TKV_VK_UNIT_MEMBERS };
layout(buffer_reference, std430, buffer_reference_align = 4) readonly buffer Units { Unit u[]; };

const uint WG = gl_WorkGroupSize.x;
const uint NSG = WG / SG;              // subgroups per workgroup, a chunk each
const uint DPL = HEAD_DIM / SG;        // value coordinates per lane
const uint QT4 = (QT + 3u) / 4u;       // vec4s of one element's query rows
const uint SEGS = HEAD_DIM / 32u;      // K segments of 32 values
// the queries as the keys are scored against: raw, or R q prepared by the
// rows shader (turbo keys whose tile does not fit the fused rotation)
const uint Q_STRIDE = HEAD_DIM;
#define NEG_INF uintBitsToFloat(0xff800000u)

shared vec4 qs[HEAD_DIM * QT4];        // [element][query row / 4]
shared float xs[QT * HEAD_DIM];        // the raw queries while Q_ROT rotates them
shared float cent_k[80], cent_v[80];   // codebooks of the group sizes: [gi * 16 + index]
shared vec4 ws[WG * QT4];              // per subgroup lane: its row's weights
shared uvec2 vrow[WG];                 // per subgroup lane: its row's V address
shared uint keep[WG];                  // per subgroup lane: some query row keeps its V

#include "rotate.glsl"

// tanh without overflow for any finite x.
float tanh_stable(float x)
{
    float t = exp(-2.0 * abs(x));
    return sign(x) * ((1.0 - t) / (1.0 + t));
}

// Word k of the byte stream that starts `sh` bits into w[0] (sh < 32).
#define FUNNEL(w, k, sh) (((w)[k] >> (sh)) | (((w)[(k) + 1u] << 1u) << (31u - (sh))))
// n bits at the constant bit position b of the words nw.
#define BITS_AT(nw, b, n)                                                                      \
    ((((b) & 31u) + (n) <= 32u)                                                                \
         ? bitfieldExtract((nw)[(b) >> 5u], int((b) & 31u), int(n))                            \
         : (((nw)[(b) >> 5u] >> ((b) & 31u)) | ((nw)[((b) >> 5u) + 1u] << (32u - ((b) & 31u)))) & \
               ((1u << (n)) - 1u))

// The fp16 at an even byte address, exactly.
float half_at(uint64_t a)
{
    uint w = Words(a & ~uint64_t(3)).w[0];
    return fp16_to_float((w >> (uint(a & 2ul) * 8u)) & 0xffffu);
}

// part[t] += c * q_t[e] for the QT query rows.
void add_products(inout float part[QT], float c, uint e)
{
    [[unroll]] for (uint t4 = 0u; t4 < QT4; t4++) {
        vec4 q = qs[e * QT4 + t4];
        [[unroll]] for (uint i = 0u; i < 4u; i++)
            if (4u * t4 + i < QT)
                part[4u * t4 + i] += c * q[i];
    }
}

// <q_t, k> of the K row at address row for the QT query rows (turbo keys:
// <R q, y_hat> per group times its scale).
void score_row(uint64_t row, out float s[QT])
{
    const uvec4 groups = uvec4(GROUPS0, GROUPS1, GROUPS2, GROUPS3);
    [[unroll]] for (uint t = 0u; t < QT; t++)
        s[t] = 0.0;
    float part[QT];
    float scale = 0.0;
    [[unroll]] for (uint seg = 0u; seg < SEGS; seg++) {
        const uint e0 = 32u * seg;
        uint64_t at;
        uint gi = 0u;
        if (K_ENC == TKV_VK_ENC_TURBO) {
            uint size, first, k = group_of(groups, e0, size, first);
            gi = group_index(size);
            const uint g_at = 2u * k + first * K_BITS / 8u;
            if (e0 == first) {
                [[unroll]] for (uint t = 0u; t < QT; t++)
                    part[t] = 0.0;
                scale = half_at(row + g_at);
            }
            at = row + g_at + 2u + (e0 - first) * K_BITS / 8u;
        } else if (K_ENC == TKV_VK_ENC_Q8_0) {
            [[unroll]] for (uint t = 0u; t < QT; t++)
                part[t] = 0.0;
            const uint b_at = (e0 / Q8_BLOCK) * (Q8_BLOCK + 2u);
            scale = half_at(row + b_at);
            at = row + b_at + 2u;
        } else { // f16
            at = row + 2u * e0;
        }
        // the segment's bytes: K_BITS words of indices, 8 of int8, 16 of halves
        const uint NW = K_ENC == TKV_VK_ENC_TURBO ? K_BITS : K_ENC == TKV_VK_ENC_Q8_0 ? 8u : 16u;
        uint w[17], nw[17];
        Words p = Words(at & ~uint64_t(3));
        const uint sh = uint(at & 3ul) * 8u;
        [[unroll]] for (uint i = 0u; i <= NW; i++) // (the word past a pool's last row is its slack)
            w[i] = p.w[i];
        [[unroll]] for (uint i = 0u; i < NW; i++)
            nw[i] = FUNNEL(w, i, sh);
        if (K_ENC == TKV_VK_ENC_TURBO) {
            [[unroll]] for (uint e = 0u; e < 32u; e++)
                add_products(part, cent_k[gi * 16u + BITS_AT(nw, e * K_BITS, K_BITS)], e0 + e);
            // the group ends with this segment: its sum, scaled
            uint size, first;
            group_of(groups, e0, size, first);
            if (e0 + 32u == first + size)
                [[unroll]] for (uint t = 0u; t < QT; t++)
                    s[t] += scale * part[t];
        } else if (K_ENC == TKV_VK_ENC_Q8_0) {
            [[unroll]] for (uint e = 0u; e < 32u; e++)
                add_products(part, float(bitfieldExtract(int(nw[e >> 2u]), int(8u * (e & 3u)), 8)), e0 + e);
            [[unroll]] for (uint t = 0u; t < QT; t++)
                s[t] += scale * part[t];
        } else {
            [[unroll]] for (uint e = 0u; e < 32u; e += 2u) {
                vec2 v = unpackHalf2x16(nw[e >> 1u]);
                add_products(s, v.x, e0 + e);
                add_products(s, v.y, e0 + e + 1u);
            }
        }
    }
}

void main()
{
    const uint lid = gl_LocalInvocationIndex, sgid = gl_SubgroupID, lane = gl_SubgroupInvocationID;
    const uint slot = sgid * SG; // this subgroup's entries in ws, vrow, keep
    const uint per_unit = (pc.max_chunks + NSG - 1u) / NSG;
    const uint wid = flat_workgroup(), cg = wid % per_unit, uh = wid / per_unit;
    const uint h = uh % pc.n_kv, unit_index = uh / pc.n_kv;
    if (unit_index >= pc.n_units)
        return;
    Unit unit = Units(pc.inputs + uint64_t(pc.units_at) * TKV_VK_ALIGN).u[unit_index];
    if (cg * NSG >= unit.n_chunks)
        return; // (uniform: the whole workgroup)
    const uint n_q_rows = unit.n_q * pc.ratio, qr0 = unit.qr0, qr_last = min(qr0 + QT, n_q_rows) - 1u;
    const uint p0 = unit.n_ctx - unit.n_q, hi_tile = p0 + qr_last / pc.ratio + 1u, p_first = p0 + qr0 / pc.ratio;
    const uint lo_tile = pc.window != 0u && p_first + 1u > pc.window ? p_first + 1u - pc.window : 0u;

    // The unit's queries (rows past its last are zero), rotated here with
    // Q_ROT as the rows shader would: R q.
    for (uint e = lid; e < HEAD_DIM * QT; e += WG) {
        uint j = e / HEAD_DIM, i = e % HEAD_DIM, qr = qr0 + j;
        float v = 0.0;
        if (qr < n_q_rows) {
            uint head = h * pc.ratio + qr % pc.ratio, token = unit.q_first + qr / pc.ratio;
            uint64_t row = uint64_t(token) * (pc.n_kv * pc.ratio) + head;
            v = Floats(pc.inputs + uint64_t(pc.q_at) * TKV_VK_ALIGN + 4ul * (row * Q_STRIDE)).f[i];
        }
        xs[e] = v;
    }
    barrier();
    if (Q_ROT != TKV_VK_ROT_NONE)
        rotate_rows(QT, HEAD_DIM, uvec4(GROUPS0, GROUPS1, GROUPS2, GROUPS3), Q_ROT, false, pc.math);
    for (uint e = lid; e < HEAD_DIM * QT4 * 4u; e += WG) {
        uint i = e / (QT4 * 4u), t = e % (QT4 * 4u);
        qs[i * QT4 + t / 4u][t % 4u] = t < QT ? xs[t * HEAD_DIM + i] : 0.0;
    }
    Floats m = Floats(pc.math);
    for (uint e = lid; e < 80u; e += WG) {
        cent_k[e] = K_ENC == TKV_VK_ENC_TURBO && e % 16u < (1u << K_BITS) ? m.f[codebook_at(e / 16u, K_BITS) + e % 16u] : 0.0;
        cent_v[e] = V_ENC == TKV_VK_ENC_TURBO && e % 16u < (1u << V_BITS) ? m.f[codebook_at(e / 16u, V_BITS) + e % 16u] : 0.0;
    }
    barrier();

    // From here on each subgroup goes its own way.
    const uint c_local = cg * NSG + sgid;
    if (c_local >= unit.n_chunks)
        return;
    const uint c = unit.c_first + c_local;
    const uint begin = max(c * pc.chunk, lo_tile), end = min(c * pc.chunk + pc.chunk, hi_tile);
    uint lo[QT], hi[QT], skipped[QT];
    float m_run[QT], l_own[QT], acc[QT * DPL];
    [[unroll]] for (uint t = 0u; t < QT; t++) {
        uint p = p0 + (qr0 + t) / pc.ratio;
        hi[t] = qr0 + t < n_q_rows ? p + 1u : 0u;
        lo[t] = pc.window != 0u && p + 1u > pc.window ? p + 1u - pc.window : 0u;
        m_run[t] = NEG_INF;
        l_own[t] = 0.0;
        skipped[t] = 0u;
    }
    [[unroll]] for (uint a = 0u; a < QT * DPL; a++)
        acc[a] = 0.0;

    // This lane's value coordinates d0 .. d0 + DPL - 1 and where they lie in
    // a V row: the byte of their scale, the bit of their first value.
    const uint d0 = lane * DPL;
    uint v_scale_at = 0u, v_bit = 0u, v_gi = 0u;
    if (V_ENC == TKV_VK_ENC_TURBO) {
        uint size, first, k = group_of(uvec4(GROUPS0, GROUPS1, GROUPS2, GROUPS3), d0, size, first);
        v_gi = group_index(size);
        v_scale_at = 2u * k + first * V_BITS / 8u;
        v_bit = 8u * (v_scale_at + 2u) + (d0 - first) * V_BITS;
    } else if (V_ENC == TKV_VK_ENC_Q8_0) {
        v_scale_at = (d0 / Q8_BLOCK) * (Q8_BLOCK + 2u);
        v_bit = 8u * (v_scale_at + 2u + d0 % Q8_BLOCK);
    } else {
        v_bit = 16u * d0;
    }
    const uint64_t blocks = pc.inputs + uint64_t(pc.blocks_at) * TKV_VK_ALIGN + 4ul * unit.block_first;

    for (uint base = begin; base < end; base += SG) {
        const uint j = base + lane;
        // scores of this lane's row
        float x[QT];
        uint64_t v_row = 0ul;
        if (j < end) {
            const uint bi = j / pc.block_tokens, in_block = j - bi * pc.block_tokens;
            const uint64_t block = uint64_t(Uints(blocks).u[bi]);
            const uint64_t k_row = pc.k + block * pc.k_block_stride + uint64_t(h) * pc.k_head_stride +
                                   uint64_t(in_block) * K_ROW_BYTES;
            v_row = pc.v + block * pc.v_block_stride + uint64_t(h) * pc.v_head_stride + uint64_t(in_block) * V_ROW_BYTES;
            float s[QT];
            score_row(k_row, s);
            [[unroll]] for (uint t = 0u; t < QT; t++) {
                float y = pc.scale * s[t];
                if (pc.softcap > 0.0)
                    y = pc.softcap * tanh_stable(y / pc.softcap);
                x[t] = j >= lo[t] && j < hi[t] ? y : NEG_INF;
            }
        } else {
            [[unroll]] for (uint t = 0u; t < QT; t++)
                x[t] = NEG_INF;
        }
        // softmax: the batch's max, and each row's running max in chunk
        // order for the sparse-V decision
        bool needed = false;
        float corr[QT], w[QT4 * 4u];
        [[unroll]] for (uint t = 0u; t < QT; t++) {
            const float m_new = max(m_run[t], subgroupMax(x[t]));
            const float running = max(m_run[t], subgroupInclusiveMax(x[t]));
            corr[t] = m_new == NEG_INF ? 1.0 : exp(m_run[t] - m_new);
            float p = 0.0, kept = 0.0;
            if (x[t] != NEG_INF) {
                p = exp(x[t] - m_new);
                if (exp(x[t] - running) < pc.threshold) {
                    skipped[t]++;
                } else {
                    kept = p;
                    needed = true;
                }
            }
            w[t] = kept;
            l_own[t] = l_own[t] * corr[t] + p;
            m_run[t] = m_new;
        }
        [[unroll]] for (uint t = QT; t < QT4 * 4u; t++)
            w[t] = 0.0;
        [[unroll]] for (uint t4 = 0u; t4 < QT4; t4++)
            ws[(slot + lane) * QT4 + t4] = vec4(w[4u * t4], w[4u * t4 + 1u], w[4u * t4 + 2u], w[4u * t4 + 3u]);
        vrow[slot + lane] = unpackUint2x32(v_row);
        keep[slot + lane] = needed ? 1u : 0u;
        subgroupMemoryBarrierShared();
        subgroupBarrier();

        // values: the rows some query row keeps, in order
        [[unroll]] for (uint a = 0u; a < QT * DPL; a++)
            acc[a] *= corr[a / DPL];
        const uint nb = min(SG, end - base);
        for (uint r = 0u; r < nb; r++) {
            if (keep[slot + r] == 0u)
                continue;
            const uint64_t row = packUint2x32(vrow[slot + r]);
            float scale = V_ENC == TKV_VK_ENC_F16 ? 1.0 : half_at(row + v_scale_at);
            float wt[QT4 * 4u];
            [[unroll]] for (uint t4 = 0u; t4 < QT4; t4++) {
                vec4 q = ws[(slot + r) * QT4 + t4] * scale;
                wt[4u * t4] = q.x, wt[4u * t4 + 1u] = q.y, wt[4u * t4 + 2u] = q.z, wt[4u * t4 + 3u] = q.w;
            }
            float val[DPL];
            if (V_ENC == TKV_VK_ENC_TURBO) {
                // PER values (at most 24 bits past a byte boundary) per load
                const uint PER = V_BITS == 3u ? 8u : V_BITS == 2u ? 12u : 6u;
                [[unroll]] for (uint e = 0u; e < DPL; e += PER) {
                    const uint bit = v_bit + e * V_BITS;
                    uint bits = load_u32(row + (bit >> 3u)) >> (bit & 7u);
                    [[unroll]] for (uint i = 0u; i < PER && e + i < DPL; i++)
                        val[e + i] = cent_v[v_gi * 16u + ((bits >> (i * V_BITS)) & ((1u << V_BITS) - 1u))];
                }
            } else if (V_ENC == TKV_VK_ENC_Q8_0) {
                [[unroll]] for (uint e = 0u; e < DPL; e += 4u) {
                    uint bits = load_u32(row + (v_bit >> 3u) + e);
                    [[unroll]] for (uint i = 0u; i < 4u && e + i < DPL; i++)
                        val[e + i] = float(bitfieldExtract(int(bits), int(8u * i), 8));
                }
            } else {
                [[unroll]] for (uint e = 0u; e < DPL; e += 2u) {
                    vec2 v = unpackHalf2x16(load_u32(row + (v_bit >> 3u) + 2u * e));
                    val[e] = v.x;
                    if (e + 1u < DPL)
                        val[e + 1u] = v.y;
                }
            }
            [[unroll]] for (uint t = 0u; t < QT; t++)
                [[unroll]] for (uint e = 0u; e < DPL; e++)
                    acc[t * DPL + e] += wt[t] * val[e];
        }
        subgroupBarrier(); // ws, vrow and keep are rewritten by the next batch
    }

    // The chunk's partials: partial p of query row qr, kv head h, chunk
    // c_local at ((qr * n_kv + h) * max_chunks + c_local).
    [[unroll]] for (uint t = 0u; t < QT; t++) {
        const float l_sum = subgroupAdd(l_own[t]);
        const uint n_skipped = subgroupAdd(skipped[t]);
        if (qr0 + t >= n_q_rows)
            continue;
        uint64_t p = (uint64_t(unit.q_first * pc.ratio + qr0 + t) * pc.n_kv + h) * pc.max_chunks + c_local;
        if (lane == 0u) {
            Floats ml = Floats(pc.work + uint64_t(pc.ml_at) * TKV_VK_ALIGN + 4ul * (p * TKV_VK_ML_FLOATS));
            ml.f[0] = m_run[t];
            ml.f[1] = l_sum;
            ml.f[2] = uintBitsToFloat(n_skipped);
        }
        Floats part = Floats(pc.work + 4ul * (p * HEAD_DIM + d0));
        [[unroll]] for (uint e = 0u; e < DPL; e++)
            part.f[e] = acc[t * DPL + e];
    }
}
