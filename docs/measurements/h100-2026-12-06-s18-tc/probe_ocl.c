/* SPDX-License-Identifier: MIT */
/*
 * Session 18: does an OpenCL device take the tensor-core kernel's inline PTX?
 * The prototype (tcdecode.cu) needs mma.sync.aligned.m16n8k16 (fp16 in,
 * fp32 accumulation), cp.async from global into local memory and
 * shfl.sync.bfly. This program builds one OpenCL C kernel that uses each
 * through asm(), runs it on one work-group of 32 work-items (one warp) and
 * checks the results on the host: the matrix product against a plain one,
 * the copied bytes, the shuffled values. It prints the device, its compute
 * capability (cl_nv_device_attribute_query) and the build log; a device
 * whose compiler refuses the assembly (PoCL, any non-NVIDIA device) says so
 * and the program exits 0. Not part of the library.
 *
 *   cc -O2 -o probe_ocl probe_ocl.c -lOpenCL && ./probe_ocl
 */
#define CL_TARGET_OPENCL_VERSION 120
#include <CL/cl.h>
#include <CL/cl_ext.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char *source =
    "__kernel void probe(__global const uint *a, __global const uint *b, __global float *d,\n"
    "                    __global const uint4 *src, __global uint4 *copied, __global uint *shuffled)\n"
    "{\n"
    "    __local uint4 stage[32];\n"
    "    const uint lane = get_local_id(0);\n"
    "    float c0 = 0.0f, c1 = 0.0f, c2 = 0.0f, c3 = 0.0f;\n"
    "    const uint a0 = a[4 * lane], a1 = a[4 * lane + 1], a2 = a[4 * lane + 2], a3 = a[4 * lane + 3];\n"
    "    const uint b0 = b[2 * lane], b1 = b[2 * lane + 1];\n"
    "    asm volatile(\"mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, \"\n"
    "                 \"{%8,%9}, {%0,%1,%2,%3};\"\n"
    "                 : \"+f\"(c0), \"+f\"(c1), \"+f\"(c2), \"+f\"(c3)\n"
    "                 : \"r\"(a0), \"r\"(a1), \"r\"(a2), \"r\"(a3), \"r\"(b0), \"r\"(b1));\n"
    "    d[4 * lane] = c0;\n"
    "    d[4 * lane + 1] = c1;\n"
    "    d[4 * lane + 2] = c2;\n"
    "    d[4 * lane + 3] = c3;\n"
    "    const uint at = (uint)(size_t)(stage + lane);\n"
    "    asm volatile(\"cp.async.cg.shared.global [%0], [%1], 16;\" ::\"r\"(at), \"l\"(src + lane));\n"
    "    asm volatile(\"cp.async.commit_group;\");\n"
    "    asm volatile(\"cp.async.wait_group 0;\");\n"
    "    barrier(CLK_LOCAL_MEM_FENCE);\n"
    "    copied[lane] = stage[31 - lane];\n"
    "    uint x = lane * 3u + 1u, y;\n"
    "    asm volatile(\"shfl.sync.bfly.b32 %0, %1, 4, 0x1f, 0xffffffff;\" : \"=r\"(y) : \"r\"(x));\n"
    "    shuffled[lane] = y;\n"
    "}\n";

#define CHECK(call)                                                                   \
    do {                                                                              \
        cl_int e_ = (call);                                                           \
        if (e_ != CL_SUCCESS) {                                                       \
            fprintf(stderr, "%s:%d: %s: error %d\n", __FILE__, __LINE__, #call, e_); \
            return 1;                                                                 \
        }                                                                             \
    } while (0)

/* an integer of magnitude below 2048 as fp16 bits */
static uint16_t half_of(int v)
{
    if (v == 0)
        return 0;
    const uint16_t sign = v < 0 ? 0x8000u : 0u;
    unsigned m = (unsigned)(v < 0 ? -v : v);
    int e = 0;
    while ((m >> e) > 1u)
        e++;
    /* value = 1.f x 2^e: exponent e + 15, 10 mantissa bits */
    const unsigned frac = (m << (10 - e)) & 0x3ffu;
    return (uint16_t)(sign | (unsigned)(e + 15) << 10 | frac);
}

static uint32_t pair(int lo, int hi) { return half_of(lo) | (uint32_t)half_of(hi) << 16; }

int main(void)
{
    cl_uint n_platforms = 0;
    CHECK(clGetPlatformIDs(0, NULL, &n_platforms));
    cl_platform_id platforms[16];
    CHECK(clGetPlatformIDs(n_platforms < 16 ? n_platforms : 16, platforms, NULL));
    cl_device_id dev = NULL;
    for (cl_uint p = 0; p < n_platforms && p < 16 && !dev; p++) {
        cl_uint n = 0;
        if (clGetDeviceIDs(platforms[p], CL_DEVICE_TYPE_GPU, 1, &dev, &n) != CL_SUCCESS || !n)
            dev = NULL;
    }
    for (cl_uint p = 0; p < n_platforms && p < 16 && !dev; p++) {
        cl_uint n = 0;
        if (clGetDeviceIDs(platforms[p], CL_DEVICE_TYPE_ALL, 1, &dev, &n) != CL_SUCCESS || !n)
            dev = NULL;
    }
    if (!dev) {
        printf("no OpenCL device\n");
        return 0;
    }
    char name[256] = "", version[256] = "";
    clGetDeviceInfo(dev, CL_DEVICE_NAME, sizeof name, name, NULL);
    clGetDeviceInfo(dev, CL_DRIVER_VERSION, sizeof version, version, NULL);
    cl_uint cc_major = 0, cc_minor = 0;
    const int nv = clGetDeviceInfo(dev, CL_DEVICE_COMPUTE_CAPABILITY_MAJOR_NV, sizeof cc_major, &cc_major, NULL) ==
                   CL_SUCCESS;
    if (nv)
        clGetDeviceInfo(dev, CL_DEVICE_COMPUTE_CAPABILITY_MINOR_NV, sizeof cc_minor, &cc_minor, NULL);
    printf("device %s (driver %s)", name, version);
    if (nv)
        printf(", compute capability %u.%u", cc_major, cc_minor);
    printf("\n");

    cl_int err;
    cl_context ctx = clCreateContext(NULL, 1, &dev, NULL, NULL, &err);
    CHECK(err);
    cl_command_queue q = clCreateCommandQueue(ctx, dev, 0, &err);
    CHECK(err);
    cl_program prog = clCreateProgramWithSource(ctx, 1, &source, NULL, &err);
    CHECK(err);
    const cl_int built = clBuildProgram(prog, 1, &dev, "", NULL, NULL);
    size_t log_size = 0;
    clGetProgramBuildInfo(prog, dev, CL_PROGRAM_BUILD_LOG, 0, NULL, &log_size);
    char *log = calloc(1, log_size + 1);
    if (log && log_size)
        clGetProgramBuildInfo(prog, dev, CL_PROGRAM_BUILD_LOG, log_size, log, NULL);
    printf("build: %s; log: %s\n", built == CL_SUCCESS ? "ok" : "refused", log && log[0] ? log : "(empty)");
    free(log);
    if (built != CL_SUCCESS) {
        printf("RESULT: this device's compiler does not take the inline PTX (error %d)\n", built);
        return 0;
    }
    cl_kernel k = clCreateKernel(prog, "probe", &err);
    CHECK(err);

    /* A (16 x 16) and B (16 x 8) of small integers, in the fragment layouts
     * of mma.m16n8k16 (PTX ISA, "Matrix fragments for mma.m16n8k16"):
     * lane l = 4 g + t holds A[g][2t..2t+1], A[g+8][2t..], A[g][2t+8..],
     * A[g+8][2t+8..] and B[2t..2t+1][g], B[2t+8..2t+9][g]; D[g][2t..2t+1],
     * D[g+8][2t..2t+1] */
    int A[16][16], B[16][8];
    for (int r = 0; r < 16; r++)
        for (int c = 0; c < 16; c++)
            A[r][c] = (r * 7 + c * 3) % 11 - 5;
    for (int r = 0; r < 16; r++)
        for (int c = 0; c < 8; c++)
            B[r][c] = (r * 5 + c * 13) % 9 - 4;
    uint32_t ha[128], hb[64];
    for (int l = 0; l < 32; l++) {
        const int g = l >> 2, t = l & 3;
        ha[4 * l] = pair(A[g][2 * t], A[g][2 * t + 1]);
        ha[4 * l + 1] = pair(A[g + 8][2 * t], A[g + 8][2 * t + 1]);
        ha[4 * l + 2] = pair(A[g][2 * t + 8], A[g][2 * t + 9]);
        ha[4 * l + 3] = pair(A[g + 8][2 * t + 8], A[g + 8][2 * t + 9]);
        hb[2 * l] = pair(B[2 * t][g], B[2 * t + 1][g]);
        hb[2 * l + 1] = pair(B[2 * t + 8][g], B[2 * t + 9][g]);
    }
    uint32_t src[128];
    for (int i = 0; i < 128; i++)
        src[i] = 0x9e3779b9u * (uint32_t)(i + 1);
    cl_mem da = clCreateBuffer(ctx, CL_MEM_READ_ONLY | CL_MEM_COPY_HOST_PTR, sizeof ha, ha, &err);
    CHECK(err);
    cl_mem db = clCreateBuffer(ctx, CL_MEM_READ_ONLY | CL_MEM_COPY_HOST_PTR, sizeof hb, hb, &err);
    CHECK(err);
    cl_mem dd = clCreateBuffer(ctx, CL_MEM_WRITE_ONLY, 128 * sizeof(float), NULL, &err);
    CHECK(err);
    cl_mem ds = clCreateBuffer(ctx, CL_MEM_READ_ONLY | CL_MEM_COPY_HOST_PTR, sizeof src, src, &err);
    CHECK(err);
    cl_mem dc = clCreateBuffer(ctx, CL_MEM_WRITE_ONLY, sizeof src, NULL, &err);
    CHECK(err);
    cl_mem dx = clCreateBuffer(ctx, CL_MEM_WRITE_ONLY, 32 * sizeof(uint32_t), NULL, &err);
    CHECK(err);
    cl_mem args[6] = { da, db, dd, ds, dc, dx };
    for (cl_uint i = 0; i < 6; i++)
        CHECK(clSetKernelArg(k, i, sizeof(cl_mem), &args[i]));
    const size_t global = 32, local = 32;
    CHECK(clEnqueueNDRangeKernel(q, k, 1, NULL, &global, &local, 0, NULL, NULL));
    float d[128];
    uint32_t copied[128], shuffled[32];
    CHECK(clEnqueueReadBuffer(q, dd, CL_TRUE, 0, sizeof d, d, 0, NULL, NULL));
    CHECK(clEnqueueReadBuffer(q, dc, CL_TRUE, 0, sizeof copied, copied, 0, NULL, NULL));
    CHECK(clEnqueueReadBuffer(q, dx, CL_TRUE, 0, sizeof shuffled, shuffled, 0, NULL, NULL));

    int bad_mma = 0, bad_copy = 0, bad_shfl = 0;
    for (int l = 0; l < 32; l++) {
        const int g = l >> 2, t = l & 3;
        const int rows[4] = { g, g, g + 8, g + 8 }, cols[4] = { 2 * t, 2 * t + 1, 2 * t, 2 * t + 1 };
        for (int i = 0; i < 4; i++) {
            int want = 0;
            for (int kk = 0; kk < 16; kk++)
                want += A[rows[i]][kk] * B[kk][cols[i]];
            bad_mma += d[4 * l + i] != (float)want;
        }
        for (int i = 0; i < 4; i++)
            bad_copy += copied[4 * l + i] != src[4 * (31 - l) + i];
        bad_shfl += shuffled[l] != (uint32_t)((l ^ 4) * 3 + 1);
    }
    printf("mma.m16n8k16: %d of 128 outputs wrong; cp.async: %d of 128 words wrong; shfl.bfly: %d of 32 wrong\n",
           bad_mma, bad_copy, bad_shfl);
    printf("RESULT: %s\n", bad_mma || bad_copy || bad_shfl ? "wrong results" : "all three work");
    return 0;
}
