/* The REPL output of the screen: the last SCROLLBACK_LINES lines written to
 * stdout and stderr while the screen runs. Both descriptors go into a pipe
 * that a reader thread drains, so a program that prints a lot never blocks
 * on a full pipe while the screen draws. */
#ifndef CAEM_UI_SCROLLBACK_H
#define CAEM_UI_SCROLLBACK_H

#include <pthread.h>
#include <stddef.h>

#include "canvas.h"
#include "error.h"

#define SCROLLBACK_LINES 2000
#define SCROLLBACK_LINE_MAX 1024 /* bytes kept of one line; the rest is cut */

struct scrollback {
    pthread_mutex_t lock;
    char *lines[SCROLLBACK_LINES]; /* ring of complete lines */
    int first, count;
    char partial[SCROLLBACK_LINE_MAX]; /* the line being written */
    size_t partial_length;
    long version;                 /* changes whenever the text changes */

    int capturing;
    int pipe_read;
    int saved_stdout, saved_stderr;
    pthread_t reader;
};

void scrollback_init(struct scrollback *b);
void scrollback_free(struct scrollback *b);

/* Appends bytes as written to a terminal: '\n' ends a line, '\r' starts the
 * line over, ANSI escape sequences are dropped. Thread-safe. */
void scrollback_write(struct scrollback *b, const char *bytes, size_t length);

/* Redirects stdout and stderr into the scrollback until scrollback_release.
 * Returns 0, or -1 with err set (nothing redirected). */
int scrollback_capture(struct scrollback *b, struct caem_error *err);

/* Restores stdout and stderr and stops the reader after it took what was
 * written. */
void scrollback_release(struct scrollback *b);

/* Draws the lines that end `scroll` lines above the newest (0: the newest
 * at the bottom) into r, cutting long lines. Returns the largest useful
 * scroll value for r's height. */
int scrollback_draw(struct scrollback *b, struct canvas *c, struct rect r, int scroll);

#endif
