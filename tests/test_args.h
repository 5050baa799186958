/* SPDX-License-Identifier: MIT */
/*
 * Command-line arguments of the test programs that run as variants (meson
 * test backend-vulkan-merge, host-vulkan-shift, ...): NAME=VALUE arguments
 * set the environment before the backend is opened (its knobs), and
 * TKV_TESTS=NAME,NAME runs only the tests it names. Include after
 * cmocka.h.
 */
#ifndef TKV_TEST_ARGS_H
#define TKV_TEST_ARGS_H

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Sets NAME=VALUE for each of argv[first..argc), printing each; 0, or 2
 * (after a message) for an argument without '='. */
static int set_env_args(const char *prog, int argc, char **argv, int first)
{
    for (int i = first; i < argc; i++) {
        char *eq = strchr(argv[i], '=');
        if (!eq) {
            fprintf(stderr, "%s: '%s' is not NAME=VALUE\n", prog, argv[i]);
            return 2;
        }
        *eq = '\0';
        setenv(argv[i], eq + 1, 1);
        printf("%s: %s=%s\n", prog, argv[i], eq + 1);
    }
    return 0;
}

/* TKV_TESTS: a comma-separated list of test names. The entry after the
 * one at p; whether the entry at p is the whole of name. */
static const char *next_entry(const char *p)
{
    return p + strcspn(p, ",") + (p[strcspn(p, ",")] != 0);
}

static int is_name(const char *p, const char *name)
{
    return strlen(name) == strcspn(p, ",") && !strncmp(p, name, strlen(name));
}

/* The tests of all[n_all] that TKV_TESTS names (all of them without it)
 * into tests, their count into *n; 0, or 2 (after a message) where it
 * names a test that is not in all or names none. */
static int select_tests(const char *prog, const struct CMUnitTest *all, size_t n_all, struct CMUnitTest *tests,
                        size_t *n)
{
    const char *only = getenv("TKV_TESTS");
    *n = 0;
    for (size_t i = 0; i < n_all; i++) {
        int listed = !only;
        for (const char *p = only; p && *p; p = next_entry(p))
            listed |= is_name(p, all[i].name);
        if (listed)
            tests[(*n)++] = all[i];
    }
    for (const char *p = only; p && *p; p = next_entry(p)) {
        size_t i = 0;
        while (i < n_all && !is_name(p, all[i].name))
            i++;
        if (*p != ',' && i == n_all) {
            fprintf(stderr, "%s: TKV_TESTS names '%.*s', which is no test here\n", prog, (int)strcspn(p, ","), p);
            return 2;
        }
    }
    if (*n == 0) {
        fprintf(stderr, "%s: TKV_TESTS='%s' names no test\n", prog, only);
        return 2;
    }
    return 0;
}

#endif
