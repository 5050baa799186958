/* SPDX-License-Identifier: MIT */
/*
 * .npy files (tools/npy.c): the input is the file, read as int32 and as
 * float32. A success must hold exactly the shape's number of elements,
 * all of them readable.
 */
#include <stdint.h>
#include <string.h>

#include "fuzz_file.h"
#include "npy.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *path = fuzz_file(data, size);
    for (int dtype = NPY_INT32; dtype <= NPY_FLOAT32; dtype++) {
        struct npy_array a;
        char err[512];
        if (npy_read(path, (enum npy_dtype)dtype, &a, err, sizeof err) != 0) {
            FUZZ_CHECK(a.data == NULL && a.count == 0, "failed read left data behind: %s", err);
            FUZZ_CHECK(strncmp(err, path, strlen(path)) == 0, "message '%s' does not name the file", err);
            continue;
        }
        uint64_t count = 1;
        for (uint32_t d = 0; d < a.ndim; d++)
            count *= a.shape[d];
        FUZZ_CHECK(a.ndim <= NPY_MAX_DIMS && count == a.count, "count %llu, shape product %llu",
                   (unsigned long long)a.count, (unsigned long long)count);
        FUZZ_CHECK(a.count * 4 <= size, "%llu elements from a %zu-byte file", (unsigned long long)a.count, size);
        /* every element is there (ASan checks the reads) */
        uint32_t x = 0;
        for (uint64_t i = 0; i < a.count; i++) {
            uint32_t v;
            memcpy(&v, (const char *)a.data + 4 * i, 4);
            x ^= v;
        }
        volatile uint32_t sink = x;
        (void)sink;
        npy_free(&a);
    }
    return 0;
}
