/* Tests for src/safetensors.c: files written by the reference implementation, round
 * trips through safetensors_write, dtype conversions, every validation failure, and
 * the write-then-rename protocol. Files go to a fresh directory under /tmp. */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif

#include "safetensors.h"

#include <dirent.h>
#include <errno.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include "test.h"

static char tmp_dir[] = "/tmp/caem_safetensors_XXXXXX";

struct path {
    char text[512];
};

static struct path tmp_path(const char *name)
{
    struct path p;
    snprintf(p.text, sizeof p.text, "%s/%s", tmp_dir, name);
    return p;
}

static void file_write_bytes(const char *path, const void *bytes, size_t size)
{
    FILE *file = fopen(path, "wb");
    if (file == NULL) {
        printf("  cannot create %s: %s\n", path, strerror(errno));
        test_current_failed = 1;
        return;
    }
    if (size > 0 && fwrite(bytes, 1, size, file) != size)
        test_current_failed = 1;
    fclose(file);
}

/* Writes `length` as the header length, then `text` and `data_size` zero bytes. The
 * length need not match the text, so that the length checks can be tested. */
static void file_write_raw(const char *path, uint64_t length, const char *text,
                           size_t data_size)
{
    size_t text_size = strlen(text);
    size_t size = 8 + text_size + data_size;
    unsigned char *bytes = calloc(1, size);
    for (int i = 0; i < 8; i++)
        bytes[i] = (unsigned char)(length >> (8 * i));
    memcpy(bytes + 8, text, text_size);
    file_write_bytes(path, bytes, size);
    free(bytes);
}

/* Writes a file whose header is `header` and whose data section is `data_size` zero
 * bytes. */
static void file_write_header(const char *path, const char *header, size_t data_size)
{
    file_write_raw(path, strlen(header), header, data_size);
}

/* Reads up to `capacity` bytes of a file. Returns the size read, or -1 when the file
 * cannot be opened. */
static long file_read_bytes(const char *path, void *buffer, size_t capacity)
{
    FILE *file = fopen(path, "rb");
    if (file == NULL)
        return -1;
    size_t size = fread(buffer, 1, capacity, file);
    fclose(file);
    return (long)size;
}

static int file_exists(const char *path)
{
    struct stat info;
    return stat(path, &info) == 0;
}

/* Checks that opening `path` fails, leaves *out NULL, and gives a message that names
 * the file and contains `reason`. `label` identifies the case in failure output. */
static void check_open_fails(const char *label, const char *path, const char *reason)
{
    struct safetensors *st = NULL;
    struct caem_error err = {""};
    int status = safetensors_open(&st, path, &err);
    CHECK_MSG(status == -1, "%s: open returned %d", label, status);
    CHECK_MSG(st == NULL, "%s: open left a non-NULL handle", label);
    CHECK_MSG(strstr(err.message, path) != NULL, "%s: message lacks the path: %s", label,
              err.message);
    CHECK_MSG(strstr(err.message, reason) != NULL, "%s: message lacks \"%s\": %s", label,
              reason, err.message);
    safetensors_close(st);
}

/* Returns the name of the tensor at `index`, or "(none)" when the index is out of range. */
static const char *tensor_name_at(const struct safetensors *st, int index)
{
    const struct st_tensor *tensor = safetensors_at(st, index);
    return tensor != NULL ? tensor->name : "(none)";
}

static struct safetensors *open_or_fail(const char *path)
{
    struct safetensors *st = NULL;
    struct caem_error err = {""};
    if (safetensors_open(&st, path, &err) != 0)
        printf("  open failed: %s\n", err.message);
    CHECK(st != NULL);
    return st;
}

/* ------------------------------------------------------------------------------ */
/* A file written by the reference implementation                                  */

/* Produced by the Python package safetensors 0.8.0 with numpy 2.4.6:
 *
 *     save({"w": np.arange(6, dtype=np.float32).reshape(2, 3) * 0.5 - 1,
 *           "h": np.array([1.0, -2.0, 0.5, 65504.0], dtype=np.float16),
 *           "idx": np.array([-1, 0, 7], dtype=np.int64),
 *           "mask": np.array([True, False, True])},
 *          metadata={"format": "np"})
 *
 * The writer sorts tensors by alignment and name and pads the header with spaces to
 * a multiple of 8 bytes. Its header-length field is 264. */
static const char reference_header[] =
    "{\"__metadata__\":{\"format\":\"np\"},"
    "\"idx\":{\"dtype\":\"I64\",\"shape\":[3],\"data_offsets\":[0,24]},"
    "\"w\":{\"dtype\":\"F32\",\"shape\":[2,3],\"data_offsets\":[24,48]},"
    "\"h\":{\"dtype\":\"F16\",\"shape\":[4],\"data_offsets\":[48,56]},"
    "\"mask\":{\"dtype\":\"BOOL\",\"shape\":[3],\"data_offsets\":[56,59]}}     ";

static const unsigned char reference_data[59] = {
    0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
    0x00, 0x00, 0x07, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x80, 0xbf,
    0x00, 0x00, 0x00, 0xbf, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x3f, 0x00, 0x00,
    0x80, 0x3f, 0x00, 0x00, 0xc0, 0x3f, 0x00, 0x3c, 0x00, 0xc0, 0x00, 0x38, 0xff, 0x7b,
    0x01, 0x00, 0x01,
};

#define REFERENCE_SIZE (8 + sizeof reference_header - 1 + sizeof reference_data)

static void reference_bytes(unsigned char *out)
{
    size_t length = sizeof reference_header - 1;
    for (int i = 0; i < 8; i++)
        out[i] = (unsigned char)((uint64_t)length >> (8 * i));
    memcpy(out + 8, reference_header, length);
    memcpy(out + 8 + length, reference_data, sizeof reference_data);
}

static void test_reference_file_reads(void)
{
    CHECK_INT_EQ(sizeof reference_header - 1, 264);
    unsigned char bytes[REFERENCE_SIZE];
    reference_bytes(bytes);
    struct path path = tmp_path("reference.safetensors");
    file_write_bytes(path.text, bytes, sizeof bytes);
    struct safetensors *st = open_or_fail(path.text);
    if (st == NULL)
        return;

    /* tensors in data-offset order */
    CHECK_INT_EQ(safetensors_count(st), 4);
    const char *order[] = {"idx", "w", "h", "mask"};
    for (int i = 0; i < 4; i++)
        CHECK_MSG(strcmp(tensor_name_at(st, i), order[i]) == 0, "tensor %d is %s", i,
                  tensor_name_at(st, i));
    CHECK(safetensors_at(st, 4) == NULL);
    CHECK(safetensors_at(st, -1) == NULL);
    CHECK(strcmp(safetensors_metadata(st, "format"), "np") == 0);

    const struct st_tensor *w = safetensors_find(st, "w");
    CHECK(w != NULL);
    if (w != NULL) {
        CHECK_INT_EQ(w->dtype, ST_F32);
        CHECK_INT_EQ(w->ndim, 2);
        CHECK_INT_EQ(w->shape[0], 2);
        CHECK_INT_EQ(w->shape[1], 3);
        CHECK_INT_EQ(w->count, 6);
        CHECK_INT_EQ(w->nbytes, 24);
    }

    float wv[6];
    struct caem_error err = {""};
    CHECK_INT_EQ(safetensors_read_f32(st, "w", wv, 6, &err), 0);
    for (int i = 0; i < 6; i++)
        CHECK_NEAR(wv[i], i * 0.5f - 1.0f, 0.0);

    float hv[4];
    CHECK_INT_EQ(safetensors_read_f32(st, "h", hv, 4, &err), 0);
    CHECK_NEAR(hv[0], 1.0, 0.0);
    CHECK_NEAR(hv[1], -2.0, 0.0);
    CHECK_NEAR(hv[2], 0.5, 0.0);
    CHECK_NEAR(hv[3], 65504.0, 0.0);

    int64_t iv[3];
    CHECK_INT_EQ(safetensors_read_i64(st, "idx", iv, 3, &err), 0);
    CHECK_INT_EQ(iv[0], -1);
    CHECK_INT_EQ(iv[1], 0);
    CHECK_INT_EQ(iv[2], 7);

    int64_t mv[3];
    CHECK_INT_EQ(safetensors_read_i64(st, "mask", mv, 3, &err), 0);
    CHECK_INT_EQ(mv[0], 1);
    CHECK_INT_EQ(mv[1], 0);
    CHECK_INT_EQ(mv[2], 1);
    safetensors_close(st);
}

/* The same tensors in the same order must give the reference writer's exact bytes,
 * which shows that the header layout, padding and data order agree. */
static void test_write_matches_reference(void)
{
    const unsigned char *d = reference_data;
    const int64_t shape_idx[] = {3}, shape_w[] = {2, 3}, shape_h[] = {4}, shape_mask[] = {3};
    const struct st_write_tensor tensors[] = {
        {"idx", ST_I64, 1, shape_idx, d},
        {"w", ST_F32, 2, shape_w, d + 24},
        {"h", ST_F16, 1, shape_h, d + 48},
        {"mask", ST_BOOL, 1, shape_mask, d + 56},
    };
    const char *metadata[] = {"format", "np", NULL};
    struct path path = tmp_path("rewritten.safetensors");
    struct caem_error err = {""};
    int status = safetensors_write(path.text, tensors, 4, metadata, &err);
    CHECK_MSG(status == 0, "%s", err.message);

    unsigned char expected[REFERENCE_SIZE];
    reference_bytes(expected);
    unsigned char written[REFERENCE_SIZE + 16];
    long size = file_read_bytes(path.text, written, sizeof written);
    CHECK_INT_EQ(size, REFERENCE_SIZE);
    if (size == (long)REFERENCE_SIZE)
        CHECK(memcmp(written, expected, REFERENCE_SIZE) == 0);
}

/* ------------------------------------------------------------------------------ */
/* Round trips through safetensors_write                                           */

static void test_write_read_round_trip(void)
{
    const float weights[6] = {0.25f, -1.5f, 3.0f, 1e-7f, -0.0f, 12345.678f};
    const int64_t indices[4] = {INT64_MIN, -1, 0, INT64_MAX};
    const int64_t shape_w[] = {2, 3}, shape_i[] = {4};
    const struct st_write_tensor tensors[] = {
        {"layers.0.router.weight", ST_F32, 2, shape_w, weights},
        {"layers.0.expert_index", ST_I64, 1, shape_i, indices},
    };
    const char *metadata[] = {"format", "pt", "experts", "8", NULL};
    struct path path = tmp_path("round_trip.safetensors");
    struct caem_error err = {""};
    int status = safetensors_write(path.text, tensors, 2, metadata, &err);
    CHECK_MSG(status == 0, "%s", err.message);
    CHECK(!file_exists(tmp_path("round_trip.safetensors.tmp").text));

    struct safetensors *st = open_or_fail(path.text);
    if (st == NULL)
        return;
    CHECK_INT_EQ(safetensors_count(st), 2);
    CHECK(strcmp(tensor_name_at(st, 0), "layers.0.router.weight") == 0);
    CHECK(strcmp(tensor_name_at(st, 1), "layers.0.expert_index") == 0);
    CHECK(strcmp(safetensors_metadata(st, "format"), "pt") == 0);
    CHECK(strcmp(safetensors_metadata(st, "experts"), "8") == 0);
    CHECK(safetensors_metadata(st, "missing") == NULL);
    CHECK(safetensors_find(st, "missing") == NULL);

    const struct st_tensor *w = safetensors_find(st, "layers.0.router.weight");
    const struct st_tensor *ix = safetensors_find(st, "layers.0.expert_index");
    CHECK(w != NULL);
    CHECK(ix != NULL);
    if (w == NULL || ix == NULL) {
        safetensors_close(st);
        return;
    }
    CHECK_INT_EQ(w->dtype, ST_F32);
    CHECK_INT_EQ(w->ndim, 2);
    CHECK_INT_EQ(w->shape[0], 2);
    CHECK_INT_EQ(w->shape[1], 3);
    CHECK_INT_EQ(w->count, 6);
    CHECK_INT_EQ(w->nbytes, 24);
    CHECK(memcmp(w->data, weights, sizeof weights) == 0);
    CHECK_INT_EQ(ix->dtype, ST_I64);
    CHECK_INT_EQ(ix->ndim, 1);
    CHECK_INT_EQ(ix->shape[0], 4);
    CHECK_INT_EQ(ix->nbytes, 32);

    float wv[6];
    CHECK_INT_EQ(safetensors_read_f32(st, "layers.0.router.weight", wv, 6, &err), 0);
    CHECK(memcmp(wv, weights, sizeof weights) == 0);
    int64_t iv[4];
    CHECK_INT_EQ(safetensors_read_i64(st, "layers.0.expert_index", iv, 4, &err), 0);
    for (int i = 0; i < 4; i++)
        CHECK_INT_EQ(iv[i], indices[i]);
    safetensors_close(st);
}

static void test_write_pads_header(void)
{
    const uint8_t bytes[3] = {1, 2, 3};
    const int64_t shape[] = {3};
    const struct st_write_tensor tensor = {"b", ST_U8, 1, shape, bytes};
    struct path path = tmp_path("padded.safetensors");
    struct caem_error err = {""};
    CHECK_INT_EQ(safetensors_write(path.text, &tensor, 1, NULL, &err), 0);

    unsigned char file[128];
    long size = file_read_bytes(path.text, file, sizeof file);
    CHECK(size > 8);
    if (size <= 8)
        return;
    uint64_t length = 0;
    for (int i = 7; i >= 0; i--)
        length = (length << 8) | file[i];
    CHECK_INT_EQ((8 + length) % 8, 0);
    CHECK_INT_EQ(size, 8 + length + 3);
    CHECK_INT_EQ(file[8], '{');
    CHECK_INT_EQ(file[8 + length - 1], ' ');
    CHECK(memcmp(file + 8 + length, bytes, 3) == 0);
}

static void test_scalar_and_empty_tensors(void)
{
    const float scalar = 2.5f;
    const int64_t empty_shape[] = {0, 4};
    const struct st_write_tensor tensors[] = {
        {"scale", ST_F32, 0, NULL, &scalar},
        {"no_tokens", ST_F32, 2, empty_shape, NULL},
    };
    struct path path = tmp_path("scalar.safetensors");
    struct caem_error err = {""};
    int status = safetensors_write(path.text, tensors, 2, NULL, &err);
    CHECK_MSG(status == 0, "%s", err.message);

    struct safetensors *st = open_or_fail(path.text);
    if (st == NULL)
        return;
    const struct st_tensor *scale = safetensors_find(st, "scale");
    const struct st_tensor *empty = safetensors_find(st, "no_tokens");
    CHECK(scale != NULL);
    CHECK(empty != NULL);
    if (scale != NULL && empty != NULL) {
        CHECK_INT_EQ(scale->ndim, 0);
        CHECK_INT_EQ(scale->count, 1);
        CHECK_INT_EQ(empty->ndim, 2);
        CHECK_INT_EQ(empty->count, 0);
        CHECK_INT_EQ(empty->nbytes, 0);
    }
    float value = 0;
    CHECK_INT_EQ(safetensors_read_f32(st, "scale", &value, 1, &err), 0);
    CHECK_NEAR(value, 2.5, 0.0);
    CHECK_INT_EQ(safetensors_read_f32(st, "no_tokens", NULL, 0, &err), 0);
    CHECK(safetensors_metadata(st, "format") == NULL);
    safetensors_close(st);
}

static void test_empty_file_round_trip(void)
{
    struct path path = tmp_path("no_tensors.safetensors");
    struct caem_error err = {""};
    CHECK_INT_EQ(safetensors_write(path.text, NULL, 0, NULL, &err), 0);
    struct safetensors *st = open_or_fail(path.text);
    if (st == NULL)
        return;
    CHECK_INT_EQ(safetensors_count(st), 0);
    CHECK(safetensors_at(st, 0) == NULL);
    CHECK(safetensors_find(st, "w") == NULL);
    safetensors_close(st);
}

/* The header lists tensors in reverse offset order, but safetensors_at follows offsets. */
static void test_order_follows_offsets(void)
{
    struct path path = tmp_path("order.safetensors");
    file_write_header(path.text,
                      "{\"late\":{\"dtype\":\"U8\",\"shape\":[2],\"data_offsets\":[3,5]},"
                      "\"middle\":{\"dtype\":\"U8\",\"shape\":[3],\"data_offsets\":[0,3]},"
                      "\"empty\":{\"dtype\":\"U8\",\"shape\":[0],\"data_offsets\":[0,0]}}",
                      5);
    struct safetensors *st = open_or_fail(path.text);
    if (st == NULL)
        return;
    CHECK_INT_EQ(safetensors_count(st), 3);
    CHECK(strcmp(tensor_name_at(st, 0), "empty") == 0);
    CHECK(strcmp(tensor_name_at(st, 1), "middle") == 0);
    CHECK(strcmp(tensor_name_at(st, 2), "late") == 0);
    safetensors_close(st);
}

/* ------------------------------------------------------------------------------ */
/* Conversions                                                                     */

static void test_f16_to_f32_exact(void)
{
    /* bit patterns and the float32 values they encode exactly */
    const uint16_t bits[] = {0x3c00, 0xc000, 0x3800, 0x7bff, 0x0400,
                             0x0001, 0x03ff, 0x8000, 0x7c00, 0xfc00, 0x3555};
    const float expected[] = {1.0f, -2.0f, 0.5f, 65504.0f, 0x1p-14f,
                              0x1p-24f, 1023 * 0x1p-24f, -0.0f, INFINITY, -INFINITY,
                              0x1.554p-2f};
    const int n = (int)(sizeof bits / sizeof bits[0]);
    const int64_t shape[] = {n};
    const struct st_write_tensor tensor = {"h", ST_F16, 1, shape, bits};
    struct path path = tmp_path("f16.safetensors");
    struct caem_error err = {""};
    CHECK_INT_EQ(safetensors_write(path.text, &tensor, 1, NULL, &err), 0);
    struct safetensors *st = open_or_fail(path.text);
    if (st == NULL)
        return;

    float values[16];
    CHECK_INT_EQ(safetensors_read_f32(st, "h", values, (size_t)n, &err), 0);
    for (int i = 0; i < n; i++)
        CHECK_MSG(memcmp(&values[i], &expected[i], sizeof(float)) == 0,
                  "0x%04x gave %a, expected %a", bits[i], values[i], expected[i]);
    safetensors_close(st);
}

static void test_f16_nan_stays_nan(void)
{
    const uint16_t bits[] = {0x7e00, 0xfc01};
    const int64_t shape[] = {2};
    const struct st_write_tensor tensor = {"h", ST_F16, 1, shape, bits};
    struct path path = tmp_path("f16_nan.safetensors");
    struct caem_error err = {""};
    CHECK_INT_EQ(safetensors_write(path.text, &tensor, 1, NULL, &err), 0);
    struct safetensors *st = open_or_fail(path.text);
    if (st == NULL)
        return;
    float values[2];
    CHECK_INT_EQ(safetensors_read_f32(st, "h", values, 2, &err), 0);
    CHECK(isnan(values[0]));
    CHECK(isnan(values[1]));
    safetensors_close(st);
}

static void test_bf16_to_f32_exact(void)
{
    const uint16_t bits[] = {0x3f80, 0xc060, 0x4049, 0x0001, 0x7f80, 0x8000, 0x7f7f};
    const float expected[] = {1.0f, -3.5f, 3.140625f, 0x1p-133f, INFINITY, -0.0f,
                              0x1.fep127f};
    const int n = (int)(sizeof bits / sizeof bits[0]);
    const int64_t shape[] = {1, n};
    const struct st_write_tensor tensor = {"b", ST_BF16, 2, shape, bits};
    struct path path = tmp_path("bf16.safetensors");
    struct caem_error err = {""};
    CHECK_INT_EQ(safetensors_write(path.text, &tensor, 1, NULL, &err), 0);
    struct safetensors *st = open_or_fail(path.text);
    if (st == NULL)
        return;

    float values[8];
    CHECK_INT_EQ(safetensors_read_f32(st, "b", values, (size_t)n, &err), 0);
    for (int i = 0; i < n; i++)
        CHECK_MSG(memcmp(&values[i], &expected[i], sizeof(float)) == 0,
                  "0x%04x gave %a, expected %a", bits[i], values[i], expected[i]);
    safetensors_close(st);
}

static void test_f64_to_f32(void)
{
    const double values[] = {0.25, -1000.0, 1.5, 1e300, 0.1};
    const int64_t shape[] = {5};
    const struct st_write_tensor tensor = {"d", ST_F64, 1, shape, values};
    struct path path = tmp_path("f64.safetensors");
    struct caem_error err = {""};
    CHECK_INT_EQ(safetensors_write(path.text, &tensor, 1, NULL, &err), 0);
    struct safetensors *st = open_or_fail(path.text);
    if (st == NULL)
        return;
    float out[5];
    CHECK_INT_EQ(safetensors_read_f32(st, "d", out, 5, &err), 0);
    CHECK_NEAR(out[0], 0.25, 0.0);
    CHECK_NEAR(out[1], -1000.0, 0.0);
    CHECK_NEAR(out[2], 1.5, 0.0);
    CHECK(isinf(out[3]));
    CHECK(out[3] > 0);
    CHECK(out[4] == 0.1f);
    safetensors_close(st);
}

static void test_integers_to_i64(void)
{
    const int32_t i32[] = {INT32_MIN, -7, INT32_MAX};
    const int16_t i16[] = {INT16_MIN, -2, INT16_MAX};
    const int8_t i8[] = {INT8_MIN, -1, INT8_MAX};
    const uint8_t u8[] = {0, 128, 255};
    const uint8_t flags[] = {1, 0, 1};
    const int64_t shape[] = {3};
    const struct st_write_tensor tensors[] = {
        {"i32", ST_I32, 1, shape, i32}, {"i16", ST_I16, 1, shape, i16},
        {"i8", ST_I8, 1, shape, i8},    {"u8", ST_U8, 1, shape, u8},
        {"flags", ST_BOOL, 1, shape, flags},
    };
    const int64_t expected[5][3] = {
        {INT32_MIN, -7, INT32_MAX}, {INT16_MIN, -2, INT16_MAX}, {INT8_MIN, -1, INT8_MAX},
        {0, 128, 255}, {1, 0, 1},
    };
    struct path path = tmp_path("integers.safetensors");
    struct caem_error err = {""};
    CHECK_INT_EQ(safetensors_write(path.text, tensors, 5, NULL, &err), 0);
    struct safetensors *st = open_or_fail(path.text);
    if (st == NULL)
        return;

    for (int t = 0; t < 5; t++) {
        int64_t out[3] = {0};
        int status = safetensors_read_i64(st, tensors[t].name, out, 3, &err);
        CHECK_MSG(status == 0, "%s: %s", tensors[t].name, err.message);
        for (int i = 0; i < 3; i++)
            CHECK_MSG(out[i] == expected[t][i], "%s[%d] is %lld, expected %lld",
                      tensors[t].name, i, (long long)out[i], (long long)expected[t][i]);
        CHECK_INT_EQ(safetensors_find(st, tensors[t].name)->dtype, tensors[t].dtype);
    }
    safetensors_close(st);
}

static void test_dtype_names(void)
{
    const char *names[] = {"F32", "F16", "BF16", "F64", "I64", "I32", "I16", "I8", "U8",
                           "BOOL"};
    for (int i = 0; i < 10; i++)
        CHECK(strcmp(safetensors_dtype_name((enum st_dtype)i), names[i]) == 0);
}

/* ------------------------------------------------------------------------------ */
/* Read errors                                                                     */

/* Checks that `status` is -1 and the message names the file, the tensor and `reason`. */
static void check_read_error(int status, const struct caem_error *err, const char *path,
                             const char *tensor, const char *reason)
{
    char quoted[128];
    snprintf(quoted, sizeof quoted, "\"%s\"", tensor);
    CHECK_INT_EQ(status, -1);
    CHECK_MSG(strstr(err->message, path) != NULL, "message lacks the path: %s",
              err->message);
    CHECK_MSG(strstr(err->message, quoted) != NULL, "message lacks %s: %s", quoted,
              err->message);
    CHECK_MSG(strstr(err->message, reason) != NULL, "message lacks \"%s\": %s", reason,
              err->message);
}

static void test_read_errors_name_tensor(void)
{
    const float floats[4] = {1, 2, 3, 4};
    const int32_t ints[2] = {5, 6};
    const uint8_t bad_bool[3] = {0, 1, 2};
    const int64_t shape_f[] = {2, 2}, shape_i[] = {2}, shape_b[] = {3};
    const struct st_write_tensor tensors[] = {
        {"w", ST_F32, 2, shape_f, floats},
        {"ids", ST_I32, 1, shape_i, ints},
        {"mask", ST_BOOL, 1, shape_b, bad_bool},
    };
    struct path path = tmp_path("read_errors.safetensors");
    struct caem_error err = {""};
    CHECK_INT_EQ(safetensors_write(path.text, tensors, 3, NULL, &err), 0);
    struct safetensors *st = open_or_fail(path.text);
    if (st == NULL)
        return;

    float f[8];
    int64_t i64[8];
    check_read_error(safetensors_read_f32(st, "absent", f, 4, &err), &err, path.text,
                     "absent", "not found");
    check_read_error(safetensors_read_f32(st, "w", f, 5, &err), &err, path.text, "w",
                     "has shape [2, 2] with 4 elements, expected 5");
    check_read_error(safetensors_read_f32(st, "ids", f, 2, &err), &err, path.text, "ids",
                     "has dtype I32, expected F32, F16, BF16 or F64");
    check_read_error(safetensors_read_i64(st, "w", i64, 4, &err), &err, path.text, "w",
                     "has dtype F32, expected I64");
    check_read_error(safetensors_read_i64(st, "ids", i64, 3, &err), &err, path.text, "ids",
                     "expected 3");
    check_read_error(safetensors_read_i64(st, "mask", i64, 3, &err), &err, path.text,
                     "mask", "BOOL element 2 is byte 0x02");
    safetensors_close(st);
}

/* ------------------------------------------------------------------------------ */
/* Malformed files                                                                 */

static void test_missing_file_fails(void)
{
    struct path path = tmp_path("does_not_exist.safetensors");
    check_open_fails("missing", path.text, "No such file or directory");
    check_open_fails("directory", tmp_dir, "not a regular file");
}

static void test_short_file_fails(void)
{
    struct path path = tmp_path("short.safetensors");
    file_write_bytes(path.text, "", 0);
    check_open_fails("empty", path.text, "file is 0 bytes, shorter than the 8-byte");
    file_write_bytes(path.text, "\x02\x00\x00", 3);
    check_open_fails("3 bytes", path.text, "file is 3 bytes, shorter than the 8-byte");
}

static void test_header_length_checked(void)
{
    struct path path = tmp_path("length.safetensors");
    file_write_raw(path.text, 100, "{}", 8);
    check_open_fails("past end", path.text,
                     "header length 100 runs past the end of the 18-byte file");
    file_write_raw(path.text, 11, "{}", 0);
    check_open_fails("one past end", path.text, "runs past the end of the 10-byte file");
    file_write_raw(path.text, 100000001, "{}", 0);
    check_open_fails("over limit", path.text,
                     "header length 100000001 is larger than the limit");
    file_write_raw(path.text, UINT64_MAX, "{}", 0);
    check_open_fails("max u64", path.text, "is larger than the limit");
}

static void test_invalid_json_fails(void)
{
    struct path path = tmp_path("invalid_json.safetensors");
    file_write_header(path.text, "{\"a\":\n  [1,,2]}", 0);
    check_open_fails("syntax", path.text, "header is not valid JSON");
    check_open_fails("line", path.text, "(line 2, column 6)");
    file_write_header(path.text, "{\"a\": {\"dtype\": \"F32\",", 0);
    check_open_fails("truncated", path.text, "near end of file (line 1, column 22)");
    file_write_header(path.text, "{\"\xff\": 1}", 0);
    check_open_fails("utf-8", path.text, "unable to decode byte 0xff");
}

struct malformed_case {
    const char *label;
    const char *header;
    size_t data_size;
    const char *tensor; /* the tensor the message must name, or NULL */
    const char *reason; /* text the message must contain */
};

#define ENTRY(name, body) "\"" name "\":{" body "}"
#define U8_2(offsets) "\"dtype\":\"U8\",\"shape\":[2],\"data_offsets\":" offsets

static const struct malformed_case malformed_cases[] = {
    {"header array", "[1, 2]", 0, NULL, "header is a JSON array, expected an object"},
    {"entry not object", "{\"a\":5}", 0, "a", "entry is a JSON integer, expected an object"},
    {"missing dtype", "{" ENTRY("a", "\"shape\":[2],\"data_offsets\":[0,2]") "}", 2, "a",
     "missing \"dtype\""},
    {"missing shape", "{" ENTRY("a", "\"dtype\":\"U8\",\"data_offsets\":[0,2]") "}", 2, "a",
     "missing \"shape\""},
    {"missing offsets", "{" ENTRY("a", "\"dtype\":\"U8\",\"shape\":[2]") "}", 2, "a",
     "missing \"data_offsets\""},
    {"dtype not string", "{" ENTRY("a", "\"dtype\":4,\"shape\":[2],\"data_offsets\":[0,2]") "}",
     2, "a", "\"dtype\" is a JSON integer, expected a string"},
    {"unknown dtype",
     "{" ENTRY("a", "\"dtype\":\"F8_E4M3\",\"shape\":[2],\"data_offsets\":[0,2]") "}", 2, "a",
     "unsupported dtype \"F8_E4M3\""},
    {"shape not array", "{" ENTRY("a", "\"dtype\":\"U8\",\"shape\":2,\"data_offsets\":[0,2]") "}",
     2, "a", "\"shape\" is a JSON integer, expected an array"},
    {"negative shape", "{" ENTRY("a", "\"dtype\":\"U8\",\"shape\":[-2],\"data_offsets\":[0,2]") "}",
     2, "a", "shape dimension 0 is -2, expected a non-negative integer"},
    {"fractional shape",
     "{" ENTRY("a", "\"dtype\":\"U8\",\"shape\":[1,2.5],\"data_offsets\":[0,2]") "}", 2, "a",
     "shape dimension 1 is a JSON real number, expected a non-negative integer"},
    {"string shape",
     "{" ENTRY("a", "\"dtype\":\"U8\",\"shape\":[\"2\"],\"data_offsets\":[0,2]") "}", 2, "a",
     "shape dimension 0 is a JSON string"},
    {"nine dimensions",
     "{" ENTRY("a", "\"dtype\":\"U8\",\"shape\":[1,1,1,1,1,1,1,1,2],\"data_offsets\":[0,2]") "}",
     2, "a", "shape has 9 dimensions, more than the supported 8"},
    {"count overflow",
     "{" ENTRY("a", "\"dtype\":\"U8\",\"shape\":[4294967296,4294967296],\"data_offsets\":[0,2]")
     "}", 2, "a", "element count of the shape overflows"},
    {"one offset", "{" ENTRY("a", U8_2("[0]")) "}", 2, "a",
     "\"data_offsets\" must be an array of two integers"},
    {"offsets not array", "{" ENTRY("a", U8_2("\"0-2\"")) "}", 2, "a",
     "\"data_offsets\" must be an array of two integers"},
    {"negative offset", "{" ENTRY("a", U8_2("[-2,0]")) "}", 2, "a",
     "\"data_offsets\" must be two non-negative integers"},
    {"fractional offset", "{" ENTRY("a", U8_2("[0,2.0]")) "}", 2, "a",
     "\"data_offsets\" must be two non-negative integers"},
    {"reversed offsets", "{" ENTRY("a", U8_2("[2,0]")) "}", 2, "a",
     "data_offsets [2, 0] end before they begin"},
    {"byte length mismatch",
     "{" ENTRY("a", "\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,4]") "}", 4, "a",
     "data_offsets [0, 4] span 4 bytes, but 2 elements of F32 need 8 bytes"},
    {"offsets outside data", "{" ENTRY("a", U8_2("[2,4]")) "}", 3, "a",
     "data_offsets [2, 4] lie outside the data section of 3 bytes"},
    {"overlap", "{" ENTRY("a", U8_2("[0,2]")) "," ENTRY("b", U8_2("[1,3]")) "}", 3, "b",
     "(bytes 1..3) overlaps tensor \"a\" (bytes 0..2)"},
    {"gap", "{" ENTRY("a", U8_2("[0,2]")) "," ENTRY("b", U8_2("[4,6]")) "}", 6, "b",
     "leaving bytes 2..4 unused"},
    {"trailing bytes", "{" ENTRY("a", U8_2("[0,2]")) "}", 5, NULL,
     "data section is 5 bytes but the tensors cover only 2"},
    {"duplicate tensor", "{" ENTRY("a", U8_2("[0,2]")) "," ENTRY("a", U8_2("[0,2]")) "}", 2,
     NULL, "duplicate object key"},
    {"metadata not object", "{\"__metadata__\":\"pt\"}", 0, NULL,
     "\"__metadata__\" is a JSON string, expected an object of strings"},
    {"metadata number", "{\"__metadata__\":{\"format\":\"pt\",\"epoch\":3}}", 0, NULL,
     "metadata value for key \"epoch\" is a JSON integer, expected a string"},
};

static void test_malformed_headers_fail(void)
{
    int n = (int)(sizeof malformed_cases / sizeof malformed_cases[0]);
    for (int i = 0; i < n; i++) {
        const struct malformed_case *c = &malformed_cases[i];
        char name[64];
        snprintf(name, sizeof name, "malformed_%d.safetensors", i);
        struct path path = tmp_path(name);
        file_write_header(path.text, c->header, c->data_size);

        check_open_fails(c->label, path.text, c->reason);
        if (c->tensor != NULL) {
            char quoted[64];
            snprintf(quoted, sizeof quoted, "tensor \"%s\"", c->tensor);
            check_open_fails(c->label, path.text, quoted);
        }
    }
}

/* ------------------------------------------------------------------------------ */
/* Write failures                                                                  */

/* Writes a small valid file at `path` and returns its size through the buffer. */
static long write_old_file(const char *path, unsigned char *bytes, size_t capacity)
{
    const float old[2] = {7.0f, 8.0f};
    const int64_t shape[] = {2};
    const struct st_write_tensor tensor = {"old", ST_F32, 1, shape, old};
    struct caem_error err = {""};
    CHECK_INT_EQ(safetensors_write(path, &tensor, 1, NULL, &err), 0);
    return file_read_bytes(path, bytes, capacity);
}

/* Checks that the file at `path` still has the old bytes and that no .tmp is left. */
static void check_old_file_intact(const char *path, const unsigned char *old, long old_size)
{
    unsigned char now[256];
    long size = file_read_bytes(path, now, sizeof now);
    CHECK_INT_EQ(size, old_size);
    if (size == old_size)
        CHECK(memcmp(now, old, (size_t)size) == 0);
    char tmp[300];
    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    CHECK_MSG(!file_exists(tmp), "%s was left behind", tmp);

    struct safetensors *st = open_or_fail(path);
    if (st != NULL)
        CHECK(safetensors_find(st, "old") != NULL);
    safetensors_close(st);
}

static void test_invalid_write_keeps_old_file(void)
{
    struct path path = tmp_path("keep_invalid.safetensors");
    unsigned char old[256];
    long old_size = write_old_file(path.text, old, sizeof old);
    CHECK(old_size > 0);

    const float values[4] = {1, 2, 3, 4};
    const int64_t good_shape[] = {4}, bad_shape[] = {2, -2};
    const struct st_write_tensor tensors[] = {
        {"good", ST_F32, 1, good_shape, values},
        {"bad", ST_F32, 2, bad_shape, values},
    };
    struct caem_error err = {""};
    CHECK_INT_EQ(safetensors_write(path.text, tensors, 2, NULL, &err), -1);
    CHECK_MSG(strstr(err.message, path.text) != NULL, "%s", err.message);
    CHECK_MSG(strstr(err.message, "tensor \"bad\": shape dimension 1 is -2") != NULL, "%s",
              err.message);
    check_old_file_intact(path.text, old, old_size);
}

/* A file-size limit makes write(2) fail with EFBIG partway through the data, as a full
 * disk would, after the temporary file has been created. */
static void test_failed_write_keeps_old_file(void)
{
    struct path path = tmp_path("keep_efbig.safetensors");
    unsigned char old[256];
    long old_size = write_old_file(path.text, old, sizeof old);
    CHECK(old_size > 0);

    enum { BIG = 1 << 16 };
    float *values = calloc(BIG, sizeof *values);
    const int64_t shape[] = {BIG};
    const struct st_write_tensor tensor = {"big", ST_F32, 1, shape, values};

    struct rlimit saved;
    CHECK_INT_EQ(getrlimit(RLIMIT_FSIZE, &saved), 0);
    struct rlimit small = {4096, saved.rlim_max};
    void (*saved_handler)(int) = signal(SIGXFSZ, SIG_IGN);
    CHECK_INT_EQ(setrlimit(RLIMIT_FSIZE, &small), 0);
    struct caem_error err = {""};
    int status = safetensors_write(path.text, &tensor, 1, NULL, &err);
    CHECK_INT_EQ(setrlimit(RLIMIT_FSIZE, &saved), 0);
    signal(SIGXFSZ, saved_handler);
    free(values);

    CHECK_INT_EQ(status, -1);
    CHECK_MSG(strstr(err.message, path.text) != NULL, "%s", err.message);
    CHECK_MSG(strstr(err.message, "writing failed: File too large") != NULL, "%s",
              err.message);
    check_old_file_intact(path.text, old, old_size);
}

static void test_write_rejects_bad_input(void)
{
    const float values[2] = {1, 2};
    const int64_t shape[] = {2}, nine[9] = {1, 1, 1, 1, 1, 1, 1, 1, 2};
    const struct {
        const char *label;
        struct st_write_tensor tensors[2];
        int count;
        const char *reason;
    } cases[] = {
        {"duplicate name", {{"a", ST_F32, 1, shape, values}, {"a", ST_F32, 1, shape, values}},
         2, "tensor \"a\": the name appears twice"},
        {"reserved name", {{"__metadata__", ST_F32, 1, shape, values}}, 1,
         "the name is reserved for metadata"},
        {"null name", {{NULL, ST_F32, 1, shape, values}}, 1, "a tensor has no name"},
        {"invalid utf-8", {{"\xff", ST_F32, 1, shape, values}}, 1, "not valid UTF-8"},
        {"null data", {{"a", ST_F32, 1, shape, NULL}}, 1, "data is NULL for 2 elements"},
        {"nine dimensions", {{"a", ST_F32, 9, nine, values}}, 1, "ndim is 9, expected 0 to 8"},
        {"bad dtype", {{"a", (enum st_dtype)42, 1, shape, values}}, 1,
         "invalid dtype value 42"},
    };
    struct path path = tmp_path("rejected.safetensors");
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        struct caem_error err = {""};
        int status =
            safetensors_write(path.text, cases[i].tensors, cases[i].count, NULL, &err);
        CHECK_MSG(status == -1, "%s: write returned %d", cases[i].label, status);
        CHECK_MSG(strstr(err.message, path.text) != NULL, "%s: %s", cases[i].label,
                  err.message);
        CHECK_MSG(strstr(err.message, cases[i].reason) != NULL, "%s: %s", cases[i].label,
                  err.message);
        CHECK_MSG(!file_exists(path.text), "%s: a file was written", cases[i].label);
    }

    /* metadata lists */
    const struct st_write_tensor valid_tensor = {"a", ST_F32, 1, shape, values};
    const char *odd[] = {"format", NULL};
    const char *twice[] = {"format", "pt", "format", "np", NULL};
    struct caem_error err = {""};
    CHECK_INT_EQ(safetensors_write(path.text, &valid_tensor, 1, odd, &err), -1);
    CHECK_MSG(strstr(err.message, "metadata key \"format\" has no value") != NULL, "%s",
              err.message);
    CHECK_INT_EQ(safetensors_write(path.text, &valid_tensor, 1, twice, &err), -1);
    CHECK_MSG(strstr(err.message, "metadata key \"format\" appears twice") != NULL, "%s",
              err.message);
    CHECK(!file_exists(path.text));
}

static void test_write_to_missing_directory(void)
{
    struct path path = tmp_path("no_such_dir/out.safetensors");
    const float values[2] = {1, 2};
    const int64_t shape[] = {2};
    const struct st_write_tensor tensor = {"a", ST_F32, 1, shape, values};
    struct caem_error err = {""};
    CHECK_INT_EQ(safetensors_write(path.text, &tensor, 1, NULL, &err), -1);
    CHECK_MSG(strstr(err.message, path.text) != NULL, "%s", err.message);
    CHECK_MSG(strstr(err.message, "No such file or directory") != NULL, "%s", err.message);
}

/* ------------------------------------------------------------------------------ */

static void tmp_dir_remove(void)
{
    DIR *dir = opendir(tmp_dir);
    if (dir == NULL)
        return;
    struct dirent *entry;
    while ((entry = readdir(dir)) != NULL) {
        if (strcmp(entry->d_name, ".") == 0 || strcmp(entry->d_name, "..") == 0)
            continue;
        unlink(tmp_path(entry->d_name).text);
    }
    closedir(dir);
    rmdir(tmp_dir);
}

int main(void)
{
    TEST_SUITE("safetensors");
    if (mkdtemp(tmp_dir) == NULL) {
        printf("FAIL safetensors/setup: mkdtemp %s: %s\n", tmp_dir, strerror(errno));
        return 1;
    }

    RUN_TEST(reference_file_reads);
    RUN_TEST(write_matches_reference);
    RUN_TEST(write_read_round_trip);
    RUN_TEST(write_pads_header);
    RUN_TEST(scalar_and_empty_tensors);
    RUN_TEST(empty_file_round_trip);
    RUN_TEST(order_follows_offsets);
    RUN_TEST(f16_to_f32_exact);
    RUN_TEST(f16_nan_stays_nan);
    RUN_TEST(bf16_to_f32_exact);
    RUN_TEST(f64_to_f32);
    RUN_TEST(integers_to_i64);
    RUN_TEST(dtype_names);
    RUN_TEST(read_errors_name_tensor);
    RUN_TEST(missing_file_fails);
    RUN_TEST(short_file_fails);
    RUN_TEST(header_length_checked);
    RUN_TEST(invalid_json_fails);
    RUN_TEST(malformed_headers_fail);
    RUN_TEST(invalid_write_keeps_old_file);
    RUN_TEST(failed_write_keeps_old_file);
    RUN_TEST(write_rejects_bad_input);
    RUN_TEST(write_to_missing_directory);

    tmp_dir_remove();
    TEST_MAIN_END();
}
