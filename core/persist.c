/*
 * Cache files. Format version 1, all integers little endian:
 *
 *   0   char[8]  magic "TURBOKV\n"
 *   8   u32      format version (1)
 *   12  u32      header bytes (everything before the rows)
 *   16  u32 x 8  n_layers, n_kv_heads, head_dim, capacity, n_seqs,
 *                rotation, scale_mode, 0
 *   48  u64      rotation seed
 *   56  u64      tables id (FNV-1a of codebooks, signs, dense rotations)
 *   64  u32      k_type[n_layers], then v_type[n_layers]
 *       u32      len[n_layers][n_seqs]
 *   header bytes: the packed rows, for each layer, each sequence: the K rows
 *       of each head (len rows of tkv_row_bytes), then the V rows likewise
 *   last 8: u64  FNV-1a 64 of every byte before it
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
#define FILE_VERSION 1u
#define FIXED_HEADER 64u
#define CHUNK (1u << 20)

#define FNV_OFFSET 0xcbf29ce484222325ull
#define FNV_PRIME 0x100000001b3ull

static uint64_t fnv1a(uint64_t h, const void *data, size_t n)
{
    const uint8_t *p = data;
    for (size_t i = 0; i < n; i++)
        h = (h ^ p[i]) * FNV_PRIME;
    return h;
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

struct writer {
    FILE *f;
    uint64_t hash;
    int failed;
};

static void wr(struct writer *w, const void *p, size_t n)
{
    if (w->failed)
        return;
    w->hash = fnv1a(w->hash, p, n);
    if (fwrite(p, 1, n, w->f) != n)
        w->failed = errno ? errno : EIO;
}

/* The rows of one store (K or V) of one sequence, head after head, in
 * CHUNK-sized pieces staged through buf. */
static int write_rows(const tkv_cache *c, const struct tkv_layer_store *s, uint32_t seq, uint32_t len,
                      struct writer *w, uint8_t *buf)
{
    for (uint32_t h = 0; h < c->n_kv_heads; h++) {
        uint64_t off = seq * s->seq_stride + h * s->head_stride, left = (uint64_t)len * s->row_bytes;
        while (left && !w->failed) {
            uint64_t n = left < CHUNK ? left : CHUNK;
            int rc = tkv_dev_read(&c->ctx->device, s->buf, off, buf, n);
            if (rc != TKV_OK)
                return rc;
            wr(w, buf, n);
            off += n;
            left -= n;
        }
    }
    return TKV_OK;
}

static int write_cache(const tkv_cache *c, struct writer *w)
{
    uint64_t hb = header_bytes(c->n_layers, c->n_seqs);
    uint8_t *hdr = calloc(1, hb), *buf = malloc(CHUNK);
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
                                c->n_seqs,   c->rotation,   c->scale_mode, 0 };
    for (int i = 0; i < 8; i++)
        put_u32(hdr + 16 + 4 * i, shape[i]);
    put_u64(hdr + 48, c->ctx->math->rotation_seed);
    put_u64(hdr + 56, c->ctx->math->tables_id);
    uint8_t *p = hdr + FIXED_HEADER;
    for (uint32_t l = 0; l < c->n_layers; l++) {
        put_u32(p + 4 * l, c->layers[l].k.fmt.type);
        put_u32(p + 4 * (c->n_layers + l), c->layers[l].v.fmt.type);
    }
    p += 8 * c->n_layers;
    for (uint32_t l = 0; l < c->n_layers; l++)
        for (uint32_t s = 0; s < c->n_seqs; s++, p += 4)
            put_u32(p, c->layers[l].len[s]);
    wr(w, hdr, hb);
    for (uint32_t l = 0; l < c->n_layers && rc == TKV_OK; l++)
        for (uint32_t s = 0; s < c->n_seqs && rc == TKV_OK; s++)
            if ((rc = write_rows(c, &c->layers[l].k, s, c->layers[l].len[s], w, buf)) == TKV_OK)
                rc = write_rows(c, &c->layers[l].v, s, c->layers[l].len[s], w, buf);
    uint8_t sum[8];
    put_u64(sum, w->hash);
    if (rc == TKV_OK && !w->failed && fwrite(sum, 1, 8, w->f) != 8)
        w->failed = errno ? errno : EIO;
    free(hdr);
    free(buf);
    return rc;
}

int tkv_cache_save(const tkv_cache *c, const char *path)
{
    if (!c || !path || !*path)
        return tkv_error(TKV_EINVAL, "tkv_cache_save: %s", !c ? "cache is NULL" : "path is empty");
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
    struct writer w = { .f = fdopen(fd, "wb"), .hash = FNV_OFFSET };
    int rc = TKV_OK;
    if (!w.f) {
        close(fd);
        w.failed = errno;
    } else {
        errno = 0;
        rc = write_cache(c, &w);
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

/* --- loading */

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

static int read_exact(FILE *f, void *p, size_t n) { return fread(p, 1, n, f) == n ? 0 : -1; }

/* Reads and checks the header, the file size and the checksum. */
static int read_header(FILE *f, const char *path, const tkv_context *ctx, struct file_header *h)
{
    uint8_t fixed[FIXED_HEADER];
    struct stat st;
    memset(h, 0, sizeof *h);
    if (fstat(fileno(f), &st) != 0)
        return tkv_error(TKV_EIO, "cannot stat '%s': %s", path, strerror(errno));
    if (st.st_size < 8 || read_exact(f, fixed, 8) != 0 || memcmp(fixed, FILE_MAGIC, 8) != 0)
        return bad(path, "not a turbokv cache file (bad magic)");
    if ((uint64_t)st.st_size < FIXED_HEADER + 8 || read_exact(f, fixed + 8, FIXED_HEADER - 8) != 0)
        return bad(path, "truncated: %lld bytes, shorter than the header", (long long)st.st_size);
    uint32_t version = get_u32(fixed + 8);
    if (version != FILE_VERSION)
        return bad(path, "format version %u, this build reads version %u", version, FILE_VERSION);
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
    if ((uint64_t)st.st_size < h->header_bytes + 8)
        return bad(path, "truncated: %lld bytes, shorter than its header", (long long)st.st_size);

    size_t nt = 2u * h->n_layers, nl = (size_t)h->n_layers * h->n_seqs;
    uint8_t *raw = malloc((nt + nl) * 4);
    h->types = malloc(nt * sizeof *h->types);
    h->len = malloc(nl * sizeof *h->len);
    if (!raw || !h->types || !h->len) {
        free(raw);
        return tkv_error(TKV_ENOMEM, "out of memory");
    }
    if (read_exact(f, raw, (nt + nl) * 4) != 0) {
        free(raw);
        return bad(path, "truncated header");
    }
    uint64_t rows = 0;
    for (size_t i = 0; i < nt; i++)
        h->types[i] = get_u32(raw + 4 * i);
    for (size_t i = 0; i < nl; i++)
        h->len[i] = get_u32(raw + 4 * (nt + i));
    free(raw);
    for (uint32_t l = 0; l < h->n_layers; l++) {
        uint32_t kt = h->types[l], vt = h->types[h->n_layers + l];
        if (kt >= TKV_TYPE_COUNT || vt >= TKV_TYPE_COUNT)
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
    if ((uint64_t)st.st_size != expect)
        return bad(path, "%s: %lld bytes, its header describes %llu",
                   (uint64_t)st.st_size < expect ? "truncated" : "trailing bytes", (long long)st.st_size,
                   (unsigned long long)expect);

    /* checksum over everything before the last 8 bytes */
    uint8_t *buf = malloc(CHUNK);
    if (!buf)
        return tkv_error(TKV_ENOMEM, "out of memory");
    uint64_t hash = FNV_OFFSET, left = expect - 8;
    rewind(f);
    int rc = TKV_OK;
    while (left && rc == TKV_OK) {
        size_t n = left < CHUNK ? (size_t)left : CHUNK;
        if (read_exact(f, buf, n) != 0)
            rc = tkv_error(TKV_EIO, "cannot read '%s'", path);
        hash = fnv1a(hash, buf, n);
        left -= n;
    }
    if (rc == TKV_OK && (read_exact(f, buf, 8) != 0 || get_u64(buf) != hash))
        rc = bad(path, "checksum mismatch: the file is corrupted");
    free(buf);
    return rc;
}

static void free_header(struct file_header *h)
{
    free(h->types);
    free(h->len);
}

static int upload_rows(tkv_cache *c, struct tkv_layer_store *s, uint32_t seq, uint32_t len, FILE *f,
                       const char *path, uint8_t *buf)
{
    for (uint32_t h = 0; h < c->n_kv_heads; h++) {
        uint64_t off = seq * s->seq_stride + h * s->head_stride, left = (uint64_t)len * s->row_bytes;
        while (left) {
            size_t n = left < CHUNK ? (size_t)left : CHUNK;
            if (read_exact(f, buf, n) != 0)
                return tkv_error(TKV_EIO, "cannot read '%s'", path);
            int rc = tkv_dev_write(&c->ctx->device, s->buf, off, buf, n);
            if (rc != TKV_OK)
                return rc;
            off += n;
            left -= n;
        }
    }
    return TKV_OK;
}

/* Reads a checked file into a new cache of the given capacity. */
static int load_new(tkv_context *ctx, const char *path, FILE *f, const struct file_header *h, uint32_t capacity,
                    tkv_cache **out)
{
    tkv_cache *c = NULL;
    int rc = tkv_cache_new(ctx, h->n_layers, h->n_kv_heads, h->head_dim, capacity, h->n_seqs, h->types,
                           h->types + h->n_layers, h->rotation, h->scale_mode, &c);
    if (rc != TKV_OK)
        return rc;
    uint8_t *buf = malloc(CHUNK);
    if (!buf) {
        tkv_cache_destroy(c);
        return tkv_error(TKV_ENOMEM, "out of memory");
    }
    if (fseeko(f, (off_t)h->header_bytes, SEEK_SET) != 0)
        rc = tkv_error(TKV_EIO, "cannot seek in '%s'", path);
    for (uint32_t l = 0; l < h->n_layers && rc == TKV_OK; l++)
        for (uint32_t s = 0; s < h->n_seqs && rc == TKV_OK; s++) {
            uint32_t len = h->len[(size_t)l * h->n_seqs + s];
            if ((rc = upload_rows(c, &c->layers[l].k, s, len, f, path, buf)) == TKV_OK)
                rc = upload_rows(c, &c->layers[l].v, s, len, f, path, buf);
            c->layers[l].len[s] = len;
        }
    free(buf);
    if (rc != TKV_OK) {
        tkv_cache_destroy(c);
        return rc;
    }
    *out = c;
    return TKV_OK;
}

static int open_file(const char *path, FILE **f)
{
    if (!(*f = fopen(path, "rb")))
        return tkv_error(errno == ENOENT ? TKV_ENOTFOUND : TKV_EIO, "cannot open cache file '%s': %s", path,
                         strerror(errno));
    return TKV_OK;
}

int tkv_cache_load(tkv_context *ctx, const char *path, tkv_cache **out)
{
    if (!ctx || !path || !out)
        return tkv_error(TKV_EINVAL, "tkv_cache_load: NULL argument");
    *out = NULL;
    FILE *f;
    struct file_header h;
    int rc = open_file(path, &f);
    if (rc != TKV_OK)
        return rc;
    rc = read_header(f, path, ctx, &h);
    if (rc == TKV_OK)
        rc = load_new(ctx, path, f, &h, h.capacity, out);
    free_header(&h);
    fclose(f);
    return rc;
}

int tkv_cache_restore(tkv_cache *c, const char *path)
{
    if (!c || !path)
        return tkv_error(TKV_EINVAL, "tkv_cache_restore: NULL argument");
    FILE *f;
    struct file_header h;
    int rc = open_file(path, &f);
    if (rc != TKV_OK)
        return rc;
    rc = read_header(f, path, c->ctx, &h);
    if (rc == TKV_OK && (h.n_layers != c->n_layers || h.n_kv_heads != c->n_kv_heads || h.head_dim != c->head_dim ||
                         h.n_seqs != c->n_seqs))
        rc = bad(path, "shape %u layers x %u kv heads x head_dim %u x %u sequences, the cache is %u x %u x %u x %u",
                 h.n_layers, h.n_kv_heads, h.head_dim, h.n_seqs, c->n_layers, c->n_kv_heads, c->head_dim, c->n_seqs);
    if (rc == TKV_OK && (h.rotation != c->rotation || h.scale_mode != c->scale_mode))
        rc = bad(path, "rotation %u / scale mode %u, the cache uses %u / %u", h.rotation, h.scale_mode, c->rotation,
                 c->scale_mode);
    for (uint32_t l = 0; rc == TKV_OK && l < c->n_layers; l++) {
        uint32_t kt = h.types[l], vt = h.types[h.n_layers + l];
        if (kt != c->layers[l].k.fmt.type || vt != c->layers[l].v.fmt.type)
            rc = bad(path, "layer %u holds K %s / V %s, the cache has K %s / V %s", l, tkv_type_name(kt),
                     tkv_type_name(vt), tkv_type_name(c->layers[l].k.fmt.type), tkv_type_name(c->layers[l].v.fmt.type));
        for (uint32_t s = 0; rc == TKV_OK && s < h.n_seqs; s++)
            if (h.len[(size_t)l * h.n_seqs + s] > c->capacity)
                rc = bad(path, "layer %u sequence %u holds %u tokens, the cache's capacity is %u", l, s,
                         h.len[(size_t)l * h.n_seqs + s], c->capacity);
    }
    tkv_cache *fresh = NULL;
    if (rc == TKV_OK)
        rc = load_new(c->ctx, path, f, &h, c->capacity, &fresh);
    if (rc == TKV_OK) {
        /* built aside and swapped in: a failure above left c untouched */
        tkv_cache_swap(c, fresh);
        tkv_cache_destroy(fresh);
    }
    free_header(&h);
    fclose(f);
    return rc;
}
