#if !defined(_GNU_SOURCE) && !defined(_POSIX_C_SOURCE)
#define _POSIX_C_SOURCE 200809L
#endif

#include "safetensors.h"

#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* The format stores every number little-endian, and this file copies tensor bytes
 * straight into host integers and floats. */
#if !defined(__BYTE_ORDER__) || __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "safetensors.c needs a little-endian host"
#endif

/* Headers longer than this are rejected as corrupt, with the same limit as the
 * reference implementation (safetensors 0.8.0 rejects 100000001 bytes). */
#define ST_HEADER_MAX 100000000ULL

/* Alignment of the data section in memory, enough for any dtype and for SIMD loads
 * of tensors whose offsets are multiples of it. */
#define ST_DATA_ALIGN 64

#define ST_METADATA_KEY "__metadata__"

/* A tensor with its byte range [begin, end) in the data section. */
struct st_entry {
    struct st_tensor tensor;
    uint64_t begin;
    uint64_t end;
};

struct safetensors {
    char *path;
    unsigned char *data;               /* data section, ST_DATA_ALIGN-aligned */
    size_t data_size;
    struct st_entry *entries;          /* sorted by data offset */
    int count;
    const struct st_tensor **by_name;  /* sorted by name, for safetensors_find */
    char **metadata;                   /* key, value, key, value, ... */
    int metadata_count;                /* pairs */
};

static const struct {
    const char *name;
    size_t size;
} dtype_info[] = {
    [ST_F32] = {"F32", 4}, [ST_F16] = {"F16", 2}, [ST_BF16] = {"BF16", 2},
    [ST_F64] = {"F64", 8}, [ST_I64] = {"I64", 8}, [ST_I32] = {"I32", 4},
    [ST_I16] = {"I16", 2}, [ST_I8] = {"I8", 1},   [ST_U8] = {"U8", 1},
    [ST_BOOL] = {"BOOL", 1},
};

#define DTYPE_COUNT ((int)(sizeof dtype_info / sizeof dtype_info[0]))

static int dtype_valid(enum st_dtype dtype)
{
    return (int)dtype >= 0 && (int)dtype < DTYPE_COUNT;
}

const char *safetensors_dtype_name(enum st_dtype dtype)
{
    return dtype_valid(dtype) ? dtype_info[dtype].name : "invalid";
}

static int dtype_parse(const char *name, enum st_dtype *out)
{
    for (int i = 0; i < DTYPE_COUNT; i++) {
        if (strcmp(name, dtype_info[i].name) == 0) {
            *out = (enum st_dtype)i;
            return 0;
        }
    }
    return -1;
}

/* Formats `PATH: tensor "NAME": ` followed by the message, and returns -1. */
static int tensor_fail(struct caem_error *err, const char *path, const char *name,
                       const char *fmt, ...) CAEM_PRINTF(4, 5);

static int tensor_fail(struct caem_error *err, const char *path, const char *name,
                       const char *fmt, ...)
{
    char message[CAEM_ERROR_MAX];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(message, sizeof message, fmt, ap);
    va_end(ap);
    return caem_fail(err, "%s: tensor \"%s\": %s", path, name, message);
}

static char *string_copy(const char *s, const char *purpose, struct caem_error *err)
{
    size_t length = strlen(s);
    char *copy = caem_malloc(length + 1, purpose, err);
    if (copy != NULL)
        memcpy(copy, s, length + 1);
    return copy;
}

/* Multiplies out a shape whose dimensions are already known to be non-negative.
 * Fails when the element count or its size in bytes does not fit in size_t. */
static int shape_size(int ndim, const int64_t *shape, size_t element_size, size_t *count,
                      size_t *nbytes)
{
    size_t product = 1;
    for (int i = 0; i < ndim; i++) {
        if ((uint64_t)shape[i] > SIZE_MAX)
            return -1;
        size_t dim = (size_t)shape[i];
        if (dim != 0 && product > SIZE_MAX / dim)
            return -1;
        product *= dim;
    }
    if (product > SIZE_MAX / element_size)
        return -1;
    *count = product;
    *nbytes = product * element_size;
    return 0;
}

static const char *json_type_name(const json_t *value)
{
    switch (json_typeof(value)) {
    case JSON_OBJECT: return "object";
    case JSON_ARRAY: return "array";
    case JSON_STRING: return "string";
    case JSON_INTEGER: return "integer";
    case JSON_REAL: return "real number";
    case JSON_TRUE:
    case JSON_FALSE: return "boolean";
    case JSON_NULL: return "null";
    }
    return "unknown JSON value";
}

/* ------------------------------------------------------------------------------ */
/* Reading the file                                                                */

/* Reads exactly `size` bytes. A short read sets errno to 0, which the caller reports
 * as an unexpected end of file. */
static int read_exact(int fd, void *buffer, size_t size)
{
    unsigned char *p = buffer;
    while (size > 0) {
        ssize_t got = read(fd, p, size);
        if (got < 0 && errno == EINTR)
            continue;
        if (got <= 0) {
            if (got == 0)
                errno = 0;
            return -1;
        }
        p += got;
        size -= (size_t)got;
    }
    return 0;
}

static int read_fail(struct caem_error *err, const char *path, const char *section)
{
    if (errno == 0)
        return caem_fail(err, "%s: unexpected end of file while reading the %s", path, section);
    return caem_fail(err, "%s: reading the %s failed: %s", path, section, strerror(errno));
}

/* Reads the header and the data section into st->data, and returns the header in
 * *header (NUL-terminated, caller frees) with its length in *header_length. */
static int file_load(struct safetensors *st, char **header, size_t *header_length,
                     struct caem_error *err)
{
    const char *path = st->path;
    int fd = open(path, O_RDONLY);
    if (fd < 0)
        return caem_fail(err, "%s: open failed: %s", path, strerror(errno));

    int status = -1;
    char *text = NULL;
    struct stat info;
    if (fstat(fd, &info) != 0) {
        caem_fail(err, "%s: stat failed: %s", path, strerror(errno));
        goto done;
    }
    if (!S_ISREG(info.st_mode)) {
        caem_fail(err, "%s: not a regular file", path);
        goto done;
    }
    uint64_t file_size = (uint64_t)info.st_size;
    if (file_size < 8) {
        caem_fail(err, "%s: file is %llu bytes, shorter than the 8-byte header length",
                  path, (unsigned long long)file_size);
        goto done;
    }

    /* read the little-endian u64 header length and bound it before allocating */
    unsigned char length_bytes[8];
    if (read_exact(fd, length_bytes, sizeof length_bytes) != 0) {
        read_fail(err, path, "header length");
        goto done;
    }
    uint64_t length = 0;
    for (int i = 7; i >= 0; i--)
        length = (length << 8) | length_bytes[i];
    if (length > ST_HEADER_MAX) {
        caem_fail(err, "%s: header length %llu is larger than the limit of %llu bytes "
                  "(100 MB); the file is corrupt or not a safetensors file",
                  path, (unsigned long long)length, ST_HEADER_MAX);
        goto done;
    }
    if (length > file_size - 8) {
        caem_fail(err, "%s: header length %llu runs past the end of the %llu-byte file; "
                  "the file is truncated or not a safetensors file",
                  path, (unsigned long long)length, (unsigned long long)file_size);
        goto done;
    }

    /* the header, NUL-terminated so messages can quote it */
    text = caem_malloc((size_t)length + 1, "safetensors header", err);
    if (text == NULL)
        goto done;
    if (read_exact(fd, text, (size_t)length) != 0) {
        read_fail(err, path, "header");
        goto done;
    }
    text[length] = '\0';

    /* the data section, at a 64-byte boundary so a tensor is as aligned as its offset */
    uint64_t data_size = file_size - 8 - length;
    if (data_size > SIZE_MAX - ST_DATA_ALIGN) {
        caem_fail(err, "%s: data section of %llu bytes does not fit in memory", path,
                  (unsigned long long)data_size);
        goto done;
    }
    void *data = NULL;
    if (posix_memalign(&data, ST_DATA_ALIGN, data_size > 0 ? (size_t)data_size : 1) != 0) {
        caem_fail(err, "%s: out of memory: %llu bytes for the data section", path,
                  (unsigned long long)data_size);
        goto done;
    }
    st->data = data;
    st->data_size = (size_t)data_size;
    if (read_exact(fd, st->data, st->data_size) != 0) {
        read_fail(err, path, "data section");
        goto done;
    }

    *header = text;
    *header_length = (size_t)length;
    text = NULL;
    status = 0;
done:
    free(text);
    close(fd);
    return status;
}

/* ------------------------------------------------------------------------------ */
/* Parsing the header                                                              */

static int parse_metadata(struct safetensors *st, json_t *object, struct caem_error *err)
{
    if (!json_is_object(object))
        return caem_fail(err, "%s: \"%s\" is a JSON %s, expected an object of strings",
                         st->path, ST_METADATA_KEY, json_type_name(object));

    size_t pairs = json_object_size(object);
    st->metadata = caem_calloc(2 * pairs, sizeof *st->metadata, "safetensors metadata", err);
    if (st->metadata == NULL)
        return -1;

    const char *key;
    json_t *value;
    json_object_foreach(object, key, value) {
        if (!json_is_string(value))
            return caem_fail(err, "%s: metadata value for key \"%s\" is a JSON %s, "
                             "expected a string", st->path, key, json_type_name(value));
        char **slot = &st->metadata[2 * st->metadata_count];
        slot[0] = string_copy(key, "metadata key", err);
        if (slot[0] == NULL)
            return -1;
        slot[1] = string_copy(json_string_value(value), "metadata value", err);
        if (slot[1] == NULL) {
            free(slot[0]);
            return -1;
        }
        st->metadata_count++;
    }
    return 0;
}

static int parse_dtype(const char *path, const char *name, json_t *entry,
                       enum st_dtype *dtype, struct caem_error *err)
{
    json_t *value = json_object_get(entry, "dtype");
    if (value == NULL)
        return tensor_fail(err, path, name, "missing \"dtype\"");
    if (!json_is_string(value))
        return tensor_fail(err, path, name, "\"dtype\" is a JSON %s, expected a string",
                           json_type_name(value));
    if (dtype_parse(json_string_value(value), dtype) != 0)
        return tensor_fail(err, path, name, "unsupported dtype \"%s\" (supported: F32, "
                           "F16, BF16, F64, I64, I32, I16, I8, U8, BOOL)",
                           json_string_value(value));
    return 0;
}

static int parse_shape(const char *path, const char *name, json_t *entry,
                       struct st_tensor *tensor, struct caem_error *err)
{
    json_t *value = json_object_get(entry, "shape");
    if (value == NULL)
        return tensor_fail(err, path, name, "missing \"shape\"");
    if (!json_is_array(value))
        return tensor_fail(err, path, name, "\"shape\" is a JSON %s, expected an array",
                           json_type_name(value));
    size_t ndim = json_array_size(value);
    if (ndim > ST_MAX_DIMS)
        return tensor_fail(err, path, name, "shape has %zu dimensions, more than the "
                           "supported %d", ndim, ST_MAX_DIMS);

    tensor->ndim = (int)ndim;
    for (size_t i = 0; i < ndim; i++) {
        json_t *dim = json_array_get(value, i);
        if (!json_is_integer(dim))
            return tensor_fail(err, path, name, "shape dimension %zu is a JSON %s, "
                               "expected a non-negative integer", i, json_type_name(dim));
        json_int_t size = json_integer_value(dim);
        if (size < 0)
            return tensor_fail(err, path, name, "shape dimension %zu is %lld, expected "
                               "a non-negative integer", i, (long long)size);
        tensor->shape[i] = (int64_t)size;
    }
    return 0;
}

static int parse_offsets(const char *path, const char *name, json_t *entry,
                         struct st_entry *out, struct caem_error *err)
{
    json_t *value = json_object_get(entry, "data_offsets");
    if (value == NULL)
        return tensor_fail(err, path, name, "missing \"data_offsets\"");
    if (!json_is_array(value) || json_array_size(value) != 2)
        return tensor_fail(err, path, name, "\"data_offsets\" must be an array of two "
                           "integers [begin, end]");

    json_t *begin = json_array_get(value, 0);
    json_t *end = json_array_get(value, 1);
    if (!json_is_integer(begin) || !json_is_integer(end) ||
        json_integer_value(begin) < 0 || json_integer_value(end) < 0)
        return tensor_fail(err, path, name, "\"data_offsets\" must be two non-negative "
                           "integers [begin, end]");
    out->begin = (uint64_t)json_integer_value(begin);
    out->end = (uint64_t)json_integer_value(end);
    if (out->begin > out->end)
        return tensor_fail(err, path, name, "data_offsets [%llu, %llu] end before they "
                           "begin", (unsigned long long)out->begin,
                           (unsigned long long)out->end);
    return 0;
}

/* Fills `out` from one header entry, checking the fields against each other and
 * against the size of the data section. */
static int parse_tensor(struct safetensors *st, const char *name, json_t *entry,
                        struct st_entry *out, struct caem_error *err)
{
    const char *path = st->path;
    struct st_tensor *tensor = &out->tensor;
    if (!json_is_object(entry))
        return tensor_fail(err, path, name, "entry is a JSON %s, expected an object with "
                           "\"dtype\", \"shape\" and \"data_offsets\"",
                           json_type_name(entry));

    tensor->name = string_copy(name, "tensor name", err);
    if (tensor->name == NULL)
        return -1;
    if (parse_dtype(path, name, entry, &tensor->dtype, err) != 0 ||
        parse_shape(path, name, entry, tensor, err) != 0 ||
        parse_offsets(path, name, entry, out, err) != 0)
        return -1;

    size_t element_size = dtype_info[tensor->dtype].size;
    if (shape_size(tensor->ndim, tensor->shape, element_size, &tensor->count,
                   &tensor->nbytes) != 0)
        return tensor_fail(err, path, name, "element count of the shape overflows");
    if (out->end - out->begin != tensor->nbytes)
        return tensor_fail(err, path, name, "data_offsets [%llu, %llu] span %llu bytes, "
                           "but %zu elements of %s need %zu bytes",
                           (unsigned long long)out->begin, (unsigned long long)out->end,
                           (unsigned long long)(out->end - out->begin), tensor->count,
                           dtype_info[tensor->dtype].name, tensor->nbytes);
    if (out->end > st->data_size)
        return tensor_fail(err, path, name, "data_offsets [%llu, %llu] lie outside the "
                           "data section of %zu bytes", (unsigned long long)out->begin,
                           (unsigned long long)out->end, st->data_size);
    tensor->data = st->data + out->begin;
    return 0;
}

static int entry_compare_offsets(const void *a, const void *b)
{
    const struct st_entry *x = a;
    const struct st_entry *y = b;
    if (x->begin != y->begin)
        return x->begin < y->begin ? -1 : 1;
    if (x->end != y->end)
        return x->end < y->end ? -1 : 1;
    return strcmp(x->tensor.name, y->tensor.name);
}

static int tensor_compare_names(const void *a, const void *b)
{
    const struct st_tensor *const *x = a;
    const struct st_tensor *const *y = b;
    return strcmp((*x)->name, (*y)->name);
}

/* Checks that the tensors, sorted by offset, tile the data section exactly. The
 * reference implementation (safetensors 0.8.0) also rejects gaps and trailing bytes. */
static int check_layout(const struct safetensors *st, struct caem_error *err)
{
    uint64_t covered = 0;
    const struct st_entry *last = NULL;
    for (int i = 0; i < st->count; i++) {
        const struct st_entry *e = &st->entries[i];
        if (e->begin < covered)
            return caem_fail(err, "%s: tensor \"%s\" (bytes %llu..%llu) overlaps tensor "
                             "\"%s\" (bytes %llu..%llu)", st->path, e->tensor.name,
                             (unsigned long long)e->begin, (unsigned long long)e->end,
                             last->tensor.name, (unsigned long long)last->begin,
                             (unsigned long long)last->end);
        if (e->begin > covered)
            return caem_fail(err, "%s: tensor \"%s\" begins at byte %llu of the data "
                             "section, leaving bytes %llu..%llu unused; tensors must be "
                             "contiguous", st->path, e->tensor.name,
                             (unsigned long long)e->begin, (unsigned long long)covered,
                             (unsigned long long)e->begin);
        if (e->end > e->begin) {
            covered = e->end;
            last = e;
        }
    }
    if (covered != st->data_size)
        return caem_fail(err, "%s: data section is %zu bytes but the tensors cover only "
                         "%llu; the file has trailing bytes", st->path, st->data_size,
                         (unsigned long long)covered);
    return 0;
}

static int parse_header(struct safetensors *st, const char *header, size_t length,
                        struct caem_error *err)
{
    json_error_t json_error;
    json_t *root = json_loadb(header, length, JSON_REJECT_DUPLICATES, &json_error);
    if (root == NULL)
        return caem_fail(err, "%s: header is not valid JSON: %s (line %d, column %d)",
                         st->path, json_error.text, json_error.line, json_error.column);

    int status = -1;
    if (!json_is_object(root)) {
        caem_fail(err, "%s: header is a JSON %s, expected an object", st->path,
                  json_type_name(root));
        goto done;
    }

    /* the tensors, in the header's order for now */
    size_t tensors = json_object_size(root);
    if (json_object_get(root, ST_METADATA_KEY) != NULL)
        tensors--;
    if (tensors > INT32_MAX) {
        caem_fail(err, "%s: header lists %zu tensors, more than supported", st->path,
                  tensors);
        goto done;
    }
    st->entries = caem_calloc(tensors, sizeof *st->entries, "safetensors tensor table", err);
    if (st->entries == NULL)
        goto done;
    const char *key;
    json_t *value;
    json_object_foreach(root, key, value) {
        if (strcmp(key, ST_METADATA_KEY) == 0) {
            if (parse_metadata(st, value, err) != 0)
                goto done;
            continue;
        }
        /* count only complete entries, so safetensors_close frees what was copied */
        struct st_entry *entry = &st->entries[st->count];
        int parsed = parse_tensor(st, key, value, entry, err);
        st->count++;
        if (parsed != 0)
            goto done;
    }

    /* file order, then the layout check that needs it */
    qsort(st->entries, (size_t)st->count, sizeof *st->entries, entry_compare_offsets);
    if (check_layout(st, err) != 0)
        goto done;

    /* a name index for safetensors_find */
    st->by_name = caem_calloc((size_t)st->count, sizeof *st->by_name, "safetensors name index",
                              err);
    if (st->by_name == NULL)
        goto done;
    for (int i = 0; i < st->count; i++)
        st->by_name[i] = &st->entries[i].tensor;
    qsort(st->by_name, (size_t)st->count, sizeof *st->by_name, tensor_compare_names);
    status = 0;
done:
    json_decref(root);
    return status;
}

int safetensors_open(struct safetensors **out, const char *path, struct caem_error *err)
{
    *out = NULL;
    struct safetensors *st = caem_calloc(1, sizeof *st, "safetensors file", err);
    if (st == NULL)
        return -1;
    st->path = string_copy(path, "safetensors path", err);
    if (st->path == NULL) {
        free(st);
        return -1;
    }

    char *header = NULL;
    size_t header_length = 0;
    if (file_load(st, &header, &header_length, err) != 0 ||
        parse_header(st, header, header_length, err) != 0) {
        free(header);
        safetensors_close(st);
        return -1;
    }
    free(header);
    *out = st;
    return 0;
}

void safetensors_close(struct safetensors *st)
{
    if (st == NULL)
        return;
    for (int i = 0; i < st->count; i++)
        free(st->entries[i].tensor.name);
    for (int i = 0; i < 2 * st->metadata_count; i++)
        free(st->metadata[i]);
    free(st->entries);
    free(st->by_name);
    free(st->metadata);
    free(st->data);
    free(st->path);
    free(st);
}

/* ------------------------------------------------------------------------------ */
/* Lookup                                                                          */

int safetensors_count(const struct safetensors *st)
{
    return st->count;
}

const struct st_tensor *safetensors_at(const struct safetensors *st, int index)
{
    if (index < 0 || index >= st->count)
        return NULL;
    return &st->entries[index].tensor;
}

const struct st_tensor *safetensors_find(const struct safetensors *st, const char *name)
{
    struct st_tensor key_tensor = {.name = (char *)name};
    const struct st_tensor *key = &key_tensor;
    const struct st_tensor *const *found = bsearch(&key, st->by_name, (size_t)st->count,
                                                   sizeof *st->by_name, tensor_compare_names);
    return found != NULL ? *found : NULL;
}

const char *safetensors_metadata(const struct safetensors *st, const char *key)
{
    for (int i = 0; i < st->metadata_count; i++) {
        if (strcmp(st->metadata[2 * i], key) == 0)
            return st->metadata[2 * i + 1];
    }
    return NULL;
}

/* ------------------------------------------------------------------------------ */
/* Conversion                                                                      */

/* IEEE 754 binary16 to binary32. Every half value, subnormals included, is exact in
 * float32. */
static float half_to_float(uint16_t half)
{
    uint32_t sign = (uint32_t)(half & 0x8000u) << 16;
    uint32_t exponent = (half >> 10) & 0x1fu;
    uint32_t mantissa = half & 0x3ffu;
    uint32_t bits;

    if (exponent == 0x1f) {
        bits = sign | 0x7f800000u | (mantissa << 13);             /* inf and NaN */
    } else if (exponent != 0) {
        bits = sign | ((exponent + 127 - 15) << 23) | (mantissa << 13);
    } else {
        float magnitude = (float)mantissa * 0x1p-24f;             /* zero, subnormal */
        return sign != 0 ? -magnitude : magnitude;
    }
    float value;
    memcpy(&value, &bits, sizeof value);
    return value;
}

/* bfloat16 is the upper half of a float32. */
static float bf16_to_float(uint16_t bf16)
{
    uint32_t bits = (uint32_t)bf16 << 16;
    float value;
    memcpy(&value, &bits, sizeof value);
    return value;
}

/* Finds a tensor for a read and checks its element count. */
static const struct st_tensor *tensor_for_read(const struct safetensors *st,
                                               const char *name, size_t count,
                                               struct caem_error *err)
{
    const struct st_tensor *tensor = safetensors_find(st, name);
    if (tensor == NULL) {
        caem_fail(err, "%s: tensor \"%s\" not found", st->path, name);
        return NULL;
    }
    if (tensor->count != count) {
        char shape[160] = "";
        size_t used = 0;
        for (int i = 0; i < tensor->ndim && used < sizeof shape; i++)
            used += (size_t)snprintf(shape + used, sizeof shape - used, "%s%lld",
                                     i > 0 ? ", " : "", (long long)tensor->shape[i]);
        tensor_fail(err, st->path, name, "has shape [%s] with %zu elements, expected %zu",
                    shape, tensor->count, count);
        return NULL;
    }
    return tensor;
}

int safetensors_read_f32(const struct safetensors *st, const char *name, float *dst,
                         size_t count, struct caem_error *err)
{
    const struct st_tensor *tensor = tensor_for_read(st, name, count, err);
    if (tensor == NULL)
        return -1;
    const unsigned char *src = tensor->data;

    switch (tensor->dtype) {
    case ST_F32:
        if (count > 0)
            memcpy(dst, src, tensor->nbytes);
        return 0;
    case ST_F16:
    case ST_BF16:
        for (size_t i = 0; i < count; i++) {
            uint16_t bits;
            memcpy(&bits, src + 2 * i, sizeof bits);
            dst[i] = tensor->dtype == ST_F16 ? half_to_float(bits) : bf16_to_float(bits);
        }
        return 0;
    case ST_F64:
        /* rounds to nearest; magnitudes beyond FLT_MAX become infinities */
        for (size_t i = 0; i < count; i++) {
            double value;
            memcpy(&value, src + 8 * i, sizeof value);
            dst[i] = (float)value;
        }
        return 0;
    default:
        return tensor_fail(err, st->path, name, "has dtype %s, expected F32, F16, BF16 or "
                           "F64 for a float32 read", dtype_info[tensor->dtype].name);
    }
}

/* Copies `count` integers of `size` bytes, sign-extending unless `is_unsigned`. */
static void integers_to_i64(const unsigned char *src, size_t size, int is_unsigned,
                            int64_t *dst, size_t count)
{
    for (size_t i = 0; i < count; i++) {
        const unsigned char *p = src + size * i;
        if (size == 8) {
            memcpy(&dst[i], p, 8);
        } else if (size == 4) {
            int32_t v;
            memcpy(&v, p, 4);
            dst[i] = v;
        } else if (size == 2) {
            int16_t v;
            memcpy(&v, p, 2);
            dst[i] = v;
        } else {
            dst[i] = is_unsigned ? (int64_t)p[0] : (int64_t)(int8_t)p[0];
        }
    }
}

int safetensors_read_i64(const struct safetensors *st, const char *name, int64_t *dst,
                         size_t count, struct caem_error *err)
{
    const struct st_tensor *tensor = tensor_for_read(st, name, count, err);
    if (tensor == NULL)
        return -1;
    const unsigned char *src = tensor->data;

    switch (tensor->dtype) {
    case ST_I64:
    case ST_I32:
    case ST_I16:
    case ST_I8:
        integers_to_i64(src, dtype_info[tensor->dtype].size, 0, dst, count);
        return 0;
    case ST_U8:
        integers_to_i64(src, 1, 1, dst, count);
        return 0;
    case ST_BOOL:
        for (size_t i = 0; i < count; i++) {
            if (src[i] > 1)
                return tensor_fail(err, st->path, name, "BOOL element %zu is byte 0x%02x, "
                                   "expected 0 or 1", i, src[i]);
            dst[i] = src[i];
        }
        return 0;
    default:
        return tensor_fail(err, st->path, name, "has dtype %s, expected I64, I32, I16, I8, "
                           "U8 or BOOL for an int64 read", dtype_info[tensor->dtype].name);
    }
}

/* ------------------------------------------------------------------------------ */
/* Writing                                                                         */

static int utf8_valid(const char *s)
{
    json_t *probe = json_string(s);
    json_decref(probe);
    return probe != NULL;
}

static json_t *json_shape(int ndim, const int64_t *shape)
{
    json_t *array = json_array();
    for (int i = 0; array != NULL && i < ndim; i++) {
        if (json_array_append_new(array, json_integer((json_int_t)shape[i])) != 0) {
            json_decref(array);
            array = NULL;
        }
    }
    return array;
}

static int header_add_metadata(json_t *root, const char *path, const char *const *kv,
                               struct caem_error *err)
{
    json_t *object = json_object();
    if (object == NULL || json_object_set_new(root, ST_METADATA_KEY, object) != 0)
        return caem_fail(err, "%s: out of memory building the header", path);

    for (const char *const *pair = kv; pair[0] != NULL; pair += 2) {
        if (pair[1] == NULL)
            return caem_fail(err, "%s: metadata key \"%s\" has no value", path, pair[0]);
        if (json_object_get(object, pair[0]) != NULL)
            return caem_fail(err, "%s: metadata key \"%s\" appears twice", path, pair[0]);
        if (!utf8_valid(pair[0]) || !utf8_valid(pair[1]))
            return caem_fail(err, "%s: metadata key \"%s\" or its value is not valid "
                             "UTF-8", path, pair[0]);
        if (json_object_set_new(object, pair[0], json_string(pair[1])) != 0)
            return caem_fail(err, "%s: out of memory building the header", path);
    }
    return 0;
}

/* Validates one tensor to write, adds its header entry at data offset *offset, and
 * advances *offset past its bytes. */
static int header_add_tensor(json_t *root, const char *path, const struct st_write_tensor *t,
                             uint64_t *offset, struct caem_error *err)
{
    if (t->name == NULL)
        return caem_fail(err, "%s: a tensor has no name", path);
    if (strcmp(t->name, ST_METADATA_KEY) == 0)
        return tensor_fail(err, path, t->name, "the name is reserved for metadata");
    if (!utf8_valid(t->name))
        return tensor_fail(err, path, t->name, "the name is not valid UTF-8");
    if (json_object_get(root, t->name) != NULL)
        return tensor_fail(err, path, t->name, "the name appears twice");
    if (!dtype_valid(t->dtype))
        return tensor_fail(err, path, t->name, "invalid dtype value %d", (int)t->dtype);
    if (t->ndim < 0 || t->ndim > ST_MAX_DIMS)
        return tensor_fail(err, path, t->name, "ndim is %d, expected 0 to %d", t->ndim,
                           ST_MAX_DIMS);
    if (t->ndim > 0 && t->shape == NULL)
        return tensor_fail(err, path, t->name, "shape is NULL for ndim %d", t->ndim);
    for (int i = 0; i < t->ndim; i++) {
        if (t->shape[i] < 0)
            return tensor_fail(err, path, t->name, "shape dimension %d is %lld, expected "
                               "a non-negative integer", i, (long long)t->shape[i]);
    }

    size_t count, nbytes;
    if (shape_size(t->ndim, t->shape, dtype_info[t->dtype].size, &count, &nbytes) != 0 ||
        nbytes > (uint64_t)INT64_MAX - *offset)
        return tensor_fail(err, path, t->name, "element count of the shape overflows");
    if (nbytes > 0 && t->data == NULL)
        return tensor_fail(err, path, t->name, "data is NULL for %zu elements", count);

    json_t *entry = json_pack("{s:s, s:o, s:[I, I]}", "dtype", dtype_info[t->dtype].name,
                              "shape", json_shape(t->ndim, t->shape), "data_offsets",
                              (json_int_t)*offset, (json_int_t)(*offset + nbytes));
    if (entry == NULL || json_object_set_new(root, t->name, entry) != 0)
        return caem_fail(err, "%s: out of memory building the header", path);
    *offset += nbytes;
    return 0;
}

/* Builds the header text, padded with spaces so that the data section starts at a
 * multiple of 8 bytes in the file, as the reference writer does. */
static char *header_build(const char *path, const struct st_write_tensor *tensors,
                          int count, const char *const *metadata_kv, size_t *length,
                          struct caem_error *err)
{
    json_t *root = json_object();
    if (root == NULL) {
        caem_fail(err, "%s: out of memory building the header", path);
        return NULL;
    }

    char *padded = NULL;
    uint64_t offset = 0;
    if (metadata_kv != NULL && metadata_kv[0] != NULL &&
        header_add_metadata(root, path, metadata_kv, err) != 0)
        goto done;
    for (int i = 0; i < count; i++) {
        if (header_add_tensor(root, path, &tensors[i], &offset, err) != 0)
            goto done;
    }

    char *text = json_dumps(root, JSON_COMPACT);
    if (text == NULL) {
        caem_fail(err, "%s: out of memory building the header", path);
        goto done;
    }
    size_t text_length = strlen(text);
    size_t padded_length = (text_length + 7) / 8 * 8;
    padded = caem_malloc(padded_length, "safetensors header", err);
    if (padded != NULL) {
        memcpy(padded, text, text_length);
        memset(padded + text_length, ' ', padded_length - text_length);
        *length = padded_length;
    }
    free(text);
done:
    json_decref(root);
    return padded;
}

static int write_all(FILE *file, const void *data, size_t size)
{
    return size == 0 || fwrite(data, 1, size, file) == size ? 0 : -1;
}

/* Writes the complete file to `tmp_path` and flushes it to disk. On failure removes
 * `tmp_path` if this call created it, and leaves the cause in errno. */
static int file_store(const char *tmp_path, const char *header, size_t header_length,
                      const struct st_write_tensor *tensors, int count)
{
    FILE *file = fopen(tmp_path, "wb");
    if (file == NULL)
        return -1;

    unsigned char length_bytes[8];
    for (int i = 0; i < 8; i++)
        length_bytes[i] = (unsigned char)((uint64_t)header_length >> (8 * i));
    int failed = write_all(file, length_bytes, sizeof length_bytes) ||
                 write_all(file, header, header_length);
    for (int i = 0; !failed && i < count; i++) {
        size_t element_count = 0, nbytes = 0;
        const struct st_write_tensor *t = &tensors[i];
        shape_size(t->ndim, t->shape, dtype_info[t->dtype].size, &element_count, &nbytes);
        failed = write_all(file, t->data, nbytes);
    }
    failed = failed || fflush(file) != 0 || fsync(fileno(file)) != 0;

    /* fclose reports errors of the last buffered write, but the first cause wins */
    int saved_errno = errno;
    if (fclose(file) != 0 && !failed) {
        failed = 1;
        saved_errno = errno;
    }
    if (failed)
        remove(tmp_path);
    errno = saved_errno;
    return failed ? -1 : 0;
}

int safetensors_write(const char *path, const struct st_write_tensor *tensors, int count,
                      const char *const *metadata_kv, struct caem_error *err)
{
    if (count < 0 || (count > 0 && tensors == NULL))
        return caem_fail(err, "%s: invalid tensor list (count %d)", path, count);

    size_t header_length = 0;
    char *header = header_build(path, tensors, count, metadata_kv, &header_length, err);
    if (header == NULL)
        return -1;

    size_t path_length = strlen(path);
    char *tmp_path = caem_malloc(path_length + sizeof ".tmp", "temporary path", err);
    if (tmp_path == NULL) {
        free(header);
        return -1;
    }
    memcpy(tmp_path, path, path_length);
    memcpy(tmp_path + path_length, ".tmp", sizeof ".tmp");

    int status = 0;
    if (file_store(tmp_path, header, header_length, tensors, count) != 0)
        status = caem_fail(err, "%s: writing failed: %s", tmp_path, strerror(errno));
    else if (rename(tmp_path, path) != 0) {
        status = caem_fail(err, "%s: renaming %s into place failed: %s", path, tmp_path,
                           strerror(errno));
        remove(tmp_path);
    }
    free(header);
    free(tmp_path);
    return status;
}
