/* The /merge group of a checkpoint: the provenance of a merged model. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "checkpoint.h"
#include "checkpoint_internal.h"
#include "hdf5_io.h"

static const char *embedding_name(enum merge_embedding e)
{
    return e == MERGE_EMBEDDING_REFERENCE ? "reference" : "mean";
}

int checkpoint_write_merge(hid_t file, const struct checkpoint *ck, struct caem_error *err)
{
    const struct merge_record *r = &ck->merge;
    hid_t group = h5io_create_group(file, "/", "merge", err);
    if (group < 0)
        return -1;
    int32_t ints[5] = { r->sources, r->experts, r->layers[0], r->layers[1],
                        r->uniform_fallbacks };
    const char *int_names[5] = { "sources", "experts", "encoder_layers", "decoder_layers",
                                 "uniform_fallbacks" };
    int status = 0;
    for (int i = 0; i < 5 && status == 0; i++)
        status = h5io_write_attribute(group, "/merge", int_names[i], H5T_STD_I32LE,
                                      H5T_NATIVE_INT32, &ints[i], err);
    if (status == 0)
        status = h5io_write_attribute(group, "/merge", "alpha", H5T_IEEE_F64LE,
                                      H5T_NATIVE_DOUBLE, &r->alpha, err);
    if (status == 0)
        status = h5io_write_attribute(group, "/merge", "alpha_used", H5T_IEEE_F64LE,
                                      H5T_NATIVE_DOUBLE, &r->alpha_used, err);
    if (status == 0)
        status = h5io_write_string(group, "/merge", "embedding", embedding_name(r->embedding),
                                   err);
    if (status == 0)
        status = h5io_write_string(group, "/merge", "usage",
                                   ck->merge_usage != NULL ? ck->merge_usage : "", err);
    for (int i = 0; i < r->sources && status == 0; i++) {
        char name[32];
        snprintf(name, sizeof name, "source_%03d", i);
        status = h5io_write_string(group, "/merge", name,
                                   ck->merge_sources != NULL && ck->merge_sources[i] != NULL
                                       ? ck->merge_sources[i] : "",
                                   err);
    }
    H5Gclose(group);
    if (status != 0)
        return -1;

    hsize_t rows = (hsize_t)(r->layers[0] + r->layers[1]);
    hsize_t by_source[2] = { rows, (hsize_t)r->sources };
    hsize_t by_slot[2] = { rows, (hsize_t)r->experts };
    hsize_t weights_dims[2] = { 2, (hsize_t)r->sources };
    double weights[2 * MERGE_MAX_SOURCES];
    for (int d = 0; d < 2; d++)
        for (int i = 0; i < r->sources; i++)
            weights[d * r->sources + i] = r->weights[d][i];
    if (h5io_write_dataset(file, "/merge/entropies", H5T_IEEE_F64LE, H5T_NATIVE_DOUBLE, 2,
                           by_source, r->entropies, err) != 0 ||
        h5io_write_dataset(file, "/merge/allocation", H5T_STD_I32LE, H5T_NATIVE_INT, 2,
                           by_source, r->allocation, err) != 0 ||
        h5io_write_dataset(file, "/merge/slot_source", H5T_STD_I32LE, H5T_NATIVE_INT, 2,
                           by_slot, r->slot_source, err) != 0 ||
        h5io_write_dataset(file, "/merge/slot_expert", H5T_STD_I32LE, H5T_NATIVE_INT, 2,
                           by_slot, r->slot_expert, err) != 0 ||
        h5io_write_dataset(file, "/merge/weights", H5T_IEEE_F64LE, H5T_NATIVE_DOUBLE, 2,
                           weights_dims, weights, err) != 0)
        return -1;
    return 0;
}

static int read_int(hid_t group, const char *name, int min, int max, int *out,
                    struct caem_error *err)
{
    int64_t value;
    if (h5io_read_int64(group, "/merge", name, &value, err) != 0)
        return -1;
    if (value < min || value > max)
        return caem_fail(err, "attribute '%s' of /merge is %lld, expected %d to %d", name,
                         (long long)value, min, max);
    *out = (int)value;
    return 0;
}

static int read_matrix(hid_t file, const char *path, H5T_class_t type_class, hid_t mem_type,
                       size_t size, hsize_t rows, hsize_t columns, void *out,
                       struct caem_error *err)
{
    struct h5io_expect expect = { type_class, size, 2, { rows, columns } };
    hid_t dataset = h5io_open_dataset(file, path, &expect, err);
    if (dataset < 0)
        return -1;
    int status = h5io_read_dataset(dataset, path, mem_type, (size_t)(rows * columns), out, err);
    H5Dclose(dataset);
    return status;
}

/* Reads the attributes of /merge into ck. */
static int read_merge_attributes(hid_t group, const struct model_config *cfg,
                                 struct checkpoint *ck, struct caem_error *err)
{
    struct merge_record *r = &ck->merge;
    char *embedding = NULL;
    if (read_int(group, "sources", 1, MERGE_MAX_SOURCES, &r->sources, err) != 0 ||
        read_int(group, "experts", 1, CONFIG_MAX_EXPERTS, &r->experts, err) != 0 ||
        read_int(group, "encoder_layers", 0, 1 << 20, &r->layers[0], err) != 0 ||
        read_int(group, "decoder_layers", 0, 1 << 20, &r->layers[1], err) != 0 ||
        read_int(group, "uniform_fallbacks", 0, 1 << 20, &r->uniform_fallbacks, err) != 0 ||
        h5io_read_string(group, "/merge", "embedding", &embedding, err) != 0 ||
        h5io_read_string(group, "/merge", "usage", &ck->merge_usage, err) != 0)
        return -1;
    int known = strcmp(embedding, "mean") == 0 || strcmp(embedding, "reference") == 0;
    r->embedding = strcmp(embedding, "reference") == 0 ? MERGE_EMBEDDING_REFERENCE
                                                       : MERGE_EMBEDDING_MEAN;
    free(embedding);
    if (!known)
        return caem_fail(err, "attribute 'embedding' of /merge is unknown, expected 'mean' "
                         "or 'reference'");
    if (r->experts != cfg->num_experts || r->layers[0] != config_moe_layer_count(cfg, 0) ||
        r->layers[1] != config_moe_layer_count(cfg, 1))
        return caem_fail(err, "/merge describes %d + %d MoE layers of %d experts, but the "
                         "model has %d + %d of %d", r->layers[0], r->layers[1], r->experts,
                         config_moe_layer_count(cfg, 0), config_moe_layer_count(cfg, 1),
                         cfg->num_experts);
    if (h5io_read_double(group, "/merge", "alpha", &r->alpha, err) != 0 ||
        h5io_read_double(group, "/merge", "alpha_used", &r->alpha_used, err) != 0)
        return -1;
    ck->merge_sources = calloc((size_t)r->sources, sizeof *ck->merge_sources);
    if (ck->merge_sources == NULL)
        return caem_fail(err, "out of memory for the merge sources");
    for (int i = 0; i < r->sources; i++) {
        char name[32];
        snprintf(name, sizeof name, "source_%03d", i);
        if (h5io_read_string(group, "/merge", name, &ck->merge_sources[i], err) != 0)
            return -1;
    }
    return 0;
}

int checkpoint_read_merge(hid_t file, const struct model_config *cfg, struct checkpoint *ck,
                          struct caem_error *err)
{
    hid_t group = h5io_open_group(file, "/merge", err);
    if (group < 0)
        return -1;
    ck->has_merge = 1;
    int status = read_merge_attributes(group, cfg, ck, err);
    H5Gclose(group);
    if (status != 0)
        return -1;
    struct merge_record *r = &ck->merge;
    size_t rows = (size_t)(r->layers[0] + r->layers[1]);
    r->entropies = calloc(rows * r->sources + 1, sizeof *r->entropies);
    r->allocation = calloc(rows * r->sources + 1, sizeof *r->allocation);
    r->slot_source = calloc(rows * r->experts + 1, sizeof *r->slot_source);
    r->slot_expert = calloc(rows * r->experts + 1, sizeof *r->slot_expert);
    double weights[2 * MERGE_MAX_SOURCES];
    if (r->entropies == NULL || r->allocation == NULL || r->slot_source == NULL ||
        r->slot_expert == NULL)
        return caem_fail(err, "out of memory for the merge record");
    if (read_matrix(file, "/merge/entropies", H5T_FLOAT, H5T_NATIVE_DOUBLE, 8, rows,
                    (hsize_t)r->sources, r->entropies, err) != 0 ||
        read_matrix(file, "/merge/allocation", H5T_INTEGER, H5T_NATIVE_INT, 4, rows,
                    (hsize_t)r->sources, r->allocation, err) != 0 ||
        read_matrix(file, "/merge/slot_source", H5T_INTEGER, H5T_NATIVE_INT, 4, rows,
                    (hsize_t)r->experts, r->slot_source, err) != 0 ||
        read_matrix(file, "/merge/slot_expert", H5T_INTEGER, H5T_NATIVE_INT, 4, rows,
                    (hsize_t)r->experts, r->slot_expert, err) != 0 ||
        read_matrix(file, "/merge/weights", H5T_FLOAT, H5T_NATIVE_DOUBLE, 8, 2,
                    (hsize_t)r->sources, weights, err) != 0)
        return -1;
    for (int d = 0; d < 2; d++)
        for (int i = 0; i < r->sources; i++)
            r->weights[d][i] = weights[d * r->sources + i];
    for (size_t k = 0; k < rows * (size_t)r->experts; k++)
        if (r->slot_source[k] < 0 || r->slot_source[k] >= r->sources ||
            r->slot_expert[k] < 0)
            return caem_fail(err, "/merge/slot_source or slot_expert at layer row %zu, slot "
                             "%zu names no source expert", k / (size_t)r->experts,
                             k % (size_t)r->experts);
    return 0;
}

void checkpoint_free_merge(struct checkpoint *ck)
{
    if (ck->merge_sources != NULL)
        for (int i = 0; i < ck->merge.sources; i++)
            free(ck->merge_sources[i]);
    free(ck->merge_sources);
    free(ck->merge_usage);
    merge_record_free(&ck->merge);
    ck->merge_sources = NULL;
    ck->merge_usage = NULL;
    ck->has_merge = 0;
}
