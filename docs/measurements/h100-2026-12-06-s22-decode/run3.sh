#!/bin/bash
# SPDX-License-Identifier: MIT
# Session 22, run 3: the OpenCL plugin with queued appends reusing the
# block-table entries the previous append wrote (vI = build/plugins/opencl
# as built: vH's kernels and description reuse, plus this) on NVIDIA:
# test_host_opencl (the host's own context, every layer queued, against the
# cpu plugin), the per-token bench and its OpenCL calls under cltrace.so.
set -u
R=$PWD
O=${OUT:-/tmp/out}
W=$(mktemp -d)
export TKV_DEFAULT_CONFIG=$R/etc/turbokv.yaml TKV_MODELS_DIR=$R/models
export TURBO_PLUGIN_PATH=$R/build/plugins/cpu:$R/build/plugins/opencl
nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv,noheader > "$W/device.txt" 2>&1
(echo "== test_host_opencl"; timeout 120 build/tests/test_host_opencl; echo "rc $? at ${SECONDS} s") > "$W/host-opencl.txt" 2>&1
(echo "== turbokv bench --backend opencl --per-token --types turbo3,turbo3o --ctx 4K,128K --layers 32 --warm-ms 300"
 timeout 150 build/tools/turbokv bench --backend opencl --per-token --types turbo3,turbo3o --ctx 4K,128K --layers 32 --warm-ms 300; echo "rc $? at ${SECONDS} s") > "$W/per-token.txt" 2>&1
(echo "== CLTRACE_SEQ=1 LD_PRELOAD=cltrace.so turbokv bench --backend opencl --per-token --types turbo3 --ctx 4K --layers 32"
 CLTRACE_SEQ=1 LD_PRELOAD=$R/build/muts/cltrace.so timeout 100 build/tools/turbokv bench --backend opencl --per-token --types turbo3 --ctx 4K --layers 32; echo "rc $? at ${SECONDS} s") > "$W/trace.txt" 2>&1
grep -v "^cltrace: cl[A-Za-z]* [0-9.]*$" "$W/trace.txt" > "$W/trace-summary.txt"; gzip -f "$W/trace.txt"
tar czf "$O/run.tgz" -C "$W" .
cat "$W/device.txt"
grep -v "^ *$" "$W/host-opencl.txt" | tail -6
grep "^==\|^turbo" "$W/per-token.txt"
tail -14 "$W/trace-summary.txt"
