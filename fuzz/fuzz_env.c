/* SPDX-License-Identifier: MIT */
/*
 * The TURBO_* environment (core/config.c, tkv_config_apply_env): the input
 * sets variables, as records of one byte choosing the variable (modulo the
 * number of keys) followed by its value up to a NUL byte or the end. Every
 * variable is unset before each input.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "fuzz_config_common.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* "NAME=value" of each variable. putenv() puts these very buffers in the
 * environment: setenv() would copy every value and glibc never frees the
 * copies, so memory would grow with every input until libFuzzer's RSS
 * limit stops the run. */
static char assignment[TKV_CFG_COUNT][65536];

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct tkv_config defaults, cfg;

    for (int k = 0; k < TKV_CFG_COUNT; k++)
        unsetenv(tkv_config_key_env((enum tkv_config_key)k));
    for (size_t i = 0; i < size;) {
        int key = data[i++] % TKV_CFG_COUNT;
        char *a = assignment[key];
        size_t n = (size_t)snprintf(a, sizeof assignment[key], "%s=", tkv_config_key_env((enum tkv_config_key)key));
        while (i < size && data[i] != 0 && n + 1 < sizeof assignment[key])
            a[n++] = (char)data[i++];
        a[n] = '\0';
        i++; /* the NUL */
        putenv(a);
    }

    tkv_config_defaults(&defaults);
    memcpy(&cfg, &defaults, sizeof cfg);
    int rc = tkv_config_apply_env(&cfg);
    if (rc != TKV_OK) {
        FUZZ_CHECK(rc == TKV_ECONFIG, "returned %d: %s", rc, tkv_last_error());
        check_unchanged(&cfg, &defaults, "tkv_config_apply_env");
        FUZZ_CHECK(strncmp(tkv_last_error(), "TURBO_", 6) == 0, "message '%s' does not name the variable",
                   tkv_last_error());
    } else {
        check_round_trip(&cfg);
    }
    return 0;
}
