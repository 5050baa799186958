#!/bin/bash
# SPDX-License-Identifier: MIT
# Session 16's fourth run: outlier-split keys' outliers scored before the
# turbo part of the row (.dev-k/) against after it (this tree, commit
# 2a82f37), turbo3o with random rows and with fixed outlier channels,
# alternating, two rounds; and `turbokv bench --per-token` of this tree for
# turbo3 and turbo3o (auto's type at head_dim 64-128).
#   log.txt        the GPU, each step's start
#   regs.txt       the decode pipelines' statistics per plugin
#   ab.txt         the A/B points
#   per-token.txt  turbokv bench --per-token --ctx 4K,128K --types turbo3,turbo3o
#   clocks.txt     SM / memory clock and power every 100 ms
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
NOW=TURBO_PLUGIN_PATH=$B/plugins/vulkan:$B/plugins/cpu
KF=TURBO_PLUGIN_PATH=$R/.dev-k:$B/plugins/cpu
step regs
for env in "$NOW" "$KF"; do
    echo "== $env" >> "$O/regs.txt"
    env $env TURBO_VK_PROFILE=1 timeout 60 ./kvb vulkan turbo3o,turbo3 16K 1x1 0 2 2>&1 |
        grep "vkprof: pipeline attention" | sed 's/.*: decode pipeline (spec \([^)]*\)): /\1 | /' | cut -c1-300 >> "$O/regs.txt"
done
KVB_WARM_MS=2000 timeout 60 ./kvb vulkan turbo3 16K 1x1 0 2 > /dev/null 2>&1
step ab
for r in 1 2; do
    for env in "$NOW" "$KF"; do
        point $env -- turbo3o 4K,16K,128K 1x1 0 4
        point $env KVB_OUTLIER_CHANNELS=1 -- turbo3o 4K,16K,128K 1x1 0 4
    done
done
step per-token
TURBO_PLUGIN_PATH=$B/plugins/cpu:$B/plugins/vulkan timeout 150 $B/tools/turbokv bench \
    --per-token --backend vulkan --ctx 4K,128K --types turbo3,turbo3o --layers 32 --warm-ms 300 > "$O/per-token.txt" 2>&1
kill $smi
rm -f "$O/tmp.txt"
step done
