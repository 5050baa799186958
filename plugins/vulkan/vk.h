/* SPDX-License-Identifier: MIT */
/*
 * turbokv-vulkan internals: the device, its buffers and scratch memory, the
 * one command buffer every op records into, and the compute pipelines.
 *
 * Every op records its commands into the device's command buffer, submits
 * once and waits on a fence: the core never runs two ops on one device at
 * once, so one command buffer, one fence and one set of scratch buffers per
 * device are enough, and an op's outputs are complete when it returns. The
 * exception is buffer_copy, which only queues its copy: queued copies are
 * recorded at the start of the next submission (before a barrier), and
 * flushed before the host touches mapped memory or a buffer is freed.
 * Shaders reach memory through buffer device addresses passed in push
 * constants (shaders/interface.h): no descriptor sets, no binding ranges.
 */
#ifndef TKV_VK_H
#define TKV_VK_H

#include <assert.h>
#include <stddef.h>
#include <stdint.h>

#include <vulkan/vulkan.h>

#include "turbokv_plugin.h"
#include "shaders/interface.h"

/* ---- the Vulkan functions ------------------------------------------------ */

/* Every instance and device function the plugin calls, loaded per device:
 * through the loader's vkGetInstanceProcAddr for the plugin's own instance,
 * through the host's get_instance_proc_addr (when it gives one) on the
 * host's device (struct tkv_host_vulkan), then vkGetDeviceProcAddr. */
#define VK_INSTANCE_FNS(X)                                                                          \
    X(DestroyInstance) X(EnumeratePhysicalDevices) X(GetPhysicalDeviceProperties)                 \
    X(GetPhysicalDeviceProperties2) X(GetPhysicalDeviceFeatures2)                                 \
    X(GetPhysicalDeviceQueueFamilyProperties) X(GetPhysicalDeviceMemoryProperties)                \
    X(EnumerateDeviceExtensionProperties) X(CreateDevice) X(GetDeviceProcAddr)
#define VK_DEVICE_FNS(X)                                                                            \
    X(DestroyDevice) X(GetDeviceQueue) X(DeviceWaitIdle) X(QueueWaitIdle) X(QueueSubmit)          \
    X(CreateCommandPool) X(DestroyCommandPool) X(AllocateCommandBuffers) X(ResetCommandBuffer)    \
    X(BeginCommandBuffer) X(EndCommandBuffer) X(CreateFence) X(DestroyFence) X(WaitForFences)     \
    X(ResetFences) X(GetFenceStatus) X(CreateEvent) X(DestroyEvent) X(GetEventStatus)             \
    X(ResetEvent) X(CmdSetEvent) X(CreateQueryPool) X(DestroyQueryPool) X(GetQueryPoolResults)                  \
    X(CmdResetQueryPool) X(CmdWriteTimestamp) X(CreateBuffer) X(DestroyBuffer)                    \
    X(GetBufferMemoryRequirements) X(GetBufferDeviceAddress) X(AllocateMemory) X(FreeMemory)      \
    X(BindBufferMemory) X(MapMemory) X(UnmapMemory) X(CreateShaderModule) X(DestroyShaderModule)  \
    X(CreatePipelineLayout) X(DestroyPipelineLayout) X(CreateComputePipelines) X(DestroyPipeline) \
    X(CmdBindPipeline) X(CmdPushConstants) X(CmdDispatch) X(CmdPipelineBarrier) X(CmdCopyBuffer)  \
    X(CmdFillBuffer) X(CmdUpdateBuffer)

struct vk_fns {
#define VK_FN_MEMBER(name) PFN_vk##name name;
    VK_INSTANCE_FNS(VK_FN_MEMBER)
    VK_DEVICE_FNS(VK_FN_MEMBER)
#undef VK_FN_MEMBER
    /* optional (NULL where the instance lacks it): VK_NV_cooperative_matrix's shapes */
    PFN_vkGetPhysicalDeviceCooperativeMatrixPropertiesNV GetPhysicalDeviceCooperativeMatrixPropertiesNV;
};

/* The instance functions of instance through gipa; NULL, or the name of
 * the first one missing. */
const char *vk_fns_instance(struct vk_fns *fn, PFN_vkGetInstanceProcAddr gipa, VkInstance instance);
/* The device functions of device (after vk_fns_instance); NULL or the
 * name of the first one missing. */
const char *vk_fns_device(struct vk_fns *fn, VkDevice device);

/* Below, every call of an instance or device function goes through the
 * table of the device at hand, struct vk_device *dev (a call where no dev
 * is in scope does not compile): vkCmdDispatch(...) is
 * dev->fn.CmdDispatch(...). Discovery, which has no device yet, calls
 * through a struct vk_fns explicitly (plugin.c). */
#define vkDestroyInstance(...) (dev->fn.DestroyInstance(__VA_ARGS__))
#define vkEnumeratePhysicalDevices(...) (dev->fn.EnumeratePhysicalDevices(__VA_ARGS__))
#define vkGetPhysicalDeviceProperties(...) (dev->fn.GetPhysicalDeviceProperties(__VA_ARGS__))
#define vkGetPhysicalDeviceProperties2(...) (dev->fn.GetPhysicalDeviceProperties2(__VA_ARGS__))
#define vkGetPhysicalDeviceFeatures2(...) (dev->fn.GetPhysicalDeviceFeatures2(__VA_ARGS__))
#define vkGetPhysicalDeviceQueueFamilyProperties(...) (dev->fn.GetPhysicalDeviceQueueFamilyProperties(__VA_ARGS__))
#define vkGetPhysicalDeviceMemoryProperties(...) (dev->fn.GetPhysicalDeviceMemoryProperties(__VA_ARGS__))
#define vkEnumerateDeviceExtensionProperties(...) (dev->fn.EnumerateDeviceExtensionProperties(__VA_ARGS__))
#define vkCreateDevice(...) (dev->fn.CreateDevice(__VA_ARGS__))
#define vkDestroyDevice(...) (dev->fn.DestroyDevice(__VA_ARGS__))
#define vkGetDeviceQueue(...) (dev->fn.GetDeviceQueue(__VA_ARGS__))
#define vkDeviceWaitIdle(...) (dev->fn.DeviceWaitIdle(__VA_ARGS__))
#define vkQueueWaitIdle(...) (dev->fn.QueueWaitIdle(__VA_ARGS__))
#define vkQueueSubmit(...) (dev->fn.QueueSubmit(__VA_ARGS__))
#define vkCreateCommandPool(...) (dev->fn.CreateCommandPool(__VA_ARGS__))
#define vkDestroyCommandPool(...) (dev->fn.DestroyCommandPool(__VA_ARGS__))
#define vkAllocateCommandBuffers(...) (dev->fn.AllocateCommandBuffers(__VA_ARGS__))
#define vkResetCommandBuffer(...) (dev->fn.ResetCommandBuffer(__VA_ARGS__))
#define vkBeginCommandBuffer(...) (dev->fn.BeginCommandBuffer(__VA_ARGS__))
#define vkEndCommandBuffer(...) (dev->fn.EndCommandBuffer(__VA_ARGS__))
#define vkCreateFence(...) (dev->fn.CreateFence(__VA_ARGS__))
#define vkDestroyFence(...) (dev->fn.DestroyFence(__VA_ARGS__))
#define vkWaitForFences(...) (dev->fn.WaitForFences(__VA_ARGS__))
#define vkResetFences(...) (dev->fn.ResetFences(__VA_ARGS__))
#define vkGetFenceStatus(...) (dev->fn.GetFenceStatus(__VA_ARGS__))
#define vkCreateEvent(...) (dev->fn.CreateEvent(__VA_ARGS__))
#define vkDestroyEvent(...) (dev->fn.DestroyEvent(__VA_ARGS__))
#define vkGetEventStatus(...) (dev->fn.GetEventStatus(__VA_ARGS__))
#define vkResetEvent(...) (dev->fn.ResetEvent(__VA_ARGS__))
#define vkCmdSetEvent(...) (dev->fn.CmdSetEvent(__VA_ARGS__))
#define vkCreateQueryPool(...) (dev->fn.CreateQueryPool(__VA_ARGS__))
#define vkDestroyQueryPool(...) (dev->fn.DestroyQueryPool(__VA_ARGS__))
#define vkGetQueryPoolResults(...) (dev->fn.GetQueryPoolResults(__VA_ARGS__))
#define vkCmdResetQueryPool(...) (dev->fn.CmdResetQueryPool(__VA_ARGS__))
#define vkCmdWriteTimestamp(...) (dev->fn.CmdWriteTimestamp(__VA_ARGS__))
#define vkCreateBuffer(...) (dev->fn.CreateBuffer(__VA_ARGS__))
#define vkDestroyBuffer(...) (dev->fn.DestroyBuffer(__VA_ARGS__))
#define vkGetBufferMemoryRequirements(...) (dev->fn.GetBufferMemoryRequirements(__VA_ARGS__))
#define vkGetBufferDeviceAddress(...) (dev->fn.GetBufferDeviceAddress(__VA_ARGS__))
#define vkAllocateMemory(...) (dev->fn.AllocateMemory(__VA_ARGS__))
#define vkFreeMemory(...) (dev->fn.FreeMemory(__VA_ARGS__))
#define vkBindBufferMemory(...) (dev->fn.BindBufferMemory(__VA_ARGS__))
#define vkMapMemory(...) (dev->fn.MapMemory(__VA_ARGS__))
#define vkUnmapMemory(...) (dev->fn.UnmapMemory(__VA_ARGS__))
#define vkCreateShaderModule(...) (dev->fn.CreateShaderModule(__VA_ARGS__))
#define vkDestroyShaderModule(...) (dev->fn.DestroyShaderModule(__VA_ARGS__))
#define vkCreatePipelineLayout(...) (dev->fn.CreatePipelineLayout(__VA_ARGS__))
#define vkDestroyPipelineLayout(...) (dev->fn.DestroyPipelineLayout(__VA_ARGS__))
#define vkCreateComputePipelines(...) (dev->fn.CreateComputePipelines(__VA_ARGS__))
#define vkDestroyPipeline(...) (dev->fn.DestroyPipeline(__VA_ARGS__))
#define vkCmdBindPipeline(...) (dev->fn.CmdBindPipeline(__VA_ARGS__))
#define vkCmdPushConstants(...) (dev->fn.CmdPushConstants(__VA_ARGS__))
#define vkCmdDispatch(...) (dev->fn.CmdDispatch(__VA_ARGS__))
#define vkCmdPipelineBarrier(...) (dev->fn.CmdPipelineBarrier(__VA_ARGS__))
#define vkCmdCopyBuffer(...) (dev->fn.CmdCopyBuffer(__VA_ARGS__))
#define vkCmdFillBuffer(...) (dev->fn.CmdFillBuffer(__VA_ARGS__))
#define vkCmdUpdateBuffer(...) (dev->fn.CmdUpdateBuffer(__VA_ARGS__))

/* Set by init(); every error detail goes through vk_svc->error. */
extern const struct tkv_services *vk_svc;

/* Records the detail of a failure and yields status whatever the services
 * return: return VK_ERROR_STATUS(TKV_EINVAL, "...", ...). */
#define VK_ERROR_STATUS(status, ...) (vk_svc->error((status), __VA_ARGS__), (status))

/* A failed Vulkan call: the status its VkResult maps to, with op, call and
 * result named in the detail. */
int vk_fail(const char *op, const char *call, VkResult result);
const char *vk_result_name(VkResult result);

/* ---- buffers ------------------------------------------------------------ */

#define VK_BUFFER_MAGIC 0x746b7676u /* "tkvv" */
/* Every buffer is allocated this much larger than asked: shaders read the
 * stored rows in aligned words and 16-byte quads, which may reach a few
 * dozen bytes past the last row of a buffer. Those bytes are never used,
 * so neither they nor the buffer need zeroing (a new buffer's contents are
 * undefined by the ABI). */
#define VK_BUFFER_SLACK 64u

struct vk_buffer {
    uint32_t magic;
    uint32_t host;         /* allocated from the host-visible (staging) type */
    uint32_t type;         /* its memory type */
    uint64_t size;         /* bytes asked for */
    VkBuffer buffer;
    VkDeviceMemory memory;
    VkDeviceAddress address;
    void *map;             /* persistent host view, when the memory is host visible and coherent */
    struct vk_buffer *prev, *next; /* the device's live cache buffers */
};

/* The push constant blocks and the sequence record (shaders/interface.h). */
struct vk_quantize_push { TKV_VK_QUANTIZE_PUSH };
struct vk_rows_push { TKV_VK_ROWS_PUSH };
struct vk_attention_push { TKV_VK_ATTENTION_PUSH };
struct vk_merge_push { TKV_VK_MERGE_PUSH };
struct vk_convert_push { TKV_VK_CONVERT_PUSH };
struct vk_unit { TKV_VK_UNIT_MEMBERS };
struct vk_fused { TKV_VK_FUSED_MEMBERS };
struct vk_append { TKV_VK_APPEND_MEMBERS };

/* Vulkan guarantees 128 bytes of push constants. */
#define VK_PUSH_BYTES 128u
_Static_assert(sizeof(struct vk_quantize_push) <= VK_PUSH_BYTES && sizeof(struct vk_rows_push) <= VK_PUSH_BYTES &&
                   sizeof(struct vk_attention_push) <= VK_PUSH_BYTES && sizeof(struct vk_merge_push) <= VK_PUSH_BYTES &&
                   sizeof(struct vk_convert_push) <= VK_PUSH_BYTES,
               "push constants exceed the 128 bytes every device offers");
_Static_assert(sizeof(struct vk_fused) == TKV_VK_FUSED_BYTES, "decode.comp finds the append record after it");

enum vk_shader {
    VK_SHADER_QUANTIZE,
    VK_SHADER_ROWS,
    VK_SHADER_ATTENTION,
    VK_SHADER_MERGE,
    VK_SHADER_DECODE,
    VK_SHADER_DECODE_WIDE,
    VK_SHADER_DECODE_CLOCK, /* decode.comp with its clock records: TURBO_VK_CLOCK=1 only */
    VK_SHADER_DECODE_APPEND, /* decode.comp with step 0, the new rows' encoder: devices with shaderFloat64 */
    VK_SHADER_DECODE_TC, /* decode.comp with tensor.glsl's loop: dev->coopmat only, taken where dev->tc */
    VK_SHADER_TC_PROBE,  /* tc_probe.comp: dev->coopmat only (tensor.c) */
    VK_SHADER_DECODE_TC_CLOCK, /* decode_tc with its clock records: TURBO_VK_CLOCK=1 and dev->coopmat only */
    VK_SHADER_COUNT
};

/* One specialization of an attention shader (attention or decode). */
struct vk_attention_pipeline {
    enum vk_shader shader;
    uint32_t spec[TKV_VK_SPEC_COUNT];
    VkPipeline pipeline;
    uint32_t resident; /* its workgroups an SM holds at once, where known (exec_stats 4), else 0 */
};

/* A buffer_copy not submitted yet. */
struct vk_pending_copy {
    VkBuffer src, dst;
    VkBufferCopy region;
};

/* Measurement knobs (environment, read at open; README "Measurement
 * knobs"): they change what an attention call records, never what the
 * other ops do. */
#define VK_SKIP_UPLOAD 1u     /* the upload copy, when its bytes equal the last call's */
#define VK_SKIP_PREPARE 2u    /* the query rotation (stale prepared queries) */
#define VK_SKIP_ATTENTION 4u  /* the attention dispatch (stale partials) */
#define VK_SKIP_MERGE 8u      /* the merge dispatch (stale outputs) */
#define VK_SKIP_DOWNLOAD 16u  /* the download copy (stale outputs) */
#define VK_EMPTY_ATTENTION 32u /* the attention grid dispatched, every workgroup leaving at once */
/* Timestamps: 0 and 1 around the call; with TURBO_VK_PROFILE 2..7 between
 * the stages of the last repetition. */
#define VK_TIMESTAMPS 8u
struct vk_knobs {
    int profile;          /* TURBO_VK_PROFILE: stage timestamps and memory types on stderr */
    uint32_t skip;        /* TURBO_VK_SKIP: VK_SKIP_* / VK_EMPTY_ATTENTION */
    uint32_t repeat;      /* TURBO_VK_REPEAT: record the call's commands this many times */
    uint32_t shader_skip; /* TURBO_VK_SHADER_SKIP: TKV_VK_DBG_* bits */
    uint32_t batch_rows;  /* TURBO_VK_BATCH_ROWS: at most this many rows per staged batch */
    int staged_io;        /* TURBO_VK_STAGED_IO: attention inputs and outputs through copies */
    int separate_prepare; /* TURBO_VK_PREPARE: turbo queries rotated by their own dispatch */
    int no_decode;        /* TURBO_VK_DECODE=0: the attention shader where decode.comp would run */
    uint32_t min_chunk;   /* TURBO_VK_MIN_CHUNK: fewest rows per decode.comp chunk */
    uint32_t decode_qt;   /* TURBO_VK_DECODE_QT: most query rows of a decode.comp unit (1..16) */
    uint32_t v_rows;      /* TURBO_VK_DECODE_VROWS: decode.comp's V rows a step (1, 2, 4; 0: its default) */
    uint32_t merge_ilp;   /* TURBO_VK_MERGE_ILP: decode.comp's merge, chunks loaded together (1..16; 0: default) */
    int merge_dispatch;   /* TURBO_VK_MERGE=1: decode.comp leaves its chunks to merge.comp */
    int no_wide;          /* TURBO_VK_WIDE=0: the attention shader where decode_wide.comp would run */
    int wide_unaligned;   /* TURBO_VK_WIDE=2: decode_wide.comp reads rows as if at any byte alignment */
    uint32_t wide_words;  /* TURBO_VK_WIDE_WORDS: words of one group of decode_wide.comp's loads (0: 32) */
    int cache_memory;     /* TURBO_VK_CACHE_MEMORY: 0 device, 1 host (system), 2 bar (device-local visible) */
    int clock;            /* TURBO_VK_CLOCK: decode.comp's clock records, summarized on stderr */
    int no_input_barrier; /* TURBO_VK_INPUT_BARRIER=0: a queued attention records no barrier after its
                           * inputs' update (measurement only: the dispatch may read them before) */
    int no_input_ring;    /* TURBO_VK_INPUT_RING=0: queued attentions' inputs captured into the commands */
    int no_fused_step;    /* TURBO_VK_FUSED_STEP=0: append_attention as the pair of appends, then the attention */
    int no_grid_shift;    /* TURBO_VK_FUSED_STEP=noshift: a fused step's chunks on the unshifted grid */
    int tc;               /* TURBO_VK_TC=1: cooperative matrices enabled where usable, decode_tc run where the
                           * probe passes (tensor.c; off by default until it is faster than decode.comp) */
    int math_in_inputs;   /* TURBO_VK_MATH: the attention shaders' tables address at the head of the
                           * call's inputs (default on CPU devices), not a specialization constant */
    void *last_upload;    /* VK_SKIP_UPLOAD: the bytes the last call uploaded */
    uint64_t last_upload_bytes, last_upload_cap;
};

/* The host's own device (ABI 2.2/2.3): calls on device tensors are queued,
 * not waited for. Without a command buffer of the host's they are recorded
 * into one of these, submitted to the host's queue with its fence; the slot
 * is reused once its fence has signaled. */
#define VK_RING_SLOTS 64u
struct vk_slot {
    VkCommandBuffer cmd;
    VkFence fence;
    int in_flight;
};

/* Queued attentions' inputs (query layout, block table; the queries where
 * the host's are converted or in host memory): written by the host at
 * record time into one of these slots of host-visible device-local memory
 * and read there, with no copy and no barrier of their own (host.c). A
 * slot is taken again only once the host sees its event set, which the
 * commands of the call that used it set after their last read. */
#define VK_INPUT_SLOTS 256u
#define VK_INPUT_SLOT_BYTES 65536u
#define VK_INPUT_NONE UINT32_MAX
struct vk_input_ring {
    struct vk_buffer *buf;          /* VK_INPUT_SLOTS x VK_INPUT_SLOT_BYTES, mapped */
    VkEvent event[VK_INPUT_SLOTS];  /* created on first use */
    uint8_t used[VK_INPUT_SLOTS];   /* a recorded call sets its event */
    uint32_t next;
    int unusable;                   /* no device-local host-visible coherent memory: captured instead */
};

/* A buffer freed (or a scratch buffer replaced) on the host's device while
 * commands recorded earlier may still use it: destroyed once event, set by
 * a command recorded after those, has been set. */
struct vk_retired {
    struct vk_buffer *buf;
    VkEvent event; /* VK_NULL_HANDLE until the next recorded call sets one */
};

struct vk_device {
    struct vk_fns fn;        /* the functions of instance and device */
    VkInstance instance;
    VkDevice device;
    VkQueue queue;
    VkCommandPool pool;
    VkCommandBuffer cmd;     /* the command buffer being recorded: own_cmd, a ring slot's, or the host's */
    VkCommandBuffer own_cmd; /* the synchronous ops' */
    VkFence fence;
    VkQueryPool timestamps;  /* VK_TIMESTAMPS timestamps of an attention call, or VK_NULL_HANDLE */
    uint64_t timestamp_mask; /* the timestampValidBits of the queue */
    float timestamp_period;  /* ns per tick */
    int lost;                /* VK_ERROR_DEVICE_LOST seen: every later op fails at once */

    VkPhysicalDeviceProperties props;
    VkPhysicalDeviceMemoryProperties memory;
    uint64_t max_allocation;   /* the largest buffer (maxMemoryAllocationSize, maxBufferSize) */
    /* memory types, best first: for cache and scratch buffers; host visible
     * and coherent for staging */
    uint32_t device_types[VK_MAX_MEMORY_TYPES], n_device_types;
    uint32_t host_types[VK_MAX_MEMORY_TYPES], n_host_types;
    int fp64;                /* shaderFloat64: the quantize shader sums in double */
    int denorm_reported;     /* shaderDenormPreserveFloat32 */
    int denorm_preserve;     /* quantize and rows from their DenormPreserve 32 SPIR-V (TURBO_VK_DENORM) */
    int exec_stats;          /* VK_KHR_pipeline_executable_properties enabled: TURBO_VK_PROFILE 1 (printed), and
                              * 2 with TURBO_VK_PROFILE_DIR (internal representations captured); 4: on NVIDIA,
                              * decode.comp's registers read to size its dispatch (vk_resident_workgroups) */
    int clock_ok;            /* TURBO_VK_CLOCK on a device of the plugin's own with VK_KHR_shader_clock (device
                              * and subgroup clocks) enabled: decode.comp runs its clock variant */
    int pair_open;           /* the last queued call was a keys' append without its exit barrier (ABI 2.5) */
    uint32_t subgroup;       /* compute subgroup size where fixed, else 0 (no decode.comp) */
    int subgroup_wide;       /* subgroup shuffles and ballots in compute (decode_wide.comp) */
    uint32_t target_workgroups; /* attention workgroups that fill the device */
    int workgroups_set;         /* TURBO_VK_WORKGROUPS gave target_workgroups */
    uint32_t sm_count, warps_per_sm; /* NVIDIA (VK_NV_shader_sm_builtins), else 0 */
    int coopmat;             /* VK_NV_cooperative_matrix enabled (16x8x16 fp16 products, fp32 sums, a subgroup
                              * of 32; with shaderFloat16 and the Vulkan memory model): a device of the plugin's
                              * own only */
    int tc;                  /* the probe found tensor.glsl's fragment layouts: decode_tc runs turbo3 (tensor.c) */

    const struct tkv_math *math;
    struct vk_buffer *math_buf;
    struct vk_buffer *staging; /* host visible: op inputs and outputs */
    struct vk_buffer *work;    /* device memory: op intermediates */
    struct vk_buffer *inputs;  /* attention inputs: device-local, host-written where possible */
    struct vk_buffer *outputs; /* attention outputs: host visible, written by the merge */
    struct vk_buffer *arrivals; /* decode.comp's merge: a counter per (unit, kv head), zero between calls */
    struct vk_buffer *clocks;   /* TURBO_VK_CLOCK: decode.comp's clock records, host-visible */

    VkShaderModule modules[VK_SHADER_COUNT];
    VkPipelineLayout layout;   /* push constants only, shared by every shader */
    VkPipeline quantize, rows, merge;
    struct vk_attention_pipeline *attention;
    size_t n_attention, cap_attention;

    struct vk_buffer live;     /* sentinel of the live cache buffers */
    struct vk_pending_copy *pending; /* queued buffer_copy calls, in call order */
    size_t n_pending, cap_pending;
    struct tkv_device_stats stats;
    struct vk_knobs knobs;

    /* --- the host's own device (host.c) --- */
    int adopted;               /* instance, device and queue are the host's: never destroyed here */
    uint32_t queue_family;
    VkCommandBuffer host_cmd;  /* tkv_context_set_command_buffer's, or VK_NULL_HANDLE */
    int queued;                /* the call being recorded returns without waiting */
    struct vk_slot ring[VK_RING_SLOTS];
    uint32_t ring_next;
    struct vk_retired *retired;
    size_t n_retired, cap_retired;
    struct vk_input_ring in_ring; /* queued attentions' inputs, written in place */
    unsigned char *record_host; /* a queued call's inputs, recorded into its commands (vkCmdUpdateBuffer) where
                                 * no input slot is free or they do not fit one */
    size_t record_cap;
    VkShaderModule convert_module;
    VkPipeline convert;        /* shaders/convert.comp, made on first use */
};

/* Reads the measurement knobs (plugin.c). */
void vk_knobs_read(struct vk_device *dev);

/* TURBO_VK_DENORM (README "fp32 subnormals"): auto (unset or empty: the
 * DenormPreserve 32 SPIR-V where the device reports
 * shaderDenormPreserveFloat32), preserve (always: for tests on a device
 * that does not report it), off (never). 1 preserve, 0 not, -1 for any
 * other value; *setting is the value read ("auto" when unset). */
int vk_denorm_choose(int reported, const char **setting);

/* Whether the SPIR-V code (size bytes) declares the execution mode
 * DenormPreserve for 32-bit floats (pipelines.c). */
int vk_spirv_denorm_preserve(const uint32_t *code, size_t size);

/* The device's scratch: *slot grows to hold at least bytes (contents are
 * not kept). host picks the staging memory type. */
int vk_scratch(struct vk_device *dev, struct vk_buffer **slot, uint64_t bytes, int host,
               const char *op);
/* Same, memory class as vk_buffer_create_in takes. */
int vk_scratch_in(struct vk_device *dev, struct vk_buffer **slot, uint64_t bytes, int memory, const char *op);
/* A buffer outside the live list (scratch, math tables); contents undefined. */
int vk_buffer_create(struct vk_device *dev, uint64_t bytes, int host, const char *op,
                     struct vk_buffer **out);
/* Same, from a memory class: 0 device-local, 1 host visible (staging), 2
 * device-local and host visible (the BAR window) where there is one. */
int vk_buffer_create_in(struct vk_device *dev, uint64_t bytes, int memory, const char *op,
                        struct vk_buffer **out);
void vk_buffer_destroy(struct vk_device *dev, struct vk_buffer *b);
/* The buffer behind a handle the core passed. The core only passes buffers
 * this plugin allocated (it validates every op's arguments); debug builds
 * assert it. */
static inline struct vk_buffer *vk_buffer_of(const void *buf)
{
    struct vk_buffer *b = (struct vk_buffer *)buf;
    assert(b && b->magic == VK_BUFFER_MAGIC);
    return b;
}
/* Copies host memory to/from a device buffer through the staging buffer
 * (or directly when the buffer is mapped); submits and waits. */
int vk_upload(struct vk_device *dev, struct vk_buffer *dst, uint64_t offset, const void *src,
              uint64_t bytes, const char *op);
int vk_download(struct vk_device *dev, const struct vk_buffer *src, uint64_t offset, void *dst,
                uint64_t bytes, const char *op);

/* ---- commands ----------------------------------------------------------- */

/* Begins recording a call. queued (the host's device, device tensors as
 * outputs): into the host's command buffer when one is set, else into a
 * ring slot submitted without a wait; either way after a barrier that
 * orders it after the host's earlier compute and transfer work. Otherwise
 * vk_begin. */
int vk_begin_call(struct vk_device *dev, int queued, const char *op);
/* Ends it: queued, a barrier making its writes visible to the host's later
 * compute, transfer and host reads, and (ring) the submit, not waited for;
 * otherwise vk_submit. */
int vk_end_call(struct vk_device *dev, const char *op);
/* What ends a queued call: vk_end_call's barrier; an execution dependency
 * only (an append: the host's later writes wait for its reads; what it
 * wrote only the plugin's calls read, each after its entry barrier); none
 * (measurement only, TURBO_VK_APPEND_RECORD=nobarrier). */
enum vk_exit { VK_EXIT_FULL, VK_EXIT_READS, VK_EXIT_NONE };
/* What begins a queued call: vk_begin_call's barrier (compute and transfer
 * writes before it, to compute and transfer); the same to compute only (an
 * append that records nothing but dispatches); none: the second call of an
 * append pair, an attention that records its inputs into its own scratch
 * first and its barrier after them (the earlier calls' exit barriers order
 * their reads of that scratch before the update), or measurement. */
enum vk_entry { VK_ENTRY_NONE, VK_ENTRY_FULL, VK_ENTRY_COMPUTE };
/* A queued call (an append, quantize.c; an attention, attention.c):
 * vk_begin_call(dev, 1, op) with the entry asked for; ended by
 * vk_end_queued with the exit asked for. */
int vk_begin_queued(struct vk_device *dev, enum vk_entry entry, const char *op);
int vk_end_queued(struct vk_device *dev, enum vk_exit exit, const char *op);
/* A synchronous op is about to begin (host memory read or written, a wait):
 * TKV_EBUSY while the host's command buffer is set; on the host's device
 * waits for the queued calls in flight first (they may read the scratch the
 * op writes from the host). */
int vk_may_wait(struct vk_device *dev, const char *op);
/* Records host bytes into dst (vkCmdUpdateBuffer, 64 KB at a time):
 * captured now, so the host memory may change once this returns. offset
 * and bytes are multiples of 4. */
void vk_update(struct vk_device *dev, const struct vk_buffer *dst, uint64_t offset, const void *src, uint64_t bytes);
/* Retires a buffer: destroyed now on a device of the plugin's own, on the
 * host's once the commands recorded before it have run. */
void vk_retire(struct vk_device *dev, struct vk_buffer *b);
/* Destroys the retired buffers whose commands have run (all: wait_all,
 * after the queue went idle). */
void vk_collect(struct vk_device *dev, int wait_all);
/* Waits for the ring slots in flight. */
int vk_drain(struct vk_device *dev, const char *op);

/* Begins the command buffer with the queued copies and a barrier. */
int vk_begin(struct vk_device *dev, const char *op);
/* Ends, submits, waits; makes device writes visible to the host. The
 * queued copies are done once it succeeds. */
int vk_submit(struct vk_device *dev, const char *op);
/* Queues a copy for the next submission. */
int vk_queue_copy(struct vk_device *dev, const struct vk_buffer *src, uint64_t src_offset,
                  const struct vk_buffer *dst, uint64_t dst_offset, uint64_t bytes, const char *op);
/* Submits the queued copies, if any, and waits for them. */
int vk_flush(struct vk_device *dev, const char *op);
/* Every earlier command's writes visible to every later command. */
void vk_barrier(struct vk_device *dev);
void vk_copy(struct vk_device *dev, const struct vk_buffer *src, uint64_t src_offset,
             const struct vk_buffer *dst, uint64_t dst_offset, uint64_t bytes);
/* Records pipeline with its push constants over n_groups workgroups, spread
 * over the x, y and z counts the device allows (shaders use flat_workgroup). */
int vk_dispatch(struct vk_device *dev, VkPipeline pipeline, const void *push, uint32_t push_size,
                uint64_t n_groups, const char *op);

/* ---- pipelines (pipelines.c) --------------------------------------------- */

/* Shader modules, the layout and the quantize, rows and merge pipelines. */
int vk_pipelines_create(struct vk_device *dev);
void vk_pipelines_destroy(struct vk_device *dev);
/* The pipeline of an attention shader (VK_SHADER_ATTENTION,
 * VK_SHADER_DECODE or VK_SHADER_DECODE_WIDE) for spec, created on first
 * use; *resident (if not NULL): its workgroups of TKV_VK_WG invocations
 * that one SM holds at once, where the device says (NVIDIA: its register
 * count), else 0. */
int vk_attention_pipeline(struct vk_device *dev, enum vk_shader shader, const uint32_t spec[TKV_VK_SPEC_COUNT],
                          VkPipeline *out, uint32_t *resident);

/* ---- rows --------------------------------------------------------------- */

/* A struct tkv_row_format as the shaders take it. */
struct vk_layout {
    uint32_t head_dim;
    uint32_t encoding;       /* TKV_VK_ENC_* */
    uint32_t bits;           /* turbo index bits, 0 for the other encodings */
    uint32_t qjl;
    uint32_t split;          /* outlier-split type: fp16 outliers after the turbo row */
    uint32_t rotation;       /* TKV_VK_ROT_*: NONE for rows that are not turbo */
    uint32_t corrected;
    uint32_t row_bytes;
    uint32_t groups[TKV_VK_GROUP_WORDS]; /* tkv_group_split, one size per byte */
};

/* The layout of a row format. The core has checked fmt against the
 * device's capabilities (device_caps): every format it passes has kernels. */
void vk_layout_init(const struct tkv_row_format *fmt, struct vk_layout *l);
/* The quantize shader's flags of a layout (QJL, corrected scale, outlier-split). */
uint32_t vk_quantize_flags(const struct vk_layout *l);
/* TKV_OK unless the device was lost earlier (then every op fails at once). */
int vk_usable(const struct vk_device *dev, const char *op);

/* The math tables (tables.c): built and uploaded once per device. */
int vk_tables_upload(struct vk_device *dev);
/* spec[i] is specialization constant i of shader `which`; n of them are
 * given (pipelines.c). */
int vk_create_pipeline(struct vk_device *dev, enum vk_shader which, const uint32_t *spec, uint32_t n,
                       const char *what, VkPipeline *out);
/* tensor.c: sets dev->tc (tc_probe.comp's layouts are tensor.glsl's) on a
 * device with dev->coopmat; whether decode_tc takes an attention call whose
 * decode.comp units hold qt query rows (K and V pools at those addresses). */
int vk_tc_probe(struct vk_device *dev);
int vk_tc_takes(const struct vk_device *dev, const struct tkv_attention_args *a, uint32_t qt, uint64_t k_address,
                uint64_t v_address);

/* ---- device tensors (host.c) ------------------------------------------- */

/* The device address of element 0 of a device tensor of n elements: the
 * VkBuffer's address (it must have VK_BUFFER_USAGE_SHADER_DEVICE_ADDRESS_BIT)
 * plus its offset; refused when the buffer cannot be as large as the host
 * says or has no address. */
int vk_tensor_address(struct vk_device *dev, const struct tkv_device_tensor *t, uint64_t n, const char *op,
                      const char *what, VkDeviceAddress *address);
/* Records the conversion of n elements at src (elem src_elem) to dst
 * (elem dst_elem): f16 / bf16 widened exactly, f32 narrowed to nearest
 * even as the core does (core/tensor.c), f32 copied bit for bit. */
int vk_record_convert(struct vk_device *dev, VkDeviceAddress src, uint32_t src_elem, VkDeviceAddress dst,
                      uint32_t dst_elem, uint64_t n, const char *op);
/* A free input slot for a queued attention's bytes of inputs (its index
 * in *slot, its memory at vk_input_map / vk_input_address), or
 * VK_INPUT_NONE in *slot where none is free, they do not fit, the device
 * has no suitable memory or TURBO_VK_INPUT_RING=0: then the inputs are
 * captured into the commands. vk_input_done records the slot's event
 * after the call's last read of it (no later command may read it). */
int vk_input_slot(struct vk_device *dev, uint64_t bytes, uint32_t *slot, const char *op);
unsigned char *vk_input_map(struct vk_device *dev, uint32_t slot);
VkDeviceAddress vk_input_address(struct vk_device *dev, uint32_t slot);
void vk_input_done(struct vk_device *dev, uint32_t slot);
/* Host memory for a queued call's inputs (dev->record_host), at least bytes. */
int vk_record_reserve(struct vk_device *dev, size_t bytes, const char *op);
void vk_host_release(struct vk_device *dev);

/* The ops. */
int vk_quantize_append(void *dev, const struct tkv_append_args *args);
int vk_dequantize(void *dev, const struct tkv_dequant_args *args);
int vk_attention(void *dev, const struct tkv_attention_args *args);
int vk_append_attention(void *dev, const struct tkv_append_args *k, const struct tkv_append_args *v,
                        const struct tkv_attention_args *a);

/* The rows shader (shaders/rows.comp) over push->n_rows rows, recorded into
 * the command buffer: the caller sets the source (src, row_bytes and, with
 * TKV_VK_FLAG_PAGED in flags, the block table members), dst, dst_stride and
 * n_rows; the format's members come from l. */
int vk_record_rows(struct vk_device *dev, const struct vk_layout *l, struct vk_rows_push *push, uint32_t flags,
                   const char *op);

#endif
