/*
 * `turbokv run`: generates text with a llama2.c model whose K/V cache is a
 * turbokv cache, then reports the backend, the K/V types, prefill and decode
 * speed, and the cache's bytes against f16 and f32.
 *
 * Prompt processing is split the same way in every mode so that a saved and
 * reloaded cache continues bit for bit like an uninterrupted run:
 *   1. the prompt (BOS + its tokens) except its last token is prefilled in
 *      one batched call; --save-cache writes the cache at this point;
 *   2. the last prompt token runs alone and yields the first logits;
 *   3. each generated token runs alone (decode).
 * --load-cache replaces step 1: it checks that the file holds exactly the
 * prompt minus its last token (the prompt is re-encoded, so the same
 * --prompt must be given), then continues at step 2.
 */
#include <errno.h>
#include <float.h>
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "llama2.h"
#include "tokenizer.h"
#include "tool.h"

struct run_options {
    const char *model, *tokenizer, *prompt, *backend;
    const char *k_type, *v_type, *scheme;
    const char *save_cache, *load_cache;
    long steps;
    float temp;
    uint64_t seed;
    int json;
};

static int usage(FILE *f)
{
    fprintf(f,
            "usage: turbokv run [options]\n"
            "  --model M         llama2.c model (default: the shipped stories260K.bin)\n"
            "  --tokenizer T     llama2.c tokenizer (default: the shipped tok512.bin)\n"
            "  --prompt TEXT     text to continue (default: none, the story starts at BOS)\n"
            "  -n N              tokens to generate (default 200; prompt + N is clamped to the\n"
            "                    model's seq_len, the cache capacity)\n"
            "  --temp T          0 (default): greedy; else sample softmax(logits / T)\n"
            "  --seed S          seed of the sampler's xorshift64* generator (default 1)\n"
            "  --k-type X, --v-type Y   f32, f16, q8_0, turbo4, turbo3, turbo2\n"
            "  --scheme NAME     the configuration's scheme (TURBO_SCHEME) for this run,\n"
            "                    e.g. turbo3, k8v4; types not given follow the configuration\n"
            "  --backend B       auto, cpu, vulkan, opencl (default: configuration)\n"
            "  --save-cache F    after prefilling the prompt, save the cache to F\n"
            "  --load-cache F    continue from a cache saved with --save-cache and the same\n"
            "                    --prompt; the K/V types come from the file\n"
            "  --json            print one JSON object instead of the text and summary\n");
    return f == stderr ? 2 : 0;
}

static int parse_long(const char *s, long min, long max, long *out)
{
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (errno || end == s || *end || v < min || v > max)
        return -1;
    *out = v;
    return 0;
}

static int parse_args(int argc, char **argv, struct run_options *o)
{
    const char *v;
    *o = (struct run_options){ .steps = 200, .seed = 1 };
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h"))
            exit(usage(stdout));
        else if ((v = tool_opt(argc, argv, &i, "--model")))
            o->model = v;
        else if ((v = tool_opt(argc, argv, &i, "--tokenizer")))
            o->tokenizer = v;
        else if ((v = tool_opt(argc, argv, &i, "--prompt")))
            o->prompt = v;
        else if ((v = tool_opt(argc, argv, &i, "-n"))) {
            if (parse_long(v, 0, 1L << 30, &o->steps) != 0) {
                fprintf(stderr, "turbokv run: -n %s: expected a token count >= 0\n", v);
                return -1;
            }
        } else if ((v = tool_opt(argc, argv, &i, "--temp"))) {
            char *end;
            o->temp = strtof(v, &end);
            if (end == v || *end || !(o->temp >= 0.0f) || !isfinite(o->temp)) {
                fprintf(stderr, "turbokv run: --temp %s: expected a number >= 0\n", v);
                return -1;
            }
        } else if ((v = tool_opt(argc, argv, &i, "--seed"))) {
            char *end;
            errno = 0;
            o->seed = strtoull(v, &end, 0);
            if (errno || end == v || *end || *v == '-') {
                fprintf(stderr, "turbokv run: --seed %s: expected an unsigned integer\n", v);
                return -1;
            }
        } else if ((v = tool_opt(argc, argv, &i, "--k-type")))
            o->k_type = v;
        else if ((v = tool_opt(argc, argv, &i, "--v-type")))
            o->v_type = v;
        else if ((v = tool_opt(argc, argv, &i, "--scheme")))
            o->scheme = v;
        else if ((v = tool_opt(argc, argv, &i, "--backend")))
            o->backend = v;
        else if ((v = tool_opt(argc, argv, &i, "--save-cache")))
            o->save_cache = v;
        else if ((v = tool_opt(argc, argv, &i, "--load-cache")))
            o->load_cache = v;
        else if (!strcmp(argv[i], "--json"))
            o->json = 1;
        else {
            fprintf(stderr, "turbokv run: unknown option '%s'\n", argv[i]);
            usage(stderr);
            return -1;
        }
    }
    if (o->load_cache && (o->k_type || o->v_type || o->scheme)) {
        fprintf(stderr, "turbokv run: --load-cache takes the K/V types from the file; "
                        "drop --k-type, --v-type and --scheme\n");
        return -1;
    }
    if (o->load_cache && o->save_cache) {
        fprintf(stderr, "turbokv run: --save-cache and --load-cache exclude each other\n");
        return -1;
    }
    return 0;
}

/* xorshift64* (Vigna 2016), as llama2.c samples: 32 high bits per draw. */
static uint32_t random_u32(uint64_t *state)
{
    *state ^= *state >> 12;
    *state ^= *state << 25;
    *state ^= *state >> 27;
    return (uint32_t)((*state * 0x2545F4914F6CDD1Dull) >> 32);
}

/* Uniform in [0, 1). */
static float random_f32(uint64_t *state) { return (float)(random_u32(state) >> 8) / 16777216.0f; }


/* Samples from softmax(logits / temp); overwrites logits with the weights. */
static int32_t sample(float *logits, uint32_t n, float temp, uint64_t *rng)
{
    float max = logits[llama2_argmax(logits, n)];
    double sum = 0.0;
    for (uint32_t i = 0; i < n; i++) {
        logits[i] = expf((logits[i] - max) / temp);
        sum += logits[i];
    }
    double r = random_f32(rng) * sum, acc = 0.0;
    for (uint32_t i = 0; i < n; i++) {
        acc += logits[i];
        if (r < acc)
            return (int32_t)i;
    }
    return llama2_argmax(logits, n); /* rounding left r at the very end, or weights were not finite */
}

/* The generated text, as printed (kept for --json). */
struct text {
    char *data;
    size_t len, cap;
};

/* Appends a decoded piece, dropping lone control bytes (as llama2.c's
 * safe_printf does) so raw byte tokens cannot emit NULs or escapes. */
static int text_append(struct text *t, const char *bytes, size_t n, int echo)
{
    if (n == 1 && (unsigned char)bytes[0] < 0x20 && bytes[0] != '\n' && bytes[0] != '\t')
        return 0;
    if (t->len + n + 1 > t->cap) {
        size_t cap = (t->cap ? t->cap * 2 : 1024) + n;
        char *d = realloc(t->data, cap);
        if (!d)
            return -1;
        t->data = d;
        t->cap = cap;
    }
    memcpy(t->data + t->len, bytes, n);
    t->len += n;
    t->data[t->len] = '\0';
    if (echo) {
        fwrite(bytes, 1, n, stdout);
        fflush(stdout);
    }
    return 0;
}

static int type_option(const char *name, const char *what, uint32_t *type)
{
    if (!name) {
        *type = TKV_TYPE_FROM_CONFIG;
        return 0;
    }
    int rc = tkv_type_from_name(name, type);
    if (rc != TKV_OK)
        return tool_fail(what, rc);
    return 0;
}

/* --load-cache: the file's K/V types are read from a first load, then a
 * cache shaped for this model with those types is restored from the file,
 * which checks that the file's shape (layers, heads, head_dim) is this
 * model's. */
static int load_cache(tkv_context *ctx, const struct llama2_model *m, const char *path, tkv_cache **out)
{
    tkv_cache *probe = NULL, *cache = NULL;
    uint32_t n = m->cfg.n_layers;
    uint32_t *kt = calloc(n, sizeof *kt), *vt = calloc(n, sizeof *vt);
    int rc = kt && vt ? tkv_cache_load(ctx, path, &probe) : TKV_ENOMEM;
    for (uint32_t l = 0; rc == TKV_OK && l < n; l++)
        rc = tkv_cache_layer_types(probe, l, &kt[l], &vt[l]);
    if (rc == TKV_OK) {
        struct tkv_cache_params p = llama2_cache_params(m, m->cfg.seq_len, 1, kt[0], vt[0]);
        p.layer_k_types = kt;
        p.layer_v_types = vt;
        rc = tkv_cache_create(ctx, &p, &cache);
    }
    if (rc == TKV_OK)
        rc = tkv_cache_restore(cache, path);
    tkv_cache_destroy(probe);
    free(kt);
    free(vt);
    if (rc != TKV_OK) {
        tkv_cache_destroy(cache);
        char what[1200];
        snprintf(what, sizeof what, "cannot continue from %s with this model", path);
        return tool_fail(what, rc);
    }
    *out = cache;
    return 0;
}

/* "layer 0: K q8_0 V turbo4; layers 1-4: K turbo3 V turbo3", runs of equal layers merged. */
static void print_layer_types(const tkv_cache *cache, uint32_t n_layers)
{
    uint32_t start = 0, k0 = 0, v0 = 0;
    for (uint32_t l = 0; l <= n_layers; l++) {
        uint32_t k = 0, v = 0;
        if (l < n_layers)
            tkv_cache_layer_types(cache, l, &k, &v);
        if (l > 0 && (l == n_layers || k != k0 || v != v0)) {
            if (l - 1 == start)
                printf("%slayer %u: K %s, V %s", start ? "; " : "", start, tkv_type_name(k0), tkv_type_name(v0));
            else
                printf("%slayers %u-%u: K %s, V %s", start ? "; " : "", start, l - 1, tkv_type_name(k0),
                       tkv_type_name(v0));
            start = l;
        }
        k0 = k;
        v0 = v;
    }
    printf("\n");
}

struct run_result {
    struct text text, prompt_text;
    int32_t *generated;
    uint32_t n_generated;
    uint32_t n_prefilled; /* prompt tokens run through the model in this process */
    double prefill_s, decode_s;
};

static void print_json(const struct run_result *r, tkv_context *ctx, const tkv_cache *cache, uint32_t n_layers,
                       const struct tkv_cache_bytes *b)
{
    printf("{\"backend\": ");
    tool_json_string(stdout, tkv_context_backend(ctx));
    printf(", \"device\": ");
    tool_json_string(stdout, tkv_context_device(ctx));
    printf(", \"prompt\": ");
    tool_json_string(stdout, r->prompt_text.data ? r->prompt_text.data : "");
    printf(", \"text\": ");
    tool_json_string(stdout, r->text.data ? r->text.data : "");
    printf(", \"tokens\": [");
    for (uint32_t i = 0; i < r->n_generated; i++)
        printf("%s%d", i ? ", " : "", r->generated[i]);
    printf("], \"prefill_tokens\": %u, \"prefill_tok_per_s\": %.1f, \"decode_tokens\": %u, \"tok_per_s\": %.1f",
           r->n_prefilled, r->prefill_s > 0 ? r->n_prefilled / r->prefill_s : 0.0, r->n_generated,
           r->decode_s > 0 ? r->n_generated / r->decode_s : 0.0);
    printf(", \"kv_bytes\": %" PRIu64 ", \"kv_bytes_f16\": %" PRIu64 ", \"kv_bytes_f32\": %" PRIu64, b->used,
           b->used_f16, b->used_f32);
    for (int which = 0; which < 2; which++) {
        printf(which ? ", \"v_types\": [" : ", \"k_types\": [");
        for (uint32_t l = 0; l < n_layers; l++) {
            uint32_t k = 0, v = 0;
            tkv_cache_layer_types(cache, l, &k, &v);
            printf("%s", l ? ", " : "");
            tool_json_string(stdout, tkv_type_name(which ? v : k));
        }
        printf("]");
    }
    printf("}\n");
}

static void print_summary(const struct run_result *r, tkv_context *ctx, const tkv_cache *cache,
                          const struct llama2_model *m, const struct llama2_state *s, const struct tkv_cache_bytes *b,
                          uint32_t n_cached)
{
    printf("\n\n--- turbokv run: backend %s, device %s\n", tkv_context_backend(ctx), tkv_context_device(ctx));
    printf("K/V types: ");
    print_layer_types(cache, m->cfg.n_layers);
    printf("prefill: %u prompt tokens in %.2f ms (%.0f tok/s); decode: %u tokens in %.2f ms (%.0f tok/s)\n",
           r->n_prefilled, r->prefill_s * 1e3, r->prefill_s > 0 ? r->n_prefilled / r->prefill_s : 0.0,
           r->n_generated, r->decode_s * 1e3, r->decode_s > 0 ? r->n_generated / r->decode_s : 0.0);
    printf("KV cache: %u tokens x %u layers in %" PRIu64 " bytes; as f16: %" PRIu64 " bytes (%.2fx that), "
           "as f32: %" PRIu64 " (%.2fx)\n", n_cached, m->cfg.n_layers, b->used, b->used_f16,
           b->used ? (double)b->used_f16 / b->used : 0.0, b->used_f32, b->used ? (double)b->used_f32 / b->used : 0.0);
    if (s->rows_total)
        printf("sparse V: skipped %" PRIu64 " of %" PRIu64 " V rows (%.1f%%)\n", s->rows_skipped, s->rows_total,
               100.0 * s->rows_skipped / s->rows_total);
}

/* Runs one token and leaves its logits in `logits`. */
static int step(const struct llama2_model *m, struct llama2_state *s, tkv_cache *cache, int32_t token, float *logits)
{
    const uint32_t seq = 0;
    if (llama2_forward(m, s, cache, 1, &seq, 1, &token, 1, logits) != 0) {
        fprintf(stderr, "turbokv run: %s\n", s->error);
        return -1;
    }
    return 0;
}

static int generate(const struct run_options *o, const struct llama2_model *m, const struct tokenizer *tok,
                    tkv_context *ctx, tkv_cache **cache_out, struct llama2_state *s, struct run_result *r)
{
    const struct llama2_config *c = &m->cfg;
    const char *prompt = o->prompt ? o->prompt : "";
    int32_t *ptok = NULL;
    uint32_t n_prompt = 0;
    float *logits = malloc(c->vocab_size * sizeof *logits);
    tkv_cache *cache = NULL;
    int rc = -1;

    if (!logits || tokenizer_encode(tok, prompt, strlen(prompt), 1, &ptok, &n_prompt) != 0) {
        fprintf(stderr, "turbokv run: out of memory\n");
        goto out;
    }
    if (n_prompt > c->seq_len) {
        fprintf(stderr, "turbokv run: the prompt is %u tokens; the model's context (seq_len) is %u\n", n_prompt,
                c->seq_len);
        goto out;
    }
    uint32_t n_new = (uint32_t)(o->steps < (long)(c->seq_len - n_prompt) ? o->steps : (long)(c->seq_len - n_prompt));
    if (llama2_state_init(s, m, n_prompt > 1 ? n_prompt - 1 : 1) != 0 ||
        !(r->generated = malloc((n_new ? n_new : 1) * sizeof *r->generated))) {
        fprintf(stderr, "turbokv run: out of memory\n");
        goto out;
    }

    if (o->load_cache) {
        uint32_t held = 0;
        if (load_cache(ctx, m, o->load_cache, &cache) != 0)
            goto out;
        tkv_cache_length(cache, 0, 0, &held);
        if (held != n_prompt - 1) {
            fprintf(stderr, "turbokv run: %s holds %u tokens, but BOS + this prompt minus its last token is %u: "
                            "give the --prompt it was saved with\n", o->load_cache, held, n_prompt - 1);
            goto out;
        }
        if (!o->json)
            fprintf(stderr, "turbokv run: continuing from %s (%u tokens)\n", o->load_cache, held);
    } else {
        uint32_t k, v;
        if (type_option(o->k_type, "--k-type", &k) != 0 || type_option(o->v_type, "--v-type", &v) != 0)
            goto out;
        struct tkv_cache_params p = llama2_cache_params(m, c->seq_len, 1, k, v);
        int st = tkv_cache_create(ctx, &p, &cache);
        if (st != TKV_OK) {
            tool_fail("cannot create the cache", st);
            goto out;
        }
    }

    double t0 = tool_now();
    if (!o->load_cache && n_prompt > 1) {
        const uint32_t seq = 0;
        if (llama2_forward(m, s, cache, 1, &seq, n_prompt - 1, ptok, 0, NULL) != 0) {
            fprintf(stderr, "turbokv run: %s\n", s->error);
            goto out;
        }
        r->n_prefilled = n_prompt - 1;
    }
    if (o->save_cache) {
        double ts = tool_now();
        int st = tkv_cache_save(cache, o->save_cache);
        if (st != TKV_OK) {
            tool_fail("cannot save the cache", st);
            goto out;
        }
        t0 += tool_now() - ts; /* saving is not prefill time */
        if (!o->json)
            fprintf(stderr, "turbokv run: saved the prompt's cache (%u tokens) to %s\n", n_prompt - 1, o->save_cache);
    }
    if (step(m, s, cache, ptok[n_prompt - 1], logits) != 0)
        goto out;
    r->n_prefilled++;
    r->prefill_s = tool_now() - t0;

    for (uint32_t i = 1; i < n_prompt; i++) {
        const char *bytes;
        size_t len = tokenizer_decode(tok, ptok[i - 1], ptok[i], &bytes);
        if (text_append(&r->prompt_text, bytes, len, !o->json) != 0)
            goto oom;
    }

    uint64_t rng = o->seed ? o->seed : 0x9E3779B97F4A7C15ull; /* xorshift never leaves 0 */
    int32_t prev = ptok[n_prompt - 1];
    double t1 = tool_now();
    for (uint32_t i = 0; i < n_new; i++) {
        int32_t next = o->temp == 0.0f ? llama2_argmax(logits, c->vocab_size) : sample(logits, c->vocab_size, o->temp, &rng);
        if (next == TOKENIZER_BOS || next == TOKENIZER_EOS)
            break; /* the model ends its story */
        r->generated[r->n_generated++] = next;
        const char *bytes;
        size_t len = tokenizer_decode(tok, prev, next, &bytes);
        if (text_append(&r->text, bytes, len, !o->json) != 0)
            goto oom;
        prev = next;
        if (step(m, s, cache, next, logits) != 0)
            goto out;
    }
    r->decode_s = tool_now() - t1;
    *cache_out = cache;
    cache = NULL;
    rc = 0;
    goto out;
oom:
    fprintf(stderr, "turbokv run: out of memory\n");
out:
    tkv_cache_destroy(cache);
    free(ptok);
    free(logits);
    return rc;
}

int tool_run(int argc, char **argv)
{
    struct run_options o;
    char mbuf[4096], tbuf[4096], err[1024];
    struct llama2_model m;
    struct tokenizer tok;
    struct llama2_state s = { 0 };
    struct run_result r = { 0 };
    tkv_cache *cache = NULL;
    tkv_context *ctx = NULL;
    int rc = 1;

    if (parse_args(argc, argv, &o) != 0)
        return 2;
    const char *model = o.model ? o.model : tool_model_path("stories260K.bin", mbuf, sizeof mbuf);
    const char *tpath = o.tokenizer ? o.tokenizer : tool_model_path("tok512.bin", tbuf, sizeof tbuf);
    if (llama2_open(&m, model, err, sizeof err) != 0) {
        fprintf(stderr, "turbokv run: %s\n", err);
        return 1;
    }
    if (tokenizer_open(&tok, tpath, m.cfg.vocab_size, err, sizeof err) != 0) {
        fprintf(stderr, "turbokv run: %s\n", err);
        llama2_close(&m);
        return 1;
    }
    /* --scheme is the configuration's scheme for this process: the library
     * resolves it exactly as it would TURBO_SCHEME. */
    if (o.scheme && setenv("TURBO_SCHEME", o.scheme, 1) != 0)
        fprintf(stderr, "turbokv run: cannot set TURBO_SCHEME: %s\n", strerror(errno));
    else if ((ctx = tool_open_context(o.backend)) &&
             generate(&o, &m, &tok, ctx, &cache, &s, &r) == 0) {
        struct tkv_cache_bytes b;
        uint32_t n_cached = 0;
        tkv_cache_length(cache, 0, 0, &n_cached);
        if (tkv_cache_bytes(cache, &b) != TKV_OK)
            memset(&b, 0, sizeof b);
        if (o.json)
            print_json(&r, ctx, cache, m.cfg.n_layers, &b);
        else
            print_summary(&r, ctx, cache, &m, &s, &b, n_cached);
        rc = 0;
    }
    tkv_cache_destroy(cache);
    tkv_context_close(ctx);
    llama2_state_free(&s);
    free(r.text.data);
    free(r.prompt_text.data);
    free(r.generated);
    tokenizer_close(&tok);
    llama2_close(&m);
    return rc;
}
