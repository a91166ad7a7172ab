/* Finite-difference gradient checks shared by the gradient tests.
 *
 * A check compares the analytic directional derivative <g, d> with the
 * central difference (L(x + eps d) - L(x - eps d)) / (2 eps), where L is the
 * scalar loss of the test, and reports the error normalized by |g| |d|:
 *
 *     err = |fd - <g, d>| / (|g|_2 |d|_2)
 *
 * which is at most 2 for any gradient however wrong, is 0 for an exact one,
 * and for a correct float32 computation is limited by the rounding error of L
 * divided by eps (see each test's tolerance). Normalizing by |g| |d| rather
 * than by |<g, d>| keeps a random direction almost orthogonal to g from
 * turning rounding noise into a large relative error. */
#ifndef CAEM_GRADCHECK_H
#define CAEM_GRADCHECK_H

#include <math.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include "rng.h"

typedef double (*gradcheck_loss)(void *ctx);

static inline double gradcheck_dot(const float *a, const float *b, size_t n)
{
    double s = 0.0;
    for (size_t i = 0; i < n; i++)
        s += (double)a[i] * b[i];
    return s;
}

/* Fills d with standard normal values from (seed, stream). */
static inline void gradcheck_direction(float *d, size_t n, uint64_t seed)
{
    for (size_t i = 0; i < n; i++)
        d[i] = rng_normal(seed, i);
}

/* Central difference of loss along d at x (x is restored afterwards). */
static inline double gradcheck_central(gradcheck_loss loss, void *ctx, float *x, size_t n,
                                       const float *d, float eps)
{
    float *saved = malloc(sizeof(float) * n);
    memcpy(saved, x, sizeof(float) * n);
    for (size_t i = 0; i < n; i++)
        x[i] = saved[i] + eps * d[i];
    double plus = loss(ctx);
    for (size_t i = 0; i < n; i++)
        x[i] = saved[i] - eps * d[i];
    double minus = loss(ctx);
    memcpy(x, saved, sizeof(float) * n);
    free(saved);
    return (plus - minus) / (2.0 * eps);
}

/* The normalized error described above; g is the analytic gradient. */
static inline double gradcheck_error(gradcheck_loss loss, void *ctx, float *x, const float *g,
                                     size_t n, const float *d, float eps)
{
    double fd = gradcheck_central(loss, ctx, x, n, d, eps);
    double analytic = gradcheck_dot(g, d, n);
    double scale = sqrt(gradcheck_dot(g, g, n) * gradcheck_dot(d, d, n));
    if (scale == 0.0)
        return fabs(fd);
    return fabs(fd - analytic) / scale;
}

#endif
