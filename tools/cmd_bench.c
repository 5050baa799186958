/* SPDX-License-Identifier: MIT */
/*
 * `turbokv bench`: decode-attention time per layer and quantize-append
 * throughput per K/V type, against the dense f32 and f16 caches of the same
 * backend, all measured in one process through the public API.
 *
 * Each measurement builds a one-layer cache in the preset's geometry, fills
 * it with synthetic rows (Gaussian, keys 10x the values, as the keys of real
 * models carry the larger norms) and times tkv_attention on random queries:
 * warm-up calls, then the median of the timed calls. GB/s counts the K+V
 * bytes of the rows the queries see, as stored (tkv_row_bytes).
 *
 * The memory floor (cpu backend): before the attention measurements the
 * bench streams through a buffer well beyond the last-level cache with as
 * many threads as the backend uses and takes the median read bandwidth of
 * several passes. A point's "floor" is the fraction of that bandwidth its
 * time reaches: (K+V bytes it must read / time) / bandwidth, 100% when the
 * kernel runs as fast as a plain read of its bytes.
 *
 * The arithmetic floor (cpu backend, a level with FMAs): every type does
 * the same float32 multiply-adds per visible row, 2 x query heads x head_dim
 * (the scores, then the values), in vectors of the plugin's ISA level;
 * bench_fma.c measures how many of them the same threads retire per second
 * at best. A point's "arith" is the fraction of that peak its time reaches.
 *
 * Sparse V: the main tables run with it off, so that every K and V byte is
 * read; a separate comparison times the same peaked attention with it on
 * and off. The bench sets TURBO_SPARSE_V itself before it opens each of its
 * two contexts, overriding the environment and the configuration file.
 */
#include <errno.h>
#include <math.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "bench_fma.h"
#include "bench_plot.h"
#include "tool.h"

#define DEFAULT_TYPES "f32,f16,q8_0,turbo2,turbo3,turbo4"
#define DEFAULT_CTX "1K,4K,16K,64K"
#define MAX_TYPES 16
#define MAX_CTX 16
#define MAX_SHAPES 3
#define MAX_SEQS 64
#define WARMUP_CALLS 2
#define MIN_CALLS 5
#define MAX_CALLS 25
#define MIN_SECONDS 0.25  /* timed calls continue past MIN_CALLS until this */
#define POOL_TOKENS 2048  /* synthetic rows, reused at shifting offsets */
#define APPEND_CHUNK 512  /* tokens per append call when filling (prefill) */
#define APPEND_DECODE 256 /* single-token appends timed */
#define KEY_SCALE 10.0
#define SPARSE_CTX_MAX 16384u
#define FIT_FROM 4096u    /* the linear fit of time against context starts here */
#define FLOOR_MIN_BYTES (256u << 20) /* the bandwidth buffer: at least this, */
#define FLOOR_MAX_BYTES (1u << 30)   /* 2x the last-level cache up to this */
#define FLOOR_PASSES 9
#define FLOOR_THREADS_MAX 256

struct preset {
    const char *name;
    uint32_t q_heads, kv_heads, head_dim;
};

static const struct preset presets[] = {
    { "llama3-8b", 32, 8, 128 },
    { "qwen2-7b", 28, 4, 128 },
    { "small", 8, 8, 64 },
};

struct shape {
    uint32_t tokens, seqs;
};

struct timing {
    double us;      /* median per layer */
    double us_q1, us_q3; /* 25th and 75th percentile of the calls (the plot's spread) */
    uint64_t bytes; /* K+V bytes of the visible rows */
    double dev_us;  /* median device time (tkv_attention_options.device_ns); 0: no timer */
};

struct append_rate {
    double prefill_rows_s, decode_us; /* rows: one head's K or V of one token */
};

struct sparse_cmp {
    uint32_t type;
    double us_off, us_on, skipped_pct;
    double dev_us_off, dev_us_on; /* device times; 0: no timer */
};

struct bench {
    tkv_context *dense, *sparse; /* sparse V off, on */
    const struct preset *geo;
    uint32_t types[MAX_TYPES], ctx[MAX_CTX];
    int n_types, n_ctx, n_shapes;
    struct shape shapes[MAX_SHAPES];
    uint32_t max_seqs, max_tokens;
    float *k_pool, *v_pool, *q, *out;
    struct timing t[MAX_TYPES][MAX_CTX][MAX_SHAPES];
    struct append_rate append[MAX_TYPES];
    struct sparse_cmp cmp[2];
    int n_cmp, sparse_ctx;
    uint64_t done, total; /* progress */
    uint32_t warm_ms;     /* --warm-ms: the same calls back to back before each point */
    struct floor {
        uint32_t threads;  /* 0: not measured (not the cpu backend) */
        uint64_t bytes;    /* the buffer read in each pass */
        double gbps;       /* median over the passes */
        double gbps_best;  /* fastest pass */
    } floor;
    struct bench_fma fma; /* the multiply-add peak (fma.isa NULL: not measured) */
};

static int usage(FILE *f)
{
    fprintf(f,
            "usage: turbokv bench [options]\n"
            "Decode-attention time per layer and quantize-append throughput per K/V type, with the\n"
            "dense f32 and f16 caches of the same backend as the baseline (always measured).\n"
            "  --backend B     auto or a plugin name: cpu, vulkan, opencl, ... (default: configuration)\n"
            "  --types LIST    K/V types, K and V alike (default " DEFAULT_TYPES ")\n"
            "  --ctx LIST      context lengths, N or NK (default " DEFAULT_CTX ")\n"
            "  --preset NAME   llama3-8b (32 query heads, 8 kv heads, head_dim 128; default),\n"
            "                  qwen2-7b (28/4/128), small (8/8/64)\n"
            "  --tokens N      query tokens per sequence   (with --seqs: one shape only;\n"
            "  --seqs N        sequences in one call        default: 1x1, 4x1 and 1x8)\n"
            "  --json          print a JSON array instead of the tables\n"
            "  --warm-ms N     before each attention point, N ms (1..10000; default none) of the same\n"
            "                  calls back to back: a GPU whose clock falls when lightly loaded (the\n"
            "                  H200 goes from 1980 to 345 MHz) is timed at its working clock\n"
            "                  (--per-token: the point's per-call attentions, before its steps)\n"
            "  --plot F.svg    an SVG of the first shape: time per layer against context\n"
            "                  (the middle half of the calls as a bar) and the speed-up over\n"
            "                  f16; the path is checked before the run\n"
            "  --per-token     a decode step of --layers N layers (default 32; --ctx default 4K,128K)\n"
            "                  on the host's own OpenCL device (everything queued, one finish) or, with\n"
            "                  --backend vulkan, its own VkDevice (recorded into one command buffer, one\n"
            "                  submit), against the per-call host-array mode: us per layer (--types,\n"
            "                  default turbo3)\n"
            "  --paged         engine costs instead: context open, paged vs contiguous attention\n"
            "                  (first --types entry, default turbo3), sequence operations on a\n"
            "                  32-layer cache, memory of a multi-sequence workload\n"
            "With the cpu backend each point also shows the fraction of the memory floor it reaches:\n"
            "K+V bytes / time against the read bandwidth the same threads stream from a buffer\n"
            "beyond the last-level cache; and an arithmetic floor: the time of the attention's float32\n"
            "multiply-adds (2 x query heads x head_dim per visible row) at the peak the same threads\n"
            "reach with the plugin's vector width.\n"
            "Sparse V is off in the tables (every K and V byte is read) and compared on and off\n"
            "on peaked attention; the bench sets TURBO_SPARSE_V for its own two contexts.\n");
    return f == stderr ? 2 : 0;
}

/* ---- synthetic data -------------------------------------------------------- */

static uint64_t rng_state = 0x62656e6368ull; /* "bench" */

static double rng_gauss(void)
{
    double u[2];
    for (int i = 0; i < 2; i++) {
        uint64_t z = (rng_state += 0x9E3779B97F4A7C15ull);
        z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
        z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
        u[i] = ((double)((z ^ (z >> 31)) >> 11) + 0.5) * 0x1p-53;
    }
    return sqrt(-2.0 * log(u[0])) * cos(6.283185307179586 * u[1]);
}

static void fill_gauss(float *x, size_t n, double scale)
{
    for (size_t i = 0; i < n; i++)
        x[i] = (float)(scale * rng_gauss());
}

/* ---- options ----------------------------------------------------------------- */

static int parse_count(const char *s, uint32_t *out)
{
    char *end;
    errno = 0;
    unsigned long v = strtoul(s, &end, 10);
    if (*end == 'K' || *end == 'k') {
        v *= 1024;
        end++;
    }
    if (errno || end == s || *end || v == 0 || v > (1ul << 24))
        return -1;
    *out = (uint32_t)v;
    return 0;
}

static int add_type(struct bench *b, uint32_t type)
{
    for (int i = 0; i < b->n_types; i++)
        if (b->types[i] == type)
            return 0;
    if (b->n_types == MAX_TYPES)
        return -1;
    b->types[b->n_types++] = type;
    return 0;
}

static int parse_types(struct bench *b, const char *list)
{
    char buf[512], *items[MAX_TYPES];
    snprintf(buf, sizeof buf, "%s", list);
    int n = tool_split(buf, items, MAX_TYPES);
    uint32_t type;
    for (int i = 0; i < n; i++) {
        if (tkv_type_from_name(items[i], &type) != TKV_OK) {
            fprintf(stderr, "turbokv bench: --types: %s\n", tkv_last_error());
            return -1;
        }
        add_type(b, type);
    }
    /* the baselines of every ratio */
    if (add_type(b, TKV_TYPE_F16) || add_type(b, TKV_TYPE_F32) || n == 0) {
        fprintf(stderr, "turbokv bench: --types: expected 1 to %d type names\n", MAX_TYPES - 2);
        return -1;
    }
    return 0;
}

static int parse_ctx(struct bench *b, const char *list)
{
    char buf[512], *items[MAX_CTX];
    snprintf(buf, sizeof buf, "%s", list);
    b->n_ctx = tool_split(buf, items, MAX_CTX);
    for (int i = 0; i < b->n_ctx; i++)
        if (parse_count(items[i], &b->ctx[i]) != 0) {
            fprintf(stderr, "turbokv bench: --ctx: '%s' is not a length (N or NK, up to 16384K)\n",
                    items[i]);
            return -1;
        }
    if (b->n_ctx == 0) {
        fprintf(stderr, "turbokv bench: --ctx: expected a list of lengths\n");
        return -1;
    }
    return 0;
}

/* ---- measurements -------------------------------------------------------------- */

static tkv_cache *new_cache(tkv_context *ctx, const struct bench *b, uint32_t type, uint32_t capacity,
                            uint32_t seqs)
{
    struct tkv_cache_params p = {
        .struct_size = sizeof p, .n_layers = 1, .n_kv_heads = b->geo->kv_heads,
        .head_dim = b->geo->head_dim, .capacity = capacity, .n_seqs = seqs, .k_type = type,
        .v_type = type, .n_q_heads = b->geo->q_heads,
    };
    tkv_cache *c = NULL;
    int rc = tkv_cache_create(ctx, &p, &c);
    if (rc != TKV_OK) {
        char what[96];
        snprintf(what, sizeof what, "%s cache of %u tokens x %u sequences", tkv_type_name(type),
                 capacity, seqs);
        tool_fail(what, rc);
        return NULL;
    }
    return c;
}

/* Appends n tokens to every sequence, from shifting offsets of the pools. */
static int fill(tkv_cache *c, const struct bench *b, uint32_t seqs, uint32_t n)
{
    size_t token = (size_t)b->geo->kv_heads * b->geo->head_dim;
    for (uint32_t s = 0; s < seqs; s++)
        for (uint32_t t = 0; t < n; t += APPEND_CHUNK) {
            uint32_t m = n - t < APPEND_CHUNK ? n - t : APPEND_CHUNK;
            size_t at = (s * 389u + t / APPEND_CHUNK * 131u) % (POOL_TOKENS - APPEND_CHUNK + 1);
            int rc = tkv_cache_append(c, s, 0, m, b->k_pool + at * token, b->v_pool + at * token);
            if (rc != TKV_OK)
                return tool_fail("append", rc);
        }
    return 0;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* Median microseconds of one tkv_attention call, wall and (*dev_us, 0
 * where the backend has no timer) on the device. */
static int time_attention(tkv_cache *c, const struct bench *b, struct shape sh, double *us,
                          struct tkv_attention_stats *st, double *dev_us, double quartiles[2])
{
    uint32_t ids[MAX_SEQS], n_q[MAX_SEQS];
    double runs[MAX_CALLS], dev[MAX_CALLS];
    int n = 0;
    for (uint32_t s = 0; s < sh.seqs; s++)
        ids[s] = s, n_q[s] = sh.tokens;
    for (double t0 = tool_now(); b->warm_ms && tool_now() - t0 < 1e-3 * b->warm_ms;) {
        int rc = tkv_attention_ex(c, 0, sh.seqs, ids, n_q, b->geo->q_heads, b->q, b->out, NULL);
        if (rc != TKV_OK)
            return tool_fail("attention", rc);
    }
    for (int i = 0; i < WARMUP_CALLS + MAX_CALLS; i++) {
        uint64_t ns = 0;
        struct tkv_attention_options o = { .struct_size = sizeof o, .stats = st, .device_ns = &ns };
        double t0 = tool_now();
        int rc = tkv_attention_ex(c, 0, sh.seqs, ids, n_q, b->geo->q_heads, b->q, b->out, &o);
        double t1 = tool_now();
        if (rc != TKV_OK)
            return tool_fail("attention", rc);
        if (i < WARMUP_CALLS)
            continue;
        dev[n] = 1e-9 * (double)ns;
        runs[n++] = t1 - t0;
        double spent = 0.0;
        for (int k = 0; k < n; k++)
            spent += runs[k];
        if (n >= MIN_CALLS && spent >= MIN_SECONDS)
            break;
    }
    qsort(runs, (size_t)n, sizeof runs[0], cmp_double);
    qsort(dev, (size_t)n, sizeof dev[0], cmp_double);
    *us = 1e6 * (n % 2 ? runs[n / 2] : 0.5 * (runs[n / 2 - 1] + runs[n / 2]));
    if (quartiles) {
        quartiles[0] = 1e6 * runs[(n - 1) / 4];
        quartiles[1] = 1e6 * runs[(3 * (n - 1) + 3) / 4];
    }
    *dev_us = 1e6 * (n % 2 ? dev[n / 2] : 0.5 * (dev[n / 2 - 1] + dev[n / 2]));
    return 0;
}

static uint64_t kv_bytes(const struct bench *b, uint32_t k_type, uint32_t v_type, uint32_t ctx,
                         uint32_t seqs)
{
    return (uint64_t)seqs * b->geo->kv_heads * ctx *
           (tkv_row_bytes(k_type, b->geo->head_dim) + tkv_row_bytes(v_type, b->geo->head_dim));
}

static void progress(struct bench *b) { tool_progress("bench", ++b->done, b->total); }

/* Every shape of one type at one context. */
static int measure_attention(struct bench *b, int ti, int ci)
{
    uint32_t type = b->types[ti], ctx = b->ctx[ci];
    tkv_cache *c = new_cache(b->dense, b, type, ctx, b->max_seqs);
    if (!c)
        return 1;
    int rc = fill(c, b, b->max_seqs, ctx);
    if (rc != 0) { /* a cache the device cannot hold (the error is printed): its points stay "-" */
        fprintf(stderr, "turbokv bench: %s at %u tokens x %u sequences skipped\n", tkv_type_name(type), ctx,
                b->max_seqs);
        b->done += (uint64_t)b->n_shapes - 1;
        progress(b);
        tkv_cache_destroy(c);
        return 0;
    }
    for (int si = 0; si < b->n_shapes && rc == 0; si++) {
        struct shape sh = b->shapes[si];
        struct timing *t = &b->t[ti][ci][si];
        if (sh.tokens <= ctx) {
            double quartiles[2] = { 0, 0 };
            rc = time_attention(c, b, sh, &t->us, NULL, &t->dev_us, quartiles);
            t->us_q1 = quartiles[0];
            t->us_q3 = quartiles[1];
            t->bytes = kv_bytes(b, type, type, ctx, sh.seqs);
        }
        progress(b);
    }
    tkv_cache_destroy(c);
    return rc;
}

/* Quantize-append of K and V for every kv head: prefill in chunks of
 * APPEND_CHUNK tokens, then single-token decode appends. */
static int measure_append(struct bench *b, int ti)
{
    const uint32_t prefill = 4 * APPEND_CHUNK;
    tkv_cache *c = new_cache(b->dense, b, b->types[ti], prefill + APPEND_DECODE, 1);
    if (!c)
        return 1;
    size_t token = (size_t)b->geo->kv_heads * b->geo->head_dim;
    double t0 = tool_now();
    int rc = fill(c, b, 1, prefill);
    double t1 = tool_now();
    for (uint32_t t = 0; t < APPEND_DECODE && rc == 0; t++)
        if ((rc = tkv_cache_append(c, 0, 0, 1, b->k_pool + t * token, b->v_pool + t * token)) != TKV_OK)
            rc = tool_fail("append", rc);
    double t2 = tool_now();
    b->append[ti].prefill_rows_s = 2.0 * prefill * b->geo->kv_heads / (t1 - t0);
    b->append[ti].decode_us = 1e6 * (t2 - t1) / APPEND_DECODE;
    tkv_cache_destroy(c);
    progress(b);
    return rc;
}

/* One type's peaked attention (1 token, 1 sequence) with sparse V off and on. */
static int measure_sparse(struct bench *b, uint32_t type)
{
    struct sparse_cmp *cmp = &b->cmp[b->n_cmp];
    struct shape one = { 1, 1 };
    struct tkv_attention_stats st = { 0 };
    uint32_t ctx = b->ctx[b->sparse_ctx];
    tkv_context *ctxs[2] = { b->dense, b->sparse };
    double *us[2] = { &cmp->us_off, &cmp->us_on }, *dev_us[2] = { &cmp->dev_us_off, &cmp->dev_us_on };
    int rc = 0;
    cmp->type = type;
    for (int on = 0; on < 2 && rc == 0; on++) {
        tkv_cache *c = new_cache(ctxs[on], b, type, ctx, 1);
        if (!c)
            return 1;
        if ((rc = fill(c, b, 1, ctx)) == 0)
            rc = time_attention(c, b, one, us[on], &st, dev_us[on], NULL);
        tkv_cache_destroy(c);
    }
    cmp->skipped_pct = st.rows_total ? 100.0 * st.rows_skipped / st.rows_total : 0.0;
    b->n_cmp++;
    progress(b);
    return rc;
}

/* ---- the memory floor ------------------------------------------------------------ */

static volatile uint64_t floor_sink; /* what was read, so that it must be read */

struct floor_thread {
    const uint64_t *words;
    size_t n_words;
    pthread_barrier_t *barrier;
    uint64_t sink;
};

/* Eight independent sums, so that the loads are not a dependency chain and
 * the compiler vectorizes them: a plain streaming read. */
static uint64_t read_words(const uint64_t *w, size_t n)
{
    uint64_t s[8] = { 0 };
    for (size_t i = 0; i + 8 <= n; i += 8)
        for (int k = 0; k < 8; k++)
            s[k] += w[i + k];
    return s[0] + s[1] + s[2] + s[3] + s[4] + s[5] + s[6] + s[7];
}

/* FLOOR_PASSES passes over the thread's slice, each between two barriers
 * (thread 0 times a pass from the first to the second). */
static void *floor_worker(void *arg)
{
    struct floor_thread *t = arg;
    for (int p = 0; p < FLOOR_PASSES; p++) {
        pthread_barrier_wait(t->barrier);
        t->sink += read_words(t->words, t->n_words);
        pthread_barrier_wait(t->barrier);
    }
    return NULL;
}

/* The threads the backend's attention runs on: TURBO_THREADS (0 = every
 * online CPU) for the cpu backend; 0 for the others (their floor is not
 * the host's memory). */
static uint32_t backend_threads(tkv_context *ctx)
{
    if (strcmp(tkv_context_backend(ctx), "cpu") != 0)
        return 0;
    long cpus = sysconf(_SC_NPROCESSORS_ONLN), n = cpus;
    for (uint32_t i = 0; i < tkv_config_count(ctx); i++) {
        struct tkv_config_entry e;
        if (tkv_config_get(ctx, i, &e) == TKV_OK && !strcmp(e.key, "threads"))
            n = strtol(e.value, NULL, 10);
    }
    if (n <= 0)
        n = cpus > 0 ? cpus : 1;
    return (uint32_t)(n > FLOOR_THREADS_MAX ? FLOOR_THREADS_MAX : n);
}

static int measure_floor(struct bench *b)
{
    struct floor *f = &b->floor;
    if (!(f->threads = backend_threads(b->dense)))
        return 0;
    long llc = sysconf(_SC_LEVEL3_CACHE_SIZE);
    if (llc <= 0)
        llc = sysconf(_SC_LEVEL2_CACHE_SIZE);
    uint64_t bytes = llc > 0 ? 2 * (uint64_t)llc : 0;
    bytes = bytes < FLOOR_MIN_BYTES ? FLOOR_MIN_BYTES : bytes > FLOOR_MAX_BYTES ? FLOOR_MAX_BYTES : bytes;
    size_t per_thread = (size_t)(bytes / f->threads) & ~(size_t)4095;
    f->bytes = (uint64_t)per_thread * f->threads;
    uint64_t *buf = aligned_alloc(4096, f->bytes);
    struct floor_thread th[FLOOR_THREADS_MAX];
    pthread_t id[FLOOR_THREADS_MAX];
    pthread_barrier_t barrier;
    double pass[FLOOR_PASSES];
    if (!buf) {
        fprintf(stderr, "turbokv bench: no memory for the %llu-byte bandwidth buffer\n",
                (unsigned long long)f->bytes);
        return 1;
    }
    for (size_t i = 0; i < f->bytes / 8; i++) /* every page present, no zero page */
        buf[i] = i;
    pthread_barrier_init(&barrier, NULL, f->threads);
    uint32_t started = 1;
    for (uint32_t t = 0; t < f->threads; t++)
        th[t] = (struct floor_thread){ buf + t * (per_thread / 8), per_thread / 8, &barrier, 0 };
    for (; started < f->threads; started++)
        if (pthread_create(&id[started], NULL, floor_worker, &th[started]) != 0)
            break;
    if (started < f->threads) { /* the barrier would never open: stop and fail */
        fprintf(stderr, "turbokv bench: cannot start %u threads to measure the bandwidth\n",
                f->threads);
        exit(1);
    }
    for (int p = 0; p < FLOOR_PASSES; p++) {
        pthread_barrier_wait(&barrier);
        double t0 = tool_now();
        th[0].sink += read_words(th[0].words, th[0].n_words);
        pthread_barrier_wait(&barrier);
        pass[p] = tool_now() - t0;
    }
    for (uint32_t t = 1; t < f->threads; t++)
        pthread_join(id[t], NULL);
    pthread_barrier_destroy(&barrier);
    uint64_t sink = 0;
    for (uint32_t t = 0; t < f->threads; t++)
        sink += th[t].sink;
    free(buf);
    qsort(pass, FLOOR_PASSES, sizeof pass[0], cmp_double);
    f->gbps = f->bytes / (pass[FLOOR_PASSES / 2] * 1e9);
    f->gbps_best = f->bytes / (pass[0] * 1e9);
    floor_sink = sink;
    return 0;
}

/* Fraction of the read-bandwidth floor a point reaches (0: none measured). */
static double floor_fraction(const struct bench *b, const struct timing *t)
{
    return b->floor.gbps > 0 && t->us > 0 ? t->bytes / (t->us * 1e3) / b->floor.gbps : 0.0;
}

/* The float32 multiply-adds of a point: per visible row and query token,
 * the scores' and the values' query heads x head_dim each. */
static double point_macs(const struct bench *b, uint32_t ctx, const struct shape *sh)
{
    return 2.0 * sh->seqs * sh->tokens * b->geo->q_heads * b->geo->head_dim * (double)ctx;
}

/* The arithmetic floor of a point in us (0: no peak measured). */
static double arith_floor_us(const struct bench *b, uint32_t ctx, const struct shape *sh)
{
    return b->fma.isa ? point_macs(b, ctx, sh) / (b->fma.gmacs * 1e3) : 0.0;
}

/* ---- analysis ------------------------------------------------------------------ */

struct fit {
    int points;
    double slope_us_per_k, intercept_us, worst_pct;
};

/* Least squares of time against context over the contexts >= FIT_FROM. */
static struct fit fit_line(const struct bench *b, int ti, int si)
{
    struct fit f = { 0 };
    double sx = 0, sy = 0, sxx = 0, sxy = 0;
    for (int ci = 0; ci < b->n_ctx; ci++) {
        if (b->ctx[ci] < FIT_FROM || b->t[ti][ci][si].us <= 0)
            continue;
        double x = b->ctx[ci] / 1024.0, y = b->t[ti][ci][si].us;
        sx += x, sy += y, sxx += x * x, sxy += x * y;
        f.points++;
    }
    if (f.points < 2 || sxx * f.points == sx * sx)
        return (struct fit){ 0 };
    f.slope_us_per_k = (f.points * sxy - sx * sy) / (f.points * sxx - sx * sx);
    f.intercept_us = (sy - f.slope_us_per_k * sx) / f.points;
    for (int ci = 0; ci < b->n_ctx; ci++) {
        if (b->ctx[ci] < FIT_FROM || b->t[ti][ci][si].us <= 0)
            continue;
        double y = b->t[ti][ci][si].us, line = f.intercept_us + f.slope_us_per_k * b->ctx[ci] / 1024.0;
        f.worst_pct = fmax(f.worst_pct, 100.0 * fabs(line - y) / y);
    }
    return f;
}

static int type_index(const struct bench *b, uint32_t type)
{
    for (int i = 0; i < b->n_types; i++)
        if (b->types[i] == type)
            return i;
    return -1;
}

static double speedup_vs_f16(const struct bench *b, int ti, int ci, int si)
{
    double f16 = b->t[type_index(b, TKV_TYPE_F16)][ci][si].us, us = b->t[ti][ci][si].us;
    return us > 0 && f16 > 0 ? f16 / us : 0.0;
}

static double gbps(const struct timing *t) { return t->us > 0 ? t->bytes / (t->us * 1e3) : 0.0; }
/* The same bytes (sparse V off: every K and V byte is read) over the device time. */
static double dev_gbps(const struct timing *t) { return t->dev_us > 0 ? t->bytes / (t->dev_us * 1e3) : 0.0; }
/* Sparse V on: the K bytes and the V bytes of the rows not skipped, over the device time. */
static double sparse_dev_gbps(const struct bench *b, const struct sparse_cmp *c)
{
    uint32_t ctx = b->ctx[b->sparse_ctx], hd = b->geo->head_dim;
    double rows = (double)b->geo->kv_heads * ctx;
    double read = rows * (tkv_row_bytes(c->type, hd) + (1.0 - c->skipped_pct / 100.0) * tkv_row_bytes(c->type, hd));
    return c->dev_us_on > 0 ? read / (c->dev_us_on * 1e3) : 0.0;
}

static void ctx_label(uint32_t ctx, char *out, size_t size)
{
    if (ctx % 1024 == 0)
        snprintf(out, size, "%uK", ctx / 1024);
    else
        snprintf(out, size, "%u", ctx);
}

/* ---- output ------------------------------------------------------------------- */

/* "name [driver]" of the device in use and the threads setting. */
static void machine(tkv_context *ctx, char *device, size_t dsize, char *threads, size_t tsize)
{
    /* the opened device's name, with its driver and score where the
     * plugin's report lists it ("name (driver, score N)"; the list's first
     * device need not be the one opened: PoCL beside an NVIDIA GPU) */
    const char *name = tkv_context_device(ctx);
    const size_t len = strlen(name);
    snprintf(device, dsize, "%s", name);
    for (uint32_t i = 0; i < tkv_plugin_count(ctx); i++) {
        struct tkv_plugin_report r;
        if (tkv_plugin_get(ctx, i, &r) != TKV_OK || !r.in_use)
            continue;
        for (uint32_t j = 0; j < r.n_devices && j < 4u; j++)
            if (len && !strncmp(r.devices[j], name, len) && r.devices[j][len] == ' ')
                snprintf(device, dsize, "%.255s", r.devices[j]);
    }
    snprintf(threads, tsize, "?");
    for (uint32_t i = 0; i < tkv_config_count(ctx); i++) {
        struct tkv_config_entry e;
        if (tkv_config_get(ctx, i, &e) == TKV_OK && !strcmp(e.key, "threads")) {
            long cpus = sysconf(_SC_NPROCESSORS_ONLN);
            if (!strcmp(e.value, "0"))
                snprintf(threads, tsize, "0 = all %ld online cpus", cpus);
            else
                snprintf(threads, tsize, "%.20s", e.value);
        }
    }
}

static void print_text(const struct bench *b)
{
    char device[512], threads[64], label[16];
    machine(b->dense, device, sizeof device, threads, sizeof threads);
    printf("turbokv bench: backend %s, device %s\nthreads (TURBO_THREADS): %s\n",
           tkv_context_backend(b->dense), device, threads);
    printf("geometry %s: %u query heads, %u kv heads, head_dim %u; one layer; K and V of one type;\n"
           "sparse V off; each time the median of >= %d calls after %d warm-up calls, random queries;\n"
           "GB/s = K+V bytes of the visible rows as stored / time; x f16 = f16 time / this time\n",
           b->geo->name, b->geo->q_heads, b->geo->kv_heads, b->geo->head_dim, MIN_CALLS,
           WARMUP_CALLS);
    if (b->floor.threads)
        printf("memory floor: %u thread%s stream %.1f GB/s (median of %d passes over %llu MiB; "
               "fastest %.1f);\nfloor = (K+V bytes / time) / that bandwidth (100%% = a plain read "
               "of the bytes)\n",
               b->floor.threads, b->floor.threads > 1 ? "s" : "", b->floor.gbps, FLOOR_PASSES,
               (unsigned long long)(b->floor.bytes >> 20), b->floor.gbps_best);
    if (b->fma.isa)
        printf("multiply-add peak: %u thread%s retire %.1f G float32 multiply-adds/s in %u-float FMAs "
               "(isa %s; fastest %.1f);\narithmetic floor = the attention's multiply-adds at that peak\n",
               b->fma.threads, b->fma.threads > 1 ? "s" : "", b->fma.gmacs, b->fma.lanes, b->fma.isa,
               b->fma.gmacs_best);
    for (int si = 0; si < b->n_shapes; si++) {
        printf("\ndecode attention, %u query token%s x %u sequence%s: us per layer (GB/s, x f16%s)\n%-7s",
               b->shapes[si].tokens, b->shapes[si].tokens > 1 ? "s" : "", b->shapes[si].seqs,
               b->shapes[si].seqs > 1 ? "s" : "", b->floor.threads ? ", floor" : "", "type");
        for (int ci = 0; ci < b->n_ctx; ci++) {
            ctx_label(b->ctx[ci], label, sizeof label);
            printf(" %*s", b->floor.threads ? 30 : 24, label);
        }
        printf("\n");
        for (int ti = 0; ti < b->n_types; ti++) {
            printf("%-7s", tkv_type_name(b->types[ti]));
            for (int ci = 0; ci < b->n_ctx; ci++) {
                const struct timing *t = &b->t[ti][ci][si];
                if (t->us > 0 && b->floor.threads)
                    printf(" %9.1f (%5.1f, %5.2fx, %3.0f%%)", t->us, gbps(t),
                           speedup_vs_f16(b, ti, ci, si), 100.0 * floor_fraction(b, t));
                else if (t->us > 0)
                    printf(" %9.1f (%5.1f, %5.2fx)", t->us, gbps(t), speedup_vs_f16(b, ti, ci, si));
                else
                    printf(" %*s", b->floor.threads ? 30 : 24, "-");
            }
            printf("\n");
        }
        if (b->fma.isa) { /* the same multiply-adds for every type */
            printf("%-7s", "arith");
            for (int ci = 0; ci < b->n_ctx; ci++)
                printf(" %9.1f%*s", arith_floor_us(b, b->ctx[ci], &b->shapes[si]),
                       b->floor.threads ? 21 : 15, "");
            printf("  (us: the arithmetic floor)\n");
        }
        int timed = 0;
        for (int ti = 0; ti < b->n_types; ti++)
            for (int ci = 0; ci < b->n_ctx; ci++)
                timed |= b->t[ti][ci][si].dev_us > 0;
        if (timed) {
            printf("device time (timestamps): us per layer (GB/s of the K+V bytes read)\n%-7s", "type");
            for (int ci = 0; ci < b->n_ctx; ci++) {
                ctx_label(b->ctx[ci], label, sizeof label);
                printf(" %24s", label);
            }
            printf("\n");
            for (int ti = 0; ti < b->n_types; ti++) {
                printf("%-7s", tkv_type_name(b->types[ti]));
                for (int ci = 0; ci < b->n_ctx; ci++) {
                    const struct timing *t = &b->t[ti][ci][si];
                    if (t->dev_us > 0)
                        printf(" %9.1f (%7.1f GB/s)  ", t->dev_us, dev_gbps(t));
                    else
                        printf(" %24s", "-");
                }
                printf("\n");
            }
        }
        printf("linear fit of time against context, %uK..:", FIT_FROM / 1024);
        int any = 0;
        for (int ti = 0; ti < b->n_types; ti++) {
            struct fit f = fit_line(b, ti, si);
            if (f.points >= 2)
                printf("\n  %-7s %9.2f us per 1K tokens %+9.1f us; the %d points within %.1f%% of the line",
                       tkv_type_name(b->types[ti]), f.slope_us_per_k, f.intercept_us, f.points,
                       f.worst_pct),
                    any = 1;
        }
        printf("%s\n", any ? "" : " (needs two contexts of 4K or more)");
    }
    printf("\nquantize-append, K and V of all %u kv heads (a row: one head's K or V of one token)\n"
           "%-7s %22s %24s\n",
           b->geo->kv_heads, "type", "prefill, 512 tok/call", "decode, 1 tok/call");
    for (int ti = 0; ti < b->n_types; ti++)
        printf("%-7s %12.2f Mrows/s %15.1f us/token\n", tkv_type_name(b->types[ti]),
               b->append[ti].prefill_rows_s / 1e6, b->append[ti].decode_us);
    if (b->n_cmp) {
        ctx_label(b->ctx[b->sparse_ctx], label, sizeof label);
        printf("\nsparse V on peaked attention (keys %.0fx values), %s context, 1 query token x 1 "
               "sequence\n%-7s %12s %12s %16s %9s\n",
               KEY_SCALE, label, "type", "off us", "on us", "V rows skipped", "speedup");
        for (int i = 0; i < b->n_cmp; i++) {
            printf("%-7s %12.1f %12.1f %15.1f%% %8.2fx", tkv_type_name(b->cmp[i].type),
                   b->cmp[i].us_off, b->cmp[i].us_on, b->cmp[i].skipped_pct,
                   b->cmp[i].us_off / b->cmp[i].us_on);
            if (b->cmp[i].dev_us_on > 0)
                printf("   device %.1f -> %.1f us (%.1f GB/s of the bytes read)", b->cmp[i].dev_us_off,
                       b->cmp[i].dev_us_on, sparse_dev_gbps(b, &b->cmp[i]));
            printf("\n");
        }
    }
}

static void json_head(const struct bench *b, const char *kind, uint32_t type, int *first)
{
    printf("%s\n  {\"kind\": \"%s\", \"backend\": ", *first ? "" : ",", kind);
    tool_json_string(stdout, tkv_context_backend(b->dense));
    printf(", \"device\": ");
    tool_json_string(stdout, tkv_context_device(b->dense));
    printf(", \"type\": \"%s\", \"k_type\": \"%s\", \"v_type\": \"%s\", \"q_heads\": %u, "
           "\"kv_heads\": %u, \"head_dim\": %u",
           tkv_type_name(type), tkv_type_name(type), tkv_type_name(type), b->geo->q_heads,
           b->geo->kv_heads, b->geo->head_dim);
    *first = 0;
}

static void print_json(const struct bench *b)
{
    int first = 1;
    printf("[");
    for (int ti = 0; ti < b->n_types; ti++) {
        for (int si = 0; si < b->n_shapes; si++) {
            for (int ci = 0; ci < b->n_ctx; ci++) {
                const struct timing *t = &b->t[ti][ci][si];
                if (t->us <= 0)
                    continue;
                json_head(b, "attention", b->types[ti], &first);
                printf(", \"ctx\": %u, \"tokens\": %u, \"seqs\": %u, \"sparse_v\": false, "
                       "\"us_per_layer\": %.3f, \"kv_bytes\": %llu, \"gbps\": %.3f, "
                       "\"speedup_vs_f16\": %.4f, \"device_us\": %.3f, \"device_gbps\": %.3f",
                       b->ctx[ci], b->shapes[si].tokens, b->shapes[si].seqs, t->us,
                       (unsigned long long)t->bytes, gbps(t), speedup_vs_f16(b, ti, ci, si), t->dev_us,
                       dev_gbps(t));
                if (b->floor.threads) /* the floor: a read of the same bytes at the measured rate */
                    printf(", \"floor_us\": %.3f, \"floor_fraction\": %.4f",
                           t->bytes / (b->floor.gbps * 1e3), floor_fraction(b, t));
                if (b->fma.isa) { /* the same multiply-adds at the measured peak */
                    double fl = arith_floor_us(b, b->ctx[ci], &b->shapes[si]);
                    printf(", \"arith_floor_us\": %.3f, \"arith_fraction\": %.4f", fl, fl / t->us);
                }
                printf("}");
            }
            struct fit f = fit_line(b, ti, si);
            if (f.points >= 2) {
                json_head(b, "slope", b->types[ti], &first);
                printf(", \"tokens\": %u, \"seqs\": %u, \"ctx_from\": %u, \"points\": %d, "
                       "\"us_per_1k_ctx\": %.4f, \"intercept_us\": %.3f, \"max_deviation_pct\": %.3f}",
                       b->shapes[si].tokens, b->shapes[si].seqs, FIT_FROM, f.points,
                       f.slope_us_per_k, f.intercept_us, f.worst_pct);
            }
        }
        json_head(b, "append", b->types[ti], &first);
        printf(", \"prefill_tokens_per_call\": %d, \"prefill_rows_per_s\": %.1f, "
               "\"decode_us_per_token\": %.3f}",
               APPEND_CHUNK, b->append[ti].prefill_rows_s, b->append[ti].decode_us);
    }
    if (b->floor.threads) {
        printf("%s\n  {\"kind\": \"memory_floor\", \"backend\": ", first ? "" : ",");
        tool_json_string(stdout, tkv_context_backend(b->dense));
        printf(", \"threads\": %u, \"buffer_bytes\": %llu, \"passes\": %d, \"gbps\": %.3f, "
               "\"gbps_best\": %.3f}",
               b->floor.threads, (unsigned long long)b->floor.bytes, FLOOR_PASSES, b->floor.gbps,
               b->floor.gbps_best);
        first = 0;
    }
    if (b->fma.isa) {
        printf(",\n  {\"kind\": \"fma_peak\", \"isa\": \"%s\", \"lanes\": %u, \"threads\": %u, "
               "\"gmacs\": %.3f, \"gmacs_best\": %.3f}",
               b->fma.isa, b->fma.lanes, b->fma.threads, b->fma.gmacs, b->fma.gmacs_best);
    }
    for (int i = 0; i < b->n_cmp; i++) {
        json_head(b, "sparse_v", b->cmp[i].type, &first);
        printf(", \"ctx\": %u, \"tokens\": 1, \"seqs\": 1, \"us_off\": %.3f, \"us_on\": %.3f, "
               "\"skipped_pct\": %.3f, \"speedup\": %.4f, \"device_us_off\": %.3f, \"device_us_on\": %.3f, "
               "\"device_gbps_on\": %.3f}",
               b->ctx[b->sparse_ctx], b->cmp[i].us_off, b->cmp[i].us_on, b->cmp[i].skipped_pct,
               b->cmp[i].us_off / b->cmp[i].us_on, b->cmp[i].dev_us_off, b->cmp[i].dev_us_on,
               sparse_dev_gbps(b, &b->cmp[i]));
    }
    printf("\n]\n");
}

/* ---- the plot (bench_plot.c) --------------------------------------------------- */

/* Time against context of the first shape, one series per type. */
static int write_plot(const struct bench *b, const char *path)
{
    static double ctx[MAX_CTX], us[MAX_TYPES][MAX_CTX], lo[MAX_TYPES][MAX_CTX], hi[MAX_TYPES][MAX_CTX],
        up[MAX_TYPES][MAX_CTX];
    struct plot_series s[MAX_TYPES];
    int has_f16 = type_index(b, TKV_TYPE_F16) >= 0;
    for (int ci = 0; ci < b->n_ctx; ci++)
        ctx[ci] = b->ctx[ci];
    for (int ti = 0; ti < b->n_types; ti++) {
        for (int ci = 0; ci < b->n_ctx; ci++) {
            const struct timing *t = &b->t[ti][ci][0];
            us[ti][ci] = t->us;
            lo[ti][ci] = t->us_q1;
            hi[ti][ci] = t->us_q3;
            up[ti][ci] = has_f16 ? speedup_vs_f16(b, ti, ci, 0) : 0.0;
        }
        s[ti] = (struct plot_series){ tkv_type_name(b->types[ti]), b->n_ctx, ctx, us[ti], lo[ti], hi[ti],
                                      has_f16 ? up[ti] : NULL };
    }
    char device[512], threads[64], title[256], sub[768], err[600];
    machine(b->dense, device, sizeof device, threads, sizeof threads);
    snprintf(title, sizeof title, "turbokv decode attention, %s (%u/%u/%u), %u token x %u sequence", b->geo->name,
             b->geo->q_heads, b->geo->kv_heads, b->geo->head_dim, b->shapes[0].tokens, b->shapes[0].seqs);
    snprintf(sub, sizeof sub, "backend %s on %s; threads %s", tkv_context_backend(b->dense), device, threads);
    /* the device string is the plugin's: keep markup out of the SVG */
    for (char *c = sub; *c; c++)
        if (*c == '<' || *c == '>' || *c == '&')
            *c = ' ';
    if (bench_plot_write(path, title, sub, s, b->n_types, err, sizeof err) != 0) {
        fprintf(stderr, "turbokv bench: %s\n", err);
        return 1;
    }
    return 0;
}

/* ---- main ------------------------------------------------------------------------ */

/* Opens a context with TURBO_SPARSE_V set as given, the caller's value
 * restored afterwards. */
static tkv_context *open_with_sparse_v(const char *backend, const char *sparse_v)
{
    const char *had = getenv("TURBO_SPARSE_V");
    char *saved = had ? strdup(had) : NULL;
    setenv("TURBO_SPARSE_V", sparse_v, 1);
    tkv_context *ctx = tool_open_context(backend);
    if (saved)
        setenv("TURBO_SPARSE_V", saved, 1);
    else
        unsetenv("TURBO_SPARSE_V");
    free(saved);
    return ctx;
}

static int run(struct bench *b, const char *backend)
{
    if (!(b->dense = open_with_sparse_v(backend, "0")) ||
        !(b->sparse = open_with_sparse_v(backend, "1")))
        return 1;
    size_t pool = (size_t)POOL_TOKENS * b->geo->kv_heads * b->geo->head_dim;
    size_t nq = (size_t)b->max_seqs * b->max_tokens * b->geo->q_heads * b->geo->head_dim;
    b->k_pool = malloc(pool * sizeof(float));
    b->v_pool = malloc(pool * sizeof(float));
    b->q = malloc(nq * sizeof(float));
    b->out = malloc(nq * sizeof(float));
    if (!b->k_pool || !b->v_pool || !b->q || !b->out) {
        fprintf(stderr, "turbokv bench: out of memory\n");
        return 1;
    }
    fill_gauss(b->k_pool, pool, KEY_SCALE);
    fill_gauss(b->v_pool, pool, 1.0);
    fill_gauss(b->q, nq, 1.0);

    /* the comparison of sparse V: the largest context up to 16K */
    b->sparse_ctx = 0;
    for (int ci = 1; ci < b->n_ctx; ci++)
        if (b->ctx[ci] <= SPARSE_CTX_MAX && (b->ctx[ci] > b->ctx[b->sparse_ctx] ||
                                             b->ctx[b->sparse_ctx] > SPARSE_CTX_MAX))
            b->sparse_ctx = ci;
    uint32_t cmp_types[2] = { TKV_TYPE_TURBO3, TKV_TYPE_F16 };
    int n_cmp = type_index(b, TKV_TYPE_TURBO3) >= 0 ? 2 : 1;
    b->total = (uint64_t)b->n_types * (b->n_ctx * b->n_shapes + 1) + n_cmp;

    int rc = measure_floor(b);
    if (rc == 0 && b->floor.threads) {
        char device[512], threads[64];
        machine(b->dense, device, sizeof device, threads, sizeof threads);
        bench_fma_peak(device, b->floor.threads, &b->fma);
    }
    for (int ti = 0; ti < b->n_types && rc == 0; ti++) {
        for (int ci = 0; ci < b->n_ctx && rc == 0; ci++)
            rc = measure_attention(b, ti, ci);
        if (rc == 0)
            rc = measure_append(b, ti);
    }
    for (int i = 2 - n_cmp; i < 2 && rc == 0; i++)
        rc = measure_sparse(b, cmp_types[i]);
    tool_progress_end();
    return rc;
}

int tool_bench(int argc, char **argv)
{
    static struct bench b; /* large: the timing table */
    const char *backend = NULL, *plot = NULL, *v;
    const char *types = DEFAULT_TYPES, *ctx = DEFAULT_CTX, *preset = "llama3-8b";
    uint32_t tokens = 0, seqs = 0, layers = 32;
    int json = 0, paged = 0, per_token = 0;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h"))
            return usage(stdout);
        else if ((v = tool_opt(argc, argv, &i, "--backend")))
            backend = v;
        else if ((v = tool_opt(argc, argv, &i, "--types")))
            types = v;
        else if ((v = tool_opt(argc, argv, &i, "--ctx")))
            ctx = v;
        else if ((v = tool_opt(argc, argv, &i, "--preset")))
            preset = v;
        else if ((v = tool_opt(argc, argv, &i, "--tokens"))) {
            if (parse_count(v, &tokens) != 0) {
                fprintf(stderr, "turbokv bench: --tokens %s: expected a count of query tokens\n", v);
                return 2;
            }
        } else if ((v = tool_opt(argc, argv, &i, "--seqs"))) {
            if (parse_count(v, &seqs) != 0 || seqs > MAX_SEQS) {
                fprintf(stderr, "turbokv bench: --seqs %s: expected 1..%d sequences\n", v, MAX_SEQS);
                return 2;
            }
        } else if ((v = tool_opt(argc, argv, &i, "--warm-ms"))) {
            if (parse_count(v, &b.warm_ms) != 0 || b.warm_ms > 10000) {
                fprintf(stderr, "turbokv bench: --warm-ms %s: expected 1..10000 milliseconds\n", v);
                return 2;
            }
        } else if ((v = tool_opt(argc, argv, &i, "--plot")))
            plot = v;
        else if (!strcmp(argv[i], "--json"))
            json = 1;
        else if (!strcmp(argv[i], "--paged"))
            paged = 1;
        else if (!strcmp(argv[i], "--per-token"))
            per_token = 1;
        else if ((v = tool_opt(argc, argv, &i, "--layers"))) {
            if (parse_count(v, &layers) != 0 || layers > 256) {
                fprintf(stderr, "turbokv bench: --layers %s: expected 1..256 layers\n", v);
                return 2;
            }
        }
        else {
            fprintf(stderr, "turbokv bench: unknown option '%s'\n", argv[i]);
            return usage(stderr);
        }
    }
    for (size_t i = 0; i < sizeof presets / sizeof presets[0]; i++)
        if (!strcmp(preset, presets[i].name))
            b.geo = &presets[i];
    if (!b.geo) {
        fprintf(stderr, "turbokv bench: unknown preset '%s' (llama3-8b, qwen2-7b, small)\n", preset);
        return 2;
    }
    if ((paged || per_token) && types == (const char *)DEFAULT_TYPES)
        types = "turbo3";
    if (per_token && ctx == (const char *)DEFAULT_CTX)
        ctx = "4K,128K";
    if (parse_types(&b, types) != 0 || parse_ctx(&b, ctx) != 0)
        return 2;
    if (per_token) { /* the listed types only, not the baselines parse_types adds */
        int listed = 1;
        for (const char *c = types; *c; c++)
            listed += *c == ',';
        return tool_bench_token(backend, b.types, listed < b.n_types ? listed : b.n_types, b.ctx, b.n_ctx, layers, b.geo->q_heads, b.geo->kv_heads,
                                b.geo->head_dim, b.warm_ms, json);
    }
    if (paged)
        return tool_bench_paged(backend, b.ctx, b.n_ctx, b.geo->q_heads, b.geo->kv_heads, b.geo->head_dim,
                                b.types[0], json);
    if (plot) { /* before the run, not after it */
        char err[600];
        if (bench_plot_check(plot, err, sizeof err) != 0) {
            fprintf(stderr, "turbokv bench: %s\n", err);
            return 2;
        }
    }
    if (tokens || seqs) {
        b.shapes[0] = (struct shape){ tokens ? tokens : 1, seqs ? seqs : 1 };
        b.n_shapes = 1;
    } else {
        b.shapes[0] = (struct shape){ 1, 1 };
        b.shapes[1] = (struct shape){ 4, 1 };
        b.shapes[2] = (struct shape){ 1, 8 };
        b.n_shapes = 3;
    }
    for (int si = 0; si < b.n_shapes; si++) {
        b.max_seqs = b.shapes[si].seqs > b.max_seqs ? b.shapes[si].seqs : b.max_seqs;
        b.max_tokens = b.shapes[si].tokens > b.max_tokens ? b.shapes[si].tokens : b.max_tokens;
    }
    int rc = run(&b, backend);
    if (rc == 0) {
        if (json)
            print_json(&b);
        else
            print_text(&b);
        if (plot)
            rc = write_plot(&b, plot);
    }
    tkv_context_close(b.dense);
    tkv_context_close(b.sparse);
    free(b.k_pool);
    free(b.v_pool);
    free(b.q);
    free(b.out);
    return rc;
}
