/* Jobs in Lua: the job userdata and its methods, the registry of running
 * jobs, on_step callbacks and the host's progress and interrupt hooks. */
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "lua_internal.h"

/* Registry table from a job's address (light userdata) to its userdata,
 * which keeps a job that has not been released from being collected. */
#define ANCHORS_KEY "caem.jobs"
#define HOST_KEY "caem.host"
/* Registry table with weak values: "job", the job the screen follows, and
 * "merge", the model of the latest caem.merge. */
#define WATCH_KEY "caem.watch"

/* Seconds job:wait sleeps between looks at the job, and between calls of the
 * host's progress hook. */
#define WAIT_SLICE 0.01
#define PROGRESS_INTERVAL 0.1

static const char *const kind_names[] = { "train", "evaluate", "usage" };

const char *lua_job_kind_name(enum lua_job_kind kind)
{
    return kind_names[kind];
}

static double seconds_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

struct lua_caem_host *lua_caem_host_hooks(lua_State *L)
{
    if (lua_getfield(L, LUA_REGISTRYINDEX, HOST_KEY) == LUA_TNIL) {
        lua_pop(L, 1);
        struct lua_caem_host *host = lua_newuserdatauv(L, sizeof *host, 0);
        memset(host, 0, sizeof *host);
        lua_pushvalue(L, -1);
        lua_setfield(L, LUA_REGISTRYINDEX, HOST_KEY);
    }
    struct lua_caem_host *host = lua_touserdata(L, -1);
    lua_pop(L, 1);
    return host;
}

static void anchors_push(lua_State *L)
{
    if (lua_getfield(L, LUA_REGISTRYINDEX, ANCHORS_KEY) == LUA_TNIL) {
        lua_pop(L, 1);
        lua_newtable(L);
        lua_pushvalue(L, -1);
        lua_setfield(L, LUA_REGISTRYINDEX, ANCHORS_KEY);
    }
}

static struct lua_job *job_check(lua_State *L, int index)
{
    struct lua_job *lj = luaL_checkudata(L, index, JOB_TYPE);
    if (lj->job == NULL)
        luaL_error(L, "the job was freed");
    return lj;
}

struct lua_job *lua_job_push(lua_State *L, enum lua_job_kind kind, int model_index,
                             int task_index, int callback_index, long every)
{
    model_index = lua_absindex(L, model_index);
    task_index = lua_absindex(L, task_index);
    if (callback_index != 0)
        callback_index = lua_absindex(L, callback_index);
    struct lua_job *lj = lua_newuserdatauv(L, sizeof *lj, 3);
    memset(lj, 0, sizeof *lj);
    luaL_setmetatable(L, JOB_TYPE);
    lua_pushvalue(L, model_index);
    lua_setiuservalue(L, -2, 1);
    lua_pushvalue(L, task_index);
    lua_setiuservalue(L, -2, 2);
    if (callback_index != 0) {
        lua_pushvalue(L, callback_index);
        lua_setiuservalue(L, -2, 3);
        lj->every = every;
    }
    lj->kind = kind;
    lj->model = lua_model_check(L, model_index);
    return lj;
}

/* Pushes the WATCH_KEY table, creating it on first use. */
static void watch_push(lua_State *L)
{
    if (lua_getfield(L, LUA_REGISTRYINDEX, WATCH_KEY) != LUA_TNIL)
        return;
    lua_pop(L, 1);
    lua_newtable(L);
    lua_createtable(L, 0, 1);
    lua_pushliteral(L, "v");
    lua_setfield(L, -2, "__mode");
    lua_setmetatable(L, -2);
    lua_pushvalue(L, -1);
    lua_setfield(L, LUA_REGISTRYINDEX, WATCH_KEY);
}

void lua_caem_watch_set(lua_State *L, const char *what, int index)
{
    index = lua_absindex(L, index);
    watch_push(L);
    lua_pushvalue(L, index);
    lua_setfield(L, -2, what);
    lua_pop(L, 1);
}

/* Returns the watched job, or NULL when there is none. */
static struct lua_job *watched_job(lua_State *L)
{
    watch_push(L);
    lua_getfield(L, -1, "job");
    struct lua_job *lj = luaL_testudata(L, -1, JOB_TYPE);
    lua_pop(L, 2);
    return lj != NULL && lj->job != NULL ? lj : NULL;
}

int lua_caem_watched_status(lua_State *L, struct job_status *status)
{
    struct lua_job *lj = watched_job(L);
    if (lj == NULL)
        return 0;
    job_status(lj->job, status);
    return 1;
}

int lua_caem_watched_usage(lua_State *L, struct usage_table *usage, struct caem_error *err)
{
    struct lua_job *lj = watched_job(L);
    if (lj == NULL)
        return 0;
    if (lj->kind != LUA_JOB_TRAIN) {
        const struct evaluation *e = evaluate_job_result(lj->evaluate);
        if (e == NULL)
            return 0;
        return usage_table_clone(usage, &e->usage, err) != 0 ? -1 : 1;
    }
    struct usage_table window;
    if (train_job_usage(lj->train, usage, &window, err) != 0)
        return -1;
    usage_table_free(&window);
    return 1;
}

void lua_caem_control(lua_State *L, enum lua_caem_control control)
{
    struct lua_job *lj = watched_job(L);
    if (lj == NULL || lua_job_ended(lj))
        return;
    if (control == LUA_CAEM_PAUSE)
        job_pause(lj->job);
    else if (control == LUA_CAEM_RESUME)
        job_resume(lj->job);
    else if (control == LUA_CAEM_STEP)
        job_step(lj->job, 1);
    else
        job_stop(lj->job);
}

const struct checkpoint *lua_caem_last_merge(lua_State *L)
{
    watch_push(L);
    lua_getfield(L, -1, "merge");
    struct lua_model *lm = luaL_testudata(L, -1, MODEL_TYPE);
    lua_pop(L, 2);
    return lm != NULL && lm->state.has_merge ? &lm->state : NULL;
}

void lua_job_attach(lua_State *L, struct lua_job *lj, int paused)
{
    lua_caem_watch_set(L, "job", -1);
    lj->model->job = lj;
    anchors_push(L);
    lua_pushlightuserdata(L, lj);
    lua_pushvalue(L, -3);
    lua_settable(L, -3);
    lua_pop(L, 1);
    if (lj->every > 0)
        job_notify_every(lj->job, lj->every);
    if (!paused)
        job_resume(lj->job);
}

int lua_job_ended(struct lua_job *lj)
{
    return job_wait(lj->job, 0.0) == 1;
}

/* Stores a train run in the model and sets the model free; no Lua calls, so
 * that __gc may use it. */
static void job_detach(struct lua_job *lj)
{
    if (lj->model == NULL)
        return;
    struct caem_error err;
    if (lj->kind == LUA_JOB_TRAIN && train_job_store(lj->train, &err) != 0)
        snprintf(lj->store_error, sizeof lj->store_error, "%s", err.message);
    if (lj->model->job == lj)
        lj->model->job = NULL;
    lj->model = NULL;
}

void lua_job_release(lua_State *L, struct lua_job *lj)
{
    if (lj->released)
        return;
    job_detach(lj);
    lj->released = 1;
    anchors_push(L);
    lua_pushlightuserdata(L, lj);
    lua_pushnil(L);
    lua_settable(L, -3);
    lua_pop(L, 1);
}

/* Releases the job once it has ended, so that its model is free as soon as
 * anything looks at the job. */
static void job_refresh(lua_State *L, struct lua_job *lj)
{
    if (!lj->released && lua_job_ended(lj))
        lua_job_release(L, lj);
}

/* Stops the job, waits for its worker and releases it. */
static void job_stop_now(lua_State *L, struct lua_job *lj)
{
    job_stop(lj->job);
    job_wait(lj->job, -1.0);
    lua_job_release(L, lj);
}

static void push_job_status(lua_State *L, struct lua_job *lj)
{
    struct job_status s;
    job_status(lj->job, &s);
    push_status(L, &s);
}

/* Runs the job's on_step callback when a notification is due. On an error
 * it stops the job and raises (raise = 1), or reports the error on stderr
 * and removes the callback. Returns 1 when it ran the callback. */
static int job_callback(lua_State *L, int index, struct lua_job *lj, int raise)
{
    long step;
    if (lj->every == 0 || !job_take_notification(lj->job, &step))
        return 0;
    index = lua_absindex(L, index);
    lua_getiuservalue(L, index, 3);
    push_job_status(L, lj);
    lua_pushvalue(L, index);
    if (lua_pcall(L, 2, 0, 0) == LUA_OK)
        return 1;
    const char *message = luaL_tolstring(L, -1, NULL);
    if (raise) {
        job_stop_now(L, lj);
        luaL_error(L, "on_step callback of the %s job failed at step %d: %s",
                   kind_names[lj->kind], (int)step, message);
    }
    fprintf(stderr, "caem: on_step callback of the %s job failed at step %ld and was "
            "removed: %s\n", kind_names[lj->kind], step, message);
    lua_pop(L, 2);
    lj->every = 0;
    lua_pushnil(L);
    lua_setiuservalue(L, index, 3);
    return 1;
}

/* Pushes an array of the anchored jobs' userdata. */
static void push_anchored(lua_State *L)
{
    anchors_push(L);
    lua_newtable(L);
    lua_Integer n = 0;
    lua_pushnil(L);
    while (lua_next(L, -3) != 0)
        lua_seti(L, -3, ++n);
    lua_remove(L, -2);
}

void lua_job_poll(lua_State *L, struct lua_job *skip)
{
    push_anchored(L);
    lua_Integer count = luaL_len(L, -1);
    for (lua_Integer i = 1; i <= count; i++) {
        lua_geti(L, -1, i);
        struct lua_job *lj = lua_touserdata(L, -1);
        if (lj != skip && lj->job != NULL) {
            job_callback(L, -1, lj, 0);
            if (!lj->released && lua_job_ended(lj)) {
                lua_job_release(L, lj);
                if (lj->store_error[0] != '\0')
                    fprintf(stderr, "caem: storing the %s run in its model failed: %s\n",
                            kind_names[lj->kind], lj->store_error);
            }
        }
        lua_pop(L, 1);
    }
    lua_pop(L, 1);
}

int lua_job_count_running(lua_State *L, int stop)
{
    push_anchored(L);
    lua_Integer count = luaL_len(L, -1);
    int running = 0;
    for (lua_Integer i = 1; i <= count; i++) {
        lua_geti(L, -1, i);
        struct lua_job *lj = lua_touserdata(L, -1);
        if (lj->job != NULL && !lua_job_ended(lj)) {
            running++;
            if (stop)
                job_stop(lj->job);
        }
        lua_pop(L, 1);
    }
    lua_pop(L, 1);
    return running;
}

/* ---- results ---- */

static void push_train_result(lua_State *L, struct lua_job *lj, const char *state)
{
    struct train_snapshot s;
    struct caem_error err;
    if (train_job_snapshot_init(lj->train, &s, &err) != 0)
        raise_error(L, "job:result", &err);
    train_job_snapshot(lj->train, &s);
    lua_createtable(L, 0, 12);
    set_string(L, "state", state);
    set_integer(L, "step", s.step);
    set_integer(L, "steps", s.steps);
    set_integer(L, "epoch", s.epoch);
    if (s.last.step > 0) {
        set_number(L, "loss", s.last.loss);
        set_number(L, "cross_entropy", s.last.cross_entropy);
        set_number(L, "encoder_entropy", s.last.encoder_entropy);
        set_number(L, "decoder_entropy", s.last.decoder_entropy);
    }
    set_number(L, "validation_loss", s.validation_loss);
    if (s.validation_step >= 0)
        set_integer(L, "validation_step", s.validation_step);
    set_integer(L, "tokens", s.tokens);
    set_number(L, "tokens_per_second", s.tokens_per_second);
    set_number(L, "elapsed", s.last.elapsed);
    train_snapshot_free(&s);
}

/* Pushes the result of an ended job (or nil for a stopped evaluation), or
 * raises the job's failure. */
static int push_result(lua_State *L, int index, struct lua_job *lj, const char *function)
{
    struct job_status s;
    job_status(lj->job, &s);
    const char *kind = kind_names[lj->kind];
    if (s.state == JOB_FAILED)
        return luaL_error(L, "%s job failed: %s", kind, s.message);
    if (s.state == JOB_RUNNING || s.state == JOB_PAUSED || !s.idle)
        return luaL_error(L, "%s: the %s job is %s (step %d of %d); call job:wait() first",
                          function, kind, job_state_name(s.state), (int)s.report.step,
                          (int)s.report.steps);
    if (lj->store_error[0] != '\0')
        return luaL_error(L, "%s: storing the train run in the model failed: %s", function,
                          lj->store_error);
    if (lj->kind == LUA_JOB_TRAIN) {
        push_train_result(L, lj, job_state_name(s.state));
        return 1;
    }
    const struct evaluation *e = evaluate_job_result(lj->evaluate);
    if (e == NULL) {
        lua_pushnil(L);
        return 1;
    }
    lua_getiuservalue(L, index, 2);
    struct lua_task *lk = lua_task_check(L, -1);
    push_evaluation(L, e, lk->task.name);
    lua_remove(L, -2);
    return 1;
}

/* ---- methods ---- */

static void interrupt_job(lua_State *L, struct lua_job *lj)
{
    job_stop_now(L, lj);
    luaL_error(L, "interrupted");
}

/* job:wait([timeout]) returns the result and the state name. */
static int job_method_wait(lua_State *L)
{
    struct lua_job *lj = job_check(L, 1);
    double timeout = luaL_optnumber(L, 2, -1.0);
    const struct lua_caem_host *host = lua_caem_host_hooks(L);
    double start = seconds_now(), last_progress = -1.0;
    for (;;) {
        int ended = job_wait(lj->job, WAIT_SLICE);
        job_callback(L, 1, lj, 1);
        lua_job_poll(L, lj);
        double now = seconds_now();
        if (host->progress != NULL && (now - last_progress >= PROGRESS_INTERVAL || ended)) {
            struct job_status s;
            job_status(lj->job, &s);
            host->progress(&s, host->data);
            last_progress = now;
        }
        if (ended == 0 && host->interrupted != NULL && host->interrupted(host->data))
            interrupt_job(L, lj);
        if (ended == 1) {
            lua_job_release(L, lj);
            job_callback(L, 1, lj, 1);
            struct job_status s;
            job_status(lj->job, &s);
            push_result(L, 1, lj, "job:wait");
            lua_pushstring(L, job_state_name(s.state));
            return 2;
        }
        if (ended == 2 || (timeout >= 0.0 && now - start >= timeout)) {
            lua_pushnil(L);
            lua_pushstring(L, ended == 2 ? "paused" : "running");
            return 2;
        }
    }
}

static int job_method_result(lua_State *L)
{
    struct lua_job *lj = job_check(L, 1);
    job_refresh(L, lj);
    return push_result(L, 1, lj, "job:result");
}

static int job_method_status(lua_State *L)
{
    struct lua_job *lj = job_check(L, 1);
    job_refresh(L, lj);
    push_job_status(L, lj);
    return 1;
}

static int job_method_pause(lua_State *L)
{
    job_pause(job_check(L, 1)->job);
    return 0;
}

static int job_method_resume(lua_State *L)
{
    job_resume(job_check(L, 1)->job);
    return 0;
}

static int job_method_step(lua_State *L)
{
    struct lua_job *lj = job_check(L, 1);
    lua_Integer n = luaL_optinteger(L, 2, 1);
    luaL_argcheck(L, n >= 1, 2, "expected a step count of at least 1");
    job_step(lj->job, (long)n);
    return 0;
}

static int job_method_stop(lua_State *L)
{
    job_stop(job_check(L, 1)->job);
    return 0;
}

/* job:usage() returns {running=, window=} for a train job, the usage of the
 * result for an evaluation or a usage pass. */
static int job_method_usage(lua_State *L)
{
    struct lua_job *lj = job_check(L, 1);
    job_refresh(L, lj);
    if (lj->kind != LUA_JOB_TRAIN) {
        const struct evaluation *e = evaluate_job_result(lj->evaluate);
        if (e == NULL)
            return luaL_error(L, "job:usage: the %s job has no usage until it finishes",
                              kind_names[lj->kind]);
        push_usage(L, &e->usage);
        return 1;
    }
    struct usage_table running, window;
    struct caem_error err;
    if (train_job_usage(lj->train, &running, &window, &err) != 0)
        return raise_error(L, "job:usage", &err);
    lua_createtable(L, 0, 2);
    push_usage(L, &running);
    lua_setfield(L, -2, "running");
    push_usage(L, &window);
    lua_setfield(L, -2, "window");
    usage_table_free(&running);
    usage_table_free(&window);
    return 1;
}

static int job_index(lua_State *L)
{
    struct lua_job *lj = job_check(L, 1);
    const char *key = luaL_checkstring(L, 2);
    if (lua_getfield(L, lua_upvalueindex(1), key) != LUA_TNIL)
        return 1;
    if (strcmp(key, "kind") == 0)
        lua_pushstring(L, kind_names[lj->kind]);
    else if (strcmp(key, "model") == 0)
        lua_getiuservalue(L, 1, 1);
    else if (strcmp(key, "task") == 0)
        lua_getiuservalue(L, 1, 2);
    else
        return luaL_error(L, "caem.job has no field or method '%s'", key);
    return 1;
}

static int job_tostring(lua_State *L)
{
    struct lua_job *lj = luaL_checkudata(L, 1, JOB_TYPE);
    if (lj->job == NULL) {
        lua_pushstring(L, "caem.job(freed)");
        return 1;
    }
    struct job_status s;
    job_status(lj->job, &s);
    lua_pushfstring(L, "caem.job(%s, %s, step %d of %d)", kind_names[lj->kind],
                    job_state_name(s.state), (int)s.report.step, (int)s.report.steps);
    return 1;
}

/* A job is collected after its release or when the state closes. When the
 * state closes the job may still run, so it is stopped and joined first. */
static int job_gc(lua_State *L)
{
    struct lua_job *lj = luaL_checkudata(L, 1, JOB_TYPE);
    if (lj->job == NULL)
        return 0;
    job_stop(lj->job);
    job_wait(lj->job, -1.0);
    job_detach(lj);
    job_free(lj->job);
    lj->job = NULL;
    return 0;
}

void lua_caem_open_job(lua_State *L)
{
    static const luaL_Reg methods[] = {
        { "wait", job_method_wait },
        { "result", job_method_result },
        { "status", job_method_status },
        { "pause", job_method_pause },
        { "resume", job_method_resume },
        { "step", job_method_step },
        { "stop", job_method_stop },
        { "usage", job_method_usage },
        { NULL, NULL },
    };
    luaL_newmetatable(L, JOB_TYPE);
    luaL_newlib(L, methods);
    lua_pushcclosure(L, job_index, 1);
    lua_setfield(L, -2, "__index");
    lua_pushcfunction(L, job_tostring);
    lua_setfield(L, -2, "__tostring");
    lua_pushcfunction(L, job_gc);
    lua_setfield(L, -2, "__gc");
    lua_pop(L, 1);
}
