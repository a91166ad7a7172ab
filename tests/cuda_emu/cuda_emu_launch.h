// Kernel launches of the host emulation (used through kernels/cuda_internal.h).
#ifndef CAEM_CUDA_EMU_LAUNCH_H
#define CAEM_CUDA_EMU_LAUNCH_H

#include <functional>
#include <type_traits>

#include "cuda_runtime.h"

// Runs body once per thread of every block. With uses_barrier the threads
// of a block run as fibers that switch at __syncthreads. Without it they
// run one after another, and a call of __syncthreads stops the program.
void cuda_emu_run(const char *name, int uses_barrier, dim3 grid, dim3 block,
                  const std::function<void()> &body);
// Stops the program: kernel `name` got a host pointer as argument `index`.
void cuda_emu_host_argument(const char *name, int index, const void *ptr);

template <typename T> static inline void cuda_emu_check_argument(const char *name, int index,
                                                                 const T &value)
{
    if constexpr (std::is_pointer<T>::value) {
        if (value != nullptr && !cuda_emu_is_device((const void *)value))
            cuda_emu_host_argument(name, index, (const void *)value);
    }
}

template <typename... Params, typename... Args>
static inline void cuda_emu_launch(const char *name, int uses_barrier, dim3 grid, dim3 block,
                                   void (*kernel)(Params...), Args... args)
{
    int index = 0;
    (cuda_emu_check_argument(name, index++, args), ...);
    std::function<void()> body = [=]() { kernel(args...); };
    cuda_emu_run(name, uses_barrier, grid, block, body);
}

#endif
