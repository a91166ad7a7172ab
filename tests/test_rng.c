/* Counter-based random numbers: Philox-4x32-10 known-answer vectors and the
 * distributions built on the generator.
 *
 * Statistical bounds: each test draws a fixed sequence, so its result never
 * changes between runs. The bounds are five standard errors of the estimate
 * for n = 100000 independent draws, so a correct generator would fail a single
 * check with probability below 1e-6; a wrong scale, offset or bit width gives
 * errors many times larger. */
#include <stdint.h>

#include "rng.h"
#include "test.h"

#define DRAWS 100000
#define SEED 0x5eed1234abcdULL

/* Computes Philox-4x32-10 over the full 128-bit counter, independently of
 * src/rng.c. philox4x32 fixes counter words 2 and 3 at zero, so it can
 * reproduce only the first known-answer vector below. This version reproduces
 * all three, and philox4x32 is compared with it on counters (c0, c1, 0, 0). */
static void philox_reference(const uint32_t counter[4], const uint32_t key[2],
                             uint32_t out[4])
{
    uint32_t x[4] = { counter[0], counter[1], counter[2], counter[3] };
    uint32_t k[2] = { key[0], key[1] };
    for (int round = 0; round < 10; round++) {
        if (round > 0) {
            k[0] += 0x9E3779B9u;
            k[1] += 0xBB67AE85u;
        }
        uint64_t product0 = (uint64_t)0xD2511F53u * x[0];
        uint64_t product1 = (uint64_t)0xCD9E8D57u * x[2];
        uint32_t y[4];
        y[0] = (uint32_t)(product1 >> 32) ^ x[1] ^ k[0];
        y[1] = (uint32_t)product1;
        y[2] = (uint32_t)(product0 >> 32) ^ x[3] ^ k[1];
        y[3] = (uint32_t)product0;
        memcpy(x, y, sizeof x);
    }
    memcpy(out, x, sizeof x);
}

/* Known-answer vectors of the Random123 library for philox4x32 with 10 rounds:
 * counter words 0..3, key words 0..1, output words 0..3. */
struct philox_vector {
    uint32_t counter[4];
    uint32_t key[2];
    uint32_t expected[4];
};

static const struct philox_vector vectors[] = {
    { { 0, 0, 0, 0 }, { 0, 0 }, { 0x6627e8d5u, 0xe169c58du, 0xbc57ac4cu, 0x9b00dbd8u } },
    { { 0xffffffffu, 0xffffffffu, 0xffffffffu, 0xffffffffu },
      { 0xffffffffu, 0xffffffffu },
      { 0x408f276du, 0x41c83b0eu, 0xa20bc7c6u, 0x6d5451fdu } },
    { { 0x243f6a88u, 0x85a308d3u, 0x13198a2eu, 0x03707344u },
      { 0xa4093822u, 0x299f31d0u },
      { 0xd16cfe09u, 0x94fdccebu, 0x5001e420u, 0x24126ea1u } },
};

/* The all-zero vector is the only one with counter words 2 and 3 zero, so the
 * only one philox4x32 can compute directly. */
static void test_philox_zero_vector(void)
{
    uint32_t out[4];
    philox4x32(0, 0, out);
    for (int w = 0; w < 4; w++)
        CHECK_MSG(out[w] == vectors[0].expected[w], "word %d: %08x, expected %08x", w,
                  (unsigned)out[w], (unsigned)vectors[0].expected[w]);
}

static void test_reference_vectors(void)
{
    for (int v = 0; v < 3; v++) {
        uint32_t out[4];
        philox_reference(vectors[v].counter, vectors[v].key, out);
        for (int w = 0; w < 4; w++)
            CHECK_MSG(out[w] == vectors[v].expected[w], "vector %d, word %d: %08x, expected "
                      "%08x", v, w, (unsigned)out[w], (unsigned)vectors[v].expected[w]);
    }
}

/* philox4x32(key, counter) is the reference with counter words (low, high, 0,
 * 0) and key words (low, high), over counters and keys whose bits reach both
 * halves. */
static void test_philox_matches_reference(void)
{
    int mismatches = 0;
    uint64_t first_key = 0, first_counter = 0;
    for (int i = 0; i < 1000; i++) {
        uint32_t seed_words[4];
        philox4x32(0x0123456789abcdefULL, (uint64_t)i, seed_words);
        uint64_t key = (uint64_t)seed_words[0] << 32 | seed_words[1];
        uint64_t counter = (uint64_t)seed_words[2] << 32 | seed_words[3];
        if (i == 0) {
            key = UINT64_MAX;
            counter = UINT64_MAX;
        }
        uint32_t ours[4], reference[4];
        uint32_t counter_words[4] = { (uint32_t)counter, (uint32_t)(counter >> 32), 0, 0 };
        uint32_t key_words[2] = { (uint32_t)key, (uint32_t)(key >> 32) };
        philox4x32(key, counter, ours);
        philox_reference(counter_words, key_words, reference);
        if (memcmp(ours, reference, sizeof ours) != 0 && mismatches++ == 0) {
            first_key = key;
            first_counter = counter;
        }
    }
    CHECK_MSG(mismatches == 0, "%d of 1000 differ, first key %016llx counter %016llx",
              mismatches, (unsigned long long)first_key, (unsigned long long)first_counter);
}

static void test_deterministic(void)
{
    for (uint64_t i = 0; i < 100; i++) {
        float u = rng_uniform(SEED, i);
        float n = rng_normal(SEED, i);
        CHECK_MSG(rng_uniform(SEED, i) == u, "uniform index %llu", (unsigned long long)i);
        CHECK_MSG(rng_normal(SEED, i) == n, "normal index %llu", (unsigned long long)i);
    }
}

/* Value i is word i % 4 of the Philox block for counter i / 4, scaled from 24
 * bits, and rng_uniform4 returns the four values of one block. A GPU kernel
 * that follows this layout draws the same numbers. */
static void test_uniform_block_layout(void)
{
    int layout_mismatches = 0, block_mismatches = 0;
    for (uint64_t block = 0; block < 1000; block++) {
        uint32_t words[4];
        float four[4];
        philox4x32(SEED, block, words);
        rng_uniform4(SEED, block, four);
        for (int w = 0; w < 4; w++) {
            float expected = (float)(words[w] >> 8) / 16777216.0f;
            layout_mismatches += rng_uniform(SEED, 4 * block + (uint64_t)w) != expected;
            block_mismatches += four[w] != rng_uniform(SEED, 4 * block + (uint64_t)w);
        }
    }
    CHECK_MSG(layout_mismatches == 0, "%d of 4000 values differ from the Philox words",
              layout_mismatches);
    CHECK_MSG(block_mismatches == 0, "%d of 4000 rng_uniform4 values differ from rng_uniform",
              block_mismatches);
}

/* Neighbouring seeds and indices give different streams. */
static void test_seed_and_index_matter(void)
{
    int same_seed = 0, same_index = 0;
    for (uint64_t i = 0; i < 1000; i++) {
        same_seed += rng_uniform(SEED, i) == rng_uniform(SEED + 1, i);
        same_index += rng_uniform(SEED, i) == rng_uniform(SEED, i + 1);
    }
    /* Two independent 24-bit values agree with probability 2^-24 each. */
    CHECK_MSG(same_seed == 0, "%d of 1000 equal across seeds", same_seed);
    CHECK_MSG(same_index == 0, "%d of 1000 equal across indices", same_index);
}

/* Values are k / 2^24 for an integer k in [0, 2^24). */
static void test_uniform_range(void)
{
    float low = 1.0f, high = 0.0f;
    int off_grid = 0;
    for (uint64_t i = 0; i < DRAWS; i++) {
        float u = rng_uniform(SEED, i);
        if (u < low)
            low = u;
        if (u > high)
            high = u;
        double k = (double)u * 16777216.0;
        off_grid += k != floor(k);
    }
    CHECK_MSG(low >= 0.0f, "minimum %.9g", (double)low);
    CHECK_MSG(high < 1.0f, "maximum %.9g", (double)high);
    CHECK_MSG(off_grid == 0, "%d values are not multiples of 2^-24", off_grid);
    /* Each end stays farther than 1e-3 away with probability (1 - 1e-3)^100000,
     * about e^-100, so values that miss part of [0, 1) fail here. */
    CHECK_NEAR(low, 0.0, 1e-3);
    CHECK_NEAR(high, 1.0, 1e-3);
}

/* Mean 1/2, variance 1/12. For n = 100000 the standard error of the mean is
 * sqrt(1/12 / n) = 9.1e-4 and that of the variance sqrt((1/80 - 1/144) / n) =
 * 2.4e-4. */
static void test_uniform_moments(void)
{
    double sum = 0.0, sum_sq = 0.0;
    for (uint64_t i = 0; i < DRAWS; i++) {
        double u = rng_uniform(SEED, i);
        sum += u;
        sum_sq += u * u;
    }
    double mean = sum / DRAWS;
    double variance = sum_sq / DRAWS - mean * mean;
    CHECK_NEAR(mean, 0.5, 5 * 9.1e-4);
    CHECK_NEAR(variance, 1.0 / 12.0, 5 * 2.4e-4);
}

/* Chi-square over 16 equal bins (15 degrees of freedom). P(chi2 > 60) is
 * 2.5e-7, from numerical integration of the chi-square density. */
static void test_uniform_histogram(void)
{
    long bins[16] = { 0 };
    for (uint64_t i = 0; i < DRAWS; i++) {
        int b = (int)(rng_uniform(SEED, i) * 16.0f);
        bins[b < 16 ? b : 15]++;
    }
    double expected = DRAWS / 16.0, chi2 = 0.0;
    for (int b = 0; b < 16; b++)
        chi2 += (bins[b] - expected) * (bins[b] - expected) / expected;
    CHECK_MSG(chi2 < 60.0, "chi-square %.2f over 16 bins", chi2);
}

/* Lag-1 correlation of consecutive indices: standard error 1 / sqrt(n). */
static void test_uniform_lag_correlation(void)
{
    double sum_xy = 0.0, sum_x = 0.0, sum_xx = 0.0;
    double previous = rng_uniform(SEED, 0) - 0.5;
    for (uint64_t i = 1; i <= DRAWS; i++) {
        double x = rng_uniform(SEED, i) - 0.5;
        sum_xy += x * previous;
        sum_x += x;
        sum_xx += x * x;
        previous = x;
    }
    double mean = sum_x / DRAWS;
    double variance = sum_xx / DRAWS - mean * mean;
    double correlation = (sum_xy / DRAWS - mean * mean) / variance;
    CHECK_NEAR(correlation, 0.0, 5.0 / sqrt(DRAWS));
}

/* Mean 0, variance 1, 68.27% within one standard deviation. For n = 100000
 * the standard errors are 1 / sqrt(n) = 3.2e-3 for the mean, sqrt((3 - 1) / n)
 * = 4.5e-3 for the variance and sqrt(0.6827 * 0.3173 / n) = 1.5e-3 for the
 * fraction. */
static void test_normal_moments(void)
{
    double sum = 0.0, sum_sq = 0.0;
    int non_finite = 0, within_one = 0;
    for (uint64_t i = 0; i < DRAWS; i++) {
        double x = rng_normal(SEED, i);
        if (!isfinite(x)) {
            non_finite++;
            continue;
        }
        sum += x;
        sum_sq += x * x;
        within_one += fabs(x) <= 1.0;
    }
    double mean = sum / DRAWS;
    double variance = sum_sq / DRAWS - mean * mean;
    CHECK_MSG(non_finite == 0, "%d draws are not finite", non_finite);
    CHECK_NEAR(mean, 0.0, 5 * 3.2e-3);
    CHECK_NEAR(variance, 1.0, 5 * 4.5e-3);
    CHECK_NEAR((double)within_one / DRAWS, 0.6827, 5 * 1.5e-3);
}

/* Consecutive reservations are adjacent, disjoint ranges. */
static void test_reserve_disjoint(void)
{
    struct rng_stream s = { .seed = SEED, .next = 100 };
    static const uint64_t counts[5] = { 10, 1, 0, 4096, 7 };
    uint64_t first[5];
    for (int i = 0; i < 5; i++)
        first[i] = rng_reserve(&s, counts[i]);
    CHECK_INT_EQ(first[0], 100);
    for (int i = 1; i < 5; i++) {
        CHECK_MSG(first[i] == first[i - 1] + counts[i - 1],
                  "range %d starts at %llu, expected %llu", i, (unsigned long long)first[i],
                  (unsigned long long)(first[i - 1] + counts[i - 1]));
        CHECK_MSG(first[i] >= first[i - 1] + counts[i - 1], "range %d overlaps range %d", i,
                  i - 1);
    }
    CHECK_INT_EQ(s.next, 100 + 10 + 1 + 0 + 4096 + 7);
    CHECK(s.seed == SEED);
}

int main(void)
{
    TEST_SUITE("rng");
    RUN_TEST(philox_zero_vector);
    RUN_TEST(reference_vectors);
    RUN_TEST(philox_matches_reference);
    RUN_TEST(deterministic);
    RUN_TEST(seed_and_index_matter);
    RUN_TEST(uniform_block_layout);
    RUN_TEST(uniform_range);
    RUN_TEST(uniform_moments);
    RUN_TEST(uniform_histogram);
    RUN_TEST(uniform_lag_correlation);
    RUN_TEST(normal_moments);
    RUN_TEST(reserve_disjoint);
    TEST_MAIN_END();
}
