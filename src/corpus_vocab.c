/* The corpus's SentencePiece vocabulary, trained by Debian's spm_train. */
#include "corpus.h"

#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "tokenizer.h"

extern char **environ;

/* spm_train samples this many sentences (lines) from its input, so that
 * training takes seconds rather than minutes. Measured: 5.8 s for 8000
 * pieces from the full corpus (about 250 000 lines) on 2 cores. */
enum { VOCAB_INPUT_SENTENCES = 30000 };

/* spm_train splits its EM steps across threads, and the trained scores
 * depend on the thread count, so the count is fixed rather than taken from
 * the machine. */
enum { VOCAB_TRAIN_THREADS = 4 };

/* Finds an executable named `name` in the directories of $PATH. */
static int find_program(const char *name, char *path, size_t size)
{
    const char *dirs = getenv("PATH");
    while (dirs != NULL && *dirs != '\0') {
        const char *end = strchr(dirs, ':');
        size_t length = end != NULL ? (size_t)(end - dirs) : strlen(dirs);
        if (length > 0) {
            snprintf(path, size, "%.*s/%s", (int)length, dirs, name);
            if (access(path, X_OK) == 0)
                return 0;
        }
        dirs = end != NULL ? end + 1 : NULL;
    }
    return -1;
}

/* Writes each line of text that is not blank to f and counts it. spm_train
 * reads one sentence per line, so a line break in a text starts a new one. */
static void write_sentences(FILE *f, const char *text, long *sentences)
{
    while (*text != '\0') {
        size_t length = strcspn(text, "\n");
        size_t blank = strspn(text, " \t\r");
        if (blank < length) {
            fwrite(text, 1, length, f);
            fputc('\n', f);
            (*sentences)++;
        }
        text += length + (text[length] == '\n');
    }
}

/* Appends the inputs and targets of one task's train split to f. */
static int write_task_sentences(const char *out_dir, enum corpus_task task, FILE *f,
                                long *sentences, struct caem_error *err)
{
    char path[4200];
    snprintf(path, sizeof path, "%s/%s/%s.jsonl", out_dir, corpus_task_names[task],
             corpus_split_names[CORPUS_TRAIN]);
    FILE *in = fopen(path, "rb");
    if (in == NULL)
        return caem_fail(err, "cannot open %s: %s", path, strerror(errno));
    char *line = NULL;
    size_t capacity = 0;
    long line_number = 0;
    int status = 0;
    while (status == 0 && getline(&line, &capacity, in) >= 0) {
        line_number++;
        json_error_t json_err;
        json_t *record = json_loads(line, 0, &json_err);
        json_t *input = json_object_get(record, "input");
        json_t *target = json_object_get(record, "target");
        if (!json_is_string(input) || !json_is_string(target)) {
            status = caem_fail(err, "%s:%ld: expected a JSON object with string members "
                               "\"input\" and \"target\"", path, line_number);
        } else {
            write_sentences(f, json_string_value(input), sentences);
            write_sentences(f, json_string_value(target), sentences);
        }
        json_decref(record);
    }
    if (status == 0 && ferror(in))
        status = caem_fail(err, "failed to read %s: %s", path, strerror(errno));
    free(line);
    fclose(in);
    return status;
}

/* Writes the training sentences of all three tasks to path. */
static int write_vocab_input(const char *out_dir, const char *path, long *sentences,
                             struct caem_error *err)
{
    FILE *f = fopen(path, "wb");
    if (f == NULL)
        return caem_fail(err, "cannot create %s: %s", path, strerror(errno));
    *sentences = 0;
    int status = 0;
    for (int t = 0; t < CORPUS_TASKS && status == 0; t++)
        status = write_task_sentences(out_dir, (enum corpus_task)t, f, sentences, err);
    int write_failed = ferror(f);
    if (fclose(f) != 0 || write_failed) {
        if (status == 0)
            status = caem_fail(err, "writing %s failed: %s", path, strerror(errno));
    }
    if (status == 0 && *sentences == 0)
        status = caem_fail(err, "the train splits under %s contain no text to train a "
                           "vocabulary on", out_dir);
    return status;
}

/* Runs argv[0] with stdout and stderr going to log_path and waits for it. */
static int run_logged(char *const argv[], const char *log_path, struct caem_error *err)
{
    posix_spawn_file_actions_t actions;
    posix_spawn_file_actions_init(&actions);
    posix_spawn_file_actions_addopen(&actions, STDOUT_FILENO, log_path,
                                     O_WRONLY | O_CREAT | O_TRUNC, 0644);
    posix_spawn_file_actions_adddup2(&actions, STDOUT_FILENO, STDERR_FILENO);
    pid_t pid;
    int rc = posix_spawn(&pid, argv[0], &actions, NULL, argv, environ);
    posix_spawn_file_actions_destroy(&actions);
    if (rc != 0)
        return caem_fail(err, "cannot start %s: %s", argv[0], strerror(rc));
    int status;
    while (waitpid(pid, &status, 0) < 0) {
        if (errno != EINTR)
            return caem_fail(err, "waiting for %s failed: %s", argv[0], strerror(errno));
    }
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
        return caem_fail(err, "%s failed (%s %d); its output is in %s", argv[0],
                         WIFEXITED(status) ? "exit status" : "signal",
                         WIFEXITED(status) ? WEXITSTATUS(status) : WTERMSIG(status), log_path);
    return 0;
}

/* Renames DIR/spm.partial.EXTENSION, which spm_train wrote, to DIR/spm.EXTENSION. */
static int rename_output(const char *out_dir, const char *extension, struct caem_error *err)
{
    char from[4200], to[4200];
    snprintf(from, sizeof from, "%s/spm.partial.%s", out_dir, extension);
    snprintf(to, sizeof to, "%s/spm.%s", out_dir, extension);
    if (rename(from, to) != 0)
        return caem_fail(err, "cannot rename %s to %s: %s", from, to, strerror(errno));
    return 0;
}

int corpus_train_vocab(const struct corpus_vocab_options *options,
                       struct corpus_vocab_report *report, struct caem_error *err)
{
    memset(report, 0, sizeof *report);
    if (options->vocab_size < CORPUS_VOCAB_MIN || options->vocab_size > CORPUS_VOCAB_MAX)
        return caem_fail(err, "invalid vocabulary size %d (expected %d to %d pieces)",
                         options->vocab_size, CORPUS_VOCAB_MIN, CORPUS_VOCAB_MAX);
    char program[4200];
    if (find_program("spm_train", program, sizeof program) != 0)
        return caem_fail(err, "spm_train not found on the PATH; install the Debian package "
                         "sentencepiece (tools/deps.sh installs it)");

    /* spm_train stores the input and prefix paths in the model, so fixed
     * names keep a rebuild in the same directory byte-identical */
    const char *dir = options->out_dir;
    char input[4200], prefix[4200], log_path[4200];
    snprintf(input, sizeof input, "%s/spm_input.tmp", dir);
    snprintf(prefix, sizeof prefix, "%s/spm.partial", dir);
    snprintf(log_path, sizeof log_path, "%s/spm_train.log", dir);
    if (write_vocab_input(dir, input, &report->sentences, err) != 0) {
        unlink(input);
        return -1;
    }

    char arg[8][4300];
    snprintf(arg[0], sizeof arg[0], "--input=%s", input);
    snprintf(arg[1], sizeof arg[1], "--model_prefix=%s", prefix);
    snprintf(arg[2], sizeof arg[2], "--vocab_size=%d", options->vocab_size);
    snprintf(arg[3], sizeof arg[3], "--input_sentence_size=%d", VOCAB_INPUT_SENTENCES);
    snprintf(arg[4], sizeof arg[4], "--random_seed=%u", options->seed);
    snprintf(arg[5], sizeof arg[5], "--num_threads=%d", VOCAB_TRAIN_THREADS);
    char *argv[] = {
        program, arg[0], arg[1], arg[2], arg[3], arg[4], arg[5],
        "--model_type=unigram",
        /* with a small corpus the vocabulary may stay below vocab_size */
        "--hard_vocab_limit=false",
        "--pad_id=0", "--eos_id=1", "--unk_id=2", "--bos_id=-1",
        "--normalization_rule_name=nmt_nfkc",
        /* sentencepiece's advice for languages with a small character set */
        "--character_coverage=1.0",
        "--shuffle_input_sentence=true",
        NULL,
    };
    int status = run_logged(argv, log_path, err);
    unlink(input);
    if (status == 0)
        status = rename_output(dir, "model", err);
    if (status == 0)
        status = rename_output(dir, "vocab", err);
    if (status != 0)
        return -1;

    /* loading checks that the model is one the tokenizer reads */
    char model_path[4200];
    snprintf(model_path, sizeof model_path, "%s/spm.model", dir);
    struct tokenizer *tokenizer;
    if (tokenizer_load(&tokenizer, model_path, err) != 0)
        return -1;
    report->pieces = tokenizer_piece_count(tokenizer);
    tokenizer_free(tokenizer);
    return 0;
}
