/* Analysis of models: model soup (the weighted average of two models of the
 * same shape) and layer-wise linear CKA between two models' hidden states on
 * the same inputs.
 *
 * Linear CKA (centered kernel alignment with a linear kernel) of X [n, dx]
 * and Y [n, dy], rows the same n tokens, columns centered: ||Y^T X||_F^2 / (||X^T X||_F ||Y^T Y||_F), in
 * [0, 1], 1 for representations equal up to rotation and isotropic scale. */
#ifndef CAEM_ANALYSIS_H
#define CAEM_ANALYSIS_H

#include "error.h"
#include "model.h"
#include "task.h"

/* A new model with weight * a + (1 - weight) * b for every parameter. The
 * models must have the same config. */
int model_soup(struct model **out, const struct model *a, const struct model *b,
               double weight, struct caem_error *err);

/* Streaming sums for the linear CKA of one pair of representations. */
struct cka_sums {
    int dx, dy;
    long n;
    double *sx, *sy;           /* [dx], [dy] column sums */
    double *xx, *yy, *xy;      /* [dx, dx], [dy, dy], [dx, dy] sums of products */
};

int cka_sums_init(struct cka_sums *s, int dx, int dy, struct caem_error *err);
void cka_sums_free(struct cka_sums *s);

/* Adds n rows of x [n, dx] and y [n, dy] (host memory). */
void cka_sums_add(struct cka_sums *s, const float *x, const float *y, int n);

/* The linear CKA of the rows added so far; NaN before two rows or when a
 * representation is constant. */
double cka_sums_value(const struct cka_sums *s);

/* Linear CKA between a's and b's block outputs on the first `limit`
 * examples of tokens (0: all), real tokens only (encoder: not padding;
 * decoder: labelled positions, teacher-forced), in eval mode. values gets
 * one entry per block, the encoder's blocks first. The models may differ in
 * expert count but not in depth or width. */
int model_cka(struct model *a, struct model *b, const struct task_tokens *tokens, long limit,
              int batch_size, double *values, struct caem_error *err);

#endif
