#!/bin/bash
# SPDX-License-Identifier: MIT
# Session 16's third run: decode.comp's outlier-split values walked by the
# lanes that own their coordinates, one row a step (.dev-m/, commit 97c8891)
# and two rows a step (this tree), against the plugin before both
# (.dev-old/, commit 2ee75b4); NVIDIA conformance of this tree.
#   log.txt          the GPU, each step's start
#   conformance.txt  test_vulkan_ops and test_backends vulkan, this tree's plugin
#   regs.txt         the decode pipelines' statistics per plugin
#   ab.txt           turbo3o at 4K / 16K / 128K with random rows and with fixed
#                    outlier channels (KVB_OUTLIER_CHANNELS=1), 4 tokens and 8
#                    sequences, turbo3; alternating, two rounds
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
M1=TURBO_PLUGIN_PATH=$R/.dev-m:$B/plugins/cpu
NEW=TURBO_PLUGIN_PATH=$B/plugins/vulkan:$B/plugins/cpu
step conformance
env $NEW timeout 150 $B/plugins/vulkan/test_vulkan_ops $B/plugins/vulkan/turbokv-vulkan.so > "$O/tmp.txt" 2>&1
echo "test_vulkan_ops rc $?" >> "$O/conformance.txt"
grep -E "PASSED|FAILED|ERROR" "$O/tmp.txt" | head -8 >> "$O/conformance.txt"
env $NEW timeout 200 $B/tests/test_backends vulkan > "$O/tmp.txt" 2>&1
echo "test_backends rc $?" >> "$O/conformance.txt"
grep -E "vs cpu|PASSED|FAILED|ERROR|differ" "$O/tmp.txt" | head -30 >> "$O/conformance.txt"
step regs
for env in "$OLD" "$M1" "$NEW"; do
    echo "== $env" >> "$O/regs.txt"
    env $env TURBO_VK_PROFILE=1 timeout 60 ./kvb vulkan turbo3o 16K 1x1 0 2 2>&1 |
        grep "vkprof: pipeline attention" | sed 's/.*: decode pipeline (spec \([^)]*\)): /\1 | /' | cut -c1-300 >> "$O/regs.txt"
done
KVB_WARM_MS=2000 timeout 60 ./kvb vulkan turbo3 16K 1x1 0 2 > /dev/null 2>&1
step ab
for r in 1 2; do
    for env in "$OLD" "$M1" "$NEW"; do
        point $env -- turbo3o 4K,16K,128K 1x1 0 4
        point $env KVB_OUTLIER_CHANNELS=1 -- turbo3o 4K,16K,128K 1x1 0 4
    done
    for env in "$OLD" "$NEW"; do
        point $env -- turbo3o 4K,128K 4x1,1x8 0 4
        point $env -- turbo3 4K,128K 1x1 0 4
    done
done
kill $smi
rm -f "$O/tmp.txt"
step done
