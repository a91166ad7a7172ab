/* The caem Lua module: luaopen_caem, the host's hooks, the functions of
 * lua_caem.h and the module's config functions. */
#include <stdio.h>
#include <string.h>

#include "backend.h"
#include "config.h"
#include "lua_caem.h"
#ifdef CAEM_HAVE_CUDA
#include "backend_cuda.h"
#endif
#include "lua_internal.h"

/* NOTE: the same version as CAEM_VERSION in main.c; tests/lua/module.lua
 * compares the two when the program is built. */
#define MODULE_VERSION "0.1.0"

/* caem.presets() lists the preset names. */
static int caem_presets(lua_State *L)
{
    const char *names = config_preset_names();
    lua_newtable(L);
    lua_Integer n = 0;
    while (*names != '\0') {
        size_t length = strcspn(names, ",");
        lua_pushlstring(L, names, length);
        lua_seti(L, -2, ++n);
        names += length;
        names += strspn(names, ", ");
    }
    return 1;
}

/* caem.config("preset") or caem.config{preset=, <field>=...} */
static int caem_config(lua_State *L)
{
    static const char *const options[] = { "preset", NULL };
    if (lua_type(L, 1) == LUA_TSTRING) {
        lua_createtable(L, 0, 1);
        lua_pushvalue(L, 1);
        lua_setfield(L, -2, "preset");
        lua_replace(L, 1);
    }
    luaL_argcheck(L, lua_istable(L, 1), 1, "expected a preset name or a table of fields");
    push_config_fields(L);
    option_check_keys(L, 1, "caem.config", options, -1, 0);
    lua_pop(L, 1);
    struct model_config cfg;
    read_config(L, 1, "caem.config", &cfg);
    push_config(L, &cfg);
    return 1;
}

/* caem.device() returns the device that new and loaded models use ("cpu"
 * or "cuda"); caem.device(name) sets it to "auto", "cpu" or "cuda" first.
 * Models already made stay where they are. */
static int caem_device(lua_State *L)
{
    struct caem_error err;
    const struct backend *be;
    if (!lua_isnoneornil(L, 1)) {
        char previous[8];
        snprintf(previous, sizeof previous, "%s", backend_default_name());
        if (backend_set_default(luaL_checkstring(L, 1), &err) != 0)
            return luaL_error(L, "caem.device: %s", err.message);
        if (backend_default(&be, &err) != 0) {
            backend_set_default(previous, &err);
            return luaL_error(L, "caem.device: %s", err.message);
        }
    }
    if (backend_default(&be, &err) != 0)
        return luaL_error(L, "caem.device: %s", err.message);
    lua_pushstring(L, be->name);
    return 1;
}

/* caem.precision() returns the GEMM precision of the CUDA backend ("fp32",
 * "tf32" or "bf16"); caem.precision(name) sets it first. The CPU backend
 * always computes in float32. */
static int caem_precision(lua_State *L)
{
#ifdef CAEM_HAVE_CUDA
    if (!lua_isnoneornil(L, 1)) {
        struct caem_error err;
        enum cuda_precision precision;
        if (cuda_precision_parse(luaL_checkstring(L, 1), &precision, &err) != 0)
            return luaL_error(L, "caem.precision: %s", err.message);
        backend_cuda_set_precision(precision);
    }
    lua_pushstring(L, cuda_precision_name(backend_cuda_precision()));
#else
    if (!lua_isnoneornil(L, 1) && strcmp(luaL_checkstring(L, 1), "fp32") != 0)
        return luaL_error(L, "caem.precision: '%s' needs the CUDA backend, and this build has "
                          "none (nvcc was not on the PATH when it was built)",
                          lua_tostring(L, 1));
    lua_pushstring(L, "fp32");
#endif
    return 1;
}

int luaopen_caem(lua_State *L)
{
    static const luaL_Reg functions[] = {
        { "presets", caem_presets },
        { "config", caem_config },
        { "device", caem_device },
        { "precision", caem_precision },
        { NULL, NULL },
    };
    lua_caem_host_hooks(L);
    luaL_newlib(L, functions);
    lua_pushstring(L, MODULE_VERSION);
    lua_setfield(L, -2, "version");
    lua_caem_open_model(L);
    lua_caem_open_task(L);
    lua_caem_open_job(L);
    lua_caem_open_metrics(L);
    lua_caem_open_merge(L);
    lua_caem_run_prelude(L);
    return 1;
}

void lua_caem_set_host(lua_State *L, const struct lua_caem_host *host)
{
    *lua_caem_host_hooks(L) = *host;
}

void lua_caem_poll(lua_State *L)
{
    lua_job_poll(L, NULL);
}

int lua_caem_stop_jobs(lua_State *L)
{
    return lua_job_count_running(L, 1);
}

int lua_caem_running_jobs(lua_State *L)
{
    return lua_job_count_running(L, 0);
}
