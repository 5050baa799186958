/* SPDX-License-Identifier: MIT */
/*
 * A llama2.c-format model (Karpathy's llama2.c, legacy version 0 files) whose
 * attention runs on a turbokv cache: the host side of turbokv in miniature.
 * The K and V rows of every new token go into the cache with
 * tkv_cache_append, and attention is tkv_attention on the compressed cache.
 */
#ifndef TKV_TOOLS_LLAMA2_H
#define TKV_TOOLS_LLAMA2_H

#include <stddef.h>
#include <stdint.h>

#include "turbokv.h"

struct llama2_config {
    uint32_t dim;          /* residual stream width */
    uint32_t hidden_dim;   /* FFN width */
    uint32_t n_layers;
    uint32_t n_heads;      /* query heads */
    uint32_t n_kv_heads;   /* K/V heads (GQA when fewer than n_heads) */
    uint32_t vocab_size;
    uint32_t seq_len;      /* context length the model was trained for */
    uint32_t head_dim;     /* dim / n_heads */
    uint32_t kv_dim;       /* n_kv_heads * head_dim */
    int shared_classifier; /* 1: the classifier is the token embedding */
};

struct llama2_model {
    struct llama2_config cfg;
    /* Weights, row-major, [out][in] for every matrix (views into the mapped file). */
    const float *token_embedding; /* [vocab][dim] */
    const float *rms_att;         /* [layers][dim] */
    const float *wq;              /* [layers][dim][dim] */
    const float *wk;              /* [layers][kv_dim][dim] */
    const float *wv;              /* [layers][kv_dim][dim] */
    const float *wo;              /* [layers][dim][dim] */
    const float *rms_ffn;         /* [layers][dim] */
    const float *w1;              /* [layers][hidden][dim] */
    const float *w2;              /* [layers][dim][hidden] */
    const float *w3;              /* [layers][hidden][dim] */
    const float *rms_final;       /* [dim] */
    const float *wcls;            /* [vocab][dim] */
    void *map;
    size_t map_size;
};

/* Maps and validates a model file: a regular file whose header fields are
 * each in range and whose size is exactly what the header implies (checked
 * before it is mapped). Returns 0, or -1 with a message naming the file and
 * the problem in err. */
int llama2_open(struct llama2_model *m, const char *path, char *err, size_t err_size);
void llama2_close(struct llama2_model *m);

/* Cache parameters for this model: its layers, heads and head_dim, with
 * capacity tokens for each of n_seqs sequences and the given K/V types
 * (TKV_TYPE_FROM_CONFIG lets the library's configuration decide). */
struct tkv_cache_params llama2_cache_params(const struct llama2_model *m, uint32_t capacity,
                                            uint32_t n_seqs, uint32_t k_type, uint32_t v_type);

/* Activations for up to max_rows token rows per forward call (a prompt, or
 * one new token of each of several sequences). */
struct llama2_state {
    uint32_t max_rows;
    float *x, *xb, *xb2, *q, *k, *v, *att, *hb, *hb2;
    uint32_t *pos;             /* [max_rows] first position of each sequence in a call */
    uint64_t rows_total;       /* sparse-V counters summed over all attention calls */
    uint64_t rows_skipped;
    char error[512];           /* why the last llama2_forward failed */
    /* Optional (studies of K/V storage, tools/keystudy.c): called with each
     * layer's new rows before they are appended, k and v [n_seqs][n_tokens]
     * [n_kv_heads][head_dim], positions first_pos... of the first
     * sequence; it may change them in place. NULL: no call. */
    void (*transform)(void *arg, uint32_t layer, uint32_t first_pos, uint32_t n_rows, float *k, float *v);
    void *transform_arg;
};

int llama2_state_init(struct llama2_state *s, const struct llama2_model *m, uint32_t max_rows);
void llama2_state_free(struct llama2_state *s);

/* Runs n_tokens new tokens of each of n_seqs sequences through the model:
 * tokens is [n_seqs][n_tokens]; sequence seq_ids[i] continues after the
 * tokens its cache already holds (its position is tkv_cache_length of layer
 * 0). Writes logits [n_seqs][n_logits][vocab] for the last n_logits tokens
 * of each sequence (n_logits <= n_tokens; logits may be NULL when 0).
 * Returns 0, or -1 with s->error set; after a failure the caches of these
 * sequences may hold the new tokens in some layers only: clear them. */
int llama2_forward(const struct llama2_model *m, struct llama2_state *s, tkv_cache *cache,
                   uint32_t n_seqs, const uint32_t *seq_ids, uint32_t n_tokens, const int32_t *tokens,
                   uint32_t n_logits, float *logits);

/* The index of the largest logit (greedy decoding; the first on ties). */
int32_t llama2_argmax(const float *logits, uint32_t n);

#endif
