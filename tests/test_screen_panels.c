/* The screen's drawing half, tested without a terminal. The layout is
 * checked at every terminal size from 80x24 to 300x100. Each panel's text
 * is read back from the canvas (shares, counts, entropies, loss values, the
 * status line), and each panel must stay inside its rectangle. ASCII mode
 * and the SVG export have their own tests. */
#include <errno.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "canvas.h"
#include "layout.h"
#include "panels.h"
#include "test.h"
#include "usage.h"

#define EXPERTS 8
#define LINE_BYTES 4096

/* Row 1 of the test usage (the encoder's second MoE layer, block 3). Its
 * shares do not come out round, so the printed values carry rounding. */
static const int64_t row1_kept[EXPERTS] = { 1234, 5678, 91011, 1213, 1415, 1617, 0, 1819 };
static const int64_t row1_dropped[EXPERTS] = { 0, 12, 0, 345, 0, 0, 0, 6789 };
static const int test_blocks[4] = { 1, 3, 1, 3 };

/* ---- helpers ---- */

/* Fills a state with usage of 2 + 2 MoE layers x 8 experts (row 0 uniform,
 * row 1 as above, row 2 one-hot, row 3 on two experts), entropy history,
 * loss samples and a running train job. */
static void state_full(struct screen_state *s)
{
    struct caem_error err;
    screen_state_init(s);
    struct usage_table shape;
    memset(&shape, 0, sizeof shape);
    shape.experts = EXPERTS;
    shape.layers[0] = 2;
    shape.layers[1] = 2;
    shape.blocks = (int *)test_blocks;
    if (usage_table_init_like(&s->usage, &shape, &err) != 0) {
        printf("  usage_table_init_like: %s\n", err.message);
        abort();
    }
    struct usage_table *t = &s->usage;
    for (int e = 0; e < EXPERTS; e++) {
        t->kept[0 * EXPERTS + e] = 100;
        t->kept[1 * EXPERTS + e] = row1_kept[e];
        t->dropped[1 * EXPERTS + e] = row1_dropped[e];
        t->kept[2 * EXPERTS + e] = e == 5 ? 777 : 0;
        t->kept[3 * EXPERTS + e] = e < 2 ? 50 : 0;
    }
    for (int row = 0; row < 4; row++) {
        int64_t tokens = 0;
        for (int e = 0; e < EXPERTS; e++)
            tokens += t->kept[row * EXPERTS + e] + t->dropped[row * EXPERTS + e];
        t->tokens[row] = tokens;
        /* soft usage: expert e gets (e + 1) / 36 of every token's probability */
        for (int e = 0; e < EXPERTS; e++)
            t->prob_sum[row * EXPERTS + e] = (double)tokens * (e + 1) / 36.0;
    }
    s->has_usage = 1;
    snprintf(s->usage_source, sizeof s->usage_source, "train job, steps 1-340");

    s->entropy_rows = 4;
    s->entropy_count = 50;
    s->entropy = calloc(4 * SCREEN_HISTORY, sizeof *s->entropy);
    for (int row = 0; row < 4; row++)
        for (int k = 0; k < s->entropy_count; k++)
            s->entropy[row * SCREEN_HISTORY + k] = fmod(0.37 * row + 0.02 * k, 1.0);

    s->loss_count = 120;
    for (int k = 0; k < s->loss_count; k++) {
        s->loss_step[k] = 10L * (k + 1);
        s->loss[k] = 3.0 * exp(-k / 40.0) + 0.1 * sin(k);
        s->validation[k] = k % 30 == 29 ? 2.0 * exp(-k / 50.0) + 0.5 : NAN;
    }

    s->has_job = 1;
    s->job.state = JOB_RUNNING;
    snprintf(s->job.kind, sizeof s->job.kind, "train");
    s->job.elapsed = 62;
    s->job.report = (struct job_report){ .step = 500, .steps = 1000, .loss = 2.3412,
                                         .cross_entropy = 2.3, .validation_loss = 2.51,
                                         .encoder_entropy = 0.8, .decoder_entropy = 0.7,
                                         .tokens_per_second = 12345.0, .eta = 190 };
}

/* Adds a merge of three sources into 8 experts over the state's layers. */
static void state_add_merge(struct screen_state *s)
{
    struct merge_record *m = &s->merge;
    const char *names[3] = { "cls", "qa", "sum" };
    int rows = 4, sources = 3;
    memset(m, 0, sizeof *m);
    m->sources = sources;
    m->layers[0] = 2;
    m->layers[1] = 2;
    m->experts = EXPERTS;
    m->alpha = 1.0;
    m->alpha_used = 1.0;
    m->entropies = calloc((size_t)rows * sources, sizeof *m->entropies);
    m->allocation = calloc((size_t)rows * sources, sizeof *m->allocation);
    m->slot_source = calloc((size_t)rows * EXPERTS, sizeof *m->slot_source);
    m->slot_expert = calloc((size_t)rows * EXPERTS, sizeof *m->slot_expert);
    const int allocation[3] = { 3, 3, 2 };
    for (int row = 0; row < rows; row++) {
        int slot = 0;
        for (int i = 0; i < sources; i++) {
            m->entropies[row * sources + i] = 0.9 - 0.1 * i;
            m->allocation[row * sources + i] = allocation[i];
            for (int k = 0; k < allocation[i]; k++, slot++) {
                m->slot_source[row * EXPERTS + slot] = i;
                m->slot_expert[row * EXPERTS + slot] = 7 - k;
            }
        }
    }
    for (int i = 0; i < sources; i++) {
        m->weights[0][i] = allocation[i] / 8.0;
        m->weights[1][i] = allocation[i] / 8.0;
        snprintf(s->merge_names[i], sizeof s->merge_names[i], "%s", names[i]);
    }
    s->has_merge = 1;
}

static void row_text(const struct canvas *c, int y, char *out)
{
    canvas_row_utf8(c, y, out, LINE_BYTES);
}

/* Returns the first row that contains needle (its text in line), or -1. */
static int find_row(const struct canvas *c, const char *needle, char *line)
{
    for (int y = 0; y < c->rows; y++) {
        row_text(c, y, line);
        if (strstr(line, needle) != NULL)
            return y;
    }
    return -1;
}

/* Parses "12,345" from *text and moves *text past it; -1 when no digit. */
static long long parse_count(const char **text)
{
    const char *p = *text;
    while (*p == ' ')
        p++;
    if (*p < '0' || *p > '9')
        return -1;
    long long n = 0;
    for (; (*p >= '0' && *p <= '9') || *p == ','; p++)
        if (*p != ',')
            n = n * 10 + (*p - '0');
    *text = p;
    return n;
}

/* The percentage printed before the first '%' of line. */
static double parse_percent(const char *line, const char **after)
{
    const char *percent = strchr(line, '%');
    if (percent == NULL)
        return NAN;
    const char *start = percent;
    while (start > line && ((start[-1] >= '0' && start[-1] <= '9') || start[-1] == '.'))
        start--;
    *after = percent + 1;
    return strtod(start, NULL);
}

static void fill_sentinel(struct canvas *c)
{
    for (int y = 0; y < c->rows; y++)
        for (int x = 0; x < c->cols; x++)
            canvas_put(c, x, y, L'Z', STYLE_WARN);
}

/* Counts cells outside r that a drawing changed from the sentinel. */
static int changed_outside(const struct canvas *c, struct rect r)
{
    int changed = 0;
    for (int y = 0; y < c->rows; y++)
        for (int x = 0; x < c->cols; x++) {
            int inside = x >= r.x && x < r.x + r.w && y >= r.y && y < r.y + r.h;
            const struct canvas_cell *cell = &c->cells[y * c->cols + x];
            if (!inside && (cell->ch != L'Z' || cell->style != STYLE_WARN))
                changed++;
        }
    return changed;
}

static int rect_inside_screen(struct rect r, int cols, int rows)
{
    return r.x >= 0 && r.y >= 0 && r.x + r.w <= cols && r.y + r.h <= rows;
}

static int rect_contains(struct rect outer, struct rect inner)
{
    return inner.x >= outer.x && inner.y >= outer.y && inner.x + inner.w <= outer.x + outer.w &&
           inner.y + inner.h <= outer.y + outer.h;
}

/* ---- layout ---- */

static void test_layout_every_size(void)
{
    const char *names[6] = { "status", "usage", "entropy", "loss", "output", "input" };
    for (int cols = SCREEN_MIN_COLS; cols <= 300; cols++) {
        for (int rows = SCREEN_MIN_ROWS; rows <= 100; rows++) {
            struct screen_layout l;
            int failed_before = test_current_failed;
            CHECK_MSG(screen_layout(cols, rows, &l) == 0, "%dx%d rejected", cols, rows);
            if (test_current_failed)
                return;
            struct rect panel[6] = { l.status, l.usage, l.entropy, l.loss, l.output, l.input };
            long area = 0;
            for (int i = 0; i < 6; i++) {
                CHECK_MSG(panel[i].w > 0 && panel[i].h > 0, "%dx%d: %s is %dx%d", cols, rows,
                          names[i], panel[i].w, panel[i].h);
                CHECK_MSG(rect_inside_screen(panel[i], cols, rows),
                          "%dx%d: %s at %d,%d size %dx%d leaves the screen", cols, rows,
                          names[i], panel[i].x, panel[i].y, panel[i].w, panel[i].h);
                area += (long)panel[i].w * panel[i].h;
                for (int j = 0; j < i; j++)
                    CHECK_MSG(!rect_overlap(panel[i], panel[j]), "%dx%d: %s overlaps %s",
                              cols, rows, names[i], names[j]);
            }
            /* no overlap and the full area: the six tile the screen */
            CHECK_MSG(area == (long)cols * rows, "%dx%d: panels cover %ld of %d cells", cols,
                      rows, area, cols * rows);
            CHECK_MSG(rect_contains(l.upper, l.usage), "%dx%d: usage outside upper", cols,
                      rows);
            CHECK_MSG(rect_contains(l.upper, l.entropy), "%dx%d: entropy outside upper", cols,
                      rows);
            CHECK_MSG(rect_contains(l.upper, l.loss), "%dx%d: loss outside upper", cols, rows);
            CHECK_MSG(l.status.y == 0 && l.status.h == 1, "%dx%d: status not row 0", cols,
                      rows);
            CHECK_MSG(l.input.y == rows - 1 && l.input.h == 1, "%dx%d: input not last row",
                      cols, rows);
            CHECK_MSG(l.output.h >= 5, "%dx%d: output has %d rows", cols, rows, l.output.h);
            CHECK_MSG(l.entropy.x == l.loss.x && l.entropy.y < l.loss.y,
                      "%dx%d: entropy not above loss", cols, rows);
            CHECK_MSG(l.usage.x + l.usage.w == l.entropy.x, "%dx%d: usage not left of entropy",
                      cols, rows);
            if (test_current_failed != failed_before)
                return; /* one size's failures are enough to read */
        }
    }
}

static void test_layout_below_minimum(void)
{
    struct screen_layout l;
    CHECK_INT_EQ(screen_layout(79, 24, &l), -1);
    CHECK_INT_EQ(screen_layout(80, 23, &l), -1);
    CHECK_INT_EQ(screen_layout(79, 100, &l), -1);
    CHECK_INT_EQ(screen_layout(300, 23, &l), -1);
    CHECK_INT_EQ(screen_layout(0, 0, &l), -1);
    CHECK_INT_EQ(screen_layout(-80, -24, &l), -1);
    CHECK_INT_EQ(screen_layout(80, 24, &l), 0);
}

static void test_rect_overlap_cases(void)
{
    struct rect a = { 0, 0, 10, 5 };
    CHECK(rect_overlap(a, (struct rect){ 9, 4, 1, 1 }));
    CHECK(rect_overlap(a, (struct rect){ 2, 2, 2, 2 }));
    CHECK(rect_overlap(a, (struct rect){ -5, -5, 6, 6 }));
    CHECK(!rect_overlap(a, (struct rect){ 10, 0, 5, 5 }));
    CHECK(!rect_overlap(a, (struct rect){ 0, 5, 10, 5 }));
    CHECK(!rect_overlap(a, (struct rect){ 3, 3, 0, 4 }));
    CHECK(!rect_overlap((struct rect){ 3, 3, 4, -1 }, a));
}

/* ---- canvas ---- */

static void test_canvas_text_clips_and_cuts(void)
{
    struct canvas c;
    char line[LINE_BYTES];
    CHECK_INT_EQ(canvas_init(&c, 10, 3, 0), 0);

    CHECK_INT_EQ(canvas_text(&c, 0, 0, 10, STYLE_PLAIN, "hello"), 5);
    row_text(&c, 0, line);
    CHECK(strcmp(line, "hello") == 0);

    /* cut at max_width: the last shown cell is '~' */
    CHECK_INT_EQ(canvas_text(&c, 0, 1, 4, STYLE_PLAIN, "abcdefg"), 4);
    row_text(&c, 1, line);
    CHECK_MSG(strcmp(line, "abc~") == 0, "row 1 is \"%s\"", line);

    /* past the right edge and above the grid: clipped, the width still counted */
    CHECK_INT_EQ(canvas_text(&c, 7, 2, 20, STYLE_PLAIN, "wxyz!"), 5);
    CHECK_INT_EQ(canvas_text(&c, -3, 2, 20, STYLE_PLAIN, "1234"), 4);
    CHECK_INT_EQ(canvas_text(&c, 0, -1, 20, STYLE_PLAIN, "none"), 4);
    CHECK_INT_EQ(canvas_text(&c, 0, 3, 20, STYLE_PLAIN, "none"), 4);
    row_text(&c, 2, line);
    CHECK_MSG(strcmp(line, "4      wxy") == 0, "row 2 is \"%s\"", line);
    CHECK_INT_EQ(canvas_text(&c, 0, 0, 0, STYLE_PLAIN, "x"), 0);
    canvas_free(&c);
}

static void test_canvas_utf8_decoding(void)
{
    struct canvas c;
    char line[LINE_BYTES];
    CHECK_INT_EQ(canvas_init(&c, 20, 2, 0), 0);

    /* 2-, 3- and 4-byte sequences; the emoji is two columns wide, so '?' */
    const char *mixed = "\xc3\xa9\xe2\x96\x88\xf0\x9f\x98\x80!";
    CHECK_INT_EQ(canvas_text(&c, 0, 0, 20, STYLE_PLAIN, mixed), 4);
    CHECK(c.cells[0].ch == 0xE9);
    CHECK(c.cells[1].ch == 0x2588);
    CHECK(c.cells[2].ch == L'?');
    CHECK(c.cells[3].ch == L'!');

    /* a stray continuation byte, a cut sequence and a control character */
    CHECK_INT_EQ(canvas_text(&c, 0, 1, 20, STYLE_PLAIN, "a\x80" "b\xe2\x96" "c\x01"), 7);
    row_text(&c, 1, line);
    CHECK_MSG(strcmp(line, "a?b??c?") == 0, "row 1 is \"%s\"", line);
    CHECK_INT_EQ(canvas_text_cells("\xc3\xa9t\xc3\xa9"), 3);
    canvas_free(&c);
}

static void test_canvas_row_utf8_bounds(void)
{
    struct canvas c;
    char small[6];
    CHECK_INT_EQ(canvas_init(&c, 8, 1, 0), 0);
    canvas_text(&c, 0, 0, 8, STYLE_PLAIN, "\xc3\xa9\xc3\xa9\xc3\xa9x  ");
    /* 5 bytes of room: two 2-byte characters fit, the third would split */
    canvas_row_utf8(&c, 0, small, sizeof small);
    CHECK_MSG(strcmp(small, "\xc3\xa9\xc3\xa9") == 0, "got \"%s\"", small);
    canvas_row_utf8(&c, 5, small, sizeof small);
    CHECK(small[0] == '\0');
    canvas_free(&c);
}

static void test_canvas_bar_eighths(void)
{
    struct canvas c;
    char line[LINE_BYTES];
    CHECK_INT_EQ(canvas_init(&c, 10, 2, 0), 0);
    /* 0.5625 of 4 cells = 18 eighths: two full blocks and a quarter block */
    canvas_bar(&c, 0, 0, 4, 0.5625, STYLE_BAR);
    CHECK(c.cells[0].ch == 0x2588);
    CHECK(c.cells[1].ch == 0x2588);
    CHECK(c.cells[2].ch == 0x258E);
    CHECK(c.cells[3].ch == L' ');
    CHECK(c.cells[0].style == STYLE_BAR);
    canvas_bar(&c, 0, 1, 3, 7.0, STYLE_BAR); /* clamped to 1 */
    row_text(&c, 1, line);
    CHECK(strcmp(line, "\xe2\x96\x88\xe2\x96\x88\xe2\x96\x88") == 0);
    canvas_free(&c);

    CHECK_INT_EQ(canvas_init(&c, 10, 1, 1), 0);
    canvas_bar(&c, 0, 0, 10, 0.34, STYLE_BAR);
    row_text(&c, 0, line);
    CHECK_MSG(strcmp(line, "###.......") == 0, "ASCII bar is \"%s\"", line);
    canvas_bar(&c, 0, 0, 10, NAN, STYLE_BAR);
    row_text(&c, 0, line);
    CHECK_MSG(strcmp(line, "..........") == 0, "NaN bar is \"%s\"", line);
    canvas_free(&c);
}

static void test_canvas_spark_and_heat(void)
{
    struct canvas unicode, ascii;
    CHECK_INT_EQ(canvas_init(&unicode, 5, 1, 0), 0);
    CHECK_INT_EQ(canvas_init(&ascii, 5, 1, 1), 0);
    CHECK(canvas_spark(&unicode, 0.0) == 0x2581);
    CHECK(canvas_spark(&unicode, 1.0) == 0x2588);
    CHECK(canvas_spark(&unicode, 2.0) == 0x2588);
    CHECK(canvas_spark(&unicode, NAN) == L' ');
    CHECK(canvas_spark(&ascii, 0.0) == L' ');
    CHECK(canvas_spark(&ascii, 1.0) == L'#');
    CHECK(canvas_spark(&ascii, 0.5) == L'=');

    const double values[5] = { 0.0, 0.01, 0.5, 0.74, 1.0 };
    const wchar_t unicode_heat[5] = { L' ', 0x2591, 0x2592, 0x2593, 0x2588 };
    const wchar_t ascii_heat[5] = { L' ', L'.', L':', L'*', L'#' };
    for (int i = 0; i < 5; i++) {
        canvas_heat(&unicode, i, 0, values[i]);
        canvas_heat(&ascii, i, 0, values[i]);
        CHECK_MSG(unicode.cells[i].ch == unicode_heat[i], "heat %g", values[i]);
        CHECK_MSG(ascii.cells[i].ch == ascii_heat[i], "ASCII heat %g", values[i]);
        CHECK_INT_EQ(unicode.cells[i].style, STYLE_HEAT_0 + i);
    }
    canvas_free(&unicode);
    canvas_free(&ascii);
}

static void test_canvas_frame_title(void)
{
    struct canvas c;
    char line[LINE_BYTES];
    CHECK_INT_EQ(canvas_init(&c, 12, 3, 1), 0);
    canvas_frame(&c, (struct rect){ 0, 0, 12, 3 }, "title");
    row_text(&c, 0, line);
    CHECK_MSG(strcmp(line, "+ title ---+") == 0, "top is \"%s\"", line);
    row_text(&c, 1, line);
    CHECK_MSG(strcmp(line, "|          |") == 0, "middle is \"%s\"", line);
    row_text(&c, 2, line);
    CHECK_MSG(strcmp(line, "+----------+") == 0, "bottom is \"%s\"", line);
    canvas_frame(&c, (struct rect){ 0, 0, 12, 3 }, "a much longer title");
    row_text(&c, 0, line);
    CHECK_MSG(strcmp(line, "+ a much ~-+") == 0, "cut title is \"%s\"", line);
    canvas_free(&c);
}

/* ---- status line ---- */

static void test_status_line_text(void)
{
    struct screen_state s;
    struct canvas c;
    char line[LINE_BYTES];
    state_full(&s);
    CHECK_INT_EQ(canvas_init(&c, 160, 1, 1), 0);
    panel_status(&c, (struct rect){ 0, 0, 160, 1 }, &s);
    row_text(&c, 0, line);
    CHECK_MSG(strcmp(line, "train running  step 500/1000 [#####.....] loss 2.3412  val 2.51  "
                           "12,345 tok/s  elapsed 1m02s  ETA 3m10s") == 0,
              "status is \"%s\"", line);

    /* narrower lines leave out the bar, then the elapsed time */
    struct canvas narrow;
    CHECK_INT_EQ(canvas_init(&narrow, 100, 1, 1), 0);
    panel_status(&narrow, (struct rect){ 0, 0, 100, 1 }, &s);
    row_text(&narrow, 0, line);
    CHECK_MSG(strcmp(line, "train running  step 500/1000  loss 2.3412  val 2.51  12,345 tok/s  "
                           "elapsed 1m02s  ETA 3m10s") == 0,
              "100 columns: \"%s\"", line);
    canvas_clear(&narrow);
    panel_status(&narrow, (struct rect){ 0, 0, 80, 1 }, &s);
    row_text(&narrow, 0, line);
    CHECK_MSG(strcmp(line, "train running  step 500/1000  loss 2.3412  val 2.51  12,345 tok/s  "
                           "ETA 3m10s") == 0,
              "80 columns: \"%s\"", line);
    canvas_free(&narrow);

    /* a notice takes the right end */
    snprintf(s.notice, sizeof s.notice, "exported caem-screen.svg");
    panel_status(&c, (struct rect){ 0, 0, 160, 1 }, &s);
    row_text(&c, 0, line);
    size_t length = strlen(line);
    CHECK(length == 160);
    CHECK(length >= 24);
    CHECK(strcmp(line + length - 24, "exported caem-screen.svg") == 0);
    CHECK(strncmp(line, "train running  step 500/1000", 28) == 0);

    /* a failed job shows its message, not a rate or an ETA */
    s.notice[0] = '\0';
    s.job.state = JOB_FAILED;
    snprintf(s.job.message, sizeof s.job.message, "loss is NaN at step 501");
    panel_status(&c, (struct rect){ 0, 0, 160, 1 }, &s);
    row_text(&c, 0, line);
    CHECK_MSG(strstr(line, "train failed") == line, "status is \"%s\"", line);
    CHECK(strstr(line, "loss is NaN at step 501") != NULL);
    CHECK(strstr(line, "ETA") == NULL);

    s.has_job = 0;
    panel_status(&c, (struct rect){ 0, 0, 160, 1 }, &s);
    row_text(&c, 0, line);
    CHECK_MSG(strcmp(line, "no job  (F1 help)") == 0, "status is \"%s\"", line);
    canvas_free(&c);
    screen_state_free(&s);
}

/* ---- utilization ---- */

/* Reads the expert rows of a utilization panel drawn at (0, 0): index,
 * percentage, kept and dropped. Returns the rows read. */
static int read_usage_rows(const struct canvas *c, int *index, double *percent,
                           long long *kept, long long *dropped, int capacity)
{
    char line[LINE_BYTES];
    int count = 0;
    for (int y = 1; y < c->rows - 1 && count < capacity; y++) {
        row_text(c, y, line);
        const char *p = line + 1; /* past the frame's left edge, 1 to 3 bytes */
        while ((*p & 0xC0) == 0x80)
            p++;
        while (*p == ' ')
            p++;
        if (*p < '0' || *p > '9' || strchr(p, '%') == NULL)
            continue;
        if (strncmp(p, "total", 5) == 0)
            continue;
        index[count] = atoi(p);
        const char *after = NULL;
        percent[count] = parse_percent(p, &after);
        kept[count] = parse_count(&after);
        dropped[count] = parse_count(&after);
        count++;
    }
    return count;
}

static void check_usage_panel(int ascii)
{
    struct screen_state s;
    struct canvas c;
    char line[LINE_BYTES];
    state_full(&s);
    s.decoder = 0;
    s.layer = 1;
    CHECK_INT_EQ(canvas_init(&c, 60, 16, ascii), 0);
    panel_usage(&c, (struct rect){ 0, 0, 60, 16 }, &s);

    CHECK_MSG(find_row(&c, "utilization  encoder block 3 (MoE layer 2/2)  counts", line) == 0,
              "title row is \"%s\"", line);
    CHECK(find_row(&c, "train job, steps 1-340", line) == 1);

    int index[EXPERTS];
    double percent[EXPERTS];
    long long kept[EXPERTS], dropped[EXPERTS];
    int rows = read_usage_rows(&c, index, percent, kept, dropped, EXPERTS);
    CHECK_INT_EQ(rows, EXPERTS);
    int64_t total = 0;
    for (int e = 0; e < EXPERTS; e++)
        total += row1_kept[e];
    double sum = 0.0;
    for (int i = 0; i < rows; i++) {
        int e = index[i];
        CHECK_INT_EQ(e, i);
        CHECK_NEAR(percent[i], 100.0 * (double)row1_kept[e] / (double)total, 0.05 + 1e-9);
        CHECK_INT_EQ(kept[i], row1_kept[e]);
        CHECK_INT_EQ(dropped[i], row1_dropped[e]);
        sum += percent[i];
    }
    CHECK_NEAR(sum, 100.0, 0.05 * EXPERTS);

    /* the counts as printed, grouped by thousands, and the totals */
    CHECK(find_row(&c, "91,011", line) > 0);
    CHECK(find_row(&c, "6,789", line) > 0);
    int64_t dropped_total = 0;
    for (int e = 0; e < EXPERTS; e++)
        dropped_total += row1_dropped[e];
    char totals[128];
    CHECK_INT_EQ(dropped_total, 7146);
    snprintf(totals, sizeof totals, "dropped 7,146 (%.1f%%)",
             100.0 * (double)dropped_total / (double)(total + dropped_total));
    CHECK_MSG(find_row(&c, totals, line) == 14, "no \"%s\" on the last row", totals);

    /* dropped counts are drawn in their own style */
    int y = find_row(&c, "6,789", line);
    int styled = 0;
    for (int x = 0; y >= 0 && x < c.cols; x++)
        styled += c.cells[y * c.cols + x].style == STYLE_DROPPED;
    CHECK_INT_EQ(styled, 5);
    canvas_free(&c);
    screen_state_free(&s);
}

static void test_usage_shares_and_counts(void)
{
    check_usage_panel(1);
    check_usage_panel(0);
}

/* At 80x24 the utilization title leaves out its first word to keep the mode. */
static void test_usage_title_narrow(void)
{
    struct screen_state s;
    struct canvas c;
    struct screen_layout l;
    char line[LINE_BYTES];
    state_full(&s);
    s.layer = 1;
    CHECK_INT_EQ(screen_layout(80, 24, &l), 0);
    CHECK_INT_EQ(canvas_init(&c, 80, 24, 1), 0);
    panel_usage(&c, l.usage, &s);
    row_text(&c, l.usage.y, line);
    CHECK_MSG(strncmp(line, "+ encoder block 3 (MoE layer 2/2)  counts -", 43) == 0,
              "title row is \"%s\"", line);
    canvas_free(&c);
    screen_state_free(&s);
}

static void test_usage_soft_mode(void)
{
    struct screen_state s;
    struct canvas c;
    char line[LINE_BYTES];
    state_full(&s);
    s.decoder = 1;
    s.layer = 0;
    s.soft = 1;
    CHECK_INT_EQ(canvas_init(&c, 60, 16, 1), 0);
    panel_usage(&c, (struct rect){ 0, 0, 60, 16 }, &s);
    CHECK(find_row(&c, "utilization  decoder block 1 (MoE layer 1/2)  soft", line) == 0);
    CHECK(find_row(&c, "mean p", line) > 0);

    int index[EXPERTS];
    double percent[EXPERTS];
    long long kept[EXPERTS], dropped[EXPERTS];
    int rows = read_usage_rows(&c, index, percent, kept, dropped, EXPERTS);
    CHECK_INT_EQ(rows, EXPERTS);
    int row = usage_table_row(&s.usage, 1, 0);
    for (int i = 0; i < rows; i++)
        CHECK_NEAR(percent[i], 100.0 * usage_table_soft(&s.usage, row, index[i]), 0.05 + 1e-9);
    canvas_free(&c);
    screen_state_free(&s);
}

static void test_usage_missing_layer(void)
{
    struct screen_state s;
    struct canvas c;
    char line[LINE_BYTES];
    CHECK_INT_EQ(canvas_init(&c, 60, 12, 1), 0);

    screen_state_init(&s);
    panel_usage(&c, (struct rect){ 0, 0, 60, 12 }, &s);
    CHECK(find_row(&c, "no usage yet", line) == 1);

    state_full(&s);
    s.layer = 5;
    panel_usage(&c, (struct rect){ 0, 0, 60, 12 }, &s);
    CHECK_MSG(find_row(&c, "no MoE layer 6 in the encoder (it has 2)", line) == 1,
              "row 1 is \"%s\"", line);

    s.usage.layers[0] = 4; /* the same rows, all in the encoder */
    s.usage.layers[1] = 0;
    s.decoder = 1;
    s.layer = 0;
    panel_usage(&c, (struct rect){ 0, 0, 60, 12 }, &s);
    CHECK(find_row(&c, "the decoder has no MoE layers", line) == 1);
    canvas_free(&c);
    screen_state_free(&s);
}

/* More experts than rows: as many as fit, then "+N more". */
static void test_usage_more_experts(void)
{
    struct screen_state s;
    struct canvas c;
    struct caem_error err;
    char line[LINE_BYTES];
    screen_state_init(&s);
    int blocks[1] = { 0 };
    struct usage_table shape;
    memset(&shape, 0, sizeof shape);
    shape.experts = 64;
    shape.layers[0] = 1;
    shape.blocks = blocks;
    CHECK_INT_EQ(usage_table_init_like(&s.usage, &shape, &err), 0);
    for (int e = 0; e < 64; e++)
        s.usage.kept[e] = e;
    s.has_usage = 1;

    CHECK_INT_EQ(canvas_init(&c, 50, 12, 1), 0);
    panel_usage(&c, (struct rect){ 0, 0, 50, 12 }, &s);
    /* 10 inside rows: header, 7 experts, "+57 more", totals */
    int index[64];
    double percent[64];
    long long kept[64], dropped[64];
    CHECK_INT_EQ(read_usage_rows(&c, index, percent, kept, dropped, 64), 7);
    CHECK_MSG(find_row(&c, "+57 more", line) == 9, "no \"+57 more\" on row 9");
    CHECK(find_row(&c, "total kept 2,016", line) == 10);
    canvas_free(&c);
    screen_state_free(&s);
}

/* ---- entropy ---- */

static void check_entropy_panel(struct rect r, int selected_decoder, int selected_layer)
{
    struct screen_state s;
    struct canvas c;
    char line[LINE_BYTES];
    state_full(&s);
    s.decoder = selected_decoder;
    s.layer = selected_layer;
    CHECK_INT_EQ(canvas_init(&c, r.w, r.h, 1), 0);
    panel_entropy(&c, r, &s);

    int rows = usage_table_rows(&s.usage), found = 0;
    int selected = usage_table_row(&s.usage, selected_decoder, selected_layer);
    for (int row = 0; row < rows; row++) {
        char label[32];
        snprintf(label, sizeof label, "%s %d", row < 2 ? "enc" : "dec", test_blocks[row]);
        int y = find_row(&c, label, line);
        if (y < 0)
            continue;
        found++;
        const char *value_text = strstr(line, label) + strlen(label);
        double value = strtod(value_text, NULL);
        CHECK_MSG(value >= 0.0 && value <= 1.0, "%s: %g", label, value);
        CHECK_NEAR(value, usage_table_entropy(&s.usage, row), 0.0005 + 1e-12);
        CHECK_MSG((line[1] == '>') == (row == selected), "%s: marker '%c'", label, line[1]);
    }
    int inside = r.h - 2;
    CHECK_INT_EQ(found, rows < inside ? rows : inside);
    CHECK_MSG(find_row(&c, ">", line) >= 1, "the selected layer is not shown");
    canvas_free(&c);
    screen_state_free(&s);
}

static void test_entropy_values(void)
{
    check_entropy_panel((struct rect){ 0, 0, 40, 8 }, 0, 1);
    check_entropy_panel((struct rect){ 0, 0, 36, 7 }, 1, 0);

    /* two rows inside: the window scrolls to the selected last layer */
    check_entropy_panel((struct rect){ 0, 0, 40, 4 }, 1, 1);
    check_entropy_panel((struct rect){ 0, 0, 40, 4 }, 0, 0);
}

/* Hand values: uniform is 1, one-hot 0, two of eight experts 1/3. */
static void test_entropy_by_hand(void)
{
    struct screen_state s;
    struct canvas c;
    char line[LINE_BYTES];
    state_full(&s);
    CHECK_INT_EQ(canvas_init(&c, 60, 8, 0), 0);
    panel_entropy(&c, (struct rect){ 0, 0, 60, 8 }, &s);
    CHECK(find_row(&c, "enc 1  1.000", line) == 1);
    CHECK(find_row(&c, "dec 1  0.000", line) == 3);
    CHECK(find_row(&c, "dec 3  0.333", line) == 4);

    /* the sparkline's last cell is the newest sample */
    int y = find_row(&c, "enc 1", line);
    double newest = s.entropy[0 * SCREEN_HISTORY + s.entropy_count - 1];
    CHECK(y == 1);
    CHECK(c.cells[1 * c.cols + 58].ch == canvas_spark(&c, newest));
    canvas_free(&c);
    screen_state_free(&s);
}

/* ---- loss ---- */

static void test_loss_panel_plot(void)
{
    struct screen_state s;
    struct canvas c;
    char line[LINE_BYTES];
    screen_state_init(&s);
    CHECK_INT_EQ(canvas_init(&c, 50, 10, 1), 0);
    panel_loss(&c, (struct rect){ 0, 0, 50, 10 }, &s);
    CHECK(find_row(&c, "no loss yet", line) == 1);

    /* losses 3, 2, 1: the average is 3, 2.9, 2.71 */
    s.loss_count = 3;
    const double loss[3] = { 3.0, 2.0, 1.0 };
    for (int k = 0; k < 3; k++) {
        s.loss_step[k] = 10L * (k + 1);
        s.loss[k] = loss[k];
        s.validation[k] = NAN;
    }
    s.validation[1] = 2.5;
    panel_loss(&c, (struct rect){ 0, 0, 50, 10 }, &s);
    CHECK_MSG(find_row(&c, "* loss 1.0000  - ema 2.7100  o val 2.5000", line) == 1,
              "values row is \"%s\"", line);

    /* y labels from 1 to 3 over 6 plot rows (2..7), samples from column 9 */
    row_text(&c, 2, line);
    CHECK_MSG(strncmp(line, "|  3.000|", 9) == 0, "top row is \"%s\"", line);
    row_text(&c, 7, line);
    CHECK_MSG(strncmp(line, "|  1.000|", 9) == 0, "bottom row is \"%s\"", line);
    CHECK(c.cells[2 * 50 + 9].ch == L'*');  /* loss 3 at the top */
    CHECK(c.cells[7 * 50 + 11].ch == L'*'); /* loss 1 at the bottom */
    CHECK(c.cells[3 * 50 + 10].ch == L'o'); /* validation 2.5: row 5 - round(3.75) */
    CHECK(c.cells[3 * 50 + 10].style == STYLE_ACCENT);
    CHECK(c.cells[2 * 50 + 10].ch == L'-'); /* average 2.9 */
    CHECK(c.cells[3 * 50 + 11].ch == L'-'); /* average 2.71 */
    CHECK(find_row(&c, "step 10-30", line) == 8);
    canvas_free(&c);
    screen_state_free(&s);
}

/* With more samples than columns the newest that fit are plotted. */
static void test_loss_panel_newest_samples(void)
{
    struct screen_state s;
    struct canvas c;
    char line[LINE_BYTES];
    state_full(&s);
    CHECK_INT_EQ(canvas_init(&c, 40, 10, 1), 0);
    panel_loss(&c, (struct rect){ 0, 0, 40, 10 }, &s);
    /* the values line is too narrow for the names: marks and numbers only */
    char last[32];
    snprintf(last, sizeof last, "* %.4f  - ", s.loss[119]);
    row_text(&c, 1, line);
    CHECK_MSG(strstr(line, last) == line + 1, "values row is \"%s\"", line);
    CHECK(strstr(line, "ema") == NULL);
    CHECK(find_row(&c, "+ loss  * train  - ema  o val -", line) == 0);

    /* 38 inside columns minus 8 of labels: the last 30 of 120 samples */
    char range[64];
    snprintf(range, sizeof range, "step %ld-%ld", s.loss_step[90], s.loss_step[119]);
    CHECK_MSG(find_row(&c, range, line) == 8, "no \"%s\"", range);
    double low = INFINITY, high = -INFINITY;
    for (int k = 90; k < 120; k++) {
        low = fmin(low, s.loss[k]);
        high = fmax(high, s.loss[k]);
        if (isfinite(s.validation[k])) {
            low = fmin(low, s.validation[k]);
            high = fmax(high, s.validation[k]);
        }
    }
    row_text(&c, 2, line);
    double top = strtod(line + 1, NULL);
    row_text(&c, 7, line);
    double bottom = strtod(line + 1, NULL);
    /* the average can lie outside the samples' range, so only bound it */
    CHECK(top >= high - 0.0005);
    CHECK(bottom <= low + 0.0005);
    canvas_free(&c);
    screen_state_free(&s);
}

/* ---- heatmap and merge ---- */

static void test_heatmap_cells(void)
{
    struct screen_state s;
    struct canvas c;
    char line[LINE_BYTES];
    state_full(&s);
    s.view = VIEW_HEATMAP;
    CHECK_INT_EQ(canvas_init(&c, 60, 10, 1), 0);
    panel_heatmap(&c, (struct rect){ 0, 0, 60, 10 }, &s);
    /* row 2 (dec 1) is one-hot on expert 5: the map's largest value */
    CHECK_INT_EQ(find_row(&c, "dec 1 ", line), 4);
    const char *label = strstr(line, "dec 1 ");
    const char *cells = label != NULL ? label + 6 : "";
    /* 8 experts in 60 - 2 - 2 - 5 - 1 - 7 cells: 3 cells each, all blank but expert 5 */
    CHECK_MSG(strncmp(cells, "               ###       ", 24) == 0, "dec 1 cells \"%s\"", cells);
    CHECK(strstr(line, "0.000") != NULL);
    CHECK(find_row(&c, "enc 1 ", line) == 2);
    CHECK(strstr(line, "1.000") != NULL);
    CHECK(find_row(&c, "share up to", line) == 8);
    canvas_free(&c);
    screen_state_free(&s);
}

/* 512 experts in 80 columns: several experts per column, inside the panel. */
static void test_heatmap_groups_experts(void)
{
    struct screen_state s;
    struct canvas c;
    struct caem_error err;
    char line[LINE_BYTES];
    screen_state_init(&s);
    int blocks[2] = { 1, 1 };
    struct usage_table shape;
    memset(&shape, 0, sizeof shape);
    shape.experts = 512;
    shape.layers[0] = 1;
    shape.layers[1] = 1;
    shape.blocks = blocks;
    CHECK_INT_EQ(usage_table_init_like(&s.usage, &shape, &err), 0);
    for (int e = 0; e < 1024; e++)
        s.usage.kept[e] = e % 7;
    s.has_usage = 1;
    CHECK_INT_EQ(canvas_init(&c, 80, 12, 1), 0);
    fill_sentinel(&c);
    struct rect r = { 0, 1, 80, 10 };
    panel_heatmap(&c, r, &s);
    CHECK_INT_EQ(changed_outside(&c, r), 0);
    CHECK(find_row(&c, "per column", line) == 2);
    canvas_free(&c);
    screen_state_free(&s);
}

static void test_merge_view(void)
{
    struct screen_state s;
    struct canvas c;
    char line[LINE_BYTES];
    state_full(&s);
    CHECK_INT_EQ(canvas_init(&c, 100, 14, 1), 0);
    panel_merge(&c, (struct rect){ 0, 0, 100, 14 }, &s);
    CHECK(find_row(&c, "no merge yet", line) == 1);

    state_add_merge(&s);
    s.decoder = 1;
    s.layer = 1;
    panel_merge(&c, (struct rect){ 0, 0, 100, 14 }, &s);
    CHECK(find_row(&c, "3 sources -> 8 experts per layer  alpha 1.00 (used 1.00)", line) == 1);
    CHECK(find_row(&c, "encoder: cls 0.375 qa 0.375 sum 0.250", line) == 2);
    CHECK(find_row(&c, "enc MoE 1  cls H 0.900 N 3  qa H 0.800 N 3  sum H 0.700 N 2", line) == 3);
    CHECK(find_row(&c, "slots cls:7 cls:6 cls:5 qa:7 qa:6 qa:5 sum:7 sum:6", line) == 4);
    CHECK_MSG(find_row(&c, "> dec MoE 2", line) == 9, "selected layer not marked");
    canvas_free(&c);
    screen_state_free(&s);
}

/* ---- whole screen ---- */

static void test_key_help_lines(void)
{
    const char *expected[] = {
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
    };
    int count = (int)(sizeof expected / sizeof expected[0]);
    for (int i = 0; i < count; i++)
        CHECK_MSG(screen_key_help[i] != NULL && strcmp(screen_key_help[i], expected[i]) == 0,
                  "line %d is \"%s\"", i, screen_key_help[i] ? screen_key_help[i] : "(NULL)");
    CHECK(screen_key_help[count] == NULL);

    /* the overlay at the smallest screen lists every line */
    struct screen_state s;
    struct canvas c;
    struct screen_layout l;
    char line[LINE_BYTES];
    state_full(&s);
    s.help = 1;
    CHECK_INT_EQ(screen_layout(80, 24, &l), 0);
    CHECK_INT_EQ(canvas_init(&c, 80, 24, 0), 0);
    panels_draw(&c, &l, &s);
    for (int i = 0; i < count; i++)
        CHECK_MSG(find_row(&c, expected[i], line) >= l.upper.y, "missing \"%s\"", expected[i]);
    canvas_free(&c);
    screen_state_free(&s);
}

/* Each panel drawn into a rectangle of a canvas pre-filled with a sentinel
 * changes no cell outside it, for the rectangles of several screen sizes
 * and for rectangles partly outside the canvas or degenerate. */
static void test_panels_stay_inside(void)
{
    const int sizes[][2] = { { 80, 24 }, { 81, 25 }, { 100, 30 }, { 132, 43 }, { 200, 60 },
                             { 300, 100 } };
    struct screen_state full, empty;
    state_full(&full);
    state_add_merge(&full);
    screen_state_init(&empty);
    const struct screen_state *states[2] = { &full, &empty };

    for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++) {
        int cols = sizes[i][0], rows = sizes[i][1];
        struct screen_layout l;
        struct canvas c;
        CHECK_INT_EQ(screen_layout(cols, rows, &l), 0);
        CHECK_INT_EQ(canvas_init(&c, cols, rows, (int)(i % 2)), 0);
        struct rect odd[5] = { { -5, -3, 30, 12 }, { cols - 20, rows - 5, 40, 12 },
                               { 2, 2, 1, 1 }, { 4, 4, 2, 3 }, { 3, 3, -4, 0 } };
        for (int which = 0; which < 2; which++) {
            const struct screen_state *s = states[which];
            struct {
                const char *name;
                struct rect r;
            } cases[12] = {
                { "status", l.status }, { "usage", l.usage }, { "entropy", l.entropy },
                { "loss", l.loss },     { "heatmap", l.upper }, { "merge", l.upper },
                { "help", l.upper },    { "odd 0", odd[0] },   { "odd 1", odd[1] },
                { "odd 2", odd[2] },    { "odd 3", odd[3] },   { "odd 4", odd[4] },
            };
            for (int k = 0; k < 12; k++) {
                int panels = k < 7 ? 1 : 8; /* the odd rectangles get every panel */
                for (int p = 0; p < panels; p++) {
                    int kind = k < 7 ? k : p;
                    fill_sentinel(&c);
                    switch (kind) {
                    case 0: panel_status(&c, cases[k].r, s); break;
                    case 1: panel_usage(&c, cases[k].r, s); break;
                    case 2: panel_entropy(&c, cases[k].r, s); break;
                    case 3: panel_loss(&c, cases[k].r, s); break;
                    case 4: panel_heatmap(&c, cases[k].r, s); break;
                    case 5: panel_merge(&c, cases[k].r, s); break;
                    case 6: panel_help(&c, cases[k].r); break;
                    default: canvas_frame(&c, cases[k].r, "frame"); break;
                    }
                    int changed = changed_outside(&c, cases[k].r);
                    CHECK_MSG(changed == 0, "%dx%d, %s state, %s rect, panel %d: %d cells",
                              cols, rows, which ? "empty" : "full", cases[k].name, kind,
                              changed);
                }
            }

            /* the whole view: the REPL rectangles stay untouched */
            for (int view = 0; view < 4; view++) {
                struct screen_state copy = *s;
                copy.view = view < 3 ? (enum screen_view)view : VIEW_PANELS;
                copy.help = view == 3;
                fill_sentinel(&c);
                panels_draw(&c, &l, &copy);
                struct rect panels_area = { 0, 0, cols, l.upper.y + l.upper.h };
                CHECK_MSG(changed_outside(&c, panels_area) == 0, "%dx%d view %d", cols,
                          rows, view);
            }
        }
        canvas_free(&c);
    }
    screen_state_free(&full);
    screen_state_free(&empty);
}

static void test_ascii_mode_bytes(void)
{
    struct screen_state s;
    state_full(&s);
    state_add_merge(&s);
    snprintf(s.usage_source, sizeof s.usage_source, "runs/\xc3\xa9t\xc3\xa9.h5: qa/validation");
    snprintf(s.notice, sizeof s.notice, "export \xe2\x86\x92 done");
    const int sizes[][2] = { { 80, 24 }, { 120, 40 }, { 250, 90 } };
    char line[LINE_BYTES];
    for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++) {
        struct screen_layout l;
        struct canvas ascii, unicode;
        CHECK_INT_EQ(screen_layout(sizes[i][0], sizes[i][1], &l), 0);
        CHECK_INT_EQ(canvas_init(&ascii, sizes[i][0], sizes[i][1], 1), 0);
        CHECK_INT_EQ(canvas_init(&unicode, sizes[i][0], sizes[i][1], 0), 0);
        int non_ascii_in_unicode = 0;
        for (int view = 0; view < 4; view++) {
            s.view = view < 3 ? (enum screen_view)view : VIEW_PANELS;
            s.help = view == 3;
            panels_draw(&ascii, &l, &s);
            panels_draw(&unicode, &l, &s);
            for (int y = 0; y < ascii.rows; y++) {
                row_text(&ascii, y, line);
                for (const unsigned char *p = (const unsigned char *)line; *p; p++)
                    CHECK_MSG(*p < 128, "%dx%d view %d row %d byte 0x%02x: \"%s\"",
                              sizes[i][0], sizes[i][1], view, y, *p, line);
                row_text(&unicode, y, line);
                for (const unsigned char *p = (const unsigned char *)line; *p; p++)
                    non_ascii_in_unicode += *p >= 128;
            }
        }
        /* the same drawing in Unicode uses box lines and blocks */
        CHECK(non_ascii_in_unicode > 0);
        canvas_free(&ascii);
        canvas_free(&unicode);
    }
    screen_state_free(&s);
}

static void test_state_free_zeroes(void)
{
    struct screen_state s;
    state_full(&s);
    state_add_merge(&s);
    screen_state_free(&s);
    CHECK(s.entropy == NULL);
    CHECK(s.usage.kept == NULL);
    CHECK(s.merge.slot_source == NULL);
    CHECK_INT_EQ(s.has_usage, 0);
    CHECK_INT_EQ(s.has_merge, 0);
    CHECK_INT_EQ(s.loss_count, 0);
    screen_state_free(&s); /* a second free is harmless */
}

/* ---- SVG ---- */

static char *read_file(const char *path, size_t *length)
{
    FILE *f = fopen(path, "rb");
    if (f == NULL)
        return NULL;
    fseek(f, 0, SEEK_END);
    long size = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *text = malloc((size_t)size + 1);
    size_t got = fread(text, 1, (size_t)size, f);
    fclose(f);
    text[got] = '\0';
    *length = got;
    return text;
}

/* Checks XML well-formedness as far as this writer's output needs: tags
 * nest and close in order, attributes are quoted, and every '&' starts one
 * of the five predefined entities. Returns NULL or what is wrong. */
static const char *xml_problem(const char *text, char *where, size_t size)
{
    char stack[64][32];
    int depth = 0;
    const char *entities[5] = { "&lt;", "&gt;", "&amp;", "&quot;", "&apos;" };
    for (const char *p = text; *p; p++) {
        if (*p == '&') {
            int known = 0;
            for (int i = 0; i < 5; i++)
                known |= strncmp(p, entities[i], strlen(entities[i])) == 0;
            if (!known) {
                snprintf(where, size, "%.40s", p);
                return "a bare '&'";
            }
            continue;
        }
        if (*p == '>') {
            snprintf(where, size, "%.40s", p);
            return "a '>' outside a tag";
        }
        if (*p != '<')
            continue;
        const char *end = strchr(p, '>');
        if (end == NULL)
            return "an unclosed tag";
        int closing = p[1] == '/';
        const char *name = p + 1 + closing;
        size_t name_length = strcspn(name, " />");
        if (name_length == 0 || name_length >= 32) {
            snprintf(where, size, "%.40s", p);
            return "a tag without a name";
        }
        /* quotes inside the tag pair up, and hold no '<' */
        int quotes = 0;
        for (const char *q = p; q < end; q++)
            quotes += *q == '"';
        if (quotes % 2 != 0 || memchr(p + 1, '<', (size_t)(end - p - 1)) != NULL) {
            snprintf(where, size, "%.40s", p);
            return "a broken attribute";
        }
        if (closing) {
            if (depth == 0 || strlen(stack[depth - 1]) != name_length ||
                strncmp(stack[depth - 1], name, name_length) != 0) {
                snprintf(where, size, "%.40s", p);
                return "a closing tag that does not match";
            }
            depth--;
        } else if (end[-1] != '/') {
            if (depth == 64)
                return "tags nested too deep";
            memcpy(stack[depth], name, name_length);
            stack[depth][name_length] = '\0';
            depth++;
        }
        p = end;
    }
    return depth == 0 ? NULL : "an element left open";
}

static int count_occurrences(const char *text, const char *needle)
{
    int count = 0;
    for (const char *p = strstr(text, needle); p != NULL; p = strstr(p + 1, needle))
        count++;
    return count;
}

static int make_temporary_directory(char *out, size_t size)
{
    snprintf(out, size, "/tmp/caem-test-panels-XXXXXX");
    return mkdtemp(out) != NULL ? 0 : -1;
}

static void check_svg_file(const char *path, const struct screen_state *s)
{
    size_t length = 0;
    char where[64] = "";
    char *text = read_file(path, &length);
    CHECK_MSG(text != NULL, "%s not written", path);
    if (text == NULL)
        return;
    CHECK_MSG(strncmp(text, "<svg", 4) == 0, "starts with \"%.20s\"", text);
    CHECK(length >= 7);
    if (length >= 7)
        CHECK(strcmp(text + length - 7, "</svg>\n") == 0);
    const char *problem = xml_problem(text, where, sizeof where);
    CHECK_MSG(problem == NULL, "%s at \"%s\"", problem, where);
    if (s->has_usage) {
        int cells = usage_table_rows(&s->usage) * s->usage.experts;
        CHECK(count_occurrences(text, "fill=\"rgb(") == cells);
        CHECK(count_occurrences(text, "<polyline") >= 2);
    }
    free(text);
}

static void test_svg_export_well_formed(void)
{
    char directory[64], path[128], temporary[160];
    struct caem_error err;
    struct stat st;
    if (make_temporary_directory(directory, sizeof directory) != 0)
        SKIP("mkdtemp failed: %s", strerror(errno));
    snprintf(path, sizeof path, "%s/x.svg", directory);
    snprintf(temporary, sizeof temporary, "%s.tmp", path);

    struct screen_state s;
    state_full(&s);
    state_add_merge(&s);
    snprintf(s.usage_source, sizeof s.usage_source, "runs/a<b & \"c\".h5: qa/validation");
    CHECK_MSG(screen_export_svg(&s, path, &err) == 0, "%s", err.message);
    check_svg_file(path, &s);
    size_t length;
    char *text = read_file(path, &length);
    if (text != NULL) {
        CHECK(strstr(text, "runs/a&lt;b &amp; &quot;c&quot;.h5: qa/validation") != NULL);
        CHECK(strstr(text, "a<b") == NULL);
        CHECK(strstr(text, "train running  step 500/1000") != NULL);
        free(text);
    }
    CHECK(stat(temporary, &st) != 0);
    CHECK_INT_EQ(errno, ENOENT);

    /* nothing to show yet: still a whole figure, written over the old one */
    screen_state_free(&s);
    screen_state_init(&s);
    CHECK_MSG(screen_export_svg(&s, path, &err) == 0, "%s", err.message);
    check_svg_file(path, &s);
    text = read_file(path, &length);
    if (text != NULL) {
        CHECK(strstr(text, "no usage yet") != NULL);
        CHECK(strstr(text, "no loss yet") != NULL);
        free(text);
    }

    unlink(path);
    rmdir(directory);
    screen_state_free(&s);
}

static void test_svg_export_failures(void)
{
    struct caem_error err;
    struct screen_state s;
    struct stat st;
    state_full(&s);

    /* a missing directory: the message names the path and the cause */
    err.message[0] = '\0';
    CHECK_INT_EQ(screen_export_svg(&s, "/nonexistent/dir/x.svg", &err), -1);
    CHECK_MSG(strstr(err.message, "/nonexistent/dir/x.svg") != NULL, "message: %s",
              err.message);
    CHECK_MSG(strstr(err.message, strerror(ENOENT)) != NULL, "message: %s", err.message);
    CHECK(stat("/nonexistent/dir/x.svg.tmp", &st) != 0);

    /* a directory in the way: the temporary file is written, the rename
     * fails, and the temporary file is removed again */
    char directory[64], path[128], temporary[160];
    if (make_temporary_directory(directory, sizeof directory) != 0)
        SKIP("mkdtemp failed: %s", strerror(errno));
    snprintf(path, sizeof path, "%s/x.svg", directory);
    snprintf(temporary, sizeof temporary, "%s.tmp", path);
    CHECK_INT_EQ(mkdir(path, 0700), 0);
    err.message[0] = '\0';
    CHECK_INT_EQ(screen_export_svg(&s, path, &err), -1);
    CHECK_MSG(strstr(err.message, path) != NULL, "message: %s", err.message);
    CHECK_MSG(strstr(err.message, "rename") != NULL, "message: %s", err.message);
    CHECK(stat(temporary, &st) != 0);
    CHECK_INT_EQ(errno, ENOENT);
    rmdir(path);

    /* a full disk: the temporary name links to /dev/full, so every write
     * fails with ENOSPC; the link is removed and the path never appears */
    if (access("/dev/full", W_OK) == 0 && symlink("/dev/full", temporary) == 0) {
        err.message[0] = '\0';
        CHECK_INT_EQ(screen_export_svg(&s, path, &err), -1);
        CHECK_MSG(strstr(err.message, strerror(ENOSPC)) != NULL, "message: %s", err.message);
        CHECK_MSG(strstr(err.message, "cannot write") != NULL, "message: %s", err.message);
        CHECK(lstat(temporary, &st) != 0);
        CHECK(lstat(path, &st) != 0);
        unlink(temporary);
    } else {
        printf("  /dev/full is not writable here: the full-disk case did not run\n");
    }
    rmdir(directory);
    screen_state_free(&s);
}

int main(void)
{
    TEST_SUITE("screen_panels");
    RUN_TEST(layout_every_size);
    RUN_TEST(layout_below_minimum);
    RUN_TEST(rect_overlap_cases);
    RUN_TEST(canvas_text_clips_and_cuts);
    RUN_TEST(canvas_utf8_decoding);
    RUN_TEST(canvas_row_utf8_bounds);
    RUN_TEST(canvas_bar_eighths);
    RUN_TEST(canvas_spark_and_heat);
    RUN_TEST(canvas_frame_title);
    RUN_TEST(status_line_text);
    RUN_TEST(usage_shares_and_counts);
    RUN_TEST(usage_title_narrow);
    RUN_TEST(usage_soft_mode);
    RUN_TEST(usage_missing_layer);
    RUN_TEST(usage_more_experts);
    RUN_TEST(entropy_values);
    RUN_TEST(entropy_by_hand);
    RUN_TEST(loss_panel_plot);
    RUN_TEST(loss_panel_newest_samples);
    RUN_TEST(heatmap_cells);
    RUN_TEST(heatmap_groups_experts);
    RUN_TEST(merge_view);
    RUN_TEST(key_help_lines);
    RUN_TEST(panels_stay_inside);
    RUN_TEST(ascii_mode_bytes);
    RUN_TEST(state_free_zeroes);
    RUN_TEST(svg_export_well_formed);
    RUN_TEST(svg_export_failures);
    TEST_MAIN_END();
}
