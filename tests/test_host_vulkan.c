/* SPDX-License-Identifier: MIT */
/*
 * A host that owns its Vulkan device (docs/api.md, "The host's own
 * device"): it creates its own VkInstance and VkDevice, opens turbokv on
 * them (tkv_context_options.host_device, through its own
 * vkGetInstanceProcAddr), keeps the K/V rows and queries of several layers
 * in its own VkBuffers, and for each of 3 decode steps records into one
 * command buffer of its own: its copy of the step's inputs into place, then
 * append + attention for every layer (tkv_context_set_command_buffer),
 * then its copy of the outputs out; it submits once per step and waits.
 * The prefill goes through the other queued path: submitted on the host's
 * queue by turbokv, not waited for. The result must equal the cpu plugin
 * fed the same values as host arrays: the same stored bytes (sequence
 * images compared byte for byte) and attention within the conformance
 * tolerance (test_backends), with f32, f16 and bf16 tensors.
 *
 * That the calls only record is checked directly: before the host submits,
 * the outputs still hold what the host put there. The pool grows during a
 * recorded step (its copies ride in the host's command buffer, the old
 * buffers outlive it). More attentions are recorded into one command buffer
 * than the plugin has input slots, each seeing its own queries. The fused
 * step (append_attention) matches the two calls; `meson test
 * host-vulkan-shift` runs it on the shifted chunk grid. Bad device
 * tensors, calls that would wait while a
 * command buffer is set and bad host devices are refused, naming what is
 * wrong, and change nothing.
 *
 * No Vulkan device: exit 77 (skipped), except under CI=true (lavapipe).
 */
#include <math.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <setjmp.h>
#include <cmocka.h>
#include <vulkan/vulkan.h>

#include "turbokv.h"
#include "host_tensors.h"
#include "test_args.h"

#define L 5        /* layers */
#define KV 2       /* kv heads */
#define D 128      /* head_dim */
#define QH 8       /* query heads */
#define PREFILL 32 /* prompt tokens: 2 blocks of 16 per layer, all the pool holds at first */
#define STEPS 3    /* decode steps: f32, f16, bf16 tensors */
#define CAP 64
/* test_backends' conformance tolerance, plus one unit in the last place of
 * the output type at the row's largest magnitude (both sides round their
 * own f32 result) */
#define ATTN_TOLERANCE 2e-4

static VkInstance instance;
static VkPhysicalDevice physical;
static VkDevice device;
static VkQueue queue;
static uint32_t family;
static VkCommandPool pool;
static VkPhysicalDeviceMemoryProperties memory;
/* the device was created with VK_KHR_pipeline_executable_properties (where
 * the physical device has it): host_of() says so (TKV_HOST_VULKAN_STATISTICS) */
static uint32_t host_flags;
static char device_name[256];
static tkv_context *ctx, *ctx_cpu;
static tkv_cache *cache, *cache_cpu;

static const uint32_t k_types[L] = { TKV_TYPE_Q8_0, TKV_TYPE_TURBO3, TKV_TYPE_TURBO4, TKV_TYPE_F16, TKV_TYPE_TURBO3_OUT };
static const uint32_t v_types[L] = { TKV_TYPE_TURBO3, TKV_TYPE_TURBO4, TKV_TYPE_Q8_0, TKV_TYPE_TURBO3, TKV_TYPE_TURBO4_OUT };

/* ---- the host's own Vulkan objects ------------------------------------------ */

struct hbuf {
    VkBuffer buffer;
    VkDeviceMemory memory;
    void *map;
    size_t size;
};

static struct hbuf new_buffer(size_t size, int address)
{
    struct hbuf b = { .size = size };
    VkBufferCreateInfo info = {
        .sType = VK_STRUCTURE_TYPE_BUFFER_CREATE_INFO, .size = size,
        .usage = VK_BUFFER_USAGE_STORAGE_BUFFER_BIT | VK_BUFFER_USAGE_TRANSFER_SRC_BIT |
                 VK_BUFFER_USAGE_TRANSFER_DST_BIT | (address ? VK_BUFFER_USAGE_SHADER_DEVICE_ADDRESS_BIT : 0),
        .sharingMode = VK_SHARING_MODE_EXCLUSIVE,
    };
    assert_int_equal(vkCreateBuffer(device, &info, NULL, &b.buffer), VK_SUCCESS);
    VkMemoryRequirements req;
    vkGetBufferMemoryRequirements(device, b.buffer, &req);
    const VkMemoryPropertyFlags want = VK_MEMORY_PROPERTY_HOST_VISIBLE_BIT | VK_MEMORY_PROPERTY_HOST_COHERENT_BIT;
    uint32_t type = UINT32_MAX;
    for (uint32_t i = 0; i < memory.memoryTypeCount && type == UINT32_MAX; i++)
        if ((req.memoryTypeBits & (1u << i)) && (memory.memoryTypes[i].propertyFlags & want) == want)
            type = i;
    assert_true(type != UINT32_MAX);
    VkMemoryAllocateFlagsInfo flags = {
        .sType = VK_STRUCTURE_TYPE_MEMORY_ALLOCATE_FLAGS_INFO, .flags = VK_MEMORY_ALLOCATE_DEVICE_ADDRESS_BIT,
    };
    VkMemoryAllocateInfo alloc = {
        .sType = VK_STRUCTURE_TYPE_MEMORY_ALLOCATE_INFO, .pNext = address ? &flags : NULL,
        .allocationSize = req.size, .memoryTypeIndex = type,
    };
    assert_int_equal(vkAllocateMemory(device, &alloc, NULL, &b.memory), VK_SUCCESS);
    assert_int_equal(vkBindBufferMemory(device, b.buffer, b.memory, 0), VK_SUCCESS);
    assert_int_equal(vkMapMemory(device, b.memory, 0, VK_WHOLE_SIZE, 0, &b.map), VK_SUCCESS);
    return b;
}

static void free_buffer(struct hbuf *b)
{
    vkUnmapMemory(device, b->memory);
    vkDestroyBuffer(device, b->buffer, NULL);
    vkFreeMemory(device, b->memory, NULL);
}

static VkCommandBuffer begin_commands(void)
{
    VkCommandBuffer cmd;
    VkCommandBufferAllocateInfo alloc = {
        .sType = VK_STRUCTURE_TYPE_COMMAND_BUFFER_ALLOCATE_INFO, .commandPool = pool,
        .level = VK_COMMAND_BUFFER_LEVEL_PRIMARY, .commandBufferCount = 1,
    };
    assert_int_equal(vkAllocateCommandBuffers(device, &alloc, &cmd), VK_SUCCESS);
    VkCommandBufferBeginInfo begin = {
        .sType = VK_STRUCTURE_TYPE_COMMAND_BUFFER_BEGIN_INFO, .flags = VK_COMMAND_BUFFER_USAGE_ONE_TIME_SUBMIT_BIT,
    };
    assert_int_equal(vkBeginCommandBuffer(cmd, &begin), VK_SUCCESS);
    return cmd;
}

/* Ends, submits once, waits, frees. */
static void submit_and_wait(VkCommandBuffer cmd)
{
    assert_int_equal(vkEndCommandBuffer(cmd), VK_SUCCESS);
    VkFence fence;
    VkFenceCreateInfo fi = { .sType = VK_STRUCTURE_TYPE_FENCE_CREATE_INFO };
    assert_int_equal(vkCreateFence(device, &fi, NULL, &fence), VK_SUCCESS);
    VkSubmitInfo submit = { .sType = VK_STRUCTURE_TYPE_SUBMIT_INFO, .commandBufferCount = 1, .pCommandBuffers = &cmd };
    assert_int_equal(vkQueueSubmit(queue, 1, &submit, fence), VK_SUCCESS);
    assert_int_equal(vkWaitForFences(device, 1, &fence, VK_TRUE, UINT64_MAX), VK_SUCCESS);
    vkDestroyFence(device, fence, NULL);
    vkFreeCommandBuffers(device, pool, 1, &cmd);
}

/* The host's own transfer: bytes from src to dst, recorded into cmd. */
static void host_copy(VkCommandBuffer cmd, const struct hbuf *src, size_t src_at, const struct hbuf *dst,
                      size_t dst_at, size_t bytes)
{
    VkBufferCopy region = { .srcOffset = src_at, .dstOffset = dst_at, .size = bytes };
    vkCmdCopyBuffer(cmd, src->buffer, dst->buffer, 1, &region);
}

/* The host's own barrier after its transfers and before its reads. */
static void host_barrier(VkCommandBuffer cmd, VkAccessFlags dst_access, VkPipelineStageFlags dst_stage)
{
    VkMemoryBarrier b = {
        .sType = VK_STRUCTURE_TYPE_MEMORY_BARRIER, .srcAccessMask = VK_ACCESS_TRANSFER_WRITE_BIT,
        .dstAccessMask = dst_access,
    };
    vkCmdPipelineBarrier(cmd, VK_PIPELINE_STAGE_TRANSFER_BIT, dst_stage, 0, 1, &b, 0, NULL, 0, NULL);
}

static int find_device(void)
{
    VkApplicationInfo app = {
        .sType = VK_STRUCTURE_TYPE_APPLICATION_INFO, .pApplicationName = "test_host_vulkan",
        .apiVersion = VK_API_VERSION_1_2,
    };
    VkInstanceCreateInfo ii = { .sType = VK_STRUCTURE_TYPE_INSTANCE_CREATE_INFO, .pApplicationInfo = &app };
    if (vkCreateInstance(&ii, NULL, &instance) != VK_SUCCESS)
        return 0;
    uint32_t n = 0;
    if (vkEnumeratePhysicalDevices(instance, &n, NULL) != VK_SUCCESS || n == 0)
        return 0;
    VkPhysicalDevice all[16];
    n = n < 16 ? n : 16;
    vkEnumeratePhysicalDevices(instance, &n, all);
    /* a GPU first, else any (lavapipe in CI) */
    for (int pass = 0; pass < 2; pass++)
        for (uint32_t i = 0; i < n; i++) {
            VkPhysicalDeviceProperties p;
            vkGetPhysicalDeviceProperties(all[i], &p);
            if (p.apiVersion < VK_API_VERSION_1_2 || (pass == 0 && p.deviceType != VK_PHYSICAL_DEVICE_TYPE_DISCRETE_GPU &&
                                                      p.deviceType != VK_PHYSICAL_DEVICE_TYPE_INTEGRATED_GPU))
                continue;
            uint32_t nf = 0;
            VkQueueFamilyProperties fams[16];
            vkGetPhysicalDeviceQueueFamilyProperties(all[i], &nf, NULL);
            nf = nf < 16 ? nf : 16;
            vkGetPhysicalDeviceQueueFamilyProperties(all[i], &nf, fams);
            for (uint32_t f = 0; f < nf; f++)
                if (fams[f].queueFlags & VK_QUEUE_COMPUTE_BIT) {
                    physical = all[i];
                    family = f;
                    snprintf(device_name, sizeof device_name, "%s", p.deviceName);
                    return 1;
                }
        }
    return 0;
}

/* Whether the physical device offers extension name. */
static int has_extension(const char *name)
{
    uint32_t n = 0;
    if (vkEnumerateDeviceExtensionProperties(physical, NULL, &n, NULL) != VK_SUCCESS || !n)
        return 0;
    VkExtensionProperties *ext = calloc(n, sizeof *ext);
    int found = 0;
    if (ext && vkEnumerateDeviceExtensionProperties(physical, NULL, &n, ext) == VK_SUCCESS)
        for (uint32_t i = 0; i < n; i++)
            found |= !strcmp(ext[i].extensionName, name);
    free(ext);
    return found;
}

static int create_device(void)
{
    VkPhysicalDeviceFeatures2 have = { .sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_FEATURES_2 };
    vkGetPhysicalDeviceFeatures2(physical, &have);
    float priority = 1.0f;
    VkDeviceQueueCreateInfo qi = {
        .sType = VK_STRUCTURE_TYPE_DEVICE_QUEUE_CREATE_INFO, .queueFamilyIndex = family, .queueCount = 1,
        .pQueuePriorities = &priority,
    };
    /* what docs/api.md says the host must enable for turbokv */
    VkPhysicalDeviceVulkan12Features f12 = {
        .sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_VULKAN_1_2_FEATURES, .bufferDeviceAddress = VK_TRUE,
        .storageBuffer8BitAccess = VK_TRUE, .shaderInt8 = VK_TRUE,
    };
    VkPhysicalDeviceFeatures2 f2 = {
        .sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_FEATURES_2, .pNext = &f12,
        .features = { .shaderInt64 = VK_TRUE, .shaderFloat64 = have.features.shaderFloat64 },
    };
    VkDeviceCreateInfo di = {
        .sType = VK_STRUCTURE_TYPE_DEVICE_CREATE_INFO, .pNext = &f2, .queueCreateInfoCount = 1,
        .pQueueCreateInfos = &qi,
    };
    /* and the pipelines' statistics where the device has them (NVIDIA: the
     * plugin sizes its attention dispatch by their registers) */
    VkPhysicalDevicePipelineExecutablePropertiesFeaturesKHR stats = {
        .sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_PIPELINE_EXECUTABLE_PROPERTIES_FEATURES_KHR,
        .pipelineExecutableInfo = VK_TRUE,
    };
    const char *stats_ext = VK_KHR_PIPELINE_EXECUTABLE_PROPERTIES_EXTENSION_NAME;
    if (has_extension(stats_ext)) {
        stats.pNext = f12.pNext;
        f12.pNext = &stats;
        di.enabledExtensionCount = 1;
        di.ppEnabledExtensionNames = &stats_ext;
        host_flags = TKV_HOST_VULKAN_STATISTICS;
    }
    if (vkCreateDevice(physical, &di, NULL, &device) != VK_SUCCESS)
        return -1;
    vkGetDeviceQueue(device, family, 0, &queue);
    vkGetPhysicalDeviceMemoryProperties(physical, &memory);
    VkCommandPoolCreateInfo pi = {
        .sType = VK_STRUCTURE_TYPE_COMMAND_POOL_CREATE_INFO, .queueFamilyIndex = family,
        .flags = VK_COMMAND_POOL_CREATE_RESET_COMMAND_BUFFER_BIT,
    };
    return vkCreateCommandPool(device, &pi, NULL, &pool) == VK_SUCCESS ? 0 : -1;
}

static struct tkv_host_device host_of(void)
{
    return (struct tkv_host_device){
        .struct_size = sizeof(struct tkv_host_device), .backend = TKV_HOST_VULKAN,
        .vulkan = {
            .instance = instance, .physical_device = physical, .device = device, .queue = queue,
            .queue_family = family, .api_version = VK_API_VERSION_1_2,
            .get_instance_proc_addr = (void (*)(void))vkGetInstanceProcAddr, .flags = host_flags,
        },
    };
}

static struct tkv_tensor vk_tensor(uint32_t elem, const struct hbuf *b, uint64_t offset)
{
    return (struct tkv_tensor){
        .struct_size = sizeof(struct tkv_tensor), .elem = elem, .memory = TKV_MEMORY_VULKAN,
        .handle = (uint64_t)(uintptr_t)b->buffer, .offset = offset, .size = b->size,
    };
}

static int setup(void **state)
{
    (void)state;
    int ci = getenv("CI") && strcmp(getenv("CI"), "true") == 0;
    if (!find_device()) {
        fprintf(stderr, "no Vulkan 1.2 device%s\n", ci ? " (CI: a failure)" : ": skipped");
        exit(ci ? 1 : 77);
    }
    if (create_device() != 0)
        return -1;
    struct tkv_host_device h = host_of();
    if (open_tkv(NULL, &h, &ctx) != TKV_OK) {
        fprintf(stderr, "tkv_context_open on the host's device: %s\n", tkv_last_error());
        return -1;
    }
    struct tkv_cache_params p = {
        .struct_size = sizeof p, .n_layers = L, .n_kv_heads = KV, .head_dim = D, .capacity = CAP, .n_q_heads = QH,
        .k_type = TKV_TYPE_FROM_CONFIG, .v_type = TKV_TYPE_FROM_CONFIG, .layer_k_types = k_types,
        .layer_v_types = v_types, .block_tokens = 16,
        /* the prefill's blocks: the first decode step grows the pool while
         * the host records */
        .pool_blocks = PREFILL / 16,
    };
    if (open_tkv("cpu", NULL, &ctx_cpu) != TKV_OK || tkv_cache_create(ctx, &p, &cache) != TKV_OK ||
        tkv_cache_create(ctx_cpu, &p, &cache_cpu) != TKV_OK) {
        fprintf(stderr, "setup: %s\n", tkv_last_error());
        return -1;
    }
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    tkv_cache_destroy(cache);
    tkv_cache_destroy(cache_cpu);
    tkv_context_close(ctx);
    tkv_context_close(ctx_cpu);
    if (device) {
        vkDestroyCommandPool(device, pool, NULL);
        vkDestroyDevice(device, NULL);
    }
    if (instance)
        vkDestroyInstance(instance, NULL);
    return 0;
}

/* The context is the host's device, named as the host's driver names it. */
static void opens_on_the_hosts_device(void **state)
{
    (void)state;
    assert_string_equal(tkv_context_backend(ctx), "vulkan");
    assert_string_equal(tkv_context_device(ctx), device_name);
    struct tkv_device_caps caps = { .struct_size = sizeof caps };
    assert_int_equal(tkv_context_caps(ctx, &caps), TKV_OK);
    const uint32_t want = TKV_CAP_HOST_DEVICE | TKV_CAP_DEVICE_TENSORS | TKV_CAP_ASYNC | TKV_CAP_COMMAND_BUFFER;
    assert_int_equal(caps.features & want, want);
    /* the cpu plugin takes no host device, and records nothing */
    struct tkv_device_caps cpu_caps = { .struct_size = sizeof cpu_caps };
    assert_int_equal(tkv_context_caps(ctx_cpu, &cpu_caps), TKV_OK);
    assert_false(cpu_caps.features & (TKV_CAP_DEVICE_TENSORS | TKV_CAP_ASYNC | TKV_CAP_COMMAND_BUFFER));
    int x = 0;
    assert_int_equal(tkv_context_set_command_buffer(ctx_cpu, &x), TKV_EUNSUPPORTED);
    assert_non_null(strstr(tkv_last_error(), "host's Vulkan device"));
}

#define SENTINEL 0x5au

/* Prefill and STEPS decode steps, every layer, from the host's buffers;
 * the cpu cache gets the same values from host arrays. */
static void matches_cpu(void **state)
{
    (void)state;
    const size_t row = (size_t)KV * D, qrow = (size_t)QH * D;
    /* prefill: f32 rows of every layer in one buffer, K and V of layer l at
     * their own offsets; submitted by turbokv on the host's queue, not
     * waited for */
    const size_t pre_n = (size_t)L * 2 * PREFILL * row;
    struct hbuf pre = new_buffer(pre_n * 4, 1);
    float *pre_f = pre.map;
    for (size_t i = 0; i < pre_n; i++)
        pre_f[i] = gauss() * (i % 97 == 0 ? 8.0f : 1.0f);
    for (uint32_t l = 0; l < L; l++) {
        const size_t k_at = (size_t)(2 * l) * PREFILL * row, v_at = k_at + PREFILL * row;
        struct tkv_tensor k = vk_tensor(TKV_ELEM_F32, &pre, k_at * 4), v = vk_tensor(TKV_ELEM_F32, &pre, v_at * 4);
        if (tkv_cache_append_tensors(cache, 0, l, PREFILL, &k, &v) != TKV_OK)
            fail_msg("prefill layer %u: %s", l, tkv_last_error());
        assert_int_equal(tkv_cache_append(cache_cpu, 0, l, PREFILL, pre_f + k_at, pre_f + v_at), TKV_OK);
    }
    struct tkv_cache_bytes before;
    assert_int_equal(tkv_cache_bytes(cache, &before), TKV_OK);

    /* the decode steps' inputs, in the step's element type, at offsets that
     * are not multiples of 4 bytes for the 16-bit types; small values for
     * the f16 step, so that some are subnormal halves */
    static const uint32_t elems[STEPS] = { TKV_ELEM_F32, TKV_ELEM_F16, TKV_ELEM_BF16 };
    const size_t per_layer = 2 * row + qrow;
    float *x = malloc(sizeof *x * STEPS * L * per_layer);
    for (size_t i = 0; i < (size_t)STEPS * L * per_layer; i++)
        x[i] = gauss() * (i % 53 == 0 ? 1e-5f : 1.0f);
    size_t in_at[STEPS][L], out_at[STEPS][L], in_bytes = 0, out_bytes = 0;
    for (uint32_t s = 0; s < STEPS; s++)
        for (uint32_t l = 0; l < L; l++) {
            in_at[s][l] = in_bytes + esize(elems[s]) * (s + 1);
            in_bytes = in_at[s][l] + per_layer * esize(elems[s]);
            out_at[s][l] = out_bytes + esize(elems[s]);
            out_bytes = out_at[s][l] + qrow * esize(elems[s]);
        }
    in_bytes = (in_bytes + 3) & ~(size_t)3;
    out_bytes = (out_bytes + 3) & ~(size_t)3;
    /* the host's staging (its "upload"), its input buffer (garbage until the
     * host's own copy in the step's command buffer), the outputs and the
     * host's readback of them */
    struct hbuf staging = new_buffer(in_bytes, 0), in = new_buffer(in_bytes, 1), out = new_buffer(out_bytes, 1);
    struct hbuf readback = new_buffer(out_bytes, 0);
    for (uint32_t s = 0; s < STEPS; s++)
        for (uint32_t l = 0; l < L; l++)
            encode((unsigned char *)staging.map + in_at[s][l], x + ((size_t)s * L + l) * per_layer, per_layer,
                   elems[s]);
    memset(in.map, 0x7f, in_bytes);
    memset(out.map, SENTINEL, out_bytes);
    memset(readback.map, 0, out_bytes);
    unsigned char *cpu_out = calloc(1, out_bytes);

    uint32_t seq = 0, one = 1;
    uint32_t grown_blocks = 0;
    for (uint32_t s = 0; s < STEPS; s++) {
        const uint32_t e = elems[s];
        const size_t step_at = in_at[s][0], step_end = in_at[s][L - 1] + per_layer * esize(e);
        VkCommandBuffer cmd = begin_commands();
        /* the host's own work first: the step's inputs into place */
        host_copy(cmd, &staging, step_at, &in, step_at, step_end - step_at);
        assert_int_equal(tkv_context_set_command_buffer(ctx, cmd), TKV_OK);
        for (uint32_t l = 0; l < L; l++) {
            const size_t at = in_at[s][l], es = esize(e);
            struct tkv_tensor k = vk_tensor(e, &in, at), v = vk_tensor(e, &in, at + row * es);
            struct tkv_tensor q = vk_tensor(e, &in, at + 2 * row * es), o = vk_tensor(e, &out, out_at[s][l]);
            if (tkv_cache_append_tensors(cache, seq, l, 1, &k, &v) != TKV_OK)
                fail_msg("step %u layer %u append: %s", s, l, tkv_last_error());
            struct tkv_attention_stats st = { 0 };
            struct tkv_attention_options opts = { .struct_size = sizeof opts, .stats = &st };
            if (tkv_attention_tensors(cache, l, 1, &seq, &one, QH, &q, &o, &opts) != TKV_OK)
                fail_msg("step %u layer %u attention: %s", s, l, tkv_last_error());
            assert_int_equal(st.rows_total, (uint64_t)QH * (PREFILL + s + 1));
            assert_int_equal(st.rows_skipped, 0);
            /* the cpu plugin on the same values as host arrays */
            unsigned char *h = (unsigned char *)staging.map + at;
            struct tkv_tensor hk = host_tensor(e, h), hv = host_tensor(e, h + row * es);
            struct tkv_tensor hq = host_tensor(e, h + 2 * row * es), ho = host_tensor(e, cpu_out + out_at[s][l]);
            assert_int_equal(tkv_cache_append_tensors(cache_cpu, seq, l, 1, &hk, &hv), TKV_OK);
            assert_int_equal(tkv_attention_tensors(cache_cpu, l, 1, &seq, &one, QH, &hq, &ho, NULL), TKV_OK);
        }
        assert_int_equal(tkv_context_set_command_buffer(ctx, NULL), TKV_OK);
        /* the host's own work after: the outputs copied out (through the
         * barrier turbokv ends each call with) */
        host_copy(cmd, &out, out_at[s][0], &readback, out_at[s][0],
                  out_at[s][L - 1] + qrow * esize(e) - out_at[s][0]);
        host_barrier(cmd, VK_ACCESS_HOST_READ_BIT, VK_PIPELINE_STAGE_HOST_BIT);
        /* recorded, not run: the outputs hold what the host put there */
        for (size_t i = out_at[s][0]; i < out_at[s][L - 1] + qrow * esize(e); i++)
            if (((unsigned char *)out.map)[i] != SENTINEL)
                fail_msg("step %u: out byte %zu written before the host submitted", s, i);
        if (s == 0) {
            struct tkv_cache_bytes grown;
            assert_int_equal(tkv_cache_bytes(cache, &grown), TKV_OK);
            grown_blocks = grown.blocks_allocated;
        }
        submit_and_wait(cmd);
    }
    /* the pool grew while the host recorded */
    assert_true(grown_blocks > before.blocks_allocated);

    double worst[STEPS] = { 0 };
    for (uint32_t s = 0; s < STEPS; s++)
        for (uint32_t l = 0; l < L; l++)
            for (uint32_t r = 0; r < QH; r++) {
                const size_t base = (out_at[s][l] / esize(elems[s])) + (size_t)r * D;
                double mag = 0, err = 0;
                for (uint32_t i = 0; i < D; i++) {
                    double va = decode1(cpu_out, base + i, elems[s]), vb = decode1(readback.map, base + i, elems[s]);
                    assert_true(isfinite(vb));
                    mag = fmax(mag, fabs(va));
                    err = fmax(err, fabs(va - vb));
                }
                const double ulp = elems[s] == TKV_ELEM_F32 ? 0 : elems[s] == TKV_ELEM_F16 ? 1.0 / 1024 : 1.0 / 128;
                const double rel = err / (mag > 1e-6 ? mag : 1e-6);
                worst[s] = fmax(worst[s], rel);
                if (rel > ATTN_TOLERANCE + ulp)
                    fail_msg("step %u (elem %u) layer %u head %u: relative error %.3g", s, elems[s], l, r, rel);
            }
    print_message("vulkan (host's device) vs cpu: worst attention error f32 %.3g, f16 %.3g, bf16 %.3g\n", worst[0],
                  worst[1], worst[2]);

    /* the same stored bytes: the sequence images of the two caches */
    assert_same_rows(cache, cache_cpu);
    for (uint32_t l = 0; l < L; l++) {
        uint32_t len = 0;
        assert_int_equal(tkv_cache_length(cache, 0, l, &len), TKV_OK);
        assert_int_equal(len, PREFILL + STEPS);
    }
    free_buffer(&pre);
    free_buffer(&staging);
    free_buffer(&in);
    free_buffer(&out);
    free_buffer(&readback);
    free(x);
    free(cpu_out);
}

/* tkv_cache_append_attention on the host's device tensors against the cpu
 * plugin's two calls on the same values: the attention outputs within the
 * tolerance, the stored bytes equal. Where decode.comp runs the step (turbo
 * keys and values of at most TKV_VK_DECODE_ROW_WORDS words: the first four
 * layers' types) the rows are quantized inside its dispatch (step 0: f32,
 * and f16 and bf16 widened there); q8_0 keys (decode_wide.comp) take the
 * pair of appends, then the attention. Tokens 254 .. 261: the second step's
 * two lie on both sides of a chunk's end (128 rows on lavapipe) and open
 * block 16, which units of two query rows store side by side; a fork then
 * shares that block, so the third step (f16) copies it first; the fourth
 * is bf16 over a window of 100; the last appends three. */
static void fused_step_matches_two_calls(void **state)
{
    (void)state;
    enum { FL = 5, PRE = 254, FSTEPS = 5, FCAP = 272 };
    static const uint32_t fk[FL] = { TKV_TYPE_TURBO3, TKV_TYPE_TURBO3_OUT, TKV_TYPE_TURBO4, TKV_TYPE_TURBO2,
                                     TKV_TYPE_Q8_0 };
    static const uint32_t fv[FL] = { TKV_TYPE_TURBO3, TKV_TYPE_TURBO3_OUT, TKV_TYPE_TURBO2, TKV_TYPE_TURBO4,
                                     TKV_TYPE_TURBO3 };
    static const uint32_t n_new[FSTEPS] = { 1, 2, 1, 1, 3 };
    static const uint32_t elem[FSTEPS] = { TKV_ELEM_F32, TKV_ELEM_F32, TKV_ELEM_F16, TKV_ELEM_BF16, TKV_ELEM_F32 };
    static const uint32_t window[FSTEPS] = { 0, 0, 0, 100, 0 };
    struct tkv_cache_params p = {
        .struct_size = sizeof p, .n_layers = FL, .n_kv_heads = KV, .head_dim = D, .capacity = FCAP, .n_q_heads = QH,
        .k_type = TKV_TYPE_FROM_CONFIG, .v_type = TKV_TYPE_FROM_CONFIG, .layer_k_types = fk, .layer_v_types = fv,
        .block_tokens = 16, .n_seqs = 2,
    };
    tkv_cache *g = NULL, *c = NULL;
    assert_int_equal(tkv_cache_create(ctx, &p, &g), TKV_OK);
    assert_int_equal(tkv_cache_create(ctx_cpu, &p, &c), TKV_OK);
    const size_t row = (size_t)KV * D, qrow = (size_t)QH * D;
    prefill_both(g, c, FL, PRE, row);
    /* a step's layer: k, v (3 rows at most), q (3 query rows), in the
     * step's element type at f32's room; out f32 */
    const size_t per = 2 * 3 * row + 3 * qrow;
    float *x = malloc(sizeof *x * FSTEPS * FL * per);
    for (size_t i = 0; i < (size_t)FSTEPS * FL * per; i++)
        x[i] = gauss() * (i % 89 == 0 ? 6.0f : 1.0f);
    const size_t in_bytes = sizeof(float) * FSTEPS * FL * per, out_bytes = sizeof(float) * FSTEPS * FL * 3 * qrow;
    struct hbuf in = new_buffer(in_bytes, 1), out = new_buffer(out_bytes, 1);
    float *cpu_out = calloc(1, out_bytes);
    for (uint32_t s = 0; s < FSTEPS; s++)
        for (uint32_t l = 0; l < FL; l++) {
            const size_t at = ((size_t)s * FL + l) * per;
            encode((unsigned char *)in.map + at * sizeof(float), x + at, per, elem[s]);
        }
    memset(out.map, 0, out_bytes);
    uint32_t seq = 0;
    for (uint32_t s = 0; s < FSTEPS; s++)
        for (uint32_t l = 0; l < FL; l++) {
            if (s == 2 && l == 0) {
                /* a fork after the second step: sequence 1 shares block 16,
                 * which holds one token, and the third step's append to
                 * sequence 0 copies it first (copy-on-write, queued) */
                assert_int_equal(tkv_seq_copy(g, 0, 1, PRE + 3), TKV_OK);
                assert_int_equal(tkv_seq_copy(c, 0, 1, PRE + 3), TKV_OK);
            }
            const uint32_t e = elem[s], n = n_new[s];
            const size_t es = esize(e), at = ((size_t)s * FL + l) * per * sizeof(float);
            const size_t o_at = ((size_t)s * FL + l) * 3 * qrow;
            unsigned char *h = (unsigned char *)in.map + at;
            struct tkv_tensor k = vk_tensor(e, &in, at), v = vk_tensor(e, &in, at + n * row * es);
            struct tkv_tensor q = vk_tensor(e, &in, at + 2 * n * row * es);
            struct tkv_tensor o = vk_tensor(TKV_ELEM_F32, &out, o_at * sizeof(float));
            struct tkv_attention_options opts = { .struct_size = sizeof opts, .window = window[s] };
            if (tkv_cache_append_attention(g, seq, l, n, &k, &v, QH, &q, &o, &opts) != TKV_OK)
                fail_msg("step %u layer %u: %s", s, l, tkv_last_error());
            struct tkv_tensor hk = host_tensor(e, h), hv = host_tensor(e, h + n * row * es);
            struct tkv_tensor hq = host_tensor(e, h + 2 * n * row * es), ho = host_tensor(TKV_ELEM_F32, cpu_out + o_at);
            assert_int_equal(tkv_cache_append_tensors(c, seq, l, n, &hk, &hv), TKV_OK);
            assert_int_equal(tkv_attention_tensors(c, l, 1, &seq, &n, QH, &hq, &ho, &opts), TKV_OK);
        }
    /* the calls went to the host's queue, not waited for */
    assert_int_equal(vkQueueWaitIdle(queue), VK_SUCCESS);
    const float *dev_out = out.map;
    double worst = 0;
    for (uint32_t s = 0; s < FSTEPS; s++)
        for (uint32_t l = 0; l < FL; l++)
            for (uint32_t r = 0; r < n_new[s] * QH; r++) {
                const size_t base = ((size_t)s * FL + l) * 3 * qrow + (size_t)r * D;
                const double rel = row_error(cpu_out + base, dev_out + base, D);
                worst = fmax(worst, rel);
                if (rel > ATTN_TOLERANCE)
                    fail_msg("step %u layer %u (K %s, V %s) query row %u: relative error %.3g", s, l,
                             tkv_type_name(fk[l]), tkv_type_name(fv[l]), r, rel);
            }
    print_message("append_attention (vulkan, host's device) vs two calls (cpu): worst attention error %.3g\n",
                  worst);
    assert_same_rows(g, c);
    assert_same_seq(g, c, 1);
    uint32_t len1 = 0;
    assert_int_equal(tkv_cache_length(g, 1, 0, &len1), TKV_OK);
    assert_int_equal(len1, PRE + 3);
    free_buffer(&in);
    free_buffer(&out);
    free(x);
    free(cpu_out);
    tkv_cache_destroy(g);
    tkv_cache_destroy(c);
}

/* More attentions in one command buffer than the plugin has input slots
 * (256, plugins/vulkan/vk.h VK_INPUT_SLOTS): each call's inputs (here its
 * queries, from a host array) live in a slot of device memory the host
 * wrote at record time, and a slot is taken again only once the commands
 * that read it have run. Nothing has run before the host submits, so the
 * calls past the 256th find their slot busy and capture their inputs into
 * the commands instead; every call must still see its own queries. */
static void queued_inputs_keep_their_slots(void **state)
{
    (void)state;
    enum { N = 300, CTX = 40 };
    static const uint32_t kt[1] = { TKV_TYPE_TURBO3 }, vt[1] = { TKV_TYPE_TURBO3 };
    struct tkv_cache_params p = {
        .struct_size = sizeof p, .n_layers = 1, .n_kv_heads = KV, .head_dim = D, .capacity = CTX, .n_q_heads = QH,
        .k_type = TKV_TYPE_FROM_CONFIG, .v_type = TKV_TYPE_FROM_CONFIG, .layer_k_types = kt, .layer_v_types = vt,
        .block_tokens = 16,
    };
    tkv_cache *g = NULL, *c = NULL;
    assert_int_equal(tkv_cache_create(ctx, &p, &g), TKV_OK);
    assert_int_equal(tkv_cache_create(ctx_cpu, &p, &c), TKV_OK);
    const size_t qrow = (size_t)QH * D;
    prefill_both(g, c, 1, CTX, (size_t)KV * D);
    float *q = malloc(sizeof *q * N * qrow), *cpu_out = malloc(sizeof *cpu_out * N * qrow);
    for (size_t i = 0; i < (size_t)N * qrow; i++)
        q[i] = gauss();
    struct hbuf out = new_buffer(sizeof(float) * N * qrow, 1);
    memset(out.map, 0, out.size);
    const uint32_t seq = 0, one = 1;
    VkCommandBuffer cmd = begin_commands();
    assert_int_equal(tkv_context_set_command_buffer(ctx, cmd), TKV_OK);
    for (uint32_t i = 0; i < N; i++) {
        struct tkv_tensor hq = host_tensor(TKV_ELEM_F32, q + i * qrow);
        struct tkv_tensor o = vk_tensor(TKV_ELEM_F32, &out, i * qrow * sizeof(float));
        if (tkv_attention_tensors(g, 0, 1, &seq, &one, QH, &hq, &o, NULL) != TKV_OK)
            fail_msg("call %u: %s", i, tkv_last_error());
        struct tkv_tensor ho = host_tensor(TKV_ELEM_F32, cpu_out + i * qrow);
        assert_int_equal(tkv_attention_tensors(c, 0, 1, &seq, &one, QH, &hq, &ho, NULL), TKV_OK);
    }
    assert_int_equal(tkv_context_set_command_buffer(ctx, NULL), TKV_OK);
    /* the host's arrays may change once a call returns */
    memset(q, 0, sizeof *q * N * qrow);
    submit_and_wait(cmd);
    const float *dev_out = out.map;
    double worst = 0;
    for (uint32_t i = 0; i < N; i++)
        for (uint32_t r = 0; r < QH; r++) {
            const double rel = row_error(cpu_out + i * qrow + r * D, dev_out + i * qrow + r * D, D);
            worst = fmax(worst, rel);
            if (rel > ATTN_TOLERANCE)
                fail_msg("call %u query row %u: relative error %.3g", i, r, rel);
        }
    print_message("%d queued attentions in one command buffer vs cpu: worst attention error %.3g\n", N, worst);
    free_buffer(&out);
    free(q);
    free(cpu_out);
    tkv_cache_destroy(g);
    tkv_cache_destroy(c);
}

/* Bad device tensors: refused naming the argument; the cache unchanged. A
 * command buffer set refuses every call that would wait. */
static void refuses_bad_tensors(void **state)
{
    (void)state;
    const size_t n = (size_t)KV * D, nq = (size_t)QH * D;
    struct hbuf m = new_buffer((2 * n + nq) * 4, 1), o = new_buffer(nq * 4, 1);
    for (size_t i = 0; i < 2 * n + nq; i++)
        ((float *)m.map)[i] = gauss();
    uint32_t before = 0, after = 0, seq = 0, one = 1;
    assert_int_equal(tkv_cache_length(cache, 0, 1, &before), TKV_OK);
    struct tkv_tensor k = vk_tensor(TKV_ELEM_F32, &m, 0), v = vk_tensor(TKV_ELEM_F32, &m, n * 4);

    /* beyond the buffer the host described */
    struct tkv_tensor bad = v;
    bad.size = n * 4 + 4;
    assert_int_equal(tkv_cache_append_tensors(cache, 0, 1, 1, &k, &bad), TKV_ERANGE);
    assert_non_null(strstr(tkv_last_error(), "v holds"));
    /* the host described more than the VkBuffer can hold: the plugin checks */
    bad = v;
    bad.size = 1u << 30;
    bad.offset = (2 * n + nq) * 4 - 4;
    assert_int_equal(tkv_cache_append_tensors(cache, 0, 1, 1, &k, &bad), TKV_ERANGE);
    assert_non_null(strstr(tkv_last_error(), "VkBuffer holds at most"));
    /* misaligned, an OpenCL buffer, data set, no handle */
    bad = v;
    bad.offset = 2;
    assert_int_equal(tkv_cache_append_tensors(cache, 0, 1, 1, &k, &bad), TKV_EINVAL);
    assert_non_null(strstr(tkv_last_error(), "offset 2"));
    bad = v;
    bad.memory = TKV_MEMORY_OPENCL;
    assert_int_equal(tkv_cache_append_tensors(cache, 0, 1, 1, &k, &bad), TKV_EINVAL);
    assert_non_null(strstr(tkv_last_error(), "OpenCL buffer"));
    bad = v;
    bad.data = &bad;
    assert_int_equal(tkv_cache_append_tensors(cache, 0, 1, 1, &k, &bad), TKV_EINVAL);
    bad = v;
    bad.handle = 0;
    assert_int_equal(tkv_cache_append_tensors(cache, 0, 1, 1, &k, &bad), TKV_EINVAL);
    assert_int_equal(tkv_cache_length(cache, 0, 1, &after), TKV_OK);
    assert_int_equal(after, before);

    /* attention: lse and device_ns need a wait, out beyond its buffer */
    struct tkv_tensor q = vk_tensor(TKV_ELEM_F32, &m, 2 * n * 4), out = vk_tensor(TKV_ELEM_F32, &o, 0);
    float lse[QH];
    uint64_t ns = 0;
    struct tkv_attention_options opts = { .struct_size = sizeof opts, .lse = lse };
    assert_int_equal(tkv_attention_tensors(cache, 1, 1, &seq, &one, QH, &q, &out, &opts), TKV_EUNSUPPORTED);
    assert_non_null(strstr(tkv_last_error(), "lse"));
    opts = (struct tkv_attention_options){ .struct_size = sizeof opts, .device_ns = &ns };
    assert_int_equal(tkv_attention_tensors(cache, 1, 1, &seq, &one, QH, &q, &out, &opts), TKV_EUNSUPPORTED);
    bad = out;
    bad.offset = 4;
    assert_int_equal(tkv_attention_tensors(cache, 1, 1, &seq, &one, QH, &q, &bad, NULL), TKV_ERANGE);
    assert_non_null(strstr(tkv_last_error(), "out holds"));
    /* a decode step's out sharing the buffer of its k, v or q: refused
     * where the bytes meet, named by the first it meets (out from v's
     * start touches k's end, no more); q and out the same bytes */
    struct tkv_tensor o_on_v = vk_tensor(TKV_ELEM_F32, &m, n * 4), q_on_o = vk_tensor(TKV_ELEM_F32, &o, 0);
    assert_int_equal(tkv_cache_append_attention(cache, 0, 1, 1, &k, &v, QH, &q, &o_on_v, NULL), TKV_EINVAL);
    assert_non_null(strstr(tkv_last_error(), "out overlaps v"));
    assert_int_equal(tkv_cache_append_attention(cache, 0, 1, 1, &k, &v, QH, &q_on_o, &out, NULL), TKV_EINVAL);
    assert_non_null(strstr(tkv_last_error(), "out overlaps q"));
    assert_int_equal(tkv_cache_length(cache, 0, 1, &after), TKV_OK);
    assert_int_equal(after, before);

    /* q in device memory, out in host memory: synchronous, and the same as
     * q from the host */
    float host_out[QH * D], ref[QH * D];
    struct tkv_tensor ho = host_tensor(TKV_ELEM_F32, host_out);
    assert_int_equal(tkv_attention_tensors(cache, 1, 1, &seq, &one, QH, &q, &ho, NULL), TKV_OK);
    assert_int_equal(tkv_attention(cache, 1, 1, &seq, 1, QH, (const float *)m.map + 2 * n, ref, NULL), TKV_OK);
    assert_memory_equal(host_out, ref, sizeof ref);

    /* while a command buffer is set, calls that would wait are refused and
     * change nothing; recorded calls go on */
    VkCommandBuffer cmd = begin_commands();
    assert_int_equal(tkv_context_set_command_buffer(ctx, cmd), TKV_OK);
    assert_int_equal(tkv_attention(cache, 1, 1, &seq, 1, QH, (const float *)m.map + 2 * n, ref, NULL), TKV_EBUSY);
    assert_non_null(strstr(tkv_last_error(), "command buffer is set"));
    assert_int_equal(tkv_cache_append(cache, 0, 1, 1, (const float *)m.map, (const float *)m.map + n), TKV_EBUSY);
    float deq[KV * D];
    assert_int_equal(tkv_cache_dequantize(cache, 0, 1, 0, 0, 1, deq), TKV_EBUSY);
    size_t img = 0;
    assert_int_equal(tkv_seq_state_size(cache, 0, &img), TKV_OK);
    void *image = malloc(img);
    assert_int_equal(tkv_seq_state_get(cache, 0, image, img, &img), TKV_EBUSY);
    free(image);
    assert_int_equal(tkv_cache_length(cache, 0, 1, &after), TKV_OK);
    assert_int_equal(after, before);
    assert_int_equal(tkv_context_set_command_buffer(ctx, NULL), TKV_OK);
    submit_and_wait(cmd);

    /* device tensors on a context not opened on the host's device */
    assert_int_equal(tkv_cache_append_tensors(cache_cpu, 0, 1, 1, &k, &v), TKV_EUNSUPPORTED);
    assert_non_null(strstr(tkv_last_error(), "host_device"));
    free_buffer(&m);
    free_buffer(&o);
}

/* Opening on a host device: the tag names the backend, the handles, the
 * version and the queue family are checked. */
static void refuses_bad_host_devices(void **state)
{
    (void)state;
    tkv_context *c = NULL;
    struct tkv_host_device h = host_of();
    assert_int_equal(open_tkv("cpu", &h, &c), TKV_EINVAL);
    assert_non_null(strstr(tkv_last_error(), "Vulkan device"));
    h.backend = 7;
    assert_int_equal(open_tkv(NULL, &h, &c), TKV_EINVAL);
    h = host_of();
    h.vulkan.queue = NULL;
    assert_int_equal(open_tkv(NULL, &h, &c), TKV_EINVAL);
    assert_non_null(strstr(tkv_last_error(), "queue"));
    h = host_of();
    h.vulkan.api_version = VK_API_VERSION_1_1;
    assert_int_equal(open_tkv(NULL, &h, &c), TKV_EUNSUPPORTED);
    assert_non_null(strstr(tkv_last_error(), "api_version 1.1"));
    h = host_of();
    h.vulkan.queue_family = 99;
    assert_int_equal(open_tkv(NULL, &h, &c), TKV_EUNSUPPORTED);
    assert_non_null(strstr(tkv_last_error(), "queue family 99"));
    h = host_of();
    h.struct_size = 8;
    assert_int_equal(open_tkv(NULL, &h, &c), TKV_EINVAL);
    assert_null(c);
    /* a flag no TKV_HOST_VULKAN_* names; the statistics flag where the
     * device has no VK_KHR_pipeline_executable_properties (lavapipe) */
    h = host_of();
    h.vulkan.flags |= 0x80u;
    assert_int_equal(open_tkv(NULL, &h, &c), TKV_EINVAL);
    assert_non_null(strstr(tkv_last_error(), "flags 0x8"));
    if (!host_flags) {
        h = host_of();
        h.vulkan.flags = TKV_HOST_VULKAN_STATISTICS;
        assert_int_equal(open_tkv(NULL, &h, &c), TKV_EINVAL);
        assert_non_null(strstr(tkv_last_error(), "VK_KHR_pipeline_executable_properties"));
        assert_null(c);
    }
    /* a 0.5 struct (no flags member) is still taken; one shorter is not */
    h = host_of();
    h.vulkan.flags = 0x80u; /* past struct_size: not read */
    h.struct_size = (uint32_t)offsetof(struct tkv_host_device, vulkan.flags);
    assert_int_equal(open_tkv(NULL, &h, &c), TKV_OK);
    tkv_context_close(c);
    c = NULL;
    h.struct_size--;
    assert_int_equal(open_tkv(NULL, &h, &c), TKV_EINVAL);
    assert_non_null(strstr(tkv_last_error(), "expected at least"));
    assert_null(c);
    /* without get_instance_proc_addr: the loader's */
    h = host_of();
    h.vulkan.get_instance_proc_addr = NULL;
    assert_int_equal(open_tkv(NULL, &h, &c), TKV_OK);
    tkv_context_close(c);
}

/* Arguments NAME=VALUE: environment for the plugin, set before it is
 * opened (a variant with its knobs: meson test host-vulkan-shift);
 * TKV_TESTS=NAME,NAME runs only those tests. */
int main(int argc, char **argv)
{
    rng_state = 4242u;
    if (set_env_args("test_host_vulkan", argc, argv, 1) != 0)
        return 2;
    const struct CMUnitTest all[] = {
        cmocka_unit_test(opens_on_the_hosts_device),
        cmocka_unit_test(matches_cpu),
        cmocka_unit_test(fused_step_matches_two_calls),
        cmocka_unit_test(queued_inputs_keep_their_slots),
        cmocka_unit_test(refuses_bad_tensors),
        cmocka_unit_test(refuses_bad_host_devices),
    };
    struct CMUnitTest tests[sizeof all / sizeof all[0]];
    size_t n;
    if (select_tests("test_host_vulkan", all, sizeof all / sizeof all[0], tests, &n) != 0)
        return 2;
    return _cmocka_run_group_tests("tests", tests, n, setup, teardown);
}
