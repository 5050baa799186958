/* SPDX-License-Identifier: MIT */
/* Typed host tensors (core/tensor.c). */
#ifndef TURBOKV_CORE_TENSOR_H
#define TURBOKV_CORE_TENSOR_H

#include <stddef.h>
#include <stdint.h>

#include "turbokv.h"

/* TKV_OK, or the error naming what is wrong with tensor name of fn. */
int tkv_tensor_check(const struct tkv_tensor *t, const char *fn, const char *name);
/* n elements of type elem at src to f32 at dst (exact). */
void tkv_tensor_widen(float *dst, const void *src, uint32_t elem, size_t n);
/* n f32 at src to type elem at dst (round to nearest even). */
void tkv_tensor_narrow(void *dst, const float *src, uint32_t elem, size_t n);
/* The cache's conversion buffer, grown to n_floats; NULL (error set) when
 * out of memory. Valid until the next call on the cache. */
float *tkv_tensor_scratch(tkv_cache *c, size_t n_floats, const char *fn);

#endif
