#!/bin/bash
# SPDX-License-Identifier: MIT
# Session 15's fifth run: merge.comp (the merge dispatch after
# decode_wide.comp and attention.comp: f16, q8_0 keys) in one pass per
# element over the chunks' records and partials, the sums rescaled when a
# group of chunks raises the max, instead of a pass for M, one for the
# weights and the sum (each with its barrier and reductions), then the
# partials. The plugin of the commit before (decode.comp's merge already in
# one pass) is in .dev-prev/ (carried beside build/); alternating rounds.
#   log.txt          the GPU, each step's start
#   conformance.txt  test_vulkan_ops, test_backends vulkan (the attention
#                    tests that reach merge.comp) of the new build
#   ab.txt           prev / new: f16, q8_0 at 4K/16K/128K, 1 token
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
PREV=TURBO_PLUGIN_PATH=$R/.dev-prev:$B/plugins/cpu
NEW=TURBO_PLUGIN_PATH=$B/plugins/vulkan:$B/plugins/cpu
KVB_WARM_MS=2000 timeout 60 ./kvb vulkan f16 16K 1x1 0 2 > /dev/null 2>&1
step ab
for r in 1 2; do
    for env in "$PREV" "$NEW"; do
        point "$env" -- f16,q8_0 4K,16K,128K 1x1 0 8
    done
done
step conformance
for t in "plugins/vulkan/test_vulkan_ops $B/plugins/vulkan/turbokv-vulkan.so" "tests/test_backends vulkan"; do
    echo "== $t" >> "$O/conformance.txt"
    s=$(date +%s)
    TKV_TESTS=attention_agrees,wide_rows_agree,sparse_v_counts timeout 150 $B/$t > "$O/tmp.txt" 2>&1
    echo "rc $? in $(($(date +%s) - s)) s" >> "$O/conformance.txt"
    grep -E "vs cpu|PASSED|FAILED|ERROR|differ" "$O/tmp.txt" | head -20 >> "$O/conformance.txt"
done
kill $smi
rm -f "$O/tmp.txt"
step done
