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

/* Decodes one generated row into text: EOS ends it, and padding and ids the
 * tokenizer does not have are left out. */
static int decode_output(const struct tokenizer *tok, const int32_t *ids, int length,
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
        struct model_losses losses;
        if (model_forward(m, &b, &losses, err) != 0 ||
            (usage != NULL && usage_table_collect(usage, m, &b, err) != 0)) {
            rc = -1;
            break;
        }
        sum += losses.cross_entropy * (double)losses.label_tokens;
        labels += losses.label_tokens;
        seen += b.batch_size;
    }
    task_batches_end(&it);
    *loss = labels > 0 ? sum / (double)labels : NAN;
    return rc;
}

/* Generates for the first `limit` examples and scores the outputs. */
static int evaluate_generated(struct model *m, const struct task *task,
                              const struct task_split *split, long limit,
                              const struct evaluate_options *o, struct usage_table *usage,
                              struct evaluation *out, struct caem_error *err)
{
    const struct task_tokens *tokens = &split->tokens;
    struct metric_sum sum;
    if (metric_sum_init(&sum, task->metric, err) != 0)
        return -1;
    struct task_batches it;
    if (task_batches_begin(&it, tokens, o->batch_size, TASK_BATCHES_SEQUENTIAL, 0, 0,
                           err) != 0) {
        return -1;
    }
    long seen = 0;
    struct batch b;
    int rc = 0;
    while (rc == 0 && seen < limit && task_batches_next(&it, &b)) {
        int rows = b.batch_size;
        if (seen + rows > limit)
            rows = (int)(limit - seen);
        struct generate_output g;
        if (model_generate(m, b.input_ids, b.attention_mask, rows, b.encoder_length,
                           &o->generation, &g, usage, err) != 0) {
            rc = -1;
            break;
        }
        for (int r = 0; r < rows && rc == 0; r++) {
            const struct example *ex = &split->data.examples[it.examples[r]];
            char *text = NULL;
            rc = decode_output(task->tokenizer, g.ids[r], g.lengths[r], tokens->eos_id,
                               tokens->pad_id, &text, err);
            if (rc == 0)
                rc = metric_sum_add(&sum, text, ex, err);
            out->predictions[seen + r] = text;
        }
        generate_output_free(&g);
        seen += rows;
    }
    task_batches_end(&it);
    if (rc == 0)
        rc = metric_sum_values(&sum, out->figure_names, out->figures, &out->figure_count, err);
    if (rc == 0) {
        out->primary_name = metric_primary_name(task->metric);
        for (int i = 0; i < out->figure_count; i++)
            if (strcmp(out->figure_names[i], out->primary_name) == 0)
                out->primary = out->figures[i];
    }
    return rc;
}

int evaluate_task(struct model *m, const struct task *task, const struct evaluate_options *o,
                  struct evaluation *out, struct caem_error *err)
{
    memset(out, 0, sizeof *out);
    const struct task_split *split = &task->splits[o->split];
    const char *split_name = task_split_name(o->split);
    if (!split->tokenized || split->tokens.count == 0)
        return caem_fail(err, "task '%s' has no tokenized %s examples", task->name,
                         split_name);
    if (o->batch_size < 1)
        return caem_fail(err, "invalid evaluation batch size %d, expected at least 1",
                         o->batch_size);
    if (o->generate && task->tokenizer == NULL)
        return caem_fail(err, "task '%s' has no tokenizer to decode generated outputs",
                         task->name);
    double start = seconds_now();
    long limit = o->limit > 0 && o->limit < split->tokens.count ? o->limit
                                                                 : split->tokens.count;
    out->metric = task->metric;
    out->split = o->split;
    out->examples = limit;
    out->primary = NAN;
    if (usage_table_init(&out->usage, &m->config, err) != 0)
        return -1;
    out->usage.count_padding = o->count_padding;
    out->usage.decoder_source = o->usage_source;
    if (o->generate) {
        out->predictions = calloc((size_t)limit, sizeof *out->predictions);
        if (out->predictions == NULL) {
            evaluation_free(out);
            return caem_fail(err, "out of memory for %ld predictions", limit);
        }
    }

    int training = m->training;
    m->training = 0;
    int teacher_usage = o->usage_source == USAGE_DECODER_TEACHER_FORCED || !o->generate;
    int rc = evaluate_loss(m, &split->tokens, limit, o->batch_size,
                           teacher_usage ? &out->usage : NULL, &out->loss, err);
    if (rc == 0 && o->generate)
        rc = evaluate_generated(m, task, split, limit, o, teacher_usage ? NULL : &out->usage,
                                out, err);
    m->training = training;
    if (rc != 0) {
        char detail[CAEM_ERROR_MAX - 100];
        size_t length = strnlen(err->message, sizeof detail - 1);
        memcpy(detail, err->message, length);
        detail[length] = '\0';
        evaluation_free(out);
        return caem_fail(err, "evaluating task '%s' on %s: %s", task->name, split_name,
                         detail);
    }
    out->usage.decoder_source = teacher_usage ? USAGE_DECODER_TEACHER_FORCED
                                              : USAGE_DECODER_GENERATED;
    out->seconds = seconds_now() - start;
    return 0;
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
