/* Changes to a checkpoint held in memory: its usage records, its root
 * attributes and a copy of an optimizer.
 *
 * The functions work on a struct checkpoint whose arrays and strings are all
 * owned and allocated with malloc, as checkpoint_load leaves them, so that
 * checkpoint_free releases them. A program keeps a model's state in such a
 * struct between training runs and saves it with checkpoint_save. On failure
 * the checkpoint is unchanged. */
#ifndef CAEM_CHECKPOINT_EDIT_H
#define CAEM_CHECKPOINT_EDIT_H

#include "adamw.h"
#include "checkpoint.h"
#include "error.h"
#include "usage.h"

/* Returns the value of a root attribute, or NULL when it is absent. */
const char *checkpoint_attribute(const struct checkpoint *ck, const char *name);

/* Sets a root attribute, replacing the value of one with the same name. */
int checkpoint_set_attribute(struct checkpoint *ck, const char *name, const char *value,
                             struct caem_error *err);

/* Looks up a named integer of the train state: 1 and *value when present,
 * else 0. */
int checkpoint_train_extra(const struct checkpoint *ck, const char *name, int64_t *value);

/* Sets a named integer of the train state, replacing one of the same name. */
int checkpoint_set_train_extra(struct checkpoint *ck, const char *name, int64_t value,
                               struct caem_error *err);

/* Stores a copy of a usage table as the record of (task, split), replacing
 * the record of the same task and split. */
int checkpoint_set_usage(struct checkpoint *ck, const char *task, const char *split,
                         const struct usage_table *table, struct caem_error *err);

/* Replaces the checkpoint's optimizer by a copy of opt (moments, per-tensor
 * steps, step count and settings) for ck->model. */
int checkpoint_set_optimizer(struct checkpoint *ck, const struct adamw *opt,
                             struct caem_error *err);

/* Copies a history table: names and values. dst is overwritten. */
int checkpoint_history_copy(struct checkpoint_history *dst,
                            const struct checkpoint_history *src, struct caem_error *err);

/* Frees a history's names and values and zeroes it. */
void checkpoint_history_free(struct checkpoint_history *h);

#endif
