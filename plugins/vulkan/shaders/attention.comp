/* SPDX-License-Identifier: MIT */
#version 460
// Decode attention in one dispatch (flash-decoding): one workgroup takes one
// chunk of the cached rows of one (unit, kv head); a unit is up to QT query
// rows of one sequence (the query heads of the GQA group times its new
// tokens), so every K and V row is read and decoded once for all of them.
//   prepare   the workgroup rotates its own query rows: R q for turbo keys
//             (WHT butterflies or the dense matvec in shared memory), then
//             S R q per group for QJL keys; each invocation keeps the part
//             of the queries its score lane needs in registers;
//   stage     the chunk in batches of BR rows: every invocation loads words
//             of the batch's K rows (found through the block table, any
//             block size) into shared memory, all loads in flight at once;
//   scores    LANES invocations per K row, each over a fixed stretch of runs
//             of 8 elements with its part of the queries in registers,
//             summed over the lanes with subgroup shuffles;
//   softmax   per query row: the batch's max, online rescale (Milakov &
//             Gimelshein 2018, as in FlashAttention), sparse-V decisions;
//   values    the V rows some query row keeps are staged the same way (V rows
//             every query row skips are not read); each invocation takes one
//             run of 8 elements of them; values are accumulated in the
//             rotated domain;
//   merge     the chunk's running max, weight sum, skip counts and value
//             sums go to scratch; the workgroup that finishes its (unit, kv
//             head) last (an atomic counter) combines every chunk, applies
//             S^T (QJL values) and R^T once per output row, writes the
//             outputs, skip counts and log-sum-exps, and resets the counter.
//             A unit of one chunk writes directly.
//
// Scores: x_j = scale <q, k_j>, then softcap tanh(x_j / softcap) when a
// softcap is set; a query row at position p sees the rows j <= p, and with a
// window only those with p - j < window. Sparse V: row j's V is skipped for
// a query row when exp(x_j - m) < threshold, m the running max of j's chunk
// through the end of the batch j is scored in (every score of a batch is
// known before any of its V rows is read). Skipped rows count in the sum
// and the log-sum-exp.
#extension GL_GOOGLE_include_directive : require
#extension GL_KHR_shader_subgroup_basic : require
#extension GL_KHR_shader_subgroup_arithmetic : require
#extension GL_KHR_shader_subgroup_shuffle : require
#extension GL_EXT_control_flow_attributes : require

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
layout(constant_id = TKV_VK_SPEC_K_ROT) const uint K_ROT = TKV_VK_ROT_WHT;
layout(constant_id = TKV_VK_SPEC_V_ROT) const uint V_ROT = TKV_VK_ROT_WHT;
layout(constant_id = TKV_VK_SPEC_LANES) const uint LANES = 8u;

layout(push_constant, std430) uniform Push { TKV_VK_ATTENTION_PUSH } pc;

struct Unit { TKV_VK_UNIT_MEMBERS };
layout(buffer_reference, std430, buffer_reference_align = 4) readonly buffer Units { Unit u[]; };
// Partials and counters: written by one workgroup, read by another in the
// same dispatch, so they bypass incoherent caches.
layout(buffer_reference, std430, buffer_reference_align = 4) coherent buffer Partials { float f[]; };
layout(buffer_reference, std430, buffer_reference_align = 16) coherent buffer Partials4 { vec4 f[]; };
layout(buffer_reference, std430, buffer_reference_align = 4) coherent buffer Counters { uint u[]; };

const uint WG = gl_WorkGroupSize.x;
const uint QS = K_QJL != 0u ? 2u : 1u;  // query floats per element: R q, then S R q
const uint VA = V_QJL != 0u ? 2u : 1u;  // accumulators per element: values, then QJL signs
const uint RUNS = HEAD_DIM / 8u;        // runs of 8 elements: 8 divides every group and q8_0 block
const uint NR = RUNS / LANES;           // runs of one score lane
const uint SP = WG / LANES;             // rows scored at once
const uint RL = WG / RUNS;              // rows the value phase covers at once
const uint MAX_SUBGROUPS = 32u;        // WG / 4: the smallest subgroups
const uint RED = MAX_SUBGROUPS * (QT > 8u ? QT : 8u);
// A staged row: the aligned words around its bytes and one more (reads of 4
// bytes at its last ones), row r at word r * WPR; BR x WPR fit the stage.
const uint K_WPR = (K_ROW_BYTES + 3u + 3u) / 4u + 1u;
const uint V_WPR = (V_ROW_BYTES + 3u + 3u) / 4u + 1u;
const uint WPR = K_WPR > V_WPR ? K_WPR : V_WPR;
const uint STAGE_WORDS = TKV_VK_STAGE_BYTES / 4u;
const uint QW = HEAD_DIM * QS / 4u;     // vec4s of one prepared query
const uint PV = (QT + 3u) / 4u;         // vec4s of one row's weights
const uint PSN = BR * PV > TKV_VK_MERGE_WEIGHTS / 4u ? BR * PV : TKV_VK_MERGE_WEIGHTS / 4u;
const uint QREG_N = NR * 8u * QT * QS;  // query floats one score lane uses
const bool Q_IN_REGS = QREG_N <= 64u;   // then kept in registers, else read from qs
const uint QV = QREG_N > 64u ? 1u : NR * 2u * QT * QS; // vec4s in registers
const uint XS = QT * HEAD_DIM * VA;
#define NEG_INF uintBitsToFloat(0xff800000u)
#define ROTATE_ELEMS TKV_VK_QUERY_TILE_FLOATS

shared vec4 qs[QT * QW];              // [query row][element / 4], S R q after R q
shared float xs[XS];                  // query preparation; the merged outputs
shared vec4 ps[PSN];                  // the batch's scores, then weights: [row][query row / 4];
                                      // the merge's weights, [query row][chunk]
shared float red[RED];                // reductions: [query row][subgroup]
shared uint stage[STAGE_WORDS];       // the batch's K, then V, rows; the merge's sums
shared uint64_t k_at[BR], v_at[BR];   // the batch's rows' addresses
shared uint keep[BR];                 // the batch's row is needed by some query row
shared float cent_k[80], cent_v[80];  // codebooks of the row's group sizes: [gi * 16 + index]
shared uint last_arrival;

#include "rotate.glsl"

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

// The 4 staged bytes at byte offset b of the stage, little endian.
uint staged_u32(uint b)
{
    uint w = b >> 2, sh = (b & 3u) * 8u, lo = stage[w];
    return sh == 0u ? lo : (lo >> sh) | (stage[w + 1u] << (32u - sh));
}

// The scale of the run of the staged row at byte row: value = scale * raw
// (turbo: the group's scale; q8_0: the block's d; plain values: 1).
float run_scale(uint enc, uint row, Run run)
{
    return enc == TKV_VK_ENC_F32 || enc == TKV_VK_ENC_F16 ? 1.0
                                                           : unpackHalf2x16(staged_u32(row + run.scale) & 0xffffu).x;
}

// The run's 8 raw values: turbo centroids, q8_0 integers, plain values.
void run_raw(uint enc, uint bits, bool keys, uint row, Run run, out float raw[8])
{
    if (enc == TKV_VK_ENC_F32) {
        [[unroll]] for (uint e = 0u; e < 8u; e++)
            raw[e] = uintBitsToFloat(staged_u32(row + run.scale + 4u * e));
    } else if (enc == TKV_VK_ENC_F16) {
        [[unroll]] for (uint e = 0u; e < 8u; e += 2u) {
            vec2 pair = unpackHalf2x16(staged_u32(row + run.scale + 2u * e));
            raw[e] = pair.x;
            raw[e + 1u] = pair.y;
        }
    } else if (enc == TKV_VK_ENC_Q8_0) {
        uvec2 q = uvec2(staged_u32(row + run.data), staged_u32(row + run.data + 4u));
        [[unroll]] for (uint e = 0u; e < 8u; e++)
            raw[e] = float(bitfieldExtract(int(q[e >> 2]), int(8u * (e & 3u)), 8));
    } else {
        uint idx = staged_u32(row + run.data);
        [[unroll]] for (uint e = 0u; e < 8u; e++) {
            uint c = run.cent + bitfieldExtract(idx, int(e * bits), int(bits));
            raw[e] = keys ? cent_k[c] : cent_v[c];
        }
    }
}

// A QJL row's run: the weight of its signs, scale gamma (the residual reads
// back as scale gamma S^T z), and the 8 signs, bit e set for z = +1.
float run_signs(uint row, Run run, out uint z)
{
    z = staged_u32(row + run.signs) & 0xffu;
    return Floats(pc.math).f[TKV_VK_MATH_QJL_FACTOR + run.gi] * unpackHalf2x16(staged_u32(row + run.res) & 0xffffu).x;
}

// Stages the batch's rows (keep[r] != 0 only, for values) from the
// addresses in at: the aligned words around each, wpr of them. Uniform
// control flow; the caller barriers before reading.
void stage_rows(bool values, uint nb, uint wpr)
{
    for (uint i = gl_LocalInvocationIndex; i < nb * wpr; i += WG) {
        uint r = i / wpr, w = i - r * wpr;
        if (!values || keep[r] != 0u) {
            uint64_t a = (values ? v_at[r] : k_at[r]) & ~uint64_t(3);
            stage[r * WPR + w] = Words(a).w[w];
        }
    }
}

// Byte offset in the stage of staged row r.
uint staged_row(uint r, bool values) { return r * WPR * 4u + uint((values ? v_at[r] : k_at[r]) & 3ul); }

vec4 lo4(float v[8]) { return vec4(v[0], v[1], v[2], v[3]); }
vec4 hi4(float v[8]) { return vec4(v[4], v[5], v[6], v[7]); }

// Row pos of kv head h of a pool, through the call's block table.
uint64_t row_address(uint64_t pool, uint64_t head_stride, uint64_t block_stride, uint row_bytes, Uints blocks,
                     uint block_first, uint bt, uint h, uint pos)
{
    uint bi = pos / bt;
    return pool + uint64_t(blocks.u[block_first + bi]) * block_stride + uint64_t(h) * head_stride +
           uint64_t(pos - bi * bt) * uint64_t(row_bytes);
}

// ---- reductions ----------------------------------------------------------

// Workgroup sum (max) of one value per invocation for each query row,
// through red; every invocation gets the results.
void reduce_sum(inout float v[QT])
{
    [[unroll]] for (uint j = 0u; j < QT; j++) {
        float x = subgroupAdd(v[j]);
        if (subgroupElect())
            red[j * MAX_SUBGROUPS + gl_SubgroupID] = x;
    }
    barrier();
    [[unroll]] for (uint j = 0u; j < QT; j++) {
        float x = 0.0;
        for (uint g = 0u; g < gl_NumSubgroups; g++)
            x += red[j * MAX_SUBGROUPS + g];
        v[j] = x;
    }
    barrier();
}

void reduce_max(inout float v[QT])
{
    [[unroll]] for (uint j = 0u; j < QT; j++) {
        float x = subgroupMax(v[j]);
        if (subgroupElect())
            red[j * MAX_SUBGROUPS + gl_SubgroupID] = x;
    }
    barrier();
    [[unroll]] for (uint j = 0u; j < QT; j++) {
        float x = NEG_INF;
        for (uint g = 0u; g < gl_NumSubgroups; g++)
            x = max(x, red[j * MAX_SUBGROUPS + g]);
        v[j] = x;
    }
    barrier();
}

void reduce_count(inout uint v[QT])
{
    [[unroll]] for (uint j = 0u; j < QT; j++) {
        uint x = subgroupAdd(v[j]);
        if (subgroupElect())
            red[j * MAX_SUBGROUPS + gl_SubgroupID] = uintBitsToFloat(x);
    }
    barrier();
    [[unroll]] for (uint j = 0u; j < QT; j++) {
        uint x = 0u;
        for (uint g = 0u; g < gl_NumSubgroups; g++)
            x += floatBitsToUint(red[j * MAX_SUBGROUPS + g]);
        v[j] = x;
    }
    barrier();
}

// tanh without overflow for any finite x (a device's tanh may be
// (e^x - e^-x) / (e^x + e^-x), which is inf / inf for large x).
float tanh_stable(float x)
{
    float t = exp(-2.0 * abs(x));
    return sign(x) * ((1.0 - t) / (1.0 + t));
}

void main()
{
    const uint lid = gl_LocalInvocationIndex;
    const uvec4 groups = uvec4(GROUPS0, GROUPS1, GROUPS2, GROUPS3);
    Uints rec = Uints(pc.inputs);
    const uint n_units = rec.u[TKV_VK_CALL_N_UNITS], n_kv = rec.u[TKV_VK_CALL_N_KV];
    const uint ratio = rec.u[TKV_VK_CALL_RATIO], chunk = rec.u[TKV_VK_CALL_CHUNK];
    const uint max_chunks = rec.u[TKV_VK_CALL_MAX_CHUNKS], bt = rec.u[TKV_VK_CALL_BLOCK_TOKENS];
    const uint window = rec.u[TKV_VK_CALL_WINDOW];
    const float scale = uintBitsToFloat(rec.u[TKV_VK_CALL_SCALE]);
    const float softcap = uintBitsToFloat(rec.u[TKV_VK_CALL_SOFTCAP]);
    const float threshold = uintBitsToFloat(rec.u[TKV_VK_CALL_THRESHOLD]);
    Uints blocks = Uints(pc.inputs + rec.u[TKV_VK_CALL_BLOCKS_AT]);

    uint wid = flat_workgroup(), c_local = wid % max_chunks, uh = wid / max_chunks;
    uint h = uh % n_kv, unit_index = uh / n_kv;
    if (unit_index >= n_units)
        return;
    Unit unit = Units(pc.inputs + rec.u[TKV_VK_CALL_UNITS_AT]).u[unit_index];
    if (c_local >= unit.n_chunks)
        return; // the unit sees fewer chunks
    const uint n_q_rows = unit.n_q * ratio, qr0 = unit.qr0, qr_last = min(qr0 + QT, n_q_rows) - 1u;
    const uint n_rows = qr_last + 1u - qr0; // the unit's query rows (QT but at the end)
    // query row qr (token qr / ratio) is at position p0 + qr / ratio and sees
    // rows lo .. p: the tile needs the rows [lo of qr0, p of qr_last]
    const uint p0 = unit.n_ctx - unit.n_q, hi_tile = p0 + qr_last / ratio + 1u, p_first = p0 + qr0 / ratio;
    const uint lo_tile = window != 0u && p_first + 1u > window ? p_first + 1u - window : 0u;
    const uint c = unit.c_first + c_local;
    const uint begin = max(c * chunk, lo_tile), end = min(c * chunk + chunk, hi_tile);

    // ---- the tile's queries: raw into xs, R q (turbo keys), into qs ----
    Floats q_in = Floats(pc.inputs + rec.u[TKV_VK_CALL_Q_AT]);
    for (uint e = lid; e < QT * HEAD_DIM; e += WG) {
        uint j = e / HEAD_DIM, i = e % HEAD_DIM, qr = qr0 + j;
        float v = 0.0;
        if (qr < n_q_rows) {
            uint head = h * ratio + qr % ratio, token = unit.q_first + qr / ratio;
            v = q_in.f[(token * (n_kv * ratio) + head) * HEAD_DIM + i];
        }
        xs[e] = v;
    }
    Floats m = Floats(pc.math);
    for (uint e = lid; e < 80u; e += WG) {
        cent_k[e] = K_ENC == TKV_VK_ENC_TURBO && e % 16u < (1u << K_BITS) ? m.f[codebook_at(e / 16u, K_BITS) + e % 16u] : 0.0;
        cent_v[e] = V_ENC == TKV_VK_ENC_TURBO && e % 16u < (1u << V_BITS) ? m.f[codebook_at(e / 16u, V_BITS) + e % 16u] : 0.0;
    }
    barrier();
    if (K_ENC == TKV_VK_ENC_TURBO)
        rotate_rows(QT, HEAD_DIM, groups, K_ROT, false, pc.math);
    for (uint e = lid; e < QT * HEAD_DIM; e += WG) {
        uint j = e / HEAD_DIM, i = e % HEAD_DIM;
        qs[j * QW + i / 4u][i % 4u] = xs[e];
        if (K_QJL != 0u) { // S R q per group, as the reference's prepare_query sums it
            uint size, first;
            group_of(groups, i, size, first);
            uint s = qjl_at(group_index(size)) + (i - first) * size;
            float sum = 0.0;
            for (uint k = 0u; k < size; k++)
                sum += m.f[s + k] * xs[j * HEAD_DIM + first + k];
            qs[j * QW + (HEAD_DIM + i) / 4u][i % 4u] = sum;
        }
    }
    barrier();

    uint lo[QT], hi[QT], skipped[QT];
    float m_run[QT], l_own[QT];
    [[unroll]] for (uint t = 0u; t < QT; t++) {
        // rows [lo, hi) are visible to query row t (none past the last)
        uint p = p0 + (qr0 + t) / ratio;
        hi[t] = qr0 + t < n_q_rows ? p + 1u : 0u;
        lo[t] = window != 0u && p + 1u > window ? p + 1u - window : 0u;
        m_run[t] = NEG_INF;
        l_own[t] = 0.0;
        skipped[t] = 0u;
    }
    // score phase: invocations in subgroup order, LANES adjacent ones per
    // row (sr), lane `lane` over runs u0 .. u0 + NR - 1
    const uint sid = gl_SubgroupID * gl_SubgroupSize + gl_SubgroupInvocationID;
    const uint sr = sid / LANES, lane = sid % LANES, u0 = lane * NR;
    Run k_runs[NR];
    [[unroll]] for (uint k = 0u; k < NR; k++)
        k_runs[k] = run_of(K_ENC, K_BITS, K_QJL, u0 + k);
    // the lane's query floats: [t][k][half][4], S R q after R q
    vec4 qv[QV];
    if (Q_IN_REGS)
        [[unroll]] for (uint t = 0u; t < QT; t++)
            [[unroll]] for (uint s = 0u; s < QS; s++)
                [[unroll]] for (uint k = 0u; k < NR; k++)
                    [[unroll]] for (uint half_ = 0u; half_ < 2u; half_++)
                        qv[((t * QS + s) * NR + k) * 2u + half_] = qs[t * QW + s * (HEAD_DIM / 4u) + 2u * (u0 + k) + half_];
    // value phase: run vu of rows vr + k RL
    const uint vu = lid % RUNS, vr = lid / RUNS;
    const Run v_run = run_of(V_ENC, V_BITS, V_QJL, vu);
    float acc[QT * 8u * VA];
    [[unroll]] for (uint a = 0u; a < QT * 8u * VA; a++)
        acc[a] = 0.0;

    for (uint base = begin, nb; base < end; base += nb) {
        nb = min(BR, end - base);

        // ---- stage the K rows ----
        for (uint r = lid; r < nb; r += WG) {
            k_at[r] = row_address(pc.k, pc.k_head_stride, pc.k_block_stride, K_ROW_BYTES, blocks, unit.block_first,
                                  bt, h, base + r);
            v_at[r] = row_address(pc.v, pc.v_head_stride, pc.v_block_stride, V_ROW_BYTES, blocks, unit.block_first,
                                  bt, h, base + r);
        }
        barrier();
        stage_rows(false, nb, K_WPR);
        barrier();

        // ---- scores ----
        for (uint r = sr; r < BR; r += SP) { // the same trip count everywhere: shuffles below
            float score[QT];
            [[unroll]] for (uint t = 0u; t < QT; t++)
                score[t] = 0.0;
            if (r < nb) {
                uint row = staged_row(r, false), scale_at = ~0u;
                float s = 1.0;
                [[unroll]] for (uint k = 0u; k < NR; k++) {
                    Run run = k_runs[k];
                    if (run.scale != scale_at) { // a group's runs share its scale
                        s = run_scale(K_ENC, row, run);
                        scale_at = run.scale;
                    }
                    float raw[8];
                    run_raw(K_ENC, K_BITS, true, row, run, raw);
                    const uint u = u0 + k;
                    [[unroll]] for (uint t = 0u; t < QT; t++) {
                        vec4 qa = Q_IN_REGS ? qv[((t * QS) * NR + k) * 2u] : qs[t * QW + 2u * u];
                        vec4 qb = Q_IN_REGS ? qv[((t * QS) * NR + k) * 2u + 1u] : qs[t * QW + 2u * u + 1u];
                        score[t] += s * (dot(lo4(raw), qa) + dot(hi4(raw), qb));
                    }
                    if (K_QJL != 0u) {
                        uint z;
                        float w = run_signs(row, run, z), sgn[8];
                        [[unroll]] for (uint e = 0u; e < 8u; e++)
                            sgn[e] = ((z >> e) & 1u) != 0u ? 1.0 : -1.0;
                        const uint p = HEAD_DIM / 4u + 2u * u; // S R q
                        [[unroll]] for (uint t = 0u; t < QT; t++) {
                            vec4 qa = Q_IN_REGS ? qv[((t * QS + 1u) * NR + k) * 2u] : qs[t * QW + p];
                            vec4 qb = Q_IN_REGS ? qv[((t * QS + 1u) * NR + k) * 2u + 1u] : qs[t * QW + p + 1u];
                            score[t] += w * (dot(lo4(sgn), qa) + dot(hi4(sgn), qb));
                        }
                    }
                }
            }
            [[unroll]] for (uint d = 1u; d < LANES; d <<= 1u)
                [[unroll]] for (uint t = 0u; t < QT; t++)
                    score[t] += subgroupShuffleXor(score[t], d);
            if (lane == 0u && r < nb)
                [[unroll]] for (uint t = 0u; t < QT; t++) {
                    float x = scale * score[t];
                    if (softcap > 0.0)
                        x = softcap * tanh_stable(x / softcap);
                    uint j = base + r;
                    ps[r * PV + t / 4u][t % 4u] = j >= lo[t] && j < hi[t] ? x : NEG_INF;
                }
        }
        barrier();

        // ---- softmax: row r = sid of the batch ----
        float sc[QT], m_new[QT];
        [[unroll]] for (uint t = 0u; t < QT; t++) {
            sc[t] = sid < nb ? ps[sid * PV + t / 4u][t % 4u] : NEG_INF;
            m_new[t] = sc[t];
        }
        reduce_max(m_new);
        bool needed = false;
        float corr[QT];
        [[unroll]] for (uint t = 0u; t < QT; t++) {
            // the chunk's running max through the end of this batch
            m_new[t] = max(m_run[t], m_new[t]);
            corr[t] = m_new[t] == NEG_INF ? 1.0 : exp(m_run[t] - m_new[t]);
            float p = 0.0, kept = 0.0;
            if (sc[t] != NEG_INF) {
                p = exp(sc[t] - m_new[t]);
                if (p < threshold) {
                    skipped[t]++;
                } else {
                    kept = p;
                    needed = true;
                }
            }
            if (sid < BR)
                ps[sid * PV + t / 4u][t % 4u] = kept;
            l_own[t] = l_own[t] * corr[t] + p;
            m_run[t] = m_new[t];
        }
        if (sid < BR)
            keep[sid] = needed ? 1u : 0u;
        barrier();
        stage_rows(true, nb, V_WPR);
        barrier();

        // ---- values: only the rows some query row keeps are read ----
        if (vr < RL) {
            [[unroll]] for (uint a = 0u; a < QT * 8u * VA; a++)
                acc[a] *= corr[a / (8u * VA)];
            for (uint rr = vr; rr < nb; rr += RL) {
                if (keep[rr] == 0u)
                    continue;
                uint row = staged_row(rr, true);
                float raw[8], p[PV * 4u];
                [[unroll]] for (uint k = 0u; k < PV; k++) {
                    vec4 w4 = ps[rr * PV + k];
                    p[4u * k] = w4.x, p[4u * k + 1u] = w4.y, p[4u * k + 2u] = w4.z, p[4u * k + 3u] = w4.w;
                }
                float s = run_scale(V_ENC, row, v_run);
                run_raw(V_ENC, V_BITS, false, row, v_run, raw);
                [[unroll]] for (uint t = 0u; t < QT; t++) {
                    float w = p[t] * s;
                    [[unroll]] for (uint e = 0u; e < 8u; e++)
                        acc[(t * 8u + e) * VA] += w * raw[e];
                }
                if (VA > 1u) {
                    uint z;
                    float zw = run_signs(row, v_run, z);
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
    // ---- the chunk's partials (or, alone, the unit's result in xs) ----
    const bool alone = unit.n_chunks == 1u;
    const uint first_partial = (unit_index * n_kv + h) * QT; // the host keeps partial indices in 32 bits
    Partials ml = Partials(pc.work + uint64_t(pc.ml_at) * TKV_VK_ALIGN);
    Partials part = Partials(pc.work + uint64_t(pc.acc_at) * TKV_VK_ALIGN);
    // The row lanes hold sums over different rows of the same elements: add
    // them up through red, one query row and accumulator at a time.
    [[unroll]] for (uint t = 0u; t < QT; t++) {
        uint p = (first_partial + t) * max_chunks + c_local;
        if (lid == 0u && !alone) {
            ml.f[p * TKV_VK_ML_FLOATS] = m_run[t];
            ml.f[p * TKV_VK_ML_FLOATS + 1u] = l_own[t];
            ml.f[p * TKV_VK_ML_FLOATS + 2u] = uintBitsToFloat(skipped[t]);
        }
        [[unroll]] for (uint a = 0u; a < VA; a++) {
            if (vr < RL)
                [[unroll]] for (uint e = 0u; e < 8u; e++)
                    stage[vr * HEAD_DIM + 8u * vu + e] = floatBitsToUint(acc[(t * 8u + e) * VA + a]);
            barrier();
            for (uint i = lid; i < HEAD_DIM; i += WG) {
                float sum = 0.0;
                for (uint l = 0u; l < RL; l++)
                    sum += uintBitsToFloat(stage[l * HEAD_DIM + i]);
                if (alone)
                    xs[(a * QT + t) * HEAD_DIM + i] = sum;
                else
                    part.f[(p * VA + a) * HEAD_DIM + i] = sum;
            }
            barrier();
        }
    }

    float big[QT], total[QT];
    uint n_skipped[QT];
    if (alone) {
        [[unroll]] for (uint t = 0u; t < QT; t++) {
            big[t] = m_run[t];
            total[t] = l_own[t];
            n_skipped[t] = skipped[t];
        }
    } else {
        // ---- the last workgroup of the (unit, kv head) to finish merges ----
        memoryBarrierBuffer();
        barrier();
        if (lid == 0u) {
            uint done = atomicAdd(Counters(pc.counters).u[unit_index * n_kv + h], 1u) + 1u;
            last_arrival = done == unit.n_chunks ? 1u : 0u;
            if (done == unit.n_chunks)
                atomicExchange(Counters(pc.counters).u[unit_index * n_kv + h], 0u); // for the next call
        }
        barrier();
        if (last_arrival == 0u)
            return;
        memoryBarrierBuffer();
        const uint nc = unit.n_chunks;
        //   out = sum_c e^(m_c - M) acc_c / sum_c e^(m_c - M) l_c,   M = max_c m_c
        [[unroll]] for (uint t = 0u; t < QT; t++) {
            big[t] = NEG_INF;
            for (uint k = lid; k < nc; k += WG)
                big[t] = max(big[t], ml.f[((first_partial + t) * max_chunks + k) * TKV_VK_ML_FLOATS]);
        }
        reduce_max(big);
        [[unroll]] for (uint t = 0u; t < QT; t++) {
            total[t] = 0.0;
            n_skipped[t] = 0u;
            for (uint k = lid; k < nc; k += WG) {
                uint at = ((first_partial + t) * max_chunks + k) * TKV_VK_ML_FLOATS;
                float m_c = ml.f[at], w = m_c == NEG_INF ? 0.0 : exp(m_c - big[t]);
                ps[(t * nc + k) / 4u][(t * nc + k) % 4u] = w;
                total[t] += w * ml.f[at + 1u];
                n_skipped[t] += floatBitsToUint(ml.f[at + 2u]);
            }
        }
        reduce_sum(total);
        reduce_count(n_skipped);
        // four elements an invocation, 16-byte loads, sixteen chunks in flight
        Partials4 part4 = Partials4(pc.work + uint64_t(pc.acc_at) * TKV_VK_ALIGN);
        for (uint e = 4u * lid; e < XS; e += 4u * WG) {
            uint a = e / (QT * HEAD_DIM), t = (e / HEAD_DIM) % QT, i = e % HEAD_DIM;
            uint p = (first_partial + t) * max_chunks;
            vec4 s[16];
            [[unroll]] for (uint k = 0u; k < 16u; k++)
                s[k] = vec4(0.0);
            uint k0 = 0u;
            for (; k0 + 16u <= nc; k0 += 16u)
                [[unroll]] for (uint k = 0u; k < 16u; k++)
                    s[k] += ps[(t * nc + k0 + k) / 4u][(t * nc + k0 + k) % 4u] *
                            part4.f[(((p + k0 + k) * VA + a) * HEAD_DIM + i) / 4u];
            for (uint k = k0; k < nc; k++)
                s[k - k0] += ps[(t * nc + k) / 4u][(t * nc + k) % 4u] * part4.f[(((p + k) * VA + a) * HEAD_DIM + i) / 4u];
            [[unroll]] for (uint k = 8u; k > 0u; k /= 2u)
                [[unroll]] for (uint j = 0u; j < k; j++)
                    s[j] += s[j + k];
            xs[e] = s[0].x, xs[e + 1u] = s[0].y, xs[e + 2u] = s[0].z, xs[e + 3u] = s[0].w;
        }
        barrier();
    }

    // ---- normalize, S^T (QJL values), R^T, write ----
    for (uint e = lid; e < XS; e += WG)
        xs[e] *= 1.0 / total[(e / HEAD_DIM) % QT];
    barrier();
    if (VA > 1u) {
        // y += S^T zs per group: what every cached row's scale gamma S^T z
        // would have added, applied once (S^T is linear)
        for (uint e = lid; e < QT * HEAD_DIM; e += WG) {
            uint t = e / HEAD_DIM, i = e % HEAD_DIM, size, first;
            group_of(groups, i, size, first);
            uint s0 = qjl_at(group_index(size)) + i - first;
            float v = xs[e];
            for (uint j = 0u; j < size; j++)
                v += m.f[s0 + j * size] * xs[(QT + t) * HEAD_DIM + first + j];
            xs[e] = v;
        }
        barrier();
    }
    if (V_ENC == TKV_VK_ENC_TURBO)
        rotate_rows(n_rows, HEAD_DIM, groups, V_ROT, true, pc.math);
    const uint n_q_heads = n_kv * ratio;
    for (uint e = lid; e < n_rows * HEAD_DIM; e += WG) {
        uint t = e / HEAD_DIM, i = e % HEAD_DIM, qr = qr0 + t;
        uint row = (unit.q_first + qr / ratio) * n_q_heads + h * ratio + qr % ratio;
        Floats(pc.io + uint64_t(pc.out_at) * TKV_VK_ALIGN).f[row * HEAD_DIM + i] = xs[e];
    }
    [[unroll]] for (uint t = 0u; t < QT; t++)
        if (lid == 0u && t < n_rows) {
            uint qr = qr0 + t, row = (unit.q_first + qr / ratio) * n_q_heads + h * ratio + qr % ratio;
            Uints(pc.io + uint64_t(pc.counts_at) * TKV_VK_ALIGN).u[row] = n_skipped[t];
            Floats(pc.io + uint64_t(pc.lse_at) * TKV_VK_ALIGN).f[row] = big[t] + log(total[t]);
        }
}
