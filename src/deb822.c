#include "deb822.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

void deb822_reader_init(struct deb822_reader *reader, FILE *input)
{
    memset(reader, 0, sizeof *reader);
    reader->input = input;
}

void deb822_reader_free(struct deb822_reader *reader)
{
    free(reader->line);
    reader->line = NULL;
    reader->line_capacity = 0;
}

static void record_clear(struct deb822_record *record)
{
    for (int i = 0; i < record->count; i++) {
        free(record->fields[i].name);
        free(record->fields[i].value);
    }
    record->count = 0;
    record->malformed[0] = '\0';
}

void deb822_record_free(struct deb822_record *record)
{
    record_clear(record);
    free(record->fields);
    record->fields = NULL;
    record->capacity = 0;
}

const char *deb822_get(const struct deb822_record *record, const char *name)
{
    for (int i = 0; i < record->count; i++)
        if (strcasecmp(record->fields[i].name, name) == 0)
            return record->fields[i].value;
    return NULL;
}

static void mark_malformed(struct deb822_record *record, long line, const char *why)
{
    if (record->malformed[0] == '\0')
        snprintf(record->malformed, sizeof record->malformed, "line %ld: %s", line, why);
}

static char *trim_copy(const char *begin, const char *end)
{
    while (begin < end && (*begin == ' ' || *begin == '\t'))
        begin++;
    while (end > begin && (end[-1] == ' ' || end[-1] == '\t'))
        end--;
    return strndup(begin, (size_t)(end - begin));
}

/* Appends '\n' and text to the last field's value. */
static int append_continuation(struct deb822_record *record, const char *text)
{
    struct deb822_field *field = &record->fields[record->count - 1];
    size_t old = strlen(field->value), extra = strlen(text);
    char *grown = realloc(field->value, old + extra + 2);
    if (grown == NULL)
        return -1;
    grown[old] = '\n';
    memcpy(grown + old + 1, text, extra + 1);
    field->value = grown;
    return 0;
}

static int add_field(struct deb822_record *record, const char *line, const char *colon)
{
    if (record->count == record->capacity) {
        int capacity = record->capacity ? record->capacity * 2 : 16;
        struct deb822_field *grown = realloc(record->fields, sizeof *grown * (size_t)capacity);
        if (grown == NULL)
            return -1;
        record->fields = grown;
        record->capacity = capacity;
    }
    char *name = trim_copy(line, colon);
    char *value = trim_copy(colon + 1, colon + 1 + strlen(colon + 1));
    if (name == NULL || value == NULL) {
        free(name);
        free(value);
        return -1;
    }
    record->fields[record->count].name = name;
    record->fields[record->count].value = value;
    record->count++;
    return 0;
}

/* Parses one non-blank, non-comment line into record. */
static int parse_line(struct deb822_record *record, const char *line, long line_number)
{
    if (line[0] == ' ' || line[0] == '\t') {
        if (record->count == 0) {
            mark_malformed(record, line_number, "continuation line before any field");
            return 0;
        }
        return append_continuation(record, line + 1);
    }
    const char *colon = strchr(line, ':');
    if (colon == NULL) {
        mark_malformed(record, line_number, "expected 'Field: value', found no colon");
        return 0;
    }
    if (colon == line) {
        mark_malformed(record, line_number, "empty field name");
        return 0;
    }
    if (add_field(record, line, colon) != 0)
        return -1;
    const char *name = record->fields[record->count - 1].name;
    for (int i = 0; i < record->count - 1; i++) {
        if (strcasecmp(record->fields[i].name, name) == 0) {
            char why[160];
            snprintf(why, sizeof why, "field '%.100s' given twice", name);
            mark_malformed(record, line_number, why);
            break;
        }
    }
    return 0;
}

int deb822_read(struct deb822_reader *reader, struct deb822_record *record,
                const char *source, struct caem_error *err)
{
    record_clear(record);
    int started = 0;
    ssize_t length;
    errno = 0;
    while ((length = getline(&reader->line, &reader->line_capacity, reader->input)) != -1) {
        reader->line_number++;
        char *line = reader->line;
        while (length > 0 && (line[length - 1] == '\n' || line[length - 1] == '\r'))
            line[--length] = '\0';
        if (line[strspn(line, " \t")] == '\0') {
            if (started)
                return 1;
            continue;
        }
        if (line[0] == '#')
            continue;
        if (!started) {
            started = 1;
            record->number = ++reader->record_number;
            record->first_line = reader->line_number;
        }
        if (parse_line(record, line, reader->line_number) != 0)
            return caem_fail(err, "%s: out of memory at line %ld", source,
                             reader->line_number);
    }
    if (ferror(reader->input))
        return caem_fail(err, "%s: read failed after line %ld: %s", source,
                         reader->line_number, strerror(errno != 0 ? errno : EIO));
    return started ? 1 : 0;
}
