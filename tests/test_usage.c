/* Normalized entropy of expert usage histograms, against values computed by
 * hand: H = -sum p log p over experts with p > 0, divided by log E. */
#include <stdint.h>
#include <stdlib.h>

#include "config.h"
#include "model.h"
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

/* ---- usage tables collected from a forward ---- */

enum { B = 3, TE = 7, TD = 5 };

struct padded_batch {
    int32_t input[B * TE], mask[B * TE], decoder[B * TD], labels[B * TD];
    struct batch batch;
    long input_tokens, label_tokens;
};

/* Row s has TE - 2 s input tokens and TD - s labelled positions; the rest is
 * padding. */
static void padded_batch_init(struct padded_batch *p, int vocab)
{
    p->input_tokens = p->label_tokens = 0;
    for (int s = 0; s < B; s++) {
        for (int t = 0; t < TE; t++) {
            int token = t < TE - 2 * s;
            p->input[s * TE + t] = token ? 2 + (s * 11 + t * 7) % (vocab - 2) : 0;
            p->mask[s * TE + t] = token;
            p->input_tokens += token;
        }
        for (int t = 0; t < TD; t++) {
            int token = t < TD - s;
            p->labels[s * TD + t] = token ? 2 + (s * 5 + t * 3) % (vocab - 2) : LABEL_IGNORE;
            p->decoder[s * TD + t] = t == 0 ? 0 : (token ? p->labels[s * TD + t - 1] : 0);
            p->label_tokens += token;
        }
    }
    struct batch b = { B, TE, TD, p->input, p->mask, p->decoder, p->labels };
    p->batch = b;
}

static struct model *small_moe_model(struct caem_error *err)
{
    struct model_config cfg;
    config_preset(&cfg, "tiny", err);
    cfg.expert_capacity = 2; /* some tokens exceed it */
    struct model *m = NULL;
    if (model_create(&m, &cfg, backend_cpu(), err) != 0)
        return NULL;
    model_init_params(m, 11);
    return m;
}

static int64_t row_sum(const int64_t *values, int experts)
{
    int64_t sum = 0;
    for (int e = 0; e < experts; e++)
        sum += values[e];
    return sum;
}

static void test_table_rows_follow_config(void)
{
    struct caem_error err;
    struct model_config cfg;
    config_preset(&cfg, "tiny", &err);
    cfg.encoder_layers = 4;
    cfg.decoder_layers = 3;
    cfg.encoder_sparse_step = 2;
    cfg.decoder_sparse_step = 1;
    struct usage_table t;
    CHECK(usage_table_init(&t, &cfg, &err) == 0);
    CHECK_INT_EQ(t.layers[0], 2);
    CHECK_INT_EQ(t.layers[1], 3);
    CHECK_INT_EQ(usage_table_rows(&t), 5);
    CHECK_INT_EQ(usage_table_row(&t, 0, 1), 1);
    CHECK_INT_EQ(usage_table_row(&t, 1, 0), 2);
    CHECK_INT_EQ(usage_table_row(&t, 1, 3), -1);
    CHECK_INT_EQ(t.blocks[0], 1);
    CHECK_INT_EQ(t.blocks[1], 3);
    CHECK_INT_EQ(t.blocks[2], 0);
    CHECK_INT_EQ(t.blocks[4], 2);
    usage_table_free(&t);
}

/* Without padding every row counts exactly the real tokens of its stack. The
 * soft usage of a row sums to 1 because each token's probabilities do. */
static void test_collect_skips_padding(void)
{
    struct caem_error err;
    struct model *m = small_moe_model(&err);
    CHECK_MSG(m != NULL, "%s", err.message);
    if (m == NULL)
        return;
    struct padded_batch p;
    padded_batch_init(&p, m->config.vocab_size);
    struct model_losses losses;
    CHECK_MSG(model_forward(m, &p.batch, &losses, &err) == 0, "%s", err.message);
    struct usage_table t;
    CHECK(usage_table_init(&t, &m->config, &err) == 0);
    CHECK_MSG(usage_table_collect(&t, m, &p.batch, &err) == 0, "%s", err.message);
    int64_t dropped = 0;
    for (int row = 0; row < usage_table_rows(&t); row++) {
        int decoder = row >= t.layers[0];
        long expected = decoder ? p.label_tokens : p.input_tokens;
        const int64_t *kept = t.kept + (size_t)row * t.experts;
        const int64_t *drop = t.dropped + (size_t)row * t.experts;
        CHECK_INT_EQ(t.tokens[row], expected);
        CHECK_INT_EQ(row_sum(kept, t.experts) + row_sum(drop, t.experts), expected);
        dropped += row_sum(drop, t.experts);
        double soft = 0.0;
        for (int e = 0; e < t.experts; e++)
            soft += usage_table_soft(&t, row, e);
        CHECK_NEAR(soft, 1.0, 1e-6);
        double h = usage_table_entropy(&t, row);
        CHECK(h >= 0.0);
        CHECK(h <= 1.0);
    }
    CHECK_MSG(dropped > 0, "capacity 2 dropped no token, so the test shows nothing");
    usage_table_free(&t);
    model_free(m);
}

/* Counting padding too gives the model's own per-layer counts. */
static void test_collect_with_padding(void)
{
    struct caem_error err;
    struct model *m = small_moe_model(&err);
    if (m == NULL)
        return;
    struct padded_batch p;
    padded_batch_init(&p, m->config.vocab_size);
    struct model_losses losses;
    CHECK(model_forward(m, &p.batch, &losses, &err) == 0);
    struct usage_table t;
    CHECK(usage_table_init(&t, &m->config, &err) == 0);
    t.count_padding = 1;
    CHECK(usage_table_collect(&t, m, &p.batch, &err) == 0);
    for (int row = 0; row < usage_table_rows(&t); row++) {
        int decoder = row >= t.layers[0];
        struct moe_routing r;
        CHECK(model_routing(m, decoder, t.blocks[row], &r, &err) == 0);
        CHECK_INT_EQ(t.tokens[row], (long)B * (decoder ? TD : TE));
        for (int e = 0; e < t.experts; e++) {
            CHECK_INT_EQ(t.kept[(size_t)row * t.experts + e], r.kept_counts[e]);
            CHECK_INT_EQ(t.dropped[(size_t)row * t.experts + e], r.dropped_counts[e]);
        }
    }
    usage_table_free(&t);
    model_free(m);
}

static void test_add_and_mean_entropy(void)
{
    struct caem_error err;
    struct model_config cfg;
    config_preset(&cfg, "tiny", &err);
    cfg.num_experts = 4;
    cfg.encoder_layers = cfg.decoder_layers = 2;
    cfg.encoder_sparse_step = cfg.decoder_sparse_step = 1;
    struct usage_table a, b;
    CHECK(usage_table_init(&a, &cfg, &err) == 0);
    CHECK(usage_table_init_like(&b, &a, &err) == 0);
    /* encoder rows: uniform (H = 1) and one-hot (H = 0); decoder: half, half */
    const int64_t rows[4][4] = { { 2, 2, 2, 2 }, { 0, 8, 0, 0 }, { 1, 1, 0, 0 }, { 0, 0, 3, 3 } };
    for (int r = 0; r < 4; r++)
        for (int e = 0; e < 4; e++)
            b.kept[r * 4 + e] = rows[r][e];
    CHECK(usage_table_add(&a, &b, &err) == 0);
    CHECK(usage_table_add(&a, &b, &err) == 0);
    CHECK_INT_EQ(a.kept[1 * 4 + 1], 16);
    CHECK_NEAR(usage_table_mean_entropy(&a, 0), 0.5, TOLERANCE);
    CHECK_NEAR(usage_table_mean_entropy(&a, 1), 0.5, TOLERANCE);
    usage_table_clear(&a);
    CHECK_INT_EQ(a.kept[1 * 4 + 1], 0);

    struct usage_table other;
    cfg.num_experts = 8;
    CHECK(usage_table_init(&other, &cfg, &err) == 0);
    CHECK(usage_table_add(&a, &other, &err) == -1);
    CHECK_MSG(strstr(err.message, "differ in shape") != NULL, "%s", err.message);
    usage_table_free(&a);
    usage_table_free(&b);
    usage_table_free(&other);
}

static void test_clone_copies_everything(void)
{
    struct caem_error err;
    struct model_config cfg;
    config_preset(&cfg, "tiny", &err);
    struct usage_table a, b;
    CHECK(usage_table_init(&a, &cfg, &err) == 0);
    a.count_padding = 1;
    a.decoder_source = USAGE_DECODER_GENERATED;
    int cells = usage_table_rows(&a) * a.experts;
    for (int i = 0; i < cells; i++) {
        a.kept[i] = 3 * i + 1;
        a.dropped[i] = i % 2;
        a.prob_sum[i] = 0.25 * i;
    }
    for (int r = 0; r < usage_table_rows(&a); r++)
        a.tokens[r] = 100 + r;
    CHECK(usage_table_clone(&b, &a, &err) == 0);
    CHECK_INT_EQ(b.experts, a.experts);
    CHECK_INT_EQ(b.layers[0], a.layers[0]);
    CHECK_INT_EQ(b.layers[1], a.layers[1]);
    CHECK_INT_EQ(b.count_padding, 1);
    CHECK_INT_EQ(b.decoder_source, USAGE_DECODER_GENERATED);
    for (int r = 0; r < usage_table_rows(&a); r++) {
        CHECK_INT_EQ(b.blocks[r], a.blocks[r]);
        CHECK_INT_EQ(b.tokens[r], 100 + r);
    }
    for (int i = 0; i < cells; i++) {
        CHECK_INT_EQ(b.kept[i], 3 * i + 1);
        CHECK_INT_EQ(b.dropped[i], i % 2);
        CHECK(b.prob_sum[i] == 0.25 * i);
    }
    CHECK(b.kept != a.kept);
    usage_table_free(&a);
    usage_table_free(&b);
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
    RUN_TEST(table_rows_follow_config);
    RUN_TEST(collect_skips_padding);
    RUN_TEST(collect_with_padding);
    RUN_TEST(add_and_mean_entropy);
    RUN_TEST(clone_copies_everything);
    TEST_MAIN_END();
}
