/* SPDX-License-Identifier: MIT */
/*
 * The CPU plugin's ops called directly, without the core: the module is
 * dlopen'ed, given a minimal services table and the core's tables, and its
 * results are checked against independent float64 models of
 * turbokv_format.h and of struct tkv_attention_args.
 *
 * Usage: test_cpu_ops PATH/turbokv-cpu.so [PATTERNS]   (or TKV_TEST_CPU_PLUGIN=PATH)
 * PATTERNS, comma-separated shell patterns, runs only the tests whose names
 * match one of them ("test_paged*,test_isa_*"); TKV_TEST_EXCLUDE, patterns
 * the same way, leaves out the tests whose names match one of them
 * (scripts/sanitize: the tests whose calls others make again, under ASan).
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <dlfcn.h>
#include <float.h>
#include <fnmatch.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tables.h"
#include "turbokv_plugin.h"

#define N_TYPES TKV_TYPE_COUNT
static const char *const type_name[N_TYPES] = { "f32",    "f16",    "q8_0",
                                                "turbo2", "turbo3", "turbo4",
                                                "turbo3_qjl", "turbo4_qjl",
                                                "turbo3o", "turbo4o" };

/* ---- the module under test ------------------------------------------------ */

static struct {
    const char *path;
    void *module;
    tkv_plugin_entry_fn entry;
    const struct tkv_plugin *p;
    void *dev;
    const struct tkv_math *math;
} env;

static char last_error[1024];

static void svc_log(int level, const char *fmt, ...)
{
    (void)level;
    (void)fmt;
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
    .struct_size = sizeof services,
    .core_abi_major = TKV_ABI_MAJOR,
    .core_abi_minor = TKV_ABI_MINOR,
    .log = svc_log,
    .error = svc_error,
};

static int setup(void **state)
{
    (void)state;
    struct tkv_open_params params = { .struct_size = sizeof params };
    void *sym;
    env.module = dlopen(env.path, RTLD_NOW | RTLD_LOCAL);
    if (!env.module) {
        print_error("cannot load %s: %s\n", env.path, dlerror());
        return -1;
    }
    sym = dlsym(env.module, TKV_PLUGIN_ENTRY_NAME);
    if (!sym) {
        print_error("%s has no %s\n", env.path, TKV_PLUGIN_ENTRY_NAME);
        return -1;
    }
    memcpy(&env.entry, &sym, sizeof env.entry);
    env.p = env.entry(TKV_ABI_MAJOR, TKV_ABI_MINOR);
    env.math = tkv_tables_get(TKV_ROTATION_SEED_DEFAULT);
    params.math = env.math;
    if (!env.p || !env.math || env.p->init(&services) != TKV_OK ||
        env.p->open(&params, &env.dev) != TKV_OK) {
        print_error("cannot start the plugin: %s\n", last_error);
        return -1;
    }
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    env.p->close(env.dev);
    if (env.p->shutdown)
        env.p->shutdown();
    dlclose(env.module);
    return 0;
}

/* ---- helpers --------------------------------------------------------------- */

static uint64_t rng_state = 0x5eed5eed5eed5eedull;

static uint64_t rng_u64(void)
{
    uint64_t z = (rng_state += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

static double rng_uniform(void) { return ((double)(rng_u64() >> 11) + 0.5) * 0x1p-53; }

static double rng_gauss(void)
{
    return sqrt(-2.0 * log(rng_uniform())) * cos(6.283185307179586 * rng_uniform());
}

static void fill_gauss(float *x, size_t n, double scale)
{
    for (size_t i = 0; i < n; i++)
        x[i] = (float)(scale * rng_gauss());
}

static void *xcalloc(size_t n, size_t size)
{
    void *p = calloc(n, size);
    assert_non_null(p);
    return p;
}

static void *buffer_new(uint64_t bytes)
{
    void *b = NULL;
    assert_int_equal(env.p->buffer_alloc(env.dev, bytes, &b), TKV_OK);
    return b;
}

static struct tkv_row_format row_format(uint32_t type, uint32_t head_dim, uint32_t rotation,
                                        uint32_t scale_mode)
{
    return (struct tkv_row_format){ type, head_dim, rotation, scale_mode };
}

/* The rotations and scale modes a stored row can have (0 is "as
 * configured" in the host API, never a row's). */
#define N_ROTATIONS (TKV_ROTATION_COUNT - 1u)
#define N_SCALE_MODES (TKV_SCALE_COUNT - 1u)

/* Variant v < N_ROTATIONS x N_SCALE_MODES of a turbo type's format. */
static struct tkv_row_format variant_format(uint32_t type, uint32_t head_dim, uint32_t v)
{
    return row_format(type, head_dim, 1 + v / N_SCALE_MODES, 1 + v % N_SCALE_MODES);
}

/* A pool of n_blocks blocks of block_tokens rows x n_heads heads, laid out
 * as the core does (head_stride = block_tokens * row_bytes, block_stride =
 * n_heads * head_stride) plus head_pad bytes after each head's rows and
 * block_pad after each block: the plugin must use the strides it is given. */
struct pool {
    struct tkv_pool p;
    uint32_t n_heads, n_blocks;
    uint64_t bytes;
};

static struct pool pool_new(const struct tkv_row_format *fmt, uint32_t n_heads,
                            uint32_t block_tokens, uint32_t n_blocks, uint32_t head_pad,
                            uint32_t block_pad)
{
    struct pool pl = { .n_heads = n_heads, .n_blocks = n_blocks };
    pl.p.fmt = *fmt;
    pl.p.row_bytes = tkv_row_bytes(fmt->type, fmt->head_dim);
    pl.p.block_tokens = block_tokens;
    pl.p.head_stride = (uint64_t)block_tokens * pl.p.row_bytes + head_pad;
    pl.p.block_stride = n_heads * pl.p.head_stride + block_pad;
    pl.bytes = n_blocks * pl.p.block_stride;
    pl.p.buf = buffer_new(pl.bytes);
    return pl;
}

static void pool_free(struct pool *pl)
{
    env.p->buffer_free(env.dev, pl->p.buf);
    pl->p.buf = NULL;
}

/* Tokens first_pos .. first_pos + n_tokens - 1 of the sequence whose block
 * table is blocks, from src [n_tokens][n_heads][head_dim]. */
static int pool_append(const struct pool *pl, const uint32_t *blocks, uint32_t n_blocks,
                       uint32_t first_pos, uint32_t n_tokens, const float *src,
                       uint64_t *nonfinite)
{
    struct tkv_append_args a = {
        .struct_size = sizeof a,
        .n_tokens = n_tokens,
        .n_heads = pl->n_heads,
        .first_pos = first_pos,
        .pool = pl->p,
        .blocks = blocks,
        .n_blocks = n_blocks,
        .src = src,
        .n_nonfinite = nonfinite,
    };
    return env.p->quantize_append(env.dev, &a);
}

static int pool_dequantize(const struct pool *pl, const uint32_t *blocks, uint32_t n_blocks,
                           uint32_t first_pos, uint32_t n_tokens, float *dst)
{
    struct tkv_dequant_args a = {
        .struct_size = sizeof a,
        .n_tokens = n_tokens,
        .n_heads = pl->n_heads,
        .first_pos = first_pos,
        .pool = pl->p,
        .blocks = blocks,
        .n_blocks = n_blocks,
        .dst = dst,
    };
    return env.p->dequantize(env.dev, &a);
}

/* The stored bytes of token t, head h. */
static void pool_row(const struct pool *pl, const uint32_t *blocks, uint32_t h, uint32_t t,
                     uint8_t *out)
{
    assert_int_equal(env.p->buffer_read(env.dev, pl->p.buf, tkv_pool_row_offset(&pl->p, blocks, h, t),
                                        out, pl->p.row_bytes),
                     TKV_OK);
}

/* One sequence of n rows of one head in block 1 of a two-block pool (block
 * 0 unused, so rows start past the buffer's first bytes, at an offset
 * unaligned for vectors: the block stride is padded by 8 bytes). */
static const uint32_t one_block[1] = { 1 };

static struct pool rows_pool(const struct tkv_row_format *fmt, uint32_t n)
{
    return pool_new(fmt, 1, n, 2, 0, 8);
}

static int append(const struct pool *pl, uint32_t n, const float *src, uint64_t *nonfinite)
{
    return pool_append(pl, one_block, 1, 0, n, src, nonfinite);
}

static int dequantize(const struct pool *pl, uint32_t n, float *dst)
{
    return pool_dequantize(pl, one_block, 1, 0, n, dst);
}

/* The n stored rows, one after the other. */
static void read_rows(const struct pool *pl, uint32_t n, uint8_t *out)
{
    assert_int_equal(env.p->buffer_read(env.dev, pl->p.buf, pl->p.block_stride, out,
                                        (uint64_t)n * pl->p.row_bytes),
                     TKV_OK);
}

static uint16_t le16(const uint8_t *p) { return (uint16_t)(p[0] | p[1] << 8); }

/* ---- fp16 and bit packing (turbokv_format.h inlines every backend uses) ---- */

static void test_fp16_exhaustive(void **state)
{
    (void)state;
    for (uint32_t h = 0; h < 0x10000u; h++) {
        float f = tkv_fp16_to_float((uint16_t)h);
        uint16_t back = tkv_fp16_from_float(f);
        if ((h & 0x7c00u) == 0x7c00u && (h & 0x3ffu)) { /* NaN stays NaN */
            assert_true(isnan(f));
            assert_true((back & 0x7c00u) == 0x7c00u && (back & 0x3ffu));
            continue;
        }
        assert_int_equal(back, h);
        if ((h & 0x7fffu) >= 0x7c00u)
            continue;
        /* The midpoint to the next half up in magnitude rounds to the even
         * one; a hair either side rounds to the nearer. Past 65504 the next
         * step is 65536, whose midpoint 65520 already overflows to Inf. */
        uint16_t up = (uint16_t)(h + 1);
        float next = (up & 0x7fffu) == 0x7c00u ? copysignf(65536.0f, f) : tkv_fp16_to_float(up);
        float mid = 0.5f * (f + next);
        assert_int_equal(tkv_fp16_from_float(mid), (h & 1u) ? up : h);
        assert_int_equal(tkv_fp16_from_float(nextafterf(mid, 0.0f)), h);
        assert_int_equal(tkv_fp16_from_float(nextafterf(mid, copysignf(INFINITY, f))), up);
    }
}

static void test_pack_roundtrip(void **state)
{
    (void)state;
    for (uint32_t bits = TKV_TURBO_BITS_MIN; bits <= TKV_TURBO_BITS_MAX; bits++)
        for (uint32_t g = TKV_GROUP_MIN; g <= TKV_GROUP_MAX; g <<= 1)
            for (int rep = 0; rep < 20; rep++) {
                uint8_t idx[TKV_GROUP_MAX], packed[TKV_GROUP_MAX / 2 + 4];
                uint32_t bytes = g * bits / 8;
                memset(packed, 0xa5, sizeof packed);
                for (uint32_t i = 0; i < g; i++)
                    idx[i] = (uint8_t)(rng_u64() & ((1u << bits) - 1u));
                tkv_pack_indices(packed, idx, g, bits);
                for (uint32_t i = 0; i < g; i++) {
                    assert_int_equal(tkv_unpack_index(packed, i, bits), idx[i]);
                    /* LSB-first bit stream, read bit by bit */
                    uint32_t v = 0;
                    for (uint32_t b = 0; b < bits; b++) {
                        uint32_t bit = i * bits + b;
                        v |= (uint32_t)((packed[bit / 8] >> (bit % 8)) & 1u) << b;
                    }
                    assert_int_equal(v, idx[i]);
                }
                for (uint32_t i = bytes; i < sizeof packed; i++)
                    assert_int_equal(packed[i], 0xa5);
            }
}

/* ---- format conformance of every type -------------------------------------- */

/* up to TKV_HEAD_DIM_MAX, what device_caps claims */
static const uint32_t head_dims[] = { 8, 16, 32, 64, 80, 96, 128, 192, 256, 576, 1024 };
#define N_HEAD_DIMS (sizeof head_dims / sizeof head_dims[0])

/* R of a turbo group in double, independent of the plugin's butterflies:
 * H[i][j] = (-1)^popcount(i & j) (Sylvester), R = D2 H D1 / sqrt(g),
 * R^-1 = D1 H D2 / sqrt(g); dense R = Q. */
static void model_rotate(const struct tkv_group_tables *t, uint32_t rotation, int inverse,
                         double *v)
{
    uint32_t g = t->group;
    double in[TKV_GROUP_MAX];
    memcpy(in, v, sizeof *v * g);
    if (rotation == TKV_ROTATION_ROTOR) { /* block diagonal: 3 x 3 chunks, the last cut to what is left */
        const float *m = env.math->rotor[tkv_group_index(g)];
        for (uint32_t i = 0; i < g; i++) {
            uint32_t c = i / 3, first = 3 * c, n = g - first < 3 ? g - first : 3;
            double sum = 0.0;
            for (uint32_t j = first; j < first + n; j++)
                sum += (double)(inverse ? m[9 * c + (j - first) * 3 + (i - first)]
                                        : m[9 * c + (i - first) * 3 + (j - first)]) * in[j];
            v[i] = n == 1 ? in[i] : sum;
        }
        return;
    }
    for (uint32_t i = 0; i < g; i++) {
        double sum = 0.0;
        for (uint32_t j = 0; j < g; j++) {
            if (rotation == TKV_ROTATION_WHT) {
                const float *pre = inverse ? t->sign2 : t->sign1;
                sum += (__builtin_popcount(i & j) & 1 ? -1.0 : 1.0) * pre[j] * in[j];
            } else if (rotation == TKV_ROTATION_DENSE) {
                sum += (double)(inverse ? t->dense[j * g + i] : t->dense[i * g + j]) * in[j];
            } else {
                sum += (i == j) * in[j];
            }
        }
        if (rotation == TKV_ROTATION_WHT)
            sum *= (inverse ? t->sign1[i] : t->sign2[i]) / sqrt((double)g);
        v[i] = sum;
    }
}

/* One stored turbo row against the model: indices by the boundaries of the
 * exactly rotated input (a mismatch is allowed only within 1e-6 of a
 * boundary, where the fp32 rotation may land on the other side), scale per
 * scale mode and saturated at 65504, dequantized values = R^-1 (s c[idx]).
 * Returns ||x - x_hat||^2 / ||x||^2; counts the indices and near ties. */
static double check_turbo_row(const struct tkv_row_format *fmt, const float *x,
                              const uint8_t *row, const float *deq, uint64_t *values,
                              uint64_t *near_ties)
{
    uint32_t sizes[TKV_MAX_GROUPS], n = tkv_group_split(fmt->head_dim, sizes);
    uint32_t bits = tkv_type_bits(fmt->type), first = 0;
    double err = 0.0, norm = 0.0;
    for (uint32_t k = 0; k < n; k++) {
        const struct tkv_group_tables *t = &env.math->groups[tkv_group_index(sizes[k])];
        const struct tkv_codebook *cb = &t->codebook[bits - TKV_TURBO_BITS_MIN];
        const float *xg = x + first, *dg = deq + first;
        double sq = 0.0, y[TKV_GROUP_MAX], csq = 0.0;
        for (uint32_t i = 0; i < t->group; i++)
            sq += (double)xg[i] * xg[i];
        float nrm = (float)sqrt(sq);
        if (nrm == 0.0f) {
            for (uint32_t i = 0; i < tkv_turbo_group_bytes(t->group, bits); i++)
                assert_int_equal(row[i], 0);
        } else {
            for (uint32_t i = 0; i < t->group; i++)
                y[i] = xg[i] / nrm;
            model_rotate(t, fmt->rotation, 0, y);
            for (uint32_t i = 0; i < t->group; i++) {
                uint32_t expect = 0, got = tkv_unpack_index(row + 2, i, bits);
                for (uint32_t b = 0; b + 1 < cb->n_levels; b++)
                    expect += y[i] >= cb->boundaries[b];
                if (got != expect) {
                    assert_true(got == expect + 1 || expect == got + 1);
                    assert_true(fabs(y[i] - cb->boundaries[got < expect ? got : expect]) < 1e-6);
                    ++*near_ties;
                }
                csq += cb->centroid_sq[got];
            }
            float scale = nrm;
            if (fmt->scale_mode == TKV_SCALE_NORM_CORRECTED)
                scale = (float)(nrm / sqrt(csq));
            assert_int_equal(le16(row), tkv_fp16_from_float(fminf(scale, TKV_FP16_MAX)));
        }
        double s = tkv_fp16_to_float(le16(row));
        for (uint32_t i = 0; i < t->group; i++)
            y[i] = s * cb->centroids[tkv_unpack_index(row + 2, i, bits)];
        model_rotate(t, fmt->rotation, 1, y);
        for (uint32_t i = 0; i < t->group; i++) {
            assert_true(fabs(dg[i] - y[i]) <= 4e-6 * s);
            err += (xg[i] - y[i]) * (xg[i] - y[i]);
            norm += (double)xg[i] * xg[i];
        }
        *values += t->group;
        first += t->group;
        row += tkv_turbo_group_bytes(t->group, bits);
    }
    return norm > 0.0 ? err / norm : 0.0;
}

/* An outlier-split row (turbokv_format.h, "Outlier-split types"), written
 * independently: the n_o largest |x| (lower index first on ties), their
 * index and fp16 bytes, and the turbo row of the rest, whose dequantized
 * values are deq less the stored outliers. Returns the turbo row's error
 * relative to the rest. */
static double check_outlier_row(const struct tkv_row_format *fmt, const float *x, const uint8_t *row,
                                 const float *deq, uint64_t *values, uint64_t *near_ties)
{
    const uint32_t hd = fmt->head_dim, n = (hd + 31) / 32, ib = hd <= 256 ? 1 : 2;
    uint32_t idx[TKV_HEAD_DIM_MAX / 32];
    uint8_t taken[TKV_HEAD_DIM_MAX] = { 0 };
    for (uint32_t o = 0; o < n; o++) { /* the largest not yet taken, the first of equals */
        uint32_t best = 0;
        while (taken[best])
            best++;
        for (uint32_t i = best + 1; i < hd; i++)
            if (!taken[i] && fabsf(x[i]) > fabsf(x[best]))
                best = i;
        taken[best] = 1;
    }
    for (uint32_t i = 0, o = 0; i < hd; i++)
        if (taken[i])
            idx[o++] = i;
    uint32_t turbo_bytes = tkv_row_bytes(fmt->type, hd) - n * (ib + 2);
    float rest[TKV_HEAD_DIM_MAX], rest_deq[TKV_HEAD_DIM_MAX];
    memcpy(rest, x, sizeof *x * hd);
    memcpy(rest_deq, deq, sizeof *deq * hd);
    for (uint32_t o = 0; o < n; o++) {
        const uint8_t *ip = row + turbo_bytes + o * ib, *vp = row + turbo_bytes + n * ib + 2 * o;
        assert_int_equal(ib == 1 ? ip[0] : le16(ip), idx[o]);
        float clamped = fminf(fmaxf(x[idx[o]], -TKV_FP16_MAX), TKV_FP16_MAX);
        assert_int_equal(le16(vp), tkv_fp16_from_float(clamped));
        rest[idx[o]] = 0.0f;
        rest_deq[idx[o]] -= tkv_fp16_to_float(le16(vp));
    }
    return check_turbo_row(fmt, rest, row, rest_deq, values, near_ties);
}

/* q8_0 as turbokv_format.h and llama.cpp define it, written independently. */
static void check_q8_0_row(uint32_t head_dim, const float *x, const uint8_t *row, const float *deq)
{
    for (uint32_t first = 0; first < head_dim; first += TKV_Q8_0_BLOCK) {
        uint32_t n = head_dim - first < TKV_Q8_0_BLOCK ? head_dim - first : TKV_Q8_0_BLOCK;
        const uint8_t *blk = row + first / TKV_Q8_0_BLOCK * (2 + TKV_Q8_0_BLOCK);
        float amax = 0.0f;
        for (uint32_t i = 0; i < n; i++)
            amax = fmaxf(amax, fabsf(x[first + i]));
        float d = amax / 127.0f, id = d >= FLT_MIN ? 1.0f / d : 0.0f;
        assert_int_equal(le16(blk), tkv_fp16_from_float(d));
        float dh = tkv_fp16_to_float(le16(blk));
        for (uint32_t i = 0; i < n; i++) {
            int8_t q = (int8_t)blk[2 + i];
            assert_int_equal(q, (int)roundf(x[first + i] * id));
            assert_true(deq[first + i] == dh * q);
            /* half a step, plus the fp16 rounding of d times |q| <= 127 */
            assert_true(fabsf(deq[first + i] - x[first + i]) <=
                        0.5f * d + 127.0f * fabsf(dh - d) + 1e-6f * fabsf(x[first + i]));
        }
    }
}

/* The optimum relative error of a Gaussian row: the per-group codebook MSE
 * weighted by group size (E ||x_g||^2 is proportional to g). */
static double optimum_row_mse(uint32_t type, uint32_t head_dim)
{
    uint32_t sizes[TKV_MAX_GROUPS], n = tkv_group_split(head_dim, sizes);
    double mse = 0.0;
    for (uint32_t k = 0; k < n; k++) {
        const struct tkv_group_tables *t = &env.math->groups[tkv_group_index(sizes[k])];
        mse += (double)sizes[k] / head_dim * t->codebook[tkv_type_bits(type) - 2].mse;
    }
    return mse;
}

struct conformance {
    uint64_t values, near_ties;
    double worst_ratio; /* mean row error / optimum_row_mse, worst format */
};

/* Stores rows of x in one format (at an offset unaligned for vectors),
 * reads the bytes and the dequantized rows back and checks each row. Row 0
 * is beyond the fp16 range (saturation), row 1 zero. */
static void check_format(const struct tkv_row_format *fmt, const float *x, uint32_t rows,
                         struct conformance *acc)
{
    uint32_t hd = fmt->head_dim, rb = tkv_row_bytes(fmt->type, hd);
    uint8_t *raw = xcalloc((size_t)rows * rb, 1);
    float *deq = xcalloc((size_t)rows * hd, sizeof *deq);
    struct pool pl = rows_pool(fmt, rows);
    uint64_t nonfinite = 99;
    double err = 0.0;
    assert_int_equal(append(&pl, rows, x, &nonfinite), TKV_OK);
    assert_int_equal(nonfinite, 0);
    read_rows(&pl, rows, raw);
    assert_int_equal(dequantize(&pl, rows, deq), TKV_OK);
    for (uint32_t r = 0; r < rows; r++) {
        const float *xr = x + (size_t)r * hd, *dr = deq + (size_t)r * hd;
        const uint8_t *row = raw + (size_t)r * rb;
        switch (fmt->type) {
        case TKV_TYPE_F32:
            assert_memory_equal(row, xr, sizeof *xr * hd); /* little-endian host */
            for (uint32_t i = 0; i < hd; i++)
                assert_true(dr[i] == xr[i]);
            break;
        case TKV_TYPE_F16:
            for (uint32_t i = 0; i < hd; i++) {
                float clamped = fminf(fmaxf(xr[i], -TKV_FP16_MAX), TKV_FP16_MAX);
                assert_int_equal(le16(row + 2 * i), tkv_fp16_from_float(clamped));
                assert_true(dr[i] == tkv_fp16_to_float(tkv_fp16_from_float(clamped)));
            }
            break;
        case TKV_TYPE_Q8_0:
            check_q8_0_row(hd, xr, row, dr);
            break;
        default: {
            double e = tkv_type_is_outlier(fmt->type)
                           ? check_outlier_row(fmt, xr, row, dr, &acc->values, &acc->near_ties)
                           : check_turbo_row(fmt, xr, row, dr, &acc->values, &acc->near_ties);
            if (r > 1)
                err += e;
        }
        }
    }
    if (tkv_type_is_turbo(fmt->type)) {
        double ratio = err / (rows - 2) / optimum_row_mse(fmt->type, hd);
        acc->worst_ratio = fmax(acc->worst_ratio, ratio);
        assert_true(ratio < 1.3);
    }
    pool_free(&pl);
    free(raw);
    free(deq);
}

static void test_format_conformance(void **state)
{
    (void)state;
    enum { ROWS = 64 };
    for (uint32_t type = 0; type < N_TYPES; type++) {
        struct conformance acc = { 0 };
        if (tkv_type_is_qjl(type))
            continue; /* the residual sketch is modeled in test_quality.c */
        uint32_t variants = tkv_type_is_turbo(type) ? N_ROTATIONS * N_SCALE_MODES : 1;
        for (size_t d = 0; d < N_HEAD_DIMS; d++) {
            uint32_t hd = head_dims[d];
            float *x = xcalloc((size_t)ROWS * hd, sizeof *x);
            /* magnitudes from 1e-3 to 1e3 (f16 subnormals included) */
            fill_gauss(x, hd, 1e5);
            for (uint32_t r = 2; r < ROWS; r++)
                fill_gauss(x + (size_t)r * hd, hd, exp(rng_uniform() * 14.0 - 7.0));
            for (uint32_t v = 0; v < variants; v++) {
                struct tkv_row_format fmt =
                    variant_format(type, hd, v);
                check_format(&fmt, x, ROWS, &acc);
            }
            free(x);
        }
        if (tkv_type_is_turbo(type)) {
            print_message("%s, every head_dim, rotation and scale mode: mean row error <= %.2f x "
                          "the codebook optimum; %llu of %llu indices differ from the float64 "
                          "model (each within 1e-6 of a boundary)\n",
                          type_name[type], acc.worst_ratio, (unsigned long long)acc.near_ties,
                          (unsigned long long)acc.values);
            assert_true(acc.near_ties * 1000 < acc.values);
        }
    }
}

/* Random unit vectors, g = 128, WHT, scale = norm: the paper's MSE. */
static void test_mse_unit_vectors(void **state)
{
    (void)state;
    enum { N = 20000, G = 128 };
    static const double optimum[3] = { 0.1160, 0.0340, 0.00931 };
    float *x = xcalloc((size_t)N * G, sizeof *x), *deq = xcalloc((size_t)N * G, sizeof *deq);
    for (uint32_t r = 0; r < N; r++) {
        double v[G], sq = 0.0;
        for (uint32_t i = 0; i < G; i++) {
            v[i] = rng_gauss();
            sq += v[i] * v[i];
        }
        for (uint32_t i = 0; i < G; i++)
            x[(size_t)r * G + i] = (float)(v[i] / sqrt(sq));
    }
    for (uint32_t b = 0; b < 3; b++) {
        struct tkv_row_format fmt =
            row_format(TKV_TYPE_TURBO2 + b, G, TKV_ROTATION_WHT, TKV_SCALE_NORM);
        struct pool pl = rows_pool(&fmt, N);
        assert_int_equal(append(&pl, N, x, NULL), TKV_OK);
        assert_int_equal(dequantize(&pl, N, deq), TKV_OK);
        double sum = 0.0;
        for (size_t i = 0; i < (size_t)N * G; i++)
            sum += ((double)x[i] - deq[i]) * ((double)x[i] - deq[i]);
        double mse = sum / N;
        print_message("turbo%u, %d random unit vectors, g = 128: MSE %.5f vs optimum %.5f "
                      "(%+.2f%%)\n",
                      b + 2, N, mse, optimum[b], 100.0 * (mse / optimum[b] - 1.0));
        assert_true(fabs(mse / optimum[b] - 1.0) < 0.01);
        pool_free(&pl);
    }
    free(x);
    free(deq);
}

/* ---- attention -------------------------------------------------------------- */

enum { K = 0, V = 1 };

/* One side (K or V) of a cache of up to two sequences. */
struct attn_side {
    struct tkv_row_format fmt;
    struct pool pool;
    float *orig[2]; /* per sequence [ctx][n_kv][head_dim], as appended */
    float *deq[2];  /* the same, as stored (read back through dequantize) */
};

/* Bytes of garbage after each element of seqs where a case asks for it:
 * the plugin must step through seqs by seq_size. */
#define SEQ_PAD_MAX 16u

struct attn_case {
    uint32_t head_dim, n_kv, n_qh, n_seqs, n_q[2], ctx[2];
    /* paging: block_tokens rows per block, the blocks of every sequence in a
     * scrambled order among a few spare ones, heads and blocks padded when
     * pad is set; contiguous: one block per sequence of block_tokens (>= the
     * longest ctx; 0: the longest ctx), in order, as a contiguous cache */
    uint32_t block_tokens, contiguous, pad;
    uint32_t window;
    float softcap;
    uint32_t seq_pad;
    const struct attn_case *data_from; /* a built case of the same shape whose rows and
                                          queries to take, or NULL: draw them */
    struct attn_side side[2]; /* [K], [V] */
    uint32_t *blocks, n_blocks, n_pool_blocks, block_first[2];
    unsigned char seq_mem[2 * (sizeof(struct tkv_attn_seq) + SEQ_PAD_MAX)];
    uint32_t n_q_total, q_first[2];
    float *q, *out, *lse; /* [n_q_total][n_qh][head_dim], lse [n_q_total][n_qh] */
};

static uint32_t case_max_ctx(const struct attn_case *c)
{
    return c->n_seqs > 1 && c->ctx[1] > c->ctx[0] ? c->ctx[1] : c->ctx[0];
}

/* The block tables. Paged: a shuffle of the pool's blocks by its own
 * generator, so that the data a case draws does not depend on its paging. */
static void case_blocks(struct attn_case *c)
{
    uint32_t need[2] = { 0, 0 };
    if (c->contiguous && c->block_tokens < case_max_ctx(c))
        c->block_tokens = case_max_ctx(c);
    c->n_blocks = 0;
    for (uint32_t s = 0; s < c->n_seqs; s++) {
        need[s] = (c->ctx[s] + c->block_tokens - 1) / c->block_tokens;
        c->block_first[s] = c->n_blocks;
        c->n_blocks += need[s];
    }
    c->n_pool_blocks = c->contiguous ? c->n_blocks : c->n_blocks + 3;
    uint32_t *perm = xcalloc(c->n_pool_blocks, sizeof *perm);
    for (uint32_t i = 0; i < c->n_pool_blocks; i++)
        perm[i] = i;
    uint64_t state = 0x243f6a8885a308d3ull ^ c->n_pool_blocks;
    for (uint32_t i = c->n_pool_blocks; !c->contiguous && i > 1; i--) {
        state = state * 6364136223846793005ull + 1442695040888963407ull;
        uint32_t j = (uint32_t)((state >> 33) % i), t = perm[i - 1];
        perm[i - 1] = perm[j];
        perm[j] = t;
    }
    c->blocks = xcalloc(c->n_blocks, sizeof *c->blocks);
    memcpy(c->blocks, perm, c->n_blocks * sizeof *c->blocks);
    free(perm);
}

static const uint32_t *case_table(const struct attn_case *c, uint32_t s)
{
    return c->blocks + c->block_first[s];
}

static uint32_t case_table_len(const struct attn_case *c, uint32_t s)
{
    return s + 1 < c->n_seqs ? c->block_first[s + 1] - c->block_first[s]
                             : c->n_blocks - c->block_first[s];
}

/* Reads sequence s of a side back through dequantize. */
static void side_read(const struct attn_case *c, struct attn_side *sd, uint32_t s)
{
    assert_int_equal(pool_dequantize(&sd->pool, case_table(c, s), case_table_len(c, s), 0,
                                     c->ctx[s], sd->deq[s]),
                     TKV_OK);
}

/* Replaces every row of sequence s of a side. */
static void side_store(const struct attn_case *c, struct attn_side *sd, uint32_t s,
                       const float *rows)
{
    size_t n = (size_t)c->ctx[s] * c->n_kv * c->head_dim;
    memcpy(sd->orig[s], rows, sizeof *rows * n);
    assert_int_equal(pool_append(&sd->pool, case_table(c, s), case_table_len(c, s), 0, c->ctx[s],
                                 rows, NULL),
                     TKV_OK);
    side_read(c, sd, s);
}

/* Random rows (or data_from's), appended per sequence as a prompt and then
 * its n_q new tokens (as a decoder does), and read back. */
static void side_build(struct attn_case *c, int side)
{
    struct attn_side *sd = &c->side[side];
    uint32_t hd = c->head_dim;
    sd->pool = pool_new(&sd->fmt, c->n_kv, c->block_tokens, c->n_pool_blocks, c->pad ? 12 : 0,
                        c->pad ? 40 : 0);
    for (uint32_t s = 0; s < c->n_seqs; s++) {
        uint32_t prompt = c->ctx[s] - c->n_q[s];
        size_t n = (size_t)c->ctx[s] * c->n_kv * hd, prompt_values = (size_t)prompt * c->n_kv * hd;
        sd->orig[s] = xcalloc(n, sizeof(float));
        sd->deq[s] = xcalloc(n, sizeof(float));
        if (c->data_from)
            memcpy(sd->orig[s], c->data_from->side[side].orig[s], n * sizeof(float));
        else
            fill_gauss(sd->orig[s], n, 1.0);
        if (prompt)
            assert_int_equal(pool_append(&sd->pool, case_table(c, s), case_table_len(c, s), 0,
                                         prompt, sd->orig[s], NULL),
                             TKV_OK);
        assert_int_equal(pool_append(&sd->pool, case_table(c, s), case_table_len(c, s), prompt,
                                     c->n_q[s], sd->orig[s] + prompt_values, NULL),
                         TKV_OK);
        side_read(c, sd, s);
    }
}

static struct tkv_attn_seq *case_seq(struct attn_case *c, uint32_t s)
{
    return (struct tkv_attn_seq *)(c->seq_mem + s * (sizeof(struct tkv_attn_seq) + c->seq_pad));
}

/* Fills in a case whose shape, formats and options are set: block tables,
 * K, V, queries. */
static void case_build(struct attn_case *c)
{
    assert_true(c->seq_pad <= SEQ_PAD_MAX);
    case_blocks(c);
    side_build(c, K);
    side_build(c, V);
    memset(c->seq_mem, 0xff, sizeof c->seq_mem);
    c->n_q_total = 0;
    for (uint32_t s = 0; s < c->n_seqs; s++) {
        c->q_first[s] = c->n_q_total;
        *case_seq(c, s) = (struct tkv_attn_seq){ .n_ctx = c->ctx[s], .n_q = c->n_q[s],
                                                 .q_first = c->n_q_total,
                                                 .block_first = c->block_first[s] };
        c->n_q_total += c->n_q[s];
    }
    size_t nq = (size_t)c->n_q_total * c->n_qh * c->head_dim;
    c->q = xcalloc(nq, sizeof(float));
    c->out = xcalloc(nq, sizeof(float));
    c->lse = xcalloc((size_t)c->n_q_total * c->n_qh, sizeof(float));
    if (c->data_from)
        memcpy(c->q, c->data_from->q, nq * sizeof(float));
    else
        fill_gauss(c->q, nq, 1.0);
}

static void case_free(struct attn_case *c)
{
    for (int k = K; k <= V; k++) {
        for (uint32_t s = 0; s < c->n_seqs; s++) {
            free(c->side[k].orig[s]);
            free(c->side[k].deq[s]);
        }
        pool_free(&c->side[k].pool);
    }
    free(c->blocks);
    free(c->q);
    free(c->out);
    free(c->lse);
}

static size_t case_values(const struct attn_case *c)
{
    return (size_t)c->n_q_total * c->n_qh * c->head_dim;
}

static int case_run(struct attn_case *c, float scale, float threshold, float *out, float *lse,
                    uint64_t *total, uint64_t *skipped)
{
    struct tkv_attention_args a = {
        .struct_size = sizeof a,
        .n_seqs = c->n_seqs,
        .seq_size = (uint32_t)sizeof(struct tkv_attn_seq) + c->seq_pad,
        .n_q_total = c->n_q_total,
        .n_q_heads = c->n_qh,
        .n_kv_heads = c->n_kv,
        .max_n_ctx = case_max_ctx(c),
        .max_n_q = c->n_seqs > 1 && c->n_q[1] > c->n_q[0] ? c->n_q[1] : c->n_q[0],
        .k = c->side[K].pool.p,
        .v = c->side[V].pool.p,
        .blocks = c->blocks,
        .n_blocks = c->n_blocks,
        .window = c->window,
        .seqs = (const struct tkv_attn_seq *)c->seq_mem,
        .q = c->q,
        .out = out,
        .lse = lse,
        .scale = scale,
        .softcap = c->softcap,
        .sparse_v_threshold = threshold,
        .rows_total = total,
        .rows_skipped = skipped,
    };
    return env.p->attention(env.dev, &a);
}

/* Row j of kv head kv of sequence s, original or dequantized. */
static const float *case_row(const struct attn_case *c, int side, int dequantized, uint32_t s,
                             uint32_t kv, uint32_t j)
{
    const struct attn_side *sd = &c->side[side];
    return (dequantized ? sd->deq[s] : sd->orig[s]) + ((size_t)j * c->n_kv + kv) * c->head_dim;
}

/* The sequence, token and head of output row r. */
static void case_row_at(const struct attn_case *c, size_t r, uint32_t *s, uint32_t *t, uint32_t *h)
{
    uint32_t g = (uint32_t)(r / c->n_qh);
    *h = (uint32_t)(r % c->n_qh);
    *s = c->n_seqs > 1 && g >= c->q_first[1] ? 1 : 0;
    *t = g - c->q_first[*s];
}

/* The rows query token t of sequence s sees, as the header defines them:
 * j <= p = n_ctx - n_q + t, and p - j < window when window > 0. */
static void case_visible(const struct attn_case *c, uint32_t s, uint32_t t, uint32_t *lo,
                         uint32_t *hi)
{
    int64_t p = (int64_t)c->ctx[s] - c->n_q[s] + t;
    *hi = (uint32_t)p + 1;
    *lo = c->window && p - (int64_t)c->window + 1 > 0 ? (uint32_t)(p - c->window + 1) : 0;
}

static uint64_t case_rows_total(const struct attn_case *c)
{
    uint64_t total = 0;
    for (uint32_t s = 0; s < c->n_seqs; s++)
        for (uint32_t t = 0; t < c->n_q[s]; t++) {
            uint32_t lo, hi;
            case_visible(c, s, t, &lo, &hi);
            total += (uint64_t)c->n_qh * (hi - lo);
        }
    return total;
}

/* The float64 model's results, per output row. */
struct attn_ref {
    double *out;  /* [rows][head_dim] */
    double *lse;  /* log sum_j exp(x_j) */
    double *mag;  /* sum_j w_j ||v_j||: the scale of float accumulation error */
    double *tail; /* the same over the rows with exp(x_j - max) < tail_below:
                     what sparse V may leave out */
    size_t rows;
};

/* struct tkv_attention_args semantics in float64 over the original or the
 * dequantized rows: causal, window, scale, softcap, softmax, lse. */
static struct attn_ref case_reference(const struct attn_case *c, int dequantized, float scale,
                                      double tail_below)
{
    uint32_t hd = c->head_dim, ratio = c->n_qh / c->n_kv;
    struct attn_ref ref = { .rows = (size_t)c->n_q_total * c->n_qh };
    ref.out = xcalloc(ref.rows * hd, sizeof(double));
    ref.lse = xcalloc(ref.rows, sizeof(double));
    ref.mag = xcalloc(ref.rows, sizeof(double));
    ref.tail = xcalloc(ref.rows, sizeof(double));
    double *score = xcalloc(case_max_ctx(c), sizeof *score);
    for (size_t row = 0; row < ref.rows; row++) {
        uint32_t s, t, h, lo, hi;
        case_row_at(c, row, &s, &t, &h);
        case_visible(c, s, t, &lo, &hi);
        const float *q = c->q + row * hd;
        double m = -INFINITY, l = 0.0, *o = ref.out + row * hd;
        for (uint32_t j = lo; j < hi; j++) {
            const float *k = case_row(c, K, dequantized, s, h / ratio, j);
            double dot = 0.0;
            for (uint32_t i = 0; i < hd; i++)
                dot += (double)q[i] * k[i];
            score[j] = scale * dot;
            if (c->softcap > 0.0f)
                score[j] = c->softcap * tanh(score[j] / c->softcap);
            m = fmax(m, score[j]);
        }
        for (uint32_t j = lo; j < hi; j++) {
            const float *v = case_row(c, V, dequantized, s, h / ratio, j);
            double w = exp(score[j] - m), vn = 0.0;
            l += w;
            for (uint32_t i = 0; i < hd; i++) {
                o[i] += w * v[i];
                vn += (double)v[i] * v[i];
            }
            ref.mag[row] += w * sqrt(vn);
            if (w < tail_below)
                ref.tail[row] += w * sqrt(vn);
        }
        for (uint32_t i = 0; i < hd; i++)
            o[i] /= l;
        ref.lse[row] = m + log(l);
        ref.mag[row] /= l;
        ref.tail[row] /= l;
    }
    free(score);
    return ref;
}

static void ref_free(struct attn_ref *ref)
{
    free(ref->out);
    free(ref->lse);
    free(ref->mag);
    free(ref->tail);
}

/* ||a - b||^2 over n values; ||b||^2 into *norm_b when not NULL. */
static double dist2(const float *a, const double *b, uint32_t n, double *norm_b)
{
    double d = 0.0, nb = 0.0;
    for (uint32_t i = 0; i < n; i++) {
        d += (a[i] - b[i]) * (a[i] - b[i]);
        nb += b[i] * b[i];
    }
    if (norm_b)
        *norm_b = nb;
    return d;
}

/* max over rows of ||out - ref|| / sum_j w_j ||v_j|| */
static double accumulation_error(const float *out, const struct attn_ref *ref, uint32_t hd)
{
    double worst = 0.0;
    for (size_t r = 0; r < ref->rows; r++)
        worst = fmax(worst, sqrt(dist2(out + r * hd, ref->out + r * hd, hd, NULL)) / ref->mag[r]);
    return worst;
}

/* max over rows of |lse - ref| / (1 + |ref|) */
static double lse_error(const float *lse, const struct attn_ref *ref)
{
    double worst = 0.0;
    for (size_t r = 0; r < ref->rows; r++)
        worst = fmax(worst, fabs(lse[r] - ref->lse[r]) / (1.0 + fabs(ref->lse[r])));
    return worst;
}

/*
 * Tolerances against the ORIGINAL K/V, on the relative error of each output
 * row, ||out - ref|| / ||ref||, as an RMS over every row of every shape
 * (212 rows), with q, K, V ~ N(0, 1) and scale 1/sqrt(head_dim). V errors
 * average like the signal, and K errors move the scores by about the same
 * relative amount, so the expected value is about sqrt(2 x the relative
 * MSE per value):
 *   f32     float accumulation only                           -> 1e-5
 *   f16     rounding <= 2^-11 relative, RMS 2^-11/sqrt(3) ~ 3e-4 -> 1e-3
 *   q8_0    half-step error, d = amax/127 with amax ~ 2.5 sigma over 32
 *           values: RMS 2.5/127/sqrt(12) ~ 0.57%, x sqrt(2) ~ 8e-3 -> 1e-2
 *   turbo4  sqrt(2 x 0.0093) ~ 0.14 -> 0.17
 *   turbo3  sqrt(2 x 0.034)  ~ 0.26 -> 0.32
 *   turbo2  sqrt(2 x 0.116)  ~ 0.48 -> 0.58
 * Measured over five data seeds: f32 8.2e-7..8.8e-7, f16 2.8e-4..3.0e-4,
 * q8_0 7.1e-3..7.5e-3, turbo4 0.128..0.134, turbo3 0.245..0.252, turbo2
 * 0.446..0.459; the turbo bounds are the largest with 25% margin. A mixed
 * K/V pair is bounded by its worse type.
 * Against the DEQUANTIZED K/V the only difference is float accumulation:
 * ||out - ref|| <= 1e-4 x sum_j w_j ||v_j|| for every output row.
 */
static const double tolerance_original[N_TYPES] = {
    [TKV_TYPE_F32] = 1e-5,    [TKV_TYPE_F16] = 1e-3,    [TKV_TYPE_Q8_0] = 1e-2,
    [TKV_TYPE_TURBO2] = 0.58, [TKV_TYPE_TURBO3] = 0.32, [TKV_TYPE_TURBO4] = 0.17,
    /* the outlier-split types store less of each row in the codebook: within their plain type's bound */
    [TKV_TYPE_TURBO3_OUT] = 0.32, [TKV_TYPE_TURBO4_OUT] = 0.17,
};
#define TOLERANCE_DEQUANTIZED 1e-4

struct attn_shape {
    uint32_t head_dim, gqa, n_q[2], ctx[2], rotation, scale_mode;
    uint32_t block_tokens; /* 0: one block per sequence (a contiguous cache) */
};

/* Paged with block sizes of 1, 3, 16 and 256 and contiguous; odd block
 * sizes also with padded strides and a padded seqs array; mixed n_q. */
static const struct attn_shape attn_shapes[] = {
    { 64, 1, { 1, 1 }, { 1, 7 }, TKV_ROTATION_WHT, TKV_SCALE_NORM, 0 },
    { 128, 4, { 4, 2 }, { 7, 100 }, TKV_ROTATION_WHT, TKV_SCALE_NORM, 3 },
    { 64, 8, { 1, 1 }, { 1000, 100 }, TKV_ROTATION_DENSE, TKV_SCALE_NORM_CORRECTED, 256 },
    { 128, 1, { 4, 1 }, { 4096, 1000 }, TKV_ROTATION_WHT, TKV_SCALE_NORM_CORRECTED, 256 },
    { 64, 4, { 4, 4 }, { 4096, 7 }, TKV_ROTATION_WHT, TKV_SCALE_NORM, 16 },
    { 128, 8, { 1, 3 }, { 100, 4096 }, TKV_ROTATION_NONE, TKV_SCALE_NORM, 1 },
};
#define N_SHAPES (sizeof attn_shapes / sizeof attn_shapes[0])

static const uint32_t attn_types[][2] = {
    { TKV_TYPE_F32, TKV_TYPE_F32 },       { TKV_TYPE_F16, TKV_TYPE_F16 },
    { TKV_TYPE_Q8_0, TKV_TYPE_Q8_0 },     { TKV_TYPE_TURBO4, TKV_TYPE_TURBO4 },
    { TKV_TYPE_TURBO3, TKV_TYPE_TURBO3 }, { TKV_TYPE_TURBO2, TKV_TYPE_TURBO2 },
    { TKV_TYPE_Q8_0, TKV_TYPE_TURBO3 },   { TKV_TYPE_TURBO4, TKV_TYPE_F16 },
    { TKV_TYPE_F32, TKV_TYPE_TURBO2 },
};
#define N_TYPE_PAIRS (sizeof attn_types / sizeof attn_types[0])

static struct attn_case shape_case(const struct attn_shape *sh, uint32_t k_type, uint32_t v_type)
{
    return (struct attn_case){
        .head_dim = sh->head_dim,
        .n_kv = 2,
        .n_qh = 2 * sh->gqa,
        .n_seqs = 2,
        .n_q = { sh->n_q[0], sh->n_q[1] },
        .ctx = { sh->ctx[0], sh->ctx[1] },
        .block_tokens = sh->block_tokens,
        .contiguous = sh->block_tokens == 0,
        .pad = sh->block_tokens % 2,
        .seq_pad = sh->block_tokens % 2 ? 12 : 0,
        .side = { { .fmt = row_format(k_type, sh->head_dim, sh->rotation, sh->scale_mode) },
                  { .fmt = row_format(v_type, sh->head_dim, sh->rotation, sh->scale_mode) } },
    };
}

/* TKV_TEST_SMALL=1 (scripts/sanitize sets it; at -O0 under ASan this test
 * takes minutes) shortens the contexts longer than SMALL_CTX rows of the
 * attention tests that sized_case builds (attention_reference,
 * attention_options, paged_identical, isa_attention_matches_reference) to
 * SMALL_CTX; every shape, type pair, option, paging and ISA level still
 * runs, and scripts/test runs the full lengths. SMALL_CTX keeps what the
 * long contexts are there for: more than two of the cpu plugin's split-K
 * spans (1024 rows; the last one here ragged), longer than every window of
 * the cases (at most 2000), and where a case's full length gives the
 * plugin's threads work (from 65536 rows x queries; the least here is
 * 2 kv heads x 16 queries x 2200 rows, 70400) still enough to wake them.
 * check_sparse_v keeps 4096: at 2200 it would run on one thread. gcov
 * (TKV_TEST_ISA_LEVELS=avx2, as under ASan): the same 1709 lines of
 * plugins/cpu run at either size. */
#define SMALL_CTX 2200u

static int small_sizes(void)
{
    const char *s = getenv("TKV_TEST_SMALL");
    return s && strcmp(s, "1") == 0;
}

static struct attn_case sized_case(const struct attn_shape *sh, uint32_t k_type, uint32_t v_type)
{
    struct attn_case c = shape_case(sh, k_type, v_type);
    for (uint32_t s = 0; s < c.n_seqs && small_sizes(); s++)
        c.ctx[s] = c.ctx[s] > SMALL_CTX ? SMALL_CTX : c.ctx[s];
    return c;
}

/* The options of struct tkv_attention_args beyond plain causal attention,
 * each with scores at scale_mul / sqrt(head_dim) (6: peaked, so that
 * softcap bites and sparse V skips). */
struct attn_option {
    const char *name;
    uint32_t window;
    float softcap, scale_mul, threshold;
};

static const struct attn_option attn_options[] = {
    { "window 1", 1, 0.0f, 1.0f, 0.0f },
    { "window 7", 7, 0.0f, 1.0f, 0.0f },
    { "window 300", 300, 0.0f, 1.0f, 0.0f },
    { "window 2000", 2000, 0.0f, 1.0f, 0.0f },
    { "softcap 2, peaked", 0, 2.0f, 6.0f, 0.0f },
    { "softcap 50, peaked", 0, 50.0f, 6.0f, 0.0f },
    { "window 600, softcap 4, sparse V 1e-3, peaked", 600, 4.0f, 6.0f, 1e-3f },
};
#define N_OPTIONS (sizeof attn_options / sizeof attn_options[0])

/* Long and short sequences, many queries per sequence (several work units
 * of the ISA levels) with a window shorter than n_q. */
static const struct attn_shape option_shapes[] = {
    { 128, 4, { 4, 1 }, { 4096, 1000 }, TKV_ROTATION_WHT, TKV_SCALE_NORM_CORRECTED, 256 },
    { 64, 2, { 40, 5 }, { 700, 45 }, TKV_ROTATION_DENSE, TKV_SCALE_NORM, 3 },
};
#define N_OPTION_SHAPES (sizeof option_shapes / sizeof option_shapes[0])

/* QJL keys run the reference kernels on every level (the outlier-split
 * types the turbo kernels plus their outliers); the QJL residual
 * sketch costs g^2 per row to store, so only the short shape has them. */
static const uint32_t option_types[][2] = {
    { TKV_TYPE_F32, TKV_TYPE_F32 },
    { TKV_TYPE_TURBO3, TKV_TYPE_TURBO3 },
    { TKV_TYPE_Q8_0, TKV_TYPE_TURBO4 },
    { TKV_TYPE_TURBO4_QJL, TKV_TYPE_F16 },
    { TKV_TYPE_TURBO4_OUT, TKV_TYPE_TURBO3_OUT },
};
#define N_OPTION_TYPES (sizeof option_types / sizeof option_types[0])

static int option_pair_runs(size_t shape, size_t pair)
{
    return shape > 0 || !tkv_type_is_qjl(option_types[pair][0]);
}

static struct attn_case option_case(const struct attn_shape *sh, const uint32_t types[2],
                                    const struct attn_option *o)
{
    struct attn_case c = sized_case(sh, types[0], types[1]);
    c.window = o->window;
    c.softcap = o->softcap;
    return c;
}

static float option_scale(const struct attn_case *c, const struct attn_option *o)
{
    return o->scale_mul / sqrtf((float)c->head_dim);
}

/* lse against the float64 model over the dequantized rows: the scores'
 * float accumulation moves it by ~1e-7 (measured below 1e-6 on every level). */
#define TOLERANCE_LSE 1e-5

static void test_attention_reference(void **state)
{
    (void)state;
    print_message("attention error over %zu shapes (head_dim 64/128, GQA 1/4/8, contexts "
                  "1..%u, n_q 1..4 per sequence, 2 sequences, blocks of 1/3/16/256 tokens "
                  "and contiguous); vs dequantized K/V: max over output rows of "
                  "||out - ref|| / sum w||v||; vs original K/V: RMS over rows of "
                  "||out - ref|| / ||ref||; lse: max |lse - ref| / (1 + |ref|)\n", N_SHAPES,
                  small_sizes() ? SMALL_CTX : 4096u);
    print_message("  K      V       vs dequantized (bound)   vs original (bound)   lse (bound)\n");
    for (size_t ti = 0; ti < N_TYPE_PAIRS; ti++) {
        uint32_t kt = attn_types[ti][0], vt = attn_types[ti][1];
        double bound = fmax(tolerance_original[kt], tolerance_original[vt]);
        double worst_dq = 0.0, worst_lse = 0.0, rel_sq = 0.0;
        size_t n_rows = 0;
        for (size_t si = 0; si < N_SHAPES; si++) {
            struct attn_case c = sized_case(&attn_shapes[si], kt, vt);
            float scale = 1.0f / sqrtf((float)c.head_dim);
            uint64_t total = 0, skipped = 1;
            case_build(&c);
            assert_int_equal(case_run(&c, scale, 0.0f, c.out, c.lse, &total, &skipped), TKV_OK);
            assert_int_equal(total, case_rows_total(&c));
            assert_int_equal(skipped, 0);

            struct attn_ref ref = case_reference(&c, 1, scale, 0.0);
            worst_dq = fmax(worst_dq, accumulation_error(c.out, &ref, c.head_dim));
            worst_lse = fmax(worst_lse, lse_error(c.lse, &ref));
            ref_free(&ref);

            ref = case_reference(&c, 0, scale, 0.0);
            for (size_t r = 0; r < ref.rows; r++) {
                size_t at = r * c.head_dim;
                double nr, e = dist2(c.out + at, ref.out + at, c.head_dim, &nr);
                rel_sq += e / nr;
            }
            n_rows += ref.rows;
            ref_free(&ref);
            case_free(&c);
        }
        print_message("  %-6s %-6s  %.2e (%.0e)         %.2e (%.2g)          %.1e (%.0e)\n",
                      type_name[kt], type_name[vt], worst_dq, TOLERANCE_DEQUANTIZED,
                      sqrt(rel_sq / n_rows), bound, worst_lse, TOLERANCE_LSE);
        assert_true(worst_dq <= TOLERANCE_DEQUANTIZED);
        assert_true(sqrt(rel_sq / n_rows) <= bound);
        assert_true(worst_lse <= TOLERANCE_LSE);
    }
}

/* Peaked attention (scores scaled up 6x): sparse V skips rows, and the
 * output moves by no more than the weight of the rows it may skip. level
 * names the device's ISA level in the messages. */
static void check_sparse_v(const char *level)
{
    static const uint32_t types[][2] = {
        { TKV_TYPE_F32, TKV_TYPE_F32 },
        { TKV_TYPE_TURBO3, TKV_TYPE_TURBO3 },
        { TKV_TYPE_Q8_0, TKV_TYPE_TURBO4 },
    };
    const struct attn_shape shape = { 128, 4, { 2, 2 }, { 4096, 1000 }, TKV_ROTATION_WHT,
                                      TKV_SCALE_NORM, 256 };
    const float threshold = 1e-6f, scale = 6.0f / sqrtf(128.0f);
    for (size_t ti = 0; ti < sizeof types / sizeof types[0]; ti++) {
        struct attn_case c = shape_case(&shape, types[ti][0], types[ti][1]);
        case_build(&c);
        size_t n = case_values(&c);
        float *dense = xcalloc(n, sizeof *dense);
        uint64_t total = 0, skipped = 0, skipped_off = 1, total_off = 0;
        assert_int_equal(case_run(&c, scale, 0.0f, dense, NULL, &total_off, &skipped_off), TKV_OK);
        assert_int_equal(case_run(&c, scale, threshold, c.out, c.lse, &total, &skipped), TKV_OK);
        assert_int_equal(skipped_off, 0);
        assert_int_equal(total, total_off);
        assert_true(skipped > 0 && skipped < total);
        /* Skipped rows have exp(s_j - running max) < threshold, hence
         * exp(s_j - final max) < threshold: a subset of the model's tail
         * (1% slack for the float scores). The output moves by at most the
         * tail's share, plus float accumulation. The lse counts every row. */
        struct attn_ref ref = case_reference(&c, 1, scale, 1.01 * threshold);
        double worst = 0.0;
        for (size_t r = 0; r < ref.rows; r++) {
            double moved = 0.0;
            for (uint32_t i = 0; i < c.head_dim; i++) {
                double d = (double)c.out[r * c.head_dim + i] - dense[r * c.head_dim + i];
                moved += d * d;
            }
            moved = sqrt(moved);
            assert_true(moved <= ref.tail[r] + 1e-6 * ref.mag[r]);
            worst = fmax(worst, moved / ref.mag[r]);
        }
        assert_true(lse_error(c.lse, &ref) <= TOLERANCE_LSE);
        print_message("%s: sparse V %s/%s, threshold %.0e: %llu of %llu rows skipped (%.1f%%), "
                      "output moved <= %.1e x sum w|v| (bound: the skippable weight)\n",
                      level, type_name[types[ti][0]], type_name[types[ti][1]], (double)threshold,
                      (unsigned long long)skipped, (unsigned long long)total,
                      100.0 * skipped / total, worst);
        free(dense);
        ref_free(&ref);
        case_free(&c);
    }
}

static void test_sparse_v(void **state)
{
    (void)state;
    check_sparse_v("default device");
}

/* ---- zero and non-finite rows ---------------------------------------------- */

static void test_zero_rows(void **state)
{
    (void)state;
    enum { CTX = 50, HD = 64 };
    for (uint32_t type = 0; type < N_TYPES; type++) {
        /* stored as all-zero bytes (turbo: scale 0, indices 0), read as 0 */
        for (size_t d = 0; d < N_HEAD_DIMS; d++) {
            enum { MAX_HD = TKV_HEAD_DIM_MAX };
            static const float zeros[3 * MAX_HD];
            static float deq[3 * MAX_HD];
            static uint8_t raw[2 * (3 * 4 * MAX_HD + 8)];
            uint32_t hd = head_dims[d], rb = tkv_row_bytes(type, hd);
            struct tkv_row_format fmt =
                row_format(type, hd, TKV_ROTATION_WHT, TKV_SCALE_NORM_CORRECTED);
            struct pool pl = rows_pool(&fmt, 3);
            memset(raw, 0x5a, pl.bytes);
            assert_int_equal(env.p->buffer_write(env.dev, pl.p.buf, 0, raw, pl.bytes), TKV_OK);
            assert_int_equal(append(&pl, 3, zeros, NULL), TKV_OK);
            read_rows(&pl, 3, raw);
            /* outlier-split types: the indices of a zero row's outliers are 0, 1, ... (ties) */
            uint32_t n_out = tkv_type_is_outlier(type) ? (hd + 31) / 32 : 0, ib = hd <= 256 ? 1 : 2;
            uint32_t at = rb - n_out * (ib + 2);
            for (uint32_t i = 0; i < 3 * rb; i++) {
                uint32_t in_row = i % rb, o = (in_row - at) / ib;
                if (n_out && in_row >= at && in_row < at + n_out * ib)
                    assert_int_equal(raw[i], (in_row - at) % ib == 0 ? (o & 0xff) : (o >> 8));
                else
                    assert_int_equal(raw[i], 0);
            }
            assert_int_equal(dequantize(&pl, 3, deq), TKV_OK);
            for (uint32_t i = 0; i < 3 * hd; i++)
                assert_true(deq[i] == 0.0f);
            pool_free(&pl);
        }

        /* zero V: outputs exactly zero; zero K: uniform weights, mean of V
         * (QJL types are keys only: their values f16) */
        const struct attn_shape shape = { HD, 4, { 1, 1 }, { CTX, 0 }, TKV_ROTATION_WHT,
                                          TKV_SCALE_NORM, 16 };
        struct attn_case c =
            shape_case(&shape, type, tkv_type_is_qjl(type) ? TKV_TYPE_F16 : type);
        float zero_rows[CTX * HD] = { 0 }, v_rows[CTX * HD];
        c.n_kv = 1;
        c.n_seqs = 1;
        case_build(&c);
        memcpy(v_rows, c.side[V].orig[0], sizeof v_rows);
        side_store(&c, &c.side[V], 0, zero_rows);
        assert_int_equal(case_run(&c, 0.125f, 0.0f, c.out, NULL, NULL, NULL), TKV_OK);
        for (uint32_t i = 0; i < c.n_qh * HD; i++)
            assert_true(c.out[i] == 0.0f);
        side_store(&c, &c.side[K], 0, zero_rows);
        side_store(&c, &c.side[V], 0, v_rows);
        assert_int_equal(case_run(&c, 0.125f, 0.0f, c.out, c.lse, NULL, NULL), TKV_OK);
        struct attn_ref ref = case_reference(&c, 1, 0.125f, 0.0);
        assert_true(accumulation_error(c.out, &ref, HD) <= TOLERANCE_DEQUANTIZED);
        for (uint32_t i = 0; i < c.n_qh; i++) /* every score 0: lse = log CTX */
            assert_true(fabs(c.lse[i] - log((double)CTX)) <= TOLERANCE_LSE);
        ref_free(&ref);
        case_free(&c);
    }
}

/* A row with NaN and Inf stores them as 0, and nothing else changes. */
static void test_nonfinite_rows(void **state)
{
    (void)state;
    enum { HD = 96, ROWS = 5, BAD = 2 };
    for (uint32_t type = 0; type < N_TYPES; type++) {
        struct tkv_row_format fmt = row_format(type, HD, TKV_ROTATION_WHT, TKV_SCALE_NORM);
        uint32_t rb = tkv_row_bytes(type, HD);
        float x[ROWS * HD], clean[ROWS * HD], deq[ROWS * HD];
        uint8_t got[ROWS * 4 * HD], want[ROWS * 4 * HD];
        fill_gauss(x, ROWS * HD, 1.0);
        memcpy(clean, x, sizeof x);
        clean[BAD * HD + 3] = clean[BAD * HD + 40] = clean[BAD * HD + 90] = 0.0f;
        x[BAD * HD + 3] = NAN;
        x[BAD * HD + 40] = INFINITY;
        x[BAD * HD + 90] = -INFINITY;

        struct pool pl = rows_pool(&fmt, ROWS), ref = rows_pool(&fmt, ROWS);
        uint64_t nonfinite = 0;
        assert_int_equal(append(&pl, ROWS, x, &nonfinite), TKV_OK);
        assert_int_equal(nonfinite, 3);
        for (uint32_t r = 0; r < ROWS; r++) /* each row alone, the bad one cleaned */
            assert_int_equal(pool_append(&ref, one_block, 1, r, 1, clean + r * HD, NULL), TKV_OK);
        read_rows(&pl, ROWS, got);
        read_rows(&ref, ROWS, want);
        assert_memory_equal(got, want, ROWS * rb);
        assert_int_equal(dequantize(&pl, ROWS, deq), TKV_OK);
        for (uint32_t i = 0; i < ROWS * HD; i++)
            assert_true(isfinite(deq[i]));
        pool_free(&pl);
        pool_free(&ref);

        /* attention over a cache holding the bad row stays finite */
        const struct attn_shape shape = { HD, 2, { 1, 1 }, { ROWS, 0 }, TKV_ROTATION_WHT,
                                          TKV_SCALE_NORM, 2 };
        struct attn_case c =
            shape_case(&shape, type, tkv_type_is_qjl(type) ? TKV_TYPE_F16 : type);
        c.n_kv = 1;
        c.n_seqs = 1;
        case_build(&c);
        side_store(&c, &c.side[K], 0, x);
        side_store(&c, &c.side[V], 0, x);
        assert_int_equal(case_run(&c, 0.1f, 0.0f, c.out, c.lse, NULL, NULL), TKV_OK);
        for (uint32_t i = 0; i < c.n_qh * HD; i++)
            assert_true(isfinite(c.out[i]));
        for (uint32_t i = 0; i < c.n_qh; i++)
            assert_true(isfinite(c.lse[i]));
        case_free(&c);
    }
}

/* ---- ISA levels ----------------------------------------------------------------
 *
 * The plugin runs one of several ISA levels (TURBO_CPU_ISA: avx512, avx2,
 * neon, scalar; reference is the plain-C kernels of rows.c and attention.c, one
 * thread). Every level this CPU runs must store exactly the reference's
 * bytes, and its attention outputs must agree with the reference's within
 * float accumulation: the levels sum in other orders (blocks of 8 or 16,
 * split-K merges) and use a polynomial e^x within 1 ulp. Bound:
 * ||out - out_ref|| <= 1e-5 x max_j ||v_j|| per output row, the largest
 * stored V row of the case (every output is a weighted mean of V rows;
 * measured below 1e-6).
 */

#define TOLERANCE_LEVELS 1e-5

#if defined(__x86_64__) || defined(__i386__)
static int cpu_has_avx512(void)
{
    return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
           __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("avx512vl") &&
           __builtin_cpu_supports("avx512vbmi") && __builtin_cpu_supports("fma") &&
           __builtin_cpu_supports("f16c");
}
static int cpu_has_avx2(void)
{
    return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") &&
           __builtin_cpu_supports("f16c");
}
#else
static int cpu_has_avx512(void) { return 0; }
static int cpu_has_avx2(void) { return 0; }
#endif
static int cpu_little_endian(void) { return __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__; }
#if defined(__aarch64__)
static int cpu_has_neon(void) { return cpu_little_endian(); }
#else
static int cpu_has_neon(void) { return 0; }
#endif

/* Best first, as TURBO_CPU_ISA=auto picks. */
static const struct {
    const char *name;
    int (*runs)(void);
} isa_levels[] = {
    { "avx512", cpu_has_avx512 },
    { "avx2", cpu_has_avx2 },
    { "neon", cpu_has_neon },
    { "scalar", cpu_little_endian },
};
#define N_LEVELS (sizeof isa_levels / sizeof isa_levels[0])

/* Level i runs here and is one the comparisons cover: all that run, or
 * those TKV_TEST_ISA_LEVELS lists (comma-separated; scripts/arm-test keeps
 * the emulated run short with "neon"). */
static int level_on(size_t i)
{
    const char *only = getenv("TKV_TEST_ISA_LEVELS");
    if (!isa_levels[i].runs())
        return 0;
    if (!only || !*only)
        return 1;
    size_t n = strlen(isa_levels[i].name);
    for (const char *p = only; *p; p += strcspn(p, ","), p += *p == ',')
        if (strncmp(p, isa_levels[i].name, n) == 0 && (p[n] == ',' || p[n] == '\0'))
            return 1;
    return 0;
}

/* Sets TURBO_CPU_ISA to isa, or back to what the caller had (isa NULL). */
static void set_isa_env(const char *isa)
{
    static char saved[64];
    static int had;
    if (isa) {
        const char *now = getenv("TURBO_CPU_ISA");
        had = now != NULL;
        snprintf(saved, sizeof saved, "%s", now ? now : "");
        setenv("TURBO_CPU_ISA", isa, 1);
    } else if (had) {
        setenv("TURBO_CPU_ISA", saved, 1);
    } else {
        unsetenv("TURBO_CPU_ISA");
    }
}

/* Opens a device with TURBO_CPU_ISA=isa and the given threads. */
static int open_isa(const char *isa, uint32_t threads, void **dev)
{
    struct tkv_open_params params = { .struct_size = sizeof params, .threads = threads,
                                      .math = env.math };
    set_isa_env(isa);
    *dev = NULL;
    int rc = env.p->open(&params, dev);
    set_isa_env(NULL);
    return rc;
}

static void *open_isa_ok(const char *isa, uint32_t threads)
{
    void *dev;
    if (open_isa(isa, threads, &dev) != TKV_OK)
        fail_msg("TURBO_CPU_ISA=%s, %u threads: %s", isa, threads, last_error);
    return dev;
}

/* The driver string probe reports with TURBO_CPU_ISA=isa. */
static void probe_isa(const char *isa, char *driver, size_t size)
{
    struct tkv_device_info info;
    uint32_t n;
    set_isa_env(isa);
    assert_int_equal(env.p->probe(&info, 1, &n), TKV_OK);
    set_isa_env(NULL);
    snprintf(driver, size, "%s", info.driver);
}

static void test_isa_selection(void **state)
{
    (void)state;
    char driver[256], want[64];
    void *dev;
    assert_int_equal(open_isa("sse9", 0, &dev), TKV_ECONFIG);
    if (!strstr(last_error, "TURBO_CPU_ISA=sse9") || !strstr(last_error, "avx2"))
        fail_msg("error \"%s\" names neither the variable nor the choices", last_error);
    for (size_t i = 0; i < N_LEVELS; i++) {
        int rc = open_isa(isa_levels[i].name, 2, &dev);
        if (!isa_levels[i].runs()) {
            assert_int_equal(rc, TKV_EUNSUPPORTED);
            assert_non_null(strstr(last_error, "TURBO_CPU_ISA"));
            print_message("TURBO_CPU_ISA=%s refused here: %s\n", isa_levels[i].name, last_error);
            continue;
        }
        assert_int_equal(rc, TKV_OK);
        env.p->close(dev);
        probe_isa(isa_levels[i].name, driver, sizeof driver);
        snprintf(want, sizeof want, "isa %s ", isa_levels[i].name);
        assert_non_null(strstr(driver, want));
    }
    assert_int_equal(open_isa("reference", 0, &dev), TKV_OK);
    env.p->close(dev);
    for (size_t i = 0; i < N_LEVELS; i++)
        if (isa_levels[i].runs()) { /* auto takes the best */
            probe_isa("auto", driver, sizeof driver);
            snprintf(want, sizeof want, "isa %s ", isa_levels[i].name);
            assert_non_null(strstr(driver, want));
            print_message("auto: %s\n", driver);
            break;
        }
}

/* Every device this CPU runs: the reference (one thread) and each ISA
 * level (2 threads), with its name; returns how many. */
struct level_dev {
    const char *name;
    void *dev;
};

static size_t open_levels(struct level_dev devs[N_LEVELS + 1])
{
    size_t n = 0;
    devs[n++] = (struct level_dev){ "reference", open_isa_ok("reference", 1) };
    for (size_t li = 0; li < N_LEVELS; li++)
        if (level_on(li))
            devs[n++] = (struct level_dev){ isa_levels[li].name, open_isa_ok(isa_levels[li].name, 2) };
    return n;
}

static void close_levels(struct level_dev *devs, size_t n)
{
    for (size_t i = 0; i < n; i++)
        env.p->close(devs[i].dev);
}

/* Window, softcap, lse (with and without sparse V) and mixed n_q against
 * the float64 model over the dequantized rows, on the reference and on
 * every ISA level. Each option must move the model's output by far more
 * than the tolerance, or the case could not tell it was ignored. */
static void test_attention_options(void **state)
{
    (void)state;
    void *home = env.dev;
    struct level_dev devs[N_LEVELS + 1];
    size_t n_devs = open_levels(devs);
    for (size_t di = 0; di < n_devs; di++) {
        env.dev = devs[di].dev;
        double worst_out = 0.0, worst_lse = 0.0, least_effect = INFINITY;
        size_t n_cases = 0;
        for (size_t oi = 0; oi < N_OPTIONS; oi++) {
            const struct attn_option *o = &attn_options[oi];
            double effect = 0.0; /* the most the option moves the model's lse */
            for (size_t si = 0; si < N_OPTION_SHAPES; si++)
                for (size_t ti = 0; ti < N_OPTION_TYPES; ti++) {
                    if (!option_pair_runs(si, ti))
                        continue;
                    struct attn_case c = option_case(&option_shapes[si], option_types[ti], o);
                    float scale = option_scale(&c, o);
                    uint64_t total = 0, skipped = 0;
                    n_cases++;
                    case_build(&c);
                    assert_int_equal(case_run(&c, scale, o->threshold, c.out, c.lse, &total,
                                              &skipped),
                                     TKV_OK);
                    assert_int_equal(total, case_rows_total(&c));
                    struct attn_ref ref = case_reference(&c, 1, scale, 1.01 * o->threshold);
                    if (o->threshold > 0.0f) {
                        assert_true(skipped > 0);
                        for (size_t r = 0; r < ref.rows; r++) {
                            double d = sqrt(dist2(c.out + r * c.head_dim,
                                                  ref.out + r * c.head_dim, c.head_dim, NULL));
                            assert_true(d <= ref.tail[r] + TOLERANCE_DEQUANTIZED * ref.mag[r]);
                        }
                    } else {
                        double e = accumulation_error(c.out, &ref, c.head_dim);
                        assert_int_equal(skipped, 0);
                        if (e > TOLERANCE_DEQUANTIZED)
                            fail_msg("%s: %s, shape %zu, %s/%s: error %.2e", devs[di].name,
                                     o->name, si, type_name[c.side[K].fmt.type],
                                     type_name[c.side[V].fmt.type], e);
                        worst_out = fmax(worst_out, e);
                    }
                    double le = lse_error(c.lse, &ref);
                    if (le > TOLERANCE_LSE)
                        fail_msg("%s: %s, shape %zu, %s/%s: lse error %.2e", devs[di].name,
                                 o->name, si, type_name[c.side[K].fmt.type],
                                 type_name[c.side[V].fmt.type], le);
                    worst_lse = fmax(worst_lse, le);
                    if (di == 0) { /* how far the options move the model */
                        struct attn_case plain = c;
                        plain.window = 0;
                        plain.softcap = 0.0f;
                        struct attn_ref off = case_reference(&plain, 1, scale, 0.0);
                        for (size_t r = 0; r < ref.rows; r++)
                            effect = fmax(effect,
                                          fabs(off.lse[r] - ref.lse[r]) / (1 + fabs(ref.lse[r])));
                        ref_free(&off);
                    }
                    ref_free(&ref);
                    case_free(&c);
                }
            least_effect = fmin(least_effect, effect);
        }
        print_message("%s: %zu cases (%zu options x shapes x type pairs): max ||out - ref|| / "
                      "sum w||v|| = %.2e (bound %.0e), max lse error %.1e (bound %.0e)\n",
                      devs[di].name, n_cases, N_OPTIONS, worst_out, TOLERANCE_DEQUANTIZED,
                      worst_lse, TOLERANCE_LSE);
        if (di == 0) {
            print_message("every option moves the model's lse by up to >= %.2e\n", least_effect);
            assert_true(least_effect > 100 * TOLERANCE_LSE);
        }
    }
    env.dev = home;
    close_levels(devs, n_devs);
}

/* The stored bytes of sequence s of a side, row by row, [ctx][n_kv]. */
static uint8_t *side_bytes(const struct attn_case *c, const struct attn_side *sd, uint32_t s)
{
    uint32_t rb = sd->pool.p.row_bytes;
    uint8_t *bytes = xcalloc((size_t)c->ctx[s] * c->n_kv, rb);
    for (uint32_t t = 0; t < c->ctx[s]; t++)
        for (uint32_t h = 0; h < c->n_kv; h++)
            pool_row(&sd->pool, case_table(c, s), h, t, bytes + ((size_t)t * c->n_kv + h) * rb);
    return bytes;
}

/* One cache paged with blocks of 1, 3, 16, 256 and 8192 tokens, and
 * contiguous (one block per sequence of its longest length, or of 8192),
 * blocks scrambled, strides padded for the odd sizes: the same rows stored
 * as the same bytes, and attention giving the same floats bit for bit
 * (lse, row counts and sparse-V skips included), on every level. */
static void test_paged_identical(void **state)
{
    (void)state;
    static const struct {
        uint32_t block_tokens, contiguous;
    } pagings[] = { { 8192, 1 }, { 1, 0 }, { 3, 0 }, { 16, 0 }, { 256, 0 }, { 8192, 0 }, { 0, 1 } };
    const struct attn_shape shape = { 128, 4, { 4, 1 }, { 3000, 300 }, TKV_ROTATION_WHT,
                                      TKV_SCALE_NORM, 0 };
    const struct attn_option opts[2] = {
        { "plain", 0, 0.0f, 1.0f, 0.0f },
        { "window 1500, softcap 20, sparse V 1e-4", 1500, 20.0f, 4.0f, 1e-4f },
    };
    void *home = env.dev;
    struct level_dev devs[N_LEVELS + 1];
    size_t n_devs = open_levels(devs), n_pagings = sizeof pagings / sizeof pagings[0];
    for (size_t di = 0; di < n_devs; di++) {
        env.dev = devs[di].dev;
        for (size_t ti = 0; ti < N_OPTION_TYPES; ti++) {
            struct attn_case base = { 0 };
            uint8_t *base_bytes[2][2] = { { NULL } };
            float *base_out[2], *base_lse[2];
            uint64_t base_total[2], base_skipped[2];
            for (size_t pi = 0; pi < n_pagings; pi++) {
                struct attn_case c = sized_case(&shape, option_types[ti][0], option_types[ti][1]);
                c.block_tokens = pagings[pi].block_tokens;
                c.contiguous = pagings[pi].contiguous;
                c.pad = c.block_tokens % 2;
                c.data_from = pi ? &base : NULL; /* the same rows and queries */
                case_build(&c);
                for (int k = K; k <= V; k++)
                    for (uint32_t s = 0; s < c.n_seqs; s++) {
                        uint8_t *bytes = side_bytes(&c, &c.side[k], s);
                        if (pi == 0) {
                            base_bytes[k][s] = bytes;
                            continue;
                        }
                        if (memcmp(bytes, base_bytes[k][s],
                                   (size_t)c.ctx[s] * c.n_kv * c.side[k].pool.p.row_bytes))
                            fail_msg("%s, %s: blocks of %u tokens: %s bytes differ from the "
                                     "contiguous cache's",
                                     devs[di].name, type_name[c.side[k].fmt.type],
                                     c.block_tokens, k == K ? "K" : "V");
                        free(bytes);
                    }
                for (int oi = 0; oi < 2; oi++) {
                    size_t n = case_values(&c), n_lse = (size_t)c.n_q_total * c.n_qh;
                    float *out = xcalloc(n, sizeof *out), *lse = xcalloc(n_lse, sizeof *lse);
                    uint64_t total, skipped;
                    c.window = opts[oi].window;
                    c.softcap = opts[oi].softcap;
                    assert_int_equal(case_run(&c, option_scale(&c, &opts[oi]), opts[oi].threshold,
                                              out, lse, &total, &skipped),
                                     TKV_OK);
                    if (pi == 0) {
                        base_out[oi] = out;
                        base_lse[oi] = lse;
                        base_total[oi] = total;
                        base_skipped[oi] = skipped;
                        continue;
                    }
                    if (memcmp(out, base_out[oi], n * sizeof *out) ||
                        memcmp(lse, base_lse[oi], n_lse * sizeof *lse))
                        fail_msg("%s, %s/%s, %s: blocks of %u tokens%s: attention differs from "
                                 "the contiguous cache's",
                                 devs[di].name, type_name[c.side[K].fmt.type],
                                 type_name[c.side[V].fmt.type], opts[oi].name, c.block_tokens,
                                 c.contiguous ? " (contiguous)" : "");
                    assert_int_equal(total, base_total[oi]);
                    assert_int_equal(skipped, base_skipped[oi]);
                    free(out);
                    free(lse);
                }
                if (pi == 0)
                    base = c;
                else
                    case_free(&c);
            }
            for (int k = K; k <= V; k++)
                for (uint32_t s = 0; s < base.n_seqs; s++)
                    free(base_bytes[k][s]);
            for (int oi = 0; oi < 2; oi++) {
                free(base_out[oi]);
                free(base_lse[oi]);
            }
            case_free(&base);
        }
        print_message("%s: %zu type pairs, contiguous and blocks of 1, 3, 16, 256, 8192 "
                      "tokens: identical bytes and attention\n",
                      devs[di].name, N_OPTION_TYPES);
    }
    env.dev = home;
    close_levels(devs, n_devs);
}

/* Every type, head_dim, rotation and scale mode; rows of magnitudes 1e-3..1e3,
 * a saturating one and a zero one, 3 heads x 32 tokens per append (several
 * work items) into blocks of 7 tokens: each level's bytes equal the
 * reference device's. */
static void test_isa_quantize_identical(void **state)
{
    (void)state;
    enum { TOKENS = 32, HEADS = 3, BT = 7 };
    static const uint32_t table[] = { 4, 1, 5, 0, 3 }; /* ceil(32 / 7) blocks of 6 */
    void *home = env.dev, *ref_dev = open_isa_ok("reference", 1), *devs[N_LEVELS] = { 0 };
    uint64_t rows = 0, bytes = 0;
    for (size_t li = 0; li < N_LEVELS; li++)
        if (level_on(li))
            devs[li] = open_isa_ok(isa_levels[li].name, 2);
    for (uint32_t type = 0; type < N_TYPES; type++) {
        uint32_t variants = tkv_type_is_turbo(type) ? N_ROTATIONS * N_SCALE_MODES : 1;
        for (size_t d = 0; d < N_HEAD_DIMS; d++) {
            uint32_t hd = head_dims[d], rb = tkv_row_bytes(type, hd);
            size_t n = (size_t)TOKENS * HEADS * hd, size = (size_t)TOKENS * HEADS * rb;
            float *x = xcalloc(n, sizeof *x);
            uint8_t *want = xcalloc(size, 1), *got = xcalloc(size, 1);
            fill_gauss(x, hd, 1e5);
            for (size_t r = 2; r < (size_t)TOKENS * HEADS; r++)
                fill_gauss(x + r * hd, hd, exp(rng_uniform() * 14.0 - 7.0));
            for (uint32_t v = 0; v < variants; v++) {
                struct tkv_row_format fmt =
                    variant_format(type, hd, v);
                for (size_t li = 0; li <= N_LEVELS; li++) { /* the reference first */
                    if (li && !devs[li - 1])
                        continue;
                    env.dev = li ? devs[li - 1] : ref_dev;
                    struct pool pl = pool_new(&fmt, HEADS, BT, 6, 0, 0);
                    uint8_t *into = li ? got : want;
                    assert_int_equal(pool_append(&pl, table, 5, 0, TOKENS, x, NULL), TKV_OK);
                    for (uint32_t t = 0; t < TOKENS; t++)
                        for (uint32_t h = 0; h < HEADS; h++)
                            pool_row(&pl, table, h, t, into + ((size_t)t * HEADS + h) * rb);
                    pool_free(&pl);
                    if (li && memcmp(want, got, size) != 0)
                        fail_msg("TURBO_CPU_ISA=%s: %s, head_dim %u, rotation %u, scale mode "
                                 "%u: stored bytes differ from the reference",
                                 isa_levels[li - 1].name, type_name[type], hd, fmt.rotation,
                                 fmt.scale_mode);
                }
                rows += (uint64_t)TOKENS * HEADS;
                bytes += size;
            }
            free(x);
            free(want);
            free(got);
        }
    }
    env.dev = home;
    for (size_t li = 0; li < N_LEVELS; li++)
        if (devs[li]) {
            print_message("TURBO_CPU_ISA=%s: %llu rows (every type, head_dim, rotation, scale "
                          "mode), %llu bytes, identical to the reference\n",
                          isa_levels[li].name, (unsigned long long)rows,
                          (unsigned long long)bytes);
            env.p->close(devs[li]);
        }
    env.p->close(ref_dev);
}

/* ---- stored bytes across architectures -------------------------------------------
 *
 * The bytes a fixed input is stored as, per type (every head_dim, rotation
 * and scale mode), hashed (FNV-1a, 64 bits) and compared with the hashes
 * this test computed on x86-64 (avx512, avx2, scalar and the reference all
 * give them). The same test run on another architecture (scripts/arm-test:
 * AArch64 under qemu) then proves its levels store the x86 bytes. The input
 * is exact arithmetic only (integers times powers of two), so that it does
 * not depend on the platform's libm. TKV_PRINT_STORAGE_HASHES=1 prints the
 * table to paste here after a deliberate format change.
 */

/* The hash covers format revision 0 (types and rotations before
 * TKV_TYPE_FIRST_R1 / TKV_ROTATION_FIRST_R1): the recorded x86 hashes are
 * of those. */
#define HASH_TYPES TKV_TYPE_FIRST_R1
#define HASH_ROTATIONS (TKV_ROTATION_FIRST_R1 - 1u)

static const uint64_t storage_hash_x86[HASH_TYPES] = {
    0x2790a8828f73ce75ull, /* f32 */
    0x74c189531f7967b7ull, /* f16 */
    0x8ca4a669b8280901ull, /* q8_0 */
    0x2277d3f542c8197dull, /* turbo2 */
    0x11771e7d669cd511ull, /* turbo3 */
    0x002f94c55dc0c874ull, /* turbo4 */
    0x67183ad32fa34a0aull, /* turbo3_qjl */
    0xef585017641e9552ull, /* turbo4_qjl */
};

/* Rows of magnitudes 2^-30 .. 2^10, exact: a 21-bit integer times a power
 * of two; row 0 saturates f16 (and fp16 scales), row 1 is zero. */
static void fill_exact(float *x, size_t n_rows, uint32_t hd)
{
    uint64_t state = 0x73746f7265ull; /* "store" */
    for (size_t r = 0; r < n_rows; r++) {
        uint64_t z = (state += 0x9E3779B97F4A7C15ull);
        z = (z ^ (z >> 29)) * 0xBF58476D1CE4E5B9ull;
        int e = r == 0 ? 0 : (int)(z >> 58) % 41 - 30;
        for (uint32_t i = 0; i < hd; i++) {
            uint64_t w = (state += 0x9E3779B97F4A7C15ull);
            w = (w ^ (w >> 31)) * 0x94D049BB133111EBull;
            w ^= w >> 29;
            int32_t m = (int32_t)(w >> 43) - (1 << 20);
            x[r * hd + i] = r == 1 ? 0.0f : ldexpf((float)m, r == 0 ? 0 : e - 20);
        }
    }
}

static uint64_t fnv1a(uint64_t h, const uint8_t *p, size_t n)
{
    for (size_t i = 0; i < n; i++)
        h = (h ^ p[i]) * 0x100000001b3ull;
    return h;
}

/* Every type's hash on one device. */
static void storage_hashes(uint64_t *hash)
{
    enum { TOKENS = 24, HEADS = 2, BT = 5 };
    static const uint32_t table[] = { 3, 0, 4, 1, 2 }; /* ceil(24 / 5) blocks */
    for (uint32_t type = 0; type < HASH_TYPES; type++) {
        uint32_t variants = tkv_type_is_turbo(type) ? HASH_ROTATIONS * N_SCALE_MODES : 1;
        hash[type] = 0xcbf29ce484222325ull;
        for (size_t d = 0; d < N_HEAD_DIMS; d++) {
            uint32_t hd = head_dims[d], rb = tkv_row_bytes(type, hd);
            float *x = xcalloc((size_t)TOKENS * HEADS * hd, sizeof *x);
            uint8_t *row = xcalloc(rb, 1);
            fill_exact(x, (size_t)TOKENS * HEADS, hd);
            for (uint32_t v = 0; v < variants; v++) {
                struct tkv_row_format fmt = variant_format(type, hd, v);
                struct pool pl = pool_new(&fmt, HEADS, BT, 5, 0, 0);
                assert_int_equal(pool_append(&pl, table, 5, 0, TOKENS, x, NULL), TKV_OK);
                for (uint32_t t = 0; t < TOKENS; t++)
                    for (uint32_t h = 0; h < HEADS; h++) {
                        pool_row(&pl, table, h, t, row);
                        hash[type] = fnv1a(hash[type], row, rb);
                    }
                pool_free(&pl);
            }
            free(x);
            free(row);
        }
    }
}

static void test_storage_hash(void **state)
{
    (void)state;
    void *home = env.dev;
    uint64_t hash[HASH_TYPES];
    int print = getenv("TKV_PRINT_STORAGE_HASHES") && *getenv("TKV_PRINT_STORAGE_HASHES") == '1';
    for (size_t li = 0; li <= N_LEVELS; li++) { /* the reference first */
        const char *name = li ? isa_levels[li - 1].name : "reference";
        if (li && !level_on(li - 1))
            continue;
        env.dev = open_isa_ok(name, li ? 2 : 1);
        storage_hashes(hash);
        env.p->close(env.dev);
        env.dev = home;
        if (print && !li) {
            printf("static const uint64_t storage_hash_x86[HASH_TYPES] = {\n");
            for (uint32_t type = 0; type < HASH_TYPES; type++)
                printf("    0x%016llxull, /* %s */\n", (unsigned long long)hash[type], type_name[type]);
            printf("};\n");
        }
        for (uint32_t type = 0; type < HASH_TYPES; type++)
            if (hash[type] != storage_hash_x86[type])
                fail_msg("TURBO_CPU_ISA=%s: %s rows hash to 0x%016llx, x86-64 stores 0x%016llx",
                         name, type_name[type], (unsigned long long)hash[type],
                         (unsigned long long)storage_hash_x86[type]);
        print_message("TURBO_CPU_ISA=%s: the stored bytes of every type hash as on x86-64\n", name);
    }
}

/* What one case gives on the reference device, for the levels to match. */
struct level_case {
    const struct attn_shape *shape;
    const uint32_t *types;
    struct attn_option opt;
};

/* The case built with the same data on the reference device and on every
 * level's: each level's outputs and lse against the reference's, row counts
 * equal; the best level's on 1 and 3 threads bit for bit against its own on
 * 2 (the work split does not depend on the thread count). */
static void compare_levels(const struct level_case *lc, void *ref_dev, void *const *devs,
                           void *const *other_threads, int best, double *worst, double *worst_lse)
{
    uint64_t total_ref = 0, skipped_ref = 0, total, skipped;
    struct attn_case ref = option_case(lc->shape, lc->types, &lc->opt);
    float scale = option_scale(&ref, &lc->opt), threshold = lc->opt.threshold;
    env.dev = ref_dev;
    case_build(&ref);
    size_t n = case_values(&ref);
    float *best_out = xcalloc(n, sizeof *best_out);
    assert_int_equal(case_run(&ref, scale, threshold, ref.out, ref.lse, &total_ref, &skipped_ref),
                     TKV_OK);
    double v_max = 0.0;
    for (uint32_t s = 0; s < ref.n_seqs; s++)
        for (size_t r = 0; r < (size_t)ref.n_kv * ref.ctx[s]; r++) {
            const float *v = ref.side[V].deq[s] + r * ref.head_dim;
            double sq = 0.0;
            for (uint32_t i = 0; i < ref.head_dim; i++)
                sq += (double)v[i] * v[i];
            v_max = fmax(v_max, sqrt(sq));
        }
    for (size_t li = 0; li < N_LEVELS; li++) {
        if (!devs[li])
            continue;
        env.dev = devs[li];
        struct attn_case c = option_case(lc->shape, lc->types, &lc->opt);
        c.data_from = &ref; /* the same rows and queries */
        case_build(&c);
        assert_int_equal(case_run(&c, scale, threshold, c.out, c.lse, &total, &skipped), TKV_OK);
        assert_int_equal(total, total_ref);
        if (threshold == 0.0f)
            assert_int_equal(skipped, 0);
        for (size_t r = 0; r < n / c.head_dim; r++) {
            double d = 0.0;
            for (size_t i = r * c.head_dim; i < (r + 1) * c.head_dim; i++)
                d += ((double)c.out[i] - ref.out[i]) * ((double)c.out[i] - ref.out[i]);
            if (threshold == 0.0f) /* sparse V may skip other rows than the reference */
                worst[li] = fmax(worst[li], sqrt(d) / v_max);
            worst_lse[li] =
                fmax(worst_lse[li], fabs((double)c.lse[r] - ref.lse[r]) / (1 + fabs(ref.lse[r])));
        }
        if ((int)li == best) {
            memcpy(best_out, c.out, n * sizeof *best_out);
            for (int k = 0; k < 2; k++) {
                env.dev = other_threads[k];
                assert_int_equal(case_run(&c, scale, threshold, c.out, NULL, NULL, NULL), TKV_OK);
                assert_memory_equal(c.out, best_out, n * sizeof *best_out);
            }
            env.dev = devs[li];
        }
        case_free(&c);
    }
    env.dev = ref_dev;
    case_free(&ref);
    free(best_out);
}

/* The shapes and type pairs of test_attention_reference (plain, sparse V
 * off) and the options of test_attention_options on every level against
 * the reference. */
static void test_isa_attention_matches_reference(void **state)
{
    (void)state;
    enum { THREADS = 2 };
    void *home = env.dev, *ref_dev = open_isa_ok("reference", 1), *devs[N_LEVELS] = { 0 };
    void *other_threads[2] = { 0 };
    int best = -1;
    double worst[N_LEVELS] = { 0 }, worst_lse[N_LEVELS] = { 0 };
    for (size_t li = 0; li < N_LEVELS; li++)
        if (level_on(li)) {
            devs[li] = open_isa_ok(isa_levels[li].name, THREADS);
            if (best < 0) {
                best = (int)li;
                other_threads[0] = open_isa_ok(isa_levels[li].name, 1);
                other_threads[1] = open_isa_ok(isa_levels[li].name, 3);
            }
        }
    const struct attn_option plain = { "plain", 0, 0.0f, 1.0f, 0.0f };
    for (size_t ti = 0; ti < N_TYPE_PAIRS; ti++)
        for (size_t si = 0; si < N_SHAPES; si++) {
            struct level_case lc = { &attn_shapes[si], attn_types[ti], plain };
            compare_levels(&lc, ref_dev, devs, other_threads, best, worst, worst_lse);
        }
    for (size_t oi = 0; oi < N_OPTIONS; oi++)
        for (size_t si = 0; si < N_OPTION_SHAPES; si++)
            for (size_t ti = 0; ti < N_OPTION_TYPES; ti++) {
                if (!option_pair_runs(si, ti))
                    continue;
                struct level_case lc = { &option_shapes[si], option_types[ti], attn_options[oi] };
                compare_levels(&lc, ref_dev, devs, other_threads, best, worst, worst_lse);
            }
    env.dev = home;
    for (size_t li = 0; li < N_LEVELS; li++) {
        if (!devs[li])
            continue;
        print_message("TURBO_CPU_ISA=%s vs reference, every attention shape, type pair and "
                      "option: max ||out - ref|| / max ||v|| = %.2e (bound %.0e), lse %.1e "
                      "(bound %.0e)%s\n",
                      isa_levels[li].name, worst[li], TOLERANCE_LEVELS, worst_lse[li],
                      TOLERANCE_LSE, (int)li == best ? "; 1 and 3 threads give the floats of 2" : "");
        assert_true(worst[li] <= TOLERANCE_LEVELS);
        assert_true(worst_lse[li] <= TOLERANCE_LSE);
        env.p->close(devs[li]);
    }
    for (int k = 0; k < 2; k++)
        if (other_threads[k])
            env.p->close(other_threads[k]);
    env.p->close(ref_dev);
}

/* Sparse V, zero rows and non-finite rows on every level. */
static void test_isa_edge_cases(void **state)
{
    void *home = env.dev;
    for (size_t li = 0; li < N_LEVELS; li++) {
        if (!level_on(li))
            continue;
        env.dev = open_isa_ok(isa_levels[li].name, 2);
        check_sparse_v(isa_levels[li].name);
        test_zero_rows(state);
        test_nonfinite_rows(state);
        env.p->close(env.dev);
    }
    env.dev = home;
}

/* ---- the ABI surface ------------------------------------------------------- */

static void expect_error(int rc, int status, const char *needle)
{
    assert_int_equal(rc, status);
    if (!strstr(last_error, needle))
        fail_msg("error \"%s\" does not mention \"%s\"", last_error, needle);
    last_error[0] = '\0';
}

static void test_descriptor_and_probe(void **state)
{
    (void)state;
    struct tkv_device_info info[2];
    uint32_t n = 0;
    assert_null(env.entry(TKV_ABI_MAJOR + 1, 0));
    assert_null(env.entry(TKV_ABI_MAJOR - 1, 9)); /* a 1.x core: rows are not paged there */
    assert_ptr_equal(env.entry(TKV_ABI_MAJOR, TKV_ABI_MINOR + 3), env.p);
    assert_int_equal(env.p->abi_major, TKV_ABI_MAJOR);
    assert_int_equal(env.p->abi_minor, TKV_ABI_MINOR);
    assert_int_equal(env.p->struct_size, sizeof(struct tkv_plugin));
    assert_string_equal(env.p->name, "cpu");
    assert_non_null(env.p->device_caps);
    assert_non_null(env.p->buffer_copy);
    assert_int_equal(env.p->probe(NULL, 0, &n), TKV_OK);
    assert_int_equal(n, 1);
    assert_int_equal(env.p->probe(info, 2, &n), TKV_OK);
    assert_int_equal(n, 1);
    assert_int_equal(info[0].kind, TKV_DEVICE_CPU);
    assert_int_equal(info[0].score, 100);
    assert_true(info[0].name[0] && info[0].driver[0] && info[0].memory_bytes > 0);
    print_message("device: %s [%s], %llu MiB\n", info[0].name, info[0].driver,
                  (unsigned long long)(info[0].memory_bytes >> 20));

    struct tkv_open_params params = {
        .struct_size = sizeof params, .device_index = 1, .math = env.math
    };
    void *dev = NULL;
    expect_error(env.p->open(&params, &dev), TKV_ERANGE, "device 1");
    params.device_index = 0;
    params.math = NULL;
    expect_error(env.p->open(&params, &dev), TKV_EINVAL, "math");
    assert_null(dev);
}

/* What device_caps claims is what the other tests exercise: every type as
 * a key, all but the QJL types as values, every rotation and scale mode,
 * head dims up to TKV_HEAD_DIM_MAX (test_format_conformance), any block
 * size (test_paged_identical: 1 .. 8192), any n_q per sequence
 * (option_shapes: 40), window, softcap, lse, mixed n_q, buffer_copy. */
static void test_device_caps(void **state)
{
    (void)state;
    struct tkv_device_caps caps;
    memset(&caps, 0xa5, sizeof caps);
    caps.struct_size = sizeof caps;
    assert_int_equal(env.p->device_caps(0, &caps), TKV_OK);
    assert_int_equal(caps.struct_size, sizeof caps);
    assert_int_equal(caps.features, TKV_CAP_PAGED | TKV_CAP_MIXED_NQ | TKV_CAP_WINDOW |
                                        TKV_CAP_SOFTCAP | TKV_CAP_LSE | TKV_CAP_BUFFER_COPY | TKV_CAP_ROTOR |
                                        TKV_CAP_OUTLIER_TYPES);
    uint32_t all = (1u << TKV_TYPE_COUNT) - 1u;
    assert_int_equal(caps.k_types, all);
    assert_int_equal(caps.v_types,
                     all & ~(1u << TKV_TYPE_TURBO3_QJL) & ~(1u << TKV_TYPE_TURBO4_QJL));
    assert_int_equal(caps.rotations, ((1u << TKV_ROTATION_COUNT) - 1u) & ~1u);
    assert_int_equal(caps.scale_modes, ((1u << TKV_SCALE_COUNT) - 1u) & ~1u);
    assert_int_equal(caps.head_dim_max, TKV_HEAD_DIM_MAX);
    assert_int_equal(caps.max_block_tokens, 0);
    assert_int_equal(caps.max_q_per_seq, 0);
    assert_true(caps.max_buffer_bytes >= (uint64_t)1 << (sizeof(size_t) == 8 ? 48 : 30));
    expect_error(env.p->device_caps(1, &caps), TKV_ERANGE, "device 1");
}

/* Device-side copies: between buffers and inside one, at odd offsets and
 * lengths, small and large (cut into pieces over 3 threads); the bytes
 * around the destination stay as they were. */
static void test_buffer_copy(void **state)
{
    (void)state;
    static const uint64_t sizes[] = { 1, 4093, ((uint64_t)9 << 20) + 123 };
    void *home = env.dev, *devs[2] = { env.dev, open_isa_ok("auto", 3) };
    for (int di = 0; di < 2; di++) {
        env.dev = devs[di];
        for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++) {
            uint64_t n = sizes[i], size = 2 * n + 64;
            uint8_t *src = xcalloc(size, 1), *dst = xcalloc(size, 1), *got = xcalloc(size, 1);
            for (uint64_t b = 0; b < size; b++) {
                src[b] = (uint8_t)rng_u64();
                dst[b] = (uint8_t)(b * 7 + 1);
            }
            void *a = buffer_new(size), *b = buffer_new(size);
            assert_int_equal(env.p->buffer_write(env.dev, a, 0, src, size), TKV_OK);
            assert_int_equal(env.p->buffer_write(env.dev, b, 0, dst, size), TKV_OK);
            /* a[5 ..] -> b[17 ..] */
            assert_int_equal(env.p->buffer_copy(env.dev, b, 17, a, 5, n), TKV_OK);
            memcpy(dst + 17, src + 5, n);
            assert_int_equal(env.p->buffer_read(env.dev, b, 0, got, size), TKV_OK);
            assert_memory_equal(got, dst, size);
            /* inside a: [3, 3 + n) -> [n + 40, 2n + 40) */
            assert_int_equal(env.p->buffer_copy(env.dev, a, n + 40, a, 3, n), TKV_OK);
            memmove(src + n + 40, src + 3, n);
            assert_int_equal(env.p->buffer_read(env.dev, a, 0, got, size), TKV_OK);
            assert_memory_equal(got, src, size);
            env.p->buffer_free(env.dev, a);
            env.p->buffer_free(env.dev, b);
            free(src);
            free(dst);
            free(got);
        }
    }
    env.dev = home;
    env.p->close(devs[1]);
}

/* What only the plugin can know fails cleanly and changes nothing; the
 * stats count what was done. */
static void test_plugin_checks(void **state)
{
    (void)state;
    struct tkv_device_stats before = { .struct_size = sizeof before }, after = before;
    void *never = NULL;
    assert_int_equal(env.p->stats(env.dev, &before), TKV_OK);
    expect_error(env.p->buffer_alloc(env.dev, UINT64_MAX, &never), TKV_ENOMEM, "bytes");
    assert_null(never);
    assert_int_equal(env.p->stats(env.dev, &after), TKV_OK);
    assert_int_equal(after.n_buffers, before.n_buffers);
    assert_int_equal(after.bytes_allocated, before.bytes_allocated);

    const struct attn_shape shape = { 64, 2, { 2, 1 }, { 9, 4 }, TKV_ROTATION_WHT,
                                      TKV_SCALE_NORM, 4 };
    struct attn_case c = shape_case(&shape, TKV_TYPE_TURBO3, TKV_TYPE_Q8_0);
    uint64_t total, skipped;
    case_build(&c);
    assert_int_equal(env.p->stats(env.dev, &after), TKV_OK);
    assert_int_equal(after.n_buffers, before.n_buffers + 2);
    assert_int_equal(after.bytes_allocated,
                     before.bytes_allocated + c.side[K].pool.bytes + c.side[V].pool.bytes);
    /* every row of each side, quantized once */
    assert_int_equal(after.rows_quantized, before.rows_quantized + 2 * (9 + 4) * c.n_kv);
    assert_int_equal(case_run(&c, 2.0f, 0.5f, c.out, NULL, &total, &skipped), TKV_OK);
    assert_int_equal(env.p->stats(env.dev, &after), TKV_OK);
    assert_int_equal(after.attention_calls, before.attention_calls + 1);
    assert_int_equal(after.rows_skipped, before.rows_skipped + skipped);
    assert_int_equal(total, case_rows_total(&c));
    case_free(&c);
    assert_int_equal(env.p->stats(env.dev, &after), TKV_OK);
    assert_int_equal(after.n_buffers, before.n_buffers);
    assert_int_equal(after.bytes_allocated, before.bytes_allocated);
}

int main(int argc, char **argv)
{
    env.path = argc > 1 ? argv[1] : getenv("TKV_TEST_CPU_PLUGIN");
    if (!env.path) {
        fprintf(stderr, "usage: %s PATH/turbokv-cpu.so (or set TKV_TEST_CPU_PLUGIN)\n", argv[0]);
        return 1;
    }
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_fp16_exhaustive),
        cmocka_unit_test(test_pack_roundtrip),
        cmocka_unit_test(test_descriptor_and_probe),
        cmocka_unit_test(test_device_caps),
        cmocka_unit_test(test_buffer_copy),
        cmocka_unit_test(test_plugin_checks),
        cmocka_unit_test(test_format_conformance),
        cmocka_unit_test(test_mse_unit_vectors),
        cmocka_unit_test(test_zero_rows),
        cmocka_unit_test(test_nonfinite_rows),
        cmocka_unit_test(test_attention_reference),
        cmocka_unit_test(test_sparse_v),
        cmocka_unit_test(test_isa_selection),
        cmocka_unit_test(test_attention_options),
        cmocka_unit_test(test_paged_identical),
        cmocka_unit_test(test_isa_quantize_identical),
        cmocka_unit_test(test_storage_hash),
        cmocka_unit_test(test_isa_attention_matches_reference),
        cmocka_unit_test(test_isa_edge_cases),
    };
    struct CMUnitTest chosen[sizeof tests / sizeof tests[0]];
    size_t n = 0;
    const char *exclude = getenv("TKV_TEST_EXCLUDE");
    for (size_t i = 0; i < sizeof tests / sizeof tests[0]; i++) {
        char patterns[512], *save = NULL;
        int match = argc <= 2, excluded = 0;
        snprintf(patterns, sizeof patterns, "%s", argc > 2 ? argv[2] : "");
        for (char *p = strtok_r(patterns, ",", &save); p && !match; p = strtok_r(NULL, ",", &save))
            match = fnmatch(p, tests[i].name, 0) == 0;
        snprintf(patterns, sizeof patterns, "%s", exclude ? exclude : "");
        for (char *p = strtok_r(patterns, ",", &save); p && !excluded; p = strtok_r(NULL, ",", &save))
            excluded = fnmatch(p, tests[i].name, 0) == 0;
        if (match && excluded)
            printf("%s: left out (TKV_TEST_EXCLUDE=%s)\n", tests[i].name, exclude);
        else if (match)
            chosen[n++] = tests[i];
    }
    if (n == 0) {
        fprintf(stderr, "%s: no test matches '%s'\n", argv[0], argv[2]);
        return 1;
    }
    return _cmocka_run_group_tests("tests", chosen, n, setup, teardown);
}
