/* SPDX-License-Identifier: MIT */
/*
 * A host that owns its OpenCL device (docs/api.md, "The host's own
 * device"): it creates its own cl_context and in-order queue, opens turbokv
 * on them (tkv_context_options.host_device), uploads the K/V rows and
 * queries of several layers to its own cl_mem buffers, enqueues append +
 * attention for every layer of a decode step and finishes its queue once.
 * The result must equal the cpu plugin fed the same values as host arrays:
 * the same stored bytes (sequence images compared byte for byte) and
 * attention within the conformance tolerance (test_backends), in f32, f16
 * and bf16 tensors.
 *
 * That nothing waits is checked directly: the host's queue is held behind
 * a user event while the calls of a step are made; a call that waited for
 * the queue would never return (alarm). Bad device tensors are refused with
 * the argument named, and change nothing.
 *
 * No OpenCL device: exit 77 (skipped), except under CI=true (PoCL there).
 */
#define CL_TARGET_OPENCL_VERSION 120
#include <CL/cl.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "turbokv.h"
#include "host_tensors.h"

#define L 5         /* layers */
#define KV 2        /* kv heads */
#define D 128       /* head_dim */
#define QH 8        /* query heads */
#define PREFILL 46  /* prompt tokens: blocks of 16, the last one partly filled; the
                       * third decode step opens a block (its appends write new
                       * block-table entries) */
#define STEPS 3     /* decode steps: f32, f16, bf16 tensors */
#define CAP 64
/* test_backends' conformance tolerance, plus one unit in the last place of
 * the output type at the row's largest magnitude (both sides round their
 * own f32 result) */
#define ATTN_TOLERANCE 2e-4

static cl_context cl_ctx;
static cl_device_id cl_dev;
static cl_command_queue cl_q;
static tkv_context *ctx, *ctx_cpu;
static tkv_cache *cache, *cache_cpu;

static const uint32_t k_types[L] = { TKV_TYPE_Q8_0, TKV_TYPE_TURBO3, TKV_TYPE_TURBO4, TKV_TYPE_F16, TKV_TYPE_TURBO3_OUT };
static const uint32_t v_types[L] = { TKV_TYPE_TURBO3, TKV_TYPE_TURBO4, TKV_TYPE_Q8_0, TKV_TYPE_TURBO3, TKV_TYPE_TURBO4_OUT };

static struct tkv_tensor cl_tensor(uint32_t elem, cl_mem mem, uint64_t offset, uint64_t size)
{
    return (struct tkv_tensor){
        .struct_size = sizeof(struct tkv_tensor), .elem = elem, .memory = TKV_MEMORY_OPENCL,
        .handle = (uint64_t)(uintptr_t)mem, .offset = offset, .size = size,
    };
}

static int find_device(void)
{
    cl_platform_id plats[8];
    cl_uint n_plat = 0;
    if (clGetPlatformIDs(8, plats, &n_plat) != CL_SUCCESS || n_plat == 0)
        return 0;
    /* a GPU first, else any device (PoCL's CPU device in CI) */
    for (int pass = 0; pass < 2; pass++)
        for (cl_uint p = 0; p < n_plat && p < 8; p++) {
            cl_device_id devs[8];
            cl_uint n = 0;
            if (clGetDeviceIDs(plats[p], pass ? CL_DEVICE_TYPE_ALL : CL_DEVICE_TYPE_GPU, 8, devs, &n) !=
                    CL_SUCCESS || n == 0)
                continue;
            cl_dev = devs[0];
            return 1;
        }
    return 0;
}

static struct tkv_host_device host_of(cl_command_queue q)
{
    return (struct tkv_host_device){
        .struct_size = sizeof(struct tkv_host_device), .backend = TKV_HOST_OPENCL,
        .opencl = { .context = cl_ctx, .device = cl_dev, .queue = q },
    };
}

static int create_caches(void)
{
    struct tkv_cache_params p = {
        .struct_size = sizeof p, .n_layers = L, .n_kv_heads = KV, .head_dim = D, .capacity = CAP, .n_q_heads = QH,
        .k_type = TKV_TYPE_FROM_CONFIG, .v_type = TKV_TYPE_FROM_CONFIG, .layer_k_types = k_types,
        .layer_v_types = v_types, .block_tokens = 16,
        /* every block reserved up front: a pool that grows allocates, and an
         * allocation waits for the queue */
        .pool_blocks = L * (CAP / 16), .pool_flags = TKV_POOL_FIXED,
    };
    if (tkv_cache_create(ctx, &p, &cache) != TKV_OK || tkv_cache_create(ctx_cpu, &p, &cache_cpu) != TKV_OK)
        return -1;
    return 0;
}

static int setup(void **state)
{
    (void)state;
    int ci = getenv("CI") && strcmp(getenv("CI"), "true") == 0;
    if (!find_device()) {
        fprintf(stderr, "no OpenCL device%s\n", ci ? " (CI: a failure)" : ": skipped");
        exit(ci ? 1 : 77);
    }
    cl_int err;
    cl_ctx = clCreateContext(NULL, 1, &cl_dev, NULL, NULL, &err);
    if (err != CL_SUCCESS)
        return -1;
    cl_q = clCreateCommandQueue(cl_ctx, cl_dev, 0, &err);
    if (err != CL_SUCCESS)
        return -1;
    struct tkv_host_device h = host_of(cl_q);
    if (open_tkv(NULL, &h, &ctx) != TKV_OK) {
        fprintf(stderr, "tkv_context_open on the host's device: %s\n", tkv_last_error());
        return -1;
    }
    if (open_tkv("cpu", NULL, &ctx_cpu) != TKV_OK || create_caches() != 0) {
        fprintf(stderr, "setup: %s\n", tkv_last_error());
        return -1;
    }
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    tkv_cache_destroy(cache);
    tkv_cache_destroy(cache_cpu);
    tkv_context_close(ctx);
    tkv_context_close(ctx_cpu);
    clReleaseCommandQueue(cl_q);
    clReleaseContext(cl_ctx);
    return 0;
}

static cl_mem new_buffer(size_t bytes, const void *init)
{
    cl_int err;
    cl_mem m = clCreateBuffer(cl_ctx, CL_MEM_READ_WRITE, bytes, NULL, &err);
    assert_int_equal(err, CL_SUCCESS);
    if (init)
        assert_int_equal(clEnqueueWriteBuffer(cl_q, m, CL_TRUE, 0, bytes, init, 0, NULL, NULL), CL_SUCCESS);
    return m;
}

static void on_alarm(int sig)
{
    (void)sig;
    static const char msg[] = "a call on device tensors waited for the host's held queue\n";
    (void)!write(2, msg, sizeof msg - 1);
    _exit(1);
}

/* The context is the host's device, named as the host's driver names it. */
static void opens_on_the_hosts_device(void **state)
{
    (void)state;
    char name[256] = "";
    clGetDeviceInfo(cl_dev, CL_DEVICE_NAME, sizeof name - 1, name, NULL);
    assert_string_equal(tkv_context_backend(ctx), "opencl");
    assert_string_equal(tkv_context_device(ctx), name);
    struct tkv_device_caps caps = { .struct_size = sizeof caps };
    assert_int_equal(tkv_context_caps(ctx, &caps), TKV_OK);
    assert_true(caps.features & TKV_CAP_HOST_DEVICE);
    assert_true(caps.features & TKV_CAP_DEVICE_TENSORS);
    assert_true(caps.features & TKV_CAP_ASYNC);
    /* the cpu plugin takes no host device */
    struct tkv_device_caps cpu_caps = { .struct_size = sizeof cpu_caps };
    assert_int_equal(tkv_context_caps(ctx_cpu, &cpu_caps), TKV_OK);
    assert_false(cpu_caps.features & (TKV_CAP_DEVICE_TENSORS | TKV_CAP_ASYNC));
}

/* Prefill and STEPS decode steps, every layer, from the host's buffers;
 * the cpu cache gets the same values from host arrays. */
static void matches_cpu(void **state)
{
    (void)state;
    const size_t row = (size_t)KV * D, qrow = (size_t)QH * D;
    /* prefill: f32 rows of every layer in one buffer, K and V of layer l at
     * their own offsets */
    float *pre = malloc(sizeof *pre * L * 2 * PREFILL * row);
    for (size_t i = 0; i < (size_t)L * 2 * PREFILL * row; i++)
        pre[i] = gauss() * (i % 97 == 0 ? 8.0f : 1.0f);
    const size_t pre_bytes = sizeof *pre * L * 2 * PREFILL * row;
    cl_mem pre_mem = new_buffer(pre_bytes, pre);
    for (uint32_t l = 0; l < L; l++) {
        const size_t k_at = (size_t)(2 * l) * PREFILL * row, v_at = k_at + PREFILL * row;
        struct tkv_tensor k = cl_tensor(TKV_ELEM_F32, pre_mem, k_at * 4, pre_bytes);
        struct tkv_tensor v = cl_tensor(TKV_ELEM_F32, pre_mem, v_at * 4, pre_bytes);
        if (tkv_cache_append_tensors(cache, 0, l, PREFILL, &k, &v) != TKV_OK)
            fail_msg("prefill layer %u: %s", l, tkv_last_error());
        assert_int_equal(tkv_cache_append(cache_cpu, 0, l, PREFILL, pre + k_at, pre + v_at), TKV_OK);
    }

    /* the decode steps' inputs, in the step's element type, at offsets
     * that are not multiples of 4 bytes for the 16-bit types */
    static const uint32_t elems[STEPS] = { TKV_ELEM_F32, TKV_ELEM_F16, TKV_ELEM_BF16 };
    const size_t per_layer = 2 * row + qrow;
    float *x = malloc(sizeof *x * STEPS * L * per_layer);
    for (size_t i = 0; i < (size_t)STEPS * L * per_layer; i++)
        x[i] = gauss();
    size_t in_at[STEPS][L], out_at[STEPS][L], in_bytes = 0, out_bytes = 0;
    for (uint32_t s = 0; s < STEPS; s++)
        for (uint32_t l = 0; l < L; l++) {
            in_at[s][l] = in_bytes + esize(elems[s]) * (s + 1);
            in_bytes = in_at[s][l] + per_layer * esize(elems[s]);
            out_at[s][l] = out_bytes + esize(elems[s]);
            out_bytes = out_at[s][l] + qrow * esize(elems[s]);
        }
    unsigned char *in = calloc(1, in_bytes), *dev_out = calloc(1, out_bytes), *cpu_out = calloc(1, out_bytes);
    for (uint32_t s = 0; s < STEPS; s++)
        for (uint32_t l = 0; l < L; l++)
            encode(in + in_at[s][l], x + ((size_t)s * L + l) * per_layer, per_layer, elems[s]);
    cl_mem in_mem = new_buffer(in_bytes, in), out_mem = new_buffer(out_bytes, NULL);

    uint32_t seq = 0, one = 1;
    for (uint32_t s = 0; s < STEPS; s++) {
        const uint32_t e = elems[s];
        /* hold the host's queue: nothing turbokv enqueues can run, and a
         * call that waited for it would hang */
        cl_int err;
        cl_event gate = clCreateUserEvent(cl_ctx, &err);
        assert_int_equal(err, CL_SUCCESS);
        assert_int_equal(clEnqueueMarkerWithWaitList(cl_q, 1, &gate, NULL), CL_SUCCESS);
        signal(SIGALRM, on_alarm);
        alarm(60);
        for (uint32_t l = 0; l < L; l++) {
            const size_t at = in_at[s][l], es = esize(e);
            struct tkv_tensor k = cl_tensor(e, in_mem, at, in_bytes);
            struct tkv_tensor v = cl_tensor(e, in_mem, at + row * es, in_bytes);
            struct tkv_tensor q = cl_tensor(e, in_mem, at + 2 * row * es, in_bytes);
            struct tkv_tensor o = cl_tensor(e, out_mem, out_at[s][l], out_bytes);
            if (tkv_cache_append_tensors(cache, seq, l, 1, &k, &v) != TKV_OK)
                fail_msg("step %u layer %u append: %s", s, l, tkv_last_error());
            struct tkv_attention_stats st = { 0 };
            struct tkv_attention_options opts = { .struct_size = sizeof opts, .stats = &st };
            if (tkv_attention_tensors(cache, l, 1, &seq, &one, QH, &q, &o, &opts) != TKV_OK)
                fail_msg("step %u layer %u attention: %s", s, l, tkv_last_error());
            assert_int_equal(st.rows_total, (uint64_t)QH * (PREFILL + s + 1));
            assert_int_equal(st.rows_skipped, 0);
            /* the cpu plugin on the same values as host arrays */
            struct tkv_tensor hk = host_tensor(e, in + at), hv = host_tensor(e, in + at + row * es);
            struct tkv_tensor hq = host_tensor(e, in + at + 2 * row * es), ho = host_tensor(e, cpu_out + out_at[s][l]);
            assert_int_equal(tkv_cache_append_tensors(cache_cpu, seq, l, 1, &hk, &hv), TKV_OK);
            assert_int_equal(tkv_attention_tensors(cache_cpu, l, 1, &seq, &one, QH, &hq, &ho, NULL), TKV_OK);
        }
        alarm(0);
        assert_int_equal(clSetUserEventStatus(gate, CL_COMPLETE), CL_SUCCESS);
        clReleaseEvent(gate);
    }
    /* the host synchronizes once, as for its own work */
    assert_int_equal(clEnqueueReadBuffer(cl_q, out_mem, CL_TRUE, 0, out_bytes, dev_out, 0, NULL, NULL), CL_SUCCESS);

    double worst[STEPS] = { 0 };
    for (uint32_t s = 0; s < STEPS; s++)
        for (uint32_t l = 0; l < L; l++)
            for (uint32_t r = 0; r < QH; r++) {
                const size_t base = (out_at[s][l] / esize(elems[s])) + (size_t)r * D;
                const void *a = cpu_out, *b = dev_out;
                double mag = 0, err = 0;
                for (uint32_t i = 0; i < D; i++) {
                    double va = decode1(a, base + i, elems[s]), vb = decode1(b, base + i, elems[s]);
                    assert_true(isfinite(vb));
                    mag = fmax(mag, fabs(va));
                    err = fmax(err, fabs(va - vb));
                }
                const double ulp = elems[s] == TKV_ELEM_F32 ? 0 : elems[s] == TKV_ELEM_F16 ? 1.0 / 1024 : 1.0 / 128;
                const double rel = err / (mag > 1e-6 ? mag : 1e-6);
                worst[s] = fmax(worst[s], rel);
                if (rel > ATTN_TOLERANCE + ulp)
                    fail_msg("step %u (elem %u) layer %u head %u: relative error %.3g", s, elems[s], l, r, rel);
            }
    print_message("opencl (host's device) vs cpu: worst attention error f32 %.3g, f16 %.3g, bf16 %.3g\n", worst[0],
                  worst[1], worst[2]);

    /* the same stored bytes: the sequence images of the two caches */
    assert_same_rows(cache, cache_cpu);
    for (uint32_t l = 0; l < L; l++) {
        uint32_t len = 0;
        assert_int_equal(tkv_cache_length(cache, 0, l, &len), TKV_OK);
        assert_int_equal(len, PREFILL + STEPS);
    }
    clReleaseMemObject(pre_mem);
    clReleaseMemObject(in_mem);
    clReleaseMemObject(out_mem);
    free(pre);
    free(x);
    free(in);
    free(dev_out);
    free(cpu_out);
}

/* A decode step as one call a layer (tkv_cache_append_attention, ABI
 * 2.7): on NVIDIA's tensor-core kernels (turbo3 and turbo3o K and V at
 * head_dim 128, f32 rows in the host's buffers) the new rows are quantized
 * inside the attention's launch; elsewhere (PoCL, f16 rows) the plugin
 * makes the pair and the attention. Either way: the cpu plugin's stored
 * bytes, and its attention within the conformance tolerance, from
 * append + attention as two calls on host arrays. Steps of 1 and 2 tokens,
 * across a chunk's and a block's end, with a window, at a context of
 * several chunks. */
static void fused_step_matches_two_calls(void **state)
{
    (void)state;
    enum { FL = 2, PRE = 318, FSTEPS = 4, FCAP = 352 };
    static const uint32_t types[FL] = { TKV_TYPE_TURBO3, TKV_TYPE_TURBO3_OUT };
    /* tokens 318 .. 322: the second step's two (319, 320) lie on both sides
     * of a chunk's end (chunks of 64 rows at one tile a warp) and open
     * block 20; the third is f16 (the two ops in the plugin); the last
     * attends over a window of 100 */
    static const uint32_t n_new[FSTEPS] = { 1, 2, 1, 1 };
    static const uint32_t elem[FSTEPS] = { TKV_ELEM_F32, TKV_ELEM_F32, TKV_ELEM_F16, TKV_ELEM_F32 };
    static const uint32_t window[FSTEPS] = { 0, 0, 0, 100 };
    struct tkv_cache_params p = {
        .struct_size = sizeof p, .n_layers = FL, .n_kv_heads = KV, .head_dim = D, .capacity = FCAP,
        .n_q_heads = QH, .k_type = TKV_TYPE_FROM_CONFIG, .v_type = TKV_TYPE_FROM_CONFIG,
        .layer_k_types = types, .layer_v_types = types, .block_tokens = 16,
    };
    tkv_cache *g = NULL, *c = NULL;
    assert_int_equal(tkv_cache_create(ctx, &p, &g), TKV_OK);
    assert_int_equal(tkv_cache_create(ctx_cpu, &p, &c), TKV_OK);
    const size_t row = (size_t)KV * D, qrow = (size_t)QH * D;
    prefill_both(g, c, FL, PRE, row);
    /* a step's layer: k, v (n rows), q (n query rows) in the step's element
     * type; out f32 */
    const size_t per = 2 * 2 * row + 2 * qrow;
    float *x = malloc(sizeof *x * FSTEPS * FL * per);
    for (size_t i = 0; i < (size_t)FSTEPS * FL * per; i++)
        x[i] = gauss();
    const size_t in_bytes = sizeof(float) * FSTEPS * FL * per, out_bytes = sizeof(float) * FSTEPS * FL * 2 * qrow;
    unsigned char *in = calloc(1, in_bytes);
    float *dev_out = calloc(1, out_bytes), *cpu_out = calloc(1, out_bytes);
    for (uint32_t s = 0; s < FSTEPS; s++)
        for (uint32_t l = 0; l < FL; l++) {
            const size_t at = ((size_t)s * FL + l) * per; /* f32's room for every type */
            encode(in + at * sizeof(float), x + at, per, elem[s]);
        }
    cl_mem in_mem = new_buffer(in_bytes, in), out_mem = new_buffer(out_bytes, NULL);
    uint32_t seq = 0;
    for (uint32_t s = 0; s < FSTEPS; s++)
        for (uint32_t l = 0; l < FL; l++) {
            const uint32_t e = elem[s], n = n_new[s];
            const size_t es = esize(e), at = ((size_t)s * FL + l) * per * sizeof(float);
            const size_t o_at = ((size_t)s * FL + l) * 2 * qrow;
            struct tkv_tensor k = cl_tensor(e, in_mem, at, in_bytes);
            struct tkv_tensor v = cl_tensor(e, in_mem, at + n * row * es, in_bytes);
            struct tkv_tensor q = cl_tensor(e, in_mem, at + 2 * n * row * es, in_bytes);
            struct tkv_tensor o = cl_tensor(TKV_ELEM_F32, out_mem, o_at * sizeof(float), out_bytes);
            struct tkv_attention_options opts = { .struct_size = sizeof opts, .window = window[s] };
            if (tkv_cache_append_attention(g, seq, l, n, &k, &v, QH, &q, &o, &opts) != TKV_OK)
                fail_msg("step %u layer %u: %s", s, l, tkv_last_error());
            struct tkv_tensor hk = host_tensor(e, in + at), hv = host_tensor(e, in + at + n * row * es);
            struct tkv_tensor hq = host_tensor(e, in + at + 2 * n * row * es);
            struct tkv_tensor ho = host_tensor(TKV_ELEM_F32, cpu_out + o_at);
            assert_int_equal(tkv_cache_append_tensors(c, seq, l, n, &hk, &hv), TKV_OK);
            assert_int_equal(tkv_attention_tensors(c, l, 1, &seq, &n, QH, &hq, &ho, &opts), TKV_OK);
        }
    assert_int_equal(clEnqueueReadBuffer(cl_q, out_mem, CL_TRUE, 0, out_bytes, dev_out, 0, NULL, NULL), CL_SUCCESS);
    double worst = 0;
    for (uint32_t s = 0; s < FSTEPS; s++)
        for (uint32_t l = 0; l < FL; l++)
            for (uint32_t r = 0; r < n_new[s] * QH; r++) {
                const size_t base = ((size_t)s * FL + l) * 2 * qrow + (size_t)r * D;
                const double rel = row_error(cpu_out + base, dev_out + base, D);
                worst = fmax(worst, rel);
                if (rel > ATTN_TOLERANCE)
                    fail_msg("step %u layer %u (%s) query row %u: relative error %.3g", s, l,
                             tkv_type_name(types[l]), r, rel);
            }
    print_message("append_attention (opencl, host's device) vs two calls (cpu): worst attention error %.3g\n",
                  worst);
    assert_same_rows(g, c);
    uint32_t len = 0;
    assert_int_equal(tkv_cache_length(g, 0, FL - 1, &len), TKV_OK);
    assert_int_equal(len, PRE + 5);
    clReleaseMemObject(in_mem);
    clReleaseMemObject(out_mem);
    free(x);
    free(in);
    free(dev_out);
    free(cpu_out);
    tkv_cache_destroy(g);
    tkv_cache_destroy(c);
}

/* Bad device tensors: refused naming the argument; the cache unchanged. */
static void refuses_bad_tensors(void **state)
{
    (void)state;
    const size_t n = (size_t)KV * D, nq = (size_t)QH * D;
    float *init = malloc(sizeof *init * (2 * n + nq));
    for (size_t i = 0; i < 2 * n + nq; i++)
        init[i] = gauss();
    cl_mem m = new_buffer((2 * n + nq) * 4, init), o = new_buffer(nq * 4, NULL);
    free(init);
    uint32_t before = 0, after = 0, seq = 0, one = 1;
    assert_int_equal(tkv_cache_length(cache, 0, 1, &before), TKV_OK);
    struct tkv_tensor k = cl_tensor(TKV_ELEM_F32, m, 0, (2 * n + nq) * 4), v = k;
    v.offset = n * 4;

    /* beyond the buffer the host described */
    struct tkv_tensor bad = v;
    bad.size = n * 4 + 4;
    assert_int_equal(tkv_cache_append_tensors(cache, 0, 1, 1, &k, &bad), TKV_ERANGE);
    assert_non_null(strstr(tkv_last_error(), "v holds"));
    /* the host described more than the cl_mem holds: the plugin checks */
    bad = v;
    bad.size = 1u << 30;
    bad.offset = (2 * n + nq) * 4 - 4;
    assert_int_equal(tkv_cache_append_tensors(cache, 0, 1, 1, &k, &bad), TKV_ERANGE);
    assert_non_null(strstr(tkv_last_error(), "cl_mem holds"));
    /* misaligned, a Vulkan buffer, data set, an old struct_size, no handle */
    bad = v;
    bad.offset = 2;
    assert_int_equal(tkv_cache_append_tensors(cache, 0, 1, 1, &k, &bad), TKV_EINVAL);
    assert_non_null(strstr(tkv_last_error(), "offset 2"));
    bad = v;
    bad.memory = TKV_MEMORY_VULKAN;
    assert_int_equal(tkv_cache_append_tensors(cache, 0, 1, 1, &k, &bad), TKV_EINVAL);
    assert_non_null(strstr(tkv_last_error(), "Vulkan buffer"));
    bad = v;
    bad.data = &bad;
    assert_int_equal(tkv_cache_append_tensors(cache, 0, 1, 1, &k, &bad), TKV_EINVAL);
    bad = v;
    bad.struct_size = offsetof(struct tkv_tensor, handle);
    assert_int_equal(tkv_cache_append_tensors(cache, 0, 1, 1, &k, &bad), TKV_EINVAL);
    assert_non_null(strstr(tkv_last_error(), "predates device memory"));
    bad = v;
    bad.handle = 0;
    assert_int_equal(tkv_cache_append_tensors(cache, 0, 1, 1, &k, &bad), TKV_EINVAL);
    /* a buffer of another context */
    cl_int err;
    cl_context other = clCreateContext(NULL, 1, &cl_dev, NULL, NULL, &err);
    assert_int_equal(err, CL_SUCCESS);
    cl_mem foreign = clCreateBuffer(other, CL_MEM_READ_WRITE, n * 4, NULL, &err);
    assert_int_equal(err, CL_SUCCESS);
    bad = cl_tensor(TKV_ELEM_F32, foreign, 0, n * 4);
    assert_int_equal(tkv_cache_append_tensors(cache, 0, 1, 1, &k, &bad), TKV_EINVAL);
    assert_non_null(strstr(tkv_last_error(), "another cl_context"));
    assert_int_equal(tkv_cache_length(cache, 0, 1, &after), TKV_OK);
    assert_int_equal(after, before);

    /* attention: lse and device_ns need a wait, out beyond its buffer */
    struct tkv_tensor q = cl_tensor(TKV_ELEM_F32, m, 2 * n * 4, (2 * n + nq) * 4);
    struct tkv_tensor out = cl_tensor(TKV_ELEM_F32, o, 0, nq * 4);
    float lse[QH];
    uint64_t ns = 0;
    struct tkv_attention_options opts = { .struct_size = sizeof opts, .lse = lse };
    assert_int_equal(tkv_attention_tensors(cache, 1, 1, &seq, &one, QH, &q, &out, &opts), TKV_EUNSUPPORTED);
    assert_non_null(strstr(tkv_last_error(), "lse"));
    opts = (struct tkv_attention_options){ .struct_size = sizeof opts, .device_ns = &ns };
    assert_int_equal(tkv_attention_tensors(cache, 1, 1, &seq, &one, QH, &q, &out, &opts), TKV_EUNSUPPORTED);
    bad = out;
    bad.offset = 4;
    assert_int_equal(tkv_attention_tensors(cache, 1, 1, &seq, &one, QH, &q, &bad, NULL), TKV_ERANGE);
    assert_non_null(strstr(tkv_last_error(), "out holds"));
    /* q in device memory, out in host memory: synchronous, and correct */
    float host_out[QH * D], host_q[QH * D], ref[QH * D];
    assert_int_equal(clEnqueueReadBuffer(cl_q, m, CL_TRUE, 2 * n * 4, nq * 4, host_q, 0, NULL, NULL), CL_SUCCESS);
    struct tkv_tensor ho = host_tensor(TKV_ELEM_F32, host_out);
    assert_int_equal(tkv_attention_tensors(cache, 1, 1, &seq, &one, QH, &q, &ho, NULL), TKV_OK);
    assert_int_equal(tkv_attention(cache, 1, 1, &seq, 1, QH, host_q, ref, NULL), TKV_OK);
    assert_memory_equal(host_out, ref, sizeof ref);

    /* device tensors on a context not opened on the host's device */
    assert_int_equal(tkv_cache_append_tensors(cache_cpu, 0, 1, 1, &k, &v), TKV_EUNSUPPORTED);
    assert_non_null(strstr(tkv_last_error(), "host_device"));
    clReleaseMemObject(foreign);
    clReleaseContext(other);
    clReleaseMemObject(m);
    clReleaseMemObject(o);
}

/* Opening on a host device: the tag names the backend, the handles and the
 * queue are checked. */
static void refuses_bad_host_devices(void **state)
{
    (void)state;
    tkv_context *c = NULL;
    struct tkv_host_device h = host_of(cl_q);
    assert_int_equal(open_tkv("cpu", &h, &c), TKV_EINVAL);
    assert_non_null(strstr(tkv_last_error(), "OpenCL device"));
    h.backend = 7;
    assert_int_equal(open_tkv(NULL, &h, &c), TKV_EINVAL);
    h = host_of(NULL);
    assert_int_equal(open_tkv(NULL, &h, &c), TKV_EINVAL);
    assert_non_null(strstr(tkv_last_error(), "queue is NULL"));
    h = host_of(cl_q);
    h.struct_size = 8;
    assert_int_equal(open_tkv(NULL, &h, &c), TKV_EINVAL);
    /* a 0.5 struct (it ends before tkv_host_vulkan.flags) is still taken */
    h = host_of(cl_q);
    h.struct_size = (uint32_t)offsetof(struct tkv_host_device, vulkan.flags);
    assert_int_equal(open_tkv(NULL, &h, &c), TKV_OK);
    tkv_context_close(c);
    c = NULL;
    /* an out-of-order queue, where the driver has one */
    cl_int err;
    cl_command_queue ooo = clCreateCommandQueue(cl_ctx, cl_dev, CL_QUEUE_OUT_OF_ORDER_EXEC_MODE_ENABLE, &err);
    if (err == CL_SUCCESS) {
        h = host_of(ooo);
        assert_int_equal(open_tkv(NULL, &h, &c), TKV_EUNSUPPORTED);
        assert_non_null(strstr(tkv_last_error(), "out of order"));
        clReleaseCommandQueue(ooo);
    }
    assert_null(c);
}

int main(void)
{
    rng_state = 777u;
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(opens_on_the_hosts_device),
        cmocka_unit_test(matches_cpu),
        cmocka_unit_test(fused_step_matches_two_calls),
        cmocka_unit_test(refuses_bad_tensors),
        cmocka_unit_test(refuses_bad_host_devices),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
