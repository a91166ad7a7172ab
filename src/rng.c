#include "rng.h"

#include <math.h>

#include "philox.h"

void philox4x32(uint64_t key, uint64_t counter, uint32_t out[4])
{
    philox4x32_block(key, counter, out);
}

float rng_uniform(uint64_t seed, uint64_t index)
{
    uint32_t w[4];
    philox4x32(seed, index >> 2, w);
    return (float)(w[index & 3] >> 8) * (1.0f / 16777216.0f);
}

void rng_uniform4(uint64_t seed, uint64_t block, float out[4])
{
    uint32_t w[4];
    philox4x32(seed, block, w);
    for (int i = 0; i < 4; i++)
        out[i] = (float)(w[i] >> 8) * (1.0f / 16777216.0f);
}

float rng_normal(uint64_t seed, uint64_t index)
{
    uint32_t w[4];
    philox4x32(seed, index, w);
    /* u1 in (0, 1] so that the logarithm is finite. */
    double u1 = ((double)(w[0] >> 8) + 1.0) / 16777216.0;
    double u2 = (double)(w[1] >> 8) / 16777216.0;
    return (float)(sqrt(-2.0 * log(u1)) * cos(2.0 * M_PI * u2));
}

uint64_t rng_reserve(struct rng_stream *s, uint64_t count)
{
    uint64_t first = s->next;
    s->next += count;
    return first;
}
