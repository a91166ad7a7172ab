/* The default corpus: three tasks built from text that Debian ships.
 *
 *   summarization   a package's long description -> its one-line synopsis,
 *                   from apt's Translation-en index files
 *   classification  a package's long description -> a readable name of its
 *                   section, joined to the Packages index by Description-md5
 *   qa              extractive question answering from WordNet 3.0: the
 *                   definition of a synset is the question, one of its example
 *                   sentences the context, and the lemma found in it the answer
 *
 * Each task is written as DIR/<task>/{train,validation,test}.jsonl (one JSON
 * object per line) and DIR/<task>/counts.json, and corpus_train_vocab trains
 * a SentencePiece vocabulary on the train splits. The split of an example
 * depends only on a hash of its key (a package name, or a synset's offset and
 * type), so building twice gives byte-identical files. */
#ifndef CAEM_CORPUS_H
#define CAEM_CORPUS_H

#include <stdint.h>

#include "error.h"

enum corpus_split { CORPUS_TRAIN, CORPUS_VALIDATION, CORPUS_TEST, CORPUS_SPLITS };

extern const char *const corpus_split_names[CORPUS_SPLITS];

#define CORPUS_DEFAULT_LISTS "/var/lib/apt/lists"
#define CORPUS_DEFAULT_WORDNET "/usr/share/wordnet"

/* Returns the 64-bit FNV-1a hash of key's bytes. */
uint64_t corpus_key_hash(const char *key);

/* Returns the split of the example with this key: hash % 100 below 80 is
 * train, below 90 validation, the rest test. */
enum corpus_split corpus_split_of(const char *key);

struct corpus_options {
    const char *out_dir;
    const char *lists_dir;    /* apt's index files, CORPUS_DEFAULT_LISTS by default */
    const char *wordnet_dir;  /* WordNet data files, CORPUS_DEFAULT_WORDNET by default */
    /* When positive, each task keeps at most this many examples, those with
     * the lowest key hashes, before splitting. All records are still read. */
    long max_examples;
};

enum corpus_task { CORPUS_SUMMARIZATION, CORPUS_CLASSIFICATION, CORPUS_QA, CORPUS_TASKS };

extern const char *const corpus_task_names[CORPUS_TASKS];

struct corpus_task_report {
    long counts[CORPUS_SPLITS];
    long records;     /* index records or data-file lines read */
    long malformed;   /* records skipped as malformed */
    char first_malformed[512];  /* the first one's file, record or line, and reason */
};

struct corpus_report {
    struct corpus_task_report tasks[CORPUS_TASKS];
};

/* Counts the index files of one kind ("Translation-en" or "Packages") in
 * lists_dir, compressed or not. Returns -1 when the directory cannot be read. */
int corpus_count_index_files(const char *lists_dir, const char *kind);

/* Builds all three tasks into options->out_dir, creating it when missing.
 * Fails, naming the path, when an index or data file is missing or cannot be
 * read, when apt-helper fails, or when a file cannot be written. */
int corpus_build(const struct corpus_options *options, struct corpus_report *report,
                 struct caem_error *err);

/* The vocabulary trained on the corpus: DIR/spm.model and DIR/spm.vocab. */
#define CORPUS_DEFAULT_VOCAB_SIZE 8000
#define CORPUS_VOCAB_MIN 64
#define CORPUS_VOCAB_MAX 1000000

struct corpus_vocab_options {
    const char *out_dir;   /* a directory corpus_build wrote */
    int vocab_size;        /* pieces, sentinels excluded; an upper bound, see below */
    unsigned seed;         /* spm_train's --random_seed */
};

struct corpus_vocab_report {
    long sentences;  /* non-blank lines of train-split text written for spm_train */
    int pieces;      /* pieces in the trained model */
};

/* Trains a SentencePiece unigram model on the inputs and targets of the three
 * tasks' train splits with `spm_train` (Debian package sentencepiece), in the
 * T5 layout (pad 0, EOS 1, unknown 2, no BOS) with nmt_nfkc normalization,
 * and writes DIR/spm.model, DIR/spm.vocab and spm_train's output in
 * DIR/spm_train.log. spm_train samples 30000 of the lines. The model has
 * vocab_size pieces unless the text is too small for that many, in which case
 * it has fewer; tokenizers add 100 sentinel ids on top. The same text, seed
 * and directory give the same model. Fails when spm_train is not on the PATH,
 * a train split cannot be read, or spm_train fails. */
int corpus_train_vocab(const struct corpus_vocab_options *options,
                       struct corpus_vocab_report *report, struct caem_error *err);

#endif
