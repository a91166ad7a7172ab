/* AdamW with decoupled weight decay and bias correction, as
 * torch.optim.AdamW computes it. The weight decay applies to every tensor.
 * A tensor without gradient in a step (an expert that received no token) is
 * not updated, decayed or counted, so each tensor has its own step count. */
#ifndef CAEM_ADAMW_H
#define CAEM_ADAMW_H

#include "error.h"
#include "model.h"

struct adamw_config {
    float lr;
    float beta1;
    float beta2;
    float eps;
    float weight_decay;
};

/* The workbench's defaults for fine-tuning: lr 3e-4, betas (0.9, 0.98),
 * eps 1e-6, weight decay 0.005. */
struct adamw_config adamw_defaults(void);

struct adamw {
    struct adamw_config config;
    const struct backend *backend;
    size_t count;
    float *m, *v; /* first and second moments, backend memory */
    long step;    /* calls of adamw_step */
    long *tensor_steps; /* per tensor, the updates it received */
};

int adamw_create(struct adamw **out, const struct model *model,
                 const struct adamw_config *config, struct caem_error *err);
void adamw_free(struct adamw *opt);

/* Updates the model's parameters from its gradients. The gradients are left
 * as they are; the caller zeroes them before accumulating the next step. */
void adamw_step(struct adamw *opt, struct model *model);

#endif
