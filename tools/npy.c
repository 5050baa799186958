/* SPDX-License-Identifier: MIT */
/*
 * .npy reader. The format (numpy/lib/format.py): the magic "\x93NUMPY", a
 * major and minor version byte, the header length (uint16 in 1.0, uint32
 * in 2.0 and 3.0, little endian), then a Python dict literal such as
 * {'descr': '<i4', 'fortran_order': False, 'shape': (512,), } padded with
 * spaces to a 64-byte boundary and ended by '\n', then the raw data.
 */
#include "npy.h"
#include "file_error.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* numpy writes headers of a few hundred bytes; 1 MiB is far above any
 * it writes and bounds what a damaged length makes us allocate. */
#define NPY_MAX_HEADER (1u << 20)


/* Cursor over the header dict. */
struct header {
    const char *p, *end;
};

static void skip_space(struct header *h)
{
    while (h->p < h->end && (*h->p == ' ' || *h->p == '\t' || *h->p == '\n'))
        h->p++;
}

static int accept(struct header *h, char c)
{
    skip_space(h);
    if (h->p < h->end && *h->p == c) {
        h->p++;
        return 1;
    }
    return 0;
}

/* A quoted Python string without escapes (all numpy writes). */
static int parse_string(struct header *h, char *out, size_t size)
{
    skip_space(h);
    if (h->p >= h->end || (*h->p != '\'' && *h->p != '"'))
        return -1;
    char quote = *h->p++;
    size_t n = 0;
    while (h->p < h->end && *h->p != quote) {
        if (n + 1 >= size || *h->p == '\0') /* a NUL would cut the key short: 'descr\0x' */
            return -1;
        out[n++] = *h->p++;
    }
    if (h->p >= h->end)
        return -1;
    h->p++;
    out[n] = '\0';
    return 0;
}

static int parse_uint(struct header *h, uint64_t *v)
{
    skip_space(h);
    if (h->p >= h->end || *h->p < '0' || *h->p > '9')
        return -1;
    uint64_t x = 0;
    while (h->p < h->end && *h->p >= '0' && *h->p <= '9') {
        unsigned d = (unsigned)(*h->p++ - '0');
        if (x > (UINT64_MAX - d) / 10)
            return -1;
        x = x * 10 + d;
    }
    if (h->p < h->end && *h->p == 'L') /* Python 2 long suffix */
        h->p++;
    *v = x;
    return 0;
}

/* A Python tuple: (), (n,), (a, b), (a, b,). "(n)" is refused: it is the
 * integer n, not a tuple, and numpy never writes it. */
static int parse_shape(struct header *h, struct npy_array *arr)
{
    if (!accept(h, '('))
        return -1;
    arr->ndim = 0;
    while (!accept(h, ')')) {
        if (arr->ndim == NPY_MAX_DIMS || parse_uint(h, &arr->shape[arr->ndim]) != 0)
            return -1;
        arr->ndim++;
        if (!accept(h, ',')) {
            if (arr->ndim == 1 || !accept(h, ')'))
                return -1;
            break;
        }
    }
    return 0;
}

static int parse_bool(struct header *h, int *v)
{
    skip_space(h);
    size_t left = (size_t)(h->end - h->p);
    if (left >= 4 && memcmp(h->p, "True", 4) == 0) {
        h->p += 4;
        *v = 1;
        return 0;
    }
    if (left >= 5 && memcmp(h->p, "False", 5) == 0) {
        h->p += 5;
        *v = 0;
        return 0;
    }
    return -1;
}

/* The header dict: exactly the keys descr, fortran_order and shape, each
 * once, then only the blanks that pad it (numpy pads with spaces and ends
 * with '\n'). */
static int parse_header(const char *path, const char *text, size_t len, enum npy_dtype dtype,
                        struct npy_array *arr, char *err, size_t err_size)
{
    struct header h = { text, text + len };
    char key[32], descr[32] = "";
    int fortran = -1, have_shape = 0;

    if (!accept(&h, '{'))
        return file_error(err, err_size, path, "header is not a dict");
    while (!accept(&h, '}')) {
        if (parse_string(&h, key, sizeof key) != 0 || !accept(&h, ':'))
            return file_error(err, err_size, path, "malformed header dict");
        if (strcmp(key, "descr") == 0) {
            if (descr[0])
                return file_error(err, err_size, path, "header key 'descr' given twice");
            if (parse_string(&h, descr, sizeof descr) != 0 || !descr[0])
                return file_error(err, err_size, path, "malformed 'descr'");
        } else if (strcmp(key, "fortran_order") == 0) {
            if (fortran >= 0)
                return file_error(err, err_size, path, "header key 'fortran_order' given twice");
            if (parse_bool(&h, &fortran) != 0)
                return file_error(err, err_size, path, "malformed 'fortran_order'");
        } else if (strcmp(key, "shape") == 0) {
            if (have_shape)
                return file_error(err, err_size, path, "header key 'shape' given twice");
            if (parse_shape(&h, arr) != 0)
                return file_error(err, err_size, path, "malformed 'shape' (a tuple of at most %d sizes)",
                                  NPY_MAX_DIMS);
            have_shape = 1;
        } else {
            return file_error(err, err_size, path, "unknown header key '%s'", key);
        }
        if (!accept(&h, ',')) {
            if (!accept(&h, '}'))
                return file_error(err, err_size, path, "malformed header dict");
            break;
        }
    }
    skip_space(&h);
    if (h.p != h.end)
        return file_error(err, err_size, path, "bytes after the header dict");
    if (!descr[0] || fortran < 0 || !have_shape)
        return file_error(err, err_size, path, "header lacks 'descr', 'fortran_order' or 'shape'");
    if (fortran)
        return file_error(err, err_size, path, "Fortran-order arrays are not supported (save in C order)");

    const char *want = dtype == NPY_INT32 ? "<i4" : "<f4";
    if (strcmp(descr, want) != 0)
        return file_error(err, err_size, path, "dtype '%s', expected '%s' (%s)", descr, want,
                    dtype == NPY_INT32 ? "little-endian int32" : "little-endian float32");
    arr->dtype = dtype;
    return 0;
}

static uint32_t read_le32(const unsigned char *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

/* Reads exactly n bytes at the file's position; 0 or -1. */
static int read_all(int fd, void *buf, size_t n)
{
    unsigned char *p = buf;
    while (n > 0) {
        ssize_t got = read(fd, p, n);
        if (got < 0 && errno == EINTR)
            continue;
        if (got <= 0)
            return -1;
        p += got;
        n -= (size_t)got;
    }
    return 0;
}

int npy_read(const char *path, enum npy_dtype dtype, struct npy_array *arr, char *err, size_t err_size)
{
    static const unsigned char magic[6] = { 0x93, 'N', 'U', 'M', 'P', 'Y' };
    unsigned char pre[12];
    char *header = NULL;
    unsigned char *raw = NULL;
    struct npy_array a;
    struct stat st;
    int rc = -1;

    memset(arr, 0, sizeof *arr);
    memset(&a, 0, sizeof a);
    /* O_NONBLOCK: a FIFO must be refused, not waited on (open blocks until
     * a writer comes); it changes nothing for a regular file. */
    int fd = open(path, O_RDONLY | O_NONBLOCK | O_CLOEXEC | O_NOCTTY);
    if (fd < 0)
        return file_error(err, err_size, path, "cannot open: %s", strerror(errno));
    if (fstat(fd, &st) != 0) {
        file_error(err, err_size, path, "cannot stat: %s", strerror(errno));
        goto out;
    }
    if (!S_ISREG(st.st_mode)) {
        file_error(err, err_size, path, "not a regular file");
        goto out;
    }
    /* Every size read from the file is checked against the file's size
     * before anything is allocated for it. */
    uint64_t size = (uint64_t)st.st_size;
    if (size < 10 || read_all(fd, pre, 10) != 0 || memcmp(pre, magic, 6) != 0) {
        file_error(err, err_size, path, "not a .npy file (bad magic)");
        goto out;
    }
    uint32_t major = pre[6], minor = pre[7], header_len, pre_len;
    if (major == 1 && minor == 0) {
        header_len = (uint32_t)pre[8] | (uint32_t)pre[9] << 8;
        pre_len = 10;
    } else if ((major == 2 || major == 3) && minor == 0) {
        if (size < 12 || read_all(fd, pre + 10, 2) != 0) {
            file_error(err, err_size, path, "truncated header");
            goto out;
        }
        header_len = read_le32(pre + 8);
        pre_len = 12;
    } else {
        file_error(err, err_size, path, "unsupported .npy version %u.%u", major, minor);
        goto out;
    }
    if (header_len == 0 || header_len > NPY_MAX_HEADER) {
        file_error(err, err_size, path, "header length %u is not in 1..%u", header_len, NPY_MAX_HEADER);
        goto out;
    }
    if (header_len > size - pre_len) {
        file_error(err, err_size, path, "truncated header: %u bytes announced, %" PRIu64 " in the file",
                   header_len, size - pre_len);
        goto out;
    }
    header = malloc(header_len);
    if (!header) {
        file_error(err, err_size, path, "out of memory");
        goto out;
    }
    if (read_all(fd, header, header_len) != 0) {
        file_error(err, err_size, path, "cannot read the header (the file changed?)");
        goto out;
    }
    if (parse_header(path, header, header_len, dtype, &a, err, err_size) != 0)
        goto out;

    /* The data is what follows the header, exactly count * 4 bytes. */
    uint64_t data_bytes = size - pre_len - header_len, count = 1;
    for (uint32_t d = 0; d < a.ndim; d++)
        if (a.shape[d] == 0)
            count = 0; /* no elements, whatever the other sizes */
    for (uint32_t d = 0; d < a.ndim && count != 0; d++) {
        if (count > data_bytes / 4 / a.shape[d]) {
            count = UINT64_MAX; /* more elements than the file holds */
            break;
        }
        count *= a.shape[d];
    }
    if (count == UINT64_MAX || count * 4 > data_bytes) {
        file_error(err, err_size, path, "truncated: the shape needs more data than the file's %" PRIu64 " bytes",
                   data_bytes);
        goto out;
    }
    if (count * 4 < data_bytes) {
        file_error(err, err_size, path, "trailing bytes: %" PRIu64 " after the %" PRIu64 " data bytes",
                   data_bytes - count * 4, count * 4);
        goto out;
    }
    a.count = count;
    size_t bytes = (size_t)count * 4;
    raw = malloc(bytes ? bytes : 1);
    if (!raw) {
        file_error(err, err_size, path, "out of memory for %zu bytes of data", bytes);
        goto out;
    }
    if (read_all(fd, raw, bytes) != 0) {
        file_error(err, err_size, path, "truncated: fewer than %zu data bytes (the file changed?)", bytes);
        goto out;
    }
    /* Decode little endian in place so the reader also works on big-endian hosts. */
    for (size_t i = 0; i < (size_t)count; i++) {
        uint32_t v = read_le32(raw + 4 * i);
        memcpy(raw + 4 * i, &v, 4);
    }
    a.data = raw;
    raw = NULL;
    *arr = a;
    rc = 0;
out:
    free(raw);
    free(header);
    close(fd);
    return rc;
}

void npy_free(struct npy_array *arr)
{
    if (!arr)
        return;
    free(arr->data);
    arr->data = NULL;
}
