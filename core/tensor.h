/* SPDX-License-Identifier: MIT */
/* Typed host tensors (core/tensor.c). */
#ifndef TURBOKV_CORE_TENSOR_H
#define TURBOKV_CORE_TENSOR_H

#include <stddef.h>
#include <stdint.h>

#include "turbokv.h"

#include "core.h"

/* Bytes of one element of type elem. */
uint32_t tkv_elem_size(uint32_t elem);
/* TKV_OK, or the error naming what is wrong with tensor name of fn: the
 * struct, and for device memory what the cache's context allows (opened on
 * the host's device of the same API, TKV_CAP_DEVICE_TENSORS), the handle
 * and the offset's alignment. */
int tkv_tensor_check(const tkv_cache *c, const struct tkv_tensor *t, const char *fn, const char *name);
/* A checked device tensor of n elements: within its buffer (else
 * TKV_ERANGE), as the plugin ABI passes it. */
int tkv_tensor_device(const struct tkv_tensor *t, uint64_t n, const char *fn, const char *name,
                      struct tkv_device_tensor *d);
static inline int tkv_tensor_on_device(const struct tkv_tensor *t) { return t->memory != TKV_MEMORY_HOST; }
/* n elements of type elem at src to f32 at dst (exact). */
void tkv_tensor_widen(float *dst, const void *src, uint32_t elem, size_t n);
/* n f32 at src to type elem at dst (round to nearest even). */
void tkv_tensor_narrow(void *dst, const float *src, uint32_t elem, size_t n);
/* The cache's conversion buffer, grown to n_floats; NULL (error set) when
 * out of memory. Valid until the next call on the cache. */
float *tkv_tensor_scratch(tkv_cache *c, size_t n_floats, const char *fn);

#endif
