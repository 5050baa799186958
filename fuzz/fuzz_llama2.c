/* SPDX-License-Identifier: MIT */
/*
 * llama2.c model files (tools/llama2.c, llama2_open): the input is the
 * file. ASan cannot see reads past a mapping, so on success every tensor
 * is checked to lie inside the mapped file, and its first and last floats
 * are read; then activations for the model are allocated and freed.
 */
#include <stdint.h>
#include <string.h>

#include "fuzz_file.h"
#include "llama2.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void check_tensor(const struct llama2_model *m, const char *name, const float *p, uint64_t n)
{
    const char *lo = (const char *)m->map + 28, *hi = (const char *)m->map + m->map_size;
    FUZZ_CHECK(n > 0 && (const char *)p >= lo && (uint64_t)(hi - (const char *)p) / 4 >= n,
               "tensor %s (%llu floats) is not inside the %zu-byte file", name, (unsigned long long)n, m->map_size);
    volatile float first = p[0], last = p[n - 1];
    (void)first;
    (void)last;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct llama2_model m;
    char err[512];
    const char *path = fuzz_file(data, size);

    if (llama2_open(&m, path, err, sizeof err) != 0) {
        FUZZ_CHECK(m.map == NULL, "failed open left a mapping: %s", err);
        FUZZ_CHECK(strncmp(err, path, strlen(path)) == 0, "message '%s' does not name the file", err);
        return 0;
    }
    const struct llama2_config *c = &m.cfg;
    uint64_t L = c->n_layers, d = c->dim, kv = c->kv_dim, hid = c->hidden_dim, voc = c->vocab_size;
    FUZZ_CHECK(m.map_size == size, "mapped %zu of %zu bytes", m.map_size, size);
    FUZZ_CHECK(c->head_dim * c->n_heads == c->dim && c->kv_dim == c->n_kv_heads * c->head_dim &&
                   c->n_heads % c->n_kv_heads == 0,
               "inconsistent shape");
    check_tensor(&m, "token_embedding", m.token_embedding, voc * d);
    check_tensor(&m, "rms_att", m.rms_att, L * d);
    check_tensor(&m, "wq", m.wq, L * d * d);
    check_tensor(&m, "wk", m.wk, L * kv * d);
    check_tensor(&m, "wv", m.wv, L * kv * d);
    check_tensor(&m, "wo", m.wo, L * d * d);
    check_tensor(&m, "rms_ffn", m.rms_ffn, L * d);
    check_tensor(&m, "w1", m.w1, L * hid * d);
    check_tensor(&m, "w2", m.w2, L * d * hid);
    check_tensor(&m, "w3", m.w3, L * hid * d);
    check_tensor(&m, "rms_final", m.rms_final, d);
    check_tensor(&m, "wcls", m.wcls, voc * d);

    struct llama2_state s;
    if (llama2_state_init(&s, &m, 2) == 0)
        llama2_state_free(&s);
    llama2_close(&m);
    return 0;
}
