/* Models in Lua: caem.model, caem.load, caem.info, caem.import and the
 * methods that read or save a model. model:train, model:evaluate,
 * model:usage and model:generate are in lua_run.c. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "checkpoint_edit.h"
#include "hf_import.h"
#include "lua_internal.h"

/* A checkpoint summary that caem.info frees even when a conversion raises. */
#define SUMMARY_TYPE "caem.checkpoint_summary"

/* Tensor values model:param returns without a max_values option. */
#define PARAM_VALUES_DEFAULT (1L << 20)

struct lua_model *lua_model_check(lua_State *L, int index)
{
    struct lua_model *lm = luaL_checkudata(L, index, MODEL_TYPE);
    if (lm->state.model == NULL)
        luaL_error(L, "the model was freed");
    return lm;
}

void lua_model_check_idle(lua_State *L, struct lua_model *lm, const char *function)
{
    if (lm->job == NULL)
        return;
    if (lua_job_ended(lm->job)) {
        lua_job_release(L, lm->job);
        return;
    }
    luaL_error(L, "%s: model is in use by a running job (%s); call job:wait() or job:stop() "
               "first", function, lua_job_kind_name(lm->job->kind));
}

void lua_model_check_vocabulary(lua_State *L, const struct lua_model *lm,
                                const struct tokenizer *tok, const char *function)
{
    int model_vocab = lm->state.model->config.vocab_size;
    if (model_vocab < tokenizer_vocab_size(tok))
        luaL_error(L, "%s: the model's vocabulary has %d ids, fewer than the tokenizer's %d; "
                   "create the model with vocab_size = tokenizer.vocab_size", function,
                   model_vocab, tokenizer_vocab_size(tok));
}

static char *copy_or_raise(lua_State *L, const char *s)
{
    char *copy = strdup(s);
    if (copy == NULL)
        luaL_error(L, "out of memory for the string '%s'", s);
    return copy;
}

/* Pushes an empty model userdata, which frees what it gets on collection. */
static struct lua_model *model_push(lua_State *L)
{
    struct lua_model *lm = lua_newuserdatauv(L, sizeof *lm, 0);
    memset(lm, 0, sizeof *lm);
    luaL_setmetatable(L, MODEL_TYPE);
    return lm;
}

/* caem.model{preset=, seed=, name=, tokenizer=, <config field>=...} */
static int caem_model(lua_State *L)
{
    static const char *const function = "caem.model";
    static const char *const options[] = { "preset", "seed", "name", "tokenizer", NULL };
    if (lua_isnoneornil(L, 1)) {
        lua_settop(L, 0);
        lua_newtable(L);
    }
    push_config_fields(L);
    option_check_keys(L, 1, function, options, -1, 1);
    lua_pop(L, 1);
    lua_Integer seed = option_integer(L, 1, "seed", function, 1, 0, LUA_MAXINTEGER);
    struct lua_tokenizer *lt = option_userdata(L, 1, "tokenizer", function, TOKENIZER_TYPE, 0);
    lua_pop(L, 1);
    int vocab_given = lua_getfield(L, 1, "vocab_size") != LUA_TNIL;
    lua_pop(L, 1);
    struct model_config cfg;
    struct caem_error err;
    read_config(L, 1, function, &cfg);
    if (lt != NULL && !vocab_given) {
        cfg.vocab_size = tokenizer_vocab_size(lt->tokenizer);
        if (config_validate(&cfg, &err) != 0)
            return raise_error(L, function, &err);
    }
    const char *name = option_string(L, 1, "name", function,
                                     option_string(L, 1, "preset", function, "small"));

    const struct backend *be;
    if (backend_default(&be, &err) != 0)
        return raise_error(L, function, &err);
    struct lua_model *lm = model_push(L);
    lm->name = copy_or_raise(L, name);
    if (model_create(&lm->state.model, &cfg, be, &err) != 0)
        return raise_error(L, function, &err);
    model_init_params(lm->state.model, (uint64_t)seed);
    if (lt != NULL)
        lua_model_check_vocabulary(L, lm, lt->tokenizer, function);
    return 1;
}

/* caem.load(path) */
static int caem_load(lua_State *L)
{
    const char *path = luaL_checkstring(L, 1);
    struct lua_model *lm = model_push(L);
    lm->name = copy_or_raise(L, path);
    lm->path = copy_or_raise(L, path);
    struct caem_error err;
    const struct backend *be;
    if (backend_default(&be, &err) != 0 || checkpoint_load(path, be, &lm->state, &err) != 0)
        return raise_error(L, "caem.load", &err);
    return 1;
}

/* Sets the attributes that model:save's options at index `options` name. */
static void save_attributes(lua_State *L, struct lua_model *lm, int options,
                            const char *function)
{
    struct caem_error err;
    struct checkpoint *ck = &lm->state;
    const char *task = NULL, *tokenizer = NULL;
    struct lua_task *lk = NULL;
    if (lua_getfield(L, options, "task") == LUA_TSTRING)
        task = lua_tostring(L, -1);
    else if ((lk = luaL_testudata(L, -1, TASK_TYPE)) != NULL)
        task = lk->task.name;
    else if (!lua_isnil(L, -1))
        luaL_error(L, "%s: option 'task' must be a string or a caem.task", function);
    struct lua_tokenizer *lt = NULL;
    if (lua_getfield(L, options, "tokenizer") == LUA_TSTRING)
        tokenizer = lua_tostring(L, -1);
    else if ((lt = luaL_testudata(L, -1, TOKENIZER_TYPE)) != NULL)
        tokenizer = lt->path;
    else if (!lua_isnil(L, -1))
        luaL_error(L, "%s: option 'tokenizer' must be a path or a caem.tokenizer", function);
    const char *base = option_string(L, options, "base", function, NULL);
    if ((task != NULL && checkpoint_set_attribute(ck, "task", task, &err) != 0) ||
        (tokenizer != NULL && checkpoint_set_attribute(ck, "tokenizer", tokenizer, &err)) ||
        (base != NULL && checkpoint_set_attribute(ck, "base", base, &err) != 0))
        raise_error(L, function, &err);
    lua_pop(L, 2);

    if (lua_getfield(L, options, "attributes") == LUA_TNIL) {
        lua_pop(L, 1);
        return;
    }
    if (!lua_istable(L, -1))
        luaL_error(L, "%s: option 'attributes' must be a table of strings", function);
    lua_pushnil(L);
    while (lua_next(L, -2) != 0) {
        if (lua_type(L, -2) != LUA_TSTRING || !lua_isstring(L, -1))
            luaL_error(L, "%s: attributes must map names to strings", function);
        if (checkpoint_set_attribute(ck, lua_tostring(L, -2), lua_tostring(L, -1), &err))
            raise_error(L, function, &err);
        lua_pop(L, 1);
    }
    lua_pop(L, 1);
}

/* model:save([path], {task=, tokenizer=, base=, attributes=, optimizer=}) */
static int method_save(lua_State *L)
{
    static const char *const function = "model:save";
    static const char *const options[] = { "task", "tokenizer", "base", "attributes",
                                           "optimizer", NULL };
    struct lua_model *lm = lua_model_check(L, 1);
    lua_model_check_idle(L, lm, function);
    int index = 3;
    const char *path = lm->path;
    if (lua_istable(L, 2))
        index = 2;
    else
        path = luaL_optstring(L, 2, lm->path);
    if (path == NULL)
        return luaL_error(L, "%s: no path given, and the model was not loaded or saved "
                          "before", function);
    option_check_keys(L, index, function, options, 0, 1);
    lua_settop(L, 3);
    if (lua_isnil(L, index)) {
        lua_newtable(L);
        lua_replace(L, index);
    }
    int optimizer = option_boolean(L, index, "optimizer", function, 1);
    struct caem_error err;
    if (checkpoint_check_target(path, &err) != 0)
        return raise_error(L, function, &err);
    save_attributes(L, lm, index, function);
    if (checkpoint_attribute(&lm->state, "base") == NULL) {
        char hash[17];
        checkpoint_params_hash(lm->state.model, hash);
        if (checkpoint_set_attribute(&lm->state, "base", hash, &err) != 0)
            return raise_error(L, function, &err);
    }
    struct checkpoint ck = lm->state;
    if (!optimizer) {
        ck.optimizer = NULL;
        ck.has_train_state = 0;
    }
    if (checkpoint_save(path, &ck, &err) != 0)
        return raise_error(L, function, &err);
    char *copy = copy_or_raise(L, path);
    free(lm->path);
    lm->path = copy;
    return 0;
}

/* model:param(name, {max_values=N}) returns the values, row-major, and the shape. */
static int method_param(lua_State *L)
{
    static const char *const function = "model:param";
    static const char *const options[] = { "max_values", NULL };
    struct lua_model *lm = lua_model_check(L, 1);
    const char *name = luaL_checkstring(L, 2);
    option_check_keys(L, 3, function, options, 0, 1);
    lua_Integer limit = option_integer(L, 3, "max_values", function, PARAM_VALUES_DEFAULT, 1,
                                       (lua_Integer)1 << 31);
    lua_model_check_idle(L, lm, function);
    const struct param_info *p = param_find(&lm->state.model->layout, name);
    if (p == NULL)
        return luaL_error(L, "%s: no tensor '%s' (model:tensors() lists them)", function,
                          name);
    if ((lua_Integer)p->count > limit)
        return luaL_error(L, "%s: tensor '%s' has %I values, more than max_values %I; pass "
                          "{max_values = %I} to read it", function, name,
                          (lua_Integer)p->count, limit, (lua_Integer)p->count);
    size_t count = p->count;
    float *values = malloc(sizeof(float) * (count > 0 ? count : 1));
    if (values == NULL)
        return luaL_error(L, "%s: out of memory for %I values", function, (lua_Integer)count);
    const struct model *m = lm->state.model;
    m->backend->download(values, m->params + p->offset, sizeof(float) * count);
    lua_createtable(L, (int)count, 0);
    for (size_t i = 0; i < count; i++) {
        lua_pushnumber(L, values[i]);
        lua_seti(L, -2, (lua_Integer)i + 1);
    }
    free(values);
    lua_createtable(L, p->ndim, 0);
    for (int d = 0; d < p->ndim; d++) {
        lua_pushinteger(L, p->shape[d]);
        lua_seti(L, -2, d + 1);
    }
    return 2;
}

/* model:tensors() lists {name=, shape=, count=, expert=} in layout order. */
static int method_tensors(lua_State *L)
{
    struct lua_model *lm = lua_model_check(L, 1);
    const struct param_layout *layout = &lm->state.model->layout;
    lua_createtable(L, layout->count, 0);
    for (int i = 0; i < layout->count; i++) {
        const struct param_info *p = &layout->tensors[i];
        lua_createtable(L, 0, 4);
        set_string(L, "name", p->name);
        set_integer(L, "count", (lua_Integer)p->count);
        set_boolean(L, "expert", p->expert);
        lua_createtable(L, p->ndim, 0);
        for (int d = 0; d < p->ndim; d++) {
            lua_pushinteger(L, p->shape[d]);
            lua_seti(L, -2, d + 1);
        }
        lua_setfield(L, -2, "shape");
        lua_seti(L, -2, i + 1);
    }
    return 1;
}

static int method_hash(lua_State *L)
{
    struct lua_model *lm = lua_model_check(L, 1);
    lua_model_check_idle(L, lm, "model:hash");
    char hash[17];
    checkpoint_params_hash(lm->state.model, hash);
    lua_pushstring(L, hash);
    return 1;
}

static void push_usage_records(lua_State *L, const struct checkpoint *ck)
{
    lua_createtable(L, ck->usage_count, 0);
    for (int i = 0; i < ck->usage_count; i++) {
        lua_createtable(L, 0, 3);
        set_string(L, "task", ck->usage[i].task);
        set_string(L, "split", ck->usage[i].split);
        push_usage(L, &ck->usage[i].table);
        lua_setfield(L, -2, "usage");
        lua_seti(L, -2, i + 1);
    }
}

static int method_usage_records(lua_State *L)
{
    struct lua_model *lm = lua_model_check(L, 1);
    lua_model_check_idle(L, lm, "model:usage_records");
    push_usage_records(L, &lm->state);
    return 1;
}

static int method_history(lua_State *L)
{
    struct lua_model *lm = lua_model_check(L, 1);
    lua_model_check_idle(L, lm, "model:history");
    push_history(L, &lm->state.history);
    return 1;
}

static void push_attributes(lua_State *L, const struct checkpoint *ck)
{
    lua_createtable(L, 0, ck->attr_count);
    for (int i = 0; i < ck->attr_count; i++)
        set_string(L, ck->attr_names[i], ck->attr_values[i]);
}

static void push_train_state(lua_State *L, const struct checkpoint_train_state *t)
{
    lua_createtable(L, 0, 8);
    set_integer(L, "seed", (lua_Integer)t->seed);
    set_integer(L, "step", t->step);
    set_integer(L, "epoch", t->epoch);
    set_integer(L, "epoch_batch", t->epoch_batch);
    set_integer(L, "batch_size", t->batch_size);
    set_integer(L, "accumulation", t->accumulation);
    set_string(L, "task", t->task);
}

/* Pushes model.step or model.attributes, which a running job changes. */
static void push_run_field(lua_State *L, struct lua_model *lm, const char *key)
{
    lua_model_check_idle(L, lm, lua_pushfstring(L, "model.%s", key));
    lua_pop(L, 1);
    const struct checkpoint *ck = &lm->state;
    if (strcmp(key, "step") == 0)
        lua_pushinteger(L, ck->has_train_state ? ck->train.step : 0);
    else
        push_attributes(L, ck);
}

/* Fields: config, parameters, name, path, step, attributes, busy, merge. */
static int push_model_field(lua_State *L, struct lua_model *lm, const char *key)
{
    const struct checkpoint *ck = &lm->state;
    if (strcmp(key, "config") == 0)
        push_config(L, &ck->model->config);
    else if (strcmp(key, "parameters") == 0)
        lua_pushinteger(L, (lua_Integer)ck->model->layout.total);
    else if (strcmp(key, "name") == 0)
        lua_pushstring(L, lm->name);
    else if (strcmp(key, "path") == 0)
        lua_pushstring(L, lm->path);
    else if (strcmp(key, "step") == 0 || strcmp(key, "attributes") == 0)
        push_run_field(L, lm, key);
    else if (strcmp(key, "busy") == 0)
        lua_pushboolean(L, lm->job != NULL && !lua_job_ended(lm->job));
    else if (strcmp(key, "merge") == 0)
        push_merge(L, ck);
    else
        return 0;
    return 1;
}

static int model_index(lua_State *L)
{
    struct lua_model *lm = lua_model_check(L, 1);
    const char *key = luaL_checkstring(L, 2);
    if (lua_getfield(L, lua_upvalueindex(1), key) != LUA_TNIL)
        return 1;
    lua_pop(L, 1);
    if (!push_model_field(L, lm, key))
        return luaL_error(L, "caem.model has no field or method '%s'", key);
    return 1;
}

/* Writes n as "26.2M", "431.1k" or "950". */
static void format_count(char *out, size_t size, double n)
{
    if (n >= 1e9)
        snprintf(out, size, "%.1fG", n / 1e9);
    else if (n >= 1e6)
        snprintf(out, size, "%.1fM", n / 1e6);
    else if (n >= 1e3)
        snprintf(out, size, "%.1fk", n / 1e3);
    else
        snprintf(out, size, "%.0f", n);
}

static int model_tostring(lua_State *L)
{
    struct lua_model *lm = luaL_checkudata(L, 1, MODEL_TYPE);
    if (lm->state.model == NULL) {
        lua_pushstring(L, "caem.model(freed)");
        return 1;
    }
    const struct model_config *cfg = &lm->state.model->config;
    char count[32];
    format_count(count, sizeof count, (double)lm->state.model->layout.total);
    lua_pushfstring(L, "caem.model(%s, %s parameters, %d+%d MoE layers x %d experts)",
                    lm->name, count, config_moe_layer_count(cfg, 0),
                    config_moe_layer_count(cfg, 1), cfg->num_experts);
    return 1;
}

/* A job still attached at collection (possible only when the state closes)
 * is stopped first, so that its worker no longer touches the model. */
static int model_gc(lua_State *L)
{
    struct lua_model *lm = luaL_checkudata(L, 1, MODEL_TYPE);
    if (lm->job != NULL) {
        job_stop(lm->job->job);
        job_wait(lm->job->job, -1.0);
        lm->job->model = NULL;
        lm->job = NULL;
    }
    checkpoint_free(&lm->state);
    free(lm->name);
    free(lm->path);
    lm->name = lm->path = NULL;
    return 0;
}

/* ---- caem.info, caem.import ---- */

static void push_info(lua_State *L, const char *path, const struct checkpoint *ck)
{
    struct param_layout layout;
    struct caem_error err;
    if (param_layout_build(&layout, &ck->config, &err) != 0)
        raise_error(L, "caem.info", &err);
    lua_Integer parameters = (lua_Integer)layout.total;
    param_layout_free(&layout);
    lua_createtable(L, 0, 10);
    set_string(L, "path", path);
    set_string(L, "created", ck->created);
    set_integer(L, "parameters", parameters);
    push_config(L, &ck->config);
    lua_setfield(L, -2, "config");
    push_attributes(L, ck);
    lua_setfield(L, -2, "attributes");
    if (ck->has_optimizer) {
        lua_createtable(L, 0, 6);
        set_integer(L, "step", ck->optimizer_step);
        set_number(L, "lr", ck->optimizer_config.lr);
        set_number(L, "beta1", ck->optimizer_config.beta1);
        set_number(L, "beta2", ck->optimizer_config.beta2);
        set_number(L, "eps", ck->optimizer_config.eps);
        set_number(L, "weight_decay", ck->optimizer_config.weight_decay);
        lua_setfield(L, -2, "optimizer");
    }
    if (ck->has_train_state) {
        push_train_state(L, &ck->train);
        lua_setfield(L, -2, "train");
    }
    push_usage_records(L, ck);
    lua_setfield(L, -2, "usage");
    push_history(L, &ck->history);
    lua_setfield(L, -2, "history");
    push_merge(L, ck);
    lua_setfield(L, -2, "merge");
}

static int summary_gc(lua_State *L)
{
    checkpoint_free(luaL_checkudata(L, 1, SUMMARY_TYPE));
    return 0;
}

/* caem.info(path) reads a checkpoint's summary without its tensors. */
static int caem_info(lua_State *L)
{
    const char *path = luaL_checkstring(L, 1);
    struct checkpoint *ck = lua_newuserdatauv(L, sizeof *ck, 0);
    memset(ck, 0, sizeof *ck);
    luaL_setmetatable(L, SUMMARY_TYPE);
    struct caem_error err;
    if (checkpoint_load_summary(path, ck, &err) != 0)
        return raise_error(L, "caem.info", &err);
    push_info(L, path, ck);
    checkpoint_free(ck);
    return 1;
}

/* caem.import(hf_dir, out_path) */
static int caem_import(lua_State *L)
{
    const char *dir = luaL_checkstring(L, 1);
    const char *out = luaL_checkstring(L, 2);
    char base[17];
    struct hf_import_report report;
    struct caem_error err;
    if (hf_import_checkpoint(dir, out, base, &report, &err) != 0)
        return raise_error(L, "caem.import", &err);
    lua_createtable(L, 0, 7);
    set_string(L, "base", base);
    set_integer(L, "files", report.files);
    set_integer(L, "tensors", report.tensors);
    set_integer(L, "f32", report.f32);
    set_integer(L, "f16", report.f16);
    set_integer(L, "bf16", report.bf16);
    lua_createtable(L, report.note_count, 0);
    for (int i = 0; i < report.note_count; i++) {
        lua_pushstring(L, report.notes[i]);
        lua_seti(L, -2, i + 1);
    }
    lua_setfield(L, -2, "notes");
    return 1;
}

void lua_caem_open_model(lua_State *L)
{
    static const luaL_Reg methods[] = {
        { "save", method_save },
        { "param", method_param },
        { "tensors", method_tensors },
        { "hash", method_hash },
        { "usage_records", method_usage_records },
        { "history", method_history },
        { "train", lua_model_train },
        { "evaluate", lua_model_evaluate },
        { "usage", lua_model_usage },
        { "generate", lua_model_generate },
        { NULL, NULL },
    };
    luaL_newmetatable(L, MODEL_TYPE);
    luaL_newlib(L, methods);
    lua_pushcclosure(L, model_index, 1);
    lua_setfield(L, -2, "__index");
    lua_pushcfunction(L, model_tostring);
    lua_setfield(L, -2, "__tostring");
    lua_pushcfunction(L, model_gc);
    lua_setfield(L, -2, "__gc");
    lua_pop(L, 1);

    luaL_newmetatable(L, SUMMARY_TYPE);
    lua_pushcfunction(L, summary_gc);
    lua_setfield(L, -2, "__gc");
    lua_pop(L, 1);

    static const luaL_Reg functions[] = {
        { "model", caem_model },
        { "load", caem_load },
        { "info", caem_info },
        { "import", caem_import },
        { NULL, NULL },
    };
    luaL_setfuncs(L, functions, 0);
}
