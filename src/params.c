#include "params.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct layout_builder {
    struct param_layout *layout;
    int capacity;
    int failed;
};

static size_t add_tensor(struct layout_builder *lb, const char *name, int rows, int cols,
                         enum param_init init, float std)
{
    struct param_layout *L = lb->layout;
    if (L->count == lb->capacity) {
        int cap = lb->capacity ? lb->capacity * 2 : 64;
        struct param_info *grown = realloc(L->tensors, sizeof *grown * (size_t)cap);
        if (grown == NULL) {
            lb->failed = 1;
            return 0;
        }
        L->tensors = grown;
        lb->capacity = cap;
    }
    struct param_info *p = &L->tensors[L->count++];
    memset(p, 0, sizeof *p);
    snprintf(p->name, sizeof p->name, "%s", name);
    p->ndim = cols > 0 ? 2 : 1;
    p->shape[0] = rows;
    p->shape[1] = cols > 0 ? cols : 0;
    p->count = (size_t)rows * (size_t)(cols > 0 ? cols : 1);
    /* Keep every tensor 16-float aligned for vector loads. */
    p->offset = (L->total + 15) / 16 * 16;
    L->total = p->offset + p->count;
    p->init = init;
    p->std = std;
    return p->offset;
}

static struct attention_offsets add_attention(struct layout_builder *lb, const char *prefix,
                                              const struct model_config *c)
{
    char name[PARAM_NAME_MAX];
    struct attention_offsets a;
    float f = c->initializer_factor;
    int inner = c->num_heads * c->d_kv;
    snprintf(name, sizeof name, "%s/norm", prefix);
    a.norm = add_tensor(lb, name, c->d_model, 0, INIT_ONES, 0.0f);
    snprintf(name, sizeof name, "%s/q", prefix);
    a.q = add_tensor(lb, name, inner, c->d_model, INIT_NORMAL,
                     f / sqrtf((float)c->d_model * c->d_kv));
    snprintf(name, sizeof name, "%s/k", prefix);
    a.k = add_tensor(lb, name, inner, c->d_model, INIT_NORMAL, f / sqrtf((float)c->d_model));
    snprintf(name, sizeof name, "%s/v", prefix);
    a.v = add_tensor(lb, name, inner, c->d_model, INIT_NORMAL, f / sqrtf((float)c->d_model));
    snprintf(name, sizeof name, "%s/o", prefix);
    a.o = add_tensor(lb, name, c->d_model, inner, INIT_NORMAL, f / sqrtf((float)inner));
    return a;
}

static int add_stack(struct layout_builder *lb, struct stack_offsets *s, int decoder,
                     const struct model_config *c, struct caem_error *err)
{
    const char *stack = decoder ? "decoder" : "encoder";
    float f = c->initializer_factor;
    char prefix[48], name[PARAM_NAME_MAX];
    s->layers = decoder ? c->decoder_layers : c->encoder_layers;
    s->blocks = calloc((size_t)s->layers, sizeof *s->blocks);
    if (s->blocks == NULL)
        return caem_fail(err, "out of memory for the %s block layout", stack);
    for (int i = 0; i < s->layers; i++) {
        struct block_offsets *b = &s->blocks[i];
        snprintf(prefix, sizeof prefix, "%s/block_%02d/self_attention", stack, i);
        b->self = add_attention(lb, prefix, c);
        if (i == 0) {
            snprintf(name, sizeof name, "%s/relative_bias", prefix);
            s->relative_bias = add_tensor(lb, name, c->relative_attention_num_buckets,
                                          c->num_heads, INIT_NORMAL,
                                          f / sqrtf((float)c->d_model));
        }
        if (decoder) {
            snprintf(prefix, sizeof prefix, "%s/block_%02d/cross_attention", stack, i);
            b->cross = add_attention(lb, prefix, c);
        }
        b->moe = config_is_moe_layer(c, decoder, i);
        if (!b->moe) {
            snprintf(prefix, sizeof prefix, "%s/block_%02d/ff", stack, i);
            snprintf(name, sizeof name, "%s/norm", prefix);
            b->ff_norm = add_tensor(lb, name, c->d_model, 0, INIT_ONES, 0.0f);
            snprintf(name, sizeof name, "%s/wi", prefix);
            b->wi = add_tensor(lb, name, c->d_ff, c->d_model, INIT_NORMAL,
                               f / sqrtf((float)c->d_model));
            snprintf(name, sizeof name, "%s/wo", prefix);
            b->wo = add_tensor(lb, name, c->d_model, c->d_ff, INIT_NORMAL,
                               f / sqrtf((float)c->d_ff));
            continue;
        }
        snprintf(prefix, sizeof prefix, "%s/block_%02d/moe", stack, i);
        snprintf(name, sizeof name, "%s/norm", prefix);
        b->ff_norm = add_tensor(lb, name, c->d_model, 0, INIT_ONES, 0.0f);
        snprintf(name, sizeof name, "%s/router", prefix);
        b->router = add_tensor(lb, name, c->num_experts, c->d_model, INIT_NORMAL, f);
        /* Experts of one layer are contiguous, wi of all experts then wo of
         * all experts, so that a grouped GEMM steps through them by a stride.
         * Experts use std d_model^-1/2 for both wi and wo, unlike the dense
         * layer, as the reference initializes them. */
        b->expert_stride = ((size_t)c->d_ff * c->d_model + 15) / 16 * 16;
        for (int e = 0; e < c->num_experts; e++) {
            snprintf(name, sizeof name, "%s/expert_%02d/wi", prefix, e);
            size_t off = add_tensor(lb, name, c->d_ff, c->d_model, INIT_NORMAL,
                                    f / sqrtf((float)c->d_model));
            if (e == 0) {
                b->expert_wi = off;
                b->expert_wi_tensor = lb->layout->count - 1;
            }
            lb->layout->tensors[lb->layout->count - 1].expert = 1;
        }
        for (int e = 0; e < c->num_experts; e++) {
            snprintf(name, sizeof name, "%s/expert_%02d/wo", prefix, e);
            size_t off = add_tensor(lb, name, c->d_model, c->d_ff, INIT_NORMAL,
                                    f / sqrtf((float)c->d_model));
            if (e == 0) {
                b->expert_wo = off;
                b->expert_wo_tensor = lb->layout->count - 1;
            }
            lb->layout->tensors[lb->layout->count - 1].expert = 1;
        }
    }
    snprintf(name, sizeof name, "%s/final_norm", stack);
    s->final_norm = add_tensor(lb, name, c->d_model, 0, INIT_ONES, 0.0f);
    return 0;
}

int param_layout_build(struct param_layout *layout, const struct model_config *cfg,
                       struct caem_error *err)
{
    memset(layout, 0, sizeof *layout);
    struct layout_builder lb = { .layout = layout };
    float f = cfg->initializer_factor;
    layout->embedding = add_tensor(&lb, "shared/embedding", cfg->vocab_size, cfg->d_model,
                                   INIT_NORMAL, f);
    if (add_stack(&lb, &layout->encoder, 0, cfg, err) != 0 ||
        add_stack(&lb, &layout->decoder, 1, cfg, err) != 0) {
        param_layout_free(layout);
        return -1;
    }
    if (cfg->tie_word_embeddings)
        layout->lm_head = layout->embedding;
    else
        layout->lm_head = add_tensor(&lb, "lm_head", cfg->vocab_size, cfg->d_model,
                                     INIT_NORMAL, f);
    if (lb.failed) {
        param_layout_free(layout);
        return caem_fail(err, "out of memory for the parameter layout");
    }
    return 0;
}

void param_layout_free(struct param_layout *layout)
{
    free(layout->tensors);
    free(layout->encoder.blocks);
    free(layout->decoder.blocks);
    memset(layout, 0, sizeof *layout);
}

const struct param_info *param_find(const struct param_layout *layout, const char *name)
{
    for (int i = 0; i < layout->count; i++)
        if (strcmp(layout->tensors[i].name, name) == 0)
            return &layout->tensors[i];
    return NULL;
}
