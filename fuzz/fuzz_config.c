/* SPDX-License-Identifier: MIT */
/*
 * The YAML configuration file (core/config.c, tkv_config_apply_file and
 * its secure variant): the input is the file. Both variants must agree on
 * success or failure and on the result; the secure one's messages must not
 * quote the file (they carry FILE:LINE and a fixed kind of error only).
 */
#include <stdint.h>
#include <string.h>

#include "fuzz_config_common.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static char message[1024];
    struct tkv_config defaults, cfg, secure;
    const char *path = fuzz_file(data, size);

    tkv_config_defaults(&defaults);
    memcpy(&cfg, &defaults, sizeof cfg);
    int rc = tkv_config_apply_file(&cfg, path);
    if (rc != TKV_OK) {
        check_unchanged(&cfg, &defaults, "tkv_config_apply_file");
        FUZZ_CHECK(strncmp(tkv_last_error(), path, strlen(path)) == 0 || strstr(tkv_last_error(), path),
                   "message '%s' does not name the file", tkv_last_error());
        snprintf(message, sizeof message, "%s", tkv_last_error());
    } else {
        check_round_trip(&cfg);
    }

    memcpy(&secure, &defaults, sizeof secure);
    int rc_secure = tkv_config_apply_file_secure(&secure, path, 1);
    FUZZ_CHECK(rc_secure == rc, "secure variant returned %d, plain %d (%s)", rc_secure, rc, tkv_last_error());
    if (rc == TKV_OK) {
        FUZZ_CHECK(memcmp(&secure, &cfg, sizeof cfg) == 0, "secure variant read different values");
    } else {
        check_unchanged(&secure, &defaults, "tkv_config_apply_file_secure");
        /* content errors are redacted; errors about the file as a whole
         * (size, type) carry no content and read the same */
        if (rc == TKV_ECONFIG && strstr(message, "more than the") == NULL)
            FUZZ_CHECK(strstr(tkv_last_error(), "(details withheld in a privileged process)") != NULL,
                       "secure message '%s' is not redacted", tkv_last_error());
    }
    return 0;
}
