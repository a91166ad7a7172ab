#include "hf_import.h"

#include <errno.h>
#include <jansson.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "checkpoint.h"
#include "hf_names.h"
#include "params.h"
#include "safetensors.h"

#define PATH_BYTES 4096

static void add_note(struct hf_import_report *report, const char *fmt, ...) CAEM_PRINTF(2, 3);

static void add_note(struct hf_import_report *report, const char *fmt, ...)
{
    if (report->note_count == HF_IMPORT_NOTES) {
        snprintf(report->notes[HF_IMPORT_NOTES - 1], HF_IMPORT_NOTE_MAX,
                 "further notes were dropped (more than %d)", HF_IMPORT_NOTES);
        return;
    }
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(report->notes[report->note_count++], HF_IMPORT_NOTE_MAX, fmt, ap);
    va_end(ap);
}

static int join_path(char *out, const char *dir, const char *name, struct caem_error *err)
{
    int n = snprintf(out, PATH_BYTES, "%s/%s", dir, name);
    if (n < 0 || n >= PATH_BYTES)
        return caem_fail(err, "path %s/%s is longer than %d bytes", dir, name, PATH_BYTES - 1);
    return 0;
}

static const char *json_type_name(const json_t *value)
{
    switch (json_typeof(value)) {
    case JSON_OBJECT:
        return "an object";
    case JSON_ARRAY:
        return "an array";
    case JSON_STRING:
        return "a string";
    case JSON_INTEGER:
        return "an integer";
    case JSON_REAL:
        return "a real number";
    case JSON_TRUE:
    case JSON_FALSE:
        return "a boolean";
    default:
        return "null";
    }
}

/* ---- config.json ---- */

/* Reads an integer field. An absent or null field takes `fallback`. */
static int read_int(const json_t *root, const char *key, int fallback, int *out,
                    const char *path, struct caem_error *err)
{
    const json_t *value = json_object_get(root, key);
    if (value == NULL || json_is_null(value)) {
        *out = fallback;
        return 0;
    }
    if (!json_is_integer(value))
        return caem_fail(err, "%s: '%s' is %s, expected an integer", path, key,
                         json_type_name(value));
    json_int_t v = json_integer_value(value);
    if (v < INT_MIN || v > INT_MAX)
        return caem_fail(err, "%s: '%s' is %lld, outside the range of int", path, key,
                         (long long)v);
    *out = (int)v;
    return 0;
}

static int read_float(const json_t *root, const char *key, double fallback, float *out,
                      const char *path, struct caem_error *err)
{
    const json_t *value = json_object_get(root, key);
    if (value == NULL || json_is_null(value)) {
        *out = (float)fallback;
        return 0;
    }
    if (!json_is_number(value))
        return caem_fail(err, "%s: '%s' is %s, expected a number", path, key,
                         json_type_name(value));
    *out = (float)json_number_value(value);
    return 0;
}

static int present(const json_t *root, const char *key)
{
    const json_t *value = json_object_get(root, key);
    return value != NULL && !json_is_null(value);
}

/* Settings of SwitchTransformersConfig that the model cannot compute, and
 * those it computes differently. */
static int check_unsupported(const json_t *root, const char *path,
                             struct hf_import_report *report, struct caem_error *err)
{
    const json_t *type = json_object_get(root, "model_type");
    if (type != NULL && (!json_is_string(type) ||
                         strcmp(json_string_value(type), "switch_transformers") != 0))
        return caem_fail(err, "%s: model_type is %s%s%s, expected \"switch_transformers\"",
                         path, json_is_string(type) ? "\"" : "",
                         json_is_string(type) ? json_string_value(type) : json_type_name(type),
                         json_is_string(type) ? "\"" : "");
    if (json_is_true(json_object_get(root, "router_bias")))
        return caem_fail(err, "%s: router_bias is true, but the workbench's router has no "
                         "bias", path);
    const json_t *act = json_object_get(root, "dense_act_fn");
    if (act != NULL && (!json_is_string(act) || strcmp(json_string_value(act), "relu") != 0))
        return caem_fail(err, "%s: dense_act_fn is %s, but the workbench's feed-forward "
                         "layers use relu", path,
                         json_is_string(act) ? json_string_value(act) : json_type_name(act));
    const json_t *router_dtype = json_object_get(root, "router_dtype");
    if (router_dtype != NULL && json_is_string(router_dtype) &&
        strcmp(json_string_value(router_dtype), "float32") != 0)
        add_note(report, "router_dtype is %s in config.json; the workbench computes the "
                 "router in float32", json_string_value(router_dtype));
    return 0;
}

/* The sparse step of one stack as SwitchTransformersConfig derives it: the
 * saved `<stack>_sparse_step` when present, otherwise layers divided by
 * num_sparse_<stack>_layers, or the layer count when that is 0. */
static int read_sparse_step(const json_t *root, const char *stack, int layers, int *out,
                            const char *path, struct caem_error *err)
{
    char key[64];
    snprintf(key, sizeof key, "%s_sparse_step", stack);
    if (present(root, key))
        return read_int(root, key, 0, out, path, err);
    int sparse_layers;
    snprintf(key, sizeof key, "num_sparse_%s_layers", stack);
    if (read_int(root, key, 3, &sparse_layers, path, err) != 0)
        return -1;
    if (sparse_layers < 0)
        return caem_fail(err, "%s: '%s' is %d, expected 0 or more", path, key, sparse_layers);
    *out = sparse_layers > 0 ? layers / sparse_layers : layers;
    return 0;
}

static int read_config_fields(const json_t *root, struct model_config *cfg, const char *path,
                              struct hf_import_report *report, struct caem_error *err)
{
    memset(cfg, 0, sizeof *cfg);
    cfg->routing = ROUTING_PARITY;
    if (read_int(root, "vocab_size", 32128, &cfg->vocab_size, path, err) != 0 ||
        read_int(root, "d_model", 768, &cfg->d_model, path, err) != 0 ||
        read_int(root, "d_kv", 64, &cfg->d_kv, path, err) != 0 ||
        read_int(root, "d_ff", 2048, &cfg->d_ff, path, err) != 0 ||
        read_int(root, "num_heads", 12, &cfg->num_heads, path, err) != 0 ||
        read_int(root, "num_layers", 12, &cfg->encoder_layers, path, err) != 0 ||
        read_int(root, "num_decoder_layers", cfg->encoder_layers, &cfg->decoder_layers, path,
                 err) != 0 ||
        read_int(root, "num_experts", 8, &cfg->num_experts, path, err) != 0 ||
        read_int(root, "expert_capacity", 64, &cfg->expert_capacity, path, err) != 0 ||
        read_float(root, "router_jitter_noise", 0.01, &cfg->router_jitter_noise, path,
                   err) != 0 ||
        read_float(root, "dropout_rate", 0.1, &cfg->dropout_rate, path, err) != 0 ||
        read_float(root, "layer_norm_epsilon", 1e-6, &cfg->layer_norm_epsilon, path,
                   err) != 0 ||
        read_int(root, "relative_attention_num_buckets", 32,
                 &cfg->relative_attention_num_buckets, path, err) != 0 ||
        read_int(root, "relative_attention_max_distance", 128,
                 &cfg->relative_attention_max_distance, path, err) != 0 ||
        read_float(root, "router_z_loss_coef", 0.001, &cfg->router_z_loss_coef, path,
                   err) != 0 ||
        read_float(root, "router_aux_loss_coef", 0.001, &cfg->router_aux_loss_coef, path,
                   err) != 0 ||
        read_float(root, "initializer_factor", 1.0, &cfg->initializer_factor, path, err) != 0 ||
        read_int(root, "pad_token_id", 0, &cfg->pad_token_id, path, err) != 0 ||
        read_int(root, "eos_token_id", 1, &cfg->eos_token_id, path, err) != 0 ||
        read_sparse_step(root, "encoder", cfg->encoder_layers, &cfg->encoder_sparse_step, path,
                         err) != 0 ||
        read_sparse_step(root, "decoder", cfg->decoder_layers, &cfg->decoder_sparse_step, path,
                         err) != 0)
        return -1;

    /* PretrainedConfig ties the embeddings by default. */
    const json_t *tie = json_object_get(root, "tie_word_embeddings");
    if (tie == NULL || json_is_null(tie))
        cfg->tie_word_embeddings = 1;
    else if (json_is_boolean(tie))
        cfg->tie_word_embeddings = json_is_true(tie);
    else if (json_is_integer(tie) && (json_integer_value(tie) == 0 ||
                                      json_integer_value(tie) == 1))
        cfg->tie_word_embeddings = (int)json_integer_value(tie);
    else if (json_is_integer(tie))
        return caem_fail(err, "%s: 'tie_word_embeddings' is %lld, expected a boolean", path,
                         (long long)json_integer_value(tie));
    else
        return caem_fail(err, "%s: 'tie_word_embeddings' is %s, expected a boolean", path,
                         json_type_name(tie));

    /* SwitchTransformersConfig leaves decoder_start_token_id unset, and T5
     * models start decoding with the padding token. */
    if (present(root, "decoder_start_token_id"))
        return read_int(root, "decoder_start_token_id", 0, &cfg->decoder_start_token_id, path,
                        err);
    cfg->decoder_start_token_id = cfg->pad_token_id;
    add_note(report, "config.json has no decoder_start_token_id; using pad_token_id %d, as "
             "T5 models do", cfg->pad_token_id);
    return 0;
}

int hf_import_config(const char *dir, struct model_config *cfg, struct hf_import_report *report,
                     struct caem_error *err)
{
    char path[PATH_BYTES];
    if (join_path(path, dir, "config.json", err) != 0)
        return -1;
    struct stat st;
    if (stat(path, &st) != 0)
        return caem_fail(err, "cannot read %s: %s", path, strerror(errno));
    json_error_t json_error;
    json_t *root = json_load_file(path, 0, &json_error);
    if (root == NULL)
        return caem_fail(err, "%s: invalid JSON at line %d: %s", path, json_error.line,
                         json_error.text);
    int status = -1;
    if (!json_is_object(root))
        caem_fail(err, "%s: expected a JSON object, found %s", path, json_type_name(root));
    else if (check_unsupported(root, path, report, err) == 0 &&
             read_config_fields(root, cfg, path, report, err) == 0)
        status = 0;
    json_decref(root);
    if (status == 0 && config_validate(cfg, err) != 0)
        return caem_fail_prefix(err, "%s", path);
    return status;
}

/* ---- tensors ---- */

struct import {
    const char *dir;
    struct model *model;
    struct hf_import_report *report;
    char **given_by;       /* per tensor, the Hugging Face name that set it, or NULL */
    float *values;         /* one tensor, converted to float32 */
    float *current;        /* one tensor as the model has it, for duplicates */
    json_t *weight_map;    /* the index's weight_map, or NULL for a single file */
    json_t *found;         /* names read from shards, to find those the index lists alone */
};

static void format_shape(char *out, size_t size, int ndim, const int64_t *dims)
{
    size_t used = (size_t)snprintf(out, size, "[");
    for (int i = 0; i < ndim && used < size; i++)
        used += (size_t)snprintf(out + used, size - used, "%s%lld", i > 0 ? ", " : "",
                                 (long long)dims[i]);
    if (used < size)
        snprintf(out + used, size - used, "]");
}

static int check_tensor_shape(const struct st_tensor *t, const struct param_info *p,
                              const char *path, struct caem_error *err)
{
    int64_t expected[2] = { p->shape[0], p->shape[1] };
    int same = t->ndim == p->ndim;
    for (int i = 0; same && i < t->ndim; i++)
        same = t->shape[i] == expected[i];
    if (same)
        return 0;
    char found_text[160], expected_text[64];
    format_shape(found_text, sizeof found_text, t->ndim, t->shape);
    format_shape(expected_text, sizeof expected_text, p->ndim, expected);
    return caem_fail(err, "%s: tensor %s has shape %s, expected %s for %s", path, t->name,
                     found_text, expected_text, p->name);
}

static double max_difference(const float *a, const float *b, size_t count)
{
    double worst = 0.0;
    for (size_t i = 0; i < count; i++) {
        double d = (double)a[i] - (double)b[i];
        if (d < 0)
            d = -d;
        if (!(d <= worst))
            worst = d;
    }
    return worst;
}

/* Handles a second tensor for a parameter that one already set. Equal
 * copies pass, and with tied embeddings the embedding wins over
 * lm_head.weight. */
static int merge_duplicate(struct import *im, const struct st_tensor *t,
                           const struct param_info *p, int index, const char *path,
                           struct caem_error *err)
{
    struct model *m = im->model;
    m->backend->download(im->current, m->params + p->offset, sizeof(float) * p->count);
    if (memcmp(im->current, im->values, sizeof(float) * p->count) == 0)
        return 0;
    int tied = m->config.tie_word_embeddings;
    const char *previous = im->given_by[index];
    int head_now = tied && strcmp(t->name, "lm_head.weight") == 0;
    int head_before = tied && strcmp(previous, "lm_head.weight") == 0;
    double difference = max_difference(im->current, im->values, p->count);
    if (head_now && !head_before) {
        add_note(im->report, "lm_head.weight differs from %s by up to %g; with tied "
                 "embeddings the LM head is the embedding, so it was ignored, as transformers "
                 "ties them", previous, difference);
        return 0;
    }
    if (head_before && !head_now) {
        add_note(im->report, "lm_head.weight differs from %s by up to %g; with tied "
                 "embeddings the LM head is the embedding, so it was replaced, as "
                 "transformers ties them", t->name, difference);
        m->backend->upload(m->params + p->offset, im->values, sizeof(float) * p->count);
        char *copy = strdup(t->name);
        if (copy == NULL)
            return caem_fail(err, "out of memory for tensor names");
        free(im->given_by[index]);
        im->given_by[index] = copy;
        return 0;
    }
    return caem_fail(err, "%s: tensor %s differs from %s by up to %g, but both give %s", path,
                     t->name, previous, difference, p->name);
}

static int import_tensor(struct import *im, const struct safetensors *st,
                         const struct st_tensor *t, const char *path, struct caem_error *err)
{
    struct model *m = im->model;
    char name[PARAM_NAME_MAX];
    if (hf_name_to_param(&m->config, t->name, name, sizeof name, err) != 0)
        return caem_fail_prefix(err, "%s", path);
    const struct param_info *p = param_find(&m->layout, name);
    if (p == NULL)
        return caem_fail(err, "%s: tensor %s maps to %s, which the config's layout does not "
                         "have", path, t->name, name);
    if (t->dtype != ST_F32 && t->dtype != ST_F16 && t->dtype != ST_BF16)
        return caem_fail(err, "%s: tensor %s has dtype %s, expected F32, F16 or BF16", path,
                         t->name, safetensors_dtype_name(t->dtype));
    if (check_tensor_shape(t, p, path, err) != 0 ||
        safetensors_read_f32(st, t->name, im->values, p->count, err) != 0)
        return -1;
    im->report->tensors++;
    im->report->f32 += t->dtype == ST_F32;
    im->report->f16 += t->dtype == ST_F16;
    im->report->bf16 += t->dtype == ST_BF16;

    int index = (int)(p - m->layout.tensors);
    if (im->given_by[index] != NULL)
        return merge_duplicate(im, t, p, index, path, err);
    m->backend->upload(m->params + p->offset, im->values, sizeof(float) * p->count);
    im->given_by[index] = strdup(t->name);
    if (im->given_by[index] == NULL)
        return caem_fail(err, "out of memory for tensor names");
    return 0;
}

/* In a sharded directory, every tensor of a shard must be listed under that
 * shard in the index. */
static int check_listed(struct import *im, const char *tensor, const char *file,
                        const char *path, struct caem_error *err)
{
    if (im->weight_map == NULL)
        return 0;
    const char *listed = json_string_value(json_object_get(im->weight_map, tensor));
    if (listed == NULL)
        return caem_fail(err, "%s: tensor %s is not in model.safetensors.index.json", path,
                         tensor);
    if (strcmp(listed, file) != 0)
        return caem_fail(err, "%s: tensor %s is listed under shard %s in "
                         "model.safetensors.index.json", path, tensor, listed);
    json_object_set_new(im->found, tensor, json_true());
    return 0;
}

static int import_file(struct import *im, const char *file, struct caem_error *err)
{
    char path[PATH_BYTES];
    if (join_path(path, im->dir, file, err) != 0)
        return -1;
    struct safetensors *st = NULL;
    if (safetensors_open(&st, path, err) != 0)
        return -1;
    im->report->files++;
    int status = 0;
    for (int i = 0; i < safetensors_count(st) && status == 0; i++) {
        const struct st_tensor *t = safetensors_at(st, i);
        status = check_listed(im, t->name, file, path, err);
        if (status == 0)
            status = import_tensor(im, st, t, path, err);
    }
    safetensors_close(st);
    return status;
}

/* A shard name must be a file in the directory itself. */
static int check_shard_name(const char *shard, const char *index_path, struct caem_error *err)
{
    if (shard[0] == '\0' || strchr(shard, '/') != NULL || strcmp(shard, ".") == 0 ||
        strcmp(shard, "..") == 0)
        return caem_fail(err, "%s: shard name '%s' is not a file name in the directory",
                         index_path, shard);
    return 0;
}

/* Reads each shard that model.safetensors.index.json names once. */
static int import_shards(struct import *im, const char *index_path, struct caem_error *err)
{
    json_error_t json_error;
    json_t *index = json_load_file(index_path, 0, &json_error);
    if (index == NULL)
        return caem_fail(err, "%s: invalid JSON at line %d: %s", index_path, json_error.line,
                         json_error.text);
    json_t *map = json_object_get(index, "weight_map");
    if (!json_is_object(map)) {
        json_decref(index);
        return caem_fail(err, "%s: missing the object 'weight_map'", index_path);
    }
    json_t *shards = json_object();
    const char *tensor;
    json_t *shard;
    int status = 0;
    json_object_foreach(map, tensor, shard) {
        if (!json_is_string(shard)) {
            status = caem_fail(err, "%s: weight_map entry %s is %s, expected a file name",
                               index_path, tensor, json_type_name(shard));
            break;
        }
        status = check_shard_name(json_string_value(shard), index_path, err);
        if (status != 0)
            break;
        json_object_set_new(shards, json_string_value(shard), json_true());
    }

    /* Every shard must exist before any is read, so that a missing one is
     * named without reading the others. */
    const char *file;
    json_t *unused;
    json_object_foreach(shards, file, unused) {
        char path[PATH_BYTES];
        struct stat st;
        if (status != 0)
            break;
        status = join_path(path, im->dir, file, err);
        if (status == 0 && stat(path, &st) != 0)
            status = caem_fail(err, "missing shard %s, which %s names: %s", path, index_path,
                               strerror(errno));
    }
    im->weight_map = map;
    im->found = json_object();
    json_object_foreach(shards, file, unused) {
        if (status != 0)
            break;
        status = import_file(im, file, err);
    }
    json_object_foreach(map, tensor, shard) {
        if (status != 0)
            break;
        if (json_object_get(im->found, tensor) == NULL)
            status = caem_fail(err, "%s lists tensor %s in shard %s, which does not contain it",
                               index_path, tensor, json_string_value(shard));
    }
    json_decref(im->found);
    im->found = NULL;
    im->weight_map = NULL;
    json_decref(shards);
    json_decref(index);
    return status;
}

static int import_weights(struct import *im, struct caem_error *err)
{
    char single[PATH_BYTES], index[PATH_BYTES];
    if (join_path(single, im->dir, "model.safetensors", err) != 0 ||
        join_path(index, im->dir, "model.safetensors.index.json", err) != 0)
        return -1;
    struct stat st;
    /* transformers 4.46.3 also prefers the single file when both exist. */
    if (stat(single, &st) == 0)
        return import_file(im, "model.safetensors", err);
    if (stat(index, &st) == 0)
        return import_shards(im, index, err);
    return caem_fail(err, "%s has neither model.safetensors nor model.safetensors.index.json "
                     "(weights in pytorch_model.bin are not supported: load the model in "
                     "transformers and save it with save_pretrained(DIR, "
                     "safe_serialization=True))", im->dir);
}

/* Fails on the first parameter that no tensor gave. */
static int check_complete(const struct import *im, struct caem_error *err)
{
    const struct param_layout *layout = &im->model->layout;
    for (int i = 0; i < layout->count; i++) {
        if (im->given_by[i] != NULL)
            continue;
        char hf[160];
        if (hf_name_from_param(layout->tensors[i].name, hf, sizeof hf, err) != 0)
            return -1;
        return caem_fail(err, "%s: missing tensor %s (the parameter %s)", im->dir, hf,
                         layout->tensors[i].name);
    }
    return 0;
}

int hf_import_model(const char *dir, const struct backend *backend, struct model **out,
                    struct hf_import_report *report, struct caem_error *err)
{
    *out = NULL;
    memset(report, 0, sizeof *report);
    struct stat st;
    if (stat(dir, &st) != 0)
        return caem_fail(err, "cannot read %s: %s", dir, strerror(errno));
    if (!S_ISDIR(st.st_mode))
        return caem_fail(err, "%s is not a directory, expected a Hugging Face model directory "
                         "with config.json", dir);
    struct model_config cfg;
    if (hf_import_config(dir, &cfg, report, err) != 0)
        return -1;
    struct import im = { .dir = dir, .report = report };
    if (model_create(&im.model, &cfg, backend, err) != 0)
        return caem_fail_prefix(err, "%s", dir);
    const struct param_layout *layout = &im.model->layout;
    size_t largest = 1;
    for (int i = 0; i < layout->count; i++)
        if (layout->tensors[i].count > largest)
            largest = layout->tensors[i].count;
    im.given_by = caem_calloc((size_t)layout->count, sizeof *im.given_by, "tensor names", err);
    im.values = caem_malloc(sizeof(float) * largest, "a tensor being imported", err);
    im.current = caem_malloc(sizeof(float) * largest, "a tensor being compared", err);
    int status = -1;
    if (im.given_by != NULL && im.values != NULL && im.current != NULL &&
        import_weights(&im, err) == 0 && check_complete(&im, err) == 0)
        status = 0;
    for (int i = 0; im.given_by != NULL && i < layout->count; i++)
        free(im.given_by[i]);
    free(im.given_by);
    free(im.values);
    free(im.current);
    if (status != 0) {
        model_free(im.model);
        return -1;
    }
    *out = im.model;
    return 0;
}

int hf_import_checkpoint(const char *dir, const char *out_path, char base_hash[17],
                         struct hf_import_report *report, struct caem_error *err)
{
    struct model *m = NULL;
    if (hf_import_model(dir, backend_cpu(), &m, report, err) != 0)
        return -1;
    char *source = realpath(dir, NULL);
    checkpoint_params_hash(m, base_hash);
    char *names[2] = { "source", "base" };
    char *values[2] = { source != NULL ? source : (char *)dir, base_hash };
    struct checkpoint ck = { 0 };
    ck.model = m;
    ck.attr_names = names;
    ck.attr_values = values;
    ck.attr_count = 2;
    int status = checkpoint_save(out_path, &ck, err);
    free(source);
    model_free(m);
    return status;
}
