#include "adamw.h"

#include <math.h>
#include <stdlib.h>

struct adamw_config adamw_defaults(void)
{
    struct adamw_config c = { 3e-4f, 0.9f, 0.98f, 1e-6f, 0.005f };
    return c;
}

int adamw_create(struct adamw **out, const struct model *model,
                 const struct adamw_config *config, struct caem_error *err)
{
    *out = NULL;
    if (!(config->lr > 0.0f) || !(config->beta1 >= 0.0f && config->beta1 < 1.0f) ||
        !(config->beta2 >= 0.0f && config->beta2 < 1.0f) || !(config->eps > 0.0f) ||
        !(config->weight_decay >= 0.0f))
        return caem_fail(err, "invalid AdamW settings: lr %g (expected > 0), betas (%g, %g) "
                         "(expected [0, 1)), eps %g (expected > 0), weight decay %g "
                         "(expected >= 0)", (double)config->lr, (double)config->beta1,
                         (double)config->beta2, (double)config->eps,
                         (double)config->weight_decay);
    struct adamw *opt = calloc(1, sizeof *opt);
    if (opt == NULL)
        return caem_fail(err, "out of memory for the optimizer");
    opt->config = *config;
    opt->backend = model->backend;
    opt->count = model->layout.total;
    opt->m = model->backend->alloc(sizeof(float) * opt->count);
    opt->v = model->backend->alloc(sizeof(float) * opt->count);
    opt->tensor_steps = calloc((size_t)model->layout.count, sizeof *opt->tensor_steps);
    if (opt->m == NULL || opt->v == NULL || opt->tensor_steps == NULL) {
        adamw_free(opt);
        return caem_fail(err, "out of memory for the AdamW moments of %zu parameters",
                         model->layout.total);
    }
    *out = opt;
    return 0;
}

void adamw_free(struct adamw *opt)
{
    if (opt == NULL)
        return;
    if (opt->m != NULL)
        opt->backend->free(opt->m);
    if (opt->v != NULL)
        opt->backend->free(opt->v);
    free(opt->tensor_steps);
    free(opt);
}

void adamw_step(struct adamw *opt, struct model *model)
{
    const struct adamw_config *c = &opt->config;
    opt->step++;
    for (int i = 0; i < model->layout.count; i++) {
        if (!model->grad_touched[i])
            continue;
        const struct param_info *p = &model->layout.tensors[i];
        long step = ++opt->tensor_steps[i];
        opt->backend->adamw(model->params + p->offset, model->grads + p->offset,
                            opt->m + p->offset, opt->v + p->offset, p->count, c->lr, c->beta1,
                            c->beta2, c->eps, c->weight_decay, step);
    }
}
