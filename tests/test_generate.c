/* Generation: greedy and beam search against Hugging Face transformers 4.46.3.
 *
 * Each fixture tests/fixtures/generate_<name>.safetensors (made by
 * tools/make_generate_fixtures.py) goes with the parity fixture of the same
 * name, whose parameters it loads, and replaces the tensor whose EOS row it
 * scaled. It contains a padded batch of inputs and, for each case listed in its
 * metadata, generate()'s output sequences and the beam search's sequence scores
 * or the greedy rows' log-likelihoods. The tests require the same tokens,
 * position for position, and scores within SCORE_TOLERANCE.
 *
 * The model runs with dropout 0.1 and router jitter 0.01 in train mode, which
 * would change every number if model_generate did not switch to eval mode.
 *
 * The cached decoder is also checked against the teacher-forced forward pass.
 * The logits of each step must equal the corresponding row of model_forward's
 * logits within STEP_TOLERANCE relative to their largest magnitude. That holds
 * also after the cache was reordered as beam search reorders it. */
#include <jansson.h>
#include <stdlib.h>

#include "config.h"
#include "generate.h"
#include "hf_names.h"
#include "model.h"
#include "model_internal.h"
#include "safetensors.h"
#include "test.h"
#include "usage.h"

/* Both sides compute in float32. A beam score is a mean of log-probabilities
 * that differ by float rounding of the logits, about 1e-6 each. */
#define SCORE_TOLERANCE 1e-4
/* One step and the teacher-forced row run the same operations on matrices of
 * different shapes, which changes only the order of float summation. */
#define STEP_TOLERANCE 1e-5

static const char *fixture_names[] = { "step2_e4_tied", "step3_e8_untied", "capacity_drop",
                                       "step1_all_moe" };

struct fixture {
    struct safetensors *parity, *generate;
    struct model_config cfg;
    int B, Te;
    int32_t *input_ids, *mask;
};

static const char *fixture_path(const char *kind, const char *name)
{
    static char path[1024];
    const char *root = getenv("CAEM_ROOT");
    snprintf(path, sizeof path, "%s/tests/fixtures/%s_%s.safetensors",
             root != NULL ? root : ".", kind, name);
    return path;
}

/* Reads a 2-D I64 tensor as int32; NULL when it is missing. */
static int32_t *read_ids(struct safetensors *st, const char *name, int *rows, int *cols)
{
    const struct st_tensor *t = safetensors_find(st, name);
    CHECK_MSG(t != NULL && t->ndim == 2, "fixture tensor %s missing or not 2-D", name);
    if (t == NULL || t->ndim != 2)
        return NULL;
    *rows = (int)t->shape[0];
    *cols = (int)t->shape[1];
    int64_t *wide = malloc(sizeof(int64_t) * t->count);
    int32_t *ids = malloc(sizeof(int32_t) * t->count);
    struct caem_error err;
    CHECK_MSG(safetensors_read_i64(st, name, wide, t->count, &err) == 0, "%s", err.message);
    for (size_t i = 0; i < t->count; i++)
        ids[i] = (int32_t)wide[i];
    free(wide);
    return ids;
}

static int fixture_open(struct fixture *f, const char *name)
{
    struct caem_error err;
    memset(f, 0, sizeof *f);
    if (safetensors_open(&f->parity, fixture_path("parity", name), &err) != 0 ||
        safetensors_open(&f->generate, fixture_path("generate", name), &err) != 0) {
        printf("  %s\n", err.message);
        return -1;
    }
    const char *json = safetensors_metadata(f->parity, "config");
    config_preset(&f->cfg, "tiny", &err);
    if (json == NULL || config_from_json(&f->cfg, json, &err) != 0) {
        printf("  config: %s\n", json == NULL ? "missing" : err.message);
        return -1;
    }
    /* Eval mode must make these irrelevant (see the file comment). */
    f->cfg.dropout_rate = 0.1f;
    f->cfg.router_jitter_noise = 0.01f;
    int rows, cols;
    f->input_ids = read_ids(f->generate, "input.input_ids", &f->B, &f->Te);
    f->mask = read_ids(f->generate, "input.attention_mask", &rows, &cols);
    return f->input_ids != NULL && f->mask != NULL ? 0 : -1;
}

static void fixture_close(struct fixture *f)
{
    safetensors_close(f->parity);
    safetensors_close(f->generate);
    free(f->input_ids);
    free(f->mask);
}

/* Loads every "param.<hf name>" tensor of st into the model. */
static int load_params_from(struct safetensors *st, struct model *m)
{
    struct caem_error err;
    int loaded = 0;
    for (int i = 0; i < safetensors_count(st); i++) {
        const struct st_tensor *t = safetensors_at(st, i);
        if (strncmp(t->name, "param.", 6) != 0)
            continue;
        char name[PARAM_NAME_MAX];
        if (hf_name_to_param(&m->config, t->name + 6, name, sizeof name, &err) != 0) {
            CHECK_MSG(0, "%s", err.message);
            return -1;
        }
        const struct param_info *p = param_find(&m->layout, name);
        CHECK_MSG(p != NULL, "no tensor %s for %s", name, t->name);
        if (p == NULL)
            return -1;
        if (safetensors_read_f32(st, t->name, m->params + p->offset, p->count, &err) != 0) {
            CHECK_MSG(0, "%s", err.message);
            return -1;
        }
        loaded++;
    }
    return loaded;
}

/* Creates the fixture's model: the parity parameters, then the generation
 * fixture's replaced tensor. */
static struct model *fixture_model(struct fixture *f)
{
    struct caem_error err;
    struct model *m = NULL;
    if (model_create(&m, &f->cfg, backend_cpu(), &err) != 0) {
        CHECK_MSG(0, "%s", err.message);
        return NULL;
    }
    int parity = load_params_from(f->parity, m);
    int replaced = load_params_from(f->generate, m);
    CHECK_MSG(parity > 0 && replaced == 1, "loaded %d parity tensors and %d replaced ones, "
              "expected some and 1", parity, replaced);
    if (parity <= 0 || replaced != 1) {
        model_free(m);
        return NULL;
    }
    return m;
}

/* The options of one case from the fixture's "cases" metadata. */
static int case_options(json_t *c, struct generate_options *o, const char **name)
{
    *o = (struct generate_options){ 1, 20, 1.0f, 0, 1.0f, 0 };
    *name = json_string_value(json_object_get(c, "name"));
    json_t *v;
    if (*name == NULL || !json_is_integer(json_object_get(c, "num_beams")) ||
        !json_is_integer(json_object_get(c, "max_length")))
        return -1;
    o->num_beams = (int)json_integer_value(json_object_get(c, "num_beams"));
    o->max_length = (int)json_integer_value(json_object_get(c, "max_length"));
    o->repetition_penalty = (float)json_number_value(json_object_get(c, "repetition_penalty"));
    o->no_repeat_ngram_size = (int)json_integer_value(json_object_get(c, "no_repeat_ngram_size"));
    if ((v = json_object_get(c, "length_penalty")) != NULL)
        o->length_penalty = (float)json_number_value(v);
    if ((v = json_object_get(c, "early_stopping")) != NULL)
        o->early_stopping = json_is_true(v);
    return 0;
}

/* The generated part of an output row of transformers: after the start
 * token, up to and including the first EOS. Returns its length. */
static int reference_row(const int32_t *row, int L, int eos, int pad, int *padding_ok)
{
    *padding_ok = 1;
    for (int t = 1; t < L; t++)
        if (row[t] == eos) {
            for (int u = t + 1; u < L; u++)
                *padding_ok = *padding_ok && row[u] == pad;
            return t;
        }
    return L - 1;
}

/* Compares one case's rows with the reference; returns the worst score error. */
static double check_case(struct fixture *f, struct model *m, const char *fixture,
                         const char *case_name, const struct generate_options *o)
{
    struct caem_error err;
    char name[128];
    int rows, L;
    snprintf(name, sizeof name, "%s.sequences", case_name);
    int32_t *ref = read_ids(f->generate, name, &rows, &L);
    if (ref == NULL)
        return INFINITY;
    CHECK_INT_EQ(rows, f->B);
    int beam = o->num_beams > 1;
    snprintf(name, sizeof name, "%s.%s", case_name, beam ? "sequence_scores" : "log_likelihood");
    float *ref_scores = malloc(sizeof(float) * (size_t)rows);
    CHECK_MSG(safetensors_read_f32(f->generate, name, ref_scores, (size_t)rows, &err) == 0,
              "%s", err.message);

    struct generate_output out;
    m->training = 1;
    int status = model_generate(m, f->input_ids, f->mask, f->B, f->Te, o, &out, NULL, &err);
    CHECK_MSG(status == 0, "%s/%s: %s", fixture, case_name, err.message);
    CHECK_INT_EQ(m->training, 1);
    double worst = 0.0;
    int ended = 0, reached = 0;
    for (int r = 0; status == 0 && r < rows; r++) {
        const int32_t *row = ref + (size_t)r * L;
        int padding_ok;
        int n = reference_row(row, L, m->config.eos_token_id, m->config.pad_token_id,
                              &padding_ok);
        CHECK_MSG(padding_ok, "%s/%s row %d: reference has non-padding after EOS", fixture,
                  case_name, r);
        int differ = -1;
        for (int t = 0; t < n && t < out.lengths[r] && differ < 0; t++)
            if (out.ids[r][t] != row[t + 1])
                differ = t;
        if (differ < 0 && out.lengths[r] != n)
            differ = n < out.lengths[r] ? n : out.lengths[r];
        CHECK_MSG(differ < 0, "%s/%s row %d: first difference at generated position %d: ours "
                  "%d, reference %d (lengths %d and %d)", fixture, case_name, r, differ,
                  differ < out.lengths[r] ? out.ids[r][differ] : -1,
                  differ < n ? row[differ + 1] : -1, out.lengths[r], n);
        double diff = fabs(out.scores[r] - ref_scores[r]);
        double allowed = SCORE_TOLERANCE * (beam ? 1.0 : fmax(1.0, fabs(ref_scores[r])));
        CHECK_MSG(diff <= allowed, "%s/%s row %d: score %.9g, reference %.9g", fixture,
                  case_name, r, out.scores[r], (double)ref_scores[r]);
        if (beam && diff > worst)
            worst = diff;
        if (out.lengths[r] > 0 && out.ids[r][out.lengths[r] - 1] == m->config.eos_token_id)
            ended++;
        else
            reached++;
    }
    printf("  %s/%s: %d rows, %d ended by EOS, %d reached max_length %d\n", fixture, case_name,
           rows, ended, reached, o->max_length);
    generate_output_free(&out);
    free(ref);
    free(ref_scores);
    return worst;
}

static void run_fixture(const char *fixture)
{
    struct fixture f;
    if (fixture_open(&f, fixture) != 0) {
        CHECK_MSG(0, "cannot open fixture %s", fixture);
        fixture_close(&f);
        return;
    }
    struct model *m = fixture_model(&f);
    const char *cases_json = safetensors_metadata(f.generate, "cases");
    json_error_t jerr;
    json_t *cases = cases_json != NULL ? json_loads(cases_json, 0, &jerr) : NULL;
    CHECK_MSG(json_is_array(cases) && json_array_size(cases) > 0,
              "fixture %s has no cases in its metadata", fixture);
    double worst = 0.0;
    for (size_t i = 0; m != NULL && json_is_array(cases) && i < json_array_size(cases); i++) {
        struct generate_options o;
        const char *name;
        if (case_options(json_array_get(cases, i), &o, &name) != 0) {
            CHECK_MSG(0, "case %zu of %s is malformed", i, fixture);
            continue;
        }
        double w = check_case(&f, m, fixture, name, &o);
        worst = w > worst ? w : worst;
    }
    printf("  %s: worst beam score difference %.3g\n", fixture, worst);
    json_decref(cases);
    model_free(m);
    fixture_close(&f);
}

static void test_step2_e4_tied(void) { run_fixture(fixture_names[0]); }
static void test_step3_e8_untied(void) { run_fixture(fixture_names[1]); }
static void test_capacity_drop(void) { run_fixture(fixture_names[2]); }
static void test_step1_all_moe(void) { run_fixture(fixture_names[3]); }

/* ---- the cached step against the teacher-forced forward ---- */

/* max |a - ref| / max |ref| over n values. */
static double relative_error(const float *a, const float *ref, size_t n)
{
    double max_diff = 0.0, max_ref = 0.0;
    for (size_t i = 0; i < n; i++) {
        double d = fabs((double)a[i] - ref[i]);
        if (!(d <= max_diff))
            max_diff = isnan(d) ? INFINITY : d;
        max_ref = fmax(max_ref, fabs(ref[i]));
    }
    return max_ref > 0.0 ? max_diff / max_ref : max_diff;
}

/* Teacher-forced logits of decoder rows [R, Td] over the fixture's inputs,
 * decoder row j reading input row j / per_input. Returns host [R * Td, V]. */
static float *full_logits(struct fixture *f, struct model *m, const int32_t *decoder_ids,
                          int per_input, int Td)
{
    int R = f->B * per_input, Te = f->Te, V = m->config.vocab_size;
    int32_t *ids = malloc(sizeof(int32_t) * (size_t)R * Te);
    int32_t *mask = malloc(sizeof(int32_t) * (size_t)R * Te);
    for (int j = 0; j < R; j++) {
        memcpy(ids + (size_t)j * Te, f->input_ids + (size_t)(j / per_input) * Te,
               sizeof(int32_t) * Te);
        memcpy(mask + (size_t)j * Te, f->mask + (size_t)(j / per_input) * Te,
               sizeof(int32_t) * Te);
    }
    struct batch b = { R, Te, Td, ids, mask, decoder_ids, NULL };
    struct model_losses l;
    struct caem_error err;
    float *logits = NULL;
    m->training = 0;
    if (model_forward(m, &b, &l, &err) == 0) {
        logits = malloc(sizeof(float) * (size_t)R * Td * V);
        memcpy(logits, model_logits(m), sizeof(float) * (size_t)R * Td * V);
    } else {
        CHECK_MSG(0, "%s", err.message);
    }
    free(ids);
    free(mask);
    return logits;
}

/* Decodes two sequences per input row with the cache and compares every
 * step with the teacher-forced logits. After step `swap_at` each pair of
 * slots trades caches, and after step `copy_at` the second slot of each pair
 * takes a copy of the first's, as beam search reorders beams. */
static void check_steps(const char *fixture, int swap_at, int copy_at)
{
    struct fixture f;
    if (fixture_open(&f, fixture) != 0) {
        CHECK_MSG(0, "cannot open fixture %s", fixture);
        fixture_close(&f);
        return;
    }
    /* The teacher-forced decoder skips an expert for a token beyond its
     * capacity in the sequence, which a step of one token never does (nor
     * does the reference's cached generation). So the capacity must cover the
     * decoder length for the two to compute the same. */
    int Td = 12;
    if (f.cfg.expert_capacity < Td)
        f.cfg.expert_capacity = Td;
    struct model *m = fixture_model(&f);
    if (m == NULL) {
        fixture_close(&f);
        return;
    }
    int B = f.B, S = 2 * B, V = m->config.vocab_size;
    int32_t *decoder_ids = malloc(sizeof(int32_t) * (size_t)S * Td);
    for (int j = 0; j < S; j++) {
        decoder_ids[(size_t)j * Td] = m->config.decoder_start_token_id;
        for (int t = 1; t < Td; t++)
            decoder_ids[(size_t)j * Td + t] = (int32_t)((j * 7 + t * 13 + t * t) % V);
    }
    float *ref = full_logits(&f, m, decoder_ids, 2, Td);

    /* slot s decodes the sequence of teacher-forced row identity[s] */
    struct caem_error err;
    struct decode_state *d = NULL;
    int ok = ref != NULL && model_encode(m, f.input_ids, f.mask, B, f.Te, 2, &err) == 0 &&
             decode_state_create(m, &d, S, Td, 1, &err) == 0;
    CHECK_MSG(ok, "%s", err.message);
    int32_t identity[64], source[64], tokens[64];
    for (int s = 0; s < S; s++)
        identity[s] = s;
    double worst = 0.0;
    for (int t = 0; ok && t < Td; t++) {
        for (int s = 0; s < S; s++)
            tokens[s] = decoder_ids[(size_t)identity[s] * Td + t];
        const float *logits = decoder_step(m, d, tokens, S, t, NULL);
        for (int s = 0; s < S; s++) {
            double e = relative_error(logits + (size_t)s * V,
                                      ref + ((size_t)identity[s] * Td + t) * V, (size_t)V);
            CHECK_MSG(e <= STEP_TOLERANCE, "%s step %d slot %d (row %d): relative error %.3g",
                      fixture, t, s, identity[s], e);
            worst = fmax(worst, e);
        }
        if (t != swap_at && t != copy_at)
            continue;
        int32_t next[64];
        for (int s = 0; s < S; s++) {
            source[s] = t == swap_at ? (s ^ 1) : (s & ~1);
            next[s] = identity[source[s]];
        }
        decode_state_reorder(m, d, source, S, t + 1);
        memcpy(identity, next, sizeof(int32_t) * (size_t)S);
    }
    printf("  %s: worst relative error of a step %.2g\n", fixture, worst);
    decode_state_free(m, d);
    model_release_workspace(m);
    free(ref);
    free(decoder_ids);
    model_free(m);
    fixture_close(&f);
}

static void test_steps_match_forward(void)
{
    for (int i = 0; i < 4; i++)
        check_steps(fixture_names[i], 4, 8);
}

/* ---- arguments, usage, batch independence ---- */

static void test_bad_arguments_rejected(void)
{
    struct fixture f;
    if (fixture_open(&f, fixture_names[0]) != 0) {
        CHECK_MSG(0, "cannot open fixture");
        fixture_close(&f);
        return;
    }
    struct model *m = fixture_model(&f);
    if (m == NULL) {
        fixture_close(&f);
        return;
    }
    struct caem_error err;
    struct generate_output out;
    struct generate_options o = generate_paper_options();
    o.max_length = 8;

    struct generate_options bad = o;
    bad.num_beams = 0;
    CHECK(model_generate(m, f.input_ids, f.mask, f.B, f.Te, &bad, &out, NULL, &err) == -1);
    CHECK_MSG(strstr(err.message, "num_beams 0") != NULL, "%s", err.message);
    CHECK(out.ids == NULL);
    CHECK_INT_EQ(out.rows, 0);

    bad = o;
    bad.max_length = 1;
    CHECK(model_generate(m, f.input_ids, f.mask, f.B, f.Te, &bad, &out, NULL, &err) == -1);
    CHECK_MSG(strstr(err.message, "max_length 1") != NULL, "%s", err.message);

    bad = o;
    bad.repetition_penalty = 0.0f;
    CHECK(model_generate(m, f.input_ids, f.mask, f.B, f.Te, &bad, &out, NULL, &err) == -1);
    CHECK_MSG(strstr(err.message, "repetition_penalty") != NULL, "%s", err.message);

    bad = o;
    bad.no_repeat_ngram_size = -1;
    CHECK(model_generate(m, f.input_ids, f.mask, f.B, f.Te, &bad, &out, NULL, &err) == -1);
    CHECK_MSG(strstr(err.message, "no_repeat_ngram_size -1") != NULL, "%s", err.message);

    int32_t saved = f.input_ids[f.Te + 2];
    f.input_ids[f.Te + 2] = m->config.vocab_size;
    CHECK(model_generate(m, f.input_ids, f.mask, f.B, f.Te, &o, &out, NULL, &err) == -1);
    CHECK_MSG(strstr(err.message, "input_ids[1][2]") != NULL &&
              strstr(err.message, "outside the vocabulary") != NULL, "%s", err.message);
    f.input_ids[f.Te + 2] = -1;
    CHECK(model_generate(m, f.input_ids, f.mask, f.B, f.Te, &o, &out, NULL, &err) == -1);
    CHECK_MSG(strstr(err.message, "= -1 is outside") != NULL, "%s", err.message);
    f.input_ids[f.Te + 2] = saved;

    f.mask[1] = 2;
    CHECK(model_generate(m, f.input_ids, f.mask, f.B, f.Te, &o, &out, NULL, &err) == -1);
    CHECK_MSG(strstr(err.message, "attention_mask[0][1] = 2") != NULL, "%s", err.message);
    f.mask[1] = 1;

    CHECK(model_generate(m, f.input_ids, f.mask, 0, f.Te, &o, &out, NULL, &err) == -1);
    CHECK_MSG(strstr(err.message, "input shape 0 x") != NULL, "%s", err.message);

    struct usage_table wrong;
    struct model_config other;
    config_preset(&other, "small", &err);
    CHECK(usage_table_init(&wrong, &other, &err) == 0);
    CHECK(model_generate(m, f.input_ids, f.mask, f.B, f.Te, &o, &out, &wrong, &err) == -1);
    CHECK_MSG(strstr(err.message, "does not fit") != NULL, "%s", err.message);
    usage_table_free(&wrong);

    /* the rejected calls changed nothing: a valid call still works */
    CHECK_MSG(model_generate(m, f.input_ids, f.mask, f.B, f.Te, &o, &out, NULL, &err) == 0,
              "%s", err.message);
    CHECK_INT_EQ(out.rows, f.B);
    generate_output_free(&out);
    model_free(m);
    fixture_close(&f);
}

static int64_t row_sum(const int64_t *v, int n)
{
    int64_t s = 0;
    for (int i = 0; i < n; i++)
        s += v[i];
    return s;
}

/* Greedy: every row is counted once per step until it generates EOS, so a
 * decoder MoE layer counts the output lengths summed over rows. */
static void test_greedy_usage_counts(void)
{
    struct fixture f;
    if (fixture_open(&f, fixture_names[0]) != 0) {
        CHECK_MSG(0, "cannot open fixture");
        fixture_close(&f);
        return;
    }
    struct model *m = fixture_model(&f);
    struct caem_error err;
    struct usage_table t;
    if (m == NULL || usage_table_init(&t, &m->config, &err) != 0) {
        model_free(m);
        fixture_close(&f);
        return;
    }
    struct generate_options o = generate_paper_options();
    o.num_beams = 1;
    o.max_length = 40;
    struct generate_output out;
    CHECK_MSG(model_generate(m, f.input_ids, f.mask, f.B, f.Te, &o, &out, &t, &err) == 0, "%s",
              err.message);
    int64_t generated = 0, real = 0;
    for (int r = 0; r < out.rows; r++)
        generated += out.lengths[r];
    for (int i = 0; i < f.B * f.Te; i++)
        real += f.mask[i];
    CHECK(generated < (int64_t)f.B * (o.max_length - 1)); /* some row ended early */
    CHECK_INT_EQ(t.decoder_source, USAGE_DECODER_GENERATED);
    for (int row = 0; row < usage_table_rows(&t); row++) {
        int decoder = row >= t.layers[0];
        const int64_t *kept = t.kept + (size_t)row * t.experts;
        const int64_t *dropped = t.dropped + (size_t)row * t.experts;
        CHECK_INT_EQ(t.tokens[row], decoder ? generated : real);
        CHECK_INT_EQ(row_sum(kept, t.experts) + row_sum(dropped, t.experts), t.tokens[row]);
        if (decoder)
            CHECK_INT_EQ(row_sum(dropped, t.experts), 0);
    }

    /* counting padding adds the encoder's padding only */
    struct usage_table padded;
    CHECK(usage_table_init(&padded, &m->config, &err) == 0);
    padded.count_padding = 1;
    struct generate_output again;
    CHECK(model_generate(m, f.input_ids, f.mask, f.B, f.Te, &o, &again, &padded, &err) == 0);
    for (int row = 0; row < usage_table_rows(&t); row++)
        CHECK_INT_EQ(padded.tokens[row],
                     row >= t.layers[0] ? generated : (int64_t)f.B * f.Te);
    usage_table_free(&padded);
    generate_output_free(&again);
    generate_output_free(&out);
    usage_table_free(&t);
    model_free(m);
    fixture_close(&f);
}

/* Beam search: rows never interact, so each input row generated alone gives
 * the same output, and the usage of the batch is the sum of the rows' usage.
 * Each row counts num_beams tokens per step it runs. */
static void test_rows_independent_in_beam_search(void)
{
    struct fixture f;
    if (fixture_open(&f, fixture_names[0]) != 0) {
        CHECK_MSG(0, "cannot open fixture");
        fixture_close(&f);
        return;
    }
    struct model *m = fixture_model(&f);
    struct caem_error err;
    struct usage_table batch, alone, sum;
    if (m == NULL || usage_table_init(&batch, &m->config, &err) != 0) {
        model_free(m);
        fixture_close(&f);
        return;
    }
    usage_table_init(&alone, &m->config, &err);
    usage_table_init(&sum, &m->config, &err);
    struct generate_options o = generate_paper_options();
    o.max_length = 60;
    struct generate_output out;
    CHECK_MSG(model_generate(m, f.input_ids, f.mask, f.B, f.Te, &o, &out, &batch, &err) == 0,
              "%s", err.message);
    int64_t output_total = 0;
    for (int r = 0; r < f.B && out.ids != NULL; r++) {
        struct generate_output one;
        usage_table_clear(&alone);
        int status = model_generate(m, f.input_ids + (size_t)r * f.Te, f.mask + (size_t)r * f.Te,
                                    1, f.Te, &o, &one, &alone, &err);
        CHECK_MSG(status == 0, "%s", err.message);
        if (status != 0)
            continue;
        CHECK_INT_EQ(one.lengths[0], out.lengths[r]);
        CHECK(memcmp(one.ids[0], out.ids[r], sizeof(int32_t) * (size_t)out.lengths[r]) == 0);
        /* a batch of another size sums the GEMMs in another order */
        CHECK_NEAR(one.scores[0], out.scores[r], 1e-5);
        usage_table_add(&sum, &alone, &err);
        output_total += out.lengths[r];
        generate_output_free(&one);
    }
    size_t cells = (size_t)usage_table_rows(&batch) * batch.experts;
    CHECK(memcmp(batch.kept, sum.kept, sizeof(int64_t) * cells) == 0);
    for (int row = 0; row < usage_table_rows(&batch); row++) {
        CHECK_INT_EQ(batch.tokens[row], sum.tokens[row]);
        if (row < batch.layers[0])
            continue;
        /* a row runs at least as many steps as its output has tokens */
        CHECK_INT_EQ(batch.tokens[row] % o.num_beams, 0);
        CHECK(batch.tokens[row] >= o.num_beams * output_total);
        CHECK(batch.tokens[row] <= (int64_t)o.num_beams * f.B * (o.max_length - 1));
    }
    generate_output_free(&out);
    usage_table_free(&batch);
    usage_table_free(&alone);
    usage_table_free(&sum);
    model_free(m);
    fixture_close(&f);
}

static void test_paper_options(void)
{
    struct generate_options o = generate_paper_options();
    CHECK_INT_EQ(o.num_beams, 3);
    CHECK_INT_EQ(o.max_length, 200);
    CHECK_NEAR(o.repetition_penalty, 1.2, 1e-7);
    CHECK_INT_EQ(o.no_repeat_ngram_size, 3);
    CHECK_NEAR(o.length_penalty, 1.0, 0.0);
    CHECK_INT_EQ(o.early_stopping, 1);
}

int main(void)
{
    TEST_SUITE("generate");
    RUN_TEST(step2_e4_tied);
    RUN_TEST(step3_e8_untied);
    RUN_TEST(capacity_drop);
    RUN_TEST(step1_all_moe);
    RUN_TEST(steps_match_forward);
    RUN_TEST(bad_arguments_rejected);
    RUN_TEST(greedy_usage_counts);
    RUN_TEST(rows_independent_in_beam_search);
    RUN_TEST(paper_options);
    TEST_MAIN_END();
}
