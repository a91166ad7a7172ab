/* The screen's view of the Lua state (the watched job, the latest merge),
 * and the functions of caem.screen. */
#include <lauxlib.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "lua_caem.h"
#include "lua_internal.h"
#include "screen_internal.h"

/* ---- the state from the job ---- */

static int64_t usage_tokens(const struct usage_table *u)
{
    int64_t total = 0;
    for (int row = 0; row < usage_table_rows(u); row++)
        total += u->tokens[row];
    return total;
}

/* Makes room for the entropy history of `rows` rows, dropping the old one
 * when the shape changed. */
static void entropy_shape(struct screen_state *st, int rows)
{
    if (st->entropy_rows == rows && st->entropy != NULL)
        return;
    free(st->entropy);
    st->entropy = calloc((size_t)(rows > 0 ? rows : 1) * SCREEN_HISTORY, sizeof *st->entropy);
    st->entropy_rows = st->entropy != NULL ? rows : 0;
    st->entropy_count = 0;
}

static void sample_entropy(struct screen *s)
{
    struct screen_state *st = &s->state;
    int rows = usage_table_rows(&st->usage);
    entropy_shape(st, rows);
    if (st->entropy == NULL)
        return;
    if (st->entropy_count == SCREEN_HISTORY) {
        for (int row = 0; row < rows; row++)
            memmove(&st->entropy[row * SCREEN_HISTORY], &st->entropy[row * SCREEN_HISTORY + 1],
                    sizeof *st->entropy * (SCREEN_HISTORY - 1));
        st->entropy_count--;
    }
    for (int row = 0; row < rows; row++)
        st->entropy[row * SCREEN_HISTORY + st->entropy_count] = usage_table_entropy(&st->usage,
                                                                                     row);
    st->entropy_count++;
}

static void sample_loss(struct screen *s)
{
    struct screen_state *st = &s->state;
    const struct job_report *r = &st->job.report;
    if (strcmp(st->job.kind, "train") != 0 || r->step == s->last_sample_step || !isfinite(r->loss))
        return;
    if (r->step < s->last_sample_step)
        st->loss_count = 0; /* a new run */
    s->last_sample_step = r->step;
    if (st->loss_count == SCREEN_HISTORY) {
        memmove(st->loss_step, st->loss_step + 1, sizeof st->loss_step[0] * (SCREEN_HISTORY - 1));
        memmove(st->loss, st->loss + 1, sizeof st->loss[0] * (SCREEN_HISTORY - 1));
        memmove(st->validation, st->validation + 1,
                sizeof st->validation[0] * (SCREEN_HISTORY - 1));
        st->loss_count--;
    }
    /* a validation loss is plotted once, at the first sample after its pass */
    double validation = r->validation_loss;
    if (isfinite(validation) && validation == s->last_validation)
        validation = NAN;
    else if (isfinite(validation))
        s->last_validation = validation;
    st->loss_step[st->loss_count] = r->step;
    st->loss[st->loss_count] = r->loss;
    st->validation[st->loss_count] = validation;
    st->loss_count++;
}

static int merge_copy(struct merge_record *dst, const struct merge_record *src)
{
    int rows = src->layers[0] + src->layers[1];
    size_t per_source = (size_t)rows * (size_t)src->sources;
    size_t per_slot = (size_t)rows * (size_t)src->experts;
    struct merge_record r = *src;
    r.entropies = malloc(sizeof *r.entropies * (per_source > 0 ? per_source : 1));
    r.allocation = malloc(sizeof *r.allocation * (per_source > 0 ? per_source : 1));
    r.slot_source = malloc(sizeof *r.slot_source * (per_slot > 0 ? per_slot : 1));
    r.slot_expert = malloc(sizeof *r.slot_expert * (per_slot > 0 ? per_slot : 1));
    if (r.entropies == NULL || r.allocation == NULL || r.slot_source == NULL ||
        r.slot_expert == NULL) {
        merge_record_free(&r);
        return -1;
    }
    memcpy(r.entropies, src->entropies, sizeof *r.entropies * per_source);
    memcpy(r.allocation, src->allocation, sizeof *r.allocation * per_source);
    memcpy(r.slot_source, src->slot_source, sizeof *r.slot_source * per_slot);
    memcpy(r.slot_expert, src->slot_expert, sizeof *r.slot_expert * per_slot);
    merge_record_free(dst);
    *dst = r;
    return 0;
}

/* The last path component without ".h5", for a source's short name. */
static void short_name(const char *source, char *out, size_t size)
{
    const char *slash = strrchr(source, '/');
    const char *name = slash != NULL ? slash + 1 : source;
    size_t length = strlen(name);
    if (length > 3 && strcmp(name + length - 3, ".h5") == 0)
        length -= 3;
    snprintf(out, size, "%.*s", (int)length, name);
}

/* Copies the merge record of a new caem.merge (or of the model given to
 * caem.screen.show) into the state. Then it drops the reference to the
 * model, so a later merge counts as new even at the same address. */
static void refresh_merge(struct screen *s)
{
    const struct checkpoint *ck = lua_caem_last_merge(s->L);
    if (ck == NULL)
        return;
    struct screen_state *st = &s->state;
    if (merge_copy(&st->merge, &ck->merge) == 0) {
        st->has_merge = 1;
        for (int i = 0; i < ck->merge.sources && i < MERGE_MAX_SOURCES; i++)
            short_name(ck->merge_sources != NULL ? ck->merge_sources[i] : "?",
                       st->merge_names[i], sizeof st->merge_names[i]);
    }
    lua_pushnil(s->L);
    lua_caem_watch_set(s->L, "merge", -1);
    lua_pop(s->L, 1);
}

void screen_refresh_state(struct screen *s)
{
    struct screen_state *st = &s->state;
    st->has_job = lua_caem_watched_status(s->L, &st->job);
    refresh_merge(s);
    if (!st->has_job)
        return;
    sample_loss(s);
    if (s->usage_pinned)
        return;
    struct usage_table usage;
    struct caem_error err;
    memset(&usage, 0, sizeof usage);
    int status = lua_caem_watched_usage(s->L, &usage, &err);
    if (status != 1) {
        usage_table_free(&usage);
        return;
    }
    usage_table_free(&st->usage);
    st->usage = usage;
    st->has_usage = 1;
    snprintf(st->usage_source, sizeof st->usage_source, "%s job, steps 1-%ld", st->job.kind,
             st->job.report.step);
    if (strcmp(st->job.kind, "train") != 0)
        snprintf(st->usage_source, sizeof st->usage_source, "%s job", st->job.kind);
    if (st->layer >= st->usage.layers[st->decoder])
        st->layer = 0;
    int64_t tokens = usage_tokens(&st->usage);
    if (tokens > 0 && tokens != s->last_sample_tokens) { /* no sample before any token */
        s->last_sample_tokens = tokens;
        sample_entropy(s);
    }
}

/* ---- caem.screen ---- */

static struct screen *screen_of(lua_State *L)
{
    return lua_touserdata(L, lua_upvalueindex(1));
}

/* caem.screen.export([path]) -> path */
static int screen_export(lua_State *L)
{
    struct screen *s = screen_of(L);
    if (!lua_isnoneornil(L, 1) && lua_type(L, 1) != LUA_TSTRING)
        return luaL_error(L, "caem.screen.export: the path must be a string, got %s",
                          luaL_typename(L, 1));
    const char *path = luaL_optstring(L, 1, "caem-screen.svg");
    if (path[0] == '\0')
        return luaL_error(L, "caem.screen.export: the path is empty");
    screen_refresh_state(s);
    struct caem_error err;
    if (screen_export_svg(&s->state, path, &err) != 0)
        return luaL_error(L, "caem.screen.export: %s", err.message);
    lua_pushstring(L, path);
    return 1;
}

/* caem.screen.show([model, [task, [split]]]): the model's stored usage
 * record in the panels (and its merge record in the merge view), or,
 * without a model, the watched job's usage again. */
static int screen_show(lua_State *L)
{
    struct screen *s = screen_of(L);
    struct screen_state *st = &s->state;
    if (lua_isnoneornil(L, 1)) {
        s->usage_pinned = 0;
        s->last_sample_tokens = -1;
        return 0;
    }
    struct lua_model *lm = lua_model_check(L, 1);
    struct lua_task *given = luaL_testudata(L, 2, TASK_TYPE);
    const char *task = given != NULL ? given->task.name : luaL_optstring(L, 2, NULL);
    const char *split = luaL_optstring(L, 3, NULL);
    if (lm->job != NULL)
        return luaL_error(L, "caem.screen.show: the model is busy with a job; show the job's "
                          "usage by leaving out the model");
    const struct checkpoint *ck = &lm->state;
    const struct checkpoint_usage *found = NULL;
    for (int i = 0; i < ck->usage_count && found == NULL; i++) {
        const struct checkpoint_usage *u = &ck->usage[i];
        if ((task == NULL || strcmp(u->task, task) == 0) &&
            (split == NULL || strcmp(u->split, split) == 0))
            found = u;
    }
    if (found == NULL)
        return luaL_error(L, "caem.screen.show: the model has no usage record%s%s%s%s; "
                          "model:usage{task = ..., record = true} makes one",
                          task != NULL ? " of task " : "", task != NULL ? task : "",
                          split != NULL ? " and split " : "", split != NULL ? split : "");
    struct usage_table copy;
    struct caem_error err;
    if (usage_table_clone(&copy, &found->table, &err) != 0)
        return luaL_error(L, "caem.screen.show: %s", err.message);
    usage_table_free(&st->usage);
    st->usage = copy;
    st->has_usage = 1;
    s->usage_pinned = 1;
    snprintf(st->usage_source, sizeof st->usage_source, "%s: %s/%s",
             lm->path != NULL ? lm->path : lm->name, found->task, found->split);
    if (st->layer >= st->usage.layers[st->decoder])
        st->layer = 0;
    entropy_shape(st, usage_table_rows(&st->usage));
    st->entropy_count = 0;
    sample_entropy(s);
    if (ck->has_merge)
        lua_caem_watch_set(L, "merge", 1); /* F7 shows its merge */
    screen_refresh_state(s);
    return 0;
}

/* caem.screen.watch(job): the panels follow this job. */
static int screen_watch(lua_State *L)
{
    struct screen *s = screen_of(L);
    luaL_checkudata(L, 1, JOB_TYPE);
    lua_caem_watch_set(L, "job", 1);
    s->usage_pinned = 0;
    s->last_sample_step = -1;
    s->last_validation = NAN;
    s->last_sample_tokens = -1;
    s->state.loss_count = 0;
    s->state.entropy_count = 0;
    return 0;
}

void screen_lua_open(struct screen *s)
{
    lua_State *L = s->L;
    static const luaL_Reg functions[] = {
        { "export", screen_export },
        { "show", screen_show },
        { "watch", screen_watch },
        { NULL, NULL },
    };
    lua_getglobal(L, "caem");
    if (!lua_istable(L, -1)) {
        lua_pop(L, 1);
        return;
    }
    lua_newtable(L);
    lua_pushlightuserdata(L, s);
    luaL_setfuncs(L, functions, 1);
    lua_setfield(L, -2, "screen");
    lua_pop(L, 1);
    s->last_sample_step = -1;
    s->last_validation = NAN;
    s->last_sample_tokens = -1;
}

void screen_lua_close(struct screen *s)
{
    lua_State *L = s->L;
    lua_getglobal(L, "caem");
    if (lua_istable(L, -1)) {
        lua_pushnil(L);
        lua_setfield(L, -2, "screen");
    }
    lua_pop(L, 1);
}
