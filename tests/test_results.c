/* Results files: round trips through PREFIX.csv and PREFIX.jsonl, appending
 * to existing files, RFC 4180 quoting, concurrent appenders, and the errors
 * for a wrong header, a malformed line and a path that cannot be opened. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "results.h"
#include "test.h"

#define HEADER "model,task,split,metric,value,step,time\n"

/* ---- helpers ---- */

static char test_dir[64];

static const char *make_dir(void)
{
    snprintf(test_dir, sizeof test_dir, "/tmp/caem-results-XXXXXX");
    return mkdtemp(test_dir);
}

/* Returns test_dir/name in one of eight buffers used in turn, so that a test
 * can hold a prefix while it builds the paths of its files. */
static const char *dir_path(const char *name)
{
    static char paths[8][256];
    static int next;
    char *path = paths[next];
    next = (next + 1) % 8;
    snprintf(path, sizeof paths[0], "%s/%s", test_dir, name);
    return path;
}

/* Removes the files the tests create and the directory. */
static void remove_dir(void)
{
    static const char *const names[] = { "r.csv", "r.jsonl", "q.csv", "q.jsonl", "h.csv",
                                         "h.jsonl", "e.csv", "e.jsonl", "m.jsonl", "c.csv",
                                         "c.jsonl", "d.csv", "bad.csv", "bad.jsonl" };
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++)
        unlink(dir_path(names[i]));
    rmdir(dir_path("d.csv"));
    rmdir(test_dir);
}

static char *read_text(const char *path)
{
    FILE *f = fopen(path, "rb");
    if (f == NULL)
        return NULL;
    size_t capacity = 1 << 20;
    char *text = malloc(capacity);
    size_t n = text != NULL ? fread(text, 1, capacity - 1, f) : 0;
    fclose(f);
    if (text != NULL)
        text[n] = '\0';
    return text;
}

static void write_text(const char *path, const char *text)
{
    FILE *f = fopen(path, "wb");
    CHECK(f != NULL);
    if (f != NULL) {
        fputs(text, f);
        fclose(f);
    }
}

static int rows_equal(const struct result_row *a, const struct result_row *b)
{
    return strcmp(a->model, b->model) == 0 && strcmp(a->task, b->task) == 0 &&
           strcmp(a->split, b->split) == 0 && strcmp(a->metric, b->metric) == 0 &&
           a->value == b->value && a->step == b->step && a->time == b->time;
}

static const struct result_row sample_rows[] = {
    { "CAEM-8", "agnews", "test", "accuracy", 94.25, 1200, 1714000000.125 },
    { "CAEM-8", "squad", "validation", "f1", 0.1 + 0.2, 1200, 1714000001.5 },
    { "Baseline-8", "xsum", "test", "rougeL", 29.36, 0, 1714000002.0 },
};
#define SAMPLE_COUNT 3

/* ---- tests ---- */

static void test_round_trip(void)
{
    CHECK(make_dir() != NULL);
    struct caem_error err;
    const char *prefix = dir_path("r");
    CHECK_MSG(results_append(prefix, sample_rows, SAMPLE_COUNT, &err) == 0, "%s", err.message);

    char *csv = read_text(dir_path("r.csv"));
    CHECK(csv != NULL);
    if (csv != NULL) {
        /* Shortest exact digits: 0.1 + 0.2 needs 17, the others fewer. */
        const char *expected = HEADER
            "CAEM-8,agnews,test,accuracy,94.25,1200,1714000000.125\n"
            "CAEM-8,squad,validation,f1,0.30000000000000004,1200,1714000001.5\n"
            "Baseline-8,xsum,test,rougeL,29.36,0,1714000002\n";
        CHECK_MSG(strcmp(csv, expected) == 0, "CSV file:\n%s", csv);
    }
    free(csv);

    char *jsonl = read_text(dir_path("r.jsonl"));
    CHECK(jsonl != NULL);
    if (jsonl != NULL) {
        const char *first = "{\"model\":\"CAEM-8\",\"task\":\"agnews\",\"split\":\"test\","
                            "\"metric\":\"accuracy\",\"value\":94.25,\"step\":1200,"
                            "\"time\":1714000000.125}\n";
        CHECK_MSG(strncmp(jsonl, first, strlen(first)) == 0, "JSON lines file:\n%s", jsonl);
    }
    free(jsonl);

    struct result_row *rows = NULL;
    long count = 0;
    CHECK_MSG(results_read(prefix, &rows, &count, &err) == 0, "%s", err.message);
    CHECK_INT_EQ(count, SAMPLE_COUNT);
    for (long i = 0; i < count && i < SAMPLE_COUNT; i++)
        CHECK_MSG(rows_equal(&rows[i], &sample_rows[i]), "row %ld differs", i);
    results_free(rows, count);
    remove_dir();
}

static void test_append_to_existing(void)
{
    CHECK(make_dir() != NULL);
    struct caem_error err;
    const char *prefix = dir_path("r");
    CHECK_MSG(results_append(prefix, sample_rows, 2, &err) == 0, "%s", err.message);
    CHECK_MSG(results_append(prefix, sample_rows + 2, 1, &err) == 0, "%s", err.message);
    CHECK_MSG(results_append(prefix, sample_rows, 1, &err) == 0, "%s", err.message);

    char *csv = read_text(dir_path("r.csv"));
    CHECK(csv != NULL);
    if (csv != NULL) {
        int lines = 0, headers = 0;
        for (const char *p = csv; (p = strchr(p, '\n')) != NULL; p++)
            lines++;
        for (const char *p = csv; (p = strstr(p, "model,task")) != NULL; p++)
            headers++;
        CHECK_INT_EQ(lines, 5);
        CHECK_INT_EQ(headers, 1);
        CHECK(strncmp(csv, HEADER, strlen(HEADER)) == 0);
    }
    free(csv);

    struct result_row *rows = NULL;
    long count = 0;
    CHECK_MSG(results_read(prefix, &rows, &count, &err) == 0, "%s", err.message);
    CHECK_INT_EQ(count, 4);
    if (count == 4) {
        CHECK(rows_equal(&rows[0], &sample_rows[0]));
        CHECK(rows_equal(&rows[1], &sample_rows[1]));
        CHECK(rows_equal(&rows[2], &sample_rows[2]));
        CHECK(rows_equal(&rows[3], &sample_rows[0]));
    }
    results_free(rows, count);
    remove_dir();
}

static void test_quoting_of_names(void)
{
    CHECK(make_dir() != NULL);
    struct caem_error err;
    const struct result_row row = { "CAEM-8, \"soup\"", "multi\nline", "test\r", "rouge,L",
                                    -1.5e-7, -3, 0.0 };
    const char *prefix = dir_path("q");
    CHECK_MSG(results_append(prefix, &row, 1, &err) == 0, "%s", err.message);
    char *csv = read_text(dir_path("q.csv"));
    CHECK(csv != NULL);
    if (csv != NULL) {
        const char *expected = HEADER
            "\"CAEM-8, \"\"soup\"\"\",\"multi\nline\",\"test\r\",\"rouge,L\",-1.5e-07,-3,0\n";
        CHECK_MSG(strcmp(csv, expected) == 0, "CSV file:\n%s", csv);
    }
    free(csv);

    struct result_row *rows = NULL;
    long count = 0;
    CHECK_MSG(results_read(prefix, &rows, &count, &err) == 0, "%s", err.message);
    CHECK_INT_EQ(count, 1);
    if (count == 1)
        CHECK(rows_equal(&rows[0], &row));
    results_free(rows, count);

    /* UTF-8 names pass through both files unchanged. */
    const struct result_row unicode = { "caem-\xc3\xa9", "t\xe2\x80\x9cq\xe2\x80\x9d", "test",
                                        "f1", 1.0, 1, 2.0 };
    CHECK_MSG(results_append(prefix, &unicode, 1, &err) == 0, "%s", err.message);
    CHECK_MSG(results_read(prefix, &rows, &count, &err) == 0, "%s", err.message);
    CHECK_INT_EQ(count, 2);
    if (count == 2)
        CHECK(rows_equal(&rows[1], &unicode));
    results_free(rows, count);
    remove_dir();
}

static void test_header_mismatch(void)
{
    CHECK(make_dir() != NULL);
    struct caem_error err;
    const char *prefix = dir_path("h");
    const char *other = "model,task,value\nx,y,1\n";
    write_text(dir_path("h.csv"), other);
    CHECK_INT_EQ(results_append(prefix, sample_rows, 1, &err), -1);
    CHECK_MSG(strstr(err.message, dir_path("h.csv")) != NULL, "%s", err.message);
    CHECK_MSG(strstr(err.message, "header") != NULL, "%s", err.message);
    /* Nothing was written: the CSV file is unchanged and no JSON lines file
     * was created. */
    char *csv = read_text(dir_path("h.csv"));
    CHECK(csv != NULL);
    if (csv != NULL)
        CHECK(strcmp(csv, other) == 0);
    free(csv);
    CHECK(access(dir_path("h.jsonl"), F_OK) != 0);

    write_text(dir_path("e.csv"), "");
    CHECK_INT_EQ(results_append(dir_path("e"), sample_rows, 1, &err), -1);
    CHECK_MSG(strstr(err.message, "empty") != NULL, "%s", err.message);
    remove_dir();
}

static void test_invalid_rows_rejected(void)
{
    CHECK(make_dir() != NULL);
    struct caem_error err;
    const char *prefix = dir_path("bad");
    struct result_row rows[2] = { sample_rows[0], sample_rows[1] };
    rows[1].value = NAN;
    CHECK_INT_EQ(results_append(prefix, rows, 2, &err), -1);
    CHECK_MSG(strstr(err.message, "row 1") != NULL, "%s", err.message);
    CHECK_MSG(strstr(err.message, "not finite") != NULL, "%s", err.message);
    /* The valid first row was not written either. */
    CHECK(access(dir_path("bad.csv"), F_OK) != 0);
    CHECK(access(dir_path("bad.jsonl"), F_OK) != 0);

    rows[1] = sample_rows[1];
    rows[1].metric = "f1\xff";
    CHECK_INT_EQ(results_append(prefix, rows, 2, &err), -1);
    CHECK_MSG(strstr(err.message, "metric is not valid UTF-8") != NULL, "%s", err.message);
    rows[1].metric = NULL;
    CHECK_INT_EQ(results_append(prefix, rows, 2, &err), -1);
    CHECK_MSG(strstr(err.message, "metric is missing") != NULL, "%s", err.message);
    rows[1] = sample_rows[1];
    rows[1].time = INFINITY;
    CHECK_INT_EQ(results_append(prefix, rows, 2, &err), -1);
    CHECK_MSG(strstr(err.message, "time") != NULL, "%s", err.message);
    remove_dir();
}

static void test_malformed_line_named(void)
{
    CHECK(make_dir() != NULL);
    struct caem_error err;
    const char *prefix = dir_path("m");
    const char *good = "{\"model\":\"a\",\"task\":\"b\",\"split\":\"test\",\"metric\":\"f1\","
                       "\"value\":1,\"step\":2,\"time\":3.5}\n";
    char text[1024];
    struct result_row *rows = NULL;
    long count = 0;

    snprintf(text, sizeof text, "%s\n%s{\"model\": \"a\",\n", good, good);
    write_text(dir_path("m.jsonl"), text);
    CHECK_INT_EQ(results_read(prefix, &rows, &count, &err), -1);
    CHECK_MSG(strstr(err.message, dir_path("m.jsonl")) != NULL, "%s", err.message);
    CHECK_MSG(strstr(err.message, ":4:") != NULL, "%s", err.message);
    CHECK(rows == NULL);
    CHECK_INT_EQ(count, 0);

    snprintf(text, sizeof text, "%s%s", good,
             "{\"model\":\"a\",\"task\":\"b\",\"split\":\"test\",\"metric\":\"f1\","
             "\"value\":\"high\",\"step\":2,\"time\":3.5}\n");
    write_text(dir_path("m.jsonl"), text);
    CHECK_INT_EQ(results_read(prefix, &rows, &count, &err), -1);
    CHECK_MSG(strstr(err.message, ":2: member \"value\"") != NULL, "%s", err.message);

    snprintf(text, sizeof text, "%s%s", good,
             "{\"model\":\"a\",\"split\":\"test\",\"metric\":\"f1\",\"value\":1,\"step\":2,"
             "\"time\":3.5}\n");
    write_text(dir_path("m.jsonl"), text);
    CHECK_INT_EQ(results_read(prefix, &rows, &count, &err), -1);
    CHECK_MSG(strstr(err.message, ":2: member \"task\" is missing") != NULL, "%s",
              err.message);

    write_text(dir_path("m.jsonl"), "[1, 2]\n");
    CHECK_INT_EQ(results_read(prefix, &rows, &count, &err), -1);
    CHECK_MSG(strstr(err.message, ":1: not a JSON object") != NULL, "%s", err.message);

    /* The empty line between good rows is skipped. */
    snprintf(text, sizeof text, "%s\n%s", good, good);
    write_text(dir_path("m.jsonl"), text);
    CHECK_MSG(results_read(prefix, &rows, &count, &err) == 0, "%s", err.message);
    CHECK_INT_EQ(count, 2);
    if (count == 2) {
        CHECK(strcmp(rows[1].metric, "f1") == 0);
        CHECK_NEAR(rows[1].value, 1.0, 0.0);
        CHECK_INT_EQ(rows[1].step, 2);
        CHECK_NEAR(rows[1].time, 3.5, 0.0);
    }
    results_free(rows, count);
    remove_dir();
}

static void test_unopenable_paths(void)
{
    CHECK(make_dir() != NULL);
    struct caem_error err;
    struct result_row *rows = NULL;
    long count = 0;

    const char *missing = "/nonexistent-caem-dir/results";
    CHECK_INT_EQ(results_append(missing, sample_rows, 1, &err), -1);
    CHECK_MSG(strstr(err.message, "/nonexistent-caem-dir/results.csv") != NULL, "%s",
              err.message);
    CHECK_INT_EQ(results_read(missing, &rows, &count, &err), -1);
    CHECK_MSG(strstr(err.message, "/nonexistent-caem-dir/results.jsonl") != NULL, "%s",
              err.message);

    /* PREFIX.csv is a directory. */
    CHECK(mkdir(dir_path("d.csv"), 0700) == 0);
    CHECK_INT_EQ(results_append(dir_path("d"), sample_rows, 1, &err), -1);
    CHECK_MSG(strstr(err.message, dir_path("d.csv")) != NULL, "%s", err.message);
    remove_dir();
}

/* Writers that start together, before either file exists, each appending
 * rows of about 1 KB. Every line must come out whole, with one header. */
static void test_concurrent_appenders(void)
{
    enum { WRITERS = 4, ROWS_PER_WRITER = 100 };
    CHECK(make_dir() != NULL);
    const char *prefix = dir_path("c");
    char model[1000];
    memset(model, 'm', sizeof model - 1);
    model[sizeof model - 1] = '\0';
    pid_t children[WRITERS];
    fflush(stdout); /* so that no child repeats buffered output */
    for (int w = 0; w < WRITERS; w++) {
        children[w] = fork();
        CHECK(children[w] >= 0);
        if (children[w] != 0)
            continue;
        struct caem_error err;
        char task[32];
        snprintf(task, sizeof task, "writer%d", w);
        int failed = 0;
        for (int i = 0; i < ROWS_PER_WRITER && !failed; i++) {
            struct result_row row = { model, task, "test", "f1", i, i, 1.0 };
            failed = results_append(prefix, &row, 1, &err) != 0;
        }
        if (failed)
            printf("  writer %d: %s\n", w, err.message);
        fflush(stdout);
        _exit(failed);
    }
    for (int w = 0; w < WRITERS; w++) {
        int status = 0;
        if (children[w] > 0) {
            CHECK(waitpid(children[w], &status, 0) == children[w]);
            CHECK(WIFEXITED(status));
            CHECK_INT_EQ(WEXITSTATUS(status), 0);
        }
    }

    struct caem_error err;
    struct result_row *rows = NULL;
    long count = 0;
    CHECK_MSG(results_read(prefix, &rows, &count, &err) == 0, "%s", err.message);
    CHECK_INT_EQ(count, WRITERS * ROWS_PER_WRITER);
    /* Each writer's rows appear whole and in its own order. */
    long next[WRITERS] = { 0 };
    for (long i = 0; i < count; i++) {
        int w = -1;
        CHECK_INT_EQ(sscanf(rows[i].task, "writer%d", &w), 1);
        CHECK_MSG(w >= 0 && w < WRITERS, "row %ld: task %s", i, rows[i].task);
        if (w < 0 || w >= WRITERS)
            break;
        CHECK(strcmp(rows[i].model, model) == 0);
        CHECK_INT_EQ(rows[i].step, next[w]);
        next[w]++;
    }
    results_free(rows, count);

    char *csv = read_text(dir_path("c.csv"));
    CHECK(csv != NULL);
    if (csv != NULL) {
        CHECK(strncmp(csv, HEADER, strlen(HEADER)) == 0);
        long lines = 0, headers = 0, whole = 0;
        for (char *line = csv; *line != '\0';) {
            char *end = strchr(line, '\n');
            if (end == NULL)
                break;
            *end = '\0';
            lines++;
            if (strcmp(line, "model,task,split,metric,value,step,time") == 0)
                headers++;
            else if (strncmp(line, model, strlen(model)) == 0 &&
                     strstr(line, ",test,f1,") != NULL)
                whole++;
            line = end + 1;
        }
        CHECK_INT_EQ(lines, WRITERS * ROWS_PER_WRITER + 1);
        CHECK_INT_EQ(headers, 1);
        CHECK_INT_EQ(whole, WRITERS * ROWS_PER_WRITER);
    }
    free(csv);
    remove_dir();
}

static void test_time_now_is_unix_time(void)
{
    double now = results_time_now();
    /* After 2024-01-01 and before 2100-01-01. */
    CHECK(now > 1704067200.0);
    CHECK(now < 4102444800.0);
    CHECK_NEAR(now, (double)time(NULL), 2.0);
}

int main(void)
{
    TEST_SUITE("results");
    RUN_TEST(round_trip);
    RUN_TEST(append_to_existing);
    RUN_TEST(quoting_of_names);
    RUN_TEST(header_mismatch);
    RUN_TEST(invalid_rows_rejected);
    RUN_TEST(malformed_line_named);
    RUN_TEST(unopenable_paths);
    RUN_TEST(concurrent_appenders);
    RUN_TEST(time_now_is_unix_time);
    TEST_MAIN_END();
}
