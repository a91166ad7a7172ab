// Attention on the GPU: the relative position bias, the full-sequence
// forward and backward, and one-query decoding against a cache.
//
// The GEMMs of a call run as one batched cuBLAS call over every (sequence,
// head) pair. The softmax, the masks, the dropout and the softmax backward
// are row kernels: one block per row of scores, with block reductions in
// shared memory. The numerics follow backend_cpu.c (attention_softmax_row
// and its callers) step for step, so the two backends differ only by the
// order of float additions.
#include <float.h>
#include <math.h>
#include <stdlib.h>

#include "cuda_ops.h"

// ---- helpers --------------------------------------------------------------

// Threads per block of a row kernel: the smallest power of two from 32 to
// CUDA_THREADS that covers the row, so short rows leave few threads idle.
static unsigned row_threads(int length)
{
    unsigned threads = 32;
    while (threads < CUDA_THREADS && threads < (unsigned)length)
        threads *= 2;
    return threads;
}

// Blocks of a kernel that takes one block per row and loops over the rest.
static unsigned row_blocks(size_t rows)
{
    return rows > 65535 ? 65535u : (unsigned)rows;
}

// Allocates host memory for the pointer arrays and the bucket index. The
// backend's functions have no error return, so a failure ends the program as
// a failed CUDA call does.
static void *host_alloc(size_t bytes)
{
    void *p = malloc(bytes > 0 ? bytes : 1);
    if (p == NULL)
        cuda_check_at(cudaErrorMemoryAllocation, __FILE__, __LINE__, "malloc");
    return p;
}

// Fills out[b * heads + h] with the start of head h of sequence b in a
// [B*T, H*K] layout of row stride ld. The host computes these device
// addresses but never reads through them. Inputs lose their const here
// because one array type serves inputs and outputs.
static void head_pointers(float **out, const float *base, int batch, int heads, int t, int ld,
                          int d_kv)
{
    for (int b = 0; b < batch; b++)
        for (int h = 0; h < heads; h++)
            out[b * heads + h] =
                (float *)(base + (size_t)b * t * ld + (size_t)h * d_kv);
}

// Fills out[i] with the start of plane i of `count` planes of `plane` floats.
static void plane_pointers(float **out, const float *base, int count, size_t plane)
{
    for (int i = 0; i < count; i++)
        out[i] = (float *)(base + (size_t)i * plane);
}

// Applies bias, masks and softmax to one row of scores in place. The whole
// block calls it, and thread t owns elements t, t + blockDim.x, ... of the
// row. Key j is masked when mask_row[j] is 0 or j > causal_limit. A masked
// score gets -FLT_MAX added to its bias before the bias is added, as in the
// CPU backend, so a row with every key masked becomes uniform instead of NaN.
__device__ static void softmax_row(float *row, const float *bias_row, const int32_t *mask_row,
                                   int causal_limit, int tk, float *shared)
{
    float max = -INFINITY;
    for (int j = threadIdx.x; j < tk; j += blockDim.x) {
        float pb = bias_row != NULL ? bias_row[j] : 0.0f;
        if ((mask_row != NULL && mask_row[j] == 0) || j > causal_limit)
            pb += -FLT_MAX;
        float score = row[j] + pb;
        row[j] = score;
        max = fmaxf(max, score);
    }
    max = block_reduce_max(max, shared);

    float sum = 0.0f;
    for (int j = threadIdx.x; j < tk; j += blockDim.x) {
        float e = expf(row[j] - max);
        row[j] = e;
        sum += e;
    }
    sum = block_reduce_sum(sum, shared);

    float inv = 1.0f / sum;
    for (int j = threadIdx.x; j < tk; j += blockDim.x)
        row[j] *= inv;
}

// ---- position bias --------------------------------------------------------

// bias[h, i, j] = table[buckets[i, j], h] over heads planes of tq * tk.
__global__ static void position_bias_kernel(const float *table, const int32_t *buckets,
                                            int heads, size_t plane, float *bias)
{
    size_t n = (size_t)heads * plane;
    for (size_t idx = (size_t)blockIdx.x * blockDim.x + threadIdx.x; idx < n;
         idx += (size_t)gridDim.x * blockDim.x) {
        size_t h = idx / plane, ij = idx % plane;
        bias[idx] = table[(size_t)buckets[ij] * heads + h];
    }
}

void cuda_position_bias_forward(const float *table, const int32_t *buckets, int heads, int tq,
                                int tk, float *bias)
{
    size_t plane = (size_t)tq * tk;
    if (plane == 0 || heads == 0)
        return;
    const int32_t *d_buckets =
        (const int32_t *)cuda_upload_host(SLOT_BUCKETS, buckets, sizeof(int32_t) * plane);
    CUDA_LAUNCH(position_bias_kernel, cuda_grid((size_t)heads * plane, CUDA_THREADS),
                CUDA_THREADS, table, d_buckets, heads, plane, bias);
}

// One block per (bucket, head): sums dbias[h] over the positions of that
// bucket (positions[offsets[bucket] .. offsets[bucket + 1]]) and adds the
// sum to dtable[bucket, h]. Each table entry has one writer and a fixed
// order of additions, so the result does not vary from run to run as
// atomicAdd's would.
__global__ static void position_bias_backward_kernel(const float *dbias, const int32_t *index,
                                                     int buckets, int heads, size_t plane,
                                                     float *dtable)
{
    __shared__ double shared[CUDA_THREADS];
    const int32_t *offsets = index;
    const int32_t *positions = index + buckets + 1;
    for (size_t g = blockIdx.x; g < (size_t)buckets * heads; g += gridDim.x) {
        int bucket = (int)(g / heads), h = (int)(g % heads);
        const float *d = dbias + (size_t)h * plane;
        double sum = 0.0;
        for (int p = offsets[bucket] + (int)threadIdx.x; p < offsets[bucket + 1];
             p += blockDim.x)
            sum += d[positions[p]];
        sum = block_reduce_sum(sum, shared);
        if (threadIdx.x == 0)
            dtable[g] += (float)sum;
    }
}

void cuda_position_bias_backward(const float *dbias, const int32_t *buckets, int heads, int tq,
                                 int tk, float *dtable)
{
    size_t plane = (size_t)tq * tk;
    if (plane == 0 || heads == 0)
        return;

    // group the positions by bucket on the host, where the buckets are, into
    // one array: count + 1 offsets, then the positions of bucket 0, 1, ...
    int count = 0;
    for (size_t ij = 0; ij < plane; ij++)
        if (buckets[ij] + 1 > count)
            count = buckets[ij] + 1;
    int32_t *index = (int32_t *)host_alloc(sizeof(int32_t) * (count + 1 + plane));
    int32_t *offsets = index, *positions = index + count + 1;
    for (int b = 0; b <= count; b++)
        offsets[b] = 0;
    for (size_t ij = 0; ij < plane; ij++)
        offsets[buckets[ij] + 1]++;
    for (int b = 0; b < count; b++)
        offsets[b + 1] += offsets[b];
    for (size_t ij = 0; ij < plane; ij++)
        positions[offsets[buckets[ij]]++] = (int32_t)ij;
    // the fill advanced each offset to the next bucket's start, so shift back
    for (int b = count; b > 0; b--)
        offsets[b] = offsets[b - 1];
    offsets[0] = 0;

    const int32_t *d_index = (const int32_t *)cuda_upload_host(
        SLOT_BUCKETS, index, sizeof(int32_t) * (count + 1 + plane));
    free(index);
    size_t groups = (size_t)count * heads;
    CUDA_LAUNCH_BLOCKS(position_bias_backward_kernel, row_blocks(groups), CUDA_THREADS, dbias,
                       d_index, count, heads, plane, dtable);
}

// ---- attention forward ----------------------------------------------------

// Turns row r = (b * heads + h) * tq + i of the scores in `probs` into its
// softmax weights. With dropout, `dropped` gets them after dropout, element j
// from stream index offset + r * tk + j.
__global__ static void attention_softmax_kernel(float *probs, float *dropped, const float *bias,
                                                const int32_t *key_mask, size_t rows, int tq,
                                                int tk, int heads, int causal, uint64_t seed,
                                                uint64_t offset, uint32_t threshold,
                                                float keep_scale)
{
    __shared__ float shared[CUDA_THREADS];
    for (size_t r = blockIdx.x; r < rows; r += gridDim.x) {
        size_t bh = r / tq;
        int i = (int)(r % tq), b = (int)(bh / heads), h = (int)(bh % heads);
        float *p = probs + r * tk;
        softmax_row(p, bias != NULL ? bias + ((size_t)h * tq + i) * tk : NULL,
                    key_mask != NULL ? key_mask + (size_t)b * tk : NULL, causal ? i : tk, tk,
                    shared);

        // each thread reads back only the weights it wrote
        if (dropped != NULL) {
            float *d = dropped + r * tk;
            uint64_t first = offset + (uint64_t)r * tk;
            for (int j = threadIdx.x; j < tk; j += blockDim.x)
                d[j] = p[j] * cuda_dropout_factor(seed, first + j, threshold, keep_scale);
        }
    }
}

void cuda_attention_forward(const struct attention_shape *s, const float *q, const float *k,
                            const float *v, const float *bias, const int32_t *key_mask,
                            float *probs, float *dropped, float *ctx,
                            const struct dropout_spec *drop)
{
    int B = s->batch, H = s->heads, Tq = s->tq, Tk = s->tk, K = s->d_kv;
    int count = B * H;
    size_t plane = (size_t)Tq * Tk;
    if (count == 0 || Tq == 0)
        return;
    int use_drop = drop != NULL && drop->p > 0.0f;
    float **ptrs = (float **)host_alloc(sizeof(float *) * 3 * count);
    float **a = ptrs, **b = ptrs + count, **c = ptrs + 2 * count;

    // scores = Q K^T
    head_pointers(a, q, B, H, Tq, s->ldq, K);
    head_pointers(b, k, B, H, Tk, s->ldk, K);
    plane_pointers(c, probs, count, plane);
    cuda_gemm_batched(0, 1, Tq, Tk, K, 1.0f, a, s->ldq, b, s->ldk, 0.0f, c, Tk, count);

    // bias, masks, softmax and dropout
    const int32_t *d_mask = NULL;
    if (key_mask != NULL)
        d_mask = (const int32_t *)cuda_upload_host(SLOT_MASK, key_mask,
                                                   sizeof(int32_t) * B * Tk);
    size_t rows = (size_t)count * Tq;
    CUDA_LAUNCH_BLOCKS(attention_softmax_kernel, row_blocks(rows), row_threads(Tk), probs,
                       use_drop ? dropped : (float *)NULL, bias, d_mask, rows, Tq, Tk, H,
                       s->causal, use_drop ? drop->seed : (uint64_t)0,
                       use_drop ? drop->offset : (uint64_t)0,
                       use_drop ? cuda_dropout_threshold(drop->p) : 0u,
                       use_drop ? 1.0f / (1.0f - drop->p) : 1.0f);

    // context = weights V
    plane_pointers(a, use_drop ? dropped : probs, count, plane);
    head_pointers(b, v, B, H, Tk, s->ldv, K);
    head_pointers(c, ctx, B, H, Tq, s->ldc, K);
    cuda_gemm_batched(0, 0, Tq, K, Tk, 1.0f, a, Tk, b, s->ldv, 0.0f, c, s->ldc, count);
    free(ptrs);
}

// ---- attention backward ---------------------------------------------------

// Turns row r of ds from dW, the gradient of the weights after dropout, into
// dS = P * (dP - sum_j dP_j P_j), with dP the gradient through dropout. The
// dropout mask is read off the stored weights (dropped, or NULL without
// dropout), because a kept weight is nonzero where softmax weights are
// positive, and a weight of 0 from a masked key has dS = 0 either way.
__global__ static void attention_softmax_backward_kernel(float *ds, const float *probs,
                                                         const float *dropped, size_t rows,
                                                         int tk, float keep_scale)
{
    __shared__ double shared[CUDA_THREADS];
    for (size_t r = blockIdx.x; r < rows; r += gridDim.x) {
        float *d = ds + r * tk;
        const float *p = probs + r * tk;
        double dot = 0.0;
        for (int j = threadIdx.x; j < tk; j += blockDim.x) {
            float g = d[j];
            if (dropped != NULL) {
                g = dropped[r * tk + j] != 0.0f ? g * keep_scale : 0.0f;
                d[j] = g;
            }
            dot += (double)g * p[j];
        }
        float total = (float)block_reduce_sum(dot, shared);
        for (int j = threadIdx.x; j < tk; j += blockDim.x)
            d[j] = p[j] * (d[j] - total);
    }
}

// dbias[idx] += ds[b][idx] for b = 0 .. batch - 1 in order, as the CPU adds
// them, over the `head_planes` floats of one sequence's [H, Tq, Tk].
__global__ static void attention_dbias_kernel(const float *ds, int batch, size_t head_planes,
                                              float *dbias)
{
    for (size_t idx = (size_t)blockIdx.x * blockDim.x + threadIdx.x; idx < head_planes;
         idx += (size_t)gridDim.x * blockDim.x) {
        float acc = dbias[idx];
        for (int b = 0; b < batch; b++)
            acc += ds[(size_t)b * head_planes + idx];
        dbias[idx] = acc;
    }
}

void cuda_attention_backward(const struct attention_shape *s, const float *q, const float *k,
                             const float *v, const float *probs, const float *dropped,
                             const float *dctx, float *dq, float *dk, float *dv, float *dbias,
                             float *scratch, const struct dropout_spec *drop)
{
    int B = s->batch, H = s->heads, Tq = s->tq, Tk = s->tk, K = s->d_kv;
    int count = B * H;
    size_t plane = (size_t)Tq * Tk;
    if (count == 0)
        return;
    int use_drop = drop != NULL && drop->p > 0.0f;
    const float *weights = use_drop ? dropped : probs;
    float **ptrs = (float **)host_alloc(sizeof(float *) * 3 * count);
    float **a = ptrs, **b = ptrs + count, **c = ptrs + 2 * count;

    // dV = W^T dC
    plane_pointers(a, weights, count, plane);
    head_pointers(b, dctx, B, H, Tq, s->ldc, K);
    head_pointers(c, dv, B, H, Tk, s->ldv, K);
    cuda_gemm_batched(1, 0, Tk, K, Tq, 1.0f, a, Tk, b, s->ldc, 0.0f, c, s->ldv, count);

    // dW = dC V^T, into scratch
    head_pointers(a, dctx, B, H, Tq, s->ldc, K);
    head_pointers(b, v, B, H, Tk, s->ldv, K);
    plane_pointers(c, scratch, count, plane);
    cuda_gemm_batched(0, 1, Tq, Tk, K, 1.0f, a, s->ldc, b, s->ldv, 0.0f, c, Tk, count);

    // through dropout and the softmax, in place
    size_t rows = (size_t)count * Tq;
    if (rows > 0 && Tk > 0)
        CUDA_LAUNCH_BLOCKS(attention_softmax_backward_kernel, row_blocks(rows), row_threads(Tk),
                           scratch, probs, use_drop ? dropped : (const float *)NULL, rows, Tk,
                           use_drop ? 1.0f / (1.0f - drop->p) : 1.0f);

    // dQ = dS K
    plane_pointers(a, scratch, count, plane);
    head_pointers(b, k, B, H, Tk, s->ldk, K);
    head_pointers(c, dq, B, H, Tq, s->ldq, K);
    cuda_gemm_batched(0, 0, Tq, K, Tk, 1.0f, a, Tk, b, s->ldk, 0.0f, c, s->ldq, count);

    // dK = dS^T Q
    head_pointers(b, q, B, H, Tq, s->ldq, K);
    head_pointers(c, dk, B, H, Tk, s->ldk, K);
    cuda_gemm_batched(1, 0, Tk, K, Tq, 1.0f, a, Tk, b, s->ldq, 0.0f, c, s->ldk, count);
    free(ptrs);

    // the bias is shared by every sequence of the batch
    if (dbias != NULL && plane > 0) {
        size_t head_planes = (size_t)H * plane;
        CUDA_LAUNCH(attention_dbias_kernel, cuda_grid(head_planes, CUDA_THREADS), CUDA_THREADS,
                    (const float *)scratch, B, head_planes, dbias);
    }
}

// ---- decoding -------------------------------------------------------------

// One block per (query i, head h): scores of the query against the tk keys
// of its cache entry, bias, padding mask and softmax into probs, then the
// context. The products are short (d_kv long per key, tk long per output),
// so the kernel computes them itself instead of through cuBLAS.
__global__ static void attention_decode_kernel(const float *q, const float *k, const float *v,
                                               const int32_t *entries, const float *bias,
                                               const int32_t *key_mask, float *probs,
                                               float *ctx, int queries, int tk, int heads,
                                               int d_kv, int ldq, int ldkv, size_t entry_stride,
                                               int ldc)
{
    __shared__ float shared[CUDA_THREADS];
    for (size_t ih = blockIdx.x; ih < (size_t)queries * heads; ih += gridDim.x) {
        int i = (int)(ih / heads), h = (int)(ih % heads);
        size_t entry = entries != NULL ? (size_t)entries[i] : (size_t)i;
        size_t base = entry * entry_stride + (size_t)h * d_kv;
        const float *qr = q + (size_t)i * ldq + (size_t)h * d_kv;
        float *p = probs + ih * tk;

        // scores = K q
        for (int j = threadIdx.x; j < tk; j += blockDim.x) {
            const float *kr = k + base + (size_t)j * ldkv;
            float acc = 0.0f;
            for (int x = 0; x < d_kv; x++)
                acc += kr[x] * qr[x];
            p[j] = acc;
        }

        // bias, padding mask and softmax, without a causal mask because the
        // cache contains only earlier positions
        softmax_row(p, bias != NULL ? bias + (size_t)h * tk : NULL,
                    key_mask != NULL ? key_mask + entry * tk : NULL, tk, tk, shared);
        __syncthreads();

        // context = V^T weights; every thread reads the whole row of weights
        float *cr = ctx + (size_t)i * ldc + (size_t)h * d_kv;
        for (int x = threadIdx.x; x < d_kv; x += blockDim.x) {
            const float *vc = v + base + x;
            float acc = 0.0f;
            for (int j = 0; j < tk; j++)
                acc += p[j] * vc[(size_t)j * ldkv];
            cr[x] = acc;
        }
        // the next row's scores go elsewhere in probs, so no barrier here
    }
}

void cuda_attention_decode(const struct decode_attention_shape *s, const float *q,
                           const float *k, const float *v, const int32_t *entries,
                           const float *bias, const int32_t *key_mask, float *probs,
                           float *ctx)
{
    int n = s->queries, H = s->heads, Tk = s->tk;
    if (n == 0 || H == 0)
        return;

    // the host arrays: entries [n], and the key mask's rows up to the
    // highest entry read
    const int32_t *d_entries = NULL;
    size_t mask_rows = (size_t)n;
    if (entries != NULL) {
        d_entries =
            (const int32_t *)cuda_upload_host(SLOT_BUCKETS, entries, sizeof(int32_t) * n);
        mask_rows = 0;
        for (int i = 0; i < n; i++)
            if ((size_t)entries[i] + 1 > mask_rows)
                mask_rows = (size_t)entries[i] + 1;
    }
    const int32_t *d_mask = NULL;
    if (key_mask != NULL && Tk > 0)
        d_mask = (const int32_t *)cuda_upload_host(SLOT_MASK, key_mask,
                                                   sizeof(int32_t) * mask_rows * Tk);

    size_t blocks = (size_t)n * H;
    unsigned threads = row_threads(Tk > s->d_kv ? Tk : s->d_kv);
    CUDA_LAUNCH_BLOCKS(attention_decode_kernel, row_blocks(blocks), threads, q, k, v, d_entries,
                       bias, d_mask, probs, ctx, n, Tk, H, s->d_kv, s->ldq, s->ldkv,
                       s->entry_stride, s->ldc);
}
