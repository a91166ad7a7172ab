#include "usage.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

double usage_normalized_entropy(const int64_t *counts, int experts)
{
    if (experts <= 1)
        return 0.0;
    double total = 0.0;
    for (int e = 0; e < experts; e++)
        total += (double)counts[e];
    if (total <= 0.0)
        return 0.0;
    double entropy = 0.0;
    for (int e = 0; e < experts; e++) {
        if (counts[e] <= 0)
            continue;
        double p = (double)counts[e] / total;
        entropy -= p * log(p);
    }
    return entropy / log((double)experts);
}

static int usage_table_alloc(struct usage_table *t, int experts, int encoder_layers,
                             int decoder_layers, struct caem_error *err)
{
    memset(t, 0, sizeof *t);
    t->experts = experts;
    t->layers[0] = encoder_layers;
    t->layers[1] = decoder_layers;
    size_t rows = (size_t)(encoder_layers + decoder_layers);
    size_t cells = rows * (size_t)(experts > 0 ? experts : 1);
    t->blocks = calloc(rows > 0 ? rows : 1, sizeof *t->blocks);
    t->kept = calloc(cells, sizeof *t->kept);
    t->dropped = calloc(cells, sizeof *t->dropped);
    t->prob_sum = calloc(cells, sizeof *t->prob_sum);
    t->tokens = calloc(rows > 0 ? rows : 1, sizeof *t->tokens);
    if (t->blocks == NULL || t->kept == NULL || t->dropped == NULL || t->prob_sum == NULL ||
        t->tokens == NULL) {
        usage_table_free(t);
        return caem_fail(err, "out of memory for a usage table of %zu layers x %d experts",
                         rows, experts);
    }
    return 0;
}

int usage_table_init(struct usage_table *t, const struct model_config *cfg,
                     struct caem_error *err)
{
    int enc = config_moe_layer_count(cfg, 0), dec = config_moe_layer_count(cfg, 1);
    if (usage_table_alloc(t, cfg->num_experts, enc, dec, err) != 0)
        return -1;
    int row = 0;
    for (int d = 0; d < 2; d++) {
        int layers = d ? cfg->decoder_layers : cfg->encoder_layers;
        for (int i = 0; i < layers; i++)
            if (config_is_moe_layer(cfg, d, i))
                t->blocks[row++] = i;
    }
    return 0;
}

int usage_table_init_like(struct usage_table *t, const struct usage_table *shape,
                          struct caem_error *err)
{
    if (usage_table_alloc(t, shape->experts, shape->layers[0], shape->layers[1], err) != 0)
        return -1;
    memcpy(t->blocks, shape->blocks, sizeof *t->blocks * (size_t)usage_table_rows(shape));
    t->count_padding = shape->count_padding;
    t->decoder_source = shape->decoder_source;
    return 0;
}

void usage_table_free(struct usage_table *t)
{
    free(t->blocks);
    free(t->kept);
    free(t->dropped);
    free(t->prob_sum);
    free(t->tokens);
    memset(t, 0, sizeof *t);
}

int usage_table_rows(const struct usage_table *t)
{
    return t->layers[0] + t->layers[1];
}

void usage_table_clear(struct usage_table *t)
{
    size_t rows = (size_t)usage_table_rows(t), cells = rows * (size_t)t->experts;
    if (t->kept == NULL)
        return;
    memset(t->kept, 0, sizeof *t->kept * cells);
    memset(t->dropped, 0, sizeof *t->dropped * cells);
    memset(t->prob_sum, 0, sizeof *t->prob_sum * cells);
    memset(t->tokens, 0, sizeof *t->tokens * rows);
}

int usage_table_row(const struct usage_table *t, int decoder, int moe_index)
{
    int d = decoder ? 1 : 0;
    if (moe_index < 0 || moe_index >= t->layers[d])
        return -1;
    return d * t->layers[0] + moe_index;
}

static int check_same_shape(const struct usage_table *a, const struct usage_table *b,
                            struct caem_error *err)
{
    if (a->experts != b->experts || a->layers[0] != b->layers[0] ||
        a->layers[1] != b->layers[1])
        return caem_fail(err, "usage tables differ in shape: %d + %d MoE layers x %d experts "
                         "against %d + %d x %d", a->layers[0], a->layers[1], a->experts,
                         b->layers[0], b->layers[1], b->experts);
    return 0;
}

int usage_table_clone(struct usage_table *dst, const struct usage_table *src,
                      struct caem_error *err)
{
    if (usage_table_init_like(dst, src, err) != 0)
        return -1;
    if (usage_table_copy(dst, src, err) != 0) {
        usage_table_free(dst);
        return -1;
    }
    return 0;
}

int usage_table_copy(struct usage_table *dst, const struct usage_table *src,
                     struct caem_error *err)
{
    if (check_same_shape(dst, src, err) != 0)
        return -1;
    size_t rows = (size_t)usage_table_rows(src), cells = rows * (size_t)src->experts;
    memcpy(dst->blocks, src->blocks, sizeof *dst->blocks * rows);
    memcpy(dst->kept, src->kept, sizeof *dst->kept * cells);
    memcpy(dst->dropped, src->dropped, sizeof *dst->dropped * cells);
    memcpy(dst->prob_sum, src->prob_sum, sizeof *dst->prob_sum * cells);
    memcpy(dst->tokens, src->tokens, sizeof *dst->tokens * rows);
    dst->count_padding = src->count_padding;
    dst->decoder_source = src->decoder_source;
    return 0;
}

int usage_table_add(struct usage_table *dst, const struct usage_table *src,
                    struct caem_error *err)
{
    if (check_same_shape(dst, src, err) != 0)
        return -1;
    size_t rows = (size_t)usage_table_rows(src), cells = rows * (size_t)src->experts;
    for (size_t i = 0; i < cells; i++) {
        dst->kept[i] += src->kept[i];
        dst->dropped[i] += src->dropped[i];
        dst->prob_sum[i] += src->prob_sum[i];
    }
    for (size_t i = 0; i < rows; i++)
        dst->tokens[i] += src->tokens[i];
    return 0;
}

double usage_table_entropy(const struct usage_table *t, int row)
{
    return usage_normalized_entropy(t->kept + (size_t)row * t->experts, t->experts);
}

double usage_table_mean_entropy(const struct usage_table *t, int decoder)
{
    int d = decoder ? 1 : 0;
    if (t->layers[d] == 0)
        return 0.0;
    double sum = 0.0;
    for (int i = 0; i < t->layers[d]; i++)
        sum += usage_table_entropy(t, usage_table_row(t, d, i));
    return sum / t->layers[d];
}

double usage_table_soft(const struct usage_table *t, int row, int expert)
{
    if (t->tokens[row] == 0)
        return 0.0;
    return t->prob_sum[(size_t)row * t->experts + expert] / (double)t->tokens[row];
}

void usage_table_accumulate(struct usage_table *t, const struct backend *backend, int row,
                            const struct moe_routing *routing, const int32_t *mask)
{
    size_t at = (size_t)row * t->experts;
    int64_t counted = 0;
    if (mask == NULL)
        counted = routing->tokens;
    else
        for (int i = 0; i < routing->tokens; i++)
            counted += mask[i] != 0;
    backend->usage_accumulate(routing->tokens, routing->experts, routing->probs,
                              routing->expert, routing->kept, mask, t->kept + at,
                              t->dropped + at, t->prob_sum + at);
    t->tokens[row] += counted;
}

int usage_table_check_model(const struct usage_table *t, const struct model_config *cfg,
                            struct caem_error *err)
{
    if (t->experts != cfg->num_experts || t->layers[0] != config_moe_layer_count(cfg, 0) ||
        t->layers[1] != config_moe_layer_count(cfg, 1))
        return caem_fail(err, "usage table of %d + %d MoE layers x %d experts does not fit "
                         "the model's %d + %d x %d", t->layers[0], t->layers[1], t->experts,
                         config_moe_layer_count(cfg, 0), config_moe_layer_count(cfg, 1),
                         cfg->num_experts);
    return 0;
}

int usage_table_collect(struct usage_table *t, const struct model *m, const struct batch *b,
                        struct caem_error *err)
{
    if (usage_table_check_model(t, &m->config, err) != 0)
        return -1;
    size_t nd = (size_t)b->batch_size * b->decoder_length;
    int32_t *decoder_mask = NULL;
    const int32_t *masks[2] = { NULL, NULL };
    if (!t->count_padding) {
        masks[0] = b->attention_mask;
        if (b->labels != NULL) {
            decoder_mask = malloc(sizeof *decoder_mask * (nd > 0 ? nd : 1));
            if (decoder_mask == NULL)
                return caem_fail(err, "out of memory for a decoder mask of %zu tokens", nd);
            for (size_t i = 0; i < nd; i++)
                decoder_mask[i] = b->labels[i] != LABEL_IGNORE;
            masks[1] = decoder_mask;
        }
    }
    for (int d = 0; d < 2; d++)
        for (int i = 0; i < t->layers[d]; i++) {
            int row = usage_table_row(t, d, i);
            struct moe_routing routing;
            if (model_routing(m, d, t->blocks[row], &routing, err) != 0) {
                free(decoder_mask);
                return -1;
            }
            usage_table_accumulate(t, m->backend, row, &routing, masks[d]);
        }
    free(decoder_mask);
    return 0;
}
