/* SPDX-License-Identifier: MIT */
/*
 * turbokv-cpu: the module entry, the device and its buffers. The math lives
 * in rows.c, rotate.c, quantize.c and attention.c.
 *
 * The module links nothing of the core: it is handed the core's services in
 * init() and the format's tables in open().
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "simd.h"
#include "turbokv.h" /* TKV_VERSION_STRING */
#include "turbokv_fpenv.h"

const struct tkv_services *cpu_svc;

static int cpu_init(const struct tkv_services *svc)
{
    /* Without services there is no way to report anything: refuse quietly. */
    if (!svc || svc->struct_size < sizeof *svc || !svc->error || !svc->log)
        return TKV_EINVAL;
    cpu_svc = svc;
    return TKV_OK;
}

/* ---- probe --------------------------------------------------------------- */

/* The "model name" line of /proc/cpuinfo, or "cpu" where there is none
 * (other kernels, some ARM machines). */
static void cpu_model_name(char *name, size_t size)
{
    static const char key[] = "model name";
    char line[512];
    FILE *f = fopen("/proc/cpuinfo", "r");
    snprintf(name, size, "cpu");
    if (!f)
        return;
    while (fgets(line, sizeof line, f)) {
        char *colon = strchr(line, ':');
        if (strncmp(line, key, sizeof key - 1) != 0 || !colon)
            continue;
        char *v = colon + 1;
        v += strspn(v, " \t");
        v[strcspn(v, "\r\n")] = '\0';
        if (*v)
            snprintf(name, size, "%s", v);
        break;
    }
    fclose(f);
}

static int cpu_probe(struct tkv_device_info *devs, uint32_t max, uint32_t *n_found)
{
    if (!n_found)
        return CPU_ERROR(TKV_EINVAL, "probe: NULL n_found");
    *n_found = 1;
    if (max == 0)
        return TKV_OK;
    if (!devs)
        return CPU_ERROR(TKV_EINVAL, "probe: NULL devs with max %u", max);
    long cpus = sysconf(_SC_NPROCESSORS_ONLN), pages = sysconf(_SC_PHYS_PAGES),
         page = sysconf(_SC_PAGESIZE);
    memset(&devs[0], 0, sizeof devs[0]);
    devs[0].struct_size = sizeof devs[0];
    devs[0].kind = TKV_DEVICE_CPU;
    devs[0].score = 100;
    devs[0].memory_bytes = pages > 0 && page > 0 ? (uint64_t)pages * (uint64_t)page : 0;
    cpu_model_name(devs[0].name, sizeof devs[0].name);
    char isa[96];
    cpu_isa_describe(NULL, isa, sizeof isa);
    snprintf(devs[0].driver, sizeof devs[0].driver, "turbokv-cpu %s, %.72s, %ld cpus online",
             TKV_VERSION_STRING, isa, cpus > 0 ? cpus : 1L);
    return TKV_OK;
}

/* ---- device -------------------------------------------------------------- */

/* The tables must be the core's, for every group size in its slot. */
static int math_check(const struct tkv_math *math)
{
    if (!math)
        return CPU_ERROR(TKV_EINVAL, "open: NULL math tables");
    if (math->struct_size < sizeof *math)
        return CPU_ERROR(TKV_EINVAL, "open: math struct_size %u < %zu", math->struct_size,
                         sizeof *math);
    for (uint32_t g = TKV_GROUP_MIN; g <= TKV_GROUP_MAX; g <<= 1) {
        const struct tkv_group_tables *t = &math->groups[tkv_group_index(g)];
        int ok = t->group == g && t->sign1 && t->sign2 && t->dense &&
                 math->qjl[tkv_group_index(g)].rows; /* the QJL key types' sketch */
        for (uint32_t b = 0; b < TKV_N_CODEBOOK_BITS && ok; b++)
            ok = t->codebook[b].bits == b + TKV_TURBO_BITS_MIN && t->codebook[b].centroids &&
                 t->codebook[b].boundaries && t->codebook[b].centroid_sq;
        if (!ok)
            return CPU_ERROR(TKV_EINVAL, "open: math tables for group size %u are incomplete",
                             g);
    }
    return TKV_OK;
}

static void cpu_close(void *dev_)
{
    struct cpu_device *dev = dev_;
    if (!dev)
        return;
    cpu_pool_destroy(dev->pool);
    for (uint32_t t = 0; dev->threads && t < dev->n_threads; t++) {
        free(dev->threads[t].queries);
        free(dev->threads[t].outlier_acc);
        free(dev->threads[t].row);
        free(dev->threads[t].stage);
    }
    free(dev->threads);
    cpu_split_free(dev->split);
    free(dev);
}

/* The ISA level, the threads (TURBO_THREADS: params->threads, 0 = every
 * online cpu; the reference runs on one) and their scratch. */
static int start_threads(struct cpu_device *dev, uint32_t requested, const char *cpu_isa)
{
    long cpus = sysconf(_SC_NPROCESSORS_ONLN);
    uint32_t n = requested;
    char isa[96];
    int rc;
    if (n > CPU_THREADS_MAX)
        return CPU_ERROR(TKV_ERANGE, "open: %u threads requested, at most %u", n, CPU_THREADS_MAX);
    if (n == 0)
        n = cpus <= 0 ? 1u : cpus > (long)CPU_THREADS_MAX ? CPU_THREADS_MAX : (uint32_t)cpus;
    if ((rc = cpu_isa_choose(cpu_isa, &dev->isa)) != TKV_OK)
        return rc;
    if (!dev->isa)
        n = 1;
    if (!(dev->threads = aligned_alloc(64, n * sizeof *dev->threads)))
        return CPU_ERROR(TKV_ENOMEM, "open: no memory for %u threads", n);
    memset(dev->threads, 0, n * sizeof *dev->threads);
    dev->n_threads = n;
    for (uint32_t t = 0; t < n; t++) {
        struct cpu_thread *th = &dev->threads[t];
        th->queries = aligned_alloc(64, sizeof(float) * 2 * CPU_UNIT_QUERIES * TKV_HEAD_DIM_MAX);
        th->outlier_acc = aligned_alloc(64, sizeof(float) * CPU_UNIT_QUERIES * TKV_HEAD_DIM_MAX);
        th->row = aligned_alloc(64, sizeof(float) * TKV_HEAD_DIM_MAX);
        if (!th->queries || !th->outlier_acc || !th->row)
            return CPU_ERROR(TKV_ENOMEM, "open: no memory for the scratch of %u threads", n);
    }
    if ((rc = cpu_pool_create(n, &dev->pool)) != TKV_OK)
        return rc;
    cpu_isa_tables(dev);
    cpu_isa_describe(cpu_isa, isa, sizeof isa);
    cpu_svc->log(TKV_LOG_INFO, "%s, %u thread%s", isa, n, n > 1 ? "s" : "");
    return TKV_OK;
}

static int cpu_open(const struct tkv_open_params *params, void **dev_out)
{
    int rc;
    if (!params || !dev_out)
        return CPU_ERROR(TKV_EINVAL, "open: NULL %s", params ? "dev" : "params");
    /* ABI 2.0's members at least; cpu_isa (2.1) is read only when present */
    if (params->struct_size < offsetof(struct tkv_open_params, cpu_isa))
        return CPU_ERROR(TKV_EINVAL, "open: params struct_size %u < %zu",
                         params->struct_size, offsetof(struct tkv_open_params, cpu_isa));
    if (params->device_index != 0)
        return CPU_ERROR(TKV_ERANGE, "open: device %u does not exist (the cpu has device 0)",
                         params->device_index);
    if ((rc = math_check(params->math)) != TKV_OK)
        return rc;
    struct cpu_device *dev = calloc(1, sizeof *dev);
    if (!dev)
        return CPU_ERROR(TKV_ENOMEM, "open: no memory for the device (%zu bytes)",
                         sizeof *dev);
    dev->math = params->math;
    dev->stats.struct_size = sizeof dev->stats;
    const char *cpu_isa = params->struct_size >= offsetof(struct tkv_open_params, cpu_isa) + sizeof params->cpu_isa
                              ? params->cpu_isa
                              : NULL;
    if ((rc = start_threads(dev, params->threads, cpu_isa)) != TKV_OK) {
        cpu_close(dev);
        return rc;
    }
    *dev_out = dev;
    return TKV_OK;
}

/* ---- capabilities ------------------------------------------------------- */

/* Every type is stored and attended as a key; the QJL types only as keys
 * (their values would cost g^2 per row: rows.c's axpy is there for
 * dequantize). */
#define CPU_ALL_TYPES ((1u << TKV_TYPE_COUNT) - 1u)
#define CPU_QJL_TYPES ((1u << TKV_TYPE_TURBO3_QJL) | (1u << TKV_TYPE_TURBO4_QJL))

static int cpu_device_caps(uint32_t device_index, struct tkv_device_caps *caps)
{
    if (device_index != 0)
        return CPU_ERROR(TKV_ERANGE, "device_caps: device %u does not exist (the cpu has device 0)",
                         device_index);
    /* members up to caps->struct_size: all of ABI 2.0's */
    caps->features = TKV_CAP_PAGED | TKV_CAP_MIXED_NQ | TKV_CAP_WINDOW | TKV_CAP_SOFTCAP |
                     TKV_CAP_LSE | TKV_CAP_BUFFER_COPY | TKV_CAP_ROTOR | TKV_CAP_OUTLIER_TYPES;
    caps->k_types = CPU_ALL_TYPES;
    caps->v_types = CPU_ALL_TYPES & ~CPU_QJL_TYPES;
    caps->rotations = ((1u << TKV_ROTATION_COUNT) - 1u) & ~1u; /* 0 is "as configured", never a rotation */
    caps->scale_modes = ((1u << TKV_SCALE_COUNT) - 1u) & ~1u;
    caps->head_dim_max = TKV_HEAD_DIM_MAX;
    caps->max_block_tokens = 0;
    caps->max_q_per_seq = 0;
    caps->max_buffer_bytes = (uint64_t)(SIZE_MAX - sizeof(struct cpu_buffer) - CPU_BUFFER_SLACK);
    return TKV_OK;
}

/* ---- buffers ------------------------------------------------------------- */

/* The contents are undefined (the core writes every row before reading
 * it); only the slack is zeroed. malloc leaves fresh pages untouched, so a
 * big pool costs nothing until its blocks are written. */
static int cpu_buffer_alloc(void *dev_, uint64_t bytes, void **out)
{
    struct cpu_device *dev = dev_;
    if (bytes > SIZE_MAX - sizeof(struct cpu_buffer) - CPU_BUFFER_SLACK)
        return CPU_ERROR(TKV_ENOMEM, "buffer_alloc: %llu bytes exceed the address space",
                         (unsigned long long)bytes);
    struct cpu_buffer *b = malloc(sizeof *b + (size_t)bytes + CPU_BUFFER_SLACK);
    if (!b)
        return CPU_ERROR(TKV_ENOMEM, "buffer_alloc: no memory for %llu bytes",
                         (unsigned long long)bytes);
    b->magic = CPU_BUFFER_MAGIC;
    b->reserved = 0;
    b->size = bytes;
    memset(b->data + bytes, 0, CPU_BUFFER_SLACK);
    dev->stats.n_buffers++;
    dev->stats.bytes_allocated += bytes;
    *out = b;
    return TKV_OK;
}

static void cpu_buffer_free(void *dev_, void *buf)
{
    struct cpu_device *dev = dev_;
    struct cpu_buffer *b = buf;
    if (!b)
        return;
    b = cpu_buffer_of(buf);
    dev->stats.n_buffers--;
    dev->stats.bytes_allocated -= b->size;
    b->magic = 0;
    free(b);
}

static int cpu_buffer_write(void *dev, void *buf, uint64_t offset, const void *src, uint64_t bytes)
{
    (void)dev;
    memcpy(cpu_buffer_of(buf)->data + offset, src, (size_t)bytes);
    return TKV_OK;
}

static int cpu_buffer_read(void *dev, const void *buf, uint64_t offset, void *dst, uint64_t bytes)
{
    (void)dev;
    memcpy(dst, cpu_buffer_of(buf)->data + offset, (size_t)bytes);
    return TKV_OK;
}

/* Copies of at least COPY_SPLIT bytes are cut into that many pieces, one
 * per work item: a pool that grows by gigabytes copies at the bandwidth of
 * several cores, not one. */
#define COPY_SPLIT ((size_t)4 << 20)

struct copy_job {
    unsigned char *dst;
    const unsigned char *src;
    size_t bytes;
};

static void copy_piece(void *arg, uint32_t item, uint32_t thread)
{
    const struct copy_job *job = arg;
    size_t at = (size_t)item * COPY_SPLIT;
    (void)thread;
    memcpy(job->dst + at, job->src + at, job->bytes - at < COPY_SPLIT ? job->bytes - at : COPY_SPLIT);
}

/* Between two buffers, or inside one when the ranges do not overlap (the
 * core's precondition: memcpy's). */
static int cpu_buffer_copy(void *dev_, void *dst, uint64_t dst_offset, const void *src,
                           uint64_t src_offset, uint64_t bytes)
{
    struct cpu_device *dev = dev_;
    struct copy_job job = { cpu_buffer_of(dst)->data + dst_offset,
                            cpu_buffer_of(src)->data + src_offset, (size_t)bytes };
    uint64_t pieces = (bytes + COPY_SPLIT - 1) / COPY_SPLIT;
    if (pieces <= 1 || pieces > UINT32_MAX)
        memcpy(job.dst, job.src, job.bytes);
    else
        cpu_pool_run(dev->pool, (uint32_t)pieces, copy_piece, &job);
    return TKV_OK;
}

/* ---- stats --------------------------------------------------------------- */

static int cpu_stats(void *dev_, struct tkv_device_stats *stats)
{
    struct cpu_device *dev = dev_;
    if (!dev || !stats)
        return CPU_ERROR(TKV_EINVAL, "stats: NULL %s", dev ? "stats" : "device");
    if (stats->struct_size < sizeof *stats)
        return CPU_ERROR(TKV_EINVAL, "stats: struct_size %u < %zu", stats->struct_size,
                         sizeof *stats);
    *stats = dev->stats;
    return TKV_OK;
}

/* ---- the floating-point environment ------------------------------------- */

/* The ops that compute run in the environment the format's rules assume
 * (abi/turbokv_fpenv.h: round to nearest, subnormals kept, no traps)
 * whatever the host's thread runs in (-ffast-math's flush-to-zero and
 * denormals-are-zero, fesetround), and give the host's back; the pool's
 * workers enter it once when they start (pool.c). */
static int fp_quantize_append(void *dev, const struct tkv_append_args *a)
{
    tkv_fpenv fp = tkv_fpenv_enter();
    int rc = cpu_quantize_append(dev, a);
    tkv_fpenv_leave(fp);
    return rc;
}

static int fp_attention(void *dev, const struct tkv_attention_args *a)
{
    tkv_fpenv fp = tkv_fpenv_enter();
    int rc = cpu_attention(dev, a);
    tkv_fpenv_leave(fp);
    return rc;
}

static int fp_dequantize(void *dev, const struct tkv_dequant_args *a)
{
    tkv_fpenv fp = tkv_fpenv_enter();
    int rc = cpu_dequantize(dev, a);
    tkv_fpenv_leave(fp);
    return rc;
}

/* ---- the descriptor ------------------------------------------------------ */

static const struct tkv_plugin cpu_plugin = {
    .abi_major = TKV_ABI_MAJOR,
    .abi_minor = TKV_ABI_MINOR,
    .struct_size = sizeof(struct tkv_plugin),
    .name = "cpu",
    .version = TKV_VERSION_STRING,
    .description = "turbokv CPU backend: AVX-512, AVX2 and portable kernels over a thread "
                   "pool, and the reference C kernels",
    .init = cpu_init,
    .probe = cpu_probe,
    .device_caps = cpu_device_caps,
    .open = cpu_open,
    .close = cpu_close,
    .buffer_alloc = cpu_buffer_alloc,
    .buffer_free = cpu_buffer_free,
    .buffer_write = cpu_buffer_write,
    .buffer_read = cpu_buffer_read,
    .buffer_copy = cpu_buffer_copy,
    .quantize_append = fp_quantize_append,
    .attention = fp_attention,
    .dequantize = fp_dequantize,
    .stats = cpu_stats,
};

TKV_PLUGIN_EXPORT const struct tkv_plugin *tkv_plugin_entry(uint32_t core_abi_major,
                                                            uint32_t core_abi_minor);

/* Any 2.x core can run this 2.0 module: the core handles older minors. */
TKV_PLUGIN_EXPORT const struct tkv_plugin *tkv_plugin_entry(uint32_t core_abi_major,
                                                            uint32_t core_abi_minor)
{
    (void)core_abi_minor;
    return core_abi_major == TKV_ABI_MAJOR ? &cpu_plugin : NULL;
}
