#!/bin/bash
# SPDX-License-Identifier: MIT
# Session 18: what bounds the prototype's kernels (Nsight Compute, if the
# GPU machine has it), each variant run once at 128K.
set -u
O=${OUT:-/tmp/out}
W=$(mktemp -d)
TC=${TC:-$PWD/.dev-tc/tcdecode}
{ echo "== where is ncu"; ls /usr/local/cuda*/bin 2>&1 | head -40; command -v ncu nsys; find / -name "ncu" -type f 2>/dev/null | head; 
  python3 -m pip list 2>/dev/null | grep -i -E "nsight|cupti"; } > "$W/tools.txt" 2>&1
NCU=$(command -v ncu || find / -name ncu -type f 2>/dev/null | head -1)
if [ -n "$NCU" ]; then
  timeout 400 "$NCU" --kernel-name regex:partial --section SpeedOfLight --section MemoryWorkloadAnalysis \
    --section WarpStateStats --section SchedulerStats --section Occupancy --section LaunchStats \
    "$TC" 131072 0 once > "$W/ncu.txt" 2>&1
  echo "rc $?" >> "$W/ncu.txt"
fi
tar czf "$O/prof.tgz" -C "$W" .
cat "$W/tools.txt"; tail -c 6000 "$W/ncu.txt" 2>/dev/null
