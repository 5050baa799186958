/* SPDX-License-Identifier: MIT */
/*
 * turbokv device capabilities — what one device of one backend can do.
 * Shared by the host API (tkv_context_caps) and the plugin ABI
 * (device_caps). Self-contained: only <stdint.h>.
 *
 * The core checks a cache against its device's capabilities when the cache
 * is created, before anything is allocated, and names the first one that is
 * missing; backend auto skips devices that lack what the host asked for
 * (struct tkv_context_options.require). Members are only appended; a
 * struct_size that does not cover a member means "not supported".
 */
#ifndef TURBOKV_CAPS_H
#define TURBOKV_CAPS_H

#include <stdint.h>

/* Feature bits of struct tkv_device_caps.features. */
enum tkv_cap_feature {
    TKV_CAP_PAGED = 1u << 0,          /* block-addressed rows (every ABI 2 plugin) */
    TKV_CAP_MIXED_NQ = 1u << 1,       /* sequences of one attention call with different n_q */
    TKV_CAP_WINDOW = 1u << 2,         /* sliding-window attention */
    TKV_CAP_SOFTCAP = 1u << 3,        /* logit soft-capping */
    TKV_CAP_LSE = 1u << 4,            /* per-row log-sum-exp output */
    TKV_CAP_BUFFER_COPY = 1u << 5,    /* device-side buffer copies */
    /* q, k, v and out in the host's device memory (TKV_MEMORY_OPENCL /
     * TKV_MEMORY_VULKAN), f32, f16 and bf16; on a context opened on the
     * host's device (TKV_CAP_HOST_DEVICE) */
    TKV_CAP_DEVICE_TENSORS = 1u << 6,
    /* calls on device tensors are queued on the host's queue (OpenCL) or
     * recorded into its command buffer (Vulkan) and return without waiting */
    TKV_CAP_ASYNC = 1u << 7,
    /* The format additions of revision 1. A device declares them with two
     * bits: TKV_CAP_ROTOR (this bit) for the rotor rotation, and
     * TKV_CAP_OUTLIER_TYPES for the outlier-split types (TKV_TYPE_FIRST_R1
     * on). The rotations / k_types / v_types bits of each count only on a
     * device that sets its feature bit; the core clears them on one that
     * does not (a plugin that derives its type mask from TKV_TYPE_COUNT
     * claims no format it was not written for). Plugins before ABI 2.4
     * knew one bit for both: for them the core reads TKV_CAP_FORMAT_R1 as
     * TKV_CAP_ROTOR | TKV_CAP_OUTLIER_TYPES. */
    TKV_CAP_FORMAT_R1 = 1u << 8,
    TKV_CAP_ROTOR = TKV_CAP_FORMAT_R1,
    /* the plugin can open on the host's own device
     * (tkv_context_options.host_device, turbokv_device.h) */
    TKV_CAP_HOST_DEVICE = 1u << 9,
    /* (ABI 2.3, host API 0.6) calls on device tensors can be recorded into
     * a command buffer the host passes (tkv_context_set_command_buffer,
     * Vulkan) instead of being submitted */
    TKV_CAP_COMMAND_BUFFER = 1u << 10,
    /* the outlier-split types turbo3o and turbo4o (ABI 2.4; see
     * TKV_CAP_FORMAT_R1) */
    TKV_CAP_OUTLIER_TYPES = 1u << 11,
};

struct tkv_device_caps {
    uint32_t struct_size;
    uint32_t features;         /* enum tkv_cap_feature bits */
    uint32_t k_types;          /* bit (1u << enum tkv_type) for each storable key type */
    uint32_t v_types;          /* ... value type */
    uint32_t rotations;        /* bit (1u << enum tkv_rotation) for each rotation */
    uint32_t scale_modes;      /* bit (1u << enum tkv_scale_mode) */
    uint32_t head_dim_max;     /* every storable head_dim (multiple of 8) up to this */
    uint32_t max_block_tokens; /* largest block_tokens; 0: no limit */
    uint32_t max_q_per_seq;    /* largest n_q of one sequence in one call; 0: no limit */
    uint32_t reserved;
    uint64_t max_buffer_bytes; /* largest single buffer; 0: no limit */
    uint64_t reserved2[4];
};

#endif
