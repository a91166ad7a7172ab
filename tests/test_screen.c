/* The live screen end to end: caem runs in a detached tmux window of
 * 160x48, the test types Lua lines that start a training job on the topics
 * task, and reads the screen with capture-pane. It checks that:
 *   - the step counter advances;
 *   - the utilization shares of the selected layer sum to 100% within
 *     rounding, and the entropies lie in [0, 1];
 *   - F8 pauses the counter, and F9 and job:step(n) advance it by exactly
 *     the requested steps;
 *   - F7 shows a merge made from the REPL, F1 shows the keys, and
 *     caem.screen.export writes an SVG file;
 *   - a window below 80x24 gets a message, and the panels come back when it
 *     grows again;
 *   - Ctrl-D shows a question before quitting while a job is paused, then ends caem;
 *   - Ctrl-C stops a running job, and the REPL goes on.
 * A second run in the C locale checks the ASCII drawing.
 *
 * It skips without tmux or spm_train, and in the sanitizer variant, which
 * would run the same caem program. */
#include <regex.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "layout.h"
#include "test.h"
#include "topics_task.h"

#define COLS 160
#define ROWS 48
#define CAPTURE_MAX (ROWS * (COLS * 4 + 2) + 1)

static char dir[] = "/tmp/caem_screen_XXXXXX";
static char caem[1024];
static char socket_name[64];
static char skip_reason[256];
static int ready;
static char screen_text[CAPTURE_MAX];
static char lines[ROWS][COLS * 4 + 1];

static void sleep_seconds(double seconds)
{
    struct timespec ts = { (time_t)seconds, (long)((seconds - (time_t)seconds) * 1e9) };
    nanosleep(&ts, NULL);
}

/* Runs `tmux -L SOCKET ARGS`; returns its exit status. */
static int tmux(const char *args)
{
    char command[4096];
    snprintf(command, sizeof command, "tmux -L %s %s >/dev/null 2>&1", socket_name, args);
    int rc = system(command);
    return rc == -1 || !WIFEXITED(rc) ? -1 : WEXITSTATUS(rc);
}

/* Starts caem in the tmux session "caem" with the environment `env` and
 * HOME at DIR followed by home_suffix; returns tmux's exit status. */
static int start_caem(const char *env, const char *home_suffix)
{
    char args[2048];
    snprintf(args, sizeof args,
             "-f /dev/null new-session -d -s caem -x %d -y %d \"env %s HOME=%s%s %s\"", COLS,
             ROWS, env, dir, home_suffix, caem);
    return tmux(args);
}

/* Types text literally, then Enter. */
static void type_line(const char *text)
{
    char args[2048];
    snprintf(args, sizeof args, "send-keys -t caem -l \"%s\"", text);
    tmux(args);
    tmux("send-keys -t caem Enter");
}

/* Reads the screen into screen_text and lines[]. */
static int capture(void)
{
    char command[256];
    snprintf(command, sizeof command, "tmux -L %s capture-pane -p -t caem 2>/dev/null",
             socket_name);
    FILE *p = popen(command, "r");
    if (p == NULL)
        return -1;
    size_t n = fread(screen_text, 1, sizeof screen_text - 1, p);
    screen_text[n] = '\0';
    pclose(p);
    memset(lines, 0, sizeof lines);
    const char *at = screen_text;
    for (int row = 0; row < ROWS && *at != '\0'; row++) {
        const char *end = strchr(at, '\n');
        size_t length = end != NULL ? (size_t)(end - at) : strlen(at);
        if (length >= sizeof lines[row])
            length = sizeof lines[row] - 1;
        memcpy(lines[row], at, length);
        if (end == NULL)
            break;
        at = end + 1;
    }
    return 0;
}

/* Waits up to `seconds` for text to appear on the screen. */
static int wait_for(const char *text, double seconds)
{
    for (double waited = 0; waited < seconds; waited += 0.2) {
        if (capture() == 0 && strstr(screen_text, text) != NULL)
            return 1;
        sleep_seconds(0.2);
    }
    return 0;
}

/* Waits up to `seconds` for the tmux session to end with the program. */
static int session_ends(double seconds)
{
    for (double waited = 0; waited < seconds; waited += 0.2) {
        if (tmux("has-session -t caem") != 0)
            return 1;
        sleep_seconds(0.2);
    }
    return 0;
}

/* The step counter of the status line, or -1. */
static long status_step(void)
{
    capture();
    const char *at = strstr(lines[0], "step ");
    return at != NULL ? strtol(at + 5, NULL, 10) : -1;
}

/* Copies the part of a captured row inside r's columns. The rows are UTF-8,
 * so columns are counted in characters. */
static void row_part(int row, struct rect r, char *out, size_t size)
{
    const char *s = lines[row];
    int column = 0;
    size_t used = 0;
    for (size_t i = 0; s[i] != '\0'; i++) {
        int starts = ((unsigned char)s[i] & 0xc0) != 0x80;
        if (starts && i > 0)
            column++;
        if (column >= r.x + r.w)
            break;
        if (column >= r.x && used + 1 < size)
            out[used++] = s[i];
    }
    out[used] = '\0';
}

static void test_screen_prepared(void)
{
    CHECK(mkdtemp(dir) != NULL);
    snprintf(socket_name, sizeof socket_name, "caem-test-%d", (int)getpid());
    const char *root = getenv("CAEM_ROOT");
    snprintf(caem, sizeof caem, "%s/caem", root != NULL ? root : ".");
    const char *variant = getenv("CAEM_TEST_VARIANT");
    if (variant != NULL && variant[0] != '\0')
        snprintf(skip_reason, sizeof skip_reason, "the sanitizer variant runs the same caem");
    else if (access(caem, X_OK) != 0)
        snprintf(skip_reason, sizeof skip_reason, "the caem program is not built (run make)");
    else if (system("tmux -V >/dev/null 2>&1") != 0)
        snprintf(skip_reason, sizeof skip_reason, "tmux is not installed (Debian package tmux)");
    else if (topics_task_create(dir, skip_reason, sizeof skip_reason) == 0)
        ready = 1;
}

static void test_screen_starts(void)
{
    if (!ready)
        SKIP("%s", skip_reason);
    CHECK_INT_EQ(start_caem("LANG=C.UTF-8 LC_ALL=C.UTF-8 TERM=xterm-256color", ""), 0);
    CHECK_MSG(wait_for("caem>", 10.0), "no prompt:\n%s", screen_text);
    CHECK_MSG(strstr(lines[0], "no job") != NULL, "status line: %s", lines[0]);
}

static void test_screen_training_advances(void)
{
    if (!ready)
        SKIP("%s", skip_reason);
    char line[1024];
    snprintf(line, sizeof line, "tok = caem.tokenizer('%s/spm.model')", dir);
    type_line(line);
    snprintf(line, sizeof line,
             "task = caem.task{name = 'topics', dir = '%s', tokenizer = tok, max_input = 24, "
             "max_target = 4}", dir);
    type_line(line);
    type_line("m = caem.model{preset = 'tiny', tokenizer = tok, seed = 1}");
    type_line("job = m:train{task = task, steps = 1000000, batch = 8, lr = 1e-3, "
              "validate_every = 0}");
    CHECK_MSG(wait_for("train running", 20.0), "no running job:\n%s", screen_text);
    long first = -1, last = -1;
    for (int i = 0; i < 4; i++) {
        long step = status_step();
        if (first < 0)
            first = step;
        last = step;
        sleep_seconds(0.7);
    }
    CHECK_MSG(first >= 0 && last > first, "step %ld then %ld:\n%s", first, last, lines[0]);
}

static void test_screen_shares_and_entropy(void)
{
    if (!ready)
        SKIP("%s", skip_reason);
    struct screen_layout layout;
    CHECK_INT_EQ(screen_layout(COLS, ROWS, &layout), 0);
    CHECK(capture() == 0);

    regex_t share, entropy;
    CHECK_INT_EQ(regcomp(&share, "([0-9]+\\.[0-9])%", REG_EXTENDED), 0);
    CHECK_INT_EQ(regcomp(&entropy, "  ([0-9]+\\.[0-9]{3}) ", REG_EXTENDED), 0);
    double sum = 0;
    int shares = 0, entropies = 0;
    for (int row = layout.usage.y; row < layout.usage.y + layout.usage.h; row++) {
        char part[COLS * 4 + 1];
        row_part(row, layout.usage, part, sizeof part);
        if (strstr(part, "total") != NULL)
            continue; /* the totals line gives the dropped tokens' share */
        regmatch_t m[2];
        const char *at = part;
        while (regexec(&share, at, 2, m, 0) == 0) {
            sum += strtod(at + m[1].rm_so, NULL);
            shares++;
            at += m[0].rm_eo;
        }
    }
    for (int row = layout.entropy.y + 1; row < layout.entropy.y + layout.entropy.h - 1; row++) {
        char part[COLS * 4 + 1];
        row_part(row, layout.entropy, part, sizeof part);
        regmatch_t m[2];
        if (regexec(&entropy, part, 2, m, 0) != 0)
            continue;
        double h = strtod(part + m[1].rm_so, NULL);
        CHECK_MSG(h >= 0.0 && h <= 1.0, "entropy %g out of [0, 1] in: %s", h, part);
        entropies++;
    }
    regfree(&share);
    regfree(&entropy);
    /* the tiny preset has 4 experts, each share rounded to 0.05 */
    CHECK_MSG(shares == 4, "%d shares on the screen:\n%s", shares, screen_text);
    CHECK_MSG(sum > 100.0 - 0.05 * shares - 1e-9 && sum < 100.0 + 0.05 * shares + 1e-9,
              "shares sum to %.2f:\n%s", sum, screen_text);
    CHECK_MSG(entropies == 4, "%d entropies (2 encoder and 2 decoder MoE layers):\n%s",
              entropies, screen_text);
}

static void test_screen_pause_and_step(void)
{
    if (!ready)
        SKIP("%s", skip_reason);
    tmux("send-keys -t caem F8");
    CHECK_MSG(wait_for("train paused", 5.0), "not paused:\n%s", lines[0]);
    sleep_seconds(0.5);
    long paused = status_step();
    sleep_seconds(1.5);
    CHECK_MSG(status_step() == paused, "the counter moved while paused: %ld", paused);

    for (int i = 0; i < 3; i++) {
        tmux("send-keys -t caem F9");
        sleep_seconds(0.4);
    }
    sleep_seconds(1.0);
    long stepped = status_step();
    CHECK_MSG(stepped == paused + 3, "three F9: step %ld, expected %ld", stepped, paused + 3);

    type_line("job:step(5)");
    sleep_seconds(1.5);
    long after = status_step();
    CHECK_MSG(after == stepped + 5, "job:step(5): step %ld, expected %ld", after, stepped + 5);
    CHECK_MSG(strstr(lines[0], "paused") != NULL, "status after stepping: %s", lines[0]);
}

static void test_screen_merge_view(void)
{
    if (!ready)
        SKIP("%s", skip_reason);
    tmux("send-keys -t caem F7");
    CHECK_MSG(wait_for("no merge yet", 3.0), "merge view before a merge:\n%s", screen_text);
    /* two sources whose usage favours expert 0 and expert 1 in every layer */
    type_line("u = function(f) local t = {} for l = 1, 4 do local k = {} for e = 1, 4 do "
              "k[e] = e == f and 50 or 1 end t[l] = {kept = k} end return t end");
    type_line("mm = caem.merge{sources = {caem.model{preset = 'tiny', seed = 1}, "
              "caem.model{preset = 'tiny', seed = 2}}, experts = 4, usage = {u(1), u(2)}, "
              "allow_different_bases = true}");
    CHECK_MSG(wait_for("enc MoE 1", 5.0), "no merge shown:\n%s", screen_text);
    CHECK_MSG(strstr(screen_text, "slots") != NULL, "no slots:\n%s", screen_text);
    tmux("send-keys -t caem F7");
    CHECK_MSG(wait_for("utilization", 3.0), "F7 again shows the panels:\n%s", screen_text);
}

/* caem.screen.export writes the panels, and rejects a path that is not a
 * string. */
static void test_screen_export(void)
{
    if (!ready)
        SKIP("%s", skip_reason);
    char line[1024], path[512];
    snprintf(path, sizeof path, "%s/panels.svg", dir);
    snprintf(line, sizeof line, "print('written: ' .. caem.screen.export('%s'))", path);
    type_line(line);
    CHECK_MSG(wait_for("written: ", 5.0), "no export:\n%s", screen_text);
    FILE *f = fopen(path, "r");
    char head[8] = "";
    if (f != NULL) {
        if (fread(head, 1, 4, f) != 4)
            head[0] = '\0';
        fclose(f);
    }
    CHECK_MSG(strncmp(head, "<svg", 4) == 0, "%s does not start with <svg", path);
    type_line("print(select(2, pcall(caem.screen.export, 5)))");
    CHECK_MSG(wait_for("the path must be a string, got number", 5.0), "no error:\n%s",
              screen_text);
}

static void test_screen_help(void)
{
    if (!ready)
        SKIP("%s", skip_reason);
    tmux("send-keys -t caem F1");
    CHECK_MSG(wait_for("pause / resume the job", 3.0), "no help:\n%s", screen_text);
    tmux("send-keys -t caem F1");
    sleep_seconds(0.5);
    capture();
    CHECK_MSG(strstr(screen_text, "pause / resume the job") == NULL, "help stays:\n%s",
              screen_text);
}

static void test_screen_resize(void)
{
    if (!ready)
        SKIP("%s", skip_reason);
    tmux("resize-window -t caem -x 70 -y 20");
    CHECK_MSG(wait_for("terminal too small", 3.0), "no message at 70x20:\n%s", screen_text);
    char args[64];
    snprintf(args, sizeof args, "resize-window -t caem -x %d -y %d", COLS, ROWS);
    tmux(args);
    CHECK_MSG(wait_for("utilization", 3.0), "no panels after resizing back:\n%s", screen_text);
    CHECK_MSG(strstr(screen_text, "terminal too small") == NULL, "the message stays:\n%s",
              screen_text);
}

/* The row of the first line on the screen that starts with text, or -1. */
static int row_starting(const char *text)
{
    for (int row = 0; row < ROWS; row++)
        if (strncmp(lines[row], text, strlen(text)) == 0)
            return row;
    return -1;
}

/* A line typed while a chunk runs is echoed after that chunk's output. The
 * echo used to go straight into the scrollback while the chunk's output
 * could still be in the pipe, so it came first on most tries. */
static void test_screen_output_before_echo(void)
{
    if (!ready)
        SKIP("%s", skip_reason);
    for (int round = 0; round < 3; round++) {
        char chunk[128], ahead[128], result[64];
        /* the REPL prints the value last, just before the next line is read */
        snprintf(chunk, sizeof chunk,
                 "=(function() os.execute('sleep 0.5') return 'chunk %d done' end)()", round);
        snprintf(ahead, sizeof ahead, "print('typed ahead %d')", round);
        snprintf(result, sizeof result, "chunk %d done", round);
        type_line(chunk);
        sleep_seconds(0.1);
        type_line(ahead);
        CHECK_MSG(wait_for(ahead, 5.0), "no echo of %s:\n%s", ahead, screen_text);
        sleep_seconds(0.3);
        capture();
        char echo[160];
        snprintf(echo, sizeof echo, "caem> %s", ahead);
        int result_row = row_starting(result), echo_row = row_starting(echo);
        CHECK_MSG(result_row >= 0 && echo_row > result_row,
                  "'%s' on row %d, the next line's echo on row %d:\n%s", result, result_row,
                  echo_row, screen_text);
    }
}

/* Tab twice lists the completions in rows that fit the output, so the last
 * of many is on the screen. */
static void test_screen_completion_list(void)
{
    if (!ready)
        SKIP("%s", skip_reason);
    tmux("send-keys -t caem -l caem.");
    tmux("send-keys -t caem Tab Tab");
    CHECK_MSG(wait_for("caem.allocate", 3.0), "no completions:\n%s", screen_text);
    CHECK_MSG(strstr(screen_text, "caem.usage_figure") != NULL,
              "caem.usage_figure is not listed:\n%s", screen_text);
    tmux("send-keys -t caem C-u");
}

/* Ctrl-C without a job clears the input line, on the screen too. */
static void test_screen_ctrl_c_clears_line(void)
{
    if (!ready)
        SKIP("%s", skip_reason);
    struct screen_layout layout;
    CHECK_INT_EQ(screen_layout(COLS, ROWS, &layout), 0);
    tmux("send-keys -t caem -l 'typed but not run'");
    CHECK_MSG(wait_for("typed but not run", 3.0), "no input:\n%s", screen_text);
    tmux("send-keys -t caem C-c");
    sleep_seconds(0.6);
    capture();
    CHECK_MSG(strstr(lines[layout.input.y], "typed but not run") == NULL,
              "the input row after Ctrl-C: %s", lines[layout.input.y]);
}

/* Ctrl-C stops a running job and leaves the screen and its REPL working. */
static void test_screen_ctrl_c_stops_job(void)
{
    if (!ready)
        SKIP("%s", skip_reason);
    char line[1024];
    snprintf(line, sizeof line,
             "tok = caem.tokenizer('%s/spm.model'); task = caem.task{name = 'topics', "
             "dir = '%s', tokenizer = tok, max_input = 24, max_target = 4}", dir, dir);
    type_line(line);
    type_line("m = caem.model{preset = 'tiny', tokenizer = tok, seed = 1}; "
              "job = m:train{task = task, steps = 1000000, batch = 8, validate_every = 0}");
    CHECK_MSG(wait_for("train running", 20.0), "no running job:\n%s", screen_text);
    tmux("send-keys -t caem C-c");
    CHECK_MSG(wait_for("train stopped", 5.0), "Ctrl-C did not stop the job:\n%s", lines[0]);
    type_line("print('state: ' .. job:status().state)");
    CHECK_MSG(wait_for("state: stopped", 5.0), "the REPL after Ctrl-C:\n%s", screen_text);
}

/* Text written without a newline shows while the chunk that wrote it
 * still waits for a job: a line of the output starts with it (the echo of
 * the typed line starts with the prompt). Ctrl-C then ends the wait. */
static void test_screen_partial_line(void)
{
    if (!ready)
        SKIP("%s", skip_reason);
    type_line("io.write('waiting-partial'); j2 = m:train{task = task, steps = 1000000, "
              "batch = 8, validate_every = 0}; j2:wait()");
    CHECK_MSG(wait_for("train running", 10.0), "no running job:\n%s", lines[0]);
    int shown = 0;
    for (double waited = 0; waited < 3.0 && !shown; waited += 0.2) {
        sleep_seconds(0.2);
        capture();
        for (int row = 0; row < ROWS && !shown; row++)
            shown = strncmp(lines[row], "waiting-partial", 15) == 0;
    }
    CHECK_MSG(shown, "the partial line is not shown:\n%s", screen_text);
    tmux("send-keys -t caem C-c");
    CHECK_MSG(wait_for("train stopped", 5.0), "Ctrl-C did not stop the job:\n%s", lines[0]);
}

static void test_screen_quit_asks(void)
{
    if (!ready)
        SKIP("%s", skip_reason);
    tmux("send-keys -t caem C-d");
    CHECK_MSG(wait_for("quit anyway?", 3.0), "no question:\n%s", screen_text);
    tmux("send-keys -t caem y Enter");
    CHECK_MSG(session_ends(10.0), "caem did not quit:\n%s", screen_text);
}

/* In the C locale the screen draws with ASCII only, and Ctrl-D without a
 * job quits at once. */
static void test_screen_ascii(void)
{
    if (!ready)
        SKIP("%s", skip_reason);
    CHECK_INT_EQ(start_caem("LANG=C LC_ALL=C TERM=xterm-256color NO_COLOR=1", ""), 0);
    CHECK_MSG(wait_for("caem>", 10.0), "no prompt:\n%s", screen_text);
    int wide = 0;
    for (const char *at = screen_text; *at != '\0'; at++)
        wide += (unsigned char)*at >= 128;
    CHECK_MSG(wide == 0, "%d bytes above 127:\n%s", wide, screen_text);
    CHECK_MSG(strstr(screen_text, "+ utilization") != NULL, "no ASCII frame:\n%s", screen_text);
    tmux("send-keys -t caem C-d");
    CHECK_MSG(session_ends(10.0), "caem did not quit:\n%s", screen_text);
}

/* A second session in UTF-8 for the tests of the REPL lines, with no job. */
static void test_screen_restarts(void)
{
    if (!ready)
        SKIP("%s", skip_reason);
    CHECK_INT_EQ(start_caem("LANG=C.UTF-8 LC_ALL=C.UTF-8 TERM=xterm-256color", ""), 0);
    CHECK_MSG(wait_for("caem>", 10.0), "no prompt:\n%s", screen_text);
}

/* Ctrl-D with no job quits at once. */
static void test_screen_quits_idle(void)
{
    if (!ready)
        SKIP("%s", skip_reason);
    tmux("send-keys -t caem C-d");
    CHECK_MSG(session_ends(10.0), "caem did not quit:\n%s", screen_text);
}

/* A HOME where the history file cannot be written gets the plain REPL's
 * warning on the screen. */
static void test_screen_history_warning(void)
{
    if (!ready)
        SKIP("%s", skip_reason);
    CHECK_INT_EQ(start_caem("LANG=C.UTF-8 LC_ALL=C.UTF-8 TERM=xterm-256color", "/missing"), 0);
    CHECK_MSG(wait_for("caem>", 10.0), "no prompt:\n%s", screen_text);
    CHECK_MSG(wait_for("history is not saved", 2.0), "no warning:\n%s", screen_text);
    tmux("send-keys -t caem C-d");
    CHECK_MSG(session_ends(10.0), "caem did not quit:\n%s", screen_text);
}

int main(void)
{
    TEST_SUITE("screen");
    RUN_TEST(screen_prepared);
    RUN_TEST(screen_starts);
    RUN_TEST(screen_training_advances);
    RUN_TEST(screen_shares_and_entropy);
    RUN_TEST(screen_pause_and_step);
    RUN_TEST(screen_merge_view);
    RUN_TEST(screen_export);
    RUN_TEST(screen_help);
    RUN_TEST(screen_resize);
    RUN_TEST(screen_quit_asks);
    RUN_TEST(screen_ascii);
    RUN_TEST(screen_restarts);
    RUN_TEST(screen_output_before_echo);
    RUN_TEST(screen_completion_list);
    RUN_TEST(screen_ctrl_c_clears_line);
    RUN_TEST(screen_ctrl_c_stops_job);
    RUN_TEST(screen_partial_line);
    RUN_TEST(screen_quits_idle);
    RUN_TEST(screen_history_warning);
    tmux("kill-server");
    char command[256];
    snprintf(command, sizeof command, "rm -rf %s", dir);
    if (system(command) != 0)
        printf("  could not remove %s\n", dir);
    TEST_MAIN_END();
}
