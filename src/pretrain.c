#include "pretrain.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "rng.h"

/* Draws of one chunk come from (seed, index << 20 | k), so chunks of up to
 * half a million ids have independent streams. */
#define DRAWS_PER_CHUNK (1ull << 20)

struct span_corruption span_corruption_defaults(void)
{
    struct span_corruption c = { 0.15, 3.0 };
    return c;
}

/* Splits `items` into `segments` non-empty runs at random: cuts at
 * segments - 1 distinct positions of 1 .. items - 1. */
static int random_segmentation(int items, int segments, uint64_t seed, uint64_t base,
                               int *lengths)
{
    int positions = items - 1;
    unsigned char *cut = calloc((size_t)(positions > 0 ? positions : 1), 1);
    if (cut == NULL)
        return -1;
    for (int k = 0; k < segments - 1; k++)
        cut[k] = 1;
    /* Fisher-Yates shuffle of the cut flags */
    for (int i = positions - 1; i > 0; i--) {
        int j = (int)(rng_uniform(seed, base + (uint64_t)i) * (float)(i + 1));
        if (j > i)
            j = i;
        unsigned char t = cut[i];
        cut[i] = cut[j];
        cut[j] = t;
    }
    int s = 0, run = 1;
    for (int p = 0; p < positions; p++) {
        if (cut[p]) {
            lengths[s++] = run;
            run = 1;
        } else {
            run++;
        }
    }
    lengths[s] = run;
    free(cut);
    return 0;
}

int span_corruption_mask(const struct span_corruption *c, int length, uint64_t seed,
                         uint64_t index, unsigned char *mask)
{
    int noise = (int)lround(length * c->noise_density);
    if (noise < 1)
        noise = 1;
    if (noise > length - 1)
        noise = length - 1;
    int spans = (int)lround(noise / c->mean_span_length);
    if (spans < 1)
        spans = 1;
    int kept = length - noise;
    if (spans > kept)
        spans = kept;
    int *noise_runs = malloc(sizeof(int) * (size_t)spans * 2);
    if (noise_runs == NULL)
        return -1;
    int *kept_runs = noise_runs + spans;
    uint64_t base = index * DRAWS_PER_CHUNK;
    if (random_segmentation(noise, spans, seed, base, noise_runs) != 0 ||
        random_segmentation(kept, spans, seed, base + DRAWS_PER_CHUNK / 2, kept_runs) != 0) {
        free(noise_runs);
        return -1;
    }
    int at = 0;
    for (int s = 0; s < spans; s++) {
        memset(mask + at, 0, (size_t)kept_runs[s]);
        at += kept_runs[s];
        memset(mask + at, 1, (size_t)noise_runs[s]);
        at += noise_runs[s];
    }
    free(noise_runs);
    return spans;
}

int span_corruption_apply(const struct span_corruption *c, const int32_t *sentinels,
                          int sentinel_count, const int32_t *ids, int length, uint64_t seed,
                          uint64_t index,
                          int32_t *input, int *input_length, int32_t *target,
                          int *target_length, struct caem_error *err)
{
    if (length < 2)
        return caem_fail(err, "span corruption needs at least 2 ids, got %d", length);
    unsigned char *mask = malloc((size_t)length);
    if (mask == NULL)
        return caem_fail(err, "out of memory for a mask of %d ids", length);
    int spans = span_corruption_mask(c, length, seed, index, mask);
    if (spans < 0) {
        free(mask);
        return caem_fail(err, "out of memory for the spans of %d ids", length);
    }
    if (spans > sentinel_count) {
        free(mask);
        return caem_fail(err, "a sequence of %d ids has %d spans, more than the %d sentinels; "
                         "use shorter chunks", length, spans, sentinel_count);
    }
    int ni = 0, nt = 0, span = -1;
    for (int i = 0; i < length; i++) {
        if (!mask[i]) {
            input[ni++] = ids[i];
            continue;
        }
        if (i == 0 || !mask[i - 1]) {
            span++;
            int32_t sentinel = sentinels[span];
            input[ni++] = sentinel;
            target[nt++] = sentinel;
        }
        target[nt++] = ids[i];
    }
    free(mask);
    *input_length = ni;
    *target_length = nt;
    return 0;
}

/* Appends the ids of text to a growing array. */
static int append_text(const struct tokenizer *tok, const char *text, int32_t eos,
                       int32_t **all, size_t *count, size_t *capacity, struct caem_error *err)
{
    int32_t *ids = NULL;
    size_t n = 0;
    if (tokenizer_encode(tok, text, strlen(text), &ids, &n, err) != 0)
        return -1;
    if (*count + n + 1 > *capacity) {
        size_t cap = (*capacity ? *capacity * 2 : 4096) + n + 1;
        int32_t *grown = realloc(*all, sizeof *grown * cap);
        if (grown == NULL) {
            free(ids);
            return caem_fail(err, "out of memory for %zu ids of pretraining text", cap);
        }
        *all = grown;
        *capacity = cap;
    }
    memcpy(*all + *count, ids, sizeof *ids * n);
    *count += n;
    (*all)[(*count)++] = eos;
    free(ids);
    return 0;
}

int span_corruption_build(const struct span_corruption *c, const struct task *task,
                          enum task_split_kind split, int chunk, uint64_t seed,
                          struct task_tokens *out, struct caem_error *err)
{
    const struct task_split *train = &task->splits[split];
    if (task->tokenizer == NULL)
        return caem_fail(err, "task '%s' has no tokenizer for pretraining text", task->name);
    if (chunk < 2)
        return caem_fail(err, "invalid pretraining chunk of %d ids, expected at least 2", chunk);
    int32_t eos = out->eos_id;
    int32_t *all = NULL;
    size_t count = 0, capacity = 0;
    for (long i = 0; i < train->data.count; i++) {
        const struct example *ex = &train->data.examples[i];
        if (append_text(task->tokenizer, ex->input, eos, &all, &count, &capacity, err) != 0 ||
            append_text(task->tokenizer, ex->target, eos, &all, &count, &capacity, err) != 0) {
            free(all);
            return -1;
        }
    }
    int32_t sentinels[TOKENIZER_SENTINELS];
    for (int k = 0; k < TOKENIZER_SENTINELS; k++)
        sentinels[k] = tokenizer_sentinel_id(task->tokenizer, k);
    int32_t *input = malloc(sizeof *input * (size_t)chunk);
    int32_t *target = malloc(sizeof *target * (size_t)chunk);
    int status = input == NULL || target == NULL
                     ? caem_fail(err, "out of memory for a pretraining chunk")
                     : 0;
    uint64_t index = 0;
    for (size_t at = 0; status == 0 && at + (size_t)chunk <= count; at += (size_t)chunk) {
        int ni, nt;
        status = span_corruption_apply(c, sentinels, TOKENIZER_SENTINELS, all + at, chunk,
                                       seed, index++, input, &ni, target, &nt, err);
        if (status == 0)
            status = task_tokens_append(out, input, (size_t)ni, target, (size_t)nt, err);
    }
    free(input);
    free(target);
    free(all);
    return status;
}
