/* SPDX-License-Identifier: MIT */
/*
 * A host in another floating-point environment than the format's rules
 * assume (abi/turbokv_fpenv.h): code built with -ffast-math runs with the
 * x86 flush-to-zero and denormals-are-zero modes set (aarch64: FPCR.FZ), an
 * engine may round upwards or towards zero. The cpu plugin must store the
 * same bytes and attend to the same bits as in the default environment,
 * the core must compute the same tables, and each call must give the
 * host's environment back as it found it.
 */
#include <fenv.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>

#include "tables.h"
#include "turbokv.h"

#if defined(__x86_64__) || defined(__i386__)
#include <xmmintrin.h>
#define HAVE_FLUSH 1
static unsigned long flush_get(void) { return _mm_getcsr(); }
static void flush_set(unsigned long v) { _mm_setcsr((unsigned int)v); }
#define FLUSH_BITS 0x8040ul /* FTZ | DAZ */
#elif defined(__aarch64__)
#define HAVE_FLUSH 1
static unsigned long flush_get(void)
{
    unsigned long v;
    __asm__ __volatile__("mrs %0, fpcr" : "=r"(v));
    return v;
}
static void flush_set(unsigned long v) { __asm__ __volatile__("msr fpcr, %0" : : "r"(v)); }
#define FLUSH_BITS (1ul << 24) /* FZ */
#else
#define HAVE_FLUSH 0
#endif

/* An environment a host may run in: subnormals flushed or not, a rounding mode. */
struct mode {
    const char *name;
    int flush;
    int round;
};

static const struct mode modes[] = {
    { "flush-to-zero and denormals-are-zero", 1, FE_TONEAREST },
    { "rounding upwards", 0, FE_UPWARD },
    { "rounding towards zero", 0, FE_TOWARDZERO },
    { "flushing and rounding downwards", 1, FE_DOWNWARD },
};

struct saved_env {
    fenv_t env;
#if HAVE_FLUSH
    unsigned long reg;
#endif
};

static struct saved_env enter_mode(const struct mode *m)
{
    struct saved_env s;
    fegetenv(&s.env);
#if HAVE_FLUSH
    s.reg = flush_get();
    if (m->flush)
        flush_set(s.reg | FLUSH_BITS);
#endif
    fesetround(m->round);
    return s;
}

static void leave_mode(const struct saved_env *s)
{
    fesetenv(&s->env);
#if HAVE_FLUSH
    flush_set(s->reg);
#endif
}

/* The host's environment as a call must leave it: the control bits. */
static unsigned long env_now(void)
{
#if HAVE_FLUSH && (defined(__x86_64__) || defined(__i386__))
    return (flush_get() & ~0x3ful) << 8 | (unsigned long)fegetround(); /* less MXCSR's status flags */
#elif HAVE_FLUSH
    return flush_get() << 8 | (unsigned long)fegetround();
#else
    return (unsigned long)fegetround();
#endif
}

static uint32_t rng = 0x66706e76u; /* "fpnv" */

static uint32_t next(void)
{
    rng = rng * 1664525u + 1013904223u;
    return rng;
}

static float from_bits(uint32_t b)
{
    float f;
    memcpy(&f, &b, sizeof f);
    return f;
}

enum { HEADS = 2, TOKENS = 24, Q_HEADS = 4 };
static const uint32_t dims[] = { 64, 128 };
static const uint32_t types[] = { TKV_TYPE_F16, TKV_TYPE_Q8_0, TKV_TYPE_TURBO2, TKV_TYPE_TURBO3, TKV_TYPE_TURBO4,
                                  TKV_TYPE_TURBO3_OUT, TKV_TYPE_TURBO4_OUT };
#define N_TYPES (sizeof types / sizeof *types)
#define N_DIMS (sizeof dims / sizeof *dims)

/* (Made in the host's mode: every value exact in any.) Rows whose bytes
 * depend on the environment: all subnormal, near FLT_MIN
 * (their rotation's sums and differences are subnormal), subnormals among
 * normals, and ordinary values; one row in four each. */
static void fill(float *x, uint32_t n_tokens, uint32_t row)
{
    for (uint32_t i = 0; i < n_tokens * row; i++) {
        const uint32_t b = next();
        switch ((i / row) % 4) {
        case 0: x[i] = from_bits(b & 0x807fffffu); break;
        case 1: x[i] = from_bits((b & 0x80ffffffu) | 0x00800000u); break;
        case 2: x[i] = i % 3 ? from_bits(b & 0x807fffffu) : from_bits((b & 0x807fffffu) | 0x3e000000u); break;
        default: x[i] = (float)((int32_t)(b % 16385u) - 8192) * 0x1p-13f; break; /* exact in any mode */
        }
    }
}

/* What one context stores and attends for every type and head_dim: the
 * sequence images and the attention's output bits, concatenated. */
struct result {
    unsigned char *bytes;
    size_t n;
    size_t ends[3 * N_TYPES * N_DIMS]; /* where each case's image, output and dequantized keys end */
    size_t n_ends;
};

static void add(struct result *r, const void *p, size_t n)
{
    r->bytes = realloc(r->bytes, r->n + n);
    assert_non_null(r->bytes);
    memcpy(r->bytes + r->n, p, n);
    r->n += n;
    r->ends[r->n_ends++] = r->n;
}

/* Runs everything in mode m (NULL: the default), the context opened in it
 * too (the cpu plugin's threads start in the environment of the thread
 * that opens it); checks after every call that the mode is still the
 * host's. */
static struct result run(const struct mode *m)
{
    struct result r = { 0 };
    struct saved_env saved;
    if (m)
        saved = enter_mode(m);
    const unsigned long host = env_now();
    struct tkv_context_options o = { .struct_size = sizeof o, .backend = "cpu" };
    tkv_context *ctx = NULL;
    int rc = tkv_context_open(&o, &ctx);
    if (rc != TKV_OK) {
        if (m)
            leave_mode(&saved);
        fail_msg("open: %s", tkv_last_error());
    }
    assert_true(env_now() == host);
    rng = 0x66706e76u;
    for (size_t d = 0; d < N_DIMS; d++)
        for (size_t t = 0; t < N_TYPES; t++) {
            const uint32_t hd = dims[d], row = HEADS * hd;
            float *k = malloc(sizeof *k * TOKENS * row), *v = malloc(sizeof *v * TOKENS * row);
            float *q = malloc(sizeof *q * Q_HEADS * hd), *out = malloc(sizeof *out * Q_HEADS * hd);
            float *deq = malloc(sizeof *deq * TOKENS * row);
            assert_true(k && v && q && out && deq);
            fill(k, TOKENS, row);
            fill(v, TOKENS, row);
            for (uint32_t i = 0; i < Q_HEADS * hd; i++)
                q[i] = (float)((int32_t)(next() % 2049u) - 1024) * 0x1p-10f;
            struct tkv_cache_params p = {
                .struct_size = sizeof p, .n_layers = 1, .n_kv_heads = HEADS, .head_dim = hd, .capacity = TOKENS,
                .k_type = types[t], .v_type = types[t], .n_q_heads = Q_HEADS,
            };
            tkv_cache *c = NULL;
            uint32_t seq = 0;
            size_t n = 0;
            rc = tkv_cache_create(ctx, &p, &c);
            if (rc == TKV_OK)
                rc = tkv_cache_append(c, 0, 0, TOKENS, k, v);
            const int appended = env_now() == host;
            if (rc == TKV_OK)
                rc = tkv_attention(c, 0, 1, &seq, 1, Q_HEADS, q, out, NULL);
            const int attended = env_now() == host;
            if (rc == TKV_OK)
                rc = tkv_cache_dequantize(c, 0, 0, 0, 0, TOKENS, deq);
            const int dequantized = env_now() == host;
            unsigned char *img = NULL;
            if (rc == TKV_OK && (rc = tkv_seq_state_size(c, 0, &n)) == TKV_OK && (img = malloc(n)))
                rc = tkv_seq_state_get(c, 0, img, n, &n);
            if (m)
                leave_mode(&saved); /* cmocka's checks in the default environment */
            if (rc != TKV_OK)
                fail_msg("%s head_dim %u: %s", tkv_type_name(types[t]), hd, tkv_last_error());
            if (!appended || !attended || !dequantized)
                fail_msg("%s head_dim %u: the host's floating-point environment changed by %s", tkv_type_name(types[t]),
                         hd, !appended ? "tkv_cache_append" : !attended ? "tkv_attention" : "tkv_cache_dequantize");
            assert_non_null(img);
            add(&r, img, n);
            add(&r, out, sizeof *out * Q_HEADS * hd);
            add(&r, deq, sizeof *deq * TOKENS * row);
            free(img);
            free(deq);
            tkv_cache_destroy(c);
            free(k);
            free(v);
            free(q);
            free(out);
            if (m)
                saved = enter_mode(m);
        }
    tkv_context_close(ctx);
    if (m)
        leave_mode(&saved);
    return r;
}

static void rows_under_host_modes(void **state)
{
    (void)state;
    const struct result want = run(NULL);
    for (size_t i = 0; i < sizeof modes / sizeof *modes; i++) {
        if (modes[i].flush && !HAVE_FLUSH)
            continue;
        const struct result got = run(&modes[i]);
        assert_int_equal(got.n, want.n);
        size_t diff = 0, first = want.n;
        for (size_t b = 0; b < want.n; b++)
            if (got.bytes[b] != want.bytes[b]) {
                diff++;
                first = first < b ? first : b;
            }
        if (diff) {
            size_t c = 0;
            while (want.ends[c] <= first)
                c++;
            fail_msg("host %s: %zu of %zu bytes differ, the first in the %s of %s at head_dim %u", modes[i].name,
                     diff, want.n, c % 3 == 0 ? "stored rows" : c % 3 == 1 ? "attention output" : "dequantized keys",
                     tkv_type_name(types[c / 3 % N_TYPES]), dims[c / 3 / N_TYPES]);
        }
        free(got.bytes);
    }
    free(want.bytes);
}

/* The tables of a seed, computed once per process: in a child that starts
 * in each mode (forked before this process computes them: a child would
 * inherit them), against this process's, computed in the default one. */
static void tables_under_host_modes(void **state)
{
    (void)state;
    const uint64_t seed = 0x746f6b656e5f6670ull;
    uint64_t ids[sizeof modes / sizeof *modes] = { 0 };
    for (size_t i = 0; i < sizeof modes / sizeof *modes; i++) {
        if (modes[i].flush && !HAVE_FLUSH)
            continue;
        int fd[2];
        assert_int_equal(pipe(fd), 0);
        pid_t pid = fork();
        assert_true(pid >= 0);
        if (pid == 0) {
            close(fd[0]);
            struct saved_env saved = enter_mode(&modes[i]);
            const struct tkv_math *m = tkv_tables_get(seed);
            leave_mode(&saved);
            uint64_t id = m ? m->tables_id : 0;
            _exit(write(fd[1], &id, sizeof id) == (ssize_t)sizeof id ? 0 : 1);
        }
        close(fd[1]);
        uint64_t id = 0;
        const ssize_t got = read(fd[0], &id, sizeof id);
        close(fd[0]);
        int status = 0;
        assert_int_equal(waitpid(pid, &status, 0), pid);
        assert_int_equal(got, (ssize_t)sizeof id);
        assert_true(id != 0); /* the child computed its tables */
        ids[i] = id;
    }
    const struct tkv_math *math = tkv_tables_get(seed);
    assert_non_null(math);
    for (size_t i = 0; i < sizeof modes / sizeof *modes; i++)
        if (ids[i] && ids[i] != math->tables_id)
            fail_msg("host %s: tables_id 0x%016llx, in the default environment 0x%016llx", modes[i].name,
                     (unsigned long long)ids[i], (unsigned long long)math->tables_id);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(rows_under_host_modes),
        cmocka_unit_test(tables_under_host_modes),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
