/* model:train, model:evaluate and model:usage, which start jobs, and
 * model:generate, which runs on the calling thread. */
#include <stdlib.h>
#include <string.h>

#include "generate.h"
#include "lua_internal.h"

#define COUNT_MAX 1000000000L
#define BATCH_MAX 65536

/* The options every job takes: on_step, every, paused. */
struct job_controls {
    int callback;  /* stack index of on_step; 0: none */
    long every;
    int paused;
};

static void read_controls(lua_State *L, int options, const char *function,
                          struct job_controls *c)
{
    memset(c, 0, sizeof *c);
    int type = lua_getfield(L, options, "on_step");
    if (type == LUA_TFUNCTION)
        c->callback = lua_gettop(L);
    else if (type != LUA_TNIL)
        luaL_error(L, "%s: option 'on_step' must be a function, got %s", function,
                   luaL_typename(L, -1));
    else
        lua_pop(L, 1);
    c->every = (long)option_integer(L, options, "every", function, 1, 1, COUNT_MAX);
    if (c->callback == 0) {
        int given = lua_getfield(L, options, "every") != LUA_TNIL;
        lua_pop(L, 1);
        if (given)
            luaL_error(L, "%s: option 'every' needs an on_step function", function);
        c->every = 0;
    }
    c->paused = option_boolean(L, options, "paused", function, 0);
}

/* Checks the model and the task of a job's options and pushes the task. */
static struct lua_task *job_task(lua_State *L, struct lua_model *lm, const char *function)
{
    struct lua_task *lk = option_userdata(L, 2, "task", function, TASK_TYPE, 1);
    lua_model_check_idle(L, lm, function);
    lua_model_check_vocabulary(L, lm, lk->task.tokenizer, function);
    return lk;
}

/* Reads the list of caem.task at `index` (option tasks): returns the first,
 * and the others in more[]. */
static struct lua_task *read_task_list(lua_State *L, struct lua_model *lm, int index,
                                       const struct task **more, int *more_count,
                                       const char *function)
{
    if (!lua_istable(L, index))
        luaL_error(L, "%s: option 'tasks' must be a list of caem.task", function);
    if (lua_getfield(L, 2, "task") != LUA_TNIL)
        luaL_error(L, "%s: give task or tasks, not both", function);
    lua_pop(L, 1);
    lua_Integer n = luaL_len(L, index);
    if (n < 1 || n > TRAIN_MAX_TASKS)
        luaL_error(L, "%s: option 'tasks' lists %d tasks, expected 1 to %d", function, (int)n,
                   TRAIN_MAX_TASKS);
    lua_model_check_idle(L, lm, function);
    struct lua_task *first = NULL;
    *more_count = 0;
    for (lua_Integer i = 1; i <= n; i++) {
        lua_geti(L, index, i);
        struct lua_task *lk = luaL_testudata(L, -1, TASK_TYPE);
        if (lk == NULL)
            luaL_error(L, "%s: tasks[%d] is not a caem.task", function, (int)i);
        lua_model_check_vocabulary(L, lm, lk->task.tokenizer, function);
        if (i == 1)
            first = lk;
        else
            more[(*more_count)++] = &lk->task;
        lua_pop(L, 1);
    }
    return first;
}

static void read_train_options(lua_State *L, const struct lua_model *lm,
                               const struct task *task, struct train_job_options *o)
{
    static const char *const function = "model:train";
    const struct checkpoint *ck = &lm->state;
    memset(o, 0, sizeof *o);
    o->train = train_defaults();
    struct train_options *t = &o->train;
    int has_validation = task->splits[TASK_SPLIT_VALIDATION].tokens.count > 0;
    t->steps = option_integer(L, 2, "steps", function, t->steps, 1, COUNT_MAX);
    t->batch_size = (int)option_integer(L, 2, "batch", function, t->batch_size, 1, BATCH_MAX);
    t->accumulation = (int)option_integer(L, 2, "accumulation", function, t->accumulation,
                                          1, BATCH_MAX);
    t->adamw.lr = (float)option_number(L, 2, "lr", function, t->adamw.lr, 0.0, 1.0);
    t->adamw.weight_decay = (float)option_number(L, 2, "weight_decay", function,
                                                 t->adamw.weight_decay, 0.0, 1.0);
    t->validate_every = (int)option_integer(L, 2, "validate_every", function,
                                            has_validation ? t->validate_every : 0, 0,
                                            COUNT_MAX);
    t->validation_examples = option_integer(L, 2, "validation_examples", function,
                                            t->validation_examples, 0, COUNT_MAX);
    t->window = (int)option_integer(L, 2, "window", function, t->window, 1, COUNT_MAX);
    t->count_padding = option_boolean(L, 2, "count_padding", function, 0);
    o->resume = option_boolean(L, 2, "resume", function, 0);
    lua_Integer seed = o->resume && ck->has_train_state ? (lua_Integer)ck->train.seed : 1;
    t->seed = (uint64_t)option_integer(L, 2, "seed", function, seed, 0, LUA_MAXINTEGER);
    o->checkpoint = option_string(L, 2, "checkpoint", function, NULL);
    o->checkpoint_every = option_integer(L, 2, "checkpoint_every", function, 0, 0, COUNT_MAX);
}

/* model:train{task=, steps=, ...} */
int lua_model_train(lua_State *L)
{
    static const char *const function = "model:train";
    static const char *const options[] = {
        "task", "tasks", "steps", "batch", "accumulation", "lr", "weight_decay",
        "validate_every", "validation_examples", "window", "seed", "count_padding",
        "checkpoint", "checkpoint_every", "resume", "on_step", "every", "paused", NULL,
    };
    struct lua_model *lm = lua_model_check(L, 1);
    option_check_keys(L, 2, function, options, 0, 0);
    lua_settop(L, 2);
    const struct task *more[TRAIN_MAX_TASKS];
    int more_count = 0;
    struct lua_task *lk = NULL;
    int task_index;
    int task_list = lua_getfield(L, 2, "tasks") != LUA_TNIL;
    if (task_list) {
        /* several tasks: the job keeps the list, and with it every task */
        int list = lua_gettop(L);
        lk = read_task_list(L, lm, list, more, &more_count, function);
        /* a copy, so that changing the caller's list cannot free a task in use */
        lua_createtable(L, more_count + 1, 0);
        for (int i = 1; i <= more_count + 1; i++) {
            lua_geti(L, list, i);
            lua_seti(L, -2, i);
        }
        task_index = lua_gettop(L);
    } else {
        lua_pop(L, 1);
        lk = job_task(L, lm, function);
        task_index = lua_gettop(L);
    }
    struct train_job_options o;
    read_train_options(L, lm, &lk->task, &o);
    o.more_tasks = more;
    o.more_task_count = more_count;
    if (task_list)
        lua_geti(L, task_index, 1);
    lua_getiuservalue(L, task_list ? -1 : task_index, 1);
    o.tokenizer_path = lua_tokenizer_check(L, -1)->path;
    struct job_controls c;
    read_controls(L, 2, function, &c);

    struct lua_job *lj = lua_job_push(L, LUA_JOB_TRAIN, 1, task_index, c.callback, c.every);
    struct caem_error err;
    if (train_job_start(&lj->job, &lj->train, &lm->state, &lk->task, &o, 1, &err) != 0)
        return raise_error(L, function, &err);
    lua_job_attach(L, lj, c.paused);
    return 1;
}

static void read_generation(lua_State *L, int options, const char *function,
                            struct generate_options *g)
{
    g->num_beams = (int)option_integer(L, options, "beams", function, g->num_beams, 1, 64);
    g->max_length = (int)option_integer(L, options, "max_length", function, g->max_length, 2,
                                        BATCH_MAX);
    g->repetition_penalty = (float)option_number(L, options, "repetition_penalty", function,
                                                 g->repetition_penalty, 0.01, 100.0);
    g->no_repeat_ngram_size = (int)option_integer(L, options, "no_repeat_ngram_size",
                                                  function, g->no_repeat_ngram_size, 0, 100);
    g->length_penalty = (float)option_number(L, options, "length_penalty", function,
                                             g->length_penalty, -10.0, 10.0);
}

/* Starts an evaluation (generate = 1) or a usage pass. */
static int start_evaluation(lua_State *L, int generate, const char *function)
{
    struct lua_model *lm = lua_model_check(L, 1);
    lua_settop(L, 2);
    struct lua_task *lk = job_task(L, lm, function);
    int task_index = lua_gettop(L);
    struct evaluate_job_options o;
    memset(&o, 0, sizeof o);
    o.evaluate = evaluate_defaults();
    struct evaluate_options *e = &o.evaluate;
    e->generate = generate;
    e->split = check_split(L, option_string(L, 2, "split", function, "validation"), function);
    e->limit = option_integer(L, 2, "limit", function, 0, 0, COUNT_MAX);
    e->batch_size = (int)option_integer(L, 2, "batch", function, e->batch_size, 1, BATCH_MAX);
    e->count_padding = option_boolean(L, 2, "count_padding", function, 0);
    if (generate) {
        static const char *const sources[] = { "teacher", "generated", NULL };
        read_generation(L, 2, function, &e->generation);
        e->usage_source = option_choice(L, 2, "usage_from", function, sources, 0) == 0
                              ? USAGE_DECODER_TEACHER_FORCED : USAGE_DECODER_GENERATED;
    }
    o.results = option_string(L, 2, "results", function, NULL);
    o.record = option_boolean(L, 2, "record", function, 0);
    o.model_name = option_string(L, 2, "model_name", function, lm->name);
    o.step = lm->state.has_train_state ? lm->state.train.step : 0;
    struct job_controls c;
    read_controls(L, 2, function, &c);

    enum lua_job_kind kind = generate ? LUA_JOB_EVALUATE : LUA_JOB_USAGE;
    struct lua_job *lj = lua_job_push(L, kind, 1, task_index, c.callback, c.every);
    struct caem_error err;
    if (evaluate_job_start(&lj->job, &lj->evaluate, &lm->state, &lk->task, &o, 1, &err))
        return raise_error(L, function, &err);
    lua_job_attach(L, lj, c.paused);
    return 1;
}

/* model:evaluate{task=, split=, limit=, batch=, beams=, ...} */
int lua_model_evaluate(lua_State *L)
{
    static const char *const options[] = {
        "task", "split", "limit", "batch", "beams", "max_length", "repetition_penalty",
        "no_repeat_ngram_size", "length_penalty", "usage_from", "count_padding", "results",
        "record", "model_name", "on_step", "every", "paused", NULL,
    };
    option_check_keys(L, 2, "model:evaluate", options, 0, 0);
    return start_evaluation(L, 1, "model:evaluate");
}

/* model:usage{task=, split=, limit=, batch=, ...} */
int lua_model_usage(lua_State *L)
{
    static const char *const options[] = {
        "task", "split", "limit", "batch", "count_padding", "results", "record",
        "model_name", "on_step", "every", "paused", NULL,
    };
    option_check_keys(L, 2, "model:usage", options, 0, 0);
    return start_evaluation(L, 0, "model:usage");
}

/* ---- model:generate ---- */

#define GENERATE "model:generate"

/* Pushes the ids of one input as a table: a text is encoded, cut to
 * max_input - 1 ids and ended with EOS; a table of ids is checked against
 * the vocabulary and kept as it is. */
static void push_input_ids(lua_State *L, int index, const struct lua_tokenizer *lt,
                           const struct model_config *cfg, int max_input)
{
    if (lua_type(L, index) == LUA_TSTRING) {
        if (lt == NULL)
            luaL_error(L, GENERATE ": text inputs need the tokenizer option");
        size_t length;
        const char *text = lua_tolstring(L, index, &length);
        int32_t *ids;
        size_t count;
        struct caem_error err;
        if (tokenizer_encode(lt->tokenizer, text, length, &ids, &count, &err) != 0)
            raise_error(L, GENERATE, &err);
        size_t kept = count < (size_t)max_input - 1 ? count : (size_t)max_input - 1;
        lua_createtable(L, (int)kept + 1, 0);
        for (size_t i = 0; i < kept; i++) {
            lua_pushinteger(L, ids[i]);
            lua_seti(L, -2, (lua_Integer)i + 1);
        }
        free(ids);
        lua_pushinteger(L, cfg->eos_token_id);
        lua_seti(L, -2, (lua_Integer)kept + 1);
        return;
    }
    if (!lua_istable(L, index))
        luaL_error(L, GENERATE ": an input must be a string or a table of ids, got %s",
                   luaL_typename(L, index));
    lua_Integer count = luaL_len(L, index);
    if (count < 1)
        luaL_error(L, GENERATE ": an input has no ids");
    for (lua_Integer i = 1; i <= count; i++) {
        lua_geti(L, index, i);
        int exact;
        lua_Integer id = lua_tointegerx(L, -1, &exact);
        if (!exact || id < 0 || id >= cfg->vocab_size)
            luaL_error(L, GENERATE ": input id %I is %s, expected an integer in [0, %d)", i,
                       luaL_tolstring(L, -1, NULL), cfg->vocab_size);
        lua_pop(L, 1);
    }
    lua_pushvalue(L, index);
}

/* Pushes an array of id tables for the inputs at index 2; *single is 1 when
 * the argument was one input rather than a list. */
static void push_inputs(lua_State *L, const struct lua_tokenizer *lt,
                        const struct model_config *cfg, int max_input, int *single)
{
    int first = LUA_TNIL;
    if (lua_istable(L, 2)) {
        first = lua_geti(L, 2, 1);
        lua_pop(L, 1);
    }
    *single = lua_type(L, 2) == LUA_TSTRING || first == LUA_TNUMBER;
    lua_newtable(L);
    if (*single) {
        push_input_ids(L, 2, lt, cfg, max_input);
        lua_seti(L, -2, 1);
        return;
    }
    luaL_argcheck(L, lua_istable(L, 2), 2, "expected a text, a table of ids or a list");
    lua_Integer count = luaL_len(L, 2);
    if (count < 1)
        luaL_error(L, GENERATE ": expected at least one input");
    for (lua_Integer i = 1; i <= count; i++) {
        lua_geti(L, 2, i);
        push_input_ids(L, lua_gettop(L), lt, cfg, max_input);
        lua_seti(L, -3, i);
        lua_pop(L, 1);
    }
}

/* Pushes one output: text when a tokenizer is given, ids otherwise. */
static int push_output(lua_State *L, const struct lua_tokenizer *lt,
                       const struct model_config *cfg, const int32_t *ids, int length,
                       struct caem_error *err)
{
    if (lt == NULL) {
        lua_createtable(L, length, 0);
        for (int i = 0; i < length; i++) {
            lua_pushinteger(L, ids[i]);
            lua_seti(L, -2, i + 1);
        }
        return 0;
    }
    char *text;
    if (evaluate_decode_output(lt->tokenizer, ids, length, cfg->eos_token_id,
                               cfg->pad_token_id, &text, err) != 0)
        return -1;
    lua_pushstring(L, text);
    free(text);
    return 0;
}

/* Generates for rows [first, first + rows) of the inputs at index `inputs`,
 * appending outputs and scores to the tables at `outputs` and `scores`. */
static void generate_rows(lua_State *L, struct lua_model *lm, const struct lua_tokenizer *lt,
                          const struct generate_options *g, int inputs, lua_Integer first,
                          int rows, int outputs, int scores)
{
    const struct model_config *cfg = &lm->state.model->config;
    lua_Integer Te = 1;
    for (int r = 0; r < rows; r++) {
        lua_geti(L, inputs, first + r);
        lua_Integer length = luaL_len(L, -1);
        Te = length > Te ? length : Te;
        lua_pop(L, 1);
    }
    size_t cells = (size_t)rows * (size_t)Te;
    int32_t *ids = lua_newuserdatauv(L, sizeof *ids * cells * 2, 0);
    int32_t *mask = ids + cells;
    for (int r = 0; r < rows; r++) {
        lua_geti(L, inputs, first + r);
        lua_Integer length = luaL_len(L, -1);
        for (lua_Integer t = 0; t < Te; t++) {
            int real = t < length;
            lua_geti(L, -1, t + 1);
            ids[(size_t)r * Te + t] = real ? (int32_t)lua_tointeger(L, -1) : cfg->pad_token_id;
            mask[(size_t)r * Te + t] = real;
            lua_pop(L, 1);
        }
        lua_pop(L, 1);
    }
    struct generate_output out;
    struct caem_error err;
    if (model_generate(lm->state.model, ids, mask, rows, (int)Te, g, &out, NULL, &err) != 0)
        raise_error(L, GENERATE, &err);
    int rc = 0;
    for (int r = 0; r < rows && rc == 0; r++) {
        rc = push_output(L, lt, cfg, out.ids[r], out.lengths[r], &err);
        if (rc == 0) {
            lua_seti(L, outputs, first + r);
            lua_pushnumber(L, out.scores[r]);
            lua_seti(L, scores, first + r);
        }
    }
    generate_output_free(&out);
    if (rc != 0)
        raise_error(L, GENERATE, &err);
    lua_pop(L, 1);
}

/* model:generate(inputs, {tokenizer=, beams=, max_length=, ...}) returns the
 * outputs and their scores, one value each for a single input. */
int lua_model_generate(lua_State *L)
{
    static const char *const options[] = {
        "tokenizer", "beams", "max_length", "repetition_penalty", "no_repeat_ngram_size",
        "length_penalty", "batch", "max_input", NULL,
    };
    struct lua_model *lm = lua_model_check(L, 1);
    option_check_keys(L, 3, GENERATE, options, 0, 1);
    lua_settop(L, 3);
    struct lua_tokenizer *lt = option_userdata(L, 3, "tokenizer", GENERATE, TOKENIZER_TYPE, 0);
    lua_model_check_idle(L, lm, GENERATE);
    if (lt != NULL)
        lua_model_check_vocabulary(L, lm, lt->tokenizer, GENERATE);
    struct generate_options g = generate_paper_options();
    read_generation(L, 3, GENERATE, &g);
    int batch = (int)option_integer(L, 3, "batch", GENERATE, 16, 1, BATCH_MAX);
    int max_input = (int)option_integer(L, 3, "max_input", GENERATE, 512, 2, BATCH_MAX);

    int single;
    const struct model_config *cfg = &lm->state.model->config;
    push_inputs(L, lt, cfg, max_input, &single);
    int inputs = lua_gettop(L);
    lua_Integer count = luaL_len(L, inputs);
    lua_createtable(L, (int)count, 0);
    lua_createtable(L, (int)count, 0);
    int outputs = inputs + 1, scores = inputs + 2;
    for (lua_Integer first = 1; first <= count; first += batch) {
        int rows = (int)(count - first + 1 < batch ? count - first + 1 : batch);
        generate_rows(L, lm, lt, &g, inputs, first, rows, outputs, scores);
    }
    if (single) {
        lua_geti(L, outputs, 1);
        lua_geti(L, scores, 1);
    }
    return 2;
}
