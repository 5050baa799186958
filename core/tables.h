/* SPDX-License-Identifier: MIT */
/*
 * The format's numeric tables (abi/turbokv_format.h): Lloyd-Max codebooks for
 * the exact coordinate density of a random unit vector in g dimensions, the
 * randomized Hadamard sign vectors and the dense seeded rotations, for every
 * group size 8..128 and b = 2, 3, 4. Computed deterministically, once per
 * seed per process, and shared read-only by every context and plugin.
 */
#ifndef TKV_CORE_TABLES_H
#define TKV_CORE_TABLES_H

#include <stdint.h>

#include "turbokv_plugin.h"

/* The tables for a rotation seed (TKV_ROTATION_SEED_DEFAULT normally).
 * Thread-safe; the result lives until process exit. NULL only when out of
 * memory (with tkv_error set). */
const struct tkv_math *tkv_tables_get(uint64_t seed);

#endif
