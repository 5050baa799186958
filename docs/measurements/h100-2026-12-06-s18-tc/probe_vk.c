/* SPDX-License-Identifier: MIT */
/*
 * Session 18: the element layout of VK_NV_cooperative_matrix fragments, which
 * the extension leaves to the implementation. The tensor-core decode kernel
 * (tcdecode.cu) builds its A fragments element by element from decoded
 * indices; a Vulkan port can do the same only where it knows which (row,
 * column) each invocation's element i is. This program lists the device's
 * cooperative matrix shapes, runs probe_vk_layout.comp (compiled beforehand:
 * glslangValidator -V --target-env vulkan1.2 -o probe_vk_layout.spv
 * probe_vk_layout.comp) on one subgroup and prints each invocation's (row,
 * column) pairs for a 16 x 16 fp16 A and a 16 x 16 fp32 C, and whether they
 * are the layout of PTX's mma.m16n8k16 (A) and m16n8k8 accumulators taken
 * twice (C). A device without the extension (lavapipe) says so and the
 * program exits 0. Not part of the library.
 *
 *   cc -O2 -o probe_vk probe_vk.c -lvulkan && ./probe_vk probe_vk_layout.spv
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <vulkan/vulkan.h>

#define CHECK(call)                                                                     \
    do {                                                                                \
        VkResult r_ = (call);                                                           \
        if (r_ != VK_SUCCESS) {                                                         \
            fprintf(stderr, "%s:%d: %s: VkResult %d\n", __FILE__, __LINE__, #call, r_); \
            return 1;                                                                   \
        }                                                                               \
    } while (0)

static uint16_t half_of(unsigned v) /* 0 <= v < 2048, exact */
{
    if (!v)
        return 0;
    int e = 0;
    while ((v >> e) > 1u)
        e++;
    return (uint16_t)((unsigned)(e + 15) << 10 | ((v << (10 - e)) & 0x3ffu));
}

struct buf {
    VkBuffer b;
    VkDeviceMemory m;
    void *map;
};

static int make_buf(VkPhysicalDevice pd, VkDevice dev, VkDeviceSize size, struct buf *out)
{
    VkBufferCreateInfo bi = { .sType = VK_STRUCTURE_TYPE_BUFFER_CREATE_INFO, .size = size,
                              .usage = VK_BUFFER_USAGE_STORAGE_BUFFER_BIT };
    CHECK(vkCreateBuffer(dev, &bi, NULL, &out->b));
    VkMemoryRequirements req;
    vkGetBufferMemoryRequirements(dev, out->b, &req);
    VkPhysicalDeviceMemoryProperties mp;
    vkGetPhysicalDeviceMemoryProperties(pd, &mp);
    const VkMemoryPropertyFlags want = VK_MEMORY_PROPERTY_HOST_VISIBLE_BIT | VK_MEMORY_PROPERTY_HOST_COHERENT_BIT;
    uint32_t type = UINT32_MAX;
    for (uint32_t i = 0; i < mp.memoryTypeCount && type == UINT32_MAX; i++)
        if ((req.memoryTypeBits & (1u << i)) && (mp.memoryTypes[i].propertyFlags & want) == want)
            type = i;
    if (type == UINT32_MAX)
        return 1;
    VkMemoryAllocateInfo ai = { .sType = VK_STRUCTURE_TYPE_MEMORY_ALLOCATE_INFO, .allocationSize = req.size,
                                .memoryTypeIndex = type };
    CHECK(vkAllocateMemory(dev, &ai, NULL, &out->m));
    CHECK(vkBindBufferMemory(dev, out->b, out->m, 0));
    CHECK(vkMapMemory(dev, out->m, 0, VK_WHOLE_SIZE, 0, &out->map));
    return 0;
}

int main(int argc, char **argv)
{
    const char *spv_path = argc > 1 ? argv[1] : "probe_vk_layout.spv";
    VkApplicationInfo app = { .sType = VK_STRUCTURE_TYPE_APPLICATION_INFO, .apiVersion = VK_API_VERSION_1_2 };
    VkInstanceCreateInfo ii = { .sType = VK_STRUCTURE_TYPE_INSTANCE_CREATE_INFO, .pApplicationInfo = &app };
    VkInstance inst;
    CHECK(vkCreateInstance(&ii, NULL, &inst));
    uint32_t n = 0;
    CHECK(vkEnumeratePhysicalDevices(inst, &n, NULL));
    VkPhysicalDevice pds[16];
    n = n < 16 ? n : 16;
    CHECK(vkEnumeratePhysicalDevices(inst, &n, pds));
    VkPhysicalDevice pd = VK_NULL_HANDLE;
    for (uint32_t i = 0; i < n && !pd; i++) {
        uint32_t ne = 0;
        vkEnumerateDeviceExtensionProperties(pds[i], NULL, &ne, NULL);
        VkExtensionProperties *ext = calloc(ne ? ne : 1, sizeof *ext);
        vkEnumerateDeviceExtensionProperties(pds[i], NULL, &ne, ext);
        for (uint32_t e = 0; e < ne; e++)
            if (!strcmp(ext[e].extensionName, VK_NV_COOPERATIVE_MATRIX_EXTENSION_NAME))
                pd = pds[i];
        free(ext);
        VkPhysicalDeviceProperties p;
        vkGetPhysicalDeviceProperties(pds[i], &p);
        printf("device %u: %s%s\n", i, p.deviceName, pd == pds[i] ? " (VK_NV_cooperative_matrix)" : "");
    }
    if (!pd) {
        printf("RESULT: no device with VK_NV_cooperative_matrix\n");
        return 0;
    }
    PFN_vkGetPhysicalDeviceCooperativeMatrixPropertiesNV get_props =
        (PFN_vkGetPhysicalDeviceCooperativeMatrixPropertiesNV)vkGetInstanceProcAddr(
            inst, "vkGetPhysicalDeviceCooperativeMatrixPropertiesNV");
    uint32_t np = 0;
    if (get_props && get_props(pd, &np, NULL) == VK_SUCCESS && np) {
        VkCooperativeMatrixPropertiesNV *props = calloc(np, sizeof *props);
        for (uint32_t i = 0; i < np; i++)
            props[i].sType = VK_STRUCTURE_TYPE_COOPERATIVE_MATRIX_PROPERTIES_NV;
        get_props(pd, &np, props);
        for (uint32_t i = 0; i < np; i++)
            printf("shape M %u N %u K %u, types A %d B %d C %d D %d (VkComponentTypeNV), scope %d\n", props[i].MSize,
                   props[i].NSize, props[i].KSize, props[i].AType, props[i].BType, props[i].CType, props[i].DType,
                   props[i].scope);
        free(props);
    }

    VkPhysicalDeviceCooperativeMatrixFeaturesNV coop = {
        .sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_COOPERATIVE_MATRIX_FEATURES_NV, .cooperativeMatrix = VK_TRUE
    };
    VkPhysicalDeviceVulkan11Features f11 = { .sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_VULKAN_1_1_FEATURES,
                                             .pNext = &coop, .storageBuffer16BitAccess = VK_TRUE };
    VkPhysicalDeviceVulkan12Features f12 = { .sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_VULKAN_1_2_FEATURES,
                                             .pNext = &f11, .shaderFloat16 = VK_TRUE, .vulkanMemoryModel = VK_TRUE };
    uint32_t nq = 0;
    vkGetPhysicalDeviceQueueFamilyProperties(pd, &nq, NULL);
    VkQueueFamilyProperties qf[16];
    nq = nq < 16 ? nq : 16;
    vkGetPhysicalDeviceQueueFamilyProperties(pd, &nq, qf);
    uint32_t family = 0;
    while (family < nq && !(qf[family].queueFlags & VK_QUEUE_COMPUTE_BIT))
        family++;
    const float prio = 1.0f;
    VkDeviceQueueCreateInfo qi = { .sType = VK_STRUCTURE_TYPE_DEVICE_QUEUE_CREATE_INFO, .queueFamilyIndex = family,
                                   .queueCount = 1, .pQueuePriorities = &prio };
    const char *exts[] = { VK_NV_COOPERATIVE_MATRIX_EXTENSION_NAME };
    VkDeviceCreateInfo di = { .sType = VK_STRUCTURE_TYPE_DEVICE_CREATE_INFO, .pNext = &f12, .queueCreateInfoCount = 1,
                              .pQueueCreateInfos = &qi, .enabledExtensionCount = 1, .ppEnabledExtensionNames = exts };
    VkDevice dev;
    CHECK(vkCreateDevice(pd, &di, NULL, &dev));
    VkQueue queue;
    vkGetDeviceQueue(dev, family, 0, &queue);

    struct buf ba, bc, bo;
    if (make_buf(pd, dev, 256 * 2, &ba) || make_buf(pd, dev, 256 * 4, &bc) || make_buf(pd, dev, 1026 * 4, &bo))
        return 1;
    for (unsigned i = 0; i < 256; i++) {
        ((uint16_t *)ba.map)[i] = half_of(i);
        ((float *)bc.map)[i] = (float)i;
    }
    for (unsigned i = 0; i < 1026; i++)
        ((float *)bo.map)[i] = -1.0f;

    FILE *f = fopen(spv_path, "rb");
    if (!f) {
        fprintf(stderr, "cannot open %s\n", spv_path);
        return 1;
    }
    uint32_t code[16384];
    const size_t code_size = fread(code, 1, sizeof code, f);
    fclose(f);
    VkShaderModuleCreateInfo si = { .sType = VK_STRUCTURE_TYPE_SHADER_MODULE_CREATE_INFO, .codeSize = code_size,
                                    .pCode = code };
    VkShaderModule sm;
    CHECK(vkCreateShaderModule(dev, &si, NULL, &sm));
    VkDescriptorSetLayoutBinding bind[3];
    for (uint32_t i = 0; i < 3; i++)
        bind[i] = (VkDescriptorSetLayoutBinding){ .binding = i, .descriptorType = VK_DESCRIPTOR_TYPE_STORAGE_BUFFER,
                                                  .descriptorCount = 1, .stageFlags = VK_SHADER_STAGE_COMPUTE_BIT };
    VkDescriptorSetLayoutCreateInfo li = { .sType = VK_STRUCTURE_TYPE_DESCRIPTOR_SET_LAYOUT_CREATE_INFO,
                                           .bindingCount = 3, .pBindings = bind };
    VkDescriptorSetLayout dsl;
    CHECK(vkCreateDescriptorSetLayout(dev, &li, NULL, &dsl));
    VkPipelineLayoutCreateInfo pli = { .sType = VK_STRUCTURE_TYPE_PIPELINE_LAYOUT_CREATE_INFO, .setLayoutCount = 1,
                                       .pSetLayouts = &dsl };
    VkPipelineLayout pl;
    CHECK(vkCreatePipelineLayout(dev, &pli, NULL, &pl));
    VkComputePipelineCreateInfo ci = {
        .sType = VK_STRUCTURE_TYPE_COMPUTE_PIPELINE_CREATE_INFO,
        .stage = { .sType = VK_STRUCTURE_TYPE_PIPELINE_SHADER_STAGE_CREATE_INFO, .stage = VK_SHADER_STAGE_COMPUTE_BIT,
                   .module = sm, .pName = "main" },
        .layout = pl,
    };
    VkPipeline pipe;
    CHECK(vkCreateComputePipelines(dev, VK_NULL_HANDLE, 1, &ci, NULL, &pipe));
    VkDescriptorPoolSize ps = { VK_DESCRIPTOR_TYPE_STORAGE_BUFFER, 3 };
    VkDescriptorPoolCreateInfo dpi = { .sType = VK_STRUCTURE_TYPE_DESCRIPTOR_POOL_CREATE_INFO, .maxSets = 1,
                                       .poolSizeCount = 1, .pPoolSizes = &ps };
    VkDescriptorPool dp;
    CHECK(vkCreateDescriptorPool(dev, &dpi, NULL, &dp));
    VkDescriptorSetAllocateInfo dai = { .sType = VK_STRUCTURE_TYPE_DESCRIPTOR_SET_ALLOCATE_INFO, .descriptorPool = dp,
                                        .descriptorSetCount = 1, .pSetLayouts = &dsl };
    VkDescriptorSet ds;
    CHECK(vkAllocateDescriptorSets(dev, &dai, &ds));
    VkDescriptorBufferInfo dbi[3] = { { ba.b, 0, VK_WHOLE_SIZE }, { bc.b, 0, VK_WHOLE_SIZE }, { bo.b, 0, VK_WHOLE_SIZE } };
    VkWriteDescriptorSet w[3];
    for (uint32_t i = 0; i < 3; i++)
        w[i] = (VkWriteDescriptorSet){ .sType = VK_STRUCTURE_TYPE_WRITE_DESCRIPTOR_SET, .dstSet = ds, .dstBinding = i,
                                       .descriptorCount = 1, .descriptorType = VK_DESCRIPTOR_TYPE_STORAGE_BUFFER,
                                       .pBufferInfo = &dbi[i] };
    vkUpdateDescriptorSets(dev, 3, w, 0, NULL);
    VkCommandPoolCreateInfo cpi = { .sType = VK_STRUCTURE_TYPE_COMMAND_POOL_CREATE_INFO, .queueFamilyIndex = family };
    VkCommandPool cp;
    CHECK(vkCreateCommandPool(dev, &cpi, NULL, &cp));
    VkCommandBufferAllocateInfo cai = { .sType = VK_STRUCTURE_TYPE_COMMAND_BUFFER_ALLOCATE_INFO, .commandPool = cp,
                                        .level = VK_COMMAND_BUFFER_LEVEL_PRIMARY, .commandBufferCount = 1 };
    VkCommandBuffer cb;
    CHECK(vkAllocateCommandBuffers(dev, &cai, &cb));
    VkCommandBufferBeginInfo bbi = { .sType = VK_STRUCTURE_TYPE_COMMAND_BUFFER_BEGIN_INFO };
    CHECK(vkBeginCommandBuffer(cb, &bbi));
    vkCmdBindPipeline(cb, VK_PIPELINE_BIND_POINT_COMPUTE, pipe);
    vkCmdBindDescriptorSets(cb, VK_PIPELINE_BIND_POINT_COMPUTE, pl, 0, 1, &ds, 0, NULL);
    vkCmdDispatch(cb, 1, 1, 1);
    CHECK(vkEndCommandBuffer(cb));
    VkSubmitInfo sub = { .sType = VK_STRUCTURE_TYPE_SUBMIT_INFO, .commandBufferCount = 1, .pCommandBuffers = &cb };
    CHECK(vkQueueSubmit(queue, 1, &sub, VK_NULL_HANDLE));
    CHECK(vkQueueWaitIdle(queue));

    const float *o = bo.map;
    const int na = (int)o[1024], nc = (int)o[1025];
    printf("elements an invocation: A %d, C %d\n", na, nc);
    int a_mma = na == 8, c_mma = nc == 8;
    for (int lane = 0; lane < 32; lane++) {
        const int g = lane >> 2, t = lane & 3;
        printf("lane %2d A:", lane);
        for (int i = 0; i < na && i < 16; i++) {
            const int v = (int)o[lane * 16 + i], r = v / 16, c = v % 16;
            printf(" (%d,%d)", r, c);
            /* mma.m16n8k16 A: pairs (g, 2t..2t+1), (g+8, 2t..), (g, 2t+8..), (g+8, 2t+8..) */
            const int want_r = g + 8 * ((i >> 1) & 1), want_c = 2 * t + (i & 1) + 8 * (i >> 2);
            a_mma &= r == want_r && c == want_c;
        }
        printf("\n        C:");
        for (int i = 0; i < nc && i < 16; i++) {
            const int v = (int)o[512 + lane * 16 + i], r = v / 16, c = v % 16;
            printf(" (%d,%d)", r, c);
            /* two m16n8 accumulators side by side: (g, 2t..2t+1), (g+8, 2t..) for
             * columns 0-7, then the same for columns 8-15 */
            const int want_r = g + 8 * ((i >> 1) & 1), want_c = 2 * t + (i & 1) + 8 * (i >> 2);
            c_mma &= r == want_r && c == want_c;
        }
        printf("\n");
    }
    printf("RESULT: A %s the mma.m16n8k16 layout; C %s two m16n8 accumulators side by side\n",
           a_mma ? "is" : "is not", c_mma ? "is" : "is not");
    vkDestroyDevice(dev, NULL);
    vkDestroyInstance(inst, NULL);
    return 0;
}
