#!/bin/bash
# SPDX-License-Identifier: MIT
# Session 31, run 3: decode.comp's outlier-split values summed in shared
# memory (ou) instead of registers (acco), on NVIDIA:
# 1. the Vulkan conformance with it (test_backends vulkan, test_host_vulkan
#    with its fused turbo3o step), and the variant that adds two rows a
#    step (.tc-variants/vk-pairs) on the outlier-split tests;
# 2. the compiler's registers of each (TURBO_VK_PROFILE=1, 4K);
# 3. turbo3o (turbo3 as control) 1 and 4 query tokens, this tree against
#    main's plugin (.tc-variants/vk-main, 157c139) and vk-pairs, alternating,
#    two rounds; then the per-token step of this tree.
# Outputs straight into $OUT, so a run cut short returns what it did.
set -u
R=$PWD
O=${OUT:-/tmp/out}
mkdir -p "$O"
export TKV_DEFAULT_CONFIG=$R/etc/turbokv.yaml TKV_MODELS_DIR=$R/models
P=$R/build/plugins
nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv,noheader > "$O/device.txt" 2>&1
F=$O/check.txt
T=same_bytes_every_format,attention_agrees,split_attention_rotations,paged_and_options_agree,sparse_v_counts,small_values_agree
(echo "== test_backends vulkan $T"
 TURBO_PLUGIN_PATH=$P/cpu:$P/vulkan TKV_TESTS=$T timeout 200 build/tests/test_backends vulkan
 echo "rc $? at ${SECONDS} s"
 echo "== test_host_vulkan"
 TURBO_PLUGIN_PATH=$P/cpu:$P/vulkan timeout 100 build/tests/test_host_vulkan
 echo "rc $? at ${SECONDS} s"
 echo "== vk-pairs: split_attention_rotations,small_values_agree"
 TURBO_PLUGIN_PATH=$P/cpu:$R/.tc-variants/vk-pairs TKV_TESTS=split_attention_rotations,small_values_agree timeout 100 build/tests/test_backends vulkan
 echo "rc $? at ${SECONDS} s") > "$F" 2>&1
grep -E "^==|^rc |OK|PASSED|FAILED|differ|worst" "$F"
for v in build/plugins/vulkan .tc-variants/vk-main; do
  (echo "== $v"; TURBO_PLUGIN_PATH=$P/cpu:$R/$v TURBO_VK_PROFILE=1 timeout 60 build/tools/turbokv bench --backend vulkan \
     --types turbo3o --ctx 4K --tokens 1 --seqs 1 2>&1 | grep -E "vkprof: pipeline" | sort | uniq | head -20) >> "$O/regs.txt"
done
cat "$O/regs.txt" | cut -c1-200
B="build/tools/turbokv bench --backend vulkan --types turbo3o,turbo3 --ctx 4K,16K,128K --seqs 1 --warm-ms 300"
for r in 1 2; do
  for v in build/plugins/vulkan .tc-variants/vk-main .tc-variants/vk-pairs; do
    for t in 1 4; do
      echo "== $v r$r tokens $t at ${SECONDS} s" >> "$O/bench.txt"
      TURBO_PLUGIN_PATH=$P/cpu:$R/$v timeout 60 $B --tokens $t 2>&1 | grep -A3 "^device time" | grep -E "^turbo" >> "$O/bench.txt"
    done
  done
done
cat "$O/bench.txt"
(echo "== per-token"; TURBO_PLUGIN_PATH=$P/cpu:$P/vulkan timeout $((590 - SECONDS)) build/tools/turbokv bench --backend vulkan --per-token \
   --types turbo3o --ctx 4K,128K --layers 32 --warm-ms 300; echo "rc $? at ${SECONDS} s") > "$O/per-token.txt" 2>&1
grep -E "^==|^turbo|^rc " "$O/per-token.txt"
cat "$O/device.txt"
