/* SPDX-License-Identifier: MIT */
/*
 * Fused decode attention (struct tkv_attention_args), split-K: one submit
 * of
 *   upload    the queries, the work units, the query rows' units and the
 *             call's block table to device memory;
 *   prepare   R q (turbo keys), then S R q per group (QJL keys): the rows
 *             shader, once per query row;
 *   attention one workgroup per (unit, kv head, chunk of rows): partial
 *             softmax statistics and value sums (shaders/attention.comp);
 *   merge     one workgroup per output row: combine the chunks, R^T once,
 *             log-sum-exp (shaders/merge.comp); where decode.comp runs,
 *             its workgroup that finishes a (unit, kv head) last does this
 *             instead (shaders/partials.glsl, counters in dev->arrivals, no
 *             merge dispatch);
 *   download  the outputs, the per-row skip counts and log-sum-exps.
 * A unit is up to QT query rows (tokens x the GQA group's heads) of one
 * sequence, so sequences with different n_q share a call without idle
 * workgroups. The chunk size spreads the work over about
 * dev->target_workgroups workgroups, so a long context on few heads still
 * fills the device; chunks are numbered from the first one a unit sees, so
 * a sliding window costs only the chunks inside it.
 *
 * The core has validated the call (shapes, formats against device_caps,
 * every block of every sequence inside both pools, scale, softcap,
 * threshold).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "vk.h"

/* Fewest rows of a decode.comp chunk (TURBO_VK_MIN_CHUNK overrides). */
#define VK_DECODE_MIN_CHUNK 128u

static uint64_t align_up(uint64_t x) { return (x + TKV_VK_ALIGN - 1) / TKV_VK_ALIGN * TKV_VK_ALIGN; }
static uint64_t round_up(uint64_t x, uint64_t to) { return (x + to - 1) / to * to; }

/* A sequence of the call; seqs are seq_size bytes apart. */
static const struct tkv_attn_seq *seq_at(const struct tkv_attention_args *a, uint32_t s)
{
    return (const struct tkv_attn_seq *)((const char *)a->seqs + (size_t)s * a->seq_size);
}

/* Rows [lo, hi) are visible to the query at position p. */
static uint32_t visible_lo(uint32_t p, uint32_t window) { return window && p + 1 > window ? p + 1 - window : 0; }

/* The unit of a sequence's query rows qr0 .. qr0 + qt - 1 (fewer at the end):
 * the rows [lo(p of qr0), p of its last query row] and its chunks. */
static struct vk_unit unit_of(const struct tkv_attn_seq *seq, uint32_t qr0, uint32_t qt, uint32_t ratio,
                              uint32_t window, uint64_t chunk, uint64_t off, uint64_t *span)
{
    const uint32_t p0 = seq->n_ctx - seq->n_q, rows = seq->n_q * ratio;
    const uint32_t qr_last = (qr0 + qt < rows ? qr0 + qt : rows) - 1;
    const uint64_t lo = visible_lo(p0 + qr0 / ratio, window), hi = (uint64_t)p0 + qr_last / ratio + 1;
    *span = hi - lo;
    return (struct vk_unit){
        .n_ctx = seq->n_ctx,
        .n_q = seq->n_q,
        .q_first = seq->q_first,
        .block_first = seq->block_first,
        .qr0 = qr0,
        .c_first = (uint32_t)((lo + off) / chunk),
        .n_chunks = (uint32_t)((hi - 1 + off) / chunk - (lo + off) / chunk + 1),
    };
}

/* Staged batch rows: a power of two up to one per invocation (more
 * invocations share a row beyond), as many as the stage holds with the
 * slack of every segment: a batch of br rows touches at most
 * ceil((br - 1) / block_tokens) + 1 pool blocks. */
static uint32_t batch_rows(uint32_t row_max, uint32_t block_tokens, uint32_t at_most)
{
    uint32_t br = TKV_VK_WG;
    while (at_most && br > at_most && br > 1) /* TURBO_VK_BATCH_ROWS */
        br /= 2;
    for (;;) {
        uint64_t segments = ((uint64_t)br - 1 + block_tokens - 1) / block_tokens + 1; /* any block_tokens */
        segments = segments < br ? segments : br;
        if (br == 1 || (uint64_t)br * row_max + (uint64_t)segments * TKV_VK_STAGE_SLACK <= TKV_VK_STAGE_BYTES)
            return br;
        br /= 2;
    }
}

/* Shared memory of decode.comp with qt query rows per unit (its shared
 * arrays: queries as vec4s, raw queries, codebooks, per-lane weights,
 * V addresses and keep flags, split values' outlier masks). */
static uint64_t decode_shared_bytes(uint32_t hd, uint32_t qt, const struct vk_layout *kl, const struct vk_layout *vl,
                                    uint32_t nsg)
{
    const uint64_t qt4 = (qt + 3) / 4, vrw = ((vl->row_bytes + 3) / 4) | 1u;
    /* qs, qo (one vec4 unless keys are split), xs, xo (one float, and up to
     * 12 bytes of alignment before the next vec4 array, unless values are
     * split), the codebooks, then the per-lane arrays, the reductions and
     * the merge's maxima, sums and flag (partials.glsl) */
    return hd * qt4 * 16 + (kl->split ? hd * qt4 * 16 : 16) + (uint64_t)qt * hd * 4 +
           (vl->split ? (uint64_t)qt * hd * 4 : 16) + 2 * 80 * 4 +
           (uint64_t)TKV_VK_WG * (qt4 * 16 + vrw * 4 + 4 + hd / 32 * 4) + (uint64_t)nsg * qt * 12 +
           (uint64_t)qt * 8 + 8 + (vl->split ? (uint64_t)TKV_VK_WG * ((hd + 31) / 32) * 4 : 4);
}

/* What decode.comp and decode_wide.comp both assume of the device and
 * head_dim: subgroups of one fixed size of at least 4 that divides the
 * workgroup, head_dim a multiple of 32 and of it with a power-of-two number
 * of coordinates per lane, at most 16. Those coordinates per lane, or 0
 * where either shader cannot run (or TURBO_VK_DECODE=0). */
static uint32_t subgroup_dpl(const struct vk_device *dev, uint32_t hd)
{
    const uint32_t sg = dev->subgroup;
    if (sg < 4 || dev->knobs.no_decode || sg > TKV_VK_WG || TKV_VK_WG % sg || hd % 32 || hd % sg)
        return 0;
    const uint32_t dpl = hd / sg;
    return (dpl & (dpl - 1)) || dpl > 16 ? 0 : dpl;
}

/* Whether every turbo group of a row holds a multiple of 32 values (both
 * shaders walk a row's values 32 at a time). */
static int groups_of_32(const struct vk_layout *l)
{
    for (uint32_t g = 0; g < 16; g++)
        if (((l->groups[g / 4] >> (8 * (g % 4))) & 0xffu) % 32)
            return 0;
    return 1;
}

/* The most query rows per unit of either shader: acc accumulators per lane
 * by default (1 to 8 rows), or TURBO_VK_DECODE_QT rows (up to 64
 * accumulators), fewer while its shared arrays (shared_bytes) do not fit
 * the device; 0 where not even one row does. */
static uint32_t unit_rows(const struct vk_device *dev, const struct vk_layout *kl, const struct vk_layout *vl,
                          uint32_t dpl, uint32_t acc,
                          uint64_t (*shared_bytes)(uint32_t, uint32_t, const struct vk_layout *,
                                                   const struct vk_layout *, uint32_t))
{
    uint32_t qt = acc / dpl > 8 ? 8 : acc / dpl > 1 ? acc / dpl : 1;
    if (dev->knobs.decode_qt) /* TURBO_VK_DECODE_QT, up to 64 accumulators */
        qt = dev->knobs.decode_qt * dpl <= 64 ? dev->knobs.decode_qt : 64 / dpl;
    while (qt && shared_bytes(kl->head_dim, qt, kl, vl, TKV_VK_WG / dev->subgroup) >
                     dev->props.limits.maxComputeSharedMemorySize)
        qt--;
    return qt;
}

/* Whether decode.comp runs this call, and the most query rows per unit it
 * takes (0: the attention shader runs). Its assumptions (decode.comp's
 * head comment): subgroup_dpl's, turbo groups of multiples of 32 values,
 * no QJL part and no f32 rows, rows of at most TKV_VK_DECODE_ROW_WORDS
 * words, and at most 32 accumulators per lane (64 with outlier-split
 * values, whose outliers have their own) (H200, 4 query tokens of a GQA
 * group of 4 at 128K: 8 query rows a unit 644 us, 16 rows 911, 4 rows 758;
 * TURBO_VK_DECODE_QT). Turbo keys of 4 bits: at most 4 rows (16
 * accumulators), which were 1.4-1.6x faster than 8 on an H100 at 4K-128K
 * (turbo4, 4 query tokens: 42 / 102 / 679 us against 68 / 153 / 970;
 * 169 registers against 203), where turbo2 and turbo3 lose 6-7% at 128K
 * with 4 (docs/measurements/h200-2026-12-05-s14/). */
static uint32_t decode_qt_max(const struct vk_device *dev, const struct vk_layout *kl, const struct vk_layout *vl)
{
    const uint32_t dpl = subgroup_dpl(dev, kl->head_dim);
    if (!dpl)
        return 0;
    const struct vk_layout *both[2] = { kl, vl };
    for (int i = 0; i < 2; i++) {
        const struct vk_layout *l = both[i];
        if (l->encoding == TKV_VK_ENC_F32 || l->qjl || (l->row_bytes + 3) / 4 > TKV_VK_DECODE_ROW_WORDS ||
            (l->encoding == TKV_VK_ENC_TURBO && !groups_of_32(l)))
            return 0;
    }
    return unit_rows(dev, kl, vl, dpl, kl->encoding == TKV_VK_ENC_TURBO && kl->bits >= 4 ? 16 : 32, decode_shared_bytes);
}

/* Shared memory of decode_wide.comp with qt query rows per unit: row
 * addresses (two uvec4 arrays of half a workgroup), weights, codebooks,
 * the partials, the reductions (the formats do not change it). */
static uint64_t wide_shared_bytes(uint32_t hd, uint32_t qt, const struct vk_layout *kl, const struct vk_layout *vl,
                                  uint32_t nsg)
{
    (void)kl;
    (void)vl;
    return 2ull * (TKV_VK_WG / 2) * 16 + (uint64_t)TKV_VK_WG * ((qt + 3) / 4) * 16 + 80 * 4 + (uint64_t)qt * hd * 4 +
           (uint64_t)nsg * qt * 12;
}

/* Whether decode_wide.comp runs this call (called where decode.comp does
 * not), and the most query rows per unit it takes (0: the attention shader
 * runs). Its assumptions (decode_wide.comp's head comment): subgroup_dpl's,
 * with shuffles and ballots; f16 or q8_0 keys; f16, q8_0 or turbo
 * values, turbo without a QJL part or outliers and with groups of
 * multiples of 32 values. Up to 16 accumulators per lane (TURBO_VK_DECODE_QT:
 * up to 64): the queries, accumulators and pending scores of a unit live
 * in registers beside a group of rows' words. */
static uint32_t wide_qt_max(const struct vk_device *dev, const struct vk_layout *kl, const struct vk_layout *vl)
{
    const uint32_t dpl = subgroup_dpl(dev, kl->head_dim);
    if (!dpl || !dev->subgroup_wide || dev->knobs.no_wide)
        return 0;
    if (kl->encoding != TKV_VK_ENC_F16 && kl->encoding != TKV_VK_ENC_Q8_0)
        return 0;
    if (vl->encoding == TKV_VK_ENC_TURBO) {
        if (vl->qjl || vl->split || !groups_of_32(vl))
            return 0;
    } else if (vl->encoding != TKV_VK_ENC_F16 && vl->encoding != TKV_VK_ENC_Q8_0) {
        return 0;
    }
    return unit_rows(dev, kl, vl, dpl, 16, wide_shared_bytes);
}

/* The alignment in bytes, at most 16, of every row of a pool at address
 * at (TURBO_VK_WIDE=2: 1, so that decode_wide.comp takes its general path). */
static uint32_t row_alignment(const struct vk_device *dev, uint64_t at, uint64_t block_stride, uint64_t head_stride,
                              uint32_t row_bytes)
{
    const uint64_t x = at | block_stride | head_stride | row_bytes | 16u;
    return dev->knobs.wide_unaligned ? 1u : (uint32_t)(x & (~x + 1));
}

/* TURBO_VK_SKIP=upload: the bytes the device now holds. */
static int remember_upload(struct vk_device *dev, const void *bytes, uint64_t n)
{
    struct vk_knobs *k = &dev->knobs;
    if (k->last_upload_cap < n) {
        void *grown = realloc(k->last_upload, (size_t)n);
        if (!grown)
            return VK_ERROR_STATUS(TKV_ENOMEM, "attention: no host memory (%llu bytes) for TURBO_VK_SKIP=upload",
                                   (unsigned long long)n);
        k->last_upload = grown;
        k->last_upload_cap = n;
    }
    memcpy(k->last_upload, bytes, (size_t)n);
    k->last_upload_bytes = n;
    return TKV_OK;
}

/* ---- device tensors (ABI 2.2): q from and out into the host's buffers ---- */

/* The host's q and out, when in its device memory: their addresses, and
 * whether the call is queued (out in device memory: not waited for). */
struct attn_io {
    const struct tkv_device_tensor *q, *out;
    VkDeviceAddress q_at, out_at;
};

static int attn_io(struct vk_device *dev, const struct tkv_attention_args *a, uint64_t n, struct attn_io *io)
{
    static const char op[] = "attention";
    int rc;
    io->q = TKV_ARGS_HAS(a, q_dev) ? a->q_dev : NULL;
    io->out = TKV_ARGS_HAS(a, out_dev) ? a->out_dev : NULL;
    if ((io->q && (rc = vk_tensor_address(dev, io->q, n, op, "q", &io->q_at)) != TKV_OK) ||
        (io->out && (rc = vk_tensor_address(dev, io->out, n, op, "out", &io->out_at)) != TKV_OK))
        return rc;
    /* a call that waits: not while the host records, and after the queued
     * calls that may still read the scratch it writes from the host */
    return io->out ? TKV_OK : vk_may_wait(dev, op);
}

/* Where the merge writes the output rows: the host's f32 buffer itself,
 * else the call's outputs (out_scratch; f16 / bf16 narrowed from there by
 * attn_out_record). */
static uint64_t attn_out_rows(const struct attn_io *io, uint64_t out_scratch)
{
    return io->out && io->out->elem == TKV_ELEM_F32 ? io->out_at : out_scratch;
}

/* Bytes before the call's inputs in dev->inputs: with TURBO_VK_MATH's
 * inputs mode (CPU devices) the constant tables' address, in the 8 bytes
 * just before them (common.glsl, math_address), where the attention
 * shaders read it; else none. */
static uint64_t inputs_head(const struct vk_device *dev)
{
    return dev->knobs.math_in_inputs ? TKV_VK_ALIGN : 0;
}

/* The queries into the inputs (at their start, address inputs, as the
 * host would have written them), widened or copied from the host's
 * buffer. */
static int attn_q_record(struct vk_device *dev, const struct attn_io *io, uint64_t inputs, uint64_t n)
{
    int rc;
    if (!io->q)
        return TKV_OK;
    if ((rc = vk_record_convert(dev, io->q_at, io->q->elem, inputs, TKV_ELEM_F32, n, "attention")) != TKV_OK)
        return rc;
    vk_barrier(dev);
    return TKV_OK;
}

/* f16 / bf16 outputs narrowed into the host's buffer. */
static int attn_out_record(struct vk_device *dev, const struct attn_io *io, uint64_t out_scratch, uint64_t n)
{
    if (!io->out || io->out->elem == TKV_ELEM_F32)
        return TKV_OK;
    return vk_record_convert(dev, out_scratch, TKV_ELEM_F32, io->out_at, io->out->elem, n, "attention");
}

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return (x > y) - (x < y);
}

/* TURBO_VK_CLOCK: decode.comp's clock records of the call just run, one
 * stderr line: when its workgroups started and ended (the device's clock,
 * from the first start), and how long each part of a workgroup took (its
 * SM's clock, in ns at the ratio of all records' cycles to their
 * nanoseconds): median / max over the workgroups; the merge over those that
 * merged, the arrival (counting in, not the last) over the others. */
static void clock_summary(struct vk_device *dev, uint64_t n_wgs, uint64_t chunk, double call_ns)
{
    const uint64_t *rec = dev->clocks->map;
    enum { START, END, PROLOGUE, LOOP, PARTIAL, MERGE, ARRIVE, N };
    uint64_t *all = malloc(sizeof(uint64_t) * N * (n_wgs ? n_wgs : 1)), *v[N];
    uint64_t n[N] = { 0 };
    if (!all)
        return;
    for (int i = 0; i < N; i++)
        v[i] = all + (size_t)i * n_wgs;
    uint64_t t0 = UINT64_MAX, cycles = 0, ns = 0;
    for (uint64_t w = 0; w < n_wgs; w++) {
        const uint64_t *r = rec + w * TKV_VK_CLOCK_WORDS;
        if (r[TKV_VK_CLOCK_RT_START] && r[TKV_VK_CLOCK_RT_START] < t0)
            t0 = r[TKV_VK_CLOCK_RT_START];
    }
    for (uint64_t w = 0; w < n_wgs; w++) {
        const uint64_t *r = rec + w * TKV_VK_CLOCK_WORDS;
        if (!r[TKV_VK_CLOCK_RT_START] || !r[TKV_VK_CLOCK_RT_END])
            continue; /* a workgroup past the units or chunks: it left at once */
        v[START][n[START]++] = r[TKV_VK_CLOCK_RT_START] - t0;
        v[END][n[END]++] = r[TKV_VK_CLOCK_RT_END] - t0;
        cycles += r[TKV_VK_CLOCK_END] - r[TKV_VK_CLOCK_START];
        ns += r[TKV_VK_CLOCK_RT_END] - r[TKV_VK_CLOCK_RT_START];
        v[PROLOGUE][n[PROLOGUE]++] = r[TKV_VK_CLOCK_PROLOGUE] - r[TKV_VK_CLOCK_START];
        v[LOOP][n[LOOP]++] = r[TKV_VK_CLOCK_LOOP] - r[TKV_VK_CLOCK_PROLOGUE];
        v[PARTIAL][n[PARTIAL]++] = r[TKV_VK_CLOCK_PARTIAL] - r[TKV_VK_CLOCK_LOOP];
        const int merged = r[TKV_VK_CLOCK_MERGED] != 0;
        v[merged ? MERGE : ARRIVE][n[merged ? MERGE : ARRIVE]++] = r[TKV_VK_CLOCK_END] - r[TKV_VK_CLOCK_PARTIAL];
    }
    /* cycles per ns from the records themselves (0 where the device clock
     * did not move: then cycles are shown as they are) */
    const double per_ns = ns && cycles ? (double)cycles / (double)ns : 0.0;
    char line[1024];
    int at = snprintf(line, sizeof line, "vkclock: wgs %llu (%llu ran) chunk %llu call %.2f us; SM clock %.3f GHz",
                      (unsigned long long)n_wgs, (unsigned long long)n[START], (unsigned long long)chunk,
                      call_ns * 1e-3, per_ns);
    static const char *names[N] = { "start", "end", "prologue", "loop", "partial", "merge", "arrive" };
    for (int i = 0; i < N; i++) {
        if (!n[i])
            continue;
        qsort(v[i], n[i], sizeof *v[i], cmp_u64);
        const double div = i <= END ? 1e3 : per_ns > 0 ? per_ns * 1e3 : 1.0;
        at += snprintf(line + at, sizeof line - (size_t)at, "; %s %.2f / %.2f", names[i], v[i][n[i] / 2] / div,
                       v[i][n[i] - 1] / div);
        if (at >= (int)sizeof line)
            break;
    }
    fprintf(stderr, "%s us (median / max)\n", line);
    free(all);
}

/* Shared memory decode.comp's append variant adds: the encoder's counter
 * and two row addresses (its other scratch lies on decode.comp's own
 * arrays, ENC_ALIASED), and room to align them. */
#define VK_ENCODER_SHARED_BYTES 32u

/* One attention call, and with ap (ABI 2.7's append_attention) the new
 * rows quantized inside it, by decode.comp's append variant. Where that
 * cannot run the call (not queued, not decode.comp merging in its
 * dispatch, no such module, its shared arrays too large, a measurement
 * knob), *declined is set and nothing is recorded. */
static int attention_call(struct vk_device *dev, const struct tkv_attention_args *a, const struct vk_append *ap,
                          int *declined)
{
    static const char op[] = "attention";
    const struct vk_buffer *k_buf = vk_buffer_of(a->k.buf), *v_buf = vk_buffer_of(a->v.buf);
    struct vk_layout kl, vl;
    struct attn_io io;
    int rc;
    if ((rc = vk_usable(dev, op)) != TKV_OK ||
        (rc = attn_io(dev, a, (uint64_t)a->n_q_total * a->n_q_heads * a->k.fmt.head_dim, &io)) != TKV_OK)
        return rc;
    /* out in the host's device memory: recorded, not waited for; the
     * inputs then ride in the commands and the outputs stay in work */
    const int queued = io.out != NULL;
    vk_layout_init(&a->k.fmt, &kl);
    vk_layout_init(&a->v.fmt, &vl);

    const uint32_t hd = kl.head_dim, wg = TKV_VK_WG, ratio = a->n_q_heads / a->n_kv_heads, window = a->window;
    /* a second float per query element (S R q, or q for outlier-split
     * keys) and per accumulated element (QJL signs, or the outliers) */
    const uint32_t qs = kl.qjl || kl.split ? 2u : 1u, va = vl.qjl || vl.split ? 2u : 1u;
    const uint64_t n_out = (uint64_t)a->n_q_total * a->n_q_heads, n_q_rows = (uint64_t)a->n_q_total * ratio;
    /* decode.comp where it applies, else decode_wide.comp where that does
     * (the same units and chunks): nsg subgroups per workgroup (chunk) */
    const uint32_t narrow_qt = decode_qt_max(dev, &kl, &vl), wide_qt = narrow_qt ? 0 : wide_qt_max(dev, &kl, &vl);
    const uint32_t dec_qt = narrow_qt ? narrow_qt : wide_qt, nsg = dec_qt ? TKV_VK_WG / dev->subgroup : 1;

    /* Query tiles: as many query rows per workgroup as its shared memory
     * holds, and at most 64 accumulators per invocation (attention.comp: 8
     * elements for each query row, twice for QJL values; decode.comp: its
     * coordinates for each), spread evenly over the tiles of the sequence
     * with most query rows. */
    uint32_t qt_max = TKV_VK_QUERY_TILE_FLOATS / (hd * qs);
    qt_max = qt_max > 8u / va ? 8u / va : qt_max < 1u ? 1u : qt_max;
    if (dec_qt)
        qt_max = dec_qt;
    const uint64_t max_rows = (uint64_t)a->max_n_q * ratio, max_tiles = (max_rows + qt_max - 1) / qt_max;
    const uint32_t qt = (uint32_t)((max_rows + max_tiles - 1) / max_tiles);

    /* Units, the most rows one needs, and the rows visible in all. */
    uint64_t n_units = 0, span_max = 0, total = 0, span;
    for (uint32_t s = 0; s < a->n_seqs; s++) {
        const struct tkv_attn_seq *seq = seq_at(a, s);
        const uint32_t p0 = seq->n_ctx - seq->n_q;
        for (uint32_t qr0 = 0; qr0 < seq->n_q * ratio; qr0 += qt, n_units++) {
            unit_of(seq, qr0, qt, ratio, window, 1, 0, &span);
            span_max = span > span_max ? span : span_max;
        }
        for (uint32_t i = 0; i < seq->n_q; i++)
            total += (uint64_t)(p0 + i + 1 - visible_lo(p0 + i, window)) * a->n_q_heads;
    }

    const int fused = kl.bits && !kl.qjl && qt * hd <= TKV_VK_ROWS_ELEMS && !dev->knobs.separate_prepare &&
                      !(kl.split && kl.rotation == TKV_VK_ROT_NONE);
    const int prepare_dispatch = kl.bits && !fused;
    const int one_pass = narrow_qt && qt * hd <= TKV_VK_ROWS_ELEMS && !dev->knobs.merge_dispatch;
    const uint32_t row_max = kl.row_bytes > vl.row_bytes ? kl.row_bytes : vl.row_bytes;
    uint32_t spec[TKV_VK_SPEC_COUNT] = {
        [TKV_VK_SPEC_WG] = wg,
        [TKV_VK_SPEC_HEAD_DIM] = hd,
        [TKV_VK_SPEC_K_ENC] = kl.encoding,
        [TKV_VK_SPEC_K_BITS] = kl.bits,
        [TKV_VK_SPEC_K_QJL] = kl.qjl,
        [TKV_VK_SPEC_K_ROW_BYTES] = kl.row_bytes,
        [TKV_VK_SPEC_V_ENC] = vl.encoding,
        [TKV_VK_SPEC_V_BITS] = vl.bits,
        [TKV_VK_SPEC_V_QJL] = vl.qjl,
        [TKV_VK_SPEC_V_ROW_BYTES] = vl.row_bytes,
        [TKV_VK_SPEC_QT] = qt,
        [TKV_VK_SPEC_Q8_BLOCK] = TKV_Q8_0_BLOCK,
        [TKV_VK_SPEC_BATCH_ROWS] = batch_rows(row_max, a->k.block_tokens, dev->knobs.batch_rows),
        [TKV_VK_SPEC_DEBUG] = dev->knobs.shader_skip,
        [TKV_VK_SPEC_Q_ROT] = fused ? kl.rotation : TKV_VK_ROT_NONE,
        [TKV_VK_SPEC_SUBGROUP] = dec_qt ? dev->subgroup : 0,
        [TKV_VK_SPEC_K_SPLIT] = kl.split,
        [TKV_VK_SPEC_V_SPLIT] = vl.split,
        [TKV_VK_SPEC_FUSED] = (uint32_t)one_pass,
        [TKV_VK_SPEC_V_ROT] = vl.rotation,
        [TKV_VK_SPEC_K_ALIGN] =
            wide_qt ? row_alignment(dev, k_buf->address, a->k.block_stride, a->k.head_stride, kl.row_bytes) : 0,
        [TKV_VK_SPEC_V_ALIGN] =
            wide_qt ? row_alignment(dev, v_buf->address, a->v.block_stride, a->v.head_stride, vl.row_bytes) : 0,
        [TKV_VK_SPEC_WIDE_WORDS] = wide_qt ? (dev->knobs.wide_words ? dev->knobs.wide_words : 32u) : 0,
        [TKV_VK_SPEC_V_ROWS] = narrow_qt ? dev->knobs.v_rows : 0,
        [TKV_VK_SPEC_MERGE_ILP] = narrow_qt ? dev->knobs.merge_ilp : 0,
    };
    memcpy(spec + TKV_VK_SPEC_GROUPS, kl.groups, sizeof kl.groups);
    /* the tables' address: a constant of the pipeline, or 0 (read from the
     * head of the inputs) */
    const uint64_t head = inputs_head(dev), math = head ? 0 : dev->math_buf->address;
    spec[TKV_VK_SPEC_MATH_LO] = (uint32_t)math;
    spec[TKV_VK_SPEC_MATH_HI] = (uint32_t)(math >> 32);
    /* The pipeline first: on NVIDIA its registers say how many of its
     * workgroups an SM holds at once (resident) */
    VkPipeline pipeline;
    enum vk_shader shader = wide_qt ? VK_SHADER_DECODE_WIDE : dec_qt ? VK_SHADER_DECODE : VK_SHADER_ATTENTION;
    /* turbo3 on the tensor cores (tensor.c, shaders/tensor.glsl) where
     * decode.comp would run with its queries rotated and its chunks merged
     * inside; not the fused step (decode_append) */
    if (shader == VK_SHADER_DECODE && !ap && fused && one_pass &&
        vk_tc_takes(dev, a, qt, k_buf->address, v_buf->address))
        shader = VK_SHADER_DECODE_TC;
    uint32_t resident = 0;
    if (ap) {
        /* step 0 needs the merge inside the dispatch (the append record
         * follows the merge's) and runs only where it is the call's one
         * dispatch a queued step records */
        const struct vk_knobs *kn = &dev->knobs;
        if (!queued || shader != VK_SHADER_DECODE || !one_pass || !dev->modules[VK_SHADER_DECODE_APPEND] ||
            kn->no_fused_step || kn->skip || kn->repeat > 1 || kn->shader_skip || kn->clock ||
            decode_shared_bytes(hd, qt, &kl, &vl, nsg) + VK_ENCODER_SHARED_BYTES >
                dev->props.limits.maxComputeSharedMemorySize) {
            *declined = 1;
            return TKV_OK;
        }
        shader = VK_SHADER_DECODE_APPEND;
    }
    if ((rc = vk_attention_pipeline(dev, shader, spec, &pipeline, &resident)) != TKV_OK)
        return rc;

    /* Chunks: enough workgroups to fill the device, a whole number of
     * TKV_VK_WG rows each (decode.comp: of nsg subgroups' batches, at least
     * min_rows), at most TKV_VK_MAX_CHUNKS per query row (its rows may start
     * inside a chunk: one more than span / chunk). */
    const uint64_t rows_unit = dec_qt ? (uint64_t)nsg * dev->subgroup : wg;
    const uint64_t min_rows = dec_qt ? round_up(dev->knobs.min_chunk ? dev->knobs.min_chunk : VK_DECODE_MIN_CHUNK, rows_unit)
                                     : wg;
    /* decode.comp, decode_wide.comp: one wave of the workgroups the SMs
     * hold at once where the device says (NVIDIA: registers, SMs), else a
     * quarter of the target. On the H200 / H100 at 128K (plugins/vulkan/
     * README.md, "How many workgroups"): turbo3 (166 registers, 3 an SM)
     * 392 workgroups 1.12-1.15x faster than 256, 512 slower; turbo4 (169,
     * 2 an SM) 1.3x slower at 392; decode_wide.comp (96, 5 an SM) f16 1.29x
     * and q8_0 1.64x faster at 660 than at 256, 1024 slower. */
    uint64_t target = (uint64_t)dev->target_workgroups / (dec_qt ? 4 : 1);
    if (dec_qt && resident && dev->sm_count && !dev->workgroups_set)
        target = (uint64_t)dev->sm_count * resident;
    uint64_t per_unit = target / (n_units * a->n_kv_heads);
    per_unit = per_unit < 1 ? 1 : per_unit;
    uint64_t chunk = round_up((span_max + per_unit - 1) / per_unit, rows_unit);
    uint64_t fewest = round_up((span_max + TKV_VK_MAX_CHUNKS - 2) / (TKV_VK_MAX_CHUNKS - 1), rows_unit);
    chunk = chunk < fewest ? fewest : chunk;
    chunk = chunk < min_rows ? min_rows : chunk;
    /* A fused step (ABI 2.7, step 0): the grid of chunks shifted by
     * grid_off rows so that the new tokens begin a chunk of their own. The
     * workgroup that quantizes them then scores only them, and no workgroup
     * with a whole chunk of rows waits for the encoding first. Only at
     * short contexts, whose chunks are at their fewest rows, and where the
     * extra chunk still fits the wave: on an H100 the shift took turbo3o's
     * 4K step from 44.6 to 39.8 us a layer, and cost 3% (turbo3) and 7%
     * (turbo3o) at 128K (docs/measurements/gpu-2026-12-07-s28/). */
    uint64_t grid_off = 0, max_chunks = 0;
    const int try_shift = shader == VK_SHADER_DECODE_APPEND && !dev->knobs.no_grid_shift && chunk == min_rows;
    for (int pass = try_shift ? 0 : 1; pass < 2; pass++) {
        grid_off = pass == 0 ? (chunk - ap->first % chunk) % chunk : 0;
        max_chunks = 0;
        for (uint32_t s = 0; s < a->n_seqs; s++)
            for (uint32_t qr0 = 0; qr0 < seq_at(a, s)->n_q * ratio; qr0 += qt) {
                uint64_t n_chunks = unit_of(seq_at(a, s), qr0, qt, ratio, window, chunk, grid_off, &span).n_chunks;
                max_chunks = n_chunks > max_chunks ? n_chunks : max_chunks;
            }
        if (pass == 1 || (n_units * a->n_kv_heads * max_chunks <= target && max_chunks <= TKV_VK_MAX_CHUNKS))
            break;
    }

    /* Inputs (queries, units, query rows' units, block table; prepared
     * queries after them) in dev->inputs: device-local memory the host
     * writes directly where the device has such a type (a discrete GPU's
     * BAR window, lavapipe), else device memory filled by one copy from the
     * staging buffer. Partials in dev->work. Outputs (rows, skip counts,
     * lse) written by the merge straight into host-visible dev->outputs,
     * else into work and copied back. TURBO_VK_STAGED_IO=1 takes the
     * copies everywhere (a measurement knob). The turbo keys' query
     * rotation runs inside the attention shader when the tile fits the
     * rotation's shared memory and the keys have no QJL part (which needs
     * S R q); else the rows shader prepares the queries (also [q | q] for
     * outlier-split keys without a rotation: the shader reads Q_ROT NONE
     * as prepared queries). */
    /* f32 queries in the host's buffer read where they are (no copy, no
     * dispatch); else copied or widened to the start of the inputs */
    const int q_direct = io.q && io.q->elem == TKV_ELEM_F32 && !prepare_dispatch;
    const uint64_t q_bytes = n_out * hd * sizeof(float);
    const uint64_t units_at = align_up(q_bytes), row_units_at = align_up(units_at + n_units * sizeof(struct vk_unit));
    const uint64_t blocks_at = align_up(row_units_at + n_q_rows * sizeof(uint32_t));
    /* decode.comp merges in the workgroup that finishes a (unit, kv head)
     * last, where its rows fit the rotation's shared memory (no merge
     * dispatch; TURBO_VK_MERGE=1 keeps merge.comp): its output addresses
     * after the block table. decode_wide.comp leaves its partials to
     * merge.comp: with the merge inside (partials.glsl) it took 128
     * registers instead of 96 and was 1.2x (f16) to 1.45x (q8_0) slower at
     * 128K on the H200, with or without the dispatch
     * (docs/measurements/h200-2026-12-05-s10/). */
    const uint64_t fused_at = align_up(blocks_at + (uint64_t)a->n_blocks * sizeof(uint32_t));
    const uint64_t up_bytes = one_pass ? fused_at + sizeof(struct vk_fused) + (ap ? sizeof *ap : 0)
                                       : blocks_at + (uint64_t)a->n_blocks * sizeof(uint32_t);
    const uint64_t prep_at = align_up(up_bytes), prep_bytes = prepare_dispatch ? q_bytes * qs : 0;
    const uint64_t in_bytes = head + prep_at + prep_bytes;
    const uint64_t acc_at = 0, n_partials = n_out * max_chunks;
    const uint64_t ml_at = align_up(acc_at + n_partials * va * hd * sizeof(float));
    const uint64_t partial_bytes = align_up(ml_at + n_partials * TKV_VK_ML_FLOATS * sizeof(float));
    const uint64_t counts_at = align_up(q_bytes), lse_at = align_up(counts_at + n_out * sizeof(uint32_t));
    const uint64_t down_bytes = lse_at + n_out * sizeof(float); /* out rows at 0 */
    if (chunk * max_chunks > UINT32_MAX || n_units * a->n_kv_heads * max_chunks > UINT32_MAX ||
        n_out > UINT32_MAX || ml_at / TKV_VK_ALIGN > UINT32_MAX || in_bytes / TKV_VK_ALIGN > UINT32_MAX)
        return VK_ERROR_STATUS(TKV_ERANGE,
                               "%s: %llu query rows x %u kv heads over up to %u rows is too much work for one call",
                               op, (unsigned long long)n_q_rows, a->n_kv_heads, a->max_n_ctx);
    /* a queued call's inputs: in an input slot where one is free (host.c),
     * else captured into its commands */
    uint32_t in_slot = VK_INPUT_NONE;
    if (queued && (rc = vk_input_slot(dev, in_bytes, &in_slot, op)) != TKV_OK)
        return rc;
    const int ring = in_slot != VK_INPUT_NONE;
    const int staged = dev->knobs.staged_io || queued;
    const uint64_t inputs_size = dev->inputs ? dev->inputs->size : 0;
    if ((!ring && (rc = vk_scratch_in(dev, &dev->inputs, in_bytes, staged ? 0 : 2, op)) != TKV_OK) ||
        (rc = vk_scratch(dev, &dev->work, partial_bytes + (staged ? down_bytes : 0), 0, op)) != TKV_OK ||
        (!staged && (rc = vk_scratch(dev, &dev->outputs, down_bytes, 1, op)) != TKV_OK))
        return rc;
    /* the arrival counters: zeroed once when created (every merging
     * workgroup leaves its counter zero) */
    const struct vk_buffer *arrivals_before = dev->arrivals;
    if (one_pass && (rc = vk_scratch(dev, &dev->arrivals, n_units * a->n_kv_heads * sizeof(uint32_t), 0, op)) != TKV_OK)
        return rc;
    const int zero_arrivals = dev->arrivals != arrivals_before;
    /* the host writes the inputs in place when they are mapped device memory */
    const int direct_in = !queued && dev->inputs->map &&
                          (dev->memory.memoryTypes[dev->inputs->type].propertyFlags & VK_MEMORY_PROPERTY_DEVICE_LOCAL_BIT);
    if (queued) {
        if (!ring && (rc = vk_record_reserve(dev, (size_t)(head + up_bytes), op)) != TKV_OK)
            return rc;
    } else {
        if (!direct_in && (rc = vk_scratch(dev, &dev->staging, head + up_bytes > down_bytes ? head + up_bytes : down_bytes,
                                           1, op)) != TKV_OK)
            return rc;
        if (staged && (rc = vk_scratch(dev, &dev->staging, down_bytes, 1, op)) != TKV_OK)
            return rc;
    }
    if (!ring && dev->inputs->size != inputs_size)
        dev->knobs.last_upload_bytes = 0; /* a new inputs buffer holds nothing */
    unsigned char *in_host =
        (ring ? vk_input_map(dev, in_slot) : queued ? dev->record_host : direct_in ? dev->inputs->map : dev->staging->map) +
        head;
    if (head)
        memcpy(in_host - sizeof(uint64_t), &dev->math_buf->address, sizeof(uint64_t));
    if (a->q) /* else the host's device buffer, converted into place */
        memcpy(in_host, a->q, (size_t)q_bytes);
    struct vk_unit *units = (struct vk_unit *)(in_host + units_at);
    uint32_t *row_units = (uint32_t *)(in_host + row_units_at);
    uint32_t u = 0;
    for (uint32_t s = 0; s < a->n_seqs; s++) {
        const struct tkv_attn_seq *seq = seq_at(a, s);
        const uint32_t rows = seq->n_q * ratio;
        for (uint32_t qr0 = 0; qr0 < rows; qr0 += qt, u++) {
            units[u] = unit_of(seq, qr0, qt, ratio, window, chunk, grid_off, &span);
            units[u].fused_at = one_pass ? (uint32_t)(fused_at / TKV_VK_ALIGN) : 0;
            for (uint32_t qr = qr0; qr < qr0 + qt && qr < rows; qr++)
                row_units[(uint64_t)seq->q_first * ratio + qr] = u;
        }
    }
    memcpy(in_host + blocks_at, a->blocks, (size_t)a->n_blocks * sizeof(uint32_t));

    /* TURBO_VK_CLOCK: decode.comp's clock variant, its records read back */
    const uint64_t n_wgs = n_units * a->n_kv_heads * max_chunks;
    const int clocked = dev->clock_ok && (shader == VK_SHADER_DECODE || shader == VK_SHADER_DECODE_TC) && !queued;
    if (clocked) {
        if ((rc = vk_scratch(dev, &dev->clocks, n_wgs * TKV_VK_CLOCK_WORDS * sizeof(uint64_t), 1, op)) != TKV_OK)
            return rc;
        shader = shader == VK_SHADER_DECODE_TC ? VK_SHADER_DECODE_TC_CLOCK : VK_SHADER_DECODE_CLOCK;
        spec[TKV_VK_SPEC_CLOCK_LO] = (uint32_t)dev->clocks->address;
        spec[TKV_VK_SPEC_CLOCK_HI] = (uint32_t)(dev->clocks->address >> 32);
        /* (its chunks are sized by the plain pipeline's registers: the
         * clock records cost a few more, a measurement knob's difference) */
        if ((rc = vk_attention_pipeline(dev, shader, spec, &pipeline, NULL)) != TKV_OK)
            return rc;
    }

    const uint64_t work = dev->work->address;
    const uint64_t inputs = (ring ? vk_input_address(dev, in_slot) : dev->inputs->address) + head;
    /* outputs: host-visible memory the merge writes, or work (copied back) */
    const uint64_t out = staged ? work + partial_bytes : dev->outputs->address;
    struct vk_attention_push push = {
        .k = k_buf->address,
        .v = v_buf->address,
        .k_head_stride = a->k.head_stride,
        .v_head_stride = a->v.head_stride,
        .k_block_stride = a->k.block_stride,
        .v_block_stride = a->v.block_stride,
        .inputs = inputs,
        .work = work,
        .q = q_direct ? io.q_at : inputs + (prepare_dispatch ? prep_at : 0),
        .units_at = (uint32_t)(units_at / TKV_VK_ALIGN),
        .blocks_at = (uint32_t)(blocks_at / TKV_VK_ALIGN),
        .ml_at = (uint32_t)(ml_at / TKV_VK_ALIGN),
        .n_units = (uint32_t)n_units,
        .n_kv = a->n_kv_heads,
        .ratio = ratio,
        .chunk = (uint32_t)chunk,
        .max_chunks = (uint32_t)max_chunks,
        .block_tokens = a->k.block_tokens,
        .window = window,
        .scale = a->scale,
        .softcap = a->softcap,
        .threshold = a->sparse_v_threshold,
        .grid_off = (uint32_t)grid_off,
    };
    struct vk_merge_push merge = {
        .part_acc = work + acc_at,
        .part_ml = work + ml_at,
        .out_rows = attn_out_rows(&io, out),
        .counts = out + counts_at,
        .lse = out + lse_at,
        .units = inputs + units_at,
        .row_units = inputs + row_units_at,
        .math = dev->math_buf->address,
        .n_rows = (uint32_t)n_out,
        .ratio = ratio,
        .n_kv = a->n_kv_heads,
        .chunk = (uint32_t)chunk,
        .max_chunks = (uint32_t)max_chunks,
        .head_dim = hd,
        .rotation = vl.rotation,
        .flags = (vl.qjl ? TKV_VK_FLAG_QJL : 0u) | (vl.split ? TKV_VK_FLAG_OUTLIER : 0u),
        .window = window,
    };
    memcpy(merge.groups, vl.groups, sizeof merge.groups);
    if (one_pass) {
        const struct vk_fused fused_args = {
            .out_rows = merge.out_rows, .counts = merge.counts, .lse = merge.lse, .arrivals = dev->arrivals->address,
        };
        memcpy(in_host + fused_at, &fused_args, sizeof fused_args);
        if (ap)
            memcpy(in_host + fused_at + sizeof fused_args, ap, sizeof *ap);
    }
    struct vk_rows_push prepare = {
        .src = inputs,
        .dst = inputs + prep_at,
        .n_rows = (uint32_t)n_out,
        .row_bytes = hd * (uint32_t)sizeof(float),
        .dst_stride = hd * qs,
    };

    /* The measurement knobs (README "Measurement knobs"): stages left
     * out, the commands recorded several times, stage timestamps. */
    const struct vk_knobs *kn = &dev->knobs;
    const uint32_t reps = kn->repeat ? kn->repeat : 1;
    int upload = !direct_in && !ring && (queued || !(kn->skip & VK_SKIP_UPLOAD));
    if (!direct_in && !ring && !upload) { /* left out only when the device holds these bytes already */
        upload = kn->last_upload_bytes != up_bytes || memcmp(kn->last_upload, in_host, (size_t)up_bytes) != 0;
        if (upload && (rc = remember_upload(dev, in_host, up_bytes)) != TKV_OK)
            return rc;
    }
    /* a queued call's commands are not waited for: no timestamps */
    const int profile = kn->profile && dev->timestamps && !queued, stamps = dev->timestamps && !queued;
    if (kn->skip & VK_EMPTY_ATTENTION)
        push.n_units = 0; /* every workgroup leaves at once */

    /* queued with its inputs captured: no entry barrier; the one after
     * their update below orders everything recorded before (the host's
     * writes of q, the appends' rows, the update) before the dispatches.
     * In an input slot: the entry barrier towards the compute stage. */
    if ((rc = queued ? vk_begin_queued(dev, ring ? VK_ENTRY_COMPUTE : VK_ENTRY_NONE, op) : vk_begin_call(dev, 0, op)) !=
        TKV_OK)
        return rc;
    if (zero_arrivals || clocked) {
        if (zero_arrivals)
            vkCmdFillBuffer(dev->cmd, dev->arrivals->buffer, 0, VK_WHOLE_SIZE, 0);
        if (clocked)
            vkCmdFillBuffer(dev->cmd, dev->clocks->buffer, 0, VK_WHOLE_SIZE, 0);
        vk_barrier(dev);
    }
    if (stamps) {
        vkCmdResetQueryPool(dev->cmd, dev->timestamps, 0, VK_TIMESTAMPS);
        vkCmdWriteTimestamp(dev->cmd, VK_PIPELINE_STAGE_TOP_OF_PIPE_BIT, dev->timestamps, 0);
    }
    for (uint32_t rep = 0; rep < reps; rep++) {
        const int stamp = profile && rep == reps - 1;
        if (rep)
            vk_barrier(dev);
#define STAMP(i) \
    if (stamp) \
        vkCmdWriteTimestamp(dev->cmd, VK_PIPELINE_STAGE_BOTTOM_OF_PIPE_BIT, dev->timestamps, (i))
        STAMP(2);
        if (upload && rep == 0) { /* the staging buffer holds outputs after a repetition */
            if (queued) { /* the bytes captured into the commands; q from its buffer below */
                const uint64_t from = io.q ? units_at : 0;
                if (head) /* the tables' address */
                    vk_update(dev, dev->inputs, head - sizeof(uint64_t), in_host - sizeof(uint64_t),
                              sizeof(uint64_t));
                vk_update(dev, dev->inputs, head + from, in_host + from, up_bytes - from);
            } else {
                vk_copy(dev, dev->staging, 0, dev->inputs, 0, head + up_bytes);
            }
            if (!(queued && kn->no_input_barrier))
                vk_barrier(dev);
        }
        if (rep == 0 && !q_direct && (rc = attn_q_record(dev, &io, inputs, n_out * hd)) != TKV_OK)
            return rc;
        STAMP(3);
        if (prepare_dispatch && !(kn->skip & VK_SKIP_PREPARE)) {
            if ((rc = vk_record_rows(dev, &kl, &prepare, TKV_VK_FLAG_QUERY, op)) != TKV_OK)
                return rc;
            vk_barrier(dev);
        }
        STAMP(4);
        if (!(kn->skip & VK_SKIP_ATTENTION)) {
            if ((rc = vk_dispatch(dev, pipeline, &push, sizeof push,
                                  n_wgs, op)) != TKV_OK)
                return rc;
            /* not where the exit barrier comes next (queued, merged inside,
             * f32 out) */
            if (!(queued && one_pass && rep == reps - 1 && !(io.out && io.out->elem != TKV_ELEM_F32)))
                vk_barrier(dev);
        }
        STAMP(5);
        if (!one_pass && !(kn->skip & VK_SKIP_MERGE)) {
            if ((rc = vk_dispatch(dev, dev->merge, &merge, sizeof merge, n_out, op)) != TKV_OK)
                return rc;
            vk_barrier(dev);
        }
        STAMP(6);
        if (queued && rep == reps - 1 && (rc = attn_out_record(dev, &io, out, n_out * hd)) != TKV_OK)
            return rc;
        if (staged && !queued && !(kn->skip & VK_SKIP_DOWNLOAD))
            vk_copy(dev, dev->work, partial_bytes, dev->staging, 0, down_bytes);
        STAMP(7);
#undef STAMP
    }
    if (stamps)
        vkCmdWriteTimestamp(dev->cmd, VK_PIPELINE_STAGE_BOTTOM_OF_PIPE_BIT, dev->timestamps, 1);
    if (ring)
        vk_input_done(dev, in_slot); /* after the last read of the slot */
    if ((rc = vk_end_call(dev, op)) != TKV_OK)
        return rc;
    if (queued) { /* out in the host's buffer once its queue has run the commands */
        dev->stats.attention_calls++;
        if (a->rows_total)
            *a->rows_total = total;
        return TKV_OK;
    }
    uint64_t ts[VK_TIMESTAMPS];
    const uint32_t n_ts = profile ? VK_TIMESTAMPS : 2u;
    const int have_ts = dev->timestamps && vkGetQueryPoolResults(dev->device, dev->timestamps, 0, n_ts, sizeof ts, ts,
                                                                  sizeof ts[0], VK_QUERY_RESULT_64_BIT) == VK_SUCCESS;
#define TS_NS(a, b) ((double)((ts[b] - ts[a]) & dev->timestamp_mask) * dev->timestamp_period)
    if (TKV_ARGS_HAS(a, device_ns) && a->device_ns)
        *a->device_ns = have_ts ? (uint64_t)(TS_NS(0, 1) / reps) : 0;
    if (profile && have_ts)
        fprintf(stderr,
                "vkprof: attention n_out %llu units %llu chunk %llu chunks %llu wgs %llu upload %d: "
                "up %.2f prep %.2f attn %.2f merge %.2f down %.2f rep %.2f call %.2f us\n",
                (unsigned long long)n_out, (unsigned long long)n_units, (unsigned long long)chunk,
                (unsigned long long)max_chunks, (unsigned long long)(n_units * a->n_kv_heads * max_chunks), upload,
                TS_NS(2, 3) * 1e-3, TS_NS(3, 4) * 1e-3, TS_NS(4, 5) * 1e-3, TS_NS(5, 6) * 1e-3, TS_NS(6, 7) * 1e-3,
                TS_NS(2, 7) * 1e-3, TS_NS(0, 1) * 1e-3 / reps);
    if (clocked)
        clock_summary(dev, n_wgs, chunk, have_ts ? TS_NS(0, 1) / reps : 0);
#undef TS_NS

    const unsigned char *out_host = staged ? dev->staging->map : dev->outputs->map;
    memcpy(a->out, out_host, (size_t)q_bytes);
    const uint32_t *counts = (const uint32_t *)(out_host + counts_at);
    uint64_t skipped = 0;
    for (uint64_t r = 0; r < n_out; r++)
        skipped += counts[r];
    if (a->lse)
        memcpy(a->lse, out_host + lse_at, (size_t)n_out * sizeof(float));
    dev->stats.attention_calls++;
    dev->stats.rows_skipped += skipped;
    if (a->rows_total)
        *a->rows_total = total;
    if (a->rows_skipped)
        *a->rows_skipped = skipped;
    return TKV_OK;
}

int vk_attention(void *dev, const struct tkv_attention_args *a) { return attention_call(dev, a, NULL, NULL); }

/* ABI 2.7: a decode step's append and attention. With the new rows in the
 * host's device buffers (f32, f16 or bf16: step 0 widens 16-bit rows as
 * convert.comp does) and the attention queued on decode.comp, one
 * dispatch: the workgroups whose chunks hold the new tokens quantize their
 * rows first (decode.comp, step 0; encode.glsl), the others need not wait.
 * Anything else: the pair of appends, then the attention. */
int vk_append_attention(void *dev_, const struct tkv_append_args *k, const struct tkv_append_args *v,
                        const struct tkv_attention_args *a)
{
    struct vk_device *dev = dev_;
    const struct tkv_device_tensor *ks = TKV_ARGS_HAS(k, src_dev) ? k->src_dev : NULL;
    const struct tkv_device_tensor *vs = TKV_ARGS_HAS(v, src_dev) ? v->src_dev : NULL;
    int rc;
    if (ks && vs && !dev->pair_open) {
        static const char op[] = "append_attention";
        struct vk_layout kl, vl;
        vk_layout_init(&k->pool.fmt, &kl);
        vk_layout_init(&v->pool.fmt, &vl);
        const uint64_t n = (uint64_t)k->n_tokens * k->n_heads * kl.head_dim;
        struct vk_append ap = {
            .first = k->first_pos,
            .n = k->n_tokens,
            .k_flags = vk_quantize_flags(&kl),
            .v_flags = vk_quantize_flags(&vl),
            .k_rotation = kl.rotation,
            .v_rotation = vl.rotation,
            .k_elem = ks->elem,
            .v_elem = vs->elem,
        };
        int declined = 0;
        if ((rc = vk_usable(dev, op)) != TKV_OK || (rc = vk_tensor_address(dev, ks, n, op, "k rows", &ap.k_src)) != TKV_OK ||
            (rc = vk_tensor_address(dev, vs, n, op, "v rows", &ap.v_src)) != TKV_OK ||
            (rc = attention_call(dev, a, &ap, &declined)) != TKV_OK)
            return rc;
        if (!declined) {
            dev->stats.rows_quantized += 2u * (uint64_t)k->n_tokens * k->n_heads;
            return TKV_OK;
        }
    }
    if ((rc = vk_quantize_append(dev, k)) != TKV_OK || (rc = vk_quantize_append(dev, v)) != TKV_OK)
        return rc;
    return vk_attention(dev, a);
}
