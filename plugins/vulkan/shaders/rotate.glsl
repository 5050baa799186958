/* SPDX-License-Identifier: MIT */
// The rotation R of turbo groups (turbokv_format.h, TKV_ROTATION_*), applied
// by a whole workgroup to rows held in shared memory. The including shader
// declares `shared float xs[]` (or ROT_LOAD / ROT_STORE) holding n_rows rows
// of head_dim floats (n_rows x head_dim <= TKV_VK_ROWS_ELEMS) and
// calls rotate_rows from uniform control flow (it contains barriers).
//
// WHT: R = D2 H D1 / sqrt(g), R^T = D1 H D2 / sqrt(g) (H symmetric, H H = g I),
// as plugins/cpu/rotate.c computes it: the sign products (exact), then the
// butterflies (a, b) -> (a + b, a - b) of stride 1, 2, 4, .., then
// v * (1/sqrt(g)) * sign. Every value goes through the same float operations
// in the same order as there, so the results are bit for bit the reference's
// (precise: no contraction or reassociation). DENSE: y = Q u, or Q^T u, each
// output one sequential sum in the reference's order.

// The rows live in xs unless the including shader names other storage
// (ROT_LOAD / ROT_STORE of element i).
#ifndef ROT_LOAD
#define ROT_LOAD(i) xs[i]
#define ROT_STORE(i, v) xs[i] = (v)
#endif

// The WHT's butterflies (a, b) -> (a + b, a - b) of stride 1, 2, 4, .. over
// the n values of the rows, each stage followed by a barrier.
void wht_butterflies(uint n, uint head_dim, uvec4 groups)
{
    const uint wg = gl_WorkGroupSize.x, lid = gl_LocalInvocationIndex, half_dim = head_dim / 2u;
    for (uint h = 1u; h < 128u; h <<= 1u) {
        for (uint p = lid; p < n / 2u; p += wg) {
            uint row = p / half_dim, pp = p % half_dim, size, first;
            group_of(groups, 2u * pp, size, first); // group k holds pairs [first/2, (first+g)/2)
            if (h < size) {
                uint local = pp - first / 2u;
                uint j = row * head_dim + first + (local / h) * 2u * h + local % h;
                precise float a = ROT_LOAD(j), b = ROT_LOAD(j + h);
                precise float sum = a + b, difference = a - b;
                ROT_STORE(j, sum);
                ROT_STORE(j + h, difference);
            }
        }
        barrier();
    }
}

// The WHT's factors of the elements e = lid + k * wg (k < ROT_MAXK) of
// n_rows rows: the first sign, 1/sqrt(g), the second sign. A shader that
// reads them ahead of time (wht_factors, before its first wait) has no load
// between the rotation's barriers (wht_rows). For workgroups of
// TKV_VK_WG invocations.
#define ROT_MAXK (TKV_VK_ROWS_ELEMS / TKV_VK_WG)
struct WhtFactors {
    float pre[ROT_MAXK], scale[ROT_MAXK], post[ROT_MAXK];
};

WhtFactors wht_factors(uint n_rows, uint head_dim, uvec4 groups, bool inverse, uint64_t math)
{
    const uint wg = gl_WorkGroupSize.x, lid = gl_LocalInvocationIndex, n = n_rows * head_dim;
    Floats m = Floats(math);
    WhtFactors f;
    for (uint k = 0u; k < ROT_MAXK; k++) {
        f.pre[k] = f.scale[k] = f.post[k] = 0.0;
        const uint e = lid + k * wg;
        if (e < n) {
            uint i = e % head_dim, size, first;
            group_of(groups, i, size, first);
            uint gi = group_index(size);
            f.pre[k] = m.f[sign_at(gi, inverse) + i - first];
            f.scale[k] = m.f[TKV_VK_MATH_INV_SQRT + gi];
            f.post[k] = m.f[sign_at(gi, !inverse) + i - first];
        }
    }
    return f;
}

// R (or R^T) of the rows by the WHT with the factors of wht_factors.
void wht_rows(uint n_rows, uint head_dim, uvec4 groups, WhtFactors f)
{
    const uint wg = gl_WorkGroupSize.x, lid = gl_LocalInvocationIndex, n = n_rows * head_dim;
    for (uint k = 0u; k < ROT_MAXK; k++) {
        const uint e = lid + k * wg;
        if (e < n)
            ROT_STORE(e, ROT_LOAD(e) * f.pre[k]);
    }
    barrier();
    wht_butterflies(n, head_dim, groups);
    for (uint k = 0u; k < ROT_MAXK; k++) {
        const uint e = lid + k * wg;
        if (e < n) {
            precise float y = ROT_LOAD(e) * f.scale[k];
            ROT_STORE(e, y * f.post[k]);
        }
    }
    barrier();
}

void rotate_rows(uint n_rows, uint head_dim, uvec4 groups, uint rotation, bool inverse, uint64_t math)
{
    const uint wg = gl_WorkGroupSize.x, lid = gl_LocalInvocationIndex, n = n_rows * head_dim;
    Floats m = Floats(math);
    if (rotation == TKV_VK_ROT_WHT) {
        for (uint e = lid; e < n; e += wg) {
            uint i = e % head_dim, size, first;
            group_of(groups, i, size, first);
            ROT_STORE(e, ROT_LOAD(e) * m.f[sign_at(group_index(size), inverse) + i - first]);
        }
        barrier();
        wht_butterflies(n, head_dim, groups);
        for (uint e = lid; e < n; e += wg) {
            uint i = e % head_dim, size, first;
            group_of(groups, i, size, first);
            uint gi = group_index(size);
            precise float y = ROT_LOAD(e) * m.f[TKV_VK_MATH_INV_SQRT + gi];
            ROT_STORE(e, y * m.f[sign_at(gi, !inverse) + i - first]);
        }
        barrier();
    } else if (rotation == TKV_VK_ROT_DENSE) {
        // out of place: every output reads its whole group, so all outputs
        // are computed before any is stored
        float out_[TKV_VK_ROWS_ELEMS / TKV_VK_WG];
        for (uint k = 0u, e = lid; e < n; k++, e += wg) {
            uint i = e % head_dim, size, first;
            group_of(groups, i, size, first);
            uint q = dense_at(group_index(size)), li = i - first, in0 = e - li;
            precise float sum = 0.0;
            for (uint j = 0u; j < size; j++)
                sum += m.f[q + (inverse ? j * size + li : li * size + j)] * ROT_LOAD(in0 + j);
            out_[k] = sum;
        }
        barrier();
        for (uint k = 0u, e = lid; e < n; k++, e += wg)
            ROT_STORE(e, out_[k]);
        barrier();
    }
}
