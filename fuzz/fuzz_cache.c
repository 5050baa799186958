/* SPDX-License-Identifier: MIT */
/*
 * Cache files and sequence images (core/persist.c) through the host API, on
 * the cpu plugin: tkv_cache_load, tkv_cache_restore, tkv_seq_restore and
 * tkv_seq_state_set read the same bytes.
 *
 * Input: one mode byte, then the file. Mode bit 0 set: the last 8 bytes are
 * replaced by the FNV-1a checksum of the bytes before them, so that
 * mutations reach the checks behind the checksum (a file anyone rewrote,
 * not one damaged by accident).
 *
 * Checks besides the sanitizers:
 *   - a refused load returns TKV_EFORMAT / TKV_EIO / TKV_ENOMEM with a
 *     message, and no cache;
 *   - an accepted file is small enough to account for what was allocated:
 *     the pool's device bytes stay within a bound linear in the file's size
 *     (untrusted sizes never decide the allocation);
 *   - an accepted file saves back to exactly the same bytes;
 *   - restore into a live cache, seq restore and seq_state_set either
 *     succeed or leave every sequence's image byte for byte as it was.
 *
 * The plugin is found beside the fuzz build's executables
 * (BUILD/plugins/cpu), or in TKV_FUZZ_PLUGIN_DIR.
 */
#include <libgen.h>
#include <limits.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "fuzz_file.h"
#include "turbokv.h"

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static tkv_context *ctx;
static tkv_cache *live; /* restore target: 2 layers, 2 sequences */
static char save_path[PATH_MAX];
static uint8_t *buf;
static size_t buf_cap;

#define LIVE_SEQS 2u

static void fail(const char *what)
{
    fprintf(stderr, "fuzz_cache setup: %s: %s\n", what, tkv_last_error());
    abort();
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    static char dir[PATH_MAX];
    const char *env = getenv("TKV_FUZZ_PLUGIN_DIR");
    if (env) {
        snprintf(dir, sizeof dir, "%s", env);
    } else {
        char exe[PATH_MAX];
        ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 1);
        if (n <= 0)
            abort();
        exe[n] = '\0';
        snprintf(dir, sizeof dir, "%s/../plugins/cpu", dirname(exe));
    }
    struct tkv_context_options o = { .struct_size = sizeof o, .backend = "cpu", .plugin_path = dir,
                                     .ignore_env = 1 };
    if (tkv_context_open(&o, &ctx) != TKV_OK)
        fail("tkv_context_open");
    struct tkv_cache_params p = { .struct_size = sizeof p, .n_layers = 2, .n_kv_heads = 2, .head_dim = 8,
                                  .capacity = 64, .n_seqs = LIVE_SEQS, .k_type = TKV_TYPE_Q8_0,
                                  .v_type = TKV_TYPE_TURBO3, .block_tokens = 4 };
    if (tkv_cache_create(ctx, &p, &live) != TKV_OK)
        fail("tkv_cache_create");
    float kv[5 * 2 * 8];
    for (unsigned i = 0; i < 5 * 2 * 8; i++)
        kv[i] = (float)((i * 37u) % 17u) / 8.0f - 1.0f;
    for (uint32_t l = 0; l < 2; l++)
        if (tkv_cache_append(live, 0, l, 5, kv, kv) != TKV_OK || tkv_cache_append(live, 1, l, 3, kv, kv) != TKV_OK)
            fail("tkv_cache_append");
    snprintf(save_path, sizeof save_path, "/tmp/tkv-fuzz-cache-%d.bin", (int)getpid());
    return 0;
}

static uint64_t fnv1a(const uint8_t *p, size_t n)
{
    uint64_t h = 0xcbf29ce484222325ull;
    for (size_t i = 0; i < n; i++)
        h = (h ^ p[i]) * 0x100000001b3ull;
    return h;
}

/* Every sequence image of the live cache, concatenated. */
static size_t live_images(uint8_t **out)
{
    size_t total = 0, sizes[LIVE_SEQS];
    for (uint32_t s = 0; s < LIVE_SEQS; s++) {
        FUZZ_CHECK(tkv_seq_state_size(live, s, &sizes[s]) == TKV_OK, "%s", tkv_last_error());
        total += sizes[s];
    }
    uint8_t *p = malloc(total);
    FUZZ_CHECK(p != NULL, "out of memory");
    size_t at = 0;
    for (uint32_t s = 0; s < LIVE_SEQS; s++) {
        size_t w = 0;
        FUZZ_CHECK(tkv_seq_state_get(live, s, p + at, sizes[s], &w) == TKV_OK && w == sizes[s], "%s",
                   tkv_last_error());
        at += w;
    }
    *out = p;
    return total;
}

static void check_refusal(int rc, const char *fn)
{
    FUZZ_CHECK(rc == TKV_EFORMAT || rc == TKV_EIO || rc == TKV_ENOMEM || rc == TKV_ERANGE, "%s returned %d: %s", fn,
               rc, tkv_last_error());
    FUZZ_CHECK(tkv_last_error()[0] != '\0', "%s refused without a message", fn);
}

/* An accepted file's rows go through the kernels: decode attention of the
 * last token of every non-empty (layer, sequence), and the rows read back,
 * so that a stored field the kernels index with (outlier indices) is caught
 * here under the sanitizers rather than in a host's first call. */
static void check_usable(tkv_cache *c)
{
    struct tkv_cache_shape sh = { 0 };
    FUZZ_CHECK(tkv_cache_get_shape(c, &sh) == TKV_OK, "%s", tkv_last_error());
    const size_t row = (size_t)sh.n_kv_heads * sh.head_dim;
    float *q = malloc(sizeof *q * row), *out = malloc(sizeof *out * row), *rows = NULL;
    FUZZ_CHECK(q && out, "out of memory");
    for (size_t i = 0; i < row; i++)
        q[i] = (float)(i % 7) * 0.25f - 0.75f;
    for (uint32_t l = 0; l < sh.n_layers; l++)
        for (uint32_t s = 0; s < sh.n_seqs; s++) {
            uint32_t len = 0;
            FUZZ_CHECK(tkv_cache_length(c, s, l, &len) == TKV_OK, "%s", tkv_last_error());
            if (len == 0)
                continue;
            FUZZ_CHECK(tkv_attention(c, l, 1, &s, 1, sh.n_kv_heads, q, out, NULL) == TKV_OK,
                       "attention over a loaded file's layer %u, sequence %u: %s", l, s, tkv_last_error());
            float *grown = realloc(rows, sizeof *rows * row * len);
            FUZZ_CHECK(grown != NULL, "out of memory");
            rows = grown;
            for (int which = 0; which < 2; which++)
                FUZZ_CHECK(tkv_cache_dequantize(c, s, l, which, 0, len, rows) == TKV_OK,
                           "dequantize of a loaded file's layer %u, sequence %u: %s", l, s, tkv_last_error());
        }
    free(q);
    free(out);
    free(rows);
}

/* An accepted file: bounded allocation, usable rows, and it saves back to
 * its own bytes. */
static void check_loaded(tkv_cache *c, const uint8_t *file, size_t size)
{
    struct tkv_cache_bytes b;
    FUZZ_CHECK(tkv_cache_bytes(c, &b) == TKV_OK, "%s", tkv_last_error());
    /* rows in the pool <= rows in the file; a block holds at most
     * block_tokens - 1 unused rows per sequence and layer: bounded by the
     * file's own size (the header has a length word per layer and sequence) */
    FUZZ_CHECK(b.capacity <= 64u * (uint64_t)size + (1u << 20), "a %zu-byte file allocated %llu bytes", size,
               (unsigned long long)b.capacity);
    check_usable(c);
    FUZZ_CHECK(tkv_cache_save(c, save_path) == TKV_OK, "save of a loaded file failed: %s", tkv_last_error());
    FILE *f = fopen(save_path, "rb");
    FUZZ_CHECK(f != NULL, "cannot open %s", save_path);
    if (buf_cap < size + 1) {
        free(buf);
        buf = malloc(size + 1);
        buf_cap = size + 1;
    }
    size_t n = fread(buf, 1, size + 1, f);
    fclose(f);
    unlink(save_path);
    FUZZ_CHECK(n == size && memcmp(buf, file, size) == 0, "saved %zu bytes differ from the %zu loaded", n, size);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    uint8_t mode = data[0];
    data++;
    size--;
    uint8_t *file = malloc(size ? size : 1);
    FUZZ_CHECK(file != NULL, "out of memory");
    memcpy(file, data, size);
    if ((mode & 1) && size >= 8) {
        uint64_t h = fnv1a(file, size - 8);
        for (int i = 0; i < 8; i++)
            file[size - 8 + i] = (uint8_t)(h >> (8 * i));
    }
    const char *path = fuzz_file(file, size);

    tkv_cache *c = NULL;
    int rc = tkv_cache_load(ctx, path, &c);
    if (rc == TKV_OK) {
        FUZZ_CHECK(c != NULL, "load succeeded without a cache");
        check_loaded(c, file, size);
        tkv_cache_destroy(c);
    } else {
        check_refusal(rc, "tkv_cache_load");
        FUZZ_CHECK(c == NULL, "a refused load left a cache");
    }

    uint8_t *before, *after;
    size_t nb = live_images(&before);
    const char *fn;
    switch ((mode >> 1) & 3) {
    case 0:
        fn = "tkv_cache_restore";
        rc = tkv_cache_restore(live, path);
        break;
    case 1:
        fn = "tkv_seq_restore";
        rc = tkv_seq_restore(live, mode >> 3 & 1, path);
        break;
    default:
        fn = "tkv_seq_state_set";
        rc = tkv_seq_state_set(live, mode >> 3 & 1, file, size);
        break;
    }
    if (rc != TKV_OK) {
        check_refusal(rc, fn);
        size_t na = live_images(&after);
        FUZZ_CHECK(na == nb && memcmp(before, after, nb) == 0, "a refused %s changed the cache", fn);
        free(after);
    }
    free(before);
    free(file);
    return 0;
}
