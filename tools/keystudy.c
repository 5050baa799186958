/* SPDX-License-Identifier: MIT */
/*
 * keystudy: what makes keys fragile, measured on candidate key storages
 * before any of them becomes a format (docs/keys.md). Not installed.
 *
 * Every candidate is simulated here in float64 from its definition, so that
 * storages the library does not have can be compared with those it has
 * (the plain turbo rows below reproduce the library's turbo types: WHT,
 * Lloyd-Max codebooks of the coordinate density of a random unit vector in
 * g dimensions, norm-corrected fp16 scale; docs/keys.md checks them against
 * `turbokv eval`). A method name is a turbo core and modifiers:
 *   f32, q8 (q8_0), tB (B-bit rotated codebook, B = 2..8), then any of
 *   s8   the group scale as an 8-bit log (step 2^(1/10)) instead of fp16
 *   oN   per row, the N largest |x| per 32 values kept as fp16 with their
 *        index (ceil(log2 head_dim) bits), the rest quantized
 *   cN   per head, the N channels per 32 of largest mean square over the
 *        first W tokens kept as fp16 in every row, the rest quantized
 *   m    per head, the mean of the first W tokens subtracted before and
 *        added after (scores move by <q, mean>, the same for every row of
 *        a query: the softmax does not change)
 *   k    per head, each channel divided by its RMS over the first W tokens
 *        before the rotation, multiplied after (KIVI-style key scaling)
 *   x    one rotation across the kv heads of a token (n_kv x head_dim
 *        values in one group split) instead of one per head
 *   r    rotor rotation instead of WHT (see rotor_* below)
 * Methods with per-head state store the first W tokens as f16 and the state
 * (fp16 per channel) once; the bits/value printed count that for the
 * context measured.
 *
 * Measured per method: on synthetic caches (as `turbokv eval`: Gaussian
 * keys, one channel in 32 ten times larger, 2048 tokens, 2 KV heads, GQA 4,
 * 8 query tokens) and on the stories260K K/V dumps: key relative error,
 * attention relative error (V exact) and top-1 agreement; on llama2.c
 * models: the perplexity with keys stored by the method (an f32 cache the
 * model's new keys reach only after the method, llama2_state.transform),
 * values in --v-type through the library, against f32 keys.
 */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fidelity.h"
#include "llama2.h"
#include "npy.h"
#include "tokenizer.h"
#include "tool.h"
#include "turbokv.h"

#define CALIB_TOKENS 16u /* W */
#define MAX_HD 1024u
#define MAX_KV 16u
#define MAX_BITS 8

/* ---- random numbers ---------------------------------------------------------------------------- */

static uint64_t rng_next(uint64_t *s)
{
    uint64_t z = (*s += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

static double rng_gauss(uint64_t *s)
{
    double u1 = ((double)(rng_next(s) >> 11) + 0.5) * 0x1p-53, u2 = (double)(rng_next(s) >> 11) * 0x1p-53;
    return sqrt(-2.0 * log(u1)) * cos(6.283185307179586 * u2);
}

/* ---- codebooks: Lloyd-Max for f(t) ~ (1 - t^2)^((g-3)/2) on [-1, 1] ---------------------------- */

#define GRID 40001

struct codebook {
    int ready;
    uint32_t n;
    double c[1 << MAX_BITS], b[(1 << MAX_BITS) - 1];
};

static struct codebook books[TKV_N_GROUP_SIZES * 2][MAX_BITS + 1]; /* groups up to 1024 (x mode) */

static const struct codebook *codebook(uint32_t g, int bits)
{
    int gi = 0;
    for (uint32_t s = 8; s < g; s <<= 1)
        gi++;
    struct codebook *cb = &books[gi][bits];
    if (cb->ready)
        return cb;
    static double t[GRID], w[GRID];
    double lim = fmin(1.0, 12.0 / sqrt((double)g)); /* beyond 12 sigma the density is nil */
    for (int i = 0; i < GRID; i++) {
        t[i] = -lim + 2.0 * lim * i / (GRID - 1);
        w[i] = pow(fmax(1.0 - t[i] * t[i], 0.0), (g - 3.0) / 2.0);
    }
    uint32_t n = 1u << bits;
    cb->n = n;
    double sd = 1.0 / sqrt((double)g);
    for (uint32_t k = 0; k < n; k++) /* start: uniform over +-3 sd */
        cb->c[k] = sd * (-3.0 + 6.0 * (k + 0.5) / n);
    for (int it = 0; it < 400; it++) {
        double num[1 << MAX_BITS] = { 0 }, den[1 << MAX_BITS] = { 0 };
        for (uint32_t k = 0; k + 1 < n; k++)
            cb->b[k] = 0.5 * (cb->c[k] + cb->c[k + 1]);
        uint32_t k = 0;
        for (int i = 0; i < GRID; i++) {
            while (k + 1 < n && t[i] >= cb->b[k])
                k++;
            num[k] += w[i] * t[i];
            den[k] += w[i];
        }
        for (k = 0; k < n; k++)
            if (den[k] > 0)
                cb->c[k] = num[k] / den[k];
    }
    for (uint32_t k = 0; k + 1 < n; k++)
        cb->b[k] = 0.5 * (cb->c[k] + cb->c[k + 1]);
    cb->ready = 1;
    return cb;
}

/* ---- rotations ----------------------------------------------------------------------------------- */

/* Randomized Hadamard D2 H D1 / sqrt(g) (dir 1) or its inverse (dir -1). */
static void wht(double *v, uint32_t g, int dir)
{
    uint64_t st = 0x7475726b6f6b7631ull ^ (g * 0x9E3779B97F4A7C15ull);
    double d1[MAX_HD * MAX_KV], d2[MAX_HD * MAX_KV];
    for (uint32_t i = 0; i < g; i++)
        d1[i] = rng_next(&st) >> 63 ? -1.0 : 1.0;
    for (uint32_t i = 0; i < g; i++)
        d2[i] = rng_next(&st) >> 63 ? -1.0 : 1.0;
    const double *pre = dir > 0 ? d1 : d2, *post = dir > 0 ? d2 : d1;
    for (uint32_t i = 0; i < g; i++)
        v[i] *= pre[i];
    for (uint32_t h = 1; h < g; h <<= 1)
        for (uint32_t i = 0; i < g; i += 2 * h)
            for (uint32_t j = i; j < i + h; j++) {
                double a = v[j], b = v[j + h];
                v[j] = a + b;
                v[j + h] = a - b;
            }
    for (uint32_t i = 0; i < g; i++)
        v[i] = v[i] * post[i] / sqrt((double)g);
}

/* RotorQuant-style rotation: the group in chunks of 3 coordinates (the
 * vector part of Cl(3,0) multivectors), each chunk rotated by its own
 * seeded unit rotor R (the sandwich R v R~ is the rotation by the unit
 * quaternion of R); a tail of fewer than 3 coordinates is left as is. */
static void rotor(double *v, uint32_t g, int dir)
{
    uint64_t st = 0x726f746f72736565ull ^ g;
    for (uint32_t i = 0; i + 3 <= g; i += 3) {
        double q[4], n = 0;
        for (int k = 0; k < 4; k++) {
            q[k] = rng_gauss(&st);
            n += q[k] * q[k];
        }
        n = sqrt(n);
        double w = q[0] / n, x = q[1] / n * dir, y = q[2] / n * dir, z = q[3] / n * dir;
        double r[3][3] = { { 1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y) },
                           { 2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x) },
                           { 2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y) } };
        double a[3] = { v[i], v[i + 1], v[i + 2] };
        for (int k = 0; k < 3; k++)
            v[i + k] = r[k][0] * a[0] + r[k][1] * a[1] + r[k][2] * a[2];
    }
}

/* ---- the method ------------------------------------------------------------------------------------ */

struct method {
    char name[32];
    int exact, q8, bits, scale8, row_out, head_chan, mean, kivi, xhead, rotor;
};

static int parse_method(const char *s, struct method *m)
{
    memset(m, 0, sizeof *m);
    snprintf(m->name, sizeof m->name, "%s", s);
    if (!strcmp(s, "f32")) {
        m->exact = 1;
        return 0;
    }
    if (!strcmp(s, "q8")) {
        m->q8 = 1;
        return 0;
    }
    if (s[0] != 't' || s[1] < '2' || s[1] > '8')
        return -1;
    m->bits = s[1] - '0';
    for (const char *p = s + 2; *p;) {
        char c = *p++;
        if (c == 's' && *p == '8')
            m->scale8 = 1, p++;
        else if (c == 'o' && *p >= '1' && *p <= '9')
            m->row_out = *p++ - '0';
        else if (c == 'c' && *p >= '1' && *p <= '9')
            m->head_chan = *p++ - '0';
        else if (c == 'm')
            m->mean = 1;
        else if (c == 'k')
            m->kivi = 1;
        else if (c == 'x')
            m->xhead = 1;
        else if (c == 'r')
            m->rotor = 1;
        else
            return -1;
    }
    return 0;
}

static int stateful(const struct method *m) { return m->head_chan || m->mean || m->kivi; }

/* Bits of one stored row of hd values (x mode: of the token's n_kv rows, per row). */
static double row_bits(const struct method *m, uint32_t hd, uint32_t n_kv)
{
    if (m->exact)
        return 32.0 * hd;
    if (m->q8)
        return 8.0 * hd + 16.0 * ((hd + 31) / 32);
    uint32_t len = m->xhead ? hd * n_kv : hd, n = 0, rest = len;
    while (rest >= 128) {
        n++;
        rest -= 128;
    }
    for (uint32_t g = 64; g >= 8; g >>= 1)
        if (rest & g)
            n++;
    double bits = m->bits * (double)len + (m->scale8 ? 8.0 : 16.0) * n;
    uint32_t idx_bits = 0;
    while ((1u << idx_bits) < hd)
        idx_bits++;
    uint32_t out = m->row_out * ((hd + 31) / 32), chan = m->head_chan * ((hd + 31) / 32);
    bits += (m->xhead ? n_kv : 1) * (out * (16.0 + idx_bits) + chan * (16.0 - m->bits));
    return m->xhead ? bits / n_kv : bits;
}

/* Bits per value over a context of n_ctx tokens (calibration rows and state included). */
static double bits_per_value(const struct method *m, uint32_t hd, uint32_t n_kv, uint32_t n_ctx)
{
    double row = row_bits(m, hd, n_kv);
    if (!stateful(m) || n_ctx <= CALIB_TOKENS)
        return row / hd;
    double state = 16.0 * hd * ((m->mean != 0) + (m->kivi != 0)) + (m->head_chan ? 16.0 : 0.0);
    return ((n_ctx - CALIB_TOKENS) * row + CALIB_TOKENS * 16.0 * hd + state) / ((double)n_ctx * hd);
}

static float fp16(double x) { return tkv_fp16_to_float(tkv_fp16_from_float((float)x)); }

/* The group scale as stored: fp16, or the 8-bit log. */
static double stored_scale(const struct method *m, double s)
{
    if (!m->scale8 || s <= 0)
        return fp16(s);
    double e = round(log2(s) * 10.0);
    e = fmin(fmax(e, -128.0), 127.0);
    return exp2(e / 10.0);
}

/* One group through the rotated codebook, norm-corrected scale. */
static void quant_group(const struct method *m, double *x, uint32_t g)
{
    const struct codebook *cb = codebook(g, m->bits);
    double n = 0;
    for (uint32_t i = 0; i < g; i++)
        n += x[i] * x[i];
    n = sqrt(n);
    if (n == 0)
        return;
    double y[MAX_HD * MAX_KV], csq = 0;
    for (uint32_t i = 0; i < g; i++)
        y[i] = x[i] / n;
    if (m->rotor)
        rotor(y, g, 1);
    else
        wht(y, g, 1);
    for (uint32_t i = 0; i < g; i++) {
        uint32_t k = 0;
        while (k + 1 < cb->n && y[i] >= cb->b[k])
            k++;
        y[i] = cb->c[k];
        csq += y[i] * y[i];
    }
    double s = stored_scale(m, csq > 0 ? n / sqrt(csq) : n);
    for (uint32_t i = 0; i < g; i++)
        y[i] *= s;
    if (m->rotor)
        rotor(y, g, -1);
    else
        wht(y, g, -1);
    memcpy(x, y, sizeof *x * g);
}

static void quant_split(const struct method *m, double *x, uint32_t len)
{
    uint32_t first = 0, rest = len;
    while (rest >= 128) {
        quant_group(m, x + first, 128);
        first += 128;
        rest -= 128;
    }
    for (uint32_t g = 64; g >= 8; g >>= 1)
        if (rest & g) {
            quant_group(m, x + first, g);
            first += g;
        }
}

static void quant_q8(double *x, uint32_t hd)
{
    for (uint32_t f = 0; f < hd; f += 32) {
        uint32_t n = hd - f < 32 ? hd - f : 32;
        float amax = 0;
        for (uint32_t i = 0; i < n; i++)
            amax = fmaxf(amax, fabsf((float)x[f + i]));
        float d = amax / 127.0f, id = d > 0 ? 1.0f / d : 0.0f, dh = fp16(d);
        for (uint32_t i = 0; i < n; i++)
            x[f + i] = dh * roundf((float)x[f + i] * id);
    }
}

/* Per-head state of a stateful method. */
struct head_state {
    uint32_t seen;
    double sum[MAX_HD], sumsq[MAX_HD];
    double mean[MAX_HD], scale[MAX_HD];
    uint8_t keep[MAX_HD];
};

static void state_finish(const struct method *m, struct head_state *h, uint32_t hd)
{
    for (uint32_t c = 0; c < hd; c++) {
        h->mean[c] = m->mean ? fp16(h->sum[c] / h->seen) : 0.0;
        double var = h->sumsq[c] / h->seen - (m->mean ? h->mean[c] * h->mean[c] : 0.0);
        h->scale[c] = m->kivi ? fp16(sqrt(fmax(var, 1e-12))) : 1.0;
        h->keep[c] = 0;
    }
    /* the channels of largest mean square around the mean in use */
    for (uint32_t k = 0; k < m->head_chan * ((hd + 31) / 32); k++) {
        int best = -1;
        double bv = -1;
        for (uint32_t c = 0; c < hd; c++) {
            double v = h->sumsq[c] / h->seen - (m->mean ? h->mean[c] * h->mean[c] : 0.0);
            if (!h->keep[c] && v > bv)
                bv = v, best = (int)c;
        }
        h->keep[best] = 1;
    }
}

/* Stores and reads back one row (x: hd values) of a head at position pos. */
static void store_row(const struct method *m, struct head_state *h, uint32_t pos, float *row, uint32_t hd)
{
    double x[MAX_HD], kept[MAX_HD];
    uint8_t is_kept[MAX_HD] = { 0 };
    for (uint32_t i = 0; i < hd; i++)
        x[i] = row[i];
    if (m->exact)
        return;
    if (m->q8) {
        quant_q8(x, hd);
        goto out;
    }
    if (stateful(m)) {
        if (pos == 0)
            memset(h, 0, sizeof *h);
        if (pos < CALIB_TOKENS) { /* calibration rows: f16 */
            for (uint32_t i = 0; i < hd; i++) {
                h->sum[i] += x[i];
                h->sumsq[i] += x[i] * x[i];
                x[i] = fp16(x[i]);
            }
            if (++h->seen == CALIB_TOKENS)
                state_finish(m, h, hd);
            goto out;
        }
    }
    if (stateful(m))
        for (uint32_t i = 0; i < hd; i++) {
            x[i] = (x[i] - h->mean[i]) / h->scale[i];
            if (h->keep[i]) {
                kept[i] = fp16(x[i]);
                is_kept[i] = 1;
                x[i] = 0;
            }
        }
    for (uint32_t k = 0; k < m->row_out * ((hd + 31) / 32); k++) {
        int best = -1;
        for (uint32_t i = 0; i < hd; i++)
            if (!is_kept[i] && (best < 0 || fabs(x[i]) > fabs(x[best])))
                best = (int)i;
        kept[best] = fp16(x[best]);
        is_kept[best] = 1;
        x[best] = 0;
    }
    quant_split(m, x, hd);
    for (uint32_t i = 0; i < hd; i++) {
        if (is_kept[i])
            x[i] = kept[i];
        if (stateful(m))
            x[i] = x[i] * h->scale[i] + h->mean[i];
    }
out:
    for (uint32_t i = 0; i < hd; i++)
        row[i] = (float)x[i];
}

/* A token's rows of n_kv heads ([n_kv][hd]) at position pos. */
static void store_token(const struct method *m, struct head_state *heads, uint32_t pos, float *k, uint32_t n_kv,
                        uint32_t hd)
{
    if (m->xhead) {
        double x[MAX_HD * MAX_KV];
        for (uint32_t i = 0; i < n_kv * hd; i++)
            x[i] = k[i];
        quant_split(m, x, n_kv * hd);
        for (uint32_t i = 0; i < n_kv * hd; i++)
            k[i] = (float)x[i];
        return;
    }
    for (uint32_t h = 0; h < n_kv; h++)
        store_row(m, &heads[h], pos, k + h * hd, hd);
}

/* ---- attention workloads ----------------------------------------------------------------------- */

struct workload {
    const char *name;
    uint32_t n_layers, n_ctx, n_kv, n_qh, n_q, hd;
    size_t layer_floats;
    float *k, *v, *q;
};

static void synthetic(uint32_t hd, struct workload *w)
{
    const uint32_t ctx = 2048, n_kv = 2;
    uint64_t st = 0x6576616c64617461ull ^ hd;
    double ch[2][MAX_HD];
    *w = (struct workload){ "synthetic", 1, ctx, n_kv, 8, 8, hd, (size_t)ctx * n_kv * hd, NULL, NULL, NULL };
    w->k = malloc(sizeof *w->k * w->layer_floats);
    w->v = malloc(sizeof *w->v * w->layer_floats);
    w->q = malloc(sizeof *w->q * 8 * 8 * hd);
    for (uint32_t h = 0; h < n_kv; h++) {
        for (uint32_t i = 0; i < hd; i++)
            ch[h][i] = 1.0;
        for (uint32_t n = 0; n < (hd + 31) / 32; n++) {
            uint32_t c;
            do
                c = (uint32_t)(rng_next(&st) % hd);
            while (ch[h][c] != 1.0);
            ch[h][c] = 10.0;
        }
    }
    for (size_t i = 0; i < w->layer_floats; i++) {
        double s = ch[i / hd % n_kv][i % hd];
        w->k[i] = (float)(s * rng_gauss(&st));
        w->v[i] = (float)(0.1 * s * rng_gauss(&st));
    }
    for (size_t i = 0; i < (size_t)8 * 8 * hd; i++)
        w->q[i] = (float)rng_gauss(&st);
}

static int dumps(const char *kp, const char *vp, struct workload *w)
{
    struct npy_array k, v;
    char err[512];
    if (npy_read(kp, NPY_FLOAT32, &k, err, sizeof err) || npy_read(vp, NPY_FLOAT32, &v, err, sizeof err)) {
        fprintf(stderr, "keystudy: %s\n", err);
        return -1;
    }
    const uint64_t *s = k.shape;
    *w = (struct workload){ "s260k", (uint32_t)s[0], (uint32_t)s[1] - 1, (uint32_t)s[2], (uint32_t)s[2], 128,
                            (uint32_t)s[3], (size_t)s[1] * s[2] * s[3], k.data, v.data, NULL };
    size_t token = (size_t)w->n_kv * w->hd, qf = (size_t)w->n_q * token;
    w->q = malloc(sizeof *w->q * w->n_layers * qf);
    for (uint32_t l = 0; l < w->n_layers; l++)
        for (uint32_t t = 0; t < w->n_q; t++)
            memcpy(w->q + l * qf + t * token, w->k + l * w->layer_floats + (w->n_ctx - w->n_q + t + 1) * token,
                   sizeof *w->q * token);
    return 0;
}

/* Attention of every query row on keys k (V exact), float64. */
static void attend(const struct workload *w, uint32_t l, const float *k, double *out, double *scores)
{
    const uint32_t hd = w->hd;
    const size_t qf = (size_t)w->n_q * w->n_qh * hd, stride = (size_t)w->n_kv * hd;
    for (uint32_t t = 0; t < w->n_q; t++)
        for (uint32_t h = 0; h < w->n_qh; h++) {
            const float *q = w->q + l * qf + ((size_t)t * w->n_qh + h) * hd;
            uint32_t kv = h / (w->n_qh / w->n_kv), rows = w->n_ctx - w->n_q + t + 1;
            double *o = out + ((size_t)t * w->n_qh + h) * hd, max = -INFINITY, sum = 0;
            fid_scores(k + kv * hd, stride, rows, q, hd, scores);
            for (uint32_t j = 0; j < rows; j++)
                max = fmax(max, scores[j] /= sqrt((double)hd));
            memset(o, 0, sizeof *o * hd);
            for (uint32_t j = 0; j < rows; j++) {
                double p = exp(scores[j] - max);
                const float *v = w->v + l * w->layer_floats + j * stride + kv * hd;
                sum += p;
                for (uint32_t i = 0; i < hd; i++)
                    o[i] += p * v[i];
            }
            for (uint32_t i = 0; i < hd; i++)
                o[i] /= sum;
        }
}

static void measure(const struct method *m, const struct workload *w, double *k_err, double *attn, double *top1)
{
    const size_t qf = (size_t)w->n_q * w->n_qh * w->hd, stride = (size_t)w->n_kv * w->hd;
    float *kh = malloc(sizeof *kh * w->layer_floats);
    double *ref = malloc(sizeof *ref * qf), *out = malloc(sizeof *out * qf);
    double *s1 = malloc(sizeof *s1 * w->n_ctx), *s2 = malloc(sizeof *s2 * w->n_ctx);
    static struct head_state heads[MAX_KV];
    double e = 0, n = 0, ae = 0, an = 0;
    struct fid_topk tk = { 0 };
    for (uint32_t l = 0; l < w->n_layers; l++) {
        const float *k = w->k + l * w->layer_floats;
        memcpy(kh, k, sizeof *kh * w->layer_floats);
        for (uint32_t t = 0; t < w->n_ctx; t++)
            store_token(m, heads, t, kh + t * stride, w->n_kv, w->hd);
        for (size_t i = 0; i < (size_t)w->n_ctx * stride; i++) {
            e += ((double)k[i] - kh[i]) * ((double)k[i] - kh[i]);
            n += (double)k[i] * k[i];
        }
        attend(w, l, k, ref, s1);
        attend(w, l, kh, out, s1);
        for (size_t i = 0; i < qf; i++) {
            ae += (out[i] - ref[i]) * (out[i] - ref[i]);
            an += ref[i] * ref[i];
        }
        for (uint32_t t = 0; t < w->n_q; t++)
            for (uint32_t h = 0; h < w->n_qh; h++) {
                const float *q = w->q + l * qf + ((size_t)t * w->n_qh + h) * w->hd;
                uint32_t kv = h / (w->n_qh / w->n_kv), rows = w->n_ctx - w->n_q + t + 1;
                fid_scores(k + kv * w->hd, stride, rows, q, w->hd, s1);
                fid_scores(kh + kv * w->hd, stride, rows, q, w->hd, s2);
                fid_topk_add(s1, s2, rows, &tk);
            }
    }
    *k_err = e / n;
    *attn = sqrt(ae / an);
    *top1 = (double)tk.top1 / tk.rows;
    free(kh);
    free(ref);
    free(out);
    free(s1);
    free(s2);
}

/* ---- perplexity ----------------------------------------------------------------------------------- */

struct ppl_job {
    const struct method *m;
    uint32_t n_kv, hd;
};

static struct head_state *layer_heads; /* [layers][MAX_KV] */

static void transform(void *arg, uint32_t layer, uint32_t first_pos, uint32_t n_rows, float *k, float *v)
{
    struct ppl_job *j = arg;
    (void)v;
    for (uint32_t r = 0; r < n_rows; r++)
        store_token(j->m, layer_heads + (size_t)layer * MAX_KV, first_pos + r, k + (size_t)r * j->n_kv * j->hd,
                    j->n_kv, j->hd);
}

static double nll_of(const float *logits, uint32_t n, int32_t target)
{
    double max = -INFINITY, sum = 0;
    for (uint32_t i = 0; i < n; i++)
        max = fmax(max, logits[i]);
    for (uint32_t i = 0; i < n; i++)
        sum += exp(logits[i] - max);
    return log(sum) + max - logits[target];
}

/* Mean NLL of n_win windows of len tokens, keys through the method, values in v_type. */
static double ppl_nll(tkv_context *ctx, const struct llama2_model *model, const int32_t *tokens, uint32_t n_win,
                      uint32_t len, const struct method *m, uint32_t v_type)
{
    const struct llama2_config *c = &model->cfg;
    struct tkv_cache_params p = llama2_cache_params(model, len, 1, TKV_TYPE_F32, v_type);
    struct llama2_state st;
    struct ppl_job job = { .m = m, .n_kv = c->n_kv_heads, .hd = c->head_dim };
    tkv_cache *cache = NULL;
    float *logits = malloc(sizeof *logits * c->vocab_size);
    layer_heads = calloc((size_t)c->n_layers * MAX_KV, sizeof *layer_heads);
    if (tkv_cache_create(ctx, &p, &cache) != TKV_OK || llama2_state_init(&st, model, 1) != 0 || !layer_heads) {
        fprintf(stderr, "keystudy: %s\n", tkv_last_error());
        exit(1);
    }
    st.transform = transform;
    st.transform_arg = &job;
    double all = 0;
    const uint32_t seq = 0;
    for (uint32_t wi = 0; wi < n_win; wi++) {
        const int32_t *tok = tokens + (size_t)wi * len;
        tkv_cache_clear(cache, seq);
        for (uint32_t t = 0; t + 1 < len; t++) {
            if (llama2_forward(model, &st, cache, 1, &seq, 1, &tok[t], 1, logits) != 0) {
                fprintf(stderr, "keystudy: %s\n", st.error);
                exit(1);
            }
            all += nll_of(logits, c->vocab_size, tok[t + 1]);
        }
    }
    llama2_state_free(&st);
    tkv_cache_destroy(cache);
    free(logits);
    free(layer_heads);
    return all / ((double)n_win * (len - 1));
}

static int32_t *text_tokens(const char *model_tok, const char *text, uint32_t vocab, uint32_t *n)
{
    struct tokenizer tok;
    char err[512];
    if (tokenizer_open(&tok, model_tok, vocab, err, sizeof err) != 0) {
        fprintf(stderr, "keystudy: %s\n", err);
        return NULL;
    }
    FILE *f = fopen(text, "rb");
    if (!f) {
        fprintf(stderr, "keystudy: %s: %s\n", text, strerror(errno));
        tokenizer_close(&tok);
        return NULL;
    }
    static char buf[1 << 20];
    size_t len = fread(buf, 1, sizeof buf, f);
    fclose(f);
    int32_t *ids = NULL;
    struct tokenizer_unknown unk;
    const int rc = tokenizer_encode(&tok, buf, len, 1, &ids, n, &unk);
    tokenizer_close(&tok);
    if (rc != 0)
        return NULL;
    return ids;
}

/* ---- main ------------------------------------------------------------------------------------------ */

/* Per layer and kv head of a K dump: the channels' mean and standard
 * deviation over the tokens, and the share of the energy left around the
 * mean (what a per-head mean subtraction leaves to quantize). */
static int key_stats(const char *path)
{
    struct npy_array k;
    char err[512];
    if (npy_read(path, NPY_FLOAT32, &k, err, sizeof err) != 0 || k.ndim != 4) {
        fprintf(stderr, "keystudy: %s: %s\n", path, k.ndim != 4 ? "expected [layers][tokens][kv heads][head_dim]" : err);
        return 1;
    }
    const uint32_t L = (uint32_t)k.shape[0], T = (uint32_t)k.shape[1], H = (uint32_t)k.shape[2], D = (uint32_t)k.shape[3];
    const float *x = k.data;
    printf("%s: per layer and kv head, channel mean (std) over %u tokens; centred = energy around the mean / energy\n",
           path, T);
    for (uint32_t l = 0; l < L; l++)
        for (uint32_t h = 0; h < H; h++) {
            double e = 0, ec = 0;
            printf("layer %u head %u:", l, h);
            for (uint32_t d = 0; d < D && d < 16; d++) {
                double mu = 0, var = 0;
                for (uint32_t t = 0; t < T; t++)
                    mu += x[(((size_t)l * T + t) * H + h) * D + d] / T;
                for (uint32_t t = 0; t < T; t++) {
                    double v = x[(((size_t)l * T + t) * H + h) * D + d];
                    var += (v - mu) * (v - mu) / T;
                    e += v * v / T;
                }
                ec += var;
                printf(" %.1f (%.1f)", mu, sqrt(var));
            }
            printf("%s; centred %.2f\n", D > 16 ? " ..." : "", ec / e);
        }
    npy_free(&k);
    return 0;
}

static int usage(void)
{
    fprintf(stderr,
            "usage: keystudy stats K.npy\n"
            "       keystudy attn METHODS [--keys K.npy --values V.npy]\n"
            "       keystudy ppl METHODS --model M --tokenizer T (--text F | --tokens F.npy) [--windows N]\n"
            "                [--v-type TYPE]\n"
            "METHODS: comma-separated (see the comment at the top of tools/keystudy.c), e.g. f32,q8,t4,t4o1\n");
    return 2;
}

int main(int argc, char **argv)
{
    if (argc == 3 && !strcmp(argv[1], "stats"))
        return key_stats(argv[2]);
    if (argc < 3)
        return usage();
    const char *mode = argv[1], *keys = NULL, *values = NULL, *model_path = NULL, *tok_path = NULL, *text = NULL,
               *tokens_npy = NULL, *v_name = "f32";
    long windows = 1;
    for (int i = 3; i + 1 < argc; i += 2) {
        if (!strcmp(argv[i], "--keys"))
            keys = argv[i + 1];
        else if (!strcmp(argv[i], "--values"))
            values = argv[i + 1];
        else if (!strcmp(argv[i], "--model"))
            model_path = argv[i + 1];
        else if (!strcmp(argv[i], "--tokenizer"))
            tok_path = argv[i + 1];
        else if (!strcmp(argv[i], "--text"))
            text = argv[i + 1];
        else if (!strcmp(argv[i], "--tokens"))
            tokens_npy = argv[i + 1];
        else if (!strcmp(argv[i], "--windows"))
            windows = strtol(argv[i + 1], NULL, 10);
        else if (!strcmp(argv[i], "--v-type"))
            v_name = argv[i + 1];
        else
            return usage();
    }
    char list[1024], *save = NULL;
    snprintf(list, sizeof list, "%s", argv[2]);
    struct method methods[32];
    int n_m = 0;
    for (char *t = strtok_r(list, ",", &save); t && n_m < 32; t = strtok_r(NULL, ",", &save))
        if (parse_method(t, &methods[n_m++]) != 0) {
            fprintf(stderr, "keystudy: unknown method '%s'\n", t);
            return 2;
        }

    if (!strcmp(mode, "attn")) {
        struct workload w[3];
        int n_w = 0;
        synthetic(64, &w[n_w++]);
        synthetic(128, &w[n_w++]);
        if (keys && values && dumps(keys, values, &w[n_w]) == 0)
            n_w++;
        printf("%-10s", "method");
        for (int i = 0; i < n_w; i++)
            printf(" | %s %u: bits   K err   attn  top1", w[i].name, w[i].hd);
        printf("\n");
        for (int mi = 0; mi < n_m; mi++) {
            printf("%-10s", methods[mi].name);
            for (int i = 0; i < n_w; i++) {
                double ke, at, t1;
                if (methods[mi].xhead && w[i].n_kv * w[i].hd > MAX_HD) {
                    printf(" | %*s", 30 + (int)strlen(w[i].name), "-");
                    continue;
                }
                measure(&methods[mi], &w[i], &ke, &at, &t1);
                printf(" | %*s %6.3f %8.5f %6.3f %5.3f", (int)strlen(w[i].name) + 3, "",
                       bits_per_value(&methods[mi], w[i].hd, w[i].n_kv, w[i].n_ctx), ke, at, t1);
            }
            printf("\n");
            fflush(stdout);
        }
        return 0;
    }
    if (strcmp(mode, "ppl") || !model_path || !tok_path || (!text && !tokens_npy))
        return usage();
    uint32_t v_type;
    if (tkv_type_from_name(v_name, &v_type) != TKV_OK) {
        fprintf(stderr, "keystudy: %s\n", tkv_last_error());
        return 2;
    }
    struct llama2_model model;
    char err[512];
    if (llama2_open(&model, model_path, err, sizeof err) != 0) {
        fprintf(stderr, "keystudy: %s\n", err);
        return 1;
    }
    const struct llama2_config *c = &model.cfg;
    uint32_t n_tok = 0, len = c->seq_len;
    int32_t *tokens;
    if (tokens_npy) {
        struct npy_array a;
        if (npy_read(tokens_npy, NPY_INT32, &a, err, sizeof err) != 0) {
            fprintf(stderr, "keystudy: %s\n", err);
            llama2_close(&model);
            return 1;
        }
        tokens = a.data;
        n_tok = (uint32_t)a.count;
    } else
        tokens = text_tokens(tok_path, text, c->vocab_size, &n_tok);
    if (!tokens) {
        llama2_close(&model);
        return 1;
    }
    if (len > n_tok)
        len = n_tok;
    if (windows < 1 || (uint64_t)windows * len > n_tok)
        windows = n_tok / len;
    /* run from its build tree (it is not installed): the build's plugins
     * after TURBO_PLUGIN_PATH's, as turbokv finds them */
    struct tkv_context_options o = { .struct_size = sizeof o, .plugin_path = tool_plugin_path() };
    tkv_context *ctx;
    if (tkv_context_open(&o, &ctx) != TKV_OK) {
        fprintf(stderr, "keystudy: %s\n", tkv_last_error());
        free(tokens);
        llama2_close(&model);
        return 1;
    }
    printf("%s: head_dim %u, %u kv heads, %ld windows of %u tokens; values %s\n", model_path, c->head_dim,
           c->n_kv_heads, windows, len, v_name);
    struct method f32 = { .name = "f32", .exact = 1 };
    double base = ppl_nll(ctx, &model, tokens, (uint32_t)windows, len, &f32, TKV_TYPE_F32);
    printf("%-10s %6s %9s %9s (f32 keys and values: PPL %.4f)\n", "method", "K bits", "PPL", "dPPL %", exp(base));
    for (int mi = 0; mi < n_m; mi++) {
        double nll = ppl_nll(ctx, &model, tokens, (uint32_t)windows, len, &methods[mi], v_type);
        printf("%-10s %6.3f %9.4f %+9.3f\n", methods[mi].name,
               bits_per_value(&methods[mi], c->head_dim, c->n_kv_heads, len), exp(nll),
               100.0 * (exp(nll - base) - 1.0));
        fflush(stdout);
    }
    tkv_context_close(ctx);
    llama2_close(&model);
    free(tokens);
    return 0;
}
