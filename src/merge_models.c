/* The merge of source models into a target model (merge.h). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "merge.h"

void merge_record_free(struct merge_record *r)
{
    free(r->entropies);
    free(r->allocation);
    free(r->slot_source);
    free(r->slot_expert);
    memset(r, 0, sizeof *r);
}

static int same_config(const struct model_config *a, const struct model_config *b)
{
    return a->vocab_size == b->vocab_size && a->d_model == b->d_model &&
           a->d_kv == b->d_kv && a->d_ff == b->d_ff && a->num_heads == b->num_heads &&
           a->encoder_layers == b->encoder_layers && a->decoder_layers == b->decoder_layers &&
           a->encoder_sparse_step == b->encoder_sparse_step &&
           a->decoder_sparse_step == b->decoder_sparse_step &&
           a->num_experts == b->num_experts &&
           a->relative_attention_num_buckets == b->relative_attention_num_buckets &&
           a->tie_word_embeddings == b->tie_word_embeddings;
}

static int check_sources(struct model *const *sources, const struct usage_table *const *usage,
                         int count, const struct merge_options *o, struct caem_error *err)
{
    if (count < 1 || count > MERGE_MAX_SOURCES)
        return caem_fail(err, "invalid number of source models %d, expected 1 to %d", count,
                         MERGE_MAX_SOURCES);
    const struct model_config *first = &sources[0]->config;
    for (int i = 0; i < count; i++) {
        if (!same_config(&sources[i]->config, first))
            return caem_fail(err, "source model %d has another shape than source model 1 "
                             "(width, layers, experts or vocabulary differ)", i + 1);
        if (sources[i]->backend != sources[0]->backend)
            return caem_fail(err, "source model %d is on backend %s, source model 1 on %s",
                             i + 1, sources[i]->backend->name, sources[0]->backend->name);
        const struct usage_table *u = usage[i];
        if (u == NULL || u->experts != first->num_experts ||
            u->layers[0] != config_moe_layer_count(first, 0) ||
            u->layers[1] != config_moe_layer_count(first, 1))
            return caem_fail(err, "the usage of source model %d does not fit its MoE layers "
                             "(%d + %d layers of %d experts)", i + 1,
                             config_moe_layer_count(first, 0), config_moe_layer_count(first, 1),
                             first->num_experts);
    }
    if (o->experts < 1 || o->experts > CONFIG_MAX_EXPERTS)
        return caem_fail(err, "invalid target expert count %d, expected 1 to %d", o->experts,
                         CONFIG_MAX_EXPERTS);
    if (o->fixed_allocation != NULL) {
        long sum = 0;
        for (int i = 0; i < count; i++) {
            int n = o->fixed_allocation[i];
            if (n < 1 || n > first->num_experts)
                return caem_fail(err, "invalid fixed allocation %d for task %d, expected 1 "
                                 "to %d", n, i + 1, first->num_experts);
            sum += n;
        }
        if (sum != o->experts)
            return caem_fail(err, "the fixed allocation sums to %ld, not to the %d target "
                             "experts", sum, o->experts);
    }
    return 0;
}

/* The experts of row `row` of a usage table ordered by kept tokens, most
 * first, ties by lower index. */
static void experts_by_usage(const struct usage_table *u, int row, int *order)
{
    const int64_t *kept = u->kept + (size_t)row * u->experts;
    for (int e = 0; e < u->experts; e++)
        order[e] = e;
    for (int i = 1; i < u->experts; i++) {
        int e = order[i], j = i;
        while (j > 0 && kept[order[j - 1]] < kept[e]) {
            order[j] = order[j - 1];
            j--;
        }
        order[j] = e;
    }
}

static int record_init(struct merge_record *r, const struct model_config *cfg, int count,
                       const struct merge_options *o, struct caem_error *err)
{
    memset(r, 0, sizeof *r);
    r->sources = count;
    r->layers[0] = config_moe_layer_count(cfg, 0);
    r->layers[1] = config_moe_layer_count(cfg, 1);
    r->experts = o->experts;
    r->alpha = o->alpha;
    r->embedding = o->embedding;
    size_t rows = (size_t)(r->layers[0] + r->layers[1]);
    r->entropies = calloc(rows * count + 1, sizeof *r->entropies);
    r->allocation = calloc(rows * count + 1, sizeof *r->allocation);
    r->slot_source = calloc(rows * o->experts + 1, sizeof *r->slot_source);
    r->slot_expert = calloc(rows * o->experts + 1, sizeof *r->slot_expert);
    if (r->entropies == NULL || r->allocation == NULL || r->slot_source == NULL ||
        r->slot_expert == NULL) {
        merge_record_free(r);
        return caem_fail(err, "out of memory for the merge record");
    }
    return 0;
}

/* Allocates and selects the experts of every MoE layer into the record. */
static int plan_layers(const struct usage_table *const *usage, int count, int n_s,
                       const struct merge_options *o, struct merge_record *r,
                       struct caem_error *err)
{
    int order[CONFIG_MAX_EXPERTS];
    int rows = r->layers[0] + r->layers[1];
    for (int row = 0; row < rows; row++) {
        double *h = r->entropies + (size_t)row * count;
        int *n = r->allocation + (size_t)row * count;
        for (int i = 0; i < count; i++)
            h[i] = usage_table_entropy(usage[i], row);
        if (o->fixed_allocation != NULL) {
            memcpy(n, o->fixed_allocation, sizeof *n * (size_t)count);
            r->alpha_used = o->alpha;
        } else {
            struct merge_allocation_report report;
            if (merge_allocate(h, count, o->experts, n_s, o->alpha, o->clamp_alpha, n,
                               &report, err) != 0)
                return caem_fail_prefix(err, "%s MoE layer %d",
                                        row < r->layers[0] ? "encoder" : "decoder",
                                        (row < r->layers[0] ? row : row - r->layers[0]) + 1);
            r->alpha_used = report.alpha;
            r->uniform_fallbacks += report.uniform_fallback;
        }
        int slot = 0;
        for (int i = 0; i < count; i++) {
            experts_by_usage(usage[i], row, order);
            for (int k = 0; k < n[i]; k++, slot++) {
                r->slot_source[(size_t)row * o->experts + slot] = i;
                r->slot_expert[(size_t)row * o->experts + slot] = order[k];
            }
        }
        for (int d = 0; d < 2; d++)
            if ((row >= r->layers[0]) == d)
                for (int i = 0; i < count; i++)
                    r->weights[d][i] += n[i];
    }
    /* w_i: each stack's allocations normalized; uniform for a stack without
     * MoE layers */
    for (int d = 0; d < 2; d++) {
        double total = 0.0;
        for (int i = 0; i < count; i++)
            total += r->weights[d][i];
        for (int i = 0; i < count; i++)
            r->weights[d][i] = total > 0.0 ? r->weights[d][i] / total : 1.0 / count;
    }
    return 0;
}

/* Copies n floats between backend buffers of possibly different models. */
static void copy_floats(const struct backend *be, float *dst, const float *src, size_t n)
{
    be->copy(dst, src, n * sizeof(float));
}

/* Fills the experts and router rows of the target's MoE layers. */
static void copy_experts(struct model *target, struct model *const *sources,
                         const struct merge_record *r)
{
    const struct backend *be = target->backend;
    int D = target->config.d_model, F = target->config.d_ff;
    int row = 0;
    for (int d = 0; d < 2; d++) {
        const struct stack_offsets *ts = d ? &target->layout.decoder : &target->layout.encoder;
        for (int b = 0; b < ts->layers; b++) {
            const struct block_offsets *tb = &ts->blocks[b];
            if (!tb->moe)
                continue;
            for (int k = 0; k < r->experts; k++) {
                int i = r->slot_source[(size_t)row * r->experts + k];
                int e = r->slot_expert[(size_t)row * r->experts + k];
                const struct model *src = sources[i];
                const struct stack_offsets *ss =
                    d ? &src->layout.decoder : &src->layout.encoder;
                const struct block_offsets *sb = &ss->blocks[b];
                copy_floats(be, target->params + tb->expert_wi + (size_t)k * tb->expert_stride,
                            src->params + sb->expert_wi + (size_t)e * sb->expert_stride,
                            (size_t)F * D);
                copy_floats(be, target->params + tb->expert_wo + (size_t)k * tb->expert_stride,
                            src->params + sb->expert_wo + (size_t)e * sb->expert_stride,
                            (size_t)D * F);
                copy_floats(be, target->params + tb->router + (size_t)k * D,
                            src->params + sb->router + (size_t)e * D, (size_t)D);
            }
            row++;
        }
    }
}

static int is_router(const char *name)
{
    size_t n = strlen(name), suffix = strlen("/moe/router");
    return n >= suffix && strcmp(name + n - suffix, "/moe/router") == 0;
}

/* Weighted sums of every tensor that is neither an expert nor a router. */
static int average_shared(struct model *target, struct model *const *sources, int count,
                          const struct merge_record *r, struct caem_error *err)
{
    const struct backend *be = target->backend;
    float *sum = NULL, *part = NULL;
    size_t capacity = 0;
    for (int t = 0; t < target->layout.count; t++) {
        const struct param_info *p = &target->layout.tensors[t];
        if (p->expert || is_router(p->name))
            continue;
        double weights[MERGE_MAX_SOURCES];
        int embedding = strcmp(p->name, "shared/embedding") == 0;
        int head = strcmp(p->name, "lm_head") == 0;
        int decoder = strncmp(p->name, "decoder/", 8) == 0;
        for (int i = 0; i < count; i++) {
            if (embedding || head)
                weights[i] = r->embedding == MERGE_EMBEDDING_REFERENCE
                                 ? r->weights[1][i]
                                 : 0.5 * (r->weights[0][i] + r->weights[1][i]);
            else
                weights[i] = r->weights[decoder][i];
            if (head && r->embedding == MERGE_EMBEDDING_REFERENCE)
                weights[i] = 0.0;
        }
        if (p->count > capacity) {
            free(sum);
            free(part);
            capacity = p->count;
            sum = malloc(capacity * sizeof *sum);
            part = malloc(capacity * sizeof *part);
            if (sum == NULL || part == NULL) {
                free(sum);
                free(part);
                return caem_fail(err, "out of memory for tensor %s of the merge", p->name);
            }
        }
        /* float sums in source order, so that a check can repeat them exactly */
        memset(sum, 0, p->count * sizeof *sum);
        for (int i = 0; i < count; i++) {
            const struct param_info *q = param_find(&sources[i]->layout, p->name);
            if (q == NULL || q->count != p->count) {
                free(sum);
                free(part);
                return caem_fail(err, "source model %d has no tensor %s of %zu values", i + 1,
                                 p->name, p->count);
            }
            be->download(part, sources[i]->params + q->offset, p->count * sizeof *part);
            float w = (float)weights[i];
            for (size_t j = 0; j < p->count; j++)
                sum[j] += w * part[j];
        }
        be->upload(target->params + p->offset, sum, p->count * sizeof *sum);
    }
    free(sum);
    free(part);
    return 0;
}

int merge_models(struct model **target, struct model *const *sources,
                 const struct usage_table *const *usage, int count,
                 const struct merge_options *options, struct merge_record *record,
                 struct caem_error *err)
{
    *target = NULL;
    memset(record, 0, sizeof *record);
    if (check_sources(sources, usage, count, options, err) != 0)
        return -1;
    struct model_config cfg = sources[0]->config;
    int n_s = cfg.num_experts;
    cfg.num_experts = options->experts;
    if (record_init(record, &sources[0]->config, count, options, err) != 0)
        return -1;
    struct model *m = NULL;
    if (plan_layers(usage, count, n_s, options, record, err) != 0 ||
        model_create(&m, &cfg, sources[0]->backend, err) != 0) {
        merge_record_free(record);
        return -1;
    }
    m->backend->zero(m->params, m->layout.total * sizeof(float));
    copy_experts(m, sources, record);
    if (average_shared(m, sources, count, record, err) != 0) {
        model_free(m);
        merge_record_free(record);
        return -1;
    }
    *target = m;
    return 0;
}
