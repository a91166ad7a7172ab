/* Agreement of the CUDA backend's memory, GEMM, elementwise, embedding,
 * RMS norm and optimizer operations (kernels/backend_cuda.cu) with the CPU
 * reference, on random inputs with poisoned outputs. */
#include "cuda_check.h"

/* A CPU result buffer of n floats starting as a copy of init (or zeros). */
static float *host_start(const float *init, size_t n)
{
    float *x = calloc(n > 0 ? n : 1, sizeof(float));
    if (init != NULL)
        memcpy(x, init, sizeof(float) * n);
    return x;
}

static void test_memory_round_trip(void)
{
    SKIP_WITHOUT_GPU();
    size_t n = 1000;
    float *src = host_uniform(n, 1, -1.0f, 1.0f);
    float *zeroed = cuda_be->alloc(sizeof(float) * n);
    float *got = host_copy(zeroed, n);
    int all_zero = 1;
    for (size_t i = 0; i < n; i++)
        all_zero &= got[i] == 0.0f;
    CHECK_MSG(all_zero, "alloc does not start at zero");
    free(got);

    float *a = device_copy(src, n);
    float *b = device_poisoned(n);
    cuda_be->copy(b, a, sizeof(float) * n);
    CHECK_DEVICE_NEAR(b, src, n, 0.0, "copy");
    cuda_be->zero(b + 10, sizeof(float) * 20);
    float *want = host_start(src, n);
    memset(want + 10, 0, sizeof(float) * 20);
    CHECK_DEVICE_NEAR(b, want, n, 0.0, "zero of a middle range");
    cuda_be->free(a);
    cuda_be->free(b);
    cuda_be->free(zeroed);
    free(src);
    free(want);
}

/* Runs one row-major GEMM on both backends, with strides wider than the
 * matrices and beta mixing in the old C. */
static void check_gemm(int trans_a, int trans_b, int m, int n, int k, float beta, double tol,
                       const char *label)
{
    int a_rows = trans_a ? k : m, a_cols = trans_a ? m : k;
    int b_rows = trans_b ? n : k, b_cols = trans_b ? k : n;
    int lda = a_cols + 3, ldb = b_cols + 1, ldc = n + 2;
    size_t a_size = (size_t)a_rows * lda, b_size = (size_t)b_rows * ldb;
    size_t c_size = (size_t)m * ldc;
    float *a = host_uniform(a_size, 10, -1.0f, 1.0f);
    float *b = host_uniform(b_size, 11, -1.0f, 1.0f);
    float *c = host_uniform(c_size, 12, -1.0f, 1.0f);
    float *da = device_copy(a, a_size), *db = device_copy(b, b_size);
    float *dc = device_copy(c, c_size);
    cpu_be->gemm(trans_a, trans_b, m, n, k, 0.5f, a, lda, b, ldb, beta, c, ldc);
    cuda_be->gemm(trans_a, trans_b, m, n, k, 0.5f, da, lda, db, ldb, beta, dc, ldc);
    CHECK_DEVICE_NEAR(dc, c, c_size, tol, label);
    cuda_be->free(da);
    cuda_be->free(db);
    cuda_be->free(dc);
    free(a);
    free(b);
    free(c);
}

static void test_gemm_transposes(void)
{
    SKIP_WITHOUT_GPU();
    check_gemm(0, 0, 37, 29, 53, 0.0f, CUDA_TOL_FP32, "gemm NN");
    check_gemm(0, 1, 37, 29, 53, 1.0f, CUDA_TOL_FP32, "gemm NT");
    check_gemm(1, 0, 37, 29, 53, 0.25f, CUDA_TOL_FP32, "gemm TN");
    check_gemm(1, 1, 37, 29, 53, 0.0f, CUDA_TOL_FP32, "gemm TT");
    check_gemm(0, 0, 1, 64, 128, 1.0f, CUDA_TOL_FP32, "gemm one row");
}

static void test_gemm_empty_inner(void)
{
    SKIP_WITHOUT_GPU();
    /* k = 0 leaves beta * C */
    check_gemm(0, 0, 5, 7, 0, 0.5f, 0.0, "gemm k = 0, beta 0.5");
    check_gemm(0, 0, 5, 7, 0, 0.0f, 0.0, "gemm k = 0, beta 0");
}

static void test_gemm_precisions(void)
{
    SKIP_WITHOUT_GPU();
    backend_cuda_set_precision(CUDA_PRECISION_TF32);
    check_gemm(0, 1, 64, 48, 96, 0.0f, CUDA_TOL_TF32, "gemm NT at tf32");
    backend_cuda_set_precision(CUDA_PRECISION_BF16);
    check_gemm(1, 0, 64, 48, 96, 1.0f, CUDA_TOL_BF16, "gemm TN at bf16");
    backend_cuda_set_precision(CUDA_PRECISION_FP32);
}

/* Offsets of `groups` groups with the given row counts (host). */
static int *group_offsets(const int *rows, int groups)
{
    int *offsets = malloc(sizeof(int) * (size_t)(groups + 1));
    offsets[0] = 0;
    for (int g = 0; g < groups; g++)
        offsets[g + 1] = offsets[g] + rows[g];
    return offsets;
}

/* Runs the three grouped GEMMs on both backends and compares within tol. */
static void check_grouped_gemms(double tol, const char *mode)
{
    /* empty groups first, in the middle and last */
    int rows[] = { 0, 7, 1, 0, 12, 5, 0 };
    int groups = 7, n = 24, k = 40;
    int *offsets = group_offsets(rows, groups);
    int total = offsets[groups];
    size_t w_stride = (size_t)n * k + 8;
    size_t w_size = w_stride * groups;
    float *a = host_uniform((size_t)total * k, 20, -1.0f, 1.0f);
    float *w = host_uniform(w_size, 21, -1.0f, 1.0f);
    float *da = device_copy(a, (size_t)total * k), *dw = device_copy(w, w_size);

    /* nt: C = A W_g^T with W_g n x k */
    float *c = host_start(NULL, (size_t)total * n);
    float *dc = device_poisoned((size_t)total * n);
    cpu_be->grouped_gemm_nt(groups, offsets, n, k, a, w, w_stride, c);
    cuda_be->grouped_gemm_nt(groups, offsets, n, k, da, dw, w_stride, dc);
    CHECK_DEVICE_NEAR(dc, c, (size_t)total * n, tol, mode);

    /* nn: C = A W_g with W_g k x n */
    device_poison(dc, (size_t)total * n);
    cpu_be->grouped_gemm_nn(groups, offsets, n, k, a, w, w_stride, c);
    cuda_be->grouped_gemm_nn(groups, offsets, n, k, da, dw, w_stride, dc);
    CHECK_DEVICE_NEAR(dc, c, (size_t)total * n, tol, mode);

    /* tn: dW_g (k x n) += dY_rows^T X_rows, accumulating into random dW */
    float *dy = host_uniform((size_t)total * k, 22, -1.0f, 1.0f);
    float *x = host_uniform((size_t)total * n, 23, -1.0f, 1.0f);
    float *ddy = device_copy(dy, (size_t)total * k), *dx = device_copy(x, (size_t)total * n);
    float *grad = host_uniform(w_size, 24, -1.0f, 1.0f);
    float *dgrad = device_copy(grad, w_size);
    cpu_be->grouped_gemm_tn(groups, offsets, k, n, dy, x, grad, w_stride);
    cuda_be->grouped_gemm_tn(groups, offsets, k, n, ddy, dx, dgrad, w_stride);
    CHECK_DEVICE_NEAR(dgrad, grad, w_size, tol, mode);

    cuda_be->free(da);
    cuda_be->free(dw);
    cuda_be->free(dc);
    cuda_be->free(ddy);
    cuda_be->free(dx);
    cuda_be->free(dgrad);
    free(offsets);
    free(a);
    free(w);
    free(c);
    free(dy);
    free(x);
    free(grad);
}

static void test_grouped_gemms(void)
{
    SKIP_WITHOUT_GPU();
    check_grouped_gemms(CUDA_TOL_FP32, "grouped GEMMs at fp32");
    backend_cuda_set_precision(CUDA_PRECISION_TF32);
    check_grouped_gemms(CUDA_TOL_TF32, "grouped GEMMs at tf32");
    /* bf16 may take the fallback of one GEMM per group */
    backend_cuda_set_precision(CUDA_PRECISION_BF16);
    check_grouped_gemms(CUDA_TOL_BF16, "grouped GEMMs at bf16");
    backend_cuda_set_precision(CUDA_PRECISION_FP32);
}

static void test_add_scale_relu(void)
{
    SKIP_WITHOUT_GPU();
    size_t n = 3001;
    float *x = host_uniform(n, 30, -1.0f, 1.0f);
    float *y = host_uniform(n, 31, -1.0f, 1.0f);
    float *dx = device_copy(x, n), *dy = device_copy(y, n);
    cpu_be->add(y, x, n);
    cuda_be->add(dy, dx, n);
    CHECK_DEVICE_NEAR(dy, y, n, 0.0, "add");
    cpu_be->scale(y, -0.75f, n);
    cuda_be->scale(dy, -0.75f, n);
    CHECK_DEVICE_NEAR(dy, y, n, 0.0, "scale");
    cpu_be->relu_forward(y, n, NULL);
    cuda_be->relu_forward(dy, n, NULL);
    CHECK_DEVICE_NEAR(dy, y, n, 0.0, "relu forward");
    float *g = host_uniform(n, 32, -1.0f, 1.0f);
    float *dg = device_copy(g, n);
    cpu_be->relu_backward(y, g, n, 1.25f);
    cuda_be->relu_backward(dy, dg, n, 1.25f);
    CHECK_DEVICE_NEAR(dg, g, n, 0.0, "relu backward");
    cuda_be->free(dx);
    cuda_be->free(dy);
    cuda_be->free(dg);
    free(x);
    free(y);
    free(g);
}

static void test_dropout_variants(void)
{
    SKIP_WITHOUT_GPU();
    /* an offset that is not a multiple of 8 starts mid Philox block */
    struct dropout_spec spec = { 0.3f, 0x1234abcdULL, 13 };
    size_t n = 5000;
    float *x = host_uniform(n, 40, -1.0f, 1.0f);
    float *y = host_uniform(n, 41, -1.0f, 1.0f);
    float *dx = device_copy(x, n), *dy = device_copy(y, n);

    float *want = host_start(NULL, n);
    float *dout = device_poisoned(n);
    cpu_be->dropout_copy(want, y, n, &spec);
    cuda_be->dropout_copy(dout, dy, n, &spec);
    CHECK_DEVICE_NEAR(dout, want, n, 0.0, "dropout copy");

    device_poison(dout, n);
    cpu_be->dropout_add(want, x, y, n, &spec);
    cuda_be->dropout_add(dout, dx, dy, n, &spec);
    CHECK_DEVICE_NEAR(dout, want, n, CUDA_TOL_FP32, "dropout add");

    float *inplace = host_start(y, n);
    float *dinplace = device_copy(y, n);
    cpu_be->dropout(inplace, n, &spec);
    cuda_be->dropout(dinplace, n, &spec);
    CHECK_DEVICE_NEAR(dinplace, inplace, n, 0.0, "dropout in place");

    memcpy(inplace, y, sizeof(float) * n);
    cuda_be->upload(dinplace, y, sizeof(float) * n);
    cpu_be->relu_forward(inplace, n, &spec);
    cuda_be->relu_forward(dinplace, n, &spec);
    CHECK_DEVICE_NEAR(dinplace, inplace, n, 0.0, "relu with dropout");

    /* p = 0 is a plain residual add and a plain copy */
    struct dropout_spec none = { 0.0f, 1, 0 };
    device_poison(dout, n);
    cpu_be->dropout_add(want, x, y, n, &none);
    cuda_be->dropout_add(dout, dx, dy, n, &none);
    CHECK_DEVICE_NEAR(dout, want, n, 0.0, "residual add without dropout");
    device_poison(dout, n);
    cuda_be->dropout_copy(dout, dy, n, NULL);
    CHECK_DEVICE_NEAR(dout, y, n, 0.0, "copy without dropout");

    cuda_be->free(dx);
    cuda_be->free(dy);
    cuda_be->free(dout);
    cuda_be->free(dinplace);
    free(x);
    free(y);
    free(want);
    free(inplace);
}

static void test_jitter_and_undo(void)
{
    SKIP_WITHOUT_GPU();
    size_t n = 1027;
    float *x = host_uniform(n, 50, -2.0f, 2.0f);
    float *want = host_start(x, n);
    float *dx = device_copy(x, n);
    cpu_be->jitter(want, n, 0.01f, 77, 6, 0);
    cuda_be->jitter(dx, n, 0.01f, 77, 6, 0);
    CHECK_DEVICE_NEAR(dx, want, n, 0.0, "jitter");
    cpu_be->jitter(want, n, 0.01f, 77, 6, 1);
    cuda_be->jitter(dx, n, 0.01f, 77, 6, 1);
    CHECK_DEVICE_NEAR(dx, want, n, 0.0, "jitter divided out");
    cuda_be->free(dx);
    free(x);
    free(want);
}

static void test_embedding_repeated_ids(void)
{
    SKIP_WITHOUT_GPU();
    int vocab = 50, d = 33, n = 200;
    int32_t ids[200];
    for (int i = 0; i < n; i++)
        ids[i] = (i * 7) % 13; /* each of 13 ids many times */
    float *table = host_uniform((size_t)vocab * d, 60, -1.0f, 1.0f);
    float *dtable_host = device_copy(table, (size_t)vocab * d);
    float *out = host_start(NULL, (size_t)n * d);
    float *dout = device_poisoned((size_t)n * d);
    cpu_be->embedding_forward(table, ids, n, d, out);
    cuda_be->embedding_forward(dtable_host, ids, n, d, dout);
    CHECK_DEVICE_NEAR(dout, out, (size_t)n * d, 0.0, "embedding forward");

    float *grad_out = host_uniform((size_t)n * d, 61, -1.0f, 1.0f);
    float *dgrad_out = device_copy(grad_out, (size_t)n * d);
    float *grad = host_uniform((size_t)vocab * d, 62, -1.0f, 1.0f);
    float *dgrad = device_copy(grad, (size_t)vocab * d);
    cpu_be->embedding_backward(grad_out, ids, n, d, grad);
    cuda_be->embedding_backward(dgrad_out, ids, n, d, dgrad);
    CHECK_DEVICE_NEAR(dgrad, grad, (size_t)vocab * d, CUDA_TOL_FP32, "embedding backward");

    cuda_be->free(dtable_host);
    cuda_be->free(dout);
    cuda_be->free(dgrad_out);
    cuda_be->free(dgrad);
    free(table);
    free(out);
    free(grad_out);
    free(grad);
}

/* rows spans several 64-row chunks of the weight gradient and d is not a
 * multiple of the block size. */
static void check_rmsnorm(int rows, int d)
{
    size_t n = (size_t)rows * d;
    float *x = host_uniform(n, 70, -2.0f, 2.0f);
    float *w = host_uniform(d, 71, 0.5f, 1.5f);
    float *dx_in = device_copy(x, n), *dw_in = device_copy(w, d);
    float *y = host_start(NULL, n), *rinv = host_start(NULL, rows);
    float *dy_out = device_poisoned(n), *drinv = device_poisoned(rows);
    cpu_be->rmsnorm_forward(x, w, rows, d, 1e-6f, y, rinv);
    cuda_be->rmsnorm_forward(dx_in, dw_in, rows, d, 1e-6f, dy_out, drinv);
    CHECK_DEVICE_NEAR(dy_out, y, n, CUDA_TOL_FP32, "rmsnorm forward y");
    CHECK_DEVICE_NEAR(drinv, rinv, rows, CUDA_TOL_FP32, "rmsnorm forward rinv");

    float *g = host_uniform(n, 72, -1.0f, 1.0f);
    float *dg = device_copy(g, n);
    float *gx = host_uniform(n, 73, -1.0f, 1.0f), *gw = host_uniform(d, 74, -1.0f, 1.0f);
    float *dgx = device_copy(gx, n), *dgw = device_copy(gw, d);
    cpu_be->rmsnorm_backward(g, x, w, rinv, rows, d, gx, gw);
    cuda_be->rmsnorm_backward(dg, dx_in, dw_in, drinv, rows, d, dgx, dgw);
    CHECK_DEVICE_NEAR(dgx, gx, n, CUDA_TOL_FP32, "rmsnorm backward dx");
    CHECK_DEVICE_NEAR(dgw, gw, d, CUDA_TOL_FP32, "rmsnorm backward dw");

    cuda_be->free(dx_in);
    cuda_be->free(dw_in);
    cuda_be->free(dy_out);
    cuda_be->free(drinv);
    cuda_be->free(dg);
    cuda_be->free(dgx);
    cuda_be->free(dgw);
    free(x);
    free(w);
    free(y);
    free(rinv);
    free(g);
    free(gx);
    free(gw);
}

static void test_rmsnorm_rows(void)
{
    SKIP_WITHOUT_GPU();
    check_rmsnorm(1, 8);
    check_rmsnorm(150, 300);
}

static void test_adamw_steps(void)
{
    SKIP_WITHOUT_GPU();
    size_t n = 2049;
    float *p = host_uniform(n, 80, -1.0f, 1.0f);
    float *m = host_start(NULL, n), *v = host_start(NULL, n);
    float *dp = device_copy(p, n), *dm = device_copy(m, n), *dv = device_copy(v, n);
    for (long step = 1; step <= 3; step++) {
        float *g = host_uniform(n, 81 + (uint64_t)step, -1.0f, 1.0f);
        float *dg = device_copy(g, n);
        cpu_be->adamw(p, g, m, v, n, 1e-3f, 0.9f, 0.98f, 1e-6f, 0.01f, step);
        cuda_be->adamw(dp, dg, dm, dv, n, 1e-3f, 0.9f, 0.98f, 1e-6f, 0.01f, step);
        cuda_be->free(dg);
        free(g);
    }
    CHECK_DEVICE_NEAR(dp, p, n, CUDA_TOL_FP32, "adamw parameters");
    CHECK_DEVICE_NEAR(dm, m, n, CUDA_TOL_FP32, "adamw first moment");
    CHECK_DEVICE_NEAR(dv, v, n, CUDA_TOL_FP32, "adamw second moment");
    cuda_be->free(dp);
    cuda_be->free(dm);
    cuda_be->free(dv);
    free(p);
    free(m);
    free(v);
}

static void test_sum_squares_sizes(void)
{
    SKIP_WITHOUT_GPU();
    /* one element, one block, and more blocks than the partial sums hold */
    size_t sizes[] = { 1, 255, 300000 };
    for (int i = 0; i < 3; i++) {
        float *x = host_uniform(sizes[i], 90 + (uint64_t)i, -1.0f, 1.0f);
        float *dx = device_copy(x, sizes[i]);
        double want = cpu_be->sum_squares(x, sizes[i]);
        double got = cuda_be->sum_squares(dx, sizes[i]);
        CHECK_MSG(fabs(got - want) <= 1e-9 * want, "%zu values: %.12g, expected %.12g",
                  sizes[i], got, want);
        cuda_be->free(dx);
        free(x);
    }
}

static void test_precision_names(void)
{
    struct caem_error err;
    enum cuda_precision p;
    CHECK(cuda_precision_parse("bf16", &p, &err) == 0);
    CHECK_INT_EQ(p, CUDA_PRECISION_BF16);
    CHECK(cuda_precision_parse("tf32", &p, &err) == 0);
    CHECK_INT_EQ(p, CUDA_PRECISION_TF32);
    CHECK(cuda_precision_parse("fp16", &p, &err) != 0);
    CHECK_MSG(strstr(err.message, "fp16") != NULL, "message: %s", err.message);
}

int main(void)
{
    CUDA_TEST_SUITE("cuda_ops");
    RUN_TEST(memory_round_trip);
    RUN_TEST(gemm_transposes);
    RUN_TEST(gemm_empty_inner);
    RUN_TEST(gemm_precisions);
    RUN_TEST(grouped_gemms);
    RUN_TEST(add_scale_relu);
    RUN_TEST(dropout_variants);
    RUN_TEST(jitter_and_undo);
    RUN_TEST(embedding_repeated_ids);
    RUN_TEST(rmsnorm_rows);
    RUN_TEST(adamw_steps);
    RUN_TEST(sum_squares_sizes);
    RUN_TEST(precision_names);
    TEST_MAIN_END();
}
