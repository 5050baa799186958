#!/bin/bash
# SPDX-License-Identifier: MIT
# Session 32, run 4 (run3.sh cut to the device time left): the landed
# decode_tc's conformance on NVIDIA (TURBO_VK_TC=1: every test_backends
# test of the vulkan backend, test_host_vulkan), then at 128K one
# workgroup an SM (TURBO_VK_WORKGROUPS=528: 132 for decode.comp) against
# the default (2 an SM by registers) for turbo3o's decode.comp (197
# registers, 24,424 bytes of shared memory by decode_shared_bytes) and for
# decode_tc: where the two time alike, the SM ran one at a time.
set -u
R=$PWD
O=${OUT:-/tmp/out}
mkdir -p "$O"
export TKV_DEFAULT_CONFIG=$R/etc/turbokv.yaml TKV_MODELS_DIR=$R/models
export TURBO_PLUGIN_PATH=$R/build/plugins/cpu:$R/build/plugins/vulkan
nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv,noheader > "$O/device.txt" 2>&1
{ echo "== TURBO_VK_TC=1 test_backends vulkan"
  TURBO_VK_TC=1 timeout 100 build/tests/test_backends vulkan 2>&1 | grep -E "PASSED|FAILED|ERROR|worst|relative|differ"
  echo "== TURBO_VK_TC=1 test_host_vulkan"
  TURBO_VK_TC=1 timeout 40 build/tests/test_host_vulkan 2>&1 | grep -E "PASSED|FAILED|ERROR"; } > "$O/check.txt" 2>&1
W="build/tools/turbokv bench --backend vulkan --ctx 128K --tokens 1 --seqs 1 --warm-ms 300"
for w in 528 default; do
  for c in "turbo3o 0" "turbo3 1"; do
    set -- $c
    [ $SECONDS -lt 140 ] || break 2
    echo "== $1 TURBO_VK_TC=$2 TURBO_VK_WORKGROUPS=$w" >> "$O/wgs.txt"
    if [ $w = default ]; then e=; else e=TURBO_VK_WORKGROUPS=$w; fi
    env $e TURBO_VK_TC=$2 timeout 30 $W --types $1 2>&1 | grep -A2 "^device time" | grep -E "^turbo" >> "$O/wgs.txt"
  done
done
cat "$O/check.txt" "$O/wgs.txt" "$O/device.txt"
