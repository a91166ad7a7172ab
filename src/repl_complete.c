/* Completion candidates for the REPL's tab key. */
#include <lauxlib.h>
#include <stdlib.h>
#include <string.h>

#include "repl.h"

#define MAX_DEPTH 8 /* __index chains followed, against cycles */

static const char *const keywords[] = {
    "and", "break", "do", "else", "elseif", "end", "false", "for", "function", "goto", "if",
    "in", "local", "nil", "not", "or", "repeat", "return", "then", "true", "until", "while",
};

/* Sets names[name] = true when name is a Lua name that starts with the
 * prefix (at index 2 of the collecting function's stack). */
static void add_name(lua_State *L, int names, const char *name, size_t length)
{
    size_t prefix_length;
    const char *prefix = lua_tolstring(L, 2, &prefix_length);
    if (length < prefix_length || memcmp(name, prefix, prefix_length) != 0)
        return;
    if (!repl_is_name(name, length))
        return;
    lua_pushlstring(L, name, length);
    lua_pushboolean(L, 1);
    lua_rawset(L, names);
}

/* Adds the string keys of the table at idx (with methods_only, those whose
 * value is a function). */
static void add_keys(lua_State *L, int names, int idx, int methods_only)
{
    lua_pushnil(L);
    while (lua_next(L, idx) != 0) {
        if (lua_type(L, -2) == LUA_TSTRING && (!methods_only || lua_isfunction(L, -1))) {
            size_t length;
            const char *name = lua_tolstring(L, -2, &length);
            add_name(L, names, name, length);
        }
        lua_pop(L, 1);
    }
}

/* Adds the names a __fields or __methods table lists: its string keys, or
 * its string values when it is a sequence. */
static void add_listed(lua_State *L, int names, int idx)
{
    lua_pushnil(L);
    while (lua_next(L, idx) != 0) {
        int name_index = lua_type(L, -2) == LUA_TSTRING ? -2 : -1;
        if (lua_type(L, name_index) == LUA_TSTRING) {
            size_t length;
            const char *name = lua_tolstring(L, name_index, &length);
            add_name(L, names, name, length);
        }
        lua_pop(L, 1);
    }
}

/* Adds the keys of the tables among the upvalues of the C function at idx:
 * an __index written in C commonly looks its methods up in such a table. A
 * Lua function's upvalues are skipped, because one of them can be _ENV. */
static void add_upvalue_keys(lua_State *L, int names, int idx, int methods_only)
{
    for (int i = 1; lua_getupvalue(L, idx, i) != NULL; i++) {
        if (lua_type(L, -1) == LUA_TTABLE)
            add_keys(L, names, lua_gettop(L), methods_only);
        lua_pop(L, 1);
    }
}

/* Adds the fields (or methods) of the value at idx, its own and those its
 * metatable gives it. */
static void add_members(lua_State *L, int names, int idx, int methods_only, int depth)
{
    if (depth > MAX_DEPTH)
        return;
    if (lua_type(L, idx) == LUA_TTABLE)
        add_keys(L, names, idx, methods_only);
    if (!lua_getmetatable(L, idx))
        return;
    int meta = lua_gettop(L);
    int index_type = lua_getfield(L, meta, "__index");
    if (index_type == LUA_TTABLE)
        add_members(L, names, lua_gettop(L), methods_only, depth + 1);
    else if (index_type == LUA_TFUNCTION && lua_iscfunction(L, -1))
        add_upvalue_keys(L, names, lua_gettop(L), methods_only);
    lua_pop(L, 1);
    if (!methods_only) {
        if (lua_getfield(L, meta, "__fields") == LUA_TTABLE)
            add_listed(L, names, lua_gettop(L));
        lua_pop(L, 1);
    }
    if (lua_getfield(L, meta, "__methods") == LUA_TTABLE)
        add_listed(L, names, lua_gettop(L));
    lua_pop(L, 2);
}

/* Pushes the value the path names ("a.b.c", indexed from the globals), or
 * nil when a part of it is not a name or a value on the way cannot have
 * fields. Indexing runs __index metamethods, which may raise. */
static void push_path_value(lua_State *L, const char *path, size_t length)
{
    lua_pushglobaltable(L);
    size_t start = 0;
    while (start <= length) {
        size_t end = start;
        while (end < length && path[end] != '.' && path[end] != ':')
            end++;
        int type = lua_type(L, -1);
        if (!repl_is_name(path + start, end - start) ||
            (type != LUA_TTABLE && type != LUA_TUSERDATA && type != LUA_TSTRING)) {
            lua_pop(L, 1);
            lua_pushnil(L);
            return;
        }
        lua_pushlstring(L, path + start, end - start);
        lua_gettable(L, -2);
        lua_remove(L, -2);
        start = end + 1;
    }
}

static int compare_strings(const void *a, const void *b)
{
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

/* Arguments: the word, the prefix of the last name (pushed by the caller
 * of add_name). Returns the sorted table of completions. */
static int collect_completions(lua_State *L)
{
    size_t word_length;
    const char *word = luaL_checklstring(L, 1, &word_length);
    const char *separator = NULL;
    for (const char *c = word; *c != '\0'; c++)
        if (*c == '.' || *c == ':')
            separator = c;
    size_t head = separator != NULL ? (size_t)(separator - word) + 1 : 0;
    lua_settop(L, 1);
    lua_pushstring(L, word + head);
    lua_newtable(L);
    int names = lua_gettop(L);

    if (separator == NULL) {
        lua_pushglobaltable(L);
        add_members(L, names, lua_gettop(L), 0, 0);
        lua_pop(L, 1);
        for (size_t k = 0; k < sizeof keywords / sizeof keywords[0]; k++) {
            size_t prefix_length = word_length;
            if (strncmp(keywords[k], word, prefix_length) == 0) {
                lua_pushstring(L, keywords[k]);
                lua_pushboolean(L, 1);
                lua_rawset(L, names);
            }
        }
    } else {
        push_path_value(L, word, head - 1);
        if (!lua_isnil(L, -1))
            add_members(L, names, lua_gettop(L), *separator == ':', 0);
        lua_pop(L, 1);
    }

    /* sort the names, then prepend the path */
    int count = 0;
    lua_pushnil(L);
    while (lua_next(L, names) != 0) {
        lua_pop(L, 1);
        count++;
    }
    const char **sorted = lua_newuserdatauv(L, sizeof *sorted * (size_t)(count + 1), 0);
    int i = 0;
    lua_pushnil(L);
    while (lua_next(L, names) != 0) {
        lua_pop(L, 1);
        sorted[i++] = lua_tostring(L, -1); /* kept alive by the names table */
    }
    qsort(sorted, (size_t)count, sizeof *sorted, compare_strings);
    lua_createtable(L, count, 0);
    for (i = 0; i < count; i++) {
        lua_pushlstring(L, word, head);
        lua_pushstring(L, sorted[i]);
        lua_concat(L, 2);
        lua_rawseti(L, -2, i + 1);
    }
    return 1;
}

int repl_completions(lua_State *L, const char *word)
{
    int top = lua_gettop(L);
    lua_pushcfunction(L, collect_completions);
    lua_pushstring(L, word);
    if (lua_pcall(L, 1, 1, 0) != LUA_OK) {
        lua_settop(L, top);
        lua_newtable(L);
        return 0;
    }
    return (int)lua_rawlen(L, -1);
}
