#!/bin/bash
# Run 2 on the H200: correctness on NVIDIA, then the per-token bench for the
# branch point's plugin (base-vulkan/) and this branch's, with the append's
# measurement knobs. From the tree's root, after . .gpurt/enter.sh; results
# under $OUT.
B=$PWD/build
export LD_LIBRARY_PATH=$B/core
NEW=$B/plugins/cpu:$B/plugins/vulkan
OLD=$B/plugins/cpu:$PWD/base-vulkan
nvidia-smi --query-gpu=timestamp,clocks.sm --format=csv -lms 250 > $OUT/clocks.txt 2>&1 &
clocks=$!
t() { local name=$1; shift; echo "== $*" > $OUT/$name.txt; (time TURBO_PLUGIN_PATH=$NEW timeout 120 "$@") >> $OUT/$name.txt 2>&1; echo "rc $?" >> $OUT/$name.txt; }
t test_host_vulkan $B/tests/test_host_vulkan
t test_sum_order $B/tests/test_sum_order vulkan
t test_backends $B/tests/test_backends vulkan
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
bench new-full-barriers 4K f16,turbo3 TURBO_PLUGIN_PATH=$NEW TURBO_VK_APPEND_RECORD=full
bench new-nobarrier 4K f16,turbo3,turbo3o TURBO_PLUGIN_PATH=$NEW TURBO_VK_APPEND_RECORD=nobarrier
for s in 1 2 3 4 5 6; do
    bench new-stop$s 4K turbo3 TURBO_PLUGIN_PATH=$NEW TURBO_VK_QUANTIZE_STOP=$s
done
bench base-128K 128K turbo3 TURBO_PLUGIN_PATH=$OLD
bench new-128K 128K turbo3 TURBO_PLUGIN_PATH=$NEW
bench base-again 4K $ALL TURBO_PLUGIN_PATH=$OLD
bench new-again 4K $ALL TURBO_PLUGIN_PATH=$NEW
kill $clocks
