/* SPDX-License-Identifier: MIT */
/*
 * Plugin discovery and loading (libltdl), ABI negotiation, required-op
 * validation, and the call wrappers every plugin op goes through.
 *
 * Order of checks for one module, each failure recorded with its own code:
 *   load (lt_dlopen)               -> TKV_EPLUGIN "cannot load: <ltdl error>"
 *   entry symbol                   -> TKV_EPLUGIN "no entry symbol ..."
 *   entry(core major, minor)       -> TKV_EABI    "refused core ABI x.y"
 *   abi_major == core major        -> TKV_EABI    "plugin ABI 1.1, core ABI 2.0 ..."
 *   struct_size covers ABI 2.0     -> TKV_EPLUGIN
 *   required members non-NULL      -> TKV_EPLUGIN "required op 'attention' is NULL"
 *   init(services)                 -> its status
 *   probe()                        -> its status; no device -> TKV_ENODEV
 *   device_caps() of each device   -> its status
 * Only then is any device opened. The negotiated minor is min(core, plugin):
 * argument structs are passed with the struct_size of that minor
 * (abi_args_size), so an older plugin never sees a member it does not know.
 *
 * Discovery (lt_dlinit .. lt_dlexit, init/shutdown) is serialized by one
 * process-wide lock: libltdl keeps global state and is not thread-safe. (The ggml registry calls into a backend
 * before checking its version; we read the three header words first.)
 */
#include <dirent.h>
#include <ltdl.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "core.h"
#include "error.h"

/* --- services handed to plugins */

static _Thread_local const char *calling_plugin = "?";

static void svc_log(int level, const char *fmt, ...)
{
    char msg[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    tkv_log(level, "plugin %s: %s", calling_plugin, msg);
}

static int svc_error(int status, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    tkv_verror(status, fmt, ap);
    va_end(ap);
    return status;
}

static const struct tkv_services services = {
    .struct_size = sizeof(struct tkv_services),
    .core_abi_major = TKV_ABI_MAJOR,
    .core_abi_minor = TKV_ABI_MINOR,
    .log = svc_log,
    .error = svc_error,
};

/* A module file may be loaded by several contexts; ltdl shares the handle,
 * and init/shutdown run once per process-wide load. */
static pthread_mutex_t init_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_mutex_t discovery_lock = PTHREAD_MUTEX_INITIALIZER;
static struct {
    void *handle;
    int refs;
} init_table[64];

static int module_init_once(struct tkv_module *mod)
{
    int rc = TKV_OK, free_slot = -1;
    pthread_mutex_lock(&init_lock);
    for (int i = 0; i < 64; i++) {
        if (init_table[i].handle == mod->handle && init_table[i].refs > 0) {
            init_table[i].refs++;
            pthread_mutex_unlock(&init_lock);
            return TKV_OK;
        }
        if (free_slot < 0 && init_table[i].refs == 0)
            free_slot = i;
    }
    if (free_slot < 0) {
        pthread_mutex_unlock(&init_lock);
        return tkv_error(TKV_ENOMEM, "too many plugin modules loaded");
    }
    calling_plugin = mod->ops.name;
    tkv_error_clear();
    rc = mod->ops.init(&services);
    if (rc == TKV_OK) {
        init_table[free_slot].handle = mod->handle;
        init_table[free_slot].refs = 1;
    }
    pthread_mutex_unlock(&init_lock);
    return rc;
}

static void module_shutdown_once(struct tkv_module *mod)
{
    pthread_mutex_lock(&init_lock);
    for (int i = 0; i < 64; i++) {
        if (init_table[i].handle == mod->handle && init_table[i].refs > 0) {
            if (--init_table[i].refs == 0 && mod->ops.shutdown) {
                calling_plugin = mod->ops.name;
                mod->ops.shutdown();
            }
            break;
        }
    }
    pthread_mutex_unlock(&init_lock);
}

/* --- loading one module */

static void refuse(struct tkv_module *mod, int status, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void refuse(struct tkv_module *mod, int status, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(mod->message, sizeof mod->message, fmt, ap);
    va_end(ap);
    mod->status = status;
}

/* The members every ABI 2.0 plugin must provide, checked once at load. */
#define REQUIRED_OPS(X)                                                                            \
    X(init) X(probe) X(device_caps) X(open) X(close) X(buffer_alloc) X(buffer_free)                \
        X(buffer_write) X(buffer_read) X(quantize_append) X(attention) X(dequantize)

/* The size of each argument struct as of each minor of ABI 2: the core
 * passes a plugin the size of its negotiated minor (members are appended
 * only, so a smaller size is a prefix). Index: the minor. */
static const struct abi_sizes {
    uint32_t append, dequant, attention, caps, open;
} abi_args_size[TKV_ABI_MINOR + 1] = {
    [0] = { offsetof(struct tkv_append_args, src_dev), sizeof(struct tkv_dequant_args),
            offsetof(struct tkv_attention_args, device_ns), sizeof(struct tkv_device_caps),
            offsetof(struct tkv_open_params, cpu_isa) },
    /* 2.1: attention's device_ns, open's cpu_isa */
    [1] = { offsetof(struct tkv_append_args, src_dev), sizeof(struct tkv_dequant_args),
            offsetof(struct tkv_attention_args, q_dev), sizeof(struct tkv_device_caps),
            offsetof(struct tkv_open_params, host) },
    /* 2.2: the host's device (open's host), device tensors (append's
     * src_dev, attention's q_dev and out_dev) */
    [2] = { sizeof(struct tkv_append_args), sizeof(struct tkv_dequant_args), sizeof(struct tkv_attention_args),
            sizeof(struct tkv_device_caps), sizeof(struct tkv_open_params) },
    /* 2.3: the descriptor's set_command_buffer op; no argument struct grew */
    [3] = { sizeof(struct tkv_append_args), sizeof(struct tkv_dequant_args), sizeof(struct tkv_attention_args),
            sizeof(struct tkv_device_caps), sizeof(struct tkv_open_params) },
    /* 2.4: no new member; TKV_CAP_OUTLIER_TYPES apart from TKV_CAP_ROTOR */
    [4] = { sizeof(struct tkv_append_args), sizeof(struct tkv_dequant_args), sizeof(struct tkv_attention_args),
            sizeof(struct tkv_device_caps), sizeof(struct tkv_open_params) },
    /* 2.5: no new member; append's flags (its reserved word before) */
    [5] = { sizeof(struct tkv_append_args), sizeof(struct tkv_dequant_args), sizeof(struct tkv_attention_args),
            sizeof(struct tkv_device_caps), sizeof(struct tkv_open_params) },
    /* 2.6: the descriptor's quantize_append_pair op; no argument struct grew */
    [6] = { sizeof(struct tkv_append_args), sizeof(struct tkv_dequant_args), sizeof(struct tkv_attention_args),
            sizeof(struct tkv_device_caps), sizeof(struct tkv_open_params) },
    /* 2.7: the descriptor's append_attention op; no argument struct grew */
    [7] = { sizeof(struct tkv_append_args), sizeof(struct tkv_dequant_args), sizeof(struct tkv_attention_args),
            sizeof(struct tkv_device_caps), sizeof(struct tkv_open_params) },
};

/* What the core makes of a device's capabilities as the plugin filled
 * them: the members of the negotiated minor, format additions only where
 * the device declares them (the rotor rotation with TKV_CAP_ROTOR, the
 * outlier-split types with TKV_CAP_OUTLIER_TYPES, both with
 * TKV_CAP_FORMAT_R1 from a plugin before 2.4), no host-device features
 * from a plugin without the host_device op. TKV_EPLUGIN when the device cannot attend over
 * blocks (no ABI 2 cache fits it). */
static int caps_normalize(const struct tkv_module *mod, struct tkv_device_caps *caps)
{
    caps->struct_size = abi_args_size[mod->minor].caps;
    /* before 2.4 one bit declared both additions of format revision 1 */
    if (mod->minor < 4) {
        caps->features &= ~(uint32_t)TKV_CAP_OUTLIER_TYPES;
        if (caps->features & TKV_CAP_FORMAT_R1)
            caps->features |= TKV_CAP_OUTLIER_TYPES;
    }
    if (!(caps->features & TKV_CAP_OUTLIER_TYPES)) {
        uint32_t older = (1u << TKV_TYPE_FIRST_R1) - 1u;
        caps->k_types &= older;
        caps->v_types &= older;
    }
    if (!(caps->features & TKV_CAP_ROTOR))
        caps->rotations &= (1u << TKV_ROTATION_FIRST_R1) - 1u;
    if (mod->minor < 2 || !mod->ops.host_device)
        caps->features &= ~(uint32_t)(TKV_CAP_HOST_DEVICE | TKV_CAP_DEVICE_TENSORS | TKV_CAP_ASYNC);
    /* recording into the host's command buffer: ABI 2.3's op, on a device
     * that takes device tensors */
    if (mod->minor < 3 || !mod->ops.set_command_buffer || !(caps->features & TKV_CAP_DEVICE_TENSORS))
        caps->features &= ~(uint32_t)TKV_CAP_COMMAND_BUFFER;
    return caps->features & TKV_CAP_PAGED ? TKV_OK : TKV_EPLUGIN;
}

static int check_required(struct tkv_module *mod)
{
#define CHECK(member)                                                                              \
    if (!mod->ops.member) {                                                                        \
        refuse(mod, TKV_EPLUGIN, "required op '%s' is NULL", #member);                             \
        return -1;                                                                                 \
    }
    REQUIRED_OPS(CHECK)
#undef CHECK
    if (!mod->ops.name || !mod->ops.name[0]) {
        refuse(mod, TKV_EPLUGIN, "descriptor has no backend name");
        return -1;
    }
    /* a backend is found by its file name (turbokv-<name>.so), so the two must agree */
    size_t n = strlen(mod->ops.name);
    if (strncmp(mod->file, "turbokv-", 8) != 0 || strncmp(mod->file + 8, mod->ops.name, n) != 0 ||
        strcmp(mod->file + 8 + n, ".so") != 0) {
        refuse(mod, TKV_EPLUGIN, "descriptor names backend '%.64s', its file should then be turbokv-%.64s.so",
               mod->ops.name, mod->ops.name);
        return -1;
    }
    return 0;
}

void tkv_module_load(struct tkv_module *mod, const char *path)
{
    const char *base = strrchr(path, '/');
    memset(mod, 0, sizeof *mod);
    snprintf(mod->path, sizeof mod->path, "%s", path);
    snprintf(mod->file, sizeof mod->file, "%s", base ? base + 1 : path);

    mod->handle = lt_dlopen(path);
    if (!mod->handle) {
        const char *why = lt_dlerror();
        refuse(mod, TKV_EPLUGIN, "cannot load: %s", why ? why : "unknown ltdl error");
        return;
    }
    tkv_plugin_entry_fn entry = (tkv_plugin_entry_fn)(uintptr_t)lt_dlsym(mod->handle, TKV_PLUGIN_ENTRY_NAME);
    if (!entry) {
        refuse(mod, TKV_EPLUGIN, "no entry symbol '%s' (not a turbokv plugin?)", TKV_PLUGIN_ENTRY_NAME);
        return;
    }
    const struct tkv_plugin *desc = entry(TKV_ABI_MAJOR, TKV_ABI_MINOR);
    if (!desc) {
        refuse(mod, TKV_EABI, "plugin refused core ABI %u.%u", TKV_ABI_MAJOR, TKV_ABI_MINOR);
        return;
    }
    /* Only the three header words may be read before the version check. */
    mod->ops.abi_major = desc->abi_major;
    mod->ops.abi_minor = desc->abi_minor;
    if (desc->abi_major != TKV_ABI_MAJOR) {
        /* ABI 1 addressed rows contiguously; no adapter can give such a
         * plugin block tables, so it is refused with both versions named. */
        refuse(mod, TKV_EABI, "plugin ABI %u.%u, core ABI %u.%u: %s", desc->abi_major, desc->abi_minor,
               TKV_ABI_MAJOR, TKV_ABI_MINOR,
               desc->abi_major < TKV_ABI_MAJOR ? "rebuild the plugin against turbokv_plugin.h 2.x"
                                               : "the plugin needs a newer turbokv");
        return;
    }
    if (desc->struct_size < offsetof(struct tkv_plugin, stats)) {
        refuse(mod, TKV_EPLUGIN, "descriptor of %u bytes is smaller than ABI %u.0 requires (%zu)",
               desc->struct_size, TKV_ABI_MAJOR, offsetof(struct tkv_plugin, stats));
        return;
    }
    mod->minor = desc->abi_minor > TKV_ABI_MINOR ? TKV_ABI_MINOR : desc->abi_minor;
    size_t n = desc->struct_size < sizeof mod->ops ? desc->struct_size : sizeof mod->ops;
    memcpy(&mod->ops, desc, n); /* members a shorter (older) descriptor lacks stay NULL */
    if (check_required(mod) < 0)
        return;

    int rc = module_init_once(mod);
    if (rc != TKV_OK) {
        refuse(mod, rc, "init failed: %s", tkv_last_error());
        return;
    }
    mod->initialized = 1;

    uint32_t found = 0;
    for (uint32_t i = 0; i < TKV_MAX_DEVICES; i++)
        mod->devs[i].struct_size = sizeof mod->devs[i];
    calling_plugin = mod->ops.name;
    tkv_error_clear();
    rc = mod->ops.probe(mod->devs, TKV_MAX_DEVICES, &found);
    if (rc != TKV_OK) {
        refuse(mod, rc, "probe failed: %s", tkv_last_error());
        return;
    }
    mod->n_devs = found < TKV_MAX_DEVICES ? found : TKV_MAX_DEVICES;
    for (uint32_t i = 0; i < mod->n_devs; i++) { /* never trust plugin strings to be terminated */
        mod->devs[i].name[sizeof mod->devs[i].name - 1] = '\0';
        mod->devs[i].driver[sizeof mod->devs[i].driver - 1] = '\0';
    }
    if (mod->n_devs == 0) {
        refuse(mod, TKV_ENODEV, "probe found no device");
        return;
    }
    for (uint32_t i = 0; i < mod->n_devs; i++) {
        memset(&mod->caps[i], 0, sizeof mod->caps[i]);
        mod->caps[i].struct_size = abi_args_size[mod->minor].caps;
        tkv_error_clear();
        if ((rc = mod->ops.device_caps(i, &mod->caps[i])) != TKV_OK) {
            refuse(mod, rc, "device_caps(%u) failed: %s", i, tkv_last_error());
            return;
        }
        if (caps_normalize(mod, &mod->caps[i]) != TKV_OK) {
            refuse(mod, TKV_EPLUGIN, "device %u does not report TKV_CAP_PAGED", i);
            return;
        }
    }
    mod->status = TKV_OK;
}

void tkv_module_unload(struct tkv_module *mod)
{
    if (mod->initialized)
        module_shutdown_once(mod);
    if (mod->handle)
        lt_dlclose(mod->handle);
    mod->handle = NULL;
    mod->initialized = 0;
}

/* --- scanning directories */

static int cmp_names(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

static int is_plugin_file(const char *name)
{
    size_t n = strlen(name);
    return strncmp(name, "turbokv-", 8) == 0 && n > 11 && strcmp(name + n - 3, ".so") == 0;
}

static int seen_file(const struct tkv_registry *reg, const char *file)
{
    for (uint32_t i = 0; i < reg->n; i++)
        if (strcmp(reg->mods[i].file, file) == 0)
            return 1;
    return 0;
}

/* A plugin runs with the host's privileges: one that another user could have
 * written (the file, or the directory it lies in, writable by others) is
 * refused with the reason, never loaded. */
static const char *unsafe_reason(const char *dir, const char *path)
{
    struct stat st;
    if (stat(dir, &st) == 0 && (st.st_mode & S_IWOTH))
        return "its directory is writable by other users";
    if (stat(path, &st) != 0)
        return NULL; /* lt_dlopen reports it */
    if (st.st_mode & S_IWOTH)
        return "the file is writable by other users";
    if (!S_ISREG(st.st_mode))
        return "not a regular file";
    return NULL;
}

static int scan_dir(struct tkv_registry *reg, const char *dir, const char *only)
{
    DIR *d = opendir(dir);
    if (!d)
        return TKV_OK; /* a missing directory on the path is not an error */
    char **names = NULL;
    size_t n = 0, cap = 0;
    struct dirent *e;
    int rc = TKV_OK;
    while ((e = readdir(d))) {
        if (!is_plugin_file(e->d_name))
            continue;
        if (only && (strncmp(e->d_name + 8, only, strlen(only)) != 0 || strcmp(e->d_name + 8 + strlen(only), ".so") != 0))
            continue;
        if (n == cap) {
            cap = cap ? cap * 2 : 8;
            char **grown = realloc(names, cap * sizeof *names);
            if (!grown) {
                rc = tkv_error(TKV_ENOMEM, "out of memory scanning '%s'", dir);
                goto out;
            }
            names = grown;
        }
        if (!(names[n] = strdup(e->d_name))) {
            rc = tkv_error(TKV_ENOMEM, "out of memory scanning '%s'", dir);
            goto out;
        }
        n++;
    }
    /* readdir order is filesystem order: sort so every run loads the same way */
    if (n > 1)
        qsort(names, n, sizeof *names, cmp_names);
    for (size_t i = 0; i < n; i++) {
        if (seen_file(reg, names[i])) {
            tkv_log(TKV_LOG_DEBUG, "plugin %s/%s shadowed by an earlier directory", dir, names[i]);
            continue;
        }
        struct tkv_module *grown = realloc(reg->mods, (reg->n + 1) * sizeof *reg->mods);
        if (!grown) {
            rc = tkv_error(TKV_ENOMEM, "out of memory loading plugins");
            goto out;
        }
        reg->mods = grown;
        char path[1024];
        snprintf(path, sizeof path, "%s/%s", dir, names[i]);
        struct tkv_module *m = &reg->mods[reg->n];
        const char *unsafe = unsafe_reason(dir, path);
        if (unsafe) {
            memset(m, 0, sizeof *m);
            snprintf(m->path, sizeof m->path, "%s", path);
            snprintf(m->file, sizeof m->file, "%s", names[i]);
            refuse(m, TKV_EPLUGIN, "not loaded: %s", unsafe);
        } else
            tkv_module_load(m, path);
        if (m->status == TKV_OK)
            tkv_log(TKV_LOG_DEBUG, "plugin %s (%s): accepted, %u device(s)", m->ops.name, path, m->n_devs);
        else
            tkv_log(TKV_LOG_INFO, "plugin %s: refused: %s", path, m->message);
        reg->n++;
    }
out:
    for (size_t i = 0; i < n; i++)
        free(names[i]);
    free(names);
    closedir(d);
    return rc;
}

static void registry_free_locked(struct tkv_registry *reg)
{
    for (uint32_t i = 0; i < reg->n; i++)
        tkv_module_unload(&reg->mods[i]);
    free(reg->mods);
    reg->mods = NULL;
    reg->n = 0;
    lt_dlexit();
}

int tkv_registry_scan(struct tkv_registry *reg, const char *const *dirs, const char *only)
{
    memset(reg, 0, sizeof *reg);
    pthread_mutex_lock(&discovery_lock);
    if (lt_dlinit() != 0) {
        pthread_mutex_unlock(&discovery_lock);
        return tkv_error(TKV_EPLUGIN, "libltdl initialisation failed: %s", lt_dlerror());
    }
    int rc = TKV_OK;
    for (size_t i = 0; dirs[i] && rc == TKV_OK; i++) {
        size_t used = strlen(reg->searched);
        snprintf(reg->searched + used, sizeof reg->searched - used, "%s%s", used ? ":" : "", dirs[i]);
        rc = scan_dir(reg, dirs[i], only);
    }
    if (rc != TKV_OK)
        registry_free_locked(reg);
    pthread_mutex_unlock(&discovery_lock);
    return rc;
}

void tkv_registry_free(struct tkv_registry *reg)
{
    pthread_mutex_lock(&discovery_lock);
    registry_free_locked(reg);
    pthread_mutex_unlock(&discovery_lock);
}

/* --- the device and the call wrappers */

/* Runs one plugin call with the plugin named in logs and errors. */
#define PLUGIN_CALL(d, call)                                                                       \
    do {                                                                                           \
        calling_plugin = (d)->mod->ops.name;                                                       \
        tkv_error_clear();                                                                         \
        int rc_ = (call);                                                                          \
        if (rc_ != TKV_OK) {                                                                       \
            if (!tkv_last_error()[0])                                                              \
                tkv_error(rc_, "failed without detail");                                           \
            tkv_error_prefix("plugin %s", (d)->mod->ops.name);                                     \
        }                                                                                          \
        return rc_;                                                                                \
    } while (0)

/* The call trace at log level debug: one line per plugin op. */
#define TRACE(d, ...)                                                                              \
    do {                                                                                           \
        if (tkv_log_get_level() >= TKV_LOG_DEBUG)                                                  \
            trace((d), __VA_ARGS__);                                                               \
    } while (0)

static void trace(const struct tkv_device *d, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void trace(const struct tkv_device *d, const char *fmt, ...)
{
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    tkv_log(TKV_LOG_DEBUG, "call %s.%s", d->mod->ops.name, msg);
}

static int open_call(struct tkv_device *d, const struct tkv_open_params *p)
{
    return d->mod->ops.open(p, &d->dev);
}

int tkv_device_describe_host(struct tkv_module *mod, const struct tkv_host_device *host,
                             struct tkv_device_info *info, struct tkv_device_caps *caps)
{
    memset(info, 0, sizeof *info);
    memset(caps, 0, sizeof *caps);
    if (mod->minor < 2 || !mod->ops.host_device)
        return tkv_error(TKV_EUNSUPPORTED,
                         "backend %s cannot open on the host's device: plugin ABI %u.%u has no host_device op "
                         "(ABI 2.2, TKV_CAP_HOST_DEVICE)",
                         mod->ops.name, TKV_ABI_MAJOR, mod->ops.abi_minor);
    info->struct_size = sizeof *info;
    caps->struct_size = abi_args_size[mod->minor].caps;
    calling_plugin = mod->ops.name;
    tkv_error_clear();
    int rc = mod->ops.host_device(host, info, caps);
    if (rc != TKV_OK) {
        if (!tkv_last_error()[0])
            tkv_error(rc, "failed without detail");
        tkv_error_prefix("plugin %s: host_device", mod->ops.name);
        return rc;
    }
    info->name[sizeof info->name - 1] = '\0';
    info->driver[sizeof info->driver - 1] = '\0';
    if (caps_normalize(mod, caps) != TKV_OK)
        return tkv_error(TKV_EPLUGIN, "plugin %s: the host's device %s does not report TKV_CAP_PAGED", mod->ops.name,
                         info->name);
    if (!(caps->features & TKV_CAP_HOST_DEVICE))
        return tkv_error(TKV_EUNSUPPORTED, "plugin %s cannot open on the host's device %s (no TKV_CAP_HOST_DEVICE)",
                         mod->ops.name, info->name);
    return TKV_OK;
}

int tkv_device_open(struct tkv_device *d, struct tkv_module *mod, uint32_t index, uint32_t threads,
                    const char *cpu_isa, const struct tkv_math *math, const struct tkv_host_device *host,
                    const struct tkv_device_caps *host_caps)
{
    memset(d, 0, sizeof *d);
    d->mod = mod;
    d->index = index;
    if (!host && index >= mod->n_devs)
        return tkv_error(TKV_ENODEV, "plugin %s: device %u requested, it has %u", mod->ops.name, index,
                         mod->n_devs);
    if (host && (!host_caps || mod->minor < 2))
        return tkv_error(TKV_EINVAL, "plugin %s: open on the host's device without its capabilities", mod->ops.name);
    if (!math)
        return tkv_error(TKV_EINVAL, "plugin %s: open without math tables", mod->ops.name);
    struct tkv_open_params p = {
        .struct_size = abi_args_size[mod->minor].open, .device_index = index, .threads = threads, .math = math,
        .cpu_isa = cpu_isa, .host = host,
    };
    if (host) {
        d->host_caps = *host_caps;
        d->caps = &d->host_caps;
        d->host_backend = host->backend;
        TRACE(d, "open(the host's device, backend tag %u, threads %u)", host->backend, threads);
    } else {
        d->caps = &mod->caps[index];
        TRACE(d, "open(device %u, threads %u)", index, threads);
    }
    PLUGIN_CALL(d, open_call(d, &p));
}

void tkv_device_close(struct tkv_device *d)
{
    if (d->mod && d->dev) {
        calling_plugin = d->mod->ops.name;
        TRACE(d, "close()");
        d->mod->ops.close(d->dev);
    }
    d->dev = NULL;
}

int tkv_dev_alloc(struct tkv_device *d, uint64_t bytes, struct tkv_dbuf *buf)
{
    buf->h = NULL;
    buf->size = 0;
    if (bytes == 0)
        return tkv_error(TKV_EINVAL, "buffer_alloc: 0 bytes");
    if (d->caps->max_buffer_bytes && bytes > d->caps->max_buffer_bytes)
        return tkv_error(TKV_ENOMEM, "buffer of %llu bytes exceeds the device's largest buffer (%llu bytes)",
                         (unsigned long long)bytes, (unsigned long long)d->caps->max_buffer_bytes);
    TRACE(d, "buffer_alloc(%llu)", (unsigned long long)bytes);
    calling_plugin = d->mod->ops.name;
    tkv_error_clear();
    int rc = d->mod->ops.buffer_alloc(d->dev, bytes, &buf->h);
    if (rc == TKV_OK && !buf->h)
        rc = tkv_error(TKV_EDEVICE, "returned no buffer");
    if (rc != TKV_OK) {
        if (!tkv_last_error()[0])
            tkv_error(rc, "failed without detail");
        tkv_error_prefix("plugin %s: buffer_alloc(%llu bytes)", d->mod->ops.name, (unsigned long long)bytes);
        buf->h = NULL;
        return rc;
    }
    buf->size = bytes;
    return TKV_OK;
}

void tkv_dev_free(struct tkv_device *d, struct tkv_dbuf *buf)
{
    if (buf->h) {
        calling_plugin = d->mod->ops.name;
        TRACE(d, "buffer_free(%llu)", (unsigned long long)buf->size);
        d->mod->ops.buffer_free(d->dev, buf->h);
    }
    buf->h = NULL;
    buf->size = 0;
}

static int check_range(const struct tkv_dbuf *b, uint64_t off, uint64_t bytes, const char *op)
{
    if (!b->h)
        return tkv_error(TKV_EINVAL, "%s: NULL buffer", op);
    if (bytes == 0 || off > b->size || bytes > b->size - off)
        return tkv_error(TKV_ERANGE, "%s: %llu bytes at offset %llu outside the %llu-byte buffer", op,
                         (unsigned long long)bytes, (unsigned long long)off, (unsigned long long)b->size);
    return TKV_OK;
}

int tkv_dev_write(struct tkv_device *d, const struct tkv_dbuf *buf, uint64_t off, const void *src, uint64_t bytes)
{
    int rc = check_range(buf, off, bytes, "buffer_write");
    if (rc != TKV_OK)
        return rc;
    TRACE(d, "buffer_write(%llu bytes at %llu)", (unsigned long long)bytes, (unsigned long long)off);
    PLUGIN_CALL(d, d->mod->ops.buffer_write(d->dev, buf->h, off, src, bytes));
}

int tkv_dev_read(struct tkv_device *d, const struct tkv_dbuf *buf, uint64_t off, void *dst, uint64_t bytes)
{
    int rc = check_range(buf, off, bytes, "buffer_read");
    if (rc != TKV_OK)
        return rc;
    TRACE(d, "buffer_read(%llu bytes at %llu)", (unsigned long long)bytes, (unsigned long long)off);
    PLUGIN_CALL(d, d->mod->ops.buffer_read(d->dev, buf->h, off, dst, bytes));
}

#define STAGING (1u << 20)

int tkv_dev_copy(struct tkv_device *d, const struct tkv_dbuf *dst, uint64_t dst_off, const struct tkv_dbuf *src,
                 uint64_t src_off, uint64_t bytes)
{
    int rc;
    if ((rc = check_range(dst, dst_off, bytes, "buffer_copy")) != TKV_OK ||
        (rc = check_range(src, src_off, bytes, "buffer_copy")) != TKV_OK)
        return rc;
    if (dst->h == src->h && dst_off < src_off + bytes && src_off < dst_off + bytes)
        return tkv_error(TKV_EINVAL, "buffer_copy: overlapping ranges");
    if (d->mod->ops.buffer_copy) {
        TRACE(d, "buffer_copy(%llu bytes, %llu -> %llu)", (unsigned long long)bytes, (unsigned long long)src_off,
              (unsigned long long)dst_off);
        PLUGIN_CALL(d, d->mod->ops.buffer_copy(d->dev, dst->h, dst_off, src->h, src_off, bytes));
    }
    /* no device copy: through host memory */
    uint8_t *stage = malloc(bytes < STAGING ? (size_t)bytes : STAGING);
    if (!stage)
        return tkv_error(TKV_ENOMEM, "out of memory copying a buffer");
    for (uint64_t done = 0; done < bytes && rc == TKV_OK; done += STAGING) {
        uint64_t n = bytes - done < STAGING ? bytes - done : STAGING;
        if ((rc = tkv_dev_read(d, src, src_off + done, stage, n)) == TKV_OK)
            rc = tkv_dev_write(d, dst, dst_off + done, stage, n);
    }
    free(stage);
    return rc;
}

static int append_checked(struct tkv_device *d, const struct tkv_dbuf *buf, struct tkv_append_args *a)
{
    a->struct_size = abi_args_size[d->mod->minor].append;
    a->pool.buf = buf->h;
    return tkv_validate_append(d->caps, buf, a);
}

static int append_call(struct tkv_device *d, const struct tkv_append_args *a)
{
    TRACE(d, "quantize_append(%s, %u tokens x %u heads at %u, block_tokens %u, flags %u)",
          tkv_type_name(a->pool.fmt.type), a->n_tokens, a->n_heads, a->first_pos, a->pool.block_tokens, a->flags);
    PLUGIN_CALL(d, d->mod->ops.quantize_append(d->dev, a));
}

/* A checked pair: one quantize_append_pair, or the two appends in order. */
static int pair_call(struct tkv_device *d, const struct tkv_append_args *k, const struct tkv_append_args *v)
{
    if (d->mod->minor >= 6 && d->mod->ops.quantize_append_pair) {
        TRACE(d, "quantize_append_pair(%s, %s, %u tokens x %u heads at %u, block_tokens %u)",
              tkv_type_name(k->pool.fmt.type), tkv_type_name(v->pool.fmt.type), k->n_tokens, k->n_heads,
              k->first_pos, k->pool.block_tokens);
        PLUGIN_CALL(d, d->mod->ops.quantize_append_pair(d->dev, k, v));
    }
    int rc = append_call(d, k);
    return rc != TKV_OK ? rc : append_call(d, v);
}

int tkv_dev_append_pair(struct tkv_device *d, const struct tkv_dbuf *kbuf, struct tkv_append_args *k,
                        const struct tkv_dbuf *vbuf, struct tkv_append_args *v)
{
    const int pair = d->mod->minor >= 5; /* the word was reserved (0) before 2.5 */
    k->flags = pair ? TKV_APPEND_PAIR_FIRST : 0;
    v->flags = pair ? TKV_APPEND_PAIR_SECOND : 0;
    int rc = append_checked(d, kbuf, k);
    if (rc == TKV_OK)
        rc = append_checked(d, vbuf, v);
    return rc != TKV_OK ? rc : pair_call(d, k, v);
}

static int attention_checked(struct tkv_device *d, const struct tkv_dbuf *k, const struct tkv_dbuf *v,
                             struct tkv_attention_args *a)
{
    a->struct_size = abi_args_size[d->mod->minor].attention;
    a->k.buf = k->h;
    a->v.buf = v->h;
    return tkv_validate_attention(d->caps, k, v, a);
}

static int attention_call(struct tkv_device *d, const struct tkv_attention_args *a)
{
    TRACE(d, "attention(K %s, V %s, %u seqs, %u queries x %u heads, max n_ctx %u, window %u, softcap %g, lse %s)",
          tkv_type_name(a->k.fmt.type), tkv_type_name(a->v.fmt.type), a->n_seqs, a->n_q_total, a->n_q_heads,
          a->max_n_ctx, a->window, (double)a->softcap, a->lse ? "yes" : "no");
    PLUGIN_CALL(d, d->mod->ops.attention(d->dev, a));
}

int tkv_dev_attention(struct tkv_device *d, const struct tkv_dbuf *k, const struct tkv_dbuf *v,
                      struct tkv_attention_args *a)
{
    int rc = attention_checked(d, k, v, a);
    return rc != TKV_OK ? rc : attention_call(d, a);
}

int tkv_dev_append_attention(struct tkv_device *d, const struct tkv_dbuf *kbuf, struct tkv_append_args *k,
                             const struct tkv_dbuf *vbuf, struct tkv_append_args *v, struct tkv_attention_args *a)
{
    /* the pair and the attention checked before either runs */
    k->flags = TKV_APPEND_PAIR_FIRST;
    v->flags = TKV_APPEND_PAIR_SECOND;
    int rc = append_checked(d, kbuf, k);
    if (rc == TKV_OK)
        rc = append_checked(d, vbuf, v);
    if (rc == TKV_OK)
        rc = attention_checked(d, kbuf, vbuf, a);
    if (rc == TKV_OK)
        rc = tkv_validate_append_attention(k, v, a);
    if (rc != TKV_OK)
        return rc;
    if (d->mod->minor >= 7 && d->mod->ops.append_attention) {
        TRACE(d, "append_attention(K %s, V %s, %u tokens x %u heads at %u, %u query heads, window %u)",
              tkv_type_name(k->pool.fmt.type), tkv_type_name(v->pool.fmt.type), k->n_tokens, k->n_heads,
              k->first_pos, a->n_q_heads, a->window);
        PLUGIN_CALL(d, d->mod->ops.append_attention(d->dev, k, v, a));
    }
    rc = pair_call(d, k, v);
    return rc != TKV_OK ? rc : attention_call(d, a);
}

int tkv_dev_set_command_buffer(struct tkv_device *d, void *command_buffer)
{
    TRACE(d, "set_command_buffer(%s)", command_buffer ? "set" : "NULL");
    PLUGIN_CALL(d, d->mod->ops.set_command_buffer(d->dev, command_buffer));
}

int tkv_dev_dequantize(struct tkv_device *d, const struct tkv_dbuf *buf, struct tkv_dequant_args *a)
{
    a->struct_size = abi_args_size[d->mod->minor].dequant;
    a->pool.buf = buf->h;
    int rc = tkv_validate_dequant(d->caps, buf, a);
    if (rc != TKV_OK)
        return rc;
    TRACE(d, "dequantize(%s, %u tokens x %u heads at %u)", tkv_type_name(a->pool.fmt.type), a->n_tokens, a->n_heads,
          a->first_pos);
    PLUGIN_CALL(d, d->mod->ops.dequantize(d->dev, a));
}
