// CUDA device discovery for `caem devices` and backend selection.
#include <cuda_runtime.h>
#include <stdio.h>

extern "C" {
#include "../src/cuda_device.h"
}

extern "C" int cuda_device_count(char *reason, size_t reason_size)
{
    int count = 0;
    cudaError_t status = cudaGetDeviceCount(&count);
    if (status == cudaErrorInsufficientDriver || status == cudaErrorNoDevice) {
        // Without a driver the runtime reports an insufficient driver version.
        snprintf(reason, reason_size,
                 "no NVIDIA driver or device found, or a driver older than this build's "
                 "CUDA %d.%d runtime needs (CUDA runtime: %s)",
                 CUDART_VERSION / 1000, CUDART_VERSION % 1000 / 10, cudaGetErrorString(status));
        return 0;
    }
    if (status != cudaSuccess) {
        snprintf(reason, reason_size, "%s", cudaGetErrorString(status));
        return 0;
    }
    if (count == 0)
        snprintf(reason, reason_size, "the CUDA runtime reports no device");
    return count;
}

extern "C" int cuda_device_describe(int index, char *out, size_t out_size)
{
    cudaDeviceProp prop;
    cudaError_t status = cudaGetDeviceProperties(&prop, index);
    if (status != cudaSuccess) {
        snprintf(out, out_size, "device %d: %s", index, cudaGetErrorString(status));
        return -1;
    }
    snprintf(out, out_size, "%s (compute capability %d.%d, %zu MiB)", prop.name, prop.major,
             prop.minor, prop.totalGlobalMem / (1024 * 1024));
    return 0;
}
