/* SentencePiece unigram tokenizer.
 *
 * Reads a SentencePiece `.model` file (a serialized ModelProto) and encodes
 * text with the same normalization and Viterbi segmentation as the
 * `spm_encode` tool of sentencepiece 0.1.97, so that both give the same ids.
 * Only unigram models are accepted. Special ids (unknown, padding, EOS, BOS)
 * come from the model's trainer_spec; a model trained with
 * `--pad_id=0 --eos_id=1 --unk_id=2 --bos_id=-1` follows the T5 layout.
 *
 * Like T5's tokenizer, this one appends TOKENIZER_SENTINELS sentinel tokens
 * "<extra_id_0>" ... "<extra_id_99>" after the model's P pieces, in reverse
 * order: <extra_id_i> has id P + 99 - i, so <extra_id_0> is the last id and
 * the vocabulary has P + 100 ids. Span corruption replaces masked spans with
 * them. A model's embedding must have at least tokenizer_vocab_size() rows.
 *
 * A tokenizer is immutable after loading, so one may be shared by threads. */
#ifndef CAEM_TOKENIZER_H
#define CAEM_TOKENIZER_H

#include <stddef.h>
#include <stdint.h>

#include "error.h"

/* Piece types, numbered as in ModelProto.SentencePiece.Type. */
enum tokenizer_piece_type {
    TOKENIZER_PIECE_NORMAL = 1,
    TOKENIZER_PIECE_UNKNOWN = 2,
    TOKENIZER_PIECE_CONTROL = 3,
    TOKENIZER_PIECE_USER_DEFINED = 4,
    TOKENIZER_PIECE_UNUSED = 5,
    TOKENIZER_PIECE_BYTE = 6,
    /* Not a ModelProto type: the sentinels this tokenizer appends. */
    TOKENIZER_PIECE_SENTINEL = 100,
};

enum { TOKENIZER_SENTINELS = 100 };

/* Special ids from the model's trainer_spec; -1 where the model has none. */
struct tokenizer_special_ids {
    int32_t unk_id, bos_id, eos_id, pad_id;
};

struct tokenizer;

/* Loads a model file. On failure the message names the file and, for a
 * malformed file, the byte offset of the bad field. */
int tokenizer_load(struct tokenizer **out, const char *path, struct caem_error *err);

/* Loads a model from memory; `name` stands for the file in error messages.
 * The tokenizer copies what it needs, so `data` may be freed afterwards. */
int tokenizer_load_buffer(struct tokenizer **out, const void *data, size_t size,
                          const char *name, struct caem_error *err);

void tokenizer_free(struct tokenizer *t);

/* Returns the number of ids: the model's pieces plus the 100 sentinels. */
int tokenizer_vocab_size(const struct tokenizer *t);

/* Returns the number of pieces in the model file, sentinels excluded. */
int tokenizer_piece_count(const struct tokenizer *t);

/* Returns the id of sentinel <extra_id_i> (piece count + 99 - i), or -1 when
 * i is outside [0, TOKENIZER_SENTINELS). */
int32_t tokenizer_sentinel_id(const struct tokenizer *t, int i);

/* Returns i when id is the sentinel <extra_id_i>, and -1 otherwise. */
int tokenizer_sentinel_index(const struct tokenizer *t, int32_t id);

/* Returns the piece text of an id (NUL-terminated, owned by the tokenizer;
 * "<extra_id_N>" for a sentinel), or NULL when the id is outside
 * [0, tokenizer_vocab_size). */
const char *tokenizer_piece(const struct tokenizer *t, int32_t id);

/* Returns the piece type of an id (TOKENIZER_PIECE_SENTINEL for a
 * sentinel), or -1 when the id is out of range. */
int tokenizer_piece_type(const struct tokenizer *t, int32_t id);

/* Returns the model's score of a piece; 0 for a sentinel or an id out of range. */
float tokenizer_piece_score(const struct tokenizer *t, int32_t id);

struct tokenizer_special_ids tokenizer_special_ids(const struct tokenizer *t);

/* Applies the model's normalizer (character map, whitespace rules, U+2581
 * for spaces) to `len` bytes of text. On success *normalized is a
 * NUL-terminated string of *normalized_len bytes that the caller frees. */
int tokenizer_normalize(const struct tokenizer *t, const char *text, size_t len,
                        char **normalized, size_t *normalized_len, struct caem_error *err);

/* Encodes `len` bytes of text (any bytes; invalid UTF-8 is replaced by U+FFFD
 * as sentencepiece does). On success *ids is an array of *count ids that the
 * caller frees; empty or all-whitespace text gives *count == 0 and a
 * non-NULL *ids. No EOS or BOS is added.
 *
 * The literal text "<extra_id_N>" (N from 0 to 99 in decimal without leading
 * zeros) becomes the single id of that sentinel. The text between sentinels
 * is encoded piece by piece, each stretch on its own, as `spm_encode` would
 * encode it alone: "a <extra_id_0> b" gives the ids of "a ", the sentinel,
 * then the ids of " b". Text without sentinels gives exactly spm_encode's ids.
 * NOTE: a model whose own pieces include "<extra_id_N>" keeps those pieces,
 * but encode never produces them. */
int tokenizer_encode(const struct tokenizer *t, const char *text, size_t len, int32_t **ids,
                     size_t *count, struct caem_error *err);

/* Decodes ids back to text as `spm_decode` does: control pieces vanish, the
 * unknown piece becomes the model's unk_surface (" \u2047 " by default), runs
 * of byte pieces become UTF-8 with U+FFFD for invalid bytes, and U+2581
 * becomes a space. A sentinel becomes "<extra_id_N>". The ids between
 * sentinels are decoded as separate texts, and one space separates each
 * sentinel from the text and sentinels around it, so that encoding the
 * result gives the ids back whenever spm_decode's text does. On success *text
 * is NUL-terminated, *len bytes long, and the caller frees it. An id out of
 * range is an error. */
int tokenizer_decode(const struct tokenizer *t, const int32_t *ids, size_t count, char **text,
                     size_t *len, struct caem_error *err);

#endif
