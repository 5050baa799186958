/* SPDX-License-Identifier: MIT */
/*
 * The Vulkan plugin's ops called directly, without the core: the module is
 * dlopen'ed, given a minimal services table and the core's tables, and
 *   - device_caps describes what the shaders run, and refuses a device
 *     that does not exist;
 *   - TURBO_VK_DENORM picks the quantize and rows shaders' SPIR-V with or
 *     without DenormPreserve 32 as documented (auto: where the device
 *     reports shaderDenormPreserveFloat32), the device's driver line and
 *     the open log say which, and any other value fails open;
 *   - rows appended into a paged pool (block_tokens 1 .. 256, blocks in
 *     scrambled order, several appends) are byte for byte the rows of a
 *     contiguous pool, no other row is touched, and they dequantize alike
 *     (f32 exactly to its input);
 *   - buffer_copy copies between buffers and inside one; a copy is only
 *     queued, yet reads its source as it was when asked, survives the
 *     source's buffer_free and is seen by the next op on the device;
 *   - attention over several sequences (mixed n_q, GQA, window, softcap,
 *     scale, lse, block sizes that do and do not divide the shader's row
 *     batches) agrees with float64 attention over the dequantized rows,
 *     counts the visible rows, and gives the same floats paged as
 *     contiguous; also with many chunks a (unit, kv head), which
 *     decode.comp merges a group of chunks at a time.
 * The cross-backend contract (bytes equal to the cpu plugin's) is
 * tests/test_backends.c, through the host API.
 *
 * Usage: test_vulkan_ops PATH/turbokv-vulkan.so [PATTERN] (PATTERN: cmocka's
 * filter of test names, "test_attention*"; TKV_TEST_SKIP: a pattern of tests
 * to leave out). Without a usable Vulkan
 * device the test is skipped (exit 77), except under CI=true.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <dlfcn.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "occupancy.h"
#include "tables.h"
#include "turbokv_plugin.h"

static const struct tkv_plugin *P;
static void *dev;
static char last_error[1024];

static char opened_line[1024]; /* the plugin's last "vulkan: opened ..." log line */

static void svc_log(int level, const char *fmt, ...)
{
    (void)level;
    char line[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(line, sizeof line, fmt, ap);
    va_end(ap);
    if (!strncmp(line, "vulkan: opened", 14))
        snprintf(opened_line, sizeof opened_line, "%s", line);
}

static int svc_error(int status, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(last_error, sizeof last_error, fmt, ap);
    va_end(ap);
    return status;
}

static const struct tkv_services services = {
    sizeof services, TKV_ABI_MAJOR, TKV_ABI_MINOR, svc_log, svc_error,
};

#define CALL(x)                                                                                                    \
    do {                                                                                                           \
        int rc_ = (x);                                                                                             \
        if (rc_ != TKV_OK)                                                                                         \
            fail_msg("%s returned %d: %s", #x, rc_, last_error);                                                  \
    } while (0)

static uint32_t rng_state;

static uint32_t rnd(void)
{
    rng_state = rng_state * 1664525u + 1013904223u;
    return rng_state >> 8;
}

static float gauss(void)
{
    float u1 = (rnd() + 1) / 16777217.0f, u2 = rnd() / 16777216.0f;
    return sqrtf(-2.0f * logf(u1)) * cosf(6.2831853f * u2);
}

/* Rows shaped like real caches; with special, a zero row, NaN, Inf and
 * values beyond the fp16 range. */
static void fill(float *x, size_t n, int special)
{
    for (size_t i = 0; i < n; i++)
        x[i] = gauss() * ((i % 17) == 3 ? 10.0f : 1.0f);
    if (special && n > 600) {
        x[5] = NAN;
        x[77] = INFINITY;
        x[300] = 1e6f;
        x[301] = -7e4f;
        memset(x + 128, 0, 128 * sizeof *x);
    }
}

static void *xmalloc(size_t n)
{
    void *p = malloc(n ? n : 1);
    assert_non_null(p);
    return p;
}

/* A pool of n_blocks blocks of bt tokens of n_heads heads, strides as the
 * core sets them. */
static struct tkv_pool pool_new(struct tkv_row_format fmt, uint32_t n_heads, uint32_t bt, uint32_t n_blocks)
{
    struct tkv_pool p = { .fmt = fmt, .row_bytes = tkv_row_bytes(fmt.type, fmt.head_dim), .block_tokens = bt };
    p.head_stride = (uint64_t)bt * p.row_bytes;
    p.block_stride = n_heads * p.head_stride;
    CALL(P->buffer_alloc(dev, p.block_stride * n_blocks, &p.buf));
    return p;
}

/* blocks[i] = a permutation of 0 .. n - 1 */
static void scramble(uint32_t *blocks, uint32_t n)
{
    for (uint32_t i = 0; i < n; i++)
        blocks[i] = i;
    for (uint32_t i = n; i > 1; i--) {
        uint32_t j = rnd() % i, t = blocks[i - 1];
        blocks[i - 1] = blocks[j];
        blocks[j] = t;
    }
}

static uint64_t append(const struct tkv_pool *p, const uint32_t *blocks, uint32_t n_blocks, uint32_t first,
                       uint32_t n, uint32_t n_heads, const float *src)
{
    uint64_t nonfinite = ~0ull;
    struct tkv_append_args a = {
        .struct_size = sizeof a, .n_tokens = n, .n_heads = n_heads, .first_pos = first, .pool = *p,
        .blocks = blocks, .n_blocks = n_blocks, .src = src, .n_nonfinite = &nonfinite,
    };
    CALL(P->quantize_append(dev, &a));
    return nonfinite;
}

static void dequantize(const struct tkv_pool *p, const uint32_t *blocks, uint32_t n_blocks, uint32_t first,
                       uint32_t n, uint32_t n_heads, float *dst)
{
    struct tkv_dequant_args a = {
        .struct_size = sizeof a, .n_tokens = n, .n_heads = n_heads, .first_pos = first, .pool = *p,
        .blocks = blocks, .n_blocks = n_blocks, .dst = dst,
    };
    CALL(P->dequantize(dev, &a));
}

/* ---- setup ------------------------------------------------------------------ */

static const char *plugin_path;

static int setup(void **state)
{
    (void)state;
    struct tkv_open_params op = {
        .struct_size = sizeof op, .device_index = 0, .math = tkv_tables_get(TKV_ROTATION_SEED_DEFAULT),
    };
    assert_non_null(op.math);
    return P->open(&op, &dev) == TKV_OK ? 0 : -1;
}

static int teardown(void **state)
{
    (void)state;
    P->close(dev);
    return 0;
}

/* ---- capabilities ------------------------------------------------------------ */

static void test_device_caps(void **state)
{
    (void)state;
    struct tkv_device_caps caps;
    memset(&caps, 0xab, sizeof caps);
    caps.struct_size = sizeof caps;
    CALL(P->device_caps(0, &caps));
    assert_int_equal(caps.struct_size, sizeof caps);
    /* a device of its own: it can open on the host's device, but takes no
     * device tensors itself */
    const uint32_t features = TKV_CAP_PAGED | TKV_CAP_MIXED_NQ | TKV_CAP_WINDOW | TKV_CAP_SOFTCAP | TKV_CAP_LSE |
                              TKV_CAP_BUFFER_COPY | TKV_CAP_HOST_DEVICE | TKV_CAP_OUTLIER_TYPES;
    assert_int_equal(caps.features, features);
    assert_int_equal(caps.k_types, (1u << (TKV_TYPE_TURBO4_OUT + 1)) - 1); /* the outlier-split types too */
    assert_int_equal(caps.v_types, caps.k_types & ~(1u << TKV_TYPE_TURBO3_QJL | 1u << TKV_TYPE_TURBO4_QJL));
    assert_int_equal(caps.rotations, 1u << TKV_ROTATION_WHT | 1u << TKV_ROTATION_DENSE | 1u << TKV_ROTATION_NONE);
    assert_int_equal(caps.scale_modes, 1u << TKV_SCALE_NORM | 1u << TKV_SCALE_NORM_CORRECTED);
    assert_int_equal(caps.head_dim_max, TKV_HEAD_DIM_MAX);
    assert_int_equal(caps.max_block_tokens, 0);
    assert_int_equal(caps.max_q_per_seq, 0);
    assert_true(caps.max_buffer_bytes > 0 && caps.max_buffer_bytes < UINT64_MAX / 2);
    for (size_t i = 0; i < sizeof caps.reserved2 / sizeof caps.reserved2[0]; i++)
        assert_int_equal(caps.reserved2[i], 0);

    /* a shorter struct (an older core) gets only what it covers */
    struct tkv_device_caps short_caps;
    memset(&short_caps, 0xab, sizeof short_caps);
    short_caps.struct_size = offsetof(struct tkv_device_caps, head_dim_max);
    CALL(P->device_caps(0, &short_caps));
    assert_int_equal(short_caps.features, features);
    assert_int_equal(short_caps.head_dim_max, 0xabababab);

    uint32_t n = 0;
    struct tkv_device_info info[8];
    CALL(P->probe(info, 8, &n));
    assert_int_equal(P->device_caps(n, &caps), TKV_ERANGE);
    assert_non_null(strstr(last_error, "does not exist"));
}

/* ---- fp32 subnormals: TURBO_VK_DENORM ------------------------------------------ */

/* With TURBO_VK_DENORM = setting (NULL: unset), probe's driver line of
 * device 0 and the log of opening it say "DenormPreserve 32" where preserve
 * is 1, "no DenormPreserve" where it is 0, and where it is -1 (auto) the
 * one that follows from whether the line says the device reports
 * shaderDenormPreserveFloat32. */
static void check_denorm(const char *setting, int preserve)
{
    const char *shown = setting && *setting ? setting : "auto";
    if (setting)
        setenv("TURBO_VK_DENORM", setting, 1);
    else
        unsetenv("TURBO_VK_DENORM");
    struct tkv_device_info info[8];
    uint32_t n = 0;
    CALL(P->probe(info, 8, &n));
    const int reported = strstr(info[0].driver, ", reported)") != NULL;
    if (!reported && !strstr(info[0].driver, ", not reported)"))
        fail_msg("TURBO_VK_DENORM=%s: driver line '%s' does not say whether shaderDenormPreserveFloat32 is reported",
                 shown, info[0].driver);
    if (preserve < 0)
        preserve = reported;
    char phrase[128];
    snprintf(phrase, sizeof phrase, "; %s (TURBO_VK_DENORM=%s, %s)",
             preserve ? "DenormPreserve 32" : "no DenormPreserve", shown, reported ? "reported" : "not reported");
    if (!strstr(info[0].driver, phrase))
        fail_msg("TURBO_VK_DENORM=%s: driver line '%s', want '%s'", shown, info[0].driver, phrase);
    struct tkv_open_params op = {
        .struct_size = sizeof op, .device_index = 0, .math = tkv_tables_get(TKV_ROTATION_SEED_DEFAULT),
    };
    void *d = NULL;
    opened_line[0] = 0;
    CALL(P->open(&op, &d));
    P->close(d);
    if (!strstr(opened_line, phrase))
        fail_msg("TURBO_VK_DENORM=%s: open logged '%s', want '%s'", shown, opened_line, phrase);
}

/* decode.comp's workgroups an SM holds (occupancy.h), at the H200's
 * figures: 166 registers -> 168 a thread, 12 warps of 5,376: 3 workgroups
 * of 4 warps; 96 -> 5; 255 -> 2; few registers -> the warp limit. */
static void test_resident_workgroups(void **state)
{
    (void)state;
    assert_int_equal(vk_resident_workgroups(166, 128, 64), 3);
    assert_int_equal(vk_resident_workgroups(168, 128, 64), 3);
    assert_int_equal(vk_resident_workgroups(169, 128, 64), 2);
    assert_int_equal(vk_resident_workgroups(96, 128, 64), 5);
    assert_int_equal(vk_resident_workgroups(255, 128, 64), 2);
    assert_int_equal(vk_resident_workgroups(32, 128, 64), 16);
    assert_int_equal(vk_resident_workgroups(32, 128, 48), 12);
    assert_int_equal(vk_resident_workgroups(32, 128, 0), 16);
    assert_int_equal(vk_resident_workgroups(128, 256, 64), 2);
    assert_int_equal(vk_resident_workgroups(0, 128, 64), 0);
    assert_int_equal(vk_resident_workgroups(166, 0, 64), 0);
}

static void test_denorm_setting(void **state)
{
    (void)state;
    const char *before = getenv("TURBO_VK_DENORM");
    char *saved = before ? strdup(before) : NULL;
    check_denorm("preserve", 1);
    check_denorm("off", 0);
    check_denorm("auto", -1);
    check_denorm("", -1);
    check_denorm(NULL, -1);
    /* any other value: probe says so, open fails */
    setenv("TURBO_VK_DENORM", "Preserve", 1);
    struct tkv_device_info info[8];
    uint32_t n = 0;
    CALL(P->probe(info, 8, &n));
    assert_non_null(strstr(info[0].driver, "TURBO_VK_DENORM=Preserve is not auto, preserve or off"));
    struct tkv_open_params op = {
        .struct_size = sizeof op, .device_index = 0, .math = tkv_tables_get(TKV_ROTATION_SEED_DEFAULT),
    };
    void *d = NULL;
    last_error[0] = 0;
    assert_int_equal(P->open(&op, &d), TKV_ECONFIG);
    assert_null(d);
    assert_non_null(strstr(last_error, "TURBO_VK_DENORM=Preserve: expected auto, preserve or off"));
    if (saved)
        setenv("TURBO_VK_DENORM", saved, 1);
    else
        unsetenv("TURBO_VK_DENORM");
    free(saved);
}

/* ---- stored rows ------------------------------------------------------------- */

/* TKV_TEST_SMALL=1 (scripts/sanitize: ASan makes lavapipe's every
 * dispatch slow): fewer rows in test_paged_rows (80 instead of 203, still
 * past the appends' cuts at 70 and 71, and more than one block of 64) and
 * the long contexts of test_attention shortened (beyond 1200 rows by
 * 8x); every type, block size, case and option still runs, and gcov
 * finds the same lines of the plugin's host code run at either size. */
static int small_sizes(void)
{
    const char *s = getenv("TKV_TEST_SMALL");
    return s && strcmp(s, "1") == 0;
}

/* One format, one block size: the rows of N tokens x H heads appended in
 * pieces into a contiguous pool and into a scrambled paged one. */
static void check_paged_rows(uint32_t type, uint32_t hd, uint32_t rotation, uint32_t scale_mode, uint32_t bt)
{
    const uint32_t H = 3, N = small_sizes() ? 80 : 203, nb = (N + bt - 1) / bt, pool_blocks = nb + 3;
    const struct tkv_row_format fmt = { type, hd, rotation, scale_mode };
    const size_t n_floats = (size_t)N * H * hd;
    float *x = xmalloc(n_floats * sizeof *x), *d1 = xmalloc(n_floats * sizeof *d1), *d2 = xmalloc(n_floats * sizeof *d2);
    uint32_t zero = 0, *blocks = xmalloc(pool_blocks * sizeof *blocks);
    fill(x, n_floats, 1);
    scramble(blocks, pool_blocks);
    struct tkv_pool c = pool_new(fmt, H, 256, 1), pg = pool_new(fmt, H, bt, pool_blocks);

    /* a pattern everywhere first: what the appends must not touch keeps it */
    const uint64_t pool_bytes = pg.block_stride * pool_blocks;
    uint8_t *pattern = xmalloc(pool_bytes), *after = xmalloc(pool_bytes);
    for (uint64_t i = 0; i < pool_bytes; i++)
        pattern[i] = (uint8_t)(i * 131 + 7);
    CALL(P->buffer_write(dev, pg.buf, 0, pattern, pool_bytes));

    const uint32_t cuts[] = { 0, 1, 8, 70, 71, N };
    uint64_t nonfinite_c = 0, nonfinite_p = 0;
    for (int i = 0; i + 1 < 6; i++) {
        const float *src = x + (size_t)cuts[i] * H * hd;
        nonfinite_c += append(&c, &zero, 1, cuts[i], cuts[i + 1] - cuts[i], H, src);
        nonfinite_p += append(&pg, blocks, nb, cuts[i], cuts[i + 1] - cuts[i], H, src);
    }
    assert_int_equal(nonfinite_c, 2);
    assert_int_equal(nonfinite_p, 2);

    const uint32_t rb = c.row_bytes;
    uint8_t *row = xmalloc(rb);
    CALL(P->buffer_read(dev, pg.buf, 0, after, pool_bytes));
    for (uint32_t t = 0; t < N; t++)
        for (uint32_t h = 0; h < H; h++) {
            CALL(P->buffer_read(dev, c.buf, tkv_pool_row_offset(&c, &zero, h, t), row, rb));
            uint64_t at = tkv_pool_row_offset(&pg, blocks, h, t);
            if (memcmp(row, after + at, rb) != 0)
                fail_msg("type %u head_dim %u block_tokens %u: token %u head %u stored differently paged", type,
                         hd, bt, t, h);
            memcpy(after + at, pattern + at, rb); /* accounted for */
        }
    for (uint64_t i = 0; i < pool_bytes; i++)
        if (after[i] != pattern[i])
            fail_msg("type %u block_tokens %u: byte %llu of the pool, in no appended row, changed", type, bt,
                     (unsigned long long)i);

    dequantize(&c, &zero, 1, 0, N, H, d1);
    dequantize(&pg, blocks, nb, 0, N, H, d2);
    assert_memory_equal(d1, d2, n_floats * sizeof *d1);
    dequantize(&pg, blocks, nb, 69, 5, H, d2); /* a range inside, across a block boundary for small blocks */
    assert_memory_equal(d1 + (size_t)69 * H * hd, d2, (size_t)5 * H * hd * sizeof *d2);
    if (type == TKV_TYPE_F32)
        for (size_t i = 0; i < n_floats; i++)
            assert_true(d1[i] == (isfinite(x[i]) ? x[i] : 0.0f));
    P->buffer_free(dev, c.buf);
    P->buffer_free(dev, pg.buf);
    free(x), free(d1), free(d2), free(blocks), free(pattern), free(after), free(row);
}

static void test_paged_rows(void **state)
{
    (void)state;
    rng_state = 1;
    const uint32_t block_tokens[] = { 1, 5, 16, 64, 256 };
    for (uint32_t type = 0; type <= TKV_TYPE_TURBO4_OUT; type++)
        for (size_t b = 0; b < sizeof block_tokens / sizeof *block_tokens; b++)
            check_paged_rows(type, 128, TKV_ROTATION_WHT, TKV_SCALE_NORM_CORRECTED, block_tokens[b]);
    /* head_dims of several groups, the other rotations and scale mode */
    check_paged_rows(TKV_TYPE_TURBO3, 96, TKV_ROTATION_DENSE, TKV_SCALE_NORM, 7);
    check_paged_rows(TKV_TYPE_TURBO4_QJL, 200, TKV_ROTATION_WHT, TKV_SCALE_NORM, 3);
    check_paged_rows(TKV_TYPE_Q8_0, 40, TKV_ROTATION_NONE, TKV_SCALE_NORM, 2);
    check_paged_rows(TKV_TYPE_TURBO2, 1024, TKV_ROTATION_WHT, TKV_SCALE_NORM, 13);
    check_paged_rows(TKV_TYPE_TURBO4_OUT, 576, TKV_ROTATION_DENSE, TKV_SCALE_NORM, 7); /* two-byte indices */
}

static void test_buffer_copy(void **state)
{
    (void)state;
    uint8_t src[1000], later[1000], got[1000];
    void *a, *b, *c;
    for (size_t i = 0; i < sizeof src; i++) {
        src[i] = (uint8_t)(i * 37 + 11);
        later[i] = (uint8_t)(i * 91 + 5);
    }
    CALL(P->buffer_alloc(dev, 5000, &a));
    CALL(P->buffer_alloc(dev, 3000, &b));
    CALL(P->buffer_alloc(dev, 3000, &c));
    CALL(P->buffer_write(dev, a, 17, src, sizeof src));
    CALL(P->buffer_copy(dev, b, 1999, a, 17, sizeof src));
    /* the copy reads a as it was when asked, not what the host writes next */
    CALL(P->buffer_write(dev, a, 17, later, sizeof later));
    CALL(P->buffer_read(dev, b, 1999, got, sizeof got));
    assert_memory_equal(src, got, sizeof src);
    CALL(P->buffer_copy(dev, a, 3001, a, 17, sizeof later)); /* inside one buffer */
    CALL(P->buffer_read(dev, a, 3001, got, sizeof got));
    assert_memory_equal(later, got, sizeof later);
    /* a pool that grows: copy old to new, free old, read new */
    CALL(P->buffer_copy(dev, c, 0, a, 3001, sizeof later));
    P->buffer_free(dev, a);
    CALL(P->buffer_read(dev, c, 0, got, sizeof got));
    assert_memory_equal(later, got, sizeof later);
    struct tkv_device_stats st = { .struct_size = sizeof st };
    CALL(P->stats(dev, &st));
    assert_int_equal(st.n_buffers, 2);
    assert_int_equal(st.bytes_allocated, 6000);
    P->buffer_free(dev, b);
    P->buffer_free(dev, c);

    /* a copied pool read by the next op on the device, with no host access
     * in between (copy-on-write, then the append and attention that follow) */
    rng_state = 3;
    const uint32_t H = 2, N = 40, hd = 64;
    const struct tkv_row_format fmt = { TKV_TYPE_TURBO3, hd, TKV_ROTATION_WHT, TKV_SCALE_NORM_CORRECTED };
    const struct tkv_pool from = pool_new(fmt, H, 16, 3), to = pool_new(fmt, H, 16, 3);
    const uint32_t blocks[3] = { 2, 0, 1 };
    float *x = xmalloc(sizeof(float) * N * H * hd), *d1 = xmalloc(sizeof(float) * N * H * hd),
          *d2 = xmalloc(sizeof(float) * N * H * hd);
    fill(x, (size_t)N * H * hd, 0);
    append(&from, blocks, 3, 0, N, H, x);
    dequantize(&from, blocks, 3, 0, N, H, d1);
    CALL(P->buffer_copy(dev, to.buf, 0, from.buf, 0, 3 * from.block_stride));
    dequantize(&to, blocks, 3, 0, N, H, d2);
    assert_memory_equal(d1, d2, sizeof(float) * N * H * hd);
    P->buffer_free(dev, from.buf);
    P->buffer_free(dev, to.buf);
    free(x), free(d1), free(d2);
}

/* ---- attention ----------------------------------------------------------------- */

struct attn_case {
    uint32_t k_type, v_type, head_dim, n_kv, ratio, block_tokens, window;
    float softcap, scale_mul;
    uint32_t n_seqs, n_ctx[4], n_q[4];
    /* values with one fixed channel in 32 ten times larger: every row's
     * outliers of outlier-split values at the same coordinates */
    int fixed_channels;
};

/* Attention over the case's sequences, paged (scrambled blocks) and
 * contiguous, against float64 over the dequantized rows. */
static void check_attention(const struct attn_case *tc)
{
    const uint32_t hd = tc->head_dim, H = tc->n_kv, QH = H * tc->ratio, bt = tc->block_tokens;
    const struct tkv_row_format kf = { tc->k_type, hd, TKV_ROTATION_WHT, TKV_SCALE_NORM_CORRECTED },
                                vf = { tc->v_type, hd, TKV_ROTATION_WHT, TKV_SCALE_NORM_CORRECTED };
    uint32_t n_blocks = 0, n_q_total = 0, max_ctx = 0, max_q = 0;
    for (uint32_t s = 0; s < tc->n_seqs; s++) {
        n_blocks += (tc->n_ctx[s] + bt - 1) / bt;
        n_q_total += tc->n_q[s];
        max_ctx = tc->n_ctx[s] > max_ctx ? tc->n_ctx[s] : max_ctx;
        max_q = tc->n_q[s] > max_q ? tc->n_q[s] : max_q;
    }
    const struct tkv_pool K = pool_new(kf, H, bt, n_blocks + 2), V = pool_new(vf, H, bt, n_blocks + 2);
    const struct tkv_pool Kc = pool_new(kf, H, max_ctx, tc->n_seqs), Vc = pool_new(vf, H, max_ctx, tc->n_seqs);
    uint32_t *blocks = xmalloc((n_blocks + 2) * sizeof *blocks), contiguous[4];
    scramble(blocks, n_blocks + 2);
    struct tkv_attn_seq seqs[4], cseqs[4];
    float *kd[4], *vd[4];
    for (uint32_t s = 0, block_first = 0, q_first = 0; s < tc->n_seqs; s++) {
        const uint32_t n = tc->n_ctx[s], nb = (n + bt - 1) / bt;
        const size_t size = (size_t)n * H * hd;
        kd[s] = xmalloc(size * sizeof(float));
        vd[s] = xmalloc(size * sizeof(float));
        fill(kd[s], size, 0);
        fill(vd[s], size, 0);
        for (size_t i = 0; i < size; i++)
            kd[s][i] += 0.5f * (float)((i % hd) % 5); /* a bias, so that scores spread */
        if (tc->fixed_channels)
            for (size_t i = 0; i < size; i++)
                vd[s][i] *= (i % hd) % 32 == 5 ? 10.0f : 1.0f;
        contiguous[s] = s;
        append(&K, blocks + block_first, nb, 0, n, H, kd[s]);
        append(&V, blocks + block_first, nb, 0, n, H, vd[s]);
        append(&Kc, contiguous + s, 1, 0, n, H, kd[s]);
        append(&Vc, contiguous + s, 1, 0, n, H, vd[s]);
        dequantize(&K, blocks + block_first, nb, 0, n, H, kd[s]); /* what attention reads */
        dequantize(&V, blocks + block_first, nb, 0, n, H, vd[s]);
        seqs[s] = (struct tkv_attn_seq){ .n_ctx = n, .n_q = tc->n_q[s], .q_first = q_first, .block_first = block_first };
        cseqs[s] = (struct tkv_attn_seq){ .n_ctx = n, .n_q = tc->n_q[s], .q_first = q_first, .block_first = s };
        block_first += nb;
        q_first += tc->n_q[s];
    }
    const size_t q_floats = (size_t)n_q_total * QH * hd;
    float *q = xmalloc(q_floats * sizeof *q), *out = xmalloc(q_floats * sizeof *out),
          *out_c = xmalloc(q_floats * sizeof *out_c), *lse = xmalloc((size_t)n_q_total * QH * sizeof *lse);
    fill(q, q_floats, 0);
    const float scale = tc->scale_mul / sqrtf((float)hd);
    uint64_t rows_total = 0, rows_skipped = ~0ull;
    struct tkv_attention_args a = {
        .struct_size = sizeof a, .n_seqs = tc->n_seqs, .seq_size = sizeof(struct tkv_attn_seq),
        .n_q_total = n_q_total, .n_q_heads = QH, .n_kv_heads = H, .max_n_ctx = max_ctx, .max_n_q = max_q, .k = K,
        .v = V, .blocks = blocks, .n_blocks = n_blocks, .window = tc->window, .seqs = seqs, .q = q, .out = out,
        .lse = lse, .scale = scale, .softcap = tc->softcap, .rows_total = &rows_total, .rows_skipped = &rows_skipped,
    };
    CALL(P->attention(dev, &a));
    struct tkv_attention_args ac = a;
    ac.k = Kc, ac.v = Vc, ac.blocks = contiguous, ac.n_blocks = tc->n_seqs, ac.seqs = cseqs, ac.out = out_c;
    ac.lse = NULL, ac.rows_total = NULL, ac.rows_skipped = NULL;
    CALL(P->attention(dev, &ac));
    assert_memory_equal(out, out_c, q_floats * sizeof *out);

    double *x = xmalloc(max_ctx * sizeof *x), *o = xmalloc(hd * sizeof *o), worst = 0, worst_lse = 0;
    uint64_t visible = 0;
    for (uint32_t s = 0; s < tc->n_seqs; s++)
        for (uint32_t i = 0; i < tc->n_q[s]; i++) {
            const uint32_t p = tc->n_ctx[s] - tc->n_q[s] + i, lo = tc->window && p + 1 > tc->window ? p + 1 - tc->window : 0;
            for (uint32_t hq = 0; hq < QH; hq++) {
                const size_t r = (size_t)(seqs[s].q_first + i) * QH + hq;
                const uint32_t kv = hq / tc->ratio;
                double m = -INFINITY, l = 0, mag = 0, err = 0;
                for (uint32_t j = lo; j <= p; j++) {
                    const float *k = kd[s] + ((size_t)j * H + kv) * hd;
                    double d = 0;
                    for (uint32_t e = 0; e < hd; e++)
                        d += (double)q[r * hd + e] * k[e];
                    d *= scale;
                    x[j] = tc->softcap > 0 ? tc->softcap * tanh(d / tc->softcap) : d;
                    m = x[j] > m ? x[j] : m;
                }
                memset(o, 0, hd * sizeof *o);
                for (uint32_t j = lo; j <= p; j++) {
                    const double w = exp(x[j] - m);
                    const float *v = vd[s] + ((size_t)j * H + kv) * hd;
                    l += w;
                    for (uint32_t e = 0; e < hd; e++)
                        o[e] += w * v[e];
                }
                for (uint32_t e = 0; e < hd; e++)
                    mag = fmax(mag, fabs(o[e] / l));
                for (uint32_t e = 0; e < hd; e++)
                    err = fmax(err, fabs(out[r * hd + e] - o[e] / l));
                worst = fmax(worst, err / fmax(mag, 1e-6));
                worst_lse = fmax(worst_lse, fabs(lse[r] - (m + log(l))) / (1 + fabs(m + log(l))));
                visible += p + 1 - lo;
            }
        }
    print_message("attention %u/%u hd %u, %u kv x %u, block %u, window %u, softcap %g: relative error %.3g, lse %.3g\n",
                  tc->k_type, tc->v_type, hd, H, tc->ratio, bt, tc->window, (double)tc->softcap, worst, worst_lse);
    assert_true(worst < 2e-4);
    assert_true(worst_lse < 1e-5);
    assert_int_equal(rows_total, visible);
    assert_int_equal(rows_skipped, 0);
    for (uint32_t s = 0; s < tc->n_seqs; s++)
        free(kd[s]), free(vd[s]);
    free(x), free(o), free(q), free(out), free(out_c), free(lse), free(blocks);
    P->buffer_free(dev, K.buf), P->buffer_free(dev, V.buf), P->buffer_free(dev, Kc.buf), P->buffer_free(dev, Vc.buf);
}

static void test_attention(void **state)
{
    (void)state;
    rng_state = 2;
    static const struct attn_case cases[] = {
        /* k, v, head_dim, n_kv, ratio, block_tokens, window, softcap, scale x, n_seqs, n_ctx, n_q */
        { TKV_TYPE_TURBO3, TKV_TYPE_TURBO3, 128, 2, 4, 16, 0, 0, 1, 3, { 300, 1, 77 }, { 1, 1, 5 }, 0 },
        { TKV_TYPE_TURBO4_QJL, TKV_TYPE_TURBO2, 128, 2, 2, 5, 37, 0, 1, 2, { 400, 90 }, { 7, 1 }, 0 },
        { TKV_TYPE_F32, TKV_TYPE_F16, 64, 1, 8, 1, 0, 5.0f, 3, 2, { 130, 260 }, { 3, 260 }, 0 },
        { TKV_TYPE_Q8_0, TKV_TYPE_TURBO4, 96, 3, 1, 256, 100, 2.0f, 4, 4, { 1000, 700, 257, 3 }, { 1, 20, 2, 3 }, 0 },
        { TKV_TYPE_TURBO3, TKV_TYPE_TURBO3, 128, 8, 4, 200, 0, 0, 1, 2, { 5000, 4100 }, { 1, 1 }, 0 },
        { TKV_TYPE_F16, TKV_TYPE_F32, 256, 2, 2, 3, 500, 30.0f, 2, 2, { 1500, 600 }, { 4, 1 }, 0 },
        /* outlier-split values (decode.comp: the lanes that own an outlier's
         * coordinate add it, from per-batch row masks): several batches a
         * subgroup, a window that starts inside a batch, and every row's
         * outliers on the same lanes */
        { TKV_TYPE_TURBO3_OUT, TKV_TYPE_TURBO3_OUT, 128, 2, 4, 16, 0, 0, 1, 2, { 3000, 700 }, { 1, 3 }, 0 },
        { TKV_TYPE_TURBO4_OUT, TKV_TYPE_TURBO3_OUT, 64, 2, 4, 32, 1000, 0, 1, 1, { 2500 }, { 2 }, 0 },
        { TKV_TYPE_TURBO3_OUT, TKV_TYPE_TURBO3_OUT, 128, 2, 4, 16, 0, 0, 1, 1, { 3000 }, { 1 }, 1 },
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        struct attn_case c = cases[i];
        for (uint32_t s = 0; s < c.n_seqs && small_sizes(); s++)
            c.n_ctx[s] = c.n_ctx[s] > 1200 ? 1200 + (c.n_ctx[s] - 1200) / 8 : c.n_ctx[s];
        check_attention(&c);
    }
}

/* decode.comp's merge by the last workgroup of a (unit, kv head) reads its
 * chunks' records and partials a group at a time (16 chunks, 8 with
 * outlier-split values), rescaling what it summed when a group raises the
 * max: a device opened with a GPU's target of workgroups and the shortest
 * chunks (TURBO_VK_WORKGROUPS, TURBO_VK_MIN_CHUNK; knobs read at open)
 * gives these contexts 32 and 12 chunks, so more than one group, on any
 * device. (Its pipelines are compiled again for the new device: scripts/
 * sanitize leaves this test out under ASan, where that takes minutes;
 * test_attention runs the same host code.) */
static void test_attention_many_chunks(void **state)
{
    (void)state;
    rng_state = 3;
    static const struct attn_case cases[] = {
        { TKV_TYPE_TURBO3, TKV_TYPE_TURBO3, 128, 2, 4, 16, 0, 0, 1, 1, { 4000 }, { 1 }, 0 },
        { TKV_TYPE_TURBO3_OUT, TKV_TYPE_TURBO3_OUT, 64, 2, 4, 16, 0, 0, 1, 2, { 1500, 900 }, { 1, 2 }, 0 },
    };
    setenv("TURBO_VK_WORKGROUPS", "1024", 1);
    setenv("TURBO_VK_MIN_CHUNK", "1", 1);
    struct tkv_open_params op = {
        .struct_size = sizeof op, .device_index = 0, .math = tkv_tables_get(TKV_ROTATION_SEED_DEFAULT),
    };
    void *own = dev, *d = NULL;
    CALL(P->open(&op, &d));
    unsetenv("TURBO_VK_WORKGROUPS");
    unsetenv("TURBO_VK_MIN_CHUNK");
    dev = d;
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++)
        check_attention(&cases[i]);
    dev = own;
    P->close(d);
}

int main(int argc, char **argv)
{
    plugin_path = argc > 1 ? argv[1] : getenv("TKV_TEST_VULKAN_PLUGIN");
    if (!plugin_path) {
        fprintf(stderr, "usage: test_vulkan_ops PATH/turbokv-vulkan.so\n");
        return 2;
    }
    void *module = dlopen(plugin_path, RTLD_NOW | RTLD_LOCAL);
    if (!module) {
        fprintf(stderr, "test_vulkan_ops: %s\n", dlerror());
        return 1;
    }
    tkv_plugin_entry_fn entry = (tkv_plugin_entry_fn)dlsym(module, TKV_PLUGIN_ENTRY_NAME);
    if (!entry || !(P = entry(TKV_ABI_MAJOR, TKV_ABI_MINOR)) || P->init(&services) != TKV_OK) {
        fprintf(stderr, "test_vulkan_ops: %s does not load as an ABI %u plugin\n", plugin_path, TKV_ABI_MAJOR);
        return 1;
    }
    struct tkv_device_info info[8];
    uint32_t n = 0;
    if (P->probe(info, 8, &n) != TKV_OK || n == 0) {
        const char *ci = getenv("CI");
        fprintf(stderr, "test_vulkan_ops: no usable Vulkan device%s\n", last_error[0] ? last_error : "");
        return ci && !strcmp(ci, "true") ? 1 : 77;
    }
    if (argc > 2)
        cmocka_set_test_filter(argv[2]);
    /* TKV_TEST_SKIP: cmocka's pattern of tests to leave out (scripts/sanitize) */
    if (getenv("TKV_TEST_SKIP") && *getenv("TKV_TEST_SKIP"))
        cmocka_set_skip_filter(getenv("TKV_TEST_SKIP"));
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_device_caps),
        cmocka_unit_test(test_denorm_setting),
        cmocka_unit_test(test_resident_workgroups),
        cmocka_unit_test(test_paged_rows),
        cmocka_unit_test(test_buffer_copy),
        cmocka_unit_test(test_attention),
        cmocka_unit_test(test_attention_many_chunks),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
