/* SPDX-License-Identifier: MIT */
/*
 * Per-layer K/V type policy: which type each layer of a new cache gets.
 *
 * Precedence, lowest first: the cache-wide types (the host's, else the
 * configuration's scheme and k_type/v_type), auto_asymmetric (keys from the
 * configuration only), layer_adaptive (on the cache-wide types wherever they
 * came from, as the llama.cpp TurboQuant fork applies TURBO_LAYER_ADAPTIVE
 * to -ctk/-ctv), the configuration's `layers` items (sides the host leaves
 * to the configuration), and above them all the per-layer types the host
 * passes. Everything the configuration decides is logged at level info.
 *
 * The "auto" scheme (the default) decides from measured evidence (README,
 * "Quality against the optimum", `turbokv eval` and `turbokv ppl`): values
 * tolerate 3 bits at every head_dim (turbo3 values alone move attention
 * outputs by about sqrt(D) = 0.14-0.18 relative, and the stories260K
 * perplexity by +0.3%); keys feed the softmax, whose exponent turns score
 * errors into different weights: turbo4 keys alone move attention outputs by
 * 0.20 relative on the real stories260K K/V (perplexity +115%) and by as
 * much, 0.15-0.27, on synthetic head_dim 64-256 caches, against 0.02-0.03
 * for q8_0 keys. Most of that error comes from the few large channels a
 * rotation spreads over the group (docs/keys.md): the outlier-split types
 * store them apart. From head_dim 64 to 128, turbo3o keys and values cost
 * less attention error than q8_0 keys with turbo3 values (synthetic 64:
 * 0.109 against 0.160, 96: 0.126 against 0.174, 128: 0.157 against 0.174)
 * in 4.0-4.3 bits/value instead of 5.8-6.0, 4x less than f16 at 128 (the
 * trained head_dim 128 model: -0.16% PPL against -0.24%, both noise).
 * Above 128 turbo3o ties with it (192: 0.206 against 0.186, 256: 0.192
 * against 0.177, within two standard errors), so larger heads take turbo4o
 * keys (0.121-0.128 at 4.4-4.6 bits/value, 3.5x less than f16). Below 64
 * one index and fp16 per 32 values (or fewer) cost more than they save:
 * small heads keep q8_0 keys and turbo3 values, as does a device without
 * the outlier-split types.
 */
#include <string.h>

#include "error.h"
#include "policy.h"
#include "turbokv_plugin.h"

#define AUTO_ASYMMETRIC_GQA 6u
#define AUTO_KEYS TKV_TYPE_Q8_0
#define AUTO_VALUES TKV_TYPE_TURBO3
#define AUTO_SPLIT_VALUES TKV_TYPE_TURBO3_OUT
#define AUTO_SPLIT_KEYS_LARGE TKV_TYPE_TURBO4_OUT
#define AUTO_SPLIT_HEAD_DIM 64u  /* outlier-split types from here */
#define AUTO_LARGE_HEAD_DIM 128u /* turbo4o keys above this */

/* The outlier-split types need the device to have them
 * (TKV_CAP_OUTLIER_TYPES: the cpu plugin on every ISA level, opencl and
 * vulkan; a device without them stays at q8_0 / turbo3 at every head_dim).
 * 0 holds auto at q8_0 / turbo3 everywhere, as before the cpu levels had
 * their kernels. */
#define AUTO_SPLIT 1

static void auto_types(uint32_t head_dim, const struct tkv_device_caps *caps, uint32_t *k, uint32_t *v)
{
    uint32_t split_keys = head_dim > AUTO_LARGE_HEAD_DIM ? AUTO_SPLIT_KEYS_LARGE : AUTO_SPLIT_VALUES;
    int split = AUTO_SPLIT && head_dim >= AUTO_SPLIT_HEAD_DIM && caps && (caps->k_types & (1u << split_keys)) &&
                (caps->v_types & (1u << AUTO_SPLIT_VALUES));
    if (*k == TKV_TYPE_FROM_CONFIG)
        *k = split ? split_keys : AUTO_KEYS;
    if (*v == TKV_TYPE_FROM_CONFIG)
        *v = split ? AUTO_SPLIT_VALUES : AUTO_VALUES;
}

/* The fork leaves shallower models uniform: its boundary layers would be most of them. */
#define LAYER_ADAPTIVE_MIN_LAYERS 8u

/* TURBO_LAYER_ADAPTIVE modes, as the llama.cpp TurboQuant fork applies them
 * (src/llama-kv-cache.cpp): to caches of 8 layers or more; modes 1 and 2
 * only when the cache-wide keys are a turbo type, modes 5, 6 and 7 only
 * when the cache-wide values are. So an exact f32 or f16 cache, or a q8_0
 * one, stays what it was asked to be under every mode. One difference: with
 * TURBO_LAYER_ADAPTIVE unset the fork turns mode 7 on by itself for turbo2
 * values; here the default, 0, means uniform (docs/cli.md). */
static void layer_adaptive(int mode, uint32_t layer, uint32_t n_layers, uint32_t *k, uint32_t *v)
{
    int first2 = layer < 2, last2 = layer + 2 >= n_layers;
    int first4 = layer < 4, last4 = layer + 4 >= n_layers, last8 = layer + 8 >= n_layers;
    if (n_layers < LAYER_ADAPTIVE_MIN_LAYERS || (mode <= 2 ? !tkv_type_is_turbo(*k) : !tkv_type_is_turbo(*v)))
        return;
    switch (mode) {
    case 1: /* K and V q8_0 on the first 4 and last 4 layers */
        if (first4 || last4)
            *k = *v = TKV_TYPE_Q8_0;
        break;
    case 2: /* K and V q8_0 on the last 8 layers */
        if (last8)
            *k = *v = TKV_TYPE_Q8_0;
        break;
    case 5: /* V turbo4 on the first 2 and last 2, turbo2 elsewhere */
        *v = first2 || last2 ? TKV_TYPE_TURBO4 : TKV_TYPE_TURBO2;
        break;
    case 6: /* V turbo4 on the last 8, turbo2 elsewhere */
        *v = last8 ? TKV_TYPE_TURBO4 : TKV_TYPE_TURBO2;
        break;
    case 7: /* V q8_0 on the first 2 and last 2, turbo2 elsewhere */
        *v = first2 || last2 ? TKV_TYPE_Q8_0 : TKV_TYPE_TURBO2;
        break;
    default: break;
    }
}

/* The configuration's `layers` items, where they apply: a side whose type
 * the host leaves to the configuration. An item naming a layer the cache
 * lacks is an error, so a mistyped layer index is never silently ignored. */
static int check_layer_rules(const struct tkv_layer_rules *rules, uint32_t n_layers)
{
    for (uint32_t i = 0; i < rules->n; i++)
        if (rules->rule[i].last >= n_layers)
            return tkv_error(TKV_ECONFIG, "%s: key 'layers': layer %u is past the last layer of this cache (%u "
                                          "layers: 0..%u)",
                             rules->rule[i].origin, rules->rule[i].last, n_layers, n_layers - 1);
    return TKV_OK;
}

static void apply_layer_rules(const struct tkv_layer_rules *rules, uint32_t layer, int k_from_cfg, int v_from_cfg,
                              uint32_t *k, uint32_t *v)
{
    for (uint32_t i = 0; i < rules->n; i++) {
        const struct tkv_layer_rule *r = &rules->rule[i];
        if (layer < r->first || layer > r->last)
            continue;
        if (k_from_cfg && r->k_type != TKV_TYPE_FROM_CONFIG)
            *k = r->k_type;
        if (v_from_cfg && r->v_type != TKV_TYPE_FROM_CONFIG)
            *v = r->v_type;
    }
}

/* A value type must be a storage type that is not a key-only (QJL) one. */
static int check_types(uint32_t k, uint32_t v, uint32_t layer)
{
    if (k >= TKV_TYPE_COUNT)
        return tkv_error(TKV_EINVAL, "key type %u of layer %u is not a type (0..%u)", k, layer, TKV_TYPE_COUNT - 1);
    if (v >= TKV_TYPE_COUNT)
        return tkv_error(TKV_EINVAL, "value type %u of layer %u is not a type (0..%u)", v, layer,
                         TKV_TYPE_COUNT - 1);
    if (tkv_type_is_qjl(v))
        return tkv_error(TKV_EINVAL,
                         "value type %s of layer %u: QJL types are for keys only (their unbiased inner "
                         "products help scores, not the averaged values, where %s has the lower error)",
                         tkv_type_name(v), layer, tkv_type_name(TKV_TYPE_TURBO2 + tkv_type_bits(v) - 1));
    return TKV_OK;
}

int tkv_policy_resolve(const struct tkv_config *cfg, const struct tkv_cache_params *p,
                       const struct tkv_device_caps *caps, uint32_t *k_types, uint32_t *v_types)
{
    uint32_t k = p->k_type, v = p->v_type;
    /* per side: does the configuration decide it (no per-layer types from the host either)? */
    int k_from_cfg = k == TKV_TYPE_FROM_CONFIG, v_from_cfg = v == TKV_TYPE_FROM_CONFIG;
    int k_layers_from_cfg = k_from_cfg && !p->layer_k_types, v_layers_from_cfg = v_from_cfg && !p->layer_v_types;
    uint32_t sk, sv;
    int rc;
    if (k_from_cfg || v_from_cfg) {
        if ((rc = tkv_scheme_parse(cfg->scheme, &sk, &sv)) != TKV_OK)
            return rc;
        if (cfg->k_type[0] && (rc = tkv_type_from_name(cfg->k_type, &sk)) != TKV_OK)
            return rc;
        if (cfg->v_type[0] && (rc = tkv_type_from_name(cfg->v_type, &sv)) != TKV_OK)
            return rc;
        if (k_from_cfg)
            k = sk;
        if (v_from_cfg)
            v = sv;
        uint32_t k0 = k, v0 = v;
        auto_types(p->head_dim, caps, &k, &v);
        if (k0 != k || v0 != v)
            tkv_log(TKV_LOG_INFO, "scheme auto: keys %s, values %s", tkv_type_name(k), tkv_type_name(v));
    }
    if ((rc = check_types(k, v, 0)) != TKV_OK)
        return rc;
    if (k_from_cfg && cfg->auto_asymmetric && p->n_q_heads && p->n_q_heads / p->n_kv_heads >= AUTO_ASYMMETRIC_GQA &&
        tkv_type_is_turbo(k)) {
        tkv_log(TKV_LOG_INFO, "auto_asymmetric: GQA ratio %u >= %u, keys %s -> q8_0", p->n_q_heads / p->n_kv_heads,
                AUTO_ASYMMETRIC_GQA, tkv_type_name(k));
        k = TKV_TYPE_Q8_0;
    }
    if ((k_layers_from_cfg || v_layers_from_cfg) &&
        (rc = check_layer_rules(&cfg->layers, p->n_layers)) != TKV_OK)
        return rc;
    for (uint32_t l = 0; l < p->n_layers; l++) {
        uint32_t lk = k, lv = v;
        layer_adaptive(cfg->layer_adaptive, l, p->n_layers, &lk, &lv);
        apply_layer_rules(&cfg->layers, l, k_layers_from_cfg, v_layers_from_cfg, &lk, &lv);
        if (p->layer_k_types)
            lk = p->layer_k_types[l];
        if (p->layer_v_types)
            lv = p->layer_v_types[l];
        if ((rc = check_types(lk, lv, l)) != TKV_OK)
            return rc;
        if ((lk != k && !p->layer_k_types) || (lv != v && !p->layer_v_types))
            tkv_log(TKV_LOG_INFO, "layer %u: keys %s, values %s (by layer_adaptive %d or key 'layers')", l,
                    tkv_type_name(lk), tkv_type_name(lv), cfg->layer_adaptive);
        k_types[l] = lk;
        v_types[l] = lv;
    }
    return TKV_OK;
}
