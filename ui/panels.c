#include "panels.h"

#include <inttypes.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "panels_internal.h"
#include "progress.h"

/* Cells of the status line's progress bar, between its brackets. */
#define STATUS_BAR_CELLS 10
/* Cells of an entropy bar when the panel is wide enough. */
#define ENTROPY_BAR_CELLS 10
/* An entropy from here up is drawn as STYLE_GOOD: routing spread over the
 * experts rather than collapsed onto a few. */
#define ENTROPY_HIGH 0.5

const char *const screen_key_help[] = {
    "F1 or ?      help (this overlay; ? only on an empty input line)",
    "F2 / F3      previous / next MoE layer",
    "F4           switch encoder / decoder",
    "F5           switch top-1 counts / soft usage",
    "F6           heatmap view (again: back to the panels)",
    "F7           merge view (again: back to the panels)",
    "F8           pause / resume the job",
    "F9           run one step of a paused job",
    "F10          stop the job",
    "F12          export the panels as SVG (caem-screen.svg)",
    "PgUp / PgDn  scroll the REPL output",
    "Ctrl-C       stop the running job (never quits)",
    "Ctrl-D       quit (asks first while a job runs)",
    NULL,
};

void screen_state_init(struct screen_state *s)
{
    memset(s, 0, sizeof *s);
}

void screen_state_free(struct screen_state *s)
{
    free(s->entropy);
    usage_table_free(&s->usage);
    merge_record_free(&s->merge);
    screen_state_init(s);
}

/* ---- helpers shared with the SVG export ---- */

void panels_format_count(int64_t n, char *out, size_t size)
{
    char digits[32], grouped[48];
    snprintf(digits, sizeof digits, "%" PRId64, n);
    const char *d = digits;
    size_t used = 0;
    if (*d == '-')
        grouped[used++] = *d++;
    size_t length = strlen(d);
    for (size_t i = 0; i < length; i++) {
        if (i > 0 && (length - i) % 3 == 0)
            grouped[used++] = ',';
        grouped[used++] = d[i];
    }
    grouped[used] = '\0';
    snprintf(out, size, "%s", grouped);
}

void panels_usage_values(const struct usage_table *t, int row, int soft, double *values)
{
    const int64_t *kept = t->kept + (size_t)row * (size_t)t->experts;
    int64_t total = 0;
    for (int e = 0; e < t->experts; e++)
        total += kept[e];
    for (int e = 0; e < t->experts; e++) {
        if (soft)
            values[e] = usage_table_soft(t, row, e);
        else
            values[e] = total > 0 ? (double)kept[e] / (double)total : 0.0;
    }
}

void panels_row_label(const struct usage_table *t, int row, char *out, size_t size)
{
    int decoder = row >= t->layers[0];
    snprintf(out, size, "%s %d", decoder ? "dec" : "enc", t->blocks[row]);
}

int panels_loss_count(const struct screen_state *s)
{
    if (s->loss_count < 0)
        return 0;
    return s->loss_count < SCREEN_HISTORY ? s->loss_count : SCREEN_HISTORY;
}

void panels_loss_ema(const struct screen_state *s, double *ema)
{
    double average = NAN;
    for (int k = 0; k < panels_loss_count(s); k++) {
        if (isfinite(s->loss[k]))
            average = isnan(average) ? s->loss[k]
                                     : PANELS_EMA_WEIGHT * average +
                                           (1.0 - PANELS_EMA_WEIGHT) * s->loss[k];
        ema[k] = average;
    }
}

/* ---- drawing helpers ---- */

static struct rect rect_inside(struct rect r)
{
    return (struct rect){ r.x + 1, r.y + 1, r.w - 2, r.h - 2 };
}

/* Writes formatted text at *x, no further than column `end`, and moves *x
 * past it. */
static void append_text(struct canvas *c, int *x, int end, int y, enum canvas_style style,
                        const char *format, ...) __attribute__((format(printf, 6, 7)));

static void append_text(struct canvas *c, int *x, int end, int y, enum canvas_style style,
                        const char *format, ...)
{
    if (*x >= end)
        return;
    char text[1200];
    va_list ap;
    va_start(ap, format);
    vsnprintf(text, sizeof text, format, ap);
    va_end(ap);
    *x += canvas_text(c, *x, y, end - *x, style, text);
}

/* Writes one character at *x unless *x has reached column `end`. */
static void append_mark(struct canvas *c, int *x, int end, int y, wchar_t ch,
                        enum canvas_style style)
{
    if (*x >= end)
        return;
    canvas_put(c, *x, y, ch, style);
    *x += 1;
}

static int digit_count(long n)
{
    int digits = 1;
    for (n = n < 0 ? -n : n; n >= 10; n /= 10)
        digits++;
    return digits;
}

/* The first of `window` consecutive rows out of `count` to show, so that
 * `selected` (or the top, when it is -1) is among them. */
static int window_start(int count, int window, int selected)
{
    if (window <= 0 || count <= window || selected < window)
        return 0;
    int first = selected - window + 1;
    return first + window > count ? count - window : first;
}

static const char *stack_name(int decoder)
{
    return decoder ? "decoder" : "encoder";
}

/* ---- status line ---- */

static int job_ended(enum job_state state)
{
    return state == JOB_STOPPED || state == JOB_FINISHED || state == JOB_FAILED;
}

/* The parts of a job's status line, formatted before drawing so that the
 * line can leave out the bar, the elapsed time and the rate, in that order,
 * to fit. An empty part is not shown_rows. */
struct status_parts {
    char kind[40], state[16], progress[64], loss[32], validation[32];
    char rate[48], elapsed[48], eta[48];
    int bar, show_elapsed, show_rate;
};

static void status_parts_format(const struct job_status *job, struct status_parts *p)
{
    const struct job_report *report = &job->report;
    memset(p, 0, sizeof *p);
    p->bar = p->show_elapsed = p->show_rate = 1;
    snprintf(p->kind, sizeof p->kind, "%s", job->kind[0] ? job->kind : "job");
    snprintf(p->state, sizeof p->state, " %s", job_state_name(job->state));

    /* train jobs count steps, the others their own units */
    if (strcmp(job->kind, "train") == 0)
        snprintf(p->progress, sizeof p->progress, "  step %ld/%ld", report->step,
                 report->steps);
    else
        snprintf(p->progress, sizeof p->progress, "  %ld/%ld", report->step, report->steps);
    if (isfinite(report->loss))
        snprintf(p->loss, sizeof p->loss, "loss %.4f", report->loss);
    if (isfinite(report->validation_loss))
        snprintf(p->validation, sizeof p->validation, "  val %.2f", report->validation_loss);

    /* a failed job shows its message in place of rate and times */
    if (job->state == JOB_FAILED)
        return;
    if (isfinite(report->tokens_per_second) && report->tokens_per_second > 0) {
        char count[32];
        panels_format_count(llround(report->tokens_per_second), count, sizeof count);
        snprintf(p->rate, sizeof p->rate, "  %s tok/s", count);
    }
    char duration[32];
    progress_format_duration(job->elapsed, duration, sizeof duration);
    snprintf(p->elapsed, sizeof p->elapsed, "  elapsed %s", duration);
    if (!job_ended(job->state) && report->step > 0 && isfinite(report->eta)) {
        progress_format_duration(report->eta, duration, sizeof duration);
        snprintf(p->eta, sizeof p->eta, "  ETA %s", duration);
    }
}

static int status_parts_width(const struct status_parts *p)
{
    int width = canvas_text_cells(p->kind) + (int)strlen(p->state) + (int)strlen(p->progress);
    if (p->bar)
        width += 3 + STATUS_BAR_CELLS;
    if (p->loss[0] != '\0')
        width += (p->bar ? 1 : 2) + (int)strlen(p->loss);
    width += (int)strlen(p->validation) + (int)strlen(p->eta);
    if (p->show_rate)
        width += (int)strlen(p->rate);
    if (p->show_elapsed)
        width += (int)strlen(p->elapsed);
    return width;
}

/* Draws the job's progress from x up to column end. */
static void draw_job_status(struct canvas *c, int x, int end, int y,
                            const struct job_status *job)
{
    struct status_parts p;
    status_parts_format(job, &p);
    if (status_parts_width(&p) > end - x)
        p.bar = 0;
    if (status_parts_width(&p) > end - x)
        p.show_elapsed = 0;
    if (status_parts_width(&p) > end - x)
        p.show_rate = 0;

    enum canvas_style state_style = job->state == JOB_FAILED ? STYLE_WARN
                                    : job->state == JOB_PAUSED ? STYLE_ACCENT
                                                               : STYLE_PLAIN;
    append_text(c, &x, end, y, STYLE_TITLE, "%s", p.kind);
    append_text(c, &x, end, y, state_style, "%s", p.state);
    append_text(c, &x, end, y, STYLE_PLAIN, "%s", p.progress);
    if (p.bar && end - x >= STATUS_BAR_CELLS + 3) {
        double fraction = job->report.steps > 0 ? (double)job->report.step / job->report.steps
                                                : 0.0;
        append_text(c, &x, end, y, STYLE_DIM, " [");
        canvas_bar(c, x, y, STATUS_BAR_CELLS, fraction, STYLE_BAR);
        x += STATUS_BAR_CELLS;
        append_text(c, &x, end, y, STYLE_DIM, "]");
    }
    if (p.loss[0] != '\0')
        append_text(c, &x, end, y, STYLE_PLAIN, "%s%s", p.bar ? " " : "  ", p.loss);
    append_text(c, &x, end, y, STYLE_ACCENT, "%s", p.validation);
    if (job->state == JOB_FAILED) {
        append_text(c, &x, end, y, STYLE_WARN, "  %s", job->message);
        return;
    }
    if (p.show_rate)
        append_text(c, &x, end, y, STYLE_PLAIN, "%s", p.rate);
    if (p.show_elapsed)
        append_text(c, &x, end, y, STYLE_PLAIN, "%s", p.elapsed);
    append_text(c, &x, end, y, STYLE_PLAIN, "%s", p.eta);
}

/* The notice takes the right end of the line, up to half of it, and the
 * job's progress the rest. */
void panel_status(struct canvas *c, struct rect r, const struct screen_state *s)
{
    canvas_clear_rect(c, r);
    if (r.w <= 0 || r.h <= 0)
        return;
    int end = r.x + r.w;
    if (s->notice[0] != '\0') {
        int width = canvas_text_cells(s->notice);
        if (width > r.w / 2)
            width = r.w / 2;
        canvas_text(c, end - width, r.y, width, STYLE_ACCENT, s->notice);
        end -= width + 2;
    }
    if (!s->has_job) {
        canvas_text(c, r.x, r.y, end - r.x, STYLE_DIM, "no job  (F1 help)");
        return;
    }
    draw_job_status(c, r.x, end, r.y, &s->job);
}

/* ---- utilization ---- */

/* Column widths of the utilization rows: "IDX BAR SHARE KEPT DROPPED". */
struct usage_columns {
    int index, bar, share, kept, dropped;
};

static struct usage_columns usage_columns(const struct usage_table *t, int row, int width)
{
    struct usage_columns w = { digit_count(t->experts - 1), 0, 6, 4, 7 };
    for (int e = 0; e < t->experts; e++) {
        char count[32];
        size_t at = (size_t)row * (size_t)t->experts + (size_t)e;
        panels_format_count(t->kept[at], count, sizeof count);
        if ((int)strlen(count) > w.kept)
            w.kept = (int)strlen(count);
        panels_format_count(t->dropped[at], count, sizeof count);
        if ((int)strlen(count) > w.dropped)
            w.dropped = (int)strlen(count);
    }
    /* what is left after the columns and a space after each goes to the bar */
    int left = width - (w.index + 1 + w.share + 1 + w.kept + 1 + w.dropped);
    w.bar = left >= 4 ? left - 1 : 0;
    return w;
}

/* Draws expert e's line from in.x: index, bar (scaled so the largest value
 * fills it), percentage, kept and dropped counts. */
static void draw_usage_expert(struct canvas *c, struct rect in, int y,
                              const struct usage_columns *w, const struct usage_table *t,
                              int row, int e, double value, double largest)
{
    size_t at = (size_t)row * (size_t)t->experts + (size_t)e;
    char kept[32], dropped[32];
    panels_format_count(t->kept[at], kept, sizeof kept);
    panels_format_count(t->dropped[at], dropped, sizeof dropped);

    int x = in.x, end = in.x + in.w;
    append_text(c, &x, end, y, STYLE_DIM, "%*d ", w->index, e);
    if (w->bar > 0) {
        canvas_bar(c, x, y, w->bar, largest > 0 ? value / largest : 0.0, STYLE_BAR);
        x += w->bar + 1;
    }
    append_text(c, &x, end, y, STYLE_PLAIN, "%5.1f%% ", 100.0 * value);
    append_text(c, &x, end, y, STYLE_PLAIN, "%*s ", w->kept, kept);

    /* the padding stays plain, so that only the count takes the dropped style */
    append_text(c, &x, end, y, STYLE_PLAIN, "%*s", w->dropped - (int)strlen(dropped), "");
    append_text(c, &x, end, y, t->dropped[at] > 0 ? STYLE_DROPPED : STYLE_DIM, "%s", dropped);
}

static void draw_usage_header(struct canvas *c, struct rect in, int y,
                              const struct usage_columns *w, int soft)
{
    int x = in.x, end = in.x + in.w;
    append_text(c, &x, end, y, STYLE_DIM, "%*s ", w->index, "e");
    if (w->bar > 0)
        x += w->bar + 1;
    append_text(c, &x, end, y, STYLE_DIM, "%*s %*s %*s", w->share, soft ? "mean p" : "share",
                w->kept, "kept", w->dropped, "dropped");
}

/* The totals of a row: kept and dropped tokens and the layer's entropy. */
static void draw_usage_totals(struct canvas *c, struct rect in, int y,
                              const struct usage_table *t, int row)
{
    int64_t kept = 0, dropped = 0;
    for (int e = 0; e < t->experts; e++) {
        kept += t->kept[(size_t)row * (size_t)t->experts + (size_t)e];
        dropped += t->dropped[(size_t)row * (size_t)t->experts + (size_t)e];
    }
    char kept_text[32], dropped_text[32];
    panels_format_count(kept, kept_text, sizeof kept_text);
    panels_format_count(dropped, dropped_text, sizeof dropped_text);
    double dropped_share = kept + dropped > 0 ? (double)dropped / (double)(kept + dropped) : 0;

    int x = in.x, end = in.x + in.w;
    append_text(c, &x, end, y, STYLE_DIM, "total kept %s", kept_text);
    append_text(c, &x, end, y, dropped > 0 ? STYLE_DROPPED : STYLE_DIM,
                "  dropped %s (%.1f%%)", dropped_text, 100.0 * dropped_share);

    /* the entropy panel shows it too, so it goes where it does not fit whole */
    char entropy[32];
    snprintf(entropy, sizeof entropy, "  entropy %.3f", usage_table_entropy(t, row));
    if (end - x >= (int)strlen(entropy))
        append_text(c, &x, end, y, STYLE_DIM, "%s", entropy);
}

/* Draws why the selected layer has no row in the usage. */
static void draw_usage_missing(struct canvas *c, struct rect r, const struct screen_state *s)
{
    struct rect in = rect_inside(r);
    const char *stack = stack_name(s->decoder);
    int layers = s->usage.layers[s->decoder ? 1 : 0];
    char title[96];
    snprintf(title, sizeof title, "utilization  %s  %s", stack, s->soft ? "soft" : "counts");
    canvas_frame(c, r, title);
    if (layers == 0)
        canvas_printf(c, in.x, in.y, in.w, STYLE_WARN, "the %s has no MoE layers", stack);
    else
        canvas_printf(c, in.x, in.y, in.w, STYLE_WARN, "no MoE layer %d in the %s (it has %d)",
                      s->layer + 1, stack, layers);
}

void panel_usage(struct canvas *c, struct rect r, const struct screen_state *s)
{
    canvas_clear_rect(c, r);
    struct rect in = rect_inside(r);
    if (!s->has_usage) {
        canvas_frame(c, r, "utilization");
        canvas_text(c, in.x, in.y, in.w, STYLE_DIM, "no usage yet");
        return;
    }
    const struct usage_table *t = &s->usage;
    int row = usage_table_row(t, s->decoder, s->layer);
    if (row < 0) {
        draw_usage_missing(c, r, s);
        return;
    }

    /* the title without its first word where the frame is too narrow */
    char title[128];
    int length = snprintf(title, sizeof title, "utilization  %s block %d (MoE layer %d/%d)  %s",
                          stack_name(s->decoder), t->blocks[row], s->layer + 1,
                          t->layers[s->decoder ? 1 : 0], s->soft ? "soft" : "counts");
    const char *shown_title = title;
    if (length > r.w - 4)
        shown_title = title + strlen("utilization  ");
    canvas_frame(c, r, shown_title);
    if (in.w <= 0 || in.h <= 0)
        return;

    /* which lines fit: the header and the experts first, then the totals,
     * then the usage's source */
    int experts = t->experts;
    int show_source = s->usage_source[0] != '\0' && in.h >= experts + 3;
    int show_totals = in.h >= 3;
    int slots = in.h - 1 - show_totals - show_source;
    int shown_rows = experts <= slots ? experts : slots - 1;
    if (shown_rows < 0)
        shown_rows = 0;

    double *values = malloc((size_t)experts * sizeof *values);
    if (values == NULL) {
        canvas_text(c, in.x, in.y, in.w, STYLE_WARN, "out of memory for the expert values");
        return;
    }
    panels_usage_values(t, row, s->soft, values);
    double largest = 0.0;
    for (int e = 0; e < experts; e++)
        if (values[e] > largest)
            largest = values[e];

    int y = in.y;
    if (show_source)
        canvas_text(c, in.x, y++, in.w, STYLE_DIM, s->usage_source);
    struct usage_columns w = usage_columns(t, row, in.w);
    draw_usage_header(c, in, y++, &w, s->soft);
    for (int e = 0; e < shown_rows; e++)
        draw_usage_expert(c, in, y++, &w, t, row, e, values[e], largest);
    if (shown_rows < experts && slots > 0)
        canvas_printf(c, in.x, y++, in.w, STYLE_DIM, "+%d more", experts - shown_rows);
    if (show_totals)
        draw_usage_totals(c, in, in.y + in.h - 1, t, row);
    free(values);
}

/* ---- entropy ---- */

/* Draws one layer's line: marker, label, value, bar and sparkline. */
static void draw_entropy_row(struct canvas *c, struct rect in, int y,
                             const struct screen_state *s, int row, int selected,
                             int label_width)
{
    const struct usage_table *t = &s->usage;
    double entropy = usage_table_entropy(t, row);
    enum canvas_style style = entropy >= ENTROPY_HIGH ? STYLE_GOOD : STYLE_BAR;
    char label[32];
    panels_row_label(t, row, label, sizeof label);

    int x = in.x, end = in.x + in.w;
    append_text(c, &x, end, y, STYLE_ACCENT, "%s", row == selected ? ">" : " ");
    append_text(c, &x, end, y, row == selected ? STYLE_ACCENT : STYLE_DIM, " %-*s", label_width,
                label);
    append_text(c, &x, end, y, STYLE_PLAIN, "  %.3f ", entropy);

    /* a third of what is left goes to the bar, when that is at least 2 cells */
    int left = end - x;
    int bar = 0;
    if (left >= 8)
        bar = left / 3 < ENTROPY_BAR_CELLS ? left / 3 : ENTROPY_BAR_CELLS;
    if (bar > 0) {
        canvas_bar(c, x, y, bar, entropy, style);
        x += bar + 1;
    }

    /* the sparkline: the newest samples that fit, oldest on the left */
    int width = end - x;
    if (row >= s->entropy_rows || s->entropy == NULL || width <= 0)
        return;
    int count = s->entropy_count < SCREEN_HISTORY ? s->entropy_count : SCREEN_HISTORY;
    int first = count > width ? count - width : 0;
    const double *history = s->entropy + (size_t)row * SCREEN_HISTORY;
    for (int k = first; k < count; k++)
        canvas_put(c, x + k - first, y, canvas_spark(c, history[k]), style);
}

void panel_entropy(struct canvas *c, struct rect r, const struct screen_state *s)
{
    canvas_clear_rect(c, r);
    struct rect in = rect_inside(r);
    if (!s->has_usage) {
        canvas_frame(c, r, "normalized entropy");
        canvas_text(c, in.x, in.y, in.w, STYLE_DIM, "no usage yet");
        return;
    }
    const struct usage_table *t = &s->usage;
    int rows = usage_table_rows(t);
    if (rows == 0) {
        canvas_frame(c, r, "normalized entropy");
        canvas_text(c, in.x, in.y, in.w, STYLE_DIM, "the usage has no MoE layers");
        return;
    }

    int selected = usage_table_row(t, s->decoder, s->layer);
    int window = in.h > 0 ? in.h : 0;
    int first = window_start(rows, window, selected);
    int shown_rows = rows - first < window ? rows - first : window;
    char title[96];
    if (shown_rows < rows)
        snprintf(title, sizeof title, "normalized entropy  %d-%d/%d", first + 1, first + shown_rows,
                 rows);
    else
        snprintf(title, sizeof title, "normalized entropy");
    canvas_frame(c, r, title);

    int label_width = 0;
    for (int row = 0; row < rows; row++) {
        char label[32];
        panels_row_label(t, row, label, sizeof label);
        if ((int)strlen(label) > label_width)
            label_width = (int)strlen(label);
    }
    for (int i = 0; i < shown_rows; i++)
        draw_entropy_row(c, in, in.y + i, s, first + i, selected, label_width);
}

/* ---- loss ---- */

/* Marks of the loss plot: training loss, the average's line (level and
 * vertical), validation loss. */
struct loss_marks {
    wchar_t loss, level, rise, validation;
};

static struct loss_marks loss_marks(const struct canvas *c)
{
    if (c->ascii)
        return (struct loss_marks){ L'*', L'-', L'|', L'o' };
    return (struct loss_marks){ 0x2022, 0x2500, 0x2502, 0x25CF };
}

/* Range of the finite values among the shown_rows samples [first, count). */
static void loss_range(const struct screen_state *s, const double *ema, int first,
                       double *low, double *high)
{
    *low = INFINITY;
    *high = -INFINITY;
    for (int k = first; k < panels_loss_count(s); k++) {
        const double values[3] = { s->loss[k], ema[k], s->validation[k] };
        for (int i = 0; i < 3; i++) {
            if (!isfinite(values[i]))
                continue;
            if (values[i] < *low)
                *low = values[i];
            if (values[i] > *high)
                *high = values[i];
        }
    }
    /* a flat curve gets a range around it, so that it sits mid-plot */
    if (*high - *low < 1e-9) {
        *low -= 0.5;
        *high += 0.5;
    }
}

/* Row of value v in a plot of `rows` rows from y (top: high, bottom: low). */
static int plot_row(double v, double low, double high, int rows)
{
    long level = lround((v - low) / (high - low) * (rows - 1));
    if (level < 0)
        level = 0;
    if (level > rows - 1)
        level = rows - 1;
    return rows - 1 - (int)level;
}

/* The last loss, average and validation loss, each after its mark, with
 * the names dropped where the line would not fit otherwise. Returns 1 when
 * the names are shown_rows. */
static int draw_loss_values(struct canvas *c, struct rect in, const struct screen_state *s,
                             const double *ema, struct loss_marks marks)
{
    double last_loss = NAN, last_ema = NAN, last_validation = NAN;
    for (int k = 0; k < panels_loss_count(s); k++) {
        if (isfinite(s->loss[k]))
            last_loss = s->loss[k];
        if (isfinite(ema[k]))
            last_ema = ema[k];
        if (isfinite(s->validation[k]))
            last_validation = s->validation[k];
    }
    int has_validation = isfinite(last_validation);
    char loss[48], average[48], validation[48];
    snprintf(loss, sizeof loss, "loss %.4f", last_loss);
    snprintf(average, sizeof average, "ema %.4f", last_ema);
    snprintf(validation, sizeof validation, "val %.4f", last_validation);
    int width = 2 + (int)strlen(loss) + 4 + (int)strlen(average);
    if (has_validation)
        width += 4 + (int)strlen(validation);
    int named = width <= in.w;

    int x = in.x, end = in.x + in.w;
    append_mark(c, &x, end, in.y, marks.loss, STYLE_GOOD);
    append_text(c, &x, end, in.y, STYLE_PLAIN, " %s  ", named ? loss : strchr(loss, ' ') + 1);
    append_mark(c, &x, end, in.y, marks.level, STYLE_PLAIN);
    append_text(c, &x, end, in.y, STYLE_PLAIN, " %s",
                named ? average : strchr(average, ' ') + 1);
    if (has_validation) {
        append_text(c, &x, end, in.y, STYLE_PLAIN, "  ");
        append_mark(c, &x, end, in.y, marks.validation, STYLE_ACCENT);
        append_text(c, &x, end, in.y, STYLE_ACCENT, " %s",
                    named ? validation : strchr(validation, ' ') + 1);
    }
    return named;
}

/* The plot of samples [first, loss_count), one per column from x, with the
 * average drawn first so that the samples' marks lie on top of it. */
static void draw_loss_plot(struct canvas *c, int x, int y, int rows,
                           const struct screen_state *s, const double *ema, int first,
                           double low, double high, struct loss_marks marks)
{
    int count = panels_loss_count(s);
    int previous = -1;
    for (int k = first; k < count; k++) {
        int column = x + k - first;
        if (!isfinite(ema[k]))
            continue;
        int row = plot_row(ema[k], low, high, rows);
        if (previous >= 0)
            for (int between = (previous < row ? previous : row) + 1;
                 between < (previous < row ? row : previous); between++)
                canvas_put(c, column, y + between, marks.rise, STYLE_PLAIN);
        canvas_put(c, column, y + row, marks.level, STYLE_PLAIN);
        previous = row;
    }
    for (int k = first; k < count; k++) {
        int column = x + k - first;
        if (isfinite(s->loss[k]))
            canvas_put(c, column, y + plot_row(s->loss[k], low, high, rows), marks.loss,
                       STYLE_GOOD);
        if (isfinite(s->validation[k]))
            canvas_put(c, column, y + plot_row(s->validation[k], low, high, rows),
                       marks.validation, STYLE_ACCENT);
    }
}

void panel_loss(struct canvas *c, struct rect r, const struct screen_state *s)
{
    canvas_clear_rect(c, r);
    canvas_frame(c, r, "loss");
    struct rect in = rect_inside(r);
    int count = panels_loss_count(s);
    if (count == 0) {
        canvas_text(c, in.x, in.y, in.w, STYLE_DIM, "no loss yet");
        return;
    }
    if (in.w <= 0 || in.h <= 0)
        return;
    double ema[SCREEN_HISTORY];
    panels_loss_ema(s, ema);
    struct loss_marks marks = loss_marks(c);

    /* without names on the values line, the title names the marks */
    if (!draw_loss_values(c, in, s, ema, marks))
        canvas_frame(c, r, c->ascii ? "loss  * train  - ema  o val"
                                    : "loss  \u2022 train  \u2500 ema  \u25CF val");

    /* the plot: y labels on the left, the step range on the last line */
    const int label_width = 8;
    int rows = in.h - 2, columns = in.w - label_width;
    if (rows < 2 || columns < 2)
        return;
    int first = count > columns ? count - columns : 0;
    double low, high;
    loss_range(s, ema, first, &low, &high);
    int top = in.y + 1;
    canvas_printf(c, in.x, top, label_width - 1, STYLE_DIM, "%7.3f", high);
    canvas_printf(c, in.x, top + rows - 1, label_width - 1, STYLE_DIM, "%7.3f", low);
    for (int i = 0; i < rows; i++)
        canvas_put(c, in.x + label_width - 1, top + i, c->ascii ? L'|' : 0x2502, STYLE_DIM);
    draw_loss_plot(c, in.x + label_width, top, rows, s, ema, first, low, high, marks);
    canvas_printf(c, in.x + label_width, in.y + in.h - 1, columns, STYLE_DIM,
                  "step %ld-%ld", s->loss_step[first], s->loss_step[count - 1]);
}

/* ---- heatmap ---- */

/* Mapping of experts to heatmap cells: `group` experts per column, each
 * column `cell` cells wide. */
struct heat_columns {
    int group, columns, cell;
};

static struct heat_columns heat_columns(int experts, int width)
{
    struct heat_columns h = { 1, experts, 1 };
    if (width <= 0 || experts <= 0)
        return (struct heat_columns){ 1, 0, 1 };
    if (experts > width) {
        h.group = (experts + width - 1) / width;
        h.columns = (experts + h.group - 1) / h.group;
    } else {
        h.cell = width / experts < 3 ? width / experts : 3;
    }
    return h;
}

/* Fills columns[i] with the mean value of the experts in heatmap column i
 * of usage row `row`. `values` is scratch space for one value per expert. */
static void heat_row(const struct usage_table *t, int row, struct heat_columns h, int soft,
                     double *values, double *columns)
{
    panels_usage_values(t, row, soft, values);
    for (int column = 0; column < h.columns; column++) {
        int from = column * h.group;
        int to = from + h.group < t->experts ? from + h.group : t->experts;
        double sum = 0.0;
        for (int e = from; e < to; e++)
            sum += values[e];
        columns[column] = to > from ? sum / (to - from) : 0.0;
    }
}

static void draw_heat_legend(struct canvas *c, struct rect in, int y, double largest,
                             int soft)
{
    int x = in.x, end = in.x + in.w;
    append_text(c, &x, end, y, STYLE_DIM, "%s up to ", soft ? "mean p" : "share");
    for (int level = 1; level <= 4 && x < end; level++) {
        canvas_heat(c, x, y, level / 4.0);
        x++;
        append_text(c, &x, end, y, STYLE_DIM, " %.1f%%  ", 100.0 * largest * level / 4.0);
    }
    append_text(c, &x, end, y, STYLE_DIM, "blank: 0");
}

void panel_heatmap(struct canvas *c, struct rect r, const struct screen_state *s)
{
    canvas_clear_rect(c, r);
    struct rect in = rect_inside(r);
    const char *title = s->soft ? "heatmap  mean router probability per layer and expert"
                                : "heatmap  share of kept tokens per layer and expert";
    canvas_frame(c, r, title);
    if (!s->has_usage) {
        canvas_text(c, in.x, in.y, in.w, STYLE_DIM, "no usage yet");
        return;
    }
    const struct usage_table *t = &s->usage;
    int rows = usage_table_rows(t);
    if (rows == 0 || t->experts <= 0) {
        canvas_text(c, in.x, in.y, in.w, STYLE_DIM, "the usage has no MoE layers");
        return;
    }
    if (in.w <= 0 || in.h < 3)
        return; /* no room for the header, a layer and the legend */

    int label_width = 0;
    for (int row = 0; row < rows; row++) {
        char label[32];
        panels_row_label(t, row, label, sizeof label);
        if ((int)strlen(label) > label_width)
            label_width = (int)strlen(label);
    }
    int left = 2 + label_width + 1;          /* "> enc 3 " */
    struct heat_columns h = heat_columns(t->experts, in.w - left - 7); /* " 0.912" */

    /* one colour scale for the whole map: 0 to the largest column value */
    double *values = malloc(2 * (size_t)t->experts * sizeof *values);
    if (values == NULL) {
        canvas_text(c, in.x, in.y, in.w, STYLE_WARN, "out of memory for the expert values");
        return;
    }
    double *columns = values + t->experts;
    double largest = 0.0;
    for (int row = 0; row < rows; row++) {
        heat_row(t, row, h, s->soft, values, columns);
        for (int column = 0; column < h.columns; column++)
            if (columns[column] > largest)
                largest = columns[column];
    }

    if (h.group > 1)
        canvas_printf(c, in.x + left, in.y, in.w - left, STYLE_DIM,
                      "experts 0-%d, %d per column; entropy at the right", t->experts - 1,
                      h.group);
    else
        canvas_printf(c, in.x + left, in.y, in.w - left, STYLE_DIM,
                      "experts 0-%d; entropy at the right", t->experts - 1);

    int selected = usage_table_row(t, s->decoder, s->layer);
    int window = in.h - 2;
    int first = window_start(rows, window, selected);
    int shown_rows = rows - first < window ? rows - first : window;
    for (int i = 0; i < shown_rows; i++) {
        int row = first + i, y = in.y + 1 + i;
        char label[32];
        panels_row_label(t, row, label, sizeof label);
        int x = in.x, end = in.x + in.w;
        append_text(c, &x, end, y, STYLE_ACCENT, "%s", row == selected ? ">" : " ");
        append_text(c, &x, end, y, row == selected ? STYLE_ACCENT : STYLE_DIM, " %-*s ",
                    label_width, label);
        heat_row(t, row, h, s->soft, values, columns);
        for (int column = 0; column < h.columns; column++)
            for (int k = 0; k < h.cell; k++)
                canvas_heat(c, x++, y, largest > 0 ? columns[column] / largest : 0.0);
        append_text(c, &x, end, y, STYLE_PLAIN, " %.3f", usage_table_entropy(t, row));
    }
    draw_heat_legend(c, in, in.y + in.h - 1, largest, s->soft);
    free(values);
}

/* ---- merge ---- */

static const char *merge_source_name(const struct screen_state *s, int source, char *buffer,
                                     size_t size)
{
    if (source >= 0 && source < MERGE_MAX_SOURCES && s->merge_names[source][0] != '\0')
        return s->merge_names[source];
    snprintf(buffer, size, "#%d", source);
    return buffer;
}

/* The merge's settings and the parameter weights of each stack. */
static void draw_merge_summary(struct canvas *c, struct rect in, const struct screen_state *s)
{
    const struct merge_record *m = &s->merge;
    int x = in.x, end = in.x + in.w;
    append_text(c, &x, end, in.y, STYLE_PLAIN,
                "%d sources -> %d experts per layer  alpha %.2f (used %.2f)  embedding %s",
                m->sources, m->experts, m->alpha, m->alpha_used,
                m->embedding == MERGE_EMBEDDING_MEAN ? "mean" : "reference");
    if (m->uniform_fallbacks > 0)
        append_text(c, &x, end, in.y, STYLE_WARN, "  %d layers uniform (every entropy 0)",
                    m->uniform_fallbacks);

    x = in.x;
    append_text(c, &x, end, in.y + 1, STYLE_DIM, "weights");
    for (int d = 0; d < 2; d++) {
        append_text(c, &x, end, in.y + 1, STYLE_DIM, "  %s:", stack_name(d));
        for (int i = 0; i < m->sources && i < MERGE_MAX_SOURCES; i++) {
            char buffer[16];
            append_text(c, &x, end, in.y + 1, STYLE_PLAIN, " %s %.3f",
                        merge_source_name(s, i, buffer, sizeof buffer), m->weights[d][i]);
        }
    }
}

/* Two lines for merge row `row`: each source's entropy and allocation, then
 * the source and expert of every target slot. */
static void draw_merge_layer(struct canvas *c, struct rect in, int y,
                             const struct screen_state *s, int row, int selected)
{
    const struct merge_record *m = &s->merge;
    int decoder = row >= m->layers[0];
    int index = decoder ? row - m->layers[0] : row;
    int x = in.x, end = in.x + in.w;
    append_text(c, &x, end, y, STYLE_ACCENT, "%s", row == selected ? ">" : " ");
    append_text(c, &x, end, y, row == selected ? STYLE_ACCENT : STYLE_TITLE, " %s MoE %d",
                decoder ? "dec" : "enc", index + 1);
    for (int i = 0; i < m->sources; i++) {
        char buffer[16];
        size_t at = (size_t)row * (size_t)m->sources + (size_t)i;
        append_text(c, &x, end, y, STYLE_PLAIN, "  %s H %.3f N %d",
                    merge_source_name(s, i, buffer, sizeof buffer), m->entropies[at],
                    m->allocation[at]);
    }

    x = in.x;
    append_text(c, &x, end, y + 1, STYLE_DIM, "   slots");
    for (int slot = 0; slot < m->experts; slot++) {
        char buffer[16];
        size_t at = (size_t)row * (size_t)m->experts + (size_t)slot;
        append_text(c, &x, end, y + 1, STYLE_PLAIN, " %s:%d",
                    merge_source_name(s, m->slot_source[at], buffer, sizeof buffer),
                    m->slot_expert[at]);
    }
}

void panel_merge(struct canvas *c, struct rect r, const struct screen_state *s)
{
    canvas_clear_rect(c, r);
    struct rect in = rect_inside(r);
    const struct merge_record *m = &s->merge;
    canvas_frame(c, r, "merge  entropy H and experts N per source; slots as source:expert");
    if (!s->has_merge) {
        canvas_text(c, in.x, in.y, in.w, STYLE_DIM, "no merge yet");
        return;
    }
    if (in.w <= 0 || in.h <= 0)
        return;
    draw_merge_summary(c, in, s);

    /* each layer takes two lines under the two summary lines */
    int rows = m->layers[0] + m->layers[1];
    int selected = -1;
    int layers = m->layers[s->decoder ? 1 : 0];
    if (s->layer >= 0 && s->layer < layers)
        selected = (s->decoder ? m->layers[0] : 0) + s->layer;
    int window = (in.h - 2) / 2;
    int first = window_start(rows, window, selected);
    int shown_rows = rows - first < window ? rows - first : window;
    for (int i = 0; i < shown_rows; i++)
        draw_merge_layer(c, in, in.y + 2 + 2 * i, s, first + i, selected);
    if (shown_rows < rows && shown_rows > 0 && in.w >= 20)
        canvas_printf(c, in.x + in.w - 16, in.y + in.h - 1, 16, STYLE_DIM, "layers %d-%d/%d",
                      first + 1, first + shown_rows, rows);
}

/* ---- help and the whole view ---- */

void panel_help(struct canvas *c, struct rect r)
{
    int lines = 0, width = 0;
    for (; screen_key_help[lines] != NULL; lines++) {
        int cells = canvas_text_cells(screen_key_help[lines]);
        if (cells > width)
            width = cells;
    }

    /* the box: the keys inside a frame, with a blank line above and below
     * and two spaces either side where r has room for them */
    int pad_x = r.w >= width + 6 ? 2 : 0;
    int pad_y = r.h >= lines + 4 ? 1 : 0;
    struct rect box = { 0, 0, width + 2 + 2 * pad_x, lines + 2 + 2 * pad_y };
    if (box.w > r.w)
        box.w = r.w;
    if (box.h > r.h)
        box.h = r.h;
    box.x = r.x + (r.w - box.w) / 2;
    box.y = r.y + (r.h - box.h) / 2;

    canvas_clear_rect(c, box);
    canvas_frame(c, box, "keys");
    struct rect in = rect_inside(box);
    for (int i = 0; i < lines && i < in.h - 2 * pad_y; i++)
        canvas_text(c, in.x + pad_x, in.y + pad_y + i, in.w - 2 * pad_x, STYLE_PLAIN,
                    screen_key_help[i]);
}

void panels_draw(struct canvas *c, const struct screen_layout *layout,
                 const struct screen_state *s)
{
    panel_status(c, layout->status, s);
    canvas_clear_rect(c, layout->upper);
    switch (s->view) {
    case VIEW_HEATMAP:
        panel_heatmap(c, layout->upper, s);
        break;
    case VIEW_MERGE:
        panel_merge(c, layout->upper, s);
        break;
    case VIEW_PANELS:
    default:
        panel_usage(c, layout->usage, s);
        panel_entropy(c, layout->entropy, s);
        panel_loss(c, layout->loss, s);
        break;
    }
    if (s->help)
        panel_help(c, layout->upper);
}
