#include "python_str.h"

#include <stdlib.h>
#include <utf8proc.h>

#define REPLACEMENT_CHARACTER 0xFFFD
#define CAPITAL_SIGMA 0x03A3
#define SMALL_SIGMA 0x03C3
#define FINAL_SIGMA 0x03C2
#define CAPITAL_I_WITH_DOT 0x0130
#define COMBINING_DOT_ABOVE 0x0307

int32_t *python_str_decode(const char *text, size_t length, size_t *count,
                           struct caem_error *err)
{
    /* A UTF-8 string never has more code points than bytes. */
    int32_t *chars = caem_malloc(length * sizeof *chars, "decoded text", err);
    if (chars == NULL)
        return NULL;
    const utf8proc_uint8_t *bytes = (const utf8proc_uint8_t *)text;
    size_t at = 0, n = 0;
    while (at < length) {
        utf8proc_int32_t c;
        utf8proc_ssize_t used = utf8proc_iterate(bytes + at, (utf8proc_ssize_t)(length - at), &c);
        if (used <= 0) {
            c = REPLACEMENT_CHARACTER;
            used = 1;
        }
        chars[n++] = c;
        at += (size_t)used;
    }
    *count = n;
    return chars;
}

char *python_str_encode(const int32_t *chars, size_t count, struct caem_error *err)
{
    char *text = caem_malloc(count * 4 + 1, "encoded text", err);
    if (text == NULL)
        return NULL;
    size_t at = 0;
    for (size_t i = 0; i < count; i++)
        at += (size_t)utf8proc_encode_char(chars[i], (utf8proc_uint8_t *)text + at);
    text[at] = '\0';
    return text;
}

int python_char_is_space(int32_t c)
{
    /* CPython's _PyUnicode_IsWhitespace: bidirectional class WS, B or S, or
     * category Zs. */
    const utf8proc_property_t *property = utf8proc_get_property(c);
    switch (property->bidi_class) {
    case UTF8PROC_BIDI_CLASS_WS:
    case UTF8PROC_BIDI_CLASS_B:
    case UTF8PROC_BIDI_CLASS_S:
        return 1;
    default:
        return property->category == UTF8PROC_CATEGORY_ZS;
    }
}

int python_char_is_word(int32_t c)
{
    if (c == '_')
        return 1;
    switch (utf8proc_category(c)) {
    case UTF8PROC_CATEGORY_LU:
    case UTF8PROC_CATEGORY_LL:
    case UTF8PROC_CATEGORY_LT:
    case UTF8PROC_CATEGORY_LM:
    case UTF8PROC_CATEGORY_LO:
    case UTF8PROC_CATEGORY_ND:
    case UTF8PROC_CATEGORY_NL:
    case UTF8PROC_CATEGORY_NO:
        return 1;
    default:
        return 0;
    }
}

int python_char_is_case_ignorable(int32_t c)
{
    switch (utf8proc_category(c)) {
    case UTF8PROC_CATEGORY_MN:
    case UTF8PROC_CATEGORY_ME:
    case UTF8PROC_CATEGORY_CF:
    case UTF8PROC_CATEGORY_LM:
    case UTF8PROC_CATEGORY_SK:
        return 1;
    default:
        break;
    }
    /* Word_Break MidLetter, MidNumLet and Single_Quote, which utf8proc does
     * not record. */
    switch (c) {
    case 0x0027: case 0x002E: case 0x003A: case 0x00B7: case 0x0387: case 0x055F:
    case 0x05F4: case 0x2018: case 0x2019: case 0x2024: case 0x2027: case 0xFE13:
    case 0xFE52: case 0xFE55: case 0xFF07: case 0xFF0E: case 0xFF1A:
        return 1;
    default:
        return 0;
    }
}

int python_char_is_cased(int32_t c)
{
    utf8proc_category_t category = utf8proc_category(c);
    if (category == UTF8PROC_CATEGORY_LU || category == UTF8PROC_CATEGORY_LL ||
        category == UTF8PROC_CATEGORY_LT)
        return 1;
    if (utf8proc_tolower(c) != c || utf8proc_toupper(c) != c)
        return 1;
    /* Other_Lowercase and Other_Uppercase characters without a case mapping.
     * Most are modifier letters (Lm), which are case-ignorable as well, so
     * the final-sigma rule skips them before it checks for a cased
     * character. These are the rest: the ordinal indicators and the squared,
     * circled and negative circled Latin capitals. */
    if (c == 0x00AA || c == 0x00BA)
        return 1;
    if ((c >= 0x1F130 && c <= 0x1F149) || (c >= 0x1F150 && c <= 0x1F169) ||
        (c >= 0x1F170 && c <= 0x1F189))
        return 1;
    return 0;
}

/* The Final_Sigma condition of Unicode's SpecialCasing.txt, as CPython
 * checks it: a cased character before the sigma and none after it, skipping
 * case-ignorable characters both ways. */
static int sigma_is_final(const int32_t *chars, size_t count, size_t at)
{
    size_t j = at;
    while (j > 0 && python_char_is_case_ignorable(chars[j - 1]))
        j--;
    if (j == 0 || !python_char_is_cased(chars[j - 1]))
        return 0;
    j = at + 1;
    while (j < count && python_char_is_case_ignorable(chars[j]))
        j++;
    return j == count || !python_char_is_cased(chars[j]);
}

int32_t *python_str_lower(const int32_t *chars, size_t count, size_t *out_count,
                          struct caem_error *err)
{
    /* U+0130 is the only character whose full lowercase mapping has two
     * code points, so 2 * count is always enough. */
    int32_t *lower = caem_malloc(2 * count * sizeof *lower, "lowercased text", err);
    if (lower == NULL)
        return NULL;
    size_t n = 0;
    for (size_t i = 0; i < count; i++) {
        int32_t c = chars[i];
        if (c == CAPITAL_I_WITH_DOT) {
            lower[n++] = 'i';
            lower[n++] = COMBINING_DOT_ABOVE;
        } else if (c == CAPITAL_SIGMA) {
            lower[n++] = sigma_is_final(chars, count, i) ? FINAL_SIGMA : SMALL_SIGMA;
        } else {
            lower[n++] = utf8proc_tolower(c);
        }
    }
    *out_count = n;
    return lower;
}
