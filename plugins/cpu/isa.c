/* SPDX-License-Identifier: MIT */
/*
 * Which ISA level runs: what this CPU can run, what TURBO_CPU_ISA asks for,
 * and per layout the level's kernels (or the reference's). Also the codebook
 * tables in the 16-entry shape the levels' lookups take.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "simd.h"

#define ISA_ENV "TURBO_CPU_ISA"

#if defined(__x86_64__) || defined(__i386__)
#define CPU_X86 1
#include <cpuid.h>
#endif
#if defined(__aarch64__) && defined(__ARM_NEON)
#define CPU_ARM64 1
#endif
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
#define CPU_LITTLE_ENDIAN 1
#endif

#ifdef CPU_X86
/* F16C from CPUID leaf 1 (ECX bit 29): clang's __builtin_cpu_supports does
 * not know "f16c". */
static int has_f16c(void)
{
    unsigned a, b, c, d;
    return __get_cpuid(1, &a, &b, &c, &d) && (c & bit_F16C);
}
#endif

static int has_avx512(void)
{
#ifdef CPU_X86
    return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
           __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("avx512vl") &&
           __builtin_cpu_supports("avx512vbmi") && __builtin_cpu_supports("fma") &&
           has_f16c();
#else
    return 0;
#endif
}

static int has_avx2(void)
{
#ifdef CPU_X86
    return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") &&
           has_f16c();
#else
    return 0;
#endif
}

/* Advanced SIMD is part of every AArch64 CPU; the level reads stored rows
 * as little-endian words. */
static int has_neon(void)
{
#if defined(CPU_ARM64) && defined(CPU_LITTLE_ENDIAN)
    return 1;
#else
    return 0;
#endif
}

/* The portable level reads stored rows as host words. */
static int has_scalar(void)
{
#ifdef CPU_LITTLE_ENDIAN
    return 1;
#else
    return 0;
#endif
}

static int has_reference(void) { return 1; }

/* Best first: auto takes the first this CPU runs. */
static const struct level {
    const char *name;
    const char *needs; /* what a CPU lacking it lacks */
    const struct cpu_isa *isa; /* NULL: the reference kernels, one thread */
    int (*runs)(void);
} levels[] = {
#ifdef CPU_X86
    { "avx512", "AVX-512 F/BW/DQ/VL/VBMI with FMA and F16C", &cpu_isa_avx512, has_avx512 },
    { "avx2", "AVX2 with FMA and F16C", &cpu_isa_avx2, has_avx2 },
#else
    { "avx512", "an x86-64 build", NULL, has_avx512 },
    { "avx2", "an x86-64 build", NULL, has_avx2 },
#endif
#ifdef CPU_ARM64
    { "neon", "a little-endian AArch64 host", &cpu_isa_neon, has_neon },
#else
    { "neon", "an AArch64 build", NULL, has_neon },
#endif
    { "scalar", "a little-endian host", &cpu_isa_scalar, has_scalar },
    { "reference", "", NULL, has_reference },
};
#define N_LEVELS (sizeof levels / sizeof levels[0])

/* "avx512, avx2, scalar, reference": the levels this CPU runs (on Arm
 * "neon, scalar, reference"). */
static void list_running(char *out, size_t size)
{
    size_t n = 0;
    out[0] = '\0';
    for (size_t i = 0; i < N_LEVELS; i++)
        if (levels[i].runs() && n < size)
            n += (size_t)snprintf(out + n, size - n, "%s%s", n ? ", " : "", levels[i].name);
}

int cpu_isa_choose(const char *configured, const struct cpu_isa **isa)
{
    /* the core's cpu_isa (ABI 2.1: configuration and TURBO_CPU_ISA, read by
     * the core so that ignore_env holds); a caller that passes none (an
     * older core, the op tests) leaves it to the environment */
    const char *want = configured ? configured : getenv(ISA_ENV);
    int automatic = !want || !*want || !strcmp(want, "auto");
    char running[128];
    for (size_t i = 0; i < N_LEVELS; i++) {
        /* auto: the first level that runs (the reference always does) */
        if (automatic ? !levels[i].runs() : strcmp(want, levels[i].name) != 0)
            continue;
        if (!levels[i].runs()) {
            list_running(running, sizeof running);
            return CPU_ERROR(TKV_EUNSUPPORTED,
                             "open: %s=%s: this machine lacks %s (it runs: %s)", ISA_ENV, want,
                             levels[i].needs, running);
        }
        *isa = levels[i].isa;
        return TKV_OK;
    }
    return CPU_ERROR(TKV_ECONFIG,
                     "open: %s=%s: expected one of auto, avx512, avx2, neon, scalar, reference", ISA_ENV,
                     want);
}

void cpu_isa_describe(const char *configured, char *out, size_t size)
{
    const char *want = configured ? configured : getenv(ISA_ENV), *name = NULL;
    char running[128];
    list_running(running, sizeof running);
    if (!want || !*want)
        want = "auto";
    for (size_t i = 0; i < N_LEVELS && !name; i++)
        if (levels[i].runs() && (!strcmp(want, "auto") || !strcmp(want, levels[i].name)))
            name = levels[i].name;
    if (name)
        snprintf(out, size, "isa %s (%s=%s; runs %s)", name, configured ? "cpu_isa" : ISA_ENV, want, running);
    else
        snprintf(out, size, "%s=%s is not usable here (runs %s)", configured ? "cpu_isa" : ISA_ENV, want, running);
}

void cpu_simd_select(const struct cpu_device *dev, struct cpu_layout *l)
{
    const struct cpu_isa *isa = dev->isa;
    while (isa && l->head_dim % isa->lanes)
        isa = isa->narrower;
    l->isa = isa;
    l->simd = isa && l->type < TKV_TYPE_COUNT ? isa->types[l->type] : NULL;
}

/* Every b-bit codebook as 16 entries indexed by the low 4 bits of a lane:
 * centroids and squares repeated every 2^b entries, the 2^b - 1 midpoints
 * padded with +inf (a binary search never reads the padding). */
void cpu_isa_tables(struct cpu_device *dev)
{
    for (uint32_t gi = 0; gi < TKV_N_GROUP_SIZES; gi++)
        for (uint32_t b = 0; b < TKV_N_CODEBOOK_BITS; b++) {
            const struct tkv_codebook *cb = &dev->math->groups[gi].codebook[b];
            struct cpu_lut *lut = &dev->luts[gi][b];
            for (uint32_t k = 0; k < 16; k++) {
                lut->centroid[k] = cb->centroids[k % cb->n_levels];
                lut->centroid_sq[k] = cb->centroid_sq[k % cb->n_levels];
                lut->boundary[k] = k + 1 < cb->n_levels ? cb->boundaries[k] : INFINITY;
            }
        }
}
