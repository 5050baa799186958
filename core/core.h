/* SPDX-License-Identifier: MIT */
/*
 * Core internals shared by the core sources: loaded plugins, the open device, the
 * context and the cache. Never installed; plugins never see it.
 */
#ifndef TKV_CORE_H
#define TKV_CORE_H

#include <stdatomic.h>
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
    struct tkv_device_caps caps[TKV_MAX_DEVICES];
    uint32_t n_devs;
    uint32_t minor;             /* negotiated ABI minor: min(core, plugin) */
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
 * ones), loads every turbokv-*.so (only turbokv-<only>.so when only is not
 * NULL), checks its ABI and required ops, inits it, probes its devices and
 * reads their capabilities. Modules that fail are kept with their reason.
 * Discovery is serialized process-wide (libltdl is not thread-safe). */
int tkv_registry_scan(struct tkv_registry *reg, const char *const *dirs, const char *only);
void tkv_registry_free(struct tkv_registry *reg);
/* Loads one module file (also used for explicit files in tests). */
void tkv_module_load(struct tkv_module *mod, const char *path);
void tkv_module_unload(struct tkv_module *mod);

/* A device buffer as the core knows it: the plugin's handle and its size. */
struct tkv_dbuf {
    void *h;
    uint64_t size;
};

/* An open device: every plugin call goes through the wrappers below, the one
 * place that validates arguments (validate.c), names the plugin in errors
 * and writes the call trace at log level debug. */
struct tkv_device {
    struct tkv_module *mod;
    void *dev;
    uint32_t index;
    const struct tkv_device_caps *caps;
    /* opened on the host's own device: its backend tag (enum
     * tkv_host_backend, 0 otherwise) and the capabilities host_device()
     * reported (caps points here) */
    uint32_t host_backend;
    struct tkv_device_caps host_caps;
};

/* host NULL: device index of mod. Else the host's own device (index is
 * ignored), with the capabilities tkv_device_describe_host gave. */
int tkv_device_open(struct tkv_device *d, struct tkv_module *mod, uint32_t index, uint32_t threads,
                    const char *cpu_isa, const struct tkv_math *math, const struct tkv_host_device *host,
                    const struct tkv_device_caps *host_caps);
/* What the host's own device is and supports (the plugin's host_device op);
 * TKV_EUNSUPPORTED when the plugin cannot adopt it. */
int tkv_device_describe_host(struct tkv_module *mod, const struct tkv_host_device *host,
                             struct tkv_device_info *info, struct tkv_device_caps *caps);
void tkv_device_close(struct tkv_device *d);
int tkv_dev_alloc(struct tkv_device *d, uint64_t bytes, struct tkv_dbuf *buf);
void tkv_dev_free(struct tkv_device *d, struct tkv_dbuf *buf);
int tkv_dev_write(struct tkv_device *d, const struct tkv_dbuf *buf, uint64_t off, const void *src, uint64_t bytes);
int tkv_dev_read(struct tkv_device *d, const struct tkv_dbuf *buf, uint64_t off, void *dst, uint64_t bytes);
/* Device-side copy, or through host memory when the plugin has none. */
int tkv_dev_copy(struct tkv_device *d, const struct tkv_dbuf *dst, uint64_t dst_off, const struct tkv_dbuf *src,
                 uint64_t src_off, uint64_t bytes);
/* The keys' and the values' rows of one cache append: both validated, then
 * appended one after the other, marked as a pair (TKV_APPEND_PAIR_*) for a
 * plugin of ABI 2.5 or later. The pool's buf member of each is filled from
 * its handle here. */
int tkv_dev_append_pair(struct tkv_device *d, const struct tkv_dbuf *kbuf, struct tkv_append_args *k,
                        const struct tkv_dbuf *vbuf, struct tkv_append_args *v);
int tkv_dev_attention(struct tkv_device *d, const struct tkv_dbuf *k, const struct tkv_dbuf *v,
                      struct tkv_attention_args *a);
/* ABI 2.7: a sequence's appends (a pair) and then the attention of the new
 * tokens' queries: everything validated (tkv_validate_append_attention
 * too) before anything runs; one append_attention call where the plugin
 * has it, else the pair and the attention in turn. */
int tkv_dev_append_attention(struct tkv_device *d, const struct tkv_dbuf *kbuf, struct tkv_append_args *k,
                             const struct tkv_dbuf *vbuf, struct tkv_append_args *v, struct tkv_attention_args *a);
int tkv_dev_dequantize(struct tkv_device *d, const struct tkv_dbuf *buf, struct tkv_dequant_args *a);
/* ABI 2.3: the host's command buffer (NULL: none); only on a device with
 * TKV_CAP_COMMAND_BUFFER (the caller checks). */
int tkv_dev_set_command_buffer(struct tkv_device *d, void *command_buffer);

/* Argument checks of every op (validate.c): the plugin preconditions of
 * turbokv_plugin.h, against the device's capabilities and the buffers'
 * sizes. TKV_OK or an error naming the argument. */
int tkv_validate_pool(const struct tkv_device_caps *caps, const struct tkv_pool *p, uint32_t n_heads,
                      const struct tkv_dbuf *buf, const char *op, const char *which);
int tkv_validate_blocks(const struct tkv_pool *p, const struct tkv_dbuf *buf, const uint32_t *blocks,
                        uint32_t n_blocks, uint64_t first_token, uint64_t n_tokens, const char *op,
                        const char *which);
int tkv_validate_append(const struct tkv_device_caps *caps, const struct tkv_dbuf *buf,
                        const struct tkv_append_args *a);
int tkv_validate_dequant(const struct tkv_device_caps *caps, const struct tkv_dbuf *buf,
                         const struct tkv_dequant_args *a);
int tkv_validate_attention(const struct tkv_device_caps *caps, const struct tkv_dbuf *k, const struct tkv_dbuf *v,
                           const struct tkv_attention_args *a);
/* What an append_attention call adds to its pair's and attention's checks:
 * one sequence, whose n_q is the appended tokens and whose n_ctx ends with
 * them, in the same block-table entries. */
int tkv_validate_append_attention(const struct tkv_append_args *k, const struct tkv_append_args *v,
                                  const struct tkv_attention_args *a);
/* Does the device hold a cache of these types and geometry? The error names
 * the first missing capability. */
int tkv_caps_check_cache(const struct tkv_device_caps *caps, uint32_t n_layers, const uint32_t *k_types,
                         const uint32_t *v_types, uint32_t head_dim, uint32_t rotation, uint32_t scale_mode,
                         uint32_t block_tokens, const char *device);

/* The log target of a context: level, and a host sink or stderr. */
struct tkv_log_target {
    int level;
    void (*fn)(void *user, int level, const char *message);
    void *user;
};

struct tkv_context {
    atomic_flag busy;           /* set while a call runs on this context */
    struct tkv_log_target log;
    struct tkv_config cfg;
    char file_plugin_path[1024]; /* plugin_path as the file set it (env may override cfg's) */
    struct tkv_registry reg;
    struct tkv_device device;
    const struct tkv_math *math;
    char device_name[256];
};

/* Every public call on a context (or a cache of it) runs between these:
 * enter fails with TKV_EBUSY when another thread is inside the context, and
 * makes the context's log target current for this thread. */
struct tkv_guard {
    tkv_context *ctx;
    const struct tkv_log_target *prev;
};
int tkv_enter(tkv_context *ctx, const char *fn, struct tkv_guard *g);
void tkv_leave(struct tkv_guard *g);

#define TKV_GUARDED(ctx, fn, call)                                                                 \
    do {                                                                                           \
        struct tkv_guard g_ = { 0 };                                                                 \
        int rc_ = tkv_enter((ctx), (fn), &g_);                                                     \
        if (rc_ == TKV_OK) {                                                                       \
            rc_ = (call);                                                                          \
            tkv_leave(&g_);                                                                        \
        }                                                                                          \
        return rc_;                                                                                \
    } while (0)

#endif
