/* SPDX-License-Identifier: MIT */
/*
 * The AVX-512 level: 16 lanes, the vocabulary of simd_kernels.h on AVX-512
 * F/BW/DQ/VL/VBMI with FMA and F16C. meson.build compiles this file with
 * those extensions enabled; isa.c runs it only on a CPU that has them.
 *
 * Turbo indices: 16 indices of b bits are 2b bytes; one 64-bit load is
 * broadcast and vpmultishiftqb moves index j's bits to the low byte of lane
 * j; vpermps then reads the 16-entry centroid table with the lane's low 4
 * bits (the table repeats the 2^b centroids, so the bits of the next index
 * above them do not matter).
 */
#include <immintrin.h>
#include <string.h>

#include "simd.h"

#define LANES 16u
#define ISA_SYMBOL cpu_isa_avx512
#define ISA_NAME "avx512"
/* head dims that are not a multiple of 16 (8-value groups) */
#define ISA_NARROWER (&cpu_isa_avx2)
/* of the 32 registers, 16 hold the value loop's accumulators */
#define ACC_VECTORS 16u

typedef __m512 vf;
typedef __m512i vi;
typedef __m512 vtab;
typedef __m512d vd8;

static inline vf vf_load(const float *p) { return _mm512_loadu_ps(p); }
static inline void vf_store(float *p, vf v) { _mm512_storeu_ps(p, v); }
static inline vf vf_set1(float x) { return _mm512_set1_ps(x); }
static inline vf vf_add(vf a, vf b) { return _mm512_add_ps(a, b); }
static inline vf vf_sub(vf a, vf b) { return _mm512_sub_ps(a, b); }
static inline vf vf_mul(vf a, vf b) { return _mm512_mul_ps(a, b); }
static inline vf vf_div(vf a, vf b) { return _mm512_div_ps(a, b); }
static inline vf vf_min(vf a, vf b) { return _mm512_min_ps(a, b); }
static inline vf vf_max(vf a, vf b) { return _mm512_max_ps(a, b); }
static inline vf vf_abs(vf a) { return _mm512_abs_ps(a); }
static inline vf vf_fma(vf a, vf b, vf c) { return _mm512_fmadd_ps(a, b, c); }
static inline vf vf_fnma(vf a, vf b, vf c) { return _mm512_fnmadd_ps(a, b, c); }
static inline vf vf_round(vf x)
{
    return _mm512_roundscale_ps(x, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
}
static inline vf vf_ldexp(vf p, vf n) { return _mm512_scalef_ps(p, n); }
static inline float vf_hsum(vf a) { return _mm512_reduce_add_ps(a); }
static inline float vf_hmax(vf a) { return _mm512_reduce_max_ps(a); }

static inline uint32_t vf_ge_bits(vf a, float t)
{
    return _mm512_cmp_ps_mask(a, _mm512_set1_ps(t), _CMP_GE_OQ);
}
static inline vf vf_keep_bits(vf a, uint32_t bits) { return _mm512_maskz_mov_ps((__mmask16)bits, a); }
static inline vf vf_select(uint32_t bits, vf a, vf b)
{
    return _mm512_mask_blend_ps((__mmask16)bits, b, a);
}

/* Four rounds of pairwise halving: 128-bit quarters across vectors, then
 * 64-bit and 32-bit pairs inside quarters. Lane 4k + m ends up holding
 * part[4m + k], hence the transposed slots. */
#define CPU_ROW_SLOT(r) (4u * ((r) % 4u) + (r) / 4u)
static inline vf vf_sum_rows(const vf p[16])
{
    vf a[8], b[4], c[2];
    for (int i = 0; i < 8; i++)
        a[i] = _mm512_add_ps(_mm512_shuffle_f32x4(p[2 * i], p[2 * i + 1], 0x44),
                             _mm512_shuffle_f32x4(p[2 * i], p[2 * i + 1], 0xee));
    for (int i = 0; i < 4; i++)
        b[i] = _mm512_add_ps(_mm512_shuffle_f32x4(a[2 * i], a[2 * i + 1], 0x88),
                             _mm512_shuffle_f32x4(a[2 * i], a[2 * i + 1], 0xdd));
    for (int i = 0; i < 2; i++)
        c[i] = _mm512_add_ps(_mm512_shuffle_ps(b[2 * i], b[2 * i + 1], 0x44),
                             _mm512_shuffle_ps(b[2 * i], b[2 * i + 1], 0xee));
    return _mm512_add_ps(_mm512_shuffle_ps(c[0], c[1], 0x88), _mm512_shuffle_ps(c[0], c[1], 0xdd));
}

/* p = v[j ^ h]; v * (+-1) + p is exactly v + p or p - v (the product is
 * exact, so the FMA rounds once, like the reference's add). */
static inline vf vf_butterfly(vf v, uint32_t h)
{
    vf p;
    __mmask16 upper;
    switch (h) {
    case 1: p = _mm512_permute_ps(v, 0xb1), upper = 0xaaaa; break;
    case 2: p = _mm512_permute_ps(v, 0x4e), upper = 0xcccc; break;
    case 4: p = _mm512_shuffle_f32x4(v, v, 0xb1), upper = 0xf0f0; break;
    default: p = _mm512_shuffle_f32x4(v, v, 0x4e), upper = 0xff00; break;
    }
    vf sign = _mm512_mask_blend_ps(upper, _mm512_set1_ps(1.0f), _mm512_set1_ps(-1.0f));
    return _mm512_fmadd_ps(v, sign, p);
}

static inline vf vf_load_f32_bytes(const uint8_t *p) { return _mm512_loadu_ps(p); }
static inline vf vf_load_f16(const uint8_t *p)
{
    return _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)p));
}
static inline void vf_store_f16(uint8_t *p, vf v)
{
    _mm256_storeu_si256((__m256i *)p,
                        _mm512_cvtps_ph(v, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
}
static inline vf vf_load_i8(const uint8_t *p)
{
    return _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128((const __m128i *)p)));
}
/* roundf: truncate, then one step away from zero where the dropped
 * fraction (exact) is at least 1/2. */
static inline void vf_store_i8_round(uint8_t *p, vf v)
{
    vf t = _mm512_roundscale_ps(v, _MM_FROUND_TO_ZERO | _MM_FROUND_NO_EXC);
    __mmask16 away = _mm512_cmp_ps_mask(_mm512_abs_ps(_mm512_sub_ps(v, t)), _mm512_set1_ps(0.5f),
                                        _CMP_GE_OQ);
    vf one = _mm512_or_ps(_mm512_and_ps(v, _mm512_set1_ps(-0.0f)), _mm512_set1_ps(1.0f));
    t = _mm512_mask_add_ps(t, away, t, one);
    _mm_storeu_si128((__m128i *)p, _mm512_cvtepi32_epi8(_mm512_cvttps_epi32(t)));
}

static inline vtab vtab_load(const float *t) { return _mm512_loadu_ps(t); }
static inline vtab vtab_scale(vtab t, float s) { return _mm512_mul_ps(t, _mm512_set1_ps(s)); }
static inline vf vtab_lookup(vtab t, vi idx) { return _mm512_permutexvar_ps(idx, t); }
static inline vf vtab_decode(vtab t, const uint8_t *p, uint32_t bits)
{
    const vi shift = _mm512_setr_epi32(0, (int)bits, 2 * (int)bits, 3 * (int)bits, 4 * (int)bits,
                                       5 * (int)bits, 6 * (int)bits, 7 * (int)bits, 8 * (int)bits,
                                       9 * (int)bits, 10 * (int)bits, 11 * (int)bits,
                                       12 * (int)bits, 13 * (int)bits, 14 * (int)bits,
                                       15 * (int)bits);
    uint64_t w;
    memcpy(&w, p, sizeof w);
    return _mm512_permutexvar_ps(_mm512_multishift_epi64_epi8(shift, _mm512_set1_epi64((long long)w)),
                                 t);
}

/* For the outliers of the split types (simd_kernels.h, score_outliers and
 * accum_outliers): vf_gather takes base[idx[j]], vi_lane_times j * stride,
 * simd_vq.h the 8-float vectors of a sub-batch. */
static inline vi vi_lane_times(uint32_t stride)
{
    return _mm512_mullo_epi32(_mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15),
                              _mm512_set1_epi32((int)stride));
}
#include "simd_vq.h"
static inline vf vf_gather(const float *base, vi idx) { return _mm512_i32gather_ps(idx, base, 4); }

static inline vi vi_zero(void) { return _mm512_setzero_si512(); }
static inline vi vi_add_const(vi a, uint32_t c) { return _mm512_add_epi32(a, _mm512_set1_epi32((int)c)); }
static inline vi vi_add_if_ge(vi lo, vf a, vf b, uint32_t step)
{
    return _mm512_mask_add_epi32(lo, _mm512_cmp_ps_mask(a, b, _CMP_GE_OQ), lo,
                                 _mm512_set1_epi32((int)step));
}
/* 16 indices -> one 64-bit word (index j at bit j * bits) -> 2 * bits bytes. */
static inline void vi_pack(vi idx, uint32_t bits, uint8_t *out)
{
    const __m512i shift = _mm512_setr_epi64(0, bits, 2 * bits, 3 * bits, 4 * bits, 5 * bits,
                                            6 * bits, 7 * bits);
    __m512i lo = _mm512_cvtepu32_epi64(_mm512_castsi512_si256(idx));
    __m512i hi = _mm512_cvtepu32_epi64(_mm512_extracti64x4_epi64(idx, 1));
    __m512i w = _mm512_or_si512(_mm512_sllv_epi64(lo, shift),
                                _mm512_sllv_epi64(hi, _mm512_add_epi64(shift, _mm512_set1_epi64(8 * bits))));
    uint64_t word = (uint64_t)_mm512_reduce_or_epi64(w);
    memcpy(out, &word, 2u * bits);
}

static inline vd8 vd8_zero(void) { return _mm512_setzero_pd(); }
/* x^2 is exact in double, so the FMA is the reference's add. */
static inline vd8 vd8_add_sq(vd8 s, vf x)
{
    __m512d lo = _mm512_cvtps_pd(_mm512_castps512_ps256(x));
    __m512d hi = _mm512_cvtps_pd(_mm512_extractf32x8_ps(x, 1));
    return _mm512_fmadd_pd(hi, hi, _mm512_fmadd_pd(lo, lo, s));
}
static inline vd8 vd8_add(vd8 s, vf x)
{
    s = _mm512_add_pd(s, _mm512_cvtps_pd(_mm512_castps512_ps256(x)));
    return _mm512_add_pd(s, _mm512_cvtps_pd(_mm512_extractf32x8_ps(x, 1)));
}
static inline double vd8_tree(vd8 s)
{
    __m256d t = _mm256_add_pd(_mm512_castpd512_pd256(s), _mm512_extractf64x4_pd(s, 1));
    __m128d u = _mm_add_pd(_mm256_castpd256_pd128(t), _mm256_extractf128_pd(t, 1));
    return _mm_cvtsd_f64(u) + _mm_cvtsd_f64(_mm_unpackhi_pd(u, u));
}

/* Attention runs with denormals flushed to zero (MXCSR FTZ and DAZ): a
 * softmax rescale or a tiny weight can make them, each costs a microcode
 * assist of ~100 cycles, and they lie below 1e-38, far under the outputs'
 * rounding. The caller's MXCSR comes back after. */
static inline uint32_t fp_flush_begin(void)
{
    uint32_t csr = _mm_getcsr();
    _mm_setcsr(csr | 0x8040u);
    return csr;
}
static inline void fp_flush_end(uint32_t csr) { _mm_setcsr(csr); }

static inline float cpu_half(const uint8_t *p) { return _cvtsh_ss(load_u16(p)); }

#include "simd_kernels.h"
