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

#endif
