/* The Switch Transformer: parameters, forward with teacher forcing, backward.
 *
 * It computes what Hugging Face transformers' SwitchTransformersForConditional-
 * Generation (version 4.46.3) computes. That is RMS norm without mean or bias,
 * attention without 1/sqrt(K) scaling and with a relative position bias shared
 * by the layers of a stack, top-1 MoE feed-forward in every sparse_step-th
 * layer, and cross-entropy plus router z-loss and load-balancing loss. The
 * routing mode of the config selects the reference's treatment of skipped
 * tokens and jitter (parity) or the Switch Transformer paper's (clean), as
 * config.h and docs/model.md describe.
 *
 * Ownership: a model owns its parameters, gradients and activation workspace,
 * all allocated by its backend. Not thread-safe: one thread drives a model. */
#ifndef CAEM_MODEL_H
#define CAEM_MODEL_H

#include <stdint.h>

#include "backend.h"
#include "config.h"
#include "error.h"
#include "params.h"
#include "rng.h"

/* Token id that the loss ignores in labels. */
#define LABEL_IGNORE (-100)

/* One batch for teacher-forced training or scoring. Host memory, row-major. */
struct batch {
    int batch_size;                   /* B */
    int encoder_length;               /* Te */
    int decoder_length;               /* Td */
    const int32_t *input_ids;         /* [B, Te] */
    const int32_t *attention_mask;    /* [B, Te], 1 = token, 0 = padding; NULL: all tokens */
    const int32_t *decoder_input_ids; /* [B, Td] */
    const int32_t *labels;            /* [B, Td], LABEL_IGNORE skips; NULL: no loss */
};

/* Losses of one forward. The router terms are unscaled, as the reference
 * returns them; total = cross_entropy + z_coef * (encoder_z + decoder_z) +
 * aux_coef * (encoder_balance + decoder_balance). */
struct model_losses {
    double total;
    double cross_entropy;
    double encoder_z;
    double encoder_balance;
    double decoder_z;
    double decoder_balance;
    long label_tokens;
};

/* Routing of one MoE layer in the last forward (backend memory). */
struct moe_routing {
    int tokens;                   /* N */
    int experts;                  /* E */
    const float *logits;          /* [N, E] */
    const float *probs;           /* [N, E] */
    const int32_t *expert;        /* [N] argmax */
    const int32_t *kept;          /* [N] 0 when skipped for capacity */
    const int64_t *kept_counts;   /* host [E] */
    const int64_t *dropped_counts;/* host [E] */
};

struct workspace;

struct model {
    struct model_config config;
    const struct backend *backend;
    struct param_layout layout;
    float *params; /* layout.total floats */
    float *grads;  /* same layout */
    /* Per tensor, 1 when the gradient accumulated since model_zero_grad has
     * any contribution. An expert that received no token has none, so the
     * optimizer leaves it alone, as torch.optim.AdamW (torch 2.5) skips a
     * parameter whose gradient is None. */
    unsigned char *grad_touched;
    int training;  /* dropout and jitter apply only when set */
    struct rng_stream rng;
    struct workspace *ws;
};

/* Creates a model with zeroed parameters; model_init_params fills them. */
int model_create(struct model **out, const struct model_config *cfg,
                 const struct backend *backend, struct caem_error *err);
void model_free(struct model *m);

/* Initializes every tensor as the reference does (norms 1, the rest normal
 * with the reference's per-tensor std), from the seed. */
void model_init_params(struct model *m, uint64_t seed);

/* Sets the seed of dropout and router jitter. */
void model_set_seed(struct model *m, uint64_t seed);

void model_zero_grad(struct model *m);

/* Runs encoder, decoder and the losses, keeping what backward needs. With
 * labels NULL only the logits are computed. */
int model_forward(struct model *m, const struct batch *b, struct model_losses *losses,
                  struct caem_error *err);

/* Adds the gradient of losses->total of the last forward to m->grads. */
int model_backward(struct model *m, struct caem_error *err);

/* Logits of the last forward, [B * Td, V], backend memory. */
const float *model_logits(const struct model *m);

/* Routing of MoE layer `layer` (block index) of the encoder (decoder = 0) or
 * decoder in the last forward; fails when that block is dense. */
int model_routing(const struct model *m, int decoder, int layer, struct moe_routing *out,
                  struct caem_error *err);

/* Output of block `layer` of the encoder (decoder = 0) or decoder in the
 * last forward, before the stack's final norm: *out points to [N, D] backend
 * memory and *tokens is N = B T. */
int model_block_output(const struct model *m, int decoder, int layer, const float **out,
                       int *tokens, struct caem_error *err);

/* Host pointer to a tensor's values or gradient by name; NULL when absent.
 * Valid for the CPU backend, whose memory is host memory. */
float *model_param(struct model *m, const char *name, size_t *count);
float *model_grad(struct model *m, const char *name, size_t *count);

#endif
