#include "dataset.h"

#include <dirent.h>
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/types.h>

#include <jansson.h>

/* Size of the buffer a record parser fills with the reason it rejected a record. */
#define REASON_MAX 256

/* ---- building a dataset ---- */

struct dataset_builder {
    struct dataset set;
    long capacity;
};

static void example_free(struct example *ex)
{
    free(ex->input);
    free(ex->target);
    for (int i = 0; i < ex->answer_count; i++)
        free(ex->answers[i]);
    free(ex->answers);
    free(ex->id);
    memset(ex, 0, sizeof *ex);
}

void dataset_free(struct dataset *ds)
{
    if (ds == NULL)
        return;
    for (long i = 0; i < ds->count; i++)
        example_free(&ds->examples[i]);
    free(ds->examples);
    ds->examples = NULL;
    ds->count = 0;
}

/* Concatenates the NULL-terminated list of strings after err into a new string. */
static char *text_join(struct caem_error *err, ...)
{
    va_list ap;
    size_t total = 0;
    va_start(ap, err);
    for (const char *s = va_arg(ap, const char *); s != NULL; s = va_arg(ap, const char *))
        total += strlen(s);
    va_end(ap);

    char *out = caem_malloc(total + 1, "example text", err);
    if (out == NULL)
        return NULL;
    char *end = out;
    va_start(ap, err);
    for (const char *s = va_arg(ap, const char *); s != NULL; s = va_arg(ap, const char *)) {
        size_t n = strlen(s);
        memcpy(end, s, n);
        end += n;
    }
    va_end(ap);
    *end = '\0';
    return out;
}

static char *text_copy(const char *s, struct caem_error *err)
{
    return text_join(err, s, (const char *)NULL);
}

static int builder_append(struct dataset_builder *b, const struct example *ex,
                          struct caem_error *err)
{
    if (b->set.count == b->capacity) {
        long capacity = b->capacity > 0 ? 2 * b->capacity : 256;
        struct example *grown = realloc(b->set.examples, (size_t)capacity * sizeof *grown);
        if (grown == NULL)
            return caem_fail(err, "out of memory: %ld examples", capacity);
        b->set.examples = grown;
        b->capacity = capacity;
    }
    b->set.examples[b->set.count++] = *ex;
    return 0;
}

/* Adds an example with the given input, which it takes ownership of even on
 * failure (a NULL input is a failed allocation whose error is already set).
 * The target is answers[0]. The answers and the id are copied. */
static int builder_add_example(struct dataset_builder *b, char *input,
                               const char *const *answers, int answer_count, const char *id,
                               struct caem_error *err)
{
    if (input == NULL)
        return -1;
    struct example ex = { .input = input };
    ex.answers = caem_calloc((size_t)answer_count, sizeof *ex.answers, "gold answers", err);
    if (ex.answers == NULL)
        goto fail;
    ex.answer_count = answer_count;
    for (int i = 0; i < answer_count; i++) {
        ex.answers[i] = text_copy(answers[i], err);
        if (ex.answers[i] == NULL)
            goto fail;
    }
    ex.target = text_copy(answers[0], err);
    if (ex.target == NULL)
        goto fail;
    if (id != NULL && (ex.id = text_copy(id, err)) == NULL)
        goto fail;
    if (builder_append(b, &ex, err) != 0)
        goto fail;
    return 0;

fail:
    example_free(&ex);
    return -1;
}

/* ---- the load report ---- */

static int load_begin(struct dataset *out, struct dataset_report *report,
                      struct caem_error *err)
{
    if (out == NULL || report == NULL)
        return caem_fail(err, "dataset load: the dataset and the report must not be NULL");
    memset(out, 0, sizeof *out);
    memset(report, 0, sizeof *report);
    return 0;
}

static void load_finish(struct dataset *out, struct dataset_builder *b,
                        struct dataset_report *report)
{
    *out = b->set;
    report->loaded = b->set.count;
}

static void report_skip(struct dataset_report *report, long record, const char *fmt, ...)
    CAEM_PRINTF(3, 4);

/* Counts a skipped record and keeps the reason when it is the first one. */
static void report_skip(struct dataset_report *report, long record, const char *fmt, ...)
{
    report->skipped++;
    if (report->first_bad_record != 0)
        return;
    report->first_bad_record = record;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(report->first_error, sizeof report->first_error, fmt, ap);
    va_end(ap);
}

/* ---- text helpers ---- */

/* Checks that s[0..length) is well-formed UTF-8 without NUL bytes: no overlong
 * forms, no surrogates, nothing above U+10FFFF. */
static int utf8_valid(const char *s, size_t length)
{
    const unsigned char *p = (const unsigned char *)s;
    size_t i = 0;
    while (i < length) {
        unsigned c = p[i];
        if (c == 0)
            return 0;
        if (c < 0x80) {
            i++;
            continue;
        }
        size_t extra;
        unsigned min, value;
        if ((c & 0xE0) == 0xC0) {
            extra = 1, min = 0x80, value = c & 0x1F;
        } else if ((c & 0xF0) == 0xE0) {
            extra = 2, min = 0x800, value = c & 0x0F;
        } else if ((c & 0xF8) == 0xF0) {
            extra = 3, min = 0x10000, value = c & 0x07;
        } else {
            return 0;
        }
        if (length - i <= extra)
            return 0;
        for (size_t k = 1; k <= extra; k++) {
            if ((p[i + k] & 0xC0) != 0x80)
                return 0;
            value = (value << 6) | (p[i + k] & 0x3F);
        }
        if (value < min || value > 0x10FFFF || (value >= 0xD800 && value <= 0xDFFF))
            return 0;
        i += extra + 1;
    }
    return 1;
}

/* Returns the byte offset of code point number `index` (0-based) in the valid
 * UTF-8 string s of `length` bytes, or -1 when s has fewer code points. */
static long utf8_byte_offset(const char *s, size_t length, long index)
{
    size_t pos = 0;
    for (long i = 0; i < index; i++) {
        if (pos >= length)
            return -1;
        pos++;
        while (pos < length && ((unsigned char)s[pos] & 0xC0) == 0x80)
            pos++;
    }
    return (long)pos;
}

static int is_space(char c)
{
    return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\v' || c == '\f';
}

static int text_is_blank(const char *s, size_t length)
{
    for (size_t i = 0; i < length; i++)
        if (!is_space(s[i]))
            return 0;
    return 1;
}

/* ---- line-oriented files (AG News CSV, XSum JSON lines) ---- */

/* Parses one line (NUL-terminated at line[length], without its line break).
 * Returns 0 when it added an example, 1 when the line is malformed (reason
 * filled) and -1 on a failure that ends the load (err set). */
typedef int (*line_parser)(struct dataset_builder *b, char *line, size_t length,
                           char reason[REASON_MAX], struct caem_error *err);

size_t dataset_trim_line(char *line, size_t length, int first_line)
{
    if (length > 0 && line[length - 1] == '\n')
        length--;
    if (length > 0 && line[length - 1] == '\r')
        length--;
    line[length] = '\0';
    if (first_line && length >= 3 && memcmp(line, "\xEF\xBB\xBF", 3) == 0) {
        length -= 3;
        memmove(line, line + 3, length + 1);
    }
    return length;
}

static int load_lines(struct dataset *out, const char *path, struct dataset_report *report,
                      line_parser parse, struct caem_error *err)
{
    if (load_begin(out, report, err) != 0)
        return -1;
    FILE *f = fopen(path, "rb");
    if (f == NULL)
        return caem_fail(err, "failed to open %s: %s", path, strerror(errno));

    struct dataset_builder b = { { NULL, 0 }, 0 };
    char *line = NULL;
    size_t capacity = 0;
    ssize_t read_length;
    long number = 0;
    int status = 0;
    while ((read_length = getline(&line, &capacity, f)) != -1) {
        size_t length = (size_t)read_length;
        number++;

        length = dataset_trim_line(line, length, number == 1);

        char reason[REASON_MAX];
        int result;
        if (!utf8_valid(line, length)) {
            snprintf(reason, sizeof reason, "invalid UTF-8 or a NUL byte");
            result = 1;
        } else if (text_is_blank(line, length)) {
            snprintf(reason, sizeof reason, "empty line");
            result = 1;
        } else {
            result = parse(&b, line, length, reason, err);
        }
        if (result < 0) {
            caem_fail_prefix(err, "%s:%ld", path, number);
            status = -1;
            break;
        }
        if (result == 1)
            report_skip(report, number, "%s:%ld: %s", path, number, reason);
    }
    if (status == 0 && ferror(f))
        status = caem_fail(err, "failed to read %s: %s", path, strerror(errno));
    free(line);
    fclose(f);
    if (status != 0) {
        dataset_free(&b.set);
        return -1;
    }
    load_finish(out, &b, report);
    return 0;
}

/* ---- AG News CSV ---- */

enum { AGNEWS_FIELD_COUNT = 3 };

static const char *const agnews_class_names[4] = {
    "World", "Sports", "Business", "Science and Technology",
};

/* Splits an RFC 4180 line into at most max_fields fields, in place: each
 * field becomes a NUL-terminated string with its quotes removed and "" turned
 * into ". Returns the number of fields, or -1 with the reason filled. */
static int csv_split(char *line, size_t length, char **fields, int max_fields,
                     char reason[REASON_MAX])
{
    size_t pos = 0;
    int count = 0;
    for (;;) {
        if (count == max_fields) {
            snprintf(reason, REASON_MAX, "more than %d fields", max_fields);
            return -1;
        }
        char *start = line + pos;
        char *write = start;
        int field = count + 1;
        if (pos < length && line[pos] == '"') {
            pos++;
            for (;;) {
                if (pos >= length) {
                    snprintf(reason, REASON_MAX, "field %d has no closing quote", field);
                    return -1;
                }
                if (line[pos] == '"' && pos + 1 < length && line[pos + 1] == '"') {
                    *write++ = '"';
                    pos += 2;
                } else if (line[pos] == '"') {
                    pos++;
                    break;
                } else {
                    *write++ = line[pos++];
                }
            }
            if (pos < length && line[pos] != ',') {
                snprintf(reason, REASON_MAX,
                         "unexpected text after the closing quote of field %d", field);
                return -1;
            }
        } else {
            while (pos < length && line[pos] != ',') {
                if (line[pos] == '"') {
                    snprintf(reason, REASON_MAX, "quote inside unquoted field %d", field);
                    return -1;
                }
                *write++ = line[pos++];
            }
        }

        /* pos is at the separating comma or the end. The write position never
         * passes pos, so terminating the field there loses nothing unread. */
        int more = pos < length;
        *write = '\0';
        fields[count++] = start;
        if (!more)
            return count;
        pos++;
    }
}

/* Undoes AG News's escapes in place: "\$" is a dollar sign and any other
 * backslash a line break. */
static void agnews_unescape(char *text)
{
    char *write = text;
    for (const char *read = text; *read != '\0'; read++) {
        if (read[0] == '\\' && read[1] == '$') {
            *write++ = '$';
            read++;
        } else if (read[0] == '\\') {
            *write++ = '\n';
        } else {
            *write++ = *read;
        }
    }
    *write = '\0';
}

static int agnews_parse_line(struct dataset_builder *b, char *line, size_t length,
                             char reason[REASON_MAX], struct caem_error *err)
{
    char *fields[AGNEWS_FIELD_COUNT];
    int count = csv_split(line, length, fields, AGNEWS_FIELD_COUNT, reason);
    if (count < 0)
        return 1;
    if (count != AGNEWS_FIELD_COUNT) {
        snprintf(reason, REASON_MAX, "expected %d fields (class, title, description), found %d",
                 AGNEWS_FIELD_COUNT, count);
        return 1;
    }
    const char *index = fields[0];
    if (index[0] < '1' || index[0] > '4' || index[1] != '\0') {
        snprintf(reason, REASON_MAX, "class index \"%.32s\" is not 1, 2, 3 or 4", index);
        return 1;
    }

    char *title = fields[1], *description = fields[2];
    agnews_unescape(title);
    agnews_unescape(description);
    const char *answer = agnews_class_names[index[0] - '1'];
    char *input = text_join(err, "Classify: ", title, " ", description, (const char *)NULL);
    return builder_add_example(b, input, &answer, 1, NULL, err);
}

int dataset_load_agnews(struct dataset *out, const char *path, struct dataset_report *report,
                        struct caem_error *err)
{
    return load_lines(out, path, report, agnews_parse_line, err);
}

/* ---- XSum JSON lines ---- */

/* Reads a required non-empty string member of a JSON object, or fills reason. */
static const char *json_member_text(json_t *object, const char *key, char reason[REASON_MAX])
{
    json_t *value = json_object_get(object, key);
    if (value == NULL) {
        snprintf(reason, REASON_MAX, "missing \"%s\"", key);
        return NULL;
    }
    if (!json_is_string(value)) {
        snprintf(reason, REASON_MAX, "\"%s\" is not a string", key);
        return NULL;
    }
    const char *text = json_string_value(value);
    if (text_is_blank(text, json_string_length(value))) {
        snprintf(reason, REASON_MAX, "\"%s\" is empty", key);
        return NULL;
    }
    return text;
}

static int xsum_parse_line(struct dataset_builder *b, char *line, size_t length,
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
    const char *document, *summary;
    json_t *id_value = json_object_get(root, "id");
    char id[64];
    if (!json_is_object(root)) {
        snprintf(reason, REASON_MAX, "not a JSON object");
    } else if ((document = json_member_text(root, "document", reason)) == NULL ||
               (summary = json_member_text(root, "summary", reason)) == NULL) {
        /* reason filled */
    } else if (id_value != NULL && !json_is_string(id_value) && !json_is_integer(id_value)) {
        snprintf(reason, REASON_MAX, "\"id\" is neither a string nor an integer");
    } else {
        if (json_is_integer(id_value))
            snprintf(id, sizeof id, "%" JSON_INTEGER_FORMAT, json_integer_value(id_value));
        else if (json_is_string(id_value))
            snprintf(id, sizeof id, "%s", json_string_value(id_value));
        char *input = text_join(err, "Summarize: ", document, (const char *)NULL);
        result = builder_add_example(b, input, &summary, 1, id_value != NULL ? id : NULL, err);
    }
    json_decref(root);
    return result;
}

int dataset_load_xsum_jsonl(struct dataset *out, const char *path,
                            struct dataset_report *report, struct caem_error *err)
{
    return load_lines(out, path, report, xsum_parse_line, err);
}

/* ---- whole files (SQuAD JSON, XSum .data) ---- */

/* Reads a whole file into a NUL-terminated buffer the caller frees. */
static int file_read_all(const char *path, char **data, size_t *length, struct caem_error *err)
{
    FILE *f = fopen(path, "rb");
    if (f == NULL)
        return caem_fail(err, "failed to open %s: %s", path, strerror(errno));
    size_t capacity = 1 << 16, used = 0;
    char *buffer = malloc(capacity + 1);
    int status = buffer == NULL ? caem_fail(err, "out of memory reading %s", path) : 0;
    while (status == 0) {
        if (used == capacity) {
            char *grown = realloc(buffer, 2 * capacity + 1);
            if (grown == NULL) {
                status = caem_fail(err, "out of memory reading %s", path);
                break;
            }
            buffer = grown;
            capacity *= 2;
        }
        size_t n = fread(buffer + used, 1, capacity - used, f);
        used += n;
        if (n == 0)
            break;
    }
    if (status == 0 && ferror(f))
        status = caem_fail(err, "failed to read %s: %s", path, strerror(errno));
    fclose(f);
    if (status != 0) {
        free(buffer);
        return -1;
    }
    buffer[used] = '\0';
    *data = buffer;
    *length = used;
    return 0;
}

/* ---- SQuAD v1.1 JSON ---- */

/* The walk through one SQuAD file. A record is a question, but an article or
 * a paragraph too broken to list its questions counts as one record. */
struct squad_walk {
    struct dataset_builder *builder;
    struct dataset_report *report;
    const char *path;
    long record;
};

/* Checks one answer against the context and fills reason when it is invalid. */
static const char *squad_answer_text(json_t *answer, const char *context, size_t context_length,
                                     char reason[REASON_MAX])
{
    if (!json_is_object(answer)) {
        snprintf(reason, REASON_MAX, "answer is not an object");
        return NULL;
    }
    const char *text = json_member_text(answer, "text", reason);
    if (text == NULL)
        return NULL;
    json_t *start_value = json_object_get(answer, "answer_start");
    if (!json_is_integer(start_value) || json_integer_value(start_value) < 0) {
        snprintf(reason, REASON_MAX, "\"answer_start\" is not a non-negative integer");
        return NULL;
    }

    /* answer_start counts code points, as Python 3 indexes a str, so convert it to bytes.
     * NOTE: no shipped SQuAD context has a character above U+FFFF, so files whose
     * offsets count such a character as two UTF-16 units are untested. */
    json_int_t start = json_integer_value(start_value);
    long offset = utf8_byte_offset(context, context_length, (long)start);
    size_t text_length = strlen(text);
    if (offset < 0 || (size_t)offset + text_length > context_length) {
        snprintf(reason, REASON_MAX,
                 "answer \"%.60s\" at answer_start %" JSON_INTEGER_FORMAT
                 " runs past the end of the context",
                 text, start);
        return NULL;
    }
    if (memcmp(context + offset, text, text_length) != 0) {
        snprintf(reason, REASON_MAX,
                 "answer \"%.60s\" does not match the context at answer_start %"
                 JSON_INTEGER_FORMAT " (found \"%.*s\")",
                 text, start, (int)(text_length < 60 ? text_length : 60), context + offset);
        return NULL;
    }
    return text;
}

/* Adds one question. Returns 0 when added, 1 when malformed and -1 on failure. */
static int squad_add_question(struct squad_walk *walk, json_t *qa, const char *context,
                              size_t context_length, char reason[REASON_MAX],
                              struct caem_error *err)
{
    if (!json_is_object(qa)) {
        snprintf(reason, REASON_MAX, "question entry is not an object");
        return 1;
    }
    const char *question = json_member_text(qa, "question", reason);
    if (question == NULL)
        return 1;
    json_t *answers = json_object_get(qa, "answers");
    if (!json_is_array(answers) || json_array_size(answers) == 0) {
        snprintf(reason, REASON_MAX, "\"answers\" is missing or not a non-empty array");
        return 1;
    }
    size_t answer_count = json_array_size(answers);
    const char **texts = caem_calloc(answer_count, sizeof *texts, "SQuAD answers", err);
    if (texts == NULL)
        return -1;
    for (size_t i = 0; i < answer_count; i++) {
        char answer_reason[REASON_MAX];
        texts[i] = squad_answer_text(json_array_get(answers, i), context, context_length,
                                     answer_reason);
        if (texts[i] == NULL) {
            snprintf(reason, REASON_MAX, "answers[%zu]: %.200s", i, answer_reason);
            free(texts);
            return 1;
        }
    }
    json_t *id = json_object_get(qa, "id");
    char *input = text_join(err, "Question: ", question, " Context: ", context,
                            (const char *)NULL);
    int result = builder_add_example(walk->builder, input, texts, (int)answer_count,
                                     json_is_string(id) ? json_string_value(id) : NULL, err);
    free(texts);
    return result;
}

/* Names the question's position and id in a skip message. */
static void squad_skip(struct squad_walk *walk, const char *location, json_t *qa,
                       const char *reason)
{
    json_t *id = json_object_get(qa, "id");
    if (json_is_string(id))
        report_skip(walk->report, walk->record, "%s: %s (id %s): %s", walk->path, location,
                    json_string_value(id), reason);
    else
        report_skip(walk->report, walk->record, "%s: %s: %s", walk->path, location, reason);
}

static int squad_walk_paragraph(struct squad_walk *walk, json_t *paragraph, size_t article,
                                size_t index, struct caem_error *err)
{
    char location[96];
    snprintf(location, sizeof location, "data[%zu].paragraphs[%zu]", article, index);
    json_t *qas = json_object_get(paragraph, "qas");
    if (!json_is_object(paragraph) || !json_is_array(qas)) {
        walk->record++;
        report_skip(walk->report, walk->record,
                    "%s: %s: not an object with a \"qas\" array", walk->path, location);
        return 0;
    }
    json_t *context_value = json_object_get(paragraph, "context");
    const char *context = json_is_string(context_value) ? json_string_value(context_value) : NULL;
    size_t context_length = context != NULL ? json_string_length(context_value) : 0;

    for (size_t i = 0; i < json_array_size(qas); i++) {
        json_t *qa = json_array_get(qas, i);
        char qa_location[128];
        snprintf(qa_location, sizeof qa_location, "%s.qas[%zu]", location, i);
        walk->record++;
        char reason[REASON_MAX];
        int result;
        if (context == NULL) {
            snprintf(reason, sizeof reason, "the paragraph has no \"context\" string");
            result = 1;
        } else {
            result = squad_add_question(walk, qa, context, context_length, reason, err);
        }
        if (result < 0)
            return caem_fail_prefix(err, "%s: %s", walk->path, qa_location);
        if (result == 1)
            squad_skip(walk, qa_location, qa, reason);
    }
    return 0;
}

static int squad_walk_article(struct squad_walk *walk, json_t *article, size_t index,
                              struct caem_error *err)
{
    json_t *paragraphs = json_object_get(article, "paragraphs");
    if (!json_is_object(article) || !json_is_array(paragraphs)) {
        walk->record++;
        report_skip(walk->report, walk->record,
                    "%s: data[%zu]: not an object with a \"paragraphs\" array", walk->path,
                    index);
        return 0;
    }
    for (size_t i = 0; i < json_array_size(paragraphs); i++)
        if (squad_walk_paragraph(walk, json_array_get(paragraphs, i), index, i, err) != 0)
            return -1;
    return 0;
}

int dataset_load_squad(struct dataset *out, const char *path, struct dataset_report *report,
                       struct caem_error *err)
{
    if (load_begin(out, report, err) != 0)
        return -1;
    char *text;
    size_t length;
    if (file_read_all(path, &text, &length, err) != 0)
        return -1;
    if (text_is_blank(text, length)) {
        free(text);
        return 0;
    }

    json_error_t json_err;
    json_t *root = json_loadb(text, length, 0, &json_err);
    free(text);
    if (root == NULL)
        return caem_fail(err, "%s:%d:%d: invalid JSON: %s", path, json_err.line,
                         json_err.column, json_err.text);
    json_t *data = json_object_get(root, "data");
    if (!json_is_array(data)) {
        json_decref(root);
        return caem_fail(err, "%s: not SQuAD JSON: expected an object with a \"data\" array",
                         path);
    }

    struct dataset_builder builder = { { NULL, 0 }, 0 };
    struct squad_walk walk = { &builder, report, path, 0 };
    int status = 0;
    for (size_t i = 0; i < json_array_size(data) && status == 0; i++)
        status = squad_walk_article(&walk, json_array_get(data, i), i, err);
    json_decref(root);
    if (status != 0) {
        dataset_free(&builder.set);
        return -1;
    }
    load_finish(out, &builder, report);
    return 0;
}

/* ---- XSum extract files (.data) ---- */

/* A growable NUL-terminated string. */
struct text_buffer {
    char *data;
    size_t length, capacity;
};

static int text_buffer_append(struct text_buffer *t, const char *s, size_t n,
                              struct caem_error *err)
{
    if (t->length + n + 1 > t->capacity) {
        size_t capacity = t->capacity > 0 ? t->capacity : 256;
        while (t->length + n + 1 > capacity)
            capacity *= 2;
        char *grown = realloc(t->data, capacity);
        if (grown == NULL)
            return caem_fail(err, "out of memory: %zu bytes of XSum text", capacity);
        t->data = grown;
        t->capacity = capacity;
    }
    memcpy(t->data + t->length, s, n);
    t->length += n;
    t->data[t->length] = '\0';
    return 0;
}

/* Removes leading and trailing white space, line breaks included. */
static void text_buffer_trim(struct text_buffer *t)
{
    if (t->data == NULL)
        return;
    size_t start = 0;
    while (start < t->length && is_space(t->data[start]))
        start++;
    size_t end = t->length;
    while (end > start && is_space(t->data[end - 1]))
        end--;
    memmove(t->data, t->data + start, end - start);
    t->length = end - start;
    t->data[t->length] = '\0';
}

/* Lines of the BBC page's share widget that the extractor kept in RESTBODY. */
static int xsum_is_widget_line(const char *line, size_t length)
{
    static const char *const widget[] = {
        "Share this with", "Email", "Facebook", "Messenger", "Twitter", "Pinterest",
        "WhatsApp", "LinkedIn", "Linkedin", "Copy this link",
        "These are external links and will open in a new window",
    };
    while (length > 0 && is_space(line[0]))
        line++, length--;
    while (length > 0 && is_space(line[length - 1]))
        length--;
    for (size_t i = 0; i < sizeof widget / sizeof widget[0]; i++)
        if (strlen(widget[i]) == length && memcmp(widget[i], line, length) == 0)
            return 1;
    return 0;
}

enum xsum_section { XSUM_NONE = -1, XSUM_URL, XSUM_INTRODUCTION, XSUM_RESTBODY, XSUM_SECTIONS };

static const char *const xsum_markers[XSUM_SECTIONS] = {
    "[XSUM]URL[XSUM]", "[XSUM]INTRODUCTION[XSUM]", "[XSUM]RESTBODY[XSUM]",
};

/* Classifies a line: a section index for a known marker, XSUM_SECTIONS for an
 * unknown "[XSUM]...[XSUM]" marker, XSUM_NONE for text. */
static int xsum_marker(const char *line, size_t length)
{
    for (int s = 0; s < XSUM_SECTIONS; s++)
        if (strlen(xsum_markers[s]) == length && memcmp(xsum_markers[s], line, length) == 0)
            return s;
    if (length >= 12 && memcmp(line, "[XSUM]", 6) == 0 &&
        memcmp(line + length - 6, "[XSUM]", 6) == 0)
        return XSUM_SECTIONS;
    return XSUM_NONE;
}

/* Splits an extract file into its sections. Returns 0 with the introduction
 * in sections[XSUM_INTRODUCTION] and the document in sections[XSUM_RESTBODY],
 * 1 when the file is malformed (reason filled) and -1 on failure. */
static int xsum_split_sections(const char *text, size_t length,
                               struct text_buffer sections[XSUM_SECTIONS],
                               char reason[REASON_MAX], struct caem_error *err)
{
    int seen[XSUM_SECTIONS] = { 0 };
    int current = XSUM_NONE;
    long line_number = 0;
    size_t pos = 0;
    while (pos < length) {
        const char *line = text + pos;
        const char *newline = memchr(line, '\n', length - pos);
        size_t line_length = newline != NULL ? (size_t)(newline - line) : length - pos;
        pos += line_length + (newline != NULL);
        line_number++;
        if (line_length > 0 && line[line_length - 1] == '\r')
            line_length--;

        int marker = xsum_marker(line, line_length);
        if (marker == XSUM_SECTIONS) {
            snprintf(reason, REASON_MAX, "line %ld: unknown section marker %.*s", line_number,
                     (int)(line_length < 60 ? line_length : 60), line);
            return 1;
        }
        if (marker != XSUM_NONE && seen[marker]) {
            snprintf(reason, REASON_MAX, "line %ld: second %s", line_number,
                     xsum_markers[marker]);
            return 1;
        }
        if (marker != XSUM_NONE) {
            seen[marker] = 1;
            current = marker;
            continue;
        }
        if (current == XSUM_NONE && !text_is_blank(line, line_length)) {
            snprintf(reason, REASON_MAX, "line %ld: text before the first [XSUM] marker",
                     line_number);
            return 1;
        }
        if (current == XSUM_NONE || (current == XSUM_RESTBODY &&
                                     xsum_is_widget_line(line, line_length)))
            continue;
        if (text_buffer_append(&sections[current], line, line_length, err) != 0 ||
            text_buffer_append(&sections[current], "\n", 1, err) != 0)
            return -1;
    }

    for (int s = XSUM_INTRODUCTION; s <= XSUM_RESTBODY; s++) {
        text_buffer_trim(&sections[s]);
        if (!seen[s] || sections[s].length == 0) {
            snprintf(reason, REASON_MAX, "%s is %s", xsum_markers[s],
                     seen[s] ? "empty" : "missing");
            return 1;
        }
    }
    return 0;
}

/* Loads one .data file as record number `record`. The file name without
 * ".data" is the example's id. */
static int xsum_raw_load_file(struct dataset_builder *b, const char *path, long record,
                              struct dataset_report *report, struct caem_error *err)
{
    char *text;
    size_t length;
    if (file_read_all(path, &text, &length, err) != 0)
        return -1;

    struct text_buffer sections[XSUM_SECTIONS];
    memset(sections, 0, sizeof sections);
    char reason[REASON_MAX];
    int result;
    if (!utf8_valid(text, length)) {
        snprintf(reason, sizeof reason, "invalid UTF-8 or a NUL byte");
        result = 1;
    } else {
        result = xsum_split_sections(text, length, sections, reason, err);
    }
    if (result == 0) {
        const char *base = strrchr(path, '/');
        base = base != NULL ? base + 1 : path;
        size_t id_length = strlen(base);
        if (id_length > 5 && strcmp(base + id_length - 5, ".data") == 0)
            id_length -= 5;
        char id[256];
        snprintf(id, sizeof id, "%.*s", (int)(id_length < 255 ? id_length : 255), base);
        const char *summary = sections[XSUM_INTRODUCTION].data;
        char *input = text_join(err, "Summarize: ", sections[XSUM_RESTBODY].data,
                                (const char *)NULL);
        result = builder_add_example(b, input, &summary, 1, id, err);
    }
    if (result < 0)
        caem_fail_prefix(err, "%s", path);
    if (result == 1)
        report_skip(report, record, "%s: %s", path, reason);
    for (int s = 0; s < XSUM_SECTIONS; s++)
        free(sections[s].data);
    free(text);
    return result < 0 ? -1 : 0;
}

static int compare_names(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

static void names_free(char **names, size_t count)
{
    for (size_t i = 0; i < count; i++)
        free(names[i]);
    free(names);
}

/* Lists the paths of the regular files named *.data in dir, sorted by name. */
static int xsum_list_directory(const char *dir, char ***paths, size_t *count,
                               struct caem_error *err)
{
    DIR *d = opendir(dir);
    if (d == NULL)
        return caem_fail(err, "failed to open directory %s: %s", dir, strerror(errno));
    char **names = NULL;
    size_t used = 0, capacity = 0;
    int status = 0;
    struct dirent *entry;
    while (status == 0 && (entry = readdir(d)) != NULL) {
        size_t n = strlen(entry->d_name);
        if (n <= 5 || strcmp(entry->d_name + n - 5, ".data") != 0)
            continue;
        char *path = text_join(err, dir, "/", entry->d_name, (const char *)NULL);
        struct stat st;
        if (path == NULL) {
            status = -1;
        } else if (stat(path, &st) != 0 || !S_ISREG(st.st_mode)) {
            free(path);
        } else if (used == capacity) {
            capacity = capacity > 0 ? 2 * capacity : 64;
            char **grown = realloc(names, capacity * sizeof *grown);
            if (grown == NULL) {
                free(path);
                status = caem_fail(err, "out of memory listing %s", dir);
            } else {
                names = grown;
                names[used++] = path;
            }
        } else {
            names[used++] = path;
        }
    }
    closedir(d);
    if (status != 0) {
        names_free(names, used);
        return -1;
    }
    if (used > 0)
        qsort(names, used, sizeof *names, compare_names);
    *paths = names;
    *count = used;
    return 0;
}

int dataset_load_xsum_raw(struct dataset *out, const char *path, struct dataset_report *report,
                          struct caem_error *err)
{
    if (load_begin(out, report, err) != 0)
        return -1;
    struct stat st;
    if (stat(path, &st) != 0)
        return caem_fail(err, "failed to open %s: %s", path, strerror(errno));

    struct dataset_builder builder = { { NULL, 0 }, 0 };
    int status = 0;
    if (S_ISDIR(st.st_mode)) {
        char **paths = NULL;
        size_t count = 0;
        if (xsum_list_directory(path, &paths, &count, err) != 0)
            return -1;
        for (size_t i = 0; i < count && status == 0; i++)
            status = xsum_raw_load_file(&builder, paths[i], (long)i + 1, report, err);
        names_free(paths, count);
    } else {
        status = xsum_raw_load_file(&builder, path, 1, report, err);
    }
    if (status != 0) {
        dataset_free(&builder.set);
        return -1;
    }
    load_finish(out, &builder, report);
    return 0;
}

/* ---- XSum .document / .summary pairs ---- */

/* Reads one side of a pair: its lines without blank lines and share-widget
 * lines, trimmed. Returns 0 with the text in *text, 1 when the file is
 * malformed (reason filled) and -1 on failure. */
static int xsum_pair_read(const char *path, struct text_buffer *text, char reason[REASON_MAX],
                          struct caem_error *err)
{
    char *data;
    size_t length;
    if (file_read_all(path, &data, &length, err) != 0)
        return -1;
    int result = 0;
    if (!utf8_valid(data, length)) {
        snprintf(reason, REASON_MAX, "%s: invalid UTF-8 or a NUL byte", path);
        result = 1;
    }
    size_t pos = 0;
    while (result == 0 && pos < length) {
        const char *line = data + pos;
        const char *newline = memchr(line, '\n', length - pos);
        size_t line_length = newline != NULL ? (size_t)(newline - line) : length - pos;
        pos += line_length + (newline != NULL);
        if (line_length > 0 && line[line_length - 1] == '\r')
            line_length--;
        if (text_is_blank(line, line_length) || xsum_is_widget_line(line, line_length))
            continue;
        if (text_buffer_append(text, line, line_length, err) != 0 ||
            text_buffer_append(text, "\n", 1, err) != 0)
            result = -1;
    }
    text_buffer_trim(text);
    if (result == 0 && text->length == 0) {
        snprintf(reason, REASON_MAX, "%s is empty", path);
        result = 1;
    }
    free(data);
    return result;
}

/* Loads the pair of one id as record number `record`. A missing side makes
 * the record malformed; a side that exists but cannot be read fails the load. */
static int xsum_pair_load(struct dataset_builder *b, const char *dir, const char *id,
                          long record, struct dataset_report *report, struct caem_error *err)
{
    static const char *const extensions[2] = { ".document", ".summary" };
    struct text_buffer sides[2];
    memset(sides, 0, sizeof sides);
    char reason[REASON_MAX];
    int result = 0;
    for (int s = 0; s < 2 && result == 0; s++) {
        char *path = text_join(err, dir, "/", id, extensions[s], (const char *)NULL);
        struct stat st;
        if (path == NULL) {
            result = -1;
        } else if (stat(path, &st) != 0 && errno == ENOENT) {
            snprintf(reason, sizeof reason, "%s is missing", path);
            result = 1;
        } else {
            result = xsum_pair_read(path, &sides[s], reason, err);
        }
        free(path);
    }
    if (result == 0) {
        const char *summary = sides[1].data;
        char *input = text_join(err, "Summarize: ", sides[0].data, (const char *)NULL);
        result = builder_add_example(b, input, &summary, 1, id, err);
    }
    if (result == 1)
        report_skip(report, record, "%s", reason);
    for (int s = 0; s < 2; s++)
        free(sides[s].data);
    return result < 0 ? -1 : 0;
}

/* Lists the distinct ids of the files named ID.document or ID.summary in
 * dir, sorted by name. */
static int xsum_pair_list_ids(const char *dir, char ***ids, size_t *count,
                              struct caem_error *err)
{
    DIR *d = opendir(dir);
    if (d == NULL)
        return caem_fail(err, "failed to open directory %s: %s", dir, strerror(errno));
    char **names = NULL;
    size_t used = 0, capacity = 0;
    int status = 0;
    struct dirent *entry;
    while (status == 0 && (entry = readdir(d)) != NULL) {
        const char *dot = strrchr(entry->d_name, '.');
        if (dot == NULL || dot == entry->d_name ||
            (strcmp(dot, ".document") != 0 && strcmp(dot, ".summary") != 0))
            continue;
        if (used == capacity) {
            capacity = capacity > 0 ? 2 * capacity : 64;
            char **grown = realloc(names, capacity * sizeof *grown);
            if (grown == NULL) {
                status = caem_fail(err, "out of memory listing %s", dir);
                break;
            }
            names = grown;
        }
        names[used] = strndup(entry->d_name, (size_t)(dot - entry->d_name));
        if (names[used] == NULL)
            status = caem_fail(err, "out of memory listing %s", dir);
        else
            used++;
    }
    closedir(d);
    if (status != 0) {
        names_free(names, used);
        return -1;
    }
    if (used > 0)
        qsort(names, used, sizeof *names, compare_names);
    /* each complete pair lists its id twice */
    size_t distinct = 0;
    for (size_t i = 0; i < used; i++) {
        if (distinct > 0 && strcmp(names[distinct - 1], names[i]) == 0)
            free(names[i]);
        else
            names[distinct++] = names[i];
    }
    *ids = names;
    *count = distinct;
    return 0;
}

int dataset_load_xsum_pairs(struct dataset *out, const char *dir, const char *const *ids,
                            size_t id_count, struct dataset_report *report,
                            struct caem_error *err)
{
    if (load_begin(out, report, err) != 0)
        return -1;
    struct stat st;
    if (stat(dir, &st) != 0)
        return caem_fail(err, "failed to open directory %s: %s", dir, strerror(errno));
    if (!S_ISDIR(st.st_mode))
        return caem_fail(err, "failed to open directory %s: not a directory", dir);
    char **listed = NULL;
    size_t listed_count = 0;
    if (ids == NULL) {
        if (xsum_pair_list_ids(dir, &listed, &listed_count, err) != 0)
            return -1;
        ids = (const char *const *)listed;
        id_count = listed_count;
    }
    struct dataset_builder builder = { { NULL, 0 }, 0 };
    int status = 0;
    for (size_t i = 0; i < id_count && status == 0; i++)
        status = xsum_pair_load(&builder, dir, ids[i], (long)i + 1, report, err);
    names_free(listed, listed_count);
    if (status != 0) {
        dataset_free(&builder.set);
        return -1;
    }
    load_finish(out, &builder, report);
    return 0;
}
