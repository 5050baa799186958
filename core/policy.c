/*
 * Per-layer K/V type policy.
 *
 * The "auto" scheme (the default) decides from measured evidence (README,
 * "Choosing a scheme"): values tolerate 3 bits at every head_dim; keys feed
 * the softmax, whose exponent amplifies score errors, and on small heads
 * (head_dim <= 32) a rotation concentrates poorly, so there keys stay at
 * q8_0; on larger heads keys take turbo4.
 */
#include <string.h>

#include "error.h"
#include "policy.h"
#include "turbokv_plugin.h"

#define AUTO_SMALL_HEAD_DIM 32u
#define AUTO_ASYMMETRIC_GQA 6u

static void auto_types(uint32_t head_dim, uint32_t *k, uint32_t *v)
{
    if (*k == TKV_TYPE_FROM_CONFIG)
        *k = head_dim <= AUTO_SMALL_HEAD_DIM ? TKV_TYPE_Q8_0 : TKV_TYPE_TURBO4;
    if (*v == TKV_TYPE_FROM_CONFIG)
        *v = TKV_TYPE_TURBO3;
}

/* TURBO_LAYER_ADAPTIVE modes, as in the llama.cpp TurboQuant fork. */
static void layer_adaptive(int mode, uint32_t layer, uint32_t n_layers, uint32_t *k, uint32_t *v)
{
    int first2 = layer < 2, last2 = layer + 2 >= n_layers;
    int first4 = layer < 4, last4 = layer + 4 >= n_layers, last8 = layer + 8 >= n_layers;
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

static int check_type(uint32_t t, const char *what, uint32_t layer)
{
    if (t >= TKV_TYPE_COUNT)
        return tkv_error(TKV_EINVAL, "%s type %u of layer %u is not a type (0..%u)", what, t, layer,
                         TKV_TYPE_COUNT - 1);
    return TKV_OK;
}

int tkv_policy_resolve(const struct tkv_config *cfg, const struct tkv_cache_params *p, uint32_t *k_types,
                       uint32_t *v_types)
{
    uint32_t k = p->k_type, v = p->v_type;
    int k_from_cfg = k == TKV_TYPE_FROM_CONFIG, v_from_cfg = v == TKV_TYPE_FROM_CONFIG;
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
        auto_types(p->head_dim, &k, &v);
        if (k0 != k || v0 != v)
            tkv_log(TKV_LOG_INFO, "scheme auto at head_dim %u: keys %s, values %s", p->head_dim,
                    tkv_type_name(k), tkv_type_name(v));
    }
    if ((rc = check_type(k, "key", 0)) != TKV_OK || (rc = check_type(v, "value", 0)) != TKV_OK)
        return rc;
    if (k_from_cfg && cfg->auto_asymmetric && p->n_q_heads && p->n_q_heads / p->n_kv_heads >= AUTO_ASYMMETRIC_GQA &&
        tkv_type_is_turbo(k)) {
        tkv_log(TKV_LOG_INFO, "auto_asymmetric: GQA ratio %u >= %u, keys %s -> q8_0", p->n_q_heads / p->n_kv_heads,
                AUTO_ASYMMETRIC_GQA, tkv_type_name(k));
        k = TKV_TYPE_Q8_0;
    }
    for (uint32_t l = 0; l < p->n_layers; l++) {
        uint32_t lk = k, lv = v;
        if (k_from_cfg && v_from_cfg)
            layer_adaptive(cfg->layer_adaptive, l, p->n_layers, &lk, &lv);
        if (p->layer_k_types)
            lk = p->layer_k_types[l];
        if (p->layer_v_types)
            lv = p->layer_v_types[l];
        if ((rc = check_type(lk, "key", l)) != TKV_OK || (rc = check_type(lv, "value", l)) != TKV_OK)
            return rc;
        k_types[l] = lk;
        v_types[l] = lv;
    }
    return TKV_OK;
}
