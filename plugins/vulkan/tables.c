/* SPDX-License-Identifier: MIT */
/*
 * The math buffer: the core's tables (struct tkv_math) laid out for the
 * shaders (shaders/interface.h), uploaded once per device, with 1/sqrt(g)
 * of the WHT rounded exactly as plugins/cpu rounds it (double, then float).
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "vk.h"

int vk_tables_upload(struct vk_device *dev)
{
    const struct tkv_math *math = dev->math;
    float *t = calloc(TKV_VK_MATH_FLOATS, sizeof *t);
    if (!t)
        return VK_ERROR_STATUS(TKV_ENOMEM, "open: no host memory for the math tables");
    for (uint32_t gi = 0; gi < TKV_N_GROUP_SIZES; gi++) {
        const struct tkv_group_tables *g = &math->groups[gi];
        uint32_t size = g->group;
        memcpy(t + TKV_VK_MATH_SIGNS + gi * 256u, g->sign1, size * sizeof *t);
        memcpy(t + TKV_VK_MATH_SIGNS + gi * 256u + 128u, g->sign2, size * sizeof *t);
        t[TKV_VK_MATH_INV_SQRT + gi] = (float)(1.0 / sqrt((double)size));
        t[TKV_VK_MATH_QJL_FACTOR + gi] = math->qjl[gi].scale;
        for (uint32_t b = 0; b < TKV_N_CODEBOOK_BITS; b++) {
            const struct tkv_codebook *cb = &g->codebook[b];
            float *at = t + TKV_VK_MATH_CODEBOOKS + (gi * TKV_N_CODEBOOK_BITS + b) * TKV_VK_MATH_CODEBOOK_FLOATS;
            memcpy(at, cb->centroids, cb->n_levels * sizeof *t);
            memcpy(at + 16, cb->boundaries, (cb->n_levels - 1) * sizeof *t);
            memcpy(at + 32, cb->centroid_sq, cb->n_levels * sizeof *t);
        }
        memcpy(t + TKV_VK_MATH_DENSE + TKV_VK_MATH_SQUARE(gi), g->dense, (size_t)size * size * sizeof *t);
        memcpy(t + TKV_VK_MATH_QJL + TKV_VK_MATH_SQUARE(gi), math->qjl[gi].rows, (size_t)size * size * sizeof *t);
    }
    int rc = vk_buffer_create(dev, TKV_VK_MATH_FLOATS * sizeof *t, 0, "open", &dev->math_buf);
    if (rc == TKV_OK)
        rc = vk_upload(dev, dev->math_buf, 0, t, TKV_VK_MATH_FLOATS * sizeof *t, "open");
    free(t);
    return rc;
}
