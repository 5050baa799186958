/* SPDX-License-Identifier: MIT */
/*
 * The smallest complete turbokv host: open a context, create a cache,
 * append the K/V rows of 100 tokens, attend with one query token, close.
 * Build: cc minimal.c $(pkg-config --cflags --libs turbokv) -lm
 */
#include <math.h>
#include <stdio.h>

#include <turbokv.h> /* pkg-config adds -I.../include/turbokv */

#define KV_HEADS 2
#define Q_HEADS 8 /* GQA: query head h reads kv head h / (Q_HEADS / KV_HEADS) */
#define HEAD_DIM 128
#define TOKENS 100

int main(void)
{
    static float k[TOKENS][KV_HEADS][HEAD_DIM], v[TOKENS][KV_HEADS][HEAD_DIM];
    static float q[Q_HEADS][HEAD_DIM], out[Q_HEADS][HEAD_DIM];
    for (int t = 0; t < TOKENS; t++) /* keys as the model has them after RoPE */
        for (int h = 0; h < KV_HEADS; h++)
            for (int i = 0; i < HEAD_DIM; i++) {
                k[t][h][i] = sinf(0.1f * (t + 1) * (i + 1) + h);
                v[t][h][i] = cosf(0.07f * t + 0.3f * i - h);
            }
    for (int h = 0; h < Q_HEADS; h++)
        for (int i = 0; i < HEAD_DIM; i++)
            q[h][i] = sinf(0.2f * (i + h));

    tkv_context *ctx = NULL;
    tkv_cache *cache = NULL;
    struct tkv_cache_params p = {
        .struct_size = sizeof p, .n_layers = 1, .n_kv_heads = KV_HEADS, .head_dim = HEAD_DIM,
        .capacity = 4096, .k_type = TKV_TYPE_FROM_CONFIG, .v_type = TKV_TYPE_FROM_CONFIG,
        .n_q_heads = Q_HEADS,
    };
    uint32_t seq = 0;
    if (tkv_context_open(NULL, &ctx) != TKV_OK || tkv_cache_create(ctx, &p, &cache) != TKV_OK ||
        tkv_cache_append(cache, seq, 0, TOKENS, &k[0][0][0], &v[0][0][0]) != TKV_OK ||
        tkv_attention(cache, 0, 1, &seq, 1, Q_HEADS, &q[0][0], &out[0][0], NULL) != TKV_OK) {
        fprintf(stderr, "turbokv: %s\n", tkv_last_error());
        return 1;
    }
    struct tkv_cache_bytes b;
    tkv_cache_bytes(cache, &b);
    printf("backend %s: %u tokens in %llu bytes (f16: %llu); out[0][0] = %.4f\n", tkv_context_backend(ctx), TOKENS,
           (unsigned long long)b.used, (unsigned long long)b.used_f16, out[0][0]);
    tkv_cache_destroy(cache);
    tkv_context_close(ctx);
    return 0;
}
