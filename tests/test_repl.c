/* The plain REPL. In this process: how it prints values, when a chunk is
 * incomplete, and what tab completes. Then caem --plain driven through a
 * pseudo-terminal like a person at the keyboard: a chunk over three lines,
 * expressions, an error that leaves the session's state alone, tab
 * completion, Ctrl-C at the prompt and in a loop, and the history file.
 * With the topics task, a training job is started paused, stepped,
 * resumed, paused and stopped, and another is stopped from the prompt.
 * Last, the REPL reads a file on standard input.
 *
 * The sanitizer variant skips the sessions, because they run the same
 * normal build of caem. */
#include <errno.h>
#include <fcntl.h>
#include <lauxlib.h>
#include <lualib.h>
#include <poll.h>
#include <pty.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "repl.h"
#include "test.h"
#include "topics_task.h"

static char dir[] = "/tmp/caem_repl_XXXXXX";
static char caem[1024];
static int spawn_ok;
static char spawn_why[256];
static char task_reason[256];
static int task_ready;

static double now_seconds(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* ---- in this process ---- */

/* Returns the REPL's text for the value that `expression` evaluates to. */
static const char *value_text(lua_State *L, const char *expression)
{
    static char text[1024];
    lua_settop(L, 0);
    char chunk[1024];
    snprintf(chunk, sizeof chunk, "return %s", expression);
    if (luaL_dostring(L, chunk) != LUA_OK) {
        snprintf(text, sizeof text, "error: %s", lua_tostring(L, -1));
        return text;
    }
    repl_push_value_text(L, 1);
    snprintf(text, sizeof text, "%s", lua_tostring(L, -1));
    lua_settop(L, 0);
    return text;
}

static int push_text(lua_State *L)
{
    repl_push_value_text(L, 1);
    return 1;
}

static void check_text(lua_State *L, const char *expression, const char *expected)
{
    const char *got = value_text(L, expression);
    CHECK_MSG(strcmp(got, expected) == 0, "%s: expected '%s', got '%s'", expression, expected,
              got);
}

static void test_values_printed(void)
{
    lua_State *L = luaL_newstate();
    luaL_openlibs(L);
    check_text(L, "42", "42");
    check_text(L, "1.5", "1.5");
    check_text(L, "'plain'", "plain");
    check_text(L, "nil", "nil");
    check_text(L, "{}", "{}");
    check_text(L, "{3, 2, 1}", "{3, 2, 1}");
    check_text(L, "{b = 1, a = 'x', [2] = true, [1] = 0, [10] = 'ten', ['two words'] = 2}",
               "{0, true, [10] = \"ten\", a = \"x\", b = 1, [\"two words\"] = 2}");
    check_text(L, "{inner = {1}, empty = {}, ['end'] = 1}",
               "{empty = {}, [\"end\"] = 1, inner = {...}}");
    check_text(L, "{'line\\none', 'q\"uote'}", "{\"line\\none\", \"q\\\"uote\"}");
    check_text(L, "{string.rep('x', 70)}",
               "{\"xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx...\"}");
    check_text(L, "setmetatable({}, {__tostring = function() return 'custom' end})",
               "custom");
    check_text(L, "{setmetatable({}, {__tostring = function() return 'inner' end})}",
               "{inner}");

    /* long tables are cut, with the count of entries left out */
    const char *text = value_text(L, "(function() local t = {} for i = 1, 100 do t[i] = i end "
                                     "return t end)()");
    CHECK_MSG(strncmp(text, "{1, 2, 3, ", 10) == 0, "%s", text);
    CHECK_MSG(strstr(text, "20, ... (80 more)}") != NULL, "%s", text);
    text = value_text(L, "(function() local t = {} for i = 1, 30 do "
                         "t['key' .. i] = string.rep('v', 30) end return t end)()");
    CHECK_MSG(strlen(text) < REPL_TABLE_CHARS + 80, "%zu characters: %s", strlen(text), text);
    CHECK_MSG(strstr(text, "more)}") != NULL, "%s", text);

    /* a failing __tostring raises */
    (void)luaL_dostring(L, "bad = setmetatable({}, "
                           "{__tostring = function() error('no text') end})");
    lua_settop(L, 0);
    lua_pushcfunction(L, push_text);
    lua_getglobal(L, "bad");
    CHECK_INT_EQ(lua_pcall(L, 1, 1, 0), LUA_ERRRUN);
    CHECK(strstr(lua_tostring(L, -1), "no text") != NULL);
    lua_settop(L, 0);
    lua_close(L);
}

static int incomplete(lua_State *L, const char *chunk)
{
    int status = luaL_loadbuffer(L, chunk, strlen(chunk), "=stdin");
    int result = repl_chunk_incomplete(L, status);
    lua_settop(L, 0);
    return result;
}

static void test_incomplete_chunks(void)
{
    lua_State *L = luaL_newstate();
    CHECK_INT_EQ(incomplete(L, "function f(x)"), 1);
    CHECK_INT_EQ(incomplete(L, "function f(x)\nreturn x*2"), 1);
    CHECK_INT_EQ(incomplete(L, "function f(x)\nreturn x*2\nend"), 0);
    CHECK_INT_EQ(incomplete(L, "t = {"), 1);
    CHECK_INT_EQ(incomplete(L, "s = [[long"), 1);
    CHECK_INT_EQ(incomplete(L, "x = = 1"), 0);
    CHECK_INT_EQ(incomplete(L, "x = 1"), 0);
    CHECK_INT_EQ(incomplete(L, "end"), 0);
    lua_close(L);
}

/* Returns the completions of word joined by spaces. */
static const char *completions(lua_State *L, const char *word)
{
    static char text[2048];
    size_t used = 0;
    text[0] = '\0';
    int n = repl_completions(L, word);
    for (int i = 1; i <= n; i++) {
        lua_rawgeti(L, -1, i);
        used += (size_t)snprintf(text + used, sizeof text - used, "%s%s", i > 1 ? " " : "",
                                 lua_tostring(L, -1));
        lua_pop(L, 1);
    }
    lua_pop(L, 1);
    return text;
}

static void check_completions(lua_State *L, const char *word, const char *expected)
{
    const char *got = completions(L, word);
    CHECK_MSG(strcmp(got, expected) == 0, "%s: expected '%s', got '%s'", word, expected, got);
    CHECK_INT_EQ(lua_gettop(L), 0);
}

/* An __index in C that finds methods in its upvalue, as modules write them. */
static int index_from_upvalue(lua_State *L)
{
    lua_getfield(L, lua_upvalueindex(1), luaL_checkstring(L, 2));
    return 1;
}

static void test_completions(void)
{
    lua_State *L = luaL_newstate();
    luaL_openlibs(L);
    lua_newuserdatauv(L, 1, 0);
    lua_newtable(L);
    (void)luaL_dostring(L, "return {wait = function() end, status = function() end, "
                           "kind = 'train'}");
    lua_pushcclosure(L, index_from_upvalue, 1);
    lua_setfield(L, -2, "__index");
    lua_setmetatable(L, -2);
    lua_setglobal(L, "native");
    (void)luaL_dostring(L,
        "alpha_one = 1; alpha_two = 2\n"
        "obj = setmetatable({field = 1}, {__index = {method = function() end, value = 3}})\n"
        "proxy = setmetatable({}, {__index = function(t, k) return nil end,\n"
        "  __fields = {'size', 'name'}, __methods = {run = true, stop = true}})\n"
        "failing = setmetatable({}, {__index = function() error('no') end})\n");
    lua_settop(L, 0);

    check_completions(L, "alpha_", "alpha_one alpha_two");
    check_completions(L, "str", "string");
    check_completions(L, "whi", "while");
    check_completions(L, "string.for", "string.format");
    check_completions(L, "obj.", "obj.field obj.method obj.value");
    check_completions(L, "obj:", "obj:method");
    check_completions(L, "proxy.", "proxy.name proxy.run proxy.size proxy.stop");
    check_completions(L, "proxy:s", "proxy:stop");
    check_completions(L, "io.stdout:wr", "io.stdout:write");
    check_completions(L, "native:", "native:status native:wait");
    check_completions(L, "native.", "native.kind native.status native.wait");
    check_completions(L, "failing.x.", "");
    check_completions(L, "nothing.", "");
    check_completions(L, "alpha_one.", "");
    check_completions(L, "1x.", "");
    check_completions(L, "zzz", "");
    lua_close(L);
}

/* ---- sessions through a pseudo-terminal ---- */

struct session {
    pid_t pid;
    int master;
    char output[1 << 16];
    size_t length;
    size_t mark; /* expect searches from here */
};

static int session_start(struct session *s, const char *home)
{
    memset(s, 0, sizeof *s);
    /* wide enough that readline never scrolls a typed line sideways, which
     * draws the prompt again */
    struct winsize size = { 24, 400, 0, 0 };
    fflush(stdout);
    s->pid = forkpty(&s->master, NULL, NULL, &size);
    if (s->pid < 0)
        return -1;
    if (s->pid == 0) {
        setenv("HOME", home, 1);
        setenv("TERM", "dumb", 1);
        setenv("INPUTRC", "/dev/null", 1);
        execl(caem, caem, "--threads", "1", "--plain", (char *)NULL);
        _exit(127);
    }
    return 0;
}

/* Reads what the REPL wrote for up to `seconds`. */
static void session_read(struct session *s, double seconds)
{
    struct pollfd p = { s->master, POLLIN, 0 };
    if (poll(&p, 1, (int)(seconds * 1000)) <= 0)
        return;
    ssize_t n = read(s->master, s->output + s->length, sizeof s->output - 1 - s->length);
    if (n > 0) {
        s->length += (size_t)n;
        s->output[s->length] = '\0';
    }
}

/* Waits up to 10 s for text after the mark; on success moves the mark past
 * it and returns 1. */
static int session_expect(struct session *s, const char *text)
{
    double deadline = now_seconds() + 10.0;
    for (;;) {
        char *found = strstr(s->output + s->mark, text);
        if (found != NULL) {
            s->mark = (size_t)(found - s->output) + strlen(text);
            return 1;
        }
        double left = deadline - now_seconds();
        if (left <= 0 || s->length + 1 >= sizeof s->output)
            return 0;
        session_read(s, left < 0.1 ? left : 0.1);
    }
}

static void session_type(struct session *s, const char *keys)
{
    size_t n = strlen(keys);
    if (write(s->master, keys, n) != (ssize_t)n)
        printf("  writing to the terminal failed: %s\n", strerror(errno));
}

/* Types a line and waits for its echo, then for the prompt after it. */
static int session_line(struct session *s, const char *line)
{
    session_type(s, line);
    session_type(s, "\r");
    return session_expect(s, line) && session_expect(s, "caem> ");
}

/* Waits for the program to end; returns its exit status, or -1 after
 * killing it when it did not end within 10 s. */
static int session_end(struct session *s)
{
    double deadline = now_seconds() + 10.0;
    int status;
    while (waitpid(s->pid, &status, WNOHANG) == 0) {
        if (now_seconds() > deadline) {
            kill(s->pid, SIGKILL);
            waitpid(s->pid, &status, 0);
            close(s->master);
            return -1;
        }
        session_read(s, 0.05);
    }
    close(s->master);
    return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

#define EXPECT(s, text) CHECK_MSG(session_expect(s, text), "no '%s' in the output after " \
                                  "byte %zu:\n%s", text, (s)->mark, (s)->output)

static void test_session_basics(void)
{
    if (!spawn_ok)
        SKIP("%s", spawn_why);
    char home[1024];
    snprintf(home, sizeof home, "%s/home", dir);
    mkdir(home, 0700);
    struct session *s = calloc(1, sizeof *s);
    if (session_start(s, home) != 0) {
        free(s);
        SKIP("forkpty failed: %s", strerror(errno));
    }
    EXPECT(s, "caem> ");

    /* a chunk over three lines, then its function called */
    session_type(s, "function f(x)\r");
    EXPECT(s, "  >> ");
    session_type(s, "return x*2\r");
    EXPECT(s, "  >> ");
    session_type(s, "end\r");
    EXPECT(s, "caem> ");
    session_type(s, "=f(21)\r");
    EXPECT(s, "\r\n42\r\n");
    EXPECT(s, "caem> ");

    /* an error prints its message; what was defined before is still there */
    session_type(s, "error(\"boom\")\r");
    EXPECT(s, "stdin:1: boom\r\n");
    EXPECT(s, "caem> ");
    session_type(s, "=f(5)\r");
    EXPECT(s, "\r\n10\r\n");
    EXPECT(s, "caem> ");
    session_type(s, "f(nil)\r");
    EXPECT(s, "attempt to perform arithmetic on a nil value (local 'x')\r\n");
    EXPECT(s, "caem> ");

    /* a bare expression and a table */
    session_type(s, "{1, 'two', x = f(2)}\r");
    EXPECT(s, "{1, \"two\", x = 4}\r\n");
    EXPECT(s, "caem> ");

    /* tab completes a global */
    CHECK(session_line(s, "completion_target_value = 7"));
    session_type(s, "completion_tar\t");
    EXPECT(s, "get_value");
    session_type(s, "\r");
    EXPECT(s, "\r\n7\r\n");
    EXPECT(s, "caem> ");

    /* Ctrl-C drops the typed line: "abc=1+2" would be an assignment */
    session_type(s, "abc");
    EXPECT(s, "abc");
    session_type(s, "\003");
    EXPECT(s, "caem> ");
    session_type(s, "=1+2\r");
    EXPECT(s, "\r\n3\r\n");
    EXPECT(s, "caem> ");

    /* and an incomplete chunk */
    session_type(s, "for i = 1, 3 do\r");
    EXPECT(s, "  >> ");
    session_type(s, "\003");
    EXPECT(s, "caem> ");
    session_type(s, "=i\r");
    EXPECT(s, "\r\nnil\r\n");
    EXPECT(s, "caem> ");

    /* Ctrl-C stops a loop; the session goes on */
    session_type(s, "n = 0 while true do n = n + 1 end\r");
    struct timespec running = { 0, 300 * 1000000L };
    nanosleep(&running, NULL);
    session_type(s, "\003");
    EXPECT(s, "interrupted!");
    EXPECT(s, "caem> ");
    session_type(s, "=n > 0\r");
    EXPECT(s, "\r\ntrue\r\n");
    EXPECT(s, "caem> ");

    /* Ctrl-D on an empty line quits */
    session_type(s, "\004");
    CHECK_INT_EQ(session_end(s), 0);

    char path[1100], history[4096];
    snprintf(path, sizeof path, "%s/.caem_history", home);
    FILE *f = fopen(path, "r");
    size_t n = f != NULL ? fread(history, 1, sizeof history - 1, f) : 0;
    history[n] = '\0';
    if (f != NULL)
        fclose(f);
    CHECK_MSG(strncmp(history, "function f(x)\nreturn x*2\nend\n=f(21)\n", 36) == 0,
              "history:\n%s", history);
    CHECK(strstr(history, "\ncompletion_target_value\n") != NULL);
    CHECK(strstr(history, "abc") == NULL);
    free(s);
}

static void test_session_history_unwritable(void)
{
    if (!spawn_ok)
        SKIP("%s", spawn_why);
    /* a directory where the history file should be: unreadable and
     * unwritable, even for root */
    char home[1024], history[1100];
    snprintf(home, sizeof home, "%s/blocked", dir);
    snprintf(history, sizeof history, "%s/.caem_history", home);
    mkdir(home, 0700);
    mkdir(history, 0700);
    struct session *s = calloc(1, sizeof *s);
    if (session_start(s, home) != 0) {
        free(s);
        SKIP("forkpty failed: %s", strerror(errno));
    }
    EXPECT(s, "history is not saved");
    EXPECT(s, "caem> ");
    session_type(s, "=6*7\r");
    EXPECT(s, "\r\n42\r\n");
    EXPECT(s, "caem> ");
    session_type(s, "=7*8\r");
    EXPECT(s, "\r\n56\r\n");
    EXPECT(s, "caem> ");
    session_type(s, "\004");
    CHECK_INT_EQ(session_end(s), 0);
    /* warned once */
    const char *first = strstr(s->output, "history is not saved");
    CHECK(first != NULL);
    if (first != NULL)
        CHECK(strstr(first + 1, "history is not saved") == NULL);
    free(s);
}

/* Loads the topics task and a tiny model into globals. */
static int session_load_task(struct session *s)
{
    char line[2048];
    snprintf(line, sizeof line,
             "tok = caem.tokenizer('%s/spm.model'); "
             "task = caem.task{name = 'topics', dir = '%s', tokenizer = tok}; "
             "model = caem.model{preset = 'tiny', vocab_size = 512, seed = 1}", dir, dir);
    return session_line(s, line);
}

static void test_session_jobs(void)
{
    if (!spawn_ok)
        SKIP("%s", spawn_why);
    if (!task_ready)
        SKIP("%s", task_reason);
    char home[1024];
    snprintf(home, sizeof home, "%s/home", dir);
    struct session *s = calloc(1, sizeof *s);
    if (session_start(s, home) != 0) {
        free(s);
        SKIP("forkpty failed: %s", strerror(errno));
    }
    EXPECT(s, "caem> ");
    CHECK(session_load_task(s));

    /* a job started paused runs exactly the steps asked for */
    CHECK(session_line(s, "job = model:train{task = task, steps = 50, batch = 4, "
                          "paused = true}"));
    session_type(s, "=job:status().state\r");
    EXPECT(s, "\r\npaused\r\n");
    CHECK(session_line(s, "job:step(3); job:wait()"));
    session_type(s, "=job:status().step, job:status().state\r");
    EXPECT(s, "\r\n3\tpaused\r\n");
    CHECK(session_line(s, "job:resume()"));
    CHECK(session_line(s, "job:pause(); job:wait()"));
    session_type(s, "=job:status().state\r");
    EXPECT(s, "\r\npaused\r\n");
    CHECK(session_line(s, "job:stop(); job:wait()"));
    session_type(s, "=job:status().state\r");
    EXPECT(s, "\r\nstopped\r\n");

    /* what a callback prints during a wait starts on a line of its own,
     * not after the progress line */
    CHECK(session_line(s, "cb = model:train{task = task, steps = 60, batch = 16, every = 20, "
                          "on_step = function(st) print('callback', st.step) end}"));
    size_t before = s->mark;
    CHECK(session_line(s, "cb:wait()"));
    for (int step = 20; step <= 60; step += 20) {
        char text[32];
        snprintf(text, sizeof text, "callback\t%d\r\n", step);
        const char *found = strstr(s->output + before, text);
        CHECK_MSG(found != NULL, "no '%s' in:\n%s", text, s->output + before);
        if (found != NULL)
            CHECK_MSG(found[-1] == '\n', "'%s' starts after other text:\n%s", text,
                      s->output + before);
    }

    /* Ctrl-C on an empty prompt stops a job running in the background */
    CHECK(session_line(s, "bg = model:train{task = task, steps = 100000, batch = 4}"));
    session_type(s, "=bg:status().state\r");
    EXPECT(s, "\r\nrunning\r\n");
    EXPECT(s, "caem> ");
    session_type(s, "\003");
    EXPECT(s, "stopped 1 job\r\n");
    EXPECT(s, "caem> ");
    CHECK(session_line(s, "bg:wait()"));
    session_type(s, "=bg:status().state\r");
    EXPECT(s, "\r\nstopped\r\n");
    EXPECT(s, "caem> ");

    /* Ctrl-D shows the quit question while a job runs: "n" keeps the session,
     * "y" quits */
    CHECK(session_line(s, "bg2 = model:train{task = task, steps = 100000, batch = 4}"));
    session_type(s, "\004");
    EXPECT(s, "jobs are still running; quit anyway? [y/N] ");
    session_type(s, "n\r");
    EXPECT(s, "caem> ");
    session_type(s, "=bg2:status().state\r");
    EXPECT(s, "\r\nrunning\r\n");
    EXPECT(s, "caem> ");
    session_type(s, "\004");
    EXPECT(s, "quit anyway? [y/N] ");
    session_type(s, "y\r");
    CHECK_INT_EQ(session_end(s), 0);
    free(s);
}

static void test_stream_without_terminal(void)
{
    if (!spawn_ok)
        SKIP("%s", spawn_why);
    char input[1024], output[1024], command[4096];
    snprintf(input, sizeof input, "%s/session.lua", dir);
    snprintf(output, sizeof output, "%s/session.out", dir);
    FILE *f = fopen(input, "w");
    fputs("function f(x)\nreturn x*2\nend\n=f(21)\nerror('boom')\n=f(5)\n"
          "t = {1, k = 'v'}\nt\n=1, nil, 'three'\n", f);
    fclose(f);
    snprintf(command, sizeof command, "HOME=%s %s < %s > %s 2>&1", dir, caem, input, output);
    int rc = system(command);
    CHECK_INT_EQ(WIFEXITED(rc) ? WEXITSTATUS(rc) : -1, 1); /* a chunk failed */
    char text[4096];
    f = fopen(output, "r");
    size_t n = f != NULL ? fread(text, 1, sizeof text - 1, f) : 0;
    text[n] = '\0';
    if (f != NULL)
        fclose(f);
    CHECK_MSG(strcmp(text, "42\nstdin:1: boom\n10\n{1, k = \"v\"}\n1\tnil\tthree\n") == 0,
              "output:\n%s", text);

    /* no error: status 0; an unfinished chunk at the end is an error */
    snprintf(command, sizeof command, "printf '=2+2' | HOME=%s %s > %s 2>&1", dir, caem,
             output);
    rc = system(command);
    CHECK_INT_EQ(WIFEXITED(rc) ? WEXITSTATUS(rc) : -1, 0);
    snprintf(command, sizeof command, "printf 'x = {\\n' | HOME=%s %s > %s 2>&1", dir, caem,
             output);
    rc = system(command);
    CHECK_INT_EQ(WIFEXITED(rc) ? WEXITSTATUS(rc) : -1, 1);
    f = fopen(output, "r");
    n = f != NULL ? fread(text, 1, sizeof text - 1, f) : 0;
    text[n] = '\0';
    if (f != NULL)
        fclose(f);
    CHECK_MSG(strstr(text, "<eof>") != NULL, "output:\n%s", text);

    /* --verbose adds the traceback to an error */
    snprintf(command, sizeof command,
             "printf 'local function g() error(\"deep\") end g()\\n=1\\n' | HOME=%s %s "
             "--verbose > %s 2>&1", dir, caem, output);
    rc = system(command);
    CHECK_INT_EQ(WIFEXITED(rc) ? WEXITSTATUS(rc) : -1, 1);
    f = fopen(output, "r");
    n = f != NULL ? fread(text, 1, sizeof text - 1, f) : 0;
    text[n] = '\0';
    if (f != NULL)
        fclose(f);
    static const char expected[] = "stdin:1: deep\nstack traceback:\n";
    CHECK_MSG(strncmp(text, expected, sizeof expected - 1) == 0, "output:\n%s", text);
    CHECK_MSG(strstr(text, "in local 'g'") != NULL, "output:\n%s", text);
    CHECK_MSG(strstr(text, "\n1\n") != NULL, "output:\n%s", text);
}

static void test_fixtures_prepared(void)
{
    CHECK(mkdtemp(dir) != NULL);
    const char *root = getenv("CAEM_ROOT");
    snprintf(caem, sizeof caem, "%s/caem", root != NULL ? root : ".");
    const char *variant = getenv("CAEM_TEST_VARIANT");
    if (variant != NULL && variant[0] != '\0') {
        snprintf(spawn_why, sizeof spawn_why, "the sanitizer variant runs the same caem program");
    } else if (access(caem, X_OK) != 0) {
        snprintf(spawn_why, sizeof spawn_why, "the caem program is not built (run make)");
    } else {
        spawn_ok = 1;
        task_ready = topics_task_create(dir, task_reason, sizeof task_reason) == 0;
    }
}

int main(void)
{
    TEST_SUITE("repl");
    RUN_TEST(fixtures_prepared);
    RUN_TEST(values_printed);
    RUN_TEST(incomplete_chunks);
    RUN_TEST(completions);
    RUN_TEST(session_basics);
    RUN_TEST(session_history_unwritable);
    RUN_TEST(session_jobs);
    RUN_TEST(stream_without_terminal);

    char command[1024];
    snprintf(command, sizeof command, "chmod -R u+w %s; rm -rf %s", dir, dir);
    if (system(command) != 0)
        printf("  could not remove %s\n", dir);
    TEST_MAIN_END();
}
