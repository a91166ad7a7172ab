/* Options and helpers shared by caem train and caem eval. */
#ifndef CAEM_COMMAND_TASK_H
#define CAEM_COMMAND_TASK_H

#include "evaluate.h"
#include "model.h"
#include "task.h"
#include "tokenizer.h"
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
    /* 1 for the options given on the command line, which a checkpoint's own
     * settings must not silently replace */
    int task_given, preset_given, lr_given, max_input_given, max_target_given;
};

/* Sets the defaults that caem train --help lists. */
void run_options_defaults(struct run_options *o);

/* Parses the options of train (eval = 0) or eval into o, leaving optind at
 * the first argument that is not an option. Returns 0, 1 after --help, or 2
 * on a usage error, which it has printed. */
int parse_run_options(int argc, char **argv, int eval, struct run_options *o);

/* Loads DATA/TASK/{train,validation,test}.jsonl, the splits that exist, with
 * the tokenizer, and tokenizes them. Reports skipped records on stderr. */
int load_task(const struct run_options *o, struct tokenizer **tok, struct task *task,
              struct caem_error *err);

/* Prints a usage table: per MoE layer the tokens, the normalized entropy and
 * each expert's share (the first 16 experts), and the means per stack. */
void print_usage_table(const struct usage_table *u);

/* Evaluates m on the split of o, prints the figures after `label`, and
 * appends them to o->results unless it is empty. */
int run_evaluation(struct model *m, const struct task *task, const struct run_options *o,
                   const char *model_name, long step, const char *label, struct evaluation *e,
                   struct caem_error *err);

#endif
