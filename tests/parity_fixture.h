/* The parity fixtures (tests/fixtures/parity_*.safetensors, written by
 * tools/make_fixtures.py): a tiny random SwitchTransformersForConditional-
 * Generation's config and parameters, one batch, and the reference's
 * outputs. Shared by the parity test and the CUDA model test; include after
 * test.h. */
#ifndef CAEM_PARITY_FIXTURE_H
#define CAEM_PARITY_FIXTURE_H

#include <stdlib.h>
#include <string.h>

#include "config.h"
#include "hf_names.h"
#include "model.h"
#include "safetensors.h"

static const char *fixture_names[] = { "step2_e4_tied", "step3_e8_untied", "capacity_drop",
                                       "step1_all_moe" };

struct fixture {
    struct safetensors *st;
    struct model_config cfg;
    int B, Te, Td;
    int reference_router_losses;
    int32_t *input_ids, *mask, *labels, *decoder_ids;
};

static char *fixture_path(const char *name)
{
    static char path[1024];
    const char *root = getenv("CAEM_ROOT");
    snprintf(path, sizeof path, "%s/tests/fixtures/parity_%s.safetensors",
             root != NULL ? root : ".", name);
    return path;
}

static int32_t *read_ids(struct fixture *f, const char *name, int *rows, int *cols)
{
    const struct st_tensor *t = safetensors_find(f->st, name);
    CHECK_MSG(t != NULL && t->ndim == 2, "fixture tensor %s missing or not 2-D", name);
    if (t == NULL || t->ndim != 2)
        return NULL;
    *rows = (int)t->shape[0];
    *cols = (int)t->shape[1];
    int64_t *wide = malloc(sizeof(int64_t) * t->count);
    int32_t *ids = malloc(sizeof(int32_t) * t->count);
    struct caem_error err;
    if (safetensors_read_i64(f->st, name, wide, t->count, &err) != 0)
        printf("  %s\n", err.message);
    for (size_t i = 0; i < t->count; i++)
        ids[i] = (int32_t)wide[i];
    free(wide);
    return ids;
}

static int fixture_open(struct fixture *f, const char *name)
{
    struct caem_error err;
    memset(f, 0, sizeof *f);
    if (safetensors_open(&f->st, fixture_path(name), &err) != 0) {
        printf("  %s\n", err.message);
        return -1;
    }
    const char *json = safetensors_metadata(f->st, "config");
    config_preset(&f->cfg, "tiny", &err);
    if (json == NULL || config_from_json(&f->cfg, json, &err) != 0) {
        printf("  config: %s\n", json == NULL ? "missing" : err.message);
        return -1;
    }
    /* For sparse step 1 the reference computes no router loss, because it
     * does so only for steps above 1. */
    f->reference_router_losses = f->cfg.encoder_sparse_step != 1;
    int rows, cols;
    f->input_ids = read_ids(f, "input.input_ids", &f->B, &f->Te);
    f->mask = read_ids(f, "input.attention_mask", &rows, &cols);
    f->labels = read_ids(f, "input.labels", &rows, &f->Td);
    f->decoder_ids = read_ids(f, "input.decoder_input_ids", &rows, &cols);
    return f->input_ids && f->mask && f->labels && f->decoder_ids ? 0 : -1;
}

static void fixture_close(struct fixture *f)
{
    safetensors_close(f->st);
    free(f->input_ids);
    free(f->mask);
    free(f->labels);
    free(f->decoder_ids);
}

/* Loads every "param.<hf name>" tensor into the model; checks that every
 * model tensor was given a value. */
static int load_params(struct fixture *f, struct model *m)
{
    struct caem_error err;
    unsigned char *seen = calloc((size_t)m->layout.count, 1);
    int status = 0;
    for (int i = 0; i < safetensors_count(f->st); i++) {
        const struct st_tensor *t = safetensors_at(f->st, i);
        if (strncmp(t->name, "param.", 6) != 0)
            continue;
        char name[PARAM_NAME_MAX];
        if (hf_name_to_param(&m->config, t->name + 6, name, sizeof name, &err) != 0) {
            printf("  %s\n", err.message);
            status = -1;
            continue;
        }
        const struct param_info *p = param_find(&m->layout, name);
        CHECK_MSG(p != NULL, "no tensor %s for %s", name, t->name);
        if (p == NULL) {
            status = -1;
            continue;
        }
        if (safetensors_read_f32(f->st, t->name, m->params + p->offset, p->count, &err) != 0) {
            printf("  %s\n", err.message);
            status = -1;
        }
        seen[p - m->layout.tensors] = 1;
    }
    for (int i = 0; i < m->layout.count; i++) {
        CHECK_MSG(seen[i], "tensor %s has no value in the fixture", m->layout.tensors[i].name);
        if (!seen[i])
            status = -1;
    }
    free(seen);
    return status;
}

static struct batch fixture_batch(const struct fixture *f)
{
    struct batch b = { f->B, f->Te, f->Td, f->input_ids, f->mask, f->decoder_ids, f->labels };
    return b;
}

#endif
