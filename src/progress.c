#include "progress.h"

#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <unistd.h>

#define TERMINAL_INTERVAL 0.2 /* seconds between redraws of the terminal line */
#define LINE_INTERVAL 1.0     /* seconds between lines elsewhere */
#define BAR_MIN 10
#define BAR_MAX 30

static int terminal_width(FILE *out)
{
    const char *columns = getenv("COLUMNS");
    if (columns != NULL) {
        int n = atoi(columns);
        if (n > 0)
            return n;
    }
    struct winsize ws;
    if (ioctl(fileno(out), TIOCGWINSZ, &ws) == 0 && ws.ws_col > 0)
        return ws.ws_col;
    return 80;
}

void progress_init(struct progress *p, FILE *out)
{
    memset(p, 0, sizeof *p);
    p->out = out;
    p->terminal = isatty(fileno(out));
    p->width = p->terminal ? terminal_width(out) : 80;
    p->last_output = -1.0;
}

void progress_format_duration(double seconds, char *out, size_t size)
{
    if (!isfinite(seconds) || seconds < 0 || seconds > 1e9) {
        snprintf(out, size, "-");
        return;
    }
    long s = (long)(seconds + 0.5);
    if (s >= 3600)
        snprintf(out, size, "%ldh%02ldm", s / 3600, s / 60 % 60);
    else
        snprintf(out, size, "%ldm%02lds", s / 60, s % 60);
}

/* Appends to out[*length], keeping the text truncated to size - 1. */
static void append(char *out, size_t size, size_t *length, const char *fmt, ...)
    CAEM_PRINTF(4, 5);

static void append(char *out, size_t size, size_t *length, const char *fmt, ...)
{
    if (*length + 1 >= size)
        return;
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(out + *length, size - *length, fmt, ap);
    va_end(ap);
    if (n > 0)
        *length += (size_t)n < size - *length ? (size_t)n : size - *length - 1;
}

static int job_ended(enum job_state state)
{
    return state == JOB_STOPPED || state == JOB_FINISHED || state == JOB_FAILED;
}

size_t progress_format(const struct job_status *s, char *out, size_t size)
{
    const struct job_report *r = &s->report;
    int train = strcmp(s->kind, "train") == 0;
    int ended = job_ended(s->state);
    size_t length = 0;
    if (size == 0)
        return 0;
    out[0] = '\0';

    if (ended)
        append(out, size, &length, "%s %s: ", s->kind, job_state_name(s->state));
    if (train)
        append(out, size, &length, "step %ld/%ld", r->step, r->steps);
    else if (ended)
        append(out, size, &length, "%ld/%ld", r->step, r->steps);
    else
        append(out, size, &length, "%s %ld/%ld", s->kind, r->step, r->steps);

    if (isfinite(r->loss))
        append(out, size, &length, "  loss %.4f", r->loss);
    if (s->state == JOB_FAILED) {
        append(out, size, &length, ": %s", s->message);
        return length;
    }
    if (isfinite(r->tokens_per_second) && r->tokens_per_second > 0)
        append(out, size, &length, "  %.0f tokens/s", r->tokens_per_second);
    char duration[32];
    if (ended) {
        progress_format_duration(s->elapsed, duration, sizeof duration);
        append(out, size, &length, "  in %s", duration);
    } else {
        progress_format_duration(r->step > 0 ? r->eta : NAN, duration, sizeof duration);
        append(out, size, &length, "  ETA %s", duration);
        if (s->state == JOB_PAUSED)
            append(out, size, &length, "  (paused)");
    }
    return length;
}

/* Redraws the terminal line: a bar of the fraction done, then the text. */
static void draw_terminal_line(struct progress *p, const struct job_status *s,
                               const char *text, size_t length)
{
    size_t room = p->width > 1 ? (size_t)p->width - 1 : 1; /* the last column wraps */
    char line[1024];
    size_t used = 0;

    long bar = (long)room - (long)length - 3;
    if (bar > BAR_MAX)
        bar = BAR_MAX;
    if (bar >= BAR_MIN) {
        double fraction = s->report.steps > 0 ? (double)s->report.step / s->report.steps : 0;
        if (fraction > 1)
            fraction = 1;
        long filled = lround(fraction * (double)bar);
        line[used++] = '[';
        for (long i = 0; i < bar; i++)
            line[used++] = i < filled ? '#' : '.';
        line[used++] = ']';
        line[used++] = ' ';
    }
    size_t copy = length;
    if (copy > room - used)
        copy = room - used;
    if (copy > sizeof line - used)
        copy = sizeof line - used;
    memcpy(line + used, text, copy);
    used += copy;

    /* blank what a longer previous line left */
    size_t drawn = used;
    while (used < p->drawn && used < room && used < sizeof line)
        line[used++] = ' ';
    fputc('\r', p->out);
    fwrite(line, 1, used, p->out);
    p->drawn = drawn;
    p->line_open = 1;
}

void progress_update(struct progress *p, const struct job_status *s, double now)
{
    int ended = job_ended(s->state);
    if (ended && p->end_reported)
        return;
    if (!ended) {
        p->end_reported = 0;
        double interval = p->terminal ? TERMINAL_INTERVAL : LINE_INTERVAL;
        if (p->last_output >= 0 && now - p->last_output < interval)
            return;
    }

    char text[512];
    size_t length = progress_format(s, text, sizeof text);
    if (p->terminal) {
        draw_terminal_line(p, s, text, length);
        if (ended)
            progress_finish(p);
    } else {
        fprintf(p->out, "%s\n", text);
    }
    fflush(p->out);
    p->last_output = now;
    if (ended)
        p->end_reported = 1;
}

void progress_finish(struct progress *p)
{
    if (!p->line_open)
        return;
    fputc('\n', p->out);
    fflush(p->out);
    p->line_open = 0;
    p->drawn = 0;
}
