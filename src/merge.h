/* Complexity-Aware Expert Merging: allocation of target experts to tasks by
 * the normalized routing entropy of each source model on its own task, and
 * the merge of M single-task source models into one target model.
 *
 * Per MoE layer, for each of encoder and decoder independently:
 *   raw_i = n_m H_i / sum_k H_k, a_i = alpha raw_i + (1 - alpha) n_m / M,
 * then AdjustAlloc turns the shares a_i into integers N_i in [1, n_s] that
 * sum to n_m (merge_allocate). Source i gives its N_i most-used experts
 * (ties: lower index first), with their router rows, to consecutive target
 * slots. Every other parameter of the target is the weighted sum of the
 * sources' with weights w_i = sum_l N_i^(l) / sum_k sum_l N_k^(l), over the
 * encoder's MoE layers for encoder parameters and the decoder's for decoder
 * parameters; the shared embedding and an untied LM head take the mean of
 * the two weight vectors.
 *
 * Letters: M sources (tasks), n_s experts per source layer, n_m experts per
 * target layer. */
#ifndef CAEM_MERGE_H
#define CAEM_MERGE_H

#include "error.h"
#include "model.h"
#include "usage.h"

#define MERGE_MAX_SOURCES 64

/* Below this, the reference implementation raises alpha to it, so that its
 * alpha = 0 ("fixed ratio") keeps 1% of the entropy term. */
#define MERGE_REFERENCE_MIN_ALPHA 0.01

struct merge_allocation_report {
    double alpha;         /* the alpha used, after the reference clamp if any */
    int uniform_fallback; /* 1 when every entropy was 0, so the shares were uniform */
    double shares[MERGE_MAX_SOURCES]; /* a_i */
};

/* AdjustAlloc: integer allocations out[i] in [1, n_s] summing to n_m from
 * the entropies of `tasks` sources. clamp_alpha applies the reference's
 * lower bound MERGE_REFERENCE_MIN_ALPHA. Fails when no allocation exists
 * (n_m > M n_s or n_m < M), on alpha outside [0, 1], and on an entropy that
 * is negative or not finite. report may be NULL. */
int merge_allocate(const double *entropies, int tasks, int n_m, int n_s, double alpha,
                   int clamp_alpha, int *out, struct merge_allocation_report *report,
                   struct caem_error *err);

/* Source of the target's shared embedding and LM head. */
enum merge_embedding {
    /* the mean of the encoder and decoder weights: (w_enc + w_dec) / 2 */
    MERGE_EMBEDDING_MEAN,
    /* as the reference code: the decoder-weighted embedding, and an untied
     * LM head left at zero */
    MERGE_EMBEDDING_REFERENCE,
};

struct merge_options {
    int experts;               /* n_m */
    double alpha;
    int clamp_alpha;           /* apply the reference's alpha >= 0.01 */
    enum merge_embedding embedding;
    /* Explicit allocation per task (the fixed-ratio ablation, e.g. 2:3:3),
     * the same for every layer; NULL to allocate by entropy. */
    const int *fixed_allocation;
};

/* alpha 1, clamp on, the mean embedding, entropy allocation; experts must be set. */
struct merge_options merge_defaults(void);

/* Provenance of a merge, for the checkpoint's /merge group and for display. */
struct merge_record {
    int sources;                /* M */
    int layers[2];              /* MoE layers of encoder and decoder */
    int experts;                /* n_m */
    double alpha;               /* as given */
    double alpha_used;
    enum merge_embedding embedding;
    double *entropies;          /* [L, M] normalized entropy per layer and source */
    int *allocation;            /* [L, M] N_i per layer */
    int *slot_source;           /* [L, n_m] source index of each target slot */
    int *slot_expert;           /* [L, n_m] that source's expert */
    double weights[2][MERGE_MAX_SOURCES]; /* w_i for encoder and decoder parameters */
    int uniform_fallbacks;      /* layers whose entropies were all 0 */
};

void merge_record_free(struct merge_record *r);

/* Merges the sources into a new target model with options->experts experts
 * per MoE layer, on the sources' backend. usage[i] is source i's usage on
 * its own task. The sources must have the same shape; the target has theirs
 * with options->experts experts. The caller checks that they share a base. */
int merge_models(struct model **target, struct model *const *sources,
                 const struct usage_table *const *usage, int count,
                 const struct merge_options *options, struct merge_record *record,
                 struct caem_error *err);

#endif
