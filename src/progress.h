/* Progress lines for a job that a Lua script waits for, headless (caem run,
 * caem -e, the plain REPL).
 *
 * On a terminal, one line redrawn in place (carriage return) with a bar, at
 * most five times a second, and ended with a newline when the job ends. On
 * anything else (a file, a pipe), at most one line per second, each ended
 * with a newline. A job's end gives one more line in both cases. */
#ifndef CAEM_PROGRESS_H
#define CAEM_PROGRESS_H

#include <stddef.h>
#include <stdio.h>

#include "job.h"

struct progress {
    FILE *out;
    int terminal;       /* out is a terminal: redraw one line */
    int width;          /* the terminal's columns */
    double last_output; /* seconds (monotonic clock) of the last line; < 0: none yet */
    int line_open;      /* a terminal line without its newline */
    size_t drawn;       /* characters of the open line, to blank a longer old one */
    int end_reported;   /* the current job's end has been printed */
};

/* Sets up for writing to out: a terminal when isatty returns 1, with its
 * width from $COLUMNS, else from the terminal (TIOCGWINSZ), else 80. */
void progress_init(struct progress *p, FILE *out);

/* Writes the progress of a job whose status is s, if enough time has passed
 * since the last line. `now` is in seconds of the monotonic clock. */
void progress_update(struct progress *p, const struct job_status *s, double now);

/* Ends an open terminal line with a newline, so that what follows starts on
 * a line of its own. */
void progress_finish(struct progress *p);

/* Formats the progress text of s without the bar, e.g.
 * "step 120/1200  loss 2.3142  1830 tokens/s  ETA 4m12s", or for a job that
 * has ended, "train finished: step 1200/1200  loss 0.4121  in 1m31s".
 * Returns the length (truncated to size - 1). */
size_t progress_format(const struct job_status *s, char *out, size_t size);

/* Formats seconds as "4m12s" or "1h02m"; "-" when not finite or negative. */
void progress_format_duration(double seconds, char *out, size_t size);

#endif
