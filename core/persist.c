/* SPDX-License-Identifier: MIT */
/*
 * Cache files. Format version 2, all integers little endian:
 *
 *   0   char[8]  magic "TURBOKV\n"
 *   8   u32      format version (2; version 1 files are read too)
 *   12  u32      header bytes (everything before the rows)
 *   16  u32 x 7  n_layers, n_kv_heads, head_dim, capacity, n_seqs,
 *                rotation, scale_mode
 *   44  u32      header check: FNV-1a 64 of the header bytes but these four,
 *                folded to 32 bits (version 1: zero)
 *   48  u64      rotation seed
 *   56  u64      tables id (FNV-1a of codebooks, signs, dense rotations)
 *   64  u32      k_type[n_layers], then v_type[n_layers]
 *       u32      len[n_layers][n_seqs]
 *   header bytes: the packed rows, for each layer, each sequence: the K rows
 *       of each head (len rows of tkv_row_bytes), then the V rows likewise
 *   last 8: u64  FNV-1a 64 of every byte before it
 *
 * The header check makes an edit of the header alone - a rotation, scale
 * mode, type or length changed and the trailing checksum recomputed, which
 * the checksum cannot see - fail with its own message: rows written under
 * one rotation are never decoded under another. (It is no signature: whoever
 * rewrites both can write any rows.)
 *
 * The rows are written in this logical order whatever the cache's block
 * size: a file does not depend on paging, and loads into a cache of any
 * block_tokens.
 *
 * One sequence's image (tkv_seq_state_*, tkv_seq_save/restore) is the same
 * format with n_seqs = 1, in a file or in the caller's memory.
 *
 * Saving writes a temporary file beside the target and renames it over the
 * target, so a failed save leaves an older file intact. Loading checks the
 * magic, the version, the shape, the seed and tables, the exact size and the
 * checksum before the cache is touched.
 */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cache.h"
#include "error.h"

#define FILE_MAGIC "TURBOKV\n"
#define FILE_VERSION 2u
#define FIXED_HEADER 64u
#define CHUNK (1u << 20)
#define CHUNK_MIN (4u * TKV_HEAD_DIM_MAX) /* an f32 row of the largest head_dim */

/* Staging for n bytes of rows: no more than they need (a small file does not
 * cost a megabyte), no less than a row. */
static size_t chunk_for(uint64_t n)
{
    return n < CHUNK_MIN ? CHUNK_MIN : n > CHUNK ? CHUNK : (size_t)n;
}

#define FNV_OFFSET 0xcbf29ce484222325ull
#define FNV_PRIME 0x100000001b3ull

static uint64_t fnv1a(uint64_t h, const void *data, size_t n)
{
    const uint8_t *p = data;
    for (size_t i = 0; i < n; i++)
        h = (h ^ p[i]) * FNV_PRIME;
    return h;
}

/* The header check (offset 44) over the fixed header but its own word and
 * the rest of the header (types, lengths). */
static uint32_t header_check(const uint8_t *fixed, const uint8_t *rest, size_t rest_n)
{
    uint64_t h = fnv1a(FNV_OFFSET, fixed, 44);
    h = fnv1a(h, fixed + 48, FIXED_HEADER - 48);
    h = fnv1a(h, rest, rest_n);
    return (uint32_t)(h ^ (h >> 32));
}

static void put_u32(uint8_t *p, uint32_t v)
{
    for (int i = 0; i < 4; i++)
        p[i] = (uint8_t)(v >> (8 * i));
}

static void put_u64(uint8_t *p, uint64_t v)
{
    for (int i = 0; i < 8; i++)
        p[i] = (uint8_t)(v >> (8 * i));
}

static uint32_t get_u32(const uint8_t *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static uint64_t get_u64(const uint8_t *p) { return get_u32(p) | (uint64_t)get_u32(p + 4) << 32; }

static uint64_t header_bytes(uint32_t n_layers, uint32_t n_seqs)
{
    return FIXED_HEADER + 8ull * n_layers + 4ull * n_layers * n_seqs;
}

/* --- saving */

/* Writes to a FILE, or to memory (mem, size) when f is NULL. */
struct writer {
    FILE *f;
    uint8_t *mem;
    uint64_t size, pos;
    uint64_t hash;
    int failed;
};

static void wr(struct writer *w, const void *p, size_t n)
{
    if (w->failed)
        return;
    w->hash = fnv1a(w->hash, p, n);
    if (w->f) {
        if (fwrite(p, 1, n, w->f) != n)
            w->failed = errno ? errno : EIO;
        return;
    }
    if (n > w->size - w->pos) {
        w->failed = ENOSPC;
        return;
    }
    memcpy(w->mem + w->pos, p, n);
    w->pos += n;
}

static int wr_rows(void *user, uint8_t *data, size_t n)
{
    wr(user, data, n);
    return TKV_OK;
}

static uint64_t image_bytes(const tkv_cache *c, uint32_t s0, uint32_t ns)
{
    uint64_t n = header_bytes(c->n_layers, ns) + 8;
    for (uint32_t l = 0; l < c->n_layers; l++)
        for (uint32_t s = s0; s < s0 + ns; s++)
            n += (uint64_t)c->layers[l].len[s] * c->n_kv_heads *
                 (c->layers[l].k.pool.row_bytes + c->layers[l].v.pool.row_bytes);
    return n;
}

/* Writes the file of sequences [s0, s0 + ns) (all of them, or one). */
static int write_cache(tkv_cache *c, struct writer *w, uint32_t s0, uint32_t ns)
{
    uint64_t hb = header_bytes(c->n_layers, ns);
    const size_t chunk = chunk_for(image_bytes(c, s0, ns));
    uint8_t *hdr = calloc(1, hb), *buf = malloc(chunk);
    int rc = TKV_OK;
    if (!hdr || !buf) {
        free(hdr);
        free(buf);
        return tkv_error(TKV_ENOMEM, "out of memory");
    }
    memcpy(hdr, FILE_MAGIC, 8);
    put_u32(hdr + 8, FILE_VERSION);
    put_u32(hdr + 12, (uint32_t)hb);
    const uint32_t shape[8] = { c->n_layers, c->n_kv_heads, c->head_dim, c->capacity,
                                ns,          c->rotation,   c->scale_mode, 0 /* header check */ };
    for (int i = 0; i < 8; i++)
        put_u32(hdr + 16 + 4 * i, shape[i]);
    put_u64(hdr + 48, c->ctx->math->rotation_seed);
    put_u64(hdr + 56, c->ctx->math->tables_id);
    uint8_t *p = hdr + FIXED_HEADER;
    for (uint32_t l = 0; l < c->n_layers; l++) {
        put_u32(p + 4 * l, c->layers[l].k.pool.fmt.type);
        put_u32(p + 4 * (c->n_layers + l), c->layers[l].v.pool.fmt.type);
    }
    p += 8 * c->n_layers;
    for (uint32_t l = 0; l < c->n_layers; l++)
        for (uint32_t s = s0; s < s0 + ns; s++, p += 4)
            put_u32(p, c->layers[l].len[s]);
    put_u32(hdr + 44, header_check(hdr, hdr + FIXED_HEADER, hb - FIXED_HEADER));
    wr(w, hdr, hb);
    for (uint32_t l = 0; l < c->n_layers && rc == TKV_OK; l++)
        for (uint32_t s = s0; s < s0 + ns && rc == TKV_OK; s++) {
            uint32_t len = c->layers[l].len[s];
            if ((rc = tkv_store_rows(c, &c->layers[l].k, c->seqs[s].blocks, len, 0, wr_rows, w, buf, chunk)) ==
                TKV_OK)
                rc = tkv_store_rows(c, &c->layers[l].v, c->seqs[s].blocks, len, 0, wr_rows, w, buf, chunk);
        }
    uint8_t sum[8];
    put_u64(sum, w->hash);
    uint64_t hash = w->hash;
    if (rc == TKV_OK)
        wr(w, sum, 8);
    w->hash = hash;
    free(hdr);
    free(buf);
    return rc;
}

/* Bytes of the file of sequences [s0, s0 + ns). */

/* The process umask, read without changing it (umask() would race other
 * threads): the Umask line of /proc/self/status, else the common 022. */
static mode_t current_umask(void)
{
    FILE *f = fopen("/proc/self/status", "r");
    char line[256];
    unsigned mask = 022;
    while (f && fgets(line, sizeof line, f))
        if (sscanf(line, "Umask: %o", &mask) == 1)
            break;
    if (f)
        fclose(f);
    return (mode_t)(mask & 0777);
}

/* What the saved file's mode will be: an existing file keeps its mode; a
 * new one gets 0666 less the umask, as open(O_CREAT) would give it. The
 * target must be a regular file or absent: a symlink, a device, a FIFO or a
 * directory is refused, never replaced. */
static int save_target(const char *path, mode_t *mode)
{
    struct stat st;
    if (lstat(path, &st) != 0) {
        if (errno != ENOENT)
            return tkv_error(TKV_EIO, "cannot save cache to '%s': %s", path, strerror(errno));
        *mode = 0666 & ~current_umask();
        return TKV_OK;
    }
    if (S_ISLNK(st.st_mode))
        return tkv_error(TKV_EINVAL, "cannot save cache to '%s': it is a symbolic link (save to its target instead)",
                         path);
    if (!S_ISREG(st.st_mode))
        return tkv_error(TKV_EINVAL, "cannot save cache to '%s': not a regular file", path);
    *mode = st.st_mode & 07777;
    return TKV_OK;
}

static int save_path(tkv_cache *c, const char *path, uint32_t s0, uint32_t ns)
{
    mode_t mode;
    int rc = save_target(path, &mode);
    if (rc != TKV_OK)
        return rc;
    size_t n = strlen(path);
    char *tmp = malloc(n + 16);
    if (!tmp)
        return tkv_error(TKV_ENOMEM, "out of memory");
    snprintf(tmp, n + 16, "%s.tmp.XXXXXX", path);
    int fd = mkstemp(tmp);
    if (fd < 0) {
        int e = errno;
        free(tmp);
        return tkv_error(TKV_EIO, "cannot save cache to '%s': %s", path, strerror(e));
    }
    if (fchmod(fd, mode) != 0) {
        int e = errno;
        close(fd);
        unlink(tmp);
        free(tmp);
        return tkv_error(TKV_EIO, "cannot save cache to '%s': chmod: %s", path, strerror(e));
    }
    struct writer w = { .f = fdopen(fd, "wb"), .hash = FNV_OFFSET };
    if (!w.f) {
        close(fd);
        w.failed = errno;
    } else {
        errno = 0;
        rc = write_cache(c, &w, s0, ns);
        if (fflush(w.f) != 0 || fsync(fileno(w.f)) != 0)
            w.failed = w.failed ? w.failed : errno;
        if (fclose(w.f) != 0)
            w.failed = w.failed ? w.failed : errno;
    }
    if (rc == TKV_OK && w.failed)
        rc = tkv_error(TKV_EIO, "cannot save cache to '%s': %s", path, strerror(w.failed));
    if (rc == TKV_OK && rename(tmp, path) != 0)
        rc = tkv_error(TKV_EIO, "cannot save cache to '%s': rename: %s", path, strerror(errno));
    if (rc != TKV_OK)
        unlink(tmp);
    free(tmp);
    return rc;
}

int tkv_cache_save(const tkv_cache *cc, const char *path)
{
    tkv_cache *c = (tkv_cache *)cc; /* reads only; the row callbacks take a mutable cache */
    if (!c || !path || !*path)
        return tkv_error(TKV_EINVAL, "tkv_cache_save: %s", !c ? "cache is NULL" : "path is empty");
    TKV_GUARDED(c->ctx, "tkv_cache_save", save_path(c, path, 0, c->n_seqs));
}

/* --- loading */

/* Reads from a FILE, or from memory (mem, size) when f is NULL. */
struct source {
    FILE *f;
    const uint8_t *mem;
    uint64_t size, pos;
    const char *name; /* for messages: the path, or "memory image" */
};

static int src_read(struct source *r, void *p, size_t n)
{
    if (r->f)
        return fread(p, 1, n, r->f) == n ? 0 : -1;
    if (n > r->size - r->pos)
        return -1;
    memcpy(p, r->mem + r->pos, n);
    r->pos += n;
    return 0;
}

static int src_seek(struct source *r, uint64_t off)
{
    if (r->f)
        return fseeko(r->f, (off_t)off, SEEK_SET);
    if (off > r->size)
        return -1;
    r->pos = off;
    return 0;
}

struct file_header {
    uint32_t n_layers, n_kv_heads, head_dim, capacity, n_seqs, rotation, scale_mode;
    uint64_t seed, tables_id, header_bytes;
    uint32_t *types; /* [2 * n_layers]: K types then V types */
    uint32_t *len;   /* [n_layers * n_seqs] */
};

static int bad(const char *path, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static int bad(const char *path, const char *fmt, ...)
{
    char msg[768];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    return tkv_error(TKV_EFORMAT, "cache file '%s': %s", path, msg);
}

/* Reads and checks the header, the size and the checksum. */
static int read_header(struct source *f, const tkv_context *ctx, struct file_header *h)
{
    const char *path = f->name;
    uint8_t fixed[FIXED_HEADER];
    memset(h, 0, sizeof *h);
    uint64_t size = f->size;
    if (size < 8 || src_read(f, fixed, 8) != 0 || memcmp(fixed, FILE_MAGIC, 8) != 0)
        return bad(path, "not a turbokv cache file (bad magic)");
    if (size < FIXED_HEADER + 8 || src_read(f, fixed + 8, FIXED_HEADER - 8) != 0)
        return bad(path, "truncated: %llu bytes, shorter than the header", (unsigned long long)size);
    uint32_t version = get_u32(fixed + 8);
    if (version != FILE_VERSION && version != 1)
        return bad(path, "format version %u, this build reads versions 1 and %u", version, FILE_VERSION);
    h->n_layers = get_u32(fixed + 16);
    h->n_kv_heads = get_u32(fixed + 20);
    h->head_dim = get_u32(fixed + 24);
    h->capacity = get_u32(fixed + 28);
    h->n_seqs = get_u32(fixed + 32);
    h->rotation = get_u32(fixed + 36);
    h->scale_mode = get_u32(fixed + 40);
    h->seed = get_u64(fixed + 48);
    h->tables_id = get_u64(fixed + 56);
    h->header_bytes = get_u32(fixed + 12);
    if (version == 1 && get_u32(fixed + 44) != 0)
        return bad(path, "corrupted header (reserved word 0x%08x is not zero)", get_u32(fixed + 44));
    if (h->n_layers == 0 || h->n_layers > 4096 || h->n_kv_heads == 0 || h->n_kv_heads > 1024 ||
        !tkv_head_dim_supported(h->head_dim) || h->capacity == 0 || h->n_seqs == 0 || h->n_seqs > 65536 ||
        h->rotation == 0 || h->rotation >= TKV_ROTATION_COUNT || h->scale_mode == 0 ||
        h->scale_mode >= TKV_SCALE_COUNT)
        return bad(path, "corrupted header (layers %u, kv heads %u, head_dim %u, capacity %u, sequences %u)",
                   h->n_layers, h->n_kv_heads, h->head_dim, h->capacity, h->n_seqs);
    if (h->header_bytes != header_bytes(h->n_layers, h->n_seqs))
        return bad(path, "corrupted header (header size %llu, expected %llu)", (unsigned long long)h->header_bytes,
                   (unsigned long long)header_bytes(h->n_layers, h->n_seqs));
    if (h->seed != ctx->math->rotation_seed)
        return bad(path, "written with rotation seed 0x%016llx, this context uses 0x%016llx",
                   (unsigned long long)h->seed, (unsigned long long)ctx->math->rotation_seed);
    if (h->tables_id != ctx->math->tables_id)
        return bad(path, "written with codebook tables 0x%016llx, this build has 0x%016llx",
                   (unsigned long long)h->tables_id, (unsigned long long)ctx->math->tables_id);
    if (size < h->header_bytes + 8)
        return bad(path, "truncated: %llu bytes, shorter than its header", (unsigned long long)size);

    size_t nt = 2u * h->n_layers, nl = (size_t)h->n_layers * h->n_seqs;
    uint8_t *raw = malloc((nt + nl) * 4);
    h->types = malloc(nt * sizeof *h->types);
    h->len = malloc(nl * sizeof *h->len);
    if (!raw || !h->types || !h->len) {
        free(raw);
        return tkv_error(TKV_ENOMEM, "out of memory");
    }
    if (src_read(f, raw, (nt + nl) * 4) != 0) {
        free(raw);
        return bad(path, "truncated header");
    }
    /* compared after the checksum: a damaged file says so, an edited one
     * that carries a fresh checksum fails here */
    const uint32_t check = header_check(fixed, raw, (nt + nl) * 4), stored_check = get_u32(fixed + 44);
    uint64_t rows = 0;
    for (size_t i = 0; i < nt; i++)
        h->types[i] = get_u32(raw + 4 * i);
    for (size_t i = 0; i < nl; i++)
        h->len[i] = get_u32(raw + 4 * (nt + i));
    free(raw);
    for (uint32_t l = 0; l < h->n_layers; l++) {
        uint32_t kt = h->types[l], vt = h->types[h->n_layers + l];
        if (kt >= TKV_TYPE_COUNT || vt >= TKV_TYPE_COUNT || tkv_type_is_qjl(vt))
            return bad(path, "corrupted header (layer %u types %u/%u)", l, kt, vt);
        uint64_t per_token = (uint64_t)h->n_kv_heads * (tkv_row_bytes(kt, h->head_dim) + tkv_row_bytes(vt, h->head_dim));
        for (uint32_t s = 0; s < h->n_seqs; s++) {
            uint32_t len = h->len[(size_t)l * h->n_seqs + s];
            if (len > h->capacity)
                return bad(path, "corrupted header (layer %u sequence %u holds %u tokens, capacity %u)", l, s, len,
                           h->capacity);
            rows += len * per_token;
        }
    }
    uint64_t expect = h->header_bytes + rows + 8;
    if (size != expect)
        return bad(path, "%s: %llu bytes, its header describes %llu", size < expect ? "truncated" : "trailing bytes",
                   (unsigned long long)size, (unsigned long long)expect);

    /* checksum over everything before the last 8 bytes */
    const size_t chunk = chunk_for(expect);
    uint8_t *buf = malloc(chunk);
    if (!buf)
        return tkv_error(TKV_ENOMEM, "out of memory");
    uint64_t hash = FNV_OFFSET, left = expect - 8;
    int rc = src_seek(f, 0) == 0 ? TKV_OK : tkv_error(TKV_EIO, "cannot seek in '%s'", path);
    while (left && rc == TKV_OK) {
        size_t n = left < chunk ? (size_t)left : chunk;
        if (src_read(f, buf, n) != 0)
            rc = tkv_error(TKV_EIO, "cannot read '%s'", path);
        hash = fnv1a(hash, buf, n);
        left -= n;
    }
    if (rc == TKV_OK && (src_read(f, buf, 8) != 0 || get_u64(buf) != hash))
        rc = bad(path, "checksum mismatch: the file is corrupted");
    if (rc == TKV_OK && version >= 2 && check != stored_check)
        rc = bad(path, "header check 0x%08x does not match its fields (0x%08x): the header was edited apart from "
                 "its rows (rotation, scale mode, types or lengths)", stored_check, check);
    free(buf);
    return rc;
}

static void free_header(struct file_header *h)
{
    free(h->types);
    free(h->len);
}

static int rd_rows(void *user, uint8_t *data, size_t n)
{
    struct source *src = user;
    return src_read(src, data, n) == 0 ? TKV_OK : tkv_error(TKV_EIO, "cannot read '%s'", src->name);
}

/* Uploads sequence s of the file (rows at the source's position, layer by
 * layer interleaved with the other sequences: the caller positions it) into
 * blocks of the cache. */
static int upload_layer_seq(tkv_cache *c, uint32_t l, const uint32_t *blocks, uint32_t len, struct source *f,
                            uint8_t *buf)
{
    const size_t chunk = chunk_for(f->size);
    int rc = tkv_store_rows(c, &c->layers[l].k, blocks, len, 1, rd_rows, f, buf, chunk);
    if (rc == TKV_OK)
        rc = tkv_store_rows(c, &c->layers[l].v, blocks, len, 1, rd_rows, f, buf, chunk);
    return rc;
}

static uint32_t file_max_len(const struct file_header *h, uint32_t s)
{
    uint32_t m = 0;
    for (uint32_t l = 0; l < h->n_layers; l++)
        if (h->len[(size_t)l * h->n_seqs + s] > m)
            m = h->len[(size_t)l * h->n_seqs + s];
    return m;
}

/* Reads a checked file into a new cache of the given capacity. */
static int load_new(tkv_context *ctx, struct source *f, const struct file_header *h, uint32_t capacity,
                    uint32_t block_tokens, tkv_cache **out)
{
    tkv_cache *c = NULL;
    struct tkv_cache_geometry g = {
        .n_layers = h->n_layers, .n_kv_heads = h->n_kv_heads, .head_dim = h->head_dim, .capacity = capacity,
        .n_seqs = h->n_seqs, .rotation = h->rotation, .scale_mode = h->scale_mode, .block_tokens = block_tokens,
    };
    int rc = tkv_cache_new(ctx, &g, h->types, h->types + h->n_layers, &c);
    if (rc != TKV_OK)
        return rc;
    /* blocks for every sequence first: the pool grows once */
    uint32_t total = 0;
    for (uint32_t s = 0; s < h->n_seqs; s++)
        total += tkv_blocks_for(c, file_max_len(h, s));
    uint8_t *buf = malloc(chunk_for(f->size));
    uint32_t *ids = malloc((total ? total : 1) * sizeof *ids);
    if (!buf || !ids)
        rc = tkv_error(TKV_ENOMEM, "out of memory");
    if (rc == TKV_OK && total)
        rc = tkv_blocks_take(c, total, ids);
    for (uint32_t s = 0, at = 0; s < h->n_seqs && rc == TKV_OK; s++) {
        uint32_t nb = tkv_blocks_for(c, file_max_len(h, s));
        if ((rc = tkv_table_reserve(&c->seqs[s], nb)) == TKV_OK && nb) {
            memcpy(c->seqs[s].blocks, ids + at, (size_t)nb * sizeof *ids);
            c->seqs[s].n_blocks = nb;
        }
        at += nb;
    }
    if (rc == TKV_OK && src_seek(f, h->header_bytes) != 0)
        rc = tkv_error(TKV_EIO, "cannot seek in '%s'", f->name);
    for (uint32_t l = 0; l < h->n_layers && rc == TKV_OK; l++)
        for (uint32_t s = 0; s < h->n_seqs && rc == TKV_OK; s++) {
            uint32_t len = h->len[(size_t)l * h->n_seqs + s];
            rc = upload_layer_seq(c, l, c->seqs[s].blocks, len, f, buf);
            c->layers[l].len[s] = len;
        }
    free(buf);
    free(ids);
    if (rc != TKV_OK) {
        tkv_cache_free(c);
        return rc;
    }
    *out = c;
    return TKV_OK;
}

static int open_file(const char *path, FILE **f, struct source *src)
{
    struct stat st;
    if (!(*f = fopen(path, "rb")))
        return tkv_error(errno == ENOENT ? TKV_ENOTFOUND : TKV_EIO, "cannot open cache file '%s': %s", path,
                         strerror(errno));
    if (fstat(fileno(*f), &st) != 0) {
        int e = errno;
        fclose(*f);
        return tkv_error(TKV_EIO, "cannot stat '%s': %s", path, strerror(e));
    }
    *src = (struct source){ .f = *f, .size = (uint64_t)st.st_size, .name = path };
    return TKV_OK;
}

static int cache_load(tkv_context *ctx, const char *path, tkv_cache **out)
{
    FILE *f;
    struct source src;
    struct file_header h;
    int rc = open_file(path, &f, &src);
    if (rc != TKV_OK)
        return rc;
    rc = read_header(&src, ctx, &h);
    if (rc == TKV_OK)
        rc = load_new(ctx, &src, &h, h.capacity, 0, out);
    free_header(&h);
    fclose(f);
    return rc;
}

int tkv_cache_load(tkv_context *ctx, const char *path, tkv_cache **out)
{
    if (!ctx || !path || !out)
        return tkv_error(TKV_EINVAL, "tkv_cache_load: NULL argument");
    *out = NULL;
    TKV_GUARDED(ctx, "tkv_cache_load", cache_load(ctx, path, out));
}

/* Does a checked file fit this cache? n_seqs: what the file must hold. */
static int check_match(const tkv_cache *c, const struct file_header *h, uint32_t n_seqs, const char *path)
{
    if (h->n_layers != c->n_layers || h->n_kv_heads != c->n_kv_heads || h->head_dim != c->head_dim ||
        h->n_seqs != n_seqs)
        return bad(path, "shape %u layers x %u kv heads x head_dim %u x %u sequences, expected %u x %u x %u x %u",
                   h->n_layers, h->n_kv_heads, h->head_dim, h->n_seqs, c->n_layers, c->n_kv_heads, c->head_dim, n_seqs);
    if (h->rotation != c->rotation || h->scale_mode != c->scale_mode)
        return bad(path, "rotation %u / scale mode %u, the cache uses %u / %u", h->rotation, h->scale_mode, c->rotation,
                   c->scale_mode);
    for (uint32_t l = 0; l < c->n_layers; l++) {
        uint32_t kt = h->types[l], vt = h->types[h->n_layers + l];
        if (kt != c->layers[l].k.pool.fmt.type || vt != c->layers[l].v.pool.fmt.type)
            return bad(path, "layer %u holds K %s / V %s, the cache has K %s / V %s", l, tkv_type_name(kt),
                       tkv_type_name(vt), tkv_type_name(c->layers[l].k.pool.fmt.type),
                       tkv_type_name(c->layers[l].v.pool.fmt.type));
        for (uint32_t s = 0; s < h->n_seqs; s++)
            if (h->len[(size_t)l * h->n_seqs + s] > c->capacity)
                return bad(path, "layer %u sequence %u holds %u tokens, the cache's capacity is %u", l, s,
                           h->len[(size_t)l * h->n_seqs + s], c->capacity);
    }
    return TKV_OK;
}

static int cache_restore(tkv_cache *c, const char *path)
{
    FILE *f;
    struct source src;
    struct file_header h;
    int rc = open_file(path, &f, &src);
    if (rc != TKV_OK)
        return rc;
    rc = read_header(&src, c->ctx, &h);
    if (rc == TKV_OK)
        rc = check_match(c, &h, c->n_seqs, path);
    tkv_cache *fresh = NULL;
    if (rc == TKV_OK)
        rc = load_new(c->ctx, &src, &h, c->capacity, c->block_tokens, &fresh);
    if (rc == TKV_OK) {
        /* built aside and swapped in: a failure above left c untouched */
        tkv_cache_swap(c, fresh);
        tkv_cache_free(fresh);
    }
    free_header(&h);
    fclose(f);
    return rc;
}

int tkv_cache_restore(tkv_cache *c, const char *path)
{
    if (!c || !path)
        return tkv_error(TKV_EINVAL, "tkv_cache_restore: NULL argument");
    TKV_GUARDED(c->ctx, "tkv_cache_restore", cache_restore(c, path));
}

/* --- one sequence */

/* Replaces seq's tokens with a checked one-sequence image: rows go into new
 * blocks first, and seq's table changes only once all of them are there. */
static int seq_restore(tkv_cache *c, uint32_t seq, struct source *src)
{
    struct file_header h;
    int rc = read_header(src, c->ctx, &h);
    if (rc == TKV_OK)
        rc = check_match(c, &h, 1, src->name);
    uint32_t nb = rc == TKV_OK ? tkv_blocks_for(c, file_max_len(&h, 0)) : 0;
    uint32_t *ids = malloc((nb ? nb : 1) * sizeof *ids);
    uint8_t *buf = malloc(chunk_for(src->size));
    int taken = 0;
    if (rc == TKV_OK && (!ids || !buf))
        rc = tkv_error(TKV_ENOMEM, "out of memory");
    if (rc == TKV_OK)
        rc = tkv_table_reserve(&c->seqs[seq], nb);
    if (rc == TKV_OK && nb && (rc = tkv_blocks_take(c, nb, ids)) == TKV_OK)
        taken = 1;
    if (rc == TKV_OK && src_seek(src, h.header_bytes) != 0)
        rc = tkv_error(TKV_EIO, "cannot seek in '%s'", src->name);
    for (uint32_t l = 0; l < c->n_layers && rc == TKV_OK; l++)
        rc = upload_layer_seq(c, l, ids, h.len[l], src, buf);
    if (rc == TKV_OK) {
        struct tkv_seq_table *t = &c->seqs[seq];
        tkv_blocks_release(c, t->blocks, t->n_blocks);
        if (nb)
            memcpy(t->blocks, ids, (size_t)nb * sizeof *ids);
        t->n_blocks = nb;
        for (uint32_t l = 0; l < c->n_layers; l++)
            c->layers[l].len[seq] = h.len[l];
    } else if (taken)
        tkv_blocks_release(c, ids, nb);
    free(ids);
    free(buf);
    free_header(&h);
    return rc;
}

static int check_seq(const tkv_cache *c, const char *fn, uint32_t seq)
{
    if (seq >= c->n_seqs)
        return tkv_error(TKV_ERANGE, "%s: sequence %u out of range (ids 0..%u)", fn, seq, c->n_seqs - 1);
    return TKV_OK;
}

static int seq_state_size(tkv_cache *c, uint32_t seq, size_t *bytes)
{
    int rc = check_seq(c, "tkv_seq_state_size", seq);
    if (rc == TKV_OK)
        *bytes = (size_t)image_bytes(c, seq, 1);
    return rc;
}

static int seq_state_get(tkv_cache *c, uint32_t seq, void *dst, size_t size, size_t *written)
{
    int rc = check_seq(c, "tkv_seq_state_get", seq);
    if (rc != TKV_OK)
        return rc;
    uint64_t need = image_bytes(c, seq, 1);
    if (size < need)
        return tkv_error(TKV_ERANGE, "tkv_seq_state_get: the image of sequence %u takes %llu bytes, the buffer has %zu",
                         seq, (unsigned long long)need, size);
    struct writer w = { .mem = dst, .size = size, .hash = FNV_OFFSET };
    if ((rc = write_cache(c, &w, seq, 1)) != TKV_OK)
        return rc;
    if (w.failed)
        return tkv_error(TKV_EIO, "tkv_seq_state_get: %s", strerror(w.failed));
    if (written)
        *written = (size_t)w.pos;
    return TKV_OK;
}

static int seq_state_set(tkv_cache *c, uint32_t seq, const void *data, size_t size)
{
    int rc = check_seq(c, "tkv_seq_state_set", seq);
    if (rc != TKV_OK)
        return rc;
    struct source src = { .mem = data, .size = size, .name = "memory image" };
    return seq_restore(c, seq, &src);
}

static int seq_save(tkv_cache *c, uint32_t seq, const char *path)
{
    int rc = check_seq(c, "tkv_seq_save", seq);
    return rc == TKV_OK ? save_path(c, path, seq, 1) : rc;
}

static int seq_restore_path(tkv_cache *c, uint32_t seq, const char *path)
{
    int rc = check_seq(c, "tkv_seq_restore", seq);
    if (rc != TKV_OK)
        return rc;
    FILE *f;
    struct source src;
    if ((rc = open_file(path, &f, &src)) != TKV_OK)
        return rc;
    rc = seq_restore(c, seq, &src);
    fclose(f);
    return rc;
}

#define SEQ_CALL(c, fn, cond, call)                                                                \
    do {                                                                                           \
        if (!(c) || !(cond))                                                                       \
            return tkv_error(TKV_EINVAL, "%s: NULL argument", fn);                                 \
        TKV_GUARDED((c)->ctx, fn, call);                                                           \
    } while (0)

int tkv_seq_state_size(const tkv_cache *c, uint32_t seq, size_t *bytes)
{
    SEQ_CALL(c, "tkv_seq_state_size", bytes, seq_state_size((tkv_cache *)c, seq, bytes));
}

int tkv_seq_state_get(const tkv_cache *c, uint32_t seq, void *dst, size_t size, size_t *written)
{
    SEQ_CALL(c, "tkv_seq_state_get", dst, seq_state_get((tkv_cache *)c, seq, dst, size, written));
}

int tkv_seq_state_set(tkv_cache *c, uint32_t seq, const void *src, size_t size)
{
    SEQ_CALL(c, "tkv_seq_state_set", src, seq_state_set(c, seq, src, size));
}

int tkv_seq_save(const tkv_cache *c, uint32_t seq, const char *path)
{
    SEQ_CALL(c, "tkv_seq_save", path && *path, seq_save((tkv_cache *)c, seq, path));
}

int tkv_seq_restore(tkv_cache *c, uint32_t seq, const char *path)
{
    SEQ_CALL(c, "tkv_seq_restore", path, seq_restore_path(c, seq, path));
}
