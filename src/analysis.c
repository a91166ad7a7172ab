#include "analysis.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

int model_soup(struct model **out, const struct model *a, const struct model *b,
               double weight, struct caem_error *err)
{
    *out = NULL;
    if (a->layout.total != b->layout.total || a->layout.count != b->layout.count ||
        a->config.num_experts != b->config.num_experts ||
        a->config.vocab_size != b->config.vocab_size || a->config.d_model != b->config.d_model)
        return caem_fail(err, "a soup needs two models of the same shape; these have %zu and "
                         "%zu parameters", a->layout.total, b->layout.total);
    if (!(weight >= 0.0 && weight <= 1.0))
        return caem_fail(err, "invalid soup weight %g, expected a value in [0, 1]", weight);
    struct model *m = NULL;
    if (model_create(&m, &a->config, a->backend, err) != 0)
        return -1;
    size_t n = a->layout.total;
    float *x = malloc(n * sizeof *x), *y = malloc(n * sizeof *y);
    if (x == NULL || y == NULL) {
        free(x);
        free(y);
        model_free(m);
        return caem_fail(err, "out of memory for a soup of %zu parameters", n);
    }
    a->backend->download(x, a->params, n * sizeof *x);
    b->backend->download(y, b->params, n * sizeof *y);
    float wa = (float)weight, wb = (float)(1.0 - weight);
    for (size_t i = 0; i < n; i++)
        x[i] = wa * x[i] + wb * y[i];
    m->backend->upload(m->params, x, n * sizeof *x);
    free(x);
    free(y);
    *out = m;
    return 0;
}

int cka_sums_init(struct cka_sums *s, int dx, int dy, struct caem_error *err)
{
    memset(s, 0, sizeof *s);
    s->dx = dx;
    s->dy = dy;
    s->sx = calloc((size_t)dx, sizeof *s->sx);
    s->sy = calloc((size_t)dy, sizeof *s->sy);
    s->xx = calloc((size_t)dx * dx, sizeof *s->xx);
    s->yy = calloc((size_t)dy * dy, sizeof *s->yy);
    s->xy = calloc((size_t)dx * dy, sizeof *s->xy);
    if (s->sx == NULL || s->sy == NULL || s->xx == NULL || s->yy == NULL || s->xy == NULL) {
        cka_sums_free(s);
        return caem_fail(err, "out of memory for CKA sums of widths %d and %d", dx, dy);
    }
    return 0;
}

void cka_sums_free(struct cka_sums *s)
{
    free(s->sx);
    free(s->sy);
    free(s->xx);
    free(s->yy);
    free(s->xy);
    memset(s, 0, sizeof *s);
}

/* out[i, j] += sum over rows of a[r, i] b[r, j] */
static void add_products(double *out, const float *a, int da, const float *b, int db, int n)
{
#pragma omp parallel for schedule(static) if ((long)da * db * n > 1000000)
    for (int i = 0; i < da; i++)
        for (int r = 0; r < n; r++) {
            double ai = a[(size_t)r * da + i];
            const float *br = b + (size_t)r * db;
            double *row = out + (size_t)i * db;
            for (int j = 0; j < db; j++)
                row[j] += ai * br[j];
        }
}

void cka_sums_add(struct cka_sums *s, const float *x, const float *y, int n)
{
    for (int r = 0; r < n; r++) {
        for (int i = 0; i < s->dx; i++)
            s->sx[i] += x[(size_t)r * s->dx + i];
        for (int j = 0; j < s->dy; j++)
            s->sy[j] += y[(size_t)r * s->dy + j];
    }
    add_products(s->xx, x, s->dx, x, s->dx, n);
    add_products(s->yy, y, s->dy, y, s->dy, n);
    add_products(s->xy, x, s->dx, y, s->dy, n);
    s->n += n;
}

/* ||C||_F^2 of the centered product: C[i, j] = sum a_i b_j - n mean_a_i mean_b_j. */
static double centered_norm2(const double *sums, const double *sa, int da, const double *sb,
                             int db, long n)
{
    double total = 0.0;
    for (int i = 0; i < da; i++)
        for (int j = 0; j < db; j++) {
            double c = sums[(size_t)i * db + j] - sa[i] * sb[j] / (double)n;
            total += c * c;
        }
    return total;
}

double cka_sums_value(const struct cka_sums *s)
{
    if (s->n < 2)
        return NAN;
    double hxy = centered_norm2(s->xy, s->sx, s->dx, s->sy, s->dy, s->n);
    double hxx = centered_norm2(s->xx, s->sx, s->dx, s->sx, s->dx, s->n);
    double hyy = centered_norm2(s->yy, s->sy, s->dy, s->sy, s->dy, s->n);
    if (!(hxx > 0.0) || !(hyy > 0.0))
        return NAN;
    return hxy / (sqrt(hxx) * sqrt(hyy));
}

/* Copies the rows of src [n, d] whose mask is not 0 to dst; returns how many. */
static int gather_real(float *dst, const float *src, const int32_t *mask, int n, int d)
{
    int kept = 0;
    for (int r = 0; r < n; r++)
        if (mask == NULL || mask[r] != 0)
            memcpy(dst + (size_t)kept++ * d, src + (size_t)r * d, sizeof *dst * (size_t)d);
    return kept;
}

struct cka_run {
    int blocks;
    struct cka_sums *sums;
    float *xa, *xb, *ra, *rb; /* downloaded block outputs and their real rows */
    int32_t *decoder_mask;
};

static int cka_batch(struct model *a, struct model *b, const struct batch *batch,
                     struct cka_run *run, struct caem_error *err)
{
    struct model_losses la, lb;
    if (model_forward(a, batch, &la, err) != 0 || model_forward(b, batch, &lb, err) != 0)
        return -1;
    int D = a->config.d_model;
    size_t nd = (size_t)batch->batch_size * batch->decoder_length;
    for (size_t i = 0; i < nd; i++)
        run->decoder_mask[i] = batch->labels[i] != LABEL_IGNORE;
    int encoder_blocks = a->config.encoder_layers;
    for (int k = 0; k < run->blocks; k++) {
        int decoder = k >= encoder_blocks;
        int layer = decoder ? k - encoder_blocks : k;
        const float *oa, *ob;
        int n;
        if (model_block_output(a, decoder, layer, &oa, &n, err) != 0 ||
            model_block_output(b, decoder, layer, &ob, &n, err) != 0)
            return -1;
        a->backend->download(run->xa, oa, sizeof(float) * (size_t)n * D);
        b->backend->download(run->xb, ob, sizeof(float) * (size_t)n * D);
        const int32_t *mask = decoder ? run->decoder_mask : batch->attention_mask;
        int rows = gather_real(run->ra, run->xa, mask, n, D);
        gather_real(run->rb, run->xb, mask, n, D);
        cka_sums_add(&run->sums[k], run->ra, run->rb, rows);
    }
    return 0;
}

static void cka_run_free(struct cka_run *run)
{
    for (int k = 0; run->sums != NULL && k < run->blocks; k++)
        cka_sums_free(&run->sums[k]);
    free(run->sums);
    free(run->xa);
    free(run->xb);
    free(run->ra);
    free(run->rb);
    free(run->decoder_mask);
}

int model_cka(struct model *a, struct model *b, const struct task_tokens *tokens, long limit,
              int batch_size, double *values, struct caem_error *err)
{
    const struct model_config *ca = &a->config, *cb = &b->config;
    if (ca->d_model != cb->d_model || ca->encoder_layers != cb->encoder_layers ||
        ca->decoder_layers != cb->decoder_layers)
        return caem_fail(err, "CKA needs models of the same width and depth: %d x (%d + %d) "
                         "against %d x (%d + %d)", ca->d_model, ca->encoder_layers,
                         ca->decoder_layers, cb->d_model, cb->encoder_layers, cb->decoder_layers);
    if (tokens->count == 0)
        return caem_fail(err, "CKA needs at least one example");
    if (limit <= 0 || limit > tokens->count)
        limit = tokens->count;
    int D = ca->d_model;
    int max_length = tokens->max_input_length > tokens->max_target_length
                         ? tokens->max_input_length : tokens->max_target_length;
    size_t rows = (size_t)batch_size * max_length;
    struct cka_run run;
    memset(&run, 0, sizeof run);
    run.blocks = ca->encoder_layers + ca->decoder_layers;
    run.sums = calloc((size_t)run.blocks, sizeof *run.sums);
    run.xa = malloc(sizeof(float) * rows * D);
    run.xb = malloc(sizeof(float) * rows * D);
    run.ra = malloc(sizeof(float) * rows * D);
    run.rb = malloc(sizeof(float) * rows * D);
    run.decoder_mask = malloc(sizeof(int32_t) * rows);
    int status = 0;
    if (run.sums == NULL || run.xa == NULL || run.xb == NULL || run.ra == NULL ||
        run.rb == NULL || run.decoder_mask == NULL)
        status = caem_fail(err, "out of memory for CKA over batches of %d", batch_size);
    for (int k = 0; status == 0 && k < run.blocks; k++)
        status = cka_sums_init(&run.sums[k], D, D, err);

    int training_a = a->training, training_b = b->training;
    a->training = b->training = 0;
    struct task_batches it;
    memset(&it, 0, sizeof it);
    if (status == 0)
        status = task_batches_begin(&it, tokens, batch_size, TASK_BATCHES_SEQUENTIAL, 0, 0,
                                    err);
    long seen = 0;
    struct batch batch;
    while (status == 0 && seen < limit && task_batches_next(&it, &batch)) {
        if (seen + batch.batch_size > limit)
            batch.batch_size = (int)(limit - seen);
        status = cka_batch(a, b, &batch, &run, err);
        seen += batch.batch_size;
    }
    task_batches_end(&it);
    a->training = training_a;
    b->training = training_b;
    for (int k = 0; status == 0 && k < run.blocks; k++)
        values[k] = cka_sums_value(&run.sums[k]);
    cka_run_free(&run);
    return status;
}
