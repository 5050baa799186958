/* SPDX-License-Identifier: MIT */
/*
 * A relocated install finds its plugins: libturbokv looks in the turbokv/
 * directory beside itself (found with dladdr) after the compiled-in plugin
 * directory. The test copies the built library and the cpu plugin into a
 * fresh prefix, loads that copy of the library, and opens a context with the
 * environment ignored: the cpu plugin must be found only through the
 * library's own location.
 * Usage: test_relocate LIBTURBOKV CPU_PLUGIN
 */
#include <dlfcn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "turbokv.h"

static int copy(const char *from, const char *to)
{
    FILE *a = fopen(from, "rb"), *b = fopen(to, "wb");
    char buf[65536];
    size_t n;
    int ok = a && b;
    while (ok && (n = fread(buf, 1, sizeof buf, a)) > 0)
        ok = fwrite(buf, 1, n, b) == n;
    if (a)
        fclose(a);
    if (b && fclose(b) != 0)
        ok = 0;
    return ok ? 0 : -1;
}

int main(int argc, char **argv)
{
    if (argc != 3) {
        fprintf(stderr, "usage: test_relocate LIBTURBOKV CPU_PLUGIN\n");
        return 2;
    }
    char root[] = "/tmp/tkv-relocate-XXXXXX", lib[256], plugdir[256], libfile[320], plugin[320];
    if (!mkdtemp(root))
        return 1;
    snprintf(lib, sizeof lib, "%s/lib", root);
    snprintf(plugdir, sizeof plugdir, "%s/lib/turbokv", root);
    snprintf(libfile, sizeof libfile, "%s/libturbokv.so", lib);
    snprintf(plugin, sizeof plugin, "%s/turbokv-cpu.so", plugdir);
    if (mkdir(lib, 0755) || mkdir(plugdir, 0755) || copy(argv[1], libfile) || copy(argv[2], plugin)) {
        fprintf(stderr, "cannot build the relocated prefix in %s\n", root);
        return 1;
    }
    void *h = dlopen(libfile, RTLD_NOW | RTLD_LOCAL);
    if (!h) {
        fprintf(stderr, "dlopen %s: %s\n", libfile, dlerror());
        return 1;
    }
    int (*open_ctx)(const struct tkv_context_options *, tkv_context **) =
        (int (*)(const struct tkv_context_options *, tkv_context **))(size_t)dlsym(h, "tkv_context_open");
    void (*close_ctx)(tkv_context *) = (void (*)(tkv_context *))(size_t)dlsym(h, "tkv_context_close");
    const char *(*backend)(const tkv_context *) = (const char *(*)(const tkv_context *))(size_t)dlsym(h, "tkv_context_backend");
    const char *(*last_error)(void) = (const char *(*)(void))(size_t)dlsym(h, "tkv_last_error");
    if (!open_ctx || !close_ctx || !backend || !last_error)
        return 1;
    struct tkv_context_options o = { .struct_size = sizeof o, .ignore_env = 1, .backend = "cpu" };
    tkv_context *ctx = NULL;
    int rc = open_ctx(&o, &ctx), failed = 0;
    if (rc != TKV_OK || strcmp(backend(ctx), "cpu") != 0) {
        fprintf(stderr, "relocated library did not find %s: %s\n", plugin, last_error());
        failed = 1;
    } else {
        printf("relocated library found its plugin in %s\n", plugdir);
        close_ctx(ctx);
    }
    /* without the plugin beside it, nothing is found (unless one is installed system-wide) */
    unlink(plugin);
    rc = open_ctx(&o, &ctx);
    if (rc == TKV_OK) {
        printf("note: a cpu plugin is installed in the compiled-in directory\n");
        close_ctx(ctx);
    } else if (!strstr(last_error(), plugdir)) {
        fprintf(stderr, "the search did not name %s: %s\n", plugdir, last_error());
        failed = 1;
    }
    /* the library stays loaded: its codebook tables live until process exit
     * (a dlclose would leave LeakSanitizer an unreachable block to report) */
    unlink(libfile);
    rmdir(plugdir);
    rmdir(lib);
    rmdir(root);
    return failed;
}
