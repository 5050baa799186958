/* SPDX-License-Identifier: MIT */
/*
 * 8 floats in one AVX register (vq): the queries of one sub-batch
 * (CPU_SUBBATCH), for the outliers of the split types (simd_kernels.h,
 * score_outliers and accum_outliers). Included by the x86 levels that have
 * AVX2 and F16C (isa_avx2.c, isa_avx512.c), after immintrin.h and simd.h.
 */
#ifndef TKV_CPU_SIMD_VQ_H
#define TKV_CPU_SIMD_VQ_H

#define ISA_HAS_VQ 1
typedef __m256 vq;
typedef __m256i vqi;

static inline vq vq_load(const float *p) { return _mm256_loadu_ps(p); }
static inline void vq_store(float *p, vq a) { _mm256_storeu_ps(p, a); }
static inline vq vq_set1(float x) { return _mm256_set1_ps(x); }
static inline vq vq_fma(vq a, vq b, vq c) { return _mm256_fmadd_ps(a, b, c); }
static inline vqi vqi_lane_times(uint32_t stride)
{
    return _mm256_mullo_epi32(_mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7), _mm256_set1_epi32((int)stride));
}
/* base[idx[j]] for the lanes j < n, 0 in the others (not read) */
static inline vq vq_gather_first(const float *base, vqi idx, uint32_t n)
{
    const __m256i live = _mm256_cmpgt_epi32(_mm256_set1_epi32((int)n), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
    return _mm256_mask_i32gather_ps(_mm256_setzero_ps(), base, idx, _mm256_castsi256_ps(live), 4);
}
/* the fp16 at p, as float, in every lane */
static inline vq vq_half(const uint8_t *p) { return _mm256_cvtph_ps(_mm_set1_epi16((short)load_u16(p))); }

#endif
