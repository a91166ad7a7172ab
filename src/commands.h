/* Subcommands of the caem program that live outside src/main.c.
 *
 * Each takes the arguments from the command name on (argv[0] is "info",
 * "import", ...), prints results on stdout and errors on stderr, and returns
 * the exit status: 0 on success, 1 on an error, 2 on a usage error. main.c
 * takes the common options out of argv first, wherever they are. */
#ifndef CAEM_COMMANDS_H
#define CAEM_COMMANDS_H

/* Options common to every command. */
struct global_options {
    const char *device; /* --device as given, or "auto"; backend_default resolves it */
    int threads;        /* 0: the default */
    unsigned long long seed;
    int seed_given; /* 1 when --seed was on the command line */
    int verbose;
    /* the command line as given, before the common options were taken out,
     * for the Lua table `arg` */
    int all_argc;
    char **all_argv;
};

/* Parses a decimal integer in [min, max] for the option named `what`. On
 * failure prints "caem: invalid WHAT ..." on stderr and returns -1. */
int command_parse_long(const char *text, const char *what, long min, long max, long *out);

/* caem info CKPT.h5: the config, size, optimizer and train state, root
 * attributes, history and expert usage per MoE layer of a checkpoint. */
int command_info(int argc, char **argv);

/* caem import DIR OUT.h5: a Hugging Face Switch Transformers directory to a
 * checkpoint. */
int command_import(int argc, char **argv);

/* caem train: fine-tune a model on one task, evaluating it before and after. */
int command_train(int argc, char **argv, const struct global_options *g);

/* caem eval CKPT: evaluate a checkpoint on one split of a task. */
int command_eval(int argc, char **argv, const struct global_options *g);

/* caem run [-e CHUNK]... SCRIPT|- [ARGS...] (argv[0] "caem run") and
 * caem -e CHUNK... [SCRIPT [ARGS...]] (argv[0] "caem"): Lua chunks and a
 * script run headless. */
int command_run(int argc, char **argv, const struct global_options *g);

/* caem without a command (screen = 1): the live screen, or the plain REPL
 * when standard input or output is not a terminal or the screen cannot
 * start; caem --plain (screen = 0): the plain REPL. */
int command_repl(const struct global_options *g, int screen);

#endif
