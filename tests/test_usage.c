/* Normalized entropy of expert usage histograms, against values computed by
 * hand: H = -sum p log p over experts with p > 0, divided by log E. */
#include <stdint.h>

#include "test.h"
#include "usage.h"

#define TOLERANCE 1e-12

static void test_uniform_is_one(void)
{
    const int64_t four[4] = { 5, 5, 5, 5 };
    const int64_t eight[8] = { 3, 3, 3, 3, 3, 3, 3, 3 };
    CHECK_NEAR(usage_normalized_entropy(four, 4), 1.0, TOLERANCE);
    CHECK_NEAR(usage_normalized_entropy(eight, 8), 1.0, TOLERANCE);
}

static void test_one_hot_is_zero(void)
{
    const int64_t counts[4] = { 0, 7, 0, 0 };
    CHECK_NEAR(usage_normalized_entropy(counts, 4), 0.0, TOLERANCE);
}

/* p = (1/2, 1/2, 0, 0): H = log 2, and log 2 / log 4 = 1/2. */
static void test_two_of_four_is_half(void)
{
    const int64_t counts[4] = { 1, 1, 0, 0 };
    CHECK_NEAR(usage_normalized_entropy(counts, 4), 0.5, TOLERANCE);
}

/* p = (1/4, 1/4, 1/2): H = 2 (1/4) log 4 + (1/2) log 2 = (3/2) log 2, and
 * (3/2) log 2 / log 3 = 0.946394630357186. */
static void test_three_experts_by_hand(void)
{
    const int64_t counts[3] = { 1, 1, 2 };
    CHECK_NEAR(usage_normalized_entropy(counts, 3), 0.946394630357186, TOLERANCE);
}

/* p = (1/2, 1/4, 1/4, 0, 0, 0, 0, 0): H = (3/2) log 2 as above, and
 * log 8 = 3 log 2, so the result is exactly 1/2. Idle experts count in E. */
static void test_idle_experts_count(void)
{
    const int64_t counts[8] = { 6, 3, 3, 0, 0, 0, 0, 0 };
    CHECK_NEAR(usage_normalized_entropy(counts, 8), 0.5, TOLERANCE);
}

/* Only the proportions matter, also for counts beyond 32 bits. */
static void test_scale_invariant(void)
{
    const int64_t small[3] = { 1, 1, 2 };
    const int64_t large[3] = { 1000000000000LL, 1000000000000LL, 2000000000000LL };
    CHECK_NEAR(usage_normalized_entropy(large, 3), usage_normalized_entropy(small, 3),
               TOLERANCE);
}

/* An unbalanced histogram lies strictly between the extremes:
 * p = (0.7, 0.2, 0.1, 0) gives 0.5783898247235197. */
static void test_unbalanced_between(void)
{
    const int64_t counts[4] = { 70, 20, 10, 0 };
    double h = usage_normalized_entropy(counts, 4);
    CHECK_NEAR(h, 0.5783898247235197, TOLERANCE);
    CHECK(h > 0.0);
    CHECK(h < 1.0);
}

/* With no routed token there is no distribution, so the result is defined as 0. */
static void test_empty_is_zero(void)
{
    const int64_t counts[4] = { 0, 0, 0, 0 };
    double h = usage_normalized_entropy(counts, 4);
    CHECK_MSG(h == 0.0, "returned %.17g", h);
}

/* With one expert log E is 0, and the result is defined as 0. */
static void test_single_expert_is_zero(void)
{
    const int64_t counts[1] = { 42 };
    double h = usage_normalized_entropy(counts, 1);
    CHECK_MSG(h == 0.0, "returned %.17g", h);
}

int main(void)
{
    TEST_SUITE("usage");
    RUN_TEST(uniform_is_one);
    RUN_TEST(one_hot_is_zero);
    RUN_TEST(two_of_four_is_half);
    RUN_TEST(three_experts_by_hand);
    RUN_TEST(idle_experts_count);
    RUN_TEST(scale_invariant);
    RUN_TEST(unbalanced_between);
    RUN_TEST(empty_is_zero);
    RUN_TEST(single_expert_is_zero);
    TEST_MAIN_END();
}
