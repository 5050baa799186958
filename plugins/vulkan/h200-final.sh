#!/bin/bash
# SPDX-License-Identifier: MIT
# The Vulkan plugin's figures in plugins/vulkan/README.md (Measured), on an
# NVIDIA GPU machine in one short run: conformance against cpu, `turbokv
# bench` of every type (1 token x 1 sequence), 4 tokens and 8 sequences of
# turbo3, the chunk-size variants, and the same bench of an older build (OLD,
# a build directory; skipped when absent). Run from the repository root
# after `. .gpurt/enter.sh`; writes into OUT (default ./vk-out).
set -u
out=${OUT:-vk-out}
mkdir -p "$out"
root=$(cd "$(dirname "$0")/../.." && pwd)
build=$root/${BUILD:-build}
old=${OLD:-$root/old}
tk=$build/tools/turbokv
export TURBO_PLUGIN_PATH=$build/plugins/cpu:$build/plugins/vulkan
nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv,noheader | tee "$out/gpu.txt"
timeout 40 "$build/tests/test_backends" vulkan > "$out/conformance.txt" 2>&1
echo "conformance vulkan: exit $?" | tee -a "$out/gpu.txt"
grep "vs cpu" "$out/conformance.txt" | tee -a "$out/gpu.txt"
run() { # name, timeout, bench arguments
    local name=$1 limit=$2
    shift 2
    echo "== $name: $*" >> "$out/bench.txt"
    timeout "$limit" "$tk" bench --backend vulkan "$@" >> "$out/bench.txt" 2>> "$out/bench.log"
    echo "$name: exit $?" | tee -a "$out/gpu.txt"
}
run types 45 --ctx 4K,16K,128K --types turbo2,turbo3,turbo4,q8_0 --tokens 1 --seqs 1
run tokens4 20 --ctx 4K,16K,128K --types turbo3 --tokens 4 --seqs 1
run seqs8 25 --ctx 16K,128K --types turbo3 --tokens 1 --seqs 8
for c in 128 256; do
    TURBO_VK_MIN_CHUNK=$c run "min_chunk$c" 12 --ctx 4K,16K --types turbo3 --tokens 1 --seqs 1
done
TURBO_VK_WG_PER_CU=4 run wg4 12 --ctx 16K,128K --types turbo3 --tokens 1 --seqs 1
if [ -x "$old/tools/turbokv" ]; then
    echo "== old build" >> "$out/bench.txt"
    TURBO_PLUGIN_PATH=$old/plugins/cpu:$old/plugins/vulkan timeout 25 "$old/tools/turbokv" bench --backend vulkan \
        --ctx 4K,16K,128K --types turbo3 --tokens 1 --seqs 1 >> "$out/bench.txt" 2>> "$out/bench.log"
    echo "old: exit $?" | tee -a "$out/gpu.txt"
fi
cat "$out/bench.txt"
