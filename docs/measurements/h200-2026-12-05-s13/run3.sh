#!/bin/bash
# SPDX-License-Identifier: MIT
# Session 13's third run: one wave of resident workgroups for
# decode_wide.comp (f16, q8_0 keys) too, and the prescaled V weights, in
# this tree against the plugin before (base-vulkan/, session 12's):
#   conformance.txt  test_backends vulkan, test_host_vulkan
#   ab.txt           base then new, 1 token, f16, q8_0, turbo3 at 16K/128K
#   profile.txt      the calls' shapes of new (TURBO_VK_PROFILE=1)
# From a copy of the tree (build/, base-vulkan/ present) after
# `. .gpurt/enter.sh`; output under $OUT. About 2.5 minutes (what was left
# of the session's device time).
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
step conformance
export TURBO_PLUGIN_PATH=$B/plugins/cpu:$B/plugins/vulkan
for t in "test_backends vulkan" "test_host_vulkan"; do
    echo "== $t" >> "$O/conformance.txt"
    timeout 150 $B/tests/$t > "$O/tmp.txt" 2>&1
    echo "rc $?" >> "$O/conformance.txt"
    grep -E "vs cpu|PASSED|FAILED|ERROR" "$O/tmp.txt" | head -20 >> "$O/conformance.txt"
done
step ab
point $BASE -- f16,q8_0,turbo3 16K,128K 1x1 0 8
point KVB_BUILD=new -- f16,q8_0,turbo3 16K,128K 1x1 0 8
step profile
TURBO_VK_PROFILE=1 timeout 60 ./kvb vulkan f16,q8_0 128K 1x1 0 2 > "$O/tmp.txt" 2>&1
grep "vkprof: pipeline attention\|^attn" "$O/tmp.txt" > "$O/profile.txt"
grep "vkprof: attention n_out" "$O/tmp.txt" | sed 's/: up.*//' | uniq -c >> "$O/profile.txt"
rm -f "$O/tmp.txt"
step done
