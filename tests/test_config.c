/* Model configuration: presets, validation, the MoE layer pattern and JSON. */
#include <float.h>

#include "config.h"
#include "test.h"

/* Fails the current test unless `message` contains `part`. */
#define CHECK_CONTAINS(message, part)                                                   \
    CHECK_MSG(strstr((message), (part)) != NULL, "message \"%s\" does not contain \"%s\"", \
              (message), (part))

/* Checks the defaults of SwitchTransformersConfig (transformers 4.46.3) that
 * every preset keeps, one field at a time. */
static void check_shared_defaults(const struct model_config *c)
{
    CHECK_INT_EQ(c->encoder_sparse_step, 2);
    CHECK_INT_EQ(c->decoder_sparse_step, 2);
    CHECK_INT_EQ(c->expert_capacity, 64);
    CHECK(c->router_jitter_noise == 0.01f);
    CHECK(c->dropout_rate == 0.1f);
    CHECK(c->layer_norm_epsilon == 1e-6f);
    CHECK_INT_EQ(c->relative_attention_num_buckets, 32);
    CHECK_INT_EQ(c->relative_attention_max_distance, 128);
    CHECK(c->router_z_loss_coef == 0.001f);
    CHECK(c->router_aux_loss_coef == 0.001f);
    CHECK(c->initializer_factor == 1.0f);
    CHECK_INT_EQ(c->pad_token_id, 0);
    CHECK_INT_EQ(c->eos_token_id, 1);
    CHECK_INT_EQ(c->decoder_start_token_id, 0);
    CHECK_INT_EQ(c->routing, ROUTING_PARITY);
}

static void test_preset_tiny(void)
{
    struct model_config c;
    struct caem_error err;
    CHECK_INT_EQ(config_preset(&c, "tiny", &err), 0);
    CHECK_INT_EQ(c.vocab_size, 96);
    CHECK_INT_EQ(c.d_model, 32);
    CHECK_INT_EQ(c.d_kv, 8);
    CHECK_INT_EQ(c.d_ff, 64);
    CHECK_INT_EQ(c.num_heads, 4);
    CHECK_INT_EQ(c.encoder_layers, 4);
    CHECK_INT_EQ(c.decoder_layers, 4);
    CHECK_INT_EQ(c.num_experts, 4);
    CHECK_INT_EQ(c.tie_word_embeddings, 1);
    check_shared_defaults(&c);
    CHECK_INT_EQ(config_validate(&c, &err), 0);
}

static void test_preset_small(void)
{
    struct model_config c;
    struct caem_error err;
    CHECK_INT_EQ(config_preset(&c, "small", &err), 0);
    CHECK_INT_EQ(c.vocab_size, 8000);
    CHECK_INT_EQ(c.d_model, 256);
    CHECK_INT_EQ(c.d_kv, 64);
    CHECK_INT_EQ(c.d_ff, 1024);
    CHECK_INT_EQ(c.num_heads, 4);
    CHECK_INT_EQ(c.encoder_layers, 4);
    CHECK_INT_EQ(c.decoder_layers, 4);
    CHECK_INT_EQ(c.num_experts, 8);
    CHECK_INT_EQ(c.tie_word_embeddings, 0);
    check_shared_defaults(&c);
    CHECK_INT_EQ(config_validate(&c, &err), 0);
}

/* The shape of the pretrained google/switch-base-8 checkpoint. */
static void test_preset_switch_base_8(void)
{
    struct model_config c;
    struct caem_error err;
    CHECK_INT_EQ(config_preset(&c, "switch-base-8", &err), 0);
    CHECK_INT_EQ(c.vocab_size, 32128);
    CHECK_INT_EQ(c.d_model, 768);
    CHECK_INT_EQ(c.d_kv, 64);
    CHECK_INT_EQ(c.d_ff, 3072);
    CHECK_INT_EQ(c.num_heads, 12);
    CHECK_INT_EQ(c.encoder_layers, 12);
    CHECK_INT_EQ(c.decoder_layers, 12);
    CHECK_INT_EQ(c.num_experts, 8);
    CHECK_INT_EQ(c.tie_word_embeddings, 0);
    check_shared_defaults(&c);
    CHECK_INT_EQ(config_validate(&c, &err), 0);
}

static void test_preset_unknown(void)
{
    struct model_config c;
    struct caem_error err;
    err.message[0] = '\0';
    CHECK_INT_EQ(config_preset(&c, "switch-huge", &err), -1);
    CHECK_CONTAINS(err.message, "'switch-huge'");
    CHECK_CONTAINS(err.message, "tiny");
    CHECK_CONTAINS(err.message, "small");
    CHECK_CONTAINS(err.message, "switch-base-8");
    CHECK_CONTAINS(config_preset_names(), "switch-base-8");
}

/* One invalid value of one field, applied to the tiny preset. */
struct invalid_case {
    const char *field;
    void (*apply)(struct model_config *c);
};

#define INVALID(name, statement)                                                        \
    static void invalid_##name(struct model_config *c) { statement; }

INVALID(vocab_size, c->vocab_size = 0)
INVALID(d_model, c->d_model = 0)
INVALID(d_kv, c->d_kv = -8)
INVALID(d_ff, c->d_ff = 0)
INVALID(num_heads, c->num_heads = 0)
INVALID(encoder_layers, c->encoder_layers = 0)
INVALID(decoder_layers, c->decoder_layers = -1)
INVALID(encoder_sparse_step, c->encoder_sparse_step = -1)
INVALID(decoder_sparse_step, c->decoder_sparse_step = -2)
INVALID(num_experts, c->num_experts = 0)
INVALID(num_experts_large, c->num_experts = CONFIG_MAX_EXPERTS + 1)
INVALID(expert_capacity, c->expert_capacity = 0)
INVALID(router_jitter_noise, c->router_jitter_noise = -0.01f)
INVALID(router_jitter_noise_nan, c->router_jitter_noise = NAN)
INVALID(dropout_rate, c->dropout_rate = 1.0f)
INVALID(dropout_rate_negative, c->dropout_rate = -0.1f)
INVALID(dropout_rate_nan, c->dropout_rate = NAN)
INVALID(layer_norm_epsilon, c->layer_norm_epsilon = 0.0f)
INVALID(layer_norm_epsilon_nan, c->layer_norm_epsilon = NAN)
INVALID(num_buckets, c->relative_attention_num_buckets = 0)
INVALID(num_buckets_small, c->relative_attention_num_buckets = 3)
INVALID(max_distance, c->relative_attention_max_distance = 0)
INVALID(router_z_loss_coef, c->router_z_loss_coef = -0.001f)
INVALID(router_aux_loss_coef, c->router_aux_loss_coef = -0.001f)
INVALID(router_aux_loss_coef_nan, c->router_aux_loss_coef = NAN)
INVALID(initializer_factor, c->initializer_factor = 0.0f)
INVALID(pad_token_id, c->pad_token_id = -1)
INVALID(eos_token_id, c->eos_token_id = 96)
INVALID(decoder_start_token_id, c->decoder_start_token_id = 1000)
INVALID(routing, c->routing = (enum routing_mode)7)

static const struct invalid_case invalid_cases[] = {
    { "vocab_size", invalid_vocab_size },
    { "d_model", invalid_d_model },
    { "d_kv", invalid_d_kv },
    { "d_ff", invalid_d_ff },
    { "num_heads", invalid_num_heads },
    { "encoder_layers", invalid_encoder_layers },
    { "decoder_layers", invalid_decoder_layers },
    { "encoder_sparse_step", invalid_encoder_sparse_step },
    { "decoder_sparse_step", invalid_decoder_sparse_step },
    { "num_experts", invalid_num_experts },
    { "num_experts", invalid_num_experts_large },
    { "expert_capacity", invalid_expert_capacity },
    { "router_jitter_noise", invalid_router_jitter_noise },
    { "router_jitter_noise", invalid_router_jitter_noise_nan },
    { "dropout_rate", invalid_dropout_rate },
    { "dropout_rate", invalid_dropout_rate_negative },
    { "dropout_rate", invalid_dropout_rate_nan },
    { "layer_norm_epsilon", invalid_layer_norm_epsilon },
    { "layer_norm_epsilon", invalid_layer_norm_epsilon_nan },
    { "relative_attention_num_buckets", invalid_num_buckets },
    { "relative_attention_num_buckets", invalid_num_buckets_small },
    { "relative_attention_max_distance", invalid_max_distance },
    { "router_z_loss_coef", invalid_router_z_loss_coef },
    { "router_aux_loss_coef", invalid_router_aux_loss_coef },
    { "router_aux_loss_coef", invalid_router_aux_loss_coef_nan },
    { "initializer_factor", invalid_initializer_factor },
    { "pad_token_id", invalid_pad_token_id },
    { "eos_token_id", invalid_eos_token_id },
    { "decoder_start_token_id", invalid_decoder_start_token_id },
    { "routing", invalid_routing },
};

#define INVALID_COUNT ((int)(sizeof invalid_cases / sizeof invalid_cases[0]))

/* Each invalid field alone makes an otherwise valid config fail. */
static void test_validate_rejects_each(void)
{
    for (int i = 0; i < INVALID_COUNT; i++) {
        struct model_config c;
        struct caem_error err;
        config_preset(&c, "tiny", &err);
        invalid_cases[i].apply(&c);
        int status = config_validate(&c, &err);
        CHECK_MSG(status == -1, "case %d (%s): config_validate returned %d", i,
                  invalid_cases[i].field, status);
    }
}

/* The message names the field as it is spelled in the JSON config, so that a
 * user knows which line to fix. */
static void test_validate_names_field(void)
{
    for (int i = 0; i < INVALID_COUNT; i++) {
        struct model_config c;
        struct caem_error err;
        config_preset(&c, "tiny", &err);
        invalid_cases[i].apply(&c);
        err.message[0] = '\0';
        if (config_validate(&c, &err) != -1)
            continue; /* reported by validate_rejects_each */
        CHECK_MSG(strstr(err.message, invalid_cases[i].field) != NULL,
                  "case %d: message \"%s\" does not name %s", i, err.message,
                  invalid_cases[i].field);
    }
}

/* Without MoE layers the expert fields are unused, so zero is valid there. */
static void test_validate_dense_no_experts(void)
{
    struct model_config c;
    struct caem_error err;
    config_preset(&c, "tiny", &err);
    c.encoder_sparse_step = 0;
    c.decoder_sparse_step = 0;
    c.num_experts = 0;
    c.expert_capacity = 0;
    CHECK_INT_EQ(config_validate(&c, &err), 0);
}

/* Boundary values that are valid: dropout, jitter and loss coefficients 0, the
 * smallest bucket count, the last token id of the vocabulary, the largest
 * expert count. */
static void test_validate_accepts_bounds(void)
{
    struct model_config c;
    struct caem_error err;
    config_preset(&c, "tiny", &err);
    c.dropout_rate = 0.0f;
    c.router_jitter_noise = 0.0f;
    c.router_z_loss_coef = 0.0f;
    c.router_aux_loss_coef = 0.0f;
    c.relative_attention_num_buckets = 4;
    c.eos_token_id = c.vocab_size - 1;
    c.layer_norm_epsilon = FLT_MIN;
    c.num_experts = CONFIG_MAX_EXPERTS;
    CHECK_INT_EQ(config_validate(&c, &err), 0);
}

/* Layers 1, 1 + step, 1 + 2 step, ... are MoE layers. */
static void test_moe_layer_pattern(void)
{
    /* expected[step][layer] for eight layers */
    static const int expected[4][8] = {
        { 0, 0, 0, 0, 0, 0, 0, 0 }, /* step 0: dense model */
        { 1, 1, 1, 1, 1, 1, 1, 1 }, /* step 1: every layer */
        { 0, 1, 0, 1, 0, 1, 0, 1 }, /* step 2 */
        { 0, 1, 0, 0, 1, 0, 0, 1 }, /* step 3 */
    };
    struct model_config c;
    struct caem_error err;
    config_preset(&c, "tiny", &err);
    c.encoder_layers = 8;
    c.decoder_layers = 8;
    for (int step = 0; step < 4; step++) {
        c.encoder_sparse_step = step;
        c.decoder_sparse_step = step;
        for (int layer = 0; layer < 8; layer++) {
            int encoder = config_is_moe_layer(&c, 0, layer);
            int decoder = config_is_moe_layer(&c, 1, layer);
            CHECK_MSG(encoder == expected[step][layer], "step %d, encoder layer %d: %d",
                      step, layer, encoder);
            CHECK_MSG(decoder == expected[step][layer], "step %d, decoder layer %d: %d",
                      step, layer, decoder);
        }
    }
}

/* The encoder follows encoder_sparse_step and the decoder decoder_sparse_step. */
static void test_moe_layer_per_stack(void)
{
    struct model_config c;
    struct caem_error err;
    config_preset(&c, "tiny", &err);
    c.encoder_sparse_step = 3;
    c.decoder_sparse_step = 0;
    CHECK_INT_EQ(config_is_moe_layer(&c, 0, 1), 1);
    CHECK_INT_EQ(config_is_moe_layer(&c, 0, 3), 0);
    CHECK_INT_EQ(config_is_moe_layer(&c, 1, 1), 0);
    c.encoder_sparse_step = 0;
    c.decoder_sparse_step = 2;
    CHECK_INT_EQ(config_is_moe_layer(&c, 0, 1), 0);
    CHECK_INT_EQ(config_is_moe_layer(&c, 1, 1), 1);
    CHECK_INT_EQ(config_is_moe_layer(&c, 1, 3), 1);
}

static void test_moe_layer_count(void)
{
    struct model_config c;
    struct caem_error err;
    config_preset(&c, "tiny", &err);
    c.encoder_layers = 8;
    c.decoder_layers = 4;
    static const int encoder_counts[4] = { 0, 8, 4, 3 }; /* 8 layers, steps 0..3 */
    static const int decoder_counts[4] = { 0, 4, 2, 1 }; /* 4 layers, steps 0..3 */
    for (int step = 0; step < 4; step++) {
        c.encoder_sparse_step = step;
        c.decoder_sparse_step = step;
        CHECK_MSG(config_moe_layer_count(&c, 0) == encoder_counts[step],
                  "encoder, step %d: %d MoE layers, expected %d", step,
                  config_moe_layer_count(&c, 0), encoder_counts[step]);
        CHECK_MSG(config_moe_layer_count(&c, 1) == decoder_counts[step],
                  "decoder, step %d: %d MoE layers, expected %d", step,
                  config_moe_layer_count(&c, 1), decoder_counts[step]);
    }
    config_preset(&c, "switch-base-8", &err);
    CHECK_INT_EQ(config_moe_layer_count(&c, 0), 6);
    CHECK_INT_EQ(config_moe_layer_count(&c, 1), 6);
}

/* Compares every field. Floats must survive exactly, because config_to_json
 * writes them as doubles with enough digits. */
static void check_configs_equal(const struct model_config *a, const struct model_config *b)
{
    CHECK_INT_EQ(a->vocab_size, b->vocab_size);
    CHECK_INT_EQ(a->d_model, b->d_model);
    CHECK_INT_EQ(a->d_kv, b->d_kv);
    CHECK_INT_EQ(a->d_ff, b->d_ff);
    CHECK_INT_EQ(a->num_heads, b->num_heads);
    CHECK_INT_EQ(a->encoder_layers, b->encoder_layers);
    CHECK_INT_EQ(a->decoder_layers, b->decoder_layers);
    CHECK_INT_EQ(a->encoder_sparse_step, b->encoder_sparse_step);
    CHECK_INT_EQ(a->decoder_sparse_step, b->decoder_sparse_step);
    CHECK_INT_EQ(a->num_experts, b->num_experts);
    CHECK_INT_EQ(a->expert_capacity, b->expert_capacity);
    CHECK(a->router_jitter_noise == b->router_jitter_noise);
    CHECK(a->dropout_rate == b->dropout_rate);
    CHECK(a->layer_norm_epsilon == b->layer_norm_epsilon);
    CHECK_INT_EQ(a->relative_attention_num_buckets, b->relative_attention_num_buckets);
    CHECK_INT_EQ(a->relative_attention_max_distance, b->relative_attention_max_distance);
    CHECK(a->router_z_loss_coef == b->router_z_loss_coef);
    CHECK(a->router_aux_loss_coef == b->router_aux_loss_coef);
    CHECK(a->initializer_factor == b->initializer_factor);
    CHECK_INT_EQ(a->tie_word_embeddings, b->tie_word_embeddings);
    CHECK_INT_EQ(a->pad_token_id, b->pad_token_id);
    CHECK_INT_EQ(a->eos_token_id, b->eos_token_id);
    CHECK_INT_EQ(a->decoder_start_token_id, b->decoder_start_token_id);
    CHECK_INT_EQ(a->routing, b->routing);
}

/* Every field is changed from the tiny preset, so that a field the JSON drops
 * would keep the preset's value and differ. */
static void test_json_round_trip(void)
{
    struct model_config original, restored;
    struct caem_error err;
    config_preset(&original, "small", &err);
    original.vocab_size = 1234;
    original.d_model = 48;
    original.d_kv = 12;
    original.d_ff = 96;
    original.num_heads = 6;
    original.encoder_layers = 5;
    original.decoder_layers = 7;
    original.encoder_sparse_step = 3;
    original.decoder_sparse_step = 1;
    original.num_experts = 16;
    original.expert_capacity = 9;
    original.router_jitter_noise = 0.0375f;
    original.dropout_rate = 0.3f;
    original.layer_norm_epsilon = 3.3e-7f;
    original.relative_attention_num_buckets = 24;
    original.relative_attention_max_distance = 77;
    original.router_z_loss_coef = 0.0007f;
    original.router_aux_loss_coef = 0.011f;
    original.initializer_factor = 0.6f;
    original.tie_word_embeddings = 0;
    original.pad_token_id = 3;
    original.eos_token_id = 4;
    original.decoder_start_token_id = 5;
    original.routing = ROUTING_CLEAN;

    char *json = config_to_json(&original);
    CHECK(json != NULL);
    if (json == NULL)
        return;
    CHECK_CONTAINS(json, "\"routing\":\"clean\"");
    config_preset(&restored, "tiny", &err);
    int status = config_from_json(&restored, json, &err);
    CHECK_MSG(status == 0, "%s", err.message);
    check_configs_equal(&restored, &original);
    free(json);
}

/* The presets survive too, with routing "parity". */
static void test_json_round_trip_presets(void)
{
    static const char *names[] = { "tiny", "small", "switch-base-8" };
    for (int i = 0; i < 3; i++) {
        struct model_config original, restored;
        struct caem_error err;
        config_preset(&original, names[i], &err);
        char *json = config_to_json(&original);
        CHECK(json != NULL);
        if (json == NULL)
            continue;
        CHECK_CONTAINS(json, "\"routing\":\"parity\"");
        memset(&restored, 0, sizeof restored);
        restored.routing = ROUTING_CLEAN;
        CHECK_MSG(config_from_json(&restored, json, &err) == 0, "%s: %s", names[i],
                  err.message);
        check_configs_equal(&restored, &original);
        free(json);
    }
}

/* Fields absent from the JSON keep their value. */
static void test_json_partial_update(void)
{
    struct model_config c;
    struct caem_error err;
    config_preset(&c, "tiny", &err);
    CHECK_INT_EQ(config_from_json(&c, "{\"d_model\": 48, \"dropout_rate\": 0}", &err), 0);
    CHECK_INT_EQ(c.d_model, 48);
    CHECK(c.dropout_rate == 0.0f);
    CHECK_INT_EQ(c.vocab_size, 96);
    CHECK_INT_EQ(c.num_experts, 4);
    CHECK_INT_EQ(c.tie_word_embeddings, 1);
    CHECK_INT_EQ(c.routing, ROUTING_PARITY);
}

/* A Hugging Face config.json writes tie_word_embeddings as a JSON boolean. */
static void test_json_boolean_flag(void)
{
    struct model_config c;
    struct caem_error err;
    config_preset(&c, "tiny", &err);
    CHECK_INT_EQ(config_from_json(&c, "{\"tie_word_embeddings\": false}", &err), 0);
    CHECK_INT_EQ(c.tie_word_embeddings, 0);
    CHECK_INT_EQ(config_from_json(&c, "{\"tie_word_embeddings\": true}", &err), 0);
    CHECK_INT_EQ(c.tie_word_embeddings, 1);
}

static void test_json_unknown_field(void)
{
    struct model_config c;
    struct caem_error err;
    config_preset(&c, "tiny", &err);
    err.message[0] = '\0';
    CHECK_INT_EQ(config_from_json(&c, "{\"d_model\": 32, \"num_expert\": 8}", &err), -1);
    CHECK_CONTAINS(err.message, "unknown");
    CHECK_CONTAINS(err.message, "'num_expert'");
}

/* One JSON text with a value of the wrong type, and what the message must
 * contain. */
struct type_case {
    const char *json;
    const char *field;
    const char *expected;
};

static void test_json_wrong_types(void)
{
    static const struct type_case cases[] = {
        { "{\"d_model\": \"32\"}", "'d_model'", "integer" },
        { "{\"d_model\": 32.5}", "'d_model'", "integer" },
        { "{\"d_model\": null}", "'d_model'", "integer" },
        { "{\"num_experts\": [8]}", "'num_experts'", "integer" },
        { "{\"vocab_size\": 4294967296}", "'vocab_size'", "out of range" },
        { "{\"dropout_rate\": \"0.1\"}", "'dropout_rate'", "number" },
        { "{\"layer_norm_epsilon\": {}}", "'layer_norm_epsilon'", "number" },
        { "{\"routing\": 1}", "'routing'", "\"clean\"" },
        { "{\"routing\": \"fast\"}", "'routing'", "\"parity\"" },
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        struct model_config c;
        struct caem_error err;
        config_preset(&c, "tiny", &err);
        err.message[0] = '\0';
        int status = config_from_json(&c, cases[i].json, &err);
        CHECK_MSG(status == -1, "%s: returned %d", cases[i].json, status);
        CHECK_MSG(strstr(err.message, cases[i].field) != NULL,
                  "%s: message \"%s\" does not name %s", cases[i].json, err.message,
                  cases[i].field);
        CHECK_MSG(strstr(err.message, cases[i].expected) != NULL,
                  "%s: message \"%s\" does not say %s", cases[i].json, err.message,
                  cases[i].expected);
    }
}

static void test_json_invalid_syntax(void)
{
    struct model_config c;
    struct caem_error err;
    config_preset(&c, "tiny", &err);
    err.message[0] = '\0';
    CHECK_INT_EQ(config_from_json(&c, "{\"d_model\": 32,\n \"d_ff\": }", &err), -1);
    CHECK_CONTAINS(err.message, "invalid config JSON");
    CHECK_CONTAINS(err.message, "line 2");
    err.message[0] = '\0';
    CHECK_INT_EQ(config_from_json(&c, "", &err), -1);
    CHECK_CONTAINS(err.message, "invalid config JSON");
}

static void test_json_not_object(void)
{
    struct model_config c;
    struct caem_error err;
    config_preset(&c, "tiny", &err);
    err.message[0] = '\0';
    CHECK_INT_EQ(config_from_json(&c, "[32, 64]", &err), -1);
    CHECK_CONTAINS(err.message, "expected an object");
}

int main(void)
{
    TEST_SUITE("config");
    RUN_TEST(preset_tiny);
    RUN_TEST(preset_small);
    RUN_TEST(preset_switch_base_8);
    RUN_TEST(preset_unknown);
    RUN_TEST(validate_rejects_each);
    RUN_TEST(validate_names_field);
    RUN_TEST(validate_dense_no_experts);
    RUN_TEST(validate_accepts_bounds);
    RUN_TEST(moe_layer_pattern);
    RUN_TEST(moe_layer_per_stack);
    RUN_TEST(moe_layer_count);
    RUN_TEST(json_round_trip);
    RUN_TEST(json_round_trip_presets);
    RUN_TEST(json_partial_update);
    RUN_TEST(json_boolean_flag);
    RUN_TEST(json_unknown_field);
    RUN_TEST(json_wrong_types);
    RUN_TEST(json_invalid_syntax);
    RUN_TEST(json_not_object);
    TEST_MAIN_END();
}
