// MoE routing, dispatch and combine, the router's losses, the expert usage
// statistics and the cross-entropy loss on the GPU. Each function matches its
// CPU reference in src/backend_cpu.c: the same softmax order per token, the
// same argmax tie rule and capacity order, and double precision wherever the
// reference accumulates in double. Sums over many tokens add in another order,
// so they agree with the reference to rounding, not bit for bit.
//
// Only the functions with host outputs (routing offsets and counts, losses,
// usage accumulators) wait for the stream, once, at the end.
#include <math.h>
#include <string.h>

#include "cuda_ops.h"

extern "C" {
#include "../src/config.h"
}

// Tokens summed by one thread of the statistics kernels before the partial
// sums over chunks are added up.
#define STATS_CHUNK 64

// out[0] = the sum of count partial sums, in one block.
static __global__ void sum_partials_kernel(const double *partials, int count, double *out)
{
    __shared__ double shared[CUDA_THREADS];
    double sum = 0.0;
    for (int i = threadIdx.x; i < count; i += blockDim.x)
        sum += partials[i];
    sum = block_reduce_sum(sum, shared);
    if (threadIdx.x == 0)
        out[0] = sum;
}

// Adds up the blocks' partial sums and downloads the total, which is the
// caller's one wait. partials is in SLOT_REDUCE with room for blocks + 1 values.
static double partials_total(double *partials, unsigned blocks)
{
    CUDA_LAUNCH_BLOCKS(sum_partials_kernel, 1, CUDA_THREADS, (const double *)partials,
                       (int)blocks, partials + blocks);
    double total = 0.0;
    cuda_download_wait(&total, partials + blocks, sizeof total, SLOT_REDUCE);
    return total;
}

// out[g, k] = sum over chunks c of partials[g, c, k], for groups of `chunks`
// rows of `width` values each.
static __global__ void sum_chunks_kernel(const double *partials, int groups, int chunks,
                                         int width, double *out)
{
    size_t total = (size_t)groups * width;
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < total;
         i += (size_t)gridDim.x * blockDim.x) {
        size_t g = i / width, k = i % width;
        const double *column = partials + g * chunks * width + k;
        double sum = 0.0;
        for (int c = 0; c < chunks; c++)
            sum += column[(size_t)c * width];
        out[i] = sum;
    }
}

// ---------------------------------------------------------------------------
// Routing. The capacity rule needs each token's rank among the earlier tokens
// of its sequence routed to the same expert. One thread per (sequence, expert)
// scans that sequence in token order to find it. The slot of a kept token is
// then offsets[e] + the kept tokens of e in earlier sequences + its rank.

// probs = softmax(logits), expert = argmax, pmax = its probability, one thread
// per token in the reference's order of operations.
static __global__ void route_softmax_kernel(int n, int experts, const float *logits,
                                            float *probs, int32_t *expert, float *pmax)
{
    for (int t = blockIdx.x * blockDim.x + threadIdx.x; t < n; t += gridDim.x * blockDim.x) {
        const float *l = logits + (size_t)t * experts;
        float *p = probs + (size_t)t * experts;
        float max = l[0];
        for (int e = 1; e < experts; e++)
            if (l[e] > max)
                max = l[e];
        float sum = 0.0f;
        for (int e = 0; e < experts; e++) {
            p[e] = expf(l[e] - max);
            sum += p[e];
        }
        float inv = 1.0f / sum;
        int best = 0;
        for (int e = 0; e < experts; e++) {
            p[e] *= inv;
            // strictly greater, so the first of equal probabilities wins
            if (p[e] > p[best])
                best = e;
        }
        expert[t] = best;
        pmax[t] = p[best];
    }
}

// rank[t] = the tokens before t in its sequence routed to the same expert;
// counts[b, e] = the tokens of sequence b routed to e.
static __global__ void route_rank_kernel(int batch, int tokens, int experts,
                                         const int32_t *expert, int32_t *rank, int *counts)
{
    int pairs = batch * experts;
    for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < pairs;
         i += gridDim.x * blockDim.x) {
        int b = i / experts, e = i % experts;
        const int32_t *row = expert + (size_t)b * tokens;
        int seen = 0;
        for (int j = 0; j < tokens; j++)
            if (row[j] == e)
                rank[(size_t)b * tokens + j] = seen++;
        counts[i] = seen;
    }
}

// In one block: for each expert, the kept and dropped counts over all
// sequences, and counts[b, e] replaced by the kept tokens of e in sequences
// before b. Then offsets by a scan over experts. stats is int64 [3E + 1]:
// offsets [E + 1], kept counts [E], dropped counts [E].
static __global__ void route_offsets_kernel(int batch, int experts, int capacity, int *counts,
                                            int64_t *stats)
{
    __shared__ int64_t chunk_totals[CUDA_THREADS];
    int64_t *offsets = stats;
    int64_t *kept_counts = stats + experts + 1;
    int64_t *dropped_counts = kept_counts + experts;

    // each thread takes a contiguous range of experts
    int per_thread = (experts + (int)blockDim.x - 1) / (int)blockDim.x;
    int first = threadIdx.x * per_thread;
    int last = first + per_thread < experts ? first + per_thread : experts;
    int64_t chunk_total = 0;
    for (int e = first; e < last; e++) {
        int64_t kept = 0, dropped = 0;
        for (int b = 0; b < batch; b++) {
            int *count = counts + (size_t)b * experts + e;
            int kept_here = *count < capacity ? *count : capacity;
            dropped += *count - kept_here;
            *count = (int)kept;
            kept += kept_here;
        }
        kept_counts[e] = kept;
        dropped_counts[e] = dropped;
        chunk_total += kept;
    }

    // inclusive scan of the chunk totals (Hillis-Steele)
    chunk_totals[threadIdx.x] = chunk_total;
    __syncthreads();
    for (unsigned stride = 1; stride < blockDim.x; stride *= 2) {
        int64_t add = threadIdx.x >= stride ? chunk_totals[threadIdx.x - stride] : 0;
        __syncthreads();
        chunk_totals[threadIdx.x] += add;
        __syncthreads();
    }

    int64_t offset = chunk_totals[threadIdx.x] - chunk_total;
    if (threadIdx.x == 0)
        offsets[0] = 0;
    for (int e = first; e < last; e++) {
        offset += kept_counts[e];
        offsets[e + 1] = offset;
    }
}

// kept, assigned, slot_of and perm of each token from its rank.
static __global__ void route_dispatch_kernel(int n, int tokens, int experts, int capacity,
                                             int skipped_assigned, const int32_t *expert,
                                             const int32_t *rank, const int *kept_before,
                                             const int64_t *offsets, int32_t *kept,
                                             int32_t *assigned, int32_t *perm,
                                             int32_t *slot_of)
{
    for (int t = blockIdx.x * blockDim.x + threadIdx.x; t < n; t += gridDim.x * blockDim.x) {
        int e = expert[t];
        int b = t / tokens;
        int keep = rank[t] < capacity;
        kept[t] = keep;
        assigned[t] = keep ? e : skipped_assigned;
        if (keep) {
            int slot = (int)offsets[e] + kept_before[(size_t)b * experts + e] + rank[t];
            slot_of[t] = slot;
            perm[slot] = t;
        } else {
            slot_of[t] = -1;
        }
    }
}

void cuda_route_top1(const struct route_shape *s, const float *logits, int skipped_assigned,
                     float *probs, int32_t *expert, int32_t *kept, int32_t *assigned,
                     float *pmax, int32_t *perm, int32_t *slot_of, int *offsets,
                     int64_t *kept_counts, int64_t *dropped_counts)
{
    int B = s->batch, T = s->tokens, E = s->experts;
    int n = B * T;
    if (n == 0 || E == 0) {
        for (int e = 0; e <= E; e++)
            offsets[e] = 0;
        for (int e = 0; e < E; e++) {
            kept_counts[e] = 0;
            dropped_counts[e] = 0;
        }
        return;
    }

    // E <= CONFIG_MAX_EXPERTS bounds the host copy of the statistics
    int64_t stats_host[3 * CONFIG_MAX_EXPERTS + 1];
    unsigned token_blocks = cuda_grid((size_t)n, CUDA_THREADS);
    CUDA_LAUNCH(route_softmax_kernel, token_blocks, CUDA_THREADS, n, E, logits, probs, expert,
                pmax);

    int32_t *rank = (int32_t *)cuda_scratch(SLOT_ROUTE, sizeof(int32_t) * n);
    int *counts = (int *)cuda_scratch(SLOT_WORK, sizeof(int) * (size_t)B * E);
    CUDA_LAUNCH(route_rank_kernel, cuda_grid((size_t)B * E, CUDA_THREADS), CUDA_THREADS, B, T,
                E, (const int32_t *)expert, rank, counts);

    size_t stats_bytes = sizeof(int64_t) * (3 * (size_t)E + 1);
    int64_t *stats = (int64_t *)cuda_scratch(SLOT_STATS, stats_bytes);
    CUDA_LAUNCH_BLOCKS(route_offsets_kernel, 1, CUDA_THREADS, B, E, s->capacity, counts,
                       stats);

    CUDA_LAUNCH(route_dispatch_kernel, token_blocks, CUDA_THREADS, n, T, E, s->capacity,
                skipped_assigned, (const int32_t *)expert, (const int32_t *)rank,
                (const int *)counts, (const int64_t *)stats, kept, assigned, perm, slot_of);

    // the one wait: offsets and counts are host outputs
    cuda_download_wait(stats_host, stats, stats_bytes, SLOT_STATS);
    for (int e = 0; e <= E; e++)
        offsets[e] = (int)stats_host[e];
    for (int e = 0; e < E; e++) {
        kept_counts[e] = stats_host[E + 1 + e];
        dropped_counts[e] = stats_host[2 * E + 1 + e];
    }
}

// ---------------------------------------------------------------------------
// Dispatch and combine.

static __global__ void gather_rows_kernel(const float *src, const int32_t *perm, int n, int d,
                                          float *dst)
{
    size_t total = (size_t)n * d;
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < total;
         i += (size_t)gridDim.x * blockDim.x) {
        size_t row = i / d, col = i % d;
        dst[i] = src[(size_t)perm[row] * d + col];
    }
}

void cuda_gather_rows(const float *src, const int32_t *perm, int n, int d, float *dst)
{
    size_t total = (size_t)n * d;
    if (total == 0)
        return;
    CUDA_LAUNCH(gather_rows_kernel, cuda_grid(total, CUDA_THREADS), CUDA_THREADS, src, perm, n,
                d, dst);
}

// perm has no repeated entry, so no two threads add into the same element.
static __global__ void scatter_add_rows_kernel(const float *src, const int32_t *perm, int n,
                                               int d, float *dst)
{
    size_t total = (size_t)n * d;
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < total;
         i += (size_t)gridDim.x * blockDim.x) {
        size_t row = i / d, col = i % d;
        dst[(size_t)perm[row] * d + col] += src[i];
    }
}

void cuda_scatter_add_rows(const float *src, const int32_t *perm, int n, int d, float *dst)
{
    size_t total = (size_t)n * d;
    if (total == 0)
        return;
    CUDA_LAUNCH(scatter_add_rows_kernel, cuda_grid(total, CUDA_THREADS), CUDA_THREADS, src,
                perm, n, d, dst);
}

static __global__ void moe_combine_kernel(int n, int d, const float *y, const int32_t *slot_of,
                                          const float *pmax, const float *x, int skip_identity,
                                          float *out)
{
    size_t total = (size_t)n * d;
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < total;
         i += (size_t)gridDim.x * blockDim.x) {
        size_t t = i / d, col = i % d;
        int slot = slot_of[t];
        if (slot >= 0)
            out[i] = pmax[t] * y[(size_t)slot * d + col];
        else if (skip_identity)
            out[i] = pmax[t] * x[i];
        else
            out[i] = 0.0f;
    }
}

void cuda_moe_combine(int n, int d, const float *y, const int32_t *slot_of, const float *pmax,
                      const float *x, int skip_identity, float *out)
{
    size_t total = (size_t)n * d;
    if (total == 0)
        return;
    CUDA_LAUNCH(moe_combine_kernel, cuda_grid(total, CUDA_THREADS), CUDA_THREADS, n, d, y,
                slot_of, pmax, x, skip_identity, out);
}

// One block per token: dpmax is a dot product over the row in double.
static __global__ void moe_combine_backward_kernel(int n, int d, const float *dout,
                                                   const float *y, const int32_t *slot_of,
                                                   const float *pmax, const float *x,
                                                   int skip_identity, float *dy, float *dx,
                                                   float *dpmax)
{
    __shared__ double shared[CUDA_THREADS];
    for (int t = blockIdx.x; t < n; t += gridDim.x) {
        const float *g = dout + (size_t)t * d;
        int slot = slot_of[t];
        const float *src = NULL;
        float *dst = NULL;
        if (slot >= 0) {
            src = y + (size_t)slot * d;
            dst = dy + (size_t)slot * d;
        } else if (skip_identity) {
            src = x + (size_t)t * d;
            dst = dx + (size_t)t * d;
        }
        // the branch is the same for the whole block, so no thread skips a barrier
        // that another one reaches
        if (src == NULL) {
            if (threadIdx.x == 0)
                dpmax[t] = 0.0f;
            continue;
        }

        double dot = 0.0;
        for (int j = threadIdx.x; j < d; j += blockDim.x)
            dot += (double)g[j] * src[j];
        dot = block_reduce_sum(dot, shared);
        if (threadIdx.x == 0)
            dpmax[t] = (float)dot;

        // dy rows are overwritten; dx accumulates
        float p = pmax[t];
        for (int j = threadIdx.x; j < d; j += blockDim.x) {
            if (slot >= 0)
                dst[j] = p * g[j];
            else
                dst[j] += p * g[j];
        }
    }
}

void cuda_moe_combine_backward(int n, int d, const float *dout, const float *y,
                               const int32_t *slot_of, const float *pmax, const float *x,
                               int skip_identity, float *dy, float *dx, float *dpmax)
{
    if (n == 0)
        return;
    CUDA_LAUNCH_BLOCKS(moe_combine_backward_kernel, cuda_grid((size_t)n, 1), CUDA_THREADS, n,
                       d, dout, y, slot_of, pmax, x, skip_identity, dy, dx, dpmax);
}

// ---------------------------------------------------------------------------
// Router gradients and the router z-loss.

// pmax = p_k with k = argmax, and d p_k / d l_j = p_k ([j == k] - p_j).
static __global__ void router_pmax_backward_kernel(int n, int experts, const float *probs,
                                                   const int32_t *expert, const float *dpmax,
                                                   float *dlogits)
{
    size_t total = (size_t)n * experts;
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < total;
         i += (size_t)gridDim.x * blockDim.x) {
        size_t t = i / experts;
        int j = (int)(i % experts);
        int k = expert[t];
        float g = dpmax[t] * probs[t * experts + k];
        dlogits[i] += g * ((j == k ? 1.0f : 0.0f) - probs[i]);
    }
}

void cuda_router_pmax_backward(int n, int experts, const float *probs, const int32_t *expert,
                               const float *dpmax, float *dlogits)
{
    size_t total = (size_t)n * experts;
    if (total == 0)
        return;
    CUDA_LAUNCH(router_pmax_backward_kernel, cuda_grid(total, CUDA_THREADS), CUDA_THREADS, n,
                experts, probs, expert, dpmax, dlogits);
}

// One thread per token; partials[block] = the block's sum of lse^2.
static __global__ void router_z_loss_kernel(int n, int experts, const float *logits,
                                            double grad_scale, float *dlogits,
                                            double *partials)
{
    __shared__ double shared[CUDA_THREADS];
    double sum_squares = 0.0;
    for (int t = blockIdx.x * blockDim.x + threadIdx.x; t < n; t += gridDim.x * blockDim.x) {
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
        sum_squares += lse * lse;
        // d(lse^2)/dl_e = 2 lse softmax_e
        for (int e = 0; e < experts; e++)
            dl[e] += (float)(grad_scale * 2.0 * lse * exp((double)l[e] - lse));
    }
    sum_squares = block_reduce_sum(sum_squares, shared);
    if (threadIdx.x == 0)
        partials[blockIdx.x] = sum_squares;
}

double cuda_router_z_loss(int n, int experts, const float *logits, double grad_scale,
                          float *dlogits)
{
    if (n == 0 || experts == 0)
        return 0.0;
    unsigned blocks = cuda_grid((size_t)n, CUDA_THREADS);
    double *partials = (double *)cuda_scratch(SLOT_REDUCE, sizeof(double) * (blocks + 1));
    CUDA_LAUNCH_BLOCKS(router_z_loss_kernel, blocks, CUDA_THREADS, n, experts, logits,
                       grad_scale, dlogits, partials);
    return partials_total(partials, blocks);
}

// ---------------------------------------------------------------------------
// Load-balancing statistics and expert usage. A thread sums one expert over a
// chunk of STATS_CHUNK tokens; sum_chunks_kernel then adds the chunks, and the
// host adds the totals into its accumulators.

// partials[b, c, :] = counts of assigned experts [E], then prob sums [E], over
// chunk c of sequence b.
static __global__ void balance_chunks_kernel(int batch, int tokens, int experts, int chunks,
                                             const float *probs, const int32_t *assigned,
                                             double *partials)
{
    size_t total = (size_t)batch * chunks * experts;
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < total;
         i += (size_t)gridDim.x * blockDim.x) {
        int e = (int)(i % experts);
        size_t row = i / experts; // b * chunks + c
        int b = (int)(row / chunks), c = (int)(row % chunks);
        int first = c * STATS_CHUNK;
        int last = first + STATS_CHUNK < tokens ? first + STATS_CHUNK : tokens;
        double count = 0.0, sum = 0.0;
        for (int j = first; j < last; j++) {
            size_t t = (size_t)b * tokens + j;
            if (assigned[t] == e)
                count += 1.0;
            sum += probs[t * experts + e];
        }
        double *out = partials + row * 2 * experts;
        out[e] = count;
        out[experts + e] = sum;
    }
}

void cuda_balance_accumulate(int batch, int tokens, int experts, const float *probs,
                             const int32_t *assigned, double *counts, double *prob_sums)
{
    if (batch == 0 || tokens == 0 || experts == 0)
        return;
    int chunks = (tokens + STATS_CHUNK - 1) / STATS_CHUNK;
    size_t width = 2 * (size_t)experts;
    double *partials =
        (double *)cuda_scratch(SLOT_WORK, sizeof(double) * (size_t)batch * chunks * width);
    double *totals = (double *)cuda_scratch(SLOT_STATS, sizeof(double) * batch * width);
    CUDA_LAUNCH(balance_chunks_kernel, cuda_grid((size_t)batch * chunks * experts, CUDA_THREADS),
                CUDA_THREADS, batch, tokens, experts, chunks, probs, assigned, partials);
    CUDA_LAUNCH(sum_chunks_kernel, cuda_grid(batch * width, CUDA_THREADS), CUDA_THREADS,
                (const double *)partials, batch, chunks, (int)width, totals);

    // pinned memory of another slot than the one passed to cuda_download_wait,
    // so that the download cannot stage through the buffer it writes to
    double *host = (double *)cuda_host_scratch(SLOT_REDUCE, sizeof(double) * batch * width);
    cuda_download_wait(host, totals, sizeof(double) * batch * width, SLOT_STATS);
    for (int b = 0; b < batch; b++)
        for (int e = 0; e < experts; e++) {
            counts[(size_t)b * experts + e] += host[b * width + e];
            prob_sums[(size_t)b * experts + e] += host[b * width + experts + e];
        }
}

// dprob is [B, E] in double, the same for every token of sequence b.
static __global__ void balance_backward_kernel(int n, int tokens, int experts,
                                               const float *probs, const double *dprob,
                                               float *dlogits)
{
    for (int t = blockIdx.x * blockDim.x + threadIdx.x; t < n; t += gridDim.x * blockDim.x) {
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

void cuda_balance_backward(int batch, int tokens, int experts, const float *probs,
                           const double *dprob, float *dlogits)
{
    int n = batch * tokens;
    if (n == 0 || experts == 0)
        return;
    const double *dprob_device = (const double *)cuda_upload_host(
        SLOT_STATS, dprob, sizeof(double) * (size_t)batch * experts);
    CUDA_LAUNCH(balance_backward_kernel, cuda_grid((size_t)n, CUDA_THREADS), CUDA_THREADS, n,
                tokens, experts, probs, dprob_device, dlogits);
}

// partials[c, :] = kept counts [E], dropped counts [E], prob sums [E] over the
// tokens of chunk c whose mask is not 0 (all when mask is NULL).
static __global__ void usage_chunks_kernel(int n, int experts, int chunks, const float *probs,
                                           const int32_t *expert, const int32_t *kept,
                                           const int32_t *mask, double *partials)
{
    size_t total = (size_t)chunks * experts;
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < total;
         i += (size_t)gridDim.x * blockDim.x) {
        int e = (int)(i % experts);
        int c = (int)(i / experts);
        int first = c * STATS_CHUNK;
        int last = first + STATS_CHUNK < n ? first + STATS_CHUNK : n;
        double kept_count = 0.0, dropped_count = 0.0, sum = 0.0;
        for (int t = first; t < last; t++) {
            if (mask != NULL && mask[t] == 0)
                continue;
            if (expert[t] == e) {
                if (kept[t])
                    kept_count += 1.0;
                else
                    dropped_count += 1.0;
            }
            sum += probs[(size_t)t * experts + e];
        }
        double *out = partials + (size_t)c * 3 * experts;
        out[e] = kept_count;
        out[experts + e] = dropped_count;
        out[2 * experts + e] = sum;
    }
}

void cuda_usage_accumulate(int n, int experts, const float *probs, const int32_t *expert,
                           const int32_t *kept, const int32_t *mask, int64_t *kept_counts,
                           int64_t *dropped_counts, double *prob_sums)
{
    if (n == 0 || experts == 0)
        return;
    const int32_t *mask_device = NULL;
    if (mask != NULL)
        mask_device =
            (const int32_t *)cuda_upload_host(SLOT_MASK, mask, sizeof(int32_t) * (size_t)n);
    int chunks = (n + STATS_CHUNK - 1) / STATS_CHUNK;
    size_t width = 3 * (size_t)experts;
    double *partials = (double *)cuda_scratch(SLOT_WORK, sizeof(double) * chunks * width);
    double *totals = (double *)cuda_scratch(SLOT_STATS, sizeof(double) * width);
    CUDA_LAUNCH(usage_chunks_kernel, cuda_grid((size_t)chunks * experts, CUDA_THREADS),
                CUDA_THREADS, n, experts, chunks, probs, expert, kept, mask_device, partials);
    CUDA_LAUNCH(sum_chunks_kernel, cuda_grid(width, CUDA_THREADS), CUDA_THREADS,
                (const double *)partials, 1, chunks, (int)width, totals);

    double *host = (double *)cuda_host_scratch(SLOT_REDUCE, sizeof(double) * width);
    cuda_download_wait(host, totals, sizeof(double) * width, SLOT_STATS);
    // the counts are whole numbers far below 2^53, so the conversion is exact
    for (int e = 0; e < experts; e++) {
        kept_counts[e] += (int64_t)host[e];
        dropped_counts[e] += (int64_t)host[experts + e];
        prob_sums[e] += host[2 * experts + e];
    }
}

// ---------------------------------------------------------------------------
// Cross-entropy: one block per row, since the vocabulary (up to 32128 columns)
// is the widest row. As in the reference, exp in float and the sum in double.

static __global__ void cross_entropy_kernel(int n, int vocab, const float *logits,
                                            const int32_t *labels, float scale,
                                            float *dlogits, double *partials)
{
    __shared__ float max_shared[CUDA_THREADS];
    __shared__ double sum_shared[CUDA_THREADS];
    double block_loss = 0.0;
    for (int row = blockIdx.x; row < n; row += gridDim.x) {
        const float *l = logits + (size_t)row * vocab;
        float *dl = dlogits + (size_t)row * vocab;
        int label = labels[row];
        // label is the same for the whole block, so no thread skips a barrier
        // that another one reaches
        if (label < 0) {
            for (int j = threadIdx.x; j < vocab; j += blockDim.x)
                dl[j] = 0.0f;
            continue;
        }

        float max = -INFINITY;
        for (int j = threadIdx.x; j < vocab; j += blockDim.x)
            if (l[j] > max)
                max = l[j];
        max = block_reduce_max(max, max_shared);

        double sum = 0.0;
        for (int j = threadIdx.x; j < vocab; j += blockDim.x) {
            float e = expf(l[j] - max);
            dl[j] = e;
            sum += e;
        }
        sum = block_reduce_sum(sum, sum_shared);

        float factor = (float)(scale / sum);
        for (int j = threadIdx.x; j < vocab; j += blockDim.x) {
            float value = dl[j] * factor;
            if (j == label)
                value -= scale;
            dl[j] = value;
        }
        if (threadIdx.x == 0)
            block_loss += max + log(sum) - l[label];
    }
    if (threadIdx.x == 0)
        partials[blockIdx.x] = block_loss;
}

double cuda_cross_entropy(int n, int vocab, const float *logits, const int32_t *labels,
                          float scale, float *dlogits)
{
    if (n == 0)
        return 0.0;
    const int32_t *labels_device =
        (const int32_t *)cuda_upload_host(SLOT_IDS, labels, sizeof(int32_t) * (size_t)n);
    unsigned blocks = cuda_grid((size_t)n, 1);
    double *partials = (double *)cuda_scratch(SLOT_REDUCE, sizeof(double) * (blocks + 1));
    CUDA_LAUNCH_BLOCKS(cross_entropy_kernel, blocks, CUDA_THREADS, n, vocab, logits,
                       labels_device, scale, dlogits, partials);
    return partials_total(partials, blocks);
}
