/* Names of Hugging Face transformers' SwitchTransformersForConditionalGeneration
 * state dict (version 4.46.3), mapped to this project's tensor names. */
#ifndef CAEM_HF_NAMES_H
#define CAEM_HF_NAMES_H

#include <stddef.h>

#include "config.h"
#include "error.h"

/* Writes the project's name of a Hugging Face tensor name into out, e.g.
 * "encoder.block.1.layer.1.mlp.experts.expert_5.wi.weight" to
 * "encoder/block_01/moe/expert_05/wi". The per-stack embedding copies
 * ("encoder.embed_tokens.weight") map to "shared/embedding". Fails for a
 * name the model does not have. */
int hf_name_to_param(const struct model_config *cfg, const char *hf_name, char *out,
                     size_t out_size, struct caem_error *err);

/* Writes the Hugging Face name of one of the project's tensor names into
 * out, as the inverse of hf_name_to_param. For example
 * "encoder/block_01/moe/expert_05/wi" becomes
 * "encoder.block.1.layer.1.mlp.experts.expert_5.wi.weight", and
 * "shared/embedding" becomes "shared.weight". Fails for a name that no
 * layout has. */
int hf_name_from_param(const char *name, char *out, size_t out_size, struct caem_error *err);

#endif
