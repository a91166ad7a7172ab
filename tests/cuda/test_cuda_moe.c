/* Agreement of the CUDA backend's MoE operations (kernels/cuda_moe.cu) with
 * the CPU reference: routing and dispatch, gather and scatter, combine and
 * its backward, the router's gradients and z-loss, the load-balancing and
 * usage statistics, and cross-entropy. Integer outputs must match exactly,
 * floats to CUDA_TOL_FP32. */
#include "config.h"
#include "cuda_check.h"

/* Distinct from any valid expert, slot or token index, so an int the kernel
 * never writes fails the comparison. */
#define POISON_INT 0x7fffffff
#define POISON_COUNT ((int64_t)-2)

static int32_t *device_ints_poisoned(size_t n)
{
    int32_t *host = malloc(sizeof(int32_t) * (n > 0 ? n : 1));
    for (size_t i = 0; i < n; i++)
        host[i] = POISON_INT;
    int32_t *d = device_copy_bytes(host, sizeof(int32_t) * n);
    free(host);
    return d;
}

static int32_t *host_ints(const int32_t *d, size_t n)
{
    int32_t *host = malloc(sizeof(int32_t) * (n > 0 ? n : 1));
    if (n > 0)
        cuda_be->download(host, d, sizeof(int32_t) * n);
    return host;
}

/* Fails with the first differing index when got and want differ anywhere. */
static void check_ints_equal(const int32_t *got, const int32_t *want, size_t n,
                             const char *label)
{
    size_t mismatches = 0, first = 0;
    for (size_t i = 0; i < n; i++)
        if (got[i] != want[i]) {
            if (mismatches == 0)
                first = i;
            mismatches++;
        }
    CHECK_MSG(mismatches == 0, "%s: %zu of %zu differ, first at %zu: %d, expected %d", label,
              mismatches, n, first, mismatches ? got[first] : 0, mismatches ? want[first] : 0);
}

static void check_int64s_equal(const int64_t *got, const int64_t *want, size_t n,
                               const char *label)
{
    size_t mismatches = 0, first = 0;
    for (size_t i = 0; i < n; i++)
        if (got[i] != want[i]) {
            if (mismatches == 0)
                first = i;
            mismatches++;
        }
    CHECK_MSG(mismatches == 0, "%s: %zu of %zu differ, first at %zu: %lld, expected %lld",
              label, mismatches, n, first, mismatches ? (long long)got[first] : 0LL,
              mismatches ? (long long)want[first] : 0LL);
}

static void check_device_ints(const int32_t *device, const int32_t *want, size_t n,
                              const char *label)
{
    int32_t *got = host_ints(device, n);
    check_ints_equal(got, want, n, label);
    free(got);
}

/* relative_error for doubles. */
static double relative_error_double(const double *got, const double *want, size_t n)
{
    double diff = 0.0, scale = 0.0;
    for (size_t i = 0; i < n; i++) {
        if (!isfinite(got[i]) || !isfinite(want[i]))
            return INFINITY;
        double d = fabs(got[i] - want[i]);
        if (d > diff)
            diff = d;
        if (fabs(want[i]) > scale)
            scale = fabs(want[i]);
    }
    return scale > 0.0 ? diff / scale : diff;
}

/* An integer in [0, k) from a fixed stream. */
static int random_below(uint64_t seed, uint64_t index, int k)
{
    int v = (int)(rng_uniform(seed, index) * (float)k);
    return v < k ? v : k - 1;
}

/* A random permutation of [0, total) (Fisher-Yates); its first n entries are
 * n distinct rows. */
static int32_t *random_permutation(int total, uint64_t seed)
{
    int32_t *all = malloc(sizeof(int32_t) * (size_t)total);
    for (int i = 0; i < total; i++)
        all[i] = i;
    for (int i = total - 1; i > 0; i--) {
        int j = random_below(seed, (uint64_t)i, i + 1);
        int32_t tmp = all[i];
        all[i] = all[j];
        all[j] = tmp;
    }
    return all;
}

/* ------------------------------------------------------------------------ */
/* routing */

/* The routing outputs of one call, in host memory. */
struct route_result {
    float *probs;
    int32_t *expert;
    int32_t *kept;
    int32_t *assigned;
    float *pmax;
    int32_t *perm;
    int32_t *slot_of;
    int offsets[CONFIG_MAX_EXPERTS + 1];
    int64_t kept_counts[CONFIG_MAX_EXPERTS];
    int64_t dropped_counts[CONFIG_MAX_EXPERTS];
};

static struct route_result *route_result_new(int n, int experts)
{
    struct route_result *r = malloc(sizeof *r);
    r->probs = malloc(sizeof(float) * (size_t)n * experts);
    r->expert = malloc(sizeof(int32_t) * (size_t)n);
    r->kept = malloc(sizeof(int32_t) * (size_t)n);
    r->assigned = malloc(sizeof(int32_t) * (size_t)n);
    r->pmax = malloc(sizeof(float) * (size_t)n);
    r->perm = malloc(sizeof(int32_t) * (size_t)n);
    r->slot_of = malloc(sizeof(int32_t) * (size_t)n);
    for (int i = 0; i <= CONFIG_MAX_EXPERTS; i++)
        r->offsets[i] = POISON_INT;
    for (int i = 0; i < CONFIG_MAX_EXPERTS; i++) {
        r->kept_counts[i] = POISON_COUNT;
        r->dropped_counts[i] = POISON_COUNT;
    }
    return r;
}

static void route_result_free(struct route_result *r)
{
    free(r->probs);
    free(r->expert);
    free(r->kept);
    free(r->assigned);
    free(r->pmax);
    free(r->perm);
    free(r->slot_of);
    free(r);
}

/* Routes logits [B*T, E] on the CPU. */
static struct route_result *route_on_cpu(const struct route_shape *s, const float *logits,
                                         int skipped_assigned)
{
    int n = s->batch * s->tokens;
    struct route_result *r = route_result_new(n, s->experts);
    cpu_be->route_top1(s, logits, skipped_assigned, r->probs, r->expert, r->kept, r->assigned,
                       r->pmax, r->perm, r->slot_of, r->offsets, r->kept_counts,
                       r->dropped_counts);
    return r;
}

/* Routes on both backends and compares every output; returns the CPU result
 * for the caller's own checks. */
static struct route_result *route_compare(const struct route_shape *s, const float *logits,
                                          int skipped_assigned)
{
    int n = s->batch * s->tokens, E = s->experts;
    struct route_result *want = route_on_cpu(s, logits, skipped_assigned);

    float *d_logits = device_copy(logits, (size_t)n * E);
    float *d_probs = device_poisoned((size_t)n * E);
    float *d_pmax = device_poisoned((size_t)n);
    int32_t *d_expert = device_ints_poisoned((size_t)n);
    int32_t *d_kept = device_ints_poisoned((size_t)n);
    int32_t *d_assigned = device_ints_poisoned((size_t)n);
    int32_t *d_perm = device_ints_poisoned((size_t)n);
    int32_t *d_slot_of = device_ints_poisoned((size_t)n);
    struct route_result *got = route_result_new(0, 0);
    cuda_be->route_top1(s, d_logits, skipped_assigned, d_probs, d_expert, d_kept, d_assigned,
                        d_pmax, d_perm, d_slot_of, got->offsets, got->kept_counts,
                        got->dropped_counts);

    CHECK_DEVICE_NEAR(d_probs, want->probs, (size_t)n * E, CUDA_TOL_FP32, "probs");
    CHECK_DEVICE_NEAR(d_pmax, want->pmax, (size_t)n, CUDA_TOL_FP32, "pmax");
    check_device_ints(d_expert, want->expert, (size_t)n, "expert");
    check_device_ints(d_kept, want->kept, (size_t)n, "kept");
    check_device_ints(d_assigned, want->assigned, (size_t)n, "assigned");
    check_device_ints(d_slot_of, want->slot_of, (size_t)n, "slot_of");
    check_ints_equal(got->offsets, want->offsets, (size_t)E + 1, "offsets");
    check_int64s_equal(got->kept_counts, want->kept_counts, (size_t)E, "kept counts");
    check_int64s_equal(got->dropped_counts, want->dropped_counts, (size_t)E,
                       "dropped counts");
    /* perm is defined for the kept tokens only */
    check_device_ints(d_perm, want->perm, (size_t)want->offsets[E], "perm");

    cuda_be->free(d_logits);
    cuda_be->free(d_probs);
    cuda_be->free(d_pmax);
    cuda_be->free(d_expert);
    cuda_be->free(d_kept);
    cuda_be->free(d_assigned);
    cuda_be->free(d_perm);
    cuda_be->free(d_slot_of);
    route_result_free(got);
    return want;
}

static int64_t total_of(const int64_t *counts, int n)
{
    int64_t total = 0;
    for (int i = 0; i < n; i++)
        total += counts[i];
    return total;
}

static void test_route_ample_capacity(void)
{
    SKIP_WITHOUT_GPU();
    struct route_shape s = {.batch = 2, .tokens = 24, .experts = 8, .capacity = 24};
    float *logits = host_uniform((size_t)48 * 8, 101, -3.0f, 3.0f);
    struct route_result *want = route_compare(&s, logits, 0);
    CHECK_INT_EQ(total_of(want->dropped_counts, 8), 0);
    CHECK_INT_EQ(want->offsets[8], 48);
    route_result_free(want);
    free(logits);
}

static void test_route_tight_capacity(void)
{
    SKIP_WITHOUT_GPU();
    /* skipped tokens counted as expert 0, as in the parity routing mode */
    struct route_shape s = {.batch = 3, .tokens = 40, .experts = 4, .capacity = 6};
    float *logits = host_uniform((size_t)120 * 4, 102, -2.0f, 2.0f);
    struct route_result *want = route_compare(&s, logits, 0);
    CHECK(total_of(want->dropped_counts, 4) > 0);
    CHECK(want->offsets[4] <= 3 * 4 * 6);
    route_result_free(want);
    free(logits);
}

static void test_route_skipped_uncounted(void)
{
    SKIP_WITHOUT_GPU();
    /* skipped tokens assigned -1, as in the clean routing mode */
    struct route_shape s = {.batch = 2, .tokens = 33, .experts = 3, .capacity = 5};
    float *logits = host_uniform((size_t)66 * 3, 103, -2.0f, 2.0f);
    struct route_result *want = route_compare(&s, logits, -1);
    CHECK(total_of(want->dropped_counts, 3) > 0);
    route_result_free(want);
    free(logits);
}

static void test_route_zero_capacity(void)
{
    SKIP_WITHOUT_GPU();
    struct route_shape s = {.batch = 2, .tokens = 10, .experts = 4, .capacity = 0};
    float *logits = host_uniform((size_t)20 * 4, 104, -2.0f, 2.0f);
    struct route_result *want = route_compare(&s, logits, 0);
    CHECK_INT_EQ(want->offsets[4], 0);
    CHECK_INT_EQ(total_of(want->dropped_counts, 4), 20);
    route_result_free(want);
    free(logits);
}

static void test_route_tied_logits(void)
{
    SKIP_WITHOUT_GPU();
    /* logits from {0, 1, 2}: most rows tie at their max; row 0 is all equal */
    int B = 2, T = 32, E = 6, n = B * T;
    struct route_shape s = {.batch = B, .tokens = T, .experts = E, .capacity = 7};
    float *logits = malloc(sizeof(float) * (size_t)n * E);
    for (int i = 0; i < n * E; i++)
        logits[i] = (float)random_below(105, (uint64_t)i, 3);
    for (int e = 0; e < E; e++)
        logits[e] = 1.5f;
    int tied_rows = 0;
    for (int t = 0; t < n; t++) {
        float max = logits[(size_t)t * E];
        int at_max = 0;
        for (int e = 1; e < E; e++)
            if (logits[(size_t)t * E + e] > max)
                max = logits[(size_t)t * E + e];
        for (int e = 0; e < E; e++)
            at_max += logits[(size_t)t * E + e] == max;
        tied_rows += at_max > 1;
    }
    CHECK(tied_rows > n / 2);

    struct route_result *want = route_compare(&s, logits, 0);
    /* the first of equal maxima wins */
    CHECK_INT_EQ(want->expert[0], 0);
    route_result_free(want);
    free(logits);
}

static void test_route_many_sequences(void)
{
    SKIP_WITHOUT_GPU();
    struct route_shape s = {.batch = 8, .tokens = 64, .experts = 16, .capacity = 5};
    float *logits = host_uniform((size_t)512 * 16, 106, -4.0f, 4.0f);
    struct route_result *want = route_compare(&s, logits, 0);
    CHECK(total_of(want->dropped_counts, 16) > 0);
    route_result_free(want);
    free(logits);
}

static void test_route_many_experts(void)
{
    SKIP_WITHOUT_GPU();
    /* more experts than threads of the offsets block, so each thread scans
     * a range of experts */
    struct route_shape s = {.batch = 3, .tokens = 300, .experts = 600, .capacity = 1};
    float *logits = host_uniform((size_t)900 * 600, 107, -5.0f, 5.0f);
    struct route_result *want = route_compare(&s, logits, 0);
    CHECK(total_of(want->dropped_counts, 600) > 0);
    route_result_free(want);
    free(logits);
}

/* ------------------------------------------------------------------------ */
/* dispatch and combine */

static void test_gather_rows(void)
{
    SKIP_WITHOUT_GPU();
    int rows = 50, n = 37, d = 33;
    float *src = host_uniform((size_t)rows * d, 201, -1.0f, 1.0f);
    int32_t *perm = random_permutation(rows, 202);
    float *want = malloc(sizeof(float) * (size_t)n * d);
    cpu_be->gather_rows(src, perm, n, d, want);

    float *d_src = device_copy(src, (size_t)rows * d);
    int32_t *d_perm = device_copy_bytes(perm, sizeof(int32_t) * (size_t)n);
    float *d_dst = device_poisoned((size_t)n * d);
    cuda_be->gather_rows(d_src, d_perm, n, d, d_dst);
    CHECK_DEVICE_NEAR(d_dst, want, (size_t)n * d, CUDA_TOL_FP32, "gathered rows");

    cuda_be->free(d_src);
    cuda_be->free(d_perm);
    cuda_be->free(d_dst);
    free(src);
    free(perm);
    free(want);
}

static void test_scatter_add_rows(void)
{
    SKIP_WITHOUT_GPU();
    int rows = 45, n = 30, d = 70;
    float *src = host_uniform((size_t)n * d, 211, -1.0f, 1.0f);
    float *dst = host_uniform((size_t)rows * d, 212, -1.0f, 1.0f);
    int32_t *perm = random_permutation(rows, 213);

    float *d_src = device_copy(src, (size_t)n * d);
    float *d_dst = device_copy(dst, (size_t)rows * d);
    int32_t *d_perm = device_copy_bytes(perm, sizeof(int32_t) * (size_t)n);
    cpu_be->scatter_add_rows(src, perm, n, d, dst);
    cuda_be->scatter_add_rows(d_src, d_perm, n, d, d_dst);
    CHECK_DEVICE_NEAR(d_dst, dst, (size_t)rows * d, CUDA_TOL_FP32, "scattered rows");

    cuda_be->free(d_src);
    cuda_be->free(d_perm);
    cuda_be->free(d_dst);
    free(src);
    free(dst);
    free(perm);
}

/* Routing of a tight-capacity layer, for the combine tests: slot_of has -1
 * entries and kept rows of y. */
static struct route_result *combine_routing(int B, int T, int E, uint64_t seed)
{
    struct route_shape s = {.batch = B, .tokens = T, .experts = E, .capacity = T / (2 * E)};
    float *logits = host_uniform((size_t)B * T * E, seed, -2.0f, 2.0f);
    struct route_result *r = route_on_cpu(&s, logits, 0);
    free(logits);
    return r;
}

static void check_combine(int skip_identity)
{
    int B = 2, T = 48, E = 4, d = 40, n = B * T;
    struct route_result *r = combine_routing(B, T, E, 221);
    int rows = r->offsets[E];
    CHECK(rows < n);
    float *y = host_uniform((size_t)rows * d, 222, -1.0f, 1.0f);
    float *x = host_uniform((size_t)n * d, 223, -1.0f, 1.0f);
    float *want = malloc(sizeof(float) * (size_t)n * d);
    cpu_be->moe_combine(n, d, y, r->slot_of, r->pmax, x, skip_identity, want);

    float *d_y = device_copy(y, (size_t)rows * d);
    float *d_x = device_copy(x, (size_t)n * d);
    float *d_pmax = device_copy(r->pmax, (size_t)n);
    int32_t *d_slot_of = device_copy_bytes(r->slot_of, sizeof(int32_t) * (size_t)n);
    float *d_out = device_poisoned((size_t)n * d);
    cuda_be->moe_combine(n, d, d_y, d_slot_of, d_pmax, d_x, skip_identity, d_out);
    CHECK_DEVICE_NEAR(d_out, want, (size_t)n * d, CUDA_TOL_FP32, "combined output");

    cuda_be->free(d_y);
    cuda_be->free(d_x);
    cuda_be->free(d_pmax);
    cuda_be->free(d_slot_of);
    cuda_be->free(d_out);
    free(y);
    free(x);
    free(want);
    route_result_free(r);
}

static void test_combine_skip_identity(void)
{
    SKIP_WITHOUT_GPU();
    check_combine(1);
}

static void test_combine_skip_zero(void)
{
    SKIP_WITHOUT_GPU();
    check_combine(0);
}

static void check_combine_backward(int skip_identity)
{
    int B = 3, T = 40, E = 4, d = 300, n = B * T;
    struct route_result *r = combine_routing(B, T, E, 231);
    int rows = r->offsets[E];
    CHECK(rows < n);
    float *dout = host_uniform((size_t)n * d, 232, -1.0f, 1.0f);
    float *y = host_uniform((size_t)rows * d, 233, -1.0f, 1.0f);
    float *x = host_uniform((size_t)n * d, 234, -1.0f, 1.0f);
    float *dx = host_uniform((size_t)n * d, 235, -1.0f, 1.0f);
    float *dy = malloc(sizeof(float) * (size_t)rows * d);
    float *dpmax = malloc(sizeof(float) * (size_t)n);

    float *d_dout = device_copy(dout, (size_t)n * d);
    float *d_y = device_copy(y, (size_t)rows * d);
    float *d_x = device_copy(x, (size_t)n * d);
    float *d_dx = device_copy(dx, (size_t)n * d);
    float *d_pmax = device_copy(r->pmax, (size_t)n);
    int32_t *d_slot_of = device_copy_bytes(r->slot_of, sizeof(int32_t) * (size_t)n);
    float *d_dy = device_poisoned((size_t)rows * d);
    float *d_dpmax = device_poisoned((size_t)n);

    cpu_be->moe_combine_backward(n, d, dout, y, r->slot_of, r->pmax, x, skip_identity, dy, dx,
                                 dpmax);
    cuda_be->moe_combine_backward(n, d, d_dout, d_y, d_slot_of, d_pmax, d_x, skip_identity,
                                  d_dy, d_dx, d_dpmax);
    CHECK_DEVICE_NEAR(d_dy, dy, (size_t)rows * d, CUDA_TOL_FP32, "dy");
    CHECK_DEVICE_NEAR(d_dx, dx, (size_t)n * d, CUDA_TOL_FP32, "dx");
    CHECK_DEVICE_NEAR(d_dpmax, dpmax, (size_t)n, CUDA_TOL_FP32, "dpmax");

    cuda_be->free(d_dout);
    cuda_be->free(d_y);
    cuda_be->free(d_x);
    cuda_be->free(d_dx);
    cuda_be->free(d_pmax);
    cuda_be->free(d_slot_of);
    cuda_be->free(d_dy);
    cuda_be->free(d_dpmax);
    free(dout);
    free(y);
    free(x);
    free(dx);
    free(dy);
    free(dpmax);
    route_result_free(r);
}

static void test_combine_backward_identity(void)
{
    SKIP_WITHOUT_GPU();
    check_combine_backward(1);
}

static void test_combine_backward_zero(void)
{
    SKIP_WITHOUT_GPU();
    check_combine_backward(0);
}

/* ------------------------------------------------------------------------ */
/* router gradients and losses */

static void test_pmax_backward(void)
{
    SKIP_WITHOUT_GPU();
    int B = 2, T = 30, E = 8, n = B * T;
    struct route_result *r = combine_routing(B, T, E, 301);
    float *dpmax = host_uniform((size_t)n, 302, -1.0f, 1.0f);
    float *dlogits = host_uniform((size_t)n * E, 303, -0.5f, 0.5f);

    float *d_probs = device_copy(r->probs, (size_t)n * E);
    int32_t *d_expert = device_copy_bytes(r->expert, sizeof(int32_t) * (size_t)n);
    float *d_dpmax = device_copy(dpmax, (size_t)n);
    float *d_dlogits = device_copy(dlogits, (size_t)n * E);
    cpu_be->router_pmax_backward(n, E, r->probs, r->expert, dpmax, dlogits);
    cuda_be->router_pmax_backward(n, E, d_probs, d_expert, d_dpmax, d_dlogits);
    CHECK_DEVICE_NEAR(d_dlogits, dlogits, (size_t)n * E, CUDA_TOL_FP32, "dlogits");

    cuda_be->free(d_probs);
    cuda_be->free(d_expert);
    cuda_be->free(d_dpmax);
    cuda_be->free(d_dlogits);
    free(dpmax);
    free(dlogits);
    route_result_free(r);
}

static void test_router_z_loss(void)
{
    SKIP_WITHOUT_GPU();
    /* more tokens than one block's threads, so several partial sums */
    int n = 700, E = 16;
    double grad_scale = 1e-3 / n;
    float *logits = host_uniform((size_t)n * E, 311, -6.0f, 6.0f);
    float *dlogits = host_uniform((size_t)n * E, 312, -1e-3f, 1e-3f);

    float *d_logits = device_copy(logits, (size_t)n * E);
    float *d_dlogits = device_copy(dlogits, (size_t)n * E);
    double want = cpu_be->router_z_loss(n, E, logits, grad_scale, dlogits);
    double got = cuda_be->router_z_loss(n, E, d_logits, grad_scale, d_dlogits);
    CHECK(want > 0.0);
    CHECK_MSG(fabs(got - want) <= CUDA_TOL_FP32 * fabs(want), "z-loss %.17g, expected %.17g",
              got, want);
    CHECK_DEVICE_NEAR(d_dlogits, dlogits, (size_t)n * E, CUDA_TOL_FP32, "dlogits");

    cuda_be->free(d_logits);
    cuda_be->free(d_dlogits);
    free(logits);
    free(dlogits);
}

/* ------------------------------------------------------------------------ */
/* load-balancing and usage statistics */

static void test_balance_accumulate(void)
{
    SKIP_WITHOUT_GPU();
    /* T spans several chunks of the statistics kernel, one of them partial */
    int B = 3, T = 150, E = 5, n = B * T;
    struct route_result *r = combine_routing(B, T, E, 401);
    /* every fifth token counts nowhere */
    for (int t = 0; t < n; t += 5)
        r->assigned[t] = -1;
    double want_counts[15], want_sums[15], got_counts[15], got_sums[15];
    for (int i = 0; i < B * E; i++) {
        want_counts[i] = got_counts[i] = (double)(i % 4);
        want_sums[i] = got_sums[i] = 0.25 * i;
    }

    float *d_probs = device_copy(r->probs, (size_t)n * E);
    int32_t *d_assigned = device_copy_bytes(r->assigned, sizeof(int32_t) * (size_t)n);
    cpu_be->balance_accumulate(B, T, E, r->probs, r->assigned, want_counts, want_sums);
    cuda_be->balance_accumulate(B, T, E, d_probs, d_assigned, got_counts, got_sums);
    /* counts are whole numbers: exact */
    for (int i = 0; i < B * E; i++)
        CHECK_MSG(got_counts[i] == want_counts[i], "count %d: %g, expected %g", i,
                  got_counts[i], want_counts[i]);
    double error = relative_error_double(got_sums, want_sums, (size_t)B * E);
    CHECK_MSG(error <= CUDA_TOL_FP32, "prob sums: relative error %.3g", error);

    cuda_be->free(d_probs);
    cuda_be->free(d_assigned);
    route_result_free(r);
}

static void test_balance_backward(void)
{
    SKIP_WITHOUT_GPU();
    int B = 3, T = 20, E = 8, n = B * T;
    struct route_result *r = combine_routing(B, T, E, 411);
    double dprob[24];
    for (int i = 0; i < B * E; i++)
        dprob[i] = 2.0 * rng_uniform(412, (uint64_t)i) - 1.0;
    float *dlogits = host_uniform((size_t)n * E, 413, -0.5f, 0.5f);

    float *d_probs = device_copy(r->probs, (size_t)n * E);
    float *d_dlogits = device_copy(dlogits, (size_t)n * E);
    cpu_be->balance_backward(B, T, E, r->probs, dprob, dlogits);
    cuda_be->balance_backward(B, T, E, d_probs, dprob, d_dlogits);
    CHECK_DEVICE_NEAR(d_dlogits, dlogits, (size_t)n * E, CUDA_TOL_FP32, "dlogits");

    cuda_be->free(d_probs);
    cuda_be->free(d_dlogits);
    free(dlogits);
    route_result_free(r);
}

static void check_usage(int use_mask)
{
    int B = 2, T = 100, E = 6, n = B * T;
    struct route_result *r = combine_routing(B, T, E, 421);
    int32_t *mask = malloc(sizeof(int32_t) * (size_t)n);
    for (int t = 0; t < n; t++)
        mask[t] = random_below(422, (uint64_t)t, 3) != 0;
    int64_t want_kept[6], want_dropped[6], got_kept[6], got_dropped[6];
    double want_sums[6], got_sums[6];
    for (int e = 0; e < E; e++) {
        want_kept[e] = got_kept[e] = 10 + e;
        want_dropped[e] = got_dropped[e] = 2 * e;
        want_sums[e] = got_sums[e] = 0.5 * e;
    }

    float *d_probs = device_copy(r->probs, (size_t)n * E);
    int32_t *d_expert = device_copy_bytes(r->expert, sizeof(int32_t) * (size_t)n);
    int32_t *d_kept = device_copy_bytes(r->kept, sizeof(int32_t) * (size_t)n);
    const int32_t *m = use_mask ? mask : NULL;
    cpu_be->usage_accumulate(n, E, r->probs, r->expert, r->kept, m, want_kept, want_dropped,
                             want_sums);
    cuda_be->usage_accumulate(n, E, d_probs, d_expert, d_kept, m, got_kept, got_dropped,
                              got_sums);
    int dropped_tokens = 0;
    for (int t = 0; t < n; t++)
        dropped_tokens += !r->kept[t];
    CHECK(dropped_tokens > 0);
    check_int64s_equal(got_kept, want_kept, (size_t)E, "kept counts");
    check_int64s_equal(got_dropped, want_dropped, (size_t)E, "dropped counts");
    double error = relative_error_double(got_sums, want_sums, (size_t)E);
    CHECK_MSG(error <= CUDA_TOL_FP32, "prob sums: relative error %.3g", error);

    cuda_be->free(d_probs);
    cuda_be->free(d_expert);
    cuda_be->free(d_kept);
    free(mask);
    route_result_free(r);
}

static void test_usage_all_tokens(void)
{
    SKIP_WITHOUT_GPU();
    check_usage(0);
}

static void test_usage_masked(void)
{
    SKIP_WITHOUT_GPU();
    check_usage(1);
}

/* ------------------------------------------------------------------------ */
/* cross-entropy */

static void check_cross_entropy(int n, int vocab, uint64_t seed)
{
    float *logits = host_uniform((size_t)n * vocab, seed, -8.0f, 8.0f);
    int32_t *labels = malloc(sizeof(int32_t) * (size_t)n);
    int counted = 0;
    for (int t = 0; t < n; t++) {
        /* every third row is padding */
        labels[t] = t % 3 == 1 ? -100 : random_below(seed + 1, (uint64_t)t, vocab);
        counted += labels[t] >= 0;
    }
    float scale = 1.0f / (float)counted;
    float *dlogits = malloc(sizeof(float) * (size_t)n * vocab);

    float *d_logits = device_copy(logits, (size_t)n * vocab);
    float *d_dlogits = device_poisoned((size_t)n * vocab);
    double want = cpu_be->cross_entropy(n, vocab, logits, labels, scale, dlogits);
    double got = cuda_be->cross_entropy(n, vocab, d_logits, labels, scale, d_dlogits);
    CHECK(want > 0.0);
    CHECK_MSG(fabs(got - want) <= CUDA_TOL_FP32 * fabs(want), "loss %.17g, expected %.17g",
              got, want);
    CHECK_DEVICE_NEAR(d_dlogits, dlogits, (size_t)n * vocab, CUDA_TOL_FP32, "dlogits");

    /* the ignored rows are exactly zero */
    float *got_dlogits = host_copy(d_dlogits, (size_t)n * vocab);
    size_t nonzero = 0;
    for (int t = 0; t < n; t++)
        if (labels[t] < 0)
            for (int j = 0; j < vocab; j++)
                nonzero += got_dlogits[(size_t)t * vocab + j] != 0.0f;
    CHECK_MSG(nonzero == 0, "%zu nonzero gradients in ignored rows", nonzero);

    cuda_be->free(d_logits);
    cuda_be->free(d_dlogits);
    free(got_dlogits);
    free(logits);
    free(labels);
    free(dlogits);
}

static void test_cross_entropy_ignored(void)
{
    SKIP_WITHOUT_GPU();
    check_cross_entropy(13, 1000, 501);
}

static void test_cross_entropy_t5_vocab(void)
{
    SKIP_WITHOUT_GPU();
    /* the vocabulary of the T5 tokenizer that Switch Transformers use */
    check_cross_entropy(4, 32128, 511);
}

int main(void)
{
    CUDA_TEST_SUITE("cuda_moe");
    RUN_TEST(route_ample_capacity);
    RUN_TEST(route_tight_capacity);
    RUN_TEST(route_skipped_uncounted);
    RUN_TEST(route_zero_capacity);
    RUN_TEST(route_tied_logits);
    RUN_TEST(route_many_sequences);
    RUN_TEST(route_many_experts);
    RUN_TEST(gather_rows);
    RUN_TEST(scatter_add_rows);
    RUN_TEST(combine_skip_identity);
    RUN_TEST(combine_skip_zero);
    RUN_TEST(combine_backward_identity);
    RUN_TEST(combine_backward_zero);
    RUN_TEST(pmax_backward);
    RUN_TEST(router_z_loss);
    RUN_TEST(balance_accumulate);
    RUN_TEST(balance_backward);
    RUN_TEST(usage_all_tokens);
    RUN_TEST(usage_masked);
    RUN_TEST(cross_entropy_ignored);
    RUN_TEST(cross_entropy_t5_vocab);
    TEST_MAIN_END();
}
