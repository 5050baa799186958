/* SPDX-License-Identifier: MIT */
/*
 * The Arm NEON level: 8 lanes (two 128-bit registers), the vocabulary of
 * simd_kernels.h on Armv8-A Advanced SIMD, which every AArch64 CPU has
 * (isa.c runs it on any little-endian AArch64 host).
 *
 * Turbo indices: 8 indices of b bits are b bytes; one 32-bit load is
 * duplicated, a per-lane negative vshl moves index j to the bottom of lane
 * j, and the low 4 bits select a float of the 16-entry table: they become
 * the byte offsets 4k..4k+3 and one tbl over the table's 64 bytes (four
 * registers) reads the four floats of a register. Products of centroids
 * and queries are fused multiply-adds, as on x86.
 *
 * Quantize matches the reference bit for bit: IEEE division and square
 * root, the butterflies as exact adds and subtracts, doubles summed in
 * cpu_sum8's order, fcvtas (round half away from zero, roundf) for q8_0,
 * fcvtn to half with the default round-to-nearest-even.
 *
 * The dot-product extension (sdot) is not used: every kernel multiplies
 * float queries into float centroids or int8 values scaled in float, and
 * an int8 query would move the scores far past the 1e-5 agreement.
 */
#include <arm_neon.h>
#include <string.h>

#include "simd.h"

#define LANES 8u
#define ISA_SYMBOL cpu_isa_neon
#define ISA_NAME "neon"
#define ISA_NARROWER NULL /* 8 divides every supported head_dim */

typedef struct { float32x4_t lo, hi; } vf;
typedef struct { int32x4_t lo, hi; } vi;
typedef uint8x16x4_t vtab; /* the 16 floats as 64 bytes */
typedef struct { float64x2_t d[4]; } vd8; /* lanes 0-1, 2-3, 4-5, 6-7 */

#define PAIR(f, a, b) ((vf){ f((a).lo, (b).lo), f((a).hi, (b).hi) })

static inline vf vf_load(const float *p) { return (vf){ vld1q_f32(p), vld1q_f32(p + 4) }; }
static inline void vf_store(float *p, vf v)
{
    vst1q_f32(p, v.lo);
    vst1q_f32(p + 4, v.hi);
}
static inline vf vf_set1(float x) { return (vf){ vdupq_n_f32(x), vdupq_n_f32(x) }; }
static inline vf vf_add(vf a, vf b) { return PAIR(vaddq_f32, a, b); }
static inline vf vf_sub(vf a, vf b) { return PAIR(vsubq_f32, a, b); }
static inline vf vf_mul(vf a, vf b) { return PAIR(vmulq_f32, a, b); }
static inline vf vf_div(vf a, vf b) { return PAIR(vdivq_f32, a, b); }
static inline vf vf_min(vf a, vf b) { return PAIR(vminq_f32, a, b); }
static inline vf vf_max(vf a, vf b) { return PAIR(vmaxq_f32, a, b); }
static inline vf vf_abs(vf a) { return (vf){ vabsq_f32(a.lo), vabsq_f32(a.hi) }; }
/* a * b + c, fused */
static inline vf vf_fma(vf a, vf b, vf c)
{
    return (vf){ vfmaq_f32(c.lo, a.lo, b.lo), vfmaq_f32(c.hi, a.hi, b.hi) };
}
/* c - a * b, fused */
static inline vf vf_fnma(vf a, vf b, vf c)
{
    return (vf){ vfmsq_f32(c.lo, a.lo, b.lo), vfmsq_f32(c.hi, a.hi, b.hi) };
}
static inline vf vf_round(vf x) { return (vf){ vrndnq_f32(x.lo), vrndnq_f32(x.hi) }; }
/* 2^n added to the exponent field: vf_exp keeps p * 2^n normal (n >= -126
 * only with p >= 1). */
static inline vf vf_ldexp(vf p, vf n)
{
    int32x4_t lo = vshlq_n_s32(vcvtq_s32_f32(n.lo), 23), hi = vshlq_n_s32(vcvtq_s32_f32(n.hi), 23);
    return (vf){ vreinterpretq_f32_s32(vaddq_s32(vreinterpretq_s32_f32(p.lo), lo)),
                 vreinterpretq_f32_s32(vaddq_s32(vreinterpretq_s32_f32(p.hi), hi)) };
}
static inline float vf_hsum(vf a) { return vaddvq_f32(vaddq_f32(a.lo, a.hi)); }
static inline float vf_hmax(vf a) { return vmaxvq_f32(vmaxq_f32(a.lo, a.hi)); }

static const uint32_t lane_bit[8] = { 1, 2, 4, 8, 16, 32, 64, 128 };

static inline uint32_t vf_ge_bits(vf a, float t)
{
    uint32x4_t lo = vandq_u32(vcgeq_f32(a.lo, vdupq_n_f32(t)), vld1q_u32(lane_bit));
    uint32x4_t hi = vandq_u32(vcgeq_f32(a.hi, vdupq_n_f32(t)), vld1q_u32(lane_bit + 4));
    return vaddvq_u32(vorrq_u32(lo, hi));
}
/* All ones in the lanes whose bit is set: low and high four lanes. */
static inline uint32x4_t lane_mask(uint32_t bits, int half)
{
    return vtstq_u32(vdupq_n_u32(bits), vld1q_u32(lane_bit + 4 * half));
}
static inline vf vf_keep_bits(vf a, uint32_t bits)
{
    return (vf){ vreinterpretq_f32_u32(vandq_u32(vreinterpretq_u32_f32(a.lo), lane_mask(bits, 0))),
                 vreinterpretq_f32_u32(vandq_u32(vreinterpretq_u32_f32(a.hi), lane_mask(bits, 1))) };
}
static inline vf vf_select(uint32_t bits, vf a, vf b)
{
    return (vf){ vbslq_f32(lane_mask(bits, 0), a.lo, b.lo), vbslq_f32(lane_mask(bits, 1), a.hi, b.hi) };
}

/* Lane r := the sum of part[r]'s lanes: each row's halves added, then two
 * rounds of pairwise adds. */
#define CPU_ROW_SLOT(r) (r)
static inline vf vf_sum_rows(const vf p[8])
{
    float32x4_t s[8];
    for (int i = 0; i < 8; i++)
        s[i] = vaddq_f32(p[i].lo, p[i].hi);
    float32x4_t a = vpaddq_f32(s[0], s[1]), b = vpaddq_f32(s[2], s[3]);
    float32x4_t c = vpaddq_f32(s[4], s[5]), d = vpaddq_f32(s[6], s[7]);
    return (vf){ vpaddq_f32(a, b), vpaddq_f32(c, d) };
}

/* Lane j gets v[j] + v[j^h] where bit h of j is clear, else v[j^h] - v[j]:
 * both computed exactly as the reference's add and subtract, then picked. */
static inline vf vf_butterfly(vf v, uint32_t h)
{
    vf p;
    uint32x4_t upper;
    switch (h) {
    case 1:
        p = (vf){ vrev64q_f32(v.lo), vrev64q_f32(v.hi) };
        upper = vreinterpretq_u32_u64(vdupq_n_u64(0xffffffff00000000ull));
        break;
    case 2:
        p = (vf){ vextq_f32(v.lo, v.lo, 2), vextq_f32(v.hi, v.hi, 2) };
        upper = vcombine_u32(vdup_n_u32(0), vdup_n_u32(~0u));
        break;
    default: /* 4: the two registers */
        return (vf){ vaddq_f32(v.lo, v.hi), vsubq_f32(v.lo, v.hi) };
    }
    vf sum = vf_add(v, p), dif = vf_sub(p, v);
    return (vf){ vbslq_f32(upper, dif.lo, sum.lo), vbslq_f32(upper, dif.hi, sum.hi) };
}

static inline vf vf_load_f32_bytes(const uint8_t *p)
{
    return (vf){ vreinterpretq_f32_u8(vld1q_u8(p)), vreinterpretq_f32_u8(vld1q_u8(p + 16)) };
}
static inline vf vf_load_f16(const uint8_t *p)
{
    float16x8_t h = vreinterpretq_f16_u8(vld1q_u8(p));
    return (vf){ vcvt_f32_f16(vget_low_f16(h)), vcvt_high_f32_f16(h) };
}
static inline void vf_store_f16(uint8_t *p, vf v)
{
    float16x8_t h = vcvt_high_f16_f32(vcvt_f16_f32(v.lo), v.hi);
    vst1q_u8(p, vreinterpretq_u8_f16(h));
}
static inline vf vf_load_i8(const uint8_t *p)
{
    int16x8_t w = vmovl_s8(vld1_s8((const int8_t *)p));
    return (vf){ vcvtq_f32_s32(vmovl_s16(vget_low_s16(w))), vcvtq_f32_s32(vmovl_high_s16(w)) };
}
/* roundf is fcvtas (to nearest, ties away from zero); |v| <= 127 here. */
static inline void vf_store_i8_round(uint8_t *p, vf v)
{
    int16x8_t w = vcombine_s16(vqmovn_s32(vcvtaq_s32_f32(v.lo)), vqmovn_s32(vcvtaq_s32_f32(v.hi)));
    vst1_s8((int8_t *)p, vqmovn_s16(w));
}

static inline vtab vtab_load(const float *t)
{
    vtab r;
    r.val[0] = vreinterpretq_u8_f32(vld1q_f32(t));
    r.val[1] = vreinterpretq_u8_f32(vld1q_f32(t + 4));
    r.val[2] = vreinterpretq_u8_f32(vld1q_f32(t + 8));
    r.val[3] = vreinterpretq_u8_f32(vld1q_f32(t + 12));
    return r;
}
static inline vtab vtab_scale(vtab t, float s)
{
    for (int i = 0; i < 4; i++)
        t.val[i] = vreinterpretq_u8_f32(vmulq_n_f32(vreinterpretq_f32_u8(t.val[i]), s));
    return t;
}
/* The floats at the low 4 bits of each lane of idx: byte 4k + m of the
 * table for byte m of a lane holding k. */
static inline float32x4_t tab4(vtab t, uint32x4_t idx)
{
    uint32x4_t k = vandq_u32(idx, vdupq_n_u32(15));
    uint32x4_t bytes = vmlaq_n_u32(vdupq_n_u32(0x03020100u), k, 0x04040404u);
    return vreinterpretq_f32_u8(vqtbl4q_u8(t, vreinterpretq_u8_u32(bytes)));
}
static inline vf vtab_lookup(vtab t, vi idx)
{
    return (vf){ tab4(t, vreinterpretq_u32_s32(idx.lo)), tab4(t, vreinterpretq_u32_s32(idx.hi)) };
}
static inline vf vtab_decode(vtab t, const uint8_t *p, uint32_t bits)
{
    const int32_t b = (int32_t)bits;
    const int32x4_t shift_lo = { 0, -b, -2 * b, -3 * b };
    const int32x4_t shift_hi = { -4 * b, -5 * b, -6 * b, -7 * b };
    uint32_t w;
    memcpy(&w, p, sizeof w);
    uint32x4_t x = vdupq_n_u32(w);
    return (vf){ tab4(t, vshlq_u32(x, shift_lo)), tab4(t, vshlq_u32(x, shift_hi)) };
}

static inline vi vi_zero(void) { return (vi){ vdupq_n_s32(0), vdupq_n_s32(0) }; }
static inline vi vi_add_const(vi a, uint32_t c)
{
    return (vi){ vaddq_s32(a.lo, vdupq_n_s32((int32_t)c)), vaddq_s32(a.hi, vdupq_n_s32((int32_t)c)) };
}
static inline vi vi_add_if_ge(vi lo, vf a, vf b, uint32_t step)
{
    int32x4_t s = vdupq_n_s32((int32_t)step);
    return (vi){ vaddq_s32(lo.lo, vandq_s32(vreinterpretq_s32_u32(vcgeq_f32(a.lo, b.lo)), s)),
                 vaddq_s32(lo.hi, vandq_s32(vreinterpretq_s32_u32(vcgeq_f32(a.hi, b.hi)), s)) };
}
/* 8 indices -> one 32-bit word (index j at bit j * bits) -> bits bytes. */
static inline void vi_pack(vi idx, uint32_t bits, uint8_t *out)
{
    const int32_t b = (int32_t)bits;
    const int32x4_t shift_lo = { 0, b, 2 * b, 3 * b }, shift_hi = { 4 * b, 5 * b, 6 * b, 7 * b };
    uint32x4_t s = vorrq_u32(vshlq_u32(vreinterpretq_u32_s32(idx.lo), shift_lo),
                             vshlq_u32(vreinterpretq_u32_s32(idx.hi), shift_hi));
    uint32x2_t t = vorr_u32(vget_low_u32(s), vget_high_u32(s));
    uint32_t word = vget_lane_u32(t, 0) | vget_lane_u32(t, 1);
    memcpy(out, &word, bits);
}

static inline vd8 vd8_zero(void)
{
    vd8 r;
    for (int i = 0; i < 4; i++)
        r.d[i] = vdupq_n_f64(0.0);
    return r;
}
/* x^2 is exact in double, so the fused multiply-add is the reference's add. */
static inline vd8 vd8_add_sq(vd8 s, vf x)
{
    float64x2_t v[4] = { vcvt_f64_f32(vget_low_f32(x.lo)), vcvt_high_f64_f32(x.lo),
                         vcvt_f64_f32(vget_low_f32(x.hi)), vcvt_high_f64_f32(x.hi) };
    for (int i = 0; i < 4; i++)
        s.d[i] = vfmaq_f64(s.d[i], v[i], v[i]);
    return s;
}
static inline vd8 vd8_add(vd8 s, vf x)
{
    s.d[0] = vaddq_f64(s.d[0], vcvt_f64_f32(vget_low_f32(x.lo)));
    s.d[1] = vaddq_f64(s.d[1], vcvt_high_f64_f32(x.lo));
    s.d[2] = vaddq_f64(s.d[2], vcvt_f64_f32(vget_low_f32(x.hi)));
    s.d[3] = vaddq_f64(s.d[3], vcvt_high_f64_f32(x.hi));
    return s;
}
/* cpu_sum8: ((s0 + s4) + (s2 + s6)) + ((s1 + s5) + (s3 + s7)). */
static inline double vd8_tree(vd8 s)
{
    float64x2_t a = vaddq_f64(s.d[0], s.d[2]); /* s0 + s4, s1 + s5 */
    float64x2_t b = vaddq_f64(s.d[1], s.d[3]); /* s2 + s6, s3 + s7 */
    float64x2_t c = vaddq_f64(a, b);
    return vgetq_lane_f64(c, 0) + vgetq_lane_f64(c, 1);
}

/* Attention runs with denormals flushed to zero (FPCR.FZ, bit 24): they
 * lie below 1e-38, far under the outputs' rounding, and some cores take
 * them slowly. The caller's FPCR comes back after. */
static inline uint32_t fp_flush_begin(void)
{
    uint64_t fpcr;
    __asm__ volatile("mrs %0, fpcr" : "=r"(fpcr));
    __asm__ volatile("msr fpcr, %0" : : "r"(fpcr | (1ull << 24)));
    return (uint32_t)fpcr;
}
static inline void fp_flush_end(uint32_t fpcr)
{
    __asm__ volatile("msr fpcr, %0" : : "r"((uint64_t)fpcr));
}

static inline float cpu_half(const uint8_t *p)
{
    return vgetq_lane_f32(vcvt_f32_f16(vreinterpret_f16_u16(vdup_n_u16(load_u16(p)))), 0);
}

#include "simd_kernels.h"
