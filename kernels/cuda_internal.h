// Shared by the CUDA backend's source files: the stream and cuBLAS handle,
// checked calls, kernel launches, scratch buffers and the GEMM helpers.
//
// The same sources also compile with g++ against tests/cuda_emu (the host
// emulation of the CUDA runtime and cuBLAS that lets the agreement tests run
// without a GPU). So kernels keep to what the emulation provides: blockIdx,
// threadIdx, blockDim, gridDim, static __shared__ arrays, __syncthreads and
// atomicAdd; no warp shuffles, no dynamic shared memory, no <<< >>> outside
// the launch macros below.
#ifndef CAEM_CUDA_INTERNAL_H
#define CAEM_CUDA_INTERNAL_H

#include <cublas_v2.h>
#include <cuda_runtime.h>
#include <stddef.h>
#include <stdint.h>

extern "C" {
#include "../src/backend.h"
#include "../src/backend_cuda.h"
}
#include "../src/philox.h"

// Threads per block of the row kernels and the reductions; a power of two.
#define CUDA_THREADS 256

// Exits with "CUDA error at FILE:LINE: CALL: MESSAGE"; the backend table's
// functions have no error return, and a failed kernel leaves the model's
// state unknown.
void cuda_check_at(cudaError_t status, const char *file, int line, const char *call);
void cublas_check_at(cublasStatus_t status, const char *file, int line, const char *call);
#define CUDA_CHECK(call) cuda_check_at((call), __FILE__, __LINE__, #call)
#define CUBLAS_CHECK(call) cublas_check_at((call), __FILE__, __LINE__, #call)

// The stream every operation runs on, in order.
cudaStream_t cuda_stream(void);
cublasHandle_t cuda_blas(void);

// CUDA_LAUNCH starts a kernel that does not call __syncthreads;
// CUDA_LAUNCH_BLOCKS one that does (the emulation runs those threads as
// fibers). Both check the launch.
#ifdef CAEM_CUDA_EMULATION
#include "cuda_emu_launch.h"
#define CUDA_LAUNCH(kernel, grid, block, ...)                                           \
    cuda_emu_launch(#kernel, 0, (grid), (block), kernel, __VA_ARGS__)
#define CUDA_LAUNCH_BLOCKS(kernel, grid, block, ...)                                    \
    cuda_emu_launch(#kernel, 1, (grid), (block), kernel, __VA_ARGS__)
#else
#define CUDA_LAUNCH(kernel, grid, block, ...)                                           \
    do {                                                                                \
        kernel<<<(grid), (block), 0, cuda_stream()>>>(__VA_ARGS__);                     \
        CUDA_CHECK(cudaGetLastError());                                                 \
    } while (0)
#define CUDA_LAUNCH_BLOCKS CUDA_LAUNCH
#endif

// Blocks of `threads` for a grid-stride loop over n elements.
static inline unsigned cuda_grid(size_t n, unsigned threads)
{
    size_t blocks = (n + threads - 1) / threads;
    if (blocks == 0)
        blocks = 1;
    return blocks > 65535 ? 65535u : (unsigned)blocks;
}

// Scratch memory that lives until the backend closes and grows on demand,
// one buffer per slot, so that two buffers used by one operation never
// share memory. Growing synchronizes (it frees the old buffer); steady
// shapes allocate nothing.
enum cuda_slot {
    SLOT_IDS,        // embedding ids, labels
    SLOT_MASK,       // key and token masks
    SLOT_BUCKETS,    // position buckets, decode entries
    SLOT_OFFSETS,    // group offsets
    SLOT_POINTERS,   // pointer arrays of batched GEMMs
    SLOT_REDUCE,     // per-block partial sums
    SLOT_ROUTE,      // routing intermediates
    SLOT_STATS,      // per-expert statistics
    SLOT_WORK,       // a temporary array of an operation
    SLOT_COUNT
};
void *cuda_scratch(enum cuda_slot slot, size_t bytes);
// Pinned host memory of the same slots, for results read back.
void *cuda_host_scratch(enum cuda_slot slot, size_t bytes);

// Copies host memory into the slot's device buffer (in stream order) and
// returns that buffer; the host memory may change once this returns.
void *cuda_upload_host(enum cuda_slot slot, const void *host, size_t bytes);
// Copies device memory to host memory and waits for it.
void cuda_download_wait(void *host, const void *device, size_t bytes, enum cuda_slot slot);

// Row-major C = alpha op(A) op(B) + beta C through cuBLAS in the precision
// mode chosen with backend_cuda_set_precision.
void cuda_gemm(int trans_a, int trans_b, int m, int n, int k, float alpha, const float *a,
               int lda, const float *b, int ldb, float beta, float *c, int ldc);
// The same over `count` problems of equal shape whose matrices start at the
// device pointers in a_ptrs, b_ptrs and c_ptrs (host arrays, copied here).
void cuda_gemm_batched(int trans_a, int trans_b, int m, int n, int k, float alpha,
                       const float *const *a_ptrs, int lda, const float *const *b_ptrs, int ldb,
                       float beta, float *const *c_ptrs, int ldc, int count);
// cuBLAS's compute type for the precision mode.
cublasComputeType_t cuda_compute_type(void);

// Block reductions over blockDim.x threads (a power of two, at most
// CUDA_THREADS) through `shared`, which has blockDim.x elements. Every thread
// of the block must call them, and every thread gets the result; the
// closing barrier lets the caller reuse `shared` at once. The maximum skips
// NaN as the CPU's `if (x > max)` loops do.
template <typename T> __device__ static inline T block_reduce_sum(T value, T *shared)
{
    unsigned t = threadIdx.x;
    shared[t] = value;
    __syncthreads();
    for (unsigned stride = blockDim.x / 2; stride > 0; stride /= 2) {
        if (t < stride)
            shared[t] += shared[t + stride];
        __syncthreads();
    }
    T total = shared[0];
    __syncthreads();
    return total;
}

__device__ static inline float block_reduce_max(float value, float *shared)
{
    unsigned t = threadIdx.x;
    shared[t] = value;
    __syncthreads();
    for (unsigned stride = blockDim.x / 2; stride > 0; stride /= 2) {
        if (t < stride && shared[t + stride] > shared[t])
            shared[t] = shared[t + stride];
        __syncthreads();
    }
    float max = shared[0];
    __syncthreads();
    return max;
}

// The dropout keep factor of stream index `index`: keep_scale when its
// 16-bit value is at least threshold, else 0 (backend.h's dropout_spec).
__host__ __device__ static inline float cuda_dropout_factor(uint64_t seed, uint64_t index,
                                                            uint32_t threshold,
                                                            float keep_scale)
{
    uint32_t w[4];
    philox4x32_block(seed, index >> 3, w);
    unsigned lane = (unsigned)(index & 7);
    uint32_t word = w[lane >> 1];
    uint32_t value = lane & 1 ? word >> 16 : word & 0xffffu;
    return value >= threshold ? keep_scale : 0.0f;
}

// The keep threshold of dropout probability p: p * 65536 rounded up.
static inline uint32_t cuda_dropout_threshold(float p)
{
    double t = ceil((double)p * 65536.0);
    return t > 65536.0 ? 65536u : (uint32_t)t;
}

#endif
