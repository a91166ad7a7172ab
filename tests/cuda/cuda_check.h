/* Shared by the CUDA agreement tests: they run each operation on the CUDA
 * backend and on the CPU reference with the same random inputs and compare.
 *
 * Each program builds twice: against the real CUDA runtime (its tests skip
 * when no GPU is present) and against tests/cuda_emu, the host emulation,
 * where they always run (CAEM_TEST_VARIANT=emulated names those results).
 * Device outputs are filled with NaN before each call, so an element the
 * kernel never writes fails the comparison. */
#ifndef CAEM_CUDA_CHECK_H
#define CAEM_CUDA_CHECK_H

#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "backend.h"
#include "backend_cuda.h"
#include "rng.h"
#include "test.h"

/* Largest relative errors allowed against the CPU reference, by GEMM
 * precision; operations without a GEMM use the float32 one. */
#define CUDA_TOL_FP32 1e-5
#define CUDA_TOL_TF32 1e-3
#define CUDA_TOL_BF16 1e-2

static const struct backend *cuda_be;
static const struct backend *cpu_be;
static char cuda_unavailable[sizeof(((struct caem_error *)0)->message) + 16];

/* Opens both backends; without a GPU, cuda_be stays NULL and the reason is
 * kept for the skip lines. */
static inline void cuda_check_open(void)
{
    struct caem_error err;
    cpu_be = backend_cpu();
    if (backend_cuda_open(&cuda_be, &err) != 0) {
        cuda_be = NULL;
        snprintf(cuda_unavailable, sizeof cuda_unavailable, "no GPU: %s", err.message);
    }
}

#define SKIP_WITHOUT_GPU()                                                              \
    do {                                                                                \
        if (cuda_be == NULL)                                                            \
            SKIP("%.200s", cuda_unavailable);                                               \
    } while (0)

/* Uniform values in [lo, hi) from a fixed stream. */
static inline void fill_uniform(float *x, size_t n, uint64_t seed, float lo, float hi)
{
    for (size_t i = 0; i < n; i++)
        x[i] = lo + (hi - lo) * rng_uniform(seed, i);
}

static inline float *host_uniform(size_t n, uint64_t seed, float lo, float hi)
{
    float *x = malloc(sizeof(float) * (n > 0 ? n : 1));
    fill_uniform(x, n, seed, lo, hi);
    return x;
}

/* A device copy of n host floats. */
static inline float *device_copy(const float *host, size_t n)
{
    float *d = cuda_be->alloc(sizeof(float) * (n > 0 ? n : 1));
    if (n > 0)
        cuda_be->upload(d, host, sizeof(float) * n);
    return d;
}

static inline void *device_copy_bytes(const void *host, size_t bytes)
{
    void *d = cuda_be->alloc(bytes > 0 ? bytes : 1);
    if (bytes > 0)
        cuda_be->upload(d, host, bytes);
    return d;
}

/* A device buffer of n floats, every one NaN. */
static inline float *device_poisoned(size_t n)
{
    float *host = malloc(sizeof(float) * (n > 0 ? n : 1));
    for (size_t i = 0; i < n; i++)
        host[i] = NAN;
    float *d = device_copy(host, n);
    free(host);
    return d;
}

/* Poisons an existing device buffer of n floats. */
static inline void device_poison(float *d, size_t n)
{
    float *host = malloc(sizeof(float) * (n > 0 ? n : 1));
    for (size_t i = 0; i < n; i++)
        host[i] = NAN;
    cuda_be->upload(d, host, sizeof(float) * n);
    free(host);
}

/* A host copy of n device floats (the caller frees it). */
static inline float *host_copy(const float *d, size_t n)
{
    float *host = malloc(sizeof(float) * (n > 0 ? n : 1));
    if (n > 0)
        cuda_be->download(host, d, sizeof(float) * n);
    return host;
}

/* max |got - want| / max |want| (absolute when want is all zero); infinity
 * when either side has a NaN or an infinity. */
static inline double relative_error(const float *got, const float *want, size_t n)
{
    double diff = 0.0, scale = 0.0;
    for (size_t i = 0; i < n; i++) {
        if (!isfinite(got[i]) || !isfinite(want[i]))
            return INFINITY;
        double d = fabs((double)got[i] - want[i]);
        if (d > diff)
            diff = d;
        if (fabs(want[i]) > scale)
            scale = fabs(want[i]);
    }
    return scale > 0.0 ? diff / scale : diff;
}

/* Compares a device result with a host reference of n floats. */
#define CHECK_DEVICE_NEAR(device, reference, n, tol, label)                             \
    do {                                                                                \
        float *got_ = host_copy((device), (n));                                         \
        double error_ = relative_error(got_, (reference), (n));                         \
        CHECK_MSG(error_ <= (tol), "%s: relative error %.3g over %zu values (allowed %g)", \
                  (label), error_, (size_t)(n), (double)(tol));                         \
        free(got_);                                                                     \
    } while (0)

/* Names the suite and opens the backends. */
#define CUDA_TEST_SUITE(name)                                                           \
    do {                                                                                \
        TEST_SUITE(name);                                                               \
        cuda_check_open();                                                              \
    } while (0)

#endif
