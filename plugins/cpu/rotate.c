/* SPDX-License-Identifier: MIT */
/*
 * The rotation R of a turbo group (turbokv_format.h, TKV_ROTATION_*).
 *
 * TurboQuant (arXiv 2504.19874, Algorithm 1) rotates every vector by a random
 * orthogonal matrix so that each coordinate follows the Lemma 1 density the
 * codebooks are built for. WHT is the structured version: the randomized
 * Hadamard transform R = D2 H D1 / sqrt(g) costs O(g log g); H is symmetric
 * with H H = g I, so R^-1 = R^T = D1 H D2 / sqrt(g), the same butterflies
 * with the sign vectors swapped. DENSE is the paper's Haar rotation itself:
 * R = Q, R^-1 = Q^T. ROTOR (RotorQuant) rotates 3 coordinates at a time by
 * a Cl(3,0) rotor: cheap, but it mixes no chunk with another, so a large
 * channel stays in its chunk (docs/keys.md measures what that costs).
 */
#include "cpu.h"

/* v <- post . H (pre . v) / sqrt(g), in fp32, butterflies of stride
 * h = 1, 2, 4, ..: (a, b) -> (a + b, a - b). Sign multiplications are exact,
 * so only the butterflies and the one scaling round. */
static void randomized_hadamard(const float *pre, const float *post, float inv_sqrt, uint32_t g,
                                float *v)
{
    for (uint32_t i = 0; i < g; i++)
        v[i] *= pre[i];
    for (uint32_t h = 1; h < g; h <<= 1)
        for (uint32_t i = 0; i < g; i += 2 * h)
            for (uint32_t j = i; j < i + h; j++) {
                float a = v[j], b = v[j + h];
                v[j] = a + b;
                v[j + h] = a - b;
            }
    for (uint32_t i = 0; i < g; i++)
        v[i] = v[i] * inv_sqrt * post[i];
}

/* v <- Q v, or Q^T v when transposed (Q row-major g x g). */
static void dense_rotate(const float *q, int transposed, uint32_t g, float *v)
{
    float in[TKV_GROUP_MAX];
    for (uint32_t i = 0; i < g; i++)
        in[i] = v[i];
    for (uint32_t i = 0; i < g; i++) {
        float sum = 0.0f;
        for (uint32_t j = 0; j < g; j++)
            sum += (transposed ? q[(size_t)j * g + i] : q[(size_t)i * g + j]) * in[j];
        v[i] = sum;
    }
}

/* RotorQuant: per chunk of 3 the sandwich R v R~ as its 3 x 3 matrix (its
 * transpose to rotate back); a last chunk of 2 uses the top-left 2 x 2 (a
 * planar rotor), a last single value is left as is (turbokv_format.h). */
static void rotor_rotate(const float *m, int transposed, uint32_t g, float *v)
{
    for (uint32_t first = 0; first < g; first += 3, m += 9) {
        uint32_t n = g - first < 3 ? g - first : 3;
        float in[3] = { v[first], n > 1 ? v[first + 1] : 0.0f, n > 2 ? v[first + 2] : 0.0f };
        for (uint32_t i = 0; i < n; i++) {
            float sum = 0.0f;
            for (uint32_t j = 0; j < n; j++)
                sum += (transposed ? m[j * 3 + i] : m[i * 3 + j]) * in[j];
            v[first + i] = sum;
        }
    }
}

void cpu_rotate_group(uint32_t rotation, const struct cpu_group *grp, enum cpu_direction dir,
                      float *v)
{
    const struct tkv_group_tables *t = grp->tables;
    switch (rotation) {
    case TKV_ROTATION_WHT:
        if (dir == CPU_ROTATE)
            randomized_hadamard(t->sign1, t->sign2, grp->inv_sqrt, grp->size, v);
        else
            randomized_hadamard(t->sign2, t->sign1, grp->inv_sqrt, grp->size, v);
        break;
    case TKV_ROTATION_DENSE:
        dense_rotate(t->dense, dir == CPU_UNROTATE, grp->size, v);
        break;
    case TKV_ROTATION_ROTOR:
        rotor_rotate(grp->rotor, dir == CPU_UNROTATE, grp->size, v);
        break;
    default: /* TKV_ROTATION_NONE */
        break;
    }
}

void cpu_rotate_row(const struct cpu_layout *l, enum cpu_direction dir, float *v)
{
    for (uint32_t i = 0; i < l->n_groups; i++)
        cpu_rotate_group(l->rotation, &l->groups[i], dir, v + l->groups[i].first);
}
