/* A small text task for tests that train through the Lua module: four
 * topics, each with its own words, the topic's name as the target, written
 * as DIR/topics/{train,validation}.jsonl, and its SentencePiece model
 * DIR/spm.model trained with spm_train (Debian package sentencepiece). */
#ifndef CAEM_TESTS_TOPICS_TASK_H
#define CAEM_TESTS_TOPICS_TASK_H

#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "rng.h"

static const char *const topics_names[4] = { "sports", "music", "science", "cooking" };
static const char *const topics_words[4][8] = {
    { "goal", "team", "match", "coach", "league", "score", "player", "season" },
    { "song", "guitar", "album", "band", "concert", "melody", "singer", "drum" },
    { "atom", "theory", "experiment", "cell", "energy", "planet", "physics", "data" },
    { "recipe", "oven", "flour", "butter", "sauce", "garlic", "bake", "salad" },
};
static const char *const topics_common[6] = { "the", "a", "new", "big", "report", "today" };

static inline int topics_write_split(const char *dir, const char *split, int count, uint64_t seed)
{
    char path[512];
    snprintf(path, sizeof path, "%s/topics/%s.jsonl", dir, split);
    FILE *f = fopen(path, "w");
    if (f == NULL)
        return -1;
    for (int i = 0; i < count; i++) {
        int topic = i % 4;
        int length = 6 + (int)(rng_uniform(seed, (uint64_t)i * 32) * 8);
        fprintf(f, "{\"input\": \"");
        for (int j = 0; j < length; j++) {
            float u = rng_uniform(seed, (uint64_t)i * 32 + 1 + j);
            int k = (int)(rng_uniform(seed, (uint64_t)i * 32 + 16 + j) * 8) % 8;
            fprintf(f, "%s%s", j ? " " : "",
                    u < 0.7f ? topics_words[topic][k] : topics_common[k % 6]);
        }
        fprintf(f, "\", \"target\": \"%s\"}\n", topics_names[topic]);
    }
    return fclose(f);
}

/* Trains DIR/spm.model with spm_train on the text of DIR/topics/train.jsonl.
 * Returns 0, or -1 with the reason in `reason`. */
static inline int topics_vocabulary_create(const char *dir, char *reason, size_t reason_size)
{
    char path[512], command[2048];
    if (system("command -v spm_train >/dev/null 2>&1") != 0) {
        snprintf(reason, reason_size,
                 "spm_train is not on the PATH (Debian package sentencepiece)");
        return -1;
    }
    snprintf(command, sizeof command,
             "cut -d'\"' -f4,8 %s/topics/train.jsonl | tr '\"' ' ' > %s/text.txt && "
             "spm_train --input=%s/text.txt --model_prefix=%s/spm --model_type=unigram "
             "--vocab_size=120 --hard_vocab_limit=false --pad_id=0 --eos_id=1 --unk_id=2 "
             "--bos_id=-1 > %s/spm.log 2>&1", dir, dir, dir, dir, dir);
    int rc = system(command);
    snprintf(path, sizeof path, "%s/spm.model", dir);
    if (rc != 0 || access(path, R_OK) != 0) {
        snprintf(reason, reason_size, "spm_train failed (see %s/spm.log)", dir);
        return -1;
    }
    return 0;
}

/* Writes the task (160 train and 24 validation examples) and trains its
 * vocabulary in dir. Returns 0, or -1 with the reason in `reason`. */
static inline int topics_task_create(const char *dir, char *reason, size_t reason_size)
{
    char path[512];
    snprintf(path, sizeof path, "%s/topics", dir);
    if (mkdir(path, 0700) != 0 || topics_write_split(dir, "train", 160, 1) != 0 ||
        topics_write_split(dir, "validation", 24, 2) != 0) {
        snprintf(reason, reason_size, "cannot write the task under %s", dir);
        return -1;
    }
    return topics_vocabulary_create(dir, reason, reason_size);
}

#endif
