/* SPDX-License-Identifier: MIT */
/* Measurement driver (issue 11), from the OpenCL session's
 * (../h200-2026-12-03-gpu-opencl/kvb.c): wall and device time
 * (tkv_attention_options.device_ns) per call, and append rates.
 * This copy of ../h200-2026-12-04-gpu-vulkan/kvb.c also takes K/V pairs:
 * a TYPES entry K:V (q8_0:turbo3, the k8v3 scheme) stores keys as K and
 * values as V; the bytes per row count both.
 * kvb BACKEND TYPES CTXS SHAPES [threshold] [calls]
 *   SHAPES: tokens x seqs list, e.g. 1x1,4x1,1x8
 * Prints one line per point: the medians of wall and device time, and the
 * smallest wall time. KVB_APPEND=0 leaves the append rates out.
 * KVB_WARM_MS=N: before each point, N ms of the same attention calls back
 * to back (the GPU's clock rises from its idle level under load).
 * KVB_OUTLIER_CHANNELS=1 (session 16): one channel in 32 of every K and V
 * row ten times larger (fixed outlier channels, as turbokv eval's caches),
 * else every channel alike. */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include "turbokv.h"
#include "turbokv_format.h"

#define KVH 8
#define QH 32
#define HD 128
#define POOL 2048
#define CHUNK 512

static double now(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + t.tv_nsec * 1e-9;
}
static uint64_t rng = 88172645463325252ull;
static double unif(void)
{
    rng ^= rng << 13; rng ^= rng >> 7; rng ^= rng << 17;
    return ((rng >> 11) + 0.5) / 9007199254740992.0;
}
static float gauss(void) { return (float)(sqrt(-2 * log(unif())) * cos(6.283185307179586 * unif())); }
static int cmpd(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}
static double median(double *v, int n)
{
    qsort(v, n, sizeof *v, cmpd);
    return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

int main(int argc, char **argv)
{
    if (argc < 5) {
        fprintf(stderr, "kvb BACKEND TYPES CTXS SHAPES [threshold] [calls]\n");
        return 2;
    }
    const char *backend = argv[1];
    float threshold = argc > 5 ? (float)atof(argv[5]) : 0.0f;
    int calls = argc > 6 ? atoi(argv[6]) : 15;
    char thr[64];
    snprintf(thr, sizeof thr, "%g", threshold);
    setenv("TURBO_SPARSE_V", threshold > 0 ? "1" : "0", 1);
    setenv("TURBO_SPARSE_V_THRESHOLD", threshold > 0 ? thr : "1e-6", 1);
    struct tkv_context_options o = { .struct_size = sizeof o, .backend = backend };
    tkv_context *ctx;
    if (tkv_context_open(&o, &ctx) != TKV_OK) {
        fprintf(stderr, "open: %s\n", tkv_last_error());
        return 1;
    }
    printf("# backend %s device %s threshold %g\n", tkv_context_backend(ctx), tkv_context_device(ctx),
           threshold);
    size_t token = (size_t)KVH * HD;
    float *kp = malloc(sizeof(float) * POOL * token), *vp = malloc(sizeof(float) * POOL * token);
    const int fixed = getenv("KVB_OUTLIER_CHANNELS") && atoi(getenv("KVB_OUTLIER_CHANNELS")) != 0;
    for (size_t i = 0; i < POOL * token; i++) {
        const float big = fixed && (i % HD) % 32 == 5 ? 10.0f : 1.0f;
        kp[i] = 10.0f * big * gauss();
        vp[i] = big * gauss();
    }
    char tbuf[256], cbuf[256], sbuf[256];
    snprintf(tbuf, sizeof tbuf, "%s", argv[2]);
    for (char *ts = strtok(tbuf, ","); ts; ts = strtok(NULL, ",")) {
        uint32_t type, vtype;
        char kname[64];
        snprintf(kname, sizeof kname, "%s", ts);
        char *colon = strchr(kname, ':');
        if (colon)
            *colon = 0;
        if (tkv_type_from_name(kname, &type) != TKV_OK || tkv_type_from_name(colon ? colon + 1 : kname, &vtype) != TKV_OK)
            return 2;
        /* append: prefill and decode, drained by a blocking dequantize */
        if (!getenv("KVB_APPEND") || atoi(getenv("KVB_APPEND")) != 0) {
            struct tkv_cache_params p = { .struct_size = sizeof p, .n_layers = 1, .n_kv_heads = KVH,
                                          .head_dim = HD, .capacity = 8 * CHUNK + 1024, .n_seqs = 1,
                                          .k_type = type, .v_type = vtype, .n_q_heads = QH };
            tkv_cache *c;
            if (tkv_cache_create(ctx, &p, &c) != TKV_OK)
                return 1;
            float drain[KVH * HD];
            tkv_cache_append(c, 0, 0, CHUNK, kp, vp); /* warm */
            tkv_cache_dequantize(c, 0, 0, 0, 0, 1, drain);
            double t0 = now();
            for (int i = 0; i < 6; i++)
                tkv_cache_append(c, 0, 0, CHUNK, kp + (size_t)i * 131 * token, vp + (size_t)i * 131 * token);
            tkv_cache_dequantize(c, 0, 0, 0, 0, 1, drain);
            double t1 = now();
            int nd = 512;
            double *one = malloc(sizeof(double) * nd);
            for (int i = 0; i < nd; i++) {
                double a = now();
                tkv_cache_append(c, 0, 0, 1, kp + (size_t)i * token, vp + (size_t)i * token);
                one[i] = now() - a;
            }
            tkv_cache_dequantize(c, 0, 0, 0, 0, 1, drain);
            double t2 = now();
            printf("append %s prefill %.1f Mrows/s decode %.2f us/token (median call %.2f us, drained)\n", ts,
                   2.0 * 6 * CHUNK * KVH / (t1 - t0) / 1e6, 1e6 * (t2 - t1) / nd, 1e6 * median(one, nd));
            free(one);
            tkv_cache_destroy(c);
        }
        snprintf(cbuf, sizeof cbuf, "%s", argv[3]);
        char *csave;
        for (char *cs = strtok_r(cbuf, ",", &csave); cs; cs = strtok_r(NULL, ",", &csave)) {
            uint32_t n_ctx = (uint32_t)atoi(cs) * (strchr(cs, 'K') ? 1024u : 1u);
            /* the largest sequence count of the shapes */
            uint32_t max_seqs = 1;
            snprintf(sbuf, sizeof sbuf, "%s", argv[4]);
            char *ssave;
            for (char *ss = strtok_r(sbuf, ",", &ssave); ss; ss = strtok_r(NULL, ",", &ssave)) {
                uint32_t s = (uint32_t)atoi(strchr(ss, 'x') + 1);
                max_seqs = s > max_seqs ? s : max_seqs;
            }
            struct tkv_cache_params p = { .struct_size = sizeof p, .n_layers = 1, .n_kv_heads = KVH,
                                          .head_dim = HD, .capacity = n_ctx, .n_seqs = max_seqs,
                                          .k_type = type, .v_type = vtype, .n_q_heads = QH };
            tkv_cache *c;
            if (tkv_cache_create(ctx, &p, &c) != TKV_OK) {
                fprintf(stderr, "create: %s\n", tkv_last_error());
                return 1;
            }
            for (uint32_t s = 0; s < max_seqs; s++)
                for (uint32_t t = 0; t < n_ctx; t += CHUNK) {
                    uint32_t m = n_ctx - t < CHUNK ? n_ctx - t : CHUNK;
                    size_t at = (s * 389u + t / CHUNK * 131u) % (POOL - CHUNK + 1);
                    if (tkv_cache_append(c, s, 0, m, kp + at * token, vp + at * token) != TKV_OK) {
                        fprintf(stderr, "append: %s\n", tkv_last_error());
                        return 1;
                    }
                }
            snprintf(sbuf, sizeof sbuf, "%s", argv[4]);
            for (char *ss = strtok_r(sbuf, ",", &ssave); ss; ss = strtok_r(NULL, ",", &ssave)) {
                uint32_t nq = (uint32_t)atoi(ss), ns = (uint32_t)atoi(strchr(ss, 'x') + 1);
                uint32_t ids[64], nqs[64];
                for (uint32_t s = 0; s < ns; s++) {
                    ids[s] = s;
                    nqs[s] = nq;
                }
                size_t n = (size_t)ns * nq * QH * HD;
                float *q = malloc(sizeof(float) * n), *out = malloc(sizeof(float) * n);
                for (size_t i = 0; i < n; i++)
                    q[i] = gauss();
                double wall[64], dev[64];
                struct tkv_attention_stats st = { 0 };
                uint64_t dns = 0;
                struct tkv_attention_options ao = { .struct_size = sizeof ao, .stats = &st, .device_ns = &dns };
                int k = 0;
                const char *warm = getenv("KVB_WARM_MS");
                for (double t0 = now(); warm && now() - t0 < atof(warm) * 1e-3;)
                    if (tkv_attention_ex(c, 0, ns, ids, nqs, QH, q, out, &ao) != TKV_OK) {
                        fprintf(stderr, "attention: %s\n", tkv_last_error());
                        return 1;
                    }
                for (int i = 0; i < 3 + calls; i++) {
                    double a = now();
                    if (tkv_attention_ex(c, 0, ns, ids, nqs, QH, q, out, &ao) != TKV_OK) {
                        fprintf(stderr, "attention: %s\n", tkv_last_error());
                        return 1;
                    }
                    double b = now();
                    if (i >= 3) {
                        wall[k] = 1e6 * (b - a);
                        dev[k++] = dns * 1e-3;
                    }
                }
                double bytes = (double)ns * KVH * n_ctx * ((double)tkv_row_bytes(type, HD) + tkv_row_bytes(vtype, HD));
                double wmin = wall[0];
                for (int i = 1; i < k; i++)
                    wmin = wall[i] < wmin ? wall[i] : wmin;
                double w = median(wall, k), d = median(dev, k);
                printf("attn %-11s ctx %6u nq %u seqs %u wall %8.1f us (min %8.1f) dev %8.1f us  %6.2f TB/s(dev) skip %.2f%%\n", ts,
                       n_ctx, nq, ns, w, wmin, d, d > 0 ? bytes / (d * 1e-6) / 1e12 : 0.0,
                       st.rows_total ? 100.0 * st.rows_skipped / st.rows_total : 0.0);
                fflush(stdout);
                free(q);
                free(out);
            }
            tkv_cache_destroy(c);
        }
    }
    tkv_context_close(ctx);
    return 0;
}
