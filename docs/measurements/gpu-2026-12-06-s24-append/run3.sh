#!/bin/bash
# SPDX-License-Identifier: MIT
# Session 24, run 3: r2 = r1 with the WHT's signs kept as chars in the
# append's local scratch (16 KB a work-group instead of 22 at
# TKV_HEAD_DIM_MAX 1024) and one wht_butterflies for rotate_local and
# rotate_rows_local. Conformance of r2 (stored bytes, attention with
# rotations), then the per-token mode of r1 and r2 alternating; outputs
# straight into $OUT.
set -u
R=$PWD
O=${OUT:-/tmp/out}
export TKV_DEFAULT_CONFIG=$R/etc/turbokv.yaml TKV_MODELS_DIR=$R/models
export TURBO_PLUGIN_PATH=$R/build/plugins/cpu:$R/build/plugins/opencl
nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv,noheader > "$O/device.txt" 2>&1
use() { cp build/muts/$1/turbokv-opencl.so build/plugins/opencl/turbokv-opencl.so; }
use r2
(echo "== (r2) TKV_TESTS=same_bytes_every_format,attention_agrees,split_attention_rotations test_backends opencl"
 TKV_TESTS=same_bytes_every_format,attention_agrees,split_attention_rotations timeout 250 build/tests/test_backends opencl; echo "rc $? at ${SECONDS} s") > "$O/conformance.txt" 2>&1
P="turbokv bench --backend opencl --per-token --types turbo3 --ctx 4K,128K --layers 32 --warm-ms 300"
for v in r1 r2 r1 r2; do
  use $v
  (echo "== ($v) TURBO_OCL_KERNEL_NS=1 $P"
   TURBO_OCL_KERNEL_NS=1 timeout 60 build/tools/$P; echo "rc $? at ${SECONDS} s") >> "$O/per-token.txt" 2>&1
done
cat "$O/device.txt"
grep -E "^\[ *(OK|FAILED|PASSED) |differ|rc " "$O/conformance.txt"
grep "^==\|^turbo\|rc " "$O/per-token.txt"
