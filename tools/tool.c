/*
 * Shared plumbing of the subcommands (see tool.h).
 */
#include "tool.h"

#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

/* Set by meson for the uninstalled build: the build tree's plugin
 * directories and the source tree's models/. */
#ifndef TKV_BUILD_PLUGIN_DIRS
#define TKV_BUILD_PLUGIN_DIRS ""
#endif
#ifndef TKV_BUILD_ROOT
#define TKV_BUILD_ROOT ""
#endif
#ifndef TKV_SOURCE_MODELS_DIR
#define TKV_SOURCE_MODELS_DIR ""
#endif
#ifndef TKV_INSTALL_DATA_DIR
#define TKV_INSTALL_DATA_DIR "/usr/local/share/turbokv"
#endif

/* 1 when this executable lives in the build tree (not installed). */
static int running_uninstalled(void)
{
    char exe[4096];
    ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 1);
    if (n <= 0 || !TKV_BUILD_ROOT[0])
        return 0;
    exe[n] = '\0';
    size_t root = strlen(TKV_BUILD_ROOT);
    return strncmp(exe, TKV_BUILD_ROOT, root) == 0 && exe[root] == '/';
}

tkv_context *tool_open_context(const char *backend)
{
    struct tkv_context_options o = { .struct_size = sizeof o, .backend = backend };
    if (running_uninstalled())
        o.plugin_path = TKV_BUILD_PLUGIN_DIRS;
    tkv_context *ctx = NULL;
    int rc = tkv_context_open(&o, &ctx);
    if (rc != TKV_OK) {
        tool_fail("cannot open a context", rc);
        return NULL;
    }
    return ctx;
}

int tool_fail(const char *what, int status)
{
    fprintf(stderr, "turbokv: %s: %s (%s)\n", what, tkv_last_error(), tkv_status_name(status));
    return 1;
}

const char *tool_model_path(const char *file, char *buf, size_t size)
{
    if (running_uninstalled() && TKV_SOURCE_MODELS_DIR[0]) {
        snprintf(buf, size, "%s/%s", TKV_SOURCE_MODELS_DIR, file);
        if (access(buf, R_OK) == 0)
            return buf;
    }
    snprintf(buf, size, "%s/%s", TKV_INSTALL_DATA_DIR, file);
    return buf;
}

const char *tool_opt(int argc, char **argv, int *i, const char *name)
{
    const char *a = argv[*i];
    size_t n = strlen(name);
    if (strncmp(a, name, n) != 0)
        return NULL;
    if (a[n] == '=')
        return a + n + 1;
    if (a[n] != '\0')
        return NULL;
    if (*i + 1 >= argc) {
        fprintf(stderr, "turbokv %s: option %s needs a value\n", argv[0], name);
        exit(2);
    }
    return argv[++*i];
}

int tool_split(char *list, char **items, int max)
{
    int n = 0;
    for (char *save = NULL, *t = strtok_r(list, ",", &save); t && n < max; t = strtok_r(NULL, ",", &save))
        if (*t)
            items[n++] = t;
    return n;
}

void tool_json_string(FILE *f, const char *s)
{
    fputc('"', f);
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        if (*p == '"' || *p == '\\')
            fprintf(f, "\\%c", *p);
        else if (*p == '\n')
            fputs("\\n", f);
        else if (*p == '\t')
            fputs("\\t", f);
        else if (*p < 0x20)
            fprintf(f, "\\u%04x", *p);
        else
            fputc(*p, f);
    }
    fputc('"', f);
}

/* On a terminal the line is redrawn in place; otherwise (logs, CI) a line is
 * printed at every tenth of the work, so long runs still show progress. */
static int progress_shown;
static uint64_t progress_last_tenth = ~0ull;

void tool_progress(const char *what, uint64_t done, uint64_t total)
{
    if (isatty(STDERR_FILENO)) {
        fprintf(stderr, "\r\033[K%s: %llu/%llu", what, (unsigned long long)done, (unsigned long long)total);
        progress_shown = 1;
    } else {
        uint64_t tenth = total ? done * 10 / total : 0;
        if (tenth != progress_last_tenth) {
            fprintf(stderr, "%s: %llu/%llu\n", what, (unsigned long long)done, (unsigned long long)total);
            progress_last_tenth = tenth;
        }
    }
    fflush(stderr);
}

void tool_progress_end(void)
{
    if (progress_shown)
        fprintf(stderr, "\r\033[K");
    progress_shown = 0;
    progress_last_tenth = ~0ull;
    fflush(stderr);
}

double tool_now(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + t.tv_nsec * 1e-9;
}
