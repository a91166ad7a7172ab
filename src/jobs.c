#include "jobs.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "checkpoint_edit.h"

/* The same columns as caem train writes, so that a run continues from
 * either kind of checkpoint. */
const char *const train_history_columns[TRAIN_HISTORY_COLUMNS] = {
    "step", "loss", "cross_entropy", "router_z", "balance", "grad_norm", "validation",
    "encoder_entropy", "decoder_entropy", "tokens_per_second", "elapsed",
};

/* ---- train jobs ---- */

struct train_job {
    struct checkpoint *state;
    const struct task *task;
    struct train_job_options options;
    const struct task *more_tasks[TRAIN_MAX_TASKS]; /* options.more_tasks points here */
    char *checkpoint;
    char *tokenizer_path;
    struct trainer *trainer;
    struct train_snapshot snapshot;  /* the worker's, for the report */
    struct checkpoint_history previous; /* the resumed run's rows */
    int base_known;
};

static void record_values(const struct train_record *r, double *v)
{
    double values[TRAIN_HISTORY_COLUMNS] = {
        (double)r->step, r->loss, r->cross_entropy, r->router_z, r->balance, r->grad_norm,
        r->validation, r->encoder_entropy, r->decoder_entropy, r->tokens_per_second,
        r->elapsed,
    };
    memcpy(v, values, sizeof values);
}

/* Column c of the previous history, matched by name; NULL when absent. */
static const double *previous_column(const struct checkpoint_history *h, int c)
{
    for (int k = 0; k < h->columns; k++)
        if (strcmp(h->names[k], train_history_columns[c]) == 0)
            return h->values + (size_t)k * h->rows;
    return NULL;
}

int train_history_build(const struct checkpoint_history *previous,
                        const struct trainer *trainer, struct checkpoint_history *out,
                        struct caem_error *err)
{
    long count;
    const struct train_record *records = trainer_history(trainer, &count);
    long old_rows = previous != NULL ? previous->rows : 0, rows = old_rows + count;
    /* the column names, copied from a table without rows */
    struct checkpoint_history names = { TRAIN_HISTORY_COLUMNS,
                                        (char **)train_history_columns, 0, NULL };
    if (checkpoint_history_copy(out, &names, err) != 0)
        return -1;
    free(out->values);
    out->rows = rows;
    out->values = malloc(sizeof(double) * TRAIN_HISTORY_COLUMNS * (size_t)(rows > 0 ? rows : 1));
    if (out->values == NULL) {
        checkpoint_history_free(out);
        return caem_fail(err, "out of memory for a history of %ld steps", rows);
    }
    for (int c = 0; c < TRAIN_HISTORY_COLUMNS; c++) {
        const double *old = previous != NULL ? previous_column(previous, c) : NULL;
        for (long r = 0; r < old_rows; r++)
            out->values[(size_t)c * rows + r] = old != NULL ? old[r] : NAN;
    }
    for (long r = 0; r < count; r++) {
        double v[TRAIN_HISTORY_COLUMNS];
        record_values(&records[r], v);
        for (int c = 0; c < TRAIN_HISTORY_COLUMNS; c++)
            out->values[(size_t)c * rows + old_rows + r] = v[c];
    }
    return 0;
}

/* The run's task names, joined with '+' for several tasks. */
static void task_names(const struct train_job *tj, char *out, size_t size)
{
    snprintf(out, size, "%s", tj->task->name);
    for (int k = 0; k < tj->options.more_task_count; k++) {
        size_t used = strlen(out);
        snprintf(out + used, size - used, "+%s", tj->options.more_tasks[k]->name);
    }
}

/* Stores the trainer's position as the train state's named integers. "tasks"
 * is the number of tasks (1 for a single task). Each task K (from 1) gets its
 * sequence lengths, "task_K_max_input" and "task_K_max_target", which a
 * resume compares. With several tasks, each also gets its place in its data,
 * "task_K_epoch" and "task_K_epoch_batch". */
static int store_train_state(struct train_job *tj, struct caem_error *err)
{
    struct checkpoint *ck = tj->state;
    struct train_state state;
    trainer_get_state(tj->trainer, &state);
    ck->has_train_state = 1;
    ck->train.seed = state.seed;
    ck->train.step = state.step;
    ck->train.epoch = state.epoch;
    ck->train.epoch_batch = state.epoch_batch;
    ck->train.rng_seed = ck->model->rng.seed;
    ck->train.rng_next = state.rng_next;
    ck->train.batch_size = tj->options.train.batch_size;
    ck->train.accumulation = tj->options.train.accumulation;
    task_names(tj, ck->train.task, sizeof ck->train.task);
    if (checkpoint_set_train_extra(ck, "tasks", state.tasks > 0 ? state.tasks : 1, err) != 0)
        return -1;
    for (int k = 0; k < trainer_task_count(tj->trainer); k++) {
        const struct task *task = trainer_task(tj->trainer, k);
        char name[64];
        snprintf(name, sizeof name, "task_%d_max_input", k + 1);
        if (checkpoint_set_train_extra(ck, name, task->max_input_length, err) != 0)
            return -1;
        snprintf(name, sizeof name, "task_%d_max_target", k + 1);
        if (checkpoint_set_train_extra(ck, name, task->max_target_length, err) != 0)
            return -1;
    }
    for (int k = 0; state.tasks > 1 && k < state.tasks; k++) {
        char name[64];
        snprintf(name, sizeof name, "task_%d_epoch", k + 1);
        if (checkpoint_set_train_extra(ck, name, state.epochs[k], err) != 0)
            return -1;
        snprintf(name, sizeof name, "task_%d_epoch_batch", k + 1);
        if (checkpoint_set_train_extra(ck, name, state.epoch_batches[k], err) != 0)
            return -1;
    }
    return 0;
}

int train_job_store(struct train_job *tj, struct caem_error *err)
{
    struct checkpoint *ck = tj->state;
    struct checkpoint_history history;
    if (checkpoint_set_optimizer(ck, trainer_optimizer(tj->trainer), err) != 0 ||
        train_history_build(&tj->previous, tj->trainer, &history, err) != 0)
        return -1;
    checkpoint_history_free(&ck->history);
    ck->history = history;
    if (store_train_state(tj, err) != 0)
        return -1;

    /* usage per task; the validation usage mixes the tasks of a multi-task
     * run, so it is kept for a single task only */
    int count = 1 + tj->options.more_task_count;
    for (int k = 0; k < count; k++) {
        const struct task *task = k == 0 ? tj->task : tj->options.more_tasks[k - 1];
        if (checkpoint_set_usage(ck, task->name, "train",
                                 count == 1 ? trainer_usage(tj->trainer)
                                            : trainer_task_usage(tj->trainer, k),
                                 err) != 0)
            return -1;
    }
    const struct usage_table *validation = trainer_validation_usage(tj->trainer);
    if (count == 1 && usage_table_rows(validation) > 0 && validation->tokens[0] > 0 &&
        checkpoint_set_usage(ck, tj->task->name, "validation", validation, err) != 0)
        return -1;
    char names[CHECKPOINT_TASK_MAX];
    task_names(tj, names, sizeof names);
    if (checkpoint_set_attribute(ck, "task", names, err) != 0)
        return -1;
    if (tj->tokenizer_path != NULL &&
        checkpoint_set_attribute(ck, "tokenizer", tj->tokenizer_path, err) != 0)
        return -1;
    return 0;
}

/* Records the parameters' hash as the base model before the first step,
 * unless the state names its base already. */
static int store_base(struct train_job *tj, struct caem_error *err)
{
    tj->base_known = 1;
    if (checkpoint_attribute(tj->state, "base") != NULL)
        return 0;
    char hash[17];
    checkpoint_params_hash(tj->state->model, hash);
    return checkpoint_set_attribute(tj->state, "base", hash, err);
}

static int train_unit(void *context, struct caem_error *err)
{
    struct train_job *tj = context;
    if (!tj->base_known && store_base(tj, err) != 0)
        return -1;
    if (trainer_step(tj->trainer, err) != 0)
        return -1;
    trainer_snapshot(tj->trainer, &tj->snapshot);
    long step = tj->snapshot.step, steps = tj->options.train.steps;
    long every = tj->options.checkpoint_every;
    if (tj->checkpoint != NULL && (step == steps || (every > 0 && step % every == 0))) {
        if (train_job_store(tj, err) != 0 || checkpoint_save(tj->checkpoint, tj->state, err))
            return caem_fail_prefix(err, "step %ld: checkpoint %s", step, tj->checkpoint);
    }
    return step >= steps ? 1 : 0;
}

static void train_report(void *context, struct job_report *out)
{
    struct train_job *tj = context;
    const struct train_snapshot *s = &tj->snapshot;
    int stepped = s->last.step > 0;
    memset(out, 0, sizeof *out);
    out->step = s->step;
    out->steps = s->steps;
    out->loss = stepped ? s->last.loss : NAN;
    out->cross_entropy = stepped ? s->last.cross_entropy : NAN;
    out->validation_loss = s->validation_loss;
    out->encoder_entropy = stepped ? s->last.encoder_entropy : NAN;
    out->decoder_entropy = stepped ? s->last.decoder_entropy : NAN;
    out->tokens_per_second = s->tokens_per_second;
    out->eta = stepped ? s->eta : NAN;
}

static void train_job_free(void *context)
{
    struct train_job *tj = context;
    train_snapshot_free(&tj->snapshot);
    trainer_free(tj->trainer);
    checkpoint_history_free(&tj->previous);
    free(tj->checkpoint);
    free(tj->tokenizer_path);
    free(tj);
}

static const struct job_ops train_ops = { train_unit, train_report, train_job_free };

/* Restores the optimizer moments, the data position and the history of the
 * run stored in the state. */
static int resume_run(struct train_job *tj, struct caem_error *err)
{
    const struct checkpoint *ck = tj->state;
    const struct train_options *o = &tj->options.train;
    if (ck->optimizer == NULL || !ck->has_train_state)
        return caem_fail(err, "the model has no optimizer state or train state to resume "
                         "from; train it without resume, or load a checkpoint that a "
                         "training run wrote");
    if (ck->train.batch_size != o->batch_size || ck->train.accumulation != o->accumulation)
        return caem_fail(err, "the run to resume used batch %d and accumulation %d, not %d "
                         "and %d", ck->train.batch_size, ck->train.accumulation,
                         o->batch_size, o->accumulation);
    char names[CHECKPOINT_TASK_MAX];
    task_names(tj, names, sizeof names);
    if (strcmp(ck->train.task, names) != 0)
        return caem_fail(err, "the run to resume trained on %s '%s', not '%s'",
                         strchr(ck->train.task, '+') != NULL ? "tasks" : "task",
                         ck->train.task, names);
    /* the same names with other sequence lengths would not continue exactly */
    for (int k = 0; k < trainer_task_count(tj->trainer); k++) {
        const struct task *task = trainer_task(tj->trainer, k);
        const char *what[2] = { "max_input", "max_target" };
        const long now[2] = { task->max_input_length, task->max_target_length };
        for (int i = 0; i < 2; i++) {
            char name[64];
            int64_t saved;
            snprintf(name, sizeof name, "task_%d_%s", k + 1, what[i]);
            if (checkpoint_train_extra(ck, name, &saved) && saved != now[i])
                return caem_fail(err, "the run to resume used task '%s' with %s %lld, not "
                                 "%ld; make the task with %s = %lld", task->name, what[i],
                                 (long long)saved, now[i], what[i], (long long)saved);
        }
    }
    if (trainer_restore(tj->trainer, ck, err) != 0)
        return -1;
    return checkpoint_history_copy(&tj->previous, &ck->history, err);
}

int trainer_restore(struct trainer *t, const struct checkpoint *ck, struct caem_error *err)
{
    if (ck->optimizer == NULL || !ck->has_train_state)
        return caem_fail(err, "the checkpoint has no optimizer state or train state");
    struct adamw *opt = trainer_optimizer(t);
    const struct adamw *saved = ck->optimizer;
    const struct backend *be = ck->model->backend;
    be->copy(opt->m, saved->m, sizeof(float) * saved->count);
    be->copy(opt->v, saved->v, sizeof(float) * saved->count);
    memcpy(opt->tensor_steps, saved->tensor_steps,
           sizeof *opt->tensor_steps * (size_t)ck->model->layout.count);
    opt->step = saved->step;
    struct train_state state;
    memset(&state, 0, sizeof state);
    state.seed = ck->train.seed;
    state.step = ck->train.step;
    state.epoch = ck->train.epoch;
    state.epoch_batch = ck->train.epoch_batch;
    state.rng_next = ck->train.rng_next;
    int64_t tasks = 1;
    checkpoint_train_extra(ck, "tasks", &tasks);
    if (tasks < 1 || tasks > TRAIN_MAX_TASKS)
        return caem_fail(err, "the saved run's train state names %lld tasks, expected 1 to %d",
                         (long long)tasks, TRAIN_MAX_TASKS);
    if (tasks > 1) {
        state.tasks = (int)tasks;
        for (int k = 0; k < state.tasks; k++) {
            char epoch[64], batch[64];
            int64_t e, b;
            snprintf(epoch, sizeof epoch, "task_%d_epoch", k + 1);
            snprintf(batch, sizeof batch, "task_%d_epoch_batch", k + 1);
            if (!checkpoint_train_extra(ck, epoch, &e) || !checkpoint_train_extra(ck, batch, &b))
                return caem_fail(err, "the saved run of %d tasks has no position for task %d "
                                 "(%s, %s in /train_state)", state.tasks, k + 1, epoch, batch);
            if (e < 0 || e > UINT32_MAX || b < 0)
                return caem_fail(err, "invalid saved position of task %d: epoch %lld, batch "
                                 "%lld", k + 1, (long long)e, (long long)b);
            state.epochs[k] = (uint32_t)e;
            state.epoch_batches[k] = (long)b;
        }
    }
    /* the usage of the steps before the stop, so that the run's usage is an
     * uninterrupted run's */
    for (int k = 0; k < trainer_task_count(t); k++) {
        const char *name = trainer_task(t, k)->name;
        for (int i = 0; i < ck->usage_count; i++) {
            const struct checkpoint_usage *u = &ck->usage[i];
            if (strcmp(u->task, name) == 0 && strcmp(u->split, "train") == 0 &&
                trainer_add_usage(t, k, &u->table, err) != 0)
                return -1;
        }
    }
    return trainer_set_state(t, &state, err);
}

/* Checks what trainer_create does not: the step count against a resumed
 * run, validation and checkpoint options against the task. */
static int check_train_options(const struct checkpoint *state, const struct task *task,
                               const struct train_job_options *o, struct caem_error *err)
{
    long done = o->resume && state->has_train_state ? state->train.step : 0;
    if (o->train.steps <= done)
        return caem_fail(err, "steps is %ld, but the run %s at step %ld; set steps above %ld",
                         o->train.steps, done > 0 ? "is already" : "starts", done, done);
    if (o->more_task_count < 0 || o->more_task_count >= TRAIN_MAX_TASKS)
        return caem_fail(err, "invalid number of tasks %d, expected 1 to %d",
                         o->more_task_count + 1, TRAIN_MAX_TASKS);
    for (int k = 0; k <= o->more_task_count; k++) {
        const struct task *t = k == 0 ? task : o->more_tasks[k - 1];
        const struct task_split *validation = &t->splits[TASK_SPLIT_VALIDATION];
        if (o->train.validate_every > 0 &&
            (!validation->tokenized || validation->tokens.count == 0))
            return caem_fail(err, "task '%s' has no validation examples; set validate_every "
                             "to 0", t->name);
    }
    if (o->checkpoint_every < 0)
        return caem_fail(err, "invalid checkpoint_every %ld, expected 0 or more",
                         o->checkpoint_every);
    if (o->checkpoint_every > 0 && o->checkpoint == NULL)
        return caem_fail(err, "checkpoint_every needs a checkpoint path");
    if (o->checkpoint != NULL && checkpoint_check_target(o->checkpoint, err) != 0)
        return -1;
    return 0;
}

static int train_job_setup(struct train_job *tj, struct caem_error *err)
{
    const struct train_job_options *o = &tj->options;
    if ((o->checkpoint != NULL &&
         (tj->checkpoint = strdup(o->checkpoint)) == NULL) ||
        (o->tokenizer_path != NULL &&
         (tj->tokenizer_path = strdup(o->tokenizer_path)) == NULL))
        return caem_fail(err, "out of memory for the paths of a train job");
    tj->options.checkpoint = NULL;
    tj->options.tokenizer_path = NULL;
    const struct task *tasks[TRAIN_MAX_TASKS];
    tasks[0] = tj->task;
    for (int k = 0; k < o->more_task_count; k++)
        tasks[k + 1] = o->more_tasks[k];
    if (trainer_create_multi(&tj->trainer, tj->state->model, tasks, 1 + o->more_task_count,
                             &o->train, err) != 0)
        return -1;
    if (o->resume && resume_run(tj, err) != 0)
        return -1;
    if (train_snapshot_init(&tj->snapshot, tj->trainer, err) != 0)
        return -1;
    trainer_snapshot(tj->trainer, &tj->snapshot);
    return 0;
}

int train_job_start(struct job **out, struct train_job **context, struct checkpoint *state,
                    const struct task *task, const struct train_job_options *o, int paused,
                    struct caem_error *err)
{
    *out = NULL;
    *context = NULL;
    if (check_train_options(state, task, o, err) != 0)
        return -1;
    struct train_job *tj = caem_calloc(1, sizeof *tj, "a train job", err);
    if (tj == NULL)
        return -1;
    tj->state = state;
    tj->task = task;
    tj->options = *o;
    for (int k = 0; k < o->more_task_count; k++)
        tj->more_tasks[k] = o->more_tasks[k];
    tj->options.more_tasks = tj->more_tasks;
    if (train_job_setup(tj, err) != 0) {
        train_job_free(tj);
        return -1;
    }
    if (job_start(out, "train", &train_ops, tj, paused, err) != 0)
        return -1;
    *context = tj;
    return 0;
}

int train_job_usage(struct train_job *tj, struct usage_table *running,
                    struct usage_table *window, struct caem_error *err)
{
    struct train_snapshot s;
    memset(running, 0, sizeof *running);
    memset(window, 0, sizeof *window);
    if (train_snapshot_init(&s, tj->trainer, err) != 0)
        return -1;
    trainer_snapshot(tj->trainer, &s);
    /* the snapshot's tables are copies already: the caller takes them over */
    *running = s.usage;
    *window = s.window;
    return 0;
}

int train_job_snapshot_init(struct train_job *tj, struct train_snapshot *s,
                            struct caem_error *err)
{
    return train_snapshot_init(s, tj->trainer, err);
}

void train_job_snapshot(struct train_job *tj, struct train_snapshot *s)
{
    trainer_snapshot(tj->trainer, s);
}

/* ---- evaluation and usage jobs ---- */

struct evaluate_job {
    struct checkpoint *state;
    const struct task *task;
    struct evaluate_job_options options;
    char *results;
    char *model_name;
    struct evaluator *evaluator;
    struct evaluation result;
    int finished;
};

/* Ends the job on the worker after the last batch: keeps the result,
 * appends the results files and records the usage. */
static int evaluate_complete(struct evaluate_job *ej, struct caem_error *err)
{
    if (evaluator_finish(ej->evaluator, &ej->result, err) != 0)
        return -1;
    const struct evaluate_job_options *o = &ej->options;
    if (ej->results != NULL &&
        evaluation_append_results(ej->results, ej->model_name, ej->task, o->step,
                                  &ej->result, err) != 0)
        return -1;
    if (o->record && checkpoint_set_usage(ej->state, ej->task->name,
                                          task_split_name(o->evaluate.split),
                                          &ej->result.usage, err) != 0)
        return -1;
    ej->finished = 1;
    return 0;
}

static int evaluate_unit(void *context, struct caem_error *err)
{
    struct evaluate_job *ej = context;
    int rc = evaluator_step(ej->evaluator, err);
    if (rc == 1 && evaluate_complete(ej, err) != 0)
        return -1;
    return rc;
}

static void evaluate_report(void *context, struct job_report *out)
{
    struct evaluate_job *ej = context;
    double seconds;
    memset(out, 0, sizeof *out);
    evaluator_progress(ej->evaluator, &out->step, &out->steps, &seconds);
    const struct usage_table *usage = ej->finished ? &ej->result.usage
                                                   : evaluator_usage(ej->evaluator);
    out->loss = out->cross_entropy = NAN;
    out->validation_loss = ej->finished ? ej->result.loss : NAN;
    out->encoder_entropy = usage_table_mean_entropy(usage, 0);
    out->decoder_entropy = usage_table_mean_entropy(usage, 1);
    out->eta = out->step > 0 ? seconds / (double)out->step * (double)(out->steps - out->step)
                             : NAN;
}

static void evaluate_job_free(void *context)
{
    struct evaluate_job *ej = context;
    evaluator_free(ej->evaluator);
    evaluation_free(&ej->result);
    free(ej->results);
    free(ej->model_name);
    free(ej);
}

static const struct job_ops evaluate_ops = { evaluate_unit, evaluate_report,
                                             evaluate_job_free };

int evaluate_job_start(struct job **out, struct evaluate_job **context,
                       struct checkpoint *state, const struct task *task,
                       const struct evaluate_job_options *o, int paused,
                       struct caem_error *err)
{
    *out = NULL;
    *context = NULL;
    struct evaluate_job *ej = caem_calloc(1, sizeof *ej, "an evaluation job", err);
    if (ej == NULL)
        return -1;
    ej->state = state;
    ej->task = task;
    ej->options = *o;
    ej->options.results = ej->options.model_name = NULL;
    const char *name = o->model_name != NULL ? o->model_name : "model";
    if ((o->results != NULL && (ej->results = strdup(o->results)) == NULL) ||
        (ej->model_name = strdup(name)) == NULL) {
        evaluate_job_free(ej);
        return caem_fail(err, "out of memory for an evaluation job");
    }
    if (evaluator_create(&ej->evaluator, state->model, task, &o->evaluate, err) != 0) {
        evaluate_job_free(ej);
        return -1;
    }
    const char *kind = o->evaluate.generate ? "evaluate" : "usage";
    if (job_start(out, kind, &evaluate_ops, ej, paused, err) != 0)
        return -1;
    *context = ej;
    return 0;
}

const struct evaluation *evaluate_job_result(const struct evaluate_job *ej)
{
    return ej->finished ? &ej->result : NULL;
}
