/* SPDX-License-Identifier: MIT */
/* How many workgroups of a pipeline an NVIDIA SM holds at once, from the
 * registers its compiler gave an invocation (the statistic "Register Count"
 * of VK_KHR_pipeline_executable_properties): decode.comp dispatches one
 * wave of them (attention.c). Apart from vk.h so that the tests include it
 * without Vulkan's headers. */
#ifndef TKV_VK_OCCUPANCY_H
#define TKV_VK_OCCUPANCY_H

#include <stdint.h>

/* Workgroups of wg invocations an SM holds with regs registers an
 * invocation: its 65,536 registers (every NVIDIA GPU since Kepler; Vulkan
 * does not report them) given out per warp of 32 invocations in multiples
 * of 256, and at most warps_per_sm warps (VK_NV_shader_sm_builtins; 0:
 * no such limit). 0 where regs or wg is 0. */
static inline uint32_t vk_resident_workgroups(uint32_t regs, uint32_t wg, uint32_t warps_per_sm)
{
    const uint32_t warps = (wg + 31) / 32, per_warp = (regs * 32 + 255) / 256 * 256;
    if (!regs || !warps)
        return 0;
    const uint32_t by_regs = 65536 / per_warp / warps, by_warps = warps_per_sm ? warps_per_sm / warps : by_regs;
    return by_regs < by_warps ? by_regs : by_warps;
}

#endif
