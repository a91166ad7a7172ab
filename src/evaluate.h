/* Evaluation of a model on one split of a task: the teacher-forced loss,
 * generated outputs scored by the task's metric, and the expert usage.
 *
 * Examples are taken in stored order, B at a time, and the encoder runs
 * once per batch. Generated ids are decoded with the task's
 * tokenizer after dropping EOS, padding, and ids past the tokenizer's
 * vocabulary (a model's vocabulary may be padded beyond it, as T5's 32128
 * rows are beyond its tokenizer's 32100 ids). */
#ifndef CAEM_EVALUATE_H
#define CAEM_EVALUATE_H

#include "error.h"
#include "generate.h"
#include "metrics.h"
#include "model.h"
#include "task.h"
#include "usage.h"

struct evaluate_options {
    enum task_split_kind split;
    long limit;            /* examples from the start of the split; 0 for all */
    int batch_size;        /* B */
    struct generate_options generation;
    int generate;          /* 0: the loss and the usage only, nothing generated */
    /* Input of the decoder while its usage is counted: the gold targets
     * (teacher forcing) or its own outputs during generation. */
    enum usage_decoder_source usage_source;
    int count_padding;
};

/* The validation split, every example, B 16, generate_paper_options(),
 * decoder usage with teacher forcing, padding not counted. */
struct evaluate_options evaluate_defaults(void);

struct evaluation {
    enum task_metric metric;
    enum task_split_kind split;
    long examples;
    int figure_count;
    const char *figure_names[METRIC_VALUES_MAX]; /* static strings */
    double figures[METRIC_VALUES_MAX];           /* on the 0-100 scale */
    double primary;      /* the figure Overall Performance uses */
    const char *primary_name;
    double loss;         /* teacher-forced cross-entropy per label token */
    struct usage_table usage;
    char **predictions;  /* [examples] decoded outputs; NULL when nothing was generated */
    double seconds;      /* wall time of the evaluation */
};

/* Mean cross-entropy per label token, with teacher forcing, over the first
 * `limit` sequences of tokens in batches of batch_size, in the model's
 * current mode. Adds the routing to `usage` when it is not NULL. */
int evaluate_loss(struct model *m, const struct task_tokens *tokens, long limit,
                  int batch_size, struct usage_table *usage, double *loss,
                  struct caem_error *err);

/* Evaluates m on the split, which must be tokenized. The model is left in
 * the mode it was in. Runs an evaluator to the end. */
int evaluate_task(struct model *m, const struct task *task, const struct evaluate_options *o,
                  struct evaluation *out, struct caem_error *err);

/* An evaluation run one batch at a time, so that a job can report progress,
 * pause and stop between batches. The teacher-forced loss is computed over
 * every batch first, then the outputs are generated batch by batch. The
 * model and the task are borrowed. The model is in eval mode inside
 * evaluator_step and in its own mode between steps. */
struct evaluator;

/* Checks the options and the split as evaluate_task does and sets up the
 * run; no batch runs yet. */
int evaluator_create(struct evaluator **out, struct model *m, const struct task *task,
                     const struct evaluate_options *o, struct caem_error *err);

/* Runs the next batch. Returns 0 when batches remain, 1 after the last one,
 * and -1 on failure, after which the evaluator takes no more steps. */
int evaluator_step(struct evaluator *ev, struct caem_error *err);

/* Batches done and in all (both phases), and seconds spent in steps. */
void evaluator_progress(const struct evaluator *ev, long *done, long *total, double *seconds);

/* The usage counted so far. */
const struct usage_table *evaluator_usage(const struct evaluator *ev);

/* Moves the result into out once the last step has run; fails before. */
int evaluator_finish(struct evaluator *ev, struct evaluation *out, struct caem_error *err);

/* Frees the evaluator and a result not taken by evaluator_finish. It does
 * not touch the model, which may be gone by then. Safe on NULL. */
void evaluator_free(struct evaluator *ev);

void evaluation_free(struct evaluation *e);

/* Decodes one generated row into text: EOS ends it, and padding and ids the
 * tokenizer does not have are left out. The caller frees *text. */
int evaluate_decode_output(const struct tokenizer *tok, const int32_t *ids, int length,
                           int32_t eos, int32_t pad, char **text, struct caem_error *err);

/* Appends one row per figure, and one for the loss, to the results files
 * PREFIX.csv and PREFIX.jsonl (results.h). */
int evaluation_append_results(const char *prefix, const char *model_name,
                              const struct task *task, long step,
                              const struct evaluation *e, struct caem_error *err);

#endif
