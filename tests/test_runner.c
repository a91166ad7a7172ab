/* The headless Lua runner. In this process: the progress lines (their text,
 * at most one line per second off a terminal, one line redrawn on a
 * terminal), the arg table, errors with tracebacks, and Ctrl-C. Then caem
 * run and caem -e through the built program: `...` and arg, exit statuses,
 * chunks in order, and a script on standard input. With a training job on
 * the topics task, the progress lines on stderr, and Ctrl-C stopping the
 * job that the script waits for.
 *
 * The sanitizer variant skips the tests that start the program, because
 * they run the same normal build of caem. */
#include <fcntl.h>
#include <lauxlib.h>
#include <math.h>
#include <pthread.h>
#include <pty.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <termios.h>
#include <time.h>
#include <unistd.h>

#include "interrupt.h"
#include "lua_runner.h"
#include "progress.h"
#include "test.h"
#include "topics_task.h"

static char dir[] = "/tmp/caem_runner_XXXXXX";
static char caem[1024];
static int spawn_ok; /* the program is built and this is not the sanitizer run */
static char spawn_why[256];
static char task_reason[256];
static int task_ready;

static double now_seconds(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static void write_file(const char *name, const char *text)
{
    char path[1024];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    FILE *f = fopen(path, "w");
    if (f != NULL) {
        fputs(text, f);
        fclose(f);
    }
}

static void read_file(const char *name, char *buffer, size_t size)
{
    char path[1024];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    FILE *f = fopen(path, "r");
    size_t n = f != NULL ? fread(buffer, 1, size - 1, f) : 0;
    buffer[n] = '\0';
    if (f != NULL)
        fclose(f);
}

static struct job_status train_status(long step, long steps, double loss, double tps,
                                      double eta)
{
    struct job_status s;
    memset(&s, 0, sizeof s);
    s.state = JOB_RUNNING;
    snprintf(s.kind, sizeof s.kind, "train");
    s.report.step = step;
    s.report.steps = steps;
    s.report.loss = loss;
    s.report.cross_entropy = NAN;
    s.report.validation_loss = NAN;
    s.report.tokens_per_second = tps;
    s.report.eta = eta;
    return s;
}

/* ---- progress ---- */

static void test_progress_text(void)
{
    char text[256];
    struct job_status s = train_status(120, 1200, 2.31415, 1830.4, 252);
    progress_format(&s, text, sizeof text);
    CHECK_MSG(strcmp(text, "step 120/1200  loss 2.3142  1830 tokens/s  ETA 4m12s") == 0,
              "got '%s'", text);

    s = train_status(0, 1200, NAN, 0, NAN);
    progress_format(&s, text, sizeof text);
    CHECK_MSG(strcmp(text, "step 0/1200  ETA -") == 0, "got '%s'", text);

    s = train_status(3, 10, 1.5, 100, 7);
    s.state = JOB_PAUSED;
    progress_format(&s, text, sizeof text);
    CHECK_MSG(strcmp(text, "step 3/10  loss 1.5000  100 tokens/s  ETA 0m07s  (paused)") == 0,
              "got '%s'", text);

    s = train_status(1200, 1200, 0.41214, 1830, 0);
    s.state = JOB_FINISHED;
    s.elapsed = 91;
    progress_format(&s, text, sizeof text);
    CHECK_MSG(strcmp(text, "train finished: step 1200/1200  loss 0.4121  1830 tokens/s  "
                           "in 1m31s") == 0, "got '%s'", text);

    s.state = JOB_FAILED;
    snprintf(s.message, sizeof s.message, "the loss is not finite");
    progress_format(&s, text, sizeof text);
    CHECK_MSG(strcmp(text, "train failed: step 1200/1200  loss 0.4121: the loss is not "
                           "finite") == 0, "got '%s'", text);

    s = train_status(40, 214, NAN, 0, 3.2);
    snprintf(s.kind, sizeof s.kind, "evaluate");
    progress_format(&s, text, sizeof text);
    CHECK_MSG(strcmp(text, "evaluate 40/214  ETA 0m03s") == 0, "got '%s'", text);

    progress_format_duration(3 * 3600 + 125, text, sizeof text);
    CHECK_MSG(strcmp(text, "3h02m") == 0, "got '%s'", text);
    progress_format_duration(-1, text, sizeof text);
    CHECK_MSG(strcmp(text, "-") == 0, "got '%s'", text);
}

static int count_lines(const char *text, const char *prefix)
{
    int count = 0;
    size_t n = strlen(prefix);
    for (const char *line = text; *line != '\0';) {
        if (strncmp(line, prefix, n) == 0)
            count++;
        const char *end = strchr(line, '\n');
        if (end == NULL)
            break;
        line = end + 1;
    }
    return count;
}

static void test_progress_one_line_per_second(void)
{
    char *text = NULL;
    size_t size = 0;
    FILE *out = open_memstream(&text, &size);
    struct progress p;
    progress_init(&p, out);
    CHECK_INT_EQ(p.terminal, 0);

    /* ten calls a second for three seconds: lines at 0, 1, 2 and 3 s */
    for (int i = 0; i <= 24; i++) {
        struct job_status s = train_status(i, 100, 3.0 - i * 0.01, 500, 100 - i);
        progress_update(&p, &s, 50.0 + i * 0.125);
    }
    struct job_status end = train_status(24, 24, 2.5, 500, 0);
    end.state = JOB_STOPPED;
    progress_update(&p, &end, 53.2);
    progress_update(&p, &end, 53.3); /* the end is reported once */
    fclose(out);

    CHECK_MSG(count_lines(text, "step ") == 4, "output:\n%s", text);
    CHECK(strncmp(text, "step 0/100  loss 3.0000", 23) == 0);
    CHECK(strstr(text, "\nstep 8/100  loss 2.9200") != NULL);
    CHECK(strstr(text, "\nstep 24/100  loss 2.7600") != NULL);
    CHECK_INT_EQ(count_lines(text, "train stopped: step 24/24"), 1);
    CHECK(strchr(text, '\r') == NULL);
    free(text);
}

static void test_progress_terminal_line(void)
{
    int master, slave;
    if (openpty(&master, &slave, NULL, NULL, NULL) != 0)
        SKIP("openpty failed");
    struct termios raw;
    tcgetattr(slave, &raw);
    raw.c_oflag &= ~(tcflag_t)OPOST; /* no \n to \r\n, to see the bytes written */
    tcsetattr(slave, TCSANOW, &raw);
    setenv("COLUMNS", "80", 1);
    FILE *out = fdopen(slave, "w");
    struct progress p;
    progress_init(&p, out);
    CHECK_INT_EQ(p.terminal, 1);
    CHECK_INT_EQ(p.width, 80);

    struct job_status s = train_status(10, 100, 2.0, 900, 90);
    progress_update(&p, &s, 10.0);
    s.report.step = 11;
    progress_update(&p, &s, 10.1); /* too soon: skipped */
    s.report.step = 50;
    progress_update(&p, &s, 10.3);
    s.report.step = 100;
    s.state = JOB_FINISHED;
    progress_update(&p, &s, 10.4);
    fclose(out);
    unsetenv("COLUMNS");

    /* the slave is closed, so read returns what is left, then fails */
    char text[4096];
    size_t length = 0;
    ssize_t n;
    while (length + 1 < sizeof text &&
           (n = read(master, text + length, sizeof text - 1 - length)) > 0)
        length += (size_t)n;
    text[length] = '\0';
    close(master);

    /* three redraws, each a carriage return and at most 79 columns, then a
     * newline after the end */
    int redraws = 0;
    size_t longest = 0;
    for (char *line = strtok(text, "\r"); line != NULL; line = strtok(NULL, "\r")) {
        redraws++;
        size_t columns = strcspn(line, "\n");
        if (columns > longest)
            longest = columns;
        if (redraws == 1)
            CHECK_MSG(strncmp(line, "[###.......", 11) == 0, "first line '%s'", line);
        if (redraws == 2)
            CHECK_MSG(strstr(line, "] step 50/100  loss 2.0000") != NULL, "line '%s'", line);
        if (redraws == 3) {
            CHECK_MSG(strstr(line, "train finished: step 100/100") != NULL, "'%s'", line);
            CHECK_MSG(strcmp(line + strlen(line) - 1, "\n") == 0, "no newline: '%s'", line);
        }
    }
    CHECK_INT_EQ(redraws, 3);
    CHECK_MSG(longest <= 79, "a line of %zu columns", longest);
}

/* ---- the runner in this process ---- */

static void test_arg_table_indices(void)
{
    char *argv[] = { "caem", "--threads", "1", "run", "s.lua", "a", "--seed", NULL };
    lua_State *L = luaL_newstate();
    lua_runner_set_arg(L, 7, argv, 4);
    CHECK_INT_EQ(lua_getglobal(L, "arg"), LUA_TTABLE);
    static const struct { int index; const char *value; } expected[] = {
        { -4, "caem" }, { -3, "--threads" }, { -2, "1" }, { -1, "run" },
        { 0, "s.lua" }, { 1, "a" }, { 2, "--seed" },
    };
    for (size_t i = 0; i < sizeof expected / sizeof expected[0]; i++) {
        lua_rawgeti(L, -1, expected[i].index);
        const char *value = lua_tostring(L, -1);
        CHECK_MSG(value != NULL && strcmp(value, expected[i].value) == 0, "arg[%d] is %s",
                  expected[i].index, value != NULL ? value : "nil");
        lua_pop(L, 1);
    }
    CHECK_INT_EQ(luaL_len(L, -1), 2);
    CHECK_INT_EQ(lua_rawgeti(L, -1, -5), LUA_TNIL);

    /* no script: the program at 0, every word after it from 1 */
    lua_runner_set_arg(L, 3, argv, 0);
    lua_getglobal(L, "arg");
    lua_rawgeti(L, -1, 0);
    CHECK(strcmp(lua_tostring(L, -1), "caem") == 0);
    lua_rawgeti(L, -2, 2);
    CHECK(strcmp(lua_tostring(L, -1), "1") == 0);
    lua_close(L);
}

static void test_runner_errors(void)
{
    struct lua_runner r;
    struct caem_error err;
    if (lua_runner_open(&r, 1, &err) != 0) {
        CHECK_MSG(0, "%s", err.message);
        return;
    }
    CHECK_INT_EQ(lua_gettop(r.L), 0);
    CHECK_INT_EQ(lua_getglobal(r.L, "caem"), LUA_TTABLE);
    lua_pop(r.L, 1);

    int status = lua_runner_run_string(&r, "local function fail_here() error('boom') end\n"
                                           "fail_here()");
    CHECK_INT_EQ(status, LUA_ERRRUN);
    const char *message = lua_tostring(r.L, -1);
    CHECK_MSG(strncmp(message, "(command line):1: boom\nstack traceback:", 39) == 0, "%s",
              message);
    CHECK(strstr(message, "in local 'fail_here'") != NULL);
    lua_pop(r.L, 1);

    /* a syntax error has no traceback */
    status = lua_runner_run_string(&r, "x = = 1");
    CHECK_INT_EQ(status, LUA_ERRSYNTAX);
    CHECK(strstr(lua_tostring(r.L, -1), "stack traceback") == NULL);
    lua_pop(r.L, 1);

    /* without tracebacks, and an error value that is not a string */
    r.traceback = 0;
    status = lua_runner_run_string(&r, "error(setmetatable({}, {__tostring = function() "
                                       "return 'custom' end}))");
    CHECK_INT_EQ(status, LUA_ERRRUN);
    CHECK_MSG(strcmp(lua_tostring(r.L, -1), "custom") == 0, "%s", lua_tostring(r.L, -1));
    lua_pop(r.L, 1);
    status = lua_runner_run_string(&r, "error({})");
    CHECK_MSG(strcmp(lua_tostring(r.L, -1), "(error object is a table value)") == 0, "%s",
              lua_tostring(r.L, -1));
    lua_pop(r.L, 1);
    CHECK_INT_EQ(lua_gettop(r.L), 0);
    lua_runner_close(&r);
}

static void test_runner_script_arguments(void)
{
    write_file("dots.lua", "got = table.pack(...)\nreturn 'ignored'\n");
    char path[1024];
    snprintf(path, sizeof path, "%s/dots.lua", dir);
    struct lua_runner r;
    struct caem_error err;
    if (lua_runner_open(&r, 1, &err) != 0) {
        CHECK_MSG(0, "%s", err.message);
        return;
    }
    char *args[] = { "one", "", "three" };
    CHECK_INT_EQ(lua_runner_run_script(&r, path, 3, args), LUA_OK);
    CHECK_INT_EQ(lua_gettop(r.L), 0);
    CHECK_INT_EQ(lua_getglobal(r.L, "got"), LUA_TTABLE);
    lua_getfield(r.L, -1, "n");
    CHECK_INT_EQ(lua_tointeger(r.L, -1), 3);
    lua_rawgeti(r.L, -2, 3);
    CHECK(strcmp(lua_tostring(r.L, -1), "three") == 0);
    lua_settop(r.L, 0);

    snprintf(path, sizeof path, "%s/missing.lua", dir);
    CHECK_INT_EQ(lua_runner_run_script(&r, path, 0, NULL), LUA_ERRFILE);
    CHECK(strstr(lua_tostring(r.L, -1), "cannot open") != NULL);
    lua_runner_close(&r);
}

static void *send_sigint_later(void *arg)
{
    struct timespec ts = { 0, 200 * 1000000L };
    (void)arg;
    nanosleep(&ts, NULL);
    kill(getpid(), SIGINT); /* may land on any thread; the handler passes it on */
    return NULL;
}

static void test_runner_ctrl_c(void)
{
    struct lua_runner r;
    struct caem_error err;
    CHECK(interrupt_install(INTERRUPT_REPL, &err) == 0);
    if (lua_runner_open(&r, 0, &err) != 0) {
        CHECK_MSG(0, "%s", err.message);
        interrupt_uninstall();
        return;
    }
    /* pure Lua code stops with "interrupted!" */
    pthread_t thread;
    pthread_create(&thread, NULL, send_sigint_later, NULL);
    double start = now_seconds();
    int status = lua_runner_run_string(&r, "while true do end");
    double elapsed = now_seconds() - start;
    pthread_join(thread, NULL);
    CHECK_INT_EQ(status, LUA_ERRRUN);
    CHECK_MSG(strstr(lua_tostring(r.L, -1), "interrupted!") != NULL, "%s",
              lua_tostring(r.L, -1));
    CHECK_MSG(elapsed < 5.0, "took %.1f s", elapsed);
    CHECK_INT_EQ(interrupt_pending(), 0);
    lua_pop(r.L, 1);

    /* the state works afterwards, and a pcall can catch the interruption */
    pthread_create(&thread, NULL, send_sigint_later, NULL);
    status = lua_runner_run_string(&r, "ok, why = pcall(function() while true do end end)");
    pthread_join(thread, NULL);
    CHECK_INT_EQ(status, LUA_OK);
    lua_getglobal(r.L, "why");
    CHECK(strstr(lua_tostring(r.L, -1), "interrupted!") != NULL);
    lua_pop(r.L, 1);

    /* outside Lua code, Ctrl-C only sets the flag that the host hook takes */
    raise(SIGINT);
    CHECK_INT_EQ(interrupt_pending(), 1);
    CHECK_INT_EQ(interrupt_take(), 1);
    CHECK_INT_EQ(interrupt_take(), 0);
    lua_runner_close(&r);
    interrupt_uninstall();
}

/* ---- caem run and caem -e ---- */

struct run {
    int status;
    double seconds;
    char out[8192];
    char err[8192];
};

/* Runs caem with the words of argv (NULL-terminated, without the program),
 * standard input from the file `input` (NULL: /dev/null), and, when
 * interrupt_after > 0, SIGINT that many seconds after the start. */
static void run_caem(char *const *argv, const char *input, double interrupt_after,
                     struct run *r)
{
    char out_path[1024], err_path[1024], in_path[1024];
    snprintf(out_path, sizeof out_path, "%s/out.txt", dir);
    snprintf(err_path, sizeof err_path, "%s/err.txt", dir);
    snprintf(in_path, sizeof in_path, "%s/%s", dir, input != NULL ? input : "");
    char *words[64];
    int n = 0;
    words[n++] = caem;
    while (argv[n - 1] != NULL && n < 63) {
        words[n] = argv[n - 1];
        n++;
    }
    words[n] = NULL;

    fflush(stdout);
    double start = now_seconds();
    pid_t pid = fork();
    if (pid == 0) {
        int in = open(input != NULL ? in_path : "/dev/null", O_RDONLY);
        int out = open(out_path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
        int err = open(err_path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
        dup2(in, 0);
        dup2(out, 1);
        dup2(err, 2);
        execv(caem, words);
        _exit(127);
    }
    if (interrupt_after > 0) {
        struct timespec ts = { (time_t)interrupt_after,
                               (long)((interrupt_after - (time_t)interrupt_after) * 1e9) };
        nanosleep(&ts, NULL);
        kill(pid, SIGINT);
    }
    int wstatus;
    waitpid(pid, &wstatus, 0);
    r->seconds = now_seconds() - start;
    r->status = WIFEXITED(wstatus) ? WEXITSTATUS(wstatus) : 128 + WTERMSIG(wstatus);
    read_file("out.txt", r->out, sizeof r->out);
    read_file("err.txt", r->err, sizeof r->err);
}

static void test_run_arguments(void)
{
    if (!spawn_ok)
        SKIP("%s", spawn_why);
    write_file("args.lua", "print('dots', ...)\n"
                           "print('n', #arg, select('#', ...))\n"
                           "for i = -3, #arg do print(i, arg[i]) end\n");
    char script[1024];
    snprintf(script, sizeof script, "%s/args.lua", dir);
    char *argv[] = { "--threads", "1", "run", script, "a b", "--seed", "7", NULL };
    struct run r;
    run_caem(argv, NULL, 0, &r);
    CHECK_INT_EQ(r.status, 0);
    char expected[4096];
    snprintf(expected, sizeof expected,
             "dots\ta b\t--seed\t7\n"
             "n\t3\t3\n"
             "-3\t--threads\n-2\t1\n-1\trun\n0\t%s\n1\ta b\n2\t--seed\n3\t7\n", script);
    CHECK_MSG(strcmp(r.out, expected) == 0, "stdout:\n%s\nstderr:\n%s", r.out, r.err);
    CHECK_MSG(r.err[0] == '\0', "stderr: %s", r.err);
}

static void test_run_exit_status(void)
{
    if (!spawn_ok)
        SKIP("%s", spawn_why);
    write_file("ok.lua", "print('fine')\n");
    write_file("fails.lua", "local function fail_here()\n  error('boom')\nend\n"
                            "print('before')\nfail_here()\nprint('after')\n");
    write_file("syntax.lua", "x = = 1\n");
    char ok[1024], fails[1024], syntax[1024], missing[1024];
    snprintf(ok, sizeof ok, "%s/ok.lua", dir);
    snprintf(fails, sizeof fails, "%s/fails.lua", dir);
    snprintf(syntax, sizeof syntax, "%s/syntax.lua", dir);
    snprintf(missing, sizeof missing, "%s/missing.lua", dir);
    struct run r;

    char *run_ok[] = { "run", ok, NULL };
    run_caem(run_ok, NULL, 0, &r);
    CHECK_INT_EQ(r.status, 0);
    CHECK(strcmp(r.out, "fine\n") == 0);

    char *run_fails[] = { "run", fails, NULL };
    run_caem(run_fails, NULL, 0, &r);
    CHECK_INT_EQ(r.status, 1);
    CHECK(strcmp(r.out, "before\n") == 0);
    char expected[2048];
    snprintf(expected, sizeof expected, "caem: %s:2: boom\nstack traceback:\n", fails);
    CHECK_MSG(strncmp(r.err, expected, strlen(expected)) == 0, "stderr:\n%s", r.err);
    CHECK_MSG(strstr(r.err, ":5: in main chunk") != NULL, "stderr:\n%s", r.err);
    CHECK(strstr(r.err, "in local 'fail_here'") != NULL ||
          strstr(r.err, "in upvalue 'fail_here'") != NULL);

    char *run_syntax[] = { "run", syntax, NULL };
    run_caem(run_syntax, NULL, 0, &r);
    CHECK_INT_EQ(r.status, 1);
    CHECK_MSG(strstr(r.err, "syntax.lua:1:") != NULL, "stderr:\n%s", r.err);

    char *run_missing[] = { "run", missing, NULL };
    run_caem(run_missing, NULL, 0, &r);
    CHECK_INT_EQ(r.status, 1);
    CHECK_MSG(strstr(r.err, "cannot open") != NULL, "stderr:\n%s", r.err);

    char *no_script[] = { "run", NULL };
    run_caem(no_script, NULL, 0, &r);
    CHECK_INT_EQ(r.status, 2);
    CHECK_MSG(strstr(r.err, "missing script") != NULL, "stderr:\n%s", r.err);

    char *bad_option[] = { "run", "--frobnicate", ok, NULL };
    run_caem(bad_option, NULL, 0, &r);
    CHECK_INT_EQ(r.status, 2);
    CHECK_MSG(strstr(r.err, "--frobnicate") != NULL, "stderr:\n%s", r.err);

    char *missing_chunk[] = { "-e", NULL };
    run_caem(missing_chunk, NULL, 0, &r);
    CHECK_INT_EQ(r.status, 2);

    char *exit_call[] = { "-e", "os.exit(5)", NULL };
    run_caem(exit_call, NULL, 0, &r);
    CHECK_INT_EQ(r.status, 5);
}

static void test_chunks_then_script(void)
{
    if (!spawn_ok)
        SKIP("%s", spawn_why);
    write_file("show.lua", "print(x, ...)\n");
    char script[1024];
    snprintf(script, sizeof script, "%s/show.lua", dir);
    struct run r;
    char *chunks[] = { "-e", "x = 2", "-e", "x = x * 10", "--verbose", script, "z", NULL };
    run_caem(chunks, NULL, 0, &r);
    CHECK_INT_EQ(r.status, 0);
    CHECK_MSG(strcmp(r.out, "20\tz\n") == 0, "stdout: %s\nstderr: %s", r.out, r.err);

    /* a failing chunk stops the ones after it */
    char *failing[] = { "-e", "print(1)", "-e", "error('second')", "-e", "print(3)", NULL };
    run_caem(failing, NULL, 0, &r);
    CHECK_INT_EQ(r.status, 1);
    CHECK(strcmp(r.out, "1\n") == 0);
    CHECK_MSG(strncmp(r.err, "caem: (command line):1: second", 30) == 0, "%s", r.err);

    /* without a script, arg[0] is the program, as with lua -e */
    char *alone[] = { "-e", "print(arg[0] == arg[-1], arg[1], caem ~= nil)", NULL };
    run_caem(alone, NULL, 0, &r);
    CHECK_MSG(strcmp(r.out, "false\t-e\ttrue\n") == 0, "stdout: %s\nstderr: %s", r.out,
              r.err);
}

static void test_script_from_stdin(void)
{
    if (!spawn_ok)
        SKIP("%s", spawn_why);
    write_file("input.lua", "local caem = require 'caem'\n"
                            "print(arg[0], type(caem), ...)\n");
    struct run r;
    char *argv[] = { "run", "-", "p", "q", NULL };
    run_caem(argv, "input.lua", 0, &r);
    CHECK_INT_EQ(r.status, 0);
    CHECK_MSG(strcmp(r.out, "-\ttable\tp\tq\n") == 0, "stdout: %s\nstderr: %s", r.out, r.err);
}

/* The Lua lines that load the topics task and a new tiny model. */
static void task_prelude(char *out, size_t size)
{
    snprintf(out, size,
             "local caem = require 'caem'\n"
             "local tok = caem.tokenizer('%s/spm.model')\n"
             "local task = caem.task{name = 'topics', dir = '%s', tokenizer = tok}\n"
             "local model = caem.model{preset = 'tiny', vocab_size = 512, seed = 1}\n", dir,
             dir);
}

static void test_progress_lines_on_stderr(void)
{
    if (!spawn_ok)
        SKIP("%s", spawn_why);
    if (!task_ready)
        SKIP("%s", task_reason);
    /* trains for two to three seconds, then stops from the callback */
    char script[4096];
    task_prelude(script, sizeof script);
    strcat(script, "local job\n"
                   "local t0 = os.time()\n"
                   "job = model:train{task = task, steps = 100000, batch = 4, every = 1,\n"
                   "  on_step = function() if os.time() - t0 >= 3 then job:stop() end end}\n"
                   "job:wait()\n"
                   "print('state', job:status().state)\n");
    write_file("progress.lua", script);
    char path[1024];
    snprintf(path, sizeof path, "%s/progress.lua", dir);
    char *argv[] = { "--threads", "1", "run", path, NULL };
    struct run r;
    run_caem(argv, NULL, 0, &r);
    CHECK_MSG(r.status == 0, "status %d, stderr:\n%s", r.status, r.err);
    CHECK_MSG(strcmp(r.out, "state\tstopped\n") == 0, "stdout: %s", r.out);
    int lines = count_lines(r.err, "step ");
    CHECK_MSG(lines >= 2, "%d progress lines in %.1f s:\n%s", lines, r.seconds, r.err);
    CHECK_MSG(lines <= (int)r.seconds + 1, "%d progress lines in %.1f s:\n%s", lines,
              r.seconds, r.err);
    CHECK(strchr(r.err, '\r') == NULL);
    CHECK_MSG(strstr(r.err, "tokens/s  ETA ") != NULL, "stderr:\n%s", r.err);
}

static void test_ctrl_c_stops_waited_job(void)
{
    if (!spawn_ok)
        SKIP("%s", spawn_why);
    if (!task_ready)
        SKIP("%s", task_reason);
    char script[4096];
    task_prelude(script, sizeof script);
    strcat(script, "local job = model:train{task = task, steps = 100000, batch = 4}\n"
                   "print('waiting')\n"
                   "local ok, why = pcall(job.wait, job)\n"
                   "print('caught', ok, tostring(why):find('interrupted') ~= nil)\n"
                   "job:wait()\n"
                   "print('state', job:status().state)\n");
    write_file("interrupt.lua", script);
    char path[1024];
    snprintf(path, sizeof path, "%s/interrupt.lua", dir);
    char *argv[] = { "--threads", "1", "run", path, NULL };
    struct run r;
    run_caem(argv, NULL, 1.5, &r);
    /* the pcall catches the interruption; the job has stopped, so the
     * second wait returns at once and the script ends normally */
    CHECK_MSG(r.status == 0, "status %d, stderr:\n%s", r.status, r.err);
    CHECK_MSG(strcmp(r.out, "waiting\ncaught\tfalse\ttrue\nstate\tstopped\n") == 0,
              "stdout: %s\n"
              "stderr: %s", r.out, r.err);
    CHECK_MSG(r.seconds < 1.5 + 5.0, "took %.1f s", r.seconds);

    /* without the pcall, the error ends the script with status 130, as a
     * shell reports a program that Ctrl-C ended */
    task_prelude(script, sizeof script);
    strcat(script, "model:train{task = task, steps = 100000, batch = 4}:wait()\n");
    write_file("interrupt.lua", script);
    run_caem(argv, NULL, 1.5, &r);
    CHECK_INT_EQ(r.status, 130);
    CHECK_MSG(strstr(r.err, "interrupted") != NULL, "stderr:\n%s", r.err);
    CHECK_MSG(strstr(r.err, "stack traceback:") != NULL, "stderr:\n%s", r.err);
}

/* os.exit while a job computes stops the job first: the exit status is the
 * script's, not a crash in a library's exit handler under a running job. */
static void test_exit_with_running_job(void)
{
    if (!spawn_ok)
        SKIP("%s", spawn_why);
    if (!task_ready)
        SKIP("%s", task_reason);
    char script[4096];
    task_prelude(script, sizeof script);
    strcat(script, "local job = model:train{task = task, steps = 100000, batch = 4}\n"
                   "local t = os.clock() while os.clock() - t < 0.5 do end\n"
                   "os.exit(5)\n");
    write_file("exit.lua", script);
    char path[1024];
    snprintf(path, sizeof path, "%s/exit.lua", dir);
    char *argv[] = { "--threads", "2", "run", path, NULL };
    for (int i = 0; i < 3; i++) {
        struct run r;
        run_caem(argv, NULL, -1.0, &r);
        CHECK_MSG(r.status == 5, "run %d: status %d, stderr:\n%s", i + 1, r.status, r.err);
    }
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
    TEST_SUITE("runner");
    RUN_TEST(fixtures_prepared);
    RUN_TEST(progress_text);
    RUN_TEST(progress_one_line_per_second);
    RUN_TEST(progress_terminal_line);
    RUN_TEST(arg_table_indices);
    RUN_TEST(runner_errors);
    RUN_TEST(runner_script_arguments);
    RUN_TEST(runner_ctrl_c);
    RUN_TEST(run_arguments);
    RUN_TEST(run_exit_status);
    RUN_TEST(chunks_then_script);
    RUN_TEST(script_from_stdin);
    RUN_TEST(progress_lines_on_stderr);
    RUN_TEST(ctrl_c_stops_waited_job);
    RUN_TEST(exit_with_running_job);

    char command[1024];
    snprintf(command, sizeof command, "rm -rf %s", dir);
    if (system(command) != 0)
        printf("  could not remove %s\n", dir);
    TEST_MAIN_END();
}
