/* bench_step: times one training step of the Switch Transformer on the CPU
 * or the CUDA backend, beside the same step in the reference implementation.
 *
 * One step is a forward pass with labels, the backward pass, an AdamW step
 * and zeroing the gradients, in train mode (dropout 0.1, router jitter 0.01),
 * on the model and batch shape that bench/reference_step.py uses under the
 * same configuration name. The program runs WARMUP_STEPS untimed steps, then
 * the timed ones, and prints one line of this form (wrapped here):
 *
 *   small: <ours> tokens/s, <ms> ms/step, peak RSS <MiB> MiB, <model> GFLOP/step,
 *       <rate> GFLOP/s = <pct>% of sgemm (<sgemm> GFLOP/s),
 *       reference <theirs> tokens/s, <ours/theirs>x
 *
 * where the reference part is "reference skipped: ..." without the venv and
 * "reference failed: <why>" when the script fails. With --device cuda the
 * line starts "small on <GPU>, <precision>:" and the GEMM rate is that of
 * the CUDA backend in the same precision, so that the percentage is the
 * model FLOP utilization (MFU) against what cuBLAS reaches on this GPU.
 * tokens/s counts the encoder and decoder tokens of the batch, as the
 * reference script does. Model FLOPs are counted from the shapes (see
 * count_forward_flops). The CPU's sgemm rate is the best of several
 * cblas_sgemm calls on square SGEMM_SIZE matrices, measured in the same
 * process after the steps, with the same thread count. The GPU's is the best
 * of CUDA_GEMM_REPEATS square CUDA_GEMM_SIZE GEMMs. */
#include <cblas.h>
#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#ifdef _OPENMP
#include <omp.h>
#endif

#include "adamw.h"
#include "backend.h"
#include "config.h"
#include "model.h"
#include "rng.h"
#include "threads.h"
#ifdef CAEM_HAVE_CUDA
#include "backend_cuda.h"
#endif

#define WARMUP_STEPS 2
#define INIT_SEED 0
#define DROPOUT_SEED 1
#define DATA_SEED 2
#define FIRST_WORD_ID 2
#define SGEMM_SIZE 1024
#define SGEMM_REPEATS 8
#define CUDA_GEMM_SIZE 8192
#define CUDA_GEMM_REPEATS 10

/* A configuration as bench/reference_step.py defines it: the preset of the
 * same name, the reference's tie_word_embeddings, and the batch of one step.
 * The remaining fields are the reference's dimensions, checked against the
 * preset so that a changed preset cannot silently time a different model. */
struct bench_shape {
    const char *name;
    int tie_word_embeddings;
    int batch_size, encoder_length, decoder_length;
    int vocab_size, d_model, d_kv, num_heads, d_ff, layers, sparse_step, num_experts,
        expert_capacity;
};

static const struct bench_shape bench_shapes[] = {
    { "tiny", 1, 3, 13, 9, 96, 32, 8, 4, 64, 4, 2, 4, 64 },
    { "small", 1, 24, 256, 64, 8000, 256, 64, 4, 1024, 4, 2, 8, 64 },
    { "switch-base-8", 0, 24, 512, 64, 32128, 768, 64, 12, 3072, 12, 2, 8, 64 },
};

#define SHAPE_COUNT (sizeof bench_shapes / sizeof bench_shapes[0])

/* Dropout and router jitter of the reference script's model. */
#define REFERENCE_DROPOUT 0.1f
#define REFERENCE_JITTER 0.01f

struct options {
    const char *config;
    long steps;
    long threads;
    int verbose;
    const char *device;    /* "cpu" or "cuda" */
    const char *precision; /* NULL unless --precision was given */
    int reference;         /* --reference: the reference must run */
};

/* The backend that runs the steps. synchronize is NULL on the CPU, whose
 * operations finish before they return. */
struct device {
    const struct backend *backend;
    void (*synchronize)(void);
    const char *precision; /* GEMM precision on the GPU, NULL on the CPU */
    char description[256]; /* the GPU's name and memory, empty on the CPU */
};

/* Model FLOPs of one forward pass, 2 per multiply-add of each GEMM. */
struct flop_count {
    double projections;  /* q, k, v and o of self- and cross-attention */
    double attention;    /* scores Q K^T and the weighted sums of V */
    double feed_forward; /* dense layers */
    double experts;      /* MoE experts, tokens kept within capacity only */
    double router;
    double lm_head;
};

/* Seconds spent in each step phase over the timed steps. */
struct phase_times {
    double forward, backward, optimizer, zero_grad;
};

static double seconds_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* ---- per-operation timing through a wrapped backend table (--verbose) ---- */

enum profile_op {
    OP_GEMM,
    OP_GEMM_LM_HEAD,
    OP_EXPERT_GEMM,
    OP_ATTENTION_FORWARD,
    OP_ATTENTION_BACKWARD,
    OP_DROPOUT,
    OP_JITTER,
    OP_RMSNORM,
    OP_ROUTING,
    OP_EMBEDDING,
    OP_POSITION_BIAS,
    OP_CROSS_ENTROPY,
    OP_ADAMW,
    OP_MEMORY,
    OP_ELEMENTWISE,
    OP_COUNT,
};

static const char *const profile_op_names[OP_COUNT] = {
    "GEMM (projections, dense FF, router)",
    "GEMM (LM head)",
    "grouped GEMM (experts)",
    "attention forward (with its GEMMs)",
    "attention backward (with its GEMMs)",
    "dropout (with residual adds and copies)",
    "router jitter",
    "RMS norm",
    "routing, dispatch and router losses",
    "embedding",
    "position bias",
    "cross-entropy",
    "AdamW",
    "copy and zero",
    "add, scale and ReLU",
};

/* Totals since the last profile_reset. gemm_flops counts the GEMMs that pass
 * through the table, not those inside the attention operations. synchronize
 * is NULL on the CPU. On the GPU it waits for the queued work before each
 * clock read, so that an operation's time is its run time rather than its
 * launch time, at the cost of the overlap between operations. */
static struct {
    const struct backend *base;
    void (*synchronize)(void);
    int vocab_size;
    double seconds[OP_COUNT];
    long calls[OP_COUNT];
    double gemm_flops;
} profile;

static void profile_reset(void)
{
    memset(profile.seconds, 0, sizeof profile.seconds);
    memset(profile.calls, 0, sizeof profile.calls);
    profile.gemm_flops = 0.0;
}

static double profile_start(void)
{
    if (profile.synchronize != NULL)
        profile.synchronize();
    return seconds_now();
}

static void profile_add(enum profile_op op, double start)
{
    if (profile.synchronize != NULL)
        profile.synchronize();
    profile.seconds[op] += seconds_now() - start;
    profile.calls[op]++;
}

static void grouped_flops(int groups, const int *offsets, double per_row)
{
    profile.gemm_flops += 2.0 * (double)(offsets[groups] - offsets[0]) * per_row;
}

static void timed_zero(void *ptr, size_t bytes)
{
    double start = profile_start();
    profile.base->zero(ptr, bytes);
    profile_add(OP_MEMORY, start);
}

static void timed_copy(void *dst, const void *src, size_t bytes)
{
    double start = profile_start();
    profile.base->copy(dst, src, bytes);
    profile_add(OP_MEMORY, start);
}

static void timed_gemm(int trans_a, int trans_b, int m, int n, int k, float alpha,
                       const float *a, int lda, const float *b, int ldb, float beta, float *c,
                       int ldc)
{
    /* The LM head is the only GEMM with a vocabulary-sized dimension. */
    int V = profile.vocab_size;
    enum profile_op op = m == V || n == V || k == V ? OP_GEMM_LM_HEAD : OP_GEMM;
    double start = profile_start();
    profile.base->gemm(trans_a, trans_b, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
    profile_add(op, start);
    profile.gemm_flops += 2.0 * m * n * k;
}

static void timed_grouped_gemm_nt(int groups, const int *offsets, int n, int k,
                                  const float *a, const float *w, size_t w_stride, float *c)
{
    double start = profile_start();
    profile.base->grouped_gemm_nt(groups, offsets, n, k, a, w, w_stride, c);
    profile_add(OP_EXPERT_GEMM, start);
    grouped_flops(groups, offsets, (double)n * k);
}

static void timed_grouped_gemm_nn(int groups, const int *offsets, int n, int k,
                                  const float *a, const float *w, size_t w_stride, float *c)
{
    double start = profile_start();
    profile.base->grouped_gemm_nn(groups, offsets, n, k, a, w, w_stride, c);
    profile_add(OP_EXPERT_GEMM, start);
    grouped_flops(groups, offsets, (double)n * k);
}

static void timed_grouped_gemm_tn(int groups, const int *offsets, int m, int n,
                                  const float *dy, const float *x, float *dw, size_t dw_stride)
{
    double start = profile_start();
    profile.base->grouped_gemm_tn(groups, offsets, m, n, dy, x, dw, dw_stride);
    profile_add(OP_EXPERT_GEMM, start);
    grouped_flops(groups, offsets, (double)m * n);
}

static void timed_add(float *y, const float *x, size_t n)
{
    double start = profile_start();
    profile.base->add(y, x, n);
    profile_add(OP_ELEMENTWISE, start);
}

static void timed_scale(float *y, float alpha, size_t n)
{
    double start = profile_start();
    profile.base->scale(y, alpha, n);
    profile_add(OP_ELEMENTWISE, start);
}

static void timed_relu_forward(float *x, size_t n, const struct dropout_spec *spec)
{
    double start = profile_start();
    profile.base->relu_forward(x, n, spec);
    profile_add(OP_ELEMENTWISE, start);
}

static void timed_relu_backward(const float *y, float *dy, size_t n, float scale)
{
    double start = profile_start();
    profile.base->relu_backward(y, dy, n, scale);
    profile_add(OP_ELEMENTWISE, start);
}

static void timed_dropout(float *x, size_t n, const struct dropout_spec *spec)
{
    double start = profile_start();
    profile.base->dropout(x, n, spec);
    profile_add(OP_DROPOUT, start);
}

static void timed_dropout_copy(float *dst, const float *src, size_t n,
                               const struct dropout_spec *spec)
{
    double start = profile_start();
    profile.base->dropout_copy(dst, src, n, spec);
    profile_add(OP_DROPOUT, start);
}

static void timed_dropout_add(float *dst, const float *x, const float *y, size_t n,
                              const struct dropout_spec *spec)
{
    double start = profile_start();
    profile.base->dropout_add(dst, x, y, n, spec);
    profile_add(OP_DROPOUT, start);
}

static void timed_jitter(float *x, size_t n, float eps, uint64_t seed, uint64_t offset,
                         int divide)
{
    double start = profile_start();
    profile.base->jitter(x, n, eps, seed, offset, divide);
    profile_add(OP_JITTER, start);
}

static void timed_embedding_forward(const float *table, const int32_t *ids, int n, int d,
                                    float *out)
{
    double start = profile_start();
    profile.base->embedding_forward(table, ids, n, d, out);
    profile_add(OP_EMBEDDING, start);
}

static void timed_embedding_backward(const float *dout, const int32_t *ids, int n, int d,
                                     float *dtable)
{
    double start = profile_start();
    profile.base->embedding_backward(dout, ids, n, d, dtable);
    profile_add(OP_EMBEDDING, start);
}

static void timed_rmsnorm_forward(const float *x, const float *w, int rows, int d, float eps,
                                  float *y, float *rinv)
{
    double start = profile_start();
    profile.base->rmsnorm_forward(x, w, rows, d, eps, y, rinv);
    profile_add(OP_RMSNORM, start);
}

static void timed_rmsnorm_backward(const float *dy, const float *x, const float *w,
                                   const float *rinv, int rows, int d, float *dx, float *dw)
{
    double start = profile_start();
    profile.base->rmsnorm_backward(dy, x, w, rinv, rows, d, dx, dw);
    profile_add(OP_RMSNORM, start);
}

static void timed_position_bias_forward(const float *table, const int32_t *buckets, int heads,
                                        int tq, int tk, float *bias)
{
    double start = profile_start();
    profile.base->position_bias_forward(table, buckets, heads, tq, tk, bias);
    profile_add(OP_POSITION_BIAS, start);
}

static void timed_position_bias_backward(const float *dbias, const int32_t *buckets,
                                         int heads, int tq, int tk, float *dtable)
{
    double start = profile_start();
    profile.base->position_bias_backward(dbias, buckets, heads, tq, tk, dtable);
    profile_add(OP_POSITION_BIAS, start);
}

static void timed_attention_forward(const struct attention_shape *s, const float *q,
                                    const float *k, const float *v, const float *bias,
                                    const int32_t *key_mask, float *probs, float *dropped,
                                    float *ctx, const struct dropout_spec *drop)
{
    double start = profile_start();
    profile.base->attention_forward(s, q, k, v, bias, key_mask, probs, dropped, ctx, drop);
    profile_add(OP_ATTENTION_FORWARD, start);
}

static void timed_attention_backward(const struct attention_shape *s, const float *q,
                                     const float *k, const float *v, const float *probs,
                                     const float *dropped, const float *dctx, float *dq,
                                     float *dk, float *dv, float *dbias, float *scratch,
                                     const struct dropout_spec *drop)
{
    double start = profile_start();
    profile.base->attention_backward(s, q, k, v, probs, dropped, dctx, dq, dk, dv, dbias,
                                     scratch, drop);
    profile_add(OP_ATTENTION_BACKWARD, start);
}

static void timed_attention_decode(const struct decode_attention_shape *s, const float *q,
                                   const float *k, const float *v, const int32_t *entries,
                                   const float *bias, const int32_t *key_mask, float *probs,
                                   float *ctx)
{
    double start = profile_start();
    profile.base->attention_decode(s, q, k, v, entries, bias, key_mask, probs, ctx);
    profile_add(OP_ATTENTION_FORWARD, start);
}

static void timed_route_top1(const struct route_shape *s, const float *logits,
                             int skipped_assigned, float *probs, int32_t *expert,
                             int32_t *kept, int32_t *assigned, float *pmax, int32_t *perm,
                             int32_t *slot_of, int *offsets, int64_t *kept_counts,
                             int64_t *dropped_counts)
{
    double start = profile_start();
    profile.base->route_top1(s, logits, skipped_assigned, probs, expert, kept, assigned, pmax,
                             perm, slot_of, offsets, kept_counts, dropped_counts);
    profile_add(OP_ROUTING, start);
}

static void timed_gather_rows(const float *src, const int32_t *perm, int n, int d, float *dst)
{
    double start = profile_start();
    profile.base->gather_rows(src, perm, n, d, dst);
    profile_add(OP_ROUTING, start);
}

static void timed_scatter_add_rows(const float *src, const int32_t *perm, int n, int d,
                                   float *dst)
{
    double start = profile_start();
    profile.base->scatter_add_rows(src, perm, n, d, dst);
    profile_add(OP_ROUTING, start);
}

static void timed_moe_combine(int n, int d, const float *y, const int32_t *slot_of,
                              const float *pmax, const float *x, int skip_identity, float *out)
{
    double start = profile_start();
    profile.base->moe_combine(n, d, y, slot_of, pmax, x, skip_identity, out);
    profile_add(OP_ROUTING, start);
}

static void timed_moe_combine_backward(int n, int d, const float *dout, const float *y,
                                       const int32_t *slot_of, const float *pmax,
                                       const float *x, int skip_identity, float *dy, float *dx,
                                       float *dpmax)
{
    double start = profile_start();
    profile.base->moe_combine_backward(n, d, dout, y, slot_of, pmax, x, skip_identity, dy, dx,
                                       dpmax);
    profile_add(OP_ROUTING, start);
}

static void timed_router_pmax_backward(int n, int experts, const float *probs,
                                       const int32_t *expert, const float *dpmax,
                                       float *dlogits)
{
    double start = profile_start();
    profile.base->router_pmax_backward(n, experts, probs, expert, dpmax, dlogits);
    profile_add(OP_ROUTING, start);
}

static double timed_router_z_loss(int n, int experts, const float *logits, double grad_scale,
                                  float *dlogits)
{
    double start = profile_start();
    double loss = profile.base->router_z_loss(n, experts, logits, grad_scale, dlogits);
    profile_add(OP_ROUTING, start);
    return loss;
}

static void timed_balance_accumulate(int batch, int tokens, int experts, const float *probs,
                                     const int32_t *assigned, double *counts,
                                     double *prob_sums)
{
    double start = profile_start();
    profile.base->balance_accumulate(batch, tokens, experts, probs, assigned, counts,
                                     prob_sums);
    profile_add(OP_ROUTING, start);
}

static void timed_balance_backward(int batch, int tokens, int experts, const float *probs,
                                   const double *dprob, float *dlogits)
{
    double start = profile_start();
    profile.base->balance_backward(batch, tokens, experts, probs, dprob, dlogits);
    profile_add(OP_ROUTING, start);
}

static double timed_cross_entropy(int n, int vocab, const float *logits, const int32_t *labels,
                                  float scale, float *dlogits)
{
    double start = profile_start();
    double sum = profile.base->cross_entropy(n, vocab, logits, labels, scale, dlogits);
    profile_add(OP_CROSS_ENTROPY, start);
    return sum;
}

static void timed_adamw(float *param, const float *grad, float *m, float *v, size_t n,
                        float lr, float beta1, float beta2, float eps, float weight_decay,
                        long step)
{
    double start = profile_start();
    profile.base->adamw(param, grad, m, v, n, lr, beta1, beta2, eps, weight_decay, step);
    profile_add(OP_ADAMW, start);
}

/* Returns a copy of base whose compute operations record their time in
 * `profile` before returning. Memory allocation and transfers are not timed.
 * synchronize is NULL for a backend whose operations finish before they
 * return. */
static struct backend profiled_backend(const struct backend *base, void (*synchronize)(void),
                                       int vocab_size)
{
    struct backend t = *base;
    profile.base = base;
    profile.synchronize = synchronize;
    profile.vocab_size = vocab_size;
    t.zero = timed_zero;
    t.copy = timed_copy;
    t.gemm = timed_gemm;
    t.grouped_gemm_nt = timed_grouped_gemm_nt;
    t.grouped_gemm_nn = timed_grouped_gemm_nn;
    t.grouped_gemm_tn = timed_grouped_gemm_tn;
    t.add = timed_add;
    t.scale = timed_scale;
    t.relu_forward = timed_relu_forward;
    t.relu_backward = timed_relu_backward;
    t.dropout = timed_dropout;
    t.dropout_copy = timed_dropout_copy;
    t.dropout_add = timed_dropout_add;
    t.jitter = timed_jitter;
    t.embedding_forward = timed_embedding_forward;
    t.embedding_backward = timed_embedding_backward;
    t.rmsnorm_forward = timed_rmsnorm_forward;
    t.rmsnorm_backward = timed_rmsnorm_backward;
    t.position_bias_forward = timed_position_bias_forward;
    t.position_bias_backward = timed_position_bias_backward;
    t.attention_forward = timed_attention_forward;
    t.attention_backward = timed_attention_backward;
    t.attention_decode = timed_attention_decode;
    t.route_top1 = timed_route_top1;
    t.gather_rows = timed_gather_rows;
    t.scatter_add_rows = timed_scatter_add_rows;
    t.moe_combine = timed_moe_combine;
    t.moe_combine_backward = timed_moe_combine_backward;
    t.router_pmax_backward = timed_router_pmax_backward;
    t.router_z_loss = timed_router_z_loss;
    t.balance_accumulate = timed_balance_accumulate;
    t.balance_backward = timed_balance_backward;
    t.cross_entropy = timed_cross_entropy;
    t.adamw = timed_adamw;
    return t;
}

/* ---- configuration, batch and FLOP count ---- */

static const struct bench_shape *shape_find(const char *name)
{
    for (size_t i = 0; i < SHAPE_COUNT; i++)
        if (strcmp(bench_shapes[i].name, name) == 0)
            return &bench_shapes[i];
    return NULL;
}

static int check_dimension(const char *config, const char *field, int preset, int reference,
                           struct caem_error *err)
{
    if (preset == reference)
        return 0;
    return caem_fail(err, "preset '%s' has %s %d but bench/reference_step.py uses %d; update "
                     "bench_shapes in bench/bench_step.c and the reference script together",
                     config, field, preset, reference);
}

/* Fills cfg from the preset, with the reference script's settings. */
static int bench_config(struct model_config *cfg, const struct bench_shape *s,
                        struct caem_error *err)
{
    if (config_preset(cfg, s->name, err) != 0)
        return -1;
    cfg->tie_word_embeddings = s->tie_word_embeddings;
    cfg->dropout_rate = REFERENCE_DROPOUT;
    cfg->router_jitter_noise = REFERENCE_JITTER;
    const char *n = s->name;
    if (check_dimension(n, "vocab_size", cfg->vocab_size, s->vocab_size, err) ||
        check_dimension(n, "d_model", cfg->d_model, s->d_model, err) ||
        check_dimension(n, "d_kv", cfg->d_kv, s->d_kv, err) ||
        check_dimension(n, "num_heads", cfg->num_heads, s->num_heads, err) ||
        check_dimension(n, "d_ff", cfg->d_ff, s->d_ff, err) ||
        check_dimension(n, "encoder_layers", cfg->encoder_layers, s->layers, err) ||
        check_dimension(n, "decoder_layers", cfg->decoder_layers, s->layers, err) ||
        check_dimension(n, "encoder_sparse_step", cfg->encoder_sparse_step, s->sparse_step,
                        err) ||
        check_dimension(n, "decoder_sparse_step", cfg->decoder_sparse_step, s->sparse_step,
                        err) ||
        check_dimension(n, "num_experts", cfg->num_experts, s->num_experts, err) ||
        check_dimension(n, "expert_capacity", cfg->expert_capacity, s->expert_capacity, err))
        return -1;
    /* The reference script runs transformers' own routing, which parity mode
     * reproduces. */
    cfg->routing = ROUTING_PARITY;
    return 0;
}

static int32_t random_word(uint64_t index, int vocab_size)
{
    int words = vocab_size - FIRST_WORD_ID;
    int id = FIRST_WORD_ID + (int)(rng_uniform(DATA_SEED, index) * (float)words);
    return id < vocab_size ? id : vocab_size - 1;
}

/* Fills b with random full-length sequences that end in EOS, as the
 * reference builds them. Labels are the target ids, and the decoder input is
 * the labels shifted right behind the start id. The mask marks every token,
 * as the reference's all-ones attention_mask does. ids has room for
 * 2 B Te + 2 B Td values. */
static void batch_fill(struct batch *b, int32_t *ids, const struct model_config *cfg,
                       const struct bench_shape *s)
{
    int B = s->batch_size, Te = s->encoder_length, Td = s->decoder_length;
    size_t ne = (size_t)B * Te, nd = (size_t)B * Td;
    int32_t *input = ids, *mask = ids + ne, *labels = ids + 2 * ne, *decoder_input = labels + nd;
    for (size_t i = 0; i < ne; i++) {
        input[i] = random_word(i, cfg->vocab_size);
        mask[i] = 1;
    }
    for (size_t i = 0; i < nd; i++)
        labels[i] = random_word(ne + i, cfg->vocab_size);
    for (int r = 0; r < B; r++) {
        input[(size_t)r * Te + Te - 1] = cfg->eos_token_id;
        labels[(size_t)r * Td + Td - 1] = cfg->eos_token_id;
        decoder_input[(size_t)r * Td] = cfg->decoder_start_token_id;
        for (int t = 1; t < Td; t++)
            decoder_input[(size_t)r * Td + t] = labels[(size_t)r * Td + t - 1];
    }
    *b = (struct batch){ B, Te, Td, input, mask, decoder_input, labels };
}

/* Counts the tokens that experts processed in the last forward, summed over
 * every MoE layer of both stacks. `routed` gets the tokens the routers saw. */
static long count_kept_tokens(const struct model *m, long *routed)
{
    long count = 0;
    *routed = 0;
    for (int decoder = 0; decoder < 2; decoder++) {
        int layers = decoder ? m->config.decoder_layers : m->config.encoder_layers;
        for (int i = 0; i < layers; i++) {
            struct moe_routing r;
            if (!config_is_moe_layer(&m->config, decoder, i) ||
                model_routing(m, decoder, i, &r, NULL) != 0)
                continue;
            for (int e = 0; e < r.experts; e++)
                count += (long)r.kept_counts[e];
            *routed += r.tokens;
        }
    }
    return count;
}

/* Counts the model FLOPs of one forward pass of B sequences of Te encoder and
 * Td decoder tokens, in which the experts of all MoE layers together took
 * kept_tokens tokens. Attention counts the full T x T score matrix, also
 * where the causal mask zeroes half of it, because both backends compute
 * it whole. Element-wise work (norms, softmax, dropout, the loss) is not
 * counted. */
static void count_forward_flops(const struct model_config *c, int B, int Te, int Td,
                                double kept_tokens, struct flop_count *f)
{
    double D = c->d_model, F = c->d_ff, E = c->num_experts, V = c->vocab_size;
    double H = c->num_heads, K = c->d_kv, HK = H * K;
    double ne = (double)B * Te, nd = (double)B * Td;
    memset(f, 0, sizeof *f);
    for (int decoder = 0; decoder < 2; decoder++) {
        int layers = decoder ? c->decoder_layers : c->encoder_layers;
        double n = decoder ? nd : ne, T = decoder ? Td : Te;
        for (int i = 0; i < layers; i++) {
            f->projections += 2.0 * 4.0 * n * D * HK;
            f->attention += 2.0 * 2.0 * B * H * T * T * K;
            if (decoder) {
                /* cross-attention: queries and output from the decoder,
                 * keys and values from the encoder output */
                f->projections += 2.0 * (2.0 * nd * D * HK + 2.0 * ne * D * HK);
                f->attention += 2.0 * 2.0 * B * H * Td * Te * K;
            }
            if (config_is_moe_layer(c, decoder, i))
                f->router += 2.0 * n * D * E;
            else
                f->feed_forward += 2.0 * 2.0 * n * D * F;
        }
    }
    f->experts = 2.0 * 2.0 * kept_tokens * D * F;
    f->lm_head = 2.0 * nd * D * V;
}

static double flop_total(const struct flop_count *f)
{
    return f->projections + f->attention + f->feed_forward + f->experts + f->router +
           f->lm_head;
}

/* ---- measurements ---- */

/* Measures the best rate of SGEMM_REPEATS cblas_sgemm calls on square
 * SGEMM_SIZE matrices, in GFLOP/s. Returns 0 when the memory is missing. */
static double sgemm_gflops(void)
{
    size_t count = (size_t)SGEMM_SIZE * SGEMM_SIZE;
    float *a = malloc(sizeof(float) * count * 3);
    if (a == NULL)
        return 0.0;
    float *b = a + count, *c = b + count;
    for (size_t i = 0; i < count; i++) {
        a[i] = rng_uniform(DATA_SEED, i) - 0.5f;
        b[i] = rng_uniform(DATA_SEED, count + i) - 0.5f;
        c[i] = 0.0f;
    }
    int n = SGEMM_SIZE;
    double best = 1e30;
    /* one extra call first, to start the threads and touch the memory */
    for (int r = 0; r <= SGEMM_REPEATS; r++) {
        double start = seconds_now();
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, n, n, n, 1.0f, a, n, b, n, 0.0f,
                    c, n);
        double elapsed = seconds_now() - start;
        if (r > 0 && elapsed < best)
            best = elapsed;
    }
    free(a);
    return 2.0 * n * n * (double)n / best * 1e-9;
}

/* Opens the backend that --device names, in the --precision on the GPU.
 * Prints the reason and returns -1 when it cannot be opened. */
static int device_open(struct device *dev, const struct options *opt)
{
    memset(dev, 0, sizeof *dev);
    if (strcmp(opt->device, "cpu") == 0) {
        dev->backend = backend_cpu();
        return 0;
    }
#ifdef CAEM_HAVE_CUDA
    struct caem_error err;
    enum cuda_precision precision;
    if (cuda_precision_parse(opt->precision != NULL ? opt->precision : "fp32", &precision,
                             &err) != 0) {
        fprintf(stderr, "bench_step: invalid --precision: %s\n", err.message);
        return -1;
    }
    if (backend_cuda_open(&dev->backend, &err) != 0) {
        fprintf(stderr, "bench_step: cannot open the CUDA backend: %s\n", err.message);
        return -1;
    }
    backend_cuda_set_precision(precision);
    dev->synchronize = backend_cuda_synchronize;
    dev->precision = cuda_precision_name(precision);
    backend_cuda_describe(dev->description, sizeof dev->description);
    return 0;
#else
    fprintf(stderr, "bench_step: --device cuda: this build has no CUDA support (nvcc was not "
            "on the PATH when it was built); rebuild with nvcc, or use --device cpu\n");
    return -1;
#endif
}

/* Reads the clock after the device has finished the work queued so far. */
static double device_seconds(const struct device *dev)
{
    if (dev->synchronize != NULL)
        dev->synchronize();
    return seconds_now();
}

/* Returns the GEMM rate that the utilization is measured against, in
 * GFLOP/s, or 0 when it could not be measured. */
static double device_gemm_rate(const struct device *dev)
{
#ifdef CAEM_HAVE_CUDA
    if (dev->synchronize != NULL) {
        double rate = backend_cuda_gemm_rate(CUDA_GEMM_SIZE, CUDA_GEMM_REPEATS);
        return rate > 0.0 ? rate : 0.0;
    }
#endif
    return sgemm_gflops();
}

static double peak_rss_mib(void)
{
    struct rusage usage;
    if (getrusage(RUSAGE_SELF, &usage) != 0)
        return 0.0;
    return (double)usage.ru_maxrss / 1024.0; /* Linux reports KiB */
}

/* Appends text to dst (size bytes) in single quotes for /bin/sh. */
static void shell_quote(char *dst, size_t size, const char *text)
{
    size_t used = strlen(dst);
    if (used + 1 < size)
        dst[used++] = '\'';
    for (const char *p = text; *p != '\0' && used + 5 < size; p++) {
        if (*p == '\'') {
            memcpy(dst + used, "'\\''", 4);
            used += 4;
        } else {
            dst[used++] = *p;
        }
    }
    if (used + 1 < size)
        dst[used++] = '\'';
    dst[used] = '\0';
}

static void strip_newline(char *line)
{
    size_t len = strlen(line);
    while (len > 0 && (line[len - 1] == '\n' || line[len - 1] == '\r'))
        line[--len] = '\0';
}

/* Chooses the Python that runs the reference: $CAEM_PYTHON when set (an
 * absolute path or a command on the PATH), else tools/venv/bin/python under
 * root when it exists, else python3 from the PATH when `required`. Returns 1
 * when there is none to use. */
static int reference_python(const char *root, int required, char *python, size_t size)
{
    const char *chosen = getenv("CAEM_PYTHON");
    if (chosen != NULL && chosen[0] != '\0') {
        snprintf(python, size, "%s", chosen);
        return 0;
    }
    snprintf(python, size, "%s/tools/venv/bin/python", root);
    if (access(python, X_OK) == 0) {
        snprintf(python, size, "tools/venv/bin/python");
        return 0;
    }
    if (!required)
        return 1;
    snprintf(python, size, "python3");
    return 0;
}

/* Runs bench/reference_step.py of the repository at root on the same device,
 * precision and configuration, and stores its tokens_per_s. Returns 0 on
 * success, 1 when no Python for it was found (see reference_python), -1 when
 * the script failed, with a message in err. */
static int reference_run(const char *root, const struct options *opt,
                         const struct device *dev, double *tokens_per_s,
                         struct caem_error *err)
{
    char python[4096];
    if (reference_python(root, opt->reference, python, sizeof python) != 0)
        return 1;

    /* the script path is relative to root, so the command starts there */
    char command[16384] = "cd ";
    shell_quote(command, sizeof command, root);
    strncat(command, " && ", sizeof command - strlen(command) - 1);
    shell_quote(command, sizeof command, python);
    size_t used = strlen(command);
    used += (size_t)snprintf(command + used, sizeof command - used,
                             " bench/reference_step.py --config %s --steps %ld --threads %ld "
                             "--device %s", opt->config, opt->steps, opt->threads,
                             opt->device);
    if (dev->precision != NULL && used < sizeof command)
        used += (size_t)snprintf(command + used, sizeof command - used, " --precision %s",
                                 dev->precision);
    if (used < sizeof command)
        snprintf(command + used, sizeof command - used, " 2>&1");
    fflush(stdout);
    FILE *pipe = popen(command, "r");
    if (pipe == NULL)
        return caem_fail(err, "cannot start %s: %s", python, strerror(errno));

    char line[4096], last[4096] = "";
    int found = 0;
    while (fgets(line, sizeof line, pipe) != NULL) {
        strip_newline(line);
        if (line[0] != '\0')
            snprintf(last, sizeof last, "%s", line);
        const char *field = strstr(line, "tokens_per_s=");
        if (strncmp(line, "reference config=", 17) == 0 && field != NULL) {
            char *end;
            *tokens_per_s = strtod(field + strlen("tokens_per_s="), &end);
            found = end != field + strlen("tokens_per_s=") && *tokens_per_s > 0.0;
            if (opt->verbose)
                fprintf(stderr, "%s\n", line);
        }
    }
    int status = pclose(pipe);
    if (status == -1)
        return caem_fail(err, "waiting for bench/reference_step.py failed: %s",
                         strerror(errno));
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
        return caem_fail(err, "bench/reference_step.py (run by %s) exited with status %d: "
                         "%.300s", python, WIFEXITED(status) ? WEXITSTATUS(status) : -1, last);
    if (!found)
        return caem_fail(err, "no tokens_per_s in the output of bench/reference_step.py: "
                         "%.300s", last);
    return 0;
}

/* Runs one training step in the reference's order. Phase times accumulate
 * in t when it is not NULL; on the GPU that waits for each phase to finish,
 * which the step without t does not. */
static int train_step(struct model *m, struct adamw *opt, const struct batch *b,
                      const struct device *dev, struct phase_times *t,
                      struct caem_error *err)
{
    struct model_losses losses;
    double t0 = t != NULL ? device_seconds(dev) : 0.0;
    if (model_forward(m, b, &losses, err) != 0)
        return -1;
    double t1 = t != NULL ? device_seconds(dev) : 0.0;
    if (model_backward(m, err) != 0)
        return -1;
    double t2 = t != NULL ? device_seconds(dev) : 0.0;
    adamw_step(opt, m);
    double t3 = t != NULL ? device_seconds(dev) : 0.0;
    model_zero_grad(m);
    double t4 = t != NULL ? device_seconds(dev) : 0.0;
    if (t != NULL) {
        t->forward += t1 - t0;
        t->backward += t2 - t1;
        t->optimizer += t3 - t2;
        t->zero_grad += t4 - t3;
    }
    return 0;
}

/* Prints the step phases, the per-operation times and the FLOP breakdown to
 * stderr. The counted GEMM FLOPs cover only the GEMMs outside attention, so
 * they are compared with the analytic count less attention. */
static void print_breakdown(const struct phase_times *t, double elapsed, long steps,
                            const struct flop_count *f)
{
    double ms = 1000.0 / steps;
    fprintf(stderr, "phases per step: forward %.1f ms, backward %.1f ms, AdamW %.1f ms, "
            "zero grad %.1f ms\n", t->forward * ms, t->backward * ms, t->optimizer * ms,
            t->zero_grad * ms);
    double timed = 0.0;
    for (int op = 0; op < OP_COUNT; op++)
        timed += profile.seconds[op];
    fprintf(stderr, "backend operations per step (%% of step time):\n");
    for (int op = 0; op < OP_COUNT; op++)
        fprintf(stderr, "  %-40s %8.1f ms %5.1f%%  %6ld calls\n", profile_op_names[op],
                profile.seconds[op] * ms, 100.0 * profile.seconds[op] / elapsed,
                profile.calls[op] / steps);
    fprintf(stderr, "  %-40s %8.1f ms %5.1f%%\n", "outside the backend table",
            (elapsed - timed) * ms, 100.0 * (elapsed - timed) / elapsed);
    fprintf(stderr, "forward GFLOP: projections %.3g, attention %.3g, dense FF %.3g, "
            "experts %.3g, router %.3g, LM head %.3g\n", f->projections * 1e-9,
            f->attention * 1e-9, f->feed_forward * 1e-9, f->experts * 1e-9, f->router * 1e-9,
            f->lm_head * 1e-9);
    double analytic = 3.0 * (flop_total(f) - f->attention);
    fprintf(stderr, "GEMM FLOPs through the backend per step: %.4g counted, %.4g analytic "
            "(3 x forward, attention excluded)\n", profile.gemm_flops / steps, analytic);
}

static void print_usage(FILE *out)
{
    fprintf(out,
            "usage: bench_step [--config NAME] [--steps N] [--threads N] [--device cpu|cuda]\n"
            "                  [--precision fp32|tf32|bf16] [--reference] [--verbose]\n"
            "\n"
            "Times one training step (forward with labels, backward, AdamW, zero grad) on\n"
            "the CPU or CUDA backend and prints one line: tokens/s, ms/step, peak RSS,\n"
            "model GFLOP per step and per second as a fraction of the GEMM rate (a %d^3\n"
            "cblas_sgemm on the CPU, a %d^3 cuBLAS GEMM in the same precision on the GPU),\n"
            "and the same step in bench/reference_step.py on the same device.\n"
            "\n"
            "  --config NAME     model and batch shape, as the reference script defines it:\n"
            "                    tiny, small or switch-base-8 (default small)\n"
            "  --steps N         timed steps after %d warm-up steps (default 5)\n"
            "  --threads N       OpenBLAS and OpenMP threads, also passed to the reference\n"
            "                    (default: all cores)\n"
            "  --device NAME     cpu or cuda (default cpu); cuda needs a build with nvcc\n"
            "                    and a GPU\n"
            "  --precision NAME  GEMM precision on the GPU: fp32, tf32 or bf16 inputs, all\n"
            "                    with float32 accumulation (default fp32; cuda only)\n"
            "  --reference       run the reference even without tools/venv, with\n"
            "                    $CAEM_PYTHON or else python3 from the PATH. Without this\n"
            "                    option the reference runs only when $CAEM_PYTHON is set or\n"
            "                    tools/venv/bin/python exists under $CAEM_ROOT (default: the\n"
            "                    current directory).\n"
            "  --verbose         print to stderr the time of each step phase and backend\n"
            "                    operation, the FLOP breakdown and the reference's own line\n"
            "                    (the operation timers add a clock read around each call,\n"
            "                    and on the GPU a wait for the operation to finish)\n",
            SGEMM_SIZE, CUDA_GEMM_SIZE, WARMUP_STEPS);
}

static int parse_long(const char *text, const char *option, long min, long max, long *out)
{
    char *end;
    errno = 0;
    long value = strtol(text, &end, 10);
    if (errno != 0 || end == text || *end != '\0' || value < min || value > max) {
        fprintf(stderr, "bench_step: invalid %s '%s', expected an integer in [%ld, %ld]\n",
                option, text, min, max);
        return -1;
    }
    *out = value;
    return 0;
}

static int parse_options(int argc, char **argv, struct options *opt)
{
    static const struct option long_options[] = {
        { "config", required_argument, NULL, 'c' },
        { "steps", required_argument, NULL, 's' },
        { "threads", required_argument, NULL, 't' },
        { "verbose", no_argument, NULL, 'v' },
        { "device", required_argument, NULL, 'd' },
        { "precision", required_argument, NULL, 'p' },
        { "reference", no_argument, NULL, 'r' },
        { "help", no_argument, NULL, 'h' },
        { NULL, 0, NULL, 0 },
    };
    int c;
    while ((c = getopt_long(argc, argv, "h", long_options, NULL)) != -1) {
        switch (c) {
        case 'c':
            opt->config = optarg;
            break;
        case 's':
            if (parse_long(optarg, "--steps", 1, 100000, &opt->steps) != 0)
                return 2;
            break;
        case 't':
            if (parse_long(optarg, "--threads", 1, 1024, &opt->threads) != 0)
                return 2;
            break;
        case 'v':
            opt->verbose = 1;
            break;
        case 'd':
            opt->device = optarg;
            break;
        case 'p':
            opt->precision = optarg;
            break;
        case 'r':
            opt->reference = 1;
            break;
        case 'h':
            print_usage(stdout);
            return 1;
        default:
            print_usage(stderr);
            return 2;
        }
    }
    if (optind < argc) {
        fprintf(stderr, "bench_step: unexpected argument '%s' (see --help)\n", argv[optind]);
        return 2;
    }
    if (shape_find(opt->config) == NULL) {
        fprintf(stderr, "bench_step: unknown --config '%s', expected one of:", opt->config);
        for (size_t i = 0; i < SHAPE_COUNT; i++)
            fprintf(stderr, " %s", bench_shapes[i].name);
        fprintf(stderr, "\n");
        return 2;
    }
    if (strcmp(opt->device, "cpu") != 0 && strcmp(opt->device, "cuda") != 0) {
        fprintf(stderr, "bench_step: invalid --device '%s', expected cpu or cuda\n",
                opt->device);
        return 2;
    }
    if (opt->precision != NULL && strcmp(opt->device, "cuda") != 0) {
        fprintf(stderr, "bench_step: --precision applies to --device cuda only; the CPU "
                "backend computes in float32\n");
        return 2;
    }
    if (opt->precision != NULL && strcmp(opt->precision, "fp32") != 0 &&
        strcmp(opt->precision, "tf32") != 0 && strcmp(opt->precision, "bf16") != 0) {
        fprintf(stderr, "bench_step: invalid --precision '%s', expected fp32, tf32 or bf16\n",
                opt->precision);
        return 2;
    }
    return 0;
}

static int default_threads(void)
{
#ifdef _OPENMP
    return omp_get_num_procs();
#else
    long cores = sysconf(_SC_NPROCESSORS_ONLN);
    return cores > 0 ? (int)cores : 1;
#endif
}

/* Prints the result line (see the top of this file) after running the
 * reference. ms, tokens/s and the rates are those of the timed steps. */
static void print_result(const struct options *opt, const struct device *dev, double step_s,
                         double tokens_per_s, double rss, double step_flops)
{
    double model_gflops = step_flops / step_s * 1e-9;
    double gemm = device_gemm_rate(dev);
    char line[2048];
    int used;
    if (dev->precision != NULL)
        used = snprintf(line, sizeof line, "%s on %s, %s", opt->config, dev->description,
                        dev->precision);
    else
        used = snprintf(line, sizeof line, "%s", opt->config);
    used += snprintf(line + used, sizeof line - (size_t)used,
                     ": %.0f tokens/s, %.1f ms/step, peak RSS %.0f MiB, %.3g GFLOP/step, "
                     "%.1f GFLOP/s", tokens_per_s, step_s * 1000.0, rss, step_flops * 1e-9,
                     model_gflops);
    if (gemm > 0.0 && dev->precision != NULL)
        used += snprintf(line + used, sizeof line - (size_t)used,
                         " = %.1f%% of %s GEMM (%.1f GFLOP/s)", 100.0 * model_gflops / gemm,
                         dev->precision, gemm);
    else if (gemm > 0.0)
        used += snprintf(line + used, sizeof line - (size_t)used,
                         " = %.0f%% of sgemm (%.1f GFLOP/s)", 100.0 * model_gflops / gemm,
                         gemm);
    else if (dev->precision != NULL)
        used += snprintf(line + used, sizeof line - (size_t)used,
                         ", %s GEMM rate not measured (backend_cuda_gemm_rate failed)",
                         dev->precision);
    else
        used += snprintf(line + used, sizeof line - (size_t)used,
                         ", sgemm not measured (out of memory for its matrices)");

    const char *root = getenv("CAEM_ROOT");
    double reference = 0.0;
    struct caem_error err;
    int ref = reference_run(root != NULL && root[0] != '\0' ? root : ".", opt, dev,
                            &reference, &err);
    if (ref == 0)
        snprintf(line + used, sizeof line - (size_t)used, ", reference %.0f tokens/s, %.1fx",
                 reference, tokens_per_s / reference);
    else if (ref == 1)
        snprintf(line + used, sizeof line - (size_t)used,
                 ", reference skipped: tools/venv not found (README.md says how to make it; "
                 "--reference uses $CAEM_PYTHON or python3)");
    else
        snprintf(line + used, sizeof line - (size_t)used, ", reference failed: %s",
                 err.message);
    printf("%s\n", line);
}

int main(int argc, char **argv)
{
    /* the same thread behavior as caem; the reference gets the user's own */
    threads_prefer_passive_wait(argv);
    threads_restore_environment();
    struct options opt = { .config = "small", .steps = 5, .device = "cpu" };
    int parsed = parse_options(argc, argv, &opt);
    if (parsed != 0)
        return parsed == 1 ? 0 : parsed;
    if (opt.threads == 0)
        opt.threads = default_threads();
    backend_cpu_set_threads((int)opt.threads);
    const struct bench_shape *shape = shape_find(opt.config);

    struct caem_error err;
    struct model_config cfg;
    if (bench_config(&cfg, shape, &err) != 0) {
        fprintf(stderr, "bench_step: %s: %s\n", opt.config, err.message);
        return 1;
    }
    struct device dev;
    if (device_open(&dev, &opt) != 0)
        return 1;
    struct backend timed_table;
    const struct backend *backend = dev.backend;
    if (opt.verbose) {
        timed_table = profiled_backend(backend, dev.synchronize, cfg.vocab_size);
        backend = &timed_table;
    }
    struct model *m = NULL;
    struct adamw *optimizer = NULL;
    struct adamw_config adamw_settings = adamw_defaults();
    if (model_create(&m, &cfg, backend, &err) != 0 ||
        adamw_create(&optimizer, m, &adamw_settings, &err) != 0) {
        fprintf(stderr, "bench_step: %s: model creation failed: %s\n", opt.config,
                err.message);
        model_free(m);
        return 1;
    }
    model_init_params(m, INIT_SEED);
    model_set_seed(m, DROPOUT_SEED);
    m->training = 1;
    model_zero_grad(m);

    int B = shape->batch_size, Te = shape->encoder_length, Td = shape->decoder_length;
    int32_t *ids = malloc(sizeof(int32_t) * 2 * (size_t)B * (Te + Td));
    if (ids == NULL) {
        fprintf(stderr, "bench_step: %s: out of memory for the batch\n", opt.config);
        adamw_free(optimizer);
        model_free(m);
        return 1;
    }
    struct batch batch;
    batch_fill(&batch, ids, &cfg, shape);

    /* Warm-up, then the timed steps. The kept tokens of every timed step
     * enter the FLOP count, because routing changes with the parameters.
     * On the GPU the clock is read after the queued work has finished. */
    int status = 0;
    for (int i = 0; i < WARMUP_STEPS && status == 0; i++)
        status = train_step(m, optimizer, &batch, &dev, NULL, &err);
    struct phase_times phases = { 0 };
    long kept_total = 0, routed_total = 0;
    profile_reset();
    double start = device_seconds(&dev);
    for (long i = 0; i < opt.steps && status == 0; i++) {
        status = train_step(m, optimizer, &batch, &dev, opt.verbose ? &phases : NULL, &err);
        long routed_step;
        kept_total += count_kept_tokens(m, &routed_step);
        routed_total += routed_step;
    }
    double elapsed = device_seconds(&dev) - start;
    double rss = peak_rss_mib();
    free(ids);
    adamw_free(optimizer);
    model_free(m);
    if (status != 0) {
        fprintf(stderr, "bench_step: %s: training step failed: %s\n", opt.config, err.message);
        return 1;
    }

    struct flop_count flops;
    count_forward_flops(&cfg, B, Te, Td, (double)kept_total / opt.steps, &flops);
    double step_flops = 3.0 * flop_total(&flops); /* backward = 2 x forward */
    double step_s = elapsed / opt.steps;
    double tokens_per_s = (double)B * (Te + Td) / step_s;
    if (opt.verbose) {
        fprintf(stderr, "%s: %ld of %ld routed tokens kept by the experts, %ld threads\n",
                opt.config, kept_total, routed_total, opt.threads);
        print_breakdown(&phases, elapsed, opt.steps, &flops);
    }
    print_result(&opt, &dev, step_s, tokens_per_s, rss, step_flops);
    return 0;
}
