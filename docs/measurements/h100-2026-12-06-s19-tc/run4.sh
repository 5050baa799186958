#!/bin/bash
# SPDX-License-Identifier: MIT
# Session 19, runs 4-6: (1) the conformance test must catch a broken tensor
# kernel: build/mut/turbokv-opencl.so is the plugin built with a mutation
# of kernels/tensor.cl (made by sed, then reverted; README.md says which);
# (2) work-groups per compute unit of the tensor kernels
# (TURBO_OCL_GROUPS_PER_CU), 1 query token.
set -u
R=$PWD
O=${OUT:-/tmp/out}
W=$(mktemp -d)
export TKV_DEFAULT_CONFIG=$R/etc/turbokv.yaml TKV_MODELS_DIR=$R/models
(echo "== mutated plugin: test_backends opencl (${MTESTS:=attention_agrees}), must fail"
 TKV_TESTS=$MTESTS TURBO_PLUGIN_PATH=$R/build/plugins/cpu:$R/build/mut timeout 200 build/tests/test_backends opencl; echo "rc $? at ${SECONDS} s") > "$W/mutation.txt" 2>&1
export TURBO_PLUGIN_PATH=$R/build/plugins/cpu:$R/build/plugins/opencl
for g in ${GROUPS_LIST:-2 3 4 6}; do
  (echo "== TURBO_OCL_GROUPS_PER_CU=$g TURBO_OCL_KERNEL_NS=1 TURBO_OCL_REPEAT=20 turbokv bench --backend opencl --types turbo3 --ctx 4K,16K,128K --tokens 1 --seqs 1"
   TURBO_LOG=debug TURBO_OCL_GROUPS_PER_CU=$g TURBO_OCL_KERNEL_NS=1 TURBO_OCL_REPEAT=20 timeout 100 build/tools/turbokv bench --backend opencl \
     --types turbo3 --ctx 4K,16K,128K --tokens 1 --seqs 1; echo "rc $? at ${SECONDS} s") > "$W/groups-$g.txt" 2>&1
done
tar czf "$O/run4.tgz" -C "$W" .
grep -v "^ *$\|warning generated" "$W/mutation.txt" | tail -14
for g in ${GROUPS_LIST:-2 3 4 6}; do
  echo "== groups $g"; grep -A4 "device time" "$W/groups-$g.txt" | grep "^turbo3"
  grep "tensor-core attention," "$W/groups-$g.txt" | sed 's/^.*opencl: //' | awk -F': ' '{last[$1]=$0} END {for (k in last) print last[k]}'
done
