#!/bin/bash
# SPDX-License-Identifier: MIT
# decode.comp's workgroups per call on the H200: its pipeline holds 166
# registers an invocation (s10/stats.txt), so an SM runs 3 of its 128-wide
# workgroups at once; the plugin dispatches 256 (target 1024 / 4) at 16K and
# 128K, 2 an SM. TURBO_VK_WORKGROUPS=1568 gives 49 chunks a kv head (392
# workgroups, one wave of 3 an SM), 2048 gives 512 (more than one wave).
#   wgs.txt  per point: kvb's result line, and with TURBO_VK_CLOCK=1 the
#            last vkclock lines
# From a copy of the tree (build/ present) after `. .gpurt/enter.sh`;
# output under $OUT. About 2 minutes.
POINTS=wgs.txt CLOCK_LINES=2
source docs/measurements/h200-2026-12-05-s11/kvb-points.sh
for round in 1 2; do
    for w in 1024 1568 2048; do
        point TURBO_VK_WORKGROUPS=$w -- turbo3,turbo4,turbo3o 16K,128K 1x1 0 8
    done
done
point TURBO_VK_WORKGROUPS=1024 -- turbo3 128K 4x1,1x8 0 4
point TURBO_VK_WORKGROUPS=1568 -- turbo3 128K 4x1,1x8 0 4
point TURBO_VK_CLOCK=1 TURBO_VK_WORKGROUPS=1568 -- turbo3 16K 1x1 0 4
point TURBO_VK_CLOCK=1 TURBO_VK_WORKGROUPS=1568 -- turbo3 128K 1x1 0 4
rm -f "$O/tmp.txt"
