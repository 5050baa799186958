/* SPDX-License-Identifier: MIT */
/*
 * The fidelity metrics of `turbokv eval` (tools/fidelity.c) on inputs whose
 * answers are known: cosine similarity, top-1 / top-5 argmax agreement and
 * the needle planting (its lead over the other scores, and that a small
 * score error keeps a needle while one larger than its lead loses it).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <math.h>
#include <stdlib.h>

#include <cmocka.h>

#include "fidelity.h"

static uint64_t rng_state = 0x666964656c697479ull; /* "fidelity" */

static double rng_gauss(void)
{
    uint64_t z[2];
    for (int i = 0; i < 2; i++) {
        uint64_t x = (rng_state += 0x9E3779B97F4A7C15ull);
        x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
        x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
        z[i] = x ^ (x >> 31);
    }
    double u1 = ((double)(z[0] >> 11) + 0.5) * 0x1p-53, u2 = (double)(z[1] >> 11) * 0x1p-53;
    return sqrt(-2.0 * log(u1)) * cos(6.283185307179586 * u2);
}

static void cosine_of_known_angles(void **state)
{
    (void)state;
    /* rows: equal, opposite, 45 degrees, a zero row (skipped), scaled copy */
    const float x[] = { 1, 2, 3, 4, 1, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 1, -1, 2, 0.5f };
    const float y[] = { 1, 2, 3, 4, -1, 0, 0, 0, 1, 1, 0, 0, 1, 2, 3, 4, 3, -3, 6, 1.5f };
    size_t counted = 0;
    double sum = fid_cosine_sum(x, y, 5, 4, &counted);
    assert_int_equal(counted, 4);
    assert_true(fabs(sum - (1.0 - 1.0 + sqrt(0.5) + 1.0)) < 1e-12);
    assert_true(fabs(fid_cosine_sum(x + 8, y + 8, 1, 4, NULL) - sqrt(0.5)) < 1e-12);
}

static void topk_agreement_by_rank(void **state)
{
    (void)state;
    const double exact[8] = { 0, 1, 2, 9, 4, 5, 6, 7 }; /* argmax 3 */
    const double same[8] = { 0, 1, 2, 9, 4, 5, 6, 7 };
    const double second[8] = { 0, 1, 2, 8, 4, 5, 6, 9 };  /* 3 ranks 2nd */
    const double fifth[8] = { 0, 1, 9, 5, 9, 9, 9, 0 };   /* 3 ranks 5th */
    const double sixth[8] = { 9, 1, 9, 5, 9, 9, 9, 0 };   /* 3 ranks 6th */
    const double tied[8] = { 0, 1, 2, 9, 4, 5, 6, 9 };    /* a tie counts against */
    struct fid_topk a = { 0 };
    assert_int_equal(fid_argmax(exact, 8), 3);
    fid_topk_add(exact, same, 8, &a);
    assert_true(a.rows == 1 && a.top1 == 1 && a.top5 == 1);
    fid_topk_add(exact, second, 8, &a);
    assert_true(a.rows == 2 && a.top1 == 1 && a.top5 == 2);
    fid_topk_add(exact, fifth, 8, &a);
    assert_true(a.rows == 3 && a.top1 == 1 && a.top5 == 3);
    fid_topk_add(exact, sixth, 8, &a);
    assert_true(a.rows == 4 && a.top1 == 1 && a.top5 == 3);
    fid_topk_add(exact, tied, 8, &a);
    assert_true(a.rows == 5 && a.top1 == 1 && a.top5 == 4);
}

#define N_CTX 4096u
#define DIM 64u

static void needle_leads_by_margin(void **state)
{
    (void)state;
    float *k = malloc(sizeof *k * N_CTX * DIM), q[DIM];
    double *s = malloc(sizeof *s * N_CTX);
    assert_non_null(k);
    assert_non_null(s);
    for (size_t i = 0; i < (size_t)N_CTX * DIM; i++)
        k[i] = (float)rng_gauss();
    for (uint32_t i = 0; i < DIM; i++)
        q[i] = (float)rng_gauss();
    const uint32_t pos = 1234;
    const double margin = 0.2;
    fid_scores(k, DIM, N_CTX, q, DIM, s);
    fid_needle_plant(k, DIM, N_CTX, q, DIM, pos, margin, s);
    double again;
    fid_scores(k + (size_t)pos * DIM, DIM, 1, q, DIM, &again);
    assert_true(fabs(again - s[pos]) < 1e-9 * fabs(again)); /* scores[] updated at pos */
    assert_int_equal(fid_argmax(s, N_CTX), pos);
    double best = -INFINITY, mean = 0.0, var = 0.0;
    for (uint32_t j = 0; j < N_CTX; j++) {
        mean += s[j] / N_CTX;
        if (j != pos)
            best = fmax(best, s[j]);
    }
    for (uint32_t j = 0; j < N_CTX; j++)
        var += (s[j] - mean) * (s[j] - mean) / N_CTX;
    double lead = (s[pos] - best) / sqrt(var);
    /* the std after planting differs from the one used by the needle's own move: O(1/N_CTX) */
    assert_true(fabs(lead - margin) < 0.01);

    /* a score error a tenth of the lead keeps the needle; lowering the
     * needle's score by twice the lead loses it */
    double *noisy = malloc(sizeof *noisy * N_CTX);
    assert_non_null(noisy);
    for (uint32_t j = 0; j < N_CTX; j++)
        noisy[j] = s[j] + 0.1 * margin * sqrt(var) * (j % 2 ? 1.0 : -1.0) * 0.5;
    assert_int_equal(fid_argmax(noisy, N_CTX), pos);
    noisy[pos] = s[pos] - 2.0 * margin * sqrt(var);
    assert_int_not_equal(fid_argmax(noisy, N_CTX), pos);
    free(noisy);
    free(k);
    free(s);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(cosine_of_known_angles),
        cmocka_unit_test(topk_agreement_by_rank),
        cmocka_unit_test(needle_leads_by_margin),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
