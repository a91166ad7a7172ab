/* Value printing for the REPL: tostring, or one level of a plain table. */
#include <lauxlib.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "repl.h"

#define STRING_CHARS 60 /* a string inside a table is cut after this many bytes */

/* A key of the table being printed, for sorting: numbers first, then
 * strings, then everything else in the order lua_next gave. */
struct sort_key {
    int rank;
    lua_Number number;
    const char *string; /* kept alive by the table */
    size_t length;
    int order;          /* index in the keys table */
};

static int compare_keys(const void *pa, const void *pb)
{
    const struct sort_key *a = pa, *b = pb;
    if (a->rank != b->rank)
        return a->rank < b->rank ? -1 : 1;
    if (a->rank == 0 && a->number != b->number)
        return a->number < b->number ? -1 : 1;
    if (a->rank == 1) {
        size_t n = a->length < b->length ? a->length : b->length;
        int c = memcmp(a->string, b->string, n);
        if (c != 0)
            return c;
        if (a->length != b->length)
            return a->length < b->length ? -1 : 1;
    }
    return a->order - b->order;
}

int repl_is_name(const char *s, size_t length)
{
    static const char *const keywords[] = {
        "and", "break", "do", "else", "elseif", "end", "false", "for", "function", "goto",
        "if", "in", "local", "nil", "not", "or", "repeat", "return", "then", "true", "until",
        "while",
    };
    if (length == 0 || !(s[0] == '_' || ((s[0] | 32) >= 'a' && (s[0] | 32) <= 'z')))
        return 0;
    for (size_t i = 1; i < length; i++) {
        char c = s[i];
        if (!(c == '_' || (c >= '0' && c <= '9') || ((c | 32) >= 'a' && (c | 32) <= 'z')))
            return 0;
    }
    for (size_t k = 0; k < sizeof keywords / sizeof keywords[0]; k++)
        if (strlen(keywords[k]) == length && memcmp(keywords[k], s, length) == 0)
            return 0;
    return 1;
}

/* The text is built as strings pushed on the stack and concatenated at the
 * end, so that an error from a __tostring leaves nothing to free. */
struct pieces {
    int count;   /* strings pushed */
    size_t size; /* their bytes */
};

static void add_string(lua_State *L, struct pieces *p, const char *s, size_t length)
{
    luaL_checkstack(L, 2, "printing a table");
    lua_pushlstring(L, s, length);
    p->count++;
    p->size += length;
}

static void add_literal(lua_State *L, struct pieces *p, const char *s)
{
    add_string(L, p, s, strlen(s));
}

/* Takes the string on top of the stack as the next piece. */
static void add_top(lua_State *L, struct pieces *p)
{
    p->count++;
    p->size += lua_rawlen(L, -1);
}

static void add_quoted(lua_State *L, struct pieces *p, const char *s, size_t length)
{
    size_t shown = length > STRING_CHARS ? STRING_CHARS : length;
    luaL_Buffer b;
    luaL_buffinit(L, &b);
    luaL_addchar(&b, '"');
    for (size_t i = 0; i < shown; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c == '"' || c == '\\') {
            luaL_addchar(&b, '\\');
            luaL_addchar(&b, (char)c);
        } else if (c == '\n') {
            luaL_addstring(&b, "\\n");
        } else if (c < 32 || c == 127) {
            char escape[8];
            snprintf(escape, sizeof escape, "\\%d", c);
            luaL_addstring(&b, escape);
        } else {
            luaL_addchar(&b, (char)c);
        }
    }
    if (shown < length)
        luaL_addstring(&b, "...");
    luaL_addchar(&b, '"');
    luaL_pushresult(&b);
    add_top(L, p);
}

static int has_own_text(lua_State *L, int idx)
{
    if (luaL_getmetafield(L, idx, "__tostring") != LUA_TNIL) {
        lua_pop(L, 1);
        return 1;
    }
    if (luaL_getmetafield(L, idx, "__name") != LUA_TNIL) {
        lua_pop(L, 1);
        return 1;
    }
    return 0;
}

static int table_is_empty(lua_State *L, int idx)
{
    lua_pushnil(L);
    if (lua_next(L, idx) == 0)
        return 1;
    lua_pop(L, 2);
    return 0;
}

/* Adds a value inside the table: strings quoted, plain tables as {...}. */
static void add_inner_value(lua_State *L, struct pieces *p, int idx)
{
    if (lua_type(L, idx) == LUA_TSTRING) {
        size_t length;
        const char *s = lua_tolstring(L, idx, &length);
        add_quoted(L, p, s, length);
    } else if (lua_type(L, idx) == LUA_TTABLE && !has_own_text(L, idx)) {
        add_literal(L, p, table_is_empty(L, idx) ? "{}" : "{...}");
    } else {
        luaL_tolstring(L, idx, NULL);
        add_top(L, p);
    }
}

static void add_key(lua_State *L, struct pieces *p, int idx)
{
    if (lua_type(L, idx) == LUA_TSTRING) {
        size_t length;
        const char *s = lua_tolstring(L, idx, &length);
        if (repl_is_name(s, length)) {
            add_string(L, p, s, length);
            return;
        }
    }
    add_literal(L, p, "[");
    add_inner_value(L, p, idx);
    add_literal(L, p, "]");
}

/* Pushes a table with the keys of the table at idx that are outside its
 * sequence 1..sequence, then a userdata with those keys' sort_key entries
 * in printing order, and returns how many there are. */
static int collect_keys(lua_State *L, int idx, lua_Integer sequence, struct sort_key **sorted)
{
    lua_newtable(L);
    int keys = lua_gettop(L);
    int count = 0;
    lua_pushnil(L);
    while (lua_next(L, idx) != 0) {
        lua_pop(L, 1);
        if (lua_isinteger(L, -1)) {
            lua_Integer k = lua_tointeger(L, -1);
            if (k >= 1 && k <= sequence)
                continue;
        }
        lua_pushvalue(L, -1);
        lua_rawseti(L, keys, ++count);
    }
    struct sort_key *list = lua_newuserdatauv(L, sizeof *list * (size_t)(count + 1), 0);
    for (int i = 0; i < count; i++) {
        lua_rawgeti(L, keys, i + 1);
        struct sort_key *k = &list[i];
        memset(k, 0, sizeof *k);
        k->order = i + 1;
        int type = lua_type(L, -1);
        if (type == LUA_TNUMBER) {
            k->number = lua_tonumber(L, -1);
        } else if (type == LUA_TSTRING) {
            k->rank = 1;
            k->string = lua_tolstring(L, -1, &k->length);
        } else {
            k->rank = 2;
        }
        lua_pop(L, 1);
    }
    qsort(list, (size_t)count, sizeof *list, compare_keys);
    *sorted = list;
    return count;
}

static void push_table_text(lua_State *L, int idx)
{
    lua_Integer sequence = 0;
    while (lua_rawgeti(L, idx, sequence + 1) != LUA_TNIL) {
        lua_pop(L, 1);
        sequence++;
    }
    lua_pop(L, 1);
    struct sort_key *others;
    int other_count = collect_keys(L, idx, sequence, &others);
    int keys = lua_gettop(L) - 1;
    lua_Integer total = sequence + other_count;

    struct pieces p = { 0, 0 };
    add_literal(L, &p, "{");
    lua_Integer shown = 0;
    for (; shown < total; shown++) {
        if (shown >= REPL_TABLE_ENTRIES || p.size >= REPL_TABLE_CHARS)
            break;
        if (shown > 0)
            add_literal(L, &p, ", ");
        if (shown < sequence) {
            lua_rawgeti(L, idx, shown + 1);
            int value = lua_gettop(L);
            add_inner_value(L, &p, value);
            lua_remove(L, value);
            continue;
        }
        lua_rawgeti(L, keys, others[shown - sequence].order);
        int key = lua_gettop(L);
        add_key(L, &p, key);
        add_literal(L, &p, " = ");
        lua_pushvalue(L, key);
        lua_rawget(L, idx);
        int value = lua_gettop(L);
        add_inner_value(L, &p, value);
        lua_remove(L, value);
        lua_remove(L, key);
    }
    if (shown < total) {
        lua_pushfstring(L, ", ... (%I more)", (LUA_INTEGER)(total - shown));
        add_top(L, &p);
    }
    add_literal(L, &p, "}");
    lua_concat(L, p.count);
    lua_replace(L, keys);
    lua_settop(L, keys);
}

void repl_push_value_text(lua_State *L, int idx)
{
    idx = lua_absindex(L, idx);
    if (lua_type(L, idx) == LUA_TTABLE && !has_own_text(L, idx))
        push_table_text(L, idx);
    else
        luaL_tolstring(L, idx, NULL);
}
