/* The screen's own state, shared by screen.c (terminal, keys, drawing) and
 * screen_lua.c (what it reads from the Lua state, and caem.screen). */
#ifndef CAEM_UI_SCREEN_INTERNAL_H
#define CAEM_UI_SCREEN_INTERNAL_H

#include <stdio.h>
#include <wchar.h>

#include <lua.h>

#include "canvas.h"
#include "checkpoint.h"
#include "lua_runner.h"
#include "panels.h"
#include "scrollback.h"

struct pending_key {
    wint_t key;
    int is_key_code; /* ncurses' KEY_ code, not a character */
};

struct screen {
    struct lua_runner *runner;
    lua_State *L;
    struct repl_session *session;
    struct screen_state state;
    struct canvas canvas;
    struct scrollback output;
    int scroll, max_scroll;   /* lines the output is scrolled up */
    long drawn_version;       /* output.version when last drawn */
    double last_refresh;
    double notice_time;       /* when the status line's notice was set */

    /* the terminal */
    void *term;               /* ncurses' SCREEN */
    FILE *tty_in, *tty_out;
    FILE *devnull;            /* readline's output stream */
    FILE *quiet_in;           /* readline's input stream: an empty pipe */
    int quiet_write;          /* its write end, kept open */
    int colors;

    /* readline */
    char input[256];          /* bytes for readline, a ring */
    int input_head, input_tail;
    int input_dirty;
    int prompt_installed;
    char *line;               /* the completed line (NULL: end of input) */
    int line_ready;
    int asking;               /* the quit question is shown */
    int quit;
    int running_chunk;
    struct pending_key pending[64];
    int pending_count;

    /* what the state follows */
    int usage_pinned;         /* caem.screen.show chose the usage: do not follow the job */
    long last_sample_step;    /* the job's step at the last loss sample */
    double last_validation;   /* the validation loss last plotted */
    int64_t last_sample_tokens; /* usage tokens at the last entropy sample */
};

/* Reads the watched job's status and usage, samples the loss and entropy
 * curves, and copies the latest merge into s->state. */
void screen_refresh_state(struct screen *s);

/* Sets caem.screen (export, show, watch) for the screen's state, and
 * removes it. */
void screen_lua_open(struct screen *s);
void screen_lua_close(struct screen *s);

#endif
