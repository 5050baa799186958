/* SPDX-License-Identifier: MIT */
/*
 * Error text for the model-file readers (llama2.c, tokenizer.c, npy.c):
 * "PATH: what is wrong", written into the caller's buffer.
 */
#ifndef TKV_TOOL_FILE_ERROR_H
#define TKV_TOOL_FILE_ERROR_H

#include <stddef.h>

/* Writes "path: message" into err and returns -1, so a reader can write
 * return file_error(err, size, path, "..."). */
int file_error(char *err, size_t err_size, const char *path, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

/* Reads the whole of a regular file of at most max bytes into *data (malloc,
 * the caller frees): a FIFO, a device, a directory or a larger file is
 * refused with a message before anything is allocated or waited on. */
int file_read_regular(const char *path, size_t max, unsigned char **data, size_t *size, char *err,
                      size_t err_size);

#endif
