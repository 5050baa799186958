/* SPDX-License-Identifier: MIT */
/*
 * Shared plumbing of the `turbokv` command's subcommands. Everything here
 * uses the public API (turbokv.h) only: the tools are the example host.
 */
#ifndef TKV_TOOL_H
#define TKV_TOOL_H

#include <stdint.h>
#include <stdio.h>

#include "turbokv.h"

/* Every subcommand: argv[0] is the subcommand name. Returns the exit code. */
typedef int (*tkv_tool_fn)(int argc, char **argv);

int tool_info(int argc, char **argv);
int tool_run(int argc, char **argv);
int tool_ppl(int argc, char **argv);
int tool_eval(int argc, char **argv);
int tool_bench(int argc, char **argv);
/* `turbokv bench --paged` (cmd_bench_paged.c). */
/* bench --per-token (cmd_bench_token.c): a decode step of every layer on the
 * host's own OpenCL device (queued) or Vulkan device (recorded into one
 * command buffer; backend "vulkan"), against the per-call host-array mode. */
int tool_bench_token(const char *backend, const uint32_t *types, int n_types, const uint32_t *ctx, int n_ctx, uint32_t layers,
                     uint32_t q_heads, uint32_t kv_heads, uint32_t head_dim, uint32_t warm_ms, int json);
int tool_bench_paged(const char *backend, const uint32_t *ctx, int n_ctx, uint32_t q_heads, uint32_t kv_heads,
                     uint32_t head_dim, uint32_t type, int json);

/* The plugin path the tools pass to tkv_context_open: run from the build
 * tree, TURBO_PLUGIN_PATH's directories then the build's plugin
 * directories; installed, NULL (the library's own search). */
const char *tool_plugin_path(void);
/* Opens a context the way every subcommand does: config + env, plugins
 * found through tool_plugin_path. backend may be NULL (config/env decide).
 * Prints the error and returns NULL on failure. */
tkv_context *tool_open_context(const char *backend);
/* The same; probe_all: load and list every plugin found even when a backend
 * is named (turbokv info). */
tkv_context *tool_open_context_ex(const char *backend, int probe_all);

/* Prints "turbokv: <what>: <tkv_last_error()>" to stderr; returns 1. */
int tool_fail(const char *what, int status);

/* Path of a file shipped in models/ (build tree or install datadir). */
const char *tool_model_path(const char *file, char *buf, size_t size);

/* Option parsing: "--name value" or "--name=value". Returns the value when
 * argv[*i] is option name (advancing *i past a separate value), else NULL.
 * A missing value prints an error and exits 2. (The older, exact-name
 * parser; run, ppl and eval use tool_getopt below.) */
const char *tool_opt(int argc, char **argv, int *i, const char *name);

/* getopt_long-style parsing: "-n 5", "-n5", "--ctx 5", "--ctx=5", long
 * names abbreviated to any unique prefix, "--" ending the options, options
 * and other arguments in any order, the last of a repeated option winning.
 * Unlike getopt it prints nothing itself: an error is one line in
 * g->error that names what was written and, where one is close, the option
 * meant, so that the user is not buried under the whole usage. */
struct tool_option {
    int id;                /* > 0: what tool_getopt_next returns for it; 0 ends the table */
    char short_name;       /* 'n' for -n, or 0 */
    const char *long_name; /* "ctx" for --ctx, or NULL */
    const char *arg;       /* NULL: a flag without value; else what the value is ("a token count") */
    const char *also;      /* other tools' spellings that suggest this option ("-i --temperature"), or NULL */
};

enum {
    TOOL_OPT_END = 0,         /* no arguments left */
    TOOL_OPT_ERROR = -1,      /* g->error says what is wrong */
    TOOL_OPT_HELP = -2,       /* -h or --help */
    TOOL_OPT_POSITIONAL = -3, /* an argument that is not an option: g->value */
};

struct tool_getopt {
    const char *cmd; /* "run": messages read "turbokv run: ..." */
    const struct tool_option *options;
    int argc;
    char **argv;
    int next;           /* index of the next argv element to read */
    int options_ended;  /* "--" seen: the rest are positional */
    const char *value;  /* the value of the option just returned, or the positional argument */
    char flag[80];      /* the option just returned as the user wrote it: "-n", "--ctx" */
    char error[512];
};

void tool_getopt_init(struct tool_getopt *g, const char *cmd, const struct tool_option *options, int argc,
                      char **argv);
/* The id of the next option, or one of TOOL_OPT_*. */
int tool_getopt_next(struct tool_getopt *g);
/* Prints "turbokv CMD: ERROR (turbokv CMD --help lists the options)" on
 * stderr; returns 2, the exit code of a usage error. */
int tool_getopt_fail(const struct tool_getopt *g);
/* Prints "turbokv CMD: FLAG VALUE: expected WHAT" on stderr; returns 2. */
int tool_bad_value(const struct tool_getopt *g, const char *expected);
/* The current option's value as an integer in min..max, else
 * tool_bad_value(g, what) and -1. */
int tool_value_long(const struct tool_getopt *g, long min, long max, const char *what, long *out);
/* The current option's value as a finite float in min..max, else -1 as above. */
int tool_value_float(const struct tool_getopt *g, double min, double max, const char *what, float *out);

/* Of names[n], the one closest to what was typed (a small edit distance,
 * case and '_'/'-' folded, or a prefix of at least 2 letters), or NULL. */
const char *tool_closest(const char *typed, const char *const *names, size_t n);

/* A K/V scheme name as the configuration's `scheme` key reads it: a type
 * name for keys and values alike (value types only: no QJL), K/V type names, or kXvY with X,
 * Y in 32, 16, 8, 4, 3, 2 (f32, f16, q8_0, turbo4, turbo3, turbo2; k8v3 =
 * q8_0 keys, turbo3 values). "auto" is not parsed here. Returns 0, else -1. */
int tool_parse_scheme(const char *name, uint32_t *k_type, uint32_t *v_type);
/* What tool_parse_scheme accepts, for messages. */
#define TOOL_SCHEME_ACCEPTED                                                                   \
    "a type name (f32, f16, q8_0, turbo2, turbo3, turbo4) or kXvY with X, Y in 32, 16, 8, 4, " \
    "3, 2 (k8v4: q8_0 keys, turbo4 values)"

/* Comma-separated list splitting into a static array of strings (in place). */
int tool_split(char *list, char **items, int max);

/* Minimal JSON output helpers: a string with escaping. */
void tool_json_string(FILE *f, const char *s);

/* A progress line on stderr ("\r what: done/total"), only when stderr is a tty
 * or force is set; tool_progress_end clears it. */
void tool_progress(const char *what, uint64_t done, uint64_t total);
void tool_progress_end(void);

/* Monotonic seconds. */
double tool_now(void);

#endif
