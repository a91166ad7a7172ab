/* The default corpus: the deb822 and WordNet parsers on small files written
 * here, the split rule, the inflection matcher, and a build from the real apt
 * index files and WordNet (skipped when they are absent). */
#include <jansson.h>
#include <sys/stat.h>
#include <unistd.h>

#include "corpus.h"
#include "deb822.h"
#include "test.h"
#include "tokenizer.h"
#include "wordnet.h"

/* ---- deb822 ---- */

static void test_deb822_records_and_continuations(void)
{
    static const char text[] =
        "# a comment\n"
        "Package: alpha\n"
        "Description-en: short line\n"
        " first paragraph\n"
        " .\n"
        " second\n"
        "\n\n"
        "Package: beta\n"
        "package: again\n"
        "\n"
        " orphan continuation\n"
        "Package: gamma\n"
        "\n"
        "no colon here\n";
    FILE *f = fmemopen((void *)text, sizeof text - 1, "r");
    struct deb822_reader reader;
    struct deb822_record record = { 0 };
    struct caem_error err;
    deb822_reader_init(&reader, f);

    CHECK_INT_EQ(deb822_read(&reader, &record, "memory", &err), 1);
    CHECK_INT_EQ(record.number, 1);
    CHECK_INT_EQ(record.first_line, 2);
    CHECK(record.malformed[0] == '\0');
    CHECK(strcmp(deb822_get(&record, "package"), "alpha") == 0);
    CHECK(strcmp(deb822_get(&record, "Description-en"),
                 "short line\nfirst paragraph\n.\nsecond") == 0);
    CHECK(deb822_get(&record, "Section") == NULL);

    CHECK_INT_EQ(deb822_read(&reader, &record, "memory", &err), 1);
    CHECK_INT_EQ(record.number, 2);
    CHECK(strstr(record.malformed, "line 10") != NULL);
    CHECK(strstr(record.malformed, "twice") != NULL);

    CHECK_INT_EQ(deb822_read(&reader, &record, "memory", &err), 1);
    CHECK(strstr(record.malformed, "continuation line before any field") != NULL);

    CHECK_INT_EQ(deb822_read(&reader, &record, "memory", &err), 1);
    CHECK_INT_EQ(record.first_line, 15);
    CHECK(strstr(record.malformed, "no colon") != NULL);

    CHECK_INT_EQ(deb822_read(&reader, &record, "memory", &err), 0);
    deb822_record_free(&record);
    deb822_reader_free(&reader);
    fclose(f);
}

/* ---- WordNet ---- */

static void test_wordnet_parse_synset_line(void)
{
    static const char line[] =
        "00001740 29 v 04 breathe 0 take_a_breath 0 respire 0 suspire 3 021 * 00005041 v "
        "0000 02 + 02 00 + 08 00 | draw air into, and expel out of, the lungs; \"I can "
        "breathe better when the air is clean\"; \"The patient is respiring\"";
    struct wordnet_synset s;
    char reason[128];
    CHECK_INT_EQ(wordnet_parse_line(line, &s, reason, sizeof reason), 1);
    CHECK_INT_EQ(s.offset, 1740);
    CHECK(s.pos == 'v');
    CHECK_INT_EQ(s.word_count, 4);
    CHECK(strcmp(s.words[1], "take a breath") == 0);
    CHECK(strcmp(s.definition, "draw air into, and expel out of, the lungs") == 0);
    CHECK_INT_EQ(s.example_count, 2);
    CHECK(strcmp(s.examples[1], "The patient is respiring") == 0);
    wordnet_synset_free(&s);
}

static void test_wordnet_adjective_marker(void)
{
    struct wordnet_synset s;
    char reason[128];
    CHECK_INT_EQ(wordnet_parse_line("00002098 00 a 01 able(p) 0 000 | having the means",
                                    &s, reason, sizeof reason), 1);
    CHECK(strcmp(s.words[0], "able") == 0);
    CHECK_INT_EQ(s.example_count, 0);
    wordnet_synset_free(&s);
}

static void test_wordnet_malformed_lines(void)
{
    static const char *const lines[] = {
        "0000x740 29 v 01 breathe 0 000 | gloss",  /* offset */
        "00001740 29 q 01 breathe 0 000 | gloss",  /* synset type */
        "00001740 29 v 03 breathe 0 000 | gloss",  /* fewer words than counted */
        "00001740 29 v 01 breathe 0 000 no gloss", /* no separator */
        "00001740",
    };
    for (size_t i = 0; i < sizeof lines / sizeof lines[0]; i++) {
        struct wordnet_synset s;
        char reason[128] = "";
        CHECK_MSG(wordnet_parse_line(lines[i], &s, reason, sizeof reason) == -1, "line %zu",
                  i);
        CHECK_MSG(reason[0] != '\0', "line %zu has no reason", i);
    }
    struct wordnet_synset s;
    char reason[128];
    CHECK_INT_EQ(wordnet_parse_line("  1 This software and database", &s, reason,
                                    sizeof reason), 0);
}

static void test_inflection_matcher_cases(void)
{
    static const struct {
        const char *text, *lemma, *match;
    } cases[] = {
        { "I can breathe better", "breathe", "breathe" },
        { "The patient is respiring", "respire", "respiring" },
        { "she baked bread", "bake", "baked" },
        { "he carried it", "carry", "carried" },
        { "two carries", "carry", "carries" },
        { "running late", "run", "running" },
        { "a bigger house", "big", "bigger" },
        { "the boxes are here", "box", "boxes" },
        { "the fastest car", "fast", "fastest" },
        { "Dogs bark", "dog", "Dogs" },
        { "she took a breath slowly", "take a breath", NULL },
        { "try taking a breath", "take a breath", "taking a breath" },
        { "a well-known fact", "well-known", "well-known" },
        { "the category", "cat", NULL },
        { "concatenate", "cat", NULL },
        { "he ran", "run", NULL },
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        size_t start = 0, length = 0;
        int found = wordnet_find_lemma(cases[i].text, cases[i].lemma, &start, &length);
        if (cases[i].match == NULL) {
            CHECK_MSG(!found, "'%s' in '%s'", cases[i].lemma, cases[i].text);
            continue;
        }
        CHECK_MSG(found, "'%s' not found in '%s'", cases[i].lemma, cases[i].text);
        CHECK_MSG(found && length == strlen(cases[i].match) &&
                      strncmp(cases[i].text + start, cases[i].match, length) == 0,
                  "'%s' in '%s' matched '%.*s'", cases[i].lemma, cases[i].text, (int)length,
                  cases[i].text + start);
    }
}

/* The word count is two hex digits in wndb(5). A longer one was once passed
 * to calloc as it was, asking for terabytes. */
static void test_wordnet_word_count_bounds(void)
{
    static const char *const lines[] = {
        "00001740 29 v 10000000000 breathe 0 000 | gloss",
        "00001740 29 v 100 breathe 0 000 | gloss",
        "00001740 29 v 00 breathe 0 000 | gloss",
    };
    for (size_t i = 0; i < sizeof lines / sizeof lines[0]; i++) {
        struct wordnet_synset s;
        char reason[128] = "";
        CHECK_MSG(wordnet_parse_line(lines[i], &s, reason, sizeof reason) == -1, "line %zu",
                  i);
        CHECK_MSG(strstr(reason, "word count") != NULL, "line %zu: reason '%s'", i, reason);
    }

    /* ff, the largest count the format allows, is still read */
    char line[4096];
    int used = snprintf(line, sizeof line, "00001740 29 n ff");
    for (int i = 0; i < 0xff; i++)
        used += snprintf(line + used, sizeof line - (size_t)used, " w%d 0", i);
    snprintf(line + used, sizeof line - (size_t)used, " 000 | gloss");
    struct wordnet_synset s;
    char reason[128] = "";
    CHECK_MSG(wordnet_parse_line(line, &s, reason, sizeof reason) == 1, "reason '%s'", reason);
    CHECK_INT_EQ(s.word_count, 0xff);
    wordnet_synset_free(&s);
}

/* A lemma with a leading or doubled space has an empty word, which once made
 * the suffix matcher read the byte before the lemma. */
static void test_matcher_empty_lemma_word(void)
{
    static const char *const lemmas[] = { " baked", "bake  bread", "  " };
    for (size_t i = 0; i < sizeof lemmas / sizeof lemmas[0]; i++) {
        size_t start = 0, length = 0;
        int found = wordnet_find_lemma("we baked bread", lemmas[i], &start, &length);
        CHECK_MSG(!found, "'%s' matched at %zu", lemmas[i], start);
    }

    /* the same lemma as the data-line parser makes it from a word with a leading '_' */
    struct wordnet_synset synset;
    char reason[128];
    memset(&synset, 0, sizeof synset);
    int parsed = wordnet_parse_line("00001234 29 v 01 _bake 0 000 | cook", &synset, reason,
                                    sizeof reason);
    CHECK_MSG(parsed == 1, "parse returned %d: %s", parsed, reason);
    if (parsed == 1) {
        size_t start = 0, length = 0;
        CHECK(synset.word_count == 1);
        CHECK(strcmp(synset.words[0], " bake") == 0);
        CHECK(!wordnet_find_lemma("we baked bread", synset.words[0], &start, &length));
        wordnet_synset_free(&synset);
    }
}

/* ---- splits ---- */

static void test_split_stable_and_proportional(void)
{
    /* FNV-1a 64 reference values */
    CHECK(corpus_key_hash("") == 14695981039346656037ULL);
    CHECK(corpus_key_hash("a") == 0xaf63dc4c8601ec8cULL);
    long counts[CORPUS_SPLITS] = { 0 };
    char key[32];
    for (int i = 0; i < 20000; i++) {
        snprintf(key, sizeof key, "package-%d", i);
        enum corpus_split s = corpus_split_of(key);
        CHECK_INT_EQ(s, corpus_split_of(key));
        counts[s]++;
    }
    CHECK_NEAR(counts[CORPUS_TRAIN] / 20000.0, 0.8, 0.02);
    CHECK_NEAR(counts[CORPUS_VALIDATION] / 20000.0, 0.1, 0.02);
    CHECK_NEAR(counts[CORPUS_TEST] / 20000.0, 0.1, 0.02);
}

/* ---- end to end ---- */

static void write_text(const char *dir, const char *name, const char *text)
{
    char path[1024];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    FILE *f = fopen(path, "wb");
    fputs(text, f);
    fclose(f);
}

static void remove_in(const char *dir, const char *name)
{
    char path[1024];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    unlink(path);
}

static void test_build_counts_malformed(void)
{
    if (access("/usr/lib/apt/apt-helper", X_OK) != 0)
        SKIP("/usr/lib/apt/apt-helper is not installed");
    char dir[] = "/tmp/caem-corpus-XXXXXX";
    CHECK(mkdtemp(dir) != NULL);
    write_text(dir, "host_dists_x_main_i18n_Translation-en",
               "Package: good\nDescription-md5: m1\nDescription-en: A game\n"
               " Shoot the aliens.\n\n"
               "Package: nomd5\nDescription-en: Lost\n long text\n\n"
               "Package: broken\nno colon\n\n");
    write_text(dir, "host_dists_x_main_binary-amd64_Packages",
               "Package: good\nSection: games\nDescription-md5: m1\n\n"
               "Section: games\n\n");
    write_text(dir, "data.noun",
               "  1 license header\n"
               "00000100 03 n 01 cat 0 000 | a small feline; \"the cats purred\"\n"
               "garbage line\n");
    write_text(dir, "data.verb", "");
    write_text(dir, "data.adj", "");
    write_text(dir, "data.adv", "");
    char out[600];
    snprintf(out, sizeof out, "%s/out", dir);
    struct corpus_options options = { out, dir, dir, 0 };
    struct corpus_report report;
    struct caem_error err;
    int status = corpus_build(&options, &report, &err);
    CHECK_MSG(status == 0, "%s", err.message);
    if (status == 0) {
        const struct corpus_task_report *summary = &report.tasks[CORPUS_SUMMARIZATION];
        CHECK_INT_EQ(summary->records, 3);
        CHECK_INT_EQ(summary->malformed, 2);
        CHECK(strstr(summary->first_malformed, "record 2") != NULL);
        CHECK(strstr(summary->first_malformed, "Description-md5") != NULL);
        CHECK_INT_EQ(summary->counts[0] + summary->counts[1] + summary->counts[2], 1);
        const struct corpus_task_report *classes = &report.tasks[CORPUS_CLASSIFICATION];
        CHECK_INT_EQ(classes->malformed, 1);
        CHECK(strstr(classes->first_malformed, "missing field Package") != NULL);
        const struct corpus_task_report *qa = &report.tasks[CORPUS_QA];
        CHECK_INT_EQ(qa->records, 2);
        CHECK_INT_EQ(qa->malformed, 1);
        CHECK(strstr(qa->first_malformed, "data.noun: line 3") != NULL);
        CHECK_INT_EQ(qa->counts[0] + qa->counts[1] + qa->counts[2], 1);
    }
    static const char *const inputs[] = { "host_dists_x_main_i18n_Translation-en",
                                          "host_dists_x_main_binary-amd64_Packages",
                                          "data.noun", "data.verb", "data.adj", "data.adv" };
    for (size_t i = 0; i < sizeof inputs / sizeof inputs[0]; i++)
        remove_in(dir, inputs[i]);
    static const char *const outputs[] = { "train.jsonl", "validation.jsonl", "test.jsonl",
                                           "counts.json" };
    for (int t = 0; t < CORPUS_TASKS; t++) {
        char task_dir[700];
        snprintf(task_dir, sizeof task_dir, "%s/%s", out, corpus_task_names[t]);
        for (size_t i = 0; i < sizeof outputs / sizeof outputs[0]; i++)
            remove_in(task_dir, outputs[i]);
        rmdir(task_dir);
    }
    rmdir(out);
    rmdir(dir);
}

static char *read_file(const char *path, long *size)
{
    FILE *f = fopen(path, "rb");
    if (f == NULL)
        return NULL;
    fseek(f, 0, SEEK_END);
    *size = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *text = malloc((size_t)*size + 1);
    size_t got = fread(text, 1, (size_t)*size, f);
    text[got] = '\0';
    fclose(f);
    return text;
}

static int files_equal(const char *a, const char *b)
{
    long na, nb;
    char *x = read_file(a, &na), *y = read_file(b, &nb);
    int equal = x != NULL && y != NULL && na == nb && memcmp(x, y, (size_t)na) == 0;
    free(x);
    free(y);
    return equal;
}

/* Checks every record of one split file: a QA answer lies at its offset in
 * the context, and no id appears twice across the task's splits (ids is the
 * set so far, a JSON object). */
static void check_split_file(const char *path, int qa, json_t *ids, long expected)
{
    FILE *f = fopen(path, "rb");
    CHECK_MSG(f != NULL, "%s missing", path);
    if (f == NULL)
        return;
    char *line = NULL;
    size_t capacity = 0;
    long lines = 0;
    while (getline(&line, &capacity, f) != -1) {
        lines++;
        json_t *record = json_loads(line, 0, NULL);
        CHECK_MSG(record != NULL, "%s: line %ld is not JSON", path, lines);
        if (record == NULL)
            continue;
        const char *id = json_string_value(json_object_get(record, "id"));
        CHECK_MSG(id != NULL, "%s: line %ld has no id", path, lines);
        if (id == NULL)
            id = "";
        CHECK_MSG(json_object_get(ids, id) == NULL, "%s: id %s repeated", path, id);
        json_object_set_new(ids, id, json_true());
        if (qa) {
            const char *context = json_string_value(json_object_get(record, "context"));
            const char *target = json_string_value(json_object_get(record, "target"));
            long offset = (long)json_integer_value(json_object_get(record, "answer_start"));
            /* step over offset code points */
            const char *p = context;
            for (long k = 0; p != NULL && *p != '\0' && k < offset; k++)
                do
                    p++;
                while (((unsigned char)*p & 0xC0) == 0x80);
            CHECK_MSG(p != NULL && target != NULL && strncmp(p, target, strlen(target)) == 0,
                      "%s: id %s: answer not at answer_start", path, id);
        }
        json_decref(record);
    }
    free(line);
    fclose(f);
    CHECK_INT_EQ(lines, expected);
}

static void test_build_real_sources(void)
{
    if (corpus_count_index_files(CORPUS_DEFAULT_LISTS, "Translation-en") <= 0 ||
        corpus_count_index_files(CORPUS_DEFAULT_LISTS, "Packages") <= 0)
        SKIP("no Translation-en or Packages index files in " CORPUS_DEFAULT_LISTS
             " (run apt-get update -o Acquire::Languages=en)");
    if (access(CORPUS_DEFAULT_WORDNET "/data.noun", R_OK) != 0)
        SKIP("WordNet is not installed (Debian package wordnet-base)");

    char first[] = "/tmp/caem-corpus-XXXXXX", second[] = "/tmp/caem-corpus-XXXXXX";
    CHECK(mkdtemp(first) != NULL);
    CHECK(mkdtemp(second) != NULL);
    struct corpus_options options = { first, CORPUS_DEFAULT_LISTS, CORPUS_DEFAULT_WORDNET,
                                      3000 };
    struct corpus_report report, again;
    struct caem_error err;
    CHECK_MSG(corpus_build(&options, &report, &err) == 0, "%s", err.message);
    options.out_dir = second;
    CHECK_MSG(corpus_build(&options, &again, &err) == 0, "%s", err.message);

    static const char *const files[] = { "train.jsonl", "validation.jsonl", "test.jsonl",
                                         "counts.json" };
    for (int t = 0; t < CORPUS_TASKS; t++) {
        json_t *ids = json_object();
        long total = 0;
        for (int s = 0; s < CORPUS_SPLITS; s++) {
            CHECK_MSG(report.tasks[t].counts[s] > 0, "%s %s", corpus_task_names[t],
                      corpus_split_names[s]);
            total += report.tasks[t].counts[s];
            char path[512];
            snprintf(path, sizeof path, "%s/%s/%s", first, corpus_task_names[t], files[s]);
            check_split_file(path, t == CORPUS_QA, ids, report.tasks[t].counts[s]);
        }
        CHECK(total <= 3000);
        json_decref(ids);
        for (size_t i = 0; i < sizeof files / sizeof files[0]; i++) {
            char a[512], b[512];
            snprintf(a, sizeof a, "%s/%s/%s", first, corpus_task_names[t], files[i]);
            snprintf(b, sizeof b, "%s/%s/%s", second, corpus_task_names[t], files[i]);
            CHECK_MSG(files_equal(a, b), "%s differs from %s", a, b);
            unlink(a);
            unlink(b);
        }
        char dir[512];
        snprintf(dir, sizeof dir, "%s/%s", first, corpus_task_names[t]);
        rmdir(dir);
        snprintf(dir, sizeof dir, "%s/%s", second, corpus_task_names[t]);
        rmdir(dir);
    }
    rmdir(first);
    rmdir(second);
}

/* ---- the vocabulary ---- */

static const char *const vocab_words[] = {
    "the", "package", "provides", "library", "for", "reading", "writing", "files", "with",
    "support", "network", "server", "client", "graphics", "sound", "editor", "text", "data",
    "development", "headers", "documentation", "python", "module", "tools", "command",
    "line", "interface", "game", "science", "mathematics", "database", "mail", "fast",
    "small", "simple", "portable", "secure", "extensible", "plugin", "system",
};

/* Writes DIR/<task>/train.jsonl for every task, `records` records each, and
 * returns the number of non-blank lines in their inputs and targets. */
static long write_vocab_corpus(const char *dir, int records)
{
    const size_t words = sizeof vocab_words / sizeof vocab_words[0];
    long sentences = 0;
    for (int t = 0; t < CORPUS_TASKS; t++) {
        char path[1024];
        snprintf(path, sizeof path, "%s/%s", dir, corpus_task_names[t]);
        mkdir(path, 0755);
        snprintf(path, sizeof path, "%s/%s/train.jsonl", dir, corpus_task_names[t]);
        FILE *f = fopen(path, "wb");
        if (f == NULL)
            return -1;
        for (int i = 0; i < records; i++) {
            size_t k = (size_t)(t * records + i) * 7;
            /* two input lines around a blank one, and a one-line target */
            fprintf(f, "{\"id\": \"r%d\", \"input\": \"%s %s %s %s.\\n \\n%s %s %s.\", "
                    "\"target\": \"%s %s\"}\n", i, vocab_words[k % words],
                    vocab_words[(k / 3 + 1) % words], vocab_words[(k / 5 + 2) % words],
                    vocab_words[(k * 3 + 3) % words], vocab_words[(k + 4) % words],
                    vocab_words[(k / 7 + 5) % words], vocab_words[(k * 11 + 6) % words],
                    vocab_words[(k / 2 + 7) % words], vocab_words[(k * 13 + 8) % words]);
            sentences += 3;
        }
        fclose(f);
    }
    return sentences;
}

static void remove_tree(const char *dir)
{
    if (strncmp(dir, "/tmp/caem-vocab-", 16) != 0)
        return;
    char command[256];
    snprintf(command, sizeof command, "rm -rf '%s'", dir);
    CHECK_INT_EQ(system(command), 0);
}

static void test_vocab_trains_t5_layout(void)
{
    if (system("command -v spm_train >/dev/null 2>&1") != 0)
        SKIP("spm_train is not on the PATH (Debian package sentencepiece)");
    char dir[] = "/tmp/caem-vocab-XXXXXX";
    CHECK(mkdtemp(dir) != NULL);
    long expected_sentences = write_vocab_corpus(dir, 100);
    CHECK_INT_EQ(expected_sentences, 900);

    struct corpus_vocab_options options = { dir, 300, 7 };
    struct corpus_vocab_report report;
    struct caem_error err;
    CHECK_MSG(corpus_train_vocab(&options, &report, &err) == 0, "%s", err.message);
    CHECK_INT_EQ(report.sentences, expected_sentences);
    CHECK(report.pieces > 50);
    CHECK(report.pieces <= 300);

    char path[1024];
    snprintf(path, sizeof path, "%s/spm_input.tmp", dir);
    CHECK_MSG(access(path, F_OK) != 0, "%s was not removed", path);
    snprintf(path, sizeof path, "%s/spm.partial.model", dir);
    CHECK_MSG(access(path, F_OK) != 0, "%s was not renamed", path);
    snprintf(path, sizeof path, "%s/spm.vocab", dir);
    char *vocab = NULL;
    long vocab_size = 0;
    CHECK((vocab = read_file(path, &vocab_size)) != NULL);
    long vocab_lines = 0;
    for (long i = 0; vocab != NULL && i < vocab_size; i++)
        vocab_lines += vocab[i] == '\n';
    CHECK_INT_EQ(vocab_lines, report.pieces);
    free(vocab);

    snprintf(path, sizeof path, "%s/spm.model", dir);
    struct tokenizer *t;
    CHECK_MSG(tokenizer_load(&t, path, &err) == 0, "%s", err.message);
    if (t != NULL) {
        struct tokenizer_special_ids special = tokenizer_special_ids(t);
        CHECK_INT_EQ(special.pad_id, 0);
        CHECK_INT_EQ(special.eos_id, 1);
        CHECK_INT_EQ(special.unk_id, 2);
        CHECK_INT_EQ(special.bos_id, -1);
        CHECK_INT_EQ(tokenizer_piece_count(t), report.pieces);
        CHECK_INT_EQ(tokenizer_vocab_size(t), report.pieces + TOKENIZER_SENTINELS);
        /* every character of the training text has a piece, so nothing is unknown */
        const char text[] = "the portable python library provides fast network tools";
        int32_t *ids;
        size_t count;
        CHECK(tokenizer_encode(t, text, strlen(text), &ids, &count, &err) == 0);
        CHECK(count > 0);
        for (size_t i = 0; i < count; i++)
            CHECK_MSG(ids[i] != special.unk_id, "id %zu is unknown", i);
        free(ids);
        tokenizer_free(t);
    }

    /* the same text, seed and directory give the same model */
    char *first = NULL, *second = NULL;
    long first_size = 0, second_size = -1;
    CHECK((first = read_file(path, &first_size)) != NULL);
    CHECK_MSG(corpus_train_vocab(&options, &report, &err) == 0, "%s", err.message);
    CHECK((second = read_file(path, &second_size)) != NULL);
    CHECK_INT_EQ(first_size, second_size);
    CHECK(first != NULL);
    if (first != NULL && second != NULL && first_size == second_size)
        CHECK(memcmp(first, second, (size_t)first_size) == 0);
    free(first);
    free(second);
    remove_tree(dir);
}

static void test_vocab_missing_spm_train(void)
{
    char dir[] = "/tmp/caem-vocab-XXXXXX";
    CHECK(mkdtemp(dir) != NULL);
    write_vocab_corpus(dir, 5);
    const char *saved = getenv("PATH");
    char *path = saved != NULL ? strdup(saved) : NULL;
    setenv("PATH", "/nonexistent", 1);
    struct corpus_vocab_options options = { dir, 300, 1 };
    struct corpus_vocab_report report;
    struct caem_error err;
    CHECK(corpus_train_vocab(&options, &report, &err) == -1);
    if (path != NULL)
        setenv("PATH", path, 1);
    free(path);
    CHECK_MSG(strstr(err.message, "spm_train not found") != NULL, "%s", err.message);
    CHECK_MSG(strstr(err.message, "sentencepiece") != NULL, "%s", err.message);
    CHECK_MSG(strstr(err.message, "tools/deps.sh") != NULL, "%s", err.message);
    remove_tree(dir);
}

static void test_vocab_missing_split_named(void)
{
    if (system("command -v spm_train >/dev/null 2>&1") != 0)
        SKIP("spm_train is not on the PATH (Debian package sentencepiece)");
    char dir[] = "/tmp/caem-vocab-XXXXXX";
    CHECK(mkdtemp(dir) != NULL);
    struct corpus_vocab_options options = { dir, 300, 1 };
    struct corpus_vocab_report report;
    struct caem_error err;
    CHECK(corpus_train_vocab(&options, &report, &err) == -1);
    CHECK_MSG(strstr(err.message, "summarization/train.jsonl") != NULL, "%s", err.message);
    CHECK_MSG(strstr(err.message, dir) != NULL, "%s", err.message);

    options.vocab_size = 10;
    CHECK(corpus_train_vocab(&options, &report, &err) == -1);
    CHECK_MSG(strstr(err.message, "invalid vocabulary size 10") != NULL, "%s", err.message);
    remove_tree(dir);
}

int main(void)
{
    TEST_SUITE("corpus");
    RUN_TEST(deb822_records_and_continuations);
    RUN_TEST(wordnet_parse_synset_line);
    RUN_TEST(wordnet_adjective_marker);
    RUN_TEST(wordnet_malformed_lines);
    RUN_TEST(inflection_matcher_cases);
    RUN_TEST(matcher_empty_lemma_word);
    RUN_TEST(wordnet_word_count_bounds);
    RUN_TEST(split_stable_and_proportional);
    RUN_TEST(build_counts_malformed);
    RUN_TEST(build_real_sources);
    RUN_TEST(vocab_trains_t5_layout);
    RUN_TEST(vocab_missing_spm_train);
    RUN_TEST(vocab_missing_split_named);
    TEST_MAIN_END();
}
