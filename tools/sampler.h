/* SPDX-License-Identifier: MIT */
/*
 * Next-token sampling for `turbokv run`: greedy, or temperature with top-k
 * and top-p (nucleus) truncation, drawn with llama2.c's xorshift64*
 * generator so that a seed gives the same tokens on every run and machine.
 */
#ifndef TKV_TOOLS_SAMPLER_H
#define TKV_TOOLS_SAMPLER_H

#include <stdint.h>

struct sampler_candidate {
    double weight; /* exp((logit - max) / temp), unnormalized */
    int32_t id;
};

struct sampler {
    uint32_t vocab_size;
    float temp;     /* 0: greedy (argmax), top_k and top_p unused */
    float top_p;    /* keep the most probable tokens whose probability reaches top_p; 1: all */
    uint32_t top_k; /* keep the top_k most probable tokens (before top_p); 0: all */
    uint64_t rng;   /* xorshift64* state, never 0 */
    struct sampler_candidate *cand; /* [vocab_size] scratch */
};

/* temp >= 0, top_p in (0, 1], any top_k. Seed 0 stands for a fixed nonzero
 * state (xorshift never leaves 0). Returns 0, or -1 on bad arguments or out
 * of memory. */
int sampler_init(struct sampler *s, uint32_t vocab_size, float temp, float top_p, uint32_t top_k, uint64_t seed);
void sampler_free(struct sampler *s);

/* The next token for these logits ([vocab_size], left unchanged):
 *   temp 0: the argmax;
 *   else weights softmax(logits / temp); sorted by weight (ties: lower id
 *   first), the top_k heaviest are kept, then of those the fewest, heaviest
 *   first, whose share of the kept weight reaches top_p; one uniform draw
 *   from the generator picks among them in proportion to their weight.
 * With top_k 0 and top_p 1 nothing is sorted and the draw walks the
 * vocabulary in id order, as llama2.c's sample_mult does. */
int32_t sampler_next(struct sampler *s, const float *logits);

#endif
