/* Span corruption: the mask has T5's noise count and span count, its runs
 * alternate kept-first and are non-empty, it depends only on (seed, index),
 * and input plus target give back the sequence. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "pretrain.h"
#include "test.h"

static void test_mask_counts_and_runs(void)
{
    struct span_corruption c = span_corruption_defaults();
    unsigned char mask[600];
    long checked = 0;
    for (int length = 2; length <= 600; length += 7)
        for (uint64_t index = 0; index < 5; index++) {
            int spans = span_corruption_mask(&c, length, 11, index, mask);
            int noise = (int)lround(length * 0.15);
            noise = noise < 1 ? 1 : (noise > length - 1 ? length - 1 : noise);
            int expected_spans = (int)lround(noise / 3.0);
            if (expected_spans < 1)
                expected_spans = 1;
            if (expected_spans > length - noise)
                expected_spans = length - noise;
            int ones = 0, runs = 0;
            for (int i = 0; i < length; i++) {
                ones += mask[i];
                runs += mask[i] && (i == 0 || !mask[i - 1]);
            }
            CHECK_MSG(ones == noise, "length %d: %d corrupted, expected %d", length, ones,
                      noise);
            CHECK_MSG(spans == expected_spans && runs == spans,
                      "length %d: %d spans returned, %d runs, expected %d", length, spans,
                      runs, expected_spans);
            CHECK_MSG(mask[0] == 0, "length %d: the first token is corrupted", length);
            checked++;
        }
    CHECK(checked > 400);
}

static void test_mask_deterministic(void)
{
    struct span_corruption c = span_corruption_defaults();
    unsigned char a[200], b[200], other[200];
    span_corruption_mask(&c, 200, 5, 3, a);
    span_corruption_mask(&c, 200, 5, 3, b);
    span_corruption_mask(&c, 200, 5, 4, other);
    CHECK(memcmp(a, b, sizeof a) == 0);
    CHECK(memcmp(a, other, sizeof a) != 0);
}

/* Replacing each sentinel of the input by the tokens that follow it in the
 * target gives the original ids back. */
static void test_apply_round_trip(void)
{
    struct span_corruption c = span_corruption_defaults();
    int32_t sentinels[100];
    for (int k = 0; k < 100; k++)
        sentinels[k] = 10000 - k;
    for (int length = 2; length < 400; length += 13) {
        int32_t ids[400], input[400], target[400], rebuilt[400];
        for (int i = 0; i < length; i++)
            ids[i] = 3 + (i * 37) % 5000;
        int ni, nt;
        struct caem_error err;
        CHECK(span_corruption_apply(&c, sentinels, 100, ids, length, 9, (uint64_t)length,
                                    input, &ni, target, &nt, &err) == 0);
        int n = 0;
        for (int i = 0; i < ni; i++) {
            if (input[i] < sentinels[99]) {
                rebuilt[n++] = input[i];
                continue;
            }
            int at = 0;
            while (at < nt && target[at] != input[i])
                at++;
            CHECK_MSG(at < nt, "length %d: sentinel %d missing from the target", length,
                      input[i]);
            for (at++; at < nt && target[at] < sentinels[99]; at++)
                rebuilt[n++] = target[at];
        }
        CHECK_MSG(n == length && memcmp(rebuilt, ids, sizeof *ids * length) == 0,
                  "length %d: rebuilt %d ids that differ from the sequence", length, n);
        CHECK(target[0] == sentinels[0]);
    }
}

static void test_too_many_spans(void)
{
    struct span_corruption c = span_corruption_defaults();
    int32_t sentinels[2] = { 900, 899 }, ids[100], input[100], target[100];
    for (int i = 0; i < 100; i++)
        ids[i] = 5;
    int ni, nt;
    struct caem_error err;
    CHECK(span_corruption_apply(&c, sentinels, 2, ids, 100, 1, 0, input, &ni, target, &nt,
                                &err) == -1);
    CHECK_MSG(strstr(err.message, "more than the 2 sentinels") != NULL, "%s", err.message);
}

int main(void)
{
    TEST_SUITE("pretrain");
    RUN_TEST(mask_counts_and_runs);
    RUN_TEST(mask_deterministic);
    RUN_TEST(apply_round_trip);
    RUN_TEST(too_many_spans);
    TEST_MAIN_END();
}
