/* Tasks: truncation with EOS, batches padded to their longest row, epochs
 * that visit every example once, seeded shuffles and the padding that length
 * buckets save. Also the JSON-lines task file loader, and tokenizing a split
 * with a model that spm_train builds here (skipped without spm_train). The
 * batching tests use hand-made ids, so they run without sentencepiece. */
#include <stdint.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>

#include "task.h"
#include "test.h"

enum { PAD = 0, EOS = 1, START = 0 };

/* ---- temporary files ---- */

#define TEMP_FILES_MAX 32

static char temp_dir[64];
static char temp_paths[TEMP_FILES_MAX][256];
static int temp_count;

/* Writes content to name inside a fresh temporary directory and returns its
 * path, valid until temp_cleanup, or NULL when writing failed. */
static const char *temp_file(const char *name, const char *content)
{
    if (temp_dir[0] == '\0') {
        snprintf(temp_dir, sizeof temp_dir, "/tmp/caem_task_XXXXXX");
        if (mkdtemp(temp_dir) == NULL) {
            temp_dir[0] = '\0';
            return NULL;
        }
    }
    if (temp_count == TEMP_FILES_MAX)
        return NULL;
    char *path = temp_paths[temp_count];
    snprintf(path, sizeof temp_paths[0], "%s/%s", temp_dir, name);
    FILE *f = fopen(path, "wb");
    if (f == NULL)
        return NULL;
    fputs(content, f);
    fclose(f);
    temp_count++;
    return path;
}

/* Removes the files, the spm_train outputs and the directory. */
static void temp_cleanup(void)
{
    for (int i = 0; i < temp_count; i++)
        unlink(temp_paths[i]);
    if (temp_dir[0] == '\0')
        return;
    const char *spm_outputs[] = { "spm.model", "spm.vocab", "spm.log" };
    for (size_t i = 0; i < sizeof spm_outputs / sizeof spm_outputs[0]; i++) {
        char path[256];
        snprintf(path, sizeof path, "%s/%s", temp_dir, spm_outputs[i]);
        unlink(path);
    }
    rmdir(temp_dir);
}

/* ---- hand-made sequences ---- */

/* Fills ids with 100 + 10 * example + position, so that every id names its
 * example and position and none is PAD, EOS or LABEL_IGNORE. */
static void fill_ids(int32_t *ids, int length, int example)
{
    for (int j = 0; j < length; j++)
        ids[j] = 100 + 10 * example + j;
}

/* Builds a set of sequences whose texts have the given lengths (before EOS). */
static int tokens_from_lengths(struct task_tokens *t, const int *input_lengths,
                               const int *target_lengths, int count, int max_input,
                               int max_target)
{
    struct caem_error err;
    if (task_tokens_init(t, max_input, max_target, EOS, PAD, START, &err) != 0) {
        CHECK_MSG(0, "%s", err.message);
        return -1;
    }
    int32_t input[4096], target[4096];
    for (int i = 0; i < count; i++) {
        fill_ids(input, input_lengths[i], i);
        fill_ids(target, target_lengths[i], i);
        if (task_tokens_append(t, input, (size_t)input_lengths[i], target,
                               (size_t)target_lengths[i], &err) != 0) {
            CHECK_MSG(0, "%s", err.message);
            return -1;
        }
    }
    return 0;
}

/* Lengths drawn from a skewed distribution: most sequences short, a few very
 * long (a geometric-like tail of doublings), as in summarization inputs. */
static void skewed_lengths(int *lengths, int count, int max, uint32_t salt)
{
    uint32_t state = 12345u + salt;
    for (int i = 0; i < count; i++) {
        state = state * 1664525u + 1013904223u;
        int length = 3 + (int)((state >> 8) % 8);
        for (uint32_t bits = state >> 24; (bits & 1) && length < max / 2; bits >>= 1)
            length *= 2;
        lengths[i] = length < max ? length : max;
    }
}

/* ---- truncation ---- */

static void test_truncation_keeps_eos_last(void)
{
    struct task_tokens t;
    struct caem_error err;
    CHECK(task_tokens_init(&t, 4, 3, EOS, PAD, START, &err) == 0);
    const int32_t long_input[6] = { 11, 12, 13, 14, 15, 16 };
    const int32_t fits_input[3] = { 21, 22, 23 };
    const int32_t target[5] = { 31, 32, 33, 34, 35 };

    CHECK(task_tokens_append(&t, long_input, 6, target, 5, &err) == 0);
    CHECK(task_tokens_append(&t, fits_input, 3, target, 2, &err) == 0);
    CHECK(task_tokens_append(&t, NULL, 0, target, 1, &err) == 0);
    CHECK_INT_EQ(t.count, 3);

    /* a long input keeps max - 1 tokens, then EOS */
    CHECK_INT_EQ(task_tokens_input_length(&t, 0), 4);
    const int32_t *ids = t.input_ids + t.input_offsets[0];
    CHECK_INT_EQ(ids[0], 11);
    CHECK_INT_EQ(ids[2], 13);
    CHECK_INT_EQ(ids[3], EOS);
    CHECK_INT_EQ(task_tokens_target_length(&t, 0), 3);
    const int32_t *labels = t.target_ids + t.target_offsets[0];
    CHECK_INT_EQ(labels[0], 31);
    CHECK_INT_EQ(labels[1], 32);
    CHECK_INT_EQ(labels[2], EOS);

    /* exactly max - 1 tokens fit without a cut */
    CHECK_INT_EQ(task_tokens_input_length(&t, 1), 4);
    CHECK_INT_EQ(t.input_ids[t.input_offsets[1] + 3], EOS);
    CHECK_INT_EQ(task_tokens_target_length(&t, 1), 3);

    /* an empty input is EOS alone */
    CHECK_INT_EQ(task_tokens_input_length(&t, 2), 1);
    CHECK_INT_EQ(t.input_ids[t.input_offsets[2]], EOS);
    CHECK_INT_EQ(task_tokens_target_length(&t, 2), 2);

    CHECK_INT_EQ(t.inputs_truncated, 1);
    CHECK_INT_EQ(t.targets_truncated, 1);
    task_tokens_free(&t);
}

static void test_tokens_grow_past_capacity(void)
{
    enum { N = 3000 };
    static int input_lengths[N], target_lengths[N];
    for (int i = 0; i < N; i++) {
        input_lengths[i] = 1 + i % 37;
        target_lengths[i] = 1 + i % 11;
    }
    struct task_tokens t;
    if (tokens_from_lengths(&t, input_lengths, target_lengths, N, 64, 16) != 0)
        return;
    CHECK_INT_EQ(t.count, N);
    int wrong = 0;
    for (int i = 0; i < N; i++) {
        const int32_t *ids = t.input_ids + t.input_offsets[i];
        int length = task_tokens_input_length(&t, i);
        wrong += length != input_lengths[i] + 1 || ids[0] != 100 + 10 * i ||
                 ids[length - 1] != EOS;
    }
    CHECK_INT_EQ(wrong, 0);
    CHECK_INT_EQ(t.inputs_truncated, 0);
    task_tokens_free(&t);
}

static void test_max_length_below_two_rejected(void)
{
    struct task_tokens t;
    struct caem_error err;
    CHECK(task_tokens_init(&t, 1, 8, EOS, PAD, START, &err) == -1);
    CHECK_MSG(strstr(err.message, "maximum input length 1") != NULL, "%s", err.message);
    CHECK(task_tokens_init(&t, 8, 0, EOS, PAD, START, &err) == -1);
    CHECK_MSG(strstr(err.message, "maximum target length 0") != NULL, "%s", err.message);

    struct task task;
    CHECK(task_init(&task, "news", TASK_METRIC_ACCURACY, NULL, 1, 8, &err) == -1);
    CHECK_MSG(strstr(err.message, "task news") != NULL, "%s", err.message);
    CHECK(task_init(&task, "", TASK_METRIC_ACCURACY, NULL, 8, 8, &err) == -1);
    task_free(&task);
}

/* ---- batch contents ---- */

/* Three examples of input lengths 2, 5, 3 and target lengths 1, 3, 0 (EOS
 * added), in stored order: one batch of three rows padded to Te = 6, Td = 4. */
static void test_batch_rows_exact(void)
{
    const int input_lengths[3] = { 2, 5, 3 }, target_lengths[3] = { 1, 3, 0 };
    struct task_tokens t;
    if (tokens_from_lengths(&t, input_lengths, target_lengths, 3, 32, 32) != 0)
        return;
    struct task_batches it;
    struct batch b;
    struct caem_error err;
    CHECK(task_batches_begin(&it, &t, 3, TASK_BATCHES_SEQUENTIAL, 1, 0, &err) == 0);
    CHECK_INT_EQ(task_batches_next(&it, &b), 1);
    CHECK_INT_EQ(b.batch_size, 3);
    CHECK_INT_EQ(b.encoder_length, 6);
    CHECK_INT_EQ(b.decoder_length, 4);

    const int32_t input_ids[3][6] = {
        { 100, 101, EOS, PAD, PAD, PAD },
        { 110, 111, 112, 113, 114, EOS },
        { 120, 121, 122, EOS, PAD, PAD },
    };
    const int32_t mask[3][6] = {
        { 1, 1, 1, 0, 0, 0 },
        { 1, 1, 1, 1, 1, 1 },
        { 1, 1, 1, 1, 0, 0 },
    };
    const int32_t labels[3][4] = {
        { 100, EOS, LABEL_IGNORE, LABEL_IGNORE },
        { 110, 111, 112, EOS },
        { EOS, LABEL_IGNORE, LABEL_IGNORE, LABEL_IGNORE },
    };
    const int32_t decoder[3][4] = {
        { START, 100, EOS, PAD },
        { START, 110, 111, 112 },
        { START, EOS, PAD, PAD },
    };
    for (int r = 0; r < 3; r++) {
        CHECK_INT_EQ(it.examples[r], r);
        for (int j = 0; j < 6; j++) {
            CHECK_INT_EQ(b.input_ids[r * 6 + j], input_ids[r][j]);
            CHECK_INT_EQ(b.attention_mask[r * 6 + j], mask[r][j]);
        }
        for (int j = 0; j < 4; j++) {
            CHECK_INT_EQ(b.labels[r * 4 + j], labels[r][j]);
            CHECK_INT_EQ(b.decoder_input_ids[r * 4 + j], decoder[r][j]);
        }
    }
    CHECK_INT_EQ(it.input_tokens, 3 + 6 + 4);
    CHECK_INT_EQ(it.input_padding, 3 * 6 - 13);
    CHECK_INT_EQ(it.target_tokens, 2 + 4 + 1);
    CHECK_INT_EQ(it.target_padding, 3 * 4 - 7);
    CHECK_INT_EQ(task_batches_next(&it, &b), 0);
    task_batches_end(&it);
    task_tokens_free(&t);
}

/* Every batch of every order is padded to its own longest row, which lies
 * far below the maximum lengths here. */
static void test_batches_pad_to_longest_row(void)
{
    enum { N = 200, BATCH = 16 };
    int input_lengths[N], target_lengths[N];
    skewed_lengths(input_lengths, N, 300, 1);
    skewed_lengths(target_lengths, N, 60, 2);
    struct task_tokens t;
    if (tokens_from_lengths(&t, input_lengths, target_lengths, N, 512, 128) != 0)
        return;
    const enum task_batch_order orders[3] = { TASK_BATCHES_BUCKETED, TASK_BATCHES_SHUFFLED,
                                              TASK_BATCHES_SEQUENTIAL };
    for (int o = 0; o < 3; o++) {
        struct task_batches it;
        struct batch b;
        struct caem_error err;
        CHECK(task_batches_begin(&it, &t, BATCH, orders[o], 7, 3, &err) == 0);
        int below_maximum = 0;
        while (task_batches_next(&it, &b)) {
            int longest_input = 0, longest_target = 0;
            for (int r = 0; r < b.batch_size; r++) {
                int input = task_tokens_input_length(&t, it.examples[r]);
                int target = task_tokens_target_length(&t, it.examples[r]);
                longest_input = input > longest_input ? input : longest_input;
                longest_target = target > longest_target ? target : longest_target;

                /* the mask is 1 exactly on the row's ids, and EOS closes the row */
                int mask_sum = 0;
                for (int j = 0; j < b.encoder_length; j++)
                    mask_sum += b.attention_mask[r * b.encoder_length + j];
                CHECK_INT_EQ(mask_sum, input);
                CHECK_INT_EQ(b.input_ids[r * b.encoder_length + input - 1], EOS);
                CHECK_INT_EQ(b.labels[r * b.decoder_length + target - 1], EOS);
            }
            CHECK_INT_EQ(b.encoder_length, longest_input);
            CHECK_INT_EQ(b.decoder_length, longest_target);
            below_maximum += b.encoder_length < 512;
        }
        CHECK_INT_EQ(below_maximum, it.batch_count);
        task_batches_end(&it);
    }
    task_tokens_free(&t);
}

/* ---- epochs and shuffles ---- */

/* Collects an epoch's example order (row by row) into order[N]. */
static int epoch_order(const struct task_tokens *t, int batch_size,
                       enum task_batch_order order_kind, uint64_t seed, uint32_t epoch,
                       long *order, int *batches)
{
    struct task_batches it;
    struct batch b;
    struct caem_error err;
    if (task_batches_begin(&it, t, batch_size, order_kind, seed, epoch, &err) != 0) {
        CHECK_MSG(0, "%s", err.message);
        return -1;
    }
    long n = 0;
    *batches = 0;
    while (task_batches_next(&it, &b)) {
        for (int r = 0; r < b.batch_size && n < t->count; r++)
            order[n++] = it.examples[r];
        (*batches)++;
    }
    task_batches_end(&it);
    return (int)n;
}

static void test_epoch_visits_each_once(void)
{
    enum { N = 103, BATCH = 8 };
    int input_lengths[N], target_lengths[N];
    skewed_lengths(input_lengths, N, 200, 3);
    skewed_lengths(target_lengths, N, 40, 4);
    struct task_tokens t;
    if (tokens_from_lengths(&t, input_lengths, target_lengths, N, 256, 64) != 0)
        return;
    const enum task_batch_order orders[3] = { TASK_BATCHES_BUCKETED, TASK_BATCHES_SHUFFLED,
                                              TASK_BATCHES_SEQUENTIAL };
    for (int o = 0; o < 3; o++) {
        for (uint32_t epoch = 0; epoch < 4; epoch++) {
            long order[N];
            int seen[N] = { 0 }, batches = 0;
            CHECK_INT_EQ(epoch_order(&t, BATCH, orders[o], 42, epoch, order, &batches), N);
            CHECK_INT_EQ(batches, (N + BATCH - 1) / BATCH);
            for (int i = 0; i < N; i++)
                if (order[i] >= 0 && order[i] < N)
                    seen[order[i]]++;
            int missing = 0, repeated = 0;
            for (int i = 0; i < N; i++) {
                missing += seen[i] == 0;
                repeated += seen[i] > 1;
            }
            CHECK_MSG(missing == 0, "order %d epoch %u: %d examples missing", o, epoch, missing);
            CHECK_MSG(repeated == 0, "order %d epoch %u: %d examples repeated", o, epoch,
                      repeated);
        }
    }

    /* the sequential order is the stored order */
    long order[N];
    int batches;
    epoch_order(&t, BATCH, TASK_BATCHES_SEQUENTIAL, 42, 5, order, &batches);
    int displaced = 0;
    for (int i = 0; i < N; i++)
        displaced += order[i] != i;
    CHECK_INT_EQ(displaced, 0);
    task_tokens_free(&t);
}

/* Exactly one batch is short when B does not divide the example count. */
static void test_last_batch_smaller(void)
{
    enum { N = 21, BATCH = 5 };
    int lengths[N];
    for (int i = 0; i < N; i++)
        lengths[i] = 1 + i % 6;
    struct task_tokens t;
    if (tokens_from_lengths(&t, lengths, lengths, N, 16, 16) != 0)
        return;
    struct task_batches it;
    struct batch b;
    struct caem_error err;
    CHECK(task_batches_begin(&it, &t, BATCH, TASK_BATCHES_BUCKETED, 9, 1, &err) == 0);
    int full = 0, short_batches = 0, rows = 0;
    while (task_batches_next(&it, &b)) {
        full += b.batch_size == BATCH;
        short_batches += b.batch_size == N % BATCH;
        rows += b.batch_size;
    }
    CHECK_INT_EQ(full, N / BATCH);
    CHECK_INT_EQ(short_batches, 1);
    CHECK_INT_EQ(rows, N);
    task_batches_end(&it);

    /* an empty set gives no batch, and a batch size of 0 is rejected */
    struct task_tokens empty;
    CHECK(task_tokens_init(&empty, 8, 8, EOS, PAD, START, &err) == 0);
    CHECK(task_batches_begin(&it, &empty, BATCH, TASK_BATCHES_BUCKETED, 9, 1, &err) == 0);
    CHECK_INT_EQ(task_batches_next(&it, &b), 0);
    task_batches_end(&it);
    CHECK(task_batches_begin(&it, &t, 0, TASK_BATCHES_BUCKETED, 9, 1, &err) == -1);
    CHECK_MSG(strstr(err.message, "batch size 0") != NULL, "%s", err.message);
    task_tokens_free(&empty);
    task_tokens_free(&t);
}

static int orders_equal(const long *a, const long *b, int n)
{
    return memcmp(a, b, (size_t)n * sizeof *a) == 0;
}

static void test_shuffle_seeded_per_epoch(void)
{
    enum { N = 500, BATCH = 10 };
    int input_lengths[N], target_lengths[N];
    skewed_lengths(input_lengths, N, 200, 5);
    skewed_lengths(target_lengths, N, 40, 6);
    struct task_tokens t;
    if (tokens_from_lengths(&t, input_lengths, target_lengths, N, 256, 64) != 0)
        return;
    const enum task_batch_order orders[2] = { TASK_BATCHES_BUCKETED, TASK_BATCHES_SHUFFLED };
    for (int o = 0; o < 2; o++) {
        static long first[N], again[N], next_epoch[N], other_seed[N];
        int batches;
        epoch_order(&t, BATCH, orders[o], 1234, 7, first, &batches);
        epoch_order(&t, BATCH, orders[o], 1234, 7, again, &batches);
        epoch_order(&t, BATCH, orders[o], 1234, 8, next_epoch, &batches);
        epoch_order(&t, BATCH, orders[o], 1235, 7, other_seed, &batches);
        CHECK_MSG(orders_equal(first, again, N), "order %d: same seed and epoch differ", o);
        CHECK_MSG(!orders_equal(first, next_epoch, N), "order %d: epochs 7 and 8 agree", o);
        CHECK_MSG(!orders_equal(first, other_seed, N), "order %d: seeds 1234, 1235 agree", o);

        /* batch boundaries move too: count batches of epoch 7 that reappear in epoch 8 */
        int same_batches = 0;
        for (int k = 0; k < N / BATCH; k++)
            for (int m = 0; m < N / BATCH; m++)
                same_batches += orders_equal(first + k * BATCH, next_epoch + m * BATCH, BATCH);
        CHECK_MSG(same_batches < N / BATCH / 2, "order %d: %d of %d batches repeat", o,
                  same_batches, N / BATCH);
    }
    task_tokens_free(&t);
}

/* ---- bucketing ---- */

/* Returns the fraction of padding among the input positions of an epoch. */
static double input_padding_fraction(const struct task_tokens *t, int batch_size,
                                     enum task_batch_order order, uint32_t epoch)
{
    struct task_batches it;
    struct batch b;
    struct caem_error err;
    if (task_batches_begin(&it, t, batch_size, order, 99, epoch, &err) != 0) {
        CHECK_MSG(0, "%s", err.message);
        return 1.0;
    }
    while (task_batches_next(&it, &b)) {
    }
    double fraction = (double)it.input_padding / (double)(it.input_tokens + it.input_padding);
    task_batches_end(&it);
    return fraction;
}

static void test_buckets_cut_padding(void)
{
    enum { N = 2000, BATCH = 24 };
    static int input_lengths[N], target_lengths[N];
    skewed_lengths(input_lengths, N, 400, 7);
    skewed_lengths(target_lengths, N, 50, 8);
    struct task_tokens t;
    if (tokens_from_lengths(&t, input_lengths, target_lengths, N, 512, 64) != 0)
        return;
    for (uint32_t epoch = 0; epoch < 3; epoch++) {
        double bucketed = input_padding_fraction(&t, BATCH, TASK_BATCHES_BUCKETED, epoch);
        double shuffled = input_padding_fraction(&t, BATCH, TASK_BATCHES_SHUFFLED, epoch);
        printf("  epoch %u: input padding %.1f%% bucketed, %.1f%% shuffled\n", epoch,
               100 * bucketed, 100 * shuffled);
        CHECK_MSG(shuffled > 0.5, "shuffled padding %.3f: the lengths are not skewed enough",
                  shuffled);
        CHECK_MSG(bucketed < 0.1 * shuffled, "bucketed %.3f vs shuffled %.3f", bucketed,
                  shuffled);
    }

    /* a bucketed batch is a run of the length-sorted order: every example whose
     * input length lies strictly inside the batch's range is in the batch */
    struct task_batches it;
    struct batch b;
    struct caem_error err;
    CHECK(task_batches_begin(&it, &t, BATCH, TASK_BATCHES_BUCKETED, 99, 0, &err) == 0);
    int outside = 0;
    while (task_batches_next(&it, &b)) {
        int shortest = b.encoder_length;
        for (int r = 0; r < b.batch_size; r++) {
            int length = task_tokens_input_length(&t, it.examples[r]);
            shortest = length < shortest ? length : shortest;
        }
        int inside = 0;
        for (long i = 0; i < N; i++) {
            int length = task_tokens_input_length(&t, i);
            inside += length > shortest && length < b.encoder_length;
        }
        outside += inside > b.batch_size - 2;
    }
    CHECK_MSG(outside == 0, "%d batches skip examples of lengths inside their range", outside);
    task_batches_end(&it);
    task_tokens_free(&t);
}

/* ---- JSON-lines task files ---- */

static void test_jsonl_loads_and_skips(void)
{
    const char *path = temp_file(
        "mixed.jsonl",
        "\xEF\xBB\xBF{\"input\": \"Classify: cats\", \"target\": \"animals\"}\n"
        "{\"input\": \"Question: who? Context: Ann ran.\", \"target\": \"Ann\", "
        "\"answers\": [\"Ann\", \"Ann\", \"ann\"], \"answer_start\": [0, 0, 0], \"id\": \"q7\"}\r\n"
        "{\"input\": \"broken\", \"target\": \n"
        "\n"
        "{\"input\": \"Summarize: x\"}\n"
        "[\"input\", \"target\"]\n"
        "{\"input\": \"a\", \"target\": \"b\", \"answers\": \"b\"}\n"
        "{\"input\": \"a\", \"target\": \"b\", \"answers\": [\"c\", \"b\"]}\n"
        "{\"input\": \"a\", \"target\": \"b\", \"answers\": [\"b\", 3]}\n"
        "{\"input\": \"a\", \"target\": \"b\", \"answers\": [\"b\"], \"answer_start\": [1, 2]}\n"
        "{\"input\": \"a\", \"target\": \"b\", \"answer_start\": -4}\n"
        "{\"input\": \"a\", \"target\": \"   \"}\n"
        "{\"input\": \"a\", \"target\": \"b\", \"id\": [1]}\n"
        "{\"input\": \"Summarize: the last line\", \"target\": \"short\", \"id\": 12, "
        "\"answer_start\": 5, \"extra\": true}");
    CHECK(path != NULL);
    if (path == NULL)
        return;
    struct dataset ds;
    struct dataset_report report;
    struct caem_error err;
    CHECK(task_load_jsonl(&ds, path, &report, &err) == 0);
    CHECK_INT_EQ(ds.count, 3);
    CHECK_INT_EQ(report.loaded, 3);
    CHECK_INT_EQ(report.skipped, 11);
    CHECK_INT_EQ(report.first_bad_record, 3);
    CHECK_MSG(strstr(report.first_error, path) != NULL, "%s", report.first_error);
    CHECK_MSG(strstr(report.first_error, ":3: invalid JSON") != NULL, "%s",
              report.first_error);
    if (ds.count != 3) {
        dataset_free(&ds);
        return;
    }

    CHECK(strcmp(ds.examples[0].input, "Classify: cats") == 0);
    CHECK(strcmp(ds.examples[0].target, "animals") == 0);
    CHECK_INT_EQ(ds.examples[0].answer_count, 1);
    CHECK(strcmp(ds.examples[0].answers[0], "animals") == 0);
    CHECK(ds.examples[0].id == NULL);

    CHECK(strcmp(ds.examples[1].target, "Ann") == 0);
    CHECK_INT_EQ(ds.examples[1].answer_count, 3);
    CHECK(strcmp(ds.examples[1].answers[2], "ann") == 0);
    CHECK(ds.examples[1].id != NULL);
    CHECK(ds.examples[1].id == NULL || strcmp(ds.examples[1].id, "q7") == 0);

    CHECK(strcmp(ds.examples[2].input, "Summarize: the last line") == 0);
    CHECK(ds.examples[2].id != NULL);
    CHECK(ds.examples[2].id == NULL || strcmp(ds.examples[2].id, "12") == 0);
    dataset_free(&ds);
}

/* Each malformed line on its own, so that each reason is checked. */
static void test_jsonl_reasons(void)
{
    const struct {
        const char *line;
        const char *reason;
    } cases[] = {
        { "{\"input\": \"x\"", "invalid JSON" },
        { "   ", "empty line" },
        { "{\"target\": \"y\"}", "missing \"input\"" },
        { "{\"input\": 5, \"target\": \"y\"}", "\"input\" is not a string" },
        { "{\"input\": \"x\", \"target\": \"\"}", "\"target\" is empty" },
        { "[7]", "not a JSON object" },
        { "{\"input\": \"x\", \"target\": \"y\", \"answers\": []}", "not a non-empty array" },
        { "{\"input\": \"x\", \"target\": \"y\", \"answers\": [\"z\"]}", "differs from" },
        { "{\"input\": \"x\", \"target\": \"y\", \"answers\": [null]}", "[0] is not a string" },
        { "{\"input\": \"x\", \"target\": \"y\", \"answer_start\": \"0\"}",
          "\"answer_start\" is neither" },
        { "{\"input\": \"x\", \"target\": \"y\", \"answer_start\": [0, 1]}", "2 entries for 1" },
        { "{\"input\": \"x\", \"target\": \"y\", \"answer_start\": [-1]}", "[0] is not a non-neg" },
        { "{\"input\": \"x\", \"target\": \"y\", \"id\": 1.5}", "\"id\" is neither" },
        { "{\"input\": \"\xff\", \"target\": \"y\"}", "invalid JSON" },
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char content[512];
        snprintf(content, sizeof content, "{\"input\": \"ok\", \"target\": \"fine\"}\n%s\n",
                 cases[i].line);
        char name[32];
        snprintf(name, sizeof name, "case%zu.jsonl", i);
        const char *path = temp_file(name, content);
        CHECK(path != NULL);
        if (path == NULL)
            return;
        struct dataset ds;
        struct dataset_report report;
        struct caem_error err;
        CHECK(task_load_jsonl(&ds, path, &report, &err) == 0);
        CHECK_INT_EQ(ds.count, 1);
        CHECK_INT_EQ(report.skipped, 1);
        CHECK_INT_EQ(report.first_bad_record, 2);
        CHECK_MSG(strstr(report.first_error, cases[i].reason) != NULL,
                  "case %zu: expected \"%s\" in \"%s\"", i, cases[i].reason,
                  report.first_error);
        dataset_free(&ds);
    }
}

static void test_jsonl_missing_file_error(void)
{
    struct dataset ds;
    struct dataset_report report;
    struct caem_error err;
    const char *path = "/nonexistent/caem/task/train.jsonl";
    CHECK(task_load_jsonl(&ds, path, &report, &err) == -1);
    CHECK_MSG(strstr(err.message, path) != NULL, "%s", err.message);
    CHECK_MSG(strstr(err.message, "No such file") != NULL, "%s", err.message);

    /* into a split: the task and split are named, and the split keeps its examples */
    const char *good = temp_file("good.jsonl", "{\"input\": \"a b\", \"target\": \"c\"}\n"
                                               "{\"input\": \"d\", \"target\": \"e\"}\n");
    struct task task;
    CHECK(task_init(&task, "toy", TASK_METRIC_ROUGE, NULL, 16, 8, &err) == 0);
    CHECK(task_load_jsonl_split(&task, TASK_SPLIT_VALIDATION, good, &report, &err) == 0);
    CHECK_INT_EQ(task.splits[TASK_SPLIT_VALIDATION].data.count, 2);
    CHECK_INT_EQ(task.splits[TASK_SPLIT_VALIDATION].report.loaded, 2);
    CHECK(task_load_jsonl_split(&task, TASK_SPLIT_VALIDATION, path, &report, &err) == -1);
    CHECK_MSG(strstr(err.message, "task toy, validation split") != NULL, "%s", err.message);
    CHECK_MSG(strstr(err.message, path) != NULL, "%s", err.message);
    CHECK_INT_EQ(task.splits[TASK_SPLIT_VALIDATION].data.count, 2);

    /* tokenizing without a tokenizer is an error that names the task */
    CHECK(task_tokenize(&task, &err) == -1);
    CHECK_MSG(strstr(err.message, "task toy: no tokenizer") != NULL, "%s", err.message);
    task_free(&task);
}

/* ---- tokenizing with a trained model ---- */

static int have_spm_train(void)
{
    int rc = system("command -v spm_train >/dev/null 2>&1");
    return rc != -1 && WEXITSTATUS(rc) == 0;
}

/* Trains a small unigram model in the T5 id layout on the system's license
 * texts; returns its path or NULL. */
static const char *train_model(void)
{
    if (temp_file(".keep", "") == NULL)
        return NULL;
    static char model[256];
    char command[1024];
    snprintf(command, sizeof command,
             "cat /usr/share/common-licenses/GPL-3 /usr/share/common-licenses/Apache-2.0 "
             "> %s/corpus.txt 2>/dev/null && "
             "spm_train --input=%s/corpus.txt --model_prefix=%s/spm --model_type=unigram "
             "--vocab_size=600 --pad_id=0 --eos_id=1 --unk_id=2 --bos_id=-1 "
             "--num_threads=2 > %s/spm.log 2>&1",
             temp_dir, temp_dir, temp_dir, temp_dir);
    /* the corpus is registered so that temp_cleanup removes it */
    temp_file("corpus.txt", "");
    int rc = system(command);
    if (rc == -1 || WEXITSTATUS(rc) != 0) {
        printf("  spm_train failed; see %s/spm.log\n", temp_dir);
        return NULL;
    }
    snprintf(model, sizeof model, "%s/spm.model", temp_dir);
    return model;
}

static void test_tokenize_split_with_spm(void)
{
    if (!have_spm_train())
        SKIP("spm_train not on the PATH (Debian package sentencepiece)");
    const char *model = train_model();
    CHECK(model != NULL);
    if (model == NULL)
        return;
    struct caem_error err;
    struct tokenizer *tokenizer = NULL;
    CHECK_MSG(tokenizer_load(&tokenizer, model, &err) == 0, "%s", err.message);
    if (tokenizer == NULL)
        return;

    const char *path = temp_file(
        "train.jsonl",
        "{\"input\": \"Summarize: This License applies to any program or other work.\", "
        "\"target\": \"the license applies\"}\n"
        "{\"input\": \"Summarize: You may convey a work based on the Program, or the "
        "modifications to produce it from the Program, in the form of source code under "
        "the terms of section 4, provided that you also meet all of these conditions.\", "
        "\"target\": \"you may convey modified source versions of the work under "
        "these conditions and terms\"}\n"
        "{\"input\": \"Summarize: Grant of Copyright License.\", \"target\": \"grant\"}\n"
        "not json\n");
    enum { MAX_INPUT = 20, MAX_TARGET = 8 };
    struct task task;
    struct dataset_report report;
    CHECK(task_init(&task, "licenses", TASK_METRIC_ROUGE, tokenizer, MAX_INPUT, MAX_TARGET,
                    &err) == 0);
    CHECK_MSG(task_load_jsonl_split(&task, TASK_SPLIT_TRAIN, path, &report, &err) == 0, "%s",
              err.message);
    CHECK_INT_EQ(report.skipped, 1);
    CHECK_MSG(task_tokenize(&task, &err) == 0, "%s", err.message);
    struct task_split *split = &task.splits[TASK_SPLIT_TRAIN];
    CHECK_INT_EQ(split->tokenized, 1);
    CHECK_INT_EQ(split->tokens.count, 3);
    if (split->tokens.count != 3) {
        task_free(&task);
        tokenizer_free(tokenizer);
        return;
    }

    /* the cache contains tokenizer_encode's ids, cut to the maximum, then EOS */
    long inputs_cut = 0, targets_cut = 0;
    for (long i = 0; i < 3; i++) {
        const struct example *ex = &split->data.examples[i];
        int32_t *ids;
        size_t count;
        CHECK(tokenizer_encode(tokenizer, ex->input, strlen(ex->input), &ids, &count, &err) ==
              0);
        size_t kept = count < MAX_INPUT - 1 ? count : MAX_INPUT - 1;
        inputs_cut += kept < count;
        CHECK_INT_EQ(task_tokens_input_length(&split->tokens, i), kept + 1);
        const int32_t *cached = split->tokens.input_ids + split->tokens.input_offsets[i];
        CHECK(memcmp(cached, ids, kept * sizeof *ids) == 0);
        CHECK_INT_EQ(cached[kept], EOS);
        free(ids);

        CHECK(tokenizer_encode(tokenizer, ex->target, strlen(ex->target), &ids, &count,
                               &err) == 0);
        kept = count < MAX_TARGET - 1 ? count : MAX_TARGET - 1;
        targets_cut += kept < count;
        CHECK_INT_EQ(task_tokens_target_length(&split->tokens, i), kept + 1);
        cached = split->tokens.target_ids + split->tokens.target_offsets[i];
        CHECK(memcmp(cached, ids, kept * sizeof *ids) == 0);
        CHECK_INT_EQ(cached[kept], EOS);
        free(ids);
    }
    CHECK_INT_EQ(split->tokens.inputs_truncated, inputs_cut);
    CHECK_INT_EQ(split->tokens.targets_truncated, targets_cut);
    CHECK(inputs_cut >= 1);
    CHECK(targets_cut >= 1);

    /* the short target decodes back to its text */
    char *text;
    size_t length;
    CHECK(tokenizer_decode(tokenizer, split->tokens.target_ids + split->tokens.target_offsets[2],
                           (size_t)task_tokens_target_length(&split->tokens, 2) - 1, &text,
                           &length, &err) == 0);
    CHECK_MSG(strcmp(text, "grant") == 0, "decoded \"%s\"", text);
    free(text);

    /* a second call keeps the cached ids */
    const int32_t *before = split->tokens.input_ids;
    CHECK(task_tokenize_split(&task, TASK_SPLIT_TRAIN, &err) == 0);
    CHECK(split->tokens.input_ids == before);

    /* the long example fills the batch to the maximum, the short ones are padded */
    struct task_batches it;
    struct batch b;
    CHECK(task_batches_begin(&it, &split->tokens, 3, TASK_BATCHES_BUCKETED, 5, 0, &err) == 0);
    CHECK_INT_EQ(task_batches_next(&it, &b), 1);
    CHECK_INT_EQ(b.encoder_length, MAX_INPUT);
    CHECK_INT_EQ(b.decoder_length, MAX_TARGET);
    task_batches_end(&it);

    /* a prompt goes before every input and replaces the cached ids */
    CHECK(task_set_prompt(&task, "Classify: ", &err) == 0);
    CHECK_INT_EQ(split->tokenized, 0);
    CHECK_MSG(task_tokenize(&task, &err) == 0, "%s", err.message);
    {
        const struct example *ex = &split->data.examples[2];
        char prompted[256];
        snprintf(prompted, sizeof prompted, "Classify: %s", ex->input);
        int32_t *ids;
        size_t count;
        CHECK(tokenizer_encode(tokenizer, prompted, strlen(prompted), &ids, &count, &err) == 0);
        size_t kept = count < MAX_INPUT - 1 ? count : MAX_INPUT - 1;
        CHECK_INT_EQ(task_tokens_input_length(&split->tokens, 2), kept + 1);
        const int32_t *cached = split->tokens.input_ids + split->tokens.input_offsets[2];
        CHECK(memcmp(cached, ids, kept * sizeof *ids) == 0);
        CHECK_INT_EQ(cached[kept], EOS);
        free(ids);
    }
    CHECK(strcmp(task_default_prompt("summarization"), "Summarize: ") == 0);
    CHECK(strcmp(task_default_prompt("classification"), "Classify: ") == 0);
    CHECK(task_default_prompt("qa") == NULL);

    /* setting the split again drops the cache */
    struct dataset empty = { NULL, 0 };
    task_set_split(&task, TASK_SPLIT_TRAIN, &empty);
    CHECK_INT_EQ(split->tokenized, 0);
    CHECK(split->tokens.input_ids == NULL);
    task_free(&task);
    tokenizer_free(tokenizer);
}

int main(void)
{
    TEST_SUITE("task");
    RUN_TEST(truncation_keeps_eos_last);
    RUN_TEST(tokens_grow_past_capacity);
    RUN_TEST(max_length_below_two_rejected);
    RUN_TEST(batch_rows_exact);
    RUN_TEST(batches_pad_to_longest_row);
    RUN_TEST(epoch_visits_each_once);
    RUN_TEST(last_batch_smaller);
    RUN_TEST(shuffle_seeded_per_epoch);
    RUN_TEST(buckets_cut_padding);
    RUN_TEST(jsonl_loads_and_skips);
    RUN_TEST(jsonl_reasons);
    RUN_TEST(jsonl_missing_file_error);
    RUN_TEST(tokenize_split_with_spm);
    temp_cleanup();
    TEST_MAIN_END();
}
