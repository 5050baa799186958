/* SPDX-License-Identifier: MIT */
/*
 * An inference engine's use of turbokv: a batch of sequences decoding
 * together over a paged, compressed K/V cache, with
 *   - a shared prompt prefix computed once and forked into 4 sequences
 *     (tkv_seq_copy: blocks shared by reference, copied on first write);
 *   - every decode step: per layer, the new token's K (after RoPE) and V of
 *     each sequence appended, then one attention call for the whole batch,
 *     where one sequence prefills a chunk of 4 tokens while the others
 *     decode one (tkv_attention_ex: per-sequence query counts);
 *   - speculative decoding on one sequence: 5 draft tokens appended, 3
 *     rejected (tkv_seq_truncate);
 *   - a sequence parked to memory and brought back (tkv_seq_state_*);
 *   - at the end, the best sequence kept (tkv_seq_keep).
 * The "model" is a toy: each layer's q, k, v of a token are fixed
 * functions of (layer, position, token). At the end the engine rebuilds
 * every surviving sequence from scratch in a second cache and checks that
 * attention agrees: paging, forks and rollbacks must be invisible.
 *
 * Usage: engine [backend]   (prints a summary; exit status 0 when verified)
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <turbokv.h>

#define LAYERS 4
#define KV_HEADS 2
#define Q_HEADS 8 /* GQA 4: query head h reads kv head h / 4 */
#define HEAD_DIM 64
#define CAPACITY 512
#define MAX_SEQS 8
#define PREFIX 40
#define BRANCHES 4
#define STEPS 24

static tkv_context *ctx;

static int check(int rc, const char *what)
{
    if (rc != TKV_OK) {
        fprintf(stderr, "engine: %s: %s (%s)\n", what, tkv_last_error(), tkv_status_name(rc));
        exit(1);
    }
    return rc;
}

/* --- the toy model */

static float hash01(uint32_t a, uint32_t b, uint32_t c, uint32_t d)
{
    uint32_t h = a * 0x9E3779B1u ^ b * 0x85EBCA77u ^ c * 0xC2B2AE3Du ^ d * 0x27D4EB2Fu;
    h ^= h >> 15;
    h *= 0x2C1B3C6Du;
    h ^= h >> 12;
    return (h >> 8) / 16777216.0f - 0.5f;
}

/* RoPE (NeoX pairing: i and i + d/2), freq_base 10000: the cache stores keys
 * after it, exactly as attention sees them. */
static void rope(float *x, uint32_t pos)
{
    for (uint32_t i = 0; i < HEAD_DIM / 2; i++) {
        float theta = (float)pos * powf(10000.0f, -2.0f * (float)i / HEAD_DIM);
        float c = cosf(theta), s = sinf(theta), a = x[i], b = x[i + HEAD_DIM / 2];
        x[i] = a * c - b * s;
        x[i + HEAD_DIM / 2] = a * s + b * c;
    }
}

/* K and V rows [KV_HEADS][HEAD_DIM] of a token at a position in a layer. */
static void token_kv(uint32_t layer, uint32_t pos, uint32_t token, float *k, float *v)
{
    for (uint32_t h = 0; h < KV_HEADS; h++) {
        for (uint32_t i = 0; i < HEAD_DIM; i++) {
            k[h * HEAD_DIM + i] = 3.0f * hash01(layer, token, h, i) + (i == 5 ? 4.0f : 0.0f);
            v[h * HEAD_DIM + i] = hash01(layer + 100, token, h, i);
        }
        rope(k + h * HEAD_DIM, pos);
    }
}

static void token_q(uint32_t layer, uint32_t pos, uint32_t token, float *q)
{
    for (uint32_t h = 0; h < Q_HEADS; h++) {
        for (uint32_t i = 0; i < HEAD_DIM; i++)
            q[h * HEAD_DIM + i] = 2.0f * hash01(layer + 200, token, h, i);
        rope(q + h * HEAD_DIM, pos);
    }
}

/* --- the engine's own bookkeeping: the tokens of each sequence */

struct seq {
    uint32_t tokens[CAPACITY];
    uint32_t len;
    int live;
};

static struct seq seqs[MAX_SEQS];

/* Appends tokens [from, to) of a sequence's history in every layer. */
static void append_tokens(tkv_cache *c, uint32_t id, const struct seq *s, uint32_t from, uint32_t to)
{
    float k[KV_HEADS * HEAD_DIM * 8], v[KV_HEADS * HEAD_DIM * 8];
    for (uint32_t l = 0; l < LAYERS; l++)
        for (uint32_t t = from; t < to; t += 8) {
            uint32_t n = to - t < 8 ? to - t : 8;
            for (uint32_t j = 0; j < n; j++)
                token_kv(l, t + j, s->tokens[t + j], k + j * KV_HEADS * HEAD_DIM, v + j * KV_HEADS * HEAD_DIM);
            check(tkv_cache_append(c, id, l, n, k, v), "append");
        }
}

/* The batch's attention in one layer: the last nq[s] tokens of each listed
 * sequence query the cache. Returns the outputs [sum nq][Q_HEADS][HEAD_DIM]. */
static float *attend(tkv_cache *c, uint32_t layer, uint32_t n, const uint32_t *ids, const uint32_t *nq)
{
    uint32_t total = 0;
    for (uint32_t s = 0; s < n; s++)
        total += nq[s];
    float *q = malloc(sizeof(float) * total * Q_HEADS * HEAD_DIM), *out = malloc(sizeof(float) * total * Q_HEADS * HEAD_DIM);
    for (uint32_t s = 0, row = 0; s < n; s++)
        for (uint32_t i = 0; i < nq[s]; i++, row++) {
            uint32_t pos = seqs[ids[s]].len - nq[s] + i;
            token_q(layer, pos, seqs[ids[s]].tokens[pos], q + (size_t)row * Q_HEADS * HEAD_DIM);
        }
    /* the scale defaults to 1/sqrt(head_dim); a model with another one sets opts.scale */
    struct tkv_attention_options opts = { .struct_size = sizeof opts };
    check(tkv_attention_ex(c, layer, n, ids, nq, Q_HEADS, q, out, &opts), "attention");
    free(q);
    return out;
}

/* The toy "sampler": the next token is a hash of the attention output. */
static uint32_t next_token(const float *out)
{
    float s = 0;
    for (uint32_t i = 0; i < Q_HEADS * HEAD_DIM; i++)
        s += out[i] * (float)(i % 7 + 1);
    return (uint32_t)(fabsf(s) * 1000.0f) % 32000u;
}

int main(int argc, char **argv)
{
    struct tkv_context_options o = { .struct_size = sizeof o, .backend = argc > 1 ? argv[1] : NULL };
    check(tkv_context_open(&o, &ctx), "open");
    struct tkv_cache_params p = {
        .struct_size = sizeof p, .n_layers = LAYERS, .n_kv_heads = KV_HEADS, .head_dim = HEAD_DIM,
        .capacity = CAPACITY, .n_seqs = MAX_SEQS, .k_type = TKV_TYPE_FROM_CONFIG, .v_type = TKV_TYPE_FROM_CONFIG,
        .n_q_heads = Q_HEADS, .block_tokens = 16,
    };
    tkv_cache *cache = NULL;
    check(tkv_cache_create(ctx, &p, &cache), "create");

    /* 1. the shared prompt, prefilled once into sequence 0, forked into 1..3 */
    for (uint32_t t = 0; t < PREFIX; t++)
        seqs[0].tokens[t] = 1000 + t * 7;
    seqs[0].len = PREFIX;
    seqs[0].live = 1;
    append_tokens(cache, 0, &seqs[0], 0, PREFIX);
    for (uint32_t b = 1; b < BRANCHES; b++) {
        check(tkv_seq_copy(cache, 0, b, PREFIX), "fork");
        seqs[b] = seqs[0]; /* the same history */
    }
    struct tkv_cache_bytes bytes = { 0 };
    check(tkv_cache_bytes(cache, &bytes), "bytes");
    printf("prefix of %u tokens forked %u ways: %u blocks in use (one copy of the prefix)\n", PREFIX, BRANCHES,
           bytes.blocks_used);

    /* a late request: sequence 4 arrives with its own 12-token prompt and is
     * prefilled in chunks of 4 alongside the decoding batch */
    struct seq late = { .len = 12, .live = 1 };
    for (uint32_t t = 0; t < 12; t++)
        late.tokens[t] = 500 + t;
    seqs[4].live = 1;

    /* 2. decode steps: the token a branch appends is the one the previous
     * step's last layer chose for it */
    uint32_t pending[BRANCHES];
    void *parked = NULL;
    size_t parked_size = 0;
    for (uint32_t s = 0; s < BRANCHES; s++)
        pending[s] = 7 + s; /* the branches diverge from their first decoded token on */
    for (uint32_t step = 0; step < STEPS; step++) {
        uint32_t ids[MAX_SEQS], nq[MAX_SEQS], n = 0;
        for (uint32_t s = 0; s < BRANCHES; s++) {
            if (!seqs[s].live)
                continue;
            seqs[s].tokens[seqs[s].len] = pending[s];
            append_tokens(cache, s, &seqs[s], seqs[s].len, seqs[s].len + 1);
            seqs[s].len++;
            ids[n] = s;
            nq[n++] = 1;
        }
        uint32_t n_decoding = n;
        if (seqs[4].len < late.len) { /* chunked prefill of the late request */
            uint32_t from = seqs[4].len, to = from + 4;
            memcpy(seqs[4].tokens + from, late.tokens + from, 4 * sizeof late.tokens[0]);
            append_tokens(cache, 4, &seqs[4], from, to);
            seqs[4].len = to;
            ids[n] = 4;
            nq[n++] = 4;
        }
        for (uint32_t l = 0; l < LAYERS; l++) {
            float *out = attend(cache, l, n, ids, nq);
            if (l == LAYERS - 1) /* one output row per decoding branch, in batch order */
                for (uint32_t r = 0; r < n_decoding; r++)
                    pending[ids[r]] = next_token(out + (size_t)r * Q_HEADS * HEAD_DIM);
            free(out);
        }

        /* 3. speculative decoding on sequence 2 at step 10: 5 drafts, 2 accepted */
        if (step == 10) {
            uint32_t at = seqs[2].len;
            for (uint32_t d = 0; d < 5; d++)
                seqs[2].tokens[at + d] = 9000 + d;
            append_tokens(cache, 2, &seqs[2], at, at + 5);
            seqs[2].len += 5;
            uint32_t id = 2, five = 5; /* the target model scores the 5 drafts at once */
            for (uint32_t l = 0; l < LAYERS; l++)
                free(attend(cache, l, 1, &id, &five));
            check(tkv_seq_truncate(cache, 2, at + 2), "rollback");
            seqs[2].len = at + 2;
            pending[2] = 9002;
        }
        /* 4. sequence 3 is parked in host memory after step 12, back for step 17 */
        if (step == 12) {
            check(tkv_seq_state_size(cache, 3, &parked_size), "state size");
            if (!(parked = malloc(parked_size)))
                return 1;
            check(tkv_seq_state_get(cache, 3, parked, parked_size, NULL), "state get");
            check(tkv_seq_remove(cache, 3), "remove");
            seqs[3].live = 0;
        }
        if (step == 16) {
            check(tkv_seq_state_set(cache, 3, parked, parked_size), "state set");
            free(parked);
            seqs[3].live = 1;
        }
    }
    check(tkv_cache_bytes(cache, &bytes), "bytes");
    printf("after %u steps: %u sequences hold %.1f KB of rows (f16: %.1f KB), stored once in %u shared or private "
           "blocks of %u tokens (%.1f KB)\n",
           STEPS, BRANCHES + 1, bytes.used / 1024.0, bytes.used_f16 / 1024.0, bytes.blocks_used, bytes.block_tokens,
           bytes.blocks_bytes / 1024.0);

    /* 5. verification: rebuild every sequence from its token history in a
     * fresh contiguous cache; attention must agree */
    p.block_tokens = CAPACITY;
    tkv_cache *fresh = NULL;
    check(tkv_cache_create(ctx, &p, &fresh), "create fresh");
    double worst = 0;
    for (uint32_t s = 0; s <= BRANCHES; s++) {
        append_tokens(fresh, s, &seqs[s], 0, seqs[s].len);
        uint32_t id = s, one = 1;
        for (uint32_t l = 0; l < LAYERS; l++) {
            float *a = attend(cache, l, 1, &id, &one), *b = attend(fresh, l, 1, &id, &one);
            for (uint32_t i = 0; i < Q_HEADS * HEAD_DIM; i++)
                worst = fmax(worst, fabs((double)a[i] - b[i]) / (1.0 + fabs((double)b[i])));
            free(a);
            free(b);
        }
    }
    /* 6. keep the best beam only */
    check(tkv_seq_keep(cache, 1), "keep");
    check(tkv_cache_bytes(cache, &bytes), "bytes");
    printf("kept sequence 1: %u blocks in use\n", bytes.blocks_used);
    printf("verified against a cache rebuilt from the token histories: worst relative difference %.2g\n", worst);
    tkv_cache_destroy(fresh);
    tkv_cache_destroy(cache);
    tkv_context_close(ctx);
    return worst < 1e-4 ? 0 : 1;
}
