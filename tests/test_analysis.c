/* Model soup and linear CKA: CKA against the formula computed directly,
 * invariance to rotation, scale and shift, a model against itself, and the
 * soup's values against the weighted sum. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "analysis.h"
#include "config.h"
#include "rng.h"
#include "test.h"

static void random_matrix(float *x, int n, int d, uint64_t seed)
{
    for (int i = 0; i < n * d; i++)
        x[i] = rng_normal(seed, (uint64_t)i);
}

/* ||Yc^T Xc||^2 / (||Xc^T Xc|| ||Yc^T Yc||) with explicitly centered copies. */
static double cka_direct(const float *x, int dx, const float *y, int dy, int n)
{
    double *xc = malloc(sizeof(double) * n * dx), *yc = malloc(sizeof(double) * n * dy);
    for (int j = 0; j < dx; j++) {
        double mean = 0.0;
        for (int r = 0; r < n; r++)
            mean += x[r * dx + j] / (double)n;
        for (int r = 0; r < n; r++)
            xc[r * dx + j] = x[r * dx + j] - mean;
    }
    for (int j = 0; j < dy; j++) {
        double mean = 0.0;
        for (int r = 0; r < n; r++)
            mean += y[r * dy + j] / (double)n;
        for (int r = 0; r < n; r++)
            yc[r * dy + j] = y[r * dy + j] - mean;
    }
    double hxy = 0.0, hxx = 0.0, hyy = 0.0;
    for (int i = 0; i < dx; i++)
        for (int j = 0; j < dy; j++) {
            double c = 0.0;
            for (int r = 0; r < n; r++)
                c += xc[r * dx + i] * yc[r * dy + j];
            hxy += c * c;
        }
    for (int i = 0; i < dx; i++)
        for (int j = 0; j < dx; j++) {
            double c = 0.0;
            for (int r = 0; r < n; r++)
                c += xc[r * dx + i] * xc[r * dx + j];
            hxx += c * c;
        }
    for (int i = 0; i < dy; i++)
        for (int j = 0; j < dy; j++) {
            double c = 0.0;
            for (int r = 0; r < n; r++)
                c += yc[r * dy + i] * yc[r * dy + j];
            hyy += c * c;
        }
    free(xc);
    free(yc);
    return hxy / sqrt(hxx * hyy);
}

static double cka_streamed(const float *x, int dx, const float *y, int dy, int n)
{
    struct cka_sums s;
    struct caem_error err;
    if (cka_sums_init(&s, dx, dy, &err) != 0)
        return NAN;
    /* in two parts, to exercise the streaming */
    cka_sums_add(&s, x, y, n / 3);
    cka_sums_add(&s, x + (n / 3) * dx, y + (n / 3) * dy, n - n / 3);
    double v = cka_sums_value(&s);
    cka_sums_free(&s);
    return v;
}

static void test_cka_matches_formula(void)
{
    enum { N = 40, DX = 5, DY = 7 };
    float x[N * DX], y[N * DY];
    random_matrix(x, N, DX, 1);
    random_matrix(y, N, DY, 2);
    for (int r = 0; r < N; r++)
        y[r * DY] += 2.0f * x[r * DX]; /* some shared signal */
    double expected = cka_direct(x, DX, y, DY, N);
    double got = cka_streamed(x, DX, y, DY, N);
    CHECK_NEAR(got, expected, 1e-10);
    CHECK(expected > 0.05);
    CHECK(expected < 0.95);
}

/* Y = 3 X R + 1 with R a rotation in the plane of columns 0 and 1. */
static void test_cka_invariances(void)
{
    enum { N = 60, D = 4 };
    float x[N * D], y[N * D];
    random_matrix(x, N, D, 3);
    double c = cos(0.7), s = sin(0.7);
    for (int r = 0; r < N; r++) {
        const float *xr = x + r * D;
        float *yr = y + r * D;
        yr[0] = (float)(3.0 * (c * xr[0] - s * xr[1]) + 1.0);
        yr[1] = (float)(3.0 * (s * xr[0] + c * xr[1]) + 1.0);
        yr[2] = (float)(3.0 * xr[2] + 1.0);
        yr[3] = (float)(3.0 * xr[3] + 1.0);
    }
    CHECK_NEAR(cka_streamed(x, D, y, D, N), 1.0, 1e-6);
    CHECK_NEAR(cka_streamed(x, D, x, D, N), 1.0, 1e-12);
}

static void test_cka_constant_is_nan(void)
{
    enum { N = 10, D = 3 };
    float x[N * D], y[N * D];
    random_matrix(x, N, D, 4);
    for (int i = 0; i < N * D; i++)
        y[i] = 2.0f;
    CHECK(isnan(cka_streamed(x, D, y, D, N)));
}

static struct model *tiny_model(uint64_t seed, int experts)
{
    struct caem_error err;
    struct model_config cfg;
    config_preset(&cfg, "tiny", &err);
    cfg.num_experts = experts;
    struct model *m = NULL;
    if (model_create(&m, &cfg, backend_cpu(), &err) != 0)
        return NULL;
    model_init_params(m, seed);
    return m;
}

static void synthetic_tokens(struct task_tokens *t)
{
    struct caem_error err;
    task_tokens_init(t, 12, 6, 1, 0, 0, &err);
    for (int i = 0; i < 20; i++) {
        int32_t input[11], target[5];
        int n = 4 + i % 7, m = 2 + i % 4;
        for (int j = 0; j < n; j++)
            input[j] = 2 + (i * 7 + j * 3) % 90;
        for (int j = 0; j < m; j++)
            target[j] = 2 + (i * 5 + j) % 90;
        task_tokens_append(t, input, (size_t)n, target, (size_t)m, &err);
    }
}

static void test_cka_model_against_itself(void)
{
    struct caem_error err;
    struct model *a = tiny_model(5, 4), *b = tiny_model(6, 8);
    struct task_tokens tokens;
    synthetic_tokens(&tokens);
    int blocks = a->config.encoder_layers + a->config.decoder_layers;
    double self[16], other[16];
    CHECK_MSG(model_cka(a, a, &tokens, 0, 8, self, &err) == 0, "%s", err.message);
    for (int k = 0; k < blocks; k++)
        CHECK_NEAR(self[k], 1.0, 1e-9);
    CHECK_MSG(model_cka(a, b, &tokens, 16, 8, other, &err) == 0, "%s", err.message);
    for (int k = 0; k < blocks; k++) {
        CHECK_MSG(other[k] > 0.0 && other[k] < 0.999, "block %d: CKA %.6f", k, other[k]);
    }
    b->config.decoder_layers = 3;
    CHECK(model_cka(a, b, &tokens, 0, 8, other, &err) == -1);
    CHECK_MSG(strstr(err.message, "same width and depth") != NULL, "%s", err.message);
    b->config.decoder_layers = a->config.decoder_layers;
    task_tokens_free(&tokens);
    model_free(a);
    model_free(b);
}

static void test_soup_is_weighted_sum(void)
{
    struct caem_error err;
    struct model *a = tiny_model(7, 4), *b = tiny_model(8, 4), *s = NULL;
    CHECK(model_soup(&s, a, b, 0.3, &err) == 0);
    size_t differ = 0;
    for (size_t i = 0; s != NULL && i < a->layout.total; i++)
        differ += s->params[i] != 0.3f * a->params[i] + 0.7f * b->params[i];
    CHECK_MSG(differ == 0, "%zu values differ", differ);
    model_free(s);
    CHECK(model_soup(&s, a, a, 0.5, &err) == 0);
    CHECK(s != NULL);
    if (s != NULL)
        CHECK(memcmp(s->params, a->params, sizeof(float) * a->layout.total) == 0);
    model_free(s);
    struct model *c = tiny_model(9, 8);
    CHECK(model_soup(&s, a, c, 0.5, &err) == -1);
    CHECK_MSG(strstr(err.message, "same shape") != NULL, "%s", err.message);
    CHECK(model_soup(&s, a, b, 1.5, &err) == -1);
    model_free(a);
    model_free(b);
    model_free(c);
}

int main(void)
{
    TEST_SUITE("analysis");
    RUN_TEST(cka_matches_formula);
    RUN_TEST(cka_invariances);
    RUN_TEST(cka_constant_is_nan);
    RUN_TEST(cka_model_against_itself);
    RUN_TEST(soup_is_weighted_sum);
    TEST_MAIN_END();
}
