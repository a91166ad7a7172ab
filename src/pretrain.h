/* T5's span-corruption objective, for pretraining a common base on corpus
 * text: about 15% of a sequence's tokens, in spans of mean length 3, are
 * replaced in the input by one sentinel per span, and the target lists each
 * sentinel followed by the tokens it replaced, then EOS.
 *
 * The mask follows T5's random_spans_noise_mask: noise = round(length *
 * density) tokens, clamped to [1, length - 1], cut into round(noise / mean)
 * spans (at least 1); the noise and the kept tokens are each split into that
 * many non-empty runs at random, and the runs alternate, kept first. */
#ifndef CAEM_PRETRAIN_H
#define CAEM_PRETRAIN_H

#include <stdint.h>

#include "error.h"
#include "task.h"
#include "tokenizer.h"

struct span_corruption {
    double noise_density;     /* 0.15 */
    double mean_span_length;  /* 3 */
};

/* T5's settings: density 0.15, mean span length 3. */
struct span_corruption span_corruption_defaults(void);

/* Writes the noise mask of a sequence of `length` tokens (1 = corrupted)
 * from the Philox stream (seed, index); returns the number of spans, or -1
 * when out of memory. length must be at least 2. */
int span_corruption_mask(const struct span_corruption *c, int length, uint64_t seed,
                         uint64_t index, unsigned char *mask);

/* Turns ids [length] (without EOS) into an input and a target (without EOS),
 * marking span k with sentinels[k]. input and target need room for `length`
 * ids; their lengths are returned. Fails when a sequence has more spans than
 * sentinel_count. */
int span_corruption_apply(const struct span_corruption *c, const int32_t *sentinels,
                          int sentinel_count, const int32_t *ids, int length, uint64_t seed,
                          uint64_t index,
                          int32_t *input, int *input_length, int32_t *target,
                          int *target_length, struct caem_error *err);

/* Builds a pretraining set from one split of the task. The text of every
 * input and target (without the prompt) is tokenized, joined with EOS and
 * cut into chunks of `chunk` ids. Each chunk is corrupted with its own mask
 * from (seed, chunk index) and the tokenizer's sentinels, and appended to
 * out, whose maximum lengths must exceed chunk. */
int span_corruption_build(const struct span_corruption *c, const struct task *task,
                          enum task_split_kind split, int chunk, uint64_t seed,
                          struct task_tokens *out, struct caem_error *err);

#endif
