/* SPDX-License-Identifier: MIT */
/*
 * The AVX2 level: 8 lanes, the vocabulary of simd_kernels.h on AVX2 with
 * FMA and F16C. meson.build compiles this file with those extensions
 * enabled; isa.c runs it only on a CPU that has them.
 *
 * Turbo indices: 8 indices of b bits are b bytes; one 32-bit load is
 * broadcast, vpsrlvd shifts index j to the bottom of lane j, and vpermps
 * reads an 8-entry table with the lane's low 3 bits (for 4-bit indices a
 * second vpermps on the upper 8 entries and a blend on bit 3).
 */
#include <immintrin.h>
#include <string.h>

#include "simd.h"

#define LANES 8u
#define ISA_SYMBOL cpu_isa_avx2
#define ISA_NAME "avx2"
#define ISA_NARROWER NULL /* 8 divides every supported head_dim */

typedef __m256 vf;
typedef __m256i vi;
typedef struct { __m256 lo, hi; } vtab;
typedef struct { __m256d lo, hi; } vd8; /* lanes 0-3, 4-7 */

static inline vf vf_load(const float *p) { return _mm256_loadu_ps(p); }
static inline void vf_store(float *p, vf v) { _mm256_storeu_ps(p, v); }
static inline vf vf_set1(float x) { return _mm256_set1_ps(x); }
static inline vf vf_add(vf a, vf b) { return _mm256_add_ps(a, b); }
static inline vf vf_sub(vf a, vf b) { return _mm256_sub_ps(a, b); }
static inline vf vf_mul(vf a, vf b) { return _mm256_mul_ps(a, b); }
static inline vf vf_div(vf a, vf b) { return _mm256_div_ps(a, b); }
static inline vf vf_min(vf a, vf b) { return _mm256_min_ps(a, b); }
static inline vf vf_max(vf a, vf b) { return _mm256_max_ps(a, b); }
static inline vf vf_abs(vf a) { return _mm256_andnot_ps(_mm256_set1_ps(-0.0f), a); }
static inline vf vf_fma(vf a, vf b, vf c) { return _mm256_fmadd_ps(a, b, c); }
static inline vf vf_fnma(vf a, vf b, vf c) { return _mm256_fnmadd_ps(a, b, c); }
static inline vf vf_round(vf x)
{
    return _mm256_round_ps(x, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
}
/* 2^n added to the exponent field: vf_exp keeps p * 2^n normal (n >= -126
 * only with p >= 1). */
static inline vf vf_ldexp(vf p, vf n)
{
    __m256i e = _mm256_slli_epi32(_mm256_cvtps_epi32(n), 23);
    return _mm256_castsi256_ps(_mm256_add_epi32(_mm256_castps_si256(p), e));
}
static inline float vf_hsum(vf a)
{
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(a), _mm256_extractf128_ps(a, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    return _mm_cvtss_f32(_mm_add_ss(s, _mm_movehdup_ps(s)));
}
static inline float vf_hmax(vf a)
{
    __m128 s = _mm_max_ps(_mm256_castps256_ps128(a), _mm256_extractf128_ps(a, 1));
    s = _mm_max_ps(s, _mm_movehl_ps(s, s));
    return _mm_cvtss_f32(_mm_max_ss(s, _mm_movehdup_ps(s)));
}

static inline uint32_t vf_ge_bits(vf a, float t)
{
    return (uint32_t)_mm256_movemask_ps(_mm256_cmp_ps(a, _mm256_set1_ps(t), _CMP_GE_OQ));
}
/* All ones in the lanes whose bit is set. */
static inline __m256 lane_mask(uint32_t bits)
{
    const __m256i lane_bit = _mm256_setr_epi32(1, 2, 4, 8, 16, 32, 64, 128);
    return _mm256_castsi256_ps(
        _mm256_cmpeq_epi32(_mm256_and_si256(_mm256_set1_epi32((int)bits), lane_bit), lane_bit));
}
static inline vf vf_keep_bits(vf a, uint32_t bits) { return _mm256_and_ps(a, lane_mask(bits)); }
static inline vf vf_select(uint32_t bits, vf a, vf b)
{
    return _mm256_blendv_ps(b, a, lane_mask(bits));
}

/* Three rounds of pairwise halving: 128-bit halves across vectors, then
 * 64-bit and 32-bit pairs inside halves. Lane 4h + m ends up holding
 * part[2m + h], hence the slots. */
#define CPU_ROW_SLOT(r) (2u * ((r) % 4u) + (r) / 4u)
static inline vf vf_sum_rows(const vf p[8])
{
    vf a[4], b[2];
    for (int i = 0; i < 4; i++)
        a[i] = _mm256_add_ps(_mm256_permute2f128_ps(p[2 * i], p[2 * i + 1], 0x20),
                             _mm256_permute2f128_ps(p[2 * i], p[2 * i + 1], 0x31));
    for (int i = 0; i < 2; i++)
        b[i] = _mm256_add_ps(_mm256_shuffle_ps(a[2 * i], a[2 * i + 1], 0x44),
                             _mm256_shuffle_ps(a[2 * i], a[2 * i + 1], 0xee));
    return _mm256_add_ps(_mm256_shuffle_ps(b[0], b[1], 0x88), _mm256_shuffle_ps(b[0], b[1], 0xdd));
}

/* p = v[j ^ h]; v * (+-1) + p rounds once, exactly like v + p or p - v. */
static inline vf vf_butterfly(vf v, uint32_t h)
{
    vf p, sign;
    switch (h) {
    case 1:
        p = _mm256_permute_ps(v, 0xb1);
        sign = _mm256_setr_ps(1, -1, 1, -1, 1, -1, 1, -1);
        break;
    case 2:
        p = _mm256_permute_ps(v, 0x4e);
        sign = _mm256_setr_ps(1, 1, -1, -1, 1, 1, -1, -1);
        break;
    default:
        p = _mm256_permute2f128_ps(v, v, 0x01);
        sign = _mm256_setr_ps(1, 1, 1, 1, -1, -1, -1, -1);
        break;
    }
    return _mm256_fmadd_ps(v, sign, p);
}

static inline vf vf_load_f32_bytes(const uint8_t *p) { return _mm256_loadu_ps((const float *)p); }
static inline vf vf_load_f16(const uint8_t *p)
{
    return _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)p));
}
static inline void vf_store_f16(uint8_t *p, vf v)
{
    _mm_storeu_si128((__m128i *)p,
                     _mm256_cvtps_ph(v, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
}
static inline vf vf_load_i8(const uint8_t *p)
{
    return _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_loadl_epi64((const __m128i *)p)));
}
/* roundf: truncate, then one step away from zero where the dropped
 * fraction (exact) is at least 1/2. */
static inline void vf_store_i8_round(uint8_t *p, vf v)
{
    vf t = _mm256_round_ps(v, _MM_FROUND_TO_ZERO | _MM_FROUND_NO_EXC);
    vf away = _mm256_cmp_ps(vf_abs(_mm256_sub_ps(v, t)), _mm256_set1_ps(0.5f), _CMP_GE_OQ);
    vf one = _mm256_or_ps(_mm256_and_ps(v, _mm256_set1_ps(-0.0f)), _mm256_set1_ps(1.0f));
    __m256i q = _mm256_cvttps_epi32(_mm256_add_ps(t, _mm256_and_ps(away, one)));
    __m128i q16 = _mm_packs_epi32(_mm256_castsi256_si128(q), _mm256_extracti128_si256(q, 1));
    _mm_storel_epi64((__m128i *)p, _mm_packs_epi16(q16, q16));
}

static inline vtab vtab_load(const float *t) { return (vtab){ _mm256_loadu_ps(t), _mm256_loadu_ps(t + 8) }; }
static inline vtab vtab_scale(vtab t, float s)
{
    return (vtab){ _mm256_mul_ps(t.lo, _mm256_set1_ps(s)), _mm256_mul_ps(t.hi, _mm256_set1_ps(s)) };
}
static inline vf vtab_lookup(vtab t, vi idx)
{
    return _mm256_blendv_ps(_mm256_permutevar8x32_ps(t.lo, idx), _mm256_permutevar8x32_ps(t.hi, idx),
                            _mm256_castsi256_ps(_mm256_slli_epi32(idx, 28)));
}
/* Below 4 bits the table's upper half repeats its lower half: one vpermps. */
static inline vf vtab_decode(vtab t, const uint8_t *p, uint32_t bits)
{
    const __m256i shift = _mm256_setr_epi32(0, (int)bits, 2 * (int)bits, 3 * (int)bits,
                                            4 * (int)bits, 5 * (int)bits, 6 * (int)bits,
                                            7 * (int)bits);
    uint32_t w;
    memcpy(&w, p, sizeof w);
    vi idx = _mm256_srlv_epi32(_mm256_set1_epi32((int)w), shift);
    return bits < 4 ? _mm256_permutevar8x32_ps(t.lo, idx) : vtab_lookup(t, idx);
}

/* For the outliers of the split types (simd_kernels.h, score_outliers and
 * accum_outliers): vf_gather takes base[idx[j]], vi_lane_times j * stride,
 * simd_vq.h the 8-float vectors of a sub-batch. */
static inline vi vi_lane_times(uint32_t stride)
{
    return _mm256_mullo_epi32(_mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7), _mm256_set1_epi32((int)stride));
}
#include "simd_vq.h"
static inline vf vf_gather(const float *base, vi idx) { return _mm256_i32gather_ps(base, idx, 4); }

static inline vi vi_zero(void) { return _mm256_setzero_si256(); }
static inline vi vi_add_const(vi a, uint32_t c) { return _mm256_add_epi32(a, _mm256_set1_epi32((int)c)); }
static inline vi vi_add_if_ge(vi lo, vf a, vf b, uint32_t step)
{
    __m256i ge = _mm256_castps_si256(_mm256_cmp_ps(a, b, _CMP_GE_OQ));
    return _mm256_add_epi32(lo, _mm256_and_si256(ge, _mm256_set1_epi32((int)step)));
}
/* 8 indices -> one 32-bit word (index j at bit j * bits) -> bits bytes. */
static inline void vi_pack(vi idx, uint32_t bits, uint8_t *out)
{
    const __m256i shift = _mm256_setr_epi32(0, (int)bits, 2 * (int)bits, 3 * (int)bits,
                                            4 * (int)bits, 5 * (int)bits, 6 * (int)bits,
                                            7 * (int)bits);
    __m256i s = _mm256_sllv_epi32(idx, shift);
    __m128i x = _mm_or_si128(_mm256_castsi256_si128(s), _mm256_extracti128_si256(s, 1));
    x = _mm_or_si128(x, _mm_shuffle_epi32(x, 0x4e));
    x = _mm_or_si128(x, _mm_shuffle_epi32(x, 0xb1));
    uint32_t word = (uint32_t)_mm_cvtsi128_si32(x);
    memcpy(out, &word, bits);
}

static inline vd8 vd8_zero(void) { return (vd8){ _mm256_setzero_pd(), _mm256_setzero_pd() }; }
/* x^2 is exact in double, so the FMA is the reference's add. */
static inline vd8 vd8_add_sq(vd8 s, vf x)
{
    __m256d lo = _mm256_cvtps_pd(_mm256_castps256_ps128(x));
    __m256d hi = _mm256_cvtps_pd(_mm256_extractf128_ps(x, 1));
    return (vd8){ _mm256_fmadd_pd(lo, lo, s.lo), _mm256_fmadd_pd(hi, hi, s.hi) };
}
static inline vd8 vd8_add(vd8 s, vf x)
{
    return (vd8){ _mm256_add_pd(s.lo, _mm256_cvtps_pd(_mm256_castps256_ps128(x))),
                  _mm256_add_pd(s.hi, _mm256_cvtps_pd(_mm256_extractf128_ps(x, 1))) };
}
static inline double vd8_tree(vd8 s)
{
    __m256d t = _mm256_add_pd(s.lo, s.hi);
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
