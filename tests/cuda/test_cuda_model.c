/* The whole model on the CUDA backend against the CPU reference, on the
 * parity fixtures (tests/fixtures/parity_*.safetensors: tiny Switch
 * Transformers with the reference's parameters and one batch). Both models
 * get the same parameters. After one forward and backward (with dropout and
 * jitter in training mode, without in evaluation) the test compares the
 * losses, the logits, the routing of every MoE layer and every gradient.
 * Then it compares the losses of 20 AdamW steps.
 *
 * Tolerance: the parity tests' 1e-4 relative error per tensor; the two
 * backends sum in different orders, which is about 1e-6 per GEMM in float32
 * and grows through the layers and the backward pass. */
#include "adamw.h"
#include "cuda_check.h"
#include "parity_fixture.h"

#define MODEL_TOLERANCE 1e-4
#define TRAIN_STEPS 20

/* The CPU model with the fixture's parameters and a CUDA model with a copy. */
static int models_create(struct fixture *f, struct model **cpu, struct model **gpu)
{
    struct caem_error err;
    *cpu = NULL;
    *gpu = NULL;
    if (model_create(cpu, &f->cfg, cpu_be, &err) != 0 || load_params(f, *cpu) != 0 ||
        model_create(gpu, &f->cfg, cuda_be, &err) != 0) {
        CHECK_MSG(0, "model setup failed: %s", err.message);
        return -1;
    }
    cuda_be->upload((*gpu)->params, (*cpu)->params, sizeof(float) * (*cpu)->layout.total);
    return 0;
}

static void check_loss(const char *label, double got, double want)
{
    CHECK_MSG(fabs(got - want) <= MODEL_TOLERANCE * fabs(want) + 1e-9,
              "%s: %.9g on the GPU, %.9g on the CPU", label, got, want);
}

static void check_routing(struct model *cpu, struct model *gpu)
{
    struct caem_error err;
    for (int decoder = 0; decoder < 2; decoder++) {
        const struct stack_offsets *s = decoder ? &cpu->layout.decoder : &cpu->layout.encoder;
        for (int layer = 0; layer < s->layers; layer++) {
            if (!s->blocks[layer].moe)
                continue;
            struct moe_routing want, got;
            CHECK(model_routing(cpu, decoder, layer, &want, &err) == 0);
            CHECK(model_routing(gpu, decoder, layer, &got, &err) == 0);
            size_t n = (size_t)want.tokens;
            int32_t *expert = malloc(sizeof(int32_t) * n), *kept = malloc(sizeof(int32_t) * n);
            cuda_be->download(expert, got.expert, sizeof(int32_t) * n);
            cuda_be->download(kept, got.kept, sizeof(int32_t) * n);
            int differ = 0;
            for (size_t t = 0; t < n; t++)
                differ += expert[t] != want.expert[t] || kept[t] != want.kept[t];
            CHECK_MSG(differ == 0, "%s block %d: %d of %zu tokens routed differently",
                      decoder ? "decoder" : "encoder", layer, differ, n);
            for (int e = 0; e < want.experts; e++)
                CHECK_MSG(got.kept_counts[e] == want.kept_counts[e] &&
                              got.dropped_counts[e] == want.dropped_counts[e],
                          "%s block %d expert %d: kept %lld dropped %lld, CPU %lld %lld",
                          decoder ? "decoder" : "encoder", layer, e,
                          (long long)got.kept_counts[e], (long long)got.dropped_counts[e],
                          (long long)want.kept_counts[e], (long long)want.dropped_counts[e]);
            free(expert);
            free(kept);
        }
    }
}

/* Compares every gradient tensor by its own relative error. */
static void check_gradients(struct model *cpu, struct model *gpu)
{
    size_t total = cpu->layout.total;
    float *grads = malloc(sizeof(float) * total);
    cuda_be->download(grads, gpu->grads, sizeof(float) * total);
    for (int i = 0; i < cpu->layout.count; i++) {
        const struct param_info *p = &cpu->layout.tensors[i];
        double error = relative_error(grads + p->offset, cpu->grads + p->offset, p->count);
        CHECK_MSG(error <= MODEL_TOLERANCE, "gradient of %s: relative error %.3g", p->name,
                  error);
        CHECK_MSG(gpu->grad_touched[i] == cpu->grad_touched[i], "%s touched %d, CPU %d",
                  p->name, gpu->grad_touched[i], cpu->grad_touched[i]);
    }
    free(grads);
}

static void run_forward_backward(const char *name, int training)
{
    SKIP_WITHOUT_GPU();
    struct fixture f;
    if (fixture_open(&f, name) != 0) {
        CHECK_MSG(0, "cannot open fixture %s", name);
        return;
    }
    struct model *cpu, *gpu;
    struct caem_error err;
    if (models_create(&f, &cpu, &gpu) == 0) {
        struct batch b = fixture_batch(&f);
        struct model_losses want, got;
        struct model *both[2] = { cpu, gpu };
        struct model_losses *losses[2] = { &want, &got };
        int ok = 1;
        for (int i = 0; i < 2 && ok; i++) {
            both[i]->training = training;
            model_set_seed(both[i], 1234);
            model_zero_grad(both[i]);
            ok = model_forward(both[i], &b, losses[i], &err) == 0 &&
                 model_backward(both[i], &err) == 0;
            CHECK_MSG(ok, "%s: %s", i ? "GPU" : "CPU", err.message);
        }
        if (ok) {
            check_loss("total loss", got.total, want.total);
            check_loss("cross-entropy", got.cross_entropy, want.cross_entropy);
            check_loss("encoder z-loss", got.encoder_z, want.encoder_z);
            check_loss("encoder balance loss", got.encoder_balance, want.encoder_balance);
            check_loss("decoder z-loss", got.decoder_z, want.decoder_z);
            check_loss("decoder balance loss", got.decoder_balance, want.decoder_balance);
            CHECK_INT_EQ(got.label_tokens, want.label_tokens);
            size_t logits = (size_t)f.B * f.Td * f.cfg.vocab_size;
            CHECK_DEVICE_NEAR(model_logits(gpu), model_logits(cpu), logits, MODEL_TOLERANCE,
                              "logits");
            check_routing(cpu, gpu);
            check_gradients(cpu, gpu);
        }
    }
    model_free(cpu);
    model_free(gpu);
    fixture_close(&f);
}

static void run_training(const char *name)
{
    SKIP_WITHOUT_GPU();
    struct fixture f;
    if (fixture_open(&f, name) != 0) {
        CHECK_MSG(0, "cannot open fixture %s", name);
        return;
    }
    struct model *cpu, *gpu;
    struct adamw *opt_cpu = NULL, *opt_gpu = NULL;
    struct adamw_config ac = { 1e-3f, 0.9f, 0.98f, 1e-6f, 0.005f };
    struct caem_error err;
    if (models_create(&f, &cpu, &gpu) == 0 && adamw_create(&opt_cpu, cpu, &ac, &err) == 0 &&
        adamw_create(&opt_gpu, gpu, &ac, &err) == 0) {
        struct batch b = fixture_batch(&f);
        struct model *both[2] = { cpu, gpu };
        struct adamw *opts[2] = { opt_cpu, opt_gpu };
        for (int i = 0; i < 2; i++) {
            both[i]->training = 1;
            model_set_seed(both[i], 99);
        }
        for (int step = 0; step < TRAIN_STEPS; step++) {
            double loss[2] = { 0.0, 0.0 };
            int ok = 1;
            for (int i = 0; i < 2 && ok; i++) {
                struct model_losses l;
                model_zero_grad(both[i]);
                ok = model_forward(both[i], &b, &l, &err) == 0 &&
                     model_backward(both[i], &err) == 0;
                if (ok) {
                    adamw_step(opts[i], both[i]);
                    loss[i] = l.total;
                }
            }
            if (!ok) {
                CHECK_MSG(0, "step %d: %s", step, err.message);
                break;
            }
            char label[32];
            snprintf(label, sizeof label, "loss of step %d", step + 1);
            check_loss(label, loss[1], loss[0]);
        }
        float *params = malloc(sizeof(float) * cpu->layout.total);
        cuda_be->download(params, gpu->params, sizeof(float) * cpu->layout.total);
        double error = relative_error(params, cpu->params, cpu->layout.total);
        CHECK_MSG(error <= MODEL_TOLERANCE, "parameters after %d steps: relative error %.3g",
                  TRAIN_STEPS, error);
        free(params);
    } else {
        CHECK_MSG(0, "setup failed: %s", err.message);
    }
    adamw_free(opt_cpu);
    adamw_free(opt_gpu);
    model_free(cpu);
    model_free(gpu);
    fixture_close(&f);
}

#define MODEL_TESTS(index, id)                                                          \
    static void test_##id##_eval(void) { run_forward_backward(fixture_names[index], 0); } \
    static void test_##id##_train(void) { run_forward_backward(fixture_names[index], 1); } \
    static void test_##id##_steps(void) { run_training(fixture_names[index]); }

MODEL_TESTS(0, step2_e4_tied)
MODEL_TESTS(1, step3_e8_untied)
MODEL_TESTS(2, capacity_drop)
MODEL_TESTS(3, step1_all_moe)

int main(void)
{
    CUDA_TEST_SUITE("cuda_model");
    RUN_TEST(step2_e4_tied_eval);
    RUN_TEST(step2_e4_tied_train);
    RUN_TEST(step2_e4_tied_steps);
    RUN_TEST(step3_e8_untied_eval);
    RUN_TEST(step3_e8_untied_train);
    RUN_TEST(step3_e8_untied_steps);
    RUN_TEST(capacity_drop_eval);
    RUN_TEST(capacity_drop_train);
    RUN_TEST(capacity_drop_steps);
    RUN_TEST(step1_all_moe_eval);
    RUN_TEST(step1_all_moe_train);
    RUN_TEST(step1_all_moe_steps);
    TEST_MAIN_END();
}
