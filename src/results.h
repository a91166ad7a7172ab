/* Results files: every reported figure as one row, in two files side by side.
 *
 *   PREFIX.csv    the header line "model,task,split,metric,value,step,time",
 *                 then one line per row, fields quoted as RFC 4180 requires
 *                 (a field with a comma, a double quote, CR or LF is put in
 *                 double quotes, and its double quotes are doubled). Lines
 *                 end with LF.
 *   PREFIX.jsonl  one JSON object per line with the same seven members.
 *
 * Numbers are written with the fewest digits that read back to the same
 * double. `time` is Unix time: seconds since 1970-01-01 00:00:00 UTC, with a
 * fraction. `step` is the optimizer step of the model that was scored.
 *
 * Each line is written with one write(2) on a descriptor opened with
 * O_APPEND, so lines of processes appending at once do not interleave. The
 * CSV file is created with its header under a temporary name and linked into
 * place, so it never exists without its header. A failure after the first
 * file's write of a row can leave that row in one file only.
 *
 * NOTE: NFS does not make O_APPEND writes atomic, so processes on different
 * hosts that append to one results file there can mix their lines. */
#ifndef CAEM_RESULTS_H
#define CAEM_RESULTS_H

#include "error.h"

struct result_row {
    const char *model, *task, *split, *metric; /* UTF-8 */
    double value;                              /* finite */
    long step;
    double time;                               /* Unix seconds, finite */
};

/* Appends rows to PREFIX.csv and PREFIX.jsonl, creating each file when it is
 * missing. Every row is checked before anything is written: a NULL or
 * non-UTF-8 name or a value or time that is not finite fails the call with
 * the row's index. An existing CSV file whose first line is not the header
 * (an empty one included) is an error naming its path, and then neither
 * file changes. */
int results_append(const char *prefix, const struct result_row *rows, int count,
                   struct caem_error *err);

/* Reads every row of PREFIX.jsonl in file order into a malloc'd array, which
 * results_free releases with its strings. Blank lines are skipped. A line
 * that is not a JSON object with the seven members of the right types fails
 * the read with the path and the 1-based line number. */
int results_read(const char *prefix, struct result_row **rows, long *count,
                 struct caem_error *err);

void results_free(struct result_row *rows, long count);

/* The current Unix time in seconds, for result_row.time. */
double results_time_now(void);

#endif
