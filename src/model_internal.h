/* Internals shared by the model's source files: the activation workspace
 * and the per-sublayer forward and backward passes. Not part of the API. */
#ifndef CAEM_MODEL_INTERNAL_H
#define CAEM_MODEL_INTERNAL_H

#include "model.h"
#include "usage.h"

/* Saved activations of one attention sublayer. */
struct attention_cache {
    const float *x_in; /* [Nq, D] residual stream entering the sublayer (not owned) */
    float *x_out;      /* [Nq, D] residual stream leaving it */
    float *rinv;    /* [Nq] */
    float *normed;  /* [Nq, D] */
    /* Self-attention keeps q, k and v side by side in one [N, 3 HK] buffer
     * (row stride ldq = ldkv = 3 HK); cross-attention keeps q [Nq, HK]
     * (ldq = HK) and k, v side by side in [Nk, 2 HK] (ldkv = 2 HK). */
    float *q, *k, *v;
    int ldq, ldkv;
    float *probs;   /* [B, H, Tq, Tk] */
    float *dropped; /* same, after dropout; NULL without dropout */
    float *ctx;     /* [Nq, HK] */
    struct dropout_spec drop_probs, drop_out;
};

/* Saved activations of one feed-forward sublayer, dense or MoE. */
struct ff_cache {
    const float *x_in; /* [N, D] (not owned) */
    float *x_out;      /* [N, D] */
    float *rinv;   /* [N] */
    float *normed; /* [N, D]; in parity mode with jitter, the jittered values */
    struct dropout_spec drop_hidden, drop_out;
    /* dense */
    float *hidden; /* [N, F] after ReLU and dropout */
    /* MoE */
    float *router_in; /* [N, D] jittered copy in clean mode; else NULL (normed) */
    uint64_t jitter_offset;
    int jittered;
    float *logits, *probs, *pmax;
    float *dlogits; /* [N, E] gradient of the router losses, set in forward */
    int32_t *expert, *kept, *assigned, *perm, *slot_of;
    int *offsets;                         /* host [E + 1] */
    int64_t *kept_counts, *dropped_counts; /* host [E] */
    float *expert_in;      /* [N, D] rows grouped by expert */
    float *expert_hidden;  /* [N, F] after ReLU and dropout */
    float *expert_out;     /* [N, D] */
};

struct block_cache {
    struct attention_cache self, cross;
    struct ff_cache ff;
};

struct stack_cache {
    int tokens; /* T */
    struct block_cache *blocks;
    int32_t *buckets; /* host [T, T] */
    float *bias;      /* [H, T, T] */
    float *dbias;     /* [H, T, T] */
    float *embedded;       /* [N, D] embeddings after dropout */
    const float *final_in; /* the last block's x_out */
    float *final_rinv;
    float *out; /* [N, D] stack output after the final norm and dropout */
    struct dropout_spec drop_embed, drop_final;
    int moe_layers;
};

struct workspace {
    int batch_size, encoder_length, decoder_length, training;
    /* every allocation, freed together */
    void **device_allocs, **host_allocs;
    int device_count, device_capacity, host_count, host_capacity;
    int failed;

    struct stack_cache enc, dec;
    int32_t *input_ids, *attention_mask, *decoder_input_ids, *labels; /* host copies */
    int has_mask;
    int has_labels;
    int backward_done;
    float *seq;     /* [Nd, D] decoder output scaled for the LM head */
    float *logits;  /* [Nd, V] */
    float *dlogits; /* [Nd, V] */
    double *balance_counts, *balance_probs, *balance_dprob; /* host [B, E] */

    /* backward scratch */
    float *dx;          /* [Nmax, D] */
    float *denc;        /* [Ne, D] gradient of the encoder output */
    float *dout;        /* [Nmax, D] */
    float *dnormed;     /* [Nmax, D] */
    float *dctx;        /* [Nmax, HK] */
    float *dq;          /* [Nmax, 3 HK]: dq, dk, dv of self-attention, or dq of cross */
    float *dkv;         /* [Ne, 2 HK]: dk, dv of cross-attention */
    float *dhidden;     /* [Nmax, F] */
    float *dexpert_out; /* [Nmax, D] */
    float *dexpert_in;  /* [Nmax, D] */
    float *drouter_in;  /* [Nmax, D] */
    float *dpmax;       /* [Nmax] */
    float *attn_scratch;/* [B, H, Tmax, Tmax] */
    float *tmp;         /* [Nmax, max(D, F, HK)] */
};


#define FLOATS(n) ((size_t)(n) * sizeof(float))
#define INTS(n) ((size_t)(n) * sizeof(int32_t))

/* Returns a dropout spec with a fresh range of the model's random stream, or
 * p = 0 when the model is not training or has no dropout. */
struct dropout_spec model_dropout_spec(struct model *m, size_t count);

/* y [n, count * HK] (row stride ldy) = x [n, D] times the `count` weights
 * [HK, D] at offsets w[0..count); one GEMM when the weights are adjacent in
 * the parameter buffer, as q, k and v are unless padding separates them. */
void project_forward(struct model *m, int n, const float *x, const size_t *w, int count,
                     float *y, int ldy);

/* Pre-norm attention sublayer: c->x_out = x + dropout(attention(norm(x))
 * W_o^T); x must stay valid until the backward pass. For self-attention
 * kv_source is NULL and keys come from the normed x; for cross-attention they
 * come from kv_source [B * Tk, D]. */
void attention_layer_forward(struct model *m, const struct attention_offsets *p,
                             struct attention_cache *c, const float *x, int B, int Tq, int Tk,
                             const float *kv_source, const float *bias,
                             const int32_t *key_mask, int causal);

/* Adds the sublayer's input gradient to dx (which contains the output gradient)
 * and its parameter gradients to m->grads; dkv_source accumulates for
 * cross-attention, dbias when not NULL. */
void attention_layer_backward(struct model *m, const struct attention_offsets *p,
                              struct attention_cache *c, float *dx, int B, int Tq, int Tk,
                              const float *kv_source, float *dkv_source, float *dbias);

/* Pre-norm feed-forward sublayer, dense or MoE by p->moe; the output goes to
 * c->x_out as for attention. */
void ff_layer_forward(struct model *m, const struct block_offsets *p, struct ff_cache *c,
                      const float *x, int B, int T);
void ff_layer_backward(struct model *m, const struct block_offsets *p, struct ff_cache *c,
                       float *dx, int B, int T);

/* Runs the encoder alone, in the model's current mode, on B rows of Te
 * tokens (ids already checked against the vocabulary). The output stays in
 * m->ws->enc.out and the routing of its MoE layers in m->ws->enc. The
 * workspace is shaped for a decoder of rows_per_input tokens per row, so
 * that m->ws->tmp, which ff_layer_forward writes its output to, has room for
 * B * rows_per_input rows of a decoding step. */
int model_encode(struct model *m, const int32_t *input_ids, const int32_t *attention_mask,
                 int B, int Te, int rows_per_input, struct caem_error *err);

/* Frees the activation workspace, so that no results of an earlier forward
 * remain: model_logits returns NULL and model_routing and model_backward
 * fail until the next model_forward. */
void model_release_workspace(struct model *m);

/* Decoding state of generation (model_decode.c): the cross-attention keys
 * and values of the encoder output, a key/value cache of the decoder's
 * self-attention, and the buffers of one decoding step. A slot is one
 * decoded sequence (an input row in greedy search, a beam in beam search);
 * S slots of at most P positions each. */
struct decode_state {
    int slots;          /* S */
    int positions;      /* P: decoder tokens a slot can hold, start token included */
    int batch_size;     /* B input rows of the encoder */
    int encoder_length; /* Te */
    int layers;         /* decoder blocks */
    /* Per decoder block, [S, P, 2 HK]: the key then the value of each
     * position of each slot. spare_kv has the same shape and receives a
     * reorder; it is NULL when the state only ever compacts. */
    float **self_kv, **spare_kv;
    float **cross_kv;      /* per decoder block, [B, Te, 2 HK]: key then value */
    int32_t *encoder_row;  /* host [S]: the input row each slot decodes */
    int32_t *row_scratch;  /* host [S] */
    int32_t *encoder_mask; /* host [B, Te] copy of the attention mask, or NULL */
    int32_t *buckets;      /* host [P, P]: causal position buckets */
    float *bias;           /* [H, P]: position bias of the current step */
    float *x;              /* [S, D] residual stream */
    float *normed, *rinv;  /* [S, D], [S] */
    float *q, *ctx, *out;  /* [S, HK], [S, HK], [S, D] */
    float *probs;          /* [S, H, max(P, Te)] attention weights */
    struct ff_cache ff;    /* feed-forward buffers for S rows; x_out is x */
    float *logits;         /* [S, V] */
    float *host_logits;    /* host [S, V] */
    void **allocs;         /* every backend allocation, freed together */
    int alloc_count, alloc_capacity, failed;
};

/* Creates the decoding state for the encoder output that model_encode left
 * in m->ws: computes the cross-attention keys and values of every decoder
 * block and slot i's input row, initially i / (S / B). With reorder set it
 * allocates the spare cache that decode_state_reorder needs for sources in
 * any order. */
int decode_state_create(struct model *m, struct decode_state **out, int slots, int positions,
                        int reorder, struct caem_error *err);
void decode_state_free(struct model *m, struct decode_state *d);

/* Runs the decoder for one token (host tokens[i]) of each of the first n
 * slots at the given position. The cache must hold every earlier position of
 * those slots, and the step adds this one. Returns the host logits [n, V] of
 * the next token, valid until the next call. Adds the routing of every
 * decoder MoE layer to usage unless it is NULL. */
const float *decoder_step(struct model *m, struct decode_state *d, const int32_t *tokens,
                          int n, int position, struct usage_table *usage);

/* Makes slot i a copy of slot source[i] for i < n: its input row and the
 * cache's first `filled` positions. Without a spare cache the sources must
 * satisfy source[i] >= i and increase with i (compaction). */
void decode_state_reorder(struct model *m, struct decode_state *d, const int32_t *source,
                          int n, int filled);

#endif
