#!/bin/bash
# SPDX-License-Identifier: MIT
# Session 18: the prototype's machine code (cuobjdump -sass, on the GPU
# machine where the CUDA toolkit has it) and Nsight Compute's instruction
# mix and stall reasons of the K-only kernel and of its skeleton (no
# products, no table loads) at 128K.
set -u
O=${OUT:-/tmp/out}
W=$(mktemp -d)
TC=${TC:-$PWD/.dev-tc/tcdecode}
export PATH=/usr/local/cuda/bin:$PATH
cuobjdump -sass "$TC" > "$W/sass.txt" 2>&1
for v in 1 5; do
  timeout 200 ncu --kernel-name regex:partial --launch-skip $v --launch-count 1 --section InstructionStats \
    --section ComputeWorkloadAnalysis --section WarpStateStats --metrics \
smsp__average_warp_latency_issue_stalled_barrier,smsp__average_warp_latency_issue_stalled_long_scoreboard,smsp__average_warp_latency_issue_stalled_short_scoreboard,smsp__average_warp_latency_issue_stalled_mio_throttle,smsp__average_warp_latency_issue_stalled_math_pipe_throttle,smsp__average_warp_latency_issue_stalled_wait,smsp__average_warp_latency_issue_stalled_not_selected,smsp__average_warp_latency_issue_stalled_selected,smsp__average_warp_latency_issue_stalled_lg_throttle,smsp__average_warp_latency_issue_stalled_dispatch_stall,smsp__average_warp_latency_issue_stalled_membar,smsp__average_warp_latency_issue_stalled_branch_resolving,smsp__average_warp_latency_issue_stalled_no_instruction,smsp__average_warp_latency_issue_stalled_tex_throttle,smsp__inst_executed.sum,smsp__inst_executed_pipe_lsu.sum,smsp__inst_executed_pipe_tensor.sum \
    "$TC" 131072 0 once > "$W/ncu-v$v.txt" 2>&1
  echo "rc $?" >> "$W/ncu-v$v.txt"
done
tar czf "$O/sass.tgz" -C "$W" .
for v in 1 5; do grep -E "stalled|inst_executed|Issued|Executed Ipc" "$W/ncu-v$v.txt"; done
