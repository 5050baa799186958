/* SPDX-License-Identifier: MIT */
/*
 * Row formats as the shaders take them: everything derives from
 * turbokv_format.h here, on the host (row bytes, index bits, the group
 * split), and reaches the shaders as values. Also the recording of the rows
 * shader.
 */
#include <string.h>

#include "vk.h"

/* the shaders' outlier-split rule (shaders/interface.h) is the format's */
_Static_assert(TKV_VK_OUTLIER_EVERY == TKV_OUTLIER_EVERY, "outliers per value");
_Static_assert(TKV_VK_OUTLIER_BYTE_INDEX_MAX == 256u, "one-byte outlier indices up to head_dim 256 "
                                                      "(tkv_outlier_index_bytes)");

int vk_usable(const struct vk_device *dev, const char *op)
{
    if (dev->lost)
        return VK_ERROR_STATUS(TKV_EDEVICE, "%s: the device was lost earlier", op);
    return TKV_OK;
}

void vk_layout_init(const struct tkv_row_format *fmt, struct vk_layout *l)
{
    memset(l, 0, sizeof *l);
    l->head_dim = fmt->head_dim;
    l->bits = tkv_type_bits(fmt->type);
    l->qjl = (uint32_t)tkv_type_is_qjl(fmt->type);
    l->split = (uint32_t)tkv_type_is_outlier(fmt->type);
    l->row_bytes = tkv_row_bytes(fmt->type, fmt->head_dim);
    l->rotation = TKV_VK_ROT_NONE;
    uint32_t sizes[TKV_MAX_GROUPS], n = tkv_group_split(fmt->head_dim, sizes);
    for (uint32_t g = 0; g < n; g++)
        l->groups[g / 4] |= sizes[g] << (8 * (g % 4));
    switch (fmt->type) {
    case TKV_TYPE_F32: l->encoding = TKV_VK_ENC_F32; return;
    case TKV_TYPE_F16: l->encoding = TKV_VK_ENC_F16; return;
    case TKV_TYPE_Q8_0: l->encoding = TKV_VK_ENC_Q8_0; return;
    default: break;
    }
    /* the turbo types, QJL and outlier-split ones included (device_caps
     * lists no other) */
    l->encoding = TKV_VK_ENC_TURBO;
    l->rotation = fmt->rotation == TKV_ROTATION_WHT     ? TKV_VK_ROT_WHT
                  : fmt->rotation == TKV_ROTATION_DENSE ? TKV_VK_ROT_DENSE
                                                        : TKV_VK_ROT_NONE;
    l->corrected = fmt->scale_mode == TKV_SCALE_NORM_CORRECTED;
}

uint32_t vk_quantize_flags(const struct vk_layout *l)
{
    return (l->qjl ? TKV_VK_FLAG_QJL : 0u) | (l->corrected ? TKV_VK_FLAG_CORRECTED : 0u) |
           (l->split ? TKV_VK_FLAG_OUTLIER : 0u);
}

int vk_record_rows(struct vk_device *dev, const struct vk_layout *l, struct vk_rows_push *push, uint32_t flags,
                   const char *op)
{
    uint32_t per_wg = TKV_VK_ROWS_ELEMS / l->head_dim;
    push->math = dev->math_buf->address;
    push->head_dim = l->head_dim;
    push->encoding = l->encoding;
    push->bits = l->bits;
    push->rotation = l->rotation;
    push->flags = flags | (l->qjl ? TKV_VK_FLAG_QJL : 0u) | (l->split ? TKV_VK_FLAG_OUTLIER : 0u);
    push->rows_per_wg = per_wg;
    push->q8_block = TKV_Q8_0_BLOCK;
    memcpy(push->groups, l->groups, sizeof push->groups);
    return vk_dispatch(dev, dev->rows, push, sizeof *push, ((uint64_t)push->n_rows + per_wg - 1) / per_wg, op);
}
