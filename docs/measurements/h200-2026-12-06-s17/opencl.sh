#!/bin/bash
# SPDX-License-Identifier: MIT
# Session 17, OpenCL: outlier-split values (turbo3o) added by the work-items
# that own the outlier's coordinate (kernels/attention.cl, omask) against the
# plugin before the change (.dev-old-ocl/, main's build at 6e06fef). First
# NVIDIA conformance of the new plugin (test_backends opencl: the specialized
# programs, the GPU default; TURBO_OCL_SPECIALIZE=0: the generic program),
# then `turbokv bench` with the kernel timed at full clock
# (TURBO_OCL_KERNEL_NS=1 TURBO_OCL_REPEAT=20), old and new alternating.
# Run from the worktree copy after `. .gpurt/enter.sh`; writes into $OUT.
set -u
R=$PWD
O=${OUT:-/tmp/out}
mkdir -p "$O"
export TKV_DEFAULT_CONFIG=$R/etc/turbokv.yaml TKV_MODELS_DIR=$R/models
export TKV_MINIMAL_PLUGIN_DIR=$R/build/tests/stubs/minimal TKV_BROKEN_PLUGIN_DIR=$R/build/tests/stubs
NEW=$R/build/plugins/cpu:$R/build/plugins/opencl
OLD=$R/build/plugins/cpu:$R/.dev-old-ocl
export TURBO_PLUGIN_PATH=$NEW
nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv,noheader > "$O/device.txt" 2>&1
(echo "== build/tests/test_backends opencl (specialized programs)"
 timeout 100 stdbuf -oL build/tests/test_backends opencl 2>&1; echo "rc $?") > "$O/conformance-opencl.txt" 2>&1 &
(echo "== TURBO_OCL_SPECIALIZE=0 build/tests/test_backends opencl (generic program)"
 TURBO_OCL_SPECIALIZE=0 timeout 100 stdbuf -oL build/tests/test_backends opencl 2>&1; echo "rc $?") > "$O/conformance-opencl-generic.txt" 2>&1 &
wait
export TURBO_OCL_KERNEL_NS=1 TURBO_OCL_REPEAT=20
B="build/tools/turbokv bench --backend opencl --types turbo3,turbo3o"
{
for run in 1 2; do
  for which in old new; do
    [ $SECONDS -gt 300 ] && { echo "== run $run $which skipped: ${SECONDS} s"; continue; }
    [ $which = old ] && P=$OLD || P=$NEW
    echo "== run $run $which: TURBO_PLUGIN_PATH=$P $B --ctx 4K,16K,128K --tokens 1 --seqs 1"
    TURBO_PLUGIN_PATH=$P timeout 100 $B --ctx 4K,16K,128K --tokens 1 --seqs 1 2>&1; echo "rc $?"
  done
done
for which in old new; do
  [ $SECONDS -gt 420 ] && { echo "== $which skipped: ${SECONDS} s"; continue; }
  [ $which = old ] && P=$OLD || P=$NEW
  echo "== $which: TURBO_PLUGIN_PATH=$P $B --ctx 4K,128K (shapes 1x1, 4x1, 1x8)"
  TURBO_PLUGIN_PATH=$P timeout 80 $B --ctx 4K,128K 2>&1; echo "rc $?"
done
} > "$O/bench.txt" 2>&1
exit 0
