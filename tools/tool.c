/* SPDX-License-Identifier: MIT */
/*
 * Shared plumbing of the subcommands (see tool.h).
 */
#include "tool.h"

#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <stdarg.h>
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

tkv_context *tool_open_context(const char *backend) { return tool_open_context_ex(backend, 0); }

/* Uninstalled, the tools find the build tree's plugins, after the
 * directories of a TURBO_PLUGIN_PATH the user set: a plugin there shadows
 * the build's own of the same name, as it does for an installed tool (a
 * measurement that points the variable at another build of a plugin gets
 * that build). secure_getenv: not in a privileged process, where the
 * library ignores the variable too. Where the two do not fit the library's
 * 4 KB, the build's directories alone; the variable still comes next (and
 * the library names what is wrong with it). NULL when installed. */
const char *tool_plugin_path(void)
{
    static char path[4096];
    if (!running_uninstalled())
        return NULL;
    const char *env = secure_getenv("TURBO_PLUGIN_PATH");
    if (env && *env && strlen(env) + 1 + strlen(TKV_BUILD_PLUGIN_DIRS) < sizeof path) {
        snprintf(path, sizeof path, "%s:%s", env, TKV_BUILD_PLUGIN_DIRS);
        return path;
    }
    return TKV_BUILD_PLUGIN_DIRS;
}

tkv_context *tool_open_context_ex(const char *backend, int probe_all)
{
    struct tkv_context_options o = { .struct_size = sizeof o, .backend = backend, .probe_all = (uint32_t)probe_all,
                                     .plugin_path = tool_plugin_path() };
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

/* ---- getopt_long-style parsing ------------------------------------------------------------- */

void tool_getopt_init(struct tool_getopt *g, const char *cmd, const struct tool_option *options, int argc,
                      char **argv)
{
    memset(g, 0, sizeof *g);
    g->cmd = cmd;
    g->options = options;
    g->argc = argc;
    g->argv = argv;
    g->next = 1;
}

static int getopt_error(struct tool_getopt *g, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int getopt_error(struct tool_getopt *g, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(g->error, sizeof g->error, fmt, ap);
    va_end(ap);
    return TOOL_OPT_ERROR;
}

/* Spelling differences that do not matter for a suggestion: case, '_' for '-'. */
static char fold(char c) { return c == '_' ? '-' : (char)tolower((unsigned char)c); }

/* Optimal string alignment distance (insertions, deletions, substitutions,
 * swaps of neighbours), case and '_'/'-' folded; long strings count as far. */
static int distance(const char *a, size_t n, const char *b)
{
    enum { MAX = 40 };
    size_t m = strlen(b);
    if (n >= MAX || m >= MAX)
        return 99;
    int d[MAX][MAX];
    for (size_t i = 0; i <= n; i++)
        d[i][0] = (int)i;
    for (size_t j = 0; j <= m; j++)
        d[0][j] = (int)j;
    for (size_t i = 1; i <= n; i++)
        for (size_t j = 1; j <= m; j++) {
            int cost = fold(a[i - 1]) != fold(b[j - 1]);
            int best = d[i - 1][j - 1] + cost;
            if (d[i - 1][j] + 1 < best)
                best = d[i - 1][j] + 1;
            if (d[i][j - 1] + 1 < best)
                best = d[i][j - 1] + 1;
            if (i > 1 && j > 1 && fold(a[i - 1]) == fold(b[j - 2]) && fold(a[i - 2]) == fold(b[j - 1]) &&
                d[i - 2][j - 2] + 1 < best)
                best = d[i - 2][j - 2] + 1;
            d[i][j] = best;
        }
    return d[n][m];
}

const char *tool_closest(const char *typed, const char *const *names, size_t n)
{
    size_t len = strlen(typed);
    const char *best = NULL;
    int best_d = 99;
    for (size_t i = 0; i < n; i++) {
        int d = distance(typed, len, names[i]);
        if (len >= 2 && len < strlen(names[i]) && !strncmp(names[i], typed, len))
            d = 1;
        if (d < best_d) {
            best_d = d;
            best = names[i];
        }
    }
    return best_d <= 2 && (size_t)best_d < len ? best : NULL;
}

/* "-p/--prompt", "--top-p", "-n". */
static void option_name(const struct tool_option *o, char *out, size_t size)
{
    if (o->short_name && o->long_name)
        snprintf(out, size, "-%c/--%s", o->short_name, o->long_name);
    else if (o->short_name)
        snprintf(out, size, "-%c", o->short_name);
    else
        snprintf(out, size, "--%s", o->long_name);
}

/* How close `written` (the option text up to any '=', dashes included) is to
 * option o: 0 for another tool's spelling listed in o->also, else an edit
 * distance to -s or --long; a long name that `written` starts with (--temperature
 * for --temp) counts as 1. */
static int closeness(const char *written, size_t n, const struct tool_option *o)
{
    int best = 99;
    if (o->also) {
        for (const char *p = o->also; *p;) {
            size_t len = strcspn(p, " ");
            if (len == n && strncmp(p, written, n) == 0)
                return 0;
            p += len;
            p += strspn(p, " ");
        }
    }
    char spelled[80];
    if (o->short_name) {
        snprintf(spelled, sizeof spelled, "-%c", o->short_name);
        int d = distance(written, n, spelled);
        best = d < best ? d : best;
    }
    if (o->long_name) {
        snprintf(spelled, sizeof spelled, "--%s", o->long_name);
        int d = distance(written, n, spelled);
        best = d < best ? d : best;
        size_t len = strlen(spelled);
        if (len >= 5 && n > len && strncmp(written, spelled, len) == 0 && best > 1)
            best = 1;
    }
    return best;
}

/* " Did you mean X?" or " Did you mean X or Y?" for the closest options, or "". */
static void suggest(const struct tool_getopt *g, const char *written, size_t n, char *out, size_t size)
{
    /* letters the user wrote, dashes aside: a suggestion must be closer than
     * a rewrite of all of them ("-x" is one letter from every short option) */
    size_t letters = n - strspn(written, "-");
    int best = 99;
    for (const struct tool_option *o = g->options; o->id; o++) {
        int c = closeness(written, n, o);
        best = c < best ? c : best;
    }
    out[0] = '\0';
    if (best > 2 || (best > 0 && (size_t)best >= letters))
        return;
    size_t len = (size_t)snprintf(out, size, "; did you mean ");
    int shown = 0;
    for (const struct tool_option *o = g->options; o->id && shown < 3; o++)
        if (closeness(written, n, o) == best) {
            char name[80];
            option_name(o, name, sizeof name);
            if (len < size)
                len += (size_t)snprintf(out + len, size - len, "%s%s", shown ? " or " : "", name);
            shown++;
        }
    if (len < size)
        snprintf(out + len, size - len, "?");
}

static int unknown_option(struct tool_getopt *g, const char *arg)
{
    char hint[256];
    /* a long option is named up to its '=' value; a short one may carry its value */
    size_t n = arg[0] == '-' && arg[1] == '-' ? strcspn(arg, "=") : strlen(arg);
    suggest(g, arg, n, hint, sizeof hint);
    return getopt_error(g, "unknown option '%.*s'%s", (int)n, arg, hint);
}

/* Takes the value of option o: attached (inline, may be NULL) or the next argument. */
static int take_value(struct tool_getopt *g, const struct tool_option *o, const char *inline_value)
{
    if (!o->arg) {
        if (inline_value)
            return getopt_error(g, "option %s takes no value (got '%s')", g->flag, g->argv[g->next - 1]);
        g->value = NULL;
        return o->id;
    }
    if (inline_value) {
        g->value = inline_value;
        return o->id;
    }
    if (g->next >= g->argc)
        return getopt_error(g, "option %s needs a value: %s", g->flag, o->arg);
    g->value = g->argv[g->next++];
    return o->id;
}

int tool_getopt_next(struct tool_getopt *g)
{
    g->value = NULL;
    g->flag[0] = '\0';
    if (g->next >= g->argc)
        return TOOL_OPT_END;
    const char *arg = g->argv[g->next++];
    if (g->options_ended || arg[0] != '-' || arg[1] == '\0') {
        g->value = arg;
        return TOOL_OPT_POSITIONAL;
    }
    if (!strcmp(arg, "--")) {
        g->options_ended = 1;
        return tool_getopt_next(g);
    }
    if (!strcmp(arg, "--help") || !strcmp(arg, "-h"))
        return TOOL_OPT_HELP;

    if (arg[1] == '-') {
        /* --name, --name=value, or a unique prefix of a name */
        const char *name = arg + 2, *eq = strchr(name, '=');
        size_t n = eq ? (size_t)(eq - name) : strlen(name);
        const struct tool_option *exact = NULL, *prefix = NULL;
        int n_prefix = 0;
        for (const struct tool_option *o = g->options; o->id; o++) {
            if (!o->long_name || strncmp(o->long_name, name, n) != 0)
                continue;
            if (o->long_name[n] == '\0')
                exact = o;
            else if (!prefix || prefix->id != o->id) {
                prefix = prefix ? prefix : o;
                n_prefix++;
            }
        }
        const struct tool_option *o = exact ? exact : n_prefix == 1 ? prefix : NULL;
        if (!o && n_prefix > 1 && n > 0) {
            char list[256];
            size_t len = 0;
            list[0] = '\0';
            for (const struct tool_option *p = g->options; p->id; p++)
                if (p->long_name && strncmp(p->long_name, name, n) == 0 && len < sizeof list)
                    len += (size_t)snprintf(list + len, sizeof list - len, "%s--%s", len ? " or " : "", p->long_name);
            return getopt_error(g, "option '%.*s' is ambiguous: %s?", (int)(n + 2), arg, list);
        }
        if (!o)
            return unknown_option(g, arg);
        snprintf(g->flag, sizeof g->flag, "--%s", o->long_name);
        return take_value(g, o, eq ? eq + 1 : NULL);
    }

    /* -x, -xVALUE; another tool's spelling (llama.cpp's -ctk) or a single
     * dash before a long name (-temp) is a mistake, not -c tk or -t emp */
    for (const struct tool_option *o = g->options; o->id; o++)
        if (arg[2] && closeness(arg, strcspn(arg, "="), o) == 0)
            return unknown_option(g, arg);
    for (const struct tool_option *o = g->options; o->id; o++)
        if (o->long_name && arg[2] && !strncmp(o->long_name, arg + 1, strcspn(arg + 1, "=")) &&
            o->long_name[strcspn(arg + 1, "=")] == '\0')
            return getopt_error(g, "unknown option '%s'; did you mean --%s?", arg, o->long_name);
    for (const struct tool_option *o = g->options; o->id; o++)
        if (o->short_name && o->short_name == arg[1]) {
            snprintf(g->flag, sizeof g->flag, "-%c", o->short_name);
            return take_value(g, o, arg[2] ? arg + 2 : NULL);
        }
    return unknown_option(g, arg);
}

int tool_getopt_fail(const struct tool_getopt *g)
{
    fprintf(stderr, "turbokv %s: %s (turbokv %s --help lists the options)\n", g->cmd, g->error, g->cmd);
    return 2;
}

int tool_bad_value(const struct tool_getopt *g, const char *expected)
{
    fprintf(stderr, "turbokv %s: %s %s: expected %s\n", g->cmd, g->flag, g->value ? g->value : "", expected);
    return 2;
}

int tool_value_long(const struct tool_getopt *g, long min, long max, const char *what, long *out)
{
    char *end;
    errno = 0;
    long v = strtol(g->value, &end, 10);
    if (errno || end == g->value || *end || v < min || v > max) {
        tool_bad_value(g, what);
        return -1;
    }
    *out = v;
    return 0;
}

int tool_value_float(const struct tool_getopt *g, double min, double max, const char *what, float *out)
{
    char *end;
    errno = 0;
    double v = strtod(g->value, &end);
    if (errno || end == g->value || *end || !isfinite(v) || v < min || v > max) {
        tool_bad_value(g, what);
        return -1;
    }
    *out = (float)v;
    return 0;
}

/* kXvY digits -> type name. */
static const char *scheme_bits_type(const char *digits, size_t n)
{
    static const struct {
        const char *digits, *type;
    } table[] = {
        { "32", "f32" }, { "16", "f16" }, { "8", "q8_0" }, { "4", "turbo4" }, { "3", "turbo3" }, { "2", "turbo2" },
    };
    for (size_t i = 0; i < sizeof table / sizeof table[0]; i++)
        if (strlen(table[i].digits) == n && !strncmp(table[i].digits, digits, n))
            return table[i].type;
    return NULL;
}

int tool_parse_scheme(const char *name, uint32_t *k_type, uint32_t *v_type)
{
    uint32_t k, v;
    const char *vpos = name[0] == 'k' ? strchr(name, 'v') : NULL, *slash = strchr(name, '/');
    if (slash) { /* K/V: two type names */
        char kname[32];
        size_t n = (size_t)(slash - name);
        if (n >= sizeof kname)
            return -1;
        memcpy(kname, name, n);
        kname[n] = '\0';
        if (tkv_type_from_name(kname, &k) != TKV_OK || tkv_type_from_name(slash + 1, &v) != TKV_OK)
            return -1;
    } else if (vpos) {
        const char *kname = scheme_bits_type(name + 1, (size_t)(vpos - name - 1));
        const char *vname = scheme_bits_type(vpos + 1, strlen(vpos + 1));
        if (!kname || !vname || tkv_type_from_name(kname, &k) != TKV_OK || tkv_type_from_name(vname, &v) != TKV_OK)
            return -1;
    } else if (tkv_type_from_name(name, &k) != TKV_OK) {
        return -1;
    } else {
        v = k;
    }
    /* QJL types are for keys only, so they name no scheme (the library refuses them too) */
    if (tkv_type_is_qjl(v))
        return -1;
    *k_type = k;
    *v_type = v;
    return 0;
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
