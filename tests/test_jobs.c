/* Train, evaluation and usage jobs. A train job takes exactly the trainer's
 * steps and ends at its step count. Its stored state resumes exactly, its
 * checkpoints land on the right steps, and wrong options fail the start. A
 * usage job counts what evaluate_loss counts, records it and writes results.
 * The task is synthetic and in memory, as in test_train.c: each input draws
 * most of its tokens from one of four topics' share of the vocabulary, and
 * the target is the topic's token. */
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "checkpoint.h"
#include "checkpoint_edit.h"
#include "jobs.h"
#include "results.h"
#include "rng.h"
#include "test.h"

enum { TOPICS = 4, TRAIN_EXAMPLES = 64, VALIDATION_EXAMPLES = 20, FIRST_TOKEN = 10 };

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

static void synthetic_task(struct task *t, int with_validation)
{
    struct caem_error err;
    task_init(t, "topics", TASK_METRIC_ACCURACY, NULL, 16, 4, &err);
    struct task_split *train = &t->splits[TASK_SPLIT_TRAIN];
    task_tokens_init(&train->tokens, 16, 4, 1, 0, 0, &err);
    add_examples(&train->tokens, TRAIN_EXAMPLES, 5);
    train->tokenized = 1;
    if (with_validation) {
        struct task_split *validation = &t->splits[TASK_SPLIT_VALIDATION];
        task_tokens_init(&validation->tokens, 16, 4, 1, 0, 0, &err);
        add_examples(&validation->tokens, VALIDATION_EXAMPLES, 6);
        validation->tokenized = 1;
    }
}

/* A state holding a new tiny model, as a program keeps one between runs. */
static void tiny_state(struct checkpoint *state)
{
    struct caem_error err;
    struct model_config cfg;
    memset(state, 0, sizeof *state);
    config_preset(&cfg, "tiny", &err);
    cfg.expert_capacity = 4;
    if (model_create(&state->model, &cfg, backend_cpu(), &err) == 0)
        model_init_params(state->model, 7);
}

static struct train_job_options job_options(long steps)
{
    struct train_job_options o;
    memset(&o, 0, sizeof o);
    o.train = train_defaults();
    o.train.batch_size = 8;
    o.train.steps = steps;
    o.train.validate_every = 0;
    o.train.window = 4;
    o.train.seed = 42;
    o.train.adamw.lr = 3e-3f;
    return o;
}

static int same_params(const struct model *a, const struct model *b)
{
    return a->layout.total == b->layout.total &&
           memcmp(a->params, b->params, sizeof(float) * a->layout.total) == 0;
}

static void test_train_ends_at_step_count(void)
{
    struct task task;
    struct checkpoint state;
    synthetic_task(&task, 1);
    tiny_state(&state);
    struct train_job_options o = job_options(6);
    o.train.validate_every = 3;
    struct job *job;
    struct train_job *tj;
    struct caem_error err;
    CHECK_MSG(train_job_start(&job, &tj, &state, &task, &o, 0, &err) == 0, "%s", err.message);
    CHECK_INT_EQ(job_wait(job, 60.0), 1);
    struct job_status s;
    job_status(job, &s);
    CHECK_INT_EQ(s.state, JOB_FINISHED);
    CHECK(strcmp(s.kind, "train") == 0);
    CHECK_INT_EQ(s.report.step, 6);
    CHECK_INT_EQ(s.report.steps, 6);
    CHECK(isfinite(s.report.loss));
    CHECK(isfinite(s.report.validation_loss));
    CHECK_MSG(train_job_store(tj, &err) == 0, "%s", err.message);
    CHECK_INT_EQ(state.train.step, 6);
    CHECK_INT_EQ(state.history.rows, 6);
    CHECK_INT_EQ(state.history.columns, TRAIN_HISTORY_COLUMNS);
    CHECK(state.optimizer != NULL);
    if (state.optimizer != NULL)
        CHECK_INT_EQ(state.optimizer->step, 6);
    CHECK(checkpoint_attribute(&state, "base") != NULL);
    CHECK(strcmp(checkpoint_attribute(&state, "task"), "topics") == 0);
    CHECK_INT_EQ(state.usage_count, 2);
    job_free(job);
    checkpoint_free(&state);
    task_free(&task);
}

/* The job's units are trainer steps and nothing else: the parameters equal
 * those of the same steps run directly. */
static void test_train_matches_trainer(void)
{
    struct task task;
    struct checkpoint a, b;
    synthetic_task(&task, 0);
    tiny_state(&a);
    tiny_state(&b);
    struct train_job_options o = job_options(5);
    struct job *job;
    struct train_job *tj;
    struct caem_error err;
    CHECK_MSG(train_job_start(&job, &tj, &a, &task, &o, 0, &err) == 0, "%s", err.message);
    CHECK_INT_EQ(job_wait(job, 60.0), 1);
    job_free(job);
    struct trainer *t;
    CHECK(trainer_create(&t, b.model, &task, &o.train, &err) == 0);
    for (int i = 0; i < 5; i++)
        CHECK_MSG(trainer_step(t, &err) == 0, "%s", err.message);
    trainer_free(t);
    CHECK(same_params(a.model, b.model));
    checkpoint_free(&a);
    checkpoint_free(&b);
    task_free(&task);
}

/* Three steps, a stop, then a resumed job on the stored state ends where an
 * uninterrupted run of six steps ends. */
static void test_step_stop_resume_exact(void)
{
    struct task task;
    struct checkpoint full, part;
    synthetic_task(&task, 0);
    tiny_state(&full);
    tiny_state(&part);
    struct train_job_options o = job_options(6);
    struct job *job;
    struct train_job *tj;
    struct caem_error err;
    CHECK(train_job_start(&job, &tj, &full, &task, &o, 0, &err) == 0);
    CHECK_INT_EQ(job_wait(job, 60.0), 1);
    CHECK(train_job_store(tj, &err) == 0);
    job_free(job);

    CHECK(train_job_start(&job, &tj, &part, &task, &o, 1, &err) == 0);
    job_step(job, 3);
    CHECK_INT_EQ(job_wait(job, 60.0), 2);
    struct job_status s;
    job_status(job, &s);
    CHECK_INT_EQ(s.report.step, 3);
    job_stop(job);
    CHECK_INT_EQ(job_wait(job, 60.0), 1);
    job_status(job, &s);
    CHECK_INT_EQ(s.state, JOB_STOPPED);
    CHECK(train_job_store(tj, &err) == 0);
    job_free(job);
    CHECK_INT_EQ(part.train.step, 3);
    CHECK_INT_EQ(part.history.rows, 3);

    o.resume = 1;
    CHECK_MSG(train_job_start(&job, &tj, &part, &task, &o, 0, &err) == 0, "%s", err.message);
    CHECK_INT_EQ(job_wait(job, 60.0), 1);
    CHECK(train_job_store(tj, &err) == 0);
    job_free(job);
    CHECK(same_params(full.model, part.model));
    CHECK_INT_EQ(part.history.rows, 6);
    for (long r = 0; r < 6 && part.history.rows == 6; r++) {
        double x = full.history.values[6 + r], y = part.history.values[6 + r]; /* loss */
        CHECK_MSG(x == y, "step %ld: loss %.17g uninterrupted, %.17g resumed", r + 1, x, y);
    }
    checkpoint_free(&full);
    checkpoint_free(&part);
    task_free(&task);
}

static void test_checkpoints_on_schedule(void)
{
    char dir[] = "/tmp/caem_jobs_XXXXXX";
    CHECK(mkdtemp(dir) != NULL);
    char path[128];
    snprintf(path, sizeof path, "%s/run.h5", dir);
    struct task task;
    struct checkpoint state, loaded;
    synthetic_task(&task, 0);
    tiny_state(&state);
    struct train_job_options o = job_options(5);
    o.checkpoint = path;
    o.checkpoint_every = 2;
    o.tokenizer_path = "spm.model";
    struct job *job;
    struct train_job *tj;
    struct caem_error err;
    CHECK(train_job_start(&job, &tj, &state, &task, &o, 1, &err) == 0);
    job_step(job, 3);
    CHECK_INT_EQ(job_wait(job, 60.0), 2);
    CHECK_MSG(checkpoint_load_summary(path, &loaded, &err) == 0, "%s", err.message);
    CHECK_INT_EQ(loaded.train.step, 2);
    checkpoint_free(&loaded);
    job_resume(job);
    CHECK_INT_EQ(job_wait(job, 60.0), 1);
    job_free(job);
    CHECK_MSG(checkpoint_load(path, backend_cpu(), &loaded, &err) == 0, "%s", err.message);
    CHECK_INT_EQ(loaded.train.step, 5);
    CHECK_INT_EQ(loaded.history.rows, 5);
    CHECK(loaded.optimizer != NULL);
    CHECK(checkpoint_attribute(&loaded, "tokenizer") != NULL &&
          strcmp(checkpoint_attribute(&loaded, "tokenizer"), "spm.model") == 0);
    if (loaded.model != NULL)
        CHECK(same_params(loaded.model, state.model));
    checkpoint_free(&loaded);
    checkpoint_free(&state);
    task_free(&task);
    unlink(path);
    rmdir(dir);
}

static void test_train_options_rejected(void)
{
    struct task task;
    struct checkpoint state;
    synthetic_task(&task, 0);
    tiny_state(&state);
    struct job *job;
    struct train_job *tj;
    struct caem_error err;

    struct train_job_options o = job_options(4);
    o.train.validate_every = 2;
    CHECK(train_job_start(&job, &tj, &state, &task, &o, 0, &err) == -1);
    CHECK_MSG(strstr(err.message, "no validation examples") != NULL, "%s", err.message);
    CHECK(job == NULL);

    o = job_options(4);
    o.resume = 1;
    CHECK(train_job_start(&job, &tj, &state, &task, &o, 0, &err) == -1);
    CHECK_MSG(strstr(err.message, "nothing to resume") != NULL ||
              strstr(err.message, "no optimizer state") != NULL, "%s", err.message);

    o = job_options(4);
    o.checkpoint_every = 2;
    CHECK(train_job_start(&job, &tj, &state, &task, &o, 0, &err) == -1);
    CHECK_MSG(strstr(err.message, "checkpoint path") != NULL, "%s", err.message);

    o = job_options(2);
    CHECK(train_job_start(&job, &tj, &state, &task, &o, 0, &err) == 0);
    CHECK_INT_EQ(job_wait(job, 60.0), 1);
    CHECK(train_job_store(tj, &err) == 0);
    job_free(job);
    o.resume = 1;
    CHECK(train_job_start(&job, &tj, &state, &task, &o, 0, &err) == -1);
    CHECK_MSG(strstr(err.message, "already at step 2") != NULL, "%s", err.message);
    o.train.steps = 4;
    o.train.batch_size = 4;
    CHECK(train_job_start(&job, &tj, &state, &task, &o, 0, &err) == -1);
    CHECK_MSG(strstr(err.message, "batch 8") != NULL, "%s", err.message);
    o.train.batch_size = 8;
    o.train.seed = 9;
    CHECK(train_job_start(&job, &tj, &state, &task, &o, 0, &err) == -1);
    CHECK_MSG(strstr(err.message, "seed 42") != NULL, "%s", err.message);
    checkpoint_free(&state);
    task_free(&task);
}

static struct evaluate_job_options usage_options(void)
{
    struct evaluate_job_options o;
    memset(&o, 0, sizeof o);
    o.evaluate = evaluate_defaults();
    o.evaluate.generate = 0;
    o.evaluate.batch_size = 6;
    o.evaluate.limit = 15;
    return o;
}

/* A usage pass counts what evaluate_loss counts over the same examples,
 * batch by batch: 15 examples in batches of 6 are 3 units. */
static void test_usage_job_counts(void)
{
    struct task task;
    struct checkpoint state;
    synthetic_task(&task, 1);
    tiny_state(&state);
    struct evaluate_job_options o = usage_options();
    struct job *job;
    struct evaluate_job *ej;
    struct caem_error err;
    CHECK_MSG(evaluate_job_start(&job, &ej, &state, &task, &o, 0, &err) == 0, "%s",
              err.message);
    CHECK_INT_EQ(job_wait(job, 60.0), 1);
    struct job_status s;
    job_status(job, &s);
    CHECK_INT_EQ(s.state, JOB_FINISHED);
    CHECK(strcmp(s.kind, "usage") == 0);
    CHECK_INT_EQ(s.report.step, 3);
    CHECK_INT_EQ(s.report.steps, 3);
    const struct evaluation *e = evaluate_job_result(ej);
    CHECK(e != NULL);

    struct usage_table expected;
    double loss;
    usage_table_init(&expected, &state.model->config, &err);
    CHECK(evaluate_loss(state.model, &task.splits[TASK_SPLIT_VALIDATION].tokens, 15, 6,
                        &expected, &loss, &err) == 0);
    if (e != NULL) {
        CHECK_INT_EQ(e->examples, 15);
        CHECK(e->predictions == NULL);
        CHECK_INT_EQ(e->figure_count, 0);
        CHECK_NEAR(e->loss, loss, 1e-12);
        int rows = usage_table_rows(&expected);
        CHECK_INT_EQ(usage_table_rows(&e->usage), rows);
        for (int r = 0; r < rows; r++) {
            CHECK_INT_EQ(e->usage.tokens[r], expected.tokens[r]);
            for (int x = 0; x < expected.experts; x++)
                CHECK_INT_EQ(e->usage.kept[r * expected.experts + x],
                             expected.kept[r * expected.experts + x]);
        }
        CHECK(e->usage.tokens[0] > 0);
    }
    usage_table_free(&expected);
    job_free(job);
    checkpoint_free(&state);
    task_free(&task);
}

static void test_usage_job_records_and_writes(void)
{
    char dir[] = "/tmp/caem_jobs_XXXXXX";
    CHECK(mkdtemp(dir) != NULL);
    char prefix[128], path[160];
    snprintf(prefix, sizeof prefix, "%s/results", dir);
    struct task task;
    struct checkpoint state;
    synthetic_task(&task, 1);
    tiny_state(&state);
    struct evaluate_job_options o = usage_options();
    o.record = 1;
    o.results = prefix;
    o.model_name = "tiny-7";
    o.step = 12;
    struct job *job;
    struct evaluate_job *ej;
    struct caem_error err;
    CHECK(evaluate_job_start(&job, &ej, &state, &task, &o, 0, &err) == 0);
    CHECK_INT_EQ(job_wait(job, 60.0), 1);
    const struct evaluation *e = evaluate_job_result(ej);
    CHECK_INT_EQ(state.usage_count, 1);
    if (state.usage_count == 1 && e != NULL) {
        CHECK(strcmp(state.usage[0].task, "topics") == 0);
        CHECK(strcmp(state.usage[0].split, "validation") == 0);
        CHECK_INT_EQ(state.usage[0].table.tokens[0], e->usage.tokens[0]);
    }
    struct result_row *rows;
    long count;
    CHECK_MSG(results_read(prefix, &rows, &count, &err) == 0, "%s", err.message);
    CHECK_INT_EQ(count, 1);
    if (count == 1 && e != NULL) {
        CHECK(strcmp(rows[0].model, "tiny-7") == 0);
        CHECK(strcmp(rows[0].metric, "loss") == 0);
        CHECK_INT_EQ(rows[0].step, 12);
        CHECK_NEAR(rows[0].value, e->loss, 1e-12);
    }
    results_free(rows, count);
    job_free(job);
    checkpoint_free(&state);
    task_free(&task);
    snprintf(path, sizeof path, "%s.csv", prefix);
    unlink(path);
    snprintf(path, sizeof path, "%s.jsonl", prefix);
    unlink(path);
    rmdir(dir);
}

/* A stopped usage pass has no result; a pass over a missing split fails to
 * start. */
static void test_usage_job_stop_and_errors(void)
{
    struct task task;
    struct checkpoint state;
    synthetic_task(&task, 1);
    tiny_state(&state);
    struct evaluate_job_options o = usage_options();
    o.evaluate.batch_size = 1;
    struct job *job;
    struct evaluate_job *ej;
    struct caem_error err;
    CHECK(evaluate_job_start(&job, &ej, &state, &task, &o, 1, &err) == 0);
    job_step(job, 2);
    CHECK_INT_EQ(job_wait(job, 60.0), 2);
    struct job_status s;
    job_status(job, &s);
    CHECK_INT_EQ(s.report.step, 2);
    CHECK_INT_EQ(s.report.steps, 15);
    job_stop(job);
    CHECK_INT_EQ(job_wait(job, 60.0), 1);
    CHECK(evaluate_job_result(ej) == NULL);
    job_free(job);

    o.evaluate.split = TASK_SPLIT_TEST;
    CHECK(evaluate_job_start(&job, &ej, &state, &task, &o, 0, &err) == -1);
    CHECK_MSG(strstr(err.message, "no tokenized test examples") != NULL, "%s", err.message);
    o.evaluate.split = TASK_SPLIT_VALIDATION;
    o.evaluate.generate = 1;
    CHECK(evaluate_job_start(&job, &ej, &state, &task, &o, 0, &err) == -1);
    CHECK_MSG(strstr(err.message, "no tokenizer") != NULL, "%s", err.message);
    checkpoint_free(&state);
    task_free(&task);
}

/* Setting an attribute or a usage record twice replaces the first value. */
static void test_state_edits_replace(void)
{
    struct checkpoint state;
    tiny_state(&state);
    struct caem_error err;
    CHECK(checkpoint_attribute(&state, "task") == NULL);
    CHECK(checkpoint_set_attribute(&state, "task", "a", &err) == 0);
    CHECK(checkpoint_set_attribute(&state, "base", "b", &err) == 0);
    CHECK(checkpoint_set_attribute(&state, "task", "c", &err) == 0);
    CHECK_INT_EQ(state.attr_count, 2);
    CHECK(strcmp(checkpoint_attribute(&state, "task"), "c") == 0);
    CHECK(strcmp(checkpoint_attribute(&state, "base"), "b") == 0);

    struct usage_table table;
    CHECK(usage_table_init(&table, &state.model->config, &err) == 0);
    table.tokens[0] = 5;
    CHECK(checkpoint_set_usage(&state, "topics", "validation", &table, &err) == 0);
    table.tokens[0] = 9;
    CHECK(checkpoint_set_usage(&state, "topics", "train", &table, &err) == 0);
    table.tokens[0] = 7;
    CHECK(checkpoint_set_usage(&state, "topics", "validation", &table, &err) == 0);
    CHECK_INT_EQ(state.usage_count, 2);
    if (state.usage_count == 2) {
        CHECK_INT_EQ(state.usage[0].table.tokens[0], 7);
        CHECK_INT_EQ(state.usage[1].table.tokens[0], 9);
    }
    usage_table_free(&table);
    checkpoint_free(&state);
}

int main(void)
{
    TEST_SUITE("jobs");
    RUN_TEST(train_ends_at_step_count);
    RUN_TEST(train_matches_trainer);
    RUN_TEST(step_stop_resume_exact);
    RUN_TEST(checkpoints_on_schedule);
    RUN_TEST(train_options_rejected);
    RUN_TEST(usage_job_counts);
    RUN_TEST(usage_job_records_and_writes);
    RUN_TEST(usage_job_stop_and_errors);
    RUN_TEST(state_edits_replace);
    TEST_MAIN_END();
}
