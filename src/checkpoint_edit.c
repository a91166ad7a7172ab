#include "checkpoint_edit.h"

#include <stdlib.h>
#include <string.h>

static char *copy_string(const char *s, struct caem_error *err)
{
    char *copy = strdup(s);
    if (copy == NULL)
        caem_fail(err, "out of memory for the string '%.64s'", s);
    return copy;
}

const char *checkpoint_attribute(const struct checkpoint *ck, const char *name)
{
    for (int i = 0; i < ck->attr_count; i++)
        if (strcmp(ck->attr_names[i], name) == 0)
            return ck->attr_values[i];
    return NULL;
}

int checkpoint_set_attribute(struct checkpoint *ck, const char *name, const char *value,
                             struct caem_error *err)
{
    /* the writer sets these itself, and a save would reject them */
    static const char *const reserved[] = { "format", "format_version", "created" };
    for (size_t r = 0; r < sizeof reserved / sizeof reserved[0]; r++)
        if (strcmp(name, reserved[r]) == 0)
            return caem_fail(err, "root attribute '%s' is reserved: the writer sets it", name);
    char *new_value = copy_string(value, err);
    if (new_value == NULL)
        return -1;
    for (int i = 0; i < ck->attr_count; i++) {
        if (strcmp(ck->attr_names[i], name) == 0) {
            free(ck->attr_values[i]);
            ck->attr_values[i] = new_value;
            return 0;
        }
    }
    char *new_name = copy_string(name, err);
    size_t count = (size_t)ck->attr_count + 1;
    char **names = new_name != NULL ? realloc(ck->attr_names, sizeof *names * count) : NULL;
    if (names != NULL)
        ck->attr_names = names;
    char **values = names != NULL ? realloc(ck->attr_values, sizeof *values * count) : NULL;
    if (values == NULL) {
        free(new_name);
        free(new_value);
        return caem_fail(err, "out of memory for root attribute '%s'", name);
    }
    ck->attr_values = values;
    ck->attr_names[ck->attr_count] = new_name;
    ck->attr_values[ck->attr_count] = new_value;
    ck->attr_count++;
    return 0;
}

int checkpoint_train_extra(const struct checkpoint *ck, const char *name, int64_t *value)
{
    for (int i = 0; i < ck->train.extra_count; i++) {
        if (strcmp(ck->train.extra_names[i], name) == 0) {
            *value = ck->train.extra_values[i];
            return 1;
        }
    }
    return 0;
}

int checkpoint_set_train_extra(struct checkpoint *ck, const char *name, int64_t value,
                               struct caem_error *err)
{
    struct checkpoint_train_state *t = &ck->train;
    for (int i = 0; i < t->extra_count; i++) {
        if (strcmp(t->extra_names[i], name) == 0) {
            t->extra_values[i] = value;
            return 0;
        }
    }
    char *new_name = copy_string(name, err);
    size_t count = (size_t)t->extra_count + 1;
    char **names = new_name != NULL ? realloc(t->extra_names, sizeof *names * count) : NULL;
    if (names != NULL)
        t->extra_names = names;
    int64_t *values = names != NULL ? realloc(t->extra_values, sizeof *values * count) : NULL;
    if (values == NULL) {
        free(new_name);
        return caem_fail(err, "out of memory for train state value '%s'", name);
    }
    t->extra_values = values;
    t->extra_names[t->extra_count] = new_name;
    t->extra_values[t->extra_count] = value;
    t->extra_count++;
    return 0;
}

int checkpoint_set_usage(struct checkpoint *ck, const char *task, const char *split,
                         const struct usage_table *table, struct caem_error *err)
{
    struct usage_table copy;
    if (usage_table_clone(&copy, table, err) != 0)
        return -1;
    for (int i = 0; i < ck->usage_count; i++) {
        struct checkpoint_usage *u = &ck->usage[i];
        if (strcmp(u->task, task) == 0 && strcmp(u->split, split) == 0) {
            usage_table_free(&u->table);
            u->table = copy;
            return 0;
        }
    }
    struct checkpoint_usage record = { copy_string(task, err), copy_string(split, err), copy };
    struct checkpoint_usage *grown = NULL;
    if (record.task != NULL && record.split != NULL)
        grown = realloc(ck->usage, sizeof *grown * (size_t)(ck->usage_count + 1));
    if (grown == NULL) {
        free(record.task);
        free(record.split);
        usage_table_free(&copy);
        return caem_fail(err, "out of memory for the usage record of task '%s', split '%s'",
                         task, split);
    }
    ck->usage = grown;
    ck->usage[ck->usage_count++] = record;
    return 0;
}

int checkpoint_set_optimizer(struct checkpoint *ck, const struct adamw *opt,
                             struct caem_error *err)
{
    struct adamw *copy;
    if (adamw_create(&copy, ck->model, &opt->config, err) != 0)
        return -1;
    const struct backend *be = ck->model->backend;
    be->copy(copy->m, opt->m, sizeof(float) * opt->count);
    be->copy(copy->v, opt->v, sizeof(float) * opt->count);
    memcpy(copy->tensor_steps, opt->tensor_steps,
           sizeof *copy->tensor_steps * (size_t)ck->model->layout.count);
    copy->step = opt->step;
    adamw_free(ck->optimizer);
    ck->optimizer = copy;
    ck->has_optimizer = 1;
    ck->optimizer_config = opt->config;
    ck->optimizer_step = opt->step;
    return 0;
}

void checkpoint_history_free(struct checkpoint_history *h)
{
    for (int c = 0; c < h->columns && h->names != NULL; c++)
        free(h->names[c]);
    free(h->names);
    free(h->values);
    memset(h, 0, sizeof *h);
}

int checkpoint_history_copy(struct checkpoint_history *dst,
                            const struct checkpoint_history *src, struct caem_error *err)
{
    memset(dst, 0, sizeof *dst);
    size_t cells = (size_t)src->columns * (size_t)src->rows;
    dst->names = calloc(src->columns > 0 ? (size_t)src->columns : 1, sizeof *dst->names);
    dst->values = malloc(sizeof *dst->values * (cells > 0 ? cells : 1));
    if (dst->names == NULL || dst->values == NULL) {
        checkpoint_history_free(dst);
        return caem_fail(err, "out of memory for a history of %ld steps", src->rows);
    }
    dst->columns = src->columns;
    dst->rows = src->rows;
    for (int c = 0; c < src->columns; c++) {
        dst->names[c] = copy_string(src->names[c], err);
        if (dst->names[c] == NULL) {
            checkpoint_history_free(dst);
            return -1;
        }
    }
    if (cells > 0)
        memcpy(dst->values, src->values, sizeof *dst->values * cells);
    return 0;
}
