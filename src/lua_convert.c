/* Runtime structs as Lua tables: configs, usage tables, evaluations, job
 * status, histories and load reports. */
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lua_internal.h"

/* ---- configs ---- */

/* Pushes the shortest decimal that reads back as the same float, so that a
 * field set to 0.1 reads 0.1 and not 0.10000000149011612. */
static void push_float(lua_State *L, double value)
{
    float f = (float)value;
    char text[32];
    for (int digits = 6; digits <= 9; digits++) {
        snprintf(text, sizeof text, "%.*g", digits, (double)f);
        if ((float)strtod(text, NULL) == f)
            break;
    }
    lua_pushnumber(L, strtod(text, NULL));
}

/* Pushes the config as a parsed JSON object, raising when out of memory. */
static json_t *config_json(lua_State *L, const struct model_config *cfg)
{
    char *text = config_to_json(cfg);
    json_t *obj = text != NULL ? json_loads(text, 0, NULL) : NULL;
    free(text);
    if (obj == NULL)
        luaL_error(L, "out of memory for a model config");
    return obj;
}

void push_config(lua_State *L, const struct model_config *cfg)
{
    json_t *obj = config_json(L, cfg);
    lua_createtable(L, 0, (int)json_object_size(obj));
    const char *key;
    json_t *value;
    json_object_foreach(obj, key, value) {
        if (json_is_integer(value))
            lua_pushinteger(L, (lua_Integer)json_integer_value(value));
        else if (json_is_real(value))
            push_float(L, json_real_value(value));
        else
            lua_pushstring(L, json_string_value(value));
        lua_setfield(L, -2, key);
    }
    json_decref(obj);
}

void push_config_fields(lua_State *L)
{
    struct model_config cfg;
    struct caem_error err;
    config_preset(&cfg, "tiny", &err);
    json_t *obj = config_json(L, &cfg);
    lua_createtable(L, (int)json_object_size(obj), 0);
    const char *key;
    json_t *value;
    lua_Integer i = 1;
    json_object_foreach(obj, key, value) {
        lua_pushstring(L, key);
        lua_seti(L, -2, i++);
    }
    json_decref(obj);
}

/* Converts the Lua value on the top of the stack to JSON; NULL for a type
 * that no config field has. */
static json_t *config_value(lua_State *L)
{
    switch (lua_type(L, -1)) {
    case LUA_TNUMBER:
        if (lua_isinteger(L, -1))
            return json_integer((json_int_t)lua_tointeger(L, -1));
        return json_real(lua_tonumber(L, -1));
    case LUA_TBOOLEAN:
        return json_boolean(lua_toboolean(L, -1));
    case LUA_TSTRING:
        return json_string(lua_tostring(L, -1));
    default:
        return NULL;
    }
}

/* Builds a JSON object of the config fields in the table at index. */
static json_t *config_fields_json(lua_State *L, int index, const char *function)
{
    push_config_fields(L);
    int fields = lua_gettop(L);
    json_t *obj = json_object();
    lua_Integer count = luaL_len(L, fields);
    for (lua_Integer i = 1; i <= count && obj != NULL; i++) {
        lua_geti(L, fields, i);
        const char *key = lua_tostring(L, -1);
        if (lua_getfield(L, index, key) != LUA_TNIL) {
            json_t *value = config_value(L);
            if (value == NULL) {
                json_decref(obj);
                luaL_error(L, "%s: config field '%s' must be a number, a boolean or a "
                           "string, got %s", function, key, luaL_typename(L, -1));
            }
            if (json_object_set_new(obj, key, value) != 0) {
                json_decref(obj);
                luaL_error(L, "%s: out of memory for a model config", function);
            }
        }
        lua_pop(L, 2);
    }
    lua_pop(L, 1);
    if (obj == NULL)
        luaL_error(L, "%s: out of memory for a model config", function);
    return obj;
}

void read_config(lua_State *L, int index, const char *function, struct model_config *cfg)
{
    index = lua_absindex(L, index);
    struct caem_error err;
    const char *preset = option_string(L, index, "preset", function, "small");
    if (config_preset(cfg, preset, &err) != 0)
        raise_error(L, function, &err);
    json_t *obj = config_fields_json(L, index, function);
    char *text = json_dumps(obj, JSON_COMPACT);
    json_decref(obj);
    if (text == NULL)
        luaL_error(L, "%s: out of memory for a model config", function);
    int rc = config_from_json(cfg, text, &err);
    free(text);
    if (rc != 0 || config_validate(cfg, &err) != 0)
        raise_error(L, function, &err);
}

/* ---- usage tables ---- */

static void push_counts(lua_State *L, const int64_t *counts, int experts)
{
    lua_createtable(L, experts, 0);
    for (int e = 0; e < experts; e++) {
        lua_pushinteger(L, (lua_Integer)counts[e]);
        lua_seti(L, -2, e + 1);
    }
}

static void push_usage_row(lua_State *L, const struct usage_table *u, int row)
{
    int E = u->experts;
    lua_createtable(L, 0, 8);
    set_string(L, "stack", row < u->layers[0] ? "encoder" : "decoder");
    set_integer(L, "block", u->blocks[row]);
    set_integer(L, "tokens", (lua_Integer)u->tokens[row]);
    set_number(L, "entropy", usage_table_entropy(u, row));
    push_counts(L, u->kept + (size_t)row * E, E);
    lua_setfield(L, -2, "kept");
    push_counts(L, u->dropped + (size_t)row * E, E);
    lua_setfield(L, -2, "dropped");
    lua_createtable(L, E, 0);
    for (int e = 0; e < E; e++) {
        lua_pushnumber(L, usage_table_soft(u, row, e));
        lua_seti(L, -2, e + 1);
    }
    lua_setfield(L, -2, "soft");
}

void push_usage(lua_State *L, const struct usage_table *u)
{
    int rows = usage_table_rows(u);
    lua_createtable(L, rows, 5);
    set_integer(L, "experts", u->experts);
    set_boolean(L, "count_padding", u->count_padding);
    set_string(L, "decoder_source",
               u->decoder_source == USAGE_DECODER_GENERATED ? "generated" : "teacher");
    lua_createtable(L, 0, 2);
    set_number(L, "encoder", usage_table_mean_entropy(u, 0));
    set_number(L, "decoder", usage_table_mean_entropy(u, 1));
    lua_setfield(L, -2, "mean_entropy");
    for (int row = 0; row < rows; row++) {
        push_usage_row(L, u, row);
        lua_seti(L, -2, row + 1);
    }
}

/* ---- evaluations, status, histories, reports ---- */

void push_evaluation(lua_State *L, const struct evaluation *e, const char *task)
{
    lua_createtable(L, 0, 12);
    set_string(L, "task", task);
    set_string(L, "split", task_split_name(e->split));
    set_string(L, "metric", task_metric_name(e->metric));
    set_integer(L, "examples", e->examples);
    set_number(L, "loss", e->loss);
    set_number(L, "seconds", e->seconds);
    lua_createtable(L, 0, e->figure_count);
    for (int i = 0; i < e->figure_count; i++)
        set_number(L, e->figure_names[i], e->figures[i]);
    lua_setfield(L, -2, "figures");
    if (e->figure_count > 0) {
        set_number(L, "primary", e->primary);
        set_string(L, "primary_name", e->primary_name);
    }
    if (e->predictions != NULL) {
        lua_createtable(L, (int)e->examples, 0);
        for (long i = 0; i < e->examples; i++) {
            lua_pushstring(L, e->predictions[i] != NULL ? e->predictions[i] : "");
            lua_seti(L, -2, i + 1);
        }
        lua_setfield(L, -2, "predictions");
    }
    push_usage(L, &e->usage);
    lua_setfield(L, -2, "usage");
}

void push_status(lua_State *L, const struct job_status *s)
{
    const struct job_report *r = &s->report;
    lua_createtable(L, 0, 16);
    set_string(L, "kind", s->kind);
    set_string(L, "state", job_state_name(s->state));
    set_boolean(L, "idle", s->idle);
    set_integer(L, "step", r->step);
    set_integer(L, "steps", r->steps);
    set_number(L, "loss", r->loss);
    set_number(L, "cross_entropy", r->cross_entropy);
    set_number(L, "validation_loss", r->validation_loss);
    set_number(L, "encoder_entropy", r->encoder_entropy);
    set_number(L, "decoder_entropy", r->decoder_entropy);
    set_number(L, "tokens_per_second", r->tokens_per_second);
    set_number(L, "eta", r->eta);
    set_number(L, "elapsed", s->elapsed);
    if (s->message[0] != '\0')
        set_string(L, "message", s->message);
}

void push_history(lua_State *L, const struct checkpoint_history *h)
{
    lua_createtable(L, (int)h->rows, 0);
    for (long r = 0; r < h->rows; r++) {
        lua_createtable(L, 0, h->columns);
        for (int c = 0; c < h->columns; c++) {
            double v = h->values[(size_t)c * h->rows + r];
            if (strcmp(h->names[c], "step") == 0 && isfinite(v))
                set_integer(L, "step", (lua_Integer)v);
            else
                set_number(L, h->names[c], v);
        }
        lua_seti(L, -2, r + 1);
    }
}

void push_report(lua_State *L, const struct dataset_report *r)
{
    lua_createtable(L, 0, 4);
    set_integer(L, "loaded", r->loaded);
    set_integer(L, "skipped", r->skipped);
    if (r->skipped > 0) {
        set_integer(L, "first_bad_record", r->first_bad_record);
        set_string(L, "first_error", r->first_error);
    }
}
