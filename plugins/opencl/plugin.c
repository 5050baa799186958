/* SPDX-License-Identifier: MIT */
/*
 * turbokv-opencl: the module entry, probe, the device and its buffers. The
 * OpenCL plumbing is in device.c, the ops in quantize.c and attention.c,
 * the kernels in kernels/.
 *
 * The module links the OpenCL ICD loader only: it is handed the core's
 * services in init() and the format's tables in open().
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ocl.h"
#include "turbokv.h" /* TKV_VERSION_STRING */

const struct tkv_services *ocl_svc;

static int ocl_init(const struct tkv_services *svc)
{
    /* Without services there is no way to report anything: refuse quietly. */
    if (!svc || svc->struct_size < sizeof *svc || !svc->error || !svc->log)
        return TKV_EINVAL;
    ocl_svc = svc;
    return TKV_OK;
}

/* ---- probe ------------------------------------------------------------------- */

/* Scores against the cpu plugin's 100: a real GPU well above, an integrated
 * one above, a CPU driver (PoCL) below it and below Vulkan on a CPU (50), so
 * that backend auto prefers the native cpu plugin to an emulation. */
#define SCORE_GPU 1000
#define SCORE_GPU_INTEGRATED 500
#define SCORE_CPU_DRIVER 40
#define SCORE_OTHER 20

static void describe(const struct ocl_found *f, struct tkv_device_info *info)
{
    cl_device_type type = 0;
    cl_bool unified = CL_FALSE;
    cl_ulong memory = 0;
    char platform[128] = "?", version[64] = "?";
    memset(info, 0, sizeof *info);
    info->struct_size = sizeof *info;
    clGetDeviceInfo(f->device, CL_DEVICE_TYPE, sizeof type, &type, NULL);
    clGetDeviceInfo(f->device, CL_DEVICE_HOST_UNIFIED_MEMORY, sizeof unified, &unified, NULL);
    clGetDeviceInfo(f->device, CL_DEVICE_GLOBAL_MEM_SIZE, sizeof memory, &memory, NULL);
    clGetDeviceInfo(f->device, CL_DEVICE_NAME, sizeof info->name - 1, info->name, NULL);
    clGetPlatformInfo(f->platform, CL_PLATFORM_NAME, sizeof platform - 1, platform, NULL);
    clGetDeviceInfo(f->device, CL_DRIVER_VERSION, sizeof version - 1, version, NULL);
    /* (turbokv info shows whether attention takes the tensor-core kernels) */
    snprintf(info->driver, sizeof info->driver, "%s, %s%s", platform, version,
             ocl_tensor_usable(f->device)
                 ? "; tensor cores for turbo3 and turbo3o at head_dim 128"
                 : "");
    info->memory_bytes = memory;
    if (type & CL_DEVICE_TYPE_CPU) {
        info->kind = TKV_DEVICE_SOFTWARE;
        info->score = SCORE_CPU_DRIVER;
    } else if (type & CL_DEVICE_TYPE_GPU) {
        info->kind = unified ? TKV_DEVICE_GPU_INTEGRATED : TKV_DEVICE_GPU_DISCRETE;
        info->score = unified ? SCORE_GPU_INTEGRATED : SCORE_GPU;
    } else { /* accelerators and custom devices: usable, never preferred */
        info->kind = unified ? TKV_DEVICE_GPU_INTEGRATED : TKV_DEVICE_GPU_DISCRETE;
        info->score = SCORE_OTHER;
    }
}

static int ocl_probe(struct tkv_device_info *devs, uint32_t max, uint32_t *n_found)
{
    struct ocl_found *found = max ? calloc(max, sizeof *found) : NULL;
    if (max && !found)
        return OCL_ERROR(TKV_ENOMEM, "probe: no memory for %u devices", max);
    int rc = ocl_enumerate(found, max, n_found);
    for (uint32_t i = 0; rc == TKV_OK && i < *n_found && i < max; i++)
        describe(&found[i], &devs[i]);
    free(found);
    return rc;
}

/* ---- device ------------------------------------------------------------------- */

/* Every table of every group size, the QJL sketches included (ABI 2.0). */
static int math_check(const struct tkv_math *math)
{
    if (!math)
        return OCL_ERROR(TKV_EINVAL, "open: NULL math tables");
    if (math->struct_size < sizeof *math)
        return OCL_ERROR(TKV_EINVAL, "open: math struct_size %u < %zu", math->struct_size,
                         sizeof *math);
    for (uint32_t g = TKV_GROUP_MIN; g <= TKV_GROUP_MAX; g <<= 1) {
        const struct tkv_group_tables *t = &math->groups[tkv_group_index(g)];
        int ok = t->group == g && t->sign1 && t->sign2 && t->dense &&
                 math->qjl[tkv_group_index(g)].rows;
        for (uint32_t b = 0; b < TKV_N_CODEBOOK_BITS && ok; b++)
            ok = t->codebook[b].bits == b + TKV_TURBO_BITS_MIN &&
                 t->codebook[b].n_levels == 1u << (b + TKV_TURBO_BITS_MIN) &&
                 t->codebook[b].centroids && t->codebook[b].boundaries &&
                 t->codebook[b].centroid_sq;
        if (!ok)
            return OCL_ERROR(TKV_EINVAL, "open: math tables for group size %u are incomplete", g);
    }
    return TKV_OK;
}

static void ocl_close(void *dev)
{
    struct ocl_device *d = dev;
    if (!d)
        return;
    ocl_device_release(d);
    free(d);
}

static int ocl_open(const struct tkv_open_params *params, void **dev_out)
{
    int rc;
    uint32_t n = 0;
    if ((rc = math_check(params->math)) != TKV_OK)
        return rc;
    if (TKV_ARGS_HAS(params, host) && params->host) {
        /* the host's own context, device and queue (host.c) */
        struct ocl_device *d = calloc(1, sizeof *d);
        if (!d)
            return OCL_ERROR(TKV_ENOMEM, "open: no memory for the device (%zu bytes)", sizeof *d);
        d->stats.struct_size = sizeof d->stats;
        if ((rc = ocl_device_adopt(d, params->host, params->math)) != TKV_OK) {
            ocl_close(d);
            return rc;
        }
        *dev_out = d;
        return TKV_OK;
    }
    struct ocl_found *found = calloc((size_t)params->device_index + 1, sizeof *found);
    if (!found)
        return OCL_ERROR(TKV_ENOMEM, "open: no memory to list devices");
    if ((rc = ocl_enumerate(found, params->device_index + 1, &n)) != TKV_OK) {
        free(found);
        return rc;
    }
    if (params->device_index >= n) {
        free(found);
        return OCL_ERROR(TKV_ERANGE, "open: device %u does not exist (%u OpenCL device%s)",
                         params->device_index, n, n == 1 ? "" : "s");
    }
    struct ocl_device *d = calloc(1, sizeof *d);
    if (!d) {
        free(found);
        return OCL_ERROR(TKV_ENOMEM, "open: no memory for the device (%zu bytes)", sizeof *d);
    }
    d->stats.struct_size = sizeof d->stats;
    rc = ocl_device_init(d, &found[params->device_index], params->math);
    free(found);
    if (rc != TKV_OK) {
        ocl_close(d);
        return rc;
    }
    *dev_out = d;
    return TKV_OK;
}

/* ---- capabilities ------------------------------------------------------------ */

/* Every stored type attends as a key; the QJL types are keys only (the
 * core's policy), so they are no value type. Turbo rows take the rotations
 * of format revision 0 (rotate_local in kernels/common.cl: WHT, DENSE, and
 * NONE as the identity; not the rotor, TKV_CAP_ROTOR) and both scale modes.
 * The outlier-split types of revision 1 are held (TKV_CAP_OUTLIER_TYPES):
 * every type up to TKV_TYPE_TURBO4_OUT. */
#define ALL_TYPES ((1u << (TKV_TYPE_TURBO4_OUT + 1)) - 1u)
#define QJL_TYPES ((1u << TKV_TYPE_TURBO3_QJL) | (1u << TKV_TYPE_TURBO4_QJL))

static int caps_of(cl_device_id device, uint32_t extra, struct tkv_device_caps *caps);

static int ocl_device_caps(uint32_t device_index, struct tkv_device_caps *caps)
{
    struct ocl_found *found = calloc((size_t)device_index + 1, sizeof *found);
    uint32_t n = 0;
    int rc;
    if (!found)
        return OCL_ERROR(TKV_ENOMEM, "device_caps: no memory to list devices");
    if ((rc = ocl_enumerate(found, device_index + 1, &n)) != TKV_OK) {
        free(found);
        return rc;
    }
    if (device_index >= n) {
        free(found);
        return OCL_ERROR(TKV_ERANGE, "device_caps: device %u does not exist (%u OpenCL device%s)",
                         device_index, n, n == 1 ? "" : "s");
    }
    cl_device_id device = found[device_index].device;
    free(found);
    /* a device of its own: no device tensors (they are the host's buffers),
     * but the plugin can open on the host's device */
    return caps_of(device, TKV_CAP_HOST_DEVICE, caps);
}

/* The host's own device (ABI 2.2): device tensors in f32, f16 and bf16,
 * queued without a wait. */
static int ocl_host_device(const struct tkv_host_device *host, struct tkv_device_info *info,
                           struct tkv_device_caps *caps)
{
    struct ocl_found f;
    int rc = ocl_host_check(host, &f.platform);
    if (rc != TKV_OK)
        return rc;
    f.device = (cl_device_id)host->opencl.device;
    describe(&f, info);
    return caps_of(f.device,
                   TKV_CAP_HOST_DEVICE | TKV_CAP_DEVICE_TENSORS | TKV_CAP_ASYNC, caps);
}

static int caps_of(cl_device_id device, uint32_t extra, struct tkv_device_caps *caps)
{
    cl_ulong max_alloc = 0;
    cl_int err = clGetDeviceInfo(device, CL_DEVICE_MAX_MEM_ALLOC_SIZE,
                                 sizeof max_alloc, &max_alloc, NULL);
    if (err != CL_SUCCESS)
        return ocl_fail(err, "device_caps", "clGetDeviceInfo(CL_DEVICE_MAX_MEM_ALLOC_SIZE)");
    struct tkv_device_caps all = {
        .features = TKV_CAP_PAGED | TKV_CAP_MIXED_NQ | TKV_CAP_WINDOW | TKV_CAP_SOFTCAP |
                    TKV_CAP_LSE | TKV_CAP_BUFFER_COPY | TKV_CAP_OUTLIER_TYPES | extra,
        .k_types = ALL_TYPES,
        .v_types = ALL_TYPES & ~QJL_TYPES,
        .rotations = (1u << TKV_ROTATION_WHT) | (1u << TKV_ROTATION_DENSE) |
                     (1u << TKV_ROTATION_NONE),
        .scale_modes = (1u << TKV_SCALE_NORM) | (1u << TKV_SCALE_NORM_CORRECTED),
        .head_dim_max = TKV_HEAD_DIM_MAX,
        .max_block_tokens = 0, /* any: attention cuts blocks into tiles */
        .max_q_per_seq = 0,    /* any: a long one is taken in several units */
        /* buffer_alloc pads a buffer to whole words plus spare words */
        .max_buffer_bytes = max_alloc > OCL_BUFFER_SPARE + 4u
                                ? (max_alloc - OCL_BUFFER_SPARE - 4u) & ~(cl_ulong)3u
                                : 1u,
    };
    /* only the members the core's struct_size covers */
    if (caps->struct_size > sizeof caps->struct_size) {
        size_t n_bytes = caps->struct_size < sizeof all ? caps->struct_size : sizeof all;
        memcpy((char *)caps + sizeof caps->struct_size, (const char *)&all + sizeof all.struct_size,
               n_bytes - sizeof all.struct_size);
    }
    return TKV_OK;
}

/* ---- buffers ----------------------------------------------------------------- */

static int ocl_buffer_alloc(void *dev, uint64_t bytes, void **out)
{
    struct ocl_device *d = dev;
    cl_int err;
    uint64_t padded = (bytes + 3u) / 4u * 4u + OCL_BUFFER_SPARE;
    if (bytes > UINT64_MAX - 16u || padded > d->max_alloc || padded > SIZE_MAX)
        return OCL_ERROR(TKV_ENOMEM,
                         "buffer_alloc: %llu bytes exceed the device's largest allocation "
                         "(CL_DEVICE_MAX_MEM_ALLOC_SIZE %llu bytes)",
                         (unsigned long long)bytes, (unsigned long long)d->max_alloc);
    struct ocl_buffer *b = calloc(1, sizeof *b);
    if (!b)
        return OCL_ERROR(TKV_ENOMEM, "buffer_alloc: no host memory for the handle");
    b->mem = clCreateBuffer(d->context, CL_MEM_READ_WRITE, (size_t)padded, NULL, &err);
    if (err != CL_SUCCESS) {
        free(b);
        return ocl_fail(err, "buffer_alloc", "clCreateBuffer");
    }
    /* Drivers allocate lazily: placing the buffer on the device (contents
     * undefined, so nothing is copied or zeroed) makes a failure surface
     * here rather than in a later op. */
    if ((err = clEnqueueMigrateMemObjects(d->queue, 1, &b->mem,
                                          CL_MIGRATE_MEM_OBJECT_CONTENT_UNDEFINED, 0, NULL,
                                          NULL)) != CL_SUCCESS ||
        (err = clFinish(d->queue)) != CL_SUCCESS) {
        clReleaseMemObject(b->mem);
        free(b);
        return ocl_fail(err, "buffer_alloc", "clEnqueueMigrateMemObjects");
    }
    b->magic = OCL_BUFFER_MAGIC;
    b->size = bytes;
    d->stats.n_buffers++;
    d->stats.bytes_allocated += bytes;
    *out = b;
    return TKV_OK;
}

static void ocl_buffer_free(void *dev, void *buf)
{
    struct ocl_device *d = dev;
    struct ocl_buffer *b = buf;
    if (!d || !b)
        return;
    if (b->magic != OCL_BUFFER_MAGIC) {
        ocl_svc->log(TKV_LOG_WARN, "opencl: buffer_free of something not a turbokv-opencl buffer");
        return;
    }
    d->stats.n_buffers--;
    d->stats.bytes_allocated -= b->size;
    b->magic = 0;
    clReleaseMemObject(b->mem);
    ocl_args_forget(d); /* a new buffer may get this one's handle */
    free(b);
}

static int ocl_buffer_write(void *dev, void *buf, uint64_t offset, const void *src, uint64_t bytes)
{
    struct ocl_device *d = dev;
    cl_int err = clEnqueueWriteBuffer(d->queue, ocl_buffer_of(buf)->mem, CL_TRUE, (size_t)offset,
                                      (size_t)bytes, src, 0, NULL, NULL);
    return err == CL_SUCCESS ? TKV_OK : ocl_fail(err, "buffer_write", "clEnqueueWriteBuffer");
}

static int ocl_buffer_read(void *dev, const void *buf, uint64_t offset, void *dst, uint64_t bytes)
{
    struct ocl_device *d = dev;
    cl_int err = clEnqueueReadBuffer(d->queue, ocl_buffer_of(buf)->mem, CL_TRUE, (size_t)offset,
                                     (size_t)bytes, dst, 0, NULL, NULL);
    return err == CL_SUCCESS ? TKV_OK : ocl_fail(err, "buffer_read", "clEnqueueReadBuffer");
}

/* Not waited for: the queue is in order, so every later op that reads dst
 * runs after the copy, and a buffer the core frees next (the old pool of
 * one that grew) lives on until the commands queued on it have finished
 * (clReleaseMemObject). A fork's first appends copy a block per layer, K
 * and V: a wait for each would cost a round trip to the device each. */
static int ocl_buffer_copy(void *dev, void *dst, uint64_t dst_offset, const void *src,
                           uint64_t src_offset, uint64_t bytes)
{
    struct ocl_device *d = dev;
    cl_int err = clEnqueueCopyBuffer(d->queue, ocl_buffer_of(src)->mem, ocl_buffer_of(dst)->mem,
                                     (size_t)src_offset, (size_t)dst_offset, (size_t)bytes, 0, NULL,
                                     NULL);
    return err == CL_SUCCESS ? TKV_OK : ocl_fail(err, "buffer_copy", "clEnqueueCopyBuffer");
}

/* ---- stats ---------------------------------------------------------------------- */

static int ocl_stats(void *dev, struct tkv_device_stats *stats)
{
    struct ocl_device *d = dev;
    uint32_t size = stats->struct_size < sizeof *stats ? stats->struct_size : sizeof *stats;
    struct tkv_device_stats copy = d->stats;
    copy.struct_size = size;
    memcpy(stats, &copy, size);
    return TKV_OK;
}

/* ---- the descriptor --------------------------------------------------------------- */

static const struct tkv_plugin ocl_plugin = {
    .abi_major = TKV_ABI_MAJOR,
    .abi_minor = TKV_ABI_MINOR,
    .struct_size = sizeof(struct tkv_plugin),
    .name = "opencl",
    .version = TKV_VERSION_STRING,
    .description = "turbokv OpenCL backend (OpenCL 1.2 kernels: GPUs, PoCL)",
    .init = ocl_init,
    .probe = ocl_probe,
    .device_caps = ocl_device_caps,
    .open = ocl_open,
    .close = ocl_close,
    .buffer_alloc = ocl_buffer_alloc,
    .buffer_free = ocl_buffer_free,
    .buffer_write = ocl_buffer_write,
    .buffer_read = ocl_buffer_read,
    .buffer_copy = ocl_buffer_copy,
    .quantize_append = ocl_quantize_append,
    .attention = ocl_attention,
    .dequantize = ocl_dequantize,
    .stats = ocl_stats,
    .host_device = ocl_host_device,
    .quantize_append_pair = ocl_quantize_append_pair,
    .append_attention = ocl_append_attention,
};

TKV_PLUGIN_EXPORT const struct tkv_plugin *tkv_plugin_entry(uint32_t core_abi_major,
                                                            uint32_t core_abi_minor);

/* Any 2.x core can run this module: a later minor only appends members the
 * module does not read. */
TKV_PLUGIN_EXPORT const struct tkv_plugin *tkv_plugin_entry(uint32_t core_abi_major,
                                                            uint32_t core_abi_minor)
{
    (void)core_abi_minor;
    return core_abi_major == TKV_ABI_MAJOR ? &ocl_plugin : NULL;
}
