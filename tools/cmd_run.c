/* SPDX-License-Identifier: MIT */
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
#include "sampler.h"
#include "tokenizer.h"
#include "tool.h"

struct run_options {
    const char *model, *tokenizer, *prompt, *backend;
    const char *k_type, *v_type, *scheme;
    const char *save_cache, *load_cache;
    long steps, ctx, top_k;
    float temp, top_p;
    uint64_t seed;
    int json;
};

static int usage(FILE *f)
{
    fprintf(f,
            "usage: turbokv run [options] [MODEL]\n"
            "Generates text with a llama2.c model whose K/V cache is a turbokv cache. The text\n"
            "goes to stdout, the statistics to stderr (turbokv run > story.txt keeps the story).\n"
            "  -m, --model M        llama2.c model (also the first non-option argument; default:\n"
            "                       the shipped stories260K.bin)\n"
            "  -z, --tokenizer T    llama2.c tokenizer (default: the shipped tok512.bin)\n"
            "  -p, --prompt TEXT    text to continue (default: none, the story starts at BOS)\n"
            "  -n, --n-predict N    tokens to generate (default 200; stops early at BOS or EOS)\n"
            "  -c, --ctx N          context: cache capacity, prompt + N is clamped to it\n"
            "                       (default: the model's seq_len)\n"
            "  -t, --temp T         temperature; 0 (default): greedy, the most probable token\n"
            "      --top-p P        nucleus sampling: draw among the most probable tokens whose\n"
            "                       probability reaches P, in (0, 1] (default 0.9, as llama2.c)\n"
            "      --top-k K        draw among the K most probable tokens; 0 (default): all\n"
            "  -s, --seed S         seed of the sampler's xorshift64* generator (default 1): the\n"
            "                       same seed gives the same text\n"
            "      --k-type X, --v-type Y  f32, f16, q8_0, turbo4, turbo3, turbo2 (keys also\n"
            "                       turbo3_qjl, turbo4_qjl); a layer policy (TURBO_LAYER_ADAPTIVE)\n"
            "                       still applies per layer\n"
            "      --scheme NAME    the configuration's scheme (TURBO_SCHEME) for this run: auto,\n"
            "                       a type name or kXvY (k8v4: q8_0 keys, turbo4 values); types\n"
            "                       not given follow the configuration\n"
            "      --backend B      auto or a plugin name: cpu, vulkan, opencl, ... (default: configuration)\n"
            "      --save-cache F   after prefilling the prompt, save the cache to F\n"
            "      --load-cache F   continue from a cache saved with --save-cache and the same\n"
            "                       --prompt; the K/V types come from the file\n"
            "      --json           print one JSON object instead of the text and statistics\n"
            "Options take their value as -n 5, -n5, --ctx 5 or --ctx=5; see man turbokv.\n");
    return f == stderr ? 2 : 0;
}

enum {
    O_MODEL = 1, O_TOKENIZER, O_PROMPT, O_STEPS, O_CTX, O_TEMP, O_TOP_P, O_TOP_K, O_SEED,
    O_K_TYPE, O_V_TYPE, O_SCHEME, O_BACKEND, O_SAVE_CACHE, O_LOAD_CACHE, O_JSON,
};

/* The short flags are those llama.cpp and llama2.c users type: -m -p -n -s
 * -c as in llama.cpp, -z and -t as in llama2.c's run (-t is the temperature
 * there; llama.cpp's -t is threads, which the configuration sets). The
 * `also` spellings only feed the suggestion of an unknown option. */
static const struct tool_option options[] = {
    { O_MODEL, 'm', "model", "a llama2.c model file", NULL },
    { O_TOKENIZER, 'z', "tokenizer", "a llama2.c tokenizer file", NULL },
    { O_PROMPT, 'p', "prompt", "the text to continue", "-i --input" },
    { O_STEPS, 'n', "n-predict", "a token count", "--steps --max-tokens" },
    { O_CTX, 'c', "ctx", "a token count", "--context" },
    { O_CTX, 0, "ctx-size", "a token count", NULL },
    { O_TEMP, 't', "temp", "a temperature >= 0", "--temperature" },
    { O_TOP_P, 0, "top-p", "a probability in (0, 1]", "--topp" },
    { O_TOP_K, 0, "top-k", "a token count", "--topk" },
    { O_SEED, 's', "seed", "an unsigned integer", NULL },
    { O_K_TYPE, 0, "k-type", "a type", "-ctk --cache-type-k" },
    { O_V_TYPE, 0, "v-type", "a type", "-ctv --cache-type-v" },
    { O_SCHEME, 0, "scheme", "a scheme", NULL },
    { O_BACKEND, 0, "backend", "auto or a plugin name (cpu, vulkan, opencl, ...)", NULL },
    { O_SAVE_CACHE, 0, "save-cache", "a file to write", NULL },
    { O_LOAD_CACHE, 0, "load-cache", "a file saved with --save-cache", NULL },
    { O_JSON, 0, "json", NULL, NULL },
    { 0, 0, NULL, NULL, NULL },
};

#define KEY_TYPES "f32, f16, q8_0, turbo2, turbo3, turbo4, turbo3_qjl, turbo4_qjl"
#define VALUE_TYPES "f32, f16, q8_0, turbo2, turbo3, turbo4"

/* Checked here, where the error can name the option; the library would
 * name its own function or, for --scheme, TURBO_SCHEME. */
static int check_type(const struct tool_getopt *g, int values)
{
    uint32_t t;
    if (tkv_type_from_name(g->value, &t) != TKV_OK)
        return tool_bad_value(g, values ? "one of " VALUE_TYPES : "one of " KEY_TYPES);
    if (values && tkv_type_is_qjl(t))
        return tool_bad_value(g, "a value type (" VALUE_TYPES "): QJL types are for keys only");
    return 0;
}

/* Returns 0, -1 after an error, or 1 for --help (printed). */
static int parse_args(int argc, char **argv, struct run_options *o)
{
    struct tool_getopt g;
    uint32_t k, v;
    int id;
    *o = (struct run_options){ .steps = 200, .top_p = 0.9f, .seed = 1 };
    tool_getopt_init(&g, "run", options, argc, argv);
    while ((id = tool_getopt_next(&g)) != TOOL_OPT_END) {
        switch (id) {
        case TOOL_OPT_HELP:
            usage(stdout);
            return 1;
        case TOOL_OPT_ERROR:
            tool_getopt_fail(&g);
            return -1;
        case TOOL_OPT_POSITIONAL: /* llama2.c's run takes the model first: turbokv run model.bin */
            if (o->model) {
                fprintf(stderr, "turbokv run: unexpected argument '%s': the model is %s already (turbokv run "
                                "--help lists the options)\n", g.value, o->model);
                return -1;
            }
            o->model = g.value;
            break;
        case O_MODEL:
            o->model = g.value;
            break;
        case O_TOKENIZER:
            o->tokenizer = g.value;
            break;
        case O_PROMPT:
            o->prompt = g.value;
            break;
        case O_STEPS:
            if (tool_value_long(&g, 0, 1L << 30, "a token count >= 0", &o->steps) != 0)
                return -1;
            break;
        case O_CTX:
            if (tool_value_long(&g, 1, 1L << 24, "a token count >= 1", &o->ctx) != 0)
                return -1;
            break;
        case O_TEMP:
            if (tool_value_float(&g, 0.0, 1e6, "a temperature >= 0 (0: greedy)", &o->temp) != 0)
                return -1;
            break;
        case O_TOP_P:
            if (tool_value_float(&g, 0.0, 1.0, "a probability in (0, 1] (1: off)", &o->top_p) != 0)
                return -1;
            if (o->top_p == 0.0f) {
                tool_bad_value(&g, "a probability in (0, 1] (1: off)");
                return -1;
            }
            break;
        case O_TOP_K:
            if (tool_value_long(&g, 0, 1L << 24, "a token count >= 0 (0: off)", &o->top_k) != 0)
                return -1;
            break;
        case O_SEED: {
            char *end;
            errno = 0;
            o->seed = strtoull(g.value, &end, 0);
            if (errno || end == g.value || *end || strchr(g.value, '-')) {
                tool_bad_value(&g, "an unsigned integer");
                return -1;
            }
            break;
        }
        case O_K_TYPE:
            if (check_type(&g, 0) != 0)
                return -1;
            o->k_type = g.value;
            break;
        case O_V_TYPE:
            if (check_type(&g, 1) != 0)
                return -1;
            o->v_type = g.value;
            break;
        case O_SCHEME:
            if (strcmp(g.value, "auto") != 0 && tool_parse_scheme(g.value, &k, &v) != 0) {
                tool_bad_value(&g, "auto or " TOOL_SCHEME_ACCEPTED);
                return -1;
            }
            o->scheme = g.value;
            break;
        case O_BACKEND:
            o->backend = g.value;
            break;
        case O_SAVE_CACHE:
            o->save_cache = g.value;
            break;
        case O_LOAD_CACHE:
            o->load_cache = g.value;
            break;
        case O_JSON:
            o->json = 1;
            break;
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
static int load_cache(tkv_context *ctx, const struct llama2_model *m, uint32_t capacity, const char *path,
                      tkv_cache **out)
{
    tkv_cache *probe = NULL, *cache = NULL;
    uint32_t n = m->cfg.n_layers;
    uint32_t *kt = calloc(n, sizeof *kt), *vt = calloc(n, sizeof *vt);
    int rc = kt && vt ? tkv_cache_load(ctx, path, &probe) : TKV_ENOMEM;
    for (uint32_t l = 0; rc == TKV_OK && l < n; l++)
        rc = tkv_cache_layer_types(probe, l, &kt[l], &vt[l]);
    if (rc == TKV_OK) {
        struct tkv_cache_params p = llama2_cache_params(m, capacity, 1, kt[0], vt[0]);
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
static void print_layer_types(FILE *f, const tkv_cache *cache, uint32_t n_layers)
{
    uint32_t start = 0, k0 = 0, v0 = 0;
    for (uint32_t l = 0; l <= n_layers; l++) {
        uint32_t k = 0, v = 0;
        if (l < n_layers)
            tkv_cache_layer_types(cache, l, &k, &v);
        if (l > 0 && (l == n_layers || k != k0 || v != v0)) {
            if (l - 1 == start)
                fprintf(f, "%slayer %u: K %s, V %s", start ? "; " : "", start, tkv_type_name(k0),
                        tkv_type_name(v0));
            else
                fprintf(f, "%slayers %u-%u: K %s, V %s", start ? "; " : "", start, l - 1, tkv_type_name(k0),
                        tkv_type_name(v0));
            start = l;
        }
        k0 = k;
        v0 = v;
    }
    fprintf(f, "\n");
}

struct run_result {
    struct text text, prompt_text;
    int32_t *generated;
    uint32_t n_generated;
    uint32_t n_prefilled; /* prompt tokens run through the model in this process */
    double prefill_s, decode_s;
};

static void print_json(const struct run_options *o, const struct run_result *r, tkv_context *ctx,
                       const tkv_cache *cache, uint32_t n_layers, uint32_t ctx_len, const struct tkv_cache_bytes *b)
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
    printf("], \"ctx\": %u, \"temp\": %g, \"top_p\": %g, \"top_k\": %ld, \"seed\": %" PRIu64, ctx_len, o->temp,
           o->top_p, o->top_k, o->seed);
    printf(", \"prefill_tokens\": %u, \"prefill_tok_per_s\": %.1f, \"decode_tokens\": %u, \"tok_per_s\": %.1f",
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

/* The statistics go to stderr: stdout holds the text alone. */
static void print_summary(const struct run_result *r, tkv_context *ctx, const tkv_cache *cache,
                          const struct llama2_model *m, const struct llama2_state *s, const struct tkv_cache_bytes *b,
                          uint32_t n_cached)
{
    FILE *f = stderr;
    fprintf(f, "\n--- turbokv run: backend %s, device %s\n", tkv_context_backend(ctx), tkv_context_device(ctx));
    fprintf(f, "K/V types: ");
    print_layer_types(f, cache, m->cfg.n_layers);
    fprintf(f, "prefill: %u prompt tokens in %.2f ms (%.0f tok/s); decode: %u tokens in %.2f ms (%.0f tok/s)\n",
            r->n_prefilled, r->prefill_s * 1e3, r->prefill_s > 0 ? r->n_prefilled / r->prefill_s : 0.0,
            r->n_generated, r->decode_s * 1e3, r->decode_s > 0 ? r->n_generated / r->decode_s : 0.0);
    fprintf(f, "KV cache: %u tokens x %u layers in %" PRIu64 " bytes; as f16: %" PRIu64 " bytes (%.2fx that), "
               "as f32: %" PRIu64 " (%.2fx)\n", n_cached, m->cfg.n_layers, b->used, b->used_f16,
            b->used ? (double)b->used_f16 / b->used : 0.0, b->used_f32,
            b->used ? (double)b->used_f32 / b->used : 0.0);
    if (s->rows_total)
        fprintf(f, "sparse V: skipped %" PRIu64 " of %" PRIu64 " V rows (%.1f%%)\n", s->rows_skipped, s->rows_total,
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
                    uint32_t ctx_len, tkv_context *ctx, tkv_cache **cache_out, struct llama2_state *s,
                    struct run_result *r)
{
    const struct llama2_config *c = &m->cfg;
    const char *prompt = o->prompt ? o->prompt : "";
    int32_t *ptok = NULL;
    uint32_t n_prompt = 0;
    float *logits = malloc(c->vocab_size * sizeof *logits);
    struct tokenizer_unknown unknown;
    struct sampler sampler = { 0 };
    tkv_cache *cache = NULL;
    int rc = -1;

    if (!logits || tokenizer_encode(tok, prompt, strlen(prompt), 1, &ptok, &n_prompt, &unknown) != 0 ||
        sampler_init(&sampler, c->vocab_size, o->temp, o->top_p, (uint32_t)o->top_k, o->seed) != 0) {
        fprintf(stderr, "turbokv run: out of memory\n");
        goto out;
    }
    if (unknown.count)
        fprintf(stderr, "turbokv run: the tokenizer has no piece and no byte piece for %u character%s of the "
                        "prompt (the first at byte %zu): %s <unk> (id %d)\n", unknown.count,
                unknown.count > 1 ? "s" : "", unknown.first_offset, unknown.count > 1 ? "each became" : "it became",
                TOKENIZER_UNK);
    if (n_prompt > ctx_len) {
        fprintf(stderr, "turbokv run: the prompt is %u tokens (BOS included), more than the context of %u%s\n",
                n_prompt, ctx_len, o->ctx ? " (-c)" : " (the model's seq_len; -c sets it)");
        goto out;
    }
    uint32_t n_new = (uint32_t)(o->steps < (long)(ctx_len - n_prompt) ? o->steps : (long)(ctx_len - n_prompt));
    if (llama2_state_init(s, m, n_prompt > 1 ? n_prompt - 1 : 1) != 0 ||
        !(r->generated = malloc((n_new ? n_new : 1) * sizeof *r->generated))) {
        fprintf(stderr, "turbokv run: out of memory\n");
        goto out;
    }

    if (o->load_cache) {
        uint32_t held = 0;
        if (load_cache(ctx, m, ctx_len, o->load_cache, &cache) != 0)
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
        struct tkv_cache_params p = llama2_cache_params(m, ctx_len, 1, k, v);
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

    int32_t prev = ptok[n_prompt - 1];
    double t1 = tool_now();
    for (uint32_t i = 0; i < n_new; i++) {
        int32_t next = sampler_next(&sampler, logits);
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
    if (!o->json) {
        putchar('\n'); /* the text ends with a newline, the statistics follow on stderr */
        fflush(stdout);
    }
    *cache_out = cache;
    cache = NULL;
    rc = 0;
    goto out;
oom:
    fprintf(stderr, "turbokv run: out of memory\n");
out:
    tkv_cache_destroy(cache);
    sampler_free(&sampler);
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

    int parsed = parse_args(argc, argv, &o);
    if (parsed != 0)
        return parsed > 0 ? 0 : 2;
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
    uint32_t ctx_len = o.ctx ? (uint32_t)o.ctx : m.cfg.seq_len;
    if (ctx_len > m.cfg.seq_len)
        fprintf(stderr, "turbokv run: -c %u is past the context the model was trained for (seq_len %u): text "
                        "after position %u is out of its training\n", ctx_len, m.cfg.seq_len, m.cfg.seq_len);
    /* --scheme is the configuration's scheme for this process: the library
     * resolves it exactly as it would TURBO_SCHEME (parse_args checked it,
     * so an error names --scheme, not a variable the user never set). */
    if (o.scheme && setenv("TURBO_SCHEME", o.scheme, 1) != 0)
        fprintf(stderr, "turbokv run: cannot set TURBO_SCHEME: %s\n", strerror(errno));
    else if ((ctx = tool_open_context(o.backend)) &&
             generate(&o, &m, &tok, ctx_len, ctx, &cache, &s, &r) == 0) {
        struct tkv_cache_bytes b;
        uint32_t n_cached = 0;
        tkv_cache_length(cache, 0, 0, &n_cached);
        if (tkv_cache_bytes(cache, &b) != TKV_OK)
            memset(&b, 0, sizeof b);
        if (o.json)
            print_json(&o, &r, ctx, cache, m.cfg.n_layers, ctx_len, &b);
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
