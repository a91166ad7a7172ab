#include "layout.h"

#define OUTPUT_MIN_ROWS 5
#define USAGE_WIDTH_PERCENT 55

int screen_layout(int cols, int rows, struct screen_layout *out)
{
    if (cols < SCREEN_MIN_COLS || rows < SCREEN_MIN_ROWS)
        return -1;

    /* the rows between the status line and the input line: a third for the
     * REPL output, the rest for the panels (15 of 22 at the minimum size,
     * enough for the 13 lines of the help overlay in a frame) */
    int middle = rows - 2;
    int output_rows = middle / 3;
    if (output_rows < OUTPUT_MIN_ROWS)
        output_rows = OUTPUT_MIN_ROWS;
    int upper_rows = middle - output_rows;

    int usage_cols = cols * USAGE_WIDTH_PERCENT / 100;
    int entropy_rows = upper_rows / 2;

    out->status = (struct rect){ 0, 0, cols, 1 };
    out->upper = (struct rect){ 0, 1, cols, upper_rows };
    out->usage = (struct rect){ 0, 1, usage_cols, upper_rows };
    out->entropy = (struct rect){ usage_cols, 1, cols - usage_cols, entropy_rows };
    out->loss = (struct rect){ usage_cols, 1 + entropy_rows, cols - usage_cols,
                               upper_rows - entropy_rows };
    out->output = (struct rect){ 0, 1 + upper_rows, cols, output_rows };
    out->input = (struct rect){ 0, rows - 1, cols, 1 };
    return 0;
}

int rect_overlap(struct rect a, struct rect b)
{
    if (a.w <= 0 || a.h <= 0 || b.w <= 0 || b.h <= 0)
        return 0;
    return a.x < b.x + b.w && b.x < a.x + a.w && a.y < b.y + b.h && b.y < a.y + a.h;
}
