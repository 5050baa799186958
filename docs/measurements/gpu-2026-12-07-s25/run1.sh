#!/bin/bash
# SPDX-License-Identifier: MIT
# Session 25, run 1. r1 = main's kernels (session 24, measured); r2 = r1
# with the append's WHT signs kept as chars in its local scratch and one
# wht_butterflies for rotate_local and rotate_rows_local (da169d5, checked
# on PoCL only). Outputs straight into $OUT, so a run cut short returns
# what it did:
# 1. conformance of r2 on NVIDIA: stored bytes of every format, attention
#    (with rotations, paged blocks and options, sparse V counts);
# 2. the per-token mode of r1 and r2 alternating (kernel device time too);
# 3. the per-token step's commands under clprof.so (this folder's, launches
#    apart by global size: the 16-row decode append vs the prefill), r2.
set -u
R=$PWD
O=${OUT:-/tmp/out}
export TKV_DEFAULT_CONFIG=$R/etc/turbokv.yaml TKV_MODELS_DIR=$R/models
export TURBO_PLUGIN_PATH=$R/build/plugins/cpu:$R/build/plugins/opencl
nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv,noheader > "$O/device.txt" 2>&1
use() { cp build/muts/$1/turbokv-opencl.so build/plugins/opencl/turbokv-opencl.so; }
use r2
T=same_bytes_every_format,attention_agrees,split_attention_rotations,paged_and_options_agree,sparse_v_counts
(echo "== (r2) TKV_TESTS=$T test_backends opencl"
 TKV_TESTS=$T timeout 300 build/tests/test_backends opencl; echo "rc $? at ${SECONDS} s") > "$O/conformance.txt" 2>&1
P="turbokv bench --backend opencl --per-token --types turbo3,turbo3o --ctx 4K,128K --layers 32 --warm-ms 300"
for v in r1 r2 r1 r2; do
  use $v
  (echo "== ($v) TURBO_OCL_KERNEL_NS=1 $P"
   TURBO_OCL_KERNEL_NS=1 timeout 60 build/tools/$P; echo "rc $? at ${SECONDS} s") >> "$O/per-token.txt" 2>&1
done
use r2
(echo "== (r2) LD_PRELOAD=clprof.so turbokv bench --backend opencl --per-token --types turbo3 --ctx 4K --layers 32"
 LD_PRELOAD=$R/build/muts/clprof.so timeout 120 build/tools/turbokv bench --backend opencl --per-token --types turbo3 --ctx 4K --layers 32; echo "rc $? at ${SECONDS} s") > "$O/prof.txt" 2>&1
cat "$O/device.txt"
grep -E "^\[ *(OK|FAILED|PASSED) |differ|rc " "$O/conformance.txt"
grep "^==\|^turbo\|rc " "$O/per-token.txt"
grep "^==\|^turbo3 \|clprof\|rc " "$O/prof.txt" | head -40
