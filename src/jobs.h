/* The runtime's long operations as jobs (job.h): training, evaluation and a
 * usage pass. The unit of a train job is one optimizer step (trainer_step);
 * the unit of an evaluation or a usage pass is one batch (evaluator_step).
 *
 * A job works on a model state: a struct checkpoint whose model is set and
 * whose other members (optimizer, train state, usage records, history, root
 * attributes) it owns, as checkpoint_edit.h describes. The state and the
 * task are borrowed. While the job runs they belong to it, and the caller
 * touches the state again only after the job has ended or while it is paused
 * and idle (job.h). The task must stay unchanged until the job is freed. */
#ifndef CAEM_JOBS_H
#define CAEM_JOBS_H

#include "checkpoint.h"
#include "error.h"
#include "evaluate.h"
#include "job.h"
#include "task.h"
#include "train.h"

/* Columns of the history that a train job stores, in this order. */
extern const char *const train_history_columns[];
#define TRAIN_HISTORY_COLUMNS 11

/* Builds the history of a whole run in out, in the columns above. It has
 * the rows of `previous` (a resumed run's, or NULL), then the trainer's
 * steps. checkpoint_history_free releases it. */
int train_history_build(const struct checkpoint_history *previous,
                        const struct trainer *trainer, struct checkpoint_history *out,
                        struct caem_error *err);

/* Continues the saved run of a checkpoint in a trainer made for the same
 * model, task and options. It restores the AdamW moments and step counts,
 * the usage of the saved steps, and the train state (trainer_set_state). */
int trainer_restore(struct trainer *t, const struct checkpoint *ck, struct caem_error *err);

struct train_job_options {
    struct train_options train; /* train.steps counts the resumed steps too */
    /* 1: continue the run stored in the state (optimizer, train state,
     * history) exactly; the state's seed, batch size, accumulation and task
     * must match. 0: a new run from the state's parameters. */
    int resume;
    const char *checkpoint;     /* written every checkpoint_every steps and at
                                 * the end; NULL: none (copied) */
    long checkpoint_every;      /* 0: only at the end */
    const char *tokenizer_path; /* stored as the attribute "tokenizer"; NULL: none */
    /* Tasks trained together with the job's task (trainer_create_multi); the
     * tasks must outlive the job, the list is copied. NULL and 0 for a single
     * task. Resuming such a run needs the same tasks in the same order. */
    const struct task *const *more_tasks;
    int more_task_count;
};

struct train_job;

/* Starts training the state's model on the task's train split. The setup
 * (options, resume, the trainer and its optimizer) happens here, so that a
 * wrong option fails this call. With `paused` the job waits for job_resume
 * or job_step. *context stays valid until job_free(*out). */
int train_job_start(struct job **out, struct train_job **context, struct checkpoint *state,
                    const struct task *task, const struct train_job_options *o, int paused,
                    struct caem_error *err);

/* Stores the run in the state: a copy of the optimizer, the train state, the
 * history (the resumed run's rows, then this run's), the train and
 * validation usage under the task's name, and the attributes "task", "base"
 * and "tokenizer". Call it once the job has ended or while it is paused and
 * idle; calling it again stores the same run again. The worker calls it
 * before each checkpoint it writes. */
int train_job_store(struct train_job *tj, struct caem_error *err);

/* Copies the train-split usage since the run started and of the last
 * completed window into two tables that this call sets up. Safe while the
 * job runs. */
int train_job_usage(struct train_job *tj, struct usage_table *running,
                    struct usage_table *window, struct caem_error *err);

/* Copies the trainer's latest statistics into s, which train_job_snapshot_init
 * set up. Safe while the job runs. */
int train_job_snapshot_init(struct train_job *tj, struct train_snapshot *s,
                            struct caem_error *err);
void train_job_snapshot(struct train_job *tj, struct train_snapshot *s);

struct evaluate_job_options {
    struct evaluate_options evaluate; /* evaluate.generate = 0 for a usage pass */
    /* Appends the figures and the loss to PREFIX.csv and PREFIX.jsonl at the
     * end (results.h); NULL: no results files. Copied. */
    const char *results;
    const char *model_name;           /* the rows' model column; copied */
    long step;                        /* the rows' step column */
    int record;                       /* 1: store the usage in the state */
};

struct evaluate_job;

/* Starts an evaluation (kind "evaluate") or, with evaluate.generate = 0, a
 * usage pass (kind "usage") of the state's model on one split. At the end the
 * worker appends the results files and records the usage when asked, and a
 * failure there fails the job. *context stays valid until job_free(*out). */
int evaluate_job_start(struct job **out, struct evaluate_job **context,
                       struct checkpoint *state, const struct task *task,
                       const struct evaluate_job_options *o, int paused,
                       struct caem_error *err);

/* The evaluation once the job has finished, NULL before. Owned by the job. */
const struct evaluation *evaluate_job_result(const struct evaluate_job *ej);

#endif
