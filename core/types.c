/* SPDX-License-Identifier: MIT */
/*
 * Type names and sizes (the numbers come from abi/turbokv_format.h).
 */
#include <stdio.h>
#include <string.h>

#include "error.h"
#include "turbokv.h"

static const char *const type_names[TKV_TYPE_COUNT] = {
    [TKV_TYPE_F32] = "f32",       [TKV_TYPE_F16] = "f16",       [TKV_TYPE_Q8_0] = "q8_0",
    [TKV_TYPE_TURBO2] = "turbo2", [TKV_TYPE_TURBO3] = "turbo3", [TKV_TYPE_TURBO4] = "turbo4",
    [TKV_TYPE_TURBO3_QJL] = "turbo3_qjl", [TKV_TYPE_TURBO4_QJL] = "turbo4_qjl",
    [TKV_TYPE_TURBO3_OUT] = "turbo3o",    [TKV_TYPE_TURBO4_OUT] = "turbo4o",
};

const char *tkv_type_name(uint32_t type) { return type < TKV_TYPE_COUNT ? type_names[type] : NULL; }

int tkv_type_from_name(const char *name, uint32_t *type)
{
    if (!name || !type)
        return tkv_error(TKV_EINVAL, "tkv_type_from_name: NULL argument");
    char names[200] = "";
    for (uint32_t t = 0; t < TKV_TYPE_COUNT; t++) {
        if (strcmp(name, type_names[t]) == 0) {
            *type = t;
            return TKV_OK;
        }
        size_t used = strlen(names);
        snprintf(names + used, sizeof names - used, "%s%s", t ? ", " : "", type_names[t]);
    }
    return tkv_error(TKV_EINVAL, "unknown type '%s': expected one of %s", name, names);
}

double tkv_type_bits_per_value(uint32_t type, uint32_t head_dim)
{
    uint32_t bytes = tkv_row_bytes(type, head_dim);
    return bytes ? 8.0 * bytes / head_dim : 0.0;
}
