/* SPDX-License-Identifier: MIT */
/*
 * Sequence operations on the paged cache (llama.cpp's seq_rm / seq_cp /
 * seq_keep, vLLM's fork and free): bookkeeping on block tables and reference
 * counts, never a requantized row. Each is O(blocks of the sequences
 * involved) and all-or-nothing. Saving and restoring one sequence is in
 * persist.c.
 */
#include <stdlib.h>
#include <string.h>

#include "cache.h"
#include "error.h"

static int check_seq(const tkv_cache *c, const char *fn, const char *what, uint32_t seq)
{
    if (seq >= c->n_seqs)
        return tkv_error(TKV_ERANGE, "%s: %s %u out of range (ids 0..%u)", fn, what, seq, c->n_seqs - 1);
    return TKV_OK;
}

/* Gives back the blocks of seq past the first keep. */
static void release_tail(tkv_cache *c, uint32_t seq, uint32_t keep)
{
    struct tkv_seq_table *t = &c->seqs[seq];
    if (t->n_blocks > keep) {
        tkv_blocks_release(c, t->blocks + keep, t->n_blocks - keep);
        t->n_blocks = keep;
    }
}

static void seq_drop(tkv_cache *c, uint32_t seq)
{
    for (uint32_t l = 0; l < c->n_layers; l++)
        c->layers[l].len[seq] = 0;
    release_tail(c, seq, 0);
}

static int seq_truncate(tkv_cache *c, uint32_t seq, uint32_t n)
{
    int rc = check_seq(c, "tkv_seq_truncate", "sequence", seq);
    if (rc != TKV_OK)
        return rc;
    for (uint32_t l = 0; l < c->n_layers; l++)
        if (c->layers[l].len[seq] > n)
            c->layers[l].len[seq] = n;
    /* the rows past n in a kept block stay but are invisible; an append
     * overwrites them (copying the block first if it is shared) */
    release_tail(c, seq, tkv_blocks_for(c, tkv_seq_max_len(c, seq)));
    return TKV_OK;
}

static int seq_copy(tkv_cache *c, uint32_t src, uint32_t dst, uint32_t n)
{
    static const char fn[] = "tkv_seq_copy";
    int rc;
    if ((rc = check_seq(c, fn, "source", src)) != TKV_OK || (rc = check_seq(c, fn, "destination", dst)) != TKV_OK)
        return rc;
    if (src == dst)
        return tkv_error(TKV_EINVAL, "%s: source and destination are both sequence %u", fn, src);
    uint32_t longest = 0;
    for (uint32_t l = 0; l < c->n_layers; l++) {
        uint32_t len = c->layers[l].len[src] < n ? c->layers[l].len[src] : n;
        longest = len > longest ? len : longest;
    }
    uint32_t nb = tkv_blocks_for(c, longest);
    /* the only step that can fail comes first: dst keeps its tokens if it does */
    struct tkv_seq_table *ts = &c->seqs[src], *td = &c->seqs[dst];
    if ((rc = tkv_table_reserve(td, nb)) != TKV_OK)
        return rc;
    seq_drop(c, dst);
    /* every block is shared, the partly filled last one too: the first write
     * into a shared block copies it (cache.c, prepare_blocks) */
    for (uint32_t b = 0; b < nb; b++) {
        td->blocks[b] = ts->blocks[b];
        c->refs[ts->blocks[b]]++;
    }
    td->n_blocks = nb;
    for (uint32_t l = 0; l < c->n_layers; l++)
        c->layers[l].len[dst] = c->layers[l].len[src] < n ? c->layers[l].len[src] : n;
    return TKV_OK;
}

static int seq_remove(tkv_cache *c, uint32_t seq, const char *fn)
{
    int rc = check_seq(c, fn, "sequence", seq);
    if (rc != TKV_OK)
        return rc;
    seq_drop(c, seq);
    return TKV_OK;
}

static int seq_keep(tkv_cache *c, uint32_t seq)
{
    int rc = check_seq(c, "tkv_seq_keep", "sequence", seq);
    if (rc != TKV_OK)
        return rc;
    for (uint32_t s = 0; s < c->n_seqs; s++)
        if (s != seq)
            seq_drop(c, s);
    return TKV_OK;
}

#define CACHE_CALL(c, fn, call)                                                                    \
    do {                                                                                           \
        if (!(c))                                                                                  \
            return tkv_error(TKV_EINVAL, "%s: cache is NULL", fn);                                 \
        TKV_GUARDED((c)->ctx, fn, call);                                                           \
    } while (0)

int tkv_seq_truncate(tkv_cache *c, uint32_t seq, uint32_t n_tokens)
{
    CACHE_CALL(c, "tkv_seq_truncate", seq_truncate(c, seq, n_tokens));
}

int tkv_seq_copy(tkv_cache *c, uint32_t src, uint32_t dst, uint32_t n_tokens)
{
    CACHE_CALL(c, "tkv_seq_copy", seq_copy(c, src, dst, n_tokens));
}

int tkv_seq_remove(tkv_cache *c, uint32_t seq) { CACHE_CALL(c, "tkv_seq_remove", seq_remove(c, seq, "tkv_seq_remove")); }

int tkv_cache_clear(tkv_cache *c, uint32_t seq) { CACHE_CALL(c, "tkv_cache_clear", seq_remove(c, seq, "tkv_cache_clear")); }

int tkv_seq_keep(tkv_cache *c, uint32_t seq) { CACHE_CALL(c, "tkv_seq_keep", seq_keep(c, seq)); }
