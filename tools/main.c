/* SPDX-License-Identifier: MIT */
/*
 * `turbokv`: the showcase host and benchmark. One subcommand per file.
 */
#include <stdio.h>
#include <string.h>

#include "tool.h"

static const struct {
    const char *name;
    tkv_tool_fn fn;
    const char *help;
} commands[] = {
    { "run", tool_run, "generate text with the compressed cache (shipped stories260K model)" },
    { "ppl", tool_ppl, "perplexity of a text under each K/V type" },
    { "eval", tool_eval, "distortion per type and head_dim against the optimum, attention error" },
    { "bench", tool_bench, "decode-attention and quantize speed per type against dense f32/f16" },
    { "info", tool_info, "plugins found, devices, effective configuration" },
};
#define N_COMMANDS (sizeof commands / sizeof commands[0])

static int usage(FILE *f)
{
    fprintf(f, "usage: turbokv <command> [options]   (turbokv <command> --help)\n\ncommands:\n");
    for (size_t i = 0; i < N_COMMANDS; i++)
        fprintf(f, "  %-6s %s\n", commands[i].name, commands[i].help);
    fprintf(f, "\nturbokv %s. Configuration: the YAML file named by TURBO_CONFIG (else the installed\n"
               "turbokv.yaml) and TURBO_* variables; `turbokv info` shows the effective values.\n"
               "Manual: man turbokv (docs/turbokv.1 in the source tree).\n",
            TKV_VERSION_STRING);
    return f == stderr ? 2 : 0;
}

int main(int argc, char **argv)
{
    if (argc < 2)
        return usage(stderr);
    if (!strcmp(argv[1], "--help") || !strcmp(argv[1], "-h") || !strcmp(argv[1], "help"))
        return usage(stdout);
    if (!strcmp(argv[1], "--version") || !strcmp(argv[1], "-V")) {
        printf("turbokv %s\n", TKV_VERSION_STRING);
        return 0;
    }
    for (size_t i = 0; i < N_COMMANDS; i++)
        if (!strcmp(argv[1], commands[i].name))
            return commands[i].fn(argc - 1, argv + 1);
    const char *names[N_COMMANDS];
    for (size_t i = 0; i < N_COMMANDS; i++)
        names[i] = commands[i].name;
    const char *meant = tool_closest(argv[1], names, N_COMMANDS);
    if (argv[1][0] == '-')
        fprintf(stderr, "turbokv: '%s' comes after a command: turbokv <command> %s (turbokv --help lists the "
                        "commands)\n", argv[1], argv[1]);
    else if (meant)
        fprintf(stderr, "turbokv: unknown command '%s'; did you mean '%s'? (turbokv --help lists the commands)\n",
                argv[1], meant);
    else
        fprintf(stderr, "turbokv: unknown command '%s' (turbokv --help lists the commands)\n", argv[1]);
    return 2;
}
