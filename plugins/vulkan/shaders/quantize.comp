/* SPDX-License-Identifier: MIT */
#version 460
// quantize_append: float rows in, stored rows out, byte for byte what
// plugins/cpu writes (encode.glsl, which decode.comp's append variant runs
// too). One workgroup holds rows_per_wg rows in shared memory (the host
// gives small calls one row a workgroup, or as many as fill it: a decode
// step's token is spread over as many workgroups as it has heads). Each
// row's address in the pool (its block looked up in the block table, or
// the one block the host gives) is computed once, at the start, into
// enc_base.
#extension GL_GOOGLE_include_directive : require
#extension GL_EXT_shader_8bit_storage : require
#extension GL_EXT_control_flow_attributes : require

#include "common.glsl"

layout(push_constant, std430) uniform Push { TKV_VK_QUANTIZE_PUSH } pc;

shared float xs[TKV_VK_ROWS_ELEMS]; // the rows: input, unit, rotated, residual

#include "exact.glsl"
#include "rotate.glsl"
#define ENC_ELEMS TKV_VK_ROWS_ELEMS
#define ENC_ROWS (TKV_VK_ROWS_ELEMS / 8u)
#define ENC_QJL 1
#include "encode.glsl"

// Fills enc_base for the workgroup's rows, which run token-major,
// head-minor from global row row0: token t, head h is position first_pos +
// t of the sequence, in the block the table slice gives. Without a table
// (blocks 0: every row of the call lies in one block) pool is that block.
void locate_rows(uint row0, uint nr)
{
    Uints blocks = Uints(pc.blocks);
    const uint bt = pc.block_tokens, block0 = pc.first_pos / bt;
    for (uint r = gl_LocalInvocationIndex; r < nr; r += gl_WorkGroupSize.x) {
        uint t = (row0 + r) / pc.n_heads, h = (row0 + r) % pc.n_heads, pos = pc.first_pos + t;
        uint64_t block = pc.blocks != 0ul ? uint64_t(blocks.u[pos / bt - block0]) * pc.block_stride : 0ul;
        enc_base[r] = pc.pool + block + uint64_t(h) * pc.head_stride + uint64_t(pos % bt) * uint64_t(pc.row_bytes);
    }
}

void main()
{
    const uint total = pc.n_tokens * pc.n_heads, row0 = flat_workgroup() * pc.rows_per_wg;
    if (row0 >= total)
        return;
    EncArgs ea;
    ea.nr = min(pc.rows_per_wg, total - row0);
    ea.hd = pc.head_dim;
    ea.src = pc.src + 4ul * uint64_t(row0) * uint64_t(pc.head_dim);
    ea.src1 = ea.src + 4ul * uint64_t(pc.head_dim);
    ea.math = pc.math;
    ea.counter = pc.counter;
    ea.groups = uvec4(pc.groups[0], pc.groups[1], pc.groups[2], pc.groups[3]);
    ea.encoding = pc.encoding;
    ea.bits = pc.bits;
    ea.rotation = pc.rotation;
    ea.flags = pc.flags;
    ea.q8_block = pc.q8_block;
    ea.src_elem = 0u;
    locate_rows(row0, ea.nr);
    encode_rows(ea);
}
