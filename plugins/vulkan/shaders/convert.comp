/* SPDX-License-Identifier: MIT */
#version 460
// The host's device tensors (docs/api.md, "The host's own device"): n
// elements from src to dst, each in its element type (0 f32, 1 f16, 2
// bf16). f16 and bf16 are widened exactly, f32 is narrowed to nearest even
// (bf16 keeps NaN a quiet NaN, overflow carries into Inf) and copied bit for
// bit: what the core does to host tensors (core/tensor.c; both with
// turbokv_scalar.h's tkv_fp16_* and tkv_bf16_*), so a device
// tensor is stored and attended as the same values in host memory. One
// invocation per element; 16-bit elements are moved as bytes (the plugin
// needs 8-bit storage, not 16-bit), so they may sit at any even offset, and
// nothing is read or written past the tensor's last byte.
#extension GL_GOOGLE_include_directive : require
#extension GL_EXT_shader_8bit_storage : require

#include "common.glsl"

layout(buffer_reference, std430, buffer_reference_align = 1) buffer Bytes { uint8_t b[]; };
layout(push_constant, std430) uniform Push { TKV_VK_CONVERT_PUSH } pc;

void main()
{
    const uint64_t i = uint64_t(flat_workgroup()) * uint64_t(gl_WorkGroupSize.x) + uint64_t(gl_LocalInvocationIndex);
    if (i >= uint64_t(pc.n))
        return;
    uint bits; // the element as f32 bits
    if (pc.src_elem == 0u) {
        bits = Uints(pc.src + i * 4ul).u[0];
    } else {
        Bytes p = Bytes(pc.src + i * 2ul);
        uint h = uint(p.b[0]) | (uint(p.b[1]) << 8);
        bits = pc.src_elem == 2u ? floatBitsToUint(tkv_bf16_to_float(h)) : floatBitsToUint(tkv_fp16_to_float(h));
    }
    if (pc.dst_elem == 0u) {
        Uints(pc.dst + i * 4ul).u[0] = bits;
    } else {
        float f = uintBitsToFloat(bits);
        uint h = pc.dst_elem == 2u ? tkv_bf16_from_float(f) : tkv_fp16_from_float(f);
        Bytes p = Bytes(pc.dst + i * 2ul);
        p.b[0] = uint8_t(h & 0xffu);
        p.b[1] = uint8_t(h >> 8);
    }
}
