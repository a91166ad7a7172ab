/* Single-task training: length-bucketed batches, gradient accumulation,
 * AdamW, validation every N steps, expert usage while training, and a
 * statistics snapshot that another thread may read.
 *
 * One optimizer step runs `accumulation` micro-batches of B examples from the
 * task's train split, adds their gradients, scales them by 1 / accumulation
 * and updates the parameters. Epochs follow one another with the batch order
 * of (seed, epoch) (task.h), so the run is a pure function of the seed, the
 * options, the task and the initial parameters: the same inputs give the
 * same losses bit for bit on the CPU backend, also across a stop and a resume
 * from the state that trainer_get_state returns.
 *
 * A step whose loss or gradient is not finite fails before the update. The
 * parameters stay those of the last good step and the trainer takes no more
 * steps; the message names the step and the last finite loss.
 *
 * Threads: one thread drives the trainer (trainer_step, trainer_validate);
 * trainer_snapshot may be called from any thread at any time. */
#ifndef CAEM_TRAIN_H
#define CAEM_TRAIN_H

#include <stdint.h>

#include "adamw.h"
#include "error.h"
#include "model.h"
#include "task.h"
#include "usage.h"

/* Tasks one trainer can train together. */
#define TRAIN_MAX_TASKS 16

struct train_options {
    int batch_size;           /* B: examples per micro-batch */
    int accumulation;         /* micro-batches per optimizer step */
    long steps;               /* optimizer steps of the whole run, resumed parts included */
    int validate_every;       /* steps between validation passes; 0 for none */
    long validation_examples; /* examples of the validation pass; 0 for all */
    int window;               /* steps per usage window */
    uint64_t seed;            /* batch order, dropout and router jitter */
    int count_padding;        /* count padding positions in the usage tables */
    struct adamw_config adamw;
};

/* B 8, 1 micro-batch per step, 100 steps, validation every 50 steps on at
 * most 256 examples, windows of 20 steps, seed 1, padding not counted, and
 * adamw_defaults(). */
struct train_options train_defaults(void);

/* Position of a run between two optimizer steps: what a checkpoint keeps
 * besides parameters and optimizer state to resume exactly. */
struct train_state {
    uint64_t seed;
    long step;          /* optimizer steps done */
    uint32_t epoch;     /* epoch of the first task's next micro-batch */
    long epoch_batch;   /* micro-batches of that epoch already used */
    uint64_t rng_next;  /* the model's random stream position (dropout, jitter) */
    /* Every task's position, for a run of several tasks; tasks = 0 means one
     * task, whose position is epoch and epoch_batch. */
    int tasks;
    uint32_t epochs[TRAIN_MAX_TASKS];
    long epoch_batches[TRAIN_MAX_TASKS];
};

/* Per-step figures kept for the history of a run. The router terms are
 * summed over encoder and decoder, unscaled. validation is NaN at steps
 * without a validation pass; entropies are those of the usage window so far. */
struct train_record {
    long step;
    double loss, cross_entropy, router_z, balance, grad_norm;
    double validation;
    double encoder_entropy, decoder_entropy;
    double tokens_per_second;
    double elapsed; /* seconds since the trainer was created */
};

enum train_status {
    TRAIN_READY,    /* no step yet */
    TRAIN_RUNNING,  /* steps done, more to go */
    TRAIN_FINISHED, /* options.steps reached */
    TRAIN_FAILED,   /* a step failed; see message */
};

/* A copy of the trainer's statistics, consistent as of one step. */
struct train_snapshot {
    enum train_status status;
    long step, steps;
    uint32_t epoch;
    struct train_record last;  /* the last step's record (zero before the first) */
    double validation_loss;    /* the last validation pass, NaN before one */
    long validation_step;      /* its step, -1 before one */
    double last_finite_loss;   /* NaN before the first step */
    long tokens;               /* real tokens (inputs and labels) trained on */
    double tokens_per_second;  /* over the steps of this process */
    double eta;                /* seconds to options.steps at the mean time per step so far,
                                * validation passes included */
    struct usage_table usage;  /* train-split usage since the run started */
    struct usage_table window; /* the last completed window of `window` steps */
    char message[CAEM_ERROR_MAX]; /* why the run failed */
};

struct trainer;

/* Multi-task training: each optimizer step takes `accumulation` micro-batches
 * from every task in turn and averages all their gradients. Each task keeps
 * its own place in its data, so an epoch of the smallest task (its size in
 * examples) rotates through the larger tasks' examples across epochs. The
 * first task's batches are those of a single-task run with the same seed;
 * task k's order uses seed + k. The validation loss is the mean of the
 * tasks' losses, and the usage is kept per task (trainer_task_usage) and
 * summed (trainer_usage). */
int trainer_create_multi(struct trainer **out, struct model *m,
                         const struct task *const *tasks, int count,
                         const struct train_options *options, struct caem_error *err);

/* Sets up training of m on the task's train split, which must be tokenized.
 * Creates an AdamW optimizer for m; the model and the task are borrowed and
 * must outlive the trainer. Sets the model's seed from the options. */
int trainer_create(struct trainer **out, struct model *m, const struct task *task,
                   const struct train_options *options, struct caem_error *err);
void trainer_free(struct trainer *t);

/* The optimizer, for saving and restoring its moments. */
struct adamw *trainer_optimizer(struct trainer *t);

/* Runs one optimizer step, and a validation pass when the step is a multiple
 * of validate_every. Fails when the run is finished or failed, and on a
 * non-finite loss or gradient. */
int trainer_step(struct trainer *t, struct caem_error *err);

/* Mean cross-entropy per label token of the validation split (at most
 * validation_examples examples) in eval mode, with teacher forcing. Adds the
 * validation usage to the trainer's validation table. */
int trainer_validate(struct trainer *t, double *loss, struct caem_error *err);

/* Returns the state to save with a checkpoint. */
void trainer_get_state(const struct trainer *t, struct train_state *state);

/* Continues from a saved state: the next step is state->step + 1 and uses
 * the batches an uninterrupted run would. Parameters and optimizer state are
 * restored separately. Fails when the seed differs from the options'. */
int trainer_set_state(struct trainer *t, const struct train_state *state,
                      struct caem_error *err);

/* Adds the usage of earlier steps (of a resumed run) on task `task`
 * (0-based) to the run's usage and that task's. */
int trainer_add_usage(struct trainer *t, int task, const struct usage_table *usage,
                      struct caem_error *err);

/* The usage of one task's batches over the run's steps; NULL for no such task. */
const struct usage_table *trainer_task_usage(const struct trainer *t, int task);

/* Number of tasks the trainer trains. */
int trainer_task_count(const struct trainer *t);

/* Task k of the run (0 is the first); k must be below trainer_task_count. */
const struct task *trainer_task(const struct trainer *t, int k);

/* The history of this process's steps, oldest first; valid until the next step. */
const struct train_record *trainer_history(const struct trainer *t, long *count);

/* Usage tables of the train split since the start (all tasks) and of the
 * last validation pass. */
const struct usage_table *trainer_usage(const struct trainer *t);
const struct usage_table *trainer_validation_usage(const struct trainer *t);

/* Allocates the snapshot's tables for this trainer's model. */
int train_snapshot_init(struct train_snapshot *s, const struct trainer *t,
                        struct caem_error *err);
void train_snapshot_free(struct train_snapshot *s);

/* Copies the latest statistics into s under the trainer's lock. */
void trainer_snapshot(struct trainer *t, struct train_snapshot *s);

#endif
