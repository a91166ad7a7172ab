#include "job.h"

#include <errno.h>
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

struct job {
    pthread_t thread;
    int thread_started;
    pthread_mutex_t lock;
    pthread_cond_t changed; /* any field below changed */

    const struct job_ops *ops;
    void *context;
    char kind[32];
    double started;

    /* guarded by lock */
    enum job_state state;
    double ended; /* when the job ended, 0 while it has not */
    int idle;
    int stop_requested;
    long done;   /* units done */
    long target; /* pause when done reaches it; -1: run to the end */
    long notify_every, notify_due, notify_taken;
    struct job_report report;
    char message[CAEM_ERROR_MAX];
};

const char *job_state_name(enum job_state state)
{
    switch (state) {
    case JOB_RUNNING: return "running";
    case JOB_PAUSED: return "paused";
    case JOB_STOPPED: return "stopped";
    case JOB_FINISHED: return "finished";
    case JOB_FAILED: return "failed";
    }
    return "unknown";
}

static double seconds_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static int job_ended(const struct job *job)
{
    return job->state == JOB_STOPPED || job->state == JOB_FINISHED || job->state == JOB_FAILED;
}

static void *job_worker(void *arg)
{
    struct job *job = arg;
    struct caem_error err;
    pthread_mutex_lock(&job->lock);
    for (;;) {
        while (job->state == JOB_PAUSED && !job->stop_requested)
            pthread_cond_wait(&job->changed, &job->lock);
        if (job->stop_requested) {
            job->state = JOB_STOPPED;
            break;
        }
        if (job->target >= 0 && job->done >= job->target) {
            job->state = JOB_PAUSED;
            pthread_cond_broadcast(&job->changed);
            continue;
        }

        /* one unit, outside the lock so that controls and status stay quick */
        job->idle = 0;
        pthread_mutex_unlock(&job->lock);
        int rc = job->ops->run_unit(job->context, &err);
        struct job_report report;
        job->ops->report(job->context, &report);
        pthread_mutex_lock(&job->lock);
        job->idle = 1;
        job->report = report;
        if (rc < 0) {
            snprintf(job->message, sizeof job->message, "%s", err.message);
            job->state = JOB_FAILED;
            break;
        }
        job->done++;
        if (job->notify_every > 0 && job->done % job->notify_every == 0)
            job->notify_due = job->done;
        if (rc == 1) {
            job->state = JOB_FINISHED;
            break;
        }
        pthread_cond_broadcast(&job->changed);
    }
    job->idle = 1;
    if (job->ended == 0.0)
        job->ended = seconds_now();
    pthread_cond_broadcast(&job->changed);
    pthread_mutex_unlock(&job->lock);
    return NULL;
}

int job_start(struct job **out, const char *kind, const struct job_ops *ops, void *context,
              int start_paused, struct caem_error *err)
{
    *out = NULL;
    struct job *job = calloc(1, sizeof *job);
    if (job == NULL) {
        if (ops->free != NULL)
            ops->free(context);
        return caem_fail(err, "out of memory for a %s job", kind);
    }
    job->ops = ops;
    job->context = context;
    snprintf(job->kind, sizeof job->kind, "%s", kind);
    job->started = seconds_now();
    job->state = start_paused ? JOB_PAUSED : JOB_RUNNING;
    job->idle = 1;
    job->target = -1;
    job->report.loss = job->report.cross_entropy = job->report.validation_loss = NAN;
    ops->report(context, &job->report);
    pthread_mutex_init(&job->lock, NULL);
    pthread_cond_init(&job->changed, NULL);
    int rc = pthread_create(&job->thread, NULL, job_worker, job);
    if (rc != 0) {
        job_free(job);
        return caem_fail(err, "cannot start the worker thread of a %s job: %s", kind,
                         strerror(rc));
    }
    job->thread_started = 1;
    *out = job;
    return 0;
}

void job_pause(struct job *job)
{
    pthread_mutex_lock(&job->lock);
    if (job->state == JOB_RUNNING)
        job->target = job->done;
    pthread_cond_broadcast(&job->changed);
    pthread_mutex_unlock(&job->lock);
}

void job_resume(struct job *job)
{
    pthread_mutex_lock(&job->lock);
    if (!job_ended(job)) {
        job->target = -1;
        job->state = JOB_RUNNING;
    }
    pthread_cond_broadcast(&job->changed);
    pthread_mutex_unlock(&job->lock);
}

void job_step(struct job *job, long n)
{
    pthread_mutex_lock(&job->lock);
    if (!job_ended(job) && n > 0) {
        /* counted from the units done, plus the one in flight if any, or from
         * the end of an earlier step request that has not finished yet */
        long base = job->done + (job->idle ? 0 : 1);
        if (job->target > base)
            base = job->target;
        job->target = base + n;
        job->state = JOB_RUNNING;
    }
    pthread_cond_broadcast(&job->changed);
    pthread_mutex_unlock(&job->lock);
}

void job_stop(struct job *job)
{
    pthread_mutex_lock(&job->lock);
    job->stop_requested = 1;
    /* A paused worker is idle, so the job ends now: job_wait must not see it
     * paused before the worker wakes up. */
    if (job->state == JOB_PAUSED) {
        job->state = JOB_STOPPED;
        job->ended = seconds_now();
    }
    pthread_cond_broadcast(&job->changed);
    pthread_mutex_unlock(&job->lock);
}

int job_wait(struct job *job, double timeout_seconds)
{
    struct timespec deadline;
    clock_gettime(CLOCK_REALTIME, &deadline);
    if (timeout_seconds >= 0.0) {
        double whole = floor(timeout_seconds);
        deadline.tv_sec += (time_t)whole;
        deadline.tv_nsec += (long)((timeout_seconds - whole) * 1e9);
        if (deadline.tv_nsec >= 1000000000L) {
            deadline.tv_sec++;
            deadline.tv_nsec -= 1000000000L;
        }
    }
    int result = 0;
    pthread_mutex_lock(&job->lock);
    for (;;) {
        if (job_ended(job) && job->idle) {
            result = 1;
            break;
        }
        if (job->state == JOB_PAUSED && job->idle) {
            result = 2;
            break;
        }
        if (timeout_seconds < 0.0) {
            pthread_cond_wait(&job->changed, &job->lock);
        } else if (pthread_cond_timedwait(&job->changed, &job->lock, &deadline) ==
                   ETIMEDOUT) {
            break;
        }
    }
    pthread_mutex_unlock(&job->lock);
    return result;
}

void job_status(struct job *job, struct job_status *out)
{
    pthread_mutex_lock(&job->lock);
    out->state = job->state;
    out->idle = job->idle;
    out->elapsed = (job->ended > 0.0 ? job->ended : seconds_now()) - job->started;
    out->report = job->report;
    snprintf(out->kind, sizeof out->kind, "%s", job->kind);
    snprintf(out->message, sizeof out->message, "%s", job->message);
    pthread_mutex_unlock(&job->lock);
}

void job_notify_every(struct job *job, long every)
{
    pthread_mutex_lock(&job->lock);
    job->notify_every = every > 0 ? every : 0;
    pthread_mutex_unlock(&job->lock);
}

int job_take_notification(struct job *job, long *step)
{
    int due = 0;
    pthread_mutex_lock(&job->lock);
    if (job->notify_due > job->notify_taken) {
        job->notify_taken = job->notify_due;
        *step = job->notify_due;
        due = 1;
    }
    pthread_mutex_unlock(&job->lock);
    return due;
}

void job_free(struct job *job)
{
    if (job == NULL)
        return;
    if (job->thread_started) {
        job_stop(job);
        pthread_join(job->thread, NULL);
    }
    if (job->ops->free != NULL)
        job->ops->free(job->context);
    pthread_cond_destroy(&job->changed);
    pthread_mutex_destroy(&job->lock);
    free(job);
}
