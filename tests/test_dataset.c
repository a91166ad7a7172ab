/* Dataset loaders on the real AG News, SQuAD and XSum files (skipped when the
 * shared data directory is absent) and on small malformed files written here. */
#include <dirent.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include "dataset.h"
#include "test.h"

/* ---- locating the real files ---- */

static char data_root[1024];

/* Sets data_root to $CAEM_ROOT/../shared/data and returns 0 when it is absent. */
static int find_data_root(void)
{
    const char *root = getenv("CAEM_ROOT");
    snprintf(data_root, sizeof data_root, "%s/../shared/data", root != NULL ? root : ".");
    struct stat st;
    return stat(data_root, &st) == 0 && S_ISDIR(st.st_mode);
}

static const char *data_path(const char *relative)
{
    static char path[2048];
    snprintf(path, sizeof path, "%s/%s", data_root, relative);
    return path;
}

/* Counts the lines of a file, the last one counted even without a line break. */
static long count_lines(const char *path)
{
    FILE *f = fopen(path, "rb");
    if (f == NULL)
        return -1;
    long lines = 0;
    int c, last = '\n';
    while ((c = fgetc(f)) != EOF) {
        if (c == '\n')
            lines++;
        last = c;
    }
    fclose(f);
    return last == '\n' ? lines : lines + 1;
}

/* Counts the lines of an AG News file that start with "N" for class N = 1..4. */
static void count_agnews_classes(const char *path, long counts[4])
{
    memset(counts, 0, 4 * sizeof counts[0]);
    FILE *f = fopen(path, "rb");
    if (f == NULL)
        return;
    char line[65536];
    while (fgets(line, sizeof line, f) != NULL)
        if (line[0] == '"' && line[1] >= '1' && line[1] <= '4' && line[2] == '"')
            counts[line[1] - '1']++;
    fclose(f);
}

/* Counts occurrences of needle in a whole file. */
static long count_in_file(const char *path, const char *needle)
{
    FILE *f = fopen(path, "rb");
    if (f == NULL)
        return -1;
    fseek(f, 0, SEEK_END);
    long size = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *text = malloc((size_t)size + 1);
    size_t got = fread(text, 1, (size_t)size, f);
    text[got] = '\0';
    fclose(f);
    long count = 0;
    for (const char *p = strstr(text, needle); p != NULL; p = strstr(p + 1, needle))
        count++;
    free(text);
    return count;
}

static long count_data_files(const char *dir)
{
    DIR *d = opendir(dir);
    if (d == NULL)
        return -1;
    long count = 0;
    struct dirent *entry;
    while ((entry = readdir(d)) != NULL) {
        size_t n = strlen(entry->d_name);
        if (n > 5 && strcmp(entry->d_name + n - 5, ".data") == 0)
            count++;
    }
    closedir(d);
    return count;
}

static int starts_with(const char *s, const char *prefix)
{
    return strncmp(s, prefix, strlen(prefix)) == 0;
}

static int ends_with(const char *s, const char *suffix)
{
    size_t n = strlen(s), m = strlen(suffix);
    return n >= m && strcmp(s + n - m, suffix) == 0;
}

static const struct example *find_by_id(const struct dataset *ds, const char *id)
{
    for (long i = 0; i < ds->count; i++)
        if (ds->examples[i].id != NULL && strcmp(ds->examples[i].id, id) == 0)
            return &ds->examples[i];
    return NULL;
}

/* ---- temporary files for the malformed-input tests ---- */

enum { TEMP_FILES_MAX = 64 };
static char temp_dir[64];
static char temp_paths[TEMP_FILES_MAX][256];
static int temp_count;

/* Writes content to name inside a fresh temporary directory and returns its
 * path, which stays valid until temp_cleanup, or NULL when writing failed. */
static const char *temp_file(const char *name, const char *content)
{
    if (temp_dir[0] == '\0') {
        snprintf(temp_dir, sizeof temp_dir, "/tmp/caem_dataset_XXXXXX");
        if (mkdtemp(temp_dir) == NULL) {
            temp_dir[0] = '\0';
            return NULL;
        }
    }
    char path[256];
    snprintf(path, sizeof path, "%s/%s", temp_dir, name);
    int slot = -1;
    for (int i = 0; i < temp_count; i++)
        if (strcmp(temp_paths[i], path) == 0)
            slot = i;
    if (slot < 0) {
        if (temp_count == TEMP_FILES_MAX)
            return NULL;
        slot = temp_count++;
        snprintf(temp_paths[slot], sizeof temp_paths[slot], "%s", path);
    }
    FILE *f = fopen(path, "wb");
    if (f == NULL)
        return NULL;
    fputs(content, f);
    fclose(f);
    return temp_paths[slot];
}

/* Removes every temporary file in reverse order of creation, so that files
 * go before the subdirectories that hold them, then the directory. */
static void temp_cleanup(void)
{
    for (int i = temp_count - 1; i >= 0; i--)
        if (unlink(temp_paths[i]) != 0)
            rmdir(temp_paths[i]);
    if (temp_dir[0] != '\0')
        rmdir(temp_dir);
}

/* Creates a subdirectory of the temporary directory and returns its path. */
static const char *temp_subdir(const char *name)
{
    if (temp_file(".keep", "") == NULL)
        return NULL;
    char path[256];
    snprintf(path, sizeof path, "%s/%s", temp_dir, name);
    if (mkdir(path, 0700) != 0 || temp_count == TEMP_FILES_MAX)
        return NULL;
    snprintf(temp_paths[temp_count], sizeof temp_paths[0], "%s", path);
    return temp_paths[temp_count++];
}

/* ---- real files ---- */

static void test_agnews_real_counts(void)
{
    if (!find_data_root())
        SKIP("%.200s not found", data_root);
    static const char *const files[] = { "agnews/test_rows0001-7200.csv",
                                         "agnews/train_rows0001-2000.csv" };
    static const char *const names[4] = { "World", "Sports", "Business",
                                          "Science and Technology" };
    for (int f = 0; f < 2; f++) {
        const char *path = data_path(files[f]);
        long expected[4], found[4] = { 0, 0, 0, 0 };
        count_agnews_classes(path, expected);
        struct dataset ds;
        struct dataset_report report;
        struct caem_error err = { "" };
        CHECK_MSG(dataset_load_agnews(&ds, path, &report, &err) == 0, "%s", err.message);
        CHECK_INT_EQ(ds.count, count_lines(path));
        CHECK_INT_EQ(report.loaded, ds.count);
        CHECK_MSG(report.skipped == 0, "%ld skipped, first: %s", report.skipped,
                  report.first_error);
        for (long i = 0; i < ds.count; i++) {
            const struct example *ex = &ds.examples[i];
            CHECK(ex->answer_count == 1);
            CHECK(strcmp(ex->target, ex->answers[0]) == 0);
            CHECK(ex->id == NULL);
            CHECK_MSG(strchr(ex->input, '\\') == NULL, "example %ld keeps a backslash", i);
            for (int c = 0; c < 4; c++)
                found[c] += strcmp(ex->target, names[c]) == 0;
        }
        for (int c = 0; c < 4; c++)
            CHECK_INT_EQ(found[c], expected[c]);
        dataset_free(&ds);
    }
}

static void test_agnews_real_records(void)
{
    if (!find_data_root())
        SKIP("%.200s not found", data_root);
    struct dataset ds;
    struct dataset_report report;
    struct caem_error err = { "" };
    const char *path = data_path("agnews/test_rows0001-7200.csv");
    CHECK_MSG(dataset_load_agnews(&ds, path, &report, &err) == 0, "%s", err.message);
    if (ds.count != 7200) {
        CHECK_INT_EQ(ds.count, 7200);
        dataset_free(&ds);
        return;
    }

    /* line 1, the first record */
    CHECK_MSG(strcmp(ds.examples[0].input,
                     "Classify: Fears for T N pension after talks Unions representing workers "
                     "at Turner   Newall say they are 'disappointed' after talks with stricken "
                     "parent firm Federal Mogul.") == 0,
              "%s", ds.examples[0].input);
    CHECK(strcmp(ds.examples[0].target, "Business") == 0);

    /* line 2: a lone backslash is a line break */
    CHECK_MSG(strstr(ds.examples[1].input, "Canada -- A second\nteam of rocketeers") != NULL,
              "%s", ds.examples[1].input);
    CHECK(strcmp(ds.examples[1].target, "Science and Technology") == 0);

    /* line 6: "" inside a quoted field is one quote */
    CHECK_MSG(strstr(ds.examples[5].input, "launched a \"Music Manifesto\" campaign") != NULL,
              "%s", ds.examples[5].input);

    /* line 7: a field that starts with two line breaks and a quote */
    CHECK_MSG(starts_with(ds.examples[6].input,
                          "Classify: Loosing the War on Terrorism \n\n\"Sven Jaschan"),
              "%s", ds.examples[6].input);
    CHECK(ends_with(ds.examples[6].input, "staggeri ...\n\n"));

    /* line 119: "\$" in a title is a dollar sign, not a line break */
    CHECK_MSG(starts_with(ds.examples[118].input,
                          "Classify: Mills Grabs $1B Portfolio; Taubman Likely to Lose "
                          "Contracts Mills Corp. agreed"),
              "%s", ds.examples[118].input);

    /* line 7200, the last record */
    CHECK_MSG(strcmp(ds.examples[7199].input,
                     "Classify: No. 21 Purdue Beats W. Michigan, 74-42 (AP) AP - Erin Lawless "
                     "scored a career-high 26 points and grabbed seven rebounds and No. 21 "
                     "Purdue beat Western Michigan 74-42 on Sunday.") == 0,
              "%s", ds.examples[7199].input);
    CHECK(strcmp(ds.examples[7199].target, "Sports") == 0);
    dataset_free(&ds);
}

/* Checks that every answer of every example occurs in the context part of its input. */
static void check_squad_answers_in_context(const struct dataset *ds)
{
    long misses = 0;
    for (long i = 0; i < ds->count; i++) {
        const struct example *ex = &ds->examples[i];
        const char *context = strstr(ex->input, " Context: ");
        CHECK_MSG(context != NULL, "example %ld: %.80s", i, ex->input);
        if (context == NULL)
            continue;
        CHECK(strcmp(ex->target, ex->answers[0]) == 0);
        for (int a = 0; a < ex->answer_count; a++)
            misses += strstr(context, ex->answers[a]) == NULL;
    }
    CHECK_INT_EQ(misses, 0);
}

static void test_squad_real_counts(void)
{
    if (!find_data_root())
        SKIP("%.200s not found", data_root);
    static const char *const files[] = { "squad/dev-v1.1-half-a.json",
                                         "squad/train-v1.1-du-test-split.json" };
    for (int f = 0; f < 2; f++) {
        const char *path = data_path(files[f]);
        struct dataset ds;
        struct dataset_report report;
        struct caem_error err = { "" };
        CHECK_MSG(dataset_load_squad(&ds, path, &report, &err) == 0, "%s", err.message);

        /* every question and answer object has exactly one such key in the file */
        CHECK_INT_EQ(ds.count, count_in_file(path, "\"question\": "));
        long answers = 0;
        for (long i = 0; i < ds.count; i++)
            answers += ds.examples[i].answer_count;
        CHECK_INT_EQ(answers, count_in_file(path, "\"answer_start\": "));
        CHECK_INT_EQ(report.loaded, ds.count);
        CHECK_MSG(report.skipped == 0, "%ld skipped, first: %s", report.skipped,
                  report.first_error);
        check_squad_answers_in_context(&ds);
        dataset_free(&ds);
    }
}

static void test_squad_real_records(void)
{
    if (!find_data_root())
        SKIP("%.200s not found", data_root);
    struct dataset ds;
    struct dataset_report report;
    struct caem_error err = { "" };
    CHECK_MSG(dataset_load_squad(&ds, data_path("squad/dev-v1.1-half-a.json"), &report,
                                 &err) == 0,
              "%s", err.message);
    CHECK_INT_EQ(ds.count, 4961);
    if (ds.count != 4961) {
        dataset_free(&ds);
        return;
    }
    const struct example *first = &ds.examples[0];
    CHECK_MSG(starts_with(first->input, "Question: Which NFL team represented the AFC at Super "
                                        "Bowl 50? Context: Super Bowl 50 was an American "
                                        "football game"),
              "%.160s", first->input);
    CHECK(strcmp(first->target, "Denver Broncos") == 0);
    CHECK_INT_EQ(first->answer_count, 3);
    CHECK(strcmp(first->id, "56be4db0acb8001400a502ec") == 0);

    /* the last answer sits after two 2-byte characters of its context, so its
     * code point offset 665 is byte 667 */
    const struct example *last = &ds.examples[4960];
    CHECK_MSG(starts_with(last->input, "Question: What is the seldom used force unit equal to "
                                       "one thousand newtons? Context: The pound-force"),
              "%.160s", last->input);
    CHECK(strcmp(last->target, "sth\xc3\xa8ne") == 0);
    CHECK_INT_EQ(last->answer_count, 5);
    CHECK(strcmp(last->id, "5737aafd1c456719005744ff") == 0);
    dataset_free(&ds);

    /* a question with non-ASCII letters in the training split */
    CHECK_MSG(dataset_load_squad(&ds, data_path("squad/train-v1.1-du-test-split.json"), &report,
                                 &err) == 0,
              "%s", err.message);
    const struct example *ex = find_by_id(&ds, "5733b496d058e614000b60d2");
    CHECK(ex != NULL);
    if (ex != NULL) {
        CHECK_MSG(starts_with(ex->input, "Question: What was Ivan Me\xc5\xa1trovi\xc4\x87 known "
                                         "for being? Context: "),
                  "%.120s", ex->input);
        CHECK(strcmp(ex->target, "a renowned sculptor") == 0);
    }
    dataset_free(&ds);
}

static void test_xsum_jsonl_real(void)
{
    if (!find_data_root())
        SKIP("%.200s not found", data_root);
    const char *path = data_path("xsum/xsum_test_lines0001-0800.jsonl");
    struct dataset ds;
    struct dataset_report report;
    struct caem_error err = { "" };
    CHECK_MSG(dataset_load_xsum_jsonl(&ds, path, &report, &err) == 0, "%s", err.message);
    CHECK_INT_EQ(ds.count, count_lines(path));
    CHECK_INT_EQ(report.skipped, 0);
    if (ds.count != 800) {
        CHECK_INT_EQ(ds.count, 800);
        dataset_free(&ds);
        return;
    }
    const struct example *first = &ds.examples[0];
    CHECK(strcmp(first->id, "34268361") == 0);
    /* the document's first character after the prompt is U+00A3, the pound sign */
    CHECK_MSG(starts_with(first->input, "Summarize: The owners said their planned \xc2\xa3"
                                        "80m development at the site in Bewdley"),
              "%.120s", first->input);
    const struct example *last = &ds.examples[799];
    CHECK(strcmp(last->id, "36151927") == 0);
    CHECK_MSG(strcmp(last->target, "Four in 10 London nurses expect to leave the capital by "
                                   "2021 because housing costs are so high, according to a "
                                   "survey by the Royal College of Nursing (RCN).") == 0,
              "%s", last->target);
    CHECK_INT_EQ(last->answer_count, 1);
    CHECK(strcmp(last->answers[0], last->target) == 0);
    dataset_free(&ds);
}

static void test_xsum_raw_real(void)
{
    if (!find_data_root())
        SKIP("%.200s not found", data_root);
    static const char *const dirs[] = { "xsum/xsum-extracts-from-downloads_Leftover",
                                        "xsum/xsum-extracts-from-downloads_Filtered" };
    struct dataset raw[2], lines;
    struct dataset_report report;
    struct caem_error err = { "" };
    for (int d = 0; d < 2; d++) {
        const char *path = data_path(dirs[d]);
        CHECK_MSG(dataset_load_xsum_raw(&raw[d], path, &report, &err) == 0, "%s", err.message);
        CHECK_INT_EQ(raw[d].count, count_data_files(path));
        CHECK_MSG(report.skipped == 0, "%s", report.first_error);
        for (long i = 0; i < raw[d].count; i++) {
            const char *input = raw[d].examples[i].input;
            CHECK_MSG(strstr(input, "Share this with") == NULL, "%s", raw[d].examples[i].id);
            CHECK(!ends_with(input, "\n"));
        }
    }
    CHECK_INT_EQ(raw[0].count + raw[1].count, 312);

    /* a record by value: the Booker Prize article, with a pound sign in its summary */
    const struct example *booker = find_by_id(&raw[1], "29604402");
    CHECK(booker != NULL);
    if (booker != NULL) {
        CHECK_MSG(strcmp(booker->target, "The winner of the Man Booker Prize is announced later "
                                         "with British author Neel Mukherjee the bookies' "
                                         "favourite to take the \xc2\xa3" "50,000 prize.") == 0,
                  "%s", booker->target);
        CHECK(starts_with(booker->input, "Summarize: Mukherjee's The Lives Of Others, a sweeping"));
        CHECK(ends_with(booker->input, "from 2130 BST and on BBC Arts."));
    }

    /* ids in both releases: the summaries agree, and the documents agree once
     * the share widget is gone, except one whose JSON-lines text has "£"
     * encoded twice (U+00C2 U+00A3) */
    CHECK_MSG(dataset_load_xsum_jsonl(&lines, data_path("xsum/xsum_test_lines0001-0800.jsonl"),
                                      &report, &err) == 0,
              "%s", err.message);
    long shared = 0, same_document = 0;
    for (int d = 0; d < 2; d++) {
        for (long i = 0; i < raw[d].count; i++) {
            const struct example *ex = &raw[d].examples[i];
            const struct example *other = find_by_id(&lines, ex->id);
            if (other == NULL)
                continue;
            shared++;
            CHECK_MSG(strcmp(ex->target, other->target) == 0, "id %s", ex->id);
            if (strcmp(ex->input, other->input) == 0)
                same_document++;
            else
                CHECK_MSG(strcmp(ex->id, "37554205") == 0, "id %s", ex->id);
        }
    }
    CHECK_INT_EQ(shared, 25);
    CHECK_INT_EQ(same_document, 24);
    const struct example *double_encoded = find_by_id(&lines, "37554205");
    CHECK(double_encoded != NULL);
    if (double_encoded != NULL)
        CHECK(strstr(double_encoded->input, "a \xc3\x82\xc2\xa3" "100,000 appeal") != NULL);
    dataset_free(&lines);
    dataset_free(&raw[0]);
    dataset_free(&raw[1]);
}

/* ---- malformed and edge-case files ---- */

struct malformed_case {
    const char *line;
    const char *reason;
};

typedef int (*loader)(struct dataset *, const char *, struct dataset_report *,
                      struct caem_error *);

/* Loads a file of a good line, the bad line and another good line, and checks
 * that exactly line 2 is skipped for the expected reason. */
static void check_line_skipped(loader load, const char *good, const struct malformed_case *c)
{
    char content[1024];
    snprintf(content, sizeof content, "%s\n%s\n%s\n", good, c->line, good);
    const char *path = temp_file("case.txt", content);
    CHECK(path != NULL);
    if (path == NULL)
        return;
    struct dataset ds;
    struct dataset_report report;
    struct caem_error err = { "" };
    CHECK_MSG(load(&ds, path, &report, &err) == 0, "%s", err.message);
    CHECK_MSG(ds.count == 2, "case %s: %ld loaded", c->line, ds.count);
    CHECK_MSG(report.skipped == 1, "case %s: %ld skipped", c->line, report.skipped);
    CHECK_MSG(report.first_bad_record == 2, "case %s: record %ld", c->line,
              report.first_bad_record);
    char where[300];
    snprintf(where, sizeof where, "%s:2: ", path);
    CHECK_MSG(starts_with(report.first_error, where), "%s", report.first_error);
    CHECK_MSG(strstr(report.first_error, c->reason) != NULL, "case %s: %s", c->line,
              report.first_error);
    dataset_free(&ds);
}

static void test_agnews_malformed_lines(void)
{
    static const struct malformed_case cases[] = {
        { "\"5\",\"title\",\"text\"", "class index \"5\" is not 1, 2, 3 or 4" },
        { "\"World\",\"title\",\"text\"", "class index \"World\"" },
        { "\"1\",\"title\"", "expected 3 fields (class, title, description), found 2" },
        { "\"1\",\"title\",\"text\",\"extra\"", "more than 3 fields" },
        { "\"1\",\"title\",\"text", "field 3 has no closing quote" },
        { "\"1\",\"title\"x,\"text\"", "unexpected text after the closing quote of field 2" },
        { "\"1\",ti\"tle,\"text\"", "quote inside unquoted field 2" },
        { "\"1\",\"caf\xc3\",\"text\"", "invalid UTF-8" },
        { "   ", "empty line" },
    };
    const char *good = "\"2\",\"Title\",\"Text with \"\"quotes\"\"\\and a \\$5 line\"";
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++)
        check_line_skipped(dataset_load_agnews, good, &cases[i]);

    /* unquoted fields and CRLF line ends are valid CSV */
    const char *path = temp_file("plain.csv", "3,Plain title,Plain text\r\n");
    struct dataset ds;
    struct dataset_report report;
    struct caem_error err = { "" };
    CHECK_MSG(dataset_load_agnews(&ds, path, &report, &err) == 0, "%s", err.message);
    CHECK_INT_EQ(ds.count, 1);
    if (ds.count == 1) {
        CHECK(strcmp(ds.examples[0].input, "Classify: Plain title Plain text") == 0);
        CHECK(strcmp(ds.examples[0].target, "Business") == 0);
    }
    dataset_free(&ds);

    /* the good line itself, unescaped */
    path = temp_file("good.csv", "\"2\",\"Title\",\"Text with \"\"quotes\"\"\\and a \\$5 line\"\n");
    CHECK_MSG(dataset_load_agnews(&ds, path, &report, &err) == 0, "%s", err.message);
    CHECK_INT_EQ(ds.count, 1);
    if (ds.count == 1)
        CHECK_MSG(strcmp(ds.examples[0].input,
                         "Classify: Title Text with \"quotes\"\nand a $5 line") == 0,
                  "%s", ds.examples[0].input);
    dataset_free(&ds);
}

static void test_agnews_counts_every_bad_line(void)
{
    const char *path = temp_file("mixed.csv", "\"1\",\"a\",\"b\"\n"
                                              "\"9\",\"a\",\"b\"\n"
                                              "\"2\",\"a\",\"b\"\n"
                                              "\"1\",\"a\"\n"
                                              "\n"
                                              "\"4\",\"a\",\"b\"");
    struct dataset ds;
    struct dataset_report report;
    struct caem_error err = { "" };
    CHECK_MSG(dataset_load_agnews(&ds, path, &report, &err) == 0, "%s", err.message);
    CHECK_INT_EQ(ds.count, 3);
    CHECK_INT_EQ(report.loaded, 3);
    CHECK_INT_EQ(report.skipped, 3);
    CHECK_INT_EQ(report.first_bad_record, 2);
    CHECK_MSG(strstr(report.first_error, "class index \"9\"") != NULL, "%s",
              report.first_error);
    if (ds.count == 3)
        CHECK(strcmp(ds.examples[2].target, "Science and Technology") == 0);
    dataset_free(&ds);
}

static void test_xsum_jsonl_malformed_lines(void)
{
    static const struct malformed_case cases[] = {
        { "{\"document\": \"d\", \"summary\": \"s\"", "invalid JSON" },
        { "[\"d\", \"s\"]", "not a JSON object" },
        { "{\"document\": \"d\", \"id\": 3}", "missing \"summary\"" },
        { "{\"summary\": \"s\"}", "missing \"document\"" },
        { "{\"document\": \"d\", \"summary\": 3}", "\"summary\" is not a string" },
        { "{\"document\": \" \", \"summary\": \"s\"}", "\"document\" is empty" },
        { "{\"document\": \"d\", \"summary\": \"s\", \"id\": true}",
          "\"id\" is neither a string nor an integer" },
        { "{\"document\": \"d\xff\", \"summary\": \"s\"}", "invalid UTF-8" },
        { "", "empty line" },
    };
    const char *good = "{\"document\": \"Line one.\\nLine two.\", \"summary\": \"S.\", \"id\": 7}";
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++)
        check_line_skipped(dataset_load_xsum_jsonl, good, &cases[i]);

    /* the good line itself, and a string id */
    const char *path = temp_file("good.jsonl", "{\"document\": \"Line one.\\nLine two.\", "
                                               "\"summary\": \"S.\", \"id\": 7}\n"
                                               "{\"document\": \"D\", \"summary\": \"T\", "
                                               "\"id\": \"abc\"}\n");
    struct dataset ds;
    struct dataset_report report;
    struct caem_error err = { "" };
    CHECK_MSG(dataset_load_xsum_jsonl(&ds, path, &report, &err) == 0, "%s", err.message);
    CHECK_INT_EQ(ds.count, 2);
    if (ds.count == 2) {
        CHECK(strcmp(ds.examples[0].input, "Summarize: Line one.\nLine two.") == 0);
        CHECK(strcmp(ds.examples[0].target, "S.") == 0);
        CHECK(strcmp(ds.examples[0].id, "7") == 0);
        CHECK(strcmp(ds.examples[1].id, "abc") == 0);
    }
    dataset_free(&ds);
}

/* A one-paragraph SQuAD file whose context has a 2-byte character, so that
 * code point offsets and byte offsets differ after it. */
static const char *squad_with_question(const char *name, const char *second_question)
{
    char content[2048];
    snprintf(content, sizeof content,
             "{\"version\": \"1.1\", \"data\": [{\"title\": \"T\", \"paragraphs\": [{"
             "\"context\": \"The caf\xc3\xa9 sells tea.\", \"qas\": ["
             "{\"id\": \"a\", \"question\": \"What is sold?\", \"answers\": "
             "[{\"answer_start\": 15, \"text\": \"tea\"}, {\"answer_start\": 4, "
             "\"text\": \"caf\xc3\xa9\"}]}, %s]}]}]}",
             second_question);
    return temp_file(name, content);
}

static void test_squad_malformed_questions(void)
{
    static const struct malformed_case cases[] = {
        { "{\"id\": \"b\", \"question\": \"q\", \"answers\": [{\"answer_start\": 4, "
          "\"text\": \"tea\"}]}",
          "does not match the context at answer_start 4" },
        /* 16 is the byte offset of "tea", but as a code point offset it is one past */
        { "{\"id\": \"b\", \"question\": \"q\", \"answers\": [{\"answer_start\": 16, "
          "\"text\": \"tea\"}]}",
          "does not match the context at answer_start 16" },
        { "{\"id\": \"b\", \"question\": \"q\", \"answers\": [{\"answer_start\": 18, "
          "\"text\": \"tea\"}]}",
          "runs past the end of the context" },
        { "{\"id\": \"b\", \"question\": \"q\", \"answers\": [{\"answer_start\": \"15\", "
          "\"text\": \"tea\"}]}",
          "answers[0]: \"answer_start\" is not a non-negative integer" },
        { "{\"id\": \"b\", \"question\": \"q\", \"answers\": [{\"answer_start\": 15, "
          "\"text\": \"tea\"}, {\"answer_start\": 0, \"text\": 5}]}",
          "answers[1]: \"text\" is not a string" },
        { "{\"id\": \"b\", \"question\": \"q\", \"answers\": []}", "\"answers\" is missing" },
        { "{\"id\": \"b\", \"answers\": [{\"answer_start\": 15, \"text\": \"tea\"}]}",
          "missing \"question\"" },
        { "{\"id\": \"b\", \"question\": \"q\", \"answers\": [{\"answer_start\": 15, "
          "\"text\": \"\"}]}",
          "\"text\" is empty" },
        { "\"b\"", "question entry is not an object" },
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        const char *path = squad_with_question("case.json", cases[i].line);
        struct dataset ds;
        struct dataset_report report;
        struct caem_error err = { "" };
        CHECK_MSG(dataset_load_squad(&ds, path, &report, &err) == 0, "%s", err.message);
        CHECK_MSG(ds.count == 1, "case %zu: %ld loaded", i, ds.count);
        CHECK_MSG(report.skipped == 1, "case %zu: %ld skipped", i, report.skipped);
        CHECK_INT_EQ(report.first_bad_record, 2);
        CHECK_MSG(strstr(report.first_error, path) != NULL, "%s", report.first_error);
        CHECK_MSG(strstr(report.first_error, "data[0].paragraphs[0].qas[1]") != NULL, "%s",
                  report.first_error);
        CHECK_MSG(strstr(report.first_error, cases[i].reason) != NULL, "case %zu: %s", i,
                  report.first_error);
        if (ds.count == 1) {
            /* the good question, with both answers kept */
            const struct example *ex = &ds.examples[0];
            CHECK(strcmp(ex->input, "Question: What is sold? Context: The caf\xc3\xa9 sells "
                                    "tea.") == 0);
            CHECK(strcmp(ex->target, "tea") == 0);
            CHECK_INT_EQ(ex->answer_count, 2);
            if (ex->answer_count == 2)
                CHECK(strcmp(ex->answers[1], "caf\xc3\xa9") == 0);
            CHECK(strcmp(ex->id, "a") == 0);
        }
        dataset_free(&ds);
    }
}

static void test_squad_malformed_structure(void)
{
    struct dataset ds;
    struct dataset_report report;
    struct caem_error err = { "" };

    /* a paragraph without a context skips each of its questions */
    const char *path = temp_file("nocontext.json",
                                 "{\"data\": [{\"paragraphs\": [{\"qas\": ["
                                 "{\"id\": \"x\", \"question\": \"q\", \"answers\": []}, "
                                 "{\"id\": \"y\", \"question\": \"q\", \"answers\": []}]}]}, "
                                 "7, {\"paragraphs\": [{\"context\": \"c\", \"qas\": 3}]}]}");
    CHECK_MSG(dataset_load_squad(&ds, path, &report, &err) == 0, "%s", err.message);
    CHECK_INT_EQ(ds.count, 0);
    CHECK_INT_EQ(report.skipped, 4);
    CHECK_INT_EQ(report.first_bad_record, 1);
    CHECK_MSG(strstr(report.first_error, "qas[0] (id x): the paragraph has no \"context\"") !=
                  NULL,
              "%s", report.first_error);
    dataset_free(&ds);

    /* a file that is not JSON, or not SQuAD, fails the whole load */
    path = temp_file("broken.json", "{\"data\": [\n{\"paragraphs\": ]}");
    CHECK(dataset_load_squad(&ds, path, &report, &err) == -1);
    CHECK_MSG(strstr(err.message, path) != NULL, "%s", err.message);
    CHECK_MSG(strstr(err.message, ":2:") != NULL, "%s", err.message);
    CHECK_MSG(strstr(err.message, "invalid JSON") != NULL, "%s", err.message);
    CHECK_INT_EQ(ds.count, 0);

    path = temp_file("other.json", "{\"rows\": []}");
    CHECK(dataset_load_squad(&ds, path, &report, &err) == -1);
    CHECK_MSG(strstr(err.message, "expected an object with a \"data\" array") != NULL, "%s",
              err.message);
}

static void test_xsum_raw_malformed_files(void)
{
    static const struct malformed_case cases[] = {
        { "[XSUM]URL[XSUM]\nu\n[XSUM]INTRODUCTION[XSUM]\nS.\n", "[XSUM]RESTBODY[XSUM] is missing" },
        { "[XSUM]URL[XSUM]\nu\n[XSUM]RESTBODY[XSUM]\nD.\n", "[XSUM]INTRODUCTION[XSUM] is missing" },
        { "[XSUM]INTRODUCTION[XSUM]\n\n[XSUM]RESTBODY[XSUM]\nD.\n",
          "[XSUM]INTRODUCTION[XSUM] is empty" },
        { "[XSUM]INTRODUCTION[XSUM]\nS.\n[XSUM]RESTBODY[XSUM]\nEmail\nFacebook\n",
          "[XSUM]RESTBODY[XSUM] is empty" },
        { "headline\n[XSUM]INTRODUCTION[XSUM]\nS.\n[XSUM]RESTBODY[XSUM]\nD.\n",
          "line 1: text before the first [XSUM] marker" },
        { "[XSUM]INTRODUCTION[XSUM]\nS.\n[XSUM]RESTBODY[XSUM]\nD.\n[XSUM]INTRODUCTION[XSUM]\n",
          "line 5: second [XSUM]INTRODUCTION[XSUM]" },
        { "[XSUM]TITLE[XSUM]\nt\n", "line 1: unknown section marker [XSUM]TITLE[XSUM]" },
        { "[XSUM]INTRODUCTION[XSUM]\nS\xc0\xaf\n[XSUM]RESTBODY[XSUM]\nD.\n", "invalid UTF-8" },
        { "", "[XSUM]INTRODUCTION[XSUM] is missing" },
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        const char *path = temp_file("123.data", cases[i].line);
        struct dataset ds;
        struct dataset_report report;
        struct caem_error err = { "" };
        CHECK_MSG(dataset_load_xsum_raw(&ds, path, &report, &err) == 0, "%s", err.message);
        CHECK_MSG(ds.count == 0, "case %zu: %ld loaded", i, ds.count);
        CHECK_INT_EQ(report.skipped, 1);
        CHECK_INT_EQ(report.first_bad_record, 1);
        CHECK_MSG(starts_with(report.first_error, path), "%s", report.first_error);
        CHECK_MSG(strstr(report.first_error, cases[i].reason) != NULL, "case %zu: %s", i,
                  report.first_error);
        dataset_free(&ds);
    }
}

static void test_xsum_raw_directory(void)
{
    const char *dir = temp_subdir("extracts");
    CHECK(dir != NULL);
    if (dir == NULL)
        return;
    temp_file("extracts/20.data", "[XSUM]URL[XSUM]\nhttp://example.invalid/20\n\n"
                                  "[XSUM]INTRODUCTION[XSUM]\nThe summary.\n\n"
                                  "[XSUM]RESTBODY[XSUM]\nShare this with\nEmail\n"
                                  "These are external links and will open in a new window\n"
                                  "First line.\n\nSecond line.\r\n\n");
    temp_file("extracts/10.data", "[XSUM]INTRODUCTION[XSUM]\nS10.\n[XSUM]RESTBODY[XSUM]\nD10.\n");
    temp_file("extracts/15.data", "[XSUM]RESTBODY[XSUM]\nno introduction\n");
    temp_file("extracts/notes.txt", "not an extract");
    temp_subdir("extracts/nested.data");

    struct dataset ds;
    struct dataset_report report;
    struct caem_error err = { "" };
    CHECK_MSG(dataset_load_xsum_raw(&ds, dir, &report, &err) == 0, "%s", err.message);
    CHECK_INT_EQ(ds.count, 2);
    CHECK_INT_EQ(report.skipped, 1);
    CHECK_INT_EQ(report.first_bad_record, 2);
    CHECK_MSG(strstr(report.first_error, "extracts/15.data: [XSUM]INTRODUCTION[XSUM] is missing") !=
                  NULL,
              "%s", report.first_error);
    if (ds.count == 2) {
        CHECK(strcmp(ds.examples[0].id, "10") == 0);
        CHECK(strcmp(ds.examples[0].input, "Summarize: D10.") == 0);
        CHECK(strcmp(ds.examples[1].id, "20") == 0);
        CHECK(strcmp(ds.examples[1].target, "The summary.") == 0);
        CHECK_MSG(strcmp(ds.examples[1].input, "Summarize: First line.\n\nSecond line.") == 0,
                  "%s", ds.examples[1].input);
    }
    dataset_free(&ds);
}

static void test_unreadable_path_is_error(void)
{
    static const loader loaders[] = { dataset_load_agnews, dataset_load_squad,
                                      dataset_load_xsum_jsonl, dataset_load_xsum_raw };
    const char *missing = "/nonexistent/caem-dataset/records.csv";
    for (size_t i = 0; i < sizeof loaders / sizeof loaders[0]; i++) {
        struct dataset ds = { NULL, 5 };
        struct dataset_report report;
        struct caem_error err = { "" };
        CHECK(loaders[i](&ds, missing, &report, &err) == -1);
        CHECK_MSG(strstr(err.message, missing) != NULL, "loader %zu: %s", i, err.message);
        CHECK_MSG(strstr(err.message, "No such file or directory") != NULL, "%s", err.message);
        CHECK(ds.examples == NULL);
        CHECK_INT_EQ(ds.count, 0);
    }

    /* a directory is not a line file */
    const char *dir = temp_subdir("not-a-file");
    struct dataset ds;
    struct dataset_report report;
    struct caem_error err = { "" };
    CHECK(dir != NULL);
    if (dir == NULL)
        return;
    CHECK(dataset_load_agnews(&ds, dir, &report, &err) == -1);
    CHECK_MSG(strstr(err.message, dir) != NULL, "%s", err.message);
    CHECK_MSG(strstr(err.message, "failed to read") != NULL, "%s", err.message);
}

static void test_empty_file_gives_nothing(void)
{
    static const loader loaders[] = { dataset_load_agnews, dataset_load_squad,
                                      dataset_load_xsum_jsonl };
    const char *path = temp_file("empty", "");
    for (size_t i = 0; i < sizeof loaders / sizeof loaders[0]; i++) {
        struct dataset ds;
        struct dataset_report report;
        struct caem_error err = { "" };
        CHECK_MSG(loaders[i](&ds, path, &report, &err) == 0, "loader %zu: %s", i, err.message);
        CHECK_INT_EQ(ds.count, 0);
        CHECK_INT_EQ(report.loaded, 0);
        CHECK_INT_EQ(report.skipped, 0);
        CHECK_INT_EQ(report.first_bad_record, 0);
        dataset_free(&ds);
    }
    const char *dir = temp_subdir("empty-dir");
    struct dataset ds;
    struct dataset_report report;
    struct caem_error err = { "" };
    CHECK(dir != NULL);
    if (dir == NULL)
        return;
    CHECK_MSG(dataset_load_xsum_raw(&ds, dir, &report, &err) == 0, "%s", err.message);
    CHECK_INT_EQ(ds.count, 0);
    CHECK_INT_EQ(report.skipped, 0);
    dataset_free(&ds);
}

/* ---- XSum .document / .summary pairs ---- */

static void test_xsum_pairs_directory(void)
{
    const char *dir = temp_subdir("pairs");
    CHECK(dir != NULL);
    if (dir == NULL)
        return;
    temp_file("pairs/a.document", "Share this with\nEmail\n\nLine one.\r\n\n  Line two.  \n");
    temp_file("pairs/a.summary", "The summary.\n");
    temp_file("pairs/b.document", "A document whose summary is missing.\n");
    temp_file("pairs/c.summary", "A summary whose document is missing.\n");
    temp_file("pairs/d.document", "A document with an empty summary.\n");
    temp_file("pairs/d.summary", " \n\n");
    temp_file("pairs/notes.txt", "not part of a pair");

    struct dataset ds;
    struct dataset_report report;
    struct caem_error err = { "" };
    CHECK_MSG(dataset_load_xsum_pairs(&ds, dir, NULL, 0, &report, &err) == 0, "%s",
              err.message);
    CHECK_INT_EQ(ds.count, 1);
    CHECK_INT_EQ(report.loaded, 1);
    CHECK_INT_EQ(report.skipped, 3);
    CHECK_INT_EQ(report.first_bad_record, 2);
    CHECK_MSG(strstr(report.first_error, "pairs/b.summary is missing") != NULL, "%s",
              report.first_error);
    if (ds.count == 1) {
        CHECK(strcmp(ds.examples[0].id, "a") == 0);
        CHECK_MSG(strcmp(ds.examples[0].input, "Summarize: Line one.\n  Line two.") == 0,
                  "%s", ds.examples[0].input);
        CHECK(strcmp(ds.examples[0].target, "The summary.") == 0);
        CHECK_INT_EQ(ds.examples[0].answer_count, 1);
        CHECK(strcmp(ds.examples[0].answers[0], "The summary.") == 0);
    }
    dataset_free(&ds);

    /* the reverse case and the empty summary are reported when they come first */
    const char *const only_c[] = { "c" }, *const only_d[] = { "d" };
    CHECK(dataset_load_xsum_pairs(&ds, dir, only_c, 1, &report, &err) == 0);
    CHECK_INT_EQ(report.skipped, 1);
    CHECK_MSG(strstr(report.first_error, "pairs/c.document is missing") != NULL, "%s",
              report.first_error);
    dataset_free(&ds);
    CHECK(dataset_load_xsum_pairs(&ds, dir, only_d, 1, &report, &err) == 0);
    CHECK_INT_EQ(report.skipped, 1);
    CHECK_MSG(strstr(report.first_error, "pairs/d.summary is empty") != NULL, "%s",
              report.first_error);
    dataset_free(&ds);
}

static void test_xsum_pairs_id_list(void)
{
    const char *dir = temp_subdir("listed");
    CHECK(dir != NULL);
    if (dir == NULL)
        return;
    temp_file("listed/7.document", "Seven.\n");
    temp_file("listed/7.summary", "S7.\n");
    temp_file("listed/3.document", "Three.\n");
    temp_file("listed/3.summary", "S3.\n");
    temp_file("listed/9.document", "Not listed.\n");
    temp_file("listed/9.summary", "S9.\n");

    /* listed order is kept, and an id without files is a malformed record */
    const char *const ids[] = { "7", "42", "3" };
    struct dataset ds;
    struct dataset_report report;
    struct caem_error err = { "" };
    CHECK_MSG(dataset_load_xsum_pairs(&ds, dir, ids, 3, &report, &err) == 0, "%s",
              err.message);
    CHECK_INT_EQ(ds.count, 2);
    CHECK_INT_EQ(report.skipped, 1);
    CHECK_INT_EQ(report.first_bad_record, 2);
    CHECK_MSG(strstr(report.first_error, "listed/42.document is missing") != NULL, "%s",
              report.first_error);
    if (ds.count == 2) {
        CHECK(strcmp(ds.examples[0].id, "7") == 0);
        CHECK(strcmp(ds.examples[0].input, "Summarize: Seven.") == 0);
        CHECK(strcmp(ds.examples[1].id, "3") == 0);
        CHECK(strcmp(ds.examples[1].target, "S3.") == 0);
    }
    dataset_free(&ds);

    /* an empty list loads nothing, even from a directory with pairs */
    CHECK(dataset_load_xsum_pairs(&ds, dir, ids, 0, &report, &err) == 0);
    CHECK_INT_EQ(ds.count, 0);
    CHECK_INT_EQ(report.skipped, 0);
    dataset_free(&ds);
}

static void test_xsum_pairs_unreadable_directory(void)
{
    const char *missing = "/nonexistent/caem-dataset/xsum";
    struct dataset ds = { NULL, 5 };
    struct dataset_report report;
    struct caem_error err = { "" };
    CHECK(dataset_load_xsum_pairs(&ds, missing, NULL, 0, &report, &err) == -1);
    CHECK_MSG(strstr(err.message, missing) != NULL, "%s", err.message);
    CHECK_MSG(strstr(err.message, "No such file or directory") != NULL, "%s", err.message);
    CHECK(ds.examples == NULL);
    CHECK_INT_EQ(ds.count, 0);

    const char *file = temp_file("pairs-file.document", "a file, not a directory\n");
    CHECK(file != NULL);
    if (file == NULL)
        return;
    CHECK(dataset_load_xsum_pairs(&ds, file, NULL, 0, &report, &err) == -1);
    CHECK_MSG(strstr(err.message, file) != NULL, "%s", err.message);
    CHECK_MSG(strstr(err.message, "not a directory") != NULL, "%s", err.message);
}

int main(void)
{
    TEST_SUITE("dataset");
    RUN_TEST(agnews_real_counts);
    RUN_TEST(agnews_real_records);
    RUN_TEST(squad_real_counts);
    RUN_TEST(squad_real_records);
    RUN_TEST(xsum_jsonl_real);
    RUN_TEST(xsum_raw_real);
    RUN_TEST(agnews_malformed_lines);
    RUN_TEST(agnews_counts_every_bad_line);
    RUN_TEST(xsum_jsonl_malformed_lines);
    RUN_TEST(squad_malformed_questions);
    RUN_TEST(squad_malformed_structure);
    RUN_TEST(xsum_raw_malformed_files);
    RUN_TEST(xsum_raw_directory);
    RUN_TEST(unreadable_path_is_error);
    RUN_TEST(empty_file_gives_nothing);
    RUN_TEST(xsum_pairs_directory);
    RUN_TEST(xsum_pairs_id_list);
    RUN_TEST(xsum_pairs_unreadable_directory);
    temp_cleanup();
    TEST_MAIN_END();
}
