/* A minimal test harness shared by the test programs.
 *
 * A test is a function `static void test_NAME(void)` registered with
 * RUN_TEST(NAME) in main. Each check that fails prints its file, line and the
 * values involved, and marks the current test failed; the test goes on, so a
 * run shows every broken check. Each test prints one result line:
 *
 *     ok   SUITE/NAME
 *     FAIL SUITE/NAME
 *     skip SUITE/NAME: reason
 *
 * tests/run.sh counts those lines across all programs. TEST_MAIN_END returns
 * a non-zero exit status when any test failed. */
#ifndef CAEM_TEST_H
#define CAEM_TEST_H

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char *test_suite_name = "tests";
static int test_current_failed;
static int test_current_skipped;
static int test_total_failed;
static char test_skip_reason[256];

/* Names the suite; under CAEM_TEST_VARIANT=X (the sanitizer run) it becomes
 * "name[X]" so that the two runs' result lines differ. */
static char test_suite_buffer[128];
#define TEST_SUITE(name)                                                                \
    do {                                                                                \
        const char *test_variant_ = getenv("CAEM_TEST_VARIANT");                        \
        if (test_variant_ != NULL && test_variant_[0] != '\0') {                        \
            snprintf(test_suite_buffer, sizeof test_suite_buffer, "%s[%s]", (name),     \
                     test_variant_);                                                    \
            test_suite_name = test_suite_buffer;                                        \
        } else {                                                                        \
            test_suite_name = (name);                                                   \
        }                                                                               \
    } while (0)

#define CHECK(cond)                                                                     \
    do {                                                                                \
        if (!(cond)) {                                                                  \
            printf("  %s:%d: check failed: %s\n", __FILE__, __LINE__, #cond);         \
            test_current_failed = 1;                                                    \
        }                                                                               \
    } while (0)

#define CHECK_MSG(cond, ...)                                                            \
    do {                                                                                \
        if (!(cond)) {                                                                  \
            printf("  %s:%d: check failed: %s: ", __FILE__, __LINE__, #cond);         \
            printf(__VA_ARGS__);                                                        \
            printf("\n");                                                               \
            test_current_failed = 1;                                                    \
        }                                                                               \
    } while (0)

#define CHECK_INT_EQ(a, b)                                                              \
    do {                                                                                \
        long long test_a_ = (long long)(a), test_b_ = (long long)(b);                   \
        if (test_a_ != test_b_) {                                                       \
            printf("  %s:%d: %s == %s failed: %lld != %lld\n", __FILE__, __LINE__, #a, \
                   #b, test_a_, test_b_);                                               \
            test_current_failed = 1;                                                    \
        }                                                                               \
    } while (0)

/* |a - b| <= tol; a NaN on either side always fails. */
#define CHECK_NEAR(a, b, tol)                                                           \
    do {                                                                                \
        double test_a_ = (double)(a), test_b_ = (double)(b);                            \
        if (!(fabs(test_a_ - test_b_) <= (double)(tol))) {                             \
            printf("  %s:%d: |%s - %s| <= %g failed: %.9g vs %.9g\n", __FILE__,         \
                   __LINE__, #a, #b, (double)(tol), test_a_, test_b_);                  \
            test_current_failed = 1;                                                    \
        }                                                                               \
    } while (0)

/* Ends the current test as skipped, with a reason printed on its result line. */
#define SKIP(...)                                                                       \
    do {                                                                                \
        snprintf(test_skip_reason, sizeof test_skip_reason, __VA_ARGS__);              \
        test_current_skipped = 1;                                                       \
        return;                                                                         \
    } while (0)

#define RUN_TEST(name)                                                                  \
    do {                                                                                \
        test_current_failed = 0;                                                        \
        test_current_skipped = 0;                                                       \
        test_##name();                                                                  \
        if (test_current_failed) {                                                      \
            printf("FAIL %s/%s\n", test_suite_name, #name);                             \
            test_total_failed++;                                                        \
        } else if (test_current_skipped) {                                              \
            printf("skip %s/%s: %s\n", test_suite_name, #name, test_skip_reason);       \
        } else {                                                                        \
            printf("ok   %s/%s\n", test_suite_name, #name);                             \
        }                                                                               \
        fflush(stdout);                                                                 \
    } while (0)

#define TEST_MAIN_END() return test_total_failed > 0 ? 1 : 0

#endif
