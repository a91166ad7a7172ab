/* The CPU backend's operations: finite-difference gradients of every
 * operation with a backward, and exact checks of the linear ones.
 *
 * Tolerance of the gradient checks: the losses are sums of at most a few
 * hundred float32 terms of order 1, accumulated in double, so their rounding
 * error is about 1e-6 in absolute terms; with eps = 1e-2 the central
 * difference carries about 1e-4 of that noise and a truncation error of order
 * eps^2 = 1e-4 relative to the curvature. Normalized by |g| |d| (see
 * gradcheck.h) the error of a correct gradient stays near 1e-4; the tests
 * allow 2e-3, while a missing or wrongly scaled term gives an error of order
 * 0.1 to 1. */
#include <float.h>
#include <stdlib.h>

#include "backend.h"
#include "gradcheck.h"
#include "rng.h"
#include "test.h"

#define GRAD_TOL 2e-3
#define EPS 1e-2f

static const struct backend *be;

static float *random_tensor(size_t n, uint64_t seed, float scale)
{
    float *x = malloc(sizeof(float) * n);
    for (size_t i = 0; i < n; i++)
        x[i] = scale * rng_normal(seed, i);
    return x;
}

static double weighted_sum(const float *y, const float *r, size_t n)
{
    return gradcheck_dot(y, r, n);
}

/* ---- rmsnorm ---- */

struct rmsnorm_case {
    int rows, d;
    float *x, *w, *r, *y, *rinv;
};

static double rmsnorm_loss(void *ctx)
{
    struct rmsnorm_case *c = ctx;
    be->rmsnorm_forward(c->x, c->w, c->rows, c->d, 1e-6f, c->y, c->rinv);
    return weighted_sum(c->y, c->r, (size_t)c->rows * c->d);
}

static void test_rmsnorm_gradients(void)
{
    struct rmsnorm_case c = { 5, 16, NULL, NULL, NULL, NULL, NULL };
    size_t n = (size_t)c.rows * c.d;
    c.x = random_tensor(n, 1, 1.0f);
    c.w = random_tensor(c.d, 2, 1.0f);
    c.r = random_tensor(n, 3, 1.0f);
    c.y = calloc(n, sizeof(float));
    c.rinv = calloc(c.rows, sizeof(float));
    float *dx = calloc(n, sizeof(float)), *dw = calloc(c.d, sizeof(float));
    float *d = malloc(sizeof(float) * n);

    rmsnorm_loss(&c);
    be->rmsnorm_backward(c.r, c.x, c.w, c.rinv, c.rows, c.d, dx, dw);
    gradcheck_direction(d, n, 10);
    double err_x = gradcheck_error(rmsnorm_loss, &c, c.x, dx, n, d, EPS);
    CHECK_MSG(err_x < GRAD_TOL, "input gradient error %.3g", err_x);
    gradcheck_direction(d, c.d, 11);
    double err_w = gradcheck_error(rmsnorm_loss, &c, c.w, dw, c.d, d, EPS);
    CHECK_MSG(err_w < GRAD_TOL, "weight gradient error %.3g", err_w);

    /* the forward itself: row 0 by hand */
    rmsnorm_loss(&c);
    double ms = 0.0;
    for (int j = 0; j < c.d; j++)
        ms += (double)c.x[j] * c.x[j];
    double inv = 1.0 / sqrt(ms / c.d + 1e-6);
    for (int j = 0; j < c.d; j++)
        CHECK_NEAR(c.y[j], c.w[j] * c.x[j] * inv, 1e-5);
    free(c.x), free(c.w), free(c.r), free(c.y), free(c.rinv), free(dx), free(dw), free(d);
}

/* ---- attention ---- */

struct attention_case {
    struct attention_shape s;
    float *q, *k, *v, *bias, *probs, *dropped, *ctx, *r;
    int32_t *mask;
    struct dropout_spec drop;
};

static double attention_loss(void *ctx)
{
    struct attention_case *c = ctx;
    be->attention_forward(&c->s, c->q, c->k, c->v, c->bias, c->mask, c->probs, c->dropped,
                          c->ctx, &c->drop);
    return weighted_sum(c->ctx, c->r, (size_t)c->s.batch * c->s.tq * c->s.ldc);
}

static void attention_gradients(int causal, int tq, int tk, float dropout)
{
    struct attention_case c;
    memset(&c, 0, sizeof c);
    int B = 2, H = 2, K = 3, HK = H * K;
    struct attention_shape s = { B, tq, tk, H, K, HK, HK, HK, HK, causal };
    c.s = s;
    size_t nq = (size_t)B * tq * HK, nk = (size_t)B * tk * HK;
    size_t plane = (size_t)B * H * tq * tk, nbias = (size_t)H * tq * tk;
    c.q = random_tensor(nq, 20, 1.0f);
    c.k = random_tensor(nk, 21, 1.0f);
    c.v = random_tensor(nk, 22, 1.0f);
    c.bias = random_tensor(nbias, 23, 1.0f);
    c.r = random_tensor(nq, 24, 1.0f);
    c.probs = calloc(plane, sizeof(float));
    c.dropped = calloc(plane, sizeof(float));
    c.ctx = calloc(nq, sizeof(float));
    c.mask = malloc(sizeof(int32_t) * B * tk);
    for (int i = 0; i < B * tk; i++)
        c.mask[i] = 1;
    c.mask[tk - 1] = 0; /* padding at the end of sequence 0 */
    c.drop.p = dropout;
    c.drop.seed = 77;
    c.drop.offset = 0;

    float *dq = calloc(nq, sizeof(float)), *dk = calloc(nk, sizeof(float));
    float *dv = calloc(nk, sizeof(float)), *dbias = calloc(nbias, sizeof(float));
    float *scratch = calloc(plane, sizeof(float));
    attention_loss(&c);

    /* masked keys get no weight; every row sums to 1 */
    for (int h = 0; h < H; h++)
        for (int i = 0; i < tq; i++) {
            const float *row = c.probs + ((size_t)h * tq + i) * tk;
            double sum = 0.0;
            for (int j = 0; j < tk; j++)
                sum += row[j];
            CHECK_NEAR(sum, 1.0, 1e-5);
            CHECK(row[tk - 1] == 0.0f);
            for (int j = i + 1; causal && j < tk; j++)
                CHECK(row[j] == 0.0f);
        }

    be->attention_backward(&c.s, c.q, c.k, c.v, c.probs, c.dropped, c.r, dq, dk, dv, dbias,
                           scratch, &c.drop);
    struct {
        float *x, *g;
        size_t n;
        const char *name;
    } inputs[] = {
        { c.q, dq, nq, "q" }, { c.k, dk, nk, "k" }, { c.v, dv, nk, "v" },
        { c.bias, dbias, nbias, "bias" },
    };
    float *d = malloc(sizeof(float) * nk * 2 + sizeof(float) * nbias);
    for (int i = 0; i < 4; i++) {
        gradcheck_direction(d, inputs[i].n, 30 + i);
        double err = gradcheck_error(attention_loss, &c, inputs[i].x, inputs[i].g, inputs[i].n,
                                     d, EPS);
        CHECK_MSG(err < GRAD_TOL, "gradient of %s: error %.3g", inputs[i].name, err);
    }
    free(d), free(dq), free(dk), free(dv), free(dbias), free(scratch);
    free(c.q), free(c.k), free(c.v), free(c.bias), free(c.r), free(c.probs), free(c.dropped);
    free(c.ctx), free(c.mask);
}

static void test_attention_self_gradients(void)
{
    attention_gradients(0, 4, 4, 0.0f);
}

static void test_attention_causal_gradients(void)
{
    attention_gradients(1, 5, 5, 0.0f);
}

static void test_attention_cross_gradients(void)
{
    attention_gradients(0, 3, 6, 0.0f);
}

static void test_attention_dropout_gradients(void)
{
    attention_gradients(0, 4, 5, 0.3f);
}

/* One query per sequence against a cache: each position of a causal
 * attention_forward, recomputed from a cache whose entries are longer than
 * the sequence (entry stride beyond tk), must give that position's row. */
static void test_attention_decode_matches_forward(void)
{
    int B = 2, H = 2, K = 3, HK = H * K, T = 5, P = 7;
    struct attention_shape s = { B, T, T, H, K, HK, HK, HK, HK, 1 };
    float *q = random_tensor((size_t)B * T * HK, 40, 1.0f);
    float *k = random_tensor((size_t)B * T * HK, 41, 1.0f);
    float *v = random_tensor((size_t)B * T * HK, 42, 1.0f);
    float *bias = random_tensor((size_t)H * T * T, 43, 1.0f);
    float *probs = calloc((size_t)B * H * T * T, sizeof(float));
    float *ctx = calloc((size_t)B * T * HK, sizeof(float));
    be->attention_forward(&s, q, k, v, bias, NULL, probs, NULL, ctx, NULL);

    /* cache [B, P, 2 HK]: key then value of each position */
    float *cache = calloc((size_t)B * P * 2 * HK, sizeof(float));
    for (int b = 0; b < B; b++)
        for (int t = 0; t < T; t++) {
            float *at = cache + ((size_t)b * P + t) * 2 * HK;
            memcpy(at, k + ((size_t)b * T + t) * HK, sizeof(float) * HK);
            memcpy(at + HK, v + ((size_t)b * T + t) * HK, sizeof(float) * HK);
        }
    float *q_step = malloc(sizeof(float) * B * HK);
    float *ctx_step = malloc(sizeof(float) * B * HK);
    float *bias_step = malloc(sizeof(float) * H * T);
    float *probs_step = malloc(sizeof(float) * B * H * T);
    for (int t = 0; t < T; t++) {
        for (int b = 0; b < B; b++)
            memcpy(q_step + b * HK, q + ((size_t)b * T + t) * HK, sizeof(float) * HK);
        for (int h = 0; h < H; h++)
            memcpy(bias_step + h * (t + 1), bias + ((size_t)h * T + t) * T,
                   sizeof(float) * (t + 1));
        struct decode_attention_shape ds = { B, t + 1, H, K, HK, 2 * HK, (size_t)P * 2 * HK,
                                             HK };
        be->attention_decode(&ds, q_step, cache, cache + HK, NULL, bias_step, NULL, probs_step,
                             ctx_step);
        for (int b = 0; b < B; b++) {
            for (int j = 0; j < HK; j++)
                CHECK_NEAR(ctx_step[b * HK + j], ctx[((size_t)b * T + t) * HK + j], 1e-5);
            for (int h = 0; h < H; h++)
                for (int j = 0; j <= t; j++)
                    CHECK_NEAR(probs_step[((size_t)b * H + h) * (t + 1) + j],
                               probs[(((size_t)b * H + h) * T + t) * T + j], 1e-6);
        }
    }
    free(q), free(k), free(v), free(bias), free(probs), free(ctx), free(cache);
    free(q_step), free(ctx_step), free(bias_step), free(probs_step);
}

/* Queries that read cache entries through a table, with a padding mask per
 * entry, against softmax attention computed in double. */
static void test_attention_decode_entries_mask(void)
{
    int n = 3, H = 2, K = 2, HK = H * K, Tk = 4, entries_count = 2;
    int32_t entries[3] = { 1, 0, 1 };
    int32_t mask[8] = { 1, 1, 1, 1, 1, 1, 0, 0 }; /* entry 1 ends in two padding keys */
    float *q = random_tensor((size_t)n * HK, 50, 1.0f);
    float *kv = random_tensor((size_t)entries_count * Tk * 2 * HK, 51, 1.0f);
    float probs[3 * 2 * 4], ctx[3 * 4];
    struct decode_attention_shape ds = { n, Tk, H, K, HK, 2 * HK, (size_t)Tk * 2 * HK, HK };
    be->attention_decode(&ds, q, kv, kv + HK, entries, NULL, mask, probs, ctx);
    for (int i = 0; i < n; i++)
        for (int h = 0; h < H; h++) {
            const float *base = kv + (size_t)entries[i] * Tk * 2 * HK + h * K;
            double w[4], max = -INFINITY, sum = 0.0;
            for (int j = 0; j < Tk; j++) {
                w[j] = 0.0;
                for (int c = 0; c < K; c++)
                    w[j] += (double)q[i * HK + h * K + c] * base[j * 2 * HK + c];
                if (mask[entries[i] * Tk + j] == 0)
                    w[j] = -INFINITY;
                max = fmax(max, w[j]);
            }
            for (int j = 0; j < Tk; j++)
                sum += w[j] = exp(w[j] - max);
            for (int j = 0; j < Tk; j++)
                CHECK_NEAR(probs[(i * H + h) * Tk + j], w[j] / sum, 1e-6);
            for (int c = 0; c < K; c++) {
                double expect = 0.0;
                for (int j = 0; j < Tk; j++)
                    expect += w[j] / sum * base[j * 2 * HK + HK + c];
                CHECK_NEAR(ctx[i * HK + h * K + c], expect, 1e-5);
            }
        }
    CHECK(probs[(0 * H + 0) * Tk + 3] == 0.0f); /* a padding key of entry 1 */
    free(q), free(kv);
}

/* ---- router: top-1 with capacity, combine, router probability ---- */

static void test_route_capacity_by_hand(void)
{
    /* two sequences of 4 tokens, 3 experts, capacity 2 */
    struct route_shape s = { 2, 4, 3, 2 };
    float logits[24] = {
        5, 0, 0,  4, 0, 0,  3, 0, 0,  0, 2, 0, /* sequence 0: 0, 0, 0 (dropped), 1 */
        0, 0, 1,  0, 0, 2,  0, 3, 0,  1, 1, 0, /* sequence 1: 2, 2, 1, 0 (tie: first) */
    };
    float probs[24], pmax[8];
    int32_t expert[8], kept[8], assigned[8], perm[8], slot_of[8];
    int offsets[4];
    int64_t kept_counts[3], dropped_counts[3];
    be->route_top1(&s, logits, 0, probs, expert, kept, assigned, pmax, perm, slot_of, offsets,
                   kept_counts, dropped_counts);
    int expect_expert[8] = { 0, 0, 0, 1, 2, 2, 1, 0 };
    int expect_kept[8] = { 1, 1, 0, 1, 1, 1, 1, 1 };
    for (int t = 0; t < 8; t++) {
        CHECK_INT_EQ(expert[t], expect_expert[t]);
        CHECK_INT_EQ(kept[t], expect_kept[t]);
        CHECK_INT_EQ(assigned[t], expect_kept[t] ? expect_expert[t] : 0);
    }
    CHECK_INT_EQ(kept_counts[0], 3);
    CHECK_INT_EQ(kept_counts[1], 2);
    CHECK_INT_EQ(kept_counts[2], 2);
    CHECK_INT_EQ(dropped_counts[0], 1);
    CHECK_INT_EQ(dropped_counts[1], 0);
    int expect_offsets[4] = { 0, 3, 5, 7 };
    for (int e = 0; e <= 3; e++)
        CHECK_INT_EQ(offsets[e], expect_offsets[e]);
    int expect_perm[7] = { 0, 1, 7, 3, 6, 4, 5 };
    for (int i = 0; i < 7; i++) {
        CHECK_INT_EQ(perm[i], expect_perm[i]);
        CHECK_INT_EQ(slot_of[perm[i]], i);
    }
    CHECK_INT_EQ(slot_of[2], -1);
    double e5 = exp(5.0);
    CHECK_NEAR(pmax[0], e5 / (e5 + 2.0), 1e-6);

    /* clean mode counts a skipped token nowhere */
    be->route_top1(&s, logits, -1, probs, expert, kept, assigned, pmax, perm, slot_of, offsets,
                   kept_counts, dropped_counts);
    CHECK_INT_EQ(assigned[2], -1);
}

struct moe_case {
    int n, d, experts, skip_identity;
    struct route_shape s;
    float *logits, *probs, *pmax, *y, *x, *out, *r;
    int32_t *expert, *kept, *assigned, *perm, *slot_of;
    int offsets[8];
    int64_t kept_counts[8], dropped_counts[8];
};

static double moe_loss(void *ctx)
{
    struct moe_case *c = ctx;
    be->route_top1(&c->s, c->logits, 0, c->probs, c->expert, c->kept, c->assigned, c->pmax,
                   c->perm, c->slot_of, c->offsets, c->kept_counts, c->dropped_counts);
    be->moe_combine(c->n, c->d, c->y, c->slot_of, c->pmax, c->x, c->skip_identity, c->out);
    return weighted_sum(c->out, c->r, (size_t)c->n * c->d);
}

static void moe_combine_gradients(int skip_identity)
{
    struct moe_case c;
    memset(&c, 0, sizeof c);
    c.n = 12;
    c.d = 5;
    c.experts = 3;
    c.skip_identity = skip_identity;
    struct route_shape s = { 2, 6, 3, 2 }; /* capacity 2 of 6 tokens: some skipped */
    c.s = s;
    size_t nd = (size_t)c.n * c.d, ne = (size_t)c.n * c.experts;
    /* logits with a clear winner per token so that eps does not change routing */
    c.logits = random_tensor(ne, 40, 0.3f);
    for (int t = 0; t < c.n; t++)
        c.logits[t * c.experts + (t % 4 == 3 ? 1 + t % 2 : 0)] += 2.0f;
    c.probs = calloc(ne, sizeof(float));
    c.pmax = calloc(c.n, sizeof(float));
    c.y = random_tensor(nd, 41, 1.0f);
    c.x = random_tensor(nd, 42, 1.0f);
    c.out = calloc(nd, sizeof(float));
    c.r = random_tensor(nd, 43, 1.0f);
    int32_t *ints = calloc((size_t)c.n * 5, sizeof(int32_t));
    c.expert = ints, c.kept = ints + c.n, c.assigned = ints + 2 * c.n;
    c.perm = ints + 3 * c.n, c.slot_of = ints + 4 * c.n;
    moe_loss(&c);
    int skipped = 0;
    for (int t = 0; t < c.n; t++)
        skipped += !c.kept[t];
    CHECK_MSG(skipped > 0, "the case should skip tokens beyond capacity");

    float *dy = calloc(nd, sizeof(float)), *dx = calloc(nd, sizeof(float));
    float *dpmax = calloc(c.n, sizeof(float)), *dlogits = calloc(ne, sizeof(float));
    be->moe_combine_backward(c.n, c.d, c.r, c.y, c.slot_of, c.pmax, c.x, skip_identity, dy, dx,
                             dpmax);
    be->router_pmax_backward(c.n, c.experts, c.probs, c.expert, dpmax, dlogits);
    float *d = malloc(sizeof(float) * nd);
    gradcheck_direction(d, ne, 50);
    double err = gradcheck_error(moe_loss, &c, c.logits, dlogits, ne, d, EPS / 10);
    CHECK_MSG(err < GRAD_TOL, "router logits gradient error %.3g", err);
    gradcheck_direction(d, nd, 51);
    err = gradcheck_error(moe_loss, &c, c.y, dy, nd, d, EPS);
    CHECK_MSG(err < GRAD_TOL, "expert output gradient error %.3g", err);
    gradcheck_direction(d, nd, 52);
    err = gradcheck_error(moe_loss, &c, c.x, dx, nd, d, EPS);
    CHECK_MSG(err < GRAD_TOL, "skipped-token input gradient error %.3g", err);
    /* a skipped token contributes pmax * x (parity) or nothing (clean) */
    moe_loss(&c);
    for (int t = 0; t < c.n; t++) {
        float expect = skip_identity ? c.pmax[t] * c.x[t * c.d] : 0.0f;
        if (!c.kept[t])
            CHECK_NEAR(c.out[t * c.d], expect, 1e-6);
    }
    free(d), free(dy), free(dx), free(dpmax), free(dlogits), free(ints);
    free(c.logits), free(c.probs), free(c.pmax), free(c.y), free(c.x), free(c.out), free(c.r);
}

static void test_moe_combine_parity_gradients(void)
{
    moe_combine_gradients(1);
}

static void test_moe_combine_clean_gradients(void)
{
    moe_combine_gradients(0);
}

/* ---- router losses ---- */

struct logits_case {
    int n, experts, batch, tokens;
    float *logits, *probs;
    int32_t *assigned;
    float *scratch;
};

static double z_loss(void *ctx)
{
    struct logits_case *c = ctx;
    memset(c->scratch, 0, sizeof(float) * c->n * c->experts);
    return be->router_z_loss(c->n, c->experts, c->logits, 0.0, c->scratch);
}

static void test_router_z_loss_gradients(void)
{
    struct logits_case c = { 10, 4, 0, 0, NULL, NULL, NULL, NULL };
    size_t ne = (size_t)c.n * c.experts;
    c.logits = random_tensor(ne, 60, 2.0f);
    c.scratch = calloc(ne, sizeof(float));
    float *g = calloc(ne, sizeof(float)), *d = malloc(sizeof(float) * ne);
    double value = be->router_z_loss(c.n, c.experts, c.logits, 1.0, g);
    /* by hand: sum of logsumexp^2 */
    double expect = 0.0;
    for (int t = 0; t < c.n; t++) {
        double s = 0.0;
        for (int e = 0; e < c.experts; e++)
            s += exp(c.logits[t * c.experts + e]);
        expect += log(s) * log(s);
    }
    CHECK_NEAR(value, expect, 1e-6 * expect);
    gradcheck_direction(d, ne, 61);
    double err = gradcheck_error(z_loss, &c, c.logits, g, ne, d, EPS);
    CHECK_MSG(err < GRAD_TOL, "z-loss gradient error %.3g", err);
    free(c.logits), free(c.scratch), free(g), free(d);
}

/* The load-balancing loss for fixed assignments: E/B sum_be f_be P_be with
 * P the mean softmax probability, differentiated through the softmax only. */
static double balance_loss(void *ctx)
{
    struct logits_case *c = ctx;
    int B = c->batch, T = c->tokens, E = c->experts;
    for (int t = 0; t < c->n; t++) {
        const float *l = c->logits + (size_t)t * E;
        double s = 0.0;
        for (int e = 0; e < E; e++)
            s += exp(l[e]);
        for (int e = 0; e < E; e++)
            c->probs[(size_t)t * E + e] = (float)(exp(l[e]) / s);
    }
    double *counts = calloc((size_t)B * E, sizeof(double));
    double *sums = calloc((size_t)B * E, sizeof(double));
    be->balance_accumulate(B, T, E, c->probs, c->assigned, counts, sums);
    double loss = 0.0;
    for (int i = 0; i < B * E; i++)
        loss += (counts[i] / T) * (sums[i] / T);
    free(counts), free(sums);
    return loss * E / B;
}

static void test_balance_loss_gradients(void)
{
    struct logits_case c = { 12, 3, 2, 6, NULL, NULL, NULL, NULL };
    size_t ne = (size_t)c.n * c.experts;
    c.logits = random_tensor(ne, 70, 1.0f);
    c.probs = calloc(ne, sizeof(float));
    c.assigned = malloc(sizeof(int32_t) * c.n);
    for (int t = 0; t < c.n; t++)
        c.assigned[t] = t % 4 == 3 ? -1 : t % c.experts; /* some tokens count nowhere */
    balance_loss(&c);
    double counts[6] = { 0 }, sums[6] = { 0 }, dprob[6];
    be->balance_accumulate(c.batch, c.tokens, c.experts, c.probs, c.assigned, counts, sums);
    CHECK_NEAR(counts[0] + counts[1] + counts[2], 5.0, 0); /* 6 tokens, one uncounted */
    for (int i = 0; i < 6; i++)
        dprob[i] = (double)c.experts / c.batch * (counts[i] / c.tokens) / c.tokens;
    float *g = calloc(ne, sizeof(float)), *d = malloc(sizeof(float) * ne);
    be->balance_backward(c.batch, c.tokens, c.experts, c.probs, dprob, g);
    gradcheck_direction(d, ne, 71);
    double err = gradcheck_error(balance_loss, &c, c.logits, g, ne, d, EPS);
    CHECK_MSG(err < GRAD_TOL, "load-balancing gradient error %.3g", err);
    free(c.logits), free(c.probs), free(c.assigned), free(g), free(d);
}

/* ---- cross-entropy ---- */

struct ce_case {
    int n, vocab;
    float *logits, *scratch;
    int32_t *labels;
};

static double ce_loss(void *ctx)
{
    struct ce_case *c = ctx;
    return be->cross_entropy(c->n, c->vocab, c->logits, c->labels, 1.0f, c->scratch);
}

static void test_cross_entropy_gradients(void)
{
    struct ce_case c = { 6, 7, NULL, NULL, NULL };
    size_t n = (size_t)c.n * c.vocab;
    c.logits = random_tensor(n, 80, 2.0f);
    c.scratch = calloc(n, sizeof(float));
    int32_t labels[6] = { 0, 3, -100, 6, 2, -100 };
    c.labels = labels;
    float *g = calloc(n, sizeof(float)), *d = malloc(sizeof(float) * n);
    double value = be->cross_entropy(c.n, c.vocab, c.logits, c.labels, 1.0f, g);
    double expect = 0.0;
    for (int t = 0; t < c.n; t++) {
        if (labels[t] < 0)
            continue;
        double s = 0.0;
        for (int j = 0; j < c.vocab; j++)
            s += exp(c.logits[t * c.vocab + j]);
        expect += log(s) - c.logits[t * c.vocab + labels[t]];
    }
    CHECK_NEAR(value, expect, 1e-6 * expect);
    for (int j = 0; j < c.vocab; j++)
        CHECK(g[2 * c.vocab + j] == 0.0f); /* ignored row */
    gradcheck_direction(d, n, 81);
    double err = gradcheck_error(ce_loss, &c, c.logits, g, n, d, EPS);
    CHECK_MSG(err < GRAD_TOL, "cross-entropy gradient error %.3g", err);
    free(c.logits), free(c.scratch), free(g), free(d);
}

/* ---- linear operations, checked exactly ---- */

static void test_embedding_gather_scatter(void)
{
    float table[12] = { 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11 }; /* 4 rows of 3 */
    int32_t ids[3] = { 2, 0, 2 };
    float out[9], dtable[12] = { 0 };
    be->embedding_forward(table, ids, 3, 3, out);
    float expect_out[9] = { 6, 7, 8, 0, 1, 2, 6, 7, 8 };
    for (int i = 0; i < 9; i++)
        CHECK_NEAR(out[i], expect_out[i], 0);
    float dout[9] = { 1, 1, 1, 2, 2, 2, 3, 3, 3 };
    be->embedding_backward(dout, ids, 3, 3, dtable);
    CHECK_NEAR(dtable[6], 4.0f, 0); /* rows 0 and 2 of dout */
    CHECK_NEAR(dtable[0], 2.0f, 0);
    CHECK_NEAR(dtable[3], 0.0f, 0);
}

static void test_position_bias_gather_scatter(void)
{
    float table[6] = { 1, 10, 2, 20, 3, 30 }; /* 3 buckets x 2 heads */
    int32_t buckets[4] = { 0, 2, 1, 0 };      /* 2 x 2 */
    float bias[8], dtable[6] = { 0 };
    be->position_bias_forward(table, buckets, 2, 2, 2, bias);
    float expect[8] = { 1, 3, 2, 1, 10, 30, 20, 10 };
    for (int i = 0; i < 8; i++)
        CHECK_NEAR(bias[i], expect[i], 0);
    float dbias[8] = { 1, 1, 1, 1, 1, 1, 1, 1 };
    be->position_bias_backward(dbias, buckets, 2, 2, 2, dtable);
    float expect_table[6] = { 2, 2, 1, 1, 1, 1 };
    for (int i = 0; i < 6; i++)
        CHECK_NEAR(dtable[i], expect_table[i], 0);
}

static void test_grouped_gemm_matches_loops(void)
{
    int groups = 3, n = 4, k = 5;
    int offsets[4] = { 0, 2, 2, 5 }; /* group 1 empty */
    int rows = offsets[groups];
    size_t stride = 32; /* > n * k, as when tensors are padded */
    float *a = random_tensor((size_t)rows * k, 90, 1.0f);
    float *w = random_tensor(stride * groups, 91, 1.0f);
    float *c = calloc((size_t)rows * n, sizeof(float));
    be->grouped_gemm_nt(groups, offsets, n, k, a, w, stride, c);
    for (int g = 0; g < groups; g++)
        for (int r = offsets[g]; r < offsets[g + 1]; r++)
            for (int j = 0; j < n; j++) {
                double s = 0.0;
                for (int i = 0; i < k; i++)
                    s += (double)a[r * k + i] * w[g * stride + j * k + i];
                CHECK_NEAR(c[r * n + j], s, 1e-5);
            }
    /* nn: C_rows (rows x k) = A_rows (rows x n) * W_g (n x k) */
    float *a2 = random_tensor((size_t)rows * n, 92, 1.0f);
    float *c2 = calloc((size_t)rows * k, sizeof(float));
    be->grouped_gemm_nn(groups, offsets, k, n, a2, w, stride, c2);
    for (int g = 0; g < groups; g++)
        for (int r = offsets[g]; r < offsets[g + 1]; r++)
            for (int j = 0; j < k; j++) {
                double s = 0.0;
                for (int i = 0; i < n; i++)
                    s += (double)a2[r * n + i] * w[g * stride + i * k + j];
                CHECK_NEAR(c2[r * k + j], s, 1e-5);
            }
    /* tn: dW_g (n x k) += dY_rows^T (n x rows) X_rows (rows x k) */
    float *dw = calloc(stride * groups, sizeof(float));
    be->grouped_gemm_tn(groups, offsets, n, k, a2, a, dw, stride);
    for (int g = 0; g < groups; g++)
        for (int i = 0; i < n; i++)
            for (int j = 0; j < k; j++) {
                double s = 0.0;
                for (int r = offsets[g]; r < offsets[g + 1]; r++)
                    s += (double)a2[r * n + i] * a[r * k + j];
                CHECK_NEAR(dw[g * stride + i * k + j], s, 1e-5);
            }
    CHECK(dw[stride + 0] == 0.0f); /* the empty group is untouched */
    free(a), free(w), free(c), free(a2), free(c2), free(dw);
}

static void test_gather_scatter_rows(void)
{
    float src[8] = { 0, 1, 10, 11, 20, 21, 30, 31 }; /* 4 rows of 2 */
    int32_t perm[3] = { 3, 0, 2 };
    float gathered[6], dst[8] = { 0 };
    be->gather_rows(src, perm, 3, 2, gathered);
    float expect[6] = { 30, 31, 0, 1, 20, 21 };
    for (int i = 0; i < 6; i++)
        CHECK_NEAR(gathered[i], expect[i], 0);
    be->scatter_add_rows(gathered, perm, 3, 2, dst);
    be->scatter_add_rows(gathered, perm, 3, 2, dst);
    CHECK_NEAR(dst[6], 60.0f, 0); /* row 3 twice */
    CHECK_NEAR(dst[1], 2.0f, 0);
    CHECK_NEAR(dst[2], 0.0f, 0); /* row 1 untouched */
}

static void test_relu_forward_backward(void)
{
    float x[5] = { -2.0f, -0.0f, 0.0f, 0.5f, 3.0f };
    float dy[5] = { 1, 1, 1, 1, 1 };
    be->relu_forward(x, 5, NULL);
    float expect_x[5] = { 0, 0, 0, 0.5f, 3.0f };
    for (int i = 0; i < 5; i++)
        CHECK_NEAR(x[i], expect_x[i], 0);
    be->relu_backward(x, dy, 5, 2.0f);
    float expect[5] = { 0, 0, 0, 2, 2 };
    for (int i = 0; i < 5; i++)
        CHECK_NEAR(dy[i], expect[i], 0);
}

static void test_dropout_variants_agree(void)
{
    size_t n = 10000;
    float *x = random_tensor(n, 95, 1.0f), *y = random_tensor(n, 96, 1.0f);
    float *in_place = malloc(sizeof(float) * n), *copied = malloc(sizeof(float) * n);
    float *added = malloc(sizeof(float) * n);
    struct dropout_spec spec = { 0.3f, 17, 12345 };
    memcpy(in_place, y, sizeof(float) * n);
    be->dropout(in_place, n, &spec);
    be->dropout_copy(copied, y, n, &spec);
    be->dropout_add(added, x, y, n, &spec);
    int mismatches = 0;
    for (size_t i = 0; i < n; i++) {
        mismatches += in_place[i] != copied[i];
        mismatches += added[i] != x[i] + in_place[i];
    }
    CHECK_INT_EQ(mismatches, 0);
    /* an offset into the stream selects the same mask as a slice */
    float *tail = malloc(sizeof(float) * (n - 100));
    struct dropout_spec shifted = { 0.3f, 17, 12345 + 100 };
    be->dropout_copy(tail, y + 100, n - 100, &shifted);
    CHECK(memcmp(tail, copied + 100, sizeof(float) * (n - 100)) == 0);
    /* p = 0 copies and adds unchanged */
    struct dropout_spec none = { 0.0f, 17, 0 };
    be->dropout_add(added, x, y, n, &none);
    CHECK_NEAR(added[7], x[7] + y[7], 0);
    free(x), free(y), free(in_place), free(copied), free(added), free(tail);
}

static void test_dropout_mask_and_scale(void)
{
    size_t n = 20000;
    float *x = malloc(sizeof(float) * n), *y = malloc(sizeof(float) * n);
    for (size_t i = 0; i < n; i++)
        x[i] = y[i] = 1.0f;
    struct dropout_spec spec = { 0.25f, 5, 100 };
    be->dropout(x, n, &spec);
    be->dropout(y, n, &spec);
    size_t zeros = 0;
    for (size_t i = 0; i < n; i++) {
        CHECK(x[i] == y[i]); /* the same mask again, so backward can regenerate it */
        if (x[i] == 0.0f)
            zeros++;
        else
            CHECK_NEAR(x[i], 1.0f / 0.75f, 1e-6);
    }
    /* binomial: mean 5000, standard deviation 61; 5 sigma */
    CHECK_NEAR((double)zeros, 5000.0, 310.0);
    free(x), free(y);
}

static void test_jitter_range_and_inverse(void)
{
    size_t n = 1000;
    float *x = malloc(sizeof(float) * n);
    for (size_t i = 0; i < n; i++)
        x[i] = 2.0f;
    be->jitter(x, n, 0.01f, 9, 0, 0);
    for (size_t i = 0; i < n; i++)
        CHECK_NEAR(x[i], 2.0f, 2.0f * 0.01f);
    be->jitter(x, n, 0.01f, 9, 0, 1);
    for (size_t i = 0; i < n; i++)
        CHECK_NEAR(x[i], 2.0f, 1e-6);
    free(x);
}

static void test_adamw_single_value(void)
{
    /* two steps of torch.optim.AdamW's formula, by hand in double */
    float p = 0.5f, m = 0.0f, v = 0.0f;
    float grads[2] = { 0.2f, -0.1f };
    double ep = 0.5, em = 0.0, ev = 0.0;
    double lr = 1e-2, b1 = 0.9, b2 = 0.98, eps = 1e-6, wd = 0.1;
    for (int step = 1; step <= 2; step++) {
        be->adamw(&p, &grads[step - 1], &m, &v, 1, (float)lr, (float)b1, (float)b2, (float)eps,
                  (float)wd, step);
        double g = grads[step - 1];
        ep *= 1.0 - lr * wd;
        em = b1 * em + (1 - b1) * g;
        ev = b2 * ev + (1 - b2) * g * g;
        double denom = sqrt(ev) / sqrt(1 - pow(b2, step)) + eps;
        ep -= lr / (1 - pow(b1, step)) * em / denom;
        CHECK_NEAR(p, ep, 1e-6);
    }
}

int main(void)
{
    TEST_SUITE("ops");
    be = backend_cpu();
    RUN_TEST(rmsnorm_gradients);
    RUN_TEST(attention_self_gradients);
    RUN_TEST(attention_causal_gradients);
    RUN_TEST(attention_cross_gradients);
    RUN_TEST(attention_dropout_gradients);
    RUN_TEST(attention_decode_matches_forward);
    RUN_TEST(attention_decode_entries_mask);
    RUN_TEST(route_capacity_by_hand);
    RUN_TEST(moe_combine_parity_gradients);
    RUN_TEST(moe_combine_clean_gradients);
    RUN_TEST(router_z_loss_gradients);
    RUN_TEST(balance_loss_gradients);
    RUN_TEST(cross_entropy_gradients);
    RUN_TEST(embedding_gather_scatter);
    RUN_TEST(position_bias_gather_scatter);
    RUN_TEST(grouped_gemm_matches_loops);
    RUN_TEST(gather_scatter_rows);
    RUN_TEST(relu_forward_backward);
    RUN_TEST(dropout_variants_agree);
    RUN_TEST(dropout_mask_and_scale);
    RUN_TEST(jitter_range_and_inverse);
    RUN_TEST(adamw_single_value);
    TEST_MAIN_END();
}
