/* Helpers shared by the panels (panels.c) and their SVG export
 * (panels_svg.c). */
#ifndef CAEM_UI_PANELS_INTERNAL_H
#define CAEM_UI_PANELS_INTERNAL_H

#include <stddef.h>
#include <stdint.h>

#include "panels.h"

/* Weight of the previous average in the loss's exponential moving average. */
#define PANELS_EMA_WEIGHT 0.9

/* Formats n with a comma between groups of three digits: "12,345". */
void panels_format_count(int64_t n, char *out, size_t size);

/* Fills values[e] for every expert of usage row `row`: its share of the
 * row's kept tokens (0 when the row has none), or with soft set its mean
 * router probability. Each is in [0, 1]. */
void panels_usage_values(const struct usage_table *t, int row, int soft, double *values);

/* Names a usage row by stack and block: "enc 3", "dec 1". */
void panels_row_label(const struct usage_table *t, int row, char *out, size_t size);

/* Returns the loss samples to show: loss_count, within [0, SCREEN_HISTORY]. */
int panels_loss_count(const struct screen_state *s);

/* Fills ema[k] for every loss sample: the exponential moving average of the
 * training loss with weight PANELS_EMA_WEIGHT, started at the first finite
 * loss and NaN before it. A NaN loss leaves the average as it was. */
void panels_loss_ema(const struct screen_state *s, double *ema);

#endif
