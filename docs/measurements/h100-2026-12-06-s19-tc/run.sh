#!/bin/bash
# SPDX-License-Identifier: MIT
# Session 19: the OpenCL plugin's tensor-core kernels (kernels/tensor.cl) on
# an NVIDIA GPU. Run from the worktree copy after `. .gpurt/enter.sh`, with
# build/ carried (core, tools, plugins/cpu, plugins/opencl,
# tests/test_backends); writes into $OUT:
#   conformance.txt  test_backends opencl against the cpu reference (the
#                    attention tests; turbo3 at head_dim 128 takes the
#                    tensor cores, the rest the float kernels);
#   bench.txt        turbokv bench turbo3 at 4K / 16K / 128K, the three
#                    shapes, TURBO_OCL_TENSOR=0 (float kernels) then the
#                    default (tensor cores), kernel times at full clock, and
#                    the two tensor kernels' times apart (debug log);
#   sdpa.txt         PyTorch's f16 SDPA at the same contexts.
set -u
R=$PWD
O=${OUT:-/tmp/out}
W=$(mktemp -d)
export TKV_DEFAULT_CONFIG=$R/etc/turbokv.yaml TKV_MODELS_DIR=$R/models
export TURBO_PLUGIN_PATH=$R/build/plugins/cpu:$R/build/plugins/opencl
nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv,noheader > "$W/device.txt" 2>&1
(echo "== test_backends opencl (${TESTS:=attention_agrees,split_attention_rotations,paged_and_options_agree,sparse_v_counts})"
 TKV_TESTS=$TESTS TURBO_LOG=${LOG:-info} timeout 300 build/tests/test_backends opencl; echo "rc $? at ${SECONDS} s") > "$W/conformance.txt" 2>&1
for t in 0 1; do
  (echo "== TURBO_OCL_TENSOR=$t TURBO_OCL_KERNEL_NS=1 TURBO_OCL_REPEAT=20 turbokv bench --backend opencl --types turbo3 --ctx ${CTX:=4K,16K,128K}"
   TURBO_LOG=debug TURBO_OCL_TENSOR=$t TURBO_OCL_KERNEL_NS=1 TURBO_OCL_REPEAT=20 timeout 200 build/tools/turbokv bench --backend opencl \
     --types turbo3 --ctx "$CTX"; echo "rc $? at ${SECONDS} s") >> "$W/bench.txt" 2>&1
done
(echo "== python3 scripts/sdpa-baseline.py --ctx 4096,16384,131072"
 timeout 120 python3 scripts/sdpa-baseline.py --ctx 4096,16384,131072; echo "rc $?") > "$W/sdpa.txt" 2>&1
tar czf "$O/s19.tgz" -C "$W" .
tail -30 "$W/conformance.txt"; grep -v "^bench:\|^\[debug\]" "$W/bench.txt" | grep -A9 "^== \|1 query token x 1 seq\|4 query tokens x 1\|1 query token x 8" | grep -v "^f32\|^--"
# the tensor kernels apart: the last line of each call shape
grep "tensor-core attention," "$W/bench.txt" | sed 's/^.*opencl: //' | awk -F': ' '{last[$1]=$0} END {for (k in last) print last[k]}'
tail -4 "$W/sdpa.txt"
