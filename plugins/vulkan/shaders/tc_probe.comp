/* SPDX-License-Identifier: MIT */
#version 460
// The probe of the cooperative matrices' fragment layouts that tensor.glsl
// builds by hand (tensor.c runs it once at open where the device offers
// VK_NV_cooperative_matrix): one subgroup loads a 16 x 16 fp16 matrix A
// and a 16 x 8 fp32 matrix C whose element (r, c) holds its own position
// (16 r + c, 8 r + c) and writes, per invocation, how many elements it
// holds of each and which (as their values), at the address of the push
// constants' first 8 bytes: invocation i's record of TKV_VK_TC_PROBE_FLOATS
// floats at i times that, [A's count, C's count, A's elements (8), C's (4)].
#extension GL_NV_cooperative_matrix : require
#extension GL_EXT_shader_explicit_arithmetic_types_float16 : require
#extension GL_EXT_shader_explicit_arithmetic_types_int64 : require
#extension GL_EXT_buffer_reference : require
#extension GL_KHR_memory_scope_semantics : require
#extension GL_KHR_shader_subgroup_basic : require
#extension GL_GOOGLE_include_directive : require

#include "interface.h"

layout(local_size_x = 32) in;
layout(push_constant, std430) uniform Push { uint64_t out_at; } pc;
layout(buffer_reference, std430, buffer_reference_align = 4) buffer Out { float f[]; };

shared float16_t sa[256];
shared float sc[128];

void main()
{
    const uint lid = gl_LocalInvocationIndex;
    for (uint i = lid; i < 256u; i += 32u)
        sa[i] = float16_t(float(i));
    for (uint i = lid; i < 128u; i += 32u)
        sc[i] = float(i);
    barrier();
    fcoopmatNV<16, gl_ScopeSubgroup, 16, 16> a;
    fcoopmatNV<32, gl_ScopeSubgroup, 16, 8> c;
    coopMatLoadNV(a, sa, 0u, 16u, false);
    coopMatLoadNV(c, sc, 0u, 8u, false);
    Out o = Out(pc.out_at);
    const uint at = gl_SubgroupInvocationID * TKV_VK_TC_PROBE_FLOATS;
    if (gl_SubgroupID == 0u) {
        o.f[at] = float(a.length());
        o.f[at + 1u] = float(c.length());
        for (int i = 0; i < a.length() && i < 8; i++)
            o.f[at + 2u + uint(i)] = float(a[i]);
        for (int i = 0; i < c.length() && i < 4; i++)
            o.f[at + 10u + uint(i)] = c[i];
    }
}
