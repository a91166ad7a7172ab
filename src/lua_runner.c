#include "lua_runner.h"

#include <lauxlib.h>
#include <lualib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "interrupt.h"
#include "lua_caem.h"

static double monotonic_seconds(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static void host_progress(const struct job_status *status, void *data)
{
    struct lua_runner *r = data;
    progress_update(&r->progress, status, monotonic_seconds());
}

static int host_interrupted(void *data)
{
    struct lua_runner *r = data;
    int taken = interrupt_take();
    if (taken)
        r->interrupted = 1;
    return taken;
}

int lua_runner_interrupted(const struct lua_runner *r)
{
    return r->interrupted;
}

/* Turns the error value into a message, with a traceback when the closure's
 * upvalue is true. A non-string error value is described by its
 * __tostring or its type. */
static int message_handler(lua_State *L)
{
    const char *message = lua_tostring(L, 1);
    if (message == NULL) {
        if (luaL_callmeta(L, 1, "__tostring") && lua_type(L, -1) == LUA_TSTRING)
            message = lua_tostring(L, -1);
        else
            message = lua_pushfstring(L, "(error object is a %s value)", luaL_typename(L, 1));
    }
    if (lua_toboolean(L, lua_upvalueindex(1)))
        luaL_traceback(L, L, message, 1);
    else
        lua_pushstring(L, message);
    return 1;
}

/* print, with the runner (upvalue 2) drawing a progress line on the terminal
 * where stdout goes too: ends that line first, so that what a job callback
 * prints during a wait starts on a line of its own. Upvalue 1 is the
 * standard print. */
static int print_after_progress(lua_State *L)
{
    struct lua_runner *r = lua_touserdata(L, lua_upvalueindex(2));
    progress_finish(&r->progress);
    lua_pushvalue(L, lua_upvalueindex(1));
    lua_insert(L, 1);
    lua_call(L, lua_gettop(L) - 1, 0);
    return 0;
}

int lua_runner_call(struct lua_runner *r, int nargs, int nresults)
{
    lua_State *L = r->L;
    int handler = lua_gettop(L) - nargs;
    lua_pushboolean(L, r->traceback);
    lua_pushcclosure(L, message_handler, 1);
    lua_insert(L, handler);

    interrupt_set_lua(L, 0);
    int status = lua_pcall(L, nargs, nresults, handler);
    interrupt_set_lua(NULL, 0);

    lua_remove(L, handler);
    progress_finish(&r->progress);
    return status;
}

/* os.exit that stops the state's jobs and closes the state first, so that
 * no worker thread still computes while exit() runs the libraries'
 * destructors (OpenBLAS unmaps its buffers then). */
static int exit_after_jobs(lua_State *L)
{
    lua_caem_stop_jobs(L);
    lua_settop(L, 1);
    lua_pushvalue(L, lua_upvalueindex(1));
    lua_insert(L, 1);
    lua_pushboolean(L, 1);
    lua_call(L, 2, 0);
    return 0;
}

int lua_runner_open(struct lua_runner *r, int traceback, struct caem_error *err)
{
    memset(r, 0, sizeof *r);
    r->traceback = traceback;
    progress_init(&r->progress, stderr);
    lua_State *L = luaL_newstate();
    if (L == NULL)
        return caem_fail(err, "cannot create a Lua state: out of memory");
    r->L = L;
    luaL_openlibs(L);
    lua_getglobal(L, "os");
    lua_getfield(L, -1, "exit");
    lua_pushcclosure(L, exit_after_jobs, 1);
    lua_setfield(L, -2, "exit");
    lua_pop(L, 1);
    if (r->progress.terminal && isatty(STDOUT_FILENO)) {
        lua_getglobal(L, "print");
        lua_pushlightuserdata(L, r);
        lua_pushcclosure(L, print_after_progress, 2);
        lua_setglobal(L, "print");
    }

    /* require "caem" finds the module in package.preload */
    luaL_getsubtable(L, LUA_REGISTRYINDEX, LUA_PRELOAD_TABLE);
    lua_pushcfunction(L, luaopen_caem);
    lua_setfield(L, -2, "caem");
    lua_pop(L, 1);

    lua_getglobal(L, "require");
    lua_pushliteral(L, "caem");
    if (lua_runner_call(r, 1, 1) != LUA_OK) {
        caem_fail(err, "cannot load the caem module: %s", lua_tostring(L, -1));
        lua_close(L);
        r->L = NULL;
        return -1;
    }
    lua_setglobal(L, "caem");

    lua_runner_set_hooks(r);
    return 0;
}

void lua_runner_set_hooks(struct lua_runner *r)
{
    /* r stays at its address while the state lives: the hooks keep it */
    struct lua_caem_host host = { host_progress, host_interrupted, r };
    lua_caem_set_host(r->L, &host);
}

void lua_runner_close(struct lua_runner *r)
{
    if (r->L != NULL)
        lua_close(r->L);
    r->L = NULL;
    progress_finish(&r->progress);
}

void lua_runner_set_arg(lua_State *L, int argc, char *const *argv, int script)
{
    if (script < 0 || script >= argc)
        script = 0;
    lua_createtable(L, argc - script - 1, script + 1);
    for (int i = 0; i < argc; i++) {
        lua_pushstring(L, argv[i]);
        lua_rawseti(L, -2, (lua_Integer)i - script);
    }
    lua_setglobal(L, "arg");
}

int lua_runner_run_string(struct lua_runner *r, const char *chunk)
{
    int status = luaL_loadbuffer(r->L, chunk, strlen(chunk), "=(command line)");
    if (status == LUA_OK)
        status = lua_runner_call(r, 0, 0);
    return status;
}

int lua_runner_run_script(struct lua_runner *r, const char *path, int count,
                          char *const *args)
{
    lua_State *L = r->L;
    if (path != NULL && strcmp(path, "-") == 0)
        path = NULL;
    int status = luaL_loadfile(L, path);
    if (status != LUA_OK)
        return status;
    if (!lua_checkstack(L, count)) {
        lua_pop(L, 1);
        lua_pushfstring(L, "too many script arguments (%d)", count);
        return LUA_ERRMEM;
    }
    for (int i = 0; i < count; i++)
        lua_pushstring(L, args[i]);
    return lua_runner_call(r, count, 0);
}
