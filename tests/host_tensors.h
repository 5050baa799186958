/* SPDX-License-Identifier: MIT */
/*
 * What the tests that play a GPU host (test_host_opencl.c,
 * test_host_vulkan.c) share: their random numbers, the f16 / bf16 element
 * types they hand turbokv, how they open a context, and how they compare
 * with the cpu plugin. Each includes it after cmocka.h and turbokv.h and
 * defines rng_state (its own seed).
 */
#ifndef TKV_TEST_HOST_TENSORS_H
#define TKV_TEST_HOST_TENSORS_H

#include <math.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>

#include "turbokv.h"

static uint32_t rng_state;

static float gauss(void)
{
    float u1, u2;
    rng_state = rng_state * 1664525u + 1013904223u;
    u1 = ((rng_state >> 8) + 1) / 16777217.0f;
    rng_state = rng_state * 1664525u + 1013904223u;
    u2 = (rng_state >> 8) / 16777216.0f;
    return sqrtf(-2.0f * logf(u1)) * cosf(6.2831853f * u2);
}

/* The test's own conversions: any rounding will do, both sides get the
 * same bits. Subnormal halves included, so the device's widening of them is
 * checked too. */
static uint16_t to_f16(float f)
{
    union { float f; uint32_t u; } v = { f };
    uint32_t sign = (v.u >> 16) & 0x8000u, e = (v.u >> 23) & 0xffu, m = v.u & 0x7fffffu;
    if (e < 103) /* below the subnormal range: zero */
        return (uint16_t)sign;
    if (e < 113) /* subnormal half, truncated */
        return (uint16_t)(sign | ((m | 0x800000u) >> (126 - e)));
    if (e > 142)
        return (uint16_t)(sign | 0x7bffu);
    return (uint16_t)(sign | ((e - 112u) << 10) | (m >> 13));
}

static float from_f16(uint16_t h)
{
    uint32_t sign = (uint32_t)(h & 0x8000u) << 16, e = (h >> 10) & 0x1fu, m = h & 0x3ffu;
    union { uint32_t u; float f; } v;
    if (e == 0)
        return (sign ? -1.0f : 1.0f) * (float)m * (1.0f / 16777216.0f);
    v.u = sign | ((e == 31 ? 255u : e + 112u) << 23) | (m << 13);
    return v.f;
}

static uint16_t to_bf16(float f)
{
    union { float f; uint32_t u; } v = { f };
    return (uint16_t)(v.u >> 16);
}

static float from_bf16(uint16_t h)
{
    union { uint32_t u; float f; } v = { (uint32_t)h << 16 };
    return v.f;
}

static size_t esize(uint32_t elem) { return elem == TKV_ELEM_F32 ? 4 : 2; }

static void encode(void *dst, const float *x, size_t n, uint32_t elem)
{
    for (size_t i = 0; i < n; i++) {
        if (elem == TKV_ELEM_F32)
            ((float *)dst)[i] = x[i];
        else
            ((uint16_t *)dst)[i] = elem == TKV_ELEM_F16 ? to_f16(x[i]) : to_bf16(x[i]);
    }
}

static float decode1(const void *src, size_t i, uint32_t elem)
{
    if (elem == TKV_ELEM_F32)
        return ((const float *)src)[i];
    uint16_t h = ((const uint16_t *)src)[i];
    return elem == TKV_ELEM_F16 ? from_f16(h) : from_bf16(h);
}

static struct tkv_tensor host_tensor(uint32_t elem, void *data)
{
    return (struct tkv_tensor){ .struct_size = sizeof(struct tkv_tensor), .elem = elem, .data = data };
}

static int open_tkv(const char *backend, const struct tkv_host_device *host, tkv_context **out)
{
    struct tkv_context_options o = {
        .struct_size = sizeof o, .ignore_env = 1, .plugin_path = getenv("TURBO_PLUGIN_PATH"), .backend = backend,
        .host_device = host,
    };
    return tkv_context_open(&o, out);
}

/* The relative error of row got against ref (d values): the largest
 * difference over the largest |ref| (at least 1e-6); every value of got
 * must be finite. */
static double row_error(const float *ref, const float *got, size_t d)
{
    double mag = 0, err = 0;
    for (size_t i = 0; i < d; i++) {
        assert_true(isfinite(got[i]));
        mag = fmax(mag, fabs(ref[i]));
        err = fmax(err, fabs((double)ref[i] - got[i]));
    }
    return err / (mag > 1e-6 ? mag : 1e-6);
}

/* The same tokens of random K and V rows (row floats a token) appended to
 * sequence 0 of every layer of a and b. */
static void prefill_both(tkv_cache *a, tkv_cache *b, uint32_t layers, uint32_t tokens, size_t row)
{
    float *pre = malloc(sizeof *pre * 2 * tokens * row);
    for (size_t i = 0; i < 2 * tokens * row; i++)
        pre[i] = gauss();
    for (uint32_t l = 0; l < layers; l++) {
        assert_int_equal(tkv_cache_append(a, 0, l, tokens, pre, pre + tokens * row), TKV_OK);
        assert_int_equal(tkv_cache_append(b, 0, l, tokens, pre, pre + tokens * row), TKV_OK);
    }
    free(pre);
}

/* Sequence seq of a and b stores the same bytes: their images (rows,
 * lengths, types) compared byte for byte. */
static void assert_same_seq(const tkv_cache *a, const tkv_cache *b, uint32_t seq)
{
    size_t na = 0, nb = 0;
    assert_int_equal(tkv_seq_state_size(a, seq, &na), TKV_OK);
    assert_int_equal(tkv_seq_state_size(b, seq, &nb), TKV_OK);
    assert_int_equal(na, nb);
    unsigned char *ia = malloc(na), *ib = malloc(nb);
    if (tkv_seq_state_get(a, seq, ia, na, &na) != TKV_OK)
        fail_msg("tkv_seq_state_get: %s", tkv_last_error());
    assert_int_equal(tkv_seq_state_get(b, seq, ib, nb, &nb), TKV_OK);
    assert_int_equal(na, nb);
    size_t differ = 0;
    for (size_t i = 0; i < na; i++)
        differ += ia[i] != ib[i];
    if (differ)
        fail_msg("%zu of %zu bytes of sequence %u's images differ", differ, na, seq);
    free(ia);
    free(ib);
}

static void assert_same_rows(const tkv_cache *a, const tkv_cache *b) { assert_same_seq(a, b, 0); }

#endif
