/* SPDX-License-Identifier: MIT */

/* Left out of the attention programs built per configuration (device.c,
 * ocl_decode_kernels): they need only attention.cl. The tensor-core
 * program (-DTKV_TC, also specialized for head_dim 128) keeps the row
 * quantization, which its kernels run for a decode step's new rows (ABI
 * 2.7's append_attention, tensor.cl), but not the kernels. */
#if !defined(TKV_SPEC_HEAD_DIM) || defined(TKV_TC)
/*
 * Rows in and out of a cache buffer: quantize_rows (the quantize_append op)
 * and dequantize_rows (the dequantize op). One work-group per row; the row
 * lives in local memory while the work-group takes it through the steps of
 * the cpu reference (plugins/cpu/rows.c, qjl.c, rotate.c) in the same float
 * order, so the stored bytes are the reference's.
 */

/* Index i of a packed little-endian bit stream (tkv_unpack_index). */
inline uint unpack_index(__global const uchar *p, uint i, uint bits)
{
    uint bit = tkv_index_bit(i, bits), byte = bit >> 3, shift = bit & 7u;
    uint w = p[byte];
    if (shift + bits > 8u)
        w |= (uint)p[byte + 1] << 8;
    return tkv_bits_at(w, shift, bits);
}

/* The TKV_NORM_LANES (8) running sums s[0..7] added by TKV_SUM8. */
#define SUM8_OF(s) TKV_SUM8(s[0], s[1], s[2], s[3], s[4], s[5], s[6], s[7])

/* What one work-group's row quantization keeps in local memory
 * (quantize_row): the row x, scratch y, r and idx (head_dim each), per
 * group norm, norm_q and shat, and copies of the global tables the encode
 * reads (encode_tables). r comes first: turbo_encode_row sums doubles in
 * it, and the struct is 8-byte aligned. */
#define ENC_BOUND 1u                                /* codes: 1/sqrt(g) at 0, then the boundaries */
#define ENC_CSQ (ENC_BOUND + TKV_TAB_MAX_LEVELS - 1u) /* then the squared centroids */
#define ENC_FLOATS (ENC_CSQ + TKV_TAB_MAX_LEVELS)   /* floats a group size */
#ifdef TKV_SPEC_HEAD_DIM
#define ROW_DIM TKV_SPEC_HEAD_DIM /* the tensor-core program: its one head_dim */
#else
#define ROW_DIM TKV_HEAD_DIM_MAX
#endif
typedef struct {
    float r[ROW_DIM], x[ROW_DIM], y[ROW_DIM];
    float codes[TKV_N_GROUP_SIZES * ENC_FLOATS]; /* per group size (group_table) */
    float norm[TKV_MAX_GROUPS], norm_q[TKV_MAX_GROUPS], shat[TKV_MAX_GROUPS];
    int renorm;
    uchar idx[ROW_DIM]; /* 4-byte aligned (outlier_split_row reads its flags 4 at a time) */
    /* the WHT's D1, D2 of each value: +-1, exact as chars (4 KB less local
     * memory a work-group than floats, at head_dim 1024) */
    char sign1[ROW_DIM], sign2[ROW_DIM];
} __attribute__((aligned(8))) row_scratch;

/* The global tables a turbo row's encode reads, copied into s (for bits
 * and the rotation: the WHT's signs of every value, and for every group
 * size 1/sqrt(g), the boundaries and the squared centroids). Called while
 * the row itself is being loaded, before the same barrier: the header
 * offset and then the value are two dependent global reads, which then
 * overlap the row's own read instead of following one another through the
 * encode (a decode token's append is a chain of such steps; session 24). */
inline void encode_tables(__global const float *tab, uint head_dim, uint bits, uint rotation,
                          __local row_scratch *s)
{
    const uint lid = ROW_LID, n = ROW_N;
    const uint cb = 3u * (bits - TKV_TURBO_BITS_MIN), levels = 1u << bits;
    if (rotation == TKV_ROTATION_WHT)
        for (uint e = lid; e < head_dim; e += n) {
            group_info g = group_of_value(head_dim, e);
            s->sign1[e] = (char)tab[tab_offset(tab, g.size, TKV_TAB_SIGN1) + e - g.first];
            s->sign2[e] = (char)tab[tab_offset(tab, g.size, TKV_TAB_SIGN2) + e - g.first];
        }
    for (uint i = lid; i < TKV_N_GROUP_SIZES * ENC_FLOATS; i += n) {
        const uint k = i % ENC_FLOATS;
        __global const uint *off = (__global const uint *)tab + i / ENC_FLOATS * TKV_TAB_FIELDS;
        float v = 0.0f;
        if (k == 0u)
            v = tab[off[TKV_TAB_INV_SQRT]];
        else if (k < ENC_CSQ && k - ENC_BOUND < levels - 1u)
            v = tab[off[TKV_TAB_BOUNDARIES + cb] + k - ENC_BOUND];
        else if (k >= ENC_CSQ && k - ENC_CSQ < levels)
            v = tab[off[TKV_TAB_CENTROID_SQ + cb] + k - ENC_CSQ];
        s->codes[i] = v;
    }
}

/* rotate_local's WHT (v <- D2 H D1 v / sqrt(g), same fp32 steps) from the
 * copies encode_tables made */
void rotate_wht_copied(__local float *v, uint head_dim, __local const row_scratch *s)
{
    const uint lid = ROW_LID, n = ROW_N;
    for (uint e = lid; e < head_dim; e += n)
        v[e] *= (float)s->sign1[e];
    barrier(CLK_LOCAL_MEM_FENCE);
    wht_butterflies(v, head_dim, head_dim, lid, n);
    for (uint e = lid; e < head_dim; e += n) {
        float inv_sqrt = s->codes[group_table(group_of_value(head_dim, e).size) * ENC_FLOATS];
        v[e] = v[e] * inv_sqrt * (float)s->sign2[e];
    }
    barrier(CLK_LOCAL_MEM_FENCE);
}

/* R v of turbo_encode_row */
inline void encode_rotate(__local float *v, uint head_dim, uint rotation,
                          __global const float *tab, __local row_scratch *s)
{
    if (rotation == TKV_ROTATION_WHT)
        rotate_wht_copied(v, head_dim, s);
    else
        rotate_local(v, s->r, head_dim, rotation, 0, tab);
}

/* TurboQuant_mse of every group (paper, Algorithm 1), then for QJL types the
 * 1-bit sketch of the residual (Algorithm 2): turbo_encode_group and
 * encode_residual of the reference, spread over the work-group. s->x holds
 * the sanitized row and s->sign1 .. codes the tables (encode_tables); the
 * rest of s is scratch.
 * The sums in double keep the reference's order (8 running sums a group,
 * TKV_SUM8): work-item 8 k + j sums lane j of group k, and each value's
 * squared centroid is read from the table by its own work-item, into r,
 * before one work-item a group adds them (a decode token's append is a
 * chain of dependent steps: one global round trip, not sixteen, there). */
void turbo_encode_row(__global uchar *out, uint head_dim, uint type, uint rotation,
                      uint scale_mode, __global const float *tab, __local row_scratch *s)
{
    __local const float *x = s->x;
    __local float *y = s->y, *r = s->r, *norm = s->norm, *norm_q = s->norm_q, *shat = s->shat;
    __local uchar *idx = s->idx;
    __local int *renorm = &s->renorm;
    const uint lid = ROW_LID, n = ROW_N;
    const uint bits = type_bits(type), n_groups = group_count(head_dim);
    const uint cb = 3u * (bits - TKV_TURBO_BITS_MIN);

    /* n = ||x|| summed in double (wide_t) as 8 running sums, rounded once:
     * lane j of group k by work-item 8 k + j (into r, free until the
     * rotation), then the lanes added by work-item k */
    __local wide_t *lanes = (__local wide_t *)r;
    for (uint kj = lid; kj < n_groups * TKV_NORM_LANES; kj += n) {
        const uint k = kj / TKV_NORM_LANES, j = kj % TKV_NORM_LANES;
        group_info g = group_by_index(head_dim, k);
        wide_t sq = 0;
        for (uint i = 0; i < g.size; i += TKV_NORM_LANES)
            sq += (wide_t)x[g.first + i + j] * x[g.first + i + j];
        lanes[kj] = sq;
    }
    if (lid == 0u)
        *renorm = 0;
    barrier(CLK_LOCAL_MEM_FENCE);
    for (uint k = lid; k < n_groups; k += n) {
        __local const wide_t *sq = lanes + k * TKV_NORM_LANES;
        norm[k] = (float)sqrt(SUM8_OF(sq));
    }
    barrier(CLK_LOCAL_MEM_FENCE);
    for (uint e = lid; e < head_dim; e += n) {
        float nk = norm[group_of_value(head_dim, e).index];
        y[e] = nk > 0.0f ? FDIV(x[e], nk) : 0.0f;
    }
    barrier(CLK_LOCAL_MEM_FENCE);
    encode_rotate(y, head_dim, rotation, tab, s);
    /* nearest centroid: how many midpoints lie at or below y (ties go up);
     * its square into r for the scale's sum */
    for (uint e = lid; e < head_dim; e += n) {
        group_info g = group_of_value(head_dim, e);
        uint id = 0u;
        if (norm[g.index] > 0.0f) {
            __local const float *c = s->codes + group_table(g.size) * ENC_FLOATS;
            for (uint k = 0; k + 1u < (1u << bits); k++)
                id += tkv_centroid_step(y[e], c[ENC_BOUND + k]);
            r[e] = c[ENC_CSQ + id];
        }
        idx[e] = (uchar)id;
    }
    barrier(CLK_LOCAL_MEM_FENCE);
    for (uint k = lid; k < n_groups; k += n) {
        group_info g = group_by_index(head_dim, k);
        float nk = norm[k], scale = 0.0f;
        if (nk > 0.0f) {
            wide_t lanes[TKV_NORM_LANES] = { 0, 0, 0, 0, 0, 0, 0, 0 };
            for (uint i = 0; i < g.size; i += TKV_NORM_LANES)
                for (uint j = 0; j < TKV_NORM_LANES; j++)
                    lanes[j] += r[g.first + i + j];
            wide_t csq = SUM8_OF(lanes);
            scale = nk;
            if (scale_mode == TKV_SCALE_NORM_CORRECTED && csq > 0)
                scale = (float)((wide_t)nk / sqrt(csq));
        }
        uint h = tkv_fp16_saturated(scale);
        store_u16(out + 2u * g.index + g.first * bits / 8u, h);
        shat[k] = tkv_fp16_to_float(h);
    }
    /* indices, 8 at a time: 8 * bits bits are exactly `bits` whole bytes */
    for (uint c = lid; c < head_dim / 8u; c += n) {
        uint e0 = 8u * c, w = 0u;
        group_info g = group_of_value(head_dim, e0);
        for (uint i = 0; i < 8u; i++)
            w |= (uint)idx[e0 + i] << tkv_index_bit(i, bits);
        __global uchar *p =
            out + 2u * g.index + g.first * bits / 8u + 2u + (e0 - g.first) * bits / 8u;
        for (uint b = 0; b < bits; b++)
            p[b] = (uchar)(w >> (8u * b));
    }
    if (!type_is_qjl(type))
        return;

    /* QJL: the reference sums this norm again, in one running sum; where
     * that rounds differently, R(x / n) is computed again with it */
    for (uint k = lid; k < n_groups; k += n) {
        group_info g = group_by_index(head_dim, k);
        wide_t sq = 0;
        for (uint i = 0; i < g.size; i++)
            sq += (wide_t)x[g.first + i] * x[g.first + i];
        norm_q[k] = (float)sqrt(sq);
        if (norm_q[k] != norm[k])
            atomic_or(renorm, 1);
    }
    barrier(CLK_LOCAL_MEM_FENCE);
    if (*renorm) {
        for (uint e = lid; e < head_dim; e += n) {
            float nk = norm_q[group_of_value(head_dim, e).index];
            y[e] = nk != 0.0f ? FDIV(x[e], nk) : 0.0f;
        }
        barrier(CLK_LOCAL_MEM_FENCE);
        encode_rotate(y, head_dim, rotation, tab, s);
    }
    /* r = n R(x/n) - s_hat c[idx], against the stored fp16 scale */
    for (uint e = lid; e < head_dim; e += n) {
        group_info g = group_of_value(head_dim, e);
        __global const float *c = tab + tab_offset(tab, g.size, TKV_TAB_CENTROIDS + cb);
        r[e] = norm_q[g.index] * y[e] - shat[g.index] * c[idx[e]];
    }
    barrier(CLK_LOCAL_MEM_FENCE);
    const uint res0 = turbo_row_bytes(head_dim, bits);
    /* gamma = ||r|| in double; a zero group or residual stores gamma 0 and
     * no sign bits (norm_q[k] then flags it for the projections) */
    for (uint k = lid; k < n_groups; k += n) {
        group_info g = group_by_index(head_dim, k);
        uint h = 0u;
        if (norm_q[k] != 0.0f) {
            wide_t gamma_sq = 0;
            for (uint i = 0; i < g.size; i++)
                gamma_sq += (wide_t)r[g.first + i] * r[g.first + i];
            if (gamma_sq != 0)
                h = tkv_fp16_saturated((float)sqrt(gamma_sq));
            else
                norm_q[k] = 0.0f;
        }
        store_u16(out + res0 + 2u * g.index + g.first / 8u, h);
    }
    barrier(CLK_LOCAL_MEM_FENCE);
    /* z_i = sign((S r)_i), the projection summed in double as 4 running sums */
    for (uint e = lid; e < head_dim; e += n) {
        group_info g = group_of_value(head_dim, e);
        uchar z = 0;
        if (norm_q[g.index] != 0.0f) {
            __global const float *s =
                tab + tab_offset(tab, g.size, TKV_TAB_QJL) + (e - g.first) * g.size;
            wide_t lanes[TKV_QJL_LANES] = { 0, 0, 0, 0 };
            for (uint j = 0; j < g.size; j += TKV_QJL_LANES)
                for (uint k = 0; k < TKV_QJL_LANES; k++)
                    lanes[k] += (wide_t)s[j + k] * r[g.first + j + k];
            z = TKV_SUM4(lanes[0], lanes[1], lanes[2], lanes[3]) > 0;
        }
        idx[e] = z;
    }
    barrier(CLK_LOCAL_MEM_FENCE);
    for (uint c = lid; c < head_dim / 8u; c += n) {
        uint e0 = 8u * c, byte = 0u;
        group_info g = group_of_value(head_dim, e0);
        for (uint i = 0; i < 8u; i++)
            byte |= (uint)idx[e0 + i] << tkv_index_bit(i, 1u); /* a sign bit a value */
        out[res0 + 2u * g.index + g.first / 8u + 2u + (e0 - g.first) / 8u] = (uchar)byte;
    }
}

/* The outliers of an outlier-split row (cpu_outlier_split): the
 * tkv_outlier_count(head_dim) values of largest |x|, ties to the lower index
 * (tkv_outlier_select), stored at out in ascending index order (indices,
 * then fp16 values), and zeroed in x for the turbo part. Value e is one of
 * them when fewer than n_o values come before it in the order (|x|
 * descending, index ascending: tkv_outlier_before), a total order on the
 * sanitized (finite) row, |x| compared as its bits (the order of
 * non-negative finite floats, exact whatever the device does with
 * subnormals). Most values stop counting after a few of the row's; the
 * count is checked every 8 values (head_dim is a multiple of 8), whose 8
 * loads are independent: an outlier, which counts through the whole row,
 * then waits for 16 rounds of loads at head_dim 128 instead of 128 (as
 * the Vulkan encoder does). Its place is the number of outliers below its
 * index, the flags summed 4 at a time. flag: head_dim bytes of scratch,
 * 4-byte aligned. */
void outlier_split_row(__local float *x, __global uchar *out, uint head_dim, __local uchar *flag)
{
    const uint lid = ROW_LID, n = ROW_N;
    const uint n_o = tkv_outlier_count(head_dim), ib = tkv_outlier_index_bytes(head_dim);
    for (uint e = lid; e < head_dim; e += n) {
        const uint a = tkv_abs_bits(x[e]);
        uint before = 0u;
        for (uint j0 = 0; j0 < head_dim && before < n_o; j0 += 8u) {
#pragma unroll
            for (uint jj = 0; jj < 8u; jj++)
                before += tkv_outlier_before(tkv_abs_bits(x[j0 + jj]), j0 + jj, a, e) ? 1u : 0u;
        }
        flag[e] = before < n_o;
    }
    barrier(CLK_LOCAL_MEM_FENCE);
    __local const uint *flag4 = (__local const uint *)flag;
    for (uint e = lid; e < head_dim; e += n) {
        if (!flag[e])
            continue;
        uint at = 0u;
        for (uint w = 0; w < e / 4u; w++) /* 4 flags of 0 or 1 a word */
            at += (flag4[w] * 0x01010101u) >> 24;
        for (uint j = e & ~3u; j < e; j++)
            at += flag[j];
        if (ib == 1u)
            out[at] = (uchar)e;
        else
            store_u16(out + 2u * at, e);
        store_u16(out + n_o * ib + 2u * at, tkv_fp16_saturated(x[e]));
    }
    barrier(CLK_LOCAL_MEM_FENCE);
    for (uint e = lid; e < head_dim; e += n)
        if (flag[e])
            x[e] = 0.0f;
    barrier(CLK_LOCAL_MEM_FENCE);
}

/* q8_0 (llama.cpp's quantize_row_q8_0_ref; the rules: turbokv_scalar.h):
 * one work-item per block of 32. */
void q8_0_encode_row(__local const float *x, __global uchar *out, uint head_dim)
{
    const uint lid = ROW_LID, n = ROW_N;
    for (uint blk = lid; blk * TKV_Q8_0_BLOCK < head_dim; blk += n) {
        uint first = blk * TKV_Q8_0_BLOCK, len = tkv_q8_0_block_len(head_dim, first);
        __global uchar *p = out + blk * (2u + TKV_Q8_0_BLOCK);
        float amax = 0.0f;
        for (uint i = 0; i < len; i++)
            amax = fmax(amax, fabs(x[first + i]));
        float d = FDIV(amax, TKV_Q8_0_DIVISOR), id = tkv_q8_0_invertible(d) ? FDIV(1.0f, d) : 0.0f;
        store_u16(p, tkv_fp16_saturated(d));
        for (uint i = 0; i < len; i++)
            p[2u + i] = (uchar)tkv_round_half_away(tkv_q8_0_product(x[first + i], id));
    }
}

/* Byte offset of token pos of head h in a paged pool (tkv_pool_row_offset of
 * turbokv_plugin.h): blocks holds the entries of the sequence's block table
 * from entry block0 on. One division per row, against the work of
 * quantizing or decoding it. */
inline ulong pool_row(__global const uint *blocks, uint block0, uint block_tokens,
                      ulong block_stride, ulong head_stride, uint row_bytes, uint h, uint pos)
{
    const uint b = pos / block_tokens;
    return (ulong)blocks[b - block0] * block_stride + (ulong)h * head_stride +
           (ulong)(pos - b * block_tokens) * row_bytes;
}

/* Row `row` of src (from float src_at on: n_tokens * n_heads rows of
 * head_dim floats, token-major; row t * n_heads + h is token first_pos + t
 * of head h, pool_row) quantized into dst by one work-group, in its local
 * scratch s. Non-finite inputs are stored as 0 (the host counts them). */
inline void quantize_row(__global const float *src, uint src_at, uint row, uint n_heads,
                         uint head_dim, __global uchar *dst, __global const uint *blocks,
                         uint block0, uint first_pos, uint block_tokens, ulong block_stride,
                         ulong head_stride, uint row_bytes, uint type, uint rotation,
                         uint scale_mode, __global const float *tab, __local row_scratch *s)
{
    __local float *x = s->x;
    const uint lid = ROW_LID, n = ROW_N;
    const uint t = row / n_heads, h = row % n_heads;
    __global const float *in = src + src_at + (ulong)row * head_dim;
    __global uchar *out = dst + pool_row(blocks, block0, block_tokens, block_stride, head_stride,
                                         row_bytes, h, first_pos + t);

    for (uint e = lid; e < head_dim; e += n) {
        float v = in[e];
        x[e] = isfinite(v) ? v : 0.0f;
    }
    if (type_bits(type))
        encode_tables(tab, head_dim, type_bits(type), rotation, s);
    barrier(CLK_LOCAL_MEM_FENCE);

    if (type == TKV_TYPE_F32) {
        for (uint e = lid; e < head_dim; e += n) {
            uint u = as_uint(x[e]);
            for (uint b = 0; b < 4u; b++)
                out[4u * e + b] = (uchar)(u >> (8u * b));
        }
    } else if (type == TKV_TYPE_F16) {
        for (uint e = lid; e < head_dim; e += n)
            store_u16(out + 2u * e, tkv_fp16_saturated(x[e]));
    } else if (type == TKV_TYPE_Q8_0) {
        q8_0_encode_row(x, out, head_dim);
    } else {
        if (type_is_outlier(type)) /* the outliers apart, the rest as the turbo row */
            outlier_split_row(x, out + turbo_row_bytes(head_dim, type_bits(type)), head_dim,
                              s->idx);
        turbo_encode_row(out, head_dim, type, rotation, scale_mode, tab, s);
    }
}

#ifndef TKV_SPEC_HEAD_DIM
/* One work-group a row (quantize_row). */
__kernel void quantize_rows(__global const float *src, uint src_at, uint n_heads, uint head_dim,
                            __global uchar *dst, __global const uint *blocks, uint block0,
                            uint first_pos, uint block_tokens, ulong block_stride,
                            ulong head_stride, uint row_bytes, uint type, uint rotation,
                            uint scale_mode, __global const float *tab)
{
    __local row_scratch s;
    quantize_row(src, src_at, get_group_id(0), n_heads, head_dim, dst, blocks, block0, first_pos,
                 block_tokens, block_stride, head_stride, row_bytes, type, rotation, scale_mode, tab,
                 &s);
}

/* The keys' and values' rows of one append in one launch (the plugin's
 * quantize_append_pair, ABI 2.6): work-groups 0 .. n_rows - 1 take the
 * keys' rows (ks from k_at, into kdst), the next n_rows the values' (vs
 * from v_at, into vdst), with the same tokens, heads and block-table
 * entries; each pool its own strides, row bytes, type, rotation and scale
 * mode (k_fmt, v_fmt: type, rotation, scale_mode). */
__kernel void quantize_pair_rows(__global const float *ks, uint k_at, __global const float *vs,
                                 uint v_at, uint n_rows, uint n_heads, uint head_dim,
                                 __global uchar *kdst, __global uchar *vdst,
                                 __global const uint *blocks, uint block0, uint first_pos,
                                 uint block_tokens, ulong k_block_stride, ulong k_head_stride,
                                 uint k_row_bytes, uint4 k_fmt, ulong v_block_stride,
                                 ulong v_head_stride, uint v_row_bytes, uint4 v_fmt,
                                 __global const float *tab)
{
    __local row_scratch s;
    const uint g = get_group_id(0);
    if (g < n_rows)
        quantize_row(ks, k_at, g, n_heads, head_dim, kdst, blocks, block0, first_pos,
                     block_tokens, k_block_stride, k_head_stride, k_row_bytes, k_fmt.x, k_fmt.y,
                     k_fmt.z, tab, &s);
    else
        quantize_row(vs, v_at, g - n_rows, n_heads, head_dim, vdst, blocks, block0, first_pos,
                     block_tokens, v_block_stride, v_head_stride, v_row_bytes, v_fmt.x, v_fmt.y,
                     v_fmt.z, tab, &s);
}

/*
 * Rows of tokens first_pos .. of n_heads heads (pool_row) into dst as
 * floats in the original domain, [token][head][head_dim], one row per
 * work-group: each row accumulated once with weight 1 into zeros, as the
 * reference's axpy does it (1 * v + 0 is v, -0 read as +0), then rotated
 * back (R^T) for turbo types.
 */
__kernel void dequantize_rows(__global const uchar *buf, __global const uint *blocks,
                              uint block0, uint first_pos, uint n_heads, uint block_tokens,
                              ulong block_stride, ulong head_stride, uint row_bytes,
                              uint head_dim, uint type, uint rotation,
                              __global const float *tab, __global float *dst)
{
    __local float v[TKV_HEAD_DIM_MAX], tmp[TKV_HEAD_DIM_MAX];
    const uint row = get_group_id(0), lid = get_local_id(0), n = get_local_size(0);
    const uint t = row / n_heads, h = row % n_heads;
    __global const uchar *p = buf + pool_row(blocks, block0, block_tokens, block_stride,
                                             head_stride, row_bytes, h, first_pos + t);
    const uint bits = type_bits(type);
    const float w = 1.0f;

    for (uint e = lid; e < head_dim; e += n) {
        float acc = 0.0f;
        if (type == TKV_TYPE_F32) {
            uint u = (uint)p[4u * e] | (uint)p[4u * e + 1u] << 8 | (uint)p[4u * e + 2u] << 16 |
                     (uint)p[4u * e + 3u] << 24;
            acc += w * as_float(u);
        } else if (type == TKV_TYPE_F16) {
            acc += w * tkv_fp16_to_float(load_u16(p + 2u * e));
        } else if (type == TKV_TYPE_Q8_0) {
            __global const uchar *blk = p + e / TKV_Q8_0_BLOCK * (2u + TKV_Q8_0_BLOCK);
            float wd = w * tkv_fp16_to_float(load_u16(blk));
            acc += wd * (float)(char)blk[2u + e % TKV_Q8_0_BLOCK];
        } else {
            group_info g = group_of_value(head_dim, e);
            __global const uchar *blk = p + 2u * g.index + g.first * bits / 8u;
            __global const float *c =
                tab + tab_offset(tab, g.size, TKV_TAB_CENTROIDS + 3u * (bits - TKV_TURBO_BITS_MIN));
            float ws = w * tkv_fp16_to_float(load_u16(blk));
            acc += ws * c[unpack_index(blk + 2, e - g.first, bits)];
        }
        v[e] = acc;
    }
    if (type_is_qjl(type)) {
        /* w scale gamma S^T z, in the row order of S (qjl_axpy) */
        const uint res0 = turbo_row_bytes(head_dim, bits);
        for (uint e = lid; e < head_dim; e += n) {
            group_info g = group_of_value(head_dim, e);
            __global const uchar *res = p + res0 + 2u * g.index + g.first / 8u;
            float weight = w * tab[tab_offset(tab, g.size, TKV_TAB_QJL_SCALE)] *
                           tkv_fp16_to_float(load_u16(res));
            if (weight == 0.0f)
                continue;
            __global const float *s = tab + tab_offset(tab, g.size, TKV_TAB_QJL) + (e - g.first);
            float acc = v[e];
            for (uint i = 0; i < g.size; i++) {
                float wz = (res[2u + i / 8u] >> (i % 8u)) & 1u ? weight : -weight;
                acc += wz * s[i * g.size];
            }
            v[e] = acc;
        }
    }
    barrier(CLK_LOCAL_MEM_FENCE);
    if (bits)
        rotate_local(v, tmp, head_dim, rotation, 1, tab);
    if (type_is_outlier(type)) {
        /* the outliers, unrotated, added after the rotation back
         * (cpu_outlier_finish: R^T acc + plain, each times 1) */
        const uint n_o = tkv_outlier_count(head_dim), ib = tkv_outlier_index_bytes(head_dim);
        __global const uchar *o = p + turbo_row_bytes(head_dim, bits);
        for (uint k = lid; k < n_o; k += n) {
            uint i = ib == 1u ? o[k] : load_u16(o + 2u * k);
            v[i] = v[i] * 1.0f + w * tkv_fp16_to_float(load_u16(o + n_o * ib + 2u * k));
        }
        barrier(CLK_LOCAL_MEM_FENCE);
    }
    for (uint e = lid; e < head_dim; e += n)
        dst[(ulong)row * head_dim + e] = v[e];
}

#endif /* !TKV_SPEC_HEAD_DIM: the kernels */
#endif /* !TKV_SPEC_HEAD_DIM || TKV_TC */
