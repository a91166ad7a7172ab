/* Checkpoints: one HDF5 file per model, readable by any HDF5 tool.
 *
 * A checkpoint contains the config, every parameter tensor, and optionally
 * the AdamW state, the training position for an exact resume, expert usage
 * tables per task and split, a history of per-step records, and free string
 * attributes (task, tokenizer, base model). docs/checkpoint-format.md
 * describes the layout.
 *
 * Writing goes to a temporary file that is renamed over the final name, so a
 * crash or a kill leaves either the old file or the new one under that name.
 * Reading checks every object it uses (presence, datatype, shape, checksum)
 * and fails with a message naming the file and the object.
 *
 * HDF5 serializes its calls on a library-wide lock (Debian's build is
 * thread-safe), so a save on a worker thread blocks a load on another thread
 * until it is done, but both are safe. */
#ifndef CAEM_CHECKPOINT_H
#define CAEM_CHECKPOINT_H

#include <stdint.h>

#include "adamw.h"
#include "backend.h"
#include "config.h"
#include "error.h"
#include "merge.h"
#include "model.h"
#include "usage.h"

#define CHECKPOINT_FORMAT "caem-checkpoint"
#define CHECKPOINT_FORMAT_VERSION 1
#define CHECKPOINT_TASK_MAX 128

/* The expert usage of one task's split. */
struct checkpoint_usage {
    char *task;
    char *split;
    struct usage_table table;
};

/* A table of per-step records: `columns` named float64 columns of `rows`
 * values each, column c at values[c * rows .. c * rows + rows - 1]. */
struct checkpoint_history {
    int columns;
    char **names;
    long rows;
    double *values;
};

/* The training position for an exact resume, beside the parameters and the
 * optimizer. */
struct checkpoint_train_state {
    uint64_t seed;          /* the run's seed */
    long step;              /* optimizer steps done */
    uint32_t epoch;
    long epoch_batch;       /* batches consumed in the current epoch */
    uint64_t rng_seed;      /* the model's dropout and jitter stream: rng.seed */
    uint64_t rng_next;      /* and rng.next */
    int batch_size;
    int accumulation;       /* batches accumulated per optimizer step */
    char task[CHECKPOINT_TASK_MAX];
    /* Further named integers that the trainer needs. */
    int extra_count;
    char **extra_names;
    int64_t *extra_values;
};

struct checkpoint {
    struct model *model;     /* required for saving */
    struct adamw *optimizer; /* NULL: none */
    int has_train_state;
    struct checkpoint_train_state train;
    struct checkpoint_usage *usage;
    int usage_count;
    struct checkpoint_history history;
    /* Provenance of a merged model, the /merge group; has_merge is 0 for
     * other models. merge_sources names each source (a path or a name), and
     * merge_usage describes the usage the allocation read. */
    int has_merge;
    struct merge_record merge;
    char **merge_sources;
    char *merge_usage;
    /* Free string attributes of the root group. The names "format",
     * "format_version" and "created" are reserved. */
    char **attr_names;
    char **attr_values;
    int attr_count;

    /* Filled by the readers and ignored by checkpoint_save, which takes them
     * from model and optimizer and the clock. */
    struct model_config config;
    int has_optimizer;
    struct adamw_config optimizer_config;
    long optimizer_step;
    char created[32]; /* ISO 8601 UTC, as written */
};

/* Writes the checkpoint to PATH.tmp-<pid>, flushes it to disk, closes it and
 * renames it over PATH. On any failure the temporary file is removed and
 * PATH is left untouched. Parameters and moments are read through the
 * backend, so they may live in device memory. */
int checkpoint_save(const char *path, const struct checkpoint *ck, struct caem_error *err);

/* Checks before any work that PATH can receive a checkpoint: not empty, not
 * a directory, in an existing writable directory, and not a file of another
 * kind, which checkpoint_save would replace. */
int checkpoint_check_target(const char *path, struct caem_error *err);

/* Reads a checkpoint and creates its model, and its optimizer when the file
 * has one, on `backend`. With a train state, the model's rng is set to
 * (rng_seed, rng_next). On failure *out is zeroed and nothing is allocated.
 * Usage records come grouped by task, in the order the tasks were first
 * saved. */
int checkpoint_load(const char *path, const struct backend *backend, struct checkpoint *out,
                    struct caem_error *err);

/* Reads everything except the tensor values: config, attributes, optimizer
 * settings and step, train state, usage and history. It checks that every
 * parameter (and moment) dataset exists with its shape and datatype but does
 * not read it. out->model and out->optimizer stay NULL. */
int checkpoint_load_summary(const char *path, struct checkpoint *out, struct caem_error *err);

/* Frees what checkpoint_load or checkpoint_load_summary allocated (model,
 * optimizer, usage, history, attributes) and zeroes the struct. Not for a
 * struct whose arrays the caller built. */
void checkpoint_free(struct checkpoint *ck);

/* Writes the 64-bit FNV-1a hash of the parameter values as 16 lowercase hex
 * digits: the bytes of every tensor as little-endian float32, in layout
 * order. It is the identity of a base model. */
void checkpoint_params_hash(const struct model *m, char out[17]);

#endif
