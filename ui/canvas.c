#include "canvas.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <utf8proc.h>

/* Partial blocks for canvas_bar, from 1/8 to 7/8 of a cell. */
static const wchar_t bar_eighths[8] = { L' ', 0x258F, 0x258E, 0x258D,
                                        0x258C, 0x258B, 0x258A, 0x2589 };
static const wchar_t full_block = 0x2588;

static const wchar_t spark_unicode[8] = { 0x2581, 0x2582, 0x2583, 0x2584,
                                          0x2585, 0x2586, 0x2587, 0x2588 };
static const char spark_ascii[8] = " .:-=+*#";

static const wchar_t heat_unicode[5] = { L' ', 0x2591, 0x2592, 0x2593, 0x2588 };
static const char heat_ascii[5] = " .:*#";

/* Box-drawing corners and edges: top-left, top-right, bottom-left,
 * bottom-right, horizontal, vertical. */
static const wchar_t frame_unicode[6] = { 0x250C, 0x2510, 0x2514, 0x2518, 0x2500, 0x2502 };
static const wchar_t frame_ascii[6] = { L'+', L'+', L'+', L'+', L'-', L'|' };

static void fill_spaces(struct canvas *c)
{
    size_t cells = (size_t)c->cols * (size_t)c->rows;
    for (size_t i = 0; i < cells; i++) {
        c->cells[i].ch = L' ';
        c->cells[i].style = STYLE_PLAIN;
    }
}

int canvas_init(struct canvas *c, int cols, int rows, int ascii)
{
    memset(c, 0, sizeof *c);
    c->ascii = ascii;
    return canvas_resize(c, cols, rows);
}

/* A negative size is taken as 0: an empty grid, on which drawing does nothing. */
int canvas_resize(struct canvas *c, int cols, int rows)
{
    if (cols < 0)
        cols = 0;
    if (rows < 0)
        rows = 0;
    size_t cells = (size_t)cols * (size_t)rows;
    struct canvas_cell *grown = realloc(c->cells, (cells > 0 ? cells : 1) * sizeof *grown);
    if (grown == NULL)
        return -1;
    c->cells = grown;
    c->cols = cols;
    c->rows = rows;
    fill_spaces(c);
    return 0;
}

void canvas_free(struct canvas *c)
{
    free(c->cells);
    memset(c, 0, sizeof *c);
}

void canvas_clear(struct canvas *c)
{
    fill_spaces(c);
}

void canvas_clear_rect(struct canvas *c, struct rect r)
{
    int left = r.x > 0 ? r.x : 0, top = r.y > 0 ? r.y : 0;
    int right = r.x + r.w < c->cols ? r.x + r.w : c->cols;
    int bottom = r.y + r.h < c->rows ? r.y + r.h : c->rows;
    for (int y = top; y < bottom; y++)
        for (int x = left; x < right; x++)
            canvas_put(c, x, y, L' ', STYLE_PLAIN);
}

/* Replaces what a terminal cannot show in one cell: control characters,
 * characters that are not one column wide (wide CJK, combining marks), and
 * in ASCII mode everything above 127. A tab becomes a space. */
static wchar_t printable(const struct canvas *c, wchar_t ch)
{
    if (ch == L'\t')
        return L' ';
    if (ch < 0x20 || ch == 0x7F)
        return L'?';
    if (ch < 0x7F)
        return ch;
    if (c->ascii)
        return L'?';
    if (ch > 0x10FFFF || !utf8proc_codepoint_valid((utf8proc_int32_t)ch))
        return L'?';
    if (utf8proc_charwidth((utf8proc_int32_t)ch) != 1)
        return L'?';
    return ch;
}

void canvas_put(struct canvas *c, int x, int y, wchar_t ch, enum canvas_style style)
{
    if (x < 0 || y < 0 || x >= c->cols || y >= c->rows)
        return;
    struct canvas_cell *cell = &c->cells[(size_t)y * (size_t)c->cols + (size_t)x];
    cell->ch = printable(c, ch);
    cell->style = (unsigned char)style;
}

/* Decodes the character at text[*at] and advances *at past it; an invalid
 * sequence gives '?' and advances by one byte. */
static wchar_t next_char(const char *text, size_t length, size_t *at)
{
    utf8proc_int32_t codepoint;
    utf8proc_ssize_t used = utf8proc_iterate((const utf8proc_uint8_t *)text + *at,
                                             (utf8proc_ssize_t)(length - *at), &codepoint);
    if (used <= 0) {
        *at += 1;
        return L'?';
    }
    *at += (size_t)used;
    return (wchar_t)codepoint;
}

/* The return value is the number of cells the text takes from x, also where
 * they lie outside the grid, so that a caller can place what follows. */
int canvas_text(struct canvas *c, int x, int y, int max_width, enum canvas_style style,
                const char *utf8)
{
    if (utf8 == NULL || max_width <= 0)
        return 0;
    size_t length = strlen(utf8), at = 0;
    int written = 0;
    while (at < length && written < max_width) {
        wchar_t ch = next_char(utf8, length, &at);

        /* the last cell of a cut text shows that more was there */
        if (written == max_width - 1 && at < length)
            ch = L'~';
        canvas_put(c, x + written, y, ch, style);
        written++;
    }
    return written;
}

int canvas_text_cells(const char *utf8)
{
    if (utf8 == NULL)
        return 0;
    size_t length = strlen(utf8), at = 0;
    int cells = 0;
    while (at < length) {
        next_char(utf8, length, &at);
        cells++;
    }
    return cells;
}

int canvas_printf(struct canvas *c, int x, int y, int max_width, enum canvas_style style,
                  const char *format, ...)
{
    char small[512];
    va_list ap;
    va_start(ap, format);
    int length = vsnprintf(small, sizeof small, format, ap);
    va_end(ap);
    if (length < 0)
        return 0;
    if ((size_t)length < sizeof small)
        return canvas_text(c, x, y, max_width, style, small);

    /* a text longer than the stack buffer: format it again into the heap */
    char *large = malloc((size_t)length + 1);
    if (large == NULL)
        return canvas_text(c, x, y, max_width, style, small);
    va_start(ap, format);
    vsnprintf(large, (size_t)length + 1, format, ap);
    va_end(ap);
    int written = canvas_text(c, x, y, max_width, style, large);
    free(large);
    return written;
}

void canvas_frame(struct canvas *c, struct rect r, const char *title)
{
    if (r.w <= 0 || r.h <= 0)
        return;
    const wchar_t *part = c->ascii ? frame_ascii : frame_unicode;
    int right = r.x + r.w - 1, bottom = r.y + r.h - 1;

    for (int x = r.x + 1; x < right; x++) {
        canvas_put(c, x, r.y, part[4], STYLE_DIM);
        canvas_put(c, x, bottom, part[4], STYLE_DIM);
    }
    for (int y = r.y + 1; y < bottom; y++) {
        canvas_put(c, r.x, y, part[5], STYLE_DIM);
        canvas_put(c, right, y, part[5], STYLE_DIM);
    }
    canvas_put(c, r.x, r.y, part[0], STYLE_DIM);
    canvas_put(c, right, r.y, part[1], STYLE_DIM);
    canvas_put(c, r.x, bottom, part[2], STYLE_DIM);
    canvas_put(c, right, bottom, part[3], STYLE_DIM);

    /* the title sits in the top edge, one space either side, clear of the corners */
    if (title != NULL && title[0] != '\0' && r.w >= 5) {
        int room = r.w - 4;
        canvas_put(c, r.x + 1, r.y, L' ', STYLE_DIM);
        int written = canvas_text(c, r.x + 2, r.y, room, STYLE_TITLE, title);
        canvas_put(c, r.x + 2 + written, r.y, written < room ? L' ' : part[4], STYLE_DIM);
    }
}

static double clamp_unit(double value)
{
    if (isnan(value) || value < 0.0)
        return 0.0;
    return value > 1.0 ? 1.0 : value;
}

/* The empty part of a bar is spaces, or '.' in ASCII so that the bar's
 * length shows without colours. */
void canvas_bar(struct canvas *c, int x, int y, int width, double fraction,
                enum canvas_style style)
{
    if (width <= 0)
        return;
    fraction = clamp_unit(fraction);
    if (c->ascii) {
        long filled = lround(fraction * width);
        for (int i = 0; i < width; i++)
            canvas_put(c, x + i, y, i < filled ? L'#' : L'.', i < filled ? style : STYLE_DIM);
        return;
    }
    long eighths = lround(fraction * width * 8);
    for (int i = 0; i < width; i++) {
        long left = eighths - 8L * i;
        wchar_t ch = L' ';
        if (left >= 8)
            ch = full_block;
        else if (left > 0)
            ch = bar_eighths[left];
        canvas_put(c, x + i, y, ch, style);
    }
}

wchar_t canvas_spark(const struct canvas *c, double value)
{
    if (isnan(value))
        return L' ';
    long level = lround(clamp_unit(value) * 7);
    return c->ascii ? (wchar_t)spark_ascii[level] : spark_unicode[level];
}

/* Level 0 is kept for exactly 0, so that an idle expert stays blank and any
 * use at all shows: level = ceil(4 value). */
void canvas_heat(struct canvas *c, int x, int y, double value)
{
    int level = (int)ceil(clamp_unit(value) * 4);
    if (level > 4)
        level = 4;
    wchar_t ch = c->ascii ? (wchar_t)heat_ascii[level] : heat_unicode[level];
    canvas_put(c, x, y, ch, (enum canvas_style)(STYLE_HEAT_0 + level));
}

void canvas_row_utf8(const struct canvas *c, int y, char *out, size_t size)
{
    if (size == 0)
        return;
    out[0] = '\0';
    if (y < 0 || y >= c->rows)
        return;
    const struct canvas_cell *row = &c->cells[(size_t)y * (size_t)c->cols];
    int end = c->cols;
    while (end > 0 && row[end - 1].ch == L' ')
        end--;

    size_t used = 0;
    for (int x = 0; x < end; x++) {
        utf8proc_uint8_t bytes[4];
        utf8proc_ssize_t n = utf8proc_encode_char((utf8proc_int32_t)row[x].ch, bytes);
        if (n <= 0 || used + (size_t)n >= size)
            break;
        memcpy(out + used, bytes, (size_t)n);
        used += (size_t)n;
    }
    out[used] = '\0';
}
