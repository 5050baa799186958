#!/bin/bash
# SPDX-License-Identifier: MIT
# Session 13's second H200 run: decode.comp dispatching one wave of the
# workgroups an SM holds (its register count, VK_NV_shader_sm_builtins'
# SM count) with the prescaled V weights (this tree) against the plugin
# before both (base-vulkan/, session 12's). In order:
#   ab.txt           base / new ABAB, 1 token: turbo2/3/4, turbo3o, q8_0, f16
#                    at 4K/16K/128K; 4 tokens and 8 sequences at 16K/128K
#   profile.txt      TURBO_VK_PROFILE=1 of new: SMs, registers, workgroups
#   conformance.txt  test_vulkan_ops, test_backends vulkan, test_host_vulkan,
#                    test_backends opencl (generic program)
#   wide.txt         decode_wide.comp (f16, q8_0) at TURBO_VK_WORKGROUPS 1024
#                    (256 workgroups), 2640 (660: 5 an SM at 96 registers), 4096
#   sdpa.txt         PyTorch SDPA f16 in the same run
#   per-token.txt    `turbokv bench --per-token` on vulkan (the host's device:
#                    no register count there, the former rule)
# From a copy of the tree (build/, base-vulkan/ present) after
# `. .gpurt/enter.sh`; output under $OUT. About 5 minutes.
set -u
R=$PWD
B=$R/build
O=${OUT:-/tmp/out}
mkdir -p "$O"
t0=$(date +%s)
step() { echo "[$(($(date +%s) - t0)) s] $*" >> "$O/log.txt"; }
nvidia-smi --query-gpu=name,driver_version,clocks.max.sm --format=csv,noheader > "$O/gpu.txt" 2>&1
POINTS=ab.txt CLOCK_LINES=0
source docs/measurements/h200-2026-12-05-s11/kvb-points.sh
BASE=TURBO_PLUGIN_PATH=$B/plugins/cpu:$R/base-vulkan
step ab
for round in 1 2; do
    point $BASE -- turbo3,turbo4,turbo2,turbo3o,q8_0,f16 4K,16K,128K 1x1 0 8
    point KVB_BUILD=new -- turbo3,turbo4,turbo2,turbo3o,q8_0,f16 4K,16K,128K 1x1 0 8
done
point $BASE -- turbo3,turbo4 16K,128K 4x1,1x8 0 4
point KVB_BUILD=new -- turbo3,turbo4 16K,128K 4x1,1x8 0 4
step profile
TURBO_VK_PROFILE=1 timeout 60 ./kvb vulkan turbo3,turbo4,turbo2 128K 1x1 0 2 > "$O/tmp.txt" 2>&1
grep -v "buffer\|vkprof: heap\|vkprof: type\|vkprof: attention n_out" "$O/tmp.txt" > "$O/profile.txt"
# the calls' shapes (units, chunk, chunks, workgroups) and how many calls had each
grep "vkprof: attention n_out" "$O/tmp.txt" | sed 's/: up.*//' | uniq -c >> "$O/profile.txt"
step conformance
export TURBO_PLUGIN_PATH=$B/plugins/cpu:$B/plugins/vulkan:$B/plugins/opencl
for t in "../plugins/vulkan/test_vulkan_ops $B/plugins/vulkan/turbokv-vulkan.so" "test_backends vulkan" \
    "test_host_vulkan" "test_backends opencl"; do
    echo "== $t" >> "$O/conformance.txt"
    TURBO_OCL_SPECIALIZE=0 timeout 240 $B/tests/$t > "$O/tmp.txt" 2>&1
    echo "rc $?" >> "$O/conformance.txt"
    grep -E "vs cpu|PASSED|FAILED|ERROR" "$O/tmp.txt" | head -20 >> "$O/conformance.txt"
done
step wide
POINTS=wide.txt
for w in 1024 2640 4096; do
    point TURBO_VK_WORKGROUPS=$w -- f16,q8_0 16K,128K 1x1 0 8
done
step sdpa
python3 scripts/sdpa-baseline.py --ctx 4096,16384,131072 > "$O/sdpa.txt" 2>&1
step per-token
timeout 150 $B/tools/turbokv bench --backend vulkan --per-token --ctx 4K,128K --layers 32 --warm-ms 300 \
    --types turbo3 2>&1 | grep -v "^bench:" >> "$O/per-token.txt"
rm -f "$O/tmp.txt"
step done
