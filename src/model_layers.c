/* Forward and backward of the sublayers of a Switch Transformer block. */
#include <string.h>

#include "model_internal.h"

#define P(off) (m->params + (off))
#define G(off) (m->grads + (off))

/* The factor dropout applies to a kept value, 1 without dropout. */
static float dropout_scale(const struct dropout_spec *d)
{
    return d->p > 0.0f ? 1.0f / (1.0f - d->p) : 1.0f;
}

void project_forward(struct model *m, int n, const float *x, const size_t *w, int count,
                            float *y, int ldy)
{
    const struct backend *be = m->backend;
    int D = m->config.d_model, HK = m->config.num_heads * m->config.d_kv;
    size_t size = (size_t)HK * D;
    int adjacent = 1;
    for (int i = 1; i < count; i++)
        adjacent = adjacent && w[i] == w[0] + i * size;
    if (adjacent) {
        be->gemm(0, 1, n, count * HK, D, 1.0f, x, D, P(w[0]), D, 0.0f, y, ldy);
        return;
    }
    for (int i = 0; i < count; i++)
        be->gemm(0, 1, n, HK, D, 1.0f, x, D, P(w[i]), D, 0.0f, y + i * HK, ldy);
}

/* Backward of project_forward: the weight gradients accumulate, and dx gets
 * (beta = 0) or adds (beta = 1) the input gradient dy times the weights. */
static void project_backward(struct model *m, int n, const float *x, const size_t *w,
                             int count, const float *dy, int ldy, float *dx, float beta)
{
    const struct backend *be = m->backend;
    int D = m->config.d_model, HK = m->config.num_heads * m->config.d_kv;
    size_t size = (size_t)HK * D;
    int adjacent = 1;
    for (int i = 1; i < count; i++)
        adjacent = adjacent && w[i] == w[0] + i * size;
    if (adjacent) {
        be->gemm(1, 0, count * HK, D, n, 1.0f, dy, ldy, x, D, 1.0f, G(w[0]), D);
        be->gemm(0, 0, n, D, count * HK, 1.0f, dy, ldy, P(w[0]), D, beta, dx, D);
        return;
    }
    for (int i = 0; i < count; i++) {
        be->gemm(1, 0, HK, D, n, 1.0f, dy + i * HK, ldy, x, D, 1.0f, G(w[i]), D);
        be->gemm(0, 0, n, D, HK, 1.0f, dy + i * HK, ldy, P(w[i]), D, i == 0 ? beta : 1.0f,
                 dx, D);
    }
}

void attention_layer_forward(struct model *m, const struct attention_offsets *p,
                             struct attention_cache *c, const float *x, int B, int Tq, int Tk,
                             const float *kv_source, const float *bias,
                             const int32_t *key_mask, int causal)
{
    const struct backend *be = m->backend;
    const struct model_config *cfg = &m->config;
    int D = cfg->d_model, HK = cfg->num_heads * cfg->d_kv;
    int nq = B * Tq, nk = B * Tk;
    float *out = m->ws->tmp;

    /* normalize, keeping the input for the norm's backward */
    c->x_in = x;
    be->rmsnorm_forward(x, P(p->norm), nq, D, cfg->layer_norm_epsilon, c->normed, c->rinv);

    /* projections: q, k, v side by side in one buffer for self-attention;
     * q alone and k, v side by side for cross-attention */
    size_t qkv[3] = { p->q, p->k, p->v };
    if (kv_source == NULL) {
        project_forward(m, nq, c->normed, qkv, 3, c->q, c->ldq);
    } else {
        project_forward(m, nq, c->normed, qkv, 1, c->q, c->ldq);
        project_forward(m, nk, kv_source, qkv + 1, 2, c->k, c->ldkv);
    }

    /* attention */
    struct attention_shape s = { B, Tq, Tk, cfg->num_heads, cfg->d_kv, c->ldq, c->ldkv,
                                 c->ldkv, HK, causal };
    c->drop_probs = model_dropout_spec(m, (size_t)B * cfg->num_heads * Tq * Tk);
    be->attention_forward(&s, c->q, c->k, c->v, bias, key_mask, c->probs, c->dropped, c->ctx,
                          &c->drop_probs);

    /* output projection, dropout and residual */
    be->gemm(0, 1, nq, D, HK, 1.0f, c->ctx, HK, P(p->o), HK, 0.0f, out, D);
    c->drop_out = model_dropout_spec(m, (size_t)nq * D);
    be->dropout_add(c->x_out, x, out, (size_t)nq * D, &c->drop_out);
}

void attention_layer_backward(struct model *m, const struct attention_offsets *p,
                              struct attention_cache *c, float *dx, int B, int Tq, int Tk,
                              const float *kv_source, float *dkv_source, float *dbias)
{
    const struct backend *be = m->backend;
    const struct model_config *cfg = &m->config;
    struct workspace *ws = m->ws;
    int D = cfg->d_model, HK = cfg->num_heads * cfg->d_kv;
    int nq = B * Tq, nk = B * Tk;
    float *dout = ws->dout, *dnormed = ws->dnormed;

    /* through the residual's dropout and the output projection */
    be->dropout_copy(dout, dx, (size_t)nq * D, &c->drop_out);
    be->gemm(0, 0, nq, HK, D, 1.0f, dout, D, P(p->o), HK, 0.0f, ws->dctx, HK);
    be->gemm(1, 0, D, HK, nq, 1.0f, dout, D, c->ctx, HK, 1.0f, G(p->o), HK);

    /* attention; the gradients take the layout of q, k and v */
    float *dq = ws->dq;
    float *dk = kv_source == NULL ? ws->dq + HK : ws->dkv;
    struct attention_shape s = { B, Tq, Tk, cfg->num_heads, cfg->d_kv, c->ldq, c->ldkv,
                                 c->ldkv, HK, 0 };
    be->attention_backward(&s, c->q, c->k, c->v, c->probs, c->dropped, ws->dctx, dq, dk,
                           dk + HK, dbias, ws->attn_scratch, &c->drop_probs);

    /* projections: weight gradients, and the gradient of their inputs */
    size_t qkv[3] = { p->q, p->k, p->v };
    if (kv_source == NULL) {
        project_backward(m, nq, c->normed, qkv, 3, dq, c->ldq, dnormed, 0.0f);
    } else {
        project_backward(m, nq, c->normed, qkv, 1, dq, c->ldq, dnormed, 0.0f);
        project_backward(m, nk, kv_source, qkv + 1, 2, dk, c->ldkv, dkv_source, 1.0f);
    }

    /* norm */
    be->rmsnorm_backward(dnormed, c->x_in, P(p->norm), c->rinv, nq, D, dx, G(p->norm));
}

static void dense_forward(struct model *m, const struct block_offsets *p, struct ff_cache *c,
                          int n, float *out)
{
    const struct backend *be = m->backend;
    int D = m->config.d_model, F = m->config.d_ff;
    be->gemm(0, 1, n, F, D, 1.0f, c->normed, D, P(p->wi), D, 0.0f, c->hidden, F);
    c->drop_hidden = model_dropout_spec(m, (size_t)n * F);
    be->relu_forward(c->hidden, (size_t)n * F, &c->drop_hidden);
    be->gemm(0, 1, n, D, F, 1.0f, c->hidden, F, P(p->wo), F, 0.0f, out, D);
}

static void dense_backward(struct model *m, const struct block_offsets *p, struct ff_cache *c,
                           int n, const float *dout, float *dnormed)
{
    const struct backend *be = m->backend;
    int D = m->config.d_model, F = m->config.d_ff;
    float *dh = m->ws->dhidden;
    const float *h = c->hidden;
    be->gemm(0, 0, n, F, D, 1.0f, dout, D, P(p->wo), F, 0.0f, dh, F);
    be->gemm(1, 0, D, F, n, 1.0f, dout, D, h, F, 1.0f, G(p->wo), F);
    be->relu_backward(h, dh, (size_t)n * F, dropout_scale(&c->drop_hidden));
    be->gemm(0, 0, n, D, F, 1.0f, dh, F, P(p->wi), D, 0.0f, dnormed, D);
    be->gemm(1, 0, F, D, n, 1.0f, dh, F, c->normed, D, 1.0f, G(p->wi), D);
}

static void moe_forward(struct model *m, const struct block_offsets *p, struct ff_cache *c,
                        int B, int T, float *out)
{
    const struct backend *be = m->backend;
    const struct model_config *cfg = &m->config;
    int D = cfg->d_model, F = cfg->d_ff, E = cfg->num_experts, n = B * T;
    int parity = cfg->routing == ROUTING_PARITY;

    /* Jitter. The reference multiplies the normalized hidden states in place,
     * so its experts see the noise too. The clean mode jitters a copy that
     * only the router reads. */
    const float *router_in = c->normed;
    c->jittered = m->training && cfg->router_jitter_noise > 0.0f;
    if (c->jittered) {
        c->jitter_offset = rng_reserve(&m->rng, (size_t)n * D);
        float *target = c->normed;
        if (!parity) {
            be->copy(c->router_in, c->normed, FLOATS((size_t)n * D));
            target = c->router_in;
            router_in = c->router_in;
        }
        be->jitter(target, (size_t)n * D, cfg->router_jitter_noise, m->rng.seed,
                   c->jitter_offset, 0);
    }

    /* router logits in float32, top-1 with capacity, dispatch */
    be->gemm(0, 1, n, E, D, 1.0f, router_in, D, P(p->router), D, 0.0f, c->logits, E);
    struct route_shape rs = { B, T, E, cfg->expert_capacity };
    be->route_top1(&rs, c->logits, parity ? 0 : -1, c->probs, c->expert, c->kept, c->assigned,
                   c->pmax, c->perm, c->slot_of, c->offsets, c->kept_counts,
                   c->dropped_counts);
    int routed = c->offsets[E];

    /* experts: one grouped GEMM per projection */
    be->gather_rows(c->normed, c->perm, routed, D, c->expert_in);
    be->grouped_gemm_nt(E, c->offsets, F, D, c->expert_in, P(p->expert_wi), p->expert_stride,
                        c->expert_hidden);
    c->drop_hidden = model_dropout_spec(m, (size_t)n * F);
    be->relu_forward(c->expert_hidden, (size_t)routed * F, &c->drop_hidden);
    be->grouped_gemm_nt(E, c->offsets, D, F, c->expert_hidden, P(p->expert_wo),
                        p->expert_stride, c->expert_out);

    /* scale by the router probability; skipped tokens per the routing mode */
    be->moe_combine(n, D, c->expert_out, c->slot_of, c->pmax, c->normed, parity, out);
}

static void moe_backward(struct model *m, const struct block_offsets *p, struct ff_cache *c,
                         int B, int T, const float *dout, float *dnormed)
{
    const struct backend *be = m->backend;
    const struct model_config *cfg = &m->config;
    struct workspace *ws = m->ws;
    int D = cfg->d_model, F = cfg->d_ff, E = cfg->num_experts, n = B * T;
    int parity = cfg->routing == ROUTING_PARITY;
    int routed = c->offsets[E];
    for (int e = 0; e < E; e++)
        if (c->offsets[e + 1] > c->offsets[e]) {
            m->grad_touched[p->expert_wi_tensor + e] = 1;
            m->grad_touched[p->expert_wo_tensor + e] = 1;
        }

    /* combine: gradients of expert outputs, skipped tokens and pmax */
    be->zero(dnormed, FLOATS((size_t)n * D));
    be->moe_combine_backward(n, D, dout, c->expert_out, c->slot_of, c->pmax, c->normed, parity,
                             ws->dexpert_out, dnormed, ws->dpmax);
    be->router_pmax_backward(n, E, c->probs, c->expert, ws->dpmax, c->dlogits);

    /* experts */
    const float *h = c->expert_hidden;
    be->grouped_gemm_nn(E, c->offsets, F, D, ws->dexpert_out, P(p->expert_wo),
                        p->expert_stride, ws->dhidden);
    be->grouped_gemm_tn(E, c->offsets, D, F, ws->dexpert_out, h, G(p->expert_wo),
                        p->expert_stride);
    be->relu_backward(h, ws->dhidden, (size_t)routed * F, dropout_scale(&c->drop_hidden));
    be->grouped_gemm_nn(E, c->offsets, D, F, ws->dhidden, P(p->expert_wi), p->expert_stride,
                        ws->dexpert_in);
    be->grouped_gemm_tn(E, c->offsets, F, D, ws->dhidden, c->expert_in, G(p->expert_wi),
                        p->expert_stride);
    be->scatter_add_rows(ws->dexpert_in, c->perm, routed, D, dnormed);

    /* router */
    const float *router_in = c->router_in != NULL ? c->router_in : c->normed;
    be->gemm(1, 0, E, D, n, 1.0f, c->dlogits, E, router_in, D, 1.0f, G(p->router), D);
    be->gemm(0, 0, n, D, E, 1.0f, c->dlogits, E, P(p->router), D, 0.0f, ws->drouter_in, D);

    /* jitter: d(x u)/dx = u */
    if (c->jittered && !parity)
        be->jitter(ws->drouter_in, (size_t)n * D, cfg->router_jitter_noise, m->rng.seed,
                   c->jitter_offset, 0);
    be->add(dnormed, ws->drouter_in, (size_t)n * D);
    if (c->jittered && parity)
        be->jitter(dnormed, (size_t)n * D, cfg->router_jitter_noise, m->rng.seed,
                   c->jitter_offset, 0);
}

void ff_layer_forward(struct model *m, const struct block_offsets *p, struct ff_cache *c,
                      const float *x, int B, int T)
{
    const struct backend *be = m->backend;
    int D = m->config.d_model, n = B * T;
    float *out = m->ws->tmp;

    c->x_in = x;
    be->rmsnorm_forward(x, P(p->ff_norm), n, D, m->config.layer_norm_epsilon, c->normed,
                        c->rinv);
    if (p->moe)
        moe_forward(m, p, c, B, T, out);
    else
        dense_forward(m, p, c, n, out);
    c->drop_out = model_dropout_spec(m, (size_t)n * D);
    be->dropout_add(c->x_out, x, out, (size_t)n * D, &c->drop_out);
}

void ff_layer_backward(struct model *m, const struct block_offsets *p, struct ff_cache *c,
                       float *dx, int B, int T)
{
    const struct backend *be = m->backend;
    struct workspace *ws = m->ws;
    int D = m->config.d_model, n = B * T;

    be->dropout_copy(ws->dout, dx, (size_t)n * D, &c->drop_out);
    if (p->moe)
        moe_backward(m, p, c, B, T, ws->dout, ws->dnormed);
    else
        dense_backward(m, p, c, n, ws->dout, ws->dnormed);
    be->rmsnorm_backward(ws->dnormed, c->x_in, P(p->ff_norm), c->rinv, n, D, dx,
                         G(p->ff_norm));
}
