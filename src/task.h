/* Tasks: named sets of (input, target) examples with a metric, splits, their
 * token ids and length-bucketed batches.
 *
 * A task owns up to three splits (train, validation, test), each a struct
 * dataset. Tokenizing a split encodes every input and target once with the
 * task's tokenizer and stores the ids in a struct task_tokens. As T5's
 * tokenizer does with truncation, a sequence longer than the maximum length
 * keeps its first (maximum - 1) tokens, and EOS is appended to every
 * sequence, so the EOS is always the last id.
 *
 * Batches are padded to the longest sequence in the batch, never to the
 * maximum length. In the bucketed order the examples of a split are sorted
 * by length and cut into batches of B examples. The order of the batches is
 * shuffled per epoch. So a batch contains sequences of similar length, and
 * the padding stays small. Shuffles are Philox streams of (seed, epoch),
 * so the same seed and epoch give the same batches on every run.
 *
 * Dimension names as in model.h: B batch, Te encoder tokens, Td decoder
 * tokens. */
#ifndef CAEM_TASK_H
#define CAEM_TASK_H

#include <stddef.h>
#include <stdint.h>

#include "dataset.h"
#include "error.h"
#include "model.h"
#include "tokenizer.h"

/* Metric that scores the generated outputs of a task. */
enum task_metric {
    TASK_METRIC_ACCURACY, /* exact match of the normalized label string */
    TASK_METRIC_SQUAD,    /* SQuAD v1.1 exact match and F1 against every gold answer */
    TASK_METRIC_ROUGE,    /* ROUGE-1/2/L F-measure */
};

enum task_split_kind {
    TASK_SPLIT_TRAIN,
    TASK_SPLIT_VALIDATION,
    TASK_SPLIT_TEST,
    TASK_SPLIT_COUNT,
};

/* Returns "train", "validation" or "test", or "unknown" when out of range. */
const char *task_split_name(enum task_split_kind kind);

/* Returns "accuracy", "squad" or "rouge", or "unknown" when out of range. */
const char *task_metric_name(enum task_metric metric);

/* Token ids of the examples of one split, stored back to back. The input of
 * example i is input_ids[input_offsets[i] .. input_offsets[i + 1]), and its
 * target is stored likewise. Every sequence ends with eos_id and is at most
 * max_input_length or max_target_length ids long. */
struct task_tokens {
    long count;
    int32_t *input_ids;
    size_t *input_offsets;  /* count + 1 entries */
    int32_t *target_ids;
    size_t *target_offsets; /* count + 1 entries */
    int max_input_length;   /* ids, EOS included */
    int max_target_length;
    int32_t eos_id;
    int32_t pad_id;           /* fills input_ids and decoder_input_ids past a sequence */
    int32_t decoder_start_id; /* first decoder input of every row */
    long inputs_truncated;    /* examples whose input lost tokens to the maximum */
    long targets_truncated;
    long capacity;            /* examples the offset arrays have room for */
    size_t input_capacity;    /* ids input_ids has room for */
    size_t target_capacity;
};

/* Sets up an empty set of sequences. Both maximum lengths must be at least 2
 * (one text token and EOS). */
int task_tokens_init(struct task_tokens *t, int max_input_length, int max_target_length,
                     int32_t eos_id, int32_t pad_id, int32_t decoder_start_id,
                     struct caem_error *err);

/* Appends one example from ids without EOS: each sequence is cut to its
 * maximum length minus one, EOS is appended, and a cut counts the example in
 * inputs_truncated or targets_truncated. */
int task_tokens_append(struct task_tokens *t, const int32_t *input, size_t input_length,
                       const int32_t *target, size_t target_length, struct caem_error *err);

/* Lengths of example i's sequences, EOS included. */
int task_tokens_input_length(const struct task_tokens *t, long i);
int task_tokens_target_length(const struct task_tokens *t, long i);

/* Frees the ids and leaves t empty, keeping nothing. Safe on a zeroed struct. */
void task_tokens_free(struct task_tokens *t);

struct task_split {
    struct dataset data;          /* owned */
    struct dataset_report report; /* of the file load; zero when set from memory */
    struct task_tokens tokens;    /* valid when tokenized is 1 */
    int tokenized;
};

/* A task. The tokenizer is borrowed and must outlive the task. */
struct task {
    char *name;
    /* Text put before every input when it is tokenized, such as "Classify: ".
     * NULL for inputs that carry their prompt already, as the AG News, SQuAD
     * and XSum loaders and the default corpus's QA task write them. */
    char *prompt;
    enum task_metric metric;
    const struct tokenizer *tokenizer;
    int max_input_length;  /* ids, EOS included */
    int max_target_length;
    struct task_split splits[TASK_SPLIT_COUNT];
};

/* Sets up a task with empty splits. The tokenizer may be NULL until the task
 * is tokenized. Maximum lengths as for task_tokens_init. */
int task_init(struct task *t, const char *name, enum task_metric metric,
              const struct tokenizer *tokenizer, int max_input_length, int max_target_length,
              struct caem_error *err);

/* Sets the prompt put before every input (NULL for none). Drops the token
 * caches of the splits, since their ids change. */
int task_set_prompt(struct task *t, const char *prompt, struct caem_error *err);

/* Returns the prompt of the default corpus's task `name` ("Summarize: " for
 * summarization, "Classify: " for classification), or NULL. */
const char *task_default_prompt(const char *name);

/* Frees the splits, the name and the prompt. Safe on a zeroed struct. */
void task_free(struct task *t);

/* Moves the examples of *data into a split, leaving *data empty. The split's
 * earlier examples and token ids are freed. */
void task_set_split(struct task *t, enum task_split_kind kind, struct dataset *data);

/* Loads a JSON-lines task file, one object per line:
 *
 *   {"input": str, "target": str, "answers": [str, ...], "answer_start": int or [int, ...],
 *    "id": str or int}
 *
 * "input" and "target" are required and must not be blank. "answers" is
 * optional. When present, it is a non-empty array of strings whose first
 * entry equals "target", as struct example requires. Without it the target is
 * the only answer. "answer_start" is optional: an integer, or an array with one
 * non-negative integer per answer. It is checked but not kept, because the
 * metrics score answer texts only. Other members are ignored. A malformed
 * line is skipped and counted in the report with its line number and reason.
 * A file that cannot be opened or read is an error naming its path. */
int task_load_jsonl(struct dataset *out, const char *path, struct dataset_report *report,
                    struct caem_error *err);

/* Loads a JSON-lines file (task_load_jsonl) into one split of a task. The
 * report is also kept in the split. On failure the split is unchanged. */
int task_load_jsonl_split(struct task *t, enum task_split_kind kind, const char *path,
                          struct dataset_report *report, struct caem_error *err);

/* Encodes every input and target of a split with the task's tokenizer, once.
 * A split already tokenized is left as it is. EOS and padding ids come from
 * the tokenizer's model, and the decoder starts from the padding id, as in
 * T5. Fails when the tokenizer is NULL or has no EOS or padding id. */
int task_tokenize_split(struct task *t, enum task_split_kind kind, struct caem_error *err);

/* Tokenizes every split that has examples. */
int task_tokenize(struct task *t, struct caem_error *err);

/* Order in which an epoch visits the examples. */
enum task_batch_order {
    /* Sort by input then target length (ties in a random order of the epoch),
     * cut into batches, shuffle the batches. For training. */
    TASK_BATCHES_BUCKETED,
    /* Shuffle the examples, then cut into batches. Padding is much larger,
     * which makes it the reference for what bucketing saves. */
    TASK_BATCHES_SHUFFLED,
    /* Examples in stored order, nothing shuffled. For evaluation. */
    TASK_BATCHES_SEQUENTIAL,
};

/* An epoch of batches over a set of sequences, with the buffers of the
 * current batch. The sequences must stay unchanged while it is in use. */
struct task_batches {
    const struct task_tokens *tokens;
    int batch_size;             /* B; the last batch may be smaller */
    long batch_count;
    long next_batch;            /* batches returned so far */
    long *order;                /* example indices, batch by batch */
    long *batch_starts;         /* batch k's rows are order[batch_starts[k] ..) */
    const long *examples;       /* example index of each row of the current batch */

    /* token and padding positions over the batches returned so far */
    long input_tokens, input_padding;
    long target_tokens, target_padding;

    int32_t *input_ids, *attention_mask, *decoder_input_ids, *labels;
};

/* Starts an epoch over every example of tokens. Shuffled orders depend only
 * on (seed, epoch). */
int task_batches_begin(struct task_batches *it, const struct task_tokens *tokens,
                       int batch_size, enum task_batch_order order, uint64_t seed,
                       uint32_t epoch, struct caem_error *err);

/* Fills out with the next batch and returns 1, or returns 0 at the end of the
 * epoch. The batch points into the iterator's buffers and stays valid until
 * the next call or task_batches_end. Rows are padded to the batch's longest
 * input (Te) and longest target (Td). input_ids are the input then pad_id,
 * attention_mask 1 on ids and 0 on padding, labels the target then
 * LABEL_IGNORE, and decoder_input_ids are the labels shifted right by one
 * with decoder_start_id first and pad_id in place of LABEL_IGNORE. */
int task_batches_next(struct task_batches *it, struct batch *out);

/* Frees the iterator's buffers. Safe on a zeroed struct. */
void task_batches_end(struct task_batches *it);

#endif
