#!/bin/bash
# SPDX-License-Identifier: MIT
# Session 20: the OpenCL plugin's tensor-core attention as one launch
# (kernels/tensor.cl tc_decode_QC) against session 19's two launches
# (tc_partial_QC + tc_merge, the plugin built from ad79817 into build/old;
# from run 4 on, build/old holds the plugin named in the folder's README).
# Run from the worktree copy after `. .gpurt/enter.sh`, with build/core,
# build/tools, build/plugins/{cpu,opencl}, build/tests/test_backends and
# build/old carried; writes into $OUT/run.tgz:
#   device.txt       the GPU;
#   build.txt        NVIDIA's compiler on the tensor program (-cl-nv-verbose:
#                    registers, spills), the PTX it made (prog.tensor);
#   conformance.txt  test_backends opencl ($TESTS) against the cpu reference;
#   bench-new.txt    turbokv bench turbo3 4K / 16K / 128K, three shapes;
#   mutant.txt       test_backends opencl ($MTESTS) with build/mut, where carried;
#   bench-old.txt    the same with ${OLD_DIR:-build/old} ($OLD_ARGS: 1 token x 1 seq);
#   sdpa.txt         PyTorch's f16 SDPA at the same contexts.
set -u
R=$PWD
O=${OUT:-/tmp/out}
W=$(mktemp -d)
export TKV_DEFAULT_CONFIG=$R/etc/turbokv.yaml TKV_MODELS_DIR=$R/models
# (turbokv run from the build tree takes the build's plugins first: the
# old plugin is copied over the new one for its run, then put back)
P=$R/build/plugins/cpu:$R/build/plugins/opencl
cp build/plugins/opencl/turbokv-opencl.so "$W/new.so"
nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv,noheader > "$W/device.txt" 2>&1
B="turbokv bench --backend opencl --types turbo3 --ctx ${CTX:=4K,16K,128K}"
(echo "== TURBO_OCL_CL_OPTIONS=-cl-nv-verbose TURBO_OCL_BUILD_LOG=1 $B --tokens 1 --seqs 1 (4K)"
 TURBO_PLUGIN_PATH=$P TURBO_OCL_CL_OPTIONS=-cl-nv-verbose TURBO_OCL_BUILD_LOG=1 TURBO_OCL_DUMP_BINARY=$W/prog \
   timeout 100 build/tools/turbokv bench --backend opencl --types turbo3 --ctx 4K --tokens 1 --seqs 1; echo "rc $? at ${SECONDS} s") > "$W/build.txt" 2>&1
rm -f "$W"/prog.k* "$W/prog"
(echo "== test_backends opencl (${TESTS:=attention_agrees,paged_and_options_agree,sparse_v_counts})"
 TURBO_PLUGIN_PATH=$P TKV_TESTS=$TESTS timeout 300 build/tests/test_backends opencl; echo "rc $? at ${SECONDS} s") > "$W/conformance.txt" 2>&1
# a mutant (build/mut, where carried) against the sparse-V skip-count test
if [ -f build/mut/turbokv-opencl.so ]; then
  (echo "== mutant build/mut: test_backends opencl (${MTESTS:=sparse_v_counts})"
   TURBO_PLUGIN_PATH=$R/build/plugins/cpu:$R/build/mut TKV_TESTS=$MTESTS timeout 200 build/tests/test_backends opencl; echo "rc $? at ${SECONDS} s") > "$W/mutant.txt" 2>&1
fi
for v in ${BENCH:-new old}; do
  if [ $v = new ]; then A=${NEW_ARGS:-}; else A=${OLD_ARGS:---tokens 1 --seqs 1}; cp ${OLD_DIR:-build/old}/turbokv-opencl.so build/plugins/opencl/; fi
  (echo "== ($v) TURBO_OCL_KERNEL_NS=1 TURBO_OCL_REPEAT=20 $B $A"
   TURBO_PLUGIN_PATH=$P TURBO_LOG=debug TURBO_OCL_KERNEL_NS=1 TURBO_OCL_REPEAT=20 timeout 200 build/tools/$B $A 2>&1 |
     grep -v "debug: call \|debug: plugin opencl (\|debug: plugin /"; echo "rc $? at ${SECONDS} s") > "$W/bench-$v.txt" 2>&1
done
cp "$W/new.so" build/plugins/opencl/turbokv-opencl.so; rm "$W/new.so"
(echo "== python3 scripts/sdpa-baseline.py --ctx 4096,16384,131072"
 timeout 120 python3 scripts/sdpa-baseline.py --ctx 4096,16384,131072; echo "rc $?") > "$W/sdpa.txt" 2>&1
tar czf "$O/run.tgz" -C "$W" .
grep -B1 -A3 "tc_decode\|tc_partial" "$W/build.txt" | grep -i "used\|spill\|entry" | head -12
grep -v "^ *$\|warning generated" "$W/conformance.txt" | tail -8
[ -f "$W/mutant.txt" ] && grep -v "^ *$\|warning generated" "$W/mutant.txt" | tail -6
for v in ${BENCH:-new old}; do head -1 "$W/bench-$v.txt"; grep -A4 "^device time" "$W/bench-$v.txt"; grep "V rows skipped" -A1 "$W/bench-$v.txt"
  grep "tensor-core attention," "$W/bench-$v.txt" | sed 's/^.*opencl: //' | awk -F': ' '{last[$1]=$0} END {for (k in last) print last[k]}'; done
tail -4 "$W/sdpa.txt"
