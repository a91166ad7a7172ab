/* Tests for src/command_checkpoint.c: what caem info prints for checkpoints
 * with hand-made usage tables, that it fits 80 columns, and the exit
 * statuses and messages of caem info and caem import. Output is captured
 * into files in a fresh directory under /tmp. */
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "checkpoint.h"
#include "commands.h"
#include "test.h"

static char tmp_dir[] = "/tmp/caem_command_XXXXXX";

struct path {
    char text[1024];
};

static struct path tmp_path(const char *name)
{
    struct path p;
    snprintf(p.text, sizeof p.text, "%s/%s", tmp_dir, name);
    return p;
}

/* The output of one command run. */
struct run {
    int status;
    char out[16384];
    char err[4096];
};

static void read_into(const char *path, char *buffer, size_t size)
{
    FILE *f = fopen(path, "r");
    size_t n = f != NULL ? fread(buffer, 1, size - 1, f) : 0;
    buffer[n] = '\0';
    if (f != NULL)
        fclose(f);
}

/* Runs a command with stdout and stderr redirected to files. */
static void run_command(int (*command)(int, char **), int argc, char **argv, struct run *r)
{
    struct path out = tmp_path("stdout.txt"), err = tmp_path("stderr.txt");
    fflush(stdout);
    fflush(stderr);
    int saved_out = dup(1), saved_err = dup(2);
    int out_fd = open(out.text, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    int err_fd = open(err.text, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    dup2(out_fd, 1);
    dup2(err_fd, 2);
    r->status = command(argc, argv);
    fflush(stdout);
    fflush(stderr);
    dup2(saved_out, 1);
    dup2(saved_err, 2);
    close(saved_out);
    close(saved_err);
    close(out_fd);
    close(err_fd);
    read_into(out.text, r->out, sizeof r->out);
    read_into(err.text, r->err, sizeof r->err);
}

static int longest_line(const char *text)
{
    int longest = 0, current = 0;
    for (const char *c = text; *c != '\0'; c++) {
        current = *c == '\n' ? 0 : current + 1;
        if (current > longest)
            longest = current;
    }
    return longest;
}

#define CHECK_CONTAINS(text, fragment)                                                  \
    CHECK_MSG(strstr((text), (fragment)) != NULL, "output lacks \"%s\":\n%s", (fragment), \
              (text))

/* Saves a tiny-preset model with `experts` experts and one usage record
 * agnews/validation whose kept counts `fill` sets. */
static struct path save_with_usage(const char *name, int experts,
                                   void (*fill)(struct usage_table *t))
{
    struct path p = tmp_path(name);
    struct model_config cfg;
    struct caem_error err;
    config_preset(&cfg, "tiny", &err);
    cfg.num_experts = experts;
    struct checkpoint ck = { 0 };
    if (model_create(&ck.model, &cfg, backend_cpu(), &err) != 0) {
        CHECK_MSG(0, "%s", err.message);
        return p;
    }
    struct adamw_config ac = adamw_defaults();
    CHECK(adamw_create(&ck.optimizer, ck.model, &ac, &err) == 0);
    ck.optimizer->step = 1234;
    ck.has_train_state = 1;
    ck.train.step = 1234;
    ck.train.epoch = 2;
    ck.train.epoch_batch = 17;
    ck.train.batch_size = 24;
    ck.train.accumulation = 3;
    ck.train.seed = 42;
    snprintf(ck.train.task, sizeof ck.train.task, "agnews");
    struct checkpoint_usage usage = { "agnews", "validation", { 0 } };
    CHECK(usage_table_init(&usage.table, &cfg, &err) == 0);
    fill(&usage.table);
    ck.usage = &usage;
    ck.usage_count = 1;
    char *names[2] = { "step", "loss" };
    double values[4] = { 1, 2, 4.5, 3.25 };
    ck.history.columns = 2;
    ck.history.names = names;
    ck.history.rows = 2;
    ck.history.values = values;
    char *attr_names[1] = { "task" }, *attr_values[1] = { "agnews" };
    ck.attr_names = attr_names;
    ck.attr_values = attr_values;
    ck.attr_count = 1;
    CHECK_MSG(checkpoint_save(p.text, &ck, &err) == 0, "%s", err.message);
    usage_table_free(&usage.table);
    adamw_free(ck.optimizer);
    model_free(ck.model);
    return p;
}

/* Encoder block 1: 100 tokens to each of 8 experts (entropy 1). Encoder
 * block 3: 250,000 to expert 0 and 3 dropped (entropy 0). Decoder block 1:
 * half to expert 2 and half to expert 5 (entropy 1/3). Decoder block 3:
 * nothing counted. */
static void fill_eight(struct usage_table *t)
{
    for (int e = 0; e < 8; e++)
        t->kept[e] = 100;
    t->tokens[0] = 800;
    t->kept[8] = 250000;
    t->dropped[8 + 4] = 3;
    t->tokens[1] = 250003;
    t->kept[16 + 2] = 1000;
    t->kept[16 + 5] = 1000;
    t->tokens[2] = 2000;
}

static void test_info_prints_everything(void)
{
    struct path p = save_with_usage("eight.h5", 8, fill_eight);
    char *argv[] = { "info", p.text };
    struct run r;
    run_command(command_info, 2, argv, &r);
    CHECK_INT_EQ(r.status, 0);
    CHECK_MSG(r.err[0] == '\0', "stderr: %s", r.err);

    /* every config field, with the name config.h gives it */
    struct model_config cfg;
    struct caem_error err;
    config_preset(&cfg, "tiny", &err);
    char *text = config_to_json(&cfg);
    json_t *fields = json_loads(text, 0, NULL);
    free(text);
    const char *key;
    json_t *value;
    json_object_foreach(fields, key, value) {
        char line[64];
        snprintf(line, sizeof line, "\n  %s ", key);
        CHECK_CONTAINS(r.out, line);
    }
    json_decref(fields);

    CHECK_CONTAINS(r.out, "  task         agnews\n");
    CHECK_CONTAINS(r.out, "  num_experts                      8\n");
    CHECK_CONTAINS(r.out, "optimizer: AdamW at step 1234\n");
    CHECK_CONTAINS(r.out, "train state: task agnews, step 1234, epoch 2 after 17 batches\n");
    CHECK_CONTAINS(r.out, "  batch size 24, 3 batches per optimizer step, seed 42\n");
    CHECK_CONTAINS(r.out, "history: 2 records; the last one:\n  step                 2\n"
                          "  loss                 3.25\n");
    CHECK_CONTAINS(r.out, "usage agnews/validation: padding not counted, decoder "
                          "teacher-forced\n");
    CHECK_CONTAINS(r.out, "  block tokens entropy dropped    e0    e1    e2    e3    e4    e5"
                          "    e6    e7\n");
    CHECK_CONTAINS(r.out, "  encoder, mean normalized entropy 0.500\n");
    CHECK_CONTAINS(r.out, "      1    800   1.000       0   100   100   100   100   100   100"
                          "   100   100\n");
    CHECK_CONTAINS(r.out, "      3   250k   0.000       3  250k     0     0     0     0     0"
                          "     0     0\n");
    CHECK_CONTAINS(r.out, "  decoder, mean normalized entropy 0.167\n");
    CHECK_CONTAINS(r.out, "      1   2000   0.333       0     0     0  1000     0     0  1000"
                          "     0     0\n");
    CHECK_MSG(longest_line(r.out) <= 80, "a line has %d columns:\n%s", longest_line(r.out),
              r.out);
}

/* Encoder block 1 of 16 experts: 600 to expert 5, 300 to expert 2, 100 to
 * expert 9. */
static void fill_sixteen(struct usage_table *t)
{
    t->kept[5] = 600;
    t->kept[2] = 300;
    t->kept[9] = 100;
    t->tokens[0] = 1000;
}

static void test_info_top_shares_for_many_experts(void)
{
    struct path p = save_with_usage("sixteen.h5", 16, fill_sixteen);
    char *argv[] = { "info", p.text };
    struct run r;
    run_command(command_info, 2, argv, &r);
    CHECK_INT_EQ(r.status, 0);
    CHECK_CONTAINS(r.out, "  block tokens entropy dropped  the 4 experts with the most kept "
                          "tokens\n");
    CHECK_CONTAINS(r.out, "      1   1000   0.324       0  e5   60.0%  e2   30.0%  e9   "
                          "10.0%  e0    0.0%\n");
    CHECK_MSG(longest_line(r.out) <= 80, "a line has %d columns:\n%s", longest_line(r.out),
              r.out);
}

static void test_info_exit_statuses(void)
{
    struct run r;
    char *help[] = { "info", "--help" };
    run_command(command_info, 2, help, &r);
    CHECK_INT_EQ(r.status, 0);
    CHECK_CONTAINS(r.out, "usage: caem info CKPT.h5");

    char *none[] = { "info" };
    run_command(command_info, 1, none, &r);
    CHECK_INT_EQ(r.status, 2);
    CHECK_CONTAINS(r.err, "caem info: expected 1 path, got 0");

    char *option[] = { "info", "--verbose", "x.h5" };
    run_command(command_info, 3, option, &r);
    CHECK_INT_EQ(r.status, 2);
    CHECK_CONTAINS(r.err, "caem info: unknown option '--verbose'");

    char *two[] = { "info", "a.h5", "b.h5" };
    run_command(command_info, 3, two, &r);
    CHECK_INT_EQ(r.status, 2);
    CHECK_CONTAINS(r.err, "caem info: unexpected argument 'b.h5'");

    struct path missing = tmp_path("missing.h5");
    char *absent[] = { "info", missing.text };
    run_command(command_info, 2, absent, &r);
    CHECK_INT_EQ(r.status, 1);
    CHECK_CONTAINS(r.err, "caem info: checkpoint ");
    CHECK_CONTAINS(r.err, "missing.h5: cannot open: No such file or directory");
    CHECK_MSG(r.out[0] == '\0', "stdout: %s", r.out);
}

static void test_import_exit_statuses(void)
{
    const char *root = getenv("CAEM_ROOT");
    char dir[1024];
    snprintf(dir, sizeof dir, "%s/tests/fixtures/hf_sharded", root != NULL ? root : ".");
    struct path out = tmp_path("imported.h5");
    struct run r;

    char *ok[] = { "import", dir, out.text };
    run_command(command_import, 3, ok, &r);
    CHECK_INT_EQ(r.status, 0);
    CHECK_CONTAINS(r.out, "87 tensors from 3 files");
    CHECK_CONTAINS(r.out, "wrote ");
    CHECK(access(out.text, F_OK) == 0);

    char *info[] = { "info", out.text };
    run_command(command_info, 2, info, &r);
    CHECK_INT_EQ(r.status, 0);
    CHECK_CONTAINS(r.out, "  source       /");
    CHECK_CONTAINS(r.out, "usage: none\n");

    char *one[] = { "import", dir };
    run_command(command_import, 2, one, &r);
    CHECK_INT_EQ(r.status, 2);
    CHECK_CONTAINS(r.err, "caem import: expected 2 paths, got 1");

    struct path not_dir = tmp_path("imported.h5");
    struct path out2 = tmp_path("second.h5");
    char *bad[] = { "import", not_dir.text, out2.text };
    run_command(command_import, 3, bad, &r);
    CHECK_INT_EQ(r.status, 1);
    CHECK_CONTAINS(r.err, "is not a directory");
    CHECK(access(out2.text, F_OK) != 0);
}

int main(void)
{
    TEST_SUITE("command_checkpoint");
    if (mkdtemp(tmp_dir) == NULL) {
        printf("FAIL command_checkpoint/setup: mkdtemp %s: %s\n", tmp_dir, strerror(errno));
        return 1;
    }
    RUN_TEST(info_prints_everything);
    RUN_TEST(info_top_shares_for_many_experts);
    RUN_TEST(info_exit_statuses);
    RUN_TEST(import_exit_statuses);
    const char *files[] = { "eight.h5", "sixteen.h5", "imported.h5", "stdout.txt",
                            "stderr.txt" };
    for (size_t i = 0; i < sizeof files / sizeof files[0]; i++) {
        struct path p = tmp_path(files[i]);
        unlink(p.text);
    }
    rmdir(tmp_dir);
    TEST_MAIN_END();
}
