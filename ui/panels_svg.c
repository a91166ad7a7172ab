/* The SVG export of the panels: a fixed-size figure of four charts
 * (utilization of the selected layer, entropy per layer with its history,
 * the loss curves, the heatmap of layers x experts) under the status line. */
#include "panels.h"

#include <errno.h>
#include <locale.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <utf8proc.h>

#include "panels_internal.h"

#define SVG_WIDTH 960
#define SVG_HEIGHT 660
#define STATUS_COLUMNS 160 /* the status line is rendered into this many cells */

/* Chart areas, in SVG user units. */
static const struct rect usage_area = { 20, 90, 440, 250 };
static const struct rect entropy_area = { 500, 90, 440, 250 };
static const struct rect loss_area = { 20, 390, 440, 240 };
static const struct rect heat_area = { 500, 390, 440, 240 };

static const char *const colour_loss = "#2ca02c";
static const char *const colour_ema = "#555555";
static const char *const colour_validation = "#ff7f0e";
static const char *const colour_bar = "#1f77b4";
static const char *const colour_dropped = "#d62728";
static const char *const line_colours[] = { "#1f77b4", "#d62728", "#2ca02c", "#9467bd",
                                            "#ff7f0e", "#8c564b", "#e377c2", "#7f7f7f" };

/* Writes text as XML character data: the five markup characters escaped,
 * invalid UTF-8 and the control characters XML 1.0 forbids as '?'. */
static void write_xml_text(FILE *f, const char *text)
{
    size_t length = strlen(text), at = 0;
    while (at < length) {
        utf8proc_int32_t ch;
        utf8proc_ssize_t used = utf8proc_iterate((const utf8proc_uint8_t *)text + at,
                                                 (utf8proc_ssize_t)(length - at), &ch);
        if (used <= 0) {
            fputc('?', f);
            at++;
            continue;
        }
        switch (ch) {
        case '<': fputs("&lt;", f); break;
        case '>': fputs("&gt;", f); break;
        case '&': fputs("&amp;", f); break;
        case '"': fputs("&quot;", f); break;
        case '\'': fputs("&apos;", f); break;
        default:
            if ((ch < 0x20 && ch != '\t') || ch == 0xFFFE || ch == 0xFFFF)
                fputc('?', f);
            else
                fwrite(text + at, 1, (size_t)used, f);
        }
        at += (size_t)used;
    }
}

/* Writes a <text> element at (x, y) with extra attributes (may be ""). */
static void write_label(FILE *f, double x, double y, const char *attributes, const char *text)
{
    fprintf(f, "<text x=\"%.1f\" y=\"%.1f\"%s%s>", x, y, attributes[0] ? " " : "", attributes);
    write_xml_text(f, text);
    fputs("</text>\n", f);
}

static void write_chart_title(FILE *f, struct rect area, const char *title)
{
    write_label(f, area.x, area.y - 8, "font-size=\"13\"", title);
}

static void write_empty_note(FILE *f, struct rect area, const char *note)
{
    write_label(f, area.x, area.y + 20, "fill=\"#888\"", note);
}

/* Writes the status line as the screen shows it, rendered in ASCII. */
static void write_status(FILE *f, const struct screen_state *s)
{
    struct canvas line;
    char text[STATUS_COLUMNS * 4 + 1];
    if (canvas_init(&line, STATUS_COLUMNS, 1, 1) != 0)
        return;
    panel_status(&line, (struct rect){ 0, 0, STATUS_COLUMNS, 1 }, s);
    canvas_row_utf8(&line, 0, text, sizeof text);
    canvas_free(&line);
    write_label(f, 20, 46, "font-family=\"monospace\"", text);
}

/* Writes a vertical bar per expert of the selected layer, with the expert's
 * dropped tokens in red on top in counts mode. */
static void write_usage(FILE *f, const struct screen_state *s, double *values)
{
    struct rect a = usage_area;
    const struct usage_table *t = &s->usage;
    int row = s->has_usage ? usage_table_row(t, s->decoder, s->layer) : -1;
    if (row < 0) {
        char note[96];
        snprintf(note, sizeof note, "no MoE layer %d in the %s (it has %d)", s->layer + 1,
                 s->decoder ? "decoder" : "encoder", t->layers[s->decoder ? 1 : 0]);
        write_chart_title(f, a, "utilization");
        write_empty_note(f, a, s->has_usage ? note : "no usage yet");
        return;
    }
    char title[128];
    snprintf(title, sizeof title, "utilization  %s block %d (MoE layer %d/%d)  %s",
             s->decoder ? "decoder" : "encoder", t->blocks[row], s->layer + 1,
             t->layers[s->decoder ? 1 : 0], s->soft ? "mean router probability" : "share");
    write_chart_title(f, a, title);

    /* in counts mode the dropped tokens stack on the kept ones, in the same
     * unit: tokens per kept token of the layer */
    int64_t kept_total = 0;
    for (int e = 0; e < t->experts; e++)
        kept_total += t->kept[(size_t)row * (size_t)t->experts + (size_t)e];
    double per_token = kept_total > 0 && !s->soft ? 1.0 / (double)kept_total : 0.0;
    panels_usage_values(t, row, s->soft, values);
    double largest = 0.0;
    for (int e = 0; e < t->experts; e++) {
        size_t at = (size_t)row * (size_t)t->experts + (size_t)e;
        largest = fmax(largest, values[e] + per_token * (double)t->dropped[at]);
    }
    if (largest <= 0.0)
        largest = 1.0;
    double plot_h = a.h - 20, slot = (double)(a.w - 50) / t->experts;
    double x0 = a.x + 50, bottom = a.y + plot_h;
    fprintf(f, "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"#888\"/>\n",
            x0, bottom, x0 + slot * t->experts, bottom);
    char label[32];
    snprintf(label, sizeof label, "%.1f%%", 100.0 * largest);
    write_label(f, x0 - 4, a.y + 10, "text-anchor=\"end\" fill=\"#555\"", label);
    write_label(f, x0 - 4, bottom, "text-anchor=\"end\" fill=\"#555\"", "0%");

    for (int e = 0; e < t->experts; e++) {
        size_t at = (size_t)row * (size_t)t->experts + (size_t)e;
        double value = values[e];
        double h = plot_h * value / largest, x = x0 + slot * e;
        double dropped_h = plot_h * per_token * (double)t->dropped[at] / largest;
        fprintf(f, "<rect x=\"%.1f\" y=\"%.1f\" width=\"%.1f\" height=\"%.1f\" fill=\"%s\">"
                "<title>expert %d: %.1f%%, kept %lld, dropped %lld</title></rect>\n",
                x + slot * 0.1, bottom - h, slot * 0.8, h, colour_bar, e, 100.0 * value,
                (long long)t->kept[at], (long long)t->dropped[at]);
        if (dropped_h > 0)
            fprintf(f, "<rect x=\"%.1f\" y=\"%.1f\" width=\"%.1f\" height=\"%.1f\" "
                    "fill=\"%s\"/>\n", x + slot * 0.1, bottom - h - dropped_h, slot * 0.8,
                    dropped_h, colour_dropped);
        if (t->experts <= 32 || e % (t->experts / 16) == 0) {
            snprintf(label, sizeof label, "%d", e);
            write_label(f, x + slot / 2, bottom + 14, "text-anchor=\"middle\" fill=\"#555\"",
                        label);
        }
    }
}

/* Writes a bar and value per layer, then the layers' entropy history as lines. */
static void write_entropy(FILE *f, const struct screen_state *s)
{
    struct rect a = entropy_area;
    write_chart_title(f, a, "normalized entropy per MoE layer");
    const struct usage_table *t = &s->usage;
    int rows = s->has_usage ? usage_table_rows(t) : 0;
    if (rows == 0) {
        write_empty_note(f, a, "no usage yet");
        return;
    }

    /* bars in the top half, each a tenth of it high, thinner beyond 10 layers */
    double row_h = (a.h / 2.0) / (rows > 10 ? rows : 10), bar_w = a.w - 110;
    for (int row = 0; row < rows; row++) {
        char label[32], value[16];
        double entropy = usage_table_entropy(t, row), y = a.y + row * row_h;
        panels_row_label(t, row, label, sizeof label);
        snprintf(value, sizeof value, "%.3f", entropy);
        write_label(f, a.x + 50, y + row_h * 0.8, "text-anchor=\"end\"", label);
        fprintf(f, "<rect x=\"%d\" y=\"%.1f\" width=\"%.1f\" height=\"%.1f\" fill=\"%s\"/>\n",
                a.x + 56, y + row_h * 0.1, bar_w * entropy, row_h * 0.8,
                line_colours[row % 8]);
        write_label(f, a.x + 60 + bar_w, y + row_h * 0.8, "", value);
    }

    /* history: y from 0 to 1, one sample per step of the x axis */
    struct rect chart = { a.x + 50, a.y + a.h / 2 + 20, a.w - 60, a.h / 2 - 20 };
    fprintf(f, "<rect x=\"%d\" y=\"%d\" width=\"%d\" height=\"%d\" fill=\"none\" "
            "stroke=\"#888\"/>\n", chart.x, chart.y, chart.w, chart.h);
    write_label(f, chart.x - 4, chart.y + 10, "text-anchor=\"end\" fill=\"#555\"", "1");
    write_label(f, chart.x - 4, chart.y + chart.h, "text-anchor=\"end\" fill=\"#555\"", "0");
    int count = s->entropy_count < SCREEN_HISTORY ? s->entropy_count : SCREEN_HISTORY;
    if (s->entropy == NULL || count < 1)
        return;
    double step = count > 1 ? (double)chart.w / (count - 1) : 0.0;
    for (int row = 0; row < rows && row < s->entropy_rows; row++) {
        const double *history = s->entropy + (size_t)row * SCREEN_HISTORY;
        fprintf(f, "<polyline fill=\"none\" stroke=\"%s\" stroke-width=\"1.5\" points=\"",
                line_colours[row % 8]);
        for (int k = 0; k < count; k++)
            if (isfinite(history[k]))
                fprintf(f, "%.1f,%.1f ", chart.x + step * k,
                        chart.y + chart.h * (1.0 - fmin(fmax(history[k], 0.0), 1.0)));
        fputs("\"/>\n", f);
    }
}

/* Writes the training loss and its average as lines, validation losses as dots. */
static void write_loss(FILE *f, const struct screen_state *s)
{
    struct rect a = loss_area;
    write_chart_title(f, a, "loss (green), its moving average (grey), validation (orange)");
    int count = panels_loss_count(s);
    double ema[SCREEN_HISTORY];
    panels_loss_ema(s, ema);
    double low = INFINITY, high = -INFINITY;
    for (int k = 0; k < count; k++) {
        const double values[3] = { s->loss[k], ema[k], s->validation[k] };
        for (int i = 0; i < 3; i++)
            if (isfinite(values[i])) {
                low = fmin(low, values[i]);
                high = fmax(high, values[i]);
            }
    }
    if (!(low <= high)) {
        write_empty_note(f, a, "no loss yet");
        return;
    }
    if (high - low < 1e-9) {
        low -= 0.5;
        high += 0.5;
    }

    struct rect chart = { a.x + 50, a.y, a.w - 60, a.h - 20 };
    fprintf(f, "<rect x=\"%d\" y=\"%d\" width=\"%d\" height=\"%d\" fill=\"none\" "
            "stroke=\"#888\"/>\n", chart.x, chart.y, chart.w, chart.h);
    char label[48];
    snprintf(label, sizeof label, "%.3f", high);
    write_label(f, chart.x - 4, chart.y + 10, "text-anchor=\"end\" fill=\"#555\"", label);
    snprintf(label, sizeof label, "%.3f", low);
    write_label(f, chart.x - 4, chart.y + chart.h, "text-anchor=\"end\" fill=\"#555\"", label);
    snprintf(label, sizeof label, "step %ld-%ld", s->loss_step[0], s->loss_step[count - 1]);
    write_label(f, chart.x, chart.y + chart.h + 14, "fill=\"#555\"", label);

    double step = count > 1 ? (double)chart.w / (count - 1) : 0.0;
    const double *curves[2] = { s->loss, ema };
    const char *colours[2] = { colour_loss, colour_ema };
    for (int i = 0; i < 2; i++) {
        fprintf(f, "<polyline fill=\"none\" stroke=\"%s\" stroke-width=\"1.5\" points=\"",
                colours[i]);
        for (int k = 0; k < count; k++)
            if (isfinite(curves[i][k]))
                fprintf(f, "%.1f,%.1f ", chart.x + step * k,
                        chart.y + chart.h * (high - curves[i][k]) / (high - low));
        fputs("\"/>\n", f);
    }
    for (int k = 0; k < count; k++)
        if (isfinite(s->validation[k]))
            fprintf(f, "<circle cx=\"%.1f\" cy=\"%.1f\" r=\"3\" fill=\"%s\">"
                    "<title>step %ld: validation %.4f</title></circle>\n",
                    chart.x + step * k,
                    chart.y + chart.h * (high - s->validation[k]) / (high - low),
                    colour_validation, s->loss_step[k], s->validation[k]);
}

/* Writes one cell per layer and expert, darker for a larger value, on one
 * scale from 0 to the largest value of the map. */
static void write_heatmap(FILE *f, const struct screen_state *s, double *values)
{
    struct rect a = heat_area;
    write_chart_title(f, a, s->soft ? "mean router probability per layer and expert"
                                    : "share of kept tokens per layer and expert");
    const struct usage_table *t = &s->usage;
    int rows = s->has_usage ? usage_table_rows(t) : 0;
    if (rows == 0 || t->experts <= 0) {
        write_empty_note(f, a, "no usage yet");
        return;
    }
    double largest = 0.0;
    for (int row = 0; row < rows; row++) {
        panels_usage_values(t, row, s->soft, values);
        for (int e = 0; e < t->experts; e++)
            largest = fmax(largest, values[e]);
    }
    if (largest <= 0.0)
        largest = 1.0;

    double cell_w = (double)(a.w - 60) / t->experts;
    double cell_h = fmin(20.0, (double)(a.h - 30) / rows);
    for (int row = 0; row < rows; row++) {
        char label[32];
        double y = a.y + row * cell_h;
        panels_row_label(t, row, label, sizeof label);
        write_label(f, a.x + 52, y + cell_h * 0.75, "text-anchor=\"end\"", label);
        panels_usage_values(t, row, s->soft, values);
        for (int e = 0; e < t->experts; e++) {
            double value = values[e];
            int level = (int)lround(255.0 * (1.0 - value / largest));
            fprintf(f, "<rect x=\"%.2f\" y=\"%.2f\" width=\"%.2f\" height=\"%.2f\" "
                    "fill=\"rgb(%d,%d,255)\"><title>%s expert %d: %.1f%%</title></rect>\n",
                    a.x + 56 + cell_w * e, y, cell_w, cell_h, level, level, label, e,
                    100.0 * value);
        }
    }
    char legend[64];
    snprintf(legend, sizeof legend, "white 0%%, darkest %.1f%%", 100.0 * largest);
    write_label(f, a.x + 56, a.y + rows * cell_h + 16, "fill=\"#555\"", legend);
}

/* values is scratch space for one value per expert of the usage. */
static void write_figure(FILE *f, const struct screen_state *s, double *values)
{
    fprintf(f, "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"%d\" height=\"%d\" "
            "font-family=\"sans-serif\" font-size=\"11\">\n", SVG_WIDTH, SVG_HEIGHT);
    fputs("<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n", f);
    write_label(f, 20, 24, "font-size=\"15\"", "CAEM Workbench");
    write_status(f, s);
    if (s->has_usage && s->usage_source[0] != '\0')
        write_label(f, 20, 64, "fill=\"#555\"", s->usage_source);
    write_usage(f, s, values);
    write_entropy(f, s);
    write_loss(f, s);
    write_heatmap(f, s, values);
    fputs("</svg>\n", f);
}

int screen_export_svg(const struct screen_state *s, const char *path, struct caem_error *err)
{
    size_t length = strlen(path);
    int experts = s->has_usage && s->usage.experts > 0 ? s->usage.experts : 1;
    char *temporary = malloc(length + 5);
    double *values = malloc((size_t)experts * sizeof *values);
    if (temporary == NULL || values == NULL) {
        free(temporary);
        free(values);
        return caem_fail(err, "exporting the screen to %s failed: out of memory", path);
    }
    snprintf(temporary, length + 5, "%s.tmp", path);

    FILE *f = fopen(temporary, "w");
    if (f == NULL) {
        int error = errno;
        caem_fail(err, "exporting the screen to %s failed: cannot create %s: %s", path,
                  temporary, strerror(error));
        free(temporary);
        free(values);
        return -1;
    }

    /* numbers in SVG take a '.', whatever LC_NUMERIC the program set */
    locale_t c_numeric = newlocale(LC_NUMERIC_MASK, "C", (locale_t)0);
    locale_t previous = c_numeric != (locale_t)0 ? uselocale(c_numeric) : (locale_t)0;
    errno = 0;
    write_figure(f, s, values);
    free(values);
    if (c_numeric != (locale_t)0) {
        uselocale(previous);
        freelocale(c_numeric);
    }

    /* A failed write leaves its errno, and fflush sets it again for what the
     * buffer still held. EIO is reported when neither set one. */
    const char *action = NULL;
    int error = 0;
    if (fflush(f) != 0 || ferror(f)) {
        action = "cannot write";
        error = errno != 0 ? errno : EIO;
    }
    if (fclose(f) != 0 && action == NULL) {
        action = "cannot write";
        error = errno;
    }
    if (action == NULL && rename(temporary, path) != 0) {
        action = "cannot rename";
        error = errno;
    }
    if (action != NULL) {
        remove(temporary);
        caem_fail(err, "exporting the screen to %s failed: %s %s: %s", path, action,
                  temporary, strerror(error));
        free(temporary);
        return -1;
    }
    free(temporary);
    return 0;
}
