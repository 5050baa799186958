#!/bin/bash
# SPDX-License-Identifier: MIT
# Session 27, fourth run: variants2.sh put turbo3o's slowdown on the append
# variant's shared memory (2.9 KB more: 570 us at 128K; the encoder's
# scratch left out: 358). vA1: the encoder's scratch on decode.comp's own
# arrays (ENC_ALIASED, the candidate; test_host_vulkan and the stored
# bytes); vA3: vA1 with the unit read once (step 0 hands it to main). The
# registers and the per-token step of each.
set -u
R=$PWD
O=${OUT:-/tmp/out}
mkdir -p "$O"
export TKV_DEFAULT_CONFIG=$R/etc/turbokv.yaml TKV_MODELS_DIR=$R/models
export TURBO_PLUGIN_PATH=$R/build/plugins/cpu:$R/build/muts/vA1
(echo "== vA1 test_host_vulkan"; timeout 100 build/tests/test_host_vulkan; echo "rc $? at ${SECONDS} s") > "$O/host-vulkan-vA1.txt" 2>&1
grep -E "^==|^\[ *(FAILED|PASSED|ERROR) |worst|rc " "$O/host-vulkan-vA1.txt"
(echo "== vA1 TKV_TESTS=same_bytes_every_format test_backends vulkan"; TKV_TESTS=same_bytes_every_format timeout 100 build/tests/test_backends vulkan; echo "rc $? at ${SECONDS} s") > "$O/conformance-vA1.txt" 2>&1
grep -E "^\[ *(FAILED|PASSED|ERROR) |differ|rc " "$O/conformance-vA1.txt"
for v in vA1 vA3; do
  export TURBO_PLUGIN_PATH=$R/build/plugins/cpu:$R/build/muts/$v
  (TURBO_VK_PROFILE=1 timeout 60 build/tools/turbokv bench --backend vulkan --per-token --types turbo3,turbo3o --ctx 4K --layers 2; echo "rc $? at ${SECONDS} s") > "$O/profile-$v.txt" 2>&1
  echo "== $v"; grep "decode.* pipeline" "$O/profile-$v.txt" | sed 's/.*\(decode[a-z_]* pipeline\).*\(Register Count [0-9]*\).*\(Shared Memory Size [0-9]*\).*/\1 \2 \3/'
  P="turbokv bench --backend vulkan --per-token --types turbo3,turbo3o --ctx 4K,128K --layers 32 --warm-ms 300"
  (echo "== $v $P"; timeout 120 build/tools/$P; echo "rc $? at ${SECONDS} s") > "$O/per-token-$v.txt" 2>&1
  grep "^turbo\|rc " "$O/per-token-$v.txt"
done
