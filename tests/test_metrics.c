/* Metrics against hand-computed cases and against their Python references.
 *
 * The fixtures in tests/fixtures come from tools/make_metric_fixtures.py:
 *   metrics_unicode.txt  Python 3.11's str.lower, str.isspace, re's \w and the
 *                        final-sigma classes for every code point;
 *   metrics_squad.txt    exact match and F1 of SQuAD v1.1's evaluation script
 *                        per question of squad/dev-v1.1-half-a.json;
 *   metrics_rouge.txt    rouge_score 0.1.2 precision, recall and F-measure of
 *                        2,224 XSum pairs.
 * They hold numbers only. The tests rebuild each prediction from the shared
 * data by the rules that the script's docstring states, and skip when
 * $CAEM_ROOT/../shared/data is absent. */
#include <dirent.h>
#include <errno.h>
#include <jansson.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <utf8proc.h>

#include "metrics.h"
#include "python_str.h"
#include "test.h"

#define TOLERANCE 1e-6
#define MAX_CODE_POINT 0x10FFFF

/* ---- helpers ---- */

static char data_root[1024];

/* Sets data_root to $CAEM_ROOT/../shared/data and returns 0 when it is absent. */
static int find_data_root(void)
{
    const char *root = getenv("CAEM_ROOT");
    snprintf(data_root, sizeof data_root, "%s/../shared/data", root != NULL ? root : ".");
    struct stat st;
    return stat(data_root, &st) == 0 && S_ISDIR(st.st_mode);
}

static const char *fixture_path(const char *name)
{
    static char path[1024];
    const char *root = getenv("CAEM_ROOT");
    snprintf(path, sizeof path, "%s/tests/fixtures/%s", root != NULL ? root : ".", name);
    return path;
}

static void check_normalized(const char *text, const char *expected)
{
    char *normalized = metric_normalize_answer(text);
    CHECK(normalized != NULL);
    if (normalized != NULL)
        CHECK_MSG(strcmp(normalized, expected) == 0, "normalize(\"%s\") = \"%s\", expected \"%s\"",
                  text, normalized, expected);
    free(normalized);
}

static void check_rouge_value(struct rouge_value v, double precision, double recall,
                              double fmeasure)
{
    CHECK_NEAR(v.precision, precision, 1e-12);
    CHECK_NEAR(v.recall, recall, 1e-12);
    CHECK_NEAR(v.fmeasure, fmeasure, 1e-12);
}

static struct rouge_scores rouge(const char *target, const char *prediction)
{
    struct rouge_scores s;
    struct caem_error err;
    memset(&s, 0, sizeof s);
    CHECK_MSG(metric_rouge(target, prediction, &s, &err) == 0, "%s", err.message);
    return s;
}

/* Decodes UTF-8 with utf8proc directly, so that the pairs are rebuilt without
 * the code under test. Returns a malloc'd array and sets *count. */
static int32_t *decode_utf8(const char *text, size_t *count)
{
    size_t length = strlen(text);
    int32_t *chars = malloc((length + 1) * sizeof *chars);
    size_t n = 0, at = 0;
    while (chars != NULL && at < length) {
        utf8proc_int32_t c;
        utf8proc_ssize_t used = utf8proc_iterate((const utf8proc_uint8_t *)text + at,
                                                 (utf8proc_ssize_t)(length - at), &c);
        if (used <= 0) {
            free(chars);
            return NULL;
        }
        chars[n++] = c;
        at += (size_t)used;
    }
    *count = n;
    return chars;
}

/* Encodes chars[start .. stop) as a malloc'd UTF-8 string. */
static char *encode_slice(const int32_t *chars, size_t start, size_t stop)
{
    char *text = malloc((stop - start) * 4 + 1);
    size_t at = 0;
    for (size_t i = start; text != NULL && i < stop; i++)
        at += (size_t)utf8proc_encode_char(chars[i], (utf8proc_uint8_t *)text + at);
    if (text != NULL)
        text[at] = '\0';
    return text;
}

static char *read_file(const char *path, size_t *length)
{
    FILE *f = fopen(path, "rb");
    if (f == NULL)
        return NULL;
    size_t capacity = 1 << 16, n = 0;
    char *buffer = malloc(capacity);
    for (;;) {
        if (buffer == NULL)
            break;
        n += fread(buffer + n, 1, capacity - n - 1, f);
        if (n < capacity - 1)
            break;
        capacity *= 2;
        char *grown = realloc(buffer, capacity);
        if (grown == NULL) {
            free(buffer);
            buffer = NULL;
        } else {
            buffer = grown;
        }
    }
    int failed = ferror(f);
    fclose(f);
    if (buffer == NULL || failed) {
        free(buffer);
        return NULL;
    }
    buffer[n] = '\0';
    *length = n;
    return buffer;
}

/* ---- hand-computed cases ---- */

static void test_normalize_articles_and_punctuation(void)
{
    check_normalized("The Quick, brown fox!", "quick brown fox");
    check_normalized("an apple a day", "apple day");
    check_normalized("theater anagram ant", "theater anagram ant");
    /* Punctuation goes first, so "A-n" becomes the article "an". */
    check_normalized("A-n", "");
    check_normalized("A.N.", "");
    check_normalized("the_end", "theend");
    check_normalized("The", "");
    check_normalized("", "");
    check_normalized("  \t ", "");
}

static void test_normalize_unicode(void)
{
    /* Curly quotes are not in string.punctuation. */
    check_normalized("\xe2\x80\x9c" "Denver" "\xe2\x80\x9d Broncos",
                     "\xe2\x80\x9c" "denver" "\xe2\x80\x9d broncos");
    /* A combining mark is not a word character, so "the" before it is a word. */
    check_normalized("the\xcc\x81 end", "\xcc\x81 end");
    /* Letters and digits of other scripts are word characters. */
    check_normalized("an\xc3\xa9 \xc3\xa9" "an", "an\xc3\xa9 \xc3\xa9" "an");
    check_normalized("a\xd9\xa3 b", "a\xd9\xa3 b");
    /* U+0130 lowercases to "i" and U+0307. */
    check_normalized("\xc4\xb0stanbul", "i\xcc\x87stanbul");
    /* Capital sigma ends a word as the final sigma. */
    check_normalized("\xce\x9f\xce\x94\xce\x9f\xce\xa3 \xce\xa3\xce\x91",
                     "\xce\xbf\xce\xb4\xce\xbf\xcf\x82 \xcf\x83\xce\xb1");
    check_normalized("\xce\x9f\xce\x94\xce\x9f\xce\xa3.", "\xce\xbf\xce\xb4\xce\xbf\xcf\x82");
    /* The apostrophe is case-ignorable, and the rule reads the text before
     * punctuation is removed. */
    check_normalized("\xce\xa3'\xce\xa3", "\xcf\x83\xcf\x82");
    /* No-break space, em space and U+001F split words; zero-width space does not. */
    check_normalized("x\xc2\xa0y\xe2\x80\x83z\x1fw\xe2\x80\x8bv", "x y z w\xe2\x80\x8bv");
}

static void test_normalize_invalid_utf8(void)
{
    /* An invalid byte reads as U+FFFD, which is not a word character. */
    check_normalized("the\xff" "cat", "\xef\xbf\xbd" "cat");
}

static void test_exact_match_cases(void)
{
    CHECK_INT_EQ(metric_exact_match("The Eiffel Tower", "eiffel tower."), 1);
    CHECK_INT_EQ(metric_exact_match("Eiffel Tower", "the Eiffel Towers"), 0);
    CHECK_INT_EQ(metric_exact_match("", ""), 1);
    CHECK_INT_EQ(metric_exact_match("the", "a"), 1);
    CHECK_INT_EQ(metric_exact_match("", "x"), 0);
}

static void test_f1_cases(void)
{
    /* "cat sat on mat" against "cat on mat": 3 shared, P = 3/4, R = 1. */
    CHECK_NEAR(metric_f1("the cat sat on the mat", "a cat on a mat"), 6.0 / 7.0, 1e-15);
    /* A repeated token counts as often as it occurs in both: P = 1/3, R = 1/2. */
    CHECK_NEAR(metric_f1("dog dog dog", "dog cat"), 0.4, 1e-15);
    CHECK_NEAR(metric_f1("dog cat", "cat dog"), 1.0, 1e-15);
    CHECK_NEAR(metric_f1("", ""), 0.0, 0.0);
    CHECK_NEAR(metric_f1("", "cat"), 0.0, 0.0);
    CHECK_NEAR(metric_f1("the a an", "the"), 0.0, 0.0);
    CHECK_NEAR(metric_f1("cats", "cat"), 0.0, 0.0);
}

static void test_squad_best_over_golds(void)
{
    const char *golds[] = { "Broncos", "Denver Broncos", "the Denver Broncos team" };
    struct squad_score s = metric_squad("Denver Broncos!", golds, 3);
    CHECK_NEAR(s.exact_match, 1.0, 0.0);
    CHECK_NEAR(s.f1, 1.0, 0.0);

    /* Best F1 from the third gold (2 of 3 tokens, P = 1, R = 2/3) while no
     * gold matches exactly. */
    const char *others[] = { "Carolina", "Panthers of Carolina", "Denver Broncos team" };
    s = metric_squad("Denver Broncos", others, 3);
    CHECK_NEAR(s.exact_match, 0.0, 0.0);
    CHECK_NEAR(s.f1, 0.8, 1e-15);

    s = metric_squad("x", golds, 0);
    CHECK(isnan(s.exact_match));
    CHECK(isnan(s.f1));
    struct caem_error err;
    CHECK_INT_EQ(metric_squad_score("x", golds, 0, &s, &err), -1);
    CHECK(strstr(err.message, "gold answers") != NULL);
}

static void test_rouge_hand_cases(void)
{
    /* Tokens the cat sat on the mat / the cat on the mat: 5 shared unigrams,
     * bigrams the-cat, on-the and the-mat shared of 5 and 4, LCS 5. */
    struct rouge_scores s = rouge("the cat sat on the mat", "the cat on the mat");
    check_rouge_value(s.rouge1, 1.0, 5.0 / 6.0, 10.0 / 11.0);
    check_rouge_value(s.rouge2, 0.75, 0.6, 2.0 / 3.0);
    check_rouge_value(s.rougeL, 1.0, 5.0 / 6.0, 10.0 / 11.0);

    /* Repeated n-grams: target has "a a" twice, the prediction once. */
    s = rouge("a a a", "a a");
    check_rouge_value(s.rouge1, 1.0, 2.0 / 3.0, 0.8);
    check_rouge_value(s.rouge2, 1.0, 0.5, 2.0 / 3.0);
    check_rouge_value(s.rougeL, 1.0, 2.0 / 3.0, 0.8);

    /* a b c d e f against a c b d f e: every unigram, no bigram, and an LCS
     * of 4 such as a b d e. */
    s = rouge("a b c d e f", "a c b d f e");
    check_rouge_value(s.rouge1, 1.0, 1.0, 1.0);
    check_rouge_value(s.rouge2, 0.0, 0.0, 0.0);
    check_rouge_value(s.rougeL, 4.0 / 6.0, 4.0 / 6.0, 4.0 / 6.0);

    s = rouge("x y", "y x");
    check_rouge_value(s.rouge1, 1.0, 1.0, 1.0);
    check_rouge_value(s.rouge2, 0.0, 0.0, 0.0);
    check_rouge_value(s.rougeL, 0.5, 0.5, 0.5);

    /* A repeated prediction token matches the target's single x once. */
    s = rouge("y x", "x x");
    check_rouge_value(s.rouge1, 0.5, 0.5, 0.5);
    check_rouge_value(s.rougeL, 0.5, 0.5, 0.5);

    /* LCS 3 (b c d) of a 4-token target and a 5-token prediction. */
    s = rouge("a b c d", "b x c d y");
    check_rouge_value(s.rougeL, 3.0 / 5.0, 3.0 / 4.0, 2.0 * 0.6 * 0.75 / 1.35);
}

static void test_rouge_empty_texts(void)
{
    const char *cases[][2] = { { "", "abc" }, { "abc", "" }, { "", "" }, { "!!!", "..." } };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        struct rouge_scores s = rouge(cases[i][0], cases[i][1]);
        check_rouge_value(s.rouge1, 0.0, 0.0, 0.0);
        check_rouge_value(s.rouge2, 0.0, 0.0, 0.0);
        check_rouge_value(s.rougeL, 0.0, 0.0, 0.0);
    }
    /* One token each: a unigram but no bigram. */
    struct rouge_scores s = rouge("cat", "Cat!");
    check_rouge_value(s.rouge1, 1.0, 1.0, 1.0);
    check_rouge_value(s.rouge2, 0.0, 0.0, 0.0);
    check_rouge_value(s.rougeL, 1.0, 1.0, 1.0);
}

static void test_rouge_tokenizer(void)
{
    /* don t stop believing 2nd: the apostrophe and hyphen separate. */
    struct rouge_scores s = rouge("Don't stop-believing! 2nd", "don t stop believing 2nd");
    check_rouge_value(s.rouge2, 1.0, 1.0, 1.0);
    /* Non-ASCII letters separate tokens: "caf\xc3\xa9" is the token "caf". */
    s = rouge("caf\xc3\xa9", "caf");
    check_rouge_value(s.rouge1, 1.0, 1.0, 1.0);
    s = rouge("\xc3\x89" "COLE", "cole");
    check_rouge_value(s.rouge1, 1.0, 1.0, 1.0);
    /* U+0130 lowercases to "i" and a combining dot, giving the tokens i, zmir. */
    s = rouge("\xc4\xb0zmir", "i zmir");
    check_rouge_value(s.rouge2, 1.0, 1.0, 1.0);
    /* The Kelvin sign lowercases to ASCII "k". */
    s = rouge("5\xe2\x84\xaa", "5k");
    check_rouge_value(s.rouge1, 1.0, 1.0, 1.0);
    /* Greek letters are not tokens. */
    s = rouge("\xce\x9f\xce\x94\xce\x9f\xce\xa3 42", "42");
    check_rouge_value(s.rouge1, 1.0, 1.0, 1.0);
}

static void test_overall_performance_cases(void)
{
    struct caem_error err;
    double multi[] = { 90.0, 45.0, 30.0 }, single[] = { 100.0, 50.0, 20.0 };
    double out = 0.0;
    CHECK_MSG(metric_overall_performance(multi, single, 3, &out, &err) == 0, "%s",
              err.message);
    CHECK_NEAR(out, (0.9 + 0.9 + 1.5) / 3.0, 1e-15);

    CHECK_INT_EQ(metric_overall_performance(multi, single, 0, &out, &err), -1);
    CHECK(strstr(err.message, "at least one task") != NULL);
    double zero[] = { 100.0, 0.0 };
    CHECK_INT_EQ(metric_overall_performance(multi, zero, 2, &out, &err), -1);
    CHECK(strstr(err.message, "task 1") != NULL);
    double not_finite[] = { NAN, 1.0 };
    CHECK_INT_EQ(metric_overall_performance(not_finite, single, 2, &out, &err), -1);
    CHECK(strstr(err.message, "task 0") != NULL);
}

static struct example make_example(const char *target, const char **answers, int count)
{
    struct example ex;
    memset(&ex, 0, sizeof ex);
    ex.target = (char *)target;
    ex.answers = (char **)answers;
    ex.answer_count = count;
    ex.id = "hand";
    return ex;
}

static void test_metric_sum_accuracy(void)
{
    struct caem_error err;
    struct metric_sum sum;
    CHECK_INT_EQ(metric_sum_init(&sum, TASK_METRIC_ACCURACY, &err), 0);
    const char *sports[] = { "Sports" };
    const char *science[] = { "Science and Technology", "Sci/Tech" };
    struct example a = make_example("Sports", sports, 1);
    struct example b = make_example("Science and Technology", science, 2);
    CHECK_INT_EQ(metric_sum_add(&sum, "sports.", &a, &err), 0);
    CHECK_INT_EQ(metric_sum_add(&sum, "World", &a, &err), 0);
    CHECK_INT_EQ(metric_sum_add(&sum, "SciTech", &b, &err), 0);
    CHECK_INT_EQ(metric_sum_add(&sum, "science and the technology", &b, &err), 0);

    const char *names[METRIC_VALUES_MAX];
    double values[METRIC_VALUES_MAX];
    int count = 0;
    CHECK_MSG(metric_sum_values(&sum, names, values, &count, &err) == 0, "%s", err.message);
    CHECK_INT_EQ(count, 1);
    CHECK(strcmp(names[0], "accuracy") == 0);
    CHECK_NEAR(values[0], 75.0, 1e-12);
    CHECK(strcmp(metric_primary_name(TASK_METRIC_ACCURACY), "accuracy") == 0);
}

static void test_metric_sum_squad(void)
{
    struct caem_error err;
    struct metric_sum sum;
    CHECK_INT_EQ(metric_sum_init(&sum, TASK_METRIC_SQUAD, &err), 0);
    const char *golds[] = { "Denver Broncos", "Broncos" };
    struct example ex = make_example("Denver Broncos", golds, 2);
    CHECK_INT_EQ(metric_sum_add(&sum, "the Broncos", &ex, &err), 0);
    CHECK_INT_EQ(metric_sum_add(&sum, "Broncos of Denver", &ex, &err), 0);

    const char *names[METRIC_VALUES_MAX];
    double values[METRIC_VALUES_MAX];
    int count = 0;
    CHECK_MSG(metric_sum_values(&sum, names, values, &count, &err) == 0, "%s", err.message);
    CHECK_INT_EQ(count, 2);
    CHECK(strcmp(names[0], "exact_match") == 0);
    CHECK(strcmp(names[1], "f1") == 0);
    /* Exact match 1 and 0. F1 1, then "broncos of denver" against "denver
     * broncos": P = 2/3, R = 1, F1 = 0.8. */
    CHECK_NEAR(values[0], 50.0, 1e-12);
    CHECK_NEAR(values[1], 90.0, 1e-12);
    CHECK(strcmp(metric_primary_name(TASK_METRIC_SQUAD), "f1") == 0);
}

static void test_metric_sum_rouge(void)
{
    struct caem_error err;
    struct metric_sum sum;
    CHECK_INT_EQ(metric_sum_init(&sum, TASK_METRIC_ROUGE, &err), 0);
    const char *single[] = { "the cat sat on the mat" };
    struct example a = make_example(single[0], single, 1);
    CHECK_INT_EQ(metric_sum_add(&sum, "the cat on the mat", &a, &err), 0);
    /* With two answers each figure takes its best: rouge1 from "x y" (1),
     * rouge2 and rougeL from "z y x" (bigram y x: P = 1, R = 1/2, so 2/3,
     * and LCS y x: P = 1, R = 2/3, so 0.8). */
    const char *two[] = { "x y", "z y x" };
    struct example b = make_example(two[0], two, 2);
    CHECK_INT_EQ(metric_sum_add(&sum, "y x", &b, &err), 0);

    const char *names[METRIC_VALUES_MAX];
    double values[METRIC_VALUES_MAX];
    int count = 0;
    CHECK_MSG(metric_sum_values(&sum, names, values, &count, &err) == 0, "%s", err.message);
    CHECK_INT_EQ(count, 3);
    CHECK(strcmp(names[0], "rouge1") == 0);
    CHECK(strcmp(names[1], "rouge2") == 0);
    CHECK(strcmp(names[2], "rougeL") == 0);
    CHECK_NEAR(values[0], 100.0 * (10.0 / 11.0 + 1.0) / 2.0, 1e-12);
    CHECK_NEAR(values[1], 100.0 * (2.0 / 3.0 + 2.0 / 3.0) / 2.0, 1e-12);
    CHECK_NEAR(values[2], 100.0 * (10.0 / 11.0 + 0.8) / 2.0, 1e-12);
    CHECK(strcmp(metric_primary_name(TASK_METRIC_ROUGE), "rougeL") == 0);
}

static void test_metric_sum_errors(void)
{
    struct caem_error err;
    struct metric_sum sum;
    CHECK_INT_EQ(metric_sum_init(&sum, (enum task_metric)7, &err), -1);
    CHECK(strstr(err.message, "unknown metric kind 7") != NULL);
    CHECK(metric_primary_name((enum task_metric)7) == NULL);

    CHECK_INT_EQ(metric_sum_init(&sum, TASK_METRIC_SQUAD, &err), 0);
    const char *names[METRIC_VALUES_MAX];
    double values[METRIC_VALUES_MAX];
    int count = 0;
    CHECK_INT_EQ(metric_sum_values(&sum, names, values, &count, &err), -1);
    CHECK(strstr(err.message, "no example") != NULL);
}

/* ---- Python's Unicode tables, every code point ---- */

enum unicode_class {
    CLASS_UNASSIGNED,
    CLASS_SPACE,
    CLASS_WORD,
    CLASS_IGNORABLE,
    CLASS_CASED,
    CLASS_COUNT,
};

static const char *const class_names[CLASS_COUNT] = { "unassigned", "space", "word",
                                                      "ignorable", "cased" };

/* Per code point: a bit per class, and the lowercase mapping when it is not
 * the code point itself. */
struct unicode_table {
    uint8_t *classes;
    int32_t (*lower)[3]; /* up to 2 code points, then 0 */
    long lines;
};

static int unicode_table_load(struct unicode_table *t, const char *path)
{
    FILE *f = fopen(path, "r");
    if (f == NULL) {
        printf("  %s: %s (run tools/make_metric_fixtures.py)\n", path, strerror(errno));
        return -1;
    }
    t->classes = calloc(MAX_CODE_POINT + 1, 1);
    t->lower = calloc(MAX_CODE_POINT + 1, sizeof *t->lower);
    t->lines = 0;
    char line[256];
    int status = t->classes != NULL && t->lower != NULL ? 0 : -1;
    while (status == 0 && fgets(line, sizeof line, f) != NULL) {
        char name[32];
        unsigned first, last, extra;
        if (line[0] == '#' || strncmp(line, "unicode ", 8) == 0)
            continue;
        t->lines++;
        int mapped = sscanf(line, "lower %x %x %x", &first, &last, &extra);
        if (mapped >= 2 && first <= MAX_CODE_POINT) {
            t->lower[first][0] = (int32_t)last;
            t->lower[first][1] = mapped == 3 ? (int32_t)extra : 0;
            continue;
        }
        int known = 0;
        if (sscanf(line, "%31s %x %x", name, &first, &last) == 3 && last <= MAX_CODE_POINT)
            for (int k = 0; k < CLASS_COUNT; k++)
                if (strcmp(name, class_names[k]) == 0) {
                    for (unsigned c = first; c <= last; c++)
                        t->classes[c] |= (uint8_t)(1u << k);
                    known = 1;
                }
        if (!known) {
            printf("  %s: malformed line: %s", path, line);
            status = -1;
        }
    }
    fclose(f);
    return status;
}

static void test_unicode_tables_match_python(void)
{
    struct unicode_table t = { 0 };
    CHECK(unicode_table_load(&t, fixture_path("metrics_unicode.txt")) == 0);
    CHECK(t.lines > 3000);
    if (t.classes == NULL || t.lower == NULL || t.lines == 0) {
        free(t.classes);
        free(t.lower);
        return;
    }
    long checked = 0, mismatches = 0;
    struct caem_error err;
    for (int32_t c = 0; c <= MAX_CODE_POINT; c++) {
        if ((c >= 0xD800 && c <= 0xDFFF) || (t.classes[c] & (1u << CLASS_UNASSIGNED)))
            continue;
        checked++;
        int space = python_char_is_space(c), word = python_char_is_word(c);
        int ignorable = python_char_is_case_ignorable(c);
        int cased = !ignorable && python_char_is_cased(c);
        int expected_space = (t.classes[c] >> CLASS_SPACE) & 1;
        int expected_word = (t.classes[c] >> CLASS_WORD) & 1;
        int expected_ignorable = (t.classes[c] >> CLASS_IGNORABLE) & 1;
        int expected_cased = (t.classes[c] >> CLASS_CASED) & 1;

        size_t lower_count = 0;
        int32_t *lower = python_str_lower(&c, 1, &lower_count, &err);
        int32_t expected_lower[3] = { c, 0, 0 };
        size_t expected_count = 1;
        if (t.lower[c][0] != 0) {
            memcpy(expected_lower, t.lower[c], sizeof expected_lower);
            expected_count = t.lower[c][1] != 0 ? 2 : 1;
        }
        int lower_ok = lower != NULL && lower_count == expected_count &&
                       memcmp(lower, expected_lower, lower_count * sizeof *lower) == 0;
        free(lower);

        if (space != expected_space || word != expected_word ||
            ignorable != expected_ignorable || cased != expected_cased || !lower_ok) {
            if (mismatches < 10)
                printf("  U+%04X: space %d/%d word %d/%d ignorable %d/%d cased %d/%d "
                       "lower %s (C/Python)\n", (unsigned)c, space, expected_space, word,
                       expected_word, ignorable, expected_ignorable, cased, expected_cased,
                       lower_ok ? "equal" : "differs");
            mismatches++;
        }
    }
    CHECK_INT_EQ(mismatches, 0);
    CHECK(checked > 280000);
    free(t.classes);
    free(t.lower);
}

/* ---- SQuAD against evaluate-v1.1.py ---- */

struct squad_question {
    const char *context;        /* borrowed from the JSON document */
    const char **answers;       /* every gold answer text */
    int answer_count;
    long answer_start;          /* of the first answer, in code points */
};

static int is_separator(int32_t c)
{
    return c == ' ' || c == '\t' || c == '\n' || c == '\r';
}

/* The prediction of question q by rule q % 6 of tools/make_metric_fixtures.py. */
static char *squad_prediction(const struct squad_question *questions, long count, long q)
{
    const struct squad_question *qa = &questions[q];
    const char *answer = qa->answers[0];
    switch (q % 6) {
    case 0:
        return strdup(qa->answers[qa->answer_count - 1]);
    case 3:
        return strdup(questions[(q + 1) % count].answers[0]);
    case 5: {
        const char *space = strrchr(answer, ' ');
        if (space != NULL)
            return strndup(answer, (size_t)(space - answer));
        size_t length = strlen(answer) + 6;
        char *out = malloc(length);
        if (out != NULL)
            snprintf(out, length, "the %s.", answer);
        return out;
    }
    default:
        break;
    }
    size_t n, answer_length;
    int32_t *context = decode_utf8(qa->context, &n);
    int32_t *answer_chars = decode_utf8(answer, &answer_length);
    char *out = NULL;
    if (context != NULL && answer_chars != NULL) {
        size_t start = (size_t)qa->answer_start, end = start + answer_length;
        if (q % 6 == 1) {
            while (start > 0 && is_separator(context[start - 1]))
                start--;
            while (start > 0 && !is_separator(context[start - 1]))
                start--;
            while (end < n && is_separator(context[end]))
                end++;
            while (end < n && !is_separator(context[end]))
                end++;
            out = encode_slice(context, start, end);
        } else if (q % 6 == 2) {
            size_t from = start + 3 < n ? start + 3 : n, to = end + 3 < n ? end + 3 : n;
            out = encode_slice(context, from, to);
        } else {
            long words = 0;
            for (size_t i = 0; i < n; i++)
                words += !is_separator(context[i]) && (i == 0 || is_separator(context[i - 1]));
            if (words == 0)
                words = 1; /* no word: the loop below finds none and returns NULL */
            long target_word = q % words, word = -1;
            for (size_t i = 0; i < n && out == NULL; i++) {
                if (is_separator(context[i]) || (i > 0 && !is_separator(context[i - 1])))
                    continue;
                if (++word == target_word) {
                    size_t stop = i;
                    while (stop < n && !is_separator(context[stop]))
                        stop++;
                    out = encode_slice(context, i, stop);
                }
            }
        }
    }
    free(context);
    free(answer_chars);
    return out;
}

/* Collects the questions of a SQuAD file in file order. */
static long squad_questions(json_t *root, struct squad_question **out)
{
    long count = 0, capacity = 0;
    struct squad_question *questions = NULL;
    json_t *articles = json_object_get(root, "data");
    for (size_t a = 0; a < json_array_size(articles); a++) {
        json_t *paragraphs = json_object_get(json_array_get(articles, a), "paragraphs");
        for (size_t p = 0; p < json_array_size(paragraphs); p++) {
            json_t *paragraph = json_array_get(paragraphs, p);
            const char *context = json_string_value(json_object_get(paragraph, "context"));
            json_t *qas = json_object_get(paragraph, "qas");
            for (size_t i = 0; i < json_array_size(qas); i++) {
                json_t *answers = json_object_get(json_array_get(qas, i), "answers");
                if (count == capacity) {
                    capacity = capacity ? 2 * capacity : 1024;
                    struct squad_question *grown =
                        realloc(questions, (size_t)capacity * sizeof *questions);
                    if (grown == NULL)
                        break;
                    questions = grown;
                }
                struct squad_question *qa = &questions[count++];
                qa->context = context;
                qa->answer_count = (int)json_array_size(answers);
                qa->answers = calloc((size_t)qa->answer_count + 1, sizeof *qa->answers);
                for (int k = 0; k < qa->answer_count && qa->answers != NULL; k++) {
                    json_t *answer = json_array_get(answers, (size_t)k);
                    qa->answers[k] = json_string_value(json_object_get(answer, "text"));
                    if (k == 0)
                        qa->answer_start =
                            (long)json_integer_value(json_object_get(answer, "answer_start"));
                }
            }
        }
    }
    *out = questions;
    return count;
}

static void test_squad_matches_official_script(void)
{
    if (!find_data_root())
        SKIP("%.200s not found", data_root);
    char path[1200];
    snprintf(path, sizeof path, "%s/squad/dev-v1.1-half-a.json", data_root);
    json_error_t json_err;
    json_t *root = json_load_file(path, 0, &json_err);
    CHECK_MSG(root != NULL, "%s: %s", path, json_err.text);
    FILE *f = fopen(fixture_path("metrics_squad.txt"), "r");
    CHECK_MSG(f != NULL, "%s: %s", fixture_path("metrics_squad.txt"), strerror(errno));
    if (root == NULL || f == NULL) {
        json_decref(root);
        if (f != NULL)
            fclose(f);
        return;
    }
    struct squad_question *questions = NULL;
    long count = squad_questions(root, &questions);
    CHECK_INT_EQ(count, 4961);

    struct caem_error err;
    struct metric_sum sum;
    CHECK_INT_EQ(metric_sum_init(&sum, TASK_METRIC_SQUAD, &err), 0);
    long rows = 0, em_mismatches = 0;
    double worst_f1 = 0.0, mean_em = NAN, mean_f1 = NAN;
    char line[256];
    while (fgets(line, sizeof line, f) != NULL) {
        long q;
        int rule, em;
        double f1;
        if (line[0] == '#')
            continue;
        if (sscanf(line, "mean %lf %lf", &mean_em, &mean_f1) == 2)
            continue;
        if (sscanf(line, "%ld %d %d %lf", &q, &rule, &em, &f1) != 4 || q != rows ||
            q >= count) {
            CHECK_MSG(0, "malformed fixture line %s", line);
            break;
        }
        rows++;
        char *prediction = squad_prediction(questions, count, q);
        CHECK(prediction != NULL);
        if (prediction == NULL)
            break;
        struct example ex = make_example(questions[q].answers[0], questions[q].answers,
                                         questions[q].answer_count);
        struct squad_score s;
        CHECK_MSG(metric_squad_score(prediction, questions[q].answers,
                                     questions[q].answer_count, &s, &err) == 0, "%s",
                  err.message);
        CHECK_MSG(metric_sum_add(&sum, prediction, &ex, &err) == 0, "%s", err.message);
        if (s.exact_match != em) {
            if (em_mismatches < 5)
                printf("  question %ld (rule %d): exact match %g, expected %d\n", q, rule,
                       s.exact_match, em);
            em_mismatches++;
        }
        double difference = fabs(s.f1 - f1);
        if (!(difference <= TOLERANCE))
            printf("  question %ld (rule %d): F1 %.10g, expected %.10g\n", q, rule, s.f1, f1);
        if (!(difference <= worst_f1))
            worst_f1 = difference;
        free(prediction);
    }
    fclose(f);
    CHECK_INT_EQ(rows, count);
    CHECK_INT_EQ(em_mismatches, 0);
    CHECK_NEAR(worst_f1, 0.0, TOLERANCE);

    const char *names[METRIC_VALUES_MAX];
    double values[METRIC_VALUES_MAX];
    int figures = 0;
    CHECK_MSG(metric_sum_values(&sum, names, values, &figures, &err) == 0, "%s", err.message);
    CHECK_NEAR(values[0], mean_em, TOLERANCE);
    CHECK_NEAR(values[1], mean_f1, TOLERANCE);
    printf("  %ld questions: worst F1 difference %.2g; mean exact match %.6f and F1 %.6f "
           "differ by %.2g and %.2g\n", rows, worst_f1, values[0], values[1],
           fabs(values[0] - mean_em), fabs(values[1] - mean_f1));

    for (long i = 0; i < count; i++)
        free(questions[i].answers);
    free(questions);
    json_decref(root);
}

/* ---- ROUGE against rouge_score ---- */

#define ROUGE_SETS 4

struct rouge_pair {
    char *target;
    char *prediction;
};

struct rouge_pairs {
    struct rouge_pair *pairs;
    long count, capacity;
};

static int pairs_add(struct rouge_pairs *set, char *target, char *prediction)
{
    if (target == NULL || prediction == NULL) {
        free(target);
        free(prediction);
        return -1;
    }
    if (set->count == set->capacity) {
        long capacity = set->capacity ? 2 * set->capacity : 256;
        struct rouge_pair *grown = realloc(set->pairs, (size_t)capacity * sizeof *grown);
        if (grown == NULL) {
            free(target);
            free(prediction);
            return -1;
        }
        set->pairs = grown;
        set->capacity = capacity;
    }
    set->pairs[set->count++] = (struct rouge_pair){ target, prediction };
    return 0;
}

static void pairs_free(struct rouge_pairs *set)
{
    for (long i = 0; i < set->count; i++) {
        free(set->pairs[i].target);
        free(set->pairs[i].prediction);
    }
    free(set->pairs);
    memset(set, 0, sizeof *set);
}

/* Sets 0 and 1 from the JSON-lines file: (summary, first document line) and
 * (summary, next record's summary). */
static int xsum_json_pairs(struct rouge_pairs *lead, struct rouge_pairs *following)
{
    char path[1200];
    snprintf(path, sizeof path, "%s/xsum/xsum_test_lines0001-0800.jsonl", data_root);
    FILE *f = fopen(path, "r");
    if (f == NULL) {
        printf("  %s: %s\n", path, strerror(errno));
        return -1;
    }
    char **summaries = NULL;
    long count = 0, capacity = 0;
    char *line = NULL;
    size_t line_capacity = 0;
    int status = 0;
    while (status == 0 && getline(&line, &line_capacity, f) != -1) {
        if (strspn(line, " \t\r\n") == strlen(line))
            continue;
        json_error_t json_err;
        json_t *record = json_loads(line, 0, &json_err);
        const char *summary = json_string_value(json_object_get(record, "summary"));
        const char *document = json_string_value(json_object_get(record, "document"));
        if (summary == NULL || document == NULL) {
            printf("  %s: record %ld has no summary or document\n", path, count + 1);
            status = -1;
        } else {
            if (count == capacity) {
                capacity = capacity ? 2 * capacity : 1024;
                char **grown = realloc(summaries, (size_t)capacity * sizeof *grown);
                if (grown == NULL)
                    status = -1;
                else
                    summaries = grown;
            }
            if (status == 0) {
                summaries[count++] = strdup(summary);
                const char *newline = strchr(document, '\n');
                size_t first = newline != NULL ? (size_t)(newline - document) : strlen(document);
                status = pairs_add(lead, strdup(summary), strndup(document, first));
            }
        }
        json_decref(record);
    }
    free(line);
    fclose(f);
    for (long i = 0; i < count; i++)
        if (status == 0)
            status = pairs_add(following, strdup(summaries[i]),
                               strdup(summaries[(i + 1) % count]));
    for (long i = 0; i < count; i++)
        free(summaries[i]);
    free(summaries);
    return status;
}

static int compare_names(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* Names in dir that start with prefix and end with suffix, sorted. */
static long list_names(const char *dir, const char *prefix, const char *suffix, char ***out)
{
    DIR *d = opendir(dir);
    if (d == NULL)
        return -1;
    char **names = NULL;
    long count = 0;
    struct dirent *entry;
    while ((entry = readdir(d)) != NULL) {
        size_t length = strlen(entry->d_name), tail = strlen(suffix);
        if (strncmp(entry->d_name, prefix, strlen(prefix)) != 0 || length < tail ||
            strcmp(entry->d_name + length - tail, suffix) != 0 || entry->d_name[0] == '.')
            continue;
        char **grown = realloc(names, (size_t)(count + 1) * sizeof *grown);
        if (grown == NULL)
            break;
        names = grown;
        names[count++] = strdup(entry->d_name);
    }
    closedir(d);
    if (count > 0)
        qsort(names, (size_t)count, sizeof *names, compare_names);
    *out = names;
    return count;
}

/* Sets 2 and 3 from one .data file: (introduction, first non-blank body line)
 * and (introduction, body). */
static int xsum_raw_file(const char *path, struct rouge_pairs *lead, struct rouge_pairs *body)
{
    static const char intro_marker[] = "[XSUM]INTRODUCTION[XSUM]";
    static const char body_marker[] = "[XSUM]RESTBODY[XSUM]";
    size_t length;
    char *text = read_file(path, &length);
    if (text == NULL) {
        printf("  %s: cannot read\n", path);
        return -1;
    }
    char *intro = strstr(text, intro_marker);
    char *rest = intro != NULL ? strstr(intro, body_marker) : NULL;
    if (rest == NULL) {
        printf("  %s: markers missing\n", path);
        free(text);
        return -1;
    }
    intro += strlen(intro_marker);
    char *body_text = rest + strlen(body_marker);
    char *first = strdup("");
    for (char *line = body_text; *line != '\0';) {
        char *end = strchr(line, '\n');
        size_t line_length = end != NULL ? (size_t)(end - line) : strlen(line);
        size_t blank = 0;
        while (blank < line_length && strchr(" \t\r", line[blank]) != NULL)
            blank++;
        if (blank < line_length) {
            free(first);
            first = strndup(line, line_length);
            break;
        }
        if (end == NULL)
            break;
        line = end + 1;
    }
    int status = pairs_add(lead, strndup(intro, (size_t)(rest - intro)), first);
    if (status == 0)
        status = pairs_add(body, strndup(intro, (size_t)(rest - intro)), strdup(body_text));
    free(text);
    return status;
}

static int xsum_raw_pairs(struct rouge_pairs *lead, struct rouge_pairs *body)
{
    char xsum_dir[1200];
    snprintf(xsum_dir, sizeof xsum_dir, "%s/xsum", data_root);
    char **dirs = NULL;
    long dir_count = list_names(xsum_dir, "xsum-extracts-", "", &dirs);
    int status = dir_count > 0 ? 0 : -1;
    for (long i = 0; i < dir_count; i++) {
        char dir[1500];
        snprintf(dir, sizeof dir, "%s/%s", xsum_dir, dirs[i]);
        char **files = NULL;
        long file_count = list_names(dir, "", ".data", &files);
        for (long k = 0; k < file_count; k++) {
            char path[1800];
            snprintf(path, sizeof path, "%s/%s", dir, files[k]);
            if (status == 0)
                status = xsum_raw_file(path, lead, body);
            free(files[k]);
        }
        free(files);
        free(dirs[i]);
    }
    free(dirs);
    return status;
}

struct rouge_worst {
    double fmeasure, precision_recall;
};

static void compare_rouge(const struct rouge_scores *s, const double expected[9], int set,
                          long index, struct rouge_worst *worst)
{
    const struct rouge_value *values[3] = { &s->rouge1, &s->rouge2, &s->rougeL };
    static const char *const names[3] = { "rouge1", "rouge2", "rougeL" };
    for (int k = 0; k < 3; k++) {
        double got[3] = { values[k]->precision, values[k]->recall, values[k]->fmeasure };
        for (int j = 0; j < 3; j++) {
            double difference = fabs(got[j] - expected[3 * k + j]);
            if (!(difference <= TOLERANCE))
                printf("  set %d pair %ld %s %s: %.10g, expected %.10g\n", set, index,
                       names[k], j == 0 ? "precision" : j == 1 ? "recall" : "fmeasure",
                       got[j], expected[3 * k + j]);
            double *slot = j == 2 ? &worst->fmeasure : &worst->precision_recall;
            if (!(difference <= *slot))
                *slot = difference;
        }
    }
}

static void test_rouge_matches_rouge_score(void)
{
    if (!find_data_root())
        SKIP("%.200s not found", data_root);
    struct rouge_pairs sets[ROUGE_SETS];
    memset(sets, 0, sizeof sets);
    CHECK(xsum_json_pairs(&sets[0], &sets[1]) == 0);
    CHECK(xsum_raw_pairs(&sets[2], &sets[3]) == 0);
    CHECK_INT_EQ(sets[0].count, 800);
    CHECK_INT_EQ(sets[1].count, 800);
    CHECK_INT_EQ(sets[2].count, 312);
    CHECK_INT_EQ(sets[3].count, 312);

    FILE *f = fopen(fixture_path("metrics_rouge.txt"), "r");
    CHECK_MSG(f != NULL, "%s: %s", fixture_path("metrics_rouge.txt"), strerror(errno));
    struct caem_error err;
    struct metric_sum sums[ROUGE_SETS];
    for (int k = 0; k < ROUGE_SETS; k++)
        metric_sum_init(&sums[k], TASK_METRIC_ROUGE, &err);
    struct rouge_worst worst = { 0.0, 0.0 };
    double worst_mean = 0.0;
    long rows = 0, means = 0;
    char line[512];
    while (f != NULL && fgets(line, sizeof line, f) != NULL) {
        if (line[0] == '#')
            continue;
        int set;
        long index;
        double e[9];
        if (strncmp(line, "mean ", 5) == 0) {
            double mean[3];
            const char *names[METRIC_VALUES_MAX];
            double values[METRIC_VALUES_MAX];
            int figures = 0;
            CHECK(sscanf(line, "mean %d %lf %lf %lf", &set, &mean[0], &mean[1], &mean[2]) == 4);
            if (set < 0 || set >= ROUGE_SETS)
                break;
            CHECK_MSG(metric_sum_values(&sums[set], names, values, &figures, &err) == 0, "%s",
                      err.message);
            for (int k = 0; k < 3; k++) {
                CHECK_NEAR(values[k], mean[k], TOLERANCE);
                if (!(fabs(values[k] - mean[k]) <= worst_mean))
                    worst_mean = fabs(values[k] - mean[k]);
            }
            means++;
            continue;
        }
        if (sscanf(line, "%d %ld %lf %lf %lf %lf %lf %lf %lf %lf %lf", &set, &index, &e[0],
                   &e[1], &e[2], &e[3], &e[4], &e[5], &e[6], &e[7], &e[8]) != 11 ||
            set < 0 || set >= ROUGE_SETS || index < 0 || index >= sets[set].count) {
            CHECK_MSG(0, "malformed fixture line or pair missing from the data: %s", line);
            break;
        }
        const struct rouge_pair *pair = &sets[set].pairs[index];
        struct rouge_scores s;
        CHECK_MSG(metric_rouge(pair->target, pair->prediction, &s, &err) == 0, "%s",
                  err.message);
        compare_rouge(&s, e, set, index, &worst);
        struct example ex = make_example(pair->target, (const char **)&pair->target, 1);
        CHECK_MSG(metric_sum_add(&sums[set], pair->prediction, &ex, &err) == 0, "%s",
                  err.message);
        rows++;
    }
    if (f != NULL)
        fclose(f);
    CHECK_INT_EQ(rows, 800 + 800 + 312 + 312);
    CHECK_INT_EQ(means, ROUGE_SETS);
    CHECK_NEAR(worst.fmeasure, 0.0, TOLERANCE);
    CHECK_NEAR(worst.precision_recall, 0.0, TOLERANCE);
    printf("  %ld pairs: worst F-measure difference %.2g, precision or recall %.2g, "
           "set mean %.2g\n", rows, worst.fmeasure, worst.precision_recall, worst_mean);
    for (int k = 0; k < ROUGE_SETS; k++)
        pairs_free(&sets[k]);
}

int main(void)
{
    TEST_SUITE("metrics");
    RUN_TEST(normalize_articles_and_punctuation);
    RUN_TEST(normalize_unicode);
    RUN_TEST(normalize_invalid_utf8);
    RUN_TEST(exact_match_cases);
    RUN_TEST(f1_cases);
    RUN_TEST(squad_best_over_golds);
    RUN_TEST(rouge_hand_cases);
    RUN_TEST(rouge_empty_texts);
    RUN_TEST(rouge_tokenizer);
    RUN_TEST(overall_performance_cases);
    RUN_TEST(metric_sum_accuracy);
    RUN_TEST(metric_sum_squad);
    RUN_TEST(metric_sum_rouge);
    RUN_TEST(metric_sum_errors);
    RUN_TEST(unicode_tables_match_python);
    RUN_TEST(squad_matches_official_script);
    RUN_TEST(rouge_matches_rouge_score);
    TEST_MAIN_END();
}
