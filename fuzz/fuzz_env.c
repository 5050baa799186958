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

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static char value[65536];
    struct tkv_config defaults, cfg;

    for (int k = 0; k < TKV_CFG_COUNT; k++)
        unsetenv(tkv_config_key_env((enum tkv_config_key)k));
    for (size_t i = 0; i < size;) {
        int key = data[i++] % TKV_CFG_COUNT;
        size_t n = 0;
        while (i < size && data[i] != 0 && n + 1 < sizeof value)
            value[n++] = (char)data[i++];
        value[n] = '\0';
        i++; /* the NUL */
        setenv(tkv_config_key_env((enum tkv_config_key)key), value, 1);
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
