#!/bin/bash
# SPDX-License-Identifier: MIT
# Session 32, run 3: the tree after next-pefix-nopf.patch landed in
# tensor.glsl (decode_tc's powers of two from bits, each tile's words loaded
# as it starts). On an H200 first the set of issues 11 and 12 (session 31's
# run2.sh) into $OUT/h200/. Then, on any card: decode_tc's conformance
# (TURBO_VK_TC=1, every test_backends test of the vulkan backend, and
# test_host_vulkan), then decode.comp against decode_tc, two rounds;
# then how many workgroups an SM runs at once at 128K: one workgroup an
# SM (TURBO_VK_WORKGROUPS=528: 132 for decode.comp) against the default
# (registers: 2 an SM for turbo3o's decode.comp and for decode_tc, 3 for
# turbo3's) and 2 / 3 an SM: where one and two time alike, the SM ran one
# at a time (shared memory).
set -u
R=$PWD
O=${OUT:-/tmp/out}
mkdir -p "$O"
export TKV_DEFAULT_CONFIG=$R/etc/turbokv.yaml TKV_MODELS_DIR=$R/models
export TURBO_PLUGIN_PATH=$R/build/plugins/cpu:$R/build/plugins/vulkan
nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv,noheader > "$O/device.txt" 2>&1
if grep -q H200 "$O/device.txt"; then
  OUT=$O/h200 timeout 330 bash docs/measurements/gpu-2026-12-07-s31/run2.sh > "$O/h200.log" 2>&1
fi
{ echo "== TURBO_VK_TC=1 test_backends vulkan"
  TURBO_VK_TC=1 timeout 150 build/tests/test_backends vulkan 2>&1 | grep -E "PASSED|FAILED|ERROR|worst|relative|differ"
  echo "== TURBO_VK_TC=1 test_host_vulkan"
  TURBO_VK_TC=1 timeout 60 build/tests/test_host_vulkan 2>&1 | grep -E "PASSED|FAILED|ERROR|tensor|decode_tc"
  TURBO_VK_TC=1 TURBO_LOG=info timeout 60 build/tools/turbokv bench --backend vulkan --types turbo3 --ctx 4K \
    --tokens 1 --seqs 1 2>&1 | grep -m2 -E "tensor cores|decode_tc"; } > "$O/check.txt" 2>&1
B="build/tools/turbokv bench --backend vulkan --types turbo3 --ctx 4K,16K,128K --tokens 1 --seqs 1 --warm-ms 300"
for r in 1 2; do
  [ $SECONDS -lt 200 ] || break
  for tc in 0 1; do
    echo "== TURBO_VK_TC=$tc r$r at $SECONDS s" >> "$O/bench.txt"
    TURBO_VK_TC=$tc timeout 40 $B 2>&1 | grep -A2 "^device time" | grep -E "^turbo3" >> "$O/bench.txt"
  done
done
W="build/tools/turbokv bench --backend vulkan --ctx 128K --tokens 1 --seqs 1 --warm-ms 300"
for r in 1; do
  for w in 528 1056 1584 default; do
    for c in "turbo3o 0" "turbo3 1" "turbo3 0"; do
      set -- $c
      [ $SECONDS -lt 330 ] || break 3
      echo "== $1 TURBO_VK_TC=$2 TURBO_VK_WORKGROUPS=$w r$r" >> "$O/wgs.txt"
      if [ $w = default ]; then e=; else e=TURBO_VK_WORKGROUPS=$w; fi
      env $e TURBO_VK_TC=$2 timeout 40 $W --types $1 2>&1 | grep -A2 "^device time" | grep -E "^turbo" >> "$O/wgs.txt"
    done
  done
done
cat "$O/check.txt" "$O/bench.txt" "$O/wgs.txt" "$O/device.txt"
