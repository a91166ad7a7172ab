/* The caem Lua module, opened in a Lua state of this program from
 * build/libcaem.a: every script under tests/lua/ runs in a fresh state, and
 * each case a script registers with test(name, function) prints its own
 * result line, "ok   lua/SCRIPT/CASE" or "FAIL lua/SCRIPT/CASE". The tests
 * here check what a script cannot: the host's hooks, lua_caem_poll,
 * lua_caem_stop_jobs and lua_caem_running_jobs, closing a state with a job
 * running, and where the prelude comes from.
 *
 * The scripts get a table `fixture`: dir (a temporary directory with the
 * topics task of tests/topics_task.h in dir/topics/{train,validation,
 * test}.jsonl, of 96, 16 and 8 examples), spm (its SentencePiece model, nil when spm_train is missing),
 * root (the repository root) and caem (the built program, nil when absent). */
#include <dirent.h>
#include <lauxlib.h>
#include <lualib.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "lua_caem.h"
#include "backend.h"
#include "test.h"
#include "topics_task.h"

static char dir[64];
static char root[512];
static int have_spm;
static pthread_t main_thread;

/* ---- the topics task ---- */

static int run(const char *command)
{
    int rc = system(command);
    return rc == -1 || !WIFEXITED(rc) ? -1 : WEXITSTATUS(rc);
}

static void test_fixture_prepared(void)
{
    const char *env = getenv("CAEM_ROOT");
    snprintf(root, sizeof root, "%s", env != NULL ? env : ".");
    main_thread = pthread_self();
    strcpy(dir, "/tmp/caem_lua_XXXXXX");
    CHECK(mkdtemp(dir) != NULL);
    char path[256], reason[256];
    snprintf(path, sizeof path, "%s/topics", dir);
    CHECK(mkdir(path, 0700) == 0);
    CHECK(topics_write_split(dir, "train", 96, 1) == 0);
    CHECK(topics_write_split(dir, "validation", 16, 2) == 0);
    CHECK(topics_write_split(dir, "test", 8, 3) == 0);
    if (run("command -v spm_train >/dev/null 2>&1") != 0)
        SKIP("spm_train is not on the PATH (Debian package sentencepiece); the scripts "
             "skip what needs a tokenizer");
    CHECK_MSG(topics_vocabulary_create(dir, reason, sizeof reason) == 0, "%s", reason);
    snprintf(path, sizeof path, "%s/spm.model", dir);
    have_spm = access(path, R_OK) == 0;
    CHECK(have_spm);
}

/* ---- the host and the script helpers ---- */

struct host_counters {
    int progress_calls;
    int interrupt_calls;
    int interrupt_after; /* interrupted returns 1 on this call; 0: never */
    long last_step;
};

static struct host_counters counters;

static void host_progress(const struct job_status *status, void *data)
{
    struct host_counters *c = data;
    c->progress_calls++;
    c->last_step = status->report.step;
}

static int host_interrupted(void *data)
{
    struct host_counters *c = data;
    c->interrupt_calls++;
    return c->interrupt_after > 0 && c->interrupt_calls == c->interrupt_after;
}

/* host_interrupt_after(n): the n-th call of the interrupt hook from now on
 * returns 1 (0: never). */
static int lua_host_interrupt_after(lua_State *L)
{
    counters.interrupt_after = (int)luaL_checkinteger(L, 1);
    counters.interrupt_calls = 0;
    return 0;
}

/* host_counters() returns the hooks' call counts and the last step seen. */
static int lua_host_counters(lua_State *L)
{
    lua_createtable(L, 0, 3);
    lua_pushinteger(L, counters.progress_calls);
    lua_setfield(L, -2, "progress");
    lua_pushinteger(L, counters.interrupt_calls);
    lua_setfield(L, -2, "interrupted");
    lua_pushinteger(L, counters.last_step);
    lua_setfield(L, -2, "last_step");
    return 1;
}

static int lua_on_main_thread(lua_State *L)
{
    lua_pushboolean(L, pthread_equal(pthread_self(), main_thread));
    return 1;
}

/* Failures of the script being run. */
static int script_failures;
static char script_name[128];

/* test(name, fn) runs fn and prints its result line with the error and its
 * traceback on failure. */
static int lua_test(lua_State *L)
{
    const char *name = luaL_checkstring(L, 1);
    luaL_checktype(L, 2, LUA_TFUNCTION);
    lua_getglobal(L, "debug");
    lua_getfield(L, -1, "traceback");
    lua_remove(L, -2);
    lua_pushvalue(L, 2);
    if (lua_pcall(L, 0, 0, -2) == LUA_OK) {
        printf("ok   %s/%s/%s\n", test_suite_name, script_name, name);
    } else {
        printf("  %s\nFAIL %s/%s/%s\n", lua_tostring(L, -1), test_suite_name, script_name,
               name);
        script_failures++;
    }
    fflush(stdout);
    lua_settop(L, 0);
    return 0;
}

static int lua_skip(lua_State *L)
{
    printf("skip %s/%s/%s: %s\n", test_suite_name, script_name, luaL_checkstring(L, 1),
           luaL_checkstring(L, 2));
    return 0;
}

static void push_fixture(lua_State *L)
{
    char path[640];
    lua_createtable(L, 0, 4);
    lua_pushstring(L, dir);
    lua_setfield(L, -2, "dir");
    lua_pushstring(L, root);
    lua_setfield(L, -2, "root");
    if (have_spm) {
        snprintf(path, sizeof path, "%s/spm.model", dir);
        lua_pushstring(L, path);
        lua_setfield(L, -2, "spm");
    }
    snprintf(path, sizeof path, "%s/caem", root);
    if (access(path, X_OK) == 0) {
        lua_pushstring(L, path);
        lua_setfield(L, -2, "caem");
    }
    lua_setglobal(L, "fixture");
}

/* Helpers every script may use. expect_error(text, f, ...) calls f and
 * checks that it raises an error containing text, and returns the message.
 * capture() returns an object with write(...), for the out option of the
 * printing helpers, and text() to read what was written. */
static const char script_helpers[] =
    "function expect_error(text, f, ...)\n"
    "  local ok, message = pcall(f, ...)\n"
    "  assert(not ok, 'expected an error with \"' .. text .. '\", but the call succeeded')\n"
    "  message = tostring(message)\n"
    "  assert(message:find(text, 1, true),\n"
    "         'expected an error with \"' .. text .. '\", got: ' .. message)\n"
    "  return message\n"
    "end\n"
    "function capture()\n"
    "  local parts = {}\n"
    "  return {\n"
    "    write = function(self, ...)\n"
    "      for _, s in ipairs({ ... }) do parts[#parts + 1] = tostring(s) end\n"
    "    end,\n"
    "    text = function() return table.concat(parts) end,\n"
    "  }\n"
    "end\n";

/* A state with the standard libraries, the module as the global `caem`, the
 * host's hooks and the test helpers. */
static lua_State *state_open(void)
{
    lua_State *L = luaL_newstate();
    luaL_openlibs(L);
    luaL_requiref(L, "caem", luaopen_caem, 1);
    lua_pop(L, 1);
    memset(&counters, 0, sizeof counters);
    struct lua_caem_host host = { host_progress, host_interrupted, &counters };
    lua_caem_set_host(L, &host);
    lua_register(L, "test", lua_test);
    lua_register(L, "skip", lua_skip);
    lua_register(L, "host_interrupt_after", lua_host_interrupt_after);
    lua_register(L, "host_counters", lua_host_counters);
    lua_register(L, "on_main_thread", lua_on_main_thread);
    push_fixture(L);
    if (luaL_dostring(L, script_helpers) != LUA_OK)
        printf("  the script helpers do not load: %s\n", lua_tostring(L, -1));
    return L;
}

/* Runs tests/lua/NAME in a fresh state; a script that raises outside its
 * cases fails as a whole. */
static void run_script(const char *name)
{
    char path[768];
    snprintf(path, sizeof path, "%s/tests/lua/%s", root, name);
    snprintf(script_name, sizeof script_name, "%.*s", (int)(strlen(name) - 4), name);
    script_failures = 0;
    lua_State *L = state_open();
    if (luaL_dofile(L, path) != LUA_OK) {
        printf("  %s\nFAIL %s/%s\n", lua_tostring(L, -1), test_suite_name, script_name);
        script_failures++;
    }
    int running = lua_caem_running_jobs(L);
    if (running != 0) {
        printf("  %d jobs still running at the end\nFAIL %s/%s/no_jobs_left\n", running,
               test_suite_name, script_name);
        script_failures++;
    }
    lua_close(L);
    test_total_failed += script_failures;
}

static int compare_names(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* Runs every script; each case prints its own result line. */
static void run_scripts(void)
{
    char path[640];
    snprintf(path, sizeof path, "%s/tests/lua", root);
    DIR *d = opendir(path);
    if (d == NULL) {
        printf("FAIL %s/scripts: cannot open %s\n", test_suite_name, path);
        test_total_failed++;
        return;
    }
    char *names[64];
    int count = 0;
    struct dirent *entry;
    while ((entry = readdir(d)) != NULL && count < 64) {
        size_t length = strlen(entry->d_name);
        if (length > 4 && strcmp(entry->d_name + length - 4, ".lua") == 0)
            names[count++] = strdup(entry->d_name);
    }
    closedir(d);
    qsort(names, (size_t)count, sizeof names[0], compare_names);
    for (int i = 0; i < count; i++) {
#ifdef CAEM_TEST_DEVICE
        /* The study scenario trains fifteen models; under the CUDA emulation
         * that takes over ten minutes. Its steps (train, merge, evaluate,
         * checkpoints) run in the other scripts. */
        if (strcmp(names[i], "study.lua") == 0) {
            printf("skip %s/study: takes over ten minutes on the emulated GPU; train, merge "
                   "and evaluate run it in the other scripts\n",
                   test_suite_name);
            free(names[i]);
            continue;
        }
#endif
        run_script(names[i]);
        free(names[i]);
    }
}

/* ---- what the scripts cannot check ---- */

static int run_chunk(lua_State *L, const char *chunk)
{
    if (luaL_dostring(L, chunk) == LUA_OK)
        return 0;
    printf("  %s\n", lua_tostring(L, -1));
    lua_pop(L, 1);
    return -1;
}

/* 1 when the Lua expression is true. */
static int lua_true(lua_State *L, const char *expression)
{
    lua_pushfstring(L, "return %s", expression);
    int ok = luaL_dostring(L, lua_tostring(L, -1)) == LUA_OK && lua_toboolean(L, -1);
    lua_settop(L, 0);
    return ok;
}

static const char long_job[] =
    "tok = caem.tokenizer(fixture.spm)\n"
    "task = caem.task{name = 'topics', dir = fixture.dir, tokenizer = tok}\n"
    "model = caem.model{preset = 'tiny', tokenizer = tok}\n"
    "calls = 0\n"
    "job = model:train{task = task, steps = 100000, batch = 4, on_step = function(s)\n"
    "  calls = calls + 1\n"
    "  if fail then error('callback failed on purpose') end\n"
    "end}\n";

/* lua_caem_running_jobs counts a job until lua_caem_stop_jobs stops it and
 * lua_caem_poll releases it, which sets its model free. */
static void test_host_stops_and_polls(void)
{
    if (!have_spm)
        SKIP("no tokenizer (see fixture_prepared)");
    lua_State *L = state_open();
    CHECK(run_chunk(L, long_job) == 0);
    CHECK_INT_EQ(lua_caem_running_jobs(L), 1);
    CHECK(run_chunk(L, "assert(model.busy)") == 0);
    for (int i = 0; i < 3000 && !lua_true(L, "calls >= 2"); i++) {
        usleep(10000);
        lua_caem_poll(L);
    }
    CHECK(run_chunk(L, "assert(calls >= 2, 'on_step ran ' .. calls .. ' times')") == 0);
    CHECK_INT_EQ(lua_caem_stop_jobs(L), 1);
    for (int i = 0; i < 500 && lua_caem_running_jobs(L) > 0; i++)
        usleep(10000);
    CHECK_INT_EQ(lua_caem_running_jobs(L), 0);
    lua_caem_poll(L);
    CHECK(run_chunk(L, "assert(not model.busy); assert(job:status().state == 'stopped')") ==
          0);
    CHECK(run_chunk(L, "assert(model.step > 0 and model.step == job:result().step)") == 0);
    CHECK_INT_EQ(lua_caem_stop_jobs(L), 0);
    lua_close(L);
}

/* In lua_caem_poll a failing callback is reported on stderr with the job's
 * kind and removed, and the job goes on. */
static void test_poll_drops_failing_callback(void)
{
    if (!have_spm)
        SKIP("no tokenizer (see fixture_prepared)");
    lua_State *L = state_open();
    CHECK(run_chunk(L, long_job) == 0);
    CHECK(run_chunk(L, "fail = true") == 0);

    /* stderr goes to a file while the callback fails */
    char path[128];
    snprintf(path, sizeof path, "%s/stderr.txt", dir);
    fflush(stderr);
    int saved = dup(STDERR_FILENO);
    FILE *capture = fopen(path, "w+");
    CHECK(capture != NULL);
    CHECK(saved >= 0);
    if (capture == NULL || saved < 0)
        return;
    dup2(fileno(capture), STDERR_FILENO);
    for (int i = 0; i < 3000 && !lua_true(L, "calls >= 1"); i++) {
        usleep(10000);
        lua_caem_poll(L);
    }
    for (int i = 0; i < 5; i++) {
        usleep(10000);
        lua_caem_poll(L);
    }
    fflush(stderr);
    dup2(saved, STDERR_FILENO);
    close(saved);
    char text[1024] = "";
    rewind(capture);
    size_t length = fread(text, 1, sizeof text - 1, capture);
    text[length] = '\0';
    fclose(capture);
    CHECK_MSG(strstr(text, "caem: on_step callback of the train job failed at step") != NULL,
              "stderr: %s", text);
    CHECK_MSG(strstr(text, "callback failed on purpose") != NULL, "stderr: %s", text);
    CHECK(run_chunk(L, "assert(calls == 1, 'on_step ran ' .. calls .. ' times')") == 0);
    CHECK(run_chunk(L, "assert(job:status().state == 'running')") == 0);
    CHECK_INT_EQ(lua_caem_running_jobs(L), 1);
    lua_close(L);
}

/* Closing the state stops and joins a running job, its model and task
 * freed after it (the sanitizer run checks the memory). */
static void test_close_with_running_job(void)
{
    if (!have_spm)
        SKIP("no tokenizer (see fixture_prepared)");
    lua_State *L = state_open();
    CHECK(run_chunk(L, long_job) == 0);
    CHECK(run_chunk(L, "assert(not pcall(model.usage, model, {task = task}))") == 0);
    CHECK_INT_EQ(lua_caem_running_jobs(L), 1);
    lua_close(L);
}

static void write_text(const char *path, const char *text)
{
    FILE *f = fopen(path, "w");
    if (f == NULL)
        return;
    fputs(text, f);
    fclose(f);
}

static int open_module(lua_State *L)
{
    luaL_requiref(L, "caem", luaopen_caem, 1);
    return 1;
}

/* CAEM_LUA_PATH names the prelude's directory; a prelude that does not
 * load fails the require with its path. */
static void test_prelude_from_path(void)
{
    char prelude_dir[128], path[192];
    snprintf(prelude_dir, sizeof prelude_dir, "%s/prelude", dir);
    CHECK(mkdir(prelude_dir, 0700) == 0);
    snprintf(path, sizeof path, "%s/caem.lua", prelude_dir);
    write_text(path, "local caem = ...\ncaem.marker = 42\n");
    setenv("CAEM_LUA_PATH", prelude_dir, 1);
    lua_State *L = luaL_newstate();
    luaL_openlibs(L);
    lua_pushcfunction(L, open_module);
    CHECK(lua_pcall(L, 0, 1, 0) == LUA_OK);
    CHECK(run_chunk(L, "assert(caem.marker == 42); assert(caem.print_usage == nil)") == 0);
    CHECK(run_chunk(L, "assert(caem.prelude:find('prelude/caem.lua', 1, true))") == 0);
    lua_close(L);

    write_text(path, "this is not Lua\n");
    L = luaL_newstate();
    luaL_openlibs(L);
    lua_pushcfunction(L, open_module);
    CHECK(lua_pcall(L, 0, 1, 0) != LUA_OK);
    const char *message = lua_tostring(L, -1);
    CHECK_MSG(strstr(message, "prelude/caem.lua") != NULL, "%s", message);
    lua_close(L);
    unsetenv("CAEM_LUA_PATH");
    unlink(path);
    rmdir(prelude_dir);
}

/* Without CAEM_LUA_PATH and without lua/ beside this program, the copy
 * compiled in is the prelude, and it equals lua/caem.lua. */
extern const char lua_caem_prelude_start[];
extern const char lua_caem_prelude_end[];

static void test_prelude_embedded(void)
{
    lua_State *L = state_open();
    CHECK(run_chunk(L, "assert(caem.prelude == 'embedded', caem.prelude)") == 0);
    CHECK(run_chunk(L, "assert(type(caem.sweep) == 'function')") == 0);
    lua_close(L);

    char path[640];
    snprintf(path, sizeof path, "%s/lua/caem.lua", root);
    FILE *f = fopen(path, "rb");
    CHECK_MSG(f != NULL, "cannot open %s", path);
    if (f == NULL)
        return;
    static char text[1 << 16];
    size_t length = fread(text, 1, sizeof text, f);
    fclose(f);
    size_t embedded = (size_t)(lua_caem_prelude_end - lua_caem_prelude_start);
    CHECK_INT_EQ(embedded, length);
    if (embedded == length)
        CHECK(memcmp(text, lua_caem_prelude_start, length) == 0);
}

static void test_cleanup(void)
{
    char command[256];
    snprintf(command, sizeof command, "rm -rf '%s'", dir);
    CHECK_INT_EQ(run(command), 0);
}

int main(void)
{
    TEST_SUITE("lua");
#ifdef CAEM_TEST_DEVICE
    /* the build that runs every script's models on another backend */
    struct caem_error device_err;
    if (backend_set_default(CAEM_TEST_DEVICE, &device_err) != 0) {
        printf("  %s\n", device_err.message);
        return 1;
    }
#endif
    RUN_TEST(fixture_prepared);
    run_scripts();
    RUN_TEST(host_stops_and_polls);
    RUN_TEST(poll_drops_failing_callback);
    RUN_TEST(close_with_running_job);
    RUN_TEST(prelude_from_path);
    RUN_TEST(prelude_embedded);
    RUN_TEST(cleanup);
    TEST_MAIN_END();
}
