/* The summarization and classification tasks, from apt's index files. */
#include "corpus_internal.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "deb822.h"

#define APT_HELPER "/usr/lib/apt/apt-helper"

/* One distinct description from a Translation-en file. */
struct description {
    char *md5;
    char *package;
    json_t *synopsis;   /* the first line */
    json_t *body;       /* the long description, NULL when there is none */
    long order;         /* position in reading order, for a stable sort */
};

struct descriptions {
    struct description *items;
    long count;
    long capacity;
};

/* A Packages record in one of the sections of the classification task. */
struct package_entry {
    char *package;
    char *md5;
    int label;
    long order;
};

struct package_entries {
    struct package_entry *items;
    long count;
    long capacity;
};

/* Sections of the classification task and their labels. Each has several
 * hundred packages in Debian 12's main archive. */
static const char *const class_sections[][2] = {
    { "games", "games" },         { "science", "science" },    { "sound", "sound" },
    { "graphics", "graphics" },   { "net", "networking" },     { "mail", "email" },
    { "editors", "text editors" }, { "database", "databases" }, { "math", "mathematics" },
};
#define CLASS_COUNT ((int)(sizeof class_sections / sizeof class_sections[0]))

/* Converts the continuation lines of Description-en into text: a line "."
 * separates paragraphs (written as "\n"), the lines of a paragraph are joined
 * with spaces, and a line that starts with a further space (preformatted in
 * deb822) starts a new line. Returns NULL for a description with no long
 * part, and sets *out_of_memory when allocation failed. */
static char *description_body(const char *value, int *out_of_memory)
{
    *out_of_memory = 0;
    const char *line = strchr(value, '\n');
    if (line == NULL)
        return NULL;
    size_t size = strlen(line) + 1;
    char *body = malloc(size);
    if (body == NULL) {
        *out_of_memory = 1;
        return NULL;
    }
    size_t n = 0;
    while (line != NULL) {
        line++;
        const char *end = strchr(line, '\n');
        size_t length = end != NULL ? (size_t)(end - line) : strlen(line);
        int preformatted = length > 0 && (line[0] == ' ' || line[0] == '\t');
        const char *text = line;
        while (length > 0 && (*text == ' ' || *text == '\t')) {
            text++;
            length--;
        }
        if (length == 1 && text[0] == '.') {
            if (n > 0 && body[n - 1] != '\n')
                body[n++] = '\n';
        } else if (length > 0) {
            if (n > 0 && body[n - 1] != '\n')
                body[n++] = preformatted ? '\n' : ' ';
            memcpy(body + n, text, length);
            n += length;
        }
        line = end;
    }
    while (n > 0 && body[n - 1] == '\n')
        n--;
    body[n] = '\0';
    if (n == 0) {
        free(body);
        return NULL;
    }
    return body;
}

/* Runs apt-helper cat-file on path, which decompresses any format apt
 * writes, and returns its output stream. */
static FILE *open_index(const char *path, struct caem_error *err)
{
    if (strchr(path, '\'') != NULL) {
        caem_fail(err, "%s: index file name contains a quote, which is not supported", path);
        return NULL;
    }
    char command[4300];
    snprintf(command, sizeof command, APT_HELPER " cat-file '%s'", path);
    FILE *f = popen(command, "r");
    if (f == NULL)
        caem_fail(err, "cannot run %s on %s: %s", APT_HELPER, path, strerror(errno));
    return f;
}

static int close_index(FILE *f, const char *path, int status, struct caem_error *err)
{
    int exit_status = pclose(f);
    if (status == 0 && exit_status != 0)
        return caem_fail(err, "%s cat-file %s failed (status %d)", APT_HELPER, path,
                         exit_status);
    return status;
}

typedef int (*record_handler)(const struct deb822_record *record, const char *path,
                              void *context, struct corpus_task_report *report);

/* Reads every record of every index file of one kind and hands the
 * well-formed ones to handle. */
static int read_indexes(const struct corpus_options *options, const char *kind,
                        record_handler handle, void *context,
                        struct corpus_task_report *report, struct caem_error *err)
{
    char **paths;
    int count;
    if (corpus_list_index_files(options->lists_dir, kind, &paths, &count, err) != 0)
        return -1;
    int status = count == 0 ? caem_fail(err, "no %s index files in %s", kind,
                                        options->lists_dir)
                            : 0;
    for (int i = 0; i < count && status == 0; i++) {
        FILE *f = open_index(paths[i], err);
        if (f == NULL) {
            status = -1;
            break;
        }
        struct deb822_reader reader;
        struct deb822_record record = { 0 };
        deb822_reader_init(&reader, f);
        int got;
        while ((got = deb822_read(&reader, &record, paths[i], err)) == 1) {
            report->records++;
            if (record.malformed[0] != '\0') {
                corpus_note_malformed(report, "%s: record %ld: %s", paths[i], record.number,
                                      record.malformed);
                continue;
            }
            if (handle(&record, paths[i], context, report) != 0) {
                status = caem_fail(err, "out of memory reading %s", paths[i]);
                break;
            }
        }
        if (got < 0)
            status = -1;
        deb822_record_free(&record);
        deb822_reader_free(&reader);
        status = close_index(f, paths[i], status, err);
    }
    for (int i = 0; i < count; i++)
        free(paths[i]);
    free(paths);
    return status;
}

/* Returns the first of the named fields that record lacks, or NULL. */
static const char *missing_field(const struct deb822_record *record, const char *const *names)
{
    for (; *names != NULL; names++)
        if (deb822_get(record, *names) == NULL)
            return *names;
    return NULL;
}

static int add_translation(const struct deb822_record *record, const char *path,
                           void *context, struct corpus_task_report *report)
{
    struct descriptions *list = context;
    static const char *const required[] = { "Package", "Description-md5", "Description-en",
                                            NULL };
    const char *missing = missing_field(record, required);
    if (missing != NULL) {
        corpus_note_malformed(report, "%s: record %ld (line %ld): missing field %s", path,
                              record->number, record->first_line, missing);
        return 0;
    }
    const char *value = deb822_get(record, "Description-en");
    int out_of_memory;
    char *body = description_body(value, &out_of_memory);
    if (out_of_memory)
        return -1;
    size_t synopsis_length = strcspn(value, "\n");
    json_t *synopsis = json_stringn(value, synopsis_length);
    json_t *body_json = body != NULL ? json_string(body) : NULL;
    free(body);
    if (synopsis == NULL || (body != NULL && body_json == NULL)) {
        json_decref(synopsis);
        json_decref(body_json);
        corpus_note_malformed(report, "%s: record %ld (line %ld): Description-en is not "
                              "valid UTF-8", path, record->number, record->first_line);
        return 0;
    }
    if (list->count == list->capacity) {
        long capacity = list->capacity ? list->capacity * 2 : 4096;
        struct description *grown = realloc(list->items, sizeof *grown * (size_t)capacity);
        if (grown == NULL)
            return -1;
        list->items = grown;
        list->capacity = capacity;
    }
    struct description *d = &list->items[list->count];
    d->md5 = strdup(deb822_get(record, "Description-md5"));
    d->package = strdup(deb822_get(record, "Package"));
    d->synopsis = synopsis;
    d->body = body_json;
    d->order = list->count;
    list->count++;
    return d->md5 == NULL || d->package == NULL ? -1 : 0;
}

static int section_label(const char *section)
{
    /* "contrib/games" and "non-free/games" are in section games */
    const char *slash = strrchr(section, '/');
    if (slash != NULL)
        section = slash + 1;
    for (int i = 0; i < CLASS_COUNT; i++)
        if (strcmp(section, class_sections[i][0]) == 0)
            return i;
    return -1;
}

static int add_package(const struct deb822_record *record, const char *path, void *context,
                       struct corpus_task_report *report)
{
    struct package_entries *list = context;
    static const char *const required[] = { "Package", "Section", NULL };
    const char *missing = missing_field(record, required);
    if (missing != NULL) {
        corpus_note_malformed(report, "%s: record %ld (line %ld): missing field %s", path,
                              record->number, record->first_line, missing);
        return 0;
    }
    int label = section_label(deb822_get(record, "Section"));
    const char *md5 = deb822_get(record, "Description-md5");
    if (label < 0 || md5 == NULL)
        return 0;
    if (list->count == list->capacity) {
        long capacity = list->capacity ? list->capacity * 2 : 4096;
        struct package_entry *grown = realloc(list->items, sizeof *grown * (size_t)capacity);
        if (grown == NULL)
            return -1;
        list->items = grown;
        list->capacity = capacity;
    }
    struct package_entry *e = &list->items[list->count];
    e->package = strdup(deb822_get(record, "Package"));
    e->md5 = strdup(md5);
    e->label = label;
    e->order = list->count;
    list->count++;
    return e->package == NULL || e->md5 == NULL ? -1 : 0;
}

static int compare_descriptions(const void *a, const void *b)
{
    const struct description *x = a, *y = b;
    int c = strcmp(x->md5, y->md5);
    if (c == 0)
        c = strcmp(x->package, y->package);
    if (c == 0)
        c = x->order < y->order ? -1 : x->order > y->order;
    return c;
}

static int compare_description_md5(const void *key, const void *item)
{
    return strcmp(key, ((const struct description *)item)->md5);
}

static int compare_packages_by_name(const void *a, const void *b)
{
    const struct package_entry *x = a, *y = b;
    int c = strcmp(x->package, y->package);
    return c != 0 ? c : (x->order < y->order ? -1 : x->order > y->order);
}

static int compare_packages_by_md5(const void *a, const void *b)
{
    const struct package_entry *x = a, *y = b;
    int c = strcmp(x->md5, y->md5);
    return c != 0 ? c : strcmp(x->package, y->package);
}

/* Keeps one description per Description-md5, the one of the package whose
 * name sorts first, so that the choice does not depend on file order. */
static void keep_distinct_descriptions(struct descriptions *list)
{
    if (list->count > 1)
        qsort(list->items, (size_t)list->count, sizeof list->items[0], compare_descriptions);
    long kept = 0;
    for (long i = 0; i < list->count; i++) {
        struct description *d = &list->items[i];
        if (kept > 0 && strcmp(list->items[kept - 1].md5, d->md5) == 0) {
            free(d->md5);
            free(d->package);
            json_decref(d->synopsis);
            json_decref(d->body);
            continue;
        }
        list->items[kept++] = *d;
    }
    list->count = kept;
}

static json_t *text_example(const char *id, json_t *input, json_t *target)
{
    json_t *record = json_object();
    if (record == NULL)
        return NULL;
    json_object_set_new(record, "id", json_string(id));
    json_object_set(record, "input", input);
    json_object_set_new(record, "target", target);
    return record;
}

static int build_summarization(const struct corpus_options *options,
                               const struct descriptions *list,
                               struct corpus_task_report *report, struct caem_error *err)
{
    struct corpus_examples examples = { 0 };
    long without_body = 0;
    for (long i = 0; i < list->count; i++) {
        const struct description *d = &list->items[i];
        if (d->body == NULL) {
            without_body++;
            continue;
        }
        json_t *record = text_example(d->package, d->body, json_incref(d->synopsis));
        if (corpus_examples_add(&examples, d->package, record, err) != 0) {
            corpus_examples_free(&examples);
            return -1;
        }
    }
    json_t *extra = json_pack("{s:s, s:I, s:I}", "source",
                              "apt Translation-en index files (Description-en)",
                              "distinct_descriptions", (json_int_t)list->count,
                              "without_long_description", (json_int_t)without_body);
    int status = corpus_write_task(options, CORPUS_SUMMARIZATION, &examples, extra, report,
                                   err);
    json_decref(extra);
    corpus_examples_free(&examples);
    return status;
}

/* Reduces entries to one per package name (the first read) and then one per
 * description, so that no text appears twice. */
static void keep_distinct_packages(struct package_entries *list)
{
    long kept = 0;
    if (list->count > 1)
        qsort(list->items, (size_t)list->count, sizeof list->items[0], compare_packages_by_name);
    for (long i = 0; i < list->count; i++) {
        if (kept > 0 && strcmp(list->items[kept - 1].package, list->items[i].package) == 0) {
            free(list->items[i].package);
            free(list->items[i].md5);
            continue;
        }
        list->items[kept++] = list->items[i];
    }
    list->count = kept;
    kept = 0;
    if (list->count > 1)
        qsort(list->items, (size_t)list->count, sizeof list->items[0], compare_packages_by_md5);
    for (long i = 0; i < list->count; i++) {
        if (kept > 0 && strcmp(list->items[kept - 1].md5, list->items[i].md5) == 0) {
            free(list->items[i].package);
            free(list->items[i].md5);
            continue;
        }
        list->items[kept++] = list->items[i];
    }
    list->count = kept;
}

/* Order for the class balance: by a hash of "balance:" and the package
 * name, which is unrelated to the split hash, so the down-sampling keeps
 * the same share of each split. */
struct balance_item {
    uint64_t hash;
    const struct package_entry *entry;
    const struct description *description;
};

static int compare_balance(const void *a, const void *b)
{
    const struct balance_item *x = a, *y = b;
    if (x->entry->label != y->entry->label)
        return x->entry->label - y->entry->label;
    if (x->hash != y->hash)
        return x->hash < y->hash ? -1 : 1;
    return strcmp(x->entry->package, y->entry->package);
}

static int build_classification(const struct corpus_options *options,
                                const struct descriptions *descriptions,
                                struct package_entries *packages,
                                struct corpus_task_report *report, struct caem_error *err)
{
    keep_distinct_packages(packages);
    struct balance_item *items = calloc((size_t)packages->count + 1, sizeof *items);
    if (items == NULL)
        return caem_fail(err, "out of memory for %ld packages", packages->count);
    long n = 0, available[CLASS_COUNT] = { 0 };
    for (long i = 0; i < packages->count; i++) {
        const struct package_entry *e = &packages->items[i];
        const struct description *d = bsearch(e->md5, descriptions->items,
                                              (size_t)descriptions->count,
                                              sizeof descriptions->items[0],
                                              compare_description_md5);
        if (d == NULL || d->body == NULL)
            continue;
        char salted[512];
        snprintf(salted, sizeof salted, "balance:%s", e->package);
        items[n++] = (struct balance_item){ corpus_key_hash(salted), e, d };
        available[e->label]++;
    }
    if (n > 1)
        qsort(items, (size_t)n, sizeof items[0], compare_balance);

    /* down-sample every class to the size of the smallest */
    long per_class = n > 0 ? available[0] : 0;
    for (int c = 1; c < CLASS_COUNT; c++)
        if (available[c] < per_class)
            per_class = available[c];
    struct corpus_examples examples = { 0 };
    json_t *labels = json_object();
    int status = 0;
    long taken[CLASS_COUNT] = { 0 };
    for (long i = 0; i < n && status == 0; i++) {
        int label = items[i].entry->label;
        if (taken[label] >= per_class)
            continue;
        taken[label]++;
        const char *name = class_sections[label][1];
        json_t *record = text_example(items[i].entry->package, items[i].description->body,
                                      json_string(name));
        status = corpus_examples_add(&examples, items[i].entry->package, record, err);
    }
    for (int c = 0; c < CLASS_COUNT; c++)
        json_object_set_new(labels, class_sections[c][1],
                            json_pack("{s:s, s:I}", "section", class_sections[c][0],
                                      "available", (json_int_t)available[c]));
    free(items);
    if (status == 0) {
        json_t *extra = json_pack("{s:s, s:I, s:o}", "source",
                                  "apt Packages index files (Section), joined to "
                                  "Translation-en by Description-md5",
                                  "examples_per_class", (json_int_t)per_class,
                                  "labels", labels);
        labels = NULL;
        status = corpus_write_task(options, CORPUS_CLASSIFICATION, &examples, extra, report,
                                   err);
        json_decref(extra);
    }
    json_decref(labels);
    corpus_examples_free(&examples);
    return status;
}

static void free_descriptions(struct descriptions *list)
{
    for (long i = 0; i < list->count; i++) {
        free(list->items[i].md5);
        free(list->items[i].package);
        json_decref(list->items[i].synopsis);
        json_decref(list->items[i].body);
    }
    free(list->items);
}

static void free_packages(struct package_entries *list)
{
    for (long i = 0; i < list->count; i++) {
        free(list->items[i].package);
        free(list->items[i].md5);
    }
    free(list->items);
}

int corpus_build_apt_tasks(const struct corpus_options *options, struct corpus_report *report,
                           struct caem_error *err)
{
    struct descriptions descriptions = { 0 };
    struct package_entries packages = { 0 };
    struct corpus_task_report *summary = &report->tasks[CORPUS_SUMMARIZATION];
    struct corpus_task_report *classes = &report->tasks[CORPUS_CLASSIFICATION];
    int status = read_indexes(options, "Translation-en", add_translation, &descriptions,
                              summary, err);
    if (status == 0)
        status = read_indexes(options, "Packages", add_package, &packages, classes, err);
    if (status == 0) {
        keep_distinct_descriptions(&descriptions);
        status = build_summarization(options, &descriptions, summary, err);
    }
    if (status == 0)
        status = build_classification(options, &descriptions, &packages, classes, err);
    free_descriptions(&descriptions);
    free_packages(&packages);
    return status;
}
