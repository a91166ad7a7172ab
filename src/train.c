#include "train.h"

#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "evaluate.h"

/* One task's place in its data and its usage. */
struct task_stream {
    const struct task *task;
    uint32_t epoch;
    long epoch_batch;
    struct task_batches batches;
    int open;
    struct usage_table step_usage; /* the current step's micro-batches of this task */
    struct usage_table usage;      /* every step of this run, this task's batches */
};

struct trainer {
    struct model *model;
    const struct task *task; /* the first task, which names the run */
    int task_count;
    struct task_stream streams[TRAIN_MAX_TASKS];
    struct train_options options;
    struct adamw *optimizer;
    enum train_status status;
    char message[CAEM_ERROR_MAX];

    long step;

    /* statistics, written by the driving thread */
    struct usage_table step_usage;       /* the current step's micro-batches, all tasks */
    struct usage_table usage;            /* every step of this run, all tasks */
    struct usage_table window_usage;     /* the steps of the open window */
    struct usage_table last_window;      /* the last completed window */
    struct usage_table validation_usage; /* the last validation pass */
    struct train_record *history;
    long history_count, history_capacity;
    double validation_loss;
    long validation_step;
    double last_finite_loss;
    long last_finite_step;
    long tokens;
    double started; /* seconds: creation time */
    double busy;    /* seconds in forward, backward and update, for tokens/s */
    double wall;    /* seconds in trainer_step, validation included, for the ETA */
    long timed_steps;

    pthread_mutex_t lock; /* guards what trainer_snapshot reads */
};

struct train_options train_defaults(void)
{
    struct train_options o = { 0 };
    o.batch_size = 8;
    o.accumulation = 1;
    o.steps = 100;
    o.validate_every = 50;
    o.validation_examples = 256;
    o.window = 20;
    o.seed = 1;
    o.adamw = adamw_defaults();
    return o;
}

static double seconds_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static int check_options(const struct train_options *o, struct caem_error *err)
{
    if (o->batch_size < 1)
        return caem_fail(err, "invalid batch size %d, expected at least 1", o->batch_size);
    if (o->accumulation < 1)
        return caem_fail(err, "invalid accumulation %d, expected at least 1 micro-batch",
                         o->accumulation);
    if (o->steps < 0)
        return caem_fail(err, "invalid step count %ld, expected at least 0", o->steps);
    if (o->validate_every < 0)
        return caem_fail(err, "invalid validation interval %d, expected 0 (none) or more",
                         o->validate_every);
    if (o->validation_examples < 0)
        return caem_fail(err, "invalid validation example count %ld, expected 0 (all) or "
                         "more", o->validation_examples);
    if (o->window < 1)
        return caem_fail(err, "invalid usage window %d, expected at least 1 step", o->window);
    if (!(o->adamw.lr >= 0.0f) || !isfinite(o->adamw.lr))
        return caem_fail(err, "invalid learning rate %g", (double)o->adamw.lr);
    return 0;
}

int trainer_create_multi(struct trainer **out, struct model *m,
                         const struct task *const *tasks, int count,
                         const struct train_options *options, struct caem_error *err)
{
    *out = NULL;
    if (check_options(options, err) != 0)
        return -1;
    if (count < 1 || count > TRAIN_MAX_TASKS)
        return caem_fail(err, "invalid number of tasks %d, expected 1 to %d", count,
                         TRAIN_MAX_TASKS);
    for (int k = 0; k < count; k++) {
        const struct task_split *train = &tasks[k]->splits[TASK_SPLIT_TRAIN];
        if (!train->tokenized || train->tokens.count == 0)
            return caem_fail(err, "task '%s' has no tokenized train examples",
                             tasks[k]->name);
    }
    struct trainer *t = calloc(1, sizeof *t);
    if (t == NULL)
        return caem_fail(err, "out of memory for a trainer");
    t->model = m;
    t->task = tasks[0];
    t->task_count = count;
    t->options = *options;
    t->status = TRAIN_READY;
    t->validation_loss = NAN;
    t->validation_step = -1;
    t->last_finite_loss = NAN;
    t->last_finite_step = -1;
    t->started = seconds_now();
    pthread_mutex_init(&t->lock, NULL);
    int failed = usage_table_init(&t->step_usage, &m->config, err) != 0 ||
                 usage_table_init(&t->usage, &m->config, err) != 0 ||
                 usage_table_init(&t->window_usage, &m->config, err) != 0 ||
                 usage_table_init(&t->last_window, &m->config, err) != 0 ||
                 usage_table_init(&t->validation_usage, &m->config, err) != 0;
    for (int k = 0; k < count && !failed; k++) {
        t->streams[k].task = tasks[k];
        failed = usage_table_init(&t->streams[k].step_usage, &m->config, err) != 0 ||
                 usage_table_init(&t->streams[k].usage, &m->config, err) != 0;
    }
    if (failed || adamw_create(&t->optimizer, m, &options->adamw, err) != 0) {
        trainer_free(t);
        return -1;
    }
    struct usage_table *tables[] = { &t->step_usage, &t->usage, &t->window_usage,
                                     &t->last_window, &t->validation_usage };
    for (size_t i = 0; i < sizeof tables / sizeof tables[0]; i++)
        tables[i]->count_padding = options->count_padding;
    for (int k = 0; k < count; k++)
        t->streams[k].step_usage.count_padding = t->streams[k].usage.count_padding =
            options->count_padding;
    model_set_seed(m, options->seed);
    *out = t;
    return 0;
}

int trainer_create(struct trainer **out, struct model *m, const struct task *task,
                   const struct train_options *options, struct caem_error *err)
{
    return trainer_create_multi(out, m, &task, 1, options, err);
}

void trainer_free(struct trainer *t)
{
    if (t == NULL)
        return;
    for (int k = 0; k < t->task_count; k++) {
        if (t->streams[k].open)
            task_batches_end(&t->streams[k].batches);
        usage_table_free(&t->streams[k].step_usage);
        usage_table_free(&t->streams[k].usage);
    }
    adamw_free(t->optimizer);
    usage_table_free(&t->step_usage);
    usage_table_free(&t->usage);
    usage_table_free(&t->window_usage);
    usage_table_free(&t->last_window);
    usage_table_free(&t->validation_usage);
    free(t->history);
    pthread_mutex_destroy(&t->lock);
    free(t);
}

struct adamw *trainer_optimizer(struct trainer *t)
{
    return t->optimizer;
}

/* Opens the stream's epoch and skips the micro-batches already used. The
 * order of a task's batches depends on (seed + task index, epoch), so the
 * first task's order is that of a single-task run. */
static int open_epoch(struct trainer *t, struct task_stream *ts, struct caem_error *err)
{
    if (ts->open)
        task_batches_end(&ts->batches);
    ts->open = 0;
    const struct task_tokens *tokens = &ts->task->splits[TASK_SPLIT_TRAIN].tokens;
    uint64_t seed = t->options.seed + (uint64_t)(ts - t->streams);
    if (task_batches_begin(&ts->batches, tokens, t->options.batch_size, TASK_BATCHES_BUCKETED,
                           seed, ts->epoch, err) != 0)
        return -1;
    ts->open = 1;
    struct batch skipped;
    for (long i = 0; i < ts->epoch_batch; i++)
        if (!task_batches_next(&ts->batches, &skipped))
            return caem_fail(err, "epoch %u of task '%s' has %ld batches, fewer than the %ld "
                             "already used", ts->epoch, ts->task->name, i, ts->epoch_batch);
    return 0;
}

/* Fills b with the stream's next micro-batch, moving to its next epoch at
 * the end of one, so that a larger task rotates through its examples. */
static int next_batch(struct trainer *t, struct task_stream *ts, struct batch *b,
                      struct caem_error *err)
{
    if (!ts->open && open_epoch(t, ts, err) != 0)
        return -1;
    if (!task_batches_next(&ts->batches, b)) {
        ts->epoch++;
        ts->epoch_batch = 0;
        if (open_epoch(t, ts, err) != 0)
            return -1;
        if (!task_batches_next(&ts->batches, b))
            return caem_fail(err, "task '%s' gives an empty epoch", ts->task->name);
    }
    ts->epoch_batch++;
    return 0;
}

static long batch_real_tokens(const struct batch *b)
{
    long n = 0;
    size_t ne = (size_t)b->batch_size * b->encoder_length;
    size_t nd = (size_t)b->batch_size * b->decoder_length;
    for (size_t i = 0; i < ne; i++)
        n += b->attention_mask[i] != 0;
    for (size_t i = 0; i < nd; i++)
        n += b->labels[i] != LABEL_IGNORE;
    return n;
}

static int history_append(struct trainer *t, const struct train_record *r,
                          struct caem_error *err)
{
    if (t->history_count == t->history_capacity) {
        long cap = t->history_capacity ? t->history_capacity * 2 : 256;
        struct train_record *grown = realloc(t->history, sizeof *grown * (size_t)cap);
        if (grown == NULL)
            return caem_fail(err, "out of memory for the history of %ld steps", cap);
        t->history = grown;
        t->history_capacity = cap;
    }
    t->history[t->history_count++] = *r;
    return 0;
}

/* Marks the run failed with the message in err, extended by where the
 * parameters stand. Returns -1. */
static int fail_step(struct trainer *t, struct caem_error *err)
{
    /* room for the context around the message */
    char detail[CAEM_ERROR_MAX - 200];
    size_t length = strnlen(err->message, sizeof detail - 1);
    memcpy(detail, err->message, length);
    detail[length] = '\0';
    if (t->last_finite_step >= 0)
        caem_fail(err, "step %ld: %s; the last finite loss was %.6g at step %ld, and the "
                  "parameters are those after step %ld", t->step + 1, detail,
                  t->last_finite_loss, t->last_finite_step, t->step);
    else
        caem_fail(err, "step %ld: %s; no step had a finite loss, and the parameters are "
                  "unchanged", t->step + 1, detail);
    pthread_mutex_lock(&t->lock);
    t->status = TRAIN_FAILED;
    snprintf(t->message, sizeof t->message, "%s", err->message);
    pthread_mutex_unlock(&t->lock);
    return -1;
}

/* Forward and backward of `accumulation` micro-batches into r and the
 * window usage; the losses in r are means over the micro-batches. */
static int accumulate_gradients(struct trainer *t, struct train_record *r, long *tokens,
                                struct caem_error *err)
{
    struct model *m = t->model;
    int accumulation = t->options.accumulation;
    int micro_batches = accumulation * t->task_count;
    model_zero_grad(m);
    usage_table_clear(&t->step_usage);
    for (int task = 0; task < t->task_count; task++) {
        struct task_stream *ts = &t->streams[task];
        usage_table_clear(&ts->step_usage);
        for (int k = 0; k < accumulation; k++) {
            struct batch b;
            struct model_losses losses;
            if (next_batch(t, ts, &b, err) != 0)
                return -1;
            if (model_forward(m, &b, &losses, err) != 0 || model_backward(m, err) != 0)
                return -1;
            if (usage_table_collect(&ts->step_usage, m, &b, err) != 0)
                return -1;
            r->loss += losses.total / micro_batches;
            r->cross_entropy += losses.cross_entropy / micro_batches;
            r->router_z += (losses.encoder_z + losses.decoder_z) / micro_batches;
            r->balance += (losses.encoder_balance + losses.decoder_balance) / micro_batches;
            *tokens += batch_real_tokens(&b);
        }
        if (usage_table_add(&t->step_usage, &ts->step_usage, err) != 0)
            return -1;
    }
    /* the mean gradient of the micro-batches */
    if (micro_batches > 1)
        m->backend->scale(m->grads, 1.0f / (float)micro_batches, m->layout.total);
    return 0;
}

int trainer_step(struct trainer *t, struct caem_error *err)
{
    if (t->status == TRAIN_FAILED)
        return caem_fail(err, "the run failed earlier and takes no more steps: %s",
                         t->message);
    if (t->step >= t->options.steps)
        return caem_fail(err, "the run is finished: %ld of %ld steps done", t->step,
                         t->options.steps);
    struct model *m = t->model;
    double start = seconds_now();
    struct train_record r = { 0 };
    long tokens = 0;
    m->training = 1;
    if (accumulate_gradients(t, &r, &tokens, err) != 0)
        return fail_step(t, err);

    /* the update must not write a non-finite value into the parameters */
    r.grad_norm = sqrt(m->backend->sum_squares(m->grads, m->layout.total));
    if (!isfinite(r.grad_norm)) {
        caem_fail(err, "gradient norm is not finite (%g) at loss %.6g", r.grad_norm, r.loss);
        return fail_step(t, err);
    }
    adamw_step(t->optimizer, m);
    double seconds = seconds_now() - start;

    /* publish: counters, window, history */
    pthread_mutex_lock(&t->lock);
    t->step++;
    t->busy += seconds;
    t->timed_steps++;
    t->tokens += tokens;
    t->last_finite_loss = r.loss;
    t->last_finite_step = t->step;
    usage_table_add(&t->usage, &t->step_usage, err);
    usage_table_add(&t->window_usage, &t->step_usage, err);
    for (int k = 0; k < t->task_count; k++)
        usage_table_add(&t->streams[k].usage, &t->streams[k].step_usage, err);
    r.step = t->step;
    r.validation = NAN;
    r.encoder_entropy = usage_table_mean_entropy(&t->window_usage, 0);
    r.decoder_entropy = usage_table_mean_entropy(&t->window_usage, 1);
    r.tokens_per_second = seconds > 0.0 ? tokens / seconds : 0.0;
    r.elapsed = seconds_now() - t->started;
    if (t->step % t->options.window == 0) {
        usage_table_copy(&t->last_window, &t->window_usage, err);
        usage_table_clear(&t->window_usage);
    }
    t->status = t->step >= t->options.steps ? TRAIN_FINISHED : TRAIN_RUNNING;
    pthread_mutex_unlock(&t->lock);

    if (t->options.validate_every > 0 && t->step % t->options.validate_every == 0) {
        if (trainer_validate(t, &r.validation, err) != 0)
            return -1;
    }
    /* the snapshot reads the history, which may move when it grows */
    pthread_mutex_lock(&t->lock);
    t->wall += seconds_now() - start;
    int status = history_append(t, &r, err);
    pthread_mutex_unlock(&t->lock);
    return status;
}

int trainer_validate(struct trainer *t, double *loss, struct caem_error *err)
{
    struct model *m = t->model;
    for (int k = 0; k < t->task_count; k++) {
        const struct task *task = t->streams[k].task;
        const struct task_split *split = &task->splits[TASK_SPLIT_VALIDATION];
        if (!split->tokenized || split->tokens.count == 0)
            return caem_fail(err, "task '%s' has no tokenized validation examples",
                             task->name);
    }
    /* Eval mode draws nothing from the random stream, so validation leaves
     * the training run's dropout and jitter as they would be without it. */
    int training = m->training;
    m->training = 0;
    usage_table_clear(&t->validation_usage);
    double sum = 0.0;
    int rc = 0;
    for (int k = 0; k < t->task_count && rc == 0; k++) {
        const struct task_split *split = &t->streams[k].task->splits[TASK_SPLIT_VALIDATION];
        long limit = t->options.validation_examples;
        if (limit <= 0 || limit > split->tokens.count)
            limit = split->tokens.count;
        double task_loss;
        rc = evaluate_loss(m, &split->tokens, limit, t->options.batch_size,
                           &t->validation_usage, &task_loss, err);
        sum += task_loss;
    }
    m->training = training;
    if (rc != 0)
        return -1;
    /* with several tasks, the mean of the tasks' losses */
    *loss = sum / t->task_count;
    pthread_mutex_lock(&t->lock);
    t->validation_loss = *loss;
    t->validation_step = t->step;
    pthread_mutex_unlock(&t->lock);
    return 0;
}

void trainer_get_state(const struct trainer *t, struct train_state *state)
{
    state->seed = t->options.seed;
    state->step = t->step;
    state->epoch = t->streams[0].epoch;
    state->epoch_batch = t->streams[0].epoch_batch;
    state->rng_next = t->model->rng.next;
    state->tasks = t->task_count;
    for (int k = 0; k < t->task_count; k++) {
        state->epochs[k] = t->streams[k].epoch;
        state->epoch_batches[k] = t->streams[k].epoch_batch;
    }
}

int trainer_set_state(struct trainer *t, const struct train_state *state,
                      struct caem_error *err)
{
    if (state->seed != t->options.seed)
        return caem_fail(err, "the saved run used seed %llu, but this run has seed %llu",
                         (unsigned long long)state->seed,
                         (unsigned long long)t->options.seed);
    if (state->step < 0 || state->epoch_batch < 0)
        return caem_fail(err, "invalid saved state: step %ld, epoch batch %ld", state->step,
                         state->epoch_batch);
    int tasks = state->tasks > 0 ? state->tasks : 1;
    if (tasks != t->task_count)
        return caem_fail(err, "the saved run trained %d tasks, but this run has %d", tasks,
                         t->task_count);
    t->step = state->step;
    for (int k = 0; k < t->task_count; k++) {
        struct task_stream *ts = &t->streams[k];
        ts->epoch = state->tasks > 0 ? state->epochs[k] : state->epoch;
        ts->epoch_batch = state->tasks > 0 ? state->epoch_batches[k] : state->epoch_batch;
        if (ts->epoch_batch < 0)
            return caem_fail(err, "invalid saved state: epoch batch %ld of task %d",
                             ts->epoch_batch, k + 1);
        if (open_epoch(t, ts, err) != 0)
            return -1;
    }
    t->model->rng.seed = state->seed;
    t->model->rng.next = state->rng_next;
    pthread_mutex_lock(&t->lock);
    t->last_finite_step = -1;
    t->status = t->step >= t->options.steps ? TRAIN_FINISHED : TRAIN_READY;
    pthread_mutex_unlock(&t->lock);
    return 0;
}

int trainer_add_usage(struct trainer *t, int task, const struct usage_table *usage,
                      struct caem_error *err)
{
    if (task < 0 || task >= t->task_count)
        return caem_fail(err, "the run has no task %d", task + 1);
    pthread_mutex_lock(&t->lock);
    int status = usage_table_add(&t->usage, usage, err);
    if (status == 0)
        status = usage_table_add(&t->streams[task].usage, usage, err);
    pthread_mutex_unlock(&t->lock);
    return status;
}

const struct usage_table *trainer_task_usage(const struct trainer *t, int task)
{
    return task >= 0 && task < t->task_count ? &t->streams[task].usage : NULL;
}

int trainer_task_count(const struct trainer *t)
{
    return t->task_count;
}

const struct task *trainer_task(const struct trainer *t, int k)
{
    return t->streams[k].task;
}

const struct train_record *trainer_history(const struct trainer *t, long *count)
{
    *count = t->history_count;
    return t->history;
}

const struct usage_table *trainer_usage(const struct trainer *t)
{
    return &t->usage;
}

const struct usage_table *trainer_validation_usage(const struct trainer *t)
{
    return &t->validation_usage;
}

int train_snapshot_init(struct train_snapshot *s, const struct trainer *t,
                        struct caem_error *err)
{
    memset(s, 0, sizeof *s);
    if (usage_table_init_like(&s->usage, &t->usage, err) != 0)
        return -1;
    if (usage_table_init_like(&s->window, &t->usage, err) != 0) {
        usage_table_free(&s->usage);
        return -1;
    }
    return 0;
}

void train_snapshot_free(struct train_snapshot *s)
{
    usage_table_free(&s->usage);
    usage_table_free(&s->window);
}

void trainer_snapshot(struct trainer *t, struct train_snapshot *s)
{
    struct caem_error ignored;
    pthread_mutex_lock(&t->lock);
    s->status = t->status;
    s->step = t->step;
    s->steps = t->options.steps;
    s->epoch = t->streams[0].epoch;
    if (t->history_count > 0)
        s->last = t->history[t->history_count - 1];
    else
        memset(&s->last, 0, sizeof s->last);
    s->validation_loss = t->validation_loss;
    s->validation_step = t->validation_step;
    s->last_finite_loss = t->last_finite_loss;
    s->tokens = t->tokens;
    s->tokens_per_second = t->busy > 0.0 ? t->tokens / t->busy : 0.0;
    long remaining = t->options.steps - t->step;
    s->eta = t->timed_steps > 0 && remaining > 0 ? remaining * (t->wall / t->timed_steps) : 0.0;
    usage_table_copy(&s->usage, &t->usage, &ignored);
    usage_table_copy(&s->window, &t->last_window, &ignored);
    snprintf(s->message, sizeof s->message, "%s", t->message);
    pthread_mutex_unlock(&t->lock);
}
