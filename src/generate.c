/* Greedy and beam search over the cached decoder of model_decode.c.
 *
 * The search runs on the host over the logits that each decoding step
 * returns. Its rules are those of transformers 4.46.3: _sample with
 * do_sample=False for greedy search, _beam_search with BeamSearchScorer and
 * BeamHypotheses for beam search, RepetitionPenaltyLogitsProcessor and
 * NoRepeatNGramLogitsProcessor for the two penalties. Finished sequences
 * leave the decoding batch, and the caches are compacted, because a
 * sequence's tokens never affect another's (attention stays within a
 * sequence and the MoE capacity is counted per sequence). */
#include "generate.h"

#include <limits.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "model_internal.h"

/* The score transformers gives the beams other than the first at the first
 * step, so that the first step's candidates come from one beam only. */
#define BEAM_START_SCORE (-1e9f)

struct generate_options generate_paper_options(void)
{
    struct generate_options o = { 3, 200, 1.2f, 3, 1.0f, 1 };
    return o;
}

void generate_output_free(struct generate_output *out)
{
    if (out == NULL)
        return;
    if (out->ids != NULL)
        for (int r = 0; r < out->rows; r++)
            free(out->ids[r]);
    free(out->ids);
    free(out->lengths);
    free(out->scores);
    memset(out, 0, sizeof *out);
}

static int output_alloc(struct generate_output *out, int rows, struct caem_error *err)
{
    out->rows = rows;
    out->ids = calloc((size_t)rows, sizeof *out->ids);
    out->lengths = calloc((size_t)rows, sizeof *out->lengths);
    out->scores = calloc((size_t)rows, sizeof *out->scores);
    if (out->ids == NULL || out->lengths == NULL || out->scores == NULL) {
        generate_output_free(out);
        return caem_fail(err, "out of memory for the output of %d rows", rows);
    }
    return 0;
}

/* Stores row r's ids: tokens[0..length), then EOS when append_eos is set. */
static int output_set_row(struct generate_output *out, int r, const int32_t *tokens, int length,
                          int append_eos, int eos, double score, struct caem_error *err)
{
    int total = length + (append_eos ? 1 : 0);
    out->ids[r] = malloc(sizeof(int32_t) * (size_t)(total > 0 ? total : 1));
    if (out->ids[r] == NULL)
        return caem_fail(err, "out of memory for %d output ids of row %d", total, r);
    memcpy(out->ids[r], tokens, sizeof(int32_t) * (size_t)length);
    if (append_eos)
        out->ids[r][length] = eos;
    out->lengths[r] = total;
    out->scores[r] = score;
    return 0;
}

/* ---- logits processors ---- */

static float row_max(const float *row, int V)
{
    float max = row[0];
    for (int j = 1; j < V; j++)
        if (row[j] > max)
            max = row[j];
    return max;
}

/* Returns sum exp(row - max), the exponentials in float (as torch computes
 * them) and their sum in double. */
static double sum_exp(const float *row, int V, float max)
{
    double sum = 0.0;
    for (int j = 0; j < V; j++)
        sum += expf(row[j] - max);
    return sum;
}

/* Log-softmax of one row in place: (x - max) - log(sum exp(x - max)), the
 * order of operations of torch's CPU kernel. */
static void log_softmax_row(float *row, int V)
{
    float max = row_max(row, V);
    float log_sum = (float)log(sum_exp(row, V, max));
    for (int j = 0; j < V; j++)
        row[j] = (row[j] - max) - log_sum;
}

/* Returns log(sum exp(row)). */
static double log_sum_exp(const float *row, int V)
{
    float max = row_max(row, V);
    return max + log(sum_exp(row, V, max));
}

/* Penalizes every distinct token of seq[0..length) once. seen is host [V],
 * all zero on entry and on return. */
static void apply_repetition_penalty(float *row, const int32_t *seq, int length, float penalty,
                                     unsigned char *seen)
{
    for (int t = 0; t < length; t++) {
        int id = seq[t];
        if (seen[id])
            continue;
        seen[id] = 1;
        row[id] = row[id] < 0.0f ? row[id] * penalty : row[id] / penalty;
    }
    for (int t = 0; t < length; t++)
        seen[seq[t]] = 0;
}

/* Sets to -inf each token that would complete an n-gram of seq[0..length)
 * a second time: the one after each earlier occurrence of the last n - 1
 * tokens. */
static void ban_repeated_ngrams(float *row, const int32_t *seq, int length, int n)
{
    if (length < n)
        return;
    const int32_t *suffix = seq + length - (n - 1);
    for (int start = 0; start + n <= length; start++) {
        int match = 1;
        for (int j = 0; j < n - 1 && match; j++)
            match = seq[start + j] == suffix[j];
        if (match)
            row[seq[start + n - 1]] = -INFINITY;
    }
}

static void apply_processors(float *row, const int32_t *seq, int length,
                             const struct generate_options *opt, unsigned char *seen)
{
    if (opt->repetition_penalty != 1.0f)
        apply_repetition_penalty(row, seq, length, opt->repetition_penalty, seen);
    if (opt->no_repeat_ngram_size > 0)
        ban_repeated_ngrams(row, seq, length, opt->no_repeat_ngram_size);
}

/* ---- greedy search ---- */

struct greedy_buffers {
    int32_t *seqs;       /* [B, max_length] tokens of each row, start token first */
    int32_t *slot_row;   /* [B] the row each running slot decodes */
    int32_t *tokens;     /* [B] the tokens of one step */
    int32_t *source;     /* [B] compaction sources */
    int *generated;      /* [B] tokens generated per row */
    double *log_likelihood; /* [B] */
    float *row;          /* [V] processed scores */
    unsigned char *seen; /* [V] */
};

static void greedy_buffers_free(struct greedy_buffers *g)
{
    free(g->seqs);
    free(g->slot_row);
    free(g->tokens);
    free(g->source);
    free(g->generated);
    free(g->log_likelihood);
    free(g->row);
    free(g->seen);
}

static int greedy_search(struct model *m, struct decode_state *d,
                         const struct generate_options *opt, int B,
                         struct generate_output *out, struct usage_table *usage,
                         struct caem_error *err)
{
    const struct model_config *c = &m->config;
    int V = c->vocab_size, ML = opt->max_length, eos = c->eos_token_id;
    struct greedy_buffers g = {
        calloc((size_t)B * ML, sizeof(int32_t)), calloc((size_t)B, sizeof(int32_t)),
        calloc((size_t)B, sizeof(int32_t)), calloc((size_t)B, sizeof(int32_t)),
        calloc((size_t)B, sizeof(int)), calloc((size_t)B, sizeof(double)),
        calloc((size_t)V, sizeof(float)), calloc((size_t)V, 1),
    };
    if (!g.seqs || !g.slot_row || !g.tokens || !g.source || !g.generated ||
        !g.log_likelihood || !g.row || !g.seen) {
        greedy_buffers_free(&g);
        return caem_fail(err, "out of memory for greedy search over %d rows", B);
    }
    for (int r = 0; r < B; r++) {
        g.seqs[(size_t)r * ML] = c->decoder_start_token_id;
        g.slot_row[r] = r;
    }

    /* one position per step; a row that generates EOS leaves the batch */
    int running = B;
    for (int pos = 0; pos < ML - 1 && running > 0; pos++) {
        for (int i = 0; i < running; i++)
            g.tokens[i] = g.seqs[(size_t)g.slot_row[i] * ML + pos];
        const float *logits = decoder_step(m, d, g.tokens, running, pos, usage);
        int still_running = 0;
        for (int i = 0; i < running; i++) {
            const float *raw = logits + (size_t)i * V;
            int r = g.slot_row[i];
            int32_t *seq = g.seqs + (size_t)r * ML;
            memcpy(g.row, raw, sizeof(float) * (size_t)V);
            apply_processors(g.row, seq, pos + 1, opt, g.seen);
            int next = 0;
            for (int j = 1; j < V; j++)
                if (g.row[j] > g.row[next])
                    next = j;
            g.log_likelihood[r] += (double)raw[next] - log_sum_exp(raw, V);
            seq[pos + 1] = next;
            g.generated[r] = pos + 1;
            if (next != eos) {
                g.source[still_running] = i;
                g.slot_row[still_running++] = r;
            }
        }
        decode_state_reorder(m, d, g.source, still_running, pos + 1);
        running = still_running;
    }

    int status = 0;
    for (int r = 0; r < B && status == 0; r++)
        status = output_set_row(out, r, g.seqs + (size_t)r * ML + 1, g.generated[r], 0, eos,
                                g.log_likelihood[r], err);
    greedy_buffers_free(&g);
    return status;
}

/* ---- beam search ---- */

/* A finished hypothesis: its tokens (start token first) and score. */
struct hypothesis {
    double score;
    int length;
    int ended_by_eos;
    int32_t *tokens; /* [max_length] */
};

/* The finished hypotheses of one input row, in the order they were added,
 * as BeamHypotheses keeps them: at most num_beams, the worst dropped. */
struct hypothesis_list {
    int count;
    double worst;
    int done;
    struct hypothesis *items; /* [num_beams + 1] */
};

/* One (beam, token) candidate of a step. */
struct candidate {
    float score;
    int index; /* beam * V + token */
};

struct beam_buffers {
    struct hypothesis_list *lists; /* [B] */
    struct hypothesis *hypotheses; /* [B, K + 1], the lists' items */
    int32_t *token_store;          /* [B, K + 1, max_length] */
    int32_t *seqs, *next_seqs;     /* [S, max_length] tokens of each running beam */
    float *beam_scores, *next_scores; /* [S] */
    int32_t *tokens, *source;      /* [S] */
    int32_t *running, *next_running; /* [B] input rows with beams in the batch, in order */
    float *scores;                 /* [K, V] processed scores of one row's beams */
    struct candidate *top;         /* [2 K] */
    unsigned char *seen;           /* [V] */
};

static void beam_buffers_free(struct beam_buffers *b)
{
    free(b->lists);
    free(b->hypotheses);
    free(b->token_store);
    free(b->seqs);
    free(b->next_seqs);
    free(b->beam_scores);
    free(b->next_scores);
    free(b->tokens);
    free(b->source);
    free(b->running);
    free(b->next_running);
    free(b->scores);
    free(b->top);
    free(b->seen);
}

/* Adds a hypothesis as BeamHypotheses.add does: kept when the list has room
 * or it beats the worst, which then leaves (ties: the one added first). */
static void hypothesis_add(struct hypothesis_list *list, int num_beams, const int32_t *tokens,
                           int length, int ended_by_eos, double sum_logprobs,
                           int generated_length, float length_penalty)
{
    double score = sum_logprobs / pow((double)generated_length, (double)length_penalty);
    if (list->count >= num_beams && !(score > list->worst))
        return;
    struct hypothesis *h = &list->items[list->count++];
    h->score = score;
    h->length = length;
    h->ended_by_eos = ended_by_eos;
    memcpy(h->tokens, tokens, sizeof(int32_t) * (size_t)length);
    if (list->count <= num_beams) {
        list->worst = score < list->worst ? score : list->worst;
        return;
    }

    /* drop the lowest score; the next lowest becomes the worst */
    int lowest = 0;
    for (int i = 1; i < list->count; i++)
        if (list->items[i].score < list->items[lowest].score)
            lowest = i;
    int second = lowest == 0 ? 1 : 0;
    for (int i = 0; i < list->count; i++)
        if (i != lowest && list->items[i].score < list->items[second].score)
            second = i;
    list->worst = list->items[second].score;
    struct hypothesis dropped = list->items[lowest];
    memmove(list->items + lowest, list->items + lowest + 1,
            sizeof *list->items * (size_t)(list->count - lowest - 1));
    list->items[--list->count] = dropped; /* keeps its token buffer for reuse */
}

/* BeamHypotheses.is_done with decoder_prompt_len 1: generated is the
 * number of tokens after the start token once this step's token is added. */
static int hypothesis_list_is_done(const struct hypothesis_list *list, int num_beams,
                                   double best_sum_logprobs, int generated,
                                   const struct generate_options *opt)
{
    if (list->count < num_beams)
        return 0;
    if (opt->early_stopping)
        return 1;
    double best_possible = best_sum_logprobs / pow((double)generated,
                                                    (double)opt->length_penalty);
    return list->worst >= best_possible;
}

/* Keeps the `keep` best of count scores, best first; equal scores keep the
 * lower index first. */
static int top_candidates(const float *scores, int count, int keep, struct candidate *top)
{
    int filled = 0;
    for (int i = 0; i < count; i++) {
        float s = scores[i];
        if (filled == keep && !(s > top[filled - 1].score))
            continue;
        int at = filled < keep ? filled++ : keep - 1;
        while (at > 0 && s > top[at - 1].score) {
            top[at] = top[at - 1];
            at--;
        }
        top[at].score = s;
        top[at].index = i;
    }
    return filled;
}

static int beam_buffers_alloc(struct beam_buffers *b, int B, int K, int V, int ML)
{
    size_t S = (size_t)B * K;
    b->lists = calloc((size_t)B, sizeof *b->lists);
    b->token_store = calloc((size_t)B * (K + 1) * ML, sizeof(int32_t));
    b->seqs = calloc(S * ML, sizeof(int32_t));
    b->next_seqs = calloc(S * ML, sizeof(int32_t));
    b->beam_scores = calloc(S, sizeof(float));
    b->next_scores = calloc(S, sizeof(float));
    b->tokens = calloc(S, sizeof(int32_t));
    b->source = calloc(S, sizeof(int32_t));
    b->running = calloc((size_t)B, sizeof(int32_t));
    b->next_running = calloc((size_t)B, sizeof(int32_t));
    b->scores = calloc((size_t)K * V, sizeof(float));
    b->top = calloc((size_t)2 * K, sizeof *b->top);
    b->seen = calloc((size_t)V, 1);
    b->hypotheses = calloc((size_t)B * (K + 1), sizeof *b->hypotheses);
    if (!b->lists || !b->hypotheses || !b->token_store || !b->seqs || !b->next_seqs ||
        !b->beam_scores || !b->next_scores || !b->tokens || !b->source || !b->running ||
        !b->next_running || !b->scores || !b->top || !b->seen)
        return -1;
    for (int r = 0; r < B; r++) {
        b->lists[r].items = b->hypotheses + (size_t)r * (K + 1);
        b->lists[r].worst = 1e9;
        for (int h = 0; h <= K; h++)
            b->lists[r].items[h].tokens = b->token_store + ((size_t)r * (K + 1) + h) * ML;
    }
    return 0;
}

/* Processes the step's candidates of one input row as BeamSearchScorer.process
 * does: an EOS among the first K ends its beam as a hypothesis, the first K
 * other candidates become the next beams. Appends those to the next batch
 * unless the row is done. `first` is the row's first slot, `length` the
 * tokens of each beam so far. Returns the next batch's slot count. */
static int beam_row_step(struct beam_buffers *b, const struct generate_options *opt, int row,
                         int first, int length, int V, int eos, int next_slots)
{
    int K = opt->num_beams, ML = opt->max_length;
    struct hypothesis_list *list = &b->lists[row];
    int candidates = top_candidates(b->scores, K * V, 2 * K, b->top);
    int added = 0;
    for (int rank = 0; rank < candidates && added < K; rank++) {
        int beam = b->top[rank].index / V, token = b->top[rank].index % V;
        const int32_t *seq = b->seqs + (size_t)(first + beam) * ML;
        if (token == eos) {
            if (rank < K)
                hypothesis_add(list, K, seq, length, 1, (double)b->top[rank].score, length,
                               opt->length_penalty);
            continue;
        }
        int slot = next_slots + added++;
        int32_t *next = b->next_seqs + (size_t)slot * ML;
        memcpy(next, seq, sizeof(int32_t) * (size_t)length);
        next[length] = token;
        b->next_scores[slot] = b->top[rank].score;
        b->source[slot] = first + beam;
    }
    list->done = list->done ||
                 hypothesis_list_is_done(list, K, (double)b->top[0].score, length, opt);
    return list->done ? next_slots : next_slots + added;
}

/* BeamSearchScorer.finalize for one row: the open beams of a row that is not
 * done join its hypotheses. The output is the best hypothesis, and among
 * equal scores the one added last, as Python's stable sort and pop() pick it. */
static int beam_row_finish(struct beam_buffers *b, const struct generate_options *opt, int row,
                           int first, int eos, struct generate_output *out,
                           struct caem_error *err)
{
    int K = opt->num_beams, ML = opt->max_length;
    struct hypothesis_list *list = &b->lists[row];
    if (!list->done && first >= 0)
        for (int k = 0; k < K; k++)
            hypothesis_add(list, K, b->seqs + (size_t)(first + k) * ML, ML, 0,
                           (double)b->beam_scores[first + k], ML - 1, opt->length_penalty);
    if (list->count == 0)
        return caem_fail(err, "beam search ended row %d without a hypothesis", row);
    int best = 0;
    for (int i = 1; i < list->count; i++)
        if (list->items[i].score >= list->items[best].score)
            best = i;
    const struct hypothesis *h = &list->items[best];
    return output_set_row(out, row, h->tokens + 1, h->length - 1, h->ended_by_eos, eos,
                          h->score, err);
}

static int beam_search(struct model *m, struct decode_state *d,
                       const struct generate_options *opt, int B,
                       struct generate_output *out, struct usage_table *usage,
                       struct caem_error *err)
{
    const struct model_config *c = &m->config;
    int V = c->vocab_size, ML = opt->max_length, K = opt->num_beams, eos = c->eos_token_id;
    struct beam_buffers b = { 0 };
    if (beam_buffers_alloc(&b, B, K, V, ML) != 0) {
        beam_buffers_free(&b);
        return caem_fail(err, "out of memory for beam search over %d rows of %d beams", B, K);
    }
    for (int r = 0; r < B; r++) {
        b.running[r] = r;
        for (int k = 0; k < K; k++) {
            b.seqs[((size_t)r * K + k) * ML] = c->decoder_start_token_id;
            b.beam_scores[r * K + k] = k == 0 ? 0.0f : BEAM_START_SCORE;
        }
    }

    /* one position per step for every beam of the rows not yet done */
    int rows = B;
    for (int pos = 0; pos < ML - 1 && rows > 0; pos++) {
        int length = pos + 1;
        for (int i = 0; i < rows * K; i++)
            b.tokens[i] = b.seqs[(size_t)i * ML + pos];
        const float *logits = decoder_step(m, d, b.tokens, rows * K, pos, usage);

        int next_slots = 0, next_rows = 0;
        for (int j = 0; j < rows; j++) {
            for (int k = 0; k < K; k++) {
                int slot = j * K + k;
                float *s = b.scores + (size_t)k * V;
                memcpy(s, logits + (size_t)slot * V, sizeof(float) * (size_t)V);
                log_softmax_row(s, V);
                apply_processors(s, b.seqs + (size_t)slot * ML, length, opt, b.seen);
                for (int t = 0; t < V; t++)
                    s[t] += b.beam_scores[slot];
            }
            int before = next_slots;
            next_slots = beam_row_step(&b, opt, b.running[j], j * K, length, V, eos,
                                       next_slots);
            if (next_slots > before)
                b.next_running[next_rows++] = b.running[j];
        }

        /* the next batch: beams of the rows still running, caches reordered */
        decode_state_reorder(m, d, b.source, next_slots, length);
        int32_t *swap_seqs = b.seqs;
        b.seqs = b.next_seqs;
        b.next_seqs = swap_seqs;
        float *swap_scores = b.beam_scores;
        b.beam_scores = b.next_scores;
        b.next_scores = swap_scores;
        int32_t *swap_rows = b.running;
        b.running = b.next_running;
        b.next_running = swap_rows;
        rows = next_rows;
    }

    /* rows still running reached max_length; their beams have ML tokens */
    int status = 0;
    int j = 0;
    for (int r = 0; r < B && status == 0; r++) {
        int first = -1;
        if (j < rows && b.running[j] == r)
            first = K * j++;
        status = beam_row_finish(&b, opt, r, first, eos, out, err);
    }
    beam_buffers_free(&b);
    return status;
}

/* ---- entry point ---- */

static int validate_options(const struct model *m, const struct generate_options *opt,
                            struct caem_error *err)
{
    const struct model_config *c = &m->config;
    if (opt->num_beams < 1)
        return caem_fail(err, "invalid num_beams %d, expected 1 (greedy search) or more "
                         "(beam search)", opt->num_beams);
    if (opt->max_length < 2)
        return caem_fail(err, "invalid max_length %d, expected at least 2 (the decoder start "
                         "token and one generated token)", opt->max_length);
    if (!(opt->repetition_penalty > 0.0f) || isinf(opt->repetition_penalty))
        return caem_fail(err, "invalid repetition_penalty %g, expected a finite value > 0 "
                         "(1 for none)", (double)opt->repetition_penalty);
    if (opt->no_repeat_ngram_size < 0)
        return caem_fail(err, "invalid no_repeat_ngram_size %d, expected 0 (none) or more",
                         opt->no_repeat_ngram_size);
    if (!isfinite(opt->length_penalty))
        return caem_fail(err, "invalid length_penalty %g, expected a finite value",
                         (double)opt->length_penalty);
    if (opt->early_stopping != 0 && opt->early_stopping != 1)
        return caem_fail(err, "invalid early_stopping %d, expected 0 or 1",
                         opt->early_stopping);
    if (opt->num_beams > 1 && c->vocab_size < 2)
        return caem_fail(err, "beam search needs a vocabulary of at least 2 tokens, the "
                         "model has %d", c->vocab_size);
    size_t row_stride = (size_t)opt->max_length * 2 * c->num_heads * c->d_kv;
    if (row_stride > INT_MAX)
        return caem_fail(err, "max_length %d is too large for this model: a sequence's "
                         "key/value cache row would exceed %d floats", opt->max_length,
                         INT_MAX);
    return 0;
}

static int validate_inputs(const struct model *m, const int32_t *input_ids,
                           const int32_t *attention_mask, int B, int Te,
                           const struct generate_options *opt, struct caem_error *err)
{
    if (input_ids == NULL)
        return caem_fail(err, "input_ids is NULL");
    if (B < 1 || Te < 1)
        return caem_fail(err, "invalid input shape %d x %d, expected positive sizes", B, Te);
    if ((long long)B * opt->num_beams > INT_MAX / 2)
        return caem_fail(err, "%d rows of %d beams are too many sequences", B,
                         opt->num_beams);
    int V = m->config.vocab_size;
    for (int r = 0; r < B; r++)
        for (int t = 0; t < Te; t++) {
            int32_t id = input_ids[(size_t)r * Te + t];
            if (id < 0 || id >= V)
                return caem_fail(err, "input_ids[%d][%d] = %d is outside the vocabulary "
                                 "[0, %d)", r, t, id, V);
            if (attention_mask == NULL)
                continue;
            int32_t mask = attention_mask[(size_t)r * Te + t];
            if (mask != 0 && mask != 1)
                return caem_fail(err, "attention_mask[%d][%d] = %d, expected 0 (padding) or "
                                 "1 (token)", r, t, mask);
        }
    return 0;
}

/* Adds the encoder's routing of the last model_encode to usage. */
static int encoder_usage(struct model *m, struct usage_table *usage,
                         const int32_t *attention_mask, struct caem_error *err)
{
    const int32_t *mask = usage->count_padding ? NULL : attention_mask;
    for (int i = 0; i < usage->layers[0]; i++) {
        int row = usage_table_row(usage, 0, i);
        struct moe_routing routing;
        if (model_routing(m, 0, usage->blocks[row], &routing, err) != 0)
            return -1;
        usage_table_accumulate(usage, m->backend, row, &routing, mask);
    }
    return 0;
}

int model_generate(struct model *m, const int32_t *input_ids, const int32_t *attention_mask,
                   int B, int Te, const struct generate_options *opt, struct generate_output *out,
                   struct usage_table *usage, struct caem_error *err)
{
    if (out == NULL)
        return caem_fail(err, "the output struct is NULL");
    memset(out, 0, sizeof *out);
    if (opt == NULL)
        return caem_fail(err, "the generation options are NULL");
    if (validate_options(m, opt, err) != 0 ||
        validate_inputs(m, input_ids, attention_mask, B, Te, opt, err) != 0 ||
        (usage != NULL && usage_table_check_model(usage, &m->config, err) != 0))
        return -1;

    int training = m->training;
    m->training = 0;
    int K = opt->num_beams;
    struct decode_state *d = NULL;
    int status = model_encode(m, input_ids, attention_mask, B, Te, K, err);
    if (status == 0 && usage != NULL) {
        usage->decoder_source = USAGE_DECODER_GENERATED;
        status = encoder_usage(m, usage, attention_mask, err);
    }
    if (status == 0)
        status = decode_state_create(m, &d, B * K, opt->max_length - 1, K > 1, err);
    if (status == 0)
        status = output_alloc(out, B, err);
    if (status == 0)
        status = K == 1 ? greedy_search(m, d, opt, B, out, usage, err)
                        : beam_search(m, d, opt, B, out, usage, err);
    if (status != 0)
        generate_output_free(out);
    decode_state_free(m, d);
    model_release_workspace(m);
    m->training = training;
    return status;
}
