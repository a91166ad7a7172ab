/* CAEM in Lua: caem.allocate, caem.merge, caem.soup and caem.cka. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "analysis.h"
#include "checkpoint_edit.h"
#include "lua_internal.h"
#include "merge.h"
#include "pretrain.h"

/* caem.allocate(entropies, experts, source_experts, [{alpha=, clamp_alpha=}]) */
static int caem_allocate(lua_State *L)
{
    static const char *const function = "caem.allocate";
    static const char *const options[] = { "alpha", "clamp_alpha", NULL };
    luaL_checktype(L, 1, LUA_TTABLE);
    lua_Integer experts = luaL_checkinteger(L, 2);
    lua_Integer source_experts = luaL_checkinteger(L, 3);
    option_check_keys(L, 4, function, options, 0, 1);
    double alpha = lua_istable(L, 4) ? option_number(L, 4, "alpha", function, 1.0, 0.0, 1.0)
                                     : 1.0;
    int clamp = lua_istable(L, 4) ? option_boolean(L, 4, "clamp_alpha", function, 1) : 1;
    lua_Integer tasks = luaL_len(L, 1);
    if (tasks < 1 || tasks > MERGE_MAX_SOURCES)
        return luaL_error(L, "%s: expected 1 to %d entropies, got %d", function,
                          MERGE_MAX_SOURCES, (int)tasks);
    if (experts < 1 || experts > CONFIG_MAX_EXPERTS || source_experts < 1 ||
        source_experts > CONFIG_MAX_EXPERTS)
        return luaL_error(L, "%s: expert counts must be 1 to %d", function,
                          CONFIG_MAX_EXPERTS);
    double h[MERGE_MAX_SOURCES];
    for (lua_Integer i = 1; i <= tasks; i++) {
        lua_geti(L, 1, i);
        if (!lua_isnumber(L, -1))
            return luaL_error(L, "%s: entropy %d is not a number", function, (int)i);
        h[i - 1] = lua_tonumber(L, -1);
        lua_pop(L, 1);
    }
    int n[MERGE_MAX_SOURCES];
    struct merge_allocation_report report;
    struct caem_error err;
    if (merge_allocate(h, (int)tasks, (int)experts, (int)source_experts, alpha, clamp, n,
                       &report, &err) != 0)
        return raise_error(L, function, &err);
    lua_createtable(L, (int)tasks, 0);
    for (lua_Integer i = 1; i <= tasks; i++) {
        lua_pushinteger(L, n[i - 1]);
        lua_seti(L, -2, i);
    }
    lua_createtable(L, 0, 3);
    set_number(L, "alpha", report.alpha);
    set_boolean(L, "uniform_fallback", report.uniform_fallback);
    lua_createtable(L, (int)tasks, 0);
    for (lua_Integer i = 1; i <= tasks; i++) {
        lua_pushnumber(L, report.shares[i - 1]);
        lua_seti(L, -2, i);
    }
    lua_setfield(L, -2, "shares");
    return 2;
}

/* The task a source model was fine-tuned on: its train state's, or its
 * "task" attribute. */
static const char *model_task(const struct checkpoint *ck)
{
    if (ck->has_train_state && ck->train.task[0] != '\0')
        return ck->train.task;
    for (int i = 0; i < ck->attr_count; i++)
        if (strcmp(ck->attr_names[i], "task") == 0)
            return ck->attr_values[i];
    return NULL;
}

static const char *model_base(const struct checkpoint *ck)
{
    for (int i = 0; i < ck->attr_count; i++)
        if (strcmp(ck->attr_names[i], "base") == 0)
            return ck->attr_values[i];
    return NULL;
}

/* The stored usage record of a model's own task on `split`. */
static const struct usage_table *stored_usage(const struct checkpoint *ck, const char *split,
                                              int source, struct caem_error *err)
{
    const char *task = model_task(ck);
    for (int i = 0; i < ck->usage_count; i++)
        if (strcmp(ck->usage[i].split, split) == 0 &&
            (task == NULL || strcmp(ck->usage[i].task, task) == 0))
            return &ck->usage[i].table;
    caem_fail(err, "source %d has no usage record of %s on %s; run model:usage{task=..., "
              "split='%s'} and save it, or pass usage tables", source, task != NULL ? task
              : "its task", split, split);
    return NULL;
}

/* Reads a Lua usage table (as push_usage writes it) into t, shaped for cfg.
 * Raises no Lua error: returns -1 with err set. */
static int usage_from_lua(lua_State *L, int index, const struct model_config *cfg, int source,
                          struct usage_table *t, struct caem_error *err)
{
    if (usage_table_init(t, cfg, err) != 0)
        return -1;
    int rows = usage_table_rows(t), status = 0;
    if (!lua_istable(L, index) || luaL_len(L, index) != rows) {
        usage_table_free(t);
        return caem_fail(err, "usage %d must be a usage table of %d MoE layers", source, rows);
    }
    for (int row = 0; row < rows && status == 0; row++) {
        lua_geti(L, index, row + 1);
        int pushed = 1;
        int type = LUA_TNIL;
        if (lua_istable(L, -1)) {
            type = lua_getfield(L, -1, "kept");
            pushed = 2;
        }
        if (type != LUA_TTABLE || luaL_len(L, -1) != t->experts)
            status = caem_fail(err, "usage %d, layer %d: 'kept' must list %d counts", source,
                               row + 1, t->experts);
        for (int e = 0; e < t->experts && status == 0; e++) {
            lua_geti(L, -1, e + 1);
            int ok = 0;
            lua_Integer v = lua_tointegerx(L, -1, &ok);
            if (!ok || v < 0)
                status = caem_fail(err, "usage %d, layer %d: kept[%d] is not a count", source,
                                   row + 1, e + 1);
            t->kept[(size_t)row * t->experts + e] = v;
            lua_pop(L, 1);
        }
        lua_pop(L, pushed);
    }
    if (status != 0)
        usage_table_free(t);
    return status;
}

struct merge_inputs {
    int count;
    struct lua_model *models[MERGE_MAX_SOURCES];
    struct usage_table owned[MERGE_MAX_SOURCES];
    int owns[MERGE_MAX_SOURCES];
    const struct usage_table *usage[MERGE_MAX_SOURCES];
};

static void merge_inputs_free(struct merge_inputs *in)
{
    for (int i = 0; i < in->count; i++)
        if (in->owns[i])
            usage_table_free(&in->owned[i]);
}

/* Collects the usage of every source: stored records of `split`, or the Lua
 * tables of the list at usage_index. */
static int merge_collect_usage(lua_State *L, struct merge_inputs *in, const char *split,
                               int usage_index, struct caem_error *err)
{
    for (int i = 0; i < in->count; i++) {
        const struct checkpoint *ck = &in->models[i]->state;
        if (usage_index == 0) {
            in->usage[i] = stored_usage(ck, split, i + 1, err);
            if (in->usage[i] == NULL)
                return -1;
            continue;
        }
        lua_geti(L, usage_index, i + 1);
        int status = usage_from_lua(L, lua_gettop(L), &ck->model->config, i + 1,
                                    &in->owned[i], err);
        lua_pop(L, 1);
        if (status != 0)
            return -1;
        in->owns[i] = 1;
        in->usage[i] = &in->owned[i];
    }
    return 0;
}

/* Fills the merged model's checkpoint state: provenance and base. */
static int merge_describe(struct lua_model *target, struct merge_inputs *in,
                          const char *usage_text, const char *base, struct caem_error *err)
{
    struct checkpoint *ck = &target->state;
    ck->has_merge = 1;
    ck->merge_sources = calloc((size_t)in->count, sizeof *ck->merge_sources);
    ck->merge_usage = strdup(usage_text);
    if (ck->merge_sources == NULL || ck->merge_usage == NULL)
        return caem_fail(err, "out of memory for the merge provenance");
    for (int i = 0; i < in->count; i++) {
        const struct lua_model *m = in->models[i];
        const char *name = m->path != NULL ? m->path : (m->name != NULL ? m->name : "model");
        ck->merge_sources[i] = strdup(name);
        if (ck->merge_sources[i] == NULL)
            return caem_fail(err, "out of memory for the merge provenance");
    }
    if (base != NULL && checkpoint_set_attribute(ck, "base", base, err) != 0)
        return -1;
    return 0;
}

/* caem.merge{sources=, experts=, alpha=, usage="validation" | {usage, ...},
 *            allocation=, embedding=, clamp_alpha=, allow_different_bases=, name=} */
static int caem_merge(lua_State *L)
{
    static const char *const function = "caem.merge";
    static const char *const options[] = { "sources", "experts", "alpha", "usage",
                                           "allocation", "embedding", "clamp_alpha",
                                           "allow_different_bases", "name", NULL };
    static const char *const embeddings[] = { "mean", "reference", NULL };
    luaL_checktype(L, 1, LUA_TTABLE);
    option_check_keys(L, 1, function, options, 0, 0);
    struct merge_options o = merge_defaults();
    o.experts = (int)option_integer(L, 1, "experts", function, -1, 1, CONFIG_MAX_EXPERTS);
    o.alpha = option_number(L, 1, "alpha", function, 1.0, 0.0, 1.0);
    o.clamp_alpha = option_boolean(L, 1, "clamp_alpha", function, 1);
    o.embedding = option_choice(L, 1, "embedding", function, embeddings, 0) == 1
                      ? MERGE_EMBEDDING_REFERENCE : MERGE_EMBEDDING_MEAN;
    int allow_bases = option_boolean(L, 1, "allow_different_bases", function, 0);
    const char *name = option_string(L, 1, "name", function, "merged");
    if (o.experts < 1)
        return luaL_error(L, "%s: option 'experts' (the target's experts per layer) is "
                          "required", function);

    /* sources */
    struct merge_inputs in;
    memset(&in, 0, sizeof in);
    if (lua_getfield(L, 1, "sources") != LUA_TTABLE)
        return luaL_error(L, "%s: option 'sources' must be a list of models", function);
    int sources_index = lua_gettop(L);
    lua_Integer count = luaL_len(L, sources_index);
    if (count < 1 || count > MERGE_MAX_SOURCES)
        return luaL_error(L, "%s: expected 1 to %d sources, got %d", function,
                          MERGE_MAX_SOURCES, (int)count);
    in.count = (int)count;
    for (int i = 0; i < in.count; i++) {
        lua_geti(L, sources_index, i + 1);
        in.models[i] = luaL_testudata(L, -1, MODEL_TYPE);
        if (in.models[i] == NULL || in.models[i]->state.model == NULL)
            return luaL_error(L, "%s: source %d is not a model", function, i + 1);
        lua_model_check_idle(L, in.models[i], function);
    }
    const char *base = model_base(&in.models[0]->state);
    for (int i = 1; i < in.count && !allow_bases; i++) {
        const char *other = model_base(&in.models[i]->state);
        if (base == NULL || other == NULL || strcmp(base, other) != 0)
            return luaL_error(L, "%s: sources 1 and %d do not record the same base model "
                              "(%s and %s); fine-tune them from one base, or pass "
                              "allow_different_bases = true", function, i + 1,
                              base != NULL ? base : "none", other != NULL ? other : "none");
    }

    /* a fixed allocation */
    int fixed[MERGE_MAX_SOURCES];
    if (lua_getfield(L, 1, "allocation") == LUA_TTABLE) {
        if (luaL_len(L, -1) != count)
            return luaL_error(L, "%s: option 'allocation' must list one count per source",
                              function);
        for (int i = 0; i < in.count; i++) {
            lua_geti(L, -1, i + 1);
            fixed[i] = (int)luaL_checkinteger(L, -1);
            lua_pop(L, 1);
        }
        o.fixed_allocation = fixed;
    } else if (!lua_isnil(L, -1)) {
        return luaL_error(L, "%s: option 'allocation' must be a list of counts", function);
    }
    lua_pop(L, 1);

    /* usage: a split name or a list of usage tables */
    const char *split = "validation";
    int usage_index = 0;
    int type = lua_getfield(L, 1, "usage");
    if (type == LUA_TSTRING)
        split = lua_tostring(L, -1);
    else if (type == LUA_TTABLE)
        usage_index = lua_gettop(L);
    else if (type != LUA_TNIL)
        return luaL_error(L, "%s: option 'usage' must be a split name or a list of usage "
                          "tables", function);
    char usage_text[128];
    snprintf(usage_text, sizeof usage_text, "%s", usage_index ? "tables given to caem.merge"
                                                              : split);

    struct lua_model *target = lua_newuserdatauv(L, sizeof *target, 0);
    memset(target, 0, sizeof *target);
    luaL_setmetatable(L, MODEL_TYPE);
    struct caem_error err;
    struct model *sources[MERGE_MAX_SOURCES];
    for (int i = 0; i < in.count; i++)
        sources[i] = in.models[i]->state.model;
    int status = merge_collect_usage(L, &in, split, usage_index, &err);
    if (status == 0)
        status = merge_models(&target->state.model, sources, in.usage, in.count, &o,
                              &target->state.merge, &err);
    if (status == 0)
        status = merge_describe(target, &in, usage_text, base, &err);
    merge_inputs_free(&in);
    target->name = strdup(name);
    if (status != 0)
        return raise_error(L, function, &err);
    lua_caem_watch_set(L, "merge", -1); /* the screen's merge view shows it */
    return 1;
}

/* caem.soup(a, b, [weight]) */
static int caem_soup(lua_State *L)
{
    struct lua_model *a = lua_model_check(L, 1), *b = lua_model_check(L, 2);
    double weight = luaL_optnumber(L, 3, 0.5);
    lua_model_check_idle(L, a, "caem.soup");
    lua_model_check_idle(L, b, "caem.soup");
    struct lua_model *soup = lua_newuserdatauv(L, sizeof *soup, 0);
    memset(soup, 0, sizeof *soup);
    luaL_setmetatable(L, MODEL_TYPE);
    soup->name = strdup("soup");
    struct caem_error err;
    if (model_soup(&soup->state.model, a->state.model, b->state.model, weight, &err) != 0)
        return raise_error(L, "caem.soup", &err);
    const char *base = model_base(&a->state);
    if (base != NULL && checkpoint_set_attribute(&soup->state, "base", base, &err) != 0)
        return raise_error(L, "caem.soup", &err);
    return 1;
}

/* caem.cka(a, b, task, [{split=, limit=, batch=}]) -> {encoder={...}, decoder={...}} */
static int caem_cka(lua_State *L)
{
    static const char *const function = "caem.cka";
    static const char *const options[] = { "split", "limit", "batch", NULL };
    struct lua_model *a = lua_model_check(L, 1), *b = lua_model_check(L, 2);
    struct lua_task *lk = lua_task_check(L, 3);
    option_check_keys(L, 4, function, options, 0, 1);
    enum task_split_kind split = TASK_SPLIT_VALIDATION;
    long limit = 64;
    int batch = 16;
    if (lua_istable(L, 4)) {
        split = check_split(L, option_string(L, 4, "split", function, "validation"), function);
        limit = (long)option_integer(L, 4, "limit", function, 64, 0, LUA_MAXINTEGER);
        batch = (int)option_integer(L, 4, "batch", function, 16, 1, 65536);
    }
    lua_model_check_idle(L, a, function);
    lua_model_check_idle(L, b, function);
    struct caem_error err;
    if (task_tokenize_split(&lk->task, split, &err) != 0)
        return raise_error(L, function, &err);
    const struct model_config *cfg = &a->state.model->config;
    int blocks = cfg->encoder_layers + cfg->decoder_layers;
    double *values = lua_newuserdatauv(L, sizeof(double) * (size_t)blocks, 0);
    if (model_cka(a->state.model, b->state.model, &lk->task.splits[split].tokens, limit,
                  batch, values, &err) != 0)
        return raise_error(L, function, &err);
    lua_createtable(L, 0, 2);
    for (int d = 0; d < 2; d++) {
        int layers = d ? cfg->decoder_layers : cfg->encoder_layers;
        lua_createtable(L, layers, 0);
        for (int k = 0; k < layers; k++) {
            lua_pushnumber(L, values[(d ? cfg->encoder_layers : 0) + k]);
            lua_seti(L, -2, k + 1);
        }
        lua_setfield(L, -2, d ? "decoder" : "encoder");
    }
    return 1;
}

/* caem.span_corruption{task=, chunk=, seed=, name=, noise_density=, mean_span_length=}
 * -> a task of T5 span-corruption sequences made from the task's train and
 * validation text, for pretraining a common base with model:train. */
static int caem_span_corruption(lua_State *L)
{
    static const char *const function = "caem.span_corruption";
    static const char *const options[] = { "task", "chunk", "seed", "name", "noise_density",
                                           "mean_span_length", NULL };
    luaL_checktype(L, 1, LUA_TTABLE);
    option_check_keys(L, 1, function, options, 0, 0);
    struct lua_task *source = option_userdata(L, 1, "task", function, TASK_TYPE, 1);
    int source_index = lua_gettop(L);
    int chunk = (int)option_integer(L, 1, "chunk", function, 114, 2, 4096);
    uint64_t seed = (uint64_t)option_integer(L, 1, "seed", function, 1, 0, LUA_MAXINTEGER);
    const char *name = option_string(L, 1, "name", function, "span_corruption");
    struct span_corruption c = span_corruption_defaults();
    c.noise_density = option_number(L, 1, "noise_density", function, c.noise_density, 0.0, 1.0);
    c.mean_span_length = option_number(L, 1, "mean_span_length", function,
                                       c.mean_span_length, 1.0, 1000.0);
    const struct task *src = &source->task;
    if (src->tokenizer == NULL)
        return luaL_error(L, "%s: the task has no tokenizer", function);

    struct lua_task *lk = lua_newuserdatauv(L, sizeof *lk, 1);
    memset(lk, 0, sizeof *lk);
    luaL_setmetatable(L, TASK_TYPE);
    lua_getiuservalue(L, source_index, 1); /* the tokenizer stays alive with the task */
    lua_setiuservalue(L, -2, 1);
    struct caem_error err;
    if (task_init(&lk->task, name, TASK_METRIC_ACCURACY, src->tokenizer, chunk + 1, chunk + 1,
                  &err) != 0)
        return raise_error(L, function, &err);
    const enum task_split_kind splits[2] = { TASK_SPLIT_TRAIN, TASK_SPLIT_VALIDATION };
    struct tokenizer_special_ids ids = tokenizer_special_ids(src->tokenizer);
    for (int k = 0; k < 2; k++) {
        if (src->splits[splits[k]].data.count == 0)
            continue;
        struct task_split *out = &lk->task.splits[splits[k]];
        /* T5 starts the decoder from the padding id */
        if (task_tokens_init(&out->tokens, chunk + 1, chunk + 1, ids.eos_id, ids.pad_id,
                             ids.pad_id, &err) != 0 ||
            span_corruption_build(&c, src, splits[k], chunk, seed + (uint64_t)k, &out->tokens,
                                  &err) != 0)
            return raise_error(L, function, &err);
        out->tokenized = 1;
    }
    if (lk->task.splits[TASK_SPLIT_TRAIN].tokens.count == 0)
        return luaL_error(L, "%s: the task's train text gives no chunk of %d ids; use a "
                          "smaller chunk", function, chunk);
    return 1;
}

void push_merge(lua_State *L, const struct checkpoint *ck)
{
    const struct merge_record *r = &ck->merge;
    if (!ck->has_merge) {
        lua_pushnil(L);
        return;
    }
    lua_createtable(L, 0, 10);
    set_integer(L, "sources", r->sources);
    set_integer(L, "experts", r->experts);
    set_number(L, "alpha", r->alpha);
    set_number(L, "alpha_used", r->alpha_used);
    set_string(L, "embedding", r->embedding == MERGE_EMBEDDING_REFERENCE ? "reference" : "mean");
    set_string(L, "usage", ck->merge_usage != NULL ? ck->merge_usage : "");
    set_integer(L, "uniform_fallbacks", r->uniform_fallbacks);
    lua_createtable(L, r->sources, 0);
    for (int i = 0; i < r->sources; i++) {
        lua_pushstring(L, ck->merge_sources != NULL ? ck->merge_sources[i] : "");
        lua_seti(L, -2, i + 1);
    }
    lua_setfield(L, -2, "source_names");
    for (int d = 0; d < 2; d++) {
        lua_createtable(L, r->sources, 0);
        for (int i = 0; i < r->sources; i++) {
            lua_pushnumber(L, r->weights[d][i]);
            lua_seti(L, -2, i + 1);
        }
        lua_setfield(L, -2, d ? "decoder_weights" : "encoder_weights");
    }
    int rows = r->layers[0] + r->layers[1];
    lua_createtable(L, rows, 0);
    for (int row = 0; row < rows; row++) {
        lua_createtable(L, 0, 5);
        set_string(L, "stack", row < r->layers[0] ? "encoder" : "decoder");
        set_integer(L, "layer", row < r->layers[0] ? row + 1 : row - r->layers[0] + 1);
        lua_createtable(L, r->sources, 0);
        lua_createtable(L, r->sources, 0);
        for (int i = 0; i < r->sources; i++) {
            lua_pushnumber(L, r->entropies[row * r->sources + i]);
            lua_seti(L, -3, i + 1);
            lua_pushinteger(L, r->allocation[row * r->sources + i]);
            lua_seti(L, -2, i + 1);
        }
        lua_setfield(L, -3, "allocation");
        lua_setfield(L, -2, "entropies");
        lua_createtable(L, r->experts, 0);
        for (int k = 0; k < r->experts; k++) {
            lua_createtable(L, 0, 2);
            set_integer(L, "source", r->slot_source[row * r->experts + k] + 1);
            set_integer(L, "expert", r->slot_expert[row * r->experts + k]);
            lua_seti(L, -2, k + 1);
        }
        lua_setfield(L, -2, "slots");
        lua_seti(L, -2, row + 1);
    }
    lua_setfield(L, -2, "layers");
}

void lua_caem_open_merge(lua_State *L)
{
    static const luaL_Reg functions[] = {
        { "allocate", caem_allocate },
        { "merge", caem_merge },
        { "soup", caem_soup },
        { "cka", caem_cka },
        { "span_corruption", caem_span_corruption },
        { NULL, NULL },
    };
    luaL_setfuncs(L, functions, 0);
}
