/* SPDX-License-Identifier: MIT */
/*
 * Layout of the device copy of the format's numeric tables (struct tkv_math),
 * shared by the host (device.c fills it) and the kernels (which read it).
 * Valid C and OpenCL C alike; TKV_N_GROUP_SIZES comes from turbokv_format.h
 * on the host and from a -D build option on the device.
 *
 * The buffer starts with TKV_TAB_HEADER uint offsets, counted in floats from
 * the start of the buffer: entry [group size index * TKV_TAB_FIELDS + field].
 * The codebook fields hold one entry per index width: field + 3 * (bits - 2).
 */
#ifndef TKV_OCL_TABLES_H
#define TKV_OCL_TABLES_H

#define TKV_TAB_SIGN1 0u       /* D1: g floats of +-1 */
#define TKV_TAB_SIGN2 1u       /* D2 */
#define TKV_TAB_DENSE 2u       /* g x g row-major Q */
#define TKV_TAB_QJL 3u         /* g x g row-major S of the QJL sketch (zeros without one) */
#define TKV_TAB_INV_SQRT 4u    /* 1 float: 1/sqrt(g) computed in double */
#define TKV_TAB_QJL_SCALE 5u   /* 1 float: the sketch's scale, S^T z times it */
#define TKV_TAB_CENTROIDS 6u   /* 2^bits floats, + 3 * (bits - 2) */
#define TKV_TAB_BOUNDARIES 7u  /* 2^bits - 1 floats */
#define TKV_TAB_CENTROID_SQ 8u /* 2^bits floats */
#define TKV_TAB_FIELDS 15u
#define TKV_TAB_HEADER (TKV_TAB_FIELDS * TKV_N_GROUP_SIZES)

/* Largest codebook: 2^TKV_TURBO_BITS_MAX levels (kernels keep one per group
 * size in local memory). */
#define TKV_TAB_MAX_LEVELS 16u

#endif
