/*
 * The llama2.c tokenizer (tokenizer.bin format, sentencepiece-style BPE with
 * byte fallback), bit-compatible with llama2.c's encode() and decode().
 */
#ifndef TKV_TOOLS_TOKENIZER_H
#define TKV_TOOLS_TOKENIZER_H

#include <stddef.h>
#include <stdint.h>

#define TOKENIZER_BOS 1
#define TOKENIZER_EOS 2
/* Byte fallback: the token of raw byte b is TOKENIZER_BYTE0 + b ("<0xNN>"). */
#define TOKENIZER_BYTE0 3

struct tokenizer_piece {
    char *text;      /* not NUL-free in general: use len */
    uint32_t len;
    float score;     /* merge priority: higher merges first */
    int byte;        /* 0..255 for a "<0xNN>" piece, else -1 */
};

struct tokenizer {
    uint32_t vocab_size;
    uint32_t max_token_length;
    struct tokenizer_piece *pieces;  /* [vocab_size], by id */
    uint32_t *sorted;                /* ids sorted by piece bytes, for bsearch */
    int space_id;                    /* id of " " (the dummy prefix), -1 if none */
    char byte_chars[256];            /* what "<0xNN>" decodes to */
};

/* Reads a llama2.c tokenizer file that must hold exactly vocab_size pieces
 * (the model's vocabulary). Returns 0, or -1 with a message naming the file
 * and the problem in err. */
int tokenizer_open(struct tokenizer *t, const char *path, uint32_t vocab_size, char *err, size_t err_size);
void tokenizer_close(struct tokenizer *t);

/* Id of the piece with exactly these bytes, or -1. */
int tokenizer_lookup(const struct tokenizer *t, const char *text, size_t len);

/* Encodes len bytes of text as llama2.c does: optional BOS, a dummy " "
 * when text is not empty, one piece per UTF-8 code point (bytes without a
 * piece fall back to byte tokens), then repeatedly the adjacent pair whose
 * merged piece scores highest (leftmost on ties) is merged. *tokens is
 * malloc'ed, *n_tokens set. Returns 0, or -1 on out of memory. */
int tokenizer_encode(const struct tokenizer *t, const char *text, size_t len, int bos,
                     int32_t **tokens, uint32_t *n_tokens);

/* The bytes token stands for after prev: the leading space of the first
 * piece after BOS is dropped, and "<0xNN>" pieces become the raw byte.
 * Returns the length and sets *bytes (valid while t is open); an id out of
 * range decodes to nothing. */
size_t tokenizer_decode(const struct tokenizer *t, int32_t prev, int32_t token, const char **bytes);

#endif
