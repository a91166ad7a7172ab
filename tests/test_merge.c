/* CAEM allocation and merge: allocations computed by hand for each branch
 * of AdjustAlloc, a property test over random entropies, and a merge whose
 * target experts, router rows and averaged tensors are checked bit for bit
 * against the sources. */
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "checkpoint.h"
#include "config.h"
#include "merge.h"
#include "rng.h"
#include "test.h"

static int allocate(const double *h, int tasks, int n_m, int n_s, double alpha, int clamp,
                    int *out)
{
    struct caem_error err;
    int rc = merge_allocate(h, tasks, n_m, n_s, alpha, clamp, out, NULL, &err);
    if (rc != 0)
        printf("  merge_allocate: %s\n", err.message);
    return rc;
}

#define CHECK_ALLOCATION(got, ...)                                                        \
    do {                                                                                  \
        const int expected_[] = { __VA_ARGS__ };                                          \
        for (size_t k_ = 0; k_ < sizeof expected_ / sizeof expected_[0]; k_++)            \
            CHECK_MSG((got)[k_] == expected_[k_], "task %zu: %d experts, expected %d",    \
                      k_ + 1, (got)[k_], expected_[k_]);                                  \
    } while (0)

/* raw = 8 (0.1, 0.35, 0.55) = (0.8, 2.8, 4.4); floors clamped to 1: (1, 2, 4),
 * 7 of 8; remainders (-0.2, 0.8, 0.4): the round goes to task 2. */
static void test_paper_example(void)
{
    const double h[3] = { 0.1, 0.35, 0.55 };
    int n[3];
    CHECK(allocate(h, 3, 8, 8, 1.0, 1, n) == 0);
    CHECK_ALLOCATION(n, 1, 3, 4);
}

/* raw (0, 0, 4) clamps to (1, 1, 4) = 6 > 4: the task with the most loses
 * two. raw (2, 2, 0) gives (2, 2, 1) = 5: the tie of the two with the most
 * and equal remainders goes to the lower index. */
static void test_excess(void)
{
    const double a[3] = { 0.0, 0.0, 1.0 }, b[3] = { 0.5, 0.5, 0.0 };
    int n[3];
    CHECK(allocate(a, 3, 4, 8, 1.0, 1, n) == 0);
    CHECK_ALLOCATION(n, 1, 1, 2);
    CHECK(allocate(b, 3, 4, 8, 1.0, 1, n) == 0);
    CHECK_ALLOCATION(n, 1, 2, 1);
}

/* n_s 4, raw 11 (1, 1, 0.2) / 2.2 = (5, 5, 1) -> (4, 4, 1): only task 3 is
 * below capacity and takes the 2 left. */
static void test_insufficient_one_below(void)
{
    const double h[3] = { 1.0, 1.0, 0.2 };
    int n[3];
    CHECK(allocate(h, 3, 11, 4, 1.0, 1, n) == 0);
    CHECK_ALLOCATION(n, 4, 4, 3);
}

/* raw 16 (0.6, 0.3, 0.1) = (9.6, 4.8, 1.6) -> (8, 4, 1), 3 left for tasks 2
 * and 3 with remainders 0.8 and 0.6: ceil(3/2) = 2 and floor(3/2) = 1. */
static void test_insufficient_two_below(void)
{
    const double h[3] = { 0.6, 0.3, 0.1 };
    int n[3];
    CHECK(allocate(h, 3, 16, 8, 1.0, 1, n) == 0);
    CHECK_ALLOCATION(n, 8, 6, 2);
}

/* Four equal shares of 2.5 -> 2 each, 2 left: one round, highest remainder
 * first, ties by lower index. */
static void test_insufficient_round_robin(void)
{
    const double h[4] = { 0.7, 0.7, 0.7, 0.7 };
    int n[4];
    CHECK(allocate(h, 4, 10, 8, 1.0, 1, n) == 0);
    CHECK_ALLOCATION(n, 3, 3, 2, 2);
}

/* alpha 0 is raised to 0.01 as the reference does: shares 0.01 raw + 0.99
 * 8/3 = (2.648, 2.668, 2.684) -> (2, 3, 3). Without the clamp the shares
 * are equal and the ties go to the lower indices: (3, 3, 2). */
static void test_alpha_zero(void)
{
    const double h[3] = { 0.1, 0.35, 0.55 };
    int n[3];
    struct merge_allocation_report report;
    struct caem_error err;
    CHECK(merge_allocate(h, 3, 8, 8, 0.0, 1, n, &report, &err) == 0);
    CHECK_ALLOCATION(n, 2, 3, 3);
    CHECK_NEAR(report.alpha, 0.01, 1e-15);
    CHECK(allocate(h, 3, 8, 8, 0.0, 0, n) == 0);
    CHECK_ALLOCATION(n, 3, 3, 2);
}

/* 8 -> 16: raw (1.6, 5.6, 8.8) -> (1, 5, 8), remainders (0.6, 0.6, 0.8);
 * task 3 is full, so tasks 1 and 2 share 2: one each. */
static void test_eight_to_sixteen(void)
{
    const double h[3] = { 0.1, 0.35, 0.55 };
    int n[3];
    CHECK(allocate(h, 3, 16, 8, 1.0, 1, n) == 0);
    CHECK_ALLOCATION(n, 2, 6, 8);
}

/* 16 -> 8 with two tasks: raw (2, 6). */
static void test_sixteen_to_eight(void)
{
    const double h[2] = { 0.25, 0.75 };
    int n[2];
    CHECK(allocate(h, 2, 8, 16, 1.0, 1, n) == 0);
    CHECK_ALLOCATION(n, 2, 6);
}

static void test_zero_entropy_is_uniform(void)
{
    const double h[3] = { 0.0, 0.0, 0.0 };
    int n[3];
    struct merge_allocation_report report;
    struct caem_error err;
    CHECK(merge_allocate(h, 3, 6, 8, 1.0, 1, n, &report, &err) == 0);
    CHECK_INT_EQ(report.uniform_fallback, 1);
    CHECK_ALLOCATION(n, 2, 2, 2);
}

static void test_impossible_requests(void)
{
    const double h[3] = { 0.2, 0.3, 0.5 }, bad[3] = { 0.2, -0.1, 0.5 };
    int n[3];
    struct caem_error err;
    CHECK(merge_allocate(h, 3, 2, 8, 1.0, 1, n, NULL, &err) == -1);
    CHECK_MSG(strstr(err.message, "no allocation of 2 target experts to 3 tasks") != NULL,
              "%s", err.message);
    CHECK(merge_allocate(h, 3, 25, 8, 1.0, 1, n, NULL, &err) == -1);
    CHECK_MSG(strstr(err.message, "expected 3 to 24") != NULL, "%s", err.message);
    CHECK(merge_allocate(h, 3, 8, 8, 1.5, 1, n, NULL, &err) == -1);
    CHECK_MSG(strstr(err.message, "alpha 1.5") != NULL, "%s", err.message);
    CHECK(merge_allocate(bad, 3, 8, 8, 1.0, 1, n, NULL, &err) == -1);
    CHECK_MSG(strstr(err.message, "task 2") != NULL, "%s", err.message);
}

/* Over random requests: the sum is n_m, every N_i is in [1, n_s], and when
 * no allocation sits at a bound, more entropy never gets fewer experts. */
static void test_random_properties(void)
{
    long checked = 0, monotone_checked = 0;
    for (uint64_t trial = 0; trial < 20000; trial++) {
        int tasks = 1 + (int)(rng_uniform(7, trial * 16) * 6);
        int n_s = 1 + (int)(rng_uniform(7, trial * 16 + 1) * 16);
        int n_m = tasks + (int)(rng_uniform(7, trial * 16 + 2) * (tasks * n_s - tasks + 1));
        if (n_m > tasks * n_s)
            n_m = tasks * n_s;
        double alpha = rng_uniform(7, trial * 16 + 3);
        double h[8];
        for (int i = 0; i < tasks; i++)
            h[i] = rng_uniform(7, trial * 16 + 4 + i);
        int n[8];
        struct caem_error err;
        if (merge_allocate(h, tasks, n_m, n_s, alpha, 0, n, NULL, &err) != 0) {
            CHECK_MSG(0, "trial %llu: %s", (unsigned long long)trial, err.message);
            continue;
        }
        int sum = 0, at_bound = 0;
        for (int i = 0; i < tasks; i++) {
            sum += n[i];
            CHECK_MSG(n[i] >= 1 && n[i] <= n_s, "trial %llu: task %d has %d of %d",
                      (unsigned long long)trial, i, n[i], n_s);
            at_bound |= n[i] == 1 || n[i] == n_s;
        }
        CHECK_MSG(sum == n_m, "trial %llu: %d experts allocated, expected %d",
                  (unsigned long long)trial, sum, n_m);
        checked++;
        if (at_bound)
            continue;
        monotone_checked++;
        for (int i = 0; i < tasks; i++)
            for (int j = 0; j < tasks; j++)
                CHECK_MSG(!(h[i] > h[j] && n[i] < n[j]),
                          "trial %llu: entropy %.4f got %d experts, %.4f got %d",
                          (unsigned long long)trial, h[i], n[i], h[j], n[j]);
    }
    printf("  %ld allocations checked, %ld of them for monotonicity\n", checked,
           monotone_checked);
    CHECK(monotone_checked > 1000);
}

/* ---- merging models ---- */

enum { SOURCES = 3 };

static struct model *source_model(uint64_t seed, int tied)
{
    struct caem_error err;
    struct model_config cfg;
    config_preset(&cfg, "tiny", &err);
    cfg.tie_word_embeddings = tied;
    struct model *m = NULL;
    if (model_create(&m, &cfg, backend_cpu(), &err) != 0)
        return NULL;
    model_init_params(m, seed);
    return m;
}

/* Usage with distinct counts per source so that selections differ. */
static void fill_usage(struct usage_table *u, int source)
{
    for (int row = 0; row < usage_table_rows(u); row++)
        for (int e = 0; e < u->experts; e++)
            u->kept[row * u->experts + e] = 1 + (e * (source + 2) + row * 3 + source) % 7;
}

static void check_merge(int tied, int n_m, enum merge_embedding embedding)
{
    struct caem_error err;
    struct model *src[SOURCES];
    struct usage_table usage[SOURCES];
    const struct usage_table *uptr[SOURCES];
    for (int i = 0; i < SOURCES; i++) {
        src[i] = source_model(100 + i, tied);
        usage_table_init(&usage[i], &src[i]->config, &err);
        fill_usage(&usage[i], i);
        uptr[i] = &usage[i];
    }
    struct merge_options o = merge_defaults();
    o.experts = n_m;
    o.embedding = embedding;
    struct model *t = NULL;
    struct merge_record r;
    CHECK_MSG(merge_models(&t, src, uptr, SOURCES, &o, &r, &err) == 0, "%s", err.message);
    if (t == NULL)
        return;
    CHECK_INT_EQ(t->config.num_experts, n_m);
    int D = t->config.d_model, F = t->config.d_ff;

    /* experts and router rows: bit for bit the recorded source expert */
    int row = 0, mismatches = 0;
    for (int d = 0; d < 2; d++) {
        const struct stack_offsets *ts = d ? &t->layout.decoder : &t->layout.encoder;
        for (int b = 0; b < ts->layers; b++) {
            if (!ts->blocks[b].moe)
                continue;
            int sum = 0;
            for (int i = 0; i < SOURCES; i++)
                sum += r.allocation[row * SOURCES + i];
            CHECK_INT_EQ(sum, n_m);
            for (int k = 0; k < n_m; k++) {
                int i = r.slot_source[row * n_m + k], e = r.slot_expert[row * n_m + k];
                const struct block_offsets *tb = &ts->blocks[b];
                const struct block_offsets *sb =
                    d ? &src[i]->layout.decoder.blocks[b] : &src[i]->layout.encoder.blocks[b];
                mismatches += memcmp(t->params + tb->expert_wi + k * tb->expert_stride,
                                     src[i]->params + sb->expert_wi + e * sb->expert_stride,
                                     sizeof(float) * F * D) != 0;
                mismatches += memcmp(t->params + tb->expert_wo + k * tb->expert_stride,
                                     src[i]->params + sb->expert_wo + e * sb->expert_stride,
                                     sizeof(float) * F * D) != 0;
                mismatches += memcmp(t->params + tb->router + k * D,
                                     src[i]->params + sb->router + e * D,
                                     sizeof(float) * D) != 0;
                /* the slots of a source hold its most-used experts, in order */
                if (k > 0 && r.slot_source[row * n_m + k - 1] == i) {
                    int prev = r.slot_expert[row * n_m + k - 1];
                    const int64_t *kept = usage[i].kept + row * usage[i].experts;
                    CHECK(kept[prev] > kept[e] || (kept[prev] == kept[e] && prev < e));
                }
            }
            row++;
        }
    }
    CHECK_MSG(mismatches == 0, "%d expert or router copies differ", mismatches);

    /* shared tensors: the weighted sum, computed the same way */
    int differ = 0;
    for (int p = 0; p < t->layout.count; p++) {
        const struct param_info *info = &t->layout.tensors[p];
        if (info->expert || strstr(info->name, "/moe/router") != NULL)
            continue;
        int emb = strcmp(info->name, "shared/embedding") == 0;
        int head = strcmp(info->name, "lm_head") == 0;
        int dec = strncmp(info->name, "decoder/", 8) == 0;
        for (size_t j = 0; j < info->count; j++) {
            float expected = 0.0f;
            for (int i = 0; i < SOURCES; i++) {
                double w = emb || head ? 0.5 * (r.weights[0][i] + r.weights[1][i])
                                       : r.weights[dec][i];
                if (embedding == MERGE_EMBEDDING_REFERENCE && (emb || head))
                    w = head ? 0.0 : r.weights[1][i];
                const struct param_info *q = param_find(&src[i]->layout, info->name);
                expected += (float)w * src[i]->params[q->offset + j];
            }
            differ += expected != t->params[info->offset + j];
        }
    }
    CHECK_MSG(differ == 0, "%d averaged values differ from the weighted sum", differ);
    for (int d = 0; d < 2; d++) {
        double total = 0.0;
        for (int i = 0; i < SOURCES; i++)
            total += r.weights[d][i];
        CHECK_NEAR(total, 1.0, 1e-12);
    }
    merge_record_free(&r);
    model_free(t);
    for (int i = 0; i < SOURCES; i++) {
        usage_table_free(&usage[i]);
        model_free(src[i]);
    }
}

static void test_merge_same_count(void)
{
    check_merge(1, 4, MERGE_EMBEDDING_MEAN);
}

static void test_merge_grows_experts(void)
{
    check_merge(0, 8, MERGE_EMBEDDING_MEAN);
}

static void test_merge_reference_embedding(void)
{
    check_merge(0, 6, MERGE_EMBEDDING_REFERENCE);
}

static void test_merge_rejects_bad_sources(void)
{
    struct caem_error err;
    struct model *src[2] = { source_model(1, 1), source_model(2, 0) };
    struct usage_table usage[2];
    usage_table_init(&usage[0], &src[0]->config, &err);
    usage_table_init(&usage[1], &src[1]->config, &err);
    const struct usage_table *uptr[2] = { &usage[0], &usage[1] };
    struct merge_options o = merge_defaults();
    o.experts = 4;
    struct model *t = NULL;
    struct merge_record r;
    CHECK(merge_models(&t, src, uptr, 2, &o, &r, &err) == -1);
    CHECK_MSG(strstr(err.message, "source model 2 has another shape") != NULL, "%s",
              err.message);
    src[1]->config.tie_word_embeddings = 1;
    const int fixed[2] = { 2, 3 };
    o.fixed_allocation = fixed;
    CHECK(merge_models(&t, src, uptr, 2, &o, &r, &err) == -1);
    CHECK_MSG(strstr(err.message, "sums to 5, not to the 4") != NULL, "%s", err.message);
    src[1]->config.tie_word_embeddings = 0;
    for (int i = 0; i < 2; i++) {
        usage_table_free(&usage[i]);
        model_free(src[i]);
    }
}

/* The fixed-ratio ablation: 2:3:3 in every layer. */
static void test_merge_fixed_allocation(void)
{
    struct caem_error err;
    struct model *src[SOURCES];
    struct usage_table usage[SOURCES];
    const struct usage_table *uptr[SOURCES];
    for (int i = 0; i < SOURCES; i++) {
        src[i] = source_model(200 + i, 1);
        usage_table_init(&usage[i], &src[i]->config, &err);
        fill_usage(&usage[i], i);
        uptr[i] = &usage[i];
    }
    const int fixed[SOURCES] = { 2, 3, 3 };
    struct merge_options o = merge_defaults();
    o.experts = 8;
    o.fixed_allocation = fixed;
    struct model *t = NULL;
    struct merge_record r;
    CHECK_MSG(merge_models(&t, src, uptr, SOURCES, &o, &r, &err) == 0, "%s", err.message);
    for (int row = 0; t != NULL && row < r.layers[0] + r.layers[1]; row++)
        CHECK_ALLOCATION(r.allocation + row * SOURCES, 2, 3, 3);
    if (t != NULL)
        merge_record_free(&r);
    model_free(t);
    for (int i = 0; i < SOURCES; i++) {
        usage_table_free(&usage[i]);
        model_free(src[i]);
    }
}

/* The merge record survives a checkpoint round trip, and caem info prints it. */
static void test_merge_record_round_trip(void)
{
    struct caem_error err;
    struct model *src[SOURCES];
    struct usage_table usage[SOURCES];
    const struct usage_table *uptr[SOURCES];
    for (int i = 0; i < SOURCES; i++) {
        src[i] = source_model(300 + i, 1);
        usage_table_init(&usage[i], &src[i]->config, &err);
        fill_usage(&usage[i], i);
        uptr[i] = &usage[i];
    }
    struct merge_options o = merge_defaults();
    o.experts = 6;
    o.alpha = 0.5;
    struct model *t = NULL;
    struct checkpoint ck;
    memset(&ck, 0, sizeof ck);
    CHECK(merge_models(&t, src, uptr, SOURCES, &o, &ck.merge, &err) == 0);
    char *names[SOURCES] = { "a.h5", "b.h5", "c.h5" };
    char path[] = "/tmp/caem_merge_XXXXXX";
    int fd = mkstemp(path);
    CHECK(fd >= 0);
    close(fd);
    ck.model = t;
    ck.has_merge = 1;
    ck.merge_sources = names;
    ck.merge_usage = "validation, padding not counted";
    CHECK_MSG(checkpoint_save(path, &ck, &err) == 0, "%s", err.message);
    struct checkpoint back;
    CHECK_MSG(checkpoint_load(path, backend_cpu(), &back, &err) == 0, "%s", err.message);
    const struct merge_record *a = &ck.merge, *b = &back.merge;
    CHECK_INT_EQ(back.has_merge, 1);
    CHECK_INT_EQ(b->sources, SOURCES);
    CHECK_INT_EQ(b->experts, 6);
    CHECK(b->alpha == 0.5);
    CHECK(b->alpha_used == a->alpha_used);
    size_t rows = (size_t)(a->layers[0] + a->layers[1]);
    CHECK(memcmp(a->allocation, b->allocation, sizeof(int) * rows * SOURCES) == 0);
    CHECK(memcmp(a->entropies, b->entropies, sizeof(double) * rows * SOURCES) == 0);
    CHECK(memcmp(a->slot_source, b->slot_source, sizeof(int) * rows * 6) == 0);
    CHECK(memcmp(a->slot_expert, b->slot_expert, sizeof(int) * rows * 6) == 0);
    CHECK(memcmp(a->weights, b->weights, sizeof a->weights) == 0);
    CHECK(strcmp(back.merge_sources[1], "b.h5") == 0);
    CHECK(strcmp(back.merge_usage, "validation, padding not counted") == 0);
    checkpoint_free(&back);

    char command[512];
    snprintf(command, sizeof command, "%s/caem info %s > %s.txt 2>&1",
             getenv("CAEM_ROOT") != NULL ? getenv("CAEM_ROOT") : ".", path, path);
    if (system(command) == 0) {
        char txt[64];
        snprintf(txt, sizeof txt, "%s.txt", path);
        FILE *f = fopen(txt, "r");
        char buffer[8192] = "";
        size_t n = f != NULL ? fread(buffer, 1, sizeof buffer - 1, f) : 0;
        buffer[n] = '\0';
        if (f != NULL)
            fclose(f);
        CHECK_MSG(strstr(buffer, "merge: 3 sources into 6 experts") != NULL, "%s", buffer);
        CHECK_MSG(strstr(buffer, "source 2: b.h5") != NULL, "%s", buffer);
        unlink(txt);
    }
    unlink(path);
    merge_record_free(&ck.merge);
    model_free(t);
    for (int i = 0; i < SOURCES; i++) {
        usage_table_free(&usage[i]);
        model_free(src[i]);
    }
}

int main(void)
{
    TEST_SUITE("merge");
    RUN_TEST(paper_example);
    RUN_TEST(excess);
    RUN_TEST(insufficient_one_below);
    RUN_TEST(insufficient_two_below);
    RUN_TEST(insufficient_round_robin);
    RUN_TEST(alpha_zero);
    RUN_TEST(eight_to_sixteen);
    RUN_TEST(sixteen_to_eight);
    RUN_TEST(zero_entropy_is_uniform);
    RUN_TEST(impossible_requests);
    RUN_TEST(random_properties);
    RUN_TEST(merge_same_count);
    RUN_TEST(merge_grows_experts);
    RUN_TEST(merge_reference_embedding);
    RUN_TEST(merge_rejects_bad_sources);
    RUN_TEST(merge_fixed_allocation);
    RUN_TEST(merge_record_round_trip);
    TEST_MAIN_END();
}
