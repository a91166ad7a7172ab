// Host emulation of the CUDA runtime and cuBLAS calls the backend makes.
//
// Device memory comes from one reserved region that is readable and
// writable only inside the emulated runtime calls and kernels. Host code
// that reads or writes device memory directly, which would fault or read
// garbage on a GPU, gets a SIGSEGV with a message naming the region.
// Kernel arguments that point to host memory stop the program, as cuBLAS
// arguments do. New allocations are filled with 0xff bytes (NaN floats, -1
// integers), so a kernel that reads memory no kernel or copy wrote shows it.
#include "cuda_runtime.h"
#include "cublas_v2.h"
#include "cuda_emu_launch.h"

#include <cblas.h>
#include <errno.h>
#include <stdarg.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#include <map>
#include <vector>

dim3 threadIdx, blockIdx, blockDim, gridDim;

namespace {

// ---- device memory ----

char *arena;
size_t arena_size;
size_t arena_top;        // bytes handed out from the start of the region
size_t arena_open_bytes; // bytes currently readable and writable
int arena_depth;         // nesting of runtime calls that opened the region
std::map<size_t, size_t> arena_used;
std::map<size_t, size_t> arena_free;

__attribute__((format(printf, 1, 2))) [[noreturn]] void emu_fatal(const char *format, ...)
{
    va_list args;
    va_start(args, format);
    fprintf(stderr, "cuda emulation: ");
    vfprintf(stderr, format, args);
    fprintf(stderr, "\n");
    va_end(args);
    abort();
}

void segv_handler(int sig, siginfo_t *info, void *context)
{
    (void)context;
    char *address = (char *)info->si_addr;
    if (arena != nullptr && address >= arena && address < arena + arena_size) {
        char message[160];
        int length = snprintf(message, sizeof message,
                              "cuda emulation: host code touched device memory at offset %zu "
                              "outside a runtime call or kernel\n",
                              (size_t)(address - arena));
        if (write(2, message, (size_t)length) < 0) {
            // nothing more to do; the default action follows
        }
    }
    signal(sig, SIG_DFL);
    raise(sig);
}

size_t page_round(size_t bytes)
{
    size_t page = (size_t)sysconf(_SC_PAGESIZE);
    return (bytes + page - 1) / page * page;
}

void arena_init()
{
    if (arena != nullptr)
        return;
    const char *mib = getenv("CAEM_CUDA_EMU_MIB");
    arena_size = (size_t)(mib != nullptr ? atol(mib) : 4096) << 20;
    void *p = mmap(nullptr, arena_size, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE,
                   -1, 0);
    if (p == MAP_FAILED)
        emu_fatal("cannot reserve %zu MiB of address space for device memory (set "
                  "CAEM_CUDA_EMU_MIB lower)",
                  arena_size >> 20);
    arena = (char *)p;
    struct sigaction action;
    memset(&action, 0, sizeof action);
    action.sa_sigaction = segv_handler;
    action.sa_flags = SA_SIGINFO;
    sigaction(SIGSEGV, &action, nullptr);
}

void arena_protect(size_t bytes, int prot)
{
    if (bytes > 0 && mprotect(arena, bytes, prot) != 0)
        emu_fatal("mprotect failed on %zu bytes: %s", bytes, strerror(errno));
}

// Opens the region for a runtime call; calls nest.
void enter()
{
    arena_init();
    if (arena_depth++ == 0) {
        arena_open_bytes = page_round(arena_top);
        arena_protect(arena_open_bytes, PROT_READ | PROT_WRITE);
    }
}

void leave()
{
    if (--arena_depth == 0) {
        arena_protect(arena_open_bytes, PROT_NONE);
        arena_open_bytes = 0;
    }
}

struct scope {
    scope() { enter(); }
    ~scope() { leave(); }
};

void *arena_alloc(size_t bytes)
{
    size_t size = (bytes + 255) / 256 * 256;
    if (size == 0)
        size = 256;
    for (auto it = arena_free.begin(); it != arena_free.end(); ++it) {
        if (it->second < size)
            continue;
        size_t offset = it->first, left = it->second - size;
        arena_free.erase(it);
        if (left > 0)
            arena_free[offset + size] = left;
        arena_used[offset] = size;
        return arena + offset;
    }
    if (arena_top + size > arena_size)
        return nullptr;
    size_t offset = arena_top;
    arena_top += size;
    // the new pages become part of the open region of this call
    size_t open = page_round(arena_top);
    if (open > arena_open_bytes) {
        mprotect(arena + arena_open_bytes, open - arena_open_bytes, PROT_READ | PROT_WRITE);
        arena_open_bytes = open;
    }
    arena_used[offset] = size;
    return arena + offset;
}

bool arena_release(void *ptr)
{
    auto it = arena_used.find((size_t)((char *)ptr - arena));
    if (it == arena_used.end())
        return false;
    size_t offset = it->first, size = it->second;
    arena_used.erase(it);
    auto next = arena_free.find(offset + size);
    if (next != arena_free.end()) {
        size += next->second;
        arena_free.erase(next);
    }
    auto prev = arena_free.lower_bound(offset);
    if (prev != arena_free.begin()) {
        --prev;
        if (prev->first + prev->second == offset) {
            offset = prev->first;
            size += prev->second;
            arena_free.erase(prev);
        }
    }
    arena_free[offset] = size;
    // give the whole pages of the free block back, so that mprotect, whose
    // cost grows with the pages present, does not walk them at every call
    size_t page = (size_t)sysconf(_SC_PAGESIZE);
    size_t first = page_round(offset), last = (offset + size) / page * page;
    if (last > first)
        madvise(arena + first, last - first, MADV_DONTNEED);
    return true;
}

// ---- fibers for blocks that synchronize ----

// A fiber is a stack and a saved stack pointer. cuda_emu_switch saves the
// callee-saved registers on the current stack, stores its pointer in *save
// and resumes the stack at load. It replaces ucontext's swapcontext, which
// makes system calls for the signal mask at every switch and made the
// emulated tests about ten times slower.
extern "C" void cuda_emu_switch(void **save, void *load);
#if defined(__x86_64__)
__asm__(".text\n"
        ".globl cuda_emu_switch\n"
        ".type cuda_emu_switch, @function\n"
        "cuda_emu_switch:\n"
        "    pushq %rbp\n"
        "    pushq %rbx\n"
        "    pushq %r12\n"
        "    pushq %r13\n"
        "    pushq %r14\n"
        "    pushq %r15\n"
        "    movq %rsp, (%rdi)\n"
        "    movq %rsi, %rsp\n"
        "    popq %r15\n"
        "    popq %r14\n"
        "    popq %r13\n"
        "    popq %r12\n"
        "    popq %rbx\n"
        "    popq %rbp\n"
        "    ret\n"
        ".size cuda_emu_switch, .-cuda_emu_switch\n");
#else
#error "the CUDA emulation's fiber switch is written for x86-64 only"
#endif

enum fiber_state { FIBER_READY, FIBER_RUNNING, FIBER_AT_BARRIER, FIBER_DONE };
const size_t FIBER_STACK = 128 * 1024;

std::vector<char *> fiber_stacks;
std::vector<void *> fiber_sp;
std::vector<int> fiber_states;
std::vector<dim3> fiber_index;
void *scheduler_sp;
int fiber_current = -1;
const std::function<void()> *fiber_body;
const char *kernel_name = "";

// The first code of every fiber; it never returns, it switches back.
void fiber_start()
{
    (*fiber_body)();
    fiber_states[fiber_current] = FIBER_DONE;
    void *unused;
    cuda_emu_switch(&unused, scheduler_sp);
}

// A stack that starts fiber_start when switched to: six zero registers for
// cuda_emu_switch to pop, fiber_start as the return address, then a zero
// return address for fiber_start itself, with the ABI's 16-byte alignment.
void *fiber_prepare(char *stack)
{
    uintptr_t top = ((uintptr_t)stack + FIBER_STACK) & ~(uintptr_t)15;
    void **sp = (void **)top;
    *--sp = nullptr;
    *--sp = (void *)fiber_start;
    for (int i = 0; i < 6; i++)
        *--sp = nullptr;
    return sp;
}

void run_block_fibers(dim3 block)
{
    int n = (int)(block.x * block.y * block.z);
    while ((int)fiber_stacks.size() < n) {
        char *stack = (char *)mmap(nullptr, FIBER_STACK, PROT_READ | PROT_WRITE,
                                   MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        if (stack == MAP_FAILED)
            emu_fatal("cannot map a fiber stack for kernel %s (%d threads)", kernel_name, n);
        fiber_stacks.push_back(stack);
        fiber_sp.push_back(nullptr);
        fiber_states.push_back(FIBER_DONE);
        fiber_index.emplace_back();
    }
    for (int t = 0; t < n; t++) {
        fiber_sp[t] = fiber_prepare(fiber_stacks[t]);
        fiber_states[t] = FIBER_READY;
        fiber_index[t] = dim3(t % block.x, t / block.x % block.y, t / (block.x * block.y));
    }
    for (;;) {
        for (int t = 0; t < n; t++) {
            if (fiber_states[t] == FIBER_DONE)
                continue;
            fiber_current = t;
            threadIdx = fiber_index[t];
            fiber_states[t] = FIBER_RUNNING;
            cuda_emu_switch(&scheduler_sp, fiber_sp[t]);
        }
        int done = 0, waiting = 0;
        for (int t = 0; t < n; t++) {
            done += fiber_states[t] == FIBER_DONE;
            waiting += fiber_states[t] == FIBER_AT_BARRIER;
        }
        if (waiting == 0)
            break;
        if (done > 0)
            emu_fatal("kernel %s: %d threads of a block ended while %d others wait at "
                      "__syncthreads",
                      kernel_name, done, waiting);
    }
    fiber_current = -1;
}

// ---- GEMM ----

float round_mantissa(float x, int drop_bits)
{
    uint32_t bits;
    memcpy(&bits, &x, sizeof bits);
    if ((bits & 0x7f800000u) == 0x7f800000u)
        return x;
    uint32_t half = 1u << (drop_bits - 1);
    uint32_t odd = (bits >> drop_bits) & 1u;
    bits = (bits + half - 1 + odd) & ~((1u << drop_bits) - 1);
    memcpy(&x, &bits, sizeof x);
    return x;
}

int compute_drop_bits(cublasComputeType_t compute)
{
    if (compute == CUBLAS_COMPUTE_32F_FAST_TF32)
        return 13;
    if (compute == CUBLAS_COMPUTE_32F_FAST_16BF)
        return 16;
    return 0;
}

bool check_device(const char *call, const char *what, const void *ptr)
{
    if (ptr != nullptr && cuda_emu_is_device(ptr))
        return true;
    fprintf(stderr, "cuda emulation: %s: %s %p is not device memory\n", call, what, ptr);
    return false;
}

// Column-major C = alpha op(A) op(B) + beta C with the compute type's rounding.
cublasStatus_t gemm_one(const char *call, cublasOperation_t transa, cublasOperation_t transb,
                        int m, int n, int k, float alpha, const float *a, int lda,
                        const float *b, int ldb, float beta, float *c, int ldc,
                        cublasComputeType_t compute)
{
    if (m < 0 || n < 0 || k < 0 || ldc < (m > 1 ? m : 1))
        return CUBLAS_STATUS_INVALID_VALUE;
    int a_rows = transa == CUBLAS_OP_N ? m : k, a_cols = transa == CUBLAS_OP_N ? k : m;
    int b_rows = transb == CUBLAS_OP_N ? k : n, b_cols = transb == CUBLAS_OP_N ? n : k;
    if (lda < (a_rows > 1 ? a_rows : 1) || ldb < (b_rows > 1 ? b_rows : 1)) {
        fprintf(stderr, "cuda emulation: %s: leading dimension too small (lda %d for %d rows, "
                        "ldb %d for %d rows)\n",
                call, lda, a_rows, ldb, b_rows);
        return CUBLAS_STATUS_INVALID_VALUE;
    }
    if (m == 0 || n == 0)
        return CUBLAS_STATUS_SUCCESS;
    if (!check_device(call, "C", c) || (k > 0 && (!check_device(call, "A", a) ||
                                                  !check_device(call, "B", b))))
        return CUBLAS_STATUS_INVALID_VALUE;
    if (k == 0) {
        for (int j = 0; j < n; j++)
            for (int i = 0; i < m; i++)
                c[(size_t)j * ldc + i] = beta == 0.0f ? 0.0f : beta * c[(size_t)j * ldc + i];
        return CUBLAS_STATUS_SUCCESS;
    }
    int drop = compute_drop_bits(compute);
    std::vector<float> ra, rb;
    if (drop > 0) {
        ra.resize((size_t)a_rows * a_cols);
        rb.resize((size_t)b_rows * b_cols);
        for (int j = 0; j < a_cols; j++)
            for (int i = 0; i < a_rows; i++)
                ra[(size_t)j * a_rows + i] = round_mantissa(a[(size_t)j * lda + i], drop);
        for (int j = 0; j < b_cols; j++)
            for (int i = 0; i < b_rows; i++)
                rb[(size_t)j * b_rows + i] = round_mantissa(b[(size_t)j * ldb + i], drop);
        a = ra.data();
        lda = a_rows;
        b = rb.data();
        ldb = b_rows;
    }
    cblas_sgemm(CblasColMajor, transa == CUBLAS_OP_N ? CblasNoTrans : CblasTrans,
                transb == CUBLAS_OP_N ? CblasNoTrans : CblasTrans, m, n, k, alpha, a, lda, b,
                ldb, beta, c, ldc);
    return CUBLAS_STATUS_SUCCESS;
}

bool float_types(cudaDataType a, cudaDataType b, cudaDataType c)
{
    return a == CUDA_R_32F && b == CUDA_R_32F && c == CUDA_R_32F;
}

} // namespace

// ---- launches ----

void cuda_emu_barrier(void)
{
    if (fiber_current < 0)
        emu_fatal("kernel %s calls __syncthreads but was started with CUDA_LAUNCH; start it "
                  "with CUDA_LAUNCH_BLOCKS",
                  kernel_name);
    fiber_states[fiber_current] = FIBER_AT_BARRIER;
    cuda_emu_switch(&fiber_sp[fiber_current], scheduler_sp);
}

void cuda_emu_host_argument(const char *name, int index, const void *ptr)
{
    emu_fatal("kernel %s: argument %d (%p) points to host memory, not device memory", name,
              index, ptr);
}

void cuda_emu_run(const char *name, int uses_barrier, dim3 grid, dim3 block,
                  const std::function<void()> &body)
{
    size_t threads = (size_t)block.x * block.y * block.z;
    if (threads == 0 || threads > 1024 || grid.x == 0 || grid.y == 0 || grid.z == 0 ||
        grid.y > 65535 || grid.z > 65535)
        emu_fatal("kernel %s: invalid launch of %zu threads per block in a grid of %u x %u x %u",
                  name, threads, grid.x, grid.y, grid.z);
    scope open;
    kernel_name = name;
    gridDim = grid;
    blockDim = block;
    fiber_body = &body;
    for (unsigned z = 0; z < grid.z; z++)
        for (unsigned y = 0; y < grid.y; y++)
            for (unsigned x = 0; x < grid.x; x++) {
                blockIdx = dim3(x, y, z);
                if (uses_barrier) {
                    run_block_fibers(block);
                    continue;
                }
                for (unsigned t = 0; t < threads; t++) {
                    threadIdx = dim3(t % block.x, t / block.x % block.y,
                                     t / (block.x * block.y));
                    body();
                }
            }
    kernel_name = "";
}

int cuda_emu_is_device(const void *ptr)
{
    const char *p = (const char *)ptr;
    return arena != nullptr && p >= arena && p < arena + arena_top;
}

// ---- runtime ----

cudaError_t cudaGetDeviceCount(int *count)
{
    *count = 1;
    return cudaSuccess;
}

cudaError_t cudaGetDeviceProperties(cudaDeviceProp *prop, int device)
{
    if (device != 0)
        return cudaErrorInvalidValue;
    memset(prop, 0, sizeof *prop);
    snprintf(prop->name, sizeof prop->name, "host emulation");
    prop->major = 9;
    prop->minor = 0;
    prop->totalGlobalMem = arena_size;
    prop->multiProcessorCount = 1;
    return cudaSuccess;
}

cudaError_t cudaSetDevice(int device)
{
    return device == 0 ? cudaSuccess : cudaErrorInvalidValue;
}

cudaError_t cudaMalloc(void **ptr, size_t bytes)
{
    scope open;
    void *p = arena_alloc(bytes);
    if (p == nullptr) {
        *ptr = nullptr;
        return cudaErrorMemoryAllocation;
    }
    memset(p, 0xff, bytes);
    *ptr = p;
    return cudaSuccess;
}

cudaError_t cudaFree(void *ptr)
{
    if (ptr == nullptr)
        return cudaSuccess;
    scope open;
    return arena_release(ptr) ? cudaSuccess : cudaErrorInvalidValue;
}

cudaError_t cudaMallocHost(void **ptr, size_t bytes)
{
    *ptr = malloc(bytes > 0 ? bytes : 1);
    return *ptr != nullptr ? cudaSuccess : cudaErrorMemoryAllocation;
}

cudaError_t cudaFreeHost(void *ptr)
{
    free(ptr);
    return cudaSuccess;
}

cudaError_t cudaMemcpyAsync(void *dst, const void *src, size_t bytes, cudaMemcpyKind kind,
                            cudaStream_t stream)
{
    (void)stream;
    if (bytes == 0)
        return cudaSuccess;
    scope open;
    bool dst_device = cuda_emu_is_device(dst), src_device = cuda_emu_is_device(src);
    bool ok = true;
    if (kind == cudaMemcpyHostToDevice)
        ok = dst_device && !src_device;
    else if (kind == cudaMemcpyDeviceToHost)
        ok = !dst_device && src_device;
    else if (kind == cudaMemcpyDeviceToDevice)
        ok = dst_device && src_device;
    else if (kind == cudaMemcpyHostToHost)
        ok = !dst_device && !src_device;
    if (!ok || (dst_device && !cuda_emu_is_device((const char *)dst + bytes - 1)) ||
        (src_device && !cuda_emu_is_device((const char *)src + bytes - 1))) {
        fprintf(stderr, "cuda emulation: cudaMemcpy of %zu bytes, kind %d, from %s to %s "
                        "memory\n",
                bytes, (int)kind, src_device ? "device" : "host", dst_device ? "device" : "host");
        return cudaErrorInvalidValue;
    }
    memmove(dst, src, bytes);
    return cudaSuccess;
}

cudaError_t cudaMemcpy(void *dst, const void *src, size_t bytes, cudaMemcpyKind kind)
{
    return cudaMemcpyAsync(dst, src, bytes, kind, nullptr);
}

cudaError_t cudaMemsetAsync(void *ptr, int value, size_t bytes, cudaStream_t stream)
{
    (void)stream;
    if (bytes == 0)
        return cudaSuccess;
    scope open;
    if (!cuda_emu_is_device(ptr) || !cuda_emu_is_device((const char *)ptr + bytes - 1)) {
        fprintf(stderr, "cuda emulation: cudaMemsetAsync of %zu bytes at %p outside device "
                        "memory\n",
                bytes, ptr);
        return cudaErrorInvalidValue;
    }
    memset(ptr, value, bytes);
    return cudaSuccess;
}

cudaError_t cudaMemGetInfo(size_t *free_bytes, size_t *total_bytes)
{
    arena_init();
    *total_bytes = arena_size;
    *free_bytes = arena_size - arena_top;
    return cudaSuccess;
}

cudaError_t cudaStreamCreateWithFlags(cudaStream_t *stream, unsigned flags)
{
    (void)flags;
    *stream = (cudaStream_t)malloc(1);
    return cudaSuccess;
}

cudaError_t cudaStreamDestroy(cudaStream_t stream)
{
    free(stream);
    return cudaSuccess;
}

cudaError_t cudaStreamSynchronize(cudaStream_t stream)
{
    (void)stream;
    return cudaSuccess;
}

cudaError_t cudaDeviceSynchronize(void)
{
    return cudaSuccess;
}

struct cuda_emu_event {
    struct timespec when;
};

cudaError_t cudaEventCreate(cudaEvent_t *event)
{
    *event = (cudaEvent_t)calloc(1, sizeof(struct cuda_emu_event));
    return cudaSuccess;
}

cudaError_t cudaEventDestroy(cudaEvent_t event)
{
    free(event);
    return cudaSuccess;
}

cudaError_t cudaEventRecord(cudaEvent_t event, cudaStream_t stream)
{
    (void)stream;
    clock_gettime(CLOCK_MONOTONIC, &event->when);
    return cudaSuccess;
}

cudaError_t cudaEventSynchronize(cudaEvent_t event)
{
    (void)event;
    return cudaSuccess;
}

cudaError_t cudaEventElapsedTime(float *ms, cudaEvent_t start, cudaEvent_t end)
{
    *ms = (float)((end->when.tv_sec - start->when.tv_sec) * 1e3 +
                  (end->when.tv_nsec - start->when.tv_nsec) * 1e-6);
    return cudaSuccess;
}

cudaError_t cudaGetLastError(void)
{
    return cudaSuccess;
}

const char *cudaGetErrorString(cudaError_t status)
{
    switch (status) {
    case cudaSuccess:
        return "no error";
    case cudaErrorInvalidValue:
        return "invalid argument";
    case cudaErrorMemoryAllocation:
        return "out of memory";
    default:
        return "unknown error";
    }
}

// ---- cuBLAS ----

struct cuda_emu_blas {
    int unused;
};

cublasStatus_t cublasCreate(cublasHandle_t *handle)
{
    *handle = (cublasHandle_t)calloc(1, sizeof(struct cuda_emu_blas));
    return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasDestroy(cublasHandle_t handle)
{
    free(handle);
    return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasSetStream(cublasHandle_t handle, cudaStream_t stream)
{
    (void)handle;
    (void)stream;
    return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasSetMathMode(cublasHandle_t handle, cublasMath_t mode)
{
    (void)handle;
    (void)mode;
    return CUBLAS_STATUS_SUCCESS;
}

const char *cublasGetStatusString(cublasStatus_t status)
{
    switch (status) {
    case CUBLAS_STATUS_SUCCESS:
        return "CUBLAS_STATUS_SUCCESS";
    case CUBLAS_STATUS_INVALID_VALUE:
        return "CUBLAS_STATUS_INVALID_VALUE";
    case CUBLAS_STATUS_NOT_SUPPORTED:
        return "CUBLAS_STATUS_NOT_SUPPORTED";
    default:
        return "CUBLAS_STATUS_EXECUTION_FAILED";
    }
}

cublasStatus_t cublasGemmEx(cublasHandle_t handle, cublasOperation_t transa,
                            cublasOperation_t transb, int m, int n, int k, const void *alpha,
                            const void *a, cudaDataType a_type, int lda, const void *b,
                            cudaDataType b_type, int ldb, const void *beta, void *c,
                            cudaDataType c_type, int ldc, cublasComputeType_t compute,
                            cublasGemmAlgo_t algo)
{
    (void)handle;
    (void)algo;
    if (!float_types(a_type, b_type, c_type))
        return CUBLAS_STATUS_NOT_SUPPORTED;
    scope open;
    return gemm_one("cublasGemmEx", transa, transb, m, n, k, *(const float *)alpha,
                    (const float *)a, lda, (const float *)b, ldb, *(const float *)beta,
                    (float *)c, ldc, compute);
}

cublasStatus_t cublasGemmBatchedEx(cublasHandle_t handle, cublasOperation_t transa,
                                   cublasOperation_t transb, int m, int n, int k,
                                   const void *alpha, const void *const a_array[],
                                   cudaDataType a_type, int lda, const void *const b_array[],
                                   cudaDataType b_type, int ldb, const void *beta,
                                   void *const c_array[], cudaDataType c_type, int ldc,
                                   int batch_count, cublasComputeType_t compute,
                                   cublasGemmAlgo_t algo)
{
    (void)handle;
    (void)algo;
    if (!float_types(a_type, b_type, c_type))
        return CUBLAS_STATUS_NOT_SUPPORTED;
    scope open;
    if (batch_count > 0 && (!check_device("cublasGemmBatchedEx", "A array", a_array) ||
                            !check_device("cublasGemmBatchedEx", "B array", b_array) ||
                            !check_device("cublasGemmBatchedEx", "C array", c_array)))
        return CUBLAS_STATUS_INVALID_VALUE;
    for (int i = 0; i < batch_count; i++) {
        cublasStatus_t status = gemm_one(
            "cublasGemmBatchedEx", transa, transb, m, n, k, *(const float *)alpha,
            (const float *)a_array[i], lda, (const float *)b_array[i], ldb,
            *(const float *)beta, (float *)c_array[i], ldc, compute);
        if (status != CUBLAS_STATUS_SUCCESS)
            return status;
    }
    return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasGemmStridedBatchedEx(
    cublasHandle_t handle, cublasOperation_t transa, cublasOperation_t transb, int m, int n,
    int k, const void *alpha, const void *a, cudaDataType a_type, int lda, long long stride_a,
    const void *b, cudaDataType b_type, int ldb, long long stride_b, const void *beta, void *c,
    cudaDataType c_type, int ldc, long long stride_c, int batch_count,
    cublasComputeType_t compute, cublasGemmAlgo_t algo)
{
    (void)handle;
    (void)algo;
    if (!float_types(a_type, b_type, c_type))
        return CUBLAS_STATUS_NOT_SUPPORTED;
    scope open;
    for (int i = 0; i < batch_count; i++) {
        cublasStatus_t status = gemm_one(
            "cublasGemmStridedBatchedEx", transa, transb, m, n, k, *(const float *)alpha,
            (const float *)a + i * stride_a, lda, (const float *)b + i * stride_b, ldb,
            *(const float *)beta, (float *)c + i * stride_c, ldc, compute);
        if (status != CUBLAS_STATUS_SUCCESS)
            return status;
    }
    return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasGemmGroupedBatchedEx(
    cublasHandle_t handle, const cublasOperation_t transa_array[],
    const cublasOperation_t transb_array[], const int m_array[], const int n_array[],
    const int k_array[], const void *alpha_array, const void *const a_array[],
    cudaDataType_t a_type, const int lda_array[], const void *const b_array[],
    cudaDataType_t b_type, const int ldb_array[], const void *beta_array,
    void *const c_array[], cudaDataType_t c_type, const int ldc_array[], int group_count,
    const int group_size[], cublasComputeType_t compute)
{
    (void)handle;
    if (!float_types(a_type, b_type, c_type))
        return CUBLAS_STATUS_NOT_SUPPORTED;
    // NOTE: whether the real cuBLAS takes bf16 compute in grouped calls is
    // unverified here. The emulation rejects it, so that the tests run the
    // backend's fallback (one cublasGemmEx per group) in bf16 mode.
    if (compute == CUBLAS_COMPUTE_32F_FAST_16BF)
        return CUBLAS_STATUS_NOT_SUPPORTED;
    scope open;
    // the parameter arrays are host memory, the pointer arrays device memory
    if (cuda_emu_is_device(m_array) || cuda_emu_is_device(group_size)) {
        fprintf(stderr, "cuda emulation: cublasGemmGroupedBatchedEx: the size arrays must be "
                        "host memory\n");
        return CUBLAS_STATUS_INVALID_VALUE;
    }
    int total = 0;
    for (int g = 0; g < group_count; g++)
        total += group_size[g];
    if (total > 0 && (!check_device("cublasGemmGroupedBatchedEx", "A array", a_array) ||
                      !check_device("cublasGemmGroupedBatchedEx", "B array", b_array) ||
                      !check_device("cublasGemmGroupedBatchedEx", "C array", c_array)))
        return CUBLAS_STATUS_INVALID_VALUE;
    const float *alphas = (const float *)alpha_array, *betas = (const float *)beta_array;
    int problem = 0;
    for (int g = 0; g < group_count; g++)
        for (int i = 0; i < group_size[g]; i++, problem++) {
            cublasStatus_t status = gemm_one(
                "cublasGemmGroupedBatchedEx", transa_array[g], transb_array[g], m_array[g],
                n_array[g], k_array[g], alphas[g], (const float *)a_array[problem],
                lda_array[g], (const float *)b_array[problem], ldb_array[g], betas[g],
                (float *)c_array[problem], ldc_array[g], compute);
            if (status != CUBLAS_STATUS_SUCCESS)
                return status;
        }
    return CUBLAS_STATUS_SUCCESS;
}
