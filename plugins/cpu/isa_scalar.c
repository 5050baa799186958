/* SPDX-License-Identifier: MIT */
/*
 * The portable level: the vocabulary of simd_kernels.h on plain C arrays of
 * 8 floats, built with the compiler's baseline flags. It runs anywhere
 * (little-endian: rows are read as host words) with the blocked,
 * multi-threaded algorithm of the SIMD levels; the compiler turns its
 * fixed-width loops into the baseline vector unit (SSE2, or NEON on Arm,
 * where hand-written kernels would be untestable on the machines turbokv
 * is developed on, so there are none).
 */
#include <math.h>
#include <string.h>

#include "simd.h"

#define LANES 8u
#define ISA_SYMBOL cpu_isa_scalar
#define ISA_NAME "scalar"
#define ISA_NARROWER NULL /* 8 divides every supported head_dim */

typedef struct { float v[8]; } vf;
typedef struct { int32_t v[8]; } vi;
typedef struct { float t[16]; } vtab;
typedef struct { double d[8]; } vd8;

#define LANEWISE(expr)                                                                         \
    vf r_;                                                                                     \
    for (uint32_t i = 0; i < LANES; i++)                                                       \
        r_.v[i] = (expr);                                                                      \
    return r_

static inline vf vf_load(const float *p) { LANEWISE(p[i]); }
static inline void vf_store(float *p, vf v) { memcpy(p, v.v, sizeof v.v); }
static inline vf vf_set1(float x) { LANEWISE(x); }
static inline vf vf_add(vf a, vf b) { LANEWISE(a.v[i] + b.v[i]); }
static inline vf vf_sub(vf a, vf b) { LANEWISE(a.v[i] - b.v[i]); }
static inline vf vf_mul(vf a, vf b) { LANEWISE(a.v[i] * b.v[i]); }
static inline vf vf_div(vf a, vf b) { LANEWISE(a.v[i] / b.v[i]); }
static inline vf vf_min(vf a, vf b) { LANEWISE(a.v[i] < b.v[i] ? a.v[i] : b.v[i]); }
static inline vf vf_max(vf a, vf b) { LANEWISE(a.v[i] > b.v[i] ? a.v[i] : b.v[i]); }
static inline vf vf_abs(vf a) { LANEWISE(fabsf(a.v[i])); }
/* Unfused: only the attention sums use these, within their tolerance. */
static inline vf vf_fma(vf a, vf b, vf c) { LANEWISE(a.v[i] * b.v[i] + c.v[i]); }
static inline vf vf_fnma(vf a, vf b, vf c) { LANEWISE(c.v[i] - a.v[i] * b.v[i]); }
static inline vf vf_round(vf x) { LANEWISE(nearbyintf(x.v[i])); }
static inline vf vf_ldexp(vf p, vf n) { LANEWISE(ldexpf(p.v[i], (int)n.v[i])); }
static inline float vf_hsum(vf a)
{
    float s = 0.0f;
    for (uint32_t i = 0; i < LANES; i++)
        s += a.v[i];
    return s;
}
static inline float vf_hmax(vf a)
{
    float m = a.v[0];
    for (uint32_t i = 1; i < LANES; i++)
        m = a.v[i] > m ? a.v[i] : m;
    return m;
}

static inline uint32_t vf_ge_bits(vf a, float t)
{
    uint32_t bits = 0;
    for (uint32_t i = 0; i < LANES; i++)
        bits |= (uint32_t)(a.v[i] >= t) << i;
    return bits;
}
static inline vf vf_keep_bits(vf a, uint32_t bits) { LANEWISE(bits >> i & 1u ? a.v[i] : 0.0f); }
static inline vf vf_select(uint32_t bits, vf a, vf b) { LANEWISE(bits >> i & 1u ? a.v[i] : b.v[i]); }

#define CPU_ROW_SLOT(r) (r)
static inline vf vf_sum_rows(const vf p[8]) { LANEWISE(vf_hsum(p[i])); }

static inline vf vf_butterfly(vf v, uint32_t h)
{
    LANEWISE(i & h ? v.v[i ^ h] - v.v[i] : v.v[i] + v.v[i ^ h]);
}

static inline vf vf_load_f32_bytes(const uint8_t *p)
{
    vf r;
    memcpy(r.v, p, sizeof r.v);
    return r;
}
static inline vf vf_load_f16(const uint8_t *p) { LANEWISE(tkv_fp16_to_float(load_u16(p + 2 * i))); }
static inline void vf_store_f16(uint8_t *p, vf v)
{
    for (uint32_t i = 0; i < LANES; i++)
        store_u16(p + 2 * i, tkv_fp16_from_float(v.v[i]));
}
static inline vf vf_load_i8(const uint8_t *p) { LANEWISE((float)(int8_t)p[i]); }
static inline void vf_store_i8_round(uint8_t *p, vf v)
{
    for (uint32_t i = 0; i < LANES; i++)
        p[i] = (uint8_t)(int8_t)tkv_round_half_away(v.v[i]);
}

static inline vtab vtab_load(const float *t)
{
    vtab r;
    memcpy(r.t, t, sizeof r.t);
    return r;
}
static inline vtab vtab_scale(vtab t, float s)
{
    for (uint32_t i = 0; i < 16; i++)
        t.t[i] *= s;
    return t;
}
static inline vf vtab_lookup(vtab t, vi idx) { LANEWISE(t.t[idx.v[i] & 15]); }
static inline vf vtab_decode(vtab t, const uint8_t *p, uint32_t bits)
{
    uint32_t w;
    memcpy(&w, p, sizeof w);
    LANEWISE(t.t[w >> (i * bits) & ((1u << bits) - 1u)]);
}

static inline vi vi_zero(void) { return (vi){ { 0 } }; }
static inline vi vi_add_const(vi a, uint32_t c)
{
    for (uint32_t i = 0; i < LANES; i++)
        a.v[i] += (int32_t)c;
    return a;
}
static inline vi vi_add_if_ge(vi lo, vf a, vf b, uint32_t step)
{
    for (uint32_t i = 0; i < LANES; i++)
        lo.v[i] += a.v[i] >= b.v[i] ? (int32_t)step : 0;
    return lo;
}
static inline void vi_pack(vi idx, uint32_t bits, uint8_t *out)
{
    uint32_t word = 0;
    for (uint32_t i = 0; i < LANES; i++)
        word |= (uint32_t)idx.v[i] << (i * bits);
    for (uint32_t b = 0; b < bits; b++)
        out[b] = (uint8_t)(word >> (8 * b));
}

static inline vd8 vd8_zero(void) { return (vd8){ { 0 } }; }
static inline vd8 vd8_add_sq(vd8 s, vf x)
{
    for (uint32_t i = 0; i < 8; i++)
        s.d[i] += (double)x.v[i] * x.v[i];
    return s;
}
static inline vd8 vd8_add(vd8 s, vf x)
{
    for (uint32_t i = 0; i < 8; i++)
        s.d[i] += x.v[i];
    return s;
}
static inline double vd8_tree(vd8 s) { return cpu_sum8(s.d); }

/* Portable C cannot set the flush-to-zero modes: denormals run as they are. */
static inline uint32_t fp_flush_begin(void) { return 0; }
static inline void fp_flush_end(uint32_t state) { (void)state; }

static inline float cpu_half(const uint8_t *p) { return tkv_fp16_to_float(load_u16(p)); }

#include "simd_kernels.h"
