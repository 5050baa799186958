/* SPDX-License-Identifier: MIT */
/*
 * A/B of two cpu plugin builds (or of two thread counts) in one process:
 * two contexts over the same synthetic cache, decode calls alternated A, B,
 * B, A, ..., so that both see the same load; prints the median and fastest
 * call of each and the median of the paired time ratios A/B. The shared
 * development VM moves a run's times by 2x, which a comparison of separate
 * `turbokv bench` runs cannot separate from a kernel change.
 *
 *   cc -O2 -Iabi scripts/cpu-ab.c -Lbuild/core -lturbokv -Wl,-rpath,$PWD/build/core -lm -o cpu-ab
 *   ./cpu-ab DIR_A DIR_B TYPE CTX CALLS     (DIR: a directory holding a turbokv-cpu.so)
 *   THREADS_A=1 THREADS_B=2 ./cpu-ab DIR DIR turbo3 16384 40
 *   OUTLIERS=1 ./cpu-ab ...   (fixed outlier channels, see below)
 *   CPUTIME=1 ./cpu-ab ...    (CPU time, see now())
 *
 * Geometry of Llama 3 8B (32 query heads, 8 kv heads, head_dim 128), one
 * layer, one sequence, one query token, sparse V off.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "turbokv.h"

/* CPUTIME=1: the process's CPU time instead of the wall clock (with 1
 * thread each, steadier on a machine other jobs keep busy) */
static clockid_t clock_id = CLOCK_MONOTONIC;

static double now(void)
{
    struct timespec t;
    clock_gettime(clock_id, &t);
    return t.tv_sec + t.tv_nsec * 1e-9;
}

static int cmp(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static uint64_t state = 1;

static float uniform(void) /* in [-1.7, 1.7) */
{
    state = state * 6364136223846793005ull + 1442695040888963407ull;
    return ((float)(state >> 40) / 16777216.0f - 0.5f) * 3.4f;
}

int main(int argc, char **argv)
{
    enum { KV = 8, QH = 32, D = 128, CHUNK = 512 };
    uint32_t type, id = 0;
    if (argc != 6 || tkv_type_from_name(argv[3], &type) != TKV_OK) {
        fprintf(stderr, "usage: %s DIR_A DIR_B TYPE CTX CALLS\n", argv[0]);
        return 2;
    }
    if (getenv("CPUTIME") && atoi(getenv("CPUTIME")))
        clock_id = CLOCK_PROCESS_CPUTIME_ID;
    uint32_t ctx = (uint32_t)atoi(argv[4]), calls = (uint32_t)atoi(argv[5]);
    size_t token = (size_t)KV * D;
    float *k = malloc(CHUNK * token * sizeof *k), *v = malloc(CHUNK * token * sizeof *v);
    float *q = malloc(QH * D * sizeof *q), *out = malloc(QH * D * sizeof *out);
    double *t[2] = { malloc(calls * sizeof(double)), malloc(calls * sizeof(double)) };
    double *ratio = malloc(calls * sizeof(double));
    tkv_context *c[2];
    tkv_cache *cache[2];
    /* OUTLIERS=1: channel 5 of every 32 ten times larger in K and V, fixed
     * outlier channels as real keys have them after RoPE */
    const int outliers = getenv("OUTLIERS") && atoi(getenv("OUTLIERS"));
    for (size_t i = 0; i < CHUNK * token; i++) {
        float f = outliers && i % 32 == 5 ? 10.0f : 1.0f;
        k[i] = 10.0f * f * uniform(), v[i] = f * uniform();
    }
    for (size_t i = 0; i < QH * D; i++)
        q[i] = uniform();
    setenv("TURBO_SPARSE_V", "0", 1);
    for (int s = 0; s < 2; s++) {
        const char *threads = getenv(s ? "THREADS_B" : "THREADS_A");
        if (threads)
            setenv("TURBO_THREADS", threads, 1);
        struct tkv_context_options o = { .struct_size = sizeof o, .backend = "cpu", .plugin_path = argv[1 + s] };
        struct tkv_cache_params p = { .struct_size = sizeof p, .n_layers = 1, .n_kv_heads = KV,
                                      .head_dim = D, .capacity = ctx, .n_seqs = 1, .k_type = type,
                                      .v_type = type, .n_q_heads = QH };
        if (tkv_context_open(&o, &c[s]) != TKV_OK || tkv_cache_create(c[s], &p, &cache[s]) != TKV_OK) {
            fprintf(stderr, "%s: %s\n", argv[1 + s], tkv_last_error());
            return 1;
        }
        for (uint32_t n = 0; n < ctx; n += CHUNK)
            if (tkv_cache_append(cache[s], 0, 0, ctx - n < CHUNK ? ctx - n : CHUNK, k, v) != TKV_OK) {
                fprintf(stderr, "append: %s\n", tkv_last_error());
                return 1;
            }
    }
    for (int w = 0; w < 6; w++)
        tkv_attention(cache[w % 2], 0, 1, &id, 1, QH, q, out, NULL);
    for (uint32_t i = 0; i < calls; i++) {
        for (int j = 0; j < 2; j++) {
            int s = i % 2 ? 1 - j : j;
            double t0 = now();
            if (tkv_attention(cache[s], 0, 1, &id, 1, QH, q, out, NULL) != TKV_OK) {
                fprintf(stderr, "attention: %s\n", tkv_last_error());
                return 1;
            }
            t[s][i] = now() - t0;
        }
        ratio[i] = t[0][i] / t[1][i];
    }
    qsort(t[0], calls, sizeof(double), cmp);
    qsort(t[1], calls, sizeof(double), cmp);
    qsort(ratio, calls, sizeof(double), cmp);
    printf("%s ctx %u, %u pairs: A median %.1f us (fastest %.1f), B median %.1f us (fastest %.1f), "
           "A/B paired median %.3f (quartiles %.3f %.3f)\n",
           argv[3], ctx, calls, 1e6 * t[0][calls / 2], 1e6 * t[0][0], 1e6 * t[1][calls / 2],
           1e6 * t[1][0], ratio[calls / 2], ratio[calls / 4], ratio[3 * calls / 4]);
    for (int s = 0; s < 2; s++) {
        tkv_cache_destroy(cache[s]);
        tkv_context_close(c[s]);
    }
    free(k), free(v), free(q), free(out), free(t[0]), free(t[1]), free(ratio);
    return 0;
}
