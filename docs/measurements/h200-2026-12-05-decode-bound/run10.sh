#!/bin/bash
# SPDX-License-Identifier: MIT
# The review fixes on the H200 (pair barrier owed on failure, a barrier
# before queued copies, the shared-memory estimate, TURBO_VK_PROFILE's
# statistics): the host test, the paged test, the summation-order test, and
# one profiled call.
set -u
R=$PWD
B=$R/build
O=${OUT:-/tmp/out}
mkdir -p "$O"
export LD_LIBRARY_PATH=$B/core TKV_DEFAULT_CONFIG=$R/etc/turbokv.yaml TKV_MODELS_DIR=$R/models
export TKV_MINIMAL_PLUGIN_DIR=$B/tests/stubs/minimal TKV_BROKEN_PLUGIN_DIR=$B/tests/stubs
export TURBO_PLUGIN_PATH=$B/plugins/cpu:$B/plugins/vulkan
{ for t in "test_host_vulkan" "test_paged vulkan" "test_sum_order vulkan"; do
    echo "== build/tests/$t"; timeout 60 $B/tests/$t 2>&1 | grep -E "vs cpu|PASSED|FAILED|ERROR"
  done
  echo "== TURBO_VK_PROFILE=1 turbokv bench --backend vulkan --ctx 4096 --types turbo3o --tokens 1"
  TURBO_VK_PROFILE=1 timeout 60 $B/tools/turbokv bench --backend vulkan --ctx 4096 --types turbo3o --tokens 1 2>&1 \
      | grep -E "vkprof: pipeline|^turbo3o" | cut -c1-220
} > "$O/check.txt" 2>&1
