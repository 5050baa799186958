/* SPDX-License-Identifier: MIT */
/*
 * Which K and V type each layer gets: explicit per-layer types, else the
 * configuration's `layers` items (for sides the caller leaves to the
 * configuration), else layer_adaptive applied to the cache-wide types (the
 * caller's, else the configuration's scheme, k_type/v_type and
 * auto_asymmetric).
 */
#ifndef TKV_CORE_POLICY_H
#define TKV_CORE_POLICY_H

#include "config.h"
#include "turbokv.h"

/* Fills k_types/v_types [p->n_layers] for a cache on a device with caps
 * (the auto scheme picks among the types the device holds). Logs the
 * choices the configuration made. Fails on a QJL value type and on a
 * `layers` item past n_layers. */
int tkv_policy_resolve(const struct tkv_config *cfg, const struct tkv_cache_params *p,
                       const struct tkv_device_caps *caps, uint32_t *k_types, uint32_t *v_types);

#endif
