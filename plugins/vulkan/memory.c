/* SPDX-License-Identifier: MIT */
/*
 * Device memory: the buffers the core allocates (the cache lives in them),
 * the device's scratch buffers, and moving bytes between host and device.
 *
 * Cache and scratch buffers take device-local memory, preferring a type the
 * host cannot see on a discrete GPU (the host-visible part of its memory is
 * a small window) and any device-local type elsewhere. Where that memory is
 * host visible and coherent (lavapipe, integrated GPUs) the buffer stays
 * mapped and the core's reads and writes are plain copies; elsewhere they
 * go through the host-visible staging buffer and a transfer command.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "vk.h"

/* Staging transfers move at most this much per submit, so that a large
 * read or write does not need a staging buffer as large as itself. */
#define VK_STAGING_CHUNK (64ull << 20)

static int memory_type_for(const struct vk_device *dev, uint32_t allowed, int memory, uint32_t *type)
{
    if (memory == 2) { /* the measurement knob's BAR window: device-local, host visible and coherent */
        const VkMemoryPropertyFlags bar = VK_MEMORY_PROPERTY_DEVICE_LOCAL_BIT | VK_MEMORY_PROPERTY_HOST_VISIBLE_BIT |
                                          VK_MEMORY_PROPERTY_HOST_COHERENT_BIT;
        for (uint32_t i = 0; i < dev->memory.memoryTypeCount; i++)
            if ((allowed & (1u << i)) && (dev->memory.memoryTypes[i].propertyFlags & bar) == bar) {
                *type = i;
                return 1;
            }
        memory = 0;
    }
    const uint32_t *types = memory ? dev->host_types : dev->device_types;
    uint32_t n = memory ? dev->n_host_types : dev->n_device_types;
    for (uint32_t i = 0; i < n; i++)
        if (allowed & (1u << types[i])) {
            *type = types[i];
            return 1;
        }
    return 0;
}

int vk_buffer_create(struct vk_device *dev, uint64_t bytes, int host, const char *op,
                     struct vk_buffer **out)
{
    return vk_buffer_create_in(dev, bytes, host ? 1 : 0, op, out);
}

int vk_buffer_create_in(struct vk_device *dev, uint64_t bytes, int memory, const char *op,
                        struct vk_buffer **out)
{
    const int host = memory == 1;
    VkResult r;
    int rc;
    uint64_t padded = bytes + VK_BUFFER_SLACK;
    if (bytes > dev->max_allocation - VK_BUFFER_SLACK)
        return VK_ERROR_STATUS(TKV_ENOMEM, "%s: %llu bytes exceed the device's largest buffer (%llu bytes)",
                               op, (unsigned long long)bytes, (unsigned long long)dev->max_allocation);
    struct vk_buffer *b = calloc(1, sizeof *b);
    if (!b)
        return VK_ERROR_STATUS(TKV_ENOMEM, "%s: no host memory for a buffer handle", op);
    b->magic = VK_BUFFER_MAGIC;
    b->host = (uint32_t)host;
    b->type = 0;
    b->size = bytes;
    VkBufferCreateInfo info = {
        .sType = VK_STRUCTURE_TYPE_BUFFER_CREATE_INFO,
        .size = padded,
        .usage = VK_BUFFER_USAGE_STORAGE_BUFFER_BIT | VK_BUFFER_USAGE_TRANSFER_SRC_BIT |
                 VK_BUFFER_USAGE_TRANSFER_DST_BIT | VK_BUFFER_USAGE_SHADER_DEVICE_ADDRESS_BIT,
        .sharingMode = VK_SHARING_MODE_EXCLUSIVE,
    };
    if ((r = vkCreateBuffer(dev->device, &info, NULL, &b->buffer)) != VK_SUCCESS) {
        free(b);
        return vk_fail(op, "vkCreateBuffer", r);
    }
    VkMemoryRequirements req;
    vkGetBufferMemoryRequirements(dev->device, b->buffer, &req);
    uint32_t type;
    if (!memory_type_for(dev, req.memoryTypeBits, memory, &type)) {
        vkDestroyBuffer(dev->device, b->buffer, NULL);
        free(b);
        return VK_ERROR_STATUS(TKV_EDEVICE, "%s: no %s memory type suits a buffer (allowed types 0x%x)", op,
                               host ? "host-visible coherent" : "device", req.memoryTypeBits);
    }
    b->type = type;
    VkMemoryAllocateFlagsInfo flags = {
        .sType = VK_STRUCTURE_TYPE_MEMORY_ALLOCATE_FLAGS_INFO,
        .flags = VK_MEMORY_ALLOCATE_DEVICE_ADDRESS_BIT,
    };
    VkMemoryAllocateInfo alloc = {
        .sType = VK_STRUCTURE_TYPE_MEMORY_ALLOCATE_INFO,
        .pNext = &flags,
        .allocationSize = req.size,
        .memoryTypeIndex = type,
    };
    if ((r = vkAllocateMemory(dev->device, &alloc, NULL, &b->memory)) != VK_SUCCESS) {
        vkDestroyBuffer(dev->device, b->buffer, NULL);
        free(b);
        return vk_fail(op, "vkAllocateMemory", r);
    }
    if ((r = vkBindBufferMemory(dev->device, b->buffer, b->memory, 0)) != VK_SUCCESS) {
        rc = vk_fail(op, "vkBindBufferMemory", r);
        vk_buffer_destroy(dev, b);
        return rc;
    }
    VkMemoryPropertyFlags props = dev->memory.memoryTypes[type].propertyFlags;
    if (dev->knobs.profile) {
        uint32_t heap = dev->memory.memoryTypes[type].heapIndex;
        fprintf(stderr, "vkprof: %s buffer of %llu bytes in memory type %u (flags 0x%x) of heap %u (flags 0x%x, %llu MiB)\n",
                op, (unsigned long long)bytes, type, (unsigned)props, heap,
                (unsigned)dev->memory.memoryHeaps[heap].flags,
                (unsigned long long)(dev->memory.memoryHeaps[heap].size >> 20));
    }
    VkMemoryPropertyFlags mappable = VK_MEMORY_PROPERTY_HOST_VISIBLE_BIT | VK_MEMORY_PROPERTY_HOST_COHERENT_BIT;
    if ((props & mappable) == mappable &&
        (r = vkMapMemory(dev->device, b->memory, 0, VK_WHOLE_SIZE, 0, &b->map)) != VK_SUCCESS) {
        rc = vk_fail(op, "vkMapMemory", r);
        vk_buffer_destroy(dev, b);
        return rc;
    }
    VkBufferDeviceAddressInfo address = {
        .sType = VK_STRUCTURE_TYPE_BUFFER_DEVICE_ADDRESS_INFO, .buffer = b->buffer,
    };
    b->address = vkGetBufferDeviceAddress(dev->device, &address);
    /* not zeroed: the core never reads a row it has not written, scratch is
     * written before it is read, and the slack's bytes are never used */
    *out = b;
    return TKV_OK;
}

void vk_buffer_destroy(struct vk_device *dev, struct vk_buffer *b)
{
    if (!b)
        return;
    if (b->map)
        vkUnmapMemory(dev->device, b->memory);
    vkDestroyBuffer(dev->device, b->buffer, NULL);
    vkFreeMemory(dev->device, b->memory, NULL);
    b->magic = 0;
    free(b);
}

int vk_scratch(struct vk_device *dev, struct vk_buffer **slot, uint64_t bytes, int host, const char *op)
{
    return vk_scratch_in(dev, slot, bytes, host ? 1 : 0, op);
}

int vk_scratch_in(struct vk_device *dev, struct vk_buffer **slot, uint64_t bytes, int memory, const char *op)
{
    if (*slot && (*slot)->size >= bytes)
        return TKV_OK;
    /* grow geometrically so that a slowly growing context reallocates rarely */
    uint64_t size = *slot ? (*slot)->size * 2 : (1ull << 20);
    if (size < bytes)
        size = bytes;
    /* on the host's device, queued calls may still use the old one */
    vk_retire(dev, *slot);
    *slot = NULL;
    return vk_buffer_create_in(dev, size, memory, op, slot);
}

int vk_upload(struct vk_device *dev, struct vk_buffer *dst, uint64_t offset, const void *src,
              uint64_t bytes, const char *op)
{
    int rc;
    if (dst->map) { /* the host writes: queued copies from or to it go first */
        if ((rc = vk_flush(dev, op)) != TKV_OK)
            return rc;
        memcpy((unsigned char *)dst->map + offset, src, (size_t)bytes);
        return TKV_OK;
    }
    for (uint64_t done = 0; done < bytes;) {
        uint64_t n = bytes - done < VK_STAGING_CHUNK ? bytes - done : VK_STAGING_CHUNK;
        if ((rc = vk_scratch(dev, &dev->staging, n, 1, op)) != TKV_OK)
            return rc;
        memcpy(dev->staging->map, (const unsigned char *)src + done, (size_t)n);
        if ((rc = vk_begin(dev, op)) != TKV_OK)
            return rc;
        vk_copy(dev, dev->staging, 0, dst, offset + done, n);
        if ((rc = vk_submit(dev, op)) != TKV_OK)
            return rc;
        done += n;
    }
    return TKV_OK;
}

int vk_download(struct vk_device *dev, const struct vk_buffer *src, uint64_t offset, void *dst,
                uint64_t bytes, const char *op)
{
    int rc;
    if (src->map) { /* the host reads: queued copies to it go first */
        if ((rc = vk_flush(dev, op)) != TKV_OK)
            return rc;
        memcpy(dst, (const unsigned char *)src->map + offset, (size_t)bytes);
        return TKV_OK;
    }
    for (uint64_t done = 0; done < bytes;) {
        uint64_t n = bytes - done < VK_STAGING_CHUNK ? bytes - done : VK_STAGING_CHUNK;
        if ((rc = vk_scratch(dev, &dev->staging, n, 1, op)) != TKV_OK || (rc = vk_begin(dev, op)) != TKV_OK)
            return rc;
        vk_copy(dev, src, offset + done, dev->staging, 0, n);
        if ((rc = vk_submit(dev, op)) != TKV_OK)
            return rc;
        memcpy((unsigned char *)dst + done, dev->staging->map, (size_t)n);
        done += n;
    }
    return TKV_OK;
}
