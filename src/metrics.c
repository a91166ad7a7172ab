#include "metrics.h"

#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "python_str.h"

/* A token: length bytes at text, not NUL-terminated. */
struct token {
    const char *text;
    size_t length;
};

/* Tokens pointing into buffer, which the list owns. */
struct token_list {
    char *buffer;
    struct token *tokens;
    size_t count;
};

static void token_list_free(struct token_list *list)
{
    free(list->buffer);
    free(list->tokens);
    memset(list, 0, sizeof *list);
}

/* ---- SQuAD normalization ---- */

/* Python's string.punctuation. */
static int is_ascii_punctuation(int32_t c)
{
    return (c >= '!' && c <= '/') || (c >= ':' && c <= '@') || (c >= '[' && c <= '`') ||
           (c >= '{' && c <= '~');
}

static int is_article(const int32_t *word, size_t length)
{
    if (length == 1)
        return word[0] == 'a';
    if (length == 2)
        return word[0] == 'a' && word[1] == 'n';
    return length == 3 && word[0] == 't' && word[1] == 'h' && word[2] == 'e';
}

/* Replaces every maximal run of word characters that is an article by one
 * space, in place, and returns the new length. A run is what re's
 * \b(a|an|the)\b can match whole, because \b needs a non-word character or
 * the end of the text on both sides. */
static size_t remove_articles(int32_t *chars, size_t count)
{
    size_t out = 0, i = 0;
    while (i < count) {
        if (!python_char_is_word(chars[i])) {
            chars[out++] = chars[i++];
            continue;
        }
        size_t start = i;
        while (i < count && python_char_is_word(chars[i]))
            i++;
        if (is_article(chars + start, i - start)) {
            chars[out++] = ' ';
        } else {
            memmove(chars + out, chars + start, (i - start) * sizeof *chars);
            out += i - start;
        }
    }
    return out;
}

/* ' '.join(text.split()) in place. Returns the new length. */
static size_t squeeze_whitespace(int32_t *chars, size_t count)
{
    size_t out = 0, i = 0;
    while (i < count) {
        while (i < count && python_char_is_space(chars[i]))
            i++;
        if (i == count)
            break;
        if (out > 0)
            chars[out++] = ' ';
        while (i < count && !python_char_is_space(chars[i]))
            chars[out++] = chars[i++];
    }
    return out;
}

static char *normalize_answer(const char *text, struct caem_error *err)
{
    size_t count, lower_count;
    int32_t *chars = python_str_decode(text, strlen(text), &count, err);
    if (chars == NULL)
        return NULL;
    int32_t *lower = python_str_lower(chars, count, &lower_count, err);
    free(chars);
    if (lower == NULL)
        return NULL;
    size_t n = 0;
    for (size_t i = 0; i < lower_count; i++)
        if (!is_ascii_punctuation(lower[i]))
            lower[n++] = lower[i];
    n = remove_articles(lower, n);
    n = squeeze_whitespace(lower, n);
    char *normalized = python_str_encode(lower, n, err);
    free(lower);
    return normalized;
}

char *metric_normalize_answer(const char *text)
{
    return normalize_answer(text, NULL);
}

/* Splits a normalized answer, whose words are separated by single spaces,
 * taking ownership of it. */
static int split_normalized(char *normalized, struct token_list *out, struct caem_error *err)
{
    memset(out, 0, sizeof *out);
    out->buffer = normalized;
    size_t words = normalized[0] != '\0';
    for (const char *p = normalized; *p != '\0'; p++)
        words += *p == ' ';
    out->tokens = caem_malloc(words * sizeof *out->tokens, "answer tokens", err);
    if (out->tokens == NULL) {
        token_list_free(out);
        return -1;
    }
    const char *p = normalized;
    while (*p != '\0') {
        const char *end = strchr(p, ' ');
        size_t length = end != NULL ? (size_t)(end - p) : strlen(p);
        out->tokens[out->count++] = (struct token){ p, length };
        p += length;
        if (*p == ' ')
            p++;
    }
    return 0;
}

/* ---- token overlap ---- */

struct token_slot {
    struct token token;
    size_t position; /* index into the ids being assigned */
};

static int compare_slots(const void *a, const void *b)
{
    const struct token *x = &((const struct token_slot *)a)->token;
    const struct token *y = &((const struct token_slot *)b)->token;
    size_t shorter = x->length < y->length ? x->length : y->length;
    int c = memcmp(x->text, y->text, shorter);
    if (c != 0)
        return c;
    return (x->length > y->length) - (x->length < y->length);
}

/* Numbers the distinct tokens of a and b: ids[0 .. a->count) for a's tokens,
 * then b's, with equal ids for equal tokens. Returns a malloc'd array. */
static uint64_t *token_ids(const struct token_list *a, const struct token_list *b,
                           struct caem_error *err)
{
    size_t total = a->count + b->count;
    uint64_t *ids = caem_malloc(total * sizeof *ids, "token ids", err);
    struct token_slot *slots = caem_malloc(total * sizeof *slots, "token ids", err);
    if (ids == NULL || slots == NULL) {
        free(ids);
        free(slots);
        return NULL;
    }
    for (size_t i = 0; i < a->count; i++)
        slots[i] = (struct token_slot){ a->tokens[i], i };
    for (size_t i = 0; i < b->count; i++)
        slots[a->count + i] = (struct token_slot){ b->tokens[i], a->count + i };
    qsort(slots, total, sizeof *slots, compare_slots);
    uint64_t id = 0;
    for (size_t i = 0; i < total; i++) {
        if (i > 0 && compare_slots(&slots[i - 1], &slots[i]) != 0)
            id++;
        ids[slots[i].position] = id;
    }
    free(slots);
    return ids;
}

static int compare_keys(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return (x > y) - (x < y);
}

/* The n-grams of ids[0 .. count) as keys, n = 1 or 2. Token ids stay below
 * 2^32 because a text of 2^32 tokens would not fit in memory next to its ids. */
static size_t ngram_keys(const uint64_t *ids, size_t count, int n, uint64_t *keys)
{
    if (count < (size_t)n)
        return 0;
    size_t grams = count - (size_t)n + 1;
    for (size_t i = 0; i < grams; i++)
        keys[i] = n == 1 ? ids[i] : (ids[i] << 32) | ids[i + 1];
    return grams;
}

/* Sorts both multisets of keys and returns the size of their intersection:
 * the sum over distinct keys of the smaller count, as collections.Counter's
 * & operator gives. */
static size_t multiset_overlap(uint64_t *a, size_t na, uint64_t *b, size_t nb)
{
    qsort(a, na, sizeof *a, compare_keys);
    qsort(b, nb, sizeof *b, compare_keys);
    size_t i = 0, j = 0, overlap = 0;
    while (i < na && j < nb) {
        if (a[i] < b[j]) {
            i++;
        } else if (a[i] > b[j]) {
            j++;
        } else {
            overlap++;
            i++;
            j++;
        }
    }
    return overlap;
}

/* ---- SQuAD exact match and F1 ---- */

/* F1 of two normalized answers, both consumed. */
static int normalized_f1(char *prediction, char *gold, double *out, struct caem_error *err)
{
    struct token_list p, g;
    if (split_normalized(prediction, &p, err) != 0) {
        free(gold);
        return -1;
    }
    if (split_normalized(gold, &g, err) != 0) {
        token_list_free(&p);
        return -1;
    }
    uint64_t *ids = token_ids(&p, &g, err);
    if (ids == NULL) {
        token_list_free(&p);
        token_list_free(&g);
        return -1;
    }
    size_t same = multiset_overlap(ids, p.count, ids + p.count, g.count);
    *out = 0.0;
    if (same > 0) {
        /* The reference's operations in its order, so that the doubles agree. */
        double precision = 1.0 * (double)same / (double)p.count;
        double recall = 1.0 * (double)same / (double)g.count;
        *out = (2 * precision * recall) / (precision + recall);
    }
    free(ids);
    token_list_free(&p);
    token_list_free(&g);
    return 0;
}

/* Exact match and F1 of one prediction, normalized already, against one gold. */
static int squad_pair(const char *normalized_prediction, const char *gold,
                      struct squad_score *out, struct caem_error *err)
{
    char *g = normalize_answer(gold, err);
    char *p = strdup(normalized_prediction);
    if (g == NULL || p == NULL) {
        free(g);
        free(p);
        return p == NULL ? caem_fail(err, "out of memory for a normalized answer") : -1;
    }
    out->exact_match = strcmp(p, g) == 0 ? 1.0 : 0.0;
    return normalized_f1(p, g, &out->f1, err);
}

int metric_exact_match(const char *prediction, const char *gold)
{
    char *p = normalize_answer(prediction, NULL);
    char *g = normalize_answer(gold, NULL);
    int equal = p != NULL && g != NULL ? strcmp(p, g) == 0 : -1;
    free(p);
    free(g);
    return equal;
}

double metric_f1(const char *prediction, const char *gold)
{
    char *p = normalize_answer(prediction, NULL);
    char *g = normalize_answer(gold, NULL);
    double f1;
    if (p == NULL || g == NULL) {
        free(p);
        free(g);
        return NAN;
    }
    if (normalized_f1(p, g, &f1, NULL) != 0)
        return NAN;
    return f1;
}

int metric_squad_score(const char *prediction, const char *const *golds, int count,
                       struct squad_score *out, struct caem_error *err)
{
    if (count < 1)
        return caem_fail(err, "SQuAD score: %d gold answers; expected at least 1", count);
    char *p = normalize_answer(prediction, err);
    if (p == NULL)
        return -1;
    out->exact_match = 0.0;
    out->f1 = 0.0;
    for (int i = 0; i < count; i++) {
        struct squad_score pair;
        if (squad_pair(p, golds[i], &pair, err) != 0) {
            free(p);
            return -1;
        }
        if (pair.exact_match > out->exact_match)
            out->exact_match = pair.exact_match;
        if (pair.f1 > out->f1)
            out->f1 = pair.f1;
    }
    free(p);
    return 0;
}

struct squad_score metric_squad(const char *prediction, const char *const *golds, int count)
{
    struct squad_score score;
    if (metric_squad_score(prediction, golds, count, &score, NULL) != 0)
        score.exact_match = score.f1 = NAN;
    return score;
}

/* ---- ROUGE ---- */

static int is_rouge_char(int32_t c)
{
    return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9');
}

/* rouge_score's tokenizer without stemming: lowercase, then every maximal run
 * of a-z and 0-9 is a token. Only ASCII characters survive, so each one is
 * stored as one byte. */
static int rouge_tokenize(const char *text, struct token_list *out, struct caem_error *err)
{
    memset(out, 0, sizeof *out);
    size_t count, lower_count;
    int32_t *chars = python_str_decode(text, strlen(text), &count, err);
    if (chars == NULL)
        return -1;
    int32_t *lower = python_str_lower(chars, count, &lower_count, err);
    free(chars);
    if (lower == NULL)
        return -1;
    /* A token needs one character and a separator, except the last. */
    size_t max_tokens = lower_count / 2 + 1;
    out->buffer = caem_malloc(lower_count, "ROUGE tokens", err);
    out->tokens = caem_malloc(max_tokens * sizeof *out->tokens, "ROUGE tokens", err);
    if (out->buffer == NULL || out->tokens == NULL) {
        free(lower);
        token_list_free(out);
        return -1;
    }
    size_t used = 0, i = 0;
    while (i < lower_count) {
        if (!is_rouge_char(lower[i])) {
            i++;
            continue;
        }
        char *start = out->buffer + used;
        while (i < lower_count && is_rouge_char(lower[i]))
            out->buffer[used++] = (char)lower[i++];
        out->tokens[out->count++] = (struct token){ start, (size_t)(out->buffer + used - start) };
    }
    free(lower);
    return 0;
}

static double fmeasure(double precision, double recall)
{
    if (precision + recall > 0)
        return 2 * precision * recall / (precision + recall);
    return 0.0;
}

static struct rouge_value rouge_n(const uint64_t *target_ids, size_t target_count,
                                  const uint64_t *prediction_ids, size_t prediction_count,
                                  int n, uint64_t *scratch)
{
    uint64_t *target_keys = scratch, *prediction_keys = scratch + target_count;
    size_t t = ngram_keys(target_ids, target_count, n, target_keys);
    size_t p = ngram_keys(prediction_ids, prediction_count, n, prediction_keys);
    size_t overlap = multiset_overlap(target_keys, t, prediction_keys, p);
    struct rouge_value v;
    v.precision = (double)overlap / (double)(p > 1 ? p : 1);
    v.recall = (double)overlap / (double)(t > 1 ? t : 1);
    v.fmeasure = fmeasure(v.precision, v.recall);
    return v;
}

/* Length of the longest common subsequence, in O(min) memory: one row of the
 * dynamic-programming table over the shorter sequence. */
static int lcs_length(const uint64_t *a, size_t na, const uint64_t *b, size_t nb,
                      size_t *out, struct caem_error *err)
{
    if (nb > na) {
        const uint64_t *swap = a;
        a = b;
        b = swap;
        size_t n = na;
        na = nb;
        nb = n;
    }
    size_t *row = caem_calloc(nb + 1, sizeof *row, "ROUGE-L table row", err);
    if (row == NULL)
        return -1;
    for (size_t i = 0; i < na; i++) {
        size_t diagonal = 0; /* row[j] of the previous i */
        for (size_t j = 1; j <= nb; j++) {
            size_t above = row[j];
            if (a[i] == b[j - 1])
                row[j] = diagonal + 1;
            else if (row[j - 1] > above)
                row[j] = row[j - 1];
            diagonal = above;
        }
    }
    *out = row[nb];
    free(row);
    return 0;
}

int metric_rouge(const char *target, const char *prediction, struct rouge_scores *out,
                 struct caem_error *err)
{
    struct token_list t, p;
    if (rouge_tokenize(target, &t, err) != 0)
        return -1;
    if (rouge_tokenize(prediction, &p, err) != 0) {
        token_list_free(&t);
        return -1;
    }
    int status = -1;
    uint64_t *ids = token_ids(&t, &p, err);
    uint64_t *scratch = caem_malloc((t.count + p.count) * sizeof *scratch, "ROUGE n-grams", err);
    if (ids == NULL || scratch == NULL)
        goto done;
    const uint64_t *target_ids = ids, *prediction_ids = ids + t.count;
    out->rouge1 = rouge_n(target_ids, t.count, prediction_ids, p.count, 1, scratch);
    out->rouge2 = rouge_n(target_ids, t.count, prediction_ids, p.count, 2, scratch);
    memset(&out->rougeL, 0, sizeof out->rougeL);
    if (t.count > 0 && p.count > 0) {
        size_t lcs;
        if (lcs_length(target_ids, t.count, prediction_ids, p.count, &lcs, err) != 0)
            goto done;
        out->rougeL.precision = (double)lcs / (double)p.count;
        out->rougeL.recall = (double)lcs / (double)t.count;
        out->rougeL.fmeasure = fmeasure(out->rougeL.precision, out->rougeL.recall);
    }
    status = 0;
done:
    free(ids);
    free(scratch);
    token_list_free(&t);
    token_list_free(&p);
    return status;
}

/* ---- Overall Performance ---- */

int metric_overall_performance(const double *multi_task, const double *single_task, int tasks,
                               double *out, struct caem_error *err)
{
    if (tasks <= 0)
        return caem_fail(err, "overall performance needs at least one task, got %d", tasks);
    double sum = 0.0;
    for (int i = 0; i < tasks; i++) {
        if (!isfinite(multi_task[i]) || !isfinite(single_task[i]))
            return caem_fail(err, "overall performance: task %d has a score that is not "
                             "finite (multi-task %g, single-task %g)", i, multi_task[i],
                             single_task[i]);
        if (single_task[i] == 0.0)
            return caem_fail(err, "overall performance: task %d has a single-task score of "
                             "0, so its ratio is undefined", i);
        sum += multi_task[i] / single_task[i];
    }
    *out = sum / tasks;
    return 0;
}

/* ---- running sums ---- */

static const char *const accuracy_names[] = { "accuracy" };
static const char *const squad_names[] = { "exact_match", "f1" };
static const char *const rouge_names[] = { "rouge1", "rouge2", "rougeL" };

static int figure_names(enum task_metric kind, const char *const **names)
{
    switch (kind) {
    case TASK_METRIC_ACCURACY:
        *names = accuracy_names;
        return 1;
    case TASK_METRIC_SQUAD:
        *names = squad_names;
        return 2;
    case TASK_METRIC_ROUGE:
        *names = rouge_names;
        return 3;
    }
    *names = NULL;
    return 0;
}

const char *metric_primary_name(enum task_metric kind)
{
    switch (kind) {
    case TASK_METRIC_ACCURACY:
        return "accuracy";
    case TASK_METRIC_SQUAD:
        return "f1";
    case TASK_METRIC_ROUGE:
        return "rougeL";
    }
    return NULL;
}

int metric_sum_init(struct metric_sum *sum, enum task_metric kind, struct caem_error *err)
{
    const char *const *names;
    memset(sum, 0, sizeof *sum);
    if (figure_names(kind, &names) == 0)
        return caem_fail(err, "unknown metric kind %d; expected accuracy, squad or rouge",
                         (int)kind);
    sum->kind = kind;
    return 0;
}

/* The gold answers of an example: its answers, or its target alone. */
static const char *const *example_golds(const struct example *ex, int *count)
{
    if (ex->answers != NULL && ex->answer_count > 0) {
        *count = ex->answer_count;
        return (const char *const *)ex->answers;
    }
    *count = 1;
    return (const char *const *)&ex->target;
}

static int add_accuracy(struct metric_sum *sum, const char *prediction,
                        const struct example *ex, struct caem_error *err)
{
    int count;
    const char *const *golds = example_golds(ex, &count);
    char *p = normalize_answer(prediction, err);
    char *target = normalize_answer(ex->target, err);
    if (p == NULL || target == NULL) {
        free(p);
        free(target);
        return -1;
    }
    int correct = strcmp(p, target) == 0;
    free(target);
    for (int i = 0; i < count && !correct; i++) {
        char *g = normalize_answer(golds[i], err);
        if (g == NULL) {
            free(p);
            return -1;
        }
        correct = strcmp(p, g) == 0;
        free(g);
    }
    free(p);
    sum->totals[0] += correct ? 1.0 : 0.0;
    return 0;
}

static int add_rouge(struct metric_sum *sum, const char *prediction, const struct example *ex,
                     struct caem_error *err)
{
    int count;
    const char *const *golds = example_golds(ex, &count);
    double best[3] = { 0.0, 0.0, 0.0 };
    for (int i = 0; i < count; i++) {
        struct rouge_scores s;
        if (metric_rouge(golds[i], prediction, &s, err) != 0)
            return -1;
        double f[3] = { s.rouge1.fmeasure, s.rouge2.fmeasure, s.rougeL.fmeasure };
        for (int k = 0; k < 3; k++)
            if (i == 0 || f[k] > best[k])
                best[k] = f[k];
    }
    for (int k = 0; k < 3; k++)
        sum->totals[k] += best[k];
    return 0;
}

int metric_sum_add(struct metric_sum *sum, const char *prediction, const struct example *ex,
                   struct caem_error *err)
{
    int status;
    switch (sum->kind) {
    case TASK_METRIC_ACCURACY:
        status = add_accuracy(sum, prediction, ex, err);
        break;
    case TASK_METRIC_SQUAD: {
        int count;
        const char *const *golds = example_golds(ex, &count);
        struct squad_score s;
        status = metric_squad_score(prediction, golds, count, &s, err);
        if (status == 0) {
            sum->totals[0] += s.exact_match;
            sum->totals[1] += s.f1;
        }
        break;
    }
    case TASK_METRIC_ROUGE:
        status = add_rouge(sum, prediction, ex, err);
        break;
    default:
        return caem_fail(err, "unknown metric kind %d", (int)sum->kind);
    }
    if (status != 0)
        return caem_fail_prefix(err, "scoring example %s", ex->id != NULL ? ex->id : "(no id)");
    sum->count++;
    return 0;
}

int metric_sum_values(const struct metric_sum *sum, const char *names[], double values[],
                      int *count, struct caem_error *err)
{
    const char *const *figures;
    int n = figure_names(sum->kind, &figures);
    if (n == 0)
        return caem_fail(err, "unknown metric kind %d", (int)sum->kind);
    if (sum->count == 0)
        return caem_fail(err, "%s: no example was scored, so there is no mean",
                         task_metric_name(sum->kind));
    for (int k = 0; k < n; k++) {
        names[k] = figures[k];
        /* 100 * sum / count, in the order of evaluate-v1.1.py. */
        values[k] = 100.0 * sum->totals[k] / (double)sum->count;
    }
    *count = n;
    return 0;
}
