/* SPDX-License-Identifier: MIT */
/*
 * `turbokv bench --plot F.svg`: two panels of one SVG, time per layer
 * against context (log-log, with each point's spread as a bar) and the
 * speed-up over f16 against context (log x, linear y, a line at 1x). Series
 * differ in colour, dash pattern and marker shape, so that lines which
 * overlap (turbo2/3/4 often do) stay apart in print; axes carry minor ticks.
 */
#include "bench_plot.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <string.h>

#define W 900
#define PANEL_H 360
#define L 80 /* margins: left, right, top (title), gap between panels, bottom */
#define R 150
#define T 70
#define GAP 70
#define B 50
#define H (T + 2 * PANEL_H + GAP + B)

static const char *const colors[] = { "#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd",
                                      "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf" };
static const char *const dashes[] = { "", "6 3", "2 3", "8 3 2 3", "1 2", "10 4" };
#define N_COLORS (int)(sizeof colors / sizeof colors[0])
#define N_DASHES (int)(sizeof dashes / sizeof dashes[0])

struct axis {
    double lo, hi; /* in plotted units: log10 for log axes */
    int log;
    double px0, px1; /* pixels of lo and hi */
};

static double at(const struct axis *a, double v)
{
    double u = a->log ? log10(v) : v;
    return a->px0 + (u - a->lo) / (a->hi - a->lo) * (a->px1 - a->px0);
}

static void marker(FILE *f, int shape, double x, double y, const char *color)
{
    switch (shape % 4) {
    case 0:
        fprintf(f, "<circle cx=\"%.1f\" cy=\"%.1f\" r=\"3.5\" fill=\"%s\"/>\n", x, y, color);
        break;
    case 1:
        fprintf(f, "<rect x=\"%.1f\" y=\"%.1f\" width=\"7\" height=\"7\" fill=\"%s\"/>\n", x - 3.5, y - 3.5, color);
        break;
    case 2:
        fprintf(f, "<path d=\"M%.1f %.1fl4 7h-8z\" fill=\"%s\"/>\n", x, y - 4.5, color);
        break;
    default:
        fprintf(f, "<path d=\"M%.1f %.1fl4.5 4.5l-4.5 4.5l-4.5 -4.5z\" fill=\"%s\"/>\n", x, y - 4.5, color);
        break;
    }
}

/* Gridlines and labels of a log axis: decades labelled, 2..9 as minor ticks. */
static void log_ticks(FILE *f, const struct axis *a, int vertical, double c0, double c1)
{
    for (double e = floor(a->lo); e <= ceil(a->hi); e++)
        for (int m = 1; m <= 9; m++) {
            double v = m * pow(10, e), u = log10(v);
            if (u < a->lo - 1e-9 || u > a->hi + 1e-9)
                continue;
            double p = at(a, v);
            const char *stroke = m == 1 ? "#ccc" : "#eee";
            if (vertical)
                fprintf(f, "<line x1=\"%.1f\" x2=\"%.1f\" y1=\"%.1f\" y2=\"%.1f\" stroke=\"%s\"/>\n", c0, c1, p, p,
                        stroke);
            if (m == 1 || (m == 2 || m == 5))
                fprintf(f, "<text x=\"%.1f\" y=\"%.1f\" text-anchor=\"end\" fill=\"%s\">%g</text>\n", c0 - 6, p + 4,
                        m == 1 ? "black" : "#888", v);
        }
}

/* The context axis: a tick at every power of two in range (minor), the
 * measured contexts labelled. */
static void ctx_ticks(FILE *f, const struct axis *a, const double *ctx, int n, double y0, double y1)
{
    for (double e = floor(a->lo / log10(2.0)); e * log10(2.0) <= a->hi + 1e-9; e++) {
        double v = pow(2, e);
        if (log10(v) < a->lo - 1e-9)
            continue;
        double x = at(a, v);
        fprintf(f, "<line x1=\"%.1f\" x2=\"%.1f\" y1=\"%.1f\" y2=\"%.1f\" stroke=\"#eee\"/>\n", x, x, y0, y1);
        fprintf(f, "<line x1=\"%.1f\" x2=\"%.1f\" y1=\"%.1f\" y2=\"%.1f\" stroke=\"black\"/>\n", x, x, y1, y1 + 4);
    }
    for (int i = 0; i < n; i++) {
        double x = at(a, ctx[i]);
        char label[16];
        if ((unsigned)ctx[i] % 1024 == 0)
            snprintf(label, sizeof label, "%uK", (unsigned)ctx[i] / 1024);
        else
            snprintf(label, sizeof label, "%u", (unsigned)ctx[i]);
        fprintf(f, "<line x1=\"%.1f\" x2=\"%.1f\" y1=\"%.1f\" y2=\"%.1f\" stroke=\"#ccc\"/>"
                   "<text x=\"%.1f\" y=\"%.1f\" text-anchor=\"middle\">%s</text>\n",
                x, x, y0, y1, x, y1 + 17, label);
    }
}

static void series_line(FILE *f, const struct axis *x, const struct axis *y, const struct plot_series *s, int i,
                        const double *v, const double *lo, const double *hi)
{
    const char *color = colors[i % N_COLORS], *dash = dashes[i % N_DASHES];
    fprintf(f, "<polyline fill=\"none\" stroke=\"%s\" stroke-width=\"2\"%s%s%s points=\"", color,
            dash[0] ? " stroke-dasharray=\"" : "", dash, dash[0] ? "\"" : "");
    for (int k = 0; k < s->n; k++)
        if (v[k] > 0)
            fprintf(f, "%.1f,%.1f ", at(x, s->ctx[k]), at(y, v[k]));
    fprintf(f, "\"/>\n");
    for (int k = 0; k < s->n; k++) {
        if (!(v[k] > 0))
            continue;
        double px = at(x, s->ctx[k]);
        if (lo && hi && lo[k] > 0 && hi[k] > lo[k]) /* spread: the middle half of the calls */
            fprintf(f, "<line x1=\"%.1f\" x2=\"%.1f\" y1=\"%.1f\" y2=\"%.1f\" stroke=\"%s\" stroke-width=\"1.5\"/>\n",
                    px, px, at(y, lo[k]), at(y, hi[k]), color);
        marker(f, i, px, at(y, v[k]), color);
    }
}

static void legend(FILE *f, const struct plot_series *s, int n, double y0)
{
    for (int i = 0; i < n; i++) {
        const char *color = colors[i % N_COLORS], *dash = dashes[i % N_DASHES];
        double y = y0 + 20 * i;
        fprintf(f, "<line x1=\"%d\" x2=\"%d\" y1=\"%.1f\" y2=\"%.1f\" stroke=\"%s\" stroke-width=\"2\"%s%s%s/>\n",
                W - R + 12, W - R + 44, y, y, color, dash[0] ? " stroke-dasharray=\"" : "", dash,
                dash[0] ? "\"" : "");
        marker(f, i, W - R + 28, y, color);
        fprintf(f, "<text x=\"%d\" y=\"%.1f\">%s</text>\n", W - R + 50, y + 4, s[i].name);
    }
}

int bench_plot_check(const char *path, char *err, size_t err_size)
{
    FILE *f = fopen(path, "a"); /* not "w": a failed run must not leave an older plot truncated */
    if (!f) {
        snprintf(err, err_size, "--plot %s: %s", path, strerror(errno));
        return -1;
    }
    fclose(f);
    return 0;
}

int bench_plot_write(const char *path, const char *title, const char *subtitle, const struct plot_series *s, int n,
                     char *err, size_t err_size)
{
    double c_lo = INFINITY, c_hi = 0, t_lo = INFINITY, t_hi = 0, x_hi = 0;
    int any_speedup = 0;
    for (int i = 0; i < n; i++)
        for (int k = 0; k < s[i].n; k++) {
            if (!(s[i].us[k] > 0))
                continue;
            c_lo = fmin(c_lo, s[i].ctx[k]);
            c_hi = fmax(c_hi, s[i].ctx[k]);
            t_lo = fmin(t_lo, s[i].lo && s[i].lo[k] > 0 ? s[i].lo[k] : s[i].us[k]);
            t_hi = fmax(t_hi, s[i].hi && s[i].hi[k] > 0 ? s[i].hi[k] : s[i].us[k]);
            if (s[i].speedup && s[i].speedup[k] > 0) {
                x_hi = fmax(x_hi, s[i].speedup[k]);
                any_speedup = 1;
            }
        }
    if (!(c_hi > 0)) {
        snprintf(err, err_size, "--plot %s: no point was measured", path);
        return -1;
    }
    FILE *f = fopen(path, "w");
    if (!f) {
        snprintf(err, err_size, "--plot %s: %s", path, strerror(errno));
        return -1;
    }
    /* a context axis with half a step of room on each side */
    double span = c_hi > c_lo ? log10(c_hi) - log10(c_lo) : 1.0;
    struct axis x = { log10(c_lo) - 0.06 * span, log10(c_hi) + 0.06 * span, 1, L, W - R };
    struct axis ty = { floor(log10(t_lo) * 4) / 4, ceil(log10(t_hi) * 4) / 4, 1, T + PANEL_H, T };
    if (ty.hi <= ty.lo)
        ty.hi = ty.lo + 1;
    double top = any_speedup ? ceil(fmax(x_hi, 1.0) * 1.1 * 2) / 2 : 2.0;
    struct axis sy = { 0, top, 0, T + 2 * PANEL_H + GAP, T + PANEL_H + GAP };

    fprintf(f, "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"%d\" height=\"%d\" font-family=\"sans-serif\" "
               "font-size=\"12\">\n<rect width=\"100%%\" height=\"100%%\" fill=\"white\"/>\n",
            W, H);
    fprintf(f, "<text x=\"%d\" y=\"24\" font-size=\"15\">%s</text>\n<text x=\"%d\" y=\"44\" fill=\"#444\">%s</text>\n",
            L, title, L, subtitle);

    /* time panel */
    log_ticks(f, &ty, 1, L, W - R);
    ctx_ticks(f, &x, s[0].ctx, s[0].n, T, T + PANEL_H);
    fprintf(f, "<rect x=\"%d\" y=\"%d\" width=\"%d\" height=\"%d\" fill=\"none\" stroke=\"black\"/>\n", L, T, W - L - R,
            PANEL_H);
    fprintf(f, "<text transform=\"translate(22 %d) rotate(-90)\" text-anchor=\"middle\">time per layer (us, log; "
               "bar: middle half of the calls)</text>\n",
            T + PANEL_H / 2);
    for (int i = 0; i < n; i++)
        series_line(f, &x, &ty, &s[i], i, s[i].us, s[i].lo, s[i].hi);
    legend(f, s, n, T + 12);

    /* speed-up panel */
    int y0 = T + PANEL_H + GAP, y1 = y0 + PANEL_H;
    for (double v = 0; v <= top + 1e-9; v += top > 8 ? 2 : top > 4 ? 1 : 0.5) {
        double p = at(&sy, v);
        fprintf(f, "<line x1=\"%d\" x2=\"%d\" y1=\"%.1f\" y2=\"%.1f\" stroke=\"%s\"/>"
                   "<text x=\"%d\" y=\"%.1f\" text-anchor=\"end\">%gx</text>\n",
                L, W - R, p, p, v == 1.0 ? "black" : "#e4e4e4", L - 6, p + 4, v);
    }
    ctx_ticks(f, &x, s[0].ctx, s[0].n, y0, y1);
    fprintf(f, "<rect x=\"%d\" y=\"%d\" width=\"%d\" height=\"%d\" fill=\"none\" stroke=\"black\"/>\n", L, y0, W - L - R,
            PANEL_H);
    fprintf(f, "<text transform=\"translate(22 %d) rotate(-90)\" text-anchor=\"middle\">speed-up over f16 "
               "(f16 time / time)</text>\n",
            y0 + PANEL_H / 2);
    if (any_speedup) {
        for (int i = 0; i < n; i++)
            if (s[i].speedup)
                series_line(f, &x, &sy, &s[i], i, s[i].speedup, NULL, NULL);
    } else {
        fprintf(f, "<text x=\"%d\" y=\"%d\" text-anchor=\"middle\" fill=\"#888\">no f16 in --types: no speed-up to "
                   "show</text>\n",
                (L + W - R) / 2, y0 + PANEL_H / 2);
    }
    fprintf(f, "<text x=\"%d\" y=\"%d\" text-anchor=\"middle\">context (tokens, log scale)</text>\n</svg>\n",
            (L + W - R) / 2, H - 12);
    if (fclose(f) != 0) {
        snprintf(err, err_size, "--plot %s: %s", path, strerror(errno));
        return -1;
    }
    return 0;
}
