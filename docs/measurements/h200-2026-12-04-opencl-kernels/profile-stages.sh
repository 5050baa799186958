#!/bin/bash
# SPDX-License-Identifier: MIT
# Where the OpenCL kernel's time goes on the H200: the program as NVIDIA
# built it (PTX, then ptxas -v: registers, stack, spills), and the kernel
# time with stages left out (-DTKV_SKIP=n, kernels/attention.cl). Run from
# the copy of the worktree after `. .gpurt/enter.sh`; writes into $OUT.
set -u
R=$PWD
O=${OUT:-/tmp/out}
mkdir -p "$O"
export TKV_DEFAULT_CONFIG=$R/etc/turbokv.yaml TKV_MODELS_DIR=$R/models
export TURBO_PLUGIN_PATH=$R/build/plugins/cpu:$R/build/plugins/opencl
M=docs/measurements/h200-2026-12-04-opencl-kernels
gcc -O2 -o kvb docs/measurements/h200-2026-12-04-gpu-vulkan/kvb.c -Iabi -Lbuild/core -lturbokv -lm -Wl,-rpath,$R/build/core || exit 1
KVB="stdbuf -oL ./kvb opencl"
export KVB_APPEND=0 TURBO_OCL_KERNEL_NS=1 TURBO_OCL_REPEAT=20
nvidia-smi --query-gpu=clocks.sm --format=csv -lms 250 > "$O/clocks2.txt" 2>&1 &
SMI=$!
TURBO_OCL_DUMP_BINARY=$O/program.ptx timeout 20 $KVB turbo3 4K 1x1 > /dev/null 2>&1
PTXAS=$(command -v ptxas || ls /usr/local/cuda*/bin/ptxas 2>/dev/null | head -1)
echo "ptxas: $PTXAS" > "$O/ptxas.txt"
if [ -n "$PTXAS" ] && [ -s "$O/program.ptx" ]; then
    timeout 60 "$PTXAS" -arch=sm_90 -v "$O/program.ptx" -o "$O/program.cubin" >> "$O/ptxas.txt" 2>&1
    CUOBJ=$(dirname "$PTXAS")/cuobjdump
    timeout 30 "$CUOBJ" --dump-sass "$O/program.cubin" > "$O/program.sass" 2>&1
    for k in attn_decode_2 attn_decode_4 attn_decode_8 attn_decode_16; do
        awk -v k="$k" '/Function : /{f=($3==k)} f' "$O/program.sass" > "$O/$k.sass"
        printf '%s: %s SASS lines, STL %s LDL %s\n' "$k" "$(grep -c '/\*[0-9a-f]*\*/' "$O/$k.sass")" \
            "$(grep -c STL "$O/$k.sass")" "$(grep -c LDL "$O/$k.sass")" >> "$O/ptxas.txt"
    done
fi
cat "$O/ptxas.txt" | grep -v "^$" | tail -40
for s in 0 1 2 4 8 6 15; do
    echo "== -DTKV_SKIP=$s: turbo3,f16 4K,16K,128K 1x1" | tee -a "$O/skip.txt"
    TURBO_OCL_CL_OPTIONS="-DTKV_SKIP=$s" timeout 25 $KVB turbo3,f16 4K,16K,128K 1x1,4x1 2>&1 | grep attn | tee -a "$O/skip.txt"
done
kill $SMI
exit 0
