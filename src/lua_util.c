/* Argument and option checking of the caem Lua module. */
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "lua_internal.h"

int raise_error(lua_State *L, const char *function, const struct caem_error *err)
{
    return luaL_error(L, "%s: %s", function, err->message);
}

/* Pushes "a, b, c" from a NULL-terminated list and the array at
 * names_index (0: none). */
static void push_joined(lua_State *L, const char *const names[], int names_index)
{
    luaL_Buffer b;
    luaL_buffinit(L, &b);
    int first = 1;
    for (int i = 0; names[i] != NULL; i++, first = 0) {
        if (!first)
            luaL_addstring(&b, ", ");
        luaL_addstring(&b, names[i]);
    }
    lua_Integer count = names_index != 0 ? luaL_len(L, names_index) : 0;
    for (lua_Integer i = 1; i <= count; i++, first = 0) {
        if (!first)
            luaL_addstring(&b, ", ");
        lua_geti(L, names_index, i);
        luaL_addvalue(&b);
    }
    luaL_pushresult(&b);
}

static int key_allowed(lua_State *L, const char *key, const char *const allowed[],
                       int names_index)
{
    for (int i = 0; allowed[i] != NULL; i++)
        if (strcmp(allowed[i], key) == 0)
            return 1;
    lua_Integer count = names_index != 0 ? luaL_len(L, names_index) : 0;
    for (lua_Integer i = 1; i <= count; i++) {
        lua_geti(L, names_index, i);
        int same = strcmp(lua_tostring(L, -1), key) == 0;
        lua_pop(L, 1);
        if (same)
            return 1;
    }
    return 0;
}

void option_check_keys(lua_State *L, int index, const char *function,
                       const char *const allowed[], int names_index, int optional)
{
    index = lua_absindex(L, index);
    if (names_index != 0)
        names_index = lua_absindex(L, names_index);
    if (optional && lua_isnoneornil(L, index))
        return;
    if (!lua_istable(L, index))
        luaL_error(L, "%s: expected a table of options, got %s", function,
                   luaL_typename(L, index));
    lua_pushnil(L);
    while (lua_next(L, index) != 0) {
        lua_pop(L, 1);
        if (lua_type(L, -1) != LUA_TSTRING)
            luaL_error(L, "%s: option names must be strings, got a %s key", function,
                       luaL_typename(L, -1));
        const char *key = lua_tostring(L, -1);
        if (!key_allowed(L, key, allowed, names_index)) {
            push_joined(L, allowed, names_index);
            luaL_error(L, "unknown option '%s' for %s (expected one of: %s)", key, function,
                       lua_tostring(L, -1));
        }
    }
}

/* Pushes t[key], or nil when index is not a table. */
static int push_option(lua_State *L, int index, const char *key)
{
    if (!lua_istable(L, index)) {
        lua_pushnil(L);
        return LUA_TNIL;
    }
    return lua_getfield(L, index, key);
}

lua_Integer option_integer(lua_State *L, int index, const char *key, const char *function,
                           lua_Integer fallback, lua_Integer min, lua_Integer max)
{
    index = lua_absindex(L, index);
    if (push_option(L, index, key) == LUA_TNIL) {
        lua_pop(L, 1);
        return fallback;
    }
    int exact;
    lua_Integer value = lua_tointegerx(L, -1, &exact);
    if (!exact || lua_type(L, -1) != LUA_TNUMBER)
        luaL_error(L, "%s: option '%s' must be an integer, got %s", function, key,
                   lua_type(L, -1) == LUA_TNUMBER ? "a fraction" : luaL_typename(L, -1));
    if (value < min || value > max)
        luaL_error(L, "%s: option '%s' is %I, expected an integer in [%I, %I]", function, key,
                   value, min, max);
    lua_pop(L, 1);
    return value;
}

double option_number(lua_State *L, int index, const char *key, const char *function,
                     double fallback, double min, double max)
{
    index = lua_absindex(L, index);
    if (push_option(L, index, key) == LUA_TNIL) {
        lua_pop(L, 1);
        return fallback;
    }
    if (lua_type(L, -1) != LUA_TNUMBER)
        luaL_error(L, "%s: option '%s' must be a number, got %s", function, key,
                   luaL_typename(L, -1));
    double value = lua_tonumber(L, -1);
    if (!(value >= min && value <= max)) {
        char range[128];
        snprintf(range, sizeof range, "is %g, expected a number in [%g, %g]", value, min, max);
        luaL_error(L, "%s: option '%s' %s", function, key, range);
    }
    lua_pop(L, 1);
    return value;
}

int option_boolean(lua_State *L, int index, const char *key, const char *function,
                   int fallback)
{
    index = lua_absindex(L, index);
    int type = push_option(L, index, key);
    if (type == LUA_TNIL) {
        lua_pop(L, 1);
        return fallback;
    }
    if (type != LUA_TBOOLEAN)
        luaL_error(L, "%s: option '%s' must be a boolean, got %s", function, key,
                   luaL_typename(L, -1));
    int value = lua_toboolean(L, -1);
    lua_pop(L, 1);
    return value;
}

const char *option_string(lua_State *L, int index, const char *key, const char *function,
                          const char *fallback)
{
    index = lua_absindex(L, index);
    int type = push_option(L, index, key);
    if (type == LUA_TNIL) {
        lua_pop(L, 1);
        return fallback;
    }
    if (type != LUA_TSTRING)
        luaL_error(L, "%s: option '%s' must be a string, got %s", function, key,
                   luaL_typename(L, -1));
    /* the table keeps the string alive after the pop */
    const char *value = lua_tostring(L, -1);
    lua_pop(L, 1);
    return value;
}

int option_choice(lua_State *L, int index, const char *key, const char *function,
                  const char *const choices[], int fallback)
{
    const char *value = option_string(L, index, key, function, NULL);
    if (value == NULL)
        return fallback;
    for (int i = 0; choices[i] != NULL; i++)
        if (strcmp(choices[i], value) == 0)
            return i;
    push_joined(L, choices, 0);
    return luaL_error(L, "%s: option '%s' is '%s', expected one of: %s", function, key, value,
                      lua_tostring(L, -1));
}

/* The type of a value for messages: a userdata's metatable __name (such as
 * "caem.model"), or the basic type's name. */
static const char *type_name(lua_State *L, int index)
{
    index = lua_absindex(L, index);
    int type = luaL_getmetafield(L, index, "__name");
    if (type == LUA_TSTRING) {
        const char *name = lua_tostring(L, -1);
        lua_pop(L, 1); /* the metatable keeps the string alive */
        return name;
    }
    if (type != LUA_TNIL)
        lua_pop(L, 1);
    return luaL_typename(L, index);
}

void *option_userdata(lua_State *L, int index, const char *key, const char *function,
                      const char *tname, int required)
{
    index = lua_absindex(L, index);
    if (push_option(L, index, key) == LUA_TNIL) {
        if (required)
            luaL_error(L, "%s: option '%s' is missing (expected a %s)", function, key, tname);
        return NULL;
    }
    void *p = luaL_testudata(L, -1, tname);
    if (p == NULL)
        luaL_error(L, "%s: option '%s' must be a %s, got %s", function, key, tname,
                   type_name(L, -1));
    return p;
}

enum task_split_kind check_split(lua_State *L, const char *name, const char *function)
{
    for (int s = 0; s < TASK_SPLIT_COUNT; s++)
        if (strcmp(name, task_split_name((enum task_split_kind)s)) == 0)
            return (enum task_split_kind)s;
    luaL_error(L, "%s: invalid split '%s' (expected train, validation or test)", function,
               name);
    return TASK_SPLIT_TRAIN;
}

void set_number(lua_State *L, const char *key, double value)
{
    if (isnan(value))
        return;
    lua_pushnumber(L, value);
    lua_setfield(L, -2, key);
}

void set_integer(lua_State *L, const char *key, lua_Integer value)
{
    lua_pushinteger(L, value);
    lua_setfield(L, -2, key);
}

void set_string(lua_State *L, const char *key, const char *value)
{
    if (value == NULL)
        return;
    lua_pushstring(L, value);
    lua_setfield(L, -2, key);
}

void set_boolean(lua_State *L, const char *key, int value)
{
    lua_pushboolean(L, value);
    lua_setfield(L, -2, key);
}
