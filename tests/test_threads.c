/* SPDX-License-Identifier: MIT */
/*
 * Contexts opened, used and closed from 8 threads at once: plugin discovery
 * (libltdl is not thread-safe; the core serializes it), the codebook tables
 * (computed once, shared), per-context log sinks. Meant for ThreadSanitizer
 * (scripts/sanitize runs it under TSan), and it checks results too: each
 * thread's attention output equals the one computed alone, and each
 * context's log level and callback are its own: the even threads' contexts
 * log at debug (a config file with "log: debug"), the odd threads' at the
 * default level, and only the even threads' callbacks receive lines.
 */
#include <unistd.h>
#include <math.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "turbokv.h"

#define THREADS 8
#define ROUNDS 3
#define HEADS 2
#define DIM 64
#define TOKENS 40

struct job {
    int id;
    int rc;             /* first failure, TKV_OK if none */
    char error[256];
    float out[HEADS * 2 * DIM];
    unsigned log_lines;
};

static float expected[HEADS * 2 * DIM];
static float data_k[TOKENS * HEADS * DIM], data_v[TOKENS * HEADS * DIM], data_q[HEADS * 2 * DIM];
static char debug_config[64];

static void log_fn(void *user, int level, const char *message)
{
    (void)level;
    (void)message;
    struct job *j = user;
    j->log_lines++;
}

static void fill(float *x, size_t n, uint32_t seed)
{
    for (size_t i = 0; i < n; i++) {
        seed = seed * 1664525u + 1013904223u;
        x[i] = (float)(seed >> 8) / 8388608.0f - 1.0f;
    }
}

/* Open, create, append, attend, close; out: the attention output. */
static int work(struct job *j, float *out)
{
    struct tkv_context_options o = { .struct_size = sizeof o, .ignore_env = 1, .backend = "cpu",
                                     .plugin_path = getenv("TURBO_PLUGIN_PATH"), .log_fn = log_fn, .log_user = j,
                                     .config_path = j->id % 2 == 0 ? debug_config : NULL };
    tkv_context *ctx = NULL;
    int rc = tkv_context_open(&o, &ctx);
    if (rc != TKV_OK)
        return rc;
    struct tkv_cache_params p = { .struct_size = sizeof p, .n_layers = 1, .n_kv_heads = HEADS, .head_dim = DIM,
                                  .capacity = TOKENS, .n_seqs = 1, .k_type = TKV_TYPE_TURBO3,
                                  .v_type = TKV_TYPE_TURBO3, .block_tokens = 16 };
    tkv_cache *c = NULL;
    if ((rc = tkv_cache_create(ctx, &p, &c)) == TKV_OK &&
        (rc = tkv_cache_append(c, 0, 0, TOKENS, data_k, data_v)) == TKV_OK) {
        uint32_t seq = 0;
        rc = tkv_attention(c, 0, 1, &seq, 1, HEADS * 2, data_q, out, NULL);
    }
    if (rc != TKV_OK)
        snprintf(j->error, sizeof j->error, "%s", tkv_last_error());
    tkv_cache_destroy(c);
    tkv_context_close(ctx);
    return rc;
}

static void *run(void *arg)
{
    struct job *j = arg;
    for (int r = 0; r < ROUNDS && j->rc == TKV_OK; r++)
        j->rc = work(j, j->out);
    return NULL;
}

static void concurrent_opens(void **state)
{
    (void)state;
    fill(data_k, sizeof data_k / sizeof *data_k, 1);
    fill(data_v, sizeof data_v / sizeof *data_v, 2);
    fill(data_q, sizeof data_q / sizeof *data_q, 3);
    snprintf(debug_config, sizeof debug_config, "/tmp/tkv-test-threads-%d.yaml", (int)getpid());
    FILE *f = fopen(debug_config, "w");
    assert_non_null(f);
    fputs("log: debug\n", f);
    fclose(f);
    struct job alone = { .id = 1 };
    assert_int_equal(work(&alone, expected), TKV_OK);
    assert_int_equal(alone.log_lines, 0);

    struct job jobs[THREADS];
    pthread_t t[THREADS];
    memset(jobs, 0, sizeof jobs);
    for (int i = 0; i < THREADS; i++) {
        jobs[i].id = i;
        assert_int_equal(pthread_create(&t[i], NULL, run, &jobs[i]), 0);
    }
    for (int i = 0; i < THREADS; i++)
        assert_int_equal(pthread_join(t[i], NULL), 0);
    for (int i = 0; i < THREADS; i++) {
        if (jobs[i].rc != TKV_OK)
            fail_msg("thread %d: %s: %s", i, tkv_status_name(jobs[i].rc), jobs[i].error);
        assert_memory_equal(jobs[i].out, expected, sizeof expected);
        if (i % 2 == 0 && jobs[i].log_lines == 0)
            fail_msg("thread %d: its context logs at debug, its callback got no line", i);
        if (i % 2 == 1 && jobs[i].log_lines != 0)
            fail_msg("thread %d: its context logs at the default level, its callback got %u lines", i,
                     jobs[i].log_lines);
    }
    unlink(debug_config);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(concurrent_opens),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
