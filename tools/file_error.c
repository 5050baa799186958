/* SPDX-License-Identifier: MIT */
/*
 * See file_error.h.
 */
#include "file_error.h"

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

int file_error(char *err, size_t err_size, const char *path, const char *fmt, ...)
{
    va_list ap;
    int n = snprintf(err, err_size, "%s: ", path);
    if (n < 0 || (size_t)n >= err_size)
        return -1;
    va_start(ap, fmt);
    vsnprintf(err + n, err_size - (size_t)n, fmt, ap);
    va_end(ap);
    return -1;
}

int file_read_regular(const char *path, size_t max, unsigned char **data, size_t *size, char *err,
                      size_t err_size)
{
    /* O_NONBLOCK: a FIFO must be refused, not waited on (open blocks until
     * a writer comes); it changes nothing for a regular file. */
    int fd = open(path, O_RDONLY | O_NONBLOCK | O_CLOEXEC | O_NOCTTY);
    if (fd < 0)
        return file_error(err, err_size, path, "cannot open: %s", strerror(errno));
    struct stat st;
    int rc = -1;
    unsigned char *buf = NULL;
    if (fstat(fd, &st) != 0) {
        file_error(err, err_size, path, "cannot stat: %s", strerror(errno));
    } else if (!S_ISREG(st.st_mode)) {
        file_error(err, err_size, path, "not a regular file");
    } else if ((uint64_t)st.st_size > max) {
        file_error(err, err_size, path, "%lld bytes, more than the %zu this reader takes", (long long)st.st_size, max);
    } else if (!(buf = malloc(st.st_size ? (size_t)st.st_size : 1))) {
        file_error(err, err_size, path, "out of memory");
    } else {
        size_t n = 0, want = (size_t)st.st_size;
        while (n < want) {
            ssize_t got = read(fd, buf + n, want - n);
            if (got < 0 && errno == EINTR)
                continue;
            if (got <= 0)
                break;
            n += (size_t)got;
        }
        if (n != want) {
            file_error(err, err_size, path, "read %zu of its %zu bytes", n, want);
        } else {
            *data = buf;
            *size = n;
            buf = NULL;
            rc = 0;
        }
    }
    free(buf);
    close(fd);
    return rc;
}
