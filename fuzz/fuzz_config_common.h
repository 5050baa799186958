/* SPDX-License-Identifier: MIT */
/*
 * Invariants every configuration fuzzer checks after a call: a failure
 * leaves the configuration byte for byte as it was, and a success leaves
 * one whose every value, as tkv_config_format writes it, is accepted again
 * and reads back as the same value (what `turbokv info` shows can be
 * pasted into a file or a variable).
 */
#ifndef TKV_FUZZ_CONFIG_COMMON_H
#define TKV_FUZZ_CONFIG_COMMON_H

#include <string.h>

#include "config.h"
#include "fuzz_file.h"

static void check_unchanged(const struct tkv_config *cfg, const struct tkv_config *before, const char *what)
{
    FUZZ_CHECK(memcmp(cfg, before, sizeof *cfg) == 0, "%s failed (%s) but changed the configuration", what,
               tkv_last_error());
}

static void check_round_trip(const struct tkv_config *cfg)
{
    static char text[16384], again[16384];
    for (int k = 0; k < TKV_CFG_COUNT; k++) {
        struct tkv_config copy;
        memcpy(&copy, cfg, sizeof copy);
        tkv_config_format(cfg, (enum tkv_config_key)k, text, sizeof text);
        int rc = tkv_config_set(&copy, (enum tkv_config_key)k, text, TKV_SOURCE_API, "API");
        FUZZ_CHECK(rc == TKV_OK, "key %s: its formatted value '%s' is refused: %s",
                   tkv_config_key_name((enum tkv_config_key)k), text, tkv_last_error());
        tkv_config_format(&copy, (enum tkv_config_key)k, again, sizeof again);
        FUZZ_CHECK(strcmp(text, again) == 0, "key %s: '%s' reads back as '%s'",
                   tkv_config_key_name((enum tkv_config_key)k), text, again);
    }
}

#endif
