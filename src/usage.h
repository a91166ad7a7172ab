/* Expert usage statistics. */
#ifndef CAEM_USAGE_H
#define CAEM_USAGE_H

#include <stdint.h>

/* Normalized entropy of a usage histogram: -sum p log p / log(E) with
 * p = counts / sum(counts) and 0 log 0 = 0, in [0, 1]. Returns 0 for E = 1
 * and for an empty histogram. */
double usage_normalized_entropy(const int64_t *counts, int experts);

#endif
