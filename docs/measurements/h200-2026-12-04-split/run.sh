#!/bin/bash
# SPDX-License-Identifier: MIT
# The outlier-split types (turbo3o, turbo4o) on the H200's OpenCL and Vulkan
# drivers (issue 13): the cross-backend conformance (same bytes as cpu,
# attention within the tolerance), then `turbokv bench` on OpenCL with the
# GPU clock held (TURBO_OCL_KERNEL_NS=1 TURBO_OCL_REPEAT=20: each call runs
# the kernel 21 times and reports the median of the last 20), and turbo3
# alone on main's OpenCL plugin (old/, copied from main's build) for the
# speed of the other types. Run from the copy of the worktree after
# `. .gpurt/enter.sh`; writes into $OUT.
set -u
R=$PWD
O=${OUT:-/tmp/out}
mkdir -p "$O"
export TKV_DEFAULT_CONFIG=$R/etc/turbokv.yaml TKV_MODELS_DIR=$R/models
export TKV_MINIMAL_PLUGIN_DIR=$R/build/tests/stubs/minimal TKV_BROKEN_PLUGIN_DIR=$R/build/tests/stubs
NEW=$R/build/plugins/cpu:$R/build/plugins/opencl:$R/build/plugins/vulkan
OLD=$R/build/plugins/cpu:$R/old
export TURBO_PLUGIN_PATH=$NEW
{
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
} > "$O/device.txt" 2>&1
# the two conformance runs side by side (16 cores), each with its limit
(echo "== build/tests/test_backends opencl (specialized programs: the GPU default)"
 timeout 80 stdbuf -oL build/tests/test_backends opencl 2>&1; echo "rc $?") > "$O/conformance-opencl.txt" 2>&1 &
(echo "== build/tests/test_backends vulkan"
 timeout 80 stdbuf -oL build/tests/test_backends vulkan 2>&1; echo "rc $?") > "$O/conformance-vulkan.txt" 2>&1 &
wait
export TURBO_OCL_KERNEL_NS=1 TURBO_OCL_REPEAT=20
{
echo "== TURBO_OCL_KERNEL_NS=1 TURBO_OCL_REPEAT=20 build/tools/turbokv bench --backend opencl --types turbo3,turbo3o --ctx 4K,128K"
timeout 90 build/tools/turbokv bench --backend opencl --types turbo3,turbo3o --ctx 4K,128K 2>&1; echo "rc $?"
echo "== main's plugin (old/): the same, --types turbo3"
TURBO_PLUGIN_PATH=$OLD timeout 40 build/tools/turbokv bench --backend opencl --types turbo3 --ctx 4K,128K 2>&1; echo "rc $?"
} > "$O/bench.txt" 2>&1
exit 0
