#include "config.h"

#include <jansson.h>
#include <math.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

enum field_type { FIELD_INT, FIELD_FLOAT };

struct field {
    const char *name;
    enum field_type type;
    size_t offset;
};

#define INT_FIELD(name) { #name, FIELD_INT, offsetof(struct model_config, name) }
#define FLOAT_FIELD(name) { #name, FIELD_FLOAT, offsetof(struct model_config, name) }

static const struct field fields[] = {
    INT_FIELD(vocab_size),
    INT_FIELD(d_model),
    INT_FIELD(d_kv),
    INT_FIELD(d_ff),
    INT_FIELD(num_heads),
    INT_FIELD(encoder_layers),
    INT_FIELD(decoder_layers),
    INT_FIELD(encoder_sparse_step),
    INT_FIELD(decoder_sparse_step),
    INT_FIELD(num_experts),
    INT_FIELD(expert_capacity),
    FLOAT_FIELD(router_jitter_noise),
    FLOAT_FIELD(dropout_rate),
    FLOAT_FIELD(layer_norm_epsilon),
    INT_FIELD(relative_attention_num_buckets),
    INT_FIELD(relative_attention_max_distance),
    FLOAT_FIELD(router_z_loss_coef),
    FLOAT_FIELD(router_aux_loss_coef),
    FLOAT_FIELD(initializer_factor),
    INT_FIELD(tie_word_embeddings),
    INT_FIELD(pad_token_id),
    INT_FIELD(eos_token_id),
    INT_FIELD(decoder_start_token_id),
};

#define FIELD_COUNT (sizeof fields / sizeof fields[0])

/* Defaults of SwitchTransformersConfig that every preset shares. */
static void config_defaults(struct model_config *cfg)
{
    memset(cfg, 0, sizeof *cfg);
    cfg->expert_capacity = 64;
    cfg->router_jitter_noise = 0.01f;
    cfg->dropout_rate = 0.1f;
    cfg->layer_norm_epsilon = 1e-6f;
    cfg->relative_attention_num_buckets = 32;
    cfg->relative_attention_max_distance = 128;
    cfg->router_z_loss_coef = 0.001f;
    cfg->router_aux_loss_coef = 0.001f;
    cfg->initializer_factor = 1.0f;
    cfg->tie_word_embeddings = 0;
    cfg->pad_token_id = 0;
    cfg->eos_token_id = 1;
    cfg->decoder_start_token_id = 0;
    cfg->routing = ROUTING_PARITY;
}

static void set_shape(struct model_config *cfg, int vocab, int d_model, int d_kv, int d_ff,
                      int heads, int layers, int experts)
{
    cfg->vocab_size = vocab;
    cfg->d_model = d_model;
    cfg->d_kv = d_kv;
    cfg->d_ff = d_ff;
    cfg->num_heads = heads;
    cfg->encoder_layers = layers;
    cfg->decoder_layers = layers;
    cfg->encoder_sparse_step = 2;
    cfg->decoder_sparse_step = 2;
    cfg->num_experts = experts;
}

const char *config_preset_names(void)
{
    return "tiny, small, switch-base-8";
}

int config_preset(struct model_config *cfg, const char *name, struct caem_error *err)
{
    config_defaults(cfg);
    if (strcmp(name, "tiny") == 0) {
        set_shape(cfg, 96, 32, 8, 64, 4, 4, 4);
        cfg->tie_word_embeddings = 1;
    } else if (strcmp(name, "small") == 0) {
        set_shape(cfg, 8000, 256, 64, 1024, 4, 4, 8);
    } else if (strcmp(name, "switch-base-8") == 0) {
        set_shape(cfg, 32128, 768, 64, 3072, 12, 12, 8);
    } else {
        return caem_fail(err, "unknown model preset '%s' (expected one of: %s)", name,
                         config_preset_names());
    }
    return 0;
}

static int check_positive(int value, const char *name, struct caem_error *err)
{
    if (value <= 0)
        return caem_fail(err, "invalid config: %s is %d, expected a positive integer", name,
                         value);
    return 0;
}

int config_validate(const struct model_config *c, struct caem_error *err)
{
    if (check_positive(c->vocab_size, "vocab_size", err) ||
        check_positive(c->d_model, "d_model", err) || check_positive(c->d_kv, "d_kv", err) ||
        check_positive(c->d_ff, "d_ff", err) || check_positive(c->num_heads, "num_heads", err) ||
        check_positive(c->encoder_layers, "encoder_layers", err) ||
        check_positive(c->decoder_layers, "decoder_layers", err) ||
        check_positive(c->relative_attention_num_buckets, "relative_attention_num_buckets",
                       err) ||
        check_positive(c->relative_attention_max_distance, "relative_attention_max_distance",
                       err))
        return -1;
    if (c->encoder_sparse_step < 0)
        return caem_fail(err, "invalid config: encoder_sparse_step is %d, expected 0 "
                         "(no MoE layer) or more", c->encoder_sparse_step);
    if (c->decoder_sparse_step < 0)
        return caem_fail(err, "invalid config: decoder_sparse_step is %d, expected 0 "
                         "(no MoE layer) or more", c->decoder_sparse_step);
    int moe_layers = config_moe_layer_count(c, 0) + config_moe_layer_count(c, 1);
    if (moe_layers > 0 && (c->num_experts < 1 || c->expert_capacity < 1))
        return caem_fail(err, "invalid config: num_experts %d and expert_capacity %d, "
                         "expected both positive when the model has MoE layers",
                         c->num_experts, c->expert_capacity);
    if (c->num_experts > CONFIG_MAX_EXPERTS)
        return caem_fail(err, "invalid config: num_experts is %d, expected at most %d",
                         c->num_experts, CONFIG_MAX_EXPERTS);
    if (c->relative_attention_num_buckets < 4)
        return caem_fail(err, "invalid config: relative_attention_num_buckets is %d, "
                         "expected at least 4", c->relative_attention_num_buckets);
    if (!(c->dropout_rate >= 0.0f && c->dropout_rate < 1.0f))
        return caem_fail(err, "invalid config: dropout_rate is %g, expected [0, 1)",
                         (double)c->dropout_rate);
    if (!(c->router_jitter_noise >= 0.0f && c->router_jitter_noise < 1.0f))
        return caem_fail(err, "invalid config: router_jitter_noise is %g, expected [0, 1)",
                         (double)c->router_jitter_noise);
    if (!(c->layer_norm_epsilon > 0.0f) || isinf(c->layer_norm_epsilon))
        return caem_fail(err, "invalid config: layer_norm_epsilon is %g, expected a finite value > 0",
                         (double)c->layer_norm_epsilon);
    if (!(c->router_z_loss_coef >= 0.0f))
        return caem_fail(err, "invalid config: router_z_loss_coef is %g, expected >= 0",
                         (double)c->router_z_loss_coef);
    if (!(c->router_aux_loss_coef >= 0.0f))
        return caem_fail(err, "invalid config: router_aux_loss_coef is %g, expected >= 0",
                         (double)c->router_aux_loss_coef);
    if (!(c->initializer_factor > 0.0f) || isinf(c->initializer_factor))
        return caem_fail(err, "invalid config: initializer_factor is %g, expected a finite value > 0",
                         (double)c->initializer_factor);
    int ids[3] = { c->pad_token_id, c->eos_token_id, c->decoder_start_token_id };
    const char *id_names[3] = { "pad_token_id", "eos_token_id", "decoder_start_token_id" };
    for (int i = 0; i < 3; i++)
        if (ids[i] < 0 || ids[i] >= c->vocab_size)
            return caem_fail(err, "invalid config: %s is %d, outside the vocabulary [0, %d)",
                             id_names[i], ids[i], c->vocab_size);
    if (c->routing != ROUTING_PARITY && c->routing != ROUTING_CLEAN)
        return caem_fail(err, "invalid config: routing mode %d", (int)c->routing);
    return 0;
}

int config_is_moe_layer(const struct model_config *cfg, int decoder, int layer)
{
    int step = decoder ? cfg->decoder_sparse_step : cfg->encoder_sparse_step;
    if (step <= 0)
        return 0;
    /* Step 1 makes every layer an MoE layer. The reference (transformers
     * 4.46.3) builds them too but then skips the router losses, because it
     * computes those only for steps above 1; this implementation computes
     * them for every MoE layer. */
    if (step == 1)
        return 1;
    return layer % step == 1;
}

int config_moe_layer_count(const struct model_config *cfg, int decoder)
{
    int layers = decoder ? cfg->decoder_layers : cfg->encoder_layers;
    int count = 0;
    for (int i = 0; i < layers; i++)
        count += config_is_moe_layer(cfg, decoder, i);
    return count;
}

char *config_to_json(const struct model_config *cfg)
{
    json_t *obj = json_object();
    for (size_t i = 0; i < FIELD_COUNT; i++) {
        const char *base = (const char *)cfg + fields[i].offset;
        if (fields[i].type == FIELD_INT)
            json_object_set_new(obj, fields[i].name, json_integer(*(const int *)base));
        else
            json_object_set_new(obj, fields[i].name, json_real(*(const float *)base));
    }
    json_object_set_new(obj, "routing",
                        json_string(cfg->routing == ROUTING_CLEAN ? "clean" : "parity"));
    char *text = json_dumps(obj, JSON_PRESERVE_ORDER | JSON_COMPACT);
    json_decref(obj);
    return text;
}

static int set_field(struct model_config *cfg, const char *key, json_t *value,
                     struct caem_error *err)
{
    if (strcmp(key, "routing") == 0) {
        const char *mode = json_string_value(value);
        if (mode != NULL && strcmp(mode, "parity") == 0)
            cfg->routing = ROUTING_PARITY;
        else if (mode != NULL && strcmp(mode, "clean") == 0)
            cfg->routing = ROUTING_CLEAN;
        else
            return caem_fail(err, "config field 'routing' is %s%s%s, expected \"parity\" or "
                             "\"clean\"", mode ? "\"" : "", mode ? mode : "not a string",
                             mode ? "\"" : "");
        return 0;
    }
    for (size_t i = 0; i < FIELD_COUNT; i++) {
        if (strcmp(fields[i].name, key) != 0)
            continue;
        char *base = (char *)cfg + fields[i].offset;
        if (fields[i].type == FIELD_INT) {
            if (strcmp(key, "tie_word_embeddings") == 0 && json_is_boolean(value)) {
                *(int *)base = json_is_true(value);
                return 0;
            }
            if (!json_is_integer(value))
                return caem_fail(err, "config field '%s' must be an integer", key);
            json_int_t v = json_integer_value(value);
            if (v < -2147483647LL || v > 2147483647LL)
                return caem_fail(err, "config field '%s' is out of range", key);
            *(int *)base = (int)v;
        } else {
            if (!json_is_number(value))
                return caem_fail(err, "config field '%s' must be a number", key);
            *(float *)base = (float)json_number_value(value);
        }
        return 0;
    }
    return caem_fail(err, "unknown config field '%s'", key);
}

int config_from_json(struct model_config *cfg, const char *text, struct caem_error *err)
{
    json_error_t jerr;
    json_t *obj = json_loads(text, 0, &jerr);
    if (obj == NULL)
        return caem_fail(err, "invalid config JSON at line %d, column %d: %s", jerr.line,
                         jerr.column, jerr.text);
    if (!json_is_object(obj)) {
        json_decref(obj);
        return caem_fail(err, "invalid config JSON: expected an object");
    }
    const char *key;
    json_t *value;
    int status = 0;
    json_object_foreach(obj, key, value) {
        if (set_field(cfg, key, value, err) != 0) {
            status = -1;
            break;
        }
    }
    json_decref(obj);
    return status;
}
