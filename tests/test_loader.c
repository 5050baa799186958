/* SPDX-License-Identifier: MIT */
/*
 * Plugin loading: plugins that are wrong on purpose (tests/stubs) are each
 * refused with their own status while the cpu plugin loads and is chosen;
 * "no plugin found" and "all refused" are different errors; a demanded
 * backend that cannot open is an error, not a silent fallback.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

#include "turbokv.h"

static char dirs[4096];

static int open_with(const char *plugin_path, const char *backend, tkv_context **ctx)
{
    struct tkv_context_options o = {
        .struct_size = sizeof o, .ignore_env = 1, .plugin_path = plugin_path, .backend = backend,
    };
    return tkv_context_open(&o, ctx);
}

static const struct tkv_plugin_report *find(tkv_context *ctx, const char *file_part,
                                            struct tkv_plugin_report *r)
{
    for (uint32_t i = 0; i < tkv_plugin_count(ctx); i++) {
        assert_int_equal(tkv_plugin_get(ctx, i, r), TKV_OK);
        if (strstr(r->path, file_part))
            return r;
    }
    fail_msg("plugin %s not found", file_part);
    return NULL;
}

static void broken_refused_good_loaded(void **state)
{
    (void)state;
    tkv_context *ctx = NULL;
    assert_int_equal(open_with(dirs, NULL, &ctx), TKV_OK);
    struct tkv_plugin_report r;
    static const struct {
        const char *file;
        int status;
        const char *message;
    } expect[] = {
        { "turbokv-broken-bad-major.so", TKV_EABI, "plugin ABI 3.0, core ABI 2.7: the plugin needs a newer turbokv" },
        { "turbokv-broken-old-abi.so", TKV_EABI, "plugin ABI 1.1, core ABI 2.7: rebuild the plugin against turbokv_plugin.h 2.x" },
        { "turbokv-broken-null-op.so", TKV_EPLUGIN, "required op 'attention' is NULL" },
        { "turbokv-broken-no-device.so", TKV_ENODEV, "probe found no device" },
        { "turbokv-broken-no-entry.so", TKV_EPLUGIN, "no entry symbol 'tkv_plugin_entry'" },
        { "turbokv-broken-refuses-core.so", TKV_EABI, "plugin refused core ABI 2.7" },
        { "turbokv-broken-short-struct.so", TKV_EPLUGIN, "smaller than ABI 2.0 requires" },
        { "turbokv-broken-no-caps.so", TKV_EDEVICE, "device_caps(0) failed: broken test device has no capabilities" },
        { "turbokv-broken-not-paged.so", TKV_EPLUGIN, "does not report TKV_CAP_PAGED" },
        { "turbokv-broken-wrong-name.so", TKV_EPLUGIN, "names backend 'vulkan', its file should then be turbokv-vulkan.so" },
        { "turbokv-broken-open-fails.so", TKV_OK, "" },
        { "turbokv-cpu.so", TKV_OK, "" },
    };
    for (size_t i = 0; i < sizeof expect / sizeof expect[0]; i++) {
        find(ctx, expect[i].file, &r);
        assert_int_equal(r.status, expect[i].status);
        if (expect[i].message[0] && !strstr(r.message, expect[i].message))
            fail_msg("%s: message '%s' lacks '%s'", expect[i].file, r.message, expect[i].message);
    }
    find(ctx, "turbokv-cpu.so", &r);
    assert_string_equal(r.name, "cpu");
    assert_int_equal(r.abi_major, 2);
    assert_true(r.n_devices >= 1);
    /* auto tried the broken high-score device, then fell back to cpu */
    assert_true(r.in_use);
    assert_string_equal(tkv_context_backend(ctx), "cpu");
    tkv_context_close(ctx);
}

static void demanded_backend_must_open(void **state)
{
    (void)state;
    tkv_context *ctx = NULL;
    /* the broken open_fails plugin outranks cpu; demanded, it must not fall back */
    assert_int_equal(open_with(dirs, "broken-open-fails", &ctx), TKV_EDEVICE);
    assert_null(ctx);
    assert_non_null(strstr(tkv_last_error(), "broken test device cannot be opened"));
    assert_non_null(strstr(tkv_last_error(), "backend 'broken-open-fails' (from API)"));

    assert_int_equal(open_with(getenv("TURBO_PLUGIN_PATH"), "opencl", &ctx) == TKV_OK ||
                         strstr(tkv_last_error(), "backend 'opencl'") != NULL,
                     1);
    if (ctx)
        tkv_context_close(ctx);
    ctx = NULL;

    /* backend names are open: any name is looked for as turbokv-<name>.so */
    assert_int_equal(open_with(dirs, "nonsense", &ctx), TKV_ENOTFOUND);
    assert_non_null(strstr(tkv_last_error(), "no plugin file turbokv-nonsense.so"));
    assert_int_equal(open_with(dirs, "Bad/Name", &ctx), TKV_ECONFIG);
    assert_int_equal(open_with(dirs, "cpu", &ctx), TKV_OK);
    assert_string_equal(tkv_context_backend(ctx), "cpu");
    tkv_context_close(ctx);
}

/* A named backend loads its own module and nothing else; probe_all lists all. */
static void named_backend_loads_only_its_module(void **state)
{
    (void)state;
    tkv_context *ctx = NULL;
    assert_int_equal(open_with(dirs, "cpu", &ctx), TKV_OK);
    assert_int_equal(tkv_plugin_count(ctx), 1);
    struct tkv_plugin_report r;
    assert_int_equal(tkv_plugin_get(ctx, 0, &r), TKV_OK);
    assert_string_equal(r.name, "cpu");
    tkv_context_close(ctx);

    struct tkv_context_options o = {
        .struct_size = sizeof o, .ignore_env = 1, .plugin_path = dirs, .backend = "cpu", .probe_all = 1,
    };
    assert_int_equal(tkv_context_open(&o, &ctx), TKV_OK);
    assert_true(tkv_plugin_count(ctx) > 10); /* the broken stubs are listed too */
    assert_string_equal(tkv_context_backend(ctx), "cpu");
    tkv_context_close(ctx);
}

static void nothing_found_vs_all_refused(void **state)
{
    (void)state;
    tkv_context *ctx = NULL;
    char empty[] = "/nonexistent/turbokv-test-dir";
    /* The install dir is searched last; only assert when nothing is installed there. */
    int rc = open_with(empty, NULL, &ctx);
    if (rc == TKV_ENOTFOUND)
        assert_non_null(strstr(tkv_last_error(), "no turbokv plugin found"));
    else
        tkv_context_close(ctx);

    const char *broken = getenv("TKV_BROKEN_PLUGIN_DIR");
    rc = open_with(broken, "cpu", &ctx);
    if (rc != TKV_OK) {
        assert_int_equal(rc, TKV_ENOTFOUND);
        assert_non_null(strstr(tkv_last_error(), "no plugin file turbokv-cpu.so"));
    } else {
        tkv_context_close(ctx); /* an installed cpu plugin was found */
    }
}

static void searched_in_order(void **state)
{
    (void)state;
    /* The cpu plugin appears once even when its directory is listed twice. */
    char twice[8192];
    snprintf(twice, sizeof twice, "%s:%s", dirs, dirs);
    tkv_context *ctx = NULL;
    assert_int_equal(open_with(twice, NULL, &ctx), TKV_OK);
    int n_cpu = 0;
    for (uint32_t i = 0; i < tkv_plugin_count(ctx); i++) {
        struct tkv_plugin_report r;
        tkv_plugin_get(ctx, i, &r);
        n_cpu += strstr(r.path, "turbokv-cpu.so") != NULL;
    }
    assert_int_equal(n_cpu, 1);
    tkv_context_close(ctx);
}

/* 63 or more plugin directories overflowed a fixed array: now they are an
 * error naming the limit, and 60 still work. */
static void many_plugin_directories(void **state)
{
    (void)state;
    static char many[16384];
    size_t used = 0;
    for (int i = 0; i < 70; i++)
        used += (size_t)snprintf(many + used, sizeof many - used, "/nonexistent/turbokv-dir-%d:", i);
    snprintf(many + used, sizeof many - used, "%s", dirs);
    tkv_context *ctx = NULL;
    assert_int_equal(open_with(many, "cpu", &ctx), TKV_ECONFIG);
    assert_non_null(strstr(tkv_last_error(), "more than 62 plugin directories"));
    used = 0;
    for (int i = 0; i < 58; i++)
        used += (size_t)snprintf(many + used, sizeof many - used, "/nonexistent/turbokv-dir-%d:", i);
    snprintf(many + used, sizeof many - used, "%s", getenv("TURBO_PLUGIN_PATH"));
    assert_int_equal(open_with(many, "cpu", &ctx), TKV_OK);
    tkv_context_close(ctx);
}

/* TURBO_PLUGIN_PATH must name absolute directories (a relative one would
 * depend on the host's working directory). */
static void relative_plugin_path_refused(void **state)
{
    (void)state;
    const char *had = getenv("TURBO_PLUGIN_PATH");
    char *saved = strdup(had);
    setenv("TURBO_PLUGIN_PATH", "plugins/cpu", 1);
    struct tkv_context_options o = { .struct_size = sizeof o, .backend = "cpu" };
    tkv_context *ctx = NULL;
    int rc = tkv_context_open(&o, &ctx);
    setenv("TURBO_PLUGIN_PATH", saved, 1);
    free(saved);
    assert_int_equal(rc, TKV_ECONFIG);
    assert_non_null(strstr(tkv_last_error(), "TURBO_PLUGIN_PATH: plugin directory 'plugins/cpu' is relative"));
}

/* Each context logs to its own sink at its own level: a closed context's
 * callback is never called again, and one context's level is not another's. */
static int calls_a, calls_b;
static void log_a(void *user, int level, const char *msg) { (void)user, (void)level, (void)msg, calls_a++; }
static void log_b(void *user, int level, const char *msg) { (void)user, (void)level, (void)msg, calls_b++; }

static void log_sink_per_context(void **state)
{
    (void)state;
    char debug_cfg[] = "/tmp/tkv-test-log-XXXXXX";
    int fd = mkstemp(debug_cfg);
    assert_true(fd >= 0);
    assert_true(write(fd, "log: debug\n", 11) == 11);
    close(fd);
    struct tkv_context_options o = {
        .struct_size = sizeof o, .ignore_env = 1, .plugin_path = getenv("TURBO_PLUGIN_PATH"), .backend = "cpu",
        .config_path = debug_cfg, .log_fn = log_a,
    };
    tkv_context *a = NULL, *b = NULL;
    assert_int_equal(tkv_context_open(&o, &a), TKV_OK);
    assert_true(calls_a > 0); /* debug: the plugin calls are traced */
    tkv_context_close(a);
    int after_close = calls_a;
    /* B: no logger, debug level: must not reach A's callback */
    o.log_fn = NULL;
    assert_int_equal(tkv_context_open(&o, &b), TKV_OK);
    tkv_context_close(b);
    assert_int_equal(calls_a, after_close);
    /* A at the default level (warn) beside B at debug: A hears nothing */
    struct tkv_context_options oa = o, ob = o;
    oa.config_path = NULL;
    oa.log_fn = log_a;
    ob.log_fn = log_b;
    calls_a = calls_b = 0;
    assert_int_equal(tkv_context_open(&oa, &a), TKV_OK);
    assert_int_equal(tkv_context_open(&ob, &b), TKV_OK);
    struct tkv_cache_params p = {
        .struct_size = sizeof p, .n_layers = 1, .n_kv_heads = 1, .head_dim = 64, .capacity = 8,
        .k_type = TKV_TYPE_TURBO3, .v_type = TKV_TYPE_TURBO3,
    };
    tkv_cache *ca = NULL, *cb = NULL;
    assert_int_equal(tkv_cache_create(a, &p, &ca), TKV_OK);
    assert_int_equal(tkv_cache_create(b, &p, &cb), TKV_OK);
    float k[64] = { 1 }, v[64] = { 1 };
    assert_int_equal(tkv_cache_append(ca, 0, 0, 1, k, v), TKV_OK);
    assert_int_equal(tkv_cache_append(cb, 0, 0, 1, k, v), TKV_OK);
    assert_int_equal(calls_a, 0);
    assert_true(calls_b > 0);
    tkv_cache_destroy(ca);
    tkv_cache_destroy(cb);
    tkv_context_close(a);
    tkv_context_close(b);
    unlink(debug_cfg);
}

static void copy_file(const char *from, const char *to)
{
    FILE *a = fopen(from, "rb"), *b = fopen(to, "wb");
    char buf[65536];
    size_t n;
    assert_non_null(a);
    assert_non_null(b);
    while ((n = fread(buf, 1, sizeof buf, a)) > 0)
        assert_int_equal(fwrite(buf, 1, n, b), n);
    fclose(a);
    assert_int_equal(fclose(b), 0);
}

/* Plugins another user could have written are refused, with the reason. */
static void writable_plugins_refused(void **state)
{
    (void)state;
    char dir[] = "/tmp/tkv-test-unsafe-XXXXXX", plugin[256], src[1024];
    assert_non_null(mkdtemp(dir));
    snprintf(plugin, sizeof plugin, "%s/turbokv-cpu.so", dir);
    /* the cpu plugin of the build: the first directory of TURBO_PLUGIN_PATH holding it */
    char path[4096];
    snprintf(path, sizeof path, "%s", getenv("TURBO_PLUGIN_PATH"));
    src[0] = '\0';
    for (char *save = NULL, *d = strtok_r(path, ":", &save); d && !src[0]; d = strtok_r(NULL, ":", &save)) {
        snprintf(src, sizeof src, "%s/turbokv-cpu.so", d);
        if (access(src, R_OK) != 0)
            src[0] = '\0';
    }
    assert_true(src[0]);
    copy_file(src, plugin);
    assert_int_equal(chmod(dir, 0700), 0);
    assert_int_equal(chmod(plugin, 0755), 0);
    tkv_context *ctx = NULL;
    assert_int_equal(open_with(dir, "cpu", &ctx), TKV_OK); /* safe: loads */
    tkv_context_close(ctx);
    assert_int_equal(chmod(plugin, 0757), 0);
    assert_int_equal(open_with(dir, "cpu", &ctx), TKV_EPLUGIN);
    assert_non_null(strstr(tkv_last_error(), "not loaded: the file is writable by other users"));
    assert_int_equal(chmod(plugin, 0755), 0);
    assert_int_equal(chmod(dir, 0777), 0);
    assert_int_equal(open_with(dir, "cpu", &ctx), TKV_EPLUGIN);
    assert_non_null(strstr(tkv_last_error(), "not loaded: its directory is writable by other users"));
    unlink(plugin);
    rmdir(dir);
}

int main(void)
{
    const char *good = getenv("TURBO_PLUGIN_PATH"), *broken = getenv("TKV_BROKEN_PLUGIN_DIR");
    if (!good || !broken) {
        fprintf(stderr, "TURBO_PLUGIN_PATH and TKV_BROKEN_PLUGIN_DIR must be set (meson test does)\n");
        return 1;
    }
    snprintf(dirs, sizeof dirs, "%s:%s", broken, good);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(broken_refused_good_loaded),
        cmocka_unit_test(demanded_backend_must_open),
        cmocka_unit_test(named_backend_loads_only_its_module),
        cmocka_unit_test(nothing_found_vs_all_refused),
        cmocka_unit_test(searched_in_order),
        cmocka_unit_test(many_plugin_directories),
        cmocka_unit_test(relative_plugin_path_refused),
        cmocka_unit_test(log_sink_per_context),
        cmocka_unit_test(writable_plugins_refused),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
