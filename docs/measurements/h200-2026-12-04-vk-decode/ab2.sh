#!/bin/bash
# SPDX-License-Identifier: MIT
# decode.comp merging its chunks in its last workgroup (default) against the
# merge dispatch (TURBO_VK_DECODE=merge) and attention.comp
# (TURBO_VK_DECODE=0) on the H200, the clock raised before each point
# (KVB_WARM_MS=300); SDPA f16 in the same run; the per-token mode at 4K.
# Run from the copy of the worktree after `. .gpurt/enter.sh`; writes into $OUT.
set -u
R=$PWD
O=${OUT:-/tmp/out}
mkdir -p "$O"
export KVB_APPEND=0 KVB_WARM_MS=300 TURBO_PLUGIN_PATH=$R/build/plugins/cpu:$R/build/plugins/vulkan
gcc -O2 -o kvb docs/measurements/h200-2026-12-04-gpu-vulkan/kvb.c -Iabi -Lbuild/core -lturbokv -lm \
    -Wl,-rpath,$R/build/core || exit 1
nvidia-smi --query-gpu=timestamp,clocks.sm,utilization.gpu --format=csv -lms 100 > "$O/clocks.txt" 2>&1 &
SMI=$!
export TKV_DEFAULT_CONFIG=$R/etc/turbokv.yaml TKV_MODELS_DIR=$R/models
timeout 60 build/tests/test_backends vulkan 2>&1 | grep -E "vs cpu|sparse|PASSED|FAILED" > "$O/conformance.txt"
for v in "TURBO_VK_DECODE=1" "TURBO_VK_DECODE=merge" "TURBO_VK_DECODE=0"; do
    echo "== $v kvb vulkan turbo3 4K,16K,64K,128K 1x1,4x1,1x8 0 8" >> "$O/bench.txt"
    env $v timeout 50 ./kvb vulkan turbo3 4K,16K,64K,128K 1x1,4x1,1x8 0 8 2>&1 | grep -v '^#' >> "$O/bench.txt"
done
echo "== kvb vulkan turbo4,turbo2 4K,16K,64K,128K 1x1 0 8" >> "$O/bench.txt"
timeout 50 ./kvb vulkan turbo4,turbo2 4K,16K,64K,128K 1x1 0 8 2>&1 | grep -v '^#' >> "$O/bench.txt"
echo "== sdpa: python3 scripts/sdpa-baseline.py --ctx 4096,16384,65536,131072" > "$O/sdpa.txt"
timeout 60 python3 scripts/sdpa-baseline.py --ctx 4096,16384,65536,131072 >> "$O/sdpa.txt" 2>&1
echo "== build/tools/turbokv bench --per-token --backend vulkan --ctx 4K --layers 32" > "$O/per-token.txt"
LD_LIBRARY_PATH=$R/build/core timeout 60 build/tools/turbokv bench --per-token --backend vulkan --ctx 4K --layers 32 \
    >> "$O/per-token.txt" 2>&1
kill $SMI
