/* SentencePiece unigram tokenizer: model file reader, normalizer, Viterbi
 * encoder and decoder. The behaviour follows sentencepiece 0.1.97
 * (normalizer.cc, unigram_model.cc EncodeOptimized, sentencepiece_processor.cc)
 * so that ids match `spm_encode`; comments mark the places where matching it
 * depends on a detail. */
#include "tokenizer.h"

#include <ctype.h>
#include <float.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* U+2581 LOWER ONE EIGHTH BLOCK, which stands for a space inside pieces. */
static const char SPACE_SYMBOL[] = "\xe2\x96\x81";
enum { SPACE_SYMBOL_LEN = 3 };
static const char REPLACEMENT_CHAR[] = "\xef\xbf\xbd";
static const char DEFAULT_UNK_SURFACE[] = " \xe2\x81\x87 ";

/* sentencepiece stores at most this many prefix matches of the character map
 * per position (Normalizer::kMaxTrieResultsSize) and picks the longest. */
enum { CHARSMAP_MAX_MATCHES = 32 };

/* Unknown characters score this much below the lowest normal piece. */
static const float UNK_PENALTY = 10.0f;

struct piece {
    char *text;
    size_t len;
    float score;
    int type;
};

/* A byte trie over the pieces that Viterbi may use (normal, user-defined and
 * unused, as in sentencepiece). Children are found through one open-address
 * hash table keyed by (parent node, byte). */
struct piece_trie {
    int32_t *value;        /* per node: piece id ending here, or -1 */
    size_t nodes, node_cap;
    uint64_t *slot_key;    /* parent << 8 | byte, plus 1 so that 0 marks empty */
    uint32_t *slot_child;
    size_t slot_cap;       /* power of two */
};

struct tokenizer {
    char *name;
    struct piece *pieces;
    int piece_count;           /* pieces in the model file, sentinels excluded */
    struct piece_trie trie;
    int has_user_defined;
    int32_t byte_ids[256];

    /* trainer_spec */
    int model_type;
    struct tokenizer_special_ids special;
    int byte_fallback;
    int treat_whitespace_as_suffix;
    char *unk_surface;

    /* normalizer_spec */
    char *normalizer_name;
    int add_dummy_prefix, remove_extra_whitespaces, escape_whitespaces;
    uint8_t *charsmap;          /* whole precompiled_charsmap blob */
    size_t charsmap_size;
    const uint8_t *trie_units;  /* darts-clone double array, 4-byte units */
    size_t trie_unit_count;
    const char *replacements;   /* NUL-separated replacement strings */
    size_t replacements_size;
    int has_denormalizer;

    float min_score, max_score;
    int32_t unk_id;             /* the UNKNOWN piece */

    /* "<extra_id_i>" for sentinel i, whose id is piece_count + 99 - i */
    char sentinel_text[TOKENIZER_SENTINELS][24];
};

/* ---- growable byte buffer ---- */

struct buffer {
    char *data;
    size_t len, cap;
};

static int buffer_reserve(struct buffer *b, size_t extra, struct caem_error *err)
{
    if (b->len + extra + 1 <= b->cap)
        return 0;
    size_t cap = b->cap ? b->cap : 64;
    while (cap < b->len + extra + 1)
        cap *= 2;
    char *data = realloc(b->data, cap);
    if (data == NULL)
        return caem_fail(err, "out of memory growing a text buffer to %zu bytes", cap);
    b->data = data;
    b->cap = cap;
    return 0;
}

static int buffer_append(struct buffer *b, const void *bytes, size_t n, struct caem_error *err)
{
    if (buffer_reserve(b, n, err) != 0)
        return -1;
    memcpy(b->data + b->len, bytes, n);
    b->len += n;
    b->data[b->len] = '\0';
    return 0;
}

/* ---- UTF-8, with sentencepiece's validity rules (util.cc DecodeUTF8) ---- */

/* Length of the character that starts with byte c, from its lead byte alone. */
static size_t utf8_char_len(uint8_t c)
{
    static const uint8_t len[16] = { 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 2, 2, 3, 4 };
    return len[c >> 4];
}

static int is_trail(uint8_t c) { return (c & 0xC0) == 0x80; }

static int is_valid_codepoint(uint32_t c)
{
    return c < 0xD800 || (c >= 0xE000 && c <= 0x10FFFF);
}

/* Returns the byte length of a valid character at s, or 0 when the bytes are
 * not valid UTF-8 (overlong forms, surrogates and truncated sequences are
 * invalid). */
static size_t utf8_valid_len(const uint8_t *s, size_t n)
{
    uint32_t cp;
    if (s[0] < 0x80)
        return 1;
    if (n >= 2 && (s[0] & 0xE0) == 0xC0 && is_trail(s[1])) {
        cp = ((uint32_t)(s[0] & 0x1F) << 6) | (s[1] & 0x3F);
        return cp >= 0x80 && is_valid_codepoint(cp) ? 2 : 0;
    }
    if (n >= 3 && (s[0] & 0xF0) == 0xE0 && is_trail(s[1]) && is_trail(s[2])) {
        cp = ((uint32_t)(s[0] & 0x0F) << 12) | ((uint32_t)(s[1] & 0x3F) << 6) | (s[2] & 0x3F);
        return cp >= 0x800 && is_valid_codepoint(cp) ? 3 : 0;
    }
    if (n >= 4 && (s[0] & 0xF8) == 0xF0 && is_trail(s[1]) && is_trail(s[2]) && is_trail(s[3])) {
        cp = ((uint32_t)(s[0] & 0x07) << 18) | ((uint32_t)(s[1] & 0x3F) << 12) |
             ((uint32_t)(s[2] & 0x3F) << 6) | (s[3] & 0x3F);
        return cp >= 0x10000 && is_valid_codepoint(cp) ? 4 : 0;
    }
    return 0;
}

/* ---- piece trie ---- */

static uint64_t trie_hash(uint64_t key)
{
    key ^= key >> 33;
    key *= 0xff51afd7ed558ccdULL;
    key ^= key >> 33;
    return key;
}

/* Returns the child of `node` along `byte`, or -1 when there is none. */
static int64_t trie_child(const struct piece_trie *trie, size_t node, uint8_t byte)
{
    uint64_t key = (((uint64_t)node << 8) | byte) + 1;
    if (trie->slot_cap == 0)
        return -1;
    size_t mask = trie->slot_cap - 1;
    for (size_t i = trie_hash(key) & mask;; i = (i + 1) & mask) {
        if (trie->slot_key[i] == key)
            return trie->slot_child[i];
        if (trie->slot_key[i] == 0)
            return -1;
    }
}

static int trie_grow_slots(struct piece_trie *trie, struct caem_error *err)
{
    size_t cap = trie->slot_cap ? trie->slot_cap * 2 : 1024;
    uint64_t *keys = caem_calloc(cap, sizeof *keys, "tokenizer trie slots", err);
    uint32_t *children = caem_calloc(cap, sizeof *children, "tokenizer trie slots", err);
    if (keys == NULL || children == NULL) {
        free(keys);
        free(children);
        return -1;
    }
    for (size_t i = 0; i < trie->slot_cap; i++) {
        if (trie->slot_key[i] == 0)
            continue;
        size_t j = trie_hash(trie->slot_key[i]) & (cap - 1);
        while (keys[j] != 0)
            j = (j + 1) & (cap - 1);
        keys[j] = trie->slot_key[i];
        children[j] = trie->slot_child[i];
    }
    free(trie->slot_key);
    free(trie->slot_child);
    trie->slot_key = keys;
    trie->slot_child = children;
    trie->slot_cap = cap;
    return 0;
}

static int64_t trie_add_node(struct piece_trie *trie, struct caem_error *err)
{
    if (trie->nodes == trie->node_cap) {
        size_t cap = trie->node_cap ? trie->node_cap * 2 : 1024;
        int32_t *value = realloc(trie->value, cap * sizeof *value);
        if (value == NULL)
            return caem_fail(err, "out of memory growing the tokenizer trie to %zu nodes", cap);
        trie->value = value;
        trie->node_cap = cap;
    }
    trie->value[trie->nodes] = -1;
    return (int64_t)trie->nodes++;
}

/* Inserts a piece; returns the id already stored when the piece is a
 * duplicate, -1 on allocation failure, and `id` otherwise. */
static int64_t trie_insert(struct piece_trie *trie, const char *text, size_t len, int32_t id,
                           struct caem_error *err)
{
    if (trie->nodes == 0 && trie_add_node(trie, err) < 0)
        return -1;
    size_t node = 0;
    for (size_t i = 0; i < len; i++) {
        uint8_t byte = (uint8_t)text[i];
        int64_t child = trie_child(trie, node, byte);
        if (child < 0) {
            if ((trie->nodes + 1) * 2 > trie->slot_cap && trie_grow_slots(trie, err) != 0)
                return -1;
            child = trie_add_node(trie, err);
            if (child < 0)
                return -1;
            uint64_t key = (((uint64_t)node << 8) | byte) + 1;
            size_t mask = trie->slot_cap - 1, j = trie_hash(key) & mask;
            while (trie->slot_key[j] != 0)
                j = (j + 1) & mask;
            trie->slot_key[j] = key;
            trie->slot_child[j] = (uint32_t)child;
        }
        node = (size_t)child;
    }
    if (trie->value[node] >= 0)
        return trie->value[node];
    trie->value[node] = id;
    return id;
}

static void trie_free(struct piece_trie *trie)
{
    free(trie->value);
    free(trie->slot_key);
    free(trie->slot_child);
}

/* ---- protobuf wire format ---- */

enum { WIRE_VARINT = 0, WIRE_FIXED64 = 1, WIRE_LEN = 2, WIRE_FIXED32 = 5 };

/* A view of one message; offsets in messages are relative to the file. */
struct pb_reader {
    const uint8_t *data;  /* the whole file */
    size_t pos, end;
    const char *name;
};

struct pb_field {
    uint32_t number;
    int wire_type;
    size_t offset;        /* of the tag */
    uint64_t varint;      /* WIRE_VARINT, WIRE_FIXED64 and WIRE_FIXED32 */
    size_t start, len;    /* WIRE_LEN payload */
};

static int pb_read_varint(struct pb_reader *r, uint64_t *value, struct caem_error *err)
{
    size_t start = r->pos;
    uint64_t v = 0;
    for (int shift = 0; shift < 70; shift += 7) {
        if (r->pos >= r->end)
            return caem_fail(err, "%s: truncated varint at byte offset %zu", r->name, start);
        uint8_t byte = r->data[r->pos++];
        v |= (uint64_t)(byte & 0x7F) << shift;
        if ((byte & 0x80) == 0) {
            *value = v;
            return 0;
        }
    }
    return caem_fail(err, "%s: varint longer than 10 bytes at byte offset %zu", r->name, start);
}

/* Reads the next field; returns 1 when one was read, 0 at the end of the
 * message and -1 on a malformed field. */
static int pb_next(struct pb_reader *r, struct pb_field *f, struct caem_error *err)
{
    if (r->pos >= r->end)
        return 0;
    uint64_t tag;
    f->offset = r->pos;
    if (pb_read_varint(r, &tag, err) != 0)
        return -1;
    f->number = (uint32_t)(tag >> 3);
    f->wire_type = (int)(tag & 7);
    if (f->number == 0 || tag >> 32 != 0)
        return caem_fail(err, "%s: invalid field number %llu at byte offset %zu", r->name,
                         (unsigned long long)(tag >> 3), f->offset);
    switch (f->wire_type) {
    case WIRE_VARINT:
        return pb_read_varint(r, &f->varint, err) == 0 ? 1 : -1;
    case WIRE_FIXED64:
    case WIRE_FIXED32: {
        size_t n = f->wire_type == WIRE_FIXED64 ? 8 : 4;
        if (r->end - r->pos < n)
            return caem_fail(err, "%s: field %u truncated at byte offset %zu (needs %zu bytes)",
                             r->name, f->number, f->offset, n);
        f->varint = 0;
        for (size_t i = 0; i < n; i++)
            f->varint |= (uint64_t)r->data[r->pos + i] << (8 * i);
        r->pos += n;
        return 1;
    }
    case WIRE_LEN: {
        uint64_t len;
        if (pb_read_varint(r, &len, err) != 0)
            return -1;
        if (len > r->end - r->pos)
            return caem_fail(err,
                             "%s: field %u at byte offset %zu declares %llu bytes but only %zu "
                             "remain (truncated file?)",
                             r->name, f->number, f->offset, (unsigned long long)len,
                             r->end - r->pos);
        f->start = r->pos;
        f->len = (size_t)len;
        r->pos += (size_t)len;
        return 1;
    }
    default:
        return caem_fail(err, "%s: unsupported wire type %d for field %u at byte offset %zu",
                         r->name, f->wire_type, f->number, f->offset);
    }
}

static int pb_expect(const struct pb_reader *r, const struct pb_field *f, int wire_type,
                     const char *field_name, struct caem_error *err)
{
    if (f->wire_type == wire_type)
        return 0;
    return caem_fail(err, "%s: field %s (%u) at byte offset %zu has wire type %d, expected %d",
                     r->name, field_name, f->number, f->offset, f->wire_type, wire_type);
}

static struct pb_reader pb_sub(const struct pb_reader *r, const struct pb_field *f)
{
    struct pb_reader sub = { r->data, f->start, f->start + f->len, r->name };
    return sub;
}

static float pb_float(const struct pb_field *f)
{
    uint32_t bits = (uint32_t)f->varint;
    float value;
    memcpy(&value, &bits, sizeof value);
    return value;
}

static char *pb_strdup(const struct pb_reader *r, const struct pb_field *f,
                       struct caem_error *err)
{
    char *s = caem_malloc(f->len + 1, "model string", err);
    if (s != NULL) {
        memcpy(s, r->data + f->start, f->len);
        s[f->len] = '\0';
    }
    return s;
}

/* ---- model file ---- */

static int parse_piece(struct tokenizer *t, struct pb_reader *r, struct piece *p,
                       struct caem_error *err)
{
    struct pb_field f;
    int rc;
    size_t start = r->pos;
    p->type = TOKENIZER_PIECE_NORMAL;
    while ((rc = pb_next(r, &f, err)) == 1) {
        if (f.number == 1) {
            if (pb_expect(r, &f, WIRE_LEN, "SentencePiece.piece", err) != 0)
                return -1;
            free(p->text);
            if ((p->text = pb_strdup(r, &f, err)) == NULL)
                return -1;
            p->len = f.len;
        } else if (f.number == 2) {
            if (pb_expect(r, &f, WIRE_FIXED32, "SentencePiece.score", err) != 0)
                return -1;
            p->score = pb_float(&f);
        } else if (f.number == 3) {
            if (pb_expect(r, &f, WIRE_VARINT, "SentencePiece.type", err) != 0)
                return -1;
            p->type = (int)f.varint;
            if (p->type < TOKENIZER_PIECE_NORMAL || p->type > TOKENIZER_PIECE_BYTE)
                return caem_fail(err, "%s: piece at byte offset %zu has invalid type %llu",
                                 t->name, start, (unsigned long long)f.varint);
        }
    }
    if (rc < 0)
        return -1;
    if (p->text == NULL || p->len == 0)
        return caem_fail(err, "%s: piece %d at byte offset %zu is empty", t->name,
                         t->piece_count, start);
    return 0;
}

static int parse_trainer_spec(struct tokenizer *t, struct pb_reader *r, struct caem_error *err)
{
    struct pb_field f;
    int rc;
    while ((rc = pb_next(r, &f, err)) == 1) {
        int32_t *special = NULL;
        switch (f.number) {
        case 3:
            if (pb_expect(r, &f, WIRE_VARINT, "TrainerSpec.model_type", err) != 0)
                return -1;
            t->model_type = (int)f.varint;
            break;
        case 24:
            if (pb_expect(r, &f, WIRE_VARINT, "TrainerSpec.treat_whitespace_as_suffix",
                          err) != 0)
                return -1;
            t->treat_whitespace_as_suffix = f.varint != 0;
            break;
        case 35:
            if (pb_expect(r, &f, WIRE_VARINT, "TrainerSpec.byte_fallback", err) != 0)
                return -1;
            t->byte_fallback = f.varint != 0;
            break;
        case 40: special = &t->special.unk_id; break;
        case 41: special = &t->special.bos_id; break;
        case 42: special = &t->special.eos_id; break;
        case 43: special = &t->special.pad_id; break;
        case 44:
            if (pb_expect(r, &f, WIRE_LEN, "TrainerSpec.unk_surface", err) != 0)
                return -1;
            free(t->unk_surface);
            if ((t->unk_surface = pb_strdup(r, &f, err)) == NULL)
                return -1;
            break;
        default:
            break;
        }
        if (special != NULL) {
            if (pb_expect(r, &f, WIRE_VARINT, "TrainerSpec special id", err) != 0)
                return -1;
            /* int32 values are sign-extended to 64 bits on the wire */
            *special = (int32_t)(uint32_t)f.varint;
        }
    }
    return rc;
}

static int parse_normalizer_spec(struct tokenizer *t, struct pb_reader *r,
                                 struct caem_error *err)
{
    struct pb_field f;
    int rc;
    while ((rc = pb_next(r, &f, err)) == 1) {
        int *flag = NULL;
        if (f.number == 1) {
            if (pb_expect(r, &f, WIRE_LEN, "NormalizerSpec.name", err) != 0)
                return -1;
            free(t->normalizer_name);
            if ((t->normalizer_name = pb_strdup(r, &f, err)) == NULL)
                return -1;
        } else if (f.number == 2) {
            if (pb_expect(r, &f, WIRE_LEN, "NormalizerSpec.precompiled_charsmap", err) != 0)
                return -1;
            free(t->charsmap);
            t->charsmap = caem_malloc(f.len + 1, "precompiled_charsmap", err);
            if (t->charsmap == NULL)
                return -1;
            memcpy(t->charsmap, r->data + f.start, f.len);
            t->charsmap_size = f.len;
        } else if (f.number == 3) {
            flag = &t->add_dummy_prefix;
        } else if (f.number == 4) {
            flag = &t->remove_extra_whitespaces;
        } else if (f.number == 5) {
            flag = &t->escape_whitespaces;
        }
        if (flag != NULL) {
            if (pb_expect(r, &f, WIRE_VARINT, "NormalizerSpec flag", err) != 0)
                return -1;
            *flag = f.varint != 0;
        }
    }
    return rc;
}

/* Records whether a denormalizer_spec contains rules, which decoding does
 * not apply. */
static int parse_denormalizer_spec(struct tokenizer *t, struct pb_reader *r,
                                   struct caem_error *err)
{
    struct pb_field f;
    int rc;
    while ((rc = pb_next(r, &f, err)) == 1) {
        if (f.number == 2 && f.wire_type == WIRE_LEN && f.len > 0)
            t->has_denormalizer = 1;
    }
    return rc;
}

static int add_piece(struct tokenizer *t, size_t *cap, struct pb_reader *sub,
                     struct caem_error *err)
{
    if ((size_t)t->piece_count == *cap) {
        size_t n = *cap ? *cap * 2 : 1024;
        struct piece *pieces = realloc(t->pieces, n * sizeof *pieces);
        if (pieces == NULL)
            return caem_fail(err, "%s: out of memory for %zu pieces", t->name, n);
        t->pieces = pieces;
        *cap = n;
    }
    struct piece *p = &t->pieces[t->piece_count];
    memset(p, 0, sizeof *p);
    t->piece_count++;
    return parse_piece(t, sub, p, err);
}

static int parse_model(struct tokenizer *t, struct pb_reader *r, struct caem_error *err)
{
    struct pb_field f;
    int rc;
    size_t cap = 0;
    while ((rc = pb_next(r, &f, err)) == 1) {
        if (f.number < 1 || f.number > 5 || f.number == 4)
            continue;
        static const char *names[] = { "", "ModelProto.pieces", "ModelProto.trainer_spec",
                                       "ModelProto.normalizer_spec", "",
                                       "ModelProto.denormalizer_spec" };
        if (pb_expect(r, &f, WIRE_LEN, names[f.number], err) != 0)
            return -1;
        struct pb_reader sub = pb_sub(r, &f);
        if (f.number == 1 && add_piece(t, &cap, &sub, err) != 0)
            return -1;
        if (f.number == 2 && parse_trainer_spec(t, &sub, err) != 0)
            return -1;
        if (f.number == 3 && parse_normalizer_spec(t, &sub, err) != 0)
            return -1;
        if (f.number == 5 && parse_denormalizer_spec(t, &sub, err) != 0)
            return -1;
    }
    return rc;
}

/* Splits precompiled_charsmap into its double-array trie and replacement
 * strings. Layout: a little-endian uint32 trie size in bytes, the trie as
 * 4-byte units, then NUL-terminated replacement strings. */
static int charsmap_init(struct tokenizer *t, struct caem_error *err)
{
    if (t->charsmap_size == 0)
        return 0;
    const uint8_t *blob = t->charsmap;
    if (t->charsmap_size <= 4)
        return caem_fail(err, "%s: precompiled_charsmap is %zu bytes, too short for its header",
                         t->name, t->charsmap_size);
    uint32_t trie_size = (uint32_t)blob[0] | (uint32_t)blob[1] << 8 | (uint32_t)blob[2] << 16 |
                         (uint32_t)blob[3] << 24;
    if ((size_t)trie_size >= t->charsmap_size - 4 + 1 || trie_size % 4 != 0)
        return caem_fail(err,
                         "%s: precompiled_charsmap declares a %u-byte trie but holds %zu bytes",
                         t->name, trie_size, t->charsmap_size - 4);
    t->trie_units = blob + 4;
    t->trie_unit_count = trie_size / 4;
    t->replacements = (const char *)blob + 4 + trie_size;
    t->replacements_size = t->charsmap_size - 4 - trie_size;
    /* charsmap was allocated one byte longer, so every string ends in NUL */
    t->charsmap[t->charsmap_size] = '\0';
    return 0;
}

/* Checks the pieces and builds the lookup structures the encoder needs. */
static int pieces_init(struct tokenizer *t, struct caem_error *err)
{
    if (t->piece_count == 0)
        return caem_fail(err, "%s: the model has no pieces", t->name);
    t->unk_id = -1;
    /* Initial values as sentencepiece's unigram model sets them. FLT_MIN is
     * the smallest positive float, so with the usual negative scores the
     * maximum stays near 0; user-defined pieces score from it. */
    t->min_score = FLT_MAX;
    t->max_score = FLT_MIN;
    for (int i = 0; i < 256; i++)
        t->byte_ids[i] = -1;
    for (int id = 0; id < t->piece_count; id++) {
        const struct piece *p = &t->pieces[id];
        if (p->type == TOKENIZER_PIECE_NORMAL) {
            t->min_score = p->score < t->min_score ? p->score : t->min_score;
            t->max_score = p->score > t->max_score ? p->score : t->max_score;
        }
        if (p->type == TOKENIZER_PIECE_UNKNOWN) {
            if (t->unk_id >= 0)
                return caem_fail(err, "%s: pieces %d and %d are both of type UNKNOWN", t->name,
                                 t->unk_id, id);
            t->unk_id = id;
        }
        if (p->type == TOKENIZER_PIECE_USER_DEFINED)
            t->has_user_defined = 1;
        if (p->type == TOKENIZER_PIECE_BYTE) {
            if (!t->byte_fallback)
                return caem_fail(err, "%s: byte piece '%s' (id %d) in a model without "
                                 "byte_fallback", t->name, p->text, id);
            /* exactly "<0x" two hex digits ">": sscanf's %X would accept a sign */
            const char *s = p->text;
            if (p->len != 6 || strncmp(s, "<0x", 3) != 0 || !isxdigit((unsigned char)s[3]) ||
                !isxdigit((unsigned char)s[4]) || s[5] != '>')
                return caem_fail(err, "%s: byte piece %d is '%s', expected <0xNN>", t->name, id,
                                 p->text);
            char hex[3] = { s[3], s[4], '\0' };
            t->byte_ids[strtoul(hex, NULL, 16)] = id;
        }
        int in_trie = p->type == TOKENIZER_PIECE_NORMAL ||
                      p->type == TOKENIZER_PIECE_USER_DEFINED ||
                      p->type == TOKENIZER_PIECE_UNUSED;
        if (!in_trie)
            continue;
        int64_t stored = trie_insert(&t->trie, p->text, p->len, id, err);
        if (stored < 0)
            return -1;
        if (stored != id)
            return caem_fail(err, "%s: piece '%s' appears twice (ids %lld and %d)", t->name,
                             p->text, (long long)stored, id);
    }
    if (t->unk_id < 0)
        return caem_fail(err, "%s: the model has no piece of type UNKNOWN", t->name);
    /* sentencepiece maps a missing byte piece to the unknown id */
    for (int i = 0; i < 256 && t->byte_fallback; i++)
        if (t->byte_ids[i] < 0)
            t->byte_ids[i] = t->unk_id;
    return 0;
}

int tokenizer_load_buffer(struct tokenizer **out, const void *data, size_t size,
                          const char *name, struct caem_error *err)
{
    *out = NULL;
    struct tokenizer *t = caem_calloc(1, sizeof *t, "tokenizer", err);
    if (t == NULL)
        return -1;
    t->name = strdup(name);
    if (t->name == NULL) {
        free(t);
        return caem_fail(err, "%s: out of memory", name);
    }
    /* proto2 defaults */
    t->model_type = 1;
    t->special = (struct tokenizer_special_ids){ 0, 1, 2, -1 };
    t->add_dummy_prefix = t->remove_extra_whitespaces = t->escape_whitespaces = 1;

    struct pb_reader r = { data, 0, size, t->name };
    if (parse_model(t, &r, err) != 0)
        goto fail;
    if (t->model_type != 1) {
        static const char *types[] = { "", "UNIGRAM", "BPE", "WORD", "CHAR" };
        caem_fail(err, "%s: model_type is %s (%d), but only UNIGRAM models are supported; "
                  "train with --model_type=unigram", t->name,
                  t->model_type >= 1 && t->model_type <= 4 ? types[t->model_type] : "unknown",
                  t->model_type);
        goto fail;
    }
    if (charsmap_init(t, err) != 0 || pieces_init(t, err) != 0)
        goto fail;
    for (int i = 0; i < TOKENIZER_SENTINELS; i++)
        snprintf(t->sentinel_text[i], sizeof t->sentinel_text[i], "<extra_id_%d>", i);
    *out = t;
    return 0;

fail:
    tokenizer_free(t);
    return -1;
}

int tokenizer_load(struct tokenizer **out, const char *path, struct caem_error *err)
{
    *out = NULL;
    FILE *fp = fopen(path, "rb");
    if (fp == NULL)
        return caem_fail(err, "%s: cannot open tokenizer model", path);
    struct buffer b = { 0 };
    char chunk[65536];
    size_t n;
    while ((n = fread(chunk, 1, sizeof chunk, fp)) > 0) {
        if (buffer_append(&b, chunk, n, err) != 0) {
            fclose(fp);
            free(b.data);
            return caem_fail_prefix(err, "%s", path);
        }
    }
    int read_error = ferror(fp);
    fclose(fp);
    if (read_error) {
        free(b.data);
        return caem_fail(err, "%s: read error", path);
    }
    int rc = tokenizer_load_buffer(out, b.data, b.len, path, err);
    free(b.data);
    return rc;
}

void tokenizer_free(struct tokenizer *t)
{
    if (t == NULL)
        return;
    for (int i = 0; i < t->piece_count; i++)
        free(t->pieces[i].text);
    free(t->pieces);
    trie_free(&t->trie);
    free(t->unk_surface);
    free(t->normalizer_name);
    free(t->charsmap);
    free(t->name);
    free(t);
}

int tokenizer_vocab_size(const struct tokenizer *t)
{
    return t->piece_count + TOKENIZER_SENTINELS;
}

int tokenizer_piece_count(const struct tokenizer *t) { return t->piece_count; }

int32_t tokenizer_sentinel_id(const struct tokenizer *t, int i)
{
    if (i < 0 || i >= TOKENIZER_SENTINELS)
        return -1;
    return t->piece_count + TOKENIZER_SENTINELS - 1 - i;
}

int tokenizer_sentinel_index(const struct tokenizer *t, int32_t id)
{
    if (id < t->piece_count || id >= t->piece_count + TOKENIZER_SENTINELS)
        return -1;
    return t->piece_count + TOKENIZER_SENTINELS - 1 - id;
}

const char *tokenizer_piece(const struct tokenizer *t, int32_t id)
{
    int sentinel = tokenizer_sentinel_index(t, id);
    if (sentinel >= 0)
        return t->sentinel_text[sentinel];
    return id >= 0 && id < t->piece_count ? t->pieces[id].text : NULL;
}

int tokenizer_piece_type(const struct tokenizer *t, int32_t id)
{
    if (tokenizer_sentinel_index(t, id) >= 0)
        return TOKENIZER_PIECE_SENTINEL;
    return id >= 0 && id < t->piece_count ? t->pieces[id].type : -1;
}

float tokenizer_piece_score(const struct tokenizer *t, int32_t id)
{
    return id >= 0 && id < t->piece_count ? t->pieces[id].score : 0.0f;
}

struct tokenizer_special_ids tokenizer_special_ids(const struct tokenizer *t)
{
    return t->special;
}

/* ---- normalizer ---- */

/* Finds the longest character-map rule that is a prefix of s, walking the
 * darts-clone double array. Returns its length in bytes (0 when none) and
 * sets *replacement. In a unit, bits 0-7 are the label, bit 8 marks a leaf
 * child, bit 9 scales the offset and bits 10-31 are the offset. A leaf
 * unit's low 31 bits are an offset into the replacement strings. */
static size_t charsmap_match(const struct tokenizer *t, const uint8_t *s, size_t n,
                             const char **replacement)
{
    const uint8_t *units = t->trie_units;
    size_t count = t->trie_unit_count, best_len = 0, matches = 0;
    uint32_t best_value = 0;
#define UNIT(i) ((uint32_t)units[4 * (i)] | (uint32_t)units[4 * (i) + 1] << 8 | \
                 (uint32_t)units[4 * (i) + 2] << 16 | (uint32_t)units[4 * (i) + 3] << 24)
#define UNIT_OFFSET(u) (((u) >> 10) << (((u) & (1u << 9)) >> 6))
    if (count == 0)
        return 0;
    uint32_t unit = UNIT(0);
    size_t node = UNIT_OFFSET(unit);
    for (size_t i = 0; i < n; i++) {
        node ^= s[i];
        if (node >= count)
            break;
        unit = UNIT(node);
        if ((unit & ((1u << 31) | 0xFF)) != s[i])
            break;
        node ^= UNIT_OFFSET(unit);
        if ((unit >> 8) & 1) {
            if (node >= count)
                break;
            if (matches < CHARSMAP_MAX_MATCHES) {
                best_value = UNIT(node) & ((1u << 31) - 1);
                best_len = i + 1;
            }
            matches++;
        }
    }
#undef UNIT
#undef UNIT_OFFSET
    if (best_len > 0 && best_value >= t->replacements_size)
        best_len = 0;  /* a rule pointing outside the blob is ignored */
    if (best_len > 0)
        *replacement = t->replacements + best_value;
    return best_len;
}

/* Returns the length of the longest user-defined piece that is a prefix of
 * s, or 0 when none is. */
static size_t user_defined_match(const struct tokenizer *t, const uint8_t *s, size_t n)
{
    size_t node = 0, best = 0;
    for (size_t i = 0; i < n; i++) {
        int64_t child = trie_child(&t->trie, node, s[i]);
        if (child < 0)
            break;
        node = (size_t)child;
        int32_t id = t->trie.value[node];
        if (id >= 0 && t->pieces[id].type == TOKENIZER_PIECE_USER_DEFINED)
            best = i + 1;
    }
    return best;
}

/* Normalizes the character (or rule match) at the start of s: sets *out to
 * its replacement of *out_len bytes and returns the input bytes consumed. */
static size_t normalize_prefix(const struct tokenizer *t, const uint8_t *s, size_t n,
                               const char **out, size_t *out_len)
{
    /* User-defined pieces pass through unnormalized.
     * NOTE: user-defined pieces and treat_whitespace_as_suffix are checked only
     * against hand-computed cases, never against spm_encode. */
    if (t->has_user_defined) {
        size_t len = user_defined_match(t, s, n);
        if (len > 0) {
            *out = (const char *)s;
            *out_len = len;
            return len;
        }
    }
    const char *replacement;
    size_t len = charsmap_match(t, s, n, &replacement);
    if (len > 0) {
        *out = replacement;
        *out_len = strlen(replacement);
        return len;
    }
    len = utf8_valid_len(s, n);
    if (len == 0) {
        /* one invalid byte becomes U+FFFD */
        *out = REPLACEMENT_CHAR;
        *out_len = 3;
        return 1;
    }
    *out = (const char *)s;
    *out_len = len;
    return len;
}

static int append_space(const struct tokenizer *t, struct buffer *b, struct caem_error *err)
{
    if (t->escape_whitespaces)
        return buffer_append(b, SPACE_SYMBOL, SPACE_SYMBOL_LEN, err);
    return buffer_append(b, " ", 1, err);
}

static int normalize_into(const struct tokenizer *t, const uint8_t *s, size_t n,
                          struct buffer *b, struct caem_error *err)
{
    const char *piece;
    size_t piece_len, used;

    if (buffer_reserve(b, n * 3, err) != 0)
        return -1;

    /* 1. drop leading characters that normalize to exactly one space */
    if (t->remove_extra_whitespaces) {
        while (n > 0) {
            used = normalize_prefix(t, s, n, &piece, &piece_len);
            if (piece_len != 1 || piece[0] != ' ')
                break;
            s += used;
            n -= used;
        }
    }
    if (n == 0)
        return 0;

    /* 2. the dummy prefix makes "world" and "hello world" share "▁world" */
    if (!t->treat_whitespace_as_suffix && t->add_dummy_prefix && append_space(t, b, err) != 0)
        return -1;

    /* 3. copy normalized characters, collapsing runs of spaces */
    int prev_space = t->remove_extra_whitespaces;
    while (n > 0) {
        used = normalize_prefix(t, s, n, &piece, &piece_len);
        while (prev_space && piece_len > 0 && piece[0] == ' ') {
            piece++;
            piece_len--;
        }
        if (piece_len > 0) {
            for (size_t i = 0; i < piece_len; i++) {
                int rc = piece[i] == ' ' && t->escape_whitespaces
                             ? buffer_append(b, SPACE_SYMBOL, SPACE_SYMBOL_LEN, err)
                             : buffer_append(b, &piece[i], 1, err);
                if (rc != 0)
                    return -1;
            }
            prev_space = piece[piece_len - 1] == ' ';
        }
        s += used;
        n -= used;
        if (!t->remove_extra_whitespaces)
            prev_space = 0;
    }

    /* 4. drop trailing spaces */
    if (t->remove_extra_whitespaces) {
        const char *space = t->escape_whitespaces ? SPACE_SYMBOL : " ";
        size_t space_len = t->escape_whitespaces ? SPACE_SYMBOL_LEN : 1;
        while (b->len >= space_len && memcmp(b->data + b->len - space_len, space, space_len) == 0)
            b->len -= space_len;
        b->data[b->len] = '\0';
    }
    if (t->treat_whitespace_as_suffix && t->add_dummy_prefix && append_space(t, b, err) != 0)
        return -1;
    return 0;
}

int tokenizer_normalize(const struct tokenizer *t, const char *text, size_t len,
                        char **normalized, size_t *normalized_len, struct caem_error *err)
{
    struct buffer b = { 0 };
    *normalized = NULL;
    *normalized_len = 0;
    if (buffer_reserve(&b, 0, err) != 0)
        return -1;
    b.data[0] = '\0';
    if (normalize_into(t, (const uint8_t *)text, len, &b, err) != 0) {
        free(b.data);
        return -1;
    }
    *normalized = b.data;
    *normalized_len = b.len;
    return 0;
}

/* ---- Viterbi encoder ---- */

/* The best segmentation of the normalized text's first `end` bytes ends with
 * the piece [start, end) of this id; score is that segmentation's total. */
struct best_path {
    float score;
    int32_t start;
    int32_t id;
};

/* Fills best[0..n] left to right. A user-defined piece scores
 * length * (max normal score) - 0.1, which beats any split of it into
 * normal pieces. An unknown character scores the min normal score - 10. */
static void viterbi_forward(const struct tokenizer *t, const uint8_t *s, size_t n,
                            struct best_path *best)
{
    const float unk_score = t->min_score - UNK_PENALTY;
    for (size_t i = 0; i <= n; i++) {
        best[i].score = 0.0f;
        best[i].start = -1;
        best[i].id = -1;
    }
    size_t start = 0;
    while (start < n) {
        const float score_here = best[start].score;
        size_t char_len = utf8_char_len(s[start]);
        if (char_len > n - start)
            char_len = n - start;
        int has_single_char_piece = 0;
        size_t node = 0;
        for (size_t end = start + 1; end <= n; end++) {
            int64_t child = trie_child(&t->trie, node, s[end - 1]);
            if (child < 0)
                break;
            node = (size_t)child;
            int32_t id = t->trie.value[node];
            if (id < 0 || t->pieces[id].type == TOKENIZER_PIECE_UNUSED)
                continue;
            /* A piece's candidate is summed and compared in double, then
             * stored as float, as in sentencepiece (there the piece score
             * is a double because the user-defined branch is one). Equal
             * scores are common, so this rounding decides which of two
             * segmentations wins. */
            struct best_path *target = &best[end];
            size_t length = end - start;
            double piece_score = t->pieces[id].score;
            if (t->pieces[id].type == TOKENIZER_PIECE_USER_DEFINED)
                piece_score = (double)((float)length * t->max_score) - 0.1;
            double candidate = piece_score + (double)score_here;
            if (target->start == -1 || candidate > (double)target->score) {
                target->score = (float)candidate;
                target->start = (int32_t)start;
                target->id = id;
            }
            if (length == char_len)
                has_single_char_piece = 1;
        }
        if (!has_single_char_piece) {
            struct best_path *target = &best[start + char_len];
            float candidate = unk_score + score_here;
            if (target->start == -1 || candidate > target->score) {
                target->score = candidate;
                target->start = (int32_t)start;
                target->id = t->unk_id;
            }
        }
        start += char_len;
    }
}

struct id_list {
    int32_t *ids;
    size_t count, cap;
};

static int id_list_push(struct id_list *l, int32_t id, struct caem_error *err)
{
    if (l->count == l->cap) {
        size_t cap = l->cap ? l->cap * 2 : 64;
        int32_t *ids = realloc(l->ids, cap * sizeof *ids);
        if (ids == NULL)
            return caem_fail(err, "out of memory for %zu token ids", cap);
        l->ids = ids;
        l->cap = cap;
    }
    l->ids[l->count++] = id;
    return 0;
}

/* Walks the best path back from the end and emits ids in text order. A run
 * of unknown pieces becomes one unknown id; with byte fallback each unknown
 * piece becomes the byte pieces of its UTF-8 bytes instead. */
static int viterbi_emit(const struct tokenizer *t, const uint8_t *s, size_t n,
                        const struct best_path *best, struct id_list *out,
                        struct caem_error *err)
{
    size_t pieces = 0;
    for (size_t end = n; end > 0; end = (size_t)best[end].start)
        pieces++;
    size_t *ends = caem_malloc((pieces ? pieces : 1) * sizeof *ends, "piece ends", err);
    if (ends == NULL)
        return -1;
    size_t k = pieces;
    for (size_t end = n; end > 0; end = (size_t)best[end].start)
        ends[--k] = end;

    int prev_unknown = 0, rc = 0;
    for (k = 0; k < pieces && rc == 0; k++) {
        const struct best_path *node = &best[ends[k]];
        int unknown = t->pieces[node->id].type == TOKENIZER_PIECE_UNKNOWN;
        if (unknown && t->byte_fallback) {
            for (size_t i = (size_t)node->start; i < ends[k] && rc == 0; i++)
                rc = id_list_push(out, t->byte_ids[s[i]], err);
        } else if (!(unknown && prev_unknown)) {
            rc = id_list_push(out, node->id, err);
        }
        prev_unknown = unknown;
    }
    free(ends);
    return rc;
}

/* Encodes text that contains no sentinel, appending its ids to out. */
static int encode_segment(const struct tokenizer *t, const char *text, size_t len,
                          struct id_list *out, struct caem_error *err)
{
    char *normalized;
    size_t n;
    if (tokenizer_normalize(t, text, len, &normalized, &n, err) != 0)
        return -1;
    if (n > INT32_MAX) {
        free(normalized);
        return caem_fail(err, "%s: text of %zu bytes is too long to encode", t->name, len);
    }
    struct best_path *best = caem_malloc((n + 1) * sizeof *best, "Viterbi lattice", err);
    int rc = -1;
    if (best != NULL) {
        viterbi_forward(t, (const uint8_t *)normalized, n, best);
        rc = viterbi_emit(t, (const uint8_t *)normalized, n, best, out, err);
    }
    free(best);
    free(normalized);
    return rc;
}

/* Returns the index of the sentinel whose text "<extra_id_N>" starts s and
 * sets *length to its bytes, or returns -1. N has one or two digits and no
 * leading zero, the spelling T5's tokenizer adds. */
static int sentinel_match(const char *s, size_t n, size_t *length)
{
    static const char prefix[] = "<extra_id_";
    const size_t prefix_len = sizeof prefix - 1;
    if (n < prefix_len + 2 || memcmp(s, prefix, prefix_len) != 0)
        return -1;
    size_t digits = 0;
    int index = 0;
    while (prefix_len + digits < n && digits < 3 && s[prefix_len + digits] >= '0' &&
           s[prefix_len + digits] <= '9') {
        index = index * 10 + (s[prefix_len + digits] - '0');
        digits++;
    }
    int leading_zero = digits > 1 && s[prefix_len] == '0';
    if (digits == 0 || digits > 2 || leading_zero || prefix_len + digits >= n ||
        s[prefix_len + digits] != '>')
        return -1;
    *length = prefix_len + digits + 1;
    return index;
}

int tokenizer_encode(const struct tokenizer *t, const char *text, size_t len, int32_t **ids,
                     size_t *count, struct caem_error *err)
{
    *ids = NULL;
    *count = 0;
    struct id_list out = { 0 };
    int rc = 0;
    size_t segment_start = 0, pos = 0;
    while (rc == 0 && pos <= len) {
        size_t sentinel_len = 0;
        int sentinel = -1;
        if (pos < len && text[pos] == '<')
            sentinel = sentinel_match(text + pos, len - pos, &sentinel_len);
        if (pos < len && sentinel < 0) {
            pos++;
            continue;
        }
        /* a sentinel or the end of the text closes the segment before it */
        if (pos > segment_start)
            rc = encode_segment(t, text + segment_start, pos - segment_start, &out, err);
        if (rc == 0 && sentinel >= 0)
            rc = id_list_push(&out, tokenizer_sentinel_id(t, sentinel), err);
        if (sentinel < 0)
            break;
        pos += sentinel_len;
        segment_start = pos;
    }
    /* empty output still returns an array, so that the caller can always free it */
    if (rc == 0 && out.ids == NULL) {
        out.ids = caem_malloc(sizeof *out.ids, "token ids", err);
        rc = out.ids == NULL ? -1 : 0;
    }
    if (rc != 0) {
        free(out.ids);
        return -1;
    }
    *ids = out.ids;
    *count = out.count;
    return 0;
}

/* ---- decoder ---- */

/* Appends a run of byte pieces as text; each byte that does not start a
 * valid UTF-8 character becomes U+FFFD. */
static int flush_bytes(struct buffer *text, const uint8_t *bytes, size_t n,
                       struct caem_error *err)
{
    size_t i = 0;
    while (i < n) {
        size_t len = utf8_valid_len(bytes + i, n - i);
        int rc = len == 0 ? buffer_append(text, REPLACEMENT_CHAR, 3, err)
                          : buffer_append(text, bytes + i, len, err);
        if (rc != 0)
            return -1;
        i += len == 0 ? 1 : len;
    }
    return 0;
}

/* Appends a normal or user-defined piece with U+2581 turned into spaces.
 * Returns whether a leading U+2581 was stripped and counts as the sentence's
 * dummy-prefix space. */
static int append_piece(const struct tokenizer *t, struct buffer *text, const struct piece *p,
                        int at_start, int *stripped_prefix, struct caem_error *err)
{
    const char *s = p->text;
    size_t n = p->len;
    *stripped_prefix = 0;
    if (at_start && (t->add_dummy_prefix || t->remove_extra_whitespaces) &&
        n >= SPACE_SYMBOL_LEN && memcmp(s, SPACE_SYMBOL, SPACE_SYMBOL_LEN) == 0) {
        s += SPACE_SYMBOL_LEN;
        n -= SPACE_SYMBOL_LEN;
        /* with extra whitespace removed, every leading space is dropped */
        *stripped_prefix = !t->remove_extra_whitespaces;
    }
    size_t i = 0;
    while (i < n) {
        int rc;
        if (n - i >= SPACE_SYMBOL_LEN && memcmp(s + i, SPACE_SYMBOL, SPACE_SYMBOL_LEN) == 0) {
            rc = buffer_append(text, " ", 1, err);
            i += SPACE_SYMBOL_LEN;
        } else {
            rc = buffer_append(text, s + i, 1, err);
            i++;
        }
        if (rc != 0)
            return -1;
    }
    return 0;
}

/* Decodes ids that contain no sentinel into out, which starts empty, as
 * spm_decode decodes one line. `first` is the position of ids[0] in the
 * caller's array, for error messages. */
static int decode_segment(const struct tokenizer *t, const int32_t *ids, size_t count,
                          size_t first, struct buffer *out, struct caem_error *err)
{
    uint8_t *bytes = caem_malloc(count ? count : 1, "byte pieces", err);
    if (bytes == NULL)
        return -1;

    size_t byte_count = 0;
    int at_start = 1, stripped_prefix = 0;
    for (size_t i = 0; i < count; i++) {
        int32_t id = ids[i];
        if (id < 0 || id >= t->piece_count) {
            caem_fail(err, "%s: token id %d at position %zu is outside the vocabulary [0, %d)",
                      t->name, id, first + i, tokenizer_vocab_size(t));
            goto fail;
        }
        const struct piece *p = &t->pieces[id];
        if (p->type == TOKENIZER_PIECE_BYTE) {
            bytes[byte_count++] = (uint8_t)strtol(p->text + 3, NULL, 16);
            continue;
        }
        if (flush_bytes(out, bytes, byte_count, err) != 0)
            goto fail;
        byte_count = 0;
        if (stripped_prefix || out->len > 0)
            at_start = 0;
        stripped_prefix = 0;
        if (p->type == TOKENIZER_PIECE_CONTROL)
            continue;
        if (p->type == TOKENIZER_PIECE_UNKNOWN) {
            const char *surface = t->unk_surface ? t->unk_surface : DEFAULT_UNK_SURFACE;
            if (buffer_append(out, surface, strlen(surface), err) != 0)
                goto fail;
            continue;
        }
        if (append_piece(t, out, p, at_start, &stripped_prefix, err) != 0)
            goto fail;
    }
    if (flush_bytes(out, bytes, byte_count, err) != 0)
        goto fail;
    free(bytes);
    return 0;

fail:
    free(bytes);
    return -1;
}

int tokenizer_decode(const struct tokenizer *t, const int32_t *ids, size_t count, char **text,
                     size_t *len, struct caem_error *err)
{
    *text = NULL;
    *len = 0;
    if (t->has_denormalizer)
        return caem_fail(err, "%s: the model has denormalizer rules, which decoding does not "
                         "support", t->name);
    struct buffer out = { 0 }, segment = { 0 };
    if (buffer_reserve(&out, 0, err) != 0)
        return -1;
    out.data[0] = '\0';

    /* each run of ids up to a sentinel (or the end) is one segment */
    size_t start = 0;
    for (size_t i = 0; i <= count; i++) {
        int sentinel = i < count ? tokenizer_sentinel_index(t, ids[i]) : -1;
        if (i < count && sentinel < 0)
            continue;
        segment.len = 0;
        if (buffer_reserve(&segment, 0, err) != 0 ||
            decode_segment(t, ids + start, i - start, start, &segment, err) != 0)
            goto fail;
        if (segment.len > 0 && out.len > 0 && buffer_append(&out, " ", 1, err) != 0)
            goto fail;
        if (buffer_append(&out, segment.data, segment.len, err) != 0)
            goto fail;
        if (sentinel >= 0) {
            const char *piece = t->sentinel_text[sentinel];
            if ((out.len > 0 && buffer_append(&out, " ", 1, err) != 0) ||
                buffer_append(&out, piece, strlen(piece), err) != 0)
                goto fail;
        }
        start = i + 1;
    }
    free(segment.data);
    *text = out.data;
    *len = out.len;
    return 0;

fail:
    free(segment.data);
    free(out.data);
    return -1;
}
