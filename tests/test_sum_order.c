/* SPDX-License-Identifier: MIT */
/*
 * The order of a turbo group's sum of squares (docs/format.md: the stored
 * bytes are a contract). Usage: test_sum_order BACKEND. The reference
 * (plugins/cpu/rows.c turbo_encode_group) keeps 8 running double sums, one
 * per element index mod 8, each in element order, and adds them as
 * cpu_sum8 does: ((s0 + s4) + (s2 + s6)) + ((s1 + s5) + (s3 + s7)). Random
 * rows almost never tell another order from it (the float norm and its
 * fp16 scale hide the last bits of the double), so this test builds rows
 * whose stored scale depends on it: the exact sum of squares is m^2 for the
 * float midpoint m = 1 + 2^-11 + 2^-24 (itself the fp16 midpoint between 1
 * and 1 + 2^-10 once rounded to float), or m^2 + 2^-51, which the double
 * sqrt rounds to m + 2^-52 (m^2 + 2^-52 still to m): scales 0x3c00 (ties to
 * even, twice) and 0x3c01. The 2^-51 is made of tiny squares (2^-54 each)
 * that a double accumulator near 1 loses one at a time and keeps when they
 * are summed first. Two rows, each telling the reference from one kind of
 * wrong order (checked here on the host first):
 *
 *   A: lane 1 holds eight tiny squares: lost when the elements are summed
 *      in one sequence (1 comes first), kept by the lanes (0x3c01);
 *   C: lane 0 holds 1 then seven tiny squares: lost in element order
 *      (0x3c00), kept when a lane is summed in another order.
 *
 * The shape of the tree that adds the lanes is not told apart by such rows:
 * a lane lost against 1 is at most half an ulp, so the rest of the 2^-51
 * still rounds the total up.
 *
 * The rows are appended on BACKEND and on cpu, 700 tokens x 2 kv heads in
 * one call (a large call), then 8 tokens one call each (a decode step's
 * shape), for turbo2/3/4, head_dim 128 and 192 (a 128 and a 64 group), both
 * scale modes; the saved caches must be the same bytes.
 *
 * A backend whose plugin or device is missing makes the test exit 77
 * (skipped), except under CI=true.
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

#include "turbokv.h"
#include "saved_bytes.h"
#include "turbokv_format.h"

#define KV 2
#define BIG 700  /* tokens of the large call: 1400 rows */
#define SMALL 8  /* tokens appended one call each */
#define CAP (BIG + SMALL)

static const char *backend;
static tkv_context *ctx_b, *ctx_cpu;
static char tmpdir[] = "/tmp/tkv-test-sum-order-XXXXXX";

/* The pattern of kind 0 (A) or 1 (C) in a group of at least 64 elements
 * at g (zeros elsewhere in the group): 1 at 0, the pieces of m^2 - 1 in
 * lane 2, the tiny values (2^-27, squares 2^-54) where the kind puts them. */
static void pattern(float *g, uint32_t size, int kind)
{
    static const float pieces[] = { 0x1p-5f, 0x1p-11f, 0x1p-12f, 0x1p-12f, 0x1p-17f, 0x1p-24f };
    memset(g, 0, size * sizeof *g);
    g[0] = 1.0f;
    for (uint32_t j = 0; j < 6; j++)
        g[2 + 8 * j] = pieces[j];
    for (uint32_t j = kind == 0 ? 0 : 1; j < 8; j++)
        g[(kind == 0 ? 1 : 0) + 8 * j] = 0x1p-27f;
}

static uint16_t scale_of(double sum) { return tkv_fp16_from_float((float)sqrt(sum)); }

/* The reference's order and two wrong ones, on the host. */
static double sum_reference(const float *x, uint32_t n)
{
    double s[8] = { 0 };
    for (uint32_t i = 0; i < n; i++)
        s[i % 8] += (double)x[i] * x[i];
    return ((s[0] + s[4]) + (s[2] + s[6])) + ((s[1] + s[5]) + (s[3] + s[7]));
}

static double sum_in_order(const float *x, uint32_t n)
{
    double s = 0;
    for (uint32_t i = 0; i < n; i++)
        s += (double)x[i] * x[i];
    return s;
}

static double sum_lanes_reversed(const float *x, uint32_t n)
{
    double s[8] = { 0 };
    for (uint32_t i = n; i-- > 0;)
        s[i % 8] += (double)x[i] * x[i];
    return ((s[0] + s[4]) + (s[2] + s[6])) + ((s[1] + s[5]) + (s[3] + s[7]));
}

static void patterns_tell_orders(void **state)
{
    (void)state;
    float g[64];
    /* A: lanes against one sequence */
    pattern(g, 64, 0);
    assert_int_equal(scale_of(sum_reference(g, 64)), 0x3c01);
    assert_int_equal(scale_of(sum_in_order(g, 64)), 0x3c00);
    /* C: the order inside a lane */
    pattern(g, 64, 1);
    assert_int_equal(scale_of(sum_reference(g, 64)), 0x3c00);
    assert_int_equal(scale_of(sum_lanes_reversed(g, 64)), 0x3c01);
}

static int open_backend(const char *name, tkv_context **ctx)
{
    struct tkv_context_options o = {
        .struct_size = sizeof o, .ignore_env = 1, .plugin_path = getenv("TURBO_PLUGIN_PATH"), .backend = name,
    };
    return tkv_context_open(&o, ctx);
}

static uint32_t rng_state = 2024;

static float noise(void)
{
    rng_state = rng_state * 1664525u + 1013904223u;
    return ((rng_state >> 8) / 16777216.0f - 0.5f) * 4.0f;
}

/* Row r of a head_dim row set: every third row random, the others the
 * patterns in each of its groups (128, then 64 where head_dim is 192). */
static void fill(float *x, uint32_t n_rows, uint32_t dim, uint32_t salt)
{
    for (uint32_t r = 0; r < n_rows; r++) {
        float *row = x + (size_t)r * dim;
        uint32_t kind = (r + salt) % 3;
        if (kind == 2) {
            for (uint32_t i = 0; i < dim; i++)
                row[i] = noise();
            continue;
        }
        pattern(row, 128, (int)kind);
        if (dim > 128)
            pattern(row + 128, dim - 128, (int)(1 - kind));
    }
}

static tkv_cache *make(tkv_context *ctx, uint32_t dim, uint32_t type, uint32_t scale_mode)
{
    struct tkv_cache_params p = {
        .struct_size = sizeof p, .n_layers = 1, .n_kv_heads = KV, .head_dim = dim, .capacity = CAP,
        .k_type = type, .v_type = type, .rotation = TKV_ROTATION_WHT, .scale_mode = scale_mode,
    };
    tkv_cache *c = NULL;
    if (tkv_cache_create(ctx, &p, &c) != TKV_OK)
        fail_msg("cache on %s: %s", tkv_context_backend(ctx), tkv_last_error());
    return c;
}

static long compare_saved(tkv_cache *a, tkv_cache *b) { return compare_saved_in(tmpdir, a, b); }

static void same_bytes(void **state)
{
    (void)state;
    static const uint32_t types[] = { TKV_TYPE_TURBO2, TKV_TYPE_TURBO3, TKV_TYPE_TURBO4 };
    static const uint32_t dims[] = { 128, 192 };
    static const uint32_t modes[] = { TKV_SCALE_NORM, TKV_SCALE_NORM_CORRECTED };
    float *k = malloc(sizeof *k * (size_t)BIG * KV * 192), *v = malloc(sizeof *v * (size_t)BIG * KV * 192);
    assert_non_null(k);
    assert_non_null(v);
    for (size_t t = 0; t < sizeof types / sizeof *types; t++)
        for (size_t d = 0; d < sizeof dims / sizeof *dims; d++)
            for (size_t m = 0; m < sizeof modes / sizeof *modes; m++) {
                tkv_cache *a = make(ctx_cpu, dims[d], types[t], modes[m]);
                tkv_cache *b = make(ctx_b, dims[d], types[t], modes[m]);
                fill(k, BIG * KV, dims[d], 0);
                fill(v, BIG * KV, dims[d], 1);
                assert_int_equal(tkv_cache_append(a, 0, 0, BIG, k, v), TKV_OK);
                assert_int_equal(tkv_cache_append(b, 0, 0, BIG, k, v), TKV_OK);
                for (uint32_t s = 0; s < SMALL; s++) {
                    fill(k, KV, dims[d], s);
                    fill(v, KV, dims[d], s + 2);
                    assert_int_equal(tkv_cache_append(a, 0, 0, 1, k, v), TKV_OK);
                    assert_int_equal(tkv_cache_append(b, 0, 0, 1, k, v), TKV_OK);
                }
                long diff = compare_saved(a, b);
                if (diff)
                    fail_msg("%s vs cpu: %s head_dim %u scale mode %u: %ld bytes differ", backend,
                             tkv_type_name(types[t]), dims[d], modes[m], diff);
                tkv_cache_destroy(a);
                tkv_cache_destroy(b);
            }
    free(k);
    free(v);
}

int main(int argc, char **argv)
{
    backend = argc > 1 ? argv[1] : "cpu";
    const char *ci = getenv("CI");
    if (open_backend("cpu", &ctx_cpu) != TKV_OK) {
        fprintf(stderr, "test_sum_order: cpu: %s\n", tkv_last_error());
        return 1;
    }
    if (open_backend(backend, &ctx_b) != TKV_OK) {
        fprintf(stderr, "test_sum_order: %s: %s\n", backend, tkv_last_error());
        tkv_context_close(ctx_cpu);
        return ci && strcmp(ci, "true") == 0 ? 1 : 77;
    }
    if (!mkdtemp(tmpdir)) {
        perror("mkdtemp");
        return 1;
    }
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(patterns_tell_orders),
        cmocka_unit_test(same_bytes),
    };
    int failed = cmocka_run_group_tests(tests, NULL, NULL);
    rmdir(tmpdir);
    tkv_context_close(ctx_b);
    tkv_context_close(ctx_cpu);
    return failed;
}
