/* SPDX-License-Identifier: MIT */
#version 460
// Decode attention by subgroups: the same partials as attention.comp (one
// per query row, kv head and chunk; merge.comp combines them), computed
// without a workgroup barrier in the loop over the rows.
//
// A workgroup takes one chunk of one (unit, kv head) and holds NSG = WG /
// SG subgroups; each walks its own NSG-th of the chunk, SG rows at a time:
//   loads     lane r loads the K and the V row of row base + r into
//             registers, every load of the batch issued before any is used
//             (rows lie in pool blocks at any byte alignment: whole words,
//             shifted into place), and puts its V row into shared memory;
//   scores    lane r scores its K row for all QT query rows of the unit
//             (the centroids from shared memory, the queries as broadcast
//             vec4 loads);
//   softmax   per query row: the running max m of the subgroup's rows
//             through the end of the batch (subgroupMax), the weights
//             exp(x_j - m), the rescale of what was accumulated (online
//             softmax, Milakov & Gimelshein 2018). Sparse V: row j's V is
//             skipped for a query row when exp(x_j - m) < threshold, the rule
//             of attention.comp and of the OpenCL plugin (plugins/vulkan/
//             README.md, "Sparse V");
//   values    lane l owns DPL = HEAD_DIM / SG consecutive coordinates and
//             walks the batch's rows that some query row keeps, reading its
//             bits of each V row from shared memory and accumulating p * V
//             in the rotated domain for turbo values.
// Each lane's accumulators hold whole coordinates, so no reduction across
// lanes is needed; at the end the NSG subgroups' partials are combined in
// shared memory (one barrier each) into the workgroup's one partial. With
// FUSED the workgroup that finishes a (unit, kv head) last then merges its
// chunks' partials (merge.comp's work for its rows: no merge dispatch).
// Both steps are partials.glsl.
//
// The host (attention.c, decode_qt_max) uses this shader only where its
// assumptions hold: the device's subgroups have exactly SG invocations
// (min = max subgroup size), HEAD_DIM is a multiple of 32 and of SG with DPL
// a power of two, every turbo group holds a multiple of 32 values, keys and
// values are turbo (no QJL part; the outlier-split types included), q8_0 or
// f16 with rows of at most TKV_VK_DECODE_ROW_WORDS words (turbo3o up to
// head_dim 128, turbo4o up to 96), and the shared arrays fit.
//
// Outlier-split keys: the lane that scores a K row adds q[i] x_i for each
// of its outliers, against q itself (qo beside qs). Outlier-split values:
// the lane that loads a V row marks, per outlier slot, the row in a mask of
// the lane that owns the outlier's coordinate (omask, shared atomicOr);
// after the batch's values each lane walks the rows its masks name, in
// order, and adds their outliers, unscaled and unrotated, into acco, a
// second set of accumulators that becomes each partial's second half (the
// merge adds it after R^T).
#extension GL_GOOGLE_include_directive : require
#extension GL_KHR_shader_subgroup_basic : require
#extension GL_KHR_shader_subgroup_arithmetic : require
#extension GL_EXT_control_flow_attributes : require
#if defined(TKV_TC) && TKV_TC // tensor.glsl
#extension GL_NV_cooperative_matrix : require
#extension GL_EXT_shader_explicit_arithmetic_types_float16 : require
#extension GL_KHR_memory_scope_semantics : require
#extension GL_KHR_shader_subgroup_shuffle : require
#extension GL_KHR_shader_subgroup_vote : require
#endif

#define TKV_VK_MATH_SPEC
#include "common.glsl"

// TKV_CLOCK=1 (the decode_clock variant, TURBO_VK_CLOCK=1): invocation 0 of
// each workgroup writes its clock record (interface.h, TKV_VK_CLOCK_*) at
// the address of the CLOCK_LO / CLOCK_HI specialization constants.
#if defined(TKV_CLOCK) && TKV_CLOCK
#extension GL_ARB_shader_clock : require
#extension GL_EXT_shader_realtime_clock : require
layout(constant_id = TKV_VK_SPEC_CLOCK_LO) const uint CLOCK_LO = 0u;
layout(constant_id = TKV_VK_SPEC_CLOCK_HI) const uint CLOCK_HI = 0u;
layout(buffer_reference, std430, buffer_reference_align = 8) buffer ClockRecords { uint64_t c[]; };
#define CLOCK_AT(wid, i) ClockRecords(uint64_t(CLOCK_HI) << 32 | uint64_t(CLOCK_LO)).c[(wid) * TKV_VK_CLOCK_WORDS + (i)]
#define CLOCK_MARK(wid, i) if (gl_LocalInvocationIndex == 0u) CLOCK_AT(wid, i) = packUint2x32(clock2x32ARB())
#define CLOCK_REALTIME(wid, i) if (gl_LocalInvocationIndex == 0u) CLOCK_AT(wid, i) = packUint2x32(clockRealtime2x32EXT())
#else
#define CLOCK_MARK(wid, i)
#define CLOCK_REALTIME(wid, i)
#endif

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
layout(constant_id = TKV_VK_SPEC_Q_ROT) const uint Q_ROT = TKV_VK_ROT_NONE;
layout(constant_id = TKV_VK_SPEC_SUBGROUP) const uint SG = 32u;
// stages left out for measurement (TURBO_VK_SHADER_SKIP): TKV_VK_DBG_* bits
layout(constant_id = TKV_VK_SPEC_DEBUG) const uint DBG = 0u;
layout(constant_id = TKV_VK_SPEC_K_SPLIT) const uint K_SPLIT = 0u;
layout(constant_id = TKV_VK_SPEC_V_SPLIT) const uint V_SPLIT = 0u;
layout(constant_id = TKV_VK_SPEC_FUSED) const uint FUSED = 0u;
layout(constant_id = TKV_VK_SPEC_V_ROT) const uint V_ROT = TKV_VK_ROT_NONE;
layout(constant_id = TKV_VK_SPEC_V_ROWS) const uint V_ROWS_SET = 0u;
layout(constant_id = TKV_VK_SPEC_MERGE_ILP) const uint MERGE_ILP_SET = 0u;

layout(push_constant, std430) uniform Push { TKV_VK_ATTENTION_PUSH } pc;

struct Unit { TKV_VK_UNIT_MEMBERS };
layout(buffer_reference, std430, buffer_reference_align = 4) readonly buffer Units { Unit u[]; };

const uint WG = gl_WorkGroupSize.x;
const uint NSG = WG / SG;              // subgroups per workgroup, a chunk each
const uint DPL = HEAD_DIM / SG;        // value coordinates per lane
const uint VA = V_SPLIT != 0u ? 2u : 1u; // halves of a partial: values, then the outliers (unrotated)
const uint QT4 = (QT + 3u) / 4u;       // vec4s of one element's query rows
const uint SEGS = HEAD_DIM / 32u;      // K segments of 32 values
// words of a row from bit 0, and one more to shift a misaligned row into place
const uint KW = (K_ROW_BYTES + 3u) / 4u, VW = (V_ROW_BYTES + 3u) / 4u;
const uint VRW = VW | 1u;              // words between rows in vs: odd, so lanes hit distinct banks
const uint VSC = HEAD_DIM / 32u;       // most scales of a V row (turbo groups, q8_0 blocks)
// turbo values of one group a row (no outliers): the row's weights are
// stored already multiplied by its scale, the products the value loop
// would form for every lane (the same float multiply: the same bits)
// (glslang 12 emits invalid SPIR-V for && between specialization constants:
// the product of three selects instead)
const uint V_PRESCALE = (V_ENC == TKV_VK_ENC_TURBO ? 1u : 0u) * (V_SPLIT == 0u ? 1u : 0u) * ((GROUPS0 & 0xffu) == HEAD_DIM ? 1u : 0u);
// outlier-split rows: N_OUT indices of OUT_IB bytes, then N_OUT fp16 values,
// after the turbo part
const uint N_OUT = (HEAD_DIM + TKV_VK_OUTLIER_EVERY - 1u) / TKV_VK_OUTLIER_EVERY;
const uint OUT_IB = HEAD_DIM <= TKV_VK_OUTLIER_BYTE_INDEX_MAX ? 1u : 2u;
// V rows taken together in the value loop (their loads and products
// independent; a group no query row keeps is skipped whole)
const uint VR = V_ROWS_SET != 0u ? V_ROWS_SET : 4u;
// the queries as the keys are scored against: raw, or R q prepared by the
// rows shader (turbo keys whose tile does not fit the fused rotation; for
// outlier-split keys [R q | q])
const uint Q_STRIDE = K_ENC == TKV_VK_ENC_TURBO && Q_ROT == TKV_VK_ROT_NONE && K_SPLIT != 0u ? 2u * HEAD_DIM : HEAD_DIM;
#define NEG_INF uintBitsToFloat(0xff800000u)

// TKV_TC=1 (the decode_tc variant): the loop of tensor.glsl, which keeps
// none of the loop's arrays below (each then one element)
#if defined(TKV_TC) && TKV_TC
#define LOOP_ARRAY(n) 1u
#else
#define LOOP_ARRAY(n) (n)
#endif
shared vec4 qs[LOOP_ARRAY(HEAD_DIM * QT4)]; // [element][query row / 4]
shared vec4 qo[K_SPLIT != 0u ? HEAD_DIM * QT4 : 1u]; // outlier-split keys: q itself, as qs
shared float xs[QT * HEAD_DIM];        // the raw queries while Q_ROT rotates them; at the end the partials
shared float xo[V_SPLIT != 0u ? QT * HEAD_DIM : 1u]; // outlier-split values: the outliers' partials
shared float cent_k[80], cent_v[80];   // codebooks of the group sizes: [gi * 16 + index]
shared vec4 ws[LOOP_ARRAY(WG * QT4)];  // per subgroup lane: its row's weights
shared uint vs[LOOP_ARRAY(WG * VRW)];  // per subgroup lane: its V row, from bit 0
shared uint keep[LOOP_ARRAY(WG)];      // per subgroup lane: some query row keeps its V
// outlier-split values: per subgroup lane and outlier slot o, the rows of
// the batch whose o-th outlier lies in that lane's coordinates (bit r: row
// base + r)
shared uint omask[V_SPLIT != 0u ? WG * N_OUT : 1u];
shared float vsc[LOOP_ARRAY(WG * VSC)]; // per subgroup lane: its V row's scales, as floats

#include "rotate.glsl"
#include "partials.glsl"
#if defined(TKV_TC) && TKV_TC
#include "tensor.glsl"
#endif

// TKV_APPEND=1 (the decode_append variants, ABI 2.7's append_attention,
// with FUSED): step 0 below quantizes the new tokens' rows with the
// encoder of quantize.comp, as its fp64 variant does (TKV_FP64=1).
#if defined(TKV_APPEND) && TKV_APPEND
#extension GL_EXT_shader_8bit_storage : require
struct Append { TKV_VK_APPEND_MEMBERS };
layout(buffer_reference, std430, buffer_reference_align = 8) readonly buffer AppendArgs { Append a; };
#include "exact.glsl"
#define ENC_ELEMS (2u * HEAD_DIM)
#define ENC_ROWS 2u
#define ENC_QJL 0
// The encoder's scratch on arrays step 0 comes before (no more shared
// memory: on an H100 2.9 KB more of it made turbo3o's decode 1.6x slower at
// 128K, docs/measurements/gpu-2026-12-07-s27/), for two rows (ENC_ELEMS):
// the rows in xs (where QT >= 2), the input in vsc (WG x HEAD_DIM / 32
// floats), the indices and then the running sums in double (two words
// each) in vs (WG x VRW words, at least 8 HEAD_DIM), the squared centroids
// in ws (at least 512 floats: decode.comp's head_dim is at most 256), the
// norms and the q8_0 factors in cent_k and cent_v (80), the outlier masks
// in keep (WG).
#define ENC_ALIASED
// K and V of one type (the pipeline's formats; flags and rotations are the
// call's) are encoded side by side where xs holds two rows (glslang 12:
// products of selects, not && of specialization constants)
const uint APPEND_PAIRS = (K_ENC == V_ENC ? 1u : 0u) * (K_BITS == V_BITS ? 1u : 0u) * (K_SPLIT == V_SPLIT ? 1u : 0u) *
                          (QT >= 2u ? 1u : 0u);
#define enc_xin vsc
#define enc_ids vs
#define enc_norms cent_k
#define enc_aux cent_v
#define enc_omask keep
#define ENC_CSQ(i) ws[(i) >> 2u][(i) & 3u]
#define ENC_PART_GET(i) packDouble2x32(uvec2(vs[ENC_ELEMS + 2u * (i)], vs[ENC_ELEMS + 2u * (i) + 1u]))
#define ENC_PART_SET(i, v)                                                                                        \
    {                                                                                                            \
        const uvec2 w_ = unpackDouble2x32(v);                                                                    \
        vs[ENC_ELEMS + 2u * (i)] = w_.x;                                                                          \
        vs[ENC_ELEMS + 2u * (i) + 1u] = w_.y;                                                                     \
    }
#include "encode.glsl"

// Step 0, the first thing a workgroup does (nothing else live across it:
// the encoder's registers are not added to the loop's): the new tokens of
// kv head h in this workgroup's chunk of the unit's visible rows, K and V
// rows side by side (one format) or K then V, each stored before the
// chunk's first load reads it.
// Any other unit whose chunk holds one of them stores the same bytes; no
// workgroup reads a new row it has not stored itself. The stores are made
// visible to the workgroup's own loads (a buffer memory barrier, then the
// barrier). The formats are the pipeline's (the outlier flag only where
// K_SPLIT / V_SPLIT say: the same flags, known at compile time).
void append_rows(uint unit_index, uint h, uint cg)
{
    const Unit unit = Units(pc.inputs + uint64_t(pc.units_at) * TKV_VK_ALIGN).u[unit_index];
    if (cg >= unit.n_chunks)
        return;
    const Append ap = AppendArgs(pc.inputs + uint64_t(unit.fused_at) * TKV_VK_ALIGN + TKV_VK_FUSED_BYTES).a;
    // the unit's visible rows [lo, hi) (main's lo_tile, hi_tile) and the chunk's
    const uint n_q_rows = unit.n_q * pc.ratio, qr_last = min(unit.qr0 + QT, n_q_rows) - 1u, p0 = unit.n_ctx - unit.n_q;
    const uint p_first = p0 + unit.qr0 / pc.ratio, hi = p0 + qr_last / pc.ratio + 1u;
    const uint lo = pc.window != 0u && p_first + 1u > pc.window ? p_first + 1u - pc.window : 0u;
    const uint c = unit.c_first + cg;
    const uint p_lo = max(ap.first, max(c * pc.chunk, lo + pc.grid_off) - pc.grid_off);
    const uint p_hi = min(ap.first + ap.n, min(c * pc.chunk + pc.chunk, hi + pc.grid_off) - pc.grid_off);
    const uint64_t blocks = pc.inputs + uint64_t(pc.blocks_at) * TKV_VK_ALIGN + 4ul * unit.block_first;
    // K and V rows of one format (and xs holding two rows): one call of two
    // rows, else a call a row
    const uint rows =
        APPEND_PAIRS != 0u && ap.k_flags == ap.v_flags && ap.k_rotation == ap.v_rotation && ap.k_elem == ap.v_elem ? 2u : 1u;
    for (uint pos = p_lo; pos < p_hi; pos++)
        [[dont_unroll]] for (uint kv = 0u; kv < 2u; kv += rows) {
            const uint64_t block = uint64_t(Uints(blocks).u[pos / pc.block_tokens]), in_block = uint64_t(pos % pc.block_tokens);
            const uint64_t row = (uint64_t(pos - ap.first) * pc.n_kv + h) * uint64_t(HEAD_DIM);
            EncArgs ea;
            ea.src_elem = kv == 0u ? ap.k_elem : ap.v_elem;
            ea.src = (kv == 0u ? ap.k_src : ap.v_src) + row * (ea.src_elem == 0u ? 4ul : 2ul);
            ea.src1 = ap.v_src + row * (ap.v_elem == 0u ? 4ul : 2ul);
            ea.math = MATH;
            ea.counter = 0ul;
            ea.groups = uvec4(GROUPS0, GROUPS1, GROUPS2, GROUPS3);
            ea.nr = rows;
            ea.hd = HEAD_DIM;
            ea.encoding = kv == 0u ? K_ENC : V_ENC;
            ea.bits = kv == 0u ? K_BITS : V_BITS;
            ea.rotation = kv == 0u ? ap.k_rotation : ap.v_rotation;
            ea.flags = kv == 0u ? (K_SPLIT != 0u ? ap.k_flags : ap.k_flags & ~TKV_VK_FLAG_OUTLIER)
                                : (V_SPLIT != 0u ? ap.v_flags : ap.v_flags & ~TKV_VK_FLAG_OUTLIER);
            ea.q8_block = Q8_BLOCK;
            const uint64_t k_at = pc.k + block * pc.k_block_stride + uint64_t(h) * pc.k_head_stride + in_block * K_ROW_BYTES;
            const uint64_t v_at = pc.v + block * pc.v_block_stride + uint64_t(h) * pc.v_head_stride + in_block * V_ROW_BYTES;
            if (gl_LocalInvocationIndex == 0u)
                enc_base[0] = kv == 0u ? k_at : v_at;
            else if (gl_LocalInvocationIndex == 1u)
                enc_base[1] = v_at;
            encode_rows(ea);
            barrier(); // the encoder's shared arrays, rewritten by the next call
        }
    if (p_lo < p_hi) {
        memoryBarrierBuffer();
        barrier();
    }
}
#endif

// Word k of the byte stream that starts `sh` bits into w[0] (sh < 32).
#define FUNNEL(w, k, sh) (((w)[k] >> (sh)) | (((w)[(k) + 1u] << 1u) << (31u - (sh))))
// n bits (n <= 16) at the constant bit position b of the V row at word w of vs.
#define VS_BITS(w, b, n) ((((b) & 31u) + (n) <= 32u) ? bitfieldExtract(vs[(w) + ((b) >> 5u)], int((b) & 31u), int(n)) \
                          : ((vs[(w) + ((b) >> 5u)] >> ((b) & 31u)) | (vs[(w) + ((b) >> 5u) + 1u] << (32u - ((b) & 31u)))) & \
                                ((1u << (n)) - 1u))
// n bits at the constant bit position b of the words nw.
#define BITS_AT(nw, b, n)                                                                      \
    ((((b) & 31u) + (n) <= 32u)                                                                \
         ? bitfieldExtract((nw)[(b) >> 5u], int((b) & 31u), int(n))                            \
         : (((nw)[(b) >> 5u] >> ((b) & 31u)) | ((nw)[((b) >> 5u) + 1u] << (32u - ((b) & 31u)))) & \
               ((1u << (n)) - 1u))

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

// <q_t, k> of the K row held in kw (its bytes from bit 0) for the QT query
// rows (turbo keys: <R q, y_hat> per group times its scale; outlier-split
// keys: plus their outliers against q itself).
void score_row(uint kw[TKV_VK_DECODE_ROW_WORDS], out float s[QT])
{
    const uvec4 groups = uvec4(GROUPS0, GROUPS1, GROUPS2, GROUPS3);
    [[unroll]] for (uint t = 0u; t < QT; t++)
        s[t] = 0.0;
    float part[QT], part2[QT];
    float scale = 0.0;
    [[unroll]] for (uint seg = 0u; seg < SEGS; seg++) {
        const uint e0 = 32u * seg;
        if (K_ENC == TKV_VK_ENC_TURBO) {
            uint size, first, k = group_of(groups, e0, size, first);
            const uint gi = group_index(size), g_bit = 8u * (2u * k + first * K_BITS / 8u);
            if (e0 == first) {
                [[unroll]] for (uint t = 0u; t < QT; t++)
                    part[t] = part2[t] = 0.0;
                scale = tkv_fp16_to_float(BITS_AT(kw, g_bit, 16u));
            }
            const uint b0 = g_bit + 16u + (e0 - first) * K_BITS;
            [[unroll]] for (uint e = 0u; e < 32u; e += 2u) { // two chains of sums
                add_products(part, cent_k[gi * 16u + BITS_AT(kw, b0 + e * K_BITS, K_BITS)], e0 + e);
                add_products(part2, cent_k[gi * 16u + BITS_AT(kw, b0 + (e + 1u) * K_BITS, K_BITS)], e0 + e + 1u);
            }
            if (e0 + 32u == first + size) // the group ends with this segment
                [[unroll]] for (uint t = 0u; t < QT; t++)
                    s[t] += scale * (part[t] + part2[t]);
        } else if (K_ENC == TKV_VK_ENC_Q8_0) {
            [[unroll]] for (uint t = 0u; t < QT; t++)
                part[t] = part2[t] = 0.0;
            const uint b_bit = 8u * (e0 / Q8_BLOCK) * (Q8_BLOCK + 2u);
            scale = tkv_fp16_to_float(BITS_AT(kw, b_bit, 16u));
            [[unroll]] for (uint e = 0u; e < 32u; e += 2u) {
                add_products(part, float(int(BITS_AT(kw, b_bit + 16u + 8u * e, 8u) << 24u) >> 24), e0 + e);
                add_products(part2, float(int(BITS_AT(kw, b_bit + 24u + 8u * e, 8u) << 24u) >> 24), e0 + e + 1u);
            }
            [[unroll]] for (uint t = 0u; t < QT; t++)
                s[t] += scale * (part[t] + part2[t]);
        } else { // f16
            if (seg == 0u)
                [[unroll]] for (uint t = 0u; t < QT; t++)
                    part[t] = part2[t] = 0.0;
            [[unroll]] for (uint e = 0u; e < 32u; e += 2u) {
                vec2 v = unpackHalf2x16(kw[(e0 + e) >> 1u]);
                add_products(part, v.x, e0 + e);
                add_products(part2, v.y, e0 + e + 1u);
            }
            if (seg == SEGS - 1u)
                [[unroll]] for (uint t = 0u; t < QT; t++)
                    s[t] = part[t] + part2[t];
        }
    }
    if (K_SPLIT != 0u && (DBG & TKV_VK_DBG_NO_K_OUTLIERS) == 0u) { // + sum_o q[i_o] x_o, against q itself
        const uint at = 8u * outlier_offset(groups, HEAD_DIM, K_BITS);
        [[unroll]] for (uint o = 0u; o < N_OUT; o++) {
            const uint i = BITS_AT(kw, at + 8u * OUT_IB * o, 8u * OUT_IB);
            const float x = unpackHalf2x16(BITS_AT(kw, at + 8u * (N_OUT * OUT_IB + 2u * o), 16u)).x;
            [[unroll]] for (uint t4 = 0u; t4 < QT4; t4++) {
                const vec4 q = qo[i * QT4 + t4];
                [[unroll]] for (uint u = 0u; u < 4u; u++)
                    if (4u * t4 + u < QT)
                        s[4u * t4 + u] += x * q[u];
            }
        }
    }
}

// The words of the row at addr from its bit 0 into w (n words).
void load_row(uint64_t addr, out uint w[TKV_VK_DECODE_ROW_WORDS], uint n)
{
    Words p = Words(addr & ~uint64_t(3));
    const uint sh = uint(addr & 3ul) * 8u;
    uint raw[TKV_VK_DECODE_ROW_WORDS + 1];
    [[unroll]] for (uint i = 0u; i <= n; i++) // (the word past a pool's last row is its slack)
        raw[i] = p.w[i];
    [[unroll]] for (uint i = 0u; i < n; i++)
        w[i] = FUNNEL(raw, i, sh);
}

// Row j's K and V words (pool blocks from the block table at `blocks`), or
// made-up words where the measurement knobs leave the loads out.
void load_pair(uint j, uint h, uint64_t blocks, out uint kw[TKV_VK_DECODE_ROW_WORDS], out uint vw[TKV_VK_DECODE_ROW_WORDS])
{
    const uint bi = j / pc.block_tokens, in_block = j - bi * pc.block_tokens;
    const uint64_t block = (DBG & TKV_VK_DBG_NO_BLOCKS) == 0u ? uint64_t(Uints(blocks).u[bi]) : uint64_t(bi);
    if ((DBG & TKV_VK_DBG_NO_K_LOADS) == 0u)
        load_row(pc.k + block * pc.k_block_stride + uint64_t(h) * pc.k_head_stride + uint64_t(in_block) * K_ROW_BYTES, kw,
                 KW);
    else
        [[unroll]] for (uint i = 0u; i < TKV_VK_DECODE_ROW_WORDS; i++)
            kw[i] = (j * 2654435761u) ^ (i * 40503u);
    if ((DBG & TKV_VK_DBG_NO_V_LOADS) == 0u)
        load_row(pc.v + block * pc.v_block_stride + uint64_t(h) * pc.v_head_stride + uint64_t(in_block) * V_ROW_BYTES, vw,
                 VW);
    else
        [[unroll]] for (uint i = 0u; i < TKV_VK_DECODE_ROW_WORDS; i++)
            vw[i] = (j * 2246822519u) ^ (i * 40503u);
}

// Element e of the unit's query rows (row e / HEAD_DIM; past the last: 0):
// as the keys are scored (v), and q itself for outlier-split keys (raw).
void query_element(uint e, uint h, uint q_first, uint qr0, uint n_q_rows, out float v, out float raw)
{
    const uint j = e / HEAD_DIM, i = e % HEAD_DIM, qr = qr0 + j;
    v = raw = 0.0;
    if (qr < n_q_rows) {
        uint head = h * pc.ratio + qr % pc.ratio, token = q_first + qr / pc.ratio;
        uint64_t row = uint64_t(token) * (pc.n_kv * pc.ratio) + head;
        Floats q = Floats(pc.q + 4ul * (row * Q_STRIDE));
        v = q.f[i];
        if (K_SPLIT != 0u) // q itself: the raw row, or the prepared row's second half
            raw = Q_ROT != TKV_VK_ROT_NONE ? v : q.f[HEAD_DIM + i];
    }
}

void main()
{
    const uint lid = gl_LocalInvocationIndex, sgid = gl_SubgroupID, lane = gl_SubgroupInvocationID;
    const uint slot = sgid * SG; // this subgroup's entries in ws, vs, keep, vsc
    const uint wid = flat_workgroup(), cg = wid % pc.max_chunks, uh = wid / pc.max_chunks;
    const uint h = uh % pc.n_kv, unit_index = uh / pc.n_kv;
    if (unit_index >= pc.n_units)
        return;
#if defined(TKV_APPEND) && TKV_APPEND
    append_rows(unit_index, h, cg);
#endif
    CLOCK_REALTIME(wid, TKV_VK_CLOCK_RT_START);
    CLOCK_MARK(wid, TKV_VK_CLOCK_START);
    // What needs nothing but the push constants, in flight before the first
    // wait: the codebooks and the query rotation's factors (WG >= 80).
    const uvec4 groups = uvec4(GROUPS0, GROUPS1, GROUPS2, GROUPS3);
    Floats m = Floats(MATH);
    float ck = 0.0, cv = 0.0;
    if (lid < 80u) {
        ck = K_ENC == TKV_VK_ENC_TURBO && lid % 16u < (1u << K_BITS) ? m.f[codebook_at(lid / 16u, K_BITS) + lid % 16u] : 0.0;
        cv = V_ENC == TKV_VK_ENC_TURBO && lid % 16u < (1u << V_BITS) ? m.f[codebook_at(lid / 16u, V_BITS) + lid % 16u] : 0.0;
    }
    WhtFactors qf;
    if (Q_ROT == TKV_VK_ROT_WHT)
        qf = wht_factors(QT, HEAD_DIM, groups, false, MATH);
    Unit unit = Units(pc.inputs + uint64_t(pc.units_at) * TKV_VK_ALIGN).u[unit_index];
    if (cg >= unit.n_chunks)
        return; // (uniform: the whole workgroup)
    const uint n_q_rows = unit.n_q * pc.ratio, qr0 = unit.qr0, qr_last = min(qr0 + QT, n_q_rows) - 1u;
    const uint p0 = unit.n_ctx - unit.n_q, hi_tile = p0 + qr_last / pc.ratio + 1u, p_first = p0 + qr0 / pc.ratio;
    const uint lo_tile = pc.window != 0u && p_first + 1u > pc.window ? p_first + 1u - pc.window : 0u;
    const uint64_t blocks = pc.inputs + uint64_t(pc.blocks_at) * TKV_VK_ALIGN + 4ul * unit.block_first;
    // this subgroup's rows of the chunk
    const uint c = unit.c_first + cg, per_sg = pc.chunk / NSG;
    // (the chunks' grid shifted by grid_off rows: lo_tile and hi_tile
    // shifted alike, the result back; an empty part ends where it begins)
    const uint begin_s = max(c * pc.chunk + sgid * per_sg, lo_tile + pc.grid_off);
    const uint begin = begin_s - pc.grid_off;
    const uint end = max(min(c * pc.chunk + (sgid + 1u) * per_sg, hi_tile + pc.grid_off), begin_s) - pc.grid_off;

    // The unit's queries (rows past its last are zero), rotated here with
    // Q_ROT as the rows shader would: R q. Where each invocation's elements
    // fit registers, their loads and the first batch's K and V rows are all
    // in flight before the first is used.
    const uint NQ = HEAD_DIM * QT;
    const bool Q_REGS = NQ <= TKV_VK_ROWS_ELEMS;
    float qv[ROT_MAXK], qraw[ROT_MAXK];
    if (Q_REGS)
        [[unroll]] for (uint k = 0u; k < ROT_MAXK; k++) {
            qv[k] = qraw[k] = 0.0;
            if (lid + k * WG < NQ)
                query_element(lid + k * WG, h, unit.q_first, qr0, n_q_rows, qv[k], qraw[k]);
        }
    uint kw[TKV_VK_DECODE_ROW_WORDS], vw[TKV_VK_DECODE_ROW_WORDS];
#if !defined(TKV_TC) || !TKV_TC
    if (begin + lane < end)
        load_pair(begin + lane, h, blocks, kw, vw);
#endif
    if (Q_REGS)
        [[unroll]] for (uint k = 0u; k < ROT_MAXK; k++) {
            const uint e = lid + k * WG;
            if (e < NQ) {
                xs[e] = qv[k];
                if (K_SPLIT != 0u)
                    qo[(e % HEAD_DIM) * QT4 + e / HEAD_DIM / 4u][(e / HEAD_DIM) % 4u] = qraw[k];
            }
        }
    else
        for (uint e = lid; e < NQ; e += WG) {
            float v, raw;
            query_element(e, h, unit.q_first, qr0, n_q_rows, v, raw);
            xs[e] = v;
            if (K_SPLIT != 0u)
                qo[(e % HEAD_DIM) * QT4 + e / HEAD_DIM / 4u][(e / HEAD_DIM) % 4u] = raw;
        }
    if (K_SPLIT != 0u) // the query rows past QT of the last vec4
        for (uint e = lid; e < HEAD_DIM * (QT4 * 4u - QT); e += WG) {
            uint i = e / (QT4 * 4u - QT), j = QT + e % (QT4 * 4u - QT);
            qo[i * QT4 + j / 4u][j % 4u] = 0.0;
        }
    barrier();
    if (Q_ROT == TKV_VK_ROT_WHT)
        wht_rows(QT, HEAD_DIM, groups, qf);
    else if (Q_ROT != TKV_VK_ROT_NONE)
        rotate_rows(QT, HEAD_DIM, groups, Q_ROT, false, MATH);
#if defined(TKV_TC) && TKV_TC
    tc_prepare(group_index(HEAD_DIM)); // (the rotations end with a barrier)
#else
    for (uint e = lid; e < HEAD_DIM * QT4 * 4u; e += WG) {
        uint i = e / (QT4 * 4u), t = e % (QT4 * 4u);
        qs[i * QT4 + t / 4u][t % 4u] = t < QT ? xs[t * HEAD_DIM + i] : 0.0;
    }
#endif
    if (lid < 80u) {
        cent_k[lid] = ck;
        cent_v[lid] = cv;
    }
    if (V_SPLIT != 0u)
        [[unroll]] for (uint o = 0u; o < N_OUT; o++)
            omask[lid * N_OUT + o] = 0u;
    barrier();
    CLOCK_MARK(wid, TKV_VK_CLOCK_PROLOGUE);

    // From here on each subgroup goes its own way until the partials.
    uint lo[QT], hi[QT], skipped[QT];
    float m_run[QT], l_own[QT], acc[ACC];
    float acco[ACCO]; // outlier-split values: this lane's coordinates of the outliers' sums
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
    [[unroll]] for (uint a = 0u; a < acco.length(); a++)
        acco[a] = 0.0;

    // This lane's value coordinates d0 .. d0 + DPL - 1 and where they lie in
    // a V row: the byte of their scale, the bit of their first value.
    const uint d0 = lane * DPL;
    uint v_scale = 0u, v_bit = 0u, v_gi = 0u; // its scale in vsc, its bit in vs
    if (V_ENC == TKV_VK_ENC_TURBO) {
        uint size, first, k = group_of(uvec4(GROUPS0, GROUPS1, GROUPS2, GROUPS3), d0, size, first);
        v_gi = group_index(size);
        v_scale = k;
        v_bit = 8u * (2u * k + first * V_BITS / 8u + 2u) + (d0 - first) * V_BITS;
    } else if (V_ENC == TKV_VK_ENC_Q8_0) {
        v_scale = d0 / Q8_BLOCK;
        v_bit = 8u * (v_scale * (Q8_BLOCK + 2u) + 2u + d0 % Q8_BLOCK);
    } else {
        v_bit = 16u * d0;
    }
#if defined(TKV_TC) && TKV_TC
    tc_loop(h, begin, end, blocks, lo, hi, m_run, l_own, skipped, acc);
#else
    for (uint base = begin; base < end; base += SG) {
        const uint j = base + lane;
        // this lane's K and V rows (the first batch's are in flight since
        // the prologue), every load issued before any is used
        if (base != begin && j < end)
            load_pair(j, h, blocks, kw, vw);
        float x[QT], v_row_scale = 0.0;
        if (j < end) {
            [[unroll]] for (uint i = 0u; i < VW; i++)
                vs[(slot + lane) * VRW + i] = vw[i];
            if (V_SPLIT != 0u && (DBG & TKV_VK_DBG_NO_V_OUTLIERS) == 0u) {
                // marked for the lanes that own its outliers' coordinates
                // (an index past the row, which the quantizers never
                // store, is left out rather than marked past this
                // subgroup's masks)
                const uint at = 8u * outlier_offset(uvec4(GROUPS0, GROUPS1, GROUPS2, GROUPS3), HEAD_DIM, V_BITS);
                [[unroll]] for (uint o = 0u; o < N_OUT; o++) {
                    const uint i = BITS_AT(vw, at + 8u * OUT_IB * o, 8u * OUT_IB);
                    if (i < HEAD_DIM)
                        atomicOr(omask[(slot + i / DPL) * N_OUT + o], 1u << lane);
                }
            }
            // the row's scales, converted once here rather than by every lane
            const uvec4 groups = uvec4(GROUPS0, GROUPS1, GROUPS2, GROUPS3);
            [[unroll]] for (uint g = 0u, first = 0u; g < VSC; g++) {
                const uint size = group_size(groups, g);
                if (V_PRESCALE != 0u && g == 0u)
                    v_row_scale = tkv_fp16_to_float(BITS_AT(vw, 0u, 16u));
                else if (V_ENC == TKV_VK_ENC_TURBO && size != 0u)
                    vsc[(slot + lane) * VSC + g] = tkv_fp16_to_float(BITS_AT(vw, 8u * (2u * g + first * V_BITS / 8u), 16u));
                else if (V_ENC == TKV_VK_ENC_Q8_0)
                    vsc[(slot + lane) * VSC + g] = tkv_fp16_to_float(BITS_AT(vw, 8u * g * (Q8_BLOCK + 2u), 16u));
                first += size;
            }
            float s[QT];
            if ((DBG & TKV_VK_DBG_NO_SCORES) == 0u)
                score_row(kw, s);
            else
                [[unroll]] for (uint t = 0u; t < QT; t++)
                    s[t] = float(kw[t % KW] & 1023u) * 0.001;
            [[unroll]] for (uint t = 0u; t < QT; t++) {
                float y = pc.scale * s[t];
                if (pc.softcap > 0.0)
                    y = pc.softcap * tanh_stable(y / pc.softcap);
                x[t] = j >= lo[t] && j < hi[t] ? y : NEG_INF;
            }
        } else {
            // no row: zero bytes and scales, which weigh 0 in the value loop
            [[unroll]] for (uint i = 0u; i < VW; i++)
                vs[(slot + lane) * VRW + i] = 0u;
            if (V_PRESCALE == 0u)
                [[unroll]] for (uint g = 0u; g < VSC; g++)
                    vsc[(slot + lane) * VSC + g] = 0.0;
            [[unroll]] for (uint t = 0u; t < QT; t++)
                x[t] = NEG_INF;
        }
        // softmax: the running max through the end of the batch, which the
        // sparse-V decision takes too
        bool needed = false;
        float corr[QT], w[QT4 * 4u];
        [[unroll]] for (uint t = 0u; t < QT; t++) {
            const float m_new = max(m_run[t], subgroupMax(x[t]));
            corr[t] = m_new == NEG_INF ? 1.0 : exp(m_run[t] - m_new);
            float p = 0.0, kept = 0.0;
            if (x[t] != NEG_INF) {
                p = exp(x[t] - m_new);
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
        [[unroll]] for (uint t4 = 0u; t4 < QT4; t4++) {
            const vec4 w4 = vec4(w[4u * t4], w[4u * t4 + 1u], w[4u * t4 + 2u], w[4u * t4 + 3u]);
            ws[(slot + lane) * QT4 + t4] = V_PRESCALE != 0u ? w4 * v_row_scale : w4;
        }
        keep[slot + lane] = needed ? 1u : 0u;
        if ((DBG & TKV_VK_DBG_NO_SYNC) == 0u) {
            subgroupMemoryBarrierShared();
            subgroupBarrier();
        }

        // values: the rows some query row keeps, in order
        [[unroll]] for (uint a = 0u; a < QT * DPL; a++)
            acc[a] *= corr[a / DPL];
        if (V_SPLIT != 0u)
            [[unroll]] for (uint a = 0u; a < QT * DPL; a++)
                acco[a] *= corr[a / DPL];
        // VR rows at a time, their loads and products independent; a
        // row no query row keeps (or past the end) weighs 0, and VR of
        // them are skipped together
        const uint nb = min(SG, end - base);
        for (uint r0 = 0u; r0 < ((DBG & TKV_VK_DBG_NO_VALUES) == 0u ? nb : 0u); r0 += VR) {
          uint any = 0u;
          [[unroll]] for (uint ri = 0u; ri < VR; ri++)
              any |= keep[slot + r0 + ri];
          if (any == 0u)
              continue;
          [[unroll]] for (uint ri = 0u; ri < VR; ri++) {
            const uint r = r0 + ri;
            const uint row = (slot + r) * VRW;
            const float scale = V_ENC == TKV_VK_ENC_F16 || V_PRESCALE != 0u ? 1.0 : vsc[(slot + r) * VSC + v_scale];
            float wt[QT4 * 4u];
            [[unroll]] for (uint t4 = 0u; t4 < QT4; t4++) {
                vec4 q = V_ENC == TKV_VK_ENC_F16 || V_PRESCALE != 0u ? ws[(slot + r) * QT4 + t4] : ws[(slot + r) * QT4 + t4] * scale;
                wt[4u * t4] = q.x, wt[4u * t4 + 1u] = q.y, wt[4u * t4 + 2u] = q.z, wt[4u * t4 + 3u] = q.w;
            }
            float val[DPL];
            if (V_ENC == TKV_VK_ENC_TURBO) {
                // PER values (at most 32 bits) from two words at a time
                const uint PER = 32u / V_BITS;
                [[unroll]] for (uint e = 0u; e < DPL; e += PER) {
                    const uint bit = v_bit + e * V_BITS, wd = row + (bit >> 5u), sh = bit & 31u;
                    const uint bits = (vs[wd] >> sh) | ((vs[wd + 1u] << 1u) << (31u - sh));
                    [[unroll]] for (uint i = 0u; i < PER && e + i < DPL; i++)
                        val[e + i] = cent_v[v_gi * 16u + ((bits >> (i * V_BITS)) & ((1u << V_BITS) - 1u))];
                }
            } else if (V_ENC == TKV_VK_ENC_Q8_0) {
                [[unroll]] for (uint e = 0u; e < DPL; e += 4u) {
                    const uint bit = v_bit + 8u * e, wd = row + (bit >> 5u), sh = bit & 31u;
                    const uint bits = (vs[wd] >> sh) | ((vs[wd + 1u] << 1u) << (31u - sh));
                    [[unroll]] for (uint i = 0u; i < 4u && e + i < DPL; i++)
                        val[e + i] = float(bitfieldExtract(int(bits), int(8u * i), 8));
                }
            } else {
                [[unroll]] for (uint e = 0u; e < DPL; e += 2u) {
                    vec2 v = unpackHalf2x16(vs[row + ((v_bit >> 5u) + (e >> 1u))]);
                    val[e] = v.x;
                    if (e + 1u < DPL)
                        val[e + 1u] = v.y;
                }
            }
            [[unroll]] for (uint t = 0u; t < QT; t++)
                [[unroll]] for (uint e = 0u; e < DPL; e++)
                    acc[t * DPL + e] += wt[t] * val[e];
          }
        }
        if (V_SPLIT != 0u) {
            // The outliers of the batch's V rows that lie in this lane's
            // coordinates, unscaled and unrotated, row after row (the order
            // in which every lane once compared every row's outliers with
            // its coordinates: the same sums): only the rows its masks name.
            // Its masks are cleared for the next batch.
            uint om[N_OUT], rows = 0u;
            [[unroll]] for (uint o = 0u; o < N_OUT; o++) {
                om[o] = omask[(slot + lane) * N_OUT + o];
                omask[(slot + lane) * N_OUT + o] = 0u;
                rows |= om[o];
            }
            if ((DBG & (TKV_VK_DBG_NO_VALUES | TKV_VK_DBG_NO_V_OUTLIERS)) != 0u)
                rows = 0u;
            const uint at = 8u * outlier_offset(uvec4(GROUPS0, GROUPS1, GROUPS2, GROUPS3), HEAD_DIM, V_BITS);
            // two rows at a time, their loads independent (row a before row b)
            while (rows != 0u) {
                const uint ra = uint(findLSB(rows));
                rows &= rows - 1u;
                const bool has_b = rows != 0u;
                const uint rb = has_b ? uint(findLSB(rows)) : ra;
                rows &= rows - 1u;
                // a row no query row keeps weighs 0: left out
                const bool ka = keep[slot + ra] != 0u, kb = has_b && keep[slot + rb] != 0u;
                if (!(ka || kb))
                    continue;
                const uint rowa = (slot + ra) * VRW, rowb = (slot + rb) * VRW;
                vec4 wa[QT4], wb[QT4];
                [[unroll]] for (uint t4 = 0u; t4 < QT4; t4++) {
                    wa[t4] = ws[(slot + ra) * QT4 + t4];
                    wb[t4] = ws[(slot + rb) * QT4 + t4];
                }
                [[unroll]] for (uint o = 0u; o < N_OUT; o++) {
                    const bool ha = ka && ((om[o] >> ra) & 1u) != 0u, hb = kb && ((om[o] >> rb) & 1u) != 0u;
                    if (!(ha || hb))
                        continue;
                    const uint rela = VS_BITS(rowa, at + 8u * OUT_IB * o, 8u * OUT_IB) - d0;
                    const uint relb = VS_BITS(rowb, at + 8u * OUT_IB * o, 8u * OUT_IB) - d0;
                    const float xa = unpackHalf2x16(VS_BITS(rowa, at + 8u * (N_OUT * OUT_IB + 2u * o), 16u)).x;
                    const float xb = unpackHalf2x16(VS_BITS(rowb, at + 8u * (N_OUT * OUT_IB + 2u * o), 16u)).x;
                    float voa[DPL], vob[DPL];
                    [[unroll]] for (uint e = 0u; e < DPL; e++) {
                        voa[e] = ha && rela == e ? xa : 0.0;
                        vob[e] = hb && relb == e ? xb : 0.0;
                    }
                    [[unroll]] for (uint t4 = 0u; t4 < QT4; t4++)
                        [[unroll]] for (uint u = 0u; u < 4u; u++)
                            if (4u * t4 + u < QT)
                                [[unroll]] for (uint e = 0u; e < DPL; e++) {
                                    acco[(4u * t4 + u) * DPL + e] += wa[t4][u] * voa[e];
                                    acco[(4u * t4 + u) * DPL + e] += wb[t4][u] * vob[e];
                                }
                }
            }
            subgroupMemoryBarrierShared(); // the cleared masks before the next batch's marks
        }
        if ((DBG & TKV_VK_DBG_NO_SYNC) == 0u)
            subgroupBarrier(); // ws, vs, keep and omask are rewritten by the next batch
    }
#endif

    CLOCK_MARK(wid, TKV_VK_CLOCK_LOOP);
    chunk_partial(unit, h, cg, m_run, l_own, skipped, acc, acco);
    CLOCK_MARK(wid, TKV_VK_CLOCK_PARTIAL);
    if (FUSED != 0u)
        merge_unit(unit, unit_index, h);
    CLOCK_MARK(wid, TKV_VK_CLOCK_END);
    CLOCK_REALTIME(wid, TKV_VK_CLOCK_RT_END);
#if defined(TKV_CLOCK) && TKV_CLOCK
    if (FUSED != 0u && gl_LocalInvocationIndex == 0u)
        CLOCK_AT(wid, TKV_VK_CLOCK_MERGED) = uint64_t(last_one);
#endif
}
