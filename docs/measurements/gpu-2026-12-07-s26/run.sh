#!/bin/bash
# SPDX-License-Identifier: MIT
# Session 26 on an H200: main's tree (the OpenCL plugin's fused decode
# step, f756a6d; the Vulkan tables' address, 617dc9e). Outputs straight
# into $OUT, so a run cut short returns what it did. Step 5 runs first (it
# checks code on main), then 1-4:
# 1. the OpenCL per-token mode (its "fused us" column: the step as
#    one launch, tkv_cache_append_attention), kernel device time too;
# 2. the per-token step under clprof.so (../gpu-2026-12-07-s25/clprof.c:
#    each kernel's launches apart by global size), turbo3o at 4K;
# 3. the Vulkan per-token mode (the step recorded into the host's command
#    buffer), as README's session 11 figures;
# 4. the 1-token attention of both plugins;
# 5. the Vulkan plugin's attention with the tables' address read from the
#    inputs (TURBO_VK_MATH=inputs, lavapipe's default) against the
#    specialization constant (a GPU's default): attention_agrees in both,
#    and the 1-token bench again with inputs.
set -u
R=$PWD
O=${OUT:-/tmp/out}
export TKV_DEFAULT_CONFIG=$R/etc/turbokv.yaml TKV_MODELS_DIR=$R/models
export TURBO_PLUGIN_PATH=$R/build/plugins/cpu:$R/build/plugins/opencl:$R/build/plugins/vulkan
nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv,noheader > "$O/device.txt" 2>&1
T=attention_agrees,paged_and_options_agree
for m in spec inputs; do
  (echo "== TURBO_VK_MATH=$m TKV_TESTS=$T test_backends vulkan"
   TURBO_VK_MATH=$m TKV_TESTS=$T timeout 150 build/tests/test_backends vulkan; echo "rc $? at ${SECONDS} s") >> "$O/conformance-vulkan.txt" 2>&1
done
grep -E "^==|^\[ *(OK|FAILED|PASSED) |rc " "$O/conformance-vulkan.txt"
B="turbokv bench --backend vulkan --types turbo3,turbo3o --ctx 4K,16K,128K --tokens 1 --seqs 1"
(echo "== TURBO_VK_MATH=inputs $B"; TURBO_VK_MATH=inputs timeout 100 build/tools/$B; echo "rc $? at ${SECONDS} s") > "$O/bench-vulkan-inputs.txt" 2>&1
grep -A4 "^device time" "$O/bench-vulkan-inputs.txt"; grep "rc " "$O/bench-vulkan-inputs.txt"
P="turbokv bench --backend opencl --per-token --types turbo3,turbo3o --ctx 4K,128K --layers 32 --warm-ms 300"
for i in 1; do
  (echo "== TURBO_OCL_KERNEL_NS=1 $P"
   TURBO_OCL_KERNEL_NS=1 timeout 80 build/tools/$P; echo "rc $? at ${SECONDS} s") >> "$O/per-token.txt" 2>&1
done
grep "^==\|^turbo\|rc " "$O/per-token.txt"
(echo "== LD_PRELOAD=clprof.so turbokv bench --backend opencl --per-token --types turbo3o,turbo3 --ctx 4K --layers 32"
 LD_PRELOAD=$R/build/muts/clprof.so timeout 120 build/tools/turbokv bench --backend opencl --per-token --types turbo3o,turbo3 --ctx 4K --layers 32; echo "rc $? at ${SECONDS} s") > "$O/prof.txt" 2>&1
grep "^==\|^turbo3\|clprof\|rc " "$O/prof.txt" | head -40
V="turbokv bench --backend vulkan --per-token --types turbo3 --ctx 4K,128K --layers 32 --warm-ms 300"
(echo "== $V"; timeout 120 build/tools/$V; echo "rc $? at ${SECONDS} s") > "$O/per-token-vulkan.txt" 2>&1
grep "^==\|^turbo\|rc " "$O/per-token-vulkan.txt"
for b in opencl vulkan; do
  B="turbokv bench --backend $b --types turbo3,turbo3o --ctx 4K,16K,128K --tokens 1 --seqs 1"
  (echo "== TURBO_OCL_KERNEL_NS=1 TURBO_OCL_REPEAT=20 $B"
   TURBO_OCL_KERNEL_NS=1 TURBO_OCL_REPEAT=20 timeout 100 build/tools/$B; echo "rc $? at ${SECONDS} s") > "$O/bench-$b.txt" 2>&1
  grep -A4 "^device time" "$O/bench-$b.txt"; grep "rc " "$O/bench-$b.txt"
done
cat "$O/device.txt"
