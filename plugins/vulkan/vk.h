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
struct vk_unit { TKV_VK_UNIT_MEMBERS };

/* Vulkan guarantees 128 bytes of push constants. */
#define VK_PUSH_BYTES 128u
_Static_assert(sizeof(struct vk_quantize_push) <= VK_PUSH_BYTES && sizeof(struct vk_rows_push) <= VK_PUSH_BYTES &&
                   sizeof(struct vk_attention_push) <= VK_PUSH_BYTES && sizeof(struct vk_merge_push) <= VK_PUSH_BYTES,
               "push constants exceed the 128 bytes every device offers");

enum vk_shader {
    VK_SHADER_QUANTIZE,
    VK_SHADER_ROWS,
    VK_SHADER_ATTENTION,
    VK_SHADER_MERGE,
    VK_SHADER_DECODE,
    VK_SHADER_COUNT
};

/* One specialization of an attention shader (attention or decode). */
struct vk_attention_pipeline {
    enum vk_shader shader;
    uint32_t spec[TKV_VK_SPEC_COUNT];
    VkPipeline pipeline;
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
    int cache_memory;     /* TURBO_VK_CACHE_MEMORY: 0 device, 1 host (system), 2 bar (device-local visible) */
    void *last_upload;    /* VK_SKIP_UPLOAD: the bytes the last call uploaded */
    uint64_t last_upload_bytes, last_upload_cap;
};

struct vk_device {
    VkInstance instance;
    VkDevice device;
    VkQueue queue;
    VkCommandPool pool;
    VkCommandBuffer cmd;
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
    uint32_t subgroup;       /* compute subgroup size where fixed, else 0 (no decode.comp) */
    uint32_t target_workgroups; /* attention workgroups that fill the device */

    const struct tkv_math *math;
    struct vk_buffer *math_buf;
    struct vk_buffer *staging; /* host visible: op inputs and outputs */
    struct vk_buffer *work;    /* device memory: op intermediates */
    struct vk_buffer *inputs;  /* attention inputs: device-local, host-written where possible */
    struct vk_buffer *outputs; /* attention outputs: host visible, written by the merge */

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
};

/* Reads the measurement knobs (plugin.c). */
void vk_knobs_read(struct vk_device *dev);

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
/* The pipeline of an attention shader (VK_SHADER_ATTENTION or
 * VK_SHADER_DECODE) for spec, created on first use. */
int vk_attention_pipeline(struct vk_device *dev, enum vk_shader shader, const uint32_t spec[TKV_VK_SPEC_COUNT],
                          VkPipeline *out);

/* ---- rows --------------------------------------------------------------- */

/* A struct tkv_row_format as the shaders take it. */
struct vk_layout {
    uint32_t head_dim;
    uint32_t encoding;       /* TKV_VK_ENC_* */
    uint32_t bits;           /* turbo index bits, 0 for the other encodings */
    uint32_t qjl;
    uint32_t rotation;       /* TKV_VK_ROT_*: NONE for rows that are not turbo */
    uint32_t corrected;
    uint32_t row_bytes;
    uint32_t groups[TKV_VK_GROUP_WORDS]; /* tkv_group_split, one size per byte */
};

/* The layout of a row format. The core has checked fmt against the
 * device's capabilities (device_caps): every format it passes has kernels. */
void vk_layout_init(const struct tkv_row_format *fmt, struct vk_layout *l);
/* TKV_OK unless the device was lost earlier (then every op fails at once). */
int vk_usable(const struct vk_device *dev, const char *op);

/* The math tables (tables.c): built and uploaded once per device. */
int vk_tables_upload(struct vk_device *dev);

/* The ops. */
int vk_quantize_append(void *dev, const struct tkv_append_args *args);
int vk_dequantize(void *dev, const struct tkv_dequant_args *args);
int vk_attention(void *dev, const struct tkv_attention_args *args);

/* The rows shader (shaders/rows.comp) over push->n_rows rows, recorded into
 * the command buffer: the caller sets the source (src, row_bytes and, with
 * TKV_VK_FLAG_PAGED in flags, the block table members), dst, dst_stride and
 * n_rows; the format's members come from l. */
int vk_record_rows(struct vk_device *dev, const struct vk_layout *l, struct vk_rows_push *push, uint32_t flags,
                   const char *op);

#endif
