/* SPDX-License-Identifier: MIT */
/*
 * Byte comparison of two caches through their saved files (tkv_cache_save),
 * for the tests that check a backend stores the cpu plugin's bytes
 * (test_backends.c, test_sum_order.c). Include after cmocka.h and
 * turbokv.h.
 */
#ifndef TKV_TEST_SAVED_BYTES_H
#define TKV_TEST_SAVED_BYTES_H

#include <stdio.h>
#include <stdlib.h>

static unsigned char *saved_slurp(const char *path, long *size)
{
    FILE *f = fopen(path, "rb");
    assert_non_null(f);
    fseek(f, 0, SEEK_END);
    *size = ftell(f);
    rewind(f);
    unsigned char *b = malloc(*size);
    assert_int_equal(fread(b, 1, *size, f), *size);
    fclose(f);
    return b;
}

/* Saves both caches into dir and compares the files, the trailing checksum
 * excluded; returns the number of differing bytes (the files are removed). */
static long compare_saved_in(const char *dir, tkv_cache *a, tkv_cache *b)
{
    char pa[600], pb[600];
    snprintf(pa, sizeof pa, "%s/a.tkv", dir);
    snprintf(pb, sizeof pb, "%s/b.tkv", dir);
    assert_int_equal(tkv_cache_save(a, pa), TKV_OK);
    assert_int_equal(tkv_cache_save(b, pb), TKV_OK);
    long na, nb, diff = 0;
    unsigned char *fa = saved_slurp(pa, &na), *fb = saved_slurp(pb, &nb);
    assert_int_equal(na, nb);
    for (long i = 0; i < na - 8; i++)
        diff += fa[i] != fb[i];
    free(fa);
    free(fb);
    remove(pa);
    remove(pb);
    return diff;
}

#endif
