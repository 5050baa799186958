/* SPDX-License-Identifier: MIT */
/*
 * Plugins that are wrong on purpose, one per BROKEN_KIND, for the loader
 * tests: each must be refused with its own status while good plugins load.
 *   BAD_MAJOR     descriptor claims ABI 3.0                 -> TKV_EABI
 *   NULL_OP       required op 'attention' left NULL         -> TKV_EPLUGIN
 *   NO_DEVICE     probe finds nothing                       -> TKV_ENODEV
 *   NO_ENTRY      exports no entry symbol                   -> TKV_EPLUGIN
 *   REFUSES_CORE  entry returns NULL                        -> TKV_EABI
 *   SHORT_STRUCT  struct_size smaller than ABI 2.0          -> TKV_EPLUGIN
 *   OPEN_FAILS    probe finds a high-score device that
 *                 fails to open (auto must fall back to cpu) -> accepted
 *   OLD_ABI       an ABI 1.1 plugin (its descriptor shape)  -> TKV_EABI, both
 *                 versions named
 *   NO_CAPS       device_caps fails                         -> its status
 *   NOT_PAGED     a device without TKV_CAP_PAGED            -> TKV_EPLUGIN
 *   WRONG_NAME    names itself vulkan in another file       -> TKV_EPLUGIN
 */
#include <string.h>

#include "turbokv_plugin.h"

/* OLD_ABI references none of the ops */
#pragma GCC diagnostic ignored "-Wunused-function"

#define BAD_MAJOR 1
#define NULL_OP 2
#define NO_DEVICE 3
#define NO_ENTRY 4
#define REFUSES_CORE 5
#define SHORT_STRUCT 6
#define OPEN_FAILS 7
#define OLD_ABI 8
#define NO_CAPS 9
#define NOT_PAGED 10
#define WRONG_NAME 11

static const struct tkv_services *svc;

static int unused_op(void) { return svc->error(TKV_EUNSUPPORTED, "broken test plugin: op not available"); }

static int broken_init(const struct tkv_services *s)
{
    svc = s;
    return TKV_OK;
}

static int broken_probe(struct tkv_device_info *devs, uint32_t max, uint32_t *n)
{
#if BROKEN_KIND == NO_DEVICE
    (void)devs;
    (void)max;
    *n = 0;
#else
    if (max > 0) {
        devs[0].kind = TKV_DEVICE_GPU_DISCRETE;
        devs[0].score = 1000; /* outranks cpu, so backend auto tries it first */
        strcpy(devs[0].name, "broken test device");
        strcpy(devs[0].driver, "none");
    }
    *n = 1;
#endif
    return TKV_OK;
}

static int broken_caps(uint32_t index, struct tkv_device_caps *caps)
{
    (void)index;
#if BROKEN_KIND == NO_CAPS
    (void)caps;
    return svc->error(TKV_EDEVICE, "broken test device has no capabilities");
#else
    caps->features = BROKEN_KIND == NOT_PAGED ? 0 : TKV_CAP_PAGED;
    caps->k_types = caps->v_types = (1u << TKV_TYPE_COUNT) - 1;
    caps->rotations = caps->scale_modes = ~0u;
    caps->head_dim_max = TKV_HEAD_DIM_MAX;
    return TKV_OK;
#endif
}

static int broken_open(const struct tkv_open_params *p, void **dev)
{
    (void)p;
    (void)dev;
    return svc->error(TKV_EDEVICE, "broken test device cannot be opened");
}

static void broken_close(void *dev) { (void)dev; }
static int broken_alloc(void *dev, uint64_t b, void **buf) { (void)dev, (void)b, (void)buf; return unused_op(); }
static void broken_free(void *dev, void *buf) { (void)dev, (void)buf; }
static int broken_write(void *d, void *b, uint64_t o, const void *s, uint64_t n) { (void)d, (void)b, (void)o, (void)s, (void)n; return unused_op(); }
static int broken_read(void *d, const void *b, uint64_t o, void *s, uint64_t n) { (void)d, (void)b, (void)o, (void)s, (void)n; return unused_op(); }
static int broken_append(void *d, const struct tkv_append_args *a) { (void)d, (void)a; return unused_op(); }
static int broken_attention(void *d, const struct tkv_attention_args *a) { (void)d, (void)a; return unused_op(); }
static int broken_dequantize(void *d, const struct tkv_dequant_args *a) { (void)d, (void)a; return unused_op(); }

#if BROKEN_KIND == OLD_ABI
/* What an ABI 1.1 module returned: same header words, its own layout after. */
static const struct {
    uint32_t abi_major, abi_minor, struct_size, reserved;
    const char *name, *version, *description;
    void *ops[13];
} broken = { 1, 1, sizeof broken, 0, BROKEN_NAME, "test", "an ABI 1.1 plugin", { 0 } };
#else
static const struct tkv_plugin broken = {
    .abi_major = BROKEN_KIND == BAD_MAJOR ? 3 : TKV_ABI_MAJOR,
    .abi_minor = 0,
    .struct_size = BROKEN_KIND == SHORT_STRUCT ? 24 : sizeof(struct tkv_plugin),
    .name = BROKEN_NAME,
    .version = "test",
    .description = "a plugin that is wrong on purpose",
    .init = broken_init,
    .probe = broken_probe,
    .device_caps = broken_caps,
    .open = broken_open,
    .close = broken_close,
    .buffer_alloc = broken_alloc,
    .buffer_free = broken_free,
    .buffer_write = broken_write,
    .buffer_read = broken_read,
    .quantize_append = broken_append,
    .attention = BROKEN_KIND == NULL_OP ? NULL : broken_attention,
    .dequantize = broken_dequantize,
};
#endif

#if BROKEN_KIND != NO_ENTRY
TKV_PLUGIN_EXPORT const struct tkv_plugin *tkv_plugin_entry(uint32_t major, uint32_t minor)
{
    (void)major;
    (void)minor;
    return BROKEN_KIND == REFUSES_CORE ? NULL : (const struct tkv_plugin *)(const void *)&broken;
}
#else
/* exported, but under the wrong name */
TKV_PLUGIN_EXPORT const struct tkv_plugin *tkv_plugin_entry_v0(void) { return &broken; }

#endif
