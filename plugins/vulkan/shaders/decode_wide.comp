/* SPDX-License-Identifier: MIT */
#version 460
// Decode attention by subgroups for rows too wide for decode.comp's
// registers: f16 and q8_0 keys, f16, q8_0 and turbo (no QJL part, no
// outliers) values. The same partials as decode.comp and attention.comp
// (one per query row, kv head and chunk, consumed by merge.comp: value
// sums in the rotated domain for turbo values, then max, sum and skip
// count records).
//
// Lanes own coordinates, not rows: lane l holds the DPL = HEAD_DIM / SG
// consecutive coordinates d0 = l DPL .. of the QT query rows of the unit
// (raw queries: f16 and q8_0 keys need no rotation) and of their value
// accumulators. A workgroup takes one chunk of one (unit, kv head); each of
// its NSG subgroups walks its own NSG-th of the chunk, SG rows at a time:
//   addresses lane r finds row base + r in the block table (its entry
//             loaded a batch ahead) and puts the row's K and V addresses
//             into shared memory;
//   scores    for every row of the batch each lane loads only its
//             coordinates' bytes (the subgroup reads the row once,
//             contiguously; q8_0: the block's scale too), a group of rows'
//             loads issued before any is used, and forms the QT partial
//             dot products of its coordinates. Rows are taken in pairs
//             (x, x + SG / 2) and the partials reduced across the subgroup
//             by a transposing butterfly as they come: stage s exchanges
//             half of what a lane holds with lane ^ (SG >> s)
//             (subgroupShuffleXor), keeping the rows whose bit matches its
//             own, so that after log2(SG) stages lane r holds row r's QT
//             scores: SG - 1 shuffles per query row and batch. Pairs come
//             in bit-reversed order, so a pending stage waits for at most
//             one sibling: log2(SG) - 1 partial values per query row;
//   softmax   per query row, exactly as decode.comp: the running max m of
//             the subgroup's rows through the end of the batch
//             (subgroupMax), weights exp(x_j - m), the rescale of what was
//             accumulated; sparse V skips row j for a query row when
//             exp(x_j - m) < threshold (plugins/vulkan/README.md, "Sparse
//             V"). Lane r puts its row's weights into shared memory;
//   values    the batch's rows in groups; a group no query row keeps is
//             skipped (neither loaded nor added), the others' loads issued
//             together: each lane reads its coordinates of each row from
//             the pool (turbo: its bits and its group's scale; the
//             centroids from a shared table) and accumulates w * v for the
//             QT query rows.
// Each lane's accumulators hold whole coordinates, so at the end the NSG
// subgroups' partials are combined in shared memory as decode.comp does.
//
// Rows lie in pool blocks at any byte alignment: K_ALIGN and V_ALIGN give
// the alignment every row start has (the pools' address, strides and row
// bytes), and a lane's bytes are read as whole words from below them and
// shifted into place where that alignment does not suffice (the word after
// a pool's last row is its slack). A batch's rows past the subgroup's last
// one are read as its last row again and get no weight.
//
// The host (attention.c, wide_qt_max) uses this shader only where decode.comp
// does not apply and its assumptions hold: subgroups of exactly SG >= 4
// invocations (min = max subgroup size) with shuffles and ballots, HEAD_DIM a multiple
// of 32 and of SG with DPL a power of two up to 16 (so a lane's
// coordinates lie in one q8_0 block and one turbo group), turbo groups of
// multiples of 32 values, and the shared arrays fit.
#extension GL_GOOGLE_include_directive : require
#extension GL_KHR_shader_subgroup_basic : require
#extension GL_KHR_shader_subgroup_arithmetic : require
#extension GL_KHR_shader_subgroup_shuffle : require
#extension GL_KHR_shader_subgroup_ballot : require
#extension GL_EXT_control_flow_attributes : require

#define TKV_VK_MATH_SPEC
#include "common.glsl"

layout(constant_id = TKV_VK_SPEC_HEAD_DIM) const uint HEAD_DIM = 128u;
layout(constant_id = TKV_VK_SPEC_K_ENC) const uint K_ENC = TKV_VK_ENC_F16;
layout(constant_id = TKV_VK_SPEC_K_ROW_BYTES) const uint K_ROW_BYTES = 256u;
layout(constant_id = TKV_VK_SPEC_V_ENC) const uint V_ENC = TKV_VK_ENC_F16;
layout(constant_id = TKV_VK_SPEC_V_BITS) const uint V_BITS = 0u;
layout(constant_id = TKV_VK_SPEC_V_ROW_BYTES) const uint V_ROW_BYTES = 256u;
layout(constant_id = TKV_VK_SPEC_QT) const uint QT = 4u;
layout(constant_id = TKV_VK_SPEC_Q8_BLOCK) const uint Q8_BLOCK = 32u;
layout(constant_id = TKV_VK_SPEC_GROUPS + 0u) const uint GROUPS0 = 128u;
layout(constant_id = TKV_VK_SPEC_GROUPS + 1u) const uint GROUPS1 = 0u;
layout(constant_id = TKV_VK_SPEC_GROUPS + 2u) const uint GROUPS2 = 0u;
layout(constant_id = TKV_VK_SPEC_GROUPS + 3u) const uint GROUPS3 = 0u;
layout(constant_id = TKV_VK_SPEC_SUBGROUP) const uint SG = 32u;
// stages left out for measurement (TURBO_VK_SHADER_SKIP): TKV_VK_DBG_* bits
layout(constant_id = TKV_VK_SPEC_DEBUG) const uint DBG = 0u;
// the alignment in bytes (1, 2, 4, 8 or 16) of every K row and every V row
layout(constant_id = TKV_VK_SPEC_K_ALIGN) const uint K_ALIGN = 4u;
layout(constant_id = TKV_VK_SPEC_V_ALIGN) const uint V_ALIGN = 4u;
// the words of one group of rows' loads per lane (the rows of a group: a
// power of two, at least 2, at most SG)
layout(constant_id = TKV_VK_SPEC_WIDE_WORDS) const uint WORDS = 32u;

layout(push_constant, std430) uniform Push { TKV_VK_ATTENTION_PUSH } pc;

struct Unit { TKV_VK_UNIT_MEMBERS };
layout(buffer_reference, std430, buffer_reference_align = 4) readonly buffer Units { Unit u[]; };
layout(buffer_reference, std430, buffer_reference_align = 8) readonly buffer Pairs { uvec2 p[]; };
layout(buffer_reference, std430, buffer_reference_align = 16) readonly buffer Quads { uvec4 q[]; };

const uint WG = gl_WorkGroupSize.x;
const uint NSG = WG / SG;              // subgroups per workgroup, a chunk each
const uint DPL = HEAD_DIM / SG;        // coordinates per lane
const uint HALF = SG / 2u;
const uint LOG_SG = SG >= 128u ? 7u : SG >= 64u ? 6u : SG >= 32u ? 5u : SG >= 16u ? 4u : SG >= 8u ? 3u : 2u;
const uint QT4 = (QT + 3u) / 4u;       // vec4s of one row's weights
const bool K_Q8 = K_ENC == TKV_VK_ENC_Q8_0;
const bool V_Q8 = V_ENC == TKV_VK_ENC_Q8_0, V_TURBO = V_ENC == TKV_VK_ENC_TURBO;

// A lane's slice of a row: its coordinates' bytes (K_BYTES; V_BITS_LEN
// bits), which start at an alignment of at least K_SA (V_SA) bytes; read
// as K_IW (V_IW) words from the word that holds its first byte, then K_OW
// (V_OW) words from its first bit. q8_0 and turbo rows: then K_SW (V_SW)
// words that hold its block's or group's fp16 scale (a 2-byte aligned
// scale lies in one word).
const uint K_BYTES = K_Q8 ? DPL : 2u * DPL;
const uint K_LANE_ALIGN = K_Q8 ? (DPL >= 2u ? 2u : 1u) : (2u * DPL >= 16u ? 16u : 2u * DPL);
const uint K_SA = K_ALIGN < K_LANE_ALIGN ? K_ALIGN : K_LANE_ALIGN;
const uint K_MIS = K_SA >= 4u ? 0u : 4u - K_SA; // most bytes a slice starts past a word
const uint K_OW = (K_BYTES + 3u) / 4u;
const uint K_IW = (K_MIS + K_BYTES + 3u) / 4u;
const uint K_SW = K_Q8 ? (K_ALIGN >= 2u ? 1u : 2u) : 0u;
const uint K_RW = K_IW + K_SW;
const uint V_BITS_LEN = V_TURBO ? DPL * V_BITS : V_Q8 ? 8u * DPL : 16u * DPL;
const uint V_LANE_ALIGN = V_TURBO ? 1u : V_Q8 ? (DPL >= 2u ? 2u : 1u) : (2u * DPL >= 16u ? 16u : 2u * DPL);
const uint V_SA = V_ALIGN < V_LANE_ALIGN ? V_ALIGN : V_LANE_ALIGN;
const uint V_SHB = (V_SA >= 4u ? 0u : 8u * (4u - V_SA)) + (V_TURBO ? 7u : 0u); // most bits of shift
const uint V_OW = (V_BITS_LEN + 31u) / 32u;
const uint V_IW = (V_SHB + V_BITS_LEN + 31u) / 32u;
const uint V_SW = V_ENC == TKV_VK_ENC_F16 ? 0u : (V_ALIGN >= 2u ? 1u : 2u);
const uint V_RW = V_IW + V_SW;

// Rows of a group whose loads are issued together: the most of SG, SG / 2,
// ... whose words fit WORDS, at least 2 (K: pairs of rows); V groups at
// most 32 (one word of the keep mask).
#define GROUP_ROWS(RW)                                                                                  \
    (SG * (RW) <= WORDS ? SG : SG / 2u * (RW) <= WORDS ? SG / 2u : SG / 4u * (RW) <= WORDS ? SG / 4u   \
     : SG / 8u * (RW) <= WORDS ? SG / 8u : SG / 16u * (RW) <= WORDS ? SG / 16u : SG / 32u * (RW) <= WORDS ? SG / 32u \
     : SG / 64u)
const uint KB0 = GROUP_ROWS(K_RW), KB = KB0 < 2u ? 2u : KB0;
const uint KP = KB / 2u;               // pairs of rows per K group
const uint VB0 = GROUP_ROWS(V_RW), VB1 = VB0 < 2u ? 2u : VB0, VB = VB1 > 32u ? 32u : VB1;
#define NEG_INF uintBitsToFloat(0xff800000u)

shared uvec4 kat[WG / 2u];             // per subgroup: K rows x and x + SG / 2's addresses
shared uvec4 vat[WG / 2u];             // per subgroup: V rows 2m and 2m + 1's addresses
shared vec4 ws[WG * QT4];              // per subgroup lane: its row's weights
shared float cent_v[80];               // codebooks of the group sizes: [gi * 16 + index]
shared float xs[QT * HEAD_DIM];        // the partials at the end
shared float red_m[NSG * QT], red_l[NSG * QT];
shared uint red_skip[NSG * QT];

// this lane's slices: byte offsets in a row (scales, first value), the
// first value's bit in its byte, its codebook in cent_v
uint k_sc = 0u, k_off = 0u, v_sc = 0u, v_off = 0u, v_bit0 = 0u, v_gi = 0u;

// lo >> sh with the bits of hi above, sh < 32 (one funnel shift where the
// device has it).
uint funnel(uint lo, uint hi, uint sh) { return uint(packUint2x32(uvec2(lo, hi)) >> sh); }

// n bits (n <= 16) at the constant bit position b of the words w.
#define BITS_AT(w, b, n)                                                                     \
    ((((b) & 31u) + (n) <= 32u)                                                              \
         ? bitfieldExtract((w)[(b) >> 5u], int((b) & 31u), int(n))                           \
         : (((w)[(b) >> 5u] >> ((b) & 31u)) | ((w)[((b) >> 5u) + 1u] << (32u - ((b) & 31u)))) & \
               ((1u << (n)) - 1u))

// The n words from the 4-byte aligned address a; sa: the alignment a is
// known to have (vector loads where it allows).
#define LOAD_WORDS(w, at, a, n, sa)                                               \
    if ((sa) >= 16u && (n) % 4u == 0u) {                                          \
        [[unroll]] for (uint i_ = 0u; i_ < (n) / 4u; i_++) {                      \
            const uvec4 v_ = Quads(a).q[i_];                                      \
            w[(at) + 4u * i_] = v_.x, w[(at) + 4u * i_ + 1u] = v_.y;              \
            w[(at) + 4u * i_ + 2u] = v_.z, w[(at) + 4u * i_ + 3u] = v_.w;         \
        }                                                                         \
    } else if ((sa) >= 8u && (n) % 2u == 0u) {                                    \
        [[unroll]] for (uint i_ = 0u; i_ < (n) / 2u; i_++) {                      \
            const uvec2 v_ = Pairs(a).p[i_];                                      \
            w[(at) + 2u * i_] = v_.x, w[(at) + 2u * i_ + 1u] = v_.y;              \
        }                                                                         \
    } else {                                                                      \
        [[unroll]] for (uint i_ = 0u; i_ < (n); i_++)                             \
            w[(at) + i_] = Words(a).w[i_];                                        \
    }

// The K words of this lane's slice of the row at ra: K_IW words from the
// word that holds its first byte, then K_SW words of its scale.
void load_k(uint64_t ra, out uint w[K_RW])
{
    if ((DBG & TKV_VK_DBG_NO_K_LOADS) != 0u) { // made up: finite halves, any int8
        [[unroll]] for (uint i = 0u; i < K_RW; i++)
            w[i] = (uint(ra) * 2654435761u ^ (i * 40503u)) & 0x3bff3bffu;
        return;
    }
    const uint64_t a = K_ALIGN >= 4u ? ra + (k_off & ~3u) : (ra + k_off) & ~uint64_t(3);
    LOAD_WORDS(w, 0u, a, K_IW, K_SA);
    if (K_Q8) {
        const uint64_t s = K_ALIGN >= 4u ? ra + (k_sc & ~3u) : (ra + k_sc) & ~uint64_t(3);
        [[unroll]] for (uint i = 0u; i < K_SW; i++)
            w[K_IW + i] = Words(s).w[i];
    }
}

// As load_k for the V slice.
void load_v(uint64_t ra, out uint w[V_RW])
{
    if ((DBG & TKV_VK_DBG_NO_V_LOADS) != 0u) {
        [[unroll]] for (uint i = 0u; i < V_RW; i++)
            w[i] = (uint(ra) * 2246822519u ^ (i * 40503u)) & 0x3bff3bffu;
        return;
    }
    const uint64_t a = V_ALIGN >= 4u ? ra + (v_off & ~3u) : (ra + v_off) & ~uint64_t(3);
    LOAD_WORDS(w, 0u, a, V_IW, V_SA);
    if (V_SW != 0u) {
        const uint64_t s = V_ALIGN >= 4u ? ra + (v_sc & ~3u) : (ra + v_sc) & ~uint64_t(3);
        [[unroll]] for (uint i = 0u; i < V_SW; i++)
            w[V_IW + i] = Words(s).w[i];
    }
}

// The fp16 scale that starts sh bits into w0 (nw = 2: the word w1 after
// it). (unpackHalf2x16, as for f16 rows: a device that flushes subnormal
// halves there loses scales below 6.1e-5, which only rows of values below
// 0.008 have.)
float scale_from(uint w0, uint w1, uint nw, uint sh)
{
    return unpackHalf2x16((nw == 1u ? w0 >> sh : funnel(w0, w1, sh)) & 0xffffu).x;
}

// This lane's DPL key values of a row from its words (mis: the row start's
// bytes past a word, 0 where K_ALIGN >= 4), unscaled, and the q8_0 scale.
void k_values(uint w[K_RW], uint mis, out float val[DPL], out float scale)
{
    const uint sh = K_MIS == 0u ? 0u : ((mis + k_off) & 3u) * 8u;
    uint o[K_OW];
    [[unroll]] for (uint k = 0u; k < K_OW; k++)
        o[k] = K_MIS == 0u ? w[k] : funnel(w[k], k + 1u < K_IW ? w[min(k + 1u, K_RW - 1u)] : 0u, sh);
    if (K_Q8) {
        [[unroll]] for (uint e = 0u; e < DPL; e++)
            val[e] = float(bitfieldExtract(int(o[e >> 2u]), int(8u * (e & 3u)), 8));
        scale = scale_from(w[K_IW], w[min(K_IW + 1u, K_RW - 1u)], K_SW, ((mis + k_sc) & 3u) * 8u);
    } else {
        [[unroll]] for (uint e = 0u; e < DPL; e += 2u) {
            const vec2 h = unpackHalf2x16(o[e >> 1u]);
            val[e] = h.x;
            if (e + 1u < DPL)
                val[e + 1u] = h.y;
        }
        scale = 1.0;
    }
}

// This lane's DPL values of a V row from its words, unscaled (turbo: the
// centroids), and the row's scale at them (q8_0 block, turbo group).
void v_values(uint w[V_RW], uint mis, out float val[DPL], out float scale)
{
    const uint sh = V_SHB == 0u ? 0u : ((mis + v_off) & 3u) * 8u + v_bit0;
    uint o[V_OW + 1u];
    [[unroll]] for (uint k = 0u; k < V_OW; k++)
        o[k] = V_SHB == 0u ? w[k] : funnel(w[k], k + 1u < V_IW ? w[min(k + 1u, V_RW - 1u)] : 0u, sh);
    o[V_OW] = 0u;
    if (V_TURBO) {
        [[unroll]] for (uint e = 0u; e < DPL; e++)
            val[e] = cent_v[v_gi * 16u + BITS_AT(o, e * V_BITS, V_BITS)];
    } else if (V_Q8) {
        [[unroll]] for (uint e = 0u; e < DPL; e++)
            val[e] = float(bitfieldExtract(int(o[e >> 2u]), int(8u * (e & 3u)), 8));
    } else {
        [[unroll]] for (uint e = 0u; e < DPL; e += 2u) {
            const vec2 h = unpackHalf2x16(o[e >> 1u]);
            val[e] = h.x;
            if (e + 1u < DPL)
                val[e + 1u] = h.y;
        }
    }
    scale = V_SW == 0u ? 1.0 : scale_from(w[min(V_IW, V_RW - 1u)], w[min(V_IW + 1u, V_RW - 1u)], V_SW,
                                          ((mis + v_sc) & 3u) * 8u);
}

// One stage of the transposing reduction: a holds the partials of the rows
// whose bit SG >> stage is 0, b of those where it is 1; this lane keeps the
// side of its own bit and receives it from lane ^ (SG >> stage).
void combine(float a[QT], float b[QT], uint stage, out float r[QT])
{
    const uint mask = SG >> stage;
    const bool upper = (gl_SubgroupInvocationID & mask) != 0u;
    [[unroll]] for (uint t = 0u; t < QT; t++) {
        const float keep = upper ? b[t] : a[t], send = upper ? a[t] : b[t];
        r[t] = keep + subgroupShuffleXor(send, mask);
    }
}

void main()
{
    const uint lid = gl_LocalInvocationIndex, sgid = gl_SubgroupID, lane = gl_SubgroupInvocationID;
    const uint slot = sgid * SG, half_slot = sgid * HALF; // this subgroup's entries in ws; kat, vat
    const uint wid = flat_workgroup(), cg = wid % pc.max_chunks, uh = wid / pc.max_chunks;
    const uint h = uh % pc.n_kv, unit_index = uh / pc.n_kv;
    if (unit_index >= pc.n_units)
        return;
    Unit unit = Units(pc.inputs + uint64_t(pc.units_at) * TKV_VK_ALIGN).u[unit_index];
    if (cg >= unit.n_chunks)
        return; // (uniform: the whole workgroup)
    const uint n_q_rows = unit.n_q * pc.ratio, qr0 = unit.qr0, qr_last = min(qr0 + QT, n_q_rows) - 1u;
    const uint p0 = unit.n_ctx - unit.n_q, hi_tile = p0 + qr_last / pc.ratio + 1u, p_first = p0 + qr0 / pc.ratio;
    const uint lo_tile = pc.window != 0u && p_first + 1u > pc.window ? p_first + 1u - pc.window : 0u;

    // this lane's coordinates d0 .. d0 + DPL - 1 and where they lie in a row
    const uint d0 = lane * DPL;
    if (K_Q8) {
        k_sc = d0 / Q8_BLOCK * (Q8_BLOCK + 2u);
        k_off = k_sc + 2u + d0 % Q8_BLOCK;
    } else {
        k_off = 2u * d0;
    }
    if (V_TURBO) {
        uint size, first, k = group_of(uvec4(GROUPS0, GROUPS1, GROUPS2, GROUPS3), d0, size, first);
        v_gi = group_index(size);
        v_sc = 2u * k + first * V_BITS / 8u;
        const uint bit = 8u * (v_sc + 2u) + (d0 - first) * V_BITS;
        v_off = bit >> 3u;
        v_bit0 = bit & 7u;
    } else if (V_Q8) {
        v_sc = d0 / Q8_BLOCK * (Q8_BLOCK + 2u);
        v_off = v_sc + 2u + d0 % Q8_BLOCK;
    } else {
        v_off = 2u * d0;
    }

    // the unit's queries at this lane's coordinates (rows past its last are
    // zero), raw: the keys are not rotated
    float qv[QT * DPL];
    [[unroll]] for (uint t = 0u; t < QT; t++) {
        const uint qr = qr0 + t;
        const uint head = h * pc.ratio + qr % pc.ratio, token = unit.q_first + qr / pc.ratio;
        const uint64_t row = uint64_t(token) * (pc.n_kv * pc.ratio) + head;
        Floats q = Floats(pc.q + 4ul * (row * HEAD_DIM + d0));
        [[unroll]] for (uint e = 0u; e < DPL; e++)
            qv[t * DPL + e] = qr < n_q_rows ? q.f[e] : 0.0;
    }
    Floats m = Floats(MATH);
    for (uint e = lid; e < 80u; e += WG)
        cent_v[e] = V_TURBO && e % 16u < (1u << V_BITS) ? m.f[codebook_at(e / 16u, V_BITS) + e % 16u] : 0.0;
    barrier();

    // From here on each subgroup goes its own way until the partials.
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

    const uint64_t blocks = pc.inputs + uint64_t(pc.blocks_at) * TKV_VK_ALIGN + 4ul * unit.block_first;
    const uint64_t k_head = pc.k + uint64_t(h) * pc.k_head_stride, v_head = pc.v + uint64_t(h) * pc.v_head_stride;
    const uint bt = pc.block_tokens;

    // this subgroup's rows of the chunk
    const uint c = unit.c_first + cg, per_sg = pc.chunk / NSG;
    const uint begin = max(c * pc.chunk + sgid * per_sg, lo_tile), end = min(c * pc.chunk + (sgid + 1u) * per_sg, hi_tile);
    // lane r's row of the next batch (the last row again past the end):
    // its block table entry, loaded a batch ahead, and its row in the block
    uint next_block = 0u, next_in = 0u;
    if (begin < end) {
        const uint j = min(begin + lane, end - 1u), bi = j / bt;
        next_in = j - bi * bt;
        next_block = (DBG & TKV_VK_DBG_NO_BLOCKS) == 0u ? Uints(blocks).u[bi] : bi;
    }
    for (uint base = begin; base < end; base += SG) {
        const uint j = base + lane;
        {
            const uint64_t ka = k_head + uint64_t(next_block) * pc.k_block_stride + uint64_t(next_in) * K_ROW_BYTES;
            const uint64_t va = v_head + uint64_t(next_block) * pc.v_block_stride + uint64_t(next_in) * V_ROW_BYTES;
            const uvec2 k2 = unpackUint2x32(ka), v2 = unpackUint2x32(va);
            const uint kc = lane < HALF ? 0u : 2u, vc = 2u * (lane & 1u);
            kat[half_slot + lane % HALF][kc] = k2.x;
            kat[half_slot + lane % HALF][kc + 1u] = k2.y;
            vat[half_slot + lane / 2u][vc] = v2.x;
            vat[half_slot + lane / 2u][vc + 1u] = v2.y;
            const uint jn = min(base + SG + lane, end - 1u), bi = jn / bt;
            next_in = jn - bi * bt;
            next_block = (DBG & TKV_VK_DBG_NO_BLOCKS) == 0u ? Uints(blocks).u[bi] : bi;
        }
        subgroupMemoryBarrierShared();
        subgroupBarrier();

        // scores: K groups of KP pairs of rows (x, x + SG / 2), x the
        // bit-reversed pair number, reduced as they come; st[k]: the value
        // of level k (k stages done) waiting for its sibling
        float st[LOG_SG][QT], sc[QT];
        uint made_up = 0u;
        [[unroll]] for (uint g = 0u; g < HALF / KP; g++) {
            uint kw[KB][K_RW], kmis[KB];
            [[unroll]] for (uint p = 0u; p < KP; p++) {
                const uint x = bitfieldReverse(g * KP + p) >> (33u - LOG_SG);
                const uvec4 at = kat[half_slot + x];
                const uint64_t ra = packUint2x32(at.xy), rb = packUint2x32(at.zw);
                kmis[2u * p] = K_ALIGN >= 4u ? 0u : at.x & 3u;
                kmis[2u * p + 1u] = K_ALIGN >= 4u ? 0u : at.z & 3u;
                load_k(ra, kw[2u * p]);
                load_k(rb, kw[2u * p + 1u]);
            }
            [[unroll]] for (uint p = 0u; p < KP; p++) {
                const uint i = g * KP + p;
                if ((DBG & TKV_VK_DBG_NO_SCORES) != 0u) {
                    made_up ^= kw[2u * p][0] ^ kw[2u * p + 1u][0];
                    continue;
                }
                float part[2][QT];
                [[unroll]] for (uint s = 0u; s < 2u; s++) {
                    float val[DPL], scale;
                    k_values(kw[2u * p + s], kmis[2u * p + s], val, scale);
                    [[unroll]] for (uint t = 0u; t < QT; t++) {
                        float d = 0.0;
                        [[unroll]] for (uint e = 0u; e < DPL; e++)
                            d += qv[t * DPL + e] * val[e];
                        part[s][t] = K_Q8 ? d * scale : d;
                    }
                }
                float v[QT];
                combine(part[0], part[1], 1u, v);
                bool done = false;
                [[unroll]] for (uint k = 1u; k < LOG_SG; k++)
                    if (!done) {
                        if (((i >> (k - 1u)) & 1u) != 0u) {
                            combine(st[k], v, k + 1u, v);
                        } else {
                            [[unroll]] for (uint t = 0u; t < QT; t++)
                                st[k][t] = v[t];
                            done = true;
                        }
                    }
                if (!done) // the last pair: every stage done
                    [[unroll]] for (uint t = 0u; t < QT; t++)
                        sc[t] = v[t];
            }
        }
        if ((DBG & TKV_VK_DBG_NO_SCORES) != 0u)
            [[unroll]] for (uint t = 0u; t < QT; t++)
                sc[t] = float(made_up & 1023u) * 0.001;

        // softmax: the running max through the end of the batch, which the
        // sparse-V decision takes too
        bool needed = false;
        float corr[QT], w[QT4 * 4u];
        [[unroll]] for (uint t = 0u; t < QT; t++) {
            float y = pc.scale * sc[t];
            if (pc.softcap > 0.0)
                y = pc.softcap * tanh_stable(y / pc.softcap);
            const float x = j < end && j >= lo[t] && j < hi[t] ? y : NEG_INF;
            const float m_new = max(m_run[t], subgroupMax(x));
            corr[t] = m_new == NEG_INF ? 1.0 : exp(m_run[t] - m_new);
            float p = 0.0, kept = 0.0;
            if (x != NEG_INF) {
                p = exp(x - m_new);
                if (p < pc.threshold) {
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
        const uvec4 keep = subgroupBallot(needed); // the rows some query row keeps, a bit each
        subgroupMemoryBarrierShared();
        subgroupBarrier();

        // values: groups of VB rows, a group no query row keeps skipped
        [[unroll]] for (uint a = 0u; a < QT * DPL; a++)
            acc[a] *= corr[a / DPL];
        [[unroll]] for (uint g = 0u; g < ((DBG & TKV_VK_DBG_NO_VALUES) == 0u ? SG / VB : 0u); g++) {
            const uint r0 = g * VB;
            if (((keep[r0 >> 5u] >> (r0 & 31u)) & (VB >= 32u ? ~0u : (1u << VB) - 1u)) == 0u)
                continue; // (uniform)
            uint vw[VB][V_RW], vmis[VB];
            [[unroll]] for (uint p = 0u; p < VB / 2u; p++) {
                const uvec4 at = vat[half_slot + r0 / 2u + p];
                vmis[2u * p] = V_ALIGN >= 4u ? 0u : at.x & 3u;
                vmis[2u * p + 1u] = V_ALIGN >= 4u ? 0u : at.z & 3u;
                load_v(packUint2x32(at.xy), vw[2u * p]);
                load_v(packUint2x32(at.zw), vw[2u * p + 1u]);
            }
            [[unroll]] for (uint r = 0u; r < VB; r++) {
                float val[DPL], scale;
                v_values(vw[r], vmis[r], val, scale);
                float wt[QT4 * 4u];
                [[unroll]] for (uint t4 = 0u; t4 < QT4; t4++) {
                    // the scale on the weights or on the values, whichever are fewer
                    const vec4 q = ws[(slot + r0 + r) * QT4 + t4] * (DPL < QT ? 1.0 : scale);
                    wt[4u * t4] = q.x, wt[4u * t4 + 1u] = q.y, wt[4u * t4 + 2u] = q.z, wt[4u * t4 + 3u] = q.w;
                }
                if (DPL < QT)
                    [[unroll]] for (uint e = 0u; e < DPL; e++)
                        val[e] *= scale;
                [[unroll]] for (uint t = 0u; t < QT; t++)
                    [[unroll]] for (uint e = 0u; e < DPL; e++)
                        acc[t * DPL + e] += wt[t] * val[e];
            }
        }
        subgroupBarrier(); // kat, vat and ws are rewritten by the next batch
    }

    // The workgroup's partial: the subgroups' maxima, sums and skip counts
    // through shared memory, their accumulators added into xs one subgroup
    // after another, each scaled to the common max.
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
                }
        barrier();
    }
    // partial p of query row qr, kv head h, chunk cg at ((qr * n_kv + h) * max_chunks + cg)
    for (uint e = lid; e < QT * HEAD_DIM; e += WG) {
        const uint t = e / HEAD_DIM;
        if (qr0 + t < n_q_rows) {
            uint64_t p = (uint64_t(unit.q_first * pc.ratio + qr0 + t) * pc.n_kv + h) * pc.max_chunks + cg;
            Floats(pc.work + 4ul * (p * HEAD_DIM)).f[e % HEAD_DIM] = xs[e];
        }
    }
    if (lid < QT && qr0 + lid < n_q_rows) {
        [[unroll]] for (uint t = 0u; t < QT; t++)
            if (t == lid) {
                uint64_t p = (uint64_t(unit.q_first * pc.ratio + qr0 + t) * pc.n_kv + h) * pc.max_chunks + cg;
                Floats ml = Floats(pc.work + uint64_t(pc.ml_at) * TKV_VK_ALIGN + 4ul * (p * TKV_VK_ML_FLOATS));
                ml.f[0] = m_all[t];
                ml.f[1] = l_all[t];
                ml.f[2] = uintBitsToFloat(skip_all[t]);
            }
    }
}
