/* SPDX-License-Identifier: MIT */
/*
 * turbokv-opencl internals: the device (context, queue, the one program and
 * its kernels, the device copy of the math tables, scratch buffers), its
 * cache buffers, and the helpers the ops share.
 *
 * The plugin computes what the cpu reference computes (plugins/cpu): the
 * kernels (the OpenCL C sources in kernels/, embedded at build time by
 * embed.py and compiled at open) follow its float operations where the stored bytes depend on them.
 * It targets the OpenCL 1.2 API and OpenCL C 1.2, so that PoCL on a CPU and
 * the GPU vendors' drivers all run it.
 */
#ifndef TKV_OCL_H
#define TKV_OCL_H

#define CL_TARGET_OPENCL_VERSION 120
#include <CL/cl.h>
#include <assert.h>
#include <stddef.h>
#include <stdint.h>

#include "turbokv_plugin.h"

/* Set by init(); every error detail goes through ocl_svc->error. */
extern const struct tkv_services *ocl_svc;

/* Records the detail of a failure and yields status. */
#define OCL_ERROR(status, ...) (ocl_svc->error((status), __VA_ARGS__), (status))

/* Records a failed OpenCL call, "op: call: CL_NAME (code)", and returns
 * the matching status (TKV_ENOMEM for allocation failures, else
 * TKV_EDEVICE). */
int ocl_fail(cl_int err, const char *op, const char *call);
const char *ocl_error_name(cl_int err);

/* ---- devices --------------------------------------------------------------- */

/* A device the plugin can run on, in the order probe() lists them. */
struct ocl_found {
    cl_platform_id platform;
    cl_device_id device;
};

/* Every usable device of every platform, up to max; *n_found counts them
 * all. No platform at all is TKV_OK with none. */
int ocl_enumerate(struct ocl_found *found, uint32_t max, uint32_t *n_found);

/* The kernels of the program; attention comes in variants by the number of
 * query rows per work-group (2, 4, 8, 16). */
/* Attention programs built for one (K type, V type, head_dim): the same
 * source with those as constants (-DTKV_SPEC_*), so that the compiler
 * unrolls the row loops and leaves the other types' code out; kept for the
 * last OCL_SPEC_SLOTS configurations a device attended over. */
#define OCL_SPEC_SLOTS 4u
enum ocl_kernel {
    OCL_K_QUANTIZE,
    OCL_K_DEQUANTIZE,
    OCL_K_WIDEN,  /* kernels/convert.cl: device tensors in f16 / bf16 */
    OCL_K_NARROW,
    OCL_K_QUANTIZE_PAIR, /* kernels/rows.cl: a K/V pair's appends in one launch */
    OCL_K_DECODE, /* + log2(query rows / 2) */
    OCL_K_SPEC = OCL_K_DECODE + 4, /* + 4 x slot + log2(query rows / 2) */
    /* kernels/tensor.cl (the tensor-core program, built on first use):
     * tc_decode_8, tc_decode_16, tc_decode_4 (turbo3), tc_decode_o4 (turbo3o) */
    OCL_K_TC = OCL_K_SPEC + 4 * OCL_SPEC_SLOTS,
    OCL_K_TC_4 = OCL_K_TC + 2,
    OCL_K_TC_OUT = OCL_K_TC + 3,
    OCL_K_COUNT = OCL_K_TC + 4
};
#define OCL_QUERY_ROWS_MIN 2u
#define OCL_QUERY_ROWS_MAX 16u
/* Accumulator coordinates per work-item of attn_decode (TKV_VCPT): eight
 * share one read of the packed row and one scale, and make 8 x QC
 * multiply-adds per decoded row (kernels/attention.cl). */
#define OCL_VALUE_COORDS 8u
/* TURBO_OCL_REPEAT at most. */
#define OCL_REPEAT_MAX 64u
/* Kernel arguments remembered per kernel, so that a call sets only those
 * that changed since the last (clSetKernelArg costs host time). */
#define OCL_ARGS_MAX 48u

/* A grow-only device scratch buffer (never one allocation per call). */
struct ocl_scratch {
    cl_mem mem;
    size_t size;
};

/* Host memory the device reads and writes fastest (pinned: a buffer of
 * CL_MEM_ALLOC_HOST_PTR, mapped once and kept mapped), grown like the
 * scratch buffers. */
struct ocl_pinned {
    cl_mem mem;
    void *host;
    size_t size;
};

/* The staging of quantize_append: rows and block-table entries go through
 * one of two pinned slots, so that a call returns once its commands are
 * queued; a slot is reused only after the write that read it completed. */
#define OCL_APPEND_SLOTS 2u
struct ocl_append_slot {
    struct ocl_pinned host;
    struct ocl_scratch dev;
    cl_event written; /* the write that last read host, or NULL */
};

/* Host staging of the calls that return without waiting (device tensors on
 * the host's queue, host.c): plain host memory whose non-blocking write is
 * tracked by an event; a slot is reused once its write has completed, so
 * a recording of a few layers never waits. */
#define OCL_STAGE_SLOTS 64u
/* block-table entries of a queued append kept for the next (ocl_device) */
#define OCL_TABLE_ENTRIES 16u
struct ocl_stage {
    void *host;
    size_t size;
    cl_event written; /* the write that last read host, or NULL */
};

struct ocl_device {
    cl_device_id device;
    cl_context context;
    cl_command_queue queue; /* in order, with profiling (device_ns) where
                               turbokv created it; the host's own otherwise */
    int adopted;            /* context and queue are the host's (retained) */
    cl_program program;
    cl_kernel kernels[OCL_K_COUNT];
    size_t kernel_wg[OCL_K_COUNT];    /* CL_KERNEL_WORK_GROUP_SIZE */
    cl_ulong kernel_local[OCL_K_COUNT]; /* CL_KERNEL_LOCAL_MEM_SIZE (static) */
    size_t kernel_multiple[OCL_K_COUNT]; /* CL_KERNEL_PREFERRED_WORK_GROUP_SIZE_MULTIPLE */
    struct {
        size_t size;
        unsigned char value[8];
        int set;
    } args[OCL_K_COUNT][OCL_ARGS_MAX];
    cl_mem tables;                      /* kernels/tables.h */
    char options[1536];                 /* the generic program's build options */
    struct {
        uint32_t k_type, v_type, head_dim;
        int state; /* 0: empty, 1: built, -1: its build failed (the generic kernels serve) */
        cl_program program;
    } spec[OCL_SPEC_SLOTS];
    uint32_t spec_next;
    int specialize; /* GPUs by default; TURBO_OCL_SPECIALIZE=0/1 */
    int tensor;   /* the tensor-core kernels: NVIDIA, compute capability 8.0 on,
                     unless TURBO_OCL_TENSOR=0 */
    int tc_state; /* 0: not built yet, 1: built, -1: its build failed */
    cl_program tc_program;

    cl_ulong max_alloc, local_mem;
    cl_uint compute_units;
    /* tuning (attention.c), from TURBO_OCL_* at open; 0: the default */
    uint32_t tune_wg, tune_groups_per_cu, tune_min_tiles, tune_merge_kib, tune_spin;
    uint32_t tune_kernel_ns; /* device_ns: the kernel alone, not the transfers */
    uint32_t tune_repeat;    /* with tune_kernel_ns: the kernel timed this many more times */
    uint32_t tune_append_direct;
    uint32_t tune_row_wg; /* work-items of a row's quantize or dequantize (0: ROW_WORK_GROUP) */

    struct tkv_device_stats stats;

    struct {
        struct ocl_scratch rows, table, upload, part, counters, download;
    } scratch;
    struct ocl_pinned up_pinned, down_pinned;
    struct ocl_append_slot append[OCL_APPEND_SLOTS];
    uint32_t append_next;
    struct ocl_stage stage[OCL_STAGE_SLOTS];
    uint32_t stage_next;
    struct ocl_scratch widen; /* device tensors widened to f32 */
    /* the block-table entries the last write put in scratch.table
     * (quantize.c: table_upload), which the next leaves out when its are
     * the same: the K and V appends of every layer of a decode step */
    uint32_t table_entries[OCL_TABLE_ENTRIES];
    uint32_t table_b0, table_n;
    int table_valid;
    /* a queued attention's description (sequences, blocks, units) as the
     * last one went into scratch.upload, and a buffer to build the next in:
     * the layers of a decode step describe the same rows, and one that
     * matches is not written again (attention.c: upload) */
    uint32_t *up_last, *up_next;
    size_t up_cap, up_last_bytes;
    int up_last_valid;
};

/* The first of the four attention kernels (2, 4, 8, 16 query rows) for a
 * call's configuration: a specialized program's, built on first use, or the
 * generic program's where specializing is off or its build failed. */
enum ocl_kernel ocl_decode_kernels(struct ocl_device *d, uint32_t k_type, uint32_t v_type,
                                   uint32_t head_dim);

/* The first tensor-core kernel (OCL_K_TC) where the device has them (the
 * program built on first use), else OCL_K_COUNT. */
enum ocl_kernel ocl_tensor_kernels(struct ocl_device *d);
/* Whether a device takes the tensor-core kernels (device.c). */
int ocl_tensor_usable(cl_device_id dev);

/* Builds everything open() needs on the chosen device (device.c): its own
 * context and queue. */
int ocl_device_init(struct ocl_device *d, const struct ocl_found *found,
                    const struct tkv_math *math);
/* The same on a context and queue already set in d (the host's, retained). */
int ocl_device_setup(struct ocl_device *d, const struct tkv_math *math);
void ocl_device_release(struct ocl_device *d);
/* Can the plugin run on dev (a compiler, work-groups, local memory)? */
int ocl_device_usable(cl_device_id dev);

/* ---- the host's own device and its tensors (host.c) ------------------------ */

/* Checks the host's context, device and queue (host_device op). */
int ocl_host_check(const struct tkv_host_device *host, cl_platform_id *platform);
/* Adopts them: retained, never a second context. */
int ocl_device_adopt(struct ocl_device *d, const struct tkv_host_device *host,
                     const struct tkv_math *math);
void ocl_stage_release(struct ocl_device *d);
/* The cl_mem of a device tensor, checked against the device's context and
 * its real size (CL_MEM_SIZE). */
int ocl_tensor_mem(struct ocl_device *d, const struct tkv_device_tensor *t, uint64_t n,
                   const char *op, const char *what, cl_mem *mem);
/* Rows of a device tensor as f32 words: *mem and *word_at are where the
 * kernels read them (the host's buffer itself for f32, else a widened copy
 * in d->widen, enqueued). */
int ocl_tensor_f32(struct ocl_device *d, const struct tkv_device_tensor *t, uint64_t n,
                   const char *op, cl_mem *mem, cl_uint *word_at);
/* n f32 of a device tensor into dst at word dst_at (a copy, or widened). */
int ocl_tensor_in(struct ocl_device *d, const struct tkv_device_tensor *t, uint64_t n, cl_mem dst,
                  size_t dst_at, const char *op);
/* n f32 at word src_at of src into a device tensor (a copy, or narrowed). */
int ocl_tensor_out(struct ocl_device *d, cl_mem src, size_t src_at,
                   const struct tkv_device_tensor *t, uint64_t n, const char *op);
/* Host bytes for a write that is not waited for: a staging slot, valid
 * until ocl_stage_write has enqueued its write. */
int ocl_stage_take(struct ocl_device *d, size_t bytes, const char *op, void **host, uint32_t *slot);
int ocl_stage_write(struct ocl_device *d, uint32_t slot, cl_mem dst, size_t bytes, const char *op);

/* Makes s at least bytes large (contents are lost when it grows). */
int ocl_scratch_reserve(struct ocl_device *d, struct ocl_scratch *s, size_t bytes, const char *op,
                        const char *what);

/* Makes s at least bytes large and zeroes it when it grows (enqueued). */
int ocl_scratch_reserve_zeroed(struct ocl_device *d, struct ocl_scratch *s, size_t bytes,
                               const char *op, const char *what);

/* Makes p at least bytes large, mapped (contents are lost when it grows;
 * the caller has waited for every command that used it). */
int ocl_pinned_reserve(struct ocl_device *d, struct ocl_pinned *p, size_t bytes, const char *op);
void ocl_pinned_release(struct ocl_device *d, struct ocl_pinned *p);

/* Enqueues kernel k over n_groups work-groups of wg work-items each, in up
 * to three dimensions (n_groups[i] >= 1). */
int ocl_launch(struct ocl_device *d, enum ocl_kernel k, const char *op, cl_uint dims,
               const size_t n_groups[3], size_t wg, cl_event *event);

/* Kernel arguments, set in order by ocl_args: a value (cl_mem, cl_uint,
 * cl_ulong, cl_float lvalues), or with value NULL, size bytes of local
 * memory. ocl_args sets only those that differ from the kernel's last. */
struct ocl_karg {
    size_t size;
    const void *value;
};
#define OCL_ARG(v) { sizeof(v), &(v) }
#define OCL_LOCAL(bytes) { (bytes), NULL }

int ocl_args(struct ocl_device *d, enum ocl_kernel k, const char *op, size_t n,
             const struct ocl_karg *args);
/* Forgets the remembered arguments: a buffer was released, and a new one
 * may get its handle. */
void ocl_args_forget(struct ocl_device *d);

/* The largest power of two <= min(want, the kernel's work-group limit). */
size_t ocl_wg_pow2(const struct ocl_device *d, enum ocl_kernel k, size_t want);

/* ---- buffers and row formats ------------------------------------------------- */

#define OCL_BUFFER_MAGIC 0x746b766fu /* "tkvo" */

/* A cache buffer: the cl_mem holds size bytes rounded up to whole words plus
 * two spare words, so kernels may read rows as aligned 32-bit words. */
struct ocl_buffer {
    uint32_t magic;
    uint32_t reserved;
    cl_mem mem;
    uint64_t size;
};
#define OCL_BUFFER_SPARE 8u

/* The buffer behind a handle. The core hands the plugin only buffers it
 * allocated (core/validate.c); debug builds assert it. */
static inline struct ocl_buffer *ocl_buffer_of(const void *buf)
{
    struct ocl_buffer *b = (struct ocl_buffer *)buf;
    assert(b && b->magic == OCL_BUFFER_MAGIC);
    return b;
}

/* ---- the ops (quantize.c, attention.c) --------------------------------------- */

int ocl_quantize_append(void *dev, const struct tkv_append_args *args);
int ocl_quantize_append_pair(void *dev, const struct tkv_append_args *k,
                             const struct tkv_append_args *v);
int ocl_dequantize(void *dev, const struct tkv_dequant_args *args);
int ocl_attention(void *dev, const struct tkv_attention_args *args);
/* ABI 2.7 (attention.c): one launch on the tensor-core kernels where the
 * rows are f32 device tensors (ocl_pair_in_one_launch), else the pair and
 * the attention. */
int ocl_append_attention(void *dev, const struct tkv_append_args *k,
                         const struct tkv_append_args *v, const struct tkv_attention_args *a);
/* Both appends' rows f32 in the host's buffers at word offsets a kernel's
 * uint reaches, with the same tokens, heads and block-table entries
 * (quantize.c). */
int ocl_pair_in_one_launch(const struct tkv_append_args *k, const struct tkv_append_args *v);

#endif
