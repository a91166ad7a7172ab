#include "repl.h"

#include <errno.h>
#include <lauxlib.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/select.h>
#include <time.h>
#include <unistd.h>

#include <readline/history.h>
#include <readline/readline.h>

#include "interrupt.h"
#include "lua_caem.h"

#define PROMPT "caem> "
#define PROMPT_MORE "  >> "
#define QUIT_QUESTION "jobs are still running; quit anyway? [y/N] "
#define HISTORY_FILE ".caem_history"
#define HISTORY_MAX 1000
#define POLL_INTERVAL 0.1 /* seconds between job polls while waiting for input */

struct repl {
    struct lua_runner *runner;
    lua_State *L;
    int terminal;

    char *chunk;           /* the lines of an incomplete chunk, or NULL */
    int failed;            /* a chunk failed (the exit status without a terminal) */
    int quit;

    /* terminal only */
    int prompt_shown;      /* readline's handler is installed and drew the prompt */
    int output_cleared;    /* print cleared the prompt line while it was shown */
    int asking;            /* the quit question is on the screen */
    char *line;            /* the line readline completed (NULL: end of input) */
    int line_ready;
    char history_path[4096];
    int history_enabled;
    double last_poll;
};

/* readline's callbacks take no user pointer */
static struct repl *active;

static double monotonic_seconds(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

int repl_chunk_incomplete(lua_State *L, int status)
{
    static const char marker[] = "<eof>";
    if (status != LUA_ERRSYNTAX)
        return 0;
    size_t length;
    const char *message = lua_tolstring(L, -1, &length);
    size_t n = sizeof marker - 1;
    return message != NULL && length >= n && strcmp(message + length - n, marker) == 0;
}

/* ---- running chunks ---- */

/* Prints the values on the stack from index first on, as print does: their
 * texts separated by tabs. */
static int print_values(lua_State *L)
{
    int count = lua_gettop(L);
    luaL_Buffer b;
    for (int i = 1; i <= count; i++)
        repl_push_value_text(L, i);
    luaL_buffinit(L, &b);
    for (int i = 1; i <= count; i++) {
        if (i > 1)
            luaL_addchar(&b, '\t');
        lua_pushvalue(L, count + i);
        luaL_addvalue(&b);
    }
    luaL_addchar(&b, '\n');
    luaL_pushresult(&b);
    size_t length;
    const char *text = lua_tolstring(L, -1, &length);
    fwrite(text, 1, length, stdout);
    fflush(stdout);
    return 0;
}

static void report_error(struct repl *s)
{
    const char *message = lua_tostring(s->L, -1);
    fprintf(stderr, "%s\n", message != NULL ? message : "(error without a message)");
    fflush(stderr);
    lua_pop(s->L, 1);
    s->failed = 1;
}

/* Runs the chunk on top of the stack and prints its values or its error. */
static void run_loaded_chunk(struct repl *s)
{
    lua_State *L = s->L;
    int base = lua_gettop(L) - 1;
    int status = lua_runner_call(s->runner, 0, LUA_MULTRET);
    if (status != LUA_OK) {
        report_error(s);
    } else if (lua_gettop(L) > base) {
        int count = lua_gettop(L) - base;
        lua_pushcfunction(L, print_values);
        lua_insert(L, base + 1);
        if (lua_pcall(L, count, 0, 0) != LUA_OK) {
            const char *message = lua_tostring(L, -1);
            fprintf(stderr, "error printing the values: %s\n",
                    message != NULL ? message : "(no message)");
            lua_pop(L, 1);
        }
    }
    lua_settop(L, base);
    /* a Ctrl-C that came as the chunk ended must not act on the prompt */
    interrupt_take();
}

static char *join(const char *a, const char *between, const char *b)
{
    size_t n = strlen(a) + strlen(between) + strlen(b) + 1;
    char *out = malloc(n);
    if (out != NULL)
        snprintf(out, n, "%s%s%s", a, between, b);
    return out;
}

static void drop_chunk(struct repl *s)
{
    free(s->chunk);
    s->chunk = NULL;
}

/* Adds a line of input: a complete chunk runs at once, an incomplete one
 * waits for the next line in s->chunk. "=expr" and a first line that
 * compiles after "return " print their values. */
static void take_line(struct repl *s, const char *line)
{
    lua_State *L = s->L;
    if (s->chunk == NULL) {
        int is_expression = line[0] == '=';
        const char *text = is_expression ? line + 1 : line;
        char *with_return = join("return ", "", text);
        if (with_return == NULL) {
            fprintf(stderr, "out of memory reading the line\n");
            return;
        }
        if (luaL_loadbuffer(L, with_return, strlen(with_return), "=stdin") == LUA_OK) {
            free(with_return);
            run_loaded_chunk(s);
            return;
        }
        lua_pop(L, 1);
        if (is_expression) {
            s->chunk = with_return;
        } else {
            free(with_return);
            s->chunk = join(line, "", "");
        }
    } else {
        char *longer = join(s->chunk, "\n", line);
        free(s->chunk);
        s->chunk = longer;
    }
    if (s->chunk == NULL) {
        fprintf(stderr, "out of memory reading the line\n");
        return;
    }

    int status = luaL_loadbuffer(L, s->chunk, strlen(s->chunk), "=stdin");
    if (repl_chunk_incomplete(L, status)) {
        lua_pop(L, 1);
        return;
    }
    drop_chunk(s);
    if (status == LUA_OK)
        run_loaded_chunk(s);
    else
        report_error(s);
}

/* Runs the job callbacks that are due, at most every POLL_INTERVAL. */
static void poll_jobs(struct repl *s)
{
    double now = monotonic_seconds();
    if (now - s->last_poll < POLL_INTERVAL)
        return;
    s->last_poll = now;
    interrupt_set_lua(s->L, 1);
    lua_caem_poll(s->L);
    interrupt_set_lua(NULL, 0);
    progress_finish(&s->runner->progress);
    if (s->output_cleared) {
        rl_on_new_line();
        rl_redisplay();
        s->output_cleared = 0;
    }
}

/* ---- history ---- */

static void history_warn(struct repl *s, const char *action, int error)
{
    fprintf(stderr, "caem: cannot %s the history file %s: %s; history is not saved\n", action,
            s->history_path, strerror(error));
    s->history_enabled = 0;
}

static void history_open(struct repl *s)
{
    const char *home = getenv("HOME");
    using_history();
    stifle_history(HISTORY_MAX);
    if (home == NULL || home[0] == '\0') {
        fprintf(stderr, "caem: HOME is not set; history is not saved\n");
        return;
    }
    snprintf(s->history_path, sizeof s->history_path, "%s/%s", home, HISTORY_FILE);
    s->history_enabled = 1;
    int error = read_history(s->history_path);
    if (error == ENOENT)
        error = write_history(s->history_path); /* append_history needs the file */
    if (error != 0)
        history_warn(s, "open", error);
}

static void history_add(struct repl *s, const char *line)
{
    if (line[strspn(line, " \t")] == '\0')
        return;
    HIST_ENTRY *last = history_get(history_base + history_length - 1);
    if (last != NULL && strcmp(last->line, line) == 0)
        return;
    add_history(line);
    if (!s->history_enabled)
        return;
    int error = append_history(1, s->history_path);
    if (error != 0)
        history_warn(s, "write", error);
}

static void history_close(struct repl *s)
{
    if (s->history_enabled)
        history_truncate_file(s->history_path, HISTORY_MAX);
}

/* ---- the terminal ---- */

/* print, while the prompt is shown (a job callback printing), clears the
 * prompt line first; poll_jobs draws it again below the output. */
static int print_over_prompt(lua_State *L)
{
    if (active != NULL && active->prompt_shown && !active->output_cleared) {
        rl_clear_visible_line();
        active->output_cleared = 1;
    }
    lua_pushvalue(L, lua_upvalueindex(1));
    lua_insert(L, 1);
    lua_call(L, lua_gettop(L) - 1, 0);
    return 0;
}

static void wrap_print(lua_State *L)
{
    lua_getglobal(L, "print");
    lua_pushcclosure(L, print_over_prompt, 1);
    lua_setglobal(L, "print");
}

static void on_line(char *line)
{
    rl_callback_handler_remove();
    active->prompt_shown = 0;
    active->line = line;
    active->line_ready = 1;
}

static void show_prompt(struct repl *s)
{
    const char *prompt = PROMPT;
    if (s->asking)
        prompt = QUIT_QUESTION;
    else if (s->chunk != NULL)
        prompt = PROMPT_MORE;
    rl_callback_handler_install(prompt, on_line);
    s->prompt_shown = 1;
}

static void hide_prompt(struct repl *s)
{
    if (!s->prompt_shown)
        return;
    rl_callback_sigcleanup();
    rl_callback_handler_remove();
    s->prompt_shown = 0;
}

/* Quits, or shows the quit question first when jobs are still running. */
static void end_of_input(struct repl *s)
{
    fputc('\n', stdout);
    drop_chunk(s);
    if (lua_caem_running_jobs(s->L) > 0)
        s->asking = 1;
    else
        s->quit = 1;
}

static void take_answer(struct repl *s, const char *line)
{
    s->asking = 0;
    if (line == NULL || line[0] == 'y' || line[0] == 'Y') {
        if (line == NULL)
            fputc('\n', stdout);
        lua_caem_stop_jobs(s->L);
        s->quit = 1;
    }
}

/* Ctrl-C at the prompt: clears the line (and a pending incomplete chunk or
 * the quit question); on an empty line, stops the background jobs. */
static void interrupt_at_prompt(struct repl *s)
{
    int had_text = (s->prompt_shown && rl_end > 0) || s->chunk != NULL || s->asking;
    hide_prompt(s);
    fputc('\n', stdout);
    drop_chunk(s);
    s->asking = 0;
    if (!had_text && lua_caem_running_jobs(s->L) > 0) {
        int stopped = lua_caem_stop_jobs(s->L);
        printf("stopped %d job%s\n", stopped, stopped == 1 ? "" : "s");
    }
    fflush(stdout);
}

static char *next_completion(const char *text, int state)
{
    static int index, count;
    (void)text;
    lua_State *L = active->L;
    if (state == 0)
        index = 0;
    /* the table of repl_completions is on top of the stack, see complete */
    count = (int)lua_rawlen(L, -1);
    if (index >= count)
        return NULL;
    lua_rawgeti(L, -1, ++index);
    char *match = strdup(lua_tostring(L, -1));
    lua_pop(L, 1);
    return match;
}

static char **complete(const char *text, int start, int end)
{
    (void)start;
    (void)end;
    rl_attempted_completion_over = 1; /* no file names */
    rl_completion_append_character = '\0'; /* readline resets it to ' ' every time */
    lua_State *L = active->L;
    repl_completions(L, text);
    char **matches = rl_completion_matches(text, next_completion);
    lua_pop(L, 1);
    return matches;
}

/* Sets readline up for the REPL's lines: its name, no signal handlers of
 * its own, and completion of Lua names. */
static void completion_setup(void)
{
    rl_readline_name = "caem";
    rl_catch_signals = 0; /* interrupt.c handles SIGINT */
    /* "model:tr" and "a.b.c" are one word to complete */
    rl_basic_word_break_characters = " \t\n\"\\'`@$><=;|&{(,+-*/%^~#[]";
    rl_attempted_completion_function = complete;
}

static void terminal_setup(struct repl *s)
{
    completion_setup();
    history_open(s);
    wrap_print(s->L);
}

static void handle_line(struct repl *s, char *line)
{
    if (s->asking)
        take_answer(s, line);
    else if (line == NULL)
        end_of_input(s);
    else {
        history_add(s, line);
        take_line(s, line);
    }
    free(line);
}

static void run_terminal(struct repl *s)
{
    terminal_setup(s);
    while (!s->quit) {
        if (!s->prompt_shown)
            show_prompt(s);
        fd_set readable;
        FD_ZERO(&readable);
        FD_SET(STDIN_FILENO, &readable);
        struct timeval timeout = { 0, (long)(POLL_INTERVAL * 1e6) };
        int ready = select(STDIN_FILENO + 1, &readable, NULL, NULL, &timeout);
        if (interrupt_take()) {
            interrupt_at_prompt(s);
            continue;
        }
        if (ready < 0 && errno != EINTR) {
            fprintf(stderr, "caem: reading the terminal failed: %s\n", strerror(errno));
            break;
        }
        if (ready > 0)
            rl_callback_read_char();
        if (s->line_ready) {
            s->line_ready = 0;
            handle_line(s, s->line);
            continue;
        }
        poll_jobs(s);
    }
    hide_prompt(s);
    history_close(s);
}

/* ---- without a terminal ---- */

/* Takes the complete lines out of buffer[0..*length) and runs them. */
static void take_lines(struct repl *s, char *buffer, size_t *length)
{
    size_t start = 0;
    for (size_t i = 0; i < *length; i++) {
        if (buffer[i] != '\n')
            continue;
        buffer[i] = '\0';
        if (i > start && buffer[i - 1] == '\r')
            buffer[i - 1] = '\0';
        take_line(s, buffer + start);
        start = i + 1;
    }
    memmove(buffer, buffer + start, *length - start);
    *length -= start;
}

static void run_stream(struct repl *s)
{
    size_t size = 1 << 16, length = 0;
    char *buffer = malloc(size);
    if (buffer == NULL) {
        fprintf(stderr, "caem: out of memory for the input buffer\n");
        s->failed = 1;
        return;
    }
    for (;;) {
        struct pollfd input = { STDIN_FILENO, POLLIN, 0 };
        int ready = poll(&input, 1, (int)(POLL_INTERVAL * 1000));
        if (interrupt_take()) {
            int had_text = s->chunk != NULL;
            drop_chunk(s);
            if (!had_text && lua_caem_running_jobs(s->L) > 0)
                fprintf(stderr, "stopped %d jobs\n", lua_caem_stop_jobs(s->L));
            continue;
        }
        if (ready > 0) {
            if (length + 1 >= size) {
                char *bigger = realloc(buffer, size * 2);
                if (bigger == NULL) {
                    fprintf(stderr, "caem: a line of input is too long for memory\n");
                    s->failed = 1;
                    break;
                }
                buffer = bigger;
                size *= 2;
            }
            ssize_t n = read(STDIN_FILENO, buffer + length, size - length - 1);
            if (n < 0 && errno == EINTR)
                continue;
            if (n <= 0) {
                if (n < 0)
                    fprintf(stderr, "caem: reading standard input failed: %s\n",
                            strerror(errno));
                break;
            }
            length += (size_t)n;
            take_lines(s, buffer, &length);
        }
        poll_jobs(s);
    }

    /* a last line without a newline, then a chunk the input left unfinished */
    if (length > 0) {
        buffer[length] = '\0';
        take_line(s, buffer);
    }
    free(buffer);
    if (s->chunk != NULL) {
        luaL_loadbuffer(s->L, s->chunk, strlen(s->chunk), "=stdin");
        drop_chunk(s);
        report_error(s);
    }
    int stopped = lua_caem_stop_jobs(s->L);
    if (stopped > 0)
        fprintf(stderr, "caem: stopped %d job%s still running at the end of input\n", stopped,
                stopped == 1 ? "" : "s");
}

struct repl_session {
    struct repl repl;
};

struct repl_session *repl_session_open(struct lua_runner *r)
{
    struct repl_session *session = calloc(1, sizeof *session);
    if (session == NULL)
        return NULL;
    struct repl *s = &session->repl;
    s->runner = r;
    s->L = r->L;
    s->terminal = 1;
    s->last_poll = monotonic_seconds();
    active = s;
    completion_setup();
    history_open(s);
    return session;
}

void repl_session_line(struct repl_session *session, const char *line)
{
    history_add(&session->repl, line);
    take_line(&session->repl, line);
}

int repl_session_continues(const struct repl_session *session)
{
    return session->repl.chunk != NULL;
}

void repl_session_drop(struct repl_session *session)
{
    drop_chunk(&session->repl);
}

void repl_session_close(struct repl_session *session)
{
    if (session == NULL)
        return;
    history_close(&session->repl);
    drop_chunk(&session->repl);
    if (active == &session->repl)
        active = NULL;
    free(session);
}

int repl_run(struct lua_runner *r)
{
    struct repl s;
    memset(&s, 0, sizeof s);
    s.runner = r;
    s.L = r->L;
    s.terminal = isatty(STDIN_FILENO);
    s.last_poll = monotonic_seconds();
    active = &s;
    if (s.terminal)
        run_terminal(&s);
    else
        run_stream(&s);
    drop_chunk(&s);
    active = NULL;
    return !s.terminal && s.failed ? 1 : 0;
}
