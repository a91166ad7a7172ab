// The CUDA backend's operations, one per entry of struct backend (see
// src/backend.h for each one's contract); backend_cuda.cu puts them in the
// table. Pointers documented there as host memory are host memory here too.
#ifndef CAEM_CUDA_OPS_H
#define CAEM_CUDA_OPS_H

#include "cuda_internal.h"

// cuda_attention.cu
void cuda_position_bias_forward(const float *table, const int32_t *buckets, int heads, int tq,
                                int tk, float *bias);
void cuda_position_bias_backward(const float *dbias, const int32_t *buckets, int heads, int tq,
                                 int tk, float *dtable);
void cuda_attention_forward(const struct attention_shape *s, const float *q, const float *k,
                            const float *v, const float *bias, const int32_t *key_mask,
                            float *probs, float *dropped, float *ctx,
                            const struct dropout_spec *drop);
void cuda_attention_backward(const struct attention_shape *s, const float *q, const float *k,
                             const float *v, const float *probs, const float *dropped,
                             const float *dctx, float *dq, float *dk, float *dv, float *dbias,
                             float *scratch, const struct dropout_spec *drop);
void cuda_attention_decode(const struct decode_attention_shape *s, const float *q,
                           const float *k, const float *v, const int32_t *entries,
                           const float *bias, const int32_t *key_mask, float *probs,
                           float *ctx);

// cuda_moe.cu
void cuda_route_top1(const struct route_shape *s, const float *logits, int skipped_assigned,
                     float *probs, int32_t *expert, int32_t *kept, int32_t *assigned,
                     float *pmax, int32_t *perm, int32_t *slot_of, int *offsets,
                     int64_t *kept_counts, int64_t *dropped_counts);
void cuda_gather_rows(const float *src, const int32_t *perm, int n, int d, float *dst);
void cuda_scatter_add_rows(const float *src, const int32_t *perm, int n, int d, float *dst);
void cuda_moe_combine(int n, int d, const float *y, const int32_t *slot_of, const float *pmax,
                      const float *x, int skip_identity, float *out);
void cuda_moe_combine_backward(int n, int d, const float *dout, const float *y,
                               const int32_t *slot_of, const float *pmax, const float *x,
                               int skip_identity, float *dy, float *dx, float *dpmax);
void cuda_router_pmax_backward(int n, int experts, const float *probs, const int32_t *expert,
                               const float *dpmax, float *dlogits);
double cuda_router_z_loss(int n, int experts, const float *logits, double grad_scale,
                          float *dlogits);
void cuda_balance_accumulate(int batch, int tokens, int experts, const float *probs,
                             const int32_t *assigned, double *counts, double *prob_sums);
void cuda_balance_backward(int batch, int tokens, int experts, const float *probs,
                           const double *dprob, float *dlogits);
void cuda_usage_accumulate(int n, int experts, const float *probs, const int32_t *expert,
                           const int32_t *kept, const int32_t *mask, int64_t *kept_counts,
                           int64_t *dropped_counts, double *prob_sums);
double cuda_cross_entropy(int n, int vocab, const float *logits, const int32_t *labels,
                          float scale, float *dlogits);

#endif
