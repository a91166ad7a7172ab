/* Parameter layout: every tensor of a model in one allocation.
 *
 * Each tensor has a name (the name the checkpoint uses, e.g.
 * "encoder/block_03/moe/expert_05/wi"), a shape and an offset in floats into
 * the single buffer. Gradients and optimizer moments use the same offsets in
 * buffers of the same size. Linear weights are stored [out, in], as the
 * reference stores them, so y = x W^T. */
#ifndef CAEM_PARAMS_H
#define CAEM_PARAMS_H

#include <stddef.h>

#include "config.h"
#include "error.h"

#define PARAM_NAME_MAX 96

/* Initialization of a tensor, with the reference's standard deviations. */
enum param_init {
    INIT_ONES,   /* layer-norm weights */
    INIT_NORMAL, /* normal with the tensor's std */
};

struct param_info {
    char name[PARAM_NAME_MAX];
    int ndim;
    int shape[2];
    size_t offset;
    size_t count;
    enum param_init init;
    float std;
    int expert; /* 1 for an expert's wi or wo */
};

/* Offsets of one attention sublayer. */
struct attention_offsets {
    size_t norm, q, k, v, o;
};

/* Offsets of one block. The feed-forward part is dense (wi, wo) or MoE
 * (router, expert_wi, expert_wo: E tensors each, `expert_stride` apart). */
struct block_offsets {
    struct attention_offsets self;
    struct attention_offsets cross; /* decoder only */
    size_t ff_norm;
    int moe;
    size_t wi, wo;
    size_t router;
    size_t expert_wi, expert_wo;
    size_t expert_stride; /* floats from one expert's wi (or wo) to the next */
    int expert_wi_tensor, expert_wo_tensor; /* tensor index of expert 0's wi and wo */
};

struct stack_offsets {
    int layers;
    struct block_offsets *blocks;
    size_t relative_bias; /* [buckets, H], in block 0 */
    size_t final_norm;
};

struct param_layout {
    size_t total;     /* floats */
    int count;        /* tensors */
    struct param_info *tensors;
    size_t embedding; /* shared [V, D] */
    size_t lm_head;   /* [V, D]; equals embedding when tied */
    struct stack_offsets encoder, decoder;
};

int param_layout_build(struct param_layout *layout, const struct model_config *cfg,
                       struct caem_error *err);
void param_layout_free(struct param_layout *layout);

/* Returns the tensor with this name, or NULL. */
const struct param_info *param_find(const struct param_layout *layout, const char *name);

#endif
