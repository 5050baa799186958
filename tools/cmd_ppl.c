/* SPDX-License-Identifier: MIT */
/*
 * `turbokv ppl`: perplexity of a text under several K/V cache schemes in one
 * run, against an f32 cache as the baseline. Tokens are fed one at a time,
 * as generation uses the cache: every token's K/V is quantized on append
 * and each next-token prediction attends over the compressed cache.
 *
 * The text is scored in consecutive windows of --ctx tokens (the first
 * --chunks of them, or all): each window starts on an empty cache, as the
 * model's training windows start mid-text, and its first token is context
 * only, so a window of c tokens scores c - 1 predictions. A last window
 * shorter than --ctx is left out, unless it is the only one. The figures of
 * a scheme are over all windows (PPL = exp(mean NLL of every prediction),
 * which with equal windows is exp of the mean of the window NLLs), with the
 * standard deviation across windows of the window PPL and of its change
 * against f32 on the same window.
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
    uint64_t kv_bytes;         /* one window's cache, full */
    double nll, ppl;           /* over all windows */
    double *window_nll;        /* [n_windows] mean NLL of each window */
    double ppl_sd, delta_sd;   /* across windows: window PPL, and its change against f32 in percent */
    uint64_t rows_total, rows_skipped;
};

/* The windows scored: n of len tokens each, consecutive from token 0. */
struct windows {
    uint32_t n, len;
};

static int usage(FILE *f)
{
    fprintf(f,
            "usage: turbokv ppl [options]\n"
            "Perplexity of a text under each K/V scheme, against an f32 cache, scored in consecutive\n"
            "windows of --ctx tokens, each on an empty cache.\n"
            "  -m, --model M      llama2.c model (default: the shipped stories260K.bin)\n"
            "  -z, --tokenizer T  llama2.c tokenizer (default: the shipped tok512.bin)\n"
            "  -f, --text F       UTF-8 text, tokenized with BOS (default: the shipped\n"
            "                     tinystories_val_head.txt)\n"
            "      --tokens F     int32 .npy of token ids instead of a text (e.g. s260k_tokens.npy)\n"
            "  -c, --ctx N        tokens per window, >= 2 (default: the model's seq_len)\n"
            "      --chunks N     windows to score from the start of the text (default 1), or\n"
            "                     all: the whole text (a last, shorter window is left out)\n"
            "      --types LIST   comma-separated schemes (default " DEFAULT_SCHEMES "):\n"
            "                     f32, f16, q8_0, turbo4, turbo3, turbo2 (K and V alike),\n"
            "                     kXvY with X, Y in 32, 16, 8, 4, 3, 2 (k8v3 = q8_0 keys,\n"
            "                     turbo3 values), K/V type names (turbo4o/turbo3), any\n"
            "                     type name, default (the configuration decides);\n"
            "                     f32, the baseline, is always measured\n"
            "      --backend B    auto or a plugin name: cpu, vulkan, opencl, ... (default: configuration)\n"
            "      --json         print a JSON array instead of the table, with the figures of\n"
            "                     every window\n"
            "Options take their value as -c 256, -c256, --ctx 256 or --ctx=256; see man turbokv.\n");
    return f == stderr ? 2 : 0;
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
    if (tool_parse_scheme(name, &s->k, &s->v) == 0)
        return 0;
    fprintf(stderr, "turbokv ppl: --types: unknown scheme '%s': expected default or " TOOL_SCHEME_ACCEPTED "\n",
            name);
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

static int evaluate(tkv_context *ctx, const struct llama2_model *m, const int32_t *tokens, struct windows w,
                    struct scheme *s, uint64_t *done, uint64_t total)
{
    const struct llama2_config *c = &m->cfg;
    struct tkv_cache_params p = llama2_cache_params(m, w.len, 1, s->k, s->v);
    struct llama2_state st;
    tkv_cache *cache = NULL;
    float *logits = malloc(c->vocab_size * sizeof *logits);
    s->window_nll = calloc(w.n, sizeof *s->window_nll);
    int rc = tkv_cache_create(ctx, &p, &cache);
    char what[160];
    if (rc != TKV_OK) {
        snprintf(what, sizeof what, "scheme %s: cannot create the cache", s->name);
        free(logits);
        return tool_fail(what, rc);
    }
    if (!logits || !s->window_nll || llama2_state_init(&st, m, 1) != 0) {
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
    double all = 0.0;
    const uint32_t seq = 0;
    rc = 0;
    for (uint32_t wi = 0; wi < w.n && rc == 0; wi++) {
        const int32_t *tok = tokens + (size_t)wi * w.len;
        double sum = 0.0;
        if (wi > 0 && (rc = tkv_cache_clear(cache, seq)) != TKV_OK) {
            rc = tool_fail("cannot clear the cache", rc);
            break;
        }
        for (uint32_t t = 0; t + 1 < w.len; t++) {
            if (llama2_forward(m, &st, cache, 1, &seq, 1, &tok[t], 1, logits) != 0) {
                fprintf(stderr, "turbokv ppl: scheme %s, token %zu: %s\n", s->name, (size_t)wi * w.len + t,
                        st.error);
                rc = 1;
                break;
            }
            if (tok[t + 1] < 0 || (uint32_t)tok[t + 1] >= c->vocab_size) {
                fprintf(stderr, "turbokv ppl: token %zu is %d, outside the vocabulary (0..%u)\n",
                        (size_t)wi * w.len + t + 1, tok[t + 1], c->vocab_size - 1);
                rc = 1;
                break;
            }
            sum += nll_of(logits, c->vocab_size, tok[t + 1]);
            tool_progress(progress, ++*done, total);
        }
        if (rc == 0 && wi == 0) {
            struct tkv_cache_bytes b = { 0 };
            tkv_cache_bytes(cache, &b);
            s->kv_bytes = b.used;
        }
        s->window_nll[wi] = sum / (w.len - 1);
        all += s->window_nll[wi];
    }
    if (rc == 0) {
        s->nll = all / w.n;
        s->ppl = exp(s->nll);
        s->rows_total = st.rows_total;
        s->rows_skipped = st.rows_skipped;
    }
    llama2_state_free(&st);
    free(logits);
    tkv_cache_destroy(cache);
    return rc;
}

/* Sample standard deviation across the windows (NAN for one window): of the
 * window PPL, and of its change against f32 on the same window, in percent. */
static void spread(struct scheme *s, const struct scheme *f32, uint32_t n)
{
    double sp = 0.0, sp2 = 0.0, sd = 0.0, sd2 = 0.0;
    for (uint32_t i = 0; i < n; i++) {
        double ppl = exp(s->window_nll[i]), d = 100.0 * (ppl / exp(f32->window_nll[i]) - 1.0);
        sp += ppl;
        sp2 += ppl * ppl;
        sd += d;
        sd2 += d * d;
    }
    if (n < 2) {
        s->ppl_sd = s->delta_sd = NAN;
        return;
    }
    double vp = (sp2 - sp * sp / n) / (n - 1), vd = (sd2 - sd * sd / n) / (n - 1);
    s->ppl_sd = sqrt(vp > 0 ? vp : 0);
    s->delta_sd = sqrt(vd > 0 ? vd : 0);
}

/* Reads at most limit bytes of a text file (SIZE_MAX: all of it). */
static char *read_text(const char *path, size_t limit, size_t *len)
{
    FILE *f = fopen(path, "rb");
    if (!f) {
        fprintf(stderr, "turbokv ppl: %s: cannot open: %s\n", path, strerror(errno));
        return NULL;
    }
    size_t cap = limit < (1u << 20) ? limit : (1u << 20), n = 0;
    char *buf = malloc(cap ? cap : 1);
    while (buf && n < limit) {
        if (n == cap) {
            size_t more = cap <= (limit - cap) ? 2 * cap : limit;
            char *bigger = more > cap ? realloc(buf, more) : NULL;
            if (!bigger) {
                free(buf);
                buf = NULL;
                break;
            }
            buf = bigger;
            cap = more;
        }
        size_t got = fread(buf + n, 1, cap - n, f);
        n += got;
        if (got == 0)
            break;
    }
    if (!buf || ferror(f)) {
        fprintf(stderr, "turbokv ppl: %s: %s\n", path, buf ? "read error" : "out of memory");
        free(buf);
        buf = NULL;
    }
    fclose(f);
    *len = n;
    return buf;
}

/* The tokens of the source, *have of them: at least the first `want`
 * (UINT32_MAX: all), as many as there are. */
static int32_t *load_tokens(const char *text_path, const char *npy_path, const struct tokenizer *tok, uint32_t want,
                            uint32_t *have)
{
    int32_t *tokens = NULL;
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
        *have = a.count > UINT32_MAX ? UINT32_MAX : (uint32_t)a.count;
    } else {
        /* Only the first `want` tokens are used, and they span at most
         * want x max_token_length bytes. Tokenizing costs about 90 bytes of
         * memory per byte of text, so a large corpus is read only up to a
         * limit far past those bytes: a merge joins neighbouring pieces
         * only, so the cut changes the tokens next to it, not the first ones. */
        size_t len, limit = want == UINT32_MAX ? SIZE_MAX : (size_t)8 * want * tok->max_token_length;
        struct tokenizer_unknown unknown;
        char *text = read_text(text_path, limit > (1u << 20) ? limit : (1u << 20), &len);
        if (!text)
            return NULL;
        int rc = tokenizer_encode(tok, text, len, 1, &tokens, have, &unknown);
        free(text);
        if (rc != 0) {
            fprintf(stderr, "turbokv ppl: out of memory tokenizing %s\n", text_path);
            return NULL;
        }
        if (unknown.count)
            fprintf(stderr, "turbokv ppl: %s: the tokenizer has no piece and no byte piece for %u character%s "
                            "(the first at byte %zu): each became <unk> (id %d)\n", text_path, unknown.count,
                    unknown.count > 1 ? "s" : "", unknown.first_offset, TOKENIZER_UNK);
    }
    if (*have < 2) {
        fprintf(stderr, "turbokv ppl: %s holds %u tokens; at least 2 are needed\n", npy_path ? npy_path : text_path,
                *have);
        free(tokens);
        return NULL;
    }
    return tokens;
}

static void print_table(const struct scheme *s, int n, struct windows w, const char *source, tkv_context *ctx)
{
    printf("perplexity of %s in %u window%s of %u tokens (%llu predictions), backend %s (%s); baseline: f32 "
           "cache\n", source, w.n, w.n > 1 ? "s" : "", w.len, (unsigned long long)w.n * (w.len - 1),
           tkv_context_backend(ctx), tkv_context_device(ctx));
    if (w.n > 1)
        printf("PPL = exp(mean NLL) over all windows; sd: standard deviation across windows of the window PPL "
               "and of its dPPL\n");
    printf("\n%-30s %-14s %-14s %9s %10s %8s %7s %8s %7s %9s %8s\n", "scheme", "K type", "V type", "bits/val",
           "KV bytes", "PPL", "sd", "dPPL %", "sd", "mean NLL", "V skip%");
    for (int i = 0; i < n; i++) {
        char ppl_sd[16] = "-", delta_sd[16] = "-";
        if (w.n > 1) {
            snprintf(ppl_sd, sizeof ppl_sd, "%.4f", s[i].ppl_sd);
            snprintf(delta_sd, sizeof delta_sd, "%.3f", s[i].delta_sd);
        }
        printf("%-30s %-14s %-14s %9.3f %10" PRIu64 " %8.4f %7s %+8.3f %7s %9.5f %8.1f\n", s[i].label, s[i].k_desc,
               s[i].v_desc, s[i].bits_per_value, s[i].kv_bytes, s[i].ppl, ppl_sd, 100.0 * (s[i].ppl / s[0].ppl - 1.0),
               delta_sd, s[i].nll, s[i].rows_total ? 100.0 * s[i].rows_skipped / s[i].rows_total : 0.0);
    }
}

/* A JSON number, or null for NAN (one window has no spread). */
static void json_number(const char *fmt, double x)
{
    if (isfinite(x))
        printf(fmt, x);
    else
        printf("null");
}

static void print_json(const struct scheme *s, int n, struct windows w)
{
    printf("[");
    for (int i = 0; i < n; i++) {
        printf("%s\n  {\"scheme\": ", i ? "," : "");
        tool_json_string(stdout, s[i].label);
        printf(", \"k_type\": ");
        tool_json_string(stdout, s[i].k_desc);
        printf(", \"v_type\": ");
        tool_json_string(stdout, s[i].v_desc);
        printf(", \"bits_per_value\": %.4f, \"kv_bytes\": %" PRIu64 ", \"tokens\": %llu, \"windows\": %u, "
               "\"window_tokens\": %u, \"ppl\": %.6f, \"ppl_sd\": ",
               s[i].bits_per_value, s[i].kv_bytes, (unsigned long long)w.n * w.len, w.n, w.len, s[i].ppl);
        json_number("%.6f", s[i].ppl_sd);
        printf(", \"delta_ppl_pct\": %.4f, \"delta_ppl_pct_sd\": ", 100.0 * (s[i].ppl / s[0].ppl - 1.0));
        json_number("%.4f", s[i].delta_sd);
        printf(", \"nll\": %.6f, \"sparse_v_skipped_pct\": %.3f, \"per_window\": [", s[i].nll,
               s[i].rows_total ? 100.0 * s[i].rows_skipped / s[i].rows_total : 0.0);
        for (uint32_t wi = 0; wi < w.n; wi++)
            printf("%s{\"first_token\": %llu, \"nll\": %.6f, \"ppl\": %.6f, \"delta_ppl_pct\": %.4f}",
                   wi ? ", " : "", (unsigned long long)wi * w.len, s[i].window_nll[wi], exp(s[i].window_nll[wi]),
                   100.0 * (exp(s[i].window_nll[wi]) / exp(s[0].window_nll[wi]) - 1.0));
        printf("]}");
    }
    printf("\n]\n");
}

enum { O_MODEL = 1, O_TOKENIZER, O_TEXT, O_TOKENS, O_CTX, O_CHUNKS, O_TYPES, O_BACKEND, O_JSON };

/* The conventions of `turbokv run`; -f is llama.cpp perplexity's file flag. */
static const struct tool_option options[] = {
    { O_MODEL, 'm', "model", "a llama2.c model file", NULL },
    { O_TOKENIZER, 'z', "tokenizer", "a llama2.c tokenizer file", NULL },
    { O_TEXT, 'f', "text", "a text file", "--file" },
    { O_TOKENS, 0, "tokens", "an int32 .npy file of token ids", NULL },
    { O_CTX, 'c', "ctx", "a token count", "--context" },
    { O_CTX, 0, "ctx-size", "a token count", NULL },
    { O_CHUNKS, 0, "chunks", "a window count or all", "--windows" },
    { O_TYPES, 0, "types", "a comma-separated list of schemes", "--schemes --scheme" },
    { O_BACKEND, 0, "backend", "auto or a plugin name (cpu, vulkan, opencl, ...)", NULL },
    { O_JSON, 0, "json", NULL, NULL },
    { 0, 0, NULL, NULL, NULL },
};

int tool_ppl(int argc, char **argv)
{
    const char *model = NULL, *tpath = NULL, *text = NULL, *npy = NULL, *backend = NULL;
    char types[1024] = DEFAULT_SCHEMES; /* tool_split splits in place */
    long ctx_len = 0, chunks = 1;
    int json = 0, id;
    struct tool_getopt g;

    tool_getopt_init(&g, "ppl", options, argc, argv);
    while ((id = tool_getopt_next(&g)) != TOOL_OPT_END) {
        switch (id) {
        case TOOL_OPT_HELP:
            return usage(stdout);
        case TOOL_OPT_ERROR:
            return tool_getopt_fail(&g);
        case TOOL_OPT_POSITIONAL:
            fprintf(stderr, "turbokv ppl: unexpected argument '%s'; the text is given with -f/--text (turbokv "
                            "ppl --help lists the options)\n", g.value);
            return 2;
        case O_MODEL:
            model = g.value;
            break;
        case O_TOKENIZER:
            tpath = g.value;
            break;
        case O_TEXT:
            text = g.value;
            break;
        case O_TOKENS:
            npy = g.value;
            break;
        case O_CTX:
            if (tool_value_long(&g, 2, 1L << 24, "a token count >= 2", &ctx_len) != 0)
                return 2;
            break;
        case O_CHUNKS:
            if (!strcmp(g.value, "all"))
                chunks = 0;
            else if (tool_value_long(&g, 1, UINT32_MAX, "a window count >= 1, or all", &chunks) != 0)
                return 2;
            break;
        case O_TYPES:
            if (strlen(g.value) >= sizeof types) {
                fprintf(stderr, "turbokv ppl: --types: list too long\n");
                return 2;
            }
            strcpy(types, g.value);
            break;
        case O_BACKEND:
            backend = g.value;
            break;
        case O_JSON:
            json = 1;
            break;
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
    struct windows w = { 0, ctx_len ? (uint32_t)ctx_len : m.cfg.seq_len };
    if (w.len > m.cfg.seq_len)
        fprintf(stderr, "turbokv ppl: -c %u is past the context the model was trained for (seq_len %u)\n", w.len,
                m.cfg.seq_len);
    uint64_t want = chunks ? (uint64_t)chunks * w.len : UINT32_MAX;
    uint32_t have = 0;
    int32_t *tokens = load_tokens(text, npy, &tok, want < UINT32_MAX ? (uint32_t)want : UINT32_MAX, &have);
    if (tokens) {
        w.n = have / w.len;
        if (w.n == 0) { /* the source is shorter than one window: score all of it */
            w.n = 1;
            w.len = have;
        }
        if (chunks && w.n > (uint32_t)chunks)
            w.n = (uint32_t)chunks;
        if (chunks && w.n < (uint32_t)chunks)
            fprintf(stderr, "turbokv ppl: %s holds %u tokens: %u window%s of %u, not the %ld asked for\n",
                    npy ? npy : text, have, w.n, w.n > 1 ? "s" : "", w.len, chunks);
    }
    tkv_context *ctx = tokens ? tool_open_context(backend) : NULL;
    int rc = 1;
    if (ctx) {
        uint64_t done = 0, total = (uint64_t)n_schemes * w.n * (w.len - 1);
        rc = 0;
        for (int i = 0; i < n_schemes && rc == 0; i++)
            rc = evaluate(ctx, &m, tokens, w, &schemes[i], &done, total);
        tool_progress_end();
        for (int i = 0; i < n_schemes && rc == 0; i++)
            spread(&schemes[i], &schemes[0], w.n);
        if (rc == 0 && json)
            print_json(schemes, n_schemes, w);
        else if (rc == 0)
            print_table(schemes, n_schemes, w, npy ? npy : text, ctx);
    }
    for (int i = 0; i < n_schemes; i++)
        free(schemes[i].window_nll);
    tkv_context_close(ctx);
    free(tokens);
    tokenizer_close(&tok);
    llama2_close(&m);
    return rc;
}
