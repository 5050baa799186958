/* SPDX-License-Identifier: MIT */
/*
 * turbokv-minimal: the smallest ABI 2.0 descriptor that works. It declares
 * only the required ops (struct_size ends before the optional stats member;
 * buffer_copy and shutdown are NULL) and forwards each of them to the cpu
 * plugin, whose path is compiled in (CPU_PLUGIN_PATH). Its capabilities are
 * narrower than the cpu's (MINIMAL_CAPS below), and its device outranks
 * the cpu, so the tests can watch:
 *   - the core copy buffers through host memory (no buffer_copy);
 *   - a cache the device cannot hold refused at creation, naming what is
 *     missing;
 *   - backend auto skipping it for a cache it cannot hold;
 *   - the core refusing options the device lacks (window, softcap, lse).
 * For the feature bits of format revision 1, TKV_MINIMAL_FEATURES (a
 * number) adds feature bits and TKV_MINIMAL_ABI_MINOR sets the minor the
 * descriptor declares (0 by default), read at each load. With
 * TKV_MINIMAL_APPEND_LOG (a path) each quantize_append adds a line
 * "flags N" to that file: the pairing of ABI 2.5 as the plugin sees it.
 */
#include <stdio.h>
#include <stdlib.h>
#include <dlfcn.h>
#include <stddef.h>
#include <string.h>

#include "turbokv_plugin.h"

static const struct tkv_plugin *cpu;
static void *cpu_module;

static int minimal_init(const struct tkv_services *svc)
{
    cpu_module = dlopen(CPU_PLUGIN_PATH, RTLD_NOW | RTLD_LOCAL);
    tkv_plugin_entry_fn entry = cpu_module ? (tkv_plugin_entry_fn)(size_t)dlsym(cpu_module, TKV_PLUGIN_ENTRY_NAME) : NULL;
    cpu = entry ? entry(TKV_ABI_MAJOR, TKV_ABI_MINOR) : NULL;
    if (!cpu)
        return svc->error(TKV_EPLUGIN, "minimal test plugin: cannot load %s", CPU_PLUGIN_PATH);
    return cpu->init(svc);
}

static int minimal_probe(struct tkv_device_info *devs, uint32_t max, uint32_t *n)
{
    int rc = cpu->probe(devs, max, n);
    if (rc == TKV_OK && max > 0) {
        devs[0].score = 150; /* above the cpu's 100: backend auto prefers it when it fits */
        strcpy(devs[0].name, "minimal test device");
    }
    return rc;
}

/* Everything the cpu does, minus: turbo2 keys, head_dim above 256, window,
 * softcap, lse, mixed query counts, device copies. */
static int minimal_caps(uint32_t index, struct tkv_device_caps *caps)
{
    int rc = cpu->device_caps(index, caps);
    if (rc != TKV_OK)
        return rc;
    caps->k_types &= ~(1u << TKV_TYPE_TURBO2);
    caps->head_dim_max = 256;
    const char *extra = getenv("TKV_MINIMAL_FEATURES");
    caps->features = TKV_CAP_PAGED | (extra ? (uint32_t)strtoul(extra, NULL, 0) : 0u);
    return TKV_OK;
}

static int minimal_open(const struct tkv_open_params *p, void **dev) { return cpu->open(p, dev); }
static void minimal_close(void *dev) { cpu->close(dev); }
static int minimal_alloc(void *dev, uint64_t bytes, void **buf) { return cpu->buffer_alloc(dev, bytes, buf); }
static void minimal_free(void *dev, void *buf) { cpu->buffer_free(dev, buf); }
static int minimal_write(void *dev, void *buf, uint64_t off, const void *src, uint64_t n)
{
    return cpu->buffer_write(dev, buf, off, src, n);
}
static int minimal_read(void *dev, const void *buf, uint64_t off, void *dst, uint64_t n)
{
    return cpu->buffer_read(dev, buf, off, dst, n);
}
static int minimal_append(void *dev, const struct tkv_append_args *a)
{
    const char *log = getenv("TKV_MINIMAL_APPEND_LOG");
    FILE *f = log ? fopen(log, "a") : NULL;
    if (f) {
        fprintf(f, "flags %u\n", a->flags);
        fclose(f);
    }
    return cpu->quantize_append(dev, a);
}
static int minimal_attention(void *dev, const struct tkv_attention_args *a) { return cpu->attention(dev, a); }
static int minimal_dequantize(void *dev, const struct tkv_dequant_args *a) { return cpu->dequantize(dev, a); }

static struct tkv_plugin minimal = {
    .abi_major = TKV_ABI_MAJOR,
    .abi_minor = 0,
    .struct_size = offsetof(struct tkv_plugin, stats), /* required members only */
    .name = "minimal",
    .version = "test",
    .description = "required ops only, forwarded to the cpu plugin",
    .init = minimal_init,
    .probe = minimal_probe,
    .device_caps = minimal_caps,
    .open = minimal_open,
    .close = minimal_close,
    .buffer_alloc = minimal_alloc,
    .buffer_free = minimal_free,
    .buffer_write = minimal_write,
    .buffer_read = minimal_read,
    .quantize_append = minimal_append,
    .attention = minimal_attention,
    .dequantize = minimal_dequantize,
};

TKV_PLUGIN_EXPORT const struct tkv_plugin *tkv_plugin_entry(uint32_t major, uint32_t minor);

TKV_PLUGIN_EXPORT const struct tkv_plugin *tkv_plugin_entry(uint32_t major, uint32_t minor)
{
    (void)minor;
    const char *declared = getenv("TKV_MINIMAL_ABI_MINOR");
    minimal.abi_minor = declared ? (uint32_t)strtoul(declared, NULL, 0) : 0u;
    return major == TKV_ABI_MAJOR ? &minimal : NULL;
}
