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
    snprintf(info->driver, sizeof info->driver, "%s, %s", platform, version);
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
    if (!n_found)
        return OCL_ERROR(TKV_EINVAL, "probe: NULL n_found");
    if (max && !devs)
        return OCL_ERROR(TKV_EINVAL, "probe: NULL devs with max %u", max);
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

/* The tables of ABI 1.0 must be there for every group size; the QJL
 * matrices (1.1) are optional, and QJL rows are refused without them. */
static int math_check(const struct tkv_math *math)
{
    if (!math)
        return OCL_ERROR(TKV_EINVAL, "open: NULL math tables");
    if (math->struct_size < offsetof(struct tkv_math, qjl))
        return OCL_ERROR(TKV_EINVAL, "open: math struct_size %u < %zu", math->struct_size,
                         offsetof(struct tkv_math, qjl));
    for (uint32_t g = TKV_GROUP_MIN; g <= TKV_GROUP_MAX; g <<= 1) {
        const struct tkv_group_tables *t = &math->groups[tkv_group_index(g)];
        int ok = t->group == g && t->sign1 && t->sign2 && t->dense;
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
    if (!params || !dev_out)
        return OCL_ERROR(TKV_EINVAL, "open: NULL %s", params ? "dev" : "params");
    if (params->struct_size < sizeof *params)
        return OCL_ERROR(TKV_EINVAL, "open: params struct_size %u < %zu", params->struct_size,
                         sizeof *params);
    if ((rc = math_check(params->math)) != TKV_OK)
        return rc;
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

/* ---- argument checks shared by the ops ----------------------------------------- */

int ocl_check_args(const void *dev, const void *args, size_t size, const char *op)
{
    uint32_t struct_size;
    if (!dev || !args)
        return OCL_ERROR(TKV_EINVAL, "%s: NULL %s", op, dev ? "args" : "device");
    memcpy(&struct_size, args, sizeof struct_size);
    if (struct_size < size)
        return OCL_ERROR(TKV_EINVAL, "%s: args struct_size %u is less than %zu (ABI %u.%u)", op,
                         struct_size, size, TKV_ABI_MAJOR, TKV_ABI_MINOR);
    return TKV_OK;
}

int ocl_check_format(const struct ocl_device *d, const struct tkv_row_format *fmt,
                     const char *op, uint32_t *row_bytes)
{
    if (fmt->type >= TKV_TYPE_COUNT)
        return OCL_ERROR(TKV_EUNSUPPORTED, "%s: unknown type %u (0..%u)", op, fmt->type,
                         TKV_TYPE_COUNT - 1);
    if (!tkv_head_dim_supported(fmt->head_dim))
        return OCL_ERROR(TKV_EUNSUPPORTED,
                         "%s: head_dim %u is not supported (multiples of %u up to %u)", op,
                         fmt->head_dim, TKV_GROUP_MIN, TKV_HEAD_DIM_MAX);
    *row_bytes = tkv_row_bytes(fmt->type, fmt->head_dim);
    if (!tkv_type_is_turbo(fmt->type))
        return TKV_OK;
    if (fmt->rotation == 0 || fmt->rotation >= TKV_ROTATION_COUNT)
        return OCL_ERROR(TKV_EINVAL, "%s: unknown rotation %u (1..%u)", op, fmt->rotation,
                         TKV_ROTATION_COUNT - 1);
    if (fmt->scale_mode == 0 || fmt->scale_mode >= TKV_SCALE_COUNT)
        return OCL_ERROR(TKV_EINVAL, "%s: unknown scale mode %u (1..%u)", op, fmt->scale_mode,
                         TKV_SCALE_COUNT - 1);
    if (tkv_type_is_qjl(fmt->type) && !d->has_qjl)
        return OCL_ERROR(TKV_EUNSUPPORTED, "%s: the math tables lack the QJL sketches (core ABI "
                                           "older than 1.1)", op);
    return TKV_OK;
}

/* ---- buffers ----------------------------------------------------------------- */

struct ocl_buffer *ocl_buffer_check(const void *buf, const char *op, const char *which)
{
    struct ocl_buffer *b = (struct ocl_buffer *)buf;
    if (!b) {
        (void)OCL_ERROR(TKV_EINVAL, "%s: NULL %s", op, which);
        return NULL;
    }
    if (b->magic != OCL_BUFFER_MAGIC) {
        (void)OCL_ERROR(TKV_EINVAL, "%s: %s is not a turbokv-opencl buffer", op, which);
        return NULL;
    }
    return b;
}


static int ocl_buffer_alloc(void *dev, uint64_t bytes, void **out)
{
    struct ocl_device *d = dev;
    static const cl_uint zero = 0;
    cl_int err;
    if (!d || !out)
        return OCL_ERROR(TKV_EINVAL, "buffer_alloc: NULL %s", d ? "buf" : "device");
    if (bytes == 0)
        return OCL_ERROR(TKV_EINVAL, "buffer_alloc: zero bytes");
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
    /* zeroed, and waited for: drivers allocate lazily, and a failure must
     * surface here rather than in a later op */
    if ((err = clEnqueueFillBuffer(d->queue, b->mem, &zero, sizeof zero, 0, (size_t)padded, 0, NULL,
                                   NULL)) != CL_SUCCESS ||
        (err = clFinish(d->queue)) != CL_SUCCESS) {
        clReleaseMemObject(b->mem);
        free(b);
        return ocl_fail(err, "buffer_alloc", "clEnqueueFillBuffer");
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
    free(b);
}

/* The buffer behind buf, if bytes at offset lie inside it. */
static int buffer_range(const void *buf, uint64_t offset, uint64_t bytes, const char *op,
                        struct ocl_buffer **out)
{
    struct ocl_buffer *b = ocl_buffer_check(buf, op, "buf");
    if (!b)
        return TKV_EINVAL;
    if (!tkv_span_fits(b->size, offset, 1, 0, bytes))
        return OCL_ERROR(TKV_ERANGE, "%s: %llu bytes at offset %llu exceed the %llu-byte buffer",
                         op, (unsigned long long)bytes, (unsigned long long)offset,
                         (unsigned long long)b->size);
    *out = b;
    return TKV_OK;
}

static int ocl_buffer_write(void *dev, void *buf, uint64_t offset, const void *src, uint64_t bytes)
{
    struct ocl_device *d = dev;
    struct ocl_buffer *b;
    int rc;
    if (!d || (!src && bytes))
        return OCL_ERROR(TKV_EINVAL, "buffer_write: NULL %s", d ? "src" : "device");
    if ((rc = buffer_range(buf, offset, bytes, "buffer_write", &b)) != TKV_OK)
        return rc;
    if (bytes == 0)
        return TKV_OK;
    cl_int err = clEnqueueWriteBuffer(d->queue, b->mem, CL_TRUE, (size_t)offset, (size_t)bytes, src,
                                      0, NULL, NULL);
    return err == CL_SUCCESS ? TKV_OK : ocl_fail(err, "buffer_write", "clEnqueueWriteBuffer");
}

static int ocl_buffer_read(void *dev, const void *buf, uint64_t offset, void *dst, uint64_t bytes)
{
    struct ocl_device *d = dev;
    struct ocl_buffer *b;
    int rc;
    if (!d || (!dst && bytes))
        return OCL_ERROR(TKV_EINVAL, "buffer_read: NULL %s", d ? "dst" : "device");
    if ((rc = buffer_range(buf, offset, bytes, "buffer_read", &b)) != TKV_OK)
        return rc;
    if (bytes == 0)
        return TKV_OK;
    cl_int err = clEnqueueReadBuffer(d->queue, b->mem, CL_TRUE, (size_t)offset, (size_t)bytes, dst,
                                     0, NULL, NULL);
    return err == CL_SUCCESS ? TKV_OK : ocl_fail(err, "buffer_read", "clEnqueueReadBuffer");
}

/* ---- stats ---------------------------------------------------------------------- */

static int ocl_stats(void *dev, struct tkv_device_stats *stats)
{
    struct ocl_device *d = dev;
    if (!d || !stats)
        return OCL_ERROR(TKV_EINVAL, "stats: NULL %s", d ? "stats" : "device");
    if (stats->struct_size < sizeof *stats)
        return OCL_ERROR(TKV_EINVAL, "stats: struct_size %u < %zu", stats->struct_size,
                         sizeof *stats);
    *stats = d->stats;
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
    .open = ocl_open,
    .close = ocl_close,
    .buffer_alloc = ocl_buffer_alloc,
    .buffer_free = ocl_buffer_free,
    .buffer_write = ocl_buffer_write,
    .buffer_read = ocl_buffer_read,
    .quantize_append = ocl_quantize_append,
    .attention = ocl_attention,
    .dequantize = ocl_dequantize,
    .stats = ocl_stats,
};

TKV_PLUGIN_EXPORT const struct tkv_plugin *tkv_plugin_entry(uint32_t core_abi_major,
                                                            uint32_t core_abi_minor);

/* Any 1.x core can run this module; an older minor lacks the QJL sketches,
 * which open() notices. */
TKV_PLUGIN_EXPORT const struct tkv_plugin *tkv_plugin_entry(uint32_t core_abi_major,
                                                            uint32_t core_abi_minor)
{
    (void)core_abi_minor;
    return core_abi_major == TKV_ABI_MAJOR ? &ocl_plugin : NULL;
}
