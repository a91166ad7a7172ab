/* Python 3 string semantics on UTF-8 text, for metrics that must equal their
 * Python references: str.lower, str.isspace (what str.split() splits on) and
 * the word characters of re's \w and \b.
 *
 * The character data come from libutf8proc. tests/test_metrics.c checks them
 * against Python 3.11 for every code point that its Unicode 14.0 assigns.
 * utf8proc 2.8 reads Unicode 15.0, so the characters new in 15.0 differ:
 * utf8proc gives them a category where Python sees unassigned code points.
 *
 * Bytes that are not valid UTF-8 decode as U+FFFD, one per invalid byte,
 * because a Python str cannot contain them. */
#ifndef CAEM_PYTHON_STR_H
#define CAEM_PYTHON_STR_H

#include <stddef.h>
#include <stdint.h>

#include "error.h"

/* Decodes length bytes of UTF-8 into a malloc'd array of code points and
 * sets *count. Returns NULL and sets err when out of memory. */
int32_t *python_str_decode(const char *text, size_t length, size_t *count,
                           struct caem_error *err);

/* Encodes count code points as a malloc'd, NUL-terminated UTF-8 string.
 * Returns NULL and sets err when out of memory. */
char *python_str_encode(const int32_t *chars, size_t count, struct caem_error *err);

/* Lowercases as Python's str.lower: the full Unicode case mapping, so U+0130
 * becomes "i" followed by U+0307, and a capital sigma that ends a word
 * becomes the final sigma U+03C2. Returns a malloc'd array of code points
 * and sets *out_count, which may exceed count, or NULL when out of memory. */
int32_t *python_str_lower(const int32_t *chars, size_t count, size_t *out_count,
                          struct caem_error *err);

/* 1 when str.isspace is true for the character: str.split() with no
 * separator splits on runs of these. */
int python_char_is_space(int32_t c);

/* 1 for a word character of re's \w and \b on str patterns: a letter, a
 * number (categories L* and N*) or the underscore. */
int python_char_is_word(int32_t c);

/* Unicode's Case_Ignorable property, as Python's final-sigma rule reads it. */
int python_char_is_case_ignorable(int32_t c);

/* Unicode's Cased property. */
int python_char_is_cased(int32_t c);

#endif
