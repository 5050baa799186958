#!/bin/bash
# SPDX-License-Identifier: MIT
# The OpenCL plugin on the H200 (issue 11): two-phase reductions against
# main's barrier trees (old/), the GPU clock held by timing the kernel back
# to back (TURBO_OCL_KERNEL_NS=1 TURBO_OCL_REPEAT=20: each call runs the
# kernel 21 times and reports the median of the last 20). Run from the copy
# of the worktree after `. .gpurt/enter.sh`; writes into $OUT.
set -u
R=$PWD
O=${OUT:-/tmp/out}
mkdir -p "$O"
T0=$(date +%s)
left() { echo $(( ${BUDGET:-230} - ($(date +%s) - T0) )); }
export TKV_DEFAULT_CONFIG=$R/etc/turbokv.yaml TKV_MODELS_DIR=$R/models
export TKV_MINIMAL_PLUGIN_DIR=$R/build/tests/stubs/minimal TKV_BROKEN_PLUGIN_DIR=$R/build/tests/stubs
NEW=$R/build/plugins/cpu:$R/build/plugins/opencl
OLD=$R/build/plugins/cpu:$R/old
export TURBO_PLUGIN_PATH=$NEW
M=docs/measurements/h200-2026-12-04-opencl-kernels
gcc -O2 -o kvb docs/measurements/h200-2026-12-04-gpu-vulkan/kvb.c -Iabi -Lbuild/core -lturbokv -lm -Wl,-rpath,$R/build/core || exit 1
KVB="stdbuf -oL ./kvb opencl"
nvidia-smi --query-gpu=clocks.sm,utilization.gpu --format=csv -lms 500 > "$O/clocks.txt" 2>&1 &
SMI=$!
{
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
echo "== conformance: build/tests/test_backends opencl"; timeout 60 stdbuf -oL build/tests/test_backends opencl 2>&1 | grep -E "vs cpu|sparse V|PASSED|FAILED|ERROR"; echo "rc ${PIPESTATUS[0]}"
echo "== paged: build/tests/test_paged opencl"; timeout 30 stdbuf -oL build/tests/test_paged opencl 2>&1 | tail -3; echo "rc ${PIPESTATUS[0]}"
} > "$O/conformance.txt" 2>&1
export TURBO_OCL_KERNEL_NS=1 TURBO_OCL_REPEAT=20 KVB_APPEND=0
TY=turbo3,turbo4,q8_0,f16 CT=4K,16K,64K,128K SH=1x1,4x1,1x8
for side in new old; do
    P=$NEW; [ $side = old ] && P=$OLD
    echo "== $side: kernel median, kvb opencl $TY $CT $SH" > "$O/$side.txt"
    TURBO_PLUGIN_PATH=$P timeout 60 $KVB $TY $CT $SH >> "$O/$side.txt" 2>&1
done
echo "== sdpa: python3 scripts/sdpa-baseline.py --ctx 4096,16384,65536,131072" > "$O/sdpa.txt"
timeout 40 python3 scripts/sdpa-baseline.py --ctx 4096,16384,65536,131072 >> "$O/sdpa.txt" 2>&1
for v in "TURBO_OCL_MIN_TILES=2" "TURBO_OCL_MIN_TILES=4" "TURBO_OCL_GROUPS_PER_CU=8"; do
    L=$(left); [ "$L" -lt 15 ] && { echo "== (budget) skipped: $v" >> "$O/variants.txt"; continue; }
    echo "== $v: turbo3 4K,16K,128K 1x1,4x1" >> "$O/variants.txt"
    env $v timeout 15 $KVB turbo3 4K,16K,128K 1x1,4x1 2>&1 | grep attn >> "$O/variants.txt"
done
L=$(left)
if [ "$L" -gt 25 ]; then
    echo "== wall per call (no repeat), new then old: turbo3,f16 4K,16K,128K 1x1" > "$O/wall.txt"
    TURBO_OCL_REPEAT=0 TURBO_OCL_KERNEL_NS=0 timeout 12 $KVB turbo3,f16 4K,16K,128K 1x1 >> "$O/wall.txt" 2>&1
    TURBO_PLUGIN_PATH=$OLD TURBO_OCL_REPEAT=0 TURBO_OCL_KERNEL_NS=0 timeout 12 $KVB turbo3,f16 4K,16K,128K 1x1 >> "$O/wall.txt" 2>&1
fi
kill $SMI 2>/dev/null
exit 0
