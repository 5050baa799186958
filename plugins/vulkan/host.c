/* SPDX-License-Identifier: MIT */
/*
 * The host's own Vulkan device (ABI 2.2/2.3): its VkBuffers as q, k, v and
 * out, reached through their device addresses, and the conversion shader
 * that widens f16 / bf16 inputs and narrows f32 outputs on the device
 * exactly as the core does on the host (shaders/convert.comp). Adoption
 * itself is in plugin.c, the recording of calls that are not waited for in
 * commands.c (docs/api.md, "The host's own device").
 */
#include <stdlib.h>
#include <string.h>

#include "vk.h"

#include "convert_spv.h"

/* A VkBuffer from the 64-bit handle of struct tkv_tensor. */
static VkBuffer buffer_of(uint64_t handle)
{
#if defined(VK_USE_64_BIT_PTR_DEFINES) && VK_USE_64_BIT_PTR_DEFINES == 1
    return (VkBuffer)(uintptr_t)handle;
#else
    return (VkBuffer)handle;
#endif
}

static uint64_t elem_bytes(uint32_t elem) { return elem == TKV_ELEM_F32 ? 4u : 2u; }

int vk_tensor_address(struct vk_device *dev, const struct tkv_device_tensor *t, uint64_t n, const char *op,
                      const char *what, VkDeviceAddress *address)
{
    if (t->memory != TKV_MEMORY_VULKAN)
        return VK_ERROR_STATUS(TKV_EINVAL, "%s: %s is not a Vulkan buffer (memory %u)", op, what, t->memory);
    VkBuffer b = buffer_of(t->handle);
    /* what the buffer can hold at most: its memory requirement is at least
     * its size (the host's VkBufferCreateInfo.size) */
    VkMemoryRequirements req;
    vkGetBufferMemoryRequirements(dev->device, b, &req);
    const uint64_t bytes = n * elem_bytes(t->elem);
    if (t->size > req.size || t->offset > req.size || bytes > req.size - t->offset)
        return VK_ERROR_STATUS(TKV_ERANGE,
                               "%s: %s: %llu bytes at offset %llu, the VkBuffer holds at most %llu bytes (the host "
                               "said %llu)",
                               op, what, (unsigned long long)bytes, (unsigned long long)t->offset,
                               (unsigned long long)req.size, (unsigned long long)t->size);
    VkBufferDeviceAddressInfo info = { .sType = VK_STRUCTURE_TYPE_BUFFER_DEVICE_ADDRESS_INFO, .buffer = b };
    VkDeviceAddress base = vkGetBufferDeviceAddress(dev->device, &info);
    if (!base)
        return VK_ERROR_STATUS(TKV_EINVAL,
                               "%s: %s: the VkBuffer has no device address (create it with "
                               "VK_BUFFER_USAGE_SHADER_DEVICE_ADDRESS_BIT, its memory with "
                               "VK_MEMORY_ALLOCATE_DEVICE_ADDRESS_BIT)",
                               op, what);
    *address = base + t->offset;
    return TKV_OK;
}

static int convert_pipeline(struct vk_device *dev, const char *op)
{
    VkResult r;
    if (dev->convert)
        return TKV_OK;
    if (!dev->convert_module) {
        VkShaderModuleCreateInfo info = {
            .sType = VK_STRUCTURE_TYPE_SHADER_MODULE_CREATE_INFO, .codeSize = sizeof convert_spv, .pCode = convert_spv,
        };
        if ((r = vkCreateShaderModule(dev->device, &info, NULL, &dev->convert_module)) != VK_SUCCESS) {
            dev->convert_module = VK_NULL_HANDLE;
            return vk_fail(op, "vkCreateShaderModule(convert)", r);
        }
    }
    const uint32_t wg = TKV_VK_WG;
    VkSpecializationMapEntry entry = { .constantID = TKV_VK_SPEC_WG, .offset = 0, .size = 4 };
    VkSpecializationInfo spec = { .mapEntryCount = 1, .pMapEntries = &entry, .dataSize = 4, .pData = &wg };
    VkComputePipelineCreateInfo info = {
        .sType = VK_STRUCTURE_TYPE_COMPUTE_PIPELINE_CREATE_INFO,
        .stage = {
            .sType = VK_STRUCTURE_TYPE_PIPELINE_SHADER_STAGE_CREATE_INFO,
            .stage = VK_SHADER_STAGE_COMPUTE_BIT,
            .module = dev->convert_module,
            .pName = "main",
            .pSpecializationInfo = &spec,
        },
        .layout = dev->layout,
    };
    if ((r = vkCreateComputePipelines(dev->device, VK_NULL_HANDLE, 1, &info, NULL, &dev->convert)) != VK_SUCCESS) {
        dev->convert = VK_NULL_HANDLE;
        return vk_fail(op, "vkCreateComputePipelines(convert)", r);
    }
    return TKV_OK;
}

int vk_record_convert(struct vk_device *dev, VkDeviceAddress src, uint32_t src_elem, VkDeviceAddress dst,
                      uint32_t dst_elem, uint64_t n, const char *op)
{
    int rc;
    if (n > UINT32_MAX)
        return VK_ERROR_STATUS(TKV_EUNSUPPORTED, "%s: %llu elements exceed the conversion's 2^32", op,
                               (unsigned long long)n);
    if ((rc = convert_pipeline(dev, op)) != TKV_OK)
        return rc;
    struct vk_convert_push push = {
        .src = src, .dst = dst, .n = (uint32_t)n, .src_elem = src_elem, .dst_elem = dst_elem,
    };
    return vk_dispatch(dev, dev->convert, &push, sizeof push, (n + TKV_VK_WG - 1) / TKV_VK_WG, op);
}

int vk_record_reserve(struct vk_device *dev, size_t bytes, const char *op)
{
    if (bytes <= dev->record_cap)
        return TKV_OK;
    size_t cap = dev->record_cap ? dev->record_cap : 4096;
    while (cap < bytes)
        cap *= 2;
    unsigned char *p = realloc(dev->record_host, cap);
    if (!p)
        return VK_ERROR_STATUS(TKV_ENOMEM, "%s: no host memory (%zu bytes) for a queued call's inputs", op, cap);
    dev->record_host = p;
    dev->record_cap = cap;
    return TKV_OK;
}

void vk_host_release(struct vk_device *dev)
{
    if (dev->convert)
        vkDestroyPipeline(dev->device, dev->convert, NULL);
    if (dev->convert_module)
        vkDestroyShaderModule(dev->device, dev->convert_module, NULL);
    dev->convert = VK_NULL_HANDLE;
    dev->convert_module = VK_NULL_HANDLE;
    free(dev->record_host);
    dev->record_host = NULL;
    dev->record_cap = 0;
}
