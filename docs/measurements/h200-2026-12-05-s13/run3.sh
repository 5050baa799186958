#!/bin/bash
# SPDX-License-Identifier: MIT
# Session 13's third run: one wave of resident workgroups for
# decode_wide.comp (f16, q8_0 keys) too, and the prescaled V weights, in
# this tree against the plugin before (base-vulkan/, session 12's):
#   ab.txt           base / new ABAB, 1 token, turbo2/3/4, q8_0, f16 at
#                    4K/16K/128K; then 4 tokens / 8 sequences at 16K/128K
#   profile.txt      the calls' shapes of new (TURBO_VK_PROFILE=1)
#   conformance.txt  test_backends vulkan, test_host_vulkan
#   sdpa.txt         PyTorch SDPA f16 in the same run
# From a copy of the tree (build/, base-vulkan/ present) after
# `. .gpurt/enter.sh`; output under $OUT. About 4 minutes.
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
    point $BASE -- turbo3,turbo2,turbo4,q8_0,f16 4K,16K,128K 1x1 0 8
    point KVB_BUILD=new -- turbo3,turbo2,turbo4,q8_0,f16 4K,16K,128K 1x1 0 8
done
point $BASE -- turbo3,f16 16K,128K 4x1,1x8 0 4
point KVB_BUILD=new -- turbo3,f16 16K,128K 4x1,1x8 0 4
step profile
TURBO_VK_PROFILE=1 timeout 60 ./kvb vulkan f16,q8_0,turbo3 16K,128K 1x1 0 2 > "$O/tmp.txt" 2>&1
grep "vkprof: pipeline attention\|^attn" "$O/tmp.txt" > "$O/profile.txt"
grep "vkprof: attention n_out" "$O/tmp.txt" | sed 's/: up.*//' | uniq -c >> "$O/profile.txt"
step conformance
export TURBO_PLUGIN_PATH=$B/plugins/cpu:$B/plugins/vulkan
for t in "test_backends vulkan" "test_host_vulkan"; do
    echo "== $t" >> "$O/conformance.txt"
    timeout 150 $B/tests/$t > "$O/tmp.txt" 2>&1
    echo "rc $?" >> "$O/conformance.txt"
    grep -E "vs cpu|PASSED|FAILED|ERROR" "$O/tmp.txt" | head -20 >> "$O/conformance.txt"
done
step sdpa
python3 scripts/sdpa-baseline.py --ctx 4096,16384,131072 > "$O/sdpa.txt" 2>&1
rm -f "$O/tmp.txt"
step done
