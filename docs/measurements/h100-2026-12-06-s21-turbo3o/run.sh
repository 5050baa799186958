#!/bin/bash
# SPDX-License-Identifier: MIT
# Session 21: turbo3o (what `auto` stores at head_dim 64-128) on the OpenCL
# plugin's tensor cores (kernels/tensor.cl tc_decode_o8) against its float
# kernels (TURBO_OCL_TENSOR=0, the path turbo3o took before), in one run.
# Run from the worktree copy after `. .gpurt/enter.sh`, with build/core,
# build/tools, build/plugins/{cpu,opencl} and build/tests/test_backends
# carried; writes into $OUT/run.tgz:
#   device.txt       the GPU;
#   build.txt        NVIDIA's compiler on the tensor program (-cl-nv-verbose:
#                    registers, spills);
#   conformance.txt  test_backends opencl ($TESTS) against the cpu reference;
#   conformance-tiles.txt  with TURBO_OCL_MIN_TILES=$MINT ($TESTS2), where set;
#   mutant-N.txt     test_backends opencl ($MTESTS) with each build/muts/mutN
#                    carried (a plugin with one part of tc_decode_o8 left out);
#   bench-tc.txt     turbokv bench turbo3,turbo3o at $CTX, 1 token x 1 sequence
#                    ($ARGS), the tensor-core kernels;
#   bench-float.txt  the same types with TURBO_OCL_TENSOR=0 (float kernels);
#   sdpa.txt         PyTorch's f16 SDPA at the same contexts.
set -u
R=$PWD
O=${OUT:-/tmp/out}
W=$(mktemp -d)
export TKV_DEFAULT_CONFIG=$R/etc/turbokv.yaml TKV_MODELS_DIR=$R/models
export TURBO_PLUGIN_PATH=$R/build/plugins/cpu:$R/build/plugins/opencl
nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv,noheader > "$W/device.txt" 2>&1
: "${CTX:=4K,16K,128K}" "${ARGS:=--tokens 1 --seqs 1}" "${TYPES:=turbo3,turbo3o}"
B="turbokv bench --backend opencl --types $TYPES --ctx $CTX $ARGS"
(echo "== TURBO_OCL_CL_OPTIONS=-cl-nv-verbose TURBO_OCL_BUILD_LOG=1 turbokv bench --backend opencl --types turbo3o --ctx 4K --tokens 1 --seqs 1"
 TURBO_OCL_CL_OPTIONS=-cl-nv-verbose TURBO_OCL_BUILD_LOG=1 \
   timeout 100 build/tools/turbokv bench --backend opencl --types turbo3o --ctx 4K --tokens 1 --seqs 1; echo "rc $? at ${SECONDS} s") > "$W/build.txt" 2>&1
if [ "${TESTS:=attention_agrees,paged_and_options_agree,sparse_v_counts}" != none ]; then
  (echo "== test_backends opencl ($TESTS)"
   TKV_TESTS=$TESTS timeout 330 build/tests/test_backends opencl; echo "rc $? at ${SECONDS} s") > "$W/conformance.txt" 2>&1
fi
# the same with several tiles a warp at these small contexts (their
# running maxes move within a warp's walk)
if [ -n "${MINT:-}" ]; then
  (echo "== TURBO_OCL_MIN_TILES=$MINT test_backends opencl (${TESTS2:=attention_agrees,paged_and_options_agree})"
   TURBO_OCL_MIN_TILES=$MINT TKV_TESTS=$TESTS2 timeout 300 build/tests/test_backends opencl; echo "rc $? at ${SECONDS} s") > "$W/conformance-tiles.txt" 2>&1
fi
for m in build/muts/mut*/; do
  [ -f "$m/turbokv-opencl.so" ] || continue
  n=$(basename "$m")
  (echo "== mutant $m: ${MINT:+TURBO_OCL_MIN_TILES=$MINT }test_backends opencl (${MTESTS:=paged_and_options_agree})"
   TURBO_OCL_MIN_TILES=${MINT:-} TURBO_PLUGIN_PATH=$R/build/plugins/cpu:$R/$m TKV_TESTS=$MTESTS timeout 150 build/tests/test_backends opencl; echo "rc $? at ${SECONDS} s") > "$W/mutant-$n.txt" 2>&1
done
for v in ${BENCH:-tc float}; do
  [ $v = none ] && continue
  if [ $v = tc ]; then E=; else E="TURBO_OCL_TENSOR=0"; fi
  (echo "== ($v) $E TURBO_OCL_KERNEL_NS=1 TURBO_OCL_REPEAT=20 $B"
   env $E TURBO_LOG=debug TURBO_OCL_KERNEL_NS=1 TURBO_OCL_REPEAT=20 timeout 200 build/tools/$B 2>&1 |
     grep -v "debug: call \|debug: plugin opencl (\|debug: plugin /"; echo "rc $? at ${SECONDS} s") > "$W/bench-$v.txt" 2>&1
done
[ "${SDPA:-1}" = 1 ] && (echo "== python3 scripts/sdpa-baseline.py --ctx 4096,16384,131072"
 timeout 120 python3 scripts/sdpa-baseline.py --ctx 4096,16384,131072; echo "rc $?") > "$W/sdpa.txt" 2>&1
tar czf "$O/run.tgz" -C "$W" .
cat "$W/device.txt"
grep -B1 -A3 "tc_decode" "$W/build.txt" | grep -i "used\|spill\|entry\|error" | head -12
[ -f "$W/conformance.txt" ] && grep -v "^ *$\|warning generated" "$W/conformance.txt" | tail -10
[ -f "$W/conformance-tiles.txt" ] && grep -v "^ *$\|warning generated" "$W/conformance-tiles.txt" | tail -6
for f in "$W"/mutant-*.txt; do [ -f "$f" ] && head -1 "$f" && grep -i "error\|fail\|rc " "$f" | tail -3; done
for v in ${BENCH:-tc float}; do [ $v = none ] && continue; head -1 "$W/bench-$v.txt"; grep -A5 "^device time" "$W/bench-$v.txt"; grep "V rows skipped" -A2 "$W/bench-$v.txt"
  grep "tensor-core attention," "$W/bench-$v.txt" | sed 's/^.*opencl: //' | awk -F': ' '{last[$1]=$0} END {for (k in last) print last[k]}'; grep -i "error\|rc " "$W/bench-$v.txt" | tail -3; done
[ -f "$W/sdpa.txt" ] && tail -4 "$W/sdpa.txt"
