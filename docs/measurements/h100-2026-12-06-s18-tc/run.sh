#!/bin/bash
# SPDX-License-Identifier: MIT
# Session 18: the tensor-core prototype (tcdecode.cu, built on the
# development machine into .dev-tc/tcdecode: nvcc -O3 -arch=sm_90 -std=c++17)
# beside PyTorch's f16 SDPA and the Vulkan plugin's turbo3 (decode.comp) in
# the same run. Run from the worktree copy after `. .gpurt/enter.sh`; the
# outputs go into one archive in $OUT.
set -u
R=$PWD
O=${OUT:-/tmp/out}
W=$(mktemp -d)
export TKV_DEFAULT_CONFIG=$R/etc/turbokv.yaml TKV_MODELS_DIR=$R/models
TC=${TC:-$R/.dev-tc/tcdecode}
CTX=${CTX:-4096,16384,131072}
nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv,noheader > "$W/device.txt" 2>&1
(echo "== $TC $CTX 1"; timeout 120 "$TC" "$CTX" 1; echo "rc $?") > "$W/tc.txt" 2>&1
(echo "== python3 scripts/sdpa-baseline.py --ctx $CTX"; timeout 120 python3 scripts/sdpa-baseline.py --ctx "$CTX"; echo "rc $?") > "$W/sdpa.txt" 2>&1
(echo "== turbokv bench --backend vulkan --types turbo3 --ctx 4K,16K,128K --tokens 1 --seqs 1 --warm-ms 300"
 TURBO_PLUGIN_PATH=$R/build/plugins/cpu:$R/build/plugins/vulkan timeout 150 build/tools/turbokv bench --backend vulkan \
   --types turbo3 --ctx 4K,16K,128K --tokens 1 --seqs 1 --warm-ms 300; echo "rc $?") > "$W/vulkan.txt" 2>&1
(echo "== $TC $CTX 0 (again, after)"; timeout 60 "$TC" "$CTX" 0; echo "rc $?") >> "$W/tc.txt" 2>&1
echo "done at ${SECONDS} s" >> "$W/tc.txt"
tar czf "$O/tc.tgz" -C "$W" .
cat "$W/tc.txt" "$W/sdpa.txt"; grep -v "^#" "$W/vulkan.txt" | tail -8
