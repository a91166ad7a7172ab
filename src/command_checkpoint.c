/* caem info and caem import. */
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "checkpoint.h"
#include "commands.h"
#include "hf_import.h"

/* Expert columns that fit 80 columns beside the other columns of a usage
 * row. With more experts the row shows the largest shares instead. */
#define USAGE_EXPERT_COLUMNS 8
#define USAGE_TOP_EXPERTS 4

static void print_info_usage(FILE *out)
{
    fprintf(out,
            "usage: caem info CKPT.h5\n"
            "\n"
            "Prints a checkpoint's config, parameter count, optimizer and train state,\n"
            "root attributes, history, and for each expert usage record the kept tokens\n"
            "per expert, the normalized entropy and the dropped tokens of every MoE layer.\n"
            "Large counts are shortened with k (thousand), M (million) and G (billion).\n");
}

static void print_import_usage(FILE *out)
{
    fprintf(out,
            "usage: caem import DIR OUT.h5\n"
            "\n"
            "Converts a Hugging Face Switch Transformers directory (config.json with\n"
            "model.safetensors, or model.safetensors.index.json with its shards, as\n"
            "save_pretrained writes them) into a checkpoint. F16 and BF16 weights are\n"
            "converted to float32. The checkpoint's attribute 'source' is the directory\n"
            "and 'base' the hash of the parameters, the identity of a base model.\n");
}

/* Checks the arguments of a command that takes `count` paths. Returns 0
 * after printing the usage for --help, 2 for a wrong argument, and -1 when
 * the command should go on. */
static int parse_paths(int argc, char **argv, int count, void (*usage)(FILE *),
                       char **paths)
{
    int found = 0;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
            usage(stdout);
            return 0;
        }
        if (argv[i][0] == '-' && argv[i][1] != '\0') {
            fprintf(stderr, "caem %s: unknown option '%s' (see caem %s --help)\n", argv[0],
                    argv[i], argv[0]);
            return 2;
        }
        if (found == count) {
            fprintf(stderr, "caem %s: unexpected argument '%s' (see caem %s --help)\n",
                    argv[0], argv[i], argv[0]);
            return 2;
        }
        paths[found++] = argv[i];
    }
    if (found < count) {
        fprintf(stderr, "caem %s: expected %d path%s, got %d (see caem %s --help)\n", argv[0],
                count, count == 1 ? "" : "s", found, argv[0]);
        return 2;
    }
    return -1;
}

/* ---- caem info ---- */

/* Writes n with thousands separators: 1234567 as "1,234,567". */
static const char *format_thousands(long long n, char *out, size_t size)
{
    char digits[32];
    snprintf(digits, sizeof digits, "%lld", n < 0 ? -n : n);
    size_t length = strlen(digits), used = 0;
    if (n < 0 && used + 1 < size)
        out[used++] = '-';
    for (size_t i = 0; i < length && used + 2 < size; i++) {
        if (i > 0 && (length - i) % 3 == 0)
            out[used++] = ',';
        out[used++] = digits[i];
    }
    out[used] = '\0';
    return out;
}

/* Writes a count in at most 5 characters: exact below 100,000, then with k,
 * M or G and three significant digits. */
static const char *format_count(long long n, char *out, size_t size)
{
    static const char suffixes[] = "kMG";
    if (n < 100000) {
        snprintf(out, size, "%lld", n);
        return out;
    }
    double value = (double)n;
    int s = -1;
    while (value >= 999.5 && s < 2) {
        value /= 1000.0;
        s++;
    }
    int decimals = 0;
    if (value < 9.995)
        decimals = 2;
    else if (value < 99.95)
        decimals = 1;
    snprintf(out, size, "%.*f%c", decimals, value, suffixes[s]);
    return out;
}

static void print_config(const struct model_config *cfg)
{
    char *text = config_to_json(cfg);
    json_t *object = text != NULL ? json_loads(text, 0, NULL) : NULL;
    free(text);
    printf("config:\n");
    const char *key;
    json_t *value;
    json_object_foreach(object, key, value) {
        if (json_is_integer(value))
            printf("  %-32s %lld\n", key, (long long)json_integer_value(value));
        else if (json_is_real(value))
            printf("  %-32s %g\n", key, json_real_value(value));
        else
            printf("  %-32s %s\n", key, json_string_value(value));
    }
    json_decref(object);
}

static void print_parameters(const struct model_config *cfg)
{
    struct param_layout layout;
    struct caem_error err;
    if (param_layout_build(&layout, cfg, &err) != 0) {
        printf("parameters: unknown (%s)\n", err.message);
        return;
    }
    long long total = 0, experts = 0;
    for (int i = 0; i < layout.count; i++) {
        total += (long long)layout.tensors[i].count;
        if (layout.tensors[i].expert)
            experts += (long long)layout.tensors[i].count;
    }
    char total_text[32], expert_text[32];
    printf("parameters: %s in %d tensors, of which experts %s (%.1f%%)\n",
           format_thousands(total, total_text, sizeof total_text), layout.count,
           format_thousands(experts, expert_text, sizeof expert_text),
           total > 0 ? 100.0 * (double)experts / (double)total : 0.0);
    printf("MoE layers: encoder %d, decoder %d, of %d experts each\n",
           config_moe_layer_count(cfg, 0), config_moe_layer_count(cfg, 1), cfg->num_experts);
    param_layout_free(&layout);
}

static void print_training(const struct checkpoint *ck)
{
    if (ck->has_optimizer) {
        const struct adamw_config *c = &ck->optimizer_config;
        printf("optimizer: AdamW at step %ld\n", ck->optimizer_step);
        printf("  lr %g, betas %g and %g, eps %g, weight decay %g\n", (double)c->lr,
               (double)c->beta1, (double)c->beta2, (double)c->eps, (double)c->weight_decay);
    } else {
        printf("optimizer: none\n");
    }
    if (!ck->has_train_state) {
        printf("train state: none\n");
        return;
    }
    const struct checkpoint_train_state *t = &ck->train;
    printf("train state: task %s, step %ld, epoch %u after %ld batches\n",
           t->task[0] ? t->task : "(none)", t->step, t->epoch, t->epoch_batch);
    printf("  batch size %d, %d batches per optimizer step, seed %llu\n", t->batch_size,
           t->accumulation, (unsigned long long)t->seed);
    printf("  dropout and jitter stream: seed %llu, next index %llu\n",
           (unsigned long long)t->rng_seed, (unsigned long long)t->rng_next);
    for (int i = 0; i < t->extra_count; i++)
        printf("  %s %lld\n", t->extra_names[i], (long long)t->extra_values[i]);
}

static void print_attributes(const struct checkpoint *ck)
{
    printf("attributes:%s\n", ck->attr_count == 0 ? " none" : "");
    for (int i = 0; i < ck->attr_count; i++)
        printf("  %-12s %s\n", ck->attr_names[i], ck->attr_values[i]);
}

static void print_history(const struct checkpoint_history *h)
{
    if (h->columns == 0) {
        printf("history: none\n");
        return;
    }
    printf("history: %ld records; the last one:\n", h->rows);
    for (int c = 0; c < h->columns && h->rows > 0; c++)
        printf("  %-20s %g\n", h->names[c],
               h->values[(size_t)c * (size_t)h->rows + (size_t)h->rows - 1]);
}

struct share {
    int expert;
    long long kept;
};

static int by_kept_descending(const void *a, const void *b)
{
    const struct share *x = a, *y = b;
    if (x->kept != y->kept)
        return x->kept < y->kept ? 1 : -1;
    return x->expert - y->expert;
}

/* One row: block, tokens, normalized entropy, dropped tokens, then the kept
 * tokens of each expert, or the largest shares when there are many. */
static void print_usage_row(const struct usage_table *t, int row)
{
    const int64_t *kept = t->kept + (size_t)row * (size_t)t->experts;
    const int64_t *dropped = t->dropped + (size_t)row * (size_t)t->experts;
    long long dropped_total = 0, kept_total = 0;
    for (int e = 0; e < t->experts; e++) {
        dropped_total += dropped[e];
        kept_total += kept[e];
    }
    char tokens[32], dropped_text[32], cell[32];
    printf("  %5d %6s %7.3f %7s", t->blocks[row],
           format_count((long long)t->tokens[row], tokens, sizeof tokens),
           usage_table_entropy(t, row), format_count(dropped_total, dropped_text,
                                                     sizeof dropped_text));
    if (t->experts <= USAGE_EXPERT_COLUMNS) {
        for (int e = 0; e < t->experts; e++)
            printf(" %5s", format_count((long long)kept[e], cell, sizeof cell));
        printf("\n");
        return;
    }
    struct share shares[CONFIG_MAX_EXPERTS];
    for (int e = 0; e < t->experts; e++) {
        shares[e].expert = e;
        shares[e].kept = kept[e];
    }
    qsort(shares, (size_t)t->experts, sizeof shares[0], by_kept_descending);
    for (int i = 0; i < USAGE_TOP_EXPERTS; i++)
        printf("  e%-3d%5.1f%%", shares[i].expert,
               kept_total > 0 ? 100.0 * (double)shares[i].kept / (double)kept_total : 0.0);
    printf("\n");
}

static void print_usage_record(const struct checkpoint_usage *u)
{
    const struct usage_table *t = &u->table;
    printf("usage %s/%s: padding %s, decoder %s\n", u->task, u->split,
           t->count_padding ? "counted" : "not counted",
           t->decoder_source == USAGE_DECODER_GENERATED ? "on its generated output"
                                                        : "teacher-forced");
    if (t->experts <= USAGE_EXPERT_COLUMNS) {
        printf("  block tokens entropy dropped");
        for (int e = 0; e < t->experts; e++) {
            char label[16];
            snprintf(label, sizeof label, "e%d", e);
            printf(" %5s", label);
        }
        printf("\n");
    } else {
        printf("  block tokens entropy dropped  the %d experts with the most kept tokens\n",
               USAGE_TOP_EXPERTS);
    }
    for (int d = 0; d < 2; d++) {
        if (t->layers[d] == 0)
            continue;
        printf("  %s, mean normalized entropy %.3f\n", d ? "decoder" : "encoder",
               usage_table_mean_entropy(t, d));
        for (int i = 0; i < t->layers[d]; i++)
            print_usage_row(t, usage_table_row(t, d, i));
    }
}

/* The /merge provenance: sources, alpha, and per MoE layer the entropies,
 * the allocation and the source expert of each target slot. */
static void print_merge(const struct checkpoint *ck)
{
    const struct merge_record *r = &ck->merge;
    printf("merge: %d sources into %d experts per MoE layer, alpha %g (used %g), embedding "
           "%s, usage %s\n", r->sources, r->experts, r->alpha, r->alpha_used,
           r->embedding == MERGE_EMBEDDING_REFERENCE ? "as the reference code"
                                                    : "mean of encoder and decoder weights",
           ck->merge_usage != NULL && ck->merge_usage[0] != '\0' ? ck->merge_usage : "-");
    for (int i = 0; i < r->sources; i++)
        printf("  source %d: %s (weight encoder %.3f, decoder %.3f)\n", i + 1,
               ck->merge_sources[i], r->weights[0][i], r->weights[1][i]);
    if (r->uniform_fallbacks > 0)
        printf("  %d layers had entropy 0 for every source and were split uniformly\n",
               r->uniform_fallbacks);
    int rows = r->layers[0] + r->layers[1];
    for (int row = 0; row < rows; row++) {
        int decoder = row >= r->layers[0];
        printf("  %s MoE layer %d: entropy", decoder ? "decoder" : "encoder",
               (decoder ? row - r->layers[0] : row) + 1); /* from 1, as in Lua */
        for (int i = 0; i < r->sources; i++)
            printf(" %.3f", r->entropies[row * r->sources + i]);
        printf(", experts");
        for (int i = 0; i < r->sources; i++)
            printf(" %d", r->allocation[row * r->sources + i]);
        printf(", slots");
        for (int k = 0; k < r->experts && k < 16; k++)
            printf(" %d.%d", r->slot_source[row * r->experts + k] + 1,
                   r->slot_expert[row * r->experts + k]);
        printf(r->experts > 16 ? " ...\n" : "\n");
    }
}

int command_info(int argc, char **argv)
{
    char *path = NULL;
    int status = parse_paths(argc, argv, 1, print_info_usage, &path);
    if (status >= 0)
        return status;
    struct checkpoint ck;
    struct caem_error err;
    if (checkpoint_load_summary(path, &ck, &err) != 0) {
        fprintf(stderr, "caem info: %s\n", err.message);
        return 1;
    }
    printf("checkpoint: %s\n", path);
    printf("format: %s version %d, created %s\n", CHECKPOINT_FORMAT, CHECKPOINT_FORMAT_VERSION,
           ck.created);
    print_attributes(&ck);
    print_config(&ck.config);
    print_parameters(&ck.config);
    print_training(&ck);
    print_history(&ck.history);
    if (ck.usage_count == 0)
        printf("usage: none\n");
    for (int i = 0; i < ck.usage_count; i++)
        print_usage_record(&ck.usage[i]);
    if (ck.has_merge)
        print_merge(&ck);
    checkpoint_free(&ck);
    return 0;
}

/* ---- caem import ---- */

int command_import(int argc, char **argv)
{
    char *paths[2] = { NULL, NULL };
    int status = parse_paths(argc, argv, 2, print_import_usage, paths);
    if (status >= 0)
        return status;
    struct hf_import_report report;
    struct caem_error err;
    char base[17];
    if (hf_import_checkpoint(paths[0], paths[1], base, &report, &err) != 0) {
        fprintf(stderr, "caem import: %s\n", err.message);
        return 1;
    }
    printf("imported %s: %d tensors from %d file%s (F32 %d, F16 %d, BF16 %d), converted to "
           "float32\n", paths[0], report.tensors, report.files, report.files == 1 ? "" : "s",
           report.f32, report.f16, report.bf16);
    for (int i = 0; i < report.note_count; i++)
        printf("note: %s\n", report.notes[i]);
    printf("wrote %s (base %s)\n", paths[1], base);
    return 0;
}
