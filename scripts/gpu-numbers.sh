#!/bin/bash
# SPDX-License-Identifier: MIT
# Takes the GPU numbers of the README on an NVIDIA machine, from a build made
# elsewhere: . .gpurt/enter.sh must have brought the Vulkan and OpenCL
# loaders (shared/gpu/fetch-runtime.sh). Writes JSON files into OUT (default
# ./gpu-out): conformance of each GPU plugin against cpu (Vulkan also with
# TURBO_VK_TC=1), `turbokv bench` per
# GPU backend, and PyTorch's f16 scaled_dot_product_attention in the same
# run as the baseline.
set -u
out=${OUT:-gpu-out}
mkdir -p "$out"
root=$(cd "$(dirname "$0")/.." && pwd)
build=$root/${BUILD:-build}
export TURBO_PLUGIN_PATH=$build/plugins/cpu:$build/plugins/vulkan:$build/plugins/opencl
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$out/gpu.txt"
"$build/tools/turbokv" info --json > "$out/info.json"
for b in vulkan opencl; do
    timeout 150 "$build/tests/test_backends" "$b" > "$out/conformance-$b.txt" 2>&1
    echo "conformance $b: exit $?" | tee -a "$out/gpu.txt"
    grep "vs cpu" "$out/conformance-$b.txt"
done
# Vulkan's opt-in tensor-core attention (plugins/vulkan/README.md, "Tensor
# cores: decode_tc"): the attention tests with it taking the turbo3 calls
TURBO_VK_TC=1 TKV_TESTS=attention_agrees,paged_and_options_agree,sparse_v_counts,small_values_agree timeout 150 \
    "$build/tests/test_backends" vulkan > "$out/conformance-vulkan-tc.txt" 2>&1
echo "conformance vulkan, TURBO_VK_TC=1: exit $?" | tee -a "$out/gpu.txt"
grep "vs cpu" "$out/conformance-vulkan-tc.txt"
ctx=${CTX:-4K,16K,64K,128K}
for b in vulkan opencl; do
    timeout 240 "$build/tools/turbokv" bench --backend "$b" --ctx "$ctx" --tokens 1 --seqs 1 --warm-ms 300 \
        --types f16,q8_0,turbo2,turbo3,turbo4,turbo3o --json > "$out/bench-$b.json" 2> "$out/bench-$b.log"
    echo "bench $b: exit $?" | tee -a "$out/gpu.txt"
done
python3 "$root/scripts/sdpa-baseline.py" --ctx 4096,16384,65536,131072 --json > "$out/sdpa.json"
cat "$out/sdpa.json"
