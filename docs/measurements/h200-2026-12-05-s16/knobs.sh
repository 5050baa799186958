#!/bin/bash
# SPDX-License-Identifier: MIT
# Session 16's first run: what decode.comp's register count comes from.
# Two specialization constants set by measurement knobs: the V rows its
# value loop takes together (TURBO_VK_DECODE_VROWS, default 4) and the
# chunks its merge loads together (TURBO_VK_MERGE_ILP, default 16; 8 for
# outlier-split values). Each variant's pipeline statistics (registers,
# local memory) and device time, alternating rounds in one run.
#   log.txt          the GPU, each step's start
#   conformance.txt  test_vulkan_ops' attention tests, default and two variants
#   knobs.txt        turbo3o / turbo3 / turbo4 at 4K / 16K / 128K per variant
#   regs.txt         the decode pipelines' statistics per variant
#   clocks.txt       SM / memory clock and power every 100 ms
set -u
R=$PWD
B=$R/build
O=${OUT:-/tmp/out}
mkdir -p "$O"
t0=$(date +%s)
step() { echo "[$(($(date +%s) - t0)) s] $*" >> "$O/log.txt"; }
nvidia-smi --query-gpu=name,driver_version,clocks.max.sm --format=csv,noheader >> "$O/log.txt" 2>&1
nvidia-smi --query-gpu=timestamp,clocks.sm,clocks.mem,power.draw --format=csv,noheader -lms 100 > "$O/clocks.txt" 2>&1 &
smi=$!
POINTS=knobs.txt CLOCK_LINES=0
source docs/measurements/h200-2026-12-05-s11/kvb-points.sh
export TURBO_PLUGIN_PATH=$B/plugins/vulkan:$B/plugins/cpu
VARIANTS=("TURBO_VK_DECODE_VROWS=4" "TURBO_VK_DECODE_VROWS=2" "TURBO_VK_DECODE_VROWS=1" "TURBO_VK_MERGE_ILP=4"
          "TURBO_VK_MERGE_ILP=2" "TURBO_VK_DECODE_VROWS=2 TURBO_VK_MERGE_ILP=4" "TURBO_VK_DECODE_VROWS=1 TURBO_VK_MERGE_ILP=2")
step conformance
for env in "TURBO_VK_DECODE_VROWS=4" "TURBO_VK_DECODE_VROWS=1 TURBO_VK_MERGE_ILP=2" "TURBO_VK_DECODE_VROWS=2 TURBO_VK_MERGE_ILP=4"; do
    echo "== $env" >> "$O/conformance.txt"
    env $env timeout 120 $B/plugins/vulkan/test_vulkan_ops $B/plugins/vulkan/turbokv-vulkan.so "*attention*" > "$O/tmp.txt" 2>&1
    echo "rc $?" >> "$O/conformance.txt"
    grep -E "PASSED|FAILED|ERROR" "$O/tmp.txt" | head -8 >> "$O/conformance.txt"
done
step regs
for env in "${VARIANTS[@]}"; do
    echo "== $env" >> "$O/regs.txt"
    env $env TURBO_VK_PROFILE=1 timeout 60 ./kvb vulkan turbo3o,turbo3,turbo4 16K 1x1 0 2 2>&1 |
        grep "vkprof: pipeline attention" | sed 's/.*: decode pipeline (spec \([^)]*\)): /\1 | /' | cut -c1-300 >> "$O/regs.txt"
done
KVB_WARM_MS=2000 timeout 60 ./kvb vulkan turbo3 16K 1x1 0 2 > /dev/null 2>&1
step knobs
for r in 1 2; do
    for env in "${VARIANTS[@]}"; do
        point $env -- turbo3o,turbo3,turbo4 4K,16K,128K 1x1 0 4
    done
done
kill $smi
rm -f "$O/tmp.txt"
step done
