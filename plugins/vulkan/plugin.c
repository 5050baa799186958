/* SPDX-License-Identifier: MIT */
/*
 * turbokv-vulkan: the module entry, device discovery, capabilities and
 * opening, the buffers the core allocates, stats. The math runs in the
 * shaders (shaders/), recorded by quantize.c and attention.c.
 *
 * The module links the Vulkan loader and nothing of the core: it is handed
 * the core's services in init() and the format's tables in open(). The core
 * validates every op's arguments against the ABI's preconditions and this
 * plugin's device_caps before calling; what is checked here is what only
 * the plugin knows: its devices, their limits and errors.
 */
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "turbokv.h" /* TKV_VERSION_STRING */
#include "vk.h"

const struct tkv_services *vk_svc;

/* Attention workgroups that keep a GPU busy (a wave or two of a large one);
 * on a CPU driver, a few per core. */
#define VK_GPU_WORKGROUPS 1024u
#define VK_CPU_WORKGROUPS_PER_CORE 4u

/* ---- measurement knobs (README "Measurement knobs") ----------------------- */

void vk_knobs_read(struct vk_device *dev)
{
    struct vk_knobs *k = &dev->knobs;
    const char *v;
    k->profile = (v = getenv("TURBO_VK_PROFILE")) && *v && strcmp(v, "0") != 0;
    k->clock = (v = getenv("TURBO_VK_CLOCK")) && *v && strcmp(v, "0") != 0;
    /* The attention pipelines take the constant tables' address as a
     * specialization constant: a new address (every open, every process)
     * is a new pipeline for the driver's shader cache. A CPU driver
     * (lavapipe) compiles a decode pipeline in seconds, so there the
     * shaders read the address from the head of the call's inputs and
     * their pipelines are the same in every process. GPUs keep the
     * constant: read from memory it made turbo3o's decode 1.4-2.6x slower
     * on an H100 (docs/measurements/gpu-2026-12-07-s26/). */
    k->math_in_inputs = dev->props.deviceType == VK_PHYSICAL_DEVICE_TYPE_CPU;
    if ((v = getenv("TURBO_VK_MATH")) && *v)
        k->math_in_inputs = strcmp(v, "inputs") == 0 ? 1 : strcmp(v, "spec") == 0 ? 0 : k->math_in_inputs;
    if ((v = getenv("TURBO_VK_REPEAT")) && atoi(v) > 1)
        k->repeat = (uint32_t)atoi(v);
    if ((v = getenv("TURBO_VK_CACHE_MEMORY")))
        k->cache_memory = strcmp(v, "host") == 0 ? 1 : strcmp(v, "bar") == 0 ? 2 : 0;
    if ((v = getenv("TURBO_VK_SKIP"))) {
        static const struct { const char *name; uint32_t bit; } names[] = {
            { "upload", VK_SKIP_UPLOAD },       { "prepare", VK_SKIP_PREPARE }, { "attention", VK_SKIP_ATTENTION },
            { "merge", VK_SKIP_MERGE },         { "download", VK_SKIP_DOWNLOAD }, { "empty", VK_EMPTY_ATTENTION },
        };
        for (size_t i = 0; i < sizeof names / sizeof names[0]; i++)
            if (strstr(v, names[i].name))
                k->skip |= names[i].bit;
    }
    if ((v = getenv("TURBO_VK_SHADER_SKIP"))) {
        static const struct { const char *name; uint32_t bit; } names[] = {
            { "kloads", TKV_VK_DBG_NO_K_LOADS }, { "scores", TKV_VK_DBG_NO_SCORES },
            { "vloads", TKV_VK_DBG_NO_V_LOADS }, { "values", TKV_VK_DBG_NO_VALUES },
            { "sync", TKV_VK_DBG_NO_SYNC },      { "blocks", TKV_VK_DBG_NO_BLOCKS },
            { "koutliers", TKV_VK_DBG_NO_K_OUTLIERS }, { "voutliers", TKV_VK_DBG_NO_V_OUTLIERS },
        };
        for (size_t i = 0; i < sizeof names / sizeof names[0]; i++)
            if (strstr(v, names[i].name))
                k->shader_skip |= names[i].bit;
    }
    if ((v = getenv("TURBO_VK_BATCH_ROWS")) && atoi(v) > 0)
        k->batch_rows = (uint32_t)atoi(v);
    k->staged_io = (v = getenv("TURBO_VK_STAGED_IO")) && *v && strcmp(v, "0") != 0;
    k->separate_prepare = (v = getenv("TURBO_VK_PREPARE")) && *v && strcmp(v, "0") != 0;
    k->no_decode = (v = getenv("TURBO_VK_DECODE")) && !strcmp(v, "0");
    k->no_fused_step = (v = getenv("TURBO_VK_FUSED_STEP")) && !strcmp(v, "0");
    k->no_grid_shift = v && !strcmp(v, "noshift");
    k->tc = (v = getenv("TURBO_VK_TC")) && !strcmp(v, "1");
    k->no_input_barrier = (v = getenv("TURBO_VK_INPUT_BARRIER")) && !strcmp(v, "0");
    k->no_input_ring = (v = getenv("TURBO_VK_INPUT_RING")) && !strcmp(v, "0");
    k->merge_dispatch = (v = getenv("TURBO_VK_MERGE")) && *v && strcmp(v, "0") != 0;
    if ((v = getenv("TURBO_VK_DECODE_QT")) && atoi(v) > 0 && atoi(v) <= 16)
        k->decode_qt = (uint32_t)atoi(v);
    if ((v = getenv("TURBO_VK_DECODE_VROWS")) && (atoi(v) == 1 || atoi(v) == 2 || atoi(v) == 4))
        k->v_rows = (uint32_t)atoi(v);
    if ((v = getenv("TURBO_VK_MERGE_ILP")) && atoi(v) > 0 && atoi(v) <= 16)
        k->merge_ilp = (uint32_t)atoi(v);
    k->no_wide = (v = getenv("TURBO_VK_WIDE")) && !strcmp(v, "0");
    k->wide_unaligned = v && !strcmp(v, "2");
    if ((v = getenv("TURBO_VK_WIDE_WORDS")) && atoi(v) > 0 && atoi(v) <= 256)
        k->wide_words = (uint32_t)atoi(v);
    if ((v = getenv("TURBO_VK_MIN_CHUNK")) && atoi(v) > 0)
        k->min_chunk = (uint32_t)atoi(v);
    if ((v = getenv("TURBO_VK_WORKGROUPS")) && atoi(v) > 0) {
        dev->target_workgroups = (uint32_t)atoi(v);
        dev->workgroups_set = 1;
    }
    if (k->profile) {
        const VkPhysicalDeviceMemoryProperties *m = &dev->memory;
        for (uint32_t i = 0; i < m->memoryHeapCount; i++)
            fprintf(stderr, "vkprof: heap %u: %llu MiB, flags 0x%x\n", i,
                    (unsigned long long)(m->memoryHeaps[i].size >> 20), (unsigned)m->memoryHeaps[i].flags);
        for (uint32_t i = 0; i < m->memoryTypeCount; i++)
            fprintf(stderr, "vkprof: type %u: heap %u, flags 0x%x\n", i, m->memoryTypes[i].heapIndex,
                    (unsigned)m->memoryTypes[i].propertyFlags);
        fprintf(stderr,
                "vkprof: skip 0x%x shader skip 0x%x batch rows %u repeat %u cache memory %d target workgroups %u "
                "staged io %d separate prepare %d decode %s merge %s min chunk %u subgroup %u SMs %u warps an SM %u\n",
                k->skip, k->shader_skip, k->batch_rows, k->repeat, k->cache_memory, dev->target_workgroups,
                k->staged_io, k->separate_prepare, k->no_decode ? "off" : "on",
                k->merge_dispatch ? "dispatch" : "in decode", k->min_chunk, dev->subgroup, dev->sm_count,
                dev->warps_per_sm);
    }
}

/* ---- fp32 subnormals (README "fp32 subnormals") ---------------------------- */

int vk_denorm_choose(int reported, const char **setting)
{
    const char *v = getenv("TURBO_VK_DENORM");
    if (!v || !*v)
        v = "auto";
    *setting = v;
    if (!strcmp(v, "auto"))
        return reported ? 1 : 0;
    if (!strcmp(v, "preserve"))
        return 1;
    if (!strcmp(v, "off"))
        return 0;
    return -1;
}

/* Which SPIR-V the quantize and rows shaders come from (preserve: the
 * one with DenormPreserve 32; -1: TURBO_VK_DENORM is wrong) on a device
 * that does or does not report shaderDenormPreserveFloat32, for its driver
 * line and the open log: "DenormPreserve 32 (TURBO_VK_DENORM=auto,
 * reported)". */
static void denorm_describe(int preserve, int reported, char *out, size_t size)
{
    const char *setting;
    vk_denorm_choose(reported, &setting);
    if (preserve < 0)
        snprintf(out, size, "TURBO_VK_DENORM=%.16s is not auto, preserve or off", setting);
    else
        snprintf(out, size, "%s (TURBO_VK_DENORM=%.10s, %s)", preserve ? "DenormPreserve 32" : "no DenormPreserve",
                 setting, reported ? "reported" : "not reported");
}

/* ---- the Vulkan functions ------------------------------------------------ */

const char *vk_fns_instance(struct vk_fns *fn, PFN_vkGetInstanceProcAddr gipa, VkInstance instance)
{
#define LOAD(name)                                                                                 \
    if (!(fn->name = (PFN_vk##name)gipa(instance, "vk" #name)))                                    \
        return "vk" #name;
    VK_INSTANCE_FNS(LOAD)
#undef LOAD
    fn->GetPhysicalDeviceCooperativeMatrixPropertiesNV =
        (PFN_vkGetPhysicalDeviceCooperativeMatrixPropertiesNV)gipa(instance, "vkGetPhysicalDeviceCooperativeMatrixPropertiesNV");
    return NULL;
}

const char *vk_fns_device(struct vk_fns *fn, VkDevice device)
{
#define LOAD(name)                                                                                 \
    if (!(fn->name = (PFN_vk##name)fn->GetDeviceProcAddr(device, "vk" #name)))                     \
        return "vk" #name;
    VK_DEVICE_FNS(LOAD)
#undef LOAD
    return NULL;
}

static int vk_init(const struct tkv_services *svc)
{
    vk_svc = svc;
    return TKV_OK;
}

/* ---- discovery ----------------------------------------------------------- */

/* What a usable physical device offers. */
struct vk_candidate {
    VkPhysicalDevice physical;
    uint32_t queue_family;
    uint32_t timestamp_bits; /* the queue family's timestampValidBits (0: no timestamps) */
    int fp64;
    int denorm_reported; /* shaderDenormPreserveFloat32 */
    uint32_t subgroup; /* the subgroup size where it is fixed (min = max), else 0 */
    int subgroup_wide; /* subgroup shuffles and ballots in compute (decode_wide.comp) */
    VkPhysicalDeviceProperties props;
    uint64_t max_allocation; /* the largest buffer: maxMemoryAllocationSize, and maxBufferSize where known */
    int exec_stats; /* VK_KHR_pipeline_executable_properties: TURBO_VK_PROFILE prints the compiler's statistics */
    int shader_clock; /* VK_KHR_shader_clock: TURBO_VK_CLOCK's clock records */
    uint32_t sm_count, warps_per_sm; /* VK_NV_shader_sm_builtins: streaming multiprocessors, warps each holds */
    int coopmat; /* VK_NV_cooperative_matrix with the 16x8x16 fp16 x fp16 + fp32 shape a subgroup of 32 runs,
                  * shaderFloat16, the Vulkan memory model (at device scope) and subgroup shuffles and votes */
    char driver[128];
};

/* The plugin's own instance, its functions in fn. */
static int create_instance(VkInstance *instance, struct vk_fns *fn, const char *op)
{
    uint32_t version = VK_API_VERSION_1_0;
    VkResult r = vkEnumerateInstanceVersion(&version);
    if (r != VK_SUCCESS)
        return vk_fail(op, "vkEnumerateInstanceVersion", r);
    if (version < VK_API_VERSION_1_2)
        return VK_ERROR_STATUS(TKV_ENODEV, "%s: the Vulkan loader offers %u.%u, turbokv-vulkan needs 1.2", op,
                               VK_API_VERSION_MAJOR(version), VK_API_VERSION_MINOR(version));
    VkApplicationInfo app = {
        .sType = VK_STRUCTURE_TYPE_APPLICATION_INFO,
        .pApplicationName = "turbokv",
        .pEngineName = "turbokv-vulkan",
        .apiVersion = VK_API_VERSION_1_2,
    };
    VkInstanceCreateInfo info = { .sType = VK_STRUCTURE_TYPE_INSTANCE_CREATE_INFO, .pApplicationInfo = &app };
    if ((r = vkCreateInstance(&info, NULL, instance)) != VK_SUCCESS)
        return vk_fail(op, "vkCreateInstance", r);
    const char *missing = vk_fns_instance(fn, vkGetInstanceProcAddr, *instance);
    if (missing) {
        PFN_vkDestroyInstance destroy = (PFN_vkDestroyInstance)vkGetInstanceProcAddr(*instance, "vkDestroyInstance");
        if (destroy)
            destroy(*instance, NULL);
        *instance = VK_NULL_HANDLE;
        return VK_ERROR_STATUS(TKV_ENODEV, "%s: the Vulkan loader has no %s", op, missing);
    }
    return TKV_OK;
}

/* Whether decode_tc can run on physical (VK_NV_cooperative_matrix listed):
 * the 16x8x16 shape of fp16 A and B, fp32 C and D at subgroup scope, the
 * features it needs, subgroups of 32 with shuffles and votes. */
static int coopmat_usable(const struct vk_fns *fn, VkPhysicalDevice physical,
                          const VkPhysicalDeviceVulkan12Features *f12, const VkPhysicalDeviceVulkan11Properties *p11)
{
    VkPhysicalDeviceCooperativeMatrixFeaturesNV cm = { .sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_COOPERATIVE_MATRIX_FEATURES_NV };
    VkPhysicalDeviceFeatures2 f2 = { .sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_FEATURES_2, .pNext = &cm };
    fn->GetPhysicalDeviceFeatures2(physical, &f2);
    VkPhysicalDeviceCooperativeMatrixPropertiesNV cp = {
        .sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_COOPERATIVE_MATRIX_PROPERTIES_NV,
    };
    VkPhysicalDeviceProperties2 p2 = { .sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_PROPERTIES_2, .pNext = &cp };
    fn->GetPhysicalDeviceProperties2(physical, &p2);
    const VkSubgroupFeatureFlags ops = VK_SUBGROUP_FEATURE_SHUFFLE_BIT | VK_SUBGROUP_FEATURE_VOTE_BIT;
    if (!cm.cooperativeMatrix || !f12->shaderFloat16 || !f12->vulkanMemoryModel ||
        !f12->vulkanMemoryModelDeviceScope || p11->subgroupSize != 32 ||
        (p11->subgroupSupportedOperations & ops) != ops ||
        !(cp.cooperativeMatrixSupportedStages & VK_SHADER_STAGE_COMPUTE_BIT))
        return 0;
    VkCooperativeMatrixPropertiesNV shapes[64];
    uint32_t n = 64;
    for (uint32_t i = 0; i < n; i++)
        shapes[i] = (VkCooperativeMatrixPropertiesNV){ .sType = VK_STRUCTURE_TYPE_COOPERATIVE_MATRIX_PROPERTIES_NV };
    VkResult r = fn->GetPhysicalDeviceCooperativeMatrixPropertiesNV(physical, &n, shapes);
    if (r != VK_SUCCESS && r != VK_INCOMPLETE)
        return 0;
    for (uint32_t i = 0; i < n; i++)
        if (shapes[i].MSize == 16 && shapes[i].NSize == 8 && shapes[i].KSize == 16 &&
            shapes[i].AType == VK_COMPONENT_TYPE_FLOAT16_NV && shapes[i].BType == VK_COMPONENT_TYPE_FLOAT16_NV &&
            shapes[i].CType == VK_COMPONENT_TYPE_FLOAT32_NV && shapes[i].DType == VK_COMPONENT_TYPE_FLOAT32_NV &&
            shapes[i].scope == VK_SCOPE_SUBGROUP_NV)
            return 1;
    return 0;
}

/* Fills c for a device the shaders can run on; otherwise returns 0 with
 * the reason in why. */
static int usable(const struct vk_fns *fn, VkPhysicalDevice physical, struct vk_candidate *c, char *why, size_t size)
{
    memset(c, 0, sizeof *c);
    c->physical = physical;
    fn->GetPhysicalDeviceProperties(physical, &c->props);
    if (c->props.apiVersion < VK_API_VERSION_1_2) {
        snprintf(why, size, "Vulkan %u.%u (1.2 needed)", VK_API_VERSION_MAJOR(c->props.apiVersion),
                 VK_API_VERSION_MINOR(c->props.apiVersion));
        return 0;
    }
    VkPhysicalDeviceVulkan12Properties p12 = { .sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_VULKAN_1_2_PROPERTIES };
    VkPhysicalDeviceVulkan11Properties p11 = {
        .sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_VULKAN_1_1_PROPERTIES, .pNext = &p12,
    };
    VkPhysicalDeviceProperties2 p2 = { .sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_PROPERTIES_2, .pNext = &p11 };
    fn->GetPhysicalDeviceProperties2(physical, &p2);
    VkPhysicalDeviceVulkan12Features f12 = { .sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_VULKAN_1_2_FEATURES };
    VkPhysicalDeviceFeatures2 f2 = { .sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_FEATURES_2, .pNext = &f12 };
    fn->GetPhysicalDeviceFeatures2(physical, &f2);
    const VkPhysicalDeviceLimits *lim = &c->props.limits;
    const VkSubgroupFeatureFlags ops = VK_SUBGROUP_FEATURE_BASIC_BIT | VK_SUBGROUP_FEATURE_ARITHMETIC_BIT;
    const char *missing = !f12.bufferDeviceAddress         ? "bufferDeviceAddress"
                          : !f12.storageBuffer8BitAccess   ? "storageBuffer8BitAccess"
                          : !f12.shaderInt8                ? "shaderInt8"
                          : !f2.features.shaderInt64       ? "shaderInt64"
                          : !(p11.subgroupSupportedStages & VK_SHADER_STAGE_COMPUTE_BIT) ? "subgroups in compute shaders"
                          : (p11.subgroupSupportedOperations & ops) != ops ? "subgroup arithmetic"
                          : lim->maxComputeSharedMemorySize < 32768u     ? "32 KB of shared memory"
                          : lim->maxComputeWorkGroupSize[0] < TKV_VK_WG ||
                                  lim->maxComputeWorkGroupInvocations < TKV_VK_WG
                              ? "128-invocation workgroups"
                          : lim->maxPushConstantsSize < VK_PUSH_BYTES ? "128 bytes of push constants"
                                                                       : NULL;
    if (missing) {
        snprintf(why, size, "no %s", missing);
        return 0;
    }
    uint32_t n = 0;
    fn->GetPhysicalDeviceQueueFamilyProperties(physical, &n, NULL);
    VkQueueFamilyProperties families[32];
    n = n < 32 ? n : 32;
    fn->GetPhysicalDeviceQueueFamilyProperties(physical, &n, families);
    uint32_t q = 0;
    while (q < n && !(families[q].queueFlags & VK_QUEUE_COMPUTE_BIT))
        q++;
    if (q == n) {
        snprintf(why, size, "no compute queue");
        return 0;
    }
    c->queue_family = q;
    c->timestamp_bits = families[q].timestampValidBits;
    c->fp64 = f2.features.shaderFloat64 != 0;
    c->denorm_reported = p12.shaderDenormPreserveFloat32 != 0;
    const VkSubgroupFeatureFlags wide_ops = VK_SUBGROUP_FEATURE_SHUFFLE_BIT | VK_SUBGROUP_FEATURE_BALLOT_BIT;
    c->subgroup_wide = (p11.subgroupSupportedOperations & wide_ops) == wide_ops;
    /* decode.comp sizes its registers by the subgroup: only where every
     * compute subgroup has the same size (Vulkan 1.3 reports the range) */
    if (c->props.apiVersion >= VK_API_VERSION_1_3) {
        VkPhysicalDeviceVulkan13Properties p13 = { .sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_VULKAN_1_3_PROPERTIES };
        VkPhysicalDeviceProperties2 p2b = { .sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_PROPERTIES_2, .pNext = &p13 };
        fn->GetPhysicalDeviceProperties2(physical, &p2b);
        if (p13.minSubgroupSize == p13.maxSubgroupSize && p13.minSubgroupSize == p11.subgroupSize)
            c->subgroup = p11.subgroupSize;
    }
    c->max_allocation = p11.maxMemoryAllocationSize;
    /* maintenance4 adds maxBufferSize, which may be below the largest
     * allocation; the query is valid wherever the device has the extension */
    uint32_t n_ext = 0;
    if (fn->EnumerateDeviceExtensionProperties(physical, NULL, &n_ext, NULL) == VK_SUCCESS && n_ext) {
        VkExtensionProperties *ext = calloc(n_ext, sizeof *ext);
        int maintenance4 = 0, sm_builtins = 0, coopmat = 0;
        if (ext && fn->EnumerateDeviceExtensionProperties(physical, NULL, &n_ext, ext) == VK_SUCCESS)
            for (uint32_t i = 0; i < n_ext; i++) {
                maintenance4 |= !strcmp(ext[i].extensionName, VK_KHR_MAINTENANCE_4_EXTENSION_NAME);
                c->exec_stats |= !strcmp(ext[i].extensionName, VK_KHR_PIPELINE_EXECUTABLE_PROPERTIES_EXTENSION_NAME);
                c->shader_clock |= !strcmp(ext[i].extensionName, VK_KHR_SHADER_CLOCK_EXTENSION_NAME);
                sm_builtins |= !strcmp(ext[i].extensionName, VK_NV_SHADER_SM_BUILTINS_EXTENSION_NAME);
                coopmat |= !strcmp(ext[i].extensionName, VK_NV_COOPERATIVE_MATRIX_EXTENSION_NAME);
            }
        free(ext);
        if (coopmat && fn->GetPhysicalDeviceCooperativeMatrixPropertiesNV)
            c->coopmat = coopmat_usable(fn, physical, &f12, &p11);
        if (sm_builtins) { /* a property query: the extension need not be enabled */
            VkPhysicalDeviceShaderSMBuiltinsPropertiesNV sm = {
                .sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_SHADER_SM_BUILTINS_PROPERTIES_NV,
            };
            VkPhysicalDeviceProperties2 ps = { .sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_PROPERTIES_2, .pNext = &sm };
            fn->GetPhysicalDeviceProperties2(physical, &ps);
            c->sm_count = sm.shaderSMCount;
            c->warps_per_sm = sm.shaderWarpsPerSM;
        }
        if (maintenance4) {
            VkPhysicalDeviceMaintenance4PropertiesKHR m4 = {
                .sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_MAINTENANCE_4_PROPERTIES_KHR,
            };
            VkPhysicalDeviceProperties2 pm = { .sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_PROPERTIES_2, .pNext = &m4 };
            fn->GetPhysicalDeviceProperties2(physical, &pm);
            if (m4.maxBufferSize && m4.maxBufferSize < c->max_allocation)
                c->max_allocation = m4.maxBufferSize;
        }
    }
    int at = snprintf(c->driver, sizeof c->driver, "%.40s %.60s, Vulkan %u.%u.%u", p12.driverName, p12.driverInfo,
                      VK_API_VERSION_MAJOR(c->props.apiVersion), VK_API_VERSION_MINOR(c->props.apiVersion),
                      VK_API_VERSION_PATCH(c->props.apiVersion));
    if (c->sm_count && at > 0 && (size_t)at < sizeof c->driver) /* what sizes the attention dispatch */
        at += snprintf(c->driver + at, sizeof c->driver - (size_t)at, ", %u SMs", c->sm_count);
    if (c->coopmat && at > 0 && (size_t)at < sizeof c->driver) /* decode_tc, opt-in (tensor.c) */
        snprintf(c->driver + at, sizeof c->driver - (size_t)at, ", tensor cores with TURBO_VK_TC=1");
    return 1;
}

/* The usable devices, in enumeration order: probe's device i is open's. */
static int list_devices(const struct vk_fns *fn, VkInstance instance, struct vk_candidate *list, uint32_t max,
                        uint32_t *n_usable, const char *op)
{
    uint32_t n = 0;
    VkResult r = fn->EnumeratePhysicalDevices(instance, &n, NULL);
    if (r != VK_SUCCESS)
        return vk_fail(op, "vkEnumeratePhysicalDevices", r);
    VkPhysicalDevice *all = calloc(n ? n : 1, sizeof *all);
    if (!all)
        return VK_ERROR_STATUS(TKV_ENOMEM, "%s: no host memory to list %u devices", op, n);
    r = fn->EnumeratePhysicalDevices(instance, &n, all);
    if (r != VK_SUCCESS && r != VK_INCOMPLETE) {
        free(all);
        return vk_fail(op, "vkEnumeratePhysicalDevices", r);
    }
    *n_usable = 0;
    for (uint32_t i = 0; i < n; i++) {
        struct vk_candidate c;
        char why[128];
        if (!usable(fn, all[i], &c, why, sizeof why)) {
            vk_svc->log(TKV_LOG_INFO, "vulkan: device %s is not usable: %s", c.props.deviceName, why);
            continue;
        }
        if (*n_usable < max)
            list[*n_usable] = c;
        (*n_usable)++;
    }
    free(all);
    return TKV_OK;
}

static uint64_t device_memory(const struct vk_fns *fn, VkPhysicalDevice physical)
{
    VkPhysicalDeviceMemoryProperties m;
    uint64_t best = 0;
    fn->GetPhysicalDeviceMemoryProperties(physical, &m);
    for (uint32_t i = 0; i < m.memoryHeapCount; i++)
        if ((m.memoryHeaps[i].flags & VK_MEMORY_HEAP_DEVICE_LOCAL_BIT) && m.memoryHeaps[i].size > best)
            best = m.memoryHeaps[i].size;
    return best;
}

/* A device as probe() lists it. */
static void describe(const struct vk_fns *fn, const struct vk_candidate *c, struct tkv_device_info *d)
{
    memset(d, 0, sizeof *d);
    d->struct_size = sizeof *d;
    switch (c->props.deviceType) {
    case VK_PHYSICAL_DEVICE_TYPE_DISCRETE_GPU: d->kind = TKV_DEVICE_GPU_DISCRETE, d->score = 1000; break;
    case VK_PHYSICAL_DEVICE_TYPE_INTEGRATED_GPU:
    case VK_PHYSICAL_DEVICE_TYPE_VIRTUAL_GPU: d->kind = TKV_DEVICE_GPU_INTEGRATED, d->score = 500; break;
    /* a CPU running the Vulkan API (lavapipe) scores below the cpu
     * plugin's 100: backend auto prefers plain cpu to it */
    default: d->kind = TKV_DEVICE_SOFTWARE, d->score = 50; break;
    }
    d->memory_bytes = device_memory(fn, c->physical);
    snprintf(d->name, sizeof d->name, "%.127s", c->props.deviceName);
    char denorm[72];
    const char *setting;
    denorm_describe(vk_denorm_choose(c->denorm_reported, &setting), c->denorm_reported, denorm, sizeof denorm);
    /* the driver's part cut where both would not fit in the 120 characters
     * the core's plugin report shows (the phrase has at most 61) */
    snprintf(d->driver, sizeof d->driver, "%.*s; %s", (int)(120 - 2 - strlen(denorm)), c->driver, denorm);
}

static int vk_probe(struct tkv_device_info *devs, uint32_t max, uint32_t *n_found)
{
    VkInstance instance;
    struct vk_fns fn;
    struct vk_candidate list[16];
    uint32_t n = 0;
    int rc;
    *n_found = 0;
    if ((rc = create_instance(&instance, &fn, "probe")) != TKV_OK)
        return rc;
    rc = list_devices(&fn, instance, list, 16, &n, "probe");
    for (uint32_t i = 0; rc == TKV_OK && i < n && i < max && i < 16; i++)
        describe(&fn, &list[i], &devs[i]);
    fn.DestroyInstance(instance, NULL);
    if (rc == TKV_OK)
        *n_found = n;
    return rc;
}

/* ---- capabilities -------------------------------------------------------- */

/* What every usable device runs: the shaders store and attend every type
 * (the QJL types as keys only: their residual sketch corrects inner
 * products, which values are not used for), every rotation and scale mode,
 * every head_dim the format allows, any block size and query count. Buffers
 * are reached through device addresses with 64-bit offsets, never through
 * descriptor ranges, so maxStorageBufferRange does not bound them; the
 * largest is the largest allocation (or maxBufferSize, where the device
 * reports a smaller one), less the slack every buffer carries. */
static void fill_caps(const struct vk_candidate *c, uint32_t extra, struct tkv_device_caps *caps)
{
    uint32_t all = 0, values = 0;
    /* format revision 1: the outlier-split types (TKV_CAP_OUTLIER_TYPES),
     * not the rotor rotation */
    for (uint32_t t = 0; t <= TKV_TYPE_TURBO4_OUT; t++) {
        all |= 1u << t;
        if (!tkv_type_is_qjl(t))
            values |= 1u << t;
    }
    caps->features = TKV_CAP_PAGED | TKV_CAP_MIXED_NQ | TKV_CAP_WINDOW | TKV_CAP_SOFTCAP | TKV_CAP_LSE |
                     TKV_CAP_BUFFER_COPY | TKV_CAP_OUTLIER_TYPES | extra;
    caps->k_types = all;
    caps->v_types = values;
    caps->rotations = 1u << TKV_ROTATION_WHT | 1u << TKV_ROTATION_DENSE | 1u << TKV_ROTATION_NONE;
    caps->scale_modes = 1u << TKV_SCALE_NORM | 1u << TKV_SCALE_NORM_CORRECTED;
    caps->head_dim_max = TKV_HEAD_DIM_MAX;
    caps->max_block_tokens = 0;
    caps->max_q_per_seq = 0;
    caps->max_buffer_bytes = c->max_allocation - VK_BUFFER_SLACK;
}

static int give_caps(const struct vk_candidate *c, uint32_t extra, struct tkv_device_caps *caps);

static int vk_device_caps(uint32_t device_index, struct tkv_device_caps *caps)
{
    VkInstance instance;
    struct vk_fns fn;
    struct vk_candidate list[16];
    uint32_t n = 0;
    int rc;
    if ((rc = create_instance(&instance, &fn, "device_caps")) != TKV_OK)
        return rc;
    rc = list_devices(&fn, instance, list, 16, &n, "device_caps");
    fn.DestroyInstance(instance, NULL);
    if (rc != TKV_OK)
        return rc;
    if (device_index >= n || device_index >= 16)
        return VK_ERROR_STATUS(TKV_ERANGE, "device_caps: device %u does not exist (%u usable Vulkan devices)",
                               device_index, n);
    /* a device of its own: no device tensors (they are the host's buffers),
     * but the plugin can open on the host's device */
    return give_caps(&list[device_index], TKV_CAP_HOST_DEVICE, caps);
}

/* Fills a whole struct, hands over what the core's struct_size covers. */
static int give_caps(const struct vk_candidate *c, uint32_t extra, struct tkv_device_caps *caps)
{
    struct tkv_device_caps full = { .struct_size = sizeof full };
    fill_caps(c, extra, &full);
    size_t covered = caps->struct_size < sizeof full ? caps->struct_size : sizeof full;
    if (covered > sizeof full.struct_size)
        memcpy((char *)caps + sizeof full.struct_size, (const char *)&full + sizeof full.struct_size,
               covered - sizeof full.struct_size);
    return TKV_OK;
}

/* ---- the device ---------------------------------------------------------- */

/* Memory types best first: device-local ones the host cannot see before
 * the others (a discrete GPU's host-visible window is small); host-visible
 * coherent ones with host caching first (the host reads results back). */
static void rank_memory_types(struct vk_device *dev)
{
    const VkMemoryPropertyFlags local = VK_MEMORY_PROPERTY_DEVICE_LOCAL_BIT,
                                visible = VK_MEMORY_PROPERTY_HOST_VISIBLE_BIT,
                                coherent = VK_MEMORY_PROPERTY_HOST_VISIBLE_BIT | VK_MEMORY_PROPERTY_HOST_COHERENT_BIT,
                                cached = VK_MEMORY_PROPERTY_HOST_CACHED_BIT;
    const VkPhysicalDeviceMemoryProperties *m = &dev->memory;
    for (int pass = 0; pass < 3; pass++)
        for (uint32_t i = 0; i < m->memoryTypeCount; i++) {
            VkMemoryPropertyFlags f = m->memoryTypes[i].propertyFlags;
            if ((pass == 0 && (f & local) && !(f & visible)) || (pass == 1 && (f & local) && (f & visible)) ||
                (pass == 2 && !(f & local)))
                dev->device_types[dev->n_device_types++] = i;
        }
    for (int pass = 0; pass < 2; pass++)
        for (uint32_t i = 0; i < m->memoryTypeCount; i++) {
            VkMemoryPropertyFlags f = m->memoryTypes[i].propertyFlags;
            if ((f & coherent) == coherent && (pass == 0) == ((f & cached) != 0))
                dev->host_types[dev->n_host_types++] = i;
        }
}

static void vk_close(void *dev_)
{
    struct vk_device *dev = dev_;
    if (!dev)
        return;
    if (dev->device) {
        /* on the host's device, its queue: what turbokv submitted there (the
         * host has run and waited for the command buffers it recorded into) */
        if (dev->adopted)
            vkQueueWaitIdle(dev->queue);
        else
            vkDeviceWaitIdle(dev->device);
        uint32_t leaked = 0;
        while (dev->live.next && dev->live.next != &dev->live) {
            struct vk_buffer *b = dev->live.next;
            dev->live.next = b->next;
            vk_buffer_destroy(dev, b);
            leaked++;
        }
        if (leaked)
            vk_svc->log(TKV_LOG_WARN, "vulkan: close freed %u buffers the host had not freed", leaked);
        free(dev->pending); /* copies into buffers nobody can read any more */
        vk_collect(dev, 1);
        free(dev->retired);
        vk_host_release(dev);
        for (uint32_t i = 0; i < VK_RING_SLOTS; i++)
            if (dev->ring[i].fence)
                vkDestroyFence(dev->device, dev->ring[i].fence, NULL);
        vk_buffer_destroy(dev, dev->math_buf);
        vk_buffer_destroy(dev, dev->staging);
        vk_buffer_destroy(dev, dev->work);
        vk_buffer_destroy(dev, dev->inputs);
        vk_buffer_destroy(dev, dev->outputs);
        vk_buffer_destroy(dev, dev->arrivals);
        vk_buffer_destroy(dev, dev->clocks);
        free(dev->knobs.last_upload);
        vk_pipelines_destroy(dev);
        if (dev->fence)
            vkDestroyFence(dev->device, dev->fence, NULL);
        if (dev->timestamps)
            vkDestroyQueryPool(dev->device, dev->timestamps, NULL);
        if (dev->pool) /* its command buffers with it */
            vkDestroyCommandPool(dev->device, dev->pool, NULL);
        if (!dev->adopted)
            vkDestroyDevice(dev->device, NULL);
    }
    if (dev->instance && !dev->adopted)
        vkDestroyInstance(dev->instance, NULL);
    free(dev);
}

/* The plugin's own device and queue on c's physical device. */
static int create_device(struct vk_device *dev, const struct vk_candidate *c)
{
    VkResult r;
    float priority = 1.0f;
    VkDeviceQueueCreateInfo queue = {
        .sType = VK_STRUCTURE_TYPE_DEVICE_QUEUE_CREATE_INFO,
        .queueFamilyIndex = c->queue_family,
        .queueCount = 1,
        .pQueuePriorities = &priority,
    };
    /* what the host of its own device must enable too (docs/api.md) */
    VkPhysicalDeviceVulkan12Features f12 = {
        .sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_VULKAN_1_2_FEATURES,
        .bufferDeviceAddress = VK_TRUE,
        .storageBuffer8BitAccess = VK_TRUE,
        .shaderInt8 = VK_TRUE,
    };
    VkPhysicalDeviceFeatures2 f2 = {
        .sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_FEATURES_2,
        .pNext = &f12,
        .features = { .shaderInt64 = VK_TRUE, .shaderFloat64 = c->fp64 ? VK_TRUE : VK_FALSE },
    };
    VkDeviceCreateInfo info = {
        .sType = VK_STRUCTURE_TYPE_DEVICE_CREATE_INFO,
        .pNext = &f2,
        .queueCreateInfoCount = 1,
        .pQueueCreateInfos = &queue,
    };
    /* TURBO_VK_PROFILE on a device of the plugin's own: the compiler's
     * statistics of each pipeline (registers, shared memory, spills); on
     * NVIDIA always, for decode.comp's registers (vk_resident_workgroups) */
    VkPhysicalDevicePipelineExecutablePropertiesFeaturesKHR stats = {
        .sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_PIPELINE_EXECUTABLE_PROPERTIES_FEATURES_KHR,
        .pipelineExecutableInfo = VK_TRUE,
    };
    const char *exts[3];
    info.ppEnabledExtensionNames = exts;
    /* decode_tc (tensor.c): the cooperative matrices, fp16 arithmetic and
     * the memory model their SPIR-V declares */
    VkPhysicalDeviceCooperativeMatrixFeaturesNV cm = {
        .sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_COOPERATIVE_MATRIX_FEATURES_NV, .cooperativeMatrix = VK_TRUE,
    };
    if (c->coopmat && dev->knobs.tc) {
        f12.shaderFloat16 = VK_TRUE;
        f12.vulkanMemoryModel = VK_TRUE;
        f12.vulkanMemoryModelDeviceScope = VK_TRUE;
        cm.pNext = f12.pNext;
        f12.pNext = &cm;
        exts[info.enabledExtensionCount++] = VK_NV_COOPERATIVE_MATRIX_EXTENSION_NAME;
        dev->coopmat = 1;
    }
    if ((dev->knobs.profile || dev->sm_count) && c->exec_stats) {
        stats.pNext = f12.pNext;
        f12.pNext = &stats;
        exts[info.enabledExtensionCount++] = VK_KHR_PIPELINE_EXECUTABLE_PROPERTIES_EXTENSION_NAME;
        dev->exec_stats = (dev->knobs.profile ? 1 | (getenv("TURBO_VK_PROFILE_DIR") ? 2 : 0) : 0) |
                          (dev->sm_count ? 4 : 0);
    }
    /* TURBO_VK_CLOCK: decode.comp's clock records need the device's and the
     * subgroups' clocks */
    VkPhysicalDeviceShaderClockFeaturesKHR clock = { .sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_SHADER_CLOCK_FEATURES_KHR };
    if (dev->knobs.clock && c->shader_clock) {
        VkPhysicalDeviceFeatures2 have = { .sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_FEATURES_2, .pNext = &clock };
        vkGetPhysicalDeviceFeatures2(c->physical, &have);
        if (clock.shaderSubgroupClock && clock.shaderDeviceClock) {
            clock.pNext = f12.pNext;
            f12.pNext = &clock;
            exts[info.enabledExtensionCount++] = VK_KHR_SHADER_CLOCK_EXTENSION_NAME;
            dev->clock_ok = 1;
        }
    }
    if (dev->knobs.clock && !dev->clock_ok)
        vk_svc->log(TKV_LOG_WARN, "vulkan: TURBO_VK_CLOCK: the device has no device and subgroup clocks "
                                  "(VK_KHR_shader_clock); no clock records");
    if ((r = vkCreateDevice(c->physical, &info, NULL, &dev->device)) != VK_SUCCESS) {
        dev->device = VK_NULL_HANDLE;
        return vk_fail("open", "vkCreateDevice", r);
    }
    const char *missing = vk_fns_device(&dev->fn, dev->device);
    if (missing) {
        PFN_vkDestroyDevice destroy = (PFN_vkDestroyDevice)dev->fn.GetDeviceProcAddr(dev->device, "vkDestroyDevice");
        if (destroy)
            destroy(dev->device, NULL);
        dev->device = VK_NULL_HANDLE;
        return VK_ERROR_STATUS(TKV_ENODEV, "open: the device has no %s", missing);
    }
    vkGetDeviceQueue(dev->device, c->queue_family, 0, &dev->queue);
    return TKV_OK;
}

/* The command pool, the synchronous ops' command buffer and fence, the
 * timestamps; on dev->device, for c's queue family. */
static int create_objects(struct vk_device *dev, const struct vk_candidate *c)
{
    VkResult r;
    VkCommandPoolCreateInfo pool = {
        .sType = VK_STRUCTURE_TYPE_COMMAND_POOL_CREATE_INFO,
        .flags = VK_COMMAND_POOL_CREATE_RESET_COMMAND_BUFFER_BIT,
        .queueFamilyIndex = c->queue_family,
    };
    if ((r = vkCreateCommandPool(dev->device, &pool, NULL, &dev->pool)) != VK_SUCCESS)
        return vk_fail("open", "vkCreateCommandPool", r);
    VkCommandBufferAllocateInfo alloc = {
        .sType = VK_STRUCTURE_TYPE_COMMAND_BUFFER_ALLOCATE_INFO,
        .commandPool = dev->pool,
        .level = VK_COMMAND_BUFFER_LEVEL_PRIMARY,
        .commandBufferCount = 1,
    };
    if ((r = vkAllocateCommandBuffers(dev->device, &alloc, &dev->own_cmd)) != VK_SUCCESS)
        return vk_fail("open", "vkAllocateCommandBuffers", r);
    dev->cmd = dev->own_cmd;
    VkFenceCreateInfo fence = { .sType = VK_STRUCTURE_TYPE_FENCE_CREATE_INFO };
    if ((r = vkCreateFence(dev->device, &fence, NULL, &dev->fence)) != VK_SUCCESS)
        return vk_fail("open", "vkCreateFence", r);
    /* two timestamps around each attention call (device_ns); without them
     * device_ns stays 0 */
    if (c->timestamp_bits && c->props.limits.timestampPeriod > 0.0f) {
        VkQueryPoolCreateInfo qp = {
            .sType = VK_STRUCTURE_TYPE_QUERY_POOL_CREATE_INFO, .queryType = VK_QUERY_TYPE_TIMESTAMP,
            .queryCount = VK_TIMESTAMPS,
        };
        if ((r = vkCreateQueryPool(dev->device, &qp, NULL, &dev->timestamps)) != VK_SUCCESS)
            return vk_fail("open", "vkCreateQueryPool", r);
        dev->timestamp_mask = c->timestamp_bits >= 64 ? ~0ull : (1ull << c->timestamp_bits) - 1;
        dev->timestamp_period = c->props.limits.timestampPeriod;
    }
    return TKV_OK;
}

/* What the device offers (before the device exists: knobs, memory types). */
static int take_properties(struct vk_device *dev, const struct vk_candidate *c)
{
    dev->props = c->props;
    dev->fp64 = c->fp64;
    dev->denorm_reported = c->denorm_reported;
    const char *denorm;
    int preserve = vk_denorm_choose(c->denorm_reported, &denorm);
    if (preserve < 0)
        return VK_ERROR_STATUS(TKV_ECONFIG, "open: TURBO_VK_DENORM=%s: expected auto, preserve or off", denorm);
    dev->denorm_preserve = preserve;
    if (preserve && !c->denorm_reported)
        vk_svc->log(TKV_LOG_WARN,
                    "vulkan: TURBO_VK_DENORM=preserve: %s does not report shaderDenormPreserveFloat32, the "
                    "quantize and rows shaders declare DenormPreserve 32 anyway (a setting for tests)",
                    c->props.deviceName);
    dev->subgroup = c->subgroup;
    dev->subgroup_wide = c->subgroup_wide;
    dev->sm_count = c->sm_count;
    dev->warps_per_sm = c->warps_per_sm;
    dev->max_allocation = c->max_allocation;
    dev->queue_family = c->queue_family;
    dev->fn.GetPhysicalDeviceMemoryProperties(c->physical, &dev->memory);
    rank_memory_types(dev);
    if (dev->n_host_types == 0)
        return VK_ERROR_STATUS(TKV_EUNSUPPORTED, "open: %s has no host-visible coherent memory", c->props.deviceName);
    if (c->props.deviceType == VK_PHYSICAL_DEVICE_TYPE_CPU) {
        long cores = sysconf(_SC_NPROCESSORS_ONLN);
        dev->target_workgroups = VK_CPU_WORKGROUPS_PER_CORE * (uint32_t)(cores > 0 ? cores : 1);
    } else {
        dev->target_workgroups = VK_GPU_WORKGROUPS;
    }
    vk_knobs_read(dev);
    return TKV_OK;
}

/* ---- the host's own device (ABI 2.2) ---------------------------------------- */

/* Checks the host's handles and what its physical device offers: what
 * the shaders need (as for a device of the plugin's own) and a compute
 * queue family. fn gets the instance's functions through the host's
 * get_instance_proc_addr, or the loader's. */
static int host_candidate(const struct tkv_host_device *host, struct vk_fns *fn, struct vk_candidate *c)
{
    static const char op[] = "host_device";
    const size_t min_size = offsetof(struct tkv_host_device, vulkan.flags); /* 0.5's struct */
    if (!host || host->struct_size < min_size)
        return VK_ERROR_STATUS(TKV_EINVAL, "%s: struct_size %u, expected at least %zu", op,
                               host ? host->struct_size : 0u, min_size);
    if (host->backend != TKV_HOST_VULKAN)
        return VK_ERROR_STATUS(TKV_EUNSUPPORTED, "%s: backend tag %u is not Vulkan (%d)", op, host->backend,
                               TKV_HOST_VULKAN);
    const struct tkv_host_vulkan *h = &host->vulkan;
    if (!h->instance || !h->physical_device || !h->device || !h->queue)
        return VK_ERROR_STATUS(TKV_EINVAL, "%s: the Vulkan %s is NULL", op,
                               !h->instance ? "instance" : !h->physical_device ? "physical device"
                               : !h->device ? "device" : "queue");
    if (h->api_version < VK_API_VERSION_1_2)
        return VK_ERROR_STATUS(TKV_EUNSUPPORTED,
                               "%s: api_version %u.%u: the host's instance must be created with apiVersion 1.2 or "
                               "later (turbokv-vulkan calls Vulkan 1.2 functions; say which in "
                               "tkv_host_vulkan.api_version)",
                               op, VK_API_VERSION_MAJOR(h->api_version), VK_API_VERSION_MINOR(h->api_version));
    PFN_vkGetInstanceProcAddr gipa =
        h->get_instance_proc_addr ? (PFN_vkGetInstanceProcAddr)h->get_instance_proc_addr : vkGetInstanceProcAddr;
    const char *missing = vk_fns_instance(fn, gipa, (VkInstance)h->instance);
    if (missing)
        return VK_ERROR_STATUS(TKV_EUNSUPPORTED, "%s: the host's instance has no %s", op, missing);
    char why[128];
    if (!usable(fn, (VkPhysicalDevice)h->physical_device, c, why, sizeof why))
        return VK_ERROR_STATUS(TKV_EUNSUPPORTED, "%s: the host's physical device %s cannot run turbokv's shaders: %s",
                               op, c->props.deviceName, why);
    uint32_t n = 0;
    fn->GetPhysicalDeviceQueueFamilyProperties(c->physical, &n, NULL);
    VkQueueFamilyProperties families[32];
    n = n < 32 ? n : 32;
    fn->GetPhysicalDeviceQueueFamilyProperties(c->physical, &n, families);
    if (h->queue_family >= n || !(families[h->queue_family].queueFlags & VK_QUEUE_COMPUTE_BIT))
        return VK_ERROR_STATUS(TKV_EUNSUPPORTED, "%s: queue family %u of %s %s", op, h->queue_family,
                               c->props.deviceName, h->queue_family >= n ? "does not exist" : "has no compute");
    c->queue_family = h->queue_family;
    c->timestamp_bits = families[h->queue_family].timestampValidBits;
    return TKV_OK;
}

static int vk_host_device(const struct tkv_host_device *host, struct tkv_device_info *info,
                          struct tkv_device_caps *caps)
{
    struct vk_fns fn;
    struct vk_candidate c;
    int rc = host_candidate(host, &fn, &c);
    if (rc != TKV_OK)
        return rc;
    describe(&fn, &c, info);
    return give_caps(&c, TKV_CAP_HOST_DEVICE | TKV_CAP_DEVICE_TENSORS | TKV_CAP_ASYNC | TKV_CAP_COMMAND_BUFFER,
                     caps);
}

/* Opens on the host's instance, device and queue: their functions loaded,
 * nothing of them created or destroyed here. */
static int adopt(struct vk_device *dev, const struct tkv_host_device *host)
{
    struct vk_candidate c;
    int rc = host_candidate(host, &dev->fn, &c);
    if (rc != TKV_OK)
        return rc;
    char *tc_note = strstr(c.driver, ", tensor cores with TURBO_VK_TC=1");
    if (tc_note) /* (decode_tc runs on a device of the plugin's own only) */
        *tc_note = '\0';
    dev->adopted = 1;
    dev->instance = (VkInstance)host->vulkan.instance;
    dev->device = (VkDevice)host->vulkan.device;
    dev->queue = (VkQueue)host->vulkan.queue;
    const char *missing = vk_fns_device(&dev->fn, dev->device);
    if (missing)
        return VK_ERROR_STATUS(TKV_EUNSUPPORTED, "open: the host's device has no %s", missing);
    if ((rc = take_properties(dev, &c)) != TKV_OK)
        return rc;
    /* The host enabled the pipelines' statistics (0.6): its attention
     * pipelines' registers size their dispatch as on a device of the
     * plugin's own (create_device), and TURBO_VK_PROFILE prints them */
    const uint32_t flags = TKV_ARGS_HAS(host, vulkan.flags) ? host->vulkan.flags : 0;
    if (flags & TKV_HOST_VULKAN_STATISTICS) {
        if (!c.exec_stats)
            return VK_ERROR_STATUS(TKV_EINVAL,
                                   "open: the host's flags say TKV_HOST_VULKAN_STATISTICS, but %s has no "
                                   "VK_KHR_pipeline_executable_properties to enable",
                                   c.props.deviceName);
        dev->exec_stats = (dev->knobs.profile ? 1 : 0) | (dev->sm_count ? 4 : 0);
    }
    if ((rc = create_objects(dev, &c)) != TKV_OK || (rc = vk_pipelines_create(dev)) != TKV_OK ||
        (rc = vk_tables_upload(dev)) != TKV_OK)
        return rc;
    char denorm[72];
    denorm_describe(dev->denorm_preserve, dev->denorm_reported, denorm, sizeof denorm); /* as pipelines.c made them */
    vk_svc->log(TKV_LOG_INFO, "vulkan: opened on the host's device %s (%s; %s), queue family %u",
                c.props.deviceName, c.driver, denorm, c.queue_family);
    return TKV_OK;
}

static int vk_open(const struct tkv_open_params *params, void **dev_out)
{
    struct vk_candidate list[16];
    uint32_t n = 0;
    int rc;
    struct vk_device *dev = calloc(1, sizeof *dev);
    if (!dev)
        return VK_ERROR_STATUS(TKV_ENOMEM, "open: no host memory for the device (%zu bytes)", sizeof *dev);
    dev->live.next = dev->live.prev = &dev->live;
    dev->math = params->math;
    dev->stats.struct_size = sizeof dev->stats;
    if (TKV_ARGS_HAS(params, host) && params->host) {
        if ((rc = adopt(dev, params->host)) != TKV_OK)
            goto fail;
        *dev_out = dev;
        return TKV_OK;
    }
    if ((rc = create_instance(&dev->instance, &dev->fn, "open")) != TKV_OK ||
        (rc = list_devices(&dev->fn, dev->instance, list, 16, &n, "open")) != TKV_OK)
        goto fail;
    if (params->device_index >= n || params->device_index >= 16) {
        rc = VK_ERROR_STATUS(TKV_ERANGE, "open: device %u does not exist (%u usable Vulkan devices)",
                             params->device_index, n);
        goto fail;
    }
    const struct vk_candidate *c = &list[params->device_index];
    if ((rc = take_properties(dev, c)) != TKV_OK || (rc = create_device(dev, c)) != TKV_OK ||
        (rc = create_objects(dev, c)) != TKV_OK || (rc = vk_pipelines_create(dev)) != TKV_OK ||
        (rc = vk_tables_upload(dev)) != TKV_OK || (rc = vk_tc_probe(dev)) != TKV_OK)
        goto fail;
    char denorm[72];
    denorm_describe(dev->denorm_preserve, dev->denorm_reported, denorm, sizeof denorm); /* as pipelines.c made them */
    vk_svc->log(TKV_LOG_INFO, "vulkan: opened %s (%s; %s)", c->props.deviceName, c->driver, denorm);
    if (!dev->fp64)
        vk_svc->log(TKV_LOG_WARN,
                    "vulkan: %s lacks shaderFloat64: norms are summed in float, so stored scales may differ "
                    "from the cpu backend's in their last bits",
                    c->props.deviceName);
    *dev_out = dev;
    return TKV_OK;
fail:
    vk_close(dev);
    return rc;
}

/* ABI 2.3: the host's command buffer (NULL: none). */
static int vk_set_command_buffer(void *dev_, void *command_buffer)
{
    struct vk_device *dev = dev_;
    if (!dev->adopted)
        return VK_ERROR_STATUS(TKV_EUNSUPPORTED, "set_command_buffer: the device is not the host's");
    dev->host_cmd = (VkCommandBuffer)command_buffer;
    return TKV_OK;
}

/* ---- buffers ------------------------------------------------------------- */

static int vk_buffer_alloc(void *dev_, uint64_t bytes, void **out)
{
    struct vk_device *dev = dev_;
    struct vk_buffer *b;
    int rc;
    if ((rc = vk_buffer_create_in(dev, bytes, dev->knobs.cache_memory, "buffer_alloc", &b)) != TKV_OK)
        return rc;
    b->prev = &dev->live;
    b->next = dev->live.next;
    dev->live.next->prev = b;
    dev->live.next = b;
    dev->stats.n_buffers++;
    dev->stats.bytes_allocated += bytes;
    *out = b;
    return TKV_OK;
}

static void vk_buffer_free(void *dev_, void *buf)
{
    struct vk_device *dev = dev_;
    if (!buf)
        return;
    struct vk_buffer *b = vk_buffer_of(buf);
    if (dev->adopted) {
        /* queued calls, the copies queued for the next one (a pool that
         * grew: old to new) and the host's command buffer may still use it */
        b->prev->next = b->next;
        b->next->prev = b->prev;
        dev->stats.n_buffers--;
        dev->stats.bytes_allocated -= b->size;
        vk_retire(dev, b);
        return;
    }
    /* a queued copy may read or write it (a pool that grew: old to new, then
     * the old one freed) */
    if (vk_flush(dev, "buffer_free") != TKV_OK)
        vk_svc->log(TKV_LOG_WARN, "vulkan: buffer_free: the copies queued before it failed");
    b->prev->next = b->next;
    b->next->prev = b->prev;
    dev->stats.n_buffers--;
    dev->stats.bytes_allocated -= b->size;
    vk_buffer_destroy(dev, b);
}

static int vk_buffer_write(void *dev_, void *buf, uint64_t offset, const void *src, uint64_t bytes)
{
    struct vk_device *dev = dev_;
    int rc;
    if ((rc = vk_usable(dev, "buffer_write")) != TKV_OK || (rc = vk_may_wait(dev, "buffer_write")) != TKV_OK)
        return rc;
    return vk_upload(dev, vk_buffer_of(buf), offset, src, bytes, "buffer_write");
}

static int vk_buffer_read(void *dev_, const void *buf, uint64_t offset, void *dst, uint64_t bytes)
{
    struct vk_device *dev = dev_;
    int rc;
    if ((rc = vk_usable(dev, "buffer_read")) != TKV_OK || (rc = vk_may_wait(dev, "buffer_read")) != TKV_OK)
        return rc;
    return vk_download(dev, vk_buffer_of(buf), offset, dst, bytes, "buffer_read");
}

/* A device-side copy (pool growth, copy-on-write of a shared block): one
 * vkCmdCopyBuffer, within one buffer too (the core passes disjoint ranges
 * there, as Vulkan requires). It is queued, not submitted: the next
 * submission records it first (copy-on-write's copy then rides with the
 * append that follows it), and host access or buffer_free flush it. A
 * device failure while it runs is reported by the op that submits it. */
static int vk_buffer_copy(void *dev_, void *dst, uint64_t dst_offset, const void *src, uint64_t src_offset,
                          uint64_t bytes)
{
    static const char op[] = "buffer_copy";
    struct vk_device *dev = dev_;
    int rc;
    if ((rc = vk_usable(dev, op)) != TKV_OK)
        return rc;
    return vk_queue_copy(dev, vk_buffer_of(src), src_offset, vk_buffer_of(dst), dst_offset, bytes, op);
}

/* ---- stats --------------------------------------------------------------- */

static int vk_stats(void *dev_, struct tkv_device_stats *stats)
{
    struct vk_device *dev = dev_;
    /* what the core's struct_size covers, its struct_size kept */
    size_t covered = stats->struct_size < sizeof dev->stats ? stats->struct_size : sizeof dev->stats;
    if (covered > sizeof stats->struct_size)
        memcpy((char *)stats + sizeof stats->struct_size, (const char *)&dev->stats + sizeof stats->struct_size,
               covered - sizeof stats->struct_size);
    return TKV_OK;
}

/* ---- the descriptor ------------------------------------------------------ */

static const struct tkv_plugin vk_plugin = {
    .abi_major = TKV_ABI_MAJOR,
    .abi_minor = TKV_ABI_MINOR,
    .struct_size = sizeof(struct tkv_plugin),
    .name = "vulkan",
    .version = TKV_VERSION_STRING,
    .description = "turbokv Vulkan backend (GLSL compute shaders, split-K decode attention)",
    .init = vk_init,
    .probe = vk_probe,
    .device_caps = vk_device_caps,
    .open = vk_open,
    .close = vk_close,
    .buffer_alloc = vk_buffer_alloc,
    .buffer_free = vk_buffer_free,
    .buffer_write = vk_buffer_write,
    .buffer_read = vk_buffer_read,
    .buffer_copy = vk_buffer_copy,
    .quantize_append = vk_quantize_append,
    .attention = vk_attention,
    .append_attention = vk_append_attention,
    .dequantize = vk_dequantize,
    .stats = vk_stats,
    .host_device = vk_host_device,
    .set_command_buffer = vk_set_command_buffer,
};

TKV_PLUGIN_EXPORT const struct tkv_plugin *tkv_plugin_entry(uint32_t core_abi_major, uint32_t core_abi_minor);

/* Any 2.x core can run this module: it uses nothing a later 2.x minor adds
 * (the core hands it argument structs as of the negotiated minor). */
TKV_PLUGIN_EXPORT const struct tkv_plugin *tkv_plugin_entry(uint32_t core_abi_major, uint32_t core_abi_minor)
{
    (void)core_abi_minor;
    return core_abi_major == TKV_ABI_MAJOR ? &vk_plugin : NULL;
}
