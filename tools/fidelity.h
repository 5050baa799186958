/* SPDX-License-Identifier: MIT */
/*
 * Fidelity metrics of `turbokv eval` that compare with published KV-cache
 * quantization results: cosine similarity of reconstructed vectors, top-1 /
 * top-5 agreement of the attention argmax with exact attention, and a needle
 * test (planted keys in a long context, retrieved exactly or not).
 * Plain functions on float arrays, so that tests/test_fidelity.c checks
 * them on inputs whose answers are known.
 */
#ifndef TKV_FIDELITY_H
#define TKV_FIDELITY_H

#include <stddef.h>
#include <stdint.h>

/* Sum over rows of cos(x_r, y_r) = <x_r, y_r> / (||x_r|| ||y_r||), rows of
 * dim values; rows where either vector is 0 are skipped. *counted (may be
 * NULL) receives how many rows were summed. */
double fid_cosine_sum(const float *x, const float *y, size_t n_rows, uint32_t dim, size_t *counted);

/* Argmax agreement of one attention row: exact and quant are the n scores
 * of the same query against the exact and the stored keys (the softmax is
 * monotonic, so the argmax of the weights is that of the scores). */
struct fid_topk {
    uint64_t rows;
    uint64_t top1; /* rows whose stored-key argmax is the exact argmax */
    uint64_t top5; /* rows whose exact argmax is among the 5 highest stored-key scores */
};
void fid_topk_add(const double *exact, const double *quant, uint32_t n, struct fid_topk *acc);

/* Index of the largest of n scores (the first one on ties). */
uint32_t fid_argmax(const double *scores, uint32_t n);

/* scores[j] = <q, keys row j> for n rows of dim values, row j at
 * keys + j * stride, in double. */
void fid_scores(const float *keys, size_t stride, uint32_t n, const float *q, uint32_t dim, double *scores);

/* Plants a needle: moves key row pos along q so that its score under q is
 * the largest score of the other rows plus margin times the standard
 * deviation of the scores (scores[] holds <q, row j> for every row and is
 * updated at pos). */
void fid_needle_plant(float *keys, size_t stride, uint32_t n, const float *q, uint32_t dim, uint32_t pos,
                      double margin, double *scores);

#endif
