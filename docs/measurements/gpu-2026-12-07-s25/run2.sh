#!/bin/bash
# SPDX-License-Identifier: MIT
# Session 25, run 2: the decode step as one launch (ABI 2.7's
# append_attention: the tensor-core kernels quantize the new rows of the
# chunks that hold them, tensor.cl step 0). Variants under build/muts/:
# f1 = step 0 with K then V by the whole work-group, and session 24's
# rows.cl (r1); f2 = f1 with r2's rows.cl (the WHT's signs as chars, one
# wht_butterflies; da169d5); f3 = f2 with step 0's K and V side by side
# (64 work-items each: ROW_LID, ROW_N), the tree; fm = f2 without step 0
# (a mutant: the new rows neither stored nor seen).
# Outputs straight into $OUT, so a run cut short returns what it did:
# 1. test_host_opencl (fused_step_matches_two_calls: the one launch against
#    the cpu plugin's two calls, bytes and outputs): f3, f3 with four tiles
#    a warp, f2; fm must fail it;
# 2. f3: the conformance (stored bytes of every format, attention);
# 3. the per-token mode of f3, f1: its "fused us" column is the
#    step by tkv_cache_append_attention;
# 4. f3: the 1-token bench (the plain attention with the new arguments).
set -u
R=$PWD
O=${OUT:-/tmp/out}
export TKV_DEFAULT_CONFIG=$R/etc/turbokv.yaml TKV_MODELS_DIR=$R/models
export TURBO_PLUGIN_PATH=$R/build/plugins/cpu:$R/build/plugins/opencl
nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv,noheader > "$O/device.txt" 2>&1
use() { cp build/muts/$1/turbokv-opencl.so build/plugins/opencl/turbokv-opencl.so; }
host() { # variant, then extra environment
  use $1
  (echo "== ($1${2:+ $2}) test_host_opencl"
   env ${2:-} timeout 120 build/tests/test_host_opencl; echo "rc $? at ${SECONDS} s") >> "$O/host.txt" 2>&1
}
host f3; host f3 TURBO_OCL_MIN_TILES=4; host f2; host fm
grep -E "^\[ *(OK|FAILED|PASSED) |error|rc |==" "$O/host.txt"
use f3
T=same_bytes_every_format,attention_agrees,split_attention_rotations,paged_and_options_agree,sparse_v_counts
(echo "== (f3) TKV_TESTS=$T test_backends opencl"
 TKV_TESTS=$T timeout 300 build/tests/test_backends opencl; echo "rc $? at ${SECONDS} s") > "$O/conformance.txt" 2>&1
grep -E "^\[ *(OK|FAILED|PASSED) |differ|rc " "$O/conformance.txt"
P="turbokv bench --backend opencl --per-token --types turbo3,turbo3o --ctx 4K,128K --layers 32 --warm-ms 300"
for v in f3 f1; do
  use $v
  (echo "== ($v) TURBO_OCL_KERNEL_NS=1 $P"
   TURBO_OCL_KERNEL_NS=1 timeout 80 build/tools/$P; echo "rc $? at ${SECONDS} s") >> "$O/per-token.txt" 2>&1
done
grep "^==\|^turbo\|rc " "$O/per-token.txt"
use f3
B="turbokv bench --backend opencl --types turbo3,turbo3o --ctx 4K,16K,128K --tokens 1 --seqs 1"
(echo "== (f3) TURBO_OCL_KERNEL_NS=1 TURBO_OCL_REPEAT=20 $B"
 TURBO_OCL_KERNEL_NS=1 TURBO_OCL_REPEAT=20 timeout 90 build/tools/$B; echo "rc $? at ${SECONDS} s") > "$O/bench-f3.txt" 2>&1
grep -A4 "^device time" "$O/bench-f3.txt"; grep "rc " "$O/bench-f3.txt"
cat "$O/device.txt"
