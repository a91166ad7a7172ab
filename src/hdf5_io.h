/* Helpers over the HDF5 C library (version 1.10 or later) for the checkpoint
 * format: scalar attributes, checked datasets, link and attribute listings,
 * and the text of HDF5's error stack.
 *
 * Objects are named by absolute paths from the file ("/params/shared/
 * embedding"), and every message names the object and, where HDF5 reported
 * one, HDF5's own most specific message. Callers silence HDF5's automatic
 * error printing with h5io_quiet_begin, so nothing reaches stderr. */
#ifndef CAEM_HDF5_IO_H
#define CAEM_HDF5_IO_H

#include <hdf5.h>
#include <stddef.h>
#include <stdint.h>

#include "error.h"

/* HDF5's automatic error printing of the calling thread, saved by
 * h5io_quiet_begin and restored by h5io_quiet_end. */
struct h5io_quiet {
    H5E_auto2_t func;
    void *data;
};

void h5io_quiet_begin(struct h5io_quiet *saved);
void h5io_quiet_end(const struct h5io_quiet *saved);

/* Copies the most specific description on HDF5's error stack into out (an
 * empty string when the stack is empty) and clears the stack. */
void h5io_error_text(char *out, size_t size);

/* Formats the message like caem_fail, adds "(HDF5: <description>)" when HDF5's
 * error stack has one, clears the stack and returns -1. */
int h5io_fail(struct caem_error *err, const char *fmt, ...) CAEM_PRINTF(2, 3);

/* Writes the name of a datatype as "float32", "int64", "uint8", "string",
 * "compound" and so on. */
void h5io_type_name(hid_t type, char *out, size_t size);

/* 1 when every component of the absolute path exists, 0 when one does not,
 * -1 on an HDF5 failure, whose reason stays on HDF5's error stack for
 * h5io_fail. */
int h5io_exists(hid_t file, const char *path);

/* Scalar attributes. file_type is the stored type (H5T_STD_I64LE, ...),
 * mem_type the type of *value (H5T_NATIVE_INT64, ...). `where` names the
 * object in messages. */
int h5io_write_attribute(hid_t object, const char *where, const char *name, hid_t file_type,
                         hid_t mem_type, const void *value, struct caem_error *err);
/* Stores a fixed-length, null-terminated UTF-8 string. */
int h5io_write_string(hid_t object, const char *where, const char *name, const char *value,
                      struct caem_error *err);

/* 1 when the attribute exists, 0 when not, -1 on an HDF5 failure (the
 * reason stays on HDF5's error stack). */
int h5io_attribute_exists(hid_t object, const char *name);

/* Reads a scalar attribute that must exist and be of the class named by the
 * function, converted to the native type. Integer attributes accept any
 * integer width; HDF5 clips a value outside the native type's range. */
int h5io_read_int64(hid_t object, const char *where, const char *name, int64_t *out,
                    struct caem_error *err);
int h5io_read_uint64(hid_t object, const char *where, const char *name, uint64_t *out,
                     struct caem_error *err);
int h5io_read_double(hid_t object, const char *where, const char *name, double *out,
                     struct caem_error *err);
int h5io_read_float(hid_t object, const char *where, const char *name, float *out,
                    struct caem_error *err);
/* Reads a fixed-length or variable-length string attribute into a new
 * null-terminated string that the caller frees. */
int h5io_read_string(hid_t object, const char *where, const char *name, char **out,
                     struct caem_error *err);

/* Creates a dataset at an absolute path, creating missing groups on the way,
 * and writes data (which may be NULL when a dimension is 0). A non-empty
 * dataset is chunked with the Fletcher-32 checksum filter, so that a damaged
 * value fails the read instead of loading. */
int h5io_write_dataset(hid_t file, const char *path, hid_t file_type, hid_t mem_type, int rank,
                       const hsize_t *dims, const void *data, struct caem_error *err);

/* Expected class (H5T_FLOAT or H5T_INTEGER), size in bytes and shape of a
 * dataset, as h5io_open_dataset checks them. */
struct h5io_expect {
    H5T_class_t type_class;
    size_t type_size;
    int rank;
    hsize_t dims[2];
};

/* Opens the dataset at an absolute path and checks its datatype and shape.
 * Returns the dataset, or a negative id with a message that names the path
 * and, for a mismatch, the expected and the found type or shape. */
hid_t h5io_open_dataset(hid_t file, const char *path, const struct h5io_expect *expect,
                        struct caem_error *err);

/* Reads the whole dataset as mem_type into data; count is its element count,
 * and nothing is read when it is 0. */
int h5io_read_dataset(hid_t dataset, const char *path, hid_t mem_type, size_t count, void *data,
                      struct caem_error *err);

/* Opens the group at an absolute path, with a message naming it when it is
 * missing or not a group. */
hid_t h5io_open_group(hid_t file, const char *path, struct caem_error *err);

/* A list of names, in creation order where the object tracks it and in name
 * order otherwise. */
struct h5io_names {
    int count;
    char **names;
};

void h5io_names_free(struct h5io_names *names);

/* Lists the links (groups, datasets) directly under a group. */
int h5io_list_links(hid_t group, const char *where, struct h5io_names *out,
                    struct caem_error *err);

/* Lists the attributes of an object. */
int h5io_list_attributes(hid_t object, const char *where, struct h5io_names *out,
                         struct caem_error *err);

/* Creates a group whose links and attributes keep their creation order. */
hid_t h5io_create_group(hid_t location, const char *where, const char *name,
                        struct caem_error *err);

#endif
