/* Import of Hugging Face Switch Transformers model directories, as
 * save_pretrained of transformers 4.46.3 writes them: config.json with the
 * fields of SwitchTransformersConfig, and the weights in model.safetensors
 * or in the shards that model.safetensors.index.json names. F32, F16 and
 * BF16 tensors are converted to float32.
 *
 * Every tensor must map to a parameter of the layout (hf_names.h) with its
 * shape, and every parameter must be given. The tied embedding may appear
 * under several names (shared.weight, encoder.embed_tokens.weight,
 * decoder.embed_tokens.weight, and lm_head.weight when the config ties
 * embeddings). Those copies must be equal. The exception is a differing
 * lm_head.weight under tied embeddings: the embedding replaces it, as
 * transformers' tie_weights does, and the report notes it. */
#ifndef CAEM_HF_IMPORT_H
#define CAEM_HF_IMPORT_H

#include "backend.h"
#include "config.h"
#include "error.h"
#include "model.h"

#define HF_IMPORT_NOTES 8
#define HF_IMPORT_NOTE_MAX 256

/* Counts of what an import read, and notes on decisions a user should
 * know about. */
struct hf_import_report {
    int files;          /* safetensors files read */
    int tensors;        /* tensors read, duplicates included */
    int f32, f16, bf16; /* tensors per dtype */
    int note_count;
    char notes[HF_IMPORT_NOTES][HF_IMPORT_NOTE_MAX];
};

/* Reads DIR/config.json into cfg, with the defaults of SwitchTransformersConfig
 * for absent fields. Fails for a config the model cannot compute (a router
 * bias, an activation other than ReLU) and for one that config_validate
 * rejects. */
int hf_import_config(const char *dir, struct model_config *cfg, struct hf_import_report *report,
                     struct caem_error *err);

/* Creates the model of DIR's config on `backend` and fills every parameter
 * from DIR's safetensors files. On failure *out is NULL. */
int hf_import_model(const char *dir, const struct backend *backend, struct model **out,
                    struct hf_import_report *report, struct caem_error *err);

/* Imports DIR and saves it as a checkpoint at out_path with the root
 * attributes `source` (DIR's absolute path) and `base` (the parameter hash,
 * also copied into base_hash). */
int hf_import_checkpoint(const char *dir, const char *out_path, char base_hash[17],
                         struct hf_import_report *report, struct caem_error *err);

#endif
