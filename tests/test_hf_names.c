/* Hugging Face tensor names (transformers 4.46.3,
 * SwitchTransformersForConditionalGeneration) mapped to the project's names.
 *
 * The naming rules of the reference, with <s> the stack and <i> a block:
 *
 *   shared.weight, lm_head.weight, <s>.embed_tokens.weight,
 *   <s>.final_layer_norm.weight
 *   <s>.block.<i>.layer.0.SelfAttention.{q,k,v,o}.weight, .layer.0.layer_norm.weight
 *   <s>.block.0.layer.0.SelfAttention.relative_attention_bias.weight (block 0 only)
 *   decoder.block.<i>.layer.1.EncDecAttention.{q,k,v,o}.weight, .layer.1.layer_norm.weight
 *   feed-forward sublayer (1 in the encoder, 2 in the decoder), .layer_norm.weight and
 *     dense: .mlp.wi.weight, .mlp.wo.weight
 *     MoE:   .mlp.router.classifier.weight, .mlp.experts.expert_<e>.{wi,wo}.weight
 *
 * Block and expert numbers are written without padding, but the project's names
 * pad them to two digits. */
#include <stdlib.h>

#include "config.h"
#include "hf_names.h"
#include "params.h"
#include "test.h"

/* One Hugging Face name and the project name it must map to. */
struct name_case {
    const char *hf;
    const char *expected;
};

static void check_mapping(const struct model_config *cfg, const struct name_case *c)
{
    char out[PARAM_NAME_MAX];
    struct caem_error err;
    err.message[0] = '\0';
    out[0] = '\0';
    int status = hf_name_to_param(cfg, c->hf, out, sizeof out, &err);
    CHECK_MSG(status == 0, "%s: %s", c->hf, err.message);
    CHECK_MSG(strcmp(out, c->expected) == 0, "%s: mapped to \"%s\", expected \"%s\"", c->hf,
              out, c->expected);
}

static void check_mappings(const struct model_config *cfg, const struct name_case *cases,
                           int count)
{
    for (int i = 0; i < count; i++)
        check_mapping(cfg, &cases[i]);
}

/* Expects the name to be rejected with a message that quotes it. */
static void check_rejected(const struct model_config *cfg, const char *hf_name)
{
    char out[PARAM_NAME_MAX] = "";
    struct caem_error err;
    err.message[0] = '\0';
    int status = hf_name_to_param(cfg, hf_name, out, sizeof out, &err);
    CHECK_MSG(status == -1, "%s: returned %d and \"%s\", expected an error", hf_name, status,
              out);
    if (status == -1)
        CHECK_MSG(strstr(err.message, hf_name) != NULL,
                  "%s: message \"%s\" does not name the tensor", hf_name, err.message);
}

static struct model_config tiny_config(int tied)
{
    struct model_config cfg;
    struct caem_error err;
    config_preset(&cfg, "tiny", &err);
    cfg.tie_word_embeddings = tied;
    return cfg;
}

/* Twelve encoder blocks with every third an MoE layer, three decoder blocks
 * that are all MoE layers, and twelve experts: block and expert numbers of two
 * digits. */
static struct model_config wide_config(void)
{
    struct model_config cfg = tiny_config(0);
    cfg.encoder_layers = 12;
    cfg.decoder_layers = 3;
    cfg.encoder_sparse_step = 3;
    cfg.decoder_sparse_step = 1;
    cfg.num_experts = 12;
    return cfg;
}

#define COUNT(array) ((int)(sizeof(array) / sizeof((array)[0])))

/* The embedding is one tensor: the per-stack copies are the same weights. */
static void test_shared_embedding(void)
{
    static const struct name_case cases[] = {
        { "shared.weight", "shared/embedding" },
        { "encoder.embed_tokens.weight", "shared/embedding" },
        { "decoder.embed_tokens.weight", "shared/embedding" },
    };
    struct model_config tied = tiny_config(1), untied = tiny_config(0);
    check_mappings(&tied, cases, COUNT(cases));
    check_mappings(&untied, cases, COUNT(cases));
}

static void test_lm_head_tied(void)
{
    struct model_config cfg = tiny_config(1);
    static const struct name_case c = { "lm_head.weight", "shared/embedding" };
    check_mapping(&cfg, &c);
}

static void test_lm_head_untied(void)
{
    struct model_config cfg = tiny_config(0);
    static const struct name_case c = { "lm_head.weight", "lm_head" };
    check_mapping(&cfg, &c);
}

static void test_final_norms(void)
{
    static const struct name_case cases[] = {
        { "encoder.final_layer_norm.weight", "encoder/final_norm" },
        { "decoder.final_layer_norm.weight", "decoder/final_norm" },
    };
    struct model_config cfg = tiny_config(1);
    check_mappings(&cfg, cases, COUNT(cases));
}

static void test_self_attention(void)
{
    static const struct name_case cases[] = {
        { "encoder.block.0.layer.0.SelfAttention.q.weight", "encoder/block_00/self_attention/q" },
        { "encoder.block.2.layer.0.SelfAttention.k.weight", "encoder/block_02/self_attention/k" },
        { "encoder.block.3.layer.0.SelfAttention.v.weight", "encoder/block_03/self_attention/v" },
        { "encoder.block.1.layer.0.SelfAttention.o.weight", "encoder/block_01/self_attention/o" },
        { "encoder.block.1.layer.0.layer_norm.weight", "encoder/block_01/self_attention/norm" },
        { "decoder.block.3.layer.0.SelfAttention.q.weight", "decoder/block_03/self_attention/q" },
        { "decoder.block.0.layer.0.SelfAttention.o.weight", "decoder/block_00/self_attention/o" },
        { "decoder.block.2.layer.0.layer_norm.weight", "decoder/block_02/self_attention/norm" },
    };
    struct model_config cfg = tiny_config(1);
    check_mappings(&cfg, cases, COUNT(cases));
}

/* Only block 0 of each stack has the relative attention bias; the other blocks
 * reuse it. */
static void test_relative_bias(void)
{
    static const struct name_case cases[] = {
        { "encoder.block.0.layer.0.SelfAttention.relative_attention_bias.weight",
          "encoder/block_00/self_attention/relative_bias" },
        { "decoder.block.0.layer.0.SelfAttention.relative_attention_bias.weight",
          "decoder/block_00/self_attention/relative_bias" },
    };
    struct model_config cfg = tiny_config(1);
    check_mappings(&cfg, cases, COUNT(cases));
}

static void test_cross_attention(void)
{
    static const struct name_case cases[] = {
        { "decoder.block.0.layer.1.EncDecAttention.q.weight",
          "decoder/block_00/cross_attention/q" },
        { "decoder.block.1.layer.1.EncDecAttention.k.weight",
          "decoder/block_01/cross_attention/k" },
        { "decoder.block.2.layer.1.EncDecAttention.v.weight",
          "decoder/block_02/cross_attention/v" },
        { "decoder.block.3.layer.1.EncDecAttention.o.weight",
          "decoder/block_03/cross_attention/o" },
        { "decoder.block.3.layer.1.layer_norm.weight", "decoder/block_03/cross_attention/norm" },
    };
    struct model_config cfg = tiny_config(1);
    check_mappings(&cfg, cases, COUNT(cases));
}

/* In the tiny preset (sparse step 2) blocks 0 and 2 are dense. The
 * feed-forward sublayer is layer 1 in the encoder and layer 2 in the decoder. */
static void test_dense_ff(void)
{
    static const struct name_case cases[] = {
        { "encoder.block.0.layer.1.mlp.wi.weight", "encoder/block_00/ff/wi" },
        { "encoder.block.0.layer.1.mlp.wo.weight", "encoder/block_00/ff/wo" },
        { "encoder.block.2.layer.1.layer_norm.weight", "encoder/block_02/ff/norm" },
        { "decoder.block.2.layer.2.mlp.wi.weight", "decoder/block_02/ff/wi" },
        { "decoder.block.2.layer.2.mlp.wo.weight", "decoder/block_02/ff/wo" },
        { "decoder.block.0.layer.2.layer_norm.weight", "decoder/block_00/ff/norm" },
    };
    struct model_config cfg = tiny_config(1);
    check_mappings(&cfg, cases, COUNT(cases));
}

/* Blocks 1 and 3 of the tiny preset are MoE layers with four experts. */
static void test_moe_ff(void)
{
    static const struct name_case cases[] = {
        { "encoder.block.1.layer.1.mlp.router.classifier.weight", "encoder/block_01/moe/router" },
        { "encoder.block.1.layer.1.layer_norm.weight", "encoder/block_01/moe/norm" },
        { "encoder.block.1.layer.1.mlp.experts.expert_0.wi.weight",
          "encoder/block_01/moe/expert_00/wi" },
        { "encoder.block.3.layer.1.mlp.experts.expert_3.wo.weight",
          "encoder/block_03/moe/expert_03/wo" },
        { "decoder.block.3.layer.2.mlp.router.classifier.weight", "decoder/block_03/moe/router" },
        { "decoder.block.1.layer.2.layer_norm.weight", "decoder/block_01/moe/norm" },
        { "decoder.block.1.layer.2.mlp.experts.expert_2.wi.weight",
          "decoder/block_01/moe/expert_02/wi" },
        { "decoder.block.3.layer.2.mlp.experts.expert_1.wo.weight",
          "decoder/block_03/moe/expert_01/wo" },
    };
    struct model_config cfg = tiny_config(1);
    check_mappings(&cfg, cases, COUNT(cases));
}

/* Numbers of one and two digits both come out as two digits. */
static void test_two_digit_padding(void)
{
    static const struct name_case cases[] = {
        { "encoder.block.10.layer.1.mlp.experts.expert_5.wi.weight",
          "encoder/block_10/moe/expert_05/wi" },
        { "encoder.block.7.layer.1.mlp.experts.expert_11.wo.weight",
          "encoder/block_07/moe/expert_11/wo" },
        { "encoder.block.11.layer.0.SelfAttention.q.weight", "encoder/block_11/self_attention/q" },
        { "encoder.block.11.layer.1.mlp.wi.weight", "encoder/block_11/ff/wi" },
        { "decoder.block.0.layer.2.mlp.experts.expert_10.wi.weight",
          "decoder/block_00/moe/expert_10/wi" },
    };
    struct model_config cfg = wide_config();
    check_mappings(&cfg, cases, COUNT(cases));
}

static void test_unknown_names(void)
{
    static const char *names[] = {
        "",
        "weight",
        "shared.bias",
        "shared.weight.extra",
        "lm_head.bias",
        "encoder.weight",
        "encoder.embed_tokens.bias",
        "middle.block.0.layer.0.layer_norm.weight",
        "encoder.final_layer_norm.bias",
        "encoder.block.0.layer.0.SelfAttention.x.weight",
        "encoder.block.0.layer.0.SelfAttention.q.bias",
        "encoder.block.0.layer.0.SelfAttention.q.weightx",
        "encoder.block.0.layer.0.SelfAttention.qq.weight",
        "encoder.block.0.layer.0.EncDecAttention.q.weight",
        "encoder.block.0.layer.2.layer_norm.weight",
        "decoder.block.0.layer.3.layer_norm.weight",
        "encoder.block.0.layer.1.mlp.wx.weight",
        "encoder.block.1.layer.1.mlp.experts.expert_0.wz.weight",
        "encoder.block.1.layer.1.mlp.experts.expert_0.wi.bias",
        "encoder.block.1.layer.1.mlp.experts.expert_0.wi.weight.x",
        "encoder.block.1.layer.1.mlp.router.weight",
        "encoder.block.0.layer_norm.weight",
    };
    struct model_config cfg = tiny_config(1);
    for (int i = 0; i < COUNT(names); i++)
        check_rejected(&cfg, names[i]);
}

static void test_block_out_of_range(void)
{
    struct model_config cfg = tiny_config(1);
    check_rejected(&cfg, "encoder.block.4.layer.0.layer_norm.weight");
    check_rejected(&cfg, "decoder.block.4.layer.1.EncDecAttention.q.weight");
    check_rejected(&cfg, "encoder.block.-1.layer.0.layer_norm.weight");
    check_rejected(&cfg, "decoder.block.99.layer.2.mlp.wi.weight");
}

static void test_expert_out_of_range(void)
{
    struct model_config cfg = tiny_config(1);
    check_rejected(&cfg, "encoder.block.1.layer.1.mlp.experts.expert_4.wi.weight");
    check_rejected(&cfg, "decoder.block.3.layer.2.mlp.experts.expert_17.wo.weight");
    check_rejected(&cfg, "encoder.block.1.layer.1.mlp.experts.expert_-1.wi.weight");
}

/* Block 1 of the tiny preset is an MoE layer, block 0 a dense one. */
static void test_dense_name_on_moe(void)
{
    struct model_config cfg = tiny_config(1);
    check_rejected(&cfg, "encoder.block.1.layer.1.mlp.wi.weight");
    check_rejected(&cfg, "decoder.block.3.layer.2.mlp.wo.weight");
}

static void test_moe_name_on_dense(void)
{
    struct model_config cfg = tiny_config(1);
    check_rejected(&cfg, "encoder.block.0.layer.1.mlp.router.classifier.weight");
    check_rejected(&cfg, "encoder.block.2.layer.1.mlp.experts.expert_0.wi.weight");
    check_rejected(&cfg, "decoder.block.0.layer.2.mlp.experts.expert_1.wo.weight");
}

static void test_relative_bias_block_one(void)
{
    struct model_config cfg = tiny_config(1);
    check_rejected(&cfg, "encoder.block.1.layer.0.SelfAttention.relative_attention_bias.weight");
    check_rejected(&cfg, "decoder.block.1.layer.0.SelfAttention.relative_attention_bias.weight");
    check_rejected(&cfg,
                   "decoder.block.0.layer.1.EncDecAttention.relative_attention_bias.weight");
}

/* The reference writes numbers in decimal without sign, padding or spaces, so
 * another spelling is a name that no checkpoint of the model has. Accepting
 * one would let two names load into the same tensor. */
static void test_noncanonical_numbers(void)
{
    struct model_config cfg = tiny_config(1);
    check_rejected(&cfg, "encoder.block.01.layer.0.layer_norm.weight");
    check_rejected(&cfg, "encoder.block.+1.layer.0.layer_norm.weight");
    check_rejected(&cfg, "encoder.block. 1.layer.0.layer_norm.weight");
    check_rejected(&cfg, "encoder.block.1.layer.00.layer_norm.weight");
    check_rejected(&cfg, "encoder.block.1.layer.1.mlp.experts.expert_03.wi.weight");
}

/* A name that does not fit in the output buffer is an error, never a
 * truncated success. */
static void test_small_buffer(void)
{
    static const char *names[] = {
        "shared.weight",
        "encoder.embed_tokens.weight",
        "lm_head.weight",
        "decoder.final_layer_norm.weight",
        "encoder.block.1.layer.1.mlp.experts.expert_0.wi.weight",
    };
    struct model_config tied = tiny_config(1), untied = tiny_config(0);
    for (int i = 0; i < COUNT(names); i++) {
        for (int t = 0; t < 2; t++) {
            char out[6];
            struct caem_error err;
            int status = hf_name_to_param(t ? &tied : &untied, names[i], out, sizeof out, &err);
            CHECK_MSG(status == -1, "%s (tied %d): returned %d with a 6-byte buffer", names[i],
                      t, status);
        }
    }
}

/* Room for "decoder.block.NN.layer.N." followed by a leaf of up to 63 bytes. */
#define HF_NAME_MAX 160

/* Hugging Face names, in a list that grows as needed. */
struct name_list {
    char (*names)[HF_NAME_MAX];
    int count;
    int capacity;
};

static void name_list_add(struct name_list *list, const char *name)
{
    if (list->count == list->capacity) {
        list->capacity = list->capacity ? list->capacity * 2 : 256;
        list->names = realloc(list->names, sizeof *list->names * (size_t)list->capacity);
    }
    snprintf(list->names[list->count++], HF_NAME_MAX, "%s", name);
}

/* Adds "<stack>.block.<block>.layer.<sub>.<leaf>". */
static void add_block_name(struct name_list *list, const char *stack, int block, int sub,
                           const char *leaf)
{
    char name[HF_NAME_MAX];
    snprintf(name, sizeof name, "%s.block.%d.layer.%d.%s", stack, block, sub, leaf);
    name_list_add(list, name);
}

static void add_attention_names(struct name_list *list, const char *stack, int block,
                                int sub, const char *module)
{
    static const char *projections[4] = { "q", "k", "v", "o" };
    char leaf[64];
    for (int p = 0; p < 4; p++) {
        snprintf(leaf, sizeof leaf, "%s.%s.weight", module, projections[p]);
        add_block_name(list, stack, block, sub, leaf);
    }
    if (sub == 0 && block == 0) {
        snprintf(leaf, sizeof leaf, "%s.relative_attention_bias.weight", module);
        add_block_name(list, stack, block, sub, leaf);
    }
    add_block_name(list, stack, block, sub, "layer_norm.weight");
}

static void add_ff_names(struct name_list *list, const struct model_config *cfg, int decoder,
                         int block)
{
    const char *stack = decoder ? "decoder" : "encoder";
    int sub = decoder ? 2 : 1;
    if (!config_is_moe_layer(cfg, decoder, block)) {
        add_block_name(list, stack, block, sub, "mlp.wi.weight");
        add_block_name(list, stack, block, sub, "mlp.wo.weight");
    } else {
        add_block_name(list, stack, block, sub, "mlp.router.classifier.weight");
        char leaf[64];
        for (int e = 0; e < cfg->num_experts; e++) {
            snprintf(leaf, sizeof leaf, "mlp.experts.expert_%d.wi.weight", e);
            add_block_name(list, stack, block, sub, leaf);
            snprintf(leaf, sizeof leaf, "mlp.experts.expert_%d.wo.weight", e);
            add_block_name(list, stack, block, sub, leaf);
        }
    }
    add_block_name(list, stack, block, sub, "layer_norm.weight");
}

/* Writes the names that model.named_parameters() lists for the config: the
 * embedding once, and lm_head only when untied, because tied parameters are
 * listed under their first name. */
static void generate_hf_names(const struct model_config *cfg, struct name_list *list)
{
    name_list_add(list, "shared.weight");
    for (int decoder = 0; decoder < 2; decoder++) {
        const char *stack = decoder ? "decoder" : "encoder";
        int layers = decoder ? cfg->decoder_layers : cfg->encoder_layers;
        for (int block = 0; block < layers; block++) {
            add_attention_names(list, stack, block, 0, "SelfAttention");
            if (decoder)
                add_attention_names(list, stack, block, 1, "EncDecAttention");
            add_ff_names(list, cfg, decoder, block);
        }
        name_list_add(list, decoder ? "decoder.final_layer_norm.weight"
                                    : "encoder.final_layer_norm.weight");
    }
    if (!cfg->tie_word_embeddings)
        name_list_add(list, "lm_head.weight");
}

/* Every generated name maps to a tensor of the layout, and every tensor is
 * the image of exactly one generated name. */
static void check_bijection(const struct model_config *cfg, const char *label)
{
    struct param_layout layout;
    struct caem_error err;
    if (param_layout_build(&layout, cfg, &err) != 0) {
        CHECK_MSG(0, "%s: %s", label, err.message);
        return;
    }
    struct name_list list = { 0 };
    generate_hf_names(cfg, &list);
    CHECK_MSG(list.count == layout.count, "%s: %d Hugging Face names for %d tensors", label,
              list.count, layout.count);
    int *hits = calloc((size_t)layout.count, sizeof *hits);
    for (int i = 0; i < list.count; i++) {
        char name[PARAM_NAME_MAX];
        if (hf_name_to_param(cfg, list.names[i], name, sizeof name, &err) != 0) {
            CHECK_MSG(0, "%s: %s", label, err.message);
            continue;
        }
        const struct param_info *p = param_find(&layout, name);
        CHECK_MSG(p != NULL, "%s: %s maps to %s, which the layout does not have", label,
                  list.names[i], name);
        if (p != NULL)
            hits[p - layout.tensors]++;
    }
    for (int t = 0; t < layout.count; t++)
        CHECK_MSG(hits[t] == 1, "%s: tensor %s is the image of %d names", label,
                  layout.tensors[t].name, hits[t]);
    free(hits);
    free(list.names);
    param_layout_free(&layout);
}

/* The tiny preset has 117 parameters, as model.named_parameters() of
 * transformers 4.46.3 lists for the same configuration. */
static void test_bijection_tiny(void)
{
    struct model_config cfg = tiny_config(1);
    struct name_list list = { 0 };
    generate_hf_names(&cfg, &list);
    CHECK_INT_EQ(list.count, 117);
    free(list.names);
    check_bijection(&cfg, "tiny");
}

static void test_bijection_untied(void)
{
    struct model_config cfg = tiny_config(0);
    check_bijection(&cfg, "tiny, untied");
}

static void test_bijection_wide(void)
{
    struct model_config cfg = wide_config();
    check_bijection(&cfg, "12 encoder blocks, 12 experts");
}

/* hf_name_from_param gives, for every tensor of a layout, the name that
 * hf_name_to_param maps back to it. */
static void check_inverse(const struct model_config *cfg, const char *label)
{
    struct param_layout layout;
    struct caem_error err;
    if (param_layout_build(&layout, cfg, &err) != 0) {
        CHECK_MSG(0, "%s: %s", label, err.message);
        return;
    }
    for (int i = 0; i < layout.count; i++) {
        const char *name = layout.tensors[i].name;
        char hf[160], back[PARAM_NAME_MAX] = "";
        if (hf_name_from_param(name, hf, sizeof hf, &err) != 0) {
            CHECK_MSG(0, "%s: %s", label, err.message);
            continue;
        }
        CHECK_MSG(hf_name_to_param(cfg, hf, back, sizeof back, &err) == 0, "%s: %s: %s",
                  label, hf, err.message);
        CHECK_MSG(strcmp(back, name) == 0, "%s: %s -> %s -> %s", label, name, hf, back);
    }
    param_layout_free(&layout);
}

static void test_inverse_mapping(void)
{
    struct model_config tied = tiny_config(1), untied = tiny_config(0), wide = wide_config();
    check_inverse(&tied, "tiny");
    check_inverse(&untied, "tiny, untied");
    check_inverse(&wide, "12 encoder blocks, 12 experts");

    char hf[160];
    struct caem_error err;
    CHECK(hf_name_from_param("encoder/block_01/moe/expert_05/wi", hf, sizeof hf, &err) == 0);
    CHECK(strcmp(hf, "encoder.block.1.layer.1.mlp.experts.expert_5.wi.weight") == 0);
    CHECK(hf_name_from_param("decoder/block_00/cross_attention/relative_bias", hf, sizeof hf,
                             &err) == -1);
    CHECK(hf_name_from_param("encoder/block_x/ff/wi", hf, sizeof hf, &err) == -1);
}

int main(void)
{
    TEST_SUITE("hf_names");
    RUN_TEST(shared_embedding);
    RUN_TEST(lm_head_tied);
    RUN_TEST(lm_head_untied);
    RUN_TEST(final_norms);
    RUN_TEST(self_attention);
    RUN_TEST(relative_bias);
    RUN_TEST(cross_attention);
    RUN_TEST(dense_ff);
    RUN_TEST(moe_ff);
    RUN_TEST(two_digit_padding);
    RUN_TEST(unknown_names);
    RUN_TEST(block_out_of_range);
    RUN_TEST(expert_out_of_range);
    RUN_TEST(dense_name_on_moe);
    RUN_TEST(moe_name_on_dense);
    RUN_TEST(relative_bias_block_one);
    RUN_TEST(noncanonical_numbers);
    RUN_TEST(small_buffer);
    RUN_TEST(bijection_tiny);
    RUN_TEST(bijection_untied);
    RUN_TEST(bijection_wide);
    RUN_TEST(inverse_mapping);
    TEST_MAIN_END();
}
