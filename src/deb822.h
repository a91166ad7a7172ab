/* A reader for deb822 control data, the format of apt's Packages and
 * Translation-en index files.
 *
 * A record is a run of "Field: value" lines ended by a blank line or the end
 * of the input. A line that starts with a space or a tab continues the
 * previous field's value. Lines that start with '#' are comments and are
 * ignored. Field names compare without regard to ASCII case. */
#ifndef CAEM_DEB822_H
#define CAEM_DEB822_H

#include <stdio.h>

#include "error.h"

struct deb822_field {
    char *name;
    /* The first line's text after the colon, without surrounding blanks, then
     * for each continuation line a '\n' and the line without its first
     * character (the leading space or tab). */
    char *value;
};

struct deb822_record {
    struct deb822_field *fields;
    int count;
    int capacity;
    long number;      /* 1-based position of the record in the input */
    long first_line;  /* 1-based line number of its first line */
    /* Empty for a well-formed record. Otherwise why it is malformed, with the
     * line number: a line with no colon, an empty field name, a continuation
     * line before any field, or the same field twice. */
    char malformed[256];
};

struct deb822_reader {
    FILE *input;
    long line_number;
    long record_number;
    char *line;
    size_t line_capacity;
};

/* Starts reading records from input, which the caller keeps open and closes. */
void deb822_reader_init(struct deb822_reader *reader, FILE *input);

/* Reads the next record into record, replacing its previous contents. A
 * malformed record is still returned, whole, with record->malformed set.
 * Returns 1 when a record was read, 0 at the end of the input and -1 when
 * reading failed (the message names source). */
int deb822_read(struct deb822_reader *reader, struct deb822_record *record,
                const char *source, struct caem_error *err);

/* Returns the value of the named field, or NULL when the record lacks it. */
const char *deb822_get(const struct deb822_record *record, const char *name);

void deb822_record_free(struct deb822_record *record);
void deb822_reader_free(struct deb822_reader *reader);

#endif
