/* The extractive question-answering task, from WordNet's data files. */
#include "corpus_internal.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "wordnet.h"

static const char *const data_files[] = { "data.noun", "data.verb", "data.adj", "data.adv" };

/* Number of UTF-8 code points in the first bytes of text. */
static long code_points(const char *text, size_t bytes)
{
    long n = 0;
    for (size_t i = 0; i < bytes; i++)
        if (((unsigned char)text[i] & 0xC0) != 0x80)
            n++;
    return n;
}

/* Appends to answers the span of lemma in context when found and not there yet. */
static void add_answer(json_t *answers, const char *context, size_t start, size_t length)
{
    json_t *span = json_stringn(context + start, length);
    if (span == NULL)
        return;
    size_t i;
    json_t *existing;
    json_array_foreach(answers, i, existing) {
        if (json_equal(existing, span)) {
            json_decref(span);
            return;
        }
    }
    json_array_append_new(answers, span);
}

/* Builds the example of a synset: the first example sentence, in gloss
 * order, in which one of its lemmas (in synset order) is found. Returns NULL
 * when none is found or the text is not valid UTF-8. */
static json_t *synset_example(const struct wordnet_synset *synset)
{
    if (synset->definition[0] == '\0')
        return NULL;
    for (int e = 0; e < synset->example_count; e++) {
        const char *context = synset->examples[e];
        size_t start = 0, length = 0;
        int w = 0;
        while (w < synset->word_count &&
               !wordnet_find_lemma(context, synset->words[w], &start, &length))
            w++;
        if (w == synset->word_count)
            continue;

        /* every other lemma found in the same sentence is also a gold answer */
        json_t *answers = json_array();
        add_answer(answers, context, start, length);
        for (int other = w + 1; other < synset->word_count; other++) {
            size_t s, n;
            if (wordnet_find_lemma(context, synset->words[other], &s, &n))
                add_answer(answers, context, s, n);
        }
        size_t input_size = strlen(synset->definition) + strlen(context) + 32;
        char *input = malloc(input_size);
        if (input == NULL) {
            json_decref(answers);
            return NULL;
        }
        snprintf(input, input_size, "Question: %s Context: %s", synset->definition, context);
        json_t *record = json_pack("{s:s, s:s, s:s%, s:s, s:s, s:I, s:o}",
                                   "id", "", "input", input, "target", context + start,
                                   length, "question", synset->definition, "context",
                                   context, "answer_start",
                                   (json_int_t)code_points(context, start), "answers",
                                   answers);
        free(input);
        return record;
    }
    return NULL;
}

static int read_data_file(const char *path, struct corpus_examples *examples,
                          struct corpus_task_report *report, struct caem_error *err)
{
    FILE *f = fopen(path, "rb");
    if (f == NULL)
        return caem_fail(err, "cannot open WordNet data file %s: %s (install the Debian "
                         "package wordnet-base, e.g. with tools/deps.sh)", path,
                         strerror(errno));
    char *line = NULL;
    size_t capacity = 0;
    ssize_t length;
    long line_number = 0;
    int status = 0;
    while (status == 0 && (length = getline(&line, &capacity, f)) != -1) {
        line_number++;
        while (length > 0 && (line[length - 1] == '\n' || line[length - 1] == '\r' ||
                              line[length - 1] == ' '))
            line[--length] = '\0';
        struct wordnet_synset synset;
        char reason[128];
        int got = wordnet_parse_line(line, &synset, reason, sizeof reason);
        if (got == 0)
            continue;
        report->records++;
        if (got < 0) {
            corpus_note_malformed(report, "%s: line %ld: %s", path, line_number, reason);
            continue;
        }
        json_t *record = synset_example(&synset);
        if (record != NULL) {
            char key[32];
            snprintf(key, sizeof key, "%08ld-%c", synset.offset, synset.pos);
            json_object_set_new(record, "id", json_string(key));
            status = corpus_examples_add(examples, key, record, err);
        }
        wordnet_synset_free(&synset);
    }
    if (status == 0 && ferror(f))
        status = caem_fail(err, "reading %s failed after line %ld", path, line_number);
    free(line);
    fclose(f);
    return status;
}

int corpus_build_qa(const struct corpus_options *options, struct corpus_task_report *report,
                    struct caem_error *err)
{
    struct corpus_examples examples = { 0 };
    int status = 0;
    for (size_t i = 0; i < sizeof data_files / sizeof data_files[0] && status == 0; i++) {
        char path[4096];
        snprintf(path, sizeof path, "%s/%s", options->wordnet_dir, data_files[i]);
        status = read_data_file(path, &examples, report, err);
    }
    if (status == 0) {
        json_t *extra = json_pack("{s:s}", "source", "WordNet 3.0 data files "
                                  "(Debian package wordnet-base)");
        status = corpus_write_task(options, CORPUS_QA, &examples, extra, report, err);
        json_decref(extra);
    }
    corpus_examples_free(&examples);
    return status;
}
