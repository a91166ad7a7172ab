/* Shared by the checkpoint writer (checkpoint.c) and reader
 * (checkpoint_read.c): the names the format uses. */
#ifndef CAEM_CHECKPOINT_INTERNAL_H
#define CAEM_CHECKPOINT_INTERNAL_H

#include <stddef.h>

#include <hdf5.h>

#include "checkpoint.h"
#include "config.h"
#include "error.h"
#include "usage.h"

/* One field of struct model_config, stored as an attribute of /config under
 * the field's name; routing is stored separately as a string. */
struct checkpoint_config_field {
    const char *name;
    int is_float; /* 0: int, stored as int32; 1: float, stored as float32 */
    size_t offset;
};

extern const struct checkpoint_config_field checkpoint_config_fields[];
extern const int checkpoint_config_field_count;

/* The fixed attributes of /train_state; any other integer attribute there is
 * one of the caller's extra values. */
extern const char *const checkpoint_train_attributes[];
extern const int checkpoint_train_attribute_count;

/* Room for an object path in the file, with its terminating null. */
#define CHECKPOINT_PATH_MAX 1024

/* Maximum length of a task, split or history column name, in bytes. */
#define CHECKPOINT_NAME_MAX 255

/* Formats an object path into out (CHECKPOINT_PATH_MAX bytes); fails when it
 * does not fit. */
int checkpoint_path(char *out, struct caem_error *err, const char *fmt, ...) CAEM_PRINTF(3, 4);

/* Checks that a task, split or column name can be a link name: not empty, no
 * '/', not "." or "..", at most CHECKPOINT_NAME_MAX bytes. `kind` names it in the message. */
int checkpoint_check_name(const char *kind, const char *name, struct caem_error *err);

/* Checks that a usage table has the model's MoE layers, in the model's
 * blocks; the message names the record as task/split. */
int checkpoint_check_usage_shape(const struct usage_table *t, const struct model_config *cfg,
                                 const char *task, const char *split, struct caem_error *err);

/* Names of the decoder source in /router_usage. */
const char *checkpoint_decoder_source_name(int source);

/* The /merge group (checkpoint_merge.c). */
int checkpoint_write_merge(hid_t file, const struct checkpoint *ck, struct caem_error *err);
int checkpoint_read_merge(hid_t file, const struct model_config *cfg, struct checkpoint *ck,
                          struct caem_error *err);
void checkpoint_free_merge(struct checkpoint *ck);

#endif
