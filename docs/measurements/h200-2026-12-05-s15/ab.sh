#!/bin/bash
# SPDX-License-Identifier: MIT
# Session 15's first run: how decode.comp scores turbo K rows
# (TURBO_VK_KSCORE: 0 the row in registers, every value's code unrolled;
# 1 the row in shared memory and a loop over its segments; 2 as 1 with a
# table of the unit's q_t[e] c products; 5 and 6: 1 and 2 with the next
# batch's rows loaded while this one is scored), alternating in one run.
#   log.txt          the GPU, each step's start
#   ab.txt           1 token, turbo3/4/2 at 4K/16K/128K, two rounds of
#                    0,1,2,5,6; then turbo3 with 4 tokens and 8 sequences
#   regs.txt         each variant's pipeline statistics (registers)
#   conformance.txt  test_backends vulkan (attention tests) with 5 and 6
#   clocks.txt       SM / memory clock and power every 100 ms
#   table.txt, sdpa.json  on an H200 only: every type 4K-128K and PyTorch
#                    SDPA f16 in the same run
# From a copy of the tree (build/ present) after `. .gpurt/enter.sh`.
set -u
R=$PWD
B=$R/build
O=${OUT:-/tmp/out}
mkdir -p "$O"
t0=$(date +%s)
step() { echo "[$(($(date +%s) - t0)) s] $*" >> "$O/log.txt"; }
late() { [ $(($(date +%s) - t0)) -gt ${1} ] && { step "left out: $2"; return 0; }; return 1; }
nvidia-smi --query-gpu=name,driver_version,clocks.max.sm --format=csv,noheader >> "$O/log.txt" 2>&1
nvidia-smi --query-gpu=timestamp,clocks.sm,clocks.mem,power.draw --format=csv,noheader -lms 100 > "$O/clocks.txt" 2>&1 &
smi=$!
POINTS=ab.txt CLOCK_LINES=0
source docs/measurements/h200-2026-12-05-s11/kvb-points.sh
KVB_WARM_MS=2000 timeout 60 ./kvb vulkan turbo3 16K 1x1 0 2 > /dev/null 2>&1
step ab
for r in 1 2; do
    for m in 0 1 2 5 6; do
        point TURBO_VK_KSCORE=$m -- turbo3,turbo4,turbo2 4K,16K,128K 1x1 0 4
    done
done
step "4 tokens, 8 sequences"
for r in 1 2; do
    for m in 0 1 2 5 6; do
        point TURBO_VK_KSCORE=$m -- turbo3 4K,128K 4x1,1x8 0 4
    done
done
step regs
for m in 0 1 2 5 6; do
    echo "== TURBO_VK_KSCORE=$m" >> "$O/regs.txt"
    TURBO_VK_PROFILE=1 TURBO_VK_KSCORE=$m timeout 60 ./kvb vulkan turbo3,turbo4 16K 1x1 0 2 2>&1 |
        grep "vkprof: pipeline" | cut -c1-400 >> "$O/regs.txt"
done
step conformance
for m in 5 6; do
    echo "== TURBO_VK_KSCORE=$m" >> "$O/conformance.txt"
    TURBO_VK_KSCORE=$m TKV_TESTS=attention_agrees,paged_and_options_agree timeout 150 $B/tests/test_backends vulkan \
        > "$O/tmp.txt" 2>&1
    echo "rc $?" >> "$O/conformance.txt"
    grep -E "vs cpu|PASSED|FAILED|ERROR|differ" "$O/tmp.txt" | head -20 >> "$O/conformance.txt"
done
if grep -q H200 "$O/log.txt"; then
    step table
    POINTS=table.txt
    late 420 table || point KVB_RUN=1 -- turbo3,turbo4,turbo2,turbo3o,q8_0,f16 4K,16K,64K,128K 1x1 0 8
    step sdpa
    late 480 sdpa || timeout 100 python3 scripts/sdpa-baseline.py --ctx 4096,16384,65536,131072 --json \
        > "$O/sdpa.json" 2> "$O/tmp.txt"
fi
kill $smi
rm -f "$O/tmp.txt"
step done
