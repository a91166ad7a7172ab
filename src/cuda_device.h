/* CUDA device discovery, compiled from kernels/device.cu when the build
 * found nvcc (CAEM_HAVE_CUDA is then defined). */
#ifndef CAEM_CUDA_DEVICE_H
#define CAEM_CUDA_DEVICE_H

#include <stddef.h>

/* Returns the number of CUDA devices; 0 with a reason in `reason` when the
 * driver or a device is missing. */
int cuda_device_count(char *reason, size_t reason_size);

/* Writes "NAME (compute capability X.Y, N MiB)" for device `index`. */
int cuda_device_describe(int index, char *out, size_t out_size);

#endif
