/* SPDX-License-Identifier: MIT */
/* The multiply-add peak of the cpu plugin's vector unit (bench_fma.c). */
#ifndef TKV_TOOLS_BENCH_FMA_H
#define TKV_TOOLS_BENCH_FMA_H

#include <stdint.h>

struct bench_fma {
    const char *isa; /* the level measured; NULL: none (no vector level with FMAs) */
    uint32_t lanes;  /* floats per vector */
    uint32_t threads;
    double gmacs;      /* float32 multiply-adds per second over all threads, 1e9, median pass */
    double gmacs_best; /* the fastest pass */
};

/* Measures the peak for the level named in the plugin's device string
 * ("isa avx512 (...)": avx512, avx2 or neon) on `threads` threads; returns
 * 0 with out->isa NULL where the string names none of them. */
int bench_fma_peak(const char *device, uint32_t threads, struct bench_fma *out);

#endif
