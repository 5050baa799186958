/* SPDX-License-Identifier: MIT */
/*
 * Typed tensors of the host API (tkv_cache_append_tensors,
 * tkv_attention_tensors): checks a struct tkv_tensor and converts between
 * the host's element type and the f32 the backends take. f16 and bf16
 * widen to f32 exactly; f32 narrows to nearest even (the format's own fp16
 * rounding, tkv_fp16_from_float; bf16 the same rule on the upper 16 bits,
 * tkv_bf16_from_float: turbokv_scalar.h, which the GPU plugins' conversion
 * kernels compile too).
 */
#include <stdlib.h>
#include <string.h>

#include "core.h"
#include "cache.h"
#include "error.h"
#include "tensor.h"

uint32_t tkv_elem_size(uint32_t elem) { return elem == TKV_ELEM_F32 ? 4u : 2u; }

int tkv_tensor_check(const tkv_cache *c, const struct tkv_tensor *t, const char *fn, const char *name)
{
    if (!t)
        return tkv_error(TKV_EINVAL, "%s: %s is NULL", fn, name);
    if (t->struct_size < offsetof(struct tkv_tensor, data) + sizeof t->data)
        return tkv_error(TKV_EINVAL, "%s: %s->struct_size %u too small (at least %zu)", fn, name, t->struct_size,
                         offsetof(struct tkv_tensor, data) + sizeof t->data);
    if (t->elem != TKV_ELEM_F32 && t->elem != TKV_ELEM_F16 && t->elem != TKV_ELEM_BF16)
        return tkv_error(TKV_EINVAL, "%s: %s->elem %u is not an element type (0 f32, 1 f16, 2 bf16)", fn, name,
                         t->elem);
    if (t->reserved)
        return tkv_error(TKV_EINVAL, "%s: %s->reserved is %u, must be 0", fn, name, t->reserved);
    if (t->memory == TKV_MEMORY_HOST) {
        if (!t->data)
            return tkv_error(TKV_EINVAL, "%s: %s->data is NULL", fn, name);
        return TKV_OK;
    }
    if (t->memory != TKV_MEMORY_OPENCL && t->memory != TKV_MEMORY_VULKAN)
        return tkv_error(TKV_EINVAL, "%s: %s->memory %u is not a memory kind (0 host, 1 OpenCL, 2 Vulkan)", fn, name,
                         t->memory);
    const char *kind = t->memory == TKV_MEMORY_OPENCL ? "an OpenCL buffer" : "a Vulkan buffer";
    if (t->struct_size < offsetof(struct tkv_tensor, size) + sizeof t->size)
        return tkv_error(TKV_EINVAL, "%s: %s is %s but its struct_size %u predates device memory (0.5: %zu)", fn, name,
                         kind, t->struct_size, offsetof(struct tkv_tensor, size) + sizeof t->size);
    const struct tkv_device *d = &c->ctx->device;
    if (!d->host_backend)
        return tkv_error(TKV_EUNSUPPORTED, "%s: %s is %s, but the context was not opened on the host's device "
                         "(tkv_context_options.host_device)", fn, name, kind);
    uint32_t want = t->memory == TKV_MEMORY_OPENCL ? TKV_HOST_OPENCL : TKV_HOST_VULKAN;
    if (d->host_backend != want)
        return tkv_error(TKV_EINVAL, "%s: %s is %s, but the context was opened on the host's %s device", fn, name,
                         kind, d->host_backend == TKV_HOST_OPENCL ? "OpenCL" : "Vulkan");
    if (!(d->caps->features & TKV_CAP_DEVICE_TENSORS))
        return tkv_error(TKV_EUNSUPPORTED, "%s: %s is %s; backend %s takes no device tensors "
                         "(TKV_CAP_DEVICE_TENSORS)", fn, name, kind, d->mod->ops.name);
    if (!t->handle)
        return tkv_error(TKV_EINVAL, "%s: %s->handle is 0 (%s)", fn, name, kind);
    if (t->data)
        return tkv_error(TKV_EINVAL, "%s: %s->data must be NULL for device memory (the buffer is handle)", fn, name);
    if (t->offset % tkv_elem_size(t->elem))
        return tkv_error(TKV_EINVAL, "%s: %s->offset %llu is not a multiple of the element's %u bytes", fn, name,
                         (unsigned long long)t->offset, tkv_elem_size(t->elem));
    return TKV_OK;
}

int tkv_tensor_device(const struct tkv_tensor *t, uint64_t n, const char *fn, const char *name,
                      struct tkv_device_tensor *d)
{
    uint64_t esize = tkv_elem_size(t->elem);
    if (n > UINT64_MAX / esize || t->offset > t->size || n * esize > t->size - t->offset)
        return tkv_error(TKV_ERANGE, "%s: %s holds %llu elements of %llu bytes at offset %llu, beyond the buffer's "
                         "%llu bytes", fn, name, (unsigned long long)n, (unsigned long long)esize,
                         (unsigned long long)t->offset, (unsigned long long)t->size);
    *d = (struct tkv_device_tensor){
        .memory = t->memory, .elem = t->elem, .handle = t->handle, .offset = t->offset, .size = t->size,
    };
    return TKV_OK;
}

void tkv_tensor_widen(float *dst, const void *src, uint32_t elem, size_t n)
{
    const uint16_t *h = src;
    switch (elem) {
    case TKV_ELEM_F16:
        for (size_t i = 0; i < n; i++)
            dst[i] = tkv_fp16_to_float(h[i]);
        break;
    case TKV_ELEM_BF16:
        for (size_t i = 0; i < n; i++)
            dst[i] = tkv_bf16_to_float(h[i]);
        break;
    default:
        memcpy(dst, src, n * sizeof *dst);
        break;
    }
}

void tkv_tensor_narrow(void *dst, const float *src, uint32_t elem, size_t n)
{
    uint16_t *h = dst;
    switch (elem) {
    case TKV_ELEM_F16:
        for (size_t i = 0; i < n; i++)
            h[i] = tkv_fp16_from_float(src[i]);
        break;
    case TKV_ELEM_BF16:
        for (size_t i = 0; i < n; i++)
            h[i] = tkv_bf16_from_float(src[i]);
        break;
    default:
        memcpy(dst, src, n * sizeof *src);
        break;
    }
}

float *tkv_tensor_scratch(tkv_cache *c, size_t n_floats, const char *fn)
{
    if (n_floats > SIZE_MAX / sizeof(float))
        return (void)tkv_error(TKV_ENOMEM, "%s: %zu values do not fit in memory", fn, n_floats), NULL;
    if (n_floats > c->conv_cap) {
        float *p = realloc(c->conv, n_floats * sizeof *p);
        if (!p)
            return (void)tkv_error(TKV_ENOMEM, "%s: out of memory for %zu bytes of f32 conversion", fn,
                                   n_floats * sizeof *p), NULL;
        c->conv = p;
        c->conv_cap = n_floats;
    }
    return c->conv;
}
