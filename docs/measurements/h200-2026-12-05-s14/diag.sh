#!/bin/bash
# SPDX-License-Identifier: MIT
# Session 14's second run: why run.sh's turbo3o at 4K/16K (174 / 303 us)
# and turbo3 with 4 query tokens at 128K (1728 us) were 3-4x the figures
# of session 13's H100 run 2 with the same shaders. All in diag.txt: the
# SM clock sampled every 100 ms, the calls' shapes and the pipelines'
# registers (TURBO_VK_PROFILE=1), the same points with the former
# workgroup rule (TURBO_VK_WORKGROUPS=1024), and test_backends vulkan timed
# (run.sh's 120 s limit cut it).
set -u
R=$PWD
B=$R/build
O=${OUT:-/tmp/out}
mkdir -p "$O"
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader > "$O/diag.txt" 2>&1
nvidia-smi --query-gpu=timestamp,clocks.sm,power.draw --format=csv,noheader -lms 100 > "$O/clocks.txt" 2>&1 &
smi=$!
POINTS=diag.txt CLOCK_LINES=0
source docs/measurements/h200-2026-12-05-s11/kvb-points.sh
mark() { echo "== $(date +%T.%N | cut -c1-12) $*" >> "$O/diag.txt"; }
prof() {
    mark "TURBO_VK_PROFILE=1 $*"
    env TURBO_VK_PROFILE=1 "$@" > "$O/tmp.txt" 2>&1
    grep "vkprof: pipeline attention" "$O/tmp.txt" | cut -c1-400 >> "$O/diag.txt"
    grep "vkprof: attention n_out" "$O/tmp.txt" | sed 's/: up.*//' | uniq -c >> "$O/diag.txt"
    grep "^attn" "$O/tmp.txt" >> "$O/diag.txt"
}
for r in 1 2; do
    mark round $r
    point KVB=now -- turbo3o,turbo3 4K,16K,64K 1x1 0 8
    point TURBO_VK_WORKGROUPS=1024 -- turbo3o,turbo3 4K,16K,64K 1x1 0 8
    point KVB=now -- turbo3 16K,128K 4x1 0 4
    point TURBO_VK_WORKGROUPS=1024 -- turbo3 16K,128K 4x1 0 4
done
prof timeout 60 ./kvb vulkan turbo3o 4K,16K 1x1 0 2
prof timeout 60 ./kvb vulkan turbo3 128K 4x1 0 2
mark test_backends vulkan
s=$(date +%s)
TURBO_PLUGIN_PATH=$B/plugins/cpu:$B/plugins/vulkan timeout 300 $B/tests/test_backends vulkan > "$O/tmp.txt" 2>&1
echo "rc $? in $(($(date +%s) - s)) s" >> "$O/diag.txt"
grep -E "vs cpu|PASSED|FAILED|ERROR|OK \]" "$O/tmp.txt" | head -40 >> "$O/diag.txt"
mark test_vulkan_ops
TURBO_PLUGIN_PATH=$B/plugins/cpu:$B/plugins/vulkan timeout 100 $B/plugins/vulkan/test_vulkan_ops > "$O/tmp.txt" 2>&1
echo "rc $?" >> "$O/diag.txt"
grep -E "PASSED|FAILED|ERROR" "$O/tmp.txt" | head >> "$O/diag.txt"
kill $smi
rm -f "$O/tmp.txt"
