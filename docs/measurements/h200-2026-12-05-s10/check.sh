#!/bin/bash
# SPDX-License-Identifier: MIT
# The build with decode_wide.comp restored (merge dispatch): the compiler's
# statistics, f16 and q8_0 at 16K and 128K, and PyTorch's f16 SDPA in the
# same run. Under a minute.
set -u
R=$PWD
B=$R/build
O=${OUT:-/tmp/out}
mkdir -p "$O"
export TKV_DEFAULT_CONFIG=$R/etc/turbokv.yaml TKV_MODELS_DIR=$R/models KVB_APPEND=0 KVB_WARM_MS=300
export TURBO_PLUGIN_PATH=$B/plugins/cpu:$B/plugins/vulkan
gcc -O2 -o kvb docs/measurements/h200-2026-12-04-wide/kvb.c -Iabi -Lbuild/core -lturbokv -lm \
    -Wl,-rpath,$R/build/core || exit 1
TURBO_VK_PROFILE=1 KVB_WARM_MS=0 timeout 20 ./kvb vulkan f16,q8_0 4K 1x1 0 2 2>&1 | grep "pipeline" > "$O/check-stats.txt"
timeout 30 ./kvb vulkan f16,q8_0,turbo3 16K,128K 1x1 0 8 2>&1 | grep -v '^#' > "$O/check.txt"
timeout 25 python3 scripts/sdpa-baseline.py --ctx 4096,16384,131072 > "$O/check-sdpa.txt" 2>&1
