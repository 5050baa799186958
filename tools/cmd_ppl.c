/*
 * `turbokv ppl`: perplexity of a text under several K/V cache schemes in one
 * run, against an f32 cache as the baseline. Tokens are fed one at a time,
 * as generation uses the cache: every token's K/V is quantized on append
 * and each next-token prediction attends over the compressed cache.
 */
#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "llama2.h"
#include "npy.h"
#include "tokenizer.h"
#include "tool.h"

#define DEFAULT_SCHEMES "f32,f16,q8_0,turbo4,turbo3,turbo2,k8v4,k8v3,default"
#define MAX_SCHEMES 64

struct scheme {
    const char *name;          /* as given in --types */
    uint32_t k, v;             /* requested types (TKV_TYPE_FROM_CONFIG for "default") */
    char label[96];            /* name, or "default (K turbo3, V turbo3)" */
    char k_desc[96], v_desc[96]; /* the types the cache used (per layer when they differ) */
    double bits_per_value;
    uint64_t kv_bytes;
    double nll, ppl;
    uint64_t rows_total, rows_skipped;
};

static int usage(FILE *f)
{
    fprintf(f,
            "usage: turbokv ppl [options]\n"
            "  --model M      llama2.c model (default: the shipped stories260K.bin)\n"
            "  --tokenizer T  llama2.c tokenizer (default: the shipped tok512.bin)\n"
            "  --text F       UTF-8 text, tokenized with BOS (default: the shipped\n"
            "                 tinystories_val_head.txt)\n"
            "  --tokens F     int32 .npy of token ids instead of a text (e.g. s260k_tokens.npy)\n"
            "  --ctx N        tokens evaluated, from the start (default and maximum: seq_len)\n"
            "  --types LIST   comma-separated schemes (default " DEFAULT_SCHEMES "):\n"
            "                 f32, f16, q8_0, turbo4, turbo3, turbo2 (K and V alike),\n"
            "                 kXvY with X, Y in 32, 16, 8, 4, 3, 2 (k8v3 = q8_0 keys,\n"
            "                 turbo3 values), default (the configuration decides);\n"
            "                 f32, the baseline, is always measured\n"
            "  --backend B    auto, cpu, vulkan, opencl (default: configuration)\n"
            "  --json         print a JSON array instead of the table\n");
    return f == stderr ? 2 : 0;
}

/* kXvY digits -> type name. */
static const char *bits_type_name(const char *digits, size_t n)
{
    static const struct { const char *digits, *type; } table[] = {
        { "32", "f32" }, { "16", "f16" }, { "8", "q8_0" }, { "4", "turbo4" }, { "3", "turbo3" }, { "2", "turbo2" },
    };
    for (size_t i = 0; i < sizeof table / sizeof table[0]; i++)
        if (strlen(table[i].digits) == n && !strncmp(table[i].digits, digits, n))
            return table[i].type;
    return NULL;
}

static int parse_scheme(const char *name, struct scheme *s)
{
    memset(s, 0, sizeof *s);
    s->name = name;
    snprintf(s->label, sizeof s->label, "%s", name);
    if (!strcmp(name, "default")) {
        s->k = s->v = TKV_TYPE_FROM_CONFIG;
        return 0;
    }
    const char *vpos = name[0] == 'k' ? strchr(name, 'v') : NULL;
    if (vpos) {
        const char *kname = bits_type_name(name + 1, (size_t)(vpos - name - 1));
        const char *vname = bits_type_name(vpos + 1, strlen(vpos + 1));
        if (kname && vname && tkv_type_from_name(kname, &s->k) == TKV_OK &&
            tkv_type_from_name(vname, &s->v) == TKV_OK)
            return 0;
    } else if (tkv_type_from_name(name, &s->k) == TKV_OK) {
        s->v = s->k;
        return 0;
    }
    fprintf(stderr, "turbokv ppl: unknown scheme '%s' (f32, f16, q8_0, turbo4, turbo3, turbo2, kXvY with X, Y "
                    "in 32, 16, 8, 4, 3, 2, or default)\n", name);
    return -1;
}

/* The types a cache used for K (which 0) or V: one name, or the per-layer list. */
static void describe_types(const tkv_cache *cache, uint32_t n_layers, int which, char *out, size_t size)
{
    uint32_t first = 0, uniform = 1;
    size_t n = 0;
    out[0] = '\0';
    for (uint32_t l = 0; l < n_layers; l++) {
        uint32_t k = 0, v = 0;
        tkv_cache_layer_types(cache, l, &k, &v);
        uint32_t t = which ? v : k;
        if (l == 0)
            first = t;
        uniform &= t == first;
        if (n < size)
            n += (size_t)snprintf(out + n, size - n, "%s%s", l ? "," : "", tkv_type_name(t));
    }
    if (uniform)
        snprintf(out, size, "%s", tkv_type_name(first));
}

static double mean_bits(const tkv_cache *cache, const struct llama2_config *c)
{
    double sum = 0.0;
    for (uint32_t l = 0; l < c->n_layers; l++) {
        uint32_t k = 0, v = 0;
        tkv_cache_layer_types(cache, l, &k, &v);
        sum += tkv_type_bits_per_value(k, c->head_dim) + tkv_type_bits_per_value(v, c->head_dim);
    }
    return sum / (2.0 * c->n_layers);
}

/* -log softmax(logits)[target], in double. */
static double nll_of(const float *logits, uint32_t n, int32_t target)
{
    float max = logits[0];
    for (uint32_t i = 1; i < n; i++)
        if (logits[i] > max)
            max = logits[i];
    double sum = 0.0;
    for (uint32_t i = 0; i < n; i++)
        sum += exp((double)logits[i] - max);
    return log(sum) + max - logits[target];
}

static int evaluate(tkv_context *ctx, const struct llama2_model *m, const int32_t *tokens, uint32_t n,
                    struct scheme *s, uint64_t *done, uint64_t total)
{
    const struct llama2_config *c = &m->cfg;
    struct tkv_cache_params p = llama2_cache_params(m, n, 1, s->k, s->v);
    struct llama2_state st;
    tkv_cache *cache = NULL;
    float *logits = malloc(c->vocab_size * sizeof *logits);
    int rc = tkv_cache_create(ctx, &p, &cache);
    char what[160];
    if (rc != TKV_OK) {
        snprintf(what, sizeof what, "scheme %s: cannot create the cache", s->name);
        free(logits);
        return tool_fail(what, rc);
    }
    if (!logits || llama2_state_init(&st, m, 1) != 0) {
        fprintf(stderr, "turbokv ppl: out of memory\n");
        free(logits);
        tkv_cache_destroy(cache);
        return 1;
    }
    describe_types(cache, c->n_layers, 0, s->k_desc, sizeof s->k_desc);
    describe_types(cache, c->n_layers, 1, s->v_desc, sizeof s->v_desc);
    if (s->k == TKV_TYPE_FROM_CONFIG) {
        char label[sizeof s->label];
        snprintf(label, sizeof label, "default (K %s, V %s)", s->k_desc, s->v_desc);
        memcpy(s->label, label, sizeof label);
    }
    s->bits_per_value = mean_bits(cache, c);

    char progress[128];
    snprintf(progress, sizeof progress, "ppl %s", s->name);
    double sum = 0.0;
    const uint32_t seq = 0;
    rc = 0;
    for (uint32_t t = 0; t + 1 < n; t++) {
        if (llama2_forward(m, &st, cache, 1, &seq, 1, &tokens[t], 1, logits) != 0) {
            fprintf(stderr, "turbokv ppl: scheme %s, token %u: %s\n", s->name, t, st.error);
            rc = 1;
            break;
        }
        if (tokens[t + 1] < 0 || (uint32_t)tokens[t + 1] >= c->vocab_size) {
            fprintf(stderr, "turbokv ppl: token %u is %d, outside the vocabulary (0..%u)\n", t + 1, tokens[t + 1],
                    c->vocab_size - 1);
            rc = 1;
            break;
        }
        sum += nll_of(logits, c->vocab_size, tokens[t + 1]);
        tool_progress(progress, ++*done, total);
    }
    if (rc == 0) {
        struct tkv_cache_bytes b = { 0 };
        tkv_cache_bytes(cache, &b);
        s->kv_bytes = b.used;
        s->nll = sum / (n - 1);
        s->ppl = exp(s->nll);
        s->rows_total = st.rows_total;
        s->rows_skipped = st.rows_skipped;
    }
    llama2_state_free(&st);
    free(logits);
    tkv_cache_destroy(cache);
    return rc;
}

/* Reads at most limit bytes of a text file. */
static char *read_text(const char *path, size_t limit, size_t *len)
{
    FILE *f = fopen(path, "rb");
    if (!f) {
        fprintf(stderr, "turbokv ppl: %s: cannot open: %s\n", path, strerror(errno));
        return NULL;
    }
    char *buf = malloc(limit ? limit : 1);
    size_t n = buf ? fread(buf, 1, limit, f) : 0;
    if (!buf || ferror(f)) {
        fprintf(stderr, "turbokv ppl: %s: %s\n", path, buf ? "read error" : "out of memory");
        free(buf);
        buf = NULL;
    }
    fclose(f);
    *len = n;
    return buf;
}

/* The tokens to evaluate, *n clamped to what the source holds. */
static int32_t *load_tokens(const char *text_path, const char *npy_path, const struct tokenizer *tok, uint32_t *n)
{
    int32_t *tokens = NULL;
    uint32_t have = 0;
    if (npy_path) {
        struct npy_array a;
        char err[1024];
        if (npy_read(npy_path, NPY_INT32, &a, err, sizeof err) != 0) {
            fprintf(stderr, "turbokv ppl: %s\n", err);
            return NULL;
        }
        if (a.ndim != 1) {
            fprintf(stderr, "turbokv ppl: %s: expected a 1-D array of token ids, got %u dimensions\n", npy_path,
                    a.ndim);
            npy_free(&a);
            return NULL;
        }
        tokens = a.data;
        have = a.count > UINT32_MAX ? UINT32_MAX : (uint32_t)a.count;
    } else {
        /* Only the first *n tokens are used, and they span at most
         * *n x max_token_length bytes. Tokenizing costs about 90 bytes of
         * memory per byte of text, so a large corpus is read only up to a
         * limit far past those bytes: a merge joins neighbouring pieces
         * only, so the cut changes the tokens next to it, not the first ones. */
        size_t len, limit = (size_t)8 * *n * tok->max_token_length;
        char *text = read_text(text_path, limit > (1u << 20) ? limit : (1u << 20), &len);
        if (!text)
            return NULL;
        int rc = tokenizer_encode(tok, text, len, 1, &tokens, &have);
        free(text);
        if (rc != 0) {
            fprintf(stderr, "turbokv ppl: out of memory tokenizing %s\n", text_path);
            return NULL;
        }
    }
    if (have < *n)
        *n = have;
    if (*n < 2) {
        fprintf(stderr, "turbokv ppl: %s holds %u tokens; at least 2 are needed\n", npy_path ? npy_path : text_path,
                have);
        free(tokens);
        return NULL;
    }
    return tokens;
}

static void print_table(const struct scheme *s, int n, uint32_t n_tokens, const char *source, tkv_context *ctx)
{
    printf("perplexity over %u tokens of %s, backend %s (%s); baseline: f32 cache\n\n", n_tokens, source,
           tkv_context_backend(ctx), tkv_context_device(ctx));
    printf("%-30s %-14s %-14s %9s %10s %8s %8s %9s %8s\n", "scheme", "K type", "V type", "bits/val", "KV bytes",
           "PPL", "dPPL %", "mean NLL", "V skip%");
    for (int i = 0; i < n; i++)
        printf("%-30s %-14s %-14s %9.3f %10" PRIu64 " %8.4f %+8.3f %9.5f %8.1f\n", s[i].label, s[i].k_desc,
               s[i].v_desc, s[i].bits_per_value, s[i].kv_bytes, s[i].ppl, 100.0 * (s[i].ppl / s[0].ppl - 1.0),
               s[i].nll, s[i].rows_total ? 100.0 * s[i].rows_skipped / s[i].rows_total : 0.0);
}

static void print_json(const struct scheme *s, int n, uint32_t n_tokens)
{
    printf("[");
    for (int i = 0; i < n; i++) {
        printf("%s\n  {\"scheme\": ", i ? "," : "");
        tool_json_string(stdout, s[i].label);
        printf(", \"k_type\": ");
        tool_json_string(stdout, s[i].k_desc);
        printf(", \"v_type\": ");
        tool_json_string(stdout, s[i].v_desc);
        printf(", \"bits_per_value\": %.4f, \"kv_bytes\": %" PRIu64 ", \"tokens\": %u, \"ppl\": %.6f, "
               "\"delta_ppl_pct\": %.4f, \"nll\": %.6f, \"sparse_v_skipped_pct\": %.3f}",
               s[i].bits_per_value, s[i].kv_bytes, n_tokens, s[i].ppl, 100.0 * (s[i].ppl / s[0].ppl - 1.0), s[i].nll,
               s[i].rows_total ? 100.0 * s[i].rows_skipped / s[i].rows_total : 0.0);
    }
    printf("\n]\n");
}

int tool_ppl(int argc, char **argv)
{
    const char *model = NULL, *tpath = NULL, *text = NULL, *npy = NULL, *backend = NULL, *v;
    char types[1024] = DEFAULT_SCHEMES; /* tool_split splits in place */
    long ctx_len = 0;
    int json = 0;

    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h"))
            return usage(stdout);
        else if ((v = tool_opt(argc, argv, &i, "--model")))
            model = v;
        else if ((v = tool_opt(argc, argv, &i, "--tokenizer")))
            tpath = v;
        else if ((v = tool_opt(argc, argv, &i, "--text")))
            text = v;
        else if ((v = tool_opt(argc, argv, &i, "--tokens")))
            npy = v;
        else if ((v = tool_opt(argc, argv, &i, "--ctx"))) {
            char *end;
            errno = 0;
            ctx_len = strtol(v, &end, 10);
            if (errno || end == v || *end || ctx_len < 2) {
                fprintf(stderr, "turbokv ppl: --ctx %s: expected a token count >= 2\n", v);
                return 2;
            }
        } else if ((v = tool_opt(argc, argv, &i, "--types"))) {
            if (strlen(v) >= sizeof types) {
                fprintf(stderr, "turbokv ppl: --types: list too long\n");
                return 2;
            }
            strcpy(types, v);
        } else if ((v = tool_opt(argc, argv, &i, "--backend")))
            backend = v;
        else if (!strcmp(argv[i], "--json"))
            json = 1;
        else {
            fprintf(stderr, "turbokv ppl: unknown option '%s'\n", argv[i]);
            return usage(stderr);
        }
    }
    if (text && npy) {
        fprintf(stderr, "turbokv ppl: give --text or --tokens, not both\n");
        return 2;
    }

    /* f32 first: it is the baseline of every delta */
    char *items[MAX_SCHEMES];
    struct scheme schemes[MAX_SCHEMES + 1];
    int n_items = tool_split(types, items, MAX_SCHEMES), n_schemes = 1;
    parse_scheme("f32", &schemes[0]);
    for (int i = 0; i < n_items; i++) {
        if (!strcmp(items[i], "f32"))
            continue;
        if (parse_scheme(items[i], &schemes[n_schemes]) != 0)
            return 2;
        n_schemes++;
    }

    char mbuf[4096], tbuf[4096], xbuf[4096], err[1024];
    if (!model)
        model = tool_model_path("stories260K.bin", mbuf, sizeof mbuf);
    if (!tpath)
        tpath = tool_model_path("tok512.bin", tbuf, sizeof tbuf);
    if (!text && !npy)
        text = tool_model_path("tinystories_val_head.txt", xbuf, sizeof xbuf);

    struct llama2_model m;
    struct tokenizer tok;
    if (llama2_open(&m, model, err, sizeof err) != 0) {
        fprintf(stderr, "turbokv ppl: %s\n", err);
        return 1;
    }
    if (tokenizer_open(&tok, tpath, m.cfg.vocab_size, err, sizeof err) != 0) {
        fprintf(stderr, "turbokv ppl: %s\n", err);
        llama2_close(&m);
        return 1;
    }
    uint32_t n = m.cfg.seq_len;
    if (ctx_len > 0 && (unsigned long)ctx_len < n)
        n = (uint32_t)ctx_len;
    int32_t *tokens = load_tokens(text, npy, &tok, &n);
    tkv_context *ctx = tokens ? tool_open_context(backend) : NULL;
    int rc = 1;
    if (ctx) {
        uint64_t done = 0, total = (uint64_t)n_schemes * (n - 1);
        rc = 0;
        for (int i = 0; i < n_schemes && rc == 0; i++)
            rc = evaluate(ctx, &m, tokens, n, &schemes[i], &done, total);
        tool_progress_end();
        if (rc == 0 && json)
            print_json(schemes, n_schemes, n);
        else if (rc == 0)
            print_table(schemes, n_schemes, n, npy ? npy : text, ctx);
    }
    tkv_context_close(ctx);
    free(tokens);
    tokenizer_close(&tok);
    llama2_close(&m);
    return rc;
}
