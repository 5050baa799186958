/* SPDX-License-Identifier: MIT */
/*
 * Quality against the optimum, and which type each layer gets, through the
 * public API (README, "Quality against the optimum"):
 *   - the MSE of random unit vectors at the Lloyd-Max optimum
 *     (tkv_optimal_mse): within 1% at g = 64 and 128, within 3% at g = 8,
 *     16, 32 and the split head dims 80, 96 and 576;
 *   - bits/value: every head_dim stores exactly b + 16 s n_groups/head_dim
 *     (no padding), within b + 16 s/g of the smallest group g;
 *   - QJL key types: inner products unbiased within sampling error where
 *     the plain MSE quantizer's are biased, and attention on QJL keys equal
 *     to attention on their dequantized values;
 *   - layer_adaptive modes, the `layers` key (file and TURBO_LAYERS forms,
 *     errors, precedence, layers past the cache), auto_asymmetric and the
 *     auto scheme.
 *
 * TURBO_PLUGIN_PATH names the plugin directories (set by meson).
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

/* ---- helpers --------------------------------------------------------------------------------- */

static uint64_t rng_state = 0x7175616c69747931ull; /* "quality1" */

static double rng_gauss(void)
{
    uint64_t z[2];
    for (int i = 0; i < 2; i++) {
        uint64_t x = (rng_state += 0x9E3779B97F4A7C15ull);
        x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
        x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
        z[i] = x ^ (x >> 31);
    }
    double u1 = ((double)(z[0] >> 11) + 0.5) * 0x1p-53, u2 = (double)(z[1] >> 11) * 0x1p-53;
    return sqrt(-2.0 * log(u1)) * cos(6.283185307179586 * u2);
}

/* n random unit vectors of head_dim values (normalized Gaussians). */
static float *unit_vectors(uint32_t n, uint32_t head_dim)
{
    float *x = malloc(sizeof *x * n * head_dim);
    assert_non_null(x);
    for (uint32_t r = 0; r < n; r++) {
        double v[1024], sq = 0.0;
        for (uint32_t i = 0; i < head_dim; i++) {
            v[i] = rng_gauss();
            sq += v[i] * v[i];
        }
        for (uint32_t i = 0; i < head_dim; i++)
            x[(size_t)r * head_dim + i] = (float)(v[i] / sqrt(sq));
    }
    return x;
}

/* Log lines of the last context opened with capture. */
static char log_text[16384];

static void capture_log(void *user, int level, const char *message)
{
    (void)user;
    (void)level;
    size_t used = strlen(log_text);
    snprintf(log_text + used, sizeof log_text - used, "%s\n", message);
}

/* Opens a context on yaml (written to config_path), the environment
 * ignored unless use_env. Returns the status; *ctx is NULL on failure. */
static char config_path[64];
static const char *open_backend = "cpu"; /* the backend open_with opens */

static int open_with(const char *yaml, int use_env, tkv_context **ctx)
{
    snprintf(config_path, sizeof config_path, "/tmp/tkv-test-quality-XXXXXX");
    int fd = mkstemp(config_path);
    assert_true(fd >= 0);
    assert_int_equal(write(fd, yaml, strlen(yaml)), (ssize_t)strlen(yaml));
    close(fd);
    struct tkv_context_options o = { .struct_size = sizeof o, .ignore_env = !use_env, .config_path = config_path,
                                     .plugin_path = getenv("TURBO_PLUGIN_PATH"), .backend = open_backend,
                                     .log_fn = capture_log };
    log_text[0] = '\0';
    *ctx = NULL;
    int rc = tkv_context_open(&o, ctx);
    unlink(config_path);
    return rc;
}

static tkv_context *open_ok(const char *yaml)
{
    tkv_context *ctx;
    if (open_with(yaml, 0, &ctx) != TKV_OK)
        fail_msg("config \"%s\": %s", yaml, tkv_last_error());
    return ctx;
}

static void assert_contains(const char *haystack, const char *needle)
{
    if (!strstr(haystack, needle))
        fail_msg("\"%s\"\n  lacks \"%s\"", haystack, needle);
}

struct cache_shape {
    uint32_t n_layers, n_kv, head_dim, capacity, n_q_heads, k_type, v_type, rotation, scale_mode;
};

static int create(tkv_context *ctx, const struct cache_shape *s, tkv_cache **cache)
{
    struct tkv_cache_params p = {
        .struct_size = sizeof p, .n_layers = s->n_layers, .n_kv_heads = s->n_kv, .head_dim = s->head_dim,
        .capacity = s->capacity, .n_seqs = 1, .k_type = s->k_type, .v_type = s->v_type,
        .n_q_heads = s->n_q_heads, .rotation = s->rotation, .scale_mode = s->scale_mode,
    };
    *cache = NULL;
    return tkv_cache_create(ctx, &p, cache);
}

/* Keys stored as type, read back: x_hat [n][head_dim]. */
static float *round_trip(tkv_context *ctx, uint32_t type, uint32_t head_dim, uint32_t scale_mode, const float *x,
                         uint32_t n)
{
    struct cache_shape s = { 1, 1, head_dim, n, 0, type, TKV_TYPE_F32, TKV_ROTATION_WHT, scale_mode };
    float *back = malloc(sizeof *back * n * head_dim);
    tkv_cache *c;
    assert_non_null(back);
    assert_int_equal(create(ctx, &s, &c), TKV_OK);
    assert_int_equal(tkv_cache_append(c, 0, 0, n, x, x), TKV_OK);
    assert_int_equal(tkv_cache_dequantize(c, 0, 0, 0, 0, n, back), TKV_OK);
    tkv_cache_destroy(c);
    return back;
}

/* ---- MSE at the optimum ---------------------------------------------------------------------- */

static void mse_at_optimum(void **state)
{
    (void)state;
    static const struct {
        uint32_t head_dim, vectors;
        double tolerance;
    } cases[] = {
        { 64, 16000, 0.01 }, { 128, 16000, 0.01 }, { 8, 8000, 0.03 },  { 16, 8000, 0.03 },
        { 32, 8000, 0.03 },  { 80, 8000, 0.03 },   { 96, 8000, 0.03 }, { 576, 4000, 0.03 },
    };
    tkv_context *ctx = open_ok("");
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        uint32_t hd = cases[i].head_dim, n = cases[i].vectors;
        float *x = unit_vectors(n, hd);
        for (uint32_t type = TKV_TYPE_TURBO2; type <= TKV_TYPE_TURBO4; type++) {
            float *back = round_trip(ctx, type, hd, TKV_SCALE_NORM, x, n);
            double sum = 0.0, sq = 0.0, optimum;
            for (uint32_t r = 0; r < n; r++) {
                double e = 0.0;
                for (uint32_t j = 0; j < hd; j++) {
                    double d = (double)back[(size_t)r * hd + j] - x[(size_t)r * hd + j];
                    e += d * d;
                }
                sum += e;
                sq += e * e;
            }
            double mse = sum / n, se = sqrt((sq / n - mse * mse) / (n - 1));
            assert_int_equal(tkv_optimal_mse(type, hd, &optimum), TKV_OK);
            print_message("%s head_dim %3u: MSE %.5f (se %.5f) vs optimum %.5f: %+.2f%% (tolerance %.0f%%)\n",
                          tkv_type_name(type), hd, mse, se, optimum, 100.0 * (mse / optimum - 1.0),
                          100.0 * cases[i].tolerance);
            /* the sample is large enough for the tolerance to mean something */
            assert_true(se < cases[i].tolerance * optimum / 3.0);
            assert_true(fabs(mse / optimum - 1.0) < cases[i].tolerance);
            free(back);
        }
        free(x);
    }
    double unused;
    assert_int_equal(tkv_optimal_mse(TKV_TYPE_Q8_0, 64, &unused), TKV_EINVAL);
    assert_int_equal(tkv_optimal_mse(TKV_TYPE_TURBO3, 12, &unused), TKV_EINVAL);
    assert_int_equal(tkv_optimal_mse(TKV_TYPE_TURBO3, 64, NULL), TKV_EINVAL);
    tkv_context_close(ctx);
}

/* ---- bits per value -------------------------------------------------------------------------- */

static void bits_per_value_bound(void **state)
{
    (void)state;
    double worst[TKV_TYPE_COUNT] = { 0 };
    for (uint32_t hd = TKV_GROUP_MIN; hd <= TKV_HEAD_DIM_MAX; hd += TKV_GROUP_MIN) {
        uint32_t groups[TKV_MAX_GROUPS], n = tkv_group_split(hd, groups);
        uint32_t q8_blocks = (hd + TKV_Q8_0_BLOCK - 1) / TKV_Q8_0_BLOCK, q8_last = hd - (q8_blocks - 1) * 32;
        uint32_t sum = 0;
        for (uint32_t i = 0; i < n; i++)
            sum += groups[i];
        assert_int_equal(sum, hd);
        for (uint32_t type = 0; type < TKV_TYPE_COUNT; type++) {
            double got = tkv_type_bits_per_value(type, hd), exact, bound;
            if (type == TKV_TYPE_F32 || type == TKV_TYPE_F16) {
                exact = bound = type == TKV_TYPE_F32 ? 32.0 : 16.0;
            } else if (type == TKV_TYPE_Q8_0) {
                exact = 8.0 + 16.0 * q8_blocks / hd;
                bound = 8.0 + 16.0 / q8_last;
            } else {
                /* s fp16 words per group: the scale, and for QJL the residual norm; an
                 * outlier-split type adds one index and one fp16 per 32 values */
                uint32_t qjl = tkv_type_is_qjl(type), b = tkv_type_bits(type) + qjl, s = 1 + qjl;
                double outliers = tkv_type_is_outlier(type)
                                      ? (8.0 * (hd <= 256 ? 1 : 2) + 16.0) * ((hd + 31) / 32) / hd
                                      : 0.0;
                exact = b + 16.0 * s * n / hd + outliers;
                bound = b + 16.0 * s / groups[n - 1] +
                        (tkv_type_is_outlier(type) ? (8.0 * (hd <= 256 ? 1 : 2) + 16.0) * (1.0 / 32 + 1.0 / hd) : 0.0);
            }
            if (fabs(got - exact) > 1e-12 || got > bound + 1e-12)
                fail_msg("%s head_dim %u: %.4f bits/value, expected %.4f (bound %.4f)", tkv_type_name(type), hd,
                         got, exact, bound);
            worst[type] = fmax(worst[type], got - bound);
        }
    }
    for (uint32_t type = 0; type < TKV_TYPE_COUNT; type++)
        print_message("%-10s every head_dim 8..1024: bits/value - bound <= %.3f\n", tkv_type_name(type),
                      worst[type]);
}

/* ---- QJL ----------------------------------------------------------------------------------- */

/* The bias of <q, k_hat> as an estimate of <q, k> shows most clearly on
 * q = k: the plain MSE quantizer gives E<k, k_hat> = 1 - D for a unit k
 * (centroids are conditional means), QJL keys 1. Returns the mean of
 * <k, k_hat> - 1 and its standard error. */
static double self_bias(tkv_context *ctx, uint32_t type, uint32_t hd, uint32_t scale_mode, const float *x,
                        uint32_t n, double *se)
{
    float *back = round_trip(ctx, type, hd, scale_mode, x, n);
    double sum = 0.0, sq = 0.0;
    for (uint32_t r = 0; r < n; r++) {
        double dot = 0.0;
        for (uint32_t j = 0; j < hd; j++)
            dot += (double)back[(size_t)r * hd + j] * x[(size_t)r * hd + j];
        sum += dot - 1.0;
        sq += (dot - 1.0) * (dot - 1.0);
    }
    free(back);
    double mean = sum / n;
    *se = sqrt((sq / n - mean * mean) / (n - 1));
    return mean;
}

static void qjl_inner_products_unbiased(void **state)
{
    (void)state;
    enum { N = 12000 };
    static const uint32_t dims[] = { 16, 64, 128 };
    static const uint32_t qjl[] = { TKV_TYPE_TURBO3_QJL, TKV_TYPE_TURBO4_QJL };
    tkv_context *ctx = open_ok("");
    for (size_t d = 0; d < sizeof dims / sizeof *dims; d++) {
        float *x = unit_vectors(N, dims[d]);
        for (size_t t = 0; t < 2; t++) {
            /* the turbo type of the same bits */
            uint32_t same_bits = TKV_TYPE_TURBO2 + tkv_type_bits(qjl[t]) - 1;
            double se_plain, plain = self_bias(ctx, same_bits, dims[d], TKV_SCALE_NORM, x, N, &se_plain);
            print_message("head_dim %3u: E<k, k_hat> - 1 = %+.5f (se %.5f) with %s, scale = norm\n", dims[d],
                          plain, se_plain, tkv_type_name(same_bits));
            assert_true(plain < -10.0 * se_plain);
            for (uint32_t mode = TKV_SCALE_NORM; mode <= TKV_SCALE_NORM_CORRECTED; mode++) {
                double se, bias = self_bias(ctx, qjl[t], dims[d], mode, x, N, &se);
                print_message("head_dim %3u: E<k, k_hat> - 1 = %+.5f (se %.5f) with %s, scale = %s\n", dims[d],
                              bias, se, tkv_type_name(qjl[t]), mode == TKV_SCALE_NORM ? "norm" : "norm-corrected");
                assert_true(fabs(bias) < 3.0 * se);
            }
        }
        free(x);
    }
    tkv_context_close(ctx);
}

/* Scores against QJL keys (the rotated and projected query against the
 * signs) equal those against the dequantized keys: the two read paths of
 * the format agree. */
static void qjl_attention_matches_dequantized(void **state)
{
    (void)state;
    enum { HD = 128, KV = 2, QH = 8, CTX = 300, NQ = 2 };
    tkv_context *ctx = open_ok("sparse_v: false\n");
    float *k = malloc(sizeof *k * CTX * KV * HD), *v = malloc(sizeof *v * CTX * KV * HD);
    float *kd = malloc(sizeof *kd * CTX * KV * HD), q[NQ * QH * HD], out[NQ * QH * HD];
    float *vd = malloc(sizeof *vd * CTX * KV * HD);
    for (size_t i = 0; i < (size_t)CTX * KV * HD; i++) {
        k[i] = (float)(3.0 * rng_gauss());
        v[i] = (float)rng_gauss();
    }
    for (size_t i = 0; i < NQ * QH * HD; i++)
        q[i] = (float)rng_gauss();
    static const uint32_t keys[] = { TKV_TYPE_TURBO3_QJL, TKV_TYPE_TURBO4_QJL, TKV_TYPE_TURBO3_OUT, TKV_TYPE_TURBO4_OUT };
    for (size_t ti = 0; ti < sizeof keys / sizeof *keys; ti++) {
        uint32_t type = keys[ti];
        /* outlier-split types as values too: their accumulation keeps the outliers apart */
        uint32_t v_type = tkv_type_is_outlier(type) ? type : TKV_TYPE_F32;
        struct cache_shape s = { 1, KV, HD, CTX, QH, type, v_type, TKV_ROTATION_WHT, TKV_SCALE_NORM };
        tkv_cache *c;
        const uint32_t seq = 0;
        double worst = 0.0;
        assert_int_equal(create(ctx, &s, &c), TKV_OK);
        assert_int_equal(tkv_cache_append(c, 0, 0, CTX, k, v), TKV_OK);
        assert_int_equal(tkv_cache_dequantize(c, 0, 0, 0, 0, CTX, kd), TKV_OK);
        assert_int_equal(tkv_cache_dequantize(c, 0, 0, 1, 0, CTX, vd), TKV_OK);
        assert_int_equal(tkv_attention(c, 0, 1, &seq, NQ, QH, q, out, NULL), TKV_OK);
        for (uint32_t t = 0; t < NQ; t++)
            for (uint32_t h = 0; h < QH; h++) {
                const float *qr = q + ((size_t)t * QH + h) * HD, *o = out + ((size_t)t * QH + h) * HD;
                uint32_t kv = h / (QH / KV), rows = CTX - NQ + t + 1;
                double w[CTX], max = -INFINITY, sum = 0.0, ref[HD] = { 0 }, err = 0.0, mag = 0.0;
                for (uint32_t j = 0; j < rows; j++) {
                    double dot = 0.0;
                    for (uint32_t i = 0; i < HD; i++)
                        dot += (double)qr[i] * kd[((size_t)j * KV + kv) * HD + i];
                    w[j] = dot / sqrt((double)HD);
                    max = fmax(max, w[j]);
                }
                for (uint32_t j = 0; j < rows; j++) {
                    w[j] = exp(w[j] - max);
                    sum += w[j];
                }
                for (uint32_t j = 0; j < rows; j++)
                    for (uint32_t i = 0; i < HD; i++)
                        ref[i] += w[j] / sum * vd[((size_t)j * KV + kv) * HD + i];
                for (uint32_t i = 0; i < HD; i++) {
                    err += (o[i] - ref[i]) * (o[i] - ref[i]);
                    mag += ref[i] * ref[i];
                }
                worst = fmax(worst, sqrt(err / mag));
            }
        print_message("%s keys, %s values: attention vs float64 attention on the dequantized rows: relative "
                      "error <= %.1e\n", tkv_type_name(type), tkv_type_name(v_type), worst);
        assert_true(worst < 1e-4);
        tkv_cache_destroy(c);
    }
    free(k);
    free(v);
    free(kd);
    free(vd);
    tkv_context_close(ctx);
}

/* ---- outlier-split types ------------------------------------------------------------------- */

/* turbo3o / turbo4o: the outliers (tkv_outlier_select) come back as
 * stored, so the whole row's error is the turbo stage's on the rest:
 * sum over groups of D_g ||rest_g||^2, D_g the b-bit optimum of group g
 * (scale = norm), within 3% on Gaussian rows with one channel in 32 ten
 * times larger; and that is 3-4 times less than the plain type's error on
 * the same rows. */
static void outlier_split_at_optimum(void **state)
{
    (void)state;
    static const uint32_t dims[] = { 64, 80, 128 };
    enum { N = 4000 };
    tkv_context *ctx = open_ok("");
    for (size_t di = 0; di < sizeof dims / sizeof *dims; di++) {
        uint32_t hd = dims[di], groups[TKV_MAX_GROUPS], n_groups = tkv_group_split(hd, groups);
        float *x = malloc(sizeof *x * N * hd);
        assert_non_null(x);
        for (size_t i = 0; i < (size_t)N * hd; i++)
            x[i] = (float)(rng_gauss() * (i % hd % 32 == 5 ? 10.0 : 1.0));
        for (uint32_t type = TKV_TYPE_TURBO3_OUT; type <= TKV_TYPE_TURBO4_OUT; type++) {
            uint32_t plain = TKV_TYPE_TURBO2 + tkv_type_bits(type) - 2;
            float *back = round_trip(ctx, type, hd, TKV_SCALE_NORM, x, N);
            float *back_plain = round_trip(ctx, plain, hd, TKV_SCALE_NORM, x, N);
            double err = 0.0, err_plain = 0.0, expected = 0.0;
            for (uint32_t r = 0; r < N; r++) {
                const float *row = x + (size_t)r * hd;
                float rest[1024];
                uint32_t idx[TKV_OUTLIER_MAX] = { 0 };
                memcpy(rest, row, sizeof *rest * hd);
                tkv_outlier_select(row, hd, idx);
                for (uint32_t o = 0; o < tkv_outlier_count(hd); o++)
                    rest[idx[o]] = 0.0f;
                for (uint32_t g = 0, at = 0; g < n_groups; at += groups[g++]) {
                    double d, sq = 0.0;
                    assert_int_equal(tkv_optimal_mse(plain, groups[g], &d), TKV_OK);
                    for (uint32_t i = 0; i < groups[g]; i++)
                        sq += (double)rest[at + i] * rest[at + i];
                    expected += d * sq;
                }
                for (uint32_t i = 0; i < hd; i++) {
                    double e = (double)back[(size_t)r * hd + i] - row[i];
                    double ep = (double)back_plain[(size_t)r * hd + i] - row[i];
                    err += e * e;
                    err_plain += ep * ep;
                }
            }
            print_message("%s head_dim %3u: error %.4f vs the rest's optimum %.4f (%+.2f%%); %s: %.4f (%.2fx)\n",
                          tkv_type_name(type), hd, err / N, expected / N, 100.0 * (err / expected - 1.0),
                          tkv_type_name(plain), err_plain / N, err_plain / err);
            assert_true(fabs(err / expected - 1.0) < 0.03);
            assert_true(err_plain > 3.0 * err);
            free(back);
            free(back_plain);
        }
        free(x);
    }
    double unused;
    assert_int_equal(tkv_optimal_mse(TKV_TYPE_TURBO3_OUT, 64, &unused), TKV_EINVAL);
    tkv_context_close(ctx);
}

/* ---- per-layer types ------------------------------------------------------------------------ */

/* Per-layer types as letters: 'f' f16, 'q' q8_0, '2'..'4' turbo2..4,
 * 'Q' turbo4_qjl, 'o' turbo3o, 'O' turbo4o. */
static char type_letter(uint32_t type)
{
    switch (type) {
    case TKV_TYPE_F16: return 'f';
    case TKV_TYPE_Q8_0: return 'q';
    case TKV_TYPE_TURBO2: return '2';
    case TKV_TYPE_TURBO3: return '3';
    case TKV_TYPE_TURBO4: return '4';
    case TKV_TYPE_TURBO4_QJL: return 'Q';
    case TKV_TYPE_TURBO3_OUT: return 'o';
    case TKV_TYPE_TURBO4_OUT: return 'O';
    default: return '?';
    }
}

/* "KKKK/VVVV" for a cache's layers. */
static void layer_letters(const tkv_cache *c, uint32_t n_layers, char *out)
{
    for (uint32_t l = 0; l < n_layers; l++) {
        uint32_t k, v;
        assert_int_equal(tkv_cache_layer_types(c, l, &k, &v), TKV_OK);
        out[l] = type_letter(k);
        out[n_layers + 1 + l] = type_letter(v);
    }
    out[n_layers] = '/';
    out[2 * n_layers + 1] = '\0';
}

static void expect_layers(tkv_context *ctx, const struct cache_shape *s, const char *want)
{
    tkv_cache *c;
    char got[64];
    if (create(ctx, s, &c) != TKV_OK)
        fail_msg("cache: %s", tkv_last_error());
    layer_letters(c, s->n_layers, got);
    if (strcmp(got, want) != 0)
        fail_msg("layer types %s, expected %s", got, want);
    tkv_cache_destroy(c);
}

/* The modes as etc/turbokv.yaml documents them, written out for 12 layers
 * of scheme turbo3 and of the same types given by the host: like the
 * llama.cpp TurboQuant fork's TURBO_LAYER_ADAPTIVE on -ctk/-ctv, a mode
 * applies to the cache-wide types wherever they come from. */
static void layer_adaptive_modes(void **state)
{
    (void)state;
    static const struct {
        int mode;
        const char *types;
    } modes[] = {
        { 0, "333333333333/333333333333" }, /* every layer alike */
        { 1, "qqqq3333qqqq/qqqq3333qqqq" }, /* K and V q8_0 on the first 4 and the last 4 */
        { 2, "3333qqqqqqqq/3333qqqqqqqq" }, /* K and V q8_0 on the last 8 */
        { 5, "333333333333/442222222244" }, /* V turbo4 on the first 2 and last 2, turbo2 elsewhere */
        { 6, "333333333333/222244444444" }, /* V turbo4 on the last 8, turbo2 elsewhere */
        { 7, "333333333333/qq22222222qq" }, /* V q8_0 on the first 2 and last 2, turbo2 elsewhere */
    };
    const struct cache_shape from_config = { 12, 2, 64, 4, 0, TKV_TYPE_FROM_CONFIG, TKV_TYPE_FROM_CONFIG, 0, 0 };
    for (size_t i = 0; i < sizeof modes / sizeof *modes; i++) {
        char yaml[96];
        snprintf(yaml, sizeof yaml, "scheme: turbo3\nlayer_adaptive: %d\n", modes[i].mode);
        tkv_context *ctx = open_ok(yaml);
        expect_layers(ctx, &from_config, modes[i].types);
        struct cache_shape explicit_types = from_config;
        explicit_types.k_type = explicit_types.v_type = TKV_TYPE_TURBO3;
        expect_layers(ctx, &explicit_types, modes[i].types);
        tkv_context_close(ctx);
    }
}

/* When a mode applies, as in the fork: 8 layers or more; modes 1 and 2 on
 * turbo keys, 5-7 on turbo values; the host's per-layer types above all. */
static void layer_adaptive_conditions(void **state)
{
    (void)state;
    tkv_context *ctx = open_ok("layer_adaptive: 1\n");
    struct cache_shape s = { 8, 2, 64, 4, 0, TKV_TYPE_TURBO4, TKV_TYPE_F16, 0, 0 };
    expect_layers(ctx, &s, "qqqqqqqq/qqqqqqqq"); /* 8 layers: all are boundary layers; values too */
    s.n_layers = 7;
    expect_layers(ctx, &s, "4444444/fffffff"); /* fewer than 8 layers: uniform */
    s.n_layers = 10;
    s.k_type = TKV_TYPE_F16;
    s.v_type = TKV_TYPE_TURBO3;
    expect_layers(ctx, &s, "ffffffffff/3333333333"); /* keys not turbo: modes 1 and 2 do not apply */
    s.k_type = TKV_TYPE_TURBO4_QJL; /* QJL keys are turbo keys */
    expect_layers(ctx, &s, "qqqqQQqqqq/qqqq33qqqq");
    tkv_context_close(ctx);

    ctx = open_ok("layer_adaptive: 7\n");
    s.k_type = TKV_TYPE_Q8_0;
    s.v_type = TKV_TYPE_TURBO3;
    expect_layers(ctx, &s, "qqqqqqqqqq/qq222222qq"); /* k8v3: values follow the mode, keys stay */
    s.v_type = TKV_TYPE_F16;
    expect_layers(ctx, &s, "qqqqqqqqqq/ffffffffff"); /* values not turbo: modes 5-7 do not apply */
    s.k_type = s.v_type = TKV_TYPE_FROM_CONFIG; /* the default scheme at 64: turbo3o keys and values */
    expect_layers(ctx, &s, "oooooooooo/qq222222qq");
    s.head_dim = 32; /* below 64: q8_0 keys, turbo3 values */
    expect_layers(ctx, &s, "qqqqqqqqqq/qq222222qq");
    s.head_dim = 64;

    /* per-layer types from the host are its own */
    uint32_t kt[10], vt[10];
    for (uint32_t l = 0; l < 10; l++) {
        kt[l] = TKV_TYPE_TURBO3;
        vt[l] = TKV_TYPE_TURBO3;
    }
    struct tkv_cache_params p = { .struct_size = sizeof p, .n_layers = 10, .n_kv_heads = 2, .head_dim = 64,
                                  .capacity = 4, .n_seqs = 1, .k_type = TKV_TYPE_TURBO3, .v_type = TKV_TYPE_TURBO3,
                                  .layer_k_types = kt, .layer_v_types = vt };
    tkv_cache *c;
    char got[32];
    assert_int_equal(tkv_cache_create(ctx, &p, &c), TKV_OK);
    layer_letters(c, 10, got);
    assert_string_equal(got, "3333333333/3333333333");
    tkv_cache_destroy(c);
    tkv_context_close(ctx);
}

static void layers_key(void **state)
{
    (void)state;
    const struct cache_shape twelve = { 12, 2, 64, 4, 0, TKV_TYPE_FROM_CONFIG, TKV_TYPE_FROM_CONFIG, 0, 0 };
    static const char yaml[] = "scheme: turbo3\n"
                               "layer_adaptive: 1\n"
                               "layers:\n"
                               "  - {layer: 0, k_type: f16}\n"
                               "  - layer: 5-6\n"
                               "    v_type: turbo4\n"
                               "  - {layer: 11, k_type: turbo4_qjl, v_type: turbo2}\n";
    tkv_context *ctx = open_ok(yaml);
    /* mode 1, then the items on top of it */
    expect_layers(ctx, &twelve, "fqqq3333qqqQ/qqqq3443qqq2");
    /* a side the host sets is the host's: the items' keys do not apply */
    struct cache_shape keys_given = twelve;
    keys_given.k_type = TKV_TYPE_Q8_0;
    expect_layers(ctx, &keys_given, "qqqqqqqqqqqq/333334433332");
    /* an item past the cache's layers is an error naming it and where it was written */
    struct cache_shape eight = twelve;
    eight.n_layers = 8;
    tkv_cache *c;
    assert_int_equal(create(ctx, &eight, &c), TKV_ECONFIG);
    assert_null(c);
    assert_contains(tkv_last_error(), ":7:5: key 'layers': layer 11 is past the last layer of this cache (8 layers");
    /* ... unless the host sets both types, and the items apply nowhere */
    eight.k_type = eight.v_type = TKV_TYPE_Q8_0;
    expect_layers(ctx, &eight, "qqqqqqqq/qqqqqqqq");
    /* the text form of the same items, for display */
    struct tkv_config_entry e;
    uint32_t found = 0;
    for (uint32_t i = 0; i < tkv_config_count(ctx); i++)
        if (tkv_config_get(ctx, i, &e) == TKV_OK && !strcmp(e.key, "layers")) {
            assert_string_equal(e.value, "0:f16/,5-6:/turbo4,11:turbo4_qjl/turbo2");
            assert_string_equal(e.env, "TURBO_LAYERS");
            found = 1;
        }
    assert_true(found);
    tkv_context_close(ctx);

    /* the same through the environment, over a file that sets none */
    setenv("TURBO_LAYERS", "0:f16/,5-6:/turbo4,11:turbo4_qjl/turbo2", 1);
    assert_int_equal(open_with("scheme: turbo3\nlayer_adaptive: 1\n", 1, &ctx), TKV_OK);
    expect_layers(ctx, &twelve, "fqqq3333qqqQ/qqqq3443qqq2");
    tkv_context_close(ctx);
    setenv("TURBO_LAYERS", "0-1:q8_0", 1);
    assert_int_equal(open_with("", 1, &ctx), TKV_ECONFIG);
    assert_string_equal(tkv_last_error(),
                        "TURBO_LAYERS=0-1:q8_0: item 1 '0-1:q8_0' is not FIRST[-LAST]:K_TYPE/V_TYPE: expected "
                        "items FIRST[-LAST]:K_TYPE/V_TYPE separated by commas, a type left empty where the item "
                        "does not set it (\"0:q8_0/q8_0,1-3:/turbo4\")");
    setenv("TURBO_LAYERS", "2:q8_0/,1-3:/turbo4", 1);
    assert_int_equal(open_with("", 1, &ctx), TKV_ECONFIG);
    assert_contains(tkv_last_error(), "TURBO_LAYERS=2:q8_0/,1-3:/turbo4: item 2: layer 2 is already set by "
                                      "TURBO_LAYERS item 1");
    unsetenv("TURBO_LAYERS");
}

static void layers_key_errors(void **state)
{
    (void)state;
    static const struct {
        const char *yaml;
        unsigned line, column;
        const char *what;
    } bad[] = {
        { "layers:\n  - {k_type: q8_0}\n", 2, 5, "key 'layers': item 1: needs 'layer'" },
        { "layers:\n  - {layer: x, k_type: q8_0}\n", 2, 13,
          "key 'layers': item 1: layer 'x': expected a layer in 0..4095 or a range FIRST-LAST" },
        { "layers:\n  - {layer: 3-1, k_type: q8_0}\n", 2, 13, "layer '3-1': expected a layer in 0..4095" },
        { "layers:\n  - {layer: -1, k_type: q8_0}\n", 2, 13, "layer '-1': expected a layer in 0..4095" },
        { "layers:\n  - {layer: 4096, k_type: q8_0}\n", 2, 13, "layer '4096': expected a layer in 0..4095" },
        { "layers:\n  - {layer: 0}\n", 2, 5, "key 'layers': item 1: sets neither k_type nor v_type" },
        { "layers:\n  - {layer: 0, k_type: q9}\n", 2, 24,
          "key 'layers': item 1: k_type 'q9': expected one of f32, f16, q8_0, turbo2, turbo3, turbo4, turbo3_qjl, "
          "turbo4_qjl, turbo3o, turbo4o" },
        { "layers:\n  - {layer: 0, v_type: turbo3_qjl}\n", 2, 24,
          "key 'layers': item 1: v_type 'turbo3_qjl': expected one of f32, f16, q8_0, turbo2, turbo3, turbo4, turbo3o, "
          "turbo4o" },
        { "layers:\n  - {layer: 0, k_type: q8_0, colour: red}\n", 2, 30,
          "key 'layers': item 1: unknown key 'colour' (expected layer, k_type or v_type)" },
        { "layers:\n  - {layer: 0, layer: 1, k_type: q8_0}\n", 2, 16, "key 'layers': item 1: duplicate key 'layer'" },
        { "layers:\n  - {layer: 0, k_type: [q8_0]}\n", 2, 24,
          "key 'layers': item 1: 'k_type': expected a single value, not a sequence" },
        { "layers:\n  - {layer: 0, k_type: }\n", 2, 24, "key 'layers': item 1: 'k_type': no value" },
        { "layers:\n  - {layer: 0-3, k_type: q8_0}\n  - {layer: 3, v_type: f16}\n", 3, 5,
          "key 'layers': item 2: layer 3 is already set by " },
        { "layers:\n  - 3\n", 2, 5,
          "key 'layers': item 1: expected a mapping {layer: N or FIRST-LAST, k_type: T, v_type: T}, not a scalar" },
        { "layers: {layer: 0}\n", 1, 9,
          "key 'layers': expected a sequence of mappings or a single value, not a mapping" },
        { "layers:\n", 1, 8, "key 'layers': no value: expected items FIRST[-LAST]:K_TYPE/V_TYPE" },
        { "layers: \"0:q9/\"\n", 1, 9,
          "key 'layers': value '0:q9/': item 1: k_type 'q9': expected one of f32, f16, q8_0" },
        { "layers: []\nlayers: []\n", 2, 1, "duplicate key 'layers' (first set at line 1)" },
    };
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        tkv_context *ctx;
        char prefix[128];
        int rc = open_with(bad[i].yaml, 0, &ctx);
        if (rc != TKV_ECONFIG)
            fail_msg("case %zu: returned %d (%s), expected TKV_ECONFIG", i, rc, tkv_last_error());
        assert_null(ctx);
        snprintf(prefix, sizeof prefix, "%s:%u:%u: ", config_path, bad[i].line, bad[i].column);
        if (strncmp(tkv_last_error(), prefix, strlen(prefix)) != 0)
            fail_msg("case %zu: \"%s\"\n  does not start with \"%s\"", i, tkv_last_error(), prefix);
        assert_contains(tkv_last_error(), bad[i].what);
    }
    /* a value type that is a key type, from the host */
    tkv_context *ctx = open_ok("");
    struct cache_shape s = { 2, 1, 64, 4, 0, TKV_TYPE_TURBO3_QJL, TKV_TYPE_TURBO3_QJL, 0, 0 };
    tkv_cache *c;
    assert_int_equal(create(ctx, &s, &c), TKV_EINVAL);
    assert_contains(tkv_last_error(), "value type turbo3_qjl of layer 0: QJL types are for keys only");
    tkv_context_close(ctx);
}

/* ---- the configuration's own choices ------------------------------------------------------- */

static void auto_asymmetric(void **state)
{
    (void)state;
    struct cache_shape s = { 2, 2, 64, 4, 0, TKV_TYPE_FROM_CONFIG, TKV_TYPE_FROM_CONFIG, 0, 0 };
    tkv_context *ctx = open_ok("log: info\nscheme: turbo3\n");

    s.n_q_heads = 12; /* GQA 6: keys to q8_0, logged */
    expect_layers(ctx, &s, "qq/33");
    assert_contains(log_text, "auto_asymmetric: GQA ratio 6 >= 6, keys turbo3 -> q8_0");
    log_text[0] = '\0';
    s.n_q_heads = 10; /* GQA 5 */
    expect_layers(ctx, &s, "33/33");
    assert_null(strstr(log_text, "auto_asymmetric"));
    s.n_q_heads = 16; /* keys the host sets stay */
    s.k_type = TKV_TYPE_TURBO3;
    expect_layers(ctx, &s, "33/33");
    tkv_context_close(ctx);

    ctx = open_ok("scheme: turbo3\nauto_asymmetric: false\n");
    s.k_type = TKV_TYPE_FROM_CONFIG;
    expect_layers(ctx, &s, "33/33");
    tkv_context_close(ctx);
}

/* scheme auto: the types by head_dim and device, logged. */
static void auto_scheme(void **state)
{
    (void)state;
    /* core/policy.c: q8_0 keys and turbo3 values below head_dim 64, the
     * outlier-split types from 64 on (turbo4o keys above 128) */
    static const struct {
        uint32_t head_dim;
        const char *layers, *log;
    } cases[] = {
        { 8, "qq/33", "keys q8_0, values turbo3" },    { 32, "qq/33", "keys q8_0, values turbo3" },
        { 56, "qq/33", "keys q8_0, values turbo3" },   { 64, "oo/oo", "keys turbo3o, values turbo3o" },
        { 128, "oo/oo", "keys turbo3o, values turbo3o" }, { 136, "OO/oo", "keys turbo4o, values turbo3o" },
        { 576, "OO/oo", "keys turbo4o, values turbo3o" },
    };
    /* the same on the GPU plugins, which hold the outlier-split types
     * (TKV_CAP_OUTLIER_TYPES; not the rotor rotation, which auto does not
     * use): a device missing is skipped, except under CI=true (lavapipe,
     * PoCL) */
    static const char *const backends[] = { "cpu", "opencl", "vulkan" };
    const char *ci = getenv("CI");
    tkv_context *ctx;
    for (size_t b = 0; b < sizeof backends / sizeof *backends; b++) {
        open_backend = backends[b];
        if (open_with("log: info\n", 0, &ctx) != TKV_OK) {
            if (b == 0 || (ci && strcmp(ci, "true") == 0))
                fail_msg("backend %s: %s", backends[b], tkv_last_error());
            print_message("auto_scheme: skipped backend %s: %s\n", backends[b], tkv_last_error());
            continue;
        }
        struct tkv_device_caps caps = { .struct_size = sizeof caps };
        assert_int_equal(tkv_context_caps(ctx, &caps), TKV_OK);
        assert_true(caps.features & TKV_CAP_OUTLIER_TYPES);
        for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
            struct cache_shape s = { 2, 2, cases[i].head_dim, 4, 4, TKV_TYPE_FROM_CONFIG, TKV_TYPE_FROM_CONFIG, 0, 0 };
            log_text[0] = '\0';
            expect_layers(ctx, &s, cases[i].layers);
            assert_contains(log_text, cases[i].log);
            assert_null(strstr(log_text, "auto_asymmetric")); /* GQA 2 */
        }
        print_message("auto_scheme: backend %s (%s) as cpu\n", backends[b], tkv_context_device(ctx));
        tkv_context_close(ctx);
    }
    open_backend = "cpu";
    /* a device without the outlier-split types (format revision 1): q8_0 /
     * turbo3 at every head_dim */
    char path[4096];
    snprintf(path, sizeof path, "%s:%s", getenv("TKV_MINIMAL_PLUGIN_DIR"), getenv("TURBO_PLUGIN_PATH"));
    struct tkv_context_options o = { .struct_size = sizeof o, .ignore_env = 1, .plugin_path = path,
                                     .backend = "minimal" };
    if (tkv_context_open(&o, &ctx) != TKV_OK)
        fail_msg("the minimal plugin (%s): %s", path, tkv_last_error());
    struct tkv_device_caps caps = { .struct_size = sizeof caps };
    assert_int_equal(tkv_context_caps(ctx, &caps), TKV_OK);
    assert_false(caps.features & (TKV_CAP_FORMAT_R1 | TKV_CAP_OUTLIER_TYPES));
    struct cache_shape s128 = { 2, 2, 128, 4, 4, TKV_TYPE_FROM_CONFIG, TKV_TYPE_FROM_CONFIG, 0, 0 };
    expect_layers(ctx, &s128, "qq/33");
    tkv_context_close(ctx);
    /* the outlier-split types by name */
    tkv_context *named = open_ok("scheme: turbo3o\n");
    expect_layers(named, &s128, "oo/oo");
    tkv_context_close(named);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(mse_at_optimum),
        cmocka_unit_test(bits_per_value_bound),
        cmocka_unit_test(qjl_inner_products_unbiased),
        cmocka_unit_test(qjl_attention_matches_dequantized),
        cmocka_unit_test(outlier_split_at_optimum),
        cmocka_unit_test(layer_adaptive_modes),
        cmocka_unit_test(layer_adaptive_conditions),
        cmocka_unit_test(layers_key),
        cmocka_unit_test(layers_key_errors),
        cmocka_unit_test(auto_asymmetric),
        cmocka_unit_test(auto_scheme),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
