/* The caem Lua module and what a program embedding it must provide.
 *
 * luaopen_caem opens the module (require "caem"): the C bindings, with the
 * prelude lua/caem.lua run on top. The host (caem run, caem -e, the REPL,
 * the screen) sets hooks with lua_caem_set_host so that a script waiting for
 * a job shows progress its own way and Ctrl-C reaches the job. Every function
 * here runs on the thread that owns the Lua state. */
#ifndef CAEM_LUA_CAEM_H
#define CAEM_LUA_CAEM_H

#include <lua.h>

#include "checkpoint.h"
#include "error.h"
#include "job.h"
#include "usage.h"

/* Hooks of the program that runs the Lua state. */
struct lua_caem_host {
    /* Called while a script waits for a job, about ten times a second, with
     * the job's status; NULL for no progress output. */
    void (*progress)(const struct job_status *status, void *data);
    /* Returns 1 when the user asked to interrupt (Ctrl-C) since the last
     * call; the waiting job is then stopped. NULL: never. */
    int (*interrupted)(void *data);
    void *data;
};

/* Opens the module; for luaL_requiref or package.preload. */
int luaopen_caem(lua_State *L);

/* Stores the host's hooks in the state (copied). */
void lua_caem_set_host(lua_State *L, const struct lua_caem_host *host);

/* Runs the callbacks due for every live job (on this thread, as Lua
 * functions are). An error in a callback is printed on stderr with the
 * job's kind and the callback is dropped. For REPL idle time. */
void lua_caem_poll(lua_State *L);

/* Stops every running or paused job of the state; returns how many. */
int lua_caem_stop_jobs(lua_State *L);

/* Number of jobs of the state that have not ended. */
int lua_caem_running_jobs(lua_State *L);

/* ---- what the live screen follows ----
 * The watched job is the latest one started, or the one a script chose
 * (lua_caem_watch_set with "job"). The state keeps it and the latest merged
 * model by weak references, so neither is kept alive for the screen. */

/* Makes the value at index the watched "job" or the latest "merge". */
void lua_caem_watch_set(lua_State *L, const char *what, int index);

/* Copies the watched job's status; returns 0 when there is none. */
int lua_caem_watched_status(lua_State *L, struct job_status *status);

/* Copies the watched job's usage so far (a training job's train-split
 * usage since its start, an evaluation's once it finished) into `usage`,
 * which this call sets up. Returns 1, 0 when there is none, or -1 with err
 * set. */
int lua_caem_watched_usage(lua_State *L, struct usage_table *usage, struct caem_error *err);

enum lua_caem_control { LUA_CAEM_PAUSE, LUA_CAEM_RESUME, LUA_CAEM_STEP, LUA_CAEM_STOP };

/* Pauses, resumes, advances by one unit or stops the watched job, when it
 * has not ended. */
void lua_caem_control(lua_State *L, enum lua_caem_control control);

/* The state of the latest merged model still alive, or NULL. */
const struct checkpoint *lua_caem_last_merge(lua_State *L);

#endif
