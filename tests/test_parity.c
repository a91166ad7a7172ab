/* Parity with Hugging Face transformers 4.46.3.
 *
 * Each fixture (tests/fixtures/parity_*.safetensors, made by
 * tools/make_fixtures.py) holds a random tiny SwitchTransformersForConditional-
 * Generation's parameters, one batch, and what the reference computed for it:
 * logits, the loss terms, router logits and routing per MoE layer, the gradient
 * of the total loss for every parameter, and the losses of 10 AdamW steps.
 * The sparse-step-1 fixture is compared with the router loss coefficients
 * set to 0, because the reference computes no router loss at that step.
 *
 * Tolerance: 1e-4 relative error per tensor, max |ours - reference| divided by
 * max |reference|. Both sides compute in float32, so the two differ by
 * rounding in a different summation order: about 1e-6 relative for one GEMM,
 * growing through ~20 sublayers and their backward passes to ~1e-5; 1e-4
 * leaves a margin while a wrong term (a missed quirk, a wrong scale) shows as
 * an error of order 1. */
#include <stdlib.h>

#include "adamw.h"
#include "config.h"
#include "hf_names.h"
#include "model.h"
#include "safetensors.h"
#include "test.h"
#include "parity_fixture.h"

#define TOLERANCE 1e-4

/* The largest relative error of the current test, printed with its result. */
static double worst_error;
static char worst_label[160];

/* Opens a fixture for comparison with the reference. The workbench computes
 * a router loss at sparse step 1, where the reference computes none, so the
 * comparison turns the router loss terms off to compare everything else. */
static int reference_fixture_open(struct fixture *f, const char *name)
{
    if (fixture_open(f, name) != 0)
        return -1;
    if (!f->reference_router_losses) {
        f->cfg.router_z_loss_coef = 0.0f;
        f->cfg.router_aux_loss_coef = 0.0f;
    }
    return 0;
}

/* max |a - ref| / max |ref|; when the reference is all zero, max |a|. */
static double relative_error(const float *a, const float *ref, size_t n)
{
    double max_diff = 0.0, max_ref = 0.0;
    for (size_t i = 0; i < n; i++) {
        double d = fabs((double)a[i] - ref[i]);
        if (!(d <= max_diff))
            max_diff = isnan(d) ? INFINITY : d;
        if (fabs(ref[i]) > max_ref)
            max_ref = fabs(ref[i]);
    }
    return max_ref > 0.0 ? max_diff / max_ref : max_diff;
}

static double read_scalar(struct fixture *f, const char *name)
{
    float v = NAN;
    struct caem_error err;
    if (safetensors_read_f32(f->st, name, &v, 1, &err) != 0)
        printf("  %s\n", err.message);
    return v;
}

static void check_tensor(struct fixture *f, const char *ref_name, const float *ours,
                         size_t count, const char *label)
{
    const struct st_tensor *t = safetensors_find(f->st, ref_name);
    CHECK_MSG(t != NULL, "fixture has no %s", ref_name);
    if (t == NULL)
        return;
    CHECK_MSG(t->count == count, "%s: %zu values, reference has %zu", label, count, t->count);
    if (t->count != count)
        return;
    float *ref = malloc(sizeof(float) * count);
    struct caem_error err;
    safetensors_read_f32(f->st, ref_name, ref, count, &err);
    double rel = relative_error(ours, ref, count);
    CHECK_MSG(rel <= TOLERANCE, "%s: relative error %.3g", label, rel);
    if (rel > worst_error) {
        worst_error = rel;
        snprintf(worst_label, sizeof worst_label, "%s", label);
    }
    free(ref);
}

static void check_routing(struct fixture *f, struct model *m)
{
    struct caem_error err;
    char name[128];
    for (int decoder = 0; decoder < 2; decoder++) {
        const char *stack = decoder ? "decoder" : "encoder";
        const struct stack_offsets *s = decoder ? &m->layout.decoder : &m->layout.encoder;
        for (int i = 0; i < s->layers; i++) {
            if (!s->blocks[i].moe)
                continue;
            struct moe_routing r;
            CHECK(model_routing(m, decoder, i, &r, &err) == 0);
            snprintf(name, sizeof name, "output.router_logits.%s.%d", stack, i);
            check_tensor(f, name, r.logits, (size_t)r.tokens * r.experts, name);

            int64_t *index = malloc(sizeof(int64_t) * r.tokens);
            int64_t *dropped = malloc(sizeof(int64_t) * r.tokens);
            snprintf(name, sizeof name, "output.expert_index.%s.%d", stack, i);
            int ok = safetensors_read_i64(f->st, name, index, r.tokens, &err) == 0;
            snprintf(name, sizeof name, "output.dropped.%s.%d", stack, i);
            ok = ok && safetensors_read_i64(f->st, name, dropped, r.tokens, &err) == 0;
            CHECK_MSG(ok, "%s", err.message);
            int mismatches = 0;
            for (int t = 0; ok && t < r.tokens; t++) {
                int ours_dropped = !r.kept[t];
                int ours_index = r.kept[t] ? r.expert[t] : 0;
                if (ours_dropped != dropped[t] || ours_index != index[t])
                    mismatches++;
            }
            CHECK_MSG(mismatches == 0, "%s block %d: %d tokens routed differently", stack, i,
                      mismatches);
            free(index);
            free(dropped);
        }
    }
}

static void check_forward(struct fixture *f, struct model *m, const struct model_losses *l)
{
    check_tensor(f, "output.logits", model_logits(m),
                 (size_t)f->B * f->Td * m->config.vocab_size, "logits");
    struct {
        const char *name;
        double ours;
    } scalars[] = {
        { "output.loss", l->total },
        { "output.ce_loss", l->cross_entropy },
        { "output.encoder_z_loss", l->encoder_z },
        { "output.encoder_aux_loss", l->encoder_balance },
        { "output.decoder_z_loss", l->decoder_z },
        { "output.decoder_aux_loss", l->decoder_balance },
    };
    size_t count = f->reference_router_losses ? sizeof scalars / sizeof scalars[0] : 2;
    for (size_t i = 0; i < count; i++) {
        double ref = read_scalar(f, scalars[i].name);
        CHECK_MSG(fabs(scalars[i].ours - ref) <= TOLERANCE * fabs(ref),
                  "%s: %.9g, reference %.9g", scalars[i].name, scalars[i].ours, ref);
    }
    check_routing(f, m);
}

static void check_gradients(struct fixture *f, struct model *m)
{
    struct caem_error err;
    int checked = 0;
    for (int i = 0; i < safetensors_count(f->st); i++) {
        const struct st_tensor *t = safetensors_at(f->st, i);
        if (strncmp(t->name, "grad.", 5) != 0)
            continue;
        char name[PARAM_NAME_MAX];
        if (hf_name_to_param(&m->config, t->name + 5, name, sizeof name, &err) != 0) {
            CHECK_MSG(0, "%s", err.message);
            continue;
        }
        size_t count;
        const float *g = model_grad(m, name, &count);
        CHECK_MSG(g != NULL, "no gradient for %s", name);
        if (g != NULL) {
            char label[PARAM_NAME_MAX + 16];
            snprintf(label, sizeof label, "grad %s", name);
            check_tensor(f, t->name, g, count, label);
            checked++;
        }
    }
    CHECK_INT_EQ(checked, m->layout.count);
}

static void run_forward_backward(const char *fixture, int training)
{
    struct fixture f;
    if (reference_fixture_open(&f, fixture) != 0) {
        CHECK_MSG(0, "cannot open fixture %s", fixture);
        return;
    }
    struct caem_error err;
    struct model *m = NULL;
    CHECK_MSG(model_create(&m, &f.cfg, backend_cpu(), &err) == 0, "%s", err.message);
    if (m != NULL && load_params(&f, m) == 0) {
        m->training = training;
        struct batch b = fixture_batch(&f);
        struct model_losses l;
        model_zero_grad(m);
        int ok = model_forward(m, &b, &l, &err) == 0 && model_backward(m, &err) == 0;
        CHECK_MSG(ok, "%s", err.message);
        if (ok) {
            worst_error = 0.0;
            check_forward(&f, m, &l);
            check_gradients(&f, m);
            printf("  worst relative error %.2g (%s)\n", worst_error, worst_label);
        }
    }
    model_free(m);
    fixture_close(&f);
}

static void run_adamw(const char *fixture)
{
    struct fixture f;
    if (reference_fixture_open(&f, fixture) != 0) {
        CHECK_MSG(0, "cannot open fixture %s", fixture);
        return;
    }
    struct caem_error err;
    struct model *m = NULL;
    struct adamw *opt = NULL;
    /* the reference ran lr 1e-3, betas (0.9, 0.98), eps 1e-6, weight decay 0.005 */
    struct adamw_config ac = { 1e-3f, 0.9f, 0.98f, 1e-6f, 0.005f };
    const char *meta = safetensors_metadata(f.st, "adamw");
    CHECK_MSG(meta != NULL && strstr(meta, "0.001") != NULL && strstr(meta, "0.005") != NULL,
              "fixture AdamW settings differ from the test's: %s", meta ? meta : "(none)");
    float ref[10];
    CHECK(safetensors_read_f32(f.st, "adamw.losses", ref, 10, &err) == 0);
    CHECK(model_create(&m, &f.cfg, backend_cpu(), &err) == 0);
    if (m != NULL && load_params(&f, m) == 0 && adamw_create(&opt, m, &ac, &err) == 0) {
        m->training = 1;
        struct batch b = fixture_batch(&f);
        for (int step = 0; step < 10; step++) {
            struct model_losses l;
            model_zero_grad(m);
            if (model_forward(m, &b, &l, &err) != 0 || model_backward(m, &err) != 0) {
                CHECK_MSG(0, "step %d: %s", step, err.message);
                break;
            }
            CHECK_MSG(fabs(l.total - ref[step]) <= TOLERANCE * fabs(ref[step]),
                      "step %d: loss %.9g, reference %.9g", step, l.total, ref[step]);
            adamw_step(opt, m);
        }
    }
    adamw_free(opt);
    model_free(m);
    fixture_close(&f);
}

#define PARITY_TESTS(index, id)                                                         \
    static void test_##id##_eval(void) { run_forward_backward(fixture_names[index], 0); } \
    static void test_##id##_train(void) { run_forward_backward(fixture_names[index], 1); } \
    static void test_##id##_adamw(void) { run_adamw(fixture_names[index]); }

PARITY_TESTS(0, step2_e4_tied)
PARITY_TESTS(1, step3_e8_untied)
PARITY_TESTS(2, capacity_drop)
PARITY_TESTS(3, step1_all_moe)

int main(void)
{
    TEST_SUITE("parity");
    RUN_TEST(step2_e4_tied_eval);
    RUN_TEST(step2_e4_tied_train);
    RUN_TEST(step2_e4_tied_adamw);
    RUN_TEST(step3_e8_untied_eval);
    RUN_TEST(step3_e8_untied_train);
    RUN_TEST(step3_e8_untied_adamw);
    RUN_TEST(capacity_drop_eval);
    RUN_TEST(capacity_drop_train);
    RUN_TEST(capacity_drop_adamw);
    RUN_TEST(step1_all_moe_eval);
    RUN_TEST(step1_all_moe_train);
    RUN_TEST(step1_all_moe_adamw);
    TEST_MAIN_END();
}
