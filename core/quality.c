/* SPDX-License-Identifier: MIT */
/*
 * The reference distortion a turbo type should reach (tkv_optimal_mse), for
 * `turbokv eval` and the quality tests to compare measurements against.
 *
 * A random unit vector u of head_dim values split into groups of g_i values
 * has E||u_i||^2 = g_i / head_dim in group i (every coordinate has mean
 * square 1/head_dim). Each group is stored as its norm times a quantized
 * unit vector, so its expected error is ||u_i||^2 D_{g_i} with D_g the
 * per-unit-vector optimum of the g-dimensional codebook (paper, Theorem 1),
 * and the row's is sum_i (g_i / head_dim) D_{g_i}.
 *
 * QJL types add to the (b-1)-bit stage's residual r the sketch
 * x = c ||r|| S^T z, z = sign(S r), S orthogonal, c = 1/(g m) with m = E|t|
 * (turbokv_format.h, "QJL key types"). ||S^T z||^2 = ||z||^2 = g and
 * E<S^T z, r> = sum_i E|<s_i, r>| = g m ||r|| make E<x, r> = ||r||^2 and
 * E||x - r||^2 = ||r||^2 (c^2 g - 1) = ||r||^2 (1/(g m^2) - 1): the type's
 * error is its stage's optimum times that factor (0.48 at g = 8, 0.57 at
 * g = 128), the price of an unbiased inner product.
 */
#include <math.h>

#include "error.h"
#include "tables.h"
#include "turbokv.h"

int tkv_optimal_mse(uint32_t type, uint32_t head_dim, double *mse)
{
    uint32_t groups[TKV_MAX_GROUPS], n = tkv_group_split(head_dim, groups);
    if (!mse)
        return tkv_error(TKV_EINVAL, "tkv_optimal_mse: mse is NULL");
    if (!tkv_type_is_turbo(type))
        return tkv_error(TKV_EINVAL, "tkv_optimal_mse: type %u (%s) is not a turbo type: no codebook optimum",
                         type, tkv_type_name(type) ? tkv_type_name(type) : "unknown");
    if (tkv_type_is_outlier(type))
        return tkv_error(TKV_EINVAL, "tkv_optimal_mse: %s: its error is the turbo stage's optimum on what is left "
                                     "after the largest values, which depends on the data",
                         tkv_type_name(type));
    if (n == 0)
        return tkv_error(TKV_EINVAL, "tkv_optimal_mse: head_dim %u unsupported (multiples of %u up to %u)",
                         head_dim, TKV_GROUP_MIN, TKV_HEAD_DIM_MAX);
    /* the codebooks do not depend on the rotation seed */
    const struct tkv_math *math = tkv_tables_get(TKV_ROTATION_SEED_DEFAULT);
    if (!math)
        return TKV_ENOMEM;
    double sum = 0.0;
    for (uint32_t i = 0; i < n; i++) {
        const struct tkv_group_tables *t = &math->groups[tkv_group_index(groups[i])];
        double d = t->codebook[tkv_type_bits(type) - TKV_TURBO_BITS_MIN].mse, g = groups[i];
        if (tkv_type_is_qjl(type)) {
            /* m = 1 / (g scale), as the tables define the scale */
            double m = 1.0 / (g * math->qjl[tkv_group_index(groups[i])].scale);
            d *= 1.0 / (g * m * m) - 1.0;
        }
        sum += g / head_dim * d;
    }
    *mse = sum;
    return TKV_OK;
}
