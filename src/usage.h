/* Expert usage: per MoE layer and expert, the tokens the router sent there
 * (top-1, after the capacity cut), the tokens it dropped for capacity, and
 * the summed router probability (soft usage), with the normalized entropy
 * that CAEM allocates experts by.
 *
 * A usage table has one row per MoE layer, the encoder's layers first in
 * block order, then the decoder's. Dimension names as in config.h: E experts,
 * L MoE layers of both stacks. Padding is not counted unless count_padding is
 * set: an encoder position is padding where the attention mask is 0, and a
 * decoder position where its label is LABEL_IGNORE. */
#ifndef CAEM_USAGE_H
#define CAEM_USAGE_H

#include <stdint.h>

#include "config.h"
#include "error.h"
#include "model.h"

/* Input of the decoder while its usage was counted. */
enum usage_decoder_source {
    USAGE_DECODER_TEACHER_FORCED, /* the gold targets */
    USAGE_DECODER_GENERATED,      /* its own outputs during generation */
};

struct usage_table {
    int experts;        /* E */
    int layers[2];      /* MoE layers of the encoder [0] and decoder [1] */
    int *blocks;        /* [L] block index of each row in its stack */
    int64_t *kept;      /* [L, E] tokens routed to the expert and processed by it */
    int64_t *dropped;   /* [L, E] tokens that chose the expert but exceeded its capacity */
    double *prob_sum;   /* [L, E] sum over counted tokens of the router probability */
    int64_t *tokens;    /* [L] tokens counted */
    int count_padding;  /* 1: padding positions are counted too */
    enum usage_decoder_source decoder_source;
};

/* Normalized entropy of a usage histogram: -sum p log p / log(E) with
 * p = counts / sum(counts) and 0 log 0 = 0, in [0, 1]. Returns 0 for E = 1
 * and for an empty histogram. */
double usage_normalized_entropy(const int64_t *counts, int experts);

/* Sets up an empty table with a row per MoE layer of cfg. */
int usage_table_init(struct usage_table *t, const struct model_config *cfg,
                     struct caem_error *err);

/* Sets up an empty table from the shape of another: same experts and layers. */
int usage_table_init_like(struct usage_table *t, const struct usage_table *shape,
                          struct caem_error *err);

/* Frees the arrays. Safe on a zeroed struct. */
void usage_table_free(struct usage_table *t);

/* Zeroes every count, keeping the shape and the flags. */
void usage_table_clear(struct usage_table *t);

/* Number of rows, L. */
int usage_table_rows(const struct usage_table *t);

/* Row of the moe_index-th MoE layer (0-based) of the encoder (decoder = 0)
 * or decoder, or -1 when there is no such layer. */
int usage_table_row(const struct usage_table *t, int decoder, int moe_index);

/* Sets up dst as a copy of src: shape, flags and counts. On failure dst is
 * left empty. */
int usage_table_clone(struct usage_table *dst, const struct usage_table *src,
                      struct caem_error *err);

/* Copies the counts of src into dst, which must have the same shape. */
int usage_table_copy(struct usage_table *dst, const struct usage_table *src,
                     struct caem_error *err);

/* Adds the counts of src to dst, which must have the same shape. */
int usage_table_add(struct usage_table *dst, const struct usage_table *src,
                    struct caem_error *err);

/* Normalized entropy of row `row`'s kept counts. */
double usage_table_entropy(const struct usage_table *t, int row);

/* Mean of the normalized entropies of a stack's MoE layers; 0 without any. */
double usage_table_mean_entropy(const struct usage_table *t, int decoder);

/* Mean router probability of expert e in row `row` over the counted tokens;
 * 0 before any token was counted. */
double usage_table_soft(const struct usage_table *t, int row, int expert);

/* Adds the routing of one MoE layer to a row. mask is host [tokens], and a
 * token counts where it is not 0; NULL counts every token. */
void usage_table_accumulate(struct usage_table *t, const struct backend *backend, int row,
                            const struct moe_routing *routing, const int32_t *mask);

/* Checks that the table has the MoE layers and experts of cfg. */
int usage_table_check_model(const struct usage_table *t, const struct model_config *cfg,
                            struct caem_error *err);

/* Adds the routing of every MoE layer of the model's last forward, which ran
 * on batch b: the encoder's tokens where b's attention mask is 1, the
 * decoder's where b's label is not LABEL_IGNORE (all of them when the batch
 * has no labels), or every position when t->count_padding is set. */
int usage_table_collect(struct usage_table *t, const struct model *m, const struct batch *b,
                        struct caem_error *err);

#endif
