/* SPDX-License-Identifier: MIT */
/*
 * Recording and submitting: the device's one command buffer, its fence,
 * memory barriers, copies (queued ones too) and dispatches; and what a
 * failed Vulkan call reports. On the host's own device, calls that are not
 * waited for: recorded into the host's command buffer or into a ring of
 * command buffers submitted to the host's queue without a wait, and the
 * buffers they may still use kept until commands recorded after them have
 * run.
 */
#include <stdlib.h>
#include <time.h>

#include "vk.h"

static void memory_barrier(struct vk_device *dev, VkPipelineStageFlags dst_stage, VkAccessFlags dst_access);

/* How long vk_submit polls its fence before it blocks on it. */
#define VK_SPIN_NS 2000000L

const char *vk_result_name(VkResult r)
{
    switch (r) {
#define NAME(x) case x: return #x;
    NAME(VK_SUCCESS)
    NAME(VK_NOT_READY)
    NAME(VK_TIMEOUT)
    NAME(VK_INCOMPLETE)
    NAME(VK_ERROR_OUT_OF_HOST_MEMORY)
    NAME(VK_ERROR_OUT_OF_DEVICE_MEMORY)
    NAME(VK_ERROR_INITIALIZATION_FAILED)
    NAME(VK_ERROR_DEVICE_LOST)
    NAME(VK_ERROR_MEMORY_MAP_FAILED)
    NAME(VK_ERROR_LAYER_NOT_PRESENT)
    NAME(VK_ERROR_EXTENSION_NOT_PRESENT)
    NAME(VK_ERROR_FEATURE_NOT_PRESENT)
    NAME(VK_ERROR_INCOMPATIBLE_DRIVER)
    NAME(VK_ERROR_TOO_MANY_OBJECTS)
    NAME(VK_ERROR_FORMAT_NOT_SUPPORTED)
    NAME(VK_ERROR_FRAGMENTED_POOL)
    NAME(VK_ERROR_UNKNOWN)
    NAME(VK_ERROR_OUT_OF_POOL_MEMORY)
    NAME(VK_ERROR_INVALID_EXTERNAL_HANDLE)
    NAME(VK_ERROR_FRAGMENTATION)
    NAME(VK_ERROR_INVALID_OPAQUE_CAPTURE_ADDRESS)
    NAME(VK_PIPELINE_COMPILE_REQUIRED)
#undef NAME
    default: return "VkResult";
    }
}

int vk_fail(const char *op, const char *call, VkResult r)
{
    int status = TKV_EDEVICE;
    if (r == VK_ERROR_OUT_OF_HOST_MEMORY || r == VK_ERROR_OUT_OF_DEVICE_MEMORY ||
        r == VK_ERROR_OUT_OF_POOL_MEMORY || r == VK_ERROR_FRAGMENTATION)
        status = TKV_ENOMEM;
    else if (r == VK_ERROR_INCOMPATIBLE_DRIVER || r == VK_ERROR_INITIALIZATION_FAILED)
        status = TKV_ENODEV;
    return VK_ERROR_STATUS(status, "%s: %s failed: %s (%d)", op, call, vk_result_name(r), (int)r);
}

/* The start of every recording, into dev->cmd: the queued copies and a
 * barrier; on the host's device always the barrier (earlier queued calls,
 * the host's own earlier work), and an event after everything recorded
 * before for the buffers retired since the last recording. */
static int record_start(struct vk_device *dev, enum vk_entry entry, const char *op)
{
    /* The queued copies first, in call order, between two barriers: the
     * one before makes the rows earlier queued appends wrote visible to them
     * (an append ends with an execution dependency only), the one after
     * makes this submission see them done. They stay queued until a
     * submission that holds them succeeds (an op that fails before
     * submitting drops its command buffer, not the copies). */
    if (dev->n_pending)
        vk_barrier(dev);
    for (size_t i = 0; i < dev->n_pending; i++)
        vkCmdCopyBuffer(dev->cmd, dev->pending[i].src, dev->pending[i].dst, 1, &dev->pending[i].region);
    if (dev->n_pending || (dev->adopted && entry != VK_ENTRY_NONE)) {
        if (entry == VK_ENTRY_COMPUTE)
            memory_barrier(dev, VK_PIPELINE_STAGE_COMPUTE_SHADER_BIT,
                           VK_ACCESS_SHADER_READ_BIT | VK_ACCESS_SHADER_WRITE_BIT);
        else
            vk_barrier(dev);
    }
    if (!dev->adopted)
        return TKV_OK;
    vk_collect(dev, 0);
    for (size_t i = 0; i < dev->n_retired; i++) {
        struct vk_retired *t = &dev->retired[i];
        if (t->event)
            continue;
        VkEventCreateInfo info = { .sType = VK_STRUCTURE_TYPE_EVENT_CREATE_INFO };
        VkResult r = vkCreateEvent(dev->device, &info, NULL, &t->event);
        if (r != VK_SUCCESS) {
            t->event = VK_NULL_HANDLE;
            return vk_fail(op, "vkCreateEvent", r);
        }
        /* set once every command before it in submission order has run */
        vkCmdSetEvent(dev->cmd, t->event, VK_PIPELINE_STAGE_ALL_COMMANDS_BIT);
    }
    return TKV_OK;
}

static int begin_buffer(struct vk_device *dev, VkCommandBuffer cmd, const char *op)
{
    VkResult r;
    if ((r = vkResetCommandBuffer(cmd, 0)) != VK_SUCCESS)
        return vk_fail(op, "vkResetCommandBuffer", r);
    VkCommandBufferBeginInfo begin = {
        .sType = VK_STRUCTURE_TYPE_COMMAND_BUFFER_BEGIN_INFO,
        .flags = VK_COMMAND_BUFFER_USAGE_ONE_TIME_SUBMIT_BIT,
    };
    if ((r = vkBeginCommandBuffer(cmd, &begin)) != VK_SUCCESS)
        return vk_fail(op, "vkBeginCommandBuffer", r);
    dev->cmd = cmd;
    return TKV_OK;
}

int vk_begin(struct vk_device *dev, const char *op)
{
    int rc;
    if (dev->lost)
        return VK_ERROR_STATUS(TKV_EDEVICE, "%s: the device was lost earlier", op);
    if (dev->host_cmd)
        return VK_ERROR_STATUS(TKV_EBUSY, "%s: would wait for the device while the host's command buffer is set "
                               "(tkv_context_set_command_buffer(ctx, NULL) first)", op);
    dev->queued = 0;
    if ((rc = begin_buffer(dev, dev->own_cmd, op)) != TKV_OK)
        return rc;
    return record_start(dev, VK_ENTRY_FULL, op);
}

int vk_may_wait(struct vk_device *dev, const char *op)
{
    if (dev->lost)
        return VK_ERROR_STATUS(TKV_EDEVICE, "%s: the device was lost earlier", op);
    if (dev->host_cmd)
        return VK_ERROR_STATUS(TKV_EBUSY, "%s: would wait for the device while the host's command buffer is set "
                               "(tkv_context_set_command_buffer(ctx, NULL) first, and submit it)", op);
    return dev->adopted ? vk_drain(dev, op) : TKV_OK;
}

static int slot_wait(struct vk_device *dev, struct vk_slot *s, const char *op)
{
    if (!s->in_flight)
        return TKV_OK;
    VkResult r = vkWaitForFences(dev->device, 1, &s->fence, VK_TRUE, UINT64_MAX);
    if (r != VK_SUCCESS) {
        dev->lost = r == VK_ERROR_DEVICE_LOST;
        return vk_fail(op, "vkWaitForFences(queued call)", r);
    }
    if ((r = vkResetFences(dev->device, 1, &s->fence)) != VK_SUCCESS)
        return vk_fail(op, "vkResetFences", r);
    s->in_flight = 0;
    return TKV_OK;
}

int vk_drain(struct vk_device *dev, const char *op)
{
    int rc;
    for (uint32_t i = 0; i < VK_RING_SLOTS; i++)
        if ((rc = slot_wait(dev, &dev->ring[i], op)) != TKV_OK)
            return rc;
    return TKV_OK;
}

static int begin_call(struct vk_device *dev, int queued, enum vk_entry entry, const char *op)
{
    int rc;
    VkResult r;
    if (!queued)
        return vk_begin(dev, op);
    if (dev->lost)
        return VK_ERROR_STATUS(TKV_EDEVICE, "%s: the device was lost earlier", op);
    if (dev->host_cmd) {
        /* the host's command buffer, in the recording state: appended to */
        dev->cmd = dev->host_cmd;
    } else {
        /* a ring slot, submitted without a wait; its fence is waited for
         * only when the slot comes round again */
        struct vk_slot *s = &dev->ring[dev->ring_next];
        if ((rc = slot_wait(dev, s, op)) != TKV_OK)
            return rc;
        if (!s->cmd) {
            VkCommandBufferAllocateInfo alloc = {
                .sType = VK_STRUCTURE_TYPE_COMMAND_BUFFER_ALLOCATE_INFO, .commandPool = dev->pool,
                .level = VK_COMMAND_BUFFER_LEVEL_PRIMARY, .commandBufferCount = 1,
            };
            if ((r = vkAllocateCommandBuffers(dev->device, &alloc, &s->cmd)) != VK_SUCCESS) {
                s->cmd = VK_NULL_HANDLE;
                return vk_fail(op, "vkAllocateCommandBuffers", r);
            }
        }
        if (!s->fence) {
            VkFenceCreateInfo fence = { .sType = VK_STRUCTURE_TYPE_FENCE_CREATE_INFO };
            if ((r = vkCreateFence(dev->device, &fence, NULL, &s->fence)) != VK_SUCCESS) {
                s->fence = VK_NULL_HANDLE;
                return vk_fail(op, "vkCreateFence", r);
            }
        }
        if ((rc = begin_buffer(dev, s->cmd, op)) != TKV_OK)
            return rc;
    }
    dev->queued = 1;
    if ((rc = record_start(dev, entry, op)) != TKV_OK)
        return rc;
    if (dev->host_cmd)
        dev->n_pending = 0; /* recorded into the host's buffer, which the host submits */
    return TKV_OK;
}

int vk_begin_call(struct vk_device *dev, int queued, const char *op) { return begin_call(dev, queued, VK_ENTRY_FULL, op); }

int vk_begin_queued(struct vk_device *dev, enum vk_entry entry, const char *op)
{
    return begin_call(dev, 1, entry, op);
}

static int end_call(struct vk_device *dev, enum vk_exit exit, const char *op)
{
    if (!dev->queued)
        return vk_submit(dev, op);
    if (exit == VK_EXIT_FULL) {
        /* the call's writes (out, the cache) visible to the host's later
         * compute, transfer and host reads; later writes wait for its reads */
        VkMemoryBarrier b = {
            .sType = VK_STRUCTURE_TYPE_MEMORY_BARRIER,
            .srcAccessMask = VK_ACCESS_SHADER_WRITE_BIT | VK_ACCESS_TRANSFER_WRITE_BIT,
            .dstAccessMask = VK_ACCESS_SHADER_READ_BIT | VK_ACCESS_SHADER_WRITE_BIT | VK_ACCESS_TRANSFER_READ_BIT |
                             VK_ACCESS_TRANSFER_WRITE_BIT | VK_ACCESS_HOST_READ_BIT,
        };
        vkCmdPipelineBarrier(dev->cmd, VK_PIPELINE_STAGE_COMPUTE_SHADER_BIT | VK_PIPELINE_STAGE_TRANSFER_BIT,
                             VK_PIPELINE_STAGE_COMPUTE_SHADER_BIT | VK_PIPELINE_STAGE_TRANSFER_BIT |
                                 VK_PIPELINE_STAGE_HOST_BIT,
                             0, 1, &b, 0, NULL, 0, NULL);
    } else if (exit == VK_EXIT_READS) {
        /* only the host's later writes wait for the call's reads (its
         * inputs); what it wrote, nothing but the plugin's own calls read,
         * each after its entry barrier */
        vkCmdPipelineBarrier(dev->cmd, VK_PIPELINE_STAGE_COMPUTE_SHADER_BIT | VK_PIPELINE_STAGE_TRANSFER_BIT,
                             VK_PIPELINE_STAGE_COMPUTE_SHADER_BIT | VK_PIPELINE_STAGE_TRANSFER_BIT, 0, 0, NULL, 0,
                             NULL, 0, NULL);
    }
    dev->queued = 0;
    if (dev->host_cmd) {
        dev->cmd = dev->own_cmd;
        return TKV_OK;
    }
    struct vk_slot *s = &dev->ring[dev->ring_next];
    VkResult r;
    dev->cmd = dev->own_cmd;
    if ((r = vkEndCommandBuffer(s->cmd)) != VK_SUCCESS)
        return vk_fail(op, "vkEndCommandBuffer", r);
    VkSubmitInfo submit = {
        .sType = VK_STRUCTURE_TYPE_SUBMIT_INFO, .commandBufferCount = 1, .pCommandBuffers = &s->cmd,
    };
    if ((r = vkQueueSubmit(dev->queue, 1, &submit, s->fence)) != VK_SUCCESS) {
        dev->lost = r == VK_ERROR_DEVICE_LOST;
        return vk_fail(op, "vkQueueSubmit", r);
    }
    s->in_flight = 1;
    dev->ring_next = (dev->ring_next + 1u) % VK_RING_SLOTS;
    dev->n_pending = 0; /* they were in this submission */
    return TKV_OK;
}

int vk_end_call(struct vk_device *dev, const char *op) { return end_call(dev, VK_EXIT_FULL, op); }

int vk_end_queued(struct vk_device *dev, enum vk_exit exit, const char *op) { return end_call(dev, exit, op); }

void vk_update(struct vk_device *dev, const struct vk_buffer *dst, uint64_t offset, const void *src, uint64_t bytes)
{
    const uint64_t most = 65536u; /* vkCmdUpdateBuffer's limit */
    for (uint64_t done = 0; done < bytes; done += most)
        vkCmdUpdateBuffer(dev->cmd, dst->buffer, offset + done, bytes - done < most ? bytes - done : most,
                          (const unsigned char *)src + done);
}

void vk_retire(struct vk_device *dev, struct vk_buffer *b)
{
    if (!b)
        return;
    if (!dev->adopted) {
        vk_buffer_destroy(dev, b);
        return;
    }
    if (dev->n_retired == dev->cap_retired) {
        size_t cap = dev->cap_retired ? 2 * dev->cap_retired : 16;
        struct vk_retired *grown = realloc(dev->retired, cap * sizeof *grown);
        if (!grown) {
            /* no memory to defer it: wait for the queue instead (never
             * with the host's command buffer unsubmitted: then leak it) */
            if (!dev->host_cmd && dev->fn.QueueWaitIdle(dev->queue) == VK_SUCCESS)
                vk_buffer_destroy(dev, b);
            else
                vk_svc->log(TKV_LOG_WARN, "vulkan: a retired buffer of %llu bytes leaked (no host memory)",
                            (unsigned long long)b->size);
            return;
        }
        dev->retired = grown;
        dev->cap_retired = cap;
    }
    dev->retired[dev->n_retired++] = (struct vk_retired){ .buf = b };
}

void vk_collect(struct vk_device *dev, int wait_all)
{
    size_t kept = 0;
    for (size_t i = 0; i < dev->n_retired; i++) {
        struct vk_retired t = dev->retired[i];
        if (wait_all || (t.event && vkGetEventStatus(dev->device, t.event) == VK_EVENT_SET)) {
            vk_buffer_destroy(dev, t.buf);
            if (t.event)
                vkDestroyEvent(dev->device, t.event, NULL);
        } else {
            dev->retired[kept++] = t;
        }
    }
    dev->n_retired = kept;
}

static void memory_barrier(struct vk_device *dev, VkPipelineStageFlags dst_stage, VkAccessFlags dst_access)
{
    VkMemoryBarrier b = {
        .sType = VK_STRUCTURE_TYPE_MEMORY_BARRIER,
        .srcAccessMask = VK_ACCESS_SHADER_WRITE_BIT | VK_ACCESS_TRANSFER_WRITE_BIT,
        .dstAccessMask = dst_access,
    };
    vkCmdPipelineBarrier(dev->cmd, VK_PIPELINE_STAGE_COMPUTE_SHADER_BIT | VK_PIPELINE_STAGE_TRANSFER_BIT,
                         dst_stage, 0, 1, &b, 0, NULL, 0, NULL);
}

void vk_barrier(struct vk_device *dev)
{
    memory_barrier(dev, VK_PIPELINE_STAGE_COMPUTE_SHADER_BIT | VK_PIPELINE_STAGE_TRANSFER_BIT,
                   VK_ACCESS_SHADER_READ_BIT | VK_ACCESS_SHADER_WRITE_BIT | VK_ACCESS_TRANSFER_READ_BIT |
                       VK_ACCESS_TRANSFER_WRITE_BIT);
}

int vk_submit(struct vk_device *dev, const char *op)
{
    VkResult r;
    /* the host reads mapped memory once the fence signals */
    memory_barrier(dev, VK_PIPELINE_STAGE_HOST_BIT, VK_ACCESS_HOST_READ_BIT);
    if ((r = vkEndCommandBuffer(dev->cmd)) != VK_SUCCESS)
        return vk_fail(op, "vkEndCommandBuffer", r);
    VkSubmitInfo submit = {
        .sType = VK_STRUCTURE_TYPE_SUBMIT_INFO, .commandBufferCount = 1, .pCommandBuffers = &dev->cmd,
    };
    if ((r = vkQueueSubmit(dev->queue, 1, &submit, dev->fence)) != VK_SUCCESS) {
        dev->lost = r == VK_ERROR_DEVICE_LOST;
        return vk_fail(op, "vkQueueSubmit", r);
    }
    dev->queued = 0;
    /* Spin a little before blocking: a decode step's work takes tens of
     * microseconds, less than a blocking wait may take to wake up. Not on a
     * CPU device, whose workers need the cores the spinning would take. */
    struct timespec t0, t;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    do {
        r = vkGetFenceStatus(dev->device, dev->fence);
        clock_gettime(CLOCK_MONOTONIC, &t);
    } while (r == VK_NOT_READY && dev->props.deviceType != VK_PHYSICAL_DEVICE_TYPE_CPU &&
             (t.tv_sec - t0.tv_sec) * 1000000000L + (t.tv_nsec - t0.tv_nsec) < VK_SPIN_NS);
    if (r == VK_NOT_READY)
        r = vkWaitForFences(dev->device, 1, &dev->fence, VK_TRUE, UINT64_MAX);
    if (r != VK_SUCCESS) {
        dev->lost = r == VK_ERROR_DEVICE_LOST;
        return vk_fail(op, "vkWaitForFences", r);
    }
    dev->n_pending = 0; /* they were in this submission */
    if ((r = vkResetFences(dev->device, 1, &dev->fence)) != VK_SUCCESS)
        return vk_fail(op, "vkResetFences", r);
    return TKV_OK;
}

int vk_queue_copy(struct vk_device *dev, const struct vk_buffer *src, uint64_t src_offset,
                  const struct vk_buffer *dst, uint64_t dst_offset, uint64_t bytes, const char *op)
{
    if (dev->n_pending == dev->cap_pending) {
        size_t cap = dev->cap_pending ? 2 * dev->cap_pending : 64;
        struct vk_pending_copy *grown = realloc(dev->pending, cap * sizeof *grown);
        if (!grown)
            return VK_ERROR_STATUS(TKV_ENOMEM, "%s: no host memory to queue a copy (%zu queued)", op,
                                   dev->n_pending);
        dev->pending = grown;
        dev->cap_pending = cap;
    }
    dev->pending[dev->n_pending++] = (struct vk_pending_copy){
        .src = src->buffer,
        .dst = dst->buffer,
        .region = { .srcOffset = src_offset, .dstOffset = dst_offset, .size = bytes },
    };
    return TKV_OK;
}

int vk_flush(struct vk_device *dev, const char *op)
{
    int rc;
    if (dev->n_pending == 0)
        return TKV_OK;
    /* while the host records, the copies ride with its next recorded call */
    if (dev->host_cmd)
        return TKV_OK;
    if ((rc = vk_begin(dev, op)) != TKV_OK)
        return rc;
    return vk_submit(dev, op);
}

void vk_copy(struct vk_device *dev, const struct vk_buffer *src, uint64_t src_offset,
             const struct vk_buffer *dst, uint64_t dst_offset, uint64_t bytes)
{
    VkBufferCopy region = { .srcOffset = src_offset, .dstOffset = dst_offset, .size = bytes };
    vkCmdCopyBuffer(dev->cmd, src->buffer, dst->buffer, 1, &region);
}

int vk_dispatch(struct vk_device *dev, VkPipeline pipeline, const void *push, uint32_t push_size,
                uint64_t n_groups, const char *op)
{
    const uint32_t *max = dev->props.limits.maxComputeWorkGroupCount;
    uint64_t x = n_groups < max[0] ? n_groups : max[0];
    uint64_t y = (n_groups + x - 1) / x;
    uint64_t z = 1;
    if (y > max[1]) {
        z = (y + max[1] - 1) / max[1];
        y = max[1];
    }
    if (z > max[2] || n_groups > UINT32_MAX)
        return VK_ERROR_STATUS(TKV_ERANGE, "%s: %llu workgroups exceed what the device can dispatch", op,
                               (unsigned long long)n_groups);
    if (n_groups == 0)
        return TKV_OK;
    vkCmdBindPipeline(dev->cmd, VK_PIPELINE_BIND_POINT_COMPUTE, pipeline);
    vkCmdPushConstants(dev->cmd, dev->layout, VK_SHADER_STAGE_COMPUTE_BIT, 0, push_size, push);
    vkCmdDispatch(dev->cmd, (uint32_t)x, (uint32_t)y, (uint32_t)z);
    return TKV_OK;
}
