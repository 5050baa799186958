/* SPDX-License-Identifier: MIT */
/*
 * llama2.c tokenizer. File: int32 max_token_length, then per piece float32
 * score, int32 byte length, the bytes (no terminator). The vocabulary size is
 * not stored; it is the model's.
 *
 * llama2.c merges by rescanning all adjacent pairs after every merge, which
 * is quadratic and far too slow for a text of a few hundred kilobytes. The
 * same greedy order (highest score first, leftmost on ties) comes out of a
 * priority queue of candidate pairs over a linked list of symbols, with
 * stale candidates recognised by per-symbol version stamps.
 */
#include "tokenizer.h"
#include "file_error.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>


static int compare_bytes(const char *a, size_t alen, const char *b, size_t blen)
{
    int c = memcmp(a, b, alen < blen ? alen : blen);
    if (c != 0)
        return c;
    return alen < blen ? -1 : alen > blen;
}

/* Sorts piece pointers; equal pieces keep id order (pointer order), so a
 * lookup of a duplicated piece deterministically finds the lowest id. */
static int compare_pieces(const void *pa, const void *pb)
{
    const struct tokenizer_piece *x = *(const struct tokenizer_piece *const *)pa;
    const struct tokenizer_piece *y = *(const struct tokenizer_piece *const *)pb;
    int c = compare_bytes(x->text, x->len, y->text, y->len);
    if (c != 0)
        return c;
    return x < y ? -1 : x > y;
}

/* "<0xNN>" -> NN, else -1. */
static int parse_byte_piece(const char *s, uint32_t len)
{
    int v = 0;
    if (len != 6 || memcmp(s, "<0x", 3) != 0 || s[5] != '>')
        return -1;
    for (int i = 3; i < 5; i++) {
        char c = s[i];
        int d = c >= '0' && c <= '9' ? c - '0' : c >= 'A' && c <= 'F' ? c - 'A' + 10
              : c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
        if (d < 0)
            return -1;
        v = v * 16 + d;
    }
    return v;
}

static int read_i32(const unsigned char *p)
{
    uint32_t u = (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
    int32_t v;
    memcpy(&v, &u, 4);
    return v;
}

static float read_f32(const unsigned char *p)
{
    uint32_t u = (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
    float v;
    memcpy(&v, &u, 4);
    return v;
}

/* Tokenizer files hold a few MB (128K pieces of Llama 3 take about 2 MB):
 * a larger file is refused before it is read. */
#define TOKENIZER_FILE_MAX ((size_t)256 << 20)

int tokenizer_open(struct tokenizer *t, const char *path, uint32_t vocab_size, char *err, size_t err_size)
{
    unsigned char *data = NULL;
    size_t size = 0, pos = 4;
    int rc = -1;

    memset(t, 0, sizeof *t);
    t->space_id = -1;
    if (file_read_regular(path, TOKENIZER_FILE_MAX, &data, &size, err, err_size) != 0)
        return -1;
    if (size < 4) {
        file_error(err, err_size, path, "too short for a llama2.c tokenizer (%zu bytes)", size);
        goto out;
    }
    /* llama2.c sizes its merge buffer from this field and trusts the pieces
     * to respect it; here buffers follow the longest piece actually read, so
     * the field only has to be a length */
    int max_len = read_i32(data);
    if (max_len < 0) {
        file_error(err, err_size, path, "max_token_length %d is negative: not a llama2.c tokenizer", max_len);
        goto out;
    }
    /* encode emits <unk> (0) and BOS (1), generation stops at EOS (2) */
    if (vocab_size <= TOKENIZER_EOS) {
        file_error(err, err_size, path, "the model's vocabulary of %u pieces lacks <unk>, <s> and </s> (ids 0-2)",
                   vocab_size);
        goto out;
    }
    /* every piece takes at least 8 bytes (score, length): the model's
     * vocab_size is checked against the file before anything is allocated */
    if (vocab_size > (size - 4) / 8) {
        file_error(err, err_size, path, "%zu bytes cannot hold the model's %u pieces (8 bytes each at least)", size,
                   vocab_size);
        goto out;
    }
    t->vocab_size = vocab_size;
    t->max_token_length = 1;
    t->pieces = calloc(vocab_size, sizeof *t->pieces);
    t->sorted = malloc(vocab_size * sizeof *t->sorted);
    if (!t->pieces || !t->sorted) {
        file_error(err, err_size, path, "out of memory");
        goto out;
    }
    for (uint32_t id = 0; id < vocab_size; id++) {
        struct tokenizer_piece *p = &t->pieces[id];
        if (size - pos < 8) {
            file_error(err, err_size, path, "truncated at piece %u of the model's %u: not this model's tokenizer, or damaged",
                 id, vocab_size);
            goto out;
        }
        /* any score: a NaN or one at or below -1e10 never merges (llama2.c's
         * best score starts at -1e10 and NaN compares false) */
        p->score = read_f32(data + pos);
        int len = read_i32(data + pos + 4);
        pos += 8;
        if (len < 0) {
            file_error(err, err_size, path, "piece %u has length %d: not a llama2.c tokenizer, or damaged", id, len);
            goto out;
        }
        if (size - pos < (size_t)len) {
            file_error(err, err_size, path, "truncated in piece %u of the model's %u", id, vocab_size);
            goto out;
        }
        p->text = malloc((size_t)len + 1);
        if (!p->text) {
            file_error(err, err_size, path, "out of memory");
            goto out;
        }
        memcpy(p->text, data + pos, (size_t)len);
        p->text[len] = '\0';
        p->len = (uint32_t)len;
        p->byte = parse_byte_piece(p->text, p->len);
        if (p->len > t->max_token_length)
            t->max_token_length = p->len;
        pos += (size_t)len;
    }
    if (pos != size) {
        file_error(err, err_size, path, "%zu bytes left after the model's %u pieces: not this model's tokenizer",
             size - pos, vocab_size);
        goto out;
    }
    /* Byte fallback pieces, wherever they are (ids 3..258 in sentencepiece
     * vocabularies, which is where llama2.c assumes them) */
    for (int b = 0; b < 256; b++) {
        t->byte_id[b] = -1;
        t->byte_chars[b] = (char)b;
    }
    for (uint32_t id = vocab_size; id-- > 0;)
        if (t->pieces[id].byte >= 0)
            t->byte_id[t->pieces[id].byte] = (int32_t)id;
    for (int b = 0; b < 256; b++)
        t->n_byte_pieces += t->byte_id[b] >= 0;
    const struct tokenizer_piece **order = malloc(vocab_size * sizeof *order);
    if (!order) {
        file_error(err, err_size, path, "out of memory");
        goto out;
    }
    for (uint32_t id = 0; id < vocab_size; id++)
        order[id] = &t->pieces[id];
    qsort(order, vocab_size, sizeof *order, compare_pieces);
    for (uint32_t i = 0; i < vocab_size; i++)
        t->sorted[i] = (uint32_t)(order[i] - t->pieces);
    free(order);
    t->space_id = tokenizer_lookup(t, " ", 1);
    rc = 0;
out:
    free(data);
    if (rc != 0)
        tokenizer_close(t);
    return rc;
}

void tokenizer_close(struct tokenizer *t)
{
    if (t->pieces)
        for (uint32_t i = 0; i < t->vocab_size; i++)
            free(t->pieces[i].text);
    free(t->pieces);
    free(t->sorted);
    memset(t, 0, sizeof *t);
    t->space_id = -1;
}

int tokenizer_lookup(const struct tokenizer *t, const char *text, size_t len)
{
    /* lower bound: the first sorted piece >= text */
    size_t lo = 0, hi = t->vocab_size;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        const struct tokenizer_piece *p = &t->pieces[t->sorted[mid]];
        if (compare_bytes(p->text, p->len, text, len) < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    if (lo < t->vocab_size) {
        const struct tokenizer_piece *p = &t->pieces[t->sorted[lo]];
        if (compare_bytes(p->text, p->len, text, len) == 0)
            return (int)t->sorted[lo];
    }
    return -1;
}

/* A candidate merge of symbol `left` with the symbol after it. */
struct candidate {
    float score;
    int32_t merged;      /* id of the merged piece */
    uint32_t left, right;
    uint32_t stamp_left, stamp_right;
};

/* Heap order: higher score first, then the leftmost pair (llama2.c keeps the
 * first best pair of its left-to-right scan). Symbol slots stay in text order,
 * so "leftmost" is the lowest slot. */
static int before(const struct candidate *a, const struct candidate *b)
{
    if (a->score != b->score)
        return a->score > b->score;
    return a->left < b->left;
}

static void heap_push(struct candidate *heap, size_t *n, struct candidate c)
{
    size_t i = (*n)++;
    while (i > 0) {
        size_t parent = (i - 1) / 2;
        if (!before(&c, &heap[parent]))
            break;
        heap[i] = heap[parent];
        i = parent;
    }
    heap[i] = c;
}

static struct candidate heap_pop(struct candidate *heap, size_t *n)
{
    struct candidate top = heap[0], last = heap[--*n];
    size_t i = 0;
    for (;;) {
        size_t child = 2 * i + 1;
        if (child >= *n)
            break;
        if (child + 1 < *n && before(&heap[child + 1], &heap[child]))
            child++;
        if (!before(&heap[child], &last))
            break;
        heap[i] = heap[child];
        i = child;
    }
    if (*n > 0)
        heap[i] = last;
    return top;
}

struct symbols {
    int32_t *id;
    uint32_t *next, *prev; /* UINT32_MAX: none */
    uint32_t *stamp;       /* bumped whenever the symbol changes or dies */
    unsigned char *unk;    /* 1: an <unk> standing for unencodable text, which never merges */
    char *concat;          /* 2 x max_token_length bytes */
};

/* Queues the merge of left with its successor if that piece exists. llama2.c
 * starts its best score at -1e10, so pieces scoring no higher never merge. */
static void consider(const struct tokenizer *t, struct symbols *s, struct candidate *heap, size_t *n,
                     uint32_t left)
{
    if (left == UINT32_MAX || s->next[left] == UINT32_MAX)
        return;
    uint32_t right = s->next[left];
    if (s->unk[left] || s->unk[right])
        return;
    const struct tokenizer_piece *a = &t->pieces[s->id[left]], *b = &t->pieces[s->id[right]];
    memcpy(s->concat, a->text, a->len);
    memcpy(s->concat + a->len, b->text, b->len);
    int merged = tokenizer_lookup(t, s->concat, (size_t)a->len + b->len);
    if (merged < 0 || !(t->pieces[merged].score > -1e10f))
        return;
    struct candidate c = { t->pieces[merged].score, merged, left, right, s->stamp[left], s->stamp[right] };
    heap_push(heap, n, c);
}

int tokenizer_encode(const struct tokenizer *t, const char *text, size_t len, int bos,
                     int32_t **tokens, uint32_t *n_tokens, struct tokenizer_unknown *unknown)
{
    struct tokenizer_unknown unk = { 0, 0 };
    /* at most BOS + dummy prefix + one token per byte */
    size_t cap = len + 2, n = 0, n_heap = 0;
    if (len > (SIZE_MAX / 64) || cap > UINT32_MAX)
        return -1;
    struct symbols s = {
        malloc(cap * sizeof *s.id), malloc(cap * sizeof *s.next), malloc(cap * sizeof *s.prev),
        calloc(cap, sizeof *s.stamp), calloc(cap, 1), malloc(2 * (size_t)t->max_token_length),
    };
    /* each merge queues at most two new candidates */
    struct candidate *heap = malloc(3 * cap * sizeof *heap);
    int rc = -1;
    if (!s.id || !s.next || !s.prev || !s.stamp || !s.unk || !s.concat || !heap)
        goto out;

    if (bos)
        s.id[n++] = TOKENIZER_BOS;
    if (len > 0 && t->space_id >= 0)
        s.id[n++] = t->space_id;
    /* one piece per UTF-8 code point (at most 4 bytes), as llama2.c groups them */
    size_t start = 0;
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)text[i];
        if ((c & 0xC0) != 0x80)
            start = i;
        unsigned char following = i + 1 < len ? (unsigned char)text[i + 1] : 0;
        if ((following & 0xC0) == 0x80 && i + 1 - start < 4)
            continue;
        int id = tokenizer_lookup(t, text + start, i + 1 - start);
        int bytes_known = 1;
        for (size_t j = start; j <= i; j++)
            bytes_known &= t->byte_id[(unsigned char)text[j]] >= 0;
        if (id >= 0)
            s.id[n++] = id;
        else if (bytes_known)
            for (size_t j = start; j <= i; j++)
                s.id[n++] = t->byte_id[(unsigned char)text[j]];
        else {
            if (unk.count++ == 0)
                unk.first_offset = start;
            s.unk[n] = 1;
            s.id[n++] = TOKENIZER_UNK;
        }
        start = i + 1;
    }
    for (size_t i = 0; i < n; i++) {
        s.prev[i] = i == 0 ? UINT32_MAX : (uint32_t)(i - 1);
        s.next[i] = i + 1 == n ? UINT32_MAX : (uint32_t)(i + 1);
    }
    for (size_t i = 0; i + 1 < n; i++)
        consider(t, &s, heap, &n_heap, (uint32_t)i);

    while (n_heap > 0) {
        struct candidate c = heap_pop(heap, &n_heap);
        if (c.stamp_left != s.stamp[c.left] || c.stamp_right != s.stamp[c.right])
            continue; /* one side has merged since this was queued */
        uint32_t right = c.right, after = s.next[right];
        s.id[c.left] = c.merged;
        s.stamp[c.left]++;
        s.stamp[right]++;
        s.next[c.left] = after;
        if (after != UINT32_MAX)
            s.prev[after] = c.left;
        consider(t, &s, heap, &n_heap, s.prev[c.left]);
        consider(t, &s, heap, &n_heap, c.left);
    }

    int32_t *out = malloc((n ? n : 1) * sizeof *out);
    if (!out)
        goto out;
    /* slot 0 is never the right side of a merge, so the list starts there */
    uint32_t m = 0;
    for (uint32_t i = 0; n > 0 && i != UINT32_MAX; i = s.next[i])
        out[m++] = s.id[i];
    *tokens = out;
    *n_tokens = m;
    if (unknown)
        *unknown = unk;
    rc = 0;
out:
    free(s.id);
    free(s.unk);
    free(s.next);
    free(s.prev);
    free(s.stamp);
    free(s.concat);
    free(heap);
    return rc;
}

size_t tokenizer_decode(const struct tokenizer *t, int32_t prev, int32_t token, const char **bytes)
{
    if (token < 0 || (uint32_t)token >= t->vocab_size) {
        *bytes = "";
        return 0;
    }
    const struct tokenizer_piece *p = &t->pieces[token];
    if (p->byte >= 0) {
        *bytes = &t->byte_chars[p->byte];
        return 1;
    }
    /* sentencepiece marks word starts with a space; the first word has none */
    if (prev == TOKENIZER_BOS && p->len > 0 && p->text[0] == ' ') {
        *bytes = p->text + 1;
        return p->len - 1;
    }
    *bytes = p->text;
    return p->len;
}
