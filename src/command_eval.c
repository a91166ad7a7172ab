/* caem eval: one split of a task scored with a checkpoint, and its expert
 * usage recorded for the merge. */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "checkpoint.h"
#include "command_task.h"
#include "commands.h"
#include "results.h"

/* Rewrites the checkpoint with the evaluation's usage added (or replacing a
 * record of the same task and split). */
static int record_usage(const char *path, struct checkpoint *ck, const char *task,
                        const char *split, const struct usage_table *usage, long *replaced,
                        struct caem_error *err)
{
    int at = ck->usage_count;
    *replaced = -1;
    for (int i = 0; i < ck->usage_count; i++)
        if (strcmp(ck->usage[i].task, task) == 0 && strcmp(ck->usage[i].split, split) == 0) {
            at = i;
            if (usage_table_rows(&ck->usage[i].table) > 0)
                *replaced = (long)ck->usage[i].table.tokens[0];
        }
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

/* Takes the task and the sequence lengths the checkpoint was trained with,
 * unless the command line gives them. */
static void apply_checkpoint_settings(struct run_options *o, const struct checkpoint *ck)
{
    if (!o->task_given) {
        if (ck->has_train_state && ck->train.task[0] != '\0')
            o->task_name = ck->train.task;
        for (int i = 0; i < ck->attr_count; i++)
            if (!ck->has_train_state && strcmp(ck->attr_names[i], "task") == 0)
                o->task_name = ck->attr_values[i];
    }
    for (int i = 0; i < ck->train.extra_count; i++) {
        const char *name = ck->train.extra_names[i];
        if (strcmp(name, "max_input") == 0 && !o->max_input_given)
            o->max_input = (long)ck->train.extra_values[i];
        if (strcmp(name, "max_target") == 0 && !o->max_target_given)
            o->max_target = (long)ck->train.extra_values[i];
    }
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
    if (backend_default(&be, &err) != 0) {
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
    if (checkpoint_load(path, be, &ck, &err) != 0)
        goto done;
    apply_checkpoint_settings(&o, &ck);
    if (load_task(&o, &tok, &task, &err) != 0 ||
        (o.results[0] != '\0' && results_append(o.results, NULL, 0, &err) != 0))
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
        long replaced = -1;
        if (record_usage(path, &ck, task.name, o.split, &e.usage, &replaced, &err) != 0)
            goto done;
        printf("usage recorded in %s under /router_usage/%s/%s", path, task.name, o.split);
        if (replaced >= 0)
            printf(", replacing the record of %ld tokens in its first layer", replaced);
        printf("\n");
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
