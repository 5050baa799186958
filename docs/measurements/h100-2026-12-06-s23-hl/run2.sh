#!/bin/bash
# SPDX-License-Identifier: MIT
# Session 23, run 2: the tree's plugin (vC: build/muts/vC, run.sh's head
# says what it is) on NVIDIA, its most wanted figures first, each step's
# output straight into $OUT (so that a run cut short still returns what it
# did): the per-token mode with the kernel's own device time
# (TURBO_OCL_KERNEL_NS=1: the bench's "attn device us" is the kernel alone),
# test_host_opencl, the 1-token bench of vC and of v0 (main at the start of
# the session), then the attention conformance.
set -u
R=$PWD
O=${OUT:-/tmp/out}
export TKV_DEFAULT_CONFIG=$R/etc/turbokv.yaml TKV_MODELS_DIR=$R/models
export TURBO_PLUGIN_PATH=$R/build/plugins/cpu:$R/build/plugins/opencl
nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv,noheader > "$O/device.txt" 2>&1
use() { cp build/muts/$1/turbokv-opencl.so build/plugins/opencl/turbokv-opencl.so; }
use vC
(echo "== (vC) TURBO_OCL_KERNEL_NS=1 turbokv bench --backend opencl --per-token --types turbo3,turbo3o --ctx 4K,128K --layers 32 --warm-ms 300"
 TURBO_OCL_KERNEL_NS=1 timeout 90 build/tools/turbokv bench --backend opencl --per-token --types turbo3,turbo3o --ctx 4K,128K --layers 32 --warm-ms 300; echo "rc $? at ${SECONDS} s") > "$O/per-token.txt" 2>&1
(echo "== (vC) test_host_opencl"; timeout 60 build/tests/test_host_opencl; echo "rc $? at ${SECONDS} s") > "$O/host-opencl.txt" 2>&1
B="turbokv bench --backend opencl --types turbo3,turbo3o --ctx 4K,16K,128K --tokens 1 --seqs 1"
for v in vC v0; do
  use $v
  (echo "== ($v) TURBO_OCL_KERNEL_NS=1 TURBO_OCL_REPEAT=20 $B"
   TURBO_OCL_KERNEL_NS=1 TURBO_OCL_REPEAT=20 timeout 90 build/tools/$B; echo "rc $? at ${SECONDS} s") > "$O/bench-$v.txt" 2>&1
done
use vC
(echo "== (vC) TKV_TESTS=attention_agrees test_backends opencl"
 TKV_TESTS=attention_agrees timeout 250 build/tests/test_backends opencl; echo "rc $? at ${SECONDS} s") > "$O/conformance.txt" 2>&1
cat "$O/device.txt"
grep "^==\|^turbo\|rc " "$O/per-token.txt"
grep -v "^ *$" "$O/host-opencl.txt" | tail -3
for v in vC v0; do echo "== $v"; grep -A4 "^device time" "$O/bench-$v.txt"; grep "rc " "$O/bench-$v.txt"; done
grep -v "^ *$\|warning generated" "$O/conformance.txt" | tail -5
