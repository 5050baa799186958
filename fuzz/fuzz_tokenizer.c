/* SPDX-License-Identifier: MIT */
/*
 * The llama2.c tokenizer loader (tools/tokenizer.c) and, on success,
 * encode, lookup and decode. Input: uint16 vocab_size, uint16 text length,
 * the text, then the tokenizer file (little endian). Encoded ids must be
 * in the vocabulary, every piece must be found by lookup, and decoded
 * bytes must be readable.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "fuzz_file.h"
#include "tokenizer.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct tokenizer t;
    char err[512];
    if (size < 4)
        return 0;
    uint32_t vocab = (uint32_t)data[0] | (uint32_t)data[1] << 8;
    size_t text_len = (size_t)data[2] | (size_t)data[3] << 8;
    if (text_len > size - 4)
        text_len = size - 4;
    const char *text = (const char *)data + 4;
    const char *path = fuzz_file(data + 4 + text_len, size - 4 - text_len);

    if (tokenizer_open(&t, path, vocab, err, sizeof err) != 0) {
        FUZZ_CHECK(t.pieces == NULL && t.sorted == NULL, "failed open left data behind: %s", err);
        return 0;
    }
    int32_t *tokens = NULL;
    uint32_t n = 0;
    struct tokenizer_unknown unknown = {0};
    if (tokenizer_encode(&t, text, text_len, 1, &tokens, &n, &unknown) == 0) {
        FUZZ_CHECK(n >= 1 && tokens[0] == TOKENIZER_BOS, "no BOS");
        FUZZ_CHECK(unknown.count <= text_len && (unknown.count == 0 || unknown.first_offset < text_len),
                   "%u unknown characters, first at %zu, in %zu bytes", unknown.count, unknown.first_offset, text_len);
        FUZZ_CHECK(n <= text_len + 2, "%u tokens for %zu bytes", n, text_len);
        size_t len = 0;
        for (uint32_t i = 0; i < n; i++) {
            FUZZ_CHECK(tokens[i] >= 0 && (uint32_t)tokens[i] < vocab, "token %d outside vocab %u", tokens[i], vocab);
            if (i == 0)
                continue;
            const char *bytes;
            size_t k = tokenizer_decode(&t, tokens[i - 1], tokens[i], &bytes);
            unsigned sum = 0;
            for (size_t j = 0; j < k; j++) /* readable (ASan checks) */
                sum += (unsigned char)bytes[j];
            volatile unsigned sink = sum;
            (void)sink;
            len += k;
        }
        FUZZ_CHECK(len <= (size_t)n * t.max_token_length, "decoded %zu bytes from %u tokens", len, n);
        free(tokens);
    }
    for (uint32_t id = 0; id < vocab; id++) {
        FUZZ_CHECK(tokenizer_lookup(&t, t.pieces[id].text, t.pieces[id].len) >= 0, "piece %u not found", id);
    }
    const char *bytes;
    FUZZ_CHECK(tokenizer_decode(&t, 0, -1, &bytes) == 0 && tokenizer_decode(&t, 0, (int32_t)vocab, &bytes) == 0,
               "ids out of range decode to something");
    tokenizer_close(&t);
    return 0;
}
