/* SPDX-License-Identifier: MIT */
/*
 * Where the host time of a recorded decode step goes: the driver calls
 * turbokv makes while it records one token's appends and attentions of
 * every layer into the host's command buffer, counted and timed per
 * function, beside the time of the turbokv calls themselves.
 *
 * The program is the host engine: it owns its VkDevice and passes
 * turbokv a vkGetInstanceProcAddr of its own (tkv_host_device's
 * get_instance_proc_addr), which hands out timing wrappers of the
 * driver's functions. Usage: vkcalls TYPE CTX [LAYERS] [STEPS]
 *   cc -O2 -Iabi vkcalls.c -Lbuild/core -lturbokv -lvulkan -lm -o vkcalls
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <vulkan/vulkan.h>

#include "turbokv.h"

static double now_ns(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec * 1e9 + t.tv_nsec;
}

static int counting; /* only while a step records */
enum { F_BIND, F_PUSH, F_DISPATCH, F_BARRIER, F_COPY, F_FILL, F_UPDATE, F_SETEVENT, F_RESETQ, F_STAMP, F_MEMREQ,
       F_ADDRESS, F_EVSTATUS, F_EVCREATE, F_EVDESTROY, F_N };
static const char *names[F_N] = { "vkCmdBindPipeline", "vkCmdPushConstants", "vkCmdDispatch", "vkCmdPipelineBarrier",
                                  "vkCmdCopyBuffer", "vkCmdFillBuffer", "vkCmdUpdateBuffer", "vkCmdSetEvent",
                                  "vkCmdResetQueryPool", "vkCmdWriteTimestamp", "vkGetBufferMemoryRequirements",
                                  "vkGetBufferDeviceAddress", "vkGetEventStatus", "vkCreateEvent", "vkDestroyEvent" };
static PFN_vkVoidFunction real[F_N];
static double spent[F_N];
static unsigned long calls[F_N];

#define TIMED(f, type, call)                                                                                         \
    do {                                                                                                             \
        const double t0_ = counting ? now_ns() : 0;                                                                 \
        call;                                                                                                        \
        if (counting) {                                                                                              \
            spent[f] += now_ns() - t0_;                                                                              \
            calls[f]++;                                                                                              \
        }                                                                                                            \
    } while (0)
#define R(f, T) ((T)real[f])

static VKAPI_ATTR void VKAPI_CALL w_bind(VkCommandBuffer c, VkPipelineBindPoint p, VkPipeline pl)
{ TIMED(F_BIND, , R(F_BIND, PFN_vkCmdBindPipeline)(c, p, pl)); }
static VKAPI_ATTR void VKAPI_CALL w_push(VkCommandBuffer c, VkPipelineLayout l, VkShaderStageFlags s, uint32_t o,
                                         uint32_t n, const void *v)
{ TIMED(F_PUSH, , R(F_PUSH, PFN_vkCmdPushConstants)(c, l, s, o, n, v)); }
static VKAPI_ATTR void VKAPI_CALL w_dispatch(VkCommandBuffer c, uint32_t x, uint32_t y, uint32_t z)
{ TIMED(F_DISPATCH, , R(F_DISPATCH, PFN_vkCmdDispatch)(c, x, y, z)); }
static VKAPI_ATTR void VKAPI_CALL w_barrier(VkCommandBuffer c, VkPipelineStageFlags s, VkPipelineStageFlags d,
                                            VkDependencyFlags f, uint32_t nm, const VkMemoryBarrier *m, uint32_t nb,
                                            const VkBufferMemoryBarrier *b, uint32_t ni,
                                            const VkImageMemoryBarrier *i)
{ TIMED(F_BARRIER, , R(F_BARRIER, PFN_vkCmdPipelineBarrier)(c, s, d, f, nm, m, nb, b, ni, i)); }
static VKAPI_ATTR void VKAPI_CALL w_copy(VkCommandBuffer c, VkBuffer s, VkBuffer d, uint32_t n, const VkBufferCopy *r)
{ TIMED(F_COPY, , R(F_COPY, PFN_vkCmdCopyBuffer)(c, s, d, n, r)); }
static VKAPI_ATTR void VKAPI_CALL w_fill(VkCommandBuffer c, VkBuffer b, VkDeviceSize o, VkDeviceSize n, uint32_t v)
{ TIMED(F_FILL, , R(F_FILL, PFN_vkCmdFillBuffer)(c, b, o, n, v)); }
static VKAPI_ATTR void VKAPI_CALL w_update(VkCommandBuffer c, VkBuffer b, VkDeviceSize o, VkDeviceSize n,
                                           const void *p)
{ TIMED(F_UPDATE, , R(F_UPDATE, PFN_vkCmdUpdateBuffer)(c, b, o, n, p)); }
static VKAPI_ATTR void VKAPI_CALL w_setevent(VkCommandBuffer c, VkEvent e, VkPipelineStageFlags s)
{ TIMED(F_SETEVENT, , R(F_SETEVENT, PFN_vkCmdSetEvent)(c, e, s)); }
static VKAPI_ATTR void VKAPI_CALL w_resetq(VkCommandBuffer c, VkQueryPool p, uint32_t f, uint32_t n)
{ TIMED(F_RESETQ, , R(F_RESETQ, PFN_vkCmdResetQueryPool)(c, p, f, n)); }
static VKAPI_ATTR void VKAPI_CALL w_stamp(VkCommandBuffer c, VkPipelineStageFlagBits s, VkQueryPool p, uint32_t q)
{ TIMED(F_STAMP, , R(F_STAMP, PFN_vkCmdWriteTimestamp)(c, s, p, q)); }
static VKAPI_ATTR void VKAPI_CALL w_memreq(VkDevice d, VkBuffer b, VkMemoryRequirements *r)
{ TIMED(F_MEMREQ, , R(F_MEMREQ, PFN_vkGetBufferMemoryRequirements)(d, b, r)); }
static VKAPI_ATTR VkDeviceAddress VKAPI_CALL w_address(VkDevice d, const VkBufferDeviceAddressInfo *i)
{ VkDeviceAddress a; TIMED(F_ADDRESS, , a = R(F_ADDRESS, PFN_vkGetBufferDeviceAddress)(d, i)); return a; }
static VKAPI_ATTR VkResult VKAPI_CALL w_evstatus(VkDevice d, VkEvent e)
{ VkResult r; TIMED(F_EVSTATUS, , r = R(F_EVSTATUS, PFN_vkGetEventStatus)(d, e)); return r; }
static VKAPI_ATTR VkResult VKAPI_CALL w_evcreate(VkDevice d, const VkEventCreateInfo *i, const VkAllocationCallbacks *a,
                                                 VkEvent *e)
{ VkResult r; TIMED(F_EVCREATE, , r = R(F_EVCREATE, PFN_vkCreateEvent)(d, i, a, e)); return r; }
static VKAPI_ATTR void VKAPI_CALL w_evdestroy(VkDevice d, VkEvent e, const VkAllocationCallbacks *a)
{ TIMED(F_EVDESTROY, , R(F_EVDESTROY, PFN_vkDestroyEvent)(d, e, a)); }

static const PFN_vkVoidFunction wrappers[F_N] = {
    (PFN_vkVoidFunction)w_bind,     (PFN_vkVoidFunction)w_push,     (PFN_vkVoidFunction)w_dispatch,
    (PFN_vkVoidFunction)w_barrier,  (PFN_vkVoidFunction)w_copy,     (PFN_vkVoidFunction)w_fill,
    (PFN_vkVoidFunction)w_update,   (PFN_vkVoidFunction)w_setevent, (PFN_vkVoidFunction)w_resetq,
    (PFN_vkVoidFunction)w_stamp,    (PFN_vkVoidFunction)w_memreq,   (PFN_vkVoidFunction)w_address,
    (PFN_vkVoidFunction)w_evstatus, (PFN_vkVoidFunction)w_evcreate, (PFN_vkVoidFunction)w_evdestroy,
};

static PFN_vkVoidFunction wrap(const char *name, PFN_vkVoidFunction f)
{
    for (int i = 0; i < F_N && f; i++)
        if (!strcmp(name, names[i])) {
            real[i] = f;
            return wrappers[i];
        }
    return f;
}

static VKAPI_ATTR PFN_vkVoidFunction VKAPI_CALL my_gdpa(VkDevice d, const char *name)
{
    return wrap(name, vkGetDeviceProcAddr(d, name));
}

static VKAPI_ATTR PFN_vkVoidFunction VKAPI_CALL my_gipa(VkInstance i, const char *name)
{
    if (!strcmp(name, "vkGetDeviceProcAddr"))
        return (PFN_vkVoidFunction)my_gdpa;
    return wrap(name, vkGetInstanceProcAddr(i, name));
}

#define TRY(x)                                                                                                       \
    do {                                                                                                             \
        VkResult r_ = (x);                                                                                           \
        if (r_ != VK_SUCCESS) {                                                                                      \
            fprintf(stderr, "%s failed (%d)\n", #x, (int)r_);                                                        \
            exit(1);                                                                                                 \
        }                                                                                                            \
    } while (0)
#define TKV(x)                                                                                                       \
    do {                                                                                                             \
        if ((x) != TKV_OK) {                                                                                         \
            fprintf(stderr, "%s: %s\n", #x, tkv_last_error());                                                       \
            exit(1);                                                                                                 \
        }                                                                                                            \
    } while (0)

static VkPhysicalDeviceMemoryProperties memory;

static void make_buffer(VkDevice d, VkDeviceSize bytes, VkMemoryPropertyFlags want, VkBuffer *b, VkDeviceMemory *m)
{
    VkBufferCreateInfo bi = {
        .sType = VK_STRUCTURE_TYPE_BUFFER_CREATE_INFO, .size = bytes,
        .usage = VK_BUFFER_USAGE_STORAGE_BUFFER_BIT | VK_BUFFER_USAGE_TRANSFER_SRC_BIT |
                 VK_BUFFER_USAGE_TRANSFER_DST_BIT | VK_BUFFER_USAGE_SHADER_DEVICE_ADDRESS_BIT,
    };
    TRY(vkCreateBuffer(d, &bi, NULL, b));
    VkMemoryRequirements req;
    vkGetBufferMemoryRequirements(d, *b, &req);
    uint32_t type = 0;
    while (type < memory.memoryTypeCount &&
           !((req.memoryTypeBits >> type & 1) && (memory.memoryTypes[type].propertyFlags & want) == want))
        type++;
    if (type == memory.memoryTypeCount)
        exit(2);
    VkMemoryAllocateFlagsInfo fl = { .sType = VK_STRUCTURE_TYPE_MEMORY_ALLOCATE_FLAGS_INFO,
                                     .flags = VK_MEMORY_ALLOCATE_DEVICE_ADDRESS_BIT };
    VkMemoryAllocateInfo ai = { .sType = VK_STRUCTURE_TYPE_MEMORY_ALLOCATE_INFO, .pNext = &fl,
                                .allocationSize = req.size, .memoryTypeIndex = type };
    TRY(vkAllocateMemory(d, &ai, NULL, m));
    TRY(vkBindBufferMemory(d, *b, *m, 0));
}

int main(int argc, char **argv)
{
    if (argc < 3) {
        fprintf(stderr, "usage: vkcalls TYPE CTX [LAYERS] [STEPS]\n");
        return 2;
    }
    uint32_t type;
    if (tkv_type_from_name(argv[1], &type) != TKV_OK)
        return 2;
    const uint32_t ctx = (uint32_t)atoi(argv[2]);
    const uint32_t layers = argc > 3 ? (uint32_t)atoi(argv[3]) : 32, steps = argc > 4 ? (uint32_t)atoi(argv[4]) : 20;
    const uint32_t qh = 32, kvh = 8, hd = 128;
    VkApplicationInfo app = { .sType = VK_STRUCTURE_TYPE_APPLICATION_INFO, .apiVersion = VK_API_VERSION_1_2 };
    VkInstanceCreateInfo ii = { .sType = VK_STRUCTURE_TYPE_INSTANCE_CREATE_INFO, .pApplicationInfo = &app };
    VkInstance inst;
    TRY(vkCreateInstance(&ii, NULL, &inst));
    uint32_t n = 1;
    VkPhysicalDevice phys;
    vkEnumeratePhysicalDevices(inst, &n, &phys);
    VkPhysicalDeviceProperties props;
    vkGetPhysicalDeviceProperties(phys, &props);
    vkGetPhysicalDeviceMemoryProperties(phys, &memory);
    uint32_t nf = 16, fam = 0;
    VkQueueFamilyProperties fams[16];
    vkGetPhysicalDeviceQueueFamilyProperties(phys, &nf, fams);
    while (fam < nf && !(fams[fam].queueFlags & VK_QUEUE_COMPUTE_BIT))
        fam++;
    float prio = 1;
    VkDeviceQueueCreateInfo qi = { .sType = VK_STRUCTURE_TYPE_DEVICE_QUEUE_CREATE_INFO, .queueFamilyIndex = fam,
                                   .queueCount = 1, .pQueuePriorities = &prio };
    VkPhysicalDeviceVulkan12Features f12 = { .sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_VULKAN_1_2_FEATURES,
                                             .bufferDeviceAddress = VK_TRUE, .storageBuffer8BitAccess = VK_TRUE,
                                             .shaderInt8 = VK_TRUE };
    VkPhysicalDeviceFeatures2 f2 = { .sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_FEATURES_2, .pNext = &f12,
                                     .features = { .shaderInt64 = VK_TRUE } };
    VkDeviceCreateInfo di = { .sType = VK_STRUCTURE_TYPE_DEVICE_CREATE_INFO, .pNext = &f2, .queueCreateInfoCount = 1,
                              .pQueueCreateInfos = &qi };
    VkDevice dev;
    TRY(vkCreateDevice(phys, &di, NULL, &dev));
    VkQueue queue;
    vkGetDeviceQueue(dev, fam, 0, &queue);
    VkCommandPoolCreateInfo pi = { .sType = VK_STRUCTURE_TYPE_COMMAND_POOL_CREATE_INFO, .queueFamilyIndex = fam,
                                   .flags = VK_COMMAND_POOL_CREATE_RESET_COMMAND_BUFFER_BIT };
    VkCommandPool pool;
    TRY(vkCreateCommandPool(dev, &pi, NULL, &pool));
    VkCommandBufferAllocateInfo ca = { .sType = VK_STRUCTURE_TYPE_COMMAND_BUFFER_ALLOCATE_INFO, .commandPool = pool,
                                       .level = VK_COMMAND_BUFFER_LEVEL_PRIMARY, .commandBufferCount = 1 };
    VkCommandBuffer cmd;
    TRY(vkAllocateCommandBuffers(dev, &ca, &cmd));
    VkFenceCreateInfo fi = { .sType = VK_STRUCTURE_TYPE_FENCE_CREATE_INFO };
    VkFence fence;
    TRY(vkCreateFence(dev, &fi, NULL, &fence));

    const size_t row = (size_t)kvh * hd, qrow = (size_t)qh * hd;
    const VkDeviceSize in_bytes = sizeof(float) * layers * (2 * row + qrow), out_bytes = sizeof(float) * layers * qrow;
    VkBuffer in, out;
    VkDeviceMemory in_mem, out_mem;
    make_buffer(dev, in_bytes, VK_MEMORY_PROPERTY_HOST_VISIBLE_BIT | VK_MEMORY_PROPERTY_HOST_COHERENT_BIT, &in,
                &in_mem);
    make_buffer(dev, out_bytes, VK_MEMORY_PROPERTY_DEVICE_LOCAL_BIT, &out, &out_mem);
    float *map;
    TRY(vkMapMemory(dev, in_mem, 0, VK_WHOLE_SIZE, 0, (void **)&map));
    srand(1);
    for (size_t i = 0; i < in_bytes / sizeof(float); i++)
        map[i] = (float)rand() / RAND_MAX - 0.5f;

    struct tkv_host_device hdv = {
        .struct_size = sizeof hdv, .backend = TKV_HOST_VULKAN,
        .vulkan = { .instance = inst, .physical_device = phys, .device = dev, .queue = queue, .queue_family = fam,
                    .api_version = VK_API_VERSION_1_2, .get_instance_proc_addr = (void (*)(void))my_gipa },
    };
    struct tkv_context_options opts = { .struct_size = sizeof opts, .host_device = &hdv };
    tkv_context *tc;
    TKV(tkv_context_open(&opts, &tc));
    struct tkv_cache_params p = { .struct_size = sizeof p, .n_layers = layers, .n_kv_heads = kvh, .head_dim = hd,
                                  .capacity = ctx + steps + 3, .k_type = type, .v_type = type, .n_q_heads = qh };
    tkv_cache *c;
    TKV(tkv_cache_create(tc, &p, &c));
    float *fill = malloc(sizeof(float) * 256 * row);
    for (size_t i = 0; i < 256 * row; i++)
        fill[i] = (float)rand() / RAND_MAX - 0.5f;
    for (uint32_t l = 0; l < layers; l++)
        for (uint32_t t = 0; t < ctx; t += 256)
            TKV(tkv_cache_append(c, 0, l, ctx - t < 256 ? ctx - t : 256, fill, fill));

    double t_app = 0, t_att = 0, t_step = 0, t_wait = 0;
    uint32_t seq = 0, one = 1;
    for (uint32_t s = 0; s < steps + 2; s++) {
        const int keep = s >= 2; /* two steps of warm-up */
        VkCommandBufferBeginInfo bb = { .sType = VK_STRUCTURE_TYPE_COMMAND_BUFFER_BEGIN_INFO,
                                        .flags = VK_COMMAND_BUFFER_USAGE_ONE_TIME_SUBMIT_BIT };
        TRY(vkResetCommandBuffer(cmd, 0));
        TRY(vkBeginCommandBuffer(cmd, &bb));
        TKV(tkv_context_set_command_buffer(tc, cmd));
        counting = keep;
        const double s0 = now_ns();
        for (uint32_t l = 0; l < layers; l++) {
            const uint64_t at = sizeof(float) * l * (2 * row + qrow);
            struct tkv_tensor base = { .struct_size = sizeof base, .memory = TKV_MEMORY_VULKAN,
                                       .handle = (uint64_t)(uintptr_t)in, .size = in_bytes };
            struct tkv_tensor tk = base, tv = base, tq = base, to = base;
            tk.offset = at;
            tv.offset = at + sizeof(float) * row;
            tq.offset = at + 2 * sizeof(float) * row;
            to.handle = (uint64_t)(uintptr_t)out;
            to.size = out_bytes;
            to.offset = sizeof(float) * l * qrow;
            double t0 = now_ns();
            TKV(tkv_cache_append_tensors(c, 0, l, 1, &tk, &tv));
            double t1 = now_ns();
            TKV(tkv_attention_tensors(c, l, 1, &seq, &one, qh, &tq, &to, NULL));
            double t2 = now_ns();
            if (keep) {
                t_app += t1 - t0;
                t_att += t2 - t1;
            }
        }
        const double s1 = now_ns();
        counting = 0;
        TKV(tkv_context_set_command_buffer(tc, NULL));
        TRY(vkEndCommandBuffer(cmd));
        VkSubmitInfo si = { .sType = VK_STRUCTURE_TYPE_SUBMIT_INFO, .commandBufferCount = 1, .pCommandBuffers = &cmd };
        TRY(vkQueueSubmit(queue, 1, &si, fence));
        TRY(vkWaitForFences(dev, 1, &fence, VK_TRUE, UINT64_MAX));
        TRY(vkResetFences(dev, 1, &fence));
        if (keep) {
            t_step += s1 - s0;
            t_wait += now_ns() - s1;
        }
    }
    const double per = 1e3 * steps * layers; /* ns -> us per layer */
    printf("vkcalls %s ctx %u on %s: %u layers, %u steps; us per layer\n", argv[1], ctx, props.deviceName, layers,
           steps);
    printf("  recording (append + attention calls) %.2f: append %.2f, attention %.2f; submit to fence %.2f\n",
           t_step / per, t_app / per, t_att / per, t_wait / per);
    double drv = 0;
    for (int i = 0; i < F_N; i++)
        if (calls[i]) {
            printf("  %-30s %6.2f calls %7.3f us  (%.3f us a call)\n", names[i], calls[i] / (double)(steps * layers),
                   spent[i] / per, spent[i] / calls[i] * 1e-3);
            drv += spent[i];
        }
    printf("  driver calls in all %.2f us, turbokv itself %.2f us a layer\n", drv / per, (t_step - drv) / per);
    tkv_cache_destroy(c);
    tkv_context_close(tc);
    return 0;
}
