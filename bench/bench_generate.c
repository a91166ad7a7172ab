/* bench_generate: times generation on the CPU backend, greedy and with 3
 * beams, beside the same generation in the reference implementation.
 *
 * The model is the "small" preset with random weights (untied LM head). The
 * batch is BATCH_SIZE random inputs of INPUT_LENGTH tokens. Both searches use
 * the CAEM paper's options (repetition penalty 1.2, no repeated 3-grams,
 * length penalty 1, early stopping) with max_length MAX_LENGTH, greedy with 1
 * beam and beam search with 3. The EOS row of the LM head is zero, so the EOS
 * logit is 0 while thousands of others are positive. So both this program and
 * bench/reference_generate.py, which builds the model the same way, generate
 * MAX_LENGTH - 1 tokens for every sequence, and both check that they did.
 *
 * Each search runs once untimed, then `--repeats` times timed, and prints one
 * line (wrapped here):
 *
 *   small greedy: <ours> sequences/s, <ms> ms per batch of 8 x 64 tokens,
 *       max_length 64, <n> threads, reference <theirs> sequences/s,
 *       <ours/theirs>x
 *
 * where the reference part is "reference skipped: ..." without the venv
 * (tools/venv under $CAEM_ROOT, default the current directory) and
 * "reference failed: <why>" when the script fails. */
#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#ifdef _OPENMP
#include <omp.h>
#endif

#include "backend.h"
#include "config.h"
#include "generate.h"
#include "model.h"
#include "rng.h"
#include "threads.h"

#define CONFIG_NAME "small"
#define BATCH_SIZE 8
#define INPUT_LENGTH 64
#define MAX_LENGTH 64
#define INIT_SEED 0
#define DATA_SEED 2
#define FIRST_WORD_ID 2

struct options {
    long repeats;
    long threads;
    int verbose;
};

/* One timed search: its name in the output and in the reference's lines. */
struct search {
    const char *name;
    int num_beams;
    double sequences_per_s;
    double batch_ms;
    double reference; /* sequences/s, 0 when not measured */
};

static double seconds_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* Random words with EOS last, as the reference script builds its inputs. */
static void inputs_fill(int32_t *ids, const struct model_config *cfg)
{
    int words = cfg->vocab_size - FIRST_WORD_ID;
    for (int r = 0; r < BATCH_SIZE; r++) {
        for (int t = 0; t < INPUT_LENGTH; t++) {
            uint64_t index = (uint64_t)r * INPUT_LENGTH + t;
            int id = FIRST_WORD_ID + (int)(rng_uniform(DATA_SEED, index) * (float)words);
            ids[index] = id < cfg->vocab_size ? id : cfg->vocab_size - 1;
        }
        ids[(size_t)r * INPUT_LENGTH + INPUT_LENGTH - 1] = cfg->eos_token_id;
    }
}

/* Runs one search and checks that every sequence reached max_length. */
static int generate_once(struct model *m, const int32_t *ids, const struct generate_options *o,
                         struct caem_error *err)
{
    struct generate_output out;
    if (model_generate(m, ids, NULL, BATCH_SIZE, INPUT_LENGTH, o, &out, NULL, err) != 0)
        return -1;
    int status = 0;
    for (int r = 0; r < out.rows && status == 0; r++)
        if (out.lengths[r] != o->max_length - 1)
            status = caem_fail(err, "row %d generated %d tokens, expected %d: an EOS ended it, "
                               "so the runs would not do the same work", r, out.lengths[r],
                               o->max_length - 1);
    generate_output_free(&out);
    return status;
}

static int search_time(struct model *m, const int32_t *ids, struct search *s, long repeats,
                       struct caem_error *err)
{
    struct generate_options o = generate_paper_options();
    o.num_beams = s->num_beams;
    o.max_length = MAX_LENGTH;
    if (generate_once(m, ids, &o, err) != 0)
        return -1;
    double start = seconds_now();
    for (long i = 0; i < repeats; i++)
        if (generate_once(m, ids, &o, err) != 0)
            return -1;
    double elapsed = seconds_now() - start;
    s->batch_ms = 1000.0 * elapsed / repeats;
    s->sequences_per_s = (double)BATCH_SIZE * repeats / elapsed;
    return 0;
}

/* Appends text to dst (size bytes) in single quotes for /bin/sh. */
static void shell_quote(char *dst, size_t size, const char *text)
{
    size_t used = strlen(dst);
    if (used + 1 < size)
        dst[used++] = '\'';
    for (const char *p = text; *p != '\0' && used + 5 < size; p++) {
        if (*p == '\'') {
            memcpy(dst + used, "'\\''", 4);
            used += 4;
        } else {
            dst[used++] = *p;
        }
    }
    if (used + 1 < size)
        dst[used++] = '\'';
    dst[used] = '\0';
}

/* Runs bench/reference_generate.py with the venv of the repository at root
 * and stores the sequences/s of each search it reports. Returns 0 on
 * success, 1 when the venv is not installed, -1 when the script failed, with
 * a message in err. */
static int reference_run(const char *root, const struct options *opt, struct search *searches,
                         int count, struct caem_error *err)
{
    char python[4096];
    snprintf(python, sizeof python, "%s/tools/venv/bin/python", root);
    if (access(python, X_OK) != 0)
        return 1;

    char command[16384] = "cd ";
    shell_quote(command, sizeof command, root);
    size_t used = strlen(command);
    snprintf(command + used, sizeof command - used,
             " && tools/venv/bin/python bench/reference_generate.py --repeats %ld "
             "--threads %ld 2>&1", opt->repeats, opt->threads);
    fflush(stdout);
    FILE *pipe = popen(command, "r");
    if (pipe == NULL)
        return caem_fail(err, "cannot start %s: %s", python, strerror(errno));

    char line[4096], last[4096] = "";
    int found = 0;
    while (fgets(line, sizeof line, pipe) != NULL) {
        line[strcspn(line, "\r\n")] = '\0';
        if (line[0] != '\0')
            snprintf(last, sizeof last, "%s", line);
        if (strncmp(line, "reference config=", 17) != 0)
            continue;
        if (opt->verbose)
            fprintf(stderr, "%s\n", line);
        const char *field = strstr(line, "sequences_per_s=");
        for (int i = 0; i < count && field != NULL; i++) {
            char mode[64];
            snprintf(mode, sizeof mode, " mode=%s ", searches[i].name);
            if (strstr(line, mode) == NULL)
                continue;
            searches[i].reference = strtod(field + strlen("sequences_per_s="), NULL);
            found += searches[i].reference > 0.0;
        }
    }
    int status = pclose(pipe);
    if (status == -1)
        return caem_fail(err, "waiting for bench/reference_generate.py failed: %s",
                         strerror(errno));
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
        return caem_fail(err, "bench/reference_generate.py exited with status %d: %.300s",
                         WIFEXITED(status) ? WEXITSTATUS(status) : -1, last);
    if (found != count)
        return caem_fail(err, "bench/reference_generate.py reported %d of %d searches: %.300s",
                         found, count, last);
    return 0;
}

static void print_usage(FILE *out)
{
    fprintf(out,
            "usage: bench_generate [--repeats N] [--threads N] [--verbose]\n"
            "\n"
            "Times greedy and 3-beam generation of the '%s' preset with random weights,\n"
            "%d inputs of %d tokens, max_length %d, on the CPU backend, and prints\n"
            "sequences/s and ms per batch for each, beside bench/reference_generate.py when\n"
            "tools/venv/bin/python exists under $CAEM_ROOT (default: the current directory).\n"
            "\n"
            "  --repeats N   timed runs of each search after one untimed run (default 3)\n"
            "  --threads N   OpenBLAS and OpenMP threads, also passed to the reference\n"
            "                (default: all cores)\n"
            "  --verbose     print the reference's own lines to stderr\n",
            CONFIG_NAME, BATCH_SIZE, INPUT_LENGTH, MAX_LENGTH);
}

static int parse_long(const char *text, const char *option, long min, long max, long *out)
{
    char *end;
    errno = 0;
    long value = strtol(text, &end, 10);
    if (errno != 0 || end == text || *end != '\0' || value < min || value > max) {
        fprintf(stderr, "bench_generate: invalid %s '%s', expected an integer in [%ld, %ld]\n",
                option, text, min, max);
        return -1;
    }
    *out = value;
    return 0;
}

static int parse_options(int argc, char **argv, struct options *opt)
{
    static const struct option long_options[] = {
        { "repeats", required_argument, NULL, 'r' },
        { "threads", required_argument, NULL, 't' },
        { "verbose", no_argument, NULL, 'v' },
        { "help", no_argument, NULL, 'h' },
        { NULL, 0, NULL, 0 },
    };
    int c;
    while ((c = getopt_long(argc, argv, "h", long_options, NULL)) != -1) {
        switch (c) {
        case 'r':
            if (parse_long(optarg, "--repeats", 1, 10000, &opt->repeats) != 0)
                return 2;
            break;
        case 't':
            if (parse_long(optarg, "--threads", 1, 1024, &opt->threads) != 0)
                return 2;
            break;
        case 'v':
            opt->verbose = 1;
            break;
        case 'h':
            print_usage(stdout);
            return 1;
        default:
            print_usage(stderr);
            return 2;
        }
    }
    if (optind < argc) {
        fprintf(stderr, "bench_generate: unexpected argument '%s' (see --help)\n",
                argv[optind]);
        return 2;
    }
    return 0;
}

static int default_threads(void)
{
#ifdef _OPENMP
    return omp_get_num_procs();
#else
    long cores = sysconf(_SC_NPROCESSORS_ONLN);
    return cores > 0 ? (int)cores : 1;
#endif
}

/* Builds the model: the preset with random weights and a zero EOS row in
 * the LM head. */
static int model_build(struct model **m, struct caem_error *err)
{
    struct model_config cfg;
    if (config_preset(&cfg, CONFIG_NAME, err) != 0 ||
        model_create(m, &cfg, backend_cpu(), err) != 0)
        return -1;
    model_init_params(*m, INIT_SEED);
    size_t count;
    float *head = model_param(*m, cfg.tie_word_embeddings ? "shared/embedding" : "lm_head",
                              &count);
    if (head == NULL)
        return caem_fail(err, "the model has no LM head tensor");
    memset(head + (size_t)cfg.eos_token_id * cfg.d_model, 0, sizeof(float) * cfg.d_model);
    return 0;
}

int main(int argc, char **argv)
{
    threads_prefer_passive_wait(argv);
    threads_restore_environment();
    struct options opt = { 3, 0, 0 };
    int parsed = parse_options(argc, argv, &opt);
    if (parsed != 0)
        return parsed == 1 ? 0 : parsed;
    if (opt.threads == 0)
        opt.threads = default_threads();
    backend_cpu_set_threads((int)opt.threads);

    struct caem_error err;
    struct model *m = NULL;
    if (model_build(&m, &err) != 0) {
        fprintf(stderr, "bench_generate: %s: model creation failed: %s\n", CONFIG_NAME,
                err.message);
        model_free(m);
        return 1;
    }
    int32_t ids[BATCH_SIZE * INPUT_LENGTH];
    inputs_fill(ids, &m->config);

    struct search searches[] = { { "greedy", 1, 0, 0, 0 }, { "beam3", 3, 0, 0, 0 } };
    int count = (int)(sizeof searches / sizeof searches[0]);
    for (int i = 0; i < count; i++)
        if (search_time(m, ids, &searches[i], opt.repeats, &err) != 0) {
            fprintf(stderr, "bench_generate: %s %s: %s\n", CONFIG_NAME, searches[i].name,
                    err.message);
            model_free(m);
            return 1;
        }
    model_free(m);

    const char *root = getenv("CAEM_ROOT");
    int ref = reference_run(root != NULL && root[0] != '\0' ? root : ".", &opt, searches,
                            count, &err);
    for (int i = 0; i < count; i++) {
        struct search *s = &searches[i];
        printf("%s %s: %.2f sequences/s, %.0f ms per batch of %d x %d tokens, max_length %d, "
               "%ld threads", CONFIG_NAME, s->name, s->sequences_per_s, s->batch_ms, BATCH_SIZE,
               INPUT_LENGTH, MAX_LENGTH, opt.threads);
        if (ref == 0)
            printf(", reference %.2f sequences/s, %.1fx\n", s->reference,
                   s->sequences_per_s / s->reference);
        else if (ref == 1)
            printf(", reference skipped: tools/venv not found (README.md says how to make "
                   "it)\n");
        else
            printf(", reference failed: %s\n", err.message);
    }
    return 0;
}
