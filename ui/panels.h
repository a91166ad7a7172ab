/* The screen's state and the functions that draw each panel into a canvas.
 * The screen fills a screen_state from the watched job's snapshot several
 * times a second. The panels only read it, so tests and the SVG export need
 * no terminal. */
#ifndef CAEM_UI_PANELS_H
#define CAEM_UI_PANELS_H

#include "canvas.h"
#include "error.h"
#include "job.h"
#include "layout.h"
#include "merge.h"
#include "usage.h"

#define SCREEN_HISTORY 240 /* samples of loss and entropy kept for the curves */

enum screen_view {
    VIEW_PANELS,  /* utilization, entropy and loss */
    VIEW_HEATMAP, /* layers x experts of the shown usage */
    VIEW_MERGE,   /* the last merge: allocations and slot sources */
};

struct screen_state {
    /* The watched job (the latest started, or the one given to
     * caem.screen.watch); has_job 0 before any. */
    int has_job;
    struct job_status job;

    /* The usage the utilization, entropy and heatmap panels show: a running
     * job's (since its start), or a model's record (caem.screen.show).
     * has_usage 0 when there is none yet. usage_source names it, e.g.
     * "train job, steps 1-340" or "runs/qa.h5: qa/validation". */
    int has_usage;
    struct usage_table usage;
    char usage_source[160];

    /* Entropy per MoE layer over time, one sample per poll that saw new
     * usage: entropy[row * SCREEN_HISTORY + k] for k < entropy_count, oldest
     * first; rows as in usage. */
    int entropy_rows;
    int entropy_count;
    double *entropy;

    /* Loss samples, oldest first: the training loss at loss_step[k] and the
     * validation loss (NaN where none). */
    int loss_count;
    long loss_step[SCREEN_HISTORY];
    double loss[SCREEN_HISTORY];
    double validation[SCREEN_HISTORY];

    /* The last merge made in this session; merge_names[i] names source i
     * (its task or model name). */
    int has_merge;
    struct merge_record merge;
    char merge_names[MERGE_MAX_SOURCES][64];

    /* The user's selection. */
    int decoder;   /* 0: encoder layers, 1: decoder layers */
    int layer;     /* MoE layer within the stack, from 0 */
    int soft;      /* 1: soft usage (mean router probability) instead of counts */
    enum screen_view view;
    int help;      /* the help overlay is shown */
    char notice[160]; /* a one-line message for the status line (export done, ...) */
};

/* Zeroes the state. screen_state_free releases what the screen stored. */
void screen_state_init(struct screen_state *s);
void screen_state_free(struct screen_state *s);

/* Draws the status line: job kind and state, step/total, loss, validation
 * loss, tokens/s, elapsed, ETA and a progress bar, then the notice when one
 * is set. Before any job it reads "no job". */
void panel_status(struct canvas *c, struct rect r, const struct screen_state *s);

/* Draws the utilization of the selected layer: a row per expert (as many as
 * fit, then "+N more") with a bar, its share of the layer's kept tokens in
 * percent with one decimal, and its count. Dropped tokens have their own
 * column (STYLE_DROPPED), and with `soft` the rows show the mean router
 * probability instead. The title names the stack, the block and the mode. */
void panel_usage(struct canvas *c, struct rect r, const struct screen_state *s);

/* Draws the normalized entropy per MoE layer, encoder then decoder: the
 * value with three decimals, a bar and a sparkline of its history. '>' marks
 * the selected layer. */
void panel_entropy(struct canvas *c, struct rect r, const struct screen_state *s);

/* Draws the training loss, its exponential moving average (weight 0.9) and
 * the validation loss over the steps: a plot of the samples that fit, with
 * the last values and the y range. */
void panel_loss(struct canvas *c, struct rect r, const struct screen_state *s);

/* Draws the heatmap view with a legend. Each MoE layer is a row and each
 * expert a cell (several experts share a cell when they do not fit), shaded
 * by its share of the row's kept tokens, with the row's entropy at the right. */
void panel_heatmap(struct canvas *c, struct rect r, const struct screen_state *s);

/* Draws the merge view: per layer the sources' entropies and allocations,
 * and for every target slot the source and its expert ("cls:3"), or "no
 * merge yet". */
void panel_merge(struct canvas *c, struct rect r, const struct screen_state *s);

/* Draws the help overlay, the keys and what they do, centred in r. */
void panel_help(struct canvas *c, struct rect r);

/* The keys, one "KEY  what it does" line each, for the help overlay and the
 * README. NULL-terminated. */
extern const char *const screen_key_help[];

/* Draws every panel of the current view in their layout rectangles (not the
 * REPL output and input, which the screen draws). */
void panels_draw(struct canvas *c, const struct screen_layout *layout,
                 const struct screen_state *s);

/* Writes the panels as an SVG file, to a temporary name renamed over path.
 * The figure has the selected layer's utilization as bars, the entropy per
 * layer as bars with its history as lines, the loss curves and the heatmap
 * of layers x experts. Returns 0, or -1 with err set. */
int screen_export_svg(const struct screen_state *s, const char *path, struct caem_error *err);

#endif
