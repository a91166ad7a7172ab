/* A grid of character cells that the panels draw into. The screen copies it
 * to the terminal with ncurses; tests and the SVG export read it directly.
 *
 * Text comes in as UTF-8 and is stored as wide characters, one per cell (the
 * panels draw no double-width characters). With `ascii` set (a locale that
 * is not UTF-8) the drawing functions use only ASCII: "+-|" for frames, '#'
 * for bars, " .:*#" for heat levels. Every function clips to the grid, so a
 * caller may draw partly outside it. */
#ifndef CAEM_UI_CANVAS_H
#define CAEM_UI_CANVAS_H

#include <stddef.h>
#include <wchar.h>

/* The role of a cell, which the screen maps to a colour pair (or to plain
 * text under NO_COLOR or on a terminal without colours). */
enum canvas_style {
    STYLE_PLAIN,
    STYLE_TITLE,    /* panel titles, the status line's job name */
    STYLE_DIM,      /* axes, labels, hints */
    STYLE_BAR,      /* utilization bars, the progress bar */
    STYLE_DROPPED,  /* dropped tokens */
    STYLE_GOOD,     /* training loss, high entropy */
    STYLE_ACCENT,   /* validation loss, the selected layer */
    STYLE_WARN,     /* warnings, a failed job */
    STYLE_HEAT_0,   /* heat levels, from the smallest share to the largest */
    STYLE_HEAT_1,
    STYLE_HEAT_2,
    STYLE_HEAT_3,
    STYLE_HEAT_4,
    STYLE_COUNT,
};

struct canvas_cell {
    wchar_t ch;
    unsigned char style; /* enum canvas_style */
};

struct canvas {
    int cols, rows;
    int ascii;                 /* draw with ASCII only */
    struct canvas_cell *cells; /* [rows * cols], row-major */
};

struct rect {
    int x, y, w, h; /* column and row of the top-left cell, width and height */
};

/* Sets up a cols x rows grid of spaces. Returns 0, or -1 when out of memory. */
int canvas_init(struct canvas *c, int cols, int rows, int ascii);

/* Changes the size; the cells become spaces. Returns 0 or -1. */
int canvas_resize(struct canvas *c, int cols, int rows);

void canvas_free(struct canvas *c);

/* Fills the whole grid (or one rectangle) with plain spaces. */
void canvas_clear(struct canvas *c);
void canvas_clear_rect(struct canvas *c, struct rect r);

/* Sets one cell. */
void canvas_put(struct canvas *c, int x, int y, wchar_t ch, enum canvas_style style);

/* Writes UTF-8 text from (x, y) on one row, at most max_width cells, and
 * returns how many cells it wrote (those outside the grid included). When
 * the text is cut, its last cell shows '~'. An invalid byte is drawn as '?'. */
int canvas_text(struct canvas *c, int x, int y, int max_width, enum canvas_style style,
                const char *utf8);

/* Returns the cells canvas_text would take for the whole text: its
 * characters, an invalid byte counting as one. */
int canvas_text_cells(const char *utf8);

/* canvas_text with a printf format. */
int canvas_printf(struct canvas *c, int x, int y, int max_width, enum canvas_style style,
                  const char *format, ...) __attribute__((format(printf, 6, 7)));

/* Draws a frame around r with the title in its top edge. */
void canvas_frame(struct canvas *c, struct rect r, const char *title);

/* Draws a horizontal bar of `width` cells filled to fraction (clamped to
 * [0, 1]), in eighths of a cell with Unicode blocks, in whole cells of '#'
 * in ASCII. */
void canvas_bar(struct canvas *c, int x, int y, int width, double fraction,
                enum canvas_style style);

/* One cell of a sparkline for a value in [0, 1] (clamped; NaN is a space):
 * the eight Unicode bars from '▁' to '█', or " .:-=+*#" in ASCII. */
wchar_t canvas_spark(const struct canvas *c, double value);

/* One heat cell for a value in [0, 1]: the style STYLE_HEAT_0..4 and a
 * character (' ', '░', '▒', '▓', '█', or " .:*#" in ASCII). */
void canvas_heat(struct canvas *c, int x, int y, double value);

/* Writes row y as UTF-8 into out (size bytes, NUL-terminated), trailing
 * spaces removed. For tests and the SVG export. */
void canvas_row_utf8(const struct canvas *c, int y, char *out, size_t size);

#endif
