#!/bin/bash
# SPDX-License-Identifier: MIT
# Session 15's H200 run of this tree (sessions 13-14's one-wave rule,
# 4-row units for 4-bit turbo keys, the host device's statistics flag had
# only run on H100s): conformance, the README's table with PyTorch SDPA f16
# in the same run, per-token.
#   log.txt          the GPU, each step's start
#   conformance.txt  test_vulkan_ops, test_backends vulkan, test_host_vulkan
#   table.txt        1 token: turbo3/2/4, turbo3o, q8_0, f16 at 4K-128K;
#                    turbo3 and turbo4 with 4 tokens and 8 sequences
#   sdpa.json        PyTorch SDPA f16, eager and CUDA graph, same run
#   per-token.txt    `turbokv bench --per-token` on vulkan, turbo3
#   clocks.txt       SM / memory clock and power every 100 ms
set -u
R=$PWD
B=$R/build
O=${OUT:-/tmp/out}
mkdir -p "$O"
t0=$(date +%s)
step() { echo "[$(($(date +%s) - t0)) s] $*" >> "$O/log.txt"; }
late() { [ $(($(date +%s) - t0)) -gt "$1" ] && { step "left out: $2"; return 0; }; return 1; }
nvidia-smi --query-gpu=name,driver_version,clocks.max.sm --format=csv,noheader >> "$O/log.txt" 2>&1
nvidia-smi --query-gpu=timestamp,clocks.sm,clocks.mem,power.draw --format=csv,noheader -lms 100 > "$O/clocks.txt" 2>&1 &
smi=$!
POINTS=table.txt CLOCK_LINES=0
source docs/measurements/h200-2026-12-05-s11/kvb-points.sh
step conformance
for t in "plugins/vulkan/test_vulkan_ops $B/plugins/vulkan/turbokv-vulkan.so" "tests/test_backends vulkan" \
         "tests/test_host_vulkan"; do
    echo "== $t" >> "$O/conformance.txt"
    s=$(date +%s)
    timeout 200 $B/$t > "$O/tmp.txt" 2>&1
    echo "rc $? in $(($(date +%s) - s)) s" >> "$O/conformance.txt"
    grep -E "vs cpu|PASSED|FAILED|ERROR|differ" "$O/tmp.txt" | head -20 >> "$O/conformance.txt"
done
KVB_WARM_MS=2000 timeout 60 ./kvb vulkan turbo3 16K 1x1 0 2 > /dev/null 2>&1
step table
point KVB_RUN=1 -- turbo3,turbo2,turbo4,turbo3o,q8_0,f16 4K,16K,64K,128K 1x1 0 8
point KVB_RUN=1 -- turbo3,turbo4 4K,16K,128K 4x1,1x8 0 4
step sdpa
late 420 sdpa || timeout 100 python3 scripts/sdpa-baseline.py --ctx 4096,16384,65536,131072 --json \
    > "$O/sdpa.json" 2> "$O/tmp.txt"
step turbo3 again
point KVB_RUN=2 -- turbo3,turbo2 4K,16K,64K,128K 1x1 0 8
step per-token
late 480 per-token || TURBO_PLUGIN_PATH=$B/plugins/cpu:$B/plugins/vulkan timeout 90 $B/tools/turbokv bench \
    --per-token --backend vulkan --ctx 4K,128K --types turbo3 --layers 32 --warm-ms 300 > "$O/per-token.txt" 2>&1
kill $smi
rm -f "$O/tmp.txt"
step done
