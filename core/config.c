/* SPDX-License-Identifier: MIT */
/*
 * Configuration: the keys, their validation, the YAML file and the TURBO_*
 * environment.
 *
 * One table, keys[], is the only place that knows the keys: YAML name,
 * variable, how the text is validated, where the value is stored, default.
 * Every value - from the file, the environment, the API and the defaults
 * themselves - goes through tkv_config_set(), so the file and the
 * environment accept exactly the same values and report them the same way.
 */
#include "config.h"

#include <assert.h>
#include <ctype.h>
#include <errno.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>
#include <yaml.h>

#include "error.h"
#include "turbokv_plugin.h" /* enum tkv_log_level */

/* How the text of a value is validated, and what is stored. */
enum value_kind {
    KIND_BOOL,   /* bool_words                      -> int 0 or 1 */
    KIND_INT,    /* decimal integer in [min, max], or in the set `only` -> int */
    KIND_FLOAT,  /* number in the open interval (min, max) -> float */
    KIND_ENUM,   /* one of words[]                  -> its index, the C enum value */
    KIND_NAME,   /* a plugin name (plugin_name_ok)  -> text */
    KIND_TYPE,   /* "" or a type name               -> text */
    KIND_SCHEME, /* a name tkv_scheme_parse accepts -> text */
    KIND_TEXT,   /* any text that fits the field    -> text */
    KIND_LAYERS, /* per-layer types (see "the layers key") -> struct tkv_layer_rules */
};

struct key_desc {
    const char *name;         /* YAML key */
    const char *env;          /* TURBO_* variable */
    enum value_kind kind;
    size_t offset, size;      /* the field in struct tkv_config */
    const char *const *words; /* KIND_ENUM: the accepted words, indexed */
    size_t n_words;           /* by their C enum value (NULL: no word for a value) */
    double min, max;          /* KIND_INT: [min, max]; KIND_FLOAT: (min, max) */
    uint32_t only;            /* KIND_INT: when not 0, value v is accepted iff bit v is set */
    const char *auto_word;    /* KIND_INT: a word accepted besides numbers, stored as -1 */
    int values;               /* KIND_TYPE: a value type, so key-only types are refused */
    const char *def;          /* the default, spelled as in etc/turbokv.yaml */
};

#define WORDS(array) .words = array, .n_words = sizeof array / sizeof array[0]

/* enum tkv_rotation starts at 1: 0 means "as configured" in cache params */
static const char *const rotation_words[TKV_ROTATION_COUNT] = {
    [TKV_ROTATION_WHT] = "wht",
    [TKV_ROTATION_DENSE] = "dense",
    [TKV_ROTATION_NONE] = "none",
    [TKV_ROTATION_ROTOR] = "rotor",
};

const char *const tkv_cpu_isa_words[TKV_CPU_ISA_COUNT] = {
    "auto", "avx512", "avx2", "neon", "scalar", "reference",
};

static const char *const log_words[TKV_LOG_DEBUG + 1] = {
    [TKV_LOG_ERROR] = "error",
    [TKV_LOG_WARN] = "warn",
    [TKV_LOG_INFO] = "info",
    [TKV_LOG_DEBUG] = "debug",
};

/* Bool spellings, [i][1] true and [i][0] false. YAML 1.1 also reads y/n as
 * booleans; they are left out as too easy to write by accident. */
static const char *const bool_words[][2] = { { "0", "1" }, { "false", "true" }, { "off", "on" }, { "no", "yes" } };
#define N_BOOL_WORDS (sizeof bool_words / sizeof bool_words[0])

/* "kXvY" scheme digits, largest type first. */
static const struct {
    const char *bits;
    uint32_t type;
} scheme_bits[] = {
    { "32", TKV_TYPE_F32 },   { "16", TKV_TYPE_F16 },   { "8", TKV_TYPE_Q8_0 },
    { "4", TKV_TYPE_TURBO4 }, { "3", TKV_TYPE_TURBO3 }, { "2", TKV_TYPE_TURBO2 },
};
#define N_SCHEME_BITS (sizeof scheme_bits / sizeof scheme_bits[0])

/* Where a value lives. Integer kinds store an int; their fields are int or
 * uint32_t, which hold the nonnegative values stored here with the same
 * bytes (C11 6.2.5p9). INT_FIELD refuses a field of another size at compile
 * time (a negative array size). */
#define MEMBER_SIZE(f) sizeof(((struct tkv_config *)0)->f)
#define FIELD(f) offsetof(struct tkv_config, f), MEMBER_SIZE(f)
#define INT_FIELD(f) FIELD(f) + 0 * sizeof(char[MEMBER_SIZE(f) == sizeof(int) ? 1 : -1])

static const struct key_desc keys[TKV_CFG_COUNT] = {
    [TKV_CFG_BACKEND] = { "backend", "TURBO_BACKEND", KIND_NAME, FIELD(backend), .def = "auto" },
    [TKV_CFG_DEVICE] = { "device", "TURBO_DEVICE", KIND_INT, INT_FIELD(device), .auto_word = "auto",
                         .min = 0, .max = 255, .def = "auto" },
    [TKV_CFG_PLUGIN_PATH] = { "plugin_path", "TURBO_PLUGIN_PATH", KIND_TEXT, FIELD(plugin_path),
                              .def = "" },
    [TKV_CFG_SCHEME] = { "scheme", "TURBO_SCHEME", KIND_SCHEME, FIELD(scheme), .def = "auto" },
    [TKV_CFG_K_TYPE] = { "k_type", "TURBO_K_TYPE", KIND_TYPE, FIELD(k_type), .def = "" },
    [TKV_CFG_V_TYPE] = { "v_type", "TURBO_V_TYPE", KIND_TYPE, FIELD(v_type), .values = 1, .def = "" },
    [TKV_CFG_SPARSE_V] = { "sparse_v", "TURBO_SPARSE_V", KIND_BOOL, INT_FIELD(sparse_v),
                           .def = "true" },
    [TKV_CFG_SPARSE_V_THRESHOLD] = { "sparse_v_threshold", "TURBO_SPARSE_V_THRESHOLD", KIND_FLOAT,
                                     FIELD(sparse_v_threshold), .min = 0, .max = 1, .def = "1e-6" },
    /* 0 uniform; 1, 2, 5, 6, 7 the boundary-layer modes of the llama.cpp fork */
    [TKV_CFG_LAYER_ADAPTIVE] = { "layer_adaptive", "TURBO_LAYER_ADAPTIVE", KIND_INT,
                                 INT_FIELD(layer_adaptive), .only = 1u << 0 | 1u << 1 | 1u << 2 |
                                 1u << 5 | 1u << 6 | 1u << 7, .def = "0" },
    [TKV_CFG_LAYERS] = { "layers", "TURBO_LAYERS", KIND_LAYERS, FIELD(layers), .def = "" },
    [TKV_CFG_AUTO_ASYMMETRIC] = { "auto_asymmetric", "TURBO_AUTO_ASYMMETRIC", KIND_BOOL,
                                  INT_FIELD(auto_asymmetric), .def = "true" },
    [TKV_CFG_NORM_CORRECTION] = { "norm_correction", "TURBO_NORM_CORRECTION", KIND_BOOL,
                                  INT_FIELD(norm_correction), .def = "true" },
    [TKV_CFG_ROTATION] = { "rotation", "TURBO_ROTATION", KIND_ENUM, INT_FIELD(rotation),
                           WORDS(rotation_words), .def = "wht" },
    [TKV_CFG_THREADS] = { "threads", "TURBO_THREADS", KIND_INT, INT_FIELD(threads),
                          .min = 0, .max = 1024, .def = "0" },
    [TKV_CFG_LOG] = { "log", "TURBO_LOG", KIND_ENUM, INT_FIELD(log_level),
                      WORDS(log_words), .def = "warn" },
    [TKV_CFG_CPU_ISA] = { "cpu_isa", "TURBO_CPU_ISA", KIND_ENUM, INT_FIELD(cpu_isa),
                          WORDS(tkv_cpu_isa_words), .def = "auto" },
};

/* --- small text helpers */

/* Appends printf-style text to the string in buf, truncating at size. */
static void append(char *buf, size_t size, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static void append(char *buf, size_t size, const char *fmt, ...)
{
    size_t used = strlen(buf);
    va_list ap;
    if (used + 1 >= size)
        return;
    va_start(ap, fmt);
    vsnprintf(buf + used, size - used, fmt, ap);
    va_end(ap);
}

/* Appends "a, b, c". */
static void append_words(char *buf, size_t size, const char *const *words, size_t n)
{
    for (size_t i = 0, first = 1; i < n; i++)
        if (words[i]) {
            append(buf, size, "%s%s", first ? "" : ", ", words[i]);
            first = 0;
        }
}

/* Backend plugin names: [a-z0-9][a-z0-9_-]{0,62} once lowered, so any
 * plugin a third party ships can be named, while a name can never hold a
 * path separator, a dot or a blank (it is compared with the names plugins
 * report and quoted in messages). */
#define PLUGIN_NAME_MAX 63
_Static_assert(sizeof(((struct tkv_config *)0)->backend) == PLUGIN_NAME_MAX + 1,
               "struct tkv_config.backend holds the longest plugin name");

static int plugin_name_ok(const char *text)
{
    size_t n = strlen(text);
    if (n == 0 || n > PLUGIN_NAME_MAX || text[0] == '_' || text[0] == '-')
        return 0;
    for (size_t i = 0; i < n; i++) {
        /* ASCII ranges, not islower(): a host's locale must not widen the set */
        unsigned char c = (unsigned char)text[i];
        if (!(c >= 'a' && c <= 'z') && !(c >= '0' && c <= '9') && c != '_' && c != '-')
            return 0;
    }
    return 1;
}

/* Lowers A-Z in place (ASCII only: the host's locale must not matter). */
static void lower_ascii(char *s)
{
    for (; *s; s++)
        if (*s >= 'A' && *s <= 'Z')
            *s = (char)(*s - 'A' + 'a');
}

static int word_index(const char *const *words, size_t n, const char *text)
{
    for (size_t i = 0; i < n; i++)
        if (words[i] && strcmp(words[i], text) == 0)
            return (int)i;
    return -1;
}

/* 1 if type may store values as well as keys (the QJL types estimate inner
 * products without bias, which keys need and values, being averaged, do not:
 * for them the plain turbo type of the same bits has the lower error). */
static int value_type_ok(uint32_t type) { return !tkv_type_is_qjl(type); }

/* Appends the storage type names (the one list lives in core/types.c), the
 * value types only when values is set. */
static void append_type_names(char *buf, size_t size, int values)
{
    for (uint32_t t = 0, first = 1; t < TKV_TYPE_COUNT; t++)
        if (!values || value_type_ok(t)) {
            append(buf, size, "%s%s", first ? "" : ", ", tkv_type_name(t));
            first = 0;
        }
}

/* A value as messages quote it: long ones (a plugin_path) are cut short so
 * that what follows them, the accepted values, stays in the message. */
static void shorten(const char *text, char *buf, size_t size)
{
    if (strlen(text) < size)
        snprintf(buf, size, "%s", text);
    else
        snprintf(buf, size, "%.*s...", (int)(size - 4), text);
}

/* Strict numbers: the whole text, no leading blanks (strtol would skip
 * them), decimal only. Out-of-range magnitudes saturate and are then caught
 * by the range check, so errno is not needed. */
static int parse_long(const char *text, long *out)
{
    char *end;
    if (text[0] == '\0' || isspace((unsigned char)text[0]))
        return 0;
    *out = strtol(text, &end, 10);
    return *end == '\0';
}

static int parse_double(const char *text, double *out)
{
    char *end;
    if (text[0] == '\0' || isspace((unsigned char)text[0]))
        return 0;
    *out = strtod(text, &end);
    return *end == '\0';
}

/* --- schemes */

static void describe_scheme(char *buf, size_t size)
{
    append(buf, size, "auto, a type name (");
    append_type_names(buf, size, 1);
    append(buf, size, ") or kXvY with X, Y in ");
    for (size_t i = 0; i < N_SCHEME_BITS; i++)
        append(buf, size, "%s%s", i ? ", " : "", scheme_bits[i].bits);
}

/* The type of the n characters of "kXvY" digits at s, or -1. */
static int scheme_bits_type(const char *s, size_t n)
{
    for (size_t i = 0; i < N_SCHEME_BITS; i++)
        if (strlen(scheme_bits[i].bits) == n && memcmp(scheme_bits[i].bits, s, n) == 0)
            return (int)scheme_bits[i].type;
    return -1;
}

int tkv_scheme_parse(const char *name, uint32_t *k_type, uint32_t *v_type)
{
    char accepted[256] = "";
    uint32_t type;
    int k = -1, v = -1;
    if (!name || !k_type || !v_type)
        return tkv_error(TKV_EINVAL, "tkv_scheme_parse: name, k_type and v_type must not be NULL");
    if (strcmp(name, "auto") == 0) {
        *k_type = *v_type = TKV_TYPE_FROM_CONFIG;
        return TKV_OK;
    }
    if (tkv_type_from_name(name, &type) == TKV_OK && value_type_ok(type)) {
        k = v = (int)type;
    } else if (name[0] == 'k') {
        const char *sep = strchr(name, 'v');
        if (sep) {
            k = scheme_bits_type(name + 1, (size_t)(sep - name - 1));
            v = scheme_bits_type(sep + 1, strlen(sep + 1));
        }
    }
    if (k < 0 || v < 0) {
        describe_scheme(accepted, sizeof accepted);
        return tkv_error(TKV_EINVAL, "unknown scheme '%s': expected %s", name, accepted);
    }
    *k_type = (uint32_t)k;
    *v_type = (uint32_t)v;
    return TKV_OK;
}

/* --- the layers key: per-layer types
 *
 * In YAML, a sequence with one mapping per item:
 *   layers:
 *     - {layer: 0, k_type: q8_0, v_type: q8_0}
 *     - {layer: 1-3, v_type: turbo4}
 * As text (TURBO_LAYERS, a single YAML value, and for display) the same
 * items are FIRST[-LAST]:K_TYPE/V_TYPE separated by commas, a type left
 * empty where the item does not set it: "0:q8_0/q8_0,1-3:/turbo4".
 * Every item sets at least one type, for layers no other item names.
 */

/* Rules being read, where they come from, and why they were refused. */
struct layers_parse {
    const char *origin;
    struct tkv_layer_rules rules;
    char why[512];
};

enum layer_field { FIELD_LAYER, FIELD_K_TYPE, FIELD_V_TYPE, FIELD_ITEM };
static const char *const layer_fields[FIELD_ITEM] = { "layer", "k_type", "v_type" };

/* "N" or "FIRST-LAST": layers 0 .. TKV_MAX_LAYERS - 1, FIRST <= LAST. */
static int parse_layer_range(const char *text, uint32_t *first, uint32_t *last)
{
    char head[16];
    const char *dash = strchr(text, '-');
    long a, b;
    if (!dash) {
        if (!parse_long(text, &a))
            return 0;
        b = a;
    } else {
        size_t n = (size_t)(dash - text);
        if (n == 0 || n >= sizeof head)
            return 0;
        memcpy(head, text, n);
        head[n] = '\0';
        if (!parse_long(head, &a) || !parse_long(dash + 1, &b))
            return 0;
    }
    if (a < 0 || b < a || b >= (long)TKV_MAX_LAYERS)
        return 0;
    *first = (uint32_t)a;
    *last = (uint32_t)b;
    return 1;
}

/* One item from the texts of its fields (NULL: not given). On failure,
 * reason says why and *bad names the field at fault (FIELD_ITEM: the item). */
static int layer_rule_from_text(const char *const text[FIELD_ITEM], struct tkv_layer_rule *rule,
                                enum layer_field *bad, char *reason, size_t size)
{
    uint32_t *types[2] = { &rule->k_type, &rule->v_type };
    *rule = (struct tkv_layer_rule){ .k_type = TKV_TYPE_FROM_CONFIG, .v_type = TKV_TYPE_FROM_CONFIG };
    reason[0] = '\0';
    *bad = FIELD_ITEM;
    if (!text[FIELD_LAYER]) {
        snprintf(reason, size, "needs 'layer' (a layer index or a range FIRST-LAST)");
        return 0;
    }
    if (!parse_layer_range(text[FIELD_LAYER], &rule->first, &rule->last)) {
        *bad = FIELD_LAYER;
        snprintf(reason, size, "layer '%s': expected a layer in 0..%u or a range FIRST-LAST",
                 text[FIELD_LAYER], TKV_MAX_LAYERS - 1);
        return 0;
    }
    for (int side = 0; side < 2; side++) {
        enum layer_field f = side ? FIELD_V_TYPE : FIELD_K_TYPE;
        if (!text[f])
            continue;
        if (tkv_type_from_name(text[f], types[side]) != TKV_OK || (side && !value_type_ok(*types[side]))) {
            *bad = f;
            append(reason, size, "%s '%s': expected one of ", layer_fields[f], text[f]);
            append_type_names(reason, size, side);
            return 0;
        }
    }
    if (!text[FIELD_K_TYPE] && !text[FIELD_V_TYPE]) {
        snprintf(reason, size, "sets neither k_type nor v_type");
        return 0;
    }
    return 1;
}

/* Appends a rule unless it names a layer an earlier one does. */
static int add_layer_rule(struct tkv_layer_rules *rules, const struct tkv_layer_rule *rule, char *reason,
                          size_t size)
{
    if (rules->n == TKV_MAX_LAYER_RULES) {
        snprintf(reason, size, "more than %u items", TKV_MAX_LAYER_RULES);
        return 0;
    }
    for (uint32_t i = 0; i < rules->n; i++) {
        const struct tkv_layer_rule *o = &rules->rule[i];
        if (rule->first <= o->last && o->first <= rule->last) {
            snprintf(reason, size, "layer %u is already set by %s",
                     rule->first > o->first ? rule->first : o->first, o->origin);
            return 0;
        }
    }
    rules->rule[rules->n++] = *rule;
    return 1;
}

/* The text form; item N's origin is "ORIGIN item N". */
static int parse_layers_text(const char *text, struct layers_parse *lp)
{
    for (uint32_t item = 1; *text; item++) {
        size_t len = strcspn(text, ",");
        char buf[64], reason[400];
        const char *fields[FIELD_ITEM] = { buf, NULL, NULL };
        char *colon, *slash;
        struct tkv_layer_rule rule;
        enum layer_field bad;

        if (len >= sizeof buf) {
            snprintf(lp->why, sizeof lp->why, "item %u is too long", item);
            return 0;
        }
        memcpy(buf, text, len);
        buf[len] = '\0';
        text += len + (text[len] == ',');
        colon = strchr(buf, ':');
        slash = colon ? strchr(colon + 1, '/') : NULL;
        if (!slash) {
            snprintf(lp->why, sizeof lp->why, "item %u '%s' is not FIRST[-LAST]:K_TYPE/V_TYPE", item, buf);
            return 0;
        }
        *colon = *slash = '\0';
        fields[FIELD_K_TYPE] = colon[1] ? colon + 1 : NULL;
        fields[FIELD_V_TYPE] = slash[1] ? slash + 1 : NULL;
        if (!layer_rule_from_text(fields, &rule, &bad, reason, sizeof reason)) {
            snprintf(lp->why, sizeof lp->why, "item %u: %s", item, reason);
            return 0;
        }
        snprintf(rule.origin, sizeof rule.origin, "%s item %u", lp->origin, item);
        if (!add_layer_rule(&lp->rules, &rule, reason, sizeof reason)) {
            snprintf(lp->why, sizeof lp->why, "item %u: %s", item, reason);
            return 0;
        }
    }
    return 1;
}

/* The text form of a set of rules. */
static void format_layers(const struct tkv_layer_rules *rules, char *buf, size_t size)
{
    buf[0] = '\0';
    for (uint32_t i = 0; i < rules->n; i++) {
        const struct tkv_layer_rule *r = &rules->rule[i];
        append(buf, size, "%s%u", i ? "," : "", r->first);
        if (r->last != r->first)
            append(buf, size, "-%u", r->last);
        append(buf, size, ":%s/%s", r->k_type == TKV_TYPE_FROM_CONFIG ? "" : tkv_type_name(r->k_type),
               r->v_type == TKV_TYPE_FROM_CONFIG ? "" : tkv_type_name(r->v_type));
    }
}

/* --- validation: the one place that turns text into a value */

enum verdict { VALUE_OK, VALUE_INVALID, VALUE_OUT_OF_RANGE };

union value {
    int i;
    float f;
    const char *text; /* the input, or the canonical word of a table */
    struct layers_parse *layers; /* KIND_LAYERS: filled by validate() */
};

/* A text value must fit its field, never be cut short. */
static enum verdict text_value(const struct key_desc *d, const char *text, union value *out)
{
    if (strlen(text) >= d->size)
        return VALUE_INVALID;
    out->text = text;
    return VALUE_OK;
}

static enum verdict validate(const struct key_desc *d, const char *text, union value *out)
{
    long n;
    double x;
    int i;
    uint32_t k, v, type;

    switch (d->kind) {
    case KIND_BOOL:
        for (size_t w = 0; w < N_BOOL_WORDS; w++)
            for (int b = 0; b < 2; b++)
                if (strcmp(text, bool_words[w][b]) == 0) { /* text is lowered */
                    out->i = b;
                    return VALUE_OK;
                }
        return VALUE_INVALID;
    case KIND_INT:
        if (d->auto_word && strcmp(text, d->auto_word) == 0) {
            out->i = -1;
            return VALUE_OK;
        }
        if (!parse_long(text, &n))
            return VALUE_INVALID;
        if (d->only) {
            /* a set of modes: anything else is simply not one of them */
            if (n < 0 || n > 31 || !(d->only >> n & 1u))
                return VALUE_INVALID;
        } else if (n < d->min || n > d->max) {
            return VALUE_OUT_OF_RANGE;
        }
        out->i = (int)n;
        return VALUE_OK;
    case KIND_FLOAT:
        if (!parse_double(text, &x))
            return VALUE_INVALID;
        /* check the double first (converting an out-of-range double to float
         * is undefined), then the float it rounds to (1e-50 rounds to 0) */
        if (!(x > d->min && x < d->max))
            return VALUE_OUT_OF_RANGE;
        out->f = (float)x;
        if (!(out->f > d->min && out->f < d->max))
            return VALUE_OUT_OF_RANGE;
        return VALUE_OK;
    case KIND_ENUM:
        i = word_index(d->words, d->n_words, text);
        if (i < 0)
            return VALUE_INVALID;
        out->i = i;
        return VALUE_OK;
    case KIND_NAME:
        if (!plugin_name_ok(text))
            return VALUE_INVALID;
        return text_value(d, text, out);
    case KIND_TYPE:
        if (text[0] != '\0' && (tkv_type_from_name(text, &type) != TKV_OK ||
                                (d->values && !value_type_ok(type))))
            return VALUE_INVALID;
        return text_value(d, text, out);
    case KIND_SCHEME:
        if (tkv_scheme_parse(text, &k, &v) != TKV_OK)
            return VALUE_INVALID;
        return text_value(d, text, out);
    case KIND_TEXT:
        return text_value(d, text, out);
    case KIND_LAYERS:
        return parse_layers_text(text, out->layers) ? VALUE_OK : VALUE_INVALID;
    }
    return VALUE_INVALID;
}

/* What a key accepts, to follow "expected ". */
static void describe_accepted(const struct key_desc *d, char *buf, size_t size)
{
    buf[0] = '\0';
    switch (d->kind) {
    case KIND_BOOL:
        append(buf, size, "one of ");
        for (size_t w = 0; w < N_BOOL_WORDS; w++)
            append(buf, size, "%s%s, %s", w ? ", " : "", bool_words[w][1], bool_words[w][0]);
        break;
    case KIND_INT:
        if (d->only) {
            append(buf, size, "one of ");
            for (int v = 0, first = 1; v < 32; v++)
                if (d->only >> v & 1u) {
                    append(buf, size, "%s%d", first ? "" : ", ", v);
                    first = 0;
                }
        } else {
            append(buf, size, "%s%san integer in %g..%g", d->auto_word ? d->auto_word : "",
                   d->auto_word ? " or " : "", d->min, d->max);
        }
        break;
    case KIND_FLOAT:
        append(buf, size, "a number in (%g, %g)", d->min, d->max);
        break;
    case KIND_ENUM:
        append(buf, size, "one of ");
        append_words(buf, size, d->words, d->n_words);
        break;
    case KIND_NAME:
        append(buf, size, "auto or a plugin name: 1 to %d letters, digits, '_' or '-', the first a letter "
                          "or digit", PLUGIN_NAME_MAX);
        break;
    case KIND_TYPE:
        append(buf, size, "\"\" (follow the scheme) or one of ");
        append_type_names(buf, size, d->values);
        break;
    case KIND_SCHEME:
        describe_scheme(buf, size);
        break;
    case KIND_TEXT:
        append(buf, size, "text of at most %zu bytes", d->size - 1);
        break;
    case KIND_LAYERS:
        append(buf, size, "items FIRST[-LAST]:K_TYPE/V_TYPE separated by commas, a type left empty "
                          "where the item does not set it (\"0:q8_0/q8_0,1-3:/turbo4\")");
        break;
    }
}

/* "expected <what is accepted>" or "out of range <range>". */
static void explain(const struct key_desc *d, enum verdict verdict, char *buf, size_t size)
{
    if (verdict == VALUE_OUT_OF_RANGE) {
        snprintf(buf, size, d->kind == KIND_FLOAT ? "out of range (%g, %g)" : "out of range %g..%g",
                 d->min, d->max);
    } else {
        char accepted[256];
        describe_accepted(d, accepted, sizeof accepted);
        snprintf(buf, size, "expected %s", accepted);
    }
}

/* Environment: "TURBO_X=value: why". Elsewhere the origin says where the
 * value was written: "FILE:LINE:COL: key 'k': value 'v' out of range ...".
 * detail, when not empty, says what is wrong before what is expected. */
static int bad_value(const struct key_desc *d, const char *text, enum verdict verdict,
                     uint32_t source, const char *origin, const char *detail)
{
    char why[1024], shown[72];
    snprintf(why, sizeof why, "%s%s", detail, detail[0] ? ": " : "");
    explain(d, verdict, why + strlen(why), sizeof why - strlen(why));
    shorten(text, shown, sizeof shown);
    if (source == TKV_SOURCE_ENV)
        return tkv_error(TKV_ECONFIG, "%s=%s: %s", origin, shown, why);
    return tkv_error(TKV_ECONFIG, "%s: key '%s': value '%s'%s%s", origin, d->name, shown,
                     verdict == VALUE_OUT_OF_RANGE ? " " : ": ", why);
}

static void store(struct tkv_config *cfg, const struct key_desc *d, const union value *v)
{
    char *field = (char *)cfg + d->offset;
    switch (d->kind) {
    case KIND_BOOL:
    case KIND_INT:
    case KIND_ENUM:
        memcpy(field, &v->i, sizeof v->i);
        break;
    case KIND_FLOAT:
        memcpy(field, &v->f, sizeof v->f);
        break;
    case KIND_NAME:
    case KIND_TYPE:
    case KIND_SCHEME:
    case KIND_TEXT:
        memcpy(field, v->text, strlen(v->text) + 1); /* validate() checked it fits */
        break;
    case KIND_LAYERS:
        memcpy(field, &v->layers->rules, sizeof v->layers->rules);
        break;
    }
}

/* Stores a validated value and records where it came from. */
static void commit(struct tkv_config *cfg, enum tkv_config_key key, const union value *v, uint32_t source,
                   const char *origin)
{
    store(cfg, &keys[key], v);
    cfg->meta[key].source = source;
    snprintf(cfg->meta[key].origin, sizeof cfg->meta[key].origin, "%s", origin);
}

/* The longest value of any kind but KIND_TEXT: the layers text, at most
 * TKV_MAX_LAYER_RULES items of fewer than 64 bytes each, with commas. */
#define MAX_WORDS_TEXT (TKV_MAX_LAYER_RULES * 64)

/* Validates text for key and stores it; on failure cfg is unchanged and
 * *verdict says why (the caller formats the message, or redacts it). */
static int set_value(struct tkv_config *cfg, enum tkv_config_key key, const char *text, uint32_t source,
                     const char *origin, enum verdict *verdict, char *why, size_t why_size)
{
    const struct key_desc *d = &keys[key];
    struct layers_parse layers = { .origin = origin };
    union value v = { .layers = &layers };
    char lowered[MAX_WORDS_TEXT + 1];
    size_t len = strlen(text);

    why[0] = '\0';
    /* Every value but free text is case-insensitive (Vulkan, TURBO_LOG=DEBUG,
     * Q8_0, K8V4) and stored lower case, so what is stored, displayed and
     * compared later has one spelling. */
    if (d->kind != KIND_TEXT) {
        if (len > MAX_WORDS_TEXT) {
            *verdict = VALUE_INVALID;
            snprintf(why, why_size, "longer than %u bytes", MAX_WORDS_TEXT);
            return TKV_ECONFIG;
        }
        memcpy(lowered, text, len + 1);
        lower_ascii(lowered);
        text = lowered;
    }
    *verdict = validate(d, text, &v);
    if (*verdict != VALUE_OK) {
        snprintf(why, why_size, "%s", layers.why);
        return TKV_ECONFIG;
    }
    commit(cfg, key, &v, source, origin);
    return TKV_OK;
}

int tkv_config_set(struct tkv_config *cfg, enum tkv_config_key key, const char *text,
                   uint32_t source, const char *origin)
{
    enum verdict verdict;
    char why[512];

    if (!cfg || !text || !origin || (unsigned)key >= TKV_CFG_COUNT || source > TKV_SOURCE_API)
        return tkv_error(TKV_EINVAL, "tkv_config_set: invalid argument (key %d, source %u)",
                         (int)key, source);
    if (set_value(cfg, key, text, source, origin, &verdict, why, sizeof why) != TKV_OK)
        return bad_value(&keys[key], text, verdict, source, origin, why);
    return TKV_OK;
}

void tkv_config_defaults(struct tkv_config *cfg)
{
    if (!cfg)
        return;
    memset(cfg, 0, sizeof *cfg);
    for (int k = 0; k < TKV_CFG_COUNT; k++) {
        /* Defaults pass the same validation as user input; tests/test_config.c
         * checks every one of them arrives. */
        int rc = tkv_config_set(cfg, (enum tkv_config_key)k, keys[k].def, TKV_SOURCE_DEFAULT, "default");
        assert(rc == TKV_OK);
        (void)rc;
    }
}

const char *tkv_config_key_name(enum tkv_config_key key)
{
    return (unsigned)key < TKV_CFG_COUNT ? keys[key].name : NULL;
}

const char *tkv_config_key_env(enum tkv_config_key key)
{
    return (unsigned)key < TKV_CFG_COUNT ? keys[key].env : NULL;
}

/* The shortest text that reads back as f: %g alone rounds to 6 digits, so
 * a threshold of 0.9999999 (stored as 0.99999988f) would show as "1", a
 * value the key refuses. 9 digits always suffice for a float. */
static void format_float(float f, char *buf, size_t size)
{
    char text[32];
    for (int digits = 6; digits <= 9; digits++) {
        snprintf(text, sizeof text, "%.*g", digits, (double)f);
        if (strtof(text, NULL) == f)
            break;
    }
    snprintf(buf, size, "%s", text);
}

void tkv_config_format(const struct tkv_config *cfg, enum tkv_config_key key, char *buf, uint32_t size)
{
    const struct key_desc *d;
    const char *field;
    int i;
    float f;

    if (!buf || size == 0)
        return;
    buf[0] = '\0';
    if (!cfg || (unsigned)key >= TKV_CFG_COUNT)
        return;
    d = &keys[key];
    field = (const char *)cfg + d->offset;
    switch (d->kind) {
    case KIND_BOOL:
        memcpy(&i, field, sizeof i);
        snprintf(buf, size, "%s", i ? "true" : "false");
        break;
    case KIND_INT:
        memcpy(&i, field, sizeof i);
        if (i == -1 && d->auto_word)
            snprintf(buf, size, "%s", d->auto_word);
        else
            snprintf(buf, size, "%d", i);
        break;
    case KIND_FLOAT:
        memcpy(&f, field, sizeof f);
        format_float(f, buf, size);
        break;
    case KIND_ENUM:
        /* the field is public: a caller may have stored a value no word names */
        memcpy(&i, field, sizeof i);
        if (i >= 0 && (size_t)i < d->n_words && d->words[i])
            snprintf(buf, size, "%s", d->words[i]);
        else
            snprintf(buf, size, "%d", i);
        break;
    case KIND_NAME:
    case KIND_TYPE:
    case KIND_SCHEME:
    case KIND_TEXT:
        snprintf(buf, size, "%s", field);
        break;
    case KIND_LAYERS:
        format_layers(&cfg->layers, buf, size);
        break;
    }
}

/* --- environment */

int tkv_config_apply_env(struct tkv_config *cfg)
{
    struct tkv_config next;
    if (!cfg)
        return tkv_error(TKV_EINVAL, "tkv_config_apply_env: cfg must not be NULL");
    next = *cfg;
    for (int k = 0; k < TKV_CFG_COUNT; k++) {
        const char *text = getenv(keys[k].env);
        /* An empty variable counts as unset, so `TURBO_X= cmd` restores the
         * file's value instead of failing (documented in etc/turbokv.yaml). */
        if (!text || text[0] == '\0')
            continue;
        int rc = tkv_config_set(&next, (enum tkv_config_key)k, text, TKV_SOURCE_ENV, keys[k].env);
        if (rc != TKV_OK)
            return rc;
    }
    *cfg = next;
    return TKV_OK;
}

/* --- YAML file */

struct yaml_reader {
    const char *path;
    const char *data; /* the whole file, for positions of encoding errors */
    yaml_parser_t parser;
    yaml_event_t event; /* the current event, when have_event */
    int have_event;
    int secure;         /* messages must not quote the file (see file_error) */
};

/* A message about the file at mark: "FILE:LINE:COL: what" with the detail
 * fmt gives. In a privileged process the file may be one the user could
 * not read (TURBO_CONFIG=/etc/shadow in a setuid program), so a message
 * must not carry its keys or values: then it is only "FILE:LINE: kind",
 * kind being fixed text that never holds anything read from the file. */
static int file_error(const struct yaml_reader *r, yaml_mark_t mark, const char *kind, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static int file_error(const struct yaml_reader *r, yaml_mark_t mark, const char *kind, const char *fmt, ...)
{
    char what[768];
    va_list ap;
    if (r->secure)
        return tkv_error(TKV_ECONFIG, "%s:%zu: %s (details withheld in a privileged process)", r->path,
                         mark.line + 1, kind);
    va_start(ap, fmt);
    vsnprintf(what, sizeof what, fmt, ap);
    va_end(ap);
    return tkv_error(TKV_ECONFIG, "%s:%zu:%zu: %s", r->path, mark.line + 1, mark.column + 1, what);
}

static int syntax_error(const struct yaml_reader *r)
{
    const yaml_parser_t *p = &r->parser;
    yaml_mark_t mark = p->problem_mark;

    switch (p->error) {
    case YAML_MEMORY_ERROR:
        return tkv_error(TKV_ENOMEM, "%s: out of memory while parsing", r->path);
    case YAML_READER_ERROR:
        /* encoding errors come with a byte offset, not a line and column */
        mark.line = mark.column = 0;
        for (size_t i = 0; i < p->problem_offset; i++) {
            mark.column++;
            if (r->data[i] == '\n') {
                mark.line++;
                mark.column = 0;
            }
        }
        return file_error(r, mark, "invalid text (not UTF-8, or a control character)", "invalid text: %s",
                          p->problem);
    default:
        if (p->context)
            return file_error(r, mark, "YAML syntax error", "YAML syntax error: %s (%s at line %zu)", p->problem,
                              p->context,
                              p->context_mark.line + 1);
        return file_error(r, mark, "YAML syntax error", "YAML syntax error: %s", p->problem);
    }
}

static int next_event(struct yaml_reader *r)
{
    if (r->have_event)
        yaml_event_delete(&r->event);
    r->have_event = yaml_parser_parse(&r->parser, &r->event);
    return r->have_event ? TKV_OK : syntax_error(r);
}

/* For messages: what a node event starts. */
static const char *event_noun(const yaml_event_t *e)
{
    switch (e->type) {
    case YAML_SEQUENCE_START_EVENT: return "a sequence";
    case YAML_MAPPING_START_EVENT: return "a mapping";
    case YAML_ALIAS_EVENT: return "an alias";
    default: return "a scalar";
    }
}

static const char *scalar_text(const yaml_event_t *e) { return (const char *)e->data.scalar.value; }

/* YAML 1.1 null: an empty or ~/null plain scalar ("key:" with nothing after). */
static int is_null(const yaml_event_t *e)
{
    static const char *const nulls[] = { "", "~", "null", "Null", "NULL" };
    return e->type == YAML_SCALAR_EVENT && e->data.scalar.plain_implicit &&
           word_index(nulls, sizeof nulls / sizeof nulls[0], scalar_text(e)) >= 0;
}

/* A quoted string may not stand for a number or a bool ("3" is not 3). */
static int kind_is_typed(enum value_kind kind)
{
    return kind == KIND_BOOL || kind == KIND_INT || kind == KIND_FLOAT;
}

/* Edit distance, for "did you mean". */
static size_t distance(const char *a, const char *b)
{
    size_t la = strlen(a), lb = strlen(b), row[64];
    if (lb >= sizeof row / sizeof row[0])
        return (size_t)-1;
    for (size_t j = 0; j <= lb; j++)
        row[j] = j;
    for (size_t i = 1; i <= la; i++) {
        size_t diag = row[0];
        row[0] = i;
        for (size_t j = 1; j <= lb; j++) {
            size_t up = row[j];
            size_t best = diag + (a[i - 1] != b[j - 1]);
            if (up + 1 < best)
                best = up + 1;
            if (row[j - 1] + 1 < best)
                best = row[j - 1] + 1;
            row[j] = best;
            diag = up;
        }
    }
    return row[lb];
}

static int unknown_key(const struct yaml_reader *r, const char *name)
{
    char known[512] = "";
    size_t best = (size_t)-1, limit = strlen(name) / 4 > 1 ? strlen(name) / 4 : 1;
    int nearest = 0;

    for (int k = 0; k < TKV_CFG_COUNT; k++) {
        size_t dist = distance(keys[k].name, name);
        if (dist < best) {
            best = dist;
            nearest = k;
        }
        append(known, sizeof known, "%s%s", k ? ", " : "", keys[k].name);
    }
    if (best <= limit)
        return file_error(r, r->event.start_mark, "unknown key", "unknown key '%s' (did you mean '%s'?)", name,
                          keys[nearest].name);
    return file_error(r, r->event.start_mark, "unknown key", "unknown key '%s' (known keys: %s)", name, known);
}

/* "FILE:LINE:COL" of a mark. */
static void file_origin(const struct yaml_reader *r, yaml_mark_t mark, char *buf, size_t size)
{
    snprintf(buf, size, "%s:%zu:%zu", r->path, mark.line + 1, mark.column + 1);
}

/* What a refused item of the layers sequence is, in a privileged process. */
#define BAD_ITEM "an item of a sequence value is not accepted"

/* One item of the layers sequence, from its MAPPING_START to its MAPPING_END. */
static int apply_layer_item(struct yaml_reader *r, uint32_t item, struct tkv_layer_rules *rules)
{
    char values[FIELD_ITEM][64], reason[400];
    const char *text[FIELD_ITEM] = { NULL, NULL, NULL };
    yaml_mark_t item_mark = r->event.start_mark, marks[FIELD_ITEM];
    struct tkv_layer_rule rule;
    enum layer_field bad;
    int rc, f;

    for (;;) {
        if ((rc = next_event(r)) != TKV_OK)
            return rc;
        if (r->event.type == YAML_MAPPING_END_EVENT)
            break;
        if (r->event.type != YAML_SCALAR_EVENT)
            return file_error(r, r->event.start_mark, BAD_ITEM, "key 'layers': item %u: expected a key name, not %s",
                              item,
                              event_noun(&r->event));
        f = word_index(layer_fields, FIELD_ITEM, scalar_text(&r->event));
        if (f < 0)
            return file_error(r, r->event.start_mark, BAD_ITEM,
                              "key 'layers': item %u: unknown key '%s' (expected layer, k_type or v_type)", item,
                              scalar_text(&r->event));
        if (text[f])
            return file_error(r, r->event.start_mark, BAD_ITEM, "key 'layers': item %u: duplicate key '%s'", item,
                              layer_fields[f]);
        if ((rc = next_event(r)) != TKV_OK)
            return rc;
        const yaml_event_t *e = &r->event;
        if (e->type != YAML_SCALAR_EVENT)
            return file_error(r, e->start_mark, BAD_ITEM, "key 'layers': item %u: '%s': expected a single value, not %s",
                              item, layer_fields[f], event_noun(e));
        if (is_null(e))
            return file_error(r, e->start_mark, BAD_ITEM, "key 'layers': item %u: '%s': no value", item,
                              layer_fields[f]);
        if (strlen(scalar_text(e)) != e->data.scalar.length || e->data.scalar.length >= sizeof values[f])
            return file_error(r, e->start_mark, BAD_ITEM, "key 'layers': item %u: '%s': not a layer or a type name",
                              item,
                              layer_fields[f]);
        memcpy(values[f], scalar_text(e), e->data.scalar.length + 1);
        lower_ascii(values[f]); /* types ignore case, as everywhere else */
        text[f] = values[f];
        marks[f] = e->start_mark;
    }
    if (!layer_rule_from_text(text, &rule, &bad, reason, sizeof reason))
        return file_error(r, bad == FIELD_ITEM ? item_mark : marks[bad], BAD_ITEM, "key 'layers': item %u: %s", item,
                          reason);
    file_origin(r, item_mark, rule.origin, sizeof rule.origin);
    if (!add_layer_rule(rules, &rule, reason, sizeof reason))
        return file_error(r, item_mark, BAD_ITEM, "key 'layers': item %u: %s", item, reason);
    return TKV_OK;
}

/* The layers key as a sequence of mappings, from after its SEQUENCE_START. */
static int apply_layers_sequence(struct tkv_config *cfg, struct yaml_reader *r)
{
    struct layers_parse lp = { 0 };
    union value v = { .layers = &lp };
    char origin[sizeof cfg->meta[0].origin];
    int rc;

    file_origin(r, r->event.start_mark, origin, sizeof origin);
    for (uint32_t item = 1;; item++) {
        if ((rc = next_event(r)) != TKV_OK)
            return rc;
        if (r->event.type == YAML_SEQUENCE_END_EVENT)
            break;
        if (r->event.type != YAML_MAPPING_START_EVENT)
            return file_error(r, r->event.start_mark, BAD_ITEM,
                              "key 'layers': item %u: expected a mapping {layer: N or FIRST-LAST, k_type: T, "
                              "v_type: T}, not %s",
                              item, event_noun(&r->event));
        if ((rc = apply_layer_item(r, item, &lp.rules)) != TKV_OK)
            return rc;
    }
    commit(cfg, TKV_CFG_LAYERS, &v, TKV_SOURCE_FILE, origin);
    return TKV_OK;
}

/* Applies the value event of a key: one scalar, or for layers also a
 * sequence of mappings. */
static int apply_value(struct tkv_config *cfg, struct yaml_reader *r, enum tkv_config_key key)
{
    const struct key_desc *d = &keys[key];
    const yaml_event_t *e = &r->event;
    char origin[1200], accepted[256];

    if (d->kind == KIND_LAYERS && e->type == YAML_SEQUENCE_START_EVENT)
        return apply_layers_sequence(cfg, r);
    if (e->type != YAML_SCALAR_EVENT)
        return file_error(r, e->start_mark, "a value is not a single value", "key '%s': expected %s, not %s",
                          d->name,
                          d->kind == KIND_LAYERS ? "a sequence of mappings or a single value" : "a single value",
                          event_noun(e));
    if (strlen(scalar_text(e)) != e->data.scalar.length)
        return file_error(r, e->start_mark, "a value contains a NUL character",
                          "key '%s': value contains a NUL character", d->name);
    describe_accepted(d, accepted, sizeof accepted);
    if (is_null(e))
        return file_error(r, e->start_mark, "a key has no value", "key '%s': no value: expected %s", d->name,
                          accepted);
    if (kind_is_typed(d->kind) && !e->data.scalar.plain_implicit)
        return file_error(r, e->start_mark, "a quoted or tagged string where a number or a bool belongs",
                          "key '%s': value '%s' is a quoted or tagged string: expected %s",
                          d->name, scalar_text(e), accepted);
    file_origin(r, e->start_mark, origin, sizeof origin);
    if (r->secure) {
        enum verdict verdict;
        char why[512];
        if (set_value(cfg, key, scalar_text(e), TKV_SOURCE_FILE, origin, &verdict, why, sizeof why) == TKV_OK)
            return TKV_OK;
        return file_error(r, e->start_mark,
                          verdict == VALUE_OUT_OF_RANGE ? "a value is out of range" : "a value is not accepted", "-");
    }
    return tkv_config_set(cfg, key, scalar_text(e), TKV_SOURCE_FILE, origin);
}

static int key_index(const char *name)
{
    for (int k = 0; k < TKV_CFG_COUNT; k++)
        if (strcmp(keys[k].name, name) == 0)
            return k;
    return -1;
}

/* The top-level mapping, from after its MAPPING_START to its MAPPING_END. */
static int parse_mapping(struct tkv_config *cfg, struct yaml_reader *r)
{
    size_t first_line[TKV_CFG_COUNT] = { 0 }; /* 1-based line of each key seen, 0: not seen */
    int rc, k;

    for (;;) {
        if ((rc = next_event(r)) != TKV_OK)
            return rc;
        if (r->event.type == YAML_MAPPING_END_EVENT)
            return TKV_OK;
        if (r->event.type != YAML_SCALAR_EVENT)
            return file_error(r, r->event.start_mark, "a key is not a plain name", "expected a key name, not %s",
                              event_noun(&r->event));
        if (strlen(scalar_text(&r->event)) != r->event.data.scalar.length)
            return file_error(r, r->event.start_mark, "a key contains a NUL character", "a key contains a NUL character");
        k = key_index(scalar_text(&r->event));
        if (k < 0)
            return unknown_key(r, scalar_text(&r->event));
        if (first_line[k])
            return file_error(r, r->event.start_mark, "duplicate key", "duplicate key '%s' (first set at line %zu)",
                              keys[k].name, first_line[k]);
        first_line[k] = r->event.start_mark.line + 1;
        if ((rc = next_event(r)) != TKV_OK || (rc = apply_value(cfg, r, (enum tkv_config_key)k)) != TKV_OK)
            return rc;
    }
}

/* The stream: nothing at all (an empty file or only comments), or one
 * document that is a mapping or empty. */
static int parse_stream(struct tkv_config *cfg, struct yaml_reader *r)
{
    int rc;

    if ((rc = next_event(r)) != TKV_OK || (rc = next_event(r)) != TKV_OK) /* STREAM_START, then */
        return rc;
    if (r->event.type == YAML_STREAM_END_EVENT)
        return TKV_OK;
    if ((rc = next_event(r)) != TKV_OK) /* past DOCUMENT_START, to the root node */
        return rc;
    if (r->event.type == YAML_MAPPING_START_EVENT) {
        if ((rc = parse_mapping(cfg, r)) != TKV_OK)
            return rc;
    } else if (!is_null(&r->event)) {
        return file_error(r, r->event.start_mark, "the file is not a mapping of keys to values",
                          "the file must be a mapping of keys to values, not %s", event_noun(&r->event));
    }
    if ((rc = next_event(r)) != TKV_OK || (rc = next_event(r)) != TKV_OK) /* DOCUMENT_END, then */
        return rc;
    if (r->event.type != YAML_STREAM_END_EVENT)
        return file_error(r, r->event.start_mark, "a second YAML document",
                          "a second YAML document: the file must hold one");
    return TKV_OK;
}

/* For "not a regular file" messages. */
static const char *file_type_noun(mode_t mode)
{
    if (S_ISDIR(mode))
        return "a directory";
    if (S_ISFIFO(mode))
        return "a FIFO";
    if (S_ISCHR(mode))
        return "a character device";
    if (S_ISBLK(mode))
        return "a block device";
    if (S_ISSOCK(mode))
        return "a socket";
    return "not a regular file";
}

/* Reads the whole file: its read errors become TKV_EIO here rather than a
 * vague "input error" from libyaml, and encoding errors can be located.
 *
 * Only a regular file of at most TKV_CONFIG_FILE_MAX bytes is read. The
 * name may come from the environment (TURBO_CONFIG), so it may name
 * /dev/zero (endless), a FIFO (open and read would block until a writer
 * comes) or a huge file: it is opened with O_NONBLOCK, which makes open
 * return at once for a FIFO and changes nothing for a regular file, and
 * checked with fstat on that descriptor before a byte is read. */
static int read_file(const char *path, char **data, size_t *len)
{
    struct stat st;
    char *buf;
    size_t used = 0, cap;
    int fd = open(path, O_RDONLY | O_NONBLOCK | O_CLOEXEC | O_NOCTTY);

    if (fd < 0)
        return tkv_error(TKV_EIO, "cannot open config file '%s': %s", path, strerror(errno));
    if (fstat(fd, &st) != 0) {
        int err = errno;
        close(fd);
        return tkv_error(TKV_EIO, "cannot stat config file '%s': %s", path, strerror(err));
    }
    if (!S_ISREG(st.st_mode)) {
        close(fd);
        return tkv_error(TKV_EIO, "config file '%s' is %s, not a regular file", path, file_type_noun(st.st_mode));
    }
    if (st.st_size > TKV_CONFIG_FILE_MAX) {
        close(fd);
        return tkv_error(TKV_ECONFIG, "config file '%s' is %lld bytes, more than the %u a config file may have",
                         path, (long long)st.st_size, TKV_CONFIG_FILE_MAX);
    }
    /* One byte more than fstat said, to see the end of the file; a file that
     * grows past it while being read is refused rather than read in part. */
    cap = (size_t)st.st_size + 1;
    buf = malloc(cap);
    if (!buf) {
        close(fd);
        return tkv_error(TKV_ENOMEM, "config file '%s': out of memory", path);
    }
    for (;;) {
        ssize_t got = read(fd, buf + used, cap - used);
        if (got < 0 && errno == EINTR)
            continue;
        if (got < 0) {
            int err = errno;
            free(buf);
            close(fd);
            return tkv_error(TKV_EIO, "cannot read config file '%s': %s", path, strerror(err));
        }
        if (got == 0)
            break;
        used += (size_t)got;
        if (used == cap) {
            free(buf);
            close(fd);
            return tkv_error(TKV_EIO, "config file '%s' grew while it was read", path);
        }
    }
    close(fd);
    *data = buf;
    *len = used;
    return TKV_OK;
}

static int apply_file(struct tkv_config *cfg, const char *path, int secure)
{
    struct yaml_reader r = { .path = path, .secure = secure };
    struct tkv_config next;
    char *data = NULL;
    size_t len = 0;
    int rc;

    if (!cfg || !path)
        return tkv_error(TKV_EINVAL, "tkv_config_apply_file: cfg and path must not be NULL");
    if ((rc = read_file(path, &data, &len)) != TKV_OK)
        return rc;
    if (!yaml_parser_initialize(&r.parser)) {
        free(data);
        return tkv_error(TKV_ENOMEM, "config file '%s': out of memory", path);
    }
    r.data = data;
    yaml_parser_set_input_string(&r.parser, (const unsigned char *)data, len);
    next = *cfg; /* parse into a copy: a failure leaves cfg as it was */
    rc = parse_stream(&next, &r);
    if (r.have_event)
        yaml_event_delete(&r.event);
    yaml_parser_delete(&r.parser);
    free(data);
    if (rc == TKV_OK)
        *cfg = next;
    return rc;
}

int tkv_config_apply_file(struct tkv_config *cfg, const char *path) { return apply_file(cfg, path, 0); }

int tkv_config_apply_file_secure(struct tkv_config *cfg, const char *path, int secure)
{
    return apply_file(cfg, path, secure != 0);
}
