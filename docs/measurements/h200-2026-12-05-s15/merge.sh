#!/bin/bash
# SPDX-License-Identifier: MIT
# Session 15's fourth run: decode.comp's merge (partials.glsl, merge_unit)
# in one pass over the chunks' records and partials, the sums rescaled when
# a group of chunks raises the max, instead of a pass over the records (M,
# the sum of weights), a barrier, then the partials. The plugin before the
# change is in .dev-old/ (carried beside build/); alternating rounds.
#   log.txt          the GPU, each step's start
#   conformance.txt  test_vulkan_ops, test_backends vulkan of the new build
#   ab.txt           old / new: turbo3, turbo3o, turbo4 at 4K/16K/128K, 1
#                    token; turbo3 at 4K with 4 tokens and 8 sequences
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
POINTS=ab.txt CLOCK_LINES=0
source docs/measurements/h200-2026-12-05-s11/kvb-points.sh
OLD=TURBO_PLUGIN_PATH=$R/.dev-old:$B/plugins/cpu
NEW=TURBO_PLUGIN_PATH=$B/plugins/vulkan:$B/plugins/cpu
KVB_WARM_MS=2000 timeout 60 ./kvb vulkan turbo3 16K 1x1 0 2 > /dev/null 2>&1
step ab
for r in 1 2 3; do
    for env in "$OLD" "$NEW"; do
        point "$env" -- turbo3,turbo3o,turbo4 4K,16K,128K 1x1 0 8
        point "$env" -- turbo3 4K 4x1,1x8 0 8
    done
done
step conformance
for t in "plugins/vulkan/test_vulkan_ops $B/plugins/vulkan/turbokv-vulkan.so" "tests/test_backends vulkan"; do
    echo "== $t" >> "$O/conformance.txt"
    s=$(date +%s)
    timeout 200 $B/$t > "$O/tmp.txt" 2>&1
    echo "rc $? in $(($(date +%s) - s)) s" >> "$O/conformance.txt"
    grep -E "vs cpu|PASSED|FAILED|ERROR|differ" "$O/tmp.txt" | head -20 >> "$O/conformance.txt"
done
kill $smi
rm -f "$O/tmp.txt"
step done
