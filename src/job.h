/* Jobs: a long operation (training steps, an evaluation, a usage pass) run
 * on a worker thread, one unit of work at a time, that the caller can pause,
 * resume, advance by exactly n units, stop and wait for.
 *
 * The worker checks the controls between units, so a pause or a stop takes
 * effect when the current unit ends. The operation's memory (its model, its
 * task) belongs to the job while it runs: the caller must not use it until
 * the job has ended (job_wait returned 1) or is paused and idle
 * (job_status().idle). Every function may be called from any thread except
 * the worker; the Lua bindings call them from the main thread only. */
#ifndef CAEM_JOB_H
#define CAEM_JOB_H

#include "error.h"

enum job_state {
    JOB_RUNNING,  /* units are running or will run */
    JOB_PAUSED,   /* waiting for resume or step */
    JOB_STOPPED,  /* stopped by the caller before the end */
    JOB_FINISHED, /* every unit ran */
    JOB_FAILED,   /* a unit failed; see message */
};

/* Returns "running", "paused", "stopped", "finished" or "failed". */
const char *job_state_name(enum job_state state);

/* Progress of the operation after each unit, filled by its `report`. */
struct job_report {
    long step, steps;          /* units done, units in all */
    double loss, cross_entropy;/* the last training step's, NaN otherwise */
    double validation_loss;    /* NaN before a validation pass */
    double encoder_entropy, decoder_entropy;
    double tokens_per_second;
    double eta;                /* seconds */
};

struct job_status {
    enum job_state state;
    int idle;                  /* 1 when the worker is not inside a unit */
    double elapsed;            /* seconds from the start to the end, or to now */
    struct job_report report;
    char kind[32];             /* "train", "evaluate", ... */
    char message[CAEM_ERROR_MAX]; /* why it failed */
};

/* The operation a job runs. */
struct job_ops {
    /* Runs one unit: returns 0 when more units remain, 1 after the last one,
     * -1 on failure with err set. */
    int (*run_unit)(void *context, struct caem_error *err);
    /* Fills the report; called on the worker after each unit. */
    void (*report)(void *context, struct job_report *out);
    /* Frees the context when the job is freed; may be NULL. */
    void (*free)(void *context);
};

struct job;

/* Starts a worker that runs the units of `ops` on `context` in a loop.
 * With start_paused the worker waits for job_resume or job_step first. The
 * job owns the context from here on, also when this call fails. */
int job_start(struct job **out, const char *kind, const struct job_ops *ops, void *context,
              int start_paused, struct caem_error *err);

/* Pauses after the current unit. */
void job_pause(struct job *job);

/* Resumes a paused job; it runs to the end. */
void job_resume(struct job *job);

/* Runs exactly n more units, then pauses (or ends, if the units run out).
 * The n units come after those of an earlier call that are still to run. */
void job_step(struct job *job, long n);

/* Stops after the current unit; a paused job stops at once. */
void job_stop(struct job *job);

/* Waits until the job has ended or is paused and idle, or until
 * timeout_seconds have passed (negative: no limit). Returns 1 when it has
 * ended, 2 when it is paused and idle, 0 on timeout. */
int job_wait(struct job *job, double timeout_seconds);

/* Copies the job's state and latest report. */
void job_status(struct job *job, struct job_status *out);

/* Asks for a notification every `every` units (0: none). */
void job_notify_every(struct job *job, long every);

/* Returns 1 and sets *step when a notification is due, once per due step. */
int job_take_notification(struct job *job, long *step);

/* Stops the job, waits for the worker and frees everything, the context
 * included. */
void job_free(struct job *job);

#endif
