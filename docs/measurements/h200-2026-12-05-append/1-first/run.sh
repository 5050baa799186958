#!/bin/bash
# Run 1 on the H200: correctness on NVIDIA, then the per-token bench at 4K
# for the branch point's plugin (base-vulkan/) and this branch's, with the
# append's measurement knobs. From the tree's root, after . .gpurt/enter.sh;
# results under $OUT.
B=$PWD/build
export LD_LIBRARY_PATH=$B/core
NEW=$B/plugins/cpu:$B/plugins/vulkan
OLD=$B/plugins/cpu:$PWD/base-vulkan
nvidia-smi --query-gpu=timestamp,clocks.sm --format=csv -lms 250 > $OUT/clocks.txt 2>&1 &
clocks=$!
nvidia-smi > $OUT/nvidia-smi.txt 2>&1
t() { local name=$1; shift; echo "== $*" > $OUT/$name.txt; (time TURBO_PLUGIN_PATH=$NEW timeout 120 "$@") >> $OUT/$name.txt 2>&1; echo "rc $?" >> $OUT/$name.txt; }
t test_host_vulkan $B/tests/test_host_vulkan
t test_sum_order $B/tests/test_sum_order vulkan
t test_backends $B/tests/test_backends vulkan
bench() {
    local name=$1 types=$2; shift 2
    echo "== $name: $* turbokv bench --per-token --backend vulkan --ctx 4K --layers 32 --warm-ms 300 --types $types" >> $OUT/bench.txt
    date +%T.%N >> $OUT/bench.txt
    env "$@" timeout 60 $B/tools/turbokv bench --per-token --backend vulkan --ctx 4K --layers 32 --warm-ms 300 \
        --types $types >> $OUT/bench.txt 2>&1
}
ALL=f16,q8_0,turbo3,turbo3o
bench base $ALL TURBO_PLUGIN_PATH=$OLD
bench new $ALL TURBO_PLUGIN_PATH=$NEW
bench new-legacy-record f16,turbo3 TURBO_PLUGIN_PATH=$NEW TURBO_VK_APPEND_RECORD=legacy
bench new-full-exit f16,turbo3 TURBO_PLUGIN_PATH=$NEW TURBO_VK_APPEND_RECORD=full
bench new-nobarrier f16,turbo3 TURBO_PLUGIN_PATH=$NEW TURBO_VK_APPEND_RECORD=nobarrier
bench new-rows8 turbo3,turbo3o TURBO_PLUGIN_PATH=$NEW TURBO_VK_QUANTIZE_ROWS=8
for s in 1 2 3 4 5 6; do
    bench new-stop$s turbo3 TURBO_PLUGIN_PATH=$NEW TURBO_VK_QUANTIZE_STOP=$s
done
bench base-again $ALL TURBO_PLUGIN_PATH=$OLD
bench new-again $ALL TURBO_PLUGIN_PATH=$NEW
kill $clocks
