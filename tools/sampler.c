/* SPDX-License-Identifier: MIT */
/*
 * Sampling (see sampler.h).
 */
#include "sampler.h"

#include <math.h>
#include <stdlib.h>

#include "llama2.h"

/* xorshift64* (Vigna 2016), as llama2.c samples: 32 high bits per draw. */
static uint32_t random_u32(uint64_t *state)
{
    *state ^= *state >> 12;
    *state ^= *state << 25;
    *state ^= *state >> 27;
    return (uint32_t)((*state * 0x2545F4914F6CDD1Dull) >> 32);
}

/* Uniform in [0, 1), llama2.c's random_f32. */
static float random_f32(uint64_t *state) { return (float)(random_u32(state) >> 8) / 16777216.0f; }

int sampler_init(struct sampler *s, uint32_t vocab_size, float temp, float top_p, uint32_t top_k, uint64_t seed)
{
    *s = (struct sampler){ 0 };
    if (vocab_size == 0 || !(temp >= 0.0f) || !isfinite(temp) || !(top_p > 0.0f && top_p <= 1.0f))
        return -1;
    s->cand = malloc(vocab_size * sizeof *s->cand);
    if (!s->cand)
        return -1;
    s->vocab_size = vocab_size;
    s->temp = temp;
    s->top_p = top_p;
    s->top_k = top_k >= vocab_size ? 0 : top_k;
    s->rng = seed ? seed : 0x9E3779B97F4A7C15ull;
    return 0;
}

void sampler_free(struct sampler *s)
{
    free(s->cand);
    s->cand = NULL;
}

/* Heavier first; equal weights by id, so the order (and the draw) does not
 * depend on the sort's handling of ties. */
static int heavier_first(const void *pa, const void *pb)
{
    const struct sampler_candidate *a = pa, *b = pb;
    if (a->weight != b->weight)
        return a->weight > b->weight ? -1 : 1;
    return (a->id > b->id) - (a->id < b->id);
}

int32_t sampler_next(struct sampler *s, const float *logits)
{
    const uint32_t n = s->vocab_size;
    int32_t best = llama2_argmax(logits, n);
    if (s->temp == 0.0f)
        return best;
    double max = logits[best], total = 0.0;
    for (uint32_t i = 0; i < n; i++) {
        s->cand[i].weight = exp(((double)logits[i] - max) / s->temp);
        s->cand[i].id = (int32_t)i;
        total += s->cand[i].weight;
    }
    uint32_t keep = n;
    if (s->top_k || s->top_p < 1.0f) {
        qsort(s->cand, n, sizeof *s->cand, heavier_first);
        if (s->top_k)
            keep = s->top_k;
        total = 0.0;
        for (uint32_t i = 0; i < keep; i++)
            total += s->cand[i].weight;
        if (s->top_p < 1.0f) {
            double reach = s->top_p * total, sum = 0.0;
            for (uint32_t i = 0; i < keep; i++) {
                sum += s->cand[i].weight;
                if (sum >= reach) {
                    keep = i + 1;
                    break;
                }
            }
            total = sum;
        }
    }
    double coin = random_f32(&s->rng) * total, acc = 0.0;
    for (uint32_t i = 0; i < keep; i++) {
        acc += s->cand[i].weight;
        if (coin < acc)
            return s->cand[i].id;
    }
    /* the draw fell on the rounding at the very end: the last kept token with
     * weight; NaN weights (NaN logits) compare false everywhere: the argmax */
    for (uint32_t i = keep; i-- > 0;)
        if (s->cand[i].weight > 0.0)
            return s->cand[i].id;
    return best;
}
