/* SPDX-License-Identifier: MIT */
/*
 * The paged cache and the sequence operations through the host API, on the
 * backend named by argv[1] (cpu when absent):
 *   - paged (block_tokens 1, 3, 16) stores the same bytes as contiguous and
 *     attends alike, with blocks taken in scrambled order;
 *   - truncate then re-append equals never having appended;
 *   - fork then decode equals freshly built sequences, sharing blocks
 *     (counted) and copying a shared block before writing it;
 *   - remove / keep return blocks; a full pool fails and changes nothing;
 *   - one sequence saved and restored (memory and file), corrupted or
 *     mismatched images refused with the sequence intact;
 *   - mixed n_q, window, softcap, scale and lse against float64 attention
 *     over the stored rows;
 *   - capabilities: the minimal test plugin (tests/stubs/minimal) refuses a
 *     cache it cannot hold, naming what is missing; backend auto skips it
 *     for such a cache; its missing buffer_copy makes the core copy through
 *     host memory, with the same bytes;
 *   - a context used by two threads at once answers TKV_EBUSY.
 */
#include <math.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "turbokv.h"

#define LAYERS 3
#define HEADS 2
#define QHEADS 4
#define DIM 64
#define CAP 300
#define SEQS 4

static const char *backend = "cpu";
static char plugin_path[8192];
static char config_path[256];
static tkv_context *ctx;

static void expect_error(int rc, int status, const char *part)
{
    assert_int_equal(rc, status);
    if (!strstr(tkv_last_error(), part))
        fail_msg("error '%s' lacks '%s'", tkv_last_error(), part);
}

static int open_ctx(const char *name, tkv_context **out)
{
    struct tkv_context_options o = {
        .struct_size = sizeof o, .ignore_env = 1, .config_path = config_path, .plugin_path = plugin_path,
        .backend = name,
    };
    return tkv_context_open(&o, out);
}

/* Row values depend only on (seed, token, head, i): the same token appended
 * to two caches gets the same rows. */
static void rows(float *x, uint32_t first, uint32_t n, uint32_t seed)
{
    for (uint32_t t = 0; t < n; t++)
        for (uint32_t i = 0; i < HEADS * DIM; i++) {
            uint32_t h = (first + t) * 2654435761u ^ (i * 40503u) ^ (seed * 2246822519u);
            h ^= h >> 15;
            h *= 2246822519u;
            h ^= h >> 13;
            x[(size_t)t * HEADS * DIM + i] = ((h >> 8) / 16777216.0f - 0.5f) * 4.0f;
        }
}

static tkv_cache *make(tkv_context *c, uint32_t block_tokens, uint32_t k_type, uint32_t v_type)
{
    struct tkv_cache_params p = {
        .struct_size = sizeof p, .n_layers = LAYERS, .n_kv_heads = HEADS, .head_dim = DIM, .capacity = CAP,
        .n_seqs = SEQS, .k_type = k_type, .v_type = v_type, .block_tokens = block_tokens,
    };
    tkv_cache *cache = NULL;
    if (tkv_cache_create(c, &p, &cache) != TKV_OK)
        fail_msg("tkv_cache_create: %s", tkv_last_error());
    return cache;
}

/* Appends tokens [first, first + n) of stream seed to seq in every layer. */
static void put(tkv_cache *c, uint32_t seq, uint32_t first, uint32_t n, uint32_t seed)
{
    float *k = malloc(sizeof(float) * n * HEADS * DIM), *v = malloc(sizeof(float) * n * HEADS * DIM);
    rows(k, first, n, seed);
    rows(v, first, n, seed + 1000);
    for (uint32_t l = 0; l < LAYERS; l++)
        if (tkv_cache_append(c, seq, l, n, k, v) != TKV_OK)
            fail_msg("append: %s", tkv_last_error());
    free(k);
    free(v);
}

/* The sequence's packed rows, as its state image. */
static uint8_t *image(const tkv_cache *c, uint32_t seq, size_t *n)
{
    assert_int_equal(tkv_seq_state_size(c, seq, n), TKV_OK);
    uint8_t *p = malloc(*n);
    size_t written = 0;
    assert_int_equal(tkv_seq_state_get(c, seq, p, *n, &written), TKV_OK);
    assert_int_equal(written, *n);
    return p;
}

static void assert_same_seq(const tkv_cache *a, uint32_t sa, const tkv_cache *b, uint32_t sb)
{
    size_t na, nb;
    uint8_t *ia = image(a, sa, &na), *ib = image(b, sb, &nb);
    assert_int_equal(na, nb);
    assert_memory_equal(ia, ib, na);
    free(ia);
    free(ib);
}

static void attend(tkv_cache *c, uint32_t layer, uint32_t n, const uint32_t *ids, const uint32_t *nq, float *out,
                   const struct tkv_attention_options *o)
{
    uint32_t total = 0;
    for (uint32_t s = 0; s < n; s++)
        total += nq[s];
    float *q = malloc(sizeof(float) * total * QHEADS * DIM);
    for (uint32_t i = 0; i < total * QHEADS * DIM; i++)
        q[i] = sinf(0.37f * (float)i + (float)layer);
    if (tkv_attention_ex(c, layer, n, ids, nq, QHEADS, q, out, o) != TKV_OK)
        fail_msg("attention: %s", tkv_last_error());
    free(q);
}

static void assert_close(const float *a, const float *b, size_t n, double tol)
{
    for (size_t i = 0; i < n; i++)
        if (fabs((double)a[i] - (double)b[i]) > tol * (1.0 + fabs((double)b[i])))
            fail_msg("element %zu: %.9g vs %.9g", i, (double)a[i], (double)b[i]);
}

/* --- paged against contiguous */

static void paged_equals_contiguous(void **state)
{
    (void)state;
    static const uint32_t blocks[] = { 1, 3, 16, 0 };
    tkv_cache *ref = make(ctx, CAP, TKV_TYPE_TURBO3, TKV_TYPE_TURBO4);
    for (uint32_t s = 0; s < 3; s++)
        put(ref, s, 0, 100 + 37 * s, s);
    uint32_t ids[3] = { 2, 0, 1 }, nq[3] = { 1, 1, 1 };
    float want[3 * QHEADS * DIM], got[3 * QHEADS * DIM];
    attend(ref, 1, 3, ids, nq, want, NULL);
    for (size_t b = 0; b < sizeof blocks / sizeof blocks[0]; b++) {
        tkv_cache *c = make(ctx, blocks[b], TKV_TYPE_TURBO3, TKV_TYPE_TURBO4);
        /* interleaved chunks: each sequence's blocks are scattered in the pool */
        for (uint32_t at = 0; at < 174; at += 29)
            for (uint32_t s = 0; s < 3; s++) {
                uint32_t len = 100 + 37 * s;
                if (at < len)
                    put(c, s, at, at + 29 <= len ? 29 : len - at, s);
            }
        for (uint32_t s = 0; s < 3; s++)
            assert_same_seq(c, s, ref, s);
        attend(c, 1, 3, ids, nq, got, NULL);
        assert_close(got, want, 3 * QHEADS * DIM, 1e-5);
        tkv_cache_destroy(c);
    }
    tkv_cache_destroy(ref);
}

/* --- truncate, copy, remove, keep */

static void truncate_then_reappend(void **state)
{
    (void)state;
    tkv_cache *a = make(ctx, 16, TKV_TYPE_TURBO3, TKV_TYPE_TURBO3);
    tkv_cache *b = make(ctx, 16, TKV_TYPE_TURBO3, TKV_TYPE_TURBO3);
    put(a, 0, 0, 100, 1);
    assert_int_equal(tkv_seq_truncate(a, 0, 37), TKV_OK);
    struct tkv_cache_bytes bytes;
    assert_int_equal(tkv_cache_bytes(a, &bytes), TKV_OK);
    assert_int_equal(bytes.blocks_used, 3); /* ceil(37 / 16): the others went back */
    for (uint32_t l = 0; l < LAYERS; l++) {
        uint32_t n;
        assert_int_equal(tkv_cache_length(a, 0, l, &n), TKV_OK);
        assert_int_equal(n, 37);
    }
    put(a, 0, 37, 43, 2); /* other rows than the ones dropped */
    put(b, 0, 0, 37, 1);
    put(b, 0, 37, 43, 2);
    assert_same_seq(a, 0, b, 0);
    /* truncating past the end changes nothing */
    assert_int_equal(tkv_seq_truncate(a, 0, 1000), TKV_OK);
    assert_same_seq(a, 0, b, 0);
    expect_error(tkv_seq_truncate(a, SEQS, 1), TKV_ERANGE, "sequence 4 out of range");
    tkv_cache_destroy(a);
    tkv_cache_destroy(b);
}

static void fork_then_decode(void **state)
{
    (void)state;
    tkv_cache *a = make(ctx, 16, TKV_TYPE_Q8_0, TKV_TYPE_TURBO3);
    put(a, 0, 0, 50, 1);
    assert_int_equal(tkv_seq_copy(a, 0, 1, 40), TKV_OK);
    struct tkv_cache_bytes bytes;
    assert_int_equal(tkv_cache_bytes(a, &bytes), TKV_OK);
    assert_int_equal(bytes.blocks_used, 4); /* the copy shares every block it holds */
    put(a, 1, 40, 5, 2);                    /* writes into shared block 2: copied first */
    put(a, 0, 50, 3, 1);
    assert_int_equal(tkv_cache_bytes(a, &bytes), TKV_OK);
    assert_int_equal(bytes.blocks_used, 5);

    tkv_cache *b = make(ctx, 16, TKV_TYPE_Q8_0, TKV_TYPE_TURBO3);
    put(b, 0, 0, 53, 1);
    put(b, 1, 0, 40, 1);
    put(b, 1, 40, 5, 2);
    assert_same_seq(a, 0, b, 0);
    assert_same_seq(a, 1, b, 1);
    uint32_t ids[2] = { 0, 1 }, nq[2] = { 1, 1 };
    float x[2 * QHEADS * DIM], y[2 * QHEADS * DIM];
    attend(a, 2, 2, ids, nq, x, NULL);
    attend(b, 2, 2, ids, nq, y, NULL);
    assert_close(x, y, 2 * QHEADS * DIM, 1e-6);

    expect_error(tkv_seq_copy(a, 1, 1, 4), TKV_EINVAL, "both sequence 1");
    expect_error(tkv_seq_copy(a, 0, SEQS, 4), TKV_ERANGE, "destination 4 out of range");
    /* copying over a sequence drops its old tokens */
    assert_int_equal(tkv_seq_copy(a, 1, 0, 10), TKV_OK);
    put(b, 2, 0, 10, 1);
    assert_same_seq(a, 0, b, 2);
    tkv_cache_destroy(a);
    tkv_cache_destroy(b);
}

static void remove_and_keep_return_blocks(void **state)
{
    (void)state;
    tkv_cache *a = make(ctx, 8, TKV_TYPE_TURBO3, TKV_TYPE_TURBO3);
    put(a, 0, 0, 20, 1); /* 3 blocks */
    put(a, 1, 0, 9, 2);  /* 2 */
    assert_int_equal(tkv_seq_copy(a, 0, 2, 16), TKV_OK); /* shares 2 */
    put(a, 3, 0, 1, 3);  /* 1 */
    struct tkv_cache_bytes b;
    assert_int_equal(tkv_cache_bytes(a, &b), TKV_OK);
    assert_int_equal(b.blocks_used, 6);
    assert_int_equal(tkv_seq_remove(a, 0), TKV_OK);
    assert_int_equal(tkv_cache_bytes(a, &b), TKV_OK);
    assert_int_equal(b.blocks_used, 5); /* 2 still held by sequence 2 */
    assert_int_equal(tkv_seq_keep(a, 2), TKV_OK);
    assert_int_equal(tkv_cache_bytes(a, &b), TKV_OK);
    assert_int_equal(b.blocks_used, 2);
    uint32_t n;
    assert_int_equal(tkv_cache_length(a, 1, 0, &n), TKV_OK);
    assert_int_equal(n, 0);
    assert_int_equal(tkv_cache_length(a, 2, 0, &n), TKV_OK);
    assert_int_equal(n, 16);
    /* memory follows the rows: one block per sequence per layer at most */
    assert_true(b.blocks_bytes >= b.used);
    assert_true(b.capacity >= b.blocks_bytes);
    tkv_cache_destroy(a);
}

static void full_pool_changes_nothing(void **state)
{
    (void)state;
    struct tkv_cache_params p = {
        .struct_size = sizeof p, .n_layers = LAYERS, .n_kv_heads = HEADS, .head_dim = DIM, .capacity = CAP,
        .n_seqs = SEQS, .k_type = TKV_TYPE_TURBO3, .v_type = TKV_TYPE_TURBO3, .block_tokens = 4,
        .pool_blocks = 3, .pool_flags = TKV_POOL_FIXED,
    };
    tkv_cache *a = NULL;
    assert_int_equal(tkv_cache_create(ctx, &p, &a), TKV_OK);
    struct tkv_cache_bytes b;
    assert_int_equal(tkv_cache_bytes(a, &b), TKV_OK);
    assert_int_equal(b.blocks_allocated, 3);
    assert_int_equal(b.blocks_max, 3);
    put(a, 0, 0, 10, 1); /* 3 blocks */
    size_t n0;
    uint8_t *before = image(a, 0, &n0);
    float k[HEADS * DIM * 3], v[HEADS * DIM * 3];
    rows(k, 10, 3, 1);
    rows(v, 10, 3, 1001);
    expect_error(tkv_cache_append(a, 0, 0, 3, k, v), TKV_ENOMEM, "block pool full");
    expect_error(tkv_cache_append(a, 1, 0, 1, k, v), TKV_ENOMEM, "block pool full");
    size_t n1;
    uint8_t *after = image(a, 0, &n1);
    assert_int_equal(n0, n1);
    assert_memory_equal(before, after, n0);
    assert_int_equal(tkv_cache_bytes(a, &b), TKV_OK);
    assert_int_equal(b.blocks_used, 3);
    /* the last block still has room for 2 tokens */
    assert_int_equal(tkv_cache_append(a, 0, 0, 2, k, v), TKV_OK);
    free(before);
    free(after);
    tkv_cache_destroy(a);
    p.pool_flags = 0x10;
    expect_error(tkv_cache_create(ctx, &p, &a), TKV_EINVAL, "unknown pool_flags");
    /* a limit in bytes: one block in every layer, K and V, takes
     * LAYERS x 2 x HEADS x 4 rows of 52 bytes (turbo3 at head_dim 64) */
    p.pool_flags = 0;
    p.pool_blocks = 0;
    uint64_t block = (uint64_t)LAYERS * 2 * HEADS * 4 * tkv_row_bytes(TKV_TYPE_TURBO3, DIM);
    p.pool_max_bytes = 2 * block + block / 2;
    assert_int_equal(tkv_cache_create(ctx, &p, &a), TKV_OK);
    assert_int_equal(tkv_cache_bytes(a, &b), TKV_OK);
    assert_int_equal(b.blocks_max, 2);
    put(a, 0, 0, 8, 1);
    expect_error(tkv_cache_append(a, 0, 0, 1, k, v), TKV_ENOMEM, "block pool full");
    tkv_cache_destroy(a);
    p.pool_max_bytes = block - 1;
    expect_error(tkv_cache_create(ctx, &p, &a), TKV_EINVAL, "holds no block");
}

/* --- one sequence's state */

static void seq_state_round_trip(void **state)
{
    (void)state;
    tkv_cache *a = make(ctx, 16, TKV_TYPE_TURBO3, TKV_TYPE_TURBO4);
    put(a, 1, 0, 70, 5);
    size_t n;
    uint8_t *img = image(a, 1, &n);
    /* into another sequence of another cache with another block size */
    tkv_cache *b = make(ctx, 5, TKV_TYPE_TURBO3, TKV_TYPE_TURBO4);
    put(b, 3, 0, 9, 6);
    assert_int_equal(tkv_seq_state_set(b, 3, img, n), TKV_OK);
    assert_same_seq(a, 1, b, 3);

    /* a corrupted image is refused and the sequence keeps what it held */
    img[n / 2] ^= 0x10;
    expect_error(tkv_seq_state_set(b, 0, img, n), TKV_EFORMAT, "checksum mismatch");
    expect_error(tkv_seq_state_set(b, 3, img, n - 3), TKV_EFORMAT, "truncated");
    assert_same_seq(a, 1, b, 3);
    img[n / 2] ^= 0x10;
    size_t small = 0;
    expect_error(tkv_seq_state_get(a, 1, img, n - 1, &small), TKV_ERANGE, "takes");

    /* a cache of other types refuses it */
    tkv_cache *c = make(ctx, 16, TKV_TYPE_TURBO4, TKV_TYPE_TURBO4);
    expect_error(tkv_seq_state_set(c, 0, img, n), TKV_EFORMAT, "layer 0 holds K turbo3");

    /* files */
    char path[] = "/tmp/tkv-test-seq-XXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    close(fd);
    assert_int_equal(tkv_seq_save(a, 1, path), TKV_OK);
    assert_int_equal(tkv_seq_restore(b, 0, path), TKV_OK);
    assert_same_seq(a, 1, b, 0);
    /* a whole-cache file of several sequences is not one sequence */
    assert_int_equal(tkv_cache_save(a, path), TKV_OK);
    expect_error(tkv_seq_restore(b, 0, path), TKV_EFORMAT, "x 4 sequences, expected");
    unlink(path);
    /* restoring an empty sequence's image empties the target */
    uint8_t *empty = image(a, 2, &n);
    assert_int_equal(tkv_seq_state_set(b, 0, empty, n), TKV_OK);
    uint32_t len;
    assert_int_equal(tkv_cache_length(b, 0, 1, &len), TKV_OK);
    assert_int_equal(len, 0);
    free(empty);
    free(img);
    tkv_cache_destroy(a);
    tkv_cache_destroy(b);
    tkv_cache_destroy(c);
}

/* A file's capacity decides nothing about memory: a header claiming 2^30
 * tokens per sequence and holding none loads without allocating. Both the
 * header check and the checksum are recomputed, as anyone who writes such a
 * file would. */
static uint64_t fnv1a(uint64_t h, const uint8_t *p, size_t n)
{
    for (size_t i = 0; i < n; i++)
        h = (h ^ p[i]) * 0x100000001b3ull;
    return h;
}

#define FNV0 0xcbf29ce484222325ull

static void put32(uint8_t *p, uint32_t v)
{
    for (int i = 0; i < 4; i++)
        p[i] = (uint8_t)(v >> (8 * i));
}

/* Rewrites file[0..n) to path with a fresh trailing checksum and, when
 * check is set, a fresh header check (offset 44: FNV-1a of the header but
 * that word, folded to 32 bits; the header ends where the rows begin, its
 * size at offset 12). */
static void write_sealed(const char *path, uint8_t *buf, size_t n, int check)
{
    if (check) {
        uint32_t hb = (uint32_t)buf[12] | (uint32_t)buf[13] << 8 | (uint32_t)buf[14] << 16 | (uint32_t)buf[15] << 24;
        uint64_t h = fnv1a(fnv1a(fnv1a(FNV0, buf, 44), buf + 48, 16), buf + 64, hb - 64);
        put32(buf + 44, (uint32_t)(h ^ (h >> 32)));
    }
    uint64_t h = fnv1a(FNV0, buf, n - 8);
    for (int i = 0; i < 8; i++)
        buf[n - 8 + i] = (uint8_t)(h >> (8 * i));
    FILE *f = fopen(path, "wb");
    assert_non_null(f);
    assert_int_equal(fwrite(buf, 1, n, f), n);
    fclose(f);
}

static void untrusted_capacity_allocates_nothing(void **state)
{
    (void)state;
    tkv_cache *a = make(ctx, 16, TKV_TYPE_TURBO3, TKV_TYPE_TURBO3);
    char path[] = "/tmp/tkv-test-cap-XXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    close(fd);
    assert_int_equal(tkv_cache_save(a, path), TKV_OK); /* empty: header and checksum only */
    tkv_cache_destroy(a);
    FILE *f = fopen(path, "rb");
    assert_non_null(f);
    uint8_t buf[4096];
    size_t n = fread(buf, 1, sizeof buf, f);
    fclose(f);
    assert_true(n > 72 && n < sizeof buf);
    assert_int_equal(buf[8], 2); /* format version 2 */
    put32(buf + 28, 1u << 30);   /* capacity 2^30 */
    write_sealed(path, buf, n, 1);
    tkv_cache *b = NULL;
    assert_int_equal(tkv_cache_load(ctx, path, &b), TKV_OK);
    struct tkv_cache_bytes by;
    assert_int_equal(tkv_cache_bytes(b, &by), TKV_OK);
    assert_int_equal(by.capacity, 0);
    tkv_cache_destroy(b);
    unlink(path);
}

/* An edit of the header alone (here the rotation wht -> none, which would
 * decode every row wrongly) with the trailing checksum recomputed is refused
 * by the header check; a version 1 file (no header check, word 44 zero)
 * still loads, and its reserved word must be zero. */
static void edited_header_refused(void **state)
{
    (void)state;
    tkv_cache *a = make(ctx, 16, TKV_TYPE_TURBO3, TKV_TYPE_TURBO3);
    float kv[3 * HEADS * DIM];
    for (unsigned i = 0; i < 3 * HEADS * DIM; i++)
        kv[i] = (float)((i * 7u) % 13u) - 6.0f;
    for (uint32_t l = 0; l < LAYERS; l++)
        assert_int_equal(tkv_cache_append(a, 0, l, 3, kv, kv), TKV_OK);
    char path[] = "/tmp/tkv-test-hdr-XXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    close(fd);
    assert_int_equal(tkv_cache_save(a, path), TKV_OK);
    tkv_cache_destroy(a);
    FILE *f = fopen(path, "rb");
    uint8_t good[1 << 16], buf[1 << 16];
    size_t n = fread(good, 1, sizeof good, f);
    fclose(f);
    assert_true(n > 72 && n < sizeof good);
    assert_int_equal(good[36], TKV_ROTATION_WHT);
    tkv_cache *b = NULL;

    memcpy(buf, good, n);
    buf[36] = TKV_ROTATION_NONE;
    write_sealed(path, buf, n, 0);
    expect_error(tkv_cache_load(ctx, path, &b), TKV_EFORMAT, "header check");
    assert_null(b);
    memcpy(buf, good, n); /* the scale mode: sizes unchanged */
    buf[40] = (uint8_t)(buf[40] == 1 ? 2 : 1);
    write_sealed(path, buf, n, 0);
    expect_error(tkv_cache_load(ctx, path, &b), TKV_EFORMAT, "header check");

    /* the same file as version 1 */
    memcpy(buf, good, n);
    buf[8] = 1;
    put32(buf + 44, 0);
    write_sealed(path, buf, n, 0);
    assert_int_equal(tkv_cache_load(ctx, path, &b), TKV_OK);
    tkv_cache_destroy(b);
    b = NULL;
    put32(buf + 44, 1);
    write_sealed(path, buf, n, 0);
    expect_error(tkv_cache_load(ctx, path, &b), TKV_EFORMAT, "reserved word");
    unlink(path);
}

/* --- attention options against float64 over the stored rows */

static void reference(const tkv_cache *c, uint32_t layer, uint32_t seq, uint32_t nq, const float *q, double scale,
                      uint32_t window, double softcap, float *out, float *lse)
{
    uint32_t n;
    assert_int_equal(tkv_cache_length(c, seq, layer, &n), TKV_OK);
    float *k = malloc(sizeof(float) * n * HEADS * DIM), *v = malloc(sizeof(float) * n * HEADS * DIM);
    assert_int_equal(tkv_cache_dequantize(c, seq, layer, 0, 0, n, k), TKV_OK);
    assert_int_equal(tkv_cache_dequantize(c, seq, layer, 1, 0, n, v), TKV_OK);
    double *x = malloc(sizeof(double) * n);
    for (uint32_t i = 0; i < nq; i++)
        for (uint32_t h = 0; h < QHEADS; h++) {
            uint32_t kvh = h / (QHEADS / HEADS), p = n - nq + i;
            uint32_t lo = window && p + 1 > window ? p + 1 - window : 0;
            const float *qr = q + ((size_t)i * QHEADS + h) * DIM;
            double m = -INFINITY, l = 0;
            for (uint32_t j = lo; j <= p; j++) {
                double d = 0;
                for (uint32_t e = 0; e < DIM; e++)
                    d += (double)qr[e] * k[((size_t)j * HEADS + kvh) * DIM + e];
                d *= scale;
                if (softcap > 0)
                    d = softcap * tanh(d / softcap);
                x[j] = d;
                m = d > m ? d : m;
            }
            double acc[DIM] = { 0 };
            for (uint32_t j = lo; j <= p; j++) {
                double w = exp(x[j] - m);
                l += w;
                for (uint32_t e = 0; e < DIM; e++)
                    acc[e] += w * v[((size_t)j * HEADS + kvh) * DIM + e];
            }
            for (uint32_t e = 0; e < DIM; e++)
                out[((size_t)i * QHEADS + h) * DIM + e] = (float)(acc[e] / l);
            if (lse)
                lse[(size_t)i * QHEADS + h] = (float)(m + log(l));
        }
    free(x);
    free(k);
    free(v);
}

static void options_against_reference(void **state)
{
    (void)state;
    struct tkv_device_caps caps = { .struct_size = sizeof caps };
    assert_int_equal(tkv_context_caps(ctx, &caps), TKV_OK);
    const uint32_t need = TKV_CAP_MIXED_NQ | TKV_CAP_WINDOW | TKV_CAP_SOFTCAP | TKV_CAP_LSE;
    if ((caps.features & need) != need)
        fail_msg("backend %s lacks an attention option (features 0x%x)", backend, caps.features);
    tkv_cache *c = make(ctx, 16, TKV_TYPE_TURBO4, TKV_TYPE_Q8_0);
    put(c, 0, 0, 90, 1);
    put(c, 1, 0, 7, 2);
    put(c, 3, 0, 130, 3);
    static const struct {
        uint32_t window;
        float scale, softcap;
    } cases[] = { { 0, 0, 0 }, { 32, 0, 0 }, { 0, 0.3f, 0 }, { 0, 0, 5.0f }, { 1, 0, 0 }, { 20, 0.2f, 2.0f } };
    uint32_t ids[3] = { 3, 1, 0 }, nq[3] = { 1, 7, 4 }, total = 12;
    float *q = malloc(sizeof(float) * total * QHEADS * DIM), *out = malloc(sizeof(float) * total * QHEADS * DIM);
    float *want = malloc(sizeof(float) * total * QHEADS * DIM), lse[12 * QHEADS], want_lse[12 * QHEADS];
    for (uint32_t i = 0; i < total * QHEADS * DIM; i++)
        q[i] = 0.6f * sinf(0.11f * (float)i) + 0.2f * cosf(0.7f * (float)i);
    for (size_t k = 0; k < sizeof cases / sizeof cases[0]; k++) {
        uint64_t device_ns = 12345;
        struct tkv_attention_options o = {
            .struct_size = sizeof o, .window = cases[k].window, .scale = cases[k].scale,
            .softcap = cases[k].softcap, .lse = lse, .device_ns = &device_ns,
        };
        if (tkv_attention_ex(c, 1, 3, ids, nq, QHEADS, q, out, &o) != TKV_OK)
            fail_msg("case %zu: %s", k, tkv_last_error());
        /* the GPU plugins time the call on the device; cpu has no timer */
        if (strcmp(backend, "cpu") == 0 ? device_ns != 0 : device_ns == 0)
            fail_msg("case %zu: device_ns %llu on %s", k, (unsigned long long)device_ns, backend);
        double scale = cases[k].scale ? cases[k].scale : 1.0 / sqrt(DIM);
        for (uint32_t s = 0, at = 0; s < 3; at += nq[s], s++)
            reference(c, 1, ids[s], nq[s], q + (size_t)at * QHEADS * DIM, scale, cases[k].window, cases[k].softcap,
                      want + (size_t)at * QHEADS * DIM, want_lse + (size_t)at * QHEADS);
        assert_close(out, want, (size_t)total * QHEADS * DIM, 2e-4);
        assert_close(lse, want_lse, (size_t)total * QHEADS, 2e-4);
    }
    /* the host API's checks */
    uint32_t zero[3] = { 1, 0, 1 }, many[3] = { 1, 8, 1 };
    expect_error(tkv_attention_ex(c, 1, 3, ids, zero, QHEADS, q, out, NULL), TKV_EINVAL, "n_q of sequence 1 is 0");
    expect_error(tkv_attention_ex(c, 1, 3, ids, many, QHEADS, q, out, NULL), TKV_ERANGE, "fewer than n_q = 8");
    struct tkv_attention_options bad = { .struct_size = sizeof bad, .softcap = -1.0f };
    expect_error(tkv_attention_ex(c, 1, 3, ids, nq, QHEADS, q, out, &bad), TKV_EINVAL, "softcap");
    free(q);
    free(out);
    free(want);
    tkv_cache_destroy(c);
}

/* --- capabilities, through the minimal test plugin */

static void capabilities_refuse_before_allocating(void **state)
{
    (void)state;
    if (strcmp(backend, "cpu") != 0)
        skip(); /* the minimal plugin forwards to cpu: once is enough */
    tkv_context *m = NULL;
    assert_int_equal(open_ctx("minimal", &m), TKV_OK);
    assert_string_equal(tkv_context_backend(m), "minimal");
    struct tkv_cache_params p = {
        .struct_size = sizeof p, .n_layers = LAYERS, .n_kv_heads = 1, .head_dim = 64, .capacity = 64,
        .k_type = TKV_TYPE_TURBO2, .v_type = TKV_TYPE_TURBO3,
    };
    tkv_cache *c = NULL;
    expect_error(tkv_cache_create(m, &p, &c), TKV_EUNSUPPORTED, "key type turbo2 unsupported (layer 0)");
    p.k_type = TKV_TYPE_TURBO3;
    p.head_dim = 512;
    expect_error(tkv_cache_create(m, &p, &c), TKV_EUNSUPPORTED, "head_dim 512 unsupported (at most 256)");
    assert_null(c);

    /* format revision 1: the plugin's masks claim turbo3o, turbo4o and rotor (they come from cpu's), but
     * it does not set TKV_CAP_FORMAT_R1, so the core clears them, and auto falls back to q8_0 / turbo3 */
    struct tkv_device_caps mc = { .struct_size = sizeof mc };
    assert_int_equal(tkv_context_caps(m, &mc), TKV_OK);
    assert_false(mc.features & TKV_CAP_FORMAT_R1);
    assert_int_equal(mc.k_types & (1u << TKV_TYPE_TURBO3_OUT | 1u << TKV_TYPE_TURBO4_OUT), 0);
    assert_int_equal(mc.v_types & (1u << TKV_TYPE_TURBO3_OUT | 1u << TKV_TYPE_TURBO4_OUT), 0);
    assert_int_equal(mc.rotations & (1u << TKV_ROTATION_ROTOR), 0);
    assert_true(mc.k_types & (1u << TKV_TYPE_TURBO4_QJL)); /* the older types stay */
    p.head_dim = 128;
    p.k_type = TKV_TYPE_TURBO3_OUT;
    expect_error(tkv_cache_create(m, &p, &c), TKV_EUNSUPPORTED, "key type turbo3o unsupported (layer 0)");
    p.k_type = TKV_TYPE_TURBO3;
    p.rotation = TKV_ROTATION_ROTOR;
    expect_error(tkv_cache_create(m, &p, &c), TKV_EUNSUPPORTED, "rotation rotor unsupported");
    p.rotation = 0;
    p.k_type = p.v_type = TKV_TYPE_FROM_CONFIG;
    assert_int_equal(tkv_cache_create(m, &p, &c), TKV_OK);
    uint32_t kt, vt;
    assert_int_equal(tkv_cache_layer_types(c, 0, &kt, &vt), TKV_OK);
    assert_int_equal(kt, TKV_TYPE_Q8_0);
    assert_int_equal(vt, TKV_TYPE_TURBO3);
    tkv_cache_destroy(c);
    c = NULL;
    /* cpu declares them: there they are stored when asked for by name */
    tkv_cache *on_cpu = NULL;
    p.k_type = p.v_type = TKV_TYPE_TURBO3_OUT;
    assert_int_equal(tkv_cache_create(ctx, &p, &on_cpu), TKV_OK);
    assert_int_equal(tkv_cache_layer_types(on_cpu, 0, &kt, &vt), TKV_OK);
    assert_int_equal(kt, TKV_TYPE_TURBO3_OUT);
    assert_int_equal(vt, TKV_TYPE_TURBO3_OUT);
    tkv_cache_destroy(on_cpu);
    p.k_type = TKV_TYPE_TURBO3;
    p.v_type = TKV_TYPE_TURBO3;

    /* what it can hold works, options it lacks are refused by the core */
    p.head_dim = DIM;
    p.n_kv_heads = HEADS;
    p.n_seqs = 2;
    p.block_tokens = 8;
    assert_int_equal(tkv_cache_create(m, &p, &c), TKV_OK);
    put(c, 0, 0, 20, 1);
    float q[QHEADS * DIM] = { 0 }, out[QHEADS * DIM];
    uint32_t id = 0, one = 1;
    struct tkv_attention_options o = { .struct_size = sizeof o, .window = 4 };
    expect_error(tkv_attention_ex(c, 0, 1, &id, &one, QHEADS, q, out, &o), TKV_EUNSUPPORTED, "sliding-window");
    o = (struct tkv_attention_options){ .struct_size = sizeof o, .lse = out };
    expect_error(tkv_attention_ex(c, 0, 1, &id, &one, QHEADS, q, out, &o), TKV_EUNSUPPORTED, "log-sum-exp");

    /* no buffer_copy: the fork's copy-on-write goes through host memory, same bytes as on cpu */
    assert_int_equal(tkv_seq_copy(c, 0, 1, 13), TKV_OK);
    put(c, 1, 13, 4, 9);
    tkv_cache *ref = NULL;
    p.n_kv_heads = HEADS;
    assert_int_equal(tkv_cache_create(ctx, &p, &ref), TKV_OK);
    put(ref, 1, 0, 13, 1);
    put(ref, 1, 13, 4, 9);
    assert_same_seq(c, 1, ref, 1);
    tkv_cache_destroy(ref);
    tkv_cache_destroy(c);
    tkv_context_close(m);

    /* backend auto: the minimal device outranks cpu, unless the cache needs what it lacks */
    struct tkv_cache_params want = p;
    want.head_dim = 512;
    struct tkv_context_options opts = {
        .struct_size = sizeof opts, .ignore_env = 1, .config_path = config_path, .plugin_path = plugin_path,
    };
    assert_int_equal(tkv_context_open(&opts, &m), TKV_OK);
    assert_string_equal(tkv_context_backend(m), "minimal");
    tkv_context_close(m);
    opts.require = &want;
    assert_int_equal(tkv_context_open(&opts, &m), TKV_OK);
    assert_string_equal(tkv_context_backend(m), "cpu");
    tkv_context_close(m);
    /* a named backend that cannot hold the announced cache fails at open */
    opts.backend = "minimal";
    expect_error(tkv_context_open(&opts, &m), TKV_EUNSUPPORTED, "head_dim 512 unsupported");
}

/* ABI 2.5: the keys' and values' appends of one tkv_cache_append reach a
 * plugin marked as a pair, in that order; a plugin of an older minor sees
 * the word as it was (0). */
static void append_pair_flags(void **state)
{
    (void)state;
    if (strcmp(backend, "cpu") != 0)
        skip(); /* the minimal plugin forwards to cpu: once is enough */
    char log[] = "/tmp/turbokv-append-log-XXXXXX";
    int fd = mkstemp(log);
    assert_true(fd >= 0);
    close(fd);
    setenv("TKV_MINIMAL_APPEND_LOG", log, 1);
    setenv("TKV_MINIMAL_FEATURES", "0", 1);
    static const struct {
        const char *minor, *expect;
    } cases[] = {
        { "5", "flags 1\nflags 2\nflags 1\nflags 2\n" },
        { "4", "flags 0\nflags 0\nflags 0\nflags 0\n" },
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        setenv("TKV_MINIMAL_ABI_MINOR", cases[i].minor, 1);
        assert_int_equal(truncate(log, 0), 0);
        tkv_context *m = NULL;
        assert_int_equal(open_ctx("minimal", &m), TKV_OK);
        struct tkv_cache_params p = {
            .struct_size = sizeof p, .n_layers = 2, .n_kv_heads = 2, .head_dim = 64, .capacity = 16,
            .k_type = TKV_TYPE_TURBO3, .v_type = TKV_TYPE_TURBO3,
        };
        tkv_cache *c = NULL;
        assert_int_equal(tkv_cache_create(m, &p, &c), TKV_OK);
        float rows[3 * 2 * 64];
        for (size_t j = 0; j < sizeof rows / sizeof *rows; j++)
            rows[j] = (float)((j * 37) % 11) - 5.0f;
        assert_int_equal(tkv_cache_append(c, 0, 0, 3, rows, rows), TKV_OK);
        assert_int_equal(tkv_cache_append(c, 0, 1, 1, rows, rows), TKV_OK);
        tkv_cache_destroy(c);
        tkv_context_close(m);
        char got[256] = { 0 };
        FILE *f = fopen(log, "r");
        assert_non_null(f);
        size_t n = fread(got, 1, sizeof got - 1, f);
        fclose(f);
        got[n] = 0;
        print_message("minimal ABI 2.%s: %s", cases[i].minor, got);
        assert_string_equal(got, cases[i].expect);
    }
    unsetenv("TKV_MINIMAL_APPEND_LOG");
    unsetenv("TKV_MINIMAL_ABI_MINOR");
    unsetenv("TKV_MINIMAL_FEATURES");
    unlink(log);
}

/* --- the feature bits of format revision 1 (ABI 2.4), through the minimal plugin: TKV_CAP_ROTOR and
 * TKV_CAP_OUTLIER_TYPES each admit their own additions; a plugin before 2.4 declares both with
 * TKV_CAP_FORMAT_R1 and cannot set the new bit */
static void format_r1_bits(void **state)
{
    (void)state;
    if (strcmp(backend, "cpu") != 0)
        skip(); /* the minimal plugin forwards to cpu: once is enough */
    static const struct {
        const char *minor, *features;
        int split, rotor;
    } cases[] = {
        { "0", "0x100", 1, 1 }, /* 2.0, TKV_CAP_FORMAT_R1: both, as before 2.4 */
        { "3", "0x100", 1, 1 }, /* 2.3, likewise */
        { "0", "0x800", 0, 0 }, /* 2.0, TKV_CAP_OUTLIER_TYPES: a bit its minor does not know */
        { "3", "0x800", 0, 0 }, /* 2.3, likewise */
        { "4", "0x800", 1, 0 }, /* 2.4, TKV_CAP_OUTLIER_TYPES: the split types alone */
        { "4", "0x100", 0, 1 }, /* 2.4, TKV_CAP_ROTOR: the rotation alone */
        { "4", "0x900", 1, 1 },
    };
    const uint32_t split_bits = 1u << TKV_TYPE_TURBO3_OUT | 1u << TKV_TYPE_TURBO4_OUT;
    assert_int_equal(TKV_CAP_ROTOR, 0x100); /* the numbers of the cases above */
    assert_int_equal(TKV_CAP_OUTLIER_TYPES, 0x800);
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        setenv("TKV_MINIMAL_ABI_MINOR", cases[i].minor, 1);
        setenv("TKV_MINIMAL_FEATURES", cases[i].features, 1);
        tkv_context *m = NULL;
        assert_int_equal(open_ctx("minimal", &m), TKV_OK);
        struct tkv_device_caps mc = { .struct_size = sizeof mc };
        assert_int_equal(tkv_context_caps(m, &mc), TKV_OK);
        print_message("minimal ABI 2.%s features %s: k_types %#x rotations %#x\n", cases[i].minor,
                      cases[i].features, mc.k_types, mc.rotations);
        assert_int_equal(!!(mc.features & TKV_CAP_OUTLIER_TYPES), cases[i].split);
        assert_int_equal(!!(mc.features & TKV_CAP_ROTOR), cases[i].rotor);
        assert_int_equal(mc.k_types & split_bits, cases[i].split ? split_bits : 0u);
        assert_int_equal(mc.v_types & split_bits, cases[i].split ? split_bits : 0u);
        assert_int_equal(!!(mc.rotations & (1u << TKV_ROTATION_ROTOR)), cases[i].rotor);
        assert_true(mc.k_types & (1u << TKV_TYPE_TURBO4_QJL)); /* the older types stay */
        struct tkv_cache_params p = {
            .struct_size = sizeof p, .n_layers = 1, .n_kv_heads = 1, .head_dim = 128, .capacity = 16,
            .k_type = TKV_TYPE_TURBO3_OUT, .v_type = TKV_TYPE_TURBO3,
        };
        tkv_cache *c = NULL;
        if (cases[i].split) {
            assert_int_equal(tkv_cache_create(m, &p, &c), TKV_OK);
            tkv_cache_destroy(c);
        } else {
            expect_error(tkv_cache_create(m, &p, &c), TKV_EUNSUPPORTED,
                         "key type turbo3o unsupported (layer 0): the device lacks TKV_CAP_OUTLIER_TYPES");
            p.k_type = TKV_TYPE_TURBO3;
            p.v_type = TKV_TYPE_TURBO4_OUT;
            expect_error(tkv_cache_create(m, &p, &c), TKV_EUNSUPPORTED,
                         "value type turbo4o unsupported (layer 0): the device lacks TKV_CAP_OUTLIER_TYPES");
        }
        p.k_type = p.v_type = TKV_TYPE_TURBO3;
        p.rotation = TKV_ROTATION_ROTOR;
        c = NULL;
        if (cases[i].rotor) {
            assert_int_equal(tkv_cache_create(m, &p, &c), TKV_OK);
            tkv_cache_destroy(c);
        } else {
            expect_error(tkv_cache_create(m, &p, &c), TKV_EUNSUPPORTED,
                         "rotation rotor unsupported: the device lacks TKV_CAP_ROTOR");
        }
        /* auto at head_dim 128: the split types where the device has them, whatever the rotation */
        p.rotation = 0;
        p.k_type = p.v_type = TKV_TYPE_FROM_CONFIG;
        c = NULL;
        assert_int_equal(tkv_cache_create(m, &p, &c), TKV_OK);
        uint32_t kt, vt;
        assert_int_equal(tkv_cache_layer_types(c, 0, &kt, &vt), TKV_OK);
        assert_int_equal(kt, cases[i].split ? TKV_TYPE_TURBO3_OUT : TKV_TYPE_Q8_0);
        assert_int_equal(vt, cases[i].split ? TKV_TYPE_TURBO3_OUT : TKV_TYPE_TURBO3);
        tkv_cache_destroy(c);
        tkv_context_close(m);
    }
    unsetenv("TKV_MINIMAL_ABI_MINOR");
    unsetenv("TKV_MINIMAL_FEATURES");
}

/* --- two threads on one context */

struct busy {
    pthread_mutex_t lock;
    pthread_cond_t cond;
    int inside, done;
    int other_rc;
    char other_error[256];
    tkv_cache *cache;
};

static struct busy busy = { PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, 0, 0, 0, "", NULL };

/* The log callback runs inside the context (at level debug, on every plugin
 * call): it holds the first call there until the other thread has tried. */
static void blocking_log(void *user, int level, const char *msg)
{
    (void)user, (void)level, (void)msg;
    pthread_mutex_lock(&busy.lock);
    if (!busy.inside) {
        busy.inside = 1;
        pthread_cond_broadcast(&busy.cond);
        while (!busy.done)
            pthread_cond_wait(&busy.cond, &busy.lock);
    }
    pthread_mutex_unlock(&busy.lock);
}

static void *other_thread(void *arg)
{
    (void)arg;
    pthread_mutex_lock(&busy.lock);
    while (!busy.inside)
        pthread_cond_wait(&busy.cond, &busy.lock);
    pthread_mutex_unlock(&busy.lock);
    uint32_t n;
    busy.other_rc = tkv_cache_length(busy.cache, 0, 0, &n);
    snprintf(busy.other_error, sizeof busy.other_error, "%s", tkv_last_error());
    pthread_mutex_lock(&busy.lock);
    busy.done = 1;
    pthread_cond_broadcast(&busy.cond);
    pthread_mutex_unlock(&busy.lock);
    return NULL;
}

static void two_threads_get_ebusy(void **state)
{
    (void)state;
    char cfg[sizeof config_path + 8];
    snprintf(cfg, sizeof cfg, "%s.debug", config_path);
    FILE *f = fopen(cfg, "w");
    assert_non_null(f);
    fprintf(f, "sparse_v: false\nlog: debug\n");
    fclose(f);
    struct tkv_context_options o = {
        .struct_size = sizeof o, .ignore_env = 1, .config_path = cfg, .plugin_path = plugin_path,
        .backend = backend, .log_fn = blocking_log,
    };
    busy.inside = 1; /* let context open and cache creation log freely */
    busy.done = 1;
    tkv_context *c = NULL;
    assert_int_equal(tkv_context_open(&o, &c), TKV_OK);
    busy.cache = make(c, 16, TKV_TYPE_TURBO3, TKV_TYPE_TURBO3);
    busy.inside = busy.done = 0;
    pthread_t t;
    assert_int_equal(pthread_create(&t, NULL, other_thread, NULL), 0);
    put(busy.cache, 0, 0, 4, 1); /* logs its plugin calls: blocks until the other thread tried */
    pthread_join(t, NULL);
    assert_int_equal(busy.other_rc, TKV_EBUSY);
    assert_non_null(strstr(busy.other_error, "in use by another thread"));
    /* once the first call returned, the other thread's call works */
    uint32_t n = 0;
    assert_int_equal(tkv_cache_length(busy.cache, 0, 0, &n), TKV_OK);
    assert_int_equal(n, 4);
    tkv_cache_destroy(busy.cache);
    tkv_context_close(c);
    unlink(cfg);
}

int main(int argc, char **argv)
{
    const char *good = getenv("TURBO_PLUGIN_PATH"), *minimal = getenv("TKV_MINIMAL_PLUGIN_DIR");
    if (argc > 1)
        backend = argv[1];
    if (!good || !minimal) {
        fprintf(stderr, "TURBO_PLUGIN_PATH and TKV_MINIMAL_PLUGIN_DIR must be set (meson test does)\n");
        return 1;
    }
    snprintf(plugin_path, sizeof plugin_path, "%s:%s", good, minimal);
    snprintf(config_path, sizeof config_path, "/tmp/tkv-test-paged-%ld.yaml", (long)getpid());
    FILE *f = fopen(config_path, "w");
    if (!f || fprintf(f, "sparse_v: false\n") < 0 || fclose(f) != 0)
        return 1;
    if (open_ctx(backend, &ctx) != TKV_OK) {
        fprintf(stderr, "cannot open backend %s: %s\n", backend, tkv_last_error());
        unlink(config_path);
        return getenv("CI") && strcmp(getenv("CI"), "true") == 0 ? 1 : 77;
    }
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(paged_equals_contiguous),
        cmocka_unit_test(truncate_then_reappend),
        cmocka_unit_test(fork_then_decode),
        cmocka_unit_test(remove_and_keep_return_blocks),
        cmocka_unit_test(full_pool_changes_nothing),
        cmocka_unit_test(seq_state_round_trip),
        cmocka_unit_test(untrusted_capacity_allocates_nothing),
        cmocka_unit_test(edited_header_refused),
        cmocka_unit_test(options_against_reference),
        cmocka_unit_test(capabilities_refuse_before_allocating),
        cmocka_unit_test(format_r1_bits),
        cmocka_unit_test(append_pair_flags),
        cmocka_unit_test(two_threads_get_ebusy),
    };
    int rc = cmocka_run_group_tests(tests, NULL, NULL);
    tkv_context_close(ctx);
    unlink(config_path);
    return rc;
}
