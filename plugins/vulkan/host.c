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

/* The input ring (vk.h, struct vk_input_ring). Device-local memory the
 * host maps (a discrete GPU's BAR window; any memory on lavapipe): the
 * shaders read a call's inputs where the host wrote them. Without such a
 * type the inputs would cross the bus at every read: captured instead. */
static int input_ring_create(struct vk_device *dev, const char *op)
{
    const VkMemoryPropertyFlags bar = VK_MEMORY_PROPERTY_DEVICE_LOCAL_BIT | VK_MEMORY_PROPERTY_HOST_VISIBLE_BIT |
                                      VK_MEMORY_PROPERTY_HOST_COHERENT_BIT;
    int found = 0;
    for (uint32_t i = 0; i < dev->memory.memoryTypeCount; i++)
        found |= (dev->memory.memoryTypes[i].propertyFlags & bar) == bar;
    if (!found) {
        dev->in_ring.unusable = 1;
        return TKV_OK;
    }
    int rc = vk_buffer_create_in(dev, (uint64_t)VK_INPUT_SLOTS * VK_INPUT_SLOT_BYTES, 2, op, &dev->in_ring.buf);
    if (rc != TKV_OK)
        return rc;
    if (!dev->in_ring.buf->map ||
        (dev->memory.memoryTypes[dev->in_ring.buf->type].propertyFlags & bar) != bar) {
        vk_buffer_destroy(dev, dev->in_ring.buf); /* (the buffer's memory type allows no such type) */
        dev->in_ring.buf = NULL;
        dev->in_ring.unusable = 1;
    }
    return TKV_OK;
}

int vk_input_slot(struct vk_device *dev, uint64_t bytes, uint32_t *slot, const char *op)
{
    struct vk_input_ring *ring = &dev->in_ring;
    VkResult r;
    int rc;
    *slot = VK_INPUT_NONE;
    if (dev->knobs.no_input_ring || bytes > VK_INPUT_SLOT_BYTES || ring->unusable)
        return TKV_OK;
    if (!ring->buf && ((rc = input_ring_create(dev, op)) != TKV_OK || !ring->buf))
        return rc;
    const uint32_t i = ring->next;
    if (!ring->event[i]) {
        VkEventCreateInfo info = { .sType = VK_STRUCTURE_TYPE_EVENT_CREATE_INFO };
        if ((r = vkCreateEvent(dev->device, &info, NULL, &ring->event[i])) != VK_SUCCESS) {
            ring->event[i] = VK_NULL_HANDLE;
            return vk_fail(op, "vkCreateEvent(input slot)", r);
        }
    } else if (ring->used[i]) {
        /* the call that used it may not have run yet (or its command buffer
         * is not even submitted): its inputs are captured instead */
        r = vkGetEventStatus(dev->device, ring->event[i]);
        if (r == VK_EVENT_RESET) {
            /* the next call tries the next slot: one left in a command
             * buffer the host discarded costs a capture per round */
            ring->next = (i + 1u) % VK_INPUT_SLOTS;
            return TKV_OK;
        }
        if (r != VK_EVENT_SET) {
            dev->lost = r == VK_ERROR_DEVICE_LOST;
            return vk_fail(op, "vkGetEventStatus(input slot)", r);
        }
        if ((r = vkResetEvent(dev->device, ring->event[i])) != VK_SUCCESS)
            return vk_fail(op, "vkResetEvent(input slot)", r);
        ring->used[i] = 0;
    }
    *slot = i;
    ring->next = (i + 1u) % VK_INPUT_SLOTS;
    return TKV_OK;
}

unsigned char *vk_input_map(struct vk_device *dev, uint32_t slot)
{
    return (unsigned char *)dev->in_ring.buf->map + (size_t)slot * VK_INPUT_SLOT_BYTES;
}

VkDeviceAddress vk_input_address(struct vk_device *dev, uint32_t slot)
{
    return dev->in_ring.buf->address + (VkDeviceAddress)slot * VK_INPUT_SLOT_BYTES;
}

void vk_input_done(struct vk_device *dev, uint32_t slot)
{
    /* set once every command recorded before it has run (the call's reads
     * of the slot among them) */
    vkCmdSetEvent(dev->cmd, dev->in_ring.event[slot], VK_PIPELINE_STAGE_ALL_COMMANDS_BIT);
    dev->in_ring.used[slot] = 1;
}

void vk_host_release(struct vk_device *dev)
{
    for (uint32_t i = 0; i < VK_INPUT_SLOTS; i++)
        if (dev->in_ring.event[i])
            vkDestroyEvent(dev->device, dev->in_ring.event[i], NULL);
    vk_buffer_destroy(dev, dev->in_ring.buf);
    memset(&dev->in_ring, 0, sizeof dev->in_ring);
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
