#include "scrollback.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

void scrollback_init(struct scrollback *b)
{
    memset(b, 0, sizeof *b);
    pthread_mutex_init(&b->lock, NULL);
    b->pipe_read = -1;
    b->saved_stdout = -1;
    b->saved_stderr = -1;
}

void scrollback_free(struct scrollback *b)
{
    for (int i = 0; i < b->count; i++)
        free(b->lines[(b->first + i) % SCROLLBACK_LINES]);
    pthread_mutex_destroy(&b->lock);
    b->count = 0;
}

/* Ends the partial line; called with the lock held. */
static void end_line(struct scrollback *b)
{
    char *line = malloc(b->partial_length + 1);
    if (line != NULL) {
        memcpy(line, b->partial, b->partial_length);
        line[b->partial_length] = '\0';
        if (b->count == SCROLLBACK_LINES) {
            free(b->lines[b->first]);
            b->lines[b->first] = line;
            b->first = (b->first + 1) % SCROLLBACK_LINES;
        } else {
            b->lines[(b->first + b->count) % SCROLLBACK_LINES] = line;
            b->count++;
        }
    }
    b->partial_length = 0;
}

void scrollback_write(struct scrollback *b, const char *bytes, size_t length)
{
    pthread_mutex_lock(&b->lock);
    for (size_t i = 0; i < length; i++) {
        unsigned char ch = (unsigned char)bytes[i];
        if (ch == '\n') {
            end_line(b);
        } else if (ch == '\r') {
            b->partial_length = 0;
        } else if (ch == 0x1b) {
            /* an escape sequence: ESC [ parameters final byte, or ESC and one byte */
            if (i + 1 < length && bytes[i + 1] == '[') {
                i += 2;
                while (i < length && !((unsigned char)bytes[i] >= 0x40 &&
                                       (unsigned char)bytes[i] <= 0x7e))
                    i++;
            } else {
                i++;
            }
        } else if (ch == '\t') {
            do {
                if (b->partial_length < SCROLLBACK_LINE_MAX)
                    b->partial[b->partial_length++] = ' ';
            } while (b->partial_length % 8 != 0 && b->partial_length < SCROLLBACK_LINE_MAX);
        } else if (ch >= 0x20 && ch != 0x7f) {
            if (b->partial_length < SCROLLBACK_LINE_MAX)
                b->partial[b->partial_length++] = (char)ch;
        }
    }
    b->version++;
    pthread_mutex_unlock(&b->lock);
}

static void *reader_main(void *arg)
{
    struct scrollback *b = arg;
    char buffer[4096];
    for (;;) {
        ssize_t n = read(b->pipe_read, buffer, sizeof buffer);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            break;
        scrollback_write(b, buffer, (size_t)n);
    }
    return NULL;
}

int scrollback_capture(struct scrollback *b, struct caem_error *err)
{
    int fds[2];
    if (pipe(fds) != 0)
        return caem_fail(err, "cannot create a pipe for the REPL output: %s", strerror(errno));
    fflush(stdout);
    fflush(stderr);
    b->saved_stdout = dup(STDOUT_FILENO);
    b->saved_stderr = dup(STDERR_FILENO);
    if (b->saved_stdout < 0 || b->saved_stderr < 0 || dup2(fds[1], STDOUT_FILENO) < 0 ||
        dup2(fds[1], STDERR_FILENO) < 0) {
        int error = errno;
        if (b->saved_stdout >= 0)
            dup2(b->saved_stdout, STDOUT_FILENO);
        if (b->saved_stderr >= 0)
            dup2(b->saved_stderr, STDERR_FILENO);
        close(fds[0]);
        close(fds[1]);
        return caem_fail(err, "cannot redirect the REPL output: %s", strerror(error));
    }
    close(fds[1]);
    fcntl(b->saved_stdout, F_SETFD, FD_CLOEXEC);
    fcntl(b->saved_stderr, F_SETFD, FD_CLOEXEC);
    b->pipe_read = fds[0];
    if (pthread_create(&b->reader, NULL, reader_main, b) != 0) {
        dup2(b->saved_stdout, STDOUT_FILENO);
        dup2(b->saved_stderr, STDERR_FILENO);
        close(fds[0]);
        return caem_fail(err, "cannot start the thread that reads the REPL output");
    }
    setvbuf(stderr, NULL, _IONBF, 0);
    b->capturing = 1;
    return 0;
}

void scrollback_release(struct scrollback *b)
{
    if (!b->capturing)
        return;
    fflush(stdout);
    fflush(stderr);
    /* the reader sees the end of the pipe once no descriptor writes to it */
    dup2(b->saved_stdout, STDOUT_FILENO);
    dup2(b->saved_stderr, STDERR_FILENO);
    close(b->saved_stdout);
    close(b->saved_stderr);
    pthread_join(b->reader, NULL);
    close(b->pipe_read);
    b->capturing = 0;
}

int scrollback_draw(struct scrollback *b, struct canvas *c, struct rect r, int scroll)
{
    pthread_mutex_lock(&b->lock);
    int total = b->count + (b->partial_length > 0 ? 1 : 0);
    int max_scroll = total > r.h ? total - r.h : 0;
    if (scroll > max_scroll)
        scroll = max_scroll;
    int last = total - 1 - scroll; /* index of the line at the bottom */
    for (int row = r.h - 1, k = last; row >= 0 && k >= 0; row--, k--) {
        char cut[SCROLLBACK_LINE_MAX + 1];
        const char *text;
        if (k == b->count) {
            memcpy(cut, b->partial, b->partial_length);
            cut[b->partial_length] = '\0';
            text = cut;
        } else {
            text = b->lines[(b->first + k) % SCROLLBACK_LINES];
        }
        canvas_text(c, r.x, r.y + row, r.w, STYLE_PLAIN, text);
    }
    pthread_mutex_unlock(&b->lock);
    return max_scroll;
}
