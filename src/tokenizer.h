/* SentencePiece unigram tokenizer.
 *
 * Reads a SentencePiece `.model` file (a serialized ModelProto) and encodes
 * text with the same normalization and Viterbi segmentation as the
 * `spm_encode` tool of sentencepiece 0.1.97, so that both give the same ids.
 * Only unigram models are accepted. Special ids (unknown, padding, EOS, BOS)
 * come from the model's trainer_spec; a model trained with
 * `--pad_id=0 --eos_id=1 --unk_id=2 --bos_id=-1` follows the T5 layout.
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
};

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

int tokenizer_vocab_size(const struct tokenizer *t);

/* Returns the piece text of an id (NUL-terminated, owned by the tokenizer),
 * or NULL when the id is outside [0, vocab size). */
const char *tokenizer_piece(const struct tokenizer *t, int32_t id);

/* Returns the piece type of an id, or -1 when the id is out of range. */
int tokenizer_piece_type(const struct tokenizer *t, int32_t id);

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
 * non-NULL *ids. No EOS or BOS is added. */
int tokenizer_encode(const struct tokenizer *t, const char *text, size_t len, int32_t **ids,
                     size_t *count, struct caem_error *err);

/* Decodes ids back to text as `spm_decode` does: control pieces vanish, the
 * unknown piece becomes the model's unk_surface (" \u2047 " by default), runs
 * of byte pieces become UTF-8 with U+FFFD for invalid bytes, and U+2581
 * becomes a space. On success *text is NUL-terminated, *len bytes long, and
 * the caller frees it. An id out of range is an error. */
int tokenizer_decode(const struct tokenizer *t, const int32_t *ids, size_t count, char **text,
                     size_t *len, struct caem_error *err);

#endif
