/* Agreement of the CUDA backend's attention with the CPU reference: the
 * relative position bias, the forward with its bias, masks and dropout, the
 * backward, and decoding against a cache, in the layouts the model uses. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#include "cuda_check.h"

/* Fills the gaps of strided outputs, so that a write past a row's columns
 * shows up as a mismatch against the CPU buffer, which keeps the value. */
#define GAP_VALUE 0.25f

/* Inputs of one attention call in the model's layouts. Self-attention
 * (tq == tk) reads q, k and v from one [B*T, 3*H*K] buffer. Otherwise q
 * comes from a [B*Tq, 3*H*K] buffer and k, v from one [B*Tk, 2*H*K] buffer,
 * as cross-attention's key-value projection writes them. */
struct attention_case {
    struct attention_shape s;
    float *q_buf, *kv_buf;          /* host, the same buffer for self-attention */
    float *q_dev, *kv_dev;          /* device copies */
    size_t q_size, kv_size;
    size_t q_offset, k_offset, v_offset; /* of q, k, v in their buffers */
};

static void attention_case_init(struct attention_case *c, int batch, int tq, int tk, int heads,
                                int d_kv, int ldc, int causal, uint64_t seed)
{
    int HK = heads * d_kv;
    memset(c, 0, sizeof *c);
    c->s.batch = batch;
    c->s.tq = tq;
    c->s.tk = tk;
    c->s.heads = heads;
    c->s.d_kv = d_kv;
    c->s.ldq = 3 * HK;
    c->s.ldc = ldc;
    c->s.causal = causal;
    c->q_size = (size_t)batch * tq * 3 * HK;
    c->q_buf = host_uniform(c->q_size, seed, -1.0f, 1.0f);
    c->q_dev = device_copy(c->q_buf, c->q_size);
    if (tq == tk) {
        c->s.ldk = c->s.ldv = 3 * HK;
        c->kv_buf = c->q_buf;
        c->kv_dev = c->q_dev;
        c->kv_size = c->q_size;
        c->k_offset = HK;
        c->v_offset = 2 * (size_t)HK;
    } else {
        c->s.ldk = c->s.ldv = 2 * HK;
        c->kv_size = (size_t)batch * tk * 2 * HK;
        c->kv_buf = host_uniform(c->kv_size, seed + 1, -1.0f, 1.0f);
        c->kv_dev = device_copy(c->kv_buf, c->kv_size);
        c->k_offset = 0;
        c->v_offset = HK;
    }
}

static void attention_case_free(struct attention_case *c)
{
    if (c->kv_buf != c->q_buf) {
        free(c->kv_buf);
        cuda_be->free(c->kv_dev);
    }
    free(c->q_buf);
    cuda_be->free(c->q_dev);
}

/* Sets columns [col, col + cols) of each of `rows` rows of stride ld to NaN:
 * the device copy of an output buffer, whose other values stay as they are
 * on the host. */
static void poison_columns(float *x, size_t rows, int ld, int col, int cols)
{
    for (size_t r = 0; r < rows; r++)
        for (int j = col; j < col + cols; j++)
            x[r * ld + j] = NAN;
}

/* A host key mask [rows, tk] with about one key in four masked. */
static int32_t *random_key_mask(int rows, int tk, uint64_t seed)
{
    int32_t *mask = malloc(sizeof(int32_t) * rows * tk);
    for (int i = 0; i < rows * tk; i++)
        mask[i] = rng_uniform(seed, i) < 0.25f ? 0 : 1;
    return mask;
}

/* Runs attention_forward on both backends and compares probs, dropped (with
 * dropout) and ctx. bias is host [H, Tq, Tk] or NULL. Returns a host copy of
 * the CUDA probs. The CPU's probs and dropped go to cpu_probs_out and
 * cpu_dropped_out where those are not NULL. The caller frees all three. */
static float *check_attention_forward(const struct attention_case *c, const float *bias,
                                      const int32_t *key_mask, const struct dropout_spec *drop,
                                      double tol, float **cpu_probs_out,
                                      float **cpu_dropped_out)
{
    const struct attention_shape *s = &c->s;
    int HK = s->heads * s->d_kv;
    size_t weights = (size_t)s->batch * s->heads * s->tq * s->tk;
    size_t ctx_rows = (size_t)s->batch * s->tq, ctx_size = ctx_rows * s->ldc;
    int use_drop = drop->p > 0.0f;

    /* the CPU reference, whose ctx gaps keep GAP_VALUE */
    float *probs = malloc(sizeof(float) * (weights > 0 ? weights : 1));
    float *dropped = use_drop ? malloc(sizeof(float) * weights) : NULL;
    float *ctx = malloc(sizeof(float) * ctx_size);
    for (size_t i = 0; i < ctx_size; i++)
        ctx[i] = GAP_VALUE;
    float *ctx_init = malloc(sizeof(float) * ctx_size);
    memcpy(ctx_init, ctx, sizeof(float) * ctx_size);
    poison_columns(ctx_init, ctx_rows, s->ldc, 0, HK);
    cpu_be->attention_forward(s, c->q_buf + c->q_offset, c->kv_buf + c->k_offset,
                              c->kv_buf + c->v_offset, bias, key_mask, probs, dropped, ctx,
                              drop);

    /* CUDA, into poisoned outputs */
    float *bias_dev = bias != NULL ? device_copy(bias, (size_t)s->heads * s->tq * s->tk) : NULL;
    float *probs_dev = device_poisoned(weights);
    float *dropped_dev = use_drop ? device_poisoned(weights) : NULL;
    float *ctx_dev = device_copy(ctx_init, ctx_size);
    cuda_be->attention_forward(s, c->q_dev + c->q_offset, c->kv_dev + c->k_offset,
                               c->kv_dev + c->v_offset, bias_dev, key_mask, probs_dev,
                               dropped_dev, ctx_dev, drop);

    CHECK_DEVICE_NEAR(probs_dev, probs, weights, tol, "probs");
    if (use_drop)
        CHECK_DEVICE_NEAR(dropped_dev, dropped, weights, tol, "dropped");
    CHECK_DEVICE_NEAR(ctx_dev, ctx, ctx_size, tol, "ctx");
    float *got = host_copy(probs_dev, weights);

    if (cpu_probs_out != NULL)
        *cpu_probs_out = probs;
    else
        free(probs);
    if (cpu_dropped_out != NULL)
        *cpu_dropped_out = dropped;
    else
        free(dropped);
    free(ctx);
    free(ctx_init);
    if (bias_dev != NULL)
        cuda_be->free(bias_dev);
    cuda_be->free(probs_dev);
    if (dropped_dev != NULL)
        cuda_be->free(dropped_dev);
    cuda_be->free(ctx_dev);
    return got;
}

/* Runs the CPU forward, then attention_backward on both backends from its
 * probs and dropped, and compares dq, dk, dv and (when with_dbias) dbias,
 * which starts from the same random values on both. */
static void check_attention_backward(const struct attention_case *c, const float *bias,
                                     const int32_t *key_mask, const struct dropout_spec *drop,
                                     int with_dbias, double tol)
{
    const struct attention_shape *s = &c->s;
    int HK = s->heads * s->d_kv;
    size_t weights = (size_t)s->batch * s->heads * s->tq * s->tk;
    size_t bias_size = (size_t)s->heads * s->tq * s->tk;
    size_t q_rows = (size_t)s->batch * s->tq, kv_rows = (size_t)s->batch * s->tk;
    int self = c->kv_buf == c->q_buf;
    int use_drop = drop->p > 0.0f;

    /* the forward's weights, from the CPU, as the inputs of both */
    float *probs, *dropped;
    float *probs_got = check_attention_forward(c, bias, key_mask, drop, CUDA_TOL_FP32, &probs,
                                            &dropped);
    free(probs_got);
    float *probs_dev = device_copy(probs, weights);
    float *dropped_dev = use_drop ? device_copy(dropped, weights) : NULL;
    size_t dctx_size = q_rows * s->ldc;
    float *dctx = host_uniform(dctx_size, 901, -1.0f, 1.0f);
    float *dctx_dev = device_copy(dctx, dctx_size);

    /* gradient buffers in the layouts of q and of k, v, which for
     * self-attention are one buffer */
    float *dq = malloc(sizeof(float) * c->q_size);
    float *dkv = self ? dq : malloc(sizeof(float) * c->kv_size);
    for (size_t i = 0; i < c->q_size; i++)
        dq[i] = GAP_VALUE;
    for (size_t i = 0; !self && i < c->kv_size; i++)
        dkv[i] = GAP_VALUE;
    float *dq_init = malloc(sizeof(float) * c->q_size);
    memcpy(dq_init, dq, sizeof(float) * c->q_size);
    poison_columns(dq_init, q_rows, s->ldq, (int)c->q_offset, HK);
    float *dkv_init = dq_init;
    if (!self) {
        dkv_init = malloc(sizeof(float) * c->kv_size);
        memcpy(dkv_init, dkv, sizeof(float) * c->kv_size);
    }
    poison_columns(dkv_init, kv_rows, s->ldk, (int)c->k_offset, HK);
    poison_columns(dkv_init, kv_rows, s->ldv, (int)c->v_offset, HK);
    float *dq_dev = device_copy(dq_init, c->q_size);
    float *dkv_dev = self ? dq_dev : device_copy(dkv_init, c->kv_size);

    float *dbias = with_dbias ? host_uniform(bias_size, 902, -1.0f, 1.0f) : NULL;
    float *dbias_dev = with_dbias ? device_copy(dbias, bias_size) : NULL;
    float *scratch = malloc(sizeof(float) * weights);
    float *scratch_dev = device_poisoned(weights);

    cpu_be->attention_backward(s, c->q_buf + c->q_offset, c->kv_buf + c->k_offset,
                               c->kv_buf + c->v_offset, probs, dropped, dctx,
                               dq + c->q_offset, dkv + c->k_offset, dkv + c->v_offset, dbias,
                               scratch, drop);
    cuda_be->attention_backward(s, c->q_dev + c->q_offset, c->kv_dev + c->k_offset,
                                c->kv_dev + c->v_offset, probs_dev, dropped_dev, dctx_dev,
                                dq_dev + c->q_offset, dkv_dev + c->k_offset,
                                dkv_dev + c->v_offset, dbias_dev, scratch_dev, drop);

    CHECK_DEVICE_NEAR(dq_dev, dq, c->q_size, tol, self ? "dq, dk, dv" : "dq");
    if (!self)
        CHECK_DEVICE_NEAR(dkv_dev, dkv, c->kv_size, tol, "dk, dv");
    if (with_dbias)
        CHECK_DEVICE_NEAR(dbias_dev, dbias, bias_size, tol, "dbias");

    free(probs);
    free(dropped);
    free(dctx);
    free(dq);
    free(dq_init);
    if (!self) {
        free(dkv);
        free(dkv_init);
        cuda_be->free(dkv_dev);
    }
    free(dbias);
    free(scratch);
    cuda_be->free(probs_dev);
    if (dropped_dev != NULL)
        cuda_be->free(dropped_dev);
    cuda_be->free(dctx_dev);
    cuda_be->free(dq_dev);
    if (dbias_dev != NULL)
        cuda_be->free(dbias_dev);
    cuda_be->free(scratch_dev);
}

static const struct dropout_spec no_dropout = { 0.0f, 0, 0 };

/* ---- position bias ------------------------------------------------------- */

static void test_position_bias_forward(void)
{
    SKIP_WITHOUT_GPU();
    int heads = 3, tq = 6, tk = 9, buckets_count = 8;
    float *table = host_uniform((size_t)buckets_count * heads, 11, -1.0f, 1.0f);
    int32_t *buckets = malloc(sizeof(int32_t) * tq * tk);
    for (int i = 0; i < tq * tk; i++)
        buckets[i] = (int32_t)(rng_uniform(12, i) * buckets_count);
    size_t n = (size_t)heads * tq * tk;
    float *bias = malloc(sizeof(float) * n);
    cpu_be->position_bias_forward(table, buckets, heads, tq, tk, bias);

    float *table_dev = device_copy(table, (size_t)buckets_count * heads);
    float *bias_dev = device_poisoned(n);
    cuda_be->position_bias_forward(table_dev, buckets, heads, tq, tk, bias_dev);
    CHECK_DEVICE_NEAR(bias_dev, bias, n, CUDA_TOL_FP32, "bias");

    /* one query row against every key, as a decoding step uses it */
    float *row_dev = device_poisoned((size_t)heads * tk);
    cuda_be->position_bias_forward(table_dev, buckets + 2 * tk, heads, 1, tk, row_dev);
    float *row = malloc(sizeof(float) * heads * tk);
    cpu_be->position_bias_forward(table, buckets + 2 * tk, heads, 1, tk, row);
    CHECK_DEVICE_NEAR(row_dev, row, (size_t)heads * tk, CUDA_TOL_FP32, "one-row bias");

    free(table);
    free(buckets);
    free(bias);
    free(row);
    cuda_be->free(table_dev);
    cuda_be->free(bias_dev);
    cuda_be->free(row_dev);
}

static void test_position_bias_backward(void)
{
    SKIP_WITHOUT_GPU();
    /* the table has more buckets than the positions use, and bucket 3 is
     * unused, so those rows of dtable must stay as they were */
    int heads = 3, tq = 7, tk = 11, table_buckets = 10;
    int32_t *buckets = malloc(sizeof(int32_t) * tq * tk);
    for (int i = 0; i < tq * tk; i++) {
        int b = (int)(rng_uniform(21, i) * 7);
        buckets[i] = b == 3 ? 6 : b;
    }
    size_t n = (size_t)heads * tq * tk, table_size = (size_t)table_buckets * heads;
    float *dbias = host_uniform(n, 22, -1.0f, 1.0f);
    float *dtable = host_uniform(table_size, 23, -1.0f, 1.0f);
    float *dbias_dev = device_copy(dbias, n);
    float *dtable_dev = device_copy(dtable, table_size);

    cpu_be->position_bias_backward(dbias, buckets, heads, tq, tk, dtable);
    cuda_be->position_bias_backward(dbias_dev, buckets, heads, tq, tk, dtable_dev);
    CHECK_DEVICE_NEAR(dtable_dev, dtable, table_size, CUDA_TOL_FP32, "dtable");

    /* a second call accumulates onto the first */
    cpu_be->position_bias_backward(dbias, buckets, heads, tq, tk, dtable);
    cuda_be->position_bias_backward(dbias_dev, buckets, heads, tq, tk, dtable_dev);
    CHECK_DEVICE_NEAR(dtable_dev, dtable, table_size, CUDA_TOL_FP32, "dtable, twice");

    free(buckets);
    free(dbias);
    free(dtable);
    cuda_be->free(dbias_dev);
    cuda_be->free(dtable_dev);
}

/* ---- forward ------------------------------------------------------------- */

static void test_attention_forward_plain(void)
{
    SKIP_WITHOUT_GPU();
    struct attention_case c;
    attention_case_init(&c, 2, 6, 6, 2, 4, 8, 0, 100);
    free(check_attention_forward(&c, NULL, NULL, &no_dropout, CUDA_TOL_FP32, NULL, NULL));
    attention_case_free(&c);
}

static void test_attention_forward_causal(void)
{
    SKIP_WITHOUT_GPU();
    struct attention_case c;
    attention_case_init(&c, 3, 7, 7, 2, 5, 10, 1, 110);
    float *bias = host_uniform((size_t)2 * 7 * 7, 111, -2.0f, 2.0f);
    int32_t *mask = random_key_mask(3, 7, 112);
    free(check_attention_forward(&c, bias, mask, &no_dropout, CUDA_TOL_FP32, NULL, NULL));
    free(bias);
    free(mask);
    attention_case_free(&c);
}

static void test_attention_forward_masked_row(void)
{
    SKIP_WITHOUT_GPU();
    /* sequence 1 has every key masked: its weights become uniform */
    int B = 2, T = 5, H = 2, K = 3;
    struct attention_case c;
    attention_case_init(&c, B, T, T, H, K, H * K, 0, 120);
    float *bias = host_uniform((size_t)H * T * T, 121, -1.0f, 1.0f);
    int32_t *mask = random_key_mask(B, T, 122);
    for (int j = 0; j < T; j++)
        mask[T + j] = 0;
    float *got = check_attention_forward(&c, bias, mask, &no_dropout, CUDA_TOL_FP32, NULL, NULL);
    size_t plane = (size_t)H * T * T;
    for (size_t i = 0; i < plane; i++)
        CHECK_NEAR(got[plane + i], 1.0f / T, 1e-6);
    free(got);
    free(bias);
    free(mask);
    attention_case_free(&c);
}

static void test_attention_forward_dropout(void)
{
    SKIP_WITHOUT_GPU();
    int B = 2, T = 9, H = 3, K = 4;
    struct attention_case c;
    attention_case_init(&c, B, T, T, H, K, H * K, 1, 130);
    float *bias = host_uniform((size_t)H * T * T, 131, -1.0f, 1.0f);
    int32_t *mask = random_key_mask(B, T, 132);
    /* an offset inside a Philox block of eight values */
    struct dropout_spec drop = { 0.1f, 133, 1003 };
    float *dropped;
    free(check_attention_forward(&c, bias, mask, &drop, CUDA_TOL_FP32, NULL, &dropped));

    /* the comparison above means something only if some weights dropped */
    size_t weights = (size_t)B * H * T * T, zeros = 0;
    for (size_t i = 0; i < weights; i++)
        zeros += dropped[i] == 0.0f;
    CHECK(zeros > 0);
    free(dropped);
    free(bias);
    free(mask);
    attention_case_free(&c);
}

static void test_attention_forward_cross(void)
{
    SKIP_WITHOUT_GPU();
    /* Tq != Tk, strides above H*K, ctx rows with a gap, and rows longer than
     * one block of threads */
    int B = 2, Tq = 3, Tk = 300, H = 2, K = 4;
    struct attention_case c;
    attention_case_init(&c, B, Tq, Tk, H, K, H * K + 3, 0, 140);
    int32_t *mask = random_key_mask(B, Tk, 141);
    free(check_attention_forward(&c, NULL, mask, &no_dropout, CUDA_TOL_FP32, NULL, NULL));
    free(mask);
    attention_case_free(&c);
}

/* Runs one forward with the GEMMs at a lower precision, against that
 * precision's tolerance, and restores float32. */
static void check_forward_precision(enum cuda_precision precision, double tol)
{
    int B = 2, T = 8, H = 2, K = 8;
    struct attention_case c;
    attention_case_init(&c, B, T, T, H, K, H * K, 1, 150);
    float *bias = host_uniform((size_t)H * T * T, 151, -1.0f, 1.0f);
    backend_cuda_set_precision(precision);
    free(check_attention_forward(&c, bias, NULL, &no_dropout, tol, NULL, NULL));
    backend_cuda_set_precision(CUDA_PRECISION_FP32);
    free(bias);
    attention_case_free(&c);
}

static void test_attention_forward_tf32(void)
{
    SKIP_WITHOUT_GPU();
    check_forward_precision(CUDA_PRECISION_TF32, CUDA_TOL_TF32);
}

static void test_attention_forward_bf16(void)
{
    SKIP_WITHOUT_GPU();
    check_forward_precision(CUDA_PRECISION_BF16, CUDA_TOL_BF16);
}

/* ---- backward ------------------------------------------------------------ */

static void test_attention_backward_plain(void)
{
    SKIP_WITHOUT_GPU();
    struct attention_case c;
    attention_case_init(&c, 2, 6, 6, 2, 4, 8, 1, 200);
    check_attention_backward(&c, NULL, NULL, &no_dropout, 0, CUDA_TOL_FP32);
    attention_case_free(&c);
}

static void test_attention_backward_dbias(void)
{
    SKIP_WITHOUT_GPU();
    int B = 3, T = 7, H = 2, K = 5;
    struct attention_case c;
    attention_case_init(&c, B, T, T, H, K, H * K, 1, 210);
    float *bias = host_uniform((size_t)H * T * T, 211, -1.0f, 1.0f);
    int32_t *mask = random_key_mask(B, T, 212);
    check_attention_backward(&c, bias, mask, &no_dropout, 1, CUDA_TOL_FP32);
    free(bias);
    free(mask);
    attention_case_free(&c);
}

static void test_attention_backward_dropout(void)
{
    SKIP_WITHOUT_GPU();
    int B = 2, T = 9, H = 3, K = 4;
    struct attention_case c;
    attention_case_init(&c, B, T, T, H, K, H * K, 0, 220);
    float *bias = host_uniform((size_t)H * T * T, 221, -1.0f, 1.0f);
    int32_t *mask = random_key_mask(B, T, 222);
    struct dropout_spec drop = { 0.1f, 223, 77 };
    check_attention_backward(&c, bias, mask, &drop, 1, CUDA_TOL_FP32);
    free(bias);
    free(mask);
    attention_case_free(&c);
}

static void test_attention_backward_cross(void)
{
    SKIP_WITHOUT_GPU();
    int B = 2, Tq = 4, Tk = 6, H = 2, K = 3;
    struct attention_case c;
    attention_case_init(&c, B, Tq, Tk, H, K, H * K, 0, 230);
    int32_t *mask = random_key_mask(B, Tk, 231);
    check_attention_backward(&c, NULL, mask, &no_dropout, 0, CUDA_TOL_FP32);
    free(mask);
    attention_case_free(&c);
}

/* ---- decoding ------------------------------------------------------------ */

/* n queries against a cache of `entries_count` entries of `positions`
 * positions, [entries, positions, 2*H*K] with keys then values, reading the
 * first tk. The optional arguments are host arrays. */
static void check_attention_decode(int n, int entries_count, int positions, int tk, int heads,
                                   int d_kv, const int32_t *entries, const float *bias,
                                   const int32_t *key_mask)
{
    int HK = heads * d_kv;
    struct decode_attention_shape s = { n, tk, heads, d_kv, HK, 2 * HK,
                                        (size_t)positions * 2 * HK, HK };
    size_t cache_size = (size_t)entries_count * positions * 2 * HK;
    size_t q_size = (size_t)n * HK, weights = (size_t)n * heads * tk;
    float *cache = host_uniform(cache_size, 300, -1.0f, 1.0f);
    float *q = host_uniform(q_size, 301, -1.0f, 1.0f);
    float *probs = malloc(sizeof(float) * weights);
    float *ctx = malloc(sizeof(float) * q_size);
    cpu_be->attention_decode(&s, q, cache, cache + HK, entries, bias, key_mask, probs, ctx);

    float *cache_dev = device_copy(cache, cache_size);
    float *q_dev = device_copy(q, q_size);
    float *bias_dev = bias != NULL ? device_copy(bias, (size_t)heads * tk) : NULL;
    float *probs_dev = device_poisoned(weights);
    float *ctx_dev = device_poisoned(q_size);
    cuda_be->attention_decode(&s, q_dev, cache_dev, cache_dev + HK, entries, bias_dev,
                              key_mask, probs_dev, ctx_dev);
    CHECK_DEVICE_NEAR(probs_dev, probs, weights, CUDA_TOL_FP32, "probs");
    CHECK_DEVICE_NEAR(ctx_dev, ctx, q_size, CUDA_TOL_FP32, "ctx");

    free(cache);
    free(q);
    free(probs);
    free(ctx);
    cuda_be->free(cache_dev);
    cuda_be->free(q_dev);
    if (bias_dev != NULL)
        cuda_be->free(bias_dev);
    cuda_be->free(probs_dev);
    cuda_be->free(ctx_dev);
}

static void test_attention_decode_plain(void)
{
    SKIP_WITHOUT_GPU();
    /* query i reads entry i, at a first step (tk = 1) and at a later one */
    check_attention_decode(3, 3, 10, 1, 2, 4, NULL, NULL, NULL);
    check_attention_decode(3, 3, 10, 7, 2, 4, NULL, NULL, NULL);
}

static void test_attention_decode_entries(void)
{
    SKIP_WITHOUT_GPU();
    /* five queries over four entries, with two pairs sharing an entry.
     * Entry 3's keys are all masked, and no query reads entry 1. */
    int n = 5, entries_count = 4, positions = 12, tk = 9, H = 3, K = 4;
    int32_t entries[5] = { 2, 0, 2, 3, 0 };
    float *bias = host_uniform((size_t)H * tk, 310, -1.0f, 1.0f);
    int32_t *mask = random_key_mask(entries_count, tk, 311);
    for (int j = 0; j < tk; j++)
        mask[3 * tk + j] = 0;
    check_attention_decode(n, entries_count, positions, tk, H, K, entries, bias, mask);
    check_attention_decode(n, entries_count, positions, tk, H, K, entries, NULL, mask);
    check_attention_decode(n, entries_count, positions, tk, H, K, entries, bias, NULL);
    free(bias);
    free(mask);
}

static void test_attention_decode_long(void)
{
    SKIP_WITHOUT_GPU();
    /* more keys than one block has threads, and d_kv longer than tk */
    check_attention_decode(2, 2, 300, 290, 2, 8, NULL, NULL, NULL);
    check_attention_decode(2, 2, 4, 3, 1, 40, NULL, NULL, NULL);
}

int main(void)
{
    CUDA_TEST_SUITE("cuda_attention");
    RUN_TEST(position_bias_forward);
    RUN_TEST(position_bias_backward);
    RUN_TEST(attention_forward_plain);
    RUN_TEST(attention_forward_causal);
    RUN_TEST(attention_forward_masked_row);
    RUN_TEST(attention_forward_dropout);
    RUN_TEST(attention_forward_cross);
    RUN_TEST(attention_forward_tf32);
    RUN_TEST(attention_forward_bf16);
    RUN_TEST(attention_backward_plain);
    RUN_TEST(attention_backward_dbias);
    RUN_TEST(attention_backward_dropout);
    RUN_TEST(attention_backward_cross);
    RUN_TEST(attention_decode_plain);
    RUN_TEST(attention_decode_entries);
    RUN_TEST(attention_decode_long);
    TEST_MAIN_END();
}
