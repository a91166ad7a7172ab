/* libFuzzer target for the WordNet data-line parser and the lemma matcher.
 * The input up to its first newline is the data line. Each parsed word is
 * then looked for in the rest of the input. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "wordnet.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *text = malloc(size + 1);
    if (text == NULL)
        return 0;
    memcpy(text, data, size);
    text[size] = '\0';

    char *newline = strchr(text, '\n');
    const char *rest = "";
    if (newline != NULL) {
        *newline = '\0';
        rest = newline + 1;
    }

    struct wordnet_synset synset;
    char reason[256];
    memset(&synset, 0, sizeof synset);
    if (wordnet_parse_line(text, &synset, reason, sizeof reason) == 1) {
        size_t start, length;
        for (int i = 0; i < synset.word_count; i++)
            (void)wordnet_find_lemma(rest, synset.words[i], &start, &length);
        wordnet_synset_free(&synset);
    }

    /* The matcher also takes lemmas that no data line produced. */
    size_t start, length;
    (void)wordnet_find_lemma(rest, text, &start, &length);
    free(text);
    return 0;
}
