/* Switch Transformer forward and backward over the backend table. */
#include "model.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "model_internal.h"
#include "position.h"

static int ws_track(void ***list, int *count, int *capacity, void *p)
{
    if (*count == *capacity) {
        int cap = *capacity ? *capacity * 2 : 256;
        void **grown = realloc(*list, sizeof *grown * (size_t)cap);
        if (grown == NULL)
            return -1;
        *list = grown;
        *capacity = cap;
    }
    (*list)[(*count)++] = p;
    return 0;
}

/* Backend memory that lives as long as the workspace. */
static void *ws_alloc(struct workspace *ws, const struct backend *be, size_t bytes)
{
    if (ws->failed)
        return NULL;
    void *p = be->alloc(bytes);
    if (p == NULL || ws_track(&ws->device_allocs, &ws->device_count, &ws->device_capacity,
                              p) != 0) {
        if (p != NULL)
            be->free(p);
        ws->failed = 1;
        return NULL;
    }
    return p;
}

/* Host memory that lives as long as the workspace. */
static void *ws_host(struct workspace *ws, size_t bytes)
{
    if (ws->failed)
        return NULL;
    void *p = calloc(1, bytes > 0 ? bytes : 1);
    if (p == NULL ||
        ws_track(&ws->host_allocs, &ws->host_count, &ws->host_capacity, p) != 0) {
        free(p);
        ws->failed = 1;
        return NULL;
    }
    return p;
}

static void workspace_free(struct workspace *ws, const struct backend *be)
{
    if (ws == NULL)
        return;
    for (int i = 0; i < ws->device_count; i++)
        be->free(ws->device_allocs[i]);
    for (int i = 0; i < ws->host_count; i++)
        free(ws->host_allocs[i]);
    free(ws->device_allocs);
    free(ws->host_allocs);
    free(ws->enc.blocks);
    free(ws->dec.blocks);
    free(ws);
}

static void alloc_attention(struct workspace *ws, const struct backend *be,
                            struct attention_cache *c, const struct model_config *cfg, int B,
                            int Tq, int Tk, int cross, int dropout)
{
    int D = cfg->d_model, HK = cfg->num_heads * cfg->d_kv;
    size_t nq = (size_t)B * Tq, nk = (size_t)B * Tk;
    size_t plane = (size_t)B * cfg->num_heads * Tq * Tk;
    c->x_out = ws_alloc(ws, be, FLOATS(nq * D));
    c->rinv = ws_alloc(ws, be, FLOATS(nq));
    c->normed = ws_alloc(ws, be, FLOATS(nq * D));
    if (!cross) {
        c->q = ws_alloc(ws, be, FLOATS(nq * 3 * HK));
        c->k = c->q != NULL ? c->q + HK : NULL;
        c->v = c->q != NULL ? c->q + 2 * HK : NULL;
        c->ldq = c->ldkv = 3 * HK;
    } else {
        c->q = ws_alloc(ws, be, FLOATS(nq * HK));
        c->k = ws_alloc(ws, be, FLOATS(nk * 2 * HK));
        c->v = c->k != NULL ? c->k + HK : NULL;
        c->ldq = HK;
        c->ldkv = 2 * HK;
    }
    c->probs = ws_alloc(ws, be, FLOATS(plane));
    c->dropped = dropout ? ws_alloc(ws, be, FLOATS(plane)) : NULL;
    c->ctx = ws_alloc(ws, be, FLOATS(nq * HK));
}

static void alloc_ff(struct workspace *ws, const struct backend *be, struct ff_cache *c,
                     const struct model_config *cfg, int moe, int B, int T, int training)
{
    int D = cfg->d_model, F = cfg->d_ff, E = cfg->num_experts;
    size_t n = (size_t)B * T;
    c->x_out = ws_alloc(ws, be, FLOATS(n * D));
    c->rinv = ws_alloc(ws, be, FLOATS(n));
    c->normed = ws_alloc(ws, be, FLOATS(n * D));
    if (!moe) {
        c->hidden = ws_alloc(ws, be, FLOATS(n * F));
        return;
    }
    int clean_jitter = training && cfg->routing == ROUTING_CLEAN && cfg->router_jitter_noise > 0;
    c->router_in = clean_jitter ? ws_alloc(ws, be, FLOATS(n * D)) : NULL;
    c->logits = ws_alloc(ws, be, FLOATS(n * E));
    c->probs = ws_alloc(ws, be, FLOATS(n * E));
    c->pmax = ws_alloc(ws, be, FLOATS(n));
    c->dlogits = ws_alloc(ws, be, FLOATS(n * E));
    c->expert = ws_alloc(ws, be, INTS(n));
    c->kept = ws_alloc(ws, be, INTS(n));
    c->assigned = ws_alloc(ws, be, INTS(n));
    c->perm = ws_alloc(ws, be, INTS(n));
    c->slot_of = ws_alloc(ws, be, INTS(n));
    c->offsets = ws_host(ws, sizeof(int) * (size_t)(E + 1));
    c->kept_counts = ws_host(ws, sizeof(int64_t) * (size_t)E);
    c->dropped_counts = ws_host(ws, sizeof(int64_t) * (size_t)E);
    c->expert_in = ws_alloc(ws, be, FLOATS(n * D));
    c->expert_hidden = ws_alloc(ws, be, FLOATS(n * F));
    c->expert_out = ws_alloc(ws, be, FLOATS(n * D));
}

static int alloc_stack(struct workspace *ws, const struct backend *be, struct stack_cache *s,
                       const struct model_config *cfg, const struct stack_offsets *layout,
                       int decoder, int B, int T, int Te, int training)
{
    int D = cfg->d_model, H = cfg->num_heads;
    int dropout = training && cfg->dropout_rate > 0.0f;
    s->tokens = T;
    s->blocks = calloc((size_t)layout->layers, sizeof *s->blocks);
    if (s->blocks == NULL)
        return -1;
    s->moe_layers = 0;
    for (int i = 0; i < layout->layers; i++) {
        struct block_cache *bc = &s->blocks[i];
        alloc_attention(ws, be, &bc->self, cfg, B, T, T, 0, dropout);
        if (decoder)
            alloc_attention(ws, be, &bc->cross, cfg, B, T, Te, 1, dropout);
        alloc_ff(ws, be, &bc->ff, cfg, layout->blocks[i].moe, B, T, training);
        s->moe_layers += layout->blocks[i].moe;
    }
    s->buckets = ws_host(ws, INTS((size_t)T * T));
    s->bias = ws_alloc(ws, be, FLOATS((size_t)H * T * T));
    s->dbias = ws_alloc(ws, be, FLOATS((size_t)H * T * T));
    s->embedded = ws_alloc(ws, be, FLOATS((size_t)B * T * D));
    s->final_rinv = ws_alloc(ws, be, FLOATS((size_t)B * T));
    s->out = ws_alloc(ws, be, FLOATS((size_t)B * T * D));
    if (s->buckets != NULL)
        position_buckets(s->buckets, T, T, !decoder, cfg->relative_attention_num_buckets,
                         cfg->relative_attention_max_distance);
    return ws->failed ? -1 : 0;
}

static int max3(int a, int b, int c)
{
    int m = a > b ? a : b;
    return m > c ? m : c;
}

/* Allocates the activations for a batch shape, reusing the current workspace
 * when the shape and mode are unchanged. */
static int workspace_prepare(struct model *m, int B, int Te, int Td, struct caem_error *err)
{
    struct workspace *ws = m->ws;
    if (ws != NULL && ws->batch_size == B && ws->encoder_length == Te &&
        ws->decoder_length == Td && ws->training == m->training)
        return 0;
    workspace_free(ws, m->backend);
    m->ws = NULL;
    ws = calloc(1, sizeof *ws);
    if (ws == NULL)
        return caem_fail(err, "out of memory for the activation workspace");
    const struct model_config *c = &m->config;
    const struct backend *be = m->backend;
    int D = c->d_model, F = c->d_ff, V = c->vocab_size, E = c->num_experts;
    int HK = c->num_heads * c->d_kv;
    int Tmax = Te > Td ? Te : Td;
    size_t nmax = (size_t)B * Tmax, ne = (size_t)B * Te, nd = (size_t)B * Td;
    ws->batch_size = B;
    ws->encoder_length = Te;
    ws->decoder_length = Td;
    ws->training = m->training;
    m->ws = ws;

    if (alloc_stack(ws, be, &ws->enc, c, &m->layout.encoder, 0, B, Te, Te, m->training) != 0 ||
        alloc_stack(ws, be, &ws->dec, c, &m->layout.decoder, 1, B, Td, Te, m->training) != 0)
        goto fail;
    ws->input_ids = ws_host(ws, INTS(ne));
    ws->attention_mask = ws_host(ws, INTS(ne));
    ws->decoder_input_ids = ws_host(ws, INTS(nd));
    ws->labels = ws_host(ws, INTS(nd));
    ws->seq = ws_alloc(ws, be, FLOATS(nd * D));
    ws->logits = ws_alloc(ws, be, FLOATS(nd * V));
    ws->dlogits = ws_alloc(ws, be, FLOATS(nd * V));
    ws->balance_counts = ws_host(ws, sizeof(double) * (size_t)B * (E > 0 ? E : 1));
    ws->balance_probs = ws_host(ws, sizeof(double) * (size_t)B * (E > 0 ? E : 1));
    ws->balance_dprob = ws_host(ws, sizeof(double) * (size_t)B * (E > 0 ? E : 1));
    ws->dx = ws_alloc(ws, be, FLOATS(nmax * D));
    ws->denc = ws_alloc(ws, be, FLOATS(ne * D));
    ws->dout = ws_alloc(ws, be, FLOATS(nmax * D));
    ws->dnormed = ws_alloc(ws, be, FLOATS(nmax * D));
    ws->dctx = ws_alloc(ws, be, FLOATS(nmax * HK));
    ws->dq = ws_alloc(ws, be, FLOATS(nmax * 3 * HK));
    ws->dkv = ws_alloc(ws, be, FLOATS(ne * 2 * HK));
    ws->dhidden = ws_alloc(ws, be, FLOATS(nmax * F));
    ws->dexpert_out = ws_alloc(ws, be, FLOATS(nmax * D));
    ws->dexpert_in = ws_alloc(ws, be, FLOATS(nmax * D));
    ws->drouter_in = ws_alloc(ws, be, FLOATS(nmax * D));
    ws->dpmax = ws_alloc(ws, be, FLOATS(nmax));
    ws->attn_scratch = ws_alloc(ws, be, FLOATS((size_t)B * c->num_heads * Tmax * Tmax));
    ws->tmp = ws_alloc(ws, be, FLOATS(nmax * max3(D, F, HK)));
    if (ws->failed)
        goto fail;
    return 0;
fail:
    workspace_free(ws, be);
    m->ws = NULL;
    return caem_fail(err, "out of memory for activations of a batch of %d x (%d + %d) tokens",
                     B, Te, Td);
}

int model_create(struct model **out, const struct model_config *cfg,
                 const struct backend *backend, struct caem_error *err)
{
    *out = NULL;
    if (config_validate(cfg, err) != 0)
        return -1;
    struct model *m = calloc(1, sizeof *m);
    if (m == NULL)
        return caem_fail(err, "out of memory for the model");
    m->config = *cfg;
    m->backend = backend;
    if (param_layout_build(&m->layout, cfg, err) != 0) {
        free(m);
        return -1;
    }
    m->params = backend->alloc(FLOATS(m->layout.total));
    m->grads = backend->alloc(FLOATS(m->layout.total));
    m->grad_touched = calloc((size_t)m->layout.count, 1);
    if (m->params == NULL || m->grads == NULL || m->grad_touched == NULL) {
        size_t total = m->layout.total;
        model_free(m);
        return caem_fail(err, "out of memory for %zu parameters (%.1f MiB, twice for "
                         "gradients)", total, FLOATS(total) / 1048576.0);
    }
    m->rng.seed = 0;
    *out = m;
    return 0;
}

void model_free(struct model *m)
{
    if (m == NULL)
        return;
    workspace_free(m->ws, m->backend);
    if (m->params != NULL)
        m->backend->free(m->params);
    if (m->grads != NULL)
        m->backend->free(m->grads);
    free(m->grad_touched);
    param_layout_free(&m->layout);
    free(m);
}

void model_init_params(struct model *m, uint64_t seed)
{
    float *host = malloc(FLOATS(m->layout.total));
    if (host == NULL)
        return;
    memset(host, 0, FLOATS(m->layout.total));
    for (int i = 0; i < m->layout.count; i++) {
        const struct param_info *p = &m->layout.tensors[i];
        float *dst = host + p->offset;
        /* each value is a function of its index alone, so threads agree */
#pragma omp parallel for schedule(static) if (p->count > 65536)
        for (size_t j = 0; j < p->count; j++)
            dst[j] = p->init == INIT_ONES ? 1.0f
                                          : p->std * rng_normal(seed, p->offset + j);
    }
    m->backend->upload(m->params, host, FLOATS(m->layout.total));
    free(host);
}

void model_set_seed(struct model *m, uint64_t seed)
{
    m->rng.seed = seed;
    m->rng.next = 0;
}

void model_zero_grad(struct model *m)
{
    m->backend->zero(m->grads, FLOATS(m->layout.total));
    memset(m->grad_touched, 0, (size_t)m->layout.count);
}

const float *model_logits(const struct model *m)
{
    return m->ws != NULL ? m->ws->logits : NULL;
}

struct dropout_spec model_dropout_spec(struct model *m, size_t count)
{
    struct dropout_spec d = { 0.0f, m->rng.seed, 0 };
    if (m->training && m->config.dropout_rate > 0.0f) {
        d.p = m->config.dropout_rate;
        d.offset = rng_reserve(&m->rng, count);
    }
    return d;
}


static int validate_batch(const struct model *m, const struct batch *b, struct caem_error *err)
{
    const struct model_config *c = &m->config;
    if (b->batch_size <= 0 || b->encoder_length <= 0 || b->decoder_length <= 0)
        return caem_fail(err, "invalid batch shape %d x (%d encoder + %d decoder tokens), "
                         "expected positive sizes", b->batch_size, b->encoder_length,
                         b->decoder_length);
    if (b->input_ids == NULL || b->decoder_input_ids == NULL)
        return caem_fail(err, "batch is missing %s",
                         b->input_ids == NULL ? "input_ids" : "decoder_input_ids");
    for (int s = 0; s < b->batch_size; s++) {
        for (int t = 0; t < b->encoder_length; t++) {
            int id = b->input_ids[s * b->encoder_length + t];
            if (id < 0 || id >= c->vocab_size)
                return caem_fail(err, "input_ids[%d][%d] = %d is outside the vocabulary "
                                 "[0, %d)", s, t, id, c->vocab_size);
        }
        for (int t = 0; t < b->decoder_length; t++) {
            int id = b->decoder_input_ids[s * b->decoder_length + t];
            if (id < 0 || id >= c->vocab_size)
                return caem_fail(err, "decoder_input_ids[%d][%d] = %d is outside the "
                                 "vocabulary [0, %d)", s, t, id, c->vocab_size);
            if (b->labels == NULL)
                continue;
            int label = b->labels[s * b->decoder_length + t];
            if (label != LABEL_IGNORE && (label < 0 || label >= c->vocab_size))
                return caem_fail(err, "labels[%d][%d] = %d is outside the vocabulary "
                                 "[0, %d) and is not %d (ignored)", s, t, label,
                                 c->vocab_size, LABEL_IGNORE);
        }
    }
    return 0;
}

/* Embedding, blocks, final norm of one stack; leaves the output in s->out. */
static void stack_forward(struct model *m, struct stack_cache *s,
                          const struct stack_offsets *layout, int decoder, const int32_t *ids,
                          const int32_t *key_mask, const float *encoder_out,
                          const int32_t *encoder_mask)
{
    const struct backend *be = m->backend;
    const struct model_config *c = &m->config;
    struct workspace *ws = m->ws;
    int B = ws->batch_size, T = s->tokens, D = c->d_model, n = B * T;
    const float *x = s->embedded;

    be->embedding_forward(m->params + m->layout.embedding, ids, n, D, s->embedded);
    s->drop_embed = model_dropout_spec(m, (size_t)n * D);
    be->dropout(s->embedded, (size_t)n * D, &s->drop_embed);

    /* The relative position bias of block 0 serves every block. */
    be->position_bias_forward(m->params + layout->relative_bias, s->buckets, c->num_heads, T,
                              T, s->bias);

    /* each sublayer writes the residual stream into its own buffer, which
     * the next sublayer reads and the backward pass reads again */
    for (int i = 0; i < layout->layers; i++) {
        const struct block_offsets *p = &layout->blocks[i];
        struct block_cache *bc = &s->blocks[i];
        attention_layer_forward(m, &p->self, &bc->self, x, B, T, T, NULL, s->bias, key_mask,
                                decoder);
        x = bc->self.x_out;
        if (decoder) {
            attention_layer_forward(m, &p->cross, &bc->cross, x, B, T, ws->encoder_length,
                                    encoder_out, NULL, encoder_mask, 0);
            x = bc->cross.x_out;
        }
        ff_layer_forward(m, p, &bc->ff, x, B, T);
        x = bc->ff.x_out;
    }

    s->final_in = x;
    be->rmsnorm_forward(x, m->params + layout->final_norm, n, D, c->layer_norm_epsilon, s->out,
                        s->final_rinv);
    s->drop_final = model_dropout_spec(m, (size_t)n * D);
    be->dropout(s->out, (size_t)n * D, &s->drop_final);
}

/* Router z-loss and load-balancing loss of one stack, pooled over its MoE
 * layers as the reference pools them (parity) or per layer (clean). Sets
 * each MoE layer's dlogits to the gradient of the scaled terms of the total. */
static void stack_router_losses(struct model *m, struct stack_cache *s,
                                const struct stack_offsets *layout, double *z_loss,
                                double *balance_loss)
{
    const struct backend *be = m->backend;
    const struct model_config *c = &m->config;
    struct workspace *ws = m->ws;
    int B = ws->batch_size, T = s->tokens, E = c->num_experts, n = B * T;
    int L = s->moe_layers;
    *z_loss = 0.0;
    *balance_loss = 0.0;
    if (L == 0)
        return;

    /* z-loss: mean over the B x (L T) tokens of logsumexp^2 */
    double z_scale = 1.0 / ((double)B * L * T);
    for (int i = 0; i < layout->layers; i++) {
        if (!layout->blocks[i].moe)
            continue;
        struct ff_cache *f = &s->blocks[i].ff;
        be->zero(f->dlogits, FLOATS((size_t)n * E));
        *z_loss += be->router_z_loss(n, E, f->logits, c->router_z_loss_coef * z_scale,
                                     f->dlogits) * z_scale;
    }

    /* Load balancing: E^2 times the mean over (sequence, expert) of the
     * fraction of tokens assigned times the mean router probability, the
     * fractions taken over the pooled tokens (parity) or each layer (clean). */
    int pooled = c->routing == ROUTING_PARITY;
    size_t be_count = (size_t)B * E;
    double weight = (double)E * E / (double)be_count;
    if (pooled) {
        memset(ws->balance_counts, 0, sizeof(double) * be_count);
        memset(ws->balance_probs, 0, sizeof(double) * be_count);
        for (int i = 0; i < layout->layers; i++)
            if (layout->blocks[i].moe)
                be->balance_accumulate(B, T, E, s->blocks[i].ff.probs,
                                       s->blocks[i].ff.assigned, ws->balance_counts,
                                       ws->balance_probs);
    }
    for (int i = 0; i < layout->layers; i++) {
        if (!layout->blocks[i].moe)
            continue;
        struct ff_cache *f = &s->blocks[i].ff;
        double tokens = pooled ? (double)L * T : (double)T;
        if (!pooled) {
            memset(ws->balance_counts, 0, sizeof(double) * be_count);
            memset(ws->balance_probs, 0, sizeof(double) * be_count);
            be->balance_accumulate(B, T, E, f->probs, f->assigned, ws->balance_counts,
                                   ws->balance_probs);
        }
        double sum = 0.0;
        for (size_t j = 0; j < be_count; j++) {
            double fraction = ws->balance_counts[j] / tokens;
            sum += fraction * (ws->balance_probs[j] / tokens);
            ws->balance_dprob[j] = c->router_aux_loss_coef * weight * fraction / tokens;
        }
        be->balance_backward(B, T, E, f->probs, ws->balance_dprob, f->dlogits);
        /* Pooled statistics are the same for every layer, so the loss counts
         * once. Per-layer losses add up. */
        if (pooled)
            *balance_loss = weight * sum;
        else
            *balance_loss += weight * sum;
    }
}

int model_forward(struct model *m, const struct batch *b, struct model_losses *losses,
                  struct caem_error *err)
{
    const struct backend *be = m->backend;
    const struct model_config *c = &m->config;
    memset(losses, 0, sizeof *losses);
    if (validate_batch(m, b, err) != 0)
        return -1;
    if (workspace_prepare(m, b->batch_size, b->encoder_length, b->decoder_length, err) != 0)
        return -1;
    struct workspace *ws = m->ws;
    int B = b->batch_size, Te = b->encoder_length, Td = b->decoder_length;
    int D = c->d_model, V = c->vocab_size;
    size_t ne = (size_t)B * Te, nd = (size_t)B * Td;

    memcpy(ws->input_ids, b->input_ids, INTS(ne));
    memcpy(ws->decoder_input_ids, b->decoder_input_ids, INTS(nd));
    ws->has_mask = b->attention_mask != NULL;
    if (ws->has_mask)
        memcpy(ws->attention_mask, b->attention_mask, INTS(ne));
    ws->has_labels = b->labels != NULL;
    ws->backward_done = 0;
    if (ws->has_labels)
        memcpy(ws->labels, b->labels, INTS(nd));
    const int32_t *mask = ws->has_mask ? ws->attention_mask : NULL;

    /* encoder and decoder */
    stack_forward(m, &ws->enc, &m->layout.encoder, 0, ws->input_ids, mask, NULL, NULL);
    stack_forward(m, &ws->dec, &m->layout.decoder, 1, ws->decoder_input_ids, NULL,
                  ws->enc.out, mask);

    /* LM head; tied embeddings scale the decoder output by D^-1/2 first */
    const float *seq = ws->dec.out;
    if (c->tie_word_embeddings) {
        be->copy(ws->seq, ws->dec.out, FLOATS(nd * D));
        be->scale(ws->seq, 1.0f / sqrtf((float)D), nd * D);
        seq = ws->seq;
    }
    be->gemm(0, 1, (int)nd, V, D, 1.0f, seq, D, m->params + m->layout.lm_head, D, 0.0f,
             ws->logits, V);
    if (!ws->has_labels)
        return 0;

    /* cross-entropy: mean over label tokens */
    long counted = 0;
    for (size_t i = 0; i < nd; i++)
        counted += ws->labels[i] != LABEL_IGNORE;
    if (counted == 0)
        return caem_fail(err, "every label of the batch is %d (ignored), so the loss is "
                         "undefined", LABEL_IGNORE);
    double ce_sum = be->cross_entropy((int)nd, V, ws->logits, ws->labels, 1.0f / counted,
                                      ws->dlogits);
    losses->cross_entropy = ce_sum / counted;
    losses->label_tokens = counted;

    /* router losses */
    stack_router_losses(m, &ws->enc, &m->layout.encoder, &losses->encoder_z,
                        &losses->encoder_balance);
    stack_router_losses(m, &ws->dec, &m->layout.decoder, &losses->decoder_z,
                        &losses->decoder_balance);
    losses->total = losses->cross_entropy +
                    c->router_z_loss_coef * (losses->encoder_z + losses->decoder_z) +
                    c->router_aux_loss_coef * (losses->encoder_balance + losses->decoder_balance);
    if (!isfinite(losses->total))
        return caem_fail(err, "loss is not finite (cross-entropy %g, router z-loss %g + %g, "
                         "load balancing %g + %g)", losses->cross_entropy, losses->encoder_z,
                         losses->decoder_z, losses->encoder_balance, losses->decoder_balance);
    return 0;
}

int model_encode(struct model *m, const int32_t *input_ids, const int32_t *attention_mask,
                 int B, int Te, int rows_per_input, struct caem_error *err)
{
    int Td = rows_per_input > 0 ? rows_per_input : 1;
    if (workspace_prepare(m, B, Te, Td, err) != 0)
        return -1;
    struct workspace *ws = m->ws;
    size_t ne = (size_t)B * Te;
    memcpy(ws->input_ids, input_ids, INTS(ne));
    ws->has_mask = attention_mask != NULL;
    if (ws->has_mask)
        memcpy(ws->attention_mask, attention_mask, INTS(ne));
    ws->has_labels = 0;
    ws->backward_done = 0;
    stack_forward(m, &ws->enc, &m->layout.encoder, 0, ws->input_ids,
                  ws->has_mask ? ws->attention_mask : NULL, NULL, NULL);
    return 0;
}

void model_release_workspace(struct model *m)
{
    workspace_free(m->ws, m->backend);
    m->ws = NULL;
}

/* Backward through one stack, from the gradient of its output in dx. When
 * dencoder_out is not NULL (decoder), the cross-attention's gradient of the
 * encoder output accumulates there. */
static void stack_backward(struct model *m, struct stack_cache *s,
                           const struct stack_offsets *layout, int decoder, const int32_t *ids,
                           float *dx, const float *encoder_out, float *dencoder_out)
{
    const struct backend *be = m->backend;
    const struct model_config *c = &m->config;
    struct workspace *ws = m->ws;
    int B = ws->batch_size, T = s->tokens, D = c->d_model, n = B * T;
    float *grads = m->grads;

    /* final norm: its output gradient is in dx; the input gradient replaces it */
    be->dropout_copy(ws->dnormed, dx, (size_t)n * D, &s->drop_final);
    be->zero(dx, FLOATS((size_t)n * D));
    be->rmsnorm_backward(ws->dnormed, s->final_in, m->params + layout->final_norm,
                         s->final_rinv, n, D, dx, grads + layout->final_norm);

    be->zero(s->dbias, FLOATS((size_t)c->num_heads * T * T));
    for (int i = layout->layers - 1; i >= 0; i--) {
        const struct block_offsets *p = &layout->blocks[i];
        struct block_cache *bc = &s->blocks[i];
        ff_layer_backward(m, p, &bc->ff, dx, B, T);
        if (decoder)
            attention_layer_backward(m, &p->cross, &bc->cross, dx, B, T, ws->encoder_length,
                                     encoder_out, dencoder_out, NULL);
        attention_layer_backward(m, &p->self, &bc->self, dx, B, T, T, NULL, NULL, s->dbias);
    }
    be->position_bias_backward(s->dbias, s->buckets, c->num_heads, T, T,
                               grads + layout->relative_bias);

    be->dropout(dx, (size_t)n * D, &s->drop_embed);
    be->embedding_backward(dx, ids, n, D, grads + m->layout.embedding);
}

int model_backward(struct model *m, struct caem_error *err)
{
    const struct backend *be = m->backend;
    const struct model_config *c = &m->config;
    struct workspace *ws = m->ws;
    if (ws == NULL || !ws->has_labels)
        return caem_fail(err, "backward needs a forward with labels first");
    if (ws->backward_done)
        return caem_fail(err, "backward already ran for this forward; run the forward again");
    ws->backward_done = 1;
    for (int i = 0; i < m->layout.count; i++)
        if (!m->layout.tensors[i].expert)
            m->grad_touched[i] = 1;
    int B = ws->batch_size, D = c->d_model, V = c->vocab_size;
    size_t nd = (size_t)B * ws->decoder_length, ne = (size_t)B * ws->encoder_length;

    /* LM head: the forward left d(cross-entropy)/d(logits) in dlogits */
    const float *seq = c->tie_word_embeddings ? ws->seq : ws->dec.out;
    be->gemm(1, 0, V, D, (int)nd, 1.0f, ws->dlogits, V, seq, D, 1.0f,
             m->grads + m->layout.lm_head, D);
    be->gemm(0, 0, (int)nd, D, V, 1.0f, ws->dlogits, V, m->params + m->layout.lm_head, D,
             0.0f, ws->dx, D);
    if (c->tie_word_embeddings)
        be->scale(ws->dx, 1.0f / sqrtf((float)D), nd * D);

    /* decoder, then encoder from the gradient the cross-attention left */
    be->zero(ws->denc, FLOATS(ne * D));
    stack_backward(m, &ws->dec, &m->layout.decoder, 1, ws->decoder_input_ids, ws->dx,
                   ws->enc.out, ws->denc);
    stack_backward(m, &ws->enc, &m->layout.encoder, 0, ws->input_ids, ws->denc, NULL, NULL);
    return 0;
}

int model_routing(const struct model *m, int decoder, int layer, struct moe_routing *out,
                  struct caem_error *err)
{
    const struct stack_offsets *layout = decoder ? &m->layout.decoder : &m->layout.encoder;
    const char *stack = decoder ? "decoder" : "encoder";
    if (m->ws == NULL)
        return caem_fail(err, "no forward has run yet, so there is no routing to read");
    if (layer < 0 || layer >= layout->layers)
        return caem_fail(err, "%s has no block %d (it has %d)", stack, layer, layout->layers);
    if (!layout->blocks[layer].moe)
        return caem_fail(err, "%s block %d is dense, not an MoE layer", stack, layer);
    const struct stack_cache *s = decoder ? &m->ws->dec : &m->ws->enc;
    const struct ff_cache *f = &s->blocks[layer].ff;
    out->tokens = m->ws->batch_size * s->tokens;
    out->experts = m->config.num_experts;
    out->logits = f->logits;
    out->probs = f->probs;
    out->expert = f->expert;
    out->kept = f->kept;
    out->kept_counts = f->kept_counts;
    out->dropped_counts = f->dropped_counts;
    return 0;
}

int model_block_output(const struct model *m, int decoder, int layer, const float **out,
                       int *tokens, struct caem_error *err)
{
    const struct stack_offsets *layout = decoder ? &m->layout.decoder : &m->layout.encoder;
    if (m->ws == NULL)
        return caem_fail(err, "no forward has run yet, so there are no hidden states");
    if (layer < 0 || layer >= layout->layers)
        return caem_fail(err, "%s has no block %d (it has %d)", decoder ? "decoder" : "encoder",
                         layer, layout->layers);
    const struct stack_cache *s = decoder ? &m->ws->dec : &m->ws->enc;
    *out = s->blocks[layer].ff.x_out;
    *tokens = m->ws->batch_size * s->tokens;
    return 0;
}

float *model_param(struct model *m, const char *name, size_t *count)
{
    const struct param_info *p = param_find(&m->layout, name);
    if (p == NULL)
        return NULL;
    if (count != NULL)
        *count = p->count;
    return m->params + p->offset;
}

float *model_grad(struct model *m, const char *name, size_t *count)
{
    const struct param_info *p = param_find(&m->layout, name);
    if (p == NULL)
        return NULL;
    if (count != NULL)
        *count = p->count;
    return m->grads + p->offset;
}
