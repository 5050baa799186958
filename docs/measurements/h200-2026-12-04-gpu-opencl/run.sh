#!/bin/bash
# SPDX-License-Identifier: MIT
# The OpenCL plugin's H200 sweep, K rows scored by several work-items
# (issue 11): run from the copy of the worktree (.dev-ocl) after
# `. .gpurt/enter.sh`; writes into $OUT. old/ holds main's plugin.
set -u
R=$PWD
O=${OUT:-/tmp/out}
mkdir -p "$O"
T0=$(date +%s)
left() { echo $(( ${BUDGET:-175} - ($(date +%s) - T0) )); }
export TKV_DEFAULT_CONFIG=$R/etc/turbokv.yaml TKV_MODELS_DIR=$R/models
export TKV_MINIMAL_PLUGIN_DIR=$R/build/tests/stubs/minimal TKV_BROKEN_PLUGIN_DIR=$R/build/tests/stubs
NEW=$R/build/plugins/cpu:$R/build/plugins/opencl
OLD=$R/build/plugins/cpu:$R/old
export TURBO_PLUGIN_PATH=$NEW
KVB="stdbuf -oL drv/kvb opencl"
{
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
echo "== conformance: build/tests/test_backends opencl"; timeout 45 stdbuf -oL build/tests/test_backends opencl 2>&1 | tail -8; echo "rc ${PIPESTATUS[0]}"
echo "== paged: build/tests/test_paged opencl"; timeout 25 stdbuf -oL build/tests/test_paged opencl 2>&1 | tail -4; echo "rc ${PIPESTATUS[0]}"
echo "== registers: TURBO_OCL_BUILD_LOG=1 TURBO_OCL_CL_OPTIONS=-cl-nv-verbose drv/kvb opencl turbo3 4K 1x1 0 3"
TURBO_OCL_BUILD_LOG=1 TURBO_OCL_CL_OPTIONS=-cl-nv-verbose timeout 10 $KVB turbo3 4K 1x1 0 3 2>&1 | grep -iE "attn_decode|registers|spill|stack|lmem" | head -24
} > "$O/conformance.txt" 2>&1
cat "$O/conformance.txt"
TY=turbo3,turbo4,q8_0,f16 CT=4K,16K,64K,128K SH=1x1,4x1,1x8,4x8
echo "== new: drv/kvb opencl $TY $CT $SH" | tee "$O/new.txt"
timeout 40 $KVB $TY $CT $SH 2>&1 | tee -a "$O/new.txt"
echo "== old (main's plugin): TURBO_PLUGIN_PATH=old drv/kvb opencl $TY $CT $SH" | tee "$O/old.txt"
TURBO_PLUGIN_PATH=$OLD timeout 40 $KVB $TY $CT $SH 2>&1 | tee -a "$O/old.txt"
echo "== sdpa: python3 scripts/sdpa-baseline.py --ctx 4096,16384,65536,131072" | tee "$O/sdpa.txt"
timeout 30 python3 scripts/sdpa-baseline.py --ctx 4096,16384,65536,131072 2>&1 | tee -a "$O/sdpa.txt"
# what is left of the budget: the kernel alone and tuning variants
for v in "TURBO_OCL_KERNEL_NS=1" "TURBO_OCL_KERNEL_NS=1 OLD" ${VARIANTS:-"TURBO_OCL_KERNEL_NS=1 TURBO_OCL_KREG=128" "TURBO_OCL_KERNEL_NS=1 TURBO_OCL_KC=8" "TURBO_OCL_KERNEL_NS=1 TURBO_OCL_ROUND_FLOATS=1024" "TURBO_OCL_KERNEL_NS=1 TURBO_OCL_GROUPS_PER_CU=8" "TURBO_OCL_KERNEL_NS=1 TURBO_OCL_WG=256"}; do
    L=$(left); [ "$L" -lt 12 ] && { echo "== (budget) skipped: $v" >> "$O/variants.txt"; continue; }
    P=$NEW; case "$v" in *OLD) P=$OLD; v=${v% OLD};; esac
    echo "== $v${P/$NEW/}: drv/kvb opencl turbo3 4K,16K,128K 1x1,4x1" | tee -a "$O/variants.txt"
    env TURBO_PLUGIN_PATH=$P $v timeout $(( L < 20 ? L - 3 : 15 )) $KVB turbo3 4K,16K,128K 1x1,4x1 2>&1 | grep attn | tee -a "$O/variants.txt"
done
L=$(left)
if [ "$L" -gt 12 ]; then
    echo "== sparse V 1e-6: drv/kvb opencl turbo3 16K,128K 1x1 1e-6" | tee -a "$O/variants.txt"
    timeout $((L - 3)) $KVB turbo3 16K,128K 1x1 1e-6 2>&1 | grep attn | tee -a "$O/variants.txt"
fi
