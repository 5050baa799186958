/* SPDX-License-Identifier: MIT */
/*
 * Shader modules and compute pipelines. The SPIR-V is compiled from
 * shaders/ at build time and embedded (meson.build). The quantize, rows and
 * merge shaders take their row formats as push constants, so each is one
 * pipeline created at open; the attention shader is specialized per K and V
 * format, head_dim and query tile (its inner loops and register arrays are
 * sized by them) and each specialization is created on first use. quantize
 * and rows come from the SPIR-V with the execution mode DenormPreserve 32
 * where dev->denorm_preserve says so (TURBO_VK_DENORM, plugin.c).
 */
#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "occupancy.h"
#include "vk.h"

#include "attention_spv.h"
#include "decode_clock_spv.h"
#include "decode_spv.h"
#include "decode_wide_spv.h"
#include "merge_spv.h"
#include "decode_append_denorm_spv.h"
#include "decode_append_spv.h"
#include "decode_tc_clock_spv.h"
#include "decode_tc_spv.h"
#include "tc_probe_spv.h"
#include "quantize_fp32_denorm_spv.h"
#include "quantize_fp32_spv.h"
#include "quantize_fp64_denorm_spv.h"
#include "quantize_fp64_spv.h"
#include "rows_denorm_spv.h"
#include "rows_spv.h"

/* SPIR-V: a header of 5 words, then instructions, each a word (word count
 * << 16 | opcode) and its operands. OpExecutionMode (opcode 16): entry
 * point, mode, literals; DenormPreserve is mode 4459, its literal the bit
 * width. */
#define SPV_OP_EXECUTION_MODE 16u
#define SPV_MODE_DENORM_PRESERVE 4459u

int vk_spirv_denorm_preserve(const uint32_t *code, size_t size)
{
    const size_t n = size / 4;
    for (size_t at = 5; at < n;) {
        const uint32_t words = code[at] >> 16, op = code[at] & 0xffffu;
        if (words == 0 || words > n - at)
            return 0;
        if (op == SPV_OP_EXECUTION_MODE && words >= 4 && code[at + 2] == SPV_MODE_DENORM_PRESERVE &&
            code[at + 3] == 32u)
            return 1;
        at += words;
    }
    return 0;
}

/* One of the embedded SPIR-V arrays. */
struct spirv {
    const uint32_t *code;
    size_t size;
};
#define SPIRV(a) { a, sizeof a }
/* [fp64][denorm_preserve] */
static const struct spirv quantize_spirv[2][2] = {
    { SPIRV(quantize_fp32_spv), SPIRV(quantize_fp32_denorm_spv) },
    { SPIRV(quantize_fp64_spv), SPIRV(quantize_fp64_denorm_spv) },
};
static const struct spirv rows_spirv[2] = { SPIRV(rows_spv), SPIRV(rows_denorm_spv) };
/* decode.comp with step 0 (its encoder sums in double: fp64 devices only) */
static const struct spirv decode_append_spirv[2] = { SPIRV(decode_append_spv), SPIRV(decode_append_denorm_spv) };

static int create_module(struct vk_device *dev, enum vk_shader which, const uint32_t *code, size_t size,
                         const char *name)
{
    VkShaderModuleCreateInfo info = {
        .sType = VK_STRUCTURE_TYPE_SHADER_MODULE_CREATE_INFO, .codeSize = size, .pCode = code,
    };
    VkResult r = vkCreateShaderModule(dev->device, &info, NULL, &dev->modules[which]);
    if (r != VK_SUCCESS)
        return VK_ERROR_STATUS(TKV_EDEVICE, "open: vkCreateShaderModule (%s shader) failed: %s (%d)", name,
                               vk_result_name(r), (int)r);
    return TKV_OK;
}

/* TURBO_VK_PROFILE_DIR: the driver's internal representations of a
 * pipeline executable (where it gives any: its machine code, for one), one
 * file each, named by a running number; the file starts with the statistics
 * line that names the pipeline. */
static void dump_representations(struct vk_device *dev, const VkPipelineExecutableInfoKHR *ei, const char *title)
{
    const char *dir = getenv("TURBO_VK_PROFILE_DIR");
    PFN_vkGetPipelineExecutableInternalRepresentationsKHR ir_fn =
        (PFN_vkGetPipelineExecutableInternalRepresentationsKHR)dev->fn.GetDeviceProcAddr(
            dev->device, "vkGetPipelineExecutableInternalRepresentationsKHR");
    if (!(dev->exec_stats & 2) || !dir || !*dir || !ir_fn)
        return;
    VkPipelineExecutableInternalRepresentationKHR ir[8];
    uint32_t n = 8;
    for (uint32_t i = 0; i < n; i++)
        ir[i] = (VkPipelineExecutableInternalRepresentationKHR){
            .sType = VK_STRUCTURE_TYPE_PIPELINE_EXECUTABLE_INTERNAL_REPRESENTATION_KHR };
    if (ir_fn(dev->device, ei, &n, ir) < 0)
        return;
    for (uint32_t i = 0; i < n; i++)
        ir[i].pData = ir[i].dataSize ? malloc(ir[i].dataSize) : NULL;
    if (ir_fn(dev->device, ei, &n, ir) >= 0)
        for (uint32_t i = 0; i < n; i++) {
            static unsigned counter;
            char path[1024], name[VK_MAX_DESCRIPTION_SIZE];
            size_t k = 0;
            for (; ir[i].name[k] && k + 1 < sizeof name; k++) /* a file name of its letters and digits */
                name[k] = isalnum((unsigned char)ir[i].name[k]) ? ir[i].name[k] : '_';
            name[k] = 0;
            snprintf(path, sizeof path, "%s/%03u-%s.txt", dir, counter++, name);
            FILE *f = ir[i].pData ? fopen(path, "wb") : NULL;
            if (f) {
                size_t n = ir[i].dataSize;
                if (ir[i].isText && n && ((const char *)ir[i].pData)[n - 1] == 0)
                    n--; /* text comes with its terminating NUL */
                fprintf(f, "%s\n%s: %s\n", title, ir[i].name, ir[i].description);
                fwrite(ir[i].pData, 1, n, f);
                fclose(f);
            }
        }
    for (uint32_t i = 0; i < n; i++)
        free(ir[i].pData);
}

/* The statistics the driver's compiler reports of executable e of pipeline
 * p (VK_KHR_pipeline_executable_properties; on NVIDIA its registers per
 * invocation, shared and local memory): how many it put in st, 0 if none. */
static uint32_t executable_statistics(struct vk_device *dev, VkPipeline p, uint32_t e,
                                      VkPipelineExecutableStatisticKHR st[32])
{
    PFN_vkGetPipelineExecutableStatisticsKHR stats_fn =
        (PFN_vkGetPipelineExecutableStatisticsKHR)dev->fn.GetDeviceProcAddr(dev->device, "vkGetPipelineExecutableStatisticsKHR");
    if (!stats_fn)
        return 0;
    VkPipelineExecutableInfoKHR ei = { .sType = VK_STRUCTURE_TYPE_PIPELINE_EXECUTABLE_INFO_KHR, .pipeline = p,
                                       .executableIndex = e };
    uint32_t n_st = 32;
    for (uint32_t i = 0; i < n_st; i++)
        st[i] = (VkPipelineExecutableStatisticKHR){ .sType = VK_STRUCTURE_TYPE_PIPELINE_EXECUTABLE_STATISTIC_KHR };
    VkResult r = stats_fn(dev->device, &ei, &n_st, st);
    return r == VK_SUCCESS || r == VK_INCOMPLETE ? n_st : 0;
}

/* TURBO_VK_PROFILE: the compiler's statistics of pipeline p, one stderr
 * line per executable. */
static void print_statistics(struct vk_device *dev, VkPipeline p, const char *what, const uint32_t *spec, uint32_t n)
{
    PFN_vkGetPipelineExecutablePropertiesKHR props_fn =
        (PFN_vkGetPipelineExecutablePropertiesKHR)dev->fn.GetDeviceProcAddr(dev->device, "vkGetPipelineExecutablePropertiesKHR");
    if (!props_fn)
        return;
    VkPipelineInfoKHR pi = { .sType = VK_STRUCTURE_TYPE_PIPELINE_INFO_KHR, .pipeline = p };
    VkPipelineExecutablePropertiesKHR props[4];
    uint32_t n_exec = 4;
    for (uint32_t i = 0; i < n_exec; i++)
        props[i] = (VkPipelineExecutablePropertiesKHR){ .sType = VK_STRUCTURE_TYPE_PIPELINE_EXECUTABLE_PROPERTIES_KHR };
    if (props_fn(dev->device, &pi, &n_exec, props) < 0)
        return;
    for (uint32_t e = 0; e < n_exec; e++) {
        VkPipelineExecutableInfoKHR ei = { .sType = VK_STRUCTURE_TYPE_PIPELINE_EXECUTABLE_INFO_KHR, .pipeline = p,
                                           .executableIndex = e };
        VkPipelineExecutableStatisticKHR st[32];
        const uint32_t n_st = executable_statistics(dev, p, e, st);
        char line[1024];
        int at = snprintf(line, sizeof line, "vkprof: pipeline %s (spec", what);
        for (uint32_t i = 0; i < n && at < (int)sizeof line; i++)
            at += snprintf(line + at, sizeof line - (size_t)at, " %u", spec[i]);
        for (uint32_t i = 0; i < n_st && at < (int)sizeof line; i++) {
            const VkPipelineExecutableStatisticKHR *s = &st[i];
            if (s->format == VK_PIPELINE_EXECUTABLE_STATISTIC_FORMAT_UINT64_KHR)
                at += snprintf(line + at, sizeof line - (size_t)at, "%s %s %llu", i ? "," : "):", s->name,
                               (unsigned long long)s->value.u64);
            else if (s->format == VK_PIPELINE_EXECUTABLE_STATISTIC_FORMAT_INT64_KHR)
                at += snprintf(line + at, sizeof line - (size_t)at, "%s %s %lld", i ? "," : "):", s->name,
                               (long long)s->value.i64);
            else if (s->format == VK_PIPELINE_EXECUTABLE_STATISTIC_FORMAT_FLOAT64_KHR)
                at += snprintf(line + at, sizeof line - (size_t)at, "%s %s %g", i ? "," : "):", s->name, s->value.f64);
            else
                at += snprintf(line + at, sizeof line - (size_t)at, "%s %s %s", i ? "," : "):", s->name,
                               s->value.b32 ? "yes" : "no");
        }
        fprintf(stderr, "%s%s\n", line, n_st ? "" : ")");
        dump_representations(dev, &ei, line);
    }
}

/* spec[i] is specialization constant i; n of them are given. */
int vk_create_pipeline(struct vk_device *dev, enum vk_shader which, const uint32_t *spec, uint32_t n,
                           const char *what, VkPipeline *out)
{
    VkSpecializationMapEntry entries[TKV_VK_SPEC_COUNT];
    for (uint32_t i = 0; i < n; i++)
        entries[i] = (VkSpecializationMapEntry){ .constantID = i, .offset = 4 * i, .size = 4 };
    VkSpecializationInfo specialization = {
        .mapEntryCount = n, .pMapEntries = entries, .dataSize = 4 * n, .pData = spec,
    };
    VkComputePipelineCreateInfo info = {
        .sType = VK_STRUCTURE_TYPE_COMPUTE_PIPELINE_CREATE_INFO,
        .stage = {
            .sType = VK_STRUCTURE_TYPE_PIPELINE_SHADER_STAGE_CREATE_INFO,
            .stage = VK_SHADER_STAGE_COMPUTE_BIT,
            .module = dev->modules[which],
            .pName = "main",
            .pSpecializationInfo = &specialization,
        },
        .layout = dev->layout,
        .flags = (dev->exec_stats & 5 ? VK_PIPELINE_CREATE_CAPTURE_STATISTICS_BIT_KHR : 0) |
                 (dev->exec_stats & 2 ? VK_PIPELINE_CREATE_CAPTURE_INTERNAL_REPRESENTATIONS_BIT_KHR : 0),
    };
    VkResult r = vkCreateComputePipelines(dev->device, VK_NULL_HANDLE, 1, &info, NULL, out);
    if (r != VK_SUCCESS)
        return VK_ERROR_STATUS(r == VK_ERROR_OUT_OF_HOST_MEMORY || r == VK_ERROR_OUT_OF_DEVICE_MEMORY ? TKV_ENOMEM
                                                                                                     : TKV_EDEVICE,
                               "%s: vkCreateComputePipelines failed: %s (%d)", what, vk_result_name(r), (int)r);
    if (dev->exec_stats & 1)
        print_statistics(dev, *out, what, spec, n);
    return TKV_OK;
}

/* The registers an invocation of pipeline p holds: NVIDIA's statistic
 * "Register Count" (VK_KHR_pipeline_executable_properties), else 0. */
static uint32_t register_count(struct vk_device *dev, VkPipeline p)
{
    VkPipelineExecutableStatisticKHR st[32];
    const uint32_t n_st = executable_statistics(dev, p, 0, st);
    for (uint32_t i = 0; i < n_st; i++)
        if (!strcmp(st[i].name, "Register Count") && st[i].format == VK_PIPELINE_EXECUTABLE_STATISTIC_FORMAT_UINT64_KHR &&
            st[i].value.u64 > 0 && st[i].value.u64 <= 255)
            return (uint32_t)st[i].value.u64;
    return 0;
}

/* A module whose float arithmetic reaches stored bytes or dequantized
 * values: from the SPIR-V with DenormPreserve 32 or the one without, as
 * dev->denorm_preserve says; the one given must say the same (a build that
 * embedded the wrong one fails here). */
static int create_exact_module(struct vk_device *dev, enum vk_shader which, const struct spirv *variants,
                               const char *name)
{
    const struct spirv *s = &variants[dev->denorm_preserve ? 1 : 0];
    if (vk_spirv_denorm_preserve(s->code, s->size) != dev->denorm_preserve)
        return VK_ERROR_STATUS(TKV_EPLUGIN, "open: the %s shader's SPIR-V %s the execution mode DenormPreserve 32",
                               name, dev->denorm_preserve ? "lacks" : "has");
    return create_module(dev, which, s->code, s->size, name);
}

int vk_pipelines_create(struct vk_device *dev)
{
    int rc;
    VkResult r;
    if ((rc = create_exact_module(dev, VK_SHADER_QUANTIZE, quantize_spirv[dev->fp64 ? 1 : 0], "quantize")) != TKV_OK ||
        (rc = create_exact_module(dev, VK_SHADER_ROWS, rows_spirv, "rows")) != TKV_OK ||
        (rc = create_module(dev, VK_SHADER_ATTENTION, attention_spv, sizeof attention_spv, "attention")) != TKV_OK ||
        (rc = create_module(dev, VK_SHADER_DECODE, decode_spv, sizeof decode_spv, "decode")) != TKV_OK ||
        (rc = create_module(dev, VK_SHADER_DECODE_WIDE, decode_wide_spv, sizeof decode_wide_spv, "decode_wide")) !=
            TKV_OK ||
        (rc = create_module(dev, VK_SHADER_MERGE, merge_spv, sizeof merge_spv, "merge")) != TKV_OK ||
        (dev->clock_ok &&
         (rc = create_module(dev, VK_SHADER_DECODE_CLOCK, decode_clock_spv, sizeof decode_clock_spv, "decode_clock")) !=
             TKV_OK) ||
        (dev->fp64 &&
         (rc = create_exact_module(dev, VK_SHADER_DECODE_APPEND, decode_append_spirv, "decode_append")) != TKV_OK) ||
        (dev->coopmat &&
         ((rc = create_module(dev, VK_SHADER_DECODE_TC, decode_tc_spv, sizeof decode_tc_spv, "decode_tc")) != TKV_OK ||
          (rc = create_module(dev, VK_SHADER_TC_PROBE, tc_probe_spv, sizeof tc_probe_spv, "tc_probe")) != TKV_OK)) ||
        (dev->coopmat && dev->clock_ok &&
         (rc = create_module(dev, VK_SHADER_DECODE_TC_CLOCK, decode_tc_clock_spv, sizeof decode_tc_clock_spv,
                             "decode_tc_clock")) != TKV_OK))
        return rc;
    VkPushConstantRange push = {
        .stageFlags = VK_SHADER_STAGE_COMPUTE_BIT, .offset = 0, .size = VK_PUSH_BYTES,
    };
    VkPipelineLayoutCreateInfo layout = {
        .sType = VK_STRUCTURE_TYPE_PIPELINE_LAYOUT_CREATE_INFO, .pushConstantRangeCount = 1,
        .pPushConstantRanges = &push,
    };
    if ((r = vkCreatePipelineLayout(dev->device, &layout, NULL, &dev->layout)) != VK_SUCCESS)
        return vk_fail("open", "vkCreatePipelineLayout", r);
    const uint32_t wg = TKV_VK_WG;
    if ((rc = vk_create_pipeline(dev, VK_SHADER_QUANTIZE, &wg, 1, "open: quantize pipeline", &dev->quantize)) != TKV_OK ||
        (rc = vk_create_pipeline(dev, VK_SHADER_ROWS, &wg, 1, "open: rows pipeline", &dev->rows)) != TKV_OK ||
        (rc = vk_create_pipeline(dev, VK_SHADER_MERGE, &wg, 1, "open: merge pipeline", &dev->merge)) != TKV_OK)
        return rc;
    return TKV_OK;
}

void vk_pipelines_destroy(struct vk_device *dev)
{
    for (size_t i = 0; i < dev->n_attention; i++)
        vkDestroyPipeline(dev->device, dev->attention[i].pipeline, NULL);
    free(dev->attention);
    dev->attention = NULL;
    dev->n_attention = dev->cap_attention = 0;
    vkDestroyPipeline(dev->device, dev->quantize, NULL);
    vkDestroyPipeline(dev->device, dev->rows, NULL);
    vkDestroyPipeline(dev->device, dev->merge, NULL);
    vkDestroyPipelineLayout(dev->device, dev->layout, NULL);
    for (int i = 0; i < VK_SHADER_COUNT; i++)
        vkDestroyShaderModule(dev->device, dev->modules[i], NULL);
}

int vk_attention_pipeline(struct vk_device *dev, enum vk_shader shader, const uint32_t spec[TKV_VK_SPEC_COUNT],
                          VkPipeline *out, uint32_t *resident)
{
    for (size_t i = 0; i < dev->n_attention; i++)
        if (dev->attention[i].shader == shader && memcmp(dev->attention[i].spec, spec, sizeof dev->attention[i].spec) == 0) {
            *out = dev->attention[i].pipeline;
            if (resident)
                *resident = dev->attention[i].resident;
            return TKV_OK;
        }
    if (dev->n_attention == dev->cap_attention) {
        size_t cap = dev->cap_attention ? 2 * dev->cap_attention : 16;
        struct vk_attention_pipeline *grown = realloc(dev->attention, cap * sizeof *grown);
        if (!grown)
            return VK_ERROR_STATUS(TKV_ENOMEM, "attention: no host memory for the pipeline table");
        dev->attention = grown;
        dev->cap_attention = cap;
    }
    struct vk_attention_pipeline *p = &dev->attention[dev->n_attention];
    memcpy(p->spec, spec, sizeof p->spec);
    p->shader = shader;
    int rc = vk_create_pipeline(dev, shader, spec, TKV_VK_SPEC_COUNT,
                             shader == VK_SHADER_DECODE        ? "attention: decode pipeline"
                             : shader == VK_SHADER_DECODE_CLOCK ? "attention: decode_clock pipeline"
                             : shader == VK_SHADER_DECODE_WIDE ? "attention: decode_wide pipeline"
                             : shader == VK_SHADER_DECODE_APPEND ? "attention: decode_append pipeline"
                             : shader == VK_SHADER_DECODE_TC   ? "attention: decode_tc pipeline"
                             : shader == VK_SHADER_DECODE_TC_CLOCK ? "attention: decode_tc_clock pipeline"
                                                               : "attention: pipeline",
                             &p->pipeline);
    if (rc != TKV_OK)
        return rc;
    p->resident = dev->exec_stats & 4 ? vk_resident_workgroups(register_count(dev, p->pipeline), TKV_VK_WG,
                                                                dev->warps_per_sm)
                                      : 0;
    dev->n_attention++;
    *out = p->pipeline;
    if (resident)
        *resident = p->resident;
    return TKV_OK;
}
