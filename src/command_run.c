/* caem run, caem -e and the plain REPL: Lua with the caem module. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "commands.h"
#include "interrupt.h"
#include "lua_caem.h"
#include "lua_runner.h"
#include "repl.h"
#include "screen.h"

static void print_run_usage(FILE *out)
{
    fputs("usage: caem run [-e CHUNK]... SCRIPT.lua [ARGS...]\n"
          "       caem -e CHUNK [-e CHUNK]... [SCRIPT.lua [ARGS...]]\n"
          "\n"
          "Runs Lua 5.4 chunks, then a script, without the screen. The caem module is\n"
          "loaded: require \"caem\", also the global caem. SCRIPT \"-\" reads the script\n"
          "from standard input. The script gets ARGS as its ... and in the table arg\n"
          "(arg[0] is the script, the words before it at negative indices), as the\n"
          "standalone lua interpreter passes them; every word after the script is\n"
          "the script's, common options included.\n"
          "\n"
          "What the script prints goes to stdout. While it waits for a job, the job's\n"
          "progress goes to stderr: one line redrawn in place on a terminal, at most\n"
          "one line per second otherwise. Ctrl-C stops the job being waited for (the\n"
          "wait raises the error \"interrupted\") or interrupts running Lua code\n"
          "(\"interrupted!\"). A second Ctrl-C within a second of one that nothing has\n"
          "acted on yet (a long call that does not check) ends the program. Jobs still\n"
          "running when the script ends are stopped.\n"
          "\n"
          "Exit status: 0 on success, 1 on a Lua error (the message and a traceback on\n"
          "stderr), 2 on a usage error.\n",
          out);
}

/* Prints "caem: " and the message (fmt with one %s for value) and returns
 * the exit status of a usage error. */
static int usage_error(const char *fmt, const char *value)
{
    fputs("caem: ", stderr);
    fprintf(stderr, fmt, value);
    fputs(" (see caem run --help)\n", stderr);
    return 2;
}

/* Prints the error message on top of the stack and pops it. */
static void report_lua_error(lua_State *L)
{
    const char *message = lua_tostring(L, -1);
    fprintf(stderr, "caem: %s\n", message != NULL ? message : "(error without a message)");
    lua_pop(L, 1);
}

/* Returns the index of the script in the full command line: the same
 * string, since taking out the common options moves the pointers only. */
static int script_index(const struct global_options *g, const char *script)
{
    for (int i = 1; i < g->all_argc; i++)
        if (g->all_argv[i] == script)
            return i;
    return 0;
}

static void stop_remaining_jobs(lua_State *L)
{
    int stopped = lua_caem_stop_jobs(L);
    if (stopped > 0)
        fprintf(stderr, "caem: stopped %d job%s still running at the end of the script\n",
                stopped, stopped == 1 ? "" : "s");
}

/* The scripts set their own seeds; a --seed here would do nothing. */
static int reject_seed(const struct global_options *g)
{
    if (!g->seed_given)
        return 0;
    return usage_error("%s does not apply to caem run, -e or the REPL: set the seeds in the "
                       "script (caem.model{seed = N}, model:train{seed = N})", "--seed");
}

int command_run(int argc, char **argv, const struct global_options *g)
{
    if (reject_seed(g) != 0)
        return 2;
    const char **chunks = calloc((size_t)argc, sizeof *chunks);
    if (chunks == NULL) {
        fprintf(stderr, "caem: out of memory\n");
        return 1;
    }
    int chunk_count = 0, i = 1;
    while (i < argc) {
        const char *a = argv[i];
        if (strcmp(a, "-e") == 0) {
            if (i + 1 >= argc) {
                free(chunks);
                return usage_error("missing chunk after %s", "-e");
            }
            chunks[chunk_count++] = argv[i + 1];
            i += 2;
        } else if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) {
            free(chunks);
            print_run_usage(stdout);
            return 0;
        } else if (strcmp(a, "--") == 0) {
            i++;
            break;
        } else if (a[0] == '-' && a[1] != '\0') {
            free(chunks);
            return usage_error("unknown option '%s'", a);
        } else {
            break;
        }
    }
    const char *script = i < argc ? argv[i] : NULL;
    if (script == NULL && chunk_count == 0) {
        free(chunks);
        return usage_error("missing script: caem run SCRIPT.lua [ARGS...], or %s to read "
                           "it from standard input", "-");
    }

    struct caem_error err;
    struct lua_runner runner;
    if (interrupt_install(INTERRUPT_SCRIPT, &err) != 0 ||
        lua_runner_open(&runner, 1, &err) != 0) {
        fprintf(stderr, "caem: %s\n", err.message);
        interrupt_uninstall();
        free(chunks);
        return 1;
    }
    lua_State *L = runner.L;
    lua_runner_set_arg(L, g->all_argc, g->all_argv,
                       script != NULL ? script_index(g, script) : 0);

    int status = LUA_OK;
    for (int k = 0; k < chunk_count && status == LUA_OK; k++)
        status = lua_runner_run_string(&runner, chunks[k]);
    if (status == LUA_OK && script != NULL)
        status = lua_runner_run_script(&runner, script, argc - i - 1, argv + i + 1);
    if (status != LUA_OK)
        report_lua_error(L);

    stop_remaining_jobs(L);
    int interrupted = lua_runner_interrupted(&runner);
    lua_runner_close(&runner);
    interrupt_uninstall();
    free(chunks);
    /* 130 = 128 + SIGINT, as a shell reports a program that Ctrl-C ended */
    if (status != LUA_OK && interrupted)
        return 130;
    return status == LUA_OK ? 0 : 1;
}

int command_repl(const struct global_options *g, int screen)
{
    if (reject_seed(g) != 0)
        return 2;
    struct caem_error err;
    struct lua_runner runner;
    if (interrupt_install(INTERRUPT_REPL, &err) != 0 ||
        lua_runner_open(&runner, g->verbose, &err) != 0) {
        fprintf(stderr, "caem: %s\n", err.message);
        interrupt_uninstall();
        return 1;
    }
    lua_runner_set_arg(runner.L, g->all_argc, g->all_argv, 0);
    int status = -1;
    if (screen && isatty(STDIN_FILENO) && isatty(STDOUT_FILENO)) {
        char why[256] = "";
        status = screen_run(&runner, why, sizeof why);
        if (status < 0)
            fprintf(stderr, "caem: the live screen cannot start (%s); the plain REPL instead\n",
                    why);
    }
    if (status < 0)
        status = repl_run(&runner);
    lua_runner_close(&runner);
    interrupt_uninstall();
    return status;
}
