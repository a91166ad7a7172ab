/* caem train and caem eval end to end, through the built program. A run on a
 * small text task writes results and a checkpoint. A run stopped and resumed
 * from its checkpoint ends with the parameters and losses of an uninterrupted
 * one. Bad input fails with a message and leaves the user's files alone.
 *
 * The task is written here: four topics, each with its own words, and the
 * topic's name as the target. Its SentencePiece model comes from spm_train. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "checkpoint.h"
#include "test.h"
#include "topics_task.h"

static char dir[64];
static char caem[512];
static int ready;

static int run(const char *command)
{
    int rc = system(command);
    return rc == -1 || !WIFEXITED(rc) ? -1 : WEXITSTATUS(rc);
}

static void test_task_prepared(void)
{
    const char *root = getenv("CAEM_ROOT");
    snprintf(caem, sizeof caem, "%s/caem", root != NULL ? root : ".");
    if (access(caem, X_OK) != 0)
        SKIP("the caem program is not built (run make)");
    if (run("command -v spm_train >/dev/null 2>&1") != 0)
        SKIP("spm_train is not on the PATH (Debian package sentencepiece)");
    strcpy(dir, "/tmp/caem_cli_XXXXXX");
    CHECK(mkdtemp(dir) != NULL);
    char reason[256];
    CHECK_MSG(topics_task_create(dir, reason, sizeof reason) == 0, "%s", reason);
    char path[256];
    snprintf(path, sizeof path, "%s/spm.model", dir);
    ready = access(path, R_OK) == 0;
    CHECK(ready);
}

/* Runs caem train with the options every run here shares, then `extra`. */
static int train(const char *extra, const char *log)
{
    char command[4096];
    snprintf(command, sizeof command,
             "%s --seed 3 --threads 1 train --data %s --task topics --preset tiny --batch 8 "
             "--lr 1e-3 --validate-every 4 --eval-limit 8 --beams 1 --max-length 6 "
             "--results %s/results %s > %s/%s 2>&1", caem, dir, dir, extra, dir, log);
    return run(command);
}

static int file_contains(const char *name, const char *text)
{
    char path[256];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    FILE *f = fopen(path, "r");
    if (f == NULL)
        return 0;
    static char buffer[1 << 16];
    size_t n = fread(buffer, 1, sizeof buffer - 1, f);
    buffer[n] = '\0';
    fclose(f);
    return strstr(buffer, text) != NULL;
}

static void test_train_writes_outputs(void)
{
    if (!ready)
        SKIP("no task (see task_prepared)");
    char extra[1024];
    snprintf(extra, sizeof extra, "--steps 8 --checkpoint %s/full.h5", dir);
    CHECK_INT_EQ(train(extra, "full.log"), 0);
    CHECK_MSG(file_contains("full.log", "before: 8 validation examples"), "see %s/full.log",
              dir);
    CHECK_MSG(file_contains("full.log", "after: 8 validation examples"), "see %s/full.log",
              dir);
    CHECK(file_contains("full.log", "mean normalized entropy"));
    CHECK(file_contains("results.csv", "model,task,split,metric,value,step,time"));
    CHECK(file_contains("results.csv", ",topics,validation,accuracy,"));
    CHECK(file_contains("results.jsonl", "\"metric\": \"loss\"") ||
          file_contains("results.jsonl", "\"metric\":\"loss\""));
}

static void compare_checkpoints(const char *a_name, const char *b_name)
{
    char a_path[256], b_path[256];
    snprintf(a_path, sizeof a_path, "%s/%s", dir, a_name);
    snprintf(b_path, sizeof b_path, "%s/%s", dir, b_name);
    struct caem_error err;
    struct checkpoint a, b;
    memset(&a, 0, sizeof a);
    memset(&b, 0, sizeof b);
    CHECK_MSG(checkpoint_load(a_path, backend_cpu(), &a, &err) == 0, "%s", err.message);
    CHECK_MSG(checkpoint_load(b_path, backend_cpu(), &b, &err) == 0, "%s", err.message);
    if (a.model != NULL && b.model != NULL) {
        size_t total = a.model->layout.total, differ = 0;
        for (size_t i = 0; i < total; i++)
            differ += a.model->params[i] != b.model->params[i];
        CHECK_MSG(differ == 0, "%zu of %zu parameters differ", differ, total);
        CHECK_INT_EQ(a.train.step, b.train.step);
        CHECK_INT_EQ(a.history.rows, b.history.rows);
        int loss = -1;
        for (int c = 0; c < a.history.columns; c++)
            if (strcmp(a.history.names[c], "loss") == 0)
                loss = c;
        CHECK(loss >= 0);
        for (long r = 0; loss >= 0 && r < a.history.rows && r < b.history.rows; r++) {
            double x = a.history.values[(size_t)loss * a.history.rows + r];
            double y = b.history.values[(size_t)loss * b.history.rows + r];
            CHECK_MSG(x == y, "step %ld: loss %.17g uninterrupted, %.17g resumed", r + 1, x,
                      y);
        }
        const struct usage_table *ua = NULL, *ub = NULL;
        for (int i = 0; i < a.usage_count; i++)
            if (strcmp(a.usage[i].split, "train") == 0)
                ua = &a.usage[i].table;
        for (int i = 0; i < b.usage_count; i++)
            if (strcmp(b.usage[i].split, "train") == 0)
                ub = &b.usage[i].table;
        CHECK(ua != NULL);
        CHECK(ub != NULL);
        if (ua != NULL && ub != NULL && ua->experts == ub->experts) {
            size_t cells = (size_t)usage_table_rows(ua) * (size_t)ua->experts;
            CHECK_MSG(memcmp(ua->kept, ub->kept, sizeof *ua->kept * cells) == 0,
                      "the train usage of the resumed run differs from the full run's");
        }
    }
    checkpoint_free(&a);
    checkpoint_free(&b);
}

static void test_resume_matches_full_run(void)
{
    if (!ready)
        SKIP("no task (see task_prepared)");
    char extra[1024];
    snprintf(extra, sizeof extra, "--steps 3 --eval-limit 0 --checkpoint %s/half.h5", dir);
    CHECK_INT_EQ(train(extra, "half.log"), 0);
    snprintf(extra, sizeof extra,
             "--steps 8 --eval-limit 0 --resume %s/half.h5 --checkpoint %s/resumed.h5", dir,
             dir);
    CHECK_INT_EQ(train(extra, "resumed.log"), 0);
    CHECK_MSG(file_contains("resumed.log", "resumed"), "see %s/resumed.log", dir);
    compare_checkpoints("full.h5", "resumed.h5");
}

/* A resumed run takes its settings from the checkpoint and rejects a
 * different value, and a step count it has reached already. */
static void test_resume_rejects_changes(void)
{
    if (!ready)
        SKIP("no task (see task_prepared)");
    char extra[1024];
    snprintf(extra, sizeof extra, "--steps 8 --eval-limit 0 --resume %s/half.h5 --lr 2e-3",
             dir);
    CHECK_INT_EQ(train(extra, "change.log"), 1);
    CHECK_MSG(file_contains("change.log", "was trained with --lr 0.001, not 0.002"),
              "see %s/change.log", dir);
    snprintf(extra, sizeof extra, "--steps 3 --eval-limit 0 --resume %s/half.h5", dir);
    CHECK_INT_EQ(train(extra, "change.log"), 1);
    CHECK_MSG(file_contains("change.log", "is at step 3 already"), "see %s/change.log", dir);
    snprintf(extra, sizeof extra, "--steps 8 --eval-limit 0 --resume %s/half.h5 "
             "--max-input 9", dir);
    CHECK_INT_EQ(train(extra, "change.log"), 1);
    CHECK_MSG(file_contains("change.log", "--max-input 256, not 9"), "see %s/change.log",
              dir);
}

/* Output paths are checked before any training: a missing directory, and a
 * file that is not a checkpoint, which stays as it was. */
static void test_resume_rejects_other_preset(void)
{
    if (!ready)
        SKIP("no task (see task_prepared)");
    char extra[1024];
    snprintf(extra, sizeof extra, "--steps 8 --eval-limit 0 --resume %s/half.h5 --preset small",
             dir);
    CHECK_INT_EQ(train(extra, "change.log"), 1);
    CHECK_MSG(file_contains("change.log", "is not a model of preset small"),
              "see %s/change.log", dir);
}

static void test_output_paths_checked_first(void)
{
    if (!ready)
        SKIP("no task (see task_prepared)");
    char extra[1024];
    snprintf(extra, sizeof extra, "--steps 8 --checkpoint %s/missing/c.h5", dir);
    CHECK_INT_EQ(train(extra, "paths.log"), 1);
    CHECK_MSG(file_contains("paths.log", "missing of checkpoint"), "see %s/paths.log", dir);
    CHECK(!file_contains("paths.log", "before:"));
    char text[256];
    snprintf(text, sizeof text, "%s/notes.h5", dir);
    FILE *f = fopen(text, "w");
    if (f != NULL) {
        fputs("my notes\n", f);
        fclose(f);
    }
    snprintf(extra, sizeof extra, "--steps 8 --checkpoint %s", text);
    CHECK_INT_EQ(train(extra, "paths.log"), 1);
    CHECK_MSG(file_contains("paths.log", "is not a readable checkpoint"), "see %s/paths.log",
              dir);
    CHECK(file_contains("notes.h5", "my notes"));
}

/* SIGINT between steps saves the checkpoint of the last step, reports it and
 * exits with 130; the run then resumes from it. */
static void test_interrupt_saves_checkpoint(void)
{
    if (!ready)
        SKIP("no task (see task_prepared)");
    char command[4096];
    snprintf(command, sizeof command,
             "timeout --preserve-status -s INT 2 %s --threads 1 train --data %s --task topics --preset tiny "
             "--batch 8 --eval-limit 0 --steps 10000000 --checkpoint %s/stopped.h5 --results '' "
             "> %s/stopped.log 2>&1", caem, dir, dir, dir);
    CHECK_INT_EQ(run(command), 130);
    CHECK_MSG(file_contains("stopped.log", "interrupted after step"), "see %s/stopped.log",
              dir);
    CHECK(file_contains("stopped.log", "continue with --resume"));
    char path[256];
    snprintf(path, sizeof path, "%s/stopped.h5", dir);
    struct caem_error err;
    struct checkpoint ck;
    memset(&ck, 0, sizeof ck);
    CHECK_MSG(checkpoint_load(path, backend_cpu(), &ck, &err) == 0, "%s", err.message);
    CHECK(ck.train.step > 0);
    char expected[64];
    snprintf(expected, sizeof expected, "interrupted after step %ld;", ck.train.step);
    CHECK_MSG(file_contains("stopped.log", expected), "expected '%s' in %s/stopped.log",
              expected, dir);
    checkpoint_free(&ck);
}

static void test_eval_records_usage(void)
{
    if (!ready)
        SKIP("no task (see task_prepared)");
    char command[4096];
    snprintf(command, sizeof command,
             "%s --threads 1 eval %s/full.h5 --data %s --task topics --limit 8 --beams 2 "
             "--max-length 6 --usage-from generated --record --results %s/results "
             "> %s/eval.log 2>&1", caem, dir, dir, dir, dir);
    CHECK_INT_EQ(run(command), 0);
    CHECK_MSG(file_contains("eval.log", "decoder generating"), "see %s/eval.log", dir);
    char path[256];
    snprintf(path, sizeof path, "%s/full.h5", dir);
    struct caem_error err;
    struct checkpoint ck;
    memset(&ck, 0, sizeof ck);
    CHECK_MSG(checkpoint_load(path, backend_cpu(), &ck, &err) == 0, "%s", err.message);
    int found = 0;
    for (int i = 0; i < ck.usage_count; i++)
        if (strcmp(ck.usage[i].task, "topics") == 0 &&
            strcmp(ck.usage[i].split, "validation") == 0) {
            found = 1;
            CHECK_INT_EQ(ck.usage[i].table.decoder_source, USAGE_DECODER_GENERATED);
            CHECK(ck.usage[i].table.tokens[0] > 0);
        }
    CHECK(found);
    checkpoint_free(&ck);
}

static long file_size(const char *path)
{
    struct stat st;
    return stat(path, &st) == 0 ? (long)st.st_size : -1;
}

/* A run from parameters with a NaN fails at its first step and leaves the
 * checkpoint it would have written as it was. */
static void test_nan_keeps_checkpoint(void)
{
    if (!ready)
        SKIP("no task (see task_prepared)");
    char path[256], bad[256];
    snprintf(path, sizeof path, "%s/full.h5", dir);
    snprintf(bad, sizeof bad, "%s/nan.h5", dir);
    struct caem_error err;
    struct checkpoint ck;
    memset(&ck, 0, sizeof ck);
    CHECK(checkpoint_load(path, backend_cpu(), &ck, &err) == 0);
    if (ck.model == NULL)
        return;
    float *norm = model_param(ck.model, "decoder/final_norm", NULL);
    norm[0] = 0.0f / 0.0f;
    CHECK_MSG(checkpoint_save(bad, &ck, &err) == 0, "%s", err.message);
    checkpoint_free(&ck);

    char before[64];
    snprintf(before, sizeof before, "%ld", file_size(path));
    char extra[1024];
    snprintf(extra, sizeof extra, "--steps 4 --eval-limit 0 --init %s --checkpoint %s", bad,
             path);
    CHECK_INT_EQ(train(extra, "nan.log"), 1);
    CHECK_MSG(file_contains("nan.log", "step 1: loss is not finite"), "see %s/nan.log", dir);
    CHECK(file_contains("nan.log", "no step had a finite loss"));
    char after[64];
    snprintf(after, sizeof after, "%ld", file_size(path));
    CHECK_MSG(strcmp(before, after) == 0, "checkpoint size %s before, %s after", before,
              after);
    compare_checkpoints("full.h5", "resumed.h5");
}

static void test_bad_input_rejected(void)
{
    if (!ready)
        SKIP("no task (see task_prepared)");
    char command[4096];
    snprintf(command, sizeof command, "%s train --data %s/none --task topics > %s/bad.log 2>&1",
             caem, dir, dir);
    CHECK_INT_EQ(run(command), 1);
    CHECK_MSG(file_contains("bad.log", "/none/spm.model"), "see %s/bad.log", dir);
    snprintf(command, sizeof command, "%s train --data %s --task nothing > %s/bad.log 2>&1",
             caem, dir, dir);
    CHECK_INT_EQ(run(command), 1);
    CHECK_MSG(file_contains("bad.log", "no split of task 'nothing'"), "see %s/bad.log", dir);
    snprintf(command, sizeof command, "%s train --stepz 3 > %s/bad.log 2>&1", caem, dir);
    CHECK_INT_EQ(run(command), 2);
    CHECK(file_contains("bad.log", "unknown option '--stepz'"));
    snprintf(command, sizeof command, "%s eval %s/topics/train.jsonl --data %s --task topics "
             "> %s/bad.log 2>&1", caem, dir, dir, dir);
    CHECK_INT_EQ(run(command), 1);
    CHECK_MSG(file_contains("bad.log", "train.jsonl"), "see %s/bad.log", dir);
}

static void test_cleanup(void)
{
    if (dir[0] == '\0')
        SKIP("nothing to remove");
    char command[256];
    snprintf(command, sizeof command, "rm -rf '%s'", dir);
    CHECK_INT_EQ(run(command), 0);
}

int main(void)
{
    TEST_SUITE("cli_train");
    RUN_TEST(task_prepared);
    RUN_TEST(train_writes_outputs);
    RUN_TEST(resume_matches_full_run);
    RUN_TEST(resume_rejects_changes);
    RUN_TEST(resume_rejects_other_preset);
    RUN_TEST(output_paths_checked_first);
    RUN_TEST(interrupt_saves_checkpoint);
    RUN_TEST(eval_records_usage);
    RUN_TEST(nan_keeps_checkpoint);
    RUN_TEST(bad_input_rejected);
    RUN_TEST(cleanup);
    TEST_MAIN_END();
}
