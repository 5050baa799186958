/* SPDX-License-Identifier: MIT */
// What every turbokv-vulkan shader shares: buffer access through device
// addresses (VK_KHR_buffer_device_address: no descriptor sets, no binding
// range limits), the little-endian byte stream of the stored rows, the
// group layout of a row and the math buffer. The format's scalar rules
// (fp16, packed indices, nearest centroid, q8_0 rounding, the outliers'
// order, the summation order) are abi/turbokv_scalar.h, the file the C
// reference and the OpenCL kernels compile too (glslang -I abi/).
#extension GL_EXT_buffer_reference2 : require
#extension GL_EXT_shader_explicit_arithmetic_types : require

// TKV_DENORM_PRESERVE 1 (the second SPIR-V of the shaders whose float
// arithmetic reaches stored bytes or dequantized values: quantize, rows):
// the execution mode DenormPreserve for 32-bit floats (SPV_KHR_float_controls,
// core in Vulkan 1.2; capability DenormPreserve = 4464, execution mode
// DenormPreserve = 4459, its literal the bit width). Without it a driver may
// flush fp32 subnormals in arithmetic and comparisons (NVIDIA's does), where
// the reference keeps them. The plugin picks this SPIR-V where the device
// reports shaderDenormPreserveFloat32 (README "fp32 subnormals").
#if defined(TKV_DENORM_PRESERVE) && TKV_DENORM_PRESERVE
#extension GL_EXT_spirv_intrinsics : require
spirv_execution_mode(extensions = ["SPV_KHR_float_controls"], capabilities = [4464], 4459, 32);
#endif

#include "interface.h"
#include "turbokv_scalar.h"

layout(local_size_x_id = TKV_VK_SPEC_WG) in;

// The attention shaders (TKV_VK_MATH_SPEC defined before this file): the
// device's constant tables at an address given as two specialization
// constants (interface.h, TKV_VK_SPEC_MATH_LO), or, where both are 0
// (TURBO_VK_MATH=inputs, the default on CPU devices: pipelines the same in
// every process, for the driver's shader cache), in the 8 bytes before the
// call's inputs (pc.inputs; attention.c, inputs_head). The branch is on
// specialization constants: a driver drops the side not taken. The other
// shaders take the address from their push constants.
#ifdef TKV_VK_MATH_SPEC
layout(constant_id = TKV_VK_SPEC_MATH_LO) const uint MATH_LO = 0u;
layout(constant_id = TKV_VK_SPEC_MATH_HI) const uint MATH_HI = 0u;
layout(buffer_reference, std430, buffer_reference_align = 8) readonly buffer MathAddress { uint64_t at; };
uint64_t math_address(uint64_t inputs)
{
    if ((MATH_LO | MATH_HI) != 0u)
        return uint64_t(MATH_HI) << 32 | uint64_t(MATH_LO);
    return MathAddress(inputs - 8ul).at;
}
#define MATH math_address(pc.inputs)
#endif

layout(buffer_reference, std430, buffer_reference_align = 4) readonly buffer Words { uint32_t w[]; };
layout(buffer_reference, std430, buffer_reference_align = 4) buffer Floats { float f[]; };
layout(buffer_reference, std430, buffer_reference_align = 4) buffer Uints { uint32_t u[]; };

// ---- workgroups beyond the 65535 a dimension may count --------------------

// The host spreads a linear workgroup count over x, y and z.
uint flat_workgroup()
{
    return (gl_WorkGroupID.z * gl_NumWorkGroups.y + gl_WorkGroupID.y) * gl_NumWorkGroups.x +
           gl_WorkGroupID.x;
}

// ---- reading the byte stream ---------------------------------------------

// The 4 bytes at any byte address, little endian. Reads the aligned words
// around them; every buffer is allocated with slack so that the word after
// the last byte exists.
uint load_u32(uint64_t addr)
{
    Words p = Words(addr & ~uint64_t(3));
    uint sh = uint(addr & 3ul) * 8u;
    uint lo = p.w[0];
    return sh == 0u ? lo : (lo >> sh) | (p.w[1] << (32u - sh));
}

uint load_u16(uint64_t addr) { return load_u32(addr) & 0xffffu; }

// bits [bit, bit + n) of the stream starting at addr, n <= 24
uint load_bits(uint64_t addr, uint bit, uint n) { return tkv_bits_at(load_u32(addr + uint64_t(bit >> 3)), bit & 7u, n); }

// ---- softcap ----------------------------------------------------------------

// tanh without overflow for any finite x (a device's tanh may be
// (e^x - e^-x) / (e^x + e^-x), which is inf / inf for large x).
float tanh_stable(float x)
{
    float t = exp(-2.0 * abs(x));
    return sign(x) * ((1.0 - t) / (1.0 + t));
}

// ---- the group layout of a row ------------------------------------------

// Group k's size from the packed list (0 past the last group).
uint group_size(uvec4 groups, uint k) { return (groups[k >> 2] >> ((k & 3u) * 8u)) & 0xffu; }

// Index of a group size in the math tables: 8 -> 0 ... 128 -> 4.
uint group_index(uint g) { return uint(findLSB(g)) - 3u; }

// The group holding element i: its ordinal, size and first element.
uint group_of(uvec4 groups, uint i, out uint size, out uint first)
{
    uint k = 0u;
    first = 0u;
    size = group_size(groups, 0u);
    while (i >= first + size && size != 0u) {
        first += size;
        size = group_size(groups, ++k);
    }
    return k;
}

uint count_groups(uvec4 groups)
{
    uint n = 0u;
    while (n < 16u && group_size(groups, n) != 0u)
        n++;
    return n;
}

// ---- outlier-split rows (turbokv_format.h, "Outlier-split types") ---------

// The byte where the outlier indices begin (after the turbo row: a fp16
// scale per group and the packed indices); tkv_outlier_count(head_dim)
// indices of tkv_outlier_index_bytes(head_dim) bytes, then as many fp16
// values, follow.
uint outlier_offset(uvec4 groups, uint head_dim, uint bits) { return 2u * count_groups(groups) + head_dim * bits / 8u; }

// ---- the math buffer ------------------------------------------------------

uint codebook_at(uint gi, uint bits) { return TKV_VK_MATH_CODEBOOKS + (gi * 3u + bits - 2u) * TKV_VK_MATH_CODEBOOK_FLOATS; }
uint sign_at(uint gi, bool second) { return TKV_VK_MATH_SIGNS + gi * 256u + (second ? 128u : 0u); }
uint dense_at(uint gi) { return TKV_VK_MATH_DENSE + TKV_VK_MATH_SQUARE(gi); }
uint qjl_at(uint gi) { return TKV_VK_MATH_QJL + TKV_VK_MATH_SQUARE(gi); }
