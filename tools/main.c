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

static int usage(FILE *f)
{
    fprintf(f, "usage: turbokv <command> [options]   (turbokv <command> --help)\n\ncommands:\n");
    for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++)
        fprintf(f, "  %-6s %s\n", commands[i].name, commands[i].help);
    fprintf(f, "\nturbokv %s. Configuration: etc/turbokv.yaml and TURBO_* variables (see README).\n",
            TKV_VERSION_STRING);
    return f == stderr ? 2 : 0;
}

int main(int argc, char **argv)
{
    if (argc < 2)
        return usage(stderr);
    if (!strcmp(argv[1], "--help") || !strcmp(argv[1], "-h") || !strcmp(argv[1], "help"))
        return usage(stdout);
    if (!strcmp(argv[1], "--version")) {
        printf("turbokv %s\n", TKV_VERSION_STRING);
        return 0;
    }
    for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++)
        if (!strcmp(argv[1], commands[i].name))
            return commands[i].fn(argc - 1, argv + 1);
    fprintf(stderr, "turbokv: unknown command '%s'\n", argv[1]);
    return usage(stderr);
}
