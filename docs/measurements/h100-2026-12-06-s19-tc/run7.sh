#!/bin/bash
# SPDX-License-Identifier: MIT
# Session 19, run 7: the final tree (tensor kernels without the emulation,
# TURBO_OCL_TENSOR unset = the calls where they are faster): conformance
# with the default choice, sparse V counted by the tensor kernels
# (TURBO_OCL_TENSOR=1: sparse_v_counts' one short call would take the float
# kernels), the mutant (build/mut: rows g + 8 of a tile scored with row g's
# scale) failing, and the bench's 1x1 points with the default choice.
set -u
R=$PWD
O=${OUT:-/tmp/out}
W=$(mktemp -d)
export TKV_DEFAULT_CONFIG=$R/etc/turbokv.yaml TKV_MODELS_DIR=$R/models
P=$R/build/plugins/cpu:$R/build/plugins/opencl
(echo "== test_backends opencl (attention_agrees,paged_and_options_agree,sparse_v_counts)"
 TKV_TESTS=attention_agrees,paged_and_options_agree,sparse_v_counts TURBO_PLUGIN_PATH=$P timeout 250 build/tests/test_backends opencl; echo "rc $? at ${SECONDS} s"
 echo "== TURBO_OCL_TENSOR=1 test_backends opencl (sparse_v_counts)"
 TKV_TESTS=sparse_v_counts TURBO_OCL_TENSOR=1 TURBO_PLUGIN_PATH=$P timeout 100 build/tests/test_backends opencl; echo "rc $? at ${SECONDS} s"
 echo "== mutant: test_backends opencl (attention_agrees,paged_and_options_agree), must fail"
 TKV_TESTS=attention_agrees,paged_and_options_agree TURBO_PLUGIN_PATH=$R/build/plugins/cpu:$R/build/mut timeout 200 build/tests/test_backends opencl; echo "rc $? at ${SECONDS} s"
) > "$W/conformance.txt" 2>&1
(echo "== TURBO_OCL_KERNEL_NS=1 TURBO_OCL_REPEAT=20 turbokv bench --backend opencl --types turbo3 --ctx 4K,8K,16K,128K --tokens 1 --seqs 1"
 TURBO_PLUGIN_PATH=$P TURBO_OCL_KERNEL_NS=1 TURBO_OCL_REPEAT=20 timeout 100 build/tools/turbokv bench --backend opencl --types turbo3 \
   --ctx 4K,8K,16K,128K --tokens 1 --seqs 1; echo "rc $? at ${SECONDS} s") > "$W/bench.txt" 2>&1
tar czf "$O/run7.tgz" -C "$W" .
grep -v "^ *$\|warning generated\|^bench:" "$W/conformance.txt" | grep -v "^\[ *\(RUN\|OK\) *\]" | tail -30
grep -A3 "^device time" "$W/bench.txt"
