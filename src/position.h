/* Relative position buckets of T5-style attention. */
#ifndef CAEM_POSITION_H
#define CAEM_POSITION_H

#include <stdint.h>

/* Returns the bucket of relative position key - query. Bidirectional
 * (encoder) attention gives half the buckets to positive offsets; causal
 * (decoder) attention maps positive offsets to bucket 0. Half of the
 * remaining buckets hold exact distances, the other half logarithmically
 * wider ranges up to max_distance, beyond which all share the last bucket.
 * Computed in float32 in the reference's order of operations, since the
 * logarithm of an offset such as 16 lands exactly on a bucket boundary and
 * the bucket depends on how that value rounds. */
int position_bucket(int relative, int bidirectional, int num_buckets, int max_distance);

/* Fills out[i * tk + j] with the bucket of j - i. */
void position_buckets(int32_t *out, int tq, int tk, int bidirectional, int num_buckets,
                      int max_distance);

#endif
