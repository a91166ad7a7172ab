/* The model's contract beyond its numbers: input validation, determinism,
 * train and eval modes, gradient accumulation, the parameter layout. */
#include <stdlib.h>

#include "adamw.h"
#include "config.h"
#include "model.h"
#include "test.h"

enum { B = 2, TE = 6, TD = 4 };

struct fixed_batch {
    int32_t input[B * TE], mask[B * TE], decoder[B * TD], labels[B * TD];
    struct batch batch;
};

static void fixed_batch_init(struct fixed_batch *f, int vocab)
{
    for (int i = 0; i < B * TE; i++) {
        f->input[i] = 2 + (i * 7) % (vocab - 2);
        f->mask[i] = 1;
    }
    for (int i = 0; i < B * TD; i++) {
        f->labels[i] = 2 + (i * 5) % (vocab - 2);
        f->decoder[i] = i % TD == 0 ? 0 : f->labels[i - 1];
    }
    struct batch b = { B, TE, TD, f->input, f->mask, f->decoder, f->labels };
    f->batch = b;
}

static struct model *tiny_model(float dropout, struct caem_error *err)
{
    struct model_config cfg;
    config_preset(&cfg, "tiny", err);
    cfg.dropout_rate = dropout;
    struct model *m = NULL;
    if (model_create(&m, &cfg, backend_cpu(), err) != 0)
        return NULL;
    model_init_params(m, 3);
    return m;
}

static void test_forward_rejects_bad_ids(void)
{
    struct caem_error err;
    struct model *m = tiny_model(0.0f, &err);
    struct fixed_batch f;
    fixed_batch_init(&f, m->config.vocab_size);
    struct model_losses l;

    f.input[7] = m->config.vocab_size;
    CHECK(model_forward(m, &f.batch, &l, &err) == -1);
    CHECK_MSG(strstr(err.message, "input_ids[1][1]") != NULL, "%s", err.message);
    f.input[7] = 2;

    f.decoder[2] = -1;
    CHECK(model_forward(m, &f.batch, &l, &err) == -1);
    CHECK_MSG(strstr(err.message, "decoder_input_ids[0][2]") != NULL, "%s", err.message);
    f.decoder[2] = 2;

    f.labels[5] = -7;
    CHECK(model_forward(m, &f.batch, &l, &err) == -1);
    CHECK_MSG(strstr(err.message, "labels[1][1]") != NULL, "%s", err.message);
    f.labels[5] = LABEL_IGNORE;
    CHECK(model_forward(m, &f.batch, &l, &err) == 0);

    for (int i = 0; i < B * TD; i++)
        f.labels[i] = LABEL_IGNORE;
    CHECK(model_forward(m, &f.batch, &l, &err) == -1);
    CHECK_MSG(strstr(err.message, "every label") != NULL, "%s", err.message);

    struct batch empty = f.batch;
    empty.encoder_length = 0;
    CHECK(model_forward(m, &empty, &l, &err) == -1);
    CHECK_MSG(strstr(err.message, "batch shape") != NULL, "%s", err.message);
    model_free(m);
}

static void test_backward_needs_forward(void)
{
    struct caem_error err;
    struct model *m = tiny_model(0.0f, &err);
    CHECK(model_backward(m, &err) == -1);
    CHECK_MSG(strstr(err.message, "forward") != NULL, "%s", err.message);
    struct fixed_batch f;
    fixed_batch_init(&f, m->config.vocab_size);
    struct model_losses l;
    CHECK(model_forward(m, &f.batch, &l, &err) == 0);
    CHECK(model_backward(m, &err) == 0);
    CHECK(model_backward(m, &err) == -1); /* a second backward would double-count */
    model_free(m);
}

static void test_create_rejects_bad_config(void)
{
    struct caem_error err;
    struct model_config cfg;
    config_preset(&cfg, "tiny", &err);
    cfg.d_model = 0;
    static struct model placeholder;
    struct model *m = &placeholder; /* model_create must reset it to NULL */
    CHECK(model_create(&m, &cfg, backend_cpu(), &err) == -1);
    CHECK(m == NULL);
    CHECK_MSG(strstr(err.message, "d_model") != NULL, "%s", err.message);
}

/* Same seed, same inputs: the same loss bit for bit, also with dropout. */
static void test_training_is_deterministic(void)
{
    struct caem_error err;
    struct model *a = tiny_model(0.1f, &err), *b = tiny_model(0.1f, &err);
    struct fixed_batch f;
    fixed_batch_init(&f, a->config.vocab_size);
    a->training = b->training = 1;
    model_set_seed(a, 11);
    model_set_seed(b, 11);
    struct adamw_config ac = adamw_defaults();
    struct adamw *oa = NULL, *ob = NULL;
    CHECK(adamw_create(&oa, a, &ac, &err) == 0);
    CHECK(adamw_create(&ob, b, &ac, &err) == 0);
    for (int step = 0; step < 3; step++) {
        struct model_losses la, lb;
        model_zero_grad(a);
        model_zero_grad(b);
        CHECK(model_forward(a, &f.batch, &la, &err) == 0);
        CHECK(model_backward(a, &err) == 0);
        CHECK(model_forward(b, &f.batch, &lb, &err) == 0);
        CHECK(model_backward(b, &err) == 0);
        CHECK_MSG(la.total == lb.total, "step %d: %.17g vs %.17g", step, la.total, lb.total);
        adamw_step(oa, a);
        adamw_step(ob, b);
    }
    CHECK(memcmp(a->params, b->params, sizeof(float) * a->layout.total) == 0);
    adamw_free(oa);
    adamw_free(ob);
    model_free(a);
    model_free(b);
}

/* Dropout applies in training only: two eval forwards agree, two training
 * forwards with different seeds do not. */
static void test_dropout_only_in_training(void)
{
    struct caem_error err;
    struct model *m = tiny_model(0.1f, &err);
    struct fixed_batch f;
    fixed_batch_init(&f, m->config.vocab_size);
    struct model_losses l1, l2;
    model_set_seed(m, 1);
    CHECK(model_forward(m, &f.batch, &l1, &err) == 0);
    model_set_seed(m, 2);
    CHECK(model_forward(m, &f.batch, &l2, &err) == 0);
    CHECK(l1.total == l2.total);
    m->training = 1;
    model_set_seed(m, 1);
    CHECK(model_forward(m, &f.batch, &l1, &err) == 0);
    model_set_seed(m, 2);
    CHECK(model_forward(m, &f.batch, &l2, &err) == 0);
    CHECK_MSG(l1.total != l2.total, "training losses %.9g and %.9g", l1.total, l2.total);
    model_free(m);
}

/* Two backward passes without zeroing add up: the gradient of the sum of
 * two batches' losses equals the sum of their gradients. */
static void test_gradients_accumulate(void)
{
    struct caem_error err;
    struct model *m = tiny_model(0.0f, &err);
    struct fixed_batch f1, f2;
    fixed_batch_init(&f1, m->config.vocab_size);
    fixed_batch_init(&f2, m->config.vocab_size);
    for (int i = 0; i < B * TD; i++)
        f2.labels[i] = 2 + (i * 3) % (m->config.vocab_size - 2);
    size_t n = m->layout.total;
    float *g1 = malloc(sizeof(float) * n), *g2 = malloc(sizeof(float) * n);
    struct model_losses l;

    model_zero_grad(m);
    CHECK(model_forward(m, &f1.batch, &l, &err) == 0);
    CHECK(model_backward(m, &err) == 0);
    memcpy(g1, m->grads, sizeof(float) * n);
    model_zero_grad(m);
    CHECK(model_forward(m, &f2.batch, &l, &err) == 0);
    CHECK(model_backward(m, &err) == 0);
    memcpy(g2, m->grads, sizeof(float) * n);

    model_zero_grad(m);
    CHECK(model_forward(m, &f1.batch, &l, &err) == 0);
    CHECK(model_backward(m, &err) == 0);
    CHECK(model_forward(m, &f2.batch, &l, &err) == 0);
    CHECK(model_backward(m, &err) == 0);
    double worst = 0.0;
    for (size_t i = 0; i < n; i++) {
        double d = fabs((double)m->grads[i] - ((double)g1[i] + g2[i]));
        if (d > worst)
            worst = d;
    }
    CHECK_MSG(worst < 1e-6, "largest difference %.3g", worst);
    free(g1);
    free(g2);
    model_free(m);
}

/* Every tensor lies inside the one allocation, and no two overlap. */
static void test_layout_is_one_allocation(void)
{
    struct caem_error err;
    struct model *m = tiny_model(0.0f, &err);
    const struct param_layout *L = &m->layout;
    size_t covered = 0;
    for (int i = 0; i < L->count; i++) {
        const struct param_info *p = &L->tensors[i];
        CHECK(p->offset + p->count <= L->total);
        if (i > 0)
            CHECK(p->offset >= L->tensors[i - 1].offset + L->tensors[i - 1].count);
        covered += p->count;
    }
    CHECK(covered <= L->total);
    CHECK(param_find(L, "encoder/block_01/moe/expert_03/wo") != NULL);
    CHECK(param_find(L, "encoder/block_00/moe/router") == NULL); /* block 0 is dense */
    CHECK(param_find(L, "lm_head") == NULL);                     /* tied */
    model_free(m);
}

int main(void)
{
    TEST_SUITE("model");
    RUN_TEST(forward_rejects_bad_ids);
    RUN_TEST(backward_needs_forward);
    RUN_TEST(create_rejects_bad_config);
    RUN_TEST(training_is_deterministic);
    RUN_TEST(dropout_only_in_training);
    RUN_TEST(gradients_accumulate);
    RUN_TEST(layout_is_one_allocation);
    TEST_MAIN_END();
}
