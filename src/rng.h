/* Counter-based random numbers (Philox-4x32-10).
 *
 * A value is a pure function of (seed, index). So dropout masks and router
 * jitter can be regenerated in the backward pass instead of stored, results
 * do not depend on the number of threads, and a GPU kernel can produce the
 * same stream. */
#ifndef CAEM_RNG_H
#define CAEM_RNG_H

#include <stdint.h>

/* Returns four 32-bit words for the 64-bit counter under the 64-bit key. */
void philox4x32(uint64_t key, uint64_t counter, uint32_t out[4]);

/* Uniform in [0, 1), 24 bits of resolution. Value `index` is word index % 4
 * of the Philox block for counter index / 4, so that a loop over four
 * consecutive indices can use one block (rng_uniform4). */
float rng_uniform(uint64_t seed, uint64_t index);

/* The four uniforms of indices 4 * block .. 4 * block + 3. */
void rng_uniform4(uint64_t seed, uint64_t block, float out[4]);

/* Standard normal by the Box-Muller transform. */
float rng_normal(uint64_t seed, uint64_t index);

/* Sequential use: each call to rng_reserve returns the first index of a fresh
 * range of `count` indices, so two uses of the same seed never overlap. */
struct rng_stream {
    uint64_t seed;
    uint64_t next;
};

uint64_t rng_reserve(struct rng_stream *s, uint64_t count);

#endif
