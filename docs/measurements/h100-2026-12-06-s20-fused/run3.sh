#!/bin/bash
# SPDX-License-Identifier: MIT
# Session 20, run 3: where the fixed cost of a tensor-core call goes, by
# plugins built with parts of kernels/tensor.cl left out (build/abl/vN,
# carried; each copied over build/plugins/opencl for its bench, since
# turbokv run from the build tree takes the build's plugins first):
#   v0  the kernel of run 2 (b9772aa)
#   v5  v0 with the merge's loads eight chunks at a time (this tree)
#   v1  v5 without tiles (end = begin): preparation, combine, record, count, merge
#   v2  v1 without the merge
#   v3  v5 returning after the preparation (the tables and query fragments)
#   v4  v5 returning at once (the launch, the unit's description read)
# then test_backends opencl ($TESTS) on v5. Writes $OUT/run3.tgz.
set -u
R=$PWD
O=${OUT:-/tmp/out}
W=$(mktemp -d)
export TKV_DEFAULT_CONFIG=$R/etc/turbokv.yaml TKV_MODELS_DIR=$R/models
export TURBO_PLUGIN_PATH=$R/build/plugins/cpu:$R/build/plugins/opencl
nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv,noheader > "$W/device.txt" 2>&1
for v in ${VARIANTS:-v0 v5 v1 v2 v3 v4}; do
  cp build/abl/$v/turbokv-opencl.so build/plugins/opencl/
  (echo "== ($v) TURBO_OCL_KERNEL_NS=1 TURBO_OCL_REPEAT=20 turbokv bench --backend opencl --types turbo3 --ctx ${CTX:=1K,4K,16K} --tokens 1 --seqs 1"
   TURBO_LOG=debug TURBO_OCL_KERNEL_NS=1 TURBO_OCL_REPEAT=20 timeout 100 build/tools/turbokv bench --backend opencl \
     --types turbo3 --ctx "$CTX" --tokens 1 --seqs 1 2>&1 | grep -v "debug: call \|debug: plugin opencl (\|debug: plugin /"
   echo "rc $? at ${SECONDS} s") > "$W/abl-$v.txt" 2>&1
done
cp build/abl/v5/turbokv-opencl.so build/plugins/opencl/
(echo "== test_backends opencl (${TESTS:=attention_agrees,paged_and_options_agree,sparse_v_counts})"
 TKV_TESTS=$TESTS timeout 300 build/tests/test_backends opencl; echo "rc $? at ${SECONDS} s") > "$W/conformance.txt" 2>&1
tar czf "$O/run3.tgz" -C "$W" .
for v in ${VARIANTS:-v0 v5 v1 v2 v3 v4}; do echo "== $v"; grep "^turbo3" "$W/abl-$v.txt" | tail -1
  grep "tensor-core attention," "$W/abl-$v.txt" | sed 's/^.*opencl: //' | awk -F': ' '{last[$1]=$0} END {for (k in last) print last[k]}'; done
grep -v "^ *$\|warning generated" "$W/conformance.txt" | tail -9
