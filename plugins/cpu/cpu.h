/*
 * turbokv-cpu internals: the device, its buffers, the layout of a stored row
 * and the per-type row kernels the ops are built from.
 *
 * The plugin is the reference implementation of every op: plain C, one
 * thread. The row kernels are reached only through struct cpu_row_kernels,
 * so a vectorized set can later be chosen per ISA in cpu_layout_init without
 * touching the ops.
 */
#ifndef TKV_CPU_H
#define TKV_CPU_H

#include <stddef.h>
#include <stdint.h>

#include "turbokv_plugin.h"

/* Set by init(); every error detail goes through cpu_svc->error. */
extern const struct tkv_services *cpu_svc;

/* Records the detail of a failure and yields status whatever the services
 * return, so an op can write: return CPU_ERROR(TKV_EINVAL, "...", ...). */
#define CPU_ERROR(status, ...) (cpu_svc->error((status), __VA_ARGS__), (status))

/* A device buffer: host memory behind a small header that records its size,
 * so every op can bounds-check offsets against it. */
#define CPU_BUFFER_MAGIC 0x746b7663u /* "tkvc" */

struct cpu_buffer {
    uint32_t magic;
    uint32_t reserved;
    uint64_t size;
    unsigned char data[];
};

struct cpu_device {
    const struct tkv_math *math;
    struct tkv_device_stats stats;
    /* Per-device scratch (the core never runs two ops on one device at once):
     * a sanitized input row, or a rotated query and its output accumulator. */
    float scratch[2 * TKV_HEAD_DIM_MAX];
};

/* One group of a turbo row. */
struct cpu_group {
    uint32_t size;        /* g */
    uint32_t first;       /* index of its first value in the row */
    uint32_t byte_offset; /* of its block in the stored row */
    float inv_sqrt;       /* 1/sqrt(g) computed in double, rounded to float */
    const struct tkv_group_tables *tables;
    const struct tkv_codebook *codebook;
};

struct cpu_layout;

/* Kernels on one stored row. Turbo values are in the rotated domain, so a
 * turbo dot takes a rotated query and a turbo axpy accumulates rotated. */
struct cpu_row_kernels {
    /* Quantizes the finite values x[head_dim] into the stored row. */
    void (*encode)(const struct cpu_layout *l, const float *x, uint8_t *row);
    /* Returns sum_i q[i] * value_i. */
    float (*dot)(const struct cpu_layout *l, const uint8_t *row, const float *q);
    /* acc[i] += w * value_i. */
    void (*axpy)(const struct cpu_layout *l, const uint8_t *row, float w, float *acc);
};

/* Everything needed to read or write rows of one struct tkv_row_format. */
struct cpu_layout {
    uint32_t type, head_dim, rotation, scale_mode;
    uint32_t bits;      /* turbo index bits, 0 for the other types */
    uint32_t row_bytes;
    uint32_t n_groups;  /* turbo only */
    struct cpu_group groups[TKV_MAX_GROUPS];
    const struct cpu_row_kernels *kernels;
};

/* Validates fmt and fills the layout, kernels included; op names the
 * failing call in the error detail ("quantize_append", "attention K"). */
int cpu_layout_init(const struct cpu_device *dev, const struct tkv_row_format *fmt, const char *op,
                    struct cpu_layout *l);

/* Group rotations of a turbo layout (rotate.c), in place: CPU_ROTATE is
 * y = R u (quantization, queries), CPU_UNROTATE is u = R^T y (dequantized
 * rows, attention outputs). cpu_rotate_group takes the group's g values,
 * cpu_rotate_row all head_dim values of a row. */
enum cpu_direction { CPU_ROTATE, CPU_UNROTATE };

void cpu_rotate_group(uint32_t rotation, const struct cpu_group *grp, enum cpu_direction dir,
                      float *v);
void cpu_rotate_row(const struct cpu_layout *l, enum cpu_direction dir, float *v);

/* The checks every op with an args struct starts with (plugin.c): dev and
 * args present, args at least size bytes as its struct_size says (every
 * args struct begins with uint32_t struct_size). */
int cpu_check_args(const void *dev, const void *args, size_t size, const char *op);

/* The buffer behind a handle, or NULL (with the error recorded) if buf is
 * not one of ours. */
struct cpu_buffer *cpu_buffer_check(const void *buf, const char *op, const char *which);

/* 1 if n_heads spans of span bytes, stride bytes apart from offset, fit in
 * size bytes; computed without overflow. */
int cpu_span_fits(uint64_t size, uint64_t offset, uint64_t n_heads, uint64_t stride, uint64_t span);

/* The ops (quantize.c, attention.c). */
int cpu_quantize_append(void *dev, const struct tkv_append_args *args);
int cpu_dequantize(void *dev, const struct tkv_dequant_args *args);
int cpu_attention(void *dev, const struct tkv_attention_args *args);

#endif
