/* Reading checkpoints. Every object is checked before it is used, so that a
 * damaged or foreign file fails with a message instead of loading wrong
 * values. Objects the format does not define (a /merge group, say) are
 * ignored, except unknown tensors under /params and the moment groups. */
#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "checkpoint.h"
#include "checkpoint_internal.h"
#include "hdf5_io.h"

struct reader {
    hid_t file;
    int values; /* 0: check the tensors without reading them */
    const struct backend *backend;
    struct param_layout layout;
    struct h5io_names layout_names; /* sorted tensor and group names of the layout */
};

/* ---- opening ---- */

static hid_t open_file(const char *path, struct caem_error *err)
{
    struct stat st;
    if (stat(path, &st) != 0)
        return caem_fail(err, "cannot open: %s", strerror(errno));
    if (S_ISDIR(st.st_mode))
        return caem_fail(err, "is a directory, expected an HDF5 file");
    htri_t signature = H5Fis_hdf5(path);
    if (signature == 0)
        return caem_fail(err, "not an HDF5 file (no HDF5 signature)");
    if (signature < 0)
        return h5io_fail(err, "cannot read the file");

    hid_t fapl = H5Pcreate(H5P_FILE_ACCESS);
    if (fapl < 0 || H5Pset_fclose_degree(fapl, H5F_CLOSE_STRONG) < 0) {
        if (fapl >= 0)
            H5Pclose(fapl);
        return h5io_fail(err, "cannot set up the file access");
    }
    hid_t file = H5Fopen(path, H5F_ACC_RDONLY, fapl);
    char detail[512];
    h5io_error_text(detail, sizeof detail);
    H5Pclose(fapl);
    if (file >= 0)
        return file;
    /* HDF5 compares the end of file that the superblock records with the
     * file's size when it opens it. */
    if (strstr(detail, "truncated") != NULL)
        return caem_fail(err, "the file is truncated or damaged (HDF5: %s)", detail);
    return caem_fail(err, "cannot open as HDF5, the file may be damaged (HDF5: %s)", detail);
}

static int attribute_class(hid_t object, const char *name, H5T_class_t *out)
{
    hid_t attr = H5Aopen(object, name, H5P_DEFAULT);
    hid_t type = attr >= 0 ? H5Aget_type(attr) : -1;
    *out = type >= 0 ? H5Tget_class(type) : H5T_NO_CLASS;
    if (type >= 0)
        H5Tclose(type);
    if (attr >= 0)
        H5Aclose(attr);
    if (*out == H5T_NO_CLASS) {
        H5Eclear2(H5E_DEFAULT);
        return -1;
    }
    return 0;
}

static int read_root(hid_t file, struct checkpoint *out, struct caem_error *err)
{
    char *format = NULL;
    if (h5io_read_string(file, "/", "format", &format, err) != 0)
        return caem_fail_prefix(err, "not a caem checkpoint");
    int known = strcmp(format, CHECKPOINT_FORMAT) == 0;
    if (!known) {
        caem_fail(err, "not a caem checkpoint: format is '%.100s', expected '%s'", format,
                  CHECKPOINT_FORMAT);
        free(format);
        return -1;
    }
    free(format);
    int64_t version;
    if (h5io_read_int64(file, "/", "format_version", &version, err) != 0)
        return -1;
    if (version != CHECKPOINT_FORMAT_VERSION)
        return caem_fail(err, "written by format version %lld; this build reads version %d",
                         (long long)version, CHECKPOINT_FORMAT_VERSION);
    char *created = NULL;
    if (h5io_read_string(file, "/", "created", &created, err) != 0)
        return -1;
    snprintf(out->created, sizeof out->created, "%s", created);
    free(created);

    struct h5io_names names;
    if (h5io_list_attributes(file, "/", &names, err) != 0)
        return -1;
    int status = 0;
    for (int i = 0; i < names.count && status == 0; i++) {
        const char *name = names.names[i];
        H5T_class_t type_class;
        if (strcmp(name, "format") == 0 || strcmp(name, "format_version") == 0 ||
            strcmp(name, "created") == 0)
            continue;
        if (attribute_class(file, name, &type_class) != 0) {
            status = caem_fail(err, "cannot read the type of root attribute '%s'", name);
            break;
        }
        /* Only string attributes belong to the caller. Format version 1
         * defines no others, so a later writer's are skipped. */
        if (type_class != H5T_STRING)
            continue;
        char *value = NULL, *copy = strdup(name);
        if (copy == NULL || h5io_read_string(file, "/", name, &value, err) != 0) {
            free(copy);
            status = copy == NULL ? caem_fail(err, "out of memory for attribute names") : -1;
            break;
        }
        size_t grown_size = sizeof(char *) * (size_t)(out->attr_count + 1);
        char **grown_names = realloc(out->attr_names, grown_size);
        if (grown_names != NULL)
            out->attr_names = grown_names;
        char **grown_values = realloc(out->attr_values, grown_size);
        if (grown_values != NULL)
            out->attr_values = grown_values;
        if (grown_names == NULL || grown_values == NULL) {
            free(copy);
            free(value);
            status = caem_fail(err, "out of memory for root attributes");
            break;
        }
        out->attr_names[out->attr_count] = copy;
        out->attr_values[out->attr_count] = value;
        out->attr_count++;
    }
    h5io_names_free(&names);
    return status;
}

/* ---- config ---- */

static int read_config(hid_t file, struct model_config *cfg, struct caem_error *err)
{
    hid_t group = h5io_open_group(file, "/config", err);
    if (group < 0)
        return -1;
    memset(cfg, 0, sizeof *cfg);
    int status = 0;
    for (int i = 0; i < checkpoint_config_field_count && status == 0; i++) {
        const struct checkpoint_config_field *f = &checkpoint_config_fields[i];
        char *base = (char *)cfg + f->offset;
        if (f->is_float) {
            status = h5io_read_float(group, "/config", f->name, (float *)base, err);
            continue;
        }
        int64_t value;
        status = h5io_read_int64(group, "/config", f->name, &value, err);
        if (status == 0 && (value < INT_MIN || value > INT_MAX))
            status = caem_fail(err, "attribute '%s' of /config is %lld, outside the range of "
                               "int", f->name, (long long)value);
        if (status == 0)
            *(int *)base = (int)value;
    }
    char *routing = NULL;
    if (status == 0)
        status = h5io_read_string(group, "/config", "routing", &routing, err);
    if (status == 0) {
        if (strcmp(routing, "parity") == 0)
            cfg->routing = ROUTING_PARITY;
        else if (strcmp(routing, "clean") == 0)
            cfg->routing = ROUTING_CLEAN;
        else
            status = caem_fail(err, "attribute 'routing' of /config is '%.100s', expected "
                               "'parity' or 'clean'", routing);
    }
    free(routing);
    H5Gclose(group);
    if (status == 0 && config_validate(cfg, err) != 0)
        return caem_fail_prefix(err, "/config");
    return status;
}

/* ---- tensors ---- */

/* Reads (or with r->values 0, checks) one float32 dataset per tensor of the
 * layout under `prefix` into `dest`, backend memory laid out as the
 * parameters. */
static int read_tensors(struct reader *r, const char *prefix, float *dest,
                        struct caem_error *err)
{
    const struct param_layout *layout = &r->layout;
    size_t largest = 1;
    for (int i = 0; i < layout->count; i++)
        if (layout->tensors[i].count > largest)
            largest = layout->tensors[i].count;
    float *host = NULL;
    if (r->values) {
        host = caem_malloc(sizeof(float) * largest, "a tensor being loaded", err);
        if (host == NULL)
            return -1;
    }
    int status = 0;
    for (int i = 0; i < layout->count && status == 0; i++) {
        const struct param_info *p = &layout->tensors[i];
        char path[CHECKPOINT_PATH_MAX];
        struct h5io_expect expect = { H5T_FLOAT, 4, p->ndim,
                                      { (hsize_t)p->shape[0], (hsize_t)p->shape[1] } };
        if (checkpoint_path(path, err, "%s/%s", prefix, p->name) != 0) {
            status = -1;
            break;
        }
        hid_t dataset = h5io_open_dataset(r->file, path, &expect, err);
        if (dataset < 0) {
            status = -1;
            break;
        }
        if (r->values) {
            status = h5io_read_dataset(dataset, path, H5T_NATIVE_FLOAT, p->count, host, err);
            if (status == 0)
                r->backend->upload(dest + p->offset, host, sizeof(float) * p->count);
        }
        H5Dclose(dataset);
    }
    free(host);
    return status;
}

static int compare_names(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* Collects every name that may appear below a tensor root: each tensor
 * name and each group on its way ("encoder", "encoder/block_00", ...),
 * sorted and without repeats. */
static int collect_layout_names(struct reader *r, struct caem_error *err)
{
    struct h5io_names *names = &r->layout_names;
    for (int i = 0; i < r->layout.count; i++) {
        const char *tensor = r->layout.tensors[i].name;
        for (const char *c = tensor;; c++) {
            if (*c != '/' && *c != '\0')
                continue;
            char **grown = realloc(names->names, sizeof *grown * (size_t)(names->count + 1));
            if (grown == NULL)
                return caem_fail(err, "out of memory for the tensor names");
            names->names = grown;
            names->names[names->count] = strndup(tensor, (size_t)(c - tensor));
            if (names->names[names->count] == NULL)
                return caem_fail(err, "out of memory for the tensor names");
            names->count++;
            if (*c == '\0')
                break;
        }
    }
    qsort(names->names, (size_t)names->count, sizeof *names->names, compare_names);
    int kept = 0;
    for (int i = 0; i < names->count; i++) {
        if (kept > 0 && strcmp(names->names[kept - 1], names->names[i]) == 0)
            free(names->names[i]);
        else
            names->names[kept++] = names->names[i];
    }
    names->count = kept;
    return 0;
}

static int is_layout_name(const struct reader *r, const char *name)
{
    return bsearch(&name, r->layout_names.names, (size_t)r->layout_names.count,
                   sizeof *r->layout_names.names, compare_names) != NULL;
}

/* Lists the members of one group below a tensor root (`relative` is "" for
 * the root itself). It fails on any member that is not a tensor or group of
 * the layout, so that a file written for another config cannot pass for
 * this one. */
static int check_group_members(struct reader *r, const char *root, const char *relative,
                               struct caem_error *err)
{
    char path[CHECKPOINT_PATH_MAX];
    if (checkpoint_path(path, err, "%s%s%s", root, relative[0] ? "/" : "", relative) != 0)
        return -1;
    hid_t group = h5io_open_group(r->file, path, err);
    if (group < 0)
        return -1;
    struct h5io_names members;
    int status = h5io_list_links(group, path, &members, err);
    H5Gclose(group);
    for (int i = 0; i < members.count && status == 0; i++) {
        char child[CHECKPOINT_PATH_MAX];
        status = checkpoint_path(child, err, "%s%s%s", relative, relative[0] ? "/" : "",
                                 members.names[i]);
        if (status == 0 && !is_layout_name(r, child))
            status = caem_fail(err, "unexpected object %s/%s: the config's parameter layout "
                               "has no tensor or group '%s'", path, members.names[i], child);
    }
    h5io_names_free(&members);
    return status;
}

/* Checks the root and every group of the layout below it. */
static int check_no_unknown_tensors(struct reader *r, const char *root, struct caem_error *err)
{
    if (check_group_members(r, root, "", err) != 0)
        return -1;
    for (int i = 0; i < r->layout_names.count; i++) {
        const char *name = r->layout_names.names[i];
        if (param_find(&r->layout, name) == NULL &&
            check_group_members(r, root, name, err) != 0)
            return -1;
    }
    return 0;
}

static int require_group(hid_t file, const char *path, struct caem_error *err)
{
    hid_t group = h5io_open_group(file, path, err);
    if (group < 0)
        return -1;
    H5Gclose(group);
    return 0;
}

static int read_params(struct reader *r, struct model *m, struct caem_error *err)
{
    if (require_group(r->file, "/params", err) != 0)
        return -1;
    if (check_no_unknown_tensors(r, "/params", err) != 0)
        return -1;
    return read_tensors(r, "/params", m != NULL ? m->params : NULL, err);
}

/* ---- optimizer ---- */

static int read_optimizer_settings(hid_t file, struct checkpoint *out, struct caem_error *err)
{
    hid_t group = h5io_open_group(file, "/optimizer", err);
    if (group < 0)
        return -1;
    struct adamw_config *c = &out->optimizer_config;
    const char *where = "/optimizer";
    int64_t step = 0;
    int status = 0;
    if (h5io_read_float(group, where, "lr", &c->lr, err) != 0 ||
        h5io_read_float(group, where, "beta1", &c->beta1, err) != 0 ||
        h5io_read_float(group, where, "beta2", &c->beta2, err) != 0 ||
        h5io_read_float(group, where, "eps", &c->eps, err) != 0 ||
        h5io_read_float(group, where, "weight_decay", &c->weight_decay, err) != 0 ||
        h5io_read_int64(group, where, "step", &step, err) != 0)
        status = -1;
    H5Gclose(group);
    if (status != 0)
        return -1;
    if (step < 0 || step > LONG_MAX)
        return caem_fail(err, "attribute 'step' of /optimizer is %lld, expected >= 0",
                         (long long)step);
    out->optimizer_step = (long)step;
    out->has_optimizer = 1;
    return 0;
}

static int read_tensor_steps(struct reader *r, long step, long *dest, struct caem_error *err)
{
    const char *path = "/optimizer/tensor_steps";
    size_t count = (size_t)r->layout.count;
    struct h5io_expect expect = { H5T_INTEGER, 8, 1, { (hsize_t)count, 0 } };
    hid_t dataset = h5io_open_dataset(r->file, path, &expect, err);
    if (dataset < 0)
        return -1;
    int64_t *steps = NULL;
    int status = 0;
    if (r->values) {
        steps = caem_malloc(sizeof *steps * (count > 0 ? count : 1), "tensor steps", err);
        status = steps == NULL ? -1
                               : h5io_read_dataset(dataset, path, H5T_NATIVE_INT64, count,
                                                   steps, err);
    }
    H5Dclose(dataset);
    for (size_t i = 0; r->values && status == 0 && i < count; i++) {
        if (steps[i] < 0 || steps[i] > step)
            status = caem_fail(err, "%s: tensor %s has %lld steps, expected 0 to the "
                               "optimizer's %ld", path, r->layout.tensors[i].name,
                               (long long)steps[i], step);
        else
            dest[i] = (long)steps[i];
    }
    free(steps);
    return status;
}

static int read_optimizer(struct reader *r, struct checkpoint *out, struct caem_error *err)
{
    if (read_optimizer_settings(r->file, out, err) != 0)
        return -1;
    const char *moments[2] = { "/optimizer/m", "/optimizer/v" };
    for (int i = 0; i < 2; i++) {
        if (require_group(r->file, moments[i], err) != 0)
            return -1;
        if (check_no_unknown_tensors(r, moments[i], err) != 0)
            return -1;
    }
    struct adamw *opt = NULL;
    if (r->values) {
        if (adamw_create(&opt, out->model, &out->optimizer_config, err) != 0)
            return caem_fail_prefix(err, "/optimizer");
        /* Nothing writes the gaps between tensors, so they are zeroed for two
         * loads of one file to give equal buffers on every backend. */
        r->backend->zero(opt->m, sizeof(float) * opt->count);
        r->backend->zero(opt->v, sizeof(float) * opt->count);
        opt->step = out->optimizer_step;
        out->optimizer = opt;
    }
    if (read_tensors(r, moments[0], opt != NULL ? opt->m : NULL, err) != 0 ||
        read_tensors(r, moments[1], opt != NULL ? opt->v : NULL, err) != 0)
        return -1;
    return read_tensor_steps(r, out->optimizer_step, opt != NULL ? opt->tensor_steps : NULL,
                             err);
}

/* ---- train state ---- */

static int read_bounded(hid_t group, const char *name, int64_t min, int64_t max,
                        int64_t *out, struct caem_error *err)
{
    if (h5io_read_int64(group, "/train_state", name, out, err) != 0)
        return -1;
    if (*out < min || *out > max)
        return caem_fail(err, "attribute '%s' of /train_state is %lld, expected %lld to %lld",
                         name, (long long)*out, (long long)min, (long long)max);
    return 0;
}

static int is_fixed_train_attribute(const char *name)
{
    for (int k = 0; k < checkpoint_train_attribute_count; k++)
        if (strcmp(name, checkpoint_train_attributes[k]) == 0)
            return 1;
    return 0;
}

/* Reads the integer attributes that are not fixed fields as extra values. */
static int read_train_extras(hid_t group, struct checkpoint_train_state *t,
                             struct caem_error *err)
{
    struct h5io_names names;
    if (h5io_list_attributes(group, "/train_state", &names, err) != 0)
        return -1;
    int status = 0;
    for (int i = 0; i < names.count && status == 0; i++) {
        H5T_class_t type_class;
        if (is_fixed_train_attribute(names.names[i]))
            continue;
        if (attribute_class(group, names.names[i], &type_class) != 0) {
            status = caem_fail(err, "cannot read the type of attribute '%s' of /train_state",
                               names.names[i]);
            break;
        }
        if (type_class != H5T_INTEGER)
            continue;
        int64_t value;
        if (h5io_read_int64(group, "/train_state", names.names[i], &value, err) != 0) {
            status = -1;
            break;
        }
        char **grown_names = realloc(t->extra_names, sizeof *grown_names *
                                                         (size_t)(t->extra_count + 1));
        if (grown_names != NULL)
            t->extra_names = grown_names;
        int64_t *grown_values = realloc(t->extra_values, sizeof *grown_values *
                                                             (size_t)(t->extra_count + 1));
        if (grown_values != NULL)
            t->extra_values = grown_values;
        char *copy = strdup(names.names[i]);
        if (grown_names == NULL || grown_values == NULL || copy == NULL) {
            free(copy);
            status = caem_fail(err, "out of memory for the train state");
            break;
        }
        t->extra_names[t->extra_count] = copy;
        t->extra_values[t->extra_count] = value;
        t->extra_count++;
    }
    h5io_names_free(&names);
    return status;
}

static int read_train_state(hid_t file, struct checkpoint_train_state *t,
                            struct caem_error *err)
{
    hid_t group = h5io_open_group(file, "/train_state", err);
    if (group < 0)
        return -1;
    const char *where = "/train_state";
    int64_t step, epoch, epoch_batch, batch_size, accumulation;
    char *task = NULL;
    int status = 0;
    if (h5io_read_uint64(group, where, "seed", &t->seed, err) != 0 ||
        read_bounded(group, "step", 0, LONG_MAX, &step, err) != 0 ||
        read_bounded(group, "epoch", 0, UINT32_MAX, &epoch, err) != 0 ||
        read_bounded(group, "epoch_batch", 0, LONG_MAX, &epoch_batch, err) != 0 ||
        h5io_read_uint64(group, where, "rng_seed", &t->rng_seed, err) != 0 ||
        h5io_read_uint64(group, where, "rng_next", &t->rng_next, err) != 0 ||
        read_bounded(group, "batch_size", 0, INT_MAX, &batch_size, err) != 0 ||
        read_bounded(group, "accumulation", 0, INT_MAX, &accumulation, err) != 0 ||
        h5io_read_string(group, where, "task", &task, err) != 0)
        status = -1;
    if (status == 0 && strlen(task) >= sizeof t->task)
        status = caem_fail(err, "attribute 'task' of /train_state has %zu bytes, expected "
                           "fewer than %d", strlen(task), CHECKPOINT_TASK_MAX);
    if (status == 0) {
        t->step = (long)step;
        t->epoch = (uint32_t)epoch;
        t->epoch_batch = (long)epoch_batch;
        t->batch_size = (int)batch_size;
        t->accumulation = (int)accumulation;
        snprintf(t->task, sizeof t->task, "%s", task);
        status = read_train_extras(group, t, err);
    }
    free(task);
    H5Gclose(group);
    return status;
}

/* ---- usage ---- */

static int read_int_attribute(hid_t group, const char *where, const char *name, int min,
                              int max, int *out, struct caem_error *err)
{
    int64_t value;
    if (h5io_read_int64(group, where, name, &value, err) != 0)
        return -1;
    if (value < min || value > max)
        return caem_fail(err, "attribute '%s' of %s is %lld, expected %d to %d", name, where,
                         (long long)value, min, max);
    *out = (int)value;
    return 0;
}

/* Reads one usage dataset at `group_path`/`name` after checking its type and
 * shape. */
static int read_usage_dataset(hid_t file, const char *group_path, const char *name,
                              H5T_class_t type_class, size_t type_size, hid_t mem_type,
                              int rank, hsize_t rows, hsize_t experts, void *dest,
                              struct caem_error *err)
{
    char path[CHECKPOINT_PATH_MAX];
    if (checkpoint_path(path, err, "%s/%s", group_path, name) != 0)
        return -1;
    struct h5io_expect expect = { type_class, type_size, rank, { rows, experts } };
    hid_t dataset = h5io_open_dataset(file, path, &expect, err);
    if (dataset < 0)
        return -1;
    size_t count = (size_t)rows * (rank > 1 ? (size_t)experts : 1);
    int status = h5io_read_dataset(dataset, path, mem_type, count, dest, err);
    H5Dclose(dataset);
    return status;
}

/* Checks what the format promises about the counts: none negative, and the
 * soft usage finite and not negative. */
static int check_usage_values(const struct usage_table *t, const char *where,
                              struct caem_error *err)
{
    size_t rows = (size_t)usage_table_rows(t), cells = rows * (size_t)t->experts;
    for (size_t i = 0; i < cells; i++) {
        if (t->kept[i] < 0 || t->dropped[i] < 0)
            return caem_fail(err, "%s: negative count at layer row %zu, expert %zu", where,
                             i / (size_t)t->experts, i % (size_t)t->experts);
        if (!(t->prob_sum[i] >= 0.0) || isinf(t->prob_sum[i]))
            return caem_fail(err, "%s: prob_sum at layer row %zu, expert %zu is %g, expected "
                             "a finite value >= 0", where, i / (size_t)t->experts,
                             i % (size_t)t->experts, t->prob_sum[i]);
    }
    for (size_t i = 0; i < rows; i++)
        if (t->tokens[i] < 0)
            return caem_fail(err, "%s: negative token count at layer row %zu", where, i);
    return 0;
}

static int read_usage_table(hid_t file, const char *path, const struct model_config *cfg,
                            const char *task, const char *split, struct usage_table *t,
                            struct caem_error *err)
{
    hid_t group = h5io_open_group(file, path, err);
    if (group < 0)
        return -1;
    struct usage_table shape = { 0 };
    int padding = 0;
    char *source = NULL;
    int status = 0;
    if (read_int_attribute(group, path, "experts", 0, CONFIG_MAX_EXPERTS, &shape.experts,
                           err) != 0 ||
        read_int_attribute(group, path, "encoder_layers", 0, INT_MAX, &shape.layers[0],
                           err) != 0 ||
        read_int_attribute(group, path, "decoder_layers", 0, INT_MAX, &shape.layers[1],
                           err) != 0 ||
        read_int_attribute(group, path, "count_padding", 0, 1, &padding, err) != 0 ||
        h5io_read_string(group, path, "decoder_source", &source, err) != 0)
        status = -1;
    H5Gclose(group);
    enum usage_decoder_source decoder_source = USAGE_DECODER_TEACHER_FORCED;
    if (status == 0) {
        if (strcmp(source, "generated") == 0)
            decoder_source = USAGE_DECODER_GENERATED;
        else if (strcmp(source, "teacher_forced") != 0)
            status = caem_fail(err, "attribute 'decoder_source' of %s is '%.100s', expected "
                               "'teacher_forced' or 'generated'", path, source);
    }
    free(source);
    if (status != 0)
        return -1;

    /* The table must be the model's: same layers, experts and blocks. */
    if (usage_table_init(t, cfg, err) != 0)
        return -1;
    if (shape.experts != t->experts || shape.layers[0] != t->layers[0] ||
        shape.layers[1] != t->layers[1])
        return caem_fail(err, "%s has %d + %d MoE layers x %d experts, but the model has "
                         "%d + %d x %d", path, shape.layers[0], shape.layers[1], shape.experts,
                         t->layers[0], t->layers[1], t->experts);
    t->count_padding = padding;
    t->decoder_source = decoder_source;
    hsize_t rows = (hsize_t)usage_table_rows(t), experts = (hsize_t)t->experts;
    status = read_usage_dataset(file, path, "kept", H5T_INTEGER, 8, H5T_NATIVE_INT64, 2, rows,
                                experts, t->kept, err);
    if (status == 0)
        status = read_usage_dataset(file, path, "dropped", H5T_INTEGER, 8, H5T_NATIVE_INT64, 2,
                                    rows, experts, t->dropped, err);
    if (status == 0)
        status = read_usage_dataset(file, path, "prob_sum", H5T_FLOAT, 8, H5T_NATIVE_DOUBLE, 2,
                                    rows, experts, t->prob_sum, err);
    if (status == 0)
        status = read_usage_dataset(file, path, "tokens", H5T_INTEGER, 8, H5T_NATIVE_INT64, 1,
                                    rows, 0, t->tokens, err);
    if (status == 0)
        status = read_usage_dataset(file, path, "blocks", H5T_INTEGER, 4, H5T_NATIVE_INT, 1,
                                    rows, 0, t->blocks, err);
    if (status == 0)
        status = checkpoint_check_usage_shape(t, cfg, task, split, err);
    if (status == 0)
        status = check_usage_values(t, path, err);
    return status;
}

static int add_usage_record(struct checkpoint *out, const char *task, const char *split,
                            struct checkpoint_usage **record, struct caem_error *err)
{
    struct checkpoint_usage *grown =
        realloc(out->usage, sizeof *grown * (size_t)(out->usage_count + 1));
    if (grown == NULL)
        return caem_fail(err, "out of memory for usage records");
    out->usage = grown;
    struct checkpoint_usage *u = &out->usage[out->usage_count];
    memset(u, 0, sizeof *u);
    out->usage_count++;
    u->task = strdup(task);
    u->split = strdup(split);
    if (u->task == NULL || u->split == NULL)
        return caem_fail(err, "out of memory for usage records");
    *record = u;
    return 0;
}

static int read_usage(hid_t file, struct checkpoint *out, struct caem_error *err)
{
    hid_t root = h5io_open_group(file, "/router_usage", err);
    if (root < 0)
        return -1;
    struct h5io_names tasks;
    int status = h5io_list_links(root, "/router_usage", &tasks, err);
    H5Gclose(root);
    for (int i = 0; i < tasks.count && status == 0; i++) {
        char task_path[CHECKPOINT_PATH_MAX];
        if (checkpoint_path(task_path, err, "/router_usage/%s", tasks.names[i]) != 0) {
            status = -1;
            break;
        }
        hid_t task = h5io_open_group(file, task_path, err);
        if (task < 0) {
            status = -1;
            break;
        }
        struct h5io_names splits;
        status = h5io_list_links(task, task_path, &splits, err);
        H5Gclose(task);
        for (int j = 0; j < splits.count && status == 0; j++) {
            char path[CHECKPOINT_PATH_MAX];
            struct checkpoint_usage *u = NULL;
            status = checkpoint_path(path, err, "%s/%s", task_path, splits.names[j]);
            if (status == 0)
                status = add_usage_record(out, tasks.names[i], splits.names[j], &u, err);
            if (status == 0)
                status = read_usage_table(file, path, &out->config, u->task, u->split,
                                          &u->table, err);
        }
        h5io_names_free(&splits);
    }
    h5io_names_free(&tasks);
    return status;
}

/* ---- history ---- */

static int read_history(hid_t file, struct checkpoint_history *h, struct caem_error *err)
{
    hid_t group = h5io_open_group(file, "/history", err);
    if (group < 0)
        return -1;
    struct h5io_names names;
    int status = h5io_list_links(group, "/history", &names, err);
    H5Gclose(group);
    if (status != 0)
        return -1;
    h->names = names.names;
    h->columns = names.count;
    names.names = NULL;
    for (int c = 0; c < h->columns && status == 0; c++) {
        char path[CHECKPOINT_PATH_MAX];
        if (checkpoint_path(path, err, "/history/%s", h->names[c]) != 0) {
            status = -1;
            break;
        }
        hid_t dataset = -1;
        if (c == 0) {
            /* The first column sets the length; it only has to be 1-D float64. */
            dataset = H5Dopen2(file, path, H5P_DEFAULT);
            hid_t space = dataset >= 0 ? H5Dget_space(dataset) : -1;
            hsize_t rows = 0;
            int rank = space >= 0 ? H5Sget_simple_extent_ndims(space) : -1;
            if (rank == 1)
                H5Sget_simple_extent_dims(space, &rows, NULL);
            if (space >= 0)
                H5Sclose(space);
            if (dataset >= 0)
                H5Dclose(dataset);
            if (rank != 1) {
                status = rank < 0 ? h5io_fail(err, "cannot open dataset %s", path)
                                  : caem_fail(err, "dataset %s has %d dimensions, expected 1",
                                              path, rank);
                break;
            }
            if (rows > (hsize_t)LONG_MAX / 8 / (hsize_t)h->columns) {
                status = caem_fail(err, "dataset %s has %llu rows, too many to load", path,
                                   (unsigned long long)rows);
                break;
            }
            h->rows = (long)rows;
            h->values = caem_malloc(sizeof(double) * (size_t)h->rows * (size_t)h->columns,
                                    "the history", err);
            if (h->values == NULL) {
                status = -1;
                break;
            }
        }
        struct h5io_expect expect = { H5T_FLOAT, 8, 1, { (hsize_t)h->rows, 0 } };
        dataset = h5io_open_dataset(file, path, &expect, err);
        if (dataset < 0) {
            status = -1;
            break;
        }
        status = h5io_read_dataset(dataset, path, H5T_NATIVE_DOUBLE, (size_t)h->rows,
                                   h->values + (size_t)c * (size_t)h->rows, err);
        H5Dclose(dataset);
    }
    return status;
}

/* ---- the whole file ---- */

static int read_contents(struct reader *r, struct checkpoint *out, struct caem_error *err)
{
    if (read_root(r->file, out, err) != 0 || read_config(r->file, &out->config, err) != 0)
        return -1;
    if (param_layout_build(&r->layout, &out->config, err) != 0 ||
        collect_layout_names(r, err) != 0)
        return -1;
    if (r->values && model_create(&out->model, &out->config, r->backend, err) != 0)
        return -1;
    if (read_params(r, out->model, err) != 0)
        return -1;
    int found = h5io_exists(r->file, "/optimizer");
    if (found < 0)
        return h5io_fail(err, "cannot look up /optimizer");
    if (found && read_optimizer(r, out, err) != 0)
        return -1;
    found = h5io_exists(r->file, "/train_state");
    if (found < 0)
        return h5io_fail(err, "cannot look up /train_state");
    if (found) {
        if (read_train_state(r->file, &out->train, err) != 0)
            return -1;
        out->has_train_state = 1;
        if (out->model != NULL) {
            out->model->rng.seed = out->train.rng_seed;
            out->model->rng.next = out->train.rng_next;
        }
    }
    found = h5io_exists(r->file, "/router_usage");
    if (found < 0)
        return h5io_fail(err, "cannot look up /router_usage");
    if (found && read_usage(r->file, out, err) != 0)
        return -1;
    found = h5io_exists(r->file, "/history");
    if (found < 0)
        return h5io_fail(err, "cannot look up /history");
    if (found && read_history(r->file, &out->history, err) != 0)
        return -1;
    found = h5io_exists(r->file, "/merge");
    if (found < 0)
        return h5io_fail(err, "cannot look up /merge");
    if (found && checkpoint_read_merge(r->file, &out->config, out, err) != 0)
        return -1;
    return 0;
}

static int load(const char *path, const struct backend *backend, int values,
                struct checkpoint *out, struct caem_error *err)
{
    memset(out, 0, sizeof *out);
    struct h5io_quiet quiet;
    h5io_quiet_begin(&quiet);
    struct reader r = { .values = values, .backend = backend };
    r.file = open_file(path, err);
    int status = -1;
    if (r.file >= 0) {
        status = read_contents(&r, out, err);
        if (H5Fclose(r.file) < 0 && status == 0)
            status = h5io_fail(err, "cannot close the file");
    }
    param_layout_free(&r.layout);
    h5io_names_free(&r.layout_names);
    H5Eclear2(H5E_DEFAULT);
    h5io_quiet_end(&quiet);
    if (status != 0) {
        checkpoint_free(out);
        return caem_fail_prefix(err, "checkpoint %s", path);
    }
    return 0;
}

int checkpoint_load(const char *path, const struct backend *backend, struct checkpoint *out,
                    struct caem_error *err)
{
    if (backend == NULL) {
        memset(out, 0, sizeof *out);
        return caem_fail(err, "checkpoint %s: no backend to load the model on", path);
    }
    return load(path, backend, 1, out, err);
}

int checkpoint_load_summary(const char *path, struct checkpoint *out, struct caem_error *err)
{
    return load(path, NULL, 0, out, err);
}
