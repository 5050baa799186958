// SPDX-License-Identifier: MIT
// Session 18: the fragment layout of VK_NV_cooperative_matrix (probe_vk.c):
// A (16 x 16 fp16) and C (16 x 16 fp32) loaded from matrices whose element
// (r, c) holds r * 16 + c; each invocation writes the elements it holds.
#version 450
#extension GL_NV_cooperative_matrix : require
#extension GL_KHR_memory_scope_semantics : require
#extension GL_EXT_shader_explicit_arithmetic_types_float16 : require
#extension GL_EXT_shader_16bit_storage : require
layout(local_size_x = 32) in;
layout(set = 0, binding = 0) readonly buffer A { float16_t a[]; };
layout(set = 0, binding = 1) readonly buffer C { float c[]; };
layout(set = 0, binding = 2) writeonly buffer O { float o[]; };
void main()
{
    fcoopmatNV<16, gl_ScopeSubgroup, 16, 16> ma;
    fcoopmatNV<32, gl_ScopeSubgroup, 16, 16> mc;
    coopMatLoadNV(ma, a, 0, 16, false);
    coopMatLoadNV(mc, c, 0, 16, false);
    const uint lane = gl_LocalInvocationID.x;
    for (int i = 0; i < ma.length(); i++)
        o[lane * 16 + i] = float(ma[i]);
    for (int i = 0; i < mc.length(); i++)
        o[512 + lane * 16 + i] = mc[i];
    if (lane == 0) {
        o[1024] = float(ma.length());
        o[1025] = float(mc.length());
    }
}
