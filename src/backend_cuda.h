/* The CUDA backend (kernels/), built when nvcc was found (CAEM_HAVE_CUDA).
 *
 * It implements the whole backend table on one GPU: cuBLAS for the GEMMs,
 * kernels for the rest, one stream for everything. Operations whose table
 * entry hands results to host memory (routing offsets and counts, loss
 * values, usage counters) wait for the stream there. */
#ifndef CAEM_BACKEND_CUDA_H
#define CAEM_BACKEND_CUDA_H

#include "backend.h"
#include "error.h"

/* GEMM precision: float32 throughout, TF32 inputs or bf16 inputs, both with
 * float32 accumulation. Elementwise work and reductions are float32 (losses
 * in double) in every mode. */
enum cuda_precision {
    CUDA_PRECISION_FP32,
    CUDA_PRECISION_TF32,
    CUDA_PRECISION_BF16
};

/* Opens the backend on device 0 the first time (later calls return the same
 * table), or fails with the reason. */
int backend_cuda_open(const struct backend **out, struct caem_error *err);

/* Parses "fp32", "tf32" or "bf16". */
int cuda_precision_parse(const char *name, enum cuda_precision *out, struct caem_error *err);
void backend_cuda_set_precision(enum cuda_precision precision);
enum cuda_precision backend_cuda_precision(void);
const char *cuda_precision_name(enum cuda_precision precision);

/* Waits until the GPU has finished every operation queued so far (for
 * timing: the table's operations return before the GPU runs them). */
void backend_cuda_synchronize(void);

/* Returns the best rate, in GFLOP/s, of `repeats` square float32 GEMMs of
 * `size` in the current precision mode, or a negative value when the
 * backend is not open. */
double backend_cuda_gemm_rate(int size, int repeats);

/* Writes "NAME (compute capability X.Y, N MiB)" for the open device. */
void backend_cuda_describe(char *out, size_t out_size);

#endif
