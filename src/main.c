/* caem: the command-line entry point. */
#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "backend.h"
#include "commands.h"
#include "corpus.h"
#include "threads.h"
#include "tokenizer.h"
#ifdef CAEM_HAVE_CUDA
#include "backend_cuda.h"
#include "cuda_device.h"
#endif

#define CAEM_VERSION "0.1.0"

struct options {
    const char *device;
    int threads;
    unsigned long long seed;
    int verbose;
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
    fputs("usage: caem [OPTIONS] COMMAND [ARGS]\n"
            "       caem [OPTIONS] [--plain]\n"
            "\n"
            "Commands:\n"
            "  run [-e CHUNK]... SCRIPT.lua [ARGS...]\n"
            "                  run a Lua script with the caem module, without the screen:\n"
            "                  job progress on stderr, what it prints on stdout; SCRIPT -\n"
            "                  reads it from standard input (caem run --help)\n"
            "  -e CHUNK [-e CHUNK]... [SCRIPT.lua [ARGS...]]\n"
            "                  run Lua chunks in order, then the script if one is given\n"
            "  --plain         the Lua REPL on standard input, with GNU readline, without\n"
            "                  the screen. caem without a command starts the live screen\n"
            "                  (panels of the running job above the REPL; F1 lists the\n"
            "                  keys), or this REPL when input or output is not a terminal\n"
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
            "  train [OPTIONS] fine-tune a model on one task of build/data, evaluate it\n"
            "                  before and after, write a checkpoint (caem train --help)\n"
            "  eval CKPT [OPTIONS]\n"
            "                  evaluate a checkpoint on a task split: loss, the task's\n"
            "                  metric, expert usage per layer (caem eval --help)\n"
            "  devices         list the compute backends this build can use\n"
            "  info CKPT.h5    print a checkpoint's config, size, state and expert usage\n"
            "  import DIR OUT.h5\n"
            "                  convert a Hugging Face Switch Transformers directory into a\n"
            "                  checkpoint (caem import --help)\n"
            "\n"
            "Options (before or after the command):\n"
            "  --device auto|cpu|cuda\n"
            "                     backend for the computation (default auto: the GPU when\n"
            "                     this build has CUDA and a GPU is present, else the CPU;\n"
            "                     the environment variable CAEM_DEVICE sets the default)\n"
            "  --precision fp32|tf32|bf16\n"
            "                     GEMM inputs on the GPU (default fp32; accumulation is\n"
            "                     float32 in every mode; the CPU always computes in fp32)\n"
            "  --threads N        CPU threads for OpenBLAS and OpenMP (default: all cores)\n"
            "  --seed N           seed of initialization, dropout, jitter and data (default 1)\n"
            "  --verbose          more detail in the output\n"
            "  --help             this text\n"
            "  --version          the version\n"
            "\n"
            "The REPL prints the values of expressions (a line that compiles after\n"
            "\"return \", or =EXPR) and continues an incomplete chunk on the next line.\n"
            "Tab completes globals, fields (a.b.) and methods (obj:). Ctrl-C clears the\n"
            "line; on an empty line it stops the jobs running in the background. Ctrl-D\n"
            "on an empty line quits, asking first while jobs run. History is kept in\n"
            "$HOME/.caem_history. When standard input is not a terminal, the REPL reads\n"
            "the same lines without prompts, stops the jobs still running at the end of\n"
            "the input, and exits with status 1 when a chunk failed; use caem run - to\n"
            "run standard input as one script instead.\n",
          out);
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
        printf("cuda:%d: %s%s\n", i, desc, i == 0 ? " (used by --device cuda)" : "");
    }
#else
    printf("cuda: not built (nvcc was not on the PATH at build time)\n");
#endif
    return 0;
}

static double seconds_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
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

static int run_info(int argc, char **argv, const struct global_options *g)
{
    (void)g;
    return command_info(argc, argv);
}

static int run_import(int argc, char **argv, const struct global_options *g)
{
    (void)g;
    return command_import(argc, argv);
}

/* Commands that parse their own options. */
static const struct {
    const char *name;
    int (*run)(int argc, char **argv, const struct global_options *g);
} own_parsers[] = {
    { "run", command_run },
    { "train", command_train },
    { "eval", command_eval },
    { "info", run_info },
    { "import", run_import },
};

/* The common options that take a value. */
static const char *const global_value_options[] = { "--device", "--threads", "--seed",
                                                     "--precision" };
#define GLOBAL_VALUE_OPTIONS (sizeof global_value_options / sizeof global_value_options[0])

/* Returns which of global_value_options arg is (as "--name" or "--name=value",
 * with *value set to the text after '=' or NULL), or -1. */
static int match_global_value_option(const char *arg, const char **value)
{
    for (int k = 0; k < (int)GLOBAL_VALUE_OPTIONS; k++) {
        size_t n = strlen(global_value_options[k]);
        if (strncmp(arg, global_value_options[k], n) == 0 && (arg[n] == '\0' || arg[n] == '=')) {
            *value = arg[n] == '=' ? arg + n + 1 : NULL;
            return k;
        }
    }
    return -1;
}

/* Returns the index of the Lua script in a caem run or caem -e command line,
 * or argc when there is none. The words after the script are its own
 * arguments, so the common options are not taken out of them. */
static int find_lua_script(int argc, char **argv)
{
    int lua = 0; /* after "run" or a "-e" */
    for (int i = 1; i < argc; i++) {
        const char *arg = argv[i], *value;
        if (strcmp(arg, "--") == 0)
            return lua && i + 1 < argc ? i + 1 : argc;
        if (match_global_value_option(arg, &value) >= 0) {
            if (value == NULL)
                i++;
            continue;
        }
        if (strcmp(arg, "-e") == 0) {
            lua = 1;
            i++;
            continue;
        }
        if (arg[0] == '-' && arg[1] != '\0')
            continue;
        if (!lua && strcmp(arg, "run") == 0) {
            lua = 1;
            continue;
        }
        return lua ? i : argc;
    }
    return argc;
}

/* Sets the CUDA backend's GEMM precision from --precision; returns -1 after
 * printing a usage error. */
static int set_precision(const char *value)
{
#ifdef CAEM_HAVE_CUDA
    struct caem_error err;
    enum cuda_precision precision;
    if (cuda_precision_parse(value, &precision, &err) != 0) {
        usage_error("%s", err.message);
        return -1;
    }
    backend_cuda_set_precision(precision);
    return 0;
#else
    if (strcmp(value, "fp32") == 0)
        return 0;
    if (strcmp(value, "tf32") == 0 || strcmp(value, "bf16") == 0)
        usage_error("--precision %s needs the CUDA backend, and this build has none (nvcc "
                    "was not on the PATH when it was built)", value);
    else
        usage_error("invalid precision '%s' (expected fp32, tf32 or bf16)", value);
    return -1;
#endif
}

/* Takes the common options (--device, --threads, --seed, --precision, --verbose, as
 * "--name value" or "--name=value") out of argv[1..end), wherever they are,
 * into g. The words from argv[end] on stay as they are. Returns the new
 * argc, or -1 after printing a usage error. */
static int take_global_options(int argc, char **argv, int end, struct global_options *g)
{
    int kept = 1;
    int i = 1;
    for (; i < end; i++) {
        const char *arg = argv[i];
        if (strcmp(arg, "--") == 0)
            break;
        if (strcmp(arg, "--verbose") == 0) {
            g->verbose = 1;
            continue;
        }
        const char *value = NULL;
        int matched = match_global_value_option(arg, &value);
        if (matched < 0) {
            argv[kept++] = argv[i];
            continue;
        }
        if (value == NULL) {
            if (i + 1 >= end) {
                usage_error("missing value for %s", global_value_options[matched]);
                return -1;
            }
            value = argv[++i];
        }
        long v;
        if (matched == 0) {
            struct caem_error err;
            if (backend_set_default(value, &err) != 0) {
                usage_error("invalid --device '%s' (expected auto, cpu or cuda)", value);
                return -1;
            }
            g->device = value;
        } else if (matched == 3) {
            if (set_precision(value) != 0)
                return -1;
        } else if (matched == 1) {
            if (command_parse_long(value, "--threads", 1, 1024, &v) != 0)
                return -1;
            g->threads = (int)v;
        } else {
            if (command_parse_long(value, "--seed", 0, 2147483647L, &v) != 0)
                return -1;
            g->seed = (unsigned long long)v;
            g->seed_given = 1;
        }
    }
    while (i < argc)
        argv[kept++] = argv[i++];
    argv[kept] = NULL;
    return kept;
}

int main(int argc, char **argv)
{
    threads_prefer_passive_wait(argv);
    setvbuf(stdout, NULL, _IOLBF, 0);

    /* The Lua table arg shows the command line as given. The copy lives as
     * long as the program, held by a static so that leak checkers see it. */
    static char **all_argv;
    all_argv = malloc(sizeof *all_argv * ((size_t)argc + 1));
    if (all_argv == NULL) {
        fprintf(stderr, "caem: out of memory\n");
        return 1;
    }
    memcpy(all_argv, argv, sizeof *all_argv * ((size_t)argc + 1));
    struct global_options g = { "auto", 0, 1, 0, 0, argc, all_argv };
    int script = find_lua_script(argc, argv);
    argc = take_global_options(argc, argv, script < argc ? script + 1 : argc, &g);
    if (argc < 0)
        return 2;
    backend_cpu_set_threads(g.threads);
    if (argc == 1)
        return command_repl(&g, 1);
    if (strcmp(argv[1], "--plain") == 0) {
        if (argc > 2)
            return usage_error("unexpected argument '%s' after --plain", argv[2]);
        return command_repl(&g, 0);
    }
    if (strcmp(argv[1], "-e") == 0)
        return command_run(argc, argv, &g);
    for (size_t i = 0; argc > 1 && i < sizeof own_parsers / sizeof own_parsers[0]; i++) {
        if (strcmp(argv[1], own_parsers[i].name) != 0)
            continue;
        argv[1] = (char *)own_parsers[i].name;
        return own_parsers[i].run(argc - 1, argv + 1, &g);
    }

    struct options opt = { g.device, g.threads, g.seed, g.verbose,
                           "build/data", CORPUS_DEFAULT_LISTS, CORPUS_DEFAULT_WORDNET, 0,
                           CORPUS_DEFAULT_VOCAB_SIZE, NULL };
    enum { OPT_VERSION = 256, OPT_OUT, OPT_LISTS, OPT_WORDNET, OPT_MAX_EXAMPLES,
           OPT_VOCAB_SIZE };
    static const struct option long_options[] = {
        { "help", no_argument, NULL, 'h' },
        { "version", no_argument, NULL, OPT_VERSION },
        { "out", required_argument, NULL, OPT_OUT },
        { "lists", required_argument, NULL, OPT_LISTS },
        { "wordnet", required_argument, NULL, OPT_WORDNET },
        { "max-examples", required_argument, NULL, OPT_MAX_EXAMPLES },
        { "vocab-size", required_argument, NULL, OPT_VOCAB_SIZE },
        { NULL, 0, NULL, 0 },
    };
    int c;
    opterr = 0; /* the errors below name the option in one line */
    while ((c = getopt_long(argc, argv, ":h", long_options, NULL)) != -1) {
        switch (c) {
        case 'h':
            print_usage(stdout);
            return 0;
        case OPT_VERSION:
            printf("caem %s\n", CAEM_VERSION);
            return 0;
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
            if (command_parse_long(optarg, "--max-examples", 1, 1000000000L,
                                   &opt.max_examples) != 0)
                return 2;
            opt.corpus_option = "--max-examples";
            break;
        case OPT_VOCAB_SIZE:
            if (command_parse_long(optarg, "--vocab-size", CORPUS_VOCAB_MIN, CORPUS_VOCAB_MAX,
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
    if (optind >= argc) {
        print_usage(stderr);
        return 2;
    }
    const char *command = argv[optind];
    if (optind + 1 < argc)
        return usage_error("unexpected argument '%s'", argv[optind + 1]);
    if (strcmp(command, "corpus") != 0 && opt.corpus_option != NULL)
        return usage_error("%s applies to the corpus command only", opt.corpus_option);
    if (strcmp(command, "corpus") == 0)
        return cmd_corpus(&opt);
    if (strcmp(command, "devices") == 0)
        return cmd_devices();
    return usage_error("unknown command '%s'", command);
}
