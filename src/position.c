#include "position.h"

#include <math.h>

int position_bucket(int relative, int bidirectional, int num_buckets, int max_distance)
{
    int bucket = 0;
    int distance;
    if (bidirectional) {
        num_buckets /= 2;
        if (relative > 0)
            bucket += num_buckets;
        distance = relative < 0 ? -relative : relative;
    } else {
        distance = relative < 0 ? -relative : 0;
    }
    int max_exact = num_buckets / 2;
    if (distance < max_exact)
        return bucket + distance;
    float ratio = (float)distance / (float)max_exact;
    float scale = (float)log((double)max_distance / (double)max_exact);
    float large = logf(ratio) / scale * (float)(num_buckets - max_exact);
    int value = max_exact + (int)large;
    if (value > num_buckets - 1)
        value = num_buckets - 1;
    return bucket + value;
}

void position_buckets(int32_t *out, int tq, int tk, int bidirectional, int num_buckets,
                      int max_distance)
{
    for (int i = 0; i < tq; i++)
        for (int j = 0; j < tk; j++)
            out[(long)i * tk + j] =
                position_bucket(j - i, bidirectional, num_buckets, max_distance);
}
