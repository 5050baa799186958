/* SPDX-License-Identifier: MIT */
/*
 * `turbokv bench --per-token`: what one decode step costs an engine that
 * lives on the GPU, per layer, in two modes measured in one run on the same
 * device, context and cache:
 *
 *   per-call   today's host-array calls: per layer, tkv_cache_append of one
 *              token (host k, v) and tkv_attention (host q, out), each
 *              synchronous (the attention waits for its output);
 *   per-token  the host's own device (docs/api.md, "The host's own
 *              device"): k, v, q and out are the host's cl_mem buffers, the
 *              append and attention of every layer are queued on the host's
 *              queue without a wait, and the step ends with one clFinish.
 *
 * Both are wall-clock time of a whole step divided by the layers, median of
 * the steps. Beside them, the attention's device time as the plugin reports
 * it (device_ns of the per-call attentions: the kernel alone with
 * TURBO_OCL_KERNEL_NS=1, else its transfers included), and the ratio of the
 * per-token cost to it. The bench owns its OpenCL context (the first GPU,
 * else the first device), as a host engine would; the cache holds the
 * preset's kv heads in every layer, filled to each context length.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "tool.h"

#if TKV_BENCH_OPENCL
#define CL_TARGET_OPENCL_VERSION 120
#include <CL/cl.h>

#define WARMUP_STEPS 3
#define STEPS 15
#define FILL_CHUNK 256u

static double now_us(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec * 1e6 + t.tv_nsec * 1e-3;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static uint64_t rng = 0x746f6b656eull; /* "token" */

static float gauss(void)
{
    rng = rng * 6364136223846793005ull + 1442695040888963407ull;
    double u1 = ((rng >> 11) + 1.0) / 9007199254740993.0;
    rng = rng * 6364136223846793005ull + 1442695040888963407ull;
    double u2 = (rng >> 11) / 9007199254740992.0;
    return (float)(sqrt(-2.0 * log(u1)) * cos(6.283185307179586 * u2));
}

static int pick_device(cl_device_id *dev)
{
    cl_platform_id plats[8];
    cl_uint n_plat = 0;
    if (clGetPlatformIDs(8, plats, &n_plat) != CL_SUCCESS || n_plat == 0)
        return -1;
    for (int pass = 0; pass < 2; pass++)
        for (cl_uint p = 0; p < n_plat && p < 8; p++) {
            cl_uint n = 0;
            if (clGetDeviceIDs(plats[p], pass ? CL_DEVICE_TYPE_ALL : CL_DEVICE_TYPE_GPU, 1, dev, &n) == CL_SUCCESS &&
                n)
                return 0;
        }
    return -1;
}

struct token_run {
    uint32_t type, ctx;
    double call_us, token_us, dev_us;
};

static int measure(tkv_context *tc, cl_context cc, cl_command_queue q, uint32_t type, uint32_t ctx, uint32_t layers,
                   uint32_t q_heads, uint32_t kv_heads, uint32_t head_dim, struct token_run *r)
{
    const uint32_t steps = WARMUP_STEPS + STEPS;
    const size_t row = (size_t)kv_heads * head_dim, qrow = (size_t)q_heads * head_dim;
    struct tkv_cache_params p = {
        .struct_size = sizeof p, .n_layers = layers, .n_kv_heads = kv_heads, .head_dim = head_dim,
        .capacity = ctx + 2 * steps, .k_type = type, .v_type = type, .n_q_heads = q_heads,
    };
    tkv_cache *c = NULL;
    float *k = malloc(sizeof *k * FILL_CHUNK * row), *v = malloc(sizeof *v * FILL_CHUNK * row);
    float *hq = malloc(sizeof *hq * qrow), *ho = malloc(sizeof *ho * qrow);
    float *dev_init = malloc(sizeof *dev_init * layers * (2 * row + qrow));
    double *call = malloc(sizeof *call * steps), *tok = malloc(sizeof *tok * steps), *dev = malloc(sizeof *dev * steps);
    cl_mem in = NULL, out = NULL;
    int rc = -1;
    if (!k || !v || !hq || !ho || !dev_init || !call || !tok || !dev)
        goto done;
    for (size_t i = 0; i < FILL_CHUNK * row; i++) {
        k[i] = 10.0f * gauss();
        v[i] = gauss();
    }
    for (size_t i = 0; i < qrow; i++)
        hq[i] = gauss();
    for (size_t i = 0; i < layers * (2 * row + qrow); i++)
        dev_init[i] = gauss();
    if (tkv_cache_create(tc, &p, &c) != TKV_OK)
        goto fail;
    for (uint32_t l = 0; l < layers; l++)
        for (uint32_t t = 0; t < ctx; t += FILL_CHUNK)
            if (tkv_cache_append(c, 0, l, ctx - t < FILL_CHUNK ? ctx - t : FILL_CHUNK, k, v) != TKV_OK)
                goto fail;
    cl_int err;
    const size_t in_bytes = sizeof(float) * layers * (2 * row + qrow), out_bytes = sizeof(float) * layers * qrow;
    in = clCreateBuffer(cc, CL_MEM_READ_WRITE | CL_MEM_COPY_HOST_PTR, in_bytes, dev_init, &err);
    if (err == CL_SUCCESS)
        out = clCreateBuffer(cc, CL_MEM_READ_WRITE, out_bytes, NULL, &err);
    if (err != CL_SUCCESS) {
        fprintf(stderr, "turbokv bench: clCreateBuffer failed (%d)\n", (int)err);
        goto done;
    }
    uint32_t seq = 0, one = 1;
    for (uint32_t s = 0; s < steps; s++) {
        /* per-call: host arrays, each call synchronous */
        double dev_ns = 0, t0 = now_us();
        for (uint32_t l = 0; l < layers; l++) {
            uint64_t ns = 0;
            struct tkv_attention_options o = { .struct_size = sizeof o, .device_ns = &ns };
            if (tkv_cache_append(c, 0, l, 1, k + (s % FILL_CHUNK) * row, v + (s % FILL_CHUNK) * row) != TKV_OK ||
                tkv_attention_ex(c, l, 1, &seq, &one, q_heads, hq, ho, &o) != TKV_OK)
                goto fail;
            dev_ns += (double)ns;
        }
        call[s] = (now_us() - t0) / layers;
        dev[s] = dev_ns / 1e3 / layers;
        /* per-token: the host's buffers, everything queued, one finish */
        t0 = now_us();
        for (uint32_t l = 0; l < layers; l++) {
            const uint64_t at = sizeof(float) * l * (2 * row + qrow);
            struct tkv_tensor tk = { .struct_size = sizeof tk, .memory = TKV_MEMORY_OPENCL,
                                     .handle = (uint64_t)(uintptr_t)in, .offset = at, .size = in_bytes };
            struct tkv_tensor tv = tk, tq = tk, to = tk;
            tv.offset = at + sizeof(float) * row;
            tq.offset = at + 2 * sizeof(float) * row;
            to.handle = (uint64_t)(uintptr_t)out;
            to.offset = sizeof(float) * l * qrow;
            to.size = out_bytes;
            if (tkv_cache_append_tensors(c, 0, l, 1, &tk, &tv) != TKV_OK ||
                tkv_attention_tensors(c, l, 1, &seq, &one, q_heads, &tq, &to, NULL) != TKV_OK)
                goto fail;
        }
        if ((err = clFinish(q)) != CL_SUCCESS) {
            fprintf(stderr, "turbokv bench: clFinish failed (%d)\n", (int)err);
            goto done;
        }
        tok[s] = (now_us() - t0) / layers;
    }
    qsort(call + WARMUP_STEPS, STEPS, sizeof *call, cmp_double);
    qsort(tok + WARMUP_STEPS, STEPS, sizeof *tok, cmp_double);
    qsort(dev + WARMUP_STEPS, STEPS, sizeof *dev, cmp_double);
    *r = (struct token_run){ .type = type, .ctx = ctx, .call_us = call[WARMUP_STEPS + STEPS / 2],
                             .token_us = tok[WARMUP_STEPS + STEPS / 2], .dev_us = dev[WARMUP_STEPS + STEPS / 2] };
    rc = 0;
    goto done;
fail:
    fprintf(stderr, "turbokv bench: %s\n", tkv_last_error());
done:
    if (in)
        clReleaseMemObject(in);
    if (out)
        clReleaseMemObject(out);
    tkv_cache_destroy(c);
    free(k);
    free(v);
    free(hq);
    free(ho);
    free(dev_init);
    free(call);
    free(tok);
    free(dev);
    return rc;
}

int tool_bench_token(const uint32_t *types, int n_types, const uint32_t *ctx, int n_ctx, uint32_t layers,
                     uint32_t q_heads, uint32_t kv_heads, uint32_t head_dim, int json)
{
    cl_device_id dev;
    cl_int err;
    if (pick_device(&dev) != 0) {
        fprintf(stderr, "turbokv bench --per-token: no OpenCL device\n");
        return 1;
    }
    cl_context cc = clCreateContext(NULL, 1, &dev, NULL, NULL, &err);
    if (err != CL_SUCCESS) {
        fprintf(stderr, "turbokv bench --per-token: clCreateContext failed (%d)\n", (int)err);
        return 1;
    }
    /* in order, with profiling: the per-call attentions report device_ns */
    cl_command_queue q = clCreateCommandQueue(cc, dev, CL_QUEUE_PROFILING_ENABLE, &err);
    if (err != CL_SUCCESS) {
        fprintf(stderr, "turbokv bench --per-token: clCreateCommandQueue failed (%d)\n", (int)err);
        clReleaseContext(cc);
        return 1;
    }
    struct tkv_host_device h = {
        .struct_size = sizeof h, .backend = TKV_HOST_OPENCL, .opencl = { .context = cc, .device = dev, .queue = q },
    };
    struct tkv_context_options o = { .struct_size = sizeof o, .host_device = &h };
    tkv_context *tc = NULL;
    int rc = 0;
    if (tkv_context_open(&o, &tc) != TKV_OK) {
        fprintf(stderr, "turbokv bench --per-token: %s\n", tkv_last_error());
        rc = 1;
    }
    struct token_run runs[16 * 16];
    int n = 0;
    for (int ti = 0; ti < n_types && rc == 0; ti++)
        for (int ci = 0; ci < n_ctx && rc == 0; ci++) {
            tool_progress("bench", (uint64_t)(ti * n_ctx + ci + 1), (uint64_t)(n_types * n_ctx));
            rc = measure(tc, cc, q, types[ti], ctx[ci], layers, q_heads, kv_heads, head_dim, &runs[n]) ? 1 : 0;
            n += rc == 0;
        }
    tool_progress_end();
    if (rc == 0 && json) {
        printf("[");
        for (int i = 0; i < n; i++)
            printf("%s\n {\"kind\": \"per-token\", \"device\": \"%s\", \"type\": \"%s\", \"ctx\": %u, \"layers\": %u, "
                   "\"per_call_us\": %.2f, \"per_token_us\": %.2f, \"attention_device_us\": %.2f}",
                   i ? "," : "", tkv_context_device(tc), tkv_type_name(runs[i].type), runs[i].ctx, layers,
                   runs[i].call_us, runs[i].token_us, runs[i].dev_us);
        printf("\n]\n");
    } else if (rc == 0) {
        printf("turbokv bench --per-token: opencl on the host's device %s; %u layers, %u query heads, %u kv heads, "
               "head_dim %u, one sequence; us per layer (append one token + attention), median of %d steps\n",
               tkv_context_device(tc), layers, q_heads, kv_heads, head_dim, STEPS);
        printf("%-8s %8s %13s %13s %16s %10s %10s\n", "type", "ctx", "per-call us", "per-token us",
               "attn device us", "token/dev", "call/token");
        for (int i = 0; i < n; i++) {
            printf("%-8s %8u %13.1f %13.1f %16.1f ", tkv_type_name(runs[i].type), runs[i].ctx, runs[i].call_us,
                   runs[i].token_us, runs[i].dev_us);
            if (runs[i].dev_us > 0)
                printf("%9.2fx", runs[i].token_us / runs[i].dev_us);
            else
                printf("%10s", "-");
            printf(" %9.2fx\n", runs[i].call_us / runs[i].token_us);
        }
    }
    tkv_context_close(tc);
    clReleaseCommandQueue(q);
    clReleaseContext(cc);
    return rc;
}
#else
int tool_bench_token(const uint32_t *types, int n_types, const uint32_t *ctx, int n_ctx, uint32_t layers,
                     uint32_t q_heads, uint32_t kv_heads, uint32_t head_dim, int json)
{
    (void)types, (void)n_types, (void)ctx, (void)n_ctx, (void)layers, (void)q_heads, (void)kv_heads;
    (void)head_dim, (void)json;
    fprintf(stderr, "turbokv bench --per-token: this build has no OpenCL (the per-token mode owns an OpenCL "
                    "context, as a host engine would)\n");
    return 1;
}
#endif
