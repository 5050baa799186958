/* SPDX-License-Identifier: MIT */
/*
 * See file_error.h.
 */
#include "file_error.h"

#include <stdarg.h>
#include <stdio.h>

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
