/* SPDX-License-Identifier: MIT */
/*
 * The host API under bad input, and persistence: every bad argument gets an
 * error naming what was wrong and leaves the cache exactly as it was; NaN/Inf
 * rows stay local; cache files round-trip, and truncated, corrupted or
 * mismatched files are refused with a message that says which.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

#include "turbokv.h"
#include "turbokv_format.h"

#define LAYERS 2
#define HEADS 2
#define DIM 64
#define CAP 16
#define ROW (HEADS * DIM)

static tkv_context *ctx;
static char tmpdir[] = "/tmp/tkv-test-api-XXXXXX";

static void fill(float *x, size_t n, uint32_t seed)
{
    for (size_t i = 0; i < n; i++) {
        seed = seed * 1664525u + 1013904223u;
        x[i] = ((seed >> 8) / 16777216.0f - 0.5f) * 4.0f;
    }
}

static tkv_cache *make_cache(uint32_t k_type, uint32_t v_type, uint32_t n_seqs)
{
    struct tkv_cache_params p = {
        .struct_size = sizeof p, .n_layers = LAYERS, .n_kv_heads = HEADS, .head_dim = DIM, .capacity = CAP,
        .n_seqs = n_seqs, .k_type = k_type, .v_type = v_type,
    };
    tkv_cache *c = NULL;
    assert_int_equal(tkv_cache_create(ctx, &p, &c), TKV_OK);
    return c;
}

/* Appends n tokens to every layer of seq. */
static void fill_tokens(tkv_cache *c, uint32_t seq, uint32_t n, uint32_t seed)
{
    float k[CAP * ROW], v[CAP * ROW];
    fill(k, (size_t)n * ROW, seed);
    fill(v, (size_t)n * ROW, seed + 7);
    for (uint32_t l = 0; l < LAYERS; l++)
        assert_int_equal(tkv_cache_append(c, seq, l, n, k, v), TKV_OK);
}

/* A snapshot of everything stored (both layers, K and V, sequence 0). */
struct snapshot {
    uint32_t len[LAYERS];
    float kv[LAYERS][2][CAP * ROW];
};

static void snap(const tkv_cache *c, struct snapshot *s)
{
    memset(s, 0, sizeof *s);
    for (uint32_t l = 0; l < LAYERS; l++) {
        assert_int_equal(tkv_cache_length(c, 0, l, &s->len[l]), TKV_OK);
        for (int w = 0; w < 2 && s->len[l]; w++)
            assert_int_equal(tkv_cache_dequantize(c, 0, l, w, 0, s->len[l], s->kv[l][w]), TKV_OK);
    }
}

static void assert_unchanged(const tkv_cache *c, const struct snapshot *before)
{
    struct snapshot *now = malloc(sizeof *now);
    snap(c, now);
    assert_memory_equal(now, before, sizeof *now);
    free(now);
}

static void expect_error(int rc, int status, const char *part)
{
    assert_int_equal(rc, status);
    if (!strstr(tkv_last_error(), part))
        fail_msg("error '%s' lacks '%s'", tkv_last_error(), part);
}

static void create_rejects_bad_params(void **state)
{
    (void)state;
    struct tkv_cache_params p = {
        .struct_size = sizeof p, .n_layers = 1, .n_kv_heads = 1, .head_dim = 64, .capacity = 8,
        .k_type = TKV_TYPE_TURBO3, .v_type = TKV_TYPE_TURBO3,
    };
    tkv_cache *c = NULL;
    expect_error(tkv_cache_create(NULL, &p, &c), TKV_EINVAL, "NULL");
    expect_error(tkv_cache_create(ctx, NULL, &c), TKV_EINVAL, "NULL");
    struct tkv_cache_params b = p;
    b.head_dim = 100;
    expect_error(tkv_cache_create(ctx, &b, &c), TKV_EUNSUPPORTED, "head_dim 100 unsupported");
    b = p;
    b.n_layers = 0;
    expect_error(tkv_cache_create(ctx, &b, &c), TKV_EINVAL, "n_layers 0");
    b = p;
    b.capacity = 0;
    expect_error(tkv_cache_create(ctx, &b, &c), TKV_EINVAL, "capacity is 0");
    b = p;
    b.k_type = 42;
    expect_error(tkv_cache_create(ctx, &b, &c), TKV_EINVAL, "key type 42");
    b = p;
    b.n_q_heads = 3;
    b.n_kv_heads = 2;
    expect_error(tkv_cache_create(ctx, &b, &c), TKV_EINVAL, "not a multiple");
    assert_null(c);
}

static void failed_calls_change_nothing(void **state)
{
    (void)state;
    tkv_cache *c = make_cache(TKV_TYPE_TURBO3, TKV_TYPE_TURBO3, 1);
    fill_tokens(c, 0, CAP - 2, 1);
    struct snapshot *before = malloc(sizeof *before);
    snap(c, before);
    float k[4 * ROW], v[4 * ROW], q[4 * HEADS * DIM], out[4 * HEADS * DIM];
    fill(k, sizeof k / sizeof *k, 3);
    fill(v, sizeof v / sizeof *v, 4);
    fill(q, sizeof q / sizeof *q, 5);
    uint32_t seq0 = 0, seq9 = 9;

    expect_error(tkv_cache_append(c, 0, 0, 4, k, v), TKV_ERANGE, "capacity exceeded");
    expect_error(tkv_cache_append(c, 0, LAYERS, 1, k, v), TKV_ERANGE, "layer 2 out of range");
    expect_error(tkv_cache_append(c, 1, 0, 1, k, v), TKV_ERANGE, "sequence 1 out of range");
    expect_error(tkv_cache_append(c, 0, 0, 1, NULL, v), TKV_EINVAL, "key rows are NULL");
    expect_error(tkv_cache_append(c, 0, 0, 0, k, v), TKV_EINVAL, "n_tokens is 0");
    expect_error(tkv_attention(c, 0, 1, &seq0, 1, 3, q, out, NULL), TKV_EINVAL, "multiple of n_kv_heads");
    expect_error(tkv_attention(c, 0, 1, &seq9, 1, HEADS, q, out, NULL), TKV_ERANGE, "seq_ids[0] = 9");
    expect_error(tkv_attention(c, 0, 1, &seq0, CAP, HEADS, q, out, NULL), TKV_ERANGE, "fewer than n_q");
    expect_error(tkv_attention(c, 0, 1, &seq0, 0, HEADS, q, out, NULL), TKV_EINVAL, "n_q is 0");
    expect_error(tkv_attention(c, 5, 1, &seq0, 1, HEADS, q, out, NULL), TKV_ERANGE, "layer 5");
    expect_error(tkv_attention(c, 0, 1, &seq0, 1, HEADS, NULL, out, NULL), TKV_EINVAL, "q is NULL");
    expect_error(tkv_cache_dequantize(c, 0, 0, 2, 0, 1, out), TKV_EINVAL, "which = 2");
    expect_error(tkv_cache_dequantize(c, 0, 0, 0, CAP - 3, 2, out), TKV_ERANGE, "holds 14");
    assert_unchanged(c, before);
    free(before);
    tkv_cache_destroy(c);
}

static void nonfinite_rows_stay_local(void **state)
{
    (void)state;
    static const uint32_t types[] = { TKV_TYPE_F32, TKV_TYPE_F16, TKV_TYPE_Q8_0, TKV_TYPE_TURBO2, TKV_TYPE_TURBO3,
                                      TKV_TYPE_TURBO4 };
    for (size_t t = 0; t < sizeof types / sizeof *types; t++) {
        tkv_cache *c = make_cache(types[t], types[t], 1);
        float k[3 * ROW], v[3 * ROW], back[3 * ROW];
        fill(k, 3 * ROW, 11);
        fill(v, 3 * ROW, 12);
        memset(k + ROW, 0, ROW * sizeof *k); /* token 1: zero row */
        memset(v + ROW, 0, ROW * sizeof *v);
        k[2 * ROW + 5] = NAN; /* token 2: one NaN and one Inf */
        v[2 * ROW + 9] = INFINITY;
        assert_int_equal(tkv_cache_append(c, 0, 0, 3, k, v), TKV_OK);
        for (int w = 0; w < 2; w++) {
            assert_int_equal(tkv_cache_dequantize(c, 0, 0, w, 0, 3, back), TKV_OK);
            for (int i = 0; i < 3 * ROW; i++)
                assert_true(isfinite(back[i]));
            for (int i = ROW; i < 2 * ROW; i++)
                assert_true(back[i] == 0.0f); /* a zero row stays zero */
            assert_true(back[w ? 2 * ROW + 9 : 2 * ROW + 5] == 0.0f || tkv_type_is_turbo(types[t]));
        }
        /* the attention output stays finite, and the zero key attends as score 0 */
        float q[HEADS * DIM], out[HEADS * DIM];
        fill(q, HEADS * DIM, 13);
        uint32_t seq = 0;
        assert_int_equal(tkv_attention(c, 0, 1, &seq, 1, HEADS, q, out, NULL), TKV_OK);
        for (int i = 0; i < HEADS * DIM; i++)
            assert_true(isfinite(out[i]));
        tkv_cache_destroy(c);
    }
}

static void bytes_accounting(void **state)
{
    (void)state;
    tkv_cache *c = make_cache(TKV_TYPE_TURBO3, TKV_TYPE_TURBO3, 2);
    fill_tokens(c, 0, 5, 1);
    fill_tokens(c, 1, 3, 2);
    struct tkv_cache_bytes b;
    assert_int_equal(tkv_cache_bytes(c, &b), TKV_OK);
    uint64_t rows = (uint64_t)(5 + 3) * LAYERS * HEADS;
    assert_int_equal(b.used, rows * 2 * 26); /* 64 values: 2 bytes scale + 24 bytes of 3-bit indices */
    assert_int_equal(b.used_f16, rows * 2 * DIM * 2);
    assert_int_equal(b.used_f32, rows * 2 * DIM * 4);
    assert_int_equal(b.capacity, (uint64_t)2 * CAP * LAYERS * HEADS * 2 * 26);
    assert_int_equal(tkv_cache_clear(c, 1), TKV_OK);
    assert_int_equal(tkv_cache_bytes(c, &b), TKV_OK);
    assert_int_equal(b.used, (uint64_t)5 * LAYERS * HEADS * 2 * 26);
    tkv_cache_destroy(c);
}

static void path_in(char *buf, size_t n, const char *name) { snprintf(buf, n, "%s/%s", tmpdir, name); }

static void save_load_round_trip(void **state)
{
    (void)state;
    char path[512];
    path_in(path, sizeof path, "rt.tkv");
    tkv_cache *c = make_cache(TKV_TYPE_Q8_0, TKV_TYPE_TURBO3, 1);
    fill_tokens(c, 0, 9, 21);
    assert_int_equal(tkv_cache_save(c, path), TKV_OK);
    tkv_cache *d = NULL;
    assert_int_equal(tkv_cache_load(ctx, path, &d), TKV_OK);
    struct snapshot *a = malloc(sizeof *a), *b = malloc(sizeof *b);
    snap(c, a);
    snap(d, b);
    assert_memory_equal(a, b, sizeof *a);
    /* the loaded cache keeps working: append and attend */
    fill_tokens(d, 0, 2, 22);
    float q[HEADS * DIM], o1[HEADS * DIM], o2[HEADS * DIM];
    fill(q, HEADS * DIM, 23);
    fill_tokens(c, 0, 2, 22);
    uint32_t seq = 0;
    assert_int_equal(tkv_attention(c, 1, 1, &seq, 1, HEADS, q, o1, NULL), TKV_OK);
    assert_int_equal(tkv_attention(d, 1, 1, &seq, 1, HEADS, q, o2, NULL), TKV_OK);
    assert_memory_equal(o1, o2, sizeof o1);
    free(a);
    free(b);
    tkv_cache_destroy(c);
    tkv_cache_destroy(d);
}

static long file_size(const char *path)
{
    FILE *f = fopen(path, "rb");
    assert_non_null(f);
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fclose(f);
    return n;
}

static void patch(const char *src, const char *dst, long offset, const void *bytes, size_t n, long truncate_to)
{
    long size = file_size(src);
    unsigned char *buf = malloc(size);
    FILE *f = fopen(src, "rb");
    assert_int_equal(fread(buf, 1, size, f), size);
    fclose(f);
    if (bytes)
        memcpy(buf + (offset < 0 ? size + offset : offset), bytes, n);
    f = fopen(dst, "wb");
    fwrite(buf, 1, truncate_to >= 0 ? truncate_to : size, f);
    fclose(f);
    free(buf);
}

/* Recomputes the trailing FNV-1a checksum, so a header edit reaches the
 * checks behind the checksum. */
static void reseal(const char *path)
{
    long size = file_size(path);
    unsigned char *buf = malloc(size);
    FILE *f = fopen(path, "r+b");
    assert_int_equal(fread(buf, 1, size, f), size);
    uint64_t h = 0xcbf29ce484222325ull;
    for (long i = 0; i < size - 8; i++)
        h = (h ^ buf[i]) * 0x100000001b3ull;
    for (int i = 0; i < 8; i++)
        buf[size - 8 + i] = (unsigned char)(h >> (8 * i));
    fseek(f, 0, SEEK_SET);
    fwrite(buf, 1, size, f);
    fclose(f);
    free(buf);
}

/* Saves a one-sequence cache of `type` keys and values holding n_saved
 * tokens (seed) to path, and returns the target of the refusals that
 * follow: another such cache holding n_kept tokens (seed + 1), other data
 * that must survive every refusal, with its snapshot in *before. */
static tkv_cache *saved_file_and_target(uint32_t type, const char *path, uint32_t n_saved, uint32_t n_kept,
                                        uint32_t seed, struct snapshot **before)
{
    tkv_cache *src = make_cache(type, type, 1);
    fill_tokens(src, 0, n_saved, seed);
    assert_int_equal(tkv_cache_save(src, path), TKV_OK);
    tkv_cache_destroy(src);
    tkv_cache *c = make_cache(type, type, 1);
    fill_tokens(c, 0, n_kept, seed + 1);
    *before = malloc(sizeof **before);
    assert_non_null(*before);
    snap(c, *before);
    return c;
}

static void bad_files_refused_cache_kept(void **state)
{
    (void)state;
    char good[512], bad[512];
    path_in(good, sizeof good, "good.tkv");
    path_in(bad, sizeof bad, "bad.tkv");
    struct snapshot *before;
    tkv_cache *c = saved_file_and_target(TKV_TYPE_TURBO3, good, 6, 4, 31, &before);
    long size = file_size(good);
    uint32_t v3 = 3, seq_other = 99, t_f16 = TKV_TYPE_F16;
    uint64_t seed = 12345;
    unsigned char flip = 0x5a;

    patch(good, bad, 0, NULL, 0, size - 10);
    expect_error(tkv_cache_restore(c, bad), TKV_EFORMAT, "truncated");
    patch(good, bad, 0, NULL, 0, 30);
    expect_error(tkv_cache_restore(c, bad), TKV_EFORMAT, "truncated");
    patch(good, bad, 0, "NOTACACH", 8, -1);
    expect_error(tkv_cache_restore(c, bad), TKV_EFORMAT, "bad magic");
    patch(good, bad, 8, &v3, 4, -1);
    expect_error(tkv_cache_restore(c, bad), TKV_EFORMAT, "format version 3");
    patch(good, bad, size / 2, &flip, 1, -1);
    expect_error(tkv_cache_restore(c, bad), TKV_EFORMAT, "checksum mismatch");
    patch(good, bad, 48, &seed, 8, -1);
    reseal(bad);
    expect_error(tkv_cache_restore(c, bad), TKV_EFORMAT, "rotation seed");
    patch(good, bad, 56, &seed, 8, -1);
    reseal(bad);
    expect_error(tkv_cache_restore(c, bad), TKV_EFORMAT, "codebook tables");
    patch(good, bad, 64, &t_f16, 4, -1); /* layer 0 keys f16: sizes no longer match */
    reseal(bad);
    expect_error(tkv_cache_restore(c, bad), TKV_EFORMAT, "header describes");
    patch(good, bad, 20, &seq_other, 4, -1); /* 99 kv heads */
    reseal(bad);
    expect_error(tkv_cache_restore(c, bad), TKV_EFORMAT, "header describes");
    expect_error(tkv_cache_restore(c, "/nonexistent/x.tkv"), TKV_ENOTFOUND, "cannot open");
    assert_unchanged(c, before);

    /* a well-formed file of another scheme is refused, naming the layer */
    tkv_cache *other = make_cache(TKV_TYPE_Q8_0, TKV_TYPE_TURBO3, 1);
    fill_tokens(other, 0, 2, 33);
    assert_int_equal(tkv_cache_save(other, bad), TKV_OK);
    expect_error(tkv_cache_restore(c, bad), TKV_EFORMAT, "layer 0 holds K q8_0");
    tkv_cache_destroy(other);
    assert_unchanged(c, before);

    /* and a good one replaces the contents */
    assert_int_equal(tkv_cache_restore(c, good), TKV_OK);
    uint32_t len;
    assert_int_equal(tkv_cache_length(c, 0, 1, &len), TKV_OK);
    assert_int_equal(len, 6);
    free(before);
    tkv_cache_destroy(c);
}

/* Outlier-split rows index the queries and accumulators with their stored
 * outlier indices: a file whose checksum was recomputed over rows with an
 * index past head_dim, or out of order, is refused (EFORMAT naming the
 * index) by load and restore, and the cache restored into is kept. */
static void crafted_outlier_indices_refused(void **state)
{
    (void)state;
    char good[512], bad[512];
    path_in(good, sizeof good, "split.tkv");
    path_in(bad, sizeof bad, "split-bad.tkv");
    struct snapshot *before;
    tkv_cache *c = saved_file_and_target(TKV_TYPE_TURBO3_OUT, good, 5, 3, 51, &before);
    /* the file's last row (the last layer's values, last head, last token)
     * ends before the 8-byte checksum: n_o = DIM / 32 one-byte indices, then
     * n_o fp16 values */
    const long size = file_size(good), n_o = DIM / 32, last_index = size - 8 - 2 * n_o - 1;
    unsigned char past = DIM + 10, first;
    FILE *f = fopen(good, "rb");
    assert_non_null(f);
    assert_int_equal(fseek(f, last_index - (n_o - 1), SEEK_SET), 0);
    assert_int_equal(fread(&first, 1, 1, f), 1);
    fclose(f);
    patch(good, bad, last_index, &past, 1, -1);
    reseal(bad);
    tkv_cache *loaded = NULL;
    expect_error(tkv_cache_load(ctx, bad, &loaded), TKV_EFORMAT, "outlier index 74");
    assert_null(loaded);
    expect_error(tkv_cache_restore(c, bad), TKV_EFORMAT, "outlier index 74");
    patch(good, bad, last_index, &first, 1, -1); /* the last index equal to the first: not ascending */
    reseal(bad);
    expect_error(tkv_cache_restore(c, bad), TKV_EFORMAT, "not a row turbokv wrote");
    assert_unchanged(c, before);
    assert_int_equal(tkv_cache_load(ctx, good, &loaded), TKV_OK); /* the file as saved loads */
    tkv_cache_destroy(loaded);
    free(before);
    tkv_cache_destroy(c);
}

static void failed_save_keeps_old_file(void **state)
{
    (void)state;
    char path[512], dir[512];
    path_in(path, sizeof path, "keep.tkv");
    tkv_cache *c = make_cache(TKV_TYPE_TURBO4, TKV_TYPE_TURBO4, 1);
    fill_tokens(c, 0, 3, 41);
    assert_int_equal(tkv_cache_save(c, path), TKV_OK);
    long size = file_size(path);
    /* a directory in the way: refused before anything is written */
    path_in(dir, sizeof dir, "dir.tkv");
    assert_int_equal(mkdir(dir, 0700), 0);
    expect_error(tkv_cache_save(c, dir), TKV_EINVAL, "not a regular file");
    expect_error(tkv_cache_save(c, "/nonexistent/dir/x.tkv"), TKV_EIO, "cannot save");
    assert_int_equal(file_size(path), size);
    rmdir(dir);
    tkv_cache_destroy(c);
}

static int setup(void **state)
{
    (void)state;
    struct tkv_context_options o = { .struct_size = sizeof o, .ignore_env = 1,
                                     .plugin_path = getenv("TURBO_PLUGIN_PATH"), .backend = getenv("TKV_TEST_BACKEND") };
    if (!mkdtemp(tmpdir))
        return -1;
    return tkv_context_open(&o, &ctx) == TKV_OK ? 0 : -1;
}

static int teardown(void **state)
{
    (void)state;
    char cmd[600];
    tkv_context_close(ctx);
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmpdir);
    return system(cmd) == 0 ? 0 : -1;
}

/* Values the format cannot hold are counted for the host: NaN/Inf (stored
 * as 0) and rows whose fp16 scale saturates (stored clamped). */
static void nonfinite_and_saturation_counted(void **state)
{
    (void)state;
    static const struct {
        uint32_t type;
        float big;       /* a value that saturates this type's scale in one row */
        float harmless;  /* the largest-looking value that does not */
    } cases[] = {
        { TKV_TYPE_TURBO3, 1e4f, 1000.0f },   /* 64 values of 1e4: group norm 8e4 > 65504 */
        { TKV_TYPE_Q8_0, 1e7f, 8e6f },        /* max|x| / 127 > 65504 from 8.32e6 */
        { TKV_TYPE_F16, 7e4f, 6.5e4f },
        { TKV_TYPE_F32, 3e38f, 3e38f },       /* f32 holds every finite float */
        { TKV_TYPE_TURBO3_OUT, 1e4f, 1000.0f }, /* the rest of the group: norm 7.9e4 */
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        tkv_cache *c = make_cache(cases[i].type, cases[i].type, 1);
        float k[3 * ROW], v[3 * ROW];
        fill(k, 3 * ROW, 5);
        fill(v, 3 * ROW, 6);
        for (int j = 0; j < DIM; j++) {
            k[j] = cases[i].big;                     /* token 0, head 0: saturates */
            v[ROW + DIM + j] = cases[i].harmless;    /* token 1, head 1: does not */
        }
        k[2 * ROW + 3] = NAN; /* token 2: two non-finite values */
        v[2 * ROW + 5] = -INFINITY;
        struct tkv_cache_stats st = { .struct_size = sizeof st };
        assert_int_equal(tkv_cache_append(c, 0, 0, 3, k, v), TKV_OK);
        assert_int_equal(tkv_cache_stats(c, &st), TKV_OK);
        assert_int_equal(st.nonfinite_values, 2);
        if (st.saturated_rows != (cases[i].type == TKV_TYPE_F32 ? 0u : 1u))
            fail_msg("%s: %llu saturated rows", tkv_type_name(cases[i].type), (unsigned long long)st.saturated_rows);
        assert_int_equal(tkv_cache_append(c, 0, 1, 3, k, v), TKV_OK); /* counts add up over layers */
        assert_int_equal(tkv_cache_stats(c, &st), TKV_OK);
        assert_int_equal(st.nonfinite_values, 4);
        st.struct_size = 4;
        expect_error(tkv_cache_stats(c, &st), TKV_EINVAL, "struct_size");
        tkv_cache_destroy(c);
    }
    /* two values of 5e4 in a row: a turbo3 group's norm (7.1e4) saturates, turbo3o stores them as outliers */
    for (uint32_t t = TKV_TYPE_TURBO3; t <= TKV_TYPE_TURBO3_OUT; t += TKV_TYPE_TURBO3_OUT - TKV_TYPE_TURBO3) {
        tkv_cache *c = make_cache(t, t, 1);
        float k[ROW] = { 0 }, v[ROW] = { 0 };
        k[1] = 5e4f;
        k[DIM - 2] = -5e4f;
        struct tkv_cache_stats st = { .struct_size = sizeof st };
        assert_int_equal(tkv_cache_append(c, 0, 0, 1, k, v), TKV_OK);
        assert_int_equal(tkv_cache_stats(c, &st), TKV_OK);
        assert_int_equal(st.saturated_rows, t == TKV_TYPE_TURBO3 ? 1u : 0u);
        tkv_cache_destroy(c);
    }
}

/* Save never replaces what is not a regular file, keeps an existing file's
 * mode and gives a new one 0666 less the umask. */
static void save_target_rules(void **state)
{
    (void)state;
    tkv_cache *c = make_cache(TKV_TYPE_TURBO3, TKV_TYPE_TURBO3, 1);
    fill_tokens(c, 0, 4, 3);
    char file[600], link[600];
    snprintf(file, sizeof file, "%s/mode.tkv", tmpdir);
    snprintf(link, sizeof link, "%s/link.tkv", tmpdir);
    expect_error(tkv_cache_save(c, "/dev/null"), TKV_EINVAL, "not a regular file");
    expect_error(tkv_cache_save(c, tmpdir), TKV_EINVAL, "not a regular file");
    assert_int_equal(tkv_cache_save(c, file), TKV_OK);
    assert_int_equal(symlink(file, link), 0);
    expect_error(tkv_cache_save(c, link), TKV_EINVAL, "symbolic link");
    expect_error(tkv_seq_save(c, 0, link), TKV_EINVAL, "symbolic link");
    struct stat st;
    assert_int_equal(lstat(link, &st), 0);
    assert_true(S_ISLNK(st.st_mode)); /* still the link */
    assert_int_equal(chmod(file, 0640), 0);
    assert_int_equal(tkv_cache_save(c, file), TKV_OK);
    assert_int_equal(stat(file, &st), 0);
    assert_int_equal(st.st_mode & 07777, 0640);
    unlink(file);
    mode_t old = umask(027);
    assert_int_equal(tkv_cache_save(c, file), TKV_OK);
    umask(old);
    assert_int_equal(stat(file, &st), 0);
    assert_int_equal(st.st_mode & 07777, 0640);
    unlink(file);
    unlink(link);
    tkv_cache_destroy(c);
}

/* ---- typed tensors (0.4): f16 / bf16 inputs and outputs ---- */

static uint16_t f16_bits(float f) { return tkv_fp16_from_float(f); }

static float bf16_value(uint16_t b)
{
    union { uint32_t u; float f; } v = { (uint32_t)b << 16 };
    return v.f;
}

/* The nearest bf16 of a finite f, ties to even, chosen by comparing the two
 * candidates' values (not by the bit trick the core uses). */
static uint16_t bf16_nearest(float f)
{
    union { float f; uint32_t u; } v = { f };
    uint16_t lo = (uint16_t)(v.u >> 16), hi = (uint16_t)(lo + 1);
    double dlo = fabs((double)f - bf16_value(lo)), dhi = fabs((double)f - bf16_value(hi));
    if (dlo < dhi)
        return lo;
    if (dhi < dlo)
        return hi;
    return (lo & 1) ? hi : lo;
}

static struct tkv_tensor tensor(uint32_t elem, const void *data)
{
    return (struct tkv_tensor){ .struct_size = sizeof(struct tkv_tensor), .elem = elem, .data = (void *)data };
}

/* Appending f16/bf16 stores what appending their exact f32 values stores;
 * attention with f16/bf16 q gives the f32 result on the widened q, and an
 * f16/bf16 out is that result rounded to nearest even (Inf past 65504). */
static void typed_tensors_match_f32(void **state)
{
    (void)state;
    enum { N = 6, Q = 2 * HEADS }; /* GQA 2 */
    static const uint32_t types[][2] = { { TKV_TYPE_F32, TKV_TYPE_F32 }, { TKV_TYPE_TURBO3, TKV_TYPE_Q8_0 } };
    float raw[2][N * ROW], wide[2][N * ROW];
    uint16_t h[2][N * ROW];
    fill(raw[0], N * ROW, 11);
    fill(raw[1], N * ROW, 12);
    raw[0][3] = 3.0e-6f;  /* an f16 subnormal */
    for (int elem = TKV_ELEM_F16; elem <= TKV_ELEM_BF16; elem++)
        for (size_t ti = 0; ti < sizeof types / sizeof types[0]; ti++) {
            /* coordinate 5 of kv head 0 in every V row: past f16's range
             * with bf16 inputs, so that those outputs overflow an f16 out */
            for (size_t t = 0; t < N; t++)
                raw[1][t * ROW + 5] = elem == TKV_ELEM_BF16 ? 1.0e+5f : 6.0e+4f;
            for (int w = 0; w < 2; w++)
                for (size_t i = 0; i < N * ROW; i++) {
                    h[w][i] = elem == TKV_ELEM_F16 ? f16_bits(raw[w][i]) : bf16_nearest(raw[w][i]);
                    wide[w][i] = elem == TKV_ELEM_F16 ? tkv_fp16_to_float(h[w][i]) : bf16_value(h[w][i]);
                }
            tkv_cache *ref = make_cache(types[ti][0], types[ti][1], 1);
            tkv_cache *typed = make_cache(types[ti][0], types[ti][1], 1);
            struct tkv_tensor k = tensor(elem, h[0]), v = tensor(elem, h[1]);
            for (uint32_t l = 0; l < LAYERS; l++) {
                assert_int_equal(tkv_cache_append(ref, 0, l, N, wide[0], wide[1]), TKV_OK);
                assert_int_equal(tkv_cache_append_tensors(typed, 0, l, N, &k, &v), TKV_OK);
            }
            struct snapshot *a = malloc(sizeof *a), *b = malloc(sizeof *b);
            snap(ref, a);
            snap(typed, b);
            assert_memory_equal(a, b, sizeof *a);
            if (types[ti][0] == TKV_TYPE_F32) /* f32 rows hold the widened values exactly */
                assert_memory_equal(a->kv[0][0], wide[0], sizeof(float) * N * ROW);
            free(a);
            free(b);

            float qraw[2 * Q * DIM], qwide[2 * Q * DIM], out_ref[2 * Q * DIM], out_f32[2 * Q * DIM];
            uint16_t qh[2 * Q * DIM], out_h[2 * Q * DIM];
            fill(qraw, 2 * Q * DIM, 13);
            for (size_t i = 0; i < 2 * Q * DIM; i++) {
                qh[i] = elem == TKV_ELEM_F16 ? f16_bits(qraw[i]) : bf16_nearest(qraw[i]);
                qwide[i] = elem == TKV_ELEM_F16 ? tkv_fp16_to_float(qh[i]) : bf16_value(qh[i]);
            }
            const uint32_t seq = 0, nq = 2;
            assert_int_equal(tkv_attention_ex(ref, 1, 1, &seq, &nq, Q, qwide, out_ref, NULL), TKV_OK);
            struct tkv_tensor q = tensor(elem, qh), out = tensor(TKV_ELEM_F32, out_f32);
            assert_int_equal(tkv_attention_tensors(typed, 1, 1, &seq, &nq, Q, &q, &out, NULL), TKV_OK);
            assert_memory_equal(out_ref, out_f32, sizeof out_ref);
            int overflowed = 0;
            for (int oe = TKV_ELEM_F16; oe <= TKV_ELEM_BF16; oe++) {
                struct tkv_tensor o = tensor(oe, out_h);
                assert_int_equal(tkv_attention_tensors(typed, 1, 1, &seq, &nq, Q, &q, &o, NULL), TKV_OK);
                for (size_t i = 0; i < 2 * Q * DIM; i++) {
                    uint16_t want = oe == TKV_ELEM_F16 ? f16_bits(out_ref[i]) : bf16_nearest(out_ref[i]);
                    if (out_h[i] != want)
                        fail_msg("elem %d, types %zu, out elem %d: value %zu is 0x%04x, want 0x%04x (of %.9g)", elem,
                                 ti, oe, i, out_h[i], want, (double)out_ref[i]);
                    overflowed += oe == TKV_ELEM_F16 && fabsf(out_ref[i]) > 65520.0f && (out_h[i] & 0x7fff) == 0x7c00;
                }
            }
            if (elem == TKV_ELEM_BF16 && types[ti][1] == TKV_TYPE_F32)
                assert_int_equal(overflowed, 2 * 2); /* 2 tokens x 2 query heads of kv head 0 */
            tkv_cache_destroy(ref);
            tkv_cache_destroy(typed);
        }
}

/* A bad tensor is refused with its member named, and changes nothing. */
/* tkv_cache_append_attention is tkv_cache_append_tensors and then
 * tkv_attention_tensors of the new tokens' queries: the same outputs, counts
 * and stored rows (on the cpu plugin the core makes the two calls;
 * test_host_opencl holds the OpenCL plugin's one launch to the same). A
 * call that fails after it took a block for its tokens gives the block back
 * and keeps the length. */
static void append_attention_is_both_calls(void **state)
{
    (void)state;
    enum { N = 2, Q = 2 * HEADS, BT = 4 };
    struct tkv_cache_params p = {
        .struct_size = sizeof p, .n_layers = LAYERS, .n_kv_heads = HEADS, .head_dim = DIM, .capacity = CAP,
        .k_type = TKV_TYPE_TURBO3, .v_type = TKV_TYPE_TURBO4, .block_tokens = BT,
    };
    tkv_cache *a = NULL, *b = NULL;
    assert_int_equal(tkv_cache_create(ctx, &p, &a), TKV_OK);
    assert_int_equal(tkv_cache_create(ctx, &p, &b), TKV_OK);
    fill_tokens(a, 0, 5, 21);
    fill_tokens(b, 0, 5, 21);
    float k[N * ROW], v[N * ROW], q[N * Q * DIM], oa[N * Q * DIM], ob[N * Q * DIM];
    uint16_t qh[N * Q * DIM];
    uint32_t seq = 0;
    for (uint32_t step = 0; step < 3; step++)
        for (uint32_t l = 0; l < LAYERS; l++) {
            uint32_t n = step == 1 ? 2u : 1u; /* 5 + 1 + 2 + 1 tokens: the last step opens a block */
            fill(k, N * ROW, 30 + step * 4 + l);
            fill(v, N * ROW, 31 + step * 4 + l);
            fill(q, N * Q * DIM, 32 + step * 4 + l);
            /* what the format cannot hold, counted as the two calls count it */
            k[3] = NAN;
            v[DIM + 5] = step ? 1e6f : INFINITY;
            for (size_t i = 0; i < N * Q * DIM; i++)
                qh[i] = f16_bits(q[i]);
            /* f32 q in the first step, f16 after */
            struct tkv_tensor tk = tensor(TKV_ELEM_F32, k), tv = tensor(TKV_ELEM_F32, v);
            struct tkv_tensor tq = step ? tensor(TKV_ELEM_F16, qh) : tensor(TKV_ELEM_F32, q);
            struct tkv_tensor toa = tensor(TKV_ELEM_F32, oa), tob = tensor(TKV_ELEM_F32, ob);
            struct tkv_attention_stats sa = { 0 }, sb = { 0 };
            struct tkv_attention_options xa = { .struct_size = sizeof xa, .stats = &sa };
            struct tkv_attention_options xb = { .struct_size = sizeof xb, .stats = &sb };
            memset(oa, 0, sizeof oa);
            memset(ob, 0xff, sizeof ob);
            assert_int_equal(tkv_cache_append_attention(a, seq, l, n, &tk, &tv, Q, &tq, &toa, &xa), TKV_OK);
            assert_int_equal(tkv_cache_append_tensors(b, seq, l, n, &tk, &tv), TKV_OK);
            assert_int_equal(tkv_attention_tensors(b, l, 1, &seq, &n, Q, &tq, &tob, &xb), TKV_OK);
            assert_memory_equal(oa, ob, sizeof(float) * n * Q * DIM);
            assert_int_equal(sa.rows_total, sb.rows_total);
            assert_int_equal(sa.rows_skipped, sb.rows_skipped);
        }
    struct snapshot *sa = malloc(sizeof *sa), *sb = malloc(sizeof *sb);
    snap(a, sa);
    snap(b, sb);
    assert_int_equal(sa->len[0], 9);
    assert_memory_equal(sa, sb, sizeof *sa);
    struct tkv_cache_stats ca = { .struct_size = sizeof ca }, cb = { .struct_size = sizeof cb };
    assert_int_equal(tkv_cache_stats(a, &ca), TKV_OK);
    assert_int_equal(tkv_cache_stats(b, &cb), TKV_OK);
    assert_true(ca.nonfinite_values > 0 && ca.saturated_rows > 0);
    assert_int_equal(ca.nonfinite_values, cb.nonfinite_values);
    assert_int_equal(ca.saturated_rows, cb.saturated_rows);

    /* 12 tokens fill three blocks of 4: a thirteenth needs a fourth block.
     * And a copy that shares a partly filled block: a token appended to it
     * copies that block first (copy-on-write). Refused arguments do
     * neither. */
    fill_tokens(a, 0, 3, 40);
    snap(a, sa);
    tkv_cache *s = NULL;
    struct tkv_cache_params ps = p;
    ps.n_seqs = 2;
    assert_int_equal(tkv_cache_create(ctx, &ps, &s), TKV_OK);
    fill_tokens(s, 0, 6, 41);
    assert_int_equal(tkv_seq_copy(s, 0, 1, 6), TKV_OK);
    struct tkv_cache_bytes before, after, s_before, s_after;
    assert_int_equal(tkv_cache_bytes(a, &before), TKV_OK);
    assert_int_equal(tkv_cache_bytes(s, &s_before), TKV_OK);
    struct tkv_tensor tk = tensor(TKV_ELEM_F32, k), tv = tensor(TKV_ELEM_F32, v);
    struct tkv_tensor tq = tensor(TKV_ELEM_F32, q), to = tensor(TKV_ELEM_F32, oa);
    struct tkv_tensor none = tensor(TKV_ELEM_F32, NULL);
    struct tkv_attention_options old = { .struct_size = 4 };
    expect_error(tkv_cache_append_attention(a, 0, 0, 1, &tk, &tv, Q, &tq, &to, &old), TKV_EINVAL,
                 "struct_size 4 too small");
    expect_error(tkv_cache_append_attention(a, 0, 0, 1, &tk, &tv, 3, &tq, &to, NULL), TKV_EINVAL,
                 "multiple of n_kv_heads");
    expect_error(tkv_cache_append_attention(a, 0, 0, 1, &tk, &tv, Q, &none, &to, NULL), TKV_EINVAL,
                 "q->data is NULL");
    expect_error(tkv_cache_append_attention(a, 0, 0, CAP, &tk, &tv, Q, &tq, &to, NULL), TKV_ERANGE,
                 "capacity exceeded");
    expect_error(tkv_cache_append_attention(a, 0, LAYERS, 1, &tk, &tv, Q, &tq, &to, NULL), TKV_ERANGE,
                 "layer 2 out of range");
    /* out sharing bytes with k, v or q: out on k; f16 out whose first
     * element is the last two bytes of v's row (out still inside v); f16
     * out whose last element is the first two bytes of q, q being the
     * second half of its array (both inside it) */
    struct tkv_tensor on_k = tensor(TKV_ELEM_F32, k), on_v = tensor(TKV_ELEM_F16, (uint16_t *)(v + ROW) - 1);
    struct tkv_tensor q_half = tensor(TKV_ELEM_F32, q + Q * DIM);
    struct tkv_tensor on_q = tensor(TKV_ELEM_F16, (uint16_t *)(q + Q * DIM) + 1 - Q * DIM);
    expect_error(tkv_cache_append_attention(a, 0, 0, 1, &tk, &tv, Q, &tq, &on_k, NULL), TKV_EINVAL,
                 "out overlaps k");
    expect_error(tkv_cache_append_attention(a, 0, 0, 1, &tk, &tv, Q, &tq, &on_v, NULL), TKV_EINVAL,
                 "out overlaps v");
    expect_error(tkv_cache_append_attention(a, 0, 0, 1, &tk, &tv, Q, &q_half, &on_q, NULL), TKV_EINVAL,
                 "out overlaps q");
    struct tkv_attention_options bad_scale = { .struct_size = sizeof bad_scale, .scale = INFINITY };
    struct tkv_attention_options bad_cap = { .struct_size = sizeof bad_cap, .softcap = -1.0f };
    expect_error(tkv_cache_append_attention(s, 1, 0, 1, &tk, &tv, Q, &tq, &to, &old), TKV_EINVAL,
                 "struct_size 4 too small");
    expect_error(tkv_cache_append_attention(s, 1, 0, 1, &tk, &tv, Q, &tq, &to, &bad_scale), TKV_EINVAL,
                 "scale inf is not finite");
    expect_error(tkv_cache_append_attention(s, 0, 1, 1, &tk, &tv, Q, &tq, &to, &bad_cap), TKV_EINVAL,
                 "softcap -1 must be finite");
    assert_int_equal(tkv_cache_bytes(a, &after), TKV_OK);
    assert_memory_equal(&after, &before, sizeof after);
    assert_int_equal(tkv_cache_bytes(s, &s_after), TKV_OK);
    assert_memory_equal(&s_after, &s_before, sizeof s_after);
    tkv_cache_destroy(s);
    assert_unchanged(a, sa);
    free(sa);
    free(sb);
    tkv_cache_destroy(a);
    tkv_cache_destroy(b);
}

static void bad_tensors_refused(void **state)
{
    (void)state;
    tkv_cache *c = make_cache(TKV_TYPE_TURBO3, TKV_TYPE_TURBO3, 1);
    fill_tokens(c, 0, 3, 5);
    struct snapshot *before = malloc(sizeof *before);
    snap(c, before);
    uint16_t data[2 * ROW] = { 0 };
    struct tkv_tensor good = tensor(TKV_ELEM_F16, data), bad;
    expect_error(tkv_cache_append_tensors(c, 0, 0, 2, NULL, &good), TKV_EINVAL, "k is NULL");
    bad = good;
    bad.elem = 7;
    expect_error(tkv_cache_append_tensors(c, 0, 0, 2, &good, &bad), TKV_EINVAL, "v->elem 7");
    bad = good;
    bad.memory = 9;
    expect_error(tkv_cache_append_tensors(c, 0, 0, 2, &bad, &good), TKV_EINVAL, "k->memory 9");
    /* device memory: only on a context opened on the host's device (0.5) */
    bad.memory = TKV_MEMORY_OPENCL;
    bad.data = NULL;
    bad.handle = 1;
    expect_error(tkv_cache_append_tensors(c, 0, 0, 2, &bad, &good), TKV_EUNSUPPORTED,
                 "k is an OpenCL buffer, but the context was not opened on the host's device");
    bad = good;
    bad.reserved = 3;
    expect_error(tkv_cache_append_tensors(c, 0, 0, 2, &bad, &good), TKV_EINVAL, "k->reserved");
    bad = good;
    bad.struct_size = 8;
    expect_error(tkv_cache_append_tensors(c, 0, 0, 2, &good, &bad), TKV_EINVAL, "v->struct_size 8");
    bad = good;
    bad.data = NULL;
    expect_error(tkv_cache_append_tensors(c, 0, 0, 2, &good, &bad), TKV_EINVAL, "v->data is NULL");
    expect_error(tkv_cache_append_tensors(c, 0, 0, CAP, &good, &good), TKV_ERANGE, "capacity exceeded");
    assert_unchanged(c, before);
    const uint32_t seq = 0, nq = 1;
    uint16_t out[2 * ROW];
    struct tkv_tensor o = tensor(TKV_ELEM_BF16, out);
    bad = good;
    bad.elem = 9;
    expect_error(tkv_attention_tensors(c, 0, 1, &seq, &nq, HEADS, &bad, &o, NULL), TKV_EINVAL, "q->elem 9");
    expect_error(tkv_attention_tensors(c, 0, 1, &seq, &nq, HEADS, &good, NULL, NULL), TKV_EINVAL, "out is NULL");
    expect_error(tkv_attention_tensors(c, 0, 1, &seq, &nq, 3, &good, &o, NULL), TKV_EINVAL, "n_q_heads 3");
    const uint32_t many = 4;
    expect_error(tkv_attention_tensors(c, 0, 1, &seq, &many, HEADS, &good, &o, NULL), TKV_ERANGE, "fewer than n_q");
    assert_unchanged(c, before);
    free(before);
    tkv_cache_destroy(c);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(create_rejects_bad_params),
        cmocka_unit_test(failed_calls_change_nothing),
        cmocka_unit_test(nonfinite_rows_stay_local),
        cmocka_unit_test(bytes_accounting),
        cmocka_unit_test(save_load_round_trip),
        cmocka_unit_test(bad_files_refused_cache_kept),
        cmocka_unit_test(crafted_outlier_indices_refused),
        cmocka_unit_test(failed_save_keeps_old_file),
        cmocka_unit_test(save_target_rules),
        cmocka_unit_test(nonfinite_and_saturation_counted),
        cmocka_unit_test(typed_tensors_match_f32),
        cmocka_unit_test(bad_tensors_refused),
        cmocka_unit_test(append_attention_is_both_calls),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
