#!/bin/bash
# SPDX-License-Identifier: MIT
# Session 25, run 2: the decode step as one launch (ABI 2.7's
# append_attention: the tensor-core kernels quantize the new rows of the
# chunks that hold them, tensor.cl step 0). Variants under build/muts/:
# f1 = the fused kernels with session 24's rows.cl (r1); f2 = the same with
# r2's rows.cl (the WHT's signs as chars, one wht_butterflies; da169d5).
# Outputs straight into $OUT, so a run cut short returns what it did:
# 1. f2: test_host_opencl (fused_step_matches_two_calls: the one launch
#    against the cpu plugin's two calls, bytes and outputs), then again
#    with four tiles a warp; the mutant fm (no step 0) must fail it;
# 2. f2: the conformance (stored bytes of every format, attention);
# 3. the per-token mode of f1 and f2 alternating: the "fused us" column is
#    the step by tkv_cache_append_attention;
# 4. f2: the 1-token bench (the plain attention with the new arguments).
set -u
R=$PWD
O=${OUT:-/tmp/out}
export TKV_DEFAULT_CONFIG=$R/etc/turbokv.yaml TKV_MODELS_DIR=$R/models
export TURBO_PLUGIN_PATH=$R/build/plugins/cpu:$R/build/plugins/opencl
nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv,noheader > "$O/device.txt" 2>&1
use() { cp build/muts/$1/turbokv-opencl.so build/plugins/opencl/turbokv-opencl.so; }
use f2
(echo "== (f2) test_host_opencl"; timeout 120 build/tests/test_host_opencl; echo "rc $? at ${SECONDS} s"
 echo "== (f2) TURBO_OCL_MIN_TILES=4 test_host_opencl"
 TURBO_OCL_MIN_TILES=4 timeout 120 build/tests/test_host_opencl; echo "rc $? at ${SECONDS} s") > "$O/host.txt" 2>&1
# the mutant fm (f2 with step 0 left out: the new rows neither stored nor
# seen) must fail fused_step_matches_two_calls
use fm
(echo "== (fm, must fail) test_host_opencl"; timeout 120 build/tests/test_host_opencl; echo "rc $? at ${SECONDS} s") >> "$O/host.txt" 2>&1
use f2
grep -E "^\[ *(OK|FAILED|PASSED) |error|rc |==" "$O/host.txt"
T=same_bytes_every_format,attention_agrees,split_attention_rotations,paged_and_options_agree,sparse_v_counts
(echo "== (f2) TKV_TESTS=$T test_backends opencl"
 TKV_TESTS=$T timeout 300 build/tests/test_backends opencl; echo "rc $? at ${SECONDS} s") > "$O/conformance.txt" 2>&1
grep -E "^\[ *(OK|FAILED|PASSED) |differ|rc " "$O/conformance.txt"
P="turbokv bench --backend opencl --per-token --types turbo3,turbo3o --ctx 4K,128K --layers 32 --warm-ms 300"
for v in f1 f2 f1 f2; do
  use $v
  (echo "== ($v) TURBO_OCL_KERNEL_NS=1 $P"
   TURBO_OCL_KERNEL_NS=1 timeout 80 build/tools/$P; echo "rc $? at ${SECONDS} s") >> "$O/per-token.txt" 2>&1
done
grep "^==\|^turbo\|rc " "$O/per-token.txt"
use f2
B="turbokv bench --backend opencl --types turbo3,turbo3o --ctx 4K,16K,128K --tokens 1 --seqs 1"
(echo "== (f2) TURBO_OCL_KERNEL_NS=1 TURBO_OCL_REPEAT=20 $B"
 TURBO_OCL_KERNEL_NS=1 TURBO_OCL_REPEAT=20 timeout 90 build/tools/$B; echo "rc $? at ${SECONDS} s") > "$O/bench-f2.txt" 2>&1
grep -A4 "^device time" "$O/bench-f2.txt"; grep "rc " "$O/bench-f2.txt"
cat "$O/device.txt"
