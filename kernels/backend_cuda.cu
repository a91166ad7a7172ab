// The CUDA backend: state, memory, GEMMs, the elementwise and row
// operations, and the table. Attention is in cuda_attention.cu, routing and
// the losses in cuda_moe.cu.
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <mutex>
#include <vector>

#include "cuda_ops.h"

namespace {

struct cuda_backend_state {
    int open;
    cudaStream_t stream;
    cublasHandle_t blas;
    enum cuda_precision precision;
    // 1 once cublasGemmGroupedBatchedEx rejected the compute type, after
    // which the grouped GEMMs run one cublasGemmEx per group. It is reset
    // when the precision changes.
    int grouped_unsupported;
    void *scratch[SLOT_COUNT];
    size_t scratch_bytes[SLOT_COUNT];
    void *host[SLOT_COUNT];
    size_t host_bytes[SLOT_COUNT];
};

cuda_backend_state state;

} // namespace

void cuda_check_at(cudaError_t status, const char *file, int line, const char *call)
{
    if (status == cudaSuccess)
        return;
    fprintf(stderr, "caem: CUDA error at %s:%d: %s: %s\n", file, line, call,
            cudaGetErrorString(status));
    exit(EXIT_FAILURE);
}

void cublas_check_at(cublasStatus_t status, const char *file, int line, const char *call)
{
    if (status == CUBLAS_STATUS_SUCCESS)
        return;
    fprintf(stderr, "caem: cuBLAS error at %s:%d: %s: %s\n", file, line, call,
            cublasGetStatusString(status));
    exit(EXIT_FAILURE);
}

cudaStream_t cuda_stream(void)
{
    return state.stream;
}

cublasHandle_t cuda_blas(void)
{
    return state.blas;
}

void *cuda_scratch(enum cuda_slot slot, size_t bytes)
{
    if (bytes > state.scratch_bytes[slot]) {
        // cudaFree waits for the work that may still read the old buffer
        CUDA_CHECK(cudaFree(state.scratch[slot]));
        size_t grown = bytes + bytes / 2;
        CUDA_CHECK(cudaMalloc(&state.scratch[slot], grown));
        state.scratch_bytes[slot] = grown;
    }
    return state.scratch[slot];
}

void *cuda_host_scratch(enum cuda_slot slot, size_t bytes)
{
    if (bytes > state.host_bytes[slot]) {
        CUDA_CHECK(cudaStreamSynchronize(state.stream));
        CUDA_CHECK(cudaFreeHost(state.host[slot]));
        size_t grown = bytes + bytes / 2;
        CUDA_CHECK(cudaMallocHost(&state.host[slot], grown));
        state.host_bytes[slot] = grown;
    }
    return state.host[slot];
}

void *cuda_upload_host(enum cuda_slot slot, const void *host, size_t bytes)
{
    void *device = cuda_scratch(slot, bytes > 0 ? bytes : 1);
    // From pageable memory the copy is staged before the call returns, so
    // the caller may reuse `host` at once.
    if (bytes > 0)
        CUDA_CHECK(cudaMemcpyAsync(device, host, bytes, cudaMemcpyHostToDevice, state.stream));
    return device;
}

void cuda_download_wait(void *host, const void *device, size_t bytes, enum cuda_slot slot)
{
    if (bytes == 0)
        return;
    void *pinned = cuda_host_scratch(slot, bytes);
    CUDA_CHECK(cudaMemcpyAsync(pinned, device, bytes, cudaMemcpyDeviceToHost, state.stream));
    CUDA_CHECK(cudaStreamSynchronize(state.stream));
    memcpy(host, pinned, bytes);
}

cublasComputeType_t cuda_compute_type(void)
{
    switch (state.precision) {
    case CUDA_PRECISION_TF32:
        return CUBLAS_COMPUTE_32F_FAST_TF32;
    case CUDA_PRECISION_BF16:
        return CUBLAS_COMPUTE_32F_FAST_16BF;
    default:
        return CUBLAS_COMPUTE_32F;
    }
}

// ---- GEMM ----

namespace {

__global__ void scale_matrix_kernel(float *c, int m, int n, int ldc, float beta)
{
    size_t total = (size_t)m * n;
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < total;
         i += (size_t)gridDim.x * blockDim.x) {
        float *x = c + (i / n) * ldc + i % n;
        *x = beta == 0.0f ? 0.0f : beta * *x;
    }
}

// One row-major problem C = op(A) op(B) as cuBLAS's column-major
// C^T = op(B)^T op(A)^T: the operands swap, and so do m and n.
struct gemm_problem {
    cublasOperation_t op_first;
    cublasOperation_t op_second;
    int rows;     // cuBLAS m: columns of the row-major C
    int cols;     // cuBLAS n: rows of the row-major C
    int inner;
    const float *first;
    int ld_first;
    const float *second;
    int ld_second;
    float *c;
    int ldc;
};

gemm_problem row_major_problem(int trans_a, int trans_b, int m, int n, int k, const float *a,
                               int lda, const float *b, int ldb, float *c, int ldc)
{
    gemm_problem p;
    p.op_first = trans_b ? CUBLAS_OP_T : CUBLAS_OP_N;
    p.op_second = trans_a ? CUBLAS_OP_T : CUBLAS_OP_N;
    p.rows = n;
    p.cols = m;
    p.inner = k;
    p.first = b;
    p.ld_first = ldb;
    p.second = a;
    p.ld_second = lda;
    p.c = c;
    p.ldc = ldc;
    return p;
}

void run_problem(const gemm_problem &p, float alpha, float beta)
{
    CUBLAS_CHECK(cublasGemmEx(state.blas, p.op_first, p.op_second, p.rows, p.cols, p.inner,
                              &alpha, p.first, CUDA_R_32F, p.ld_first, p.second, CUDA_R_32F,
                              p.ld_second, &beta, p.c, CUDA_R_32F, p.ldc, cuda_compute_type(),
                              CUBLAS_GEMM_DEFAULT));
}

// Runs problems of different sizes in one cublasGemmGroupedBatchedEx call
// (one group per problem), or one cublasGemmEx each where the grouped call
// does not take the precision mode's compute type.
void run_grouped(const std::vector<gemm_problem> &problems, float beta)
{
    int count = (int)problems.size();
    if (count == 0)
        return;
    if (count == 1 || state.grouped_unsupported) {
        for (const gemm_problem &p : problems)
            run_problem(p, 1.0f, beta);
        return;
    }
    std::vector<cublasOperation_t> op_first(count), op_second(count);
    std::vector<int> rows(count), cols(count), inner(count), ld_first(count),
        ld_second(count), ldc(count), group_size(count, 1);
    std::vector<float> alphas(count, 1.0f), betas(count, beta);
    std::vector<const void *> pointers(3 * (size_t)count);
    for (int i = 0; i < count; i++) {
        const gemm_problem &p = problems[i];
        op_first[i] = p.op_first;
        op_second[i] = p.op_second;
        rows[i] = p.rows;
        cols[i] = p.cols;
        inner[i] = p.inner;
        ld_first[i] = p.ld_first;
        ld_second[i] = p.ld_second;
        ldc[i] = p.ldc;
        pointers[i] = p.first;
        pointers[count + i] = p.second;
        pointers[2 * (size_t)count + i] = p.c;
    }
    const void *const *device = (const void *const *)cuda_upload_host(
        SLOT_POINTERS, pointers.data(), sizeof(void *) * pointers.size());
    cublasStatus_t status = cublasGemmGroupedBatchedEx(
        state.blas, op_first.data(), op_second.data(), rows.data(), cols.data(), inner.data(),
        alphas.data(), device, CUDA_R_32F, ld_first.data(), device + count, CUDA_R_32F,
        ld_second.data(), betas.data(), (void *const *)(device + 2 * (size_t)count), CUDA_R_32F,
        ldc.data(), count, group_size.data(), cuda_compute_type());
    // The grouped call's documentation lists fewer compute types than
    // cublasGemmEx takes; a rejection of either kind selects the fallback.
    if (status == CUBLAS_STATUS_NOT_SUPPORTED || status == CUBLAS_STATUS_INVALID_VALUE) {
        state.grouped_unsupported = 1;
        run_grouped(problems, beta);
        return;
    }
    CUBLAS_CHECK(status);
}

} // namespace

void cuda_gemm(int trans_a, int trans_b, int m, int n, int k, float alpha, const float *a,
               int lda, const float *b, int ldb, float beta, float *c, int ldc)
{
    if (m == 0 || n == 0)
        return;
    if (k == 0) {
        CUDA_LAUNCH(scale_matrix_kernel, cuda_grid((size_t)m * n, CUDA_THREADS), CUDA_THREADS,
                    c, m, n, ldc, beta);
        return;
    }
    run_problem(row_major_problem(trans_a, trans_b, m, n, k, a, lda, b, ldb, c, ldc), alpha,
                beta);
}

void cuda_gemm_batched(int trans_a, int trans_b, int m, int n, int k, float alpha,
                       const float *const *a_ptrs, int lda, const float *const *b_ptrs, int ldb,
                       float beta, float *const *c_ptrs, int ldc, int count)
{
    if (count == 0 || m == 0 || n == 0)
        return;
    if (k == 0) {
        for (int i = 0; i < count; i++)
            cuda_gemm(trans_a, trans_b, m, n, 0, alpha, NULL, lda, NULL, ldb, beta, c_ptrs[i],
                      ldc);
        return;
    }
    std::vector<const void *> pointers(3 * (size_t)count);
    for (int i = 0; i < count; i++) {
        pointers[i] = b_ptrs[i];
        pointers[count + i] = a_ptrs[i];
        pointers[2 * (size_t)count + i] = c_ptrs[i];
    }
    const void *const *device = (const void *const *)cuda_upload_host(
        SLOT_POINTERS, pointers.data(), sizeof(void *) * pointers.size());
    CUBLAS_CHECK(cublasGemmBatchedEx(
        state.blas, trans_b ? CUBLAS_OP_T : CUBLAS_OP_N, trans_a ? CUBLAS_OP_T : CUBLAS_OP_N, n,
        m, k, &alpha, device, CUDA_R_32F, ldb, device + count, CUDA_R_32F, lda, &beta,
        (void *const *)(device + 2 * (size_t)count), CUDA_R_32F, ldc, count,
        cuda_compute_type(), CUBLAS_GEMM_DEFAULT));
}

namespace {

// C_rows = A_rows op(W_g) over the groups' rows, with op(W_g) = W_g^T (W_g
// n x k) when trans_w, else W_g (k x n).
void grouped_gemm_rows(int trans_w, int groups, const int *offsets, int n, int k,
                       const float *a, const float *w, size_t w_stride, float *c)
{
    int ldw = trans_w ? k : n;
    std::vector<gemm_problem> problems;
    for (int g = 0; g < groups; g++) {
        int rows = offsets[g + 1] - offsets[g];
        if (rows > 0 && n > 0 && k > 0)
            problems.push_back(row_major_problem(0, trans_w, rows, n, k,
                                                 a + (size_t)offsets[g] * k, k,
                                                 w + g * w_stride, ldw,
                                                 c + (size_t)offsets[g] * n, n));
        else if (rows > 0)
            cuda_gemm(0, trans_w, rows, n, k, 1.0f, NULL, k, NULL, ldw, 0.0f,
                      c + (size_t)offsets[g] * n, n);
    }
    run_grouped(problems, 0.0f);
}

void cuda_grouped_gemm_nt(int groups, const int *offsets, int n, int k, const float *a,
                          const float *w, size_t w_stride, float *c)
{
    grouped_gemm_rows(1, groups, offsets, n, k, a, w, w_stride, c);
}

void cuda_grouped_gemm_nn(int groups, const int *offsets, int n, int k, const float *a,
                          const float *w, size_t w_stride, float *c)
{
    grouped_gemm_rows(0, groups, offsets, n, k, a, w, w_stride, c);
}

void cuda_grouped_gemm_tn(int groups, const int *offsets, int m, int n, const float *dy,
                          const float *x, float *dw, size_t dw_stride)
{
    std::vector<gemm_problem> problems;
    for (int g = 0; g < groups; g++) {
        int rows = offsets[g + 1] - offsets[g];
        if (rows > 0 && m > 0 && n > 0)
            problems.push_back(row_major_problem(1, 0, m, n, rows,
                                                 dy + (size_t)offsets[g] * m, m,
                                                 x + (size_t)offsets[g] * n, n,
                                                 dw + g * dw_stride, n));
    }
    run_grouped(problems, 1.0f);
}

// ---- memory ----

void *cuda_alloc(size_t bytes)
{
    void *p = NULL;
    if (cudaMalloc(&p, bytes > 0 ? bytes : 1) != cudaSuccess) {
        // the table's callers report a NULL allocation; clear the error
        cudaGetLastError();
        return NULL;
    }
    // the CPU backend's allocations start at zero, and callers rely on it
    CUDA_CHECK(cudaMemsetAsync(p, 0, bytes, state.stream));
    return p;
}

void cuda_free(void *ptr)
{
    CUDA_CHECK(cudaFree(ptr));
}

void cuda_zero(void *ptr, size_t bytes)
{
    CUDA_CHECK(cudaMemsetAsync(ptr, 0, bytes, state.stream));
}

void cuda_copy(void *dst, const void *src, size_t bytes)
{
    if (bytes > 0 && dst != src)
        CUDA_CHECK(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToDevice, state.stream));
}

void cuda_upload(void *dst, const void *host_src, size_t bytes)
{
    if (bytes > 0)
        CUDA_CHECK(cudaMemcpyAsync(dst, host_src, bytes, cudaMemcpyHostToDevice, state.stream));
}

void cuda_download(void *host_dst, const void *src, size_t bytes)
{
    if (bytes == 0)
        return;
    CUDA_CHECK(cudaMemcpyAsync(host_dst, src, bytes, cudaMemcpyDeviceToHost, state.stream));
    CUDA_CHECK(cudaStreamSynchronize(state.stream));
}

// ---- elementwise ----

#define GRID_STRIDE(i, n)                                                               \
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < (n);             \
         i += (size_t)gridDim.x * blockDim.x)

__global__ void add_kernel(float *y, const float *x, size_t n)
{
    GRID_STRIDE(i, n)
    y[i] += x[i];
}

__global__ void scale_kernel(float *y, float alpha, size_t n)
{
    GRID_STRIDE(i, n)
    y[i] *= alpha;
}

__global__ void relu_backward_kernel(const float *y, float *dy, size_t n, float scale)
{
    GRID_STRIDE(i, n)
    dy[i] = y[i] > 0.0f ? dy[i] * scale : 0.0f;
}

// dst = x + dropout(y), or dropout(ReLU(y)) with relu set; x NULL means 0.
// threshold 0 keeps every element at scale 1.
__global__ void dropout_kernel(float *dst, const float *x, const float *y, size_t n,
                               uint64_t seed, uint64_t offset, uint32_t threshold,
                               float keep_scale, int relu)
{
    GRID_STRIDE(i, n)
    {
        float value = y[i];
        if (relu)
            value = value > 0.0f ? value : 0.0f;
        if (threshold > 0)
            value *= cuda_dropout_factor(seed, offset + i, threshold, keep_scale);
        dst[i] = x != NULL ? x[i] + value : value;
    }
}

void launch_dropout(float *dst, const float *x, const float *y, size_t n,
                    const struct dropout_spec *spec, int relu)
{
    if (n == 0)
        return;
    int use = spec != NULL && spec->p > 0.0f;
    uint32_t threshold = use ? cuda_dropout_threshold(spec->p) : 0;
    float keep_scale = use ? 1.0f / (1.0f - spec->p) : 1.0f;
    CUDA_LAUNCH(dropout_kernel, cuda_grid(n, CUDA_THREADS), CUDA_THREADS, dst, x, y, n,
                use ? spec->seed : 0, use ? spec->offset : 0, threshold, keep_scale, relu);
}

void cuda_add(float *y, const float *x, size_t n)
{
    if (n > 0)
        CUDA_LAUNCH(add_kernel, cuda_grid(n, CUDA_THREADS), CUDA_THREADS, y, x, n);
}

void cuda_scale(float *y, float alpha, size_t n)
{
    if (n > 0)
        CUDA_LAUNCH(scale_kernel, cuda_grid(n, CUDA_THREADS), CUDA_THREADS, y, alpha, n);
}

void cuda_relu_forward(float *x, size_t n, const struct dropout_spec *spec)
{
    launch_dropout(x, NULL, x, n, spec, 1);
}

void cuda_relu_backward(const float *y, float *dy, size_t n, float scale)
{
    if (n > 0)
        CUDA_LAUNCH(relu_backward_kernel, cuda_grid(n, CUDA_THREADS), CUDA_THREADS, y, dy, n,
                    scale);
}

void cuda_dropout(float *x, size_t n, const struct dropout_spec *spec)
{
    if (spec != NULL && spec->p > 0.0f)
        launch_dropout(x, NULL, x, n, spec, 0);
}

void cuda_dropout_copy(float *dst, const float *src, size_t n, const struct dropout_spec *spec)
{
    if (spec == NULL || spec->p <= 0.0f) {
        cuda_copy(dst, src, sizeof(float) * n);
        return;
    }
    launch_dropout(dst, NULL, src, n, spec, 0);
}

void cuda_dropout_add(float *dst, const float *x, const float *y, size_t n,
                      const struct dropout_spec *spec)
{
    launch_dropout(dst, x, y, n, spec, 0);
}

// x *= U(1 - eps, 1 + eps), or /= with divide; uniform index offset + i is
// word (offset + i) % 4 of Philox block (offset + i) / 4, 24 bits.
__global__ void jitter_kernel(float *x, size_t n, float eps, uint64_t seed, uint64_t offset,
                              int divide)
{
    GRID_STRIDE(i, n)
    {
        uint64_t index = offset + i;
        uint32_t w[4];
        philox4x32_block(seed, index >> 2, w);
        float u = (float)(w[index & 3] >> 8) * (1.0f / 16777216.0f);
        float factor = 1.0f - eps + 2.0f * eps * u;
        x[i] = divide ? x[i] / factor : x[i] * factor;
    }
}

void cuda_jitter(float *x, size_t n, float eps, uint64_t seed, uint64_t offset, int divide)
{
    if (n > 0)
        CUDA_LAUNCH(jitter_kernel, cuda_grid(n, CUDA_THREADS), CUDA_THREADS, x, n, eps, seed,
                    offset, divide);
}

// ---- embedding ----

__global__ void embedding_forward_kernel(const float *table, const int32_t *ids, int n, int d,
                                         float *out)
{
    GRID_STRIDE(i, (size_t)n * d)
    out[i] = table[(size_t)ids[i / d] * d + i % d];
}

__global__ void embedding_backward_kernel(const float *dout, const int32_t *ids, int n, int d,
                                          float *dtable)
{
    GRID_STRIDE(i, (size_t)n * d)
    atomicAdd(&dtable[(size_t)ids[i / d] * d + i % d], dout[i]);
}

void cuda_embedding_forward(const float *table, const int32_t *ids, int n, int d, float *out)
{
    if ((size_t)n * d == 0)
        return;
    const int32_t *device_ids =
        (const int32_t *)cuda_upload_host(SLOT_IDS, ids, sizeof(int32_t) * n);
    CUDA_LAUNCH(embedding_forward_kernel, cuda_grid((size_t)n * d, CUDA_THREADS), CUDA_THREADS,
                table, device_ids, n, d, out);
}

void cuda_embedding_backward(const float *dout, const int32_t *ids, int n, int d,
                             float *dtable)
{
    if ((size_t)n * d == 0)
        return;
    const int32_t *device_ids =
        (const int32_t *)cuda_upload_host(SLOT_IDS, ids, sizeof(int32_t) * n);
    CUDA_LAUNCH(embedding_backward_kernel, cuda_grid((size_t)n * d, CUDA_THREADS),
                CUDA_THREADS, dout, device_ids, n, d, dtable);
}

// ---- RMS norm ----

// One block per row.
__global__ void rmsnorm_forward_kernel(const float *x, const float *w, int d, float eps,
                                       float *y, float *rinv)
{
    __shared__ double shared[CUDA_THREADS];
    const float *xr = x + (size_t)blockIdx.x * d;
    float *yr = y + (size_t)blockIdx.x * d;
    double sum = 0.0;
    for (int j = threadIdx.x; j < d; j += blockDim.x)
        sum += (double)xr[j] * xr[j];
    sum = block_reduce_sum(sum, shared);
    float variance = (float)(sum / d);
    float inv = 1.0f / sqrtf(variance + eps);
    if (threadIdx.x == 0)
        rinv[blockIdx.x] = inv;
    for (int j = threadIdx.x; j < d; j += blockDim.x)
        yr[j] = w[j] * (xr[j] * inv);
}

// dx_j += r w_j dy_j - x_j r^3 / d * sum_k w_k dy_k x_k; one block per row.
__global__ void rmsnorm_backward_dx_kernel(const float *dy, const float *x, const float *w,
                                           const float *rinv, int d, float *dx)
{
    __shared__ double shared[CUDA_THREADS];
    size_t base = (size_t)blockIdx.x * d;
    double dot = 0.0;
    for (int j = threadIdx.x; j < d; j += blockDim.x)
        dot += (double)w[j] * dy[base + j] * x[base + j];
    dot = block_reduce_sum(dot, shared);
    float inv = rinv[blockIdx.x];
    float coef = (float)(dot * inv * inv * inv / d);
    for (int j = threadIdx.x; j < d; j += blockDim.x)
        dx[base + j] += inv * w[j] * dy[base + j] - x[base + j] * coef;
}

// partial[chunk, j] = sum over the chunk's rows of dy x rinv, in double.
__global__ void rmsnorm_backward_dw_kernel(const float *dy, const float *x, const float *rinv,
                                           int rows, int d, int rows_per_chunk,
                                           double *partial)
{
    int j = blockIdx.x * blockDim.x + threadIdx.x;
    if (j >= d)
        return;
    int begin = blockIdx.y * rows_per_chunk;
    int end = begin + rows_per_chunk < rows ? begin + rows_per_chunk : rows;
    double sum = 0.0;
    for (int r = begin; r < end; r++)
        sum += (double)dy[(size_t)r * d + j] * x[(size_t)r * d + j] * rinv[r];
    partial[(size_t)blockIdx.y * d + j] = sum;
}

__global__ void rmsnorm_backward_dw_sum_kernel(const double *partial, int chunks, int d,
                                               float *dw)
{
    GRID_STRIDE(j, (size_t)d)
    {
        double sum = 0.0;
        for (int c = 0; c < chunks; c++)
            sum += partial[(size_t)c * d + j];
        dw[j] += (float)sum;
    }
}

void cuda_rmsnorm_forward(const float *x, const float *w, int rows, int d, float eps, float *y,
                          float *rinv)
{
    if (rows > 0)
        CUDA_LAUNCH_BLOCKS(rmsnorm_forward_kernel, rows, CUDA_THREADS, x, w, d, eps, y, rinv);
}

void cuda_rmsnorm_backward(const float *dy, const float *x, const float *w, const float *rinv,
                           int rows, int d, float *dx, float *dw)
{
    if (rows == 0 || d == 0)
        return;
    CUDA_LAUNCH_BLOCKS(rmsnorm_backward_dx_kernel, rows, CUDA_THREADS, dy, x, w, rinv, d, dx);
    int rows_per_chunk = 64;
    int chunks = (rows + rows_per_chunk - 1) / rows_per_chunk;
    if (chunks > 65535) {
        rows_per_chunk = (rows + 65534) / 65535;
        chunks = (rows + rows_per_chunk - 1) / rows_per_chunk;
    }
    double *partial = (double *)cuda_scratch(SLOT_REDUCE, sizeof(double) * chunks * d);
    dim3 grid((unsigned)((d + CUDA_THREADS - 1) / CUDA_THREADS), (unsigned)chunks);
    CUDA_LAUNCH(rmsnorm_backward_dw_kernel, grid, CUDA_THREADS, dy, x, rinv, rows, d,
                rows_per_chunk, partial);
    CUDA_LAUNCH(rmsnorm_backward_dw_sum_kernel, cuda_grid(d, CUDA_THREADS), CUDA_THREADS,
                (const double *)partial, chunks, d, dw);
}

// ---- AdamW and sums ----

__global__ void adamw_kernel(float *param, const float *grad, float *m, float *v, size_t n,
                             float beta1, float beta2, float eps, float decay,
                             float step_size, float bias2_sqrt)
{
    GRID_STRIDE(i, n)
    {
        float g = grad[i];
        float p = param[i] * decay;
        float mi = beta1 * m[i] + (1.0f - beta1) * g;
        float vi = beta2 * v[i] + (1.0f - beta2) * g * g;
        m[i] = mi;
        v[i] = vi;
        float denom = sqrtf(vi) / bias2_sqrt + eps;
        param[i] = p - step_size * mi / denom;
    }
}

void cuda_adamw(float *param, const float *grad, float *m, float *v, size_t n, float lr,
                float beta1, float beta2, float eps, float weight_decay, long step)
{
    if (n == 0)
        return;
    // the order of torch.optim.AdamW, as the CPU backend documents
    double bias1 = 1.0 - pow(beta1, (double)step);
    double bias2 = 1.0 - pow(beta2, (double)step);
    float step_size = (float)(lr / bias1);
    float bias2_sqrt = (float)sqrt(bias2);
    float decay = 1.0f - lr * weight_decay;
    CUDA_LAUNCH(adamw_kernel, cuda_grid(n, CUDA_THREADS), CUDA_THREADS, param, grad, m, v, n,
                beta1, beta2, eps, decay, step_size, bias2_sqrt);
}

__global__ void sum_squares_kernel(const float *x, size_t n, double *partial)
{
    __shared__ double shared[CUDA_THREADS];
    double sum = 0.0;
    GRID_STRIDE(i, n)
    sum += (double)x[i] * x[i];
    sum = block_reduce_sum(sum, shared);
    if (threadIdx.x == 0)
        partial[blockIdx.x] = sum;
}

__global__ void sum_partials_kernel(const double *partial, int count, double *out)
{
    __shared__ double shared[CUDA_THREADS];
    double sum = 0.0;
    for (int i = threadIdx.x; i < count; i += blockDim.x)
        sum += partial[i];
    sum = block_reduce_sum(sum, shared);
    if (threadIdx.x == 0)
        *out = sum;
}

double cuda_sum_squares(const float *x, size_t n)
{
    if (n == 0)
        return 0.0;
    unsigned blocks = cuda_grid(n, CUDA_THREADS);
    if (blocks > 1024)
        blocks = 1024;
    double *partial = (double *)cuda_scratch(SLOT_REDUCE, sizeof(double) * (blocks + 1));
    CUDA_LAUNCH_BLOCKS(sum_squares_kernel, blocks, CUDA_THREADS, x, n, partial);
    CUDA_LAUNCH_BLOCKS(sum_partials_kernel, 1, CUDA_THREADS, (const double *)partial,
                       (int)blocks, partial + blocks);
    double total;
    cuda_download_wait(&total, partial + blocks, sizeof total, SLOT_REDUCE);
    return total;
}

// Every operation runs under one lock: they share the scratch buffers and
// the stream, and the workbench may run jobs on several threads. One stream
// also orders the work of those threads as they queued it.
std::mutex table_mutex;

template <auto F> struct locked;
template <typename R, typename... Args, R (*F)(Args...)> struct locked<F> {
    static R call(Args... args)
    {
        std::lock_guard<std::mutex> hold(table_mutex);
        return F(args...);
    }
};

const struct backend cuda_table = {
    .name = "cuda",
    .alloc = locked<cuda_alloc>::call,
    .free = locked<cuda_free>::call,
    .zero = locked<cuda_zero>::call,
    .copy = locked<cuda_copy>::call,
    .upload = locked<cuda_upload>::call,
    .download = locked<cuda_download>::call,
    .gemm = locked<cuda_gemm>::call,
    .grouped_gemm_nt = locked<cuda_grouped_gemm_nt>::call,
    .grouped_gemm_nn = locked<cuda_grouped_gemm_nn>::call,
    .grouped_gemm_tn = locked<cuda_grouped_gemm_tn>::call,
    .add = locked<cuda_add>::call,
    .scale = locked<cuda_scale>::call,
    .relu_forward = locked<cuda_relu_forward>::call,
    .relu_backward = locked<cuda_relu_backward>::call,
    .dropout = locked<cuda_dropout>::call,
    .dropout_copy = locked<cuda_dropout_copy>::call,
    .dropout_add = locked<cuda_dropout_add>::call,
    .jitter = locked<cuda_jitter>::call,
    .embedding_forward = locked<cuda_embedding_forward>::call,
    .embedding_backward = locked<cuda_embedding_backward>::call,
    .rmsnorm_forward = locked<cuda_rmsnorm_forward>::call,
    .rmsnorm_backward = locked<cuda_rmsnorm_backward>::call,
    .position_bias_forward = locked<cuda_position_bias_forward>::call,
    .position_bias_backward = locked<cuda_position_bias_backward>::call,
    .attention_forward = locked<cuda_attention_forward>::call,
    .attention_backward = locked<cuda_attention_backward>::call,
    .attention_decode = locked<cuda_attention_decode>::call,
    .route_top1 = locked<cuda_route_top1>::call,
    .gather_rows = locked<cuda_gather_rows>::call,
    .scatter_add_rows = locked<cuda_scatter_add_rows>::call,
    .moe_combine = locked<cuda_moe_combine>::call,
    .moe_combine_backward = locked<cuda_moe_combine_backward>::call,
    .router_pmax_backward = locked<cuda_router_pmax_backward>::call,
    .router_z_loss = locked<cuda_router_z_loss>::call,
    .balance_accumulate = locked<cuda_balance_accumulate>::call,
    .balance_backward = locked<cuda_balance_backward>::call,
    .usage_accumulate = locked<cuda_usage_accumulate>::call,
    .cross_entropy = locked<cuda_cross_entropy>::call,
    .adamw = locked<cuda_adamw>::call,
    .sum_squares = locked<cuda_sum_squares>::call,
};

} // namespace

extern "C" int backend_cuda_open(const struct backend **out, struct caem_error *err)
{
    *out = NULL;
    if (!state.open) {
        int count = 0;
        cudaError_t status = cudaGetDeviceCount(&count);
        if (status == cudaErrorInsufficientDriver)
            return caem_fail(err, "no CUDA device is available: the NVIDIA driver is missing "
                             "or older than this build's CUDA %d.%d runtime needs",
                             CUDART_VERSION / 1000, CUDART_VERSION % 1000 / 10);
        if (status != cudaSuccess)
            return caem_fail(err, "no CUDA device is available (CUDA runtime: %s)",
                             cudaGetErrorString(status));
        if (count == 0)
            return caem_fail(err, "no CUDA device is available (the CUDA runtime reports none)");
        status = cudaSetDevice(0);
        if (status == cudaSuccess)
            status = cudaStreamCreateWithFlags(&state.stream, cudaStreamNonBlocking);
        if (status != cudaSuccess)
            return caem_fail(err, "cannot start CUDA on device 0: %s",
                             cudaGetErrorString(status));
        cublasStatus_t blas = cublasCreate(&state.blas);
        if (blas == CUBLAS_STATUS_SUCCESS)
            blas = cublasSetStream(state.blas, state.stream);
        if (blas != CUBLAS_STATUS_SUCCESS)
            return caem_fail(err, "cannot start cuBLAS on device 0: %s",
                             cublasGetStatusString(blas));
        state.open = 1;
    }
    *out = &cuda_table;
    return 0;
}

extern "C" int cuda_precision_parse(const char *name, enum cuda_precision *out,
                                    struct caem_error *err)
{
    static const enum cuda_precision all[] = { CUDA_PRECISION_FP32, CUDA_PRECISION_TF32,
                                               CUDA_PRECISION_BF16 };
    for (enum cuda_precision p : all)
        if (strcmp(name, cuda_precision_name(p)) == 0) {
            *out = p;
            return 0;
        }
    return caem_fail(err, "invalid precision '%s' (expected fp32, tf32 or bf16)", name);
}

extern "C" void backend_cuda_set_precision(enum cuda_precision precision)
{
    std::lock_guard<std::mutex> hold(table_mutex);
    state.precision = precision;
    state.grouped_unsupported = 0;
}

extern "C" enum cuda_precision backend_cuda_precision(void)
{
    return state.precision;
}

extern "C" const char *cuda_precision_name(enum cuda_precision precision)
{
    switch (precision) {
    case CUDA_PRECISION_TF32:
        return "tf32";
    case CUDA_PRECISION_BF16:
        return "bf16";
    default:
        return "fp32";
    }
}

extern "C" void backend_cuda_synchronize(void)
{
    if (state.open)
        CUDA_CHECK(cudaStreamSynchronize(state.stream));
}

// x[i] = uniform in [-1, 1) from Philox, for GEMM timing on data that is
// not all zero (a GPU can multiply zeros faster).
__global__ void fill_uniform_kernel(float *x, size_t n, uint64_t seed)
{
    GRID_STRIDE(i, n)
    {
        uint32_t w[4];
        philox4x32_block(seed, i >> 2, w);
        x[i] = (float)(w[i & 3] >> 8) * (2.0f / 16777216.0f) - 1.0f;
    }
}

extern "C" double backend_cuda_gemm_rate(int size, int repeats)
{
    if (!state.open || size <= 0)
        return -1.0;
    size_t n = (size_t)size * size;
    float *a, *b, *c;
    CUDA_CHECK(cudaMalloc((void **)&a, sizeof(float) * n));
    CUDA_CHECK(cudaMalloc((void **)&b, sizeof(float) * n));
    CUDA_CHECK(cudaMalloc((void **)&c, sizeof(float) * n));
    CUDA_LAUNCH(fill_uniform_kernel, cuda_grid(n, CUDA_THREADS), CUDA_THREADS, a, n, 1);
    CUDA_LAUNCH(fill_uniform_kernel, cuda_grid(n, CUDA_THREADS), CUDA_THREADS, b, n, 2);
    cudaEvent_t start, end;
    CUDA_CHECK(cudaEventCreate(&start));
    CUDA_CHECK(cudaEventCreate(&end));
    double best = 0.0;
    // the first call pays for cuBLAS's kernel selection, so it is not timed
    cuda_gemm(0, 0, size, size, size, 1.0f, a, size, b, size, 0.0f, c, size);
    for (int i = 0; i < repeats; i++) {
        CUDA_CHECK(cudaEventRecord(start, state.stream));
        cuda_gemm(0, 0, size, size, size, 1.0f, a, size, b, size, 0.0f, c, size);
        CUDA_CHECK(cudaEventRecord(end, state.stream));
        CUDA_CHECK(cudaEventSynchronize(end));
        float ms = 0.0f;
        CUDA_CHECK(cudaEventElapsedTime(&ms, start, end));
        double rate = ms > 0.0f ? 2.0 * size * (double)n / (ms * 1e-3) / 1e9 : 0.0;
        if (rate > best)
            best = rate;
    }
    CUDA_CHECK(cudaEventDestroy(start));
    CUDA_CHECK(cudaEventDestroy(end));
    CUDA_CHECK(cudaFree(a));
    CUDA_CHECK(cudaFree(b));
    CUDA_CHECK(cudaFree(c));
    return best;
}

extern "C" void backend_cuda_describe(char *out, size_t out_size)
{
    cudaDeviceProp prop;
    if (!state.open || cudaGetDeviceProperties(&prop, 0) != cudaSuccess) {
        snprintf(out, out_size, "no CUDA device open");
        return;
    }
    snprintf(out, out_size, "%s (compute capability %d.%d, %zu MiB)", prop.name, prop.major,
             prop.minor, prop.totalGlobalMem / (1024 * 1024));
}
