#!/bin/bash
# SPDX-License-Identifier: MIT
# Session 11's H200 run: the queued attention without its queries'
# conversion dispatch and with one entry barrier (this tree, build/) against
# the plugin before it (base-vulkan/, built at the commit before), and the
# build with decode_wide.comp restored (session 10's check.sh). In order of
# what matters if the lease ends early:
#   check-stats.txt, check.txt, check-sdpa.txt   check.sh: compiler statistics
#                    of f16 / q8_0, f16 / q8_0 / turbo3 at 16K / 128K, SDPA
#   vkcalls.txt      vkcalls.c: driver calls of a recorded step, base and new
#   per-token.txt    `turbokv bench --per-token`, base and new, ABAB at 4K,
#                    once each at 128K
#   conformance.txt  test_host_vulkan, test_backends vulkan and opencl,
#                    test_scalar vulkan
# From a copy of the tree (build/, base-vulkan/ present) after
# `. .gpurt/enter.sh`; output under $OUT. About 7 minutes.
set -u
R=$PWD
B=$R/build
O=${OUT:-/tmp/out}
mkdir -p "$O"
t0=$(date +%s)
step() { echo "[$(($(date +%s) - t0)) s] $*" >> "$O/log.txt"; }
nvidia-smi --query-gpu=name,driver_version,clocks.max.sm --format=csv,noheader > "$O/gpu.txt" 2>&1
step check
[ -n "${SKIP_CHECK:-}" ] || bash docs/measurements/h200-2026-12-05-s10/check.sh
export TKV_DEFAULT_CONFIG=$R/etc/turbokv.yaml TKV_MODELS_DIR=$R/models
NEW=$B/plugins/cpu:$B/plugins/vulkan:$B/plugins/opencl
BASE=$B/plugins/cpu:$R/base-vulkan
step vkcalls
# built on the development machine (no Vulkan headers here):
#   cc -O2 -Iabi docs/measurements/h200-2026-12-05-s11/vkcalls.c -Lbuild/core -lturbokv -lvulkan -lm -o vkcalls
export LD_LIBRARY_PATH=$B/core${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
for round in 1 2; do
    for which in BASE NEW; do
        echo "== ($round) $which vkcalls turbo3 4096 32 30" >> "$O/vkcalls.txt"
        TURBO_PLUGIN_PATH=${!which} timeout 60 ./vkcalls turbo3 4096 32 30 >> "$O/vkcalls.txt" 2>&1
    done
done
step per-token
for round in 1 2; do
    for which in BASE NEW; do
        echo "== ($round) $which turbokv bench --per-token --ctx 4K --types turbo3,q8_0" >> "$O/per-token.txt"
        TURBO_PLUGIN_PATH=${!which} timeout 60 $B/tools/turbokv bench --backend vulkan --per-token --ctx 4K \
            --layers 32 --warm-ms 300 --types turbo3,q8_0 2>&1 | grep -v "^bench:" >> "$O/per-token.txt"
    done
done
for which in BASE NEW; do
    echo "== $which turbokv bench --per-token --ctx 128K --types turbo3" >> "$O/per-token.txt"
    TURBO_PLUGIN_PATH=${!which} timeout 90 $B/tools/turbokv bench --backend vulkan --per-token --ctx 128K \
        --layers 32 --warm-ms 300 --types turbo3 2>&1 | grep -v "^bench:" >> "$O/per-token.txt"
done
step conformance
export TURBO_PLUGIN_PATH=$NEW
{
    echo "== build/tests/test_host_vulkan"
    timeout 60 $B/tests/test_host_vulkan 2>&1 | tail -2
    echo "== build/tests/test_scalar vulkan"
    timeout 60 $B/tests/test_scalar vulkan 2>&1 | tail -2
    echo "== build/tests/test_backends vulkan"
    timeout 200 $B/tests/test_backends vulkan 2>&1 | grep -E "vs cpu|sparse V|PASSED|FAILED|ERROR"
    step opencl
    echo "== build/tests/test_backends opencl"
    timeout 200 $B/tests/test_backends opencl 2>&1 | grep -E "vs cpu|sparse V|PASSED|FAILED|ERROR"
} > "$O/conformance.txt" 2>&1
step end
