/* Finite-difference check of the whole model's gradient, for every tensor,
 * in the configurations the parity fixtures cannot cover: training with
 * dropout and router jitter, the clean routing mode, sparse step 1.
 *
 * For each tensor the check perturbs all its values along a random normal
 * direction d and compares the central difference of the total loss with
 * <g, d>, normalized by |g| |d| (gradcheck.h). Every forward resets the
 * random stream, so dropout masks and jitter are the same at x + eps d and
 * x - eps d, and the check confirms that routing (argmax and capacity) is
 * unchanged there too, since a flipped expert choice is a discontinuity.
 *
 * Tolerance: the loss is about 4 and float32 rounds it to about 1e-6 after
 * the ~30 sublayers of these models; with eps = 3e-4 per value that is about
 * 3e-3 of noise in the difference against |g| |d| of at least 0.05 for these
 * tensors (|d| ~ sqrt(count) >= 4). Larger steps measured larger errors (up
 * to 2.6e-2 at eps = 1e-2), because a perturbation that moves every value of
 * a tensor crosses ReLU kinks. Correct gradients measured at most 8e-3 here.
 * The test allows 2e-2; leaving out the jitter factor in either routing
 * mode's backward, a term of a few percent, measured 4e-2, and a missing or
 * mis-scaled term of the main path gives 0.1 to 2. */
#include <stdlib.h>

#include "config.h"
#include "gradcheck.h"
#include "model.h"
#include "test.h"

#define TOLERANCE 2e-2
#define EPS 3e-4f
#define SEED 1234

struct model_case {
    struct model *model;
    struct batch batch;
    int32_t ids[4][64];
};

static double model_loss(void *ctx)
{
    struct model_case *c = ctx;
    struct model_losses l;
    struct caem_error err;
    model_set_seed(c->model, SEED);
    if (model_forward(c->model, &c->batch, &l, &err) != 0) {
        printf("  forward failed: %s\n", err.message);
        return NAN;
    }
    return l.total;
}

/* Copies the routing decisions of every MoE layer (expert, kept) into out. */
static size_t routing_snapshot(struct model *m, int32_t *out)
{
    size_t k = 0;
    struct caem_error err;
    for (int decoder = 0; decoder < 2; decoder++) {
        const struct stack_offsets *s = decoder ? &m->layout.decoder : &m->layout.encoder;
        for (int i = 0; i < s->layers; i++) {
            struct moe_routing r;
            if (!s->blocks[i].moe || model_routing(m, decoder, i, &r, &err) != 0)
                continue;
            for (int t = 0; t < r.tokens; t++) {
                out[k++] = r.expert[t];
                out[k++] = r.kept[t];
            }
        }
    }
    return k;
}

static void make_batch(struct model_case *c, int vocab)
{
    int B = 2, Te = 7, Td = 5;
    for (int i = 0; i < B * Te; i++) {
        c->ids[0][i] = 2 + (int32_t)(rng_uniform(99, i) * (vocab - 2));
        c->ids[1][i] = 1;
    }
    c->ids[1][B * Te - 1] = 0; /* padding at the end of sequence 1 */
    c->ids[1][B * Te - 2] = 0;
    c->ids[0][B * Te - 1] = 0;
    for (int i = 0; i < B * Td; i++)
        c->ids[2][i] = 2 + (int32_t)(rng_uniform(98, i) * (vocab - 2));
    c->ids[2][B * Td - 1] = LABEL_IGNORE;
    for (int b = 0; b < B; b++) {
        c->ids[3][b * Td] = 0;
        for (int t = 1; t < Td; t++) {
            int32_t prev = c->ids[2][b * Td + t - 1];
            c->ids[3][b * Td + t] = prev == LABEL_IGNORE ? 0 : prev;
        }
    }
    struct batch b = { B, Te, Td, c->ids[0], c->ids[1], c->ids[3], c->ids[2] };
    c->batch = b;
}

static void small_config(struct model_config *cfg)
{
    struct caem_error err;
    config_preset(cfg, "tiny", &err);
    cfg->vocab_size = 40;
    cfg->d_model = 16;
    cfg->d_kv = 4;
    cfg->num_heads = 2;
    cfg->d_ff = 24;
    cfg->encoder_layers = 3;
    cfg->decoder_layers = 2;
    cfg->num_experts = 4;
    cfg->relative_attention_num_buckets = 8;
    cfg->relative_attention_max_distance = 16;
    /* larger router losses so that their gradients are visible in the check */
    cfg->router_z_loss_coef = 0.05f;
    cfg->router_aux_loss_coef = 0.05f;
}

static void check_model_gradients(const struct model_config *cfg, int training)
{
    struct caem_error err;
    struct model_case c;
    memset(&c, 0, sizeof c);
    CHECK_MSG(model_create(&c.model, cfg, backend_cpu(), &err) == 0, "%s", err.message);
    if (c.model == NULL)
        return;
    struct model *m = c.model;
    model_init_params(m, 7);
    m->training = training;
    make_batch(&c, cfg->vocab_size);

    model_zero_grad(m);
    double base = model_loss(&c);
    CHECK_MSG(isfinite(base), "loss %g", base);
    CHECK_MSG(model_backward(m, &err) == 0, "%s", err.message);
    size_t routing_size = 0;
    int32_t *routing = malloc(sizeof(int32_t) * 4096);
    int32_t *routing_now = malloc(sizeof(int32_t) * 4096);
    routing_size = routing_snapshot(m, routing);

    float *grads = malloc(sizeof(float) * m->layout.total);
    memcpy(grads, m->grads, sizeof(float) * m->layout.total);
    double worst = 0.0;
    const char *worst_name = "";
    int unstable = 0;
    for (int i = 0; i < m->layout.count; i++) {
        const struct param_info *p = &m->layout.tensors[i];
        float *d = malloc(sizeof(float) * p->count);
        gradcheck_direction(d, p->count, 1000 + i);
        float eps = EPS;
        double error = NAN;
        for (int attempt = 0; attempt < 4; attempt++, eps /= 4) {
            error = gradcheck_error(model_loss, &c, m->params + p->offset, grads + p->offset,
                                    p->count, d, eps);
            /* routing at the restored point must equal the base, and the
             * perturbed evaluations must not have flipped it either */
            float *x = m->params + p->offset;
            int same = 1;
            for (int sign = -1; sign <= 1 && same; sign += 2) {
                for (size_t j = 0; j < p->count; j++)
                    x[j] += sign * eps * d[j];
                model_loss(&c);
                same = routing_snapshot(m, routing_now) == routing_size &&
                       memcmp(routing, routing_now, sizeof(int32_t) * routing_size) == 0;
                for (size_t j = 0; j < p->count; j++)
                    x[j] -= sign * eps * d[j];
            }
            if (same)
                break;
            error = NAN;
        }
        if (isnan(error)) {
            unstable++;
        } else {
            CHECK_MSG(error < TOLERANCE, "%s: error %.3g", p->name, error);
            if (error > worst) {
                worst = error;
                worst_name = p->name;
            }
        }
        free(d);
    }
    /* Only a tensor whose every perturbation flips a routing decision is
     * skipped; that must stay rare or the check proves little. */
    CHECK_MSG(unstable <= m->layout.count / 10, "%d of %d tensors flipped routing", unstable,
              m->layout.count);
    printf("  worst error %.2g (%s), %d tensors checked, %d skipped for routing flips\n", worst,
           worst_name, m->layout.count - unstable, unstable);
    free(grads);
    free(routing);
    free(routing_now);
    model_free(m);
}

static void test_parity_eval(void)
{
    struct model_config cfg;
    small_config(&cfg);
    check_model_gradients(&cfg, 0);
}

static void test_parity_train_dropout_jitter(void)
{
    struct model_config cfg;
    small_config(&cfg);
    cfg.dropout_rate = 0.1f;
    cfg.router_jitter_noise = 0.2f; /* large, so that a wrong jitter gradient shows */
    cfg.expert_capacity = 3; /* tokens are skipped */
    check_model_gradients(&cfg, 1);
}

static void test_clean_train_dropout_jitter(void)
{
    struct model_config cfg;
    small_config(&cfg);
    cfg.routing = ROUTING_CLEAN;
    cfg.dropout_rate = 0.1f;
    cfg.router_jitter_noise = 0.2f; /* large, so that a wrong jitter gradient shows */
    cfg.expert_capacity = 3;
    check_model_gradients(&cfg, 1);
}

static void test_sparse_step1_untied(void)
{
    struct model_config cfg;
    small_config(&cfg);
    cfg.encoder_sparse_step = 1;
    cfg.decoder_sparse_step = 1;
    cfg.tie_word_embeddings = 0;
    cfg.num_experts = 3;
    check_model_gradients(&cfg, 0);
}

static void test_clean_step3_capacity(void)
{
    struct model_config cfg;
    small_config(&cfg);
    cfg.routing = ROUTING_CLEAN;
    cfg.encoder_layers = 4;
    cfg.encoder_sparse_step = 3;
    cfg.expert_capacity = 2;
    check_model_gradients(&cfg, 0);
}

int main(void)
{
    TEST_SUITE("model_grad");
    RUN_TEST(parity_eval);
    RUN_TEST(parity_train_dropout_jitter);
    RUN_TEST(clean_train_dropout_jitter);
    RUN_TEST(sparse_step1_untied);
    RUN_TEST(clean_step3_capacity);
    TEST_MAIN_END();
}
