/* Switch Transformer configuration.
 *
 * The fields are those of Hugging Face transformers' SwitchTransformersConfig
 * (version 4.46.3) that change the numbers, under the same names where that
 * config has one. Dimension letters used across src/:
 *
 *   B  batch size (sequences)          D  model width (d_model)
 *   T  tokens per sequence             F  feed-forward width (d_ff)
 *   H  attention heads                 K  width of one head (d_kv)
 *   E  experts per MoE layer           V  vocabulary size
 *   N  tokens in a batch, B * T
 */
#ifndef CAEM_CONFIG_H
#define CAEM_CONFIG_H

#include "error.h"

/* Treatment of tokens beyond an expert's capacity, of router jitter and of
 * the load-balancing loss in the MoE layers. */
enum routing_mode {
    /* As the reference implementation computes it. A skipped token's output
     * is the router's max probability times the layer's normalized input, and
     * the load-balancing loss counts it as routed to expert 0. The jitter
     * multiplies the normalized hidden states that the experts see too. The
     * load-balancing loss is pooled over all MoE layers of a stack. */
    ROUTING_PARITY = 0,
    /* As the Switch Transformer paper defines it. A skipped token contributes
     * zero and is not counted. The jitter touches only the router's input.
     * The load-balancing loss is computed per MoE layer and summed. */
    ROUTING_CLEAN = 1,
};

/* Upper bound of num_experts, so that per-expert scratch fits on the stack. */
#define CONFIG_MAX_EXPERTS 1024

struct model_config {
    int vocab_size;
    int d_model;
    int d_kv;
    int d_ff;
    int num_heads;
    int encoder_layers;
    int decoder_layers;
    /* Every sparse_step-th layer is an MoE layer: layers 1, 1 + step, ...
     * 1 makes every layer an MoE layer; 0 makes none. */
    int encoder_sparse_step;
    int decoder_sparse_step;
    int num_experts;
    /* Tokens one expert accepts from one sequence; later tokens that choose
     * it skip the expert. */
    int expert_capacity;
    float router_jitter_noise;
    float dropout_rate;
    float layer_norm_epsilon;
    int relative_attention_num_buckets;
    int relative_attention_max_distance;
    float router_z_loss_coef;
    float router_aux_loss_coef;
    float initializer_factor;
    int tie_word_embeddings;
    int pad_token_id;
    int eos_token_id;
    int decoder_start_token_id;
    enum routing_mode routing;
};

/* Fills cfg from a named preset: "tiny" (tests), "small" (CPU research
 * runs) or "switch-base-8" (the pretrained Switch-base model's shape). */
int config_preset(struct model_config *cfg, const char *name, struct caem_error *err);

/* Lists the preset names, separated by ", ". */
const char *config_preset_names(void);

/* Checks every field against its valid range and the others. */
int config_validate(const struct model_config *cfg, struct caem_error *err);

/* 1 when layer `layer` (0-based) of the encoder (decoder = 0) or decoder
 * (decoder = 1) is an MoE layer. */
int config_is_moe_layer(const struct model_config *cfg, int decoder, int layer);

/* Number of MoE layers in the encoder (decoder = 0) or decoder. */
int config_moe_layer_count(const struct model_config *cfg, int decoder);

/* Writes the config as a JSON object with the field names above. */
char *config_to_json(const struct model_config *cfg);

/* Reads the fields present in a JSON object over cfg; fields that are absent
 * keep their value, unknown fields are an error. */
int config_from_json(struct model_config *cfg, const char *json, struct caem_error *err);

#endif
