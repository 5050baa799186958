#!/bin/bash
# SPDX-License-Identifier: MIT
# The Vulkan plugin's figures in plugins/vulkan/README.md (Measured), on an
# NVIDIA GPU machine in one short run: conformance against cpu, `turbokv
# bench` of turbo3 (with the f16 and f32 baselines) in its three shapes (1
# token x 1 sequence, 4 x 1, 1 x 8), and the same bench of an older build
# (OLD, a build directory; skipped when absent). Run from the repository
# root after `. .gpurt/enter.sh`; writes into OUT (default ./vk-out).
set -u
out=${OUT:-vk-out}
mkdir -p "$out"
root=$(cd "$(dirname "$0")/../.." && pwd)
build=$root/${BUILD:-build}
old=${OLD:-$root/old}
export TURBO_PLUGIN_PATH=$build/plugins/cpu:$build/plugins/vulkan
nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv,noheader | tee "$out/gpu.txt"
timeout 30 "$build/tests/test_backends" vulkan > "$out/conformance.txt" 2>&1
echo "conformance vulkan: exit $?" | tee -a "$out/gpu.txt"
grep "vs cpu" "$out/conformance.txt" | tee -a "$out/gpu.txt"
timeout 60 "$build/tools/turbokv" bench --backend vulkan --ctx "${CTX:-4K,16K,128K}" --types turbo3 \
    > "$out/bench.txt" 2> "$out/bench.log"
echo "bench: exit $?" | tee -a "$out/gpu.txt"
if [ -x "$old/tools/turbokv" ]; then
    TURBO_PLUGIN_PATH=$old/plugins/cpu:$old/plugins/vulkan timeout 25 "$old/tools/turbokv" bench --backend vulkan \
        --ctx "${CTX:-4K,16K,128K}" --types turbo3 --tokens 1 --seqs 1 > "$out/bench-old.txt" 2> "$out/bench-old.log"
    echo "old: exit $?" | tee -a "$out/gpu.txt"
fi
cat "$out/bench.txt" "$out/bench-old.txt"
