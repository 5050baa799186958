/* SPDX-License-Identifier: MIT */
/*
 * Session 22: where the host time of the OpenCL plugin's queued calls goes.
 * An LD_PRELOAD library that times every call of the OpenCL functions the
 * plugin uses on its per-call path and prints, at exit, the calls and the
 * microseconds of host time in each (stderr).
 *   cc -O2 -shared -fPIC cltrace.c -o cltrace.so -ldl
 *   LD_PRELOAD=$PWD/cltrace.so turbokv bench --backend opencl --per-token ...
 * With CLTRACE_SEQ set, also each call's name and host us as it returns.
 */
#define _GNU_SOURCE
#define CL_TARGET_OPENCL_VERSION 120
#include <CL/cl.h>
#include <dlfcn.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

enum { F_WRITE, F_READ, F_COPY, F_KERNEL, F_ARG, F_FLUSH, F_FINISH, F_WAIT, F_RELEASE, F_N };
static const char *names[F_N] = { "clEnqueueWriteBuffer", "clEnqueueReadBuffer",
                                  "clEnqueueCopyBuffer",  "clEnqueueNDRangeKernel",
                                  "clSetKernelArg",       "clFlush",
                                  "clFinish",             "clWaitForEvents",
                                  "clReleaseEvent" };
static double total_us[F_N];
static unsigned long calls[F_N];

static double now_us(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec * 1e6 + t.tv_nsec * 1e-3;
}

#define NEXT(name) static __typeof__(name) *next; if (!next) next = (__typeof__(name) *)dlsym(RTLD_NEXT, #name)
static int seq = -1; /* CLTRACE_SEQ set: every call's name and time on stderr */
#define TIMED(f, expr) do { double t0 = now_us(); r = (expr); double dt = now_us() - t0; \
    total_us[f] += dt; calls[f]++; \
    if (seq < 0) seq = getenv("CLTRACE_SEQ") != NULL; \
    if (seq) fprintf(stderr, "cltrace: %s %.1f\n", names[f], dt); } while (0)

cl_int clEnqueueWriteBuffer(cl_command_queue q, cl_mem m, cl_bool b, size_t o, size_t n, const void *p,
                            cl_uint ne, const cl_event *w, cl_event *e)
{
    NEXT(clEnqueueWriteBuffer); cl_int r; TIMED(F_WRITE, next(q, m, b, o, n, p, ne, w, e)); return r;
}
cl_int clEnqueueReadBuffer(cl_command_queue q, cl_mem m, cl_bool b, size_t o, size_t n, void *p,
                           cl_uint ne, const cl_event *w, cl_event *e)
{
    NEXT(clEnqueueReadBuffer); cl_int r; TIMED(F_READ, next(q, m, b, o, n, p, ne, w, e)); return r;
}
cl_int clEnqueueCopyBuffer(cl_command_queue q, cl_mem s, cl_mem d, size_t so, size_t dof, size_t n,
                           cl_uint ne, const cl_event *w, cl_event *e)
{
    NEXT(clEnqueueCopyBuffer); cl_int r; TIMED(F_COPY, next(q, s, d, so, dof, n, ne, w, e)); return r;
}
cl_int clEnqueueNDRangeKernel(cl_command_queue q, cl_kernel k, cl_uint dim, const size_t *go,
                              const size_t *gs, const size_t *ls, cl_uint ne, const cl_event *w,
                              cl_event *e)
{
    NEXT(clEnqueueNDRangeKernel); cl_int r; TIMED(F_KERNEL, next(q, k, dim, go, gs, ls, ne, w, e)); return r;
}
cl_int clSetKernelArg(cl_kernel k, cl_uint i, size_t n, const void *v)
{
    NEXT(clSetKernelArg); cl_int r; TIMED(F_ARG, next(k, i, n, v)); return r;
}
cl_int clFlush(cl_command_queue q) { NEXT(clFlush); cl_int r; TIMED(F_FLUSH, next(q)); return r; }
cl_int clFinish(cl_command_queue q) { NEXT(clFinish); cl_int r; TIMED(F_FINISH, next(q)); return r; }
cl_int clWaitForEvents(cl_uint n, const cl_event *e)
{
    NEXT(clWaitForEvents); cl_int r; TIMED(F_WAIT, next(n, e)); return r;
}
cl_int clReleaseEvent(cl_event e) { NEXT(clReleaseEvent); cl_int r; TIMED(F_RELEASE, next(e)); return r; }

__attribute__((destructor)) static void report(void)
{
    fprintf(stderr, "cltrace: function, calls, host us in total, us a call\n");
    for (int f = 0; f < F_N; f++)
        if (calls[f])
            fprintf(stderr, "cltrace: %-24s %9lu %12.0f %8.2f\n", names[f], calls[f], total_us[f],
                    total_us[f] / calls[f]);
}
