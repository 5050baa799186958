#!/bin/bash
# SPDX-License-Identifier: MIT
# Session 31, run 1, on an NVIDIA machine (after . .gpurt/enter.sh):
# 1. the OpenCL row encoder's outlier selection counted 8 values a check
#    and placed by summing flags 4 at a time (kernels/rows.cl): the stored
#    bytes against the cpu plugin (same_bytes_every_format, which holds
#    turbo3o at head_dim 8 .. 576) and test_host_opencl (the fused step);
# 2. its effect on the per-token step at 4K (turbo3o's fused step was
#    1.55-1.58x the attention kernel, issue 12's target 1.25x), this tree's
#    plugin against main's (.tc-variants/ocl-main), alternating, 2 rounds;
# 3. session 30's regress.sh (decode_tc 18% slower since session 29's
#    review), one round.
# Outputs straight into $OUT, so a run cut short returns what it did.
set -u
R=$PWD
O=${OUT:-/tmp/out}
mkdir -p "$O"
export TKV_DEFAULT_CONFIG=$R/etc/turbokv.yaml TKV_MODELS_DIR=$R/models
P=$R/build/plugins
nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv,noheader > "$O/device.txt" 2>&1
F=$O/check.txt
(echo "== same_bytes_every_format,attention_agrees opencl"
 TURBO_PLUGIN_PATH=$P/cpu:$P/opencl TKV_TESTS=same_bytes_every_format,attention_agrees timeout 150 build/tests/test_backends opencl
 echo "rc $? at ${SECONDS} s"
 echo "== test_host_opencl"
 TURBO_PLUGIN_PATH=$P/cpu:$P/opencl timeout 120 build/tests/test_host_opencl
 echo "rc $? at ${SECONDS} s") > "$F" 2>&1
grep -E "^==|^rc |PASSED|FAILED|differ|worst" "$F"
B="turbokv bench --backend opencl --per-token --types turbo3o,turbo3 --ctx 4K --layers 32 --warm-ms 300"
for r in 1 2; do
  for v in build/plugins/opencl .tc-variants/ocl-main; do
    (echo "== $v r$r: TURBO_OCL_KERNEL_NS=1 $B"
     TURBO_PLUGIN_PATH=$P/cpu:$R/$v TURBO_OCL_KERNEL_NS=1 timeout 90 build/tools/$B
     echo "rc $? at ${SECONDS} s") >> "$O/per-token.txt" 2>&1
  done
done
grep -E "^==|^turbo|^rc " "$O/per-token.txt"
ROUNDS=1 OUT=$O timeout $((580 - SECONDS)) bash docs/measurements/gpu-2026-12-07-s30/regress.sh > /dev/null 2>&1
cat "$O/regress.txt"
cat "$O/device.txt"
