#include "merge.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

struct merge_options merge_defaults(void)
{
    struct merge_options o;
    memset(&o, 0, sizeof o);
    o.alpha = 1.0;
    o.clamp_alpha = 1;
    o.embedding = MERGE_EMBEDDING_MEAN;
    return o;
}

/* ---- allocation ---- */

static int check_allocation_request(const double *entropies, int tasks, int n_m, int n_s,
                                    double alpha, struct caem_error *err)
{
    if (tasks < 1 || tasks > MERGE_MAX_SOURCES)
        return caem_fail(err, "invalid number of source models %d, expected 1 to %d", tasks,
                         MERGE_MAX_SOURCES);
    if (n_s < 1)
        return caem_fail(err, "invalid source expert count %d, expected at least 1", n_s);
    if (n_m < tasks || n_m > (long)tasks * n_s)
        return caem_fail(err, "no allocation of %d target experts to %d tasks exists with "
                         "1 to %d experts each (expected %d to %ld target experts)", n_m,
                         tasks, n_s, tasks, (long)tasks * n_s);
    if (!(alpha >= 0.0 && alpha <= 1.0))
        return caem_fail(err, "invalid alpha %g, expected a value in [0, 1]", alpha);
    for (int i = 0; i < tasks; i++)
        if (!(entropies[i] >= 0.0) || !isfinite(entropies[i]))
            return caem_fail(err, "invalid normalized entropy %g of task %d, expected a "
                             "finite value >= 0", entropies[i], i + 1);
    return 0;
}

/* Too many experts: take from the tasks with the most, the smallest
 * remainder first (ties: lower index). */
static void allocation_shrink(int *n, double *remainder, const double *shares, int tasks,
                              int target)
{
    int total = 0;
    for (int i = 0; i < tasks; i++)
        total += n[i];
    while (total > target) {
        int max_count = 0, pick = -1;
        for (int i = 0; i < tasks; i++)
            if (n[i] > max_count)
                max_count = n[i];
        for (int i = 0; i < tasks; i++)
            if (n[i] == max_count && (pick < 0 || remainder[i] < remainder[pick]))
                pick = i;
        n[pick]--;
        remainder[pick] = shares[pick] - n[pick];
        total--;
    }
}

/* Too few experts: hand out `rest` among the tasks still below n_s. */
static void allocation_grow(int *n, double *remainder, int tasks, int n_s, int rest)
{
    int eligible[MERGE_MAX_SOURCES], count = 0;
    for (int i = 0; i < tasks; i++)
        if (n[i] < n_s)
            eligible[count++] = i;
    if (count == 1) {
        n[eligible[0]] += rest;
        return;
    }
    if (count == 2) {
        int first = eligible[0], second = eligible[1];
        if (remainder[second] > remainder[first]) {
            first = eligible[1];
            second = eligible[0];
        }
        int larger = (rest + 1) / 2, smaller = rest / 2;
        /* a share beyond n_s goes to the other task, which has room for it
         * because a valid allocation exists */
        int overflow = n[first] + larger - n_s;
        if (overflow > 0) {
            larger -= overflow;
            smaller += overflow;
        }
        overflow = n[second] + smaller - n_s;
        if (overflow > 0) {
            smaller -= overflow;
            larger += overflow;
        }
        n[first] += larger;
        n[second] += smaller;
        return;
    }
    /* Round-robin: each round gives one expert to the task with the highest
     * remainder and zeroes that remainder (ties: lower index). */
    while (rest > 0) {
        int pick = -1;
        for (int k = 0; k < count; k++) {
            int i = eligible[k];
            if (n[i] < n_s && (pick < 0 || remainder[i] > remainder[pick]))
                pick = i;
        }
        n[pick]++;
        remainder[pick] = 0.0;
        rest--;
    }
}

int merge_allocate(const double *entropies, int tasks, int n_m, int n_s, double alpha,
                   int clamp_alpha, int *out, struct merge_allocation_report *report,
                   struct caem_error *err)
{
    if (check_allocation_request(entropies, tasks, n_m, n_s, alpha, err) != 0)
        return -1;
    struct merge_allocation_report local;
    if (report == NULL)
        report = &local;
    memset(report, 0, sizeof *report);
    if (clamp_alpha && alpha < MERGE_REFERENCE_MIN_ALPHA)
        alpha = MERGE_REFERENCE_MIN_ALPHA;
    report->alpha = alpha;

    /* shares: the entropy term blended toward uniform */
    double sum = 0.0;
    for (int i = 0; i < tasks; i++)
        sum += entropies[i];
    report->uniform_fallback = !(sum > 0.0);
    double uniform = (double)n_m / tasks;
    double remainder[MERGE_MAX_SOURCES];
    int total = 0;
    for (int i = 0; i < tasks; i++) {
        double raw = report->uniform_fallback ? uniform : n_m * entropies[i] / sum;
        double share = alpha * raw + (1.0 - alpha) * uniform;
        report->shares[i] = share;
        int n = (int)floor(share);
        out[i] = n < 1 ? 1 : (n > n_s ? n_s : n);
        remainder[i] = share - out[i];
        total += out[i];
    }

    /* AdjustAlloc */
    if (total > n_m)
        allocation_shrink(out, remainder, report->shares, tasks, n_m);
    else if (total < n_m)
        allocation_grow(out, remainder, tasks, n_s, n_m - total);
    return 0;
}
