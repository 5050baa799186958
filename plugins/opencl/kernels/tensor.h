/* SPDX-License-Identifier: MIT */
/*
 * The shape of kernels/tensor.cl's work, shared by the host (attention.c
 * plans it) and the kernels. Valid C and OpenCL C.
 */
#ifndef TKV_OCL_TENSOR_H
#define TKV_OCL_TENSOR_H

#define TC_HD 128u       /* head_dim */
#define TC_RB 50u        /* a turbo3 row at head_dim 128: fp16 scale, 48 bytes of indices */
/* a turbo3o row at head_dim 128: the turbo3 row, then its 4 outliers' 1-byte
 * indices and their 4 fp16 values */
#define TC_OUT_N 4u
#define TC_RB_OUT (TC_RB + 3u * TC_OUT_N)
/* query rows a unit of the kernels that put the rows' fp16 hi and lo halves
 * side by side in the 8 columns of a product (tc_decode_4, tc_decode_o4:
 * two products instead of three) */
#define TC_HL_ROWS 4u
/* query rows a unit of the turbo3o kernel (its V outlier sums are a warp's
 * 4 x 128 floats of local memory) */
#define TC_OUT_ROWS TC_HL_ROWS
#define TC_TILE 16u      /* rows of a tile (one mma's M) */
#define TC_W 4u          /* warps a work-group */
/* work-groups wanted at once on a compute unit: attention.c plans the
 * chunks for it, device.c caps the registers for it (an H100's SM holds 3
 * of 47 KB of local memory, or of the outlier-split kernel's 70 KB) */
#define TC_GROUPS_PER_CU 3u
/* a chunk's record: o [QC][TC_HD], then (m, l, rows skipped) of each query row */
#define TC_REC(QC) ((QC) * (TC_HD + 3u))
/* the chunks of one (unit, kv head) the merge takes at most */
#define TC_CHUNKS_MAX 128u

#endif
