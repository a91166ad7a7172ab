/* caem: the command-line entry point. */
#include <errno.h>
#include <getopt.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "adamw.h"
#include "backend.h"
#include "commands.h"
#include "config.h"
#include "corpus.h"
#include "model.h"
#include "rng.h"
#include "threads.h"
#include "tokenizer.h"
#include "usage.h"
#ifdef CAEM_HAVE_CUDA
#include "cuda_device.h"
#endif

#define CAEM_VERSION "0.1.0"

struct options {
    const char *device;
    int threads;
    unsigned long long seed;
    int verbose;
    /* demo */
    const char *preset;
    long steps;
    long batch;
    double lr;
    const char *demo_option; /* a demo option given, for the error with other commands */
    /* corpus */
    const char *out_dir;
    const char *lists_dir;
    const char *wordnet_dir;
    long max_examples;
    long vocab_size;
    const char *corpus_option; /* a corpus option given, for the error with other commands */
};

static void print_usage(FILE *out)
{
    fprintf(out,
            "usage: caem [OPTIONS] COMMAND [ARGS]\n"
            "\n"
            "Commands:\n"
            "  demo [--preset NAME] [--steps N] [--batch N] [--lr X]\n"
            "                  train a Switch Transformer to name the topic of synthetic\n"
            "                  token sequences and print the loss and each MoE layer's\n"
            "                  expert usage (preset tiny, 300 steps, batch 16, lr 3e-3 by\n"
            "                  default; presets: %s)\n"
            "  corpus [--out DIR] [--max-examples N] [--lists DIR] [--wordnet DIR]\n"
            "         [--vocab-size N]\n"
            "                  build the default corpus (summarization, classification and\n"
            "                  question answering) from apt's index files and WordNet into\n"
            "                  DIR (default build/data), then train a SentencePiece model\n"
            "                  of at most N pieces (default 8000) on its train splits with\n"
            "                  spm_train into DIR/spm.model; --max-examples keeps at most\n"
            "                  N examples per task; --lists and --wordnet set the source\n"
            "                  directories (default " CORPUS_DEFAULT_LISTS " and\n"
            "                  " CORPUS_DEFAULT_WORDNET ")\n"
            "  devices         list the compute backends this build can use\n"
            "  info CKPT.h5    print a checkpoint's config, size, state and expert usage\n"
            "  import DIR OUT.h5\n"
            "                  convert a Hugging Face Switch Transformers directory into a\n"
            "                  checkpoint (caem info --help and caem import --help for more)\n"
            "\n"
            "Options (before or after the command, except for info and import):\n"
            "  --device cpu|cuda  backend for the computation (default cpu)\n"
            "  --threads N        CPU threads for OpenBLAS and OpenMP (default: all cores)\n"
            "  --seed N           seed of initialization, dropout, jitter and data (default 1)\n"
            "  --verbose          more detail in the output\n"
            "  --help             this text\n"
            "  --version          the version\n"
            "\n"
            "This version has the model core only: the Lua REPL, the live screen, data\n"
            "loading and the CAEM merge are not in it yet (see README.md).\n",
            config_preset_names());
}

static int parse_int(const char *text, const char *what, long min, long max, long *out)
{
    char *end;
    errno = 0;
    long v = strtol(text, &end, 10);
    if (errno != 0 || *end != '\0' || end == text || v < min || v > max) {
        fprintf(stderr, "caem: invalid %s '%s' (expected an integer in [%ld, %ld])\n", what,
                text, min, max);
        return -1;
    }
    *out = v;
    return 0;
}

static int cmd_devices(void)
{
    printf("cpu: available (OpenBLAS and OpenMP)\n");
#ifdef CAEM_HAVE_CUDA
    char reason[256] = "";
    int count = cuda_device_count(reason, sizeof reason);
    if (count == 0)
        printf("cuda: built, but no device: %s\n", reason);
    for (int i = 0; i < count; i++) {
        char desc[256];
        cuda_device_describe(i, desc, sizeof desc);
        printf("cuda:%d: %s (the CUDA operations are not implemented in this version)\n", i,
               desc);
    }
#else
    printf("cuda: not built (nvcc was not on the PATH at build time)\n");
#endif
    return 0;
}

/* Number of topics of the synthetic classification task. */
#define DEMO_TOPICS 4

/* A batch of the synthetic topic task: each input draws 80% of its tokens
 * from its topic's share of the vocabulary and the rest from anywhere; the
 * target is the topic's label token, then EOS. Inputs vary in length and are
 * padded with 0. Topic k's words are ids [2 + k w, 2 + (k + 1) w) with
 * w = (V - 2 - topics) / topics, and its label is id V - topics + k. */
static void make_topic_batch(uint64_t seed, uint64_t index, int B, int T, int vocab,
                             int32_t *input, int32_t *mask, int32_t *labels,
                             int32_t *decoder_input)
{
    int width = (vocab - 2 - DEMO_TOPICS) / DEMO_TOPICS;
    for (int b = 0; b < B; b++) {
        uint64_t base = (index * (uint64_t)B + (uint64_t)b) * (uint64_t)(2 * T + 2);
        int topic = (int)(rng_uniform(seed, base) * DEMO_TOPICS);
        int len = T / 2 + (int)(rng_uniform(seed, base + 1) * (float)(T / 2));
        if (len > T - 1)
            len = T - 1;
        for (int t = 0; t < T; t++) {
            int32_t id = 0;
            if (t < len) {
                float u = rng_uniform(seed, base + 2 + 2 * t);
                float v = rng_uniform(seed, base + 3 + 2 * t);
                id = u < 0.8f ? 2 + topic * width + (int32_t)(v * width)
                              : 2 + (int32_t)(v * (float)(width * DEMO_TOPICS));
            } else if (t == len) {
                id = 1;
            }
            input[b * T + t] = id;
            mask[b * T + t] = t <= len;
        }
        labels[b * 2] = vocab - DEMO_TOPICS + topic;
        labels[b * 2 + 1] = 1;
        decoder_input[b * 2] = 0;
        decoder_input[b * 2 + 1] = labels[b * 2];
    }
}

static double seconds_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

static void print_usage_table(struct model *m)
{
    struct caem_error err;
    for (int decoder = 0; decoder < 2; decoder++) {
        const struct stack_offsets *s = decoder ? &m->layout.decoder : &m->layout.encoder;
        for (int i = 0; i < s->layers; i++) {
            if (!s->blocks[i].moe)
                continue;
            struct moe_routing r;
            if (model_routing(m, decoder, i, &r, &err) != 0)
                continue;
            printf("%s block %d: normalized entropy %.3f, tokens per expert:",
                   decoder ? "decoder" : "encoder", i,
                   usage_normalized_entropy(r.kept_counts, r.experts));
            for (int e = 0; e < r.experts; e++)
                printf(" %lld", (long long)r.kept_counts[e]);
            long long dropped = 0;
            for (int e = 0; e < r.experts; e++)
                dropped += r.dropped_counts[e];
            printf(" (dropped %lld)\n", dropped);
        }
    }
}

static int cmd_demo(const struct options *opt)
{
    const char *preset = opt->preset;
    long steps = opt->steps, batch = opt->batch;
    double lr = opt->lr;

    struct caem_error err;
    const struct backend *be;
    struct model_config cfg;
    if (config_preset(&cfg, preset, &err) != 0) {
        fprintf(stderr, "caem: invalid --preset: %s\n", err.message);
        return 2;
    }
    if (backend_select(&be, opt->device, &err) != 0) {
        fprintf(stderr, "caem: %s\n", err.message);
        return 1;
    }
    struct model *m = NULL;
    struct adamw *opt_state = NULL;
    struct adamw_config ac = adamw_defaults();
    ac.lr = (float)lr;
    if (model_create(&m, &cfg, be, &err) != 0 || adamw_create(&opt_state, m, &ac, &err) != 0) {
        fprintf(stderr, "caem demo: %s\n", err.message);
        model_free(m);
        return 1;
    }
    printf("model: preset %s, %zu parameters, %d MoE layers of %d experts, backend %s\n",
           preset, m->layout.total,
           config_moe_layer_count(&cfg, 0) + config_moe_layer_count(&cfg, 1), cfg.num_experts,
           be->name);
    model_init_params(m, opt->seed);
    model_set_seed(m, opt->seed + 1);
    m->training = 1;
    printf("task: name the topic of a synthetic token sequence (%d topics), batch %ld, "
           "%ld steps, lr %g\n", DEMO_TOPICS, batch, steps, (double)ac.lr);

    int T = 16, B = (int)batch;
    size_t n = (size_t)B * T;
    int32_t *ids = malloc(sizeof(int32_t) * (n * 2 + (size_t)B * 4));
    if (ids == NULL) {
        fprintf(stderr, "caem demo: out of memory for the batch\n");
        adamw_free(opt_state);
        model_free(m);
        return 1;
    }
    int32_t *mask = ids + n, *labels = ids + 2 * n, *dec = ids + 2 * n + 2 * B;
    struct batch b = { B, T, 2, ids, mask, dec, labels };
    struct model_losses losses;
    int status = 0;
    double start = seconds_now();
    for (long step = 1; step <= steps; step++) {
        make_topic_batch(opt->seed + 2, (uint64_t)step, B, T, cfg.vocab_size, ids, mask,
                         labels, dec);
        model_zero_grad(m);
        if (model_forward(m, &b, &losses, &err) != 0 || model_backward(m, &err) != 0) {
            fprintf(stderr, "caem demo: step %ld: %s\n", step, err.message);
            status = 1;
            break;
        }
        adamw_step(opt_state, m);
        if (step == 1 || step % 20 == 0 || step == steps || opt->verbose)
            printf("step %4ld  loss %.4f  cross-entropy %.4f  %.0f tokens/s\n", step,
                   losses.total, losses.cross_entropy,
                   (double)step * (n + 2 * B) / (seconds_now() - start));
    }
    if (status == 0) {
        printf("expert usage in the last training batch (padding tokens included):\n");
        print_usage_table(m);
    }
    free(ids);
    adamw_free(opt_state);
    model_free(m);
    return status;
}

/* Makes sure apt's Translation-en index files exist: Debian's container
 * images configure apt not to download them. As root this runs apt-get
 * update for English; otherwise it prints the command to run. */
static int ensure_translations(const char *lists_dir)
{
    static const char update[] = "apt-get update -o Acquire::Languages=en";
    int found = corpus_count_index_files(lists_dir, "Translation-en");
    if (found > 0)
        return 0;
    if (found < 0) {
        fprintf(stderr, "caem corpus: cannot read apt's lists directory %s\n", lists_dir);
        return -1;
    }
    if (strcmp(lists_dir, CORPUS_DEFAULT_LISTS) != 0) {
        fprintf(stderr, "caem corpus: no Translation-en index files in %s\n", lists_dir);
        return -1;
    }
    if (geteuid() != 0) {
        fprintf(stderr, "caem corpus: no Translation-en index files in %s; download them "
                "with:\n    sudo %s\n", lists_dir, update);
        return -1;
    }
    printf("corpus: no Translation-en index files in %s; running %s\n", lists_dir, update);
    int status = system(update);
    if (status != 0 || corpus_count_index_files(lists_dir, "Translation-en") <= 0) {
        fprintf(stderr, "caem corpus: '%s' failed (status %d) or did not download "
                "Translation-en\n", update, status);
        return -1;
    }
    return 0;
}

static int cmd_corpus(const struct options *opt)
{
    struct corpus_options co = { opt->out_dir, opt->lists_dir, opt->wordnet_dir,
                                 opt->max_examples };
    if (ensure_translations(co.lists_dir) != 0)
        return 1;
    struct corpus_report report;
    struct caem_error err;
    double start = seconds_now();
    if (corpus_build(&co, &report, &err) != 0) {
        fprintf(stderr, "caem corpus: %s\n", err.message);
        return 1;
    }
    for (int t = 0; t < CORPUS_TASKS; t++) {
        const struct corpus_task_report *r = &report.tasks[t];
        printf("%s: train %ld, validation %ld, test %ld (%ld records read, %ld malformed "
               "skipped)\n", corpus_task_names[t], r->counts[CORPUS_TRAIN],
               r->counts[CORPUS_VALIDATION], r->counts[CORPUS_TEST], r->records, r->malformed);
        if (r->malformed > 0)
            printf("  first malformed: %s\n", r->first_malformed);
    }
    printf("corpus written to %s in %.1f s\n", co.out_dir, seconds_now() - start);

    struct corpus_vocab_options vo = { co.out_dir, (int)opt->vocab_size, (unsigned)opt->seed };
    struct corpus_vocab_report vocab;
    start = seconds_now();
    if (corpus_train_vocab(&vo, &vocab, &err) != 0) {
        fprintf(stderr, "caem corpus: %s\n", err.message);
        return 1;
    }
    printf("vocabulary: %s/spm.model, %d pieces (+%d sentinels) from %ld lines, in %.1f s\n",
           co.out_dir, vocab.pieces, TOKENIZER_SENTINELS, vocab.sentences,
           seconds_now() - start);
    return 0;
}

/* Reports a usage error in one line and returns the exit status for it. */
static int usage_error(const char *fmt, const char *value)
{
    fprintf(stderr, "caem: ");
    fprintf(stderr, fmt, value);
    fprintf(stderr, " (see caem --help)\n");
    return 2;
}

int main(int argc, char **argv)
{
    threads_prefer_passive_wait(argv);
    setvbuf(stdout, NULL, _IOLBF, 0);

    /* These commands parse their own arguments, so they must come first. */
    if (argc >= 2 && strcmp(argv[1], "info") == 0)
        return command_info(argc - 1, argv + 1);
    if (argc >= 2 && strcmp(argv[1], "import") == 0)
        return command_import(argc - 1, argv + 1);

    struct options opt = { "cpu", 0, 1, 0, "tiny", 300, 16, 3e-3, NULL,
                           "build/data", CORPUS_DEFAULT_LISTS, CORPUS_DEFAULT_WORDNET, 0,
                           CORPUS_DEFAULT_VOCAB_SIZE, NULL };
    enum { OPT_DEVICE = 256, OPT_THREADS, OPT_SEED, OPT_VERBOSE, OPT_VERSION, OPT_PRESET,
           OPT_STEPS, OPT_BATCH, OPT_LR, OPT_OUT, OPT_LISTS, OPT_WORDNET, OPT_MAX_EXAMPLES,
           OPT_VOCAB_SIZE };
    static const struct option long_options[] = {
        { "device", required_argument, NULL, OPT_DEVICE },
        { "threads", required_argument, NULL, OPT_THREADS },
        { "seed", required_argument, NULL, OPT_SEED },
        { "verbose", no_argument, NULL, OPT_VERBOSE },
        { "help", no_argument, NULL, 'h' },
        { "version", no_argument, NULL, OPT_VERSION },
        { "preset", required_argument, NULL, OPT_PRESET },
        { "steps", required_argument, NULL, OPT_STEPS },
        { "batch", required_argument, NULL, OPT_BATCH },
        { "lr", required_argument, NULL, OPT_LR },
        { "out", required_argument, NULL, OPT_OUT },
        { "lists", required_argument, NULL, OPT_LISTS },
        { "wordnet", required_argument, NULL, OPT_WORDNET },
        { "max-examples", required_argument, NULL, OPT_MAX_EXAMPLES },
        { "vocab-size", required_argument, NULL, OPT_VOCAB_SIZE },
        { NULL, 0, NULL, 0 },
    };
    int c;
    long value;
    opterr = 0; /* the errors below name the option in one line */
    while ((c = getopt_long(argc, argv, ":h", long_options, NULL)) != -1) {
        switch (c) {
        case OPT_DEVICE:
            if (strcmp(optarg, "cpu") != 0 && strcmp(optarg, "cuda") != 0)
                return usage_error("invalid --device '%s' (expected cpu or cuda)", optarg);
            opt.device = optarg;
            break;
        case OPT_THREADS:
            if (parse_int(optarg, "--threads", 1, 1024, &value) != 0)
                return 2;
            opt.threads = (int)value;
            break;
        case OPT_SEED:
            if (parse_int(optarg, "--seed", 0, 2147483647L, &value) != 0)
                return 2;
            opt.seed = (unsigned long long)value;
            break;
        case OPT_VERBOSE:
            opt.verbose = 1;
            break;
        case 'h':
            print_usage(stdout);
            return 0;
        case OPT_VERSION:
            printf("caem %s\n", CAEM_VERSION);
            return 0;
        case OPT_PRESET:
            opt.preset = optarg;
            opt.demo_option = "--preset";
            break;
        case OPT_STEPS:
            if (parse_int(optarg, "--steps", 1, 1000000, &opt.steps) != 0)
                return 2;
            opt.demo_option = "--steps";
            break;
        case OPT_BATCH:
            if (parse_int(optarg, "--batch", 1, 4096, &opt.batch) != 0)
                return 2;
            opt.demo_option = "--batch";
            break;
        case OPT_LR: {
            char *end;
            errno = 0;
            opt.lr = strtod(optarg, &end);
            if (errno != 0 || end == optarg || *end != '\0' || !(opt.lr > 0.0 && opt.lr < 1.0))
                return usage_error("invalid --lr '%s' (expected a number in (0, 1))", optarg);
            opt.demo_option = "--lr";
            break;
        }
        case OPT_OUT:
            opt.out_dir = optarg;
            opt.corpus_option = "--out";
            break;
        case OPT_LISTS:
            opt.lists_dir = optarg;
            opt.corpus_option = "--lists";
            break;
        case OPT_WORDNET:
            opt.wordnet_dir = optarg;
            opt.corpus_option = "--wordnet";
            break;
        case OPT_MAX_EXAMPLES:
            if (parse_int(optarg, "--max-examples", 1, 1000000000L, &opt.max_examples) != 0)
                return 2;
            opt.corpus_option = "--max-examples";
            break;
        case OPT_VOCAB_SIZE:
            if (parse_int(optarg, "--vocab-size", CORPUS_VOCAB_MIN, CORPUS_VOCAB_MAX,
                          &opt.vocab_size) != 0)
                return 2;
            opt.corpus_option = "--vocab-size";
            break;
        case ':':
            return usage_error("missing value for %s", argv[optind - 1]);
        default:
            return usage_error("unknown option '%s'", argv[optind - 1]);
        }
    }
    backend_cpu_set_threads(opt.threads);
    if (optind >= argc) {
        print_usage(stderr);
        return 2;
    }
    const char *command = argv[optind];
    if (strcmp(command, "info") == 0 || strcmp(command, "import") == 0)
        return usage_error("the global options do not apply to %s, so put the command first, "
                           "as in caem info CKPT.h5 or caem import DIR OUT.h5", command);
    if (optind + 1 < argc)
        return usage_error("unexpected argument '%s'", argv[optind + 1]);
    if (strcmp(command, "corpus") != 0 && opt.corpus_option != NULL)
        return usage_error("%s applies to the corpus command only", opt.corpus_option);
    if (strcmp(command, "demo") == 0)
        return cmd_demo(&opt);
    if (opt.demo_option != NULL)
        return usage_error("%s applies to the demo command only", opt.demo_option);
    if (strcmp(command, "corpus") == 0)
        return cmd_corpus(&opt);
    if (strcmp(command, "devices") == 0)
        return cmd_devices();
    return usage_error("unknown command '%s'", command);
}
