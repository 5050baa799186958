/* SPDX-License-Identifier: MIT */
/*
 * The SVG of `turbokv bench --plot` (bench_plot.c).
 */
#ifndef TKV_TOOL_BENCH_PLOT_H
#define TKV_TOOL_BENCH_PLOT_H

#include <stddef.h>

/* One type's points: n contexts, the median time per layer (us, 0: not
 * measured), its spread (lo, hi: the 25th and 75th percentile of the
 * calls; NULL: none) and the speed-up over f16 (NULL or 0: none). */
struct plot_series {
    const char *name;
    int n;
    const double *ctx, *us, *lo, *hi, *speedup;
};

/* Whether path can be written, before the benchmark runs (the file is
 * opened for appending, so an existing plot is left as it is). */
int bench_plot_check(const char *path, char *err, size_t err_size);

/* Writes the plot; title and subtitle are plain text (no markup). */
int bench_plot_write(const char *path, const char *title, const char *subtitle, const struct plot_series *s, int n,
                     char *err, size_t err_size);

#endif
