/* SPDX-License-Identifier: MIT */
/*
 * The tensor cores (NVIDIA, VK_NV_cooperative_matrix): whether decode_tc
 * (decode.comp with shaders/tensor.glsl's loop) runs on this device, and
 * which calls it takes.
 *
 * tensor.glsl builds its A operands element by element and reads its
 * accumulators the same way, so it depends on which elements of a
 * cooperative matrix each invocation holds, a layout the extension leaves
 * to the implementation. At open, on a device of the plugin's own where
 * plugin.c enabled the extension (dev->coopmat), tc_probe.comp loads
 * matrices whose elements hold their own positions and reports them; dev->tc
 * is set only where they are the layouts tensor.glsl was written for (those
 * of NVIDIA's mma.m16n8k16, in another order; plugins/vulkan/README.md,
 * "Tensor cores").
 */
#include <stdio.h>
#include <string.h>

#include "vk.h"

/* Which element (row, column) invocation `lane` holds at index i: A 16 x 16
 * (i < 8), C 16 x 8 (i < 4) */
static void expected_a(uint32_t lane, uint32_t i, uint32_t *row, uint32_t *col)
{
    const uint32_t g = lane >> 2, c = lane & 3;
    *row = g + (i >= 4 ? 8 : 0);
    *col = 2 * c + (i & 1) + (i & 2 ? 8 : 0);
}

static void expected_c(uint32_t lane, uint32_t i, uint32_t *row, uint32_t *col)
{
    const uint32_t g = lane >> 2, c = lane & 3;
    *row = g + (i >= 2 ? 8 : 0);
    *col = 2 * c + (i & 1);
}

int vk_tc_probe(struct vk_device *dev)
{
    dev->tc = 0;
    if (!dev->coopmat)
        return TKV_OK;
    const char *op = "open: tensor-core probe";
    const uint64_t bytes = 32 * TKV_VK_TC_PROBE_FLOATS * sizeof(float);
    struct vk_buffer *out = NULL;
    VkPipeline pipeline = VK_NULL_HANDLE;
    int rc = vk_create_pipeline(dev, VK_SHADER_TC_PROBE, NULL, 0, op, &pipeline);
    if (rc == TKV_OK)
        rc = vk_buffer_create(dev, bytes, 1, op, &out);
    if (rc == TKV_OK) {
        memset(out->map, 0xff, (size_t)bytes);
        const uint64_t at = out->address;
        if ((rc = vk_begin(dev, op)) == TKV_OK && (rc = vk_dispatch(dev, pipeline, &at, sizeof at, 1, op)) == TKV_OK)
            rc = vk_submit(dev, op);
    }
    if (rc == TKV_OK) {
        const float *f = out->map;
        const char *why = NULL;
        uint32_t lane = 0, i = 0, row = 0, col = 0;
        for (lane = 0; lane < 32 && !why; lane++) {
            const float *r = f + lane * TKV_VK_TC_PROBE_FLOATS;
            if (r[0] != 8.0f || r[1] != 4.0f) {
                why = "element counts";
                break;
            }
            for (i = 0; i < 8 && !why; i++) {
                expected_a(lane, i, &row, &col);
                if (r[2 + i] != (float)(16 * row + col))
                    why = "A";
            }
            for (i = 0; i < 4 && !why; i++) {
                expected_c(lane, i, &row, &col);
                if (r[10 + i] != (float)(8 * row + col))
                    why = "C";
            }
            if (why)
                break;
        }
        dev->tc = !why;
        if (!why)
            vk_svc->log(TKV_LOG_INFO, "vulkan: turbo3 attention on the tensor cores (decode_tc)");
        else
            vk_svc->log(TKV_LOG_INFO,
                        "vulkan: the cooperative matrices' %s layout differs from the one decode_tc builds (lane "
                        "%u, element %u): turbo3 attention stays on decode.comp",
                        why, lane, i ? i - 1 : 0);
    }
    if (pipeline != VK_NULL_HANDLE)
        vkDestroyPipeline(dev->device, pipeline, NULL);
    vk_buffer_destroy(dev, out);
    /* the probe is optional: where it cannot run, decode.comp does (a lost
     * device fails the open) */
    if (rc != TKV_OK && !dev->lost) {
        vk_svc->log(TKV_LOG_WARN, "vulkan: TURBO_VK_TC=1: the tensor-core probe failed (status %d): turbo3 "
                                  "attention stays on decode.comp",
                    rc);
        dev->tc = 0;
        return TKV_OK;
    }
    return rc;
}

int vk_tc_takes(const struct vk_device *dev, const struct tkv_attention_args *a, uint32_t qt, uint64_t k_address,
                uint64_t v_address)
{
    const struct tkv_pool *k = &a->k, *v = &a->v;
    return dev->tc && k->fmt.type == TKV_TYPE_TURBO3 && v->fmt.type == TKV_TYPE_TURBO3 && k->fmt.head_dim == 128 &&
           k->row_bytes == 50 && v->row_bytes == 50 && qt <= 4 && dev->subgroup == 32 &&
           k->block_tokens % 16 == 0 && v->block_tokens == k->block_tokens && k->head_stride % 16 == 0 &&
           k->block_stride % 16 == 0 && v->head_stride % 16 == 0 && v->block_stride % 16 == 0 &&
           k_address % 16 == 0 && v_address % 16 == 0;
}
