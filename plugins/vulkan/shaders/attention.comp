/* SPDX-License-Identifier: MIT */
#version 460
// Fused decode attention, split-K (flash-decoding): one workgroup takes one
// chunk of the cached rows of one (unit, kv head); a unit is up to QT query
// rows of one sequence (the query heads of the GQA group times its new
// tokens), so every K and V row is decoded once for all of them. It walks
// the chunk in batches of up to BR rows:
//   stage     the batch's K bytes into shared memory (coalesced 16-byte
//             loads), one segment per pool block the batch touches (rows
//             are contiguous inside a block; batches end at multiples of
//             BR, so a block of a multiple of BR rows gives one segment);
//   scores    T = WG / BR invocations per row, each over a stretch of runs of
//             8 elements, straight from the packed bytes against the prepared
//             queries (<R q, y_hat> for turbo keys; + q[i] x_i for the
//             outliers of outlier-split keys);
//   softmax   per query row: batch max and rescale (online softmax, Milakov
//             & Gimelshein 2018, as in FlashAttention), sparse-V decisions;
//   values    the batch's V bytes staged the same way; each invocation takes
//             one run of 8 elements of a row and accumulates p * V (in the
//             rotated domain for turbo values; the outliers of outlier-split
//             values unrotated, in a second accumulator), skipping rows
//             sparse V drops for every query row;
// and writes its running max, weight sum, accumulators and skip counts; the
// merge shader combines the chunks and rotates back once per output row.
//
// Scores: x_j = scale <q, k_j>, then softcap tanh(x_j / softcap) when a
// softcap is set; a query row at position p sees the rows j <= p, and with a
// window only those with p - j < window. Sparse V: row j is skipped for a
// query row when exp(x_j - m) < threshold, m the running max of the chunk's
// rows through the end of j's batch (the rule of decode.comp and of the
// OpenCL plugin; plugins/vulkan/README.md, "Sparse V").
#extension GL_GOOGLE_include_directive : require
#extension GL_KHR_shader_subgroup_basic : require
#extension GL_KHR_shader_subgroup_arithmetic : require
#extension GL_EXT_control_flow_attributes : require

#define TKV_VK_MATH_SPEC
#include "common.glsl"

layout(constant_id = TKV_VK_SPEC_HEAD_DIM) const uint HEAD_DIM = 128u;
layout(constant_id = TKV_VK_SPEC_K_ENC) const uint K_ENC = TKV_VK_ENC_TURBO;
layout(constant_id = TKV_VK_SPEC_K_BITS) const uint K_BITS = 3u;
layout(constant_id = TKV_VK_SPEC_K_QJL) const uint K_QJL = 0u;
layout(constant_id = TKV_VK_SPEC_K_ROW_BYTES) const uint K_ROW_BYTES = 50u;
layout(constant_id = TKV_VK_SPEC_V_ENC) const uint V_ENC = TKV_VK_ENC_TURBO;
layout(constant_id = TKV_VK_SPEC_V_BITS) const uint V_BITS = 3u;
layout(constant_id = TKV_VK_SPEC_V_QJL) const uint V_QJL = 0u;
layout(constant_id = TKV_VK_SPEC_V_ROW_BYTES) const uint V_ROW_BYTES = 50u;
layout(constant_id = TKV_VK_SPEC_QT) const uint QT = 1u;
layout(constant_id = TKV_VK_SPEC_Q8_BLOCK) const uint Q8_BLOCK = 32u;
layout(constant_id = TKV_VK_SPEC_GROUPS + 0u) const uint GROUPS0 = 128u;
layout(constant_id = TKV_VK_SPEC_GROUPS + 1u) const uint GROUPS1 = 0u;
layout(constant_id = TKV_VK_SPEC_GROUPS + 2u) const uint GROUPS2 = 0u;
layout(constant_id = TKV_VK_SPEC_GROUPS + 3u) const uint GROUPS3 = 0u;
layout(constant_id = TKV_VK_SPEC_BATCH_ROWS) const uint BR = 128u;
layout(constant_id = TKV_VK_SPEC_DEBUG) const uint DBG = 0u;
layout(constant_id = TKV_VK_SPEC_Q_ROT) const uint Q_ROT = TKV_VK_ROT_NONE;
layout(constant_id = TKV_VK_SPEC_K_SPLIT) const uint K_SPLIT = 0u;
layout(constant_id = TKV_VK_SPEC_V_SPLIT) const uint V_SPLIT = 0u;

layout(push_constant, std430) uniform Push { TKV_VK_ATTENTION_PUSH } pc;

struct Unit { TKV_VK_UNIT_MEMBERS };
layout(buffer_reference, std430, buffer_reference_align = 4) readonly buffer Units { Unit u[]; };
layout(buffer_reference, std430, buffer_reference_align = 16) readonly buffer Quads { uvec4 q[]; };

const uint WG = gl_WorkGroupSize.x;
// query floats per element: R q, then S R q (QJL keys) or q (outlier-split keys)
const uint QS = K_QJL != 0u || K_SPLIT != 0u ? 2u : 1u;
// accumulators per element: values, then QJL signs or the outliers (unrotated)
const uint VA = V_QJL != 0u || V_SPLIT != 0u ? 2u : 1u;
const uint RUNS = HEAD_DIM / 8u;        // runs of 8 elements: 8 divides every group and q8_0 block
const uint T = WG / BR;                 // invocations per row in the score phase
const uint RL = WG / RUNS;              // rows the value phase covers at once
const uint RED = WG * (QT > 8u ? QT : 8u);
const uint STAGE_WORDS = TKV_VK_STAGE_BYTES / 4u;
const uint QW = HEAD_DIM * QS / 4u;      // vec4s of one prepared query
// floats between prepared queries: R q and S R q (or q) for turbo keys (the
// rows shader wrote them), the raw query for the others and where the
// shader rotates the queries itself (Q_ROT)
const uint Q_STRIDE = K_ENC == TKV_VK_ENC_TURBO && Q_ROT == TKV_VK_ROT_NONE ? HEAD_DIM * QS : HEAD_DIM;
// outlier-split rows: how many outliers, the bytes of an index
const uint N_OUT = (HEAD_DIM + TKV_VK_OUTLIER_EVERY - 1u) / TKV_VK_OUTLIER_EVERY;
const uint OUT_IB = HEAD_DIM <= TKV_VK_OUTLIER_BYTE_INDEX_MAX ? 1u : 2u;
const uint PV = (QT + 3u) / 4u;          // vec4s of one row's weights
// Rows whose stride is a multiple of 16 words (f16, f32) would put every
// invocation's word in the same bank; those stages are swizzled.
const bool K_SWIZZLE = K_ROW_BYTES % 64u == 0u;
const bool V_SWIZZLE = V_ROW_BYTES % 64u == 0u;
#define NEG_INF uintBitsToFloat(0xff800000u)

shared uint stage[STAGE_WORDS];       // the batch's K, then V, bytes
shared uint row_at[WG];               // staged byte offset of each row of the batch
shared vec4 qs[QT * QW];              // [query row][element / 4], S R q after R q
shared vec4 ps[WG * PV];              // the batch's scores, then weights: [row][query row / 4]
shared float red[RED];                // reductions
shared uint keep[WG];                 // the batch's row is needed by some query row
shared float cent_k[80], cent_v[80];  // codebooks of the row's group sizes: [gi * 16 + index]

// The query rotation (Q_ROT) runs on floats held in the stage.
#define ROT_LOAD(i) uintBitsToFloat(stage[i])
#define ROT_STORE(i, v) stage[i] = floatBitsToUint(v)
#include "rotate.glsl"

// ---- the staged batch --------------------------------------------------

// Word w of a swizzled stage lives at w with its 32-word line number xor-ed
// into its bank bits, so that invocations reading rows 16 words apart hit
// different banks.
uint stage_slot(uint w, bool swizzle) { return swizzle ? w ^ ((w >> 5) & 31u) : w; }

// A batch's rows base .. base + nb - 1 of kv head h come from pool blocks
// in segments: segment 0 runs from base to the end of its block (or of the
// batch), the others are whole blocks (the last one cut at the batch's end).
// Segment sg is staged from the 16-byte aligned address below its first
// row, at quad start(sg) of the stage: start(0) = 0, start(sg) = a0 + (sg -
// 1) af, where a0 and af bound the quads a segment of n0 and of
// block_tokens rows needs whatever its alignment (its rows, 15 bytes of
// misalignment and the word past the end that staged_u32 may read). So the
// stage holds at most the batch's bytes plus TKV_VK_STAGE_SLACK per segment.
struct Segment {
    uint64_t aligned; // the aligned address it is staged from
    uint first;       // byte offset of its first row from aligned
    uint quads;       // quads it really needs
    uint start;       // its first quad in the stage
    uint r0;          // its first row in the batch
};

uint segment_quads(uint bytes) { return (bytes + 15u + 4u + 15u) / 16u; }

Segment segment_at(uint sg, uint64_t pool, uint64_t head_stride, uint64_t block_stride, uint row_bytes,
                   uint block_first, uint h, uint base, uint nb, uint n0, uint a0, uint af)
{
    const uint bt = pc.block_tokens;
    Segment g;
    g.r0 = sg == 0u ? 0u : n0 + (sg - 1u) * bt;
    g.start = sg == 0u ? 0u : a0 + (sg - 1u) * af;
    uint pos = base + g.r0, bi = pos / bt, n = min(nb - g.r0, bt - (pos - bi * bt));
    uint64_t addr = pool + uint64_t(Uints(pc.inputs + uint64_t(pc.blocks_at) * TKV_VK_ALIGN).u[block_first + bi]) *
                               block_stride + uint64_t(h) * head_stride + uint64_t(pos - bi * bt) * uint64_t(row_bytes);
    g.aligned = addr & ~uint64_t(15);
    g.first = uint(addr - g.aligned);
    g.quads = (g.first + n * row_bytes + 4u + 15u) / 16u;
    return g;
}

// Stages the batch's rows of a pool and fills row_at, every invocation
// loading quads of any segment: it finds the segment by arithmetic and
// reads its block table entry, the same few entries for the whole
// workgroup (cached; a shared table of them would not fit beside the
// stage in 32 KB). Uniform control flow; the caller barriers before
// reading.
void stage_rows(uint64_t pool, uint64_t head_stride, uint64_t block_stride, uint row_bytes, bool swizzle,
                uint block_first, uint h, uint base, uint nb, bool load)
{
    const uint bt = pc.block_tokens, n0 = min(bt - base % bt, nb);
    const uint n_seg = n0 == nb ? 1u : 2u + (nb - n0 - 1u) / bt;
    // whole-block segments exist only when blocks are shorter than a batch;
    // the last segment takes only the quads its rows need
    const uint a0 = segment_quads(n0 * row_bytes), af = n_seg > 1u ? segment_quads(min(bt, nb) * row_bytes) : 0u;
    const uint n_last = n_seg > 1u ? nb - n0 - (n_seg - 2u) * bt : 0u;
    const uint total = n_seg == 1u ? a0 : a0 + (n_seg - 2u) * af + segment_quads(n_last * row_bytes);
    for (uint i = gl_LocalInvocationIndex; i < total && load; i += WG) {
        uint sg = i < a0 ? 0u : 1u + (i - a0) / af;
        Segment g = segment_at(sg, pool, head_stride, block_stride, row_bytes, block_first, h, base, nb, n0, a0, af);
        uint qi = i - g.start;
        if (qi < g.quads) {
            uvec4 v = Quads(g.aligned).q[qi];
            stage[stage_slot(4u * i, swizzle)] = v.x;
            stage[stage_slot(4u * i + 1u, swizzle)] = v.y;
            stage[stage_slot(4u * i + 2u, swizzle)] = v.z;
            stage[stage_slot(4u * i + 3u, swizzle)] = v.w;
        }
    }
    for (uint r = gl_LocalInvocationIndex; r < nb; r += WG) {
        uint sg = r < n0 ? 0u : 1u + (r - n0) / bt;
        Segment g = segment_at(sg, pool, head_stride, block_stride, row_bytes, block_first, h, base, nb, n0, a0, af);
        row_at[r] = 16u * g.start + g.first + (r - g.r0) * row_bytes;
    }
}

// The 4 staged bytes at byte offset b, little endian.
uint staged_u32(uint b, bool swizzle)
{
    uint w = b >> 2, sh = (b & 3u) * 8u, lo = stage[stage_slot(w, swizzle)];
    return sh == 0u ? lo : (lo >> sh) | (stage[stage_slot(w + 1u, swizzle)] << (32u - sh));
}

float staged_half(uint b, bool swizzle) { return unpackHalf2x16(staged_u32(b, swizzle) & 0xffffu).x; }

// ---- one run of 8 elements of a stored row ---------------------------------

// Where a run's bytes sit in a row of a format.
struct Run {
    uint scale;  // byte of the fp16 scale (turbo, q8_0); of the first value (f32, f16)
    uint data;   // turbo: byte of the 8 indices; q8_0: byte of the 8 int8
    uint cent;   // turbo: the group's codebook in cent_k or cent_v
    uint res;    // QJL: byte of the group's gamma
    uint signs;  // QJL: byte of the 8 signs
    uint gi;     // turbo: group size index
};

Run run_of(uint enc, uint bits, uint qjl, uint u)
{
    const uvec4 groups = uvec4(GROUPS0, GROUPS1, GROUPS2, GROUPS3);
    const uint e0 = 8u * u;
    Run run;
    run.data = run.cent = run.res = run.signs = run.gi = 0u;
    if (enc == TKV_VK_ENC_F32 || enc == TKV_VK_ENC_F16) {
        run.scale = e0 * (enc == TKV_VK_ENC_F32 ? 4u : 2u);
    } else if (enc == TKV_VK_ENC_Q8_0) {
        run.scale = (e0 / Q8_BLOCK) * (Q8_BLOCK + 2u);
        run.data = run.scale + 2u + e0 % Q8_BLOCK;
    } else {
        uint size, first, k = group_of(groups, e0, size, first);
        run.gi = group_index(size);
        run.scale = 2u * k + first * bits / 8u;
        run.data = run.scale + 2u + (e0 - first) * bits / 8u;
        run.cent = run.gi * 16u;
        if (qjl != 0u) {
            run.res = 2u * count_groups(groups) + HEAD_DIM * bits / 8u + 2u * k + first / 8u;
            run.signs = run.res + 2u + (e0 - first) / 8u;
        }
    }
    return run;
}

// The scale of the run of the staged row at byte row: value = scale * raw
// (turbo: the group's scale; q8_0: the block's d; plain values: 1).
float run_scale(uint enc, uint row, Run run, bool swizzle)
{
    return enc == TKV_VK_ENC_F32 || enc == TKV_VK_ENC_F16 ? 1.0 : staged_half(row + run.scale, swizzle);
}

// The run's 8 raw values: turbo centroids, q8_0 integers, plain values.
void run_raw(uint enc, uint bits, bool keys, uint row, Run run, bool swizzle, out float raw[8])
{
    if (enc == TKV_VK_ENC_F32) {
        [[unroll]] for (uint e = 0u; e < 8u; e++)
            raw[e] = uintBitsToFloat(staged_u32(row + run.scale + 4u * e, swizzle));
    } else if (enc == TKV_VK_ENC_F16) {
        [[unroll]] for (uint e = 0u; e < 8u; e += 2u) {
            vec2 pair = unpackHalf2x16(staged_u32(row + run.scale + 2u * e, swizzle));
            raw[e] = pair.x;
            raw[e + 1u] = pair.y;
        }
    } else if (enc == TKV_VK_ENC_Q8_0) {
        uvec2 q = uvec2(staged_u32(row + run.data, swizzle), staged_u32(row + run.data + 4u, swizzle));
        [[unroll]] for (uint e = 0u; e < 8u; e++)
            raw[e] = float(bitfieldExtract(int(q[e >> 2]), int(8u * (e & 3u)), 8));
    } else {
        uint idx = staged_u32(row + run.data, swizzle);
        [[unroll]] for (uint e = 0u; e < 8u; e++) {
            uint c = run.cent + bitfieldExtract(idx, int(e * bits), int(bits));
            raw[e] = keys ? cent_k[c] : cent_v[c];
        }
    }
}

// A QJL row's run: the weight of its signs, scale gamma (the residual reads
// back as scale gamma S^T z), and the 8 signs, bit e set for z = +1.
float run_signs(uint row, Run run, bool swizzle, out uint z)
{
    z = staged_u32(row + run.signs, swizzle) & 0xffu;
    return Floats(MATH).f[TKV_VK_MATH_QJL_FACTOR + run.gi] * staged_half(row + run.res, swizzle);
}

// Eight values as two vec4s, for dot products against the queries.
vec4 lo4(float v[8]) { return vec4(v[0], v[1], v[2], v[3]); }
vec4 hi4(float v[8]) { return vec4(v[4], v[5], v[6], v[7]); }

// ---- reductions ----------------------------------------------------------

// Workgroup sum of one value per invocation for each query row, through
// red; every invocation gets the results.
void reduce_sum(inout float v[QT])
{
    [[unroll]] for (uint j = 0u; j < QT; j++) {
        float x = subgroupAdd(v[j]);
        if (subgroupElect())
            red[j * WG + gl_SubgroupID] = x;
    }
    barrier();
    [[unroll]] for (uint j = 0u; j < QT; j++) {
        float x = 0.0;
        for (uint g = 0u; g < gl_NumSubgroups; g++)
            x += red[j * WG + g];
        v[j] = x;
    }
    barrier();
}

void reduce_count(inout uint v[QT])
{
    [[unroll]] for (uint j = 0u; j < QT; j++) {
        uint x = subgroupAdd(v[j]);
        if (subgroupElect())
            red[j * WG + gl_SubgroupID] = uintBitsToFloat(x);
    }
    barrier();
    [[unroll]] for (uint j = 0u; j < QT; j++) {
        uint x = 0u;
        for (uint g = 0u; g < gl_NumSubgroups; g++)
            x += floatBitsToUint(red[j * WG + g]);
        v[j] = x;
    }
    barrier();
}

void main()
{
    const uint lid = gl_LocalInvocationIndex;
    uint wid = flat_workgroup(), c_local = wid % pc.max_chunks, uh = wid / pc.max_chunks;
    uint h = uh % pc.n_kv, unit_index = uh / pc.n_kv;
    if (unit_index >= pc.n_units)
        return;
    Unit unit = Units(pc.inputs + uint64_t(pc.units_at) * TKV_VK_ALIGN).u[unit_index];
    if (c_local >= unit.n_chunks)
        return; // the unit's query rows see fewer chunks; the merge never reads this one
    const uint n_q_rows = unit.n_q * pc.ratio, qr0 = unit.qr0, qr_last = min(qr0 + QT, n_q_rows) - 1u;
    // query row qr (token qr / ratio) is at position p0 + qr / ratio and sees
    // rows lo .. p: the tile needs the rows [lo of qr0, p of qr_last]
    const uint p0 = unit.n_ctx - unit.n_q, hi_tile = p0 + qr_last / pc.ratio + 1u, p_first = p0 + qr0 / pc.ratio;
    const uint lo_tile = pc.window != 0u && p_first + 1u > pc.window ? p_first + 1u - pc.window : 0u;
    const uint c = unit.c_first + c_local;
    const uint begin = max(c * pc.chunk, lo_tile), end = min(c * pc.chunk + pc.chunk, hi_tile);

    // The tile's prepared queries; rows past the last query row are zero.
    // With Q_ROT the raw queries are rotated here, in the stage (free until
    // the first batch), as the rows shader would have: R q (and for
    // outlier-split keys q itself beside it, as it is).
    for (uint e = lid; e < HEAD_DIM * QS * QT; e += WG) {
        uint j = e / (HEAD_DIM * QS), i = e % (HEAD_DIM * QS), qr = qr0 + j;
        float v = 0.0;
        if (qr < n_q_rows) {
            uint head = h * pc.ratio + qr % pc.ratio, token = unit.q_first + qr / pc.ratio;
            uint64_t row = uint64_t(token) * (pc.n_kv * pc.ratio) + head;
            v = Floats(pc.q + 4ul * (row * Q_STRIDE))
                    .f[Q_ROT != TKV_VK_ROT_NONE ? i % HEAD_DIM : i];
        }
        if (Q_ROT != TKV_VK_ROT_NONE && i < HEAD_DIM)
            stage[j * HEAD_DIM + i] = floatBitsToUint(v);
        else
            qs[j * QW + i / 4u][i % 4u] = v;
    }
    if (Q_ROT != TKV_VK_ROT_NONE) {
        barrier();
        rotate_rows(QT, HEAD_DIM, uvec4(GROUPS0, GROUPS1, GROUPS2, GROUPS3), Q_ROT, false, MATH);
        for (uint e = lid; e < HEAD_DIM * QT; e += WG)
            qs[(e / HEAD_DIM) * QW + (e % HEAD_DIM) / 4u][e % 4u] = uintBitsToFloat(stage[e]);
    }
    Floats m = Floats(MATH);
    for (uint e = lid; e < 80u; e += WG) {
        cent_k[e] = K_ENC == TKV_VK_ENC_TURBO && e % 16u < (1u << K_BITS) ? m.f[codebook_at(e / 16u, K_BITS) + e % 16u] : 0.0;
        cent_v[e] = V_ENC == TKV_VK_ENC_TURBO && e % 16u < (1u << V_BITS) ? m.f[codebook_at(e / 16u, V_BITS) + e % 16u] : 0.0;
    }
    uint lo[QT], hi[QT], skipped[QT];
    float m_run[QT], l_own[QT];
    [[unroll]] for (uint t = 0u; t < QT; t++) {
        // rows [lo, hi) are visible to query row t (none past the last)
        uint p = p0 + (qr0 + t) / pc.ratio;
        hi[t] = qr0 + t < n_q_rows ? p + 1u : 0u;
        lo[t] = pc.window != 0u && p + 1u > pc.window ? p + 1u - pc.window : 0u;
        m_run[t] = NEG_INF;
        l_own[t] = 0.0;
        skipped[t] = 0u;
    }
    // outlier-split rows: where the outlier indices begin
    const uint k_out_at = outlier_offset(uvec4(GROUPS0, GROUPS1, GROUPS2, GROUPS3), HEAD_DIM, K_BITS);
    const uint v_out_at = outlier_offset(uvec4(GROUPS0, GROUPS1, GROUPS2, GROUPS3), HEAD_DIM, V_BITS);
    // score phase: row sr, runs [u0, u1); value phase: run vu of rows vr + k RL
    const uint sr = lid / T, u0 = (lid % T) * RUNS / T, u1 = (lid % T + 1u) * RUNS / T;
    const uint vu = lid % RUNS, vr = lid / RUNS;
    const Run v_run = run_of(V_ENC, V_BITS, V_QJL, vu);
    float acc[QT * 8u * VA];
    [[unroll]] for (uint a = 0u; a < QT * 8u * VA; a++)
        acc[a] = 0.0;
    barrier();

    // Batches end at multiples of BR (chunks start at multiples of it), so
    // that pool blocks of a multiple of BR rows are one segment per batch.
    for (uint base = begin, nb; base < end; base += nb) {
        nb = min(BR - base % BR, end - base);

        // scores
        stage_rows(pc.k, pc.k_head_stride, pc.k_block_stride, K_ROW_BYTES, K_SWIZZLE, unit.block_first, h, base, nb,
                   (DBG & TKV_VK_DBG_NO_K_LOADS) == 0u);
        barrier();
        float score[QT];
        [[unroll]] for (uint t = 0u; t < QT; t++)
            score[t] = 0.0;
        if (sr < nb && (DBG & TKV_VK_DBG_NO_SCORES) == 0u) {
            uint row = row_at[sr], scale_at = ~0u;
            float scale = 1.0;
            for (uint u = u0; u < u1; u++) {
                Run run = run_of(K_ENC, K_BITS, K_QJL, u);
                if (run.scale != scale_at) { // a group's runs share its scale
                    scale = run_scale(K_ENC, row, run, K_SWIZZLE);
                    scale_at = run.scale;
                }
                float raw[8];
                run_raw(K_ENC, K_BITS, true, row, run, K_SWIZZLE, raw);
                [[unroll]] for (uint t = 0u; t < QT; t++)
                    score[t] += scale * (dot(lo4(raw), qs[t * QW + 2u * u]) + dot(hi4(raw), qs[t * QW + 2u * u + 1u]));
                if (K_QJL != 0u) {
                    uint z;
                    float w = run_signs(row, run, K_SWIZZLE, z), sign[8];
                    [[unroll]] for (uint e = 0u; e < 8u; e++)
                        sign[e] = ((z >> e) & 1u) != 0u ? 1.0 : -1.0;
                    const uint p = HEAD_DIM / 4u + 2u * u; // S R q
                    [[unroll]] for (uint t = 0u; t < QT; t++)
                        score[t] += w * (dot(lo4(sign), qs[t * QW + p]) + dot(hi4(sign), qs[t * QW + p + 1u]));
                }
            }
            if (K_SPLIT != 0u && lid % T == 0u) // + sum_o q[i_o] x_o, against q itself
                for (uint o = 0u; o < N_OUT; o++) {
                    uint i = staged_u32(row + k_out_at + OUT_IB * o, K_SWIZZLE) & (OUT_IB == 1u ? 0xffu : 0xffffu);
                    float x = staged_half(row + k_out_at + N_OUT * OUT_IB + 2u * o, K_SWIZZLE);
                    [[unroll]] for (uint t = 0u; t < QT; t++)
                        score[t] += x * qs[t * QW + HEAD_DIM / 4u + i / 4u][i % 4u];
                }
        }
        if (T > 1u) { // the row's invocations add up their stretches
            [[unroll]] for (uint t = 0u; t < QT; t++)
                red[lid * QT + t] = score[t];
            barrier();
            if (lid % T == 0u)
                [[unroll]] for (uint t = 0u; t < QT; t++) {
                    float sum = 0.0;
                    for (uint i = 0u; i < T; i++)
                        sum += red[(lid + i) * QT + t];
                    score[t] = sum;
                }
        }
        if (lid % T == 0u && sr < nb)
            [[unroll]] for (uint t = 0u; t < QT; t++) {
                float x = pc.scale * score[t];
                if (pc.softcap > 0.0)
                    x = pc.softcap * tanh_stable(x / pc.softcap);
                uint j = base + sr;
                ps[sr * PV + t / 4u][t % 4u] = j >= lo[t] && j < hi[t] ? x : NEG_INF;
            }
        barrier();

        // softmax: the batch's max through the subgroups' maxima
        uint r = gl_SubgroupID * gl_SubgroupSize + gl_SubgroupInvocationID;
        float sc[QT];
        [[unroll]] for (uint t = 0u; t < QT; t++) {
            sc[t] = r < nb ? ps[r * PV + t / 4u][t % 4u] : NEG_INF;
            float sg_max = subgroupMax(sc[t]);
            if (subgroupElect())
                red[t * WG + gl_SubgroupID] = sg_max;
        }
        barrier();
        bool needed = false;
        float corr[QT];
        [[unroll]] for (uint t = 0u; t < QT; t++) {
            // the chunk's running max through the end of the batch
            float m_new = m_run[t];
            for (uint g = 0u; g < gl_NumSubgroups; g++)
                m_new = max(m_new, red[t * WG + g]);
            corr[t] = m_new == NEG_INF ? 1.0 : exp(m_run[t] - m_new);
            float p = 0.0, kept = 0.0;
            if (sc[t] != NEG_INF) {
                p = exp(sc[t] - m_new);
                // sparse V against the running max through the end of the
                // batch (the rule of decode.comp and of the OpenCL plugin)
                if (p < pc.threshold) {
                    skipped[t]++;
                } else {
                    kept = p;
                    needed = true;
                }
            }
            if (r < BR)
                ps[r * PV + t / 4u][t % 4u] = kept;
            l_own[t] = l_own[t] * corr[t] + p;
            m_run[t] = m_new;
        }
        if (r < BR)
            keep[r] = needed ? 1u : 0u;

        // values
        stage_rows(pc.v, pc.v_head_stride, pc.v_block_stride, V_ROW_BYTES, V_SWIZZLE, unit.block_first, h, base, nb,
                   (DBG & TKV_VK_DBG_NO_V_LOADS) == 0u);
        barrier();
        if (vr < RL && (DBG & TKV_VK_DBG_NO_VALUES) == 0u) {
            [[unroll]] for (uint a = 0u; a < QT * 8u * VA; a++)
                acc[a] *= corr[a / (8u * VA)];
            for (uint rr = vr; rr < nb; rr += RL) {
                if (keep[rr] == 0u)
                    continue;
                uint row = row_at[rr];
                float raw[8], p[PV * 4u];
                [[unroll]] for (uint k = 0u; k < PV; k++) {
                    vec4 w4 = ps[rr * PV + k];
                    p[4u * k] = w4.x, p[4u * k + 1u] = w4.y, p[4u * k + 2u] = w4.z, p[4u * k + 3u] = w4.w;
                }
                float scale = run_scale(V_ENC, row, v_run, V_SWIZZLE);
                run_raw(V_ENC, V_BITS, false, row, v_run, V_SWIZZLE, raw);
                [[unroll]] for (uint t = 0u; t < QT; t++) {
                    float w = p[t] * scale;
                    [[unroll]] for (uint e = 0u; e < 8u; e++)
                        acc[(t * 8u + e) * VA] += w * raw[e];
                }
                if (V_SPLIT != 0u) {
                    // the row's outliers in this invocation's run (indices
                    // are distinct: an element gets one at most)
                    float vo[8];
                    bool hit = false;
                    [[unroll]] for (uint e = 0u; e < 8u; e++)
                        vo[e] = 0.0;
                    for (uint o = 0u; o < N_OUT; o++) {
                        uint i = staged_u32(row + v_out_at + OUT_IB * o, V_SWIZZLE) & (OUT_IB == 1u ? 0xffu : 0xffffu);
                        if (i / 8u == vu) {
                            float x = staged_half(row + v_out_at + N_OUT * OUT_IB + 2u * o, V_SWIZZLE);
                            [[unroll]] for (uint e = 0u; e < 8u; e++)
                                vo[e] = e == i % 8u ? x : vo[e];
                            hit = true;
                        }
                    }
                    if (hit)
                        [[unroll]] for (uint t = 0u; t < QT; t++)
                            [[unroll]] for (uint e = 0u; e < 8u; e++)
                                acc[(t * 8u + e) * VA + 1u] += p[t] * vo[e];
                }
                if (V_QJL != 0u) {
                    uint z;
                    float zw = run_signs(row, v_run, V_SWIZZLE, z);
                    [[unroll]] for (uint t = 0u; t < QT; t++) {
                        float w = p[t] * zw;
                        [[unroll]] for (uint e = 0u; e < 8u; e++)
                            acc[(t * 8u + e) * VA + 1u] += ((z >> e) & 1u) != 0u ? w : -w;
                    }
                }
            }
        }
        barrier();
    }

    reduce_sum(l_own);
    reduce_count(skipped);
    // The row lanes hold sums over different rows of the same elements:
    // add them up through red, one query row and accumulator at a time, and
    // store the partials.
    // Partial p of query row qr (of every sequence's rows, token-major),
    // kv head h, chunk c_local is at ((qr * n_kv + h) * max_chunks + c_local).
    [[unroll]] for (uint t = 0u; t < QT; t++) {
        uint64_t p = (uint64_t(unit.q_first * pc.ratio + qr0 + t) * pc.n_kv + h) * pc.max_chunks + c_local;
        if (lid == 0u && qr0 + t < n_q_rows) {
            Floats ml = Floats(pc.work + uint64_t(pc.ml_at) * TKV_VK_ALIGN + 4ul * (p * TKV_VK_ML_FLOATS));
            ml.f[0] = m_run[t];
            ml.f[1] = l_own[t];
            ml.f[2] = uintBitsToFloat(skipped[t]);
        }
        [[unroll]] for (uint a = 0u; a < VA; a++) {
            if (vr < RL)
                [[unroll]] for (uint e = 0u; e < 8u; e++)
                    red[vr * HEAD_DIM + 8u * vu + e] = acc[(t * 8u + e) * VA + a];
            barrier();
            Floats part = Floats(pc.work + 4ul * ((p * VA + a) * HEAD_DIM));
            for (uint i = lid; i < HEAD_DIM && qr0 + t < n_q_rows; i += WG) {
                float sum = 0.0;
                for (uint l = 0u; l < RL; l++)
                    sum += red[l * HEAD_DIM + i];
                part.f[i] = sum;
            }
            barrier();
        }
    }
}
