/* Relative position buckets against Hugging Face transformers 4.46.3.
 *
 * tests/fixtures/position_buckets.txt (made by tools/make_position_fixture.py)
 * contains the buckets that SwitchTransformersAttention._relative_position_bucket
 * computes for relative positions -300..300, encoder (bidirectional) and
 * decoder (causal), for four (num_buckets, max_distance) pairs. Buckets are
 * integers, so every one must match exactly. */
#include <stdlib.h>

#include "position.h"
#include "test.h"

#define FIXTURE_CASES 8
#define FIXTURE_FIRST -300
#define FIXTURE_COUNT 601

struct bucket_case {
    int num_buckets;
    int max_distance;
    int bidirectional;
    int first;
    int count;
    int buckets[FIXTURE_COUNT];
};

static struct bucket_case fixture[FIXTURE_CASES];
static int fixture_loaded;
static int fixture_cases; /* number of cases read, or -1 when the file is missing or malformed */

static const char *fixture_path(void)
{
    static char path[1024];
    const char *root = getenv("CAEM_ROOT");
    snprintf(path, sizeof path, "%s/tests/fixtures/position_buckets.txt",
             root != NULL ? root : ".");
    return path;
}

/* Reads one case line. Returns 1 on success, 0 at end of file, and -1 after
 * printing a message when the line is malformed. */
static int read_case(FILE *f, struct bucket_case *c)
{
    int n = fscanf(f, "%d %d %d %d %d", &c->num_buckets, &c->max_distance,
                   &c->bidirectional, &c->first, &c->count);
    if (n == EOF)
        return 0;
    if (n != 5 || c->count != FIXTURE_COUNT) {
        printf("  %s: malformed case header (expected 5 integers with count %d)\n",
               fixture_path(), FIXTURE_COUNT);
        return -1;
    }
    for (int i = 0; i < c->count; i++) {
        if (fscanf(f, "%d", &c->buckets[i]) != 1) {
            printf("  %s: case %d %d %d has fewer than %d buckets\n", fixture_path(),
                   c->num_buckets, c->max_distance, c->bidirectional, c->count);
            return -1;
        }
    }
    return 1;
}

/* Reads the fixture on the first call and returns the number of cases, or -1
 * when the file is missing or malformed. */
static int fixture_load(void)
{
    if (fixture_loaded)
        return fixture_cases;
    fixture_loaded = 1;
    fixture_cases = -1;
    FILE *f = fopen(fixture_path(), "r");
    if (f == NULL) {
        printf("  %s: cannot open (run tools/make_position_fixture.py)\n", fixture_path());
        return -1;
    }
    int cases = 0;
    for (;;) {
        int ch = fgetc(f);
        while (ch == ' ' || ch == '\n' || ch == '\r')
            ch = fgetc(f);
        if (ch == EOF)
            break;
        if (ch == '#') {
            while (ch != '\n' && ch != EOF)
                ch = fgetc(f);
            continue;
        }
        ungetc(ch, f);
        if (cases == FIXTURE_CASES) {
            printf("  %s: more than %d cases\n", fixture_path(), FIXTURE_CASES);
            cases = -1;
            break;
        }
        int status = read_case(f, &fixture[cases]);
        if (status <= 0) {
            cases = status < 0 ? -1 : cases;
            break;
        }
        cases++;
    }
    fclose(f);
    fixture_cases = cases;
    return cases;
}

static const struct bucket_case *fixture_find(int num_buckets, int max_distance,
                                              int bidirectional)
{
    for (int i = 0; i < fixture_load(); i++)
        if (fixture[i].num_buckets == num_buckets && fixture[i].max_distance == max_distance &&
            fixture[i].bidirectional == bidirectional)
            return &fixture[i];
    return NULL;
}

/* The fixture contains exactly the cases that the generator writes, each over
 * the full range of relative positions. */
static void test_fixture_complete(void)
{
    static const int pairs[4][2] = { { 32, 128 }, { 8, 20 }, { 16, 64 }, { 32, 32 } };
    int cases = fixture_load();
    CHECK_INT_EQ(cases, FIXTURE_CASES);
    for (int p = 0; p < 4; p++) {
        for (int bidirectional = 0; bidirectional < 2; bidirectional++) {
            const struct bucket_case *c = fixture_find(pairs[p][0], pairs[p][1], bidirectional);
            CHECK_MSG(c != NULL, "no case num_buckets %d, max_distance %d, bidirectional %d",
                      pairs[p][0], pairs[p][1], bidirectional);
            if (c == NULL)
                continue;
            CHECK_INT_EQ(c->first, FIXTURE_FIRST);
            CHECK_INT_EQ(c->count, FIXTURE_COUNT);
        }
    }
}

/* Every bucket of every case equals the reference's. One check per case, which
 * names the first relative position that differs and how many differ. */
static void test_matches_reference(void)
{
    int cases = fixture_load();
    CHECK_MSG(cases > 0, "no cases read from %s", fixture_path());
    for (int i = 0; i < cases; i++) {
        const struct bucket_case *c = &fixture[i];
        int mismatches = 0, first_bad = 0, ours_bad = 0, reference_bad = 0;
        for (int k = 0; k < c->count; k++) {
            int relative = c->first + k;
            int ours = position_bucket(relative, c->bidirectional, c->num_buckets,
                                       c->max_distance);
            if (ours != c->buckets[k] && mismatches++ == 0) {
                first_bad = relative;
                ours_bad = ours;
                reference_bad = c->buckets[k];
            }
        }
        CHECK_MSG(mismatches == 0,
                  "num_buckets %d, max_distance %d, bidirectional %d: %d of %d buckets "
                  "differ, first at relative %d: ours %d, reference %d",
                  c->num_buckets, c->max_distance, c->bidirectional, mismatches, c->count,
                  first_bad, ours_bad, reference_bad);
    }
}

/* Every bucket lies in [0, num_buckets). Offsets beyond max_distance share the
 * last bucket of their direction: 15 (keys before the query) and 31 (after) in
 * a bidirectional model with 32 buckets, 31 in a causal one. */
static void test_range(void)
{
    int cases = fixture_load();
    CHECK_MSG(cases > 0, "no cases read from %s", fixture_path());
    for (int i = 0; i < cases; i++) {
        const struct bucket_case *c = &fixture[i];
        int below = 0, above = 0;
        for (int k = 0; k < c->count; k++) {
            int b = position_bucket(c->first + k, c->bidirectional, c->num_buckets,
                                    c->max_distance);
            below += b < 0;
            above += b >= c->num_buckets;
        }
        CHECK_MSG(below == 0, "num_buckets %d, bidirectional %d: %d buckets below 0",
                  c->num_buckets, c->bidirectional, below);
        CHECK_MSG(above == 0, "num_buckets %d, bidirectional %d: %d buckets >= num_buckets",
                  c->num_buckets, c->bidirectional, above);
    }
    CHECK_INT_EQ(position_bucket(300, 1, 32, 128), 31);
    CHECK_INT_EQ(position_bucket(-300, 1, 32, 128), 15);
    CHECK_INT_EQ(position_bucket(-300, 0, 32, 128), 31);
}

/* Causal attention sends every key after the query to bucket 0. */
static void test_causal_future_zero(void)
{
    for (int relative = 0; relative <= 300; relative++) {
        int b = position_bucket(relative, 0, 32, 128);
        CHECK_MSG(b == 0, "relative %d: bucket %d, expected 0", relative, b);
    }
}

/* Hand-computed for 32 buckets, bidirectional: 16 per direction, 8 exact, so
 * j - i = 0, 1, 2 give 0, 16 + 1, 16 + 2 and j - i = -1 gives 1. */
static void test_grid_hand_values(void)
{
    int32_t grid[2 * 3];
    position_buckets(grid, 2, 3, 1, 32, 128);
    static const int32_t expected[2 * 3] = { 0, 17, 18, 1, 0, 17 };
    for (int k = 0; k < 6; k++)
        CHECK_MSG(grid[k] == expected[k], "grid[%d] is %d, expected %d", k, (int)grid[k],
                  (int)expected[k]);
}

/* position_buckets fills a [tq, tk] grid row by row with the bucket of j - i,
 * for more keys than queries and the reverse, and writes nothing past it. */
static void test_grid_non_square(void)
{
    static const int shapes[2][2] = { { 5, 37 }, { 37, 5 } };
    for (int s = 0; s < 2; s++) {
        for (int bidirectional = 0; bidirectional < 2; bidirectional++) {
            int tq = shapes[s][0], tk = shapes[s][1];
            int32_t grid[5 * 37 + 4];
            for (int k = 0; k < 5 * 37 + 4; k++)
                grid[k] = -7;
            position_buckets(grid, tq, tk, bidirectional, 16, 64);
            int mismatches = 0;
            for (int i = 0; i < tq; i++)
                for (int j = 0; j < tk; j++)
                    mismatches += grid[i * tk + j] != position_bucket(j - i, bidirectional,
                                                                      16, 64);
            CHECK_MSG(mismatches == 0, "tq %d, tk %d, bidirectional %d: %d cells differ",
                      tq, tk, bidirectional, mismatches);
            for (int k = tq * tk; k < 5 * 37 + 4; k++)
                CHECK_MSG(grid[k] == -7, "grid[%d] written past %d x %d", k, tq, tk);
        }
    }
}

int main(void)
{
    TEST_SUITE("position");
    RUN_TEST(fixture_complete);
    RUN_TEST(matches_reference);
    RUN_TEST(range);
    RUN_TEST(causal_future_zero);
    RUN_TEST(grid_hand_values);
    RUN_TEST(grid_non_square);
    TEST_MAIN_END();
}
