/* SPDX-License-Identifier: MIT */
/*
 * Fidelity metrics of `turbokv eval` (fidelity.h).
 */
#include <math.h>

#include "fidelity.h"

double fid_cosine_sum(const float *x, const float *y, size_t n_rows, uint32_t dim, size_t *counted)
{
    double sum = 0.0;
    size_t n = 0;
    for (size_t r = 0; r < n_rows; r++) {
        const float *a = x + r * dim, *b = y + r * dim;
        double ab = 0.0, aa = 0.0, bb = 0.0;
        for (uint32_t i = 0; i < dim; i++) {
            ab += (double)a[i] * b[i];
            aa += (double)a[i] * a[i];
            bb += (double)b[i] * b[i];
        }
        if (aa > 0.0 && bb > 0.0) {
            sum += ab / sqrt(aa * bb);
            n++;
        }
    }
    if (counted)
        *counted = n;
    return sum;
}

uint32_t fid_argmax(const double *scores, uint32_t n)
{
    uint32_t best = 0;
    for (uint32_t j = 1; j < n; j++)
        if (scores[j] > scores[best])
            best = j;
    return best;
}

void fid_topk_add(const double *exact, const double *quant, uint32_t n, struct fid_topk *acc)
{
    if (n == 0)
        return;
    uint32_t want = fid_argmax(exact, n), above = 0;
    /* rank of the exact argmax among the stored-key scores: rows that beat
     * it (ties count against it: a stored tie is not a retrieval) */
    for (uint32_t j = 0; j < n; j++)
        if (j != want && quant[j] >= quant[want])
            above++;
    acc->rows++;
    acc->top1 += above == 0;
    acc->top5 += above < 5;
}

void fid_scores(const float *keys, size_t stride, uint32_t n, const float *q, uint32_t dim, double *scores)
{
    for (uint32_t j = 0; j < n; j++) {
        const float *k = keys + (size_t)j * stride;
        double s = 0.0;
        for (uint32_t i = 0; i < dim; i++)
            s += (double)q[i] * k[i];
        scores[j] = s;
    }
}

void fid_needle_plant(float *keys, size_t stride, uint32_t n, const float *q, uint32_t dim, uint32_t pos,
                      double margin, double *scores)
{
    double best = -INFINITY, mean = 0.0, var = 0.0, qq = 0.0;
    for (uint32_t j = 0; j < n; j++) {
        mean += scores[j] / n;
        if (j != pos && scores[j] > best)
            best = scores[j];
    }
    for (uint32_t j = 0; j < n; j++)
        var += (scores[j] - mean) * (scores[j] - mean) / n;
    for (uint32_t i = 0; i < dim; i++)
        qq += (double)q[i] * q[i];
    if (qq == 0.0)
        return;
    /* k += t q moves the score by t ||q||^2 */
    double t = (best + margin * sqrt(var) - scores[pos]) / qq;
    float *k = keys + (size_t)pos * stride;
    for (uint32_t i = 0; i < dim; i++)
        k[i] = (float)(k[i] + t * q[i]);
    fid_scores(k, stride, 1, q, dim, &scores[pos]);
}
