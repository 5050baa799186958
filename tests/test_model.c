/* SPDX-License-Identifier: MIT */
/*
 * The shipped stories260K model run through the public API, as a host does
 * (tools/llama2.c): with an f32 cache it reproduces the reference figures of
 * models/README.md; compressed schemes stay within measured perplexity
 * bounds; the default scheme's greedy story matches the f32 cache's for
 * exactly the tokens the README says, on every CPU kernel level; a saved
 * and reloaded cache continues exactly like an uninterrupted run on every
 * backend found; batched decode of two sequences equals decoding each
 * alone; bad model, tokenizer and .npy files are refused with a message
 * naming the file and the problem.
 *
 * Model compatibility: a character-level tokenizer without byte fallback
 * and a model of its vocabulary, both written by the test, run end to end.
 * The `turbokv` command: the sampler (top-k, top-p, seeds), the option
 * parser, and the built tool itself (text on stdout and statistics on
 * stderr, one-line option errors, ppl windows, typed info --json).
 *
 * Environment: TKV_MODELS_DIR (models/), TKV_PLUGIN_DIRS or
 * TURBO_PLUGIN_PATH (plugin directories), TKV_TURBOKV (the turbokv
 * executable; default: tools/turbokv next to this test's build directory).
 * TURBO_* configuration is ignored so the defaults tested are the
 * library's own.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>

#include "llama2.h"
#include "npy.h"
#include "sampler.h"
#include "tokenizer.h"
#include "tool.h"
#include "turbokv.h"

#define REFERENCE_STORY "Once upon a time, there was a little girl named Lily. She loved to play outside in the park."
#define REFERENCE_NLL 1.3112
#define PROMPT "Once upon a time, a little dog"

static struct {
    char dir[4096];
    struct llama2_model model;
    struct tokenizer tok;
    struct npy_array tokens, nll;
    const char *plugin_path;
    double f32_ppl;
} g;

static const char *model_file(const char *name, char *buf, size_t size)
{
    snprintf(buf, size, "%s/%s", g.dir, name);
    return buf;
}

static int setup(void **state)
{
    (void)state;
    char err[1024], path[4200];
    const char *dir = getenv("TKV_MODELS_DIR");
    if (!dir) {
        fprintf(stderr, "TKV_MODELS_DIR is not set\n");
        return -1;
    }
    snprintf(g.dir, sizeof g.dir, "%s", dir);
    g.plugin_path = getenv("TKV_PLUGIN_DIRS") ? getenv("TKV_PLUGIN_DIRS") : getenv("TURBO_PLUGIN_PATH");
    if (llama2_open(&g.model, model_file("stories260K.bin", path, sizeof path), err, sizeof err) != 0 ||
        tokenizer_open(&g.tok, model_file("tok512.bin", path, sizeof path), g.model.cfg.vocab_size, err,
                       sizeof err) != 0 ||
        npy_read(model_file("s260k_tokens.npy", path, sizeof path), NPY_INT32, &g.tokens, err, sizeof err) != 0 ||
        npy_read(model_file("s260k_nll.npy", path, sizeof path), NPY_FLOAT32, &g.nll, err, sizeof err) != 0) {
        fprintf(stderr, "%s\n", err);
        return -1;
    }
    if (g.tokens.count != 512 || g.nll.count != 511) {
        fprintf(stderr, "unexpected reference shapes: %llu tokens, %llu NLLs\n",
                (unsigned long long)g.tokens.count, (unsigned long long)g.nll.count);
        return -1;
    }
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    npy_free(&g.tokens);
    npy_free(&g.nll);
    tokenizer_close(&g.tok);
    llama2_close(&g.model);
    return 0;
}

static tkv_context *open_context(const char *backend)
{
    struct tkv_context_options o = {
        .struct_size = sizeof o, .ignore_env = 1, .plugin_path = g.plugin_path, .backend = backend,
    };
    tkv_context *ctx = NULL;
    int rc = tkv_context_open(&o, &ctx);
    if (rc != TKV_OK)
        fail_msg("context on %s: %s (%s)", backend ? backend : "auto", tkv_last_error(), tkv_status_name(rc));
    return ctx;
}

static tkv_cache *make_cache(tkv_context *ctx, uint32_t n_seqs, uint32_t k, uint32_t v)
{
    struct tkv_cache_params p = llama2_cache_params(&g.model, g.model.cfg.seq_len, n_seqs, k, v);
    tkv_cache *c = NULL;
    int rc = tkv_cache_create(ctx, &p, &c);
    if (rc != TKV_OK)
        fail_msg("cache %s/%s: %s", tkv_type_name(k), tkv_type_name(v), tkv_last_error());
    return c;
}

static void forward(struct llama2_state *s, tkv_cache *c, uint32_t seq, uint32_t n, const int32_t *tokens,
                    uint32_t n_logits, float *logits)
{
    if (llama2_forward(&g.model, s, c, 1, &seq, n, tokens, n_logits, logits) != 0)
        fail_msg("%s", s->error);
}


static double nll_of(const float *logits, uint32_t n, int32_t target)
{
    double max = logits[llama2_argmax(logits, n)], sum = 0.0;
    for (uint32_t i = 0; i < n; i++)
        sum += exp(logits[i] - max);
    return log(sum) + max - logits[target];
}

/* Mean NLL of the reference tokens fed one at a time; per-token NLLs to nll if not NULL. */
static double mean_nll(tkv_context *ctx, uint32_t k, uint32_t v, double *nll)
{
    const int32_t *tok = g.tokens.data;
    const uint32_t n = (uint32_t)g.tokens.count, vocab = g.model.cfg.vocab_size;
    struct llama2_state s;
    float *logits = malloc(vocab * sizeof *logits);
    assert_non_null(logits);
    assert_int_equal(llama2_state_init(&s, &g.model, 1), 0);
    tkv_cache *c = make_cache(ctx, 1, k, v);
    double sum = 0.0;
    for (uint32_t t = 0; t + 1 < n; t++) {
        forward(&s, c, 0, 1, &tok[t], 1, logits);
        double x = nll_of(logits, vocab, tok[t + 1]);
        if (nll)
            nll[t] = x;
        sum += x;
    }
    tkv_cache_destroy(c);
    llama2_state_free(&s);
    free(logits);
    return sum / (n - 1);
}

/* Greedy continuation the way `turbokv run` does it: the prompt minus its
 * last token in one call (returned to the caller through before_last, which
 * may replace the cache, e.g. by a save and load), then the last prompt
 * token, then one token at a time. */
typedef tkv_cache *(*cache_hook)(tkv_cache *c, void *user);

static uint32_t greedy(tkv_cache *c, uint32_t seq, const int32_t *prompt, uint32_t n_prompt, uint32_t n_new,
                       int32_t *out, cache_hook before_last, void *user, tkv_cache **final)
{
    const uint32_t vocab = g.model.cfg.vocab_size;
    struct llama2_state s;
    float *logits = malloc(vocab * sizeof *logits);
    assert_non_null(logits);
    assert_int_equal(llama2_state_init(&s, &g.model, n_prompt), 0);
    if (n_prompt > 1)
        forward(&s, c, seq, n_prompt - 1, prompt, 0, NULL);
    if (before_last)
        c = before_last(c, user);
    forward(&s, c, seq, 1, &prompt[n_prompt - 1], 1, logits);
    uint32_t n = 0;
    while (n < n_new) {
        out[n] = llama2_argmax(logits, vocab);
        if (out[n] == TOKENIZER_BOS || out[n] == TOKENIZER_EOS)
            break;
        forward(&s, c, seq, 1, &out[n++], 1, logits);
    }
    llama2_state_free(&s);
    free(logits);
    if (final)
        *final = c;
    return n;
}

static void test_greedy_story_matches_reference(void **state)
{
    (void)state;
    tkv_context *ctx = open_context("cpu");
    tkv_cache *c = make_cache(ctx, 1, TKV_TYPE_F32, TKV_TYPE_F32);
    int32_t bos = TOKENIZER_BOS, out[40];
    uint32_t n = greedy(c, 0, &bos, 1, 40, out, NULL, NULL, NULL);
    char text[1024] = "";
    size_t len = 0;
    for (uint32_t i = 0; i < n; i++) {
        const char *piece;
        size_t pl = tokenizer_decode(&g.tok, i ? out[i - 1] : bos, out[i], &piece);
        assert_true(len + pl < sizeof text);
        memcpy(text + len, piece, pl);
        text[len += pl] = '\0';
    }
    if (strncmp(text, REFERENCE_STORY, strlen(REFERENCE_STORY)) != 0)
        fail_msg("greedy story: \"%s\"", text);
    tkv_cache_destroy(c);
    tkv_context_close(ctx);
}

static void test_tokenizer_matches_reference_tokens(void **state)
{
    (void)state;
    char path[4200];
    FILE *f = fopen(model_file("tinystories_val_head.txt", path, sizeof path), "rb");
    assert_non_null(f);
    char text[8192];
    size_t len = fread(text, 1, sizeof text, f);
    fclose(f);
    /* cut at a story boundary well past 511 tokens, so the cut cannot change them */
    char *cut = strstr(text + 4096, "\n\n");
    assert_non_null(cut);
    int32_t *tokens;
    uint32_t n;
    assert_int_equal(tokenizer_encode(&g.tok, text, (size_t)(cut - text), 1, &tokens, &n, NULL), 0);
    assert_true(len > 4096 && n >= g.tokens.count);
    assert_memory_equal(tokens, g.tokens.data, g.tokens.count * sizeof(int32_t));
    free(tokens);
}

static void test_f32_nll_matches_reference(void **state)
{
    (void)state;
    tkv_context *ctx = open_context("cpu");
    double nll[511];
    double mean = mean_nll(ctx, TKV_TYPE_F32, TKV_TYPE_F32, nll);
    const float *ref = g.nll.data;
    for (uint32_t t = 0; t < 511; t++)
        if (fabs(nll[t] - ref[t]) > 1e-3)
            fail_msg("token %u: NLL %.6f, reference %.6f", t + 1, nll[t], ref[t]);
    if (fabs(mean - REFERENCE_NLL) > 5e-4)
        fail_msg("mean NLL %.5f, reference %.4f", mean, REFERENCE_NLL);
    g.f32_ppl = exp(mean);
    /* f16 storage rounds K and V to 11 significant bits: no visible change */
    double f16 = mean_nll(ctx, TKV_TYPE_F16, TKV_TYPE_F16, NULL);
    if (fabs(f16 - REFERENCE_NLL) > 1e-3)
        fail_msg("f16 cache: mean NLL %.5f, reference %.4f", f16, REFERENCE_NLL);
    tkv_context_close(ctx);
}

/* All 511 predictions in one call: turbokv's causal masking among the new
 * tokens must give each the same logits as token-by-token decode. */
static void test_batched_prefill_matches_reference(void **state)
{
    (void)state;
    const uint32_t vocab = g.model.cfg.vocab_size, n = 511;
    const int32_t *tok = g.tokens.data;
    const float *ref = g.nll.data;
    tkv_context *ctx = open_context("cpu");
    tkv_cache *c = make_cache(ctx, 1, TKV_TYPE_F32, TKV_TYPE_F32);
    struct llama2_state s;
    float *logits = malloc((size_t)n * vocab * sizeof *logits);
    assert_non_null(logits);
    assert_int_equal(llama2_state_init(&s, &g.model, n), 0);
    forward(&s, c, 0, n, tok, n, logits);
    for (uint32_t t = 0; t < n; t++) {
        double x = nll_of(logits + (size_t)t * vocab, vocab, tok[t + 1]);
        if (fabs(x - ref[t]) > 1e-3)
            fail_msg("token %u: NLL %.6f, reference %.6f", t + 1, x, ref[t]);
    }
    llama2_state_free(&s);
    free(logits);
    tkv_cache_destroy(c);
    tkv_context_close(ctx);
}

/* Perplexity bounds, measured on the cpu backend over s260k_tokens (f32
 * PPL 3.7107):
 *   - turbo4 values with exact keys: +0.28%. Values are small (std
 *     0.38-0.73) and errors in them average out: bound +1%.
 *   - the default scheme (q8_0 keys, turbo3 values here): +0.45%: bound +2%.
 *   - turbo4 keys and values: +117%. Not a codebook defect: turbo4 rows
 *     dequantize at relative MSE 0.0055 (the Lloyd-Max optimum for g = 8),
 *     and attention on the compressed cache equals attention on its
 *     dequantized rows to 1e-6. But this model's keys are large (std
 *     3.3-7.0) and head_dim is 8, so a 7% key error moves attention scores
 *     by several nats; real models (head_dim 64-128) concentrate far better.
 *     Bound +150%, and turbo4 must beat turbo3 (+539%). */
static void test_compressed_schemes_within_bounds(void **state)
{
    (void)state;
    tkv_context *ctx = open_context("cpu");
    if (g.f32_ppl == 0.0)
        g.f32_ppl = exp(mean_nll(ctx, TKV_TYPE_F32, TKV_TYPE_F32, NULL));
    const struct {
        const char *what;
        uint32_t k, v;
        double max_delta;
    } cases[] = {
        { "f32 keys, turbo4 values", TKV_TYPE_F32, TKV_TYPE_TURBO4, 0.01 },
        { "default scheme", TKV_TYPE_FROM_CONFIG, TKV_TYPE_FROM_CONFIG, 0.02 },
        { "turbo4 keys and values", TKV_TYPE_TURBO4, TKV_TYPE_TURBO4, 1.50 },
    };
    double turbo4 = 0.0;
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        double ppl = exp(mean_nll(ctx, cases[i].k, cases[i].v, NULL)), delta = ppl / g.f32_ppl - 1.0;
        print_message("%-24s PPL %.4f (%+.2f%% vs f32 %.4f, bound %+.0f%%)\n", cases[i].what, ppl, 100 * delta,
                      g.f32_ppl, 100 * cases[i].max_delta);
        if (delta > cases[i].max_delta)
            fail_msg("%s: PPL %.4f is %+.2f%% vs f32, bound %+.0f%%", cases[i].what, ppl, 100 * delta,
                     100 * cases[i].max_delta);
        if (cases[i].k == TKV_TYPE_TURBO4)
            turbo4 = ppl;
    }
    double turbo3 = exp(mean_nll(ctx, TKV_TYPE_TURBO3, TKV_TYPE_TURBO3, NULL));
    if (!(turbo4 < turbo3))
        fail_msg("turbo4 PPL %.4f is not below turbo3's %.4f", turbo4, turbo3);
    tkv_context_close(ctx);
}

struct reload {
    tkv_context *ctx;
    char path[4096];
};

/* $TMPDIR, else /tmp: where the test's files and directories go. */
static const char *tmp_root(void) { return getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp"; }

/* Saves the prefilled cache, destroys it, and continues on the loaded copy. */
static tkv_cache *save_and_reload(tkv_cache *c, void *user)
{
    struct reload *r = user;
    int rc = tkv_cache_save(c, r->path);
    if (rc != TKV_OK)
        fail_msg("save %s: %s", r->path, tkv_last_error());
    tkv_cache_destroy(c);
    tkv_cache *loaded = NULL;
    rc = tkv_cache_load(r->ctx, r->path, &loaded);
    if (rc != TKV_OK)
        fail_msg("load %s: %s", r->path, tkv_last_error());
    return loaded;
}

static void save_load_continue_on(const char *backend)
{
    struct reload r = { open_context(backend), "" };
    const char *tmp = tmp_root();
    snprintf(r.path, sizeof r.path, "%s/tkv-test-model-XXXXXX", tmp);
    int fd = mkstemp(r.path);
    assert_true(fd >= 0);
    close(fd);

    int32_t *prompt, a[200], b[200];
    uint32_t n_prompt;
    assert_int_equal(tokenizer_encode(&g.tok, PROMPT, strlen(PROMPT), 1, &prompt, &n_prompt, NULL), 0);
    tkv_cache *c = make_cache(r.ctx, 1, TKV_TYPE_FROM_CONFIG, TKV_TYPE_FROM_CONFIG), *reloaded;
    uint32_t na = greedy(c, 0, prompt, n_prompt, 200, a, NULL, NULL, NULL);
    tkv_cache_destroy(c);
    c = make_cache(r.ctx, 1, TKV_TYPE_FROM_CONFIG, TKV_TYPE_FROM_CONFIG);
    uint32_t nb = greedy(c, 0, prompt, n_prompt, 200, b, save_and_reload, &r, &reloaded);
    print_message("%s: %u tokens after the prompt, continued from a saved cache\n", backend, nb);
    assert_true(na > 100);
    assert_int_equal(na, nb);
    assert_memory_equal(a, b, na * sizeof a[0]);
    uint32_t len = 0;
    assert_int_equal(tkv_cache_length(reloaded, 0, 0, &len), TKV_OK);
    assert_int_equal(len, n_prompt + nb);

    tkv_cache_destroy(reloaded);
    free(prompt);
    unlink(r.path);
    tkv_context_close(r.ctx);
}

/* A GPU backend is tested when its plugin loads and probes a device. */
static int backend_available(const char *name)
{
    struct tkv_context_options o = { .struct_size = sizeof o, .ignore_env = 1, .plugin_path = g.plugin_path,
                                     .backend = "cpu", .probe_all = 1 /* list the GPU plugins too */ };
    tkv_context *ctx = NULL;
    if (tkv_context_open(&o, &ctx) != TKV_OK)
        return 0;
    int found = 0;
    for (uint32_t i = 0; i < tkv_plugin_count(ctx); i++) {
        struct tkv_plugin_report r;
        if (tkv_plugin_get(ctx, i, &r) == TKV_OK && !strcmp(r.name, name) && r.status == TKV_OK && r.n_devices > 0)
            found = 1;
    }
    tkv_context_close(ctx);
    return found;
}

static void test_save_load_continue_cpu(void **state)
{
    (void)state;
    save_load_continue_on("cpu");
}

static void test_save_load_continue_gpu(void **state)
{
    (void)state;
    static const char *const gpus[] = { "vulkan", "opencl" };
    static const int built[] = { TKV_BUILT_VULKAN, TKV_BUILT_OPENCL };
    int ran = 0;
    const char *ci = getenv("CI");
    int in_ci = ci && strcmp(ci, "true") == 0;
    for (size_t i = 0; i < sizeof gpus / sizeof gpus[0]; i++)
        if (backend_available(gpus[i])) {
            save_load_continue_on(gpus[i]);
            ran++;
        } else if (in_ci && built[i])
            fail_msg("CI=true: backend %s was built and must be available (lavapipe, PoCL)", gpus[i]);
    if (!ran)
        skip();
}

/* Two sequences decoded in one batched call per step give each the tokens
 * it gets alone. */
static void test_batched_decode_matches_single(void **state)
{
    (void)state;
    const uint32_t vocab = g.model.cfg.vocab_size, steps = 60;
    tkv_context *ctx = open_context("cpu");
    int32_t *prompt, alone[2][60], together[2][60];
    uint32_t n_prompt;
    assert_int_equal(tokenizer_encode(&g.tok, PROMPT, strlen(PROMPT), 1, &prompt, &n_prompt, NULL), 0);
    const int32_t *prompts[2] = { prompt, prompt };
    const uint32_t lens[2] = { 1, n_prompt }; /* BOS alone; the prompt */

    for (uint32_t q = 0; q < 2; q++) {
        tkv_cache *c = make_cache(ctx, 1, TKV_TYPE_FROM_CONFIG, TKV_TYPE_FROM_CONFIG);
        uint32_t n = greedy(c, 0, prompts[q], lens[q], steps, alone[q], NULL, NULL, NULL);
        assert_int_equal(n, steps);
        tkv_cache_destroy(c);
    }

    tkv_cache *c = make_cache(ctx, 2, TKV_TYPE_FROM_CONFIG, TKV_TYPE_FROM_CONFIG);
    struct llama2_state s;
    float *logits = malloc(2 * (size_t)vocab * sizeof *logits);
    assert_non_null(logits);
    assert_int_equal(llama2_state_init(&s, &g.model, n_prompt), 0);
    int32_t last[2];
    for (uint32_t q = 0; q < 2; q++) { /* prompts differ in length: each alone, split as greedy() does */
        if (lens[q] > 1)
            forward(&s, c, q, lens[q] - 1, prompts[q], 0, NULL);
        forward(&s, c, q, 1, &prompts[q][lens[q] - 1], 1, logits);
        last[q] = llama2_argmax(logits, vocab);
    }
    const uint32_t seqs[2] = { 0, 1 };
    for (uint32_t t = 0; t < steps; t++) {
        together[0][t] = last[0];
        together[1][t] = last[1];
        if (llama2_forward(&g.model, &s, c, 2, seqs, 1, last, 1, logits) != 0)
            fail_msg("%s", s.error);
        last[0] = llama2_argmax(logits, vocab);
        last[1] = llama2_argmax(logits + vocab, vocab);
    }
    assert_memory_equal(alone, together, sizeof alone);
    llama2_state_free(&s);
    free(logits);
    free(prompt);
    tkv_cache_destroy(c);
    tkv_context_close(ctx);
}

/* Writes len bytes of src (and then extra, if any) to a temporary file. */
static void write_variant(const char *src, size_t len, const void *extra, size_t extra_len, char *out, size_t size)
{
    char path[4200];
    FILE *in = fopen(model_file(src, path, sizeof path), "rb");
    assert_non_null(in);
    char *buf = malloc(len ? len : 1);
    assert_non_null(buf);
    assert_int_equal(fread(buf, 1, len, in), len);
    fclose(in);
    const char *tmp = tmp_root();
    snprintf(out, size, "%s/tkv-test-file-XXXXXX", tmp);
    int fd = mkstemp(out);
    assert_true(fd >= 0);
    assert_int_equal(write(fd, buf, len), (ssize_t)len);
    if (extra_len)
        assert_int_equal(write(fd, extra, extra_len), (ssize_t)extra_len);
    close(fd);
    free(buf);
}

static void expect_error(int rc, const char *err, const char *path, const char *problem)
{
    assert_int_equal(rc, -1);
    if (!strstr(err, path) || !strstr(err, problem))
        fail_msg("error \"%s\" should name %s and say \"%s\"", err, path, problem);
}

static void test_bad_files_are_refused(void **state)
{
    (void)state;
    char path[4200], err[1024];
    struct llama2_model m;
    struct tokenizer t;
    struct npy_array a;

    write_variant("stories260K.bin", 500000, NULL, 0, path, sizeof path);
    expect_error(llama2_open(&m, path, err, sizeof err), err, path, "truncated");
    unlink(path);
    write_variant("stories260K.bin", 1056540, "junk", 4, path, sizeof path);
    expect_error(llama2_open(&m, path, err, sizeof err), err, path, "trailing data");
    unlink(path);
    {
        const int32_t bad_heads[7] = { 64, 172, 5, 7, 7, 512, 512 }; /* 64 is not a multiple of 7 */
        write_variant("stories260K.bin", 0, bad_heads, sizeof bad_heads, path, sizeof path);
        expect_error(llama2_open(&m, path, err, sizeof err), err, path, "not a multiple of n_heads");
        unlink(path);
    }
    expect_error(llama2_open(&m, "/nonexistent/model.bin", err, sizeof err), err, "/nonexistent/model.bin",
                 "cannot open");

    write_variant("tok512.bin", 3000, NULL, 0, path, sizeof path); /* < 4 + 8 x 512 bytes */
    expect_error(tokenizer_open(&t, path, 512, err, sizeof err), err, path, "cannot hold the model's 512 pieces");
    unlink(path);
    write_variant("tok512.bin", 4500, NULL, 0, path, sizeof path);
    expect_error(tokenizer_open(&t, path, 512, err, sizeof err), err, path, "truncated");
    unlink(path);
    model_file("tok512.bin", path, sizeof path);
    expect_error(tokenizer_open(&t, path, 600, err, sizeof err), err, path, "not this model's tokenizer");
    expect_error(tokenizer_open(&t, path, 400, err, sizeof err), err, path, "not this model's tokenizer");
    model_file("stories260K.bin", path, sizeof path);
    expect_error(tokenizer_open(&t, path, 512, err, sizeof err), err, path, "piece");

    model_file("s260k_nll.npy", path, sizeof path);
    expect_error(npy_read(path, NPY_INT32, &a, err, sizeof err), err, path, "expected '<i4'");
    write_variant("s260k_tokens.npy", 1000, NULL, 0, path, sizeof path);
    expect_error(npy_read(path, NPY_INT32, &a, err, sizeof err), err, path, "truncated");
    unlink(path);
    model_file("tok512.bin", path, sizeof path);
    expect_error(npy_read(path, NPY_INT32, &a, err, sizeof err), err, path, "not a .npy file");
}

/* Forward refuses tokens outside the vocabulary instead of reading past
 * the embedding table. */
/* ---- the README's demo claim ----------------------------------------------------------------- */

/* The README says: with the default scheme, the greedy story from BOS is the
 * f32 cache's story for its first DEMO_SAME_TOKENS tokens (of the 200 the
 * demo prints), then the two part ways. Measured identical on every CPU
 * kernel level (reference, scalar, avx2, avx512; head_dim 8 runs the avx512
 * level's avx2 kernels). If this changes, the README sentence changes with it. */
#define DEMO_SAME_TOKENS 60
#define DEMO_TOKENS 200

static void test_demo_story_matches_f32_as_claimed(void **state)
{
    (void)state;
    static const char *const levels[] = { "reference", "scalar", "avx2", "avx512" };
    const char *saved = getenv("TURBO_CPU_ISA");
    char restore[64] = "";
    if (saved)
        snprintf(restore, sizeof restore, "%s", saved);
    int ran = 0;
    for (size_t i = 0; i < sizeof levels / sizeof levels[0]; i++) {
        setenv("TURBO_CPU_ISA", levels[i], 1);
        struct tkv_context_options o = {
            .struct_size = sizeof o, .ignore_env = 1, .plugin_path = g.plugin_path, .backend = "cpu",
        };
        tkv_context *ctx = NULL;
        int rc = tkv_context_open(&o, &ctx);
        if (rc == TKV_EUNSUPPORTED || (rc != TKV_OK && strstr(tkv_last_error(), "lacks"))) {
            print_message("%s: not on this machine (%s)\n", levels[i], tkv_last_error());
            continue;
        }
        if (rc != TKV_OK)
            fail_msg("cpu context with TURBO_CPU_ISA=%s: %s", levels[i], tkv_last_error());
        int32_t bos = TOKENIZER_BOS, exact[DEMO_TOKENS], compressed[DEMO_TOKENS];
        tkv_cache *c = make_cache(ctx, 1, TKV_TYPE_F32, TKV_TYPE_F32);
        uint32_t ne = greedy(c, 0, &bos, 1, DEMO_TOKENS, exact, NULL, NULL, NULL);
        tkv_cache_destroy(c);
        c = make_cache(ctx, 1, TKV_TYPE_FROM_CONFIG, TKV_TYPE_FROM_CONFIG);
        uint32_t nc = greedy(c, 0, &bos, 1, DEMO_TOKENS, compressed, NULL, NULL, NULL);
        tkv_cache_destroy(c);
        tkv_context_close(ctx);
        uint32_t same = 0;
        while (same < ne && same < nc && exact[same] == compressed[same])
            same++;
        print_message("%s: default scheme and f32 cache agree on the first %u of %u tokens\n", levels[i], same,
                      DEMO_TOKENS);
        assert_int_equal(ne, DEMO_TOKENS);
        assert_int_equal(nc, DEMO_TOKENS);
        if (same != DEMO_SAME_TOKENS)
            fail_msg("TURBO_CPU_ISA=%s: the stories agree on %u tokens, the README says %u: update both", levels[i],
                     same, DEMO_SAME_TOKENS);
        ran++;
    }
    if (saved)
        setenv("TURBO_CPU_ISA", restore, 1);
    else
        unsetenv("TURBO_CPU_ISA");
    assert_true(ran >= 2); /* reference and scalar run everywhere this test does */
}

/* ---- the sampler ------------------------------------------------------------------------------ */

/* Logits whose softmax at temperature 1 is probs. */
static void logits_of(const double *probs, uint32_t n, float *logits)
{
    for (uint32_t i = 0; i < n; i++)
        logits[i] = (float)log(probs[i]);
}

/* Draws n tokens; counts[id]. */
static void draw(struct sampler *s, const float *logits, uint32_t n, uint32_t *counts)
{
    for (uint32_t i = 0; i < n; i++) {
        int32_t t = sampler_next(s, logits);
        assert_true(t >= 0 && (uint32_t)t < s->vocab_size);
        counts[t]++;
    }
}

/* counts match the probabilities want[] within 5 standard errors. */
static void expect_frequencies(const uint32_t *counts, const double *want, uint32_t vocab, uint32_t n,
                               const char *what)
{
    for (uint32_t i = 0; i < vocab; i++) {
        double f = (double)counts[i] / n, se = sqrt(want[i] * (1 - want[i]) / n);
        if (want[i] == 0.0 ? counts[i] != 0 : fabs(f - want[i]) > 5 * se + 1e-12)
            fail_msg("%s: token %u drawn %.4f of the time, expected %.4f", what, i, f, want[i]);
    }
}

static void test_sampler_top_k_top_p(void **state)
{
    (void)state;
    enum { V = 5, N = 40000 };
    const double probs[V] = { 0.4, 0.3, 0.15, 0.1, 0.05 };
    float logits[V];
    logits_of(probs, V, logits);
    struct sampler s;
    uint32_t counts[V];

    /* temperature 0: the argmax, whatever k and p say */
    assert_int_equal(sampler_init(&s, V, 0.0f, 0.5f, 3, 7), 0);
    memset(counts, 0, sizeof counts);
    draw(&s, logits, 100, counts);
    assert_int_equal(counts[0], 100);
    sampler_free(&s);

    /* plain temperature 1: the softmax itself */
    assert_int_equal(sampler_init(&s, V, 1.0f, 1.0f, 0, 7), 0);
    memset(counts, 0, sizeof counts);
    draw(&s, logits, N, counts);
    expect_frequencies(counts, probs, V, N, "temp 1");
    sampler_free(&s);

    /* top-k 3: the three heaviest, renormalized */
    const double k3[V] = { 0.4 / 0.85, 0.3 / 0.85, 0.15 / 0.85, 0, 0 };
    assert_int_equal(sampler_init(&s, V, 1.0f, 1.0f, 3, 7), 0);
    memset(counts, 0, sizeof counts);
    draw(&s, logits, N, counts);
    expect_frequencies(counts, k3, V, N, "top-k 3");
    sampler_free(&s);

    /* top-p 0.7: 0.4 + 0.3 reach it, so the nucleus is the first two */
    const double p7[V] = { 0.4 / 0.7, 0.3 / 0.7, 0, 0, 0 };
    assert_int_equal(sampler_init(&s, V, 1.0f, 0.7f, 0, 7), 0);
    memset(counts, 0, sizeof counts);
    draw(&s, logits, N, counts);
    expect_frequencies(counts, p7, V, N, "top-p 0.7");
    sampler_free(&s);

    /* top-p 0.75 needs the third as well */
    const double p75[V] = { 0.4 / 0.85, 0.3 / 0.85, 0.15 / 0.85, 0, 0 };
    assert_int_equal(sampler_init(&s, V, 1.0f, 0.75f, 0, 7), 0);
    memset(counts, 0, sizeof counts);
    draw(&s, logits, N, counts);
    expect_frequencies(counts, p75, V, N, "top-p 0.75");
    sampler_free(&s);

    /* top-k then top-p of what top-k kept: k 2 leaves 4/7, 3/7; p 0.5 keeps the first */
    const double k2p5[V] = { 1, 0, 0, 0, 0 };
    assert_int_equal(sampler_init(&s, V, 1.0f, 0.5f, 2, 7), 0);
    memset(counts, 0, sizeof counts);
    draw(&s, logits, 1000, counts);
    expect_frequencies(counts, k2p5, V, 1000, "top-k 2, top-p 0.5");
    sampler_free(&s);

    /* a lower temperature sharpens: temp 0.5 squares the probabilities */
    double sq[V], sum = 0;
    for (uint32_t i = 0; i < V; i++)
        sum += sq[i] = probs[i] * probs[i];
    for (uint32_t i = 0; i < V; i++)
        sq[i] /= sum;
    assert_int_equal(sampler_init(&s, V, 0.5f, 1.0f, 0, 7), 0);
    memset(counts, 0, sizeof counts);
    draw(&s, logits, N, counts);
    expect_frequencies(counts, sq, V, N, "temp 0.5");
    sampler_free(&s);

    /* seeds: the same seed, the same draws; another seed, others */
    int32_t a[64], b[64], c[64];
    struct sampler s1, s2, s3;
    assert_int_equal(sampler_init(&s1, V, 1.0f, 0.9f, 4, 42), 0);
    assert_int_equal(sampler_init(&s2, V, 1.0f, 0.9f, 4, 42), 0);
    assert_int_equal(sampler_init(&s3, V, 1.0f, 0.9f, 4, 43), 0);
    for (int i = 0; i < 64; i++) {
        a[i] = sampler_next(&s1, logits);
        b[i] = sampler_next(&s2, logits);
        c[i] = sampler_next(&s3, logits);
    }
    assert_memory_equal(a, b, sizeof a);
    assert_memory_not_equal(a, c, sizeof a);
    sampler_free(&s1);
    sampler_free(&s2);
    sampler_free(&s3);

    /* bad settings are refused */
    assert_int_equal(sampler_init(&s, V, -1.0f, 0.9f, 0, 1), -1);
    assert_int_equal(sampler_init(&s, V, 1.0f, 0.0f, 0, 1), -1);
    assert_int_equal(sampler_init(&s, V, 1.0f, 1.5f, 0, 1), -1);
}

/* ---- the option parser ------------------------------------------------------------------------ */

enum { T_MODEL = 1, T_STEPS, T_CTX, T_TEMP, T_TOP_P, T_TOP_K, T_JSON };
static const struct tool_option test_options[] = {
    { T_MODEL, 'm', "model", "a model file", NULL },
    { T_STEPS, 'n', "n-predict", "a token count", "--steps" },
    { T_CTX, 'c', "ctx", "a token count", NULL },
    { T_CTX, 0, "ctx-size", "a token count", NULL },
    { T_TEMP, 't', "temp", "a temperature", "--temperature" },
    { T_TOP_P, 0, "top-p", "a probability", NULL },
    { T_TOP_K, 0, "top-k", "a token count", "-ctk" },
    { T_JSON, 0, "json", NULL, NULL },
    { 0, 0, NULL, NULL, NULL },
};

/* Parses argv (NULL-terminated, argv[0] the command) into "id=value;" items,
 * or "error: <message>" at the first error. */
static void parse(const char *const *args, char *out, size_t size)
{
    char *argv[32];
    int argc = 0;
    while (args[argc]) {
        argv[argc] = (char *)args[argc];
        argc++;
    }
    struct tool_getopt gp;
    tool_getopt_init(&gp, "test", test_options, argc, argv);
    size_t n = 0;
    int id;
    out[0] = '\0';
    while ((id = tool_getopt_next(&gp)) != TOOL_OPT_END) {
        if (id == TOOL_OPT_ERROR) {
            snprintf(out, size, "error: %s", gp.error);
            return;
        }
        n += (size_t)snprintf(out + n, size - n, "%d%s%s%s;", id, gp.flag[0] ? gp.flag : "",
                              gp.value ? "=" : "", gp.value ? gp.value : "");
    }
}

#define PARSES(expected, ...)                                                                   \
    do {                                                                                        \
        const char *const args_[] = { "test", __VA_ARGS__, NULL };                              \
        char got_[1024];                                                                        \
        parse(args_, got_, sizeof got_);                                                        \
        if (strcmp(got_, expected) != 0)                                                        \
            fail_msg("arguments parsed as \"%s\", expected \"%s\"", got_, expected);            \
    } while (0)

static void test_option_parser(void **state)
{
    (void)state;
    /* every spelling of a value; the canonical flag is reported */
    PARSES("2-n=5;2-n=6;3--ctx=7;3--ctx=8;3--ctx-size=9;", "-n", "5", "-n6", "--ctx", "7", "--ctx=8", "--ctx-size=9");
    /* unique prefixes; positional arguments anywhere; "--" ends the options */
    PARSES("1--model=m.bin;-3=a.bin;7--json;-3=-n;", "--mod", "m.bin", "a.bin", "--js", "--", "-n");
    PARSES("-2;", "--help");
    PARSES("4-t=-1;", "-t", "-1"); /* a value may start with a dash */
    /* errors: one line naming what was written and what was probably meant */
    PARSES("error: unknown option '--temprature'; did you mean -t/--temp?", "--temprature", "1");
    PARSES("error: unknown option '--temperature'; did you mean -t/--temp?", "--temperature", "1");
    PARSES("error: unknown option '--top_p'; did you mean --top-p?", "--top_p=0.5");
    PARSES("error: unknown option '-temp'; did you mean --temp?", "-temp", "1");
    PARSES("error: unknown option '-ctk'; did you mean --top-k?", "-ctk", "3");
    PARSES("error: unknown option '--steps'; did you mean -n/--n-predict?", "--steps", "3");
    PARSES("error: unknown option '-x'", "-x");
    PARSES("error: unknown option '--colour'", "--colour");
    PARSES("error: option '--top' is ambiguous: --top-p or --top-k?", "--top", "1");
    PARSES("error: option -n needs a value: a token count", "-n");
    PARSES("error: option --json takes no value (got '--json=yes')", "--json=yes");

    /* values: the flag and the value in the message, nothing kept on failure */
    char *argv[] = { "test", "-n", "12x", "--temp=0.5", NULL };
    struct tool_getopt gp;
    long n = 99;
    float t = 0;
    tool_getopt_init(&gp, "test", test_options, 4, argv);
    assert_int_equal(tool_getopt_next(&gp), T_STEPS);
    assert_int_equal(tool_value_long(&gp, 0, 100, "a token count", &n), -1);
    assert_int_equal(n, 99);
    assert_int_equal(tool_getopt_next(&gp), T_TEMP);
    assert_int_equal(tool_value_float(&gp, 0, 10, "a temperature", &t), 0);
    assert_true(t == 0.5f);
    assert_int_equal(tool_getopt_next(&gp), TOOL_OPT_END);

    /* schemes as the configuration reads them */
    uint32_t k, v;
    assert_int_equal(tool_parse_scheme("k8v3", &k, &v), 0);
    assert_int_equal(k, TKV_TYPE_Q8_0);
    assert_int_equal(v, TKV_TYPE_TURBO3);
    assert_int_equal(tool_parse_scheme("turbo4", &k, &v), 0);
    assert_int_equal(v, TKV_TYPE_TURBO4);
    assert_int_equal(tool_parse_scheme("k9v3", &k, &v), -1);
    assert_int_equal(tool_parse_scheme("k8v", &k, &v), -1);
    assert_int_equal(tool_parse_scheme("turbo3_qjl", &k, &v), -1);

    static const char *const commands[] = { "run", "ppl", "eval", "bench", "info" };
    assert_string_equal(tool_closest("rnu", commands, 5), "run");
    assert_string_equal(tool_closest("bnech", commands, 5), "bench");
    assert_string_equal(tool_closest("inf", commands, 5), "info");
    assert_null(tool_closest("xyz", commands, 5));
}

/* ---- model compatibility: a character-level vocabulary -------------------------------------- */

/* sentencepiece's specials as llama2.c's export writes them, then one piece
 * per character and no "<0xNN>" pieces, as a character model trained
 * without byte fallback has. The file's max_token_length says 1 although
 * "<unk>" is longer: llama2.c reads such files, so must we. */
static const char *const char_pieces[] = {
    "<unk>", "\n<s>\n", "\n</s>\n", " ", "a", "b", "c", "d", "e", "f", "g", "h", "i", "j", "k", "l", "m",
    "n", "o", "p", "q", "r", "s", "t", "u", "v", "w", "x", "y", "z", ".", ",", "!", "\n",
};
#define CHAR_VOCAB (sizeof char_pieces / sizeof char_pieces[0])

static void write_bytes(FILE *f, const void *p, size_t n) { assert_int_equal(fwrite(p, 1, n, f), n); }

static void temp_path(char *out, size_t size, const char *what)
{
    snprintf(out, size, "%s/tkv-test-%s-XXXXXX", tmp_root(), what);
    int fd = mkstemp(out);
    assert_true(fd >= 0);
    close(fd);
}

/* The character tokenizer, plus extra pieces (text, score) at its end. */
static void write_char_tokenizer(const char *path, const char *const *extra, uint32_t n_extra)
{
    FILE *f = fopen(path, "wb");
    assert_non_null(f);
    int32_t max_len = 1;
    write_bytes(f, &max_len, 4);
    for (uint32_t i = 0; i < CHAR_VOCAB + n_extra; i++) {
        const char *p = i < CHAR_VOCAB ? char_pieces[i] : extra[i - CHAR_VOCAB];
        float score = i < CHAR_VOCAB ? -(float)i : 0.0f;
        int32_t len = (int32_t)strlen(p);
        write_bytes(f, &score, 4);
        write_bytes(f, &len, 4);
        write_bytes(f, p, (size_t)len);
    }
    fclose(f);
}

/* A llama2.c model of vocab tokens with small random weights: dim 16, 2
 * layers, 2 heads of 8, seq_len 64, shared classifier, RoPE tables included. */
static void write_tiny_model(const char *path, int32_t vocab)
{
    const int32_t h[7] = { 16, 32, 2, 2, 2, vocab, 64 };
    const uint64_t dim = 16, hid = 32, L = 2, kv = 16, seq = 64, hd = 8;
    uint64_t n = vocab * dim + L * (dim + dim * dim + 2 * kv * dim + dim * dim + dim + 3 * hid * dim) + dim +
                 seq * hd;
    FILE *f = fopen(path, "wb");
    assert_non_null(f);
    write_bytes(f, h, sizeof h);
    uint64_t state = 12345;
    for (uint64_t i = 0; i < n; i++) {
        state = state * 6364136223846793005ull + 1442695040888963407ull;
        float w = ((float)(state >> 40) / 16777216.0f - 0.5f) * 0.5f;
        write_bytes(f, &w, 4);
    }
    fclose(f);
}

static void test_char_level_tokenizer(void **state)
{
    (void)state;
    char tpath[4200], mpath[4200], err[1024];
    struct tokenizer t;
    temp_path(tpath, sizeof tpath, "chartok");
    write_char_tokenizer(tpath, NULL, 0);
    if (tokenizer_open(&t, tpath, CHAR_VOCAB, err, sizeof err) != 0)
        fail_msg("a character tokenizer without byte pieces is refused: %s", err);
    assert_int_equal(t.n_byte_pieces, 0);
    assert_int_equal(t.max_token_length, 6); /* the longest piece, not the file's 1 */

    /* BOS, the dummy " ", one piece per character */
    int32_t *ids;
    uint32_t n;
    struct tokenizer_unknown unk;
    assert_int_equal(tokenizer_encode(&t, "hi there.", 9, 1, &ids, &n, &unk), 0);
    const int32_t want[] = { 1, 3, 11, 12, 3, 23, 11, 8, 21, 8, 30 };
    assert_int_equal(n, sizeof want / sizeof want[0]);
    assert_memory_equal(ids, want, sizeof want);
    assert_int_equal(unk.count, 0);
    char text[64] = "";
    for (uint32_t i = 1; i < n; i++) {
        const char *piece;
        size_t len = tokenizer_decode(&t, ids[i - 1], ids[i], &piece);
        strncat(text, piece, len);
    }
    assert_string_equal(text, "hi there."); /* the dummy space after BOS is dropped */
    free(ids);

    /* characters without a piece or byte pieces become one <unk> each (a
     * code point, not a byte): "é" is 2 bytes, "Z" 1 */
    assert_int_equal(tokenizer_encode(&t, "h\xc3\xa9Z!", 5, 0, &ids, &n, &unk), 0);
    const int32_t want_unk[] = { 3, 11, TOKENIZER_UNK, TOKENIZER_UNK, 32 };
    assert_int_equal(n, 5);
    assert_memory_equal(ids, want_unk, sizeof want_unk);
    assert_int_equal(unk.count, 2);
    assert_int_equal(unk.first_offset, 1);
    free(ids);
    tokenizer_close(&t);

    /* byte pieces wherever the file has them: "é" falls back to its two
     * bytes at their ids, "Z" (no byte piece) is still <unk>, which merges
     * with nothing (not even into a piece "<unk>,"), and a merge piece with
     * a NaN score never merges */
    static const char *const extra[] = { "<0xC3>", "<0xA9>", "<unk>,", "hi" };
    write_char_tokenizer(tpath, extra, 4);
    {
        /* give "hi" a NaN score: patch its float in place */
        FILE *f = fopen(tpath, "r+b");
        assert_non_null(f);
        long at = 0;
        fseek(f, 0, SEEK_END);
        at = ftell(f) - 2 - 8;
        fseek(f, at, SEEK_SET);
        float nan_score = NAN;
        write_bytes(f, &nan_score, 4);
        fclose(f);
    }
    assert_int_equal(tokenizer_open(&t, tpath, CHAR_VOCAB + 4, err, sizeof err), 0);
    assert_int_equal(t.n_byte_pieces, 2);
    assert_int_equal(tokenizer_encode(&t, "hi\xc3\xa9Z,", 6, 0, &ids, &n, &unk), 0);
    const int32_t want_bytes[] = { 3, 11, 12, CHAR_VOCAB, CHAR_VOCAB + 1, TOKENIZER_UNK, 31 };
    assert_int_equal(n, 7);
    assert_memory_equal(ids, want_bytes, sizeof want_bytes);
    assert_int_equal(unk.count, 1);
    assert_int_equal(unk.first_offset, 4);
    const char *piece;
    assert_int_equal(tokenizer_decode(&t, 12, CHAR_VOCAB, &piece), 1);
    assert_int_equal((unsigned char)piece[0], 0xC3);
    free(ids);
    tokenizer_close(&t);

    /* a model of that vocabulary runs through the library */
    temp_path(mpath, sizeof mpath, "charmodel");
    write_tiny_model(mpath, (int32_t)CHAR_VOCAB);
    write_char_tokenizer(tpath, NULL, 0);
    struct llama2_model m;
    if (llama2_open(&m, mpath, err, sizeof err) != 0)
        fail_msg("%s", err);
    assert_int_equal(tokenizer_open(&t, tpath, m.cfg.vocab_size, err, sizeof err), 0);
    tkv_context *ctx = open_context("cpu");
    struct tkv_cache_params p = llama2_cache_params(&m, m.cfg.seq_len, 1, TKV_TYPE_FROM_CONFIG, TKV_TYPE_FROM_CONFIG);
    tkv_cache *c = NULL;
    assert_int_equal(tkv_cache_create(ctx, &p, &c), TKV_OK);
    struct llama2_state st;
    float logits[CHAR_VOCAB];
    assert_int_equal(tokenizer_encode(&t, "a cat", 5, 1, &ids, &n, NULL), 0);
    assert_int_equal(llama2_state_init(&st, &m, n), 0);
    const uint32_t seq = 0;
    assert_int_equal(llama2_forward(&m, &st, c, 1, &seq, n, ids, 1, logits), 0);
    for (uint32_t i = 0; i < CHAR_VOCAB; i++)
        assert_true(isfinite(logits[i]));
    free(ids);
    llama2_state_free(&st);
    tkv_cache_destroy(c);
    tkv_context_close(ctx);
    tokenizer_close(&t);
    llama2_close(&m);
    unlink(mpath);
    unlink(tpath);
}

/* ---- the turbokv command itself ----------------------------------------------------------------- */

static char turbokv_exe[4200], cli_config[4200];

/* The built tool: TKV_TURBOKV, else build/tools/turbokv next to build/tests/. */
static const char *turbokv(void)
{
    if (turbokv_exe[0])
        return turbokv_exe;
    const char *env = getenv("TKV_TURBOKV");
    if (env) {
        snprintf(turbokv_exe, sizeof turbokv_exe, "%s", env);
    } else {
        char self[4096];
        ssize_t n = readlink("/proc/self/exe", self, sizeof self - 1);
        assert_true(n > 0);
        self[n] = '\0';
        for (int up = 0; up < 2; up++)
            *strrchr(self, '/') = '\0';
        snprintf(turbokv_exe, sizeof turbokv_exe, "%s/tools/turbokv", self);
    }
    if (access(turbokv_exe, X_OK) != 0)
        fail_msg("%s is not there: build it (ninja tools/turbokv) or set TKV_TURBOKV", turbokv_exe);
    return turbokv_exe;
}

/* Reads a whole file (malloc'ed, NUL-terminated). */
static char *slurp(const char *path)
{
    FILE *f = fopen(path, "rb");
    assert_non_null(f);
    size_t cap = 1 << 16, n = 0;
    char *buf = malloc(cap);
    assert_non_null(buf);
    for (size_t got; (got = fread(buf + n, 1, cap - n - 1, f)) > 0;) {
        n += got;
        if (n + 1 == cap) {
            buf = realloc(buf, cap *= 2);
            assert_non_null(buf);
        }
    }
    buf[n] = '\0';
    fclose(f);
    return buf;
}

/* Runs `turbokv ARGS` (ARGS shell-quoted by the caller) with the library's
 * defaults (an empty configuration file, no TURBO_* variable but the
 * plugin path); returns the exit code, stdout and stderr (malloc'ed). */
static int cli_in(const char *plugin_path, const char *args, char **out, char **err)
{
    char outp[4200], errp[4200], cmd[40000];
    if (!cli_config[0]) {
        temp_path(cli_config, sizeof cli_config, "config");
    }
    temp_path(outp, sizeof outp, "stdout");
    temp_path(errp, sizeof errp, "stderr");
    snprintf(cmd, sizeof cmd,
             "env -u TURBO_SCHEME -u TURBO_K_TYPE -u TURBO_V_TYPE -u TURBO_LAYER_ADAPTIVE -u TURBO_LAYERS "
             "-u TURBO_BACKEND -u TURBO_CPU_ISA -u TURBO_LOG TURBO_CONFIG='%s' TURBO_PLUGIN_PATH='%s' '%s' %s "
             ">'%s' 2>'%s'",
             cli_config, plugin_path, turbokv(), args, outp, errp);
    int status = system(cmd);
    assert_true(status != -1 && WIFEXITED(status));
    *out = slurp(outp);
    *err = slurp(errp);
    unlink(outp);
    unlink(errp);
    return WEXITSTATUS(status);
}

static int cli(const char *args, char **out, char **err)
{
    return cli_in(g.plugin_path ? g.plugin_path : "", args, out, err);
}

static void assert_one_line(const char *err, const char *has, const char *lacks)
{
    if (!strstr(err, has) || (lacks && strstr(err, lacks)) || strchr(err, '\n') != err + strlen(err) - 1)
        fail_msg("stderr \"%s\" should be one line with \"%s\"%s%s", err, has, lacks ? " and without " : "",
                 lacks ? lacks : "");
}

static void test_cli_run(void **state)
{
    (void)state;
    char *out, *err;
    /* stdout holds the story and nothing else; the statistics are on stderr */
    assert_int_equal(cli("run -n 30", &out, &err), 0);
    if (strncmp(out, REFERENCE_STORY, 40) != 0 || strstr(out, "turbokv") || strstr(out, "KV cache") ||
        out[strlen(out) - 1] != '\n' || strchr(out, '\n') != out + strlen(out) - 1)
        fail_msg("stdout should be the story alone, one line: \"%s\"", out);
    if (!strstr(err, "--- turbokv run: backend cpu") || !strstr(err, "KV cache: 31 tokens"))
        fail_msg("stderr should hold the statistics: \"%s\"", err);
    free(out);
    free(err);

    /* the short flags; -c bounds prompt + -n; the same seed, the same text */
    char *again, *err2;
    assert_int_equal(cli("run -p 'Once upon a time' -n 500 -c 24 -t 0.9 --top-k 20 -s 7 --json", &out, &err), 0);
    assert_non_null(strstr(out, "\"ctx\": 24, \"temp\": 0.9, \"top_p\": 0.9, \"top_k\": 20, \"seed\": 7"));
    assert_non_null(strstr(out, "\"prefill_tokens\": 5,")); /* BOS and 4 tokens of prompt */
    assert_non_null(strstr(out, "\"decode_tokens\": 19,")); /* 5 + 19 = 24 */
    assert_int_equal(cli("run --prompt='Once upon a time' --n-predict=500 --ctx=24 --temp=0.9 --top-k=20 "
                         "--seed=7 --json", &again, &err2), 0);
    const char *t1 = strstr(out, "\"tokens\""), *t2 = strstr(again, "\"tokens\"");
    assert_non_null(t1);
    assert_non_null(t2);
    assert_int_equal(strncmp(t1, t2, (size_t)(strstr(t1, "]") - t1)), 0);
    free(out);
    free(err);
    free(again);
    free(err2);

    /* option errors: one line naming the option, the usage only on --help */
    assert_int_equal(cli("run --scheme k9v3", &out, &err), 2);
    assert_one_line(err, "--scheme k9v3: expected auto or a type name", "TURBO_SCHEME");
    free(out);
    free(err);
    assert_int_equal(cli("run --temprature 1", &out, &err), 2);
    assert_one_line(err, "unknown option '--temprature'; did you mean -t/--temp?", "usage");
    free(out);
    free(err);
    assert_int_equal(cli("run -n many", &out, &err), 2);
    assert_one_line(err, "turbokv run: -n many: expected a token count", NULL);
    free(out);
    free(err);
    assert_int_equal(cli("run --v-type turbo3_qjl", &out, &err), 2);
    assert_one_line(err, "--v-type turbo3_qjl: expected a value type", NULL);
    free(out);
    free(err);
    assert_int_equal(cli("run --help", &out, &err), 0);
    assert_non_null(strstr(out, "usage: turbokv run"));
    assert_non_null(strstr(out, "--top-p"));
    free(out);
    free(err);
    assert_int_equal(cli("--help", &out, &err), 0);
    assert_null(strstr(out, "README"));
    assert_non_null(strstr(out, "man turbokv"));
    free(out);
    free(err);
    assert_int_equal(cli("rnu", &out, &err), 2);
    assert_one_line(err, "unknown command 'rnu'; did you mean 'run'?", NULL);
    free(out);
    free(err);

    /* a model and tokenizer of another vocabulary, the model given first as llama2.c's run takes it;
     * a prompt character the tokenizer cannot encode is <unk>, and said so */
    char tpath[4200], mpath[4200], args[9000];
    temp_path(tpath, sizeof tpath, "chartok");
    temp_path(mpath, sizeof mpath, "charmodel");
    write_char_tokenizer(tpath, NULL, 0);
    write_tiny_model(mpath, (int32_t)CHAR_VOCAB);
    snprintf(args, sizeof args, "run '%s' -z '%s' -p 'a cat' -n 10", mpath, tpath);
    assert_int_equal(cli(args, &out, &err), 0);
    assert_int_equal(strncmp(out, "a cat", 5), 0);
    free(out);
    free(err);
    snprintf(args, sizeof args, "run '%s' -z '%s' -p 'a Cat' -n 3", mpath, tpath);
    assert_int_equal(cli(args, &out, &err), 0);
    assert_non_null(strstr(err, "no piece and no byte piece for 1 character of the prompt (the first at byte 2)"));
    free(out);
    free(err);
    unlink(tpath);
    unlink(mpath);
}

/* "key": NUMBER after the n-th occurrence of "key" at or after from. */
static double json_field(const char *from, const char *key, int nth)
{
    char pat[64];
    snprintf(pat, sizeof pat, "\"%s\": ", key);
    const char *p = from;
    for (int i = 0; i <= nth; i++) {
        p = strstr(p, pat);
        if (!p)
            fail_msg("no %d-th \"%s\" in %.200s", nth, key, from);
        p += strlen(pat);
    }
    return strtod(p, NULL);
}

static void test_cli_ppl_windows(void **state)
{
    (void)state;
    char *out, *err, args[4400], path[4200];
    /* the reference tokens in 4 windows of 128: window 0 is the start of
     * the reference run, so its NLL is the mean of the reference NLLs of
     * tokens 1..127; windows 1-3 start on an empty cache mid-text */
    snprintf(args, sizeof args, "ppl --tokens '%s' -c 128 --chunks all --types k8v3 --json",
             model_file("s260k_tokens.npy", path, sizeof path));
    assert_int_equal(cli(args, &out, &err), 0);
    assert_int_equal((int)json_field(out, "windows", 0), 4);
    assert_int_equal((int)json_field(out, "window_tokens", 0), 128);
    const float *ref = g.nll.data;
    double want = 0.0;
    for (int t = 0; t < 127; t++)
        want += ref[t];
    want /= 127;
    double w0 = json_field(out, "nll", 1); /* the scheme's "nll", then the first window's */
    if (fabs(w0 - want) > 1e-3)
        fail_msg("f32 window 0: NLL %.6f, reference %.6f", w0, want);
    const char *k8v3 = strstr(out, "\"scheme\": \"k8v3\"");
    assert_non_null(k8v3);
    for (const char *s = out; s; s = s == out ? k8v3 : NULL) {
        double mean = 0.0;
        for (int w = 0; w < 4; w++)
            mean += json_field(s, "nll", 1 + w) / 4;
        double nll = json_field(s, "nll", 0), sd = json_field(s, "ppl_sd", 0);
        if (fabs(mean - nll) > 1e-5 || !(sd > 0.0))
            fail_msg("the mean of the window NLLs is %.6f, the scheme's NLL %.6f; PPL sd %.4f", mean, nll, sd);
        assert_int_equal(strstr(s, "\"first_token\": 384") != NULL, 1);
        assert_null(strstr(s, "\"first_token\": 512"));
    }
    free(out);
    free(err);
    /* --chunks 2: the first two windows only; one window has no spread */
    snprintf(args, sizeof args, "ppl --tokens '%s' -c128 --chunks=2 --types k8v3 --json", path);
    assert_int_equal(cli(args, &out, &err), 0);
    assert_int_equal((int)json_field(out, "windows", 0), 2);
    free(out);
    free(err);
    snprintf(args, sizeof args, "ppl --tokens '%s' --types k8v3 --json", path);
    assert_int_equal(cli(args, &out, &err), 0);
    assert_int_equal((int)json_field(out, "windows", 0), 1);
    assert_non_null(strstr(out, "\"ppl_sd\": null"));
    free(out);
    free(err);
    assert_int_equal(cli("ppl --chunks none", &out, &err), 2);
    assert_one_line(err, "--chunks none: expected a window count >= 1, or all", NULL);
    free(out);
    free(err);
}

/* Every option a command's --help lists is in the manual. */
static void test_cli_manual_covers_every_option(void **state)
{
    (void)state;
    char path[4200];
    snprintf(path, sizeof path, "%s/../docs/turbokv.1", g.dir);
    char *roff = slurp(path), *man = malloc(strlen(roff) + 1);
    assert_non_null(man);
    size_t m = 0;
    for (const char *p = roff; *p; p++) /* roff's \- is a plain '-' */
        if (!(p[0] == '\\' && p[1] == '-'))
            man[m++] = *p;
    man[m] = '\0';
    static const char *const commands[] = { "run", "ppl", "eval", "bench", "info" };
    for (size_t c = 0; c < sizeof commands / sizeof commands[0]; c++) {
        char args[64], *out, *err;
        snprintf(args, sizeof args, "%s --help", commands[c]);
        assert_int_equal(cli(args, &out, &err), 0);
        int found = 0;
        for (const char *p = out; (p = strchr(p, '-')) != NULL;) {
            /* an option: "-x" or "--name" after a space, '(' or a line start */
            size_t n = strspn(p, "-") <= 2 ? strspn(p, "-") : 0;
            size_t len = n ? n + strspn(p + n, "abcdefghijklmnopqrstuvwxyz-") : 0;
            int starts = p == out || strchr(" ([\n", p[-1]);
            if (starts && len > n && (n == 2 || len == 2)) {
                char flag[64], needle[80];
                snprintf(flag, sizeof flag, "%.*s", (int)len, p);
                if (flag[len - 1] == '-')
                    flag[len - 1] = '\0';
                /* the manual writes each as a word of its own */
                int in_man = 0;
                for (const char *q = man; (q = strstr(q, flag)) != NULL; q++) {
                    char after = q[strlen(flag)];
                    if (!(after >= 'a' && after <= 'z') && after != '-')
                        in_man = 1;
                }
                snprintf(needle, sizeof needle, "%s", flag);
                if (!in_man)
                    fail_msg("turbokv %s --help lists %s, docs/turbokv.1 does not", commands[c], needle);
                found++;
            }
            p += len ? len : 1;
        }
        assert_true(found >= 1);
        free(out);
        free(err);
    }
    free(roff);
    free(man);
}

static void test_cli_info_json_typed(void **state)
{
    (void)state;
    char *out, *err;
    assert_int_equal(cli("info --json", &out, &err), 0);
    static const char *const typed[] = {
        "\"sparse_v\": {\"value\": true,", "\"auto_asymmetric\": {\"value\": true,",
        "\"norm_correction\": {\"value\": true,", "\"sparse_v_threshold\": {\"value\": 1e-06,",
        "\"layer_adaptive\": {\"value\": 0,", "\"threads\": {\"value\": 0,", "\"device\": {\"value\": \"auto\",",
        "\"scheme\": {\"value\": \"auto\",", "\"accepted\": true", "\"abi_major\": ",
    };
    for (size_t i = 0; i < sizeof typed / sizeof typed[0]; i++)
        if (!strstr(out, typed[i]))
            fail_msg("info --json lacks %s: %s", typed[i], out);
    free(out);
    free(err);
}

/* Run from the build tree, the tool searches the directories of a
 * TURBO_PLUGIN_PATH the user set before the build's own plugin
 * directories: a copy of the cpu plugin there is the one it loads (a
 * measurement that points the variable at another build of a plugin must
 * get that build, not the tree's). */
static void test_cli_plugin_path_comes_first(void **state)
{
    (void)state;
    char list[4200], src[4300] = "", dir[4200], dst[4300];
    snprintf(list, sizeof list, "%s", g.plugin_path ? g.plugin_path : "");
    for (char *save = NULL, *tok = strtok_r(list, ":", &save); tok && !src[0]; tok = strtok_r(NULL, ":", &save)) {
        snprintf(src, sizeof src, "%s/turbokv-cpu.so", tok);
        if (access(src, R_OK) != 0)
            src[0] = '\0';
    }
    if (!src[0])
        fail_msg("no turbokv-cpu.so in the test's plugin path %s", g.plugin_path ? g.plugin_path : "(unset)");
    snprintf(dir, sizeof dir, "%s/tkv-test-plugins-XXXXXX", tmp_root()); /* mkdtemp's template */
    assert_non_null(mkdtemp(dir));
    snprintf(dst, sizeof dst, "%s/turbokv-cpu.so", dir);
    FILE *in = fopen(src, "rb"), *to = fopen(dst, "wb");
    assert_non_null(in);
    assert_non_null(to);
    char buf[1 << 16];
    for (size_t n; (n = fread(buf, 1, sizeof buf, in)) > 0;)
        assert_int_equal(fwrite(buf, 1, n, to), n);
    fclose(in);
    assert_int_equal(fclose(to), 0);
    char *out, *err;
    assert_int_equal(cli_in(dir, "info", &out, &err), 0);
    char want[4400];
    snprintf(want, sizeof want, " %s\n", dst);
    if (!strstr(out, want))
        fail_msg("turbokv info with TURBO_PLUGIN_PATH=%s should load the cpu plugin from there: %s", dir, out);
    free(out);
    free(err);
    unlink(dst);
    rmdir(dir);
}

/* The per-token bench opens its contexts on a host's device it creates
 * itself; run from the build tree with no TURBO_PLUGIN_PATH it must still
 * find the build's plugins (it searched only the installed directories
 * until session 31). Vulkan where it is available (under CI=true it must
 * be: lavapipe). */
static void test_cli_per_token_finds_build_plugins(void **state)
{
    (void)state;
    if (!backend_available("vulkan")) {
        const char *ci = getenv("CI");
        if (ci && strcmp(ci, "true") == 0 && TKV_BUILT_VULKAN)
            fail_msg("CI=true: backend vulkan was built and must be available (lavapipe)");
        skip();
    }
    char *out, *err;
    int rc = cli_in("", "bench --per-token --backend vulkan --types turbo3 --ctx 256 --layers 1", &out, &err);
    if (rc != 0 || !strstr(out, "\nturbo3 "))
        fail_msg("bench --per-token without TURBO_PLUGIN_PATH: exit %d, stdout \"%s\", stderr \"%s\"", rc, out, err);
    free(out);
    free(err);
}

/* keystudy (the key-storage study of docs/keys.md, run from its build
 * tree, never installed) finds the build's plugins without
 * TURBO_PLUGIN_PATH, as turbokv does: its ppl opens a context (it used to
 * search only the installed directories and fail "no turbokv plugin
 * found"). */
static void test_keystudy_finds_build_plugins(void **state)
{
    (void)state;
    char exe[4200], outp[4200], cmd[20000];
    snprintf(exe, sizeof exe, "%s", turbokv());
    *strrchr(exe, '/') = '\0';
    const char *models = getenv("TKV_MODELS_DIR");
    assert_non_null(models);
    temp_path(outp, sizeof outp, "stdout");
    snprintf(cmd, sizeof cmd,
             "env -u TURBO_PLUGIN_PATH -u TURBO_CONFIG '%s/keystudy' ppl f32 --model '%s/stories260K.bin' "
             "--tokenizer '%s/tok512.bin' --tokens '%s/s260k_tokens.npy' >'%s' 2>&1",
             exe, models, models, models, outp);
    const int status = system(cmd);
    char *out = slurp(outp);
    unlink(outp);
    if (status == -1 || !WIFEXITED(status) || WEXITSTATUS(status) != 0 || !strstr(out, "\nf32 "))
        fail_msg("keystudy ppl without TURBO_PLUGIN_PATH: status %d, output \"%s\"", status, out);
    free(out);
}

/* bench's arithmetic floor in its --json output: on a CPU whose plugin
 * level has FMAs the multiply-add peak is measured, and each point's floor
 * is its multiply-adds (2 x query heads x head_dim per visible row; the
 * small preset: 8 query heads, head_dim 64; one token, one sequence) at
 * that peak. */
static void check_arith_floor(const char *out, unsigned want_points)
{
    int want_peak = 0;
#if defined(__x86_64__) || defined(__i386__)
    __builtin_cpu_init();
    want_peak = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
#elif defined(__aarch64__)
    want_peak = 1;
#endif
    const char *peak = strstr(out, "\"kind\": \"fma_peak\"");
    if (!want_peak) {
        assert_null(peak);
        return;
    }
    if (!peak)
        fail_msg("bench --json without an fma_peak record: %s", out);
    const char *g = strstr(peak, "\"gmacs\": "), *lanes = strstr(peak, "\"lanes\": ");
    assert_non_null(g);
    assert_non_null(lanes);
    double gmacs = strtod(g + strlen("\"gmacs\": "), NULL);
    long n_lanes = strtol(lanes + strlen("\"lanes\": "), NULL, 10);
    assert_true(gmacs > 0.1);
    assert_true(n_lanes == 4 || n_lanes == 8 || n_lanes == 16);
    unsigned points = 0;
    for (const char *p = out; (p = strstr(p, "\"arith_floor_us\": ")); p++, points++) {
        const char *ctx = p;
        while (ctx > out && strncmp(ctx, "\"ctx\": ", 7)) /* the point's context, before it */
            ctx--;
        double macs = 2.0 * 8 * 64 * strtod(ctx + 7, NULL);
        double us = strtod(p + strlen("\"arith_floor_us\": "), NULL);
        if (fabs(us - macs / (gmacs * 1e3)) > 1e-3 * us + 1e-3)
            fail_msg("arith_floor_us %.4f, expected %.4f from %.3f G/s", us, macs / (gmacs * 1e3), gmacs);
    }
    assert_int_equal(points, want_points);
}

static void test_cli_bench_plot(void **state)
{
    (void)state;
    char *out, *err, cmd[600], path[256];
    /* a path that cannot be written is refused before the benchmark runs */
    assert_int_equal(cli("bench --backend cpu --plot /nonexistent-dir/x.svg", &out, &err), 2);
    if (!strstr(err, "--plot /nonexistent-dir/x.svg") || out[0])
        fail_msg("bench --plot to a bad path: stdout \"%s\", stderr \"%s\"", out, err);
    free(out);
    free(err);
    /* the clock warm-up: a bounded count of milliseconds, named when refused */
    assert_int_equal(cli("bench --backend cpu --warm-ms 20000", &out, &err), 2);
    if (!strstr(err, "--warm-ms 20000") || out[0])
        fail_msg("bench --warm-ms 20000: stdout \"%s\", stderr \"%s\"", out, err);
    free(out);
    free(err);
    snprintf(path, sizeof path, "%s/tkv-test-plot-%d.svg", tmp_root(),
             (int)getpid());
    snprintf(cmd, sizeof cmd, "bench --backend cpu --preset small --ctx 256,1K --types f16,turbo3,turbo4 "
                              "--tokens 1 --seqs 1 --warm-ms 5 --json --plot %s", path);
    assert_int_equal(cli(cmd, &out, &err), 0);
    check_arith_floor(out, 8); /* 2 contexts x (3 types and f32) */
    free(out);
    free(err);
    FILE *f = fopen(path, "r");
    assert_non_null(f);
    static char svg[1 << 16];
    size_t n = fread(svg, 1, sizeof svg - 1, f);
    svg[n] = '\0';
    fclose(f);
    unlink(path);
    /* both panels, a series per type (distinct dash patterns), the spread
     * bars and the host in the title */
    static const char *const want[] = { "speed-up over f16", "time per layer", ">f16<", ">turbo3<", ">turbo4<",
                                        "stroke-dasharray", "backend cpu on ", "</svg>" };
    for (size_t i = 0; i < sizeof want / sizeof want[0]; i++)
        if (!strstr(svg, want[i]))
            fail_msg("the plot lacks %s", want[i]);
    unsigned polylines = 0;
    for (const char *p = svg; (p = strstr(p, "<polyline")); p++)
        polylines++;
    assert_int_equal(polylines, 8); /* 3 types and the f32 baseline bench adds, x 2 panels */
}

static void test_forward_rejects_bad_tokens(void **state)
{
    (void)state;
    tkv_context *ctx = open_context("cpu");
    tkv_cache *c = make_cache(ctx, 1, TKV_TYPE_F32, TKV_TYPE_F32);
    struct llama2_state s;
    assert_int_equal(llama2_state_init(&s, &g.model, 2), 0);
    const uint32_t seq = 0;
    const int32_t bad[2] = { 1, 512 };
    assert_int_equal(llama2_forward(&g.model, &s, c, 1, &seq, 2, bad, 0, NULL), -1);
    assert_non_null(strstr(s.error, "outside the vocabulary"));
    uint32_t len = 1;
    assert_int_equal(tkv_cache_length(c, 0, 0, &len), TKV_OK);
    assert_int_equal(len, 0);
    llama2_state_free(&s);
    tkv_cache_destroy(c);
    tkv_context_close(ctx);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_greedy_story_matches_reference),
        cmocka_unit_test(test_tokenizer_matches_reference_tokens),
        cmocka_unit_test(test_f32_nll_matches_reference),
        cmocka_unit_test(test_batched_prefill_matches_reference),
        cmocka_unit_test(test_compressed_schemes_within_bounds),
        cmocka_unit_test(test_save_load_continue_cpu),
        cmocka_unit_test(test_save_load_continue_gpu),
        cmocka_unit_test(test_batched_decode_matches_single),
        cmocka_unit_test(test_bad_files_are_refused),
        cmocka_unit_test(test_forward_rejects_bad_tokens),
        cmocka_unit_test(test_demo_story_matches_f32_as_claimed),
        cmocka_unit_test(test_sampler_top_k_top_p),
        cmocka_unit_test(test_option_parser),
        cmocka_unit_test(test_char_level_tokenizer),
        cmocka_unit_test(test_cli_run),
        cmocka_unit_test(test_cli_ppl_windows),
        cmocka_unit_test(test_cli_info_json_typed),
        cmocka_unit_test(test_cli_plugin_path_comes_first),
        cmocka_unit_test(test_cli_per_token_finds_build_plugins),
        cmocka_unit_test(test_keystudy_finds_build_plugins),
        cmocka_unit_test(test_cli_bench_plot),
        cmocka_unit_test(test_cli_manual_covers_every_option),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
