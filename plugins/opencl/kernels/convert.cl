/* SPDX-License-Identifier: MIT */

/* Left out of the attention programs built per configuration, as rows.cl. */
#ifndef TKV_SPEC_HEAD_DIM
/*
 * The host's device tensors in f16 or bf16 (enum tkv_elem: 1 f16, 2 bf16):
 * widened to f32 exactly, and f32 outputs narrowed to nearest even, bit for
 * bit what the core does to host tensors (core/tensor.c; both with
 * turbokv_scalar.h's tkv_fp16_* and tkv_bf16_*), so that a device
 * tensor stores and attends like the same values in host memory. One
 * work-item per element.
 */

__kernel void widen_elems(__global const ushort *src, ulong src_at, uint elem,
                          __global float *dst, uint dst_at, uint n)
{
    const uint i = get_global_id(0);
    if (i >= n)
        return;
    const uint h = src[src_at + i];
    dst[dst_at + i] = elem == 2u ? tkv_bf16_to_float(h) : tkv_fp16_to_float(h);
}

__kernel void narrow_elems(__global const float *src, uint src_at, __global ushort *dst,
                           ulong dst_at, uint elem, uint n)
{
    const uint i = get_global_id(0);
    if (i >= n)
        return;
    const float f = src[src_at + i];
    dst[dst_at + i] = (ushort)(elem == 2u ? tkv_bf16_from_float(f) : tkv_fp16_from_float(f));
}
#endif
