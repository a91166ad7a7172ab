/* A Lua state for caem run, caem -e and the REPL. It has the standard
 * libraries and the caem module (require "caem", also the global `caem`).
 * Its host hooks print a waiting job's progress on stderr and pass Ctrl-C
 * on. Errors of its protected calls carry a traceback, as the standalone lua
 * interpreter prints it. */
#ifndef CAEM_LUA_RUNNER_H
#define CAEM_LUA_RUNNER_H

#include <lua.h>

#include "error.h"
#include "progress.h"

struct lua_runner {
    lua_State *L;
    struct progress progress; /* of jobs the script waits for, on stderr */
    int traceback;            /* errors of lua_runner_call carry a traceback */
    int interrupted;          /* a Ctrl-C stopped a job the script waited for */
};

/* 1 when a Ctrl-C stopped a job that the script waited for. */
int lua_runner_interrupted(const struct lua_runner *r);

/* Creates the state and loads the caem module into it. The caller installs
 * the SIGINT handler (interrupt.h) for Ctrl-C to reach the hooks. */
int lua_runner_open(struct lua_runner *r, int traceback, struct caem_error *err);

/* Sets the state's host hooks back to the runner's (progress on stderr,
 * Ctrl-C to the waiting job), as lua_runner_open set them. The screen calls
 * it when it ends, since it replaces them while it runs. */
void lua_runner_set_hooks(struct lua_runner *r);

/* Closes the state; jobs still running are stopped by their finalizers. */
void lua_runner_close(struct lua_runner *r);

/* Sets the global table `arg` as the standalone lua interpreter does: with
 * argv[script] at index 0, the arguments after it at 1, 2, ..., and the
 * words before it (the program, its options) at -1, -2, ... With script 0
 * (no script) argv[0] is at index 0 and every other word after it. */
void lua_runner_set_arg(lua_State *L, int argc, char *const *argv, int script);

/* Calls the function below the nargs arguments on the stack with the
 * message handler, with Ctrl-C able to interrupt it. Returns LUA_OK with
 * the results on the stack, or the error status with one message string in
 * their place (with a traceback when r->traceback is set and the error was
 * raised while running). Ends an open progress line either way. */
int lua_runner_call(struct lua_runner *r, int nargs, int nresults);

/* Loads a chunk from a string (chunk name "=(command line)") and calls it
 * with no arguments. Returns as lua_runner_call does, with nothing on the
 * stack on success. */
int lua_runner_run_string(struct lua_runner *r, const char *chunk);

/* Loads a script (NULL or "-": standard input) and calls it with args[0..count-1]
 * as its `...`. Returns as lua_runner_call does, with nothing on the stack
 * on success. A script that cannot be read is an error status with the
 * message on the stack. */
int lua_runner_run_script(struct lua_runner *r, const char *path, int count,
                          char *const *args);

#endif
