/* SPDX-License-Identifier: MIT */
/*
 * core/tables.c: the Lloyd-Max codebooks, sign vectors, dense rotations and
 * tables_id, each checked against an independent computation.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <math.h>
#include <pthread.h>
#include <string.h>
#include <time.h>

#include "tables.h"

#define SEED TKV_ROTATION_SEED_DEFAULT

static const struct tkv_math *math; /* tables for SEED, from the group setup */

static double now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

/* The first call in the process computes every table: that is what every
 * process start pays. */
static int setup(void **state)
{
    (void)state;
    double t0 = now_ms();
    math = tkv_tables_get(SEED);
    print_message("tables for every group size and b = 2, 3, 4 computed in %.2f ms "
                  "(budget: well under 50 ms)\n", now_ms() - t0);
    return math ? 0 : -1;
}

/* ---- independent numeric integration ------------------------------------ */

/* 8-point Gauss-Legendre on [-1, 1]. */
static const double gl_x[4] = { 0.1834346424956498, 0.5255324099163290, 0.7966664774136267,
                                0.9602898564975363 };
static const double gl_w[4] = { 0.3626837833783620, 0.3137066458778873, 0.2223810344533745,
                                0.1012285362903763 };

/* Unnormalized coordinate density of a unit vector in R^g (paper, Lemma 1). */
static double density(uint32_t g, double t)
{
    double c2 = (1.0 - t) * (1.0 + t);
    return c2 > 0.0 ? pow(c2, (g - 3) / 2.0) : 0.0;
}

/* int_lo^hi (t - center)^power f(t) dt by composite Gauss-Legendre on
 * panels of at most 1/(32 sqrt(g)): the density's width is 1/sqrt(g), so the
 * panels scale with it. */
static double integrate(uint32_t g, double lo, double hi, double center, int power)
{
    double width = 1.0 / (32.0 * sqrt((double)g));
    int panels = (int)ceil((hi - lo) / width);
    double h = (hi - lo) / panels, sum = 0.0;
    for (int p = 0; p < panels; p++) {
        double mid = lo + (p + 0.5) * h;
        for (int k = 0; k < 4; k++)
            for (int sign = -1; sign <= 1; sign += 2) {
                double t = mid + sign * gl_x[k] * h / 2;
                sum += gl_w[k] * h / 2 * pow(t - center, power) * density(g, t);
            }
    }
    return sum;
}

/* ---- codebooks ------------------------------------------------------------ */

static void test_codebook_shape(void **state)
{
    (void)state;
    for (uint32_t gi = 0; gi < TKV_N_GROUP_SIZES; gi++) {
        const struct tkv_group_tables *t = &math->groups[gi];
        assert_int_equal(t->group, TKV_GROUP_MIN << gi);
        assert_int_equal(tkv_group_index(t->group), (int)gi);
        for (uint32_t b = 0; b < TKV_N_CODEBOOK_BITS; b++) {
            const struct tkv_codebook *cb = &t->codebook[b];
            uint32_t n = cb->n_levels;
            assert_int_equal(cb->bits, b + TKV_TURBO_BITS_MIN);
            assert_int_equal(n, 1u << cb->bits);
            for (uint32_t i = 0; i < n; i++) {
                assert_true(cb->centroids[i] == -cb->centroids[n - 1 - i]);
                assert_true(cb->centroid_sq[i] == cb->centroids[i] * cb->centroids[i]);
                assert_true(fabsf(cb->centroids[i]) < 1.0f);
                if (i + 1 < n) {
                    assert_true(cb->centroids[i] < cb->centroids[i + 1]);
                    assert_true(cb->boundaries[i] ==
                                0.5f * (cb->centroids[i] + cb->centroids[i + 1]));
                }
            }
            assert_true(cb->boundaries[n / 2 - 1] == 0.0f);
        }
    }
}

/* The Lloyd-Max optimum at g = 128 (the paper: about 0.117 / 0.03 / 0.009). */
static void test_codebook_mse_g128(void **state)
{
    (void)state;
    static const double optimum[TKV_N_CODEBOOK_BITS] = { 0.1160, 0.0340, 0.00931 };
    for (uint32_t gi = 0; gi < TKV_N_GROUP_SIZES; gi++) {
        const struct tkv_group_tables *t = &math->groups[gi];
        print_message("g = %3u: per-vector MSE b=2 %.6f  b=3 %.6f  b=4 %.6f\n", t->group,
                      t->codebook[0].mse, t->codebook[1].mse, t->codebook[2].mse);
    }
    const struct tkv_group_tables *t = &math->groups[tkv_group_index(128)];
    for (uint32_t b = 0; b < TKV_N_CODEBOOK_BITS; b++) {
        double mse = t->codebook[b].mse;
        print_message("g = 128, b = %u: MSE %.6f vs optimum %.5f (%+.3f%%)\n", b + 2, mse,
                      optimum[b], 100.0 * (mse / optimum[b] - 1.0));
        assert_true(fabs(mse / optimum[b] - 1.0) < 0.005);
        /* above the information-theoretic bound 4^-b (paper, Theorem 3) */
        assert_true(mse > pow(4.0, -(double)(b + 2)));
    }
}

/* Lloyd-Max conditions, by quadrature independent of tables.c's closed forms:
 * every centroid is the conditional mean of its cell, and the mse field is
 * g * E[(t - c(t))^2]. */
static void test_codebook_fixed_point(void **state)
{
    (void)state;
    double worst = 0.0;
    for (uint32_t gi = 0; gi < TKV_N_GROUP_SIZES; gi++) {
        const struct tkv_group_tables *t = &math->groups[gi];
        uint32_t g = t->group;
        double sigma = 1.0 / sqrt((double)g), total = 2.0 * integrate(g, 0.0, 1.0, 0.0, 0);
        for (uint32_t b = 0; b < TKV_N_CODEBOOK_BITS; b++) {
            const struct tkv_codebook *cb = &t->codebook[b];
            double distortion = 0.0;
            for (uint32_t i = 0; i < cb->n_levels; i++) {
                double lo = i == 0 ? -1.0 : cb->boundaries[i - 1];
                double hi = i + 1 == cb->n_levels ? 1.0 : cb->boundaries[i];
                double mass = integrate(g, lo, hi, 0.0, 0);
                double mean = integrate(g, lo, hi, 0.0, 1) / mass;
                double off = fabs(mean - cb->centroids[i]) / sigma;
                worst = fmax(worst, off);
                /* float centroids: 6e-8 relative; the float boundaries move the
                 * conditional mean by about as much */
                assert_true(off < 5e-7);
                distortion += integrate(g, lo, hi, cb->centroids[i], 2);
            }
            double mse = g * distortion / total;
            assert_true(fabs(mse / cb->mse - 1.0) < 1e-5);
        }
    }
    print_message("largest |centroid - conditional mean| = %.2e standard deviations\n", worst);
}

/* ---- rotations ------------------------------------------------------------ */

static uint64_t splitmix64(uint64_t *s)
{
    uint64_t z = (*s += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

/* turbokv_format.h's documentation of D1, D2, followed literally. */
static void test_signs(void **state)
{
    (void)state;
    for (uint32_t gi = 0; gi < TKV_N_GROUP_SIZES; gi++) {
        const struct tkv_group_tables *t = &math->groups[gi];
        uint32_t g = t->group, minus = 0, differ = 0;
        uint64_t s = SEED ^ (g * 0x9E3779B97F4A7C15ull);
        for (uint32_t i = 0; i < 2 * g; i++) {
            float expect = (splitmix64(&s) >> 63) ? -1.0f : 1.0f;
            float got = i < g ? t->sign1[i] : t->sign2[i - g];
            assert_true(got == expect);
            minus += got < 0.0f;
        }
        for (uint32_t i = 0; i < g; i++)
            differ += t->sign1[i] != t->sign2[i];
        assert_true(minus > 0 && minus < 2 * g);
        assert_true(differ > 0);
    }
}

static void test_dense_orthogonal(void **state)
{
    (void)state;
    for (uint32_t gi = 0; gi < TKV_N_GROUP_SIZES; gi++) {
        const struct tkv_group_tables *t = &math->groups[gi];
        uint32_t g = t->group;
        const float *q = t->dense;
        double worst_rows = 0.0, worst_cols = 0.0;
        for (uint32_t i = 0; i < g; i++)
            for (uint32_t j = 0; j < g; j++) {
                double rows = 0.0, cols = 0.0;
                for (uint32_t k = 0; k < g; k++) {
                    rows += (double)q[i * g + k] * q[j * g + k];
                    cols += (double)q[k * g + i] * q[k * g + j];
                }
                worst_rows = fmax(worst_rows, fabs(rows - (i == j)));
                worst_cols = fmax(worst_cols, fabs(cols - (i == j)));
            }
        print_message("g = %3u: max |Q Q^T - I| = %.1e, max |Q^T Q - I| = %.1e\n", g, worst_rows,
                      worst_cols);
        assert_true(worst_rows < 1e-5 && worst_cols < 1e-5);
    }
}

/* ---- identity and caching -------------------------------------------------- */

static void *get_in_thread(void *seed) { return (void *)tkv_tables_get(*(uint64_t *)seed); }

static void test_tables_id(void **state)
{
    (void)state;
    const struct tkv_math *again = tkv_tables_get(SEED);
    assert_ptr_equal(again, math);
    assert_true(again->tables_id == math->tables_id);
    assert_true(math->rotation_seed == SEED);
    assert_int_equal(math->struct_size, sizeof *math);

    /* Concurrent first calls for a new seed agree on one table. */
    uint64_t other_seed = SEED + 1;
    pthread_t threads[4];
    void *got[4];
    for (int i = 0; i < 4; i++)
        assert_int_equal(pthread_create(&threads[i], NULL, get_in_thread, &other_seed), 0);
    for (int i = 0; i < 4; i++) {
        assert_int_equal(pthread_join(threads[i], &got[i]), 0);
        assert_ptr_equal(got[i], got[0]);
    }
    const struct tkv_math *other = got[0];
    assert_non_null(other);
    assert_ptr_not_equal(other, math);
    assert_true(other->tables_id != math->tables_id);

    /* The seed moves the rotations only; codebooks depend on g and b. */
    for (uint32_t gi = 0; gi < TKV_N_GROUP_SIZES; gi++) {
        const struct tkv_group_tables *a = &math->groups[gi], *b = &other->groups[gi];
        for (uint32_t k = 0; k < TKV_N_CODEBOOK_BITS; k++)
            assert_memory_equal(a->codebook[k].centroids, b->codebook[k].centroids,
                                sizeof(float) * a->codebook[k].n_levels);
        assert_memory_not_equal(a->dense, b->dense, sizeof(float) * a->group * a->group);
    }
    print_message("tables_id 0x%016llx (seed 0x%016llx), 0x%016llx (seed + 1)\n",
                  (unsigned long long)math->tables_id, (unsigned long long)SEED,
                  (unsigned long long)other->tables_id);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_codebook_shape),
        cmocka_unit_test(test_codebook_mse_g128),
        cmocka_unit_test(test_codebook_fixed_point),
        cmocka_unit_test(test_signs),
        cmocka_unit_test(test_dense_orthogonal),
        cmocka_unit_test(test_tables_id),
    };
    return cmocka_run_group_tests(tests, setup, NULL);
}
