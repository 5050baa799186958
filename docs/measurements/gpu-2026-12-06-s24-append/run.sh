#!/bin/bash
# SPDX-License-Identifier: MIT
# Session 24: the append's table reads copied up front (rows.cl,
# encode_tables). Variants under build/muts/: r0 = main at be22758 (the
# session's start), r1 = the tree (new rows.cl). Each step's output goes
# straight into $OUT, so that a run cut short returns what it did:
# 1. conformance of r1 on NVIDIA (stored bytes, attention), session 23's
#    kernel included;
# 2. the per-token mode of r0 and r1, with the kernel's own device time
#    (TURBO_OCL_KERNEL_NS=1);
# 3. each command's device time under clprof.so (per-token, 4K), r0 and r1;
# 4. the per-token mode of r0 and r1 again, and r1 with 32 work-items a
#    row (TURBO_OCL_ROW_WG); the 1-token bench of r1;
# 5. the Vulkan plugin's per-token mode (the tree);
# 6. the attention conformance again with TURBO_OCL_MIN_TILES=4.
# The per-token table's last column is the device-tensor prefill (512
# tokens of K and V to each layer, queued, one wait) of that variant.
set -u
R=$PWD
O=${OUT:-/tmp/out}
export TKV_DEFAULT_CONFIG=$R/etc/turbokv.yaml TKV_MODELS_DIR=$R/models
export TURBO_PLUGIN_PATH=$R/build/plugins/cpu:$R/build/plugins/opencl:$R/build/plugins/vulkan
nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv,noheader > "$O/device.txt" 2>&1
use() { cp build/muts/$1/turbokv-opencl.so build/plugins/opencl/turbokv-opencl.so; }
use r1
(echo "== (r1) TKV_TESTS=same_bytes_every_format,attention_agrees,paged_and_options_agree,sparse_v_counts test_backends opencl"
 TKV_TESTS=same_bytes_every_format,attention_agrees,paged_and_options_agree,sparse_v_counts timeout 300 build/tests/test_backends opencl; echo "rc $? at ${SECONDS} s") > "$O/conformance.txt" 2>&1
P="turbokv bench --backend opencl --per-token --types turbo3,turbo3o --ctx 4K,128K --layers 32 --warm-ms 300"
pt() { # variant, then extra environment
  use $1
  (echo "== ($1) TURBO_OCL_KERNEL_NS=1 ${2:-} $P"
   env TURBO_OCL_KERNEL_NS=1 ${2:-} timeout 90 build/tools/$P; echo "rc $? at ${SECONDS} s") >> "$O/per-token.txt" 2>&1
}
pt r0; pt r1
for v in r0 r1; do
  use $v
  (echo "== ($v) LD_PRELOAD=clprof.so turbokv bench --backend opencl --per-token --types turbo3 --ctx 4K --layers 32"
   LD_PRELOAD=$R/build/muts/clprof.so timeout 100 build/tools/turbokv bench --backend opencl --per-token --types turbo3 --ctx 4K --layers 32; echo "rc $? at ${SECONDS} s") >> "$O/prof.txt" 2>&1
done
pt r0; pt r1; pt r1 TURBO_OCL_ROW_WG=32
use r1
B="turbokv bench --backend opencl --types turbo3,turbo3o --ctx 4K,16K,128K --tokens 1 --seqs 1"
(echo "== (r1) TURBO_OCL_KERNEL_NS=1 TURBO_OCL_REPEAT=20 $B"
 TURBO_OCL_KERNEL_NS=1 TURBO_OCL_REPEAT=20 timeout 90 build/tools/$B; echo "rc $? at ${SECONDS} s") > "$O/bench-r1.txt" 2>&1
cat "$O/device.txt"
grep -E "^\[ *(OK|FAILED|PASSED) |differ|rc " "$O/conformance.txt"
grep "^==\|^turbo\|rc " "$O/per-token.txt"
grep "^==\|^turbo3 \|clprof\|quantize\|tc_\|rc " "$O/prof.txt" | head -40
grep -A4 "^device time" "$O/bench-r1.txt"; grep "rc " "$O/bench-r1.txt"
# 5. the Vulkan plugin's per-token mode and device-tensor prefill (the tree)
P="turbokv bench --backend vulkan --per-token --types turbo3 --ctx 4K --layers 32 --warm-ms 300"
(echo "== (tree) $P"; timeout 120 build/tools/$P; echo "rc $? at ${SECONDS} s") > "$O/per-token-vulkan.txt" 2>&1
grep "^==\|^turbo\|rc " "$O/per-token-vulkan.txt"
# 6. the attention conformance with four tiles a warp
use r1
(echo "== (r1) TURBO_OCL_MIN_TILES=4 TKV_TESTS=attention_agrees,paged_and_options_agree test_backends opencl"
 TURBO_OCL_MIN_TILES=4 TKV_TESTS=attention_agrees,paged_and_options_agree timeout 200 build/tests/test_backends opencl; echo "rc $? at ${SECONDS} s") > "$O/conformance-tiles.txt" 2>&1
grep -E "^\[ *(OK|FAILED|PASSED) |rc " "$O/conformance-tiles.txt"
