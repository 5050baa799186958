#!/bin/bash
# SPDX-License-Identifier: MIT
# Second device call (issue 11): this branch's plugin against main's (old/)
# and PyTorch SDPA, conformance. Run from the copy of the worktree (.dev-vk)
# after `. .gpurt/enter.sh`, with drv/kvb built from kvb.c and main's
# turbokv-vulkan.so in old/; writes into $OUT:
#   bench.txt     drv/kvb, new then old, one process per type (interleaved)
#   stages.txt    TURBO_VK_PROFILE stage timestamps of the new plugin, and of
#                 it with TURBO_VK_STAGED_IO=1 TURBO_VK_PREPARE=1 (copies and
#                 the prepare dispatch back)
#   sdpa.txt      scripts/sdpa-baseline.py
#   conformance.txt, clocks.txt (nvidia-smi every 250 ms)
set -u
R=$PWD
O=${OUT:-/tmp/out}
mkdir -p "$O"
export KVB_APPEND=0
NEW=$R/build/plugins/cpu:$R/build/plugins/vulkan
OLD=$R/build/plugins/cpu:$R/old
nvidia-smi --query-gpu=name,driver_version,clocks.max.sm --format=csv,noheader > "$O/bench.txt" 2>&1
nvidia-smi --query-gpu=timestamp,clocks.sm,clocks.mem,pstate,utilization.gpu,power.draw --format=csv -lms 250 \
    > "$O/clocks.txt" 2>&1 &
SMI=$!
for t in ${TYPES:-turbo3 turbo4 q8_0 f16}; do
    for which in new old; do
        P=$NEW; [ $which = old ] && P=$OLD
        echo "== $which $(date +%T): drv/kvb vulkan $t 4K,16K,64K,128K 1x1,4x1,1x8 0 8" >> "$O/bench.txt"
        TURBO_PLUGIN_PATH=$P timeout 60 drv/kvb vulkan $t 4K,16K,64K,128K 1x1,4x1,1x8 0 8 2>&1 | grep -v '^#' \
            >> "$O/bench.txt"
    done
done
cat "$O/bench.txt"
for v in "" "TURBO_VK_STAGED_IO=1" "TURBO_VK_PREPARE=1" "TURBO_VK_STAGED_IO=1 TURBO_VK_PREPARE=1"; do
    echo "== $(date +%T) TURBO_VK_PROFILE=1 $v drv/kvb vulkan turbo3 4K,16K,128K 1x1 0 10" | tee -a "$O/stages.txt"
    env TURBO_PLUGIN_PATH=$NEW TURBO_VK_PROFILE=1 $v timeout 40 drv/kvb vulkan turbo3 4K,16K,128K 1x1 0 10 2>&1 \
        | grep -v "buffer of\|type \|heap " | tee -a "$O/stages.txt" | grep attn
done
echo "== sdpa: python3 scripts/sdpa-baseline.py --ctx 4096,16384,65536,131072" > "$O/sdpa.txt"
timeout 90 python3 scripts/sdpa-baseline.py --ctx 4096,16384,65536,131072 >> "$O/sdpa.txt" 2>&1
cat "$O/sdpa.txt"
export TKV_DEFAULT_CONFIG=$R/etc/turbokv.yaml TKV_MODELS_DIR=$R/models TURBO_PLUGIN_PATH=$NEW
export TKV_MINIMAL_PLUGIN_DIR=$R/build/tests/stubs/minimal TKV_BROKEN_PLUGIN_DIR=$R/build/tests/stubs  # test_paged needs them (the recorded run lacked them)
echo "== build/tests/test_backends vulkan (timeout 50)" > "$O/conformance.txt"
timeout 50 build/tests/test_backends vulkan >> "$O/conformance.txt" 2>&1; echo "exit $?" >> "$O/conformance.txt"
echo "== build/tests/test_paged vulkan (timeout 30)" >> "$O/conformance.txt"
timeout 30 build/tests/test_paged vulkan >> "$O/conformance.txt" 2>&1; echo "exit $?" >> "$O/conformance.txt"
grep -E "vs cpu|exit|FAIL|PASSED|OK" "$O/conformance.txt" | tail -12
kill $SMI
