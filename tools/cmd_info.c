/* SPDX-License-Identifier: MIT */
/*
 * `turbokv info [--json]`: the plugins found (path, ABI, devices, accepted or
 * why refused), the backend in use, and the effective configuration with
 * the source of every value.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tool.h"

static const char *source_name(uint32_t s)
{
    static const char *names[] = { "default", "file", "env", "api" };
    return s < 4 ? names[s] : "?";
}

static void print_text(tkv_context *ctx)
{
    printf("turbokv %s\n\nplugins:\n", TKV_VERSION_STRING);
    for (uint32_t i = 0; i < tkv_plugin_count(ctx); i++) {
        struct tkv_plugin_report r;
        tkv_plugin_get(ctx, i, &r);
        printf("  %-8s %s\n", r.name[0] ? r.name : "?", r.path);
        if (r.name[0] || r.abi_major)
            printf("           ABI %u.%u, version %s\n", r.abi_major, r.abi_minor, r.version[0] ? r.version : "?");
        if (r.status == TKV_OK)
            printf("           accepted%s\n", r.in_use ? ", in use" : "");
        else
            printf("           refused (%s): %s\n", tkv_status_name(r.status), r.message);
        for (uint32_t d = 0; d < r.n_devices && d < 4; d++)
            printf("           device %u: %s\n", d, r.devices[d]);
    }
    printf("\nbackend: %s, device: %s\n\nconfiguration (value, source):\n", tkv_context_backend(ctx),
           tkv_context_device(ctx));
    for (uint32_t i = 0; i < tkv_config_count(ctx); i++) {
        struct tkv_config_entry e;
        tkv_config_get(ctx, i, &e);
        if (e.source == TKV_SOURCE_DEFAULT)
            printf("  %-20s %-14s default  (override: %s)\n", e.key, e.value[0] ? e.value : "\"\"", e.env);
        else
            printf("  %-20s %-14s %-8s %s\n", e.key, e.value[0] ? e.value : "\"\"", source_name(e.source), e.origin);
    }
    printf("\nstorage at head_dim 128 (bits/value, incl. scales):");
    for (uint32_t t = 0; t < TKV_TYPE_COUNT; t++)
        printf(" %s %.3f%s", tkv_type_name(t), tkv_type_bits_per_value(t, 128), t + 1 < TKV_TYPE_COUNT ? "," : "\n");
}

/* The JSON type of a configuration value, by key: the library hands every
 * value over as text (tkv_config_entry), and a script reading `info --json`
 * should get sparse_v as true, not "true". Keys not listed stay strings. */
enum json_kind { AS_STRING, AS_BOOL, AS_NUMBER, AS_NUMBER_OR_WORD };

static enum json_kind config_kind(const char *key)
{
    static const struct {
        const char *key;
        enum json_kind kind;
    } kinds[] = {
        { "sparse_v", AS_BOOL }, { "auto_asymmetric", AS_BOOL }, { "norm_correction", AS_BOOL },
        { "sparse_v_threshold", AS_NUMBER }, { "layer_adaptive", AS_NUMBER }, { "threads", AS_NUMBER },
        { "device", AS_NUMBER_OR_WORD }, /* an index, or "auto" */
    };
    for (size_t i = 0; i < sizeof kinds / sizeof kinds[0]; i++)
        if (!strcmp(kinds[i].key, key))
            return kinds[i].kind;
    return AS_STRING;
}

/* The value as its JSON type; text that does not read as that type stays a
 * string, so the output is valid JSON whatever the library hands over. */
static void print_config_value(const char *key, const char *value)
{
    enum json_kind kind = config_kind(key);
    char *end;
    if (kind == AS_BOOL && (!strcmp(value, "true") || !strcmp(value, "false"))) {
        fputs(value, stdout);
        return;
    }
    if (kind == AS_NUMBER || kind == AS_NUMBER_OR_WORD) {
        double x = strtod(value, &end);
        if (end != value && !*end && isfinite(x)) {
            printf("%.9g", x);
            return;
        }
    }
    tool_json_string(stdout, value);
}

static void print_json(tkv_context *ctx)
{
    printf("{\"version\": ");
    tool_json_string(stdout, TKV_VERSION_STRING);
    printf(", \"backend\": ");
    tool_json_string(stdout, tkv_context_backend(ctx));
    printf(", \"device\": ");
    tool_json_string(stdout, tkv_context_device(ctx));
    printf(", \"plugins\": [");
    for (uint32_t i = 0; i < tkv_plugin_count(ctx); i++) {
        struct tkv_plugin_report r;
        tkv_plugin_get(ctx, i, &r);
        printf("%s{\"name\": ", i ? ", " : "");
        tool_json_string(stdout, r.name);
        printf(", \"path\": ");
        tool_json_string(stdout, r.path);
        printf(", \"version\": ");
        tool_json_string(stdout, r.version);
        printf(", \"abi\": \"%u.%u\", \"abi_major\": %u, \"abi_minor\": %u, \"accepted\": %s, \"in_use\": %s, "
               "\"status\": \"%s\", \"message\": ",
               r.abi_major, r.abi_minor, r.abi_major, r.abi_minor, r.status == TKV_OK ? "true" : "false",
               r.in_use ? "true" : "false", tkv_status_name(r.status));
        tool_json_string(stdout, r.message);
        printf(", \"n_devices\": %u, \"devices\": [", r.n_devices);
        for (uint32_t d = 0; d < r.n_devices && d < 4; d++) {
            printf("%s", d ? ", " : "");
            tool_json_string(stdout, r.devices[d]);
        }
        printf("]}");
    }
    printf("], \"config\": {");
    for (uint32_t i = 0; i < tkv_config_count(ctx); i++) {
        struct tkv_config_entry e;
        tkv_config_get(ctx, i, &e);
        printf("%s", i ? ", " : "");
        tool_json_string(stdout, e.key);
        printf(": {\"value\": ");
        print_config_value(e.key, e.value);
        printf(", \"source\": \"%s\", \"origin\": ", source_name(e.source));
        tool_json_string(stdout, e.origin);
        printf(", \"env\": ");
        if (e.env)
            tool_json_string(stdout, e.env);
        else
            printf("null");
        printf("}");
    }
    printf("}, \"bits_per_value_at_head_dim_128\": {");
    for (uint32_t t = 0; t < TKV_TYPE_COUNT; t++) {
        printf("%s", t ? ", " : "");
        tool_json_string(stdout, tkv_type_name(t));
        printf(": %.6g", tkv_type_bits_per_value(t, 128));
    }
    printf("}}\n");
}

int tool_info(int argc, char **argv)
{
    int json = 0;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--json"))
            json = 1;
        else if (!strcmp(argv[i], "--help")) {
            printf("usage: turbokv info [--json]\n"
                   "Lists the plugins found (path, ABI, devices, accepted or why refused), the backend in use\n"
                   "and the effective configuration with the source of every value.\n");
            return 0;
        } else {
            fprintf(stderr, "turbokv info: unknown option '%s'\n", argv[i]);
            return 2;
        }
    }
    tkv_context *ctx = tool_open_context_ex(NULL, 1); /* lists every plugin, the backend named or not */
    if (!ctx)
        return 1;
    if (json)
        print_json(ctx);
    else
        print_text(ctx);
    tkv_context_close(ctx);
    return 0;
}
