#!/bin/bash
# SPDX-License-Identifier: MIT
# The OpenCL plugin's H200 sweep (issue 11): run from the copy of the
# worktree (.dev-ocl) after `. .gpurt/enter.sh`; writes into $OUT.
set -u
R=$PWD
O=${OUT:-/tmp/out}
mkdir -p "$O"
export TKV_DEFAULT_CONFIG=$R/etc/turbokv.yaml TKV_MODELS_DIR=$R/models
export TKV_MINIMAL_PLUGIN_DIR=$R/build/tests/stubs/minimal TKV_BROKEN_PLUGIN_DIR=$R/build/tests/stubs
NEW=$R/build/plugins/cpu:$R/build/plugins/opencl
OLD=$R/build/plugins/cpu:$R/old
export TURBO_PLUGIN_PATH=$NEW
L=$O/log.txt
{
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
echo "== conformance"; timeout 150 build/tests/test_backends opencl 2>&1 | tail -12; echo "rc $?"
echo "== paged"; timeout 100 build/tests/test_paged opencl 2>&1 | tail -6; echo "rc $?"
} > "$L" 2>&1
cat "$L"
B="${TYPES:-turbo3,turbo2,turbo4,q8_0,f16}"
echo "== new: drv/kvb opencl $B 4K,16K,64K,128K 1x1,4x1,1x8" | tee "$O/new.txt"
timeout 200 drv/kvb opencl "$B" 4K,16K,64K,128K 1x1,4x1,1x8 2>&1 | tee -a "$O/new.txt"
echo "== old (main's plugin): TURBO_PLUGIN_PATH=old drv/kvb opencl turbo3,f16 4K,16K,128K 1x1,4x1,1x8" | tee "$O/old.txt"
TURBO_PLUGIN_PATH=$OLD timeout 100 drv/kvb opencl turbo3,f16 4K,16K,128K 1x1,4x1,1x8 2>&1 | tee -a "$O/old.txt"
for v in ${VARIANTS:-TURBO_OCL_GROUPS_PER_CU=4 TURBO_OCL_GROUPS_PER_CU=16 TURBO_OCL_WG=256 TURBO_OCL_SPIN=1 TURBO_OCL_MIN_TILES=2 TURBO_OCL_MERGE_KIB=64}; do
    echo "== variant $v: drv/kvb opencl turbo3 4K,16K,128K 1x1,4x1,1x8" | tee -a "$O/variants.txt"
    env $v timeout 60 drv/kvb opencl turbo3 4K,16K,128K 1x1,4x1,1x8 2>&1 | grep attn | tee -a "$O/variants.txt"
done
if [ -z "${NO_SDPA:-}" ]; then
    echo "== sdpa" | tee "$O/sdpa.txt"
    timeout 90 python3 scripts/sdpa-baseline.py --ctx 4096,16384,65536,131072 2>&1 | tee -a "$O/sdpa.txt"
fi
