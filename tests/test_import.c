/* Tests for src/hf_import.c. tools/make_hf_dir_fixtures.py wrote two Hugging
 * Face Switch Transformers directories with save_pretrained of transformers
 * 4.46.3: tests/fixtures/hf_single with one float32 file, and
 * tests/fixtures/hf_sharded with F32, F16 and BF16 tensors in three shards.
 * Both are imported into checkpoints, whose logits must match the
 * reference's. Then come the rejections, on damaged copies in a fresh
 * directory under /tmp.
 *
 * Tolerance: 1e-4 relative error of the logits, max |ours - reference|
 * divided by max |reference|, as tests/test_parity.c explains for float32
 * computations that sum in a different order. */
#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "checkpoint.h"
#include "hf_import.h"
#include "model.h"
#include "safetensors.h"
#include "test.h"

#define TOLERANCE 1e-4

static char tmp_dir[] = "/tmp/caem_import_XXXXXX";
static double worst_error;

struct path {
    char text[1024];
};

static struct path fixture_path(const char *name)
{
    struct path p;
    const char *root = getenv("CAEM_ROOT");
    snprintf(p.text, sizeof p.text, "%s/tests/fixtures/%s", root != NULL ? root : ".", name);
    return p;
}

static struct path tmp_path(const char *name)
{
    struct path p;
    snprintf(p.text, sizeof p.text, "%s/%s", tmp_dir, name);
    return p;
}

/* ---- copies of the fixture directories ---- */

static void copy_file(const char *from, const char *to)
{
    FILE *in = fopen(from, "rb"), *out = fopen(to, "wb");
    CHECK_MSG(in != NULL, "cannot open %s: %s", from, strerror(errno));
    CHECK_MSG(out != NULL, "cannot create %s: %s", to, strerror(errno));
    char buffer[65536];
    size_t n;
    while (in != NULL && out != NULL && (n = fread(buffer, 1, sizeof buffer, in)) > 0)
        CHECK(fwrite(buffer, 1, n, out) == n);
    if (in != NULL)
        fclose(in);
    if (out != NULL)
        fclose(out);
}

/* Copies every file of fixture directory `fixture` except `skip` (or none)
 * into a fresh directory `name` under the test directory. */
static struct path copy_fixture(const char *fixture, const char *name, const char *skip)
{
    struct path from = fixture_path(fixture), to = tmp_path(name);
    CHECK_MSG(mkdir(to.text, 0755) == 0, "mkdir %s: %s", to.text, strerror(errno));
    DIR *dir = opendir(from.text);
    CHECK_MSG(dir != NULL, "cannot list %s", from.text);
    struct dirent *entry;
    while (dir != NULL && (entry = readdir(dir)) != NULL) {
        if (entry->d_name[0] == '.' || (skip != NULL && strcmp(entry->d_name, skip) == 0))
            continue;
        char source[2048], target[2048];
        snprintf(source, sizeof source, "%s/%s", from.text, entry->d_name);
        snprintf(target, sizeof target, "%s/%s", to.text, entry->d_name);
        copy_file(source, target);
    }
    if (dir != NULL)
        closedir(dir);
    return to;
}

/* A change to one tensor when a safetensors file is rewritten. */
struct tensor_edit {
    const char *name;        /* the tensor to change, or to add when absent */
    int remove;              /* 1: leave it out */
    enum st_dtype dtype;     /* the new tensor's dtype, shape and data otherwise */
    int ndim;
    int64_t shape[2];
    const void *data;
};

/* Rewrites `file` in directory `dir` with one tensor changed, added or
 * removed, keeping the other tensors and their bytes. */
static void rewrite_tensors(const char *dir, const char *file, const struct tensor_edit *edit)
{
    char path[2048];
    snprintf(path, sizeof path, "%s/%s", dir, file);
    struct safetensors *st = NULL;
    struct caem_error err;
    if (safetensors_open(&st, path, &err) != 0) {
        CHECK_MSG(0, "%s", err.message);
        return;
    }
    int count = safetensors_count(st), n = 0, replaced = 0;
    struct st_write_tensor *tensors = calloc((size_t)count + 1, sizeof *tensors);
    int64_t (*shapes)[ST_MAX_DIMS] = calloc((size_t)count + 1, sizeof *shapes);
    for (int i = 0; i < count; i++) {
        const struct st_tensor *t = safetensors_at(st, i);
        if (strcmp(t->name, edit->name) == 0) {
            replaced = 1;
            if (edit->remove)
                continue;
            struct st_write_tensor w = { edit->name, edit->dtype, edit->ndim, edit->shape,
                                         edit->data };
            tensors[n++] = w;
            continue;
        }
        memcpy(shapes[n], t->shape, sizeof shapes[n]);
        struct st_write_tensor w = { t->name, t->dtype, t->ndim, shapes[n], t->data };
        tensors[n++] = w;
    }
    if (!replaced && !edit->remove) {
        struct st_write_tensor w = { edit->name, edit->dtype, edit->ndim, edit->shape,
                                     edit->data };
        tensors[n++] = w;
    }
    CHECK_MSG(replaced || !edit->remove, "%s has no tensor %s to remove", path, edit->name);
    CHECK_MSG(safetensors_write(path, tensors, n, NULL, &err) == 0, "%s", err.message);
    free(tensors);
    free(shapes);
    safetensors_close(st);
}

static void write_text(const char *path, const char *text)
{
    FILE *f = fopen(path, "w");
    CHECK_MSG(f != NULL, "cannot create %s", path);
    if (f == NULL)
        return;
    fputs(text, f);
    fclose(f);
}

/* Checks that importing `dir` fails with a message containing `fragment`. */
static void expect_import_error(const char *dir, const char *fragment)
{
    struct model *m = NULL;
    struct hf_import_report report;
    struct caem_error err = { "" };
    int status = hf_import_model(dir, backend_cpu(), &m, &report, &err);
    CHECK_MSG(status != 0, "importing %s succeeded, expected an error with '%s'", dir,
              fragment);
    CHECK(m == NULL);
    if (status != 0)
        CHECK_MSG(strstr(err.message, fragment) != NULL, "message '%s' lacks '%s'",
                  err.message, fragment);
    model_free(m);
}

/* ---- logits ---- */

struct reference {
    struct safetensors *st;
    int batch_size, encoder_length, decoder_length;
    int32_t *input_ids, *attention_mask, *decoder_input_ids;
};

static int32_t *read_ids(const struct safetensors *st, const char *name, int *rows, int *cols)
{
    const struct st_tensor *t = safetensors_find(st, name);
    CHECK_MSG(t != NULL && t->ndim == 2, "hf_logits.safetensors has no 2-D %s", name);
    if (t == NULL || t->ndim != 2)
        return NULL;
    *rows = (int)t->shape[0];
    *cols = (int)t->shape[1];
    int64_t *wide = malloc(sizeof *wide * t->count);
    int32_t *ids = malloc(sizeof *ids * t->count);
    struct caem_error err;
    CHECK_MSG(safetensors_read_i64(st, name, wide, t->count, &err) == 0, "%s", err.message);
    for (size_t i = 0; i < t->count; i++)
        ids[i] = (int32_t)wide[i];
    free(wide);
    return ids;
}

static int reference_open(struct reference *r)
{
    memset(r, 0, sizeof *r);
    struct path p = fixture_path("hf_logits.safetensors");
    struct caem_error err;
    if (safetensors_open(&r->st, p.text, &err) != 0) {
        CHECK_MSG(0, "%s", err.message);
        return -1;
    }
    int rows, cols;
    r->input_ids = read_ids(r->st, "input.input_ids", &r->batch_size, &r->encoder_length);
    r->attention_mask = read_ids(r->st, "input.attention_mask", &rows, &cols);
    r->decoder_input_ids = read_ids(r->st, "input.decoder_input_ids", &rows,
                                    &r->decoder_length);
    return r->input_ids && r->attention_mask && r->decoder_input_ids ? 0 : -1;
}

static void reference_close(struct reference *r)
{
    free(r->input_ids);
    free(r->attention_mask);
    free(r->decoder_input_ids);
    safetensors_close(r->st);
}

/* max |a - ref| / max |ref| */
static double relative_error(const float *a, const float *ref, size_t n)
{
    double max_diff = 0.0, max_ref = 0.0;
    for (size_t i = 0; i < n; i++) {
        double d = fabs((double)a[i] - ref[i]);
        if (!(d <= max_diff))
            max_diff = isnan(d) ? INFINITY : d;
        if (fabs(ref[i]) > max_ref)
            max_ref = fabs(ref[i]);
    }
    return max_ref > 0.0 ? max_diff / max_ref : max_diff;
}

/* Runs the model in eval mode on the reference batch and compares its
 * logits with the reference's. */
static void check_logits(struct model *m, const char *label)
{
    struct reference r;
    if (reference_open(&r) != 0) {
        reference_close(&r);
        return;
    }
    struct batch b = { r.batch_size, r.encoder_length, r.decoder_length, r.input_ids,
                       r.attention_mask, r.decoder_input_ids, NULL };
    struct model_losses losses;
    struct caem_error err;
    m->training = 0;
    if (model_forward(m, &b, &losses, &err) != 0) {
        CHECK_MSG(0, "%s: forward: %s", label, err.message);
        reference_close(&r);
        return;
    }
    size_t count = (size_t)r.batch_size * (size_t)r.decoder_length *
                   (size_t)m->config.vocab_size;
    const struct st_tensor *t = safetensors_find(r.st, "output.logits");
    CHECK_MSG(t != NULL && t->count == count, "%s: reference logits missing or of another size",
              label);
    if (t != NULL && t->count == count) {
        float *reference = malloc(sizeof(float) * count);
        CHECK(safetensors_read_f32(r.st, "output.logits", reference, count, &err) == 0);
        double error = relative_error(model_logits(m), reference, count);
        CHECK_MSG(error <= TOLERANCE, "%s: logits relative error %.3g", label, error);
        printf("  %s: logits relative error %.3g\n", label, error);
        if (error > worst_error)
            worst_error = error;
        free(reference);
    }
    reference_close(&r);
}

/* Imports a fixture directory into a checkpoint, loads it and compares its
 * logits; returns the loaded checkpoint for more checks. */
static int import_and_load(const char *fixture, struct checkpoint *out,
                           struct hf_import_report *report)
{
    struct path dir = fixture_path(fixture);
    char file[64], base[17];
    snprintf(file, sizeof file, "%s.h5", fixture);
    struct path out_path = tmp_path(file);
    struct caem_error err;
    if (hf_import_checkpoint(dir.text, out_path.text, base, report, &err) != 0) {
        CHECK_MSG(0, "import: %s", err.message);
        return -1;
    }
    if (checkpoint_load(out_path.text, backend_cpu(), out, &err) != 0) {
        CHECK_MSG(0, "load: %s", err.message);
        return -1;
    }
    char hash[17];
    checkpoint_params_hash(out->model, hash);
    CHECK_MSG(strcmp(hash, base) == 0, "hash %s of the loaded model, %s at import", hash, base);
    char *real = realpath(dir.text, NULL);
    int found_source = 0, found_base = 0;
    for (int i = 0; i < out->attr_count; i++) {
        if (strcmp(out->attr_names[i], "source") == 0)
            found_source = real != NULL && strcmp(out->attr_values[i], real) == 0;
        if (strcmp(out->attr_names[i], "base") == 0)
            found_base = strcmp(out->attr_values[i], base) == 0;
    }
    free(real);
    CHECK_MSG(found_source, "no attribute 'source' with the directory's path");
    CHECK_MSG(found_base, "no attribute 'base' with the hash %s", base);
    check_logits(out->model, fixture);
    return 0;
}

static void test_single_file_logits(void)
{
    struct checkpoint ck;
    struct hf_import_report report;
    if (import_and_load("hf_single", &ck, &report) != 0)
        return;
    const struct model_config *c = &ck.model->config;
    CHECK_INT_EQ(c->vocab_size, 80);
    CHECK_INT_EQ(c->encoder_layers, 4);
    CHECK_INT_EQ(c->decoder_layers, 2);
    CHECK_INT_EQ(c->encoder_sparse_step, 2);
    CHECK_INT_EQ(c->decoder_sparse_step, 2);
    CHECK_INT_EQ(c->num_experts, 4);
    CHECK_INT_EQ(c->expert_capacity, 3);
    CHECK_INT_EQ(c->tie_word_embeddings, 1);
    CHECK_INT_EQ(c->decoder_start_token_id, 0);
    CHECK(c->dropout_rate == 0.125f);
    CHECK(c->router_jitter_noise == 0.02f);
    CHECK(c->routing == ROUTING_PARITY);
    CHECK_INT_EQ(report.files, 1);
    CHECK_INT_EQ(report.f32, report.tensors);
    CHECK_INT_EQ(report.tensors, ck.model->layout.count);
    CHECK_INT_EQ(report.note_count, 0);
    checkpoint_free(&ck);
}

/* The same weights in three shards as F32, F16 and BF16, with the embedding
 * under all four of its names, import to the same parameters bit for bit. */
static void test_sharded_mixed_dtypes(void)
{
    struct checkpoint single, sharded;
    struct hf_import_report single_report, report;
    if (import_and_load("hf_single", &single, &single_report) != 0)
        return;
    if (import_and_load("hf_sharded", &sharded, &report) != 0) {
        checkpoint_free(&single);
        return;
    }
    CHECK_INT_EQ(report.files, 3);
    CHECK(report.f32 > 0);
    CHECK(report.f16 > 0);
    CHECK(report.bf16 > 0);
    CHECK_INT_EQ(report.tensors, sharded.model->layout.count + 3);
    CHECK_INT_EQ(report.note_count, 0);
    CHECK(memcmp(single.model->params, sharded.model->params,
                 sizeof(float) * single.model->layout.total) == 0);
    checkpoint_free(&single);
    checkpoint_free(&sharded);
}

/* ---- rejections ---- */

static void test_rejects_missing_config(void)
{
    struct path dir = copy_fixture("hf_single", "no_config", "config.json");
    expect_import_error(dir.text, "config.json: No such file or directory");
}

static void test_rejects_missing_shard(void)
{
    struct path dir = copy_fixture("hf_sharded", "no_shard", "model-00002-of-00003.safetensors");
    expect_import_error(dir.text, "missing shard");
    expect_import_error(dir.text, "model-00002-of-00003.safetensors");
}

static void test_rejects_missing_weights(void)
{
    struct path dir = copy_fixture("hf_single", "no_weights", "model.safetensors");
    expect_import_error(dir.text, "has neither model.safetensors nor "
                                  "model.safetensors.index.json");
}

static void test_rejects_wrong_shape(void)
{
    struct path dir = copy_fixture("hf_single", "wrong_shape", NULL);
    float router[5 * 32] = { 0 };
    struct tensor_edit edit = { "encoder.block.1.layer.1.mlp.router.classifier.weight", 0,
                                ST_F32, 2, { 5, 32 }, router };
    rewrite_tensors(dir.text, "model.safetensors", &edit);
    expect_import_error(dir.text, "tensor encoder.block.1.layer.1.mlp.router.classifier.weight "
                                  "has shape [5, 32], expected [4, 32]");
}

static void test_rejects_unknown_tensor(void)
{
    struct path dir = copy_fixture("hf_single", "unknown_tensor", NULL);
    float bias[32] = { 0 };
    struct tensor_edit edit = { "encoder.block.1.layer.1.mlp.router.classifier.bias", 0, ST_F32,
                                1, { 32, 0 }, bias };
    rewrite_tensors(dir.text, "model.safetensors", &edit);
    expect_import_error(dir.text, "encoder.block.1.layer.1.mlp.router.classifier.bias");
}

static void test_rejects_missing_tensor(void)
{
    struct path dir = copy_fixture("hf_single", "missing_tensor", NULL);
    struct tensor_edit edit = { "decoder.block.1.layer.2.mlp.experts.expert_3.wo.weight", 1,
                                ST_F32, 0, { 0, 0 }, NULL };
    rewrite_tensors(dir.text, "model.safetensors", &edit);
    expect_import_error(dir.text, "missing tensor decoder.block.1.layer.2.mlp.experts.expert_3."
                                  "wo.weight (the parameter decoder/block_01/moe/expert_03/wo)");
}

static void test_rejects_integer_tensor(void)
{
    struct path dir = copy_fixture("hf_single", "integer_tensor", NULL);
    int64_t norm[32] = { 0 };
    struct tensor_edit edit = { "encoder.final_layer_norm.weight", 0, ST_I64, 1, { 32, 0 },
                                norm };
    rewrite_tensors(dir.text, "model.safetensors", &edit);
    expect_import_error(dir.text, "tensor encoder.final_layer_norm.weight has dtype I64, "
                                  "expected F32, F16 or BF16");
}

static void test_rejects_non_directory(void)
{
    struct path file = fixture_path("hf_single/model.safetensors");
    expect_import_error(file.text, "is not a directory");
    struct path missing = tmp_path("no_such_directory");
    expect_import_error(missing.text, "No such file or directory");
}

/* Two copies of the embedding that differ are ambiguous. */
static void test_rejects_differing_copies(void)
{
    struct path dir = copy_fixture("hf_single", "differing_copies", NULL);
    static float embedding[80 * 32];
    for (int i = 0; i < 80 * 32; i++)
        embedding[i] = 0.5f;
    struct tensor_edit edit = { "encoder.embed_tokens.weight", 0, ST_F32, 2, { 80, 32 },
                                embedding };
    rewrite_tensors(dir.text, "model.safetensors", &edit);
    expect_import_error(dir.text, "but both give shared/embedding");
}

/* With tied embeddings a differing lm_head.weight gives way to the
 * embedding, with a note, as transformers' tie_weights does. */
static void test_tied_head_follows_embedding(void)
{
    struct path dir = copy_fixture("hf_single", "tied_head", NULL);
    static float head[80 * 32];
    for (int i = 0; i < 80 * 32; i++)
        head[i] = 0.25f;
    struct tensor_edit edit = { "lm_head.weight", 0, ST_F32, 2, { 80, 32 }, head };
    rewrite_tensors(dir.text, "model.safetensors", &edit);
    struct model *m = NULL;
    struct hf_import_report report;
    struct caem_error err;
    if (hf_import_model(dir.text, backend_cpu(), &m, &report, &err) != 0) {
        CHECK_MSG(0, "%s", err.message);
        return;
    }
    CHECK_INT_EQ(report.note_count, 1);
    CHECK_MSG(strstr(report.notes[0], "lm_head.weight differs from shared.weight") != NULL,
              "note: %s", report.notes[0]);
    check_logits(m, "tied head");
    model_free(m);
}

/* ---- config.json ---- */

/* Writes config.json with `text` into a fresh directory and reads it. */
static int read_config_text(const char *name, const char *text, struct model_config *cfg,
                            struct hf_import_report *report, struct caem_error *err)
{
    struct path dir = tmp_path(name);
    CHECK(mkdir(dir.text, 0755) == 0);
    char path[2048];
    snprintf(path, sizeof path, "%s/config.json", dir.text);
    write_text(path, text);
    memset(report, 0, sizeof *report);
    return hf_import_config(dir.text, cfg, report, err);
}

/* Absent fields take SwitchTransformersConfig's defaults (transformers
 * 4.46.3): the sparse steps derive from num_sparse_*_layers, and
 * num_decoder_layers null means num_layers. */
static void test_config_defaults(void)
{
    struct model_config cfg;
    struct hf_import_report report;
    struct caem_error err;
    int status = read_config_text("config_defaults",
                                  "{\"num_layers\": 6, \"num_sparse_encoder_layers\": 3, "
                                  "\"num_decoder_layers\": null, "
                                  "\"num_sparse_decoder_layers\": 0}",
                                  &cfg, &report, &err);
    CHECK_MSG(status == 0, "%s", err.message);
    CHECK_INT_EQ(cfg.vocab_size, 32128);
    CHECK_INT_EQ(cfg.d_model, 768);
    CHECK_INT_EQ(cfg.d_kv, 64);
    CHECK_INT_EQ(cfg.d_ff, 2048);
    CHECK_INT_EQ(cfg.num_heads, 12);
    CHECK_INT_EQ(cfg.encoder_layers, 6);
    CHECK_INT_EQ(cfg.decoder_layers, 6);
    CHECK_INT_EQ(cfg.encoder_sparse_step, 2);
    /* With no sparse layers the reference sets the step to the layer count,
     * which still makes layer 1 an MoE layer. */
    CHECK_INT_EQ(cfg.decoder_sparse_step, 6);
    CHECK_INT_EQ(cfg.num_experts, 8);
    CHECK_INT_EQ(cfg.expert_capacity, 64);
    CHECK_INT_EQ(cfg.tie_word_embeddings, 1);
    CHECK_INT_EQ(cfg.relative_attention_num_buckets, 32);
    CHECK_INT_EQ(cfg.relative_attention_max_distance, 128);
    CHECK_INT_EQ(cfg.pad_token_id, 0);
    CHECK_INT_EQ(cfg.eos_token_id, 1);
    CHECK_INT_EQ(cfg.decoder_start_token_id, 0);
    CHECK(cfg.dropout_rate == 0.1f);
    CHECK(cfg.router_jitter_noise == 0.01f);
    CHECK(cfg.layer_norm_epsilon == 1e-6f);
    CHECK(cfg.router_z_loss_coef == 0.001f);
    CHECK(cfg.router_aux_loss_coef == 0.001f);
    CHECK(cfg.initializer_factor == 1.0f);
    CHECK_INT_EQ(report.note_count, 1);
    CHECK_MSG(strstr(report.notes[0], "no decoder_start_token_id") != NULL, "note: %s",
              report.notes[0]);
}

static void test_config_rejections(void)
{
    static const struct {
        const char *text;
        const char *fragment;
    } cases[] = {
        { "{\"router_bias\": true}", "router_bias is true" },
        { "{\"dense_act_fn\": \"gated-gelu\"}", "dense_act_fn is gated-gelu" },
        { "{\"model_type\": \"t5\"}", "model_type is \"t5\", expected \"switch_transformers\"" },
        { "{\"eos_token_id\": [1, 2]}", "'eos_token_id' is an array, expected an integer" },
        { "{\"d_model\": 76.8}", "'d_model' is a real number, expected an integer" },
        { "{\"tie_word_embeddings\": \"yes\"}", "'tie_word_embeddings' is a string, expected a "
                                                "boolean" },
        { "{\"tie_word_embeddings\": 2}", "'tie_word_embeddings' is 2, expected a boolean" },
        { "{\"num_heads\": 0}", "invalid config: num_heads is 0" },
        { "{\"d_model\": 768,\n \"d_ff\": }", "invalid JSON at line 2" },
        { "[1, 2]", "expected a JSON object, found an array" },
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char name[32];
        snprintf(name, sizeof name, "config_%zu", i);
        struct model_config cfg;
        struct hf_import_report report;
        struct caem_error err = { "" };
        int status = read_config_text(name, cases[i].text, &cfg, &report, &err);
        CHECK_MSG(status != 0, "%s was accepted", cases[i].text);
        CHECK_MSG(strstr(err.message, cases[i].fragment) != NULL, "%s: message '%s' lacks '%s'",
                  cases[i].text, err.message, cases[i].fragment);
        CHECK_MSG(strstr(err.message, "config.json") != NULL, "message '%s' names no file",
                  err.message);
    }
}

/* A router computed in bfloat16 by the reference is computed in float32
 * here, and the report notes it. */
static void test_config_router_dtype_note(void)
{
    struct model_config cfg;
    struct hf_import_report report;
    struct caem_error err;
    CHECK(read_config_text("config_dtype", "{\"router_dtype\": \"bfloat16\", "
                                           "\"decoder_start_token_id\": 0}",
                           &cfg, &report, &err) == 0);
    CHECK_INT_EQ(report.note_count, 1);
    CHECK_MSG(strstr(report.notes[0], "router_dtype is bfloat16") != NULL, "note: %s",
              report.notes[0]);
}

static void remove_tree(const char *path)
{
    DIR *dir = opendir(path);
    struct dirent *entry;
    while (dir != NULL && (entry = readdir(dir)) != NULL) {
        if (strcmp(entry->d_name, ".") == 0 || strcmp(entry->d_name, "..") == 0)
            continue;
        char child[2048];
        snprintf(child, sizeof child, "%s/%s", path, entry->d_name);
        struct stat st;
        if (lstat(child, &st) == 0 && S_ISDIR(st.st_mode))
            remove_tree(child);
        else
            unlink(child);
    }
    if (dir != NULL)
        closedir(dir);
    rmdir(path);
}

int main(void)
{
    TEST_SUITE("import");
    if (mkdtemp(tmp_dir) == NULL) {
        printf("FAIL import/setup: mkdtemp %s: %s\n", tmp_dir, strerror(errno));
        return 1;
    }
    RUN_TEST(single_file_logits);
    RUN_TEST(sharded_mixed_dtypes);
    RUN_TEST(rejects_missing_config);
    RUN_TEST(rejects_missing_shard);
    RUN_TEST(rejects_missing_weights);
    RUN_TEST(rejects_wrong_shape);
    RUN_TEST(rejects_unknown_tensor);
    RUN_TEST(rejects_missing_tensor);
    RUN_TEST(rejects_integer_tensor);
    RUN_TEST(rejects_non_directory);
    RUN_TEST(rejects_differing_copies);
    RUN_TEST(tied_head_follows_embedding);
    RUN_TEST(config_defaults);
    RUN_TEST(config_rejections);
    RUN_TEST(config_router_dtype_note);
    printf("  worst logits relative error %.3g (tolerance %g)\n", worst_error, TOLERANCE);
    remove_tree(tmp_dir);
    TEST_MAIN_END();
}
