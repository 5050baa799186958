/*
 * The shipped stories260K model run through the public API, as a host does
 * (tools/llama2.c): with an f32 cache it reproduces the reference figures of
 * models/README.md; compressed schemes stay within measured perplexity
 * bounds; a saved and reloaded cache continues exactly like an uninterrupted
 * run on every backend found; batched decode of two sequences equals
 * decoding each alone; bad model, tokenizer and .npy files are refused with
 * a message naming the file and the problem.
 *
 * Environment: TKV_MODELS_DIR (models/), TKV_PLUGIN_DIRS or
 * TURBO_PLUGIN_PATH (plugin directories). TURBO_* configuration is
 * ignored so the defaults tested are the library's own.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "llama2.h"
#include "npy.h"
#include "tokenizer.h"
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
    assert_int_equal(tokenizer_encode(&g.tok, text, (size_t)(cut - text), 1, &tokens, &n), 0);
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
    const char *tmp = getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp";
    snprintf(r.path, sizeof r.path, "%s/tkv-test-model-XXXXXX", tmp);
    int fd = mkstemp(r.path);
    assert_true(fd >= 0);
    close(fd);

    int32_t *prompt, a[200], b[200];
    uint32_t n_prompt;
    assert_int_equal(tokenizer_encode(&g.tok, PROMPT, strlen(PROMPT), 1, &prompt, &n_prompt), 0);
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
                                     .backend = "cpu" };
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
    int ran = 0;
    for (size_t i = 0; i < sizeof gpus / sizeof gpus[0]; i++)
        if (backend_available(gpus[i])) {
            save_load_continue_on(gpus[i]);
            ran++;
        }
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
    assert_int_equal(tokenizer_encode(&g.tok, PROMPT, strlen(PROMPT), 1, &prompt, &n_prompt), 0);
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
    const char *tmp = getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp";
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

    write_variant("tok512.bin", 3000, NULL, 0, path, sizeof path);
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
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
