/* Metrics and results files in Lua: caem.rouge, caem.squad,
 * caem.normalize_answer, caem.overall_performance and caem.results. */
#include <stdlib.h>

#include "lua_internal.h"
#include "metrics.h"
#include "results.h"

static void push_rouge_value(lua_State *L, const char *name, const struct rouge_value *v)
{
    lua_createtable(L, 0, 3);
    set_number(L, "precision", v->precision);
    set_number(L, "recall", v->recall);
    set_number(L, "fmeasure", v->fmeasure);
    lua_setfield(L, -2, name);
}

/* caem.rouge(target, prediction) */
static int caem_rouge(lua_State *L)
{
    const char *target = luaL_checkstring(L, 1);
    const char *prediction = luaL_checkstring(L, 2);
    struct rouge_scores scores;
    struct caem_error err;
    if (metric_rouge(target, prediction, &scores, &err) != 0)
        return raise_error(L, "caem.rouge", &err);
    lua_createtable(L, 0, 3);
    push_rouge_value(L, "rouge1", &scores.rouge1);
    push_rouge_value(L, "rouge2", &scores.rouge2);
    push_rouge_value(L, "rougeL", &scores.rougeL);
    return 1;
}

/* caem.squad(prediction, gold or {golds}) */
static int caem_squad(lua_State *L)
{
    const char *prediction = luaL_checkstring(L, 1);
    int count = 1;
    if (lua_istable(L, 2))
        count = (int)luaL_len(L, 2);
    else
        luaL_checkstring(L, 2);
    if (count < 1)
        return luaL_error(L, "caem.squad: expected at least one gold answer");
    const char **golds = lua_newuserdatauv(L, sizeof *golds * (size_t)count, 0);
    for (int i = 0; i < count; i++) {
        if (!lua_istable(L, 2)) {
            golds[i] = lua_tostring(L, 2);
            continue;
        }
        lua_geti(L, 2, i + 1);
        if (lua_type(L, -1) != LUA_TSTRING)
            return luaL_error(L, "caem.squad: gold answer %d is %s, expected a string", i + 1,
                              luaL_typename(L, -1));
        golds[i] = lua_tostring(L, -1); /* the table keeps it alive */
        lua_pop(L, 1);
    }
    struct squad_score score;
    struct caem_error err;
    if (metric_squad_score(prediction, golds, count, &score, &err) != 0)
        return raise_error(L, "caem.squad", &err);
    lua_createtable(L, 0, 2);
    set_number(L, "exact_match", score.exact_match);
    set_number(L, "f1", score.f1);
    return 1;
}

static int caem_normalize_answer(lua_State *L)
{
    char *normalized = metric_normalize_answer(luaL_checkstring(L, 1));
    if (normalized == NULL)
        return luaL_error(L, "caem.normalize_answer: out of memory");
    lua_pushstring(L, normalized);
    free(normalized);
    return 1;
}

/* Reads the array argument at index into a userdata of doubles. */
static double *check_scores(lua_State *L, int index, int *count)
{
    luaL_checktype(L, index, LUA_TTABLE);
    *count = (int)luaL_len(L, index);
    double *values = lua_newuserdatauv(L, sizeof *values * (size_t)(*count > 0 ? *count : 1),
                                       0);
    for (int i = 0; i < *count; i++) {
        if (lua_geti(L, index, i + 1) != LUA_TNUMBER)
            luaL_error(L, "caem.overall_performance: score %d of argument %d is %s, expected "
                       "a number", i + 1, index, luaL_typename(L, -1));
        values[i] = lua_tonumber(L, -1);
        lua_pop(L, 1);
    }
    return values;
}

/* caem.overall_performance(multi_task_scores, single_task_scores) */
static int caem_overall_performance(lua_State *L)
{
    int m, s;
    double *multi = check_scores(L, 1, &m);
    double *single = check_scores(L, 2, &s);
    if (m != s)
        return luaL_error(L, "caem.overall_performance: %d multi-task scores but %d "
                          "single-task scores; expected one of each per task", m, s);
    double overall;
    struct caem_error err;
    if (metric_overall_performance(multi, single, m, &overall, &err) != 0)
        return raise_error(L, "caem.overall_performance", &err);
    lua_pushnumber(L, overall);
    return 1;
}

/* Rows read by results_read, freed on collection even when a conversion
 * raises. */
struct results_holder {
    struct result_row *rows;
    long count;
};

static int rows_gc(lua_State *L)
{
    struct results_holder *held = lua_touserdata(L, 1);
    results_free(held->rows, held->count);
    held->rows = NULL;
    held->count = 0;
    return 0;
}

/* caem.results(prefix) reads PREFIX.jsonl into a list of rows. */
static int caem_results(lua_State *L)
{
    const char *prefix = luaL_checkstring(L, 1);
    struct results_holder *held = lua_newuserdatauv(L, sizeof *held, 0);
    held->rows = NULL;
    held->count = 0;
    lua_newtable(L);
    lua_pushcfunction(L, rows_gc);
    lua_setfield(L, -2, "__gc");
    lua_setmetatable(L, -2);
    struct caem_error err;
    if (results_read(prefix, &held->rows, &held->count, &err) != 0)
        return raise_error(L, "caem.results", &err);
    lua_createtable(L, (int)held->count, 0);
    for (long i = 0; i < held->count; i++) {
        const struct result_row *r = &held->rows[i];
        lua_createtable(L, 0, 7);
        set_string(L, "model", r->model);
        set_string(L, "task", r->task);
        set_string(L, "split", r->split);
        set_string(L, "metric", r->metric);
        set_number(L, "value", r->value);
        set_integer(L, "step", r->step);
        set_number(L, "time", r->time);
        lua_seti(L, -2, i + 1);
    }
    return 1;
}

void lua_caem_open_metrics(lua_State *L)
{
    static const luaL_Reg functions[] = {
        { "rouge", caem_rouge },
        { "squad", caem_squad },
        { "normalize_answer", caem_normalize_answer },
        { "overall_performance", caem_overall_performance },
        { "results", caem_results },
        { NULL, NULL },
    };
    luaL_setfuncs(L, functions, 0);
}
