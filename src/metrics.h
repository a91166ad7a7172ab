/* Evaluation metrics: classification accuracy, SQuAD v1.1 exact match and F1,
 * ROUGE-1/2/L, and the Overall Performance of a multi-task model.
 *
 * Each metric equals its Python reference on any UTF-8 text:
 *   - exact match, F1 and answer normalization: the official SQuAD v1.1
 *     evaluation script (evaluate-v1.1.py), under Python 3;
 *   - ROUGE: rouge_score 0.1.2, RougeScorer(["rouge1", "rouge2", "rougeL"])
 *     with its defaults (no stemmer), score(target, prediction).
 * The Unicode rules of Python's str.lower, str.split and re's \b come from
 * python_str.h, with the limits stated there.
 *
 * Scale: the per-pair functions return fractions in [0, 1]. struct metric_sum
 * reports means as percentages in [0, 100], the scale that the SQuAD script
 * and the ROUGE tables of papers use. Overall Performance is a ratio of two
 * scores on one scale, 1 when the multi-task model matches every single-task
 * model. */
#ifndef CAEM_METRICS_H
#define CAEM_METRICS_H

#include "dataset.h"
#include "error.h"
#include "task.h"

/* SQuAD v1.1's normalize_answer: lowercase (Python's str.lower), remove every
 * ASCII punctuation character of Python's string.punctuation, replace the
 * articles "a", "an" and "the" standing as whole words by a space, and join
 * the whitespace-separated words with single spaces. Returns a malloc'd
 * string, or NULL when out of memory. */
char *metric_normalize_answer(const char *text);

/* 1 when the normalized strings are equal, 0 when not, -1 when out of memory. */
int metric_exact_match(const char *prediction, const char *gold);

/* SQuAD v1.1 token F1 between the normalized prediction and gold. Tokens are
 * the space-separated words, and the overlap counts each token as often as it
 * occurs in both. F1 is 0 without overlap, so two empty strings score 0.
 * NaN when out of memory. */
double metric_f1(const char *prediction, const char *gold);

struct squad_score {
    double exact_match; /* 0 or 1 */
    double f1;
};

/* Exact match and F1, each the maximum over the count gold answers, as the
 * official evaluate-v1.1.py takes them. Both are NaN when out of memory or
 * when count is below 1. */
struct squad_score metric_squad(const char *prediction, const char *const *golds, int count);

/* Like metric_squad, with a message on failure. */
int metric_squad_score(const char *prediction, const char *const *golds, int count,
                       struct squad_score *out, struct caem_error *err);

struct rouge_value {
    double precision, recall, fmeasure;
};

struct rouge_scores {
    struct rouge_value rouge1, rouge2, rougeL;
};

/* ROUGE-1, ROUGE-2 and ROUGE-L of prediction against target as rouge_score
 * computes them. Tokens are the maximal runs of a-z and 0-9 in the
 * lowercased text, so every other character separates tokens. ROUGE-N counts
 * n-grams with multiplicity: precision = overlap / max(prediction n-grams, 1)
 * and recall = overlap / max(target n-grams, 1). ROUGE-L divides the length
 * of the longest common token subsequence by the prediction's and the
 * target's token counts, and is 0 when either has no token. F-measure =
 * 2PR / (P + R), or 0 when P + R = 0. Fails only when out of memory. Time is
 * proportional to the product of the token counts, from ROUGE-L. */
int metric_rouge(const char *target, const char *prediction, struct rouge_scores *out,
                 struct caem_error *err);

/* Overall Performance = (1/M) sum_i multi_task[i] / single_task[i] over M
 * tasks, each pair on the same scale. Fails when M <= 0, when a score is not
 * finite or when a single-task score is 0. */
int metric_overall_performance(const double *multi_task, const double *single_task, int tasks,
                               double *out, struct caem_error *err);

/* Most figures a metric reports: ROUGE's rouge1, rouge2 and rougeL. */
#define METRIC_VALUES_MAX 3

/* Running sums of one metric over examples, fed one example at a time. */
struct metric_sum {
    enum task_metric kind;
    long count;                       /* examples added */
    double totals[METRIC_VALUES_MAX]; /* per figure, the sum of per-example fractions */
};

/* Starts empty sums for a metric. Fails on a kind that task.h does not define. */
int metric_sum_init(struct metric_sum *sum, enum task_metric kind, struct caem_error *err);

/* Scores one generated prediction against an example:
 *   TASK_METRIC_ACCURACY  1 when the normalized prediction equals the
 *                         normalized target or any gold answer ("accuracy");
 *   TASK_METRIC_SQUAD     exact match and F1, each the best over the gold
 *                         answers ("exact_match", "f1");
 *   TASK_METRIC_ROUGE     ROUGE-1, ROUGE-2 and ROUGE-L F-measure against the
 *                         target, or with several gold answers the best per
 *                         figure, as RougeScorer.score_multi takes it
 *                         ("rouge1", "rouge2", "rougeL").
 * An example without answers is scored against its target alone. */
int metric_sum_add(struct metric_sum *sum, const char *prediction, const struct example *ex,
                   struct caem_error *err);

/* Writes the names and the means of the figures, as percentages in [0, 100],
 * into names[0..count) and values[0..count), and sets *count. Each array
 * needs METRIC_VALUES_MAX entries. The names are static strings. Fails when
 * no example was added. */
int metric_sum_values(const struct metric_sum *sum, const char *names[], double values[],
                      int *count, struct caem_error *err);

/* Name of the figure that Overall Performance compares for a metric:
 * "accuracy", "f1" or "rougeL". NULL for an unknown kind. */
const char *metric_primary_name(enum task_metric kind);

#endif
