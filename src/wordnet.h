/* Parsing of WordNet 3.0 data files (data.noun, data.verb, data.adj,
 * data.adv; format described in the wndb(5) manual page) and a matcher that
 * finds a lemma, or a regularly inflected form of it, in a sentence. */
#ifndef CAEM_WORDNET_H
#define CAEM_WORDNET_H

#include <stddef.h>

/* One synset line. Strings are owned by the struct; wordnet_synset_free
 * releases them. */
struct wordnet_synset {
    long offset;        /* byte offset of the line in its data file, as written */
    char pos;           /* synset type: 'n', 'v', 'a', 's' (adjective satellite) or 'r' */
    char **words;       /* lemmas with '_' turned into spaces and adjective markers
                           such as "(p)" removed */
    int word_count;
    char *definition;   /* the gloss before its first quoted example, trimmed */
    char **examples;    /* the text inside each double-quoted example of the gloss */
    int example_count;
};

/* Parses one line of a data file. Returns 1 for a synset, 0 for a line of the
 * license header (it starts with two spaces) and -1 for a malformed line,
 * with the reason in reason (the field that was wrong). */
int wordnet_parse_line(const char *line, struct wordnet_synset *out, char *reason,
                       size_t reason_size);

void wordnet_synset_free(struct wordnet_synset *synset);

/* Finds the first place in text where lemma occurs as whole words, comparing
 * ASCII letters without regard to case. Each word of the lemma may also carry
 * one of the suffixes -s, -es, -ed, -ing, -er, -est, attached to the word
 * itself, to the word without a final 'e' (bake: baked), with a final 'y'
 * turned into 'i' (carry: carried) or with its last consonant doubled (run:
 * running). Irregular forms (ran, geese) are not found. Returns 1 and sets
 * the byte offset and length of the match, or returns 0. */
int wordnet_find_lemma(const char *text, const char *lemma, size_t *start, size_t *length);

#endif
