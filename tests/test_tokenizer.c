/* The SentencePiece tokenizer against the reference tools: models trained by
 * `spm_train` on real text, ids compared with `spm_encode` and text with
 * `spm_decode`, line by line. Also malformed model files and a hand-built
 * model whose segmentation is worked out by hand. */
#include <glob.h>
#include <jansson.h>
#include <stdint.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "test.h"
#include "tokenizer.h"

/* Lines taken from each source for the comparison; the training corpus
 * takes every line up to CORPUS_MAX_BYTES. */
enum { SYSTEM_LINES = 1500, DATA_LINES_PER_SOURCE = 400, MAX_LINE = 2000 };
#define CORPUS_MAX_BYTES (4u << 20)

static char tmp_dir[64];
static char corpus_path[128], lines_path[128];
static int trained;  /* 1 after both models were trained */
static size_t lines_written;

/* ---- corpus ---- */

struct line_sink {
    FILE *corpus, *lines;
    size_t corpus_bytes;
};

/* Adds one line to the training corpus and, when `compare` is set, to the
 * lines compared with spm_encode. Lines with bytes that would split or end a
 * line are dropped. */
static void sink_add(struct line_sink *sink, const char *text, size_t len, int compare)
{
    if (len == 0 || len > MAX_LINE || memchr(text, '\n', len) || memchr(text, '\r', len) ||
        memchr(text, '\0', len))
        return;
    if (sink->corpus_bytes + len < CORPUS_MAX_BYTES) {
        fwrite(text, 1, len, sink->corpus);
        fputc('\n', sink->corpus);
        sink->corpus_bytes += len + 1;
    }
    if (compare) {
        fwrite(text, 1, len, sink->lines);
        fputc('\n', sink->lines);
        lines_written++;
    }
}

/* Adds the lines of every file matching a pattern, comparing every
 * `stride`-th line until `max_compare` lines were taken. */
static void add_system_files(struct line_sink *sink, const char *pattern, size_t stride,
                             size_t max_compare)
{
    glob_t g;
    if (glob(pattern, 0, NULL, &g) != 0)
        return;
    size_t seen = 0, taken = 0;
    char *line = NULL;
    size_t cap = 0;
    for (size_t i = 0; i < g.gl_pathc; i++) {
        FILE *fp = fopen(g.gl_pathv[i], "rb");
        if (fp == NULL)
            continue;
        ssize_t n;
        while ((n = getline(&line, &cap, fp)) >= 0) {
            if (n > 0 && line[n - 1] == '\n')
                n--;
            int compare = seen++ % stride == 0 && taken < max_compare;
            taken += compare && n > 0;
            sink_add(sink, line, (size_t)n, compare);
        }
        fclose(fp);
    }
    free(line);
    globfree(&g);
}

/* AG News rows are "class","title","description"; the quotes and the
 * doubled quotes inside fields are kept, which is fine for tokenizing. */
static size_t add_agnews(struct line_sink *sink, const char *path)
{
    FILE *fp = fopen(path, "rb");
    if (fp == NULL)
        return 0;
    char *line = NULL;
    size_t cap = 0, taken = 0;
    ssize_t n;
    while ((n = getline(&line, &cap, fp)) >= 0) {
        if (n > 0 && line[n - 1] == '\n')
            line[--n] = '\0';
        char *title = strstr(line, "\",\"");
        char *description = title ? strstr(title + 3, "\",\"") : NULL;
        if (description == NULL)
            continue;
        int compare = taken < DATA_LINES_PER_SOURCE;
        sink_add(sink, title + 3, (size_t)(description - title - 3), compare);
        sink_add(sink, description + 3, strlen(description + 3), compare);
        taken += compare ? 2 : 0;
    }
    free(line);
    fclose(fp);
    return taken;
}

static size_t add_squad(struct line_sink *sink, const char *path)
{
    json_error_t jerr;
    json_t *root = json_load_file(path, 0, &jerr);
    size_t taken = 0, i, j, k;
    json_t *article, *paragraph, *qa;
    if (root == NULL)
        return 0;
    json_array_foreach(json_object_get(root, "data"), i, article) {
        json_array_foreach(json_object_get(article, "paragraphs"), j, paragraph) {
            json_array_foreach(json_object_get(paragraph, "qas"), k, qa) {
                json_t *q = json_object_get(qa, "question");
                if (!json_is_string(q))
                    continue;
                int compare = taken < DATA_LINES_PER_SOURCE;
                sink_add(sink, json_string_value(q), json_string_length(q), compare);
                taken += compare;
            }
        }
    }
    json_decref(root);
    return taken;
}

static size_t add_xsum(struct line_sink *sink, const char *path)
{
    FILE *fp = fopen(path, "rb");
    if (fp == NULL)
        return 0;
    char *line = NULL;
    size_t cap = 0, taken = 0;
    while (getline(&line, &cap, fp) >= 0) {
        json_error_t jerr;
        json_t *record = json_loads(line, 0, &jerr);
        json_t *summary = json_object_get(record, "summary");
        if (json_is_string(summary)) {
            int compare = taken < DATA_LINES_PER_SOURCE;
            sink_add(sink, json_string_value(summary), json_string_length(summary), compare);
            taken += compare;
        }
        json_decref(record);
    }
    free(line);
    fclose(fp);
    return taken;
}

/* Lines that exercise normalization: full-width forms, ligatures, tabs, runs
 * of spaces, leading and trailing blanks, control characters, invalid UTF-8,
 * scripts absent from the training text. */
static const char *const hard_lines[] = {
    "  Hello\t\tworld   ",
    "\t leading tab and   three spaces",
    "\xef\xbc\xa1\xef\xbc\xa2\xef\xbc\xa3\xef\xbc\x91\xef\xbc\x92 full\xe3\x80\x80width",
    "na\xc3\xafve caf\xc3\xa9 r\xc3\xa9sum\xc3\xa9 \xc3\x85ngstr\xc3\xb6m",
    "\xe6\x97\xa5\xe6\x9c\xac\xe8\xaa\x9e\xe3\x81\xae\xe6\x96\x87\xe7\xab\xa0",
    "\xd0\x9f\xd1\x80\xd0\xb8\xd0\xb2\xd0\xb5\xd1\x82 \xce\xb1\xce\xb2\xce\xb3",
    "emoji \xf0\x9f\x98\x80\xf0\x9f\x98\x80 twice",
    "bad \xff\xfe utf8 \xc3 end \xe2\x82",
    "ctl \x01\x02 x\x7f \xc2\x85 \xef\xbf\xbd",
    "\xef\xac\x81 \xe2\x84\xa2 \xe2\x91\xa0 \xe3\x8d\xbf \xef\xbe\x8a\xef\xbe\x9e",
    "(iii) www.example.org ://www.",
    "a",
    " x ",
    "\xe2\x96\x81 already escaped \xe2\x96\x81\xe2\x96\x81",
    /* not sentinel spellings, so encode must treat them as text */
    "<extra_id_100> <extra_id_07> <extra_id_> <extra_id_5 extra_id_1> <EXTRA_ID_2>",
};

/* ---- the trained models ---- */

static int run_quiet(const char *command)
{
    int rc = system(command);
    return rc == -1 ? -1 : WEXITSTATUS(rc);
}

static int have_tool(const char *name)
{
    char command[128];
    snprintf(command, sizeof command, "command -v %s >/dev/null 2>&1", name);
    return run_quiet(command) == 0;
}

static void model_path(char *out, size_t size, const char *prefix)
{
    snprintf(out, size, "%s/%s.model", tmp_dir, prefix);
}

static int train(const char *prefix, const char *extra)
{
    char command[1024];
    snprintf(command, sizeof command,
             "spm_train --input=%s --model_prefix=%s/%s --model_type=unigram --vocab_size=2000 "
             "--pad_id=0 --eos_id=1 --unk_id=2 --bos_id=-1 --normalization_rule_name=nmt_nfkc "
             "--num_threads=4 %s >%s/%s.log 2>&1",
             corpus_path, tmp_dir, prefix, extra, tmp_dir, prefix);
    int rc = run_quiet(command);
    if (rc != 0)
        printf("  spm_train failed (status %d); see %s/%s.log\n", rc, tmp_dir, prefix);
    return rc;
}

/* Builds the corpus and trains both models once; later tests reuse them. */
static void test_models_train(void)
{
    if (!have_tool("spm_train") || !have_tool("spm_encode") || !have_tool("spm_decode"))
        SKIP("spm_train, spm_encode or spm_decode not on the PATH "
             "(Debian package sentencepiece)");
    strcpy(tmp_dir, "/tmp/caem_tokenizer_XXXXXX");
    CHECK(mkdtemp(tmp_dir) != NULL);
    snprintf(corpus_path, sizeof corpus_path, "%s/corpus.txt", tmp_dir);
    snprintf(lines_path, sizeof lines_path, "%s/lines.txt", tmp_dir);
    struct line_sink sink = { fopen(corpus_path, "wb"), fopen(lines_path, "wb"), 0 };
    CHECK(sink.corpus != NULL);
    CHECK(sink.lines != NULL);
    if (sink.corpus == NULL || sink.lines == NULL)
        return;

    for (size_t i = 0; i < sizeof hard_lines / sizeof hard_lines[0]; i++)
        sink_add(&sink, hard_lines[i], strlen(hard_lines[i]), 1);
    const char *root = getenv("CAEM_ROOT");
    char data[512], path[640];
    snprintf(data, sizeof data, "%s/../shared/data", root ? root : ".");
    struct stat st;
    size_t data_lines = 0;
    if (stat(data, &st) == 0 && S_ISDIR(st.st_mode)) {
        snprintf(path, sizeof path, "%s/agnews/train_rows0001-2000.csv", data);
        data_lines += add_agnews(&sink, path);
        snprintf(path, sizeof path, "%s/squad/dev-v1.1-half-a.json", data);
        data_lines += add_squad(&sink, path);
        snprintf(path, sizeof path, "%s/xsum/xsum_test_lines0001-0800.jsonl", data);
        data_lines += add_xsum(&sink, path);
    } else {
        printf("  %s not found; comparing system text only\n", data);
    }
    /* system text last, because the corpus stops growing at its size limit */
    size_t before_system = lines_written;
    add_system_files(&sink, "/usr/share/common-licenses/*", 7, SYSTEM_LINES / 2);
    add_system_files(&sink, "/usr/share/doc/*/copyright", 13, SYSTEM_LINES);
    size_t system_lines = lines_written - before_system;
    fclose(sink.corpus);
    fclose(sink.lines);
    printf("  corpus %zu bytes; %zu lines to compare (%zu system, %zu data)\n",
           sink.corpus_bytes, lines_written, system_lines, data_lines);
    CHECK(lines_written >= 2000);

    CHECK_INT_EQ(train("plain", ""), 0);
    CHECK_INT_EQ(train("bytes", "--byte_fallback=true"), 0);
    trained = !test_current_failed;
}

/* Reads one line of space-separated ids; returns the number read or -1 at
 * the end of the stream. */
static long read_id_line(FILE *fp, int32_t *ids, size_t max, FILE *copy)
{
    static char *line;
    static size_t cap;
    ssize_t n = getline(&line, &cap, fp);
    if (n < 0)
        return -1;
    if (copy != NULL)
        fputs(line, copy);
    long count = 0;
    char *p = line, *end;
    while ((size_t)count < max) {
        long v = strtol(p, &end, 10);
        if (end == p)
            break;
        ids[count++] = (int32_t)v;
        p = end;
    }
    return count;
}

/* Compares encode with spm_encode and decode with spm_decode over every line
 * in lines.txt. Returns the number of lines compared. */
static size_t compare_model(const char *prefix, int *saw_unknown, int *saw_byte)
{
    char model[128], ids_path[128], command[512];
    model_path(model, sizeof model, prefix);
    snprintf(ids_path, sizeof ids_path, "%s/%s.ids", tmp_dir, prefix);
    struct caem_error err;
    struct tokenizer *t;
    if (tokenizer_load(&t, model, &err) != 0) {
        CHECK_MSG(0, "%s", err.message);
        return 0;
    }
    struct tokenizer_special_ids special = tokenizer_special_ids(t);

    /* encode: spm_encode's ids, copied to a file for spm_decode */
    snprintf(command, sizeof command, "spm_encode --model=%s --output_format=id < %s", model,
             lines_path);
    FILE *ref = popen(command, "r");
    FILE *text = fopen(lines_path, "rb");
    FILE *ids_file = fopen(ids_path, "wb");
    CHECK(ref != NULL);
    CHECK(text != NULL);
    CHECK(ids_file != NULL);
    static int32_t ref_ids[MAX_LINE * 4];
    char *line = NULL;
    size_t cap = 0, compared = 0, mismatches = 0;
    ssize_t n;
    char **decoded = calloc(lines_written, sizeof *decoded);
    while (ref && text && ids_file && (n = getline(&line, &cap, text)) >= 0) {
        line[--n] = '\0';
        long ref_count = read_id_line(ref, ref_ids, sizeof ref_ids / sizeof ref_ids[0], ids_file);
        CHECK_MSG(ref_count >= 0, "spm_encode stopped before line %zu", compared + 1);
        if (ref_count < 0)
            break;
        int32_t *ids;
        size_t count;
        CHECK_MSG(tokenizer_encode(t, line, (size_t)n, &ids, &count, &err) == 0, "%s",
                  err.message);
        int same = count == (size_t)ref_count &&
                   memcmp(ids, ref_ids, count * sizeof *ids) == 0;
        if (!same && mismatches++ < 5) {
            printf("  %s line %zu ids differ: '%s'\n   ours:", prefix, compared + 1, line);
            for (size_t i = 0; i < count; i++)
                printf(" %d", ids[i]);
            printf("\n   spm: ");
            for (long i = 0; i < ref_count; i++)
                printf(" %d", ref_ids[i]);
            printf("\n");
        }
        for (size_t i = 0; i < count; i++) {
            *saw_unknown |= ids[i] == special.unk_id;
            *saw_byte |= tokenizer_piece_type(t, ids[i]) == TOKENIZER_PIECE_BYTE;
        }
        size_t len;
        CHECK_MSG(tokenizer_decode(t, ids, count, &decoded[compared], &len, &err) == 0, "%s",
                  err.message);
        free(ids);
        compared++;
    }
    CHECK_INT_EQ(mismatches, 0);
    CHECK_INT_EQ(compared, lines_written);
    if (ref)
        CHECK_INT_EQ(pclose(ref), 0);
    if (text)
        fclose(text);
    if (ids_file)
        fclose(ids_file);

    /* decode: spm_decode of spm_encode's ids against our decode of ours */
    snprintf(command, sizeof command, "spm_decode --model=%s --input_format=id < %s", model,
             ids_path);
    FILE *dec = popen(command, "r");
    CHECK(dec != NULL);
    size_t decode_mismatches = 0;
    for (size_t i = 0; dec && i < compared; i++) {
        n = getline(&line, &cap, dec);
        CHECK_MSG(n >= 0, "spm_decode stopped before line %zu", i + 1);
        if (n < 0)
            break;
        line[--n] = '\0';
        if (decoded[i] == NULL || strcmp(decoded[i], line) != 0) {
            if (decode_mismatches++ < 5)
                printf("  %s line %zu decodes to '%s', spm_decode gives '%s'\n", prefix, i + 1,
                       decoded[i] ? decoded[i] : "(error)", line);
        }
    }
    CHECK_INT_EQ(decode_mismatches, 0);
    if (dec)
        CHECK_INT_EQ(pclose(dec), 0);
    for (size_t i = 0; i < lines_written; i++)
        free(decoded[i]);
    free(decoded);
    free(line);
    tokenizer_free(t);
    printf("  %s: %zu lines compared with spm_encode and spm_decode\n", prefix, compared);
    return compared;
}

static void test_encode_matches_spm(void)
{
    if (!trained)
        SKIP("no trained model (see models_train)");
    int saw_unknown = 0, saw_byte = 0;
    CHECK(compare_model("plain", &saw_unknown, &saw_byte) >= 2000);
    CHECK_MSG(saw_unknown, "no line produced the unknown id, so unknown merging went untested");
    CHECK(!saw_byte);
}

static void test_byte_fallback_matches_spm(void)
{
    if (!trained)
        SKIP("no trained model (see models_train)");
    int saw_unknown = 0, saw_byte = 0;
    CHECK(compare_model("bytes", &saw_unknown, &saw_byte) >= 2000);
    CHECK_MSG(saw_byte, "no line fell back to byte pieces");
    CHECK(!saw_unknown);
}

static void test_special_ids_t5_layout(void)
{
    if (!trained)
        SKIP("no trained model (see models_train)");
    char model[128];
    model_path(model, sizeof model, "plain");
    struct caem_error err;
    struct tokenizer *t;
    CHECK_MSG(tokenizer_load(&t, model, &err) == 0, "%s", err.message);
    if (t == NULL)
        return;
    struct tokenizer_special_ids s = tokenizer_special_ids(t);
    CHECK_INT_EQ(s.pad_id, 0);
    CHECK_INT_EQ(s.eos_id, 1);
    CHECK_INT_EQ(s.unk_id, 2);
    CHECK_INT_EQ(s.bos_id, -1);
    CHECK_INT_EQ(tokenizer_piece_count(t), 2000);
    CHECK_INT_EQ(tokenizer_vocab_size(t), 2000 + TOKENIZER_SENTINELS);
    CHECK(strcmp(tokenizer_piece(t, 0), "<pad>") == 0);
    CHECK(strcmp(tokenizer_piece(t, 1), "</s>") == 0);
    CHECK(strcmp(tokenizer_piece(t, 2), "<unk>") == 0);
    CHECK_INT_EQ(tokenizer_piece_type(t, 1), TOKENIZER_PIECE_CONTROL);
    CHECK_INT_EQ(tokenizer_piece_type(t, 2), TOKENIZER_PIECE_UNKNOWN);
    CHECK(strcmp(tokenizer_piece(t, 2000), "<extra_id_99>") == 0);
    CHECK(strcmp(tokenizer_piece(t, 2099), "<extra_id_0>") == 0);
    CHECK(tokenizer_piece(t, 2100) == NULL);
    CHECK(tokenizer_piece(t, -1) == NULL);
    tokenizer_free(t);
}

static void test_empty_and_blank_text(void)
{
    if (!trained)
        SKIP("no trained model (see models_train)");
    char model[128];
    model_path(model, sizeof model, "plain");
    struct caem_error err;
    struct tokenizer *t;
    CHECK_MSG(tokenizer_load(&t, model, &err) == 0, "%s", err.message);
    if (t == NULL)
        return;
    const char *blank[] = { "", "     ", " \t \t " };
    for (size_t i = 0; i < 3; i++) {
        int32_t *ids = NULL;
        size_t count = 99;
        CHECK(tokenizer_encode(t, blank[i], strlen(blank[i]), &ids, &count, &err) == 0);
        CHECK_INT_EQ(count, 0);
        CHECK(ids != NULL);
        char *text = NULL;
        size_t len = 99;
        CHECK(tokenizer_decode(t, ids, count, &text, &len, &err) == 0);
        CHECK_INT_EQ(len, 0);
        CHECK(text != NULL);
        CHECK(text == NULL || text[0] == '\0');
        free(ids);
        free(text);
    }
    int32_t bad[] = { 5, 2100 };
    char *text;
    size_t len;
    CHECK(tokenizer_decode(t, bad, 2, &text, &len, &err) == -1);
    CHECK_MSG(strstr(err.message, "token id 2100 at position 1") != NULL, "%s", err.message);
    CHECK_MSG(strstr(err.message, "[0, 2100)") != NULL, "%s", err.message);
    tokenizer_free(t);
}

/* ---- hand-built models ---- */

struct pb {
    uint8_t data[512];
    size_t len;
};

static void pb_varint(struct pb *b, uint64_t v)
{
    do {
        b->data[b->len++] = (uint8_t)((v & 0x7F) | (v > 0x7F ? 0x80 : 0));
        v >>= 7;
    } while (v != 0);
}

static void pb_bytes(struct pb *b, uint32_t field, const void *data, size_t len)
{
    pb_varint(b, (uint64_t)field << 3 | 2);
    pb_varint(b, len);
    memcpy(b->data + b->len, data, len);
    b->len += len;
}

static void pb_piece(struct pb *b, const char *text, float score, int type)
{
    struct pb p = { .len = 0 };
    uint32_t bits;
    pb_bytes(&p, 1, text, strlen(text));
    pb_varint(&p, 2 << 3 | 5);
    memcpy(&bits, &score, 4);
    for (int i = 0; i < 4; i++)
        p.data[p.len++] = (uint8_t)(bits >> (8 * i));
    pb_varint(&p, 3 << 3 | 0);
    pb_varint(&p, (uint64_t)type);
    pb_bytes(b, 1, p.data, p.len);
}

/* <unk>=0, "▁a"=1, "a"=2, "b"=3, "▁"=4, "ab"=5, user-defined "<x>"=6, no
 * character map. trainer_spec sets model_type; normalizer_spec keeps the
 * defaults (dummy prefix, whitespace removal and escaping). */
static void hand_model(struct pb *b, int model_type)
{
    b->len = 0;
    pb_piece(b, "<unk>", 0.0f, TOKENIZER_PIECE_UNKNOWN);
    pb_piece(b, "\xe2\x96\x81" "a", -1.0f, TOKENIZER_PIECE_NORMAL);
    pb_piece(b, "a", -2.0f, TOKENIZER_PIECE_NORMAL);
    pb_piece(b, "b", -2.5f, TOKENIZER_PIECE_NORMAL);
    pb_piece(b, "\xe2\x96\x81", -3.0f, TOKENIZER_PIECE_NORMAL);
    pb_piece(b, "ab", -4.0f, TOKENIZER_PIECE_NORMAL);
    pb_piece(b, "<x>", 0.0f, TOKENIZER_PIECE_USER_DEFINED);
    struct pb spec = { .len = 0 };
    pb_varint(&spec, 3 << 3 | 0);
    pb_varint(&spec, (uint64_t)model_type);
    pb_bytes(b, 2, spec.data, spec.len);
}

static void test_hand_model_segmentation(void)
{
    struct pb b;
    hand_model(&b, 1);
    struct caem_error err;
    struct tokenizer *t;
    CHECK_MSG(tokenizer_load_buffer(&t, b.data, b.len, "hand.model", &err) == 0, "%s",
              err.message);
    if (t == NULL)
        return;
    struct {
        const char *text;
        int32_t ids[8];
        size_t count;
    } cases[] = {
        /* "▁ab": ▁a + b = -3.5 beats ▁ + ab = -7 */
        { "ab", { 1, 3 }, 2 },
        /* "▁b▁ab": ▁ b ▁a b = -9 beats ▁ b ▁ ab = -12.5 */
        { "  b  ab ", { 4, 3, 1, 3 }, 4 },
        /* z and y are unknown (min normal score -4, minus 10); the run merges */
        { "azyb", { 1, 0, 3 }, 3 },
        /* a user-defined piece is one token even inside a word */
        { "a<x>b", { 1, 6, 3 }, 3 },
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        int32_t *ids;
        size_t count;
        CHECK(tokenizer_encode(t, cases[i].text, strlen(cases[i].text), &ids, &count, &err) == 0);
        CHECK_MSG(count == cases[i].count, "'%s': %zu ids, expected %zu", cases[i].text, count,
                  cases[i].count);
        for (size_t k = 0; k < count && k < cases[i].count; k++)
            CHECK_MSG(ids[k] == cases[i].ids[k], "'%s': id %zu is %d, expected %d",
                      cases[i].text, k, ids[k], cases[i].ids[k]);
        free(ids);
    }
    int32_t ids[] = { 1, 0, 4, 3 };
    char *text;
    size_t len;
    CHECK(tokenizer_decode(t, ids, 4, &text, &len, &err) == 0);
    CHECK_MSG(strcmp(text, "a \xe2\x81\x87  b") == 0, "decoded '%s'", text);
    free(text);
    tokenizer_free(t);
}

static void test_not_unigram_rejected(void)
{
    struct pb b;
    hand_model(&b, 2);
    struct caem_error err;
    struct tokenizer *t;
    CHECK(tokenizer_load_buffer(&t, b.data, b.len, "bpe.model", &err) == -1);
    CHECK(t == NULL);
    CHECK_MSG(strstr(err.message, "bpe.model") != NULL, "%s", err.message);
    CHECK_MSG(strstr(err.message, "BPE") != NULL, "%s", err.message);
    CHECK_MSG(strstr(err.message, "UNIGRAM") != NULL, "%s", err.message);
}

static void test_wrong_wire_type_rejected(void)
{
    struct caem_error err;
    struct tokenizer *t;
    /* field 1 (pieces) as a varint instead of a length-delimited message */
    const uint8_t varint_pieces[] = { 0x08, 0x01 };
    CHECK(tokenizer_load_buffer(&t, varint_pieces, 2, "wire.model", &err) == -1);
    CHECK_MSG(strstr(err.message, "wire.model") != NULL, "%s", err.message);
    CHECK_MSG(strstr(err.message, "wire type 0") != NULL, "%s", err.message);
    CHECK_MSG(strstr(err.message, "byte offset 0") != NULL, "%s", err.message);

    /* a group (wire type 3) at byte offset 2, after an empty unknown field */
    const uint8_t group[] = { 0x3a, 0x00, 0x0b };
    CHECK(tokenizer_load_buffer(&t, group, 3, "group.model", &err) == -1);
    CHECK_MSG(strstr(err.message, "group.model: unsupported wire type 3") != NULL, "%s",
              err.message);
    CHECK_MSG(strstr(err.message, "byte offset 2") != NULL, "%s", err.message);

    /* score (field 2 of a piece) sent as a varint */
    const uint8_t bad_score[] = { 0x0a, 0x05, 0x0a, 0x01, 'a', 0x10, 0x01 };
    CHECK(tokenizer_load_buffer(&t, bad_score, sizeof bad_score, "score.model", &err) == -1);
    CHECK_MSG(strstr(err.message, "SentencePiece.score") != NULL, "%s", err.message);
    CHECK_MSG(strstr(err.message, "byte offset 5") != NULL, "%s", err.message);
}

static void test_truncated_file_rejected(void)
{
    struct pb b;
    hand_model(&b, 1);
    char path[] = "/tmp/caem_truncated_XXXXXX";
    int fd = mkstemp(path);
    CHECK(fd >= 0);
    if (fd < 0)
        return;
    /* cut inside the second piece's message */
    size_t cut = 30;
    CHECK(write(fd, b.data, cut) == (ssize_t)cut);
    close(fd);
    struct caem_error err;
    struct tokenizer *t;
    CHECK(tokenizer_load(&t, path, &err) == -1);
    CHECK(t == NULL);
    CHECK_MSG(strstr(err.message, path) != NULL, "%s", err.message);
    CHECK_MSG(strstr(err.message, "byte offset") != NULL, "%s", err.message);
    CHECK_MSG(strstr(err.message, "truncated") != NULL, "%s", err.message);
    unlink(path);

    /* a varint cut in the middle */
    const uint8_t cut_varint[] = { 0x0a, 0x85 };
    CHECK(tokenizer_load_buffer(&t, cut_varint, 2, "varint.model", &err) == -1);
    CHECK_MSG(strstr(err.message, "varint.model: truncated varint at byte offset 1") != NULL,
              "%s", err.message);

    CHECK(tokenizer_load(&t, "/nonexistent/x.model", &err) == -1);
    CHECK_MSG(strstr(err.message, "/nonexistent/x.model") != NULL, "%s", err.message);
}

static void test_trained_model_truncated(void)
{
    if (!trained)
        SKIP("no trained model (see models_train)");
    char model[128], cut[160], command[400];
    model_path(model, sizeof model, "plain");
    snprintf(cut, sizeof cut, "%s/cut.model", tmp_dir);
    snprintf(command, sizeof command, "head -c 100000 %s > %s", model, cut);
    CHECK_INT_EQ(run_quiet(command), 0);
    struct caem_error err;
    struct tokenizer *t;
    CHECK(tokenizer_load(&t, cut, &err) == -1);
    CHECK_MSG(strstr(err.message, "cut.model") != NULL, "%s", err.message);
    CHECK_MSG(strstr(err.message, "byte offset") != NULL, "%s", err.message);
}

/* ---- T5 sentinels ---- */

static void test_sentinel_ids_after_pieces(void)
{
    struct pb b;
    hand_model(&b, 1);
    struct caem_error err;
    struct tokenizer *t;
    CHECK_MSG(tokenizer_load_buffer(&t, b.data, b.len, "hand.model", &err) == 0, "%s",
              err.message);
    if (t == NULL)
        return;
    /* the hand model has 7 pieces, so the sentinels are ids 7..106, <extra_id_0> last */
    CHECK_INT_EQ(tokenizer_piece_count(t), 7);
    CHECK_INT_EQ(tokenizer_vocab_size(t), 107);
    CHECK_INT_EQ(tokenizer_sentinel_id(t, 0), 106);
    CHECK_INT_EQ(tokenizer_sentinel_id(t, 1), 105);
    CHECK_INT_EQ(tokenizer_sentinel_id(t, 99), 7);
    CHECK_INT_EQ(tokenizer_sentinel_id(t, 100), -1);
    CHECK_INT_EQ(tokenizer_sentinel_id(t, -1), -1);
    CHECK_INT_EQ(tokenizer_sentinel_index(t, 106), 0);
    CHECK_INT_EQ(tokenizer_sentinel_index(t, 7), 99);
    CHECK_INT_EQ(tokenizer_sentinel_index(t, 6), -1);
    CHECK_INT_EQ(tokenizer_sentinel_index(t, 107), -1);
    for (int i = 0; i < TOKENIZER_SENTINELS; i++) {
        char expected[32];
        snprintf(expected, sizeof expected, "<extra_id_%d>", i);
        int32_t id = tokenizer_sentinel_id(t, i);
        CHECK_MSG(strcmp(tokenizer_piece(t, id), expected) == 0, "id %d is '%s'", id,
                  tokenizer_piece(t, id));
        CHECK_INT_EQ(tokenizer_piece_type(t, id), TOKENIZER_PIECE_SENTINEL);
        CHECK_INT_EQ(tokenizer_sentinel_index(t, id), i);
    }
    CHECK(tokenizer_piece_score(t, 106) == 0.0f);
    CHECK(tokenizer_piece(t, 107) == NULL);
    CHECK_INT_EQ(tokenizer_piece_type(t, 107), -1);
    CHECK_INT_EQ(tokenizer_piece_type(t, 6), TOKENIZER_PIECE_USER_DEFINED);
    tokenizer_free(t);
}

static void test_sentinel_encode_decode_hand(void)
{
    struct pb b;
    hand_model(&b, 1);
    struct caem_error err;
    struct tokenizer *t;
    CHECK_MSG(tokenizer_load_buffer(&t, b.data, b.len, "hand.model", &err) == 0, "%s",
              err.message);
    if (t == NULL)
        return;
    struct {
        const char *text;
        int32_t ids[8];
        size_t count;
        const char *decoded;
    } cases[] = {
        /* "a" -> ▁a, then "b" alone -> ▁ b (there is no ▁b piece) */
        { "a<extra_id_0>b", { 1, 106, 4, 3 }, 4, "a <extra_id_0> b" },
        { "a <extra_id_0> b", { 1, 106, 4, 3 }, 4, "a <extra_id_0> b" },
        { "<extra_id_99>", { 7 }, 1, "<extra_id_99>" },
        { "<extra_id_1><extra_id_2>ab", { 105, 104, 1, 3 }, 4, "<extra_id_1> <extra_id_2> ab" },
        { "  <extra_id_10>  ", { 96 }, 1, "<extra_id_10>" },
        /* "<extra_id_100>" is not a sentinel but text: the "a" of "extra" is a
         * piece, and each run of unknown characters around it is one id */
        { "a<extra_id_100>", { 1, 0, 2, 0 }, 4, "a \xe2\x81\x87 a \xe2\x81\x87 " },
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        int32_t *ids;
        size_t count;
        CHECK(tokenizer_encode(t, cases[i].text, strlen(cases[i].text), &ids, &count, &err) == 0);
        CHECK_MSG(count == cases[i].count, "'%s': %zu ids, expected %zu", cases[i].text, count,
                  cases[i].count);
        for (size_t k = 0; k < count && k < cases[i].count; k++)
            CHECK_MSG(ids[k] == cases[i].ids[k], "'%s': id %zu is %d, expected %d",
                      cases[i].text, k, ids[k], cases[i].ids[k]);
        char *text;
        size_t len;
        CHECK(tokenizer_decode(t, ids, count, &text, &len, &err) == 0);
        CHECK_MSG(strcmp(text, cases[i].decoded) == 0, "'%s' decodes to '%s', expected '%s'",
                  cases[i].text, text, cases[i].decoded);
        CHECK_INT_EQ(len, strlen(cases[i].decoded));
        free(text);
        free(ids);
    }
    tokenizer_free(t);
}

/* Text with sentinels encodes as the stretches between them, each alone, with
 * the sentinel ids in between; decoding and encoding again gives the same ids. */
static void test_sentinel_round_trip_trained(void)
{
    if (!trained)
        SKIP("no trained model (see models_train)");
    char model[128];
    model_path(model, sizeof model, "plain");
    struct caem_error err;
    struct tokenizer *t;
    CHECK_MSG(tokenizer_load(&t, model, &err) == 0, "%s", err.message);
    if (t == NULL)
        return;
    const char *segments[] = { "Permission is hereby granted, ", " free of charge",
                               " to any person. " };
    const char text[] = "Permission is hereby granted, <extra_id_0> free of charge<extra_id_57>"
                        " to any person. ";
    const int sentinels[] = { 0, 57 };
    int32_t expected[256];
    size_t expected_count = 0;
    for (size_t s = 0; s < 3; s++) {
        int32_t *ids;
        size_t count;
        CHECK(tokenizer_encode(t, segments[s], strlen(segments[s]), &ids, &count, &err) == 0);
        CHECK(count > 0);
        for (size_t k = 0; k < count && expected_count < 250; k++)
            expected[expected_count++] = ids[k];
        if (s < 2)
            expected[expected_count++] = tokenizer_sentinel_id(t, sentinels[s]);
        free(ids);
    }
    int32_t *ids;
    size_t count;
    CHECK(tokenizer_encode(t, text, strlen(text), &ids, &count, &err) == 0);
    CHECK_INT_EQ(count, expected_count);
    for (size_t k = 0; k < count && k < expected_count; k++)
        CHECK_MSG(ids[k] == expected[k], "id %zu is %d, expected %d", k, ids[k], expected[k]);
    CHECK_INT_EQ(ids[count - 1] < tokenizer_piece_count(t), 1);

    char *decoded;
    size_t len;
    CHECK(tokenizer_decode(t, ids, count, &decoded, &len, &err) == 0);
    CHECK_MSG(strcmp(decoded, "Permission is hereby granted, <extra_id_0> free of charge "
                              "<extra_id_57> to any person.") == 0, "decoded '%s'", decoded);
    int32_t *again;
    size_t again_count;
    CHECK(tokenizer_encode(t, decoded, len, &again, &again_count, &err) == 0);
    CHECK_INT_EQ(again_count, count);
    if (again_count == count)
        CHECK(memcmp(again, ids, count * sizeof *ids) == 0);
    free(again);
    free(decoded);
    free(ids);
    tokenizer_free(t);
}

static void remove_tmp_dir(void)
{
    if (tmp_dir[0] == '\0' || strncmp(tmp_dir, "/tmp/caem_tokenizer_", 20) != 0)
        return;
    char command[128];
    snprintf(command, sizeof command, "rm -rf '%s'", tmp_dir);
    run_quiet(command);
}

/* Found by tests/fuzz/fuzz_model: a byte piece spelled "<0x-1>" passed a
 * sscanf check and indexed the byte table out of bounds. */
static void test_signed_byte_piece_rejected(void)
{
    const char *crashes[] = { "model-tokenizer611-index-oob.model",
                              "model-tokenizer611-index-oob-2.model" };
    const char *root = getenv("CAEM_ROOT");
    for (int i = 0; i < 2; i++) {
        char path[1024];
        snprintf(path, sizeof path, "%s/tests/fuzz/crashes/%s", root ? root : ".", crashes[i]);
        struct tokenizer *t = NULL;
        struct caem_error err;
        CHECK(tokenizer_load(&t, path, &err) == -1);
        CHECK(t == NULL);
        CHECK_MSG(strstr(err.message, "expected <0xNN>") != NULL, "%s", err.message);
    }
}

int main(void)
{
    TEST_SUITE("tokenizer");
    RUN_TEST(hand_model_segmentation);
    RUN_TEST(not_unigram_rejected);
    RUN_TEST(wrong_wire_type_rejected);
    RUN_TEST(truncated_file_rejected);
    RUN_TEST(signed_byte_piece_rejected);
    RUN_TEST(models_train);
    RUN_TEST(encode_matches_spm);
    RUN_TEST(byte_fallback_matches_spm);
    RUN_TEST(special_ids_t5_layout);
    RUN_TEST(empty_and_blank_text);
    RUN_TEST(trained_model_truncated);
    RUN_TEST(sentinel_ids_after_pieces);
    RUN_TEST(sentinel_encode_decode_hand);
    RUN_TEST(sentinel_round_trip_trained);
    if (test_total_failed == 0)
        remove_tmp_dir();
    TEST_MAIN_END();
}
