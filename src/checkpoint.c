/* Writing checkpoints, and what the writer and reader share. */
#include "checkpoint.h"

#include <errno.h>
#include <stdarg.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <hdf5.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "checkpoint_internal.h"
#include "hdf5_io.h"

#define CONFIG_FIELD(name, is_float) { #name, is_float, offsetof(struct model_config, name) }

const struct checkpoint_config_field checkpoint_config_fields[] = {
    CONFIG_FIELD(vocab_size, 0),
    CONFIG_FIELD(d_model, 0),
    CONFIG_FIELD(d_kv, 0),
    CONFIG_FIELD(d_ff, 0),
    CONFIG_FIELD(num_heads, 0),
    CONFIG_FIELD(encoder_layers, 0),
    CONFIG_FIELD(decoder_layers, 0),
    CONFIG_FIELD(encoder_sparse_step, 0),
    CONFIG_FIELD(decoder_sparse_step, 0),
    CONFIG_FIELD(num_experts, 0),
    CONFIG_FIELD(expert_capacity, 0),
    CONFIG_FIELD(router_jitter_noise, 1),
    CONFIG_FIELD(dropout_rate, 1),
    CONFIG_FIELD(layer_norm_epsilon, 1),
    CONFIG_FIELD(relative_attention_num_buckets, 0),
    CONFIG_FIELD(relative_attention_max_distance, 0),
    CONFIG_FIELD(router_z_loss_coef, 1),
    CONFIG_FIELD(router_aux_loss_coef, 1),
    CONFIG_FIELD(initializer_factor, 1),
    CONFIG_FIELD(tie_word_embeddings, 0),
    CONFIG_FIELD(pad_token_id, 0),
    CONFIG_FIELD(eos_token_id, 0),
    CONFIG_FIELD(decoder_start_token_id, 0),
};

const int checkpoint_config_field_count =
    (int)(sizeof checkpoint_config_fields / sizeof checkpoint_config_fields[0]);

const char *const checkpoint_train_attributes[] = {
    "seed", "step", "epoch", "epoch_batch", "rng_seed", "rng_next", "batch_size",
    "accumulation", "task",
};

const int checkpoint_train_attribute_count =
    (int)(sizeof checkpoint_train_attributes / sizeof checkpoint_train_attributes[0]);

int checkpoint_path(char *out, struct caem_error *err, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(out, CHECKPOINT_PATH_MAX, fmt, ap);
    va_end(ap);
    if (n < 0 || n >= CHECKPOINT_PATH_MAX)
        return caem_fail(err, "object path '%.60s...' is longer than %d bytes", out,
                         CHECKPOINT_PATH_MAX - 1);
    return 0;
}

int checkpoint_check_name(const char *kind, const char *name, struct caem_error *err)
{
    if (name == NULL || name[0] == '\0')
        return caem_fail(err, "%s name is empty", kind);
    if (strlen(name) > CHECKPOINT_NAME_MAX)
        return caem_fail(err, "%s name '%.40s...' is longer than %d bytes", kind, name,
                         CHECKPOINT_NAME_MAX);
    if (strchr(name, '/') != NULL || strcmp(name, ".") == 0 || strcmp(name, "..") == 0)
        return caem_fail(err, "%s name '%s' is invalid: it must not contain '/' or be "
                         "\".\" or \"..\"", kind, name);
    return 0;
}

const char *checkpoint_decoder_source_name(int source)
{
    return source == USAGE_DECODER_GENERATED ? "generated" : "teacher_forced";
}

/* ---- checks before writing ---- */

static int check_unique(const char *kind, char *const *names, int count,
                        struct caem_error *err)
{
    for (int i = 0; i < count; i++)
        for (int j = 0; j < i; j++)
            if (strcmp(names[i], names[j]) == 0)
                return caem_fail(err, "%s '%s' appears twice", kind, names[i]);
    return 0;
}

static int check_attributes(const struct checkpoint *ck, struct caem_error *err)
{
    static const char *const reserved[] = { "format", "format_version", "created" };
    for (int i = 0; i < ck->attr_count; i++) {
        const char *name = ck->attr_names[i];
        if (name == NULL || name[0] == '\0' || ck->attr_values[i] == NULL)
            return caem_fail(err, "root attribute %d has an empty name or no value", i);
        for (size_t r = 0; r < sizeof reserved / sizeof reserved[0]; r++)
            if (strcmp(name, reserved[r]) == 0)
                return caem_fail(err, "root attribute '%s' is reserved: the writer sets it",
                                 name);
    }
    return check_unique("root attribute", ck->attr_names, ck->attr_count, err);
}

static int check_train_state(const struct checkpoint_train_state *t, struct caem_error *err)
{
    if (memchr(t->task, '\0', sizeof t->task) == NULL)
        return caem_fail(err, "train state task name is not terminated within %d bytes",
                         CHECKPOINT_TASK_MAX);
    for (int i = 0; i < t->extra_count; i++) {
        const char *name = t->extra_names[i];
        if (name == NULL || name[0] == '\0')
            return caem_fail(err, "train state extra value %d has an empty name", i);
        for (int k = 0; k < checkpoint_train_attribute_count; k++)
            if (strcmp(name, checkpoint_train_attributes[k]) == 0)
                return caem_fail(err, "train state extra value '%s' has the name of a fixed "
                                 "field", name);
    }
    return check_unique("train state extra value", t->extra_names, t->extra_count, err);
}

int checkpoint_check_usage_shape(const struct usage_table *t, const struct model_config *cfg,
                                 const char *task, const char *split, struct caem_error *err)
{
    int layers[2] = { config_moe_layer_count(cfg, 0), config_moe_layer_count(cfg, 1) };
    if (t->experts != cfg->num_experts || t->layers[0] != layers[0] ||
        t->layers[1] != layers[1])
        return caem_fail(err, "usage %s/%s has %d + %d MoE layers x %d experts, but the "
                         "model has %d + %d x %d", task, split, t->layers[0], t->layers[1],
                         t->experts, layers[0], layers[1], cfg->num_experts);
    int row = 0;
    for (int d = 0; d < 2; d++) {
        int blocks = d ? cfg->decoder_layers : cfg->encoder_layers;
        for (int i = 0; i < blocks; i++) {
            if (!config_is_moe_layer(cfg, d, i))
                continue;
            if (t->blocks[row] != i)
                return caem_fail(err, "usage %s/%s row %d is block %d, but the model's MoE "
                                 "layer there is %s block %d", task, split, row, t->blocks[row],
                                 d ? "decoder" : "encoder", i);
            row++;
        }
    }
    return 0;
}

static int check_usage(const struct checkpoint *ck, struct caem_error *err)
{
    for (int i = 0; i < ck->usage_count; i++) {
        const struct checkpoint_usage *u = &ck->usage[i];
        if (checkpoint_check_name("usage task", u->task, err) != 0 ||
            checkpoint_check_name("usage split", u->split, err) != 0 ||
            checkpoint_check_usage_shape(&u->table, &ck->model->config, u->task, u->split,
                                         err) != 0)
            return -1;
        for (int j = 0; j < i; j++)
            if (strcmp(ck->usage[j].task, u->task) == 0 &&
                strcmp(ck->usage[j].split, u->split) == 0)
                return caem_fail(err, "usage %s/%s appears twice", u->task, u->split);
    }
    return 0;
}

static int check_history(const struct checkpoint_history *h, struct caem_error *err)
{
    if (h->columns < 0 || h->rows < 0)
        return caem_fail(err, "history has %d columns and %ld rows, expected counts >= 0",
                         h->columns, h->rows);
    for (int c = 0; c < h->columns; c++)
        if (checkpoint_check_name("history column", h->names[c], err) != 0)
            return -1;
    if (h->columns > 0 && h->rows > 0 && h->values == NULL)
        return caem_fail(err, "history has %d x %ld values but no value array", h->columns,
                         h->rows);
    return check_unique("history column", h->names, h->columns, err);
}

static int check_for_save(const struct checkpoint *ck, struct caem_error *err)
{
    if (ck->model == NULL)
        return caem_fail(err, "no model to save");
    if (ck->optimizer != NULL && ck->optimizer->count != ck->model->layout.total)
        return caem_fail(err, "the optimizer has moments for %zu values, the model %zu",
                         ck->optimizer->count, ck->model->layout.total);
    if (check_attributes(ck, err) != 0 || check_usage(ck, err) != 0 ||
        check_history(&ck->history, err) != 0)
        return -1;
    if (ck->has_train_state && check_train_state(&ck->train, err) != 0)
        return -1;
    return 0;
}

/* ---- writing ---- */

static int write_root_attributes(hid_t file, const struct checkpoint *ck,
                                 struct caem_error *err)
{
    char created[32];
    time_t now = time(NULL);
    struct tm utc;
    gmtime_r(&now, &utc);
    strftime(created, sizeof created, "%Y-%m-%dT%H:%M:%SZ", &utc);
    int32_t version = CHECKPOINT_FORMAT_VERSION;
    if (h5io_write_string(file, "/", "format", CHECKPOINT_FORMAT, err) != 0 ||
        h5io_write_attribute(file, "/", "format_version", H5T_STD_I32LE, H5T_NATIVE_INT32,
                             &version, err) != 0 ||
        h5io_write_string(file, "/", "created", created, err) != 0)
        return -1;
    for (int i = 0; i < ck->attr_count; i++)
        if (h5io_write_string(file, "/", ck->attr_names[i], ck->attr_values[i], err) != 0)
            return -1;
    return 0;
}

static int write_config(hid_t file, const struct model_config *cfg, struct caem_error *err)
{
    hid_t group = h5io_create_group(file, "/", "config", err);
    if (group < 0)
        return -1;
    int status = 0;
    for (int i = 0; i < checkpoint_config_field_count && status == 0; i++) {
        const struct checkpoint_config_field *f = &checkpoint_config_fields[i];
        const void *value = (const char *)cfg + f->offset;
        status = f->is_float
                     ? h5io_write_attribute(group, "/config", f->name, H5T_IEEE_F32LE,
                                            H5T_NATIVE_FLOAT, value, err)
                     : h5io_write_attribute(group, "/config", f->name, H5T_STD_I32LE,
                                            H5T_NATIVE_INT, value, err);
    }
    if (status == 0)
        status = h5io_write_string(group, "/config", "routing",
                                   cfg->routing == ROUTING_CLEAN ? "clean" : "parity", err);
    H5Gclose(group);
    return status;
}

/* Writes one float32 dataset per tensor of the layout under `prefix`, from
 * `values` (backend memory laid out as the parameters). */
static int write_tensors(hid_t file, const char *prefix, const struct model *m,
                         const float *values, struct caem_error *err)
{
    size_t largest = 1;
    for (int i = 0; i < m->layout.count; i++)
        if (m->layout.tensors[i].count > largest)
            largest = m->layout.tensors[i].count;
    float *host = caem_malloc(sizeof(float) * largest, "a tensor being saved", err);
    if (host == NULL)
        return -1;
    int status = 0;
    for (int i = 0; i < m->layout.count && status == 0; i++) {
        const struct param_info *p = &m->layout.tensors[i];
        char path[CHECKPOINT_PATH_MAX];
        hsize_t dims[2] = { (hsize_t)p->shape[0], (hsize_t)p->shape[1] };
        m->backend->download(host, values + p->offset, sizeof(float) * p->count);
        status = checkpoint_path(path, err, "%s/%s", prefix, p->name);
        if (status == 0)
            status = h5io_write_dataset(file, path, H5T_IEEE_F32LE, H5T_NATIVE_FLOAT, p->ndim,
                                        dims, host, err);
    }
    free(host);
    return status;
}

static int write_optimizer(hid_t file, const struct adamw *opt, const struct model *m,
                           struct caem_error *err)
{
    hid_t group = h5io_create_group(file, "/", "optimizer", err);
    if (group < 0)
        return -1;
    const char *where = "/optimizer";
    const struct adamw_config *c = &opt->config;
    int64_t step = opt->step;
    int status = 0;
    if (h5io_write_attribute(group, where, "lr", H5T_IEEE_F32LE, H5T_NATIVE_FLOAT, &c->lr,
                             err) != 0 ||
        h5io_write_attribute(group, where, "beta1", H5T_IEEE_F32LE, H5T_NATIVE_FLOAT,
                             &c->beta1, err) != 0 ||
        h5io_write_attribute(group, where, "beta2", H5T_IEEE_F32LE, H5T_NATIVE_FLOAT,
                             &c->beta2, err) != 0 ||
        h5io_write_attribute(group, where, "eps", H5T_IEEE_F32LE, H5T_NATIVE_FLOAT, &c->eps,
                             err) != 0 ||
        h5io_write_attribute(group, where, "weight_decay", H5T_IEEE_F32LE, H5T_NATIVE_FLOAT,
                             &c->weight_decay, err) != 0 ||
        h5io_write_attribute(group, where, "step", H5T_STD_I64LE, H5T_NATIVE_INT64, &step,
                             err) != 0)
        status = -1;
    H5Gclose(group);
    if (status != 0)
        return -1;
    if (write_tensors(file, "/optimizer/m", m, opt->m, err) != 0 ||
        write_tensors(file, "/optimizer/v", m, opt->v, err) != 0)
        return -1;

    /* tensor_steps is long in memory and int64 in the file. */
    hsize_t count = (hsize_t)m->layout.count;
    int64_t *steps = caem_malloc(sizeof *steps * (count > 0 ? count : 1), "tensor steps", err);
    if (steps == NULL)
        return -1;
    for (hsize_t i = 0; i < count; i++)
        steps[i] = opt->tensor_steps[i];
    status = h5io_write_dataset(file, "/optimizer/tensor_steps", H5T_STD_I64LE,
                                H5T_NATIVE_INT64, 1, &count, steps, err);
    free(steps);
    return status;
}

static int write_train_state(hid_t file, const struct checkpoint_train_state *t,
                             struct caem_error *err)
{
    hid_t group = h5io_create_group(file, "/", "train_state", err);
    if (group < 0)
        return -1;
    const char *where = "/train_state";
    int64_t step = t->step, epoch_batch = t->epoch_batch;
    int32_t batch_size = t->batch_size, accumulation = t->accumulation;
    int status = 0;
    if (h5io_write_attribute(group, where, "seed", H5T_STD_U64LE, H5T_NATIVE_UINT64, &t->seed,
                             err) != 0 ||
        h5io_write_attribute(group, where, "step", H5T_STD_I64LE, H5T_NATIVE_INT64, &step,
                             err) != 0 ||
        h5io_write_attribute(group, where, "epoch", H5T_STD_U32LE, H5T_NATIVE_UINT32, &t->epoch,
                             err) != 0 ||
        h5io_write_attribute(group, where, "epoch_batch", H5T_STD_I64LE, H5T_NATIVE_INT64,
                             &epoch_batch, err) != 0 ||
        h5io_write_attribute(group, where, "rng_seed", H5T_STD_U64LE, H5T_NATIVE_UINT64,
                             &t->rng_seed, err) != 0 ||
        h5io_write_attribute(group, where, "rng_next", H5T_STD_U64LE, H5T_NATIVE_UINT64,
                             &t->rng_next, err) != 0 ||
        h5io_write_attribute(group, where, "batch_size", H5T_STD_I32LE, H5T_NATIVE_INT32,
                             &batch_size, err) != 0 ||
        h5io_write_attribute(group, where, "accumulation", H5T_STD_I32LE, H5T_NATIVE_INT32,
                             &accumulation, err) != 0 ||
        h5io_write_string(group, where, "task", t->task, err) != 0)
        status = -1;
    for (int i = 0; i < t->extra_count && status == 0; i++)
        status = h5io_write_attribute(group, where, t->extra_names[i], H5T_STD_I64LE,
                                      H5T_NATIVE_INT64, &t->extra_values[i], err);
    H5Gclose(group);
    return status;
}

static int write_usage_table(hid_t file, const char *prefix, const struct usage_table *t,
                             struct caem_error *err)
{
    hid_t group = H5Gopen2(file, prefix, H5P_DEFAULT);
    if (group < 0)
        return h5io_fail(err, "cannot open group %s", prefix);
    int32_t encoder = t->layers[0], decoder = t->layers[1], experts = t->experts;
    int32_t padding = t->count_padding != 0;
    int status = 0;
    if (h5io_write_attribute(group, prefix, "encoder_layers", H5T_STD_I32LE, H5T_NATIVE_INT32,
                             &encoder, err) != 0 ||
        h5io_write_attribute(group, prefix, "decoder_layers", H5T_STD_I32LE, H5T_NATIVE_INT32,
                             &decoder, err) != 0 ||
        h5io_write_attribute(group, prefix, "experts", H5T_STD_I32LE, H5T_NATIVE_INT32,
                             &experts, err) != 0 ||
        h5io_write_attribute(group, prefix, "count_padding", H5T_STD_I32LE, H5T_NATIVE_INT32,
                             &padding, err) != 0 ||
        h5io_write_string(group, prefix, "decoder_source",
                          checkpoint_decoder_source_name((int)t->decoder_source), err) != 0)
        status = -1;
    H5Gclose(group);
    if (status != 0)
        return -1;

    hsize_t rows = (hsize_t)usage_table_rows(t);
    hsize_t cells[2] = { rows, (hsize_t)t->experts };
    int32_t *blocks = caem_malloc(sizeof *blocks * (rows > 0 ? rows : 1), "usage blocks", err);
    if (blocks == NULL)
        return -1;
    for (hsize_t i = 0; i < rows; i++)
        blocks[i] = t->blocks[i];
    const struct {
        const char *name;
        hid_t file_type, mem_type;
        int rank;
        const void *data;
    } datasets[] = {
        { "kept", H5T_STD_I64LE, H5T_NATIVE_INT64, 2, t->kept },
        { "dropped", H5T_STD_I64LE, H5T_NATIVE_INT64, 2, t->dropped },
        { "prob_sum", H5T_IEEE_F64LE, H5T_NATIVE_DOUBLE, 2, t->prob_sum },
        { "tokens", H5T_STD_I64LE, H5T_NATIVE_INT64, 1, t->tokens },
        { "blocks", H5T_STD_I32LE, H5T_NATIVE_INT32, 1, blocks },
    };
    for (size_t i = 0; i < sizeof datasets / sizeof datasets[0] && status == 0; i++) {
        char path[CHECKPOINT_PATH_MAX];
        status = checkpoint_path(path, err, "%s/%s", prefix, datasets[i].name);
        if (status == 0)
            status = h5io_write_dataset(file, path, datasets[i].file_type, datasets[i].mem_type,
                                        datasets[i].rank, cells, datasets[i].data, err);
    }
    free(blocks);
    return status;
}

/* Creates /router_usage/<task>/<split> for each record, the task groups in
 * the order of their first record. */
static int write_usage(hid_t file, const struct checkpoint *ck, struct caem_error *err)
{
    hid_t root = h5io_create_group(file, "/", "router_usage", err);
    if (root < 0)
        return -1;
    int status = 0;
    for (int i = 0; i < ck->usage_count && status == 0; i++) {
        const struct checkpoint_usage *u = &ck->usage[i];
        char task_path[CHECKPOINT_PATH_MAX], path[CHECKPOINT_PATH_MAX];
        if (checkpoint_path(task_path, err, "/router_usage/%s", u->task) != 0 ||
            checkpoint_path(path, err, "%s/%s", task_path, u->split) != 0) {
            status = -1;
            break;
        }
        int exists = h5io_exists(file, task_path);
        hid_t task = exists > 0 ? H5Gopen2(file, task_path, H5P_DEFAULT)
                                : h5io_create_group(root, "/router_usage", u->task, err);
        if (task < 0) {
            status = exists > 0 ? h5io_fail(err, "cannot open group %s", task_path) : -1;
            break;
        }
        hid_t split = h5io_create_group(task, task_path, u->split, err);
        H5Gclose(task);
        if (split < 0) {
            status = -1;
            break;
        }
        H5Gclose(split);
        status = write_usage_table(file, path, &u->table, err);
    }
    H5Gclose(root);
    return status;
}

static int write_history(hid_t file, const struct checkpoint_history *h,
                         struct caem_error *err)
{
    hid_t group = h5io_create_group(file, "/", "history", err);
    if (group < 0)
        return -1;
    H5Gclose(group);
    hsize_t rows = (hsize_t)h->rows;
    for (int c = 0; c < h->columns; c++) {
        char path[CHECKPOINT_PATH_MAX];
        const double *column = rows > 0 ? h->values + (size_t)c * rows : NULL;
        if (checkpoint_path(path, err, "/history/%s", h->names[c]) != 0 ||
            h5io_write_dataset(file, path, H5T_IEEE_F64LE, H5T_NATIVE_DOUBLE, 1, &rows, column,
                               err) != 0)
            return -1;
    }
    return 0;
}

static int write_contents(hid_t file, const struct checkpoint *ck, struct caem_error *err)
{
    if (write_root_attributes(file, ck, err) != 0 ||
        write_config(file, &ck->model->config, err) != 0)
        return -1;
    hid_t params = h5io_create_group(file, "/", "params", err);
    if (params < 0)
        return -1;
    H5Gclose(params);
    if (write_tensors(file, "/params", ck->model, ck->model->params, err) != 0)
        return -1;
    if (ck->optimizer != NULL && write_optimizer(file, ck->optimizer, ck->model, err) != 0)
        return -1;
    if (ck->has_train_state && write_train_state(file, &ck->train, err) != 0)
        return -1;
    if (ck->usage_count > 0 && write_usage(file, ck, err) != 0)
        return -1;
    if (ck->history.columns > 0 && write_history(file, &ck->history, err) != 0)
        return -1;
    if (ck->has_merge && checkpoint_write_merge(file, ck, err) != 0)
        return -1;
    return 0;
}

/* Creates the file with creation order tracked for the root group's links
 * and attributes, and with the HDF5 1.10 file format, whose metadata carries
 * checksums, so that a damaged file fails to load instead of loading wrong
 * values. */
static hid_t create_file(const char *path, struct caem_error *err)
{
    hid_t fcpl = H5Pcreate(H5P_FILE_CREATE);
    hid_t fapl = H5Pcreate(H5P_FILE_ACCESS);
    unsigned order = H5P_CRT_ORDER_TRACKED | H5P_CRT_ORDER_INDEXED;
    hid_t file = -1;
    if (fcpl >= 0 && fapl >= 0 && H5Pset_link_creation_order(fcpl, order) >= 0 &&
        H5Pset_attr_creation_order(fcpl, order) >= 0 &&
        H5Pset_libver_bounds(fapl, H5F_LIBVER_V110, H5F_LIBVER_V110) >= 0 &&
        H5Pset_fclose_degree(fapl, H5F_CLOSE_STRONG) >= 0)
        file = H5Fcreate(path, H5F_ACC_TRUNC, fcpl, fapl);
    if (fcpl >= 0)
        H5Pclose(fcpl);
    if (fapl >= 0)
        H5Pclose(fapl);
    if (file < 0)
        return h5io_fail(err, "cannot create %s", path);
    return file;
}

static int sync_path(const char *path, int directory, struct caem_error *err)
{
    int fd = open(path, O_RDONLY | (directory ? O_DIRECTORY : 0));
    if (fd < 0)
        return caem_fail(err, "cannot open %s to flush it: %s", path, strerror(errno));
    int status = fsync(fd);
    int saved = errno;
    close(fd);
    if (status != 0)
        return caem_fail(err, "cannot flush %s to disk: %s", path, strerror(saved));
    return 0;
}

static void directory_of(const char *path, char *out, size_t size)
{
    const char *slash = strrchr(path, '/');
    if (slash == NULL)
        snprintf(out, size, ".");
    else if (slash == path)
        snprintf(out, size, "/");
    else
        snprintf(out, size, "%.*s", (int)(slash - path), path);
}

/* Writes the file at `temp` and moves it to `path`. */
static int save_to(const char *path, const char *temp, const struct checkpoint *ck,
                   struct caem_error *err)
{
    /* Creating the file first gives the system's reason when the directory
     * is missing or not writable, which HDF5's message buries. */
    int fd = open(temp, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (fd < 0)
        return caem_fail(err, "cannot create %s: %s", temp, strerror(errno));
    close(fd);
    hid_t file = create_file(temp, err);
    if (file < 0)
        return -1;
    int status = write_contents(file, ck, err);
    if (H5Fclose(file) < 0 && status == 0)
        status = h5io_fail(err, "cannot close %s", temp);
    if (status != 0)
        return -1;
    if (sync_path(temp, 0, err) != 0)
        return -1;
    /* a replaced checkpoint keeps its permissions */
    struct stat existing;
    if (stat(path, &existing) == 0 && chmod(temp, existing.st_mode & 07777) != 0)
        return caem_fail(err, "cannot set the permissions of %s: %s", temp, strerror(errno));
    if (rename(temp, path) != 0)
        return caem_fail(err, "cannot rename %s to %s: %s", temp, path, strerror(errno));
    char directory[4096];
    directory_of(path, directory, sizeof directory);
    return sync_path(directory, 1, err);
}

int checkpoint_check_target(const char *path, struct caem_error *err)
{
    if (path[0] == '\0')
        return caem_fail(err, "the checkpoint path is empty");
    struct stat st;
    if (stat(path, &st) == 0) {
        if (S_ISDIR(st.st_mode))
            return caem_fail(err, "checkpoint path %s is a directory", path);
        struct checkpoint existing;
        if (checkpoint_load_summary(path, &existing, err) != 0)
            return caem_fail(err, "%s exists and is not a readable checkpoint, so it is not "
                             "replaced; remove it or choose another path", path);
        checkpoint_free(&existing);
    }
    char directory[4096];
    snprintf(directory, sizeof directory, "%s", path);
    char *slash = strrchr(directory, '/');
    if (slash == NULL)
        snprintf(directory, sizeof directory, ".");
    else if (slash == directory)
        directory[1] = '\0';
    else
        *slash = '\0';
    if (stat(directory, &st) != 0 || !S_ISDIR(st.st_mode))
        return caem_fail(err, "directory %s of checkpoint %s does not exist", directory, path);
    if (access(directory, W_OK) != 0)
        return caem_fail(err, "directory %s of checkpoint %s is not writable", directory, path);
    return 0;
}

int checkpoint_save(const char *path, const struct checkpoint *ck, struct caem_error *err)
{
    if (check_for_save(ck, err) != 0)
        return caem_fail_prefix(err, "cannot save checkpoint %s", path);
    char temp[4096];
    int n = snprintf(temp, sizeof temp, "%s.tmp-%ld", path, (long)getpid());
    if (n < 0 || (size_t)n >= sizeof temp)
        return caem_fail(err, "cannot save checkpoint: path '%s' is too long", path);
    struct h5io_quiet quiet;
    h5io_quiet_begin(&quiet);
    int status = save_to(path, temp, ck, err);
    h5io_quiet_end(&quiet);
    if (status != 0) {
        unlink(temp);
        return caem_fail_prefix(err, "cannot save checkpoint %s", path);
    }
    return 0;
}

/* ---- freeing and hashing ---- */

static void free_strings(char **strings, int count)
{
    if (strings == NULL)
        return;
    for (int i = 0; i < count; i++)
        free(strings[i]);
    free(strings);
}

void checkpoint_free(struct checkpoint *ck)
{
    adamw_free(ck->optimizer);
    model_free(ck->model);
    free_strings(ck->train.extra_names, ck->train.extra_count);
    free(ck->train.extra_values);
    for (int i = 0; i < ck->usage_count; i++) {
        free(ck->usage[i].task);
        free(ck->usage[i].split);
        usage_table_free(&ck->usage[i].table);
    }
    free(ck->usage);
    free_strings(ck->history.names, ck->history.columns);
    free(ck->history.values);
    free_strings(ck->attr_names, ck->attr_count);
    free_strings(ck->attr_values, ck->attr_count);
    checkpoint_free_merge(ck);
    memset(ck, 0, sizeof *ck);
}

#define FNV_OFFSET_BASIS 0xcbf29ce484222325ULL
#define FNV_PRIME 0x100000001b3ULL

void checkpoint_params_hash(const struct model *m, char out[17])
{
    uint64_t hash = FNV_OFFSET_BASIS;
    float chunk[4096];
    for (int i = 0; i < m->layout.count; i++) {
        const struct param_info *p = &m->layout.tensors[i];
        for (size_t done = 0; done < p->count;) {
            size_t n = p->count - done < 4096 ? p->count - done : 4096;
            m->backend->download(chunk, m->params + p->offset + done, sizeof(float) * n);
            for (size_t j = 0; j < n; j++) {
                uint32_t bits;
                memcpy(&bits, &chunk[j], sizeof bits);
                for (int b = 0; b < 4; b++) {
                    hash ^= (bits >> (8 * b)) & 0xffu;
                    hash *= FNV_PRIME;
                }
            }
            done += n;
        }
    }
    snprintf(out, 17, "%016llx", (unsigned long long)hash);
}
