/* SPDX-License-Identifier: MIT */
/*
 * A reader for the NumPy .npy files the tools and tests exchange with the
 * outside world (token lists, reference NLLs, captured K/V tensors):
 * little-endian int32 or float32, C order, format versions 1.0 to 3.0.
 */
#ifndef TKV_TOOLS_NPY_H
#define TKV_TOOLS_NPY_H

#include <stddef.h>
#include <stdint.h>

#define NPY_MAX_DIMS 8

enum npy_dtype { NPY_INT32, NPY_FLOAT32 };

struct npy_array {
    enum npy_dtype dtype;
    uint32_t ndim;               /* 0 for a scalar */
    uint64_t shape[NPY_MAX_DIMS];
    uint64_t count;              /* product of the shape */
    void *data;                  /* int32_t[count] or float[count] */
};

/* Reads path, which must be a regular file holding an array of dtype and
 * nothing else: every header field is checked, and the sizes it gives are
 * checked against the file's size before anything is allocated. Returns 0,
 * or -1 with a message naming the file and the problem in err (arr is then
 * zeroed and owns nothing). */
int npy_read(const char *path, enum npy_dtype dtype, struct npy_array *arr, char *err, size_t err_size);

void npy_free(struct npy_array *arr);

#endif
