/* SPDX-License-Identifier: MIT */
/*
 * Cross-backend conformance (docs/format.md: the formats are a contract). Usage: test_backends BACKEND. The same rows appended on BACKEND
 * and on cpu must give the same bytes (the saved cache files are compared),
 * the same dequantized values, decode attention outputs that agree within a
 * stated tolerance, and files written by one backend must be read by the
 * other.
 *
 * A backend whose plugin or device is missing makes the test exit 77
 * (skipped), except under CI=true, where the GPU plugins must run for real
 * (lavapipe, PoCL) and a missing device is a failure.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>
#include <fnmatch.h>

#include "turbokv.h"
#include "saved_bytes.h"
#include "test_args.h"

/* Outputs differ only by float summation order (split-K merges, parallel
 * reductions): relative to the largest output magnitude of the row. */
#define ATTN_TOLERANCE 2e-4
/* Dequantized values come from identical bytes: only the last ulp of the
 * inverse rotation may differ. */
#define DEQUANT_TOLERANCE 1e-5

static const char *backend;
static tkv_context *ctx_b, *ctx_cpu;
static char tmpdir[] = "/tmp/tkv-test-backends-XXXXXX";

static int open_backend(const char *name, tkv_context **ctx)
{
    struct tkv_context_options o = {
        .struct_size = sizeof o, .ignore_env = 1, .plugin_path = getenv("TURBO_PLUGIN_PATH"), .backend = name,
    };
    return tkv_context_open(&o, ctx);
}

static uint32_t rng_state = 12345;

static float gauss(void)
{
    float u1, u2;
    rng_state = rng_state * 1664525u + 1013904223u;
    u1 = ((rng_state >> 8) + 1) / 16777217.0f;
    rng_state = rng_state * 1664525u + 1013904223u;
    u2 = (rng_state >> 8) / 16777216.0f;
    return sqrtf(-2.0f * logf(u1)) * cosf(6.2831853f * u2);
}

/* Rows shaped like real caches, with a few special ones: a zero row, a row
 * holding NaN and Inf, and values beyond the fp16 range. */
static void fill_rows(float *x, uint32_t n_tokens, uint32_t row, float scale)
{
    for (uint32_t i = 0; i < n_tokens * row; i++)
        x[i] = scale * gauss() * ((i % 17) == 3 ? 10.0f : 1.0f);
    if (n_tokens > 3) {
        memset(x + row, 0, row * sizeof *x);
        x[2 * row + 1] = NAN;
        x[2 * row + 5] = INFINITY;
        x[3 * row] = 1e6f;
        x[3 * row + 1] = -7e4f;
    }
}

/* fill_rows' special rows are for the bytes test. Attention takes finite
 * values within fp16's range: a key holding 1e6 makes scores of ~1e5 whose
 * float rounding, which depends on the order of the sum, exceeds the
 * tolerance where its large terms nearly cancel (with other seeds of the
 * generator: f32 keys 2.3e-3, f16 keys saturated to +-65504 4.5e-4). */
static void attention_rows(float *x, size_t n)
{
    for (size_t i = 0; i < n; i++)
        x[i] = isfinite(x[i]) && fabsf(x[i]) <= 65504.0f ? x[i] : 1.0f;
}

/* Output row r's error against the reference a: the largest difference
 * over its dim values relative to its largest magnitude (at least floor) */
static double row_error(const float *a, const float *b, size_t r, uint32_t dim, double floor)
{
    double mag = 0, err = 0;
    for (uint32_t i = 0; i < dim; i++) {
        mag = fmax(mag, fabs(a[r * dim + i]));
        err = fmax(err, fabs(a[r * dim + i] - b[r * dim + i]));
    }
    return err / (mag > floor ? mag : floor);
}

/* 1 if the backend under test holds keys kt and values vt (its device
 * capabilities); else prints that the pair is skipped and why, once per pair. */
static int backend_holds(uint32_t kt, uint32_t vt)
{
    static uint64_t told[64];
    struct tkv_device_caps caps = { .struct_size = sizeof caps };
    assert_int_equal(tkv_context_caps(ctx_b, &caps), TKV_OK);
    if ((caps.k_types & (1u << kt)) && (caps.v_types & (1u << vt)))
        return 1;
    uint64_t bit = 1ull << (vt % 64);
    if (!(told[kt % 64] & bit)) {
        told[kt % 64] |= bit;
        print_message("%s: skipped K %s / V %s: the device's capabilities lack %s\n", backend, tkv_type_name(kt),
                      tkv_type_name(vt), tkv_type_name(caps.k_types & (1u << kt) ? vt : kt));
    }
    return 0;
}

/* TKV_SKIP_CONFIGS=PATTERN,...: the configurations of attention_agrees,
 * split_attention_rotations and wide_rows_agree whose label matches one of
 * the shell patterns are left out, each named (a variant run whose knobs
 * reach only some of the shaders: tests/meson.build says which and why).
 * Labels: "K/V@head_dim" with the types' names ("turbo2/q8_0@128"), and
 * split_attention_rotations' "K/V@head_dim/rotation" (wht, dense, none,
 * rotor). A configuration left out still draws its random data, so that
 * the others run on the rows and queries they get with none left out. */
static int config_skipped(uint32_t kt, uint32_t vt, uint32_t dim, uint32_t rotation)
{
    static const char *const rotation_names[] = { [TKV_ROTATION_WHT] = "wht", [TKV_ROTATION_DENSE] = "dense",
                                                  [TKV_ROTATION_NONE] = "none", [TKV_ROTATION_ROTOR] = "rotor" };
    const char *list = getenv("TKV_SKIP_CONFIGS");
    if (!list || !*list)
        return 0;
    char label[96], pattern[96];
    int n = snprintf(label, sizeof label, "%s/%s@%u", tkv_type_name(kt), tkv_type_name(vt), dim);
    if (rotation)
        snprintf(label + n, sizeof label - (size_t)n, "/%s",
                 rotation < TKV_ROTATION_COUNT && rotation_names[rotation] ? rotation_names[rotation] : "?");
    for (const char *p = list; *p; p = next_entry(p)) {
        snprintf(pattern, sizeof pattern, "%.*s", (int)strcspn(p, ","), p);
        if (*pattern && fnmatch(pattern, label, 0) == 0) {
            print_message("%s: skipped %s (TKV_SKIP_CONFIGS: %s)\n", backend, label, pattern);
            return 1;
        }
    }
    return 0;
}

/* The draws of fill_rows on n_tokens x row values, or of n queries: what a
 * configuration left out would have drawn. */
static void skip_draws(size_t n)
{
    while (n--)
        gauss();
}

static tkv_cache *make(tkv_context *ctx, uint32_t kv_heads, uint32_t dim, uint32_t cap, uint32_t n_seqs,
                       uint32_t kt, uint32_t vt, uint32_t rotation, uint32_t scale_mode)
{
    struct tkv_cache_params p = {
        .struct_size = sizeof p, .n_layers = 1, .n_kv_heads = kv_heads, .head_dim = dim, .capacity = cap,
        .n_seqs = n_seqs, .k_type = kt, .v_type = vt, .rotation = rotation, .scale_mode = scale_mode,
    };
    tkv_cache *c = NULL;
    int rc = tkv_cache_create(ctx, &p, &c);
    if (rc != TKV_OK)
        fail_msg("cache on %s: %s", tkv_context_backend(ctx), tkv_last_error());
    return c;
}

static long compare_saved(tkv_cache *a, tkv_cache *b) { return compare_saved_in(tmpdir, a, b); }

static void same_bytes_every_format(void **state)
{
    (void)state;
    static const uint32_t dims[] = { 8, 16, 64, 80, 128, 576 };
    static const uint32_t rotations[] = { TKV_ROTATION_WHT, TKV_ROTATION_DENSE, TKV_ROTATION_NONE, TKV_ROTATION_ROTOR };
    struct tkv_device_caps caps = { .struct_size = sizeof caps };
    assert_int_equal(tkv_context_caps(ctx_b, &caps), TKV_OK);
    if (!(caps.rotations & (1u << TKV_ROTATION_ROTOR)))
        print_message("%s: skipped rotation rotor: the device's capabilities lack it\n", backend);
    enum { HEADS = 2, TOKENS = 37 };
    long total_diff = 0, total_bytes = 0;
    for (size_t d = 0; d < sizeof dims / sizeof *dims; d++) {
        uint32_t row = HEADS * dims[d];
        float *k = malloc(sizeof *k * TOKENS * row), *v = malloc(sizeof *v * TOKENS * row);
        float *ka = malloc(sizeof *ka * TOKENS * row), *kb = malloc(sizeof *kb * TOKENS * row);
        for (uint32_t t = 0; t < TKV_TYPE_COUNT; t++)
            for (size_t r = 0; r < sizeof rotations / sizeof *rotations; r++)
                for (uint32_t sm = TKV_SCALE_NORM; sm <= TKV_SCALE_NORM_CORRECTED; sm++) {
                    if (!tkv_type_is_turbo(t) && (r > 0 || sm > TKV_SCALE_NORM))
                        continue; /* rotation and scale mode only shape turbo rows */
                    /* the formats of revision 1 draw their rows apart: the data of every
                     * other case (and of the tests after this one) stays what it was */
                    int added = t >= TKV_TYPE_FIRST_R1 || rotations[r] >= TKV_ROTATION_FIRST_R1;
                    uint32_t saved = rng_state;
                    fill_rows(k, TOKENS, row, 5.0f);
                    fill_rows(v, TOKENS, row, 0.5f);
                    if (added)
                        rng_state = saved;
                    uint32_t vt = tkv_type_is_qjl(t) ? TKV_TYPE_F16 : t; /* QJL: keys only */
                    if (!backend_holds(t, vt) || (r > 0 && !(caps.rotations & (1u << rotations[r]))))
                        continue;
                    tkv_cache *a = make(ctx_cpu, HEADS, dims[d], TOKENS, 1, t, vt, rotations[r], sm);
                    tkv_cache *b = make(ctx_b, HEADS, dims[d], TOKENS, 1, t, vt, rotations[r], sm);
                    assert_int_equal(tkv_cache_append(a, 0, 0, TOKENS, k, v), TKV_OK);
                    if (tkv_cache_append(b, 0, 0, TOKENS, k, v) != TKV_OK)
                        fail_msg("append on %s: %s", backend, tkv_last_error());
                    long diff = compare_saved(a, b);
                    if (diff)
                        print_message("%s vs cpu: %s head_dim %u rotation %u scale %u: %ld bytes differ\n", backend,
                                      tkv_type_name(t), dims[d], rotations[r], sm, diff);
                    total_diff += diff;
                    total_bytes += (long)TOKENS * HEADS * (tkv_row_bytes(t, dims[d]) + tkv_row_bytes(vt, dims[d]));
                    for (int w = 0; w < 2; w++) {
                        assert_int_equal(tkv_cache_dequantize(a, 0, 0, w, 0, TOKENS, ka), TKV_OK);
                        assert_int_equal(tkv_cache_dequantize(b, 0, 0, w, 0, TOKENS, kb), TKV_OK);
                        for (uint32_t i = 0; i < TOKENS * row; i++)
                            if (fabsf(ka[i] - kb[i]) > DEQUANT_TOLERANCE * (1.0f + fabsf(ka[i])))
                                fail_msg("%s dequantize %s head_dim %u [%u]: %g vs cpu %g", backend, tkv_type_name(t),
                                         dims[d], i, kb[i], ka[i]);
                    }
                    tkv_cache_destroy(a);
                    tkv_cache_destroy(b);
                }
        free(k);
        free(v);
        free(ka);
        free(kb);
    }
    print_message("%s vs cpu: %ld of %ld stored bytes differ\n", backend, total_diff, total_bytes);
    assert_int_equal(total_diff, 0);
}

static void attention_agrees(void **state)
{
    (void)state;
    static const struct {
        uint32_t kt, vt;
    } pairs[] = {
        { TKV_TYPE_F32, TKV_TYPE_F32 },       { TKV_TYPE_F16, TKV_TYPE_F16 },
        { TKV_TYPE_Q8_0, TKV_TYPE_TURBO3 },   { TKV_TYPE_TURBO4, TKV_TYPE_TURBO4 },
        { TKV_TYPE_TURBO3, TKV_TYPE_TURBO3 }, { TKV_TYPE_TURBO2, TKV_TYPE_Q8_0 },
        { TKV_TYPE_TURBO3_OUT, TKV_TYPE_TURBO3_OUT }, { TKV_TYPE_TURBO4_OUT, TKV_TYPE_TURBO3 },
    };
    /* query rows a sequence (gqa x n_q): 1 and 4 at gqa 1, 4 and 8 at gqa 4
     * (the OpenCL plugin's tensor-core kernels take units of 4 and 8 rows
     * differently; 16: paged_and_options_agree) */
    static const uint32_t dims[] = { 64, 128 }, gqa[] = { 1, 4 }, ctxs[] = { 1, 100, 1500 };
    static const uint32_t nqs[2][2] = { { 1, 4 }, { 1, 2 } };
    enum { KV = 2, SEQS = 2 };
    double worst = 0;
    for (size_t p = 0; p < sizeof pairs / sizeof *pairs; p++)
        for (size_t d = 0; d < 2 && backend_holds(pairs[p].kt, pairs[p].vt); d++) {
            const int skip = config_skipped(pairs[p].kt, pairs[p].vt, dims[d], 0);
            for (size_t c = 0; c < 3; c++) {
                uint32_t dim = dims[d], n_ctx = ctxs[c], row = KV * dim;
                if (skip) { /* what the loops below draw */
                    for (uint32_t s = 0; s < SEQS; s++)
                        skip_draws(2 * (size_t)(n_ctx + 7 * s) * row);
                    for (size_t g = 0; g < 2; g++)
                        for (size_t qn = 0; qn < 2; qn++)
                            skip_draws((size_t)SEQS * (nqs[g][qn] < n_ctx ? nqs[g][qn] : 1) * KV * gqa[g] * dim);
                    continue;
                }
                tkv_cache *a = make(ctx_cpu, KV, dim, n_ctx + 7, SEQS, pairs[p].kt, pairs[p].vt, 0, 0);
                tkv_cache *b = make(ctx_b, KV, dim, n_ctx + 7, SEQS, pairs[p].kt, pairs[p].vt, 0, 0);
                float *k = malloc(sizeof *k * (n_ctx + 7) * row), *v = malloc(sizeof *v * (n_ctx + 7) * row);
                for (uint32_t s = 0; s < SEQS; s++) {
                    uint32_t len = n_ctx + 7 * s; /* the sequences differ in length */
                    fill_rows(k, len, row, 3.0f);
                    fill_rows(v, len, row, 0.5f);
                    attention_rows(k, (size_t)len * row);
                    attention_rows(v, (size_t)len * row);
                    assert_int_equal(tkv_cache_append(a, s, 0, len, k, v), TKV_OK);
                    assert_int_equal(tkv_cache_append(b, s, 0, len, k, v), TKV_OK);
                }
                for (size_t g = 0; g < 2; g++)
                    for (size_t qn = 0; qn < 2; qn++) {
                        uint32_t nq = nqs[g][qn] < n_ctx ? nqs[g][qn] : 1, qh = KV * gqa[g];
                        size_t n = (size_t)SEQS * nq * qh * dim;
                        float *q = malloc(sizeof *q * n), *oa = malloc(sizeof *oa * n), *ob = malloc(sizeof *ob * n);
                        for (size_t i = 0; i < n; i++)
                            q[i] = 2.0f * gauss();
                        uint32_t ids[SEQS] = { 1, 0 };
                        struct tkv_attention_stats sa, sb;
                        assert_int_equal(tkv_attention(a, 0, SEQS, ids, nq, qh, q, oa, &sa), TKV_OK);
                        if (tkv_attention(b, 0, SEQS, ids, nq, qh, q, ob, &sb) != TKV_OK)
                            fail_msg("attention on %s: %s", backend, tkv_last_error());
                        assert_int_equal(sa.rows_total, sb.rows_total);
                        assert_true(sb.rows_skipped <= sb.rows_total);
                        for (size_t r = 0; r < n / dim; r++) {
                            double rel = row_error(oa, ob, r, dim, 1e-6);
                            worst = fmax(worst, rel);
                            if (rel > ATTN_TOLERANCE)
                                fail_msg("%s attention K %s V %s head_dim %u ctx %u gqa %u n_q %u row %zu: relative "
                                         "error %.3g",
                                         backend, tkv_type_name(pairs[p].kt), tkv_type_name(pairs[p].vt), dim, n_ctx,
                                         gqa[g], nq, r, rel);
                        }
                        free(q);
                        free(oa);
                        free(ob);
                    }
                free(k);
                free(v);
                tkv_cache_destroy(a);
                tkv_cache_destroy(b);
            }
        }
    print_message("%s vs cpu: worst attention relative error %.3g (tolerance %.1g)\n", backend, worst,
                  ATTN_TOLERANCE);
}

/* The outlier-split types attend under every rotation the device has and
 * at head_dims of several groups and of two-byte outlier indices (576),
 * paged in blocks of 7 (rows straddle the device's tiles), against cpu
 * within the tolerance: the outliers score against q itself and accumulate
 * unrotated on every rotation path (the identity included, where a GPU
 * might take raw queries for prepared ones). */
static void split_attention_rotations(void **state)
{
    (void)state;
    static const struct {
        uint32_t kt, vt;
    } pairs[] = { { TKV_TYPE_TURBO3_OUT, TKV_TYPE_TURBO4_OUT }, { TKV_TYPE_TURBO4_OUT, TKV_TYPE_TURBO3_OUT } };
    static const uint32_t dims[] = { 80, 576 };
    static const uint32_t rotations[] = { TKV_ROTATION_WHT, TKV_ROTATION_DENSE, TKV_ROTATION_NONE, TKV_ROTATION_ROTOR };
    enum { KV = 2, GQA = 4, NQ = 2, CTX = 300 };
    struct tkv_device_caps caps = { .struct_size = sizeof caps };
    assert_int_equal(tkv_context_caps(ctx_b, &caps), TKV_OK);
    double worst = 0;
    int ran = 0;
    const uint32_t saved = rng_state; /* the tests after this one draw what they drew before it */
    for (size_t p = 0; p < sizeof pairs / sizeof *pairs; p++)
        for (size_t d = 0; d < sizeof dims / sizeof *dims && backend_holds(pairs[p].kt, pairs[p].vt); d++)
            for (size_t r = 0; r < sizeof rotations / sizeof *rotations; r++) {
                if (!(caps.rotations & (1u << rotations[r])))
                    continue;
                const uint32_t dim = dims[d], row = KV * dim, qh = KV * GQA;
                if (config_skipped(pairs[p].kt, pairs[p].vt, dim, rotations[r])) {
                    skip_draws(2 * (size_t)CTX * row + (size_t)NQ * qh * dim); /* K, V, q below */
                    continue;
                }
                struct tkv_cache_params cp = {
                    .struct_size = sizeof cp, .n_layers = 1, .n_kv_heads = KV, .head_dim = dim, .capacity = CTX,
                    .n_seqs = 1, .k_type = pairs[p].kt, .v_type = pairs[p].vt, .rotation = rotations[r],
                    .block_tokens = 7,
                };
                tkv_cache *a = NULL, *b = NULL;
                assert_int_equal(tkv_cache_create(ctx_cpu, &cp, &a), TKV_OK);
                if (tkv_cache_create(ctx_b, &cp, &b) != TKV_OK)
                    fail_msg("cache on %s: %s", backend, tkv_last_error());
                float *k = malloc(sizeof *k * CTX * row), *v = malloc(sizeof *v * CTX * row);
                fill_rows(k, CTX, row, 3.0f);
                fill_rows(v, CTX, row, 0.5f);
                attention_rows(k, (size_t)CTX * row);
                attention_rows(v, (size_t)CTX * row);
                assert_int_equal(tkv_cache_append(a, 0, 0, CTX, k, v), TKV_OK);
                assert_int_equal(tkv_cache_append(b, 0, 0, CTX, k, v), TKV_OK);
                assert_int_equal(compare_saved(a, b), 0);
                size_t n = (size_t)NQ * qh * dim;
                float *q = malloc(sizeof *q * n), *oa = malloc(sizeof *oa * n), *ob = malloc(sizeof *ob * n);
                for (size_t i = 0; i < n; i++)
                    q[i] = 2.0f * gauss();
                uint32_t id = 0;
                assert_int_equal(tkv_attention(a, 0, 1, &id, NQ, qh, q, oa, NULL), TKV_OK);
                if (tkv_attention(b, 0, 1, &id, NQ, qh, q, ob, NULL) != TKV_OK)
                    fail_msg("attention on %s: %s", backend, tkv_last_error());
                for (size_t rr = 0; rr < n / dim; rr++) {
                    double mag = 0, err = 0;
                    for (uint32_t i = 0; i < dim; i++) {
                        mag = fmax(mag, fabs(oa[rr * dim + i]));
                        err = fmax(err, fabs(oa[rr * dim + i] - ob[rr * dim + i]));
                    }
                    double rel = err / (mag > 1e-6 ? mag : 1e-6);
                    worst = fmax(worst, rel);
                    if (rel > ATTN_TOLERANCE)
                        fail_msg("%s attention K %s V %s head_dim %u rotation %u row %zu: relative error %.3g", backend,
                                 tkv_type_name(pairs[p].kt), tkv_type_name(pairs[p].vt), dim, rotations[r], rr, rel);
                }
                ran++;
                free(q), free(oa), free(ob), free(k), free(v);
                tkv_cache_destroy(a);
                tkv_cache_destroy(b);
            }
    rng_state = saved;
    print_message("%s vs cpu: outlier-split attention, %d configurations, worst relative error %.3g\n", backend, ran,
                  worst);
}

/* Paged (block_tokens bt, blocks scattered by interleaved appends, a fork
 * with copy-on-write, a truncation) on the backend against contiguous on
 * cpu built directly: the same bytes, and attention with mixed n_q, a
 * window, soft-capping and log-sum-exp within the tolerance. */
static double paged_options_case(uint32_t kt, uint32_t vt, uint32_t dim, uint32_t bt, int skip)
{
    double worst = 0;
    enum { KV = 2, QH = 8, CAP = 400, SEQS = 3, Q_ROWS = 9 /* nq below */ };
    const uint32_t DIM = dim;
    if (skip) { /* left out (TKV_SKIP_CONFIGS): what it draws, K and V and the queries */
        skip_draws(2 * (size_t)CAP * KV * DIM + (size_t)Q_ROWS * QH * DIM);
        return 0;
    }
    struct tkv_cache_params p = {
        .struct_size = sizeof p, .n_layers = 1, .n_kv_heads = KV, .head_dim = DIM, .capacity = CAP, .n_seqs = SEQS,
        .k_type = kt, .v_type = vt, .block_tokens = bt,
    };
    tkv_cache *b = NULL, *a = NULL;
    if (tkv_cache_create(ctx_b, &p, &b) != TKV_OK)
        fail_msg("paged cache on %s: %s", backend, tkv_last_error());
    p.block_tokens = CAP;
    assert_int_equal(tkv_cache_create(ctx_cpu, &p, &a), TKV_OK);
    float *k = malloc(sizeof *k * CAP * KV * DIM), *v = malloc(sizeof *v * CAP * KV * DIM);
    fill_rows(k, CAP, KV * DIM, 3.0f);
    fill_rows(v, CAP, KV * DIM, 0.5f);
    attention_rows(k, (size_t)CAP * KV * DIM);
    attention_rows(v, (size_t)CAP * KV * DIM);
    const size_t row = KV * DIM;
    /* backend: seq 0 gets 0..300 in chunks interleaved with seq 2's 0..150;
     * seq 1 = fork of seq 0 at 200, truncated to 180, then rows 250..269 */
    for (uint32_t at = 0; at < 300; at += 23) {
        uint32_t n = at + 23 <= 300 ? 23 : 300 - at;
        assert_int_equal(tkv_cache_append(b, 0, 0, n, k + at * row, v + at * row), TKV_OK);
        if (at < 150)
            assert_int_equal(tkv_cache_append(b, 2, 0, at + 23 <= 150 ? 23 : 150 - at, k + (at + 50) * row,
                                              v + (at + 50) * row), TKV_OK);
    }
    assert_int_equal(tkv_seq_copy(b, 0, 1, 200), TKV_OK);
    assert_int_equal(tkv_seq_truncate(b, 1, 180), TKV_OK);
    assert_int_equal(tkv_cache_append(b, 1, 0, 20, k + 250 * row, v + 250 * row), TKV_OK);
    /* cpu: the same sequences, contiguous, appended in one go */
    assert_int_equal(tkv_cache_append(a, 0, 0, 300, k, v), TKV_OK);
    assert_int_equal(tkv_cache_append(a, 1, 0, 180, k, v), TKV_OK);
    assert_int_equal(tkv_cache_append(a, 1, 0, 20, k + 250 * row, v + 250 * row), TKV_OK);
    assert_int_equal(tkv_cache_append(a, 2, 0, 150, k + 50 * row, v + 50 * row), TKV_OK);
    assert_int_equal(compare_saved(a, b), 0);

    uint32_t ids[SEQS] = { 2, 0, 1 }, nq[SEQS] = { 3, 1, 5 }, total = Q_ROWS;
    size_t n = (size_t)total * QH * DIM;
    float *q = malloc(sizeof *q * n), *oa = malloc(sizeof *oa * n), *ob = malloc(sizeof *ob * n);
    float la[9 * QH], lb[9 * QH];
    for (size_t i = 0; i < n; i++)
        q[i] = 2.0f * gauss();
    static const struct {
        uint32_t window;
        float softcap;
    } opts[] = { { 0, 0 }, { 50, 0 }, { 0, 4.0f }, { 33, 2.5f } };
    for (size_t o = 0; o < sizeof opts / sizeof *opts; o++) {
        struct tkv_attention_options oo = {
            .struct_size = sizeof oo, .window = opts[o].window, .softcap = opts[o].softcap, .lse = la,
        };
        assert_int_equal(tkv_attention_ex(a, 0, SEQS, ids, nq, QH, q, oa, &oo), TKV_OK);
        oo.lse = lb;
        if (tkv_attention_ex(b, 0, SEQS, ids, nq, QH, q, ob, &oo) != TKV_OK)
            fail_msg("attention on %s: %s", backend, tkv_last_error());
        for (size_t r = 0; r < n / DIM; r++) {
            const double rel = row_error(oa, ob, r, DIM, 1e-6);
            worst = fmax(worst, rel);
            if (rel > ATTN_TOLERANCE)
                fail_msg("%s paged attention K %s V %s head_dim %u block_tokens %u (window %u, softcap %g) row %zu: "
                         "relative error %.3g",
                         backend, tkv_type_name(kt), tkv_type_name(vt), dim, bt, opts[o].window,
                         (double)opts[o].softcap, r, rel);
            if (fabs((double)la[r] - (double)lb[r]) > 1e-4 * (1.0 + fabs((double)la[r])))
                fail_msg("%s lse K %s V %s head_dim %u block_tokens %u row %zu: %.7g vs cpu %.7g", backend,
                         tkv_type_name(kt), tkv_type_name(vt), dim, bt, r, (double)lb[r], (double)la[r]);
        }
    }
    free(q);
    free(oa);
    free(ob);
    free(k);
    free(v);
    tkv_cache_destroy(a);
    tkv_cache_destroy(b);
    return worst;
}

static void paged_and_options_agree(void **state)
{
    (void)state;
    paged_options_case(TKV_TYPE_TURBO3, TKV_TYPE_TURBO3, 128, 7, 0);
    /* blocks of a multiple of 16 rows: the OpenCL plugin's tensor-core
     * kernels serve these (plugins/opencl/kernels/tensor.cl), turbo3o's in
     * units of 4 query rows (up to 20 rows a sequence here) */
    paged_options_case(TKV_TYPE_TURBO3, TKV_TYPE_TURBO3, 128, 32, 0);
    if (backend_holds(TKV_TYPE_TURBO3_OUT, TKV_TYPE_TURBO3_OUT))
        paged_options_case(TKV_TYPE_TURBO3_OUT, TKV_TYPE_TURBO3_OUT, 128, 32, 0);
}

/* V rows of small norms (~5e-5: heads whose values nearly vanish) attend
 * within the tolerance, relative to outputs as small as the rows: a path
 * that carries the weights times V's scales in fp16 (the tensor-core
 * kernels' B fragments, split into hi and lo halves) must keep them in
 * fp16's normal range whatever the norms. Two caches: every row at norm
 * ~5e-5, and norms stepping up 2^(10/3)-fold from one tile of 16 rows to
 * the next over periods of 64 rows (a kernel that rescales as larger norms
 * arrive must rescale the sums it holds; there an output's error counts
 * relative to a tenth of the largest rows' values at least: outputs that
 * nearly cancel differ by the order of float sums). turbo3
 * and turbo3o at head_dim 128 (the tensor-core kernels' types), 1,500
 * rows in a capacity of a multiple of 16 (what they take), GQA 4 with 1
 * and 2 query tokens (units of 4 and 8 query rows). */
static void small_values_agree(void **state)
{
    (void)state;
    enum { KV = 2, DIM = 128, GQA = 4, CTX = 1500, CAP = 1536, ROW = KV * DIM };
    static const uint32_t types[] = { TKV_TYPE_TURBO3, TKV_TYPE_TURBO3_OUT };
    float *k = malloc(sizeof *k * CTX * ROW), *v = malloc(sizeof *v * CTX * ROW);
    double worst = 0;
    for (size_t t = 0; t < 2; t++)
        for (int steps = 0; steps < 2; steps++) {
            if (!backend_holds(types[t], types[t]))
                continue;
            fill_rows(k, CTX, ROW, 3.0f);
            fill_rows(v, CTX, ROW, 1.0f);
            attention_rows(k, (size_t)CTX * ROW);
            attention_rows(v, (size_t)CTX * ROW);
            /* values of 1.5e-6: norms ~5e-5 (with fill_rows' tenfold values;
             * scales among fp16's subnormals) */
            const double scale = 1.5e-6, floor = 0.1 * scale * (steps ? 1024.0 : 1.0);
            for (uint32_t j = 0; j < CTX; j++) {
                const float f = (float)scale * (steps ? exp2f(10.0f / 3.0f * (float)(j / 16 % 4)) : 1.0f);
                for (uint32_t i = 0; i < ROW; i++)
                    v[(size_t)j * ROW + i] *= f;
            }
            tkv_cache *a = make(ctx_cpu, KV, DIM, CAP, 1, types[t], types[t], 0, 0);
            tkv_cache *b = make(ctx_b, KV, DIM, CAP, 1, types[t], types[t], 0, 0);
            assert_int_equal(tkv_cache_append(a, 0, 0, CTX, k, v), TKV_OK);
            assert_int_equal(tkv_cache_append(b, 0, 0, CTX, k, v), TKV_OK);
            for (uint32_t nq = 1; nq <= 2; nq++) {
                const size_t n = (size_t)nq * KV * GQA * DIM;
                float *q = malloc(sizeof *q * n), *oa = malloc(sizeof *oa * n), *ob = malloc(sizeof *ob * n);
                for (size_t i = 0; i < n; i++)
                    q[i] = 2.0f * gauss();
                uint32_t id = 0;
                assert_int_equal(tkv_attention(a, 0, 1, &id, nq, KV * GQA, q, oa, NULL), TKV_OK);
                if (tkv_attention(b, 0, 1, &id, nq, KV * GQA, q, ob, NULL) != TKV_OK)
                    fail_msg("attention on %s: %s", backend, tkv_last_error());
                for (size_t r = 0; r < n / DIM; r++) {
                    const double rel = row_error(oa, ob, r, DIM, floor);
                    worst = fmax(worst, rel);
                    if (rel > ATTN_TOLERANCE)
                        fail_msg("%s attention K/V %s, V norms %s, n_q %u row %zu: relative error %.3g", backend,
                                 tkv_type_name(types[t]), steps ? "from 5e-5 in steps" : "~5e-5", nq, r, rel);
                }
                free(q);
                free(oa);
                free(ob);
            }
            tkv_cache_destroy(a);
            tkv_cache_destroy(b);
        }
    free(k);
    free(v);
    print_message("%s vs cpu: small V norms, worst attention relative error %.3g (tolerance %.1g)\n", backend, worst,
                  ATTN_TOLERANCE);
}

/* A file written by one backend is read by the other, and both then answer
 * the same attention query. */
static void files_cross_backends(void **state)
{
    (void)state;
    enum { KV = 2, DIM = 128, LEN = 300, QH = 8 };
    char path[600];
    snprintf(path, sizeof path, "%s/cross.tkv", tmpdir);
    tkv_context *writers[2] = { ctx_b, ctx_cpu }, *readers[2] = { ctx_cpu, ctx_b };
    for (int dir = 0; dir < 2; dir++) {
        tkv_cache *w = make(writers[dir], KV, DIM, LEN, 1, TKV_TYPE_TURBO4, TKV_TYPE_TURBO3, 0, 0);
        float *k = malloc(sizeof *k * LEN * KV * DIM), *v = malloc(sizeof *v * LEN * KV * DIM);
        fill_rows(k, LEN, KV * DIM, 3.0f);
        fill_rows(v, LEN, KV * DIM, 0.5f);
        assert_int_equal(tkv_cache_append(w, 0, 0, LEN, k, v), TKV_OK);
        assert_int_equal(tkv_cache_save(w, path), TKV_OK);
        tkv_cache *r = NULL;
        if (tkv_cache_load(readers[dir], path, &r) != TKV_OK)
            fail_msg("load on %s: %s", tkv_context_backend(readers[dir]), tkv_last_error());
        float q[QH * DIM], ow[QH * DIM], orr[QH * DIM];
        for (int i = 0; i < QH * DIM; i++)
            q[i] = gauss();
        uint32_t id = 0;
        assert_int_equal(tkv_attention(w, 0, 1, &id, 1, QH, q, ow, NULL), TKV_OK);
        assert_int_equal(tkv_attention(r, 0, 1, &id, 1, QH, q, orr, NULL), TKV_OK);
        for (int i = 0; i < QH * DIM; i++)
            assert_true(fabsf(ow[i] - orr[i]) <= 1e-3f * (1.0f + fabsf(ow[i])));
        free(k);
        free(v);
        tkv_cache_destroy(w);
        tkv_cache_destroy(r);
    }
}

/* Sparse V near its limit, counted on the device: at threshold 0.999 a V row
 * is read only where its weight is within 0.1% of its running max (the
 * max itself and ties), so on random keys nearly every visible row is
 * skipped on every backend, whatever the device's chunks; the skip counts
 * the device sums over its work-groups and chunks must show that, within 5
 * points of the cpu reference's on the same rows (a device's chunks start
 * their running max anew: the rule of issue 11 for how far that may move
 * the counts, under the plugin's own plan). */
static struct tkv_attention_stats sparse_v_run(const char *be, uint32_t kt, uint32_t vt, const float *k,
                                               const float *v, const float *q, float *out, int kv, int dim,
                                               int ctx_len, int qh)
{
    char path[sizeof tmpdir + 32];
    snprintf(path, sizeof path, "%s/sparse.yaml", tmpdir);
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fputs("sparse_v: true\nsparse_v_threshold: 0.999\n", f);
    fclose(f);
    tkv_context *cs = NULL;
    struct tkv_context_options o = {
        .struct_size = sizeof o, .ignore_env = 1, .plugin_path = getenv("TURBO_PLUGIN_PATH"),
        .backend = be, .config_path = path,
    };
    if (tkv_context_open(&o, &cs) != TKV_OK)
        fail_msg("context with sparse V on %s: %s", be, tkv_last_error());
    tkv_cache *c = make(cs, (uint32_t)kv, (uint32_t)dim, (uint32_t)ctx_len, 1, kt, vt, 0, 0);
    assert_int_equal(tkv_cache_append(c, 0, 0, (uint32_t)ctx_len, k, v), TKV_OK);
    uint32_t id = 0;
    struct tkv_attention_stats st;
    if (tkv_attention(c, 0, 1, &id, 1, (uint32_t)qh, q, out, &st) != TKV_OK)
        fail_msg("attention on %s: %s", be, tkv_last_error());
    tkv_cache_destroy(c);
    tkv_context_close(cs);
    return st;
}

static void sparse_v_case(uint32_t kt, uint32_t vt)
{
    enum { KV = 2, DIM = 128, CTX = 1500, QH = 8 };
    float *k = malloc(sizeof *k * CTX * KV * DIM), *v = malloc(sizeof *v * CTX * KV * DIM);
    float *q = malloc(sizeof *q * QH * DIM), *out = malloc(sizeof *out * QH * DIM);
    fill_rows(k, CTX, KV * DIM, 3.0f);
    fill_rows(v, CTX, KV * DIM, 0.5f);
    attention_rows(k, (size_t)CTX * KV * DIM);
    attention_rows(v, (size_t)CTX * KV * DIM);
    for (uint32_t i = 0; i < QH * DIM; i++)
        q[i] = 2.0f * gauss();
    const struct tkv_attention_stats st = sparse_v_run(backend, kt, vt, k, v, q, out, KV, DIM, CTX, QH);
    for (uint32_t i = 0; i < QH * DIM; i++)
        assert_true(isfinite(out[i]));
    const struct tkv_attention_stats ref =
        strcmp(backend, "cpu") ? sparse_v_run("cpu", kt, vt, k, v, q, out, KV, DIM, CTX, QH) : st;
    printf("%s: K %s V %s: sparse V at 0.999 skipped %llu of %llu V rows (cpu %llu)\n", backend,
           tkv_type_name(kt), tkv_type_name(vt), (unsigned long long)st.rows_skipped,
           (unsigned long long)st.rows_total, (unsigned long long)ref.rows_skipped);
    assert_int_equal(st.rows_total, (uint64_t)QH * CTX);
    assert_true(st.rows_skipped <= st.rows_total);
    assert_true(st.rows_skipped >= st.rows_total * 9 / 10);
    /* TKV_SPARSE_GAP_POINTS (default 5): the bound, for runs whose knobs
     * force a plan of smaller chunks than the plugin's own (tests/meson.build) */
    const char *gp = getenv("TKV_SPARSE_GAP_POINTS");
    const uint64_t points = gp && *gp ? strtoull(gp, NULL, 10) : 5u;
    const uint64_t gap = st.rows_skipped > ref.rows_skipped ? st.rows_skipped - ref.rows_skipped
                                                            : ref.rows_skipped - st.rows_skipped;
    if (gap * 100 > st.rows_total * points)
        fail_msg("%s skipped %llu V rows, the cpu reference %llu: more than %llu points of %llu apart", backend,
                 (unsigned long long)st.rows_skipped, (unsigned long long)ref.rows_skipped,
                 (unsigned long long)points, (unsigned long long)st.rows_total);
    free(k);
    free(v);
    free(q);
    free(out);
}

static void sparse_v_counts(void **state)
{
    (void)state;
    sparse_v_case(TKV_TYPE_TURBO3, TKV_TYPE_TURBO3);
    /* the outlier-split types leave a skipped row's outliers out too */
    if (backend_holds(TKV_TYPE_TURBO3_OUT, TKV_TYPE_TURBO3_OUT))
        sparse_v_case(TKV_TYPE_TURBO3_OUT, TKV_TYPE_TURBO3_OUT);
}

/* Rows wider than a GPU shader may hold in registers (f16 and q8_0 keys,
 * with f16, q8_0 and turbo values: Vulkan's decode_wide.comp, a lane per
 * coordinate instead of a lane per row), at head_dims of one to several
 * coordinates per lane: paged in odd blocks shorter and longer than a
 * subgroup's batch, with mixed n_q, a window, soft-capping and lse, against
 * cpu within the tolerance; and sparse V near its limit, counted on them. */
static void wide_rows_agree(void **state)
{
    (void)state;
    static const struct {
        uint32_t kt, vt;
    } pairs[] = {
        { TKV_TYPE_F16, TKV_TYPE_F16 },    { TKV_TYPE_Q8_0, TKV_TYPE_Q8_0 }, { TKV_TYPE_Q8_0, TKV_TYPE_TURBO3 },
        { TKV_TYPE_F16, TKV_TYPE_Q8_0 },   { TKV_TYPE_Q8_0, TKV_TYPE_F16 },  { TKV_TYPE_F16, TKV_TYPE_TURBO4 },
        { TKV_TYPE_Q8_0, TKV_TYPE_TURBO2 },
    };
    static const uint32_t dims[] = { 64, 128, 256 };
    const uint32_t saved = rng_state; /* the tests after this one draw what they drew before it */
    double worst = 0;
    int ran = 0;
    for (size_t p = 0; p < sizeof pairs / sizeof *pairs; p++)
        for (size_t d = 0; d < sizeof dims / sizeof *dims && backend_holds(pairs[p].kt, pairs[p].vt); d++) {
            const int skip = config_skipped(pairs[p].kt, pairs[p].vt, dims[d], 0);
            worst = fmax(worst, paged_options_case(pairs[p].kt, pairs[p].vt, dims[d], (p + d) % 2 ? 33 : 7, skip));
            ran += !skip;
        }
    print_message("%s vs cpu: wide rows paged, %d configurations, worst relative error %.3g\n", backend, ran, worst);
    if (backend_holds(TKV_TYPE_F16, TKV_TYPE_F16))
        sparse_v_case(TKV_TYPE_F16, TKV_TYPE_F16);
    if (backend_holds(TKV_TYPE_Q8_0, TKV_TYPE_TURBO3))
        sparse_v_case(TKV_TYPE_Q8_0, TKV_TYPE_TURBO3);
    rng_state = saved;
}

static int setup(void **state)
{
    (void)state;
    if (!mkdtemp(tmpdir))
        return -1;
    return open_backend("cpu", &ctx_cpu) == TKV_OK ? 0 : -1;
}

static int teardown(void **state)
{
    (void)state;
    char cmd[700];
    tkv_context_close(ctx_b);
    tkv_context_close(ctx_cpu);
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmpdir);
    return system(cmd) == 0 ? 0 : -1;
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        fprintf(stderr, "usage: test_backends BACKEND [NAME=VALUE ...]\n"
                        "  NAME=VALUE: environment for the plugin (e.g. TURBO_OCL_SPECIALIZE=1)\n");
        return 2;
    }
    backend = argv[1];
    if (set_env_args("test_backends", argc, argv, 2) != 0)
        return 2;
    int rc = open_backend(backend, &ctx_b);
    if (rc != TKV_OK) {
        const char *ci = getenv("CI");
        int in_ci = ci && strcmp(ci, "true") == 0;
        fprintf(stderr, "backend %s unavailable: %s%s\n", backend, tkv_last_error(),
                in_ci ? " (CI=true: the device must be present)" : " (skipped)");
        return in_ci ? 1 : 77;
    }
    printf("backend %s: device %s\n", backend, tkv_context_device(ctx_b));
    const struct CMUnitTest all[] = {
        cmocka_unit_test(same_bytes_every_format),
        cmocka_unit_test(attention_agrees),
        cmocka_unit_test(split_attention_rotations),
        cmocka_unit_test(paged_and_options_agree),
        cmocka_unit_test(files_cross_backends),
        cmocka_unit_test(sparse_v_counts),
        cmocka_unit_test(wide_rows_agree),
        cmocka_unit_test(small_values_agree),
    };
    /* TKV_TESTS=NAME,NAME: only those (a variant whose knobs reach only
     * some of the shaders); a name that is none of them is an error */
    struct CMUnitTest tests[sizeof all / sizeof all[0]];
    size_t n;
    if (select_tests("test_backends", all, sizeof all / sizeof all[0], tests, &n) != 0)
        return 2;
    return _cmocka_run_group_tests("tests", tests, n, setup, teardown);
}
