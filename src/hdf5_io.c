#include "hdf5_io.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Largest chunk of a dataset in bytes. A tensor larger than this is split by
 * rows, so that a chunk stays well below HDF5's 4 GiB chunk limit and a read
 * does not need the whole tensor twice in memory. */
#define CHUNK_BYTES (16u << 20)

void h5io_quiet_begin(struct h5io_quiet *saved)
{
    H5Eget_auto2(H5E_DEFAULT, &saved->func, &saved->data);
    H5Eset_auto2(H5E_DEFAULT, NULL, NULL);
}

void h5io_quiet_end(const struct h5io_quiet *saved)
{
    H5Eset_auto2(H5E_DEFAULT, saved->func, saved->data);
}

struct error_walk {
    char *out;
    size_t size;
};

static herr_t take_innermost(unsigned n, const H5E_error2_t *desc, void *data)
{
    struct error_walk *walk = data;
    /* Walking upward, entry 0 is where the error occurred. */
    if (n == 0 && desc->desc != NULL)
        snprintf(walk->out, walk->size, "%s", desc->desc);
    return 0;
}

void h5io_error_text(char *out, size_t size)
{
    struct error_walk walk = { out, size };
    out[0] = '\0';
    H5Ewalk2(H5E_DEFAULT, H5E_WALK_UPWARD, take_innermost, &walk);
    H5Eclear2(H5E_DEFAULT);
}

int h5io_fail(struct caem_error *err, const char *fmt, ...)
{
    char detail[512];
    h5io_error_text(detail, sizeof detail);
    if (err == NULL)
        return -1;
    char message[CAEM_ERROR_MAX];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(message, sizeof message, fmt, ap);
    va_end(ap);
    if (detail[0] != '\0')
        return caem_fail(err, "%s (HDF5: %s)", message, detail);
    return caem_fail(err, "%s", message);
}

void h5io_type_name(hid_t type, char *out, size_t size)
{
    size_t bytes = H5Tget_size(type);
    switch (H5Tget_class(type)) {
    case H5T_INTEGER:
        snprintf(out, size, "%s%zu", H5Tget_sign(type) == H5T_SGN_NONE ? "uint" : "int",
                 bytes * 8);
        break;
    case H5T_FLOAT:
        snprintf(out, size, "float%zu", bytes * 8);
        break;
    case H5T_STRING:
        snprintf(out, size, "string");
        break;
    case H5T_COMPOUND:
        snprintf(out, size, "compound");
        break;
    case H5T_ARRAY:
        snprintf(out, size, "array");
        break;
    case H5T_ENUM:
        snprintf(out, size, "enum");
        break;
    case H5T_VLEN:
        snprintf(out, size, "variable-length sequence");
        break;
    default:
        snprintf(out, size, "an unsupported datatype");
        break;
    }
}

int h5io_exists(hid_t file, const char *path)
{
    char prefix[1024];
    size_t length = strlen(path);
    if (length >= sizeof prefix)
        return -1;
    /* H5Lexists (HDF5 1.10.8) fails instead of returning 0 when an
     * intermediate group is missing, so each prefix is checked in turn. */
    for (size_t i = 1; i <= length; i++) {
        if (path[i] != '/' && path[i] != '\0')
            continue;
        memcpy(prefix, path, i);
        prefix[i] = '\0';
        htri_t found = H5Lexists(file, prefix, H5P_DEFAULT);
        if (found <= 0)
            return found < 0 ? -1 : 0;
    }
    return 1;
}

int h5io_write_attribute(hid_t object, const char *where, const char *name, hid_t file_type,
                         hid_t mem_type, const void *value, struct caem_error *err)
{
    hid_t space = H5Screate(H5S_SCALAR);
    hid_t attr = space < 0 ? -1
                           : H5Acreate2(object, name, file_type, space, H5P_DEFAULT, H5P_DEFAULT);
    int status = attr >= 0 && H5Awrite(attr, mem_type, value) >= 0 ? 0 : -1;
    if (attr >= 0)
        H5Aclose(attr);
    if (space >= 0)
        H5Sclose(space);
    if (status != 0)
        return h5io_fail(err, "cannot write attribute '%s' of %s", name, where);
    return 0;
}

int h5io_write_string(hid_t object, const char *where, const char *name, const char *value,
                      struct caem_error *err)
{
    hid_t type = H5Tcopy(H5T_C_S1);
    int status = -1;
    if (type >= 0 && H5Tset_size(type, strlen(value) + 1) >= 0 &&
        H5Tset_strpad(type, H5T_STR_NULLTERM) >= 0 && H5Tset_cset(type, H5T_CSET_UTF8) >= 0)
        status = h5io_write_attribute(object, where, name, type, type, value, err);
    else
        h5io_fail(err, "cannot make the string type of attribute '%s' of %s", name, where);
    if (type >= 0)
        H5Tclose(type);
    return status;
}

int h5io_attribute_exists(hid_t object, const char *name)
{
    htri_t found = H5Aexists(object, name);
    return found > 0 ? 1 : (found == 0 ? 0 : -1);
}

/* Opens a scalar attribute of the given class. The message names what is
 * missing or wrong. */
static hid_t open_attribute(hid_t object, const char *where, const char *name,
                            H5T_class_t expected, const char *expected_name,
                            struct caem_error *err)
{
    int found = h5io_attribute_exists(object, name);
    if (found < 0)
        return h5io_fail(err, "cannot look up attribute '%s' of %s", name, where);
    if (found == 0)
        return caem_fail(err, "missing attribute '%s' of %s", name, where);
    hid_t attr = H5Aopen(object, name, H5P_DEFAULT);
    if (attr < 0)
        return h5io_fail(err, "cannot open attribute '%s' of %s", name, where);
    hid_t type = H5Aget_type(attr);
    hid_t space = H5Aget_space(attr);
    H5T_class_t type_class = type >= 0 ? H5Tget_class(type) : H5T_NO_CLASS;
    hssize_t points = space >= 0 ? H5Sget_simple_extent_npoints(space) : -1;
    char found_name[64] = "an unreadable type";
    if (type >= 0)
        h5io_type_name(type, found_name, sizeof found_name);
    if (type >= 0)
        H5Tclose(type);
    if (space >= 0)
        H5Sclose(space);
    if (type_class != expected) {
        H5Aclose(attr);
        return caem_fail(err, "attribute '%s' of %s is %s, expected %s", name, where,
                         found_name, expected_name);
    }
    if (points != 1) {
        H5Aclose(attr);
        return caem_fail(err, "attribute '%s' of %s has %lld values, expected one", name,
                         where, (long long)points);
    }
    return attr;
}

static int read_scalar(hid_t object, const char *where, const char *name, H5T_class_t expected,
                       const char *expected_name, hid_t mem_type, void *out,
                       struct caem_error *err)
{
    hid_t attr = open_attribute(object, where, name, expected, expected_name, err);
    if (attr < 0)
        return -1;
    herr_t status = H5Aread(attr, mem_type, out);
    H5Aclose(attr);
    if (status < 0)
        return h5io_fail(err, "cannot read attribute '%s' of %s", name, where);
    return 0;
}

int h5io_read_int64(hid_t object, const char *where, const char *name, int64_t *out,
                    struct caem_error *err)
{
    return read_scalar(object, where, name, H5T_INTEGER, "an integer", H5T_NATIVE_INT64, out,
                       err);
}

int h5io_read_uint64(hid_t object, const char *where, const char *name, uint64_t *out,
                     struct caem_error *err)
{
    return read_scalar(object, where, name, H5T_INTEGER, "an integer", H5T_NATIVE_UINT64, out,
                       err);
}

int h5io_read_float(hid_t object, const char *where, const char *name, float *out,
                    struct caem_error *err)
{
    return read_scalar(object, where, name, H5T_FLOAT, "a floating-point number",
                       H5T_NATIVE_FLOAT, out, err);
}

int h5io_read_double(hid_t object, const char *where, const char *name, double *out,
                     struct caem_error *err)
{
    return read_scalar(object, where, name, H5T_FLOAT, "a floating-point number",
                       H5T_NATIVE_DOUBLE, out, err);
}

int h5io_read_string(hid_t object, const char *where, const char *name, char **out,
                     struct caem_error *err)
{
    *out = NULL;
    hid_t attr = open_attribute(object, where, name, H5T_STRING, "a string", err);
    if (attr < 0)
        return -1;
    hid_t file_type = H5Aget_type(attr);
    hid_t mem_type = file_type >= 0 ? H5Tcopy(file_type) : -1;
    htri_t variable = mem_type >= 0 ? H5Tis_variable_str(mem_type) : -1;
    int status = -1;
    if (variable > 0) {
        char *text = NULL;
        if (H5Aread(attr, mem_type, &text) >= 0 && text != NULL) {
            *out = strdup(text);
            status = *out != NULL ? 0 : caem_fail(err, "out of memory for attribute '%s'", name);
        } else {
            status = h5io_fail(err, "cannot read string attribute '%s' of %s", name, where);
        }
        if (text != NULL)
            H5free_memory(text);
    } else if (variable == 0) {
        size_t size = H5Tget_size(mem_type);
        char *text = calloc(size + 1, 1);
        if (text == NULL)
            status = caem_fail(err, "out of memory for attribute '%s' (%zu bytes)", name, size);
        else if (H5Aread(attr, mem_type, text) < 0)
            status = h5io_fail(err, "cannot read string attribute '%s' of %s", name, where);
        else
            status = 0;
        if (status == 0)
            *out = text;
        else
            free(text);
    } else {
        status = h5io_fail(err, "cannot read the type of attribute '%s' of %s", name, where);
    }
    if (mem_type >= 0)
        H5Tclose(mem_type);
    if (file_type >= 0)
        H5Tclose(file_type);
    H5Aclose(attr);
    return status;
}

/* A link creation property list that creates missing groups on the way. */
static hid_t intermediate_groups_plist(void)
{
    hid_t lcpl = H5Pcreate(H5P_LINK_CREATE);
    if (lcpl >= 0 && H5Pset_create_intermediate_group(lcpl, 1) < 0) {
        H5Pclose(lcpl);
        return -1;
    }
    return lcpl;
}

/* A chunked, checksummed dataset creation list, or the default (contiguous)
 * list for an empty dataset, which HDF5 cannot chunk. */
static hid_t dataset_plist(int rank, const hsize_t *dims, size_t element_size)
{
    hsize_t count = 1;
    for (int i = 0; i < rank; i++)
        count *= dims[i];
    if (count == 0)
        return H5Pcreate(H5P_DATASET_CREATE);
    hsize_t chunk[2] = { dims[0], rank > 1 ? dims[1] : 1 };
    hsize_t row_bytes = (rank > 1 ? dims[1] : 1) * element_size;
    hsize_t max_rows = CHUNK_BYTES / (row_bytes > 0 ? row_bytes : 1);
    if (max_rows < 1)
        max_rows = 1;
    if (chunk[0] > max_rows)
        chunk[0] = max_rows;
    hid_t dcpl = H5Pcreate(H5P_DATASET_CREATE);
    if (dcpl < 0)
        return -1;
    if (H5Pset_chunk(dcpl, rank, chunk) < 0 || H5Pset_fletcher32(dcpl) < 0) {
        H5Pclose(dcpl);
        return -1;
    }
    return dcpl;
}

int h5io_write_dataset(hid_t file, const char *path, hid_t file_type, hid_t mem_type, int rank,
                       const hsize_t *dims, const void *data, struct caem_error *err)
{
    hsize_t count = 1;
    for (int i = 0; i < rank; i++)
        count *= dims[i];
    hid_t space = H5Screate_simple(rank, dims, NULL);
    hid_t lcpl = intermediate_groups_plist();
    hid_t dcpl = dataset_plist(rank, dims, H5Tget_size(file_type));
    hid_t dataset = -1;
    int status = -1;
    if (space >= 0 && lcpl >= 0 && dcpl >= 0)
        dataset = H5Dcreate2(file, path, file_type, space, lcpl, dcpl, H5P_DEFAULT);
    if (dataset >= 0 && (count == 0 || H5Dwrite(dataset, mem_type, H5S_ALL, H5S_ALL,
                                                H5P_DEFAULT, data) >= 0))
        status = 0;
    if (dataset >= 0)
        H5Dclose(dataset);
    if (dcpl >= 0)
        H5Pclose(dcpl);
    if (lcpl >= 0)
        H5Pclose(lcpl);
    if (space >= 0)
        H5Sclose(space);
    if (status != 0)
        return h5io_fail(err, "cannot write dataset %s", path);
    return 0;
}

static void format_shape(char *out, size_t size, int rank, const hsize_t *dims)
{
    size_t used = (size_t)snprintf(out, size, "[");
    for (int i = 0; i < rank && used < size; i++)
        used += (size_t)snprintf(out + used, size - used, "%s%llu", i > 0 ? ", " : "",
                                 (unsigned long long)dims[i]);
    if (used < size)
        snprintf(out + used, size - used, "]");
}

static const char *class_size_name(H5T_class_t type_class, size_t size, char *out,
                                   size_t out_size)
{
    snprintf(out, out_size, "%s%zu", type_class == H5T_FLOAT ? "float" : "int", size * 8);
    return out;
}

/* Explains why opening the object at `path` as a `kind` failed: it is
 * missing, it is something else, or HDF5 could not read it. */
static int explain_open_failure(hid_t file, const char *path, H5I_type_t expected,
                                const char *kind, struct caem_error *err)
{
    char detail[512];
    h5io_error_text(detail, sizeof detail);
    int found = h5io_exists(file, path);
    if (found == 0)
        return caem_fail(err, "missing %s %s", kind, path);
    if (found > 0) {
        hid_t object = H5Oopen(file, path, H5P_DEFAULT);
        H5I_type_t type = object >= 0 ? H5Iget_type(object) : H5I_BADID;
        if (object >= 0)
            H5Oclose(object);
        if (object >= 0 && type != expected)
            return caem_fail(err, "%s is not a %s", path, kind);
    }
    H5Eclear2(H5E_DEFAULT);
    if (detail[0] != '\0')
        return caem_fail(err, "cannot open %s %s (HDF5: %s)", kind, path, detail);
    return caem_fail(err, "cannot open %s %s", kind, path);
}

static int check_dataset_shape(hid_t dataset, const char *path,
                               const struct h5io_expect *expect, struct caem_error *err)
{
    hid_t type = H5Dget_type(dataset);
    if (type < 0)
        return h5io_fail(err, "cannot read the datatype of dataset %s", path);
    H5T_class_t type_class = H5Tget_class(type);
    size_t type_size = H5Tget_size(type);
    char found[64], wanted[64];
    h5io_type_name(type, found, sizeof found);
    H5Tclose(type);
    if (type_class != expect->type_class || type_size != expect->type_size)
        return caem_fail(err, "dataset %s is %s, expected %s", path, found,
                         class_size_name(expect->type_class, expect->type_size, wanted,
                                         sizeof wanted));

    hid_t space = H5Dget_space(dataset);
    if (space < 0)
        return h5io_fail(err, "cannot read the shape of dataset %s", path);
    int rank = H5Sget_simple_extent_ndims(space);
    hsize_t dims[H5S_MAX_RANK];
    int simple = H5Sget_simple_extent_type(space) == H5S_SIMPLE;
    if (rank >= 0 && rank <= H5S_MAX_RANK)
        H5Sget_simple_extent_dims(space, dims, NULL);
    H5Sclose(space);
    if (rank < 0)
        return h5io_fail(err, "cannot read the shape of dataset %s", path);
    int same = simple && rank == expect->rank;
    for (int i = 0; same && i < rank; i++)
        same = dims[i] == expect->dims[i];
    if (!same) {
        char found_shape[128], wanted_shape[128];
        if (simple)
            format_shape(found_shape, sizeof found_shape, rank, dims);
        else
            snprintf(found_shape, sizeof found_shape, "a scalar or empty dataspace");
        format_shape(wanted_shape, sizeof wanted_shape, expect->rank, expect->dims);
        return caem_fail(err, "dataset %s has shape %s, expected %s", path, found_shape,
                         wanted_shape);
    }
    return 0;
}

hid_t h5io_open_dataset(hid_t file, const char *path, const struct h5io_expect *expect,
                        struct caem_error *err)
{
    hid_t dataset = H5Dopen2(file, path, H5P_DEFAULT);
    if (dataset < 0)
        return explain_open_failure(file, path, H5I_DATASET, "dataset", err);
    if (check_dataset_shape(dataset, path, expect, err) != 0) {
        H5Dclose(dataset);
        return -1;
    }
    return dataset;
}

int h5io_read_dataset(hid_t dataset, const char *path, hid_t mem_type, size_t count, void *data,
                      struct caem_error *err)
{
    if (count == 0)
        return 0;
    if (H5Dread(dataset, mem_type, H5S_ALL, H5S_ALL, H5P_DEFAULT, data) < 0)
        return h5io_fail(err, "cannot read dataset %s", path);
    return 0;
}

hid_t h5io_open_group(hid_t file, const char *path, struct caem_error *err)
{
    hid_t group = H5Gopen2(file, path, H5P_DEFAULT);
    if (group < 0)
        return explain_open_failure(file, path, H5I_GROUP, "group", err);
    return group;
}

void h5io_names_free(struct h5io_names *names)
{
    for (int i = 0; i < names->count; i++)
        free(names->names[i]);
    free(names->names);
    names->names = NULL;
    names->count = 0;
}

static int names_add(struct h5io_names *names, const char *name)
{
    char **grown = realloc(names->names, sizeof *grown * (size_t)(names->count + 1));
    if (grown == NULL)
        return -1;
    names->names = grown;
    names->names[names->count] = strdup(name);
    if (names->names[names->count] == NULL)
        return -1;
    names->count++;
    return 0;
}

/* Creation order when the object's creation property list tracks it. */
static H5_index_t listing_order(hid_t object, int attributes)
{
    H5I_type_t kind = H5Iget_type(object);
    hid_t plist = -1;
    if (kind == H5I_GROUP)
        plist = H5Gget_create_plist(object);
    else if (kind == H5I_DATASET)
        plist = H5Dget_create_plist(object);
    else if (kind == H5I_FILE) {
        /* The file creation list does not report the root group's order. */
        hid_t root = H5Gopen2(object, "/", H5P_DEFAULT);
        if (root >= 0) {
            plist = H5Gget_create_plist(root);
            H5Gclose(root);
        }
    }
    unsigned flags = 0;
    herr_t status = -1;
    if (plist >= 0) {
        status = attributes ? H5Pget_attr_creation_order(plist, &flags)
                            : H5Pget_link_creation_order(plist, &flags);
        H5Pclose(plist);
    }
    if (status < 0) {
        H5Eclear2(H5E_DEFAULT);
        return H5_INDEX_NAME;
    }
    return (flags & H5P_CRT_ORDER_TRACKED) ? H5_INDEX_CRT_ORDER : H5_INDEX_NAME;
}

int h5io_list_links(hid_t group, const char *where, struct h5io_names *out,
                    struct caem_error *err)
{
    memset(out, 0, sizeof *out);
    H5G_info_t info;
    if (H5Gget_info(group, &info) < 0)
        return h5io_fail(err, "cannot list the members of %s", where);
    H5_index_t order = listing_order(group, 0);
    for (hsize_t i = 0; i < info.nlinks; i++) {
        char name[1024];
        ssize_t length = H5Lget_name_by_idx(group, ".", order, H5_ITER_INC, i, name,
                                            sizeof name, H5P_DEFAULT);
        if (length < 0) {
            h5io_names_free(out);
            return h5io_fail(err, "cannot read the name of member %llu of %s",
                             (unsigned long long)i, where);
        }
        if ((size_t)length >= sizeof name) {
            h5io_names_free(out);
            return caem_fail(err, "member %llu of %s has a name of %zd bytes, longer than "
                             "%zu", (unsigned long long)i, where, length, sizeof name - 1);
        }
        if (names_add(out, name) != 0) {
            h5io_names_free(out);
            return caem_fail(err, "out of memory listing the members of %s", where);
        }
    }
    return 0;
}

struct attribute_walk {
    struct h5io_names *names;
    int failed;
};

static herr_t collect_attribute(hid_t object, const char *name, const H5A_info_t *info,
                                void *data)
{
    struct attribute_walk *walk = data;
    if (names_add(walk->names, name) != 0) {
        walk->failed = 1;
        return -1;
    }
    return 0;
}

int h5io_list_attributes(hid_t object, const char *where, struct h5io_names *out,
                         struct caem_error *err)
{
    memset(out, 0, sizeof *out);
    struct attribute_walk walk = { out, 0 };
    hsize_t index = 0;
    herr_t status = H5Aiterate2(object, listing_order(object, 1), H5_ITER_INC, &index,
                                collect_attribute, &walk);
    if (status < 0 || walk.failed) {
        h5io_names_free(out);
        if (walk.failed)
            return caem_fail(err, "out of memory listing the attributes of %s", where);
        return h5io_fail(err, "cannot list the attributes of %s", where);
    }
    return 0;
}

hid_t h5io_create_group(hid_t location, const char *where, const char *name,
                        struct caem_error *err)
{
    hid_t gcpl = H5Pcreate(H5P_GROUP_CREATE);
    unsigned order = H5P_CRT_ORDER_TRACKED | H5P_CRT_ORDER_INDEXED;
    hid_t group = -1;
    if (gcpl >= 0 && H5Pset_link_creation_order(gcpl, order) >= 0 &&
        H5Pset_attr_creation_order(gcpl, order) >= 0)
        group = H5Gcreate2(location, name, H5P_DEFAULT, gcpl, H5P_DEFAULT);
    if (gcpl >= 0)
        H5Pclose(gcpl);
    if (group < 0)
        return h5io_fail(err, "cannot create group '%s' in %s", name, where);
    return group;
}
