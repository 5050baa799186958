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

/* The kernels of the program; the attention kernels come in variants by the
 * number of query rows per work-group (1, 2, 4, 8). */
enum ocl_kernel {
    OCL_K_QUANTIZE,
    OCL_K_DEQUANTIZE,
    OCL_K_PREPARE_Q,
    OCL_K_SCAN,
    OCL_K_MERGE,
    OCL_K_SCORES, /* + log2(query rows): 1, 2, 4, 8 */
    OCL_K_VALUES = OCL_K_SCORES + 4,
    OCL_K_COUNT = OCL_K_VALUES + 4
};
#define OCL_QUERY_ROWS_MAX 8u
/* Accumulator coordinates per work-item of attn_values (TKV_VCPT): eight
 * share one read of the packed row and one scale, and make 8 x QC
 * multiply-adds per decoded row (kernels/attention.cl). */
#define OCL_VALUE_COORDS 8u

/* A grow-only device scratch buffer (never one allocation per call). */
struct ocl_scratch {
    cl_mem mem;
    size_t size;
};

struct ocl_attn_pass; /* attention.c */

struct ocl_device {
    cl_device_id device;
    cl_context context;
    cl_command_queue queue;
    cl_program program;
    cl_kernel kernels[OCL_K_COUNT];
    size_t kernel_wg[OCL_K_COUNT];    /* CL_KERNEL_WORK_GROUP_SIZE */
    cl_ulong kernel_local[OCL_K_COUNT]; /* CL_KERNEL_LOCAL_MEM_SIZE (static) */
    cl_mem tables;                      /* kernels/tables.h */

    cl_ulong max_alloc, local_mem;
    cl_uint compute_units;

    struct tkv_device_stats stats;

    struct {
        struct ocl_scratch rows, table, counter, upload, q_prepared, scores, bmax, tmax, part_acc,
            part_l, part_skip, download;
    } scratch;
    /* Host staging of attention's one upload (sequence and block tables,
     * work units, queries) and one download (outputs, skip counts, lse),
     * and its plan of passes. */
    void *up_host, *down_host;
    size_t up_host_cap, down_host_cap;
    struct ocl_attn_pass *passes;
    size_t passes_cap;
};

/* Builds everything open() needs on the chosen device (device.c). */
int ocl_device_init(struct ocl_device *d, const struct ocl_found *found,
                    const struct tkv_math *math);
void ocl_device_release(struct ocl_device *d);

/* Makes s at least bytes large (contents are lost when it grows). */
int ocl_scratch_reserve(struct ocl_device *d, struct ocl_scratch *s, size_t bytes, const char *op,
                        const char *what);

/* Host staging arrays, grown like the scratch buffers. */
int ocl_host_reserve(void **p, size_t *cap, size_t bytes, const char *op);

/* Enqueues kernel k over n_groups work-groups of wg work-items each, in up
 * to three dimensions (n_groups[i] >= 1). */
int ocl_launch(struct ocl_device *d, enum ocl_kernel k, const char *op, cl_uint dims,
               const size_t n_groups[3], size_t wg);

/* Kernel arguments, set in order by ocl_args: a value (cl_mem, cl_uint,
 * cl_ulong, cl_float lvalues), or with value NULL, size bytes of local
 * memory. */
struct ocl_karg {
    size_t size;
    const void *value;
};
#define OCL_ARG(v) { sizeof(v), &(v) }
#define OCL_LOCAL(bytes) { (bytes), NULL }

int ocl_args(struct ocl_device *d, enum ocl_kernel k, const char *op, size_t n,
             const struct ocl_karg *args);

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
int ocl_dequantize(void *dev, const struct tkv_dequant_args *args);
int ocl_attention(void *dev, const struct tkv_attention_args *args);

#endif
