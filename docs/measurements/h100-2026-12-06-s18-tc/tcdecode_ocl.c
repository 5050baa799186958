/* SPDX-License-Identifier: MIT */
/*
 * Session 18: runs tcdecode.cl (tcdecode.cu's multi_kernel in OpenCL C with
 * inline PTX) on an NVIDIA OpenCL device with tcdecode.cu's data: turbo3
 * rows of head_dim 128 in shuffled pool blocks, 8 kv heads of 4 query heads,
 * 1, 2 and 4 query tokens. Checks every output row against an fp64
 * reference (up to 16K; at longer contexts the first token's rows) and
 * times partial + merge by OpenCL profiling events (median of 100 calls
 * after 300 ms of calls). NOT YET RUN on a GPU (no device time was left in
 * session 18). Not part of the library.
 *
 *   cc -O2 -o tcdecode_ocl tcdecode_ocl.c -lOpenCL -lm
 *   ./tcdecode_ocl tcdecode.cl 4096,16384,131072
 */
#define CL_TARGET_OPENCL_VERSION 120
#include <CL/cl.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define HD 128u
#define RB 50u
#define W 4u
#define RATIO 4u
#define N_KV 8u
#define BLOCK_TOKENS 256u
#define BLOCK_SHIFT 8u

#define CHECK(call)                                                                   \
    do {                                                                              \
        cl_int e_ = (call);                                                           \
        if (e_ != CL_SUCCESS) {                                                       \
            fprintf(stderr, "%s:%d: %s: error %d\n", __FILE__, __LINE__, #call, e_); \
            exit(1);                                                                  \
        }                                                                             \
    } while (0)

static uint64_t rng = 0x9e3779b97f4a7c15ull;
static uint32_t next_u32(void)
{
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return (uint32_t)(rng >> 11);
}
static float uniform(void) { return ((float)next_u32() + 0.5f) / 4294967296.0f; }
static float gauss(void) { return sqrtf(-2.0f * logf(uniform())) * cosf(6.2831853f * uniform()); }

/* fp16 bits of x in [0.5, 2) (the scales; exact rounding is not needed) */
static uint16_t half_bits(float x)
{
    int e;
    const float m = frexpf(x, &e); /* x = m 2^e, m in [0.5, 1) */
    const unsigned frac = (unsigned)lrintf((m * 2.0f - 1.0f) * 1024.0f);
    return (uint16_t)((unsigned)(e - 1 + 15) << 10 | (frac & 0x3ffu)) + (uint16_t)((frac >> 10) << 10);
}
static float half_value(const uint8_t *p)
{
    const unsigned h = p[0] | (unsigned)p[1] << 8, e = (h >> 10) & 31u, f = h & 0x3ffu;
    return ldexpf(1.0f + (float)f / 1024.0f, (int)e - 15); /* normal values only (the scales) */
}
static unsigned idx_at(const uint8_t *row, unsigned d)
{
    const unsigned b = 16u + 3u * d;
    const unsigned v = row[b / 8] | (unsigned)row[b / 8 + 1] << 8;
    return (v >> (b % 8)) & 7u;
}

static char *read_file(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return NULL;
    fseek(f, 0, SEEK_END);
    const long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *s = malloc((size_t)n + 1);
    if (s && fread(s, 1, (size_t)n, f) != (size_t)n) {
        free(s);
        s = NULL;
    }
    fclose(f);
    if (s)
        s[n] = 0;
    *len = (size_t)n;
    return s;
}

static int cmp_float(const void *a, const void *b)
{
    const float x = *(const float *)a, y = *(const float *)b;
    return (x > y) - (x < y);
}

int main(int argc, char **argv)
{
    const char *cl_path = argc > 1 ? argv[1] : "tcdecode.cl";
    const char *ctxs = argc > 2 ? argv[2] : "4096,16384,131072";
    size_t src_len = 0;
    char *src = read_file(cl_path, &src_len);
    if (!src) {
        fprintf(stderr, "cannot read %s\n", cl_path);
        return 1;
    }
    cl_uint np = 0;
    CHECK(clGetPlatformIDs(0, NULL, &np));
    cl_platform_id plats[16];
    CHECK(clGetPlatformIDs(np < 16 ? np : 16, plats, NULL));
    cl_device_id dev = NULL;
    for (cl_uint p = 0; p < np && p < 16 && !dev; p++) {
        cl_uint n = 0;
        if (clGetDeviceIDs(plats[p], CL_DEVICE_TYPE_GPU, 1, &dev, &n) != CL_SUCCESS || !n)
            dev = NULL;
    }
    if (!dev) {
        printf("RESULT: no OpenCL GPU\n");
        return 0;
    }
    char name[256] = "";
    clGetDeviceInfo(dev, CL_DEVICE_NAME, sizeof name, name, NULL);
    cl_uint cus = 0;
    clGetDeviceInfo(dev, CL_DEVICE_MAX_COMPUTE_UNITS, sizeof cus, &cus, NULL);
    printf("device %s, %u compute units\n", name, cus);
    cl_int err;
    cl_context ctx = clCreateContext(NULL, 1, &dev, NULL, NULL, &err);
    CHECK(err);
    cl_command_queue q = clCreateCommandQueue(ctx, dev, CL_QUEUE_PROFILING_ENABLE, &err);
    CHECK(err);
    const unsigned toks[3] = { 1, 2, 4 };
    cl_program progs[3];
    cl_kernel kp[3], km[3];
    for (int v = 0; v < 3; v++) {
        char opts[64];
        snprintf(opts, sizeof opts, "-DTOK=%u", toks[v]);
        const char *s = src;
        progs[v] = clCreateProgramWithSource(ctx, 1, &s, &src_len, &err);
        CHECK(err);
        const cl_int built = clBuildProgram(progs[v], 1, &dev, opts, NULL, NULL);
        size_t log_size = 0;
        clGetProgramBuildInfo(progs[v], dev, CL_PROGRAM_BUILD_LOG, 0, NULL, &log_size);
        char *log = calloc(1, log_size + 1);
        if (log && log_size)
            clGetProgramBuildInfo(progs[v], dev, CL_PROGRAM_BUILD_LOG, log_size, log, NULL);
        printf("build %s: %s; log: %s\n", opts, built == CL_SUCCESS ? "ok" : "refused", log && log[0] ? log : "(empty)");
        free(log);
        if (built != CL_SUCCESS) {
            printf("RESULT: the program did not build (error %d)\n", built);
            return 0;
        }
        kp[v] = clCreateKernel(progs[v], "partial", &err);
        CHECK(err);
        km[v] = clCreateKernel(progs[v], "merge", &err);
        CHECK(err);
    }
    /* Lloyd-Max for N(0, 1/128), 8 levels, as tcdecode.cu */
    const float lm[4] = { 0.2451f, 0.7560f, 1.3439f, 2.1520f };
    float cent[8];
    for (int i = 0; i < 4; i++) {
        cent[3 - i] = -lm[i] / sqrtf(128.0f);
        cent[4 + i] = lm[i] / sqrtf(128.0f);
    }
    char list[256];
    snprintf(list, sizeof list, "%s", ctxs);
    for (char *tok = strtok(list, ","); tok; tok = strtok(NULL, ",")) {
        const uint32_t n_ctx = (uint32_t)atoi(tok), n_blocks = (n_ctx + BLOCK_TOKENS - 1) / BLOCK_TOKENS;
        const uint64_t head_stride = (uint64_t)BLOCK_TOKENS * RB, block_stride = head_stride * N_KV;
        const size_t pool = (size_t)(block_stride * n_blocks + 64);
        uint8_t *hk = malloc(pool), *hv = malloc(pool);
        uint32_t *hb = malloc(n_blocks * sizeof *hb);
        for (uint32_t i = 0; i < n_blocks; i++)
            hb[i] = i;
        for (uint32_t i = n_blocks; i > 1; i--) {
            const uint32_t j = next_u32() % i, x = hb[i - 1];
            hb[i - 1] = hb[j];
            hb[j] = x;
        }
        for (size_t i = 0; i < pool; i++) {
            hk[i] = (uint8_t)next_u32();
            hv[i] = (uint8_t)next_u32();
        }
        for (uint32_t b = 0; b < n_blocks; b++)
            for (uint32_t h = 0; h < N_KV; h++)
                for (uint32_t j = 0; j < BLOCK_TOKENS; j++) {
                    uint8_t *rk = hk + b * block_stride + h * head_stride + j * RB;
                    uint8_t *rv = hv + b * block_stride + h * head_stride + j * RB;
                    const uint16_t x = half_bits(0.5f + 1.5f * uniform()), y = half_bits(0.5f + 1.5f * uniform());
                    rk[0] = x & 255u, rk[1] = x >> 8, rv[0] = y & 255u, rv[1] = y >> 8;
                }
        const uint32_t n_rows = 4 * N_KV * RATIO; /* 4 tokens' query rows */
        float *hq = malloc(n_rows * HD * sizeof *hq);
        for (uint32_t i = 0; i < n_rows * HD; i++)
            hq[i] = 4.0f * gauss();
        const float scale = 1.0f / sqrtf((float)HD);
        /* the reference, fp64 */
        const uint32_t n_ref = (n_ctx <= 16384 ? 4 : 1) * N_KV * RATIO;
        double *ref = malloc((size_t)n_ref * HD * sizeof *ref), *ref_max = malloc(n_ref * sizeof *ref_max);
        double *sc = malloc(n_ctx * sizeof *sc);
        for (uint32_t r = 0; r < n_ref; r++) {
            const uint32_t h = (r % (N_KV * RATIO)) / RATIO;
            double big = -1e300, sum = 0.0, o[HD] = { 0 };
            for (uint32_t j = 0; j < n_ctx; j++) {
                const uint8_t *row = hk + hb[j / BLOCK_TOKENS] * block_stride + h * head_stride + (j % BLOCK_TOKENS) * RB;
                double s = 0.0;
                for (unsigned d = 0; d < HD; d++)
                    s += (double)hq[r * HD + d] * cent[idx_at(row, d)];
                sc[j] = s * half_value(row) * scale;
                big = sc[j] > big ? sc[j] : big;
            }
            for (uint32_t j = 0; j < n_ctx; j++) {
                const uint8_t *row = hv + hb[j / BLOCK_TOKENS] * block_stride + h * head_stride + (j % BLOCK_TOKENS) * RB;
                const double p = exp(sc[j] - big), sv = half_value(row);
                sum += p;
                for (unsigned d = 0; d < HD; d++)
                    o[d] += p * sv * cent[idx_at(row, d)];
            }
            double mx = 0.0;
            for (unsigned d = 0; d < HD; d++) {
                ref[r * HD + d] = o[d] / sum;
                mx = fabs(o[d] / sum) > mx ? fabs(o[d] / sum) : mx;
            }
            ref_max[r] = mx;
        }
        /* one wave of 3 work-groups a compute unit (tcdecode.cu's multi_kernel ran 3-4) */
        uint32_t per_head = 3u * cus / N_KV;
        per_head = per_head ? per_head : 1u;
        uint32_t chunk = (n_ctx + per_head - 1) / per_head;
        chunk = (chunk + 16 * W - 1) / (16 * W) * (16 * W);
        const uint32_t n_chunks = (n_ctx + chunk - 1) / chunk, parts = n_chunks * W;
        cl_mem dk = clCreateBuffer(ctx, CL_MEM_READ_ONLY | CL_MEM_COPY_HOST_PTR, pool, hk, &err);
        CHECK(err);
        cl_mem dv = clCreateBuffer(ctx, CL_MEM_READ_ONLY | CL_MEM_COPY_HOST_PTR, pool, hv, &err);
        CHECK(err);
        cl_mem db = clCreateBuffer(ctx, CL_MEM_READ_ONLY | CL_MEM_COPY_HOST_PTR, n_blocks * 4, hb, &err);
        CHECK(err);
        cl_mem dq = clCreateBuffer(ctx, CL_MEM_READ_ONLY | CL_MEM_COPY_HOST_PTR, n_rows * HD * 4, hq, &err);
        CHECK(err);
        cl_mem dc = clCreateBuffer(ctx, CL_MEM_READ_ONLY | CL_MEM_COPY_HOST_PTR, sizeof cent, cent, &err);
        CHECK(err);
        cl_mem dpo = clCreateBuffer(ctx, CL_MEM_READ_WRITE, (size_t)n_rows * parts * HD * 4, NULL, &err);
        CHECK(err);
        cl_mem dpm = clCreateBuffer(ctx, CL_MEM_READ_WRITE, (size_t)n_rows * parts * 2 * 4, NULL, &err);
        CHECK(err);
        cl_mem dout = clCreateBuffer(ctx, CL_MEM_READ_WRITE, (size_t)n_rows * HD * 4, NULL, &err);
        CHECK(err);
        const cl_uint bshift = BLOCK_SHIFT, ctx_n = n_ctx, nkv = N_KV, cr = chunk, pa = parts;
        const cl_ulong bs = block_stride, hs = head_stride;
        const float sl2 = scale * 1.4426950408889634f;
        for (int v = 0; v < 3; v++) {
            cl_kernel k = kp[v];
            CHECK(clSetKernelArg(k, 0, sizeof dk, &dk));
            CHECK(clSetKernelArg(k, 1, sizeof dv, &dv));
            CHECK(clSetKernelArg(k, 2, sizeof db, &db));
            CHECK(clSetKernelArg(k, 3, sizeof bshift, &bshift));
            CHECK(clSetKernelArg(k, 4, sizeof bs, &bs));
            CHECK(clSetKernelArg(k, 5, sizeof hs, &hs));
            CHECK(clSetKernelArg(k, 6, sizeof dq, &dq));
            CHECK(clSetKernelArg(k, 7, sizeof dc, &dc));
            CHECK(clSetKernelArg(k, 8, sizeof ctx_n, &ctx_n));
            CHECK(clSetKernelArg(k, 9, sizeof nkv, &nkv));
            CHECK(clSetKernelArg(k, 10, sizeof cr, &cr));
            CHECK(clSetKernelArg(k, 11, sizeof pa, &pa));
            CHECK(clSetKernelArg(k, 12, sizeof sl2, &sl2));
            CHECK(clSetKernelArg(k, 13, sizeof dpo, &dpo));
            CHECK(clSetKernelArg(k, 14, sizeof dpm, &dpm));
            CHECK(clSetKernelArg(km[v], 0, sizeof dpo, &dpo));
            CHECK(clSetKernelArg(km[v], 1, sizeof dpm, &dpm));
            CHECK(clSetKernelArg(km[v], 2, sizeof pa, &pa));
            CHECK(clSetKernelArg(km[v], 3, sizeof dout, &dout));
            const size_t gp[2] = { (size_t)n_chunks * 128, N_KV }, lp[2] = { 128, 1 };
            const size_t gm = (size_t)toks[v] * N_KV * RATIO * HD, lm_ = HD;
            cl_event e0, e1;
            /* a first call, checked */
            CHECK(clEnqueueNDRangeKernel(q, k, 2, NULL, gp, lp, 0, NULL, NULL));
            CHECK(clEnqueueNDRangeKernel(q, km[v], 1, NULL, &gm, &lm_, 0, NULL, NULL));
            const uint32_t rows = toks[v] * N_KV * RATIO < n_ref ? toks[v] * N_KV * RATIO : n_ref;
            float *got = malloc((size_t)rows * HD * 4);
            CHECK(clEnqueueReadBuffer(q, dout, CL_TRUE, 0, (size_t)rows * HD * 4, got, 0, NULL, NULL));
            double worst = 0.0, worst_rel = 0.0;
            for (uint32_t i = 0; i < rows * HD; i++) {
                const double e = fabs(got[i] - ref[i]);
                worst = e > worst ? e : worst;
                worst_rel = e / ref_max[i / HD] > worst_rel ? e / ref_max[i / HD] : worst_rel;
            }
            free(got);
            /* 300 ms of calls, then 100 timed by their events */
            struct timespec t0, t1;
            clock_gettime(CLOCK_MONOTONIC, &t0);
            do {
                for (int i = 0; i < 20; i++) {
                    CHECK(clEnqueueNDRangeKernel(q, k, 2, NULL, gp, lp, 0, NULL, NULL));
                    CHECK(clEnqueueNDRangeKernel(q, km[v], 1, NULL, &gm, &lm_, 0, NULL, NULL));
                }
                CHECK(clFinish(q));
                clock_gettime(CLOCK_MONOTONIC, &t1);
            } while ((t1.tv_sec - t0.tv_sec) * 1e3 + (t1.tv_nsec - t0.tv_nsec) * 1e-6 < 300.0);
            float times[100];
            for (int i = 0; i < 100; i++) {
                CHECK(clEnqueueNDRangeKernel(q, k, 2, NULL, gp, lp, 0, NULL, &e0));
                CHECK(clEnqueueNDRangeKernel(q, km[v], 1, NULL, &gm, &lm_, 0, NULL, &e1));
                CHECK(clWaitForEvents(1, &e1));
                cl_ulong a = 0, b = 0;
                clGetEventProfilingInfo(e0, CL_PROFILING_COMMAND_START, sizeof a, &a, NULL);
                clGetEventProfilingInfo(e1, CL_PROFILING_COMMAND_END, sizeof b, &b, NULL);
                times[i] = (float)(b - a) * 1e-3f;
                clReleaseEvent(e0);
                clReleaseEvent(e1);
            }
            qsort(times, 100, sizeof times[0], cmp_float);
            printf("ctx %7u chunk %5u parts %4u, %u token%s: median %.2f us (min %.2f) partial + merge; max error %.3g "
                   "(%.3g of the row's largest)\n",
                   n_ctx, chunk, parts, toks[v], toks[v] > 1 ? "s" : "", times[50], times[0], worst, worst_rel);
        }
        clReleaseMemObject(dk), clReleaseMemObject(dv), clReleaseMemObject(db), clReleaseMemObject(dq);
        clReleaseMemObject(dc), clReleaseMemObject(dpo), clReleaseMemObject(dpm), clReleaseMemObject(dout);
        free(hk), free(hv), free(hb), free(hq), free(ref), free(ref_max), free(sc);
    }
    return 0;
}
