/* The training loop: determinism, exact resume, accumulation, validation,
 * usage while training, failure on a non-finite loss, and the snapshot read
 * from another thread. The task is synthetic and in memory: each input draws
 * most of its tokens from one of four topics' share of the vocabulary, and
 * the target is the topic's token. */
#include <math.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "adamw.h"
#include "config.h"
#include "model.h"
#include "rng.h"
#include "task.h"
#include "test.h"
#include "train.h"

enum { TOPICS = 4, TRAIN_EXAMPLES = 96, VALIDATION_EXAMPLES = 24, FIRST_TOKEN = 10 };

static void add_examples(struct task_tokens *tokens, long count, uint64_t seed)
{
    struct caem_error err;
    int32_t input[16], target[1];
    for (long i = 0; i < count; i++) {
        int topic = (int)(i % TOPICS);
        int length = 5 + (int)(rng_uniform(seed, (uint64_t)i * 64) * 10.0f);
        int span = (96 - FIRST_TOKEN) / TOPICS;
        for (int j = 0; j < length; j++) {
            float u = rng_uniform(seed, (uint64_t)i * 64 + 1 + j);
            float v = rng_uniform(seed, (uint64_t)i * 64 + 32 + j);
            int own = u < 0.8f;
            int base = own ? FIRST_TOKEN + topic * span : FIRST_TOKEN;
            int range = own ? span : 96 - FIRST_TOKEN;
            input[j] = base + (int)(v * (float)range) % range;
        }
        target[0] = 2 + topic;
        task_tokens_append(tokens, input, (size_t)length, target, 1, &err);
    }
}

static void sized_task(struct task *t, const char *name, long train_examples, uint64_t seed)
{
    struct caem_error err;
    task_init(t, name, TASK_METRIC_ACCURACY, NULL, 16, 4, &err);
    struct task_split *train = &t->splits[TASK_SPLIT_TRAIN];
    struct task_split *validation = &t->splits[TASK_SPLIT_VALIDATION];
    task_tokens_init(&train->tokens, 16, 4, 1, 0, 0, &err);
    task_tokens_init(&validation->tokens, 16, 4, 1, 0, 0, &err);
    add_examples(&train->tokens, train_examples, seed);
    add_examples(&validation->tokens, VALIDATION_EXAMPLES, seed + 1);
    train->tokenized = validation->tokenized = 1;
}

static void synthetic_task(struct task *t)
{
    sized_task(t, "topics", TRAIN_EXAMPLES, 5);
}

static struct model *tiny_model(float dropout)
{
    struct caem_error err;
    struct model_config cfg;
    config_preset(&cfg, "tiny", &err);
    cfg.dropout_rate = dropout;
    cfg.expert_capacity = 4; /* some tokens exceed it */
    struct model *m = NULL;
    if (model_create(&m, &cfg, backend_cpu(), &err) != 0)
        return NULL;
    model_init_params(m, 7);
    return m;
}

static struct train_options test_options(long steps)
{
    struct train_options o = train_defaults();
    o.batch_size = 8;
    o.steps = steps;
    o.validate_every = 0;
    o.window = 4;
    o.seed = 42;
    o.adamw.lr = 3e-3f;
    return o;
}

/* Runs `steps` steps and stores each step's loss. */
static int run_steps(struct trainer *t, long steps, double *losses)
{
    struct caem_error err;
    for (long i = 0; i < steps; i++) {
        if (trainer_step(t, &err) != 0) {
            printf("  step %ld: %s\n", i + 1, err.message);
            return -1;
        }
        long count;
        const struct train_record *h = trainer_history(t, &count);
        losses[i] = h[count - 1].loss;
    }
    return 0;
}

static void test_same_seed_same_losses(void)
{
    struct task task;
    synthetic_task(&task);
    double a[10], b[10];
    for (int run = 0; run < 2; run++) {
        struct caem_error err;
        struct model *m = tiny_model(0.1f);
        struct trainer *t = NULL;
        struct train_options o = test_options(10);
        CHECK_MSG(trainer_create(&t, m, &task, &o, &err) == 0, "%s", err.message);
        CHECK(run_steps(t, 10, run == 0 ? a : b) == 0);
        trainer_free(t);
        model_free(m);
    }
    for (int i = 0; i < 10; i++)
        CHECK_MSG(a[i] == b[i], "step %d: %.17g against %.17g", i + 1, a[i], b[i]);
    task_free(&task);
}

/* A run stopped after 7 steps and resumed in a new model and trainer from
 * the saved parameters, optimizer state and train state gives the losses of
 * an uninterrupted run, bit for bit, across an epoch boundary (12 batches). */
static void test_resume_matches_uninterrupted(void)
{
    enum { STEPS = 16, STOP = 7 };
    struct task task;
    synthetic_task(&task);
    struct caem_error err;
    double full[STEPS], resumed[STEPS];

    struct model *m = tiny_model(0.1f);
    struct trainer *t = NULL;
    struct train_options o = test_options(STEPS);
    CHECK(trainer_create(&t, m, &task, &o, &err) == 0);
    CHECK(run_steps(t, STEPS, full) == 0);
    trainer_free(t);
    model_free(m);

    m = tiny_model(0.1f);
    CHECK(trainer_create(&t, m, &task, &o, &err) == 0);
    CHECK(run_steps(t, STOP, resumed) == 0);
    struct train_state state;
    trainer_get_state(t, &state);
    CHECK_INT_EQ(state.step, STOP);
    struct adamw *saved = trainer_optimizer(t);

    struct model *m2 = tiny_model(0.1f);
    memcpy(m2->params, m->params, sizeof(float) * m->layout.total);
    struct trainer *t2 = NULL;
    CHECK(trainer_create(&t2, m2, &task, &o, &err) == 0);
    struct adamw *opt = trainer_optimizer(t2);
    memcpy(opt->m, saved->m, sizeof(float) * saved->count);
    memcpy(opt->v, saved->v, sizeof(float) * saved->count);
    memcpy(opt->tensor_steps, saved->tensor_steps, sizeof(long) * (size_t)m->layout.count);
    opt->step = saved->step;
    CHECK_MSG(trainer_set_state(t2, &state, &err) == 0, "%s", err.message);
    CHECK(run_steps(t2, STEPS - STOP, resumed + STOP) == 0);
    for (int i = 0; i < STEPS; i++)
        CHECK_MSG(full[i] == resumed[i], "step %d: %.17g uninterrupted, %.17g resumed", i + 1,
                  full[i], resumed[i]);

    struct train_state other = state;
    other.seed = 43;
    CHECK(trainer_set_state(t2, &other, &err) == -1);
    CHECK_MSG(strstr(err.message, "seed 42") != NULL, "%s", err.message);
    trainer_free(t);
    trainer_free(t2);
    model_free(m);
    model_free(m2);
    task_free(&task);
}

static double mean(const double *x, int n)
{
    double s = 0.0;
    for (int i = 0; i < n; i++)
        s += x[i];
    return s / n;
}

static void test_loss_falls(void)
{
    enum { STEPS = 60 };
    struct task task;
    synthetic_task(&task);
    struct caem_error err;
    struct model *m = tiny_model(0.0f);
    struct trainer *t = NULL;
    struct train_options o = test_options(STEPS);
    o.validate_every = 30;
    CHECK(trainer_create(&t, m, &task, &o, &err) == 0);
    double before;
    CHECK(trainer_validate(t, &before, &err) == 0);
    double losses[STEPS];
    CHECK(run_steps(t, STEPS, losses) == 0);
    double first = mean(losses, 10), last = mean(losses + STEPS - 10, 10);
    CHECK_MSG(last < 0.5 * first, "mean loss of the first 10 steps %.4f, of the last 10 %.4f",
              first, last);
    struct train_snapshot s;
    CHECK(train_snapshot_init(&s, t, &err) == 0);
    trainer_snapshot(t, &s);
    CHECK_INT_EQ(s.status, TRAIN_FINISHED);
    CHECK_INT_EQ(s.validation_step, STEPS);
    CHECK_MSG(s.validation_loss < before, "validation loss %.4f after training, %.4f before",
              s.validation_loss, before);
    CHECK(trainer_step(t, &err) == -1);
    CHECK_MSG(strstr(err.message, "finished") != NULL, "%s", err.message);
    train_snapshot_free(&s);
    trainer_free(t);
    model_free(m);
    task_free(&task);
}

/* Usage counts every real token of every step: the running table's encoder
 * rows count the input tokens and its decoder rows the labels. */
static void test_usage_counts_real_tokens(void)
{
    struct task task;
    synthetic_task(&task);
    struct caem_error err;
    struct model *m = tiny_model(0.0f);
    struct trainer *t = NULL;
    struct train_options o = test_options(12); /* one epoch: every example once */
    CHECK(trainer_create(&t, m, &task, &o, &err) == 0);
    double losses[12];
    CHECK(run_steps(t, 12, losses) == 0);
    const struct task_tokens *tokens = &task.splits[TASK_SPLIT_TRAIN].tokens;
    long inputs = 0, labels = 0;
    for (long i = 0; i < tokens->count; i++) {
        inputs += task_tokens_input_length(tokens, i);
        labels += task_tokens_target_length(tokens, i);
    }
    const struct usage_table *u = trainer_usage(t);
    for (int row = 0; row < usage_table_rows(u); row++) {
        long expected = row < u->layers[0] ? inputs : labels;
        CHECK_INT_EQ(u->tokens[row], expected);
    }
    struct train_snapshot s;
    CHECK(train_snapshot_init(&s, t, &err) == 0);
    trainer_snapshot(t, &s);
    CHECK_INT_EQ(s.tokens, inputs + labels);
    /* the last window is steps 9-12: a third of the epoch's tokens or so */
    CHECK(s.window.tokens[0] > 0);
    CHECK(s.window.tokens[0] < inputs);
    CHECK(s.last.encoder_entropy >= 0.0);
    CHECK(s.last.encoder_entropy <= 1.0);
    train_snapshot_free(&s);
    trainer_free(t);
    model_free(m);
    task_free(&task);
}

/* With accumulation 2 a step's gradient is the mean of the gradients of the
 * epoch's first two micro-batches at the initial parameters. The optimizer
 * leaves the gradient in the model, so it can be compared after the step. */
static void test_accumulation_averages_micro_batches(void)
{
    struct task task;
    synthetic_task(&task);
    struct caem_error err;
    struct model *m = tiny_model(0.0f);
    struct trainer *t = NULL;
    struct train_options o = test_options(3);
    o.batch_size = 4;
    o.accumulation = 2;
    CHECK_MSG(trainer_create(&t, m, &task, &o, &err) == 0, "%s", err.message);
    if (t == NULL)
        return;
    double losses[1];
    CHECK(run_steps(t, 1, losses) == 0);
    struct train_state state;
    trainer_get_state(t, &state);
    CHECK_INT_EQ(state.epoch_batch, 2);
    size_t total = m->layout.total;
    float *expected = calloc(total, sizeof(float));

    struct model *ref = tiny_model(0.0f);
    ref->training = 1;
    model_set_seed(ref, o.seed);
    struct task_batches it;
    CHECK(task_batches_begin(&it, &task.splits[TASK_SPLIT_TRAIN].tokens, 4,
                             TASK_BATCHES_BUCKETED, o.seed, 0, &err) == 0);
    model_zero_grad(ref);
    double loss_sum = 0.0;
    for (int k = 0; k < 2; k++) {
        struct batch b;
        struct model_losses l;
        CHECK(task_batches_next(&it, &b) == 1);
        CHECK(model_forward(ref, &b, &l, &err) == 0);
        CHECK(model_backward(ref, &err) == 0);
        loss_sum += l.total;
    }
    task_batches_end(&it);
    for (size_t i = 0; i < total; i++)
        expected[i] = ref->grads[i] * 0.5f;
    size_t differ = 0;
    for (size_t i = 0; i < total; i++)
        differ += expected[i] != m->grads[i];
    CHECK_MSG(differ == 0, "%zu of %zu gradient values differ", differ, total);
    CHECK_NEAR(losses[0], loss_sum / 2, 1e-12);
    free(expected);
    model_free(ref);
    trainer_free(t);
    model_free(m);
    task_free(&task);
}

static void test_non_finite_loss_stops(void)
{
    struct task task;
    synthetic_task(&task);
    struct caem_error err;
    struct model *m = tiny_model(0.0f);
    struct trainer *t = NULL;
    struct train_options o = test_options(10);
    CHECK(trainer_create(&t, m, &task, &o, &err) == 0);
    double losses[3];
    CHECK(run_steps(t, 3, losses) == 0);

    /* poison the decoder's final norm: every logit becomes NaN */
    size_t count;
    float *norm = model_param(m, "decoder/final_norm", &count);
    CHECK(norm != NULL);
    if (norm == NULL)
        return;
    norm[0] = NAN;
    size_t total = m->layout.total;
    float *before = malloc(sizeof(float) * total);
    memcpy(before, m->params, sizeof(float) * total);
    CHECK(trainer_step(t, &err) == -1);
    CHECK_MSG(strstr(err.message, "step 4") != NULL, "%s", err.message);
    CHECK_MSG(strstr(err.message, "not finite") != NULL, "%s", err.message);
    CHECK_MSG(strstr(err.message, "at step 3") != NULL, "%s", err.message);
    CHECK_MSG(memcmp(before, m->params, sizeof(float) * total) == 0,
              "parameters changed in the failed step");
    struct train_snapshot s;
    CHECK(train_snapshot_init(&s, t, &err) == 0);
    trainer_snapshot(t, &s);
    CHECK_INT_EQ(s.status, TRAIN_FAILED);
    CHECK_INT_EQ(s.step, 3);
    CHECK(s.last_finite_loss == losses[2]);
    CHECK(trainer_step(t, &err) == -1);
    CHECK_MSG(strstr(err.message, "failed earlier") != NULL, "%s", err.message);
    train_snapshot_free(&s);
    free(before);
    trainer_free(t);
    model_free(m);
    task_free(&task);
}

struct reader {
    struct trainer *trainer;
    volatile int stop;
    long reads, regressions;
};

static void *read_snapshots(void *arg)
{
    struct reader *r = arg;
    struct caem_error err;
    struct train_snapshot s;
    if (train_snapshot_init(&s, r->trainer, &err) != 0)
        return NULL;
    long last = 0;
    while (!r->stop) {
        trainer_snapshot(r->trainer, &s);
        if (s.step < last)
            r->regressions++;
        last = s.step;
        r->reads++;
    }
    train_snapshot_free(&s);
    return NULL;
}

static void test_snapshot_from_another_thread(void)
{
    struct task task;
    synthetic_task(&task);
    struct caem_error err;
    struct model *m = tiny_model(0.0f);
    struct trainer *t = NULL;
    struct train_options o = test_options(8);
    CHECK(trainer_create(&t, m, &task, &o, &err) == 0);
    struct reader r = { t, 0, 0, 0 };
    pthread_t thread;
    CHECK(pthread_create(&thread, NULL, read_snapshots, &r) == 0);
    double losses[8];
    CHECK(run_steps(t, 8, losses) == 0);
    r.stop = 1;
    pthread_join(thread, NULL);
    CHECK(r.reads > 0);
    CHECK_INT_EQ(r.regressions, 0);
    trainer_free(t);
    model_free(m);
    task_free(&task);
}

static void test_options_rejected(void)
{
    struct task task;
    synthetic_task(&task);
    struct caem_error err;
    struct model *m = tiny_model(0.0f);
    struct trainer *t = NULL;
    struct train_options o = test_options(8);
    o.batch_size = 0;
    CHECK(trainer_create(&t, m, &task, &o, &err) == -1);
    CHECK_MSG(strstr(err.message, "batch size 0") != NULL, "%s", err.message);
    o = test_options(8);
    o.window = 0;
    CHECK(trainer_create(&t, m, &task, &o, &err) == -1);
    CHECK_MSG(strstr(err.message, "window") != NULL, "%s", err.message);
    task_tokens_free(&task.splits[TASK_SPLIT_TRAIN].tokens);
    task.splits[TASK_SPLIT_TRAIN].tokenized = 0;
    o = test_options(8);
    CHECK(trainer_create(&t, m, &task, &o, &err) == -1);
    CHECK_MSG(strstr(err.message, "no tokenized train") != NULL, "%s", err.message);
    model_free(m);
    task_free(&task);
}

/* ---- several tasks ---- */

/* A step's gradient is the mean of one micro-batch of each task: the first
 * task's batches in the single-task order, the second's with seed + 1. */
static void test_multi_task_averages_tasks(void)
{
    struct task a, b;
    sized_task(&a, "large", 96, 5);
    sized_task(&b, "small", 24, 9);
    const struct task *tasks[2] = { &a, &b };
    struct caem_error err;
    struct model *m = tiny_model(0.0f);
    struct trainer *t = NULL;
    struct train_options o = test_options(3);
    CHECK_MSG(trainer_create_multi(&t, m, tasks, 2, &o, &err) == 0, "%s", err.message);
    if (t == NULL)
        return;
    CHECK_INT_EQ(trainer_task_count(t), 2);
    double losses[1];
    CHECK(run_steps(t, 1, losses) == 0);

    struct model *ref = tiny_model(0.0f);
    ref->training = 1;
    model_set_seed(ref, o.seed);
    model_zero_grad(ref);
    double loss_sum = 0.0;
    for (int k = 0; k < 2; k++) {
        struct task_batches it;
        CHECK(task_batches_begin(&it, &tasks[k]->splits[TASK_SPLIT_TRAIN].tokens, 8,
                                 TASK_BATCHES_BUCKETED, o.seed + (uint64_t)k, 0, &err) == 0);
        struct batch batch;
        struct model_losses l;
        CHECK(task_batches_next(&it, &batch) == 1);
        CHECK(model_forward(ref, &batch, &l, &err) == 0);
        CHECK(model_backward(ref, &err) == 0);
        loss_sum += l.total;
        task_batches_end(&it);
    }
    size_t differ = 0;
    for (size_t i = 0; i < m->layout.total; i++)
        differ += ref->grads[i] * 0.5f != m->grads[i];
    CHECK_MSG(differ == 0, "%zu of %zu gradient values differ", differ, m->layout.total);
    CHECK_NEAR(losses[0], loss_sum / 2, 1e-12);

    /* the usage of each task adds up to the run's */
    const struct usage_table *ua = trainer_task_usage(t, 0), *ub = trainer_task_usage(t, 1);
    const struct usage_table *all = trainer_usage(t);
    CHECK(trainer_task_usage(t, 2) == NULL);
    for (int row = 0; row < usage_table_rows(all); row++)
        CHECK_INT_EQ(all->tokens[row], ua->tokens[row] + ub->tokens[row]);
    CHECK(ub->tokens[0] > 0);
    model_free(ref);
    trainer_free(t);
    model_free(m);
    task_free(&a);
    task_free(&b);
}

/* The small task (3 batches) wraps to its next epoch while the large one
 * (12 batches) goes on. A run stopped after 5 steps and resumed has the
 * losses of an uninterrupted run. */
static void test_multi_task_rotates_and_resumes(void)
{
    enum { STEPS = 8, STOP = 5 };
    struct task a, b;
    sized_task(&a, "large", 96, 5);
    sized_task(&b, "small", 24, 9);
    const struct task *tasks[2] = { &a, &b };
    struct caem_error err;
    struct train_options o = test_options(STEPS);
    double full[STEPS], resumed[STEPS];

    struct model *m = tiny_model(0.1f);
    struct trainer *t = NULL;
    CHECK(trainer_create_multi(&t, m, tasks, 2, &o, &err) == 0);
    CHECK(run_steps(t, STEPS, full) == 0);
    struct train_state state;
    trainer_get_state(t, &state);
    CHECK_INT_EQ(state.tasks, 2);
    CHECK_INT_EQ(state.epochs[0], 0);
    CHECK_INT_EQ(state.epoch_batches[0], 8);
    CHECK_INT_EQ(state.epochs[1], 2);
    CHECK_INT_EQ(state.epoch_batches[1], 2);
    trainer_free(t);
    model_free(m);

    m = tiny_model(0.1f);
    CHECK(trainer_create_multi(&t, m, tasks, 2, &o, &err) == 0);
    CHECK(run_steps(t, STOP, resumed) == 0);
    trainer_get_state(t, &state);
    struct model *m2 = tiny_model(0.1f);
    memcpy(m2->params, m->params, sizeof(float) * m->layout.total);
    struct trainer *t2 = NULL;
    CHECK(trainer_create_multi(&t2, m2, tasks, 2, &o, &err) == 0);
    struct adamw *saved = trainer_optimizer(t), *opt = trainer_optimizer(t2);
    memcpy(opt->m, saved->m, sizeof(float) * saved->count);
    memcpy(opt->v, saved->v, sizeof(float) * saved->count);
    memcpy(opt->tensor_steps, saved->tensor_steps, sizeof(long) * (size_t)m->layout.count);
    opt->step = saved->step;
    CHECK_MSG(trainer_set_state(t2, &state, &err) == 0, "%s", err.message);
    CHECK(run_steps(t2, STEPS - STOP, resumed + STOP) == 0);
    for (int i = 0; i < STEPS; i++)
        CHECK_MSG(full[i] == resumed[i], "step %d: %.17g uninterrupted, %.17g resumed", i + 1,
                  full[i], resumed[i]);

    struct train_state single = state;
    single.tasks = 0;
    CHECK(trainer_set_state(t2, &single, &err) == -1);
    CHECK_MSG(strstr(err.message, "trained 1 tasks, but this run has 2") != NULL, "%s",
              err.message);
    double validation;
    CHECK(trainer_validate(t2, &validation, &err) == 0);
    CHECK(isfinite(validation));
    trainer_free(t);
    trainer_free(t2);
    model_free(m);
    model_free(m2);
    task_free(&a);
    task_free(&b);
}

int main(void)
{
    TEST_SUITE("train");
    RUN_TEST(same_seed_same_losses);
    RUN_TEST(resume_matches_uninterrupted);
    RUN_TEST(loss_falls);
    RUN_TEST(usage_counts_real_tokens);
    RUN_TEST(accumulation_averages_micro_batches);
    RUN_TEST(non_finite_loss_stops);
    RUN_TEST(snapshot_from_another_thread);
    RUN_TEST(options_rejected);
    RUN_TEST(multi_task_averages_tasks);
    RUN_TEST(multi_task_rotates_and_resumes);
    TEST_MAIN_END();
}
