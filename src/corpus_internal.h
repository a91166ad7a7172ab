/* Shared between corpus.c, corpus_apt.c and corpus_qa.c. */
#ifndef CAEM_CORPUS_INTERNAL_H
#define CAEM_CORPUS_INTERNAL_H

#include <jansson.h>

#include "corpus.h"

/* One output record and the key that decides its split. */
struct corpus_example {
    char *key;
    uint64_t hash;
    json_t *record;   /* owned: one reference */
};

struct corpus_examples {
    struct corpus_example *items;
    long count;
    long capacity;
};

/* Appends an example, taking ownership of record (also on failure). */
int corpus_examples_add(struct corpus_examples *list, const char *key, json_t *record,
                        struct caem_error *err);
void corpus_examples_free(struct corpus_examples *list);

/* Notes a malformed record in report: counts it and keeps the first reason. */
void corpus_note_malformed(struct corpus_task_report *report, const char *fmt, ...)
    CAEM_PRINTF(2, 3);

/* Writes the examples of one task under out_dir/<task>/ and fills the
 * report's counts. extra, when not NULL, is merged into counts.json (a
 * reference is taken). */
int corpus_write_task(const struct corpus_options *options, enum corpus_task task,
                      struct corpus_examples *examples, json_t *extra,
                      struct corpus_task_report *report, struct caem_error *err);

int corpus_build_apt_tasks(const struct corpus_options *options, struct corpus_report *report,
                           struct caem_error *err);
int corpus_build_qa(const struct corpus_options *options, struct corpus_task_report *report,
                    struct caem_error *err);

/* Lists the index files of one kind in lists_dir, sorted by name with strcmp.
 * The caller frees each path and the array. */
int corpus_list_index_files(const char *lists_dir, const char *kind, char ***paths,
                            int *count, struct caem_error *err);

#endif
