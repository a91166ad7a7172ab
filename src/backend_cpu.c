/* CPU backend: the reference implementation of every operation.
 *
 * GEMMs go to OpenBLAS; loops over rows use OpenMP. Reductions that decide a
 * loss accumulate in double so that the result does not depend on the number
 * of threads beyond float rounding of the inputs. */
#include "backend.h"

#include <cblas.h>
#include <float.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#ifdef _OPENMP
#include <omp.h>
#endif

#include "config.h"
#include "rng.h"

/* Below this many multiply-adds a loop is not worth a parallel region. */
#define PARALLEL_MIN_WORK 32768

static void *cpu_alloc(size_t bytes)
{
    /* 64-byte alignment for vector loads; rounded up as aligned_alloc requires. */
    size_t rounded = (bytes + 63) / 64 * 64;
    void *p = aligned_alloc(64, rounded > 0 ? rounded : 64);
    if (p != NULL)
        memset(p, 0, rounded > 0 ? rounded : 64);
    return p;
}

static void cpu_free(void *ptr)
{
    free(ptr);
}

static void cpu_zero(void *ptr, size_t bytes)
{
    memset(ptr, 0, bytes);
}

static void cpu_copy(void *dst, const void *src, size_t bytes)
{
    memmove(dst, src, bytes);
}

static void cpu_gemm(int trans_a, int trans_b, int m, int n, int k, float alpha, const float *a,
                     int lda, const float *b, int ldb, float beta, float *c, int ldc)
{
    if (m == 0 || n == 0)
        return;
    if (k == 0) {
        for (int i = 0; i < m; i++)
            for (int j = 0; j < n; j++)
                c[(size_t)i * ldc + j] = beta == 0.0f ? 0.0f : beta * c[(size_t)i * ldc + j];
        return;
    }
    cblas_sgemm(CblasRowMajor, trans_a ? CblasTrans : CblasNoTrans,
                trans_b ? CblasTrans : CblasNoTrans, m, n, k, alpha, a, lda, b, ldb, beta, c,
                ldc);
}

static void cpu_grouped_gemm_nt(int groups, const int *offsets, int n, int k, const float *a,
                                const float *w, size_t w_stride, float *c)
{
    for (int g = 0; g < groups; g++) {
        int rows = offsets[g + 1] - offsets[g];
        if (rows == 0)
            continue;
        cpu_gemm(0, 1, rows, n, k, 1.0f, a + (size_t)offsets[g] * k, k, w + g * w_stride, k,
                 0.0f, c + (size_t)offsets[g] * n, n);
    }
}

static void cpu_grouped_gemm_nn(int groups, const int *offsets, int n, int k, const float *a,
                                const float *w, size_t w_stride, float *c)
{
    for (int g = 0; g < groups; g++) {
        int rows = offsets[g + 1] - offsets[g];
        if (rows == 0)
            continue;
        cpu_gemm(0, 0, rows, n, k, 1.0f, a + (size_t)offsets[g] * k, k, w + g * w_stride, n,
                 0.0f, c + (size_t)offsets[g] * n, n);
    }
}

static void cpu_grouped_gemm_tn(int groups, const int *offsets, int m, int n, const float *dy,
                                const float *x, float *dw, size_t dw_stride)
{
    for (int g = 0; g < groups; g++) {
        int rows = offsets[g + 1] - offsets[g];
        if (rows == 0)
            continue;
        cpu_gemm(1, 0, m, n, rows, 1.0f, dy + (size_t)offsets[g] * m, m,
                 x + (size_t)offsets[g] * n, n, 1.0f, dw + g * dw_stride, n);
    }
}

static void cpu_add(float *y, const float *x, size_t n)
{
#pragma omp parallel for schedule(static) if (n > PARALLEL_MIN_WORK)
    for (size_t i = 0; i < n; i++)
        y[i] += x[i];
}

static void cpu_scale(float *y, float alpha, size_t n)
{
#pragma omp parallel for schedule(static) if (n > PARALLEL_MIN_WORK)
    for (size_t i = 0; i < n; i++)
        y[i] *= alpha;
}


static void cpu_relu_backward(const float *y, float *dy, size_t n, float scale)
{
#pragma omp parallel for schedule(static) if (n > PARALLEL_MIN_WORK)
    for (size_t i = 0; i < n; i++)
        dy[i] = y[i] > 0.0f ? dy[i] * scale : 0.0f;
}

/* Dropout keep threshold: element i is kept when its 16-bit random value is at
 * least p * 65536, rounded up. One Philox block gives eight such values. */
static uint32_t dropout_threshold(float p)
{
    double t = ceil((double)p * 65536.0);
    return t > 65536.0 ? 65536u : (uint32_t)t;
}

/* dst[i] = x[i] + dropout(y[i]) for the elements first .. first + n - 1 of
 * the stream, serially; x NULL means 0 (plain dropout). With relu set, y[i]
 * goes through ReLU first. */
static void dropout_range_add(float *dst, const float *x, const float *y, size_t n,
                              uint64_t seed, uint64_t first, uint32_t threshold,
                              float keep_scale, int relu)
{
    uint64_t last = first + n;
    for (uint64_t block = first >> 3; block < (last + 7) >> 3; block++) {
        uint32_t w[4];
        philox4x32(seed, block, w);
        /* the block's eight keep factors, then the elements it covers */
        float factor[8];
        for (int lane = 0; lane < 8; lane++) {
            uint32_t value = lane & 1 ? w[lane >> 1] >> 16 : w[lane >> 1] & 0xffffu;
            factor[lane] = value >= threshold ? keep_scale : 0.0f;
        }
        uint64_t begin = block * 8 < first ? first : block * 8;
        uint64_t end = block * 8 + 8 > last ? last : block * 8 + 8;
        size_t i0 = (size_t)(begin - first), count = (size_t)(end - begin);
        const float *f = factor + (begin & 7);
        if (relu) {
            for (size_t k = 0; k < count; k++)
                dst[i0 + k] = (y[i0 + k] > 0.0f ? y[i0 + k] : 0.0f) * f[k];
        } else if (x != NULL) {
            for (size_t k = 0; k < count; k++)
                dst[i0 + k] = x[i0 + k] + y[i0 + k] * f[k];
        } else {
            for (size_t k = 0; k < count; k++)
                dst[i0 + k] = y[i0 + k] * f[k];
        }
    }
}

static void dropout_range(float *x, size_t n, uint64_t seed, uint64_t first,
                          uint32_t threshold, float keep_scale)
{
    dropout_range_add(x, NULL, x, n, seed, first, threshold, keep_scale, 0);
}

/* dst = x + dropout(y) over n values (dropout(ReLU(y)) with relu set), in
 * chunks of whole Philox blocks so that the threads draw disjoint blocks. */
static void dropout_apply(float *dst, const float *x, const float *y, size_t n,
                          const struct dropout_spec *spec, int relu)
{
    uint32_t threshold = dropout_threshold(spec->p);
    float keep_scale = 1.0f / (1.0f - spec->p);
    size_t chunk = 8192;
    size_t chunks = (n + chunk - 1) / chunk;
#pragma omp parallel for schedule(static) if (n > PARALLEL_MIN_WORK / 4)
    for (size_t c = 0; c < chunks; c++) {
        size_t begin = c * chunk;
        size_t count = n - begin < chunk ? n - begin : chunk;
        dropout_range_add(dst + begin, x != NULL ? x + begin : NULL, y + begin, count,
                          spec->seed, spec->offset + begin, threshold, keep_scale, relu);
    }
}

static void cpu_dropout(float *x, size_t n, const struct dropout_spec *spec)
{
    if (spec == NULL || spec->p <= 0.0f)
        return;
    dropout_apply(x, NULL, x, n, spec, 0);
}

static void cpu_relu_forward(float *x, size_t n, const struct dropout_spec *spec)
{
    if (spec != NULL && spec->p > 0.0f) {
        dropout_apply(x, NULL, x, n, spec, 1);
        return;
    }
#pragma omp parallel for schedule(static) if (n > PARALLEL_MIN_WORK)
    for (size_t i = 0; i < n; i++)
        x[i] = x[i] > 0.0f ? x[i] : 0.0f;
}

static void cpu_dropout_copy(float *dst, const float *src, size_t n,
                             const struct dropout_spec *spec)
{
    if (spec == NULL || spec->p <= 0.0f) {
        if (dst != src)
            memmove(dst, src, sizeof(float) * n);
        return;
    }
    dropout_apply(dst, NULL, src, n, spec, 0);
}

static void cpu_dropout_add(float *dst, const float *x, const float *y, size_t n,
                            const struct dropout_spec *spec)
{
    if (spec == NULL || spec->p <= 0.0f) {
#pragma omp parallel for schedule(static) if (n > PARALLEL_MIN_WORK)
        for (size_t i = 0; i < n; i++)
            dst[i] = x[i] + y[i];
        return;
    }
    dropout_apply(dst, x, y, n, spec, 0);
}

static void cpu_jitter(float *x, size_t n, float eps, uint64_t seed, uint64_t offset,
                       int divide)
{
    /* value i uses rng_uniform(seed, offset + i): word (offset + i) % 4 of
     * block (offset + i) / 4, so each block serves four values */
    uint64_t first = offset, last = offset + n;
    uint64_t block_begin = first >> 2, block_end = (last + 3) >> 2;
#pragma omp parallel for schedule(static) if (n > PARALLEL_MIN_WORK / 16)
    for (uint64_t block = block_begin; block < block_end; block++) {
        float u[4];
        rng_uniform4(seed, block, u);
        uint64_t begin = block * 4 < first ? first : block * 4;
        uint64_t end = block * 4 + 4 > last ? last : block * 4 + 4;
        for (uint64_t index = begin; index < end; index++) {
            float factor = 1.0f - eps + 2.0f * eps * u[index & 3];
            size_t i = (size_t)(index - first);
            x[i] = divide ? x[i] / factor : x[i] * factor;
        }
    }
}

static void cpu_embedding_forward(const float *table, const int32_t *ids, int n, int d,
                                  float *out)
{
#pragma omp parallel for schedule(static) if ((size_t)n * d > PARALLEL_MIN_WORK)
    for (int i = 0; i < n; i++)
        memcpy(out + (size_t)i * d, table + (size_t)ids[i] * d, sizeof(float) * d);
}

static void cpu_embedding_backward(const float *dout, const int32_t *ids, int n, int d,
                                   float *dtable)
{
    /* Sequential: rows with the same id would race. */
    for (int i = 0; i < n; i++) {
        float *row = dtable + (size_t)ids[i] * d;
        const float *src = dout + (size_t)i * d;
        for (int j = 0; j < d; j++)
            row[j] += src[j];
    }
}

static void cpu_rmsnorm_forward(const float *x, const float *w, int rows, int d, float eps,
                                float *y, float *rinv)
{
#pragma omp parallel for schedule(static) if ((size_t)rows * d > PARALLEL_MIN_WORK)
    for (int r = 0; r < rows; r++) {
        const float *xr = x + (size_t)r * d;
        float *yr = y + (size_t)r * d;
        double sum = 0.0;
        for (int j = 0; j < d; j++)
            sum += (double)xr[j] * xr[j];
        float variance = (float)(sum / d);
        float inv = 1.0f / sqrtf(variance + eps);
        rinv[r] = inv;
        for (int j = 0; j < d; j++)
            yr[j] = w[j] * (xr[j] * inv);
    }
}

static void cpu_rmsnorm_backward(const float *dy, const float *x, const float *w,
                                 const float *rinv, int rows, int d, float *dx, float *dw)
{
    /* y_j = w_j x_j r with r = (mean(x^2) + eps)^-1/2, so
     * dx_j = r w_j dy_j - x_j r^3 / d * sum_k w_k dy_k x_k. */
#pragma omp parallel for schedule(static) if ((size_t)rows * d > PARALLEL_MIN_WORK)
    for (int r = 0; r < rows; r++) {
        const float *dyr = dy + (size_t)r * d;
        const float *xr = x + (size_t)r * d;
        float *dxr = dx + (size_t)r * d;
        double dot = 0.0;
        for (int j = 0; j < d; j++)
            dot += (double)w[j] * dyr[j] * xr[j];
        float inv = rinv[r];
        float coef = (float)(dot * inv * inv * inv / d);
        for (int j = 0; j < d; j++)
            dxr[j] += inv * w[j] * dyr[j] - xr[j] * coef;
    }
    /* The weight gradient sums over rows: each thread sums its rows into its
     * own row of partial sums, read in memory order, then the rows add up. */
    int threads = 1;
#ifdef _OPENMP
    if ((size_t)rows * d > PARALLEL_MIN_WORK)
        threads = omp_get_max_threads();
#endif
    double *partial = calloc((size_t)threads * d, sizeof(double));
    if (partial == NULL) {
        /* no memory for the partial sums: sum each column serially */
        for (int j = 0; j < d; j++) {
            double sum = 0.0;
            for (int r = 0; r < rows; r++)
                sum += (double)dy[(size_t)r * d + j] * x[(size_t)r * d + j] * rinv[r];
            dw[j] += (float)sum;
        }
        return;
    }
#pragma omp parallel num_threads(threads)
    {
        int id = 0;
#ifdef _OPENMP
        id = omp_get_thread_num();
#endif
        double *acc = partial + (size_t)id * d;
#pragma omp for schedule(static)
        for (int r = 0; r < rows; r++) {
            const float *dyr = dy + (size_t)r * d;
            const float *xr = x + (size_t)r * d;
            double inv = rinv[r];
            for (int j = 0; j < d; j++)
                acc[j] += (double)dyr[j] * xr[j] * inv;
        }
    }
    for (int j = 0; j < d; j++) {
        double sum = 0.0;
        for (int t = 0; t < threads; t++)
            sum += partial[(size_t)t * d + j];
        dw[j] += (float)sum;
    }
    free(partial);
}

static void cpu_position_bias_forward(const float *table, const int32_t *buckets, int heads,
                                      int tq, int tk, float *bias)
{
    for (int h = 0; h < heads; h++)
        for (int i = 0; i < tq; i++)
            for (int j = 0; j < tk; j++)
                bias[((size_t)h * tq + i) * tk + j] =
                    table[(size_t)buckets[(size_t)i * tk + j] * heads + h];
}

static void cpu_position_bias_backward(const float *dbias, const int32_t *buckets, int heads,
                                       int tq, int tk, float *dtable)
{
    for (int h = 0; h < heads; h++)
        for (int i = 0; i < tq; i++)
            for (int j = 0; j < tk; j++)
                dtable[(size_t)buckets[(size_t)i * tk + j] * heads + h] +=
                    dbias[((size_t)h * tq + i) * tk + j];
}

/* Offsets of head h of sequence b in the [B*T, H*K] layouts. */
static inline size_t head_offset(int b, int h, int t, int ld, int d_kv)
{
    return (size_t)b * t * ld + (size_t)h * d_kv;
}

/* Bias, masks and softmax of one row of scores. A masked score gets
 * -FLT_MAX added to its bias before the bias is added, as the reference
 * does, so that a row with every key masked becomes uniform, not NaN. */
static void attention_softmax_row(float *row, const float *bias_row, const int32_t *key_mask,
                                  int causal_limit, int tk)
{
    float max = -INFINITY;
    for (int j = 0; j < tk; j++) {
        float pb = bias_row != NULL ? bias_row[j] : 0.0f;
        if ((key_mask != NULL && key_mask[j] == 0) || j > causal_limit)
            pb += -FLT_MAX;
        row[j] += pb;
        if (row[j] > max)
            max = row[j];
    }
    float sum = 0.0f;
    for (int j = 0; j < tk; j++) {
        row[j] = expf(row[j] - max);
        sum += row[j];
    }
    float inv = 1.0f / sum;
    for (int j = 0; j < tk; j++)
        row[j] *= inv;
}

/* Each (sequence, head) pair is one task: its scores, softmax, dropout and
 * weighted sum stay in cache, and the GEMMs inside run on one thread (the
 * OpenMP build of OpenBLAS does not start threads inside a parallel region). */
static void cpu_attention_forward(const struct attention_shape *s, const float *q,
                                  const float *k, const float *v, const float *bias,
                                  const int32_t *key_mask, float *probs, float *dropped,
                                  float *ctx, const struct dropout_spec *drop)
{
    int B = s->batch, H = s->heads, Tq = s->tq, Tk = s->tk, K = s->d_kv;
    size_t plane = (size_t)Tq * Tk;
    int use_drop = drop != NULL && drop->p > 0.0f;
    uint32_t threshold = use_drop ? dropout_threshold(drop->p) : 0;
    float keep_scale = use_drop ? 1.0f / (1.0f - drop->p) : 1.0f;

#pragma omp parallel for schedule(dynamic) if ((size_t)B * H * plane * K > PARALLEL_MIN_WORK)
    for (int bh = 0; bh < B * H; bh++) {
        int b = bh / H, h = bh % H;
        float *p = probs + (size_t)bh * plane;

        /* scores = Q K^T */
        cpu_gemm(0, 1, Tq, Tk, K, 1.0f, q + head_offset(b, h, Tq, s->ldq, K), s->ldq,
                 k + head_offset(b, h, Tk, s->ldk, K), s->ldk, 0.0f, p, Tk);

        /* bias, masks, softmax */
        for (int i = 0; i < Tq; i++)
            attention_softmax_row(p + (size_t)i * Tk,
                                  bias != NULL ? bias + ((size_t)h * Tq + i) * Tk : NULL,
                                  key_mask != NULL ? key_mask + (size_t)b * Tk : NULL,
                                  s->causal ? i : Tk, Tk);

        /* dropout of the weights, then context = weights V */
        const float *weights = p;
        if (use_drop) {
            float *d = dropped + (size_t)bh * plane;
            memcpy(d, p, sizeof(float) * plane);
            dropout_range(d, plane, drop->seed, drop->offset + (uint64_t)bh * plane, threshold,
                          keep_scale);
            weights = d;
        }
        cpu_gemm(0, 0, Tq, K, Tk, 1.0f, weights, Tk, v + head_offset(b, h, Tk, s->ldv, K),
                 s->ldv, 0.0f, ctx + head_offset(b, h, Tq, s->ldc, K), s->ldc);
    }
}

/* Each (query, head) pair is one task. The scores and the weighted sum are
 * matrix-vector products. The softmax is attention_forward's, so the two
 * differ only by the rounding of the products. */
static void cpu_attention_decode(const struct decode_attention_shape *s, const float *q,
                                 const float *k, const float *v, const int32_t *entries,
                                 const float *bias, const int32_t *key_mask, float *probs,
                                 float *ctx)
{
    int n = s->queries, H = s->heads, Tk = s->tk, K = s->d_kv;

#pragma omp parallel for schedule(static) if ((size_t)n * H * Tk * K > PARALLEL_MIN_WORK)
    for (int ih = 0; ih < n * H; ih++) {
        int i = ih / H, h = ih % H;
        size_t entry = entries != NULL ? (size_t)entries[i] : (size_t)i;
        size_t base = entry * s->entry_stride + (size_t)h * K;
        float *p = probs + (size_t)ih * Tk;

        /* scores = K q, then bias, padding mask and softmax */
        cblas_sgemv(CblasRowMajor, CblasNoTrans, Tk, K, 1.0f, k + base, s->ldkv,
                    q + (size_t)i * s->ldq + (size_t)h * K, 1, 0.0f, p, 1);
        attention_softmax_row(p, bias != NULL ? bias + (size_t)h * Tk : NULL,
                              key_mask != NULL ? key_mask + entry * Tk : NULL, Tk, Tk);

        /* context = V^T weights */
        cblas_sgemv(CblasRowMajor, CblasTrans, Tk, K, 1.0f, v + base, s->ldkv, p, 1, 0.0f,
                    ctx + (size_t)i * s->ldc + (size_t)h * K, 1);
    }
}

static void cpu_attention_backward(const struct attention_shape *s, const float *q,
                                   const float *k, const float *v, const float *probs,
                                   const float *dropped, const float *dctx, float *dq,
                                   float *dk, float *dv, float *dbias, float *scratch,
                                   const struct dropout_spec *drop)
{
    int B = s->batch, H = s->heads, Tq = s->tq, Tk = s->tk, K = s->d_kv;
    size_t plane = (size_t)Tq * Tk;
    int use_drop = drop != NULL && drop->p > 0.0f;
    float keep_scale = use_drop ? 1.0f / (1.0f - drop->p) : 1.0f;

#pragma omp parallel for schedule(dynamic) if ((size_t)B * H * plane * K > PARALLEL_MIN_WORK)
    for (int bh = 0; bh < B * H; bh++) {
        int b = bh / H, h = bh % H;
        const float *p = probs + (size_t)bh * plane;
        const float *weights = use_drop ? dropped + (size_t)bh * plane : p;
        const float *dc = dctx + head_offset(b, h, Tq, s->ldc, K);
        float *ds = scratch + (size_t)bh * plane;

        /* dV = W^T dC and dW = dC V^T */
        cpu_gemm(1, 0, Tk, K, Tq, 1.0f, weights, Tk, dc, s->ldc, 0.0f,
                 dv + head_offset(b, h, Tk, s->ldv, K), s->ldv);
        cpu_gemm(0, 1, Tq, Tk, K, 1.0f, dc, s->ldc, v + head_offset(b, h, Tk, s->ldv, K),
                 s->ldv, 0.0f, ds, Tk);

        /* Through dropout, then the softmax: dS = P * (dP - sum_j dP_j P_j). The
         * dropout mask is read off the stored weights (a kept weight is
         * nonzero because softmax weights are positive) instead of drawn
         * again; a weight of 0 from a masked key has dS = 0 either way. */
        for (int i = 0; i < Tq; i++) {
            float *dsr = ds + (size_t)i * Tk;
            const float *pr = p + (size_t)i * Tk;
            if (use_drop) {
                const float *kept = weights + (size_t)i * Tk;
                for (int j = 0; j < Tk; j++)
                    dsr[j] = kept[j] != 0.0f ? dsr[j] * keep_scale : 0.0f;
            }
            double dot = 0.0;
            for (int j = 0; j < Tk; j++)
                dot += (double)dsr[j] * pr[j];
            for (int j = 0; j < Tk; j++)
                dsr[j] = pr[j] * (dsr[j] - (float)dot);
        }

        /* dQ = dS K and dK = dS^T Q */
        cpu_gemm(0, 0, Tq, K, Tk, 1.0f, ds, Tk, k + head_offset(b, h, Tk, s->ldk, K), s->ldk,
                 0.0f, dq + head_offset(b, h, Tq, s->ldq, K), s->ldq);
        cpu_gemm(1, 0, Tk, K, Tq, 1.0f, ds, Tk, q + head_offset(b, h, Tq, s->ldq, K), s->ldq,
                 0.0f, dk + head_offset(b, h, Tk, s->ldk, K), s->ldk);
    }

    /* the bias is shared by every sequence of the batch */
    if (dbias != NULL) {
#pragma omp parallel for schedule(static) if ((size_t)B * H * plane > PARALLEL_MIN_WORK)
        for (int hi = 0; hi < H * Tq; hi++) {
            int h = hi / Tq, i = hi % Tq;
            float *out = dbias + ((size_t)h * Tq + i) * Tk;
            for (int b = 0; b < B; b++) {
                const float *dsr = scratch + (((size_t)b * H + h) * Tq + i) * Tk;
                for (int j = 0; j < Tk; j++)
                    out[j] += dsr[j];
            }
        }
    }
}

static void cpu_route_top1(const struct route_shape *s, const float *logits,
                           int skipped_assigned, float *probs, int32_t *expert, int32_t *kept,
                           int32_t *assigned, float *pmax, int32_t *perm, int32_t *slot_of,
                           int *offsets, int64_t *kept_counts, int64_t *dropped_counts)
{
    int B = s->batch, T = s->tokens, E = s->experts;
    int n = B * T;

    /* softmax and argmax per token */
#pragma omp parallel for schedule(static) if ((size_t)n * E > PARALLEL_MIN_WORK)
    for (int t = 0; t < n; t++) {
        const float *l = logits + (size_t)t * E;
        float *p = probs + (size_t)t * E;
        float max = l[0];
        for (int e = 1; e < E; e++)
            if (l[e] > max)
                max = l[e];
        float sum = 0.0f;
        for (int e = 0; e < E; e++) {
            p[e] = expf(l[e] - max);
            sum += p[e];
        }
        float inv = 1.0f / sum;
        int best = 0;
        for (int e = 0; e < E; e++) {
            p[e] *= inv;
            if (p[e] > p[best])
                best = e;
        }
        expert[t] = best;
        pmax[t] = p[best];
    }

    /* capacity, per sequence in token order */
    int seen[CONFIG_MAX_EXPERTS];
    for (int e = 0; e < E; e++) {
        kept_counts[e] = 0;
        dropped_counts[e] = 0;
    }
    for (int b = 0; b < B; b++) {
        memset(seen, 0, sizeof(int) * E);
        for (int i = 0; i < T; i++) {
            int t = b * T + i;
            int e = expert[t];
            seen[e]++;
            kept[t] = seen[e] <= s->capacity;
            assigned[t] = kept[t] ? e : skipped_assigned;
            if (kept[t])
                kept_counts[e]++;
            else
                dropped_counts[e]++;
        }
    }

    /* dispatch: kept tokens grouped by expert, token order within a group */
    offsets[0] = 0;
    for (int e = 0; e < E; e++)
        offsets[e + 1] = offsets[e] + (int)kept_counts[e];
    int fill[CONFIG_MAX_EXPERTS];
    memcpy(fill, offsets, sizeof(int) * E);
    for (int t = 0; t < n; t++) {
        slot_of[t] = -1;
        if (kept[t]) {
            slot_of[t] = fill[expert[t]];
            perm[fill[expert[t]]++] = t;
        }
    }
}

static void cpu_gather_rows(const float *src, const int32_t *perm, int n, int d, float *dst)
{
#pragma omp parallel for schedule(static) if ((size_t)n * d > PARALLEL_MIN_WORK)
    for (int i = 0; i < n; i++)
        memcpy(dst + (size_t)i * d, src + (size_t)perm[i] * d, sizeof(float) * d);
}

static void cpu_scatter_add_rows(const float *src, const int32_t *perm, int n, int d,
                                 float *dst)
{
#pragma omp parallel for schedule(static) if ((size_t)n * d > PARALLEL_MIN_WORK)
    for (int i = 0; i < n; i++) {
        float *row = dst + (size_t)perm[i] * d;
        const float *s = src + (size_t)i * d;
        for (int j = 0; j < d; j++)
            row[j] += s[j];
    }
}

static void cpu_moe_combine(int n, int d, const float *y, const int32_t *slot_of,
                            const float *pmax, const float *x, int skip_identity, float *out)
{
#pragma omp parallel for schedule(static) if ((size_t)n * d > PARALLEL_MIN_WORK)
    for (int t = 0; t < n; t++) {
        float *o = out + (size_t)t * d;
        const float *src = NULL;
        if (slot_of[t] >= 0)
            src = y + (size_t)slot_of[t] * d;
        else if (skip_identity)
            src = x + (size_t)t * d;
        if (src == NULL) {
            memset(o, 0, sizeof(float) * d);
            continue;
        }
        for (int j = 0; j < d; j++)
            o[j] = pmax[t] * src[j];
    }
}

static void cpu_moe_combine_backward(int n, int d, const float *dout, const float *y,
                                     const int32_t *slot_of, const float *pmax,
                                     const float *x, int skip_identity, float *dy, float *dx,
                                     float *dpmax)
{
#pragma omp parallel for schedule(static) if ((size_t)n * d > PARALLEL_MIN_WORK)
    for (int t = 0; t < n; t++) {
        const float *g = dout + (size_t)t * d;
        const float *src = NULL;
        float *dst = NULL;
        if (slot_of[t] >= 0) {
            src = y + (size_t)slot_of[t] * d;
            dst = dy + (size_t)slot_of[t] * d;
        } else if (skip_identity) {
            src = x + (size_t)t * d;
        }
        if (src == NULL) {
            dpmax[t] = 0.0f;
            continue;
        }
        double dot = 0.0;
        for (int j = 0; j < d; j++)
            dot += (double)g[j] * src[j];
        dpmax[t] = (float)dot;
        if (dst != NULL) {
            for (int j = 0; j < d; j++)
                dst[j] = pmax[t] * g[j];
        } else {
            float *dxr = dx + (size_t)t * d;
            for (int j = 0; j < d; j++)
                dxr[j] += pmax[t] * g[j];
        }
    }
}

static void cpu_router_pmax_backward(int n, int experts, const float *probs,
                                     const int32_t *expert, const float *dpmax,
                                     float *dlogits)
{
    /* pmax = p_k with k = argmax; d p_k / d l_j = p_k ([j == k] - p_j). */
#pragma omp parallel for schedule(static) if ((size_t)n * experts > PARALLEL_MIN_WORK)
    for (int t = 0; t < n; t++) {
        const float *p = probs + (size_t)t * experts;
        float *dl = dlogits + (size_t)t * experts;
        int k = expert[t];
        float g = dpmax[t] * p[k];
        for (int j = 0; j < experts; j++)
            dl[j] += g * ((j == k ? 1.0f : 0.0f) - p[j]);
    }
}

static double cpu_router_z_loss(int n, int experts, const float *logits, double grad_scale,
                                float *dlogits)
{
    double total = 0.0;
#pragma omp parallel for schedule(static) reduction(+ : total) \
    if ((size_t)n * experts > PARALLEL_MIN_WORK)
    for (int t = 0; t < n; t++) {
        const float *l = logits + (size_t)t * experts;
        float *dl = dlogits + (size_t)t * experts;
        float max = l[0];
        for (int e = 1; e < experts; e++)
            if (l[e] > max)
                max = l[e];
        double sum = 0.0;
        for (int e = 0; e < experts; e++)
            sum += exp((double)l[e] - max);
        double lse = max + log(sum);
        total += lse * lse;
        /* d(lse^2)/dl_e = 2 lse softmax_e */
        for (int e = 0; e < experts; e++)
            dl[e] += (float)(grad_scale * 2.0 * lse * exp((double)l[e] - lse));
    }
    return total;
}

static void cpu_balance_accumulate(int batch, int tokens, int experts, const float *probs,
                                   const int32_t *assigned, double *counts, double *prob_sums)
{
    for (int b = 0; b < batch; b++)
        for (int i = 0; i < tokens; i++) {
            size_t t = (size_t)b * tokens + i;
            if (assigned[t] >= 0)
                counts[(size_t)b * experts + assigned[t]] += 1.0;
            for (int e = 0; e < experts; e++)
                prob_sums[(size_t)b * experts + e] += probs[t * experts + e];
        }
}

static void cpu_usage_accumulate(int n, int experts, const float *probs,
                                 const int32_t *expert, const int32_t *kept,
                                 const int32_t *mask, int64_t *kept_counts,
                                 int64_t *dropped_counts, double *prob_sums)
{
    for (int t = 0; t < n; t++) {
        if (mask != NULL && mask[t] == 0)
            continue;
        if (kept[t])
            kept_counts[expert[t]]++;
        else
            dropped_counts[expert[t]]++;
        for (int e = 0; e < experts; e++)
            prob_sums[e] += probs[(size_t)t * experts + e];
    }
}

static void cpu_balance_backward(int batch, int tokens, int experts, const float *probs,
                                 const double *dprob, float *dlogits)
{
    int n = batch * tokens;
#pragma omp parallel for schedule(static) if ((size_t)n * experts > PARALLEL_MIN_WORK)
    for (int t = 0; t < n; t++) {
        const float *p = probs + (size_t)t * experts;
        const double *g = dprob + (size_t)(t / tokens) * experts;
        float *dl = dlogits + (size_t)t * experts;
        double dot = 0.0;
        for (int e = 0; e < experts; e++)
            dot += g[e] * p[e];
        for (int e = 0; e < experts; e++)
            dl[e] += (float)(p[e] * (g[e] - dot));
    }
}

static double cpu_cross_entropy(int n, int vocab, const float *logits, const int32_t *labels,
                                float scale, float *dlogits)
{
    double total = 0.0;
#pragma omp parallel for schedule(static) reduction(+ : total) \
    if ((size_t)n * vocab > PARALLEL_MIN_WORK)
    for (int t = 0; t < n; t++) {
        const float *l = logits + (size_t)t * vocab;
        float *dl = dlogits + (size_t)t * vocab;
        if (labels[t] < 0) {
            memset(dl, 0, sizeof(float) * vocab);
            continue;
        }
        float max = l[0];
        for (int j = 1; j < vocab; j++)
            if (l[j] > max)
                max = l[j];
        /* exp in float, the sum in double: the vocabulary is the widest row */
        double sum = 0.0;
        for (int j = 0; j < vocab; j++) {
            dl[j] = expf(l[j] - max);
            sum += dl[j];
        }
        total += max + log(sum) - l[labels[t]];
        float factor = (float)(scale / sum);
        for (int j = 0; j < vocab; j++)
            dl[j] *= factor;
        dl[labels[t]] -= scale;
    }
    return total;
}

static void cpu_adamw(float *param, const float *grad, float *m, float *v, size_t n, float lr,
                      float beta1, float beta2, float eps, float weight_decay, long step)
{
    /* The order of torch.optim.AdamW (single-tensor path): decay the
     * parameter, update the moments, then step by lr / (1 - beta1^t) times
     * m / (sqrt(v) / sqrt(1 - beta2^t) + eps). */
    double bias1 = 1.0 - pow(beta1, (double)step);
    double bias2 = 1.0 - pow(beta2, (double)step);
    float step_size = (float)(lr / bias1);
    float bias2_sqrt = (float)sqrt(bias2);
    float decay = 1.0f - lr * weight_decay;
#pragma omp parallel for schedule(static) if (n > PARALLEL_MIN_WORK)
    for (size_t i = 0; i < n; i++) {
        float g = grad[i];
        param[i] *= decay;
        m[i] = beta1 * m[i] + (1.0f - beta1) * g;
        v[i] = beta2 * v[i] + (1.0f - beta2) * g * g;
        float denom = sqrtf(v[i]) / bias2_sqrt + eps;
        param[i] -= step_size * m[i] / denom;
    }
}

static double cpu_sum_squares(const float *x, size_t n)
{
    double total = 0.0;
#pragma omp parallel for schedule(static) reduction(+ : total) if (n > PARALLEL_MIN_WORK)
    for (size_t i = 0; i < n; i++)
        total += (double)x[i] * x[i];
    return total;
}

static const struct backend cpu_backend = {
    .name = "cpu",
    .alloc = cpu_alloc,
    .free = cpu_free,
    .zero = cpu_zero,
    .copy = cpu_copy,
    .upload = cpu_copy,
    .download = cpu_copy,
    .gemm = cpu_gemm,
    .grouped_gemm_nt = cpu_grouped_gemm_nt,
    .grouped_gemm_nn = cpu_grouped_gemm_nn,
    .grouped_gemm_tn = cpu_grouped_gemm_tn,
    .add = cpu_add,
    .scale = cpu_scale,
    .relu_forward = cpu_relu_forward,
    .relu_backward = cpu_relu_backward,
    .dropout = cpu_dropout,
    .dropout_copy = cpu_dropout_copy,
    .dropout_add = cpu_dropout_add,
    .jitter = cpu_jitter,
    .embedding_forward = cpu_embedding_forward,
    .embedding_backward = cpu_embedding_backward,
    .rmsnorm_forward = cpu_rmsnorm_forward,
    .rmsnorm_backward = cpu_rmsnorm_backward,
    .position_bias_forward = cpu_position_bias_forward,
    .position_bias_backward = cpu_position_bias_backward,
    .attention_forward = cpu_attention_forward,
    .attention_backward = cpu_attention_backward,
    .attention_decode = cpu_attention_decode,
    .route_top1 = cpu_route_top1,
    .gather_rows = cpu_gather_rows,
    .scatter_add_rows = cpu_scatter_add_rows,
    .moe_combine = cpu_moe_combine,
    .moe_combine_backward = cpu_moe_combine_backward,
    .router_pmax_backward = cpu_router_pmax_backward,
    .router_z_loss = cpu_router_z_loss,
    .balance_accumulate = cpu_balance_accumulate,
    .usage_accumulate = cpu_usage_accumulate,
    .balance_backward = cpu_balance_backward,
    .cross_entropy = cpu_cross_entropy,
    .adamw = cpu_adamw,
    .sum_squares = cpu_sum_squares,
};

const struct backend *backend_cpu(void)
{
    return &cpu_backend;
}

void backend_cpu_set_threads(int threads)
{
    if (threads <= 0)
        return;
    openblas_set_num_threads(threads);
#ifdef _OPENMP
    omp_set_num_threads(threads);
#endif
}
