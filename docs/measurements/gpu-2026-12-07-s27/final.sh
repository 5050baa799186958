#!/bin/bash
# SPDX-License-Identifier: MIT
# Session 27, fifth run: the plugin as committed (build/plugins: the
# encoder's scratch aliased, K and V of one format encoded side by side;
# = vA5) checked on NVIDIA (test_host_vulkan; stored bytes, attention,
# paged rows and options), then the per-token step of vA5 against vA1 (one
# row at a time), alternating twice.
set -u
R=$PWD
O=${OUT:-/tmp/out}
mkdir -p "$O"
export TKV_DEFAULT_CONFIG=$R/etc/turbokv.yaml TKV_MODELS_DIR=$R/models
export TURBO_PLUGIN_PATH=$R/build/plugins/cpu:$R/build/plugins/vulkan
(echo "== test_host_vulkan"; timeout 100 build/tests/test_host_vulkan; echo "rc $? at ${SECONDS} s") > "$O/host-vulkan.txt" 2>&1
grep -E "^==|^\[ *(FAILED|PASSED|ERROR) |worst|rc " "$O/host-vulkan.txt"
T=same_bytes_every_format,attention_agrees,paged_and_options_agree
(echo "== TKV_TESTS=$T test_backends vulkan"; TKV_TESTS=$T timeout 150 build/tests/test_backends vulkan; echo "rc $? at ${SECONDS} s") > "$O/conformance-vulkan.txt" 2>&1
grep -E "^\[ *(FAILED|PASSED|ERROR) |differ|rc " "$O/conformance-vulkan.txt"
for i in 1 2; do
  for v in vA5 vA1; do
    export TURBO_PLUGIN_PATH=$R/build/plugins/cpu:$R/build/muts/$v
    P="turbokv bench --backend vulkan --per-token --types turbo3,turbo3o --ctx 4K,128K --layers 32 --warm-ms 300"
    (echo "== $v $P"; timeout 100 build/tools/$P; echo "rc $? at ${SECONDS} s") >> "$O/per-token-$v.txt" 2>&1
    echo "== $v"; grep "^turbo" "$O/per-token-$v.txt" | tail -4
  done
done
