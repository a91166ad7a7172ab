/* Jobs: the worker runs units until paused or stopped, and step(n) runs
 * exactly n more. Pause and stop take effect after the current unit, a
 * failing unit ends the job with its message, and notifications come once
 * per due step. */
#include <string.h>
#include <time.h>

#include "job.h"
#include "test.h"

struct counter {
    long units, limit, fail_at;
    long sleep_us;
};

static int counter_unit(void *context, struct caem_error *err)
{
    struct counter *c = context;
    if (c->sleep_us > 0) {
        struct timespec ts = { 0, c->sleep_us * 1000 };
        nanosleep(&ts, NULL);
    }
    c->units++;
    if (c->units == c->fail_at)
        return caem_fail(err, "unit %ld failed on purpose", c->units);
    return c->units >= c->limit ? 1 : 0;
}

static void counter_report(void *context, struct job_report *out)
{
    struct counter *c = context;
    memset(out, 0, sizeof *out);
    out->step = c->units;
    out->steps = c->limit;
}

static const struct job_ops counter_ops = { counter_unit, counter_report, NULL };

static void test_runs_to_the_end(void)
{
    struct counter c = { 0, 50, 0, 0 };
    struct job *job;
    struct caem_error err;
    CHECK(job_start(&job, "count", &counter_ops, &c, 0, &err) == 0);
    CHECK_INT_EQ(job_wait(job, 10.0), 1);
    struct job_status s;
    job_status(job, &s);
    CHECK_INT_EQ(s.state, JOB_FINISHED);
    CHECK_INT_EQ(s.report.step, 50);
    CHECK(strcmp(s.kind, "count") == 0);
    job_free(job);
    CHECK_INT_EQ(c.units, 50);
}

static void test_step_runs_exactly_n(void)
{
    struct counter c = { 0, 100, 0, 200 };
    struct job *job;
    struct caem_error err;
    CHECK(job_start(&job, "count", &counter_ops, &c, 1, &err) == 0);
    CHECK_INT_EQ(job_wait(job, 10.0), 2);
    CHECK_INT_EQ(c.units, 0);
    job_step(job, 3);
    CHECK_INT_EQ(job_wait(job, 10.0), 2);
    CHECK_INT_EQ(c.units, 3);
    job_step(job, 5);
    CHECK_INT_EQ(job_wait(job, 10.0), 2);
    struct job_status s;
    job_status(job, &s);
    CHECK_INT_EQ(s.state, JOB_PAUSED);
    CHECK_INT_EQ(s.report.step, 8);
    job_free(job);
}

static void test_pause_resume_stop(void)
{
    struct counter c = { 0, 1000000, 0, 500 };
    struct job *job;
    struct caem_error err;
    CHECK(job_start(&job, "count", &counter_ops, &c, 0, &err) == 0);
    CHECK_INT_EQ(job_wait(job, 0.02), 0);
    job_pause(job);
    CHECK_INT_EQ(job_wait(job, 10.0), 2);
    long paused_at = c.units;
    CHECK_INT_EQ(job_wait(job, 0.02), 2);
    CHECK_INT_EQ(c.units, paused_at);
    job_resume(job);
    struct job_status s;
    for (int i = 0; i < 5000; i++) {
        job_status(job, &s);
        if (s.report.step > paused_at)
            break;
        CHECK_INT_EQ(job_wait(job, 0.001), 0);
    }
    CHECK(s.report.step > paused_at);
    job_stop(job);
    CHECK_INT_EQ(job_wait(job, 10.0), 1);
    job_status(job, &s);
    CHECK_INT_EQ(s.state, JOB_STOPPED);
    CHECK(strcmp(job_state_name(s.state), "stopped") == 0);
    job_free(job);
}

static void test_failure_ends_job(void)
{
    struct counter c = { 0, 100, 7, 0 };
    struct job *job;
    struct caem_error err;
    CHECK(job_start(&job, "count", &counter_ops, &c, 0, &err) == 0);
    CHECK_INT_EQ(job_wait(job, 10.0), 1);
    struct job_status s;
    job_status(job, &s);
    CHECK_INT_EQ(s.state, JOB_FAILED);
    CHECK_MSG(strstr(s.message, "unit 7 failed") != NULL, "%s", s.message);
    job_step(job, 3);
    CHECK_INT_EQ(job_wait(job, 10.0), 1);
    CHECK_INT_EQ(c.units, 7);
    job_free(job);
}

static void test_notifications_once_per_step(void)
{
    struct counter c = { 0, 20, 0, 0 };
    struct job *job;
    struct caem_error err;
    CHECK(job_start(&job, "count", &counter_ops, &c, 1, &err) == 0);
    job_notify_every(job, 5);
    job_step(job, 5);
    CHECK_INT_EQ(job_wait(job, 10.0), 2);
    long step = 0;
    CHECK_INT_EQ(job_take_notification(job, &step), 1);
    CHECK_INT_EQ(step, 5);
    CHECK_INT_EQ(job_take_notification(job, &step), 0);
    job_step(job, 4);
    CHECK_INT_EQ(job_wait(job, 10.0), 2);
    CHECK_INT_EQ(job_take_notification(job, &step), 0);
    job_resume(job);
    CHECK_INT_EQ(job_wait(job, 10.0), 1);
    CHECK_INT_EQ(job_take_notification(job, &step), 1);
    CHECK_INT_EQ(step, 20);
    job_free(job);
}

/* A paused job is stopped by the time job_stop returns. */
static void test_stop_paused_ends_at_once(void)
{
    struct counter c = { 0, 100, 0, 0 };
    struct job *job;
    struct caem_error err;
    CHECK(job_start(&job, "count", &counter_ops, &c, 1, &err) == 0);
    job_step(job, 2);
    CHECK_INT_EQ(job_wait(job, 10.0), 2);
    job_stop(job);
    CHECK_INT_EQ(job_wait(job, 0.0), 1);
    struct job_status s;
    job_status(job, &s);
    CHECK_INT_EQ(s.state, JOB_STOPPED);
    job_resume(job);
    CHECK_INT_EQ(job_wait(job, 10.0), 1);
    CHECK_INT_EQ(c.units, 2);
    job_free(job);
}

/* Freeing a running job stops it first. */
static void test_free_stops_running(void)
{
    struct counter c = { 0, 1000000000L, 0, 100 };
    struct job *job;
    struct caem_error err;
    CHECK(job_start(&job, "count", &counter_ops, &c, 0, &err) == 0);
    job_free(job);
    CHECK(c.units < 1000000000L);
}

/* Steps requested one after another add up, also while the first one's
 * unit is still running (F9 pressed three times on the screen). */
static void test_step_requests_add_up(void)
{
    struct counter c = { 0, 100, 0, 50 * 1000 };
    struct job *job;
    struct caem_error err;
    CHECK(job_start(&job, "count", &counter_ops, &c, 1, &err) == 0);
    CHECK_INT_EQ(job_wait(job, 10.0), 2);
    job_step(job, 1);
    job_step(job, 1);
    job_step(job, 1);
    CHECK_INT_EQ(job_wait(job, 10.0), 2);
    CHECK_INT_EQ(c.units, 3);
    job_step(job, 2);
    CHECK_INT_EQ(job_wait(job, 10.0), 2);
    CHECK_INT_EQ(c.units, 5);
    job_free(job);
}

/* The elapsed time of an ended job is its run time: it stops growing when
 * the job finishes, and when a paused job is stopped. */
static void test_elapsed_stops_at_end(void)
{
    const struct timespec wait = { 0, 200 * 1000 * 1000 };
    struct counter c = { 0, 5, 0, 0 };
    struct job *job;
    struct caem_error err;
    CHECK(job_start(&job, "count", &counter_ops, &c, 0, &err) == 0);
    CHECK_INT_EQ(job_wait(job, 10.0), 1);
    struct job_status first, later;
    job_status(job, &first);
    nanosleep(&wait, NULL);
    job_status(job, &later);
    CHECK_MSG(later.elapsed == first.elapsed, "finished: %.3f s, then %.3f s", first.elapsed,
              later.elapsed);
    job_free(job);

    CHECK(job_start(&job, "count", &counter_ops, &c, 1, &err) == 0);
    job_stop(job);
    CHECK_INT_EQ(job_wait(job, 10.0), 1);
    job_status(job, &first);
    nanosleep(&wait, NULL);
    job_status(job, &later);
    CHECK_MSG(later.elapsed == first.elapsed, "stopped while paused: %.3f s, then %.3f s",
              first.elapsed, later.elapsed);
    job_free(job);
}

int main(void)
{
    TEST_SUITE("job");
    RUN_TEST(runs_to_the_end);
    RUN_TEST(step_runs_exactly_n);
    RUN_TEST(pause_resume_stop);
    RUN_TEST(failure_ends_job);
    RUN_TEST(notifications_once_per_step);
    RUN_TEST(stop_paused_ends_at_once);
    RUN_TEST(free_stops_running);
    RUN_TEST(elapsed_stops_at_end);
    RUN_TEST(step_requests_add_up);
    TEST_MAIN_END();
}
