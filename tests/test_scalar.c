/* SPDX-License-Identifier: MIT */
/*
 * The scalar format rules of abi/turbokv_scalar.h (the one file the C
 * reference, the GLSL shaders and the OpenCL kernels compile) against
 * implementations written here independently of it: fp16 and bf16 by
 * scaling and nearbyint in double, the index stream bit by bit, the
 * nearest centroid by distance, roundf, the outliers by sorting, the
 * summation trees spelled out. Usage: test_scalar [BACKEND].
 *
 * With a BACKEND the same rules are checked where a device applies them:
 * rows appended to an f16, a q8_0 and a turbo (rotation none) cache on
 * that backend and read back with tkv_cache_dequantize must give what the
 * independent implementations say, for every finite half (both ways: the
 * stored half of a value, the float of a stored half), the midpoints
 * between halves and their neighbours, q8_0's ties and its FLT_MIN rule,
 * and values on a centroid boundary. A backend whose plugin or device is
 * missing makes that part exit 77 (skipped), except under CI=true.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <float.h>
#include <fenv.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "turbokv.h"
#include "saved_bytes.h"
#include "turbokv_format.h"
#include "turbokv_plugin.h"
#include "tables.h"

static const char *backend;
static tkv_context *ctx, *ctx_cpu;
static char tmpdir[] = "/tmp/tkv-test-scalar-XXXXXX";

static uint64_t rng = 0x2545F4914F6CDD1Dull;

static uint32_t rand32(void)
{
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return (uint32_t)(rng >> 32);
}

static uint32_t bits_of(float f)
{
    uint32_t u;
    memcpy(&u, &f, sizeof u);
    return u;
}

static float float_of(uint32_t u)
{
    float f;
    memcpy(&f, &u, sizeof f);
    return f;
}

/* ---- the independent implementations ------------------------------------- */

/* The value of binary16 bits h (NaN: any NaN). */
static double ref_half_value(uint32_t h)
{
    int e = (int)((h >> 10) & 0x1fu);
    double m = (double)(h & 0x3ffu), s = (h & 0x8000u) ? -1.0 : 1.0;
    if (e == 31)
        return m != 0.0 ? NAN : s * INFINITY;
    if (e == 0)
        return s * ldexp(m, -24);
    return s * ldexp(1024.0 + m, e - 25);
}

/* float -> binary16, round to nearest even: |f| in units of its half
 * quantum (2^-24 below 2^-14, else 2^(E-10)), rounded by nearbyint in the
 * default mode (ties to even), then encoded. NaN: 0x7e00 with f's sign. */
static uint16_t ref_fp16(float f)
{
    uint32_t sign = signbit(f) ? 0x8000u : 0u;
    if (isnan(f))
        return (uint16_t)(sign | 0x7e00u);
    double a = fabs((double)f);
    int e;
    frexp(a, &e); /* a = m 2^e, m in [0.5, 1) */
    double quantum = a < 0x1p-14 ? 0x1p-24 : ldexp(1.0, e - 11);
    double v = nearbyint(a / quantum) * quantum; /* a / quantum is exact */
    if (v >= 65536.0 || isinf(a))
        return (uint16_t)(sign | 0x7c00u);
    if (v < 0x1p-14)
        return (uint16_t)(sign | (uint32_t)(v * 0x1p24));
    frexp(v, &e);
    uint32_t mant = (uint32_t)(ldexp(v, 11 - e) - 1024.0); /* v = (1024 + mant) 2^(e-11) */
    return (uint16_t)(sign | (uint32_t)(e - 1 + 15) << 10 | mant);
}

/* float -> bfloat16, round to nearest even on 8 significant bits, the
 * float's own subnormals included; NaN keeps its top bits and is quieted. */
static uint16_t ref_bf16(float f)
{
    uint32_t u = bits_of(f);
    if (isnan(f))
        return (uint16_t)((u >> 16) | 0x40u);
    uint32_t sign = u & 0x80000000u;
    double a = fabs((double)f);
    if (isinf(a))
        return (uint16_t)((sign | 0x7f800000u) >> 16);
    int e;
    frexp(a, &e);
    double quantum = a < 0x1p-126 ? 0x1p-133 : ldexp(1.0, e - 8);
    double v = nearbyint(a / quantum) * quantum;
    if (v >= 0x1p128)
        return (uint16_t)((sign | 0x7f800000u) >> 16);
    return (uint16_t)((sign | bits_of((float)v)) >> 16); /* (float)v is exact */
}

/* roundf without roundf: floor(|v| + 1/2) in double, sign restored. */
static int32_t ref_round(float v)
{
    double r = floor(fabs((double)v) + 0.5);
    return (int32_t)(v < 0 ? -r : r);
}

/* ---- fp16 --------------------------------------------------------------- */

static void fp16_every_half(void **state)
{
    (void)state;
    for (uint32_t h = 0; h < 0x10000u; h++) {
        float f = tkv_fp16_to_float((uint16_t)h);
        double want = ref_half_value(h);
        if (isnan(want)) { /* NaN: the payload's top 10 bits, quiet bit as stored */
            assert_true(isnan(f));
            assert_int_equal(bits_of(f), (h & 0x8000u) << 16 | 0x7f800000u | (h & 0x3ffu) << 13);
            assert_int_equal(tkv_fp16_from_float(f), (h & 0x8000u) | 0x7e00u);
            continue;
        }
        if ((double)f != want || !signbit(f) != !signbit(want))
            fail_msg("tkv_fp16_to_float(0x%04x) = %a, want %a", h, (double)f, want);
        if (tkv_fp16_from_float(f) != h)
            fail_msg("tkv_fp16_from_float(%a) = 0x%04x, want 0x%04x", (double)f, tkv_fp16_from_float(f), h);
    }
}

/* Around every rounding boundary: the midpoint between adjacent halves (a
 * float: 12 significant bits) rounds to the even one, a float either side
 * to the nearer; and each half's own float and its neighbours. Both signs,
 * the subnormal steps and the overflow boundary 65520 included. */
static void fp16_boundaries(void **state)
{
    (void)state;
    for (uint32_t h = 0; h < 0x7c00u; h++) {
        double lo = ref_half_value(h), hi = h + 1 < 0x7c00u ? ref_half_value(h + 1) : 65536.0;
        float mid = (float)((lo + hi) / 2);
        assert_true((double)mid == (lo + hi) / 2);
        float probe[] = { mid, nextafterf(mid, 0.0f), nextafterf(mid, INFINITY),
                          nextafterf(nextafterf(mid, 0.0f), 0.0f), nextafterf(nextafterf(mid, INFINITY), INFINITY),
                          (float)lo, nextafterf((float)lo, 0.0f), nextafterf((float)lo, INFINITY) };
        for (size_t i = 0; i < sizeof probe / sizeof *probe; i++)
            for (int neg = 0; neg < 2; neg++) {
                float f = neg ? -probe[i] : probe[i];
                if (tkv_fp16_from_float(f) != ref_fp16(f))
                    fail_msg("tkv_fp16_from_float(%a) = 0x%04x, want 0x%04x", (double)f, tkv_fp16_from_float(f),
                             ref_fp16(f));
            }
    }
    /* the specials by name */
    assert_int_equal(tkv_fp16_from_float(65520.0f), 0x7c00);
    assert_int_equal(tkv_fp16_from_float(nextafterf(65520.0f, 0.0f)), 0x7bff);
    assert_int_equal(tkv_fp16_from_float(-65520.0f), 0xfc00);
    assert_int_equal(tkv_fp16_from_float(INFINITY), 0x7c00);
    assert_int_equal(tkv_fp16_from_float(-INFINITY), 0xfc00);
    assert_int_equal(tkv_fp16_from_float(NAN), 0x7e00);
    assert_int_equal(tkv_fp16_from_float(-NAN), 0xfe00);
    assert_int_equal(tkv_fp16_from_float(-0.0f), 0x8000);
    assert_int_equal(tkv_fp16_from_float(0x1p-25f), 0x0000);                   /* tie to even: 0 */
    assert_int_equal(tkv_fp16_from_float(nextafterf(0x1p-25f, 1.0f)), 0x0001); /* above: the first step */
    assert_int_equal(tkv_fp16_from_float(0x1.8p-24f), 0x0002);                 /* 1.5 steps: even 2 */
    assert_int_equal(tkv_fp16_from_float(FLT_TRUE_MIN), 0x0000);
}

/* Every float in the exponents that reach halves (2^-26 up to Inf), both
 * signs, at a stride that visits every low-bit pattern; random floats of
 * every exponent, NaN payloads included. */
static void fp16_sweep(void **state)
{
    (void)state;
    for (uint64_t u = 0x32800000u; u <= 0x7f800000u; u += 97) {
        for (int neg = 0; neg < 2; neg++) {
            float f = float_of((uint32_t)u | (neg ? 0x80000000u : 0u));
            if (tkv_fp16_from_float(f) != ref_fp16(f))
                fail_msg("tkv_fp16_from_float(%a) = 0x%04x, want 0x%04x", (double)f, tkv_fp16_from_float(f),
                         ref_fp16(f));
        }
    }
    for (int i = 0; i < 1 << 22; i++) {
        float f = float_of(rand32());
        if (tkv_fp16_from_float(f) != ref_fp16(f))
            fail_msg("tkv_fp16_from_float(%a) = 0x%04x, want 0x%04x", (double)f, tkv_fp16_from_float(f), ref_fp16(f));
    }
}

/* Stored values clamp to +-65504 first: fminf(fmaxf(v, -max), max) (a
 * quiet NaN gives -65504 in both). */
static void fp16_saturated(void **state)
{
    (void)state;
    float special[] = { 65504.0f, 65519.0f, nextafterf(65520.0f, 0.0f), 65520.0f, 1e30f, INFINITY, NAN, 0.0f, -0.0f,
                        1.0f, 0x1p-24f, 0x1p-25f };
    for (size_t i = 0; i < sizeof special / sizeof *special; i++)
        for (int neg = 0; neg < 2; neg++) {
            float f = neg ? -special[i] : special[i];
            assert_int_equal(tkv_fp16_saturated(f), ref_fp16(fminf(fmaxf(f, -65504.0f), 65504.0f)));
        }
    for (int i = 0; i < 1 << 20; i++) { /* (a signalling NaN would make fmaxf give NaN: none is ever stored) */
        float f = float_of(rand32());
        if (!isnan(f))
            assert_int_equal(tkv_fp16_saturated(f), ref_fp16(fminf(fmaxf(f, -65504.0f), 65504.0f)));
    }
}

/* ---- bf16 ---------------------------------------------------------------- */

static void bf16_rules(void **state)
{
    (void)state;
    for (uint32_t h = 0; h < 0x10000u; h++) {
        float f = tkv_bf16_to_float((uint16_t)h);
        assert_int_equal(bits_of(f), h << 16); /* widening is exact, NaN payloads too */
        if (!isnan(f))
            assert_int_equal(tkv_bf16_from_float(f), h);
        if ((h & 0x7f80u) == 0x7f80u || h == 0x7f7fu || h == 0xff7fu)
            continue;
        /* the midpoint to the next bf16 up in magnitude, and either side */
        float mid = float_of(h << 16 | 0x8000u);
        float probe[] = { mid, nextafterf(mid, 0.0f), nextafterf(mid, copysignf(INFINITY, mid)) };
        for (size_t i = 0; i < 3; i++)
            if (tkv_bf16_from_float(probe[i]) != ref_bf16(probe[i]))
                fail_msg("tkv_bf16_from_float(%a) = 0x%04x, want 0x%04x", (double)probe[i],
                         tkv_bf16_from_float(probe[i]), ref_bf16(probe[i]));
    }
    assert_int_equal(tkv_bf16_from_float(FLT_MAX), 0x7f80); /* carries into Inf */
    assert_int_equal(tkv_bf16_from_float(float_of(0x7f800001u)), 0x7fc0); /* a signalling NaN is quieted */
    for (int i = 0; i < 1 << 22; i++) {
        float f = float_of(rand32());
        if (tkv_bf16_from_float(f) != ref_bf16(f))
            fail_msg("tkv_bf16_from_float(%a) = 0x%04x, want 0x%04x", (double)f, tkv_bf16_from_float(f), ref_bf16(f));
    }
}

/* ---- packed indices -------------------------------------------------------- */

static void index_stream(void **state)
{
    (void)state;
    for (uint32_t bits = 1; bits <= 8; bits++)
        for (uint32_t n = 1; n <= 136; n++) {
            uint8_t idx[136], packed[140], want[140];
            uint32_t bytes = (n * bits + 7) / 8;
            memset(packed, 0xa5, sizeof packed);
            memset(want, 0, sizeof want);
            for (uint32_t i = 0; i < n; i++) {
                idx[i] = (uint8_t)(rand32() & ((1u << bits) - 1u));
                for (uint32_t b = 0; b < bits; b++) /* index i at bits i*bits.., LSB first */
                    want[(i * bits + b) / 8] |= (uint8_t)(((idx[i] >> b) & 1u) << ((i * bits + b) % 8));
            }
            tkv_pack_indices(packed, idx, n, bits);
            assert_memory_equal(packed, want, bytes);
            assert_int_equal(packed[bytes], 0xa5); /* nothing past the stream */
            for (uint32_t i = 0; i < n; i++) {
                assert_int_equal(tkv_index_bit(i, bits), i * bits);
                assert_int_equal(tkv_unpack_index(packed, i, bits), idx[i]);
            }
        }
    for (int i = 0; i < 1 << 16; i++) {
        uint32_t w = rand32(), n = 1 + rand32() % 31, shift = rand32() % (33 - n), v = 0;
        for (uint32_t b = 0; b < n; b++)
            v |= ((w >> (shift + b)) & 1u) << b;
        assert_int_equal(tkv_bits_at(w, shift, n), v);
    }
}

/* ---- nearest centroid -------------------------------------------------------- */

/* The index of the nearest centroid by distance, ties to the upper one
 * except for -0 (a tie at 0 is between centroids either side of it: -0
 * takes the one below). */
static uint32_t ref_nearest(const float *c, uint32_t n, float y)
{
    uint32_t best = 0;
    for (uint32_t k = 1; k < n; k++) {
        double dk = fabs((double)y - c[k]), db = fabs((double)y - c[best]);
        if (dk < db || (dk == db && !(y == 0.0f && signbit(y))))
            best = k;
    }
    return best;
}

static uint32_t header_nearest(const float *boundary, uint32_t n, float y)
{
    uint32_t idx = 0;
    for (uint32_t k = 0; k + 1 < n; k++)
        idx += tkv_centroid_step(y, boundary[k]);
    return idx;
}

static void nearest_centroid(void **state)
{
    (void)state;
    /* dyadic centroids, so that the midpoints are exact and a distance tie
     * is a real one */
    for (uint32_t bits = 1; bits <= 4; bits++)
        for (int rep = 0; rep < 50; rep++) {
            uint32_t n = 1u << bits;
            float c[16], b[15];
            int32_t at = -64;
            for (uint32_t k = 0; k < n; k++) {
                at += 1 + (int32_t)(rand32() % 16);
                c[k] = (float)at / 16.0f;
            }
            for (uint32_t k = 0; k + 1 < n; k++)
                b[k] = 0.5f * (c[k] + c[k + 1]);
            for (int32_t s = -2000; s <= 2000; s++) {
                float y = (float)s / 128.0f;
                /* (near 0 a step that keeps |y - c| exact in double) */
                float probe[] = { y, s ? nextafterf(y, -INFINITY) : -0x1p-30f, s ? nextafterf(y, INFINITY) : 0x1p-30f,
                                  s ? y : -0.0f };
                for (int i = 0; i < 4; i++)
                    if (header_nearest(b, n, probe[i]) != ref_nearest(c, n, probe[i]))
                        fail_msg("%u bits, y = %a: index %u, the nearest centroid is %u", bits, (double)probe[i],
                                 header_nearest(b, n, probe[i]), ref_nearest(c, n, probe[i]));
            }
            for (uint32_t k = 0; k + 1 < n; k++) /* on a boundary: the upper centroid */
                assert_int_equal(header_nearest(b, n, b[k]), k + 1);
        }
}

/* ---- q8_0 ------------------------------------------------------------------ */

static void q8_0_rules(void **state)
{
    (void)state;
    for (int32_t k = -300; k <= 300; k++) {
        float h = (float)k + 0.5f;
        float probe[] = { (float)k, h, nextafterf(h, -INFINITY), nextafterf(h, INFINITY), nextafterf((float)k, 0.0f) };
        for (int i = 0; i < 5; i++) {
            assert_int_equal(tkv_round_half_away(probe[i]), ref_round(probe[i]));
            assert_int_equal(tkv_round_half_away(probe[i]), (int32_t)roundf(probe[i]));
        }
    }
    for (int i = 0; i < 1 << 22; i++) { /* |v| < 2^22: every exponent up to 2^21 */
        uint32_t u = rand32() & 0x8000000u ? rand32() % 0x4a800000u : rand32() % 0x43800000u;
        float v = float_of(u | (rand32() & 0x80000000u));
        if (tkv_round_half_away(v) != ref_round(v))
            fail_msg("tkv_round_half_away(%a) = %d, want %d", (double)v, tkv_round_half_away(v), ref_round(v));
    }
    assert_true(tkv_q8_0_invertible(FLT_MIN));
    assert_false(tkv_q8_0_invertible(nextafterf(FLT_MIN, 0.0f)));
    assert_false(tkv_q8_0_invertible(0.0f));
    assert_true(tkv_q8_0_invertible(1.0f));
    assert_true(TKV_Q8_0_DIVISOR == 127.0f);
    for (uint32_t hd = 8; hd <= TKV_HEAD_DIM_MAX; hd += 8)
        for (uint32_t first = 0; first < hd; first += TKV_Q8_0_BLOCK)
            assert_int_equal(tkv_q8_0_block_len(hd, first), hd - first < 32 ? hd - first : 32);
}

/* The two rules that keep subnormals exact where a device flushes them to
 * signed zero (NVIDIA's Vulkan driver): the q8_0 product of a subnormal x,
 * and -0 against a boundary of 0. The x86 control register's flush-to-zero
 * and denormals-are-zero modes stand in for such a device: under them the
 * plain product of a subnormal is 0, and the header's must still be the
 * correctly rounded x id, taken before the modes are set. */
#if defined(__x86_64__) || defined(__i386__)
#include <xmmintrin.h>
#define FLUSH_MODES 1
#endif

static void flushed_subnormals(void **state)
{
    (void)state;
#ifdef FLUSH_MODES
    enum { N = 4096 };
    static float x[N], id[N], want[N], got[N];
    for (int i = 0; i < N; i++) {
        x[i] = float_of((rand32() & 0x807fffffu) | (i == 0 ? 1u : 0u)); /* subnormal, or +-0 */
        id[i] = float_of(0x7e000000u + rand32() % 0x00800001u);         /* 2^125 .. 2^126 */
        if (i % 8 == 7)
            id[i] = float_of(0x3f800000u + rand32() % 0x3e000000u); /* 1 .. 2^125: |x id| < 1/2 */
        want[i] = x[i] * id[i];
    }
    const unsigned int saved = _mm_getcsr();
    _mm_setcsr(saved | 0x8040u); /* FTZ | DAZ */
    volatile float probe = x[0], times = id[0];
    const float plain = probe * times;
    for (int i = 0; i < N; i++)
        got[i] = tkv_q8_0_product(x[i], id[i]);
    volatile float y[] = { -0x1p-149f, 0x1p-149f, -0.0f, 0.0f, -FLT_MIN, FLT_MIN };
    uint32_t step[6];
    for (int i = 0; i < 6; i++)
        step[i] = tkv_centroid_step(y[i], 0.0f);
    _mm_setcsr(saved);
    assert_true(plain == 0.0f); /* the modes are in effect */
    for (int i = 0; i < N; i++)
        if ((id[i] >= 0x1p125f && bits_of(got[i]) != bits_of(want[i])) ||
            tkv_round_half_away(got[i]) != ref_round(want[i])) /* (below 2^125 only q counts: 0) */
            fail_msg("flushing: tkv_q8_0_product(%a, %a) = %a, want %a", (double)x[i], (double)id[i],
                     (double)got[i], (double)want[i]);
    static const uint32_t step_want[] = { 0, 1, 0, 1, 0, 1 };
    for (int i = 0; i < 6; i++)
        if (step[i] != step_want[i])
            fail_msg("flushing: tkv_centroid_step(%a, 0) = %u, want %u", (double)y[i], step[i], step_want[i]);
#else
    skip();
#endif
}

/* ---- outliers ---------------------------------------------------------------- */

static const float *sort_row;

static int by_outlier_order(const void *a, const void *b)
{
    uint32_t i = *(const uint32_t *)a, j = *(const uint32_t *)b;
    float x = fabsf(sort_row[i]), y = fabsf(sort_row[j]);
    if (x != y)
        return x > y ? -1 : 1;
    return i < j ? -1 : 1;
}

static int ascending(const void *a, const void *b)
{
    uint32_t i = *(const uint32_t *)a, j = *(const uint32_t *)b;
    return i < j ? -1 : i > j;
}

static void outlier_rules(void **state)
{
    (void)state;
    for (uint32_t hd = 8; hd <= TKV_HEAD_DIM_MAX; hd += 8) {
        assert_int_equal(tkv_outlier_count(hd), (uint32_t)ceil(hd / 32.0));
        assert_int_equal(tkv_outlier_index_bytes(hd), hd <= 256 ? 1u : 2u);
    }
    /* |x| as bits orders finite values as |x| does, subnormals included */
    for (int i = 0; i < 1 << 20; i++) {
        float a = float_of(rand32() % 0x7f800000u | (rand32() & 0x80000000u));
        float b = i & 1 ? float_of(rand32() % 0x7f800000u) : -a;
        assert_int_equal(tkv_abs_bits(a) < tkv_abs_bits(b), fabsf(a) < fabsf(b));
        assert_int_equal(tkv_abs_bits(a) == tkv_abs_bits(b), fabsf(a) == fabsf(b));
    }
    /* the selection: rows with many ties (few distinct magnitudes), zeros
     * of both signs and subnormals */
    static const float pool[] = { 0.0f, -0.0f, 1.0f, -1.0f, 2.0f, 0x1p-140f, -0x1p-140f, 3.5f, -3.5f, 1e-3f };
    static float row[TKV_HEAD_DIM_MAX];
    static uint32_t order[TKV_HEAD_DIM_MAX], got[TKV_OUTLIER_MAX];
    for (int rep = 0; rep < 400; rep++) {
        uint32_t hd = 8u * (1 + rand32() % (TKV_HEAD_DIM_MAX / 8)), n = tkv_outlier_count(hd);
        for (uint32_t i = 0; i < hd; i++) {
            row[i] = rep & 1 ? pool[rand32() % 10] : (float)((int32_t)(rand32() % 2001) - 1000) / 64.0f;
            order[i] = i;
        }
        sort_row = row;
        qsort(order, hd, sizeof *order, by_outlier_order);
        qsort(order, n, sizeof *order, ascending);
        tkv_outlier_select(row, hd, got);
        assert_memory_equal(got, order, n * sizeof *got);
        for (uint32_t i = 0; i < hd; i++) /* tkv_outlier_before is that order */
            for (uint32_t j = 0; j < hd; j += 1 + rand32() % 37)
                assert_int_equal(!!tkv_outlier_before(tkv_abs_bits(row[j]), j, tkv_abs_bits(row[i]), i),
                                 j != i && (fabsf(row[j]) > fabsf(row[i]) || (fabsf(row[j]) == fabsf(row[i]) && j < i)));
    }
}

/* ---- the summation trees -------------------------------------------------- */

static void summation_order(void **state)
{
    (void)state;
    assert_int_equal(TKV_NORM_LANES, 8);
    assert_int_equal(TKV_QJL_LANES, 4);
    /* values whose sum depends on the association: any other tree (one
     * sequence, adjacent pairs, lanes reversed) gives another number on
     * some of these rows */
    int told_sequence = 0, told_pairs = 0, told_4 = 0;
    for (int rep = 0; rep < 2000; rep++) {
        double s[8];
        for (int i = 0; i < 8; i++)
            s[i] = ldexp((double)(int32_t)rand32(), (int)(rand32() % 90) - 45);
        double want = ((s[0] + s[4]) + (s[2] + s[6])) + ((s[1] + s[5]) + (s[3] + s[7]));
        double got = TKV_SUM8(s[0], s[1], s[2], s[3], s[4], s[5], s[6], s[7]);
        assert_true(got == want);
        double sequence = s[0];
        for (int i = 1; i < 8; i++)
            sequence += s[i];
        double pairs = ((s[0] + s[1]) + (s[2] + s[3])) + ((s[4] + s[5]) + (s[6] + s[7]));
        told_sequence |= sequence != want;
        told_pairs |= pairs != want;
        double want4 = (s[0] + s[1]) + (s[2] + s[3]);
        assert_true(TKV_SUM4(s[0], s[1], s[2], s[3]) == want4);
        told_4 |= ((s[0] + s[2]) + (s[1] + s[3])) != want4;
        float f[8];
        for (int i = 0; i < 8; i++)
            f[i] = (float)s[i];
        float wantf = ((f[0] + f[4]) + (f[2] + f[6])) + ((f[1] + f[5]) + (f[3] + f[7]));
        assert_true(TKV_SUM8(f[0], f[1], f[2], f[3], f[4], f[5], f[6], f[7]) == wantf);
    }
    assert_true(told_sequence && told_pairs && told_4);
}

/* ---- the same rules on a backend ------------------------------------------- */

static tkv_cache *make_on(tkv_context *on, uint32_t head_dim, uint32_t type, uint32_t capacity)
{
    struct tkv_cache_params p = {
        .struct_size = sizeof p, .n_layers = 1, .n_kv_heads = 1, .head_dim = head_dim, .capacity = capacity,
        .k_type = type, .v_type = type, .rotation = TKV_ROTATION_NONE, .scale_mode = TKV_SCALE_NORM,
    };
    tkv_cache *c = NULL;
    if (tkv_cache_create(on, &p, &c) != TKV_OK)
        fail_msg("%s cache on %s: %s", tkv_type_name(type), tkv_context_backend(on), tkv_last_error());
    return c;
}

static tkv_cache *make(uint32_t head_dim, uint32_t type, uint32_t capacity)
{
    return make_on(ctx, head_dim, type, capacity);
}

/* The bytes readback cannot show (q8_0's q where the fp16 d is 0): the
 * same rows on cpu, whose rules the tests above check, and on the backend
 * must save the same bytes. */
static void same_bytes_as_cpu(tkv_cache *c, uint32_t head_dim, uint32_t type, const float *x, uint32_t n)
{
    if (ctx_cpu == NULL)
        return;
    tkv_cache *ref = make_on(ctx_cpu, head_dim, type, n);
    assert_int_equal(tkv_cache_append(ref, 0, 0, n, x, x), TKV_OK);
    long diff = compare_saved_in(tmpdir, c, ref);
    if (diff)
        fail_msg("%s %s: %ld bytes differ from cpu", backend, tkv_type_name(type), diff);
    tkv_cache_destroy(ref);
}

/* Appends n rows of head_dim (keys and values alike) and reads them back. */
static void round_trip(tkv_cache *c, const float *x, uint32_t n, float *out)
{
    if (tkv_cache_append(c, 0, 0, n, x, x) != TKV_OK)
        fail_msg("append on %s: %s", backend, tkv_last_error());
    if (tkv_cache_dequantize(c, 0, 0, 0, 0, n, out) != TKV_OK)
        fail_msg("dequantize on %s: %s", backend, tkv_last_error());
}

#define F16_DIM 1024u
#define F16_VALUES (8u * 65536u) /* 8 per half: the half, its midpoint to the next, their neighbours */

/* f16 rows: every finite half's value and the rounding boundaries around
 * it, stored (tkv_fp16_saturated) and read back (tkv_fp16_to_float). */
static void device_f16(void **state)
{
    (void)state;
    float *x = malloc(sizeof *x * F16_VALUES), *out = malloc(sizeof *out * F16_VALUES);
    assert_non_null(x);
    assert_non_null(out);
    uint32_t n = 0;
    for (uint32_t h = 0; h < 0x10000u; h++) {
        if ((h & 0x7c00u) == 0x7c00u) /* Inf and NaN are stored as 0: not the rule at stake */
            continue;
        double lo = ref_half_value(h), hi = (h & 0x7fffu) + 1 < 0x7c00u ? ref_half_value(h + 1)
                                                                          : copysign(65536.0, lo);
        float mid = (float)((lo + hi) / 2);
        float v[] = { (float)lo, mid, nextafterf(mid, 0.0f), nextafterf(mid, (float)hi), nextafterf((float)lo, 0.0f),
                      nextafterf((float)lo, (float)hi), (float)hi, nextafterf(nextafterf(mid, 0.0f), 0.0f) };
        for (int i = 0; i < 8; i++)
            x[n++] = v[i];
    }
    while (n % F16_DIM)
        x[n++] = 1e30f; /* saturates to 65504 */
    tkv_cache *c = make(F16_DIM, TKV_TYPE_F16, n / F16_DIM);
    round_trip(c, x, n / F16_DIM, out);
    for (uint32_t i = 0; i < n; i++) { /* (read back as 0 + v: -0 as +0; the bytes are compared below) */
        float want = (float)ref_half_value(ref_fp16(fminf(fmaxf(x[i], -65504.0f), 65504.0f))) + 0.0f;
        if (bits_of(out[i]) != bits_of(want))
            fail_msg("%s f16: %a stored and read back as %a, want %a", backend, (double)x[i], (double)out[i],
                     (double)want);
    }
    same_bytes_as_cpu(c, F16_DIM, TKV_TYPE_F16, x, n / F16_DIM);
    tkv_cache_destroy(c);
    free(x);
    free(out);
}

/* q8_0 rows: blocks of amax 127 (d = 1, so q = roundf(x) and it reads back
 * as q), with halfway values and their neighbours; blocks whose d is
 * below FLT_MIN (q = 0). */
static void device_q8_0(void **state)
{
    (void)state;
    enum { DIM = 256, ROWS = 40 };
    static float x[ROWS * DIM], out[ROWS * DIM];
    for (uint32_t r = 0; r < ROWS; r++)
        for (uint32_t blk = 0; blk < DIM / 32; blk++) {
            float *b = x + r * DIM + blk * 32;
            b[0] = (r + blk) & 1 ? 127.0f : -127.0f;
            for (uint32_t i = 1; i < 32; i++) {
                float h = (float)((int32_t)(rand32() % 253) - 126) + 0.5f;
                uint32_t kind = rand32() % 4;
                b[i] = kind == 0 ? h : kind == 1 ? nextafterf(h, 0.0f) : kind == 2 ? nextafterf(h, 200.0f)
                                                                                  : nextafterf(h, -200.0f);
            }
            if (r == ROWS - 1 && blk < 4) /* d = amax / 127 below FLT_MIN, or at it */
                for (uint32_t i = 0; i < 32; i++)
                    b[i] = blk == 3 ? (i ? 0.5f : 127.0f) * FLT_MIN : blk == 2 ? FLT_MIN * (float)i / 32.0f : 0x1p-140f;
        }
    tkv_cache *c = make(DIM, TKV_TYPE_Q8_0, ROWS);
    round_trip(c, x, ROWS, out);
    for (uint32_t r = 0; r < ROWS; r++)
        for (uint32_t blk = 0; blk < DIM / 32; blk++) {
            const float *b = x + r * DIM + blk * 32, *o = out + r * DIM + blk * 32;
            float amax = 0.0f;
            for (uint32_t i = 0; i < 32; i++)
                amax = fmaxf(amax, fabsf(b[i]));
            float d = amax / 127.0f, id = d >= FLT_MIN ? 1.0f / d : 0.0f;
            float dh = (float)ref_half_value(ref_fp16(d));
            for (uint32_t i = 0; i < 32; i++) {
                float want = dh * (float)ref_round(b[i] * id);
                if (o[i] != want) /* (+-0 alike: a q of 0 reads back as either) */
                    fail_msg("%s q8_0: row %u block %u value %u: %a read back as %a, want %a", backend, r, blk, i,
                             (double)b[i], (double)o[i], (double)want);
            }
        }
    same_bytes_as_cpu(c, DIM, TKV_TYPE_Q8_0, x, ROWS);
    tkv_cache_destroy(c);
}

/* Turbo rows (rotation none, group 8, scale = the norm, 1): y_0 on a
 * boundary of the codebook, or a float either side; the stored index is
 * the upper centroid's on it, the nearer one's off it; on the boundary of
 * 0 also y_0 = -0, which goes below it (as -2^-149 does, which a device
 * that flushes subnormals to signed zero reads as -0). */
static void device_centroid_ties(void **state)
{
    (void)state;
    const struct tkv_math *m = tkv_tables_get(TKV_ROTATION_SEED_DEFAULT);
    assert_non_null(m);
    static const uint32_t types[] = { TKV_TYPE_TURBO2, TKV_TYPE_TURBO3, TKV_TYPE_TURBO4 };
    for (size_t t = 0; t < 3; t++) {
        const struct tkv_codebook *cb = &m->groups[0].codebook[tkv_type_bits(types[t]) - TKV_TURBO_BITS_MIN];
        float x[4 * 15 * 8], out[4 * 15 * 8];
        uint32_t n = 0, want[4 * 15];
        for (uint32_t k = 0; k + 1 < cb->n_levels; k++)
            for (int side = -1; side <= 2; side++) {
                float b = cb->boundaries[k], y = side < 0 ? nextafterf(b, -2.0f) : side == 1 ? nextafterf(b, 2.0f) : b;
                if (side == 2 && b != 0.0f)
                    continue;
                if (side == 2)
                    y = -0.0f;
                /* y, then the rest of a unit vector whose norm the reference
                 * (8 running double sums, sqrt, to float) rounds to 1 */
                float *row = x + 8 * n;
                memset(row, 0, 8 * sizeof *row);
                row[0] = y;
                float rest = (float)sqrt(1.0 - (double)y * y);
                for (int step = 0; step < 64; step++) {
                    row[1] = rest;
                    double s[8] = { (double)y * y, (double)rest * rest };
                    if ((float)sqrt(TKV_SUM8(s[0], s[1], s[2], s[3], s[4], s[5], s[6], s[7])) == 1.0f)
                        break;
                    rest = nextafterf(rest, step & 1 ? 0.0f : 1.0f);
                }
                double s[8] = { (double)y * y, (double)row[1] * row[1] };
                assert_true((float)sqrt(TKV_SUM8(s[0], s[1], s[2], s[3], s[4], s[5], s[6], s[7])) == 1.0f);
                /* below boundary k centroid k, on it or above it k + 1 */
                want[n++] = side < 0 || side == 2 ? k : k + 1;
            }
        tkv_cache *c = make(8, types[t], n);
        round_trip(c, x, n, out);
        for (uint32_t r = 0; r < n; r++)
            if (out[8 * r] != cb->centroids[want[r]])
                fail_msg("%s %s: y = %a read back as %a, want centroid %u = %a", backend, tkv_type_name(types[t]),
                         (double)x[8 * r], (double)out[8 * r], want[r], (double)cb->centroids[want[r]]);
        same_bytes_as_cpu(c, 8, types[t], x, n);
        tkv_cache_destroy(c);
    }
}

int main(int argc, char **argv)
{
    backend = argc > 1 ? argv[1] : NULL;
    fesetround(FE_TONEAREST);
    const struct CMUnitTest rules[] = {
        cmocka_unit_test(fp16_every_half), cmocka_unit_test(fp16_boundaries), cmocka_unit_test(fp16_sweep),
        cmocka_unit_test(fp16_saturated),  cmocka_unit_test(bf16_rules),      cmocka_unit_test(index_stream),
        cmocka_unit_test(nearest_centroid), cmocka_unit_test(q8_0_rules),     cmocka_unit_test(flushed_subnormals),
        cmocka_unit_test(outlier_rules),
        cmocka_unit_test(summation_order),
    };
    if (!backend)
        return cmocka_run_group_tests_name("turbokv_scalar.h", rules, NULL, NULL);
    struct tkv_context_options o = {
        .struct_size = sizeof o, .ignore_env = 1, .plugin_path = getenv("TURBO_PLUGIN_PATH"), .backend = backend,
    };
    if (tkv_context_open(&o, &ctx) != TKV_OK) {
        const char *ci = getenv("CI");
        fprintf(stderr, "test_scalar: %s: %s\n", backend, tkv_last_error());
        return ci && strcmp(ci, "true") == 0 ? 1 : 77;
    }
    o.backend = "cpu";
    if (strcmp(backend, "cpu") != 0 && tkv_context_open(&o, &ctx_cpu) != TKV_OK) {
        fprintf(stderr, "test_scalar: cpu: %s\n", tkv_last_error());
        return 1;
    }
    if (!mkdtemp(tmpdir)) {
        perror("mkdtemp");
        return 1;
    }
    const struct CMUnitTest device[] = {
        cmocka_unit_test(device_f16),
        cmocka_unit_test(device_q8_0),
        cmocka_unit_test(device_centroid_ties),
    };
    int failed = cmocka_run_group_tests_name(backend, device, NULL, NULL);
    rmdir(tmpdir);
    tkv_context_close(ctx);
    if (ctx_cpu)
        tkv_context_close(ctx_cpu);
    return failed;
}
