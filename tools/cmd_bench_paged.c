/* SPDX-License-Identifier: MIT */
/*
 * `turbokv bench --paged`: what an inference engine pays for the paged
 * cache, measured in one process through the public API:
 *
 *   open     tkv_context_open with the backend named (and whether a GPU
 *            runtime got mapped into the process: /proc/self/maps);
 *   attend   decode attention on a paged cache (block_tokens default) and on
 *            a contiguous one (one block per sequence) in the same run, per
 *            context length, 1 and 8 sequences: the ratio paged/contiguous;
 *   seqops   copy / truncate / remove / keep of a 3000-token sequence in a
 *            32-layer cache (the preset's heads), and the first append after
 *            a fork (copy-on-write of one block in every layer);
 *   memory   a multi-sequence workload of about 27 MB of rows: rows used,
 *            blocks in use, bytes allocated, against the contiguous
 *            reservation of capacity x sequences.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tool.h"

#define SEQOP_LAYERS 32u
#define SEQOP_TOKENS 3000u
#define SEQOP_REPEAT 20
#define MEM_CAPACITY 8192u
#define MEM_SEQS 4u
#define N_BLOCKS 4
#define OPEN_REPEAT 5
#define CHUNK 512u

struct paged_bench {
    const char *backend;
    uint32_t q_heads, kv_heads, head_dim;
    uint32_t type;
    const uint32_t *ctx;
    int n_ctx;
    float *k, *v, *q, *out; /* CHUNK tokens of rows; queries for 8 sequences */
    int json;
};

static uint64_t rng = 0x7061676564ull; /* "paged" */

static float gauss(void)
{
    double u1, u2;
    rng = rng * 6364136223846793005ull + 1442695040888963407ull;
    u1 = ((rng >> 11) + 1.0) / 9007199254740993.0;
    rng = rng * 6364136223846793005ull + 1442695040888963407ull;
    u2 = (rng >> 11) / 9007199254740992.0;
    return (float)(sqrt(-2.0 * log(u1)) * cos(6.283185307179586 * u2));
}

static tkv_cache *make(tkv_context *ctx, const struct paged_bench *b, uint32_t layers, uint32_t capacity,
                       uint32_t seqs, uint32_t block_tokens, uint32_t k_type, uint32_t v_type)
{
    struct tkv_cache_params p = {
        .struct_size = sizeof p, .n_layers = layers, .n_kv_heads = b->kv_heads, .head_dim = b->head_dim,
        .capacity = capacity, .n_seqs = seqs, .k_type = k_type, .v_type = v_type, .n_q_heads = b->q_heads,
        .block_tokens = block_tokens,
    };
    tkv_cache *c = NULL;
    int rc = tkv_cache_create(ctx, &p, &c);
    if (rc != TKV_OK) {
        tool_fail("cache", rc);
        return NULL;
    }
    return c;
}

static int fill(tkv_cache *c, const struct paged_bench *b, uint32_t layers, uint32_t seq, uint32_t n)
{
    for (uint32_t l = 0; l < layers; l++)
        for (uint32_t t = 0; t < n; t += CHUNK) {
            int rc = tkv_cache_append(c, seq, l, n - t < CHUNK ? n - t : CHUNK, b->k, b->v);
            if (rc != TKV_OK)
                return tool_fail("append", rc);
        }
    return 0;
}

static int cmp_double(const void *x, const void *y)
{
    double a = *(const double *)x, b = *(const double *)y;
    return (a > b) - (a < b);
}

/* Median seconds of a call over n runs (after one warm-up). */
#define MEDIAN(n, out, call)                                                                       \
    do {                                                                                           \
        double runs_[64];                                                                          \
        int k_;                                                                                    \
        for (k_ = -1; k_ < (n); k_++) {                                                            \
            double t0_ = tool_now();                                                               \
            if ((call) != TKV_OK)                                                                  \
                return tool_fail(#call, -1);                                                       \
            if (k_ >= 0)                                                                           \
                runs_[k_] = tool_now() - t0_;                                                      \
        }                                                                                          \
        qsort(runs_, (size_t)(n), sizeof runs_[0], cmp_double);                                    \
        (out) = runs_[(n) / 2];                                                                    \
    } while (0)

/* --- open */

static int gpu_runtime_mapped(char *which, size_t size)
{
    static const char *const libs[] = { "libvulkan", "libOpenCL", "libLLVM", "libpocl", "libnvidia", "libcuda" };
    FILE *f = fopen("/proc/self/maps", "r");
    char line[1024];
    int found = 0;
    which[0] = '\0';
    if (!f)
        return -1;
    while (!found && fgets(line, sizeof line, f))
        for (size_t i = 0; i < sizeof libs / sizeof libs[0]; i++)
            if (strstr(line, libs[i])) {
                snprintf(which, size, "%s", libs[i]);
                found = 1;
                break;
            }
    fclose(f);
    return found;
}

static int bench_open(const struct paged_bench *b, double *first_ms, double *median_ms, int *gpu, char *lib,
                      size_t lib_size)
{
    double runs[OPEN_REPEAT];
    for (int i = 0; i < OPEN_REPEAT; i++) {
        double t0 = tool_now();
        tkv_context *ctx = tool_open_context(b->backend);
        if (!ctx)
            return 1;
        runs[i] = 1e3 * (tool_now() - t0);
        if (i == 0)
            *gpu = gpu_runtime_mapped(lib, lib_size);
        tkv_context_close(ctx);
    }
    *first_ms = runs[0];
    qsort(runs + 1, OPEN_REPEAT - 1, sizeof runs[0], cmp_double);
    *median_ms = runs[1 + (OPEN_REPEAT - 1) / 2];
    return 0;
}

/* --- attention, paged against contiguous */

static int time_attention(tkv_cache *c, const struct paged_bench *b, uint32_t seqs, double *us)
{
    uint32_t ids[8] = { 0, 1, 2, 3, 4, 5, 6, 7 };
    double s;
    int n = 15;
    MEDIAN(n, s, tkv_attention(c, 0, seqs, ids, 1, b->q_heads, b->q, b->out, NULL));
    *us = 1e6 * s;
    return 0;
}

/* Block sizes compared with the contiguous cache (the default among them). */
static const uint32_t block_sizes[N_BLOCKS] = { 16, 64, TKV_BLOCK_TOKENS_DEFAULT, 1024 };

/* us[0 .. N_BLOCKS - 1]: paged with block_sizes[i]; us[N_BLOCKS]: contiguous. */
static int bench_attention(tkv_context *ctx, const struct paged_bench *b, uint32_t ctx_len, uint32_t seqs,
                           double us[N_BLOCKS + 1])
{
    tkv_cache *c[N_BLOCKS + 1];
    int rc = 0;
    for (int i = 0; i <= N_BLOCKS; i++)
        if (!(c[i] = make(ctx, b, 1, ctx_len, seqs, i < N_BLOCKS ? block_sizes[i] : ctx_len, b->type, b->type)))
            return 1;
    /* sequences appended in turn, so that a paged cache's blocks are scattered */
    for (uint32_t t = 0; t < ctx_len && !rc; t += CHUNK)
        for (uint32_t s = 0; s < seqs && !rc; s++)
            for (int i = 0; i <= N_BLOCKS && !rc; i++)
                rc = tkv_cache_append(c[i], s, 0, ctx_len - t < CHUNK ? ctx_len - t : CHUNK, b->k, b->v) != TKV_OK;
    if (rc)
        tool_fail("append", -1);
    /* round robin, three rounds, each one's best median: load on the machine hits all alike */
    for (int i = 0; i <= N_BLOCKS; i++)
        us[i] = INFINITY;
    for (int round = 0; round < 3 && !rc; round++)
        for (int i = 0; i <= N_BLOCKS && !rc; i++) {
            double t = INFINITY;
            if (!(rc = time_attention(c[i], b, seqs, &t)))
                us[i] = t < us[i] ? t : us[i];
        }
    for (int i = 0; i <= N_BLOCKS; i++)
        tkv_cache_destroy(c[i]);
    return rc;
}

/* --- sequence operations */

struct seqops {
    double copy_us, truncate_us, remove_us, keep_us, cow_append_us, plain_append_us;
    uint64_t seq_bytes;
};

static int bench_seqops(tkv_context *ctx, const struct paged_bench *b, struct seqops *r)
{
    tkv_cache *c = make(ctx, b, SEQOP_LAYERS, SEQOP_TOKENS + 64, 4, 0, b->type, b->type);
    if (!c || fill(c, b, SEQOP_LAYERS, 0, SEQOP_TOKENS))
        return 1;
    struct tkv_cache_bytes by;
    tkv_cache_bytes(c, &by);
    r->seq_bytes = by.used;
    /* each timed op starts from seq 1 = a copy of seq 0 */
    double t;
    MEDIAN(SEQOP_REPEAT, t, tkv_seq_copy(c, 0, 1, SEQOP_TOKENS));
    r->copy_us = 1e6 * t;
    MEDIAN(SEQOP_REPEAT, t, (tkv_seq_copy(c, 0, 1, SEQOP_TOKENS), tkv_seq_truncate(c, 1, SEQOP_TOKENS - 1000)));
    r->truncate_us = 1e6 * t - r->copy_us;
    MEDIAN(SEQOP_REPEAT, t, (tkv_seq_copy(c, 0, 1, SEQOP_TOKENS), tkv_seq_remove(c, 1)));
    r->remove_us = 1e6 * t - r->copy_us;
    MEDIAN(SEQOP_REPEAT, t, (tkv_seq_copy(c, 0, 2, SEQOP_TOKENS), tkv_seq_keep(c, 0)));
    r->keep_us = 1e6 * t - r->copy_us;
    /* the first append after a fork copies the shared last block in every layer */
    size_t token = (size_t)b->kv_heads * b->head_dim;
    double cow[SEQOP_REPEAT], plain[SEQOP_REPEAT];
    for (int i = 0; i < SEQOP_REPEAT; i++) {
        if (tkv_seq_copy(c, 0, 1, SEQOP_TOKENS - 10) != TKV_OK)
            return tool_fail("seq_copy", -1);
        double t0 = tool_now();
        for (uint32_t l = 0; l < SEQOP_LAYERS; l++)
            if (tkv_cache_append(c, 1, l, 1, b->k + token, b->v + token) != TKV_OK)
                return tool_fail("append", -1);
        double t1 = tool_now();
        for (uint32_t l = 0; l < SEQOP_LAYERS; l++)
            if (tkv_cache_append(c, 1, l, 1, b->k, b->v) != TKV_OK)
                return tool_fail("append", -1);
        double t2 = tool_now();
        cow[i] = t1 - t0;
        plain[i] = t2 - t1;
    }
    qsort(cow, SEQOP_REPEAT, sizeof cow[0], cmp_double);
    qsort(plain, SEQOP_REPEAT, sizeof plain[0], cmp_double);
    r->cow_append_us = 1e6 * cow[SEQOP_REPEAT / 2];
    r->plain_append_us = 1e6 * plain[SEQOP_REPEAT / 2];
    tkv_cache_destroy(c);
    return 0;
}

/* --- memory */

struct memory {
    uint64_t used, blocks_bytes, allocated, contiguous, block_bytes;
    uint32_t tokens, seqs, blocks_used, block_tokens;
};

static int bench_memory(tkv_context *ctx, const struct paged_bench *b, struct memory *m)
{
    /* four sequences of uneven lengths, about 27 MB of rows in the default scheme */
    static const uint32_t lens[MEM_SEQS] = { 300, 150, 90, 27 };
    tkv_cache *c = make(ctx, b, SEQOP_LAYERS, MEM_CAPACITY, MEM_SEQS, 0, TKV_TYPE_FROM_CONFIG, TKV_TYPE_FROM_CONFIG);
    if (!c)
        return 1;
    m->tokens = 0;
    for (uint32_t s = 0; s < MEM_SEQS; s++) {
        if (fill(c, b, SEQOP_LAYERS, s, lens[s]))
            return 1;
        m->tokens += lens[s];
    }
    struct tkv_cache_bytes by;
    tkv_cache_bytes(c, &by);
    m->used = by.used;
    m->blocks_bytes = by.blocks_bytes;
    m->allocated = by.capacity;
    m->blocks_used = by.blocks_used;
    m->block_tokens = by.block_tokens;
    m->block_bytes = by.blocks_used ? by.blocks_bytes / by.blocks_used : 0;
    m->seqs = MEM_SEQS;
    /* what one contiguous buffer of capacity x sequences reserves for the same types */
    m->contiguous = by.used / m->tokens * (uint64_t)MEM_CAPACITY * MEM_SEQS;
    tkv_cache_destroy(c);
    return 0;
}

int tool_bench_paged(const char *backend, const uint32_t *ctx_list, int n_ctx, uint32_t q_heads, uint32_t kv_heads,
                     uint32_t head_dim, uint32_t type, int json)
{
    struct paged_bench b = {
        .backend = backend, .q_heads = q_heads, .kv_heads = kv_heads, .head_dim = head_dim, .type = type,
        .ctx = ctx_list, .n_ctx = n_ctx, .json = json,
    };
    double open_first, open_median;
    int gpu = 0;
    char lib[64];
    if (bench_open(&b, &open_first, &open_median, &gpu, lib, sizeof lib))
        return 1;
    tkv_context *ctx = tool_open_context(backend);
    if (!ctx)
        return 1;
    size_t rows = (size_t)CHUNK * kv_heads * head_dim, nq = (size_t)8 * q_heads * head_dim;
    b.k = malloc(rows * sizeof(float));
    b.v = malloc(rows * sizeof(float));
    b.q = malloc(nq * sizeof(float));
    b.out = malloc(nq * sizeof(float));
    if (!b.k || !b.v || !b.q || !b.out) {
        fprintf(stderr, "turbokv bench: out of memory\n");
        return 1;
    }
    for (size_t i = 0; i < rows; i++) {
        b.k[i] = 10.0f * gauss();
        b.v[i] = gauss();
    }
    for (size_t i = 0; i < nq; i++)
        b.q[i] = gauss();

    int rc = 0;
    double us[16][2][N_BLOCKS + 1];
    static const uint32_t seqs[2] = { 1, 8 };
    for (int ci = 0; ci < n_ctx && ci < 16 && !rc; ci++)
        for (int si = 0; si < 2 && !rc; si++) {
            rc = bench_attention(ctx, &b, ctx_list[ci], seqs[si], us[ci][si]);
            tool_progress("bench --paged", (uint64_t)ci * 2 + si + 1, (uint64_t)n_ctx * 2 + 2);
        }
    struct seqops so = { 0 };
    struct memory mem = { 0 };
    if (!rc)
        rc = bench_seqops(ctx, &b, &so);
    if (!rc)
        rc = bench_memory(ctx, &b, &mem);
    tool_progress_end();
    if (!rc && json) {
        printf("{\"backend\": ");
        tool_json_string(stdout, tkv_context_backend(ctx));
        printf(", \"device\": ");
        tool_json_string(stdout, tkv_context_device(ctx));
        printf(", \"type\": \"%s\", \"open_ms_first\": %.3f, \"open_ms_median\": %.3f, \"gpu_runtime_mapped\": %s,\n"
               " \"attention\": [",
               tkv_type_name(type), open_first, open_median, gpu > 0 ? "true" : "false");
        for (int ci = 0; ci < n_ctx && ci < 16; ci++)
            for (int si = 0; si < 2; si++) {
                printf("%s{\"ctx\": %u, \"seqs\": %u, \"contiguous_us\": %.2f, \"paged\": [", ci || si ? ", " : "",
                       ctx_list[ci], seqs[si], us[ci][si][N_BLOCKS]);
                for (int i = 0; i < N_BLOCKS; i++)
                    printf("%s{\"block_tokens\": %u, \"us\": %.2f, \"ratio\": %.4f}", i ? ", " : "", block_sizes[i],
                           us[ci][si][i], us[ci][si][i] / us[ci][si][N_BLOCKS]);
                printf("]}");
            }
        printf("],\n \"seqops\": {\"layers\": %u, \"tokens\": %u, \"seq_bytes\": %llu, \"copy_us\": %.2f, "
               "\"truncate_us\": %.2f, \"remove_us\": %.2f, \"keep_us\": %.2f, \"cow_append_us\": %.2f, "
               "\"append_us\": %.2f},\n",
               SEQOP_LAYERS, SEQOP_TOKENS, (unsigned long long)so.seq_bytes, so.copy_us, so.truncate_us, so.remove_us,
               so.keep_us, so.cow_append_us, so.plain_append_us);
        printf(" \"memory\": {\"seqs\": %u, \"tokens\": %u, \"used\": %llu, \"blocks_bytes\": %llu, \"allocated\": %llu, "
               "\"contiguous\": %llu, \"block_tokens\": %u, \"block_bytes\": %llu}}\n",
               mem.seqs, mem.tokens, (unsigned long long)mem.used, (unsigned long long)mem.blocks_bytes,
               (unsigned long long)mem.allocated, (unsigned long long)mem.contiguous, mem.block_tokens,
               (unsigned long long)mem.block_bytes);
    } else if (!rc) {
        printf("turbokv bench --paged: backend %s, device %s; %u query heads, %u kv heads, head_dim %u\n",
               tkv_context_backend(ctx), tkv_context_device(ctx), q_heads, kv_heads, head_dim);
        printf("\ncontext open (backend %s): first %.2f ms, then median %.2f ms; GPU runtime mapped: %s\n",
               backend ? backend : "from configuration", open_first, open_median,
               gpu > 0 ? lib : gpu == 0 ? "none" : "unknown");
        printf("\ndecode attention, %s, 1 query token, µs per layer (best of three medians), and paged / "
               "contiguous\n| context | seqs | contiguous |", tkv_type_name(type));
        for (int i = 0; i < N_BLOCKS; i++)
            printf(" block %u%s |", block_sizes[i], block_sizes[i] == TKV_BLOCK_TOKENS_DEFAULT ? " (default)" : "");
        printf("\n|---|---|---|");
        for (int i = 0; i < N_BLOCKS; i++)
            printf("---|");
        printf("\n");
        for (int ci = 0; ci < n_ctx && ci < 16; ci++)
            for (int si = 0; si < 2; si++) {
                printf("| %u | %u | %.1f |", ctx_list[ci], seqs[si], us[ci][si][N_BLOCKS]);
                for (int i = 0; i < N_BLOCKS; i++)
                    printf(" %.1f (%.3f) |", us[ci][si][i], us[ci][si][i] / us[ci][si][N_BLOCKS]);
                printf("\n");
            }
        printf("\nsequence operations, %u tokens x %u layers (%.1f MB of %s rows), µs per call (median of %d)\n",
               SEQOP_TOKENS, SEQOP_LAYERS, so.seq_bytes / 1e6, tkv_type_name(type), SEQOP_REPEAT);
        printf("| copy (fork) | truncate by 1000 | remove | keep one | first append after fork, all layers | "
               "plain append, all layers |\n|---|---|---|---|---|---|\n");
        printf("| %.2f | %.2f | %.2f | %.2f | %.1f | %.1f |\n", so.copy_us, so.truncate_us, so.remove_us, so.keep_us,
               so.cow_append_us, so.plain_append_us);
        printf("\nmemory, %u sequences of uneven lengths (%u tokens), %u layers, default scheme, capacity %u\n",
               mem.seqs, mem.tokens, SEQOP_LAYERS, MEM_CAPACITY);
        printf("rows %.1f MB; blocks in use %u (%.1f MB, block %u tokens = %.2f MB over all layers); allocated %.1f "
               "MB; blocks - rows %.1f MB (allowance: one block per sequence %.1f MB); contiguous reservation %.1f "
               "MB\n",
               mem.used / 1e6, mem.blocks_used, mem.blocks_bytes / 1e6, mem.block_tokens, mem.block_bytes / 1e6,
               mem.allocated / 1e6, (mem.blocks_bytes - mem.used) / 1e6, (double)mem.seqs * mem.block_bytes / 1e6,
               mem.contiguous / 1e6);
    }
    free(b.k);
    free(b.v);
    free(b.q);
    free(b.out);
    tkv_context_close(ctx);
    return rc;
}
