/* SPDX-License-Identifier: MIT */
/*
 * The multiply-add peak of the host's vector unit, for `turbokv bench`'s
 * arithmetic floor (cmd_bench.c): the cpu plugin's kernels multiply float32
 * values into float32 accumulators with fused multiply-adds of its ISA
 * level's width, and no kernel of that arithmetic can run faster than the
 * cores retire them.
 *
 * Each thread runs CHAINS independent chains of vector FMAs (more than the
 * FMA latency times the pipes, so that only the throughput bounds them)
 * between two barriers; thread 0 times each pass. The vector width is the
 * plugin's level (its device string names it: "isa avx512 (...)"), compiled
 * here with a target attribute, so the tool itself still runs on any CPU of
 * its architecture; the level is only asked for where the plugin runs it.
 */
#include "bench_fma.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tool.h"

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#define HAVE_X86 1
#elif defined(__aarch64__)
#include <arm_neon.h>
#define HAVE_NEON 1
#endif

#define CHAINS 12
#define PASSES 5
#define THREADS_MAX 256

/* Iterations of one pass: 12 x 4M FMAs, about 8-25 ms per thread on the
 * cores it was written on. */
#define ITERATIONS (4u << 20)

static volatile float fma_sink;

/* One pass of CHAINS chains of ITERATIONS FMAs each; the asm statement
 * keeps every chain in a register and live, and the multiplier just below
 * 1 keeps the values finite and normal. */
#define FMA_PASS(type, set1, fma, reg)                                                         \
    type a0 = set1(1.0f), a1 = set1(1.1f), a2 = set1(1.2f), a3 = set1(1.3f), a4 = set1(1.4f),  \
         a5 = set1(1.5f), a6 = set1(1.6f), a7 = set1(1.7f), a8 = set1(1.8f), a9 = set1(1.9f),  \
         a10 = set1(2.0f), a11 = set1(2.1f), m = set1(0.9999999f), c = set1(1e-7f);            \
    for (uint32_t k = 0; k < ITERATIONS; k++) {                                                \
        a0 = fma(a0, m, c), a1 = fma(a1, m, c), a2 = fma(a2, m, c), a3 = fma(a3, m, c);        \
        a4 = fma(a4, m, c), a5 = fma(a5, m, c), a6 = fma(a6, m, c), a7 = fma(a7, m, c);        \
        a8 = fma(a8, m, c), a9 = fma(a9, m, c), a10 = fma(a10, m, c), a11 = fma(a11, m, c);    \
        __asm__ volatile("" : "+" reg(a0), "+" reg(a1), "+" reg(a2), "+" reg(a3), "+" reg(a4),  \
                         "+" reg(a5), "+" reg(a6), "+" reg(a7), "+" reg(a8), "+" reg(a9),       \
                         "+" reg(a10), "+" reg(a11));                                           \
    }

#ifdef HAVE_X86
__attribute__((target("avx512f"), noinline)) static float pass_avx512(void)
{
    FMA_PASS(__m512, _mm512_set1_ps, _mm512_fmadd_ps, "v")
    return _mm512_reduce_add_ps(_mm512_add_ps(a0, a11));
}

__attribute__((target("avx2,fma"), noinline)) static float pass_avx2(void)
{
    FMA_PASS(__m256, _mm256_set1_ps, _mm256_fmadd_ps, "x")
    __m256 s = _mm256_add_ps(a0, a11);
    return _mm_cvtss_f32(_mm256_castps256_ps128(s));
}
#endif

#ifdef HAVE_NEON
static float32x4_t neon_fma(float32x4_t a, float32x4_t b, float32x4_t c) { return vfmaq_f32(c, a, b); }
__attribute__((noinline)) static float pass_neon(void)
{
    FMA_PASS(float32x4_t, vdupq_n_f32, neon_fma, "w")
    return vgetq_lane_f32(vaddq_f32(a0, a11), 0);
}
#endif

struct level {
    const char *name;
    uint32_t lanes;
    float (*pass)(void);
};

static const struct level levels[] = {
#ifdef HAVE_X86
    { "avx512", 16, pass_avx512 },
    { "avx2", 8, pass_avx2 },
#endif
#ifdef HAVE_NEON
    { "neon", 4, pass_neon },
#endif
    { NULL, 0, NULL },
};

/* The level named by "isa NAME" in the plugin's device string. */
static const struct level *level_of(const char *device)
{
    const char *at = strstr(device, "isa ");
    if (!at)
        return NULL;
    at += 4;
    for (const struct level *l = levels; l->name; l++) {
        size_t n = strlen(l->name);
        if (!strncmp(at, l->name, n) && (at[n] == ' ' || at[n] == '\0'))
            return l;
    }
    return NULL;
}

struct worker {
    const struct level *level;
    pthread_barrier_t *barrier;
    float sink;
};

static void *fma_worker(void *arg)
{
    struct worker *w = arg;
    for (int p = 0; p < PASSES; p++) {
        pthread_barrier_wait(w->barrier);
        w->sink += w->level->pass();
        pthread_barrier_wait(w->barrier);
    }
    return NULL;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

int bench_fma_peak(const char *device, uint32_t threads, struct bench_fma *out)
{
    memset(out, 0, sizeof *out);
    const struct level *l = level_of(device);
    if (!l || threads == 0)
        return 0;
    if (threads > THREADS_MAX)
        threads = THREADS_MAX;
    struct worker w[THREADS_MAX];
    pthread_t id[THREADS_MAX];
    pthread_barrier_t barrier;
    double pass[PASSES];
    pthread_barrier_init(&barrier, NULL, threads);
    for (uint32_t t = 0; t < threads; t++)
        w[t] = (struct worker){ l, &barrier, 0.0f };
    uint32_t started = 1;
    for (; started < threads; started++)
        if (pthread_create(&id[started], NULL, fma_worker, &w[started]) != 0)
            break;
    if (started < threads) { /* the barrier would never open */
        fprintf(stderr, "turbokv bench: cannot start %u threads to measure the multiply-add peak\n", threads);
        exit(1);
    }
    for (int p = 0; p < PASSES; p++) {
        pthread_barrier_wait(&barrier);
        double t0 = tool_now();
        w[0].sink += l->pass();
        pthread_barrier_wait(&barrier);
        pass[p] = tool_now() - t0;
    }
    float sink = 0.0f;
    for (uint32_t t = 1; t < threads; t++)
        pthread_join(id[t], NULL);
    for (uint32_t t = 0; t < threads; t++)
        sink += w[t].sink;
    fma_sink = sink;
    pthread_barrier_destroy(&barrier);
    qsort(pass, PASSES, sizeof pass[0], cmp_double);
    double macs = (double)threads * CHAINS * ITERATIONS * l->lanes;
    out->isa = l->name;
    out->lanes = l->lanes;
    out->threads = threads;
    out->gmacs = macs / (pass[PASSES / 2] * 1e9);
    out->gmacs_best = macs / (pass[0] * 1e9);
    return 1;
}
