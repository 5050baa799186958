/* SPDX-License-Identifier: MIT */
/*
 * turbokv — the host's own device and the memory a tensor lives in. Shared
 * by the host API (turbokv.h) and the plugin ABI (turbokv_plugin.h).
 * Self-contained: only <stdint.h>; no OpenCL or Vulkan header is needed to
 * include it (the handles are passed as the pointers they are).
 *
 * A host that already runs on a GPU opens the context on its own device
 * (struct tkv_context_options.host_device): turbokv then allocates its
 * cache there, never creates a second context or device, and takes q, k, v
 * and out as the host's device buffers (struct tkv_tensor with memory
 * TKV_MEMORY_OPENCL or TKV_MEMORY_VULKAN). docs/api.md, "The host's own
 * device", has the rules (ordering, what is waited for, what is not).
 */
#ifndef TURBOKV_DEVICE_H
#define TURBOKV_DEVICE_H

#include <stdint.h>

/* Element types of a tensor (struct tkv_tensor.elem). */
enum tkv_elem {
    TKV_ELEM_F32 = 0,  /* IEEE binary32 */
    TKV_ELEM_F16 = 1,  /* IEEE binary16 */
    TKV_ELEM_BF16 = 2, /* bfloat16: the upper 16 bits of a binary32 */
};

/* Where a tensor's elements live (struct tkv_tensor.memory). */
enum tkv_memory {
    TKV_MEMORY_HOST = 0,   /* data is a host pointer */
    /* --- 0.5: device memory, only on a context opened on the host's device --- */
    TKV_MEMORY_OPENCL = 1, /* handle is a cl_mem of the host's cl_context */
    TKV_MEMORY_VULKAN = 2, /* handle is a VkBuffer of the host's VkDevice */
};

/* Which API the host's device is driven by (struct tkv_host_device.backend);
 * it names the plugin that opens it ("opencl", "vulkan"). */
enum tkv_host_backend {
    TKV_HOST_OPENCL = 1,
    TKV_HOST_VULKAN = 2,
};

/* OpenCL: the host's context, one of its devices and an in-order command
 * queue of that device (no CL_QUEUE_OUT_OF_ORDER_EXEC_MODE_ENABLE). turbokv
 * retains all three (clRetain*) for the life of the tkv_context and
 * enqueues every command it issues on that queue. */
struct tkv_host_opencl {
    void *context; /* cl_context */
    void *device;  /* cl_device_id */
    void *queue;   /* cl_command_queue */
};

/* Vulkan: the host's instance, physical device, device and a queue of a
 * compute-capable family. Dispatchable handles, passed as they are. */
struct tkv_host_vulkan {
    void *instance;        /* VkInstance */
    void *physical_device; /* VkPhysicalDevice */
    void *device;          /* VkDevice */
    void *queue;           /* VkQueue, of queue_family */
    uint32_t queue_family;
    uint32_t api_version;  /* the instance's VkApplicationInfo.apiVersion */
    /* PFN_vkGetInstanceProcAddr the host loaded Vulkan with; NULL: the
     * loader's own */
    void (*get_instance_proc_addr)(void);
    /* --- 0.6: read where struct_size covers it (a 0.5 struct ends before
     * flags, and is still taken) --- */
    uint32_t flags;        /* TKV_HOST_VULKAN_* bits: what the host enabled on device */
};

/* tkv_host_vulkan.flags. STATISTICS: the host created device with
 * VK_KHR_pipeline_executable_properties enabled and its feature
 * pipelineExecutableInfo on; the plugin then captures its attention
 * pipelines' statistics, whose register counts size the attention
 * dispatch on NVIDIA as on a device of its own (plugins/vulkan/README.md,
 * "How many workgroups"). A bit the host's physical device cannot have
 * enabled is refused. */
#define TKV_HOST_VULKAN_STATISTICS 0x1u
#define TKV_HOST_VULKAN_FLAGS 0x1u /* every bit defined */

/* The host's own device, tagged by backend: only the member that backend
 * names is read. */
struct tkv_host_device {
    uint32_t struct_size; /* sizeof(struct tkv_host_device) */
    uint32_t backend;     /* enum tkv_host_backend */
    struct tkv_host_opencl opencl;
    struct tkv_host_vulkan vulkan;
};

#endif
