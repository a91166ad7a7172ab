#include "wordnet.h"

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

void wordnet_synset_free(struct wordnet_synset *synset)
{
    for (int i = 0; i < synset->word_count; i++)
        free(synset->words[i]);
    for (int i = 0; i < synset->example_count; i++)
        free(synset->examples[i]);
    free(synset->words);
    free(synset->examples);
    free(synset->definition);
    memset(synset, 0, sizeof *synset);
}

/* Reads the next blank-separated token into token (at most size - 1 bytes)
 * and advances *cursor. Returns 0, or -1 when there is none or it is too long. */
static int next_token(const char **cursor, char *token, size_t size)
{
    const char *p = *cursor;
    while (*p == ' ')
        p++;
    size_t n = strcspn(p, " ");
    if (n == 0 || n >= size)
        return -1;
    memcpy(token, p, n);
    token[n] = '\0';
    *cursor = p + n;
    return 0;
}

static int parse_number(const char *token, int base, long *out)
{
    char *end;
    long v = strtol(token, &end, base);
    if (*end != '\0' || end == token || v < 0)
        return -1;
    *out = v;
    return 0;
}

/* Copies a lemma as written in a data file into readable form. */
static char *lemma_from_token(const char *token)
{
    char *word = strdup(token);
    if (word == NULL)
        return NULL;
    char *marker = strchr(word, '(');
    if (marker != NULL && marker > word)
        *marker = '\0';
    for (char *c = word; *c != '\0'; c++)
        if (*c == '_')
            *c = ' ';
    return word;
}

static char *trim_copy(const char *begin, const char *end)
{
    while (begin < end && (*begin == ' ' || *begin == ';'))
        begin++;
    while (end > begin && (end[-1] == ' ' || end[-1] == ';'))
        end--;
    return strndup(begin, (size_t)(end - begin));
}

/* Splits the gloss into the definition and the quoted examples. A gloss with
 * an unmatched quote keeps the text before it and no examples. */
static int parse_gloss(const char *gloss, struct wordnet_synset *out)
{
    const char *quote = strchr(gloss, '"');
    out->definition = trim_copy(gloss, quote != NULL ? quote : gloss + strlen(gloss));
    if (out->definition == NULL)
        return -1;
    int capacity = 0;
    while (quote != NULL) {
        const char *close = strchr(quote + 1, '"');
        if (close == NULL)
            break;
        if (out->example_count == capacity) {
            capacity = capacity ? capacity * 2 : 4;
            char **grown = realloc(out->examples, sizeof *grown * (size_t)capacity);
            if (grown == NULL)
                return -1;
            out->examples = grown;
        }
        char *example = strndup(quote + 1, (size_t)(close - quote - 1));
        if (example == NULL)
            return -1;
        out->examples[out->example_count++] = example;
        quote = strchr(close + 1, '"');
    }
    return 0;
}

static int fail_line(struct wordnet_synset *out, char *reason, size_t size, const char *why)
{
    snprintf(reason, size, "%s", why);
    wordnet_synset_free(out);
    return -1;
}

int wordnet_parse_line(const char *line, struct wordnet_synset *out, char *reason,
                       size_t reason_size)
{
    memset(out, 0, sizeof *out);
    if (line[0] == ' ')
        return 0;
    char token[512];
    long value;
    const char *p = line;

    /* synset_offset lex_filenum ss_type w_cnt */
    if (next_token(&p, token, sizeof token) != 0 || parse_number(token, 10, &value) != 0)
        return fail_line(out, reason, reason_size, "invalid synset offset");
    out->offset = value;
    if (next_token(&p, token, sizeof token) != 0 || parse_number(token, 10, &value) != 0)
        return fail_line(out, reason, reason_size, "invalid lexicographer file number");
    if (next_token(&p, token, sizeof token) != 0 || strlen(token) != 1 ||
        strchr("nvasr", token[0]) == NULL)
        return fail_line(out, reason, reason_size, "invalid synset type (expected n, v, a, s or r)");
    out->pos = token[0];
    long words;
    /* w_cnt is two hex digits, so a larger count is malformed, not a huge allocation */
    if (next_token(&p, token, sizeof token) != 0 || parse_number(token, 16, &words) != 0 ||
        words == 0 || words > 0xff)
        return fail_line(out, reason, reason_size, "invalid word count");

    /* word lex_id pairs */
    out->words = calloc((size_t)words, sizeof *out->words);
    if (out->words == NULL)
        return fail_line(out, reason, reason_size, "out of memory");
    for (long i = 0; i < words; i++) {
        if (next_token(&p, token, sizeof token) != 0)
            return fail_line(out, reason, reason_size, "fewer words than the word count");
        out->words[out->word_count] = lemma_from_token(token);
        if (out->words[out->word_count] == NULL)
            return fail_line(out, reason, reason_size, "out of memory");
        out->word_count++;
        if (next_token(&p, token, sizeof token) != 0 || parse_number(token, 16, &value) != 0)
            return fail_line(out, reason, reason_size, "invalid lex_id after a word");
    }

    /* the gloss follows the pointers and verb frames, after " | " */
    const char *bar = strstr(p, " | ");
    if (bar == NULL)
        return fail_line(out, reason, reason_size, "no gloss (no ' | ' separator)");
    if (parse_gloss(bar + 3, out) != 0)
        return fail_line(out, reason, reason_size, "out of memory");
    return 1;
}

static int is_word_byte(unsigned char c)
{
    return isalnum(c) || c >= 0x80;
}

/* Returns the length of the stem of text (length n) that equals word, as one
 * of the stems named at wordnet_find_lemma, or 0 when none matches. The
 * suffix is checked by the caller. */
static int match_with_suffix(const char *text, size_t n, const char *word, size_t w)
{
    static const char *const suffixes[] = { "s", "es", "ed", "ing", "er", "est" };
    for (size_t s = 0; s < sizeof suffixes / sizeof suffixes[0]; s++) {
        size_t k = strlen(suffixes[s]);
        if (n <= k || strncasecmp(text + n - k, suffixes[s], k) != 0)
            continue;
        size_t stem = n - k;
        char last = (char)tolower((unsigned char)word[w - 1]);
        if (stem == w && strncasecmp(text, word, w) == 0)
            return 1;
        if (last == 'e' && stem == w - 1 && strncasecmp(text, word, w - 1) == 0)
            return 1;
        if (last == 'y' && stem == w && strncasecmp(text, word, w - 1) == 0 &&
            tolower((unsigned char)text[w - 1]) == 'i')
            return 1;
        if (stem == w + 1 && strncasecmp(text, word, w) == 0 &&
            tolower((unsigned char)text[w]) == last && strchr("aeiouy", last) == NULL)
            return 1;
    }
    return 0;
}

/* Matches one lemma word against the text word starting at text, which must
 * end at a word boundary. Returns the matched length or 0. */
static size_t match_word(const char *text, const char *word, size_t w)
{
    /* an empty word comes from a leading or doubled space in the lemma and matches nothing */
    if (w == 0)
        return 0;
    /* a lemma word may itself contain '-', '\'' or '.', so try it as written first */
    if (strncasecmp(text, word, w) == 0 && !is_word_byte((unsigned char)text[w]))
        return w;
    size_t n = 0;
    while (is_word_byte((unsigned char)text[n]))
        n++;
    if (n > w && match_with_suffix(text, n, word, w))
        return n;
    return 0;
}

/* Matches the whole lemma at text. Returns the matched length or 0. */
static size_t match_lemma_at(const char *text, const char *lemma)
{
    size_t matched = 0;
    const char *word = lemma;
    while (*word != '\0') {
        size_t w = strcspn(word, " ");
        size_t n = match_word(text + matched, word, w);
        if (n == 0)
            return 0;
        matched += n;
        word += w;
        if (*word == ' ') {
            word++;
            if (text[matched] != ' ')
                return 0;
            matched++;
        }
    }
    return matched;
}

int wordnet_find_lemma(const char *text, const char *lemma, size_t *start, size_t *length)
{
    if (lemma[0] == '\0')
        return 0;
    for (size_t i = 0; text[i] != '\0'; i++) {
        if (i > 0 && is_word_byte((unsigned char)text[i - 1]))
            continue;
        size_t n = match_lemma_at(text + i, lemma);
        if (n > 0) {
            *start = i;
            *length = n;
            return 1;
        }
    }
    return 0;
}
