/* caem eval: one split of a task scored with a checkpoint, and its expert
 * usage recorded for the merge. */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "checkpoint.h"
#include "command_task.h"
#include "commands.h"

/* Rewrites the checkpoint with the evaluation's usage added (or replacing a
 * record of the same task and split). */
static int record_usage(const char *path, struct checkpoint *ck, const char *task,
                        const char *split, const struct usage_table *usage,
                        struct caem_error *err)
{
    int at = ck->usage_count;
    for (int i = 0; i < ck->usage_count; i++)
        if (strcmp(ck->usage[i].task, task) == 0 && strcmp(ck->usage[i].split, split) == 0)
            at = i;
    struct checkpoint_usage *records = malloc(sizeof *records * (size_t)(ck->usage_count + 1));
    if (records == NULL)
        return caem_fail(err, "out of memory for the usage records");
    memcpy(records, ck->usage, sizeof *records * (size_t)ck->usage_count);
    records[at].task = (char *)task;
    records[at].split = (char *)split;
    records[at].table = *usage;
    struct checkpoint copy = *ck;
    copy.usage = records;
    copy.usage_count = at == ck->usage_count ? ck->usage_count + 1 : ck->usage_count;
    int status = checkpoint_save(path, &copy, err);
    free(records);
    return status;
}

int command_eval(int argc, char **argv, const struct global_options *g)
{
    struct run_options o;
    run_options_defaults(&o);
    int parsed = parse_run_options(argc, argv, 1, &o);
    if (parsed != 0)
        return parsed == 1 ? 0 : 2;
    if (optind != argc - 1) {
        fprintf(stderr, "caem eval: expected one checkpoint path (see caem eval --help)\n");
        return 2;
    }
    int split_known = 0;
    for (int s = 0; s < TASK_SPLIT_COUNT; s++)
        split_known |= strcmp(o.split, task_split_name((enum task_split_kind)s)) == 0;
    if (!split_known) {
        fprintf(stderr, "caem eval: invalid --split '%s' (expected train, validation or "
                "test)\n", o.split);
        return 2;
    }
    const char *path = argv[optind];
    struct caem_error err;
    const struct backend *be;
    if (backend_select(&be, g->device, &err) != 0) {
        fprintf(stderr, "caem eval: %s\n", err.message);
        return 1;
    }
    struct tokenizer *tok = NULL;
    struct task task;
    memset(&task, 0, sizeof task);
    struct checkpoint ck;
    memset(&ck, 0, sizeof ck);
    struct evaluation e;
    memset(&e, 0, sizeof e);
    int status = 1;
    if (load_task(&o, &tok, &task, &err) != 0 || checkpoint_load(path, be, &ck, &err) != 0)
        goto done;
    if (ck.model->config.vocab_size < tokenizer_vocab_size(tok)) {
        caem_fail(&err, "%s has a vocabulary of %d ids, fewer than the tokenizer's %d", path,
                  ck.model->config.vocab_size, tokenizer_vocab_size(tok));
        goto done;
    }
    long step = ck.has_train_state ? ck.train.step : 0;
    if (run_evaluation(ck.model, &task, &o, path, step, "evaluation", &e, &err) != 0)
        goto done;
    printf("expert usage (%s, decoder %s):\n", o.count_padding ? "padding counted"
                                                               : "padding not counted",
           e.usage.decoder_source == USAGE_DECODER_GENERATED ? "generating"
                                                             : "teacher-forced");
    print_usage_table(&e.usage);
    if (o.record_usage) {
        if (record_usage(path, &ck, task.name, o.split, &e.usage, &err) != 0)
            goto done;
        printf("usage recorded in %s under /router_usage/%s/%s\n", path, task.name, o.split);
    }
    status = 0;
done:
    if (status != 0)
        fprintf(stderr, "caem eval: %s\n", err.message);
    evaluation_free(&e);
    checkpoint_free(&ck);
    task_free(&task);
    tokenizer_free(tok);
    return status;
}
