/* SPDX-License-Identifier: MIT */
/*
 * The llama2.c tokenizer (tokenizer.bin format, sentencepiece-style BPE),
 * bit-compatible with llama2.c's encode() and decode() on every file whose
 * text llama2.c can encode. Byte fallback ("<0xNN>" pieces) is optional:
 * a character-level vocabulary without it loads, and a character that has
 * neither a piece nor byte pieces for all its bytes becomes one <unk> (id 0),
 * as sentencepiece encodes it without byte fallback. (llama2.c instead emits
 * the id byte + 3 whatever piece that is.)
 */
#ifndef TKV_TOOLS_TOKENIZER_H
#define TKV_TOOLS_TOKENIZER_H

#include <stddef.h>
#include <stdint.h>

/* The ids llama2.c (and sentencepiece's defaults) fix. */
#define TOKENIZER_UNK 0
#define TOKENIZER_BOS 1
#define TOKENIZER_EOS 2

struct tokenizer_piece {
    char *text;      /* not NUL-free in general: use len */
    uint32_t len;
    float score;     /* merge priority: higher merges first */
    int byte;        /* 0..255 for a "<0xNN>" piece, else -1 */
};

struct tokenizer {
    uint32_t vocab_size;
    uint32_t max_token_length;       /* the longest piece (the file's field may say less) */
    struct tokenizer_piece *pieces;  /* [vocab_size], by id */
    uint32_t *sorted;                /* ids sorted by piece bytes, for bsearch */
    int space_id;                    /* id of " " (the dummy prefix), -1 if none */
    int32_t byte_id[256];            /* id of the piece "<0xNN>" (the lowest if repeated), -1 if none */
    uint32_t n_byte_pieces;          /* bytes that have a piece: 256 with byte fallback */
    char byte_chars[256];            /* what "<0xNN>" decodes to */
};

/* What an encoding could not represent. */
struct tokenizer_unknown {
    uint32_t count;      /* characters (UTF-8 code points, or stray bytes) that became <unk> */
    size_t first_offset; /* byte offset in the text of the first of them */
};

/* Reads a llama2.c tokenizer file that must hold exactly vocab_size pieces
 * (the model's vocabulary). Accepts what llama2.c's build_tokenizer reads
 * (any scores, pieces longer than the file's max_token_length, no byte
 * pieces) except a file with more pieces than the model's vocabulary, which
 * llama2.c silently truncates: that is another model's tokenizer. Returns 0,
 * or -1 with a message naming the file and the problem in err. */
int tokenizer_open(struct tokenizer *t, const char *path, uint32_t vocab_size, char *err, size_t err_size);
void tokenizer_close(struct tokenizer *t);

/* Id of the piece with exactly these bytes, or -1. */
int tokenizer_lookup(const struct tokenizer *t, const char *text, size_t len);

/* Encodes len bytes of text as llama2.c does: optional BOS, a dummy " "
 * when text is not empty (and the vocabulary has " "), one piece per UTF-8
 * code point (a code point without a piece falls back to its byte pieces,
 * or, when the tokenizer lacks one of them, becomes one <unk> that never
 * merges), then repeatedly the adjacent pair whose merged piece scores
 * highest (leftmost on ties) is merged. *tokens is malloc'ed, *n_tokens
 * set; unknown, if not NULL, counts the <unk>s. Returns 0, or -1 on out of
 * memory. */
int tokenizer_encode(const struct tokenizer *t, const char *text, size_t len, int bos,
                     int32_t **tokens, uint32_t *n_tokens, struct tokenizer_unknown *unknown);

/* The bytes token stands for after prev: the leading space of the first
 * piece after BOS is dropped, and "<0xNN>" pieces become the raw byte.
 * Returns the length and sets *bytes (valid while t is open); an id out of
 * range decodes to nothing. */
size_t tokenizer_decode(const struct tokenizer *t, int32_t prev, int32_t token, const char **bytes);

#endif
