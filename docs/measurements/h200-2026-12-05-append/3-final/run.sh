#!/bin/bash
# Run 3 on the H200: correctness on NVIDIA of this branch's plugin
# (build/, radix-4 WHT steps) and of its variant with one butterfly stage a
# barrier (pairs-vulkan/), then the per-token bench for the branch point's
# plugin (base-vulkan/) and both, with the append's measurement knobs.
# From the tree's root, after . .gpurt/enter.sh; results under $OUT.
B=$PWD/build
export LD_LIBRARY_PATH=$B/core
NEW=$B/plugins/cpu:$B/plugins/vulkan
PAIRS=$B/plugins/cpu:$PWD/pairs-vulkan
OLD=$B/plugins/cpu:$PWD/base-vulkan
nvidia-smi --query-gpu=timestamp,clocks.sm --format=csv -lms 250 > $OUT/clocks.txt 2>&1 &
clocks=$!
t() { local name=$1 path=$2; shift 2; echo "== $*" > $OUT/$name.txt; (time TURBO_PLUGIN_PATH=$path timeout 120 "$@") >> $OUT/$name.txt 2>&1; echo "rc $?" >> $OUT/$name.txt; }
t test_host_vulkan $NEW $B/tests/test_host_vulkan
t test_sum_order $NEW $B/tests/test_sum_order vulkan
t test_backends $NEW $B/tests/test_backends vulkan
t test_sum_order-pairs $PAIRS $B/tests/test_sum_order vulkan
t test_backends-pairs $PAIRS $B/tests/test_backends vulkan
bench() {
    local name=$1 ctx=$2 types=$3; shift 3
    echo "== $name: $* turbokv bench --per-token --backend vulkan --ctx $ctx --layers 32 --warm-ms 300 --types $types" >> $OUT/bench.txt
    date +%T.%N >> $OUT/bench.txt
    env "$@" timeout 100 $B/tools/turbokv bench --per-token --backend vulkan --ctx $ctx --layers 32 --warm-ms 300 \
        --types $types >> $OUT/bench.txt 2>&1
}
ALL=f16,q8_0,turbo3,turbo3o,turbo4
bench base 4K $ALL TURBO_PLUGIN_PATH=$OLD
bench new 4K $ALL TURBO_PLUGIN_PATH=$NEW
bench pairs 4K $ALL TURBO_PLUGIN_PATH=$PAIRS
bench new-full-barriers 4K f16,turbo3 TURBO_PLUGIN_PATH=$NEW TURBO_VK_APPEND_RECORD=full
bench new-nobarrier 4K f16,turbo3,turbo3o TURBO_PLUGIN_PATH=$NEW TURBO_VK_APPEND_RECORD=nobarrier
for s in 1 2 3 4 5 6; do
    bench new-stop$s 4K turbo3 TURBO_PLUGIN_PATH=$NEW TURBO_VK_QUANTIZE_STOP=$s
done
bench pairs-stop4 4K turbo3 TURBO_PLUGIN_PATH=$PAIRS TURBO_VK_QUANTIZE_STOP=4
bench base-again 4K $ALL TURBO_PLUGIN_PATH=$OLD
bench new-again 4K $ALL TURBO_PLUGIN_PATH=$NEW
bench pairs-again 4K $ALL TURBO_PLUGIN_PATH=$PAIRS
bench base-128K 128K turbo3 TURBO_PLUGIN_PATH=$OLD
bench new-128K 128K turbo3 TURBO_PLUGIN_PATH=$NEW
kill $clocks
