/* SPDX-License-Identifier: MIT */
/*
 * Shared by every kernel of the turbokv-opencl program: floating-point
 * rules, packed-bit access, the group layout of turbo rows and the
 * work-group-wide rotations. The format's scalar rules (fp16, packed
 * indices, nearest centroid, q8_0 rounding, the outliers' order, the
 * summation order) are abi/turbokv_scalar.h, the file the C reference and
 * the Vulkan shaders compile too: embed.py splices it in at its #include.
 *
 * The format's other constants (TKV_TYPE_*, TKV_ROTATION_*, TKV_SCALE_*,
 * group sizes, ...) are -D build options taken from turbokv_format.h by
 * device.c: the kernels carry no copies of them.
 * Device options: TKV_HAS_FP64 (cl_khr_fp64), TKV_DIV_VIA_DOUBLE (the device
 * cannot round float division correctly, fp64 can), TKV_VCPT (value
 * coordinates per work-item of attn_values).
 *
 * Quantization must give the bytes of the cpu reference (plugins/cpu), so
 * its float operations happen in the reference's order with nothing fused:
 * FP_CONTRACT is off for the whole program, and the attention kernels, which
 * only have to agree within a tolerance, ask for fused multiply-adds
 * explicitly with mad().
 */
#pragma OPENCL FP_CONTRACT OFF

/* The work-items that take one row in the row operations (rows.cl's
 * quantize_row and what it calls, rotate_local below): the whole
 * work-group, except in the tensor-core program (-DTKV_TC), whose step 0
 * quantizes a decode step's K row with work-items 0 .. 63 and its V row
 * with 64 .. 127 side by side (tensor.cl); every loop strides by ROW_N, so
 * the same operations in the same order give the same bytes. The
 * attention's own rotations (rotate_rows_local, tc_rotate) use the whole
 * work-group in every program. */
#ifdef TKV_TC
#define ROW_LID (get_local_id(0) % 64u)
#define ROW_N 64u
#else
#define ROW_LID get_local_id(0)
#define ROW_N get_local_size(0)
#endif

#ifdef TKV_HAS_FP64
#pragma OPENCL EXTENSION cl_khr_fp64 : enable
/* The reference sums squares and centroid squares in double. */
typedef double wide_t;
#else
/* Without fp64 the sums run in float: a scale may then differ from the
 * reference's in the last fp16 ulp (plugins/opencl/README.md). */
typedef float wide_t;
#endif

#include "turbokv_scalar.h"

/* x / y correctly rounded, as C computes it. With
 * -cl-fp32-correctly-rounded-divide-sqrt '/' is; otherwise the quotient
 * rounded to double and then to float is the same number (double has more
 * than 2 * 24 + 2 bits, so the double rounding is innocuous). */
#ifdef TKV_DIV_VIA_DOUBLE
#define FDIV(x, y) ((float)((double)(x) / (double)(y)))
#else
#define FDIV(x, y) ((x) / (y))
#endif

inline int type_is_qjl(uint type)
{
    return type == TKV_TYPE_TURBO3_QJL || type == TKV_TYPE_TURBO4_QJL;
}

/* The outlier-split types: a turbo row plus fp16 outliers (turbokv_format.h). */
inline int type_is_outlier(uint type)
{
    return type == TKV_TYPE_TURBO3_OUT || type == TKV_TYPE_TURBO4_OUT;
}

/* Codebook index bits of a turbo type (of the turbo stage for QJL and the
 * outlier-split types), else 0. */
inline uint type_bits(uint type)
{
    switch (type) {
    case TKV_TYPE_TURBO2: return 2u;
    case TKV_TYPE_TURBO3: return 3u;
    case TKV_TYPE_TURBO4: return 4u;
    case TKV_TYPE_TURBO3_QJL: return 2u;
    case TKV_TYPE_TURBO4_QJL: return 3u;
    case TKV_TYPE_TURBO3_OUT: return 3u;
    case TKV_TYPE_TURBO4_OUT: return 4u;
    default: return 0u;
    }
}

inline void store_u16(__global uchar *p, uint v)
{
    p[0] = (uchar)v;
    p[1] = (uchar)(v >> 8);
}

inline uint load_u16(__global const uchar *p) { return (uint)p[0] | (uint)p[1] << 8; }

/* ---- packed bits: rows are byte-addressed and unaligned, so the attention
 * kernels copy them as aligned 32-bit words (cache buffers end with spare
 * words for that, see device.c) and read bits out of word pairs. */

/* n <= 32 bits starting sh bits into the 64-bit little-endian pair lo, hi. */
inline uint bits_of_pair(uint lo, uint hi, uint sh, uint n)
{
    uint v = (uint)(upsample(hi, lo) >> sh);
    return n >= 32u ? v : v & ((1u << n) - 1u);
}

/* A forward reader over words in local memory: one refill per 32 bits. */
typedef struct {
    ulong buf;   /* unread bits, least significant first */
    uint avail;  /* how many of them */
    uint next;   /* next word to load */
} bit_reader;

inline void reader_start(bit_reader *r, __local const uint *w, uint pos)
{
    r->next = pos >> 5;
    r->buf = (ulong)(w[r->next++] >> (pos & 31u));
    r->avail = 32u - (pos & 31u);
}

inline uint reader_take(bit_reader *r, __local const uint *w, uint n)
{
    if (r->avail < n) {
        r->buf |= (ulong)w[r->next++] << r->avail;
        r->avail += 32u;
    }
    uint v = n >= 32u ? (uint)r->buf : (uint)r->buf & ((1u << n) - 1u);
    r->buf >>= n;
    r->avail -= n;
    return v;
}

/* ---- groups of a turbo row (tkv_group_split: TKV_GROUP_MAX-groups, then the
 * binary digits of the rest, largest first). Every group before one at value
 * `first` holds `first` values in all, so its block starts at byte
 * 2 * index + first * bits / 8 of the row. */

typedef struct {
    uint first; /* index of the group's first value in the row */
    uint size;  /* g */
    uint index; /* ordinal of the group in the row */
} group_info;

#define GROUP_REST_MASK (TKV_GROUP_MAX - 1u)

inline uint group_count(uint head_dim)
{
    return head_dim / TKV_GROUP_MAX + popcount(head_dim & GROUP_REST_MASK);
}

/* The group holding value e of the row. */
inline group_info group_of_value(uint head_dim, uint e)
{
    group_info g;
    uint full = head_dim & ~GROUP_REST_MASK;
    if (e < full) {
        g.index = e / TKV_GROUP_MAX;
        g.first = e & ~GROUP_REST_MASK;
        g.size = TKV_GROUP_MAX;
        return g;
    }
    uint rest = head_dim - full, first = full, size = TKV_GROUP_MAX >> 1;
    for (; size > TKV_GROUP_MIN; size >>= 1)
        if (rest & size) {
            if (e < first + size)
                break;
            first += size;
        }
    g.first = first;
    g.size = size;
    g.index = full / TKV_GROUP_MAX + popcount(first - full);
    return g;
}

/* Group k of the row (k < group_count). */
inline group_info group_by_index(uint head_dim, uint k)
{
    uint full = head_dim & ~GROUP_REST_MASK;
    if (k < full / TKV_GROUP_MAX)
        return group_of_value(head_dim, k * TKV_GROUP_MAX);
    uint rest = head_dim - full, first = full, seen = full / TKV_GROUP_MAX,
         size = TKV_GROUP_MAX >> 1;
    for (; size > TKV_GROUP_MIN; size >>= 1)
        if (rest & size) {
            if (seen == k)
                break;
            seen++;
            first += size;
        }
    return group_of_value(head_dim, first);
}

/* The size of the group that starts at value first: the largest power of
 * two in what is left, up to TKV_GROUP_MAX (walks a row group by group). */
inline uint group_size_at(uint head_dim, uint first)
{
    return min(TKV_GROUP_MAX, 1u << (31u - clz(head_dim - first)));
}

/* Table index of a group size: TKV_GROUP_MIN -> 0, 2 * TKV_GROUP_MIN -> 1, ... */
inline uint group_table(uint size) { return clz(TKV_GROUP_MIN) - clz(size); }

/* Offset of a field of the device tables (tables.h). */
inline uint tab_offset(__global const float *tab, uint size, uint field)
{
    return ((__global const uint *)tab)[group_table(size) * TKV_TAB_FIELDS + field];
}

/* Bytes of the turbo stage of a row: 2 per group plus the packed indices
 * (where the QJL residuals and the outliers begin). */
inline uint turbo_row_bytes(uint head_dim, uint bits)
{
    return 2u * group_count(head_dim) + head_dim * bits / 8u;
}

/* ---- rotations, by the whole work-group on local memory: v <- R v group by
 * group, or R^T v when inverse (rotate.c of the cpu plugin); v complete
 * (written before a barrier). WHT is
 * D2 H D1 / sqrt(g) with the butterflies of stride 1, 2, 4, .. in fp32; R^T
 * swaps the sign vectors. DENSE is Q, R^T = Q^T. tmp: head_dim floats. */
/* x / d for x < 2^24 (and a quotient far below it): from a float estimate
 * corrected by one, since an integer division costs tens of instructions. */
inline uint quot(uint x, uint d, float inv_d)
{
    uint r = (uint)((float)x * inv_d);
    r -= r * d > x;
    r += (r + 1u) * d <= x;
    return r;
}

/* H of the WHT on every group of the count / head_dim rows at v (row r at
 * v + r head_dim), by work-items lid of n (the caller's: the work-group, or
 * ROW_LID of ROW_N): the butterflies of stride 1, 2, 4, .. in fp32, a
 * barrier after each, passed whatever count is (0: none of the work; PoCL
 * need not replicate what follows); v complete on entry and on return */
void wht_butterflies(__local float *v, uint count, uint head_dim, uint lid, uint n)
{
    const float inv_hd = 1.0f / (float)head_dim;
    for (uint h = 1u; h < TKV_GROUP_MAX; h <<= 1) {
        for (uint k = lid; k < count; k += n) {
            uint e = k - quot(k, head_dim, inv_hd) * head_dim;
            group_info g = group_of_value(head_dim, e);
            if (h < g.size && !((e - g.first) & h)) {
                float a = v[k], b = v[k + h];
                v[k] = a + b;
                v[k + h] = a - b;
            }
        }
        barrier(CLK_LOCAL_MEM_FENCE);
    }
}

void rotate_local(__local float *v, __local float *tmp, uint head_dim, uint rotation, int inverse,
                  __global const float *tab)
{
    const uint lid = ROW_LID, n = ROW_N;
    if (rotation == TKV_ROTATION_WHT) {
        for (uint e = lid; e < head_dim; e += n) {
            group_info g = group_of_value(head_dim, e);
            v[e] *=
                tab[tab_offset(tab, g.size, inverse ? TKV_TAB_SIGN2 : TKV_TAB_SIGN1) + e - g.first];
        }
        barrier(CLK_LOCAL_MEM_FENCE);
        wht_butterflies(v, head_dim, head_dim, lid, n);
        for (uint e = lid; e < head_dim; e += n) {
            group_info g = group_of_value(head_dim, e);
            float inv_sqrt = tab[tab_offset(tab, g.size, TKV_TAB_INV_SQRT)];
            float post =
                tab[tab_offset(tab, g.size, inverse ? TKV_TAB_SIGN1 : TKV_TAB_SIGN2) + e - g.first];
            v[e] = v[e] * inv_sqrt * post;
        }
        barrier(CLK_LOCAL_MEM_FENCE);
    } else if (rotation == TKV_ROTATION_DENSE) {
        for (uint e = lid; e < head_dim; e += n)
            tmp[e] = v[e];
        barrier(CLK_LOCAL_MEM_FENCE);
        for (uint e = lid; e < head_dim; e += n) {
            group_info g = group_of_value(head_dim, e);
            __global const float *q = tab + tab_offset(tab, g.size, TKV_TAB_DENSE);
            __local const float *in = tmp + g.first;
            uint i = e - g.first;
            float sum = 0.0f;
            if (inverse)
                for (uint j = 0; j < g.size; j++)
                    sum += q[j * g.size + i] * in[j];
            else
                for (uint j = 0; j < g.size; j++)
                    sum += q[i * g.size + j] * in[j];
            v[e] = sum;
        }
        barrier(CLK_LOCAL_MEM_FENCE);
    }
}

/* Tree sum of n values of a local array into a[0], by the whole work-group
 * (any n up to the work-group size); a[lid] written before the call. */
#define LOCAL_SUM(name, T)                                                     \
    void name(__local T *a, uint n)                                            \
    {                                                                          \
        const uint lid = get_local_id(0);                                      \
        uint span = 1u;                                                        \
        while (span < n)                                                       \
            span <<= 1;                                                        \
        for (span >>= 1; span > 0u; span >>= 1) {                              \
            barrier(CLK_LOCAL_MEM_FENCE);                                      \
            if (lid < span && lid + span < n)                                  \
                a[lid] += a[lid + span];                                       \
        }                                                                      \
        barrier(CLK_LOCAL_MEM_FENCE);                                          \
    }
LOCAL_SUM(local_sum_float, float)
LOCAL_SUM(local_sum_uint, uint)
