#include "task.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "rng.h"

/* Size of the buffer a line parser fills with the reason it rejected a line. */
#define REASON_MAX 256

const char *task_split_name(enum task_split_kind kind)
{
    switch (kind) {
    case TASK_SPLIT_TRAIN: return "train";
    case TASK_SPLIT_VALIDATION: return "validation";
    case TASK_SPLIT_TEST: return "test";
    default: return "unknown";
    }
}

const char *task_metric_name(enum task_metric metric)
{
    switch (metric) {
    case TASK_METRIC_ACCURACY: return "accuracy";
    case TASK_METRIC_SQUAD: return "squad";
    case TASK_METRIC_ROUGE: return "rouge";
    default: return "unknown";
    }
}

/* ---- token ids ---- */

static int check_max_lengths(int max_input_length, int max_target_length,
                             struct caem_error *err)
{
    if (max_input_length < 2)
        return caem_fail(err, "maximum input length %d is invalid: expected at least 2 "
                              "(one token and EOS)", max_input_length);
    if (max_target_length < 2)
        return caem_fail(err, "maximum target length %d is invalid: expected at least 2 "
                              "(one token and EOS)", max_target_length);
    return 0;
}

int task_tokens_init(struct task_tokens *t, int max_input_length, int max_target_length,
                     int32_t eos_id, int32_t pad_id, int32_t decoder_start_id,
                     struct caem_error *err)
{
    memset(t, 0, sizeof *t);
    if (check_max_lengths(max_input_length, max_target_length, err) != 0)
        return -1;
    t->max_input_length = max_input_length;
    t->max_target_length = max_target_length;
    t->eos_id = eos_id;
    t->pad_id = pad_id;
    t->decoder_start_id = decoder_start_id;
    t->input_offsets = caem_calloc(1, sizeof *t->input_offsets, "input offsets", err);
    t->target_offsets = caem_calloc(1, sizeof *t->target_offsets, "target offsets", err);
    if (t->input_offsets == NULL || t->target_offsets == NULL) {
        task_tokens_free(t);
        return -1;
    }
    t->capacity = 1;
    return 0;
}

void task_tokens_free(struct task_tokens *t)
{
    if (t == NULL)
        return;
    free(t->input_ids);
    free(t->input_offsets);
    free(t->target_ids);
    free(t->target_offsets);
    memset(t, 0, sizeof *t);
}

/* Makes room for `extra` more ids in *ids, doubling the capacity. */
static int ids_reserve(int32_t **ids, size_t *capacity, size_t used, size_t extra,
                       const char *what, struct caem_error *err)
{
    if (used + extra <= *capacity)
        return 0;
    size_t grown = *capacity > 0 ? *capacity : 1024;
    while (grown < used + extra)
        grown *= 2;
    int32_t *p = realloc(*ids, grown * sizeof *p);
    if (p == NULL)
        return caem_fail(err, "out of memory: %zu %s ids", grown, what);
    *ids = p;
    *capacity = grown;
    return 0;
}

/* Makes room for one more example in the offset arrays. */
static int offsets_reserve(struct task_tokens *t, struct caem_error *err)
{
    if (t->count + 1 < t->capacity)
        return 0;
    long grown = 2 * t->capacity + 1;
    size_t *inputs = realloc(t->input_offsets, (size_t)grown * sizeof *inputs);
    if (inputs == NULL)
        return caem_fail(err, "out of memory: offsets of %ld examples", grown);
    t->input_offsets = inputs;
    size_t *targets = realloc(t->target_offsets, (size_t)grown * sizeof *targets);
    if (targets == NULL)
        return caem_fail(err, "out of memory: offsets of %ld examples", grown);
    t->target_offsets = targets;
    t->capacity = grown;
    return 0;
}

/* Copies at most max_length - 1 ids and EOS to the end of ids, where room must
 * be reserved. Returns 1 when ids were cut. */
static int sequence_append(int32_t *ids, size_t *used, const int32_t *source, size_t length,
                           int max_length, int32_t eos_id)
{
    size_t kept = length < (size_t)max_length - 1 ? length : (size_t)max_length - 1;
    if (kept > 0)
        memcpy(ids + *used, source, kept * sizeof *ids);
    ids[*used + kept] = eos_id;
    *used += kept + 1;
    return kept < length;
}

int task_tokens_append(struct task_tokens *t, const int32_t *input, size_t input_length,
                       const int32_t *target, size_t target_length, struct caem_error *err)
{
    size_t input_used = t->input_offsets[t->count];
    size_t target_used = t->target_offsets[t->count];
    if (offsets_reserve(t, err) != 0 ||
        ids_reserve(&t->input_ids, &t->input_capacity, input_used,
                    (size_t)t->max_input_length, "input", err) != 0 ||
        ids_reserve(&t->target_ids, &t->target_capacity, target_used,
                    (size_t)t->max_target_length, "target", err) != 0)
        return -1;

    t->inputs_truncated += sequence_append(t->input_ids, &input_used, input, input_length,
                                           t->max_input_length, t->eos_id);
    t->targets_truncated += sequence_append(t->target_ids, &target_used, target,
                                            target_length, t->max_target_length, t->eos_id);
    t->count++;
    t->input_offsets[t->count] = input_used;
    t->target_offsets[t->count] = target_used;
    return 0;
}

int task_tokens_input_length(const struct task_tokens *t, long i)
{
    return (int)(t->input_offsets[i + 1] - t->input_offsets[i]);
}

int task_tokens_target_length(const struct task_tokens *t, long i)
{
    return (int)(t->target_offsets[i + 1] - t->target_offsets[i]);
}

/* ---- tasks ---- */

int task_init(struct task *t, const char *name, enum task_metric metric,
              const struct tokenizer *tokenizer, int max_input_length, int max_target_length,
              struct caem_error *err)
{
    memset(t, 0, sizeof *t);
    if (name == NULL || name[0] == '\0')
        return caem_fail(err, "task name is missing");
    if (metric < TASK_METRIC_ACCURACY || metric > TASK_METRIC_ROUGE)
        return caem_fail(err, "task %s: metric %d is invalid", name, (int)metric);
    if (check_max_lengths(max_input_length, max_target_length, err) != 0)
        return caem_fail_prefix(err, "task %s", name);
    size_t length = strlen(name);
    t->name = caem_malloc(length + 1, "task name", err);
    if (t->name == NULL)
        return -1;
    memcpy(t->name, name, length + 1);
    t->metric = metric;
    t->tokenizer = tokenizer;
    t->max_input_length = max_input_length;
    t->max_target_length = max_target_length;
    return 0;
}

static void split_clear(struct task_split *s)
{
    dataset_free(&s->data);
    task_tokens_free(&s->tokens);
    memset(s, 0, sizeof *s);
}

void task_free(struct task *t)
{
    if (t == NULL)
        return;
    for (int k = 0; k < TASK_SPLIT_COUNT; k++)
        split_clear(&t->splits[k]);
    free(t->name);
    free(t->prompt);
    memset(t, 0, sizeof *t);
}

int task_set_prompt(struct task *t, const char *prompt, struct caem_error *err)
{
    char *copy = NULL;
    if (prompt != NULL) {
        copy = strdup(prompt);
        if (copy == NULL)
            return caem_fail(err, "task %s: out of memory for the prompt", t->name);
    }
    free(t->prompt);
    t->prompt = copy;
    /* the cached ids were made with the old prompt */
    for (int k = 0; k < TASK_SPLIT_COUNT; k++) {
        task_tokens_free(&t->splits[k].tokens);
        t->splits[k].tokenized = 0;
    }
    return 0;
}

const char *task_default_prompt(const char *name)
{
    if (strcmp(name, "summarization") == 0)
        return "Summarize: ";
    if (strcmp(name, "classification") == 0)
        return "Classify: ";
    return NULL;
}

void task_set_split(struct task *t, enum task_split_kind kind, struct dataset *data)
{
    struct task_split *s = &t->splits[kind];
    split_clear(s);
    s->data = *data;
    data->examples = NULL;
    data->count = 0;
}

/* ---- JSON-lines task files ---- */

/* Growable array of examples. */
struct example_list {
    struct dataset set;
    long capacity;
};

static char *text_copy(const char *s, struct caem_error *err)
{
    size_t length = strlen(s);
    char *copy = caem_malloc(length + 1, "example text", err);
    if (copy != NULL)
        memcpy(copy, s, length + 1);
    return copy;
}

static void example_release(struct example *ex)
{
    free(ex->input);
    free(ex->target);
    for (int i = 0; i < ex->answer_count; i++)
        free(ex->answers[i]);
    free(ex->answers);
    free(ex->id);
}

/* Copies the texts into a new example at the end of the list. */
static int example_list_add(struct example_list *list, const char *input, const char *target,
                            const char *const *answers, int answer_count, const char *id,
                            struct caem_error *err)
{
    if (list->set.count == list->capacity) {
        long capacity = list->capacity > 0 ? 2 * list->capacity : 256;
        struct example *grown = realloc(list->set.examples, (size_t)capacity * sizeof *grown);
        if (grown == NULL)
            return caem_fail(err, "out of memory: %ld examples", capacity);
        list->set.examples = grown;
        list->capacity = capacity;
    }

    struct example ex = { 0 };
    ex.input = text_copy(input, err);
    ex.target = text_copy(target, err);
    ex.answers = caem_calloc((size_t)answer_count, sizeof *ex.answers, "gold answers", err);
    int failed = ex.input == NULL || ex.target == NULL || ex.answers == NULL;
    if (ex.answers != NULL) {
        ex.answer_count = answer_count;
        for (int i = 0; i < answer_count; i++)
            failed |= (ex.answers[i] = text_copy(answers[i], err)) == NULL;
    }
    if (id != NULL)
        failed |= (ex.id = text_copy(id, err)) == NULL;
    if (failed) {
        example_release(&ex);
        return -1;
    }
    list->set.examples[list->set.count++] = ex;
    return 0;
}

static int text_is_blank(const char *s)
{
    for (; *s != '\0'; s++)
        if (*s != ' ' && *s != '\t' && *s != '\n' && *s != '\r' && *s != '\v' && *s != '\f')
            return 0;
    return 1;
}

/* Reads a required non-blank string member, or fills reason. */
static const char *member_text(json_t *object, const char *key, char reason[REASON_MAX])
{
    json_t *value = json_object_get(object, key);
    if (value == NULL)
        snprintf(reason, REASON_MAX, "missing \"%s\"", key);
    else if (!json_is_string(value))
        snprintf(reason, REASON_MAX, "\"%s\" is not a string", key);
    else if (text_is_blank(json_string_value(value)))
        snprintf(reason, REASON_MAX, "\"%s\" is empty", key);
    else
        return json_string_value(value);
    return NULL;
}

/* Checks "answers" and collects its texts into *texts (caller frees), or
 * fills reason. Without "answers" the target is the only answer. */
static int read_answers(json_t *root, const char *target, const char ***texts, int *count,
                        char reason[REASON_MAX], struct caem_error *err)
{
    json_t *answers = json_object_get(root, "answers");
    size_t n = answers == NULL ? 1 : json_array_size(answers);
    if (answers != NULL && (!json_is_array(answers) || n == 0)) {
        snprintf(reason, REASON_MAX, "\"answers\" is not a non-empty array");
        return 1;
    }
    if (n > 1000000) {
        snprintf(reason, REASON_MAX, "\"answers\" has %zu entries, more than 1000000", n);
        return 1;
    }
    *texts = caem_calloc(n, sizeof **texts, "gold answers", err);
    if (*texts == NULL)
        return -1;
    *count = (int)n;
    if (answers == NULL) {
        (*texts)[0] = target;
        return 0;
    }
    for (size_t i = 0; i < n; i++) {
        json_t *answer = json_array_get(answers, i);
        if (!json_is_string(answer)) {
            snprintf(reason, REASON_MAX, "\"answers\"[%zu] is not a string", i);
            return 1;
        }
        (*texts)[i] = json_string_value(answer);
    }
    if (strcmp((*texts)[0], target) != 0) {
        snprintf(reason, REASON_MAX, "\"answers\"[0] \"%.60s\" differs from \"target\"",
                 (*texts)[0]);
        return 1;
    }
    return 0;
}

/* Checks "answer_start": absent, one non-negative integer, or one per answer. */
static int answer_start_valid(json_t *root, int answer_count, char reason[REASON_MAX])
{
    json_t *start = json_object_get(root, "answer_start");
    if (start == NULL || (json_is_integer(start) && json_integer_value(start) >= 0))
        return 1;
    if (!json_is_array(start)) {
        snprintf(reason, REASON_MAX,
                 "\"answer_start\" is neither a non-negative integer nor an array");
        return 0;
    }
    if (json_array_size(start) != (size_t)answer_count) {
        snprintf(reason, REASON_MAX, "\"answer_start\" has %zu entries for %d answers",
                 json_array_size(start), answer_count);
        return 0;
    }
    for (size_t i = 0; i < json_array_size(start); i++) {
        json_t *value = json_array_get(start, i);
        if (!json_is_integer(value) || json_integer_value(value) < 0) {
            snprintf(reason, REASON_MAX,
                     "\"answer_start\"[%zu] is not a non-negative integer", i);
            return 0;
        }
    }
    return 1;
}

/* Parses one line into the list. Returns 0 when added, 1 when malformed
 * (reason filled) and -1 on a failure that ends the load. */
static int jsonl_parse_line(struct example_list *list, const char *line, size_t length,
                            char reason[REASON_MAX], struct caem_error *err)
{
    json_error_t json_err;
    json_t *root = json_loadb(line, length, 0, &json_err);
    if (root == NULL) {
        snprintf(reason, REASON_MAX, "invalid JSON at column %d: %s", json_err.column,
                 json_err.text);
        return 1;
    }

    int result = 1;
    const char *input = NULL, *target = NULL;
    const char **answers = NULL;
    int answer_count = 0;
    json_t *id_value = json_object_get(root, "id");
    char id[64];
    if (!json_is_object(root)) {
        snprintf(reason, REASON_MAX, "not a JSON object");
    } else if ((input = member_text(root, "input", reason)) == NULL ||
               (target = member_text(root, "target", reason)) == NULL) {
        /* reason filled */
    } else if ((result = read_answers(root, target, &answers, &answer_count, reason, err)) != 0) {
        /* reason or err filled */
    } else if (!answer_start_valid(root, answer_count, reason)) {
        result = 1;
    } else if (id_value != NULL && !json_is_string(id_value) && !json_is_integer(id_value)) {
        snprintf(reason, REASON_MAX, "\"id\" is neither a string nor an integer");
        result = 1;
    } else {
        if (json_is_integer(id_value))
            snprintf(id, sizeof id, "%" JSON_INTEGER_FORMAT, json_integer_value(id_value));
        else if (json_is_string(id_value))
            snprintf(id, sizeof id, "%s", json_string_value(id_value));
        result = example_list_add(list, input, target, answers, answer_count,
                                  id_value != NULL ? id : NULL, err);
    }
    free(answers);
    json_decref(root);
    return result;
}

/* Counts a skipped line and keeps the reason of the first one. */
static void report_skip(struct dataset_report *report, const char *path, long line,
                        const char *reason)
{
    report->skipped++;
    if (report->first_bad_record != 0)
        return;
    report->first_bad_record = line;
    snprintf(report->first_error, sizeof report->first_error, "%s:%ld: %s", path, line,
             reason);
}

int task_load_jsonl(struct dataset *out, const char *path, struct dataset_report *report,
                    struct caem_error *err)
{
    if (out == NULL || report == NULL || path == NULL)
        return caem_fail(err, "task_load_jsonl: the dataset, the path and the report "
                              "must not be NULL");
    memset(out, 0, sizeof *out);
    memset(report, 0, sizeof *report);
    FILE *f = fopen(path, "rb");
    if (f == NULL)
        return caem_fail(err, "failed to open task file %s: %s", path, strerror(errno));

    struct example_list list = { { NULL, 0 }, 0 };
    char *line = NULL;
    size_t capacity = 0;
    ssize_t read_length;
    long number = 0;
    int status = 0;
    while ((read_length = getline(&line, &capacity, f)) != -1) {
        size_t length = (size_t)read_length;
        number++;

        length = dataset_trim_line(line, length, number == 1);
        const char *text = line;

        char reason[REASON_MAX];
        int result;
        if (text_is_blank(text) && strlen(text) == length) {
            snprintf(reason, sizeof reason, "empty line");
            result = 1;
        } else {
            result = jsonl_parse_line(&list, text, length, reason, err);
        }
        if (result < 0) {
            caem_fail_prefix(err, "%s:%ld", path, number);
            status = -1;
            break;
        }
        if (result == 1)
            report_skip(report, path, number, reason);
    }
    if (status == 0 && ferror(f))
        status = caem_fail(err, "failed to read task file %s: %s", path, strerror(errno));
    free(line);
    fclose(f);
    if (status != 0) {
        dataset_free(&list.set);
        return -1;
    }
    *out = list.set;
    report->loaded = list.set.count;
    return 0;
}

int task_load_jsonl_split(struct task *t, enum task_split_kind kind, const char *path,
                          struct dataset_report *report, struct caem_error *err)
{
    if (kind < 0 || kind >= TASK_SPLIT_COUNT)
        return caem_fail(err, "task %s: split %d is invalid", t->name, (int)kind);
    struct dataset data;
    if (task_load_jsonl(&data, path, report, err) != 0)
        return caem_fail_prefix(err, "task %s, %s split", t->name, task_split_name(kind));
    task_set_split(t, kind, &data);
    t->splits[kind].report = *report;
    return 0;
}

/* ---- tokenization ---- */

/* Ids of one example, encoded on its own so that examples can run in parallel. */
struct encoded_example {
    int32_t *input, *target;
    size_t input_length, target_length;
};

static int encode_example(const struct tokenizer *tokenizer, const char *prompt,
                          const struct example *ex, struct encoded_example *out,
                          struct caem_error *err)
{
    const char *input = ex->input;
    char *prompted = NULL;
    if (prompt != NULL) {
        size_t prompt_length = strlen(prompt), input_length = strlen(ex->input);
        prompted = caem_malloc(prompt_length + input_length + 1, "a prompted input", err);
        if (prompted == NULL)
            return -1;
        memcpy(prompted, prompt, prompt_length);
        memcpy(prompted + prompt_length, ex->input, input_length + 1);
        input = prompted;
    }
    int status = tokenizer_encode(tokenizer, input, strlen(input), &out->input,
                                  &out->input_length, err);
    free(prompted);
    if (status != 0)
        return caem_fail_prefix(err, "input");
    if (tokenizer_encode(tokenizer, ex->target, strlen(ex->target), &out->target,
                         &out->target_length, err) != 0)
        return caem_fail_prefix(err, "target");
    return 0;
}

int task_tokenize_split(struct task *t, enum task_split_kind kind, struct caem_error *err)
{
    if (kind < 0 || kind >= TASK_SPLIT_COUNT)
        return caem_fail(err, "task %s: split %d is invalid", t->name, (int)kind);
    struct task_split *s = &t->splits[kind];
    const char *split_name = task_split_name(kind);
    if (s->tokenized)
        return 0;
    if (t->tokenizer == NULL)
        return caem_fail(err, "task %s: no tokenizer to encode the %s split", t->name,
                         split_name);
    struct tokenizer_special_ids special = tokenizer_special_ids(t->tokenizer);
    if (special.eos_id < 0 || special.pad_id < 0)
        return caem_fail(err, "task %s: the tokenizer has no %s id; train it with "
                              "spm_train --pad_id=0 --eos_id=1 as T5 does",
                         t->name, special.eos_id < 0 ? "EOS" : "padding");

    /* encode every example in parallel, then append them in order */
    long count = s->data.count;
    struct encoded_example *encoded =
        caem_calloc((size_t)count, sizeof *encoded, "encoded examples", err);
    if (encoded == NULL)
        return -1;
    long failed_example = -1;
    struct caem_error first_error = { { 0 } };
#pragma omp parallel for schedule(dynamic, 64)
    for (long i = 0; i < count; i++) {
        struct caem_error example_error;
        if (encode_example(t->tokenizer, t->prompt, &s->data.examples[i], &encoded[i],
                           &example_error) != 0) {
#pragma omp critical(task_tokenize_error)
            if (failed_example < 0 || i < failed_example) {
                failed_example = i;
                first_error = example_error;
            }
        }
    }

    struct task_tokens tokens;
    int status = 0;
    if (failed_example >= 0) {
        if (err != NULL)
            *err = first_error;
        status = caem_fail_prefix(err, "task %s, %s split, example %ld", t->name, split_name,
                                  failed_example + 1);
    } else {
        status = task_tokens_init(&tokens, t->max_input_length, t->max_target_length,
                                  special.eos_id, special.pad_id, special.pad_id, err);
    }
    for (long i = 0; status == 0 && i < count; i++)
        status = task_tokens_append(&tokens, encoded[i].input, encoded[i].input_length,
                                    encoded[i].target, encoded[i].target_length, err);
    for (long i = 0; i < count; i++) {
        free(encoded[i].input);
        free(encoded[i].target);
    }
    free(encoded);
    if (status != 0) {
        if (failed_example < 0)
            task_tokens_free(&tokens);
        return -1;
    }
    s->tokens = tokens;
    s->tokenized = 1;
    return 0;
}

int task_tokenize(struct task *t, struct caem_error *err)
{
    for (int k = 0; k < TASK_SPLIT_COUNT; k++)
        if (t->splits[k].data.count > 0 &&
            task_tokenize_split(t, (enum task_split_kind)k, err) != 0)
            return -1;
    return 0;
}

/* ---- batches ---- */

/* Returns a draw in [0, n) from the epoch's stream. Each Philox block gives
 * two draws, `lane` 0 from words 0-1 and lane 1 from words 2-3, so the two
 * shuffles of an epoch never share words. The 64-bit modulo has a bias below
 * n / 2^64. */
static uint64_t epoch_draw(uint64_t seed, uint32_t epoch, int lane, uint64_t index, uint64_t n)
{
    uint32_t words[4];
    philox4x32(seed, ((uint64_t)epoch << 32) | index, words);
    uint64_t value = ((uint64_t)words[2 * lane] << 32) | words[2 * lane + 1];
    return value % n;
}

/* Fisher-Yates shuffle of values[0..n) with the epoch's stream. */
static void shuffle_longs(long *values, long n, uint64_t seed, uint32_t epoch, int lane)
{
    for (long i = n - 1; i > 0; i--) {
        long j = (long)epoch_draw(seed, epoch, lane, (uint64_t)i, (uint64_t)i + 1);
        long swap = values[i];
        values[i] = values[j];
        values[j] = swap;
    }
}

/* Sort key of one example in the bucketed order. */
struct length_key {
    int input_length, target_length;
    long rank; /* position in the epoch's shuffle, so ties fall in a random order */
    long example;
};

static int length_key_compare(const void *a, const void *b)
{
    const struct length_key *x = a, *y = b;
    if (x->input_length != y->input_length)
        return x->input_length < y->input_length ? -1 : 1;
    if (x->target_length != y->target_length)
        return x->target_length < y->target_length ? -1 : 1;
    return (x->rank > y->rank) - (x->rank < y->rank);
}

/* Sorts the shuffled order by length, keeping the shuffle among equal lengths. */
static int sort_by_length(long *order, const struct task_tokens *tokens,
                          struct caem_error *err)
{
    long n = tokens->count;
    struct length_key *keys = caem_malloc((size_t)n * sizeof *keys, "length keys", err);
    if (keys == NULL)
        return -1;
    for (long r = 0; r < n; r++) {
        keys[r].input_length = task_tokens_input_length(tokens, order[r]);
        keys[r].target_length = task_tokens_target_length(tokens, order[r]);
        keys[r].rank = r;
        keys[r].example = order[r];
    }
    qsort(keys, (size_t)n, sizeof *keys, length_key_compare);
    for (long r = 0; r < n; r++)
        order[r] = keys[r].example;
    free(keys);
    return 0;
}

/* Allocates the row buffers for the longest sequences of the set. */
static int batches_allocate(struct task_batches *it, struct caem_error *err)
{
    const struct task_tokens *tokens = it->tokens;
    int longest_input = 1, longest_target = 1;
    for (long i = 0; i < tokens->count; i++) {
        int input = task_tokens_input_length(tokens, i);
        int target = task_tokens_target_length(tokens, i);
        longest_input = input > longest_input ? input : longest_input;
        longest_target = target > longest_target ? target : longest_target;
    }
    size_t input_size = (size_t)it->batch_size * (size_t)longest_input;
    size_t target_size = (size_t)it->batch_size * (size_t)longest_target;
    it->input_ids = caem_malloc(input_size * sizeof(int32_t), "batch input ids", err);
    it->attention_mask = caem_malloc(input_size * sizeof(int32_t), "batch mask", err);
    it->decoder_input_ids = caem_malloc(target_size * sizeof(int32_t), "batch decoder ids", err);
    it->labels = caem_malloc(target_size * sizeof(int32_t), "batch labels", err);
    if (it->input_ids == NULL || it->attention_mask == NULL || it->decoder_input_ids == NULL ||
        it->labels == NULL)
        return -1;
    return 0;
}

int task_batches_begin(struct task_batches *it, const struct task_tokens *tokens,
                       int batch_size, enum task_batch_order order, uint64_t seed,
                       uint32_t epoch, struct caem_error *err)
{
    memset(it, 0, sizeof *it);
    if (batch_size < 1)
        return caem_fail(err, "batch size %d is invalid: expected at least 1", batch_size);
    if (order < TASK_BATCHES_BUCKETED || order > TASK_BATCHES_SEQUENTIAL)
        return caem_fail(err, "batch order %d is invalid", (int)order);
    if ((uint64_t)tokens->count > UINT32_MAX)
        return caem_fail(err, "%ld examples are more than the shuffle's limit of %u",
                         tokens->count, UINT32_MAX);
    it->tokens = tokens;
    it->batch_size = batch_size;
    long n = tokens->count;
    it->batch_count = (n + batch_size - 1) / batch_size;
    it->order = caem_malloc((size_t)n * sizeof *it->order, "batch order", err);
    it->batch_starts = caem_malloc((size_t)it->batch_count * sizeof *it->batch_starts,
                                   "batch starts", err);
    if (it->order == NULL || it->batch_starts == NULL || batches_allocate(it, err) != 0)
        goto fail;

    /* lay out the examples: shuffled, then sorted by length when bucketed */
    for (long i = 0; i < n; i++)
        it->order[i] = i;
    if (order != TASK_BATCHES_SEQUENTIAL)
        shuffle_longs(it->order, n, seed, epoch, 0);
    if (order == TASK_BATCHES_BUCKETED && sort_by_length(it->order, tokens, err) != 0)
        goto fail;

    /* cut into batches, then shuffle which batch comes when */
    for (long k = 0; k < it->batch_count; k++)
        it->batch_starts[k] = k * batch_size;
    if (order == TASK_BATCHES_BUCKETED)
        shuffle_longs(it->batch_starts, it->batch_count, seed, epoch, 1);
    return 0;

fail:
    task_batches_end(it);
    return -1;
}

/* Fills one row of the batch from example `example`. */
static void batch_fill_row(struct task_batches *it, int row, long example, int te, int td)
{
    const struct task_tokens *tokens = it->tokens;
    const int32_t *input = tokens->input_ids + tokens->input_offsets[example];
    const int32_t *target = tokens->target_ids + tokens->target_offsets[example];
    int input_length = task_tokens_input_length(tokens, example);
    int target_length = task_tokens_target_length(tokens, example);
    int32_t *ids = it->input_ids + (size_t)row * te;
    int32_t *mask = it->attention_mask + (size_t)row * te;
    int32_t *labels = it->labels + (size_t)row * td;
    int32_t *decoder = it->decoder_input_ids + (size_t)row * td;

    for (int j = 0; j < te; j++) {
        ids[j] = j < input_length ? input[j] : tokens->pad_id;
        mask[j] = j < input_length;
    }
    for (int j = 0; j < td; j++)
        labels[j] = j < target_length ? target[j] : LABEL_IGNORE;

    /* teacher forcing: decoder input j is label j - 1 */
    decoder[0] = tokens->decoder_start_id;
    for (int j = 1; j < td; j++)
        decoder[j] = labels[j - 1] == LABEL_IGNORE ? tokens->pad_id : labels[j - 1];

    it->input_tokens += input_length;
    it->input_padding += te - input_length;
    it->target_tokens += target_length;
    it->target_padding += td - target_length;
}

int task_batches_next(struct task_batches *it, struct batch *out)
{
    if (it->next_batch >= it->batch_count)
        return 0;
    long start = it->batch_starts[it->next_batch++];
    long rows = it->tokens->count - start;
    rows = rows < it->batch_size ? rows : it->batch_size;
    const long *examples = it->order + start;

    /* pad to the longest sequences of this batch only */
    int te = 1, td = 1;
    for (long r = 0; r < rows; r++) {
        int input = task_tokens_input_length(it->tokens, examples[r]);
        int target = task_tokens_target_length(it->tokens, examples[r]);
        te = input > te ? input : te;
        td = target > td ? target : td;
    }
    for (long r = 0; r < rows; r++)
        batch_fill_row(it, (int)r, examples[r], te, td);

    it->examples = examples;
    out->batch_size = (int)rows;
    out->encoder_length = te;
    out->decoder_length = td;
    out->input_ids = it->input_ids;
    out->attention_mask = it->attention_mask;
    out->decoder_input_ids = it->decoder_input_ids;
    out->labels = it->labels;
    return 1;
}

void task_batches_end(struct task_batches *it)
{
    if (it == NULL)
        return;
    free(it->order);
    free(it->batch_starts);
    free(it->input_ids);
    free(it->attention_mask);
    free(it->decoder_input_ids);
    free(it->labels);
    memset(it, 0, sizeof *it);
}
