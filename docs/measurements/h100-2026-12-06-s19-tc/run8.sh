#!/bin/bash
# SPDX-License-Identifier: MIT
# Session 19, run 8: tc_rotate (the WHT with each work-item's signs loaded
# once) in place of rotate_rows_local in the tensor kernels: the paged
# conformance test (its 32-row-block case runs the tensor kernels,
# TURBO_OCL_TENSOR=1 also for the short calls) and the 1x1 bench points.
set -u
R=$PWD
O=${OUT:-/tmp/out}
W=$(mktemp -d)
export TKV_DEFAULT_CONFIG=$R/etc/turbokv.yaml TKV_MODELS_DIR=$R/models
export TURBO_PLUGIN_PATH=$R/build/plugins/cpu:$R/build/plugins/opencl
(echo "== TURBO_OCL_TENSOR=1 test_backends opencl (paged_and_options_agree,sparse_v_counts)"
 TKV_TESTS=paged_and_options_agree,sparse_v_counts TURBO_OCL_TENSOR=1 timeout 100 build/tests/test_backends opencl; echo "rc $? at ${SECONDS} s") > "$W/conformance.txt" 2>&1
(echo "== TURBO_OCL_TENSOR=1 TURBO_OCL_KERNEL_NS=1 TURBO_OCL_REPEAT=20 turbokv bench --backend opencl --types turbo3 --ctx 4K,16K,128K --tokens 1 --seqs 1"
 TURBO_LOG=debug TURBO_OCL_TENSOR=1 TURBO_OCL_KERNEL_NS=1 TURBO_OCL_REPEAT=20 timeout 60 build/tools/turbokv bench --backend opencl --types turbo3 \
   --ctx 4K,16K,128K --tokens 1 --seqs 1 2>&1 | grep -v "debug: call \|debug: plugin opencl (\|debug: plugin /"; echo "rc $? at ${SECONDS} s") > "$W/bench.txt" 2>&1
tar czf "$O/run8.tgz" -C "$W" .
grep -v "^ *$\|warning generated" "$W/conformance.txt" | tail -8
grep -A3 "^device time" "$W/bench.txt"
grep "tensor-core attention," "$W/bench.txt" | sed 's/^.*opencl: //' | awk -F': ' '{last[$1]=$0} END {for (k in last) print last[k]}'
