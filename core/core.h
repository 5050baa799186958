/*
 * Core internals shared by the core sources: loaded plugins, the open device, the
 * context and the cache. Never installed; plugins never see it.
 */
#ifndef TKV_CORE_H
#define TKV_CORE_H

#include <stdint.h>

#include "config.h"
#include "turbokv.h"
#include "turbokv_plugin.h"

#define TKV_MAX_DEVICES 8

/* One plugin module found on the search path (loader.c). */
struct tkv_module {
    char path[1024];
    char file[256];             /* base name, e.g. "turbokv-cpu.so" */
    void *handle;               /* lt_dlhandle, NULL when refused before load */
    struct tkv_plugin ops;      /* zeroed copy of at most struct_size bytes */
    int status;                 /* TKV_OK when usable */
    char message[512];          /* why refused */
    struct tkv_device_info devs[TKV_MAX_DEVICES];
    uint32_t n_devs;
    int initialized;
};

/* Every module found, in search order. */
struct tkv_registry {
    struct tkv_module *mods;
    uint32_t n;
    char searched[4096];        /* the directories searched, for messages */
};

/* Scans dirs (NULL-terminated, searched in order; files sorted by name
 * within a directory; a file name seen in an earlier directory shadows later
 * ones), loads every turbokv-*.so, checks its ABI and required ops, inits it
 * and probes its devices. Modules that fail are kept with their reason. */
int tkv_registry_scan(struct tkv_registry *reg, const char *const *dirs);
void tkv_registry_free(struct tkv_registry *reg);
/* Loads one module file (also used for explicit files in tests). */
void tkv_module_load(struct tkv_module *mod, const char *path);
void tkv_module_unload(struct tkv_module *mod);

/* An open device: every plugin call goes through the wrappers below, the one
 * place that names the plugin in errors and keeps the call log. */
struct tkv_device {
    struct tkv_module *mod;
    void *dev;
    uint32_t index;
};

int tkv_device_open(struct tkv_device *d, struct tkv_module *mod, uint32_t index, uint32_t threads,
                    const struct tkv_math *math);
void tkv_device_close(struct tkv_device *d);
int tkv_dev_alloc(struct tkv_device *d, uint64_t bytes, void **buf);
void tkv_dev_free(struct tkv_device *d, void *buf);
int tkv_dev_write(struct tkv_device *d, void *buf, uint64_t off, const void *src, uint64_t bytes);
int tkv_dev_read(struct tkv_device *d, const void *buf, uint64_t off, void *dst, uint64_t bytes);
int tkv_dev_append(struct tkv_device *d, const struct tkv_append_args *a);
int tkv_dev_attention(struct tkv_device *d, const struct tkv_attention_args *a);
int tkv_dev_dequantize(struct tkv_device *d, const struct tkv_dequant_args *a);

struct tkv_context {
    struct tkv_config cfg;
    char file_plugin_path[1024]; /* plugin_path as the file set it (env may override cfg's) */
    struct tkv_registry reg;
    struct tkv_device device;
    const struct tkv_math *math;
    char device_name[256];
};

#endif
