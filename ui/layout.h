/* Where each panel of the screen goes for a terminal of a given size.
 *
 *   row 0            status line: job, step/total, loss, tokens/s, elapsed,
 *                    ETA and a progress bar
 *   upper area       utilization (left, about 55% of the width) beside a
 *                    column of entropy (top) and loss (bottom). The
 *                    heatmap, merge and help views cover the whole area
 *   lower area       REPL output (scrollback), at least 5 rows
 *   last row         the REPL input line
 *
 * The panels tile the screen: none overlaps another, and every one lies
 * inside it. */
#ifndef CAEM_UI_LAYOUT_H
#define CAEM_UI_LAYOUT_H

#include "canvas.h"

#define SCREEN_MIN_COLS 80
#define SCREEN_MIN_ROWS 24

struct screen_layout {
    struct rect status;  /* 1 row */
    struct rect upper;   /* the union of usage, entropy and loss */
    struct rect usage;
    struct rect entropy;
    struct rect loss;
    struct rect output;  /* REPL scrollback */
    struct rect input;   /* 1 row */
};

/* Fills out for a cols x rows terminal. Returns 0, or -1 when the terminal
 * is smaller than SCREEN_MIN_COLS x SCREEN_MIN_ROWS (out is then unset). */
int screen_layout(int cols, int rows, struct screen_layout *out);

/* Returns 1 when the rectangles share a cell. */
int rect_overlap(struct rect a, struct rect b);

#endif
