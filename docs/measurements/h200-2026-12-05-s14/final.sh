#!/bin/bash
# SPDX-License-Identifier: MIT
# Session 14's last run: the tree with units of at most 4 query rows for
# 4-bit turbo keys (attention.c, decode_qt_max), against the former 8
# (TURBO_VK_DECODE_QT=8) in the same run; the host's device sized by
# registers (TKV_HOST_VULKAN_STATISTICS); conformance on NVIDIA.
#   final.txt      conformance (test_vulkan_ops, test_backends vulkan,
#                  test_host_vulkan), then the A/B (ABAB, 4 query tokens)
#   per-token.txt  `turbokv bench --per-token` on vulkan, turbo3, the host's
#                  device with the statistics flag (one wave) against the
#                  former rule (TURBO_VK_WORKGROUPS=1024), ABAB
#   clocks.txt     SM / memory clock and power every 100 ms
set -u
R=$PWD
B=$R/build
O=${OUT:-/tmp/out}
mkdir -p "$O"
nvidia-smi --query-gpu=timestamp,clocks.sm,clocks.mem,power.draw --format=csv,noheader -lms 100 > "$O/clocks.txt" 2>&1 &
smi=$!
POINTS=final.txt CLOCK_LINES=0
source docs/measurements/h200-2026-12-05-s11/kvb-points.sh
mark() { echo "== $(date +%T.%N | cut -c1-12) $*" >> "$O/final.txt"; }
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader >> "$O/final.txt" 2>&1
export TURBO_PLUGIN_PATH=$B/plugins/cpu:$B/plugins/vulkan
for t in "plugins/vulkan/test_vulkan_ops $B/plugins/vulkan/turbokv-vulkan.so" "tests/test_backends vulkan" \
         "tests/test_host_vulkan"; do
    mark "$t"
    s=$(date +%s)
    timeout 200 $B/$t > "$O/tmp.txt" 2>&1
    echo "rc $? in $(($(date +%s) - s)) s" >> "$O/final.txt"
    grep -E "vs cpu|PASSED|FAILED|ERROR" "$O/tmp.txt" | head -20 >> "$O/final.txt"
done
KVB_WARM_MS=2000 timeout 60 ./kvb vulkan turbo3 16K 1x1 0 2 > /dev/null 2>&1
for r in 1 2; do
    mark round $r
    point KVB=new -- turbo4,turbo3 4K,16K,128K 4x1 0 4
    point TURBO_VK_DECODE_QT=8 -- turbo4,turbo3 4K,16K,128K 4x1 0 4
done
# the host's device with TKV_HOST_VULKAN_STATISTICS (the bench enables the
# extension): the one-wave rule, against the former (TURBO_VK_WORKGROUPS=1024)
for r in 1 2; do
    for env in KVB=new TURBO_VK_WORKGROUPS=1024; do
        echo "== round $r $env" >> "$O/per-token.txt"
        env $env timeout 60 $B/tools/turbokv bench --per-token --backend vulkan --ctx 4K,128K --types turbo3 \
            --layers 32 --warm-ms 300 2>&1 | grep -v "^bench:" >> "$O/per-token.txt"
    done
done
mark "TURBO_VK_PROFILE=1 per-token, host's device"
TURBO_VK_PROFILE=1 timeout 60 $B/tools/turbokv bench --per-token --backend vulkan --ctx 128K --types turbo3 \
    --layers 2 > "$O/tmp.txt" 2>&1
grep "vkprof: pipeline attention" "$O/tmp.txt" | sed 's/.*(spec/(spec/' | cut -c1-300 >> "$O/final.txt"
grep "vkprof: attention n_out" "$O/tmp.txt" | sed 's/: up.*//' | sort | uniq -c >> "$O/final.txt"
kill $smi
rm -f "$O/tmp.txt"
