#!/bin/bash
# SPDX-License-Identifier: MIT
# Session 17, OpenCL turbo3o on the H100: opencl.sh found it at 1344 us at
# 128K against turbo3's 258 (the H200 of 2026-12-04: 501.5), with or without
# the owner masks. What the driver made of the specialized programs: the
# build log with -cl-nv-verbose (registers, spills per kernel), the PTX
# through ptxas -v where a ptxas is found (PyTorch's Triton carries one);
# the kernel time of the generic program (TURBO_OCL_SPECIALIZE=0) beside the
# specialized one. Outputs in one archive (diag.tgz).
set -u
R=$PWD
O=${OUT:-/tmp/out}
W=$(mktemp -d)
export TKV_DEFAULT_CONFIG=$R/etc/turbokv.yaml TKV_MODELS_DIR=$R/models
export TURBO_PLUGIN_PATH=$R/build/plugins/cpu:$R/build/plugins/opencl
B="build/tools/turbokv bench --backend opencl --tokens 1 --seqs 1"
export TURBO_LOG=debug
TURBO_OCL_CL_OPTIONS=-cl-nv-verbose TURBO_OCL_BUILD_LOG=1 TURBO_OCL_DUMP_BINARY=$W/program \
  timeout 100 $B --types turbo3,turbo3o --ctx 4K > "$W/verbose.txt" 2>&1
echo "rc $?" >> "$W/verbose.txt"
grep -n "opencl build log\|ptxas\|registers\|spill\|bytes stack" "$W/verbose.txt" > "$W/regs.txt"
PTXAS=$(timeout 20 find /usr /opt /root /home -name ptxas -type f 2>/dev/null | head -1)
echo "ptxas: $PTXAS" >> "$W/regs.txt"
if [ -n "$PTXAS" ]; then
  for f in "$W"/program*; do
    echo "== $f" >> "$W/ptxas.txt"
    timeout 60 "$PTXAS" -v -arch=sm_90 -o /dev/null "$f" >> "$W/ptxas.txt" 2>&1
  done
fi
export TURBO_OCL_KERNEL_NS=1 TURBO_OCL_REPEAT=20
for spec in 1 0; do
  echo "== TURBO_OCL_SPECIALIZE=$spec $B --types turbo3o --ctx 128K" >> "$W/generic.txt"
  TURBO_OCL_SPECIALIZE=$spec timeout 90 $B --types turbo3o --ctx 128K >> "$W/generic.txt" 2>&1
  echo "rc $? at $SECONDS s" >> "$W/generic.txt"
  [ $SECONDS -gt 200 ] && break
done
tar czf "$O/diag.tgz" -C "$W" .
exit 0
