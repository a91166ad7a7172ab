#include "evaluate.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "results.h"

struct evaluate_options evaluate_defaults(void)
{
    struct evaluate_options o;
    memset(&o, 0, sizeof o);
    o.split = TASK_SPLIT_VALIDATION;
    o.limit = 0;
    o.batch_size = 16;
    o.generation = generate_paper_options();
    o.generate = 1;
    o.usage_source = USAGE_DECODER_TEACHER_FORCED;
    return o;
}

static double seconds_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

void evaluation_free(struct evaluation *e)
{
    if (e->predictions != NULL)
        for (long i = 0; i < e->examples; i++)
            free(e->predictions[i]);
    free(e->predictions);
    usage_table_free(&e->usage);
    memset(e, 0, sizeof *e);
}

int evaluate_decode_output(const struct tokenizer *tok, const int32_t *ids, int length,
                           int32_t eos, int32_t pad, char **text, struct caem_error *err)
{
    int32_t *kept = malloc(sizeof *kept * (size_t)(length > 0 ? length : 1));
    if (kept == NULL)
        return caem_fail(err, "out of memory for a generated sequence of %d ids", length);
    int vocab = tokenizer_vocab_size(tok), n = 0;
    for (int i = 0; i < length && ids[i] != eos; i++)
        if (ids[i] != pad && ids[i] >= 0 && ids[i] < vocab)
            kept[n++] = ids[i];
    size_t bytes;
    int rc = tokenizer_decode(tok, kept, (size_t)n, text, &bytes, err);
    free(kept);
    return rc;
}

/* Adds one batch's cross-entropy to the running sums and its routing to
 * usage when that is not NULL. */
static int loss_batch(struct model *m, const struct batch *b, struct usage_table *usage,
                      double *sum, long *labels, struct caem_error *err)
{
    struct model_losses losses;
    if (model_forward(m, b, &losses, err) != 0 ||
        (usage != NULL && usage_table_collect(usage, m, b, err) != 0))
        return -1;
    *sum += losses.cross_entropy * (double)losses.label_tokens;
    *labels += losses.label_tokens;
    return 0;
}

int evaluate_loss(struct model *m, const struct task_tokens *tokens, long limit,
                  int batch_size, struct usage_table *usage, double *loss,
                  struct caem_error *err)
{
    struct task_batches it;
    if (task_batches_begin(&it, tokens, batch_size, TASK_BATCHES_SEQUENTIAL, 0, 0, err) != 0)
        return -1;
    double sum = 0.0;
    long labels = 0, seen = 0;
    struct batch b;
    int rc = 0;
    while (seen < limit && task_batches_next(&it, &b)) {
        if (seen + b.batch_size > limit)
            b.batch_size = (int)(limit - seen);
        if (loss_batch(m, &b, usage, &sum, &labels, err) != 0) {
            rc = -1;
            break;
        }
        seen += b.batch_size;
    }
    task_batches_end(&it);
    *loss = labels > 0 ? sum / (double)labels : NAN;
    return rc;
}

/* ---- the evaluator ---- */

enum evaluator_phase { PHASE_LOSS, PHASE_GENERATION, PHASE_DONE, PHASE_FAILED };

struct evaluator {
    struct model *model;
    const struct task *task;
    const struct task_split *split;
    struct evaluate_options options;
    long limit;             /* examples evaluated */
    int teacher_usage;      /* 1: usage counted in the loss phase */
    enum evaluator_phase phase;
    struct task_batches batches;
    int batches_open;
    long seen;              /* examples of the current phase done */
    double loss_sum;
    long label_tokens;
    struct metric_sum sum;
    long batches_done, batch_count;
    double seconds;
    struct evaluation result;
};

int evaluator_create(struct evaluator **out, struct model *m, const struct task *task,
                     const struct evaluate_options *o, struct caem_error *err)
{
    *out = NULL;
    const struct task_split *split = &task->splits[o->split];
    if (!split->tokenized || split->tokens.count == 0)
        return caem_fail(err, "task '%s' has no tokenized %s examples", task->name,
                         task_split_name(o->split));
    if (o->batch_size < 1)
        return caem_fail(err, "invalid evaluation batch size %d, expected at least 1",
                         o->batch_size);
    if (o->generate && task->tokenizer == NULL)
        return caem_fail(err, "task '%s' has no tokenizer to decode generated outputs",
                         task->name);
    if (o->generate && split->data.count < split->tokens.count)
        return caem_fail(err, "task '%s' has token ids without texts on %s (a span-corruption "
                         "task), so only its loss and usage can be measured, not a metric",
                         task->name, task_split_name(o->split));
    struct evaluator *ev = caem_calloc(1, sizeof *ev, "an evaluator", err);
    if (ev == NULL)
        return -1;
    ev->model = m;
    ev->task = task;
    ev->split = split;
    ev->options = *o;
    ev->limit = o->limit > 0 && o->limit < split->tokens.count ? o->limit : split->tokens.count;
    ev->teacher_usage = o->usage_source == USAGE_DECODER_TEACHER_FORCED || !o->generate;
    long per_phase = (ev->limit + o->batch_size - 1) / o->batch_size;
    ev->batch_count = o->generate ? 2 * per_phase : per_phase;

    struct evaluation *r = &ev->result;
    r->metric = task->metric;
    r->split = o->split;
    r->examples = ev->limit;
    r->primary = NAN;
    r->loss = NAN;
    if (metric_sum_init(&ev->sum, task->metric, err) != 0 ||
        usage_table_init(&r->usage, &m->config, err) != 0) {
        evaluator_free(ev);
        return -1;
    }
    r->usage.count_padding = o->count_padding;
    r->usage.decoder_source = ev->teacher_usage ? USAGE_DECODER_TEACHER_FORCED
                                                : USAGE_DECODER_GENERATED;
    if (o->generate) {
        r->predictions = calloc((size_t)ev->limit, sizeof *r->predictions);
        if (r->predictions == NULL) {
            evaluator_free(ev);
            return caem_fail(err, "out of memory for %ld predictions", ev->limit);
        }
    }
    *out = ev;
    return 0;
}

/* Generates for one batch's rows and scores the decoded outputs. */
static int generation_batch(struct evaluator *ev, const struct batch *b, int rows,
                            struct caem_error *err)
{
    const struct task_tokens *tokens = &ev->split->tokens;
    struct generate_output g;
    struct usage_table *usage = ev->teacher_usage ? NULL : &ev->result.usage;
    if (model_generate(ev->model, b->input_ids, b->attention_mask, rows, b->encoder_length,
                       &ev->options.generation, &g, usage, err) != 0)
        return -1;
    int rc = 0;
    for (int r = 0; r < rows && rc == 0; r++) {
        const struct example *ex = &ev->split->data.examples[ev->batches.examples[r]];
        char *text = NULL;
        rc = evaluate_decode_output(ev->task->tokenizer, g.ids[r], g.lengths[r],
                                    tokens->eos_id, tokens->pad_id, &text, err);
        if (rc == 0)
            rc = metric_sum_add(&ev->sum, text, ex, err);
        ev->result.predictions[ev->seen + r] = text;
    }
    generate_output_free(&g);
    return rc;
}

/* Closes the current phase and opens the next one. */
static int next_phase(struct evaluator *ev, struct caem_error *err)
{
    task_batches_end(&ev->batches);
    ev->batches_open = 0;
    ev->seen = 0;
    struct evaluation *r = &ev->result;
    if (ev->phase == PHASE_LOSS) {
        r->loss = ev->label_tokens > 0 ? ev->loss_sum / (double)ev->label_tokens : NAN;
        ev->phase = ev->options.generate ? PHASE_GENERATION : PHASE_DONE;
        return 0;
    }
    ev->phase = PHASE_DONE;
    if (metric_sum_values(&ev->sum, r->figure_names, r->figures, &r->figure_count, err) != 0)
        return -1;
    r->primary_name = metric_primary_name(ev->task->metric);
    for (int i = 0; i < r->figure_count; i++)
        if (strcmp(r->figure_names[i], r->primary_name) == 0)
            r->primary = r->figures[i];
    return 0;
}

/* One batch of the current phase, opening the phase's batches first. */
static int run_batch(struct evaluator *ev, struct caem_error *err)
{
    if (!ev->batches_open) {
        if (task_batches_begin(&ev->batches, &ev->split->tokens, ev->options.batch_size,
                               TASK_BATCHES_SEQUENTIAL, 0, 0, err) != 0)
            return -1;
        ev->batches_open = 1;
    }
    struct batch b;
    if (!task_batches_next(&ev->batches, &b))
        return caem_fail(err, "the split ended after %ld of %ld examples", ev->seen,
                         ev->limit);
    int rows = b.batch_size;
    if (ev->seen + rows > ev->limit)
        rows = (int)(ev->limit - ev->seen);
    int rc;
    if (ev->phase == PHASE_LOSS) {
        b.batch_size = rows;
        rc = loss_batch(ev->model, &b, ev->teacher_usage ? &ev->result.usage : NULL,
                        &ev->loss_sum, &ev->label_tokens, err);
    } else {
        rc = generation_batch(ev, &b, rows, err);
    }
    if (rc != 0)
        return -1;
    ev->seen += rows;
    ev->batches_done++;
    if (ev->seen >= ev->limit)
        return next_phase(ev, err);
    return 0;
}

int evaluator_step(struct evaluator *ev, struct caem_error *err)
{
    if (ev->phase == PHASE_FAILED)
        return caem_fail(err, "the evaluation of task '%s' failed earlier", ev->task->name);
    if (ev->phase == PHASE_DONE)
        return 1;
    double start = seconds_now();
    struct model *m = ev->model;
    int training = m->training;
    m->training = 0;
    int rc = run_batch(ev, err);
    m->training = training;
    ev->seconds += seconds_now() - start;
    if (rc != 0) {
        ev->phase = PHASE_FAILED;
        char detail[CAEM_ERROR_MAX - 100];
        size_t length = strnlen(err->message, sizeof detail - 1);
        memcpy(detail, err->message, length);
        detail[length] = '\0';
        return caem_fail(err, "evaluating task '%s' on %s: %s", ev->task->name,
                         task_split_name(ev->options.split), detail);
    }
    return ev->phase == PHASE_DONE ? 1 : 0;
}

void evaluator_progress(const struct evaluator *ev, long *done, long *total, double *seconds)
{
    *done = ev->batches_done;
    *total = ev->batch_count;
    *seconds = ev->seconds;
}

const struct usage_table *evaluator_usage(const struct evaluator *ev)
{
    return &ev->result.usage;
}

int evaluator_finish(struct evaluator *ev, struct evaluation *out, struct caem_error *err)
{
    if (ev->phase != PHASE_DONE)
        return caem_fail(err, "the evaluation of task '%s' has not finished: %ld of %ld "
                         "batches done", ev->task->name, ev->batches_done, ev->batch_count);
    ev->result.seconds = ev->seconds;
    *out = ev->result;
    memset(&ev->result, 0, sizeof ev->result);
    return 0;
}

void evaluator_free(struct evaluator *ev)
{
    if (ev == NULL)
        return;
    if (ev->batches_open)
        task_batches_end(&ev->batches);
    evaluation_free(&ev->result);
    free(ev);
}

int evaluate_task(struct model *m, const struct task *task, const struct evaluate_options *o,
                  struct evaluation *out, struct caem_error *err)
{
    memset(out, 0, sizeof *out);
    struct evaluator *ev;
    if (evaluator_create(&ev, m, task, o, err) != 0)
        return -1;
    int rc;
    while ((rc = evaluator_step(ev, err)) == 0)
        continue;
    if (rc == 1)
        rc = evaluator_finish(ev, out, err);
    evaluator_free(ev);
    return rc < 0 ? -1 : 0;
}

int evaluation_append_results(const char *prefix, const char *model_name,
                              const struct task *task, long step,
                              const struct evaluation *e, struct caem_error *err)
{
    struct result_row rows[METRIC_VALUES_MAX + 1];
    int count = 0;
    double now = (double)time(NULL);
    const char *split = task_split_name(e->split);
    for (int i = 0; i < e->figure_count; i++) {
        struct result_row r = { model_name, task->name, split, e->figure_names[i],
                                e->figures[i], step, now };
        rows[count++] = r;
    }
    struct result_row loss = { model_name, task->name, split, "loss", e->loss, step, now };
    rows[count++] = loss;
    return results_append(prefix, rows, count, err);
}
