/* The table of operations that the model code calls.
 *
 * The model never branches on the device: it calls these functions through a
 * `struct backend`. The CPU table (backend_cpu.c) is the reference and is
 * always built. Pointers to tensors point to the backend's own memory
 * (from `alloc`); pointers documented as "host" point to ordinary memory.
 *
 * Matrices are row-major. Shapes use the letters of config.h. Functions whose
 * output is documented as "accumulates" add into it; the others overwrite. */
#ifndef CAEM_BACKEND_H
#define CAEM_BACKEND_H

#include <stddef.h>
#include <stdint.h>

#include "error.h"

/* Dropout with a regenerable mask. Element i is kept, and scaled by
 * 1 / (1 - p), when the 16-bit random value of stream index offset + i is at
 * least p * 65536 rounded up. So p applies to within 1.5e-5. The values come
 * from Philox (rng.h), eight from each block: index j uses half j % 2 of word
 * (j / 2) % 4 of block j / 8. p = 0 means no dropout. */
struct dropout_spec {
    float p;
    uint64_t seed;
    uint64_t offset;
};

/* One attention call over B sequences: queries [B*Tq, H*K] with row stride
 * ldq, keys and values [B*Tk, H*K] with strides ldk and ldv, context output
 * [B*Tq, H*K] with stride ldc. */
struct attention_shape {
    int batch;
    int tq;
    int tk;
    int heads;
    int d_kv;
    int ldq;
    int ldk;
    int ldv;
    int ldc;
    int causal;
};

/* One attention call for incremental decoding: each of n queries, [n, H*K]
 * with row stride ldq, attends to the first tk keys and values of one entry
 * of a cache. Entry e's key j starts at k + e * entry_stride + j * ldkv, its
 * value likewise from v. The context output is [n, H*K] with stride ldc. */
struct decode_attention_shape {
    int queries;
    int tk;
    int heads;
    int d_kv;
    int ldq;
    int ldkv;
    size_t entry_stride;
    int ldc;
};

/* Top-1 routing of one MoE layer over B sequences of T tokens. */
struct route_shape {
    int batch;
    int tokens;
    int experts;
    int capacity;
};

struct backend {
    const char *name;

    /* memory */
    void *(*alloc)(size_t bytes);
    void (*free)(void *ptr);
    void (*zero)(void *ptr, size_t bytes);
    void (*copy)(void *dst, const void *src, size_t bytes);
    void (*upload)(void *dst, const void *host_src, size_t bytes);
    void (*download)(void *host_dst, const void *src, size_t bytes);

    /* C = alpha * op(A) * op(B) + beta * C, with op(X) = X or X^T; C is m x n. */
    void (*gemm)(int trans_a, int trans_b, int m, int n, int k, float alpha, const float *a,
                 int lda, const float *b, int ldb, float beta, float *c, int ldc);
    /* Grouped GEMM for experts: rows [offsets[g], offsets[g+1]) of A (n_rows x k)
     * times W_g^T, where W_g = w + g * w_stride is n x k; writes those rows of C
     * (n_rows x n). offsets is host memory with groups + 1 entries. */
    void (*grouped_gemm_nt)(int groups, const int *offsets, int n, int k, const float *a,
                            const float *w, size_t w_stride, float *c);
    /* Same grouping, C_rows = A_rows * W_g (A is n_rows x k, W_g is k x n). */
    void (*grouped_gemm_nn)(int groups, const int *offsets, int n, int k, const float *a,
                            const float *w, size_t w_stride, float *c);
    /* Weight gradient per group: dW_g (m x n) += dY_rows^T * X_rows, where dY
     * is n_rows x m and X is n_rows x n. Accumulates. */
    void (*grouped_gemm_tn)(int groups, const int *offsets, int m, int n, const float *dy,
                            const float *x, float *dw, size_t dw_stride);

    /* elementwise */
    void (*add)(float *y, const float *x, size_t n);            /* y += x */
    void (*scale)(float *y, float alpha, size_t n);             /* y *= alpha */
    /* x = dropout(ReLU(x)) in place; spec NULL or p = 0 for ReLU alone. */
    void (*relu_forward)(float *x, size_t n, const struct dropout_spec *spec);
    /* dy = y > 0 ? scale * dy : 0. With y the ReLU output after dropout and
     * scale = 1 / (1 - p), this is the backward of both. */
    void (*relu_backward)(const float *y, float *dy, size_t n, float scale);
    /* In place; the same call applies the mask to a gradient. */
    void (*dropout)(float *x, size_t n, const struct dropout_spec *spec);
    /* dst = dropout(src), or a copy when spec->p = 0. */
    void (*dropout_copy)(float *dst, const float *src, size_t n,
                         const struct dropout_spec *spec);
    /* dst = x + dropout(y): a residual connection. dst may be x. */
    void (*dropout_add)(float *dst, const float *x, const float *y, size_t n,
                        const struct dropout_spec *spec);
    /* x *= U(1 - eps, 1 + eps) drawn from (seed, offset); divide = 1 divides
     * by the same values instead (to undo it). */
    void (*jitter)(float *x, size_t n, float eps, uint64_t seed, uint64_t offset, int divide);

    /* out[i, :] = table[ids[i], :]; ids are host memory. */
    void (*embedding_forward)(const float *table, const int32_t *ids, int n, int d,
                              float *out);
    /* dtable[ids[i], :] += dout[i, :]. Accumulates. */
    void (*embedding_backward)(const float *dout, const int32_t *ids, int n, int d,
                               float *dtable);

    /* y = w * x / sqrt(mean(x^2) + eps) per row; rinv gets 1 / sqrt(...). */
    void (*rmsnorm_forward)(const float *x, const float *w, int rows, int d, float eps,
                            float *y, float *rinv);
    /* dx accumulates the input gradient, dw the weight gradient. */
    void (*rmsnorm_backward)(const float *dy, const float *x, const float *w,
                             const float *rinv, int rows, int d, float *dx, float *dw);

    /* bias[h, i, j] = table[buckets[i, j], h]; buckets are host memory, [tq, tk]. */
    void (*position_bias_forward)(const float *table, const int32_t *buckets, int heads,
                                  int tq, int tk, float *bias);
    /* dtable[buckets[i, j], h] += dbias[h, i, j]. Accumulates. */
    void (*position_bias_backward)(const float *dbias, const int32_t *buckets, int heads,
                                   int tq, int tk, float *dtable);

    /* Softmax attention without 1/sqrt(K) scaling. bias is [H, Tq, Tk] or NULL;
     * key_mask is host [B, Tk] (0 = padding) or NULL. probs gets the weights
     * before dropout, [B, H, Tq, Tk]; when drop->p > 0, dropped must point to a
     * buffer of the same size that gets the weights after dropout. */
    void (*attention_forward)(const struct attention_shape *s, const float *q,
                              const float *k, const float *v, const float *bias,
                              const int32_t *key_mask, float *probs, float *dropped,
                              float *ctx, const struct dropout_spec *drop);
    /* Writes dq, dk, dv in the layouts of q, k, v. dbias [H, Tq, Tk]
     * accumulates when not NULL. scratch has room for B*H*Tq*Tk floats. */
    void (*attention_backward)(const struct attention_shape *s, const float *q,
                               const float *k, const float *v, const float *probs,
                               const float *dropped, const float *dctx, float *dq, float *dk,
                               float *dv, float *dbias, float *scratch,
                               const struct dropout_spec *drop);

    /* Attention of one new query per sequence against cached keys and values,
     * without 1/sqrt(K) scaling and without a causal mask (the cache holds
     * only earlier positions). Query i reads cache entry entries[i] (host,
     * [n]), or entry i when entries is NULL. bias is [H, tk] or NULL, shared
     * by every query; key_mask is host [entries, tk] (0 = padding), row
     * entries[i] for query i, or NULL. probs gets the weights, [n, H, tk]. */
    void (*attention_decode)(const struct decode_attention_shape *s, const float *q,
                             const float *k, const float *v, const int32_t *entries,
                             const float *bias, const int32_t *key_mask, float *probs,
                             float *ctx);

    /* Router: probs = softmax(logits) per token, expert = argmax (first on
     * ties), pmax = its probability, kept = 1 unless the token is beyond the
     * expert's capacity in its sequence (counted in token order). assigned is
     * the expert for kept tokens and `skipped_assigned` for the others (what
     * the load-balancing loss counts). Builds the dispatch: offsets (host,
     * E + 1), perm (the kept tokens grouped by expert, in token order within
     * each), slot_of (each token's row in that grouping, or -1), and
     * per-expert counts (host) of kept and dropped tokens. */
    void (*route_top1)(const struct route_shape *s, const float *logits, int skipped_assigned,
                       float *probs, int32_t *expert, int32_t *kept, int32_t *assigned,
                       float *pmax, int32_t *perm, int32_t *slot_of, int *offsets,
                       int64_t *kept_counts, int64_t *dropped_counts);
    /* dst[i, :] = src[perm[i], :] for i < n. */
    void (*gather_rows)(const float *src, const int32_t *perm, int n, int d, float *dst);
    /* dst[perm[i], :] += src[i, :] for i < n; perm has no repeated entry. */
    void (*scatter_add_rows)(const float *src, const int32_t *perm, int n, int d, float *dst);
    /* MoE output: out[t] = pmax[t] * y[slot of t] for kept tokens; for a
     * skipped token pmax[t] * x[t] (skip_identity = 1) or 0. slot_of is
     * [N], the row of t in the grouped expert output, or -1. */
    void (*moe_combine)(int n, int d, const float *y, const int32_t *slot_of,
                        const float *pmax, const float *x, int skip_identity, float *out);
    /* Backward of moe_combine: dy (grouped rows) = pmax * dout; dx accumulates
     * pmax * dout for skipped tokens when skip_identity; dpmax[t] = dot(dout[t],
     * the row that was scaled). */
    void (*moe_combine_backward)(int n, int d, const float *dout, const float *y,
                                 const int32_t *slot_of, const float *pmax, const float *x,
                                 int skip_identity, float *dy, float *dx, float *dpmax);
    /* dlogits[t, :] += gradient of pmax[t] = probs[t, expert[t]] through the
     * softmax, times dpmax[t]. Accumulates. */
    void (*router_pmax_backward)(int n, int experts, const float *probs,
                                 const int32_t *expert, const float *dpmax, float *dlogits);
    /* Router z-loss term: returns sum_t logsumexp(logits[t])^2 and
     * accumulates grad_scale times its gradient into dlogits. */
    double (*router_z_loss)(int n, int experts, const float *logits, double grad_scale,
                            float *dlogits);
    /* Load-balancing statistics of one layer for B groups of T tokens: adds to
     * counts[b, e] the tokens of group b assigned to e (assigned[t] < 0 counts
     * nowhere) and to prob_sums[b, e] the sum of probs. Host accumulators. */
    void (*balance_accumulate)(int batch, int tokens, int experts, const float *probs,
                               const int32_t *assigned, double *counts, double *prob_sums);
    /* dlogits[b, t, :] += softmax backward of dprob[b, :] (host, [B, E], the
     * same for every token of group b). Accumulates. */
    void (*balance_backward)(int batch, int tokens, int experts, const float *probs,
                             const double *dprob, float *dlogits);

    /* Expert usage of one MoE layer over n tokens, for those whose mask (host,
     * [n]) is not 0, or all when mask is NULL: kept_counts[expert[t]] or
     * dropped_counts[expert[t]] by kept[t], and prob_sums[e] += probs[t, e].
     * Host accumulators. */
    void (*usage_accumulate)(int n, int experts, const float *probs, const int32_t *expert,
                             const int32_t *kept, const int32_t *mask, int64_t *kept_counts,
                             int64_t *dropped_counts, double *prob_sums);

    /* Cross-entropy over rows with labels (host) in [0, V) or -100 (ignored):
     * returns the sum of -log p[label] over counted rows and writes
     * dlogits = scale * (softmax - onehot) for counted rows, 0 for ignored. */
    double (*cross_entropy)(int n, int vocab, const float *logits, const int32_t *labels,
                            float scale, float *dlogits);

    /* One AdamW step (decoupled weight decay, bias correction) over n values;
     * step counts from 1. */
    void (*adamw)(float *param, const float *grad, float *m, float *v, size_t n, float lr,
                  float beta1, float beta2, float eps, float weight_decay, long step);

    /* Sum of squares, for gradient norms and checks. */
    double (*sum_squares)(const float *x, size_t n);
};

/* The CPU backend: OpenBLAS for GEMM, OpenMP loops for the rest. */
const struct backend *backend_cpu(void);

/* Sets the threads used by OpenBLAS and OpenMP; 0 keeps the default. */
void backend_cpu_set_threads(int threads);

/* Returns the backend named "cpu" or "cuda", or fails with a message saying
 * why it is unavailable. "auto" is CUDA when this build has it and a GPU is
 * present, else the CPU; the first time it falls back in a CUDA build, it
 * prints one line on stderr saying why. */
int backend_select(const struct backend **out, const char *name, struct caem_error *err);

/* The device of models that are created without naming one, such as the
 * Lua module's. --device or caem.device sets it. Before that it is the
 * environment variable CAEM_DEVICE when that names a device, else "auto". */
int backend_set_default(const char *name, struct caem_error *err);
const char *backend_default_name(void);
/* Resolves the default device's backend (see backend_select). */
int backend_default(const struct backend **out, struct caem_error *err);

#endif
