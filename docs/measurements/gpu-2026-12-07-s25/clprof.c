/* SPDX-License-Identifier: MIT */
/*
 * Session 25 (session 23's, with each kernel's launches apart by their
 * global size, so that the per-token bench's 16-row decode appends and its
 * 8,192-row prefill appends are two lines): where the device time of the
 * OpenCL plugin's queued calls goes. An LD_PRELOAD library that turns on profiling in every command
 * queue the process makes, takes an event of every kernel launch and
 * buffer write (the caller's, or one of its own), and at each clFinish
 * reads their timestamps: per kernel name (writes as "(write)") the
 * launches, the mean time from start to end, and the mean gap from the end
 * of the command before it on the device to its start, apart for batches
 * (the commands between two host waits: clFinish, clWaitForEvents) of 16
 * commands or more ("steps": the per-token mode's) and smaller ones
 * ("calls"). Printed at exit on stderr.
 *   cc -O2 -shared -fPIC clprof.c -o clprof.so -ldl
 *   LD_PRELOAD=$PWD/clprof.so turbokv bench --backend opencl --per-token ...
 */
#define _GNU_SOURCE
#define CL_TARGET_OPENCL_VERSION 200
#define CL_USE_DEPRECATED_OPENCL_1_2_APIS
#include <CL/cl.h>
#include <dlfcn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define NEXT(name)                                                                          \
    static __typeof__(name) *next;                                                          \
    if (!next)                                                                              \
    next = (__typeof__(name) *)dlsym(RTLD_NEXT, #name)

enum { MAX_PENDING = 1 << 16, MAX_NAMES = 64 };
static struct {
    cl_event ev;
    int name;
} pending[MAX_PENDING];
static int n_pending;
static char names[MAX_NAMES][64];
static struct {
    unsigned long n;
    double busy_ns, gap_ns;
    unsigned long gaps;
} stat[2][MAX_NAMES];
static int n_names;
static unsigned long batches[2];

static int name_index(const char *s)
{
    for (int i = 0; i < n_names; i++)
        if (!strcmp(names[i], s))
            return i;
    if (n_names == MAX_NAMES)
        return MAX_NAMES - 1;
    snprintf(names[n_names], sizeof names[n_names], "%s", s);
    return n_names++;
}

static void record(cl_event *caller, cl_event own, int name)
{
    if (n_pending == MAX_PENDING)
        return;
    cl_event e = caller ? *caller : own;
    if (caller)
        clRetainEvent(e);
    pending[n_pending].ev = e;
    pending[n_pending].name = name;
    n_pending++;
}

/* the commands since the last host wait, in the order they were enqueued
 * (one in-order queue) */
static void drain(void)
{
    const int big = n_pending >= 16;
    cl_ulong last_end = 0;
    if (n_pending)
        batches[big]++;
    for (int i = 0; i < n_pending; i++) {
        cl_ulong s = 0, e = 0;
        clGetEventProfilingInfo(pending[i].ev, CL_PROFILING_COMMAND_START, sizeof s, &s, NULL);
        clGetEventProfilingInfo(pending[i].ev, CL_PROFILING_COMMAND_END, sizeof e, &e, NULL);
        clReleaseEvent(pending[i].ev);
        if (s && e >= s) {
            stat[big][pending[i].name].n++;
            stat[big][pending[i].name].busy_ns += (double)(e - s);
            if (last_end && s >= last_end) {
                stat[big][pending[i].name].gap_ns += (double)(s - last_end);
                stat[big][pending[i].name].gaps++;
            }
        }
        if (e)
            last_end = e;
    }
    n_pending = 0;
}

cl_command_queue clCreateCommandQueue(cl_context c, cl_device_id d, cl_command_queue_properties p,
                                      cl_int *err)
{
    NEXT(clCreateCommandQueue);
    return next(c, d, p | CL_QUEUE_PROFILING_ENABLE, err);
}

cl_command_queue clCreateCommandQueueWithProperties(cl_context c, cl_device_id d,
                                                    const cl_queue_properties *p, cl_int *err)
{
    NEXT(clCreateCommandQueueWithProperties);
    cl_queue_properties q[32];
    int n = 0, had = 0;
    for (; p && p[n] && n < 28; n += 2) {
        q[n] = p[n];
        q[n + 1] = p[n + 1];
        if (p[n] == CL_QUEUE_PROPERTIES) {
            q[n + 1] |= CL_QUEUE_PROFILING_ENABLE;
            had = 1;
        }
    }
    if (!had) {
        q[n++] = CL_QUEUE_PROPERTIES;
        q[n++] = CL_QUEUE_PROFILING_ENABLE;
    }
    q[n] = 0;
    return next(c, d, q, err);
}

cl_int clEnqueueNDRangeKernel(cl_command_queue q, cl_kernel k, cl_uint dim, const size_t *go,
                              const size_t *gs, const size_t *ls, cl_uint ne, const cl_event *w,
                              cl_event *e)
{
    NEXT(clEnqueueNDRangeKernel);
    cl_event own = NULL;
    cl_int r = next(q, k, dim, go, gs, ls, ne, w, e ? e : &own);
    if (r == CL_SUCCESS) {
        char name[48] = "?", key[64];
        clGetKernelInfo(k, CL_KERNEL_FUNCTION_NAME, sizeof name, name, NULL);
        name[47] = '\0';
        size_t items = 1;
        for (cl_uint d = 0; d < dim; d++)
            items *= gs[d];
        snprintf(key, sizeof key, "%s/%zu", name, items);
        record(e, own, name_index(key));
    }
    return r;
}

cl_int clEnqueueWriteBuffer(cl_command_queue q, cl_mem m, cl_bool b, size_t o, size_t n,
                            const void *p, cl_uint ne, const cl_event *w, cl_event *e)
{
    NEXT(clEnqueueWriteBuffer);
    cl_event own = NULL;
    cl_int r = next(q, m, b, o, n, p, ne, w, e ? e : &own);
    if (r == CL_SUCCESS)
        record(e, own, name_index("(write)"));
    return r;
}

cl_int clFinish(cl_command_queue q)
{
    NEXT(clFinish);
    cl_int r = next(q);
    drain();
    return r;
}

cl_int clWaitForEvents(cl_uint n, const cl_event *e)
{
    NEXT(clWaitForEvents);
    cl_int r = next(n, e);
    drain();
    return r;
}

__attribute__((destructor)) static void report(void)
{
    drain();
    for (int big = 1; big >= 0; big--) {
        if (!batches[big])
            continue;
        fprintf(stderr, "clprof: %s (%lu batches): command, count, mean us start to end, mean us gap "
                        "before it (count)\n", big ? "steps" : "calls", batches[big]);
        for (int i = 0; i < n_names; i++)
            if (stat[big][i].n)
                fprintf(stderr, "clprof:   %-24s %9lu %9.2f %9.2f (%lu)\n", names[i], stat[big][i].n,
                        stat[big][i].busy_ns / stat[big][i].n / 1e3,
                        stat[big][i].gaps ? stat[big][i].gap_ns / stat[big][i].gaps / 1e3 : 0.0,
                        stat[big][i].gaps);
    }
}
