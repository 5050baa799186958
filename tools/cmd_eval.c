/* SPDX-License-Identifier: MIT */
/*
 * `turbokv eval`: the distortion of each storage type against the optimum it
 * should reach, and what it does to decode attention, measured in one run
 * through the public API (README "Quality against the
 * optimum").
 *
 * Table 1, per type x head_dim x rotation:
 *   - bits/value actually stored (tkv_type_bits_per_value) and the bound
 *     b + 16 s/g it must meet (s fp16 words per group, g the smallest group);
 *   - mse: E||u - u_hat||^2 of random unit vectors u taken through the whole
 *     pipeline (tkv_cache_append, tkv_cache_dequantize), scale = the norm,
 *     against tkv_optimal_mse and as a ratio to it;
 *   - ip: head_dim E<q, u_hat - u>^2 for an independent random unit q (equal
 *     to mse when the error is isotropic; the paper's D_prod times head_dim)
 *     and the inner-product bias E<u, u_hat> - 1 with its standard error;
 *   - on synthetic K/V shaped like real caches: the relative error of the
 *     stored keys, and of decode attention (tkv_attention) against float64
 *     attention on the unquantized K/V, with K and V in the type (a QJL type
 *     stores keys only: its values go in the turbo type of the same bits),
 *     scale = norm and scale = norm-corrected.
 * Table 2, per K/V pair on synthetic head dims and on the real stories260K
 * K/V dumps: K and V relative error and attention error, both scale modes,
 * rotation as configured; the mean cosine similarity of stored and original
 * K and V rows; top-1 / top-5 agreement: the share of query rows whose exact
 * attention argmax is the argmax (is among the 5 highest) of the scores
 * against the stored keys (tkv_cache_dequantize, scale as configured).
 * Table 3, the needle test, per key type x head_dim x context length: in a
 * synthetic cache (the keys of table 1's workloads, one KV head), needles
 * are planted at evenly spread depths, each a key moved along its own
 * random query until its score leads the rest by NEEDLE_MARGIN standard
 * deviations of that query's scores; a needle is retrieved when the argmax
 * of its query's scores against the stored keys is the needle.
 */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fidelity.h"
#include "npy.h"
#include "tool.h"

#define DEFAULT_TYPES "turbo2,turbo3,turbo4,turbo3_qjl,turbo4_qjl,turbo3o,turbo4o,q8_0"
#define DEFAULT_HEAD_DIMS "8,16,32,64,80,96,128,192,256,576"
#define DEFAULT_ROTATIONS "wht,dense,none,rotor"
#define DEFAULT_PAIRS                                                                                  \
    "f32/f32,q8_0/q8_0,turbo4/turbo4,turbo3/turbo3,turbo2/turbo2,q8_0/turbo4,q8_0/turbo3,turbo4/turbo3," \
    "turbo3_qjl/turbo3,turbo4_qjl/turbo3,f32/turbo3,turbo4/f32,turbo3o/f32,turbo4o/f32,turbo3o/turbo3o,"          \
    "turbo4o/turbo3,turbo4o/turbo3o"
#define DEFAULT_PAIR_HEAD_DIMS "8,64,128"
#define DEFAULT_VECTORS 2000
#define DEFAULT_CTX 2048
#define DEFAULT_NEEDLE_CTX "4096,16384,65536"
#define DEFAULT_NEEDLES 16
/* A needle's lead over the best other score, in standard deviations of its
 * query's scores: about the spacing of the top few scores of 4K-64K
 * Gaussian ones, so that score errors of a few percent of the spread
 * start to lose needles. */
#define NEEDLE_MARGIN 0.2
#define MAX_ITEMS 32

/* Synthetic caches, shaped like real ones: Gaussian channels with one
 * channel in 32 (at least one) ten times larger, values a tenth of keys
 * (the stories260K dumps: K std 3.3-7.0, V 0.38-0.73), queries Gaussian.
 * Two KV heads, each read by 4 query heads (GQA 4), 8 new query tokens:
 * 64 output rows per measurement. */
#define SYN_OUTLIER_EVERY 32u
#define SYN_OUTLIER_SCALE 10.0
#define SYN_VALUE_SCALE 0.1
#define SYN_KV_HEADS 2u
#define SYN_QUERY_HEADS 8u
#define SYN_QUERIES 8u
/* The dumps hold K and V only: the query of position p is the key of token
 * p + 1 of the same head (keys and queries are projections of the same
 * stream, rotated by RoPE), for the last REAL_QUERIES cached positions. */
#define REAL_QUERIES 128u

#define SEED_DATA 0x6576616c64617461ull  /* "evaldata" */
#define SEED_UNIT 0x6576616c756e6974ull  /* "evalunit" */
#define SEED_NEEDLE 0x6e6565646c657321ull /* "needles!" */

static const char *const rotation_names[] = { [TKV_ROTATION_WHT] = "wht", [TKV_ROTATION_DENSE] = "dense",
                                              [TKV_ROTATION_NONE] = "none", [TKV_ROTATION_ROTOR] = "rotor" };

static int usage(FILE *f)
{
    fprintf(f,
            "usage: turbokv eval [options]\n"
            "  --types LIST       types of table 1 (default " DEFAULT_TYPES ")\n"
            "  --head-dims LIST   head dims of table 1 (default " DEFAULT_HEAD_DIMS ")\n"
            "  --rotations LIST   wht, dense, none, rotor (default all four)\n"
            "  --vectors N        random unit vectors per row for mse and ip (default %d)\n"
            "  -c, --ctx N        tokens of the synthetic caches, 16..65536 (default %d)\n"
            "  --pairs LIST       K/V pairs of table 2, K/V or one type for both (default\n"
            "                     " DEFAULT_PAIRS ")\n"
            "  --pair-head-dims L synthetic head dims of table 2 (default " DEFAULT_PAIR_HEAD_DIMS ")\n"
            "  --keys F, --values F  real K/V dumps, float32 [layers][tokens][kv heads][head_dim]\n"
            "                     (default: the shipped s260k_keys.npy, s260k_values.npy)\n"
            "  --needle-ctx LIST  context lengths of the needle test, 16..65536 (default\n"
            "                     " DEFAULT_NEEDLE_CTX "; 0 leaves the test out)\n"
            "  --needles N        needles per context (default %d)\n"
            "  --backend B        auto or a plugin name: cpu, vulkan, opencl, ... (default: configuration)\n"
            "  --json             one JSON array of rows: table 1 rows (\"table\": \"types\") have\n"
            "                     type, head_dim, groups, rotation, v_type, bits_per_value,\n"
            "                     bits_bound, mse, mse_optimal, mse_ratio, ip_err, ip_bias,\n"
            "                     ip_bias_se, cos, k_rel_err, attn_rel_err (scale = norm),\n"
            "                     attn_rel_err_corrected and their _se; table 2 rows (\"pairs\")\n"
            "                     data, k_type, v_type, head_dim, rotation, bits_per_value,\n"
            "                     k_rel_err, v_rel_err, k_cos, v_cos, top1, top5 and the\n"
            "                     attention errors; needle rows (\"needle\") type, head_dim,\n"
            "                     ctx, needles, exact, retrieved, retrieved_rate\n"
            "Options take their value as --ctx 512 or --ctx=512; see man turbokv.\n",
            DEFAULT_VECTORS, DEFAULT_CTX, DEFAULT_NEEDLES);
    return f == stderr ? 2 : 0;
}

/* ---- random numbers: splitmix64, Box-Muller --------------------------------------------------- */

static uint64_t rng_next(uint64_t *state)
{
    uint64_t z = (*state += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

static double rng_gauss(uint64_t *state)
{
    double u1 = ((double)(rng_next(state) >> 11) + 0.5) * 0x1p-53;
    double u2 = (double)(rng_next(state) >> 11) * 0x1p-53;
    return sqrt(-2.0 * log(u1)) * cos(6.283185307179586 * u2);
}

/* A random unit vector (uniform on the sphere: a normalized Gaussian). */
static void rng_unit(uint64_t *state, uint32_t n, double *out)
{
    double sq = 0.0;
    for (uint32_t i = 0; i < n; i++) {
        out[i] = rng_gauss(state);
        sq += out[i] * out[i];
    }
    for (uint32_t i = 0; i < n; i++)
        out[i] /= sqrt(sq);
}

/* ---- workloads: K/V, queries, float64 attention --------------------------------------------- */

/* n_layers x [tokens][n_kv][head_dim] K and V of which the first n_ctx
 * tokens are cached; queries at the last n_q cached positions,
 * [layer][n_q][n_qh][head_dim], and their float64 attention on the
 * unquantized K/V, causal: query t sees positions 0 .. n_ctx - n_q + t. */
struct workload {
    char name[16];
    uint32_t n_layers, n_ctx, n_kv, n_qh, n_q, head_dim;
    size_t layer_floats; /* floats of one layer of k or v */
    float *k, *v, *q;
    double *ref;
};

static void workload_free(struct workload *w)
{
    free(w->k);
    free(w->v);
    free(w->q);
    free(w->ref);
    memset(w, 0, sizeof *w);
}

static size_t query_floats(const struct workload *w) { return (size_t)w->n_q * w->n_qh * w->head_dim; }

static int reference_attention(struct workload *w)
{
    const uint32_t hd = w->head_dim;
    const double scale = 1.0 / sqrt((double)hd);
    double *scores = malloc(sizeof *scores * w->n_ctx);
    w->ref = calloc((size_t)w->n_layers * query_floats(w), sizeof *w->ref);
    if (!scores || !w->ref) {
        free(scores);
        return -1;
    }
    for (uint32_t l = 0; l < w->n_layers; l++)
        for (uint32_t t = 0; t < w->n_q; t++)
            for (uint32_t h = 0; h < w->n_qh; h++) {
                size_t at = (size_t)l * query_floats(w) + ((size_t)t * w->n_qh + h) * hd;
                const float *q = w->q + at;
                uint32_t kv = h / (w->n_qh / w->n_kv), rows = w->n_ctx - w->n_q + t + 1;
                double max = -INFINITY, sum = 0.0, *out = w->ref + at;
                for (uint32_t j = 0; j < rows; j++) {
                    const float *k = w->k + l * w->layer_floats + ((size_t)j * w->n_kv + kv) * hd;
                    double s = 0.0;
                    for (uint32_t i = 0; i < hd; i++)
                        s += (double)q[i] * k[i];
                    scores[j] = s * scale;
                    max = fmax(max, scores[j]);
                }
                for (uint32_t j = 0; j < rows; j++) {
                    const float *v = w->v + l * w->layer_floats + ((size_t)j * w->n_kv + kv) * hd;
                    double p = exp(scores[j] - max);
                    sum += p;
                    for (uint32_t i = 0; i < hd; i++)
                        out[i] += p * v[i];
                }
                for (uint32_t i = 0; i < hd; i++)
                    out[i] /= sum;
            }
    free(scores);
    return 0;
}

static int synthetic_workload(uint32_t head_dim, uint32_t ctx, struct workload *w)
{
    uint64_t state = SEED_DATA ^ head_dim;
    double channel[SYN_KV_HEADS][TKV_HEAD_DIM_MAX]; /* each head its own outlier channels */
    *w = (struct workload){ .n_layers = 1, .n_ctx = ctx, .n_kv = SYN_KV_HEADS, .n_qh = SYN_QUERY_HEADS,
                            .n_q = SYN_QUERIES, .head_dim = head_dim,
                            .layer_floats = (size_t)ctx * SYN_KV_HEADS * head_dim };
    snprintf(w->name, sizeof w->name, "synthetic");
    w->k = malloc(sizeof *w->k * w->layer_floats);
    w->v = malloc(sizeof *w->v * w->layer_floats);
    w->q = malloc(sizeof *w->q * query_floats(w));
    if (!w->k || !w->v || !w->q)
        return -1;
    for (uint32_t h = 0; h < SYN_KV_HEADS; h++) {
        for (uint32_t i = 0; i < head_dim; i++)
            channel[h][i] = 1.0;
        for (uint32_t n = 0; n < (head_dim + SYN_OUTLIER_EVERY - 1) / SYN_OUTLIER_EVERY; n++) {
            uint32_t c;
            do /* distinct channels */
                c = (uint32_t)(rng_next(&state) % head_dim);
            while (channel[h][c] != 1.0);
            channel[h][c] = SYN_OUTLIER_SCALE;
        }
    }
    for (size_t i = 0; i < w->layer_floats; i++) {
        double scale = channel[i / head_dim % SYN_KV_HEADS][i % head_dim];
        w->k[i] = (float)(scale * rng_gauss(&state));
        w->v[i] = (float)(SYN_VALUE_SCALE * scale * rng_gauss(&state));
    }
    for (size_t i = 0; i < query_floats(w); i++)
        w->q[i] = (float)rng_gauss(&state);
    return reference_attention(w);
}

static int load_dump(const char *path, struct npy_array *a)
{
    char err[1024];
    if (npy_read(path, NPY_FLOAT32, a, err, sizeof err) != 0) {
        fprintf(stderr, "turbokv eval: %s\n", err);
        return -1;
    }
    if (a->ndim != 4) {
        fprintf(stderr, "turbokv eval: %s: expected float32 [layers][tokens][kv heads][head_dim], got %u dimensions\n",
                path, a->ndim);
        npy_free(a);
        return -1;
    }
    return 0;
}

static int real_workload(const char *keys, const char *values, struct workload *w)
{
    struct npy_array k, v;
    memset(w, 0, sizeof *w);
    if (load_dump(keys, &k) != 0)
        return -1;
    if (load_dump(values, &v) != 0) {
        npy_free(&k);
        return -1;
    }
    const uint64_t *s = k.shape;
    int ok = memcmp(k.shape, v.shape, 4 * sizeof *k.shape) == 0 && s[1] > REAL_QUERIES + 1 && s[1] <= 65536 &&
             s[0] <= 4096 && s[2] >= 1 && s[2] <= 1024 && tkv_head_dim_supported((uint32_t)s[3]);
    if (!ok) {
        fprintf(stderr, "turbokv eval: %s and %s: shapes [%llu][%llu][%llu][%llu] and [%llu][%llu][%llu][%llu] must "
                        "match, with more than %u tokens and a supported head_dim\n",
                keys, values, (unsigned long long)s[0], (unsigned long long)s[1], (unsigned long long)s[2],
                (unsigned long long)s[3], (unsigned long long)v.shape[0], (unsigned long long)v.shape[1],
                (unsigned long long)v.shape[2], (unsigned long long)v.shape[3], REAL_QUERIES + 1);
        npy_free(&k);
        npy_free(&v);
        return -1;
    }
    /* the last token has no next key to query with: n_ctx = tokens - 1 */
    *w = (struct workload){ .n_layers = (uint32_t)s[0], .n_ctx = (uint32_t)s[1] - 1, .n_kv = (uint32_t)s[2],
                            .n_qh = (uint32_t)s[2], .n_q = REAL_QUERIES, .head_dim = (uint32_t)s[3],
                            .layer_floats = (size_t)s[1] * s[2] * s[3], .k = k.data, .v = v.data };
    snprintf(w->name, sizeof w->name, "s260k");
    w->q = malloc(sizeof *w->q * w->n_layers * query_floats(w));
    if (!w->q)
        return -1;
    size_t token = (size_t)w->n_kv * w->head_dim;
    for (uint32_t l = 0; l < w->n_layers; l++)
        for (uint32_t t = 0; t < w->n_q; t++) {
            uint32_t next = w->n_ctx - w->n_q + t + 1;
            memcpy(w->q + l * query_floats(w) + t * token, w->k + l * w->layer_floats + next * token,
                   sizeof *w->q * token);
        }
    return reference_attention(w);
}

/* ---- measurements ----------------------------------------------------------------------------- */

/* K and V relative error sum ||x - x_hat||^2 / sum ||x||^2, and attention
 * relative error sqrt(sum ||out - ref||^2 / sum ||ref||^2) over the output
 * rows (a ratio of sums: rows whose reference nearly cancels to 0 would
 * dominate a mean of per-row ratios), with its standard error over the
 * rows: few rows with a peaked softmax carry much of the sum. */
struct attn_result {
    double k_err, v_err, attn_err, attn_se;
    double k_cos, v_cos, top1, top5; /* fidelity.h; NAN where not measured */
    uint32_t rotation; /* the cache's, when rotation 0 asked for the configured one */
};

/* sqrt(sum a / sum b) and its standard error, from the linearization of the
 * ratio R = A/B: var(R) ~ sum (a_r - R b_r)^2 / B^2, and d sqrt(R) = dR / (2 sqrt(R)). */
static void ratio_error(const double *a, const double *b, size_t n, double *value, double *se)
{
    double sa = 0.0, sb = 0.0, var = 0.0;
    for (size_t i = 0; i < n; i++) {
        sa += a[i];
        sb += b[i];
    }
    double ratio = sa / sb;
    for (size_t i = 0; i < n; i++)
        var += (a[i] - ratio * b[i]) * (a[i] - ratio * b[i]);
    *value = sqrt(ratio);
    *se = ratio > 0.0 ? sqrt(var) / sb / (2.0 * *value) : 0.0;
}

/* The relative error of the stored K (which 0) or V (1) of a layer; adds
 * the rows' cosines to *cos_sum, *cos_n. Leaves the stored rows in buf. */
static double relative_error(tkv_cache *c, const struct workload *w, uint32_t layer, int which, float *buf,
                             double *cos_sum, size_t *cos_n)
{
    const float *x = (which ? w->v : w->k) + layer * w->layer_floats;
    size_t n = (size_t)w->n_ctx * w->n_kv * w->head_dim, counted;
    double err = 0.0, norm = 0.0;
    if (tkv_cache_dequantize(c, 0, layer, which, 0, w->n_ctx, buf) != TKV_OK)
        return NAN;
    for (size_t i = 0; i < n; i++) {
        err += ((double)x[i] - buf[i]) * ((double)x[i] - buf[i]);
        norm += (double)x[i] * x[i];
    }
    *cos_sum += fid_cosine_sum(x, buf, (size_t)w->n_ctx * w->n_kv, w->head_dim, &counted);
    *cos_n += counted;
    return err / norm;
}

/* Top-1 / top-5 agreement of every query row of a layer: exact scores on
 * the workload's keys against scores on the stored keys k_hat. */
static void topk_layer(const struct workload *w, uint32_t layer, const float *k_hat, double *exact, double *quant,
                       struct fid_topk *acc)
{
    const uint32_t hd = w->head_dim;
    const size_t stride = (size_t)w->n_kv * hd;
    for (uint32_t t = 0; t < w->n_q; t++)
        for (uint32_t h = 0; h < w->n_qh; h++) {
            const float *q = w->q + layer * query_floats(w) + ((size_t)t * w->n_qh + h) * hd;
            uint32_t kv = h / (w->n_qh / w->n_kv), rows = w->n_ctx - w->n_q + t + 1;
            fid_scores(w->k + layer * w->layer_floats + kv * hd, stride, rows, q, hd, exact);
            fid_scores(k_hat + kv * hd, stride, rows, q, hd, quant);
            fid_topk_add(exact, quant, rows, acc);
        }
}

/* The K and V errors only when errors is set (they cost a dequantize). */
static int measure_attention(tkv_context *ctx, const struct workload *w, uint32_t k_type, uint32_t v_type,
                             uint32_t rotation, uint32_t scale_mode, int errors, struct attn_result *r)
{
    struct tkv_cache_params p = {
        .struct_size = sizeof p, .n_layers = w->n_layers, .n_kv_heads = w->n_kv, .head_dim = w->head_dim,
        .capacity = w->n_ctx, .n_seqs = 1, .k_type = k_type, .v_type = v_type, .n_q_heads = w->n_qh,
        .rotation = rotation, .scale_mode = scale_mode,
    };
    struct tkv_cache_shape shape;
    tkv_cache *c = NULL;
    size_t qn = query_floats(w), rows = qn / w->head_dim, n_rows = 0;
    float *out = malloc(sizeof *out * qn), *buf = malloc(sizeof *buf * w->layer_floats);
    double *err = malloc(sizeof *err * w->n_layers * rows), *mag = malloc(sizeof *mag * w->n_layers * rows);
    double *exact = malloc(sizeof *exact * w->n_ctx), *quant = malloc(sizeof *quant * w->n_ctx);
    double k_err = 0.0, v_err = 0.0, k_cos = 0.0, v_cos = 0.0;
    size_t k_n = 0, v_n = 0;
    struct fid_topk topk = { 0 };
    const uint32_t seq = 0;
    int rc = out && buf && err && mag && exact && quant ? tkv_cache_create(ctx, &p, &c) : TKV_ENOMEM;
    for (uint32_t l = 0; rc == TKV_OK && l < w->n_layers; l++) {
        rc = tkv_cache_append(c, seq, l, w->n_ctx, w->k + l * w->layer_floats, w->v + l * w->layer_floats);
        if (rc == TKV_OK)
            rc = tkv_attention(c, l, 1, &seq, w->n_q, w->n_qh, w->q + l * qn, out, NULL);
        for (size_t row = 0; rc == TKV_OK && row < rows; row++, n_rows++) {
            const double *ref = w->ref + l * qn + row * w->head_dim;
            err[n_rows] = mag[n_rows] = 0.0;
            for (uint32_t i = 0; i < w->head_dim; i++) {
                double d = out[row * w->head_dim + i] - ref[i];
                err[n_rows] += d * d;
                mag[n_rows] += ref[i] * ref[i];
            }
        }
        if (rc == TKV_OK && errors) {
            k_err += relative_error(c, w, l, 0, buf, &k_cos, &k_n);
            topk_layer(w, l, buf, exact, quant, &topk);
            v_err += relative_error(c, w, l, 1, buf, &v_cos, &v_n);
        }
    }
    if (rc == TKV_OK && tkv_cache_get_shape(c, &shape) == TKV_OK) {
        *r = (struct attn_result){ .k_err = errors ? k_err / w->n_layers : NAN,
                                   .v_err = errors ? v_err / w->n_layers : NAN,
                                   .k_cos = k_n ? k_cos / k_n : NAN, .v_cos = v_n ? v_cos / v_n : NAN,
                                   .top1 = topk.rows ? (double)topk.top1 / topk.rows : NAN,
                                   .top5 = topk.rows ? (double)topk.top5 / topk.rows : NAN,
                                   .rotation = shape.rotation };
        ratio_error(err, mag, n_rows, &r->attn_err, &r->attn_se);
    }
    tkv_cache_destroy(c);
    free(out);
    free(buf);
    free(err);
    free(mag);
    free(exact);
    free(quant);
    if (rc != TKV_OK) {
        char what[160];
        snprintf(what, sizeof what, "K %s / V %s at head_dim %u on %s data", tkv_type_name(k_type),
                 tkv_type_name(v_type), w->head_dim, w->name);
        tool_fail(what, rc);
    }
    return rc;
}

/* Random unit vectors through the pipeline, scale = the norm. */
struct unit_result {
    double mse, ip_err, bias, bias_se, cos;
};

static int measure_unit_vectors(tkv_context *ctx, uint32_t type, uint32_t head_dim, uint32_t rotation, uint32_t n,
                                struct unit_result *r)
{
    struct tkv_cache_params p = {
        .struct_size = sizeof p, .n_layers = 1, .n_kv_heads = 1, .head_dim = head_dim, .capacity = n,
        .n_seqs = 1, .k_type = type, .v_type = TKV_TYPE_F32, .rotation = rotation, .scale_mode = TKV_SCALE_NORM,
    };
    size_t count = (size_t)n * head_dim;
    float *u = malloc(sizeof *u * count), *back = malloc(sizeof *back * count);
    double unit[TKV_HEAD_DIM_MAX], q[TKV_HEAD_DIM_MAX];
    double mse = 0.0, ip = 0.0, bias = 0.0, bias_sq = 0.0, cos = 0.0;
    /* the same vectors for every type and rotation of a head_dim */
    uint64_t state = SEED_UNIT ^ head_dim;
    tkv_cache *c = NULL;
    int rc = u && back ? tkv_cache_create(ctx, &p, &c) : TKV_ENOMEM;
    for (size_t i = 0; rc == TKV_OK && i < n; i++) {
        rng_unit(&state, head_dim, unit);
        for (uint32_t j = 0; j < head_dim; j++)
            u[i * head_dim + j] = (float)unit[j];
    }
    if (rc == TKV_OK)
        rc = tkv_cache_append(c, 0, 0, n, u, u);
    if (rc == TKV_OK)
        rc = tkv_cache_dequantize(c, 0, 0, 0, 0, n, back);
    for (size_t i = 0; rc == TKV_OK && i < n; i++) {
        const float *x = u + i * head_dim, *y = back + i * head_dim;
        double e2 = 0.0, qe = 0.0, self = 0.0;
        rng_unit(&state, head_dim, q);
        for (uint32_t j = 0; j < head_dim; j++) {
            double d = (double)y[j] - x[j];
            e2 += d * d;
            qe += q[j] * d;
            self += (double)x[j] * y[j];
        }
        mse += e2;
        cos += fid_cosine_sum(x, y, 1, head_dim, NULL);
        ip += qe * qe;
        bias += self - 1.0;
        bias_sq += (self - 1.0) * (self - 1.0);
    }
    if (rc == TKV_OK) {
        double mean = bias / n;
        *r = (struct unit_result){ .mse = mse / n, .ip_err = head_dim * ip / n, .bias = mean, .cos = cos / n,
                                   .bias_se = sqrt(fmax(bias_sq / n - mean * mean, 0.0) / (n - 1)) };
    }
    tkv_cache_destroy(c);
    free(u);
    free(back);
    if (rc != TKV_OK) {
        char what[96];
        snprintf(what, sizeof what, "%s unit vectors at head_dim %u", tkv_type_name(type), head_dim);
        tool_fail(what, rc);
    }
    return rc;
}

/* The needle test at one key type, head_dim and context length. */
struct needle_result {
    uint32_t needles, exact, retrieved;
};

/* Haystack keys of the synthetic distribution (one channel in 32 ten times
 * larger), one KV head, the same for every type at a head_dim and length. */
static int measure_needles(tkv_context *ctx, uint32_t type, uint32_t head_dim, uint32_t n_ctx, uint32_t needles,
                           struct needle_result *r)
{
    struct tkv_cache_params p = {
        .struct_size = sizeof p, .n_layers = 1, .n_kv_heads = 1, .head_dim = head_dim, .capacity = n_ctx,
        .n_seqs = 1, .k_type = type, .v_type = TKV_TYPE_F16, .n_q_heads = 1,
    };
    size_t n = (size_t)n_ctx * head_dim;
    float *k = malloc(sizeof *k * n), *back = malloc(sizeof *back * n), *q = malloc(sizeof *q * needles * head_dim);
    double *scores = malloc(sizeof *scores * n_ctx), channel[TKV_HEAD_DIM_MAX];
    uint64_t state = SEED_NEEDLE ^ head_dim ^ (uint64_t)n_ctx << 32;
    tkv_cache *c = NULL;
    int rc = k && back && q && scores ? TKV_OK : TKV_ENOMEM;
    *r = (struct needle_result){ .needles = needles };
    for (uint32_t i = 0; i < head_dim; i++)
        channel[i] = 1.0;
    for (uint32_t o = 0; o < (head_dim + SYN_OUTLIER_EVERY - 1) / SYN_OUTLIER_EVERY; o++) {
        uint32_t ch;
        do
            ch = (uint32_t)(rng_next(&state) % head_dim);
        while (channel[ch] != 1.0);
        channel[ch] = SYN_OUTLIER_SCALE;
    }
    for (size_t i = 0; rc == TKV_OK && i < n; i++)
        k[i] = (float)(channel[i % head_dim] * rng_gauss(&state));
    for (uint32_t i = 0; rc == TKV_OK && i < needles; i++) {
        float *qi = q + (size_t)i * head_dim;
        uint32_t pos = (uint32_t)(((uint64_t)2 * i + 1) * n_ctx / (2 * needles));
        for (uint32_t j = 0; j < head_dim; j++)
            qi[j] = (float)rng_gauss(&state);
        fid_scores(k, head_dim, n_ctx, qi, head_dim, scores);
        fid_needle_plant(k, head_dim, n_ctx, qi, head_dim, pos, NEEDLE_MARGIN, scores);
    }
    if (rc == TKV_OK)
        rc = tkv_cache_create(ctx, &p, &c);
    if (rc == TKV_OK)
        rc = tkv_cache_append(c, 0, 0, n_ctx, k, k);
    if (rc == TKV_OK)
        rc = tkv_cache_dequantize(c, 0, 0, 0, 0, n_ctx, back);
    for (uint32_t i = 0; rc == TKV_OK && i < needles; i++) {
        const float *qi = q + (size_t)i * head_dim;
        uint32_t pos = (uint32_t)(((uint64_t)2 * i + 1) * n_ctx / (2 * needles));
        /* later needles move other rows: count those the exact keys still hold */
        fid_scores(k, head_dim, n_ctx, qi, head_dim, scores);
        if (fid_argmax(scores, n_ctx) != pos)
            continue;
        r->exact++;
        fid_scores(back, head_dim, n_ctx, qi, head_dim, scores);
        r->retrieved += fid_argmax(scores, n_ctx) == pos;
    }
    tkv_cache_destroy(c);
    free(k);
    free(back);
    free(q);
    free(scores);
    if (rc != TKV_OK) {
        char what[96];
        snprintf(what, sizeof what, "needles in %s keys at head_dim %u, %u tokens", tkv_type_name(type), head_dim,
                 n_ctx);
        tool_fail(what, rc);
    }
    return rc;
}

/* ---- rows -------------------------------------------------------------------------------------- */

struct type_row {
    uint32_t type, head_dim, rotation, v_type;
    char groups[48];
    double bits, bound, mse, optimum;
    struct unit_result unit;
    struct attn_result norm, corrected;
};

struct pair_row {
    char data[16];
    uint32_t k_type, v_type, head_dim;
    double bits;
    struct attn_result norm, corrected;
};

struct needle_row {
    uint32_t type, head_dim, ctx;
    double bits;
    struct needle_result result;
};

/* "64+16", "4x128+64" */
static void describe_groups(uint32_t head_dim, char *buf, size_t size)
{
    uint32_t g[TKV_MAX_GROUPS], n = tkv_group_split(head_dim, g);
    size_t used = 0;
    buf[0] = '\0';
    for (uint32_t i = 0; i < n;) {
        uint32_t run = 1;
        while (i + run < n && g[i + run] == g[i])
            run++;
        used += (size_t)snprintf(buf + used, used < size ? size - used : 0, "%s", i ? "+" : "");
        if (run > 1)
            used += (size_t)snprintf(buf + used, used < size ? size - used : 0, "%ux", run);
        used += (size_t)snprintf(buf + used, used < size ? size - used : 0, "%u", g[i]);
        i += run;
    }
}

/* The bits/value a type may spend at a head_dim: b + 16 s/g, s the fp16
 * words per block (scale; QJL adds the residual norm), g the smallest block
 * (turbo: the smallest group of the split; q8_0: the shortest 32-block);
 * outlier-split types add their outliers' index and fp16 bits. */
static double bits_bound(uint32_t type, uint32_t head_dim)
{
    uint32_t g[TKV_MAX_GROUPS], n = tkv_group_split(head_dim, g);
    if (type == TKV_TYPE_Q8_0) {
        uint32_t last = head_dim % TKV_Q8_0_BLOCK;
        return 8.0 + 16.0 / (last ? last : TKV_Q8_0_BLOCK);
    }
    if (!tkv_type_is_turbo(type))
        return tkv_type_bits_per_value(type, head_dim);
    uint32_t qjl = tkv_type_is_qjl(type);
    double outliers = tkv_type_is_outlier(type) ? (8.0 * tkv_outlier_index_bytes(head_dim) + 16.0) *
                                                      tkv_outlier_count(head_dim) / head_dim
                                                : 0.0;
    return tkv_type_bits(type) + qjl + 16.0 * (1 + qjl) / g[n - 1] + outliers;
}

static int parse_count(const char *opt, const char *text, long min, long max, long *out)
{
    char *end;
    errno = 0;
    long v = strtol(text, &end, 10);
    if (errno || end == text || *end || v < min || v > max) {
        fprintf(stderr, "turbokv eval: %s %s: expected an integer in %ld..%ld\n", opt, text, min, max);
        return -1;
    }
    *out = v;
    return 0;
}

/* List items: each parser returns 0, or -1 with what it expects in why. */
typedef int (*item_parser)(const char *text, uint32_t *out, char *why, size_t size);

static int parse_type(const char *text, uint32_t *type, char *why, size_t size)
{
    if (tkv_type_from_name(text, type) == TKV_OK)
        return 0;
    snprintf(why, size, "%s", tkv_last_error());
    return -1;
}

static int parse_head_dim(const char *text, uint32_t *head_dim, char *why, size_t size)
{
    char *end;
    long v = strtol(text, &end, 10);
    if (end == text || *end || v < TKV_GROUP_MIN || v > TKV_HEAD_DIM_MAX || !tkv_head_dim_supported((uint32_t)v)) {
        snprintf(why, size, "expected a multiple of %u up to %u", TKV_GROUP_MIN, TKV_HEAD_DIM_MAX);
        return -1;
    }
    *head_dim = (uint32_t)v;
    return 0;
}

static int parse_rotation(const char *text, uint32_t *rotation, char *why, size_t size)
{
    for (uint32_t r = TKV_ROTATION_WHT; r < TKV_ROTATION_COUNT; r++)
        if (!strcmp(text, rotation_names[r])) {
            *rotation = r;
            return 0;
        }
    snprintf(why, size, "expected wht, dense, none or rotor");
    return -1;
}

static int parse_needle_ctx(const char *text, uint32_t *n, char *why, size_t size)
{
    char *end;
    long v = strtol(text, &end, 10);
    if (end == text || *end || v < 16 || v > 65536) {
        snprintf(why, size, "expected a token count in 16..65536 (or the list 0: no needle test)");
        return -1;
    }
    *n = (uint32_t)v;
    return 0;
}

/* "K/V", or one type for both, packed as K << 16 | V. */
static int parse_pair(const char *text, uint32_t *pair, char *why, size_t size)
{
    char k[32];
    const char *slash = strchr(text, '/');
    size_t n = slash ? (size_t)(slash - text) : strlen(text);
    uint32_t kt, vt;
    if (n >= sizeof k || (memcpy(k, text, n), k[n] = '\0', parse_type(k, &kt, why, size)) != 0 ||
        parse_type(slash ? slash + 1 : k, &vt, why, size) != 0) {
        if (n >= sizeof k)
            snprintf(why, size, "expected K/V type names");
        return -1;
    }
    if (tkv_type_is_qjl(vt)) {
        snprintf(why, size, "%s is a key type: give K/V, e.g. %s/%s", tkv_type_name(vt), tkv_type_name(vt),
                 tkv_type_name(TKV_TYPE_TURBO2 + tkv_type_bits(vt) - 1));
        return -1;
    }
    *pair = kt << 16 | vt;
    return 0;
}

/* A comma-separated list into values; returns the count, or -1 after
 * printing what is wrong. */
static int parse_list(const char *opt, const char *text, uint32_t *values, item_parser parse)
{
    char buf[1024], why[512], *items[MAX_ITEMS];
    if (strlen(text) >= sizeof buf) {
        fprintf(stderr, "turbokv eval: %s: list too long\n", opt);
        return -1;
    }
    strcpy(buf, text);
    int n = tool_split(buf, items, MAX_ITEMS);
    if (n == 0) {
        fprintf(stderr, "turbokv eval: %s: empty list\n", opt);
        return -1;
    }
    for (int i = 0; i < n; i++)
        if (parse(items[i], &values[i], why, sizeof why) != 0) {
            fprintf(stderr, "turbokv eval: %s: '%s': %s\n", opt, items[i], why);
            return -1;
        }
    return n;
}

/* ---- output ------------------------------------------------------------------------------------ */

static void json_number(const char *key, double v)
{
    if (isfinite(v))
        printf(", \"%s\": %.6g", key, v);
    else
        printf(", \"%s\": null", key);
}

static void print_json(const struct type_row *t, int n_t, const struct pair_row *p, int n_p,
                       const struct needle_row *nd, int n_nd)
{
    printf("[");
    for (int i = 0; i < n_t; i++) {
        printf("%s\n  {\"table\": \"types\", \"type\": \"%s\", \"head_dim\": %u, \"groups\": \"%s\", \"rotation\": ",
               i ? "," : "", tkv_type_name(t[i].type), t[i].head_dim, t[i].groups);
        if (tkv_type_is_turbo(t[i].type))
            printf("\"%s\"", rotation_names[t[i].rotation]);
        else
            printf("null");
        printf(", \"v_type\": \"%s\"", tkv_type_name(t[i].v_type));
        json_number("bits_per_value", t[i].bits);
        json_number("bits_bound", t[i].bound);
        json_number("mse", t[i].unit.mse);
        json_number("mse_optimal", t[i].optimum);
        json_number("mse_ratio", t[i].unit.mse / t[i].optimum);
        json_number("ip_err", t[i].unit.ip_err);
        json_number("ip_bias", t[i].unit.bias);
        json_number("ip_bias_se", t[i].unit.bias_se);
        json_number("cos", t[i].unit.cos);
        json_number("k_rel_err", t[i].norm.k_err);
        json_number("attn_rel_err", t[i].norm.attn_err);
        json_number("attn_rel_err_se", t[i].norm.attn_se);
        json_number("attn_rel_err_corrected", t[i].corrected.attn_err);
        json_number("attn_rel_err_corrected_se", t[i].corrected.attn_se);
        printf("}");
    }
    for (int i = 0; i < n_p; i++) {
        printf("%s\n  {\"table\": \"pairs\", \"data\": \"%s\", \"k_type\": \"%s\", \"v_type\": \"%s\", "
               "\"head_dim\": %u, \"rotation\": \"%s\"",
               n_t || i ? "," : "", p[i].data, tkv_type_name(p[i].k_type), tkv_type_name(p[i].v_type),
               p[i].head_dim, rotation_names[p[i].norm.rotation]);
        json_number("bits_per_value", p[i].bits);
        json_number("k_rel_err", p[i].norm.k_err);
        json_number("v_rel_err", p[i].norm.v_err);
        json_number("k_cos", p[i].norm.k_cos);
        json_number("v_cos", p[i].norm.v_cos);
        json_number("top1", p[i].norm.top1);
        json_number("top5", p[i].norm.top5);
        json_number("attn_rel_err", p[i].norm.attn_err);
        json_number("attn_rel_err_se", p[i].norm.attn_se);
        json_number("attn_rel_err_corrected", p[i].corrected.attn_err);
        json_number("attn_rel_err_corrected_se", p[i].corrected.attn_se);
        printf("}");
    }
    for (int i = 0; i < n_nd; i++) {
        const struct needle_result *r = &nd[i].result;
        printf("%s\n  {\"table\": \"needle\", \"type\": \"%s\", \"head_dim\": %u, \"ctx\": %u, \"needles\": %u, "
               "\"exact\": %u, \"retrieved\": %u",
               n_t || n_p || i ? "," : "", tkv_type_name(nd[i].type), nd[i].head_dim, nd[i].ctx, r->needles, r->exact,
               r->retrieved);
        json_number("bits_per_value", nd[i].bits);
        json_number("retrieved_rate", r->exact ? (double)r->retrieved / r->exact : NAN);
        printf("}");
    }
    printf("\n]\n");
}

/* " " and a number in width columns, or "-" where there is none. */
static void cell(int width, int precision, double v)
{
    if (isfinite(v))
        printf(" %*.*f", width, precision, v);
    else
        printf(" %*s", width, "-");
}

/* An attention error and its standard error: " 0.473 (0.021)". */
static void attn_cell(const struct attn_result *r)
{
    printf(" %6.3f (%5.3f)", r->attn_err, r->attn_se);
}

static void print_tables(const struct type_row *t, int n_t, const struct pair_row *p, int n_p,
                         const struct needle_row *nd, int n_nd)
{
    if (n_t) {
        printf("%-10s %4s %-8s %-5s %6s %6s %8s %8s %6s %8s %19s %7s %8s %14s %14s\n", "type", "hd", "groups",
               "rot", "bits", "bound", "mse", "optimum", "ratio", "ip*d", "ip bias (se)", "cos", "K err",
               "attn norm (se)", "attn corr (se)");
        for (int i = 0; i < n_t; i++) {
            printf("%-10s %4u %-8s %-5s", tkv_type_name(t[i].type), t[i].head_dim, t[i].groups,
                   tkv_type_is_turbo(t[i].type) ? rotation_names[t[i].rotation] : "-");
            cell(6, 3, t[i].bits);
            cell(6, 3, t[i].bound);
            cell(8, 5, t[i].unit.mse);
            cell(8, 5, t[i].optimum);
            cell(6, 3, t[i].unit.mse / t[i].optimum);
            cell(8, 5, t[i].unit.ip_err);
            printf(" %+9.5f (%7.5f)", t[i].unit.bias, t[i].unit.bias_se);
            cell(7, 4, t[i].unit.cos);
            cell(8, 5, t[i].norm.k_err);
            attn_cell(&t[i].norm);
            attn_cell(&t[i].corrected);
            printf("\n");
        }
    }
    if (n_p) {
        printf("%s%-10s %4s %-10s %-10s %-5s %6s %9s %9s %7s %7s %6s %6s %14s %14s\n", n_t ? "\n" : "", "data",
               "hd", "K", "V", "rot", "bits", "K err", "V err", "K cos", "V cos", "top1", "top5", "attn norm (se)",
               "attn corr (se)");
        for (int i = 0; i < n_p; i++) {
            printf("%-10s %4u %-10s %-10s %-5s", p[i].data, p[i].head_dim, tkv_type_name(p[i].k_type),
                   tkv_type_name(p[i].v_type), rotation_names[p[i].norm.rotation]);
            cell(6, 3, p[i].bits);
            cell(9, 5, p[i].norm.k_err);
            cell(9, 5, p[i].norm.v_err);
            cell(7, 4, p[i].norm.k_cos);
            cell(7, 4, p[i].norm.v_cos);
            cell(6, 3, p[i].norm.top1);
            cell(6, 3, p[i].norm.top5);
            attn_cell(&p[i].norm);
            attn_cell(&p[i].corrected);
            printf("\n");
        }
    }
    if (n_nd) {
        printf("%s%-10s %4s %6s %6s %8s %6s %10s\n", n_t || n_p ? "\n" : "", "needle K", "hd", "bits", "ctx",
               "needles", "exact", "retrieved");
        for (int i = 0; i < n_nd; i++)
            printf("%-10s %4u %6.3f %6u %8u %6u %10u\n", tkv_type_name(nd[i].type), nd[i].head_dim, nd[i].bits,
                   nd[i].ctx, nd[i].result.needles, nd[i].result.exact, nd[i].result.retrieved);
    }
}

/* ---- the run ----------------------------------------------------------------------------------- */

struct eval_options {
    uint32_t types[MAX_ITEMS], head_dims[MAX_ITEMS], rotations[MAX_ITEMS], pairs[MAX_ITEMS];
    uint32_t pair_head_dims[MAX_ITEMS], needle_ctx[MAX_ITEMS];
    int n_types, n_head_dims, n_rotations, n_pairs, n_pair_head_dims, n_needle_ctx;
    long vectors, ctx, needles;
    const char *keys, *values, *backend;
    int json;
};

enum { O_TYPES = 1, O_HEAD_DIMS, O_ROTATIONS, O_PAIRS, O_PAIR_HEAD_DIMS, O_VECTORS, O_CTX, O_KEYS, O_VALUES,
       O_BACKEND, O_JSON, O_NEEDLE_CTX, O_NEEDLES };

/* The conventions of `turbokv run` and `ppl` (-c for --ctx). */
static const struct tool_option options[] = {
    { O_TYPES, 0, "types", "a comma-separated list of types", NULL },
    { O_HEAD_DIMS, 0, "head-dims", "a comma-separated list of head dims", NULL },
    { O_ROTATIONS, 0, "rotations", "a comma-separated list of wht, dense, none, rotor", NULL },
    { O_PAIRS, 0, "pairs", "a comma-separated list of K/V pairs", NULL },
    { O_PAIR_HEAD_DIMS, 0, "pair-head-dims", "a comma-separated list of head dims", NULL },
    { O_VECTORS, 0, "vectors", "a vector count", NULL },
    { O_CTX, 'c', "ctx", "a token count", NULL },
    { O_KEYS, 0, "keys", "a float32 .npy file", NULL },
    { O_VALUES, 0, "values", "a float32 .npy file", NULL },
    { O_BACKEND, 0, "backend", "auto or a plugin name (cpu, vulkan, opencl, ...)", NULL },
    { O_JSON, 0, "json", NULL, NULL },
    { O_NEEDLE_CTX, 0, "needle-ctx", "a comma-separated list of token counts, or 0", NULL },
    { O_NEEDLES, 0, "needles", "a needle count", NULL },
    { 0, 0, NULL, NULL, NULL },
};

/* Returns 0, -1 after an error, or 1 for --help (printed). */
static int parse_args(int argc, char **argv, struct eval_options *o)
{
    struct tool_getopt g;
    int id;
    *o = (struct eval_options){ .vectors = DEFAULT_VECTORS, .ctx = DEFAULT_CTX, .needles = DEFAULT_NEEDLES };
    o->n_types = parse_list("--types", DEFAULT_TYPES, o->types, parse_type);
    o->n_head_dims = parse_list("--head-dims", DEFAULT_HEAD_DIMS, o->head_dims, parse_head_dim);
    o->n_rotations = parse_list("--rotations", DEFAULT_ROTATIONS, o->rotations, parse_rotation);
    o->n_pairs = parse_list("--pairs", DEFAULT_PAIRS, o->pairs, parse_pair);
    o->n_pair_head_dims = parse_list("--pair-head-dims", DEFAULT_PAIR_HEAD_DIMS, o->pair_head_dims, parse_head_dim);
    o->n_needle_ctx = parse_list("--needle-ctx", DEFAULT_NEEDLE_CTX, o->needle_ctx, parse_needle_ctx);
    tool_getopt_init(&g, "eval", options, argc, argv);
    while ((id = tool_getopt_next(&g)) != TOOL_OPT_END) {
        switch (id) {
        case TOOL_OPT_HELP:
            usage(stdout);
            return 1;
        case TOOL_OPT_ERROR:
            tool_getopt_fail(&g);
            return -1;
        case TOOL_OPT_POSITIONAL:
            fprintf(stderr, "turbokv eval: unexpected argument '%s' (turbokv eval --help lists the options)\n",
                    g.value);
            return -1;
        case O_TYPES:
            o->n_types = parse_list("--types", g.value, o->types, parse_type);
            break;
        case O_HEAD_DIMS:
            o->n_head_dims = parse_list("--head-dims", g.value, o->head_dims, parse_head_dim);
            break;
        case O_ROTATIONS:
            o->n_rotations = parse_list("--rotations", g.value, o->rotations, parse_rotation);
            break;
        case O_PAIRS:
            o->n_pairs = parse_list("--pairs", g.value, o->pairs, parse_pair);
            break;
        case O_PAIR_HEAD_DIMS:
            o->n_pair_head_dims = parse_list("--pair-head-dims", g.value, o->pair_head_dims, parse_head_dim);
            break;
        case O_VECTORS:
            if (parse_count(g.flag, g.value, 2, 1000000, &o->vectors) != 0)
                return -1;
            break;
        case O_CTX:
            if (parse_count(g.flag, g.value, 16, 65536, &o->ctx) != 0)
                return -1;
            break;
        case O_KEYS:
            o->keys = g.value;
            break;
        case O_VALUES:
            o->values = g.value;
            break;
        case O_BACKEND:
            o->backend = g.value;
            break;
        case O_JSON:
            o->json = 1;
            break;
        case O_NEEDLE_CTX:
            o->n_needle_ctx = strcmp(g.value, "0") ? parse_list("--needle-ctx", g.value, o->needle_ctx,
                                                                 parse_needle_ctx)
                                                   : 0;
            break;
        case O_NEEDLES:
            if (parse_count(g.flag, g.value, 1, 256, &o->needles) != 0)
                return -1;
            break;
        }
        if (o->n_types < 0 || o->n_head_dims < 0 || o->n_rotations < 0 || o->n_pairs < 0 || o->n_pair_head_dims < 0 ||
            o->n_needle_ctx < 0)
            return -1;
    }
    return 0;
}

/* Both scale modes (one run where the scale mode changes nothing); the K
 * and V errors with scale = norm. */
static int measure_both(tkv_context *ctx, const struct workload *w, uint32_t kt, uint32_t vt, uint32_t rotation,
                        struct attn_result *norm, struct attn_result *corrected)
{
    int rc = measure_attention(ctx, w, kt, vt, rotation, TKV_SCALE_NORM, 1, norm);
    if (rc != TKV_OK)
        return rc;
    if (!tkv_type_is_turbo(kt) && !tkv_type_is_turbo(vt)) {
        *corrected = *norm;
        return TKV_OK;
    }
    return measure_attention(ctx, w, kt, vt, rotation, TKV_SCALE_NORM_CORRECTED, 0, corrected);
}

static void print_header(tkv_context *ctx, const struct eval_options *o, const struct workload *real)
{
    char sparse[sizeof ((struct tkv_config_entry *)0)->value] = "?";
    for (uint32_t i = 0; i < tkv_config_count(ctx); i++) {
        struct tkv_config_entry e;
        if (tkv_config_get(ctx, i, &e) == TKV_OK && !strcmp(e.key, "sparse_v"))
            snprintf(sparse, sizeof sparse, "%s", e.value);
    }
    printf("turbokv eval: backend %s (%s); sparse V %s (TURBO_SPARSE_V)\n", tkv_context_backend(ctx),
           tkv_context_device(ctx), sparse);
    printf("mse, ip: %ld random unit vectors per row, scale = norm; optimum: tkv_optimal_mse (Lloyd-Max; QJL:\n"
           "  its (b-1)-bit stage's optimum x (1/(g E|t|^2) - 1)); ip*d = head_dim E<q, u_hat - u>^2 for a\n"
           "  random unit q; ip bias = E<u, u_hat> - 1 (standard error)\n",
           o->vectors);
    printf("K err, attn: synthetic K/V, %ld tokens, %u KV heads, %u query heads, %u query tokens, one channel in\n"
           "  %u x%.0f, V = %.1f K; K err = sum ||k - k_hat||^2 / sum ||k||^2; attn = sqrt(sum ||out - ref||^2\n"
           "  / sum ||ref||^2) over the output rows (its standard error in parentheses), ref = float64 attention\n"
           "  on the unquantized K/V; QJL types store values in the turbo type of the same bits; attn norm / corr:\n"
           "  scale = norm / norm-corrected\n",
           o->ctx, SYN_KV_HEADS, SYN_QUERY_HEADS, SYN_QUERIES, SYN_OUTLIER_EVERY, SYN_OUTLIER_SCALE,
           SYN_VALUE_SCALE);
    if (real)
        printf("table 2, data %s: %u layers x %u cached tokens x %u KV heads, head_dim %u; queries: the key of\n"
               "  the next token, %u positions per layer\n",
               real->name, real->n_layers, real->n_ctx, real->n_kv, real->head_dim, real->n_q);
    printf("K cos, V cos: mean cosine of stored and original rows; top1 / top5: share of query rows whose exact\n"
           "  attention argmax is the argmax / among the 5 highest scores against the stored keys\n");
    if (o->n_needle_ctx)
        printf("needles: %ld per context in synthetic keys (one KV head), each leading the other scores of its\n"
               "  query by %.1f standard deviations; exact: still the argmax with the exact keys (later needles\n"
               "  move rows); retrieved: the argmax with the stored keys\n",
               o->needles, NEEDLE_MARGIN);
    printf("\n");
}

/* Rotations shape turbo rows only. */
static int rotations_of(const struct eval_options *o, uint32_t type)
{
    return tkv_type_is_turbo(type) ? o->n_rotations : 1;
}

/* Table 1, head_dim by head_dim so that one synthetic workload lives at a
 * time; rows go where the table prints them (type by type). */
static int type_rows(tkv_context *ctx, const struct eval_options *o, struct type_row *rows, uint64_t *done,
                     uint64_t total)
{
    int rc = TKV_OK;
    for (int hi = 0; rc == TKV_OK && hi < o->n_head_dims; hi++) {
        uint32_t hd = o->head_dims[hi];
        struct workload w;
        if (synthetic_workload(hd, (uint32_t)o->ctx, &w) != 0)
            rc = TKV_ENOMEM;
        int first = 0; /* the row of type ti's first head_dim */
        for (int ti = 0; rc == TKV_OK && ti < o->n_types; ti++) {
            uint32_t type = o->types[ti];
            int n_rot = rotations_of(o, type);
            for (int ri = 0; rc == TKV_OK && ri < n_rot; ri++) {
                struct type_row *t = &rows[first + hi * n_rot + ri];
                *t = (struct type_row){ .type = type, .head_dim = hd, .rotation = o->rotations[ri],
                                        .bits = tkv_type_bits_per_value(type, hd), .bound = bits_bound(type, hd),
                                        .v_type = tkv_type_is_qjl(type) ? TKV_TYPE_TURBO2 + tkv_type_bits(type) - 1
                                                                        : type };
                describe_groups(hd, t->groups, sizeof t->groups);
                if (tkv_optimal_mse(type, hd, &t->optimum) != TKV_OK)
                    t->optimum = NAN;
                rc = measure_unit_vectors(ctx, type, hd, t->rotation, (uint32_t)o->vectors, &t->unit);
                if (rc == TKV_OK)
                    rc = measure_both(ctx, &w, type, t->v_type, t->rotation, &t->norm, &t->corrected);
                tool_progress("eval", ++*done, total);
            }
            first += o->n_head_dims * n_rot;
        }
        workload_free(&w);
    }
    return rc;
}

/* Table 2 on one workload: rows [n_pairs]. */
static int pair_rows(tkv_context *ctx, const struct eval_options *o, const struct workload *w, struct pair_row *rows,
                     uint64_t *done, uint64_t total)
{
    int rc = TKV_OK;
    for (int pi = 0; rc == TKV_OK && pi < o->n_pairs; pi++) {
        struct pair_row *p = &rows[pi];
        *p = (struct pair_row){ .k_type = o->pairs[pi] >> 16, .v_type = o->pairs[pi] & 0xffffu,
                                .head_dim = w->head_dim };
        snprintf(p->data, sizeof p->data, "%s", w->name);
        p->bits = 0.5 * (tkv_type_bits_per_value(p->k_type, p->head_dim) +
                         tkv_type_bits_per_value(p->v_type, p->head_dim));
        rc = measure_both(ctx, w, p->k_type, p->v_type, 0, &p->norm, &p->corrected);
        tool_progress("eval", ++*done, total);
    }
    return rc;
}

int tool_eval(int argc, char **argv)
{
    struct eval_options o;
    int parsed = parse_args(argc, argv, &o);
    if (parsed != 0)
        return parsed > 0 ? 0 : 2;
    char kbuf[4096], vbuf[4096];
    const char *keys = o.keys ? o.keys : tool_model_path("s260k_keys.npy", kbuf, sizeof kbuf);
    const char *values = o.values ? o.values : tool_model_path("s260k_values.npy", vbuf, sizeof vbuf);
    struct workload real;
    if (real_workload(keys, values, &real) != 0) {
        workload_free(&real);
        return 1;
    }
    tkv_context *ctx = tool_open_context(o.backend);
    if (!ctx) {
        workload_free(&real);
        return 1;
    }

    int n_t = 0, n_p = o.n_pairs * (o.n_pair_head_dims + 1);
    for (int ti = 0; ti < o.n_types; ti++)
        n_t += o.n_head_dims * rotations_of(&o, o.types[ti]);
    struct type_row *trows = calloc(n_t, sizeof *trows);
    struct pair_row *prows = calloc(n_p, sizeof *prows);
    int n_nd = o.n_types * o.n_pair_head_dims * o.n_needle_ctx;
    struct needle_row *nrows = calloc(n_nd ? n_nd : 1, sizeof *nrows);
    uint64_t done = 0, total = (uint64_t)n_t + (uint64_t)n_p + (uint64_t)n_nd;
    int rc = trows && prows && nrows ? type_rows(ctx, &o, trows, &done, total) : TKV_ENOMEM;
    for (int di = 0; rc == TKV_OK && di < o.n_pair_head_dims; di++) {
        struct workload w;
        rc = synthetic_workload(o.pair_head_dims[di], (uint32_t)o.ctx, &w) == 0 ? TKV_OK : TKV_ENOMEM;
        if (rc == TKV_OK)
            rc = pair_rows(ctx, &o, &w, prows + di * o.n_pairs, &done, total);
        workload_free(&w);
    }
    if (rc == TKV_OK)
        rc = pair_rows(ctx, &o, &real, prows + o.n_pair_head_dims * o.n_pairs, &done, total);
    for (int i = 0; rc == TKV_OK && i < n_nd; i++) {
        /* type-major, then head_dim, then length */
        int per_type = o.n_pair_head_dims * o.n_needle_ctx, ti = i / per_type;
        struct needle_row *r = &nrows[i];
        r->type = o.types[ti];
        r->head_dim = o.pair_head_dims[i % per_type / o.n_needle_ctx];
        r->ctx = o.needle_ctx[i % o.n_needle_ctx];
        r->bits = tkv_type_bits_per_value(r->type, r->head_dim);
        rc = measure_needles(ctx, r->type, r->head_dim, r->ctx, (uint32_t)o.needles, &r->result);
        tool_progress("eval", ++done, total);
    }
    tool_progress_end();
    if (rc == TKV_OK && o.json)
        print_json(trows, n_t, prows, n_p, nrows, n_nd);
    else if (rc == TKV_OK) {
        print_header(ctx, &o, &real);
        print_tables(trows, n_t, prows, n_p, nrows, n_nd);
    } else if (rc == TKV_ENOMEM)
        fprintf(stderr, "turbokv eval: out of memory\n");
    workload_free(&real);
    free(trows);
    free(prows);
    free(nrows);
    tkv_context_close(ctx);
    return rc == TKV_OK ? 0 : 1;
}
