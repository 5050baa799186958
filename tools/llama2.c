/* SPDX-License-Identifier: MIT */
/*
 * llama2.c model: file layout, validation and the forward pass.
 *
 * File (llama2.c legacy version 0, little endian):
 *   int32 dim, hidden_dim, n_layers, n_heads, n_kv_heads, vocab_size, seq_len
 *   (vocab_size < 0: the classifier is stored separately, its size is -vocab_size)
 *   float32 token_embedding[vocab][dim]
 *           rms_att[L][dim], wq[L][dim][dim], wk[L][kv_dim][dim], wv[L][kv_dim][dim],
 *           wo[L][dim][dim], rms_ffn[L][dim], w1[L][hidden][dim], w2[L][dim][hidden],
 *           w3[L][hidden][dim], rms_final[dim]
 *           freq_cis_real[seq_len][head_dim/2], freq_cis_imag[...]  (legacy, unused:
 *           RoPE is recomputed; some exporters omit them)
 *           wcls[vocab][dim]                                       (only if vocab_size < 0)
 *
 * Forward pass (llama2.c run.c, batched over rows): per layer RMSNorm ->
 * q, k, v -> RoPE -> append K/V to the turbokv cache -> turbokv attention ->
 * wo + residual -> RMSNorm -> SwiGLU FFN + residual; then RMSNorm and the
 * classifier.
 */
#include "llama2.h"
#include "file_error.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#define HEADER_BYTES (7 * 4)
#define RMS_EPS 1e-5f
#define ROPE_THETA 10000.0f

/* Bounds that keep every size product below 2^63 (and far above any model
 * this runner is meant for). */
#define MAX_WIDTH (1u << 20)
#define MAX_LAYERS 4096u
#define MAX_VOCAB (1u << 24)
#define MAX_SEQ_LEN (1u << 24)


static int host_is_little_endian(void)
{
    const uint16_t one = 1;
    unsigned char first;
    memcpy(&first, &one, 1);
    return first == 1;
}

static int check_header(const int32_t h[7], const char *path, struct llama2_config *c, char *err, size_t err_size)
{
    static const char *const names[7] = { "dim", "hidden_dim", "n_layers", "n_heads", "n_kv_heads",
                                          "vocab_size", "seq_len" };
    static const uint32_t limits[7] = { MAX_WIDTH, MAX_WIDTH, MAX_LAYERS, MAX_WIDTH, MAX_WIDTH,
                                        MAX_VOCAB, MAX_SEQ_LEN };
    uint32_t v[7];
    for (int i = 0; i < 7; i++) {
        int64_t x = i == 5 && h[i] < 0 ? -(int64_t)h[i] : h[i];
        if (x <= 0 || x > limits[i])
            return file_error(err, err_size, path, "header %s = %d is not in 1..%u: not a llama2.c version 0 model",
                        names[i], h[i], limits[i]);
        v[i] = (uint32_t)x;
    }
    c->dim = v[0];
    c->hidden_dim = v[1];
    c->n_layers = v[2];
    c->n_heads = v[3];
    c->n_kv_heads = v[4];
    c->vocab_size = v[5];
    c->seq_len = v[6];
    c->shared_classifier = h[5] > 0;
    if (c->dim % c->n_heads != 0)
        return file_error(err, err_size, path, "dim %u is not a multiple of n_heads %u", c->dim, c->n_heads);
    if (c->n_heads % c->n_kv_heads != 0)
        return file_error(err, err_size, path, "n_heads %u is not a multiple of n_kv_heads %u", c->n_heads, c->n_kv_heads);
    c->head_dim = c->dim / c->n_heads;
    c->kv_dim = c->n_kv_heads * c->head_dim;
    if (!tkv_head_dim_supported(c->head_dim))
        return file_error(err, err_size, path, "head_dim %u (dim %u / n_heads %u) is not supported by turbokv "
                    "(multiples of %u up to %u)", c->head_dim, c->dim, c->n_heads, TKV_GROUP_MIN, TKV_HEAD_DIM_MAX);
    return 0;
}

int llama2_open(struct llama2_model *m, const char *path, char *err, size_t err_size)
{
    memset(m, 0, sizeof *m);
    if (!host_is_little_endian())
        return file_error(err, err_size, path, "llama2.c files are little endian; this host is not");

    /* O_NONBLOCK: a FIFO must be refused below, not waited on (open blocks
     * until a writer comes); it changes nothing for a regular file. */
    int fd = open(path, O_RDONLY | O_NONBLOCK | O_CLOEXEC | O_NOCTTY);
    if (fd < 0)
        return file_error(err, err_size, path, "cannot open: %s", strerror(errno));
    struct stat st;
    if (fstat(fd, &st) != 0) {
        close(fd);
        return file_error(err, err_size, path, "cannot stat: %s", strerror(errno));
    }
    if (!S_ISREG(st.st_mode) || st.st_size < HEADER_BYTES) {
        close(fd);
        return file_error(err, err_size, path, "%s", S_ISREG(st.st_mode) ? "too short for a llama2.c header (28 bytes)"
                                                                   : "not a regular file");
    }
    int32_t h[7];
    if (pread(fd, h, sizeof h, 0) != (ssize_t)sizeof h) {
        close(fd);
        return file_error(err, err_size, path, "cannot read the header");
    }
    struct llama2_config c;
    if (check_header(h, path, &c, err, err_size) != 0) {
        close(fd);
        return -1;
    }

    uint64_t L = c.n_layers, d = c.dim, kv = c.kv_dim, hid = c.hidden_dim, voc = c.vocab_size;
    uint64_t weights = voc * d + L * (d + d * d + 2 * kv * d + d * d + d + 3 * hid * d) + d;
    uint64_t freq = (uint64_t)c.seq_len * c.head_dim; /* real and imaginary halves */
    uint64_t cls = c.shared_classifier ? 0 : voc * d;
    uint64_t with_freq = HEADER_BYTES + 4 * (weights + freq + cls);
    uint64_t without_freq = HEADER_BYTES + 4 * (weights + cls);
    uint64_t size = (uint64_t)st.st_size;
    if (size != with_freq && size != without_freq) {
        close(fd);
        return file_error(err, err_size, path, "%" PRIu64 " bytes, but its header (dim %u, hidden_dim %u, n_layers %u, "
                    "n_heads %u, n_kv_heads %u, vocab_size %d, seq_len %u) needs %" PRIu64 " bytes (or %" PRIu64
                    " without the legacy RoPE tables): %s", size, c.dim, c.hidden_dim, c.n_layers, c.n_heads,
                    c.n_kv_heads, h[5], c.seq_len, with_freq, without_freq,
                    size < without_freq ? "truncated" : "trailing data or a different format version");
    }
    void *map = mmap(NULL, (size_t)size, PROT_READ, MAP_PRIVATE, fd, 0);
    close(fd);
    if (map == MAP_FAILED)
        return file_error(err, err_size, path, "cannot map %" PRIu64 " bytes: %s", size, strerror(errno));

    const float *p = (const float *)((const char *)map + HEADER_BYTES);
    m->cfg = c;
    m->map = map;
    m->map_size = (size_t)size;
    m->token_embedding = p; p += voc * d;
    m->rms_att = p;         p += L * d;
    m->wq = p;              p += L * d * d;
    m->wk = p;              p += L * kv * d;
    m->wv = p;              p += L * kv * d;
    m->wo = p;              p += L * d * d;
    m->rms_ffn = p;         p += L * d;
    m->w1 = p;              p += L * hid * d;
    m->w2 = p;              p += L * d * hid;
    m->w3 = p;              p += L * hid * d;
    m->rms_final = p;       p += d;
    if (size == with_freq)
        p += freq;
    m->wcls = c.shared_classifier ? m->token_embedding : p;
    return 0;
}

void llama2_close(struct llama2_model *m)
{
    if (m->map)
        munmap(m->map, m->map_size);
    memset(m, 0, sizeof *m);
}

struct tkv_cache_params llama2_cache_params(const struct llama2_model *m, uint32_t capacity,
                                            uint32_t n_seqs, uint32_t k_type, uint32_t v_type)
{
    struct tkv_cache_params p = {
        .struct_size = sizeof p,
        .n_layers = m->cfg.n_layers,
        .n_kv_heads = m->cfg.n_kv_heads,
        .head_dim = m->cfg.head_dim,
        .capacity = capacity,
        .n_seqs = n_seqs,
        .k_type = k_type,
        .v_type = v_type,
        .n_q_heads = m->cfg.n_heads,
    };
    return p;
}

int llama2_state_init(struct llama2_state *s, const struct llama2_model *m, uint32_t max_rows)
{
    const struct llama2_config *c = &m->cfg;
    size_t rows = max_rows ? max_rows : 1;
    memset(s, 0, sizeof *s);
    s->max_rows = (uint32_t)rows;
    s->x = malloc(rows * c->dim * sizeof(float));
    s->xb = malloc(rows * c->dim * sizeof(float));
    s->xb2 = malloc(rows * c->dim * sizeof(float));
    s->q = malloc(rows * c->dim * sizeof(float));
    s->att = malloc(rows * c->dim * sizeof(float));
    s->k = malloc(rows * c->kv_dim * sizeof(float));
    s->v = malloc(rows * c->kv_dim * sizeof(float));
    s->hb = malloc(rows * c->hidden_dim * sizeof(float));
    s->hb2 = malloc(rows * c->hidden_dim * sizeof(float));
    s->pos = malloc(rows * sizeof *s->pos);
    if (!s->x || !s->xb || !s->xb2 || !s->q || !s->att || !s->k || !s->v || !s->hb || !s->hb2 || !s->pos) {
        llama2_state_free(s);
        return -1;
    }
    return 0;
}

void llama2_state_free(struct llama2_state *s)
{
    free(s->x);
    free(s->xb);
    free(s->xb2);
    free(s->q);
    free(s->att);
    free(s->k);
    free(s->v);
    free(s->hb);
    free(s->hb2);
    free(s->pos);
    memset(s, 0, sizeof *s);
}

static void rmsnorm(float *out, const float *x, const float *weight, uint32_t rows, uint32_t n)
{
    for (uint32_t r = 0; r < rows; r++, x += n, out += n) {
        float ss = 0.0f;
        for (uint32_t i = 0; i < n; i++)
            ss += x[i] * x[i];
        float inv = 1.0f / sqrtf(ss / (float)n + RMS_EPS);
        for (uint32_t i = 0; i < n; i++)
            out[i] = weight[i] * (x[i] * inv);
    }
}

/* y[r][o] = sum_i w[o][i] x[r][i]. Each weight row is used for all rows of
 * the batch while it is in cache: the batch amortizes the weight traffic. */
static void matmul(float *y, const float *x, const float *w, uint32_t rows, uint32_t in, uint32_t out)
{
    for (uint32_t o = 0; o < out; o++) {
        const float *wo = w + (size_t)o * in;
        for (uint32_t r = 0; r < rows; r++) {
            const float *xr = x + (size_t)r * in;
            float a0 = 0.0f, a1 = 0.0f, a2 = 0.0f, a3 = 0.0f;
            uint32_t i = 0;
            for (; i + 4 <= in; i += 4) {
                a0 += wo[i] * xr[i];
                a1 += wo[i + 1] * xr[i + 1];
                a2 += wo[i + 2] * xr[i + 2];
                a3 += wo[i + 3] * xr[i + 3];
            }
            for (; i < in; i++)
                a0 += wo[i] * xr[i];
            y[(size_t)r * out + o] = (a0 + a1) + (a2 + a3);
        }
    }
}

/* RoPE as llama2.c: the pairs (2i, 2i+1) of every head rotate by the angle
 * pos / 10000^(2i / head_dim). */
static void rope(float *vec, uint32_t n_heads, uint32_t head_dim, uint32_t pos)
{
    for (uint32_t i = 0; i < head_dim; i += 2) {
        float freq = 1.0f / powf(ROPE_THETA, (float)i / (float)head_dim);
        float angle = (float)pos * freq, c = cosf(angle), s = sinf(angle);
        for (uint32_t h = 0; h < n_heads; h++) {
            float *p = vec + (size_t)h * head_dim + i;
            float v0 = p[0], v1 = p[1];
            p[0] = v0 * c - v1 * s;
            p[1] = v0 * s + v1 * c;
        }
    }
}

static int cache_fail(struct llama2_state *s, const char *what, uint32_t layer, int status)
{
    snprintf(s->error, sizeof s->error, "%s (layer %u): %s: %s", what, layer, tkv_status_name(status),
             tkv_last_error());
    return -1;
}

int llama2_forward(const struct llama2_model *m, struct llama2_state *s, tkv_cache *cache,
                   uint32_t n_seqs, const uint32_t *seq_ids, uint32_t n_tokens, const int32_t *tokens,
                   uint32_t n_logits, float *logits)
{
    const struct llama2_config *c = &m->cfg;
    const uint32_t dim = c->dim, kv_dim = c->kv_dim, hid = c->hidden_dim, hd = c->head_dim;
    s->error[0] = '\0';
    if (n_seqs == 0 || n_tokens == 0 || (uint64_t)n_seqs * n_tokens > s->max_rows || n_logits > n_tokens ||
        (n_logits > 0 && !logits)) {
        snprintf(s->error, sizeof s->error, "forward: %u sequences x %u tokens (%u logits) do not fit "
                 "the state's %u rows", n_seqs, n_tokens, n_logits, s->max_rows);
        return -1;
    }
    const uint32_t rows = n_seqs * n_tokens;
    for (uint32_t r = 0; r < rows; r++) {
        if (tokens[r] < 0 || (uint32_t)tokens[r] >= c->vocab_size) {
            snprintf(s->error, sizeof s->error, "forward: token %d is outside the vocabulary (0..%u)",
                     tokens[r], c->vocab_size - 1);
            return -1;
        }
        memcpy(s->x + (size_t)r * dim, m->token_embedding + (size_t)tokens[r] * dim, dim * sizeof(float));
    }
    for (uint32_t i = 0; i < n_seqs; i++) {
        int st = tkv_cache_length(cache, seq_ids[i], 0, &s->pos[i]);
        if (st != TKV_OK)
            return cache_fail(s, "tkv_cache_length", 0, st);
    }

    for (uint32_t l = 0; l < c->n_layers; l++) {
        rmsnorm(s->xb, s->x, m->rms_att + (size_t)l * dim, rows, dim);
        matmul(s->q, s->xb, m->wq + (size_t)l * dim * dim, rows, dim, dim);
        matmul(s->k, s->xb, m->wk + (size_t)l * kv_dim * dim, rows, dim, kv_dim);
        matmul(s->v, s->xb, m->wv + (size_t)l * kv_dim * dim, rows, dim, kv_dim);
        for (uint32_t r = 0; r < rows; r++) {
            uint32_t pos = s->pos[r / n_tokens] + r % n_tokens;
            rope(s->q + (size_t)r * dim, c->n_heads, hd, pos);
            rope(s->k + (size_t)r * kv_dim, c->n_kv_heads, hd, pos);
        }
        if (s->transform)
            s->transform(s->transform_arg, l, s->pos[0], rows, s->k, s->v);
        for (uint32_t i = 0; i < n_seqs; i++) {
            size_t off = (size_t)i * n_tokens * kv_dim;
            int st = tkv_cache_append(cache, seq_ids[i], l, n_tokens, s->k + off, s->v + off);
            if (st != TKV_OK)
                return cache_fail(s, "tkv_cache_append", l, st);
        }
        struct tkv_attention_stats stats = { 0, 0 };
        int st = tkv_attention(cache, l, n_seqs, seq_ids, n_tokens, c->n_heads, s->q, s->att, &stats);
        if (st != TKV_OK)
            return cache_fail(s, "tkv_attention", l, st);
        s->rows_total += stats.rows_total;
        s->rows_skipped += stats.rows_skipped;

        matmul(s->xb2, s->att, m->wo + (size_t)l * dim * dim, rows, dim, dim);
        for (size_t i = 0; i < (size_t)rows * dim; i++)
            s->x[i] += s->xb2[i];

        rmsnorm(s->xb, s->x, m->rms_ffn + (size_t)l * dim, rows, dim);
        matmul(s->hb, s->xb, m->w1 + (size_t)l * hid * dim, rows, dim, hid);
        matmul(s->hb2, s->xb, m->w3 + (size_t)l * hid * dim, rows, dim, hid);
        for (size_t i = 0; i < (size_t)rows * hid; i++) {
            float a = s->hb[i];
            s->hb[i] = a / (1.0f + expf(-a)) * s->hb2[i]; /* SwiGLU: silu(w1 x) * (w3 x) */
        }
        matmul(s->xb, s->hb, m->w2 + (size_t)l * dim * hid, rows, hid, dim);
        for (size_t i = 0; i < (size_t)rows * dim; i++)
            s->x[i] += s->xb[i];
    }

    if (n_logits == 0)
        return 0;
    for (uint32_t i = 0; i < n_seqs; i++) {
        const float *last = s->x + ((size_t)i * n_tokens + n_tokens - n_logits) * dim;
        rmsnorm(s->xb, last, m->rms_final, n_logits, dim);
        matmul(logits + (size_t)i * n_logits * c->vocab_size, s->xb, m->wcls, n_logits, dim, c->vocab_size);
    }
    return 0;
}

int32_t llama2_argmax(const float *logits, uint32_t n)
{
    uint32_t best = 0;
    for (uint32_t i = 1; i < n; i++)
        if (logits[i] > logits[best])
            best = i;
    return (int32_t)best;
}
