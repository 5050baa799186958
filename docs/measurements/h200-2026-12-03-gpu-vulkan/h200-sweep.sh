#!/bin/bash
# SPDX-License-Identifier: MIT
# The Vulkan plugin's figures on an NVIDIA GPU machine (plugins/vulkan/README.md,
# Measured), in one run: conformance against cpu, `turbokv bench` of every
# type and shape, the same bench of an older build (OLD, a build directory;
# skipped when absent), tuning variants of turbo3 picked by the plugin's
# TURBO_VK_* variables, and PyTorch's f16 SDPA. Run from the repository
# root after `. .gpurt/enter.sh`; writes into OUT (default ./vk-out).
set -u
out=${OUT:-vk-out}
mkdir -p "$out"
root=$(cd "$(dirname "$0")/../.." && pwd)
build=$root/${BUILD:-build}
old=${OLD:-$root/old}
paths() { echo "$1/plugins/cpu:$1/plugins/vulkan"; }
export TURBO_PLUGIN_PATH=$(paths "$build")
nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv,noheader | tee "$out/gpu.txt"
timeout 120 "$build/tests/test_backends" vulkan > "$out/conformance.txt" 2>&1
echo "conformance vulkan: exit $?" | tee -a "$out/gpu.txt"
grep "vs cpu" "$out/conformance.txt" | tee -a "$out/gpu.txt"

# every type, the three shapes (1 token x 1 sequence, 4 x 1, 1 x 8)
timeout 180 "$build/tools/turbokv" bench --backend vulkan --ctx "${CTX:-4K,16K,64K,128K}" \
    --types turbo2,turbo3,turbo4,q8_0 > "$out/bench.txt" 2> "$out/bench.log"
echo "bench: exit $?" | tee -a "$out/gpu.txt"
cat "$out/bench.txt"

timeout 90 python3 "$root/scripts/sdpa-baseline.py" --ctx 4096,16384,65536,131072 > "$out/sdpa.txt" 2>&1
cat "$out/sdpa.txt"

# tuning variants of turbo3 (1 x 1 and 1 x 8): name=variables
{
    for v in "wg4=TURBO_VK_WG_PER_CU=4" "wg16=TURBO_VK_WG_PER_CU=16" "chunk32=TURBO_VK_MIN_CHUNK=32" \
             "chunk256=TURBO_VK_MIN_CHUNK=256" "direct=TURBO_VK_DIRECT_INPUTS=1"; do
        echo "== variant ${v%%=*}: ${v#*=}"
        env "${v#*=}" timeout 30 "$build/tools/turbokv" bench --backend vulkan --ctx 4K,16K,128K \
            --types turbo3 --tokens 1 --seqs 1 2>/dev/null | sed -n '/device time/,/linear/p'
        env "${v#*=}" timeout 30 "$build/tools/turbokv" bench --backend vulkan --ctx 16K,128K \
            --types turbo3 --tokens 1 --seqs 8 2>/dev/null | sed -n '/device time/,/linear/p'
    done
} > "$out/variants.txt" 2>&1
cat "$out/variants.txt"

if [ -x "$old/tools/turbokv" ]; then
    TURBO_PLUGIN_PATH=$(paths "$old") timeout 100 "$old/tools/turbokv" bench --backend vulkan \
        --ctx 4K,16K,64K,128K --types turbo3 > "$out/bench-old.txt" 2> "$out/bench-old.log"
    echo "old bench: exit $?" | tee -a "$out/gpu.txt"
    cat "$out/bench-old.txt"
fi
