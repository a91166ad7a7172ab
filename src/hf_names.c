#include "hf_names.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Reads a canonical decimal integer (digits only, no sign, no leading zero
 * unless it is "0") at *text and advances past it; -1 when there is none. */
static int read_index(const char **text)
{
    const char *p = *text;
    if (*p < '0' || *p > '9' || (p[0] == '0' && p[1] >= '0' && p[1] <= '9'))
        return -1;
    long value = 0;
    while (*p >= '0' && *p <= '9') {
        value = value * 10 + (*p - '0');
        if (value > 1000000)
            return -1;
        p++;
    }
    *text = p;
    return (int)value;
}

/* Matches `prefix`, an index and `suffix` at the start of *text, advancing
 * past them; returns the index or -1. */
static int match_index(const char **text, const char *prefix, const char *suffix)
{
    const char *p = *text;
    size_t len = strlen(prefix);
    if (strncmp(p, prefix, len) != 0)
        return -1;
    p += len;
    int value = read_index(&p);
    len = strlen(suffix);
    if (value < 0 || strncmp(p, suffix, len) != 0)
        return -1;
    *text = p + len;
    return value;
}

static int copy_name(char *out, size_t size, const char *name, const char *hf_name,
                     struct caem_error *err)
{
    int n = snprintf(out, size, "%s", name);
    if (n < 0 || (size_t)n >= size)
        return caem_fail(err, "tensor name for '%s' does not fit in %zu bytes", hf_name, size);
    return 0;
}

static int write_name(char *out, size_t size, struct caem_error *err, const char *hf_name,
                      const char *fmt, const char *stack, int block, const char *rest)
{
    int n = snprintf(out, size, fmt, stack, block, rest);
    if (n < 0 || (size_t)n >= size)
        return caem_fail(err, "tensor name for '%s' does not fit in %zu bytes", hf_name, size);
    return 0;
}

/* Maps the part after "<stack>.block.<i>.layer.<j>." */
static int map_block_tensor(const struct model_config *cfg, int decoder, int block, int sub,
                            const char *rest, char *out, size_t size, const char *hf_name,
                            struct caem_error *err)
{
    const char *stack = decoder ? "decoder" : "encoder";
    int layers = decoder ? cfg->decoder_layers : cfg->encoder_layers;
    if (block < 0 || block >= layers)
        return caem_fail(err, "'%s': the %s has %d blocks", hf_name, stack, layers);
    int ff_sub = decoder ? 2 : 1;
    char leaf[64];
    const char *attention = NULL;
    if (sub == 0)
        attention = "self_attention";
    else if (decoder && sub == 1)
        attention = "cross_attention";
    if (attention != NULL) {
        const char *module = sub == 0 ? "SelfAttention." : "EncDecAttention.";
        size_t len = strlen(module);
        if (strcmp(rest, "layer_norm.weight") == 0)
            snprintf(leaf, sizeof leaf, "%s/norm", attention);
        else if (strncmp(rest, module, len) == 0 &&
                 strcmp(rest + len, "relative_attention_bias.weight") == 0 && sub == 0 &&
                 block == 0)
            snprintf(leaf, sizeof leaf, "%s/relative_bias", attention);
        else if (strncmp(rest, module, len) == 0 && strlen(rest + len) == 8 &&
                 strchr("qkvo", rest[len]) != NULL && strcmp(rest + len + 1, ".weight") == 0)
            snprintf(leaf, sizeof leaf, "%s/%c", attention, rest[len]);
        else if (strstr(rest, "relative_attention_bias") != NULL)
            return caem_fail(err, "'%s': only block 0's self-attention has a relative "
                             "attention bias", hf_name);
        else
            return caem_fail(err, "unknown attention tensor '%s'", hf_name);
        return write_name(out, size, err, hf_name, "%s/block_%02d/%s", stack, block, leaf);
    }
    if (sub != ff_sub)
        return caem_fail(err, "unknown sublayer %d in '%s'", sub, hf_name);
    int moe = config_is_moe_layer(cfg, decoder, block);
    const char *ff = moe ? "moe" : "ff";
    const char *expert_rest = rest;
    int expert = moe ? match_index(&expert_rest, "mlp.experts.expert_", ".") : -1;
    if (strcmp(rest, "layer_norm.weight") == 0) {
        snprintf(leaf, sizeof leaf, "%s/norm", ff);
    } else if (!moe && strcmp(rest, "mlp.wi.weight") == 0) {
        snprintf(leaf, sizeof leaf, "ff/wi");
    } else if (!moe && strcmp(rest, "mlp.wo.weight") == 0) {
        snprintf(leaf, sizeof leaf, "ff/wo");
    } else if (moe && strcmp(rest, "mlp.router.classifier.weight") == 0) {
        snprintf(leaf, sizeof leaf, "moe/router");
    } else if (expert >= 0 && expert < cfg->num_experts &&
               (strcmp(expert_rest, "wi.weight") == 0 || strcmp(expert_rest, "wo.weight") == 0)) {
        snprintf(leaf, sizeof leaf, "moe/expert_%02d/%.2s", expert, expert_rest);
    } else if (expert >= cfg->num_experts) {
        return caem_fail(err, "'%s': expert %d does not exist (the model has %d experts)",
                         hf_name, expert, cfg->num_experts);
    } else {
        return caem_fail(err, "unknown feed-forward tensor '%s' (%s block %d is %s)", hf_name,
                         stack, block, moe ? "an MoE layer" : "dense");
    }
    return write_name(out, size, err, hf_name, "%s/block_%02d/%s", stack, block, leaf);
}

int hf_name_to_param(const struct model_config *cfg, const char *hf_name, char *out,
                     size_t out_size, struct caem_error *err)
{
    if (strcmp(hf_name, "shared.weight") == 0 ||
        strcmp(hf_name, "encoder.embed_tokens.weight") == 0 ||
        strcmp(hf_name, "decoder.embed_tokens.weight") == 0) {
        return copy_name(out, out_size, "shared/embedding", hf_name, err);
    }
    if (strcmp(hf_name, "lm_head.weight") == 0) {
        /* With tied embeddings the LM head is the embedding. */
        return copy_name(out, out_size, cfg->tie_word_embeddings ? "shared/embedding" : "lm_head",
                         hf_name, err);
    }
    for (int decoder = 0; decoder < 2; decoder++) {
        const char *stack = decoder ? "decoder" : "encoder";
        char prefix[32];
        snprintf(prefix, sizeof prefix, "%s.", stack);
        size_t len = strlen(prefix);
        if (strncmp(hf_name, prefix, len) != 0)
            continue;
        const char *rest = hf_name + len;
        if (strcmp(rest, "final_layer_norm.weight") == 0)
            return copy_name(out, out_size, decoder ? "decoder/final_norm" : "encoder/final_norm",
                             hf_name, err);
        int block = match_index(&rest, "block.", ".");
        int sub = block >= 0 ? match_index(&rest, "layer.", ".") : -1;
        if (block >= 0 && sub >= 0)
            return map_block_tensor(cfg, decoder, block, sub, rest, out, out_size, hf_name,
                                    err);
        break;
    }
    return caem_fail(err, "unknown tensor name '%s'", hf_name);
}

/* Reads "<prefix><digits>" at *text and advances past it. Returns the
 * number, or -1 when there is none. */
static int read_numbered(const char **text, const char *prefix)
{
    size_t len = strlen(prefix);
    if (strncmp(*text, prefix, len) != 0)
        return -1;
    const char *p = *text + len;
    if (*p < '0' || *p > '9')
        return -1;
    char *end;
    long value = strtol(p, &end, 10);
    if (value > 1000000)
        return -1;
    *text = end;
    return (int)value;
}

/* Maps the part of an attention tensor name after "self_attention/" (cross
 * 0) or "cross_attention/" (cross 1). */
static int attention_leaf_to_hf(int cross, const char *rest, char *leaf, size_t size)
{
    const char *module = cross ? "EncDecAttention" : "SelfAttention";
    if (strcmp(rest, "norm") == 0)
        snprintf(leaf, size, "layer.%d.layer_norm.weight", cross);
    else if (!cross && strcmp(rest, "relative_bias") == 0)
        snprintf(leaf, size, "layer.0.SelfAttention.relative_attention_bias.weight");
    else if (strlen(rest) == 1 && strchr("qkvo", rest[0]) != NULL)
        snprintf(leaf, size, "layer.%d.%s.%c.weight", cross, module, rest[0]);
    else
        return -1;
    return 0;
}

/* Maps the part of a block tensor name after "block_NN/". */
static int block_leaf_to_hf(int decoder, const char *rest, char *leaf, size_t size)
{
    int ff_sub = decoder ? 2 : 1;
    if (strncmp(rest, "self_attention/", 15) == 0)
        return attention_leaf_to_hf(0, rest + 15, leaf, size);
    if (decoder && strncmp(rest, "cross_attention/", 16) == 0)
        return attention_leaf_to_hf(1, rest + 16, leaf, size);
    if (strcmp(rest, "ff/norm") == 0 || strcmp(rest, "moe/norm") == 0) {
        snprintf(leaf, size, "layer.%d.layer_norm.weight", ff_sub);
        return 0;
    }
    if (strcmp(rest, "ff/wi") == 0 || strcmp(rest, "ff/wo") == 0) {
        snprintf(leaf, size, "layer.%d.mlp.%s.weight", ff_sub, rest + 3);
        return 0;
    }
    if (strcmp(rest, "moe/router") == 0) {
        snprintf(leaf, size, "layer.%d.mlp.router.classifier.weight", ff_sub);
        return 0;
    }
    const char *expert_rest = rest;
    int expert = read_numbered(&expert_rest, "moe/expert_");
    if (expert >= 0 && (strcmp(expert_rest, "/wi") == 0 || strcmp(expert_rest, "/wo") == 0)) {
        snprintf(leaf, size, "layer.%d.mlp.experts.expert_%d.%s.weight", ff_sub, expert,
                 expert_rest + 1);
        return 0;
    }
    return -1;
}

int hf_name_from_param(const char *name, char *out, size_t out_size, struct caem_error *err)
{
    char hf[160];
    int known = 0;
    if (strcmp(name, "shared/embedding") == 0) {
        snprintf(hf, sizeof hf, "shared.weight");
        known = 1;
    } else if (strcmp(name, "lm_head") == 0) {
        snprintf(hf, sizeof hf, "lm_head.weight");
        known = 1;
    }
    for (int decoder = 0; decoder < 2 && !known; decoder++) {
        const char *stack = decoder ? "decoder" : "encoder";
        size_t len = strlen(stack);
        if (strncmp(name, stack, len) != 0 || name[len] != '/')
            continue;
        const char *rest = name + len + 1;
        if (strcmp(rest, "final_norm") == 0) {
            snprintf(hf, sizeof hf, "%s.final_layer_norm.weight", stack);
            known = 1;
            break;
        }
        int block = read_numbered(&rest, "block_");
        char leaf[128];
        if (block >= 0 && rest[0] == '/' && block_leaf_to_hf(decoder, rest + 1, leaf,
                                                             sizeof leaf) == 0) {
            snprintf(hf, sizeof hf, "%s.block.%d.%s", stack, block, leaf);
            known = 1;
        }
    }
    if (!known)
        return caem_fail(err, "no Hugging Face name for tensor '%s'", name);
    return copy_name(out, out_size, hf, name, err);
}
