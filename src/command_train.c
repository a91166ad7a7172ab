/* caem train and caem eval: single-task fine-tuning and evaluation on a task
 * directory of the default corpus's layout (NAME/{train,validation,test}.jsonl
 * beside a SentencePiece model). */
#include <errno.h>
#include <getopt.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "checkpoint.h"
#include "commands.h"
#include "config.h"
#include "evaluate.h"
#include "task.h"
#include "tokenizer.h"
#include "train.h"
#include "usage.h"

struct run_options {
    const char *data_dir;
    const char *task_name;
    const char *tokenizer_path; /* NULL: DATA/spm.model */
    const char *preset;
    long max_input, max_target;
    long steps, batch, accumulation, validate_every, checkpoint_every;
    long eval_limit, eval_batch;
    double lr;
    long beams, max_length;
    const char *checkpoint; /* output */
    const char *resume;
    const char *init;
    const char *results;
    const char *split;
    int record_usage;
    int count_padding;
    enum usage_decoder_source usage_source;
};

static void run_options_defaults(struct run_options *o)
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
    "                        optimizer, data position and random stream\n"
    "  --steps N             optimizer steps of the whole run (default 200)\n"
    "  --batch N             examples per micro-batch (default 16)\n"
    "  --accumulation N      micro-batches per optimizer step (default 1)\n"
    "  --lr X                AdamW learning rate (default 3e-4)\n"
    "  --max-input N         input tokens kept per example, EOS included (default 256)\n"
    "  --max-target N        target tokens kept per example (default 64)\n"
    "  --validate-every N    steps between validation losses, 0 for none (default 50)\n"
    "  --checkpoint PATH     HDF5 checkpoint written at the end and every\n"
    "  --checkpoint-every N  N steps (default: only at the end)\n"
    "  --eval-limit N        validation examples generated and scored before and after\n"
    "                        training, 0 for none (default 200)\n"
    "  --beams N             beam search width, 1 for greedy (default 3)\n"
    "  --max-length N        generated tokens at most, the start token included\n"
    "                        (default 200)\n"
    "  --results PREFIX      append the evaluation figures to PREFIX.csv and\n"
    "                        PREFIX.jsonl (default results)\n"
    "  --count-padding       count padding positions in the expert usage\n"
    "  --help                this text\n"
    "\n"
    "Common options (--device, --threads, --seed, --verbose) are in caem --help.\n";

static const char eval_help[] =
    "usage: caem eval CKPT [OPTIONS]\n"
    "\n"
    "Evaluates a checkpoint on one split of a task: teacher-forced loss, generated\n"
    "outputs scored by the task's metric, and expert usage per MoE layer.\n"
    "\n"
    "  --data DIR, --task NAME, --tokenizer PATH, --max-input N, --max-target N,\n"
    "  --beams N, --max-length N, --results PREFIX, --count-padding: as for caem train\n"
    "  --split NAME          train, validation or test (default validation)\n"
    "  --limit N             examples from the start of the split, 0 for all (default 200)\n"
    "  --batch N             sequences generated together (default 32)\n"
    "  --usage-from SOURCE   what the decoder reads while its usage is counted: teacher\n"
    "                        (the gold targets, default) or generated (its own outputs)\n"
    "  --record              store the usage in the checkpoint under\n"
    "                        /router_usage/TASK/SPLIT (the file is rewritten atomically)\n"
    "  --help                this text\n";

static int parse_long(const char *text, const char *what, long min, long max, long *out)
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

/* Parses the options of train (eval = 0) or eval into o. Returns 0, 1 after
 * --help, or 2 on a usage error. */
static int parse_run_options(int argc, char **argv, int eval, struct run_options *o)
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
    int c;
    long v;
    optind = 1;
    opterr = 0;
    while ((c = getopt_long(argc, argv, ":h", eval ? eval_options : train_options, NULL)) !=
           -1) {
        switch (c) {
        case OPT_DATA: o->data_dir = optarg; break;
        case OPT_TASK: o->task_name = optarg; break;
        case OPT_TOKENIZER: o->tokenizer_path = optarg; break;
        case OPT_PRESET: o->preset = optarg; break;
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
            if (errno != 0 || end == optarg || *end != '\0' || !(o->lr > 0.0 && o->lr < 1.0)) {
                fprintf(stderr, "caem %s: invalid --lr '%s' (expected a number in (0, 1))\n",
                        name, optarg);
                return 2;
            }
            break;
        }
        case OPT_STEPS:
            if (parse_long(optarg, "--steps", 0, 100000000L, &o->steps) != 0)
                return 2;
            break;
        case OPT_BATCH:
            if (parse_long(optarg, "--batch", 1, 65536, &v) != 0)
                return 2;
            o->batch = o->eval_batch = v;
            break;
        case OPT_ACCUMULATION:
            if (parse_long(optarg, "--accumulation", 1, 65536, &o->accumulation) != 0)
                return 2;
            break;
        case OPT_MAX_INPUT:
            if (parse_long(optarg, "--max-input", 2, 65536, &o->max_input) != 0)
                return 2;
            break;
        case OPT_MAX_TARGET:
            if (parse_long(optarg, "--max-target", 2, 65536, &o->max_target) != 0)
                return 2;
            break;
        case OPT_VALIDATE_EVERY:
            if (parse_long(optarg, "--validate-every", 0, 100000000L, &o->validate_every) != 0)
                return 2;
            break;
        case OPT_CHECKPOINT_EVERY:
            if (parse_long(optarg, "--checkpoint-every", 1, 100000000L,
                           &o->checkpoint_every) != 0)
                return 2;
            break;
        case OPT_EVAL_LIMIT:
        case OPT_LIMIT:
            if (parse_long(optarg, c == OPT_LIMIT ? "--limit" : "--eval-limit", 0,
                           1000000000L, &o->eval_limit) != 0)
                return 2;
            break;
        case OPT_BEAMS:
            if (parse_long(optarg, "--beams", 1, 64, &o->beams) != 0)
                return 2;
            break;
        case OPT_MAX_LENGTH:
            if (parse_long(optarg, "--max-length", 2, 65536, &o->max_length) != 0)
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

/* Loads DATA/TASK/{train,validation,test}.jsonl, the splits that exist, and
 * tokenizes them. */
static int load_task(const struct run_options *o, struct tokenizer **tok, struct task *task,
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

static void print_usage_table(const struct usage_table *u)
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

static int run_evaluation(struct model *m, const struct task *task,
                          const struct run_options *o, const char *model_name, long step,
                          const char *label, struct evaluation *e, struct caem_error *err)
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

/* ---- checkpoints ---- */

static const char *const history_columns[] = {
    "step", "loss", "cross_entropy", "router_z", "balance", "grad_norm", "validation",
    "encoder_entropy", "decoder_entropy", "tokens_per_second", "elapsed",
};
#define HISTORY_COLUMNS ((int)(sizeof history_columns / sizeof history_columns[0]))

static void record_values(const struct train_record *r, double *v)
{
    double values[HISTORY_COLUMNS] = {
        (double)r->step, r->loss, r->cross_entropy, r->router_z, r->balance, r->grad_norm,
        r->validation, r->encoder_entropy, r->decoder_entropy, r->tokens_per_second,
        r->elapsed,
    };
    memcpy(v, values, sizeof values);
}

/* The history to save: the rows of a resumed checkpoint, then this process's
 * steps. The column arrays are allocated; the names are borrowed. */
static int history_build(const struct checkpoint_history *previous,
                         const struct train_record *records, long count,
                         struct checkpoint_history *out, struct caem_error *err)
{
    long old_rows = 0;
    if (previous != NULL && previous->columns == HISTORY_COLUMNS)
        old_rows = previous->rows;
    long rows = old_rows + count;
    memset(out, 0, sizeof *out);
    out->columns = HISTORY_COLUMNS;
    out->rows = rows;
    out->names = (char **)history_columns;
    out->values = malloc(sizeof(double) * (size_t)HISTORY_COLUMNS * (size_t)(rows > 0 ? rows : 1));
    if (out->values == NULL)
        return caem_fail(err, "out of memory for a history of %ld steps", rows);
    for (int c = 0; c < HISTORY_COLUMNS; c++) {
        double *column = out->values + (size_t)c * rows;
        for (long r = 0; r < old_rows; r++) {
            int at = -1;
            for (int k = 0; k < previous->columns; k++)
                if (strcmp(previous->names[k], history_columns[c]) == 0)
                    at = k;
            column[r] = at >= 0 ? previous->values[(size_t)at * previous->rows + r] : NAN;
        }
    }
    for (long r = 0; r < count; r++) {
        double v[HISTORY_COLUMNS];
        record_values(&records[r], v);
        for (int c = 0; c < HISTORY_COLUMNS; c++)
            out->values[(size_t)c * rows + old_rows + r] = v[c];
    }
    return 0;
}

struct run_context {
    const struct run_options *options;
    struct model *model;
    struct trainer *trainer;
    const struct task *task;
    const char *tokenizer_path;
    char base[17];
    const struct checkpoint_history *previous_history;
};

static int save_training_checkpoint(const struct run_context *rc, const char *path,
                                    struct caem_error *err)
{
    struct checkpoint ck;
    memset(&ck, 0, sizeof ck);
    ck.model = rc->model;
    ck.optimizer = trainer_optimizer(rc->trainer);
    struct train_state state;
    trainer_get_state(rc->trainer, &state);
    ck.has_train_state = 1;
    ck.train.seed = state.seed;
    ck.train.step = state.step;
    ck.train.epoch = state.epoch;
    ck.train.epoch_batch = state.epoch_batch;
    ck.train.rng_seed = rc->model->rng.seed;
    ck.train.rng_next = state.rng_next;
    ck.train.batch_size = (int)rc->options->batch;
    ck.train.accumulation = (int)rc->options->accumulation;
    snprintf(ck.train.task, sizeof ck.train.task, "%s", rc->task->name);

    struct checkpoint_usage usage[2];
    memset(usage, 0, sizeof usage);
    usage[0].task = (char *)rc->task->name;
    usage[0].split = "train";
    usage[0].table = *trainer_usage(rc->trainer);
    ck.usage = usage;
    ck.usage_count = 1;
    const struct usage_table *validation = trainer_validation_usage(rc->trainer);
    if (usage_table_rows(validation) > 0 && validation->tokens[0] > 0) {
        usage[1].task = (char *)rc->task->name;
        usage[1].split = "validation";
        usage[1].table = *validation;
        ck.usage_count = 2;
    }

    long count;
    const struct train_record *records = trainer_history(rc->trainer, &count);
    if (history_build(rc->previous_history, records, count, &ck.history, err) != 0)
        return -1;
    char *names[] = { "task", "tokenizer", "base" };
    char *values[] = { (char *)rc->task->name, (char *)rc->tokenizer_path, (char *)rc->base };
    ck.attr_names = names;
    ck.attr_values = values;
    ck.attr_count = 3;
    int status = checkpoint_save(path, &ck, err);
    free(ck.history.values);
    return status;
}

/* ---- caem train ---- */

static void format_seconds(double seconds, char *out, size_t size)
{
    long s = (long)(seconds + 0.5);
    if (s >= 3600)
        snprintf(out, size, "%ldh%02ldm", s / 3600, s / 60 % 60);
    else
        snprintf(out, size, "%ldm%02lds", s / 60, s % 60);
}

static void print_progress(struct trainer *t, struct train_snapshot *s)
{
    trainer_snapshot(t, s);
    char eta[32];
    format_seconds(s->eta, eta, sizeof eta);
    printf("step %5ld/%ld  loss %.4f  cross-entropy %.4f  entropy enc %.3f dec %.3f  "
           "%.0f tokens/s  ETA %s\n", s->step, s->steps, s->last.loss, s->last.cross_entropy,
           s->last.encoder_entropy, s->last.decoder_entropy, s->tokens_per_second, eta);
    if (s->validation_step == s->step)
        printf("step %5ld  validation loss %.4f\n", s->step, s->validation_loss);
}

/* Creates the model: from a checkpoint to resume or start from, or a new one
 * of the preset's shape with the tokenizer's vocabulary. */
static int build_model(struct run_context *rc, const struct tokenizer *tok,
                       const struct backend *be, unsigned long long seed,
                       struct checkpoint *loaded, struct caem_error *err)
{
    const struct run_options *o = rc->options;
    const char *from = o->resume != NULL ? o->resume : o->init;
    if (from != NULL) {
        if (checkpoint_load(from, be, loaded, err) != 0)
            return -1;
        rc->model = loaded->model;
        const char *base = NULL;
        for (int i = 0; i < loaded->attr_count; i++)
            if (strcmp(loaded->attr_names[i], "base") == 0)
                base = loaded->attr_values[i];
        if (base != NULL)
            snprintf(rc->base, sizeof rc->base, "%s", base);
        else
            checkpoint_params_hash(rc->model, rc->base);
    } else {
        struct model_config cfg;
        if (config_preset(&cfg, o->preset, err) != 0)
            return -1;
        cfg.vocab_size = tokenizer_vocab_size(tok);
        if (model_create(&rc->model, &cfg, be, err) != 0)
            return -1;
        model_init_params(rc->model, seed);
        checkpoint_params_hash(rc->model, rc->base);
    }
    if (rc->model->config.vocab_size < tokenizer_vocab_size(tok))
        return caem_fail(err, "the model's vocabulary has %d ids, fewer than the tokenizer's "
                         "%d", rc->model->config.vocab_size, tokenizer_vocab_size(tok));
    return 0;
}

/* Restores the optimizer moments and the data position of a resumed run. */
static int resume_state(struct run_context *rc, const struct checkpoint *loaded,
                        struct caem_error *err)
{
    if (loaded->optimizer == NULL || !loaded->has_train_state)
        return caem_fail(err, "%s has no optimizer state or train state to resume from "
                         "(use --init to start from its parameters)", rc->options->resume);
    struct adamw *opt = trainer_optimizer(rc->trainer);
    const struct adamw *saved = loaded->optimizer;
    const struct backend *be = rc->model->backend;
    be->copy(opt->m, saved->m, sizeof(float) * saved->count);
    be->copy(opt->v, saved->v, sizeof(float) * saved->count);
    memcpy(opt->tensor_steps, saved->tensor_steps,
           sizeof *opt->tensor_steps * (size_t)rc->model->layout.count);
    opt->step = saved->step;
    struct train_state state = { loaded->train.seed, loaded->train.step, loaded->train.epoch,
                                 loaded->train.epoch_batch, loaded->train.rng_next };
    if (loaded->train.batch_size != (int)rc->options->batch ||
        loaded->train.accumulation != (int)rc->options->accumulation)
        return caem_fail(err, "%s was trained with batch %d and accumulation %d; resume it "
                         "with the same --batch and --accumulation", rc->options->resume,
                         loaded->train.batch_size, loaded->train.accumulation);
    if (strcmp(loaded->train.task, rc->task->name) != 0)
        return caem_fail(err, "%s was trained on task '%s', not '%s'", rc->options->resume,
                         loaded->train.task, rc->task->name);
    return trainer_set_state(rc->trainer, &state, err);
}

static int train_loop(struct run_context *rc, struct caem_error *err)
{
    const struct run_options *o = rc->options;
    struct train_snapshot snap;
    if (train_snapshot_init(&snap, rc->trainer, err) != 0)
        return -1;
    trainer_snapshot(rc->trainer, &snap);
    long every = o->steps / 20 > 0 ? o->steps / 20 : 1;
    int status = 0;
    while (snap.step < o->steps) {
        if (trainer_step(rc->trainer, err) != 0) {
            status = -1;
            break;
        }
        trainer_snapshot(rc->trainer, &snap);
        if (snap.step % every == 0 || snap.step == o->steps || snap.validation_step == snap.step)
            print_progress(rc->trainer, &snap);
        if (o->checkpoint_every > 0 && snap.step % o->checkpoint_every == 0 &&
            snap.step < o->steps) {
            if (save_training_checkpoint(rc, o->checkpoint, err) != 0) {
                status = -1;
                break;
            }
            printf("checkpoint %s written at step %ld\n", o->checkpoint, snap.step);
        }
    }
    train_snapshot_free(&snap);
    return status;
}

int command_train(int argc, char **argv, const struct global_options *g)
{
    struct run_options o;
    run_options_defaults(&o);
    int parsed = parse_run_options(argc, argv, 0, &o);
    if (parsed != 0)
        return parsed == 1 ? 0 : 2;
    if (optind < argc) {
        fprintf(stderr, "caem train: unexpected argument '%s' (see caem train --help)\n",
                argv[optind]);
        return 2;
    }
    struct caem_error err;
    const struct backend *be;
    if (backend_select(&be, g->device, &err) != 0) {
        fprintf(stderr, "caem train: %s\n", err.message);
        return 1;
    }
    struct tokenizer *tok = NULL;
    struct task task;
    memset(&task, 0, sizeof task);
    struct checkpoint loaded;
    memset(&loaded, 0, sizeof loaded);
    struct run_context rc;
    memset(&rc, 0, sizeof rc);
    rc.options = &o;
    rc.task = &task;
    char tokenizer_path[4096];
    snprintf(tokenizer_path, sizeof tokenizer_path, "%s",
             o.tokenizer_path != NULL ? o.tokenizer_path : "");
    if (o.tokenizer_path == NULL)
        snprintf(tokenizer_path, sizeof tokenizer_path, "%s/spm.model", o.data_dir);
    rc.tokenizer_path = tokenizer_path;
    int status = 1;
    struct evaluation before, after;
    memset(&before, 0, sizeof before);
    memset(&after, 0, sizeof after);
    const char *model_name = o.checkpoint != NULL ? o.checkpoint : o.preset;

    if (load_task(&o, &tok, &task, &err) != 0 ||
        build_model(&rc, tok, be, g->seed, &loaded, &err) != 0)
        goto done;
    const struct model_config *cfg = &rc.model->config;
    printf("task %s: %ld train, %ld validation examples; model %zu parameters, %d + %d MoE "
           "layers of %d experts, backend %s\n", task.name,
           task.splits[TASK_SPLIT_TRAIN].tokens.count,
           task.splits[TASK_SPLIT_VALIDATION].tokens.count, rc.model->layout.total,
           config_moe_layer_count(cfg, 0), config_moe_layer_count(cfg, 1), cfg->num_experts,
           be->name);

    struct train_options to = train_defaults();
    to.batch_size = (int)o.batch;
    to.accumulation = (int)o.accumulation;
    to.steps = o.steps;
    to.validate_every = (int)o.validate_every;
    to.seed = g->seed;
    to.count_padding = o.count_padding;
    to.adamw.lr = (float)o.lr;
    if (o.resume != NULL)
        to.seed = loaded.train.seed;
    if (trainer_create(&rc.trainer, rc.model, &task, &to, &err) != 0)
        goto done;
    if (o.resume != NULL) {
        if (resume_state(&rc, &loaded, &err) != 0)
            goto done;
        rc.previous_history = &loaded.history;
        printf("resumed %s at step %ld\n", o.resume, loaded.train.step);
    }

    int evaluate = o.eval_limit > 0 && task.splits[TASK_SPLIT_VALIDATION].tokens.count > 0;
    long first_step = o.resume != NULL ? loaded.train.step : 0;
    if (evaluate && run_evaluation(rc.model, &task, &o, model_name, first_step, "before",
                                   &before, &err) != 0)
        goto done;
    if (train_loop(&rc, &err) != 0)
        goto done;
    if (o.checkpoint != NULL) {
        if (save_training_checkpoint(&rc, o.checkpoint, &err) != 0)
            goto done;
        printf("checkpoint %s written at step %ld\n", o.checkpoint, o.steps);
    }
    if (evaluate && run_evaluation(rc.model, &task, &o, model_name, o.steps, "after", &after,
                                   &err) != 0)
        goto done;
    printf("expert usage over the training steps of this run:\n");
    print_usage_table(trainer_usage(rc.trainer));
    status = 0;
done:
    if (status != 0)
        fprintf(stderr, "caem train: %s\n", err.message);
    evaluation_free(&before);
    evaluation_free(&after);
    trainer_free(rc.trainer);
    if (rc.model != loaded.model)
        model_free(rc.model);
    checkpoint_free(&loaded);
    task_free(&task);
    tokenizer_free(tok);
    return status;
}

/* ---- caem eval ---- */

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
