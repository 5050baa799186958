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
    cpu_isa_describe(isa, sizeof isa);
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
        int ok = t->group == g && t->sign1 && t->sign2 && t->dense;
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
        free(dev->threads[t].row);
    }
    free(dev->threads);
    cpu_split_free(dev->split);
    free(dev);
}

/* The ISA level, the threads (TURBO_THREADS: params->threads, 0 = every
 * online cpu; the reference runs on one) and their scratch. */
static int start_threads(struct cpu_device *dev, uint32_t requested)
{
    long cpus = sysconf(_SC_NPROCESSORS_ONLN);
    uint32_t n = requested;
    char isa[96];
    int rc;
    if (n > CPU_THREADS_MAX)
        return CPU_ERROR(TKV_ERANGE, "open: %u threads requested, at most %u", n, CPU_THREADS_MAX);
    if (n == 0)
        n = cpus <= 0 ? 1u : cpus > (long)CPU_THREADS_MAX ? CPU_THREADS_MAX : (uint32_t)cpus;
    if ((rc = cpu_isa_choose(&dev->isa)) != TKV_OK)
        return rc;
    if (!dev->isa)
        n = 1;
    if (!(dev->threads = aligned_alloc(64, n * sizeof *dev->threads)))
        return CPU_ERROR(TKV_ENOMEM, "open: no memory for %u threads", n);
    memset(dev->threads, 0, n * sizeof *dev->threads);
    dev->n_threads = n;
    for (uint32_t t = 0; t < n; t++) {
        struct cpu_thread *th = &dev->threads[t];
        th->queries = aligned_alloc(64, sizeof(float) * CPU_UNIT_QUERIES * TKV_HEAD_DIM_MAX);
        th->row = aligned_alloc(64, sizeof(float) * TKV_HEAD_DIM_MAX);
        if (!th->queries || !th->row)
            return CPU_ERROR(TKV_ENOMEM, "open: no memory for the scratch of %u threads", n);
    }
    if ((rc = cpu_pool_create(n, &dev->pool)) != TKV_OK)
        return rc;
    cpu_isa_tables(dev);
    cpu_isa_describe(isa, sizeof isa);
    cpu_svc->log(TKV_LOG_INFO, "%s, %u thread%s", isa, n, n > 1 ? "s" : "");
    return TKV_OK;
}

static int cpu_open(const struct tkv_open_params *params, void **dev_out)
{
    int rc;
    if (!params || !dev_out)
        return CPU_ERROR(TKV_EINVAL, "open: NULL %s", params ? "dev" : "params");
    if (params->struct_size < sizeof *params)
        return CPU_ERROR(TKV_EINVAL, "open: params struct_size %u < %zu",
                         params->struct_size, sizeof *params);
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
    if ((rc = start_threads(dev, params->threads)) != TKV_OK) {
        cpu_close(dev);
        return rc;
    }
    *dev_out = dev;
    return TKV_OK;
}

/* ---- argument checks shared by the ops ----------------------------------- */

int cpu_check_args(const void *dev, const void *args, size_t size, const char *op)
{
    uint32_t struct_size;
    if (!dev || !args)
        return CPU_ERROR(TKV_EINVAL, "%s: NULL %s", op, dev ? "args" : "device");
    memcpy(&struct_size, args, sizeof struct_size);
    if (struct_size < size)
        return CPU_ERROR(TKV_EINVAL, "%s: args struct_size %u is less than %zu (ABI %u.%u)", op,
                         struct_size, size, TKV_ABI_MAJOR, TKV_ABI_MINOR);
    return TKV_OK;
}

/* ---- buffers ------------------------------------------------------------- */

struct cpu_buffer *cpu_buffer_check(const void *buf, const char *op, const char *which)
{
    struct cpu_buffer *b = (struct cpu_buffer *)buf;
    if (!b) {
        (void)CPU_ERROR(TKV_EINVAL, "%s: NULL %s", op, which);
        return NULL;
    }
    if (b->magic != CPU_BUFFER_MAGIC) {
        (void)CPU_ERROR(TKV_EINVAL, "%s: %s is not a turbokv-cpu buffer", op, which);
        return NULL;
    }
    return b;
}


static int cpu_buffer_alloc(void *dev_, uint64_t bytes, void **out)
{
    struct cpu_device *dev = dev_;
    if (!dev || !out)
        return CPU_ERROR(TKV_EINVAL, "buffer_alloc: NULL %s", dev ? "buf" : "device");
    if (bytes == 0)
        return CPU_ERROR(TKV_EINVAL, "buffer_alloc: zero bytes");
    if (bytes > SIZE_MAX - sizeof(struct cpu_buffer) - CPU_BUFFER_SLACK)
        return CPU_ERROR(TKV_ENOMEM, "buffer_alloc: %llu bytes exceed the address space",
                         (unsigned long long)bytes);
    struct cpu_buffer *b = calloc(1, sizeof *b + (size_t)bytes + CPU_BUFFER_SLACK);
    if (!b)
        return CPU_ERROR(TKV_ENOMEM, "buffer_alloc: no memory for %llu bytes",
                         (unsigned long long)bytes);
    b->magic = CPU_BUFFER_MAGIC;
    b->size = bytes;
    dev->stats.n_buffers++;
    dev->stats.bytes_allocated += bytes;
    *out = b;
    return TKV_OK;
}

static void cpu_buffer_free(void *dev_, void *buf)
{
    struct cpu_device *dev = dev_;
    struct cpu_buffer *b = buf;
    if (!dev || !b)
        return;
    if (b->magic != CPU_BUFFER_MAGIC) {
        cpu_svc->log(TKV_LOG_WARN, "cpu: buffer_free of something not a turbokv-cpu buffer");
        return;
    }
    dev->stats.n_buffers--;
    dev->stats.bytes_allocated -= b->size;
    b->magic = 0;
    free(b);
}

/* Points *p at the bytes [offset, offset + bytes) of a buffer. */
static int buffer_range(const void *buf, uint64_t offset, uint64_t bytes, const char *op,
                        unsigned char **p)
{
    struct cpu_buffer *b = cpu_buffer_check(buf, op, "buf");
    if (!b)
        return TKV_EINVAL;
    if (!tkv_span_fits(b->size, offset, 1, 0, bytes))
        return CPU_ERROR(TKV_ERANGE,
                         "%s: %llu bytes at offset %llu exceed the %llu-byte buffer", op,
                         (unsigned long long)bytes, (unsigned long long)offset,
                         (unsigned long long)b->size);
    *p = b->data + offset;
    return TKV_OK;
}

static int cpu_buffer_write(void *dev, void *buf, uint64_t offset, const void *src, uint64_t bytes)
{
    unsigned char *p;
    int rc;
    if (!dev || (!src && bytes))
        return CPU_ERROR(TKV_EINVAL, "buffer_write: NULL %s", dev ? "src" : "device");
    if ((rc = buffer_range(buf, offset, bytes, "buffer_write", &p)) != TKV_OK)
        return rc;
    if (bytes)
        memcpy(p, src, (size_t)bytes);
    return TKV_OK;
}

static int cpu_buffer_read(void *dev, const void *buf, uint64_t offset, void *dst, uint64_t bytes)
{
    unsigned char *p;
    int rc;
    if (!dev || (!dst && bytes))
        return CPU_ERROR(TKV_EINVAL, "buffer_read: NULL %s", dev ? "dst" : "device");
    if ((rc = buffer_range(buf, offset, bytes, "buffer_read", &p)) != TKV_OK)
        return rc;
    if (bytes)
        memcpy(dst, p, (size_t)bytes);
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
    .open = cpu_open,
    .close = cpu_close,
    .buffer_alloc = cpu_buffer_alloc,
    .buffer_free = cpu_buffer_free,
    .buffer_write = cpu_buffer_write,
    .buffer_read = cpu_buffer_read,
    .quantize_append = cpu_quantize_append,
    .attention = cpu_attention,
    .dequantize = cpu_dequantize,
    .stats = cpu_stats,
};

TKV_PLUGIN_EXPORT const struct tkv_plugin *tkv_plugin_entry(uint32_t core_abi_major,
                                                            uint32_t core_abi_minor);

/* Any 1.x core can run this 1.0 module: the core handles older minors. */
TKV_PLUGIN_EXPORT const struct tkv_plugin *tkv_plugin_entry(uint32_t core_abi_major,
                                                            uint32_t core_abi_minor)
{
    (void)core_abi_minor;
    return core_abi_major == TKV_ABI_MAJOR ? &cpu_plugin : NULL;
}
