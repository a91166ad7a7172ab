/* Reader and writer for the safetensors file format.
 *
 * A file is an 8-byte little-endian header length N, then N bytes of a UTF-8 JSON
 * object, then the data section. The JSON maps each tensor name to
 * {"dtype", "shape", "data_offsets": [begin, end]}, where the offsets are byte
 * positions relative to the start of the data section. An optional "__metadata__"
 * entry maps string keys to string values.
 *
 * Like the reference implementation (the Python package safetensors 0.8.0), the
 * reader requires the tensors to cover the data section exactly, without gaps,
 * overlaps or trailing bytes. Every validation failure leaves a message in the
 * caller's struct caem_error that names the file and, where one is involved, the
 * tensor. */
#ifndef CAEM_SAFETENSORS_H
#define CAEM_SAFETENSORS_H

#include <stddef.h>
#include <stdint.h>

#include "error.h"

/* The dtypes this project reads and writes, named in files as "F32", "F16", "BF16",
 * "F64", "I64", "I32", "I16", "I8", "U8" and "BOOL". Other dtypes of the format
 * (unsigned 16-64 bit, 8-bit floats) are rejected as unsupported. */
enum st_dtype { ST_F32, ST_F16, ST_BF16, ST_F64, ST_I64, ST_I32, ST_I16, ST_I8, ST_U8, ST_BOOL };

#define ST_MAX_DIMS 8

/* One tensor of an open file. `data` points at `nbytes` little-endian bytes inside
 * the file contents, which the struct safetensors owns. The data section starts at
 * a 64-byte boundary, but a tensor is only as aligned as its offset inside that
 * section, so read the bytes with memcpy or the safetensors_read_* functions. */
struct st_tensor {
    char *name;
    enum st_dtype dtype;
    int ndim;                     /* 0 for a scalar */
    int64_t shape[ST_MAX_DIMS];
    size_t count;                 /* elements: the product of the shape, 1 for a scalar */
    size_t nbytes;
    const void *data;
};

/* An open file: its tensors, its metadata and the contents of its data section. */
struct safetensors;

/* Reads and validates the whole file at `path`. On success *out owns the file's
 * contents until safetensors_close. On failure *out is NULL. */
int safetensors_open(struct safetensors **out, const char *path, struct caem_error *err);

/* Frees everything that safetensors_open allocated. Accepts NULL. */
void safetensors_close(struct safetensors *st);

int safetensors_count(const struct safetensors *st);

/* Returns the tensor at `index` in the order of their data offsets, or NULL when the
 * index is out of range. */
const struct st_tensor *safetensors_at(const struct safetensors *st, int index);

/* Returns the tensor called `name`, or NULL when the file has none. */
const struct st_tensor *safetensors_find(const struct safetensors *st, const char *name);

/* Returns the "__metadata__" value for `key`, or NULL when absent. The string lives
 * until safetensors_close. */
const char *safetensors_metadata(const struct safetensors *st, const char *key);

/* Returns the dtype's name as the format spells it ("F32", "BF16", ...). */
const char *safetensors_dtype_name(enum st_dtype dtype);

/* Copies tensor `name` into dst as float32, converting from F16, BF16 and F64. Fails
 * for integer dtypes, for a missing tensor, and when the tensor does not have
 * exactly `count` elements. The error names the tensor and the file. */
int safetensors_read_f32(const struct safetensors *st, const char *name, float *dst,
                         size_t count, struct caem_error *err);

/* Copies integer tensor `name` into dst as int64, converting from I32, I16, I8, U8
 * and BOOL. Fails for floating-point dtypes, for a BOOL byte other than 0 or 1, for
 * a missing tensor and for an element count other than `count`. */
int safetensors_read_i64(const struct safetensors *st, const char *name, int64_t *dst,
                         size_t count, struct caem_error *err);

/* A tensor to write. `data` contains product(shape) elements of `dtype` in row-major
 * order, as little-endian values. It may be NULL only when that product is 0. */
struct st_write_tensor {
    const char *name;
    enum st_dtype dtype;
    int ndim;
    const int64_t *shape;
    const void *data;
};

/* Writes the tensors, in the given order and without gaps, and the metadata to
 * `path`. `metadata_kv` is NULL or a NULL-terminated list of key, value, key, value
 * strings. The file is written as `path`.tmp, flushed to disk and then renamed over
 * `path`, so a failed write or a crash never leaves a partial file under `path`.
 * On failure an existing file at `path` is untouched and `path`.tmp is removed. */
int safetensors_write(const char *path, const struct st_write_tensor *tensors, int count,
                      const char *const *metadata_kv, struct caem_error *err);

#endif
