#!/bin/bash
# SPDX-License-Identifier: MIT
# Whether NVIDIA's OpenCL compiler takes the tensor-core kernel's inline PTX
# (mma.sync m16n8k16, cp.async, shfl.sync): probe_ocl.c, built on the
# development machine (cc -O2 -o .dev-tc/probe_ocl probe_ocl.c -lOpenCL),
# run from the worktree copy after `. .gpurt/enter.sh`. Not yet run
# (session 18 had no device time left); ~10 s on the GPU machine.
set -u
O=${OUT:-/tmp/out}
mkdir -p "$O"
timeout 60 "${PROBE:-$PWD/.dev-tc/probe_ocl}" > "$O/probe-ocl.txt" 2>&1
echo "rc $?" >> "$O/probe-ocl.txt"
cat "$O/probe-ocl.txt"
