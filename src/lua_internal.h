/* Shared parts of the C files of the caem Lua module: the userdata types,
 * option checking, conversions to Lua tables, and the registry of jobs.
 *
 * Every function that can fail raises a Lua error (it does not return) with
 * a message that starts with the Lua function's name, such as
 * "model:train: ...". C resources are owned by userdata with a __gc before
 * anything can fail, so that an error leaks nothing. */
#ifndef CAEM_LUA_INTERNAL_H
#define CAEM_LUA_INTERNAL_H

#include <lauxlib.h>
#include <lua.h>

#include "checkpoint.h"
#include "dataset.h"
#include "evaluate.h"
#include "job.h"
#include "jobs.h"
#include "lua_caem.h"
#include "task.h"
#include "tokenizer.h"
#include "usage.h"

#define MODEL_TYPE "caem.model"
#define TASK_TYPE "caem.task"
#define TOKENIZER_TYPE "caem.tokenizer"
#define JOB_TYPE "caem.job"

struct lua_job;

/* A model with what a checkpoint keeps beside its parameters (checkpoint_edit.h). */
struct lua_model {
    struct checkpoint state;
    struct lua_job *job; /* the job that owns the model until it is released */
    char *name;          /* the preset or the path it was loaded from */
    char *path;          /* the file it was loaded from or last saved to; NULL: none */
};

struct lua_tokenizer {
    struct tokenizer *tokenizer;
    char *path;
};

/* A task; its first user value is the tokenizer's userdata, which it borrows. */
struct lua_task {
    struct task task;
    int loaded[TASK_SPLIT_COUNT]; /* 1 for a split read from a file */
};

enum lua_job_kind { LUA_JOB_TRAIN, LUA_JOB_EVALUATE, LUA_JOB_USAGE };

/* A job; its user values are the model's userdata, the task's userdata and
 * the on_step callback. It is anchored in the registry until released: its
 * end has been seen, its run stored in the model and the model set free. */
struct lua_job {
    struct job *job;
    enum lua_job_kind kind;
    struct train_job *train;       /* LUA_JOB_TRAIN */
    struct evaluate_job *evaluate; /* LUA_JOB_EVALUATE and LUA_JOB_USAGE */
    struct lua_model *model;       /* NULL once the model's __gc ran */
    int released;
    long every;                    /* steps between on_step calls; 0: none */
    char store_error[CAEM_ERROR_MAX]; /* why storing the run failed; empty: it did not */
};

/* ---- lua_util.c: arguments and options ---- */

/* Raises "FUNCTION: MESSAGE" from a runtime error. */
int raise_error(lua_State *L, const char *function, const struct caem_error *err);

/* Checks that the value at index is a table (or nil, when optional) whose
 * keys are all in the NULL-terminated list `allowed` or in the array of
 * strings at names_index (0: none). */
void option_check_keys(lua_State *L, int index, const char *function,
                       const char *const allowed[], int names_index, int optional);

/* Reads option `key` of the table at index, or returns `fallback` when it is
 * nil. Raises when the value has the wrong type or is out of range. */
lua_Integer option_integer(lua_State *L, int index, const char *key, const char *function,
                           lua_Integer fallback, lua_Integer min, lua_Integer max);
double option_number(lua_State *L, int index, const char *key, const char *function,
                     double fallback, double min, double max);
int option_boolean(lua_State *L, int index, const char *key, const char *function,
                   int fallback);
/* The string stays valid while the option table is on the stack. */
const char *option_string(lua_State *L, int index, const char *key, const char *function,
                          const char *fallback);
/* Returns the position of the value in the NULL-terminated `choices`. */
int option_choice(lua_State *L, int index, const char *key, const char *function,
                  const char *const choices[], int fallback);
/* Pushes the userdata of type tname under `key` and returns it; pushes nil
 * and returns NULL when the option is absent and not required. */
void *option_userdata(lua_State *L, int index, const char *key, const char *function,
                      const char *tname, int required);

/* Returns a split named "train", "validation" or "test", or raises. */
enum task_split_kind check_split(lua_State *L, const char *name, const char *function);

/* Sets t[key] = value at the table on the top of the stack; a NaN number is
 * left out, so that a missing figure reads as nil. */
void set_number(lua_State *L, const char *key, double value);
void set_integer(lua_State *L, const char *key, lua_Integer value);
void set_string(lua_State *L, const char *key, const char *value);
void set_boolean(lua_State *L, const char *key, int value);

/* ---- lua_convert.c: runtime structs as Lua tables ---- */

void push_config(lua_State *L, const struct model_config *cfg);
/* Pushes the array of config field names, in the order of config_to_json. */
void push_config_fields(lua_State *L);
/* Reads a config from the table at index: the preset (default "small"),
 * then the config fields of the table over it, then validates it. Keys that
 * are not config fields are ignored here: the caller checks them. */
void read_config(lua_State *L, int index, const char *function, struct model_config *cfg);
void push_usage(lua_State *L, const struct usage_table *u);
void push_evaluation(lua_State *L, const struct evaluation *e, const char *task);
void push_status(lua_State *L, const struct job_status *s);
void push_history(lua_State *L, const struct checkpoint_history *h);
void push_report(lua_State *L, const struct dataset_report *r);
/* The /merge provenance as a table (slots' sources 1-based, experts 0-based
 * as in tensor names), or nil for a model that was not merged. */
void push_merge(lua_State *L, const struct checkpoint *ck);

/* ---- lua_model.c, lua_task.c, lua_job.c, lua_metrics.c ---- */

/* Add the functions of each file to the module table on the top of the
 * stack and register the metatables. */
void lua_caem_open_model(lua_State *L);
void lua_caem_open_task(lua_State *L);
void lua_caem_open_job(lua_State *L);
void lua_caem_open_metrics(lua_State *L);
void lua_caem_open_merge(lua_State *L);

struct lua_model *lua_model_check(lua_State *L, int index);
struct lua_task *lua_task_check(lua_State *L, int index);
struct lua_tokenizer *lua_tokenizer_check(lua_State *L, int index);

/* Raises when a job owns the model, after releasing a job that has ended. */
void lua_model_check_idle(lua_State *L, struct lua_model *lm, const char *function);

/* Raises when the model's vocabulary is smaller than the tokenizer's. */
void lua_model_check_vocabulary(lua_State *L, const struct lua_model *lm,
                                const struct tokenizer *tok, const char *function);

/* ---- lua_run.c: model:train, model:evaluate, model:usage ---- */

int lua_model_train(lua_State *L);
int lua_model_evaluate(lua_State *L);
int lua_model_usage(lua_State *L);
int lua_model_generate(lua_State *L);

/* ---- lua_job.c ---- */

/* Pushes a new job userdata for the model at model_index and the task at
 * task_index, with the callback at callback_index (0: none). The caller
 * fills job, train or evaluate, then calls lua_job_attach. */
struct lua_job *lua_job_push(lua_State *L, enum lua_job_kind kind, int model_index,
                             int task_index, int callback_index, long every);
/* Makes the job on the top of the stack own its model, anchors it, sets up
 * its notifications and, unless `paused`, resumes it. The job must have been
 * started paused, so that no notification is missed. */
void lua_job_attach(lua_State *L, struct lua_job *lj, int paused);
/* Releases a job that has ended: stores a train run in the model, sets the
 * model free and drops the anchor. */
void lua_job_release(lua_State *L, struct lua_job *lj);
/* 1 when the job has ended. */
int lua_job_ended(struct lua_job *lj);
/* Returns "train", "evaluate" or "usage". */
const char *lua_job_kind_name(enum lua_job_kind kind);

/* The host's hooks, stored in the registry (zero until the host sets them). */
struct lua_caem_host *lua_caem_host_hooks(lua_State *L);

/* Runs the due callbacks of every anchored job except `skip` (NULL: none)
 * and releases those that have ended. A failing callback is reported on
 * stderr and removed. */
void lua_job_poll(lua_State *L, struct lua_job *skip);

/* Counts the anchored jobs that have not ended, and stops them when stop
 * is 1. */
int lua_job_count_running(lua_State *L, int stop);

/* ---- lua_prelude.c ---- */

/* Runs the prelude with the module table on the top of the stack. */
void lua_caem_run_prelude(lua_State *L);

#endif
