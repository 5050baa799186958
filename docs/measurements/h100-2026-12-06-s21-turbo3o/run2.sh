#!/bin/bash
# SPDX-License-Identifier: MIT
# Session 21, where turbo3o's tensor-core time goes: turbokv bench turbo3o
# (1 token x 1 sequence) with the plugin as built (new) and with each
# build/muts/mutN (mut1: V's outliers left out, mut2: the scores' outliers
# left out, mut3: the outlier sums' rescaling left out), copied over
# build/plugins/opencl for its run (turbokv takes the build's plugins
# first), then PyTorch's f16 SDPA; into $OUT/run.tgz.
set -u
R=$PWD
O=${OUT:-/tmp/out}
W=$(mktemp -d)
export TKV_DEFAULT_CONFIG=$R/etc/turbokv.yaml TKV_MODELS_DIR=$R/models
export TURBO_PLUGIN_PATH=$R/build/plugins/cpu:$R/build/plugins/opencl
nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv,noheader > "$W/device.txt" 2>&1
cp build/plugins/opencl/turbokv-opencl.so "$W/new.so"
B="turbokv bench --backend opencl --types ${TYPES:-turbo3,turbo3o} --ctx ${CTX:-4K,16K,128K} --tokens 1 --seqs 1"
for v in new mut1 mut2 mut3; do
  [ $v = new ] && cp "$W/new.so" build/plugins/opencl/turbokv-opencl.so || cp build/muts/$v/turbokv-opencl.so build/plugins/opencl/
  (echo "== ($v) TURBO_OCL_KERNEL_NS=1 TURBO_OCL_REPEAT=20 $B"
   TURBO_OCL_KERNEL_NS=1 TURBO_OCL_REPEAT=20 timeout 150 build/tools/$B; echo "rc $? at ${SECONDS} s") > "$W/bench-$v.txt" 2>&1
done
cp "$W/new.so" build/plugins/opencl/turbokv-opencl.so; rm "$W/new.so"
(echo "== python3 scripts/sdpa-baseline.py --ctx 4096,16384,131072"
 timeout 120 python3 scripts/sdpa-baseline.py --ctx 4096,16384,131072; echo "rc $?") > "$W/sdpa.txt" 2>&1
tar czf "$O/run.tgz" -C "$W" .
cat "$W/device.txt"
for v in new mut1 mut2 mut3; do head -1 "$W/bench-$v.txt"; grep -A3 "^device time" "$W/bench-$v.txt" | tail -2; done
tail -4 "$W/sdpa.txt"
