#include "results.h"

#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define RESULTS_HEADER "model,task,split,metric,value,step,time\n"
#define NUMBER_MAX 40

/* ---- line buffers ---- */

struct line_buffer {
    char *data;
    size_t length, capacity;
};

static int buffer_append(struct line_buffer *b, const char *text, size_t length,
                         struct caem_error *err)
{
    if (b->length + length + 1 > b->capacity) {
        size_t capacity = b->capacity ? b->capacity : 256;
        while (capacity < b->length + length + 1)
            capacity *= 2;
        char *grown = realloc(b->data, capacity);
        if (grown == NULL)
            return caem_fail(err, "out of memory: %zu bytes for a results line", capacity);
        b->data = grown;
        b->capacity = capacity;
    }
    memcpy(b->data + b->length, text, length);
    b->length += length;
    b->data[b->length] = '\0';
    return 0;
}

static int buffer_append_text(struct line_buffer *b, const char *text, struct caem_error *err)
{
    return buffer_append(b, text, strlen(text), err);
}

/* Writes the shortest "%.*g" form of x that strtod reads back to x. */
static void format_number(double x, char out[NUMBER_MAX])
{
    for (int digits = 1; digits <= 17; digits++) {
        snprintf(out, NUMBER_MAX, "%.*g", digits, x);
        if (strtod(out, NULL) == x)
            return;
    }
}

/* ---- formatting one row ---- */

static int csv_append_field(struct line_buffer *b, const char *field, struct caem_error *err)
{
    if (strpbrk(field, ",\"\r\n") == NULL)
        return buffer_append_text(b, field, err);
    if (buffer_append(b, "\"", 1, err) != 0)
        return -1;
    for (const char *p = field; *p != '\0'; p++) {
        if (*p == '"' && buffer_append(b, "\"", 1, err) != 0)
            return -1;
        if (buffer_append(b, p, 1, err) != 0)
            return -1;
    }
    return buffer_append(b, "\"", 1, err);
}

static int format_csv_row(const struct result_row *row, struct line_buffer *b,
                          struct caem_error *err)
{
    const char *names[4] = { row->model, row->task, row->split, row->metric };
    char value[NUMBER_MAX], time_text[NUMBER_MAX], step[NUMBER_MAX];
    format_number(row->value, value);
    format_number(row->time, time_text);
    snprintf(step, sizeof step, "%ld", row->step);
    b->length = 0;
    for (int k = 0; k < 4; k++)
        if (csv_append_field(b, names[k], err) != 0 || buffer_append(b, ",", 1, err) != 0)
            return -1;
    if (buffer_append_text(b, value, err) != 0 || buffer_append(b, ",", 1, err) != 0 ||
        buffer_append_text(b, step, err) != 0 || buffer_append(b, ",", 1, err) != 0 ||
        buffer_append_text(b, time_text, err) != 0 || buffer_append(b, "\n", 1, err) != 0)
        return -1;
    return 0;
}

/* Appends `"key":"value"` with the string escaped by jansson. */
static int json_append_member(struct line_buffer *b, const char *key, const char *value,
                              struct caem_error *err)
{
    json_t *string = json_string(value);
    char *encoded = string != NULL ? json_dumps(string, JSON_ENCODE_ANY) : NULL;
    json_decref(string);
    if (encoded == NULL)
        return caem_fail(err, "out of memory encoding the %s name", key);
    int status = buffer_append_text(b, "\"", err) != 0 || buffer_append_text(b, key, err) != 0 ||
                 buffer_append_text(b, "\":", err) != 0 ||
                 buffer_append_text(b, encoded, err) != 0 ? -1 : 0;
    free(encoded);
    return status;
}

/* One JSON object. jansson escapes the strings, and the numbers are written
 * here so that they take their shortest exact form, as in the CSV file. */
static int format_json_row(const struct result_row *row, struct line_buffer *b,
                           struct caem_error *err)
{
    char value[NUMBER_MAX], time_text[NUMBER_MAX], tail[3 * NUMBER_MAX + 40];
    format_number(row->value, value);
    format_number(row->time, time_text);
    snprintf(tail, sizeof tail, ",\"value\":%s,\"step\":%ld,\"time\":%s}\n", value, row->step,
             time_text);
    b->length = 0;
    if (buffer_append_text(b, "{", err) != 0 ||
        json_append_member(b, "model", row->model, err) != 0 ||
        buffer_append_text(b, ",", err) != 0 ||
        json_append_member(b, "task", row->task, err) != 0 ||
        buffer_append_text(b, ",", err) != 0 ||
        json_append_member(b, "split", row->split, err) != 0 ||
        buffer_append_text(b, ",", err) != 0 ||
        json_append_member(b, "metric", row->metric, err) != 0)
        return -1;
    return buffer_append_text(b, tail, err);
}

static int utf8_valid(const char *text)
{
    json_t *string = json_string(text);
    json_decref(string);
    return string != NULL;
}

static int check_row(const struct result_row *row, int index, struct caem_error *err)
{
    const char *names[4] = { row->model, row->task, row->split, row->metric };
    static const char *const fields[4] = { "model", "task", "split", "metric" };
    for (int k = 0; k < 4; k++) {
        if (names[k] == NULL)
            return caem_fail(err, "result row %d: %s is missing (NULL)", index, fields[k]);
        if (!utf8_valid(names[k]))
            return caem_fail(err, "result row %d: %s is not valid UTF-8", index, fields[k]);
    }
    if (!isfinite(row->value))
        return caem_fail(err, "result row %d (%s %s %s): value %g is not finite", index,
                         row->model, row->task, row->metric, row->value);
    if (!isfinite(row->time))
        return caem_fail(err, "result row %d (%s %s %s): time %g is not finite", index,
                         row->model, row->task, row->metric, row->time);
    return 0;
}

/* ---- opening the files ---- */

static char *path_with_suffix(const char *prefix, const char *suffix, struct caem_error *err)
{
    size_t length = strlen(prefix) + strlen(suffix) + 1;
    char *path = caem_malloc(length, "a results path", err);
    if (path != NULL)
        snprintf(path, length, "%s%s", prefix, suffix);
    return path;
}

/* Checks that the file at fd starts with the header line. */
static int check_header(int fd, const char *path, struct caem_error *err)
{
    const size_t header_length = strlen(RESULTS_HEADER);
    char first[sizeof RESULTS_HEADER];
    ssize_t got = pread(fd, first, header_length, 0);
    if (got < 0)
        return caem_fail(err, "cannot read %s: %s", path, strerror(errno));
    if (got == 0)
        return caem_fail(err, "%s is empty, so it lacks the header line \"%.*s\". Remove it "
                         "or choose another prefix", path, (int)header_length - 1,
                         RESULTS_HEADER);
    if ((size_t)got != header_length || memcmp(first, RESULTS_HEADER, header_length) != 0)
        return caem_fail(err, "%s has a different header: expected the first line \"%.*s\". "
                         "Choose another prefix for these results", path,
                         (int)header_length - 1, RESULTS_HEADER);
    return 0;
}

/* Creates the CSV file with its header unless it exists: the header goes into
 * a temporary file, which link(2) puts at the path only when nothing is there. */
static int create_csv(const char *path, struct caem_error *err)
{
    size_t length = strlen(path) + 48;
    char *temporary = caem_malloc(length, "a temporary path", err);
    if (temporary == NULL)
        return -1;
    int fd = -1;
    for (int attempt = 0; fd < 0 && attempt < 100; attempt++) {
        snprintf(temporary, length, "%s.%ld.%d.tmp", path, (long)getpid(), attempt);
        fd = open(temporary, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0666);
        if (fd < 0 && errno != EEXIST)
            break;
    }
    if (fd < 0) {
        caem_fail(err, "cannot create %s: %s", temporary, strerror(errno));
        free(temporary);
        return -1;
    }
    const size_t header_length = strlen(RESULTS_HEADER);
    int status = 0;
    if (write(fd, RESULTS_HEADER, header_length) != (ssize_t)header_length)
        status = caem_fail(err, "cannot write %s: %s", temporary, strerror(errno));
    if (close(fd) != 0 && status == 0)
        status = caem_fail(err, "cannot write %s: %s", temporary, strerror(errno));
    /* Another process may have created the file since the caller looked:
     * then its file stays, and the caller checks its header. */
    if (status == 0 && link(temporary, path) != 0 && errno != EEXIST)
        status = caem_fail(err, "cannot create %s: %s", path, strerror(errno));
    unlink(temporary);
    free(temporary);
    return status;
}

/* Opens the CSV file for appending, creating it with its header when it is
 * missing, and checks the header of an existing one. */
static int open_csv(const char *path, struct caem_error *err)
{
    int fd = open(path, O_RDWR | O_APPEND | O_CLOEXEC);
    if (fd < 0 && errno == ENOENT) {
        if (create_csv(path, err) != 0)
            return -1;
        fd = open(path, O_RDWR | O_APPEND | O_CLOEXEC);
    }
    if (fd < 0) {
        caem_fail(err, "cannot open %s: %s", path, strerror(errno));
        return -1;
    }
    if (check_header(fd, path, err) != 0) {
        close(fd);
        return -1;
    }
    return fd;
}

/* Writes length bytes with one write(2), retrying only when a signal
 * interrupted it before anything was written. */
static int write_line(int fd, const char *path, const char *line, size_t length,
                      struct caem_error *err)
{
    ssize_t written;
    do
        written = write(fd, line, length);
    while (written < 0 && errno == EINTR);
    if (written < 0)
        return caem_fail(err, "cannot write %s: %s", path, strerror(errno));
    if ((size_t)written != length)
        return caem_fail(err, "cannot write %s: only %zd of %zu bytes were written", path,
                         written, length);
    return 0;
}

/* ---- appending ---- */

int results_append(const char *prefix, const struct result_row *rows, int count,
                   struct caem_error *err)
{
    if (count < 0)
        return caem_fail(err, "results: %d rows to append", count);
    for (int i = 0; i < count; i++)
        if (check_row(&rows[i], i, err) != 0)
            return -1;

    int status = -1, csv_fd = -1, json_fd = -1;
    struct line_buffer csv_line = { 0 }, json_line = { 0 };
    char *csv_path = path_with_suffix(prefix, ".csv", err);
    char *json_path = path_with_suffix(prefix, ".jsonl", err);
    if (csv_path == NULL || json_path == NULL)
        goto done;
    csv_fd = open_csv(csv_path, err);
    if (csv_fd < 0)
        goto done;
    json_fd = open(json_path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0666);
    if (json_fd < 0) {
        caem_fail(err, "cannot open %s: %s", json_path, strerror(errno));
        goto done;
    }
    for (int i = 0; i < count; i++) {
        if (format_csv_row(&rows[i], &csv_line, err) != 0 ||
            format_json_row(&rows[i], &json_line, err) != 0)
            goto done;
        if (write_line(csv_fd, csv_path, csv_line.data, csv_line.length, err) != 0 ||
            write_line(json_fd, json_path, json_line.data, json_line.length, err) != 0)
            goto done;
    }
    status = 0;
done:
    if (csv_fd >= 0 && close(csv_fd) != 0 && status == 0)
        status = caem_fail(err, "cannot write %s: %s", csv_path, strerror(errno));
    if (json_fd >= 0 && close(json_fd) != 0 && status == 0)
        status = caem_fail(err, "cannot write %s: %s", json_path, strerror(errno));
    free(csv_line.data);
    free(json_line.data);
    free(csv_path);
    free(json_path);
    return status;
}

/* ---- reading ---- */

static const char *row_string(json_t *object, const char *key, char **out)
{
    json_t *value = json_object_get(object, key);
    if (value == NULL)
        return "is missing";
    if (!json_is_string(value))
        return "is not a string";
    *out = strdup(json_string_value(value));
    return *out == NULL ? "cannot be copied (out of memory)" : NULL;
}

/* Fills row from one JSON line, or returns why the line is malformed. */
static const char *parse_row(json_t *object, struct result_row *row, char reason[256])
{
    static const char *const keys[4] = { "model", "task", "split", "metric" };
    char *names[4] = { NULL, NULL, NULL, NULL };
    const char *problem = NULL;
    int k;
    if (!json_is_object(object))
        return "not a JSON object";
    for (k = 0; k < 4 && problem == NULL; k++)
        problem = row_string(object, keys[k], &names[k]);
    json_t *value = json_object_get(object, "value");
    json_t *step = json_object_get(object, "step");
    json_t *time_value = json_object_get(object, "time");
    if (problem != NULL) {
        snprintf(reason, 256, "member \"%s\" %s", keys[k - 1], problem);
    } else if (!json_is_number(value)) {
        snprintf(reason, 256, "member \"value\" is missing or not a number");
    } else if (!json_is_integer(step)) {
        snprintf(reason, 256, "member \"step\" is missing or not an integer");
    } else if (!json_is_number(time_value)) {
        snprintf(reason, 256, "member \"time\" is missing or not a number");
    } else {
        row->model = names[0];
        row->task = names[1];
        row->split = names[2];
        row->metric = names[3];
        row->value = json_number_value(value);
        row->step = (long)json_integer_value(step);
        row->time = json_number_value(time_value);
        return NULL;
    }
    for (k = 0; k < 4; k++)
        free(names[k]);
    return reason;
}

static int is_blank(const char *line)
{
    return line[strspn(line, " \t\r\n")] == '\0';
}

int results_read(const char *prefix, struct result_row **rows, long *count,
                 struct caem_error *err)
{
    *rows = NULL;
    *count = 0;
    char *path = path_with_suffix(prefix, ".jsonl", err);
    if (path == NULL)
        return -1;
    FILE *f = fopen(path, "rb");
    if (f == NULL) {
        caem_fail(err, "cannot open %s: %s", path, strerror(errno));
        free(path);
        return -1;
    }
    struct result_row *list = NULL;
    long n = 0, capacity = 0, line_number = 0;
    char *line = NULL;
    size_t line_capacity = 0;
    int status = 0;
    while (status == 0 && getline(&line, &line_capacity, f) != -1) {
        line_number++;
        if (is_blank(line))
            continue;
        if (n == capacity) {
            long grown_capacity = capacity ? 2 * capacity : 64;
            struct result_row *grown = realloc(list, (size_t)grown_capacity * sizeof *grown);
            if (grown == NULL) {
                status = caem_fail(err, "out of memory reading %s at line %ld", path,
                                   line_number);
                break;
            }
            list = grown;
            capacity = grown_capacity;
        }
        json_error_t json_err;
        char reason[256];
        const char *problem = NULL;
        json_t *object = json_loads(line, JSON_REJECT_DUPLICATES, &json_err);
        if (object == NULL) {
            snprintf(reason, sizeof reason, "invalid JSON at column %d: %s", json_err.column,
                     json_err.text);
            problem = reason;
        } else {
            problem = parse_row(object, &list[n], reason);
        }
        json_decref(object);
        if (problem != NULL)
            status = caem_fail(err, "%s:%ld: %s", path, line_number, problem);
        else
            n++;
    }
    if (status == 0 && ferror(f))
        status = caem_fail(err, "cannot read %s: %s", path, strerror(errno));
    free(line);
    fclose(f);
    free(path);
    if (status != 0) {
        results_free(list, n);
        return -1;
    }
    *rows = list;
    *count = n;
    return 0;
}

void results_free(struct result_row *rows, long count)
{
    if (rows == NULL)
        return;
    /* results_read allocated every string, so casting away const is safe. */
    for (long i = 0; i < count; i++) {
        free((char *)rows[i].model);
        free((char *)rows[i].task);
        free((char *)rows[i].split);
        free((char *)rows[i].metric);
    }
    free(rows);
}

double results_time_now(void)
{
    struct timespec now;
    clock_gettime(CLOCK_REALTIME, &now);
    return (double)now.tv_sec + (double)now.tv_nsec * 1e-9;
}
