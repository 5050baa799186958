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
 *              device"): k, v, q and out are the host's buffers (cl_mem,
 *              VkBuffer); OpenCL: the append and attention of every layer
 *              are queued on the host's queue without a wait, and the step
 *              ends with one clFinish; Vulkan: they are recorded into one
 *              command buffer of the host's (tkv_context_set_command_buffer),
 *              submitted once, its fence waited for;
 *   fused      the per-token step with each layer's append and attention as
 *              one call, tkv_cache_append_attention (one launch a layer on
 *              OpenCL's tensor-core kernels; elsewhere the two ops).
 *
 * Both are wall-clock time of a whole step divided by the layers, median of
 * the steps. Beside them, the attention's device time as the plugin reports
 * it (device_ns of the per-call attentions: the kernel alone with
 * TURBO_OCL_KERNEL_NS=1, else its transfers included), and the ratio of the
 * per-token cost to it (Vulkan: device_ns from the queue's timestamps
 * around the whole call, its uploads included). The bench owns its OpenCL
 * context or its VkDevice (the first GPU, else the first device), as a host
 * engine would; the cache holds the preset's kv heads in every layer,
 * filled to each context length.
 *
 * After the steps, the same device's prefill: PREFILL_TOKENS tokens of K
 * and V appended to every layer from the host's buffer, queued, one wait,
 * in K/V rows (one head's K or V of one token) per second; the sequence is
 * truncated back after each.
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
#endif
#if TKV_BENCH_VULKAN
#include <vulkan/vulkan.h>
#endif

#if TKV_BENCH_OPENCL || TKV_BENCH_VULKAN
#define WARMUP_STEPS 3
#define STEPS 15
#define FILL_CHUNK 256u
/* The prefill measurement: PREFILL_TOKENS tokens appended to every layer
 * from the host's buffers, PREFILL_REPS times (the median reported) */
#define PREFILL_TOKENS 512u
#define PREFILL_REPS 5

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
/* --warm-ms: before each point's steps, this long of the point's per-call
 * attentions back to back (the GPU's clock raised), or 0 */
static uint32_t warm_ms;

static float gauss(void)
{
    rng = rng * 6364136223846793005ull + 1442695040888963407ull;
    double u1 = ((rng >> 11) + 1.0) / 9007199254740993.0;
    rng = rng * 6364136223846793005ull + 1442695040888963407ull;
    double u2 = (rng >> 11) / 9007199254740992.0;
    return (float)(sqrt(-2.0 * log(u1)) * cos(6.283185307179586 * u2));
}

struct token_run {
    uint32_t type, ctx;
    double call_us, token_us, dev_us;
    double record_us;   /* per-token: host time inside the turbokv calls */
    double step_dev_us; /* per-token: the step's device time (Vulkan timestamps around its command buffer), or 0 */
    double append_dev_us, attn_dev_us; /* per-token: the step's device time in appends / in attention, or 0 */
    double prefill_rows_s; /* device-tensor prefill: K/V rows appended a second */
    double fused_us;       /* the per-token step by tkv_cache_append_attention */
    double fused_record_us, fused_dev_us; /* of it: host time inside the calls; device time, or 0 */
};

/* The device's buffers of the per-token mode and a step's submission, as
 * the host's API does them. */
struct token_host {
    const char *api; /* "opencl", "vulkan" */
    const char *step_end; /* what ends a step, for the table's title */
    void *impl;
    /* in: layers x (k, v, q) f32 rows filled from init; out: layers x q rows */
    int (*buffers)(struct token_host *h, const float *init, size_t in_bytes, size_t out_bytes);
    void (*release)(struct token_host *h);
    /* the tensor at offset of the in (out = 0) or out buffer */
    struct tkv_tensor (*tensor)(struct token_host *h, int out, uint64_t offset);
    int (*step_begin)(struct token_host *h, tkv_context *tc);
    int (*step_end_fn)(struct token_host *h, tkv_context *tc);
    /* optional: a device timestamp after layer l's append (what 0) and after
     * its attention (what 1), in the step being recorded */
    void (*mark)(struct token_host *h, uint32_t layer, int what);
    double step_dev_ns; /* set by step_end_fn where the API has timestamps, else 0 */
    double append_dev_ns, attn_dev_ns; /* set by step_end_fn where marks were taken, else 0 */
};

static int measure(tkv_context *tc, struct token_host *h, uint32_t type, uint32_t ctx, uint32_t layers,
                   uint32_t q_heads, uint32_t kv_heads, uint32_t head_dim, struct token_run *r)
{
    const uint32_t steps = WARMUP_STEPS + STEPS;
    const size_t row = (size_t)kv_heads * head_dim, qrow = (size_t)q_heads * head_dim;
    struct tkv_cache_params p = {
        .struct_size = sizeof p, .n_layers = layers, .n_kv_heads = kv_heads, .head_dim = head_dim,
        .capacity = ctx + 3 * steps + PREFILL_TOKENS, .k_type = type, .v_type = type, .n_q_heads = q_heads,
    };
    tkv_cache *c = NULL;
    float *k = malloc(sizeof *k * FILL_CHUNK * row), *v = malloc(sizeof *v * FILL_CHUNK * row);
    float *hq = malloc(sizeof *hq * qrow), *ho = malloc(sizeof *ho * qrow);
    /* the host's buffer: layers x (k, v, q) rows of the steps, then the
     * prefill's k and v (PREFILL_TOKENS rows each) */
    const size_t step_floats = layers * (2 * row + qrow), in_floats = step_floats + 2 * PREFILL_TOKENS * row;
    float *dev_init = malloc(sizeof *dev_init * in_floats);
    double *call = malloc(sizeof *call * steps), *tok = malloc(sizeof *tok * steps), *dev = malloc(sizeof *dev * steps);
    double *rec = malloc(sizeof *rec * steps), *sdev = malloc(sizeof *sdev * steps);
    double *frec = malloc(sizeof *frec * steps), *fdev = malloc(sizeof *fdev * steps);
    double *adev = malloc(sizeof *adev * steps), *qdev = malloc(sizeof *qdev * steps);
    double *fus = malloc(sizeof *fus * steps);
    double pre[PREFILL_REPS];
    int rc = -1, have_buffers = 0;
    if (!k || !v || !hq || !ho || !dev_init || !call || !tok || !dev || !rec || !sdev || !adev || !qdev || !fus)
        goto done;
    for (size_t i = 0; i < FILL_CHUNK * row; i++) {
        k[i] = 10.0f * gauss();
        v[i] = gauss();
    }
    for (size_t i = 0; i < qrow; i++)
        hq[i] = gauss();
    for (size_t i = 0; i < in_floats; i++)
        dev_init[i] = gauss();
    if (tkv_cache_create(tc, &p, &c) != TKV_OK)
        goto fail;
    for (uint32_t l = 0; l < layers; l++)
        for (uint32_t t = 0; t < ctx; t += FILL_CHUNK)
            if (tkv_cache_append(c, 0, l, ctx - t < FILL_CHUNK ? ctx - t : FILL_CHUNK, k, v) != TKV_OK)
                goto fail;
    const size_t in_bytes = sizeof(float) * in_floats, out_bytes = sizeof(float) * layers * qrow;
    if (h->buffers(h, dev_init, in_bytes, out_bytes) != 0)
        goto done;
    have_buffers = 1;
    uint32_t seq = 0, one = 1;
    for (double w0 = now_us(); warm_ms && now_us() - w0 < warm_ms * 1e3;)
        for (uint32_t l = 0; l < layers; l++)
            if (tkv_attention(c, l, 1, &seq, 1, q_heads, hq, ho, NULL) != TKV_OK)
                goto fail;
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
        /* per-token: the host's buffers, every layer queued or recorded, one
         * wait */
        t0 = now_us();
        if (h->step_begin && h->step_begin(h, tc) != 0)
            goto done;
        const double t_calls = now_us();
        for (uint32_t l = 0; l < layers; l++) {
            const uint64_t at = sizeof(float) * l * (2 * row + qrow);
            struct tkv_tensor tk = h->tensor(h, 0, at), tv = h->tensor(h, 0, at + sizeof(float) * row);
            struct tkv_tensor tq = h->tensor(h, 0, at + 2 * sizeof(float) * row);
            struct tkv_tensor to = h->tensor(h, 1, sizeof(float) * l * qrow);
            if (tkv_cache_append_tensors(c, 0, l, 1, &tk, &tv) != TKV_OK)
                goto fail;
            if (h->mark)
                h->mark(h, l, 0);
            if (tkv_attention_tensors(c, l, 1, &seq, &one, q_heads, &tq, &to, NULL) != TKV_OK)
                goto fail;
            if (h->mark)
                h->mark(h, l, 1);
        }
        rec[s] = (now_us() - t_calls) / layers;
        h->step_dev_ns = h->append_dev_ns = h->attn_dev_ns = 0;
        if (h->step_end_fn(h, tc) != 0)
            goto done;
        tok[s] = (now_us() - t0) / layers;
        sdev[s] = h->step_dev_ns / 1e3 / layers;
        adev[s] = h->append_dev_ns / 1e3 / layers;
        qdev[s] = h->attn_dev_ns / 1e3 / layers;
        /* fused: the same step, each layer one tkv_cache_append_attention */
        t0 = now_us();
        if (h->step_begin && h->step_begin(h, tc) != 0)
            goto done;
        const double f_calls = now_us();
        for (uint32_t l = 0; l < layers; l++) {
            const uint64_t at = sizeof(float) * l * (2 * row + qrow);
            struct tkv_tensor tk = h->tensor(h, 0, at), tv = h->tensor(h, 0, at + sizeof(float) * row);
            struct tkv_tensor tq = h->tensor(h, 0, at + 2 * sizeof(float) * row);
            struct tkv_tensor to = h->tensor(h, 1, sizeof(float) * l * qrow);
            if (tkv_cache_append_attention(c, 0, l, 1, &tk, &tv, q_heads, &tq, &to, NULL) != TKV_OK)
                goto fail;
        }
        frec[s] = (now_us() - f_calls) / layers;
        h->step_dev_ns = h->append_dev_ns = h->attn_dev_ns = 0;
        if (h->step_end_fn(h, tc) != 0)
            goto done;
        fus[s] = (now_us() - t0) / layers;
        fdev[s] = h->step_dev_ns / 1e3 / layers;
    }
    /* prefill from the host's buffers: every layer queued, one wait */
    uint32_t len = 0;
    if (tkv_cache_length(c, 0, 0, &len) != TKV_OK)
        goto fail;
    for (int i = 0; i < PREFILL_REPS; i++) {
        const uint64_t at = sizeof(float) * step_floats;
        struct tkv_tensor tk = h->tensor(h, 0, at), tv = h->tensor(h, 0, at + sizeof(float) * PREFILL_TOKENS * row);
        const double t0 = now_us();
        if (h->step_begin && h->step_begin(h, tc) != 0)
            goto done;
        for (uint32_t l = 0; l < layers; l++)
            if (tkv_cache_append_tensors(c, 0, l, PREFILL_TOKENS, &tk, &tv) != TKV_OK)
                goto fail;
        if (h->step_end_fn(h, tc) != 0)
            goto done;
        pre[i] = 2.0 * PREFILL_TOKENS * kv_heads * layers / ((now_us() - t0) * 1e-6);
        if (tkv_seq_truncate(c, 0, len) != TKV_OK)
            goto fail;
    }
    qsort(pre, PREFILL_REPS, sizeof *pre, cmp_double);
    qsort(call + WARMUP_STEPS, STEPS, sizeof *call, cmp_double);
    qsort(tok + WARMUP_STEPS, STEPS, sizeof *tok, cmp_double);
    qsort(dev + WARMUP_STEPS, STEPS, sizeof *dev, cmp_double);
    qsort(rec + WARMUP_STEPS, STEPS, sizeof *rec, cmp_double);
    qsort(sdev + WARMUP_STEPS, STEPS, sizeof *sdev, cmp_double);
    qsort(adev + WARMUP_STEPS, STEPS, sizeof *adev, cmp_double);
    qsort(qdev + WARMUP_STEPS, STEPS, sizeof *qdev, cmp_double);
    qsort(fus + WARMUP_STEPS, STEPS, sizeof *fus, cmp_double);
    qsort(frec + WARMUP_STEPS, STEPS, sizeof *frec, cmp_double);
    qsort(fdev + WARMUP_STEPS, STEPS, sizeof *fdev, cmp_double);
    *r = (struct token_run){ .type = type, .ctx = ctx, .call_us = call[WARMUP_STEPS + STEPS / 2],
                             .token_us = tok[WARMUP_STEPS + STEPS / 2], .dev_us = dev[WARMUP_STEPS + STEPS / 2],
                             .record_us = rec[WARMUP_STEPS + STEPS / 2], .step_dev_us = sdev[WARMUP_STEPS + STEPS / 2],
                             .append_dev_us = adev[WARMUP_STEPS + STEPS / 2],
                             .attn_dev_us = qdev[WARMUP_STEPS + STEPS / 2],
                             .prefill_rows_s = pre[PREFILL_REPS / 2], .fused_us = fus[WARMUP_STEPS + STEPS / 2],
                             .fused_record_us = frec[WARMUP_STEPS + STEPS / 2],
                             .fused_dev_us = fdev[WARMUP_STEPS + STEPS / 2] };
    rc = 0;
    goto done;
fail:
    fprintf(stderr, "turbokv bench: %s\n", tkv_last_error());
done:
    if (have_buffers)
        h->release(h);
    tkv_cache_destroy(c);
    free(k);
    free(v);
    free(hq);
    free(ho);
    free(dev_init);
    free(call);
    free(tok);
    free(dev);
    free(rec);
    free(sdev);
    free(frec);
    free(fdev);
    free(adev);
    free(qdev);
    free(fus);
    return rc;
}

/* Every (type, context) on the open context, then the table or JSON. */
static int run_all(tkv_context *tc, struct token_host *h, const uint32_t *types, int n_types, const uint32_t *ctx,
                   int n_ctx, uint32_t layers, uint32_t q_heads, uint32_t kv_heads, uint32_t head_dim, int json)
{
    struct token_run runs[16 * 16];
    int n = 0, rc = 0;
    for (int ti = 0; ti < n_types && rc == 0; ti++)
        for (int ci = 0; ci < n_ctx && rc == 0; ci++) {
            tool_progress("bench", (uint64_t)(ti * n_ctx + ci + 1), (uint64_t)(n_types * n_ctx));
            rc = measure(tc, h, types[ti], ctx[ci], layers, q_heads, kv_heads, head_dim, &runs[n]) ? 1 : 0;
            n += rc == 0;
        }
    tool_progress_end();
    if (rc == 0 && json) {
        printf("[");
        for (int i = 0; i < n; i++)
            printf("%s\n {\"kind\": \"per-token\", \"backend\": \"%s\", \"device\": \"%s\", \"type\": \"%s\", "
                   "\"ctx\": %u, \"layers\": %u, \"per_call_us\": %.2f, \"per_token_us\": %.2f, "
                   "\"attention_device_us\": %.2f, \"per_token_calls_us\": %.2f, \"per_token_device_us\": %.2f, "
                   "\"per_token_append_device_us\": %.2f, \"per_token_attention_device_us\": %.2f, "
                   "\"prefill_rows_per_s\": %.0f, \"per_token_fused_us\": %.2f, \"per_token_fused_calls_us\": %.2f, "
                   "\"per_token_fused_device_us\": %.2f}",
                   i ? "," : "", h->api, tkv_context_device(tc), tkv_type_name(runs[i].type), runs[i].ctx, layers,
                   runs[i].call_us, runs[i].token_us, runs[i].dev_us, runs[i].record_us, runs[i].step_dev_us,
                   runs[i].append_dev_us, runs[i].attn_dev_us, runs[i].prefill_rows_s, runs[i].fused_us,
                   runs[i].fused_record_us, runs[i].fused_dev_us);
        printf("\n]\n");
    } else if (rc == 0) {
        printf("turbokv bench --per-token: %s on the host's device %s; %u layers, %u query heads, %u kv heads, "
               "head_dim %u, one sequence; us per layer (append one token + attention), median of %d steps; "
               "per-token: %s\n",
               h->api, tkv_context_device(tc), layers, q_heads, kv_heads, head_dim, STEPS, h->step_end);
        printf("%-8s %8s %13s %13s %16s %10s %10s %14s %14s %13s %13s %16s %10s %10s %14s %14s\n", "type", "ctx",
               "per-call us", "per-token us", "attn device us", "token/dev", "call/token", "token calls us",
               "token dev us", "  of it: app", "attn", "prefill Mrows/s", "fused us", "fused/dev", "fused calls us",
               "fused dev us");
        for (int i = 0; i < n; i++) {
            printf("%-8s %8u %13.1f %13.1f %16.1f ", tkv_type_name(runs[i].type), runs[i].ctx, runs[i].call_us,
                   runs[i].token_us, runs[i].dev_us);
            if (runs[i].dev_us > 0)
                printf("%9.2fx", runs[i].token_us / runs[i].dev_us);
            else
                printf("%10s", "-");
            printf(" %9.2fx %14.1f ", runs[i].call_us / runs[i].token_us, runs[i].record_us);
            if (runs[i].step_dev_us > 0)
                printf("%14.1f", runs[i].step_dev_us);
            else
                printf("%14s", "-");
            if (runs[i].append_dev_us > 0 || runs[i].attn_dev_us > 0)
                printf(" %13.1f %13.1f", runs[i].append_dev_us, runs[i].attn_dev_us);
            else
                printf(" %13s %13s", "-", "-");
            printf(" %16.2f %10.1f", runs[i].prefill_rows_s / 1e6, runs[i].fused_us);
            if (runs[i].dev_us > 0)
                printf(" %9.2fx", runs[i].fused_us / runs[i].dev_us);
            else
                printf(" %10s", "-");
            printf(" %14.1f", runs[i].fused_record_us);
            if (runs[i].fused_dev_us > 0)
                printf(" %14.1f\n", runs[i].fused_dev_us);
            else
                printf(" %14s\n", "-");
        }
        printf("token calls us: host time inside the per-token calls (recording or enqueueing); token dev us: "
               "the step's device time, where the API has timestamps; of it: app / attn, the device time between "
               "timestamps the bench writes after each layer's append and attention (Vulkan); prefill Mrows/s: %u tokens of K "
               "and V appended to each layer from the host's buffers, queued, one wait (a row: one head's K or V of "
               "one token; median of %d); fused us: the per-token step with each layer's append and attention as "
               "one tkv_cache_append_attention, and its ratio to the attention's device time; fused calls us / dev "
               "us: its host time inside the calls and its device time, as for the per-token step\n",
               PREFILL_TOKENS, PREFILL_REPS);
    }
    return rc;
}
#endif

/* ---- OpenCL: the host's context and in-order queue ------------------------------- */
#if TKV_BENCH_OPENCL
struct ocl_host {
    cl_context cc;
    cl_command_queue q;
    cl_mem in, out;
    size_t in_bytes, out_bytes;
};

static int ocl_pick_device(cl_device_id *dev)
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

static int ocl_buffers(struct token_host *h, const float *init, size_t in_bytes, size_t out_bytes)
{
    struct ocl_host *o = h->impl;
    cl_int err;
    o->in = clCreateBuffer(o->cc, CL_MEM_READ_WRITE | CL_MEM_COPY_HOST_PTR, in_bytes, (void *)init, &err);
    if (err == CL_SUCCESS)
        o->out = clCreateBuffer(o->cc, CL_MEM_READ_WRITE, out_bytes, NULL, &err);
    o->in_bytes = in_bytes;
    o->out_bytes = out_bytes;
    if (err != CL_SUCCESS) {
        fprintf(stderr, "turbokv bench: clCreateBuffer failed (%d)\n", (int)err);
        h->release(h);
        return -1;
    }
    return 0;
}

static void ocl_release(struct token_host *h)
{
    struct ocl_host *o = h->impl;
    if (o->in)
        clReleaseMemObject(o->in);
    if (o->out)
        clReleaseMemObject(o->out);
    o->in = o->out = NULL;
}

static struct tkv_tensor ocl_tensor(struct token_host *h, int out, uint64_t offset)
{
    struct ocl_host *o = h->impl;
    return (struct tkv_tensor){ .struct_size = sizeof(struct tkv_tensor), .memory = TKV_MEMORY_OPENCL,
                                .handle = (uint64_t)(uintptr_t)(out ? o->out : o->in), .offset = offset,
                                .size = out ? o->out_bytes : o->in_bytes };
}

static int ocl_step_end(struct token_host *h, tkv_context *tc)
{
    (void)tc;
    struct ocl_host *o = h->impl;
    cl_int err = clFinish(o->q);
    if (err != CL_SUCCESS)
        fprintf(stderr, "turbokv bench: clFinish failed (%d)\n", (int)err);
    return err == CL_SUCCESS ? 0 : -1;
}

static int bench_opencl(const uint32_t *types, int n_types, const uint32_t *ctx, int n_ctx, uint32_t layers,
                        uint32_t q_heads, uint32_t kv_heads, uint32_t head_dim, int json)
{
    cl_device_id dev;
    cl_int err;
    if (ocl_pick_device(&dev) != 0) {
        fprintf(stderr, "turbokv bench --per-token: no OpenCL device\n");
        return 1;
    }
    struct ocl_host o = { 0 };
    o.cc = clCreateContext(NULL, 1, &dev, NULL, NULL, &err);
    if (err != CL_SUCCESS) {
        fprintf(stderr, "turbokv bench --per-token: clCreateContext failed (%d)\n", (int)err);
        return 1;
    }
    /* in order, with profiling: the per-call attentions report device_ns */
    o.q = clCreateCommandQueue(o.cc, dev, CL_QUEUE_PROFILING_ENABLE, &err);
    if (err != CL_SUCCESS) {
        fprintf(stderr, "turbokv bench --per-token: clCreateCommandQueue failed (%d)\n", (int)err);
        clReleaseContext(o.cc);
        return 1;
    }
    struct tkv_host_device hd = {
        .struct_size = sizeof hd, .backend = TKV_HOST_OPENCL, .opencl = { .context = o.cc, .device = dev, .queue = o.q },
    };
    struct tkv_context_options opts = { .struct_size = sizeof opts, .host_device = &hd,
                                        .plugin_path = tool_plugin_path() };
    struct token_host h = {
        .api = "opencl", .step_end = "queued, one clFinish", .impl = &o, .buffers = ocl_buffers,
        .release = ocl_release, .tensor = ocl_tensor, .step_end_fn = ocl_step_end,
    };
    tkv_context *tc = NULL;
    int rc = 1;
    if (tkv_context_open(&opts, &tc) != TKV_OK)
        fprintf(stderr, "turbokv bench --per-token: %s\n", tkv_last_error());
    else
        rc = run_all(tc, &h, types, n_types, ctx, n_ctx, layers, q_heads, kv_heads, head_dim, json);
    tkv_context_close(tc);
    clReleaseCommandQueue(o.q);
    clReleaseContext(o.cc);
    return rc;
}
#endif

/* ---- Vulkan: the host's VkDevice, one command buffer per step -------------------- */
#if TKV_BENCH_VULKAN
/* Timestamps of a step: its start and end, then one after each layer's
 * append and attention (as many layers as fit). */
#define VKH_QUERIES (2 + 2 * 128)

struct vk_host {
    VkInstance instance;
    VkPhysicalDevice physical;
    VkDevice device;
    VkQueue queue;
    uint32_t family;
    uint32_t flags; /* TKV_HOST_VULKAN_* of the device it created */
    VkCommandPool pool;
    VkCommandBuffer cmd;
    VkFence fence;
    VkQueryPool timestamps; /* around a step's command buffer, or VK_NULL_HANDLE */
    uint32_t marks;         /* timestamps written after appends and attentions in the step so far */
    double tick_ns;
    uint64_t tick_mask;
    VkPhysicalDeviceMemoryProperties memory;
    VkBuffer in, out;
    VkDeviceMemory in_mem, out_mem;
    size_t in_bytes, out_bytes;
};

#define VK_TRY(call)                                                                                                \
    do {                                                                                                            \
        VkResult r_ = (call);                                                                                       \
        if (r_ != VK_SUCCESS) {                                                                                     \
            fprintf(stderr, "turbokv bench --per-token: %s failed (%d)\n", #call, (int)r_);                       \
            return -1;                                                                                              \
        }                                                                                                           \
    } while (0)

static uint32_t vkh_memory_type(const struct vk_host *v, uint32_t allowed, VkMemoryPropertyFlags want)
{
    for (uint32_t i = 0; i < v->memory.memoryTypeCount; i++)
        if ((allowed & (1u << i)) && (v->memory.memoryTypes[i].propertyFlags & want) == want)
            return i;
    return UINT32_MAX;
}

/* A buffer as an engine keeps its tensors: device-local, with device
 * addresses (what turbokv needs of it); host visible when asked. */
static int vkh_buffer(struct vk_host *v, size_t bytes, VkMemoryPropertyFlags want, VkBuffer *b, VkDeviceMemory *m)
{
    VkBufferCreateInfo bi = {
        .sType = VK_STRUCTURE_TYPE_BUFFER_CREATE_INFO, .size = bytes,
        .usage = VK_BUFFER_USAGE_STORAGE_BUFFER_BIT | VK_BUFFER_USAGE_TRANSFER_SRC_BIT |
                 VK_BUFFER_USAGE_TRANSFER_DST_BIT | VK_BUFFER_USAGE_SHADER_DEVICE_ADDRESS_BIT,
        .sharingMode = VK_SHARING_MODE_EXCLUSIVE,
    };
    VK_TRY(vkCreateBuffer(v->device, &bi, NULL, b));
    VkMemoryRequirements req;
    vkGetBufferMemoryRequirements(v->device, *b, &req);
    uint32_t type = vkh_memory_type(v, req.memoryTypeBits, want);
    if (type == UINT32_MAX)
        type = vkh_memory_type(v, req.memoryTypeBits, want & ~(VkMemoryPropertyFlags)VK_MEMORY_PROPERTY_DEVICE_LOCAL_BIT);
    if (type == UINT32_MAX) {
        fprintf(stderr, "turbokv bench --per-token: no memory type for a buffer\n");
        return -1;
    }
    VkMemoryAllocateFlagsInfo flags = {
        .sType = VK_STRUCTURE_TYPE_MEMORY_ALLOCATE_FLAGS_INFO, .flags = VK_MEMORY_ALLOCATE_DEVICE_ADDRESS_BIT,
    };
    VkMemoryAllocateInfo ai = {
        .sType = VK_STRUCTURE_TYPE_MEMORY_ALLOCATE_INFO, .pNext = &flags, .allocationSize = req.size,
        .memoryTypeIndex = type,
    };
    VK_TRY(vkAllocateMemory(v->device, &ai, NULL, m));
    VK_TRY(vkBindBufferMemory(v->device, *b, *m, 0));
    return 0;
}

static int vkh_begin(struct vk_host *v)
{
    VK_TRY(vkResetCommandBuffer(v->cmd, 0));
    VkCommandBufferBeginInfo begin = {
        .sType = VK_STRUCTURE_TYPE_COMMAND_BUFFER_BEGIN_INFO, .flags = VK_COMMAND_BUFFER_USAGE_ONE_TIME_SUBMIT_BIT,
    };
    VK_TRY(vkBeginCommandBuffer(v->cmd, &begin));
    return 0;
}

/* Measurement knobs of the Vulkan host (environment): TKV_BENCH_VK_WAIT=spin
 * polls the step's fence instead of a blocking vkWaitForFences;
 * TKV_BENCH_TRACE=1 prints each step's host phases on stderr (the
 * command buffer ended, submitted, the fence seen signaled). */
static int vkh_submit_wait(struct vk_host *v)
{
    static int spin = -1, trace = -1;
    if (spin < 0) {
        const char *w = getenv("TKV_BENCH_VK_WAIT"), *t = getenv("TKV_BENCH_TRACE");
        spin = w && !strcmp(w, "spin");
        trace = t && *t && strcmp(t, "0") != 0;
    }
    const double t0 = now_us();
    VK_TRY(vkEndCommandBuffer(v->cmd));
    const double t1 = now_us();
    VkSubmitInfo submit = { .sType = VK_STRUCTURE_TYPE_SUBMIT_INFO, .commandBufferCount = 1, .pCommandBuffers = &v->cmd };
    VK_TRY(vkQueueSubmit(v->queue, 1, &submit, v->fence));
    const double t2 = now_us();
    VkResult r;
    while (spin && (r = vkGetFenceStatus(v->device, v->fence)) == VK_NOT_READY)
        ;
    if (!spin)
        VK_TRY(vkWaitForFences(v->device, 1, &v->fence, VK_TRUE, UINT64_MAX));
    else if (r != VK_SUCCESS)
        return -1;
    const double t3 = now_us();
    VK_TRY(vkResetFences(v->device, 1, &v->fence));
    if (trace)
        fprintf(stderr, "vkh: end %.1f submit %.1f wait %.1f us\n", t1 - t0, t2 - t1, t3 - t2);
    return 0;
}

static void vkh_release(struct token_host *h)
{
    struct vk_host *v = h->impl;
    vkDeviceWaitIdle(v->device);
    vkDestroyBuffer(v->device, v->in, NULL);
    vkDestroyBuffer(v->device, v->out, NULL);
    vkFreeMemory(v->device, v->in_mem, NULL);
    vkFreeMemory(v->device, v->out_mem, NULL);
    v->in = v->out = VK_NULL_HANDLE;
    v->in_mem = v->out_mem = VK_NULL_HANDLE;
}

static int vkh_buffers(struct token_host *h, const float *init, size_t in_bytes, size_t out_bytes)
{
    struct vk_host *v = h->impl;
    VkBuffer staging = VK_NULL_HANDLE;
    VkDeviceMemory staging_mem = VK_NULL_HANDLE;
    void *map = NULL;
    v->in_bytes = in_bytes;
    v->out_bytes = out_bytes;
    const VkMemoryPropertyFlags visible = VK_MEMORY_PROPERTY_HOST_VISIBLE_BIT | VK_MEMORY_PROPERTY_HOST_COHERENT_BIT;
    if (vkh_buffer(v, in_bytes, VK_MEMORY_PROPERTY_DEVICE_LOCAL_BIT, &v->in, &v->in_mem) != 0 ||
        vkh_buffer(v, out_bytes, VK_MEMORY_PROPERTY_DEVICE_LOCAL_BIT, &v->out, &v->out_mem) != 0 ||
        vkh_buffer(v, in_bytes, visible, &staging, &staging_mem) != 0 ||
        vkMapMemory(v->device, staging_mem, 0, VK_WHOLE_SIZE, 0, &map) != VK_SUCCESS || vkh_begin(v) != 0) {
        fprintf(stderr, "turbokv bench --per-token: could not create the host's buffers\n");
        return -1;
    }
    memcpy(map, init, in_bytes);
    VkBufferCopy region = { .size = in_bytes };
    vkCmdCopyBuffer(v->cmd, staging, v->in, 1, &region);
    int rc = vkh_submit_wait(v);
    vkDestroyBuffer(v->device, staging, NULL);
    vkFreeMemory(v->device, staging_mem, NULL);
    return rc;
}

static struct tkv_tensor vkh_tensor(struct token_host *h, int out, uint64_t offset)
{
    struct vk_host *v = h->impl;
    return (struct tkv_tensor){ .struct_size = sizeof(struct tkv_tensor), .memory = TKV_MEMORY_VULKAN,
                                .handle = (uint64_t)(uintptr_t)(out ? v->out : v->in), .offset = offset,
                                .size = out ? v->out_bytes : v->in_bytes };
}

/* The step's command buffer, recording; turbokv records into it. */
static int vkh_step_begin(struct token_host *h, tkv_context *tc)
{
    struct vk_host *v = h->impl;
    if (vkh_begin(v) != 0)
        return -1;
    if (v->timestamps) {
        vkCmdResetQueryPool(v->cmd, v->timestamps, 0, VKH_QUERIES);
        vkCmdWriteTimestamp(v->cmd, VK_PIPELINE_STAGE_TOP_OF_PIPE_BIT, v->timestamps, 0);
    }
    v->marks = 0;
    if (tkv_context_set_command_buffer(tc, v->cmd) != TKV_OK) {
        fprintf(stderr, "turbokv bench --per-token: %s\n", tkv_last_error());
        return -1;
    }
    return 0;
}

static int vkh_step_end(struct token_host *h, tkv_context *tc)
{
    struct vk_host *v = h->impl;
    if (tkv_context_set_command_buffer(tc, NULL) != TKV_OK) {
        fprintf(stderr, "turbokv bench --per-token: %s\n", tkv_last_error());
        return -1;
    }
    if (v->timestamps)
        vkCmdWriteTimestamp(v->cmd, VK_PIPELINE_STAGE_BOTTOM_OF_PIPE_BIT, v->timestamps, 1);
    if (vkh_submit_wait(v) != 0)
        return -1;
    uint64_t ts[VKH_QUERIES];
    const uint32_t n = 2 + v->marks;
    if (v->timestamps && vkGetQueryPoolResults(v->device, v->timestamps, 0, n, sizeof ts, ts, sizeof ts[0],
                                               VK_QUERY_RESULT_64_BIT) == VK_SUCCESS) {
        h->step_dev_ns = (double)((ts[1] - ts[0]) & v->tick_mask) * v->tick_ns;
        /* marks in pairs: after layer l's append, after its attention */
        for (uint32_t m = 0; m + 1 < v->marks; m += 2) {
            const uint64_t before = m ? ts[2 + m - 1] : ts[0];
            h->append_dev_ns += (double)((ts[2 + m] - before) & v->tick_mask) * v->tick_ns;
            h->attn_dev_ns += (double)((ts[3 + m] - ts[2 + m]) & v->tick_mask) * v->tick_ns;
        }
    }
    return 0;
}

/* A timestamp in the step's command buffer after the work recorded so far. */
static void vkh_mark(struct token_host *h, uint32_t layer, int what)
{
    struct vk_host *v = h->impl;
    (void)layer;
    (void)what;
    if (v->timestamps && 2 + v->marks < VKH_QUERIES)
        vkCmdWriteTimestamp(v->cmd, VK_PIPELINE_STAGE_BOTTOM_OF_PIPE_BIT, v->timestamps, 2 + v->marks++);
}

static int vkh_open(struct vk_host *v)
{
    VkApplicationInfo app = {
        .sType = VK_STRUCTURE_TYPE_APPLICATION_INFO, .pApplicationName = "turbokv bench", .apiVersion = VK_API_VERSION_1_2,
    };
    VkInstanceCreateInfo ii = { .sType = VK_STRUCTURE_TYPE_INSTANCE_CREATE_INFO, .pApplicationInfo = &app };
    VK_TRY(vkCreateInstance(&ii, NULL, &v->instance));
    uint32_t n = 16;
    VkPhysicalDevice all[16];
    VkResult r = vkEnumeratePhysicalDevices(v->instance, &n, all);
    if ((r != VK_SUCCESS && r != VK_INCOMPLETE) || n == 0) {
        fprintf(stderr, "turbokv bench --per-token: no Vulkan device\n");
        return -1;
    }
    /* the first GPU, else the first device */
    v->physical = VK_NULL_HANDLE;
    for (int pass = 0; pass < 2 && !v->physical; pass++)
        for (uint32_t i = 0; i < n && !v->physical; i++) {
            VkPhysicalDeviceProperties p;
            vkGetPhysicalDeviceProperties(all[i], &p);
            if (pass || p.deviceType == VK_PHYSICAL_DEVICE_TYPE_DISCRETE_GPU ||
                p.deviceType == VK_PHYSICAL_DEVICE_TYPE_INTEGRATED_GPU)
                v->physical = all[i];
        }
    uint32_t nf = 16;
    VkQueueFamilyProperties fams[16];
    vkGetPhysicalDeviceQueueFamilyProperties(v->physical, &nf, fams);
    for (v->family = 0; v->family < nf && !(fams[v->family].queueFlags & VK_QUEUE_COMPUTE_BIT); v->family++)
        ;
    if (v->family == nf) {
        fprintf(stderr, "turbokv bench --per-token: no compute queue\n");
        return -1;
    }
    VkPhysicalDeviceFeatures2 have = { .sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_FEATURES_2 };
    vkGetPhysicalDeviceFeatures2(v->physical, &have);
    float priority = 1.0f;
    VkDeviceQueueCreateInfo qi = {
        .sType = VK_STRUCTURE_TYPE_DEVICE_QUEUE_CREATE_INFO, .queueFamilyIndex = v->family, .queueCount = 1,
        .pQueuePriorities = &priority,
    };
    /* the features turbokv needs the host to enable (docs/api.md) */
    VkPhysicalDeviceVulkan12Features f12 = {
        .sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_VULKAN_1_2_FEATURES, .bufferDeviceAddress = VK_TRUE,
        .storageBuffer8BitAccess = VK_TRUE, .shaderInt8 = VK_TRUE,
    };
    VkPhysicalDeviceFeatures2 f2 = {
        .sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_FEATURES_2, .pNext = &f12,
        .features = { .shaderInt64 = VK_TRUE, .shaderFloat64 = have.features.shaderFloat64 },
    };
    VkDeviceCreateInfo di = {
        .sType = VK_STRUCTURE_TYPE_DEVICE_CREATE_INFO, .pNext = &f2, .queueCreateInfoCount = 1, .pQueueCreateInfos = &qi,
    };
    /* the pipelines' statistics where the device has them, as an engine
     * would enable them for turbokv (TKV_HOST_VULKAN_STATISTICS: on NVIDIA
     * the registers size the attention dispatch) */
    VkPhysicalDevicePipelineExecutablePropertiesFeaturesKHR stats = {
        .sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_PIPELINE_EXECUTABLE_PROPERTIES_FEATURES_KHR,
        .pipelineExecutableInfo = VK_TRUE,
    };
    const char *stats_ext = VK_KHR_PIPELINE_EXECUTABLE_PROPERTIES_EXTENSION_NAME;
    uint32_t n_ext = 0;
    VkExtensionProperties *ext = NULL;
    if (vkEnumerateDeviceExtensionProperties(v->physical, NULL, &n_ext, NULL) == VK_SUCCESS && n_ext &&
        (ext = calloc(n_ext, sizeof *ext)) &&
        vkEnumerateDeviceExtensionProperties(v->physical, NULL, &n_ext, ext) == VK_SUCCESS)
        for (uint32_t i = 0; i < n_ext && !v->flags; i++)
            if (!strcmp(ext[i].extensionName, stats_ext)) {
                stats.pNext = f12.pNext;
                f12.pNext = &stats;
                di.enabledExtensionCount = 1;
                di.ppEnabledExtensionNames = &stats_ext;
                v->flags = TKV_HOST_VULKAN_STATISTICS;
            }
    free(ext);
    VK_TRY(vkCreateDevice(v->physical, &di, NULL, &v->device));
    vkGetDeviceQueue(v->device, v->family, 0, &v->queue);
    vkGetPhysicalDeviceMemoryProperties(v->physical, &v->memory);
    VkCommandPoolCreateInfo pi = {
        .sType = VK_STRUCTURE_TYPE_COMMAND_POOL_CREATE_INFO, .queueFamilyIndex = v->family,
        .flags = VK_COMMAND_POOL_CREATE_RESET_COMMAND_BUFFER_BIT,
    };
    VK_TRY(vkCreateCommandPool(v->device, &pi, NULL, &v->pool));
    VkCommandBufferAllocateInfo ca = {
        .sType = VK_STRUCTURE_TYPE_COMMAND_BUFFER_ALLOCATE_INFO, .commandPool = v->pool,
        .level = VK_COMMAND_BUFFER_LEVEL_PRIMARY, .commandBufferCount = 1,
    };
    VK_TRY(vkAllocateCommandBuffers(v->device, &ca, &v->cmd));
    VkFenceCreateInfo fi = { .sType = VK_STRUCTURE_TYPE_FENCE_CREATE_INFO };
    VK_TRY(vkCreateFence(v->device, &fi, NULL, &v->fence));
    VkPhysicalDeviceProperties props;
    vkGetPhysicalDeviceProperties(v->physical, &props);
    const uint32_t bits = fams[v->family].timestampValidBits;
    if (bits && props.limits.timestampPeriod > 0.0f) {
        VkQueryPoolCreateInfo qp = {
            .sType = VK_STRUCTURE_TYPE_QUERY_POOL_CREATE_INFO, .queryType = VK_QUERY_TYPE_TIMESTAMP,
            .queryCount = VKH_QUERIES,
        };
        VK_TRY(vkCreateQueryPool(v->device, &qp, NULL, &v->timestamps));
        v->tick_ns = props.limits.timestampPeriod;
        v->tick_mask = bits >= 64 ? ~0ull : (1ull << bits) - 1;
    }
    return 0;
}

static int bench_vulkan(const uint32_t *types, int n_types, const uint32_t *ctx, int n_ctx, uint32_t layers,
                        uint32_t q_heads, uint32_t kv_heads, uint32_t head_dim, int json)
{
    struct vk_host v = { 0 };
    int rc = 1;
    tkv_context *tc = NULL;
    if (vkh_open(&v) == 0) {
        struct tkv_host_device hd = {
            .struct_size = sizeof hd, .backend = TKV_HOST_VULKAN,
            .vulkan = { .instance = v.instance, .physical_device = v.physical, .device = v.device, .queue = v.queue,
                        .queue_family = v.family, .api_version = VK_API_VERSION_1_2, .flags = v.flags },
        };
        struct tkv_context_options opts = { .struct_size = sizeof opts, .host_device = &hd,
                                            .plugin_path = tool_plugin_path() };
        struct token_host h = {
            .api = "vulkan", .step_end = "recorded into one command buffer, one submit and fence wait", .impl = &v,
            .buffers = vkh_buffers, .release = vkh_release, .tensor = vkh_tensor, .step_begin = vkh_step_begin,
            .step_end_fn = vkh_step_end, .mark = vkh_mark,
        };
        if (tkv_context_open(&opts, &tc) != TKV_OK)
            fprintf(stderr, "turbokv bench --per-token: %s\n", tkv_last_error());
        else
            rc = run_all(tc, &h, types, n_types, ctx, n_ctx, layers, q_heads, kv_heads, head_dim, json);
        tkv_context_close(tc);
    }
    if (v.device) {
        if (v.fence)
            vkDestroyFence(v.device, v.fence, NULL);
        if (v.timestamps)
            vkDestroyQueryPool(v.device, v.timestamps, NULL);
        if (v.pool)
            vkDestroyCommandPool(v.device, v.pool, NULL);
        vkDestroyDevice(v.device, NULL);
    }
    if (v.instance)
        vkDestroyInstance(v.instance, NULL);
    return rc;
}
#endif

int tool_bench_token(const char *backend, const uint32_t *types, int n_types, const uint32_t *ctx, int n_ctx,
                     uint32_t layers, uint32_t q_heads, uint32_t kv_heads, uint32_t head_dim, uint32_t warm,
                     int json)
{
#if TKV_BENCH_OPENCL || TKV_BENCH_VULKAN
    warm_ms = warm;
#else
    (void)warm;
#endif
    const int vulkan = backend && strcmp(backend, "vulkan") == 0;
    if (backend && !vulkan && strcmp(backend, "opencl") != 0 && strcmp(backend, "auto") != 0) {
        fprintf(stderr, "turbokv bench --per-token: --backend %s: the per-token mode runs on the host's own opencl "
                        "or vulkan device\n", backend);
        return 2;
    }
#if TKV_BENCH_VULKAN
    if (vulkan)
        return bench_vulkan(types, n_types, ctx, n_ctx, layers, q_heads, kv_heads, head_dim, json);
#endif
#if TKV_BENCH_OPENCL
    if (!vulkan)
        return bench_opencl(types, n_types, ctx, n_ctx, layers, q_heads, kv_heads, head_dim, json);
#endif
    (void)types, (void)n_types, (void)ctx, (void)n_ctx, (void)layers, (void)q_heads, (void)kv_heads;
    (void)head_dim, (void)json;
    fprintf(stderr, "turbokv bench --per-token: this build has no %s (the per-token mode owns the device, as a host "
                    "engine would)\n", vulkan ? "Vulkan" : "OpenCL");
    return 1;
}
