/* Incremental decoding for generation: the decoder run one token per
 * sequence at a time against a key/value cache, in eval mode.
 *
 * A step computes what the teacher-forced decoder of model.c computes for the
 * new token's row, through the same sublayers and backend operations. The
 * self-attention reads the keys and values of the earlier positions from the
 * cache instead of recomputing them. The causal mask needs no work, because
 * the cache holds only earlier positions. The MoE layers route the n tokens
 * of a step as n sequences of one token each, so the capacity, counted per
 * sequence, never drops a token. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "model_internal.h"
#include "position.h"

static int decode_track(struct decode_state *d, void *p)
{
    if (d->alloc_count == d->alloc_capacity) {
        int capacity = d->alloc_capacity ? d->alloc_capacity * 2 : 64;
        void **grown = realloc(d->allocs, sizeof *grown * (size_t)capacity);
        if (grown == NULL)
            return -1;
        d->allocs = grown;
        d->alloc_capacity = capacity;
    }
    d->allocs[d->alloc_count++] = p;
    return 0;
}

/* Backend memory that lives as long as the state. */
static void *decode_alloc(struct decode_state *d, const struct backend *be, size_t bytes)
{
    if (d->failed)
        return NULL;
    void *p = be->alloc(bytes > 0 ? bytes : 1);
    if (p == NULL || decode_track(d, p) != 0) {
        if (p != NULL)
            be->free(p);
        d->failed = 1;
        return NULL;
    }
    return p;
}

/* Host memory that lives as long as the state; freed by decode_state_free. */
static void *decode_host(struct decode_state *d, size_t bytes)
{
    if (d->failed)
        return NULL;
    void *p = calloc(1, bytes > 0 ? bytes : 1);
    if (p == NULL)
        d->failed = 1;
    return p;
}

void decode_state_free(struct model *m, struct decode_state *d)
{
    if (d == NULL)
        return;
    for (int i = 0; i < d->alloc_count; i++)
        m->backend->free(d->allocs[i]);
    free(d->allocs);
    free(d->self_kv);
    free(d->spare_kv);
    free(d->cross_kv);
    free(d->encoder_row);
    free(d->row_scratch);
    free(d->encoder_mask);
    free(d->buckets);
    free(d->host_logits);
    free(d->ff.offsets);
    free(d->ff.kept_counts);
    free(d->ff.dropped_counts);
    free(d);
}

/* Feed-forward buffers for S rows of one token, dense and MoE as the decoder
 * has them. The output goes to the residual stream in place. */
static void alloc_step_ff(struct decode_state *d, const struct backend *be,
                          const struct model *m)
{
    const struct model_config *c = &m->config;
    const struct stack_offsets *layout = &m->layout.decoder;
    int D = c->d_model, F = c->d_ff, E = c->num_experts;
    size_t n = (size_t)d->slots;
    int dense = 0, moe = 0;
    for (int i = 0; i < layout->layers; i++) {
        moe |= layout->blocks[i].moe;
        dense |= !layout->blocks[i].moe;
    }
    struct ff_cache *f = &d->ff;
    f->x_out = d->x;
    f->rinv = decode_alloc(d, be, FLOATS(n));
    f->normed = decode_alloc(d, be, FLOATS(n * D));
    if (dense)
        f->hidden = decode_alloc(d, be, FLOATS(n * F));
    if (!moe)
        return;
    f->logits = decode_alloc(d, be, FLOATS(n * E));
    f->probs = decode_alloc(d, be, FLOATS(n * E));
    f->pmax = decode_alloc(d, be, FLOATS(n));
    f->expert = decode_alloc(d, be, INTS(n));
    f->kept = decode_alloc(d, be, INTS(n));
    f->assigned = decode_alloc(d, be, INTS(n));
    f->perm = decode_alloc(d, be, INTS(n));
    f->slot_of = decode_alloc(d, be, INTS(n));
    f->offsets = decode_host(d, sizeof(int) * (size_t)(E + 1));
    f->kept_counts = decode_host(d, sizeof(int64_t) * (size_t)E);
    f->dropped_counts = decode_host(d, sizeof(int64_t) * (size_t)E);
    f->expert_in = decode_alloc(d, be, FLOATS(n * D));
    f->expert_hidden = decode_alloc(d, be, FLOATS(n * F));
    f->expert_out = decode_alloc(d, be, FLOATS(n * D));
}

int decode_state_create(struct model *m, struct decode_state **out, int slots, int positions,
                        int reorder, struct caem_error *err)
{
    *out = NULL;
    const struct backend *be = m->backend;
    const struct model_config *c = &m->config;
    const struct workspace *ws = m->ws;
    int B = ws->batch_size, Te = ws->encoder_length;
    int D = c->d_model, H = c->num_heads, HK = c->num_heads * c->d_kv, V = c->vocab_size;
    int L = m->layout.decoder.layers;
    struct decode_state *d = calloc(1, sizeof *d);
    if (d == NULL)
        return caem_fail(err, "out of memory for the decoding state");
    d->slots = slots;
    d->positions = positions;
    d->batch_size = B;
    d->encoder_length = Te;
    d->layers = L;
    size_t S = (size_t)slots, P = (size_t)positions;
    size_t cache = S * P * 2 * HK;
    size_t keys = P > (size_t)Te ? P : (size_t)Te;

    /* caches: self-attention per slot, cross-attention per input row */
    d->self_kv = decode_host(d, sizeof(float *) * (size_t)L);
    d->spare_kv = reorder ? decode_host(d, sizeof(float *) * (size_t)L) : NULL;
    d->cross_kv = decode_host(d, sizeof(float *) * (size_t)L);
    for (int i = 0; i < L && !d->failed; i++) {
        d->self_kv[i] = decode_alloc(d, be, FLOATS(cache));
        if (reorder)
            d->spare_kv[i] = decode_alloc(d, be, FLOATS(cache));
        d->cross_kv[i] = decode_alloc(d, be, FLOATS((size_t)B * Te * 2 * HK));
    }

    /* step buffers */
    d->encoder_row = decode_host(d, INTS(S));
    d->row_scratch = decode_host(d, INTS(S));
    d->buckets = decode_host(d, INTS(P * P));
    d->bias = decode_alloc(d, be, FLOATS((size_t)H * P));
    d->x = decode_alloc(d, be, FLOATS(S * D));
    d->normed = decode_alloc(d, be, FLOATS(S * D));
    d->rinv = decode_alloc(d, be, FLOATS(S));
    d->q = decode_alloc(d, be, FLOATS(S * HK));
    d->ctx = decode_alloc(d, be, FLOATS(S * HK));
    d->out = decode_alloc(d, be, FLOATS(S * D));
    d->probs = decode_alloc(d, be, FLOATS(S * H * keys));
    d->logits = decode_alloc(d, be, FLOATS(S * V));
    d->host_logits = decode_host(d, FLOATS(S * V));
    if (ws->has_mask) {
        d->encoder_mask = decode_host(d, INTS((size_t)B * Te));
        if (d->encoder_mask != NULL)
            memcpy(d->encoder_mask, ws->attention_mask, INTS((size_t)B * Te));
    }
    alloc_step_ff(d, be, m);
    if (d->failed) {
        decode_state_free(m, d);
        return caem_fail(err, "out of memory for the decoding state of %d sequences of %d "
                         "tokens (key/value cache of %.1f MiB per copy)", slots, positions,
                         FLOATS(cache * (size_t)L) / 1048576.0);
    }

    /* The encoder output's keys and values, once for every step. */
    const struct stack_offsets *layout = &m->layout.decoder;
    for (int i = 0; i < L; i++) {
        size_t kv[2] = { layout->blocks[i].cross.k, layout->blocks[i].cross.v };
        project_forward(m, B * Te, ws->enc.out, kv, 2, d->cross_kv[i], 2 * HK);
    }
    position_buckets(d->buckets, positions, positions, 0, c->relative_attention_num_buckets,
                     c->relative_attention_max_distance);
    for (int s = 0; s < slots; s++)
        d->encoder_row[s] = s / (slots / B);
    *out = d;
    return 0;
}

/* Self-attention sublayer for one new token per slot at `position`. */
static void self_attention_step(struct model *m, struct decode_state *d,
                                const struct attention_offsets *p, int layer, int n,
                                int position)
{
    const struct backend *be = m->backend;
    const struct model_config *c = &m->config;
    int D = c->d_model, HK = c->num_heads * c->d_kv;
    size_t entry_stride = (size_t)d->positions * 2 * HK;
    float *cache = d->self_kv[layer];

    /* the query, and this position's key and value written into the cache */
    be->rmsnorm_forward(d->x, m->params + p->norm, n, D, c->layer_norm_epsilon, d->normed,
                        d->rinv);
    project_forward(m, n, d->normed, &p->q, 1, d->q, HK);
    size_t kv[2] = { p->k, p->v };
    project_forward(m, n, d->normed, kv, 2, cache + (size_t)position * 2 * HK,
                    (int)entry_stride);

    /* attention over positions 0 .. position of the slot's own entry */
    struct decode_attention_shape s = { n, position + 1, c->num_heads, c->d_kv, HK, 2 * HK,
                                        entry_stride, HK };
    be->attention_decode(&s, d->q, cache, cache + HK, NULL, d->bias, NULL, d->probs, d->ctx);

    /* output projection and residual */
    be->gemm(0, 1, n, D, HK, 1.0f, d->ctx, HK, m->params + p->o, HK, 0.0f, d->out, D);
    be->add(d->x, d->out, (size_t)n * D);
}

/* Cross-attention sublayer: each slot attends to its input row's encoder
 * output, with the input's padding masked. */
static void cross_attention_step(struct model *m, struct decode_state *d,
                                 const struct attention_offsets *p, int layer, int n)
{
    const struct backend *be = m->backend;
    const struct model_config *c = &m->config;
    int D = c->d_model, HK = c->num_heads * c->d_kv, Te = d->encoder_length;

    be->rmsnorm_forward(d->x, m->params + p->norm, n, D, c->layer_norm_epsilon, d->normed,
                        d->rinv);
    project_forward(m, n, d->normed, &p->q, 1, d->q, HK);
    struct decode_attention_shape s = { n, Te, c->num_heads, c->d_kv, HK, 2 * HK,
                                        (size_t)Te * 2 * HK, HK };
    be->attention_decode(&s, d->q, d->cross_kv[layer], d->cross_kv[layer] + HK,
                         d->encoder_row, NULL, d->encoder_mask, d->probs, d->ctx);
    be->gemm(0, 1, n, D, HK, 1.0f, d->ctx, HK, m->params + p->o, HK, 0.0f, d->out, D);
    be->add(d->x, d->out, (size_t)n * D);
}

/* Adds the routing of the step's MoE layer `layer` (block index) to usage. */
static void step_usage(struct model *m, struct decode_state *d, struct usage_table *usage,
                       int layer, int n)
{
    int moe_index = 0;
    for (int i = 0; i < layer; i++)
        moe_index += m->layout.decoder.blocks[i].moe;
    struct moe_routing routing = { n, m->config.num_experts, d->ff.logits, d->ff.probs,
                                   d->ff.expert, d->ff.kept, d->ff.kept_counts,
                                   d->ff.dropped_counts };
    usage_table_accumulate(usage, m->backend, usage_table_row(usage, 1, moe_index), &routing,
                           NULL);
}

const float *decoder_step(struct model *m, struct decode_state *d, const int32_t *tokens,
                          int n, int position, struct usage_table *usage)
{
    const struct backend *be = m->backend;
    const struct model_config *c = &m->config;
    const struct stack_offsets *layout = &m->layout.decoder;
    int D = c->d_model, V = c->vocab_size, P = d->positions;

    /* embedding, and the position bias of this query against every cached
     * position, which block 0's table gives every block */
    be->embedding_forward(m->params + m->layout.embedding, tokens, n, D, d->x);
    be->position_bias_forward(m->params + layout->relative_bias,
                              d->buckets + (size_t)position * P, c->num_heads, 1, position + 1,
                              d->bias);

    /* blocks; ff_layer_forward reads x and writes x + FF(x) back to it */
    for (int i = 0; i < layout->layers; i++) {
        const struct block_offsets *p = &layout->blocks[i];
        self_attention_step(m, d, &p->self, i, n, position);
        cross_attention_step(m, d, &p->cross, i, n);
        ff_layer_forward(m, p, &d->ff, d->x, n, 1);
        if (p->moe && usage != NULL)
            step_usage(m, d, usage, i, n);
    }

    /* final norm and LM head; tied embeddings scale by D^-1/2 first */
    be->rmsnorm_forward(d->x, m->params + layout->final_norm, n, D, c->layer_norm_epsilon,
                        d->normed, d->rinv);
    if (c->tie_word_embeddings)
        be->scale(d->normed, 1.0f / sqrtf((float)D), (size_t)n * D);
    be->gemm(0, 1, n, V, D, 1.0f, d->normed, D, m->params + m->layout.lm_head, D, 0.0f,
             d->logits, V);
    be->download(d->host_logits, d->logits, FLOATS((size_t)n * V));
    return d->host_logits;
}

void decode_state_reorder(struct model *m, struct decode_state *d, const int32_t *source,
                          int n, int filled)
{
    const struct backend *be = m->backend;
    int HK = m->config.num_heads * m->config.d_kv;
    size_t stride = (size_t)d->positions * 2 * HK;
    size_t bytes = FLOATS((size_t)filled * 2 * HK);
    int identity = 1;
    for (int i = 0; i < n; i++)
        identity = identity && source[i] == i;
    if (identity)
        return;

    for (int layer = 0; layer < d->layers; layer++) {
        float *from = d->self_kv[layer];
        if (d->spare_kv == NULL) {
            /* compaction: slot i reads a slot at or after it, not yet overwritten */
            for (int i = 0; i < n; i++)
                if (source[i] != i)
                    be->copy(from + i * stride, from + (size_t)source[i] * stride, bytes);
            continue;
        }
        float *to = d->spare_kv[layer];
        for (int i = 0; i < n; i++)
            be->copy(to + i * stride, from + (size_t)source[i] * stride, bytes);
        d->spare_kv[layer] = from;
        d->self_kv[layer] = to;
    }
    for (int i = 0; i < n; i++)
        d->row_scratch[i] = d->encoder_row[source[i]];
    memcpy(d->encoder_row, d->row_scratch, INTS((size_t)n));
}
