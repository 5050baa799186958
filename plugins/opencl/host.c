/* SPDX-License-Identifier: MIT */
/*
 * The host's own OpenCL device (ABI 2.2): its context, device and in-order
 * queue adopted (retained, never a second context), its cl_mem buffers as
 * q, k, v and out, and the staging of the calls that return without
 * waiting. Every command goes on the host's queue, so that it runs after
 * the host's earlier work and before its later work (docs/api.md, "The
 * host's own device").
 */
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include "ocl.h"

/* ---- adoption -------------------------------------------------------------------- */

int ocl_host_check(const struct tkv_host_device *host, cl_platform_id *platform)
{
    static const char op[] = "host_device";
    const size_t min_size = offsetof(struct tkv_host_device, vulkan.flags); /* 0.5's struct */
    if (!host || host->struct_size < min_size)
        return OCL_ERROR(TKV_EINVAL, "%s: struct_size %u, expected at least %zu", op,
                         host ? host->struct_size : 0u, min_size);
    if (host->backend != TKV_HOST_OPENCL)
        return OCL_ERROR(TKV_EUNSUPPORTED, "%s: backend tag %u is not OpenCL (%d)", op,
                         host->backend, TKV_HOST_OPENCL);
    cl_context context = (cl_context)host->opencl.context;
    cl_device_id device = (cl_device_id)host->opencl.device;
    cl_command_queue queue = (cl_command_queue)host->opencl.queue;
    if (!context || !device || !queue)
        return OCL_ERROR(TKV_EINVAL, "%s: the OpenCL %s is NULL", op,
                         !context ? "context" : !device ? "device" : "queue");
    cl_context q_context = NULL;
    cl_device_id q_device = NULL;
    cl_command_queue_properties props = 0;
    cl_int err;
    if ((err = clGetCommandQueueInfo(queue, CL_QUEUE_CONTEXT, sizeof q_context, &q_context,
                                     NULL)) != CL_SUCCESS ||
        (err = clGetCommandQueueInfo(queue, CL_QUEUE_DEVICE, sizeof q_device, &q_device, NULL)) !=
            CL_SUCCESS ||
        (err = clGetCommandQueueInfo(queue, CL_QUEUE_PROPERTIES, sizeof props, &props, NULL)) !=
            CL_SUCCESS)
        return OCL_ERROR(TKV_EINVAL, "%s: the queue is not a command queue: clGetCommandQueueInfo: %s (%d)",
                         op, ocl_error_name(err), (int)err);
    if (q_context != context || q_device != device)
        return OCL_ERROR(TKV_EINVAL, "%s: the queue belongs to another %s", op,
                         q_context != context ? "context" : "device");
    if (props & CL_QUEUE_OUT_OF_ORDER_EXEC_MODE_ENABLE)
        return OCL_ERROR(TKV_EUNSUPPORTED,
                         "%s: the queue is out of order; turbokv orders its commands by an in-order "
                         "queue (create one without CL_QUEUE_OUT_OF_ORDER_EXEC_MODE_ENABLE)",
                         op);
    if (!ocl_device_usable(device))
        return OCL_ERROR(TKV_EUNSUPPORTED,
                         "%s: the device is unavailable, has no compiler, or too small work-groups "
                         "or local memory for the kernels",
                         op);
    if ((err = clGetDeviceInfo(device, CL_DEVICE_PLATFORM, sizeof *platform, platform, NULL)) !=
        CL_SUCCESS)
        return ocl_fail(err, op, "clGetDeviceInfo(CL_DEVICE_PLATFORM)");
    return TKV_OK;
}

int ocl_device_adopt(struct ocl_device *d, const struct tkv_host_device *host,
                     const struct tkv_math *math)
{
    cl_platform_id platform;
    int rc = ocl_host_check(host, &platform);
    if (rc != TKV_OK)
        return rc;
    cl_int err;
    if ((err = clRetainContext((cl_context)host->opencl.context)) != CL_SUCCESS)
        return ocl_fail(err, "open", "clRetainContext");
    d->context = (cl_context)host->opencl.context;
    if ((err = clRetainCommandQueue((cl_command_queue)host->opencl.queue)) != CL_SUCCESS)
        return ocl_fail(err, "open", "clRetainCommandQueue");
    d->queue = (cl_command_queue)host->opencl.queue;
    d->device = (cl_device_id)host->opencl.device;
    d->adopted = 1;
    return ocl_device_setup(d, math);
}

/* ---- staging that is not waited for ------------------------------------------------ */

static int stage_wait(struct ocl_stage *s, const char *op)
{
    if (!s->written)
        return TKV_OK;
    cl_int err = clWaitForEvents(1, &s->written);
    clReleaseEvent(s->written);
    s->written = NULL;
    return err == CL_SUCCESS ? TKV_OK : ocl_fail(err, op, "clWaitForEvents(staging)");
}

int ocl_stage_take(struct ocl_device *d, size_t bytes, const char *op, void **host, uint32_t *slot)
{
    const uint32_t i = d->stage_next;
    struct ocl_stage *s = &d->stage[i];
    /* the write that read this slot OCL_STAGE_SLOTS calls ago has long run */
    int rc = stage_wait(s, op);
    if (rc != TKV_OK)
        return rc;
    if (bytes > s->size) {
        size_t size = 4096;
        while (size < bytes)
            size <<= 1;
        void *p = realloc(s->host, size);
        if (!p)
            return OCL_ERROR(TKV_ENOMEM, "%s: no host memory for %zu bytes of staging", op, size);
        s->host = p;
        s->size = size;
    }
    d->stage_next = (i + 1u) % OCL_STAGE_SLOTS;
    *host = s->host;
    *slot = i;
    return TKV_OK;
}

int ocl_stage_write(struct ocl_device *d, uint32_t slot, cl_mem dst, size_t bytes, const char *op)
{
    struct ocl_stage *s = &d->stage[slot];
    cl_int err = clEnqueueWriteBuffer(d->queue, dst, CL_FALSE, 0, bytes, s->host, 0, NULL,
                                      &s->written);
    if (err != CL_SUCCESS) {
        s->written = NULL;
        return ocl_fail(err, op, "clEnqueueWriteBuffer(staging)");
    }
    return TKV_OK;
}

void ocl_stage_release(struct ocl_device *d)
{
    for (uint32_t i = 0; i < OCL_STAGE_SLOTS; i++) {
        if (d->stage[i].written) {
            clWaitForEvents(1, &d->stage[i].written);
            clReleaseEvent(d->stage[i].written);
        }
        free(d->stage[i].host);
        d->stage[i] = (struct ocl_stage){ 0 };
    }
    free(d->up_last);
    free(d->up_next);
    d->up_last = d->up_next = NULL;
    d->up_cap = d->up_last_bytes = 0;
    d->up_last_valid = 0;
}

/* ---- device tensors ------------------------------------------------------------------ */

static size_t elem_bytes(uint32_t elem) { return elem == TKV_ELEM_F32 ? 4u : 2u; }

int ocl_tensor_mem(struct ocl_device *d, const struct tkv_device_tensor *t, uint64_t n,
                   const char *op, const char *what, cl_mem *mem)
{
    cl_mem m = (cl_mem)(uintptr_t)t->handle;
    cl_context context = NULL;
    size_t size = 0;
    cl_int err;
    if (t->memory != TKV_MEMORY_OPENCL)
        return OCL_ERROR(TKV_EINVAL, "%s: %s is not an OpenCL buffer (memory %u)", op, what,
                         t->memory);
    if ((err = clGetMemObjectInfo(m, CL_MEM_CONTEXT, sizeof context, &context, NULL)) !=
            CL_SUCCESS ||
        (err = clGetMemObjectInfo(m, CL_MEM_SIZE, sizeof size, &size, NULL)) != CL_SUCCESS)
        return OCL_ERROR(TKV_EINVAL, "%s: %s: the handle is not a cl_mem: clGetMemObjectInfo: %s (%d)",
                         op, what, ocl_error_name(err), (int)err);
    if (context != d->context)
        return OCL_ERROR(TKV_EINVAL, "%s: %s is a buffer of another cl_context than the host's",
                         op, what);
    if (t->offset > size || n * elem_bytes(t->elem) > size - t->offset)
        return OCL_ERROR(TKV_ERANGE,
                         "%s: %s: %llu bytes at offset %llu, the cl_mem holds %zu bytes (the host "
                         "said %llu)",
                         op, what, (unsigned long long)(n * elem_bytes(t->elem)),
                         (unsigned long long)t->offset, size, (unsigned long long)t->size);
    *mem = m;
    return TKV_OK;
}

/* Enqueues widen_elems: n f16/bf16 elements at src (element src_at) to f32
 * at dst (word dst_at). */
static int widen(struct ocl_device *d, cl_mem src, uint64_t src_at, uint32_t elem, cl_mem dst,
                 size_t dst_at, uint64_t n, const char *op)
{
    if (n > UINT32_MAX || dst_at > UINT32_MAX)
        return OCL_ERROR(TKV_EUNSUPPORTED, "%s: %llu elements exceed the conversion's 2^32", op,
                         (unsigned long long)n);
    cl_ulong at = src_at;
    cl_uint e = elem, to = (cl_uint)dst_at, count = (cl_uint)n;
    const struct ocl_karg args[] = {
        OCL_ARG(src), OCL_ARG(at), OCL_ARG(e), OCL_ARG(dst), OCL_ARG(to), OCL_ARG(count),
    };
    const size_t wg = ocl_wg_pow2(d, OCL_K_WIDEN, 256u);
    const size_t groups[3] = { (size_t)((n + wg - 1u) / wg), 1, 1 };
    /* the host's buffer may be a new object at a released one's address:
     * never trust the remembered argument */
    d->args[OCL_K_WIDEN][0].set = 0;
    int rc = ocl_args(d, OCL_K_WIDEN, op, sizeof args / sizeof args[0], args);
    return rc != TKV_OK ? rc : ocl_launch(d, OCL_K_WIDEN, op, 1, groups, wg, NULL);
}

int ocl_tensor_f32(struct ocl_device *d, const struct tkv_device_tensor *t, uint64_t n,
                   const char *op, cl_mem *mem, cl_uint *word_at)
{
    cl_mem m;
    int rc = ocl_tensor_mem(d, t, n, op, "rows", &m);
    if (rc != TKV_OK)
        return rc;
    /* f32 the kernels read in place, where the word offset fits their uint */
    if (t->elem == TKV_ELEM_F32 && t->offset / 4u <= UINT32_MAX) {
        *mem = m;
        *word_at = (cl_uint)(t->offset / 4u);
        return TKV_OK;
    }
    if ((rc = ocl_scratch_reserve(d, &d->widen, (size_t)n * sizeof(float), op, "widened rows")) !=
        TKV_OK)
        return rc;
    if ((rc = ocl_tensor_in(d, t, n, d->widen.mem, 0, op)) != TKV_OK)
        return rc;
    *mem = d->widen.mem;
    *word_at = 0;
    return TKV_OK;
}

int ocl_tensor_in(struct ocl_device *d, const struct tkv_device_tensor *t, uint64_t n, cl_mem dst,
                  size_t dst_at, const char *op)
{
    cl_mem m;
    int rc = ocl_tensor_mem(d, t, n, op, "input", &m);
    if (rc != TKV_OK)
        return rc;
    if (t->elem != TKV_ELEM_F32)
        return widen(d, m, t->offset / 2u, t->elem, dst, dst_at, n, op);
    cl_int err = clEnqueueCopyBuffer(d->queue, m, dst, (size_t)t->offset, dst_at * 4u,
                                     (size_t)n * 4u, 0, NULL, NULL);
    return err == CL_SUCCESS ? TKV_OK : ocl_fail(err, op, "clEnqueueCopyBuffer(input)");
}

int ocl_tensor_out(struct ocl_device *d, cl_mem src, size_t src_at,
                   const struct tkv_device_tensor *t, uint64_t n, const char *op)
{
    cl_mem m;
    int rc = ocl_tensor_mem(d, t, n, op, "out", &m);
    if (rc != TKV_OK)
        return rc;
    if (t->elem == TKV_ELEM_F32) {
        cl_int err = clEnqueueCopyBuffer(d->queue, src, m, src_at * 4u, (size_t)t->offset,
                                         (size_t)n * 4u, 0, NULL, NULL);
        return err == CL_SUCCESS ? TKV_OK : ocl_fail(err, op, "clEnqueueCopyBuffer(out)");
    }
    if (n > UINT32_MAX || src_at > UINT32_MAX)
        return OCL_ERROR(TKV_EUNSUPPORTED, "%s: %llu elements exceed the conversion's 2^32", op,
                         (unsigned long long)n);
    cl_uint from = (cl_uint)src_at, e = t->elem, count = (cl_uint)n;
    cl_ulong at = t->offset / 2u;
    const struct ocl_karg args[] = {
        OCL_ARG(src), OCL_ARG(from), OCL_ARG(m), OCL_ARG(at), OCL_ARG(e), OCL_ARG(count),
    };
    const size_t wg = ocl_wg_pow2(d, OCL_K_NARROW, 256u);
    const size_t groups[3] = { (size_t)((n + wg - 1u) / wg), 1, 1 };
    d->args[OCL_K_NARROW][2].set = 0; /* the host's buffer: see widen() */
    rc = ocl_args(d, OCL_K_NARROW, op, sizeof args / sizeof args[0], args);
    return rc != TKV_OK ? rc : ocl_launch(d, OCL_K_NARROW, op, 1, groups, wg, NULL);
}
