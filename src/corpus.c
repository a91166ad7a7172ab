#include "corpus_internal.h"

#include <dirent.h>
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

const char *const corpus_split_names[CORPUS_SPLITS] = { "train", "validation", "test" };
const char *const corpus_task_names[CORPUS_TASKS] = { "summarization", "classification", "qa" };

uint64_t corpus_key_hash(const char *key)
{
    uint64_t hash = 14695981039346656037ULL;
    for (const unsigned char *c = (const unsigned char *)key; *c != '\0'; c++) {
        hash ^= *c;
        hash *= 1099511628211ULL;
    }
    return hash;
}

enum corpus_split corpus_split_of(const char *key)
{
    unsigned bucket = (unsigned)(corpus_key_hash(key) % 100);
    if (bucket < 80)
        return CORPUS_TRAIN;
    return bucket < 90 ? CORPUS_VALIDATION : CORPUS_TEST;
}

int corpus_examples_add(struct corpus_examples *list, const char *key, json_t *record,
                        struct caem_error *err)
{
    if (record == NULL)
        return caem_fail(err, "out of memory building the example for '%s'", key);
    if (list->count == list->capacity) {
        long capacity = list->capacity ? list->capacity * 2 : 1024;
        struct corpus_example *grown = realloc(list->items, sizeof *grown * (size_t)capacity);
        if (grown == NULL) {
            json_decref(record);
            return caem_fail(err, "out of memory for %ld examples", capacity);
        }
        list->items = grown;
        list->capacity = capacity;
    }
    char *copy = strdup(key);
    if (copy == NULL) {
        json_decref(record);
        return caem_fail(err, "out of memory copying key '%s'", key);
    }
    list->items[list->count++] = (struct corpus_example){ copy, corpus_key_hash(key), record };
    return 0;
}

void corpus_examples_free(struct corpus_examples *list)
{
    for (long i = 0; i < list->count; i++) {
        free(list->items[i].key);
        json_decref(list->items[i].record);
    }
    free(list->items);
    memset(list, 0, sizeof *list);
}

void corpus_note_malformed(struct corpus_task_report *report, const char *fmt, ...)
{
    if (report->malformed++ > 0)
        return;
    va_list args;
    va_start(args, fmt);
    vsnprintf(report->first_malformed, sizeof report->first_malformed, fmt, args);
    va_end(args);
}

static int compare_examples(const void *a, const void *b)
{
    const struct corpus_example *x = a, *y = b;
    if (x->hash != y->hash)
        return x->hash < y->hash ? -1 : 1;
    return strcmp(x->key, y->key);
}

static int make_dir(const char *path, struct caem_error *err)
{
    if (mkdir(path, 0755) != 0 && errno != EEXIST)
        return caem_fail(err, "cannot create directory %s: %s", path, strerror(errno));
    return 0;
}

/* Writes text to path through a temporary file renamed into place, so that
 * an interrupted build never leaves a partial file under the final name. */
static FILE *open_temporary(const char *path, char *temporary, size_t size,
                            struct caem_error *err)
{
    snprintf(temporary, size, "%s.tmp", path);
    FILE *f = fopen(temporary, "wb");
    if (f == NULL)
        caem_fail(err, "cannot create %s: %s", temporary, strerror(errno));
    return f;
}

static int close_and_rename(FILE *f, const char *temporary, const char *path,
                            struct caem_error *err)
{
    int failed = ferror(f);
    if (fclose(f) != 0 || failed)
        return caem_fail(err, "writing %s failed: %s", temporary, strerror(errno));
    if (rename(temporary, path) != 0)
        return caem_fail(err, "cannot rename %s to %s: %s", temporary, path, strerror(errno));
    return 0;
}

static int write_split(const char *dir, enum corpus_split split,
                       const struct corpus_examples *examples, long count, long *written,
                       struct caem_error *err)
{
    char path[4200], temporary[4300];
    snprintf(path, sizeof path, "%s/%s.jsonl", dir, corpus_split_names[split]);
    FILE *f = open_temporary(path, temporary, sizeof temporary, err);
    if (f == NULL)
        return -1;
    *written = 0;
    for (long i = 0; i < count; i++) {
        const struct corpus_example *e = &examples->items[i];
        if (corpus_split_of(e->key) != split)
            continue;
        char *line = json_dumps(e->record, JSON_COMPACT | JSON_PRESERVE_ORDER);
        if (line == NULL) {
            fclose(f);
            return caem_fail(err, "cannot encode the example '%s' as JSON", e->key);
        }
        fputs(line, f);
        fputc('\n', f);
        free(line);
        (*written)++;
    }
    return close_and_rename(f, temporary, path, err);
}

static int write_counts(const char *dir, enum corpus_task task, json_t *extra,
                        const struct corpus_task_report *report, struct caem_error *err)
{
    json_t *counts = json_object();
    json_object_set_new(counts, "task", json_string(corpus_task_names[task]));
    for (int s = 0; s < CORPUS_SPLITS; s++)
        json_object_set_new(counts, corpus_split_names[s], json_integer(report->counts[s]));
    json_object_set_new(counts, "records_read", json_integer(report->records));
    json_object_set_new(counts, "malformed_records", json_integer(report->malformed));
    json_object_set_new(counts, "first_malformed",
                        report->malformed > 0 ? json_string(report->first_malformed)
                                              : json_null());
    if (extra != NULL)
        json_object_update(counts, extra);
    char *text = json_dumps(counts, JSON_INDENT(2) | JSON_PRESERVE_ORDER);
    json_decref(counts);
    if (text == NULL)
        return caem_fail(err, "cannot encode %s/counts.json (invalid UTF-8 in a reason?)", dir);

    char path[4200], temporary[4300];
    snprintf(path, sizeof path, "%s/counts.json", dir);
    FILE *f = open_temporary(path, temporary, sizeof temporary, err);
    if (f == NULL) {
        free(text);
        return -1;
    }
    fputs(text, f);
    fputc('\n', f);
    free(text);
    return close_and_rename(f, temporary, path, err);
}

int corpus_write_task(const struct corpus_options *options, enum corpus_task task,
                      struct corpus_examples *examples, json_t *extra,
                      struct corpus_task_report *report, struct caem_error *err)
{
    /* Ordering by key hash is a deterministic shuffle, so the prefix that
     * max_examples keeps is an unbiased sample. */
    if (examples->count > 1)
        qsort(examples->items, (size_t)examples->count, sizeof examples->items[0],
          compare_examples);
    long count = examples->count;
    if (options->max_examples > 0 && count > options->max_examples)
        count = options->max_examples;

    char dir[4096];
    snprintf(dir, sizeof dir, "%s/%s", options->out_dir, corpus_task_names[task]);
    if (make_dir(options->out_dir, err) != 0 || make_dir(dir, err) != 0)
        return -1;
    for (int s = 0; s < CORPUS_SPLITS; s++)
        if (write_split(dir, (enum corpus_split)s, examples, count, &report->counts[s],
                        err) != 0)
            return -1;
    return write_counts(dir, task, extra, report, err);
}

static int compare_strings(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* Whether a file name in apt's lists directory is an index of this kind:
 * "..._<kind>" with an optional compression extension. Translation-en_GB and
 * other languages do not match Translation-en. */
static int is_index_name(const char *name, const char *kind)
{
    size_t k = strlen(kind);
    const char *found = NULL;
    for (const char *p = strstr(name, kind); p != NULL; p = strstr(p + 1, kind))
        found = p;
    if (found == NULL || found == name || found[-1] != '_')
        return 0;
    const char *rest = found + k;
    return rest[0] == '\0' || (rest[0] == '.' && strchr(rest + 1, '.') == NULL &&
                               strchr(rest + 1, '_') == NULL);
}

int corpus_list_index_files(const char *lists_dir, const char *kind, char ***paths,
                            int *count, struct caem_error *err)
{
    *paths = NULL;
    *count = 0;
    DIR *dir = opendir(lists_dir);
    if (dir == NULL)
        return caem_fail(err, "cannot read apt's lists directory %s: %s", lists_dir,
                         strerror(errno));
    struct dirent *entry;
    int capacity = 0;
    while ((entry = readdir(dir)) != NULL) {
        if (!is_index_name(entry->d_name, kind))
            continue;
        if (*count == capacity) {
            capacity = capacity ? capacity * 2 : 8;
            char **grown = realloc(*paths, sizeof *grown * (size_t)capacity);
            if (grown == NULL)
                break;
            *paths = grown;
        }
        size_t size = strlen(lists_dir) + strlen(entry->d_name) + 2;
        char *path = malloc(size);
        if (path == NULL)
            break;
        snprintf(path, size, "%s/%s", lists_dir, entry->d_name);
        (*paths)[(*count)++] = path;
    }
    int failed = entry != NULL;
    closedir(dir);
    if (failed) {
        for (int i = 0; i < *count; i++)
            free((*paths)[i]);
        free(*paths);
        *paths = NULL;
        *count = 0;
        return caem_fail(err, "out of memory listing %s", lists_dir);
    }
    if (*count > 1)
        qsort(*paths, (size_t)*count, sizeof **paths, compare_strings);
    return 0;
}

int corpus_count_index_files(const char *lists_dir, const char *kind)
{
    char **paths;
    int count;
    if (corpus_list_index_files(lists_dir, kind, &paths, &count, NULL) != 0)
        return -1;
    for (int i = 0; i < count; i++)
        free(paths[i]);
    free(paths);
    return count;
}

int corpus_build(const struct corpus_options *options, struct corpus_report *report,
                 struct caem_error *err)
{
    memset(report, 0, sizeof *report);
    if (corpus_build_apt_tasks(options, report, err) != 0)
        return -1;
    return corpus_build_qa(options, &report->tasks[CORPUS_QA], err);
}
