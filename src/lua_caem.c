/* The caem Lua module: luaopen_caem, the host's hooks, the functions of
 * lua_caem.h and the module's config functions. */
#include <string.h>

#include "config.h"
#include "lua_caem.h"
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

int luaopen_caem(lua_State *L)
{
    static const luaL_Reg functions[] = {
        { "presets", caem_presets },
        { "config", caem_config },
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
