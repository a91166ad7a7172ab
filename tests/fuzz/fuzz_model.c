/* libFuzzer target for the SentencePiece model reader and the encoder. The
 * whole input is tried as a .model file. When it loads, a fixed sentence is
 * encoded with it and so is the input's second half, which gives the encoder
 * arbitrary bytes as well as the model's own pieces. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "tokenizer.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void encode_once(const struct tokenizer *t, const char *text, size_t len)
{
    int32_t *ids = NULL;
    size_t count = 0;
    struct caem_error err = {{0}};
    if (tokenizer_encode(t, text, len, &ids, &count, &err) == 0)
        free(ids);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct tokenizer *t = NULL;
    struct caem_error err = {{0}};
    if (tokenizer_load_buffer(&t, data, size, "fuzz.model", &err) != 0)
        return 0;

    static const char sentence[] = "The quick brown fox, caf\xc3\xa9 \xe2\x80\x94 42 times.";
    encode_once(t, sentence, strlen(sentence));
    encode_once(t, (const char *)data + size / 2, size - size / 2);
    tokenizer_free(t);
    return 0;
}
