/* Options and helpers shared by caem train and caem eval: the task directory
 * of the default corpus's layout (NAME/{train,validation,test}.jsonl beside a
 * SentencePiece model), evaluation and the usage table printout. */
#include "command_task.h"

#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "checkpoint.h"
#include "commands.h"
#include "config.h"

void run_options_defaults(struct run_options *o)
{
    memset(o, 0, sizeof *o);
    o->data_dir = "build/data";
    o->task_name = "classification";
    o->preset = "small";
    o->max_input = 256;
    o->max_target = 64;
    o->steps = 200;
    o->batch = 16;
    o->accumulation = 1;
    o->validate_every = 50;
    o->eval_limit = 200;
    o->eval_batch = 32;
    o->lr = 3e-4;
    o->beams = 3;
    o->max_length = 200;
    o->results = "results";
    o->split = "validation";
    o->usage_source = USAGE_DECODER_TEACHER_FORCED;
}

static const char train_help[] =
    "usage: caem train [OPTIONS]\n"
    "\n"
    "Fine-tunes a Switch Transformer on one task, evaluates it before and after, and\n"
    "writes a checkpoint with its expert usage and history.\n"
    "\n"
    "  --data DIR            task directory root (default build/data, made by make data)\n"
    "  --task NAME           DIR/NAME/{train,validation,test}.jsonl (default\n"
    "                        classification; the default corpus also has\n"
    "                        summarization and qa)\n"
    "  --tokenizer PATH      SentencePiece model (default DIR/spm.model)\n"
    "  --preset NAME         model shape for a new model: tiny, small, switch-base-8\n"
    "                        (default small); its vocabulary is the tokenizer's\n"
    "  --init CKPT           start from a checkpoint's parameters (a common base)\n"
    "  --resume CKPT         continue a run saved with --checkpoint: parameters,\n"
    "                        optimizer, data position and random stream; the task,\n"
    "                        lengths, lr and seed come from the checkpoint, and\n"
    "                        --batch and --accumulation must be the run's\n"
    "  --steps N             optimizer steps of the whole run (default 200)\n"
    "  --batch N             examples per micro-batch (default 16)\n"
    "  --accumulation N      micro-batches per optimizer step (default 1)\n"
    "  --lr X                AdamW learning rate (default 3e-4)\n"
    "  --max-input N         input tokens kept per example, EOS included (default 256)\n"
    "  --max-target N        target tokens kept per example (default 64)\n"
    "  --validate-every N    steps between validation losses, 0 for none (default 50)\n"
    "  --checkpoint PATH     HDF5 checkpoint written at the end, and when Ctrl-C stops\n"
    "                        the run (default: none)\n"
    "  --checkpoint-every N  also write it every N steps (default: only at the end)\n"
    "  --eval-limit N        validation examples generated and scored before and after\n"
    "                        training, 0 for none (default 200)\n"
    "  --beams N             beam search width, 1 for greedy (default 3)\n"
    "  --max-length N        generated tokens at most, the start token included\n"
    "                        (default 200)\n"
    "  --results PREFIX      append the evaluation figures to PREFIX.csv and\n"
    "                        PREFIX.jsonl (default results; an empty PREFIX writes none)\n"
    "  --count-padding       count padding positions in the expert usage\n"
    "  --help                this text\n"
    "\n"
    "Common options (--device, --precision, --threads, --seed, --verbose) are in caem\n"
    "--help.\n";

static const char eval_help[] =
    "usage: caem eval CKPT [OPTIONS]\n"
    "\n"
    "Evaluates a checkpoint on one split of a task: teacher-forced loss, generated\n"
    "outputs scored by the task's metric, and expert usage per MoE layer.\n"
    "\n"
    "  --data DIR, --task NAME, --tokenizer PATH, --max-input N, --max-target N,\n"
    "  --beams N, --max-length N, --results PREFIX, --count-padding: as for caem train;\n"
    "  the task and the lengths default to those the checkpoint was trained with\n"
    "  --split NAME          train, validation or test (default validation)\n"
    "  --limit N             examples from the start of the split, 0 for all (default 200)\n"
    "  --batch N             sequences generated together (default 32)\n"
    "  --usage-from SOURCE   what the decoder reads while its usage is counted: teacher\n"
    "                        (the gold targets, default) or generated (its own outputs)\n"
    "  --record              store the usage in the checkpoint under\n"
    "                        /router_usage/TASK/SPLIT (the file is rewritten atomically)\n"
    "  --help                this text\n";

int command_parse_long(const char *text, const char *what, long min, long max, long *out)
{
    char *end;
    errno = 0;
    long v = strtol(text, &end, 10);
    if (errno != 0 || *end != '\0' || end == text || v < min || v > max) {
        fprintf(stderr, "caem: invalid %s '%s' (expected an integer in [%ld, %ld])\n", what,
                text, min, max);
        return -1;
    }
    *out = v;
    return 0;
}

enum {
    OPT_DATA = 256, OPT_TASK, OPT_TOKENIZER, OPT_PRESET, OPT_INIT, OPT_RESUME, OPT_STEPS,
    OPT_BATCH, OPT_ACCUMULATION, OPT_LR, OPT_MAX_INPUT, OPT_MAX_TARGET, OPT_VALIDATE_EVERY,
    OPT_CHECKPOINT, OPT_CHECKPOINT_EVERY, OPT_EVAL_LIMIT, OPT_BEAMS, OPT_MAX_LENGTH,
    OPT_RESULTS, OPT_COUNT_PADDING, OPT_SPLIT, OPT_LIMIT, OPT_USAGE_FROM, OPT_RECORD,
};

int parse_run_options(int argc, char **argv, int eval, struct run_options *o)
{
    static const struct option train_options[] = {
        { "data", required_argument, NULL, OPT_DATA },
        { "task", required_argument, NULL, OPT_TASK },
        { "tokenizer", required_argument, NULL, OPT_TOKENIZER },
        { "preset", required_argument, NULL, OPT_PRESET },
        { "init", required_argument, NULL, OPT_INIT },
        { "resume", required_argument, NULL, OPT_RESUME },
        { "steps", required_argument, NULL, OPT_STEPS },
        { "batch", required_argument, NULL, OPT_BATCH },
        { "accumulation", required_argument, NULL, OPT_ACCUMULATION },
        { "lr", required_argument, NULL, OPT_LR },
        { "max-input", required_argument, NULL, OPT_MAX_INPUT },
        { "max-target", required_argument, NULL, OPT_MAX_TARGET },
        { "validate-every", required_argument, NULL, OPT_VALIDATE_EVERY },
        { "checkpoint", required_argument, NULL, OPT_CHECKPOINT },
        { "checkpoint-every", required_argument, NULL, OPT_CHECKPOINT_EVERY },
        { "eval-limit", required_argument, NULL, OPT_EVAL_LIMIT },
        { "beams", required_argument, NULL, OPT_BEAMS },
        { "max-length", required_argument, NULL, OPT_MAX_LENGTH },
        { "results", required_argument, NULL, OPT_RESULTS },
        { "count-padding", no_argument, NULL, OPT_COUNT_PADDING },
        { "help", no_argument, NULL, 'h' },
        { NULL, 0, NULL, 0 },
    };
    static const struct option eval_options[] = {
        { "data", required_argument, NULL, OPT_DATA },
        { "task", required_argument, NULL, OPT_TASK },
        { "tokenizer", required_argument, NULL, OPT_TOKENIZER },
        { "max-input", required_argument, NULL, OPT_MAX_INPUT },
        { "max-target", required_argument, NULL, OPT_MAX_TARGET },
        { "beams", required_argument, NULL, OPT_BEAMS },
        { "max-length", required_argument, NULL, OPT_MAX_LENGTH },
        { "results", required_argument, NULL, OPT_RESULTS },
        { "count-padding", no_argument, NULL, OPT_COUNT_PADDING },
        { "split", required_argument, NULL, OPT_SPLIT },
        { "limit", required_argument, NULL, OPT_LIMIT },
        { "batch", required_argument, NULL, OPT_BATCH },
        { "usage-from", required_argument, NULL, OPT_USAGE_FROM },
        { "record", no_argument, NULL, OPT_RECORD },
        { "help", no_argument, NULL, 'h' },
        { NULL, 0, NULL, 0 },
    };
    const char *name = eval ? "eval" : "train";
    struct model_config preset;
    struct caem_error err;
    int c;
    long v;
    optind = 1;
    opterr = 0;
    while ((c = getopt_long(argc, argv, ":h", eval ? eval_options : train_options, NULL)) !=
           -1) {
        switch (c) {
        case OPT_DATA: o->data_dir = optarg; break;
        case OPT_TASK: o->task_name = optarg; o->task_given = 1; break;
        case OPT_TOKENIZER: o->tokenizer_path = optarg; break;
        case OPT_PRESET:
            o->preset = optarg;
            o->preset_given = 1;
            if (config_preset(&preset, optarg, &err) != 0) {
                fprintf(stderr, "caem %s: invalid --preset: %s\n", name, err.message);
                return 2;
            }
            break;
        case OPT_INIT: o->init = optarg; break;
        case OPT_RESUME: o->resume = optarg; break;
        case OPT_CHECKPOINT: o->checkpoint = optarg; break;
        case OPT_RESULTS: o->results = optarg; break;
        case OPT_SPLIT: o->split = optarg; break;
        case OPT_COUNT_PADDING: o->count_padding = 1; break;
        case OPT_RECORD: o->record_usage = 1; break;
        case OPT_USAGE_FROM:
            if (strcmp(optarg, "teacher") == 0)
                o->usage_source = USAGE_DECODER_TEACHER_FORCED;
            else if (strcmp(optarg, "generated") == 0)
                o->usage_source = USAGE_DECODER_GENERATED;
            else {
                fprintf(stderr, "caem %s: invalid --usage-from '%s' (expected teacher or "
                        "generated)\n", name, optarg);
                return 2;
            }
            break;
        case OPT_LR: {
            char *end;
            errno = 0;
            o->lr = strtod(optarg, &end);
            o->lr_given = 1;
            if (errno != 0 || end == optarg || *end != '\0' || !(o->lr > 0.0 && o->lr < 1.0)) {
                fprintf(stderr, "caem %s: invalid --lr '%s' (expected a number in (0, 1))\n",
                        name, optarg);
                return 2;
            }
            break;
        }
        case OPT_STEPS:
            if (command_parse_long(optarg, "--steps", 0, 100000000L, &o->steps) != 0)
                return 2;
            break;
        case OPT_BATCH:
            if (command_parse_long(optarg, "--batch", 1, 65536, &v) != 0)
                return 2;
            o->batch = o->eval_batch = v;
            break;
        case OPT_ACCUMULATION:
            if (command_parse_long(optarg, "--accumulation", 1, 65536, &o->accumulation) != 0)
                return 2;
            break;
        case OPT_MAX_INPUT:
            if (command_parse_long(optarg, "--max-input", 2, 65536, &o->max_input) != 0)
                return 2;
            o->max_input_given = 1;
            break;
        case OPT_MAX_TARGET:
            if (command_parse_long(optarg, "--max-target", 2, 65536, &o->max_target) != 0)
                return 2;
            o->max_target_given = 1;
            break;
        case OPT_VALIDATE_EVERY:
            if (command_parse_long(optarg, "--validate-every", 0, 100000000L,
                                   &o->validate_every) != 0)
                return 2;
            break;
        case OPT_CHECKPOINT_EVERY:
            if (command_parse_long(optarg, "--checkpoint-every", 1, 100000000L,
                           &o->checkpoint_every) != 0)
                return 2;
            break;
        case OPT_EVAL_LIMIT:
        case OPT_LIMIT:
            if (command_parse_long(optarg, c == OPT_LIMIT ? "--limit" : "--eval-limit", 0,
                           1000000000L, &o->eval_limit) != 0)
                return 2;
            break;
        case OPT_BEAMS:
            if (command_parse_long(optarg, "--beams", 1, 64, &o->beams) != 0)
                return 2;
            break;
        case OPT_MAX_LENGTH:
            if (command_parse_long(optarg, "--max-length", 2, 65536, &o->max_length) != 0)
                return 2;
            break;
        case 'h':
            fputs(eval ? eval_help : train_help, stdout);
            return 1;
        case ':':
            fprintf(stderr, "caem %s: missing value for %s (see caem %s --help)\n", name,
                    argv[optind - 1], name);
            return 2;
        default:
            fprintf(stderr, "caem %s: unknown option '%s' (see caem %s --help)\n", name,
                    argv[optind - 1], name);
            return 2;
        }
    }
    if (o->checkpoint_every > 0 && o->checkpoint == NULL) {
        fprintf(stderr, "caem %s: --checkpoint-every needs --checkpoint PATH\n", name);
        return 2;
    }
    if (o->init != NULL && o->resume != NULL) {
        fprintf(stderr, "caem %s: --init and --resume exclude each other\n", name);
        return 2;
    }
    return 0;
}

/* ---- task, tokenizer, model ---- */

static enum task_metric metric_of_task(const char *name)
{
    if (strcmp(name, "summarization") == 0 || strcmp(name, "xsum") == 0)
        return TASK_METRIC_ROUGE;
    if (strcmp(name, "qa") == 0 || strcmp(name, "squad") == 0)
        return TASK_METRIC_SQUAD;
    return TASK_METRIC_ACCURACY;
}

int load_task(const struct run_options *o, struct tokenizer **tok, struct task *task,
                     struct caem_error *err)
{
    char path[4096];
    if (o->tokenizer_path != NULL)
        snprintf(path, sizeof path, "%s", o->tokenizer_path);
    else
        snprintf(path, sizeof path, "%s/spm.model", o->data_dir);
    if (tokenizer_load(tok, path, err) != 0)
        return -1;
    if (task_init(task, o->task_name, metric_of_task(o->task_name), *tok, (int)o->max_input,
                  (int)o->max_target, err) != 0)
        return -1;
    if (task_set_prompt(task, task_default_prompt(o->task_name), err) != 0)
        return -1;
    int found = 0;
    for (int s = 0; s < TASK_SPLIT_COUNT; s++) {
        snprintf(path, sizeof path, "%s/%s/%s.jsonl", o->data_dir, o->task_name,
                 task_split_name((enum task_split_kind)s));
        struct stat st;
        if (stat(path, &st) != 0)
            continue;
        struct dataset_report report;
        if (task_load_jsonl_split(task, (enum task_split_kind)s, path, &report, err) != 0)
            return -1;
        found++;
        if (report.skipped > 0)
            fprintf(stderr, "caem: %s: skipped %ld malformed records; the first, record %ld: "
                    "%s\n", path, report.skipped, report.first_bad_record, report.first_error);
    }
    if (found == 0)
        return caem_fail(err, "no split of task '%s' found: expected %s/%s/train.jsonl "
                         "(build the default corpus with make data)", o->task_name,
                         o->data_dir, o->task_name);
    return task_tokenize(task, err);
}

void print_usage_table(const struct usage_table *u)
{
    int E = u->experts;
    printf("  %-7s %5s %9s %7s  %s\n", "stack", "block", "tokens", "entropy",
           E <= 16 ? "share per expert (%)" : "top experts (%)");
    for (int row = 0; row < usage_table_rows(u); row++) {
        const int64_t *kept = u->kept + (size_t)row * E;
        const int64_t *dropped = u->dropped + (size_t)row * E;
        int64_t total = 0, drops = 0;
        for (int e = 0; e < E; e++) {
            total += kept[e];
            drops += dropped[e];
        }
        printf("  %-7s %5d %9lld %7.3f ", row < u->layers[0] ? "encoder" : "decoder",
               u->blocks[row], (long long)u->tokens[row], usage_table_entropy(u, row));
        for (int e = 0; e < E && e < 16; e++)
            printf(" %4.1f", total > 0 ? 100.0 * (double)kept[e] / (double)total : 0.0);
        if (drops > 0)
            printf("  dropped %lld", (long long)drops);
        printf("\n");
    }
    printf("  mean normalized entropy: encoder %.3f, decoder %.3f\n",
           usage_table_mean_entropy(u, 0), usage_table_mean_entropy(u, 1));
}

static void print_evaluation(const char *label, const struct evaluation *e)
{
    printf("%s: %ld %s examples, loss %.4f", label, e->examples, task_split_name(e->split),
           e->loss);
    for (int i = 0; i < e->figure_count; i++)
        printf(", %s %.2f", e->figure_names[i], e->figures[i]);
    printf(" (%.1f s)\n", e->seconds);
}

int run_evaluation(struct model *m, const struct task *task, const struct run_options *o,
                   const char *model_name, long step, const char *label, struct evaluation *e,
                   struct caem_error *err)
{
    struct evaluate_options eo = evaluate_defaults();
    eo.limit = o->eval_limit;
    eo.batch_size = (int)o->eval_batch;
    eo.generation.num_beams = (int)o->beams;
    eo.generation.max_length = (int)o->max_length;
    eo.count_padding = o->count_padding;
    eo.usage_source = o->usage_source;
    for (int s = 0; s < TASK_SPLIT_COUNT; s++)
        if (strcmp(o->split, task_split_name((enum task_split_kind)s)) == 0)
            eo.split = (enum task_split_kind)s;
    if (evaluate_task(m, task, &eo, e, err) != 0)
        return -1;
    print_evaluation(label, e);
    if (o->results != NULL && o->results[0] != '\0' &&
        evaluation_append_results(o->results, model_name, task, step, e, err) != 0)
        return -1;
    return 0;
}
