/* SPDX-License-Identifier: MIT */
/*
 * Untrusted model-runner files: the .npy reader (tools/npy.c) and the
 * llama2.c model loader (tools/llama2.c). Each case is a file a user could
 * be handed; the readers must refuse it with a message naming the file and
 * the problem, without blocking, without allocating what a header claims
 * before the file's size confirms it, and leave nothing behind. The
 * regression cases for defects of the earlier readers are marked "defect:".
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "llama2.h"
#include "npy.h"
#include "tokenizer.h"

/* --- helpers */

static char tmp_path[256];

/* Writes len bytes to a fresh temporary file, named in tmp_path. */
static const char *write_temp(const void *data, size_t len)
{
    const char *dir = getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp";
    snprintf(tmp_path, sizeof tmp_path, "%s/tkv-test-files-XXXXXX", dir);
    int fd = mkstemp(tmp_path);
    assert_true(fd >= 0);
    assert_int_equal(write(fd, data, len), (ssize_t)len);
    close(fd);
    return tmp_path;
}

static void expect_error(int rc, const char *err, const char *path, const char *problem)
{
    assert_int_equal(rc, -1);
    if (strncmp(err, path, strlen(path)) != 0 || !strstr(err, problem))
        fail_msg("error \"%s\"\n  should start with %s and say \"%s\"", err, path, problem);
}

/* A FIFO nobody writes to: a reader that opens it blocking hangs here (and
 * the test times out). */
static const char *make_fifo(void)
{
    const char *dir = getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp";
    snprintf(tmp_path, sizeof tmp_path, "%s/tkv-test-fifo-%ld", dir, (long)getpid());
    unlink(tmp_path);
    assert_int_equal(mkfifo(tmp_path, 0600), 0);
    return tmp_path;
}

/* --- .npy */

/* A .npy file: version major.0, the dict text padded as numpy pads it,
 * then data_len bytes of data. Returns its length in buf. */
static size_t npy_file(unsigned char *buf, size_t size, unsigned major, const char *dict, const void *data,
                       size_t data_len)
{
    size_t pre = major == 1 ? 10 : 12, dict_len = strlen(dict);
    size_t header = dict_len + 1;
    header += (64 - (pre + header) % 64) % 64;
    assert_true(pre + header + data_len <= size);
    memcpy(buf, "\x93NUMPY", 6);
    buf[6] = (unsigned char)major;
    buf[7] = 0;
    if (major == 1) {
        buf[8] = (unsigned char)header;
        buf[9] = (unsigned char)(header >> 8);
    } else {
        for (int i = 0; i < 4; i++)
            buf[8 + i] = (unsigned char)(header >> 8 * i);
    }
    memcpy(buf + pre, dict, dict_len);
    memset(buf + pre + dict_len, ' ', header - dict_len - 1);
    buf[pre + header - 1] = '\n';
    if (data_len)
        memcpy(buf + pre + header, data, data_len);
    return pre + header + data_len;
}

static void test_npy_good(void **state)
{
    (void)state;
    static const int32_t ints[6] = { 1, -2, 3, 2147483647, -2147483647 - 1, 0 };
    unsigned char buf[512];
    char err[512];
    struct npy_array a;

    for (unsigned major = 1; major <= 3; major++) {
        size_t n = npy_file(buf, sizeof buf, major, "{'descr': '<i4', 'fortran_order': False, 'shape': (2, 3), }",
                            ints, sizeof ints);
        const char *path = write_temp(buf, n);
        int rc = npy_read(path, NPY_INT32, &a, err, sizeof err);
        unlink(path);
        if (rc != 0)
            fail_msg("version %u.0: %s", major, err);
        assert_int_equal(a.ndim, 2);
        assert_int_equal(a.shape[0], 2);
        assert_int_equal(a.shape[1], 3);
        assert_int_equal(a.count, 6);
        assert_memory_equal(a.data, ints, sizeof ints);
        npy_free(&a);
    }
    /* a scalar, and an empty array whose other size is absurd: no elements */
    float one = 1.0f;
    size_t n = npy_file(buf, sizeof buf, 1, "{'descr': '<f4', 'fortran_order': False, 'shape': ()}", &one, 4);
    const char *path = write_temp(buf, n);
    assert_int_equal(npy_read(path, NPY_FLOAT32, &a, err, sizeof err), 0);
    unlink(path);
    assert_int_equal(a.ndim, 0);
    assert_int_equal(a.count, 1);
    assert_true(((float *)a.data)[0] == 1.0f);
    npy_free(&a);
    n = npy_file(buf, sizeof buf, 1, "{'shape': (0, 18446744073709551615), 'fortran_order': False, 'descr': '<f4'}",
                 NULL, 0);
    path = write_temp(buf, n);
    int rc = npy_read(path, NPY_FLOAT32, &a, err, sizeof err);
    unlink(path);
    if (rc != 0)
        fail_msg("empty array: %s", err);
    assert_int_equal(a.count, 0);
    npy_free(&a);
}

static void test_npy_bad(void **state)
{
    (void)state;
    static const struct {
        unsigned major;
        const char *dict;
        size_t data_len;
        const char *problem;
    } cases[] = {
        /* defect: a tiny file announcing 4 TiB of data was allocated first */
        { 1, "{'descr': '<i4', 'fortran_order': False, 'shape': (1099511627776,), }", 8,
          "truncated: the shape needs more data than the file's 8 bytes" },
        { 1, "{'descr': '<i4', 'fortran_order': False, 'shape': (4294967296, 4294967296), }", 0,
          "truncated: the shape needs more data" },
        { 1, "{'descr': '<i4', 'fortran_order': False, 'shape': (3,), }", 8, "truncated" },
        { 1, "{'descr': '<i4', 'fortran_order': False, 'shape': (1,), }", 8, "trailing bytes: 4 after the 4" },
        { 1, "{'descr': '<i4', 'fortran_order': False, 'shape': (2), }", 8, "malformed 'shape'" },
        { 1, "{'descr': '<i4', 'fortran_order': False, 'shape': (1,2,3,4,5,6,7,8,9), }", 0, "malformed 'shape'" },
        { 1, "{'descr': '<i4', 'descr': '<i4', 'fortran_order': False, 'shape': (2,), }", 8,
          "'descr' given twice" },
        { 1, "{'descr': '<i4', 'fortran_order': False, 'shape': (2,), 'shape': (2,)}", 8, "'shape' given twice" },
        { 1, "{'descr': '<i4', 'fortran_order': False, 'fortran_order': False, 'shape': (2,)}", 8,
          "'fortran_order' given twice" },
        { 1, "{'descr': '<i4', 'fortran_order': False, 'shape': (2,), } junk", 8, "bytes after the header dict" },
        { 1, "{'descr': '', 'fortran_order': False, 'shape': (2,), }", 8, "malformed 'descr'" },
        { 1, "{'descr': '>i4', 'fortran_order': False, 'shape': (2,), }", 8, "dtype '>i4', expected '<i4'" },
        { 1, "{'descr': '<i4', 'fortran_order': True, 'shape': (2,), }", 8, "Fortran-order" },
        { 1, "{'descr': '<i4', 'shape': (2,), }", 8, "lacks" },
        { 1, "{'descr': '<i4', 'fortran_order': False, 'shape': (2,), 'x': 1}", 8, "unknown header key 'x'" },
        { 1, "['descr']", 8, "header is not a dict" },
    };
    unsigned char buf[512];
    char err[512];
    struct npy_array a;

    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        static const unsigned char zeros[8];
        size_t n = npy_file(buf, sizeof buf, cases[i].major, cases[i].dict, zeros, cases[i].data_len);
        const char *path = write_temp(buf, n);
        memset(&a, 0x5a, sizeof a);
        int rc = npy_read(path, NPY_INT32, &a, err, sizeof err);
        if (rc != -1 || !strstr(err, cases[i].problem))
            fail_msg("case %zu (%s): returned %d, \"%s\", expected \"%s\"", i, cases[i].dict, rc, err,
                     cases[i].problem);
        expect_error(rc, err, path, cases[i].problem);
        unlink(path);
        /* a failed read leaves nothing to free */
        assert_null(a.data);
        assert_int_equal(a.count, 0);
    }
}

/* The fixed part of the file: magic, version, header length. */
static void test_npy_preamble(void **state)
{
    (void)state;
    unsigned char buf[512];
    char err[512];
    struct npy_array a;
    size_t n = npy_file(buf, sizeof buf, 1, "{'descr': '<i4', 'fortran_order': False, 'shape': (0,), }", NULL, 0);
    const char *path;

    buf[7] = 1; /* version 1.1 does not exist */
    path = write_temp(buf, n);
    expect_error(npy_read(path, NPY_INT32, &a, err, sizeof err), err, path, "unsupported .npy version 1.1");
    unlink(path);
    buf[7] = 0;
    buf[6] = 4;
    path = write_temp(buf, n);
    expect_error(npy_read(path, NPY_INT32, &a, err, sizeof err), err, path, "unsupported .npy version 4.0");
    unlink(path);
    buf[6] = 1;

    /* defect: a header length beyond the file was allocated (up to 1 MiB)
     * before the short read noticed */
    buf[8] = 0xff;
    buf[9] = 0xff;
    path = write_temp(buf, n);
    expect_error(npy_read(path, NPY_INT32, &a, err, sizeof err), err, path,
                 "truncated header: 65535 bytes announced, 118 in the file");
    unlink(path);
    buf[8] = buf[9] = 0;
    path = write_temp(buf, n);
    expect_error(npy_read(path, NPY_INT32, &a, err, sizeof err), err, path, "header length 0 is not in 1..");
    unlink(path);
    n = npy_file(buf, sizeof buf, 2, "{'descr': '<i4', 'fortran_order': False, 'shape': (0,), }", NULL, 0);
    buf[11] = 0x80; /* 2 GiB */
    path = write_temp(buf, n);
    expect_error(npy_read(path, NPY_INT32, &a, err, sizeof err), err, path, "header length 2147483764 is not in 1..1048576");
    unlink(path);
    path = write_temp(buf, 11);
    expect_error(npy_read(path, NPY_INT32, &a, err, sizeof err), err, path, "truncated header");
    unlink(path);
    /* a NUL inside a key would make 'descr\0x' read as 'descr' */
    n = npy_file(buf, sizeof buf, 1, "{'descr#x': '<i4', 'fortran_order': False, 'shape': (0,), }", NULL, 0);
    *(unsigned char *)memchr(buf, '#', n) = '\0';
    path = write_temp(buf, n);
    expect_error(npy_read(path, NPY_INT32, &a, err, sizeof err), err, path, "malformed header dict");
    unlink(path);
    path = write_temp("\x93NUMP", 5);
    expect_error(npy_read(path, NPY_INT32, &a, err, sizeof err), err, path, "not a .npy file (bad magic)");
    unlink(path);
}

static void test_npy_not_regular(void **state)
{
    (void)state;
    char err[512];
    struct npy_array a;
    expect_error(npy_read("/dev/zero", NPY_INT32, &a, err, sizeof err), err, "/dev/zero", "not a regular file");
    expect_error(npy_read("/tmp", NPY_INT32, &a, err, sizeof err), err, "/tmp", "not a regular file");
    const char *fifo = make_fifo();
    int rc = npy_read(fifo, NPY_INT32, &a, err, sizeof err);
    unlink(fifo);
    expect_error(rc, err, fifo, "not a regular file");
    expect_error(npy_read("/nonexistent/x.npy", NPY_INT32, &a, err, sizeof err), err, "/nonexistent/x.npy",
                 "cannot open: No such file or directory");
}

/* --- llama2.c models */

/* A model of the given header with every weight present: freq adds the
 * legacy RoPE tables; a negative vocab stores the classifier apart. The
 * weights are w[i] = i, so where each tensor starts can be checked. */
static size_t model_bytes(const int32_t h[7], int freq)
{
    uint64_t d = (uint64_t)h[0], hid = (uint64_t)h[1], L = (uint64_t)h[2], heads = (uint64_t)h[3];
    uint64_t kvh = (uint64_t)h[4], voc = (uint64_t)(h[5] < 0 ? -h[5] : h[5]), seq = (uint64_t)h[6];
    uint64_t hd = d / heads, kv = kvh * hd;
    uint64_t n = voc * d + L * (2 * d + 2 * d * d + 2 * kv * d + 3 * hid * d) + d;
    if (freq)
        n += seq * hd;
    if (h[5] < 0)
        n += voc * d;
    return 28 + 4 * (size_t)n;
}

static const char *write_model(const int32_t h[7], int freq, long delta)
{
    size_t n = model_bytes(h, freq) + (size_t)delta;
    unsigned char *buf = calloc(1, n);
    assert_non_null(buf);
    memcpy(buf, h, 28);
    for (size_t i = 28; i + 4 <= n; i += 4) {
        float w = (float)((i - 28) / 4);
        memcpy(buf + i, &w, 4);
    }
    const char *path = write_temp(buf, n);
    free(buf);
    return path;
}

/* dim 16, hidden 32, 2 layers, 2 heads of 8, 1 KV head, vocab 5, seq_len 4 */
static const int32_t tiny[7] = { 16, 32, 2, 2, 1, 5, 4 };

static void test_llama2_good(void **state)
{
    (void)state;
    char err[512];
    struct llama2_model m;
    for (int variant = 0; variant < 4; variant++) {
        int32_t h[7];
        memcpy(h, tiny, sizeof h);
        if (variant & 2)
            h[5] = -h[5];
        const char *path = write_model(h, variant & 1, 0);
        int rc = llama2_open(&m, path, err, sizeof err);
        unlink(path);
        if (rc != 0)
            fail_msg("variant %d: %s", variant, err);
        assert_int_equal(m.cfg.head_dim, 8);
        assert_int_equal(m.cfg.kv_dim, 8);
        assert_int_equal(m.cfg.vocab_size, 5);
        assert_int_equal(m.cfg.shared_classifier, !(variant & 2));
        /* tensors where the layout puts them: w[i] = i */
        assert_true(m.token_embedding[0] == 0.0f);
        assert_true(m.rms_att[0] == 5.0f * 16);
        assert_true(m.rms_final[15] == (float)(model_bytes(h, 0) - 28) / 4 - 1 - (variant & 2 ? 5 * 16 : 0));
        if (variant & 2)
            assert_true(m.wcls[0] == (float)(model_bytes(h, variant & 1) - 28) / 4 - 5 * 16);
        else
            assert_ptr_equal(m.wcls, m.token_embedding);
        llama2_close(&m);
    }
}

static void test_llama2_bad_header(void **state)
{
    (void)state;
    static const char *const names[7] = { "dim", "hidden_dim", "n_layers", "n_heads", "n_kv_heads",
                                          "vocab_size", "seq_len" };
    static const int32_t too_big[7] = { 1 << 21, 1 << 21, 4097, 1 << 21, 1 << 21, (1 << 24) + 1, (1 << 24) + 1 };
    char err[512], want[128];
    struct llama2_model m;

    /* every field: zero, negative (vocab_size: INT32_MIN) and too large */
    for (int f = 0; f < 7; f++) {
        /* (a negative vocab_size is a separate classifier of -vocab_size rows) */
        const int32_t bad[3] = { 0, f == 5 ? INT32_MIN : -1, too_big[f] };
        for (int b = 0; b < 3; b++) {
            int32_t h[7];
            memcpy(h, tiny, sizeof h);
            h[f] = bad[b];
            const char *path = write_temp(h, sizeof h);
            snprintf(want, sizeof want, "header %s = %d is not in 1..", names[f], bad[b]);
            expect_error(llama2_open(&m, path, err, sizeof err), err, path, want);
            unlink(path);
            assert_null(m.map);
        }
    }
    static const struct {
        int32_t h[7];
        const char *problem;
    } cases[] = {
        { { 16, 32, 2, 3, 1, 5, 4 }, "dim 16 is not a multiple of n_heads 3" },
        { { 16, 32, 2, 2, 4, 5, 4 }, "n_heads 2 is not a multiple of n_kv_heads 4" },
        { { 12, 32, 2, 3, 1, 5, 4 }, "head_dim 4 (dim 12 / n_heads 3) is not supported" },
        { { 2048, 32, 2, 1, 1, 5, 4 }, "head_dim 2048 (dim 2048 / n_heads 1) is not supported" },
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        const char *path = write_temp(cases[i].h, sizeof cases[i].h); /* checked before the size */
        expect_error(llama2_open(&m, path, err, sizeof err), err, path, cases[i].problem);
        unlink(path);
    }
}

/* The file's size must be exactly what the header says, with or without
 * the RoPE tables: checked before the file is mapped. */
static void test_llama2_bad_size(void **state)
{
    (void)state;
    char err[512];
    struct llama2_model m;
    const char *path = write_model(tiny, 0, -4);
    expect_error(llama2_open(&m, path, err, sizeof err), err, path, "truncated");
    unlink(path);
    path = write_model(tiny, 1, 4);
    expect_error(llama2_open(&m, path, err, sizeof err), err, path, "trailing data");
    unlink(path);
    path = write_model(tiny, 1, -4); /* between the two sizes */
    expect_error(llama2_open(&m, path, err, sizeof err), err, path, "trailing data");
    unlink(path);
    /* the largest header: its sizes are computed without overflow and
     * refused against a small file */
    const int32_t huge[7] = { 1 << 20, 1 << 20, 4096, 1 << 10, 1 << 10, -(1 << 24), 1 << 24 };
    path = write_temp(huge, sizeof huge);
    expect_error(llama2_open(&m, path, err, sizeof err), err, path, "truncated");
    unlink(path);
    path = write_temp(tiny, 20);
    expect_error(llama2_open(&m, path, err, sizeof err), err, path, "too short for a llama2.c header");
    unlink(path);
}

static void test_llama2_not_regular(void **state)
{
    (void)state;
    char err[512];
    struct llama2_model m;
    expect_error(llama2_open(&m, "/dev/zero", err, sizeof err), err, "/dev/zero", "not a regular file");
    const char *fifo = make_fifo();
    int rc = llama2_open(&m, fifo, err, sizeof err);
    unlink(fifo);
    expect_error(rc, err, fifo, "not a regular file");
}

/* --- tokenizer */

static void test_tokenizer_not_regular_or_too_small(void **state)
{
    (void)state;
    char err[512];
    struct tokenizer t;
    expect_error(tokenizer_open(&t, "/dev/zero", 32000, err, sizeof err), err, "/dev/zero", "not a regular file");
    const char *fifo = make_fifo();
    int rc = tokenizer_open(&t, fifo, 32000, err, sizeof err);
    unlink(fifo);
    expect_error(rc, err, fifo, "not a regular file");
    /* a 12-byte file (max_token_length, one piece's score and length) and a
     * model claiming 2^31 pieces: refused before allocating for them */
    const char *dir = getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp";
    snprintf(tmp_path, sizeof tmp_path, "%s/tkv-test-tok-%ld", dir, (long)getpid());
    FILE *f = fopen(tmp_path, "wb");
    assert_non_null(f);
    static const unsigned char twelve[12] = { 1 };
    assert_int_equal(fwrite(twelve, 1, sizeof twelve, f), sizeof twelve);
    fclose(f);
    /* a vocabulary without the ids encode emits (<unk> 0, BOS 1, EOS 2) */
    rc = tokenizer_open(&t, tmp_path, 1, err, sizeof err);
    expect_error(rc, err, tmp_path, "vocabulary of 1 pieces lacks <unk>, <s> and </s>");
    rc = tokenizer_open(&t, tmp_path, 1u << 31, err, sizeof err);
    unlink(tmp_path);
    expect_error(rc, err, tmp_path, "cannot hold the model's 2147483648 pieces");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_npy_good),
        cmocka_unit_test(test_npy_bad),
        cmocka_unit_test(test_npy_preamble),
        cmocka_unit_test(test_npy_not_regular),
        cmocka_unit_test(test_llama2_good),
        cmocka_unit_test(test_llama2_bad_header),
        cmocka_unit_test(test_llama2_bad_size),
        cmocka_unit_test(test_llama2_not_regular),
        cmocka_unit_test(test_tokenizer_not_regular_or_too_small),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
