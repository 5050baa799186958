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
int tool_bench_paged(const char *backend, const uint32_t *ctx, int n_ctx, uint32_t q_heads, uint32_t kv_heads,
                     uint32_t head_dim, uint32_t type, int json);

/* Opens a context the way every subcommand does: config + env, with the
 * build tree's plugin directories searched first when the tool runs
 * uninstalled. backend may be NULL (config/env decide). Prints the error
 * and returns NULL on failure. */
tkv_context *tool_open_context(const char *backend);

/* Prints "turbokv: <what>: <tkv_last_error()>" to stderr; returns 1. */
int tool_fail(const char *what, int status);

/* Path of a file shipped in models/ (build tree or install datadir). */
const char *tool_model_path(const char *file, char *buf, size_t size);

/* Option parsing: "--name value" or "--name=value". Returns the value when
 * argv[*i] is option name (advancing *i past a separate value), else NULL.
 * A missing value prints an error and exits 2. */
const char *tool_opt(int argc, char **argv, int *i, const char *name);

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
