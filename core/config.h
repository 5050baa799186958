/* SPDX-License-Identifier: MIT */
/*
 * Configuration: defaults, then the YAML file, then TURBO_* environment
 * variables, then explicit API options. Every key is documented, with its
 * default, in etc/turbokv.yaml; tests/test_config.c checks that file parses
 * to exactly the defaults below.
 *
 * Values are case-insensitive and stored lower case (backend: Vulkan is
 * stored as "vulkan"), except plugin_path, which is free text.
 */
#ifndef TKV_CORE_CONFIG_H
#define TKV_CORE_CONFIG_H

#include <stdint.h>

#include "turbokv.h"

/* Keys, in display order. */
enum tkv_config_key {
    TKV_CFG_BACKEND,            /* backend: auto or a plugin name         TURBO_BACKEND */
    TKV_CFG_DEVICE,             /* device: auto|0..255                         TURBO_DEVICE */
    TKV_CFG_PLUGIN_PATH,        /* plugin_path: dirs separated by ':'     TURBO_PLUGIN_PATH */
    TKV_CFG_SCHEME,             /* scheme: auto|turbo3|k8v4|...           TURBO_SCHEME */
    TKV_CFG_K_TYPE,             /* k_type: "" (follow scheme) or a type   TURBO_K_TYPE */
    TKV_CFG_V_TYPE,             /* v_type: same                           TURBO_V_TYPE */
    TKV_CFG_SPARSE_V,           /* sparse_v: bool                         TURBO_SPARSE_V */
    TKV_CFG_SPARSE_V_THRESHOLD, /* sparse_v_threshold: float in (0, 1)    TURBO_SPARSE_V_THRESHOLD */
    TKV_CFG_LAYER_ADAPTIVE,     /* layer_adaptive: 0,1,2,5,6,7            TURBO_LAYER_ADAPTIVE */
    TKV_CFG_LAYERS,             /* layers: per-layer K/V types            TURBO_LAYERS */
    TKV_CFG_AUTO_ASYMMETRIC,    /* auto_asymmetric: bool                  TURBO_AUTO_ASYMMETRIC */
    TKV_CFG_NORM_CORRECTION,    /* norm_correction: bool                  TURBO_NORM_CORRECTION */
    TKV_CFG_ROTATION,           /* rotation: wht|dense|none               TURBO_ROTATION */
    TKV_CFG_THREADS,            /* threads: 0 (all cores)..1024           TURBO_THREADS */
    TKV_CFG_LOG,                /* log: error|warn|info|debug             TURBO_LOG */
    TKV_CFG_CPU_ISA,            /* cpu_isa: auto|avx512|avx2|neon|scalar|reference  TURBO_CPU_ISA */
    TKV_CFG_COUNT
};

/* The most layers a cache may have (tkv_cache_create). */
#define TKV_MAX_LAYERS 4096u

/* The `layers` key: K/V types for named layers, overriding the scheme,
 * k_type/v_type and layer_adaptive there (core/policy.c). */
#define TKV_MAX_LAYER_RULES 64u

struct tkv_layer_rule {
    uint32_t first, last;    /* layers first..last, inclusive */
    uint32_t k_type, v_type; /* enum tkv_type, or TKV_TYPE_FROM_CONFIG: left as it is */
    char origin[256];        /* where it was written: "FILE:LINE:COL", "TURBO_LAYERS item 2" */
};

struct tkv_layer_rules {
    uint32_t n;
    struct tkv_layer_rule rule[TKV_MAX_LAYER_RULES]; /* no two overlap */
};

struct tkv_config_meta {
    uint32_t source;  /* enum tkv_config_source */
    char origin[256]; /* "default", "/path/file.yaml:12:3", "TURBO_X", "API" */
};

struct tkv_config {
    char backend[64];         /* "auto" or a plugin name, [a-z0-9][a-z0-9_-]{0,62} */
    uint32_t device;          /* TKV_DEVICE_AUTO: the backend's best-scoring device */
    char plugin_path[1024];
    char scheme[32];          /* validated scheme name */
    char k_type[16];          /* "" or a type name */
    char v_type[16];
    int sparse_v;
    float sparse_v_threshold;
    int layer_adaptive;
    struct tkv_layer_rules layers;
    int auto_asymmetric;
    int norm_correction;
    uint32_t rotation;        /* enum tkv_rotation */
    uint32_t threads;
    int log_level;            /* enum tkv_log_level */
    int cpu_isa;              /* index into tkv_cpu_isa_words */
    struct tkv_config_meta meta[TKV_CFG_COUNT];
};

#define TKV_DEVICE_AUTO 0xffffffffu

/* The cpu plugin's kernel levels, by cpu_isa value (the plugin checks that
 * the CPU runs the one asked for). */
#define TKV_CPU_ISA_COUNT 6
extern const char *const tkv_cpu_isa_words[TKV_CPU_ISA_COUNT];

/* Fills cfg with the defaults. */
void tkv_config_defaults(struct tkv_config *cfg);

/* The largest config file read, in bytes. */
#define TKV_CONFIG_FILE_MAX (1u << 20)

/* Applies a YAML file. Unknown keys, wrong types, out-of-range values and
 * syntax errors fail with TKV_ECONFIG and a message naming file:line:column
 * and the key; cfg is unchanged on failure. path must name a regular file
 * (a directory, FIFO or device fails with TKV_EIO at once, without reading
 * or blocking) of at most TKV_CONFIG_FILE_MAX bytes (larger: TKV_ECONFIG). */
int tkv_config_apply_file(struct tkv_config *cfg, const char *path);

/* The same; with secure set (a privileged process: getauxval(AT_SECURE)),
 * a message about the file's content never quotes it - no key, no value,
 * no suggestion - only "FILE:LINE: kind of error (details withheld in a
 * privileged process)". The file may be one the user cannot read. */
int tkv_config_apply_file_secure(struct tkv_config *cfg, const char *path, int secure);

/* Applies TURBO_* variables (getenv), validated like the file; a bad value
 * fails with TKV_ECONFIG naming the variable, the value and what is
 * accepted. An empty variable counts as unset. cfg is unchanged on failure. */
int tkv_config_apply_env(struct tkv_config *cfg);

/* Sets one key from text (used for env, API options and tests); origin
 * names where the text came from, for messages and display. A bad value
 * fails with TKV_ECONFIG: "ORIGIN: key 'k': value 'v': expected ..." (or
 * "... value 'v' out of range ..."); with TKV_SOURCE_ENV, origin is the
 * variable and the message reads "TURBO_X=v: expected ...". */
int tkv_config_set(struct tkv_config *cfg, enum tkv_config_key key, const char *text,
                   uint32_t source, const char *origin);

/* Key metadata. */
const char *tkv_config_key_name(enum tkv_config_key key);
const char *tkv_config_key_env(enum tkv_config_key key);
/* The effective value as text. */
void tkv_config_format(const struct tkv_config *cfg, enum tkv_config_key key, char *buf, uint32_t size);

/* Scheme names: plain type names (turbo3 = K and V turbo3), "kXvY" with X, Y
 * in {32, 16, 8, 4, 3, 2} meaning f32, f16, q8_0, turbo4, turbo3, turbo2
 * (k8v4 = q8_0 keys + turbo4 values), and "auto". Returns TKV_OK and the two
 * types (auto: both TKV_TYPE_FROM_CONFIG), or TKV_EINVAL. */
int tkv_scheme_parse(const char *name, uint32_t *k_type, uint32_t *v_type);

#endif
