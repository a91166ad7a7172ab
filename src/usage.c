#include "usage.h"

#include <math.h>

double usage_normalized_entropy(const int64_t *counts, int experts)
{
    if (experts <= 1)
        return 0.0;
    double total = 0.0;
    for (int e = 0; e < experts; e++)
        total += (double)counts[e];
    if (total <= 0.0)
        return 0.0;
    double entropy = 0.0;
    for (int e = 0; e < experts; e++) {
        if (counts[e] <= 0)
            continue;
        double p = (double)counts[e] / total;
        entropy -= p * log(p);
    }
    return entropy / log((double)experts);
}
