#include "rng.h"

#include <math.h>

#define PHILOX_M0 0xD2511F53u
#define PHILOX_M1 0xCD9E8D57u
#define PHILOX_W0 0x9E3779B9u
#define PHILOX_W1 0xBB67AE85u

void philox4x32(uint64_t key, uint64_t counter, uint32_t out[4])
{
    uint32_t c0 = (uint32_t)counter, c1 = (uint32_t)(counter >> 32), c2 = 0, c3 = 0;
    uint32_t k0 = (uint32_t)key, k1 = (uint32_t)(key >> 32);
    for (int round = 0; round < 10; round++) {
        uint64_t p0 = (uint64_t)PHILOX_M0 * c0;
        uint64_t p1 = (uint64_t)PHILOX_M1 * c2;
        uint32_t n0 = (uint32_t)(p1 >> 32) ^ c1 ^ k0;
        uint32_t n1 = (uint32_t)p1;
        uint32_t n2 = (uint32_t)(p0 >> 32) ^ c3 ^ k1;
        uint32_t n3 = (uint32_t)p0;
        c0 = n0;
        c1 = n1;
        c2 = n2;
        c3 = n3;
        k0 += PHILOX_W0;
        k1 += PHILOX_W1;
    }
    out[0] = c0;
    out[1] = c1;
    out[2] = c2;
    out[3] = c3;
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
