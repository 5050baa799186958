#!/bin/bash
# SPDX-License-Identifier: MIT
# Registers against occupancy on the H200: the three kernels (old/ = main's
# tile kernel, v1/ = passes of rows scored where they lie, build/ = several
# rows per work-item) built with NVIDIA's -cl-nv-maxrregcount=N, kernel time
# held at clock by TURBO_OCL_REPEAT. Run from the copy of the worktree after
# `. .gpurt/enter.sh`; writes into $OUT.
set -u
R=$PWD
O=${OUT:-/tmp/out}
mkdir -p "$O"
T0=$(date +%s)
left() { echo $(( ${BUDGET:-230} - ($(date +%s) - T0) )); }
export TKV_DEFAULT_CONFIG=$R/etc/turbokv.yaml TKV_MODELS_DIR=$R/models
M=docs/measurements/h200-2026-12-04-opencl-kernels
gcc -O2 -o kvb docs/measurements/h200-2026-12-04-gpu-vulkan/kvb.c -Iabi -Lbuild/core -lturbokv -lm -Wl,-rpath,$R/build/core || exit 1
KVB="stdbuf -oL ./kvb opencl"
export KVB_APPEND=0 TURBO_OCL_KERNEL_NS=1 TURBO_OCL_REPEAT=20
nvidia-smi --query-gpu=clocks.sm --format=csv -lms 500 > "$O/clocks.txt" 2>&1 &
SMI=$!
PTXAS=$(command -v ptxas || ls /usr/local/cuda*/bin/ptxas 2>/dev/null | head -1)
for k in old v1 new; do
    P=$R/build/plugins/cpu:$R/$k; [ $k = new ] && P=$R/build/plugins/cpu:$R/build/plugins/opencl
    TURBO_PLUGIN_PATH=$P TURBO_OCL_DUMP_BINARY=$O/$k.bin timeout 20 $KVB turbo3 4K 1x1 > /dev/null 2>&1
    tr -d '\000' < "$O/$k.bin" > "$O/$k.ptx"; rm -f "$O/$k.bin"
    for n in 0 64 96 128; do
        opt=""; [ $n != 0 ] && opt="--maxrregcount=$n"
        echo "== $k ptxas $opt" >> "$O/ptxas.txt"
        timeout 60 "$PTXAS" -arch=sm_90 -v $opt "$O/$k.ptx" -o /dev/null 2>&1 | grep -A2 "attn_decode_[24]'" | grep -E "Compiling|Used|spill" >> "$O/ptxas.txt"
    done
    rm -f "$O/$k.ptx"
done
cat "$O/ptxas.txt"
for k in old v1 new; do
    P=$R/build/plugins/cpu:$R/$k; [ $k = new ] && P=$R/build/plugins/cpu:$R/build/plugins/opencl
    for n in 0 64 96 128; do
        L=$(left); [ "$L" -lt 12 ] && { echo "== (budget) skipped: $k $n" >> "$O/regs.txt"; continue; }
        opt=""; [ $n != 0 ] && opt="-cl-nv-maxrregcount=$n"
        echo "== $k $opt: turbo3 4K,16K,128K 1x1,4x1" | tee -a "$O/regs.txt"
        TURBO_PLUGIN_PATH=$P TURBO_OCL_CL_OPTIONS="$opt" timeout 14 $KVB turbo3 4K,16K,128K 1x1,4x1 2>&1 | grep attn | tee -a "$O/regs.txt"
    done
done
kill $SMI
exit 0
