#include "screen.h"

#include <errno.h>
#include <fcntl.h>
#include <langinfo.h>
#include <locale.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <ncurses.h>
#include <readline/history.h>
#include <readline/readline.h>

#include "interrupt.h"
#include "layout.h"
#include "lua_caem.h"
#include "panels.h"
#include "repl.h"
#include "screen_internal.h"
#include "scrollback.h"

#define PROMPT "caem> "
#define PROMPT_MORE "  >> "
#define QUIT_QUESTION "jobs are still running; quit anyway? [y/N] "
#define EXPORT_PATH "caem-screen.svg"
#define REFRESH_INTERVAL 0.2 /* seconds between redraws from the job's statistics */
#define KEY_WAIT_MS 50       /* how long the loop waits for a key */
#define INPUT_QUEUE 256      /* bytes of typed input waiting for readline */
#define PENDING_KEYS 64      /* keys typed while a chunk runs, for after it */
#define NOTICE_SECONDS 5.0   /* how long a notice stays on the status line */

/* readline's hooks take no user pointer */
static struct screen *active;

static double monotonic_seconds(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* ---- readline on the screen's input row ---- */

static int input_getc(FILE *stream)
{
    (void)stream;
    struct screen *s = active;
    if (s->input_head == s->input_tail)
        return EOF;
    int ch = (unsigned char)s->input[s->input_head];
    s->input_head = (s->input_head + 1) % INPUT_QUEUE;
    return ch;
}

static void input_redisplay(void)
{
    active->input_dirty = 1;
}

static void no_terminal_prep(int meta)
{
    (void)meta;
}

static void no_terminal_deprep(void)
{
}

/* Lists completions in the scrollback as readline would below the line:
 * sorted down columns, in rows no wider than the output panel. They go
 * through stdout, after what a chunk wrote there. */
static void show_matches(char **matches, int count, int longest)
{
    const struct screen *s = active;
    struct screen_layout layout;
    int width = screen_layout(s->canvas.cols, s->canvas.rows, &layout) == 0 ? layout.output.w
                                                                             : s->canvas.cols;
    int column_width = longest + 2;
    int per_row = width / column_width > 0 ? width / column_width : 1;
    int rows = (count + per_row - 1) / per_row;
    for (int row = 0; row < rows; row++) {
        for (int column = 0; column < per_row; column++) {
            int i = 1 + column * rows + row;
            if (i > count)
                break;
            int last = column == per_row - 1 || i + rows > count;
            printf("%-*s", last ? 0 : column_width, matches[i]);
        }
        putchar('\n');
    }
    fflush(stdout);
}

static void on_line(char *line)
{
    rl_callback_handler_remove();
    active->prompt_installed = 0;
    active->line = line;
    active->line_ready = 1;
}

static const char *current_prompt(const struct screen *s)
{
    if (s->asking)
        return QUIT_QUESTION;
    return repl_session_continues(s->session) ? PROMPT_MORE : PROMPT;
}

static void install_prompt(struct screen *s)
{
    if (s->prompt_installed)
        return;
    rl_callback_handler_install(current_prompt(s), on_line);
    s->prompt_installed = 1;
    s->input_dirty = 1;
}

static void feed_bytes(struct screen *s, const char *bytes, size_t length)
{
    for (size_t i = 0; i < length; i++) {
        int next = (s->input_tail + 1) % INPUT_QUEUE;
        if (next == s->input_head)
            break;
        s->input[s->input_tail] = bytes[i];
        s->input_tail = next;
    }
    while (s->input_head != s->input_tail && !s->line_ready) {
        install_prompt(s);
        rl_callback_read_char();
    }
}

/* ---- drawing ---- */

static void colors_setup(struct screen *s)
{
    /* NO_COLOR counts when it is set and not empty */
    const char *no_color = getenv("NO_COLOR");
    s->colors = has_colors() && (no_color == NULL || no_color[0] == '\0');
    if (!s->colors)
        return;
    start_color();
    use_default_colors();
    static const short foreground[STYLE_COUNT] = {
        [STYLE_PLAIN] = -1,          [STYLE_TITLE] = COLOR_CYAN,  [STYLE_DIM] = -1,
        [STYLE_BAR] = COLOR_GREEN,   [STYLE_DROPPED] = COLOR_RED, [STYLE_GOOD] = COLOR_GREEN,
        [STYLE_ACCENT] = COLOR_YELLOW, [STYLE_WARN] = COLOR_RED,  [STYLE_HEAT_0] = -1,
        [STYLE_HEAT_1] = COLOR_BLUE, [STYLE_HEAT_2] = COLOR_CYAN, [STYLE_HEAT_3] = COLOR_YELLOW,
        [STYLE_HEAT_4] = COLOR_RED,
    };
    for (int i = 1; i < STYLE_COUNT; i++)
        init_pair((short)i, foreground[i], -1);
}

static attr_t style_attributes(const struct screen *s, int style, short *pair)
{
    *pair = s->colors ? (short)style : 0;
    if (style == STYLE_TITLE)
        return A_BOLD;
    if (style == STYLE_DIM)
        return A_DIM;
    if (style == STYLE_WARN)
        return A_BOLD;
    return A_NORMAL;
}

/* Draws the input row: the prompt and readline's line, scrolled so that the
 * cursor stays visible. Returns the cursor's column. */
static int draw_input(struct screen *s, struct rect r)
{
    const char *prompt = current_prompt(s);
    int prompt_width = canvas_text(&s->canvas, r.x, r.y, r.w, STYLE_TITLE, prompt);
    const char *text = rl_line_buffer != NULL ? rl_line_buffer : "";
    int point = rl_point;
    int room = r.w - prompt_width - 1;
    if (room < 1)
        return r.x + r.w - 1;
    /* the cursor's column counts characters, not bytes */
    int column = 0, start_byte = 0, cursor = 0;
    for (int i = 0; i < point && text[i] != '\0'; i++)
        if (((unsigned char)text[i] & 0xc0) != 0x80)
            cursor++;
    int skip = cursor >= room ? cursor - room + 1 : 0;
    for (int i = 0; text[i] != '\0' && column < skip; i++) {
        if (((unsigned char)text[i + 1] & 0xc0) != 0x80) {
            column++;
            start_byte = i + 1;
        }
    }
    canvas_text(&s->canvas, r.x + prompt_width, r.y, room + 1, STYLE_PLAIN, text + start_byte);
    return r.x + prompt_width + cursor - skip;
}

static void blit(struct screen *s, int cursor_x, int cursor_y)
{
    const struct canvas *c = &s->canvas;
    for (int y = 0; y < c->rows; y++) {
        for (int x = 0; x < c->cols; x++) {
            const struct canvas_cell *cell = &c->cells[y * c->cols + x];
            wchar_t text[2] = { cell->ch != 0 ? cell->ch : L' ', 0 };
            short pair;
            attr_t attributes = style_attributes(s, cell->style, &pair);
            cchar_t cc;
            setcchar(&cc, text, attributes, pair, NULL);
            mvadd_wch(y, x, &cc);
        }
    }
    move(cursor_y, cursor_x);
    refresh();
}

static void draw(struct screen *s)
{
    int rows, cols;
    getmaxyx(stdscr, rows, cols);
    if (cols != s->canvas.cols || rows != s->canvas.rows)
        canvas_resize(&s->canvas, cols, rows);
    canvas_clear(&s->canvas);
    struct screen_layout layout;
    if (screen_layout(cols, rows, &layout) != 0) {
        char message[128];
        snprintf(message, sizeof message, "terminal too small: %dx%d, the screen needs %dx%d",
                 cols, rows, SCREEN_MIN_COLS, SCREEN_MIN_ROWS);
        canvas_text(&s->canvas, 0, 0, cols, STYLE_WARN, message);
        canvas_text(&s->canvas, 0, rows > 1 ? 1 : 0, cols, STYLE_DIM,
                    "enlarge the window, or quit with Ctrl-D");
        int cursor = draw_input(s, (struct rect){ 0, rows - 1, cols, 1 });
        blit(s, cursor < cols ? cursor : cols - 1, rows - 1);
        return;
    }
    panels_draw(&s->canvas, &layout, &s->state);
    s->max_scroll = scrollback_draw(&s->output, &s->canvas, layout.output, s->scroll);
    if (s->scroll > s->max_scroll)
        s->scroll = s->max_scroll;
    if (s->scroll > 0)
        canvas_printf(&s->canvas, layout.output.x + layout.output.w - 24, layout.output.y, 24,
                      STYLE_DIM, "[scrolled %d lines up]", s->scroll);
    int cursor = draw_input(s, layout.input);
    blit(s, cursor, layout.input.y);
    s->drawn_version = s->output.version;
    s->input_dirty = 0;
}

/* Refreshes the state from the job and redraws when REFRESH_INTERVAL has
 * passed, or at once with `now`. */
static void update(struct screen *s, int now)
{
    double t = monotonic_seconds();
    if (!now && t - s->last_refresh < REFRESH_INTERVAL) {
        if (s->input_dirty || s->output.version != s->drawn_version)
            draw(s);
        return;
    }
    s->last_refresh = t;
    fflush(stdout); /* a line without its newline yet shows too */
    if (s->state.notice[0] != '\0' && t - s->notice_time > NOTICE_SECONDS)
        s->state.notice[0] = '\0';
    screen_refresh_state(s);
    draw(s);
}

/* ---- keys ---- */

static int stack_layers(const struct screen_state *st)
{
    return st->has_usage ? st->usage.layers[st->decoder] : 0;
}

static void notice(struct screen *s, const char *format, const char *value)
{
    snprintf(s->state.notice, sizeof s->state.notice, format, value);
    s->notice_time = monotonic_seconds();
}

static void toggle_view(struct screen_state *st, enum screen_view view)
{
    st->view = st->view == view ? VIEW_PANELS : view;
}

/* Handles the keys that act on the panels and the job. Returns 1 when the
 * key was one of them. */
static int panel_key(struct screen *s, int key)
{
    struct screen_state *st = &s->state;
    int layers = stack_layers(st);
    switch (key) {
    case KEY_F(1):
        st->help = !st->help;
        return 1;
    case KEY_F(2):
        if (st->layer > 0)
            st->layer--;
        return 1;
    case KEY_F(3):
        if (st->layer + 1 < layers)
            st->layer++;
        return 1;
    case KEY_F(4):
        st->decoder = !st->decoder;
        if (st->layer >= stack_layers(st))
            st->layer = 0;
        return 1;
    case KEY_F(5):
        st->soft = !st->soft;
        return 1;
    case KEY_F(6):
        toggle_view(st, VIEW_HEATMAP);
        return 1;
    case KEY_F(7):
        toggle_view(st, VIEW_MERGE);
        return 1;
    case KEY_F(8):
        if (st->has_job && st->job.state == JOB_PAUSED)
            lua_caem_control(s->L, LUA_CAEM_RESUME);
        else if (st->has_job && st->job.state == JOB_RUNNING)
            lua_caem_control(s->L, LUA_CAEM_PAUSE);
        return 1;
    case KEY_F(9):
        lua_caem_control(s->L, LUA_CAEM_STEP);
        return 1;
    case KEY_F(10):
        lua_caem_control(s->L, LUA_CAEM_STOP);
        return 1;
    case KEY_F(12): {
        struct caem_error err;
        if (screen_export_svg(st, EXPORT_PATH, &err) == 0)
            notice(s, "panels written to %s", EXPORT_PATH);
        else
            notice(s, "export failed: %.120s", err.message);
        return 1;
    }
    case KEY_PPAGE:
        s->scroll += s->canvas.rows / 3 > 0 ? s->canvas.rows / 3 : 1;
        return 1;
    case KEY_NPAGE:
        s->scroll -= s->canvas.rows / 3 > 0 ? s->canvas.rows / 3 : 1;
        if (s->scroll < 0)
            s->scroll = 0;
        return 1;
    case KEY_RESIZE:
        return 1;
    default:
        return 0;
    }
}

/* Passes an editing key to readline, or its character as UTF-8 bytes. */
static void line_key(struct screen *s, int is_key_code, wint_t key)
{
    install_prompt(s);
    if (is_key_code) {
        switch (key) {
        case KEY_LEFT: rl_backward_char(1, 0); break;
        case KEY_RIGHT: rl_forward_char(1, 0); break;
        case KEY_UP: rl_get_previous_history(1, 0); break;
        case KEY_DOWN: rl_get_next_history(1, 0); break;
        case KEY_HOME: rl_beg_of_line(1, 0); break;
        case KEY_END: rl_end_of_line(1, 0); break;
        case KEY_BACKSPACE: rl_rubout(1, 0); break;
        case KEY_DC: rl_delete(1, 0); break;
        case KEY_ENTER: feed_bytes(s, "\r", 1); break;
        default: break;
        }
        s->input_dirty = 1;
        return;
    }
    if (key == '?' && rl_end == 0 && !repl_session_continues(s->session) && !s->asking) {
        s->state.help = !s->state.help;
        return;
    }
    if (key == 27 && s->state.help) {
        s->state.help = 0;
        return;
    }
    char bytes[8];
    mbstate_t state;
    memset(&state, 0, sizeof state);
    size_t n = wcrtomb(bytes, (wchar_t)key, &state);
    if (n == (size_t)-1) {
        bytes[0] = '?';
        n = 1;
    }
    feed_bytes(s, bytes, n);
}

/* Reads the keys typed so far without waiting (wait_ms 0) or up to wait_ms.
 * While a chunk runs (`busy`), only panel keys act; the others wait in
 * pending_keys until the chunk ends. */
static void read_keys(struct screen *s, int wait_ms, int busy)
{
    timeout(wait_ms);
    for (;;) {
        wint_t key;
        int kind = get_wch(&key);
        if (kind == ERR)
            return;
        timeout(0);
        int is_key_code = kind == KEY_CODE_YES;
        if (is_key_code && panel_key(s, (int)key))
            continue;
        if (busy) {
            if (s->pending_count < PENDING_KEYS) {
                s->pending[s->pending_count].key = key;
                s->pending[s->pending_count].is_key_code = is_key_code;
                s->pending_count++;
            }
            continue;
        }
        line_key(s, is_key_code, key);
        if (s->line_ready)
            return;
    }
}

/* ---- lines and quitting ---- */

static void take_answer(struct screen *s, const char *line)
{
    s->asking = 0;
    if (line == NULL || line[0] == 'y' || line[0] == 'Y') {
        lua_caem_stop_jobs(s->L);
        s->quit = 1;
    }
}

static void run_line(struct screen *s, char *line)
{
    if (s->asking) {
        take_answer(s, line);
    } else if (line == NULL) {
        repl_session_drop(s->session);
        if (lua_caem_running_jobs(s->L) > 0)
            s->asking = 1;
        else
            s->quit = 1;
    } else {
        /* The echo goes through stdout like the output, so it comes after
         * what the last chunk wrote and the reader has not taken yet. */
        printf("%s%s\n", current_prompt(s), line);
        fflush(stdout);
        s->scroll = 0;
        s->running_chunk = 1;
        update(s, 1);
        repl_session_line(s->session, line);
        fflush(stdout);
        s->running_chunk = 0;
    }
    free(line);
}

/* Ctrl-C: stops the running jobs; without one, clears the line and a
 * pending chunk. Never quits. */
static void interrupt_key(struct screen *s)
{
    int stopped = lua_caem_stop_jobs(s->L);
    if (stopped > 0) {
        char text[64];
        snprintf(text, sizeof text, "%d", stopped);
        notice(s, "Ctrl-C stopped %s job(s)", text);
        return;
    }
    rl_callback_sigcleanup();
    rl_callback_handler_remove();
    s->prompt_installed = 0;
    repl_session_drop(s->session);
    s->asking = 0;
    s->state.notice[0] = '\0';
    /* a new prompt empties readline's line, which the input row shows */
    install_prompt(s);
}

/* The host's progress hook: runs while a chunk waits for a job. */
static void screen_progress(const struct job_status *status, void *data)
{
    (void)status;
    struct screen *s = data;
    read_keys(s, 0, 1);
    update(s, 0);
}

static int screen_interrupted(void *data)
{
    (void)data;
    return interrupt_take();
}

static void replay_pending(struct screen *s)
{
    int count = s->pending_count;
    s->pending_count = 0;
    for (int i = 0; i < count && !s->line_ready; i++)
        line_key(s, s->pending[i].is_key_code, s->pending[i].key);
}

/* ---- start and end ---- */

static int terminal_open(struct screen *s, char *why, size_t why_size)
{
    if (!isatty(STDIN_FILENO) || !isatty(STDOUT_FILENO)) {
        snprintf(why, why_size, "standard input or output is not a terminal");
        return -1;
    }
    const char *term = getenv("TERM");
    if (term == NULL || term[0] == '\0') {
        snprintf(why, why_size, "TERM is not set");
        return -1;
    }
    int tty_out = dup(STDOUT_FILENO);
    int tty_in = dup(STDIN_FILENO);
    s->tty_out = tty_out >= 0 ? fdopen(tty_out, "w") : NULL;
    s->tty_in = tty_in >= 0 ? fdopen(tty_in, "r") : NULL;
    if (s->tty_out == NULL || s->tty_in == NULL) {
        snprintf(why, why_size, "cannot open the terminal: %s", strerror(errno));
        return -1;
    }
    fcntl(tty_out, F_SETFD, FD_CLOEXEC);
    fcntl(tty_in, F_SETFD, FD_CLOEXEC);
    s->term = newterm(NULL, s->tty_out, s->tty_in);
    if (s->term == NULL) {
        snprintf(why, why_size, "no terminal description for TERM=%s", term);
        return -1;
    }
    set_term(s->term);
    cbreak();
    noecho();
    nonl();
    keypad(stdscr, TRUE);
    intrflush(stdscr, FALSE);
    colors_setup(s);
    return 0;
}

static void terminal_close(struct screen *s)
{
    if (s->term != NULL) {
        endwin();
        delscreen(s->term);
        s->term = NULL;
    }
    if (s->tty_out != NULL)
        fclose(s->tty_out);
    if (s->tty_in != NULL)
        fclose(s->tty_in);
}

static void readline_setup(struct screen *s)
{
    rl_getc_function = input_getc;
    rl_redisplay_function = input_redisplay;
    rl_prep_term_function = no_terminal_prep;
    rl_deprep_term_function = no_terminal_deprep;
    rl_catch_sigwinch = 0;
    rl_change_environment = 0;
    rl_completion_display_matches_hook = show_matches;
    /* readline takes its keys from input_getc. It also looks at its input
     * stream for typed-ahead bytes: the terminal would give it ncurses' input,
     * and /dev/null an end of file that accepts the line. An empty pipe
     * whose write end stays open gives it neither. */
    s->devnull = fopen("/dev/null", "w");
    int quiet[2];
    if (pipe(quiet) == 0) {
        s->quiet_in = fdopen(quiet[0], "r");
        s->quiet_write = quiet[1];
        fcntl(quiet[0], F_SETFD, FD_CLOEXEC);
        fcntl(quiet[1], F_SETFD, FD_CLOEXEC);
    }
    rl_outstream = s->devnull;
    rl_instream = s->quiet_in;
    rl_variable_bind("bell-style", "none");
}

static void readline_restore(struct screen *s)
{
    if (s->prompt_installed)
        rl_callback_handler_remove();
    rl_getc_function = rl_getc;
    rl_redisplay_function = rl_redisplay;
    rl_prep_term_function = rl_prep_terminal;
    rl_deprep_term_function = rl_deprep_terminal;
    rl_completion_display_matches_hook = NULL;
    rl_outstream = NULL;
    rl_instream = NULL;
    if (s->devnull != NULL)
        fclose(s->devnull);
    if (s->quiet_in != NULL) {
        fclose(s->quiet_in);
        close(s->quiet_write);
    }
}

int screen_run(struct lua_runner *r, char *why, size_t why_size)
{
    struct screen *s = calloc(1, sizeof *s);
    if (s == NULL) {
        snprintf(why, why_size, "out of memory for the screen");
        return -1;
    }
    s->runner = r;
    s->L = r->L;
    setlocale(LC_CTYPE, ""); /* numbers keep the C format, for Lua and the panels */
    int ascii = strcmp(nl_langinfo(CODESET), "UTF-8") != 0;
    struct caem_error err;
    scrollback_init(&s->output);
    screen_state_init(&s->state);
    if (canvas_init(&s->canvas, SCREEN_MIN_COLS, SCREEN_MIN_ROWS, ascii) != 0 ||
        terminal_open(s, why, why_size) != 0) {
        if (why[0] == '\0')
            snprintf(why, why_size, "out of memory for the screen");
        terminal_close(s);
        canvas_free(&s->canvas);
        screen_state_free(&s->state);
        scrollback_free(&s->output);
        free(s);
        return -1;
    }
    active = s;
    /* captured first, so that the session's warnings (a history file that
     * cannot be written) reach the scrollback and not the raw terminal */
    int captured = scrollback_capture(&s->output, &err) == 0;
    if (captured)
        s->session = repl_session_open(r);
    readline_setup(s);
    if (!captured || s->session == NULL) {
        readline_restore(s);
        repl_session_close(s->session);
        terminal_close(s);
        scrollback_release(&s->output);
        snprintf(why, why_size, "%s", !captured ? err.message : "out of memory");
        canvas_free(&s->canvas);
        screen_state_free(&s->state);
        scrollback_free(&s->output);
        active = NULL;
        free(s);
        return -1;
    }
    struct lua_caem_host host = { screen_progress, screen_interrupted, s };
    lua_caem_set_host(s->L, &host);
    screen_lua_open(s);
    printf("caem: the live screen. F1 or ? lists the keys; Ctrl-D quits.\n");
    fflush(stdout);

    install_prompt(s);
    update(s, 1);
    while (!s->quit) {
        read_keys(s, KEY_WAIT_MS, 0);
        if (interrupt_take())
            interrupt_key(s);
        if (s->line_ready) {
            s->line_ready = 0;
            run_line(s, s->line);
            s->line = NULL;
            if (!s->quit) {
                install_prompt(s);
                replay_pending(s);
            }
            update(s, 1);
            continue;
        }
        interrupt_set_lua(s->L, 1);
        lua_caem_poll(s->L);
        interrupt_set_lua(NULL, 0);
        update(s, 0);
    }

    screen_lua_close(s);
    readline_restore(s);
    repl_session_close(s->session);
    terminal_close(s);
    scrollback_release(&s->output);
    lua_runner_set_hooks(r);
    canvas_free(&s->canvas);
    screen_state_free(&s->state);
    scrollback_free(&s->output);
    active = NULL;
    free(s);
    return 0;
}
