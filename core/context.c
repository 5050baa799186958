/* SPDX-License-Identifier: MIT */
/*
 * The context: configuration (defaults < file < env < API), plugin search,
 * backend choice and the open device.
 *
 * The configuration file: the API's config_path, else TURBO_CONFIG, else
 * sysconfdir/turbokv.yaml when it exists (ignore_env skips the last two).
 *
 * Plugin search order (docs/abi.md): the API's plugin_path, then
 * TURBO_PLUGIN_PATH, then the config file's plugin_path, then the install
 * directory. In a privileged (setuid/setgid, AT_SECURE) process no TURBO_*
 * variable that names a file or directory is honoured (TURBO_CONFIG,
 * TURBO_PLUGIN_PATH), as the Vulkan loader does. Directories from the
 * environment or a config file must be absolute.
 *
 * A named backend (config, env or API) loads only its own module,
 * turbokv-<name>.so: a cpu-only host never maps a GPU runtime.
 */
#include <dlfcn.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/auxv.h>
#include <unistd.h>

#include "core.h"
#include "error.h"
#include "policy.h"
#include "tables.h"

#ifndef TKV_SYSCONF_DIR
#define TKV_SYSCONF_DIR "/usr/local/etc"
#endif
#ifndef TKV_PLUGIN_INSTALL_DIR
#define TKV_PLUGIN_INSTALL_DIR "/usr/local/lib/turbokv"
#endif

#define MAX_DIRS 65 /* 62 from the API, env and file, the install dir, the one beside the library, NULL */

/* Splits a colon-separated list into dirs[] (pointing into storage), leaving
 * room for the install directory and the terminating NULL. */
static int add_dirs(char *storage, const char **dirs, size_t *n, const char *from, int absolute)
{
    for (char *save = NULL, *tok = strtok_r(storage, ":", &save); tok; tok = strtok_r(NULL, ":", &save)) {
        if (!*tok)
            continue;
        if (absolute && tok[0] != '/')
            return tkv_error(TKV_ECONFIG, "%s: plugin directory '%s' is relative; use an absolute path", from, tok);
        if (*n >= MAX_DIRS - 3)
            return tkv_error(TKV_ECONFIG, "%s: more than %d plugin directories in all", from, MAX_DIRS - 3);
        dirs[(*n)++] = tok;
    }
    return TKV_OK;
}

static int secure_process(void) { return getauxval(AT_SECURE) != 0; }

/* "<directory of libturbokv.so>/turbokv", found through the loaded library
 * itself (dladdr), so that a prefix moved after installation still finds
 * its plugins. 0 when it cannot be determined. */
static int library_plugin_dir(char *out, size_t size)
{
    Dl_info info;
    if (!dladdr((void *)(uintptr_t)tkv_context_open, &info) || !info.dli_fname || info.dli_fname[0] != '/')
        return 0;
    const char *slash = strrchr(info.dli_fname, '/');
    int n = snprintf(out, size, "%.*s/turbokv", (int)(slash - info.dli_fname), info.dli_fname);
    return n > 0 && (size_t)n < size;
}

static int load_config(tkv_context *ctx, const struct tkv_context_options *o)
{
    struct tkv_config *cfg = &ctx->cfg;
    int rc;
    tkv_config_defaults(cfg);
    /* the API's file, else TURBO_CONFIG, else the installed one if present */
    const char *path = o->config_path;
    if (!path && !o->ignore_env) {
        path = getenv("TURBO_CONFIG");
        if (path && !*path)
            path = NULL;
        if (path && secure_process()) {
            tkv_log(TKV_LOG_WARN, "TURBO_CONFIG ignored in a privileged (setuid/setgid) process");
            path = NULL;
        }
    }
    if (!path && !o->ignore_env && access(TKV_SYSCONF_DIR "/turbokv.yaml", R_OK) == 0)
        path = TKV_SYSCONF_DIR "/turbokv.yaml";
    if (path && (rc = tkv_config_apply_file_secure(cfg, path, secure_process())) != TKV_OK)
        return rc;
    snprintf(ctx->file_plugin_path, sizeof ctx->file_plugin_path, "%s", cfg->plugin_path);
    if (!o->ignore_env && (rc = tkv_config_apply_env(cfg)) != TKV_OK)
        return rc;
    if (o->backend && (rc = tkv_config_set(cfg, TKV_CFG_BACKEND, o->backend, TKV_SOURCE_API, "API")) != TKV_OK)
        return rc;
    ctx->log.level = cfg->log_level;
    return TKV_OK;
}

static int scan_plugins(tkv_context *ctx, const struct tkv_context_options *o)
{
    char api[4096] = "", env[4096] = "", file[1024], install[] = TKV_PLUGIN_INSTALL_DIR;
    const char *dirs[MAX_DIRS];
    size_t n = 0;
    int rc;
    if (o->plugin_path) {
        if (strlen(o->plugin_path) >= sizeof api)
            return tkv_error(TKV_EINVAL, "plugin_path of %zu bytes is too long", strlen(o->plugin_path));
        snprintf(api, sizeof api, "%s", o->plugin_path);
        if ((rc = add_dirs(api, dirs, &n, "plugin_path (API)", 0)) != TKV_OK)
            return rc;
    }
    const char *e = o->ignore_env ? NULL : getenv("TURBO_PLUGIN_PATH");
    if (e && secure_process()) {
        tkv_log(TKV_LOG_WARN, "TURBO_PLUGIN_PATH ignored in a privileged (setuid/setgid) process");
        e = NULL;
    }
    if (e) {
        if (strlen(e) >= sizeof env)
            return tkv_error(TKV_ECONFIG, "TURBO_PLUGIN_PATH of %zu bytes is too long", strlen(e));
        snprintf(env, sizeof env, "%s", e);
        if ((rc = add_dirs(env, dirs, &n, "TURBO_PLUGIN_PATH", 1)) != TKV_OK)
            return rc;
    }
    /* the config file is the host's (API) or the installed one: TURBO_CONFIG
     * is not read in a privileged process */
    snprintf(file, sizeof file, "%s", ctx->file_plugin_path);
    if ((rc = add_dirs(file, dirs, &n, "plugin_path (config file)", 1)) != TKV_OK)
        return rc;
    dirs[n++] = install;
    /* relocated installs: the turbokv/ directory beside this library, when it
     * is not the compiled-in one */
    char beside[1024];
    if (library_plugin_dir(beside, sizeof beside) && strcmp(beside, install) != 0)
        dirs[n++] = beside;
    dirs[n] = NULL;
    /* a named backend loads only its own module */
    const char *want = ctx->cfg.backend;
    int named = strcmp(want, "auto") != 0 && ctx->cfg.meta[TKV_CFG_BACKEND].source != TKV_SOURCE_DEFAULT;
    return tkv_registry_scan(&ctx->reg, dirs, named && !o->probe_all ? want : NULL);
}

static struct tkv_module *find_backend(tkv_context *ctx, const char *name)
{
    char file[96];
    snprintf(file, sizeof file, "turbokv-%s.so", name);
    for (uint32_t i = 0; i < ctx->reg.n; i++) {
        const struct tkv_module *m = &ctx->reg.mods[i];
        /* a refused module has no name yet: its file says which backend it is */
        if ((m->ops.name && strcmp(m->ops.name, name) == 0) || (!m->ops.name && strcmp(m->file, file) == 0))
            return &ctx->reg.mods[i];
    }
    return NULL;
}

/* Explains why nothing is usable: no plugin at all vs plugins all refused
 * (the OpenCL ICD loader reports both as -1001; we keep them apart). */
static int no_backend_error(tkv_context *ctx)
{
    if (ctx->reg.n == 0)
        return tkv_error(TKV_ENOTFOUND, "no turbokv plugin found (searched %s)", ctx->reg.searched);
    char list[2048] = "";
    for (uint32_t i = 0; i < ctx->reg.n; i++) {
        size_t used = strlen(list);
        snprintf(list + used, sizeof list - used, "%s%s: %s", i ? "; " : "", ctx->reg.mods[i].path,
                 ctx->reg.mods[i].message);
    }
    return tkv_error(TKV_EPLUGIN, "%u plugin(s) found but all refused: %s", ctx->reg.n, list);
}

static int open_module(tkv_context *ctx, struct tkv_module *m, uint32_t index)
{
    int rc = tkv_device_open(&ctx->device, m, index, ctx->cfg.threads,
                             tkv_cpu_isa_words[ctx->cfg.cpu_isa], ctx->math, NULL, NULL);
    if (rc == TKV_OK)
        snprintf(ctx->device_name, sizeof ctx->device_name, "%s", m->devs[index].name);
    return rc;
}

static int caps_fit(tkv_context *ctx, const struct tkv_device_caps *caps, const char *name,
                    const struct tkv_cache_params *req);

/* Does device d of m hold the cache the host announced (options.require)? */
static int device_fits(tkv_context *ctx, const struct tkv_module *m, uint32_t d, const struct tkv_cache_params *req)
{
    return caps_fit(ctx, &m->caps[d], m->devs[d].name, req);
}

static int caps_fit(tkv_context *ctx, const struct tkv_device_caps *caps, const char *name,
                    const struct tkv_cache_params *req)
{
    if (!req)
        return TKV_OK;
    struct tkv_cache_params full = { 0 };
    if (req->struct_size < offsetof(struct tkv_cache_params, layer_k_types))
        return tkv_error(TKV_EINVAL, "options.require: struct_size %u too small", req->struct_size);
    memcpy(&full, req, req->struct_size < sizeof full ? req->struct_size : sizeof full);
    if (full.n_layers == 0 || full.n_layers > TKV_MAX_LAYERS || !tkv_head_dim_supported(full.head_dim) ||
        full.n_kv_heads == 0)
        return tkv_error(TKV_EINVAL, "options.require: n_layers %u / n_kv_heads %u / head_dim %u invalid",
                         full.n_layers, full.n_kv_heads, full.head_dim);
    uint32_t *types = malloc(2 * sizeof *types * full.n_layers);
    if (!types)
        return tkv_error(TKV_ENOMEM, "out of memory");
    int rc = tkv_policy_resolve(&ctx->cfg, &full, caps, types, types + full.n_layers);
    uint32_t rot = full.rotation ? full.rotation : ctx->cfg.rotation;
    uint32_t scale = full.scale_mode ? full.scale_mode : ctx->cfg.norm_correction ? TKV_SCALE_NORM_CORRECTED : TKV_SCALE_NORM;
    uint32_t bt = full.block_tokens ? full.block_tokens : TKV_BLOCK_TOKENS_DEFAULT;
    if (full.capacity && bt > full.capacity)
        bt = full.capacity;
    if (rc == TKV_OK)
        rc = tkv_caps_check_cache(caps, full.n_layers, types, types + full.n_layers, full.head_dim, rot, scale,
                                  bt, name);
    free(types);
    return rc;
}

/* backend: auto picks the highest-scoring device among accepted plugins
 * whose capabilities hold the announced cache, and falls back to cpu when
 * that one fails to open; a backend named in the config, the environment or
 * the API must open, or the context fails. */
static int choose_backend(tkv_context *ctx, const struct tkv_cache_params *req)
{
    const char *want = ctx->cfg.backend;
    int demanded = ctx->cfg.meta[TKV_CFG_BACKEND].source != TKV_SOURCE_DEFAULT && strcmp(want, "auto") != 0;
    if (demanded) {
        struct tkv_module *m = find_backend(ctx, want);
        if (!m) {
            return tkv_error(TKV_ENOTFOUND, "backend '%s' (from %s): no plugin file turbokv-%s.so found (searched %s)",
                             want, ctx->cfg.meta[TKV_CFG_BACKEND].origin, want, ctx->reg.searched);
        }
        if (m->status != TKV_OK)
            return tkv_error(m->status, "backend '%s' (from %s): plugin %s refused: %s", want,
                             ctx->cfg.meta[TKV_CFG_BACKEND].origin, m->path, m->message);
        /* an unset device means the backend's best one (OpenCL may list a
         * CPU implementation before the GPU) */
        uint32_t index = ctx->cfg.device;
        if (index == TKV_DEVICE_AUTO)
            for (uint32_t d = index = 0; d < m->n_devs; d++)
                if (m->devs[d].score > m->devs[index].score)
                    index = d;
        int rc = index < m->n_devs ? device_fits(ctx, m, index, req) : TKV_OK;
        if (rc == TKV_OK)
            rc = open_module(ctx, m, index);
        if (rc != TKV_OK)
            tkv_error_prefix("backend '%s' (from %s)", want, ctx->cfg.meta[TKV_CFG_BACKEND].origin);
        return rc;
    }

    struct tkv_module *best = NULL;
    uint32_t best_dev = 0;
    char unfit[1024] = "";
    for (uint32_t i = 0; i < ctx->reg.n; i++) {
        struct tkv_module *m = &ctx->reg.mods[i];
        if (m->status != TKV_OK)
            continue;
        for (uint32_t d = 0; d < m->n_devs; d++) {
            if (device_fits(ctx, m, d, req) != TKV_OK) {
                size_t used = strlen(unfit);
                snprintf(unfit + used, sizeof unfit - used, "%s%s", used ? "; " : "", tkv_last_error());
                continue;
            }
            if (!best || m->devs[d].score > best->devs[best_dev].score) {
                best = m;
                best_dev = d;
            }
        }
    }
    if (!best && unfit[0])
        return tkv_error(TKV_EUNSUPPORTED, "backend auto: no device holds the requested cache: %s", unfit);
    if (!best)
        return no_backend_error(ctx);
    int rc = open_module(ctx, best, best_dev);
    if (rc == TKV_OK) {
        tkv_log(TKV_LOG_INFO, "backend auto: chose %s device %u (%s, score %d)", best->ops.name, best_dev,
                best->devs[best_dev].name, best->devs[best_dev].score);
        return TKV_OK;
    }
    struct tkv_module *cpu = find_backend(ctx, "cpu");
    if (best == cpu || !cpu || cpu->status != TKV_OK || device_fits(ctx, cpu, 0, req) != TKV_OK)
        return rc;
    tkv_log(TKV_LOG_WARN, "backend auto: %s failed to open (%s); falling back to cpu", best->ops.name,
            tkv_last_error());
    return open_module(ctx, cpu, 0);
}

/* The backend a host device's tag names, or NULL (error set) when the
 * struct is malformed. */
static const char *host_backend_name(const struct tkv_host_device *h)
{
    /* 0.5's struct ends where tkv_host_vulkan.flags begins */
    const size_t min_size = offsetof(struct tkv_host_device, vulkan.flags);
    if (h->struct_size < min_size)
        return (void)tkv_error(TKV_EINVAL, "tkv_context_open: host_device->struct_size %u, expected at least %zu",
                               h->struct_size, min_size), NULL;
    if (h->backend == TKV_HOST_OPENCL) {
        if (!h->opencl.context || !h->opencl.device || !h->opencl.queue)
            return (void)tkv_error(TKV_EINVAL, "tkv_context_open: host_device (OpenCL): %s is NULL",
                                   !h->opencl.context ? "context" : !h->opencl.device ? "device" : "queue"), NULL;
        return "opencl";
    }
    if (h->backend == TKV_HOST_VULKAN) {
        const struct tkv_host_vulkan *v = &h->vulkan;
        if (!v->instance || !v->physical_device || !v->device || !v->queue)
            return (void)tkv_error(TKV_EINVAL, "tkv_context_open: host_device (Vulkan): %s is NULL",
                                   !v->instance ? "instance" : !v->physical_device ? "physical_device"
                                   : !v->device ? "device" : "queue"), NULL;
        if (TKV_ARGS_HAS(h, vulkan.flags) && (v->flags & ~TKV_HOST_VULKAN_FLAGS))
            return (void)tkv_error(TKV_EINVAL, "tkv_context_open: host_device (Vulkan): flags 0x%x has bits no "
                                   "TKV_HOST_VULKAN_* defines (0x%x)", v->flags, v->flags & ~TKV_HOST_VULKAN_FLAGS), NULL;
        return "vulkan";
    }
    return (void)tkv_error(TKV_EINVAL, "tkv_context_open: host_device->backend %u is not a backend tag (%d OpenCL, %d "
                           "Vulkan)", h->backend, TKV_HOST_OPENCL, TKV_HOST_VULKAN), NULL;
}

/* Opens the plugin the host device's tag names on that device. */
static int open_host_device(tkv_context *ctx, const struct tkv_host_device *h, const struct tkv_cache_params *req)
{
    const char *name = host_backend_name(h);
    if (!name)
        return TKV_EINVAL;
    struct tkv_module *m = find_backend(ctx, name);
    if (!m)
        return tkv_error(TKV_ENOTFOUND, "host_device (%s): no plugin file turbokv-%s.so found (searched %s)", name,
                         name, ctx->reg.searched);
    if (m->status != TKV_OK)
        return tkv_error(m->status, "host_device (%s): plugin %s refused: %s", name, m->path, m->message);
    struct tkv_device_info info;
    struct tkv_device_caps caps;
    int rc = tkv_device_describe_host(m, h, &info, &caps);
    if (rc == TKV_OK)
        rc = caps_fit(ctx, &caps, info.name, req);
    if (rc == TKV_OK)
        rc = tkv_device_open(&ctx->device, m, 0, ctx->cfg.threads, tkv_cpu_isa_words[ctx->cfg.cpu_isa], ctx->math, h,
                             &caps);
    if (rc != TKV_OK) {
        tkv_error_prefix("host_device (%s)", name);
        return rc;
    }
    snprintf(ctx->device_name, sizeof ctx->device_name, "%s", info.name);
    tkv_log(TKV_LOG_INFO, "opened %s on the host's device %s", name, info.name);
    return TKV_OK;
}

int tkv_enter(tkv_context *ctx, const char *fn, struct tkv_guard *g)
{
    if (atomic_flag_test_and_set_explicit(&ctx->busy, memory_order_acquire))
        return tkv_error(TKV_EBUSY, "%s: the context is in use by another thread (a context and its caches take one "
                         "thread at a time)", fn);
    g->ctx = ctx;
    g->prev = tkv_log_set_target(&ctx->log);
    return TKV_OK;
}

void tkv_leave(struct tkv_guard *g)
{
    tkv_log_set_target(g->prev);
    atomic_flag_clear_explicit(&g->ctx->busy, memory_order_release);
}

static int context_open(tkv_context *ctx, const struct tkv_context_options *o)
{
    int rc = TKV_OK;
    const char *host = NULL;
    if (o->host_device) {
        /* the host's device names the backend; an API backend must agree,
         * the configuration's is overridden */
        if (!(host = host_backend_name(o->host_device)))
            return TKV_EINVAL;
        if (o->backend && strcmp(o->backend, host) != 0 && strcmp(o->backend, "auto") != 0)
            return tkv_error(TKV_EINVAL, "tkv_context_open: backend '%s' but host_device is an %s device", o->backend,
                             o->host_device->backend == TKV_HOST_OPENCL ? "OpenCL" : "Vulkan");
    }
    struct tkv_context_options named = *o;
    if (host)
        named.backend = host;
    rc = load_config(ctx, &named);
    if (rc == TKV_OK && !(ctx->math = tkv_tables_get(TKV_ROTATION_SEED_DEFAULT)))
        rc = tkv_error(TKV_ENOMEM, "out of memory computing the codebook tables");
    if (rc == TKV_OK)
        rc = scan_plugins(ctx, &named);
    if (rc == TKV_OK && (rc = host ? open_host_device(ctx, o->host_device, o->require)
                                   : choose_backend(ctx, o->require)) != TKV_OK)
        tkv_registry_free(&ctx->reg);
    return rc;
}

int tkv_context_open(const struct tkv_context_options *opts, tkv_context **out)
{
    struct tkv_context_options o = { 0 };
    if (!out)
        return tkv_error(TKV_EINVAL, "tkv_context_open: ctx is NULL");
    *out = NULL;
    if (opts) {
        if (opts->struct_size < offsetof(struct tkv_context_options, log_fn))
            return tkv_error(TKV_EINVAL, "tkv_context_open: opts->struct_size %u too small", opts->struct_size);
        memcpy(&o, opts, opts->struct_size < sizeof o ? opts->struct_size : sizeof o);
    }
    tkv_context *ctx = calloc(1, sizeof *ctx);
    if (!ctx)
        return tkv_error(TKV_ENOMEM, "out of memory");
    atomic_flag_clear(&ctx->busy);
    ctx->log = (struct tkv_log_target){ .level = TKV_LOG_WARN, .fn = o.log_fn, .user = o.log_user };
    struct tkv_guard g = { 0 };
    int rc = tkv_enter(ctx, "tkv_context_open", &g);
    if (rc == TKV_OK) {
        rc = context_open(ctx, &o);
        tkv_leave(&g);
    }
    if (rc != TKV_OK) {
        free(ctx);
        return rc;
    }
    *out = ctx;
    return TKV_OK;
}

void tkv_context_close(tkv_context *ctx)
{
    if (!ctx)
        return;
    struct tkv_guard g = { 0 };
    int entered = tkv_enter(ctx, "tkv_context_close", &g) == TKV_OK;
    tkv_device_close(&ctx->device);
    tkv_registry_free(&ctx->reg);
    if (entered)
        tkv_leave(&g);
    free(ctx);
}

int tkv_context_caps(const tkv_context *ctx, struct tkv_device_caps *caps)
{
    if (!ctx || !caps)
        return tkv_error(TKV_EINVAL, "tkv_context_caps: NULL argument");
    if (caps->struct_size < offsetof(struct tkv_device_caps, reserved))
        return tkv_error(TKV_EINVAL, "tkv_context_caps: caps->struct_size %u too small", caps->struct_size);
    uint32_t size = caps->struct_size < sizeof *caps ? caps->struct_size : (uint32_t)sizeof *caps;
    /* capabilities are fixed once the context is open: no guard needed */
    memcpy((char *)caps + sizeof caps->struct_size, (const char *)ctx->device.caps + sizeof caps->struct_size,
           size - sizeof caps->struct_size);
    return TKV_OK;
}

static int set_command_buffer(tkv_context *ctx, void *command_buffer)
{
    static const char fn[] = "tkv_context_set_command_buffer";
    const struct tkv_device *d = &ctx->device;
    if (d->host_backend != TKV_HOST_VULKAN)
        return tkv_error(TKV_EUNSUPPORTED, "%s: only on a context opened on the host's Vulkan device "
                         "(tkv_context_options.host_device with TKV_HOST_VULKAN); this one is %s", fn,
                         d->host_backend == TKV_HOST_OPENCL ? "on the host's OpenCL device (its queue orders the calls)"
                                                            : "on a device of turbokv's own");
    if (!(d->caps->features & TKV_CAP_COMMAND_BUFFER))
        return tkv_error(TKV_EUNSUPPORTED, "%s: backend %s cannot record into the host's command buffer "
                         "(TKV_CAP_COMMAND_BUFFER, plugin ABI 2.3)", fn, d->mod->ops.name);
    int rc = tkv_dev_set_command_buffer(&ctx->device, command_buffer);
    if (rc != TKV_OK)
        tkv_error_prefix("%s", fn);
    return rc;
}

int tkv_context_set_command_buffer(tkv_context *ctx, void *command_buffer)
{
    if (!ctx)
        return tkv_error(TKV_EINVAL, "tkv_context_set_command_buffer: ctx is NULL");
    TKV_GUARDED(ctx, "tkv_context_set_command_buffer", set_command_buffer(ctx, command_buffer));
}

const char *tkv_context_backend(const tkv_context *ctx)
{
    return ctx && ctx->device.mod ? ctx->device.mod->ops.name : "";
}

const char *tkv_context_device(const tkv_context *ctx) { return ctx ? ctx->device_name : ""; }

uint32_t tkv_config_count(const tkv_context *ctx) { return ctx ? TKV_CFG_COUNT : 0; }

int tkv_config_get(const tkv_context *ctx, uint32_t i, struct tkv_config_entry *e)
{
    if (!ctx || !e)
        return tkv_error(TKV_EINVAL, "tkv_config_get: NULL argument");
    if (i >= TKV_CFG_COUNT)
        return tkv_error(TKV_ERANGE, "tkv_config_get: index %u, there are %u keys", i, TKV_CFG_COUNT);
    memset(e, 0, sizeof *e);
    e->key = tkv_config_key_name(i);
    e->env = tkv_config_key_env(i);
    tkv_config_format(&ctx->cfg, i, e->value, sizeof e->value);
    e->source = ctx->cfg.meta[i].source;
    snprintf(e->origin, sizeof e->origin, "%s", ctx->cfg.meta[i].origin);
    return TKV_OK;
}

uint32_t tkv_plugin_count(const tkv_context *ctx) { return ctx ? ctx->reg.n : 0; }

int tkv_plugin_get(const tkv_context *ctx, uint32_t i, struct tkv_plugin_report *r)
{
    if (!ctx || !r)
        return tkv_error(TKV_EINVAL, "tkv_plugin_get: NULL argument");
    if (i >= ctx->reg.n)
        return tkv_error(TKV_ERANGE, "tkv_plugin_get: index %u, %u plugins found", i, ctx->reg.n);
    const struct tkv_module *m = &ctx->reg.mods[i];
    memset(r, 0, sizeof *r);
    snprintf(r->path, sizeof r->path, "%s", m->path);
    snprintf(r->name, sizeof r->name, "%s", m->ops.name ? m->ops.name : "");
    snprintf(r->version, sizeof r->version, "%s", m->ops.version ? m->ops.version : "");
    r->abi_major = m->ops.abi_major;
    r->abi_minor = m->ops.abi_minor;
    r->status = m->status;
    snprintf(r->message, sizeof r->message, "%s", m->status == TKV_OK ? "" : m->message);
    r->n_devices = m->n_devs;
    for (uint32_t d = 0; d < m->n_devs && d < 4; d++)
        snprintf(r->devices[d], sizeof r->devices[d], "%.100s (%.120s, score %d)", m->devs[d].name,
                 m->devs[d].driver, m->devs[d].score);
    r->in_use = ctx->device.mod == m;
    return TKV_OK;
}
