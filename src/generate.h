/* Generation: greedy search and beam search with a key/value cache.
 *
 * model_generate produces, token for token, what Hugging Face transformers
 * 4.46.3 produces with
 *
 *     model.generate(input_ids, attention_mask, num_beams=..., max_length=...,
 *                    repetition_penalty=..., no_repeat_ngram_size=...,
 *                    length_penalty=..., early_stopping=..., do_sample=False)
 *
 * except where two candidates score within float rounding of each other. The
 * decoder starts from config.decoder_start_token_id and stops a sequence at
 * config.eos_token_id. Greedy search applies the repetition penalty and the
 * n-gram ban to the raw logits and takes the first maximum. Beam search
 * applies them to the log-softmax and adds each beam's running score. It then
 * keeps the best 2 * num_beams (beam, token) pairs of an input row, as
 * transformers' BeamSearchScorer does. Dimension names as in model.h: B input
 * rows, Te input tokens. */
#ifndef CAEM_GENERATE_H
#define CAEM_GENERATE_H

#include <stdint.h>

#include "error.h"
#include "model.h"
#include "usage.h"

struct generate_options {
    int num_beams;            /* 1: greedy */
    int max_length;           /* decoder length including the start token, as HF's max_length */
    /* Divides a positive score and multiplies a negative one, once for every
     * distinct token of the sequence so far, the start token included. 1: none. */
    float repetition_penalty;
    /* Bans a token that would complete an n-gram the sequence (start token
     * included) already contains. 0: none. */
    int no_repeat_ngram_size;
    /* Beam search: a finished hypothesis scores its summed log-probabilities
     * divided by (generated tokens, EOS included)^length_penalty. */
    float length_penalty;
    /* Beam search: 1 stops an input row once num_beams hypotheses are
     * finished; 0 stops it when the best running beam, scored as if it ended
     * now, cannot beat the worst finished hypothesis (transformers' False). */
    int early_stopping;
};

/* The options the CAEM paper used: 3 beams, max length 200, repetition penalty 1.2, no
 * repeated 3-grams, length penalty 1.0, early stopping. */
struct generate_options generate_paper_options(void);

/* Output ids per input row, without the decoder start token, ending with EOS when one was
 * generated. A row without EOS has max_length - 1 ids. The arrays are owned by the struct
 * and freed by generate_output_free. In beam search scores[r] is the returned hypothesis's
 * score as defined above (transformers' sequences_scores). In greedy search it is the sum
 * over the row's ids of log_softmax(raw logits), which is the model's log-likelihood of the
 * row. */
struct generate_output { int rows; int32_t **ids; int *lengths; double *scores; };

/* Generates for B input rows [B, Te] (attention_mask [B, Te] or NULL). Runs the encoder once
 * and decodes with a key/value cache. Puts the model in eval mode for the call and restores it.
 * When usage is not NULL, adds the routing of every MoE layer: the encoder's real tokens, and
 * the decoder's tokens of every running sequence (greedy) or beam (beam search) at each step,
 * with usage->decoder_source set to USAGE_DECODER_GENERATED (src/usage.h).
 *
 * A greedy row runs until it generates EOS; the beams of a beam-search row run until the row
 * is done as early_stopping defines. The encoder's padding is counted too when
 * usage->count_padding is set. The call replaces the activations of the last model_forward,
 * so model_logits, model_routing and model_backward have nothing to work on until the next
 * model_forward. On failure *out is empty. */
int model_generate(struct model *m, const int32_t *input_ids, const int32_t *attention_mask,
                   int B, int Te, const struct generate_options *opt, struct generate_output *out,
                   struct usage_table *usage, struct caem_error *err);

/* Frees the arrays of out and zeroes it. Safe on a zeroed struct. */
void generate_output_free(struct generate_output *out);

#endif
