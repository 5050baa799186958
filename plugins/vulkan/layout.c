/*
 * Row formats as the shaders take them: everything derives from
 * turbokv_format.h here, on the host (row bytes, index bits, the group
 * split), and reaches the shaders as values. Also the argument checks every
 * op starts with and the recording of the rows shader.
 */
#include <string.h>

#include "vk.h"

int vk_check_args(const struct vk_device *dev, const void *args, size_t size, const char *op)
{
    uint32_t struct_size;
    if (!dev || !args)
        return VK_ERROR_STATUS(TKV_EINVAL, "%s: NULL %s", op, dev ? "args" : "device");
    memcpy(&struct_size, args, sizeof struct_size);
    if (struct_size < size)
        return VK_ERROR_STATUS(TKV_EINVAL, "%s: args struct_size %u is less than %zu (ABI %u.%u)", op, struct_size,
                               size, TKV_ABI_MAJOR, TKV_ABI_MINOR);
    if (dev->lost)
        return VK_ERROR_STATUS(TKV_EDEVICE, "%s: the device was lost earlier", op);
    return TKV_OK;
}

int vk_layout_init(const struct vk_device *dev, const struct tkv_row_format *fmt, const char *op,
                   struct vk_layout *l)
{
    if (fmt->type >= TKV_TYPE_COUNT)
        return VK_ERROR_STATUS(TKV_EUNSUPPORTED, "%s: unknown type %u (0..%u)", op, fmt->type, TKV_TYPE_COUNT - 1);
    if (!tkv_head_dim_supported(fmt->head_dim))
        return VK_ERROR_STATUS(TKV_EUNSUPPORTED, "%s: head_dim %u is not supported (multiples of %u up to %u)", op,
                               fmt->head_dim, TKV_GROUP_MIN, TKV_HEAD_DIM_MAX);
    memset(l, 0, sizeof *l);
    l->head_dim = fmt->head_dim;
    l->bits = tkv_type_bits(fmt->type);
    l->qjl = (uint32_t)tkv_type_is_qjl(fmt->type);
    l->row_bytes = tkv_row_bytes(fmt->type, fmt->head_dim);
    l->rotation = TKV_VK_ROT_NONE;
    uint32_t sizes[TKV_MAX_GROUPS], n = tkv_group_split(fmt->head_dim, sizes);
    for (uint32_t g = 0; g < n; g++)
        l->groups[g / 4] |= sizes[g] << (8 * (g % 4));
    switch (fmt->type) {
    case TKV_TYPE_F32: l->encoding = TKV_VK_ENC_F32; return TKV_OK;
    case TKV_TYPE_F16: l->encoding = TKV_VK_ENC_F16; return TKV_OK;
    case TKV_TYPE_Q8_0: l->encoding = TKV_VK_ENC_Q8_0; return TKV_OK;
    default: break;
    }
    if (!l->bits)
        return VK_ERROR_STATUS(TKV_EUNSUPPORTED, "%s: type %u has no Vulkan kernels", op, fmt->type);
    if (fmt->rotation >= TKV_ROTATION_COUNT)
        return VK_ERROR_STATUS(TKV_EINVAL, "%s: unknown rotation %u (0..%u)", op, fmt->rotation,
                               TKV_ROTATION_COUNT - 1);
    if (fmt->scale_mode >= TKV_SCALE_COUNT)
        return VK_ERROR_STATUS(TKV_EINVAL, "%s: unknown scale mode %u (0..%u)", op, fmt->scale_mode,
                               TKV_SCALE_COUNT - 1);
    if (l->qjl && !dev->qjl)
        return VK_ERROR_STATUS(TKV_EUNSUPPORTED, "%s: type %u needs the QJL matrices, which this core (ABI < 1.1) "
                               "does not hand over", op, fmt->type);
    l->encoding = TKV_VK_ENC_TURBO;
    l->rotation = fmt->rotation == TKV_ROTATION_WHT     ? TKV_VK_ROT_WHT
                  : fmt->rotation == TKV_ROTATION_DENSE ? TKV_VK_ROT_DENSE
                                                        : TKV_VK_ROT_NONE;
    l->corrected = fmt->scale_mode == TKV_SCALE_NORM_CORRECTED;
    return TKV_OK;
}

int vk_record_rows(struct vk_device *dev, const struct vk_layout *l, uint64_t src, uint32_t src_stride,
                   uint64_t dst, uint32_t dst_stride, uint32_t n_rows, int query, int inverse, const char *op)
{
    uint32_t per_wg = TKV_VK_ROWS_ELEMS / l->head_dim;
    struct vk_rows_push push = {
        .src = src,
        .dst = dst,
        .math = dev->math_buf->address,
        .n_rows = n_rows,
        .head_dim = l->head_dim,
        .row_bytes = src_stride,
        .dst_stride = dst_stride,
        .encoding = l->encoding,
        .bits = l->bits,
        .rotation = l->rotation,
        .flags = (l->qjl ? TKV_VK_FLAG_QJL : 0u) | (inverse ? TKV_VK_FLAG_INVERSE : 0u) |
                 (query ? TKV_VK_FLAG_QUERY : 0u),
        .rows_per_wg = per_wg,
        .q8_block = TKV_Q8_0_BLOCK,
    };
    memcpy(push.groups, l->groups, sizeof push.groups);
    return vk_dispatch(dev, dev->rows, &push, sizeof push, ((uint64_t)n_rows + per_wg - 1) / per_wg, op);
}
